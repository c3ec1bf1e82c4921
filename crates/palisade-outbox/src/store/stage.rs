//! Staging events and recording processed ones through the caller's own connection.

use crate::envelope::{Event, MAX_PAYLOAD_DEPTH, nests_within};
use crate::error::OutboxError;

pub use crate::store::connection::OutboxConnection;

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
