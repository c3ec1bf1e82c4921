//! The layer's rejections, as RFC 9457 problem responses.

use std::time::Duration;

use http::StatusCode;
use palisade_core::Problem;
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

impl ToProblem for Rejection {
    fn to_problem(&self) -> Problem {
        match *self {
            Self::MissingKey => Problem::new(StatusCode::BAD_REQUEST)
                .with_type(types::KEY_MISSING)
                .with_title("Idempotency key required")
                .with_detail("This request must carry an Idempotency-Key header."),
            Self::InvalidKey => Problem::new(StatusCode::BAD_REQUEST)
                .with_type(types::KEY_INVALID)
                .with_title("Invalid idempotency key")
                .with_detail("The Idempotency-Key header must be one value of 1 to 255 visible ASCII characters."),
            Self::UnreadableBody => Problem::new(StatusCode::BAD_REQUEST)
                .with_type(types::BODY_UNREADABLE)
                .with_title("Request body unreadable")
                .with_detail("The request body could not be read."),
            Self::BodyTooLarge => Problem::new(StatusCode::PAYLOAD_TOO_LARGE)
                .with_type(types::BODY_TOO_LARGE)
                .with_title("Request body too large")
                .with_detail("The request body is larger than this service accepts for idempotent requests."),
            Self::InFlight(retry_after) => Problem::new(StatusCode::CONFLICT)
                .with_type(types::IN_FLIGHT)
                .with_title("Request in progress")
                .with_detail("A request with this Idempotency-Key is still being processed; retry later.")
                .with_retry_after(retry_after),
            Self::KeyReused => Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
                .with_type(types::KEY_REUSED)
                .with_title("Idempotency key reused")
                .with_detail("This Idempotency-Key was already used with a different request."),
            Self::StoreUnavailable(retry_after) => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                .with_type(types::STORE_UNAVAILABLE)
                .with_title("Idempotency store unavailable")
                .with_detail("The request could not be checked for duplicates; retry later.")
                .with_retry_after(retry_after),
            Self::Interrupted(retry_after) => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                .with_type(types::INTERRUPTED)
                .with_title("Request interrupted")
                .with_detail("The request's processing was interrupted; retry later.")
                .with_retry_after(retry_after),
        }
    }
}
