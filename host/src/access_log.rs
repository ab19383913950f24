//! The access log: one JSON line per request, written by a background thread so that a
//! request never waits on I/O. Lines go through a bounded queue; when the writer falls
//! behind (a blocked stdout, a slow disk), lines are dropped and counted
//! (`weir_access_log_dropped_total`) rather than slowing or stalling requests.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::metrics::Metrics;

/// Lines queued for the writer before new ones are dropped.
pub const ACCESS_LOG_QUEUE_LINES: usize = 64 * 1024;
/// How often the writer drains the queue and flushes. Between drains it sleeps, so
/// queueing a line never wakes it (no futex wake-up per request).
pub const ACCESS_LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// The writer's buffer: full buffers are written out between flushes.
const ACCESS_LOG_BUFFER_BYTES: usize = 64 * 1024;

/// `[log] access`: where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

/// One request, as logged.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// RFC 3339, UTC, milliseconds: when the response was finished.
    pub time: String,
    pub request_id: &'a str,
    pub trace_id: String,
    pub client: IpAddr,
    pub method: &'a str,
    /// The canonical path (the raw one when it could not be canonicalised), without query.
    pub path: &'a str,
    /// The route name; empty when no route matched.
    pub route: &'a str,
    pub status: u16,
    /// From the request head to the end of the response, milliseconds.
    pub latency_ms: f64,
    /// The upstream target that answered, if any.
    pub upstream: Option<&'a str>,
    /// Time the upstream took to answer (response head), milliseconds.
    pub upstream_ms: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The authorizer's principal, when a route's authorizer ran.
    pub principal: Option<&'a str>,
    /// The API key's name, when the route required one.
    pub api_key: Option<&'a str>,
    /// `hit` or `miss` when the route has a cache.
    pub cache: Option<&'a str>,
    /// Why the gateway refused or failed the request itself (e.g. `no_route`, `throttled`).
    pub refused: Option<&'a str>,
}

/// Bytes reserved for one line: most lines fit, so formatting one allocates once.
const LINE_CAPACITY: usize = 512;

impl Entry<'_> {
    /// The entry as one JSON object, fields in declaration order, `null` for absent ones:
    /// what `serde_json::to_string` writes (a test holds them equal), by hand, because
    /// serde's per-byte escaping and buffer growth were most of the log's cost per request
    /// (bench/RESULTS.md, "Metrics and access log cost").
    pub fn write_json(&self, out: &mut String) {
        use std::fmt::Write as _;
        // Writing into a String cannot fail.
        out.push_str("{\"time\":");
        json_str(out, &self.time);
        out.push_str(",\"request_id\":");
        json_str(out, self.request_id);
        out.push_str(",\"trace_id\":");
        json_str(out, &self.trace_id);
        out.push_str(",\"client\":\"");
        match self.client {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    push_u64(out, u64::from(octet));
                }
            }
            IpAddr::V6(v6) => {
                let _ = write!(out, "{v6}");
            }
        }
        out.push('"');
        out.push_str(",\"method\":");
        json_str(out, self.method);
        out.push_str(",\"path\":");
        json_str(out, self.path);
        out.push_str(",\"route\":");
        json_str(out, self.route);
        out.push_str(",\"status\":");
        push_u64(out, u64::from(self.status));
        out.push_str(",\"latency_ms\":");
        json_f64(out, self.latency_ms);
        out.push_str(",\"upstream\":");
        json_opt_str(out, self.upstream);
        out.push_str(",\"upstream_ms\":");
        match self.upstream_ms {
            Some(ms) => json_f64(out, ms),
            None => out.push_str("null"),
        }
        out.push_str(",\"bytes_in\":");
        push_u64(out, self.bytes_in);
        out.push_str(",\"bytes_out\":");
        push_u64(out, self.bytes_out);
        out.push_str(",\"principal\":");
        json_opt_str(out, self.principal);
        out.push_str(",\"api_key\":");
        json_opt_str(out, self.api_key);
        out.push_str(",\"cache\":");
        json_opt_str(out, self.cache);
        out.push_str(",\"refused\":");
        json_opt_str(out, self.refused);
        out.push('}');
    }
}

/// A JSON string: copied as it is when nothing in it needs escaping (the usual case),
/// else through serde_json.
fn json_str(out: &mut String, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(text);
        out.push('"');
    } else if let Ok(escaped) = serde_json::to_string(text) {
        out.push_str(&escaped);
    }
}

fn json_opt_str(out: &mut String, text: Option<&str>) {
    match text {
        Some(text) => json_str(out, text),
        None => out.push_str("null"),
    }
}

/// A JSON number as serde_json writes an `f64` (`2.0`, not `2`; `null` if not finite).
/// Milliseconds rounded to microseconds (what the log phase computes) are written from
/// integers, which is what serde's shortest form of them is; anything else goes through
/// `Display`.
fn json_f64(out: &mut String, value: f64) {
    use std::fmt::Write as _;
    let micros = (value * 1000.0).round();
    if !value.is_finite() {
        out.push_str("null");
    } else if value >= 0.0 && micros < 1e15 && micros / 1000.0 == value {
        // `micros` is a whole number below 2^53: the cast is exact.
        let micros = micros as u64;
        push_u64(out, micros / 1000);
        out.push('.');
        let mut frac = micros % 1000;
        if frac == 0 {
            out.push('0');
        } else {
            let mut width = 3;
            while frac.is_multiple_of(10) {
                frac /= 10;
                width -= 1;
            }
            for _ in 0..width - digits(frac) {
                out.push('0');
            }
            push_u64(out, frac);
        }
    } else if value.fract() == 0.0 && value.abs() < 1e16 {
        let _ = write!(out, "{value:.1}");
    } else {
        let _ = write!(out, "{value}");
    }
}

/// The number of decimal digits of `n`.
fn digits(mut n: u64) -> usize {
    let mut count = 1;
    while n >= 10 {
        n /= 10;
        count += 1;
    }
    count
}

/// `n` in decimal, without the formatting machinery.
fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        // `n % 10` is below 10: the cast and the addition stay within ASCII digits.
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &buf[at..] {
        out.push(char::from(digit));
    }
}

/// The access log's sending side.
pub struct AccessLog {
    target: AccessLogTarget,
    queue: Option<SyncSender<String>>,
    dropped: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("target", &self.target)
            .finish()
    }
}

impl AccessLog {
    /// Opens `target` and starts its writer thread (nothing for `Off`).
    pub fn open(target: AccessLogTarget, metrics: &Metrics) -> std::io::Result<AccessLog> {
        let writer: Option<Box<dyn Write + Send>> = match &target {
            AccessLogTarget::Off => None,
            AccessLogTarget::Stdout => Some(Box::new(std::io::stdout())),
            AccessLogTarget::File(path) => Some(Box::new(open_append(path)?)),
        };
        let queue = match writer {
            None => None,
            Some(writer) => {
                let (tx, rx) = std::sync::mpsc::sync_channel(ACCESS_LOG_QUEUE_LINES);
                std::thread::Builder::new()
                    .name("weir-access-log".into())
                    .spawn(move || write_lines(rx, writer))?;
                Some(tx)
            }
        };
        Ok(AccessLog {
            target,
            queue,
            dropped: metrics.access_log_dropped().clone(),
        })
    }

    pub fn target(&self) -> &AccessLogTarget {
        &self.target
    }

    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues one line (never blocks).
    pub fn write(&self, entry: &Entry<'_>) {
        let Some(queue) = &self.queue else {
            return;
        };
        let mut line = String::with_capacity(LINE_CAPACITY);
        entry.write_json(&mut line);
        line.push('\n');
        match queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

fn open_append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The writer thread: every [`ACCESS_LOG_FLUSH_INTERVAL`], drains the queue into a
/// buffer and flushes it; exits (after a last flush) when the sending side is gone.
///
/// Flushing whenever the queue ran dry meant, at proxy rates, one `write` and a thread
/// wake-up per request (about 23 µs of CPU per request measured, more than nginx spends
/// on a whole proxied request).
fn write_lines(rx: Receiver<String>, writer: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(ACCESS_LOG_BUFFER_BYTES, writer);
    loop {
        std::thread::sleep(ACCESS_LOG_FLUSH_INTERVAL);
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    let _ = out.write_all(line.as_bytes());
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = out.flush();
    }
}

/// Now, as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(path: &'a str, principal: Option<&'a str>, latency_ms: f64) -> Entry<'a> {
        Entry {
            time: "2026-11-22T05:00:00.123Z".to_owned(),
            request_id: "abc-123",
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
            client: "::1".parse().expect("ip"),
            method: "GET",
            path,
            route: "GET /users/{id}",
            status: 200,
            latency_ms,
            upstream: principal.map(|_| "http://127.0.0.1:9000"),
            upstream_ms: principal.map(|_| 0.25),
            bytes_in: 0,
            bytes_out: 1234,
            principal,
            api_key: None,
            cache: Some("miss"),
            refused: None,
        }
    }

    #[test]
    fn hand_written_lines_are_what_serde_writes() {
        for entry in [
            entry("/users/7", None, 1.234),
            entry("/users/7", Some("ada"), 2.0),
            entry("/a\"quote\\back\u{1}ctl/é", Some("名前"), 0.001),
            entry("/", Some(""), 12345.678),
            entry("/", None, 0.05),
            entry("/", None, 0.0),
            entry("/", None, 10.1),
            entry("/", None, 1.2345),
            entry("/", None, 987654.321),
            Entry {
                client: "10.0.12.255".parse().expect("ip"),
                status: 503,
                bytes_in: u64::MAX,
                ..entry("/v4", None, 3.5)
            },
        ] {
            let mut line = String::new();
            entry.write_json(&mut line);
            let expected = serde_json::to_string(&entry).expect("serde");
            assert_eq!(line, expected);
        }
    }
}
