//! Where the relay sends events: one trait, a publisher per broker.
//!
//! Every publisher returns only once the broker has taken responsibility for the message
//! (a JetStream ack, a RabbitMQ publisher confirm, a Redis reply, a webhook receiver's 2xx
//! answer, a channel send), so the relay deletes an event only after it is safe elsewhere.
//! Each passes the event id as the broker's de-duplication or message id (the webhook id for
//! HTTP). The crate docs compare their [ordering and acknowledgement guarantees](crate#publishers)
//! and say how each carries the [trace context](crate#trace-context-on-the-wire).
//!

use std::future::Future;
use std::sync::Arc;

use futures_util::{Stream, StreamExt, stream};

use crate::envelope::Event;
use crate::error::PublishError;

mod channel;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(
    feature = "nats",
    feature = "rabbitmq",
    feature = "redis",
    feature = "http",
    feature = "kafka"
))]
mod wire;

pub use channel::{ChannelClosed, ChannelPublisher};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use http::{HttpPublishError, HttpPublisher, HttpPublisherBuilder};
#[cfg(feature = "kafka")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
pub use kafka::{KafkaPublishError, KafkaPublisher};
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub use nats::NatsPublisher;
#[cfg(feature = "rabbitmq")]
#[cfg_attr(docsrs, doc(cfg(feature = "rabbitmq")))]
pub use rabbitmq::{RabbitMqConnectError, RabbitMqPublisher, RabbitMqRejected};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{ReconnectingConnection, RedisPublisher};

/// Whether a publisher can reach its broker right now, for a service's health endpoint
/// ([`Relay::publisher_health`](crate::Relay::publisher_health)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublisherHealth {
    /// The connection is up (or, for publishers without a lasting connection, the last
    /// attempt reached the receiver).
    Connected,
    /// The connection is down; the publisher re-establishes it (see each publisher), and
    /// events wait in the outbox meanwhile.
    Disconnected,
}

/// For a health endpoint: `"connected"` or `"disconnected"`.
impl serde::Serialize for PublisherHealth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
        })
    }
}

/// An event field the broker's protocol cannot carry: a permanent error for that event only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the event's {field} cannot be sent: {reason}")]
pub struct UnsendableField {
    /// The field, e.g. `routing key`.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl UnsendableField {
    #[cfg(feature = "rabbitmq")]
    fn too_long(field: &'static str, len: usize, limit: usize) -> Self {
        Self {
            field,
            reason: format!("{len} bytes long, more than the {limit} the protocol carries"),
        }
    }
}

/// Sends events to a broker and resolves once the broker has accepted them.
///
/// The relay hands it one aggregate's claimed events at a time, as a *run* in staging order
/// ([`publish_run`](Publisher::publish_run)), runs of different aggregates concurrently.
/// Return [`PublishError::transient`] for failures worth retrying and
/// [`PublishError::permanent`] for messages the broker will never accept.
///
/// # Runs
///
/// [`publish_run`](Publisher::publish_run) yields one result per event, in the run's order.
/// The relay reads them until the first error and then drops the stream, and records:
///
/// - every event before the first error: published;
/// - the event whose result is the error (or that timed out): failed, retried after a
///   backoff or dead-lettered, its attempt counted;
/// - every event after it: released, no attempt counted. The claim skips an aggregate whose
///   oldest event waits for a retry, so these are claimed again only once the failed event
///   has been published (or dead-lettered).
///
/// The default implementation publishes one event at a time, each once the previous one was
/// acknowledged, and sends nothing after a failure: the broker never holds a later event of
/// the aggregate before an earlier one. Publishers for brokers that keep one connection's
/// messages in order (NATS JetStream, RabbitMQ, Redis) override it to *pipeline*: send the
/// whole run in order, then wait for the acknowledgements in order, so a run costs one round
/// trip instead of one per event; the Kafka publisher sends a run as one record batch, which
/// the broker appends whole or not at all. The price is at a failure: events sent after the failed one are
/// already on their way. If the broker refuses the failed event but accepts a later one (a
/// per-message rejection rather than a lost connection), that later event reaches consumers
/// before the failed one; it is published again after the retried event, where a
/// de-duplicating broker (JetStream within its duplicate window) drops the copy. A lost
/// connection usually loses everything sent after the failed event too, and order holds; but
/// a client that keeps the publishes it has not yet written across a reconnect (async-nats
/// does: it drops what it had buffered for the old connection and sends the rest on the new
/// one) can lose the start of a run and deliver its end, which then reaches consumers before
/// the retried start. A late acknowledgement (a timeout) may leave the event and the ones
/// after it stored, in order, and their re-sends are duplicates rather than reorderings.
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `event` to `event.destination` (under the publisher's own prefix).
    fn publish(&self, event: &Event) -> impl Future<Output = Result<(), PublishError>> + Send;

    /// Publishes one aggregate's run of `events` in order, yielding each event's result in
    /// that order; see [runs](Publisher#runs). A stream that ends early leaves the events it
    /// gave no result for released.
    ///
    /// The default calls [`publish`](Publisher::publish) for one event at a time, starting
    /// each only when the stream is polled for its result.
    fn publish_run<'a>(&'a self, events: &'a [Event]) -> impl Stream<Item = Result<(), PublishError>> + Send + 'a {
        stream::iter(events).then(move |event| self.publish(event))
    }

    /// Whether the broker is reachable right now; the default says [`PublisherHealth::Connected`].
    fn health(&self) -> PublisherHealth {
        PublisherHealth::Connected
    }
}

/// A pipelined run for brokers that keep one connection's messages in order: `send`s every
/// event in order (ending the run at the first send that fails), then yields each send's
/// acknowledgement, awaited with `acknowledged`, in order.
#[cfg(feature = "nats")]
fn pipelined<'a, Sent, SendFuture, AckFuture>(
    events: &'a [Event],
    send: impl Fn(&'a Event) -> SendFuture + Send + 'a,
    acknowledged: impl Fn(Sent) -> AckFuture + Send + 'a,
) -> impl Stream<Item = Result<(), PublishError>> + Send + 'a
where
    Sent: Send + 'a,
    SendFuture: Future<Output = Result<Sent, PublishError>> + Send + 'a,
    AckFuture: Future<Output = Result<(), PublishError>> + Send + 'a,
{
    stream::once(async move {
        let mut sent = Vec::with_capacity(events.len());
        for event in events {
            let result = send(event).await;
            let failed = result.is_err();
            sent.push(result);
            if failed {
                break;
            }
        }
        stream::iter(sent).then(move |result| {
            let ack = result.map(&acknowledged);
            async move { ack?.await }
        })
    })
    .flatten()
}

impl<P: Publisher> Publisher for Arc<P> {
    fn publish(&self, event: &Event) -> impl Future<Output = Result<(), PublishError>> + Send {
        (**self).publish(event)
    }

    fn publish_run<'a>(&'a self, events: &'a [Event]) -> impl Stream<Item = Result<(), PublishError>> + Send + 'a {
        (**self).publish_run(events)
    }

    fn health(&self) -> PublisherHealth {
        (**self).health()
    }
}
