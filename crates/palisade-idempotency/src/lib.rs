//! Idempotency-Key middleware for tower HTTP services.
//!
//! (The manual is completed below.)

mod body;
pub mod client;
pub mod error;
pub mod future;
mod hash;
mod key;
mod layer;
pub mod problem;
mod service;
pub mod store;

pub use body::ResponseBody;
pub use error::{ConfigError, StoreError, StoreErrorKind};
pub use hash::{Fingerprint, StoreKey};
pub use key::MAX_KEY_LEN;
pub use layer::{
    DEFAULT_CONFLICT_RETRY_AFTER, DEFAULT_LOCK_EXPIRY, DEFAULT_MAX_REQUEST_BODY, DEFAULT_MAX_RESPONSE_BODY,
    DEFAULT_RETENTION, GlobalScope, IdempotencyLayer, IdempotencyLayerBuilder, Scope, default_store_status,
};
pub use service::Idempotency;
pub use store::{Begin, Completion, IdempotencyStore, Lease, MemoryStore, StoredResponse};

/// The request header carrying the key.
pub const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// The response header marking a replay.
pub const IDEMPOTENT_REPLAYED: http::HeaderName = http::HeaderName::from_static("idempotent-replayed");
