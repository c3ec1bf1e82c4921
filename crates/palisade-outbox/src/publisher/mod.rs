//! Where the relay sends events: one trait, a publisher per broker.
//!
//! Every publisher returns only once the broker has taken responsibility for the message
//! (a JetStream ack, a RabbitMQ publisher confirm, a Redis reply, a webhook receiver's 2xx
//! answer, a channel send), so the relay deletes an event only after it is safe elsewhere.
//! Each passes the event id as the broker's de-duplication or message id (the webhook id for
//! HTTP).

use std::future::Future;
use std::sync::Arc;

use crate::envelope::Event;
use crate::error::PublishError;

mod channel;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
#[cfg(feature = "redis")]
mod redis;

pub use channel::{ChannelClosed, ChannelPublisher};
#[cfg(feature = "http")]
pub use http::{HttpPublishError, HttpPublisher, HttpPublisherBuilder};
#[cfg(feature = "nats")]
pub use nats::NatsPublisher;
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::{RabbitMqPublisher, RabbitMqRejected};
#[cfg(feature = "redis")]
pub use redis::RedisPublisher;

/// Sends one event to a broker and resolves once the broker has accepted it.
///
/// The relay calls it concurrently for different aggregates and one at a time within an
/// aggregate. Return [`PublishError::transient`] for failures worth retrying and
/// [`PublishError::permanent`] for messages the broker will never accept.
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `event` to `event.destination` (under the publisher's own prefix).
    fn publish(&self, event: &Event) -> impl Future<Output = Result<(), PublishError>> + Send;
}

impl<P: Publisher> Publisher for Arc<P> {
    fn publish(&self, event: &Event) -> impl Future<Output = Result<(), PublishError>> + Send {
        (**self).publish(event)
    }
}
