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
//! and records each outcome. The claim is prepared once per connection but planned on every run
//! (`plan_cache_mode = force_custom_plan` in the relay's transaction), so a plan made while
//! the table was empty (a sequential scan) never sticks once it has grown. The relay's
//! transaction commits without waiting for the WAL flush (`synchronous_commit = off`): if the
//! database crashes before the flush, the events are published again (at least once).
//!
//! In every instance, wire the publish hook's wake-ups to the other instances:
//!
//! ```no_run
//! use palisade_outbox::postgres::{DEFAULT_CHANNEL, PgStore, forward_wakeups, migrate, wake_on_notify};
//! use palisade_outbox::{ChannelPublisher, Relay};
//!
//! # async fn example(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! migrate(&pool).await?;
//! let (publisher, _events) = ChannelPublisher::new(1024);
//! let relay = Relay::builder(PgStore::new(pool.clone()), publisher).build()?;
//! tokio::spawn(forward_wakeups(pool.clone(), DEFAULT_CHANNEL.to_owned(), relay.wakeup()));
//! tokio::spawn(wake_on_notify(pool.clone(), DEFAULT_CHANNEL.to_owned(), relay.wakeup()));
//! let running = relay.spawn();
//! // ... serve, with PublishHookLayer::new(relay.wakeup()) ...
//! running.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::sync::LazyLock;
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgRow};
use sqlx::types::Json;
use sqlx::{Executor, PgConnection, Postgres, Row, Transaction};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::envelope::{Event, Metadata};
use crate::error::OutboxError;
use crate::inbox::Seen;
use crate::relay::Wakeup;
use crate::store::{BACKLOG_SQL, Backlog, Claimed, DeadLetter, Disposition, OutboxStore, millis};
use palisade_core::telemetry::outbox as names;

/// The schema migrations, in order: (version, SQL).
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../migrations/postgres/0001_outbox.sql"))];

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
            tracing::warn!(target: names::TARGET, channel = %channel, error = %error, "outbox NOTIFY failed");
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
                tracing::warn!(target: names::TARGET, channel = %channel, error = %error, "outbox LISTEN connect failed");
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        if let Err(error) = listener.listen(&channel).await {
            tracing::warn!(target: names::TARGET, channel = %channel, error = %error, "outbox LISTEN failed");
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
                    tracing::warn!(target: names::TARGET, channel = %channel, error = %error, "outbox LISTEN failed");
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    break;
                }
            }
        }
    }
}

/// The relay's view of a PostgreSQL outbox.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// A store on `pool` (whose `search_path` holds the outbox tables).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

const EVENT_COLUMNS: &str = "seq, attempts, event_id, event_type, aggregate_type, aggregate_id, destination, occurred_at, version, payload, metadata";

/// The claim, built once: prepared statements are cached per connection by their text.
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH retrying AS (
            SELECT DISTINCT aggregate_type, aggregate_id FROM palisade_outbox
            WHERE next_attempt_at > now() AND dead_lettered_at IS NULL
        ), locked AS MATERIALIZED (
            SELECT {EVENT_COLUMNS} FROM palisade_outbox c
            WHERE c.dead_lettered_at IS NULL
              AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= now())
              AND NOT EXISTS (SELECT 1 FROM retrying r
                              WHERE r.aggregate_type = c.aggregate_type AND r.aggregate_id = c.aggregate_id)
            ORDER BY c.seq
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        ), spans AS (
            SELECT aggregate_type, aggregate_id, max(seq) AS last_seq FROM locked GROUP BY 1, 2
        ), blockers AS (
            -- Per aggregate, the oldest pending event this claim did not lock (walks the
            -- aggregate index from its oldest event, stopping at the first such one).
            SELECT s.aggregate_type, s.aggregate_id, b.seq AS blocker
            FROM spans s CROSS JOIN LATERAL (
                SELECT o.seq FROM palisade_outbox o
                WHERE o.aggregate_type = s.aggregate_type AND o.aggregate_id = s.aggregate_id
                  AND o.seq < s.last_seq AND o.dead_lettered_at IS NULL
                  AND o.seq NOT IN (SELECT seq FROM locked)
                ORDER BY o.seq
                LIMIT 1
            ) b
        )
        SELECT l.*, b.blocker FROM locked l LEFT JOIN blockers b USING (aggregate_type, aggregate_id)
        ORDER BY l.seq"
    )
});

fn event_from_row(row: &PgRow) -> Result<Claimed, OutboxError> {
    let seq: i64 = row.try_get("seq")?;
    let metadata: Json<serde_json::Value> = row.try_get("metadata")?;
    let metadata: Metadata = serde_json::from_value(metadata.0).map_err(|e| OutboxError::Malformed {
        seq,
        reason: format!("metadata: {e}"),
    })?;
    let attempts: i32 = row.try_get("attempts")?;
    Ok(Claimed {
        seq,
        attempts: u32::try_from(attempts).unwrap_or(0),
        event: Event {
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            destination: row.try_get("destination")?,
            timestamp: row.try_get("occurred_at")?,
            version: row.try_get("version")?,
            payload: row.try_get::<Json<serde_json::Value>, _>("payload")?.0,
            metadata,
        },
    })
}

/// A PostgreSQL claim: the transaction holding the claimed rows' locks until the relay has
/// recorded the outcome. Dropping it rolls the transaction back, which frees the rows.
#[derive(Debug)]
pub struct PgClaim {
    tx: Transaction<'static, Postgres>,
    /// Whether the claimed rows were removed ahead of the outcome, after the savepoint.
    recorded_ahead: bool,
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

    async fn claim(&self, limit: usize, _lease: Duration) -> Result<(Self::Claim, Vec<Claimed>), OutboxError> {
        // Losing the relay's own commit in a database crash only means publishing again (at
        // least once, de-duplicated by event id), so it need not wait for the WAL flush. The
        // prepared claim is planned afresh on every run, for the table's current size. One
        // round trip opens the transaction and sets both.
        let mut tx = self
            .pool
            .begin_with("BEGIN; SET LOCAL synchronous_commit TO off; SET LOCAL plan_cache_mode TO force_custom_plan")
            .await?;
        let rows = sqlx::query(CLAIM_SQL.as_str())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get("seq")?;
            let blocker: Option<i64> = row.try_get("blocker")?;
            // An older event of this aggregate is held by another relay (or was staged later
            // with a smaller sequence): leave this one locked but untouched until commit.
            if blocker.is_none_or(|b| seq < b) {
                claimed.push(event_from_row(row)?);
            }
        }
        let claim = PgClaim {
            tx,
            recorded_ahead: false,
        };
        Ok((claim, claimed))
    }

    /// Removes (or archives) the whole claim after a savepoint while the relay publishes;
    /// [`complete`](OutboxStore::complete) commits that when everything was published and
    /// rolls back to the savepoint otherwise. Usually every event is published, so the
    /// deletion costs the batch no time of its own.
    async fn record_ahead(&self, claim: &mut PgClaim, seqs: &[i64], archive: bool) -> Result<(), OutboxError> {
        claim.tx.execute(RECORDED_AHEAD).await?;
        claim.recorded_ahead = true;
        let sql = if archive { ARCHIVE_PUBLISHED } else { DELETE_PUBLISHED };
        sqlx::query(sql).bind(seqs).execute(&mut *claim.tx).await?;
        Ok(())
    }

    async fn complete(
        &self,
        claim: PgClaim,
        outcomes: &[(i64, Disposition)],
        archive: bool,
    ) -> Result<(), OutboxError> {
        let PgClaim { mut tx, recorded_ahead } = claim;
        if recorded_ahead {
            if outcomes.iter().all(|(_, d)| matches!(d, Disposition::Published)) {
                tx.commit().await?;
                return Ok(());
            }
            // Some event was not published: undo the removal and record each outcome.
            tx.execute("ROLLBACK TO SAVEPOINT palisade_recorded_ahead").await?;
        }
        let published: Vec<i64> = outcomes
            .iter()
            .filter(|(_, d)| matches!(d, Disposition::Published))
            .map(|(s, _)| *s)
            .collect();
        if !published.is_empty() {
            let sql = if archive { ARCHIVE_PUBLISHED } else { DELETE_PUBLISHED };
            sqlx::query(sql).bind(&published).execute(&mut *tx).await?;
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
            sqlx::query(
                "UPDATE palisade_outbox o SET
                    attempts = o.attempts + 1,
                    last_error = f.error,
                    next_attempt_at = now() + f.delay_ms * interval '1 millisecond',
                    dead_lettered_at = CASE WHEN f.delay_ms IS NULL THEN now() END
                 FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS f(seq, delay_ms, error)
                 WHERE o.seq = f.seq",
            )
            .bind(&seqs)
            .bind(&delays)
            .bind(&errors)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn backlog(&self) -> Result<Backlog, OutboxError> {
        let row = sqlx::query(BACKLOG_SQL).fetch_one(&self.pool).await?;
        let oldest: Option<OffsetDateTime> = row.try_get("oldest")?;
        Ok(Backlog {
            pending: u64::try_from(row.try_get::<i64, _>("pending")?).unwrap_or(0),
            oldest: oldest.map(age),
            dead_lettered: u64::try_from(row.try_get::<i64, _>("dead")?).unwrap_or(0),
        })
    }

    async fn purge_published(&self, retention: Duration) -> Result<u64, OutboxError> {
        let done = sqlx::query(
            "DELETE FROM palisade_outbox_published WHERE published_at < now() - $1 * interval '1 millisecond'",
        )
        .bind(millis(retention))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, OutboxError> {
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS}, last_error, dead_lettered_at FROM palisade_outbox
             WHERE dead_lettered_at IS NOT NULL ORDER BY seq LIMIT $1"
        ))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DeadLetter::new(
                    event_from_row(row)?,
                    row.try_get("last_error")?,
                    row.try_get("dead_lettered_at")?,
                ))
            })
            .collect()
    }

    async fn requeue(&self, event_id: Uuid) -> Result<bool, OutboxError> {
        let done = sqlx::query(
            "UPDATE palisade_outbox SET dead_lettered_at = NULL, next_attempt_at = NULL, attempts = 0
             WHERE event_id = $1 AND dead_lettered_at IS NOT NULL",
        )
        .bind(event_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// The elapsed time since `t`, zero if `t` is in the future.
fn age(t: OffsetDateTime) -> Duration {
    Duration::try_from(OffsetDateTime::now_utc() - t).unwrap_or_default()
}
