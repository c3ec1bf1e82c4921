//! Every keyed request is counted in `palisade_idempotency_requests_total`
//! by outcome, and every rejection carries its reason.

mod suite;

use std::collections::BTreeMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use palisade_idempotency::MemoryStore;
use suite::{Faulty, Fixture, Orders, post, send, stack};

type Counts = BTreeMap<Vec<(String, String)>, u64>;

fn counts(recorder: &DebuggingRecorder) -> Counts {
    recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "palisade_idempotency_requests_total")
        .filter_map(|(key, _, _, value)| {
            let DebugValue::Counter(n) = value else { return None };
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (n > 0).then_some((labels, n))
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

#[tokio::test(start_paused = true)]
async fn outcomes_and_rejection_reasons_are_counted() {
    let recorder = DebuggingRecorder::new();
    let fixture = Fixture {
        store: Faulty::new(MemoryStore::new()),
        lock_expiry: Duration::from_secs(60),
    };
    let orders = Orders::new();
    // Counters are registered when the layer is built.
    let svc = metrics::with_local_recorder(&recorder, || {
        stack(&fixture, &orders, |b| b.require_key(true).max_request_body(16))
    });

    send(&svc, post(Some("k"), "{}")).await;
    send(&svc, post(Some("k"), "{}")).await;
    send(&svc, post(Some("k"), "{\"x\":1}")).await;
    send(&svc, post(None, "{}")).await;
    send(&svc, post(Some("bad key"), "{}")).await;
    send(&svc, post(Some("big"), "{\"sku\":\"0123456789\"}")).await;
    orders.close();
    let in_flight = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("slow"), "{}")).await }
    });
    suite::calls_reach(&orders, 2).await;
    send(&svc, post(Some("slow"), "{}")).await;
    orders.open(1);
    in_flight.await.unwrap();
    fixture.store.fail(true);
    send(&svc, post(Some("down"), "{}")).await;

    let name = ("name", "orders");
    let expected: Counts = [
        (labels(&[name, ("outcome", "first")]), 2),
        (labels(&[name, ("outcome", "conflict")]), 1),
        (labels(&[name, ("outcome", "replayed")]), 1),
        (labels(&[name, ("outcome", "mismatch")]), 1),
        (labels(&[name, ("outcome", "invalid"), ("reason", "missing_key")]), 1),
        (labels(&[name, ("outcome", "invalid"), ("reason", "malformed_key")]), 1),
        (labels(&[name, ("outcome", "invalid"), ("reason", "body_too_large")]), 1),
        (
            labels(&[name, ("outcome", "store_error"), ("reason", "fail_closed")]),
            1,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts(&recorder), expected);
}

#[tokio::test(start_paused = true)]
async fn replays_and_conflicts_reach_the_event_hook() {
    use std::sync::{Arc, Mutex};

    use palisade_core::events::LayerEvent;

    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let fixture = Fixture {
        store: MemoryStore::new(),
        lock_expiry: Duration::from_secs(60),
    };
    let orders = Orders::new();
    let svc = stack(&fixture, &orders, move |b| {
        b.on_event(move |event| {
            let line = match event {
                LayerEvent::IdempotencyReplayed { name } => format!("{name}: replayed"),
                LayerEvent::IdempotencyConflict { name, reason } => format!("{name}: conflict {reason}"),
                other => format!("unexpected {other:?}"),
            };
            sink.lock().unwrap().push(line);
        })
    });
    send(&svc, post(Some("k"), "{}")).await;
    send(&svc, post(Some("k"), "{}")).await;
    send(&svc, post(Some("k"), "{\"x\":1}")).await;
    orders.close();
    let in_flight = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("slow"), "{}")).await }
    });
    suite::calls_reach(&orders, 2).await;
    send(&svc, post(Some("slow"), "{}")).await;
    orders.open(1);
    in_flight.await.unwrap();
    assert_eq!(
        *heard.lock().unwrap(),
        [
            "orders: replayed",
            "orders: conflict mismatch",
            "orders: conflict in_flight"
        ]
    );
}

/// Every store operation is timed into
/// `palisade_idempotency_store_duration_seconds{name, operation}`, a failed
/// one included.
#[tokio::test(start_paused = true)]
async fn store_operations_are_timed_by_operation() {
    let recorder = DebuggingRecorder::new();
    let fixture = Fixture {
        store: Faulty::new(MemoryStore::new()),
        lock_expiry: Duration::from_secs(60),
    };
    let orders = Orders::new();
    let svc = metrics::with_local_recorder(&recorder, || stack(&fixture, &orders, |b| b));

    send(&svc, post(Some("a"), "{}")).await; // begin, complete
    send(&svc, post(Some("a"), "{}")).await; // begin: a replay
    orders.respond_with(500);
    send(&svc, post(Some("b"), "{}")).await; // begin, release: 5xx is not stored
    fixture.store.fail(true);
    send(&svc, post(Some("c"), "{}")).await; // begin, failed

    let timed: BTreeMap<String, usize> = recorder
        .snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "palisade_idempotency_store_duration_seconds")
        .map(|(key, _, _, value)| {
            let DebugValue::Histogram(values) = value else {
                panic!("not a histogram")
            };
            assert!(key.key().labels().any(|l| l.key() == "name" && l.value() == "orders"));
            let operation = key
                .key()
                .labels()
                .find(|l| l.key() == "operation")
                .map(|l| l.value().to_owned())
                .unwrap();
            (operation, values.len())
        })
        .collect();
    let expected: BTreeMap<String, usize> = [
        ("begin".to_owned(), 4),
        ("complete".to_owned(), 1),
        ("release".to_owned(), 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(timed, expected);
}
