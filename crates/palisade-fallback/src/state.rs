//! What every clone of a fallback layer shares, behind one `Arc`.

use std::sync::Arc;

use metrics::Counter;
use palisade_core::telemetry::{LABEL_NAME, LABEL_REASON, fallback as names};

use crate::failure::Reason;

pub(crate) struct Shared<C> {
    pub(crate) name: Arc<str>,
    pub(crate) classifier: C,
    /// `palisade_fallback_calls_total` by reason, in [`Reason::ALL`] order.
    calls_total: [Counter; 5],
}

impl<C> Shared<C> {
    pub(crate) fn new(name: Arc<str>, classifier: C) -> Self {
        let calls_total = Reason::ALL.map(|reason| {
            metrics::counter!(names::CALLS_TOTAL, LABEL_NAME => name.to_string(), LABEL_REASON => reason.as_str())
        });
        Self {
            name,
            classifier,
            calls_total,
        }
    }

    pub(crate) fn count(&self, reason: Reason) {
        let index = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.calls_total[index].increment(1);
        tracing::debug!(target: names::TARGET, name = &*self.name, reason = reason.as_str(), "answering from the fallback");
    }
}

impl<C: std::fmt::Debug> std::fmt::Debug for Shared<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}
