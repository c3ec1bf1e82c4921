//! The synchronisation primitives of the permit and queue accounting,
//! switched to loom's model-checked ones under `--cfg loom`. Gates are held
//! by the standard `Arc` either way, as palisade-core's lanes hold them.

#[cfg(loom)]
pub(crate) use loom::sync::{
    Mutex,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    Mutex,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};
