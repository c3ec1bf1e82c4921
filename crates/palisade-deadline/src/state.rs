//! What every clone of a deadline layer shares: its settings and metric
//! handles, behind one `Arc`.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use metrics::Counter;
use palisade_core::telemetry::{LABEL_NAME, LABEL_REASON, LABEL_SIDE, deadline as names};

/// The server layer's settings.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) name: Arc<str>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_timeout: Duration,
    pub(crate) header: Option<HeaderName>,
    pub(crate) grpc_timeout: bool,
    pub(crate) exceeded_total: Counter,
    pub(crate) malformed_grpc_total: Counter,
    pub(crate) malformed_header_total: Counter,
}

/// The client layer's settings.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) name: Arc<str>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) margin: Duration,
    pub(crate) header: Option<HeaderName>,
    pub(crate) grpc_timeout: bool,
    pub(crate) exceeded_total: Counter,
}

pub(crate) fn exceeded_counter(name: &Arc<str>, side: &'static str) -> Counter {
    metrics::counter!(names::EXCEEDED_TOTAL, LABEL_NAME => name.to_string(), LABEL_SIDE => side)
}

pub(crate) fn malformed_counter(name: &Arc<str>, reason: &'static str) -> Counter {
    metrics::counter!(names::MALFORMED_TOTAL, LABEL_NAME => name.to_string(), LABEL_REASON => reason)
}
