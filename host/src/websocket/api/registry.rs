//! The connection registry of the WebSocket APIs: connection id → the task that holds the
//! connection, for the connections API (admin `/connections/{id}`, the plugins'
//! `connections` interface).
//!
//! Ids are 128 bits from the system's secure random source, base64url without padding:
//! knowing one is what lets a caller act on a connection, so they must not be guessable.
//!
//! **Across gateways** (Redis state backend): each registry has an instance id of its own
//! (random, per process and config lineage). While a connection is open, the Redis key
//! `{prefix}ws:conn:{id}` holds its description, including the instance holding it, with a
//! TTL of [`REMOTE_TTL`] refreshed every [`REMOTE_REFRESH`]. An operation on a connection
//! this process does not hold reads that key and publishes the operation on the holder's
//! channel `{prefix}ws:instance:{instance}`, which only that process subscribes to.
//!
//! Why a channel per instance rather than one shared channel: every message reaches one
//! process instead of all of them (a shared channel costs every gateway a decode per
//! message of the whole fleet), and the key answers "gone" for closed connections without
//! a round of broadcasts. `PUBLISH` answering 0 receivers means the holder is gone (its
//! key outlived it): the key is deleted and the connection reported gone.
//!
//! Delivery is at most once: a message published while the holder reconnects to Redis is
//! lost, as a message to a client whose TCP connection just broke is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, mpsc, oneshot};

use crate::state::State;

/// Messages queued for one connection before `send` answers `unavailable`.
pub const MAX_QUEUED_MESSAGES: usize = 256;
/// How long the Redis key of an open connection lives without a refresh.
pub const REMOTE_TTL: Duration = Duration::from_secs(60);
/// How often the Redis keys of this process's connections are refreshed.
pub const REMOTE_REFRESH: Duration = Duration::from_secs(20);
/// How long a registry waits for its first subscription before serving anyway.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);
/// Pause between two attempts to (re)subscribe.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);
/// The longest Close reason (a Close frame's payload is at most 125 bytes).
const MAX_CLOSE_REASON_BYTES: usize = 123;

/// A message for a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Text(String),
    Binary(Bytes),
}

impl Outgoing {
    pub fn len(&self) -> usize {
        match self {
            Outgoing::Text(text) => text.len(),
            Outgoing::Binary(bytes) => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the registry asks of a connection's task.
#[derive(Debug)]
pub enum Command {
    Send(Outgoing),
    Close { code: u16, reason: String },
}

/// Why an operation on a connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    #[error("no open connection has this id")]
    Gone,
    #[error("the connection cannot be reached now")]
    Unavailable,
    #[error("the message is larger than the connection's route accepts")]
    TooLarge,
}

/// A connection as the connections API describes it (and as the Redis key stores it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Described {
    pub connection_id: String,
    pub route: String,
    pub path: String,
    pub client: String,
    pub principal: Option<String>,
    /// Unix milliseconds.
    pub connected_at_ms: u64,
    /// Unix milliseconds of the last message either way (as of the last refresh for a
    /// connection held by another gateway).
    pub last_active_ms: u64,
    /// The registry instance that holds it.
    pub instance: String,
    /// The route's `max_message`.
    pub max_message: u64,
}

/// One connection held here.
struct Local {
    commands: mpsc::Sender<Command>,
    described: Described,
    last_active_ms: Arc<AtomicU64>,
}

/// An operation published to the instance holding a connection.
#[derive(Debug, Serialize, Deserialize)]
struct Remote {
    id: String,
    #[serde(flatten)]
    op: RemoteOp,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum RemoteOp {
    Send {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Standard base64.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binary: Option<String>,
    },
    Close {
        code: u16,
        reason: String,
    },
}

/// Counters of one WebSocket API route, folded into the metrics at scrape time
/// (`weir_websocket_*`). A connection counts into its route's with relaxed atomic adds.
#[derive(Debug, Default)]
pub struct Counters {
    pub opened: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    /// Closes by reason, in [`CloseReason::ALL`] order.
    pub closes: [AtomicU64; CloseReason::ALL.len()],
}

/// Why a connection ended (the `reason` of the close counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed it (or hung up).
    Client,
    /// `close` through the connections API.
    Api,
    IdleTimeout,
    MaxDuration,
    /// A frame or message over `max_frame`/`max_message` (1009).
    TooLarge,
    /// Messages past `rate`/`burst` (1008).
    RateLimited,
    /// A protocol error or a broken connection.
    Error,
    /// The gateway shut down (1001).
    Shutdown,
}

impl Counters {
    /// Connections open now: opened, less those closed.
    pub fn open(&self) -> u64 {
        let closed: u64 = self.closes.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        self.opened.load(Ordering::Relaxed).saturating_sub(closed)
    }
}

impl CloseReason {
    pub const ALL: [CloseReason; 8] = [
        CloseReason::Client,
        CloseReason::Api,
        CloseReason::IdleTimeout,
        CloseReason::MaxDuration,
        CloseReason::TooLarge,
        CloseReason::RateLimited,
        CloseReason::Error,
        CloseReason::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Api => "api",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::MaxDuration => "max_duration",
            CloseReason::TooLarge => "too_large",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::Error => "error",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// The registry. One per gateway lineage: a reload keeps it (see
/// `Gateway::keep_state_of`), so connections opened before a reload stay reachable.
pub struct Connections {
    instance: String,
    state: Arc<State>,
    local: Mutex<HashMap<String, Local>>,
    /// The Redis subscription and refresher, started with the first connection.
    remote: OnceCell<()>,
    /// Per route name, created by its first connection.
    counters: Mutex<HashMap<String, Arc<Counters>>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("instance", &self.instance)
            .field("open", &self.open_count())
            .finish()
    }
}

impl Connections {
    /// An empty registry using `state`'s Redis (when it is Redis) to reach other gateways.
    pub fn new(state: Arc<State>) -> Arc<Connections> {
        Arc::new(Connections {
            instance: new_id(),
            state,
            local: Mutex::default(),
            remote: OnceCell::new(),
            counters: Mutex::default(),
        })
    }

    /// This registry's instance id (its Redis channel).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The counters of route `route`, created on first use.
    pub fn counters(&self, route: &str) -> Arc<Counters> {
        let mut counters = lock(&self.counters);
        if let Some(c) = counters.get(route) {
            return c.clone();
        }
        let c = Arc::new(Counters::default());
        counters.insert(route.to_owned(), c.clone());
        c
    }

    /// Every route's counters (routes that had a connection), for the metrics.
    pub fn all_counters(&self) -> Vec<(String, Arc<Counters>)> {
        lock(&self.counters)
            .iter()
            .map(|(route, c)| (route.clone(), c.clone()))
            .collect()
    }

    /// Connections held here now.
    pub fn open_count(&self) -> usize {
        lock(&self.local).len()
    }

    /// Registers an accepted connection, counted in `counters` (its route's); its task
    /// reads what others want from the returned queue.
    pub(super) async fn open(
        self: &Arc<Self>,
        mut described: Described,
        last_active_ms: Arc<AtomicU64>,
        counters: &Counters,
    ) -> mpsc::Receiver<Command> {
        described.instance = self.instance.clone();
        let (commands, queue) = mpsc::channel(MAX_QUEUED_MESSAGES);
        let id = described.connection_id.clone();
        lock(&self.local).insert(
            id.clone(),
            Local {
                commands,
                described: described.clone(),
                last_active_ms,
            },
        );
        counters.opened.fetch_add(1, Ordering::Relaxed);
        if let Some(redis) = self.state.redis() {
            self.start_remote().await;
            if let Ok(value) = serde_json::to_vec(&described)
                && let Err(error) = redis
                    .connection_set(&id, Bytes::from(value), REMOTE_TTL)
                    .await
            {
                tracing::warn!(%error, "websocket connection not announced to other gateways");
            }
        }
        queue
    }

    /// Forgets a connection that ended, counting it closed in `counters`.
    pub(super) async fn closed(&self, id: &str, reason: CloseReason, counters: &Counters) {
        lock(&self.local).remove(id);
        let slot = CloseReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        counters.closes[slot].fetch_add(1, Ordering::Relaxed);
        if let Some(redis) = self.state.redis()
            && let Err(error) = redis.connection_delete(id).await
        {
            tracing::debug!(%error, "websocket connection key not deleted (it expires)");
        }
    }

    /// Queues `message` for connection `id`, wherever it is held.
    pub async fn send(&self, id: &str, message: Outgoing) -> Result<(), ConnectionError> {
        if let Some(result) = self.local_command(id, |local| {
            if message.len() as u64 > local.described.max_message {
                return Err(ConnectionError::TooLarge);
            }
            Ok(Command::Send(message.clone()))
        }) {
            return result;
        }
        let described = self.remote_described(id).await?;
        if message.len() as u64 > described.max_message {
            return Err(ConnectionError::TooLarge);
        }
        let op = match message {
            Outgoing::Text(text) => RemoteOp::Send {
                text: Some(text),
                binary: None,
            },
            Outgoing::Binary(bytes) => RemoteOp::Send {
                text: None,
                binary: Some(STANDARD.encode(&bytes)),
            },
        };
        self.publish(&described, op).await
    }

    /// Closes connection `id` with `code` (1000 or 3000–4999, else 1000) and `reason`.
    pub async fn close(&self, id: &str, code: u16, reason: &str) -> Result<(), ConnectionError> {
        let code = close_code(code);
        let reason = close_reason(reason);
        if let Some(result) = self.local_command(id, |_| {
            Ok(Command::Close {
                code,
                reason: reason.clone(),
            })
        }) {
            return result;
        }
        let described = self.remote_described(id).await?;
        self.publish(&described, RemoteOp::Close { code, reason })
            .await
    }

    /// What is known of connection `id`.
    pub async fn describe(&self, id: &str) -> Result<Described, ConnectionError> {
        let local = lock(&self.local).get(id).map(|local| {
            let mut described = local.described.clone();
            described.last_active_ms = local.last_active_ms.load(Ordering::Relaxed);
            described
        });
        match local {
            Some(described) => Ok(described),
            None => self.remote_described(id).await,
        }
    }

    /// Runs `command` against a connection held here: `None` when it is not.
    fn local_command(
        &self,
        id: &str,
        command: impl FnOnce(&Local) -> Result<Command, ConnectionError>,
    ) -> Option<Result<(), ConnectionError>> {
        let local = lock(&self.local);
        let entry = local.get(id)?;
        Some(command(entry).and_then(|command| {
            entry
                .commands
                .try_send(command)
                .map_err(|error| match error {
                    mpsc::error::TrySendError::Full(_) => ConnectionError::Unavailable,
                    mpsc::error::TrySendError::Closed(_) => ConnectionError::Gone,
                })
        }))
    }

    /// The description another gateway stored for connection `id`.
    async fn remote_described(&self, id: &str) -> Result<Described, ConnectionError> {
        let Some(redis) = self.state.redis() else {
            return Err(ConnectionError::Gone);
        };
        if !is_id(id) {
            return Err(ConnectionError::Gone);
        }
        let value = redis
            .connection_get(id)
            .await
            .map_err(|_| ConnectionError::Unavailable)?
            .ok_or(ConnectionError::Gone)?;
        serde_json::from_slice(&value).map_err(|_| ConnectionError::Gone)
    }

    async fn publish(&self, described: &Described, op: RemoteOp) -> Result<(), ConnectionError> {
        let Some(redis) = self.state.redis() else {
            return Err(ConnectionError::Gone);
        };
        let id = &described.connection_id;
        let payload = serde_json::to_vec(&Remote { id: id.clone(), op })
            .map_err(|_| ConnectionError::Unavailable)?;
        match redis
            .instance_publish(&described.instance, Bytes::from(payload))
            .await
        {
            Ok(0) => {
                // Its holder is gone; the key outlived it.
                let _ = redis.connection_delete(id).await;
                Err(ConnectionError::Gone)
            }
            Ok(_) => Ok(()),
            Err(_) => Err(ConnectionError::Unavailable),
        }
    }

    /// Starts the subscription to this instance's channel and the key refresher, and
    /// waits (up to [`SUBSCRIBE_WAIT`]) until the first subscription is in place.
    async fn start_remote(self: &Arc<Self>) {
        self.remote
            .get_or_init(|| async {
                let (subscribed, ready) = oneshot::channel();
                tokio::spawn(remote_task(Arc::downgrade(self), subscribed));
                let _ = tokio::time::timeout(SUBSCRIBE_WAIT, ready).await;
            })
            .await;
    }

    /// Carries out an operation published by another gateway.
    fn deliver(&self, payload: &[u8]) {
        let Ok(remote) = serde_json::from_slice::<Remote>(payload) else {
            tracing::debug!("malformed websocket bus message ignored");
            return;
        };
        let command = match remote.op {
            RemoteOp::Send {
                text: Some(text), ..
            } => Command::Send(Outgoing::Text(text)),
            RemoteOp::Send {
                binary: Some(binary),
                ..
            } => match STANDARD.decode(binary) {
                Ok(bytes) => Command::Send(Outgoing::Binary(Bytes::from(bytes))),
                Err(_) => return,
            },
            RemoteOp::Send { .. } => return,
            RemoteOp::Close { code, reason } => Command::Close { code, reason },
        };
        let _ = self.local_command(&remote.id, |_| Ok(command));
    }

    /// Refreshes the Redis keys of the connections held here.
    async fn refresh(&self) {
        let Some(redis) = self.state.redis() else {
            return;
        };
        let all: Vec<Described> = lock(&self.local)
            .values()
            .map(|local| {
                let mut described = local.described.clone();
                described.last_active_ms = local.last_active_ms.load(Ordering::Relaxed);
                described
            })
            .collect();
        for described in all {
            if let Ok(value) = serde_json::to_vec(&described) {
                let _ = redis
                    .connection_set(&described.connection_id, Bytes::from(value), REMOTE_TTL)
                    .await;
            }
        }
    }
}

/// Subscribes to the registry's channel (again after each failure) and refreshes its
/// keys, for as long as the registry exists.
async fn remote_task(registry: Weak<Connections>, subscribed: oneshot::Sender<()>) {
    let mut subscribed = Some(subscribed);
    let mut refresh = tokio::time::interval(REMOTE_REFRESH);
    loop {
        let stream = {
            let Some(this) = registry.upgrade() else {
                return;
            };
            let Some(redis) = this.state.redis() else {
                return;
            };
            redis.instance_subscribe(&this.instance).await
        };
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "websocket bus subscription failed, retrying");
                tokio::time::sleep(RESUBSCRIBE_DELAY).await;
                continue;
            }
        };
        if let Some(subscribed) = subscribed.take() {
            let _ = subscribed.send(());
        }
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let Some(this) = registry.upgrade() else { return };
                    this.deliver(message.get_payload_bytes());
                }
                _ = refresh.tick() => {
                    let Some(this) = registry.upgrade() else { return };
                    this.refresh().await;
                }
            }
        }
        tracing::warn!("websocket bus subscription lost, resubscribing");
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

/// A new connection (or instance) id: 128 random bits, base64url without padding.
pub fn new_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // The system's random source failing is not expected; never hand out a weak id.
        bytes = fastrand::u128(..).to_le_bytes();
        tracing::error!("secure random source failed for a websocket connection id");
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `id` has the shape of an id [`new_id`] makes.
pub fn is_id(id: &str) -> bool {
    id.len() == 22
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A close code an application may send: 1000, or 3000 to 4999; anything else is 1000.
fn close_code(code: u16) -> u16 {
    if code == 1000 || (3000..=4999).contains(&code) {
        code
    } else {
        1000
    }
}

/// `reason` cut to [`MAX_CLOSE_REASON_BYTES`] at a character boundary.
pub fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_bit_base64url() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert!(is_id(&a), "{a}");
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).expect("base64url").len(), 16);
        assert!(!is_id("../etc"));
    }

    #[test]
    fn close_codes_and_reasons_are_made_valid() {
        assert_eq!(close_code(1000), 1000);
        assert_eq!(close_code(4001), 4001);
        assert_eq!(close_code(1006), 1000);
        assert_eq!(close_reason(&"é".repeat(100)).len(), 122);
    }

    #[test]
    fn remote_operations_round_trip_as_json() {
        let remote = Remote {
            id: "x".to_owned(),
            op: RemoteOp::Send {
                text: Some("hi".to_owned()),
                binary: None,
            },
        };
        let json = serde_json::to_string(&remote).expect("json");
        assert_eq!(json, r#"{"id":"x","op":"send","text":"hi"}"#);
        let back: Remote =
            serde_json::from_str(r#"{"id":"x","op":"close","code":4000,"reason":"bye"}"#)
                .expect("parse");
        assert!(matches!(back.op, RemoteOp::Close { code: 4000, .. }));
    }
}
