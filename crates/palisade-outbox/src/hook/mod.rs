//! The publish hook: [`PublishHookLayer`] gives each request an [`OutboxContext`] and, once
//! the response of a state-changing request exists, fires the relay's [`Wakeup`]. Needs no
//! database.

pub mod context;
pub mod future;
mod layer;
mod service;
mod wakeup;

pub use context::OutboxContext;

pub use layer::PublishHookLayer;
pub use service::PublishHook;
pub use wakeup::Wakeup;
