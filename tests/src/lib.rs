//! Support for palisade's integration tests: connections to the real services
//! the backend tests use, each isolated per test.
//!
//! | service | environment variable | default |
//! |---|---|---|
//! | PostgreSQL | `DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/test` |
//! | Redis | `REDIS_URL` | `redis://127.0.0.1:6379` |
//! | NATS (JetStream) | `NATS_URL` | `nats://127.0.0.1:4222` |
//! | RabbitMQ | `AMQP_URL` | `amqp://guest:guest@127.0.0.1:5672/%2f` |
//! | Kafka (tansu, from `.ci/kafka`) | `KAFKA_URL` | `127.0.0.1:9092` |
//!
//! Each fixture gets a name no other test uses: a Postgres schema (set as the
//! pool's `search_path`), a Redis key prefix, a NATS subject prefix, a
//! RabbitMQ queue, a Kafka topic. When a service is unreachable the fixture constructor
//! prints why and returns `None`, so the test returns early as skipped;
//! with `PALISADE_REQUIRE_SERVICES=1` (as CI sets) it panics instead, so a
//! missing service fails the run.
//!
//! Fault tests put a [`fault_proxy::FaultProxy`] between the code under test
//! and a service: [`upstream_of`] gives a service URL's address to forward
//! to, and [`via`] the same URL pointing at the proxy.
//!
//! ```no_run
//! # async fn example() {
//! let Some(pg) = palisade_tests::Postgres::connect("my_test").await else { return };
//! sqlx::query("CREATE TABLE t (id int)").execute(&pg.pool).await.unwrap();
//! pg.cleanup().await;
//! # }
//! ```
//!
//! [`contract`] holds the tower contract suite every protocol-agnostic layer
//! runs through.

pub mod contract;

use std::fmt::Display;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Executor;
use sqlx::postgres::{PgPool, PgPoolOptions};

pub mod fault_proxy;

/// How long a fixture waits for its service before calling it unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Polls `condition` every 20 ms until it holds; fails the test, naming
/// `what` it waited for, when it does not hold within `within`. For states a
/// live service reaches on its own time (a relay draining, a server process
/// ending), which paused time cannot drive.
pub async fn wait_until<F: Future<Output = bool>>(what: &str, within: Duration, mut condition: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "{what} in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The variable that turns "skip when a service is down" into "fail".
pub const REQUIRE_SERVICES: &str = "PALISADE_REQUIRE_SERVICES";

/// True when `PALISADE_REQUIRE_SERVICES=1`: a missing service fails the test.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES).is_ok_and(|v| v == "1")
}

/// A name unique to this process and call, usable as an SQL identifier, a
/// Redis key part, a NATS subject token and a queue name.
pub fn unique_name(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let test: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("palisade_{test}_{}_{n}_{nanos}", std::process::id())
}

/// Where the host and port of `url` (`scheme://[user[:password]@]host[:port][/...]`) are.
fn authority(url: &str) -> std::ops::Range<usize> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?']).map_or(url.len(), |i| start + i);
    let host = url[start..end].rfind('@').map_or(start, |i| start + i + 1);
    host..end
}

/// The address of the service `url` names, its scheme's `default_port` when it names none.
///
/// # Panics
/// When the host does not resolve.
pub fn upstream_of(url: &str, default_port: u16) -> SocketAddr {
    let host_port = &url[authority(url)];
    let with_port = if host_port
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
    {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("{url} names no address"))
}

/// `url` with its host and port replaced by `proxy`'s (user, path and query kept).
pub fn via(url: &str, proxy: &fault_proxy::FaultProxy) -> String {
    let range = authority(url);
    format!("{}{}{}", &url[..range.start], proxy.addr(), &url[range.end..])
}

fn url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// The variable naming the file where skipped tests are recorded, one line
/// each; `.ci/test` sets it and prints the summary after `cargo test`.
pub const SKIP_LOG: &str = "PALISADE_SKIP_LOG";

/// Marks the running test as skipped for `reason`: prints
/// `skipping <test>: <reason>` past libtest's output capture (so it shows
/// even though the test passes), and appends `<binary>\t<test>\t<reason>` to
/// the file named by `PALISADE_SKIP_LOG`, if set, so a run can end with how
/// many tests were skipped and why. The caller then returns early.
pub fn skip(reason: impl Display) {
    use std::io::Write;
    // libtest names each test's thread after the test; a test's runtime
    // (current-thread or multi-thread) runs its body on that thread.
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|stem| stem.to_string_lossy().into_owned()))
        .map(|stem| {
            stem.rsplit_once('-')
                .map_or(stem.clone(), |(name, _hash)| name.to_owned())
        })
        .unwrap_or_default();
    let reason = reason.to_string().replace(['\t', '\n'], " ");
    // Written to the stream itself: `eprintln!` would be captured.
    let _ = writeln!(std::io::stderr(), "skipping {binary}::{test}: {reason}");
    if let Some(path) = std::env::var_os(SKIP_LOG) {
        let line = format!("{binary}\t{test}\t{reason}\n");
        // One write of one short line to a file opened for appending: lines
        // of concurrent tests and binaries do not interleave.
        if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

/// Reports a service that could not be reached: a skip, or a panic when
/// services are required.
fn unreachable<T>(service: &str, url: &str, error: impl Display) -> Option<T> {
    if services_required() {
        panic!("{service} at {url} is unreachable ({error}) and {REQUIRE_SERVICES}=1");
    }
    skip(format_args!("{service} at {url} is unreachable: {error}"));
    None
}

async fn within<T, E: Display>(service: &str, url: &str, fut: impl Future<Output = Result<T, E>>) -> Option<T> {
    match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(e)) => unreachable(service, url, e),
        Err(_) => unreachable(service, url, format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}

/// A PostgreSQL pool whose connections use a schema of their own.
#[derive(Debug)]
pub struct Postgres {
    /// Connections with `search_path` set to [`Postgres::schema`].
    pub pool: PgPool,
    /// The test's own schema.
    pub schema: String,
    /// The server's URL.
    pub url: String,
}

impl Postgres {
    /// Connects to `DATABASE_URL` and creates a fresh schema for `test`.
    pub async fn connect(test: &str) -> Option<Self> {
        let url = url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test");
        let schema = unique_name(test);
        let search_path = format!("SET search_path TO {schema}");
        let connect = async {
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(CONNECT_TIMEOUT)
                .connect(&url)
                .await?;
            admin.execute(format!("CREATE SCHEMA {schema}").as_str()).await?;
            admin.close().await;
            PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(CONNECT_TIMEOUT)
                .after_connect(move |conn, _| {
                    let search_path = search_path.clone();
                    Box::pin(async move {
                        conn.execute(search_path.as_str()).await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await
        };
        let pool = within("PostgreSQL", &url, connect).await?;
        Some(Self { pool, schema, url })
    }

    /// The server's URL with [`Postgres::schema`] as the `search_path` of every
    /// connection (`options=-c search_path=...`), for code that opens its own pool.
    pub fn url_in_schema(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{separator}options=-c%20search_path%3D{}", self.url, self.schema)
    }

    /// Drops the schema and everything in it.
    pub async fn cleanup(self) {
        let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        self.pool.execute(drop.as_str()).await.expect("drop the test schema");
        self.pool.close().await;
    }
}

/// A Redis connection and a key prefix of the test's own.
#[derive(Clone)]
pub struct Redis {
    /// A multiplexed connection, cheap to clone.
    pub conn: redis::aio::MultiplexedConnection,
    /// The client, for opening more connections.
    pub client: redis::Client,
    /// Every key the test writes starts with this (it ends in `:`).
    pub prefix: String,
    /// The server's URL.
    pub url: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .field("url", &self.url)
            .finish()
    }
}

impl Redis {
    /// Connects to `REDIS_URL` with a fresh key prefix for `test`.
    pub async fn connect(test: &str) -> Option<Self> {
        let url = url("REDIS_URL", "redis://127.0.0.1:6379");
        let connect = async {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await?;
            Ok::<_, redis::RedisError>((client, conn))
        };
        let (client, conn) = within("Redis", &url, connect).await?;
        Some(Self {
            conn,
            client,
            prefix: format!("{}:", unique_name(test)),
            url,
        })
    }

    /// The test's key for `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Deletes every key under the prefix; returns how many there were.
    pub async fn cleanup(mut self) -> usize {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query_async(&mut self.conn)
            .await
            .expect("list the test's keys");
        if keys.is_empty() {
            return 0;
        }
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<usize>(&mut self.conn)
            .await
            .expect("delete the test's keys")
    }
}

/// A Redis Cluster connection and a key prefix of the test's own.
#[derive(Clone)]
pub struct RedisCluster {
    /// A cluster connection: routes each command to the node owning its key's slot.
    pub conn: redis::cluster_async::ClusterConnection,
    /// Every key the test writes starts with this (it ends in `:`).
    pub prefix: String,
    /// The nodes' URLs, comma-separated.
    pub urls: String,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("prefix", &self.prefix)
            .field("urls", &self.urls)
            .finish()
    }
}

impl RedisCluster {
    /// Connects to the cluster of `REDIS_CLUSTER_URLS` (comma-separated;
    /// default the three nodes `.ci/redis-cluster` starts on ports
    /// 7000-7002) with a fresh key prefix for `test`.
    pub async fn connect(test: &str) -> Option<Self> {
        let urls = url(
            "REDIS_CLUSTER_URLS",
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002",
        );
        let connect = async {
            let client = redis::cluster::ClusterClient::new(urls.split(',').map(str::trim).collect::<Vec<_>>())?;
            let mut conn = client.get_async_connection().await?;
            let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await?;
            if !info.contains("cluster_state:ok") {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::ClusterDown,
                    "the cluster's state is not ok",
                )));
            }
            Ok::<_, redis::RedisError>(conn)
        };
        let conn = within("Redis Cluster", &urls, connect).await?;
        Some(Self {
            conn,
            prefix: format!("{}:", unique_name(test)),
            urls,
        })
    }

    /// The test's key for `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// A NATS client and a subject prefix of the test's own.
#[derive(Debug, Clone)]
pub struct Nats {
    /// The client.
    pub client: async_nats::Client,
    /// Every subject the test uses starts with this (it ends in `.`).
    pub prefix: String,
    /// A name for the test's JetStream stream.
    pub stream: String,
    /// The server's URL.
    pub url: String,
}

impl Nats {
    /// Connects to `NATS_URL` with a fresh subject prefix for `test`.
    pub async fn connect(test: &str) -> Option<Self> {
        let url = url("NATS_URL", "nats://127.0.0.1:4222");
        let name = unique_name(test);
        let connect = async {
            let client = async_nats::ConnectOptions::new()
                .connection_timeout(CONNECT_TIMEOUT)
                .retry_on_initial_connect()
                .connect(url.as_str())
                .await?;
            client.flush().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(client)
        };
        let client = within("NATS", &url, connect).await?;
        Some(Self {
            client,
            prefix: format!("{name}."),
            stream: name.to_uppercase(),
            url,
        })
    }

    /// The test's subject for `name`.
    pub fn subject(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Deletes the test's JetStream stream if it made one.
    pub async fn cleanup(self) {
        let js = async_nats::jetstream::new(self.client.clone());
        let _ = js.delete_stream(&self.stream).await;
        self.client.flush().await.expect("flush NATS");
    }
}

/// A RabbitMQ connection and a queue name of the test's own.
#[derive(Debug)]
pub struct RabbitMq {
    /// The connection.
    pub connection: lapin::Connection,
    /// A queue name no other test uses (declare it as the test needs).
    pub queue: String,
    /// The server's URL.
    pub url: String,
}

impl RabbitMq {
    /// Connects to `AMQP_URL` with a fresh queue name for `test`.
    pub async fn connect(test: &str) -> Option<Self> {
        let url = url("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        let connect = lapin::Connection::connect(&url, lapin::ConnectionProperties::default());
        let connection = within("RabbitMQ", &url, connect).await?;
        Some(Self {
            connection,
            queue: unique_name(&format!("{test}_q")),
            url,
        })
    }

    /// Deletes the test's queue and closes the connection.
    pub async fn cleanup(self) {
        let channel = self.connection.create_channel().await.expect("open a channel");
        let _ = channel
            .queue_delete(&self.queue, lapin::options::QueueDeleteOptions::default())
            .await;
        self.connection.close(200, "done").await.expect("close the connection");
    }
}

/// A Kafka client and a topic name of the test's own.
#[derive(Debug, Clone)]
pub struct Kafka {
    /// The client (rskafka), which gives up a request after [`CONNECT_TIMEOUT`].
    pub client: Arc<rskafka::client::Client>,
    /// A topic name no other test uses (create it with [`Kafka::create_topic`]).
    pub topic: String,
    /// The bootstrap broker, `host:port`.
    pub url: String,
}

/// A record read back from Kafka, with its partition and offset.
#[derive(Debug, Clone)]
pub struct KafkaRecord {
    /// The partition it is in.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// The record.
    pub record: rskafka::record::Record,
}

impl KafkaRecord {
    /// The header `name` as text, if the record has it.
    pub fn header(&self, name: &str) -> Option<String> {
        self.record
            .headers
            .get(name)
            .map(|value| String::from_utf8(value.clone()).expect("a UTF-8 header"))
    }
}

impl Kafka {
    /// Connects to `KAFKA_URL` (`host:port`, or `kafka://host:port`) with a fresh topic name for `test`.
    pub async fn connect(test: &str) -> Option<Self> {
        let url = url("KAFKA_URL", "127.0.0.1:9092");
        let bootstrap = url.trim_start_matches("kafka://").to_owned();
        let client = within("Kafka", &url, Self::client(&bootstrap)).await?;
        Some(Self {
            client: Arc::new(client),
            topic: unique_name(test),
            url: bootstrap,
        })
    }

    /// A client of `bootstrap` that gives up a request after [`CONNECT_TIMEOUT`].
    pub async fn client(bootstrap: &str) -> Result<rskafka::client::Client, rskafka::client::error::Error> {
        rskafka::client::ClientBuilder::new(vec![bootstrap.to_owned()])
            .backoff_config(rskafka::BackoffConfig {
                init_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(500),
                base: 2.0,
                deadline: Some(CONNECT_TIMEOUT),
            })
            .build()
            .await
    }

    /// Creates `topic` with `partitions` partitions (one replica).
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        self.client
            .controller_client()
            .expect("a controller client")
            .create_topic(topic, partitions, 1, 5_000)
            .await
            .unwrap_or_else(|e| panic!("create topic {topic}: {e}"));
    }

    /// Every record of `topic`, partition by partition, each in offset order.
    pub async fn records(&self, topic: &str) -> Vec<KafkaRecord> {
        use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
        let listed = self.client.list_topics().await.expect("list the topics");
        let partitions = listed
            .into_iter()
            .find(|t| t.name == topic)
            .unwrap_or_else(|| panic!("topic {topic} exists"))
            .partitions;
        let mut records = Vec::new();
        for partition in partitions {
            let client = self
                .client
                .partition_client(topic, partition, UnknownTopicHandling::Retry)
                .await
                .expect("a partition client");
            let end = client.get_offset(OffsetAt::Latest).await.expect("the latest offset");
            let mut offset = client
                .get_offset(OffsetAt::Earliest)
                .await
                .expect("the earliest offset");
            while offset < end {
                let (batch, _) = client
                    .fetch_records(offset, 1..10_000_000, 1_000)
                    .await
                    .expect("fetch records");
                assert!(!batch.is_empty(), "records below the high watermark {end} at {offset}");
                for read in batch {
                    offset = read.offset + 1;
                    records.push(KafkaRecord {
                        partition,
                        offset: read.offset,
                        record: read.record,
                    });
                }
            }
        }
        records
    }

    /// Deletes `topics`, made by the test.
    pub async fn cleanup(self, topics: &[&str]) {
        let controller = self.client.controller_client().expect("a controller client");
        for topic in topics {
            controller
                .delete_topic(*topic, 5_000)
                .await
                .unwrap_or_else(|e| panic!("delete topic {topic}: {e}"));
        }
    }
}
