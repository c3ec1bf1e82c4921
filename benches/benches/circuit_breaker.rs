// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

//! Per-call overhead of the circuit breaker, closed, against a bare service
//! and tower's references in the same run, and beside the other breakers
//! users pick: tower-resilience's and failsafe's.
//!
//! Run with `cargo bench -p palisade-benches --bench circuit_breaker` (add
//! `-- --quick` for a fast pass).

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_benches::{Harness, bare, peers};
use palisade_circuit_breaker::CircuitBreakerBuilder;
use tower::Layer;

fn circuit_breaker(c: &mut Criterion) {
    // The time-based window reads tokio's clock, which needs a runtime context.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();

    let count_window = CircuitBreakerBuilder::rate_based("bench")
        .count_window(100)
        .minimum_calls(20)
        .consecutive_failures(5)
        .build()
        .expect("valid config");
    let time_window = CircuitBreakerBuilder::rate_based("bench_time")
        .time_window(Duration::from_secs(10), 10)
        .minimum_calls(20)
        .build()
        .expect("valid config");
    let consecutive = CircuitBreakerBuilder::consecutive("bench_consecutive")
        .build()
        .expect("valid config");
    let keyed = CircuitBreakerBuilder::rate_based("bench_keyed")
        .count_window(100)
        .minimum_calls(20)
        .build_keyed(|req: &u64| *req % 4)
        .expect("valid config");

    let mut harness = Harness::new(c, "circuit_breaker");
    harness.overhead("breaker_count_window", count_window.layer(bare()), || 1);
    harness.overhead("breaker_consecutive", consecutive.layer(bare()), || 1);
    harness.overhead("breaker_time_window", time_window.layer(bare()), || 1);
    harness.overhead("breaker_keyed", keyed.layer(bare()), || 1);
    let tower_resilience = peers::tower_resilience_breaker();
    harness.overhead("tower_resilience_breaker", tower_resilience.layer(bare()), || 1);
    harness.overhead("failsafe_breaker", peers::failsafe(bare()), || 1);
    harness.two_thread_references();
    harness.two_threads("breaker_count_window", count_window.layer(bare()), || 1);
    harness.two_threads("breaker_consecutive", consecutive.layer(bare()), || 1);
    harness.two_threads("breaker_keyed", keyed.layer(bare()), || 1);
    // tower-resilience's breaker takes a tokio mutex in its response future,
    // which two threads contend for: its future is not always ready at once,
    // so it has no two-thread entry here (the `loop` bench measures it on a
    // runtime).
    harness.two_threads("failsafe_breaker", peers::failsafe(bare()), || 1);
    harness.finish();
}

criterion_group!(benches, circuit_breaker);
criterion_main!(benches);
