//! Validation and validated form of a route's WebSocket keys:
//!
//! - proxied WebSockets (routes with `upstream`): `websocket_idle_timeout` and
//!   `websocket_max_duration` ([`WebSocketProxy`]);
//! - WebSocket APIs, where the gateway is the WebSocket server: `websocket = { selection,
//!   connect, disconnect, default, routes, config, max_frame, max_message, rate, burst,
//!   idle_timeout, max_duration }` ([`WebSocketApi`], run by `crate::websocket::api`).
//!
//! Called from `validate.rs`; like it, it reports every problem and uses stand-ins so
//! that checking goes on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::document::Report;
use super::keypath::KeyPath;
use super::plugins::UseNames;
use super::raw::{RawSize, RawWebSocketApi};
use super::units::{parse_duration, parse_size};

/// Default route `websocket_idle_timeout`: a tunnel with no bytes either way for this long
/// is closed.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Default route `websocket_max_duration`: a tunnel is closed this long after its
/// handshake, busy or not.
pub const DEFAULT_WEBSOCKET_MAX_DURATION: Duration = Duration::from_secs(2 * 60 * 60);

/// How long a proxied WebSocket connection of a route may live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketProxy {
    /// `websocket_idle_timeout`: no bytes in either direction for this long closes the
    /// connection (WebSocket pings count as traffic).
    pub idle_timeout: Duration,
    /// `websocket_max_duration`: the connection is closed this long after the handshake.
    pub max_duration: Duration,
}

impl Default for WebSocketProxy {
    fn default() -> Self {
        WebSocketProxy {
            idle_timeout: DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
            max_duration: DEFAULT_WEBSOCKET_MAX_DURATION,
        }
    }
}

/// A route's `websocket_idle_timeout` and `websocket_max_duration`; `proxied` says whether
/// the route has `upstream` (on any other route the keys are refused).
pub fn route(
    report: &mut Report<'_>,
    path: &KeyPath,
    proxied: bool,
    idle_timeout: Option<String>,
    max_duration: Option<String>,
) -> WebSocketProxy {
    let keys = [
        ("websocket_idle_timeout", idle_timeout.is_some()),
        ("websocket_max_duration", max_duration.is_some()),
    ];
    if !proxied {
        for (key, set) in keys {
            if set {
                report.at(
                    &path.key(key),
                    "only meaningful on a route with `upstream` (WebSocket upgrades are \
                     passed through to upstreams only)",
                );
            }
        }
    }
    WebSocketProxy {
        idle_timeout: duration(
            report,
            &path.key("websocket_idle_timeout"),
            idle_timeout,
            DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
        ),
        max_duration: duration(
            report,
            &path.key("websocket_max_duration"),
            max_duration,
            DEFAULT_WEBSOCKET_MAX_DURATION,
        ),
    }
}

/// Default `websocket.max_frame`: the largest frame a client may send, in bytes.
pub const DEFAULT_WEBSOCKET_MAX_FRAME_BYTES: u64 = 32 * 1024;
/// Default `websocket.max_message`: the largest message (all its frames) a client may
/// send, and the largest one sent to a client, in bytes.
pub const DEFAULT_WEBSOCKET_MAX_MESSAGE_BYTES: u64 = 128 * 1024;
/// The largest `websocket.max_message` (and `max_frame`) accepted.
pub const MAX_WEBSOCKET_MESSAGE_BYTES: u64 = 16 * 1024 * 1024;
/// Default `websocket.selection`: the route key is the `action` member of JSON messages.
pub const DEFAULT_WEBSOCKET_SELECTION: &str = "$.action";
/// The route key of messages no other route key matches.
pub const ROUTE_KEY_DEFAULT: &str = "$default";
/// The route key of the handshake.
pub const ROUTE_KEY_CONNECT: &str = "$connect";
/// The route key of the end of a connection.
pub const ROUTE_KEY_DISCONNECT: &str = "$disconnect";
/// The prefix of a handler that is an upstream (`"upstream:NAME"`).
const UPSTREAM_HANDLER_PREFIX: &str = "upstream:";

/// `websocket = { ... }`: the route is a WebSocket API, the gateway its WebSocket server.
#[derive(Debug, Clone)]
pub struct WebSocketApi {
    /// `selection`: where in a JSON message its route key is.
    pub selection: Selection,
    /// `connect`: called on the handshake (`$connect`), may refuse it.
    pub connect: Option<WsHandler>,
    /// `disconnect`: called once a connection closed (`$disconnect`), best effort.
    pub disconnect: Option<WsHandler>,
    /// `default`: messages whose route key is not in `routes`, or that have none
    /// (`$default`).
    pub default: Option<WsHandler>,
    /// `routes`: route key → handler.
    pub routes: BTreeMap<String, WsHandler>,
    /// `config`: what plugin handlers' `config.get` returns, as JSON.
    pub config: Arc<str>,
    /// `config.upstreams`: what plugin handlers' `outbound` may reach.
    pub upstreams: Arc<[(String, usize)]>,
    /// `max_frame`: bytes of one frame from the client (1009 past it).
    pub max_frame: u64,
    /// `max_message`: bytes of one message either way (1009 past it from the client).
    pub max_message: u64,
    /// `rate` (messages per second per connection) and `burst`; past them, 1008.
    pub rate: Option<MessageRate>,
    /// `idle_timeout`: no message either way for this long closes the connection (1001).
    pub idle_timeout: Duration,
    /// `max_duration`: the connection is closed this long after its handshake (1001).
    pub max_duration: Duration,
}

impl WebSocketApi {
    /// The handler of a message with route key `key` (`None`: the message has none),
    /// with the route key it runs under.
    pub fn handler_for<'a>(&'a self, key: Option<&'a str>) -> Option<(&'a str, &'a WsHandler)> {
        if let Some((key, handler)) = key.and_then(|key| self.routes.get_key_value(key)) {
            return Some((key.as_str(), handler));
        }
        self.default
            .as_ref()
            .map(|handler| (ROUTE_KEY_DEFAULT, handler))
    }
}

/// `rate` and `burst` of a WebSocket API: a token bucket per connection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MessageRate {
    /// Messages per second.
    pub per_second: f64,
    /// Messages allowed at once (default: `rate`, at least 1).
    pub burst: u32,
}

/// A route selection expression: `$.a.b` (or API Gateway's `$request.body.a.b`), the
/// path of object members to the route key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The expression as written.
    pub expression: String,
    pub members: Vec<String>,
}

impl Selection {
    /// Parses `$.a.b` or `$request.body.a.b`.
    pub fn parse(text: &str) -> Option<Selection> {
        let rest = text
            .strip_prefix("$request.body.")
            .or_else(|| text.strip_prefix("$."))?;
        let members: Vec<String> = rest.split('.').map(str::to_owned).collect();
        if members.iter().any(String::is_empty) {
            return None;
        }
        Some(Selection {
            expression: text.to_owned(),
            members,
        })
    }

    /// The route key of a text message: the string (or number, or boolean) at the
    /// expression's path in a JSON message; `None` for anything else.
    pub fn route_key(&self, message: &str) -> Option<String> {
        let value: serde_json::Value = serde_json::from_str(message).ok()?;
        let mut at = &value;
        for member in &self.members {
            at = at.as_object()?.get(member)?;
        }
        match at {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

/// What handles an event of a WebSocket API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsHandler {
    /// A plugin of the `websocket` world: index into [`super::Config::plugins`].
    Plugin(usize),
    /// `"upstream:NAME"`: the message is POSTed to it; index into
    /// [`super::Config::upstreams`].
    Upstream(usize),
}

/// Validates `websocket = { ... }`.
pub fn api(
    report: &mut Report<'_>,
    path: &KeyPath,
    raw: RawWebSocketApi,
    names: UseNames<'_>,
) -> WebSocketApi {
    let selection_path = path.key("selection");
    let selection_text = raw
        .selection
        .unwrap_or_else(|| DEFAULT_WEBSOCKET_SELECTION.to_owned());
    let selection = Selection::parse(&selection_text).unwrap_or_else(|| {
        report.at(
            &selection_path,
            format!(
                "invalid selection expression {selection_text:?}, expected e.g. \"$.action\" \
                 or \"$request.body.action\""
            ),
        );
        Selection {
            expression: selection_text.clone(),
            members: vec!["action".to_owned()],
        }
    });
    let mut handler = |key: &KeyPath, raw: Option<String>| {
        raw.and_then(|name| ws_handler(report, key, &name, names))
    };
    let connect = handler(&path.key("connect"), raw.connect);
    let disconnect = handler(&path.key("disconnect"), raw.disconnect);
    let default = handler(&path.key("default"), raw.default);
    let routes_path = path.key("routes");
    let mut routes = BTreeMap::new();
    for (key, name) in raw.routes.unwrap_or_default() {
        let at = routes_path.key(&key);
        if key.starts_with('$') {
            report.at(
                &at,
                format!(
                    "route keys starting with `$` are reserved; use `connect`, `disconnect` \
                     or `default` for {key:?}"
                ),
            );
            continue;
        }
        if let Some(handler) = ws_handler(report, &at, &name, names) {
            routes.insert(key, handler);
        }
    }
    let config = raw.config.unwrap_or_default();
    let upstreams =
        super::plugins::outbound_upstreams(report, &path.key("config"), &config, names.upstreams);
    let max_frame = size(
        report,
        &path.key("max_frame"),
        raw.max_frame,
        DEFAULT_WEBSOCKET_MAX_FRAME_BYTES,
    );
    let max_message = size(
        report,
        &path.key("max_message"),
        raw.max_message,
        DEFAULT_WEBSOCKET_MAX_MESSAGE_BYTES,
    );
    if max_frame > max_message {
        report.at(
            &path.key("max_frame"),
            format!("must not be larger than `max_message` ({max_message} bytes)"),
        );
    }
    let rate = match raw.rate {
        None => {
            if raw.burst.is_some() {
                report.at(&path.key("burst"), "only meaningful with `rate`");
            }
            None
        }
        Some(rate) if !(rate.is_finite() && rate > 0.0) => {
            report.at(
                &path.key("rate"),
                format!("expected messages per second greater than zero, got {rate}"),
            );
            None
        }
        Some(rate) => {
            let burst = match raw.burst {
                None => (rate.ceil() as u32).max(1),
                Some(burst) => match u32::try_from(burst) {
                    Ok(burst) if burst >= 1 => burst,
                    _ => {
                        report.at(
                            &path.key("burst"),
                            format!("expected an integer of at least 1, got {burst}"),
                        );
                        1
                    }
                },
            };
            Some(MessageRate {
                per_second: rate,
                burst,
            })
        }
    };
    WebSocketApi {
        selection,
        connect,
        disconnect,
        default,
        routes,
        config: Arc::from(serde_json::Value::Object(config).to_string()),
        upstreams,
        max_frame,
        max_message,
        rate,
        idle_timeout: duration(
            report,
            &path.key("idle_timeout"),
            raw.idle_timeout,
            DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
        ),
        max_duration: duration(
            report,
            &path.key("max_duration"),
            raw.max_duration,
            DEFAULT_WEBSOCKET_MAX_DURATION,
        ),
    }
}

/// A handler: a plugin name or `"upstream:NAME"`.
fn ws_handler(
    report: &mut Report<'_>,
    path: &KeyPath,
    name: &str,
    names: UseNames<'_>,
) -> Option<WsHandler> {
    if let Some(upstream) = name.strip_prefix(UPSTREAM_HANDLER_PREFIX) {
        return match names.upstreams.iter().position(|known| *known == upstream) {
            Some(index) => Some(WsHandler::Upstream(index)),
            None => {
                report.at(
                    path,
                    format!(
                        "unknown upstream {upstream:?}{}",
                        super::names::did_you_mean(upstream, names.upstreams.iter().copied())
                    ),
                );
                None
            }
        };
    }
    match names.plugins.iter().position(|known| *known == name) {
        Some(index) => Some(WsHandler::Plugin(index)),
        None => {
            let message = if names.plugins.is_empty() {
                format!(
                    "unknown plugin {name:?}, no `[plugins]` are defined (an upstream is \
                     written \"upstream:NAME\")"
                )
            } else {
                format!(
                    "unknown plugin {name:?}{}",
                    super::names::did_you_mean(name, names.plugins.iter().copied())
                )
            };
            report.at(path, message);
            None
        }
    }
}

/// A size from 1 byte to [`MAX_WEBSOCKET_MESSAGE_BYTES`]; `default` when absent or wrong.
fn size(report: &mut Report<'_>, path: &KeyPath, raw: Option<RawSize>, default: u64) -> u64 {
    let Some(raw) = raw else { return default };
    let parsed = match raw {
        RawSize::Text(text) => parse_size(&text).map_err(|error| error.to_string()),
        RawSize::Bytes(bytes) => u64::try_from(bytes)
            .map_err(|_| format!("invalid size {bytes}, expected a number of bytes")),
    };
    match parsed {
        Ok(bytes) if (1..=MAX_WEBSOCKET_MESSAGE_BYTES).contains(&bytes) => bytes,
        Ok(bytes) => {
            report.at(
                path,
                format!(
                    "expected a size from 1 byte to {MAX_WEBSOCKET_MESSAGE_BYTES} bytes, got \
                     {bytes}"
                ),
            );
            default
        }
        Err(message) => {
            report.at(path, message);
            default
        }
    }
}

/// A duration greater than zero; `default` when absent or wrong (reported).
fn duration(
    report: &mut Report<'_>,
    path: &KeyPath,
    raw: Option<String>,
    default: Duration,
) -> Duration {
    let Some(text) = raw else { return default };
    match parse_duration(&text) {
        Ok(duration) if duration.is_zero() => {
            report.at(
                path,
                format!("expected a duration greater than zero, got {text:?}"),
            );
            default
        }
        Ok(duration) => duration,
        Err(error) => {
            report.at(path, error.to_string());
            default
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const HEAD: &str = "[server]\nlisten = \"127.0.0.1:0\"\n\n[upstreams.chat]\ntargets = [\"http://127.0.0.1:9000\"]\n\n";

    fn parse(routes: &str) -> Result<crate::config::Config, Vec<String>> {
        crate::config::parse(&format!("{HEAD}{routes}"), Path::new("weir.toml"), &|_| {
            None
        })
        .map_err(|errors| errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn defaults_apply_to_every_route() {
        let config = parse("[[routes]]\npath = \"/ws\"\nupstream = \"chat\"\n").expect("valid");
        assert_eq!(config.routes[0].websocket, WebSocketProxy::default());
        assert_eq!(
            config.routes[0].websocket.idle_timeout,
            Duration::from_secs(600)
        );
        assert_eq!(
            config.routes[0].websocket.max_duration,
            Duration::from_secs(7200)
        );
    }

    #[test]
    fn durations_are_read() {
        let config = parse(
            "[[routes]]\npath = \"/ws\"\nupstream = \"chat\"\n\
             websocket_idle_timeout = \"30s\"\nwebsocket_max_duration = \"1h 30m\"\n",
        )
        .expect("valid");
        let ws = config.routes[0].websocket;
        assert_eq!(ws.idle_timeout, Duration::from_secs(30));
        assert_eq!(ws.max_duration, Duration::from_secs(5400));
    }

    #[test]
    fn zero_bad_and_misplaced_values_are_all_reported() {
        let errors = parse(
            "[[routes]]\npath = \"/ws\"\nupstream = \"chat\"\n\
             websocket_idle_timeout = \"0s\"\nwebsocket_max_duration = \"forever\"\n\n\
             [[routes]]\npath = \"/m\"\nmock = {}\nwebsocket_idle_timeout = \"1m\"\n",
        )
        .expect_err("invalid");
        assert_eq!(
            errors,
            [
                "weir.toml:10:26: routes[0].websocket_idle_timeout: expected a duration \
                 greater than zero, got \"0s\"",
                "weir.toml:11:26: routes[0].websocket_max_duration: invalid duration \
                 \"forever\", expected e.g. \"250ms\", \"5s\", \"1h\"",
                "weir.toml:16:26: routes[1].websocket_idle_timeout: only meaningful on a \
                 route with `upstream` (WebSocket upgrades are passed through to upstreams \
                 only)",
            ]
        );
    }
}
