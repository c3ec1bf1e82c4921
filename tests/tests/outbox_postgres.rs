//! The outbox on a live PostgreSQL: staging, several relays, faults, the publish hook and
//! wake-ups across instances.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_outbox::MAX_PAYLOAD_DEPTH;
use palisade_outbox::postgres::{PgStore, forward_wakeups, migrate, wake_on_notify};
use palisade_outbox::{
    ChannelPublisher, Disposition, Event, OutboxAdmin, OutboxContext, OutboxStore, PublishError, PublishHookLayer,
    Publisher, Relay, RelayHandle, Seen, Wakeup, process_once, stage,
};
use palisade_tests::{Postgres, wait_until};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

async fn setup(test: &str) -> Option<(Postgres, PgStore)> {
    let pg = Postgres::connect(test).await?;
    migrate(&pg.pool).await.expect("migrate");
    migrate(&pg.pool).await.expect("migrating again is harmless");
    let store = PgStore::new(pg.pool.clone());
    Some((pg, store))
}

fn event(aggregate: &str, version: i64) -> Event {
    Event::new("Updated", "Account", aggregate, json!({ "v": version })).with_version(version)
}

async fn stage_committed(pool: &PgPool, events: &[Event]) {
    let mut tx = pool.begin().await.unwrap();
    for e in events {
        stage(&mut tx, e).await.unwrap();
    }
    tx.commit().await.unwrap();
}

async fn receive(rx: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("an event in time")
        .expect("channel open")
}

async fn pending(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM palisade_outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_events_are_claimable_rolled_back_ones_never() {
    let Some((pg, store)) = setup("outbox_commit").await else {
        return;
    };
    let kept = event("a", 1).with_correlation_id("corr").with_source("accounts");
    let mut tx = pg.pool.begin().await.unwrap();
    stage(&mut tx, &kept).await.unwrap();
    let (claim, before, _) = store.claim(10, Duration::from_secs(30)).await.unwrap();
    assert!(before.is_empty(), "uncommitted events are invisible");
    store.complete(claim, &[], false).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = pg.pool.begin().await.unwrap();
    stage(&mut tx, &event("b", 1)).await.unwrap();
    tx.rollback().await.unwrap();

    let (claim, claimed, _) = store.claim(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].event, kept);
    store.complete(claim, &[], false).await.unwrap();

    let (publisher, mut rx) = ChannelPublisher::new(8);
    let relay = Relay::builder(store.clone(), publisher).build().unwrap();
    assert_eq!(relay.run_batch().await.unwrap().published, 1);
    assert_eq!(receive(&mut rx).await, kept);
    assert_eq!(pending(&pg.pool).await, 0);
    assert!(rx.try_recv().is_err(), "the rolled-back event is never published");
    pg.cleanup().await;
}

/// Records every publish in one shared log.
#[derive(Clone)]
struct Recorder {
    log: Arc<Mutex<Vec<Event>>>,
}

impl Publisher for Recorder {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        tokio::task::yield_now().await;
        self.log.lock().unwrap().push(event.clone());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_ten_thousand_events_once_each_in_aggregate_order() {
    const AGGREGATES: usize = 100;
    const VERSIONS: i64 = 100;
    const STAGERS: usize = 4;
    let Some((pg, store)) = setup("outbox_two_relays").await else {
        return;
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    let wakeup = Wakeup::new();
    let relays = recording_relays([store.clone(), store], &log, &wakeup, 250, Duration::from_millis(20));
    let stagers: Vec<_> = (0..STAGERS)
        .map(|s| {
            let pool = pg.pool.clone();
            let wakeup = wakeup.clone();
            tokio::spawn(async move {
                let mine = owned_aggregates(s, STAGERS, AGGREGATES);
                for v in 1..=VERSIONS {
                    let events: Vec<Event> = mine.iter().map(|a| event(a, v)).collect();
                    stage_committed(&pool, &events).await;
                    wakeup.wake();
                }
            })
        })
        .collect();
    for s in stagers {
        s.await.unwrap();
    }
    published_once_each_in_order(&pg.pool, &log, relays, AGGREGATES, VERSIONS).await;
    pg.cleanup().await;
}

/// Two relays, one on each of `stores`, recording into `log` and woken by `wakeup`.
fn recording_relays(
    stores: [PgStore; 2],
    log: &Arc<Mutex<Vec<Event>>>,
    wakeup: &Wakeup,
    batch_size: usize,
    poll_interval: Duration,
) -> Vec<RelayHandle> {
    stores
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            Relay::builder(store, Recorder { log: log.clone() })
                .name(format!("relay-{i}"))
                .batch_size(batch_size)
                .poll_interval(poll_interval)
                .wakeup(wakeup.clone())
                .build()
                .unwrap()
                .spawn()
        })
        .collect()
}

/// The aggregates (`acct-N`) that stager `stager` of `stagers` stages events for.
fn owned_aggregates(stager: usize, stagers: usize, aggregates: usize) -> Vec<String> {
    (0..aggregates)
        .filter(|a| a % stagers == stager)
        .map(|a| format!("acct-{a}"))
        .collect()
}

/// Waits until every one of `aggregates` × `versions` events is in `log`, stops `relays`, and
/// checks that each was published once, every aggregate's in version order, and that nothing
/// is left pending.
async fn published_once_each_in_order(
    pool: &PgPool,
    log: &Mutex<Vec<Event>>,
    relays: Vec<RelayHandle>,
    aggregates: usize,
    versions: i64,
) {
    let total = aggregates * usize::try_from(versions).unwrap();
    let deadline = Instant::now() + WAIT;
    while log.lock().unwrap().len() < total {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} published in time",
            log.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for relay in relays {
        relay.shutdown().await;
    }
    let log = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(log.len(), total, "no event published twice");
    let ids: HashSet<Uuid> = log.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), total);
    let mut next: HashMap<&str, i64> = HashMap::new();
    for e in log.iter() {
        let expected = next.entry(e.aggregate_id.as_str()).or_insert(1);
        assert_eq!(e.version, *expected, "aggregate {} out of order", e.aggregate_id);
        *expected += 1;
    }
    assert_eq!(next.len(), aggregates);
    assert_eq!(pending(pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_aborted_mid_batch_loses_nothing_and_the_inbox_drops_redeliveries() {
    const EVENTS: i64 = 40;
    let Some((pg, store)) = setup("outbox_abort").await else {
        return;
    };
    sqlx::query("CREATE TABLE applied (event_id UUID PRIMARY KEY)")
        .execute(&pg.pool)
        .await
        .unwrap();
    let events: Vec<Event> = (1..=EVENTS).map(|v| event(&format!("acct-{}", v % 4), v)).collect();
    stage_committed(&pg.pool, &events).await;

    // The consumer applies each event once, whatever is redelivered.
    let apply = |pool: PgPool, e: Event| async move {
        let mut tx = pool.begin().await.unwrap();
        let seen = process_once(&mut tx, "ledger", e.event_id).await.unwrap();
        if seen == Seen::First {
            sqlx::query("INSERT INTO applied (event_id) VALUES ($1)")
                .bind(e.event_id)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        seen
    };

    // A one-slot channel stalls the relay mid-batch; abort it there. One
    // batch loop, so every event is in the stalled batch: a second loop's
    // claim, racing the first, can take a few events in a batch of its own
    // and publish and record them before the abort.
    let (publisher, mut rx) = ChannelPublisher::new(1);
    let first = Relay::builder(store.clone(), publisher)
        .batch_size(100)
        .workers(1)
        .build()
        .unwrap()
        .spawn();
    let mut delivered = Vec::new();
    for _ in 0..5 {
        delivered.push(receive(&mut rx).await);
    }
    first.abort();
    while let Ok(e) = rx.try_recv() {
        delivered.push(e);
    }
    assert_eq!(pending(&pg.pool).await, EVENTS, "an aborted batch records nothing");

    let (publisher, mut rx) = ChannelPublisher::new(64);
    let second = Relay::builder(store.clone(), publisher).build().unwrap().spawn();
    let mut ids: HashSet<Uuid> = delivered.iter().map(|e| e.event_id).collect();
    let before_restart = ids.clone();
    let mut duplicates = 0;
    for e in &delivered {
        assert_eq!(apply(pg.pool.clone(), e.clone()).await, Seen::First);
    }
    while ids.len() < EVENTS as usize {
        let e = receive(&mut rx).await;
        if apply(pg.pool.clone(), e.clone()).await.is_duplicate() {
            duplicates += 1;
            assert!(
                before_restart.contains(&e.event_id),
                "only the aborted batch's events come twice"
            );
        }
        ids.insert(e.event_id);
    }
    second.shutdown().await;
    while let Ok(e) = rx.try_recv() {
        assert!(apply(pg.pool.clone(), e.clone()).await.is_duplicate());
        assert!(
            before_restart.contains(&e.event_id),
            "only the aborted batch's events come twice"
        );
        duplicates += 1;
    }
    assert_eq!(
        duplicates,
        before_restart.len(),
        "the aborted batch is published again in full"
    );
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM applied")
        .fetch_one(&pg.pool)
        .await
        .unwrap();
    assert_eq!(applied, EVENTS, "every event applied exactly once");
    assert_eq!(pending(&pg.pool).await, 0);
    pg.cleanup().await;
}

/// Fails every publish while `failing` is set.
#[derive(Clone)]
struct Flaky {
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    sender: mpsc::Sender<Event>,
}

impl Publisher for Flaky {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(PublishError::transient(std::io::Error::other("broker unreachable")));
        }
        self.sender.send(event.clone()).await.map_err(PublishError::transient)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_failing_every_call_dead_letters_after_the_cap_then_requeue_delivers() {
    let Some((pg, store)) = setup("outbox_dead_letter").await else {
        return;
    };
    let (sender, mut rx) = mpsc::channel(8);
    let publisher = Flaky {
        failing: Arc::new(AtomicBool::new(true)),
        calls: Arc::default(),
        sender,
    };
    let relay = Relay::builder(store.clone(), publisher.clone())
        .max_attempts(4)
        .backoff(Duration::from_millis(1), Duration::from_millis(4), 2.0)
        .poll_interval(Duration::from_millis(5))
        .build()
        .unwrap();
    let poison = event("a", 1);
    stage_committed(&pg.pool, std::slice::from_ref(&poison)).await;
    let handle = relay.spawn();
    wait_until("dead-lettered", WAIT, || async {
        !store.dead_letters(10).await.unwrap().is_empty()
    })
    .await;
    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead[0].event.as_ref(), Some(&poison));
    assert_eq!(dead[0].attempts, 4);
    assert_eq!(publisher.calls.load(Ordering::SeqCst), 4, "no attempt after the cap");
    assert!(dead[0].last_error.as_deref().unwrap().contains("broker unreachable"));
    let backlog = store.backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.dead_lettered), (0, 1));

    publisher.failing.store(false, Ordering::SeqCst);
    assert!(store.requeue(poison.event_id).await.unwrap());
    handle.wake();
    assert_eq!(receive(&mut rx).await, poison);
    handle.shutdown().await;
    assert_eq!(pending(&pg.pool).await, 0);
    pg.cleanup().await;
}

/// Fails aggregate `a`'s events with an error whose text holds a NUL byte (a receiver's
/// binary error body, quoted in the message); publishes the rest.
#[derive(Clone)]
struct NulError(Arc<Mutex<Vec<Event>>>);

impl Publisher for NulError {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        if event.aggregate_id == "a" {
            return Err(PublishError::transient(std::io::Error::other(
                "receiver answered 502: \u{1f}\u{8b}\u{8}\0 gzip",
            )));
        }
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_with_a_nul_byte_is_recorded_and_the_rest_of_the_batch_published() {
    // PostgreSQL's text refuses NUL: recording such an error verbatim failed the batch's
    // completion, so nothing in it was marked and the same batch came back again and again.
    let Some((pg, store)) = setup("outbox_nul_error").await else {
        return;
    };
    let published = Arc::new(Mutex::new(Vec::new()));
    let relay = Relay::builder(store.clone(), NulError(published.clone()))
        .backoff(Duration::from_secs(60), Duration::from_secs(60), 2.0)
        .build()
        .unwrap();
    stage_committed(&pg.pool, &[event("a", 1), event("b", 1)]).await;
    let report = relay.run_batch().await.expect("the batch completes");
    assert_eq!((report.published, report.failed), (1, 1));
    assert_eq!(published.lock().unwrap().len(), 1);
    let report = relay.run_batch().await.unwrap();
    assert_eq!(
        (report.published, report.failed),
        (0, 0),
        "b is not published again; a waits"
    );
    let last_error: String = sqlx::query_scalar("SELECT last_error FROM palisade_outbox")
        .fetch_one(&pg.pool)
        .await
        .unwrap();
    assert_eq!(
        last_error,
        "publish failed (transient): receiver answered 502: \u{1f}\u{8b}\u{8}\u{fffd} gzip"
    );
    pg.cleanup().await;
}

/// Fails every publish after `0`: transiently for aggregate `a`, for good for the others.
struct FailsAfter(Duration);

impl Publisher for FailsAfter {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        tokio::time::sleep(self.0).await;
        let error = std::io::Error::other("broker busy");
        Err(if event.aggregate_id == "a" {
            PublishError::transient(error)
        } else {
            PublishError::permanent(error)
        })
    }
}

/// The database's clock, in seconds since the epoch.
async fn clock(pool: &PgPool) -> f64 {
    sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_is_timed_from_when_it_is_recorded_not_from_the_claim() {
    // The claim's transaction lasts while the batch is published, and its `now()` is its
    // start: a publish that failed after longer than its backoff got a retry time already
    // past (no backoff at all), and a dead letter the time of the claim.
    const PUBLISH: Duration = Duration::from_millis(1500);
    let Some((pg, store)) = setup("outbox_failure_times").await else {
        return;
    };
    let relay = Relay::builder(store, FailsAfter(PUBLISH))
        .backoff(Duration::from_secs(1), Duration::from_secs(1), 2.0)
        .random(|| 0.999)
        .build()
        .unwrap();
    stage_committed(&pg.pool, &[event("a", 1), event("b", 1)]).await;
    let before = clock(&pg.pool).await;
    let report = relay.run_batch().await.unwrap();
    assert_eq!((report.failed, report.dead_lettered), (2, 1));
    let retry_ahead: bool =
        sqlx::query_scalar("SELECT next_attempt_at > clock_timestamp() FROM palisade_outbox WHERE aggregate_id = 'a'")
            .fetch_one(&pg.pool)
            .await
            .unwrap();
    assert!(retry_ahead, "the retry waits for its backoff after the failure");
    let dead_after: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM dead_lettered_at)::float8 FROM palisade_outbox WHERE aggregate_id = 'b'",
    )
    .fetch_one(&pg.pool)
    .await
    .unwrap();
    assert!(
        dead_after - before >= PUBLISH.as_secs_f64(),
        "dead-lettered {:.3} s after the batch started, before its publish failed",
        dead_after - before
    );
    assert_eq!(
        relay.run_batch().await.unwrap().claimed,
        0,
        "nothing is due again at once"
    );
    pg.cleanup().await;
}

fn median_and_max(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], samples[samples.len() - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_publishes_well_before_the_poll_interval() {
    const REQUESTS: usize = 20;
    let Some((pg, store)) = setup("outbox_hook").await else {
        return;
    };
    let (publisher, mut rx) = ChannelPublisher::new(64);
    let relay = Relay::builder(store, publisher)
        .poll_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = relay.spawn();
    let committed: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();

    let pool = pg.pool.clone();
    let times = committed.clone();
    let handler = service_fn(move |req: http::Request<()>| {
        let pool = pool.clone();
        let times = times.clone();
        async move {
            let ctx = req.extensions().get::<OutboxContext>().cloned().unwrap();
            let event = ctx.event("Deposited", "Account", "acct-1", json!({"amount": 5}));
            let mut tx = pool.begin().await.unwrap();
            stage(&mut tx, &event).await.unwrap();
            tx.commit().await.unwrap();
            times.lock().unwrap().insert(event.event_id, Instant::now());
            Ok::<_, Infallible>(http::Response::new(()))
        }
    });
    let mut service = PublishHookLayer::new(relay.wakeup()).layer(handler);
    let mut latencies = Vec::new();
    for i in 0..REQUESTS {
        // A quiet spell: a relay that found nothing new idles until its poll or a wake-up.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let request = http::Request::post("/deposits")
            .header("x-correlation-id", format!("req-{i}"))
            .body(())
            .unwrap();
        service.ready().await.unwrap().call(request).await.unwrap();
        let e = receive(&mut rx).await;
        assert_eq!(e.metadata.correlation_id, Some(format!("req-{i}")));
        latencies.push(committed.lock().unwrap()[&e.event_id].elapsed());
    }
    handle.shutdown().await;
    let (median, max) = median_and_max(latencies);
    eprintln!("commit-to-consumer latency with the hook: median {median:?}, max {max:?}");
    // Without the hook every event would wait for the 1 s poll: the relay idles between requests.
    assert!(
        max < Duration::from_millis(500),
        "every event well before the 1 s poll: max {max:?}"
    );
    assert!(median < Duration::from_millis(100), "median {median:?}");
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_wakes_a_relay_in_another_instance() {
    let Some((pg, store)) = setup("outbox_notify").await else {
        return;
    };
    let channel = pg.schema.clone();
    // Instance A stages and wakes; instance B runs the relay with a long poll.
    let wakeup_a = Wakeup::new();
    let forwarder = tokio::spawn(forward_wakeups(pg.pool.clone(), channel.clone(), wakeup_a.clone()));
    let (publisher, mut rx) = ChannelPublisher::new(8);
    let relay_b = Relay::builder(store, publisher)
        .poll_interval(Duration::from_secs(30))
        .build()
        .unwrap();
    let listener = tokio::spawn(wake_on_notify(pg.pool.clone(), channel.clone(), relay_b.wakeup()));
    let handle = relay_b.spawn();
    // Wait until the listener's LISTEN has reached the server.
    let deadline = Instant::now() + WAIT;
    loop {
        let listening: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE query = $1")
            .bind(format!("LISTEN \"{channel}\""))
            .fetch_one(&pg.pool)
            .await
            .unwrap();
        if listening > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "listener up in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for v in 1..=3 {
        // A quiet spell: relay B found nothing new and idles until its poll or a wake-up.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let e = event("a", v);
        stage_committed(&pg.pool, std::slice::from_ref(&e)).await;
        let committed = Instant::now();
        wakeup_a.wake();
        assert_eq!(receive(&mut rx).await, e);
        let latency = committed.elapsed();
        assert!(
            latency < Duration::from_secs(2),
            "woken by NOTIFY, not the 30 s poll: {latency:?}"
        );
    }
    handle.shutdown().await;
    forwarder.abort();
    listener.abort();
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_are_archived_for_the_retention_then_purged() {
    let Some((pg, store)) = setup("outbox_retention").await else {
        return;
    };
    let (publisher, mut rx) = ChannelPublisher::new(8);
    let relay = Relay::builder(store.clone(), publisher)
        .retention(Duration::from_secs(3600))
        .build()
        .unwrap();
    let events = [event("a", 1), event("a", 2)];
    stage_committed(&pg.pool, &events).await;
    assert_eq!(relay.run_batch().await.unwrap().published, 2);
    assert_eq!([receive(&mut rx).await, receive(&mut rx).await], events);
    assert_eq!(pending(&pg.pool).await, 0);
    let archived: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM palisade_outbox_published ORDER BY seq")
        .fetch_all(&pg.pool)
        .await
        .unwrap();
    assert_eq!(archived, [events[0].event_id, events[1].event_id]);
    assert_eq!(
        store.purge_published(Duration::from_secs(3600)).await.unwrap(),
        0,
        "still within retention"
    );
    sqlx::query("UPDATE palisade_outbox_published SET published_at = published_at - interval '2 hours'")
        .execute(&pg.pool)
        .await
        .unwrap();
    assert_eq!(store.purge_published(Duration::from_secs(3600)).await.unwrap(), 2);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_skip_held_and_retrying_aggregates() {
    let Some((pg, store)) = setup("outbox_claims").await else {
        return;
    };
    let staged = [
        event("a", 1),
        event("b", 1),
        event("a", 2),
        event("b", 2),
        event("a", 3),
        event("b", 3),
        event("c", 1),
    ];
    stage_committed(&pg.pool, &staged).await;
    let names = |claimed: &[palisade_outbox::Claimed]| -> Vec<(String, i64)> {
        claimed
            .iter()
            .map(|c| (c.event.aggregate_id.clone(), c.event.version))
            .collect()
    };
    let lease = Duration::from_secs(30);
    let (first, held, _) = store.claim(3, lease).await.unwrap();
    assert_eq!(names(&held), [("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]);
    // While the first claim is open, a second one must not take anything of a or b.
    let (second, other, _) = store.claim(10, lease).await.unwrap();
    assert_eq!(names(&other), [("c".into(), 1)]);
    let retry = Disposition::Retry {
        delay: Duration::from_secs(60),
        error: "down".into(),
    };
    let outcomes = [
        (held[0].seq, retry),
        (held[1].seq, Disposition::Published),
        (held[2].seq, Disposition::Released),
    ];
    store.complete(first, &outcomes, false).await.unwrap();
    store
        .complete(second, &[(other[0].seq, Disposition::Published)], false)
        .await
        .unwrap();
    // a waits behind its retrying head; b goes on.
    let (third, next, _) = store.claim(10, lease).await.unwrap();
    assert_eq!(names(&next), [("b".into(), 2), ("b".into(), 3)]);
    store.complete(third, &[], false).await.unwrap();
    let last_error: Option<String> = sqlx::query_scalar("SELECT last_error FROM palisade_outbox WHERE event_id = $1")
        .bind(staged[0].event_id)
        .fetch_one(&pg.pool)
        .await
        .unwrap();
    assert_eq!(last_error.as_deref(), Some("down"));
    pg.cleanup().await;
}

/// A one-connection pool on the test's schema, so a test can see what state the relay's
/// connection goes back to the pool in.
async fn single_connection_pool(pg: &Postgres) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&pg.url_in_schema())
        .await
        .expect("a one-connection pool")
}

/// The id of the transaction the next statement on `pool` runs in, if one is still open with writes.
async fn open_transaction(pool: &PgPool) -> Option<String> {
    sqlx::query_scalar("SELECT pg_current_xact_id_if_assigned()::text")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_claim_never_returns_its_transaction_to_the_pool() {
    let Some((pg, _)) = setup("outbox_dropped_claim").await else {
        return;
    };
    let pool = single_connection_pool(&pg).await;
    let store = PgStore::new(pool.clone());
    stage_committed(&pg.pool, &[event("a", 1)]).await;
    // The server process of the pool's one connection, which the claim runs on.
    let claiming: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();

    let (claim, claimed, _) = store.claim(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    // What an aborted relay does: the claim goes away mid-batch.
    drop(claim);
    assert_eq!(
        open_transaction(&pool).await,
        None,
        "the pool's connection is outside any transaction"
    );
    // The claim's connection is closed, not returned: its transaction, and the row locks it
    // holds, end when the server process behind it exits, a moment after the client is gone.
    wait_until("the dropped claim's server process ended", WAIT, || async {
        let alive: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
            .bind(claiming)
            .fetch_one(&pg.pool)
            .await
            .unwrap();
        alive == 0
    })
    .await;
    let (claim, again, _) = store.claim(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(again, claimed, "the rows were released");
    store
        .complete(claim, &[(again[0].seq, Disposition::Published)], false)
        .await
        .unwrap();
    assert_eq!(open_transaction(&pool).await, None, "a completed claim commits");
    assert_eq!(pending(&pg.pool).await, 0);
    pool.close().await;
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_prepares_itself_again_on_a_connection_that_lost_it() {
    let Some((pg, _)) = setup("outbox_reprepare").await else {
        return;
    };
    let pool = single_connection_pool(&pg).await;
    let store = PgStore::new(pool.clone());
    let staged = [event("a", 1), event("b", 1)];
    stage_committed(&pg.pool, &staged).await;

    let (claim, first, _) = store.claim(1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(first[0].event, staged[0]);
    store
        .complete(claim, &[(first[0].seq, Disposition::Published)], false)
        .await
        .unwrap();
    // Whatever dropped it (`DEALLOCATE`, a session reset), the claim prepares it again.
    sqlx::raw_sql("DEALLOCATE palisade_outbox_claim")
        .execute(&pool)
        .await
        .unwrap();
    let (claim, second, _) = store.claim(1, Duration::from_secs(30)).await.unwrap();
    assert_eq!(second[0].event, staged[1]);
    store
        .complete(claim, &[(second[0].seq, Disposition::Published)], false)
        .await
        .unwrap();
    assert_eq!(pending(&pg.pool).await, 0);
    pool.close().await;
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_vacuums_the_outbox_after_the_set_number_of_published_rows() {
    let Some((pg, _)) = setup("outbox_vacuum").await else {
        return;
    };
    let vacuums = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = 'palisade_outbox'",
        )
        .fetch_one(&pg.pool)
        .await
        .unwrap()
    };
    assert_eq!(vacuums().await, 0);
    let store = PgStore::new(pg.pool.clone()).vacuum_after(3);
    let (publisher, mut rx) = ChannelPublisher::new(8);
    let relay = Relay::builder(store, publisher).build().unwrap();
    stage_committed(&pg.pool, &[event("a", 1), event("a", 2)]).await;
    assert_eq!(relay.run_batch().await.unwrap().published, 2);
    stage_committed(&pg.pool, &[event("a", 3)]).await;
    assert_eq!(relay.run_batch().await.unwrap().published, 1);
    for _ in 0..3 {
        receive(&mut rx).await;
    }
    // The vacuum runs in the background once the third row is gone.
    let deadline = Instant::now() + WAIT;
    while vacuums().await == 0 {
        assert!(Instant::now() < deadline, "the outbox was vacuumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(vacuums().await, 1);
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timestamp_rfc_3339_cannot_express_is_refused_at_staging_and_dead_lettered_if_found() {
    // Every envelope carries the timestamp as RFC 3339, which has four-digit years: such an
    // event was staged, then published with an empty body and deleted.
    let Some((pg, store)) = setup("outbox_bc_timestamp").await else {
        return;
    };
    let mut bc = event("bc", 1);
    bc.timestamp = time::macros::datetime!(-0001-06-01 0:00 UTC);
    let mut tx = pg.pool.begin().await.unwrap();
    let refused = stage(&mut tx, &bc).await.unwrap_err();
    assert!(refused.to_string().contains("timestamp"), "{refused}");
    drop(tx);

    // A row written before that check (or by hand) is dead-lettered, not published, and the
    // rest is published. PostgreSQL also takes 'infinity', '-infinity' and years up to
    // 294276, whose microseconds since the epoch do not fit in 64 bits: such a row must not
    // fail the claim of every batch either.
    let hand_written = [
        ("bc", "0002-06-01 00:00:00+00 BC"),
        ("inf", "infinity"),
        ("neg", "-infinity"),
        ("far", "294270-01-01 00:00:00+00"),
    ];
    let mut staged: Vec<Event> = hand_written.iter().map(|(aggregate, _)| event(aggregate, 1)).collect();
    staged.push(event("fine", 1));
    stage_committed(&pg.pool, &staged).await;
    for (aggregate, at) in hand_written {
        sqlx::query("UPDATE palisade_outbox SET occurred_at = $1::timestamptz WHERE aggregate_id = $2")
            .bind(at)
            .bind(aggregate)
            .execute(&pg.pool)
            .await
            .unwrap();
    }
    let published = Arc::new(Mutex::new(Vec::new()));
    let relay = Relay::builder(store.clone(), NulError(published.clone()))
        .build()
        .unwrap();
    let report = relay.run_batch().await.unwrap();
    assert_eq!((report.published, report.dead_lettered), (1, 4));
    let published: Vec<String> = published
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.aggregate_id.clone())
        .collect();
    assert_eq!(published, ["fine"]);
    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 4);
    for letter in &dead {
        assert!(
            letter.last_error.as_deref().unwrap().contains("occurred_at"),
            "{letter:?}"
        );
    }

    // Nor do such staging and dead-lettering times, which sqlx cannot decode (it panics):
    // they read as the nearest time an envelope can say.
    stage_committed(&pg.pool, &[event("pending", 1)]).await;
    for (column, at, aggregate) in [
        ("staged_at", "infinity", "inf"),
        ("staged_at", "-infinity", "neg"),
        ("dead_lettered_at", "294270-01-01 00:00:00+00", "far"),
        ("staged_at", "-infinity", "pending"),
    ] {
        sqlx::query(&format!(
            "UPDATE palisade_outbox SET {column} = $1::timestamptz WHERE aggregate_id = $2"
        ))
        .bind(at)
        .bind(aggregate)
        .execute(&pg.pool)
        .await
        .unwrap();
    }
    let first = time::macros::datetime!(0001-01-01 0:00 UTC);
    let last = time::macros::datetime!(9999-12-31 23:59:59.999999 UTC);
    let dead = store.dead_letters(10).await.unwrap();
    let mut staged: Vec<_> = dead.iter().map(|d| d.staged_at).collect();
    staged.sort();
    assert_eq!((staged[0], staged[3]), (first, last));
    assert!(dead.iter().any(|d| d.dead_lettered_at == last));
    assert!(serde_json::to_string(&dead).is_ok(), "RFC 3339 can say them");
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total.pending, 1);
    assert_eq!(stats.total.oldest_pending_at, Some(first));
    let backlog = store.backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.dead_lettered), (1, 4));
    assert!(
        backlog
            .oldest
            .is_some_and(|age| age > Duration::from_secs(1000 * 365 * 86_400))
    );
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_events_come_back_exactly_as_staged_whatever_their_timestamp() {
    let Some((pg, store)) = setup("outbox_timestamps").await else {
        return;
    };
    let at = |unix: i64, micros: i64| {
        time::OffsetDateTime::from_unix_timestamp(unix).unwrap() + time::Duration::microseconds(micros)
    };
    let staged: Vec<Event> = [
        at(1_790_000_000, 0),       // a whole second
        at(1_790_000_000, 120_000), // trailing zeros
        at(1_790_000_000, 999_999),
        at(0, 1), // the epoch
        at(-1_000_000_000, 7),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, timestamp)| {
        let mut e = event(&format!("t{i}"), 1);
        e.timestamp = timestamp;
        e
    })
    .collect();
    stage_committed(&pg.pool, &staged).await;
    let (claim, claimed, _) = store.claim(10, Duration::from_secs(30)).await.unwrap();
    let events: Vec<Event> = claimed.into_iter().map(|c| c.event).collect();
    assert_eq!(events, staged);
    store.complete(claim, &[], false).await.unwrap();
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_committed_late_are_published_once_and_in_order_by_claims_that_start_past_them() {
    const AGGREGATES: usize = 24;
    const VERSIONS: i64 = 30;
    const STAGERS: usize = 4;
    let Some((pg, _)) = setup("outbox_late_commits").await else {
        return;
    };
    // Two instances, each with its own store whose claims start 10 ms back: staging
    // transactions held open for 20 ms commit events that claims have already gone past,
    // and only the whole-table claims (every 10 ms) find them.
    let log = Arc::new(Mutex::new(Vec::new()));
    let wakeup = Wakeup::new();
    let store = || PgStore::new(pg.pool.clone()).full_scan_interval(Duration::from_millis(10));
    let relays = recording_relays([store(), store()], &log, &wakeup, 20, Duration::from_millis(5));
    let stagers: Vec<_> = (0..STAGERS)
        .map(|s| {
            let pool = pg.pool.clone();
            let wakeup = wakeup.clone();
            tokio::spawn(async move {
                let mine = owned_aggregates(s, STAGERS, AGGREGATES);
                // An aggregate's next event is staged right after the last one commits, so it
                // reaches a claim while a late one before it may still be pending.
                for aggregate in &mine {
                    for v in 1..=VERSIONS {
                        let mut tx = pool.begin().await.unwrap();
                        stage(&mut tx, &event(aggregate, v)).await.unwrap();
                        // One transaction in five stays open while others commit after it.
                        if (s as i64 + v) % 5 == 0 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        tx.commit().await.unwrap();
                        wakeup.wake();
                    }
                }
            })
        })
        .collect();
    for s in stagers {
        s.await.unwrap();
    }
    published_once_each_in_order(&pg.pool, &log, relays, AGGREGATES, VERSIONS).await;
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_reads_each_row_on_its_own() {
    let Some((pg, _)) = setup("outbox_unreadable_claim").await else {
        return;
    };
    let pool = single_connection_pool(&pg).await;
    let store = PgStore::new(pool.clone());
    let staged = [event("a", 1), event("b", 1)];
    stage_committed(&pg.pool, &staged).await;
    // Written by something other than `stage`: metadata that is not palisade's.
    sqlx::query("UPDATE palisade_outbox SET metadata = '{\"correlation_id\": 5}' WHERE aggregate_id = 'a'")
        .execute(&pg.pool)
        .await
        .unwrap();
    let (claim, claimed, unreadable) = store.claim(10, Duration::from_secs(30)).await.unwrap();
    let events: Vec<Event> = claimed.into_iter().map(|c| c.event).collect();
    assert_eq!(events, [staged[1].clone()]);
    assert_eq!(unreadable.len(), 1);
    assert!(
        matches!(unreadable[0].error, palisade_outbox::OutboxError::Malformed { ref reason, .. } if reason.starts_with("metadata: invalid type")),
        "{:?}",
        unreadable[0].error
    );
    let unclaimed: Vec<i64> = sqlx::query_scalar("SELECT seq FROM palisade_outbox FOR UPDATE SKIP LOCKED")
        .fetch_all(&pg.pool)
        .await
        .unwrap();
    assert_eq!(unclaimed, [0i64; 0], "the claim holds the unreadable row too");
    store.complete(claim, &[], false).await.unwrap();
    assert_eq!(open_transaction(&pool).await, None, "the claim's transaction is over");
    pool.close().await;
    pg.cleanup().await;
}

/// A JSON value nested `depth` arrays deep around `0`.
fn nested(depth: usize) -> serde_json::Value {
    (0..depth).fold(json!(0), |inner, _| json!([inner]))
}

/// Inserts a row the way a hand-written `INSERT` (or an older writer) could: around `stage`'s
/// checks. Returns its sequence number.
async fn insert_raw(pool: &PgPool, aggregate: &str, payload: &str, metadata: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO palisade_outbox
            (event_id, event_type, aggregate_type, aggregate_id, destination, occurred_at, version, payload, metadata)
         VALUES ($1, 'Updated', 'Account', $2, 'Account', now(), 1, $3::jsonb, $4::jsonb) RETURNING seq",
    )
    .bind(Uuid::now_v7())
    .bind(aggregate)
    .bind(payload)
    .bind(metadata)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_rows_are_dead_lettered_with_their_error_and_the_other_aggregates_are_published() {
    let Some((pg, store)) = setup("outbox_unreadable").await else {
        return;
    };
    // Older than every good event: a payload nested deeper than the decoder reads, and
    // metadata that is not palisade's.
    let too_deep = insert_raw(&pg.pool, "deep", &nested(200).to_string(), "{}").await;
    let bad_metadata = insert_raw(&pg.pool, "meta", "{}", "{\"correlation_id\": 5}").await;
    let good = [event("a", 1), event("b", 1), event("a", 2), event("b", 2)];
    stage_committed(&pg.pool, &good).await;

    let (publisher, mut rx) = ChannelPublisher::new(8);
    let relay = Relay::builder(store.clone(), publisher).build().unwrap();
    let report = relay.run_batch().await.unwrap();
    assert_eq!(
        (report.claimed, report.published, report.failed, report.dead_lettered),
        (6, 4, 2, 2)
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
    assert_eq!(of("a"), [good[0].clone(), good[2].clone()], "a's events, in order");
    assert_eq!(of("b"), [good[1].clone(), good[3].clone()], "b's events, in order");

    let dead = store.dead_letters(10).await.unwrap();
    let summary: Vec<(Option<Event>, u32, Option<String>)> =
        dead.into_iter().map(|d| (d.event, d.attempts, d.last_error)).collect();
    assert_eq!(
        summary,
        [
            (
                None,
                1,
                Some(format!(
                    "outbox row {too_deep} is malformed: payload: recursion limit exceeded at line 1 column 128"
                ))
            ),
            (
                None,
                1,
                Some(format!(
                    "outbox row {bad_metadata} is malformed: metadata: invalid type: integer `5`, expected a string"
                ))
            ),
        ]
    );
    assert_eq!(pending(&pg.pool).await, 2, "only the dead letters are left");
    assert_eq!(
        relay.run_batch().await.unwrap().claimed,
        0,
        "dead letters are not claimed again"
    );
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_refuses_a_payload_nested_deeper_than_consumers_read() {
    let Some((pg, store)) = setup("outbox_too_deep").await else {
        return;
    };
    let deepest = Event::new("Updated", "Account", "a", nested(MAX_PAYLOAD_DEPTH));
    let too_deep = Event::new("Updated", "Account", "a", nested(MAX_PAYLOAD_DEPTH + 1));
    let mut tx = pg.pool.begin().await.unwrap();
    let error = stage(&mut tx, &too_deep).await.unwrap_err();
    assert!(
        matches!(
            error,
            palisade_outbox::OutboxError::PayloadTooDeep {
                limit: MAX_PAYLOAD_DEPTH
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "event payload nests deeper than 126 levels: the relay and consumers could not read it back"
    );
    stage(&mut tx, &deepest).await.unwrap();
    tx.commit().await.unwrap();

    let (publisher, mut rx) = ChannelPublisher::new(8);
    let relay = Relay::builder(store, publisher).build().unwrap();
    assert_eq!(relay.run_batch().await.unwrap().published, 1);
    let published = receive(&mut rx).await;
    assert_eq!(published, deepest);
    let decoded: Event = serde_json::from_slice(&published.to_json()).expect("a consumer reads the envelope");
    assert_eq!(decoded, deepest);
    pg.cleanup().await;
}

/// The plan the claim runs on `pool`'s one connection (see [`prepared_plan`]).
async fn cached_claim_plan(pool: &PgPool) -> serde_json::Value {
    prepared_plan(pool, "palisade_outbox_claim(1000, 0)").await
}

/// The plan of the prepared statement call `execute` (`name(arguments)`) on `pool`'s one
/// connection, as `EXPLAIN (FORMAT JSON)` gives it: the generic plan the connection cached,
/// or, if PostgreSQL dropped it meanwhile (other sessions' schema changes can), the one the
/// statement would make now, with the settings the store's statements run under.
async fn prepared_plan(pool: &PgPool, execute: &str) -> serde_json::Value {
    let mut tx = pool.begin().await.unwrap();
    sqlx::raw_sql(CLAIM_SETTINGS).execute(&mut *tx).await.unwrap();
    let sqlx::types::Json(plan): sqlx::types::Json<serde_json::Value> =
        sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) EXECUTE {execute}"))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.rollback().await.unwrap();
    plan[0]["Plan"].clone()
}

/// Calls `visit` with every node of `plan` and whether it is inside a subplan.
fn each_node(node: &serde_json::Value, in_subplan: bool, visit: &mut impl FnMut(&serde_json::Value, bool)) {
    let in_subplan = in_subplan || node["Parent Relationship"] == "SubPlan";
    visit(node, in_subplan);
    for child in node["Plans"].as_array().into_iter().flatten() {
        each_node(child, in_subplan, visit);
    }
}

/// Every index the claim's per-aggregate order check (its subplan) scans.
async fn order_check_indexes(pool: &PgPool) -> Vec<String> {
    let mut found = Vec::new();
    each_node(&cached_claim_plan(pool).await, false, &mut |node, in_subplan| {
        if in_subplan && let Some(index) = node["Index Name"].as_str() {
            found.push(index.to_owned());
        }
    });
    found
}

/// Stages `count` copies of the pending event `template` over 100 aggregates, in one statement.
async fn stage_copies(pool: &PgPool, template: i64, count: i64) {
    sqlx::query(
        "INSERT INTO palisade_outbox (event_id, event_type, aggregate_type, aggregate_id, destination,
            occurred_at, version, payload, metadata)
         SELECT gen_random_uuid(), event_type, aggregate_type, 'copy-' || (i % 100), destination,
            occurred_at, version, payload, metadata
         FROM palisade_outbox, generate_series(1, $2) AS i WHERE seq = $1",
    )
    .bind(template)
    .bind(count)
    .execute(pool)
    .await
    .unwrap();
}

/// The settings the relay's transaction plans its statements with (see the store's docs).
const CLAIM_SETTINGS: &str = "SET LOCAL plan_cache_mode TO force_generic_plan; SET LOCAL enable_seqscan TO off;
    SET LOCAL enable_bitmapscan TO off; SET LOCAL enable_sort TO off; SET LOCAL jit TO off;
    SET LOCAL work_mem TO '64MB'";

/// Two pending events (`a` and `b`) in an outbox whose statistics change only where the test
/// says (no autovacuum on its table). Returns the sequence of `a`'s event, a template for
/// [`stage_copies`].
async fn two_pending_without_autovacuum(pool: &PgPool) -> i64 {
    sqlx::raw_sql("ALTER TABLE palisade_outbox SET (autovacuum_enabled = false)")
        .execute(pool)
        .await
        .unwrap();
    stage_committed(pool, &[event("a", 1), event("b", 1)]).await;
    sqlx::query_scalar("SELECT min(seq) FROM palisade_outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A busy outbox drained down to two pending events (`a` and `b`) and vacuumed, as the store
/// does: the table and its indexes keep their pages, the statistics now count two rows.
/// Returns the template of [`two_pending_without_autovacuum`].
async fn drained_and_vacuumed(pool: &PgPool) -> i64 {
    let template = two_pending_without_autovacuum(pool).await;
    stage_copies(pool, template, 20_000).await;
    for statement in [
        "DELETE FROM palisade_outbox WHERE aggregate_id LIKE 'copy-%'",
        "VACUUM (TRUNCATE false) palisade_outbox",
    ] {
        sqlx::raw_sql(statement).execute(pool).await.unwrap();
    }
    template
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_prepared_on_a_nearly_empty_vacuumed_outbox_checks_order_through_the_aggregate_index() {
    let Some((pg, _)) = setup("outbox_claim_plan").await else {
        return;
    };
    drained_and_vacuumed(&pg.pool).await;
    // The relay's connection prepares its claim now, on those statistics.
    let pool = single_connection_pool(&pg).await;
    let (publisher, mut rx) = ChannelPublisher::new(2048);
    let relay = Relay::builder(PgStore::new(pool.clone()), publisher)
        .batch_size(1000)
        .build()
        .unwrap();
    assert_eq!(relay.run_batch().await.unwrap().published, 2);
    receive(&mut rx).await;
    receive(&mut rx).await;

    // Then a backlog builds up (a broker outage, say). With the primary key, each aggregate's
    // check would walk every older event of every aggregate; through the aggregate index it
    // reads only that aggregate's.
    stage_committed(&pg.pool, &[event("a", 2)]).await;
    let template: i64 = sqlx::query_scalar("SELECT max(seq) FROM palisade_outbox")
        .fetch_one(&pg.pool)
        .await
        .unwrap();
    stage_copies(&pg.pool, template, 20_000).await;
    assert_eq!(order_check_indexes(&pool).await, ["palisade_outbox_aggregate"]);
    assert_eq!(relay.run_batch().await.unwrap().published, 1000);
    pool.close().await;
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_checks_rows_against_one_hash_of_the_aggregates_waiting_for_a_retry() {
    let Some((pg, _)) = setup("outbox_claim_retrying").await else {
        return;
    };
    // After a broker outage: the first event of each of 5,000 aggregates failed and waits for
    // its retry, and 1,000 events of other aggregates are due.
    let template = two_pending_without_autovacuum(&pg.pool).await;
    sqlx::query(
        "INSERT INTO palisade_outbox (event_id, event_type, aggregate_type, aggregate_id, destination,
            occurred_at, version, payload, metadata, attempts, next_attempt_at, last_error)
         SELECT gen_random_uuid(), event_type, aggregate_type, 'waiting-' || i, destination,
            occurred_at, version, payload, metadata, 1, now() + interval '1 hour', 'broker down'
         FROM palisade_outbox, generate_series(1, 5000) AS i WHERE seq = $1",
    )
    .bind(template)
    .execute(&pg.pool)
    .await
    .unwrap();
    stage_copies(&pg.pool, template, 998).await;
    let pool = single_connection_pool(&pg).await;
    let store = PgStore::new(pool.clone());
    let (claim, claimed, _) = store.claim(1000, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claimed.len(), 1000, "every due event, none of a waiting aggregate");
    assert!(claimed.iter().all(|c| !c.event.aggregate_id.starts_with("waiting-")));
    let published: Vec<_> = claimed.iter().map(|c| (c.seq, Disposition::Published)).collect();
    store.complete(claim, &published, false).await.unwrap();

    // The plan the claim runs: no join, so no row is compared with each waiting aggregate.
    let mut joins = Vec::new();
    each_node(&cached_claim_plan(&pool).await, false, &mut |node, _| {
        let kind = node["Node Type"].as_str().unwrap_or_default();
        if kind.contains("Join") || kind == "Nested Loop" {
            joins.push(kind.to_owned());
        }
    });
    assert_eq!(joins, Vec::<String>::new());
    pool.close().await;
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_failures_reads_only_the_failed_rows_whatever_the_statistics() {
    let Some((pg, _)) = setup("outbox_record_plan").await else {
        return;
    };
    let template = drained_and_vacuumed(&pg.pool).await;
    // Both publishes fail: the store records the failures, planning that statement now.
    let pool = single_connection_pool(&pg).await;
    let store = PgStore::new(pool.clone());
    let (claim, claimed, _) = store.claim(10, Duration::from_secs(30)).await.unwrap();
    let failed: Vec<_> = claimed
        .iter()
        .map(|c| {
            let retry = Disposition::Retry {
                delay: Duration::from_secs(1),
                error: "broker down".into(),
            };
            (c.seq, retry)
        })
        .collect();
    assert_eq!(failed.len(), 2);
    store.complete(claim, &failed, false).await.unwrap();
    stage_copies(&pg.pool, template, 20_000).await;

    // The plan of that statement as the next batch's failures would run it.
    let name: String = sqlx::query_scalar(
        "SELECT name FROM pg_prepared_statements WHERE statement LIKE 'UPDATE palisade_outbox o SET%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let plan = prepared_plan(
        &pool,
        &format!("{name}('{{{template}}}', '{{1000}}', '{{broker down}}')"),
    )
    .await;
    // Every scan of the outbox looks up rows by the failed sequences: none reads the table
    // (20,000 rows now) whole, once or once per failure.
    let mut scans = Vec::new();
    each_node(&plan, false, &mut |node, _| {
        let kind = node["Node Type"].as_str().unwrap_or_default();
        if node["Relation Name"] == "palisade_outbox" && kind.ends_with("Scan") {
            scans.push((kind.to_owned(), node["Index Cond"].as_str().map(str::to_owned)));
        }
    });
    assert!(!scans.is_empty());
    for (kind, cond) in &scans {
        assert!(
            cond.as_deref().is_some_and(|c| c.contains("seq")),
            "{kind} without a condition on seq: {scans:?}"
        );
    }
    pool.close().await;
    pg.cleanup().await;
}
