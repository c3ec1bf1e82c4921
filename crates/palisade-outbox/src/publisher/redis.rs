use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt, stream};
use palisade_core::sync::Unpoison;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use super::wire::{self, Spelling};
use super::{Publisher, PublisherHealth};

/// How stream fields spell the CloudEvents attributes (`ce_`, as Kafka's binding does: Redis
/// has no binding of its own) and the correlation id.
const SPELLING: Spelling = Spelling {
    ce_prefix: "ce_",
    correlation_id: Some("correlation_id"),
};
use crate::envelope::{Encoding, Event};
use crate::error::PublishError;

/// Appends events to Redis Streams with `XADD`.
///
/// The stream key is the publisher's prefix followed by the event's destination. Each entry
/// has the fields `event_id`, `event_type`, `aggregate_type`, `aggregate_id`, `content_type`,
/// `traceparent`, `tracestate` and `correlation_id` (when the event has them) and `data` (the
/// encoded event); consumers de-duplicate on `event_id`. In
/// [CloudEvents binary mode](Encoding::CloudEventsBinary) every attribute is also a `ce_`
/// field (`ce_id`, `ce_source`, `ce_type`, ..., as in the Kafka binding, since Redis has no
/// binding of its own) and `data` is the payload. Redis commands are
/// binary-safe, so no field of an event is too long or malformed for the protocol.
///
/// # Reconnection
///
/// Made with [`connect`](RedisPublisher::connect), the publisher opens a multiplexed
/// connection of its own and opens a new one after the server closed it or it broke: the
/// publish that finds it gone fails as transient (the relay retries it) and the next one goes
/// out on the new connection. So does a connection that went silent without closing (a
/// failover, a network path that drops every packet): the publish given up on it (the relay's
/// publish timeout) leaves it forgotten, and the next publish opens a new one. Made with
/// [`new`](RedisPublisher::new), it publishes through the
/// connection given, which recovers only if that connection does (redis's
/// `ConnectionManager` does, a `MultiplexedConnection` does not).
/// [`health`](Publisher::health) is disconnected from a publish that lost the connection, or
/// was given up before its reply, until one gets a reply again.
#[derive(Debug, Clone)]
pub struct RedisPublisher<C> {
    connection: C,
    prefix: String,
    encoding: Encoding,
    max_len: Option<usize>,
    connected: Arc<AtomicBool>,
}

/// A multiplexed connection to Redis that is opened again once it was lost: what a
/// [`RedisPublisher::connect`] publishes through. Clones share the connection.
#[derive(Clone)]
pub struct ReconnectingConnection {
    shared: Arc<Reconnecting>,
}

struct Reconnecting {
    client: redis::Client,
    /// The open connection, and how many were opened before it (so a command
    /// forgets only the connection it ran on).
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    opened: AtomicU64,
    /// Held while connecting, so concurrent commands open one connection.
    reopening: tokio::sync::Mutex<()>,
}

/// Runs its action when dropped before [`answered`](Unanswered::answered): a
/// command given up before its reply (the relay's publish timeout) leaves its
/// connection suspect, since a connection gone silent without closing (a
/// failover, a path that drops every packet) fails nothing until the kernel
/// gives up on it, minutes later.
struct Unanswered<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Unanswered<F> {
    fn answered(mut self) {
        self.0 = None;
    }
}

impl<F: FnOnce()> Drop for Unanswered<F> {
    fn drop(&mut self) {
        if let Some(given_up) = self.0.take() {
            given_up();
        }
    }
}

impl std::fmt::Debug for ReconnectingConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectingConnection").finish_non_exhaustive()
    }
}

/// Whether `error` means the connection is gone (rather than a command refused).
fn connection_lost(error: &RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error()
}

impl ReconnectingConnection {
    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.shared.current.lock().unpoison().clone()
    }

    /// The open connection, connecting first when there is none.
    async fn connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(open) = self.current() {
            return Ok(open);
        }
        let _reopening = self.shared.reopening.lock().await;
        if let Some(open) = self.current() {
            return Ok(open);
        }
        let connection = self.shared.client.get_multiplexed_async_connection().await?;
        let open = (self.shared.opened.fetch_add(1, Ordering::Relaxed), connection);
        *self.shared.current.lock().unpoison() = Some(open.clone());
        Ok(open)
    }

    /// Forgets connection `id` if it is still the open one.
    fn forget(&self, id: u64) {
        let mut current = self.shared.current.lock().unpoison();
        if current.as_ref().is_some_and(|(open, _)| *open == id) {
            *current = None;
        }
    }

    /// Runs `command` on the open connection; forgets the connection when the
    /// reply says it is gone, or when the command is given up before its reply.
    async fn run<T>(&self, command: impl AsyncFnOnce(&mut MultiplexedConnection) -> RedisResult<T>) -> RedisResult<T> {
        let (id, mut connection) = self.connection().await?;
        let unanswered = Unanswered(Some(|| self.forget(id)));
        let result = command(&mut connection).await;
        unanswered.answered();
        if let Err(error) = &result
            && connection_lost(error)
        {
            self.forget(id);
        }
        result
    }
}

impl ConnectionLike for ReconnectingConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.run(async move |connection| connection.req_packed_command(cmd).await))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(self.run(async move |connection| connection.req_packed_commands(pipeline, offset, count).await))
    }

    fn get_db(&self) -> i64 {
        self.shared.client.get_connection_info().redis.db
    }
}

impl RedisPublisher<ReconnectingConnection> {
    /// Connects through `client` (`redis::Client::open("redis://host:6379")`), and connects
    /// again whenever the connection was lost; see [reconnection](RedisPublisher#reconnection).
    pub async fn connect(client: redis::Client) -> RedisResult<Self> {
        let connection = ReconnectingConnection {
            shared: Arc::new(Reconnecting {
                client,
                current: Mutex::new(None),
                opened: AtomicU64::new(0),
                reopening: tokio::sync::Mutex::new(()),
            }),
        };
        connection.connection().await?;
        Ok(Self::new(connection))
    }
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> RedisPublisher<C> {
    /// A publisher on `connection` (a multiplexed connection or a connection manager); see
    /// [reconnection](RedisPublisher#reconnection).
    pub fn new(connection: C) -> Self {
        Self {
            connection,
            prefix: String::new(),
            encoding: Encoding::default(),
            max_len: None,
            connected: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Prepends `prefix` to every stream key.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the body encoding.
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Trims streams to about `max_len` entries (`MAXLEN ~`); unbounded by default.
    pub fn with_max_len(mut self, max_len: usize) -> Self {
        self.max_len = Some(max_len);
        self
    }
}

impl<C> RedisPublisher<C> {
    /// Notes the broker unreachable if the publish is given up before its reply.
    fn unanswered(&self) -> Unanswered<impl FnOnce() + '_> {
        Unanswered(Some(|| self.connected.store(false, Ordering::Relaxed)))
    }

    /// Notes whether the connection answered (`result` is a reply, even an error reply).
    fn track<T>(&self, result: &RedisResult<T>) {
        let lost = result.as_ref().is_err_and(connection_lost);
        self.connected.store(!lost, Ordering::Relaxed);
    }

    /// The `XADD` for `event`.
    fn xadd(&self, event: &Event) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(format!("{}{}", self.prefix, event.destination));
        if let Some(max_len) = self.max_len {
            cmd.arg("MAXLEN").arg("~").arg(max_len);
        }
        cmd.arg("*")
            .arg("event_id")
            .arg(event.event_id.to_string())
            .arg("event_type")
            .arg(&event.event_type)
            .arg("aggregate_type")
            .arg(&event.aggregate_type)
            .arg("aggregate_id")
            .arg(&event.aggregate_id)
            .arg("content_type")
            .arg(self.encoding.content_type());
        for header in wire::headers(event, self.encoding, SPELLING) {
            cmd.arg(header.name.as_ref()).arg(header.value.as_ref());
        }
        cmd.arg("data").arg(self.encoding.encode(event));
        cmd
    }
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> Publisher for RedisPublisher<C> {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        let mut connection = self.connection.clone();
        let unanswered = self.unanswered();
        let result = self.xadd(event).query_async::<String>(&mut connection).await;
        unanswered.answered();
        self.track(&result);
        result.map_err(PublishError::transient)?;
        Ok(())
    }

    /// Pipelined: sends the run's `XADD`s in one pipeline (executed in order, not as a
    /// transaction) and yields each command's reply. A connection failure fails the first
    /// event and ends the run.
    fn publish_run<'a>(&'a self, events: &'a [Event]) -> impl Stream<Item = Result<(), PublishError>> + Send + 'a {
        stream::once(async move {
            let mut pipeline = redis::pipe();
            for event in events {
                pipeline.add_command(self.xadd(event));
            }
            let mut connection = self.connection.clone();
            let unanswered = self.unanswered();
            let result = connection.req_packed_commands(&pipeline, 0, events.len()).await;
            unanswered.answered();
            self.track(&result);
            let replies: Vec<Result<(), PublishError>> = match result {
                Ok(replies) => replies
                    .into_iter()
                    .map(|reply| match reply {
                        Value::ServerError(error) => Err(PublishError::transient(RedisError::from(error))),
                        _ => Ok(()),
                    })
                    .collect(),
                Err(error) => vec![Err(PublishError::transient(error))],
            };
            stream::iter(replies)
        })
        .flatten()
    }

    /// Disconnected after a publish lost the connection, until one gets a reply again.
    fn health(&self) -> PublisherHealth {
        if self.connected.load(Ordering::Relaxed) {
            PublisherHealth::Connected
        } else {
            PublisherHealth::Disconnected
        }
    }
}
