//! The admin routes' errors as RFC 9457 problems.

use std::borrow::Cow;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use palisade_core::problem::{Problem, ToProblem};
use palisade_core::telemetry::outbox as names;

use crate::error::{OutboxError, error_chain};

/// The `type` URIs of the admin routes' problems.
pub mod types {
    /// A malformed dead-letter id or query parameter.
    pub const INVALID_REQUEST: &str = "urn:palisade:problem:outbox-invalid-request";
    /// No dead letter with that id.
    pub const DEAD_LETTER_NOT_FOUND: &str = "urn:palisade:problem:outbox-dead-letter-not-found";
    /// The database has no outbox tables.
    pub const MISSING_TABLES: &str = "urn:palisade:problem:outbox-missing-tables";
    /// The database failed or could not be reached.
    pub const STORE_UNAVAILABLE: &str = "urn:palisade:problem:outbox-store-unavailable";
}

/// Why an admin route answers with a problem.
#[derive(Debug)]
pub(crate) enum AdminProblem {
    /// A malformed id or query parameter; the detail says which and why.
    Invalid(Cow<'static, str>),
    /// No dead letter with that id.
    NotFound,
    /// The database has no outbox tables (only the database features can tell).
    #[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
    MissingTables,
    /// The store failed.
    Unavailable,
    /// No route (404) or not this method (405).
    Status(StatusCode),
}

impl ToProblem for AdminProblem {
    fn to_problem(&self) -> Problem {
        match self {
            Self::Invalid(detail) => Problem::new(StatusCode::BAD_REQUEST)
                .with_type(types::INVALID_REQUEST)
                .with_title("Invalid request")
                .with_detail(detail.clone()),
            Self::NotFound => Problem::new(StatusCode::NOT_FOUND)
                .with_type(types::DEAD_LETTER_NOT_FOUND)
                .with_title("No such dead letter")
                .with_detail("No dead letter has this sequence number or event id."),
            Self::MissingTables => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                .with_type(types::MISSING_TABLES)
                .with_title("No outbox tables")
                .with_detail("The database has no outbox tables: it was not migrated, or this is not the outbox's database or schema."),
            Self::Unavailable => Problem::new(StatusCode::SERVICE_UNAVAILABLE)
                .with_type(types::STORE_UNAVAILABLE)
                .with_title("Outbox store unavailable")
                .with_detail("The outbox's database failed; the service's logs say why."),
            Self::Status(status) => Problem::new(*status),
        }
    }
}

impl From<OutboxError> for AdminProblem {
    fn from(error: OutboxError) -> Self {
        tracing::warn!(target: names::TARGET, error = %error_chain(&error), "outbox admin operation failed");
        match error {
            #[cfg(any(feature = "postgres", feature = "sqlite"))]
            OutboxError::MissingTables(_) => Self::MissingTables,
            _ => Self::Unavailable,
        }
    }
}

impl IntoResponse for AdminProblem {
    fn into_response(self) -> Response {
        self.to_response::<Body>()
    }
}
