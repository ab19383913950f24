//! Between `http` types and the WIT records of `wit/plugin.wit`: what a plugin is
//! given, and the checks on what it gives back.
//!
//! **Invariant:** nothing a guest returns reaches a client unchecked: the status must be
//! 100–599, every header name and value valid HTTP, hop-by-hop fields are dropped and
//! `content-length` is set by the gateway.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
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
