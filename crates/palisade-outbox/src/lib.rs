//! Transactional outbox.
pub mod context;
pub mod envelope;
pub mod error;
pub mod future;
pub mod inbox;
mod layer;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod publisher;
pub mod relay;
mod service;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod stage;
pub mod store;

pub use context::OutboxContext;
pub use envelope::{CloudEvent, Encoding, Event, Metadata, TraceContext};
pub use error::{ConfigError, OutboxError, PublishError, PublishErrorKind, PublishTimeout};
pub use inbox::{Seen, process_once};
pub use layer::PublishHookLayer;
pub use publisher::{ChannelPublisher, Publisher};
pub use relay::{BatchReport, Relay, RelayBuilder, RelayHandle, Wakeup};
pub use service::PublishHook;
pub use stage::{OutboxConnection, stage};
pub use store::{Backlog, Claimed, DeadLetter, Disposition, OutboxStore};
