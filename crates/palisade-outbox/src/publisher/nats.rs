use std::borrow::Cow;

use async_nats::header::IntoHeaderName;
use async_nats::jetstream::{self, context::PublishAckFuture, context::PublishErrorKind};
use async_nats::{HeaderMap, HeaderName, connection::State};
use futures_util::Stream;

use super::wire::{self, Spelling};
use super::{Publisher, PublisherHealth, UnsendableField};
use crate::envelope::{Encoding, Event};
use crate::error::PublishError;

/// Publishes to NATS JetStream and waits for the stream's ack.
///
/// The subject is the publisher's prefix followed by the event's destination. The event id
/// goes in the `Nats-Msg-Id` header, so a stream with a duplicate window drops a redelivered
/// event; `Content-Type` and `Palisade-Event-Type` headers are set too, and the trace context
/// and correlation id in `traceparent`, `tracestate` and `X-Correlation-ID` when the event
/// has them. In [CloudEvents binary mode](Encoding::CloudEventsBinary) every attribute is a
/// `ce-` header (`ce-id`, `ce-source`, `ce-type`, `ce-subject`, ...) and the body is the
/// payload. A subject no stream captures fails (transient: the stream may be created later).
///
/// # Field limits
///
/// Every event is checked before it is sent, so its own data never produces a message the
/// server answers with a protocol error (which ends the connection). Each of these is a
/// permanent error for that event only, which is dead-lettered (an optional header with a
/// carriage return or line feed, such as a hand-made `traceparent`, is left out with a warning):
///
/// | field | limit |
/// |---|---|
/// | subject (prefix + destination) | not empty, no whitespace, no empty token (`a..b`, a leading or trailing `.`), at most 3,840 bytes (the protocol line holding it is at most 4,096 by default) |
/// | event type (the `Palisade-Event-Type` header) | no carriage return or line feed |
/// | `ce-source` in binary mode (the metadata's source or `/<aggregate type>`) | no carriage return or line feed |
/// | message (headers + body) | at most the server's `max_payload` (1 MiB by default; read from the server, once for each run of an aggregate's events, when the publisher has its client) |
///
/// A message over the stream's own `max_msg_size` reaches the server, which refuses it
/// (JetStream error 10054): that is permanent too, for that event only.
///
/// # Reconnection
///
/// The async-nats client reconnects by itself (by default without giving up), and JetStream
/// publishes made while it is away fail as transient and are retried by the relay.
/// [`health`](Publisher::health) is the client's connection state: give a publisher made
/// with [`from_context`](Self::from_context) its client with [`with_client`](Self::with_client)
/// so it can report it.
#[derive(Debug, Clone)]
pub struct NatsPublisher {
    jetstream: jetstream::Context,
    client: Option<async_nats::Client>,
    prefix: String,
    encoding: Encoding,
}

/// How NATS headers spell the CloudEvents attributes (the NATS protocol binding's `ce-`
/// prefix) and the correlation id.
const SPELLING: Spelling = Spelling {
    ce_prefix: "ce-",
    correlation_id: Some("X-Correlation-ID"),
};

/// The header JetStream de-duplicates on.
const NATS_MESSAGE_ID: &str = "Nats-Msg-Id";

/// The longest subject sent: the protocol line that carries it (with the reply subject and the
/// sizes) is at most 4,096 bytes on a server with default settings.
const MAX_SUBJECT_LEN: usize = 3840;

/// The server's default `max_payload`, for a publisher without its client.
const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// Why `subject` cannot be sent, if it cannot.
fn subject_problem(subject: &str) -> Option<String> {
    if subject.len() > MAX_SUBJECT_LEN {
        return Some(format!(
            "{} bytes long, more than the {MAX_SUBJECT_LEN} the protocol carries",
            subject.len()
        ));
    }
    if subject.bytes().any(|b| b.is_ascii_whitespace()) {
        return Some(format!("{subject:?} contains whitespace"));
    }
    if subject.split('.').any(str::is_empty) {
        return Some(format!("{subject:?} has an empty token"));
    }
    None
}

impl NatsPublisher {
    /// A publisher on `client`, with no subject prefix and the envelope encoding.
    pub fn new(client: async_nats::Client) -> Self {
        Self::from_context(jetstream::new(client.clone())).with_client(client)
    }

    /// A publisher on a JetStream context (for a domain or API prefix). Give it the context's
    /// client with [`with_client`](Self::with_client), so it checks messages against the
    /// server's own size limit and reports its connection's health.
    pub fn from_context(jetstream: jetstream::Context) -> Self {
        Self {
            jetstream,
            client: None,
            prefix: String::new(),
            encoding: Encoding::default(),
        }
    }

    /// The client the JetStream context publishes through: its server's `max_payload` bounds
    /// the messages sent, and its connection state is the publisher's health.
    pub fn with_client(mut self, client: async_nats::Client) -> Self {
        self.client = Some(client);
        self
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
    /// The largest message the server takes. Read from the client's copy of the server's
    /// `INFO` (a copy of every field, so once per run, not per event).
    fn max_payload(&self) -> usize {
        self.client
            .as_ref()
            .map_or(DEFAULT_MAX_PAYLOAD, |client| client.server_info().max_payload)
    }

    /// Sends `event`, checked against `max_payload`, and returns the future of its ack
    /// (without waiting for it).
    async fn send(&self, event: &Event, max_payload: usize) -> Result<PublishAckFuture, PublishError> {
        let unsendable = |field, reason| PublishError::permanent(UnsendableField { field, reason });
        let subject = format!("{}{}", self.prefix, event.destination);
        if let Some(problem) = subject_problem(&subject) {
            return Err(unsendable("subject", problem));
        }
        if event.event_type.contains(['\r', '\n']) {
            return Err(unsendable(
                "event type",
                "a header value cannot hold a carriage return or line feed".to_owned(),
            ));
        }
        let event_id = event.event_id.to_string();
        let body = self.encoding.encode(event);
        let mut headers: Vec<(Cow<'static, str>, Cow<'_, str>)> = vec![
            (NATS_MESSAGE_ID.into(), event_id.as_str().into()),
            ("Content-Type".into(), self.encoding.content_type().into()),
            ("Palisade-Event-Type".into(), event.event_type.as_str().into()),
        ];
        for header in wire::headers(event, self.encoding, SPELLING) {
            if header.value.contains(['\r', '\n']) {
                const REASON: &str = "a header value cannot hold a carriage return or line feed";
                if header.required {
                    return Err(unsendable(
                        "CloudEvents attribute",
                        format!("{}: {REASON}", header.name),
                    ));
                }
                wire::left_out(event, &header.name, REASON);
                continue;
            }
            headers.push((header.name, header.value));
        }
        // `NATS/1.0\r\n`, each `name: value\r\n`, and the closing `\r\n`.
        let header_len = 10
            + headers
                .iter()
                .map(|(name, value)| name.len() + 2 + value.len() + 2)
                .sum::<usize>()
            + 2;
        let size = header_len + body.len();
        if size > max_payload {
            return Err(unsendable(
                "message",
                format!("{size} bytes with its headers, more than the server's max_payload of {max_payload}"),
            ));
        }
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            // A constant name goes in as it is; only a made one (`ce-id`) is copied.
            let name = match name {
                Cow::Borrowed(name) => HeaderName::from_static(name),
                Cow::Owned(name) => name.into_header_name(),
            };
            map.insert(name, value.as_ref());
        }
        self.jetstream
            .publish_with_headers(subject, map, body.into())
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
        acked(self.send(event, self.max_payload()).await?).await
    }

    /// Pipelined: sends the whole run on the connection (which the server keeps in order),
    /// then yields the acks in order. A send that fails ends the run there. The server's
    /// `max_payload` is read once for the run.
    fn publish_run<'a>(&'a self, events: &'a [Event]) -> impl Stream<Item = Result<(), PublishError>> + Send + 'a {
        let max_payload = self.max_payload();
        super::pipelined(events, move |event| self.send(event, max_payload), acked)
    }

    /// The client's connection state: connected, or not (the client is reconnecting). A
    /// publisher without its client (see [`from_context`](NatsPublisher::from_context)) says
    /// connected.
    fn health(&self) -> PublisherHealth {
        match self.client.as_ref().map(async_nats::Client::connection_state) {
            Some(State::Connected) | None => PublisherHealth::Connected,
            Some(State::Disconnected | State::Pending) => PublisherHealth::Disconnected,
        }
    }
}

fn classify(error: jetstream::context::PublishError) -> PublishError {
    let too_large = || {
        std::error::Error::source(&error)
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .is_some_and(|refusal| refusal.error_code() == jetstream::ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
    };
    match error.kind() {
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => PublishError::permanent(error),
        // The stream will never take a message this large: retrying only holds its aggregate back.
        PublishErrorKind::Other if too_large() => PublishError::permanent(error),
        _ => PublishError::transient(error),
    }
}
