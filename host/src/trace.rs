//! W3C Trace Context (`traceparent` / `tracestate`): the gateway joins the caller's trace
//! or starts one, and tells the upstream about its own hop.
//!
//! A valid incoming `traceparent` keeps its trace id and flags; the gateway makes a new
//! span id for its hop and sends `traceparent: 00-{trace}-{span}-{flags}` upstream, with
//! `tracestate` passed through unchanged. An absent or malformed `traceparent` starts a new
//! trace (flags `00`: the gateway does not sample) and drops any `tracestate`, as the
//! specification asks. The trace id goes into the access log.

use http::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Length of a `traceparent` value of version `00`.
pub const TRACEPARENT_LEN: usize = 55;

/// The trace this request belongs to and the gateway's hop in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// The gateway's span id (8 bytes, never all zero).
    pub span_id: [u8; 8],
    /// Trace flags from the caller (`01` = sampled), `00` for a trace started here.
    pub flags: u8,
    /// Whether the trace came from the caller (so `tracestate` may be kept).
    pub joined: bool,
}

impl TraceContext {
    /// Joins the caller's trace from `headers`, or starts a new one. `random` supplies the
    /// new ids (injected so tests are deterministic).
    pub fn from_headers(headers: &HeaderMap, random: &mut impl FnMut() -> u128) -> TraceContext {
        let span_id = nonzero_span(random);
        if let Some(parent) =
            crate::headers::find(headers, &TRACEPARENT).and_then(parse_traceparent)
        {
            return TraceContext {
                trace_id: parent.0,
                span_id,
                flags: parent.1,
                joined: true,
            };
        }
        let mut trace = random();
        if trace == 0 {
            trace = 1;
        }
        TraceContext {
            trace_id: trace.to_be_bytes(),
            span_id,
            flags: 0,
            joined: false,
        }
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The `traceparent` value for the upstream request (the gateway's span as parent).
    pub fn traceparent(&self) -> HeaderValue {
        // Only hex digits and dashes: always a valid header value.
        HeaderValue::from_bytes(&self.traceparent_text())
            .unwrap_or_else(|_| HeaderValue::from_static("00"))
    }

    /// The `traceparent` value's text, for a request head written directly. In a fixed
    /// buffer: `format!` cost ~3,000 instructions and an allocation per request.
    pub fn traceparent_text(&self) -> [u8; TRACEPARENT_LEN] {
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write_hex(&self.trace_id, &mut text[3..35]);
        write_hex(&self.span_id, &mut text[36..52]);
        write_hex(&[self.flags], &mut text[53..55]);
        text
    }

    /// Writes `traceparent` (and drops `tracestate` unless the trace was joined).
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(&TRACEPARENT, self.traceparent());
        if !self.joined {
            headers.remove(&TRACESTATE);
        }
    }
}

fn nonzero_span(random: &mut impl FnMut() -> u128) -> [u8; 8] {
    let span = (random() as u64).max(1);
    span.to_be_bytes()
}

/// Parses a `traceparent` value: `version-traceid-parentid-flags`. Version `ff` and
/// all-zero ids are invalid; a future version is read by its first four fields.
fn parse_traceparent(value: &HeaderValue) -> Option<([u8; 16], u8)> {
    let text = value.to_str().ok()?;
    if text.len() < TRACEPARENT_LEN {
        return None;
    }
    let version = decode_hex::<1>(&text[0..2])?[0];
    if version == 0xff || (version == 0 && text.len() != TRACEPARENT_LEN) {
        return None;
    }
    if text.len() > TRACEPARENT_LEN && text.as_bytes()[TRACEPARENT_LEN] != b'-' {
        return None;
    }
    let bytes = text.as_bytes();
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let trace_id = decode_hex::<16>(&text[3..35])?;
    let parent_id = decode_hex::<8>(&text[36..52])?;
    let flags = decode_hex::<1>(&text[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((trace_id, flags))
}

/// Lower-case hex digits only (upper case is invalid in traceparent).
fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    let mut out = vec![b'0'; bytes.len() * 2];
    write_hex(bytes, &mut out);
    // Hex digits are ASCII: always UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// Writes `bytes` as lower-case hex digits into `out` (two per byte; extra room is left
/// as it was).
pub(crate) fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> impl FnMut() -> u128 {
        let mut n = 0u128;
        move || {
            n += 1;
            n << 64 | n
        }
    }

    fn headers(traceparent: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            &TRACEPARENT,
            HeaderValue::from_str(traceparent).expect("value"),
        );
        headers.insert(&TRACESTATE, HeaderValue::from_static("vendor=1"));
        headers
    }

    #[test]
    fn joins_a_valid_trace_with_a_new_span() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut h = headers(incoming);
        let ctx = TraceContext::from_headers(&h, &mut counter());
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.flags, 1);
        ctx.apply(&mut h);
        let out = h[&TRACEPARENT].to_str().expect("ascii").to_owned();
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(
            !out.contains("00f067aa0ba902b7"),
            "the gateway's own span is the parent: {out}"
        );
        assert!(out.ends_with("-01"));
        assert_eq!(h[&TRACESTATE], "vendor=1");
    }

    #[test]
    fn starts_a_trace_when_absent_or_malformed() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            let mut h = headers(bad);
            let ctx = TraceContext::from_headers(&h, &mut counter());
            assert!(!ctx.joined, "{bad:?} should not be joined");
            assert_eq!(ctx.flags, 0);
            ctx.apply(&mut h);
            assert!(
                !h.contains_key(&TRACESTATE),
                "{bad:?}: tracestate of a new trace"
            );
        }
    }

    #[test]
    fn future_versions_are_read_by_their_first_fields() {
        let h = headers("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more");
        let ctx = TraceContext::from_headers(&h, &mut counter());
        assert!(ctx.joined);
    }

    #[test]
    fn traceparent_is_version_trace_span_flags() {
        let ctx = TraceContext {
            trace_id: [0xab; 16],
            span_id: [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef],
            flags: 1,
            joined: true,
        };
        assert_eq!(
            ctx.traceparent(),
            "00-abababababababababababababababab-0123456789abcdef-01"
        );
        let parsed = parse_traceparent(&ctx.traceparent()).expect("valid");
        assert_eq!(parsed, ([0xab; 16], 1));
    }

    #[test]
    fn new_ids_are_never_zero() {
        let ctx = TraceContext::from_headers(&HeaderMap::new(), &mut || 0);
        assert_ne!(ctx.trace_id, [0; 16]);
        assert_ne!(ctx.span_id, [0; 8]);
    }
}
