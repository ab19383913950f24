//! Between `http` types and the WIT records of `wit/plugin.wit`: what a plugin is
//! given, and the checks on what it gives back.
//!
//! **Invariant:** nothing a guest returns reaches a client unchecked: the status must be
//! 100–599, every header name and value valid HTTP, hop-by-hop fields are dropped and
//! `content-length` is set by the gateway.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::{HeaderMap, StatusCode};

use super::PluginError;
use super::bindings::{AuthContext, Request, Response};
use crate::body::Body;
use crate::identity;
use crate::router::Params;

/// The lowest and highest status a plugin may answer with.
pub const STATUS_RANGE: std::ops::RangeInclusive<u16> = 100..=599;
/// The most header fields a plugin may return.
pub const MAX_RESPONSE_HEADERS: usize = 200;

/// The request head (and body, when given) as a plugin sees it.
pub fn request(
    parts: &http::request::Parts,
    path: &str,
    params: &Params,
    client: IpAddr,
    body: Option<Bytes>,
) -> Request {
    build(
        (&parts.method, &parts.uri, &parts.headers, &parts.extensions),
        path,
        params,
        client,
        body,
    )
}

/// [`request`] from a whole `http::Request`, whose body stays where it is.
pub fn request_head<B>(
    request: &http::Request<B>,
    path: &str,
    params: &Params,
    client: IpAddr,
    body: Option<Bytes>,
) -> Request {
    build(
        (
            request.method(),
            request.uri(),
            request.headers(),
            request.extensions(),
        ),
        path,
        params,
        client,
        body,
    )
}

type Head<'a> = (
    &'a http::Method,
    &'a http::Uri,
    &'a HeaderMap,
    &'a http::Extensions,
);

fn build(
    (method, uri, headers_in, extensions): Head<'_>,
    path: &str,
    params: &Params,
    client: IpAddr,
    body: Option<Bytes>,
) -> Request {
    Request {
        method: method.as_str().to_owned(),
        path: path.to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers: headers(headers_in),
        params: params
            .iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
        client_addr: client.to_string(),
        tls_client: extensions
            .get::<std::sync::Arc<identity::ClientCert>>()
            .map(|cert| super::bindings::TlsIdentity {
                subject: cert.subject.clone(),
                sans: cert.sans.clone(),
                fingerprint_sha256: cert.fingerprint_sha256.clone(),
            }),
        auth: auth(extensions),
        body: body.map(|bytes| bytes.to_vec()),
    }
}

/// Header fields as (name, value) pairs; values that are not UTF-8 are passed lossily.
pub fn headers(map: &HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// What the route's authorizer learnt, for a plugin (`None` when no authorizer ran).
pub fn auth(extensions: &http::Extensions) -> Option<AuthContext> {
    let principal = identity::principal_in(extensions)?;
    let context = extensions.get::<identity::AuthContext>();
    Some(AuthContext {
        authorizer: context.map_or_else(String::new, |c| c.authorizer.to_string()),
        principal: principal.as_str().to_owned(),
        context: context
            .map(|c| {
                c.claims
                    .iter()
                    .map(|(name, value)| {
                        let text = match value {
                            serde_json::Value::String(text) => text.clone(),
                            other => other.to_string(),
                        };
                        (name.clone(), text)
                    })
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// A plugin's response as an HTTP response, or why it is not a valid one.
pub fn response(response: Response) -> Result<http::Response<Body>, PluginError> {
    let status = Some(response.status)
        .filter(|status| STATUS_RANGE.contains(status))
        .and_then(|status| StatusCode::from_u16(status).ok())
        .ok_or_else(|| PluginError::BadOutput(format!("status {}", response.status)))?;
    let mut headers = header_map(response.headers)?;
    crate::headers::strip_hop_by_hop(&mut headers);
    let body = Bytes::from(response.body.unwrap_or_default());
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut out = http::Response::new(Body::full(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// The fast way to apply a plugin's header pairs to `map`, the head it was given: when
/// `returned` starts with exactly `map`'s fields, in `map`'s order (what [`headers`]
/// gave the plugin), the plugin left them alone and at most added fields after them, so
/// those are appended to `map` (checked) and `true` returned. `false`, with `map`
/// untouched, when the plugin changed, removed or reordered a field, or added one of
/// `reserved` (framing or hop-by-hop fields, which the caller's full path handles): the
/// caller then rebuilds the head with [`header_map`].
pub fn append_added(
    map: &mut HeaderMap,
    returned: &[(String, String)],
    reserved: fn(&HeaderName) -> bool,
) -> Result<bool, PluginError> {
    if returned.len() < map.len() || returned.len() > MAX_RESPONSE_HEADERS {
        return Ok(false);
    }
    let kept = map
        .iter()
        .zip(returned)
        .all(|((name, value), (n, v))| name.as_str() == n && value.as_bytes() == v.as_bytes());
    if !kept {
        return Ok(false);
    }
    let added = &returned[map.len()..];
    let mut checked = Vec::with_capacity(added.len());
    for (name, value) in added {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| PluginError::BadOutput(format!("invalid header name {name:?}")))?;
        if reserved(&header) {
            return Ok(false);
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| PluginError::BadOutput(format!("invalid value for header {header}")))?;
        checked.push((header, value));
    }
    for (name, value) in checked {
        map.append(name, value);
    }
    Ok(true)
}

/// The fields a filter's added headers may not name for [`append_added`]'s fast way on a
/// request: the body's framing, which the gateway decides.
pub fn reserved_in_request(name: &HeaderName) -> bool {
    *name == CONTENT_LENGTH || *name == TRANSFER_ENCODING
}

/// The same on a response: framing and every hop-by-hop field, which the full way strips
/// from what a plugin returns.
pub fn reserved_in_response(name: &HeaderName) -> bool {
    *name == CONTENT_LENGTH || crate::headers::is_hop_by_hop(name)
}

/// Header pairs from a plugin as a [`HeaderMap`], checked.
pub fn header_map(pairs: Vec<(String, String)>) -> Result<HeaderMap, PluginError> {
    if pairs.len() > MAX_RESPONSE_HEADERS {
        return Err(PluginError::BadOutput(format!(
            "{} header fields (at most {MAX_RESPONSE_HEADERS})",
            pairs.len()
        )));
    }
    let mut map = HeaderMap::with_capacity(pairs.len());
    for (name, value) in pairs {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| PluginError::BadOutput(format!("invalid header name {name:?}")))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| PluginError::BadOutput(format!("invalid value for header {header}")))?;
        map.append(header, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wit_response(status: u16, headers: &[(&str, &str)]) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: Some(b"hi".to_vec()),
        }
    }

    #[test]
    fn valid_responses_pass_with_length_and_without_hop_by_hop() {
        let out = response(wit_response(
            201,
            &[
                ("x-a", "1"),
                ("connection", "close"),
                ("content-length", "99"),
            ],
        ))
        .expect("valid");
        assert_eq!(out.status(), StatusCode::CREATED);
        assert_eq!(out.headers()["x-a"], "1");
        assert!(!out.headers().contains_key("connection"));
        assert_eq!(out.headers()[CONTENT_LENGTH], "2");
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn headers_left_alone_or_added_to_are_applied_in_place() {
        let mut map = HeaderMap::new();
        map.insert("x-a", HeaderValue::from_static("1"));
        map.append("x-a", HeaderValue::from_static("2"));
        map.insert("host", HeaderValue::from_static("h"));
        let given = headers(&map);

        assert!(append_added(&mut map, &given, reserved_in_request).expect("valid"));
        assert_eq!(headers(&map), given, "unchanged");

        let mut more = given.clone();
        more.extend(pairs(&[("x-new", "v"), ("x-a", "3")]));
        assert!(append_added(&mut map, &more, reserved_in_request).expect("valid"));
        assert_eq!(map.get_all("x-a").iter().count(), 3);
        assert_eq!(map["x-new"], "v");
    }

    #[test]
    fn changed_removed_or_reserved_headers_take_the_full_way() {
        let mut map = HeaderMap::new();
        map.insert("x-a", HeaderValue::from_static("1"));
        map.insert("host", HeaderValue::from_static("h"));
        let before = headers(&map);
        for returned in [
            pairs(&[("x-a", "changed"), ("host", "h")]),
            pairs(&[("host", "h")]),
            pairs(&[("host", "h"), ("x-a", "1")]),
            pairs(&[("x-a", "1"), ("host", "h"), ("content-length", "5")]),
            pairs(&[("x-a", "1"), ("host", "h"), ("Connection", "close")]),
        ] {
            let reserved = reserved_in_response;
            assert!(!append_added(&mut map, &returned, reserved).expect("no error"));
            assert_eq!(headers(&map), before, "untouched for {returned:?}");
        }
        let invalid = pairs(&[("x-a", "1"), ("host", "h"), ("bad name", "x")]);
        assert!(matches!(
            append_added(&mut map, &invalid, reserved_in_request),
            Err(PluginError::BadOutput(_))
        ));
        assert_eq!(headers(&map), before);
    }

    #[test]
    fn malformed_responses_are_errors() {
        for bad in [
            wit_response(42, &[]),
            wit_response(600, &[]),
            wit_response(200, &[("bad header\n", "x")]),
            wit_response(200, &[("x-a", "line\nbreak")]),
        ] {
            assert!(matches!(response(bad), Err(PluginError::BadOutput(_))));
        }
    }
}
