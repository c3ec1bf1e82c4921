//! From a layer's error to the gRPC status a server answers with, and the
//! trailers-only response that carries it.

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Response};
use metrics::Counter;
use palisade_core::deadline::DeadlineExceeded;
use palisade_core::error::{chain, is_connect_error};
use palisade_core::response::Answer;
use palisade_core::telemetry::grpc as names;
use palisade_core::{BulkheadFull, BulkheadTimeout, CircuitOpen, GrpcCode};

use crate::details::retry_info_details;

/// Why an error was answered with a status (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// A circuit breaker is open ([`CircuitOpen`]).
    CircuitOpen,
    /// A bulkhead was full ([`BulkheadFull`]).
    BulkheadFull,
    /// A call waited too long for a bulkhead permit ([`BulkheadTimeout`]).
    BulkheadTimeout,
    /// tower's load shedder rejected the call.
    Overloaded,
    /// A timeout elapsed (tower's or tokio's `Elapsed`).
    Timeout,
    /// The request's deadline passed (`DeadlineExceeded`).
    Deadline,
    /// The connection could not be made (a client stack's transport).
    Unreachable,
    /// Any other error.
    Other,
}

impl Reason {
    /// Every reason, in label order.
    pub(crate) const ALL: [Reason; 8] = [
        Reason::CircuitOpen,
        Reason::BulkheadFull,
        Reason::BulkheadTimeout,
        Reason::Overloaded,
        Reason::Timeout,
        Reason::Deadline,
        Reason::Unreachable,
        Reason::Other,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::CircuitOpen => "circuit_open",
            Reason::BulkheadFull => "bulkhead_full",
            Reason::BulkheadTimeout => "bulkhead_timeout",
            Reason::Overloaded => "overloaded",
            Reason::Timeout => "timeout",
            Reason::Deadline => "deadline",
            Reason::Unreachable => "unreachable",
            Reason::Other => "other",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(Self::ALL.len() - 1)
    }
}

/// The status a gRPC server answers an error with: a code, a fixed message
/// (never the error's own text) and, when the rejection knows when to come
/// back, the server's pushback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcStatus {
    code: GrpcCode,
    message: &'static str,
    pushback: Option<Duration>,
    reason: Reason,
}

const UNAVAILABLE_OPEN: &str = "the service is unavailable; try again later";
const AT_CAPACITY: &str = "the service is at capacity; try again later";
const DEADLINE: &str = "the deadline was exceeded";
const UNREACHABLE: &str = "the service is unreachable";
const UNKNOWN: &str = "the call failed";

impl GrpcStatus {
    /// The status for `error`, by the first palisade rejection in its
    /// `source()` chain (see the [crate docs](crate) for the table); a full
    /// bulkhead answers `bulkhead_code`.
    pub fn for_error(error: &(dyn Error + 'static), bulkhead_code: GrpcCode) -> Self {
        chain(error)
            .find_map(|e| known(e, bulkhead_code))
            .or_else(|| tonic_transport(error))
            .unwrap_or(GrpcStatus {
                code: GrpcCode::Unknown,
                message: UNKNOWN,
                pushback: None,
                reason: Reason::Other,
            })
    }

    /// The code.
    pub fn code(&self) -> GrpcCode {
        self.code
    }

    /// The message sent in `grpc-message`.
    pub fn message(&self) -> &'static str {
        self.message
    }

    /// The wait sent in `grpc-retry-pushback-ms`, if any.
    pub fn pushback(&self) -> Option<Duration> {
        self.pushback
    }

    /// Why the error got this status.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The trailers-only response: `200 OK`, `content-type:
    /// application/grpc`, `grpc-status`, `grpc-message`, and with a pushback
    /// `grpc-retry-pushback-ms` (whole milliseconds, rounded up) and, when
    /// `retry_info` is true, `grpc-status-details-bin` holding a
    /// `google.rpc.Status` with a `google.rpc.RetryInfo`; an empty body.
    pub fn to_response<B: Default>(&self, retry_info: bool) -> Response<B> {
        let mut res = Response::new(B::default());
        let headers = res.headers_mut();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(self.code as i32));
        headers.insert("grpc-message", HeaderValue::from_static(self.message));
        if let Some(wait) = self.pushback {
            let millis = wait.as_nanos().div_ceil(1_000_000);
            headers.insert(
                "grpc-retry-pushback-ms",
                HeaderValue::from(u64::try_from(millis).unwrap_or(i64::MAX as u64).min(i64::MAX as u64)),
            );
            if retry_info
                && let Ok(value) = HeaderValue::from_str(&retry_info_details(self.code as i32, self.message, wait))
            {
                headers.insert("grpc-status-details-bin", value);
            }
        }
        res
    }
}

fn known(error: &(dyn Error + 'static), bulkhead_code: GrpcCode) -> Option<GrpcStatus> {
    let status = |code, message, pushback, reason| {
        Some(GrpcStatus {
            code,
            message,
            pushback,
            reason,
        })
    };
    // A zero wait is a layer that cannot say when it will admit (a breaker
    // forced open, or with every half-open probe in flight; a bulkhead built
    // with a zero `retry_after`): a pushback of 0 would send clients straight
    // back into the same rejection, so their own backoff decides.
    let pushback = |wait: Duration| Some(wait).filter(|wait| !wait.is_zero());
    if let Some(open) = error.downcast_ref::<CircuitOpen>() {
        status(
            GrpcCode::Unavailable,
            UNAVAILABLE_OPEN,
            pushback(open.retry_after()),
            Reason::CircuitOpen,
        )
    } else if let Some(full) = error.downcast_ref::<BulkheadFull>() {
        status(
            bulkhead_code,
            AT_CAPACITY,
            pushback(full.retry_after()),
            Reason::BulkheadFull,
        )
    } else if let Some(timeout) = error.downcast_ref::<BulkheadTimeout>() {
        status(
            bulkhead_code,
            AT_CAPACITY,
            pushback(timeout.retry_after()),
            Reason::BulkheadTimeout,
        )
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        status(GrpcCode::Unavailable, AT_CAPACITY, None, Reason::Overloaded)
    } else if error.is::<tower::timeout::error::Elapsed>() || error.is::<tokio::time::error::Elapsed>() {
        status(GrpcCode::DeadlineExceeded, DEADLINE, None, Reason::Timeout)
    } else if error.is::<DeadlineExceeded>() {
        status(GrpcCode::DeadlineExceeded, DEADLINE, None, Reason::Deadline)
    } else if let Some(code) = tonic_code(error) {
        status(code, UNKNOWN, None, Reason::Other)
    } else if is_connect_error(error) {
        status(GrpcCode::Unavailable, UNREACHABLE, None, Reason::Unreachable)
    } else {
        None
    }
}

/// The code of a tonic `Status`.
#[cfg(feature = "tonic")]
fn tonic_code(error: &(dyn Error + 'static)) -> Option<GrpcCode> {
    error
        .downcast_ref::<tonic::Status>()
        .map(|status| GrpcCode::from_i32(status.code() as i32))
}

#[cfg(not(feature = "tonic"))]
fn tonic_code(_: &(dyn Error + 'static)) -> Option<GrpcCode> {
    None
}

/// What a transport error palisade does not know is under a tonic channel:
/// a tonic `ConnectError` anywhere in the chain (a refused connection, a
/// failed DNS lookup or TLS handshake, a missing socket) is `UNAVAILABLE`,
/// as a tonic client reports it; an HTTP/2 error (h2's) gets the code of
/// gRPC's HTTP/2 mapping (PROTOCOL-HTTP2.md, "Errors"), which tonic's
/// server follows: `REFUSED_STREAM` is `UNAVAILABLE` (the server did not
/// process the call), as is a stream above a `GOAWAY`'s last accepted one
/// (the guide's "GOAWAY Frame"), `CANCEL` `CANCELLED`, `ENHANCE_YOUR_CALM`
/// `RESOURCE_EXHAUSTED`, `INADEQUATE_SECURITY` `PERMISSION_DENIED`,
/// `STREAM_CLOSED` (no stream to report on) `UNKNOWN`, every other error
/// code `INTERNAL`.
///
/// `Status::from_error` itself takes the error by value, and an [`Answer`]
/// only borrows it.
#[cfg(feature = "tonic")]
fn tonic_transport(error: &(dyn Error + 'static)) -> Option<GrpcStatus> {
    if palisade_core::error::find::<tonic::ConnectError>(error).is_some() {
        return Some(GrpcStatus {
            code: GrpcCode::Unavailable,
            message: UNREACHABLE,
            pushback: None,
            reason: Reason::Unreachable,
        });
    }
    let h2 = palisade_core::error::find::<h2::Error>(error)?;
    let (code, message) = match h2.reason()? {
        // Not processed (above a `GOAWAY`'s last accepted stream), whatever its code.
        _ if palisade_core::error::is_unprocessed_h2(h2) => (GrpcCode::Unavailable, UNAVAILABLE_OPEN),
        h2::Reason::REFUSED_STREAM => (GrpcCode::Unavailable, UNAVAILABLE_OPEN),
        h2::Reason::CANCEL => (GrpcCode::Cancelled, UNKNOWN),
        h2::Reason::ENHANCE_YOUR_CALM => (GrpcCode::ResourceExhausted, AT_CAPACITY),
        h2::Reason::INADEQUATE_SECURITY => (GrpcCode::PermissionDenied, UNKNOWN),
        // STREAM_CLOSED has no mapping: there is no stream to report it on.
        h2::Reason::STREAM_CLOSED => (GrpcCode::Unknown, UNKNOWN),
        _ => (GrpcCode::Internal, UNKNOWN),
    };
    Some(GrpcStatus {
        code,
        message,
        pushback: None,
        reason: Reason::Other,
    })
}

#[cfg(not(feature = "tonic"))]
fn tonic_transport(_: &(dyn Error + 'static)) -> Option<GrpcStatus> {
    None
}

/// What every clone of a [`GrpcStatusLayer`](crate::GrpcStatusLayer) shares.
pub(crate) struct Config {
    pub(crate) name: Arc<str>,
    pub(crate) bulkhead_code: GrpcCode,
    pub(crate) retry_info: bool,
    /// `palisade_grpc_rejections_total` by reason, in [`Reason::ALL`] order.
    pub(crate) rejections: [Counter; Reason::ALL.len()],
}

/// The [`Answer`] of the gRPC status layer: an error becomes its
/// [`GrpcStatus`]'s trailers-only response.
#[derive(Clone)]
pub struct GrpcStatuses {
    pub(crate) config: Arc<Config>,
}

impl std::fmt::Debug for GrpcStatuses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcStatuses")
            .field("name", &self.config.name)
            .field("bulkhead_code", &self.config.bulkhead_code)
            .field("retry_info", &self.config.retry_info)
            .finish()
    }
}

impl<B: Default> Answer<B> for GrpcStatuses {
    fn answer(&self, error: &(dyn Error + 'static)) -> Response<B> {
        let config = &*self.config;
        let status = GrpcStatus::for_error(error, config.bulkhead_code);
        config.rejections[status.reason.index()].increment(1);
        tracing::debug!(
            target: names::TARGET,
            name = &*config.name,
            reason = status.reason.label(),
            code = status.code as i32,
            "answered an error with a gRPC status"
        );
        status.to_response(config.retry_info)
    }
}
