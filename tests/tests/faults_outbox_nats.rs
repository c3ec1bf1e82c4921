//! The outbox relay's NATS connection cut or stalled around a JetStream publish, through a
//! fault proxy. Whether the publish or its ack was lost, the relay publishes again with the
//! same `Nats-Msg-Id`; JetStream drops a copy it already stored, and the stream holds every
//! event once, each aggregate's in order.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use palisade_outbox::NatsPublisher;
use palisade_outbox::postgres::{PgStore, migrate};
use palisade_outbox::{Event, Relay, RelayHandle, stage};
use palisade_tests::fault_proxy::{Action, Direction, Fault, FaultProxy};
use palisade_tests::{Nats, Postgres, upstream_of, via, wait_until};
use serde_json::json;
use sqlx::PgPool;
use tokio::time::{Instant, timeout};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
const AGGREGATES: usize = 4;
const VERSIONS: i64 = 10;
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

struct Setup {
    pg: Postgres,
    nats: Nats,
    proxy: FaultProxy,
    js: jetstream::Context,
}

async fn setup(test: &str) -> Option<Setup> {
    let pg = Postgres::connect(test).await?;
    let nats = Nats::connect(test).await?;
    migrate(&pg.pool).await.unwrap();
    let js = jetstream::new(nats.client.clone());
    js.create_stream(stream::Config {
        name: nats.stream.clone(),
        subjects: vec![format!("{}>", nats.prefix)],
        storage: stream::StorageType::Memory,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
    let proxy = FaultProxy::start(upstream_of(&nats.url, 4222)).await.unwrap();
    Some(Setup { pg, nats, proxy, js })
}

impl Setup {
    /// The bytes that start the stream's ack of a publish.
    fn ack(&self) -> Vec<u8> {
        format!("{{\"stream\":\"{}\"", self.nats.stream).into_bytes()
    }

    /// A relay publishing through the proxy, archiving what it published (with its attempts).
    async fn relay(&self) -> RelayHandle {
        let client = async_nats::ConnectOptions::new()
            .connect(via(&self.nats.url, &self.proxy))
            .await
            .unwrap();
        Relay::builder(
            PgStore::new(self.pg.pool.clone()),
            NatsPublisher::new(client).with_prefix(self.nats.prefix.clone()),
        )
        .workers(1)
        .batch_size(8)
        .poll_interval(Duration::from_millis(20))
        .publish_timeout(PUBLISH_TIMEOUT)
        .lease(Duration::from_secs(5))
        .backoff(Duration::from_millis(20), Duration::from_millis(200), 2.0)
        .max_attempts(10_000)
        .retention(Duration::from_secs(3600))
        .build()
        .unwrap()
        .spawn()
    }

    async fn stage_all(&self) -> Vec<Event> {
        let mut staged = Vec::new();
        let mut tx = self.pg.pool.begin().await.unwrap();
        for v in 1..=VERSIONS {
            for a in 0..AGGREGATES {
                let event = Event::new("Moved", "Parcel", format!("p{a}"), json!({ "v": v })).with_version(v);
                stage(&mut tx, &event).await.unwrap();
                staged.push(event);
            }
        }
        tx.commit().await.unwrap();
        staged
    }

    /// Waits until the outbox is empty, stops the relay and checks the stream: every staged
    /// event once, each aggregate's in version order. Returns how many publishes needed
    /// more than one attempt.
    async fn drained(self, relay: RelayHandle, staged: &[Event]) -> i64 {
        wait_until("the outbox drained", WAIT, || async {
            pending(&self.pg.pool).await == 0
        })
        .await;
        relay.shutdown().await;
        let stream = self.js.get_stream(&self.nats.stream).await.unwrap();
        let messages = stream.get_info().await.unwrap().state.messages;
        let mut ids = HashSet::new();
        let mut next: HashMap<String, i64> = HashMap::new();
        for seq in 1..=messages {
            let message = stream.get_raw_message(seq).await.unwrap();
            let event: Event = serde_json::from_slice(&message.payload).unwrap();
            assert!(ids.insert(event.event_id), "event {} stored twice", event.event_id);
            let expected = next.entry(event.aggregate_id.clone()).or_insert(1);
            assert_eq!(
                event.version, *expected,
                "aggregate {} out of order",
                event.aggregate_id
            );
            *expected += 1;
        }
        let staged_ids: HashSet<Uuid> = staged.iter().map(|e| e.event_id).collect();
        assert_eq!(ids, staged_ids, "every staged event in the stream, once");
        let retried: i64 = sqlx::query_scalar("SELECT count(*) FROM palisade_outbox_published WHERE attempts > 0")
            .fetch_one(&self.pg.pool)
            .await
            .unwrap();
        drop(self.proxy);
        self.nats.cleanup().await;
        self.pg.cleanup().await;
        retried
    }
}

async fn pending(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM palisade_outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn fired(fault: &Fault) {
    timeout(WAIT, fault.fired()).await.expect("the fault happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_lost_with_the_connection_is_published_again_and_jetstream_keeps_one_copy() {
    let Some(setup) = setup("fault_nats_ack").await else {
        return;
    };
    let fault = setup.proxy.on(Direction::ToClient, &setup.ack(), Action::Cut);
    let staged = setup.stage_all().await;
    let relay = setup.relay().await;
    fired(&fault).await;
    let retried = setup.drained(relay, &staged).await;
    assert!(retried >= 1, "the event whose ack was lost was published again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_lost_with_the_connection_is_published_again_and_stored_once() {
    let Some(setup) = setup("fault_nats_publish").await else {
        return;
    };
    // The publish never reaches the server.
    let publish = format!("HPUB {}", setup.nats.prefix).into_bytes();
    let fault = setup.proxy.on(Direction::ToUpstream, &publish, Action::Cut);
    let staged = setup.stage_all().await;
    let relay = setup.relay().await;
    fired(&fault).await;
    let retried = setup.drained(relay, &staged).await;
    assert!(retried >= 1, "the lost publish was made again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_ack_times_out_within_the_publish_timeout_and_the_resent_copy_is_dropped() {
    let Some(setup) = setup("fault_nats_stall").await else {
        return;
    };
    let fault = setup.proxy.on(Direction::ToClient, &setup.ack(), Action::Stall);
    let staged = setup.stage_all().await;
    let relay = setup.relay().await;
    fired(&fault).await;
    let stalled_at = Instant::now();
    // The relay gives up on the ack after its publish timeout and records a failed attempt.
    wait_until("a failed attempt recorded", WAIT, || async {
        let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM palisade_outbox WHERE attempts > 0")
            .fetch_one(&setup.pg.pool)
            .await
            .unwrap();
        failed > 0
    })
    .await;
    let waited = stalled_at.elapsed();
    assert!(
        waited < PUBLISH_TIMEOUT + Duration::from_secs(2),
        "the stalled publish failed after {waited:?}, not within the {PUBLISH_TIMEOUT:?} publish timeout"
    );
    let error: String = sqlx::query_scalar("SELECT last_error FROM palisade_outbox WHERE attempts > 0 LIMIT 1")
        .fetch_one(&setup.pg.pool)
        .await
        .unwrap();
    assert!(error.contains("timed out"), "{error}");
    setup.proxy.resume();
    let retried = setup.drained(relay, &staged).await;
    assert!(retried >= 1);
}
