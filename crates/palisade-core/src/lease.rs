//! [`Lease`]: the proof that an attempt holds a key's in-flight mark in a
//! store, shared by the stores of the idempotency and webhook layers.

/// The proof that an attempt holds a key's in-flight mark (an idempotency
/// key's lock, a webhook message's claim): a token unique to that attempt, a
/// fencing token. A store only lets the holder of the mark's lease finish or
/// release it, so an attempt whose mark expired and was taken over never
/// undoes its successor's.
///
/// ```
/// use palisade_core::lease::Lease;
///
/// let lease = Lease::new(7);
/// assert_eq!(lease.token(), 7);
/// assert_ne!(lease, Lease::new(8));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    token: u128,
}

impl Lease {
    /// A lease with the given token. Stores make tokens unique per attempt
    /// (a counter in memory, a UUID v7 in shared stores).
    pub const fn new(token: u128) -> Self {
        Self { token }
    }

    /// The token.
    pub const fn token(&self) -> u128 {
        self.token
    }
}
