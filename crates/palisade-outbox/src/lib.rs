//! Transactional outbox.
pub mod envelope;
pub mod error;
pub mod inbox;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod publisher;
pub mod relay;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod stage;
pub mod store;

pub use envelope::{CloudEvent, Encoding, Event, Metadata, TraceContext};
pub use error::{ConfigError, OutboxError, PublishError, PublishErrorKind, PublishTimeout};
pub use inbox::{Seen, process_once};
pub use publisher::{ChannelPublisher, Publisher};
pub use relay::{BatchReport, Relay, RelayBuilder, RelayHandle, Wakeup};
pub use stage::{OutboxConnection, stage};
pub use store::{Backlog, Claimed, DeadLetter, Disposition, OutboxStore};
