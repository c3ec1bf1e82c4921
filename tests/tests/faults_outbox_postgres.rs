//! The outbox relay's PostgreSQL connection cut at the worst moments, through a fault proxy:
//! during a claim, while a batch is being published, and at the commit that records it.
//! Every staged event is published, only a batch whose record was lost comes again (with
//! the same event ids), and each aggregate's events come in order.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_outbox::postgres::{PgStore, migrate};
use palisade_outbox::{Event, OutboxStore, PublishError, Publisher, Relay, stage};
use palisade_tests::fault_proxy::{Action, Direction, FaultProxy};
use palisade_tests::{Postgres, upstream_of, via};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::time::{Instant, timeout};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
const AGGREGATES: usize = 4;
const VERSIONS: i64 = 10;
const BATCH: usize = 8;

/// Records every publish in one shared log.
#[derive(Clone, Default)]
struct Recorder {
    log: Arc<Mutex<Vec<Event>>>,
}

impl Publisher for Recorder {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        self.log.lock().unwrap().push(event.clone());
        Ok(())
    }
}

/// Stages `VERSIONS` events for each of `AGGREGATES` aggregates, version by version, so the
/// first batch is versions 1 and 2 of every aggregate.
async fn stage_all(pool: &PgPool) -> Vec<Event> {
    let mut staged = Vec::new();
    let mut tx = pool.begin().await.unwrap();
    for v in 1..=VERSIONS {
        for a in 0..AGGREGATES {
            let event = Event::new("Updated", "Account", format!("acct-{a}"), json!({ "v": v })).with_version(v);
            stage(&mut tx, &event).await.unwrap();
            staged.push(event);
        }
    }
    tx.commit().await.unwrap();
    staged
}

async fn pending(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM palisade_outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Runs one relay (one worker, batches of `BATCH`) whose database connections go through a
/// proxy with the trigger `(direction, pattern, action)` set, until every staged event was
/// published and the outbox is empty. Returns what was staged and the publish log.
async fn publish_through_fault(test: &str, direction: Direction, pattern: &[u8], action: Action) -> Option<Outcome> {
    let pg = Postgres::connect(test).await?;
    migrate(&pg.pool).await.unwrap();
    let proxy = FaultProxy::start(upstream_of(&pg.url, 5432)).await.unwrap();
    let relay_pool = PgPoolOptions::new()
        .max_connections(2)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&via(&pg.url_in_schema(), &proxy))
        .await
        .unwrap();
    let fault = proxy.on(direction, pattern, action);
    let staged = stage_all(&pg.pool).await;
    let recorder = Recorder::default();
    let relay = Relay::builder(PgStore::new(relay_pool.clone()).vacuum_after(0), recorder.clone())
        .workers(1)
        .batch_size(BATCH)
        .poll_interval(Duration::from_millis(20))
        .build()
        .unwrap()
        .spawn();
    timeout(WAIT, fault.fired()).await.expect("the fault happened");
    let ids: HashSet<Uuid> = staged.iter().map(|e| e.event_id).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let published: HashSet<Uuid> = recorder.log.lock().unwrap().iter().map(|e| e.event_id).collect();
        if published.is_superset(&ids) && pending(&pg.pool).await == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events published in time",
            published.intersection(&ids).count(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.shutdown().await;
    relay_pool.close().await;
    drop(proxy);
    pg.cleanup().await;
    let log = std::mem::take(&mut *recorder.log.lock().unwrap());
    Some(Outcome { staged, log })
}

struct Outcome {
    staged: Vec<Event>,
    log: Vec<Event>,
}

impl Outcome {
    /// Checks that nothing was lost or altered and that each aggregate's first deliveries
    /// came in version order; returns the ids published more than once, each exactly twice.
    fn check(&self) -> HashSet<Uuid> {
        let staged: HashMap<Uuid, &Event> = self.staged.iter().map(|e| (e.event_id, e)).collect();
        let mut copies: HashMap<Uuid, usize> = HashMap::new();
        let mut next: HashMap<&str, i64> = HashMap::new();
        for event in &self.log {
            assert_eq!(
                Some(&event),
                staged.get(&event.event_id),
                "a published event is a staged one, unaltered"
            );
            let count = copies.entry(event.event_id).or_default();
            *count += 1;
            if *count == 1 {
                let expected = next.entry(event.aggregate_id.as_str()).or_insert(1);
                assert_eq!(
                    event.version, *expected,
                    "aggregate {} out of order",
                    event.aggregate_id
                );
                *expected += 1;
            }
        }
        assert_eq!(copies.len(), self.staged.len(), "every staged event was published");
        assert!(
            next.values().all(|&n| n == VERSIONS + 1),
            "every aggregate reached its last version"
        );
        assert!(copies.values().all(|&n| n <= 2), "nothing published more than twice");
        copies.into_iter().filter(|&(_, n)| n == 2).map(|(id, _)| id).collect()
    }

    /// The ids of the first batch the relay claims: the first `BATCH` staged.
    fn first_batch(&self) -> HashSet<Uuid> {
        self.staged[..BATCH].iter().map(|e| e.event_id).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_never_reaches_the_database_is_made_again_and_nothing_comes_twice() {
    let Some(outcome) = publish_through_fault(
        "fault_claim_request",
        Direction::ToUpstream,
        b"EXECUTE palisade_outbox_claim",
        Action::Cut,
    )
    .await
    else {
        return;
    };
    assert_eq!(outcome.check(), HashSet::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_rows_are_lost_on_the_way_frees_them_and_nothing_comes_twice() {
    // The claim ran and locked its rows; the connection dies while they come back.
    let Some(outcome) = publish_through_fault("fault_claim_rows", Direction::ToClient, b"acct-", Action::Cut).await
    else {
        return;
    };
    assert_eq!(outcome.check(), HashSet::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_while_the_batch_is_published_publishes_that_batch_again_with_the_same_ids() {
    // The savepoint before the removal that overlaps the publishes never arrives.
    let Some(outcome) = publish_through_fault(
        "fault_record_ahead",
        Direction::ToUpstream,
        b"SAVEPOINT palisade_recorded_ahead",
        Action::Cut,
    )
    .await
    else {
        return;
    };
    assert_eq!(outcome.check(), outcome.first_batch());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_never_reaches_the_database_publishes_that_batch_again_with_the_same_ids() {
    let Some(outcome) =
        publish_through_fault("fault_commit_request", Direction::ToUpstream, b"COMMIT\0", Action::Cut).await
    else {
        return;
    };
    assert_eq!(outcome.check(), outcome.first_batch());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_stays_committed_and_nothing_comes_twice() {
    // The server committed the batch as published; the relay never hears it.
    let Some(outcome) =
        publish_through_fault("fault_commit_answer", Direction::ToClient, b"COMMIT\0", Action::Cut).await
    else {
        return;
    };
    assert_eq!(outcome.check(), HashSet::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_stalled_on_the_network_is_given_up_within_the_lease_and_nothing_is_lost() {
    const LEASE: Duration = Duration::from_secs(3);
    let Some(pg) = Postgres::connect("fault_claim_stall").await else {
        return;
    };
    migrate(&pg.pool).await.unwrap();
    let proxy = FaultProxy::start(upstream_of(&pg.url, 5432)).await.unwrap();
    // The server ends a transaction left idle for 2 s, which frees a stalled claim's rows.
    let url = format!(
        "{}%20-c%20idle_in_transaction_session_timeout%3D2000",
        via(&pg.url_in_schema(), &proxy)
    );
    let relay_pool = PgPoolOptions::new()
        .max_connections(2)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .unwrap();
    let idle_timeout: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(&relay_pool)
        .await
        .unwrap();
    assert_eq!(idle_timeout, "2s");
    // The claim runs and locks its rows; its answer never arrives, and the connection stays open.
    let fault = proxy.on(Direction::ToClient, b"acct-", Action::Stall);
    let staged = stage_all(&pg.pool).await;
    let recorder = Recorder::default();
    let relay = Relay::builder(PgStore::new(relay_pool.clone()).vacuum_after(0), recorder.clone())
        .workers(1)
        .batch_size(BATCH)
        .poll_interval(Duration::from_millis(20))
        .publish_timeout(Duration::from_secs(1))
        .lease(LEASE)
        .build()
        .unwrap()
        .spawn();
    timeout(WAIT, fault.fired()).await.expect("the fault happened");
    // The stall never ends: the relay must give the claim up on its own and claim again.
    let deadline = Instant::now() + LEASE * 5;
    while pending(&pg.pool).await > 0 {
        assert!(
            Instant::now() < deadline,
            "{} of {} events published while the claim stalls",
            recorder.log.lock().unwrap().len(),
            staged.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = std::mem::take(&mut *recorder.log.lock().unwrap());
    assert_eq!(Outcome { staged, log }.check(), HashSet::new());
    relay.abort();
    drop(proxy);
    relay_pool.close().await;
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_count_given_up_on_a_stalled_connection_gives_its_pool_slot_back() {
    let Some(pg) = Postgres::connect("fault_backlog_stall").await else {
        return;
    };
    migrate(&pg.pool).await.unwrap();
    let proxy = FaultProxy::start(upstream_of(&pg.url, 5432)).await.unwrap();
    let relay_pool = PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(3))
        .connect(&via(&pg.url_in_schema(), &proxy))
        .await
        .unwrap();
    let store = PgStore::new(relay_pool.clone());
    let fault = proxy.on(Direction::ToUpstream, b"AS pending", Action::Stall);
    // What the relay does with a store operation past its store timeout: drops it.
    assert!(timeout(Duration::from_secs(1), store.backlog()).await.is_err());
    assert!(fault.has_fired());
    // The stalled connection was closed, not handed back to the pool to hang its next user.
    let backlog = timeout(Duration::from_secs(10), store.backlog())
        .await
        .expect("the pool's one slot is free again")
        .unwrap();
    assert_eq!(backlog.pending, 0);
    drop(proxy);
    relay_pool.close().await;
    pg.cleanup().await;
}
