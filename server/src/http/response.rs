//! Answers: JSON, YAML, streamed bodies, and refusals turned into the `{error, message}` body
//! with the status their kind calls for (DESIGN.md §4).

use std::io;

use attest_common::wire::ErrorBody;
use bytes::Bytes;
use futures_lite::Stream;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::StatusCode;
use hyper::body::Frame;
use hyper::header::{CONTENT_TYPE, HeaderValue};

use crate::service::{ErrorKind, ServiceError};

/// A response body: a whole one, or chunks made while the client reads.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Every answer of the server.
pub type Response = hyper::Response<Body>;

/// A body of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body of the chunks `chunks` yields, ended early by its first error.
pub fn streamed(chunks: impl Stream<Item = io::Result<Vec<u8>>> + Send + 'static) -> Body {
    use futures_lite::StreamExt as _;
    StreamBody::new(chunks.map(|c| c.map(|c| Frame::data(Bytes::from(c))))).boxed_unsync()
}

/// `status` with `body` of type `content_type`.
pub fn with_body(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut res = hyper::Response::new(body);
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// `status` with `value` as JSON.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => with_body(status, "application/json", full(bytes)),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &e.to_string(),
        ),
    }
}

/// A JSON error answer `{error, message}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::to_vec(&ErrorBody::new(code, message)).unwrap_or_default();
    with_body(status, "application/json", full(body))
}

/// 200 with YAML.
pub fn yaml(text: String) -> Response {
    with_body(StatusCode::OK, "application/yaml", full(text))
}

/// `status` and nothing else.
pub fn empty(status: StatusCode) -> Response {
    let mut res = hyper::Response::new(full(Bytes::new()));
    *res.status_mut() = status;
    res
}

/// A refused request, answered as a JSON error.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn into_response(self) -> Response {
        error(self.status, self.code, &self.message)
    }
}

impl From<ServiceError> for Refusal {
    fn from(e: ServiceError) -> Refusal {
        Refusal::new(status_of(e.kind), e.code, e.message)
    }
}

/// The status a service error is answered with.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::Gone => StatusCode::GONE,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A handler's result: an answer either way.
pub type Reply = Result<Response, Refusal>;
