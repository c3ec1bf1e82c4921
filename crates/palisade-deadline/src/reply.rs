//! The layer's own answers: a problem over HTTP, a trailers-only status over
//! gRPC.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use palisade_core::GrpcCode;
use palisade_core::deadline::{DeadlineExceeded, MalformedTimeout};
use palisade_core::problem::ToProblem;

use crate::body::DeadlineBody;

/// Why the layer answers instead of the inner service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The deadline passed: 504, or `DEADLINE_EXCEEDED`.
    Exceeded,
    /// A timeout header is malformed: 400, or `INVALID_ARGUMENT`.
    Malformed(TimeoutHeader),
}

/// Which of the timeout headers the layer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeoutHeader {
    /// gRPC's `grpc-timeout`.
    Grpc,
    /// The HTTP header (`x-request-timeout-ms` by default).
    Http,
}

impl TimeoutHeader {
    /// The `reason` of logs.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            TimeoutHeader::Grpc => "grpc_timeout",
            TimeoutHeader::Http => "header",
        }
    }
}

impl Reply {
    pub(crate) fn into_response<B>(self, grpc: bool) -> Response<DeadlineBody<B>> {
        if grpc {
            let (code, message) = match self {
                Reply::Exceeded => (GrpcCode::DeadlineExceeded, "deadline exceeded"),
                Reply::Malformed(TimeoutHeader::Grpc) => (GrpcCode::InvalidArgument, "malformed grpc-timeout"),
                Reply::Malformed(TimeoutHeader::Http) => (GrpcCode::InvalidArgument, "malformed timeout header"),
            };
            trailers_only(code, message)
        } else {
            let problem = match self {
                Reply::Exceeded => DeadlineExceeded.to_problem(),
                Reply::Malformed(_) => MalformedTimeout.to_problem(),
            };
            problem.into_response_with(DeadlineBody::reply)
        }
    }
}

/// A gRPC trailers-only response: HTTP 200, the status in the headers, no body.
fn trailers_only<B>(code: GrpcCode, message: &'static str) -> Response<DeadlineBody<B>> {
    let mut res = Response::new(DeadlineBody::reply(Bytes::new()));
    *res.status_mut() = StatusCode::OK;
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code as i32));
    headers.insert("grpc-message", HeaderValue::from_static(message));
    res
}
