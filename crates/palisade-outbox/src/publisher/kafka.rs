use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt, stream};
use palisade_core::sync::Unpoison;
use rskafka::BackoffConfig;
use rskafka::chrono::{DateTime, Utc};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use tokio::time::Instant;

use super::wire::{self, Spelling};
use super::{Publisher, PublisherHealth, UnsendableField};
use crate::envelope::{Encoding, Event};
use crate::error::PublishError;

/// How Kafka record headers spell the CloudEvents attributes and the correlation id (the
/// CloudEvents Kafka protocol binding's `ce_` prefix).
const SPELLING: Spelling = Spelling {
    ce_prefix: "ce_",
    correlation_id: Some("correlation_id"),
};

/// The longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// What a record costs in a batch beyond its key, value and header bytes: its length,
/// attributes, timestamp and offset deltas and the lengths of its fields (varints).
const RECORD_OVERHEAD: usize = 24;
/// What each header costs beyond its name and value: their two lengths.
const HEADER_OVERHEAD: usize = 4;

/// How long the topics' partition counts are trusted before they are read again, as Kafka's
/// own producers do (`metadata.max.age.ms`), so partitions added to a topic are used.
const METADATA_MAX_AGE: Duration = Duration::from_secs(300);

/// How long [`KafkaPublisher::connect`]'s client retries one step of a request (connecting,
/// reading metadata, producing) over a broken connection before giving up.
const RETRY_DEADLINE: Duration = Duration::from_secs(5);

/// Publishes to Kafka with [rskafka](https://docs.rs/rskafka) (pure Rust, no C library), and
/// waits until every in-sync replica has the records (`acks=all`).
///
/// The topic is the publisher's prefix followed by the event's destination; the record key is
/// the aggregate id, and the partition is chosen from it as Kafka's own producers choose
/// (murmur2 of the key modulo the topic's partition count), so one aggregate's events land in
/// one partition, in order, and a producer with Java's default partitioner (librdkafka's
/// `murmur2_random`) keyed the same way writes to the same partition. The partition counts are
/// read from the cluster's metadata and read again after five minutes, so partitions added to a
/// topic are used (and move keys, as with every Kafka producer). The record's value is the
/// [encoded](Encoding) event, its timestamp the event's, and its headers:
///
/// | header | value |
/// |---|---|
/// | `event_id` | the event id, for consumers to de-duplicate on |
/// | `event_type`, `aggregate_type` | from the event |
/// | `content-type` | the encoding's content type |
/// | `traceparent`, `tracestate`, `correlation_id` | the trace context and correlation id, when the event has them |
/// | `ce_*` | in [CloudEvents binary mode](Encoding::CloudEventsBinary), every attribute (`ce_id`, `ce_source`, `ce_type`, `ce_subject`, ...) |
///
/// The publisher does not create topics: a topic that does not exist fails as transient (it
/// may be created later) and the relay retries it.
///
/// ```no_run
/// # #[cfg(feature = "sqlite")] {
/// use palisade_outbox::{Encoding, KafkaPublisher, Relay, sqlite::SqliteStore};
///
/// # async fn run(pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
/// // Event `Order` goes to topic `orders.Order`, keyed by its aggregate id, as CloudEvents.
/// let publisher = KafkaPublisher::connect(["127.0.0.1:9092"])
///     .await?
///     .with_prefix("orders.")
///     .with_encoding(Encoding::CloudEventsBinary);
/// let relay = Relay::builder(SqliteStore::new(pool), publisher).build()?;
/// let running = relay.spawn();
/// # running.shutdown().await;
/// # Ok(())
/// # }
/// # }
/// ```
///
/// # Runs
///
/// A run's events to one topic go to one partition, and the publisher sends them in one
/// produce request, as one record batch, which the broker appends whole or not at all: a run
/// costs one round trip, and the broker never holds a later event of the aggregate without
/// the earlier ones of its batch. A run larger than [`max_batch_bytes`](Self::with_max_batch_bytes)
/// is split into several batches, sent one after the other, each once the previous one was
/// acknowledged.
///
/// # No idempotent producer
///
/// rskafka has no idempotent producer (no producer id and sequence numbers): the broker does
/// not recognise a batch sent twice. A batch whose acknowledgement was lost (a connection cut
/// after the broker appended it, a publish timeout) is sent again, by rskafka's own retry or by
/// the relay, and stored twice, after the first copy and in the same order. Consumers
/// de-duplicate on the `event_id` header ([`process_once`](crate::process_once)), as with
/// every at-least-once publisher. Order per aggregate still holds: a run's batches go one at a
/// time, and the relay sends an aggregate's next run only after this one was acknowledged.
///
/// # Field limits
///
/// | field | limit | when broken |
/// |---|---|---|
/// | topic (prefix + destination) | 1 to 249 ASCII letters, digits, `.`, `_`, `-`; not `.` or `..` | permanent error: the event is dead-lettered |
/// | record (key, value and headers) | [`max_batch_bytes`](Self::with_max_batch_bytes) (1,000,000 by default) | permanent error: the event is dead-lettered |
///
/// A broker that refuses a record as too large or invalid (`MESSAGE_TOO_LARGE` for a single
/// record, `INVALID_TOPIC_EXCEPTION`, `INVALID_RECORD`, `CORRUPT_MESSAGE`) fails it as
/// permanent; every other refusal is transient.
///
/// # Reconnection
///
/// rskafka connects to each partition's leader and connects again when a connection breaks or
/// leadership moves, retrying the request with a backoff. A publish that has no
/// acknowledgement within the [request timeout](Self::with_request_timeout) (5 s) fails as
/// transient and the relay retries it on a new connection to the leader (the one it was sent
/// on may have gone silent without closing). [`health`](Publisher::health) is disconnected from a
/// publish that failed to reach the broker (or timed out) until one reaches it again.
#[derive(Debug, Clone)]
pub struct KafkaPublisher {
    shared: Arc<Shared>,
    prefix: String,
    encoding: Encoding,
    max_batch_bytes: usize,
    request_timeout: Duration,
}

/// The client and what clones learned about the cluster.
struct Shared {
    client: Client,
    /// Each topic's partition count, and when it was read.
    partitions: Mutex<HashMap<String, (i32, Instant)>>,
    /// A client per partition written to, each on a connection to the partition's leader.
    leaders: Mutex<HashMap<(String, i32), Arc<PartitionClient>>>,
    connected: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Why a Kafka publish failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaPublishError {
    /// The topic does not exist (yet).
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    /// The broker did not acknowledge within the publisher's request timeout (it could not be
    /// reached, or did not answer).
    #[error("no acknowledgement within {0:?}")]
    Timeout(Duration),
    /// The broker refused the request, or it could not be made.
    #[error("kafka request failed")]
    Client(#[source] KafkaError),
}

/// Kafka's default partitioner for a keyed record: murmur2 of the key, made positive, modulo
/// the partition count (Java's `Utils.toPositive(Utils.murmur2(key)) % numPartitions`).
fn partition_for(key: &[u8], partitions: i32) -> i32 {
    let positive = (murmur2(key) & 0x7fff_ffff) as i32;
    positive % partitions.max(1)
}

/// Kafka's murmur2 hash (seed `0x9747b28c`), as its Java client computes it.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // The Java client hashes an int length; a key longer than that cannot be sent anyway.
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// Why `topic` cannot be a Kafka topic name, if it cannot.
fn topic_problem(topic: &str) -> Option<String> {
    if topic.is_empty() {
        return Some("empty".to_owned());
    }
    if topic == "." || topic == ".." {
        return Some(format!("{topic:?} is not allowed"));
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Some(format!(
            "{} bytes long, more than the {MAX_TOPIC_LEN} Kafka allows",
            topic.len()
        ));
    }
    topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .map(|c| format!("{topic:?} contains {c:?}; a topic holds only ASCII letters, digits, '.', '_' and '-'"))
}

/// What `record` costs in a record batch, near enough to keep batches under the broker's limit.
fn record_size(record: &Record) -> usize {
    record.approximate_size() + RECORD_OVERHEAD + HEADER_OVERHEAD * record.headers.len()
}

/// Whether `error` means the broker was not reached (rather than a refusal it answered with).
fn unreached(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::Connection(_) | KafkaError::Request(_) | KafkaError::RetryFailed(_) | KafkaError::Timeout
    )
}

/// The record for `event` in `encoding`.
fn record(event: &Event, encoding: Encoding) -> Record {
    let mut headers = BTreeMap::new();
    headers.insert("event_id".to_owned(), event.event_id.to_string().into_bytes());
    headers.insert("event_type".to_owned(), event.event_type.clone().into_bytes());
    headers.insert("aggregate_type".to_owned(), event.aggregate_type.clone().into_bytes());
    headers.insert("content-type".to_owned(), encoding.content_type().as_bytes().to_vec());
    for header in wire::headers(event, encoding, SPELLING) {
        headers.insert(header.name.into_owned(), header.value.into_owned().into_bytes());
    }
    let millis = event.timestamp.unix_timestamp_nanos() / 1_000_000;
    let timestamp = i64::try_from(millis)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or_default();
    Record {
        key: Some(event.aggregate_id.clone().into_bytes()),
        value: Some(encoding.encode(event)),
        headers,
        timestamp,
    }
}

impl KafkaPublisher {
    /// The default bound on one produce request's records: below the broker's default
    /// `message.max.bytes` (1,048,588), which bounds a record batch.
    pub const DEFAULT_MAX_BATCH_BYTES: usize = 1_000_000;

    /// The default bound on one publish, from reading metadata to the acknowledgement: below the
    /// relay's default publish timeout (10 s), so the dead letter names the cause and the
    /// publisher knows the broker was not reached.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

    /// Connects to the cluster through `bootstrap_brokers` (`"127.0.0.1:9092"`), reading its
    /// metadata once, with the client id `palisade-outbox` and a client that gives up a step of
    /// a request after retrying it for 5 s; see [reconnection](KafkaPublisher#reconnection).
    ///
    /// # Errors
    ///
    /// When no bootstrap broker answers within that time.
    pub async fn connect<S: Into<String>>(bootstrap_brokers: impl IntoIterator<Item = S>) -> Result<Self, KafkaError> {
        let client = ClientBuilder::new(bootstrap_brokers.into_iter().map(Into::into).collect())
            .client_id("palisade-outbox")
            .backoff_config(BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
                deadline: Some(RETRY_DEADLINE),
            })
            .build()
            .await?;
        Ok(Self::new(client))
    }

    /// A publisher on a client of your own (TLS, SASL, another backoff), with no topic prefix
    /// and the envelope encoding.
    pub fn new(client: Client) -> Self {
        Self {
            shared: Arc::new(Shared {
                client,
                partitions: Mutex::new(HashMap::new()),
                leaders: Mutex::new(HashMap::new()),
                connected: AtomicBool::new(true),
            }),
            prefix: String::new(),
            encoding: Encoding::default(),
            max_batch_bytes: Self::DEFAULT_MAX_BATCH_BYTES,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Prepends `prefix` to every topic (e.g. `events.` to publish `Order` on `events.Order`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the encoding (the envelope by default).
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The most one produce request's records may take, by their key, value and header bytes
    /// and a small overhead each (default 1,000,000): keep it under the broker's
    /// `message.max.bytes` and the topic's `max.message.bytes`. A single event larger than
    /// this is dead-lettered.
    pub fn with_max_batch_bytes(mut self, max_batch_bytes: usize) -> Self {
        self.max_batch_bytes = max_batch_bytes;
        self
    }

    /// How long one publish may take, from reading the topic's metadata to the broker's
    /// acknowledgement (default 5 s). A publish that takes longer fails as transient and the
    /// publisher reports the broker unreachable; keep it below the relay's `publish_timeout`
    /// (default 10 s).
    pub fn with_request_timeout(mut self, request_timeout: Duration) -> Self {
        self.request_timeout = request_timeout;
        self
    }

    /// Notes whether the broker was reached, and makes `error` a publish error: permanent when
    /// the broker will never take the records (`single` says the request held one record).
    fn failed(&self, error: KafkaError, single: bool) -> PublishError {
        self.shared.connected.store(!unreached(&error), Ordering::Relaxed);
        let permanent = match &error {
            KafkaError::ServerError { protocol_error, .. } => match protocol_error {
                ProtocolError::InvalidTopicException | ProtocolError::InvalidRecord | ProtocolError::CorruptMessage => {
                    true
                }
                ProtocolError::MessageTooLarge | ProtocolError::RecordListTooLarge => single,
                _ => false,
            },
            _ => false,
        };
        let error = KafkaPublishError::Client(error);
        if permanent {
            PublishError::permanent(error)
        } else {
            PublishError::transient(error)
        }
    }

    /// The number of partitions of `topic`, from the metadata read at most five minutes ago.
    async fn partition_count(&self, topic: &str) -> Result<i32, PublishError> {
        let now = Instant::now();
        if let Some(&(count, read)) = self.shared.partitions.lock().unpoison().get(topic)
            && now.duration_since(read) < METADATA_MAX_AGE
        {
            return Ok(count);
        }
        let topics = self
            .shared
            .client
            .list_topics()
            .await
            .map_err(|error| self.failed(error, false))?;
        let mut partitions = self.shared.partitions.lock().unpoison();
        partitions.clear();
        for listed in topics {
            let count = i32::try_from(listed.partitions.len()).unwrap_or(i32::MAX);
            if count > 0 {
                partitions.insert(listed.name, (count, now));
            }
        }
        partitions
            .get(topic)
            .map(|&(count, _)| count)
            .ok_or_else(|| PublishError::transient(KafkaPublishError::UnknownTopic(topic.to_owned())))
    }

    /// The client of `topic`'s `partition`, connected to its leader.
    async fn leader(&self, topic: &str, partition: i32) -> Result<Arc<PartitionClient>, PublishError> {
        let key = (topic.to_owned(), partition);
        if let Some(client) = self.shared.leaders.lock().unpoison().get(&key) {
            return Ok(Arc::clone(client));
        }
        let client = self
            .shared
            .client
            .partition_client(topic, partition, UnknownTopicHandling::Error)
            .await
            .map_err(|error| self.failed(error, false))?;
        let client = Arc::new(client);
        self.shared.leaders.lock().unpoison().insert(key, Arc::clone(&client));
        Ok(client)
    }

    /// Forgets what was learned about `topic`, after the broker said it does not know it (it
    /// was deleted, or the broker lost it), so the next publish reads the metadata again.
    fn forget(&self, topic: &str) {
        self.shared.partitions.lock().unpoison().remove(topic);
        self.forget_leaders(topic);
    }

    /// Drops the connections to `topic`'s leaders, so the next publish opens new ones.
    fn forget_leaders(&self, topic: &str) {
        self.shared.leaders.lock().unpoison().retain(|(t, _), _| t != topic);
    }

    /// Produces `records`, all keyed by `key`, to `topic` with `acks=all`, within the request
    /// timeout.
    async fn produce(&self, topic: &str, key: &str, records: Vec<Record>) -> Result<(), PublishError> {
        match tokio::time::timeout(self.request_timeout, self.produce_untimed(topic, key, records)).await {
            Ok(result) => result,
            Err(_) => {
                // A connection gone silent without closing (a failover, a path that drops
                // every packet) fails nothing until the kernel gives up on it, minutes later:
                // the next publish goes out on a new one.
                self.forget_leaders(topic);
                self.shared.connected.store(false, Ordering::Relaxed);
                Err(PublishError::transient(KafkaPublishError::Timeout(
                    self.request_timeout,
                )))
            }
        }
    }

    async fn produce_untimed(&self, topic: &str, key: &str, records: Vec<Record>) -> Result<(), PublishError> {
        let partitions = self.partition_count(topic).await?;
        let leader = self.leader(topic, partition_for(key.as_bytes(), partitions)).await?;
        let single = records.len() == 1;
        match leader.produce(records, Compression::NoCompression).await {
            Ok(_) => {
                self.shared.connected.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                if matches!(
                    error,
                    KafkaError::ServerError {
                        protocol_error: ProtocolError::UnknownTopicOrPartition,
                        ..
                    }
                ) {
                    self.forget(topic);
                }
                Err(self.failed(error, single))
            }
        }
    }

    /// Sends the longest start of `events` that goes to one partition and fits in one batch,
    /// and says how many events that was (at least one) and whether the broker took them.
    async fn send_batch(&self, events: &[Event]) -> (usize, Result<(), PublishError>) {
        let Some(first) = events.first() else {
            return (0, Ok(()));
        };
        let unsendable = |field, reason| PublishError::permanent(UnsendableField { field, reason });
        let topic = format!("{}{}", self.prefix, first.destination);
        if let Some(problem) = topic_problem(&topic) {
            return (1, Err(unsendable("topic", problem)));
        }
        let mut records = Vec::new();
        let mut total = 0;
        for event in events {
            if event.destination != first.destination || event.aggregate_id != first.aggregate_id {
                break;
            }
            let record = record(event, self.encoding);
            let size = record_size(&record);
            if size > self.max_batch_bytes && records.is_empty() {
                return (
                    1,
                    Err(unsendable(
                        "record",
                        format!(
                            "about {size} bytes with its key and headers, more than the {} a batch may hold",
                            self.max_batch_bytes
                        ),
                    )),
                );
            }
            if total + size > self.max_batch_bytes {
                break;
            }
            total += size;
            records.push(record);
        }
        let count = records.len();
        (count, self.produce(&topic, &first.aggregate_id, records).await)
    }
}

impl Publisher for KafkaPublisher {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        self.send_batch(std::slice::from_ref(event)).await.1
    }

    /// One produce request (one record batch, appended whole or not at all) for the run's
    /// events to one partition, split where it would exceed the batch size; batches go one
    /// after the other. A batch that fails fails its first event and ends the run.
    fn publish_run<'a>(&'a self, events: &'a [Event]) -> impl Stream<Item = Result<(), PublishError>> + Send + 'a {
        stream::unfold(Some(events), move |rest| async move {
            let rest = rest.filter(|rest| !rest.is_empty())?;
            let (count, result) = self.send_batch(rest).await;
            let (results, next) = match result {
                Ok(()) => ((0..count).map(|_| Ok(())).collect::<Vec<_>>(), Some(&rest[count..])),
                Err(error) => (vec![Err(error)], None),
            };
            Some((stream::iter(results), next))
        })
        .flatten()
    }

    /// Disconnected after a publish failed to reach the broker, until one reaches it again.
    fn health(&self) -> PublisherHealth {
        if self.shared.connected.load(Ordering::Relaxed) {
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

    #[test]
    fn murmur2_matches_the_java_client() {
        // The cases of Kafka's own `UtilsTest.testMurmur2`.
        for (key, expected) in [
            ("21", -973_932_308_i32),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            ("abc", 479_470_107),
        ] {
            assert_eq!(murmur2(key.as_bytes()) as i32, expected, "{key}");
        }
        assert_eq!(partition_for(b"foobar", 1), 0);
        let p = partition_for(b"foobar", 7);
        assert_eq!(p, ((-790_332_482_i32) & 0x7fff_ffff) % 7);
        assert!((0..7).contains(&p));
    }

    #[test]
    fn topic_names_kafka_refuses_are_found_before_sending() {
        assert_eq!(topic_problem("orders.created-v1_2"), None);
        assert_eq!(topic_problem(&"a".repeat(249)), None);
        assert_eq!(topic_problem(""), Some("empty".to_owned()));
        assert_eq!(topic_problem(".."), Some("\"..\" is not allowed".to_owned()));
        assert_eq!(
            topic_problem(&"a".repeat(250)),
            Some("250 bytes long, more than the 249 Kafka allows".to_owned())
        );
        assert_eq!(
            topic_problem("orders created"),
            Some(
                "\"orders created\" contains ' '; a topic holds only ASCII letters, digits, '.', '_' and '-'"
                    .to_owned()
            )
        );
        assert!(topic_problem("ordérs").is_some());
    }

    #[test]
    fn a_record_is_keyed_by_the_aggregate_and_carries_the_trace_in_its_headers() {
        let client_free = |encoding| {
            let event = Event::new("OrderCreated", "Order", "o1", json!({"total": 5}))
                .with_correlation_id("corr-1")
                .with_trace_context(TraceContext {
                    traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                    tracestate: None,
                });
            (event.clone(), record(&event, encoding))
        };
        let (event, record) = client_free(Encoding::Envelope);
        assert_eq!(record.key.as_deref(), Some(&b"o1"[..]));
        assert_eq!(record.value, Some(event.to_json()));
        assert_eq!(
            record.timestamp.timestamp_micros(),
            i64::try_from(event.timestamp.unix_timestamp_nanos() / 1_000_000 * 1_000).unwrap()
        );
        let header = |record: &Record, name: &str| String::from_utf8(record.headers[name].clone()).unwrap();
        assert_eq!(header(&record, "event_id"), event.event_id.to_string());
        assert_eq!(header(&record, "event_type"), "OrderCreated");
        assert_eq!(header(&record, "aggregate_type"), "Order");
        assert_eq!(header(&record, "content-type"), "application/json");
        assert_eq!(
            header(&record, "traceparent"),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(header(&record, "correlation_id"), "corr-1");
        assert!(!record.headers.contains_key("ce_id"));

        let (event, binary) = client_free(Encoding::CloudEventsBinary);
        assert_eq!(binary.value.as_deref(), Some(&br#"{"total":5}"#[..]));
        assert_eq!(header(&binary, "ce_id"), event.event_id.to_string());
        assert_eq!(header(&binary, "ce_specversion"), "1.0");
        assert_eq!(header(&binary, "ce_type"), "OrderCreated");
        assert_eq!(header(&binary, "ce_subject"), "o1");
        assert_eq!(header(&binary, "content-type"), "application/json");
    }
}
