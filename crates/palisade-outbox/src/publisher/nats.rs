use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture, context::PublishErrorKind};
use futures_util::Stream;

use super::Publisher;
use crate::envelope::{Encoding, Event};
use crate::error::PublishError;

/// Publishes to NATS JetStream and waits for the stream's ack.
///
/// The subject is the publisher's prefix followed by the event's destination. The event id
/// goes in the `Nats-Msg-Id` header, so a stream with a duplicate window drops a redelivered
/// event; `Content-Type` and `Palisade-Event-Type` headers are set too. A subject no stream
/// captures fails (transient: the stream may be created later).
#[derive(Debug, Clone)]
pub struct NatsPublisher {
    jetstream: jetstream::Context,
    prefix: String,
    encoding: Encoding,
}

impl NatsPublisher {
    /// A publisher on `client`, with no subject prefix and the envelope encoding.
    pub fn new(client: async_nats::Client) -> Self {
        Self::from_context(jetstream::new(client))
    }

    /// A publisher on a JetStream context (for a domain or API prefix).
    pub fn from_context(jetstream: jetstream::Context) -> Self {
        Self {
            jetstream,
            prefix: String::new(),
            encoding: Encoding::default(),
        }
    }

    /// Prepends `prefix` to every destination (e.g. `events.` to publish `Order` on `events.Order`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the body encoding.
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }
}

impl NatsPublisher {
    /// Sends `event` and returns the future of its ack (without waiting for it).
    async fn send(&self, event: &Event) -> Result<PublishAckFuture, PublishError> {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.event_id.to_string().as_str());
        headers.insert("Content-Type", self.encoding.content_type());
        headers.insert("Palisade-Event-Type", event.event_type.as_str());
        let subject = format!("{}{}", self.prefix, event.destination);
        let body = self.encoding.encode(event);
        self.jetstream
            .publish_with_headers(subject, headers, body.into())
            .await
            .map_err(classify)
    }
}

async fn acked(ack: PublishAckFuture) -> Result<(), PublishError> {
    ack.await.map_err(classify)?;
    Ok(())
}

impl Publisher for NatsPublisher {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        acked(self.send(event).await?).await
    }

    /// Pipelined: sends the whole run on the connection (which the server keeps in order),
    /// then yields the acks in order. A send that fails ends the run there.
    fn publish_run<'a>(&'a self, events: &'a [Event]) -> impl Stream<Item = Result<(), PublishError>> + Send + 'a {
        super::pipelined(events, |event| self.send(event), acked)
    }
}

fn classify(error: jetstream::context::PublishError) -> PublishError {
    match error.kind() {
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => PublishError::permanent(error),
        _ => PublishError::transient(error),
    }
}
