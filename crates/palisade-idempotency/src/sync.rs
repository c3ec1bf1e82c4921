//! The synchronisation primitives of the memory store: std's, or loom's
//! under `--cfg loom` so the model checker can explore their interleavings.

#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
