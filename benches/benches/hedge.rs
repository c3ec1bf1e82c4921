// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

//! Hedging: the layer's cost on a call that needs no hedge (against tower's
//! `Retry` and a bare HTTP service), and what it buys: the latency
//! percentiles of calls to a bimodal downstream (95 % of calls take 1 ms, 5 %
//! take 50 ms, chosen by a seeded random source) with and without hedging,
//! and the extra calls the hedges make.
//!
//! Run with `cargo bench -p palisade-benches --bench hedge`. The tail figures
//! use real time on a two-thread tokio runtime: 4000 calls, 32 at a time;
//! they are printed and recorded (`kind: "hedge_tail"`).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use palisade_benches::{Harness, record};
use palisade_hedge::HedgeLayer;
use palisade_retry::ReplayBody;
use tower::{Layer, Service, ServiceExt, service_fn};

type Handler = tower::util::ServiceFn<fn(Request<ReplayBody<Full<Bytes>>>) -> Ready<Result<Response<()>, Infallible>>>;

fn handler() -> Handler {
    fn ok(_: Request<ReplayBody<Full<Bytes>>>) -> Ready<Result<Response<()>, Infallible>> {
        ready(Ok(Response::new(())))
    }
    service_fn(ok as fn(_) -> _)
}

const CALLS: usize = 4000;
const CONCURRENCY: usize = 32;
const FAST: Duration = Duration::from_millis(1);
const SLOW: Duration = Duration::from_millis(50);

/// Latency percentiles of `CALLS` calls through `svc`, and the downstream
/// calls they made.
fn tail<S>(runtime: &tokio::runtime::Runtime, svc: S, downstream_calls: &AtomicU64) -> (Vec<Duration>, u64)
where
    S: Service<Request<Full<Bytes>>, Response = Response<()>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
{
    downstream_calls.store(0, Ordering::SeqCst);
    let latencies = runtime.block_on(async move {
        let mut latencies = Vec::with_capacity(CALLS);
        let mut tasks = tokio::task::JoinSet::new();
        let mut sent = 0;
        while latencies.len() < CALLS {
            while sent < CALLS && tasks.len() < CONCURRENCY {
                let svc = svc.clone();
                tasks.spawn(async move {
                    let started = tokio::time::Instant::now();
                    svc.oneshot(Request::get("/").body(Full::default()).unwrap())
                        .await
                        .unwrap();
                    started.elapsed()
                });
                sent += 1;
            }
            latencies.push(tasks.join_next().await.unwrap().unwrap());
        }
        latencies
    });
    let mut sorted = latencies;
    sorted.sort();
    (sorted, downstream_calls.load(Ordering::SeqCst))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn bimodal(
    calls: Arc<AtomicU64>,
    seed: u64,
) -> impl Service<Request<ReplayBody<Full<Bytes>>>, Response = Response<()>, Error = Infallible, Future: Send> + Clone {
    let random = Arc::new(std::sync::Mutex::new(fastrand::Rng::with_seed(seed)));
    service_fn(move |_req: Request<ReplayBody<Full<Bytes>>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let slow = random.lock().unwrap().f64() < 0.05;
        async move {
            tokio::time::sleep(if slow { SLOW } else { FAST }).await;
            Ok::<_, Infallible>(Response::new(()))
        }
    })
}

fn tail_latency() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let calls = Arc::new(AtomicU64::new(0));
    let mut rows = Vec::new();
    // Without hedging: the bare downstream behind the same body wrapper.
    let bare = tower::util::MapRequestLayer::new(|req: Request<Full<Bytes>>| {
        req.map(|b| ReplayBody::new(b, palisade_retry::DEFAULT_REPLAY_LIMIT))
    })
    .layer(bimodal(calls.clone(), 7));
    rows.push(("none", tail(&runtime, bare, &calls)));
    let configs = [
        ("p90", HedgeLayer::builder("bench").percentile(0.90, 1000, 100)),
        ("p95", HedgeLayer::builder("bench").percentile(0.95, 1000, 100)),
        (
            "fixed_5ms",
            HedgeLayer::builder("bench").delay(Duration::from_millis(5)),
        ),
    ];
    for (name, builder) in configs {
        let layer = builder.no_budget().build().unwrap();
        // Warm the latency window up, then measure.
        let svc = layer.layer(bimodal(calls.clone(), 11));
        tail(&runtime, svc.clone(), &calls);
        let svc = layer.layer(bimodal(calls.clone(), 7));
        rows.push((name, tail(&runtime, svc, &calls)));
    }
    println!("\nhedging, bimodal downstream (95 % {FAST:?}, 5 % {SLOW:?}), {CALLS} calls, {CONCURRENCY} in flight:");
    println!(
        "  {:<10} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "hedge", "p50", "p95", "p99", "max", "extra calls"
    );
    for (name, (sorted, downstream)) in rows {
        let extra = downstream as f64 / CALLS as f64 - 1.0;
        let [p50, p95, p99] = [0.50, 0.95, 0.99].map(|p| percentile(&sorted, p));
        let max = *sorted.last().unwrap();
        println!(
            "  {name:<10} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>11.1}%",
            ms(p50),
            ms(p95),
            ms(p99),
            ms(max),
            extra * 100.0
        );
        record(&serde_json::json!({
            "kind": "hedge_tail",
            "hedge": name,
            "p50_ms": ms(p50),
            "p95_ms": ms(p95),
            "p99_ms": ms(p99),
            "max_ms": ms(max),
            "extra_calls": extra,
        }));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench(c: &mut Criterion) {
    tail_latency();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let mut harness = Harness::new(c, "hedge");
    let bare_http = tower::util::MapRequestLayer::new(|req: Request<Full<Bytes>>| {
        req.map(|b| ReplayBody::new(b, palisade_retry::DEFAULT_REPLAY_LIMIT))
    })
    .layer(handler());
    harness.overhead("http_bare", bare_http, || Request::new(Full::default()));
    let fixed = HedgeLayer::builder("bench")
        .delay(Duration::from_secs(1))
        .build()
        .unwrap();
    harness.overhead("hedge_fixed", fixed.layer(handler()), || Request::new(Full::default()));
    let percentile = HedgeLayer::builder("bench").build().unwrap();
    harness.overhead("hedge_percentile", percentile.layer(handler()), || {
        Request::new(Full::default())
    });
    let unsafe_post = HedgeLayer::builder("bench")
        .delay(Duration::from_secs(1))
        .build()
        .unwrap();
    harness.overhead("hedge_unsafe_request", unsafe_post.layer(handler()), || {
        Request::post("/").body(Full::default()).unwrap()
    });
    harness.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
