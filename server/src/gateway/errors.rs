//! The gateway's answers that are not a service's message: errors as etcd 3.4's
//! grpc-gateway (v1.9) writes them, the mux's own 404, 405 and 301, and the
//! headers every answer carries.
//!
//! - A call that fails: the HTTP status [`http_status`] maps its gRPC code to, and
//!   `{"error":M,"message":M,"code":C}` ([`response`]).
//! - A stream that fails after it started: one last chunk
//!   `{"error":{"grpc_code":C,"http_code":H,"message":M,"http_status":"..."}}`
//!   ([`stream_chunk`]).
//! - A path the gateway does not route: Go's `http.Error` text.

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};
use serde::Serialize;
use tonic::body::Body;
use tonic::{Code, Status};

use super::json;

/// The HTTP status etcd 3.4's gateway answers for a gRPC code (grpc-gateway
/// v1.9.0's `HTTPStatusFromCode`: FAILED_PRECONDITION is still 412 there).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Aborted => StatusCode::CONFLICT,
        Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The headers etcd puts on every answer of its client listener (its CORS
/// handler, with the default `--cors '*'`).
pub fn cors(h: &mut HeaderMap) {
    h.insert("access-control-allow-headers", HeaderValue::from_static("accept, content-type, authorization"));
    h.insert("access-control-allow-methods", HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"));
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
}

/// An answer with `status`, `content_type` and `body`, and the CORS headers.
pub fn plain(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Body::new(http_body_util::Full::new(body.into())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    cors(h);
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Go's `http.Error(w, text, status)`: the text and a newline, as plain text.
pub fn http_error(status: StatusCode, text: &str) -> Response<Body> {
    let mut resp = plain(status, "text/plain; charset=utf-8", format!("{text}\n"));
    resp.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

/// 404 of a path under `/v3/` that the gateway does not route.
pub fn not_found() -> Response<Body> {
    http_error(StatusCode::NOT_FOUND, "Not Found")
}

/// 404 of any other path (Go's `http.ServeMux`).
pub fn no_page() -> Response<Body> {
    http_error(StatusCode::NOT_FOUND, "404 page not found")
}

/// 405 of a routed path asked with another method than POST.
pub fn method_not_allowed() -> Response<Body> {
    http_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

/// `{"error":M,"message":M,"code":C}`: grpc-gateway's error body, marshaled by
/// `JSONPb` (an empty message is left out, as every zero field).
#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    code: i32,
}

/// The answer to a call that failed with `status`.
pub fn response(status: &Status) -> Response<Body> {
    let body = ErrorBody { error: status.message(), message: status.message(), code: status.code() as i32 };
    let bytes = json::to_vec(&body).unwrap_or_else(|_| br#"{"error": "failed to marshal error message"}"#.to_vec());
    plain(http_status(status.code()), "application/json", bytes)
}

/// grpc-gateway's `StreamError`, marshaled by `JSONPb` with the proto field names.
#[derive(Serialize)]
struct StreamError<'a> {
    grpc_code: i32,
    http_code: u16,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    http_status: &'a str,
}

#[derive(Serialize)]
struct ErrorChunk<'a> {
    error: StreamError<'a>,
}

/// The last chunk of a stream that ends with `status` (no delimiter follows it).
pub fn stream_chunk(status: &Status) -> Vec<u8> {
    let http = http_status(status.code());
    let chunk = ErrorChunk {
        error: StreamError {
            grpc_code: status.code() as i32,
            http_code: http.as_u16(),
            message: status.message(),
            http_status: http.canonical_reason().unwrap_or(""),
        },
    };
    json::to_vec(&chunk).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_grpc_gateways() {
        let s = Status::unimplemented("argus does not implement <it>");
        let chunk = String::from_utf8(stream_chunk(&s)).unwrap();
        assert_eq!(
            chunk,
            r#"{"error":{"grpc_code":12,"http_code":501,"message":"argus does not implement \u003cit\u003e","http_status":"Not Implemented"}}"#
        );
        assert_eq!(http_status(Code::FailedPrecondition), StatusCode::PRECONDITION_FAILED);
        assert_eq!(http_status(Code::ResourceExhausted), StatusCode::TOO_MANY_REQUESTS);
    }
}
