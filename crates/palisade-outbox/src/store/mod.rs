//! Where events wait: the [`OutboxStore`] trait the relay claims from, and its PostgreSQL and
//! SQLite implementations with staging ([`stage`](stage::stage)) and the inbox
//! ([`process_once`](inbox::process_once)) on the same databases.

pub(crate) mod admin;
mod connection;
pub mod inbox;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;
pub mod stage;

use std::future::Future;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::envelope::Event;
use crate::error::OutboxError;

/// An event claimed by a relay, with what the relay needs to decide its fate.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The row's position in staging order.
    pub seq: i64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The event.
    pub event: Event,
}

/// A claimed row that cannot be read back as an event: written around [`stage`](crate::stage())
/// (a hand-written `INSERT`, an incompatible writer) or changed in the table since. The relay
/// dead-letters it with `error` and publishes the rest of the batch.
#[derive(Debug)]
pub struct Unreadable {
    /// The row's position in staging order.
    pub seq: i64,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Why it cannot be read, usually [`OutboxError::Malformed`].
    pub error: OutboxError,
}

/// What [`OutboxStore::claim`] returns: the claim, the claimed events and the claimed rows
/// that cannot be read back as events, both in staging order.
pub type ClaimedBatch<C> = (C, Vec<Claimed>, Vec<Unreadable>);

/// What became of a claimed event's publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Delivered: remove it (or archive it for the retention period).
    Published,
    /// Failed: try again after `delay`.
    Retry {
        /// The backoff before the next attempt.
        delay: Duration,
        /// The error, kept as the event's last error.
        error: String,
    },
    /// Failed for the last time: park it in the dead-letter state.
    DeadLetter {
        /// The error, kept as the event's last error.
        error: String,
    },
    /// Not attempted (an earlier event of its aggregate failed, or the batch ran out of lease): unclaim it.
    Released,
}

/// A dead-lettered event and why it got there.
///
/// Its JSON form (what the `palisade-outbox` tool's `--json` output and the admin router
/// answer) has these fields, timestamps in RFC 3339 and `event` as the [`Event`] envelope.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeadLetter {
    /// The row's position in staging order.
    pub seq: i64,
    /// The event, or `None` for a row that cannot be read back as one (see [`Unreadable`];
    /// `last_error` says why).
    pub event: Option<Event>,
    /// Attempts made.
    pub attempts: u32,
    /// The last publish error, or why the row could not be read.
    pub last_error: Option<String>,
    /// When it was staged.
    #[serde(with = "time::serde::rfc3339")]
    pub staged_at: OffsetDateTime,
    /// When it was dead-lettered.
    #[serde(with = "time::serde::rfc3339")]
    pub dead_lettered_at: OffsetDateTime,
}

/// A snapshot of the outbox's backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Events waiting to be published (claimed or not, dead letters excluded).
    pub pending: u64,
    /// Age of the oldest pending event.
    pub oldest: Option<Duration>,
    /// Events in the dead-letter state.
    pub dead_lettered: u64,
}

/// For a health endpoint: `{"pending", "oldest_ms", "dead_lettered"}`, the
/// oldest pending event's age in whole milliseconds (`null` with none).
impl serde::Serialize for Backlog {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut map = s.serialize_struct("Backlog", 3)?;
        map.serialize_field("pending", &self.pending)?;
        map.serialize_field(
            "oldest_ms",
            &self.oldest.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )?;
        map.serialize_field("dead_lettered", &self.dead_lettered)?;
        map.end()
    }
}

/// The outbox table as the relay sees it.
///
/// Implemented by [`PgStore`](crate::postgres::PgStore) and [`SqliteStore`](crate::sqlite::SqliteStore).
pub trait OutboxStore: Clone + Send + Sync + 'static {
    /// What holds a claim until [`complete`](OutboxStore::complete): a transaction holding row
    /// locks (PostgreSQL) or a lease token (SQLite). Dropping it gives the events back (with
    /// PostgreSQL as soon as the server has ended the closed connection's process, a moment
    /// after the drop; with SQLite when the lease expires).
    type Claim: Send;

    /// Claims up to `limit` due events, in staging order, for at most `lease`.
    ///
    /// Each row is read on its own: the events come back in the second list, the rows that
    /// cannot be read back as events in the third (both in staging order), all of them
    /// claimed. The relay dead-letters the unreadable ones through
    /// [`complete`](OutboxStore::complete).
    ///
    /// An aggregate with an older event held by someone else or waiting for a retry is
    /// skipped, so its later events never overtake it: the claimed events of one aggregate
    /// are always the oldest of its pending events.
    fn claim(
        &self,
        limit: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<ClaimedBatch<Self::Claim>, OutboxError>> + Send;

    /// Called while the claimed events (`seqs`, the whole claim) are being published, so the
    /// store's own work overlaps the broker's: a store may record them all as published
    /// ahead of the outcome, provisionally, and [`complete`](OutboxStore::complete) then
    /// keeps that record when every event was published and undoes it otherwise. The default
    /// does nothing.
    fn record_ahead(
        &self,
        _claim: &mut Self::Claim,
        _seqs: &[i64],
        _archive: bool,
    ) -> impl Future<Output = Result<(), OutboxError>> + Send {
        async { Ok(()) }
    }

    /// Records what happened to the claimed events and ends the claim. `archive` keeps
    /// published events in the published table (for the retention period) instead of deleting them.
    fn complete(
        &self,
        claim: Self::Claim,
        outcomes: &[(i64, Disposition)],
        archive: bool,
    ) -> impl Future<Output = Result<(), OutboxError>> + Send;

    /// Counts the backlog.
    fn backlog(&self) -> impl Future<Output = Result<Backlog, OutboxError>> + Send;

    /// Deletes archived published events older than `retention`; returns how many.
    fn purge_published(&self, retention: Duration) -> impl Future<Output = Result<u64, OutboxError>> + Send;

    /// Dead-lettered events, oldest first.
    fn dead_letters(&self, limit: usize) -> impl Future<Output = Result<Vec<DeadLetter>, OutboxError>> + Send;

    /// Puts a dead-lettered event back in line with its attempts reset; false if no such dead letter.
    fn requeue(&self, event_id: Uuid) -> impl Future<Output = Result<bool, OutboxError>> + Send;
}

/// Milliseconds in `d`, saturating, for SQL parameters.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The backlog query, the same on both databases.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) const BACKLOG_SQL: &str = "SELECT count(*) FILTER (WHERE dead_lettered_at IS NULL) AS pending,
        min(staged_at) FILTER (WHERE dead_lettered_at IS NULL) AS oldest,
        count(*) FILTER (WHERE dead_lettered_at IS NOT NULL) AS dead
    FROM palisade_outbox";

impl DeadLetter {
    /// The dead letter of a row read as `read` (the event, or why it could not be read).
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn new(
        read: Result<Claimed, Unreadable>,
        last_error: Option<String>,
        staged_at: OffsetDateTime,
        dead_lettered_at: OffsetDateTime,
    ) -> Self {
        let (seq, attempts, event) = match read {
            Ok(claimed) => (claimed.seq, claimed.attempts, Some(claimed.event)),
            Err(unreadable) => (unreadable.seq, unreadable.attempts, None),
        };
        Self {
            seq,
            event,
            attempts,
            last_error,
            staged_at,
            dead_lettered_at,
        }
    }
}

/// The error for column `column` of row `seq` that could not be read: `reason` says why.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn malformed(seq: i64, column: &str, reason: &dyn std::fmt::Display) -> OutboxError {
    OutboxError::Malformed {
        seq,
        reason: format!("{column}: {reason}"),
    }
}

/// [`malformed`] for a column sqlx could not decode, naming the decoder's own complaint.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn undecodable(seq: i64, column: &str, error: sqlx::Error) -> OutboxError {
    match error {
        sqlx::Error::ColumnDecode { source, .. } => malformed(seq, column, &source),
        other => malformed(seq, column, &other),
    }
}

/// One claimed row read on its own: its event, or why it cannot be read back as one. An
/// attempts count that cannot be read counts as none.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn claimed_row(
    seq: i64,
    attempts: Option<u32>,
    event: Result<Event, OutboxError>,
) -> Result<Claimed, Unreadable> {
    let attempts = attempts.unwrap_or(0);
    match event {
        Ok(event) => Ok(Claimed { seq, attempts, event }),
        Err(error) => Err(Unreadable { seq, attempts, error }),
    }
}

/// Splits rows read one by one into the events and the unreadable rows, each in staging order.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn split_readable(
    rows: impl IntoIterator<Item = Result<Claimed, Unreadable>>,
) -> (Vec<Claimed>, Vec<Unreadable>) {
    let mut claimed = Vec::new();
    let mut unreadable = Vec::new();
    for row in rows {
        match row {
            Ok(event) => claimed.push(event),
            Err(row) => unreadable.push(row),
        }
    }
    claimed.sort_unstable_by_key(|c| c.seq);
    unreadable.sort_unstable_by_key(|u| u.seq);
    (claimed, unreadable)
}

/// A connection taken from the pool for one store operation. Unless the operation
/// [finished](Detached::finish) on it, dropping it closes the connection instead of giving it
/// back: an operation given up mid-way (its future dropped, say by the relay's store timeout)
/// leaves it inside a statement or transaction whose end never came, and a pool would test it
/// with a round trip that a stalled network never answers, holding its slot meanwhile.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[derive(Debug)]
pub(crate) struct Detached<DB: sqlx::Database> {
    conn: sqlx::pool::PoolConnection<DB>,
    finished: bool,
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl<DB: sqlx::Database> Detached<DB> {
    pub(crate) async fn acquire(pool: &sqlx::Pool<DB>) -> Result<Self, sqlx::Error> {
        Ok(Self {
            conn: pool.acquire().await?,
            finished: false,
        })
    }

    pub(crate) fn conn(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }

    /// The operation ended cleanly: the connection may go back to the pool.
    pub(crate) fn finish(mut self) {
        self.finished = true;
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl<DB: sqlx::Database> Drop for Detached<DB> {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}
