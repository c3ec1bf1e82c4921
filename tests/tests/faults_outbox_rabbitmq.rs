//! The outbox relay's RabbitMQ connection cut or stalled between a publish and its publisher
//! confirm, through a fault proxy. The broker queued the message, the relay never heard so: once the
//! publisher is connected again the relay publishes it again with the same `message_id`.
//! The queue holds every event, a copy only of an event whose confirm was lost, each
//! aggregate's first copies in order.

use std::collections::HashMap;
use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use palisade_outbox::RabbitMqPublisher;
use palisade_outbox::postgres::{PgStore, migrate};
use palisade_outbox::{Event, Relay, stage};
use palisade_tests::fault_proxy::{Action, Direction, FaultProxy};
use palisade_tests::{Postgres, RabbitMq, upstream_of, via};
use serde_json::json;
use tokio::time::{Instant, timeout};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);
const AGGREGATES: usize = 4;
const VERSIONS: i64 = 10;
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// The start of a `basic.ack` method frame (payload size 13, class 60, method 80): the
/// broker's publisher confirm.
const BASIC_ACK: &[u8] = &[0x00, 0x00, 0x00, 0x0d, 0x00, 0x3c, 0x00, 0x50];

/// A relay publishing one worker's batches of 8 through a proxy to RabbitMQ, with the
/// trigger `(ToClient, BASIC_ACK, action)` set (a stall is checked to fail the publish within
/// the publish timeout, then ended). Waits
/// until the outbox drained and checks the queue: every event, copies (with the same
/// `message_id`) only of what was published again, each aggregate's first copies in order.
/// Returns how many events were queued twice.
async fn publish_through_fault(test: &str, action: Action) -> Option<usize> {
    let pg = Postgres::connect(test).await?;
    let rabbit = RabbitMq::connect(test).await?;
    migrate(&pg.pool).await.unwrap();
    let reader = rabbit.connection.create_channel().await.unwrap();
    reader
        .queue_declare(&rabbit.queue, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let proxy = FaultProxy::start(upstream_of(&rabbit.url, 5672)).await.unwrap();
    let publisher = RabbitMqPublisher::connect(&via(&rabbit.url, &proxy), "").await.unwrap();
    let relay = Relay::builder(PgStore::new(pg.pool.clone()), publisher)
        .workers(1)
        .batch_size(8)
        .poll_interval(Duration::from_millis(20))
        .publish_timeout(PUBLISH_TIMEOUT)
        .lease(Duration::from_secs(5))
        .backoff(Duration::from_millis(20), Duration::from_millis(200), 2.0)
        .max_attempts(10_000)
        .build()
        .unwrap();
    let fault = proxy.on(Direction::ToClient, BASIC_ACK, action);

    let mut staged = Vec::new();
    let mut tx = pg.pool.begin().await.unwrap();
    for v in 1..=VERSIONS {
        for a in 0..AGGREGATES {
            let event = Event::new("Moved", "Parcel", format!("p{a}"), json!({ "v": v }))
                .with_version(v)
                .with_destination(rabbit.queue.clone());
            stage(&mut tx, &event).await.unwrap();
            staged.push(event);
        }
    }
    tx.commit().await.unwrap();
    let handle = relay.spawn();
    timeout(WAIT, fault.fired()).await.expect("the fault happened");
    if action == Action::Stall {
        let stalled_at = Instant::now();
        // The relay gives up on the confirm after its publish timeout and records a failed attempt.
        let deadline = Instant::now() + WAIT;
        loop {
            let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM palisade_outbox WHERE attempts > 0")
                .fetch_one(&pg.pool)
                .await
                .unwrap();
            if failed > 0 {
                break;
            }
            assert!(Instant::now() < deadline, "a failed attempt recorded in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let waited = stalled_at.elapsed();
        assert!(
            waited < PUBLISH_TIMEOUT + Duration::from_secs(2),
            "the stalled publish failed after {waited:?}, not within the {PUBLISH_TIMEOUT:?} publish timeout"
        );
        proxy.resume();
    }

    let deadline = Instant::now() + WAIT;
    loop {
        let (left, last_error): (i64, Option<String>) =
            sqlx::query_as("SELECT count(*), max(last_error) FROM palisade_outbox")
                .fetch_one(&pg.pool)
                .await
                .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} events still in the outbox; last error: {last_error:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.shutdown().await;

    let staged_by_id: HashMap<Uuid, &Event> = staged.iter().map(|e| (e.event_id, e)).collect();
    let mut copies: HashMap<Uuid, usize> = HashMap::new();
    let mut next: HashMap<String, i64> = HashMap::new();
    while let Some(message) = reader
        .basic_get(&rabbit.queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let event: Event = serde_json::from_slice(&message.delivery.data).unwrap();
        let message_id = message.delivery.properties.message_id().as_ref().unwrap().to_string();
        assert_eq!(message_id, event.event_id.to_string(), "the event id is the message id");
        assert_eq!(Some(&&event), staged_by_id.get(&event.event_id), "unaltered");
        let count = copies.entry(event.event_id).or_default();
        *count += 1;
        if *count == 1 {
            let expected = next.entry(event.aggregate_id.clone()).or_insert(1);
            assert_eq!(
                event.version, *expected,
                "aggregate {} out of order",
                event.aggregate_id
            );
            *expected += 1;
        }
    }
    assert_eq!(copies.len(), staged.len(), "every event queued");
    assert!(copies.values().all(|&n| n <= 2), "nothing queued more than twice");
    drop(proxy);
    rabbit.cleanup().await;
    pg.cleanup().await;
    Some(copies.values().filter(|&&n| n == 2).count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_lost_with_the_connection_is_published_again_with_the_same_message_id() {
    let Some(twice) = publish_through_fault("fault_rabbit_confirm", Action::Cut).await else {
        return;
    };
    assert!(twice >= 1, "the event whose confirm was lost was published again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_confirm_times_out_within_the_publish_timeout_and_is_published_again() {
    let Some(twice) = publish_through_fault("fault_rabbit_stall", Action::Stall).await else {
        return;
    };
    assert!(twice >= 1, "the event whose confirm timed out was published again");
}
