//! The `mock` integration: a fixed response from the route file.

use http::Response;
use http::header::CONTENT_LENGTH;

use crate::body::Body;
use crate::config::Mock;

/// The route's static response.
pub fn respond(mock: &Mock) -> Response<Body> {
    let mut response = Response::new(Body::full(mock.body.clone()));
    *response.status_mut() = mock.status;
    *response.headers_mut() = mock.headers.clone();
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, mock.body.len().into());
    response
}
