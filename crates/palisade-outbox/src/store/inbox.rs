//! The consumer side: apply each event once despite at-least-once delivery.

use uuid::Uuid;

use crate::error::OutboxError;

use crate::store::connection::OutboxConnection;
pub use crate::store::connection::Seen;

/// Records that `consumer` processes `event_id`, in the consumer's own transaction, and tells
/// whether it had already done so.
///
/// Call it first in the transaction that applies the event: on [`Seen::First`] apply and
/// commit (the record commits with the effects, so a crash before commit leaves neither); on
/// [`Seen::Duplicate`] skip. With PostgreSQL a concurrent delivery of the same event waits on
/// the first one's row and sees `Duplicate` once it commits. Old records can be deleted by
/// `processed_at` once redeliveries are no longer possible.
pub async fn process_once<C: OutboxConnection + ?Sized>(
    conn: &mut C,
    consumer: &str,
    event_id: Uuid,
) -> Result<Seen, OutboxError> {
    conn.record_inbox(consumer, event_id).await
}
