//! Configuration errors, rejections and replay-store errors.
//!
//! None of them ever carries a secret, a key or a signature.

use std::fmt;
use std::time::Duration;

use http::{HeaderName, StatusCode};
use palisade_core::problem::Problem;
use palisade_core::problem::ToProblem;

/// An impossible configuration, reported by the builders' `build()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No secret or key was given.
    #[error("no secret or key configured")]
    NoKeys,
    /// More keys than a verifier or signer checks.
    #[error("at most {max} secrets or keys may be configured at once")]
    TooManyKeys {
        /// The limit.
        max: usize,
    },
    /// A secret was empty (after its `whsec_` prefix, if any).
    #[error("a secret is empty")]
    EmptySecret,
    /// A secret that must be base64 (`whsec_...`) was not.
    #[error("a secret is not valid base64")]
    InvalidSecret,
    /// A public key (`whpk_...`) was not 32 base64-encoded bytes of a valid ed25519 point.
    #[error("a public key is not a valid base64 ed25519 key")]
    InvalidPublicKey,
    /// A signing key (`whsk_...`) was not 32 or 64 base64-encoded bytes of a valid ed25519 key.
    #[error("a signing key is not a valid base64 ed25519 key")]
    InvalidSigningKey,
    /// ed25519 keys were given for a scheme other than Standard Webhooks.
    #[error("ed25519 keys are only used by Standard Webhooks")]
    KeysNotSupported,
    /// A header name is not a valid HTTP header name.
    #[error("invalid header name {0:?}")]
    InvalidHeaderName(String),
    /// A generic scheme's template is unusable.
    #[error("invalid signed-content template: {0}")]
    InvalidTemplate(&'static str),
    /// A generic scheme names an id or timestamp header that its template
    /// does not sign: anyone could change that header, which would defeat
    /// replay protection (id) or the freshness check (timestamp).
    #[error("the header {0:?} is not covered by the signed-content template")]
    UnsignedHeader(String),
    /// A generic scheme's prefix contains spaces, commas or control characters.
    #[error("a signature prefix must be visible ASCII without spaces or commas")]
    InvalidPrefix,
    /// The timestamp tolerance is zero.
    #[error("the timestamp tolerance must be at least one second")]
    ZeroTolerance,
    /// The body limit is zero.
    #[error("the body limit must be at least one byte")]
    ZeroBodyLimit,
    /// The replay window is zero.
    #[error("the replay window must be at least one second")]
    ZeroReplayWindow,
    /// The replay window ends before a message it remembers stops being
    /// fresh: a capture sent again after the window would run the handler again.
    #[error("the replay window ({window:?}) must be at least twice the timestamp tolerance and a second ({needed:?})")]
    ReplayWindowShorterThanFreshness {
        /// The replay window set.
        window: Duration,
        /// Twice the verifier's timestamp tolerance and a second: how long
        /// a message stays fresh, timestamps being whole seconds.
        needed: Duration,
    },
    /// The in-flight lock expiry is zero.
    #[error("the in-flight lock expiry must be at least one second")]
    ZeroLockExpiry,
    /// Every replay-store call would time out at once.
    #[error("the replay store timeout must be greater than zero")]
    ZeroStoreTimeout,
    /// A replay store's capacity is zero.
    #[error("a replay store needs room for at least one id")]
    ZeroCapacity,
}

/// The `Retry-After` of the 503 answered when the replay store fails or does
/// not answer within the layer's store timeout.
pub const STORE_UNAVAILABLE_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Why an inbound webhook was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// A header the scheme needs is absent. 400.
    MissingHeader,
    /// A header is present but unparsable: not ASCII, not an integer
    /// timestamp, an undecodable signature. 400.
    MalformedHeader,
    /// The timestamp is further from now than the tolerance. 401.
    StaleTimestamp,
    /// No signature verified against any configured key. 401.
    BadSignature,
    /// The body is longer than the limit. 413.
    BodyTooLarge,
    /// The body could not be read (the client went away mid-body). 400.
    BodyUnreadable,
    /// The replay store could not be reached, so the id could not be checked. 503.
    ReplayStoreUnavailable,
}

impl Reason {
    /// Every reason, in declaration order.
    pub(crate) const ALL: [Self; 7] = [
        Self::MissingHeader,
        Self::MalformedHeader,
        Self::StaleTimestamp,
        Self::BadSignature,
        Self::BodyTooLarge,
        Self::BodyUnreadable,
        Self::ReplayStoreUnavailable,
    ];

    /// The label used in metrics (`outcome`) and logs (`reason`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_header",
            Self::MalformedHeader => "malformed_header",
            Self::StaleTimestamp => "stale_timestamp",
            Self::BadSignature => "bad_signature",
            Self::BodyTooLarge => "body_too_large",
            Self::BodyUnreadable => "body_unreadable",
            Self::ReplayStoreUnavailable => "replay_store_unavailable",
        }
    }

    /// The HTTP status of the rejection.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::MissingHeader | Self::MalformedHeader | Self::BodyUnreadable => StatusCode::BAD_REQUEST,
            Self::StaleTimestamp | Self::BadSignature => StatusCode::UNAUTHORIZED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ReplayStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    const fn problem_type(self) -> &'static str {
        match self {
            Self::MissingHeader => "urn:palisade:problem:webhook-missing-header",
            Self::MalformedHeader => "urn:palisade:problem:webhook-malformed-header",
            Self::StaleTimestamp => "urn:palisade:problem:webhook-stale-timestamp",
            Self::BadSignature => "urn:palisade:problem:webhook-bad-signature",
            Self::BodyTooLarge => "urn:palisade:problem:webhook-body-too-large",
            Self::BodyUnreadable => "urn:palisade:problem:webhook-body-unreadable",
            Self::ReplayStoreUnavailable => "urn:palisade:problem:webhook-replay-store-unavailable",
        }
    }

    const fn title(self) -> &'static str {
        match self {
            Self::MissingHeader => "Missing webhook header",
            Self::MalformedHeader => "Malformed webhook header",
            Self::StaleTimestamp => "Webhook timestamp outside tolerance",
            Self::BadSignature => "Invalid webhook signature",
            Self::BodyTooLarge => "Webhook body too large",
            Self::BodyUnreadable => "Webhook body unreadable",
            Self::ReplayStoreUnavailable => "Webhook cannot be checked for replay",
        }
    }
}

/// A verification failure: why, and (for header problems) which header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    reason: Reason,
    header: Option<HeaderName>,
}

impl Rejection {
    pub(crate) const fn new(reason: Reason) -> Self {
        Self { reason, header: None }
    }

    pub(crate) fn header(reason: Reason, header: &HeaderName) -> Self {
        Self {
            reason,
            header: Some(header.clone()),
        }
    }

    /// Why.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The header at fault, for missing and malformed headers.
    pub fn header_name(&self) -> Option<&str> {
        self.header.as_ref().map(HeaderName::as_str)
    }

    /// The HTTP status: 400, 401, 413 or 503.
    pub fn status(&self) -> StatusCode {
        self.reason.status()
    }
}

/// The problem+json description sent to the client: the reason and the
/// header's name, never a signature, a secret or the body.
impl ToProblem for Rejection {
    fn to_problem(&self) -> Problem {
        let mut problem = Problem::new(self.status())
            .with_type(self.reason.problem_type())
            .with_title(self.reason.title());
        if self.reason == Reason::ReplayStoreUnavailable {
            problem = problem.with_retry_after(STORE_UNAVAILABLE_RETRY_AFTER);
        }
        match &self.header {
            Some(name) => problem.with_detail(format!("Check the {} header.", name.as_str())),
            None => problem,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason.title())?;
        if let Some(name) = &self.header {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejection {}

/// A replay store failed.
#[derive(Debug, thiserror::Error)]
#[error("webhook replay store failed")]
pub struct StoreError {
    #[source]
    source: Option<palisade_core::BoxError>,
}

impl From<palisade_core::timed::TimedOut> for StoreError {
    fn from(timed_out: palisade_core::timed::TimedOut) -> Self {
        Self::new(timed_out)
    }
}

impl StoreError {
    /// A store error caused by `source`.
    pub fn new(source: impl Into<palisade_core::BoxError>) -> Self {
        Self {
            source: Some(source.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_slot_status_and_problem_type() {
        for (index, reason) in Reason::ALL.into_iter().enumerate() {
            // The layer indexes its prebuilt counters by discriminant.
            assert_eq!(reason as usize, index);
            let problem = Rejection::new(reason).to_problem();
            assert_eq!(problem.status(), reason.status());
            assert!(problem.kind().starts_with("urn:palisade:problem:webhook-"));
            assert!(problem.detail().is_none());
        }
        let named = Rejection::header(Reason::MalformedHeader, &HeaderName::from_static("webhook-timestamp"));
        assert_eq!(named.header_name(), Some("webhook-timestamp"));
        assert_eq!(named.to_problem().detail(), Some("Check the webhook-timestamp header."));
        assert_eq!(named.to_string(), "Malformed webhook header (webhook-timestamp)");
    }
}
