//! A `filter` that lets everything through unchanged. Used where a component of the
//! wrong role is needed (it exports no `handle`), and as the simplest filter.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "weir:plugin/filter",
});

struct Noop;

impl Guest for Noop {
    fn on_request(request: Request) -> RequestOutcome {
        RequestOutcome::Continue(request)
    }

    fn on_response(response: Response) -> Response {
        response
    }
}

export!(Noop);
