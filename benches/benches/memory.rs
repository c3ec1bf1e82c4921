//! Memory per entry of the layers that keep state per key: a keyed circuit
//! breaker's breaker, a keyed bulkhead's compartment, and a memory store's
//! idempotency record. Each is the heap held after N distinct keys went
//! through the layer (counted by the harness's allocator), divided by N; the
//! tables' growth is included, so the figure is what N entries really cost.
//!
//! Run with `cargo bench -p palisade-benches --bench memory`.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use palisade_benches::{bare, drive, heap_bytes_held, http_created, record};
use palisade_bulkhead::BulkheadLayer;
use palisade_circuit_breaker::CircuitBreakerBuilder;
use palisade_idempotency::disconnect::KeepLocked;
use palisade_idempotency::{IdempotencyLayer, MemoryStore};
use tower::Layer;

const COUNTS: [u64; 2] = [1_000, 100_000];

fn report(what: &str, entries: u64, held: i64) {
    let per_entry = held as f64 / entries as f64;
    println!("  {what:<46} {entries:>8} entries {held:>12} B held {per_entry:>8.0} B/entry");
    record(&serde_json::json!({
        "kind": "memory",
        "entry": what,
        "entries": entries,
        "bytes_held": held,
        "bytes_per_entry": per_entry,
    }));
}

/// The heap `svc` holds after requests for `n` distinct keys, made by
/// `request`; a first key (`u64::MAX`) makes what the layer shares between
/// keys before counting starts.
fn held_by_keys<S, Req>(mut svc: S, n: u64, request: impl Fn(u64) -> Req) -> i64
where
    S: tower::Service<Req>,
    S::Error: std::fmt::Debug,
{
    drive(&mut svc, request(u64::MAX)).expect("call");
    let ((), held) = heap_bytes_held(|| {
        for key in 0..n {
            drive(&mut svc, request(key)).expect("call");
        }
    });
    held
}

fn order(key: u64) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::from_static(
        b"{\"sku\":\"A-1\",\"quantity\":2,\"customer\":\"cus_42\"}",
    )));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static("/orders");
    req.headers_mut()
        .insert("idempotency-key", http::HeaderValue::from(key));
    req
}

fn main() {
    // The breaker's and the store's clocks are tokio's.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    println!("heap held per entry, after N distinct keys:");

    for n in COUNTS {
        let layer = CircuitBreakerBuilder::rate_based("memory_keyed")
            .count_window(100)
            .minimum_calls(20)
            .max_keys(n as usize + 1)
            .build_keyed(|req: &u64| *req)
            .expect("valid");
        report(
            "keyed breaker, count window of 100 calls",
            n,
            held_by_keys(layer.layer(bare()), n, |key| key),
        );
    }

    for n in COUNTS {
        let layer = CircuitBreakerBuilder::consecutive("memory_keyed_consecutive")
            .max_keys(n as usize + 1)
            .build_keyed(|req: &u64| *req)
            .expect("valid");
        report(
            "keyed breaker, consecutive failures only",
            n,
            held_by_keys(layer.layer(bare()), n, |key| key),
        );
    }

    for n in COUNTS {
        let layer = BulkheadLayer::builder("memory_keyed")
            .max_concurrent(16)
            .max_keys(n as usize + 1)
            .build_keyed(|req: &u64| *req)
            .expect("valid");
        report(
            "keyed bulkhead compartment, fixed limit",
            n,
            held_by_keys(layer.layer(bare()), n, |key| key),
        );
    }

    for n in COUNTS {
        let store = MemoryStore::builder().max_keys(n as usize + 1).build().expect("store");
        let layer = IdempotencyLayer::builder("memory")
            .store(store)
            .on_disconnect(KeepLocked)
            .retention(Duration::from_secs(86_400))
            .build()
            .expect("layer");
        report(
            "idempotency record, memory store (44 B body)",
            n,
            held_by_keys(layer.layer(http_created()), n, order),
        );
    }
}
