//! A safe retry policy for tower.
//!
//! (Manual below.)

mod backoff;
mod body;
mod budget;
mod error;
pub mod future;
mod layer;
mod policy;
mod service;

pub use backoff::{Backoff, Jitter};
pub use body::{DEFAULT_REPLAY_LIMIT, ReplayBody};
pub use budget::{RetryBudget, RetryBudgetBuilder};
pub use error::{ConfigError, ReplayUnavailable};
pub use layer::RetryLayer;
pub use palisade_core::{AsError, BoxError, BulkheadFull, BulkheadTimeout, CircuitOpen};
pub use policy::{
    AnyRequest, HttpRequest, HttpRetryPolicy, IDEMPOTENCY_KEY, RetryBuilder, RetryPolicy, X_RETRY_ATTEMPT,
};
pub use service::HttpRetry;
