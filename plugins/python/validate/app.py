"""`validate`: a Weir filter that checks JSON request bodies against the rules in its
config and answers 400 with the list of problems, or lets the request through unchanged.

The rules are described in `rules.py`; the route's use must say `body = true`. A bad
config (or a use without `body = true`) is logged and answered with
`500 {"message": "plugin misconfigured"}`, as Weir's Rust SDK does.
"""

import json

import wit_world
from wit_world.imports import config, log
from wit_world.imports.types import Request, Response

import rules


class WitWorld(wit_world.WitWorld):
    def on_request(self, request: Request) -> wit_world.RequestOutcome:
        try:
            ruleset = rules.Rules(json.loads(config.get()))
        except rules.ConfigError as e:
            return misconfigured(f"invalid config: {e}")
        if not ruleset.applies_to(request.method):
            # Nothing to do on the way out either: no `on-response` call.
            return wit_world.RequestOutcome_ContinueWithoutResponse(request)
        if request.body is None:
            return misconfigured("no request body: the use needs `body = true`")

        problems = rules.check(ruleset, request.body)
        if not problems:
            return wit_world.RequestOutcome_ContinueWithoutResponse(request)

        log.write(
            log.Level.INFO,
            f"refused {request.method} {request.path}: {len(problems)} problem(s)",
        )
        return respond(400, {"message": "invalid request body", "problems": problems})

    def on_response(self, response: Response) -> Response:
        # Not called: `on_request` answers `continue-without-response`. The `filter`
        # world exports it all the same.
        return response


def misconfigured(reason: str) -> wit_world.RequestOutcome:
    """The operator's mistake, not the client's: logged, and answered as every Weir
    plugin answers it (the Rust SDK does the same)."""
    log.write(log.Level.ERROR, reason)
    return respond(500, {"message": "plugin misconfigured"})


def respond(status: int, document) -> wit_world.RequestOutcome:
    return wit_world.RequestOutcome_Respond(
        Response(
            status=status,
            headers=[("content-type", "application/json")],
            body=json.dumps(document).encode("utf-8"),
        )
    )
