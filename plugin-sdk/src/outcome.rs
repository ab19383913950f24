//! What an authorizer decides ([`Decision`], [`Allow`]) and what a filter's `on_request`
//! does with the request ([`RequestOutcome`]), with the constructors plugins use most.

use crate::{Allow, Decision, Request, RequestOutcome, Response};

impl Allow {
    /// Lets the caller in as `principal`, with no context and no usage plan key.
    pub fn new(principal: impl Into<String>) -> Self {
        Self {
            principal: principal.into(),
            context: Vec::new(),
            usage_plan_key: None,
        }
    }

    /// This verdict with one more context entry: what the filters (and, through the
    /// authorizer's `forward_context`, the upstream) may learn about the caller.
    pub fn with_context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.push((key.into(), value.into()));
        self
    }

    /// This verdict counting the request against the usage plan of API key `key`.
    pub fn with_usage_plan_key(mut self, key: impl Into<String>) -> Self {
        self.usage_plan_key = Some(key.into());
        self
    }
}

impl From<Allow> for Decision {
    fn from(allow: Allow) -> Self {
        Self::Allow(allow)
    }
}

impl Decision {
    /// Lets the caller in as `principal` (see [`Allow`] for context and usage plans).
    pub fn allow(principal: impl Into<String>) -> Self {
        Self::Allow(Allow::new(principal))
    }

    /// Refuses with `401` and `{"message": MESSAGE}`.
    pub fn unauthorized(message: &str) -> Self {
        Self::Deny(Response::error(401, message))
    }

    /// Refuses with `403` and `{"message": MESSAGE}`.
    pub fn forbidden(message: &str) -> Self {
        Self::Deny(Response::error(403, message))
    }

    /// Whether the request may go on.
    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow(_))
    }
}

impl From<Request> for RequestOutcome {
    fn from(request: Request) -> Self {
        Self::Continue(request)
    }
}

impl From<Response> for RequestOutcome {
    fn from(response: Response) -> Self {
        Self::Respond(response)
    }
}
