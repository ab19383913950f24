//! Upstream target URLs: `http[s]://host[:port][/base/path]`, split into what the
//! upstream pool needs.

use std::str::FromStr;

use http::Uri;
use http::uri::Authority;

use super::model::Scheme;

/// Default port of an `http` target.
pub const HTTP_DEFAULT_PORT: u16 = 80;
/// Default port of an `https` target.
pub const HTTPS_DEFAULT_PORT: u16 = 443;
/// The parts of a target URL the model keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetParts {
    pub scheme: Scheme,
    pub authority: Authority,
    pub host: String,
    pub port: u16,
    pub base_path: String,
}

/// Parses `http[s]://host[:port][/base/path]`: no user info, query or fragment.
pub fn parse_target_url(url: &str) -> Result<TargetParts, String> {
    const EXAMPLE: &str = "expected e.g. \"http://127.0.0.1:9000\"";
    let uri = Uri::from_str(url).map_err(|_| format!("invalid URL {url:?}, {EXAMPLE}"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        Some(other) => {
            return Err(format!(
                "unsupported scheme {other:?} in {url:?}, expected \"http\" or \"https\""
            ));
        }
        None => return Err(format!("missing scheme in {url:?}, {EXAMPLE}")),
    };
    let Some(authority) = uri.authority().cloned() else {
        return Err(format!("missing host in {url:?}, {EXAMPLE}"));
    };
    // Checked before anything that repeats the URL: it may hold a password.
    if authority.as_str().contains('@') {
        return Err("user info (`user:password@`) is not allowed in a target URL".to_owned());
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(format!("missing host in {url:?}, {EXAMPLE}"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(format!(
            "a target URL takes no query or fragment, got {url:?}"
        ));
    }
    let default_port = match scheme {
        Scheme::Http => HTTP_DEFAULT_PORT,
        Scheme::Https => HTTPS_DEFAULT_PORT,
    };
    // Without user info the authority is `host[:port]`.
    let port = match authority.as_str()[host.len()..].strip_prefix(':') {
        None => default_port,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("invalid port {port:?} in {url:?}, expected 1 to 65535"))?,
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    Ok(TargetParts {
        scheme,
        host,
        port,
        base_path: uri.path().trim_end_matches('/').to_owned(),
        authority,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_urls() {
        let parts = parse_target_url("http://127.0.0.1:9000").expect("valid");
        assert_eq!(parts.scheme, Scheme::Http);
        assert_eq!(parts.host, "127.0.0.1");
        assert_eq!(parts.port, 9000);
        assert_eq!(parts.base_path, "");
        assert_eq!(parts.authority.as_str(), "127.0.0.1:9000");

        let parts = parse_target_url("https://API.example.com/v1/").expect("valid");
        assert_eq!(parts.scheme, Scheme::Https);
        assert_eq!(parts.host, "api.example.com");
        assert_eq!(parts.port, 443);
        assert_eq!(parts.base_path, "/v1");

        let parts = parse_target_url("http://[::1]/a/b").expect("valid");
        assert_eq!(parts.host, "::1");
        assert_eq!(parts.port, 80);
        assert_eq!(parts.base_path, "/a/b");
        assert_eq!(parts.authority.as_str(), "[::1]");
    }

    #[test]
    fn bad_target_urls() {
        let cases = [
            ("127.0.0.1:9000", "missing scheme"),
            ("ftp://h/", "unsupported scheme \"ftp\""),
            ("http://", "invalid URL"),
            ("http://a b/", "invalid URL"),
            ("http://u:p@h/", "user info"),
            ("http://h/?q=1", "no query or fragment"),
            ("http://h/#top", "no query or fragment"),
            ("http://h:99999/", "invalid port \"99999\""),
            ("http://h:0/", "invalid port \"0\""),
            ("http://h:x/", "invalid port \"x\""),
            ("/only/a/path", "missing scheme"),
        ];
        for (url, expected) in cases {
            let error = parse_target_url(url).expect_err("an error");
            assert!(error.contains(expected), "{url}: {error}");
        }
        assert!(
            !parse_target_url("http://u:hunter2@h/")
                .expect_err("an error")
                .contains("hunter2")
        );
    }
}
