//! What every clone of a layer, its services and their futures share: the
//! configuration, the store, the scope and the metrics.

use palisade_core::events::EventHook;
use std::fmt;
use std::time::Duration;

use http::{HeaderName, Method, StatusCode};
use metrics::{Counter, Histogram};
use palisade_core::telemetry::idempotency::{REQUESTS_TOTAL, STORE_DURATION_SECONDS};
use palisade_core::telemetry::{LABEL_NAME, LABEL_OPERATION, LABEL_OUTCOME, LABEL_REASON};

type StatusPolicy = Box<dyn Fn(StatusCode) -> bool + Send + Sync>;

pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) methods: Vec<Method>,
    pub(crate) header: HeaderName,
    pub(crate) require_key: bool,
    pub(crate) lock_expiry: Duration,
    pub(crate) retention: Duration,
    pub(crate) max_request_body: usize,
    pub(crate) max_response_body: usize,
    pub(crate) store_status: StatusPolicy,
    pub(crate) store_set_cookie: bool,
    pub(crate) fail_open: bool,
    pub(crate) conflict_retry_after: Duration,
    pub(crate) unavailable_retry_after: Duration,
    pub(crate) store_timeout: Duration,
    pub(crate) events: EventHook,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("name", &self.name)
            .field("methods", &self.methods)
            .field("header", &self.header)
            .field("require_key", &self.require_key)
            .field("lock_expiry", &self.lock_expiry)
            .field("retention", &self.retention)
            .field("max_request_body", &self.max_request_body)
            .field("max_response_body", &self.max_response_body)
            .field("store_set_cookie", &self.store_set_cookie)
            .field("fail_open", &self.fail_open)
            .field("conflict_retry_after", &self.conflict_retry_after)
            .field("unavailable_retry_after", &self.unavailable_retry_after)
            .field("store_timeout", &self.store_timeout)
            .finish_non_exhaustive()
    }
}

/// The outcomes counted in `palisade_idempotency_requests_total`, registered
/// once when the layer is built so counting costs no allocation per request.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) first: Counter,
    pub(crate) replayed: Counter,
    pub(crate) conflict: Counter,
    pub(crate) mismatch: Counter,
    pub(crate) missing_key: Counter,
    pub(crate) malformed_key: Counter,
    pub(crate) body_too_large: Counter,
    pub(crate) unreadable_body: Counter,
    pub(crate) store_error_closed: Counter,
    pub(crate) store_error_open: Counter,
    /// `palisade_idempotency_store_duration_seconds` by operation.
    pub(crate) store_begin: Histogram,
    pub(crate) store_complete: Histogram,
    pub(crate) store_release: Histogram,
}

impl Metrics {
    pub(crate) fn new(name: &str) -> Self {
        let outcome = |outcome: &'static str| metrics::counter!(REQUESTS_TOTAL, LABEL_NAME => name.to_owned(), LABEL_OUTCOME => outcome);
        let rejected = |outcome: &'static str, reason: &'static str| {
            metrics::counter!(
                REQUESTS_TOTAL,
                LABEL_NAME => name.to_owned(),
                LABEL_OUTCOME => outcome,
                LABEL_REASON => reason
            )
        };
        let store = |operation: &'static str| metrics::histogram!(STORE_DURATION_SECONDS, LABEL_NAME => name.to_owned(), LABEL_OPERATION => operation);
        Self {
            first: outcome("first"),
            replayed: outcome("replayed"),
            conflict: outcome("conflict"),
            mismatch: outcome("mismatch"),
            missing_key: rejected("invalid", "missing_key"),
            malformed_key: rejected("invalid", "malformed_key"),
            body_too_large: rejected("invalid", "body_too_large"),
            unreadable_body: rejected("invalid", "unreadable_body"),
            store_error_closed: rejected("store_error", "fail_closed"),
            store_error_open: rejected("store_error", "fail_open"),
            store_begin: store("begin"),
            store_complete: store("complete"),
            store_release: store("release"),
        }
    }
}

pub(crate) struct Shared<St, Sc> {
    pub(crate) config: Config,
    pub(crate) store: St,
    pub(crate) scope: Sc,
    pub(crate) metrics: Metrics,
}
