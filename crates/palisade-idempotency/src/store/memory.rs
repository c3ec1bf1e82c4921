//! The in-memory store: one map behind a mutex, bounded and expiring.

use std::collections::HashMap;
use std::future::{Ready, ready};
use std::sync::PoisonError;
use std::time::Duration;

use tokio::time::Instant;

use super::{Begin, Completion, IdempotencyStore, Lease, StoredResponse};
use crate::error::{ConfigError, StoreError};
use crate::hash::{Fingerprint, StoreKey};
use crate::sync::{Arc, Mutex, MutexGuard};

/// The default bound on the keys a [`MemoryStore`] holds.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

/// Keys, locks and responses in this process's memory: the default store,
/// right for a single server instance (several instances need a shared
/// store, or a retry that lands on another instance runs again).
///
/// - Expiring: locks and responses expire on [`tokio::time`], so tests can
///   pause and advance time; expired entries are dropped when met, and swept
///   when the store is full.
/// - Bounded: at most `max_keys` keys (default [`DEFAULT_MAX_KEYS`]). When
///   full after the sweep, the stored response closest to expiry is evicted;
///   when every key is in flight, `begin` fails with
///   [`StoreErrorKind::Full`](crate::error::StoreErrorKind::Full), which the
///   layer answers with 503 (or passes through when fail-open).
/// - Every operation completes when called: its future is ready at once.
///
/// Clones share the same map.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    max_keys: usize,
    state: Mutex<State>,
}

struct State {
    entries: HashMap<StoreKey, Entry>,
    next_token: u128,
}

struct Entry {
    fingerprint: Fingerprint,
    expires_at: Instant,
    kind: EntryKind,
}

enum EntryKind {
    InFlight(Lease),
    Completed(StoredResponse),
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_keys", &self.shared.max_keys)
            .field("keys", &self.len())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Configures a [`MemoryStore`].
#[derive(Debug, Clone)]
pub struct MemoryStoreBuilder {
    max_keys: usize,
}

impl MemoryStoreBuilder {
    /// The most keys held at once (default [`DEFAULT_MAX_KEYS`]).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// The store, or [`ConfigError::ZeroCapacity`] for `max_keys(0)`.
    pub fn build(self) -> Result<MemoryStore, ConfigError> {
        if self.max_keys == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        Ok(MemoryStore::with_max_keys(self.max_keys))
    }
}

impl MemoryStore {
    /// A store holding at most [`DEFAULT_MAX_KEYS`] keys.
    pub fn new() -> Self {
        Self::with_max_keys(DEFAULT_MAX_KEYS)
    }

    /// A builder, to choose the bound.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_keys: DEFAULT_MAX_KEYS,
        }
    }

    fn with_max_keys(max_keys: usize) -> Self {
        let state = State {
            entries: HashMap::new(),
            next_token: 0,
        };
        Self {
            shared: Arc::new(Shared {
                max_keys,
                state: Mutex::new(state),
            }),
        }
    }

    /// How many keys are held, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave an entry half-written
        // (every update is a single insert or remove), so the map stays usable.
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin_now(&self, key: &StoreKey, fingerprint: &Fingerprint, lock_expiry: Duration) -> Result<Begin, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        match state.entries.get(key) {
            Some(entry) if entry.expires_at > now => {
                return Ok(match &entry.kind {
                    EntryKind::InFlight(_) => Begin::InFlight {
                        fingerprint: entry.fingerprint,
                    },
                    EntryKind::Completed(response) => Begin::Completed {
                        fingerprint: entry.fingerprint,
                        response: response.clone(),
                    },
                });
            }
            Some(_) => {}
            None => state.make_room(self.shared.max_keys, now)?,
        }
        state.next_token += 1;
        let lease = Lease::new(state.next_token);
        let entry = Entry {
            fingerprint: *fingerprint,
            expires_at: now + lock_expiry,
            kind: EntryKind::InFlight(lease),
        };
        state.entries.insert(*key, entry);
        Ok(Begin::Acquired(lease))
    }

    fn complete_now(
        &self,
        key: &StoreKey,
        lease: &Lease,
        response: &StoredResponse,
        retention: Duration,
    ) -> Completion {
        let mut state = self.lock();
        match state.entries.get_mut(key) {
            Some(entry) if matches!(entry.kind, EntryKind::InFlight(held) if held == *lease) => {
                entry.kind = EntryKind::Completed(response.clone());
                entry.expires_at = Instant::now() + retention;
                Completion::Stored
            }
            _ => Completion::LeaseLost,
        }
    }

    fn release_now(&self, key: &StoreKey, lease: &Lease) {
        let mut state = self.lock();
        if let Some(entry) = state.entries.get(key)
            && matches!(entry.kind, EntryKind::InFlight(held) if held == *lease)
        {
            state.entries.remove(key);
        }
    }
}

impl State {
    /// Ensures one more key fits: drops expired entries, then evicts the
    /// stored response closest to expiry; fails when every key is in flight.
    fn make_room(&mut self, max_keys: usize, now: Instant) -> Result<(), StoreError> {
        if self.entries.len() < max_keys {
            return Ok(());
        }
        self.entries.retain(|_, entry| entry.expires_at > now);
        if self.entries.len() < max_keys {
            return Ok(());
        }
        let evict = self
            .entries
            .iter()
            .filter(|(_, entry)| matches!(entry.kind, EntryKind::Completed(_)))
            .min_by_key(|(_, entry)| entry.expires_at)
            .map(|(key, _)| *key);
        match evict {
            Some(key) => {
                self.entries.remove(&key);
                Ok(())
            }
            None => Err(StoreError::full()),
        }
    }
}

impl IdempotencyStore for MemoryStore {
    type BeginFuture = Ready<Result<Begin, StoreError>>;
    type CompleteFuture = Ready<Result<Completion, StoreError>>;
    type ReleaseFuture = Ready<Result<(), StoreError>>;

    fn begin(&self, key: &StoreKey, fingerprint: &Fingerprint, lock_expiry: Duration) -> Self::BeginFuture {
        ready(self.begin_now(key, fingerprint, lock_expiry))
    }

    fn complete(
        &self,
        key: &StoreKey,
        _fingerprint: &Fingerprint,
        lease: &Lease,
        response: &StoredResponse,
        retention: Duration,
    ) -> Self::CompleteFuture {
        ready(Ok(self.complete_now(key, lease, response, retention)))
    }

    fn release(&self, key: &StoreKey, lease: &Lease) -> Self::ReleaseFuture {
        self.release_now(key, lease);
        ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreErrorKind;
    use http::{HeaderMap, StatusCode};

    const LOCK: Duration = Duration::from_secs(60);
    const KEEP: Duration = Duration::from_secs(3600);

    fn key(n: u8) -> StoreKey {
        StoreKey::from_bytes([n; 32])
    }

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::from_bytes([n; 32])
    }

    fn response() -> StoredResponse {
        StoredResponse {
            status: StatusCode::CREATED,
            headers: HeaderMap::new(),
            body: "ok".into(),
        }
    }

    fn acquire(store: &MemoryStore, n: u8) -> Lease {
        match store.begin_now(&key(n), &fp(n), LOCK).unwrap() {
            Begin::Acquired(lease) => lease,
            other => panic!("expected to acquire, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn begin_complete_replay_and_expiry() {
        let store = MemoryStore::new();
        let lease = acquire(&store, 1);
        assert_eq!(
            store.begin_now(&key(1), &fp(9), LOCK).unwrap(),
            Begin::InFlight { fingerprint: fp(1) }
        );
        assert_eq!(
            store.complete_now(&key(1), &lease, &response(), KEEP),
            Completion::Stored
        );
        assert_eq!(
            store.begin_now(&key(1), &fp(1), LOCK).unwrap(),
            Begin::Completed {
                fingerprint: fp(1),
                response: response()
            }
        );
        tokio::time::advance(KEEP).await;
        assert!(matches!(
            store.begin_now(&key(1), &fp(2), LOCK).unwrap(),
            Begin::Acquired(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_taken_over_lease_can_neither_complete_nor_release() {
        let store = MemoryStore::new();
        let stale = acquire(&store, 1);
        tokio::time::advance(LOCK).await;
        let fresh = acquire(&store, 1);
        assert_ne!(stale, fresh);
        assert_eq!(
            store.complete_now(&key(1), &stale, &response(), KEEP),
            Completion::LeaseLost
        );
        store.release_now(&key(1), &stale);
        assert_eq!(
            store.begin_now(&key(1), &fp(1), LOCK).unwrap(),
            Begin::InFlight { fingerprint: fp(1) }
        );
        store.release_now(&key(1), &fresh);
        assert!(store.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_lease_nobody_took_over_still_completes() {
        let store = MemoryStore::new();
        let lease = acquire(&store, 1);
        tokio::time::advance(LOCK * 2).await;
        assert_eq!(
            store.complete_now(&key(1), &lease, &response(), KEEP),
            Completion::Stored
        );
    }

    #[tokio::test(start_paused = true)]
    async fn release_never_removes_a_stored_response() {
        let store = MemoryStore::new();
        let lease = acquire(&store, 1);
        store.complete_now(&key(1), &lease, &response(), KEEP);
        store.release_now(&key(1), &lease);
        assert!(matches!(
            store.begin_now(&key(1), &fp(1), LOCK).unwrap(),
            Begin::Completed { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn full_store_sweeps_then_evicts_responses_then_refuses() {
        let store = MemoryStore::builder().max_keys(2).build().unwrap();
        let first = acquire(&store, 1);
        store.complete_now(&key(1), &first, &response(), KEEP);
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = acquire(&store, 2);
        store.complete_now(&key(2), &second, &response(), KEEP);
        // Full of responses: the one closest to expiry (key 1) goes.
        acquire(&store, 3);
        assert_eq!(store.len(), 2);
        assert!(matches!(
            store.begin_now(&key(2), &fp(2), LOCK).unwrap(),
            Begin::Completed { .. }
        ));
        // Key 2's response goes for key 1; then both keys are in flight.
        acquire(&store, 1);
        let err = store.begin_now(&key(4), &fp(4), LOCK).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Full);
        // Expired locks are swept to make room.
        tokio::time::advance(LOCK).await;
        acquire(&store, 4);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn zero_keys_is_a_config_error() {
        assert_eq!(
            MemoryStore::builder().max_keys(0).build().unwrap_err(),
            ConfigError::ZeroCapacity
        );
    }
}
