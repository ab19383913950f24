//! The `weir` command: serve, validate and inspect a route file.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use std::sync::Arc;
use std::time::Duration;

use weir::access_log::AccessLog;
use weir::config::{self, Config, Integration};
use weir::metrics::Metrics;
use weir::pipeline::Gateway;
use weir::server::{Server, Shared};

/// Weir: an API gateway whose custom logic runs as WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Diagnostic log format (filter with RUST_LOG, e.g. `RUST_LOG=weir=debug`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty, env = "WEIR_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The route file.
    #[arg(short, long, default_value = "weir.toml", env = "WEIR_CONFIG")]
    config: PathBuf,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Reload the route file whenever its contents change (checked every second).
    #[arg(long)]
    watch: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the route file until SIGTERM or SIGINT; SIGHUP reloads it.
    Run(RunArgs),
    /// Check a route file (and its certificates) without serving; exit 1 on errors.
    Validate(ConfigArg),
    /// Print the route table in the order the gateway matches it.
    Routes(ConfigArg),
    /// Wasm plugin tools.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Print a component's roles, exports, imports, size and SHA-256.
    Inspect {
        /// The `.wasm` component.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    keep_freed_heap();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => run(&args.config.config, args.watch),
        Command::Validate(args) => validate(&args.config),
        Command::Routes(args) => routes(&args.config),
        Command::Plugin(PluginCommand::Inspect { file }) => inspect_plugin(&file),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// Tells glibc's allocator to keep up to 4 MiB of freed memory at the top of its heap
/// instead of handing it back to the kernel as soon as 128 KiB are free there. Proxying,
/// hyper frees an 8 KiB read buffer every request or so (the last `Bytes` of a response
/// goes with the write that sent it); with the default, that made glibc shrink the heap
/// and grow it again (`brk`) 0.18 times per request, with a page fault 0.1 times per
/// request to touch the regrown pages (measured with `perf stat`, `bench/run`'s layout).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_heap() {
    const TRIM_THRESHOLD: libc::c_int = 4 << 20;
    // SAFETY: `mallopt` sets a parameter of the allocator and is called before any other
    // thread exists; it has no memory-safety preconditions. Its result (1 on success) is
    // ignored: when it fails, the allocator keeps its defaults, which are correct too.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_heap() {}

/// `error` and its causes, `: `-separated, each said once. The library's errors put their
/// cause in their own message as well as behind `source()` (so that a log line or an
/// admin answer that shows one message shows it all); a cause whose text the message
/// before it already holds is not repeated, while a cause behind an `anyhow` context is.
fn report(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Loads and validates the route file, printing every error on failure.
fn load(path: &Path) -> Option<Config> {
    match config::load(path) {
        Ok(config) => Some(config),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "error: {} refused ({} error{})",
                path.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            None
        }
    }
}

fn run(path: &Path, watch: bool) -> anyhow::Result<ExitCode> {
    let Some(config) = load(path) else {
        return Ok(ExitCode::FAILURE);
    };
    // One worker thread: a current-thread runtime, whose one thread both runs the tasks
    // and polls the sockets. A multi-thread runtime with one worker passed work between
    // that worker and its I/O driver with more sleeps and wake-ups (measured, proxying a
    // small GET: 0.44 context switches per request instead of 0.70, and less CPU in both
    // weir and the backend behind it). Everything else (signals, timers, blocking
    // tasks) runs the same on either.
    let mut runtime = match config.server.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    let runtime = runtime.build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let routes = config.routes.len();
        let metrics = Arc::new(Metrics::new());
        let access_log = AccessLog::open(config.log.access.clone(), &metrics)
            .with_context(|| format!("log.access: cannot open {:?}", config.log.access))?;
        let gateway = Gateway::build(config, metrics.clone(), Arc::new(access_log))?;
        gateway.load_keys().await;
        metrics.record_reload(true);
        let server = Server::bind(gateway).await?;
        tracing::info!(routes, config = %path.display(), "weir started");
        tokio::spawn(reload_on_sighup(server.shared().clone()));
        if watch {
            // Read before `ready` is logged: a change right after start is not missed.
            let loaded = std::fs::read(path).ok();
            tokio::spawn(reload_on_change(
                server.shared().clone(),
                path.to_owned(),
                loaded,
            ));
        }
        server.run(shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Reloads the route file on every SIGHUP.
async fn reload_on_sighup(shared: Arc<Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; reload through the admin API");
        return;
    };
    while hangups.recv().await.is_some() {
        tracing::info!(signal = "SIGHUP", "reloading");
        // Errors are logged and counted by `reload`; the running config stays.
        let _ = shared.reload().await;
    }
}

/// How often `--watch` looks at the route file.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Reloads the route file whenever its contents change (`--watch`). Polls the contents
/// rather than file events, so editors that replace the file and mounted config maps
/// (symlink swaps) are seen too.
async fn reload_on_change(shared: Arc<Shared>, path: PathBuf, mut last: Option<Vec<u8>>) {
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let now = tokio::fs::read(&path).await.ok();
        if now.is_some() && now != last {
            tracing::info!(config = %path.display(), "route file changed; reloading");
            let _ = shared.reload().await;
            last = now;
        }
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "stopping"),
    }
}

/// `weir plugin inspect FILE`.
fn inspect_plugin(path: &Path) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let inspection = weir::plugin::inspect::inspect(path).map_err(anyhow::Error::msg)?;
    // A closed pipe (`weir plugin inspect … | head`) ends the output quietly.
    let _ = writeln!(std::io::stdout(), "file: {}\n{inspection}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn validate(path: &Path) -> anyhow::Result<ExitCode> {
    let Some(config) = load(path) else {
        return Ok(ExitCode::FAILURE);
    };
    let (routes, upstreams) = (config.routes.len(), config.upstreams.len());
    Gateway::new(config)?;
    println!(
        "{}: ok ({routes} routes, {upstreams} upstreams)",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn routes(path: &Path) -> anyhow::Result<ExitCode> {
    let Some(config) = load(path) else {
        return Ok(ExitCode::FAILURE);
    };
    let mut order: Vec<usize> = (0..config.routes.len()).collect();
    order.sort_by_cached_key(|&i| precedence_key(&config.routes[i]));
    let rows: Vec<[String; 5]> = order
        .iter()
        .map(|&i| {
            let route = &config.routes[i];
            let methods = match &route.methods {
                Some(methods) => methods
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                None => "*".to_owned(),
            };
            let hosts = if route.hosts.is_empty() {
                "*".to_owned()
            } else {
                route.hosts.join(",")
            };
            let integration = match &route.integration {
                Integration::Upstream(u) => format!("upstream {}", config.upstreams[*u].name),
                Integration::Mock(m) => format!("mock {}", m.status.as_u16()),
                Integration::Handler(h) => format!(
                    "handler {}",
                    config
                        .plugins
                        .get(h.plugin)
                        .map_or("?", |p| p.name.as_str())
                ),
                Integration::WebSocket(_) => "websocket".to_owned(),
            };
            [
                route.name.clone(),
                hosts,
                methods,
                route.path.clone(),
                integration,
            ]
        })
        .collect();
    let header = ["NAME", "HOSTS", "METHODS", "PATH", "INTEGRATION"].map(str::to_owned);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

/// Sorts routes the way the router tries them: exact hosts, then wildcard hosts, then any
/// host; within those, segment by segment, literal before `{param}` before `{greedy+}`.
fn precedence_key(route: &config::Route) -> (u8, Vec<(u8, String)>) {
    let host_class = if route.hosts.is_empty() {
        2
    } else if route.hosts.iter().all(|h| h.starts_with("*.")) {
        1
    } else {
        0
    };
    let segments = route
        .path
        .split('/')
        .skip(1)
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with("+}") {
                (2, String::new())
            } else if segment.starts_with('{') {
                (1, String::new())
            } else {
                (0, segment.to_owned())
            }
        })
        .collect();
    (host_class, segments)
}

#[cfg(test)]
mod tests {
    use super::report;

    #[derive(Debug, thiserror::Error)]
    #[error("plugins.p: {source}")]
    struct Says {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let error = anyhow::Error::new(Says {
            source: std::io::Error::other("cannot read p.wasm"),
        });
        assert_eq!(report(&error), "plugins.p: cannot read p.wasm");
    }

    #[test]
    fn a_cause_behind_a_context_is_said_after_it() {
        let error = anyhow::Error::new(std::io::Error::other("permission denied"))
            .context("log.access: cannot open \"a.log\"");
        assert_eq!(
            report(&error),
            "log.access: cannot open \"a.log\": permission denied"
        );
    }
}
