//! Header rules shared by every integration that talks to a peer: request ids,
//! hop-by-hop removal in both directions (and the WebSocket upgrade that survives it), and
//! the `X-Forwarded-*` family.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::{
    CONNECTION, HOST, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use ipnet::IpNet;

use crate::trace::{TRACEPARENT, TraceContext};

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The longest incoming `x-request-id` that is kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The incoming `x-request-id` if it is well-formed (1–128 characters of `A-Z a-z 0-9 - _ . : / + =`),
/// else a new random one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(value) = find(headers, &X_REQUEST_ID) {
        let bytes = value.as_bytes();
        let well_formed = !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(b));
        if well_formed {
            return value.clone();
        }
    }
    new_request_id()
}

/// A new request id: a random (version 4) UUID as 32 lower-case hex digits. Its bits come
/// from the thread's `fastrand` generator (as the trace ids' do): unique, not secret (an
/// id is no credential), and a fifth of the cost of a cryptographic generator.
pub(crate) fn new_request_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_ne_bytes()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    // (`uuid`'s own encoding takes twice the instructions.)
    crate::trace::write_hex(id.as_bytes(), &mut buf);
    // The id is cloned into the upstream request and the response: bytes owned through
    // `from_owner` are shared by a reference count from the start, where copied bytes
    // (`HeaderValue::from_str`) take a second allocation on their first clone.
    // 32 lower-case hex digits are always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// Fields up to which [`find`] compares names rather than hashing.
const SCAN_FIELDS: usize = 8;

/// The first value of `name`, as `headers.get(name)`. A map of a few fields, as most
/// requests and responses have, is searched by comparing names: a lookup by hash costs
/// ~110 instructions (~200 for a name `http` does not know, hashed a byte at a time).
pub fn find<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    if headers.len() > SCAN_FIELDS {
        return headers.get(name);
    }
    headers
        .iter()
        .find_map(|(field, value)| (field == name).then_some(value))
}

/// Removes hop-by-hop headers: the fixed set of RFC 9110 §7.6.1 and every header named in
/// `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass of cheap name comparisons instead of a
    // hashed removal per name (measured: ~1,800 instructions per proxied request).
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Every `Connection` line counts: a field sent on several lines is one comma-separated
    // list (RFC 9110 §5.3), so a name in the second line is as hop-by-hop as in the first.
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|connection| connection.to_str().unwrap_or("").split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The fixed hop-by-hop headers of RFC 9110 §7.6.1, `Connection` (which may name more)
/// included.
static HOP_BY_HOP: [&HeaderName; 9] = [
    &CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &TE,
    &TRAILER,
    &TRANSFER_ENCODING,
    &UPGRADE,
    &PROXY_AUTHENTICATE,
    &PROXY_AUTHORIZATION,
];

/// Whether `name` is one of the fixed hop-by-hop headers, or `Connection` (which may name
/// more).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// Whether `headers` ask for a WebSocket upgrade: `Connection` names `upgrade` and
/// `Upgrade` names `websocket` (RFC 6455 §4.1; both case-insensitive, on any line of
/// either field). The method and the HTTP version are the caller's to check.
pub fn wants_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, &CONNECTION, "upgrade") && has_token(headers, &UPGRADE, "websocket")
}

/// Sets `Connection: upgrade` and `Upgrade: websocket`: the two hop-by-hop headers a
/// WebSocket handshake carries on each hop, put back after [`strip_hop_by_hop`].
pub fn set_websocket_upgrade(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// Whether the comma-separated list in `name` (all its lines) holds `token`, ignoring
/// case. `Upgrade` entries may carry a version (`websocket/13`); only the name counts.
pub(crate) fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    let holds = |value: &HeaderValue| {
        value
            .to_str()
            .unwrap_or("")
            .split(',')
            .map(|item| item.split('/').next().unwrap_or("").trim())
            .any(|item| item.eq_ignore_ascii_case(token))
    };
    // As in `find`: a few fields are compared by name, not looked up by hash.
    if headers.len() <= SCAN_FIELDS {
        return headers
            .iter()
            .any(|(field, value)| field == name && holds(value));
    }
    headers.get_all(name).iter().any(holds)
}

/// Who the client is, per the trusted-proxy rules.
///
/// A peer in `trusted` may tell us who it forwards for: the client is then the right-most
/// address in `X-Forwarded-For` that is not itself a trusted proxy. Any other peer is the
/// client, whatever its headers say.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for hop in text.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !is_trusted(ip, trusted) {
                        return ip;
                    }
                }
                Err(_) => return client,
            }
        }
    }
    client
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// `ip` as a header value (`X-Forwarded-For`). Made once per connection (see
/// `ConnInfo`): cloning it for each request is a reference count, where formatting the
/// address cost two allocations and ~1,400 instructions per request.
pub fn ip_header_value(ip: IpAddr) -> HeaderValue {
    // An IP address in text is digits, hex letters, dots and colons: a valid value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(ip.to_string()))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The host a request asked for, as routing matched it: the request target's authority
/// when there is one (HTTP/2 `:authority`, which comes with no `Host` header; an
/// absolute-form target, whose authority overrides `Host` per RFC 9112 §3.2.2), else
/// `Host`.
pub fn requested_host(parts: &http::request::Parts) -> Option<HeaderValue> {
    parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        .or_else(|| find(&parts.headers, &HOST).cloned())
}

/// What the gateway tells the next hop of a request it passes on (an upstream, a
/// `wasi:http` handler): `X-Forwarded-For`, `-Proto` and `-Host`, and `traceparent` (see
/// [`TraceContext`]), each in place of the request's own fields of that name. Incoming
/// `X-Forwarded-*` are kept (and `X-Forwarded-For` appended to) only when the peer is a
/// trusted proxy; from anyone else they, and `Forwarded`, are replaced or dropped.
///
/// Decided once per request, then either applied to a header map ([`Forwarding::apply`]:
/// HTTP/2 upstreams, WebSocket handshakes, handlers) or written by the HTTP/1.1 client
/// straight into the request head in place of the map's fields it replaces
/// ([`Forwarding::replaces`], [`Forwarding::write`]): inserted into the map, the four
/// fields cost ~1,900 instructions per proxied request in hashing and probing.
#[derive(Debug)]
pub struct Forwarding {
    /// `X-Forwarded-For`: a trusted proxy's chain with the peer appended, or the peer.
    for_: HeaderValue,
    /// `X-Forwarded-Proto`; `None` keeps a trusted proxy's.
    proto: Option<&'static str>,
    /// `X-Forwarded-Host`.
    host: Replace,
    /// Whether the request's `Forwarded` goes (it does from an untrusted peer).
    drop_forwarded: bool,
    trace: TraceContext,
}

/// What becomes of one of the request's fields.
#[derive(Debug)]
enum Replace {
    Keep,
    Set(HeaderValue),
    Drop,
}

impl Forwarding {
    /// The fields for a request with `headers`, from `peer` (`peer_value` is `peer` as
    /// text, [`ip_header_value`]) over `proto`, for `host` (the host it asked for).
    pub fn new(
        headers: &HeaderMap,
        peer: IpAddr,
        peer_value: &HeaderValue,
        trusted: &[IpNet],
        proto: &'static str,
        host: Option<HeaderValue>,
        trace: TraceContext,
    ) -> Forwarding {
        let trusted_peer = is_trusted(peer, trusted);
        // A trusted proxy's chain may come on several lines; they are one list (RFC 9110
        // §5.3), joined in order, as `client_ip` reads them.
        let prior: Vec<&str> = if trusted_peer {
            headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect()
        } else {
            Vec::new()
        };
        let for_ = if prior.is_empty() {
            peer_value.clone()
        } else {
            let peer_text = peer_value.to_str().unwrap_or("unknown");
            // Visible ASCII joined by ", ": always a valid value; the peer alone if not.
            HeaderValue::from_str(&format!("{}, {peer_text}", prior.join(", ")))
                .unwrap_or_else(|_| peer_value.clone())
        };
        let proto = (!trusted_peer || !headers.contains_key(&X_FORWARDED_PROTO)).then_some(proto);
        let host = if trusted_peer && headers.contains_key(&X_FORWARDED_HOST) {
            Replace::Keep
        } else {
            host.map_or(Replace::Drop, Replace::Set)
        };
        Forwarding {
            for_,
            proto,
            host,
            drop_forwarded: !trusted_peer,
            trace,
        }
    }

    /// Sets the fields in `headers`, replacing and dropping the request's own.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(&X_FORWARDED_FOR, self.for_.clone());
        if let Some(proto) = self.proto {
            headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(proto));
        }
        match &self.host {
            Replace::Keep => {}
            Replace::Set(host) => {
                headers.insert(&X_FORWARDED_HOST, host.clone());
            }
            Replace::Drop => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
        if self.drop_forwarded {
            headers.remove(&FORWARDED);
        }
        self.trace.apply(headers);
    }

    /// Whether a request field named `name` is replaced or dropped: one not to write
    /// beside [`Forwarding::write`]'s. A match on the name's text (its length first), as
    /// cheap as it gets for the fields of every request.
    pub fn replaces(&self, name: &HeaderName) -> bool {
        match name.as_str() {
            "x-forwarded-for" | "traceparent" => true,
            "x-forwarded-proto" => self.proto.is_some(),
            "x-forwarded-host" => !matches!(self.host, Replace::Keep),
            "forwarded" => self.drop_forwarded,
            "tracestate" => !self.trace.joined,
            _ => false,
        }
    }

    /// Writes the fields set as HTTP/1.1 field lines into `head`.
    pub fn write(&self, head: &mut Vec<u8>) {
        write_field(head, &X_FORWARDED_FOR, self.for_.as_bytes());
        if let Some(proto) = self.proto {
            write_field(head, &X_FORWARDED_PROTO, proto.as_bytes());
        }
        if let Replace::Set(host) = &self.host {
            write_field(head, &X_FORWARDED_HOST, host.as_bytes());
        }
        write_field(head, &TRACEPARENT, &self.trace.traceparent_text());
    }
}

/// One HTTP/1.1 field line, `name: value` and CRLF, into `head`.
pub fn write_field(head: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    head.extend_from_slice(name.as_str().as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// A header map of `pairs`, in order (repeated names append), for tests.
#[cfg(test)]
pub(crate) fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("test header name"),
            HeaderValue::from_str(value).expect("test header value"),
        );
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace() -> TraceContext {
        TraceContext::from_headers(&HeaderMap::new(), &mut || 7)
    }

    /// What the gateway passes on, applied to `headers` (over plain HTTP).
    fn forward(
        headers: &mut HeaderMap,
        peer: IpAddr,
        trusted: &[IpNet],
        host: Option<&HeaderValue>,
    ) {
        Forwarding::new(
            headers,
            peer,
            &ip_header_value(peer),
            trusted,
            "http",
            host.cloned(),
            trace(),
        )
        .apply(headers);
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("test cidr")).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    #[test]
    fn find_is_get_for_few_fields_and_many() {
        let mut pairs = vec![
            ("x-b", "1"),
            ("x-request-id", "first"),
            ("x-request-id", "second"),
        ];
        for len in [3, SCAN_FIELDS, SCAN_FIELDS + 1, 20] {
            while pairs.len() < len {
                pairs.push(("x-filler", "0"));
            }
            let headers = header_map(&pairs);
            assert_eq!(find(&headers, &X_REQUEST_ID), headers.get(&X_REQUEST_ID));
            assert_eq!(
                find(&headers, &X_REQUEST_ID).map(|v| v.as_bytes()),
                Some(&b"first"[..])
            );
            assert_eq!(find(&headers, &TRACEPARENT), None);
        }
    }

    #[test]
    fn new_request_ids_are_random_version_4_uuids() {
        let (first, second) = (new_request_id(), new_request_id());
        assert_ne!(first, second);
        assert_eq!(first.len(), 32);
        let id = uuid::Uuid::try_parse_ascii(first.as_bytes()).expect("a uuid");
        assert_eq!(id.get_version(), Some(uuid::Version::Random));
        assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        assert!(
            first
                .as_bytes()
                .iter()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
    }

    #[test]
    fn request_id_kept_when_well_formed() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(
            &X_REQUEST_ID,
            HeaderValue::from_static("bad id with spaces"),
        );
        assert_ne!(request_id(&headers), "bad id with spaces");
        headers.insert(
            &X_REQUEST_ID,
            HeaderValue::from_str(&"a".repeat(129)).expect("value"),
        );
        assert_eq!(request_id(&headers).len(), 32);
    }

    #[test]
    fn hop_by_hop_removed_including_connection_named() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("close, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn hop_by_hop_alone_is_removed_and_others_untouched() {
        let mut headers = HeaderMap::new();
        headers.insert("x-kept", HeaderValue::from_static("1"));
        headers.insert(http::header::HOST, HeaderValue::from_static("h"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 2);
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(PROXY_AUTHORIZATION, HeaderValue::from_static("secret"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 2);
        assert!(!headers.contains_key(TRANSFER_ENCODING));
        assert!(!headers.contains_key(PROXY_AUTHORIZATION));
    }

    #[test]
    fn request_id_is_32_hex_digits_and_clones_equal() {
        let id = request_id(&HeaderMap::new());
        assert_eq!(id.len(), 32);
        assert!(id.as_bytes().iter().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id.clone(), id);
        assert_ne!(request_id(&HeaderMap::new()), id);
    }

    #[test]
    fn ip_header_values() {
        assert_eq!(ip_header_value(ip("192.168.10.200")), "192.168.10.200");
        assert_eq!(ip_header_value(ip("::1")), "::1");
    }

    #[test]
    fn hop_by_hop_named_in_any_connection_line_removed() {
        let mut headers = HeaderMap::new();
        headers.append(CONNECTION, HeaderValue::from_static("x-first"));
        headers.append(CONNECTION, HeaderValue::from_static("x-second"));
        headers.insert("x-first", HeaderValue::from_static("1"));
        headers.insert("x-second", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert!(headers.is_empty());
    }

    #[test]
    fn websocket_upgrade_detected_in_any_case_and_on_any_line() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(wants_websocket(&headers));
        headers.insert(UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!wants_websocket(&headers));
        headers.append(UPGRADE, HeaderValue::from_static("websocket/13"));
        assert!(wants_websocket(&headers));
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!wants_websocket(&headers));
        headers.remove(CONNECTION);
        assert!(!wants_websocket(&headers));
    }

    #[test]
    fn websocket_upgrade_survives_stripping_when_set_again() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade, x-hop"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("sec-websocket-key", HeaderValue::from_static("k"));
        strip_hop_by_hop(&mut headers);
        set_websocket_upgrade(&mut headers);
        assert_eq!(headers[CONNECTION], "upgrade");
        assert_eq!(headers[UPGRADE], "websocket");
        assert!(!headers.contains_key("x-hop"));
        assert!(headers.contains_key("sec-websocket-key"));
        assert!(wants_websocket(&headers));
    }

    #[test]
    fn forwarded_for_lines_from_trusted_peer_joined_and_appended() {
        let mut headers = HeaderMap::new();
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
        let trusted = nets(&["127.0.0.1/32"]);
        forward(&mut headers, ip("127.0.0.1"), &trusted, None);
        assert_eq!(headers[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 127.0.0.1");
        assert_eq!(headers.get_all(&X_FORWARDED_FOR).iter().count(), 1);
    }

    #[test]
    fn client_ip_ignores_untrusted_forwarded_for() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        assert_eq!(client_ip(&headers, ip("9.9.9.9"), &[]), ip("9.9.9.9"));
    }

    #[test]
    fn client_ip_walks_trusted_chain_from_the_right() {
        let trusted = nets(&["10.0.0.0/8"]);
        let mut headers = HeaderMap::new();
        headers.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.7"),
        );
        assert_eq!(client_ip(&headers, ip("10.0.0.1"), &trusted), ip("1.2.3.4"));
    }

    #[test]
    fn forwarded_headers_replaced_from_untrusted_peer() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        headers.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        let host = HeaderValue::from_static("api.example");
        forward(&mut headers, ip("9.9.9.9"), &[], Some(&host));
        assert_eq!(headers[&X_FORWARDED_FOR], "9.9.9.9");
        assert_eq!(headers[&X_FORWARDED_PROTO], "http");
        assert_eq!(headers[&X_FORWARDED_HOST], "api.example");
        assert!(!headers.contains_key("forwarded"));
    }

    #[test]
    fn forwarded_for_appended_from_trusted_peer() {
        let mut headers = HeaderMap::new();
        headers.insert(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        let trusted = nets(&["127.0.0.1/32"]);
        forward(&mut headers, ip("127.0.0.1"), &trusted, None);
        assert_eq!(headers[&X_FORWARDED_FOR], "1.2.3.4, 127.0.0.1");
        assert_eq!(headers[&X_FORWARDED_PROTO], "https");
    }

    /// The HTTP/1.1 client writes the request's fields but those [`Forwarding::replaces`],
    /// then [`Forwarding::write`]'s: the same fields as [`Forwarding::apply`] leaves in a map.
    #[test]
    fn written_fields_are_the_applied_ones() {
        let incoming = [
            ("host", "api.example"),
            ("x-forwarded-for", "1.1.1.1"),
            ("X-Forwarded-For", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "edge.example"),
            ("forwarded", "for=1.1.1.1"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", "vendor=1"),
            ("accept", "*/*"),
        ];
        let host = HeaderValue::from_static("api.example");
        for fields in [&incoming[..], &incoming[..1], &incoming[5..]] {
            for trusted in [nets(&[]), nets(&["127.0.0.0/8"])] {
                for host in [None, Some(host.clone())] {
                    let map = header_map(fields);
                    let peer = ip("127.0.0.1");
                    let trace = TraceContext::from_headers(&map, &mut || 7);
                    let forwarding = Forwarding::new(
                        &map,
                        peer,
                        &ip_header_value(peer),
                        &trusted,
                        "http",
                        host,
                        trace,
                    );
                    let mut applied = map.clone();
                    forwarding.apply(&mut applied);
                    let mut head = Vec::new();
                    for (name, value) in &map {
                        if !forwarding.replaces(name) {
                            write_field(&mut head, name, value.as_bytes());
                        }
                    }
                    forwarding.write(&mut head);
                    let mut written: Vec<String> = String::from_utf8(head)
                        .expect("ascii")
                        .lines()
                        .map(str::to_owned)
                        .collect();
                    let mut expected: Vec<String> = applied
                        .iter()
                        .map(|(n, v)| format!("{n}: {}", v.to_str().expect("ascii")))
                        .collect();
                    written.sort();
                    expected.sort();
                    assert_eq!(written, expected, "{fields:?}, trusted {trusted:?}");
                }
            }
        }
    }
}
