//! The outbox's errors.

use std::fmt;
use std::time::Duration;

use palisade_core::BoxError;

/// An impossible relay or layer configuration, reported by `build()`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A batch must hold at least one event.
    #[error("batch size must be at least 1")]
    ZeroBatchSize,
    /// At least one batch loop and one publish must be allowed in flight.
    #[error("concurrency and workers must be at least 1")]
    ZeroConcurrency,
    /// A zero poll interval would spin.
    #[error("poll interval must be greater than zero")]
    ZeroPollInterval,
    /// A zero cleanup interval would purge without pause.
    #[error("cleanup interval must be greater than zero")]
    ZeroCleanupInterval,
    /// A zero backlog interval would count the backlog without pause.
    #[error("backlog interval must be greater than zero")]
    ZeroBacklogInterval,
    /// At least one attempt is needed before dead-lettering.
    #[error("max attempts must be at least 1")]
    ZeroMaxAttempts,
    /// An impossible backoff: a cap below the first wait, or a multiplier that is not a
    /// finite number of at least 1.
    #[error("invalid backoff: {0}")]
    Backoff(palisade_core::backoff::BackoffError),
    /// The claim lease must outlast a publish, or another relay could take over an event still being sent.
    #[error("lease {lease:?} must be longer than twice the publish timeout {publish_timeout:?}")]
    LeaseTooShort {
        /// The claim lease.
        lease: Duration,
        /// The per-event publish timeout.
        publish_timeout: Duration,
    },
    /// A zero publish timeout fails every publish.
    #[error("publish timeout must be greater than zero")]
    ZeroPublishTimeout,
    /// A zero store timeout fails every store operation.
    #[error("store timeout must be greater than zero")]
    ZeroStoreTimeout,
    /// A store operation allowed so long that, with a publish timeout, it
    /// could outlast the lease of the claim it serves.
    #[error("store timeout {store_timeout:?} plus the publish timeout must be shorter than the lease {lease:?}")]
    StoreTimeoutTooLong {
        /// The store timeout.
        store_timeout: Duration,
        /// The claim lease.
        lease: Duration,
    },
    /// The HTTP publisher's base URL cannot take destinations.
    #[cfg(feature = "http")]
    #[error("base URL {url:?} is unusable: {reason}")]
    BaseUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A database or stored-data error from staging, claiming, marking or querying events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The database failed.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
    #[error("outbox database error")]
    Database(#[from] sqlx::Error),
    /// The database (or the PostgreSQL connection's `search_path`) has no outbox tables: it
    /// was never migrated, or this is not the outbox's database or schema. Returned by the
    /// [operator's operations](crate::OutboxAdmin), which never create tables.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
    #[error(
        "no outbox tables in this database: run palisade_outbox's migrate, or check the database URL (and, on PostgreSQL, the schema in its search_path)"
    )]
    MissingTables(#[source] sqlx::Error),
    /// A migration failed.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
    #[error("outbox migration {version} failed")]
    Migration {
        /// The migration's version.
        version: i64,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// A store operation the relay awaited (a claim, recording a batch, the backlog count, a
    /// purge) did not finish within the relay's store timeout; the relay gave it up.
    #[error("outbox store operation {operation} timed out after {after:?}")]
    Timeout {
        /// The operation: `claim`, `record_ahead`, `complete`, `backlog` or `purge_published`.
        operation: &'static str,
        /// The store timeout.
        after: Duration,
    },
    /// A stored row could not be turned back into an event.
    #[error("outbox row {seq} is malformed: {reason}")]
    Malformed {
        /// The row's sequence number.
        seq: i64,
        /// What was wrong.
        reason: String,
    },
    /// The event's payload nests arrays and objects deeper than
    /// [`MAX_PAYLOAD_DEPTH`](crate::envelope::MAX_PAYLOAD_DEPTH): the relay could not read it
    /// back from the database, nor a consumer its published envelope, so it is not staged.
    #[error("event payload nests deeper than {limit} levels: the relay and consumers could not read it back")]
    PayloadTooDeep {
        /// The deepest nesting accepted.
        limit: usize,
    },
}

/// Whether a failed publish may succeed if tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishErrorKind {
    /// Broker unreachable, timeout, negative acknowledgement: retried with backoff.
    Transient,
    /// The message can never be delivered (rejected as invalid): dead-lettered at once.
    Permanent,
}

/// A failed publish, with its cause as `source()`.
#[derive(Debug)]
pub struct PublishError {
    kind: PublishErrorKind,
    source: BoxError,
}

impl PublishError {
    /// A failure that a later attempt may not repeat.
    pub fn transient(source: impl Into<BoxError>) -> Self {
        Self {
            kind: PublishErrorKind::Transient,
            source: source.into(),
        }
    }

    /// A failure no retry can fix; the event is dead-lettered at once.
    pub fn permanent(source: impl Into<BoxError>) -> Self {
        Self {
            kind: PublishErrorKind::Permanent,
            source: source.into(),
        }
    }

    /// Transient or permanent.
    pub fn kind(&self) -> PublishErrorKind {
        self.kind
    }

    /// True when a retry may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == PublishErrorKind::Transient
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            PublishErrorKind::Transient => "transient",
            PublishErrorKind::Permanent => "permanent",
        };
        write!(f, "publish failed ({kind}): {}", self.source)
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// The event took longer than the relay's publish timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("publish timed out after {0:?}")]
pub struct PublishTimeout(pub Duration);

/// `error` and its causes, joined by `: `, each cause left out when the text before it already
/// ends with it (as [`PublishError`]'s own text does): what the relay logs, and what the
/// `palisade-outbox` tool prints.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn publish_error_keeps_its_source() {
        let error = PublishError::transient(PublishTimeout(Duration::from_secs(1)));
        assert!(error.is_transient());
        assert_eq!(
            error.to_string(),
            "publish failed (transient): publish timed out after 1s"
        );
        let source = error.source().unwrap();
        assert_eq!(
            source.downcast_ref::<PublishTimeout>(),
            Some(&PublishTimeout(Duration::from_secs(1)))
        );
        assert_eq!(PublishError::permanent("bad").kind(), PublishErrorKind::Permanent);
    }

    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    #[test]
    fn error_chains_name_every_cause_once() {
        let io = std::io::Error::other("connection reset");
        let database = OutboxError::Database(sqlx::Error::Io(io));
        assert_eq!(
            error_chain(&database),
            "outbox database error: error communicating with database: connection reset"
        );
        let publish = PublishError::transient(std::io::Error::other(PublishTimeout(Duration::from_secs(1))));
        assert_eq!(
            error_chain(&publish),
            "publish failed (transient): publish timed out after 1s"
        );
    }
}
