//! PostgreSQL: migrations, staging, the relay's store, wake-ups across instances and the inbox.
//!
//! Tables live in the connection's `search_path` (`palisade_outbox`, `palisade_outbox_published`,
//! `palisade_inbox`, `palisade_outbox_migrations`).
//!
//! A relay claims a batch with `SELECT … FOR UPDATE SKIP LOCKED` inside a transaction that it
//! holds while publishing: a relay that crashes or is aborted releases its rows with its
//! connection, and no lease can expire under a slow publish. In the same statement it checks,
//! per aggregate, that no older pending event of that aggregate is held elsewhere; rows that
//! would overtake one are left for later. Published rows are deleted (or moved to the
//! published table for the retention period), never updated: that drains about twice as fast
//! as flagging them. While the relay publishes a batch, the same transaction already deletes
//! it after a savepoint (the database's work overlaps the broker's); the commit keeps that
//! when every event was published, and otherwise the transaction rolls back to the savepoint
//! and records each outcome. The relay's transaction commits without waiting for the WAL
//! flush (`synchronous_commit = off`): if the database crashes before the flush, the events
//! are published again (at least once).
//!
//! What keeps a claim cheap (a fraction of a millisecond for a few events, see the crate's
//! performance figures):
//! - **One round trip.** Opening the transaction and claiming go to the server together, and
//!   the claim is a statement prepared once per connection (`palisade_outbox_claim`; a
//!   connection that lost it prepares it again).
//! - **One plan, whatever the statistics.** The claim runs on its generic plan, made with
//!   sequential scans, bitmap scans and sorts off and shaped so that every step has one
//!   sensible plan: the aggregates waiting for a retry are read once through their partial
//!   index into a hash that each row is checked against, the batch comes from the primary key
//!   in order, and each aggregate's order check is one probe of the aggregate index, the only
//!   index that gives the order the check asks for. A plan made while the table was empty, or
//!   nearly empty after a vacuum (statistics that count a few rows in many pages), stays right
//!   when it has grown: the order check never walks the primary key past other aggregates'
//!   events, and no row is compared with every aggregate waiting for a retry.
//! - **Not from the oldest row.** A deleted row's index entries stay until vacuum removes
//!   them, and a claim that starts at the table's oldest entry steps over all of them. So a
//!   claim starts at the highest sequence the store's claims had seen one interval earlier (a
//!   second unless [`PgStore::full_scan_interval`] says otherwise): an event staged since then
//!   has a higher sequence, and one staged earlier whose transaction committed within the
//!   interval was found by a claim made after its commit (the publish hook wakes the relay at
//!   every commit). Once an interval (and at every poll of an idle relay) a claim looks at the
//!   whole table, which finds what the others can miss: an event whose retry is due, one
//!   another relay gave back, one whose staging transaction stayed open for longer than the
//!   interval. Such an event is published at most about an interval late, and never out of
//!   order: the per-aggregate check looks at the whole table on every claim.
//! - **Vacuumed often.** The store vacuums the table after every 1,000 published events, at
//!   most once a second ([`PgStore::vacuum_after`]), so the order check does not step over
//!   thousands of dead entries between autovacuum's visits.
//!
//! Give the relay a pool of its own, without `test_before_acquire`: the health check costs a
//! round trip on every claim, and a claim on a broken connection fails like any other claim
//! (the connection is closed and the relay tries again at its next poll). So does a store
//! operation the relay gives up after its store timeout: the store closes every connection
//! whose operation did not end cleanly, rather than handing it back to the pool inside a
//! statement or transaction.
//!
//! In every instance, wire the publish hook's wake-ups to the other instances:
//!
//! ```no_run
//! use palisade_outbox::postgres::{DEFAULT_CHANNEL, PgStore, forward_wakeups, migrate, wake_on_notify};
//! use palisade_outbox::{ChannelPublisher, Relay};
//!
//! // `relay_pool`: the relay's own pool (see `PgStore`).
//! # async fn example(pool: sqlx::PgPool, relay_pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! migrate(&pool).await?;
//! let (publisher, _events) = ChannelPublisher::new(1024);
//! let relay = Relay::builder(PgStore::new(relay_pool), publisher).build()?;
//! tokio::spawn(forward_wakeups(pool.clone(), DEFAULT_CHANNEL.to_owned(), relay.wakeup()));
//! tokio::spawn(wake_on_notify(pool.clone(), DEFAULT_CHANNEL.to_owned(), relay.wakeup()));
//! let running = relay.spawn();
//! // ... serve, with PublishHookLayer::new(relay.wakeup()) ...
//! running.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgListener, PgPool, PgRow};
use sqlx::types::Json;
use sqlx::{Executor, PgConnection, Postgres, Row};
use time::OffsetDateTime;
use tokio::time::Instant;
use uuid::Uuid;

use crate::envelope::{Event, Metadata};
use crate::error::{OutboxError, error_chain};
use crate::hook::Wakeup;
use crate::store::admin::{
    Counts, DeadLetterFilter, DeadLetterId, DestinationStats, OutboxAdmin, Stats, missing_tables,
};
use crate::store::connection::{Seen, outbox_connection};
use crate::store::{
    BACKLOG_SQL, Backlog, Claimed, ClaimedBatch, DeadLetter, Detached, Disposition, OutboxStore, Unreadable,
    claimed_row, malformed, millis, split_readable, undecodable,
};
use palisade_core::sync::Unpoison;
use palisade_core::telemetry::outbox as names;

/// The schema migrations, in order: (version, SQL).
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../../migrations/postgres/0001_outbox.sql"))];

/// A channel name for [`forward_wakeups`] and [`wake_on_notify`]. Channels are per database:
/// outboxes in several schemas of one database should each use their own.
pub const DEFAULT_CHANNEL: &str = "palisade_outbox";

/// Creates or upgrades the outbox tables in the current schema. Safe to call from several
/// instances at once (they queue on an advisory lock) and on every start.
pub async fn migrate(pool: &PgPool) -> Result<(), OutboxError> {
    let mut tx = pool.begin().await?;
    tx.execute("SELECT pg_advisory_xact_lock(1885432937, hashtext(current_schema()))")
        .await?;
    tx.execute(
        "CREATE TABLE IF NOT EXISTS palisade_outbox_migrations (
            version BIGINT PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM palisade_outbox_migrations")
        .fetch_all(&mut *tx)
        .await?;
    for &(version, sql) in MIGRATIONS.iter().filter(|(v, _)| !applied.contains(v)) {
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|source| OutboxError::Migration { version, source })?;
        sqlx::query("INSERT INTO palisade_outbox_migrations (version) VALUES ($1)")
            .bind(version)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn insert(conn: &mut PgConnection, event: &Event) -> Result<(), OutboxError> {
    sqlx::query(
        "INSERT INTO palisade_outbox
            (event_id, event_type, aggregate_type, aggregate_id, destination, occurred_at, version, payload, metadata)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(event.event_id)
    .bind(&event.event_type)
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(&event.destination)
    .bind(event.timestamp)
    .bind(event.version)
    .bind(Json(&event.payload))
    .bind(Json(&event.metadata))
    .execute(conn)
    .await?;
    Ok(())
}

outbox_connection!(PgConnection, Postgres);

pub(crate) async fn record_inbox(conn: &mut PgConnection, consumer: &str, event_id: Uuid) -> Result<Seen, OutboxError> {
    let inserted =
        sqlx::query("INSERT INTO palisade_inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(consumer)
            .bind(event_id)
            .execute(conn)
            .await?
            .rows_affected();
    Ok(if inserted == 1 { Seen::First } else { Seen::Duplicate })
}

/// Sends `NOTIFY channel` so relays listening in other instances claim at once.
pub async fn notify(pool: &PgPool, channel: &str) -> Result<(), OutboxError> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(channel)
        .execute(pool)
        .await?;
    Ok(())
}

/// How long the wake-up helpers pause after a database error before trying again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// Sends `NOTIFY channel` after every [`Wakeup::wake`] (what the publish hook does after each
/// response to an unsafe method), so relays of other instances running [`wake_on_notify`] claim at once. Wakes that
/// arrive while a NOTIFY is being sent coalesce into one more. Runs until dropped: spawn it.
pub async fn forward_wakeups(pool: PgPool, channel: String, wakeup: Wakeup) {
    loop {
        wakeup.remote_wanted().await;
        if let Err(error) = notify(&pool, &channel).await {
            tracing::warn!(target: names::TARGET, channel = %channel, error = %error_chain(&error), "outbox NOTIFY failed");
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
}

/// Listens on `channel` and wakes the local relay for every notification (see
/// [`forward_wakeups`]); reconnects after connection loss. Runs until dropped: spawn it.
pub async fn wake_on_notify(pool: PgPool, channel: String, wakeup: Wakeup) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(target: names::TARGET, channel = %channel, error = %error_chain(&error), "outbox LISTEN connect failed");
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(&channel).await {
            tracing::warn!(target: names::TARGET, channel = %channel, error = %error_chain(&error), "outbox LISTEN failed");
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        }
        // Relays may have missed notifications while the listener was away.
        wakeup.wake_local();
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => wakeup.wake_local(),
                // The connection dropped; the listener reconnects on the next call, and anything
                // sent meanwhile is caught by waking now.
                Ok(None) => wakeup.wake_local(),
                Err(error) => {
                    tracing::warn!(target: names::TARGET, channel = %channel, error = %error_chain(&error), "outbox LISTEN failed");
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    break;
                }
            }
        }
    }
}

/// The relay's view of a PostgreSQL outbox.
///
/// Clones share where their claims start looking and when the table was last vacuumed (see
/// the [module docs](self)), so give every relay of one process clones of one store.
///
/// ```no_run
/// use palisade_outbox::postgres::PgStore;
/// use sqlx::postgres::PgPoolOptions;
///
/// # async fn example() -> Result<(), sqlx::Error> {
/// // The relay's own pool: two workers claim at a time, plus the background vacuum.
/// let relay_pool = PgPoolOptions::new()
///     .max_connections(4)
///     .test_before_acquire(false)
///     .connect("postgres://app@db/orders")
///     .await?;
/// let store = PgStore::new(relay_pool);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    scan_start: Arc<Mutex<ScanStart>>,
    full_scan_interval: Duration,
    vacuum: Arc<Vacuum>,
}

impl PgStore {
    /// A store on `pool` (whose `search_path` holds the outbox tables).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            scan_start: Arc::new(Mutex::new(ScanStart::new(Instant::now()))),
            full_scan_interval: DEFAULT_FULL_SCAN_INTERVAL,
            vacuum: Arc::new(Vacuum::new(DEFAULT_VACUUM_AFTER)),
        }
    }

    /// How often a claim looks at the whole table (default 1 s; see the [module docs](self)).
    /// The claims in between start where this store's claims had got to one interval earlier,
    /// so an event whose staging transaction stays open longer than the interval waits for the
    /// next whole-table claim. Zero makes every claim look at the whole table.
    pub fn full_scan_interval(mut self, interval: Duration) -> Self {
        self.full_scan_interval = interval;
        self
    }

    /// Vacuums the outbox table, in the background, once `removed_rows` events have been
    /// published (deleted or archived) through this store since its last vacuum, at most once
    /// a second (default 1,000; 0 never vacuums).
    ///
    /// Every published event leaves a dead row and index entries behind until vacuum removes
    /// them, and each claim's per-aggregate order check steps over that aggregate's dead
    /// entries. Autovacuum's default schedule (a check a minute) lets a busy outbox collect
    /// tens of thousands of them, which makes a claim cost milliseconds instead of a fraction
    /// of one. Vacuuming needs the relay's role to own the table (PostgreSQL 17: or hold
    /// `MAINTAIN` on it); otherwise PostgreSQL skips it with a warning.
    pub fn vacuum_after(mut self, removed_rows: u64) -> Self {
        self.vacuum = Arc::new(Vacuum::new(removed_rows));
        self
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// A stored time clamped to what an envelope can say (RFC 3339's years 1 to 9999): staging
/// sets `staged_at` and the relay `dead_lettered_at`, but a row written by hand may hold
/// `infinity` or a year the `time` crate cannot represent, whose decoding would panic.
macro_rules! representable {
    ($column:literal) => {
        // GREATEST and LEAST skip NULLs: without the CASE, no time would read as year 1.
        concat!(
            "CASE WHEN ",
            $column,
            " IS NOT NULL THEN LEAST(GREATEST(",
            $column,
            ", '0001-01-01 00:00:00+00'), '9999-12-31 23:59:59.999999+00') END"
        )
    };
}

/// A dead letter's times, as [`dead_letter`] reads them.
const DEAD_TIMES: &str = concat!(
    representable!("staged_at"),
    " AS staged_at, ",
    representable!("dead_lettered_at"),
    " AS dead_lettered_at"
);

const EVENT_COLUMNS: &str = "seq, attempts, event_id, event_type, aggregate_type, aggregate_id, destination, occurred_at, version, payload, metadata";

/// [`EVENT_COLUMNS`] as queries return them: the timestamp as microseconds since the epoch,
/// which reads the same in the text format of the claim's simple query (sqlx cannot parse
/// every `timestamptz` text, a whole second for one) and in the binary format. `NULL` for a
/// timestamp past RFC 3339's four-digit years or infinite (written by hand): its microseconds
/// may not fit in 64 bits, and the error would fail the claim of every batch, not the row.
const EVENT_OUTPUT: &str = "seq, attempts, event_id, event_type, aggregate_type, aggregate_id, destination,
    CASE WHEN isfinite(occurred_at) AND occurred_at < '10000-01-01 00:00:00+00'
        THEN (extract(epoch FROM occurred_at) * 1000000)::int8 END AS occurred_at_us,
    version, payload, metadata";

/// The claim (prepared as [`CLAIM_STATEMENT`]). `$1` is the batch size, `$2` the lowest
/// sequence to look at (see [`ScanStart`]). Each step is shaped so that its plan does not
/// depend on the statistics (see the module docs); rows come grouped by aggregate.
///
/// Rows of aggregates waiting for a retry are filtered with `NOT IN` (both columns are `NOT
/// NULL`, so it means `NOT EXISTS`): `NOT IN` stays a filter on the ordered scan, checked
/// against one hash of the retrying aggregates built per claim, where `NOT EXISTS` becomes an
/// anti join, and the nested loop the planner picks for it on small statistics compares every
/// row with every retrying aggregate (seconds per claim once thousands of aggregates wait,
/// as after a broker outage). The claim's `work_mem` keeps that hash within memory for about a
/// million retrying aggregates, which the planner requires before it hashes.
///
/// The order check matches the aggregate type with `= ANY`, not `=`, and orders by it: with
/// `=` the planner would take the type as a constant, drop it from the order, and the primary
/// key (which gives `seq` order) could serve the check without a sort. With sorts off, the
/// aggregate index is the only way to that order.
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH retrying AS MATERIALIZED (
            SELECT aggregate_type, aggregate_id FROM palisade_outbox
            WHERE next_attempt_at > now() AND dead_lettered_at IS NULL
        ), locked AS MATERIALIZED (
            SELECT {EVENT_COLUMNS} FROM palisade_outbox c
            WHERE c.seq >= $2 AND c.dead_lettered_at IS NULL
              AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= now())
              AND (c.aggregate_type, c.aggregate_id) NOT IN (SELECT aggregate_type, aggregate_id FROM retrying)
            ORDER BY c.seq
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        ), runs AS (
            SELECT l.*, min(l.seq) OVER run AS first_seq, max(l.seq) OVER run AS last_seq,
                array_agg(l.seq) OVER run AS run_seqs
            FROM locked l
            WINDOW run AS (PARTITION BY l.aggregate_type, l.aggregate_id)
        )
        -- On each aggregate's first row: its oldest pending event before the last one locked
        -- that this claim did not lock (held by another relay, or committed late).
        SELECT {EVENT_OUTPUT}, CASE WHEN seq = first_seq THEN (
            SELECT o.seq FROM palisade_outbox o
            WHERE o.aggregate_type = ANY (ARRAY[runs.aggregate_type]) AND o.aggregate_id = runs.aggregate_id
              AND o.seq < runs.last_seq AND o.dead_lettered_at IS NULL AND o.seq <> ALL (runs.run_seqs)
            ORDER BY o.aggregate_type, o.seq
            LIMIT 1
        ) END AS blocker
        FROM runs"
    )
});

/// How often a claim looks at the whole table, and how far back the claims in between look,
/// unless [`PgStore::full_scan_interval`] says otherwise.
const DEFAULT_FULL_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// Where a claim starts looking (see the module docs for why that misses nothing for long).
#[derive(Debug)]
struct ScanStart {
    /// When the last whole-table claim started.
    last_full_scan: Option<Instant>,
    /// The highest sequence any claim has returned.
    seen: i64,
    /// When the current period started, and `seen` at that moment.
    period_started: Instant,
    seen_at_period_start: i64,
    /// `seen` at the start of the previous period: at least one interval old.
    seen_a_period_ago: i64,
}

impl ScanStart {
    fn new(now: Instant) -> Self {
        Self {
            last_full_scan: None,
            seen: 0,
            period_started: now,
            seen_at_period_start: 0,
            seen_a_period_ago: 0,
        }
    }

    /// The lowest sequence the claim starting `now` looks at.
    fn next(&mut self, now: Instant, interval: Duration) -> i64 {
        if self.last_full_scan.is_none_or(|at| now.duration_since(at) >= interval) {
            self.last_full_scan = Some(now);
            return i64::MIN;
        }
        if now.duration_since(self.period_started) >= interval {
            self.seen_a_period_ago = self.seen_at_period_start;
            self.seen_at_period_start = self.seen;
            self.period_started = now;
        }
        self.seen_a_period_ago.saturating_add(1)
    }

    /// Records the highest sequence a claim returned.
    fn saw(&mut self, seq: i64) {
        self.seen = self.seen.max(seq);
    }
}

/// Reads a row on its own: the event, or why this row cannot be read back as one. Fails only
/// when the row's sequence number cannot be read.
fn read_row(row: &PgRow) -> Result<Result<Claimed, Unreadable>, OutboxError> {
    let seq: i64 = row.try_get("seq")?;
    let attempts = row
        .try_get::<i32, _>("attempts")
        .ok()
        .and_then(|attempts| u32::try_from(attempts).ok());
    Ok(claimed_row(seq, attempts, event_from_row(row, seq)))
}

fn event_from_row(row: &PgRow, seq: i64) -> Result<Event, OutboxError> {
    fn column<'r, T>(row: &'r PgRow, seq: i64, name: &str) -> Result<T, OutboxError>
    where
        T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
    {
        row.try_get(name).map_err(|e| undecodable(seq, name, e))
    }
    let metadata: Json<serde_json::Value> = column(row, seq, "metadata")?;
    let metadata: Metadata = serde_json::from_value(metadata.0).map_err(|e| malformed(seq, "metadata", &e))?;
    let Some(micros) = column::<Option<i64>>(row, seq, "occurred_at_us")? else {
        return Err(malformed(
            seq,
            "occurred_at",
            &"an infinite timestamp, or a year past 9999, is not RFC 3339's",
        ));
    };
    let timestamp = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .map_err(|e| malformed(seq, "occurred_at", &e))?;
    // Staging refuses what RFC 3339 cannot express; a row written otherwise would be
    // published with an empty body, so it is dead-lettered as unreadable instead.
    if !(0..=9999).contains(&timestamp.year()) {
        return Err(malformed(
            seq,
            "occurred_at",
            &format_args!("year {} is not RFC 3339's", timestamp.year()),
        ));
    }
    Ok(Event {
        event_id: column(row, seq, "event_id")?,
        event_type: column(row, seq, "event_type")?,
        aggregate_type: column(row, seq, "aggregate_type")?,
        aggregate_id: column(row, seq, "aggregate_id")?,
        destination: column(row, seq, "destination")?,
        timestamp,
        version: column(row, seq, "version")?,
        payload: column::<Json<serde_json::Value>>(row, seq, "payload")?.0,
        metadata,
    })
}

/// A PostgreSQL claim: the connection whose transaction holds the claimed rows' locks until
/// the relay has recorded the outcome. Dropping it closes the connection (rather than giving
/// it back to the pool inside the transaction), which rolls back and frees the rows once the
/// server process behind the connection has ended: a claim made in between skips them.
#[derive(Debug)]
pub struct PgClaim {
    conn: PoolConnection<Postgres>,
    /// Whether the transaction is still open (until `complete` commits it).
    open: bool,
    /// Whether the claimed rows were removed ahead of the outcome, after the savepoint.
    recorded_ahead: bool,
}

impl Drop for PgClaim {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

/// The claim's name as a prepared statement on the relay's connections.
const CLAIM_STATEMENT: &str = "palisade_outbox_claim";

/// Prepares the claim on a connection that has not run it yet.
static PREPARE_CLAIM: LazyLock<String> =
    LazyLock::new(|| format!("PREPARE {CLAIM_STATEMENT}(bigint, bigint) AS {}", CLAIM_SQL.as_str()));

/// Opens the relay's transaction and claims, in one round trip (a simple query: both numbers
/// are integers written by this code). The transaction commits without waiting for the WAL
/// flush: losing that commit in a database crash only means publishing again (at least once,
/// de-duplicated by event id). The claim runs on its generic plan, made once per connection
/// with the scans that keep it right whatever the statistics (see `CLAIM_SQL`). Turning sorts
/// off gives every plan the cost of a disabled node (the window's sort has no alternative),
/// which would otherwise cross the threshold for compiling the plan with JIT on every run:
/// hundreds of milliseconds each. Its rows come in the text format (see [`EVENT_OUTPUT`]).
fn claim_query(limit: i64, scan_from: i64) -> String {
    format!(
        "BEGIN; SET LOCAL synchronous_commit TO off; SET LOCAL plan_cache_mode TO force_generic_plan;
         SET LOCAL enable_seqscan TO off; SET LOCAL enable_bitmapscan TO off; SET LOCAL enable_sort TO off;
         SET LOCAL jit TO off; SET LOCAL work_mem TO '64MB';
         EXECUTE {CLAIM_STATEMENT}({limit}, {scan_from})"
    )
}

/// Runs the claim on `conn`, preparing it first on a connection that has not run it yet.
/// (A query without arguments goes as a simple query, which may hold several statements.)
async fn run_claim(conn: &mut PgConnection, limit: i64, scan_from: i64) -> Result<Vec<PgRow>, sqlx::Error> {
    let query = claim_query(limit, scan_from);
    match conn.fetch_all(query.as_str()).await {
        // 26000: no such prepared statement.
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("26000") => {
            conn.execute("ROLLBACK").await?;
            conn.execute(PREPARE_CLAIM.as_str()).await?;
            conn.fetch_all(query.as_str()).await
        }
        rows => rows,
    }
}

/// Vacuums after this many removed rows unless [`PgStore::vacuum_after`] says otherwise.
const DEFAULT_VACUUM_AFTER: u64 = 1000;

/// The shortest time between the starts of two vacuums.
const VACUUM_INTERVAL: Duration = Duration::from_secs(1);

/// When the store vacuums the outbox table (see [`PgStore::vacuum_after`]).
#[derive(Debug)]
struct Vacuum {
    after: u64,
    state: Mutex<VacuumState>,
}

#[derive(Debug, Default)]
struct VacuumState {
    /// Rows removed since the last vacuum started.
    removed: u64,
    /// When the last vacuum started.
    started: Option<Instant>,
    running: bool,
}

impl Vacuum {
    fn new(after: u64) -> Self {
        Self {
            after,
            state: Mutex::default(),
        }
    }

    /// Counts `rows` removed rows; true when a vacuum should start now (it is then running).
    fn due(&self, rows: u64, now: Instant) -> bool {
        let mut state = self.state.lock().unpoison();
        state.removed += rows;
        let due = self.after > 0
            && state.removed >= self.after
            && !state.running
            && state.started.is_none_or(|at| now.duration_since(at) >= VACUUM_INTERVAL);
        if due {
            *state = VacuumState {
                removed: 0,
                started: Some(now),
                running: true,
            };
        }
        due
    }

    fn finished(&self) {
        self.state.lock().unpoison().running = false;
    }
}

/// Vacuums the outbox table on its own connection (VACUUM cannot run in a transaction),
/// without truncating the file: truncation takes a lock that would stall staging and claims.
async fn vacuum(pool: PgPool, vacuum: Arc<Vacuum>) {
    if let Err(error) = pool.execute("VACUUM (TRUNCATE false) palisade_outbox").await {
        tracing::warn!(target: names::TARGET, error = %error_chain(&error), "outbox VACUUM failed");
    }
    vacuum.finished();
}

/// Where [`OutboxStore::record_ahead`] starts, so its removal can be undone.
const RECORDED_AHEAD: &str = "SAVEPOINT palisade_recorded_ahead";

/// Deletes published rows (`$1`).
const DELETE_PUBLISHED: &str = "DELETE FROM palisade_outbox WHERE seq = ANY($1)";

/// Moves published rows (`$1`) to the published table.
const ARCHIVE_PUBLISHED: &str = "WITH moved AS (DELETE FROM palisade_outbox WHERE seq = ANY($1) RETURNING *)
     INSERT INTO palisade_outbox_published
        (seq, event_id, event_type, aggregate_type, aggregate_id, destination, occurred_at, version,
         payload, metadata, staged_at, attempts)
     SELECT seq, event_id, event_type, aggregate_type, aggregate_id, destination, occurred_at, version,
         payload, metadata, staged_at, attempts FROM moved";

impl OutboxStore for PgStore {
    type Claim = PgClaim;

    async fn claim(&self, limit: usize, _lease: Duration) -> Result<ClaimedBatch<Self::Claim>, OutboxError> {
        let scan_from = self
            .scan_start
            .lock()
            .unpoison()
            .next(Instant::now(), self.full_scan_interval);
        // From here on the connection may be inside the claim's transaction: the claim closes it
        // when dropped, on every early return too, so it never goes back to the pool in one.
        let mut claim = PgClaim {
            conn: self.pool.acquire().await?,
            open: true,
            recorded_ahead: false,
        };
        let rows = run_claim(&mut claim.conn, i64::try_from(limit).unwrap_or(i64::MAX), scan_from).await?;
        // Each aggregate's blocker comes on its first row; rows come grouped by aggregate.
        let mut blockers: HashMap<(&str, &str), i64> = HashMap::new();
        let mut locked = Vec::with_capacity(rows.len());
        for row in &rows {
            let aggregate = (row.try_get("aggregate_type")?, row.try_get("aggregate_id")?);
            if let Some(blocker) = row.try_get::<Option<i64>, _>("blocker")? {
                blockers.insert(aggregate, blocker);
            }
            locked.push((row.try_get::<i64, _>("seq")?, aggregate, row));
        }
        if let Some(highest) = locked.iter().map(|(seq, _, _)| *seq).max() {
            self.scan_start.lock().unpoison().saw(highest);
        }
        locked.sort_unstable_by_key(|(seq, _, _)| *seq);
        let mut read = Vec::with_capacity(locked.len());
        for (seq, aggregate, row) in locked {
            // An older event of this aggregate is held by another relay (or was committed
            // after a later one): leave this one locked but untouched until commit.
            if blockers.get(&aggregate).is_none_or(|&blocker| seq < blocker) {
                read.push(read_row(row)?);
            }
        }
        let (claimed, unreadable) = split_readable(read);
        Ok((claim, claimed, unreadable))
    }

    /// Removes (or archives) the whole claim after a savepoint while the relay publishes;
    /// [`complete`](OutboxStore::complete) commits that when everything was published and
    /// rolls back to the savepoint otherwise. Usually every event is published, so the
    /// deletion costs the batch no time of its own.
    async fn record_ahead(&self, claim: &mut PgClaim, seqs: &[i64], archive: bool) -> Result<(), OutboxError> {
        claim.conn.execute(RECORDED_AHEAD).await?;
        claim.recorded_ahead = true;
        let sql = if archive { ARCHIVE_PUBLISHED } else { DELETE_PUBLISHED };
        sqlx::query(sql).bind(seqs).execute(&mut *claim.conn).await?;
        Ok(())
    }

    async fn complete(
        &self,
        mut claim: PgClaim,
        outcomes: &[(i64, Disposition)],
        archive: bool,
    ) -> Result<(), OutboxError> {
        let published = outcomes
            .iter()
            .filter(|(_, d)| matches!(d, Disposition::Published))
            .count();
        if !(claim.recorded_ahead && published == outcomes.len()) {
            record(&mut claim.conn, outcomes, claim.recorded_ahead, archive).await?;
        }
        claim.conn.execute("COMMIT").await?;
        // Ended cleanly: the connection can go back to the pool.
        claim.open = false;
        if self.vacuum.due(published as u64, Instant::now()) {
            tokio::spawn(vacuum(self.pool.clone(), self.vacuum.clone()));
        }
        Ok(())
    }

    async fn backlog(&self) -> Result<Backlog, OutboxError> {
        let mut conn = Detached::acquire(&self.pool).await?;
        let row = sqlx::query(&format!(
            "SELECT pending, {} AS oldest, dead FROM ({BACKLOG_SQL}) AS backlog",
            representable!("oldest")
        ))
        .fetch_one(conn.conn())
        .await?;
        conn.finish();
        let oldest: Option<OffsetDateTime> = row.try_get("oldest")?;
        Ok(Backlog {
            pending: u64::try_from(row.try_get::<i64, _>("pending")?).unwrap_or(0),
            oldest: oldest.map(age),
            dead_lettered: u64::try_from(row.try_get::<i64, _>("dead")?).unwrap_or(0),
        })
    }

    async fn purge_published(&self, retention: Duration) -> Result<u64, OutboxError> {
        let mut conn = Detached::acquire(&self.pool).await?;
        let done = sqlx::query(
            "DELETE FROM palisade_outbox_published WHERE published_at < now() - $1 * interval '1 millisecond'",
        )
        .bind(millis(retention))
        .execute(conn.conn())
        .await?;
        conn.finish();
        Ok(done.rows_affected())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, OutboxError> {
        self.list_dead(&DeadLetterFilter::all(), limit).await
    }

    async fn requeue(&self, event_id: Uuid) -> Result<bool, OutboxError> {
        self.requeue_dead(DeadLetterId::Event(event_id)).await
    }
}

/// The dead letters a [`DeadLetterFilter`] selects: `$1` the destination, `$2` the age in
/// milliseconds, either `NULL` for any.
const DEAD_WHERE: &str = "dead_lettered_at IS NOT NULL AND ($1::text IS NULL OR destination = $1)
    AND ($2::int8 IS NULL OR dead_lettered_at < now() - $2 * interval '1 millisecond')";

/// The one dead letter a [`DeadLetterId`] names: `$1` its sequence, `$2` its event id.
const DEAD_ID_WHERE: &str = "dead_lettered_at IS NOT NULL AND (seq = $1 OR event_id = $2)";

/// Puts a dead letter back in line.
const REQUEUE_SET: &str = "UPDATE palisade_outbox SET dead_lettered_at = NULL, next_attempt_at = NULL, attempts = 0";

/// Per-destination counts: the outbox's rows, then the published table's last minute.
const STATS_SQL: &str = concat!(
    "SELECT destination, pending, retrying, oldest,
        (extract(epoch FROM now() - oldest) * 1000)::int8 AS age_ms, dead, published
    FROM (SELECT destination,
        count(*) FILTER (WHERE dead_lettered_at IS NULL) AS pending,
        count(*) FILTER (WHERE dead_lettered_at IS NULL AND attempts > 0) AS retrying,
        ",
    representable!("min(staged_at) FILTER (WHERE dead_lettered_at IS NULL)"),
    " AS oldest,
        count(*) FILTER (WHERE dead_lettered_at IS NOT NULL) AS dead,
        0::int8 AS published
    FROM palisade_outbox GROUP BY destination) AS outbox
    UNION ALL
    SELECT destination, 0, 0, NULL, NULL, 0, count(*)
    FROM palisade_outbox_published WHERE published_at > now() - interval '1 minute' GROUP BY destination"
);

fn dead_letter(row: &PgRow) -> Result<DeadLetter, OutboxError> {
    Ok(DeadLetter::new(
        read_row(row)?,
        row.try_get("last_error")?,
        row.try_get("staged_at")?,
        row.try_get("dead_lettered_at")?,
    ))
}

fn id_binds(id: DeadLetterId) -> (Option<i64>, Option<Uuid>) {
    match id {
        DeadLetterId::Seq(seq) => (Some(seq), None),
        DeadLetterId::Event(event_id) => (None, Some(event_id)),
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl PgStore {
    /// Runs `statement` (an `UPDATE ... SET ...` or a `DELETE FROM ...`) on the dead letters
    /// `filter` selects; returns how many rows it changed.
    async fn change_dead(&self, statement: &str, filter: &DeadLetterFilter) -> Result<u64, OutboxError> {
        let mut conn = Detached::acquire(&self.pool).await?;
        let done = sqlx::query(&format!("{statement} WHERE {DEAD_WHERE}"))
            .bind(filter.destination.as_deref())
            .bind(filter.older_than_ms())
            .execute(conn.conn())
            .await
            .map_err(missing_tables)?;
        conn.finish();
        Ok(done.rows_affected())
    }
}

impl OutboxAdmin for PgStore {
    async fn stats(&self) -> Result<Stats, OutboxError> {
        let mut conn = Detached::acquire(&self.pool).await?;
        let rows = sqlx::query(STATS_SQL)
            .fetch_all(conn.conn())
            .await
            .map_err(missing_tables)?;
        conn.finish();
        let rows = rows
            .iter()
            .map(|row| {
                let age_ms: Option<i64> = row.try_get("age_ms")?;
                Ok(DestinationStats {
                    destination: row.try_get("destination")?,
                    counts: Counts {
                        pending: count(row.try_get("pending")?),
                        retrying: count(row.try_get("retrying")?),
                        oldest_pending_at: row.try_get("oldest")?,
                        // A negative age (a clock set back since) counts as none.
                        oldest_pending_age: age_ms.map(|ms| Duration::from_millis(count(ms))),
                        dead: count(row.try_get("dead")?),
                        published_last_minute: count(row.try_get("published")?),
                    },
                })
            })
            .collect::<Result<Vec<_>, OutboxError>>()?;
        Ok(Stats::from_rows(rows))
    }

    async fn list_dead(&self, filter: &DeadLetterFilter, limit: usize) -> Result<Vec<DeadLetter>, OutboxError> {
        let mut conn = Detached::acquire(&self.pool).await?;
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_OUTPUT}, last_error, {DEAD_TIMES} FROM palisade_outbox
             WHERE {DEAD_WHERE} ORDER BY seq LIMIT $3"
        ))
        .bind(filter.destination.as_deref())
        .bind(filter.older_than_ms())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(conn.conn())
        .await
        .map_err(missing_tables)?;
        conn.finish();
        rows.iter().map(dead_letter).collect()
    }

    async fn count_dead(&self, filter: &DeadLetterFilter) -> Result<u64, OutboxError> {
        let mut conn = Detached::acquire(&self.pool).await?;
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM palisade_outbox WHERE {DEAD_WHERE}"))
            .bind(filter.destination.as_deref())
            .bind(filter.older_than_ms())
            .fetch_one(conn.conn())
            .await
            .map_err(missing_tables)?;
        conn.finish();
        Ok(count(n))
    }

    async fn show_dead(&self, id: DeadLetterId) -> Result<Option<DeadLetter>, OutboxError> {
        let (seq, event_id) = id_binds(id);
        let mut conn = Detached::acquire(&self.pool).await?;
        let row = sqlx::query(&format!(
            "SELECT {EVENT_OUTPUT}, last_error, {DEAD_TIMES} FROM palisade_outbox
             WHERE {DEAD_ID_WHERE}"
        ))
        .bind(seq)
        .bind(event_id)
        .fetch_optional(conn.conn())
        .await
        .map_err(missing_tables)?;
        conn.finish();
        row.as_ref().map(dead_letter).transpose()
    }

    async fn requeue_dead(&self, id: DeadLetterId) -> Result<bool, OutboxError> {
        let (seq, event_id) = id_binds(id);
        let mut conn = Detached::acquire(&self.pool).await?;
        let done = sqlx::query(&format!("{REQUEUE_SET} WHERE {DEAD_ID_WHERE}"))
            .bind(seq)
            .bind(event_id)
            .execute(conn.conn())
            .await
            .map_err(missing_tables)?;
        conn.finish();
        Ok(done.rows_affected() == 1)
    }

    async fn requeue_dead_where(&self, filter: &DeadLetterFilter) -> Result<u64, OutboxError> {
        self.change_dead(REQUEUE_SET, filter).await
    }

    async fn purge_dead(&self, filter: &DeadLetterFilter) -> Result<u64, OutboxError> {
        self.change_dead("DELETE FROM palisade_outbox", filter).await
    }
}

/// Records a claim's outcomes in its transaction: undoes the removal made ahead (if any),
/// then removes the published events and marks the failed ones.
async fn record(
    conn: &mut PgConnection,
    outcomes: &[(i64, Disposition)],
    recorded_ahead: bool,
    archive: bool,
) -> Result<(), OutboxError> {
    if recorded_ahead {
        // Some event was not published: undo the removal and record each outcome.
        conn.execute("ROLLBACK TO SAVEPOINT palisade_recorded_ahead").await?;
    }

    let published: Vec<i64> = outcomes
        .iter()
        .filter(|(_, d)| matches!(d, Disposition::Published))
        .map(|(s, _)| *s)
        .collect();
    if !published.is_empty() {
        let sql = if archive { ARCHIVE_PUBLISHED } else { DELETE_PUBLISHED };
        sqlx::query(sql).bind(&published).execute(&mut *conn).await?;
    }
    let mut seqs = Vec::new();
    let mut delays: Vec<Option<i64>> = Vec::new();
    let mut errors = Vec::new();
    for (seq, disposition) in outcomes {
        let (delay, error) = match disposition {
            Disposition::Retry { delay, error } => (Some(millis(*delay)), error),
            Disposition::DeadLetter { error } => (None, error),
            Disposition::Published | Disposition::Released => continue,
        };
        seqs.push(*seq);
        delays.push(delay);
        errors.push(error.as_str());
    }
    if !seqs.is_empty() {
        // `o.seq = ANY` gives the outbox's side a condition of its own: joined on `o.seq = f.seq`
        // alone, the plan made on small statistics read the whole outbox once per failure.
        // `clock_timestamp()`, not `now()`: the claim's transaction started before the batch
        // was published, so `now()` would put a retry that much closer, or already past.
        sqlx::query(
            "UPDATE palisade_outbox o SET
                attempts = o.attempts + 1,
                last_error = f.error,
                next_attempt_at = clock_timestamp() + f.delay_ms * interval '1 millisecond',
                dead_lettered_at = CASE WHEN f.delay_ms IS NULL THEN clock_timestamp() END
             FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS f(seq, delay_ms, error)
             WHERE o.seq = f.seq AND o.seq = ANY ($1::bigint[])",
        )
        .bind(&seqs)
        .bind(&delays)
        .bind(&errors)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The elapsed time since `t`, zero if `t` is in the future.
fn age(t: OffsetDateTime) -> Duration {
    Duration::try_from(OffsetDateTime::now_utc() - t).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn claims_start_where_claims_had_seen_one_interval_earlier_and_look_everywhere_each_interval() {
        let t0 = Instant::now();
        let mut start = ScanStart::new(t0);
        assert_eq!(
            start.next(t0, SECOND),
            i64::MIN,
            "the first claim looks at the whole table"
        );
        start.saw(100);
        let ms = Duration::from_millis;
        // Nothing is known to be a whole interval old yet: from the first sequence on.
        assert_eq!(start.next(t0 + ms(400), SECOND), 1);
        start.saw(150);
        // One interval in, a new period starts at 150; what was seen before it is not yet
        // an interval old.
        assert_eq!(
            start.next(t0 + ms(1000), SECOND),
            i64::MIN,
            "whole table, one interval after the last"
        );
        assert_eq!(start.next(t0 + ms(1100), SECOND), 1);
        start.saw(300);
        // The period that started at 1100 ms (having seen 150) is an interval old at 2100 ms.
        assert_eq!(start.next(t0 + ms(1500), SECOND), 1);
        assert_eq!(start.next(t0 + ms(2000), SECOND), i64::MIN);
        assert_eq!(start.next(t0 + ms(2100), SECOND), 151);
        start.saw(200); // a lower sequence seen later never moves the start back
        assert_eq!(start.next(t0 + ms(2500), SECOND), 151);
        assert_eq!(start.next(t0 + ms(3000), SECOND), i64::MIN);
        assert_eq!(start.next(t0 + ms(3200), SECOND), 301);
    }

    #[test]
    fn a_vacuum_is_due_after_the_set_rows_one_at_a_time_and_at_most_once_a_second() {
        let t0 = Instant::now();
        let vacuum = Vacuum::new(10);
        assert!(!vacuum.due(9, t0));
        assert!(vacuum.due(1, t0), "the tenth removed row");
        assert!(!vacuum.due(50, t0 + SECOND), "not while one runs");
        vacuum.finished();
        assert!(
            vacuum.due(0, t0 + SECOND),
            "rows counted while it ran count for the next"
        );
        vacuum.finished();
        assert!(
            !vacuum.due(10, t0 + SECOND + Duration::from_millis(999)),
            "within a second of the last start"
        );
        assert!(vacuum.due(0, t0 + 2 * SECOND));
        vacuum.finished();
        assert!(!Vacuum::new(0).due(u64::MAX, t0), "0 never vacuums");
    }

    #[test]
    fn a_zero_interval_makes_every_claim_look_at_the_whole_table() {
        let t0 = Instant::now();
        let mut start = ScanStart::new(t0);
        for n in 0..3 {
            start.saw(10 * (n + 1));
            assert_eq!(
                start.next(t0 + Duration::from_millis(n as u64), Duration::ZERO),
                i64::MIN
            );
        }
    }
}
