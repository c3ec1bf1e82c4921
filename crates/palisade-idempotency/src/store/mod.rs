//! Where keys, locks and responses live: one trait, [`IdempotencyStore`],
//! with atomic `begin` / `complete` / `release`, and its implementations.
//!
//! | store | feature | shared by instances | begin | complete |
//! |---|---|---|---|---|
//! | [`MemoryStore`] | (always) | no | a map lookup under a lock | a map update |
//! | [`RedisStore`](crate::store::redis::RedisStore) | `redis` | yes | one round trip (a Lua script) | one round trip |
//! | [`PostgresStore`](crate::store::postgres::PostgresStore) | `postgres` | yes | one statement (`INSERT .. ON CONFLICT`) | one `UPDATE` |
//!
//! Every record carries the fingerprint of the request that created it. An
//! in-flight record also carries the owner's [`Lease`] token: `complete` and
//! `release` only act while that token is still the record's, so an owner
//! whose lock expired and was taken over cannot overwrite or free the new
//! owner's key.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

use crate::error::StoreError;
use crate::hash::{Fingerprint, StoreKey};

#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) mod codec;
mod memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

pub use memory::{DEFAULT_MAX_KEYS, MemoryStore, MemoryStoreBuilder};

/// A response kept for replay: status, the headers worth replaying, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The status.
    pub status: StatusCode,
    /// The headers, without hop-by-hop headers (and without `Set-Cookie`
    /// unless the layer was told to keep it).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

pub use palisade_core::lease::Lease;

/// What [`IdempotencyStore::begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The key was free (or its lock or record had expired): this request
    /// now holds its lock and must `complete` or `release` it.
    Acquired(Lease),
    /// Another request holds the key's lock.
    InFlight {
        /// The fingerprint of the request holding the lock.
        fingerprint: Fingerprint,
    },
    /// A response is stored for the key.
    Completed {
        /// The fingerprint of the request that produced it.
        fingerprint: Fingerprint,
        /// The stored response.
        response: StoredResponse,
    },
}

/// What [`IdempotencyStore::complete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The response is stored.
    Stored,
    /// The lease is no longer the key's (its lock expired and another
    /// request took the key over, or the record was removed): nothing was
    /// written.
    LeaseLost,
}

/// A store of idempotency keys. All three operations are atomic: two
/// concurrent `begin`s for one key never both acquire it.
///
/// The futures are `Send + 'static` (implementations clone what they need),
/// so the layer can run them on a task of its own or spawn a release. An
/// in-memory implementation returns ready futures and does its work when the
/// method is called.
pub trait IdempotencyStore: Send + Sync + 'static {
    /// The future of [`begin`](Self::begin).
    type BeginFuture: Future<Output = Result<Begin, StoreError>> + Send + 'static;
    /// The future of [`complete`](Self::complete).
    type CompleteFuture: Future<Output = Result<Completion, StoreError>> + Send + 'static;
    /// The future of [`release`](Self::release).
    type ReleaseFuture: Future<Output = Result<(), StoreError>> + Send + 'static;

    /// Takes `key`'s in-flight lock for `lock_expiry` if the key is free or
    /// expired, recording `fingerprint`; otherwise reports what holds it.
    fn begin(&self, key: &StoreKey, fingerprint: &Fingerprint, lock_expiry: Duration) -> Self::BeginFuture;

    /// Replaces `key`'s lock by `response`, kept for `retention`, if `lease`
    /// still holds the lock. A lease whose lock expired but that nobody took
    /// over may still complete.
    fn complete(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        lease: &Lease,
        response: &StoredResponse,
        retention: Duration,
    ) -> Self::CompleteFuture;

    /// Frees `key` if `lease` still holds its lock; otherwise does nothing
    /// (a stored response or another owner's lock stays).
    fn release(&self, key: &StoreKey, lease: &Lease) -> Self::ReleaseFuture;
}
