//! Webhook signatures for tower: a layer that verifies inbound webhooks
//! before the handler runs, and a layer that signs outbound ones.

mod body;
pub mod clock;
pub mod error;
pub mod future;
mod key;
mod layer;
pub mod replay;
pub mod scheme;
mod service;
mod sign;
mod verify;

pub use clock::{Clock, FixedClock, SystemClock};
pub use error::{ConfigError, Reason, Rejection, StoreError};
pub use key::MAX_KEYS;
pub use layer::{DEFAULT_MAX_BODY, SignLayer, VerifyLayer, VerifyLayerBuilder};
#[cfg(feature = "redis")]
pub use replay::RedisReplayStore;
pub use replay::{MemoryReplayStore, ReplayStore};
pub use scheme::{Encoding, GenericScheme, Scheme, SchemeKind};
pub use service::{SignService, VerifyService};
pub use sign::{IdGenerator, InvalidId, Signed, Signer, SignerBuilder, UuidV7};
pub use verify::{DEFAULT_TOLERANCE, MAX_SIGNATURES, Verified, Verifier, VerifierBuilder, stripe_event_id};
