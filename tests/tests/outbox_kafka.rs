//! The outbox's Kafka publisher against a live Kafka-compatible broker (tansu, installed and
//! started by `.ci/kafka`): records keyed by aggregate with the event id and trace context in
//! their headers, runs as one batch, and two relays through a broker outage on a private
//! broker of the test's own.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use palisade_outbox::postgres::{PgStore, migrate};
use palisade_outbox::{Encoding, Event, Publisher, PublisherHealth, Relay, RelayHandle, TraceContext, stage};
use palisade_outbox::{KafkaPublishError, KafkaPublisher, UnsendableField};
use palisade_tests::fault_proxy::FaultProxy;
use palisade_tests::{Kafka, KafkaRecord, Postgres, services_required, unique_name, wait_until};
use serde_json::json;
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn traced(event: Event) -> Event {
    event.with_correlation_id("corr-7").with_trace_context(TraceContext {
        traceparent: TRACEPARENT.to_owned(),
        tracestate: Some("vendor=1".to_owned()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_keyed_by_aggregate_and_carry_the_event_id_and_trace_context_in_headers() {
    let Some(kafka) = Kafka::connect("kafka_headers").await else {
        return;
    };
    kafka.create_topic(&kafka.topic, 3).await;
    let publisher = KafkaPublisher::connect([kafka.url.clone()]).await.unwrap();
    let events: Vec<Event> = (0..6)
        .map(|i| {
            traced(Event::new(
                "OrderCreated",
                "Order",
                format!("ord_{}", i % 3),
                json!({ "i": i }),
            ))
            .with_destination(kafka.topic.clone())
        })
        .collect();
    for event in &events {
        publisher.publish(event).await.unwrap();
    }
    assert_eq!(publisher.health(), PublisherHealth::Connected);

    let records = kafka.records(&kafka.topic).await;
    assert_eq!(records.len(), events.len(), "every event once");
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    for event in &events {
        let record = records
            .iter()
            .find(|r| r.header("event_id") == Some(event.event_id.to_string()))
            .expect("the event's record");
        assert_eq!(record.record.key.as_deref(), Some(event.aggregate_id.as_bytes()));
        let partition = *partition_of
            .entry(event.aggregate_id.clone())
            .or_insert(record.partition);
        assert_eq!(record.partition, partition, "one aggregate, one partition");
        let value: Event = serde_json::from_slice(record.record.value.as_deref().unwrap()).unwrap();
        assert_eq!(value, *event);
        assert_eq!(record.header("event_type").as_deref(), Some("OrderCreated"));
        assert_eq!(record.header("aggregate_type").as_deref(), Some("Order"));
        assert_eq!(record.header("content-type").as_deref(), Some("application/json"));
        assert_eq!(record.header("traceparent").as_deref(), Some(TRACEPARENT));
        assert_eq!(record.header("tracestate").as_deref(), Some("vendor=1"));
        assert_eq!(record.header("correlation_id").as_deref(), Some("corr-7"));
        assert_eq!(
            record.header("ce_id"),
            None,
            "no CloudEvents attributes outside binary mode"
        );
        assert_eq!(
            record.record.timestamp.timestamp_millis(),
            i64::try_from(event.timestamp.unix_timestamp_nanos() / 1_000_000).unwrap()
        );
    }

    // CloudEvents binary mode: the payload is the value, the attributes are `ce_` headers.
    let binary_topic = format!("{}_ce", kafka.topic);
    kafka.create_topic(&binary_topic, 1).await;
    let binary = KafkaPublisher::connect([kafka.url.clone()])
        .await
        .unwrap()
        .with_encoding(Encoding::CloudEventsBinary);
    let event = traced(Event::new("OrderPaid", "Order", "ord_9", json!({ "paid": true })))
        .with_version(4)
        .with_destination(binary_topic.clone());
    binary.publish(&event).await.unwrap();
    let records = kafka.records(&binary_topic).await;
    let [record] = records.as_slice() else {
        panic!("one record, got {}", records.len())
    };
    assert_eq!(record.record.value.as_deref(), Some(&br#"{"paid":true}"#[..]));
    for (name, value) in [
        ("ce_specversion", "1.0".to_owned()),
        ("ce_id", event.event_id.to_string()),
        ("ce_source", "/Order".to_owned()),
        ("ce_type", "OrderPaid".to_owned()),
        ("ce_subject", "ord_9".to_owned()),
        ("ce_aggregateversion", "4".to_owned()),
        ("ce_correlationid", "corr-7".to_owned()),
        ("ce_traceparent", TRACEPARENT.to_owned()),
        ("ce_tracestate", "vendor=1".to_owned()),
        ("content-type", "application/json".to_owned()),
        ("traceparent", TRACEPARENT.to_owned()),
        ("correlation_id", "corr-7".to_owned()),
    ] {
        assert_eq!(record.header(name), Some(value), "{name}");
    }
    let topic = kafka.topic.clone();
    kafka.cleanup(&[&topic, &binary_topic]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_in_order_and_ends_at_an_event_the_broker_cannot_take() {
    let Some(kafka) = Kafka::connect("kafka_run").await else {
        return;
    };
    kafka.create_topic(&kafka.topic, 2).await;
    let publisher = KafkaPublisher::connect([kafka.url.clone()]).await.unwrap();
    let event = |version: i64| {
        Event::new("OrderChanged", "Order", "ord_1", json!({ "v": version }))
            .with_version(version)
            .with_destination(kafka.topic.clone())
    };
    let run: Vec<Event> = (1..=5).map(event).collect();
    let results: Vec<_> = publisher.publish_run(&run).collect().await;
    assert_eq!(results.len(), 5, "one result per event");
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // A topic Kafka refuses to name ends the run there: permanent, nothing after it sent.
    let run = [event(6), event(7).with_destination("no spaces allowed"), event(8)];
    let results: Vec<_> = publisher.publish_run(&run).collect().await;
    assert_eq!(results.len(), 2, "the run ends at the failed event");
    assert!(results[0].is_ok());
    let refused = results[1].as_ref().unwrap_err();
    assert!(!refused.is_transient());
    let field = std::error::Error::source(refused)
        .and_then(|e| e.downcast_ref::<UnsendableField>())
        .expect("an unsendable field");
    assert_eq!(field.field, "topic");

    // A topic that does not exist (yet) is transient.
    let missing = event(9).with_destination(unique_name("kafka_missing"));
    let error = publisher.publish(&missing).await.unwrap_err();
    assert!(error.is_transient());
    let unknown = std::error::Error::source(&error).and_then(|e| e.downcast_ref::<KafkaPublishError>());
    assert!(matches!(unknown, Some(KafkaPublishError::UnknownTopic(_))), "{error}");

    // A record larger than a batch may hold is dead-lettered, alone.
    let small = KafkaPublisher::connect([kafka.url.clone()])
        .await
        .unwrap()
        .with_max_batch_bytes(1_000);
    let big = event(10).with_version(10);
    let big = Event {
        payload: json!({ "blob": "x".repeat(1_000) }),
        ..big
    };
    let error = small.publish(&big).await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    // A run larger than a batch is split, and every event still goes, in order.
    let split: Vec<Event> = (11..=14).map(event).collect();
    let results: Vec<_> = small.publish_run(&split).collect().await;
    assert!(results.iter().all(Result::is_ok) && results.len() == 4, "{results:?}");

    let versions: Vec<i64> = kafka
        .records(&kafka.topic)
        .await
        .iter()
        .map(|r| {
            serde_json::from_slice::<Event>(r.record.value.as_deref().unwrap())
                .unwrap()
                .version
        })
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 11, 12, 13, 14], "one partition, in order");
    let topic = kafka.topic.clone();
    kafka.cleanup(&[&topic]).await;
}

/// The tansu binary: `TANSU`, or where `.ci/kafka` installs it.
fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return PathBuf::from(path);
    }
    let root = std::env::var_os("PALISADE_TOOLS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/palisade"),
        PathBuf::from,
    );
    root.join("bin/tansu")
}

/// Where a private broker keeps its records.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    /// In memory: gone when the process ends.
    Memory,
    /// In an SQLite file of the broker's own directory: kept across a restart.
    Sqlite,
}

/// A tansu of the test's own, on a port of its own, advertising `advertised` to its clients
/// (its own address, or a fault proxy's so every connection goes through the proxy).
struct PrivateKafka {
    child: Option<std::process::Child>,
    port: u16,
    advertised: SocketAddr,
    store: Store,
    dir: PathBuf,
}

impl PrivateKafka {
    /// Starts tansu on `port`; `None` (a skip, or a panic with `PALISADE_REQUIRE_SERVICES=1`)
    /// when it is not installed.
    async fn start(port: u16, advertised: SocketAddr, store: Store) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("palisade-tansu-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = Self {
            child: None,
            port,
            advertised,
            store,
            dir,
        };
        match broker.spawn() {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !services_required() => {
                eprintln!(
                    "skipping: tansu is not at {} (bash .ci/kafka installs it)",
                    tansu_binary().display()
                );
                return None;
            }
            Err(e) => panic!("cannot start tansu at {}: {e}", tansu_binary().display()),
        }
        broker.wait_until_listening().await;
        Some(broker)
    }

    fn spawn(&mut self) -> std::io::Result<()> {
        let storage = match self.store {
            Store::Memory => "memory://tansu/",
            // A path relative to the broker's working directory.
            Store::Sqlite => "sqlite://tansu.db",
        };
        let child = std::process::Command::new(tansu_binary())
            .current_dir(&self.dir)
            .arg("broker")
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://{}", self.advertised))
            .arg("--storage-engine")
            .arg(storage)
            .arg("--silent")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the broker (SIGKILL: no chance to flush anything).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts it again on the same port and store.
    async fn restart(&mut self) {
        self.spawn().unwrap();
        self.wait_until_listening().await;
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn free_port() -> u16 {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// How long a test waits for the relay and the broker to reach a state.
const WAIT: Duration = Duration::from_secs(60);

const AGGREGATES: usize = 6;
const VERSIONS: i64 = 20;

/// Stages versions `versions` of every aggregate, one transaction per version.
async fn stage_versions(pool: &PgPool, versions: std::ops::RangeInclusive<i64>, topic: &str) -> Vec<Event> {
    let mut staged = Vec::new();
    for v in versions {
        let mut tx = pool.begin().await.unwrap();
        for a in 0..AGGREGATES {
            let event = Event::new("Moved", "Parcel", format!("p{a}"), json!({ "v": v }))
                .with_version(v)
                .with_destination(topic.to_owned());
            stage(&mut tx, &event).await.unwrap();
            staged.push(event);
        }
        tx.commit().await.unwrap();
    }
    staged
}

async fn relay(pg: &Postgres, publisher: KafkaPublisher) -> RelayHandle {
    Relay::builder(PgStore::new(pg.pool.clone()), publisher)
        .workers(1)
        .batch_size(16)
        .poll_interval(Duration::from_millis(20))
        // Longer than the publisher's 5 s request timeout, so a publish fails with the
        // publisher's error (and it sees the broker is unreachable), not the relay's timeout.
        .publish_timeout(Duration::from_secs(10))
        .lease(Duration::from_secs(25))
        .backoff(Duration::from_millis(20), Duration::from_millis(200), 2.0)
        .max_attempts(10_000)
        .retention(Duration::from_secs(3600))
        .build()
        .unwrap()
        .spawn()
}

/// Checks that each publisher reaches the broker again (health is the last publish's, so each
/// publishes once more, to a topic of its own).
async fn reconnected(kafka: &Kafka, publishers: &[KafkaPublisher]) {
    let probe = format!("{}_probe", kafka.topic);
    kafka.create_topic(&probe, 1).await;
    for publisher in publishers {
        let event = Event::new("Probed", "Probe", "probe", json!({})).with_destination(probe.clone());
        publisher.publish(&event).await.unwrap();
        assert_eq!(publisher.health(), PublisherHealth::Connected);
    }
}

/// Checks the topic against `staged` and returns how many publishes were retried: every staged
/// event is there; each aggregate's in one partition, in staging order. A batch whose
/// acknowledgement was lost is stored twice (no idempotent producer), each copy after the
/// events before it.
async fn check_topic(kafka: &Kafka, pg: &Postgres, staged: &[Event]) -> i64 {
    let records: Vec<KafkaRecord> = kafka.records(&kafka.topic).await;
    let mut seen = HashSet::new();
    let mut next: HashMap<String, i64> = HashMap::new();
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    for record in &records {
        let event: Event = serde_json::from_slice(record.record.value.as_deref().unwrap()).unwrap();
        let partition = *partition_of
            .entry(event.aggregate_id.clone())
            .or_insert(record.partition);
        assert_eq!(
            record.partition, partition,
            "aggregate {} in one partition",
            event.aggregate_id
        );
        let expected = next.entry(event.aggregate_id.clone()).or_insert(1);
        if seen.insert(event.event_id) {
            assert_eq!(
                event.version, *expected,
                "aggregate {} out of order at offset {}",
                event.aggregate_id, record.offset
            );
            *expected += 1;
        } else {
            assert!(event.version < *expected, "a copy comes after its first");
        }
    }
    let staged_ids: HashSet<Uuid> = staged.iter().map(|e| e.event_id).collect();
    assert_eq!(seen, staged_ids, "every staged event in the topic");
    let retried = count(
        &pg.pool,
        "SELECT count(*) FROM palisade_outbox_published WHERE attempts > 0",
    )
    .await;
    eprintln!(
        "{} records for {} events ({} publishes retried)",
        records.len(),
        staged.len(),
        retried
    );
    retried
}

/// How a test takes the broker away mid-run and brings it back.
enum Fault {
    /// A fault proxy the broker advertises, so every connection to it, the leader's included,
    /// goes through the proxy: it resets the open connections and refuses new ones.
    Outage(FaultProxy),
    /// The broker process is killed, and started again on its SQLite store.
    Restart,
}

/// Two relays publish `VERSIONS` versions of every aggregate to a private broker, which goes
/// away (by `fault`) after some were published and while the rest are staged, and comes back
/// once the publishes fail; then the topic holds every event, each aggregate's in order.
async fn two_relays_through(test: &str, fault: Fault) {
    let Some(pg) = Postgres::connect(test).await else {
        return;
    };
    migrate(&pg.pool).await.unwrap();
    let (port, advertised, store) = match &fault {
        Fault::Outage(proxy) => (proxy.upstream().port(), proxy.addr(), Store::Memory),
        Fault::Restart => {
            let port = free_port().await;
            (port, SocketAddr::from(([127, 0, 0, 1], port)), Store::Sqlite)
        }
    };
    let Some(mut broker) = PrivateKafka::start(port, advertised, store).await else {
        pg.cleanup().await;
        return;
    };
    let bootstrap = advertised.to_string();
    let kafka = Kafka {
        client: Arc::new(Kafka::client(&bootstrap).await.unwrap()),
        topic: unique_name(test),
        url: bootstrap.clone(),
    };
    kafka.create_topic(&kafka.topic, 3).await;

    let mut staged = stage_versions(&pg.pool, 1..=VERSIONS / 2, &kafka.topic).await;
    let first = KafkaPublisher::connect([bootstrap.clone()]).await.unwrap();
    let second = KafkaPublisher::connect([bootstrap.clone()]).await.unwrap();
    // Clones share the publishers' state (and health).
    let watched = [first.clone(), second.clone()];
    let relays = [relay(&pg, first).await, relay(&pg, second).await];
    wait_until("some events published", WAIT, || async {
        count(&pg.pool, "SELECT count(*) FROM palisade_outbox_published").await > 0
    })
    .await;

    match &fault {
        Fault::Outage(proxy) => {
            proxy.refuse();
            proxy.cut();
        }
        Fault::Restart => broker.kill(),
    }
    staged.extend(stage_versions(&pg.pool, VERSIONS / 2 + 1..=VERSIONS, &kafka.topic).await);
    wait_until("publishes failing while the broker is away", WAIT, || async {
        count(&pg.pool, "SELECT count(*) FROM palisade_outbox WHERE attempts > 0").await > 0
    })
    .await;
    // Whichever relay claimed the waiting events found the broker gone.
    wait_until("a publisher reports the broker unreachable", WAIT, || async {
        watched.iter().any(|p| p.health() == PublisherHealth::Disconnected)
    })
    .await;
    assert!(
        count(&pg.pool, "SELECT count(*) FROM palisade_outbox").await > 0,
        "events wait in the outbox"
    );
    match &fault {
        Fault::Outage(proxy) => proxy.resume(),
        Fault::Restart => broker.restart().await,
    }

    wait_until("the outbox drained", WAIT, || async {
        count(&pg.pool, "SELECT count(*) FROM palisade_outbox").await == 0
    })
    .await;
    for relay in relays {
        relay.shutdown().await;
    }
    reconnected(&kafka, &watched).await;
    let retried = check_topic(&kafka, &pg, &staged).await;
    assert!(retried > 0, "the publishes made while the broker was away were retried");
    drop(broker);
    drop(fault);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_keep_each_aggregates_order_and_lose_nothing_through_a_broker_outage() {
    let port = free_port().await;
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    two_relays_through("kafka_outage", Fault::Outage(proxy)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_keep_each_aggregates_order_and_lose_nothing_when_the_broker_is_killed_and_restarted() {
    two_relays_through("kafka_restart", Fault::Restart).await;
}

/// The leader's connection goes silent without closing (a failover, a network path that drops
/// every packet): the produce on it has no acknowledgement within the request timeout. The
/// next publish goes out on a new connection to the leader, instead of down the silent one
/// until the kernel gives up on it, minutes later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_connection_gone_silent_is_left_for_a_new_one() {
    let port = free_port().await;
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    // The broker advertises the proxy: every connection to it goes through it.
    let Some(_broker) = PrivateKafka::start(port, proxy.addr(), Store::Memory).await else {
        return;
    };
    let bootstrap = proxy.addr().to_string();
    let kafka = Kafka {
        client: Arc::new(Kafka::client(&bootstrap).await.unwrap()),
        topic: unique_name("kafka_silent"),
        url: bootstrap.clone(),
    };
    kafka.create_topic(&kafka.topic, 1).await;
    let publisher = KafkaPublisher::connect([bootstrap.clone()])
        .await
        .unwrap()
        .with_request_timeout(Duration::from_millis(500));
    let event = |marker: &str| {
        Event::new("Moved", "Parcel", "p1", json!({ "marker": marker })).with_destination(kafka.topic.clone())
    };
    publisher.publish(&event("first")).await.unwrap();

    // The produce carrying this marker, and everything after it on its connection, is held.
    let silent = proxy.on(
        palisade_tests::fault_proxy::Direction::ToUpstream,
        b"held-back",
        palisade_tests::fault_proxy::Action::Stall,
    );
    let lost = publisher.publish(&event("held-back")).await.unwrap_err();
    assert!(lost.is_transient(), "{lost}");
    assert!(silent.has_fired());
    assert_eq!(publisher.health(), PublisherHealth::Disconnected);

    let accepted = proxy.accepted();
    let retried = tokio::time::timeout(Duration::from_secs(10), publisher.publish(&event("retried"))).await;
    assert!(
        matches!(retried, Ok(Ok(()))),
        "the retry goes out on a new connection: {retried:?}"
    );
    assert!(proxy.accepted() > accepted, "a new connection to the leader");
    assert_eq!(publisher.health(), PublisherHealth::Connected);
}
