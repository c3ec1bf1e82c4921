//! SQLite: migrations, staging, the relay's store and the inbox.
//!
//! SQLite has one writer at a time, so a relay must not hold a write transaction while it
//! publishes (staging would wait behind the broker). A relay instead claims a batch with one
//! `UPDATE … RETURNING` that stamps a lease (owner and expiry) on the rows, publishes, and then
//! deletes or updates only rows still carrying its lease. A relay that dies leaves its rows
//! claimed until the lease expires (30 s by default); then any relay takes them over. Times
//! are stored as Unix epoch milliseconds.

use std::time::Duration;

use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Executor, Row, SqliteConnection};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::envelope::{Event, Metadata};
use crate::error::OutboxError;
use crate::store::admin::{
    Counts, DeadLetterFilter, DeadLetterId, DestinationStats, OutboxAdmin, Stats, missing_tables,
};
use crate::store::connection::{Seen, outbox_connection};
use crate::store::{
    BACKLOG_SQL, Backlog, Claimed, ClaimedBatch, DeadLetter, Detached, Disposition, OutboxStore, Unreadable,
    claimed_row, malformed, millis, split_readable, undecodable,
};

const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../../migrations/sqlite/0001_outbox.sql"))];

/// Creates or upgrades the outbox tables. Safe to call on every start.
pub async fn migrate(pool: &SqlitePool) -> Result<(), OutboxError> {
    // BEGIN IMMEDIATE takes the write lock up front, so two processes migrating at once queue.
    // A transaction of sqlx's, so that a failed COMMIT (busy past the busy timeout) or a
    // dropped call rolls back before its connection serves again.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    apply_migrations(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

async fn apply_migrations(conn: &mut SqliteConnection) -> Result<(), OutboxError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS palisade_outbox_migrations (
            version INTEGER PRIMARY KEY,
            applied_at INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)))",
    )
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM palisade_outbox_migrations")
        .fetch_all(&mut *conn)
        .await?;
    for &(version, sql) in MIGRATIONS.iter().filter(|(v, _)| !applied.contains(v)) {
        sqlx::raw_sql(sql)
            .execute(&mut *conn)
            .await
            .map_err(|source| OutboxError::Migration { version, source })?;
        sqlx::query("INSERT INTO palisade_outbox_migrations (version) VALUES (?)")
            .bind(version)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn now_ms() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) async fn insert(conn: &mut SqliteConnection, event: &Event) -> Result<(), OutboxError> {
    let occurred_at = super::stage::rfc3339_timestamp(event)?;
    sqlx::query(
        "INSERT INTO palisade_outbox
            (event_id, event_type, aggregate_type, aggregate_id, destination, occurred_at, version, payload, metadata)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(event.event_id.to_string())
    .bind(&event.event_type)
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(&event.destination)
    .bind(occurred_at)
    .bind(event.version)
    .bind(event.payload.to_string())
    .bind(serde_json::to_string(&event.metadata).unwrap_or_default())
    .execute(conn)
    .await?;
    Ok(())
}

outbox_connection!(SqliteConnection, sqlx::Sqlite);

pub(crate) async fn record_inbox(
    conn: &mut SqliteConnection,
    consumer: &str,
    event_id: Uuid,
) -> Result<Seen, OutboxError> {
    let inserted = sqlx::query("INSERT INTO palisade_inbox (consumer, event_id) VALUES (?, ?) ON CONFLICT DO NOTHING")
        .bind(consumer)
        .bind(event_id.to_string())
        .execute(conn)
        .await?
        .rows_affected();
    Ok(if inserted == 1 { Seen::First } else { Seen::Duplicate })
}

/// A claim on SQLite: the lease's owner token.
#[derive(Debug)]
pub struct Lease {
    owner: String,
}

/// The relay's view of an SQLite outbox.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// A store on `pool`.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

const EVENT_COLUMNS: &str = "seq, attempts, event_id, event_type, aggregate_type, aggregate_id, destination, occurred_at, version, payload, metadata";

/// Reads a row on its own: the event, or why this row cannot be read back as one. Fails only
/// when the row's sequence number cannot be read.
fn read_row(row: &SqliteRow) -> Result<Result<Claimed, Unreadable>, OutboxError> {
    let seq: i64 = row.try_get("seq")?;
    let attempts = row
        .try_get::<i64, _>("attempts")
        .ok()
        .and_then(|attempts| u32::try_from(attempts).ok());
    Ok(claimed_row(seq, attempts, event_from_row(row, seq)))
}

fn event_from_row(row: &SqliteRow, seq: i64) -> Result<Event, OutboxError> {
    fn column<'r, T>(row: &'r SqliteRow, seq: i64, name: &str) -> Result<T, OutboxError>
    where
        T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
    {
        row.try_get(name).map_err(|e| undecodable(seq, name, e))
    }
    let event_id: String = column(row, seq, "event_id")?;
    let occurred_at: String = column(row, seq, "occurred_at")?;
    let payload: String = column(row, seq, "payload")?;
    let metadata: String = column(row, seq, "metadata")?;
    Ok(Event {
        event_id: Uuid::parse_str(&event_id).map_err(|e| malformed(seq, "event_id", &e))?,
        event_type: column(row, seq, "event_type")?,
        aggregate_type: column(row, seq, "aggregate_type")?,
        aggregate_id: column(row, seq, "aggregate_id")?,
        destination: column(row, seq, "destination")?,
        timestamp: OffsetDateTime::parse(&occurred_at, &Rfc3339).map_err(|e| malformed(seq, "occurred_at", &e))?,
        version: column(row, seq, "version")?,
        payload: serde_json::from_str(&payload).map_err(|e| malformed(seq, "payload", &e))?,
        metadata: serde_json::from_str::<Metadata>(&metadata).map_err(|e| malformed(seq, "metadata", &e))?,
    })
}

fn seq_list(seqs: impl Iterator<Item = i64>) -> String {
    serde_json::Value::from(seqs.collect::<Vec<_>>()).to_string()
}

impl OutboxStore for SqliteStore {
    type Claim = Lease;

    async fn claim(&self, limit: usize, lease: Duration) -> Result<ClaimedBatch<Self::Claim>, OutboxError> {
        let owner = Uuid::now_v7().to_string();
        let mut conn = Detached::acquire(&self.pool).await?;
        let rows = sqlx::query(&format!(
            "WITH blocked AS (
                SELECT aggregate_type, aggregate_id FROM palisade_outbox
                WHERE dead_lettered_at IS NULL AND (claimed_until > ?1 OR next_attempt_at > ?1)
            ), due AS (
                SELECT c.seq FROM palisade_outbox c
                WHERE c.dead_lettered_at IS NULL
                  AND (c.claimed_until IS NULL OR c.claimed_until <= ?1)
                  AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= ?1)
                  AND NOT EXISTS (SELECT 1 FROM blocked b
                                  WHERE b.aggregate_type = c.aggregate_type AND b.aggregate_id = c.aggregate_id)
                ORDER BY c.seq
                LIMIT ?2
            )
            UPDATE palisade_outbox SET claimed_by = ?3, claimed_until = ?1 + ?4
            WHERE seq IN (SELECT seq FROM due)
            RETURNING {EVENT_COLUMNS}"
        ))
        .bind(now_ms())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(&owner)
        .bind(millis(lease))
        .fetch_all(conn.conn())
        .await?;
        conn.finish();
        let read = rows.iter().map(read_row).collect::<Result<Vec<_>, _>>()?;
        let (claimed, unreadable) = split_readable(read);
        Ok((Lease { owner }, claimed, unreadable))
    }

    async fn complete(&self, lease: Lease, outcomes: &[(i64, Disposition)], archive: bool) -> Result<(), OutboxError> {
        let now = now_ms();
        let mut conn = Detached::acquire(&self.pool).await?;
        let mut tx = sqlx::Connection::begin(conn.conn()).await?;
        let published = seq_list(
            outcomes
                .iter()
                .filter(|(_, d)| *d == Disposition::Published)
                .map(|(s, _)| *s),
        );
        if archive {
            sqlx::query(
                "INSERT INTO palisade_outbox_published
                    (seq, event_id, event_type, aggregate_type, aggregate_id, destination, occurred_at, version,
                     payload, metadata, staged_at, attempts, published_at)
                 SELECT seq, event_id, event_type, aggregate_type, aggregate_id, destination, occurred_at, version,
                     payload, metadata, staged_at, attempts, ?3
                 FROM palisade_outbox WHERE seq IN (SELECT value FROM json_each(?1)) AND claimed_by = ?2",
            )
            .bind(&published)
            .bind(&lease.owner)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM palisade_outbox WHERE seq IN (SELECT value FROM json_each(?1)) AND claimed_by = ?2")
            .bind(&published)
            .bind(&lease.owner)
            .execute(&mut *tx)
            .await?;
        for (seq, disposition) in outcomes {
            let (next_attempt_at, dead_lettered_at, error) = match disposition {
                Disposition::Retry { delay, error } => (Some(now.saturating_add(millis(*delay))), None, error),
                Disposition::DeadLetter { error } => (None, Some(now), error),
                Disposition::Published | Disposition::Released => continue,
            };
            sqlx::query(
                "UPDATE palisade_outbox SET attempts = attempts + 1, last_error = ?1, next_attempt_at = ?2,
                    dead_lettered_at = ?3, claimed_by = NULL, claimed_until = NULL
                 WHERE seq = ?4 AND claimed_by = ?5",
            )
            .bind(error)
            .bind(next_attempt_at)
            .bind(dead_lettered_at)
            .bind(seq)
            .bind(&lease.owner)
            .execute(&mut *tx)
            .await?;
        }
        let released = seq_list(
            outcomes
                .iter()
                .filter(|(_, d)| *d == Disposition::Released)
                .map(|(s, _)| *s),
        );
        sqlx::query(
            "UPDATE palisade_outbox SET claimed_by = NULL, claimed_until = NULL
             WHERE seq IN (SELECT value FROM json_each(?1)) AND claimed_by = ?2",
        )
        .bind(&released)
        .bind(&lease.owner)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        conn.finish();
        Ok(())
    }

    async fn backlog(&self) -> Result<Backlog, OutboxError> {
        let mut conn = Detached::acquire(&self.pool).await?;
        let row = sqlx::query(BACKLOG_SQL).fetch_one(conn.conn()).await?;
        conn.finish();
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok(Backlog {
            pending: u64::try_from(row.try_get::<i64, _>("pending")?).unwrap_or(0),
            oldest: oldest.map(|ms| Duration::from_millis(u64::try_from(now_ms().saturating_sub(ms)).unwrap_or(0))),
            dead_lettered: u64::try_from(row.try_get::<i64, _>("dead")?).unwrap_or(0),
        })
    }

    async fn purge_published(&self, retention: Duration) -> Result<u64, OutboxError> {
        let mut conn = Detached::acquire(&self.pool).await?;
        let done = sqlx::query("DELETE FROM palisade_outbox_published WHERE published_at < ?")
            .bind(now_ms().saturating_sub(millis(retention)))
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

/// The dead letters a [`DeadLetterFilter`] selects: `?1` the destination, `?2` the latest
/// dead-lettering time (epoch milliseconds), either `NULL` for any.
const DEAD_WHERE: &str = "dead_lettered_at IS NOT NULL AND (?1 IS NULL OR destination = ?1)
    AND (?2 IS NULL OR dead_lettered_at < ?2)";

/// The one dead letter a [`DeadLetterId`] names: `?1` its sequence, `?2` its event id.
const DEAD_ID_WHERE: &str = "dead_lettered_at IS NOT NULL AND (seq = ?1 OR event_id = ?2)";

/// Puts a dead letter back in line.
const REQUEUE_SET: &str = "UPDATE palisade_outbox SET dead_lettered_at = NULL, next_attempt_at = NULL, attempts = 0";

/// Per-destination counts: the outbox's rows, then the published table's rows published after `?1`.
const STATS_SQL: &str = "SELECT destination,
        count(*) FILTER (WHERE dead_lettered_at IS NULL) AS pending,
        count(*) FILTER (WHERE dead_lettered_at IS NULL AND attempts > 0) AS retrying,
        min(staged_at) FILTER (WHERE dead_lettered_at IS NULL) AS oldest,
        count(*) FILTER (WHERE dead_lettered_at IS NOT NULL) AS dead,
        0 AS published
    FROM palisade_outbox GROUP BY destination
    UNION ALL
    SELECT destination, 0, 0, NULL, 0, count(*)
    FROM palisade_outbox_published WHERE published_at > ?1 GROUP BY destination";

fn dead_letter(row: &SqliteRow) -> Result<DeadLetter, OutboxError> {
    Ok(DeadLetter::new(
        read_row(row)?,
        row.try_get("last_error")?,
        from_ms(row.try_get("staged_at")?),
        from_ms(row.try_get("dead_lettered_at")?),
    ))
}

fn id_binds(id: DeadLetterId) -> (Option<i64>, Option<String>) {
    match id {
        DeadLetterId::Seq(seq) => (Some(seq), None),
        DeadLetterId::Event(event_id) => (None, Some(event_id.to_string())),
    }
}

/// The filter's latest dead-lettering time, in epoch milliseconds.
fn dead_before(filter: &DeadLetterFilter) -> Option<i64> {
    filter.older_than_ms().map(|ms| now_ms().saturating_sub(ms))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl SqliteStore {
    /// Runs `statement` (an `UPDATE ... SET ...` or a `DELETE FROM ...`) on the dead letters
    /// `filter` selects; returns how many rows it changed.
    async fn change_dead(&self, statement: &str, filter: &DeadLetterFilter) -> Result<u64, OutboxError> {
        let mut conn = Detached::acquire(&self.pool).await?;
        let done = sqlx::query(&format!("{statement} WHERE {DEAD_WHERE}"))
            .bind(filter.destination.as_deref())
            .bind(dead_before(filter))
            .execute(conn.conn())
            .await
            .map_err(missing_tables)?;
        conn.finish();
        Ok(done.rows_affected())
    }
}

impl OutboxAdmin for SqliteStore {
    async fn stats(&self) -> Result<Stats, OutboxError> {
        let now = now_ms();
        let mut conn = Detached::acquire(&self.pool).await?;
        let rows = sqlx::query(STATS_SQL)
            .bind(now.saturating_sub(60_000))
            .fetch_all(conn.conn())
            .await
            .map_err(missing_tables)?;
        conn.finish();
        let rows = rows
            .iter()
            .map(|row| {
                let oldest: Option<i64> = row.try_get("oldest")?;
                Ok(DestinationStats {
                    destination: row.try_get("destination")?,
                    counts: Counts {
                        pending: count(row.try_get("pending")?),
                        retrying: count(row.try_get("retrying")?),
                        oldest_pending_at: oldest.map(from_ms),
                        oldest_pending_age: oldest.map(|ms| Duration::from_millis(count(now.saturating_sub(ms)))),
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
            "SELECT {EVENT_COLUMNS}, last_error, staged_at, dead_lettered_at FROM palisade_outbox
             WHERE {DEAD_WHERE} ORDER BY seq LIMIT ?3"
        ))
        .bind(filter.destination.as_deref())
        .bind(dead_before(filter))
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
            .bind(dead_before(filter))
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
            "SELECT {EVENT_COLUMNS}, last_error, staged_at, dead_lettered_at FROM palisade_outbox
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
