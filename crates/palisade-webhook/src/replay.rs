//! Replay protection: remember which messages are being handled and which
//! were accepted.
//!
//! The layer *claims* a message's key before calling the handler, marking it
//! **in flight** for the lock expiry. Then:
//!
//! - the handler answers 2xx: the message is **accepted**, and the key is
//!   kept as accepted for the replay window. A redelivery is answered 200
//!   with no body and never reaches the handler again;
//! - the handler answers anything else, fails, or the call is dropped: the
//!   claim is **released**, so the sender's next retry reaches the handler;
//! - the process dies while the handler runs: nothing releases the claim,
//!   and it expires after the lock expiry, so a retry after that reaches the
//!   handler.
//!
//! A delivery that finds its key in flight is answered 409 with
//! `Retry-After`, never 2xx: the first attempt may still fail, and the sender
//! must keep the message until one attempt was accepted.
//!
//! Every claim carries a [`Lease`], a token unique to that attempt. A release
//! only removes the key while it is still in flight under that lease, so an
//! attempt whose claim expired and was taken over by a retry never frees the
//! retry's claim, and a release never removes an accepted key.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::deadline::Deadline;
use palisade_core::sync::Unpoison;
use tokio::time::Instant;

use crate::error::{ConfigError, StoreError};

/// The future a replay store's operations return.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

pub use palisade_core::lease::Lease;

/// What [`ReplayStore::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key was free (or its mark had expired): the attempt now holds it
    /// in flight, under its lease.
    Acquired,
    /// Another attempt holds the key in flight.
    InFlight,
    /// A delivery with this key was accepted.
    Accepted,
}

/// Where the keys of messages being handled and accepted are kept.
///
/// Keys are already scoped by the layer (`<scheme>:<id>`, or
/// `<scheme>:hmac:<hex>` for schemes whose id is not signed); a store adds
/// its own prefix if it shares a keyspace. `claim` must be atomic: two
/// concurrent claims of one key never both acquire it.
pub trait ReplayStore: Send + Sync + 'static {
    /// Marks `key` in flight under `lease` for `lock_expiry` if nothing
    /// (unexpired) is recorded for it; otherwise reports what is.
    fn claim(&self, key: &str, lease: Lease, lock_expiry: Duration) -> StoreFuture<Claim>;

    /// Records `key` as accepted for `retention`, whatever it held before.
    fn accept(&self, key: &str, retention: Duration) -> StoreFuture<()>;

    /// Forgets `key` if it is still in flight under `lease`, so a redelivery
    /// is processed; otherwise does nothing. Called when the handler did not
    /// accept the message, possibly from a `Drop`, so it returns nothing and
    /// may run in the background: a release that is lost only means the
    /// in-flight mark stays until its expiry.
    fn release(&self, key: &str, lease: Lease);
}

/// The default number of keys a [`MemoryReplayStore`] holds.
pub const DEFAULT_MEMORY_CAPACITY: usize = 100_000;

/// An in-process replay store: marks expire after their ttl, and at most
/// `capacity` keys are kept (the oldest go first when it is full, in flight
/// or not).
///
/// Only protects one process; several instances behind a load balancer need a
/// shared store such as the Redis one.
#[derive(Clone)]
pub struct MemoryReplayStore {
    inner: Arc<Mutex<MemoryInner>>,
    capacity: usize,
}

/// What a key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    InFlight(Lease),
    Accepted,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    mark: Mark,
    expires: Instant,
}

struct MemoryInner {
    entries: HashMap<Box<str>, Entry>,
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
    /// A store holding up to [`DEFAULT_MEMORY_CAPACITY`] keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding up to `capacity` keys.
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

    /// How many keys are held, in flight or accepted, expired ones not yet
    /// swept included.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        // The map stays consistent even if a holder panicked: every update is one insert or remove.
        self.inner.lock().unpoison()
    }

    /// The synchronous claim behind [`ReplayStore::claim`].
    pub fn claim_now(&self, key: &str, lease: Lease, lock_expiry: Duration) -> Claim {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now);
        match inner.entries.get(key) {
            Some(entry) if entry.expires > now => match entry.mark {
                Mark::InFlight(_) => Claim::InFlight,
                Mark::Accepted => Claim::Accepted,
            },
            _ => {
                // Kept in tokio's range: a settings file may give any duration.
                let expires = Deadline::after(lock_expiry).instant();
                inner.set(key, Mark::InFlight(lease), expires, self.capacity);
                Claim::Acquired
            }
        }
    }

    /// The synchronous accept behind [`ReplayStore::accept`].
    pub fn accept_now(&self, key: &str, retention: Duration) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.sweep(now);
        let expires = Deadline::after(retention).instant();
        inner.set(key, Mark::Accepted, expires, self.capacity);
    }
}

impl MemoryInner {
    fn new() -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `mark` for `key` until `expires`, making room first when a new key would not fit.
    fn set(&mut self, key: &str, mark: Mark, expires: Instant, capacity: usize) {
        if !self.entries.contains_key(key) {
            while self.entries.len() >= capacity {
                if !self.evict_oldest() {
                    break;
                }
            }
        }
        let key: Box<str> = key.into();
        self.entries.insert(key.clone(), Entry { mark, expires });
        self.order.push_back((key, expires));
    }

    /// Drops expired keys from the front of the insertion order. Entries whose
    /// key was released or set again are skipped by comparing expiries; an
    /// expired key further back is dropped when the front reaches it, and
    /// counts as absent until then.
    fn sweep(&mut self, now: Instant) {
        while let Some((_, expires)) = self.order.front() {
            if *expires > now {
                break;
            }
            if let Some((key, expires)) = self.order.pop_front()
                && self.entries.get(&key).is_some_and(|entry| entry.expires == expires)
            {
                self.entries.remove(&key);
            }
        }
        // Released and re-set keys leave stale order entries behind; keep the queue bounded.
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(key, expires)| entries.get(key).is_some_and(|entry| entry.expires == *expires));
        }
    }

    /// Removes the oldest live key; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        while let Some((key, expires)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|entry| entry.expires == expires) {
                self.entries.remove(&key);
                return true;
            }
        }
        false
    }
}

impl ReplayStore for MemoryReplayStore {
    fn claim(&self, key: &str, lease: Lease, lock_expiry: Duration) -> StoreFuture<Claim> {
        Box::pin(std::future::ready(Ok(self.claim_now(key, lease, lock_expiry))))
    }

    fn accept(&self, key: &str, retention: Duration) -> StoreFuture<()> {
        self.accept_now(key, retention);
        Box::pin(std::future::ready(Ok(())))
    }

    fn release(&self, key: &str, lease: Lease) {
        let mut inner = self.lock();
        if inner
            .entries
            .get(key)
            .is_some_and(|entry| entry.mark == Mark::InFlight(lease))
        {
            inner.entries.remove(key);
        }
    }
}

#[cfg(feature = "redis")]
pub use self::redis_store::RedisReplayStore;

#[cfg(feature = "redis")]
mod redis_store {
    use std::sync::LazyLock;

    use redis::Script;
    use redis::aio::{ConnectionLike, ConnectionManager};

    use super::*;

    /// The first byte of an in-flight mark; the lease's 16 bytes follow.
    const IN_FLIGHT: u8 = b'L';
    /// An accepted mark.
    const ACCEPTED: &[u8] = b"A";

    /// Sets the in-flight mark unless the key holds one; returns what it held.
    static CLAIM: LazyLock<Script> = LazyLock::new(|| {
        Script::new(
            r"local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false",
        )
    });

    /// Deletes the key only while it holds this attempt's in-flight mark.
    static RELEASE: LazyLock<Script> = LazyLock::new(|| {
        Script::new(
            r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0",
        )
    });

    /// A replay store in Redis, shared by every instance that uses the same
    /// prefix. A key holds `L` and the attempt's lease while in flight, with
    /// the lock expiry as its TTL, and `A` once accepted, with the replay
    /// window as its TTL; Redis expires both. `claim` is one round trip (a
    /// Lua script: read, and set if absent), `accept` one `SET PX`, and
    /// `release` a script that deletes the key only while it holds the
    /// attempt's own in-flight mark. A key holding any other value counts as
    /// accepted.
    ///
    /// Over a Redis Cluster (feature `redis-cluster`), give it a
    /// `redis::cluster_async::ClusterConnection`: each operation touches one
    /// key, so it runs in that key's hash slot, on the node that owns it.
    /// Keep hash tags (`{...}`) out of the prefix, or every key lands in one
    /// slot.
    ///
    /// Generic over the connection: any `ConnectionLike + Clone + Send +
    /// Sync`; the default is redis's [`ConnectionManager`]:
    /// after its connection drops (Redis restarted, a network cut, a
    /// failover) the calls in flight fail (claims answer 503 with
    /// `Retry-After`) and the manager connects again in the background, so
    /// the store serves again without a restart. A bare
    /// [`MultiplexedConnection`](redis::aio::MultiplexedConnection) never
    /// reconnects: once its connection drops, every claim fails until the
    /// process makes a new one.
    ///
    /// ```no_run
    /// # async fn connect() -> Result<(), Box<dyn std::error::Error>> {
    /// use palisade_webhook::RedisReplayStore;
    /// use redis::aio::ConnectionManager;
    ///
    /// let conn = ConnectionManager::new(redis::Client::open("redis://127.0.0.1/")?).await?;
    /// let store = RedisReplayStore::new(conn, "myapp:webhook:");
    /// # let _ = store; Ok(()) }
    /// ```
    #[derive(Clone)]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub struct RedisReplayStore<C = ConnectionManager> {
        conn: C,
        prefix: Arc<str>,
    }

    impl<C> fmt::Debug for RedisReplayStore<C> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("RedisReplayStore")
                .field("prefix", &self.prefix)
                .finish_non_exhaustive()
        }
    }

    impl<C> RedisReplayStore<C> {
        /// A store over `conn` whose keys start with `prefix` (e.g. `myapp:webhook:`).
        pub fn new(conn: C, prefix: impl Into<String>) -> Self {
            Self {
                conn,
                prefix: prefix.into().into(),
            }
        }

        fn key(&self, key: &str) -> String {
            format!("{}{key}", self.prefix)
        }
    }

    fn in_flight(lease: Lease) -> [u8; 17] {
        let mut mark = [IN_FLIGHT; 17];
        mark[1..].copy_from_slice(&lease.token().to_be_bytes());
        mark
    }

    impl<C> ReplayStore for RedisReplayStore<C>
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        fn claim(&self, key: &str, lease: Lease, lock_expiry: Duration) -> StoreFuture<Claim> {
            let mut conn = self.conn.clone();
            let key = self.key(key);
            Box::pin(async move {
                let existing: Option<Vec<u8>> = CLAIM
                    .key(key)
                    .arg(&in_flight(lease)[..])
                    .arg(palisade_core::deadline::expiry_millis(lock_expiry))
                    .invoke_async(&mut conn)
                    .await
                    .map_err(StoreError::new)?;
                Ok(match existing {
                    None => Claim::Acquired,
                    Some(mark) if mark.first() == Some(&IN_FLIGHT) => Claim::InFlight,
                    Some(_) => Claim::Accepted,
                })
            })
        }

        fn accept(&self, key: &str, retention: Duration) -> StoreFuture<()> {
            let mut conn = self.conn.clone();
            let key = self.key(key);
            Box::pin(async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(ACCEPTED)
                    .arg("PX")
                    .arg(palisade_core::deadline::expiry_millis(retention))
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(StoreError::new)
            })
        }

        fn release(&self, key: &str, lease: Lease) {
            let mut conn = self.conn.clone();
            let key = self.key(key);
            // Release happens on the failure path, possibly in a Drop: spawn it
            // when a runtime is there; without one the mark simply expires.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let deleted: Result<i64, _> = RELEASE
                        .key(&key)
                        .arg(&in_flight(lease)[..])
                        .invoke_async(&mut conn)
                        .await;
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

    const A: Lease = Lease::new(1);
    const B: Lease = Lease::new(2);

    #[tokio::test(start_paused = true)]
    async fn an_in_flight_mark_expires_after_the_lock_expiry() {
        let store = MemoryReplayStore::new();
        let lock = Duration::from_secs(60);
        assert_eq!(store.claim("a", A, lock).await.unwrap(), Claim::Acquired);
        assert_eq!(store.claim("a", B, lock).await.unwrap(), Claim::InFlight);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(store.claim_now("a", B, lock), Claim::InFlight);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(store.claim_now("a", B, lock), Claim::Acquired);
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_accepted_mark_lasts_the_retention_and_is_never_released() {
        let store = MemoryReplayStore::new();
        let lock = Duration::from_secs(60);
        assert_eq!(store.claim_now("a", A, lock), Claim::Acquired);
        store.accept("a", Duration::from_secs(600)).await.unwrap();
        store.release("a", A);
        assert_eq!(store.claim_now("a", B, lock), Claim::Accepted);
        tokio::time::advance(Duration::from_secs(599)).await;
        assert_eq!(store.claim_now("a", B, lock), Claim::Accepted);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(store.claim_now("a", B, lock), Claim::Acquired);
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_past_tokios_range_keeps_the_mark_without_overflowing() {
        // A settings file may give any duration (`replay_window = "10000000000000000000s"`).
        let store = MemoryReplayStore::new();
        assert_eq!(store.claim_now("a", A, Duration::MAX), Claim::Acquired);
        assert_eq!(store.claim_now("a", B, Duration::MAX), Claim::InFlight);
        store.accept_now("a", Duration::MAX);
        tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
        assert_eq!(store.claim_now("a", B, Duration::MAX), Claim::Accepted);
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_holding_lease_releases_a_claim() {
        let store = MemoryReplayStore::new();
        let lock = Duration::from_secs(60);
        assert_eq!(store.claim_now("a", A, lock), Claim::Acquired);
        store.release("a", B);
        assert_eq!(store.claim_now("a", B, lock), Claim::InFlight);
        store.release("a", A);
        assert!(store.is_empty());
        // A's claim expired and B took the key over: A's late release leaves B's claim.
        assert_eq!(store.claim_now("a", A, lock), Claim::Acquired);
        tokio::time::advance(lock).await;
        assert_eq!(store.claim_now("a", B, lock), Claim::Acquired);
        store.release("a", A);
        assert_eq!(store.claim_now("a", A, lock), Claim::InFlight);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_forgets_the_oldest_key() {
        let store = MemoryReplayStore::with_capacity(2).unwrap();
        let ttl = Duration::from_secs(60);
        store.accept_now("a", ttl);
        store.accept_now("b", ttl);
        assert_eq!(store.claim_now("c", A, ttl), Claim::Acquired);
        assert_eq!(store.len(), 2);
        assert_eq!(store.claim_now("b", A, ttl), Claim::Accepted);
        assert_eq!(store.claim_now("c", B, ttl), Claim::InFlight);
        // Accepting a held key takes no room.
        store.accept_now("c", ttl);
        assert_eq!(store.claim_now("b", A, ttl), Claim::Accepted);
        assert_eq!(store.claim_now("a", A, ttl), Claim::Acquired);
        assert!(MemoryReplayStore::with_capacity(0).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn released_entries_do_not_grow_the_queue_without_bound() {
        let store = MemoryReplayStore::with_capacity(10).unwrap();
        for _ in 0..10_000 {
            assert_eq!(store.claim_now("same", A, Duration::from_secs(60)), Claim::Acquired);
            store.release("same", A);
        }
        assert!(store.lock().order.len() < 200);
    }
}
