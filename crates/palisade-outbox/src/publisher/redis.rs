use futures_util::{Stream, StreamExt, stream};
use redis::aio::ConnectionLike;
use redis::{RedisError, Value};

use super::Publisher;
use crate::envelope::{Encoding, Event};
use crate::error::PublishError;

/// Appends events to Redis Streams with `XADD`.
///
/// The stream key is the publisher's prefix followed by the event's destination. Each entry
/// has the fields `event_id`, `event_type`, `aggregate_type`, `aggregate_id`, `content_type`
/// and `data` (the encoded event); consumers de-duplicate on `event_id`.
#[derive(Debug, Clone)]
pub struct RedisPublisher<C> {
    connection: C,
    prefix: String,
    encoding: Encoding,
    max_len: Option<usize>,
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> RedisPublisher<C> {
    /// A publisher on `connection` (a multiplexed connection or a connection manager).
    pub fn new(connection: C) -> Self {
        Self {
            connection,
            prefix: String::new(),
            encoding: Encoding::default(),
            max_len: None,
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
            .arg(self.encoding.content_type())
            .arg("data")
            .arg(self.encoding.encode(event));
        cmd
    }
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> Publisher for RedisPublisher<C> {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        let mut connection = self.connection.clone();
        self.xadd(event)
            .query_async::<String>(&mut connection)
            .await
            .map_err(PublishError::transient)?;
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
            let replies: Vec<Result<(), PublishError>> =
                match connection.req_packed_commands(&pipeline, 0, events.len()).await {
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
}
