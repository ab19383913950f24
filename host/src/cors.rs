//! The `cors` phase: Cross-Origin Resource Sharing for routes with a `cors` table (or
//! under `[server] cors`).
//!
//! - A **preflight** (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is
//!   routed as the request it announces (its method is the requested one), and when that
//!   route has CORS the gateway answers it itself (`204`), without reaching the backend.
//!   A preflight for a route without CORS is an ordinary `OPTIONS` request.
//! - An **actual request** from an allowed origin gets `Access-Control-Allow-Origin` (and
//!   `-Allow-Credentials`, `-Expose-Headers`) on whatever response leaves — relayed or made
//!   by the gateway (a `401` or `429` a browser script must be able to read).
//! - A **disallowed origin** gets no CORS headers at all; the browser then refuses.
//! - Every response of a CORS route carries `Vary: Origin`, so shared caches keep answers
//!   for different origins apart; the gateway replaces any `Access-Control-*` header the
//!   backend sent, so the route's policy is the only one.

use std::time::Duration;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::Body;

/// `Vary` on every response of a CORS route.
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("origin");
/// `Vary` on preflight answers.
const VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "origin, access-control-request-method, access-control-request-headers",
);
/// The longest `Origin` considered (longer ones are never allowed).
const MAX_ORIGIN_LEN: usize = 512;

/// One entry of `allow_origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    /// `"*"`: any origin.
    Any,
    /// `"https://app.example"`: exactly this origin (compared case-insensitively).
    Exact(String),
    /// `"https://*.example.com"`: the scheme, one or more labels, then this suffix
    /// (`.example.com`, with its port if it has one).
    Subdomains { scheme: String, suffix: String },
}

impl OriginRule {
    /// Parses an `allow_origins` entry (lower-cased).
    pub fn parse(text: &str) -> Result<OriginRule, String> {
        if text == "*" {
            return Ok(OriginRule::Any);
        }
        let lower = text.to_ascii_lowercase();
        let Some((scheme, rest)) = lower.split_once("://") else {
            return Err(format!(
                "invalid origin {text:?}, expected \"*\", \"https://host[:port]\" or \"https://*.domain\""
            ));
        };
        let valid_host = |host: &str| {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        };
        if !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            || scheme.is_empty()
            || rest.contains('/')
        {
            return Err(format!(
                "invalid origin {text:?}, expected scheme://host[:port] without a path"
            ));
        }
        match rest.strip_prefix("*.") {
            Some(domain) if valid_host(domain) && !domain.contains('*') => {
                Ok(OriginRule::Subdomains {
                    scheme: scheme.to_owned(),
                    suffix: format!(".{domain}"),
                })
            }
            None if valid_host(rest) => Ok(OriginRule::Exact(lower)),
            _ => Err(format!(
                "invalid origin {text:?}, a wildcard is only allowed as the first label (\"https://*.example.com\")"
            )),
        }
    }

    fn matches(&self, origin: &str) -> bool {
        match self {
            OriginRule::Any => true,
            OriginRule::Exact(exact) => origin.eq_ignore_ascii_case(exact),
            OriginRule::Subdomains { scheme, suffix } => {
                let Some((their_scheme, host)) = origin.split_once("://") else {
                    return false;
                };
                if !their_scheme.eq_ignore_ascii_case(scheme) || host.len() <= suffix.len() {
                    return false;
                }
                let (labels, tail) = host.split_at(host.len() - suffix.len());
                tail.eq_ignore_ascii_case(suffix)
                    && !labels.starts_with('.')
                    && labels
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            }
        }
    }
}

/// A validated `cors` table.
#[derive(Debug, Clone)]
pub struct Cors {
    pub origins: Vec<OriginRule>,
    /// `allow_methods`; `None` allows the method the preflight asks for (the route was
    /// matched with it, so the route accepts it).
    pub methods: Option<Vec<Method>>,
    /// `allow_methods` as one header value.
    pub methods_value: Option<HeaderValue>,
    /// `allow_headers` (lower-case); `["*"]` allows whatever the preflight asks for.
    pub headers: AllowHeaders,
    /// `expose_headers` as one header value.
    pub expose: Option<HeaderValue>,
    pub credentials: bool,
    /// `max_age` in whole seconds, as a header value.
    pub max_age: Option<HeaderValue>,
}

/// `allow_headers`.
#[derive(Debug, Clone)]
pub enum AllowHeaders {
    /// Only these (and the CORS-safelisted ones, which need no permission).
    List(Vec<HeaderName>, Option<HeaderValue>),
    /// `["*"]`: any requested header.
    Any,
}

impl Cors {
    /// Builds a policy from validated parts.
    pub fn new(
        origins: Vec<OriginRule>,
        methods: Option<Vec<Method>>,
        headers: Option<Vec<HeaderName>>,
        any_header: bool,
        expose: Vec<HeaderName>,
        credentials: bool,
        max_age: Option<Duration>,
    ) -> Cors {
        let join = |names: &mut dyn Iterator<Item = &str>| {
            let text = names.collect::<Vec<_>>().join(", ");
            HeaderValue::from_str(&text)
                .ok()
                .filter(|_| !text.is_empty())
        };
        let methods_value = methods
            .as_ref()
            .and_then(|m| join(&mut m.iter().map(Method::as_str)));
        let headers = if any_header {
            AllowHeaders::Any
        } else {
            let list = headers.unwrap_or_default();
            let value = join(&mut list.iter().map(HeaderName::as_str));
            AllowHeaders::List(list, value)
        };
        Cors {
            origins,
            methods,
            methods_value,
            headers,
            expose: join(&mut expose.iter().map(HeaderName::as_str)),
            credentials,
            max_age: max_age.map(|age| HeaderValue::from(age.as_secs())),
        }
    }

    /// The request's `Origin`, if this policy allows it.
    pub fn allowed_origin<'r>(&self, headers: &'r HeaderMap) -> Option<&'r HeaderValue> {
        let origin = headers.get(ORIGIN)?;
        let text = origin.to_str().ok()?;
        (text.len() <= MAX_ORIGIN_LEN && self.origins.iter().any(|rule| rule.matches(text)))
            .then_some(origin)
    }

    fn any_origin(&self) -> bool {
        self.origins.contains(&OriginRule::Any)
    }

    /// `Access-Control-Allow-Origin` for an allowed `origin`: `*` for an any-origin
    /// policy without credentials, else the origin itself.
    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin() && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// The gateway's answer to a preflight for a route with this policy.
    pub fn preflight<B>(&self, request: &Request<B>) -> Response<Body> {
        let mut response = Response::new(Body::Empty);
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        out.insert(VARY, VARY_PREFLIGHT);
        let headers = request.headers();
        let Some(origin) = self.allowed_origin(headers) else {
            return response;
        };
        let Some(method) = requested_method(headers) else {
            return response;
        };
        let methods = match (&self.methods, &self.methods_value) {
            (Some(allowed), Some(value)) if allowed.contains(&method) => value.clone(),
            (Some(_), _) => return response,
            (None, _) => match HeaderValue::from_str(method.as_str()) {
                Ok(value) => value,
                Err(_) => return response,
            },
        };
        let requested = headers.get(ACCESS_CONTROL_REQUEST_HEADERS);
        let allow_headers = match (&self.headers, requested) {
            (_, None) => None,
            (AllowHeaders::Any, Some(requested)) => Some(requested.clone()),
            (AllowHeaders::List(allowed, value), Some(requested)) => {
                let all_allowed = requested
                    .to_str()
                    .map(|list| {
                        list.split(',')
                            .map(str::trim)
                            .filter(|name| !name.is_empty())
                            .all(|name| {
                                allowed
                                    .iter()
                                    .any(|a| a.as_str().eq_ignore_ascii_case(name))
                            })
                    })
                    .unwrap_or(false);
                if !all_allowed {
                    return response;
                }
                value.clone()
            }
        };
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(origin));
        out.insert(ACCESS_CONTROL_ALLOW_METHODS, methods);
        if let Some(value) = allow_headers {
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, value);
        }
        if self.credentials {
            out.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(age) = &self.max_age {
            out.insert(ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        response
    }

    /// The CORS headers of an actual (non-preflight) response, given the request's
    /// allowed origin (see [`Self::allowed_origin`]); the backend's own are replaced.
    pub fn decorate(&self, origin: Option<&HeaderValue>, out: &mut HeaderMap) {
        for name in [
            ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            ACCESS_CONTROL_EXPOSE_HEADERS,
            ACCESS_CONTROL_ALLOW_METHODS,
            ACCESS_CONTROL_ALLOW_HEADERS,
            ACCESS_CONTROL_MAX_AGE,
        ] {
            out.remove(name);
        }
        out.append(VARY, VARY_ORIGIN);
        let Some(origin) = origin else { return };
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin_value(origin));
        if self.credentials {
            out.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose {
            out.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

/// What the `cors` phase leaves for the response of an actual request: the policy and
/// the request's origin if the policy allows it. Applied to whichever response leaves,
/// relayed or made by the gateway.
#[derive(Debug, Clone)]
pub struct CorsReply {
    cors: std::sync::Arc<Cors>,
    origin: Option<HeaderValue>,
}

impl CorsReply {
    /// The reply of `cors` for a request with `headers`.
    pub fn new(cors: &std::sync::Arc<Cors>, headers: &HeaderMap) -> CorsReply {
        CorsReply {
            origin: cors.allowed_origin(headers).cloned(),
            cors: cors.clone(),
        }
    }

    /// Sets the CORS headers on the response.
    pub fn apply(&self, headers: &mut HeaderMap) {
        self.cors.decorate(self.origin.as_ref(), headers);
    }
}

/// The method a preflight asks about, if `request` is a preflight.
pub fn preflight_method<B>(request: &Request<B>) -> Option<Method> {
    if request.method() != Method::OPTIONS || !request.headers().contains_key(ORIGIN) {
        return None;
    }
    requested_method(request.headers())
}

fn requested_method(headers: &HeaderMap) -> Option<Method> {
    Method::from_bytes(headers.get(ACCESS_CONTROL_REQUEST_METHOD)?.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], credentials: bool) -> Cors {
        Cors::new(
            origins
                .iter()
                .map(|o| OriginRule::parse(o).expect("origin"))
                .collect(),
            Some(vec![Method::GET, Method::POST]),
            Some(vec![HeaderName::from_static("content-type")]),
            false,
            vec![HeaderName::from_static("x-total")],
            credentials,
            Some(Duration::from_secs(600)),
        )
    }

    fn preflight(origin: &str, method: &str, headers: Option<&str>) -> Request<()> {
        let mut builder = Request::builder()
            .method(Method::OPTIONS)
            .uri("/x")
            .header(ORIGIN, origin)
            .header(ACCESS_CONTROL_REQUEST_METHOD, method);
        if let Some(headers) = headers {
            builder = builder.header(ACCESS_CONTROL_REQUEST_HEADERS, headers);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn origin_rules() {
        let wild = OriginRule::parse("https://*.example.com").expect("rule");
        assert!(wild.matches("https://app.example.com"));
        assert!(wild.matches("https://a.b.example.com"));
        assert!(wild.matches("HTTPS://App.Example.Com"));
        assert!(!wild.matches("https://example.com"));
        assert!(!wild.matches("http://app.example.com"));
        assert!(!wild.matches("https://app.example.com.evil.io"));
        assert!(!wild.matches("https://evilexample.com"));
        assert!(!wild.matches("https://app.example.com:8443"));
        assert!(!wild.matches("https://x/.example.com"));
        let exact = OriginRule::parse("https://app.example").expect("rule");
        assert!(exact.matches("https://app.example"));
        assert!(!exact.matches("https://app.example:444"));
        assert!(OriginRule::parse("app.example").is_err());
        assert!(OriginRule::parse("https://app.example/path").is_err());
        assert!(OriginRule::parse("https://a.*.example").is_err());
    }

    #[test]
    fn preflight_from_an_allowed_origin() {
        let cors = policy(&["https://app.example"], true);
        let response = cors.preflight(&preflight(
            "https://app.example",
            "POST",
            Some("Content-Type"),
        ));
        let h = response.headers();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "content-type");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "600");
        assert!(h[VARY].to_str().expect("vary").contains("origin"));
    }

    #[test]
    fn preflights_that_ask_too_much_get_no_cors_headers() {
        let cors = policy(&["https://app.example"], false);
        for request in [
            preflight("https://evil.example", "GET", None),
            preflight("https://app.example", "DELETE", None),
            preflight("https://app.example", "GET", Some("x-secret")),
        ] {
            let response = cors.preflight(&request);
            assert!(!response.headers().contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
            assert!(response.headers().contains_key(VARY));
        }
    }

    #[test]
    fn actual_responses() {
        let cors = policy(&["*"], false);
        let mut out = HeaderMap::new();
        out.insert(
            ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("https://backend"),
        );
        let origin = HeaderValue::from_static("https://any.example");
        cors.decorate(Some(&origin), &mut out);
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(out[ACCESS_CONTROL_EXPOSE_HEADERS], "x-total");
        let mut refused = HeaderMap::new();
        refused.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        cors.decorate(None, &mut refused);
        assert!(!refused.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(refused[VARY], "origin");
    }

    #[test]
    fn preflight_detection() {
        assert_eq!(
            preflight_method(&preflight("https://a", "PUT", None)),
            Some(Method::PUT)
        );
        let plain = Request::builder()
            .method(Method::OPTIONS)
            .body(())
            .expect("request");
        assert_eq!(preflight_method(&plain), None);
    }
}
