//! The outbox's NATS JetStream publisher against a live server, and a relay riding out a
//! broker outage on a private `nats-server`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use palisade_outbox::postgres::{PgStore, migrate};
use palisade_outbox::{Encoding, Event, Publisher, PublisherHealth, Relay, stage};
use palisade_outbox::{NatsPublisher, UnsendableField};
use palisade_tests::{Nats, Postgres, services_required, unique_name};
use serde_json::json;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_with_the_event_id_as_msg_id_and_awaits_the_ack() {
    let Some(nats) = Nats::connect("outbox_nats_publish").await else {
        return;
    };
    let js = jetstream::new(nats.client.clone());
    let mut stream = js
        .create_stream(stream::Config {
            name: nats.stream.clone(),
            subjects: vec![format!("{}>", nats.prefix)],
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
    let publisher = NatsPublisher::new(nats.client.clone()).with_prefix(nats.prefix.clone());
    let event = Event::new("OrderCreated", "Order", "o1", json!({"total": 5})).with_correlation_id("c1");
    publisher.publish(&event).await.unwrap();
    publisher.publish(&event).await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        1,
        "the redelivery is de-duplicated by Nats-Msg-Id"
    );

    let message = stream.get_raw_message(1).await.unwrap();
    assert_eq!(message.subject.as_str(), nats.subject("Order"));
    assert_eq!(
        message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .unwrap()
            .as_str(),
        event.event_id.to_string()
    );
    assert_eq!(
        message.headers.get("Content-Type").unwrap().as_str(),
        "application/json"
    );
    assert_eq!(
        message.headers.get("Palisade-Event-Type").unwrap().as_str(),
        "OrderCreated"
    );
    assert_eq!(serde_json::from_slice::<Event>(&message.payload).unwrap(), event);

    let cloud = NatsPublisher::new(nats.client.clone())
        .with_prefix(nats.prefix.clone())
        .with_encoding(Encoding::CloudEvents);
    let second = Event::new("OrderPaid", "Order", "o1", json!({})).with_destination("payments");
    cloud.publish(&second).await.unwrap();
    let message = stream.get_raw_message(2).await.unwrap();
    assert_eq!(message.subject.as_str(), nats.subject("payments"));
    let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["id"], second.event_id.to_string());

    let nowhere = NatsPublisher::new(nats.client.clone()).with_prefix(unique_name("no_stream") + ".");
    let error = nowhere.publish(&event).await.unwrap_err();
    assert!(
        error.is_transient(),
        "a subject without a stream may get one later: {error}"
    );
    nats.cleanup().await;
}

/// A `nats-server` of the test's own, on a free port, with its own store directory.
struct PrivateNats {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

const NATS_SERVER: &str = "/usr/sbin/nats-server";

impl PrivateNats {
    fn start() -> Option<Self> {
        if !std::path::Path::new(NATS_SERVER).exists() {
            assert!(!services_required(), "{NATS_SERVER} is missing");
            palisade_tests::skip(format_args!("{NATS_SERVER} is missing"));
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(unique_name("outbox_nats_store"));
        let mut server = Self { child: None, port, dir };
        server.resume();
        Some(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on the same port and store.
    fn resume(&mut self) {
        let child = Command::new(NATS_SERVER)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn stream_messages(js: &jetstream::Context, name: &str) -> u64 {
    match js.get_stream(name).await {
        Ok(mut stream) => stream.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

async fn wait_for_messages(js: &jetstream::Context, name: &str, count: u64) {
    let deadline = Instant::now() + WAIT;
    while stream_messages(js, name).await < count {
        assert!(Instant::now() < deadline, "{count} messages in the stream in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stage_versions(pool: &sqlx::PgPool, versions: std::ops::RangeInclusive<i64>) {
    for v in versions {
        let mut tx = pool.begin().await.unwrap();
        for aggregate in ["a", "b", "c"] {
            stage(
                &mut tx,
                &Event::new("Moved", "Parcel", aggregate, json!({"v": v})).with_version(v),
            )
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_rides_out_a_broker_outage_without_loss_or_duplicates() {
    let Some(pg) = Postgres::connect("outbox_nats_outage").await else {
        return;
    };
    let Some(mut server) = PrivateNats::start() else { return };
    migrate(&pg.pool).await.unwrap();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(server.url())
        .await
        .expect("connect to the private nats-server");
    let js = jetstream::new(client.clone());
    let name = "PARCELS".to_owned();
    let deadline = Instant::now() + WAIT;
    while js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec!["parcels.>".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "JetStream up in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let relay = Relay::builder(
        PgStore::new(pg.pool.clone()),
        NatsPublisher::new(client).with_prefix("parcels."),
    )
    .poll_interval(Duration::from_millis(50))
    .publish_timeout(Duration::from_millis(500))
    .lease(Duration::from_secs(5))
    .backoff(Duration::from_millis(20), Duration::from_millis(200), 2.0)
    .max_attempts(10_000)
    .build()
    .unwrap();
    let handle = relay.spawn();
    stage_versions(&pg.pool, 1..=10).await;
    wait_for_messages(&js, &name, 30).await;
    assert_eq!(relay.publisher_health(), PublisherHealth::Connected);

    server.stop();
    stage_versions(&pg.pool, 11..=20).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM palisade_outbox WHERE attempts > 0")
            .fetch_one(&pg.pool)
            .await
            .unwrap();
        if failed > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "publishes fail while the broker is down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(relay.publisher_health(), PublisherHealth::Disconnected);

    server.resume();
    wait_for_messages(&js, &name, 60).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM palisade_outbox")
            .fetch_one(&pg.pool)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "outbox drained in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(relay.publisher_health(), PublisherHealth::Connected);
    handle.shutdown().await;

    let stream = js.get_stream(&name).await.unwrap();
    let mut ids = HashSet::new();
    let mut next: HashMap<String, i64> = HashMap::new();
    for seq in 1..=stream_messages(&js, &name).await {
        let message = stream.get_raw_message(seq).await.unwrap();
        let event: Event = serde_json::from_slice(&message.payload).unwrap();
        assert!(ids.insert(event.event_id), "event {} stored twice", event.event_id);
        let expected = next.entry(event.aggregate_id.clone()).or_insert(1);
        assert_eq!(
            event.version, *expected,
            "aggregate {} out of order in the stream",
            event.aggregate_id
        );
        *expected += 1;
    }
    assert_eq!(ids.len(), 60, "nothing lost");
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_protocol_cannot_carry_fails_alone_and_the_connection_stays_up() {
    let Some(nats) = Nats::connect("outbox_nats_limits").await else {
        return;
    };
    let js = jetstream::new(nats.client.clone());
    let stream = js
        .create_stream(stream::Config {
            name: nats.stream.clone(),
            subjects: vec![format!("{}>", nats.prefix)],
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .unwrap();
    let publisher = NatsPublisher::new(nats.client.clone()).with_prefix(nats.prefix.clone());
    let max_payload = nats.client.server_info().max_payload;
    let event = |n: i64| Event::new("OrderChanged", "Order", "o1", json!({})).with_version(n);
    let unsendable = [
        ("subject", event(2).with_destination("Order created")),
        ("subject", event(3).with_destination("Order..created")),
        ("subject", event(4).with_destination("")),
        ("event type", Event::new("Order\r\nChanged", "Order", "o1", json!({}))),
        (
            "message",
            Event::new(
                "OrderChanged",
                "Order",
                "o1",
                json!({ "blob": "x".repeat(max_payload) }),
            ),
        ),
    ];
    publisher.publish(&event(1)).await.unwrap();
    for (field, event) in &unsendable {
        let error = publisher.publish(event).await.unwrap_err();
        assert!(!error.is_transient(), "{field}: {error}");
        let cause = std::error::Error::source(&error)
            .unwrap()
            .downcast_ref::<UnsendableField>();
        assert_eq!(cause.map(|c| c.field), Some(*field), "{error}");
    }
    publisher.publish(&event(5)).await.unwrap();
    assert_eq!(
        nats.client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "never reconnected"
    );
    assert_eq!(publisher.health(), PublisherHealth::Connected);
    let mut stream = stream;
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
    let mut versions = Vec::new();
    for seq in [1, 2] {
        let message = stream.get_raw_message(seq).await.unwrap();
        versions.push(serde_json::from_slice::<Event>(&message.payload).unwrap().version);
    }
    assert_eq!(versions, [1, 5]);
    nats.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_streams_own_size_limit_is_refused_for_good() {
    // The server's `max_payload` is checked before sending; a stream's own, smaller
    // `max_msg_size` only the server knows. Retried as transient, such an event would hold
    // its aggregate back for every attempt before it is dead-lettered.
    let Some(nats) = Nats::connect("outbox_nats_stream_size").await else {
        return;
    };
    let js = jetstream::new(nats.client.clone());
    js.create_stream(stream::Config {
        name: nats.stream.clone(),
        subjects: vec![format!("{}>", nats.prefix)],
        storage: stream::StorageType::Memory,
        max_message_size: 1024,
        ..Default::default()
    })
    .await
    .unwrap();
    let publisher = NatsPublisher::new(nats.client.clone()).with_prefix(nats.prefix.clone());
    let big = Event::new("OrderChanged", "Order", "o1", json!({ "blob": "x".repeat(2048) }));
    let error = publisher.publish(&big).await.unwrap_err();
    assert!(!error.is_transient(), "{error}");
    publisher
        .publish(&Event::new("OrderChanged", "Order", "o1", json!({})))
        .await
        .unwrap();
    assert_eq!(stream_messages(&js, &nats.stream).await, 1);
    nats.cleanup().await;
}
