//! Model checks of the memory store's atomicity under every interleaving
//! loom explores. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p palisade-idempotency --test loom --release`.
#![cfg(loom)]

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use loom::thread;
use palisade_idempotency::{
    Begin, Completion, Fingerprint, IdempotencyStore, Lease, MemoryStore, StoreKey, StoredResponse,
};

const LOCK: Duration = Duration::from_secs(60);
const KEY: StoreKey = StoreKey::from_bytes([1; 32]);
const FP: Fingerprint = Fingerprint::from_bytes([2; 32]);

fn begin(store: &MemoryStore) -> Begin {
    store.begin(&KEY, &FP, LOCK).into_inner().expect("memory begin")
}

fn response() -> StoredResponse {
    StoredResponse {
        status: StatusCode::CREATED,
        headers: HeaderMap::new(),
        body: Bytes::from_static(b"ok"),
    }
}

/// A store whose key this thread holds, and another thread's `begin` racing
/// whatever this thread does next.
fn held_key_and_a_racing_begin() -> (MemoryStore, Lease, thread::JoinHandle<Begin>) {
    let store = MemoryStore::new();
    let Begin::Acquired(lease) = begin(&store) else {
        panic!("the first begin acquires")
    };
    let other = store.clone();
    (store, lease, thread::spawn(move || begin(&other)))
}

#[test]
fn two_concurrent_begins_acquire_once() {
    loom::model(|| {
        let store = MemoryStore::new();
        let other = store.clone();
        let racer = thread::spawn(move || matches!(begin(&other), Begin::Acquired(_)));
        let mine = matches!(begin(&store), Begin::Acquired(_));
        let theirs = racer.join().expect("racer");
        assert!(mine ^ theirs, "exactly one begin acquires the key");
    });
}

#[test]
fn a_begin_racing_completion_sees_the_lock_or_the_response() {
    loom::model(|| {
        let (store, lease, racer) = held_key_and_a_racing_begin();
        let completion = store
            .complete(&KEY, &FP, &lease, &response(), LOCK)
            .into_inner()
            .expect("complete");
        assert_eq!(completion, Completion::Stored);
        match racer.join().expect("racer") {
            Begin::InFlight { fingerprint } => assert_eq!(fingerprint, FP),
            Begin::Completed { response: stored, .. } => assert_eq!(stored, response()),
            Begin::Acquired(_) => panic!("a held key was acquired twice"),
        }
    });
}

#[test]
fn a_release_racing_begin_never_loses_the_new_owner() {
    loom::model(|| {
        let (store, lease, racer) = held_key_and_a_racing_begin();
        store.release(&KEY, &lease).into_inner().expect("release");
        match racer.join().expect("racer") {
            // It ran after the release: it owns the key now, and keeps it.
            Begin::Acquired(_) => assert!(matches!(begin(&store), Begin::InFlight { .. })),
            // It ran before: the release freed the key.
            Begin::InFlight { .. } => assert!(matches!(begin(&store), Begin::Acquired(_))),
            Begin::Completed { .. } => panic!("nothing was completed"),
        }
    });
}
