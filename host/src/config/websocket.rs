//! Validation and validated form of the route keys for proxied WebSockets:
//! `websocket_idle_timeout` and `websocket_max_duration`.
//!
//! Called from `validate.rs`; like it, it reports every problem and uses stand-ins so
//! that checking goes on. The keys apply to routes with `upstream` only: those are the
//! routes whose WebSocket handshakes the gateway passes through (`crate::websocket`).

use std::time::Duration;

use super::document::Report;
use super::keypath::KeyPath;
use super::units::parse_duration;

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
