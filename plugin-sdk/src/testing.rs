//! Stand-ins for the gateway's host functions, for native unit tests of plugin logic
//! (`cargo test` on the machine's own target). Only in native builds: a `wasm32` build
//! calls the real gateway.
//!
//! Every test thread has its own configuration, store, log and outbound responder, so
//! tests running in parallel do not see each other's state; call [`reset`] at the start
//! of a test that reuses a thread's state deliberately or not.
//!
//! | host function | native stand-in |
//! | --- | --- |
//! | `config.get` | what [`set_config`] set, `{}` before |
//! | `log.write` | kept for [`logs`], and printed to stderr (shown for failing tests) |
//! | `kv.*` | an in-memory map with TTLs; [`set_kv_unavailable`] makes it fail |
//! | `outbound.send` | what [`mock_outbound`] answers; `not-allowed` before |
//!
//! [`handle`], [`authorize`], [`on_request`] and [`on_response`] call a plugin the way the
//! gateway does: through its export, with the configuration [`set_config`] set (so a bad
//! configuration gives the answer it would give in the gateway).
//!
//! ```
//! use weir_plugin::{kv, testing};
//!
//! testing::reset();
//! testing::set_config(&serde_json::json!({ "greeting": "hi" }));
//! assert_eq!(weir_plugin::config::raw(), r#"{"greeting":"hi"}"#);
//! kv::set("k", b"v", None).expect("the in-memory store works");
//! assert_eq!(kv::get("k").expect("get"), Some(b"v".to_vec()));
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bindings::{authorizer, filter, handler};
use crate::log::Level;
use crate::outbound::{Error as OutboundError, OutboundRequest};
use crate::roles::Export;
use crate::{Authorizer, Decision, Filter, Handler, Request, RequestOutcome, Response};

/// An outbound responder set by [`mock_outbound`].
type Responder = Box<dyn FnMut(&OutboundRequest) -> Result<Response, OutboundError>>;

/// One thread's stand-in gateway.
#[derive(Default)]
struct Host {
    config: Option<String>,
    logs: Vec<(Level, String)>,
    kv: HashMap<String, (Vec<u8>, Option<Instant>)>,
    kv_unavailable: bool,
    outbound: Option<Responder>,
}

thread_local! {
    static HOST: RefCell<Host> = RefCell::new(Host::default());
}

/// Forgets this thread's configuration, log, store, outbound responder and plugin value
/// (a new instance, as far as the plugin can tell).
pub fn reset() {
    HOST.with(|host| *host.borrow_mut() = Host::default());
    crate::roles::forget_plugin();
}

/// Sets the configuration `config.get` returns (as the `config` table of a use would).
/// A value that does not serialize leaves `{}`.
pub fn set_config(config: &impl Serialize) {
    let json = serde_json::to_string(config).unwrap_or_else(|_| "{}".to_owned());
    set_raw_config(&json);
}

/// Sets the configuration `config.get` returns to this exact text (to test how a plugin
/// takes configuration that is not even JSON).
pub fn set_raw_config(json: &str) {
    HOST.with(|host| host.borrow_mut().config = Some(json.to_owned()));
    // The gateway never changes an instance's configuration: a new one is a new
    // instance, whose plugin value is built afresh.
    crate::roles::forget_plugin();
}

/// The lines logged on this thread so far.
pub fn logs() -> Vec<(Level, String)> {
    HOST.with(|host| host.borrow().logs.clone())
}

/// Makes every store operation fail with `unavailable` (as an unreachable Redis would),
/// or work again.
pub fn set_kv_unavailable(unavailable: bool) {
    HOST.with(|host| host.borrow_mut().kv_unavailable = unavailable);
}

/// Answers this thread's outbound requests with `responder`.
pub fn mock_outbound(
    responder: impl FnMut(&OutboundRequest) -> Result<Response, OutboundError> + 'static,
) {
    HOST.with(|host| host.borrow_mut().outbound = Some(Box::new(responder)));
}

/// Calls handler `P` as the gateway does: built from the configuration, then `handle`.
pub fn handle<P: Handler>(request: Request) -> Response {
    <Export<P> as handler::Guest>::handle(request)
}

/// Calls authorizer `P` as the gateway does: built from the configuration, then
/// `authorize`.
pub fn authorize<P: Authorizer>(request: Request) -> Decision {
    <Export<P> as authorizer::Guest>::authorize(request)
}

/// Calls filter `P`'s `on_request` as the gateway does (the value built for it is kept
/// for the next calls on this thread, as an instance keeps it, until [`reset`] or a new
/// configuration).
///
/// # Panics
///
/// When the filter returns a request body although it was given none, which the gateway
/// refuses (the use needs `body = true` for the filter to change bodies).
pub fn on_request<P: Filter>(request: Request) -> RequestOutcome {
    let given_body = request.body.is_some();
    let outcome = <Export<P> as filter::Guest>::on_request(request);
    if let RequestOutcome::Continue(request) | RequestOutcome::ContinueWithoutResponse(request) =
        &outcome
    {
        assert!(
            given_body || request.body.is_none(),
            "the filter returned a request body although it was given none: \
             the gateway fails such a call (the use needs body = true to change bodies)"
        );
    }
    outcome
}

/// Calls filter `P`'s `on_response` as the gateway does, with the value the last
/// [`on_request`] on this thread used.
pub fn on_response<P: Filter>(response: Response) -> Response {
    <Export<P> as filter::Guest>::on_response(response)
}

/// The native implementations of the host functions, used by `crate::host`.
pub(crate) mod native {
    use super::*;
    use crate::bindings::weir::plugin::kv::Error as KvError;

    pub(crate) fn config_get() -> String {
        HOST.with(|host| host.borrow().config.clone())
            .unwrap_or_else(|| "{}".to_owned())
    }

    pub(crate) fn log_write(level: Level, message: &str) {
        eprintln!("[plugin {level:?}] {message}");
        HOST.with(|host| host.borrow_mut().logs.push((level, message.to_owned())));
    }

    pub(crate) fn kv_get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        HOST.with(|host| {
            let mut host = host.borrow_mut();
            if host.kv_unavailable {
                return Err(KvError::Unavailable);
            }
            let now = Instant::now();
            if let Some((_, Some(expires))) = host.kv.get(key)
                && *expires <= now
            {
                host.kv.remove(key);
            }
            Ok(host.kv.get(key).map(|(value, _)| value.clone()))
        })
    }

    pub(crate) fn kv_set(key: &str, value: &[u8], ttl_ms: Option<u64>) -> Result<(), KvError> {
        HOST.with(|host| {
            let mut host = host.borrow_mut();
            if host.kv_unavailable {
                return Err(KvError::Unavailable);
            }
            let expires = ttl_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
            host.kv.insert(key.to_owned(), (value.to_vec(), expires));
            Ok(())
        })
    }

    pub(crate) fn kv_delete(key: &str) -> Result<(), KvError> {
        HOST.with(|host| {
            let mut host = host.borrow_mut();
            if host.kv_unavailable {
                return Err(KvError::Unavailable);
            }
            host.kv.remove(key);
            Ok(())
        })
    }

    pub(crate) fn outbound_send(request: &OutboundRequest) -> Result<Response, OutboundError> {
        // Taken out while it runs, so a responder may itself use the stand-ins.
        let responder = HOST.with(|host| host.borrow_mut().outbound.take());
        let Some(mut responder) = responder else {
            return Err(OutboundError::NotAllowed);
        };
        let result = responder(request);
        HOST.with(|host| {
            let mut host = host.borrow_mut();
            if host.outbound.is_none() {
                host.outbound = Some(responder);
            }
        });
        result
    }
}
