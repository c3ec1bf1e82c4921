//! A circuit breaker for any tower Service.

mod breaker;
mod config;
pub mod error;
pub mod future;
mod handle;
mod keyed;
mod layer;
mod service;
mod sync;
mod telemetry;
mod window;

pub use config::{CircuitBreakerBuilder, JitterSource, MAX_HALF_OPEN_CALLS, OpenDuration, Window};
pub use error::{CircuitOpen, ConfigError};
pub use handle::{CircuitBreakerHandle, Snapshot, State};
pub use keyed::{KeyedCircuitBreaker, KeyedCircuitBreakerHandle, KeyedCircuitBreakerLayer};
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
