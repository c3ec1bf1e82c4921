//! What every clone of a hedging layer shares, behind one `Arc`.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Method, Uri};
use metrics::Counter;
use palisade_core::Outcome;
use palisade_retry::RetryBudget;

use crate::latency::Window;

/// Decides, from its head, whether a request may be hedged.
pub(crate) type Predicate = Arc<dyn Fn(&Method, &Uri, &HeaderMap) -> bool + Send + Sync>;

/// When hedges are sent.
#[derive(Debug)]
pub(crate) enum Delay {
    Fixed(Duration),
    Percentile(Window),
}

pub(crate) struct Shared<C> {
    pub(crate) name: Arc<str>,
    pub(crate) delay: Delay,
    pub(crate) max_attempts: u32,
    /// The budget hedges draw on, when one is on.
    pub(crate) budget: Option<RetryBudget>,
    /// Each request deposits in the budget: it is this layer's own. A
    /// budget shared with a retry layer gets its deposits from that layer.
    pub(crate) deposits: bool,
    pub(crate) classifier: C,
    pub(crate) methods: Vec<Method>,
    pub(crate) idempotency_key: Option<HeaderName>,
    pub(crate) predicate: Option<Predicate>,
    pub(crate) replay_limit: usize,
    pub(crate) hedges_total: Counter,
    pub(crate) original_wins_total: Counter,
    pub(crate) hedge_wins_total: Counter,
    pub(crate) budget_exhausted_total: Counter,
}

impl<C> Shared<C> {
    /// The wait before the next hedge, if one may be sent.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match &self.delay {
            Delay::Fixed(delay) => Some(*delay),
            Delay::Percentile(window) => window.delay(),
        }
    }

    /// Records an attempt's latency, unless its answer came from this side
    /// of the network (an open breaker's, a full bulkhead's): those take no
    /// time and would pull the percentile towards zero.
    pub(crate) fn record(&self, latency: Duration, outcome: Outcome) {
        if outcome != Outcome::Ignored {
            self.record_ran(latency);
        }
    }

    /// Records that an attempt ran for `ran`, with a percentile delay: its
    /// latency, or, for an original a hedge beat and dropped, a lower bound
    /// of it past the delay it was hedged at. Left out, the slow calls the
    /// hedges cut short would vanish from the window, the percentile would
    /// sink to that of the fast calls, and ever more requests would be hedged.
    pub(crate) fn record_ran(&self, ran: Duration) {
        if let Delay::Percentile(window) = &self.delay {
            window.record(ran);
        }
    }

    /// A safe request: an idempotent method, an idempotency key, or the
    /// predicate's yes.
    pub(crate) fn is_safe(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
        match &self.predicate {
            Some(predicate) => predicate(method, uri, headers),
            None => self.methods.contains(method) || self.carries_key(headers),
        }
    }

    /// Whether `headers` carry the idempotency key header (when one is set).
    pub(crate) fn carries_key(&self, headers: &HeaderMap) -> bool {
        self.idempotency_key
            .as_ref()
            .is_some_and(|key| headers.contains_key(key))
    }
}

impl<C: std::fmt::Debug> std::fmt::Debug for Shared<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("delay", &self.delay)
            .field("max_attempts", &self.max_attempts)
            .field("budget", &self.budget)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}
