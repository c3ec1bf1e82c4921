//! The bulkhead's per-call cost against a bare service and tower's
//! `ConcurrencyLimit`, in one run: fixed, keyed and adaptive compartments,
//! one thread and two, beside tower-resilience's bulkhead.
//!
//! Run with `cargo bench -p palisade-benches --bench bulkhead` (add
//! `-- --quick` for a fast pass). The limits are far above what one or two
//! threads reach, so every call is admitted at once: the figures are the
//! uncontended fast path and the cost of its shared counters under contention.

use criterion::Criterion;
use palisade_benches::{Harness, bare, peers};
use palisade_bulkhead::{Aimd, BulkheadLayer, Gradient2};
use tower::Layer;

const HIGH: usize = 1_000_000;

fn bulkhead(c: &mut Criterion) {
    let mut harness = Harness::new(c, "bulkhead");
    let fixed = BulkheadLayer::builder("bench_fixed")
        .max_concurrent(HIGH)
        .build()
        .expect("valid");
    harness.overhead("bulkhead_fixed", fixed.layer(bare()), || 1);
    let queued = BulkheadLayer::builder("bench_queued")
        .max_concurrent(HIGH)
        .max_queued(100)
        .build()
        .expect("valid");
    harness.overhead("bulkhead_fixed_with_queue", queued.layer(bare()), || 1);
    let keyed = BulkheadLayer::builder("bench_keyed")
        .max_concurrent(HIGH)
        .build_keyed(|req: &u64| req % 8)
        .expect("valid");
    harness.overhead("bulkhead_keyed", keyed.layer(bare()), || 1);
    let aimd = Aimd::builder()
        .initial_limit(100)
        .max_limit(HIGH)
        .build()
        .expect("valid");
    let adaptive_aimd = BulkheadLayer::builder("bench_aimd")
        .adaptive(aimd)
        .build()
        .expect("valid");
    harness.overhead("bulkhead_adaptive_aimd", adaptive_aimd.layer(bare()), || 1);
    let gradient = Gradient2::builder()
        .initial_limit(100)
        .max_limit(HIGH)
        .build()
        .expect("valid");
    let adaptive_gradient = BulkheadLayer::builder("bench_gradient2")
        .adaptive(gradient)
        .build()
        .expect("valid");
    harness.overhead("bulkhead_adaptive_gradient2", adaptive_gradient.layer(bare()), || 1);

    let tower_resilience = peers::tower_resilience_bulkhead();
    harness.overhead("tower_resilience_bulkhead", tower_resilience.layer(bare()), || 1);

    harness.two_thread_references();
    harness.two_threads("bulkhead_fixed", fixed.layer(bare()), || 1);
    harness.two_threads("bulkhead_keyed", keyed.layer(bare()), || 1);
    harness.two_threads("bulkhead_adaptive_aimd", adaptive_aimd.layer(bare()), || 1);
    harness.two_threads("tower_resilience_bulkhead", tower_resilience.layer(bare()), || 1);
    harness.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bulkhead(&mut criterion);
    criterion.final_summary();
}
