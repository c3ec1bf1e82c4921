//! What an operator does with an outbox: count the backlog per destination, read the dead
//! letters, put them back in line, purge old ones. [`OutboxAdmin`] is implemented by
//! [`PgStore`](crate::postgres::PgStore) and [`SqliteStore`](crate::sqlite::SqliteStore); the
//! `palisade-outbox` command-line tool and the admin router (feature `admin`) call it, and so
//! can a service's own code.
//!
//! [`Stats`] and [`DeadLetter`] serialize to the JSON that the tool's `--json` output and the
//! router answer with (timestamps in RFC 3339, ages in milliseconds).

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::OutboxError;
use crate::store::DeadLetter;

/// Counts for one destination, or for the whole outbox.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    /// Events waiting to be published (claimed or not, retrying or not; dead letters excluded).
    pub pending: u64,
    /// Of the pending events, those that failed at least once and wait for a retry.
    pub retrying: u64,
    /// When the oldest pending event was staged.
    #[serde(serialize_with = "rfc3339_opt")]
    pub oldest_pending_at: Option<OffsetDateTime>,
    /// How long the oldest pending event has waited, by the database's clock.
    #[serde(rename = "oldest_pending_age_ms", serialize_with = "millis_opt")]
    pub oldest_pending_age: Option<Duration>,
    /// Events in the dead-letter state.
    pub dead: u64,
    /// Events published in the last minute. Only events the relay keeps in
    /// `palisade_outbox_published` are counted, so this stays 0 unless the relay has a
    /// `retention`.
    pub published_last_minute: u64,
}

impl Counts {
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    fn add(&mut self, other: &Counts) {
        self.pending += other.pending;
        self.retrying += other.retrying;
        self.dead += other.dead;
        self.published_last_minute += other.published_last_minute;
        if other.oldest_pending_at.is_some()
            && (self.oldest_pending_at.is_none() || other.oldest_pending_at < self.oldest_pending_at)
        {
            self.oldest_pending_at = other.oldest_pending_at;
            self.oldest_pending_age = other.oldest_pending_age;
        }
    }
}

/// [`Counts`] for one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationStats {
    /// The destination (NATS subject, routing key, stream, URL) under the publisher's prefix.
    pub destination: String,
    /// Its counts.
    #[serde(flatten)]
    pub counts: Counts,
}

/// What [`OutboxAdmin::stats`] returns: the whole outbox's counts and each destination's, by
/// destination name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Stats {
    /// The whole outbox.
    #[serde(flatten)]
    pub total: Counts,
    /// Each destination with pending or dead events, or events published in the last minute.
    pub destinations: Vec<DestinationStats>,
}

impl Stats {
    /// Stats from per-destination counts in any order: sorted by destination, with rows of one
    /// destination merged and the total summed.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn from_rows(rows: impl IntoIterator<Item = DestinationStats>) -> Self {
        let mut destinations: Vec<DestinationStats> = Vec::new();
        for row in rows {
            match destinations.iter_mut().find(|d| d.destination == row.destination) {
                Some(known) => known.counts.add(&row.counts),
                None => destinations.push(row),
            }
        }
        destinations.sort_by(|a, b| a.destination.cmp(&b.destination));
        let mut total = Counts::default();
        for destination in &destinations {
            total.add(&destination.counts);
        }
        Self { total, destinations }
    }
}

/// Which dead letter: by its row's sequence number (every dead letter has one, an unreadable
/// row too) or by its event id.
///
/// Parsed from text as a number (`42`) or a UUID (`0193f1c2-8c4e-7b8a-9d3e-2f1a5b6c7d8e`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterId {
    /// The row's sequence number ([`DeadLetter::seq`]).
    Seq(i64),
    /// The event's id.
    Event(Uuid),
}

impl fmt::Display for DeadLetterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Seq(seq) => write!(f, "{seq}"),
            Self::Event(id) => write!(f, "{id}"),
        }
    }
}

/// Text that is neither a sequence number nor a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a sequence number nor an event id (UUID)")]
pub struct InvalidDeadLetterId(pub String);

impl FromStr for DeadLetterId {
    type Err = InvalidDeadLetterId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(seq) = s.parse::<i64>() {
            return Ok(Self::Seq(seq));
        }
        Uuid::parse_str(s)
            .map(Self::Event)
            .map_err(|_| InvalidDeadLetterId(s.to_owned()))
    }
}

/// Which dead letters an operation applies to; the default is all of them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeadLetterFilter {
    /// Only those for this destination.
    pub destination: Option<String>,
    /// Only those dead-lettered longer ago than this (by the database's clock).
    pub older_than: Option<Duration>,
}

impl DeadLetterFilter {
    /// All dead letters.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only those for `destination`.
    pub fn destination(mut self, destination: impl Into<String>) -> Self {
        self.destination = Some(destination.into());
        self
    }

    /// Only those dead-lettered longer ago than `age`.
    pub fn older_than(mut self, age: Duration) -> Self {
        self.older_than = Some(age);
        self
    }

    /// `older_than` in milliseconds, saturating, for SQL parameters.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn older_than_ms(&self) -> Option<i64> {
        // No dead letter is a thousand years old: a longer duration matches what that one
        // does (nothing), where PostgreSQL would fail on a time before its calendar.
        const MILLENNIUM: Duration = Duration::from_secs(1000 * 365 * 86_400);
        self.older_than
            .map(|older_than| crate::store::millis(older_than.min(MILLENNIUM)))
    }
}

/// The operator's view of an outbox table.
///
/// Every operation is one statement; none of them creates or alters a table. On a database
/// (or PostgreSQL schema) without the outbox tables each fails with
/// [`OutboxError::MissingTables`].
///
/// Requeueing puts a dead letter back in line with its attempts reset: the relay publishes it
/// at its next claim, after any older pending event of its aggregate. Events of its aggregate
/// staged after it and published meanwhile stay published, so a requeued event reaches
/// consumers after them.
pub trait OutboxAdmin: Clone + Send + Sync + 'static {
    /// Counts the backlog, dead letters and recent publishes, in total and per destination.
    fn stats(&self) -> impl Future<Output = Result<Stats, OutboxError>> + Send;

    /// Up to `limit` dead letters matching `filter`, oldest first (in staging order).
    fn list_dead(
        &self,
        filter: &DeadLetterFilter,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, OutboxError>> + Send;

    /// How many dead letters match `filter`.
    fn count_dead(&self, filter: &DeadLetterFilter) -> impl Future<Output = Result<u64, OutboxError>> + Send;

    /// One dead letter, or `None` if there is no dead letter with that id (a pending or
    /// published event included).
    fn show_dead(&self, id: DeadLetterId) -> impl Future<Output = Result<Option<DeadLetter>, OutboxError>> + Send;

    /// Puts one dead letter back in line with its attempts reset; false if there is no dead
    /// letter with that id.
    fn requeue_dead(&self, id: DeadLetterId) -> impl Future<Output = Result<bool, OutboxError>> + Send;

    /// Puts every dead letter matching `filter` back in line; returns how many.
    fn requeue_dead_where(&self, filter: &DeadLetterFilter) -> impl Future<Output = Result<u64, OutboxError>> + Send;

    /// Deletes every dead letter matching `filter`; returns how many. They are gone for good.
    fn purge_dead(&self, filter: &DeadLetterFilter) -> impl Future<Output = Result<u64, OutboxError>> + Send;
}

/// `error`, or [`OutboxError::MissingTables`] when it says a table does not exist.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) fn missing_tables(error: sqlx::Error) -> OutboxError {
    let missing = match &error {
        // PostgreSQL: undefined_table. SQLite has no code of its own for it, only the text.
        sqlx::Error::Database(db) => db.code().as_deref() == Some("42P01") || db.message().starts_with("no such table"),
        _ => false,
    };
    if missing {
        OutboxError::MissingTables(error)
    } else {
        OutboxError::Database(error)
    }
}

fn rfc3339_opt<S: Serializer>(value: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
    time::serde::rfc3339::option::serialize(value, s)
}

fn millis_opt<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        None => s.serialize_none(),
    }
}

#[cfg(all(test, any(feature = "postgres", feature = "sqlite")))]
mod tests {
    use super::*;
    use serde_json::json;

    fn counts(pending: u64, oldest: Option<OffsetDateTime>, age_ms: u64, dead: u64, published: u64) -> Counts {
        Counts {
            pending,
            retrying: 0,
            oldest_pending_at: oldest,
            oldest_pending_age: oldest.map(|_| Duration::from_millis(age_ms)),
            dead,
            published_last_minute: published,
        }
    }

    #[test]
    fn ids_parse_as_sequence_numbers_or_event_ids() {
        assert_eq!("42".parse(), Ok(DeadLetterId::Seq(42)));
        let id = Uuid::now_v7();
        assert_eq!(id.to_string().parse(), Ok(DeadLetterId::Event(id)));
        assert_eq!(
            "ord_1".parse::<DeadLetterId>().unwrap_err().to_string(),
            r#""ord_1" is neither a sequence number nor an event id (UUID)"#
        );
    }

    #[test]
    fn rows_of_one_destination_merge_and_the_total_keeps_the_oldest() {
        let early = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap(); // 2026-01-01
        let late = early + time::Duration::days(1);
        let stats = Stats::from_rows([
            DestinationStats {
                destination: "Payment".into(),
                counts: counts(2, Some(late), 1_000, 1, 0),
            },
            DestinationStats {
                destination: "Order".into(),
                counts: counts(3, Some(early), 90_000, 0, 0),
            },
            DestinationStats {
                destination: "Payment".into(),
                counts: counts(0, None, 0, 0, 5),
            },
        ]);
        assert_eq!(
            serde_json::to_value(&stats).unwrap(),
            json!({
                "pending": 5, "retrying": 0, "oldest_pending_at": "2026-01-01T00:00:00Z",
                "oldest_pending_age_ms": 90_000, "dead": 1, "published_last_minute": 5,
                "destinations": [
                    { "destination": "Order", "pending": 3, "retrying": 0,
                      "oldest_pending_at": "2026-01-01T00:00:00Z", "oldest_pending_age_ms": 90_000,
                      "dead": 0, "published_last_minute": 0 },
                    { "destination": "Payment", "pending": 2, "retrying": 0,
                      "oldest_pending_at": "2026-01-02T00:00:00Z", "oldest_pending_age_ms": 1_000,
                      "dead": 1, "published_last_minute": 5 },
                ]
            })
        );
        assert_eq!(
            serde_json::to_value(Stats::from_rows([])).unwrap(),
            json!({ "pending": 0, "retrying": 0, "oldest_pending_at": null, "oldest_pending_age_ms": null,
                    "dead": 0, "published_last_minute": 0, "destinations": [] })
        );
    }
}
