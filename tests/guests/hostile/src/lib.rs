//! A `handler` that misbehaves on purpose, in the way the `mode` of its use's config
//! names (the config is JSON such as `{"mode":"loop"}`). The gateway must turn each
//! misdeed into a bounded error response within a bounded time and keep serving.
//!
//! Modes: `loop` (never returns), `hog` (allocates until refused), `recurse` (unbounded
//! recursion), `panic`, `bad-header` (an invalid header name), `bad-status` (status 42),
//! `huge` (a body far over any sane limit), `counter` (answers how many calls this
//! instance has seen: always 1 when instances are fresh), `echo` (answers the request as
//! JSON-ish text, for checking what the plugin was given), `sleep` (busy-waits on the
//! monotonic clock for 10 s: the deadline must stop it).

use std::sync::atomic::{AtomicU64, Ordering};

wit_bindgen::generate!({
    path: "../../../wit",
    world: "weir:plugin/handler",
});

/// Calls this instance has handled (state that must never leak between requests).
static CALLS: AtomicU64 = AtomicU64::new(0);

struct Hostile;

impl Guest for Hostile {
    fn handle(request: Request) -> Response {
        let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
        let config = weir::plugin::config::get();
        let mode = mode(&config);
        match mode {
            "loop" => endless(),
            "hog" => hog(),
            "recurse" => text(200, &recurse(1).to_string()),
            "panic" => panic!("hostile guest panics on purpose"),
            "bad-header" => Response {
                status: 200,
                headers: vec![("bad header\n".into(), "x".into())],
                body: None,
            },
            "bad-status" => Response {
                status: 42,
                headers: vec![],
                body: None,
            },
            "huge" => Response {
                status: 200,
                headers: vec![],
                // 64 MiB: over the default memory cap of a plugin.
                body: Some(vec![b'x'; 64 << 20]),
            },
            "counter" => text(200, &calls.to_string()),
            "sleep" => {
                let start = wasi_now();
                while wasi_now() - start < 10_000_000_000 {}
                text(200, "woke up")
            }
            "echo" => text(
                200,
                &format!(
                    "method={} path={} query={} params={:?} body={:?} client={}",
                    request.method,
                    request.path,
                    request.query,
                    request.params,
                    request
                        .body
                        .map(|b| String::from_utf8_lossy(&b).into_owned()),
                    request.client_addr,
                ),
            ),
            other => text(500, &format!("unknown mode {other:?}")),
        }
    }
}

/// The `mode` value of a config like `{"mode":"loop"}` (no JSON parser: keep the guest
/// small).
fn mode(config: &str) -> &str {
    config
        .split("\"mode\"")
        .nth(1)
        .and_then(|rest| rest.split('"').nth(1))
        .unwrap_or("")
}

fn text(status: u16, body: &str) -> Response {
    Response {
        status,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: Some(body.as_bytes().to_vec()),
    }
}

#[allow(clippy::empty_loop)]
fn endless() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn hog() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        chunk[0] = 1;
        hoard.push(std::hint::black_box(chunk));
    }
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let pad = std::hint::black_box([depth; 16]);
    if std::hint::black_box(depth) == 0 {
        return pad[0];
    }
    recurse(depth + 1).wrapping_add(pad[3])
}

fn wasi_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

export!(Hostile);
