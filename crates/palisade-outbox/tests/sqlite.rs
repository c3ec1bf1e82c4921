//! The outbox on SQLite: staging, claiming, the relay, dead letters and the inbox.
#![cfg(feature = "sqlite")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use palisade_outbox::sqlite::{SqliteStore, migrate};
use palisade_outbox::{
    ChannelPublisher, Disposition, Event, MAX_PAYLOAD_DEPTH, OutboxError, OutboxStore, PublishError, Publisher, Relay,
    Seen, process_once, stage,
};
use serde_json::json;
use sqlx::sqlite::SqlitePool;
use support::db;
use tokio::sync::mpsc;

fn order_event(aggregate: &str, n: i64) -> Event {
    Event::new("OrderUpdated", "Order", aggregate, json!({ "n": n })).with_version(n)
}

const WAIT: Duration = Duration::from_secs(10);

async fn receive(rx: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an event within the wait")
        .expect("channel open")
}

#[tokio::test]
async fn migrate_twice_is_harmless() {
    let db = db().await;
    migrate(&db.pool).await.unwrap();
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM palisade_outbox_migrations")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(versions, vec![1]);
}

#[tokio::test]
async fn committed_events_are_claimable_and_rolled_back_ones_never() {
    let db = db().await;
    let store = SqliteStore::new(db.pool.clone());
    let kept = order_event("o1", 1)
        .with_correlation_id("corr")
        .with_destination("orders.special");
    let discarded = order_event("o2", 1);

    let mut tx = db.pool.begin().await.unwrap();
    stage(&mut tx, &kept).await.unwrap();
    // SQLite lets one writer in at a time, so a claim would wait for the commit; readers see nothing yet.
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM palisade_outbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(visible, 0, "an uncommitted event is invisible to the relay");
    tx.commit().await.unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    stage(&mut tx, &discarded).await.unwrap();
    tx.rollback().await.unwrap();

    let (lease, claimed, _) = store.claim(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event, kept, "the event survives the database unchanged");
    assert_eq!(claimed[0].attempts, 0);
    store
        .complete(lease, &[(claimed[0].seq, Disposition::Published)], false)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM palisade_outbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "published events are deleted when there is no retention");
}

#[tokio::test]
async fn a_claimed_or_retrying_aggregate_is_skipped_not_overtaken() {
    let db = db().await;
    let store = SqliteStore::new(db.pool.clone());
    let mut tx = db.pool.begin().await.unwrap();
    for n in 1..=3 {
        stage(&mut tx, &order_event("a", n)).await.unwrap();
        stage(&mut tx, &order_event("b", n)).await.unwrap();
    }
    tx.commit().await.unwrap();

    // The first claim takes a1, b1, a2 (staging order).
    let (first, claimed, _) = store.claim(3, Duration::from_secs(30)).await.unwrap();
    let ids: Vec<_> = claimed
        .iter()
        .map(|c| (c.event.aggregate_id.as_str(), c.event.version))
        .collect();
    assert_eq!(ids, [("a", 1), ("b", 1), ("a", 2)]);

    // While both aggregates are claimed nothing else of them may go.
    let (second, none, _) = store.claim(10, Duration::from_secs(30)).await.unwrap();
    assert!(none.is_empty(), "later events of claimed aggregates wait: {none:?}");
    store.complete(second, &[], false).await.unwrap();

    // a1 fails (retry later), so a2 is released; b1 is published.
    let outcomes = [
        (
            claimed[0].seq,
            Disposition::Retry {
                delay: Duration::from_secs(60),
                error: "broker down".into(),
            },
        ),
        (claimed[1].seq, Disposition::Published),
        (claimed[2].seq, Disposition::Released),
    ];
    store.complete(first, &outcomes, false).await.unwrap();

    let (third, claimed, _) = store.claim(10, Duration::from_secs(30)).await.unwrap();
    let ids: Vec<_> = claimed
        .iter()
        .map(|c| (c.event.aggregate_id.as_str(), c.event.version))
        .collect();
    assert_eq!(ids, [("b", 2), ("b", 3)], "aggregate a waits behind its retrying head");
    store.complete(third, &[], false).await.unwrap();
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let db = db().await;
    let store = SqliteStore::new(db.pool.clone());
    stage_all(&db.pool, &[order_event("a", 1)]).await;

    // A relay that claimed and vanished: a zero lease is already expired.
    let (abandoned, claimed, _) = store.claim(10, Duration::ZERO).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let (lease, again, _) = store.claim(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(again.len(), 1, "an expired claim is taken over");
    // The vanished relay coming back cannot touch rows it no longer holds.
    store
        .complete(abandoned, &[(claimed[0].seq, Disposition::Published)], false)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM palisade_outbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 1);
    store
        .complete(lease, &[(again[0].seq, Disposition::Published)], false)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM palisade_outbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn relay_publishes_committed_events_in_aggregate_order() {
    let db = db().await;
    let (publisher, mut rx) = ChannelPublisher::new(1024);
    let relay = Relay::builder(SqliteStore::new(db.pool.clone()), publisher)
        .batch_size(7)
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let handle = relay.spawn();
    for n in 1..=20 {
        let mut tx = db.pool.begin().await.unwrap();
        for aggregate in ["a", "b", "c"] {
            stage(&mut tx, &order_event(aggregate, n)).await.unwrap();
        }
        if n % 5 == 0 {
            stage(&mut tx, &order_event("rolled-back", n)).await.unwrap();
            tx.rollback().await.unwrap();
        } else {
            tx.commit().await.unwrap();
        }
        relay.wakeup().wake();
    }
    let mut next = std::collections::HashMap::new();
    for _ in 0..48 {
        let event = receive(&mut rx).await;
        assert_ne!(event.aggregate_id, "rolled-back");
        let expected = next.entry(event.aggregate_id.clone()).or_insert(1);
        while *expected % 5 == 0 {
            *expected += 1;
        }
        assert_eq!(
            event.version, *expected,
            "aggregate {} out of order",
            event.aggregate_id
        );
        *expected += 1;
    }
    handle.shutdown().await;
    assert!(rx.try_recv().is_err(), "nothing beyond the committed events");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM palisade_outbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// Fails every publish while `failing` is set.
#[derive(Clone, Default)]
struct Flaky {
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    sender: Option<mpsc::Sender<Event>>,
}

impl Publisher for Flaky {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(PublishError::transient(std::io::Error::other("broker unreachable")));
        }
        if let Some(sender) = &self.sender {
            sender.send(event.clone()).await.map_err(PublishError::transient)?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn failing_publishes_dead_letter_after_the_cap_and_requeue_delivers() {
    let db = db().await;
    let (tx_events, mut rx) = mpsc::channel(16);
    let publisher = Flaky {
        failing: Arc::new(AtomicBool::new(true)),
        sender: Some(tx_events),
        ..Flaky::default()
    };
    let store = SqliteStore::new(db.pool.clone());
    let relay = Relay::builder(store.clone(), publisher.clone())
        .max_attempts(3)
        .backoff(Duration::from_millis(1), Duration::from_millis(2), 2.0)
        .poll_interval(Duration::from_millis(5))
        .build()
        .unwrap();
    let poison = order_event("a", 1);
    let behind = order_event("a", 2);
    stage_all(&db.pool, &[poison.clone(), behind.clone()]).await;

    // Drive batches by hand until the head is dead-lettered.
    let mut attempts = 0;
    while store.dead_letters(10).await.unwrap().is_empty() {
        let report = relay.run_batch().await.unwrap();
        attempts += report.failed;
        assert!(report.published == 0);
        tokio::task::yield_now().await;
    }
    assert_eq!(attempts, 3, "dead-lettered after exactly max_attempts failures");
    assert_eq!(
        publisher.calls.load(Ordering::SeqCst),
        3,
        "the event behind the failing head was never tried"
    );
    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event.as_ref(), Some(&poison));
    assert_eq!(dead[0].attempts, 3);
    assert!(
        dead[0].last_error.as_deref().unwrap().contains("broker unreachable"),
        "{:?}",
        dead[0].last_error
    );
    let backlog = store.backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.dead_lettered), (1, 1));

    // The broker is back: the event behind the dead letter goes; the dead letter stays until requeued.
    publisher.failing.store(false, Ordering::SeqCst);
    let handle = relay.spawn();
    assert_eq!(receive(&mut rx).await, behind);
    assert!(store.requeue(poison.event_id).await.unwrap());
    assert!(
        !store.requeue(poison.event_id).await.unwrap(),
        "only dead letters can be requeued"
    );
    handle.wake();
    assert_eq!(receive(&mut rx).await, poison);
    handle.shutdown().await;
    assert!(store.dead_letters(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn permanent_errors_dead_letter_at_once() {
    #[derive(Clone)]
    struct Rejecting;
    impl Publisher for Rejecting {
        async fn publish(&self, _: &Event) -> Result<(), PublishError> {
            Err(PublishError::permanent("invalid message"))
        }
    }
    let db = db().await;
    let store = SqliteStore::new(db.pool.clone());
    let relay = Relay::builder(store.clone(), Rejecting).build().unwrap();
    stage_all(&db.pool, &[order_event("a", 1)]).await;
    let report = relay.run_batch().await.unwrap();
    assert_eq!((report.claimed, report.failed, report.dead_lettered), (1, 1, 1));
    assert_eq!(store.dead_letters(10).await.unwrap()[0].attempts, 1);
}

#[tokio::test]
async fn the_event_hook_hears_of_every_dead_letter_with_its_destination_and_error() {
    #[derive(Clone)]
    struct Rejecting;
    impl Publisher for Rejecting {
        async fn publish(&self, _: &Event) -> Result<(), PublishError> {
            Err(PublishError::permanent("invalid message"))
        }
    }
    let heard = Arc::new(std::sync::Mutex::new(Vec::new()));
    let db = db().await;
    let store = SqliteStore::new(db.pool.clone());
    let relay = Relay::builder(store.clone(), Rejecting)
        .name("orders")
        .on_event({
            let heard = heard.clone();
            move |event| {
                if let palisade_core::events::LayerEvent::OutboxDeadLettered {
                    name,
                    destination,
                    error,
                } = event
                {
                    heard
                        .lock()
                        .unwrap()
                        .push((name.to_string(), destination.to_string(), error.to_string()));
                }
            }
        })
        .build()
        .unwrap();
    let event = order_event("a", 1).with_destination("orders.events");
    stage_all(&db.pool, std::slice::from_ref(&event)).await;
    let bad_id = insert_raw(&db.pool, "not-a-uuid", "b", "{}").await;
    let report = relay.run_batch().await.unwrap();
    assert_eq!(report.dead_lettered, 2);
    let heard = heard.lock().unwrap().clone();
    let dead = store.dead_letters(10).await.unwrap();
    let unreadable_error = dead
        .iter()
        .find(|d| d.seq == bad_id)
        .and_then(|d| d.last_error.clone())
        .unwrap();
    assert_eq!(
        heard,
        [
            (
                "orders".to_owned(),
                "orders.events".to_owned(),
                "publish failed (permanent): invalid message".to_owned(),
            ),
            ("orders".to_owned(), String::new(), unreadable_error),
        ]
    );
}

#[tokio::test]
async fn published_events_are_archived_for_the_retention_then_purged() {
    let db = db().await;
    let (publisher, mut rx) = ChannelPublisher::new(16);
    let store = SqliteStore::new(db.pool.clone());
    let relay = Relay::builder(store.clone(), publisher)
        .retention(Duration::from_secs(3600))
        .build()
        .unwrap();
    stage_all(&db.pool, &[order_event("a", 1)]).await;
    assert_eq!(relay.run_batch().await.unwrap().published, 1);
    receive(&mut rx).await;
    let archived: i64 = sqlx::query_scalar("SELECT count(*) FROM palisade_outbox_published")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(archived, 1);
    assert_eq!(
        store.purge_published(Duration::from_secs(3600)).await.unwrap(),
        0,
        "still within retention"
    );
    sqlx::query("UPDATE palisade_outbox_published SET published_at = published_at - 3600001")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(store.purge_published(Duration::from_secs(3600)).await.unwrap(), 1);
}

#[tokio::test]
async fn shutdown_finishes_the_batch_in_flight() {
    let db = db().await;
    // A one-slot channel: the relay blocks on the second event until the test receives.
    let (publisher, mut rx) = ChannelPublisher::new(1);
    let store = SqliteStore::new(db.pool.clone());
    let relay = Relay::builder(store.clone(), publisher).build().unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    for n in 1..=3 {
        stage(&mut tx, &order_event("a", n)).await.unwrap();
    }
    tx.commit().await.unwrap();
    let handle = relay.spawn();
    let first = receive(&mut rx).await;
    let shutdown = tokio::spawn(handle.shutdown());
    let rest = [receive(&mut rx).await, receive(&mut rx).await];
    tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
    let versions: Vec<_> = std::iter::once(&first).chain(&rest).map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3]);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM palisade_outbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "the batch was recorded before the relay stopped");
}

#[tokio::test]
async fn inbox_applies_each_event_once() {
    let db = db().await;
    let event = order_event("a", 1);
    let mut tx = db.pool.begin().await.unwrap();
    assert_eq!(
        process_once(&mut tx, "billing", event.event_id).await.unwrap(),
        Seen::First
    );
    tx.rollback().await.unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    assert_eq!(
        process_once(&mut tx, "billing", event.event_id).await.unwrap(),
        Seen::First,
        "a rollback forgets"
    );
    tx.commit().await.unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    assert!(
        process_once(&mut tx, "billing", event.event_id)
            .await
            .unwrap()
            .is_duplicate()
    );
    assert_eq!(
        process_once(&mut tx, "shipping", event.event_id).await.unwrap(),
        Seen::First,
        "per consumer"
    );
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn batches_report_metrics_under_the_core_names() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use palisade_core::telemetry::outbox as names;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let db = db().await;
    let publisher = Flaky {
        failing: Arc::new(AtomicBool::new(false)),
        ..Flaky::default()
    };
    let relay = Relay::builder(SqliteStore::new(db.pool.clone()), publisher.clone())
        .name("orders")
        .max_attempts(1)
        .build()
        .unwrap();
    stage_all(&db.pool, &[order_event("a", 1), order_event("b", 1)]).await;
    assert_eq!(relay.run_batch().await.unwrap().published, 2);
    publisher.failing.store(true, Ordering::SeqCst);
    stage_all(&db.pool, &[order_event("c", 1)]).await;
    assert_eq!(relay.run_batch().await.unwrap().dead_lettered, 1);
    publisher.failing.store(false, Ordering::SeqCst);
    stage_all(&db.pool, &[order_event("d", 1)]).await;
    // The running relay refreshes the backlog gauges right after its first batch.
    let handle = relay.spawn();
    let deadline = tokio::time::Instant::now() + WAIT;
    // Snapshots hand out counters' increments since the last one: add them up.
    let mut counters: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut gauges: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
    let collect = |counters: &mut std::collections::HashMap<String, u64>,
                   gauges: &mut std::collections::HashMap<String, f64>| {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            if !key.labels().any(|l| l.key() == "name" && l.value() == "orders") {
                continue;
            }
            match value {
                DebugValue::Counter(n) => *counters.entry(key.name().to_owned()).or_default() += n,
                DebugValue::Gauge(g) => {
                    gauges.insert(key.name().to_owned(), g.into_inner());
                }
                DebugValue::Histogram(_) => {}
            }
        }
    };
    loop {
        collect(&mut counters, &mut gauges);
        if gauges.contains_key(names::LAG_SECONDS) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "backlog gauges in time");
        tokio::task::yield_now().await;
    }
    handle.shutdown().await;
    collect(&mut counters, &mut gauges);
    assert_eq!(counters.get(names::PUBLISHED_TOTAL), Some(&3));
    assert_eq!(counters.get(names::FAILED_TOTAL), Some(&1));
    assert_eq!(counters.get(names::DEAD_LETTERED_TOTAL), Some(&1));
    assert_eq!(gauges.get(names::PENDING), Some(&0.0), "the dead letter is not pending");
}

async fn stage_all(pool: &SqlitePool, events: &[Event]) {
    let mut tx = pool.begin().await.unwrap();
    for e in events {
        stage(&mut tx, e).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// A JSON value nested `depth` arrays deep around `0`.
fn nested(depth: usize) -> serde_json::Value {
    (0..depth).fold(json!(0), |inner, _| json!([inner]))
}

/// Inserts a row around `stage`'s checks, as a hand-written `INSERT` could; returns its sequence.
async fn insert_raw(pool: &SqlitePool, event_id: &str, aggregate: &str, payload: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO palisade_outbox
            (event_id, event_type, aggregate_type, aggregate_id, destination, occurred_at, version, payload, metadata)
         VALUES (?, 'OrderUpdated', 'Order', ?, 'Order', '2026-12-01T10:00:00Z', 1, ?, '{}') RETURNING seq",
    )
    .bind(event_id)
    .bind(aggregate)
    .bind(payload)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn unreadable_rows_are_dead_lettered_counted_and_the_rest_published() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use palisade_core::telemetry::outbox as names;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let db = db().await;
    let store = SqliteStore::new(db.pool.clone());
    let too_deep = insert_raw(
        &db.pool,
        &uuid::Uuid::now_v7().to_string(),
        "deep",
        &nested(200).to_string(),
    )
    .await;
    let bad_id = insert_raw(&db.pool, "not-a-uuid", "a", "{}").await;
    let good = [order_event("a", 1), order_event("b", 1), order_event("a", 2)];
    stage_all(&db.pool, &good).await;

    let (publisher, mut rx) = ChannelPublisher::new(8);
    let relay = Relay::builder(store.clone(), publisher).name("orders").build().unwrap();
    let report = relay.run_batch().await.unwrap();
    assert_eq!(
        (report.claimed, report.published, report.failed, report.dead_lettered),
        (5, 3, 2, 2)
    );
    let mut received = Vec::new();
    for _ in 0..good.len() {
        received.push(receive(&mut rx).await);
    }
    let of = |aggregate: &str| -> Vec<Event> {
        received
            .iter()
            .filter(|e| e.aggregate_id == aggregate)
            .cloned()
            .collect()
    };
    assert_eq!(
        of("a"),
        [good[0].clone(), good[2].clone()],
        "an unreadable row does not hold its aggregate back"
    );
    assert_eq!(of("b"), [good[1].clone()]);

    let dead: Vec<(i64, Option<Event>, u32, Option<String>)> = store
        .dead_letters(10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.seq, d.event, d.attempts, d.last_error))
        .collect();
    assert_eq!(
        dead,
        [
            (
                too_deep,
                None,
                1,
                Some(format!(
                    "outbox row {too_deep} is malformed: payload: recursion limit exceeded at line 1 column 128"
                ))
            ),
            (
                bad_id,
                None,
                1,
                Some(format!(
                    "outbox row {bad_id} is malformed: event_id: invalid character: found `n` at 0"
                ))
            ),
        ]
    );
    assert_eq!(
        relay.run_batch().await.unwrap().claimed,
        0,
        "dead letters are not claimed again"
    );
    let mut counters: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if let DebugValue::Counter(n) = value {
            *counters.entry(key.key().name().to_owned()).or_default() += n;
        }
    }
    assert_eq!(counters.get(names::PUBLISHED_TOTAL), Some(&3));
    assert_eq!(counters.get(names::FAILED_TOTAL), Some(&2));
    assert_eq!(counters.get(names::DEAD_LETTERED_TOTAL), Some(&2));
}

#[tokio::test]
async fn staging_refuses_a_payload_nested_deeper_than_consumers_read() {
    let db = db().await;
    let mut tx = db.pool.begin().await.unwrap();
    let too_deep = Event::new("OrderUpdated", "Order", "a", nested(MAX_PAYLOAD_DEPTH + 1));
    let error = stage(&mut tx, &too_deep).await.unwrap_err();
    assert!(
        matches!(
            error,
            OutboxError::PayloadTooDeep {
                limit: MAX_PAYLOAD_DEPTH
            }
        ),
        "{error:?}"
    );
    let deepest = Event::new("OrderUpdated", "Order", "a", nested(MAX_PAYLOAD_DEPTH));
    stage(&mut tx, &deepest).await.unwrap();
    tx.commit().await.unwrap();
    let (lease, claimed, unreadable) = SqliteStore::new(db.pool.clone())
        .claim(10, Duration::from_secs(30))
        .await
        .unwrap();
    drop(lease);
    assert!(unreadable.is_empty());
    let events: Vec<Event> = claimed.into_iter().map(|c| c.event).collect();
    assert_eq!(events, [deepest], "only the readable event was staged");
}

#[tokio::test]
async fn a_migration_whose_commit_fails_leaves_no_transaction_open() {
    // In rollback-journal mode a COMMIT waits for readers to finish; past the
    // busy timeout it fails, with the transaction still open on its connection.
    let path = std::env::temp_dir().join(format!("palisade-outbox-{}-busy-commit.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Delete)
        .busy_timeout(Duration::from_millis(100));
    // One connection, so the next use gets the one the migration ran on.
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await
        .unwrap();
    let mut reader = sqlx::ConnectOptions::connect(&options).await.unwrap();
    sqlx::Executor::execute(&mut reader, "BEGIN; SELECT count(*) FROM sqlite_master;")
        .await
        .unwrap();
    assert!(
        migrate(&pool).await.is_err(),
        "the commit waits on the reader past the busy timeout"
    );
    sqlx::Executor::execute(&mut reader, "COMMIT").await.unwrap();

    // The connection is usable, with nothing of the failed migration on it.
    let mut tx = pool.begin().await.expect("no transaction left open");
    let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name LIKE 'palisade_outbox%'")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(tables, 0, "the failed migration was rolled back");
    tx.rollback().await.unwrap();
    migrate(&pool).await.unwrap();
    pool.close().await;
    let _ = std::fs::remove_file(&path);
}
