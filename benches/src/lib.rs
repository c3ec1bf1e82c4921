//! The harness of palisade's benchmarks.
//!
//! Every layer is measured the same way, in the same run as its references:
//!
//! - **overhead**: one call through the layer, driven to completion on the
//!   bench thread (readiness, call, one poll of the response future), against
//!   a bare, always-ready `service_fn` and against tower's `ConcurrencyLimit`
//!   and `Retry` (with a policy that never retries). The benchmark report
//!   gives a layer's time minus the bare service's.
//! - **allocations**: heap allocations per call, counted over many calls
//!   after warm-up by allocation-counter's global allocator. It counts in
//!   plain thread-local fields, so the timed calls pay a few nanoseconds per
//!   allocation, where counters shared by all threads would add atomic
//!   operations to every allocation and free, and make the threads of a
//!   two-thread run contend on them.
//! - **two threads**: two threads driving clones of one service, for the
//!   throughput of shared state under contention.
//!
//! A layer adds itself as one entry in `benches/overhead.rs`:
//! `harness.overhead("my_layer", layer.layer(bare()), || 1)`.
//!
//! Criterion keeps its own figures under its output directory. What a bench
//! measures outside criterion (allocations, paired ratios, end-to-end
//! latencies) it prints, and, when [`RESULTS`] names a file, also appends
//! there as one JSON object a line ([`record`]), for `benches/report.py`.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use tower::Service;

/// The environment variable naming the JSON-lines file that [`record`]
/// appends to; `benches/report.py` sets it for the benches it runs.
pub const RESULTS: &str = "PALISADE_BENCH_RESULTS";

/// Appends `record` (a JSON object with at least `kind`) as one line to the
/// file named by [`RESULTS`]; does nothing when the variable is unset.
///
/// # Panics
///
/// When the file cannot be written: a run whose figures are lost must fail.
pub fn record(record: &serde_json::Value) {
    use std::io::Write as _;
    let Some(path) = std::env::var_os(RESULTS) else { return };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("{RESULTS}={}: {e}", path.display()));
    writeln!(file, "{record}").unwrap_or_else(|e| panic!("{RESULTS}={}: {e}", path.display()));
}

/// The bare service every layer is compared with: always ready, answers at once.
pub type Bare = tower::util::ServiceFn<fn(u64) -> Ready<Result<u64, Infallible>>>;

/// Makes the bare service.
pub fn bare() -> Bare {
    fn echo(req: u64) -> Ready<Result<u64, Infallible>> {
        ready(Ok(req))
    }
    tower::service_fn(echo as fn(u64) -> Ready<Result<u64, Infallible>>)
}

/// An always-ready HTTP service answering 201 with a small JSON body and its
/// content type, as an order endpoint answers.
pub type HttpCreated = tower::util::ServiceFn<
    fn(
        http::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> Ready<Result<http::Response<http_body_util::Full<bytes::Bytes>>, Infallible>>,
>;

/// Makes the [`HttpCreated`] service.
pub fn http_created() -> HttpCreated {
    type Req = http::Request<http_body_util::Full<bytes::Bytes>>;
    type Res = http::Response<http_body_util::Full<bytes::Bytes>>;
    fn created(_req: Req) -> Ready<Result<Res, Infallible>> {
        let mut res = http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
            b"{\"order\":\"ord_8e03978e\",\"status\":\"created\"}",
        )));
        *res.status_mut() = http::StatusCode::CREATED;
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        ready(Ok(res))
    }
    tower::service_fn(created as fn(Req) -> Ready<Result<Res, Infallible>>)
}

/// A `tower::retry::Policy` that never retries: tower's `Retry` at its cheapest.
#[derive(Debug, Clone, Copy)]
pub struct NeverRetry;

impl<Req, Res, E> tower::retry::Policy<Req, Res, E> for NeverRetry {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Req, _result: &mut Result<Res, E>) -> Option<Self::Future> {
        None
    }

    fn clone_request(&mut self, _req: &Req) -> Option<Req> {
        None
    }
}

/// tower's `Retry` as a tower user sets it up with a budget: a policy holding
/// tower's own `TpsBudget` in an `Arc` (its defaults: 10 s, 10 retries/s, 20 %),
/// depositing every request and retrying nothing, as when every call succeeds.
///
/// Unlike [`NeverRetry`], the policy has state shared by its clones, so each
/// request's clone takes and drops a reference: the floor of any retry whose
/// response future keeps its settings.
#[derive(Debug, Clone)]
pub struct TowerBudgetRetry(std::sync::Arc<tower::retry::budget::TpsBudget>);

impl Default for TowerBudgetRetry {
    fn default() -> Self {
        Self(std::sync::Arc::new(tower::retry::budget::TpsBudget::new(
            Duration::from_secs(10),
            10,
            0.2,
        )))
    }
}

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for TowerBudgetRetry {
    type Future = Ready<()>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        use tower::retry::budget::Budget;
        match result {
            Ok(_) => None,
            Err(_) => self.0.withdraw().then(|| ready(())),
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        use tower::retry::budget::Budget;
        self.0.deposit();
        Some(req.clone())
    }
}

/// Drives one call through `svc` on this thread: readiness, the call, and the
/// response future, each polled with a no-op waker.
///
/// # Panics
///
/// When the service or its future is not ready at once: benchmarked stacks
/// must complete without waiting, so the figures measure the layer alone.
pub fn drive<S: Service<Req>, Req>(svc: &mut S, req: Req) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => return Err(e),
        Poll::Pending => panic!("benchmarked service was not ready"),
    }
    let fut = pin!(svc.call(req));
    match fut.poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("benchmarked response future was not ready"),
    }
}

/// Heap allocations per call through `svc`, after a warm-up: those made on
/// this thread, where [`drive`] runs the whole call.
pub fn allocations_per_call<S: Service<Req>, Req>(svc: &mut S, mut make_req: impl FnMut() -> Req) -> f64 {
    const WARM_UP: usize = 1_000;
    const CALLS: usize = 10_000;
    for _ in 0..WARM_UP {
        let _ = std::hint::black_box(drive(svc, make_req()));
    }
    let counted = allocation_counter::measure(|| {
        for _ in 0..CALLS {
            let _ = std::hint::black_box(drive(svc, make_req()));
        }
    });
    counted.count_total as f64 / CALLS as f64
}

/// One benchmark group: the bare service and tower's references first, then
/// the layers added by the caller; allocation counts are printed when it ends.
pub struct Harness<'c> {
    name: String,
    group: BenchmarkGroup<'c, WallTime>,
    allocations: Vec<(String, f64)>,
}

impl std::fmt::Debug for Harness<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("allocations", &self.allocations)
            .finish_non_exhaustive()
    }
}

impl<'c> Harness<'c> {
    /// A group named `name` with the bare service and tower's `ConcurrencyLimit`
    /// and `Retry` already measured in it.
    pub fn new(c: &'c mut Criterion, name: &str) -> Self {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        let mut harness = Self {
            name: name.to_owned(),
            group,
            allocations: Vec::new(),
        };
        harness.overhead("bare", bare(), || 1);
        harness.overhead(
            "tower_concurrency_limit",
            tower::limit::ConcurrencyLimit::new(bare(), 1_000_000),
            || 1,
        );
        harness.overhead("tower_retry_never", tower::retry::Retry::new(NeverRetry, bare()), || 1);
        harness
    }

    /// Measures one call at a time through `svc` on the bench thread, and its
    /// allocations per call.
    pub fn overhead<S: Service<Req>, Req>(&mut self, name: &str, mut svc: S, mut make_req: impl FnMut() -> Req) {
        self.group
            .bench_function(name, |b| b.iter(|| std::hint::black_box(drive(&mut svc, make_req()))));
        let allocations = allocations_per_call(&mut svc, make_req);
        self.allocations.push((name.to_owned(), allocations));
    }

    /// Measures the throughput of two threads driving clones of `svc` at once.
    /// The time criterion reports is per call; its element rate is calls/s.
    pub fn two_threads<S, Req>(&mut self, name: &str, svc: S, make_req: fn() -> Req)
    where
        S: Service<Req> + Clone + Send,
    {
        self.group.bench_function(format!("{name}/2_threads"), |b| {
            b.iter_custom(|iters| {
                let per_thread = iters.div_ceil(2);
                let barrier = Barrier::new(2);
                let slowest = std::thread::scope(|scope| {
                    let workers: Vec<_> = (0..2)
                        .map(|_| {
                            let mut svc = svc.clone();
                            let barrier = &barrier;
                            scope.spawn(move || {
                                barrier.wait();
                                #[allow(clippy::disallowed_types)] // wall time is what a bench measures
                                let start = std::time::Instant::now();
                                for _ in 0..per_thread {
                                    let _ = std::hint::black_box(drive(&mut svc, make_req()));
                                }
                                start.elapsed()
                            })
                        })
                        .collect();
                    // The threads ran side by side: the slower one is the wall time.
                    workers
                        .into_iter()
                        .map(|w| w.join().expect("bench thread"))
                        .max()
                        .unwrap_or_default()
                });
                slowest.mul_f64(iters as f64 / (2 * per_thread) as f64)
            })
        });
    }

    /// Adds the two-thread references (bare and `ConcurrencyLimit`).
    pub fn two_thread_references(&mut self) {
        self.two_threads("bare", bare(), || 1);
        self.two_threads(
            "tower_concurrency_limit",
            tower::limit::ConcurrencyLimit::new(bare(), 1_000_000),
            || 1,
        );
    }

    /// Ends the group and prints (and [`record`]s) the allocations per call
    /// of every entry.
    pub fn finish(self) {
        self.group.finish();
        println!("\nallocations per call:");
        for (name, allocations) in &self.allocations {
            println!("  {name:<40} {allocations:>6.2}");
            record(&serde_json::json!({
                "kind": "allocations",
                "group": self.name,
                "entry": name,
                "per_call": allocations,
            }));
        }
    }
}

/// Heap bytes still held after `f` returns: allocated minus freed while it
/// ran, with what `f` returns kept alive. Divided by the number of entries
/// `f` made, it is their size in memory, table growth included.
pub fn heap_bytes_held<T>(f: impl FnOnce() -> T) -> (T, i64) {
    let mut kept = None;
    // Allocated minus freed on this thread; a reallocation counts as a new
    // allocation and the free of the old one.
    let counted = allocation_counter::measure(|| kept = Some(f()));
    let kept = kept.expect("the measured closure ran");
    (kept, counted.bytes_current)
}

/// The other resilience layers palisade is measured beside, set up as their
/// users would: tower-resilience's circuit breaker, bulkhead and retry, and
/// failsafe's circuit breaker wrapped as a `tower::Service`.
pub mod peers {
    use std::convert::Infallible;
    use std::task::{Context, Poll};

    use tower::Service;

    /// tower-resilience's circuit breaker with a count window of 100 calls and
    /// a minimum of 20, like palisade's `breaker_count_window`.
    pub fn tower_resilience_breaker() -> tower_resilience_circuitbreaker::CircuitBreakerLayer {
        tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
            .sliding_window_size(100)
            .minimum_number_of_calls(20)
            .build()
            .expect("valid config")
    }

    /// tower-resilience's bulkhead, with a limit no bench reaches.
    pub fn tower_resilience_bulkhead() -> tower_resilience_bulkhead::BulkheadLayer {
        tower_resilience_bulkhead::BulkheadLayer::builder()
            .max_concurrent_calls(1_000_000)
            .build()
            .expect("valid config")
    }

    /// tower-resilience's retry with its defaults, for the bare service's
    /// requests (`u64`, never failing).
    pub fn tower_resilience_retry() -> tower_resilience_retry::RetryLayer<u64, u64, Infallible> {
        tower_resilience_retry::RetryLayer::builder().build()
    }

    /// failsafe's circuit breaker with its default policy, around `inner`.
    pub fn failsafe<S>(inner: S) -> Failsafe<S, impl failsafe::futures::CircuitBreaker + Clone + Send + Sync> {
        Failsafe {
            inner,
            breaker: failsafe::Config::new().build(),
        }
    }

    /// A `tower::Service` calling `S` through a failsafe circuit breaker:
    /// `call` hands the inner future to the breaker, which asks for
    /// permission when first polled and records the outcome.
    #[derive(Debug, Clone)]
    pub struct Failsafe<S, B> {
        inner: S,
        breaker: B,
    }

    impl<S, B, Req> Service<Req> for Failsafe<S, B>
    where
        S: Service<Req>,
        B: failsafe::futures::CircuitBreaker,
    {
        type Response = S::Response;
        type Error = failsafe::Error<S::Error>;
        type Future = failsafe::futures::ResponseFuture<S::Future, B::FailurePolicy, B::Instrument, failsafe::Any>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.inner.poll_ready(cx).map_err(failsafe::Error::Inner)
        }

        fn call(&mut self, req: Req) -> Self::Future {
            self.breaker.call(self.inner.call(req))
        }
    }
}
