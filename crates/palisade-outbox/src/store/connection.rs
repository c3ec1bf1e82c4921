//! The connections events are staged and inbox records written through, and what the inbox
//! answers; implemented by the database modules.

use std::future::Future;

use uuid::Uuid;

use crate::envelope::Event;
use crate::error::OutboxError;

/// Whether a consumer has processed an event before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Seen {
    /// First delivery: apply the event, then commit.
    First,
    /// Already processed by this consumer (a redelivery): skip it.
    Duplicate,
}

impl Seen {
    /// True for a redelivery.
    pub fn is_duplicate(self) -> bool {
        self == Self::Duplicate
    }
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// A PostgreSQL or SQLite connection or transaction that events can be staged through.
///
/// Implemented for `sqlx::Transaction` and the plain connections of both databases; sealed.
pub trait OutboxConnection: sealed::Sealed + Send {
    #[doc(hidden)]
    fn insert_event<'a>(&'a mut self, event: &'a Event) -> impl Future<Output = Result<(), OutboxError>> + Send + 'a;

    #[doc(hidden)]
    fn record_inbox<'a>(
        &'a mut self,
        consumer: &'a str,
        event_id: Uuid,
    ) -> impl Future<Output = Result<Seen, OutboxError>> + Send + 'a;
}

/// Implements [`OutboxConnection`] for a database's connection type `$conn` and its
/// transactions, through the `insert` and `record_inbox` functions where it is invoked.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
macro_rules! outbox_connection {
    ($conn:ty, $db:ty) => {
        $crate::store::connection::outbox_connection!(@impl $conn);
        $crate::store::connection::outbox_connection!(@impl sqlx::Transaction<'_, $db>);
    };
    (@impl $target:ty) => {
        impl $crate::store::connection::sealed::Sealed for $target {}
        impl $crate::store::connection::OutboxConnection for $target {
            fn insert_event<'a>(
                &'a mut self,
                event: &'a $crate::envelope::Event,
            ) -> impl std::future::Future<Output = Result<(), $crate::error::OutboxError>> + Send + 'a {
                insert(self, event)
            }

            fn record_inbox<'a>(
                &'a mut self,
                consumer: &'a str,
                event_id: uuid::Uuid,
            ) -> impl std::future::Future<Output = Result<$crate::store::connection::Seen, $crate::error::OutboxError>>
            + Send
            + 'a {
                record_inbox(self, consumer, event_id)
            }
        }
    };
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) use outbox_connection;
