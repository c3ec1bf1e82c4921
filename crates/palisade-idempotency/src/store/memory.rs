//! The in-memory store: one map behind a mutex, bounded, with an expiry
//! index so expiring costs O(log n) per operation.

use std::collections::{BTreeMap, HashMap};
use std::future::{Ready, ready};
use std::time::Duration;

use palisade_core::deadline::Deadline;
use palisade_core::sync::Unpoison;
use tokio::time::Instant;

use super::{Begin, Completion, IdempotencyStore, Lease, StoredResponse};
use crate::error::{ConfigError, StoreError};
use crate::hash::{Fingerprint, StoreKey};
use crate::sync::{Arc, Mutex, MutexGuard};

/// The default bound on the keys a [`MemoryStore`] holds.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

/// How many expired records one `begin` drops at most: more than the one
/// record it may add, so expired records never pile up, and few enough that
/// no call pays for a large batch expiring at once.
const SWEEP_PER_BEGIN: usize = 4;

/// Keys, locks and responses in this process's memory: the default store,
/// right for a single server instance (several instances need a shared
/// store, or a retry that lands on another instance runs again).
///
/// - Expiring: locks and responses expire on [`tokio::time`], so tests can
///   pause and advance time; one kept longer than about 30 years expires
///   after about 30 years. An index ordered by expiry lets every `begin`
///   drop the records that have expired (a few at a time), so expiring costs
///   O(log n) per operation, never a scan of the map.
/// - Bounded: at most `max_keys` keys (default [`DEFAULT_MAX_KEYS`]). A
///   record that has not expired is never dropped to make room: when the
///   store is full of unexpired locks and responses, `begin` for a new key
///   fails with [`StoreErrorKind::Full`](crate::error::StoreErrorKind::Full)
///   and the time until the oldest record expires
///   ([`StoreError::retry_after`]), which the layer answers with 503 and that
///   `Retry-After` (or passes through when fail-open). The cap is for the
///   whole store, not per scope: a client that can store responses faster
///   than they expire can fill it and have new keys refused (but never make
///   another customer's retry run again), so bound what one principal may
///   send with a rate limit outside the layer.
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
    /// Every entry once, by expiry then id.
    expiries: BTreeMap<(Instant, u128), StoreKey>,
    next_token: u128,
}

struct Entry {
    fingerprint: Fingerprint,
    expires_at: Instant,
    /// Unique per entry: its place in the expiry index.
    id: u128,
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
            expiries: BTreeMap::new(),
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
        // A panic while holding the lock cannot leave the map and its index
        // apart (each update touches both before anything can panic), so the
        // store stays usable.
        self.shared.state.lock().unpoison()
    }

    fn begin_now(&self, key: &StoreKey, fingerprint: &Fingerprint, lock_expiry: Duration) -> Result<Begin, StoreError> {
        let now = Instant::now();
        let mut state = self.lock();
        state.sweep(now, SWEEP_PER_BEGIN);
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
            // Expired but not swept yet: taken over below.
            Some(_) => {}
            None => state.ensure_room(self.shared.max_keys, now)?,
        }
        let lease = Lease::new(state.next_id());
        state.insert(
            *key,
            Entry {
                fingerprint: *fingerprint,
                expires_at: expiry(lock_expiry),
                id: lease.token(),
                kind: EntryKind::InFlight(lease),
            },
        );
        Ok(Begin::Acquired(lease))
    }

    fn complete_now(
        &self,
        key: &StoreKey,
        fingerprint: &Fingerprint,
        lease: &Lease,
        response: &StoredResponse,
        retention: Duration,
    ) -> Completion {
        let now = Instant::now();
        let mut state = self.lock();
        let held = state.entries.get(key).map(|entry| match entry.kind {
            EntryKind::InFlight(held) => held == *lease,
            EntryKind::Completed(_) => false,
        });
        match held {
            Some(true) => {}
            Some(false) => return Completion::LeaseLost,
            // The lock expired and was dropped, and nobody took the key over:
            // the response is stored as the shared stores do, if it fits.
            None if state.ensure_room(self.shared.max_keys, now).is_err() => return Completion::LeaseLost,
            None => {}
        }
        state.insert(
            *key,
            Entry {
                fingerprint: *fingerprint,
                expires_at: expiry(retention),
                id: lease.token(),
                kind: EntryKind::Completed(response.clone()),
            },
        );
        Completion::Stored
    }

    fn release_now(&self, key: &StoreKey, lease: &Lease) {
        let mut state = self.lock();
        if let Some(entry) = state.entries.get(key)
            && matches!(entry.kind, EntryKind::InFlight(held) if held == *lease)
        {
            state.remove(key);
        }
    }
}

/// The instant a record kept for `duration` from now expires: about 30 years
/// ahead at most, in tokio's range (see [`Deadline::after`]), as a settings
/// file may give any duration.
fn expiry(duration: Duration) -> Instant {
    Deadline::after(duration).instant()
}

impl State {
    fn next_id(&mut self) -> u128 {
        self.next_token += 1;
        self.next_token
    }

    /// Puts `entry` under `key`, replacing (and unindexing) what was there.
    fn insert(&mut self, key: StoreKey, entry: Entry) {
        // Unindexed first: the new entry may have the same expiry and id.
        if let Some(old) = self.entries.get(&key) {
            self.expiries.remove(&(old.expires_at, old.id));
        }
        self.expiries.insert((entry.expires_at, entry.id), key);
        self.entries.insert(key, entry);
    }

    fn remove(&mut self, key: &StoreKey) {
        if let Some(old) = self.entries.remove(key) {
            self.expiries.remove(&(old.expires_at, old.id));
        }
    }

    /// Drops at most `max` records that have expired, oldest first.
    fn sweep(&mut self, now: Instant, max: usize) {
        for _ in 0..max {
            match self.expiries.first_entry() {
                Some(oldest) if oldest.key().0 <= now => {
                    let key = oldest.remove();
                    self.entries.remove(&key);
                }
                _ => return,
            }
        }
    }

    /// Ensures one more key fits, dropping expired records only: fails, with
    /// the time until the oldest record expires, when none has.
    fn ensure_room(&mut self, max_keys: usize, now: Instant) -> Result<(), StoreError> {
        if self.entries.len() < max_keys {
            return Ok(());
        }
        self.sweep(now, 1);
        if self.entries.len() < max_keys {
            return Ok(());
        }
        let next_expiry = self
            .expiries
            .first_key_value()
            .map_or(Duration::ZERO, |((expires_at, _), _)| {
                expires_at.saturating_duration_since(now)
            });
        Err(StoreError::full_for(next_expiry))
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
        fingerprint: &Fingerprint,
        lease: &Lease,
        response: &StoredResponse,
        retention: Duration,
    ) -> Self::CompleteFuture {
        ready(Ok(self.complete_now(key, fingerprint, lease, response, retention)))
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
            store.complete_now(&key(1), &fp(1), &lease, &response(), KEEP),
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
            store.complete_now(&key(1), &fp(1), &stale, &response(), KEEP),
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
            store.complete_now(&key(1), &fp(1), &lease, &response(), KEEP),
            Completion::Stored
        );
    }

    #[tokio::test(start_paused = true)]
    async fn release_never_removes_a_stored_response() {
        let store = MemoryStore::new();
        let lease = acquire(&store, 1);
        store.complete_now(&key(1), &fp(1), &lease, &response(), KEEP);
        store.release_now(&key(1), &lease);
        assert!(matches!(
            store.begin_now(&key(1), &fp(1), LOCK).unwrap(),
            Begin::Completed { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_store_keeps_every_unexpired_record_and_refuses_new_keys() {
        let store = MemoryStore::builder().max_keys(2).build().unwrap();
        let first = acquire(&store, 1);
        store.complete_now(&key(1), &fp(1), &first, &response(), KEEP);
        tokio::time::advance(Duration::from_secs(1)).await;
        acquire(&store, 2);
        // Full of one response and one lock: neither goes to make room.
        let err = store.begin_now(&key(3), &fp(3), LOCK).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Full);
        assert_eq!(err.retry_after(), Some(LOCK), "until key 2's lock expires");
        assert!(matches!(
            store.begin_now(&key(1), &fp(1), LOCK).unwrap(),
            Begin::Completed { .. }
        ));
        // Key 2's lock expires: its room goes to key 3.
        tokio::time::advance(LOCK).await;
        acquire(&store, 3);
        let err = store.begin_now(&key(4), &fp(4), LOCK).unwrap_err();
        assert_eq!(
            err.retry_after(),
            Some(LOCK),
            "until key 3's lock expires, before key 1's response"
        );
        // Key 1's response expires: its room goes to key 4.
        tokio::time::advance(KEEP).await;
        acquire(&store, 4);
        assert_eq!(store.len(), 1, "the expired lock of key 3 was swept too");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_records_are_swept_by_later_begins() {
        let store = MemoryStore::new();
        for n in 0..10 {
            acquire(&store, n);
        }
        tokio::time::advance(LOCK).await;
        // Each begin drops a few expired records, oldest first.
        acquire(&store, 100);
        assert_eq!(store.len(), 10 - SWEEP_PER_BEGIN + 1);
        acquire(&store, 101);
        acquire(&store, 102);
        assert_eq!(store.len(), 3);
        assert_eq!(store.lock().expiries.len(), 3, "the index holds each record once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_expiring_when_its_lock_would_is_still_indexed() {
        let store = MemoryStore::new();
        let lease = acquire(&store, 1);
        // Completed at once, kept exactly as long as the lock: same expiry, same id.
        store.complete_now(&key(1), &fp(1), &lease, &response(), LOCK);
        assert_eq!(store.lock().expiries.len(), 1);
        tokio::time::advance(LOCK).await;
        acquire(&store, 2);
        assert_eq!(store.len(), 1, "key 1's response expired and was swept");
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_lock_swept_before_completion_still_stores_its_response() {
        let store = MemoryStore::new();
        let lease = acquire(&store, 1);
        tokio::time::advance(LOCK).await;
        acquire(&store, 2);
        assert_eq!(store.len(), 1, "key 1's expired lock was swept");
        assert_eq!(
            store.complete_now(&key(1), &fp(1), &lease, &response(), KEEP),
            Completion::Stored
        );
        assert_eq!(
            store.begin_now(&key(1), &fp(1), LOCK).unwrap(),
            Begin::Completed {
                fingerprint: fp(1),
                response: response()
            }
        );
    }

    #[test]
    fn zero_keys_is_a_config_error() {
        assert_eq!(
            MemoryStore::builder().max_keys(0).build().unwrap_err(),
            ConfigError::ZeroCapacity
        );
    }
}
