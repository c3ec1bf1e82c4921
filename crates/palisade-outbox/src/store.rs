//! The storage the relay works against, implemented for PostgreSQL and SQLite.

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
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The event.
    pub event: Event,
    /// Attempts made.
    pub attempts: u32,
    /// The last publish error.
    pub last_error: Option<String>,
    /// When it was dead-lettered.
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

/// The outbox table as the relay sees it.
///
/// Implemented by [`PgStore`](crate::postgres::PgStore) and [`SqliteStore`](crate::sqlite::SqliteStore).
pub trait OutboxStore: Clone + Send + Sync + 'static {
    /// What holds a claim until [`complete`](OutboxStore::complete): a transaction holding row
    /// locks (PostgreSQL) or a lease token (SQLite). Dropping it gives the events back (at once
    /// with PostgreSQL, when the lease expires with SQLite).
    type Claim: Send;

    /// Claims up to `limit` due events, in staging order, for at most `lease`.
    ///
    /// An aggregate with an older event held by someone else or waiting for a retry is
    /// skipped, so its later events never overtake it: the claimed events of one aggregate
    /// are always the oldest of its pending events.
    fn claim(
        &self,
        limit: usize,
        lease: Duration,
    ) -> impl Future<Output = Result<(Self::Claim, Vec<Claimed>), OutboxError>> + Send;

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
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn new(claimed: Claimed, last_error: Option<String>, dead_lettered_at: OffsetDateTime) -> Self {
        Self {
            event: claimed.event,
            attempts: claimed.attempts,
            last_error,
            dead_lettered_at,
        }
    }
}
