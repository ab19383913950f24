//! The `weir` command line: `validate`, `routes`, and `run` refusing what it cannot serve.

use std::process::{Command, Output};

use crate::harness::weir_bin;

fn weir(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(weir_bin())
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run weir")
}

fn write(dir: &std::path::Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write file");
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"

[upstreams.users]
targets = ["http://127.0.0.1:9", { url = "http://127.0.0.1:10", weight = 2 }]

[[routes]]
name = "files"
path = "/files/{path+}"
upstream = "users"

[[routes]]
name = "user"
methods = ["GET"]
path = "/users/{id}"
upstream = "users"

[[routes]]
name = "me"
methods = ["GET"]
path = "/users/me"
mock = { status = 200, body = "me" }

[[routes]]
name = "api-only"
hosts = ["api.test"]
path = "/users/{id}"
mock = { status = 200 }
"#;

#[test]
fn validate_accepts_a_good_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "weir.toml", GOOD);
    let out = weir(&["validate"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "weir.toml: ok (4 routes, 1 upstreams)\n"
    );
}

#[test]
fn validate_reports_every_error_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "bad.toml",
        r#"[server]
lisen = "127.0.0.1:8080"
listen = "127.0.0.1:8080"

[upstreams.users]
targets = ["http://127.0.0.1:9000"]
timeout = "5 parsecs"

[[routes]]
path = "/users"
upstream = "usres"

[[routes]]
path = "/x"
"#,
    );
    let out = weir(&["validate", "-c", "bad.toml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "bad.toml:2:1: server.lisen: unknown key (did you mean \"listen\"?)\n\
         bad.toml:7:11: upstreams.users.timeout: invalid duration \"5 parsecs\", expected e.g. \"250ms\", \"5s\", \"1h\"\n\
         bad.toml:11:12: routes[0].upstream: unknown upstream \"usres\" (did you mean \"users\"?)\n\
         bad.toml:13:1: routes[1]: a route needs exactly one integration: `upstream`, `mock` or `handler`\n\
         error: bad.toml refused (4 errors)\n"
    );
}

#[test]
fn validate_reports_a_missing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = weir(&["validate", "-c", "missing.toml"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("missing.toml: "), "{stderr}");
}

#[test]
fn routes_prints_the_table_in_match_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "weir.toml", GOOD);
    let out = weir(&["routes"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // Exact hosts first; then literal before parameter before greedy.
    assert_eq!(names, ["api-only", "files", "me", "user"], "{stdout}");
    assert!(stdout.starts_with("NAME"), "{stdout}");
    assert!(stdout.contains("upstream users"), "{stdout}");
}

#[test]
fn run_refuses_a_bad_file_without_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "weir.toml",
        "[server]\nlisten = \"not an address\"\n",
    );
    let out = weir(&["run"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("weir.toml:2:10: server.listen:"),
        "{stderr}"
    );
}

#[test]
fn run_reports_an_address_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "weir.toml",
        &format!("[server]\nlisten = \"{addr}\"\n\n[[routes]]\npath = \"/\"\nmock = {{}}\n"),
    );
    let out = weir(&["run"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (http)")),
        "{stderr}"
    );
}
