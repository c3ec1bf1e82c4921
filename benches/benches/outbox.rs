//! The outbox relay end to end: PostgreSQL → NATS JetStream.
//!
//! Run with `cargo bench -p palisade-benches --bench outbox` against the services of
//! `palisade_tests` (`DATABASE_URL`, `NATS_URL`; skipped when either is unreachable). Prints:
//! - throughput: events per second drained from a 20,000-event backlog (100 aggregates) at
//!   batches of 100 and 1000, the relay publishing with JetStream acks: one `run_batch` after
//!   another, then at batches of 1000 as a service runs it (`spawn`, default workers, which
//!   claim the next batch while publishing a full one), one relay and two, over the 100
//!   aggregates and again over 10,000 (two events each), where no batch holds back the next;
//!   the two relays each have their own pool and NATS connection, as two processes would; then
//!   at batches of 1000
//!   by `run_batch` while 20,000 other aggregates wait for a retry (after a broker outage, the
//!   first event of each failed), which every claim must pass over;
//! - latency: commit-to-consumer median and p99 while staging about 2,000 events/s, with the
//!   publish hook waking the relay after each commit, and with polling (every second) alone;
//!   then the same with one event every 20 ms, so the relay is idle when each one commits;
//! - the reference for both latencies: `plain_relay`, the serial loop in plain sqlx and
//!   async-nats that the targets come from, woken the same way.
//!
//! A subscriber in this process timestamps each arrival and reads the event id from the
//! `Nats-Msg-Id` header (both relays set it).
//!
//! Every figure is also recorded for `benches/report.py` (see `palisade_benches::record`).
//! `--only throughput` or `--only latency` (after `--`) runs one of the two parts.
//!
//! The relay runs as `PgStore`'s docs recommend: on a pool of its own without
//! `test_before_acquire`, with one store for all runs as in a long-running service.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures_util::{Stream, StreamExt};
use palisade_outbox::postgres::{PgStore, migrate};
use palisade_outbox::{Event, NatsPublisher, PublishError, Publisher, Relay, stage};
use serde_json::json;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Executor, QueryBuilder};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use uuid::Uuid;

const BACKLOG: usize = 20_000;
/// Aggregates waiting for a retry in the drain after an outage.
const WAITING: usize = 20_000;
const AGGREGATES: usize = 100;
/// The aggregates of the drains that spread the backlog thin: one batch of 1000 then holds no
/// aggregate whose older events another claim holds, so a second worker or relay can claim
/// behind it instead of waiting for its commit.
const SPREAD_AGGREGATES: usize = 10_000;
const STAGERS: usize = 8;

struct Services {
    url: String,
    nats_url: String,
    pool: PgPool,
    /// One store for every relay, as in a long-running service: where its claims start
    /// looking carries over from one run to the next.
    store: PgStore,
    admin: PgPool,
    schema: String,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
}

async fn connect() -> Option<Services> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let nats_url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let schema = format!("palisade_bench_outbox_{}", std::process::id());
    let admin = match PgPoolOptions::new().max_connections(1).connect(&url).await {
        Ok(admin) => admin,
        Err(e) => {
            skip(format!("PostgreSQL at {url}: {e}"));
            return None;
        }
    };
    admin.execute(format!("CREATE SCHEMA {schema}").as_str()).await.ok()?;
    // The application's pool, and the relay's own (see `PgStore`'s docs).
    let pool = schema_pool(&url, &schema, PgPoolOptions::new().max_connections(16)).await?;
    let relay_pool = schema_pool(
        &url,
        &schema,
        PgPoolOptions::new().max_connections(5).test_before_acquire(false),
    )
    .await?;
    migrate(&pool).await.ok()?;
    let client = match async_nats::connect(&nats_url).await {
        Ok(client) => client,
        Err(e) => {
            skip(format!("NATS at {nats_url}: {e}"));
            return None;
        }
    };
    let pg_version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&admin).await.ok()?;
    let nats_version = client.server_info().version;
    for (name, version) in [("PostgreSQL", pg_version), ("NATS", nats_version)] {
        palisade_benches::record(&json!({"kind": "service", "name": name, "version": version}));
    }
    let js = jetstream::new(client.clone());
    let stream = schema.to_uppercase();
    js.create_stream(stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{schema}.>")],
        ..Default::default()
    })
    .await
    .ok()?;
    Some(Services {
        url,
        nats_url,
        store: PgStore::new(relay_pool),
        pool,
        admin,
        schema,
        client,
        js,
        stream,
    })
}

/// Reports why the benchmark does not run.
fn skip(reason: String) {
    eprintln!("skipping: {reason}");
    palisade_benches::record(&json!({"kind": "skipped", "group": "outbox", "reason": reason}));
}

/// How fast a backlog drained, and what CPU this process (the relays, their database and NATS
/// clients) spent on it.
struct Drained {
    events_per_s: f64,
    cpu_per_event: Option<Duration>,
}

impl Drained {
    fn of(elapsed: Duration, cpu_before: Option<Duration>) -> Self {
        let cpu = process_cpu()
            .zip(cpu_before)
            .map(|(after, before)| after.saturating_sub(before));
        Self {
            events_per_s: BACKLOG as f64 / elapsed.as_secs_f64(),
            cpu_per_event: cpu.map(|cpu| cpu / u32::try_from(BACKLOG).unwrap()),
        }
    }

    fn cpu_text(&self) -> String {
        self.cpu_per_event.map_or(String::new(), |cpu| {
            format!(", {:.1} µs CPU per event", cpu.as_secs_f64() * 1e6)
        })
    }
}

/// The CPU time this process's threads have run so far: the sum of their
/// `/proc/self/task/*/schedstat` (Linux; `None` elsewhere). The drains run on runtime threads
/// that live through them, so no thread's time is lost by its exit.
fn process_cpu() -> Option<Duration> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let nanos = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Some(Duration::from_nanos(nanos))
}

/// Records one drain for the report: `driven` by a `run_batch` loop or `spawn`ed relays, the
/// backlog spread over `aggregates`, with `waiting` other aggregates waiting for a retry.
fn record_throughput(
    batch_size: usize,
    driven: &str,
    relays: usize,
    aggregates: usize,
    waiting: usize,
    drained: &Drained,
) {
    palisade_benches::record(&json!({
        "kind": "outbox_throughput",
        "batch_size": batch_size,
        "events": BACKLOG,
        "aggregates": aggregates,
        "driven": driven,
        "relays": relays,
        "waiting": waiting,
        "events_per_s": drained.events_per_s,
        "cpu_us_per_event": drained.cpu_per_event.map(|cpu| cpu.as_secs_f64() * 1e6),
    }));
}

/// Records one latency run for the report.
fn record_latency(relayer: Relayer, hook: bool, idle: bool, (rate, median, p99): (f64, Duration, Duration)) {
    palisade_benches::record(&json!({
        "kind": "outbox_latency",
        "relay": if relayer == Relayer::Palisade { "palisade" } else { "reference" },
        "wake": if hook { "hook" } else { "poll" },
        "load": if idle { "idle" } else { "steady" },
        "events_per_s": rate,
        "median_ms": median.as_secs_f64() * 1e3,
        "p99_ms": p99.as_secs_f64() * 1e3,
    }));
}

/// A pool whose connections use `schema`.
async fn schema_pool(url: &str, schema: &str, options: PgPoolOptions) -> Option<PgPool> {
    let search_path = format!("SET search_path TO {schema}");
    options
        .after_connect(move |conn, _| {
            let search_path = search_path.clone();
            Box::pin(async move {
                conn.execute(search_path.as_str()).await?;
                Ok(())
            })
        })
        .connect(url)
        .await
        .ok()
}

/// Stages `count` events round-robin over `aggregates` aggregates, 1,000 per transaction.
async fn stage_backlog(pool: &PgPool, count: usize, aggregates: usize) {
    for chunk in 0..count.div_ceil(1000) {
        let mut tx = pool.begin().await.unwrap();
        let mut builder = QueryBuilder::new(
            "INSERT INTO palisade_outbox
                (event_id, event_type, aggregate_type, aggregate_id, destination, occurred_at, version, payload, metadata) ",
        );
        let rows = (chunk * 1000..((chunk + 1) * 1000).min(count)).map(|i| {
            Event::new("Moved", "Parcel", format!("p{}", i % aggregates), json!({"i": i}))
                .with_version(i64::try_from(i / aggregates + 1).unwrap())
        });
        builder.push_values(rows, |mut b, e| {
            b.push_bind(e.event_id)
                .push_bind(e.event_type)
                .push_bind(e.aggregate_type)
                .push_bind(e.aggregate_id)
                .push_bind(e.destination)
                .push_bind(e.timestamp)
                .push_bind(e.version)
                .push_bind(sqlx::types::Json(e.payload))
                .push_bind(sqlx::types::Json(e.metadata));
        });
        builder.build().execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
    }
    sqlx::query("ANALYZE palisade_outbox").execute(pool).await.unwrap();
}

/// Stages one event in each of `count` aggregates of their own that failed and waits for its
/// retry (an hour away): what a broker outage leaves behind.
async fn stage_waiting(pool: &PgPool, count: usize) {
    sqlx::query(
        "INSERT INTO palisade_outbox (event_id, event_type, aggregate_type, aggregate_id, destination,
            occurred_at, version, payload, metadata, attempts, next_attempt_at, last_error)
         SELECT gen_random_uuid(), 'Moved', 'Parcel', 'waiting-' || i, 'Parcel', now(), 1, '{}', '{}',
            1, now() + interval '1 hour', 'broker down'
         FROM generate_series(1, $1) AS i",
    )
    .bind(i64::try_from(count).unwrap())
    .execute(pool)
    .await
    .unwrap();
}

/// Drains the backlog with one `run_batch` after another.
async fn throughput(s: &Services, batch_size: usize) -> Drained {
    stage_backlog(&s.pool, BACKLOG, AGGREGATES).await;
    let publisher = NatsPublisher::new(s.client.clone()).with_prefix(format!("{}.", s.schema));
    let relay = Relay::builder(s.store.clone(), publisher)
        .batch_size(batch_size)
        .concurrency(AGGREGATES)
        .build()
        .unwrap();
    let cpu_before = process_cpu();
    let started = Instant::now();
    let mut published = 0;
    loop {
        let report = relay.run_batch().await.unwrap();
        if report.claimed == 0 {
            break;
        }
        published += report.published;
    }
    assert_eq!(published, BACKLOG);
    Drained::of(started.elapsed(), cpu_before)
}

/// Counts what its relays published, and says when `target` events were.
#[derive(Clone)]
struct Counting {
    inner: NatsPublisher,
    published: Arc<AtomicUsize>,
    target: usize,
    done: Arc<Notify>,
}

impl Counting {
    fn count(&self, result: &Result<(), PublishError>) {
        if result.is_ok() && self.published.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.done.notify_one();
        }
    }
}

impl Publisher for Counting {
    async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        let result = self.inner.publish(event).await;
        self.count(&result);
        result
    }

    fn publish_run<'a>(&'a self, events: &'a [Event]) -> impl Stream<Item = Result<(), PublishError>> + Send + 'a {
        self.inner.publish_run(events).inspect(move |result| self.count(result))
    }
}

/// Drains the backlog with `relays` relays running as a service runs them (`spawn`), each on
/// a pool and NATS connection of its own as separate processes would be; events per second
/// from their start until every event is published and recorded.
async fn drain(s: &Services, relays: usize, batch_size: usize, aggregates: usize) -> Drained {
    let published = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let mut built = Vec::with_capacity(relays);
    for _ in 0..relays {
        // Connections opened before the clock starts: two workers, each claiming behind its
        // batch, and the vacuum (see `PgStore`'s docs).
        let pool = schema_pool(
            &s.url,
            &s.schema,
            PgPoolOptions::new()
                .max_connections(5)
                .min_connections(5)
                .test_before_acquire(false),
        )
        .await
        .unwrap();
        let client = async_nats::connect(&s.nats_url).await.unwrap();
        let publisher = Counting {
            inner: NatsPublisher::new(client).with_prefix(format!("{}.", s.schema)),
            published: published.clone(),
            target: BACKLOG,
            done: done.clone(),
        };
        let relay = Relay::builder(PgStore::new(pool.clone()), publisher)
            .batch_size(batch_size)
            .concurrency(aggregates.min(batch_size))
            .build()
            .unwrap();
        built.push((relay, pool));
    }
    stage_backlog(&s.pool, BACKLOG, aggregates).await;
    let cpu_before = process_cpu();
    let started = Instant::now();
    let running: Vec<_> = built.iter().map(|(relay, _)| relay.spawn()).collect();
    tokio::time::timeout(Duration::from_secs(60), done.notified())
        .await
        .expect("the backlog drained within a minute");
    for handle in running {
        handle.shutdown().await;
    }
    let drained = Drained::of(started.elapsed(), cpu_before);
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM palisade_outbox")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(pending, 0, "every event published and recorded");
    for (_, pool) in built {
        pool.close().await;
    }
    drained
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Which relay a latency run measures.
#[derive(Clone, Copy, PartialEq)]
enum Relayer {
    /// palisade's relay (two workers, per-aggregate order, retries, dead letters).
    Palisade,
    /// The reference: [`plain_relay`].
    Plain,
}

/// A relay running for one latency run.
enum Running {
    Palisade(palisade_outbox::RelayHandle),
    Plain(tokio::task::JoinHandle<()>, watch::Sender<bool>),
}

impl Running {
    async fn stop(self) {
        match self {
            Self::Palisade(handle) => handle.shutdown().await,
            Self::Plain(task, stop) => {
                stop.send_replace(true);
                task.await.unwrap();
            }
        }
    }
}

/// The reference the latency targets come from: a serial relay loop in plain sqlx and
/// async-nats. Woken (or every second) it claims up to 100 events with `SKIP LOCKED`,
/// publishes them with pipelined JetStream acks, deletes them and commits, until none is
/// left. No per-aggregate order check, retries or dead letters.
async fn plain_relay(
    pool: PgPool,
    js: jetstream::Context,
    prefix: String,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        loop {
            let mut tx = pool.begin().await.unwrap();
            let rows: Vec<(i64, Uuid, String, sqlx::types::Json<serde_json::Value>)> = sqlx::query_as(
                "SELECT seq, event_id, destination, payload FROM palisade_outbox
                 ORDER BY seq LIMIT 100 FOR UPDATE SKIP LOCKED",
            )
            .fetch_all(&mut *tx)
            .await
            .unwrap();
            let mut acks = Vec::with_capacity(rows.len());
            for (_, event_id, destination, payload) in &rows {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, event_id.to_string().as_str());
                let body = serde_json::to_vec(&payload.0).unwrap();
                acks.push(
                    js.publish_with_headers(format!("{prefix}{destination}"), headers, body.into())
                        .await
                        .unwrap(),
                );
            }
            for ack in acks {
                ack.await.unwrap();
            }
            let seqs: Vec<i64> = rows.iter().map(|row| row.0).collect();
            sqlx::query("DELETE FROM palisade_outbox WHERE seq = ANY($1)")
                .bind(&seqs)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            if rows.is_empty() {
                break;
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Stages ~2,000 events/s for `seconds`, one per transaction, and measures commit to delivery
/// at a core NATS subscriber.
async fn latency(
    s: &Services,
    relayer: Relayer,
    hook: bool,
    stagers: usize,
    gap: Duration,
    seconds: u64,
) -> (f64, Duration, Duration) {
    let prefix = format!("{}.", s.schema);
    let (running, wake): (Running, Arc<dyn Fn() + Send + Sync>) = match relayer {
        Relayer::Palisade => {
            let publisher = NatsPublisher::new(s.client.clone()).with_prefix(prefix);
            let relay = Relay::builder(s.store.clone(), publisher)
                .concurrency(AGGREGATES)
                .poll_interval(Duration::from_secs(1))
                .build()
                .unwrap();
            let wakeup = relay.wakeup();
            (Running::Palisade(relay.spawn()), Arc::new(move || wakeup.wake()))
        }
        Relayer::Plain => {
            let notify = Arc::new(Notify::new());
            let (stop, stopped) = watch::channel(false);
            let task = tokio::spawn(plain_relay(
                s.store.pool().clone(),
                s.js.clone(),
                prefix,
                notify.clone(),
                stopped,
            ));
            (Running::Plain(task, stop), Arc::new(move || notify.notify_one()))
        }
    };
    let committed: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let received: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let mut subscriber = s.client.subscribe(format!("{}.>", s.schema)).await.unwrap();
    s.client.flush().await.unwrap();
    let consumer = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let at = Instant::now();
                // Both relays put the event id in `Nats-Msg-Id`.
                let headers = message.headers.expect("headers");
                let id = headers.get(async_nats::header::NATS_MESSAGE_ID).expect("Nats-Msg-Id");
                received.lock().unwrap().insert(id.as_str().parse().unwrap(), at);
            }
        })
    };
    let started = Instant::now();
    // `stagers` tasks, each staging one event per transaction every `gap`.
    let stagers: Vec<_> = (0..stagers)
        .map(|stager| {
            let pool = s.pool.clone();
            let committed = committed.clone();
            let wake = wake.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(gap);
                let mut staged = 0usize;
                while started.elapsed() < Duration::from_secs(seconds) {
                    ticker.tick().await;
                    let aggregate = format!("p{}", (staged * STAGERS + stager) % AGGREGATES);
                    let e = Event::new("Moved", "Parcel", aggregate, json!({"i": staged}));
                    let mut tx = pool.begin().await.unwrap();
                    stage(&mut tx, &e).await.unwrap();
                    tx.commit().await.unwrap();
                    committed.lock().unwrap().insert(e.event_id, Instant::now());
                    if hook {
                        wake();
                    }
                    staged += 1;
                }
                staged
            })
        })
        .collect();
    let mut staged = 0;
    for stager in stagers {
        staged += stager.await.unwrap();
    }
    let rate = staged as f64 / started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Counts this run's events only: a redelivery of an earlier run's event (at least once)
    // may arrive too.
    let arrived = || {
        let received = received.lock().unwrap();
        committed
            .lock()
            .unwrap()
            .keys()
            .filter(|id| received.contains_key(*id))
            .count()
    };
    while arrived() < staged && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    running.stop().await;
    consumer.abort();
    let committed = committed.lock().unwrap();
    let received = received.lock().unwrap();
    let missing = committed.keys().filter(|id| !received.contains_key(*id)).count();
    assert_eq!(missing, 0, "every staged event reached the consumer within 10 s");
    assert_eq!(committed.len(), staged);
    let mut samples: Vec<Duration> = committed
        .iter()
        .map(|(id, at)| received[id].saturating_duration_since(*at))
        .collect();
    samples.sort();
    (rate, percentile(&samples, 0.5), percentile(&samples, 0.99))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let only = std::env::args().skip_while(|arg| arg != "--only").nth(1);
    let runs = |part: &str| only.as_deref().is_none_or(|only| only == part);
    rt.block_on(async {
        let Some(s) = connect().await else { return };
        if runs("throughput") {
            throughput_runs(&s).await;
        }
        if runs("latency") {
            latency_runs(&s).await;
        }
        let _ = s.js.delete_stream(&s.stream).await;
        s.admin
            .execute(format!("DROP SCHEMA {} CASCADE", s.schema).as_str())
            .await
            .unwrap();
    });
}

/// The drains: `run_batch` loops at two batch sizes, then one spawned relay and two.
async fn throughput_runs(s: &Services) {
    for batch_size in [100, 1000] {
        let drained = throughput(s, batch_size).await;
        println!(
            "outbox throughput, batch {batch_size:>4}, run_batch loop: {:>8.0} events/s (PostgreSQL -> JetStream acked){}",
            drained.events_per_s,
            drained.cpu_text()
        );
        record_throughput(batch_size, "run_batch", 1, AGGREGATES, 0, &drained);
    }
    for aggregates in [AGGREGATES, SPREAD_AGGREGATES] {
        let mut one_relay = None;
        for relays in [1, 2] {
            let drained = drain(s, relays, 1000, aggregates).await;
            let rate = drained.events_per_s;
            let ratio = one_relay.map_or(String::new(), |one: f64| format!(", {:.2}x one relay", rate / one));
            one_relay.get_or_insert(rate);
            println!(
                "outbox throughput, batch 1000, {aggregates} aggregates, {relays} spawned relay(s): {rate:>8.0} events/s{ratio}{}",
                drained.cpu_text()
            );
            record_throughput(1000, "spawn", relays, aggregates, 0, &drained);
        }
    }
    stage_waiting(&s.pool, WAITING).await;
    let drained = throughput(s, 1000).await;
    println!(
        "outbox throughput, batch 1000, run_batch loop, {WAITING} aggregates waiting: {:>8.0} events/s{}",
        drained.events_per_s,
        drained.cpu_text()
    );
    record_throughput(1000, "run_batch", 1, AGGREGATES, WAITING, &drained);
    sqlx::query("DELETE FROM palisade_outbox WHERE aggregate_id LIKE 'waiting-%'")
        .execute(&s.pool)
        .await
        .unwrap();
}

/// Commit-to-consumer latency: woken and polling relays, busy and idle, and the reference.
async fn latency_runs(s: &Services) {
    // Eight stagers at 250 events/s each: about 2,000 events/s.
    for hook in [true, false] {
        let (rate, median, p99) = latency(s, Relayer::Palisade, hook, STAGERS, Duration::from_millis(4), 5).await;
        record_latency(Relayer::Palisade, hook, false, (rate, median, p99));
        let mode = if hook { "hook + 1 s poll" } else { "1 s poll alone" };
        println!("outbox latency, {mode:<15} at {rate:>5.0} events/s: median {median:?}, p99 {p99:?}");
    }
    let (rate, median, p99) = latency(s, Relayer::Plain, true, STAGERS, Duration::from_millis(4), 5).await;
    record_latency(Relayer::Plain, true, false, (rate, median, p99));
    println!("  reference loop, woken   at {rate:>5.0} events/s: median {median:?}, p99 {p99:?}");
    // One event every 20 ms: the relay is idle when each commits.
    for hook in [true, false] {
        let (rate, median, p99) = latency(s, Relayer::Palisade, hook, 1, Duration::from_millis(20), 4).await;
        record_latency(Relayer::Palisade, hook, true, (rate, median, p99));
        let mode = if hook { "hook, idle relay" } else { "poll, idle relay" };
        println!("outbox latency, {mode:<16} at {rate:>4.0} events/s: median {median:?}, p99 {p99:?}");
    }
    let (rate, median, p99) = latency(s, Relayer::Plain, true, 1, Duration::from_millis(20), 4).await;
    record_latency(Relayer::Plain, true, true, (rate, median, p99));
    println!("  reference loop, idle    at {rate:>4.0} events/s: median {median:?}, p99 {p99:?}");
}
