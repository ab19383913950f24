//! The JavaScript and Python plugins (`plugins/js/`, `plugins/python/`), built from source
//! on first use, like the Rust guests ([`crate::guests`]).
//!
//! Each language's toolchain comes from its registry at the version the plugin pins, and
//! is installed into the target dir (`target/polyglot/`), never into the source tree:
//!
//! - JavaScript: `npm install` of `plugins/js/xml-response/package-lock.json`
//!   (componentize-js), then `componentize-js` as the package's `build` script says.
//! - Python: `pip install --target` of `plugins/python/validate/requirements.txt`
//!   (componentize-py; `--target` needs no venv and is not refused by an
//!   externally-managed system Python), then `componentize-py componentize`.
//!
//! A file lock keeps concurrent test processes from building at once. An install is
//! skipped while its lock file is unchanged, a build while its inputs are
//! (a stamp of their SHA-256 beside the component): a rebuilt component is a new file to
//! compile. Finally each component goes through `weir plugin inspect` with the tests'
//! compiled-component cache, so that a gateway started by a test loads it from the cache
//! instead of compiling ≈ 12–18 MB of JS or Python engine within its start timeout.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use crate::harness::weir_bin;

/// Paths of the built components.
#[derive(Debug)]
pub struct Polyglot {
    /// `plugins/js/xml-response`: a filter turning JSON responses into XML.
    pub xml_response: PathBuf,
    /// `plugins/python/validate`: a filter checking JSON request bodies.
    pub validate: PathBuf,
}

/// The components, built on first use.
pub fn polyglot() -> &'static Polyglot {
    static POLYGLOT: OnceLock<Polyglot> = OnceLock::new();
    POLYGLOT.get_or_init(build)
}

/// The compiled-component cache of the plugin tests (see `plugins.rs`), warmed here.
pub fn plugin_cache_dir() -> PathBuf {
    target_root().join("plugin-cache-tests")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

fn target_root() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

fn build() -> Polyglot {
    let out = target_root().join("polyglot");
    std::fs::create_dir_all(&out).expect("create target/polyglot");
    // Two test processes (`cargo test` runs beside each other) must not install into the
    // same directory at once; the lock goes with the file when this function returns.
    let lock = std::fs::File::create(out.join(".lock")).expect("create target/polyglot/.lock");
    lock.lock().expect("lock target/polyglot");
    // The two are independent: install and build them side by side.
    std::thread::scope(|scope| {
        let js = scope.spawn(|| {
            let wasm = build_js(&out);
            warm_cache(&wasm);
            wasm
        });
        let py = scope.spawn(|| {
            let wasm = build_python(&out);
            warm_cache(&wasm);
            wasm
        });
        Polyglot {
            xml_response: js.join().expect("building the JavaScript plugin"),
            validate: py.join().expect("building the Python plugin"),
        }
    })
}

// ---- JavaScript ----

fn build_js(out: &Path) -> PathBuf {
    let src = repo().join("plugins/js/xml-response");
    let toolchain = out.join("js");
    let lock = std::fs::read(src.join("package-lock.json")).expect("read package-lock.json");
    let stamp = toolchain.join("installed-package-lock.json");
    if std::fs::read(&stamp).ok().as_deref() != Some(&lock[..]) {
        let started = Instant::now();
        let _ = std::fs::remove_dir_all(&toolchain);
        std::fs::create_dir_all(&toolchain).expect("create target/polyglot/js");
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(src.join(file), toolchain.join(file)).expect("copy npm manifest");
        }
        // `npm install` of the copied lock installs exactly its versions (checked against
        // its integrity hashes). Not `npm ci`: it refuses this tree, whose jco declares
        // optional platform packages at versions never published (its "missing from
        // lock file" check), which `npm install` skips as it should.
        run(
            Command::new("npm")
                .args(["install", "--ignore-scripts", "--no-audit", "--no-fund"])
                .args(["--loglevel", "error"])
                .current_dir(&toolchain),
            "npm install (componentize-js; needs Node.js >= 20.19 and npm)",
        );
        std::fs::write(&stamp, &lock).expect("write stamp");
        eprintln!(
            "polyglot: installed componentize-js in {:.1?}",
            started.elapsed()
        );
    }

    let wasm = out.join("xml-response.wasm");
    let inputs = [
        src.join("xml-response.js"),
        src.join("package-lock.json"),
        repo().join("wit/plugin.wit"),
    ];
    if !up_to_date(&wasm, &inputs) {
        let started = Instant::now();
        // What `npm run build` in the plugin's folder runs, with paths from here.
        run(
            Command::new("node")
                .arg(toolchain.join("node_modules/@bytecodealliance/componentize-js/src/cli.js"))
                .arg(src.join("xml-response.js"))
                .arg("--wit")
                .arg(repo().join("wit"))
                .args(["--world-name", "filter"])
                // No `fetch` and no wasi:http handler export: a filter has no use for
                // them (weir refuses a plugin's outgoing wasi:http requests; `outbound`
                // is the way to upstreams).
                .args(["--disable", "http", "fetch-event"])
                .arg("--out")
                .arg(&wasm),
            "componentize-js",
        );
        stamp_inputs(&wasm, &inputs);
        eprintln!(
            "polyglot: built {} ({} bytes) in {:.1?}",
            wasm.display(),
            size(&wasm),
            started.elapsed()
        );
    }
    wasm
}

// ---- Python ----

fn build_python(out: &Path) -> PathBuf {
    let src = repo().join("plugins/python/validate");
    let site = out.join("py");
    let requirements = std::fs::read(src.join("requirements.txt")).expect("read requirements");
    let stamp = site.join(".installed-requirements.txt");
    if std::fs::read(&stamp).ok().as_deref() != Some(&requirements[..]) {
        let started = Instant::now();
        let _ = std::fs::remove_dir_all(&site);
        run(
            Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(["--no-input", "--target"])
                .arg(&site)
                .arg("-r")
                .arg(src.join("requirements.txt")),
            "pip install (componentize-py; needs Python >= 3.9 and pip)",
        );
        std::fs::write(&stamp, &requirements).expect("write stamp");
        eprintln!(
            "polyglot: installed componentize-py in {:.1?}",
            started.elapsed()
        );
    }

    let wasm = out.join("validate.wasm");
    let inputs = [
        src.join("app.py"),
        src.join("rules.py"),
        src.join("requirements.txt"),
        repo().join("wit/plugin.wit"),
    ];
    if !up_to_date(&wasm, &inputs) {
        let started = Instant::now();
        // componentize-py leaves `__pycache__` beside the sources: build from a copy.
        let app = out.join("validate-src");
        let _ = std::fs::remove_dir_all(&app);
        std::fs::create_dir_all(&app).expect("create target/polyglot/validate-src");
        for file in ["app.py", "rules.py"] {
            std::fs::copy(src.join(file), app.join(file)).expect("copy plugin source");
        }
        run(
            Command::new("python3")
                .args(["-c", COMPONENTIZE_PY])
                .arg("--wit-path")
                .arg(repo().join("wit"))
                .args(["--world", "filter", "componentize", "app"])
                .arg("--python-path")
                .arg(&app)
                // Trapping stubs for every WASI import: the component imports only
                // `weir:plugin` (the validator needs no clock, randomness or files).
                .arg("--stub-wasi")
                .arg("--output")
                .arg(&wasm)
                .env("PYTHONPATH", &site)
                .current_dir(out),
            "componentize-py",
        );
        stamp_inputs(&wasm, &inputs);
        eprintln!(
            "polyglot: built {} ({} bytes) in {:.1?}",
            wasm.display(),
            size(&wasm),
            started.elapsed()
        );
    }
    wasm
}

/// The `componentize-py` console script, run from a `pip install --target` directory.
const COMPONENTIZE_PY: &str = "import sys; from componentize_py import script; \
                               sys.argv[0] = 'componentize-py'; sys.exit(script())";

// ---- shared ----

/// Compiles `wasm` into the tests' component cache (`weir plugin inspect` compiles through
/// it), and checks it is a filter.
fn warm_cache(wasm: &Path) {
    let started = Instant::now();
    let cache = plugin_cache_dir();
    let output = Command::new(weir_bin())
        .args(["plugin", "inspect"])
        .arg(wasm)
        .env("WEIR_PLUGIN_CACHE", &cache)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run weir plugin inspect");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("roles: filter\n"),
        "weir plugin inspect {}:\n{stdout}\n{}",
        wasm.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!(
        "polyglot: {} ready in the component cache in {:.1?}",
        wasm.display(),
        started.elapsed()
    );
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// SHA-256 over the inputs' paths and contents.
fn inputs_digest(inputs: &[PathBuf]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for input in inputs {
        let bytes =
            std::fs::read(input).unwrap_or_else(|e| panic!("cannot read {}: {e}", input.display()));
        context.update(input.to_string_lossy().as_bytes());
        context.update(&(bytes.len() as u64).to_le_bytes());
        context.update(&bytes);
    }
    let digest = context.finish();
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn stamp_path(wasm: &Path) -> PathBuf {
    wasm.with_extension("wasm.inputs")
}

fn up_to_date(wasm: &Path, inputs: &[PathBuf]) -> bool {
    wasm.exists() && std::fs::read_to_string(stamp_path(wasm)).ok() == Some(inputs_digest(inputs))
}

fn stamp_inputs(wasm: &Path, inputs: &[PathBuf]) {
    std::fs::write(stamp_path(wasm), inputs_digest(inputs)).expect("write inputs stamp");
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
