//! `chat`: a chat room as a Weir `websocket` plugin (the gateway is the WebSocket server).
//!
//! - `on-connect` (`$connect`): the connection joins the room: its id is added to the
//!   member list kept in the plugin's KV store (key `members`), so that every instance,
//!   and with the Redis state backend every gateway, sees the same room.
//! - `{"action":"send","text":"..."}`: the text goes to every other member as
//!   `{"from":NAME,"text":"..."}` through the connections API (`send-to`); members whose
//!   connection is gone are dropped from the list.
//! - `{"action":"whoami"}`: answers `{"connection_id":ID,"name":NAME}`.
//! - anything else (`$default`): answers `{"error":"unknown action","route_key":KEY}`.
//! - `on-disconnect` (`$disconnect`): the connection leaves the room.
//!
//! A member's name is the authorizer's principal when the route has an authorizer, else
//! the handshake's `?name=` query parameter, else `anonymous`.
//!
//! The member list is read, changed and written back: two members joining at the same
//! instant may race (one of them is then missing until it sends); a real room would use
//! a set in a store with atomic operations.

use serde_json::{Value, json};

/// The bindings of the `websocket` world of `wit/plugin.wit`.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "weir:plugin/websocket",
        pub_export_macro: true,
        default_bindings_module: "crate::bindings",
    });
}

use bindings::weir::plugin::connections::{self, ConnectionInfo, Message};
use bindings::weir::plugin::{kv, log};
use bindings::{ConnectOutcome, Guest};

/// The KV key holding the member list (a JSON array of connection ids).
const MEMBERS_KEY: &str = "members";

/// The plugin.
struct Chat;

impl Guest for Chat {
    fn on_connect(info: ConnectionInfo) -> ConnectOutcome {
        let mut members = load();
        if !members.contains(&info.connection_id) {
            members.push(info.connection_id.clone());
        }
        store(&members);
        ConnectOutcome::Accept
    }

    fn on_message(info: ConnectionInfo, route_key: String, message: Message) -> Option<Message> {
        let Message::Text(text) = message else {
            return Some(reply(
                json!({ "error": "binary messages are not understood" }),
            ));
        };
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match route_key.as_str() {
            "send" => {
                let Some(text) = body.get("text").and_then(Value::as_str) else {
                    return Some(reply(json!({ "error": "`text` must be a string" })));
                };
                let out = json!({ "from": name(&info), "text": text }).to_string();
                let mut members = load();
                let before = members.len();
                members.retain(|member| {
                    if *member == info.connection_id {
                        return true;
                    }
                    match connections::send_to(member, &Message::Text(out.clone())) {
                        Err(connections::Error::Gone) => false,
                        Err(error) => {
                            log::write(
                                log::Level::Warn,
                                &format!("send to {member} failed: {error:?}"),
                            );
                            true
                        }
                        Ok(()) => true,
                    }
                });
                if members.len() != before {
                    store(&members);
                }
                None
            }
            "whoami" => Some(reply(
                json!({ "connection_id": info.connection_id, "name": name(&info) }),
            )),
            other => Some(reply(
                json!({ "error": "unknown action", "route_key": other }),
            )),
        }
    }

    fn on_disconnect(info: ConnectionInfo) {
        let mut members = load();
        members.retain(|member| *member != info.connection_id);
        store(&members);
    }
}

/// The component's exports.
#[allow(unsafe_code)]
mod exports {
    use super::Chat;
    crate::bindings::export!(Chat with_types_in crate::bindings);
}

fn reply(value: Value) -> Message {
    Message::Text(value.to_string())
}

/// The member's display name.
fn name(info: &ConnectionInfo) -> String {
    if let Some(auth) = &info.auth {
        return auth.principal.clone();
    }
    info.query
        .split('&')
        .find_map(|pair| pair.strip_prefix("name="))
        .filter(|name| !name.is_empty())
        .unwrap_or("anonymous")
        .to_owned()
}

fn load() -> Vec<String> {
    match kv::get(MEMBERS_KEY) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
        Ok(None) => Vec::new(),
        Err(error) => {
            log::write(
                log::Level::Warn,
                &format!("member list unavailable: {error:?}"),
            );
            Vec::new()
        }
    }
}

fn store(members: &[String]) {
    let bytes = serde_json::to_vec(members).unwrap_or_default();
    if let Err(error) = kv::set(MEMBERS_KEY, &bytes, None) {
        log::write(
            log::Level::Warn,
            &format!("member list not saved: {error:?}"),
        );
    }
}
