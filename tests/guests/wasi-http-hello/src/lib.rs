//! A standard `wasi:http/proxy` component, built with the Bytecode Alliance's `wasip2`
//! bindings and nothing of Weir's: any `wasi:http` host could run it. The gateway runs it
//! as a route's `handler`.
//!
//! What it does depends on the request path:
//!
//! - `/hi?name=NAME`: `200`, `content-type: text/plain`, `x-hello: wasi-http`, and a body
//!   built from the request (name, method, path with query, authority, the `x-client`
//!   and `x-forwarded-for` headers), written in several chunks;
//! - `/echo`: reads the request body as a stream and answers with its length and bytes
//!   (a failed read answers `500` with the error);
//! - `/fetch`: tries an outgoing request through `wasi:http/outgoing-handler` and says
//!   what became of it (`outgoing: denied` when the host refused it);
//! - `/trap-mid-body`: sets the response head, writes a chunk, then panics;
//! - `/stall-mid-body`: sets the response head, writes a chunk, then spins forever;
//! - `/loop`: spins forever before answering;
//! - `/no-response`: returns without setting a response.

use std::io::{Read as _, Write as _};

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let path = path_with_query
            .split_once('?')
            .map_or(path_with_query.as_str(), |(path, _)| path);
        match path {
            "/hi" => hi(&request, &path_with_query, out),
            "/echo" => echo(request, out),
            "/fetch" => respond(out, 200, &[format!("outgoing: {}\n", fetch())]),
            "/trap-mid-body" => {
                // The body stays open (dropping it unfinished could look like its end).
                let (_body, mut stream) = start(out, 200);
                stream.write_all(b"first chunk\n").expect("write");
                stream.flush().expect("flush");
                panic!("wasi-http-hello traps mid-body on purpose");
            }
            "/stall-mid-body" => {
                let (_body, mut stream) = start(out, 200);
                stream.write_all(b"first chunk\n").expect("write");
                stream.flush().expect("flush");
                endless()
            }
            "/loop" => endless(),
            "/no-response" => drop(out),
            _ => respond(out, 404, &["no such path\n".to_owned()]),
        }
    }
}

fn hi(request: &IncomingRequest, path_with_query: &str, out: ResponseOutparam) {
    let name = path_with_query
        .split_once('?')
        .and_then(|(_, query)| query.split('&').find_map(|pair| pair.strip_prefix("name=")))
        .unwrap_or("world");
    let headers = request.headers();
    let header = |name: &str| {
        headers
            .get(name)
            .first()
            .map(|value| String::from_utf8_lossy(value).into_owned())
            .unwrap_or_else(|| "-".to_owned())
    };
    let chunks = [
        format!("hello {name}\n"),
        format!("method: {}\n", method(&request.method())),
        format!("path: {path_with_query}\n"),
        format!("authority: {}\n", request.authority().unwrap_or_default()),
        format!("x-client: {}\n", header("x-client")),
        format!("x-forwarded-for: {}\n", header("x-forwarded-for")),
    ];
    respond(out, 200, &chunks);
}

fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let body = request.consume().expect("consume the request body");
    let mut stream = body.stream().expect("the body's stream");
    let mut bytes = Vec::new();
    let read = stream.read_to_end(&mut bytes);
    drop(stream);
    match read {
        Ok(_) => {
            let _ = wasip2::http::types::IncomingBody::finish(body);
            let head = format!("got {} bytes: ", bytes.len());
            let text = String::from_utf8_lossy(&bytes).into_owned();
            respond(out, 200, &[head, text]);
        }
        Err(error) => respond(out, 500, &[format!("body error: {error}\n")]),
    }
}

/// An outgoing `GET http://example.com/`: the gateway must refuse it.
fn fetch() -> String {
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).expect("method");
    request.set_scheme(Some(&Scheme::Http)).expect("scheme");
    request
        .set_authority(Some("example.com"))
        .expect("authority");
    request.set_path_with_query(Some("/")).expect("path");
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(code) => return describe(&code),
    };
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => format!("allowed, status {}", response.status()),
        Some(Ok(Err(code))) => describe(&code),
        Some(Err(())) | None => "no answer".to_owned(),
    }
}

fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::HttpRequestDenied => "denied".to_owned(),
        other => format!("failed: {other:?}"),
    }
}

/// Sets a response with `status` and streams `chunks` as its body, one write each.
fn respond(out: ResponseOutparam, status: u16, chunks: &[String]) {
    let (body, mut stream) = start(out, status);
    for chunk in chunks {
        stream.write_all(chunk.as_bytes()).expect("write");
        stream.flush().expect("flush");
    }
    drop(stream);
    OutgoingBody::finish(body, None).expect("finish");
}

/// Sets the response head; the body is written afterwards.
fn start(out: ResponseOutparam, status: u16) -> (OutgoingBody, wasip2::io::streams::OutputStream) {
    let headers = Fields::from_list(&[
        ("content-type".to_owned(), b"text/plain".to_vec()),
        ("x-hello".to_owned(), b"wasi-http".to_vec()),
    ])
    .expect("headers");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("status");
    let body = response.body().expect("body");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("body stream");
    (body, stream)
}

fn method(method: &Method) -> String {
    match method {
        Method::Get => "GET".to_owned(),
        Method::Head => "HEAD".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Delete => "DELETE".to_owned(),
        Method::Connect => "CONNECT".to_owned(),
        Method::Options => "OPTIONS".to_owned(),
        Method::Trace => "TRACE".to_owned(),
        Method::Patch => "PATCH".to_owned(),
        Method::Other(other) => other.clone(),
    }
}

fn endless() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}
