use futures_util::Stream;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};

use super::Publisher;
use crate::envelope::{Encoding, Event};
use crate::error::PublishError;

/// Publishes to a RabbitMQ exchange with publisher confirms.
///
/// The routing key is the publisher's prefix followed by the event's destination. Messages are
/// persistent (delivery mode 2) with `message_id` = event id, `type` = event type,
/// `correlation_id` from the metadata, and the content type of the encoding. Publishes are
/// `mandatory` by default: a message no queue receives counts as failed instead of vanishing.
#[derive(Debug, Clone)]
pub struct RabbitMqPublisher {
    channel: Channel,
    exchange: String,
    prefix: String,
    encoding: Encoding,
    mandatory: bool,
}

/// The broker refused or could not route a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RabbitMqRejected {
    /// The broker answered with a negative acknowledgement.
    #[error("the broker nacked the message")]
    Nacked,
    /// The message was mandatory and no queue was bound to receive it.
    #[error("no queue is bound for routing key {0:?}")]
    Unroutable(String),
}

impl RabbitMqPublisher {
    /// Puts `channel` in confirm mode and publishes to `exchange` (`""` is the default exchange,
    /// which routes to the queue named by the routing key).
    pub async fn new(channel: Channel, exchange: impl Into<String>) -> Result<Self, lapin::Error> {
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self {
            channel,
            exchange: exchange.into(),
            prefix: String::new(),
            encoding: Encoding::default(),
            mandatory: true,
        })
    }

    /// Prepends `prefix` to every routing key.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the body encoding.
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Whether an unroutable message fails the publish (default true).
    pub fn mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }
}

impl RabbitMqPublisher {
    /// Sends `event` and returns its routing key and the pending publisher confirm.
    async fn send(&self, event: &Event) -> Result<(String, PublisherConfirm), PublishError> {
        let routing_key = format!("{}{}", self.prefix, event.destination);
        let mut headers = FieldTable::default();
        headers.insert(
            "aggregate_type".into(),
            AMQPValue::LongString(event.aggregate_type.clone().into()),
        );
        headers.insert(
            "aggregate_id".into(),
            AMQPValue::LongString(event.aggregate_id.clone().into()),
        );
        let mut properties = BasicProperties::default()
            .with_message_id(ShortString::from(event.event_id.to_string()))
            .with_type(ShortString::from(event.event_type.clone()))
            .with_content_type(ShortString::from(self.encoding.content_type()))
            .with_delivery_mode(2)
            .with_timestamp(u64::try_from(event.timestamp.unix_timestamp()).unwrap_or(0))
            .with_headers(headers);
        if let Some(correlation_id) = &event.metadata.correlation_id {
            properties = properties.with_correlation_id(ShortString::from(correlation_id.clone()));
        }
        let options = BasicPublishOptions {
            mandatory: self.mandatory,
            ..BasicPublishOptions::default()
        };
        let body = self.encoding.encode(event);
        let confirm = self
            .channel
            .basic_publish(&self.exchange, &routing_key, options, &body, properties)
            .await
            .map_err(PublishError::transient)?;
        Ok((routing_key, confirm))
    }
}

async fn confirmed((routing_key, confirm): (String, PublisherConfirm)) -> Result<(), PublishError> {
    match confirm.await.map_err(PublishError::transient)? {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => Err(PublishError::transient(RabbitMqRejected::Unroutable(routing_key))),
        Confirmation::Nack(_) => Err(PublishError::transient(RabbitMqRejected::Nacked)),
    }
}

impl Publisher for RabbitMqPublisher {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        confirmed(self.send(event).await?).await
    }

    /// Pipelined: publishes the whole run on the channel (which the broker keeps in order),
    /// then yields the confirms in order. A publish that fails ends the run there.
    fn publish_run<'a>(&'a self, events: &'a [Event]) -> impl Stream<Item = Result<(), PublishError>> + Send + 'a {
        super::pipelined(events, |event| self.send(event), confirmed)
    }
}
