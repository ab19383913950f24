//! `hello`: the seeds' example backend as a Weir `handler` plugin.
//!
//! `GET /users` answers the JSON list of users; `POST /users` with a JSON object that has
//! a string `name` adds one (`201`, the new user with its `id`). The list lives in the
//! plugin's KV store (key `users`), so it survives from one request to the next although
//! every request runs in a fresh instance. Any other method or path is `404`/`405`.
//!
//! Config (the `config` table of its use): `greeting` (optional) is sent back in the
//! `x-greeting` header of every answer; `path` (default `/users`) is where the collection
//! is, for routes mounted elsewhere (e.g. `/hello/users`).

use serde::{Deserialize, Serialize};
use weir_plugin::{BodyError, Handler, Request, Response, kv, log};

/// The KV key holding the list.
const USERS_KEY: &str = "users";
/// The longest name accepted, in bytes.
const MAX_NAME_BYTES: usize = 200;

/// The plugin, built from its use's `config`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Hello {
    /// Echoed in `x-greeting` when set.
    greeting: Option<String>,
    /// The collection's path; `/users` when not set.
    path: Option<String>,
}

/// One stored user.
#[derive(Debug, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// The body of `POST /users`.
#[derive(Debug, Deserialize)]
struct NewUser {
    name: String,
}

impl Handler for Hello {
    fn handle(&self, request: Request) -> Response {
        let mut response = route(&request, self.path.as_deref().unwrap_or("/users"));
        if let Some(greeting) = &self.greeting {
            response.set_header("x-greeting", greeting.as_str());
        }
        response
    }
}

weir_plugin::export_handler!(Hello);

fn route(request: &Request, path: &str) -> Response {
    if request.path != path {
        return Response::error(404, "no such resource");
    }
    match request.method.as_str() {
        "GET" | "HEAD" => match load() {
            Ok(users) => Response::json(200, &users),
            Err(response) => response,
        },
        "POST" => add(request),
        _ => Response::error(405, "method not allowed").with_header("allow", "GET, HEAD, POST"),
    }
}

fn add(request: &Request) -> Response {
    let new = match request.json::<NewUser>() {
        Ok(new) if !new.name.is_empty() && new.name.len() <= MAX_NAME_BYTES => new,
        Err(BodyError::Missing) => {
            log::warn("POST /users without a body: set body = true on the route");
            return Response::error(500, "the route gives no body");
        }
        _ => return Response::error(400, "expected {\"name\": \"...\"}"),
    };
    let mut users = match load() {
        Ok(users) => users,
        Err(response) => return response,
    };
    let id = users.iter().map(|u| u.id).max().unwrap_or(0) + 1;
    let user = User { id, name: new.name };
    let created = Response::json(201, &user);
    users.push(user);
    if let Err(err) = kv::set_json(USERS_KEY, &users, None) {
        log::warn(&format!("saving users: {err}"));
        return unavailable();
    }
    log::info(&format!("added user {id}"));
    created
}

/// The stored list (empty before the first `POST`; a value that is not a list of users
/// counts as empty).
fn load() -> Result<Vec<User>, Response> {
    match kv::get_json::<Vec<User>>(USERS_KEY) {
        Ok(users) => Ok(users.unwrap_or_default()),
        Err(kv::Error::Json(err)) => {
            log::warn(&format!(
                "stored users are not a list, starting over: {err}"
            ));
            Ok(Vec::new())
        }
        Err(err) => {
            log::warn(&format!("loading users: {err}"));
            Err(unavailable())
        }
    }
}

fn unavailable() -> Response {
    Response::error(503, "store unavailable")
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use weir_plugin::testing;

    use super::*;

    fn body(response: &Response) -> Value {
        response.json_body().expect("a JSON body")
    }

    #[test]
    fn lists_and_adds_users_in_the_store() {
        testing::reset();
        let hello = Hello {
            greeting: Some("hi".into()),
            ..Hello::default()
        };
        let empty = hello.handle(Request::new("GET", "/users"));
        assert_eq!(empty.status, 200);
        assert_eq!(empty.header("x-greeting"), Some("hi"));
        assert_eq!(empty.header("content-type"), Some("application/json"));
        assert_eq!(body(&empty), json!([]));

        for (name, id) in [("ada", 1), ("grace", 2)] {
            let created =
                hello.handle(Request::new("POST", "/users").with_json(json!({ "name": name })));
            assert_eq!(created.status, 201);
            assert_eq!(body(&created), json!({ "id": id, "name": name }));
        }
        let list = hello.handle(Request::new("GET", "/users"));
        assert_eq!(
            body(&list),
            json!([{ "id": 1, "name": "ada" }, { "id": 2, "name": "grace" }])
        );
    }

    #[test]
    fn refuses_what_it_cannot_take() {
        testing::reset();
        let hello = Hello::default();
        let bad = hello.handle(Request::new("POST", "/users").with_body("not json"));
        assert_eq!(bad.status, 400);
        assert_eq!(bad.header("x-greeting"), None);
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        let too_long =
            hello.handle(Request::new("POST", "/users").with_json(json!({ "name": long })));
        assert_eq!(too_long.status, 400);
        let no_body = hello.handle(Request::new("POST", "/users"));
        assert_eq!(no_body.status, 500);
        let wrong_method = hello.handle(Request::new("DELETE", "/users"));
        assert_eq!(wrong_method.status, 405);
        assert_eq!(wrong_method.header("allow"), Some("GET, HEAD, POST"));
        assert_eq!(hello.handle(Request::new("GET", "/nope")).status, 404);
    }

    #[test]
    fn the_collection_can_be_mounted_elsewhere() {
        testing::reset();
        let mounted = Hello {
            path: Some("/hello/users".into()),
            ..Hello::default()
        };
        let list = mounted.handle(Request::new("GET", "/hello/users"));
        assert_eq!(list.status, 200);
        assert_eq!(mounted.handle(Request::new("GET", "/users")).status, 404);
    }

    #[test]
    fn an_unavailable_store_is_a_503() {
        testing::reset();
        testing::set_kv_unavailable(true);
        let response = Hello::default().handle(Request::new("GET", "/users"));
        assert_eq!(response.status, 503);
        assert_eq!(body(&response), json!({ "message": "store unavailable" }));
    }
}
