use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use palisade_core::sync::Unpoison;
use palisade_core::telemetry::outbox as names;

use super::wire::{self, Spelling};
use super::{Publisher, PublisherHealth, UnsendableField};
use crate::envelope::{Encoding, Event};
use crate::error::PublishError;

/// The longest AMQP short string: the exchange, the routing key, and the `type` and
/// `correlation_id` properties.
const SHORT_STRING_MAX: usize = 255;

/// The longest value of the `aggregate_type` and `aggregate_id` headers. AMQP lets a
/// message's properties fill one frame, and a broker may set frames as small as 4,096 bytes;
/// with every short string at its longest, two headers of this size still fit.
const HEADER_VALUE_MAX: usize = 1024;

/// How AMQP headers spell the CloudEvents attributes (the AMQP protocol binding's
/// `cloudEvents_` prefix); the correlation id has a property of its own.
const SPELLING: Spelling = Spelling {
    ce_prefix: "cloudEvents_",
    correlation_id: None,
};

/// The bytes of the header table kept for the trace context and the CloudEvents attributes:
/// what is left of a 4,096-byte frame (the smallest a broker may set) once every other
/// property is at its longest (2,699 bytes, the two aggregate headers included), less a margin.
const WIRE_HEADERS_MAX: usize = 1280;

/// Publishes to a RabbitMQ exchange with publisher confirms, on a connection of its own that
/// it re-opens when it is lost.
///
/// The routing key is the publisher's prefix followed by the event's destination. Messages are
/// persistent (delivery mode 2) with `message_id` = event id, `type` = event type,
/// `correlation_id` from the metadata, the content type of the encoding, and the headers
/// `aggregate_type` and `aggregate_id`, and `traceparent` and `tracestate` when the event has
/// a trace context. In [CloudEvents binary mode](Encoding::CloudEventsBinary) every attribute
/// is a `cloudEvents_` header (`cloudEvents_id`, `cloudEvents_source`, `cloudEvents_type`,
/// `cloudEvents_subject`, ...) and the body is the payload. Publishes are `mandatory` by
/// default: a message no queue receives counts as failed instead of vanishing.
///
/// # Field limits
///
/// Every field is checked before anything is sent, so an event's own data never produces a
/// frame the broker answers by closing the connection:
///
/// | field | limit | when longer |
/// |---|---|---|
/// | routing key (prefix + destination) | 255 bytes | permanent error: the event is dead-lettered |
/// | `type` (the event type) | 255 bytes | permanent error: the event is dead-lettered |
/// | `correlation_id` | 255 bytes | left out, with a warning (the body still carries it) |
/// | `aggregate_type`, `aggregate_id` headers | 1,024 bytes each | left out, with a warning (the body still carries them) |
/// | `traceparent`, `tracestate` and the `cloudEvents_` headers | 1,280 bytes together, required attributes first | a required attribute (`specversion`, `id`, `source`, `type`): permanent error; any other is left out, with a warning |
///
/// # Reconnection
///
/// The publisher owns its connection and confirm-mode channels: each publish, and each run,
/// sends on a channel no other publish uses meanwhile (taken from the idle ones, or opened),
/// because the broker's return of an unroutable message can only be told apart from the
/// other messages' confirms by its message id on a channel of its own: with several messages
/// awaiting confirms, lapin hands a returned message to whichever confirm it completes first.
/// A run's results come once the broker has confirmed the whole run.
///
/// When the broker closes a channel or the connection (a restart, `rabbitmqctl
/// close_connection`, a channel error), the next publish opens a new channel, or a new
/// connection, before sending; a publish that was in flight when the connection went fails as
/// transient and is retried by the relay. [`health`](Publisher::health) says whether the
/// connection is open and the last publish did not lose its channel.
#[derive(Debug, Clone)]
pub struct RabbitMqPublisher {
    link: Arc<Link>,
    exchange: String,
    prefix: String,
    encoding: Encoding,
    mandatory: bool,
}

/// The connection and idle channels, shared by clones, and what is needed to open them again.
struct Link {
    uri: String,
    properties: ConnectionProperties,
    /// The current connection, if one was opened.
    current: Mutex<Option<Arc<Connection>>>,
    /// Open confirm channels no publish is using.
    idle: Mutex<Vec<Channel>>,
    /// Held while opening a connection, so concurrent publishes open one.
    reopening: tokio::sync::Mutex<()>,
    /// Whether the last publish ended with its channel still open.
    channel_kept: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").finish_non_exhaustive()
    }
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

/// Why [`RabbitMqPublisher::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RabbitMqConnectError {
    /// The exchange name is longer than an AMQP short string (255 bytes).
    #[error("exchange name is {0} bytes long; AMQP carries at most 255")]
    ExchangeName(usize),
    /// Connecting, opening the channel or turning on confirms failed.
    #[error("connecting to RabbitMQ failed")]
    Connect(#[source] lapin::Error),
}

/// Whether both the connection and the channel are open.
fn open(connection: &Connection, channel: &Channel) -> bool {
    connection.status().connected() && channel.status().connected()
}

impl Link {
    /// The current connection, if it is open.
    fn connection(&self) -> Option<Arc<Connection>> {
        self.current
            .lock()
            .unpoison()
            .clone()
            .filter(|connection| connection.status().connected())
    }

    /// The open connection, opening a new one first when the current one was lost.
    async fn open_connection(&self) -> Result<Arc<Connection>, lapin::Error> {
        if let Some(connection) = self.connection() {
            return Ok(connection);
        }
        let _reopening = self.reopening.lock().await;
        // Another publish may have re-opened it while this one waited.
        if let Some(connection) = self.connection() {
            return Ok(connection);
        }
        let connection = Arc::new(Connection::connect(&self.uri, self.properties.clone()).await?);
        *self.current.lock().unpoison() = Some(connection.clone());
        self.idle.lock().unpoison().clear();
        Ok(connection)
    }

    /// A confirm channel for one publish or run: an idle one, or a new one.
    async fn take_channel(self: &Arc<Self>) -> Result<TakenChannel, lapin::Error> {
        let connection = self.open_connection().await?;
        let idle = self
            .idle
            .lock()
            .unpoison()
            .pop()
            .filter(|channel| open(&connection, channel));
        let channel = match idle {
            Some(channel) => channel,
            None => {
                let channel = connection.create_channel().await?;
                channel.confirm_select(ConfirmSelectOptions::default()).await?;
                channel
            }
        };
        Ok(TakenChannel {
            link: Arc::clone(self),
            channel: Some(channel),
        })
    }
}

/// A channel one publish or run has to itself. [`TakenChannel::put_back`] returns it to the
/// idle ones once nothing on it awaits a confirm; dropped before that (the publish was
/// abandoned), it is closed, so no later publish sees the earlier one's confirms.
struct TakenChannel {
    link: Arc<Link>,
    channel: Option<Channel>,
}

impl TakenChannel {
    fn channel(&self) -> &Channel {
        self.channel.as_ref().expect("a taken channel is held until put back")
    }

    /// Every confirm came back: the channel goes back to the idle ones if it is still open.
    fn put_back(mut self) {
        let Some(channel) = self.channel.take() else {
            return;
        };
        let kept = channel.status().connected();
        self.link.channel_kept.store(kept, std::sync::atomic::Ordering::Relaxed);
        if kept {
            self.link.idle.lock().unpoison().push(channel);
        }
    }
}

impl Drop for TakenChannel {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { drop(channel.close(200, "publish abandoned").await) });
        }
    }
}

impl RabbitMqPublisher {
    /// Connects to the broker at `uri` (`amqp://user:password@host:5672/vhost`), opens a
    /// confirm-mode channel and publishes to `exchange` (`""` is the default exchange, which
    /// routes to the queue named by the routing key).
    pub async fn connect(uri: &str, exchange: impl Into<String>) -> Result<Self, RabbitMqConnectError> {
        Self::connect_with(uri, ConnectionProperties::default(), exchange).await
    }

    /// [`connect`](Self::connect) with connection properties (a connection name, an executor);
    /// every reconnection uses them too.
    pub async fn connect_with(
        uri: &str,
        properties: ConnectionProperties,
        exchange: impl Into<String>,
    ) -> Result<Self, RabbitMqConnectError> {
        let exchange = exchange.into();
        if exchange.len() > SHORT_STRING_MAX {
            return Err(RabbitMqConnectError::ExchangeName(exchange.len()));
        }
        let link = Arc::new(Link {
            uri: uri.to_owned(),
            properties,
            current: Mutex::new(None),
            idle: Mutex::new(Vec::new()),
            reopening: tokio::sync::Mutex::new(()),
            channel_kept: std::sync::atomic::AtomicBool::new(true),
        });
        link.take_channel()
            .await
            .map_err(RabbitMqConnectError::Connect)?
            .put_back();
        Ok(Self {
            link,
            exchange,
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

/// `value` as a short string, or a permanent error naming `field` when it is too long.
fn required_short(field: &'static str, value: &str) -> Result<ShortString, PublishError> {
    if value.len() > SHORT_STRING_MAX {
        return Err(PublishError::permanent(UnsendableField::too_long(
            field,
            value.len(),
            SHORT_STRING_MAX,
        )));
    }
    Ok(ShortString::from(value.to_owned()))
}

/// Whether optional `value` fits in `limit` bytes; warns that it is left out when not.
fn fits(event: &Event, field: &'static str, value: &str, limit: usize) -> bool {
    let fits = value.len() <= limit;
    if !fits {
        tracing::warn!(
            target: names::TARGET, event_id = %event.event_id, field, len = value.len(), limit,
            "outbox event field too long for AMQP; left out of the message properties"
        );
    }
    fits
}

/// Puts `event`'s trace context and, in binary mode, CloudEvents attributes in `headers`,
/// within [`WIRE_HEADERS_MAX`] bytes: required attributes first, then the others while they fit.
fn insert_wire_headers(event: &Event, encoding: Encoding, headers: &mut FieldTable) -> Result<(), PublishError> {
    let mut budget = WIRE_HEADERS_MAX;
    for header in wire::headers(event, encoding, SPELLING) {
        // A field-table entry: the name as a short string, a type octet, a long string.
        let size = 1 + header.name.len() + 1 + 4 + header.value.len();
        if size > budget {
            if header.required {
                return Err(PublishError::permanent(UnsendableField {
                    field: "CloudEvents attributes",
                    reason: format!(
                        "{} and the attributes before it take more than the {WIRE_HEADERS_MAX} bytes of headers an AMQP frame keeps for them",
                        header.name
                    ),
                }));
            }
            wire::left_out(
                event,
                &header.name,
                "no room left in the AMQP frame that carries the properties",
            );
            continue;
        }
        budget -= size;
        headers.insert(
            header.name.into_owned().into(),
            AMQPValue::LongString(header.value.into_owned().into()),
        );
    }
    Ok(())
}

impl RabbitMqPublisher {
    /// The message properties of `event`, checked against AMQP's limits.
    fn properties(&self, event: &Event) -> Result<BasicProperties, PublishError> {
        let mut headers = FieldTable::default();
        for (name, value) in [
            ("aggregate_type", &event.aggregate_type),
            ("aggregate_id", &event.aggregate_id),
        ] {
            if fits(event, name, value, HEADER_VALUE_MAX) {
                headers.insert(name.into(), AMQPValue::LongString(value.clone().into()));
            }
        }
        insert_wire_headers(event, self.encoding, &mut headers)?;
        let mut properties = BasicProperties::default()
            .with_message_id(ShortString::from(event.event_id.to_string()))
            .with_type(required_short("event type", &event.event_type)?)
            .with_content_type(ShortString::from(self.encoding.content_type()))
            .with_delivery_mode(2)
            .with_timestamp(u64::try_from(event.timestamp.unix_timestamp()).unwrap_or(0))
            .with_headers(headers);
        if let Some(correlation_id) = &event.metadata.correlation_id
            && fits(event, "correlation id", correlation_id, SHORT_STRING_MAX)
        {
            properties = properties.with_correlation_id(ShortString::from(correlation_id.clone()));
        }
        Ok(properties)
    }

    /// Sends `event` on `channel`: its routing key, message id and pending publisher confirm.
    async fn send(&self, channel: &Channel, event: &Event) -> Result<Sent, PublishError> {
        let routing_key = format!("{}{}", self.prefix, event.destination);
        required_short("routing key", &routing_key)?;
        let properties = self.properties(event)?;
        let options = BasicPublishOptions {
            mandatory: self.mandatory,
            ..BasicPublishOptions::default()
        };
        let body = self.encoding.encode(event);
        let confirm = channel
            .basic_publish(&self.exchange, &routing_key, options, &body, properties)
            .await
            .map_err(PublishError::transient)?;
        Ok(Sent {
            routing_key,
            message_id: event.event_id.to_string(),
            confirm,
        })
    }

    /// Sends `events` in order on a channel of their own (ending at the first send that
    /// fails), awaits every confirm, then gives each event its result: unroutable when the
    /// broker returned the message with its id, whichever confirm lapin handed the return to.
    async fn run(&self, events: &[Event]) -> Vec<Result<(), PublishError>> {
        let taken = match self.link.take_channel().await {
            Ok(taken) => taken,
            Err(error) => return vec![Err(PublishError::transient(error))],
        };
        let mut sent = Vec::with_capacity(events.len());
        let mut failed = None;
        for event in events {
            match self.send(taken.channel(), event).await {
                Ok(one) => sent.push(one),
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        let mut returned = HashSet::new();
        let mut confirmed = Vec::with_capacity(sent.len());
        for Sent {
            routing_key,
            message_id,
            confirm,
        } in sent
        {
            let confirmation = confirm.await;
            if let Ok(Confirmation::Ack(Some(message)) | Confirmation::Nack(Some(message))) = &confirmation
                && let Some(id) = message.delivery.properties.message_id()
            {
                returned.insert(id.to_string());
            }
            confirmed.push((routing_key, message_id, confirmation));
        }
        taken.put_back();
        let mut results: Vec<_> = confirmed
            .into_iter()
            .map(|(routing_key, message_id, confirmation)| match confirmation {
                Err(error) => Err(PublishError::transient(error)),
                Ok(_) if returned.contains(&message_id) => {
                    Err(PublishError::transient(RabbitMqRejected::Unroutable(routing_key)))
                }
                Ok(Confirmation::Nack(_)) => Err(PublishError::transient(RabbitMqRejected::Nacked)),
                Ok(Confirmation::Ack(_) | Confirmation::NotRequested) => Ok(()),
            })
            .collect();
        results.extend(failed.map(Err));
        results
    }
}

/// One message sent and awaiting its confirm.
struct Sent {
    routing_key: String,
    message_id: String,
    confirm: PublisherConfirm,
}

impl Publisher for RabbitMqPublisher {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        self.run(std::slice::from_ref(event))
            .await
            .pop()
            .unwrap_or_else(|| Err(PublishError::transient(RabbitMqRejected::Nacked)))
    }

    /// Pipelined: publishes the whole run on a channel of its own (which the broker keeps in
    /// order), then yields the results in order once every confirm is back. A send that fails
    /// ends the run there.
    fn publish_run<'a>(&'a self, events: &'a [Event]) -> impl Stream<Item = Result<(), PublishError>> + Send + 'a {
        futures_util::stream::once(self.run(events)).flat_map(futures_util::stream::iter)
    }

    /// Connected while the connection is open and the last publish kept its channel.
    fn health(&self) -> PublisherHealth {
        if self.link.connection().is_some() && self.link.channel_kept.load(std::sync::atomic::Ordering::Relaxed) {
            PublisherHealth::Connected
        } else {
            PublisherHealth::Disconnected
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::TraceContext;
    use serde_json::json;

    fn names(headers: &FieldTable) -> Vec<String> {
        headers.inner().keys().map(ToString::to_string).collect()
    }

    #[test]
    fn trace_and_cloud_events_headers_stay_within_their_share_of_a_frame() {
        let trace = |tracestate: usize| TraceContext {
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            tracestate: Some("k".repeat(tracestate)),
        };
        let event = Event::new("OrderCreated", "Order", "o1", json!({})).with_trace_context(trace(10));
        let mut headers = FieldTable::default();
        insert_wire_headers(&event, Encoding::Envelope, &mut headers).unwrap();
        assert_eq!(names(&headers), ["traceparent", "tracestate"]);

        // A tracestate too long for what is left is left out; the rest goes.
        let long = event.clone().with_trace_context(trace(1_200));
        let mut headers = FieldTable::default();
        insert_wire_headers(&long, Encoding::CloudEventsBinary, &mut headers).unwrap();
        let names = names(&headers);
        assert!(names.contains(&"cloudEvents_id".to_owned()));
        assert!(names.contains(&"cloudEvents_subject".to_owned()));
        assert!(names.contains(&"traceparent".to_owned()));
        assert!(!names.contains(&"tracestate".to_owned()), "{names:?}");
        assert!(!names.contains(&"cloudEvents_tracestate".to_owned()));

        // A required attribute that does not fit fails the event.
        let sourced = event.with_source("s".repeat(1_300));
        let mut headers = FieldTable::default();
        let error = insert_wire_headers(&sourced, Encoding::CloudEventsBinary, &mut headers).unwrap_err();
        assert!(!error.is_transient());
        assert!(error.to_string().contains("cloudEvents_source"), "{error}");
        // Outside binary mode the source is in the body only.
        let mut headers = FieldTable::default();
        insert_wire_headers(&sourced, Encoding::Envelope, &mut headers).unwrap();
    }
}
