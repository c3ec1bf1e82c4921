// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

//! Per-call overhead of each palisade layer against a bare service and
//! tower's references, all in one run.
//!
//! Run with `cargo bench -p palisade-benches --bench overhead` (add
//! `-- --quick` for a fast pass). Criterion prints ns/call and calls/s for
//! each entry, then the harness prints allocations per call.

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_benches::Harness;

fn overhead(c: &mut Criterion) {
    let mut harness = Harness::new(c, "overhead");
    harness.two_thread_references();
    harness.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
