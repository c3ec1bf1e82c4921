use tokio::sync::mpsc;

use super::{Publisher, PublisherHealth};
use crate::envelope::Event;
use crate::error::PublishError;

/// Publishes into an in-process channel: for tests, and for services that consume their own
/// events. A full channel holds the relay back (backpressure) for up to the relay's
/// `publish_timeout`; a dropped receiver fails the publish at once. Both failures are
/// transient: the event waits in the outbox and is tried again with the relay's backoff, and,
/// like any event, is dead-lettered once `max_attempts` have failed. Keep the receiver alive
/// and draining, or raise `max_attempts`, where a consumer may be away for long.
#[derive(Debug, Clone)]
pub struct ChannelPublisher {
    sender: mpsc::Sender<Event>,
}

/// The receiver is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the channel's receiver was dropped")]
pub struct ChannelClosed;

impl ChannelPublisher {
    /// A publisher and the receiving end of a channel holding up to `capacity` events.
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Event>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        (Self { sender }, receiver)
    }

    /// A publisher sending into an existing channel.
    pub fn from_sender(sender: mpsc::Sender<Event>) -> Self {
        Self { sender }
    }
}

impl Publisher for ChannelPublisher {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        self.sender
            .send(event.clone())
            .await
            .map_err(|_| PublishError::transient(ChannelClosed))
    }

    /// Disconnected once the receiver was dropped.
    fn health(&self) -> PublisherHealth {
        if self.sender.is_closed() {
            PublisherHealth::Disconnected
        } else {
            PublisherHealth::Connected
        }
    }
}
