//! Staging events and recording processed ones through the caller's own connection.

use std::future::Future;

use uuid::Uuid;

use crate::envelope::{Event, MAX_PAYLOAD_DEPTH, nests_within};
use crate::error::OutboxError;
use crate::inbox::Seen;

mod sealed {
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

#[cfg(any(feature = "postgres", feature = "sqlite"))]
macro_rules! connection {
    ($module:ident, $conn:ty, $db:ty) => {
        connection!(@impl $module, $conn);
        connection!(@impl $module, sqlx::Transaction<'_, $db>);
    };
    (@impl $module:ident, $target:ty) => {
        impl sealed::Sealed for $target {}
        impl OutboxConnection for $target {
            fn insert_event<'a>(
                &'a mut self,
                event: &'a Event,
            ) -> impl Future<Output = Result<(), OutboxError>> + Send + 'a {
                crate::$module::insert(self, event)
            }

            fn record_inbox<'a>(
                &'a mut self,
                consumer: &'a str,
                event_id: Uuid,
            ) -> impl Future<Output = Result<Seen, OutboxError>> + Send + 'a {
                crate::$module::record_inbox(self, consumer, event_id)
            }
        }
    };
}

#[cfg(feature = "postgres")]
connection!(postgres, sqlx::PgConnection, sqlx::Postgres);
#[cfg(feature = "sqlite")]
connection!(sqlite, sqlx::SqliteConnection, sqlx::Sqlite);

/// Stages `event` in the outbox through `conn`, normally the transaction that also writes the
/// business change. The relay sees the event only once that transaction commits; a rollback
/// leaves no trace of it.
///
/// An event the relay could not read back is refused: a payload nested deeper than
/// [`MAX_PAYLOAD_DEPTH`] fails with [`OutboxError::PayloadTooDeep`] before anything is written.
///
/// ```no_run
/// # #[cfg(feature = "sqlite")]
/// # async fn example(pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
/// use palisade_outbox::{Event, stage};
///
/// let mut tx = pool.begin().await?;
/// sqlx::query("INSERT INTO orders (id) VALUES ('ord_1')").execute(&mut *tx).await?;
/// stage(&mut tx, &Event::new("OrderCreated", "Order", "ord_1", serde_json::json!({"total": 5}))).await?;
/// tx.commit().await?;
/// # Ok(())
/// # }
/// ```
pub async fn stage<C: OutboxConnection + ?Sized>(conn: &mut C, event: &Event) -> Result<(), OutboxError> {
    if !nests_within(&event.payload, MAX_PAYLOAD_DEPTH) {
        return Err(OutboxError::PayloadTooDeep {
            limit: MAX_PAYLOAD_DEPTH,
        });
    }
    conn.insert_event(event).await
}
