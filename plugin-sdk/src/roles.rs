//! The three roles a plugin can play, one trait each, and the glue that turns an
//! implementation into the exports of its WIT world ([`export_handler!`](crate::export_handler),
//! [`export_filter!`](crate::export_filter), [`export_authorizer!`](crate::export_authorizer)).
//!
//! A plugin type is built from its configuration: the glue deserializes the `config`
//! table of the use into the type before the first call of an instance (the type derives
//! `Deserialize`), and a configuration that does not fit answers
//! [`config::misconfigured`] (a 500 JSON error; an authorizer denies with it) instead of
//! calling the plugin.
//!
//! The value then lives as long as its instance. An instance serves one use of the
//! plugin, so one configuration, and by default one request: the value is built once per
//! request. With `requests_per_instance` (the operator's opt-in to reuse instances) it
//! also serves that instance's later requests, and is not built again: a plugin must set
//! any per-request state it keeps in `self` when the request starts (a filter in
//! `on_request`), not rely on a fresh value.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::bindings::{authorizer, filter, handler};
use crate::{Decision, Request, RequestOutcome, Response, config};

/// A plugin that produces the response of a route (`handler = { plugin = "NAME" }`).
///
/// Runs once per request.
pub trait Handler: DeserializeOwned + 'static {
    /// Answers the request. A handler's `None` body is an empty body.
    fn handle(&self, request: Request) -> Response;
}

/// A plugin that changes requests on the way in and responses on the way out
/// (`filters = [{ plugin = "NAME" }]`).
///
/// A route's filters run in order on the request and in reverse order on the response.
/// Both calls for one request use the same value of the plugin type (built from the
/// configuration, see the [module docs](self) for how long it lives), so `on_request`
/// may leave state in `self` for `on_response`.
/// Both methods default to changing nothing. A filter with nothing to do on responses
/// says so with [`wants_response`](Filter::wants_response), and costs one call per
/// request instead of two.
pub trait Filter: DeserializeOwned + 'static {
    /// Called with the request before the integration: go on with a (possibly changed)
    /// request, or answer here (then `on_response` is not called).
    ///
    /// When the use gives no body (`body = false`, the default), `request.body` is `None`
    /// and must stay `None`: the gateway fails a call that returns one (and then applies
    /// the use's `on_error`). [`testing::on_request`](crate::testing::on_request) checks
    /// it in native tests.
    fn on_request(&mut self, request: Request) -> RequestOutcome {
        RequestOutcome::Continue(request)
    }

    /// Called with the integration's response; returns the response to send on. A `None`
    /// body means "keep the body as it is", and is what the filter receives when its use
    /// does not ask for bodies.
    fn on_response(&mut self, response: Response) -> Response {
        response
    }

    /// Whether [`on_response`](Filter::on_response) has anything to do for this request,
    /// asked after `on_request` let it go on. Answering `false` spares the gateway the
    /// `on-response` call (the SDK answers `continue-without-response`): a filter that
    /// only changes requests, or whose configuration has nothing for responses, should.
    /// Defaults to `true`.
    fn wants_response(&self) -> bool {
        true
    }
}

/// A plugin that decides whether a request may go on
/// (`[authorizers.NAME] type = "plugin"`).
///
/// Sees the request head, never its body. Authorizers fail closed: a trap, a timeout or
/// an invalid configuration refuses the request.
pub trait Authorizer: DeserializeOwned + 'static {
    /// Lets the request in ([`Decision::Allow`]) or answers it ([`Decision::Deny`]).
    fn authorize(&self, request: Request) -> Decision;
}

/// What an `export_*!` macro exports: `P`'s implementation of its role as the world's
/// `Guest`.
#[doc(hidden)]
pub struct Export<P>(PhantomData<P>);

thread_local! {
    /// This instance's plugin value, built by its first call (see the module docs).
    static PLUGIN: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Runs `call` with this instance's plugin value, built from the use's configuration
/// first when there is none yet; or the answer to give when the configuration does not
/// fit (nothing is kept then: the next call tries again and answers the same).
///
/// The configuration is read once per instance: an instance only ever serves one use,
/// so its `config.get` cannot change (the WIT says so).
fn with_plugin<P: DeserializeOwned + 'static, R>(
    call: impl FnOnce(&mut P) -> R,
) -> Result<R, Response> {
    // Out of the slot while the plugin runs: nothing it calls can see the slot borrowed.
    let kept = PLUGIN
        .with(|slot| slot.borrow_mut().take())
        .and_then(|kept| kept.downcast::<P>().ok());
    let mut plugin = match kept {
        Some(plugin) => plugin,
        None => Box::new(config::get::<P>().map_err(|err| config::misconfigured(&err))?),
    };
    let result = call(&mut plugin);
    PLUGIN.with(|slot| *slot.borrow_mut() = Some(plugin));
    Ok(result)
}

/// Forgets the plugin value: the native `testing` host starts a new "instance" when a
/// test changes the configuration.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn forget_plugin() {
    PLUGIN.with(|slot| *slot.borrow_mut() = None);
}

impl<P: Handler> handler::Guest for Export<P> {
    fn handle(request: Request) -> Response {
        with_plugin(|plugin: &mut P| plugin.handle(request)).unwrap_or_else(|response| response)
    }
}

impl<P: Authorizer> authorizer::Guest for Export<P> {
    fn authorize(request: Request) -> Decision {
        with_plugin(|plugin: &mut P| plugin.authorize(request)).unwrap_or_else(Decision::Deny)
    }
}

impl<P: Filter> filter::Guest for Export<P> {
    fn on_request(request: Request) -> RequestOutcome {
        with_plugin(|plugin: &mut P| match plugin.on_request(request) {
            RequestOutcome::Continue(request) if !plugin.wants_response() => {
                RequestOutcome::ContinueWithoutResponse(request)
            }
            outcome => outcome,
        })
        .unwrap_or_else(RequestOutcome::Respond)
    }

    fn on_response(response: Response) -> Response {
        with_plugin(|plugin: &mut P| plugin.on_response(response))
            .unwrap_or_else(|misconfigured| misconfigured)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;
    use crate::testing;

    /// Counts its calls in `self`: shows that `on_response` sees what `on_request` left.
    #[derive(Deserialize)]
    struct Counting {
        #[serde(default)]
        calls: u32,
        #[serde(default)]
        add_body: bool,
    }

    impl Filter for Counting {
        fn on_request(&mut self, mut request: Request) -> RequestOutcome {
            self.calls += 1;
            if self.add_body {
                request.body = Some(b"sneaked in".to_vec());
            }
            RequestOutcome::Continue(request)
        }

        fn on_response(&mut self, response: Response) -> Response {
            self.calls += 1;
            response.with_header("x-calls", &self.calls.to_string())
        }
    }

    /// Keeps every default.
    #[derive(Deserialize)]
    struct Passive;

    /// Changes requests only.
    #[derive(Deserialize)]
    struct RequestOnly;

    impl Filter for RequestOnly {
        fn on_request(&mut self, request: Request) -> RequestOutcome {
            RequestOutcome::Continue(request.with_header("x-seen", "1"))
        }

        fn wants_response(&self) -> bool {
            false
        }
    }

    impl Filter for Passive {}

    #[derive(Deserialize)]
    struct Echo {
        word: String,
    }

    impl Handler for Echo {
        fn handle(&self, _: Request) -> Response {
            Response::text(200, self.word.clone())
        }
    }

    #[test]
    fn a_filter_keeps_its_value_for_the_life_of_its_instance() {
        testing::reset();
        let outcome = testing::on_request::<Counting>(Request::new("GET", "/"));
        assert!(matches!(outcome, RequestOutcome::Continue(_)));
        let response = testing::on_response::<Counting>(Response::new(200));
        assert_eq!(response.header("x-calls"), Some("2"));
        // A next request in the same instance (a reused one) gets the same value ...
        testing::on_request::<Counting>(Request::new("GET", "/"));
        let response = testing::on_response::<Counting>(Response::new(200));
        assert_eq!(response.header("x-calls"), Some("4"));
        // ... and a new instance (here: a reset, or a new configuration) a new one.
        testing::reset();
        testing::on_request::<Counting>(Request::new("GET", "/"));
        let response = testing::on_response::<Counting>(Response::new(200));
        assert_eq!(response.header("x-calls"), Some("2"));
    }

    #[test]
    fn the_configuration_is_read_once_per_instance() {
        testing::reset();
        testing::set_config(&json!({ "word": "first" }));
        let first = testing::handle::<Echo>(Request::new("GET", "/"));
        assert_eq!(first.text_body().ok(), Some("first"));
        // The gateway never changes an instance's configuration; the `testing` host
        // models a new one as a new instance, which builds the value again.
        testing::set_config(&json!({ "word": "second" }));
        let second = testing::handle::<Echo>(Request::new("GET", "/"));
        assert_eq!(second.text_body().ok(), Some("second"));
    }

    #[test]
    fn a_filter_that_wants_no_response_answers_continue_without_response() {
        testing::reset();
        let outcome = testing::on_request::<RequestOnly>(Request::new("GET", "/"));
        let RequestOutcome::ContinueWithoutResponse(request) = outcome else {
            panic!("expected continue-without-response, got {outcome:?}");
        };
        assert_eq!(request.header("x-seen"), Some("1"));
    }

    #[test]
    #[should_panic(expected = "returned a request body although it was given none")]
    fn tests_catch_a_filter_adding_a_body_it_was_not_given() {
        testing::reset();
        testing::set_config(&json!({ "add_body": true }));
        let _ = testing::on_request::<Counting>(Request::new("POST", "/"));
    }

    #[test]
    fn a_filter_given_a_body_may_change_it() {
        testing::reset();
        testing::set_config(&json!({ "add_body": true }));
        let given = Request::new("POST", "/").with_body("original");
        let RequestOutcome::Continue(changed) = testing::on_request::<Counting>(given) else {
            panic!("refused a body it was given");
        };
        assert_eq!(changed.body.as_deref(), Some(&b"sneaked in"[..]));
    }

    #[test]
    fn defaults_change_nothing() {
        testing::reset();
        let request = Request::new("GET", "/x").with_header("a", "b");
        assert_eq!(
            testing::on_request::<Passive>(request.clone()),
            RequestOutcome::Continue(request)
        );
        let response = Response::text(404, "no");
        assert_eq!(testing::on_response::<Passive>(response.clone()), response);
    }

    #[test]
    fn a_bad_config_answers_500_in_every_role() {
        testing::reset();
        let handled = testing::handle::<Echo>(Request::new("GET", "/"));
        assert_eq!(handled.status, 500);
        assert_eq!(
            handled.text_body().ok(),
            Some(r#"{"message":"plugin misconfigured"}"#)
        );
        assert!(testing::logs()[0].1.contains("missing field `word`"));

        testing::set_raw_config("not json");
        let outcome = testing::on_request::<Counting>(Request::new("GET", "/"));
        assert!(matches!(outcome, RequestOutcome::Respond(r) if r.status == 500));
        assert_eq!(
            testing::on_response::<Counting>(Response::new(200)).status,
            500
        );

        testing::set_config(&json!({ "word": "hi" }));
        assert_eq!(
            testing::handle::<Echo>(Request::new("GET", "/"))
                .text_body()
                .ok(),
            Some("hi")
        );
    }
}
