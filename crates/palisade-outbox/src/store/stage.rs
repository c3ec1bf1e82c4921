//! Staging events and recording processed ones through the caller's own connection.

use time::format_description::well_known::Rfc3339;

use crate::envelope::{Event, MAX_PAYLOAD_DEPTH, nests_within};
use crate::error::OutboxError;

pub use crate::store::connection::OutboxConnection;

/// Stages `event` in the outbox through `conn`, normally the transaction that also writes the
/// business change. The relay sees the event only once that transaction commits; a rollback
/// leaves no trace of it.
///
/// An event the relay could not read back or publish is refused before anything is written: a
/// payload nested deeper than [`MAX_PAYLOAD_DEPTH`] fails with [`OutboxError::PayloadTooDeep`],
/// and a timestamp RFC 3339 cannot express (a year outside 0000 to 9999, an offset with
/// seconds), which every envelope carries, with [`OutboxError::Malformed`].
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
    rfc3339_timestamp(event)?;
    conn.insert_event(event).await
}

/// The event's timestamp as RFC 3339, as every envelope carries it; an error for one RFC 3339
/// cannot express (a year outside 0000 to 9999, an offset with seconds).
pub(crate) fn rfc3339_timestamp(event: &Event) -> Result<String, OutboxError> {
    event.timestamp.format(&Rfc3339).map_err(|e| OutboxError::Malformed {
        seq: 0,
        reason: format!("timestamp {}: {e}", event.timestamp),
    })
}
