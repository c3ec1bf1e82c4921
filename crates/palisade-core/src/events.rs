//! Event hooks: callbacks for what operators wire into their own systems
//! (an incident channel when a breaker opens, an audit log of dead letters).
//!
//! Every layer's builder takes one with `on_event`; the layer calls it,
//! synchronously and on the calling task, for each [`LayerEvent`] it
//! reports. A hook must be quick and must not block: send to a channel or
//! bump a counter, and do the work elsewhere. Nor may it call back into the
//! layer reporting the event (a breaker's handle, from that breaker's
//! transition): a breaker reports its transitions under its transition
//! lock, so that they arrive in the order they happened, and such a call
//! would wait for that lock forever; act on the event from the task that
//! receives it. A hook that is not set costs a
//! branch on a `None`, nothing more: the event is not even built.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use palisade_core::events::{EventHook, LayerEvent};
//!
//! let opened = Arc::new(AtomicU32::new(0));
//! let seen = opened.clone();
//! let hook = EventHook::new(move |event: &LayerEvent<'_>| {
//!     if let LayerEvent::BreakerTransition { to: "open", .. } = event {
//!         seen.fetch_add(1, Ordering::Relaxed);
//!     }
//! });
//! hook.emit(|| LayerEvent::BreakerTransition { name: "payments", from: "closed", to: "open" });
//! assert_eq!(opened.load(Ordering::Relaxed), 1);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What a layer reports to its [`EventHook`]. The names are the layer's
/// name, as in its metrics; the reasons are the `reason` labels of its
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum LayerEvent<'a> {
    /// A circuit breaker changed state (`closed`, `open`, `half_open`,
    /// `forced_open`, `disabled`).
    BreakerTransition {
        /// The breaker's name (`name[key]` for a key of a keyed breaker).
        name: &'a str,
        /// The state it left.
        from: &'static str,
        /// The state it entered.
        to: &'static str,
    },
    /// A circuit breaker refused a call with `CircuitOpen`.
    BreakerRejected {
        /// The breaker's name.
        name: &'a str,
        /// How long until it probes again.
        retry_after: Duration,
    },
    /// A bulkhead refused a call: `full` (no permit and no room in the
    /// queue) or `timeout` (queued past its `max_wait`).
    BulkheadRejected {
        /// The bulkhead's name.
        name: &'a str,
        /// `full` or `timeout`.
        reason: &'static str,
    },
    /// A retry layer is about to wait `wait`, then make attempt `attempt`.
    Retry {
        /// The retry layer's name.
        name: &'a str,
        /// The attempt about to be made (2 for the first retry).
        attempt: u32,
        /// The wait before it.
        wait: Duration,
        /// What made the last attempt retryable (`status_503`, `timeout`, ...).
        reason: &'static str,
    },
    /// A retry layer's budget refused a retry.
    RetryBudgetExhausted {
        /// The retry layer's name.
        name: &'a str,
    },
    /// The Idempotency-Key layer answered a request with the stored response.
    IdempotencyReplayed {
        /// The layer's name.
        name: &'a str,
    },
    /// The Idempotency-Key layer refused a request: `in_flight` (its key is
    /// being processed, 409) or `mismatch` (the key came with another
    /// request, 422).
    IdempotencyConflict {
        /// The layer's name.
        name: &'a str,
        /// `in_flight` or `mismatch`.
        reason: &'static str,
    },
    /// The outbox relay dead-lettered an event (or a row it could not read).
    OutboxDeadLettered {
        /// The relay's name.
        name: &'a str,
        /// The event's destination (empty for an unreadable row).
        destination: &'a str,
        /// Why, as recorded with the dead letter.
        error: &'a str,
    },
}

type Hook = dyn Fn(&LayerEvent<'_>) + Send + Sync;

/// A layer's event hook, or none: cheap to clone, and free when unset.
#[derive(Clone, Default)]
pub struct EventHook(Option<Arc<Hook>>);

impl EventHook {
    /// A hook calling `f` for every event.
    pub fn new(f: impl Fn(&LayerEvent<'_>) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    /// No hook (the default).
    pub const fn none() -> Self {
        Self(None)
    }

    /// Whether a hook is set.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Calls the hook with the event `event` makes; when no hook is set,
    /// `event` is not called.
    #[inline]
    pub fn emit<'a>(&self, event: impl FnOnce() -> LayerEvent<'a>) {
        if let Some(hook) = &self.0 {
            hook(&event());
        }
    }
}

impl fmt::Debug for EventHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "EventHook(set)"
        } else {
            "EventHook(none)"
        })
    }
}
