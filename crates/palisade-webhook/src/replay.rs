//! Replay protection: remember the ids of accepted messages for a while.
//!
//! The layer *claims* an id before calling the handler. When the handler
//! answers 2xx the claim stays until it expires, so a redelivery of that id is
//! answered 200 with no body and never reaches the handler again. When the
//! handler fails (non-2xx, an error, or the call is dropped), the claim is
//! released so the sender's retry is processed. Two deliveries of one id
//! arriving together: the second is answered 200 while the first runs. A call
//! dropped while its claim is still on its way to the store releases it too:
//! the layer cannot tell whether the store recorded it, and a retry that runs
//! is better than one that is lost.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{ConfigError, StoreError};

/// The future a replay store's claim returns.
pub type ClaimFuture = Pin<Box<dyn Future<Output = Result<bool, StoreError>> + Send + 'static>>;

/// Where message ids are remembered.
///
/// Keys are already scoped by the layer (`<scheme>:<id>`); a store adds its own
/// prefix if it shares a keyspace.
pub trait ReplayStore: Send + Sync + 'static {
    /// Records `key` for `ttl` if it is not recorded yet. `Ok(true)` when this
    /// call recorded it (a first delivery), `Ok(false)` when it was already there.
    fn claim(&self, key: &str, ttl: Duration) -> ClaimFuture;

    /// Forgets `key`, so a redelivery is processed. Called when the handler
    /// did not accept the message; runs in the background and cannot fail
    /// loudly (a release that is lost only means a retry is answered 200).
    fn release(&self, key: &str);
}

/// The default number of ids a [`MemoryReplayStore`] holds.
pub const DEFAULT_MEMORY_CAPACITY: usize = 100_000;

/// An in-process replay store: ids expire after their ttl, and at most
/// `capacity` are kept (the oldest go first when it is full).
///
/// Only protects one process; several instances behind a load balancer need a
/// shared store such as the Redis one.
#[derive(Clone)]
pub struct MemoryReplayStore {
    inner: Arc<Mutex<MemoryInner>>,
    capacity: usize,
}

struct MemoryInner {
    expiry: HashMap<Box<str>, Instant>,
    order: VecDeque<(Box<str>, Instant)>,
}

impl fmt::Debug for MemoryReplayStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplayStore")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for MemoryReplayStore {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(MemoryInner::new())),
            capacity: DEFAULT_MEMORY_CAPACITY,
        }
    }
}

impl MemoryReplayStore {
    /// A store holding up to [`DEFAULT_MEMORY_CAPACITY`] ids.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding up to `capacity` ids.
    ///
    /// # Errors
    ///
    /// [`ConfigError::ZeroCapacity`] for 0.
    pub fn with_capacity(capacity: usize) -> Result<Self, ConfigError> {
        if capacity == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        Ok(Self {
            capacity,
            ..Self::default()
        })
    }

    /// How many ids are held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.lock().expiry.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // The map stays consistent even if a holder panicked: every update is one insert or remove.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The synchronous claim behind [`ReplayStore::claim`].
    pub fn claim_now(&self, key: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now);
        if let Some(&expires) = inner.expiry.get(key)
            && expires > now
        {
            return false;
        }
        while inner.expiry.len() >= self.capacity {
            if !inner.evict_oldest() {
                break;
            }
        }
        let expires = now + ttl;
        let key: Box<str> = key.into();
        inner.expiry.insert(key.clone(), expires);
        inner.order.push_back((key, expires));
        true
    }
}

impl MemoryInner {
    fn new() -> Self {
        Self {
            expiry: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Drops expired ids from the front of the insertion order. Entries whose
    /// id was released or re-claimed are skipped by comparing expiries.
    fn sweep(&mut self, now: Instant) {
        while let Some((_, expires)) = self.order.front() {
            if *expires > now {
                break;
            }
            self.evict_oldest();
        }
        // Released ids leave stale order entries behind; keep the queue bounded.
        if self.order.len() > 2 * self.expiry.len() + 64 {
            let expiry = &self.expiry;
            self.order.retain(|(key, expires)| expiry.get(key) == Some(expires));
        }
    }

    /// Removes the oldest live id; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((key, expires)) = self.order.pop_front() {
            if self.expiry.get(&key) == Some(&expires) {
                self.expiry.remove(&key);
                return true;
            }
        }
        false
    }
}

impl ReplayStore for MemoryReplayStore {
    fn claim(&self, key: &str, ttl: Duration) -> ClaimFuture {
        Box::pin(std::future::ready(Ok(self.claim_now(key, ttl))))
    }

    fn release(&self, key: &str) {
        self.lock().expiry.remove(key);
    }
}

#[cfg(feature = "redis")]
pub use self::redis_store::RedisReplayStore;

#[cfg(feature = "redis")]
mod redis_store {
    use super::*;

    /// A replay store in Redis: `SET key 1 NX PX ttl` claims, `DEL` releases.
    /// Shared by every instance that uses the same prefix.
    #[derive(Clone)]
    pub struct RedisReplayStore {
        conn: redis::aio::MultiplexedConnection,
        prefix: Arc<str>,
    }

    impl fmt::Debug for RedisReplayStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RedisReplayStore")
                .field("prefix", &self.prefix)
                .finish_non_exhaustive()
        }
    }

    impl RedisReplayStore {
        /// A store over `conn` whose keys start with `prefix` (e.g. `myapp:webhook:`).
        pub fn new(conn: redis::aio::MultiplexedConnection, prefix: impl Into<String>) -> Self {
            Self {
                conn,
                prefix: prefix.into().into(),
            }
        }

        fn key(&self, key: &str) -> String {
            format!("{}{key}", self.prefix)
        }
    }

    impl ReplayStore for RedisReplayStore {
        fn claim(&self, key: &str, ttl: Duration) -> ClaimFuture {
            let mut conn = self.conn.clone();
            let key = self.key(key);
            let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            Box::pin(async move {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis)
                    .query_async(&mut conn)
                    .await
                    .map_err(StoreError::new)?;
                Ok(set.is_some())
            })
        }

        fn release(&self, key: &str) {
            let mut conn = self.conn.clone();
            let key = self.key(key);
            // Release happens on the failure path, possibly in a Drop: spawn it
            // when a runtime is there; without one the id simply expires.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let deleted: Result<i64, _> = redis::cmd("DEL").arg(&key).query_async(&mut conn).await;
                    if let Err(error) = deleted {
                        tracing::warn!(
                            target: palisade_core::telemetry::webhook::TARGET,
                            %error,
                            "could not release a webhook id"
                        );
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ids_expire_after_their_ttl() {
        let store = MemoryReplayStore::new();
        let ttl = Duration::from_secs(600);
        assert!(store.claim("a", ttl).await.unwrap());
        assert!(!store.claim("a", ttl).await.unwrap());
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(!store.claim_now("a", ttl));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(store.claim_now("a", ttl));
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn released_ids_can_be_claimed_again() {
        let store = MemoryReplayStore::new();
        let ttl = Duration::from_secs(60);
        assert!(store.claim_now("a", ttl));
        store.release("a");
        assert!(store.is_empty());
        assert!(store.claim_now("a", ttl));
        assert!(!store.claim_now("a", ttl));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_forgets_the_oldest_id() {
        let store = MemoryReplayStore::with_capacity(2).unwrap();
        let ttl = Duration::from_secs(60);
        assert!(store.claim_now("a", ttl));
        assert!(store.claim_now("b", ttl));
        assert!(store.claim_now("c", ttl));
        assert_eq!(store.len(), 2);
        assert!(!store.claim_now("b", ttl));
        assert!(!store.claim_now("c", ttl));
        assert!(store.claim_now("a", ttl));
        assert!(MemoryReplayStore::with_capacity(0).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn released_entries_do_not_grow_the_queue_without_bound() {
        let store = MemoryReplayStore::with_capacity(10).unwrap();
        for _ in 0..10_000 {
            assert!(store.claim_now("same", Duration::from_secs(60)));
            store.release("same");
        }
        assert!(store.lock().order.len() < 200);
    }
}
