//! The store behaviour suite against the in-memory store, on paused time.

mod suite;

use std::time::Duration;

use http::StatusCode;
use palisade_idempotency::MemoryStore;
use suite::{Fixture, Orders, as_principal, post, send, stack};

fn fixture() -> Fixture<MemoryStore> {
    Fixture {
        store: MemoryStore::new(),
        lock_expiry: Duration::from_secs(60),
    }
}

macro_rules! memory_suite {
    ($($test:ident),* $(,)?) => {
        $(
            #[tokio::test(start_paused = true)]
            async fn $test() {
                suite::$test(fixture()).await;
            }
        )*
    };
}

suite::all_tests!(memory_suite);

/// One client floods a full store with cheap answers: an earlier
/// customer's stored response stays, and new keys are refused with 503
/// until the oldest record expires.
#[tokio::test(start_paused = true)]
async fn a_flood_of_keys_never_evicts_a_stored_response() {
    let fixture = Fixture {
        store: MemoryStore::builder().max_keys(100).build().unwrap(),
        lock_expiry: Duration::from_secs(60),
    };
    let orders = Orders::new();
    let svc = stack(&fixture, &orders, |b| b);
    let charged = send(&svc, as_principal(post(Some("charge-1"), "{}"), "alice")).await;
    assert_eq!(charged.status, StatusCode::CREATED);
    tokio::time::advance(Duration::from_secs(1)).await;

    for i in 0..99 {
        orders.respond_with(if i % 2 == 0 { 404 } else { 201 });
        let got = send(&svc, as_principal(post(Some(&format!("flood-{i}")), "{}"), "mallory")).await;
        assert!(!got.replayed());
        assert_ne!(got.status, StatusCode::SERVICE_UNAVAILABLE, "flood key {i} fits");
    }
    assert_eq!(fixture.store.len(), 100);
    let refused = send(&svc, as_principal(post(Some("flood-99"), "{}"), "mallory")).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.problem_type(),
        palisade_idempotency::problem::types::STORE_UNAVAILABLE
    );
    assert_eq!(
        refused.headers["retry-after"], "3599",
        "until alice's record, the oldest, expires"
    );
    assert_eq!(orders.calls(), 100);

    let retry = send(&svc, as_principal(post(Some("charge-1"), "{}"), "alice")).await;
    assert!(retry.replayed(), "alice's response was kept");
    assert_eq!(retry.body, charged.body);
    assert_eq!(orders.calls(), 100, "alice was not charged again");

    // Alice's record expires: a new key fits again.
    tokio::time::advance(Duration::from_secs(3599)).await;
    orders.respond_with(201);
    let admitted = send(&svc, as_principal(post(Some("flood-99"), "{}"), "mallory")).await;
    assert_eq!(admitted.status, StatusCode::CREATED);
    assert_eq!(orders.calls(), 101);
}

/// Durations far past tokio's clock range (a settings file takes any): the
/// response is stored and replayed, nothing panics.
#[tokio::test(start_paused = true)]
async fn a_retention_past_the_clocks_range_stores_and_replays() {
    let forever = Duration::from_secs(10_000_000_000_000_000_000);
    let fixture = Fixture {
        store: MemoryStore::new(),
        lock_expiry: forever,
    };
    let orders = Orders::new();
    let svc = stack(&fixture, &orders, |b| b.retention(forever));
    let charged = send(&svc, post(Some("charge-1"), "{}")).await;
    assert_eq!(charged.status, StatusCode::CREATED);
    tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
    let retry = send(&svc, post(Some("charge-1"), "{}")).await;
    assert!(retry.replayed(), "{retry:?}");
    assert_eq!(orders.calls(), 1);
}
