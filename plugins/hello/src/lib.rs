//! `hello`: the seeds' example backend as a Weir `handler` plugin.
//!
//! `GET /users` answers the JSON list of users; `POST /users` with a JSON object that has
//! a string `name` adds one (`201`, the new user with its `id`). The list lives in the
//! plugin's KV store (key `users`), so it survives from one request to the next although
//! every request runs in a fresh instance. Any other method or path is `404`/`405`.
//!
//! Config (the `config` table of its use): `greeting` (optional) is sent back in the
//! `x-greeting` header of every answer.

wit_bindgen::generate!({
    path: "../../wit",
    world: "weir:plugin/handler",
});

use serde::{Deserialize, Serialize};
use weir::plugin::{config, kv, log};

/// The KV key holding the list.
const USERS_KEY: &str = "users";
/// The longest name accepted, in bytes.
const MAX_NAME_BYTES: usize = 200;

#[derive(Debug, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

#[derive(Debug, Deserialize)]
struct NewUser {
    name: String,
}

#[derive(Debug, Default, Deserialize)]
struct Config {
    greeting: Option<String>,
}

struct Hello;

impl Guest for Hello {
    fn handle(request: Request) -> Response {
        let config: Config = serde_json::from_str(&config::get()).unwrap_or_default();
        let mut response = route(&request);
        if let Some(greeting) = config.greeting {
            response.headers.push(("x-greeting".into(), greeting));
        }
        response
    }
}

fn route(request: &Request) -> Response {
    if request.path != "/users" {
        return json(404, &serde_json::json!({ "message": "no such resource" }));
    }
    match request.method.as_str() {
        "GET" | "HEAD" => match load() {
            Ok(users) => json(200, &users),
            Err(response) => response,
        },
        "POST" => add(request),
        _ => {
            let mut response = json(405, &serde_json::json!({ "message": "method not allowed" }));
            response.headers.push(("allow".into(), "GET, HEAD, POST".into()));
            response
        }
    }
}

fn add(request: &Request) -> Response {
    let Some(body) = &request.body else {
        log::write(log::Level::Warn, "POST /users without a body: set body = true on the route");
        return json(500, &serde_json::json!({ "message": "the route gives no body" }));
    };
    let new: NewUser = match serde_json::from_slice::<NewUser>(body) {
        Ok(new) if !new.name.is_empty() && new.name.len() <= MAX_NAME_BYTES => new,
        _ => {
            return json(
                400,
                &serde_json::json!({ "message": "expected {\"name\": \"...\"}" }),
            );
        }
    };
    let mut users = match load() {
        Ok(users) => users,
        Err(response) => return response,
    };
    let id = users.iter().map(|u| u.id).max().unwrap_or(0) + 1;
    users.push(User { id, name: new.name });
    let bytes = serde_json::to_vec(&users).unwrap_or_default();
    if kv::set(USERS_KEY, &bytes, None).is_err() {
        return json(503, &serde_json::json!({ "message": "store unavailable" }));
    }
    log::write(log::Level::Info, &format!("added user {id}"));
    let created = users.last().map(|u| serde_json::json!(u)).unwrap_or_default();
    json(201, &created)
}

fn load() -> Result<Vec<User>, Response> {
    match kv::get(USERS_KEY) {
        Ok(Some(bytes)) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
        Ok(None) => Ok(Vec::new()),
        Err(_) => Err(json(503, &serde_json::json!({ "message": "store unavailable" }))),
    }
}

fn json(status: u16, value: &impl Serialize) -> Response {
    Response {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Some(serde_json::to_vec(value).unwrap_or_default()),
    }
}

export!(Hello);
