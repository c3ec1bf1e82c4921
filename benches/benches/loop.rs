//! Each layer's cost in a plain tokio loop, the way an application calls a
//! service: `ready().await` then `call(req).await`, N times on a
//! current-thread runtime, against the bare service in the same run; and two
//! tasks on a two-worker runtime driving clones of one service, for the
//! throughput of its shared state. The one-call-at-a-time loop runs again
//! over an inner service whose call does about 20 ns of arithmetic first, as
//! any real service does some work: a layer that builds a small value, calls
//! the inner service and then copies the value is timed here without the
//! stall a do-nothing inner service causes, when the copy's wide load
//! follows the narrower stores that built the value too closely for the
//! processor to forward them.
//!
//! Run with `cargo bench -p palisade-benches --bench loop`. Options (after
//! `--`): `--calls N` calls per repetition (default 200000), `--reps R`
//! repetitions (default 7; the layers take turns within each), `--only NAME`
//! one layer (repeatable), `--no-threads` to skip the two-task mode,
//! `--inner bare` or `--inner working` for one of the two inner services. For
//! instruction counts, run the bench binary under
//! `valgrind --tool=callgrind` with `--only NAME --reps 1 --no-threads --inner bare` at two
//! call counts: the difference of the totals over 1.1 times the difference
//! of the calls (a tenth more warm the loop up first) is the instructions of
//! one call.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::time::Duration;

use palisade_benches::{Bare, NeverRetry, TowerBudgetRetry, bare, peers, record};
use palisade_bulkhead::BulkheadLayer;
use palisade_circuit_breaker::CircuitBreakerBuilder;
use palisade_retry::RetryLayer;
use tower::{Layer, Service, ServiceExt};

/// One layer over the bare service. Each runs its own monomorphized loop;
/// only the loop as a whole is boxed, once per repetition.
trait Case {
    fn name(&self) -> &'static str;
    /// `calls` calls through this service: the time they took.
    fn run(&mut self, calls: u64) -> Pin<Box<dyn Future<Output = Duration> + '_>>;
    /// Two tasks on `rt`, each making `calls` calls through a clone: the wall time.
    fn two_tasks(&self, rt: &tokio::runtime::Runtime, calls: u64) -> Duration;
}

struct Entry<S> {
    name: &'static str,
    svc: S,
}

impl<S> Case for Entry<S>
where
    S: Service<u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn run(&mut self, calls: u64) -> Pin<Box<dyn Future<Output = Duration> + '_>> {
        Box::pin(run(&mut self.svc, calls))
    }

    fn two_tasks(&self, rt: &tokio::runtime::Runtime, calls: u64) -> Duration {
        rt.block_on(async {
            #[allow(clippy::disallowed_types)] // wall time is what a bench measures
            let start = std::time::Instant::now();
            let tasks: Vec<_> = (0..2)
                .map(|_| {
                    let mut svc = self.svc.clone();
                    tokio::spawn(async move { run(&mut svc, calls).await })
                })
                .collect();
            for task in tasks {
                task.await.expect("bench task");
            }
            start.elapsed()
        })
    }
}

fn entry<S>(name: &'static str, svc: S) -> Box<dyn Case>
where
    S: Service<u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
{
    Box::new(Entry { name, svc })
}

/// A service like [`bare`] whose call first does about 20 ns of arithmetic
/// that the compiler cannot skip.
fn working() -> Bare {
    fn work(req: u64) -> Ready<Result<u64, Infallible>> {
        let mut x = req;
        for i in 0..40u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        ready(Ok(x))
    }
    tower::service_fn(work as fn(u64) -> Ready<Result<u64, Infallible>>)
}

/// Every layer over `inner` (and `inner` alone, as `bare`).
fn layers(inner: Bare) -> Vec<Box<dyn Case>> {
    const HIGH: usize = 1_000_000;
    let count_window = CircuitBreakerBuilder::rate_based("loop")
        .count_window(100)
        .minimum_calls(20)
        .consecutive_failures(5)
        .build()
        .expect("valid");
    let consecutive = CircuitBreakerBuilder::consecutive("loop_consecutive")
        .build()
        .expect("valid");
    let keyed_breaker = CircuitBreakerBuilder::rate_based("loop_keyed")
        .count_window(100)
        .minimum_calls(20)
        .build_keyed(|req: &u64| *req % 4)
        .expect("valid");
    let fixed = BulkheadLayer::builder("loop_fixed")
        .max_concurrent(HIGH)
        .build()
        .expect("valid");
    let keyed_bulkhead = BulkheadLayer::builder("loop_keyed")
        .max_concurrent(HIGH)
        .build_keyed(|req: &u64| req % 8)
        .expect("valid");
    let retry = RetryLayer::builder("loop").build().expect("valid");
    vec![
        entry("bare", inner),
        entry(
            "tower_concurrency_limit",
            tower::limit::ConcurrencyLimit::new(inner, HIGH),
        ),
        entry("tower_retry_never", tower::retry::Retry::new(NeverRetry, inner)),
        entry("breaker_count_window", count_window.layer(inner)),
        entry("breaker_consecutive", consecutive.layer(inner)),
        entry("breaker_keyed", keyed_breaker.layer(inner)),
        entry("bulkhead_fixed", fixed.layer(inner)),
        entry("bulkhead_keyed", keyed_bulkhead.layer(inner)),
        entry("palisade_retry_budget", retry.layer(inner)),
        entry(
            "tower_retry_tps_budget",
            tower::retry::Retry::new(TowerBudgetRetry::default(), inner),
        ),
        entry(
            "tower_resilience_breaker",
            peers::tower_resilience_breaker().layer(inner),
        ),
        entry(
            "tower_resilience_bulkhead",
            peers::tower_resilience_bulkhead().layer(inner),
        ),
        entry("tower_resilience_retry", peers::tower_resilience_retry().layer(inner)),
        entry("failsafe_breaker", peers::failsafe(inner)),
    ]
}

/// `calls` calls through `svc`, one after another: the time they took.
async fn run<S: Service<u64>>(svc: &mut S, calls: u64) -> Duration {
    #[allow(clippy::disallowed_types)] // wall time is what a bench measures
    let start = std::time::Instant::now();
    for _ in 0..calls {
        let Ok(ready) = svc.ready().await else {
            panic!("a benchmarked service failed readiness")
        };
        let result = ready.call(std::hint::black_box(1)).await;
        assert!(result.is_ok(), "a benchmarked call failed");
        std::hint::black_box(result.ok());
    }
    start.elapsed()
}

struct Args {
    calls: u64,
    reps: usize,
    only: Vec<String>,
    threads: bool,
    /// Which inner services the one-call-at-a-time loop runs over.
    inner: Vec<InnerCall>,
}

fn args() -> Args {
    let mut args = Args {
        calls: 200_000,
        reps: 7,
        only: Vec::new(),
        threads: true,
        inner: vec![InnerCall::Bare, InnerCall::Working],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--calls" => args.calls = it.next().and_then(|n| n.parse().ok()).expect("--calls N"),
            "--reps" => args.reps = it.next().and_then(|n| n.parse().ok()).expect("--reps R"),
            "--only" => args.only.push(it.next().expect("--only NAME")),
            "--no-threads" => args.threads = false,
            "--inner" => {
                args.inner = match it.next().as_deref() {
                    Some("bare") => vec![InnerCall::Bare],
                    Some("working") => vec![InnerCall::Working],
                    _ => panic!("--inner bare|working"),
                }
            }
            // cargo bench passes `--bench`; criterion's options mean nothing here.
            _ => {}
        }
    }
    args
}

/// Median, lowest and highest of `values`.
fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

fn main() {
    let args = args();
    let chosen = |inner: Bare| {
        let mut layers = layers(inner);
        if !args.only.is_empty() {
            layers.retain(|case| args.only.iter().any(|only| only == case.name()));
        }
        layers
    };
    for &inner in &args.inner {
        let service = match inner {
            InnerCall::Bare => bare(),
            InnerCall::Working => working(),
        };
        one_at_a_time(&mut chosen(service), &args, inner);
    }
    if args.threads {
        two_tasks(&chosen(bare()), &args);
    }
}

/// The inner service of a one-call-at-a-time run.
#[derive(Clone, Copy)]
enum InnerCall {
    /// [`bare`]: the call does nothing.
    Bare,
    /// [`working`]: the call does about 20 ns of arithmetic first.
    Working,
}

/// Each layer's calls one at a time on a current-thread runtime, the layers taking turns
/// within each repetition; printed and recorded against the inner service alone.
fn one_at_a_time(layers: &mut [Box<dyn Case>], args: &Args, inner: InnerCall) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); layers.len()];
    rt.block_on(async {
        for case in layers.iter_mut() {
            case.run(args.calls / 10).await;
        }
        for _ in 0..args.reps {
            for (case, times) in layers.iter_mut().zip(&mut times) {
                let took = case.run(args.calls).await;
                times.push(took.as_nanos() as f64 / args.calls as f64);
            }
        }
    });

    let (kind, inner_call) = match inner {
        InnerCall::Bare => ("loop", ""),
        InnerCall::Working => ("loop_working", ", the inner call doing about 20 ns of work"),
    };
    println!(
        "one call at a time, current-thread runtime{inner_call}: {} calls x {} repetitions",
        args.calls, args.reps
    );
    println!(
        "  {:<28} {:>9} {:>17} {:>10} {:>17}",
        "layer", "ns/call", "(min..max)", "over bare", "(min..max)"
    );
    let bare = layers
        .iter()
        .position(|case| case.name() == "bare")
        .map(|i| spread(&mut times[i].clone()).0);
    for (case, times) in layers.iter().zip(&mut times) {
        let name = case.name();
        let (median, low, high) = spread(times);
        let over = bare.map(|bare| (median - bare, low - bare, high - bare));
        match over {
            Some((over, over_low, over_high)) => println!(
                "  {name:<28} {median:>9.1} ({low:>6.1}..{high:>6.1}) {over:>+10.1} ({over_low:>+6.1}..{over_high:>+6.1})"
            ),
            None => println!("  {name:<28} {median:>9.1} ({low:>6.1}..{high:>6.1})"),
        }
        record(&serde_json::json!({
            "kind": kind,
            "entry": name,
            "calls": args.calls,
            "ns_per_call": times,
            "median": median,
            "over_bare": over.map(|o| o.0),
        }));
    }
}

/// Two tasks on a two-worker runtime, each making `calls` calls through its
/// clone of one service: calls per second, against `ConcurrencyLimit`'s.
fn two_tasks(layers: &[Box<dyn Case>], args: &Args) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); layers.len()];
    for _ in 0..args.reps {
        for (case, rates) in layers.iter().zip(&mut rates) {
            let took = case.two_tasks(&rt, args.calls);
            rates.push(2.0 * args.calls as f64 / took.as_secs_f64());
        }
    }
    println!(
        "\ntwo tasks, two-worker runtime: 2 x {} calls x {} repetitions",
        args.calls, args.reps
    );
    println!(
        "  {:<28} {:>12} {:>23} {:>16}",
        "layer", "M calls/s", "(min..max)", "x ConcurrencyLimit"
    );
    let limit = layers
        .iter()
        .position(|case| case.name() == "tower_concurrency_limit")
        .map(|i| spread(&mut rates[i].clone()).0);
    for (case, rates) in layers.iter().zip(&mut rates) {
        let name = case.name();
        let (median, low, high) = spread(rates);
        let ratio = limit.map(|limit| median / limit);
        println!(
            "  {name:<28} {:>12.2} ({:>9.2}..{:>9.2}) {:>16}",
            median / 1e6,
            low / 1e6,
            high / 1e6,
            ratio.map_or(String::new(), |r| format!("{r:.2}"))
        );
        record(&serde_json::json!({
            "kind": "loop_two_tasks",
            "entry": name,
            "calls_per_task": args.calls,
            "calls_per_second": rates,
            "median": median,
            "ratio_to_concurrency_limit": ratio,
        }));
    }
}
