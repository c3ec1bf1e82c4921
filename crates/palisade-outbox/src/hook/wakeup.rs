//! The wake-up signal between the publish hook (and other instances) and the relay.

use std::fmt;
use std::sync::Arc;

use tokio::sync::Notify;

/// Wakes relays the moment an event has been committed, instead of at their next poll.
///
/// Cheap to clone. [`wake`](Wakeup::wake) wakes one relay of this process (a relay busy with
/// a batch claims again right after it) and, when a forwarder such as
/// [`postgres::forward_wakeups`](crate::postgres::forward_wakeups) runs, relays of other
/// instances too. Wakes coalesce: many wakes while a relay is busy cost one extra claim.
#[derive(Clone, Default)]
pub struct Wakeup {
    inner: Arc<WakeupInner>,
}

#[derive(Default)]
struct WakeupInner {
    relay: Notify,
    remote: Notify,
}

impl fmt::Debug for Wakeup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wakeup").finish_non_exhaustive()
    }
}

impl Wakeup {
    /// A new wake-up signal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes a local relay and asks forwarders to wake the other instances' relays.
    pub fn wake(&self) {
        self.inner.relay.notify_one();
        self.inner.remote.notify_one();
    }

    /// Wakes a local relay only (what a notification from another instance does).
    pub fn wake_local(&self) {
        self.inner.relay.notify_one();
    }

    pub(crate) async fn relay_woken(&self) {
        self.inner.relay.notified().await;
    }

    /// Resolves after the next [`wake`](Wakeup::wake): what a forwarder to other instances awaits.
    pub async fn remote_wanted(&self) {
        self.inner.remote.notified().await;
    }
}
