//! [`Unpoison`]: how every palisade layer takes a lock whose previous holder
//! panicked.
//!
//! palisade's locks guard counters, queues and maps that stay consistent
//! whatever a panicking holder did (each update is complete before the guard
//! is dropped, or harmless when cut short), so a poisoned lock is taken over
//! instead of spreading the panic to every later call. The trait works on
//! the `LockResult` of `std::sync`'s `Mutex` and `RwLock` and of loom's,
//! which return the same type.
//!
//! ```
//! use std::sync::Mutex;
//! use palisade_core::sync::Unpoison;
//!
//! let count = Mutex::new(0);
//! let _ = std::panic::catch_unwind(|| {
//!     let _guard = count.lock().unpoison();
//!     panic!("a holder panics");
//! });
//! *count.lock().unpoison() += 1;
//! assert_eq!(*count.lock().unpoison(), 1);
//! ```

use std::sync::{LockResult, PoisonError};

/// Takes the guard out of a lock result, poisoned or not.
pub trait Unpoison<G> {
    /// The guard, also when a previous holder panicked.
    fn unpoison(self) -> G;
}

impl<G> Unpoison<G> for LockResult<G> {
    #[inline]
    fn unpoison(self) -> G {
        self.unwrap_or_else(PoisonError::into_inner)
    }
}
