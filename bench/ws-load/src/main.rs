//! ws-load: the WebSocket load generator and echo backend of `bench/websocket`.
//!
//! ```text
//! ws-load echo-server LISTEN_ADDR [read_buffer=BYTES]
//!     A WebSocket echo backend (one thread): every text or binary message comes back.
//!     `read_buffer`: tungstenite's `read_buffer_size` (default 128 KiB, which every
//!     connection fills with zeros on its first read, so it is resident).
//! ws-load echo URL [connections=32] [duration=10] [warmup=2] [size=32] [threads=1]
//!     `connections` clients, each in a closed loop: send a text message of `size` bytes,
//!     wait for one message back. Prints round trips per second and latency percentiles
//!     of the round trips that started within `duration` after `warmup`.
//! ws-load idle URL [connections=10000] [hold=30] [sources=127.0.0.1] [parallel=256]
//!     Opens `connections` WebSockets (handshakes at most `parallel` at a time, from the
//!     comma-separated source addresses in turn), prints `open=N failed=N secs=S`, holds
//!     them idle for `hold` seconds, then checks that every 100th still echoes and prints
//!     `alive=N/M`.
//! ```
//!
//! Every wait is bounded: a connect or handshake gets 10 s, a round trip 5 s.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, accept_async_with_config, client_async};

type Ws = WebSocketStream<TcpStream>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, rest) = args.split_first().unwrap_or_else(|| usage());
    let result = match mode.as_str() {
        "echo-server" => {
            let addr = rest.first().unwrap_or_else(|| usage()).clone();
            let read_buffer = rest
                .get(1)
                .and_then(|a| a.strip_prefix("read_buffer="))
                .and_then(|v| v.parse().ok());
            runtime(1).block_on(echo_server(addr, read_buffer))
        }
        "echo" => {
            let opts = Opts::parse(rest);
            runtime(opts.num("threads", 1)).block_on(echo_load(opts))
        }
        "idle" => {
            let opts = Opts::parse(rest);
            runtime(1).block_on(idle(opts))
        }
        _ => usage(),
    };
    if let Err(error) = result {
        eprintln!("ws-load: {error}");
        std::process::exit(1);
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: ws-load echo-server ADDR | echo URL [key=value...] | idle URL [key=value...]"
    );
    std::process::exit(2);
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder.enable_all().build().expect("tokio runtime")
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The URL and `key=value` options.
struct Opts {
    url: String,
    pairs: Vec<(String, String)>,
}

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let (url, rest) = args.split_first().unwrap_or_else(|| usage());
        let pairs = rest
            .iter()
            .map(|a| {
                let (k, v) = a.split_once('=').unwrap_or_else(|| usage());
                (k.to_owned(), v.to_owned())
            })
            .collect();
        Opts {
            url: url.clone(),
            pairs,
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn num(&self, key: &str, default: usize) -> usize {
        self.get(key).map_or(default, |v| {
            v.parse().unwrap_or_else(|_| {
                eprintln!("ws-load: {key} must be a number");
                std::process::exit(2)
            })
        })
    }
}

/// The `host:port` of a `ws://` URL.
fn authority(url: &str) -> Result<SocketAddr, Error> {
    let rest = url.strip_prefix("ws://").ok_or("only ws:// URLs")?;
    let host = rest.split('/').next().unwrap_or(rest);
    Ok(host.parse()?)
}

/// A WebSocket to `url` over a TCP connection from `source` (port chosen by the kernel).
async fn open(url: &str, target: SocketAddr, source: Option<IpAddr>) -> Result<Ws, Error> {
    let attempt = async {
        let socket = if target.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let tcp = socket.connect(target).await?;
        tcp.set_nodelay(true)?;
        let request = url.into_client_request()?;
        let (ws, _) = client_async(request, tcp).await?;
        Ok::<Ws, Error>(ws)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt)
        .await
        .map_err(|_| "connect and handshake took over 10 s")?
}

/// One round trip: `payload` out, one data message back.
async fn round_trip(ws: &mut Ws, payload: &str) -> Result<(), Error> {
    let trip = async {
        ws.send(Message::text(payload)).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(_) | Message::Binary(_))) => return Ok(()),
                Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}").into()),
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Err(error.into()),
                None => return Err("connection ended".into()),
            }
        }
    };
    tokio::time::timeout(ROUND_TRIP_TIMEOUT, trip)
        .await
        .map_err(|_| "no answer within 5 s")?
}

async fn echo_server(addr: String, read_buffer: Option<usize>) -> Result<(), Error> {
    let mut config = WebSocketConfig::default();
    if let Some(size) = read_buffer {
        config = config.read_buffer_size(size);
    }
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("ws-load echo-server on {addr}");
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = accept_async_with_config(tcp, Some(config)).await else {
                return;
            };
            while let Some(Ok(message)) = ws.next().await {
                if let Message::Close(_) = message {
                    // tungstenite queued the Close reply; flush it.
                    let _ = ws.flush().await;
                    return;
                }
                let echo = matches!(message, Message::Text(_) | Message::Binary(_));
                if echo && ws.send(message).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn echo_load(opts: Opts) -> Result<(), Error> {
    let connections = opts.num("connections", 32);
    let duration = Duration::from_secs(opts.num("duration", 10) as u64);
    let warmup = Duration::from_secs(opts.num("warmup", 2) as u64);
    let payload = Arc::new("x".repeat(opts.num("size", 32)));
    let target = authority(&opts.url)?;
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        sockets.push(open(&opts.url, target, None).await?);
    }
    let measure_from = Instant::now() + warmup;
    let until = measure_from + duration;
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut latencies: Vec<u32> = Vec::with_capacity(1 << 16);
                let mut error = None;
                loop {
                    let started = Instant::now();
                    if started >= until {
                        break;
                    }
                    if let Err(e) = round_trip(&mut ws, &payload).await {
                        error = Some(e.to_string());
                        break;
                    }
                    if started >= measure_from {
                        let us = started.elapsed().as_micros();
                        latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                (latencies, error)
            })
        })
        .collect();
    let mut all: Vec<u32> = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, error) = task.await?;
        all.extend(latencies);
        if let Some(error) = error {
            errors += 1;
            eprintln!("ws-load: connection failed: {error}");
        }
    }
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            return 0;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i]
    };
    println!(
        "connections={connections} round_trips={} rt_per_s={:.0} p50_us={} p99_us={} max_us={} errors={errors} self_ticks={}",
        all.len(),
        all.len() as f64 / duration.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        all.last().copied().unwrap_or(0),
        self_ticks(),
    );
    Ok(())
}

/// This process's CPU time so far (user + system, clock ticks), from `/proc/self/stat`.
fn self_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the line; the state (field 3) is index 0 here.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tick(11) + tick(12)
}

async fn idle(opts: Opts) -> Result<(), Error> {
    let connections = opts.num("connections", 10_000);
    let hold = Duration::from_secs(opts.num("hold", 30) as u64);
    let parallel = opts.num("parallel", 256).max(1);
    let sources: Vec<IpAddr> = opts
        .get("sources")
        .unwrap_or("127.0.0.1")
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let target = authority(&opts.url)?;
    let url: Arc<str> = Arc::from(opts.url.as_str());
    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(parallel));
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let (url, permits) = (url.clone(), permits.clone());
            let source = sources[i % sources.len()];
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.ok()?;
                match open(&url, target, Some(source)).await {
                    Ok(ws) => Some(ws),
                    Err(error) => {
                        eprintln!("ws-load: connection {i} failed: {error}");
                        None
                    }
                }
            })
        })
        .collect();
    let mut open_ws = Vec::with_capacity(connections);
    for task in tasks {
        if let Ok(Some(ws)) = task.await {
            open_ws.push(ws);
        }
    }
    println!(
        "open={} failed={} secs={:.1}",
        open_ws.len(),
        connections - open_ws.len(),
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(hold).await;
    let mut alive = 0;
    let mut checked = 0;
    for ws in open_ws.iter_mut().step_by(100) {
        checked += 1;
        if round_trip(ws, "still there?").await.is_ok() {
            alive += 1;
        }
    }
    println!("alive={alive}/{checked}");
    Ok(())
}
