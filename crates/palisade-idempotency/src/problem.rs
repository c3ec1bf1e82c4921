//! The layer's rejections, as RFC 9457 problem responses.

use std::time::Duration;

use http::StatusCode;
use palisade_core::problem::Problem;
use palisade_core::problem::ToProblem;

/// The `type` URIs of the layer's rejections.
pub mod types {
    /// The route requires an `Idempotency-Key` and the request has none.
    pub const KEY_MISSING: &str = "urn:palisade:problem:idempotency-key-missing";
    /// The `Idempotency-Key` header is not a valid key.
    pub const KEY_INVALID: &str = "urn:palisade:problem:idempotency-key-invalid";
    /// The request body could not be read.
    pub const BODY_UNREADABLE: &str = "urn:palisade:problem:idempotency-body-unreadable";
    /// The request body is larger than the layer reads.
    pub const BODY_TOO_LARGE: &str = "urn:palisade:problem:idempotency-body-too-large";
    /// A request with the same key is still being processed.
    pub const IN_FLIGHT: &str = "urn:palisade:problem:idempotency-key-in-flight";
    /// The key was first used with a different request.
    pub const KEY_REUSED: &str = "urn:palisade:problem:idempotency-key-reused";
    /// The idempotency store is unavailable, or full.
    pub const STORE_UNAVAILABLE: &str = "urn:palisade:problem:idempotency-store-unavailable";
    /// The request's processing was cut short (the server is shutting
    /// down); its key stays locked until its lock expires.
    pub const INTERRUPTED: &str = "urn:palisade:problem:idempotency-interrupted";
}

/// A request the layer answers itself, without calling the inner service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// The route requires a key and the request has none.
    MissingKey,
    /// The `Idempotency-Key` header is not a valid key.
    InvalidKey,
    /// The request body failed mid-read.
    UnreadableBody,
    /// The request body is over the limit.
    BodyTooLarge,
    /// A request with the same key is in flight; retry after this long.
    InFlight(Duration),
    /// The key was first used with a different request.
    KeyReused,
    /// The store failed (fail closed); retry after this long.
    StoreUnavailable(Duration),
    /// The runtime shut down while the request ran; retry after this long.
    Interrupted(Duration),
}

impl Rejection {
    /// The status, `type`, title and detail, and the `Retry-After` if any.
    fn parts(self) -> (StatusCode, &'static str, &'static str, &'static str, Option<Duration>) {
        match self {
            Self::MissingKey => (
                StatusCode::BAD_REQUEST,
                types::KEY_MISSING,
                "Idempotency key required",
                "This request must carry an Idempotency-Key header.",
                None,
            ),
            Self::InvalidKey => (
                StatusCode::BAD_REQUEST,
                types::KEY_INVALID,
                "Invalid idempotency key",
                "The Idempotency-Key header must be one value of 1 to 255 printable ASCII characters (spaces only within quotes).",
                None,
            ),
            Self::UnreadableBody => (
                StatusCode::BAD_REQUEST,
                types::BODY_UNREADABLE,
                "Request body unreadable",
                "The request body could not be read.",
                None,
            ),
            Self::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                types::BODY_TOO_LARGE,
                "Request body too large",
                "The request body is larger than this service accepts for idempotent requests.",
                None,
            ),
            Self::InFlight(retry_after) => (
                StatusCode::CONFLICT,
                types::IN_FLIGHT,
                "Request in progress",
                "A request with this Idempotency-Key is still being processed; retry later.",
                Some(retry_after),
            ),
            Self::KeyReused => (
                StatusCode::UNPROCESSABLE_ENTITY,
                types::KEY_REUSED,
                "Idempotency key reused",
                "This Idempotency-Key was already used with a different request.",
                None,
            ),
            Self::StoreUnavailable(retry_after) => (
                StatusCode::SERVICE_UNAVAILABLE,
                types::STORE_UNAVAILABLE,
                "Idempotency store unavailable",
                "The request could not be checked for duplicates; retry later.",
                Some(retry_after),
            ),
            Self::Interrupted(retry_after) => (
                StatusCode::SERVICE_UNAVAILABLE,
                types::INTERRUPTED,
                "Request interrupted",
                "The request's processing was interrupted; retry later.",
                Some(retry_after),
            ),
        }
    }
}

impl ToProblem for Rejection {
    fn to_problem(&self) -> Problem {
        let (status, kind, title, detail, retry_after) = self.parts();
        let problem = Problem::new(status)
            .with_type(kind)
            .with_title(title)
            .with_detail(detail);
        match retry_after {
            Some(after) => problem.with_retry_after(after),
            None => problem,
        }
    }
}
