//! WebAssembly guests built from source for the tests: the first-party plugins
//! (`plugins/`) and the test guests (`tests/guests/`, hostile ones included), each a Cargo
//! workspace of its own, built once per test run for `wasm32-wasip2`.
//!
//! The nested `cargo build` uses a private target dir (`target/wasm-guests`): sharing
//! the outer one would wait on the lock the outer build holds (Spin issue #1712). The
//! `wasm32-wasip2` target is installed with rustup when it is missing, so a fresh
//! machine runs `cargo test --workspace` as it is.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The target every guest is built for.
const TARGET: &str = "wasm32-wasip2";

/// Paths of the built components.
#[derive(Debug)]
pub struct Guests {
    /// `plugins/hello`: the users API handler.
    pub hello: PathBuf,
    /// `plugins/header-auth`: the static-token authorizer (Rust SDK).
    pub header_auth: PathBuf,
    /// `plugins/transform`: the declarative mapping filter (Rust SDK).
    pub transform: PathBuf,
    /// `plugins/chat`: the chat room of a WebSocket API (`websocket` world).
    pub chat: PathBuf,
    /// `tests/guests/hostile`: a handler that misbehaves as its config's `mode` says.
    pub hostile: PathBuf,
    /// `tests/guests/noop-filter`: a filter that changes nothing (exports no `handle`).
    pub noop_filter: PathBuf,
    /// `tests/guests/probe-filter`: a filter whose config chooses its behaviour.
    pub probe_filter: PathBuf,
    /// `tests/guests/probe-authorizer`: an authorizer that counts its calls.
    pub probe_authorizer: PathBuf,
    /// `tests/guests/fetcher`: a handler relaying an upstream through `outbound`.
    pub fetcher: PathBuf,
    /// `tests/guests/wasi-http-hello`: a standard `wasi:http/proxy` component (no weir WIT).
    pub wasi_http_hello: PathBuf,
}

/// The guests, built on first use.
pub fn guests() -> &'static Guests {
    static GUESTS: OnceLock<Guests> = OnceLock::new();
    GUESTS.get_or_init(build)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("wasm-guests")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn build() -> Guests {
    ensure_target();
    let target_dir = target_dir();
    for workspace in ["plugins", "tests/guests"] {
        let manifest = repo().join(workspace).join("Cargo.toml");
        let output = Command::new(cargo())
            .args(["build", "--release", "--target", TARGET, "--manifest-path"])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target_dir)
            // What the outer build set for itself must not leak into the guests' build.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("run cargo for the guests");
        assert!(
            output.status.success(),
            "building the guests in {workspace}/ failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let out = target_dir.join(TARGET).join("release");
    Guests {
        hello: out.join("hello.wasm"),
        header_auth: out.join("header_auth.wasm"),
        transform: out.join("transform.wasm"),
        chat: out.join("chat.wasm"),
        hostile: out.join("hostile.wasm"),
        noop_filter: out.join("noop_filter.wasm"),
        probe_filter: out.join("probe_filter.wasm"),
        probe_authorizer: out.join("probe_authorizer.wasm"),
        fetcher: out.join("fetcher.wasm"),
        wasi_http_hello: out.join("wasi_http_hello.wasm"),
    }
}

/// Installs the `wasm32-wasip2` standard library when rustup says it is missing.
fn ensure_target() {
    let Ok(installed) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return; // No rustup: let cargo report a missing target.
    };
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|line| line.trim() == TARGET)
    {
        return;
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .expect("run rustup");
    assert!(status.success(), "rustup target add {TARGET} failed");
}

/// SHA-256 of a file, lower-case hex (for `sha256` pins).
pub fn sha256_hex(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read guest");
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
