//! A bulkhead for tower services.
//!
//! (manual written below)

mod body;
mod error;
pub mod future;
mod gate;
mod handle;
mod layer;
pub mod limit;
mod service;
mod sync;

pub use body::PermitBody;
pub use error::{BoxError, BulkheadFull, BulkheadTimeout, ConfigError};
pub use future::{OnBodyEnd, OnResponse, PermitRelease};
pub use gate::Permit;
pub use handle::{BulkheadHandle, KeyedBulkheadHandle, Snapshot};
pub use layer::{Builder, BulkheadLayer, KeyedBulkheadLayer};
pub use limit::{Aimd, Gradient2, Limit, Sample};
pub use service::{Bulkhead, KeyedBulkhead};
