//! The three roles a plugin can play, one trait each, and the glue that turns an
//! implementation into the exports of its WIT world ([`export_handler!`](crate::export_handler),
//! [`export_filter!`](crate::export_filter), [`export_authorizer!`](crate::export_authorizer)).
//!
//! A plugin type is built from its configuration: the glue deserializes the `config`
//! table of the use into the type before the call (the type derives `Deserialize`), and
//! a configuration that does not fit answers [`config::misconfigured`] (a 500 JSON error;
//! an authorizer denies with it) instead of calling the plugin.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::bindings::{authorizer, filter, handler};
use crate::{Decision, Request, RequestOutcome, Response, config};

/// A plugin that produces the response of a route (`handler = { plugin = "NAME" }`).
///
/// Runs once per request, in a fresh instance.
pub trait Handler: DeserializeOwned + 'static {
    /// Answers the request. A handler's `None` body is an empty body.
    fn handle(&self, request: Request) -> Response;
}

/// A plugin that changes requests on the way in and responses on the way out
/// (`filters = [{ plugin = "NAME" }]`).
///
/// A route's filters run in order on the request and in reverse order on the response.
/// Both calls for one request use the same value of the plugin type (built once from
/// the configuration), so `on_request` may leave state in `self` for `on_response`.
/// Both methods default to changing nothing.
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
    /// The plugin value built by a filter's `on_request`, kept for its `on_response`
    /// (both calls run in one instance; the next request gets a fresh one).
    static FILTER: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Builds the plugin from the use's configuration, or the answer to give when it does
/// not fit.
fn load<P: DeserializeOwned>() -> Result<P, Response> {
    config::get::<P>().map_err(|err| config::misconfigured(&err))
}

impl<P: Handler> handler::Guest for Export<P> {
    fn handle(request: Request) -> Response {
        match load::<P>() {
            Ok(plugin) => plugin.handle(request),
            Err(response) => response,
        }
    }
}

impl<P: Authorizer> authorizer::Guest for Export<P> {
    fn authorize(request: Request) -> Decision {
        match load::<P>() {
            Ok(plugin) => plugin.authorize(request),
            Err(response) => Decision::Deny(response),
        }
    }
}

impl<P: Filter> filter::Guest for Export<P> {
    fn on_request(request: Request) -> RequestOutcome {
        let mut plugin = match load::<P>() {
            Ok(plugin) => plugin,
            Err(response) => return RequestOutcome::Respond(response),
        };
        let outcome = plugin.on_request(request);
        FILTER.with(|slot| *slot.borrow_mut() = Some(Box::new(plugin)));
        outcome
    }

    fn on_response(response: Response) -> Response {
        // Kept by `on_request`; built again if it was not (a host that calls
        // `on_response` alone).
        let kept = FILTER
            .with(|slot| slot.borrow_mut().take())
            .and_then(|kept| kept.downcast::<P>().ok());
        let mut plugin = match kept {
            Some(plugin) => *plugin,
            None => match load::<P>() {
                Ok(plugin) => plugin,
                Err(response) => return response,
            },
        };
        plugin.on_response(response)
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
    fn a_filter_keeps_its_value_from_request_to_response() {
        testing::reset();
        let outcome = testing::on_request::<Counting>(Request::new("GET", "/"));
        assert!(matches!(outcome, RequestOutcome::Continue(_)));
        let response = testing::on_response::<Counting>(Response::new(200));
        assert_eq!(response.header("x-calls"), Some("2"));
        // A response without a request before it builds the filter afresh.
        let alone = testing::on_response::<Counting>(Response::new(200));
        assert_eq!(alone.header("x-calls"), Some("1"));
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
