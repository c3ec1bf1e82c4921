//! The retry policy on plain (non-HTTP) requests, in palisade's `Retry`, on paused time.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::deadline::{Deadline, DeadlineExceeded};
use palisade_core::{BoxError, BulkheadFull, CircuitOpen, Outcome, classify_fn};
use palisade_retry::{Backoff, Jitter, RetryBudget, RetryLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

type Answer = Result<u32, BoxError>;

/// A downstream that answers from a script (the last answer repeats), records
/// when each call arrived, and checks the tower contract: each clone must be
/// polled ready before it is called.
#[derive(Clone)]
struct Downstream {
    state: Arc<Mutex<State>>,
    ready: bool,
    origin: Instant,
    latency: Duration,
}

struct State {
    script: VecDeque<fn() -> Answer>,
    calls: Vec<Duration>,
}

impl Downstream {
    fn new(script: &[fn() -> Answer]) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                script: script.iter().copied().collect(),
                calls: Vec::new(),
            })),
            ready: false,
            origin: Instant::now(),
            latency: Duration::ZERO,
        }
    }

    fn failing() -> Self {
        Self::new(&[|| Err("boom".into())])
    }

    fn calls(&self) -> Vec<Duration> {
        self.state.lock().unwrap().calls.clone()
    }
}

impl Service<u32> for Downstream {
    type Response = u32;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: u32) -> Self::Future {
        assert!(std::mem::take(&mut self.ready), "called without poll_ready");
        let mut state = self.state.lock().unwrap();
        state.calls.push(self.origin.elapsed());
        let answer = if state.script.len() > 1 {
            state.script.pop_front().unwrap()
        } else {
            state.script[0]
        };
        let latency = self.latency;
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            answer()
        })
    }
}

fn no_budget() -> palisade_retry::RetryBuilder<palisade_core::ErrorClassifier, palisade_retry::AnyRequest> {
    RetryLayer::builder("retry").no_budget().random(|| 0.5)
}

async fn run(retry: RetryLayer, downstream: &Downstream) -> Answer {
    retry.layer(downstream.clone()).oneshot(7).await
}

#[tokio::test(start_paused = true)]
async fn the_1_2_4_8_schedule_is_one_builder_call() {
    let downstream = Downstream::failing();
    let retry = no_budget().exponential_1s_to_8s().build().unwrap();
    assert!(run(retry, &downstream).await.is_err());
    assert_eq!(downstream.calls(), [Duration::ZERO, S, 3 * S, 7 * S, 15 * S]);
}

#[tokio::test(start_paused = true)]
async fn exact_schedules_per_backoff_and_jitter() {
    let cases = [
        (Backoff::constant(200 * MS), Jitter::None, vec![0, 200, 400, 600]),
        (
            Backoff::linear(100 * MS, 100 * MS, 250 * MS),
            Jitter::None,
            vec![0, 100, 300, 550],
        ),
        (
            Backoff::exponential(100 * MS, 2.0, S),
            Jitter::None,
            vec![0, 100, 300, 700],
        ),
        // Full jitter with u = 0.5: half of 100, 200, 400 ms.
        (
            Backoff::exponential(100 * MS, 2.0, S),
            Jitter::Full,
            vec![0, 50, 150, 350],
        ),
        // Equal jitter: 75, 150, 300 ms.
        (
            Backoff::exponential(100 * MS, 2.0, S),
            Jitter::Equal,
            vec![0, 75, 225, 525],
        ),
        // Decorrelated: 200, 350, 575 ms, each drawn from the previous wait.
        (
            Backoff::exponential(100 * MS, 2.0, S),
            Jitter::Decorrelated,
            vec![0, 200, 550, 1125],
        ),
    ];
    for (backoff, jitter, expected) in cases {
        let downstream = Downstream::failing();
        let retry = no_budget()
            .max_attempts(4)
            .backoff(backoff)
            .jitter(jitter)
            .build()
            .unwrap();
        assert!(run(retry, &downstream).await.is_err());
        let expected: Vec<Duration> = expected.into_iter().map(|ms| ms * MS).collect();
        assert_eq!(downstream.calls(), expected, "{backoff:?} {jitter:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn jitter_draws_from_the_injected_source() {
    let draws = Arc::new(Mutex::new(vec![0.9, 0.1, 0.0].into_iter()));
    let source = draws.clone();
    let downstream = Downstream::failing();
    let retry = no_budget()
        .max_attempts(4)
        .backoff(Backoff::constant(S))
        .jitter(Jitter::Full)
        .random(move || source.lock().unwrap().next().unwrap_or(1.0))
        .build()
        .unwrap();
    assert!(run(retry, &downstream).await.is_err());
    assert_eq!(downstream.calls(), [Duration::ZERO, 900 * MS, S, S]);
}

#[tokio::test(start_paused = true)]
async fn success_and_unretryable_results_stop_at_once() {
    let downstream = Downstream::new(&[|| Err("boom".into()), || Ok(1)]);
    assert_eq!(run(no_budget().build().unwrap(), &downstream).await.unwrap(), 1);
    assert_eq!(downstream.calls().len(), 2);

    // A classifier that calls odd answers failures: the even answer ends it.
    let downstream = Downstream::new(&[|| Ok(3), || Ok(5), || Ok(8), || Ok(9)]);
    let odd_fails = classify_fn(|r: palisade_core::CallResult<'_, u32>| match r {
        Ok(n) if n % 2 == 1 => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    });
    let retry = no_budget().classifier(odd_fails).max_attempts(10).build().unwrap();
    let answer = retry.layer(downstream.clone()).oneshot(1).await.unwrap();
    assert_eq!(answer, 8);
    assert_eq!(downstream.calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_counts_the_first() {
    for (max, calls) in [(1, 1), (2, 2), (3, 3)] {
        let downstream = Downstream::failing();
        let err = run(no_budget().max_attempts(max).build().unwrap(), &downstream)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(downstream.calls().len(), calls);
    }
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_attempts_short() {
    // 0, 1, 3 s; the next wait (4 s) would end at 7 s, past the 5 s deadline.
    let downstream = Downstream::failing();
    let retry = no_budget().exponential_1s_to_8s().deadline(5 * S).build().unwrap();
    let started = Instant::now();
    assert!(run(retry, &downstream).await.is_err());
    assert_eq!(downstream.calls(), [Duration::ZERO, S, 3 * S]);
    assert_eq!(started.elapsed(), 3 * S, "gave up at once instead of waiting");

    // The deadline counts the attempts' own time: a first attempt taking
    // 4.5 s leaves no room for a 1 s wait.
    let mut slow = Downstream::failing();
    slow.latency = 4500 * MS;
    let retry = no_budget().exponential_1s_to_8s().deadline(5 * S).build().unwrap();
    assert!(run(retry, &slow).await.is_err());
    assert_eq!(slow.calls(), [Duration::ZERO]);
}

#[tokio::test(start_paused = true)]
async fn no_wait_ends_past_the_request_deadline_of_the_serving_task() {
    // The request's deadline (set by the server layer for the task serving
    // it) is 4 s away: the waits of 1 s and 2 s fit, the next (4 s, ending at
    // 7 s) does not, and the policy has no deadline of its own.
    let downstream = Downstream::failing();
    let retry = no_budget().exponential_1s_to_8s().build().unwrap();
    let started = Instant::now();
    let deadline = Deadline::after(4 * S);
    assert!(deadline.scope(run(retry, &downstream)).await.is_err());
    assert_eq!(downstream.calls(), [Duration::ZERO, S, 3 * S]);
    assert_eq!(started.elapsed(), 3 * S, "gave up at once instead of waiting");

    // A wait that would end exactly at the deadline leaves no time for the
    // attempt: not started either.
    let downstream = Downstream::failing();
    let retry = no_budget().exponential_1s_to_8s().build().unwrap();
    assert!(Deadline::after(S).scope(run(retry, &downstream)).await.is_err());
    assert_eq!(downstream.calls(), [Duration::ZERO]);
}

#[tokio::test(start_paused = true)]
async fn local_rejections_are_never_retried_even_when_overridden() {
    let rejections: [fn() -> Answer; 2] = [
        || Err(CircuitOpen::new("payments", S).into()),
        || Err(BulkheadFull::new("payments", S).into()),
    ];
    for rejection in rejections {
        let downstream = Downstream::new(&[rejection]);
        let retry = no_budget().retry_error(|_| Some(true)).build().unwrap();
        let err = run(retry, &downstream).await.unwrap_err();
        assert!(
            err.is::<CircuitOpen>() || err.is::<BulkheadFull>(),
            "the rejection comes back as it was"
        );
        assert_eq!(downstream.calls().len(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn per_error_overrides() {
    // Not retried: the override says so for this error.
    let downstream = Downstream::new(&[|| Err("fatal".into())]);
    let retry = no_budget()
        .retry_error(|e| (e.to_string() == "fatal").then_some(false))
        .build()
        .unwrap();
    assert!(run(retry, &downstream).await.is_err());
    assert_eq!(downstream.calls().len(), 1);
    // Other errors fall back to the classifier (every error is retryable).
    let downstream = Downstream::failing();
    let retry = no_budget()
        .retry_error(|e| (e.to_string() == "fatal").then_some(false))
        .build()
        .unwrap();
    assert!(run(retry, &downstream).await.is_err());
    assert_eq!(downstream.calls().len(), 3);
}

fn tight_budget(ratio: f64, min_per_sec: u32) -> RetryBudget {
    RetryBudget::builder()
        .ratio(ratio)
        .min_per_sec(min_per_sec)
        .window(S)
        .build()
        .unwrap()
}

/// A budget of reserve only, whose window outlasts a test: a withdrawal
/// counts until the end unless it is given back.
fn lasting_budget() -> RetryBudget {
    RetryBudget::builder()
        .ratio(0.0)
        .min_per_sec(1)
        .window(60 * S)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_returns_the_failure_and_refills() {
    let budget = tight_budget(0.0, 2);
    let retry = RetryLayer::builder("retry")
        .budget(budget.clone())
        .backoff(Backoff::immediate())
        .build()
        .unwrap();
    let downstream = Downstream::failing();
    // The floor (2 per second over a 1 s window) allows two retries...
    assert!(run(retry.clone(), &downstream).await.is_err());
    assert_eq!(downstream.calls().len(), 3);
    // ...then the failure comes back at once.
    assert!(run(retry.clone(), &downstream).await.is_err());
    assert_eq!(downstream.calls().len(), 4);
    assert_eq!(budget.available(), 0);
    // The withdrawals age out of the window and the budget refills.
    tokio::time::advance(S).await;
    assert_eq!(budget.available(), 2);
    assert!(run(retry, &downstream).await.is_err());
    assert_eq!(downstream.calls().len(), 7);
}

#[tokio::test(start_paused = true)]
async fn requests_fund_retries_at_the_ratio() {
    let budget = tight_budget(0.5, 0);
    let retry = RetryLayer::builder("retry")
        .budget(budget.clone())
        .backoff(Backoff::immediate())
        .build()
        .unwrap();
    // Ten requests that succeed deposit five retries.
    let healthy = Downstream::new(&[|| Ok(1)]);
    for _ in 0..10 {
        run(retry.clone(), &healthy).await.unwrap();
    }
    assert_eq!(budget.available(), 5);
    let failing = Downstream::failing();
    for _ in 0..3 {
        let _ = run(retry.clone(), &failing).await;
    }
    // 3 requests: 1.5 more deposited, 6 retries in all possible, then none.
    assert_eq!(failing.calls().len(), 3 + 6);
    assert_eq!(budget.available(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_amplification_against_a_dead_downstream() {
    const REQUESTS: usize = 1000;
    let dead = Downstream::failing();
    // Defaults: ratio 0.2, floor 10 per second over 10 s.
    let retry = RetryLayer::builder("retry")
        .backoff(Backoff::immediate())
        .build()
        .unwrap();
    let svc = retry.layer(dead.clone());
    for _ in 0..REQUESTS {
        assert!(svc.clone().oneshot(1).await.is_err());
    }
    let attempts = dead.calls().len();
    let bound = (REQUESTS as f64 * 1.2) as usize + 10 * 10;
    assert!(
        attempts <= bound,
        "{attempts} attempts for {REQUESTS} requests, bound {bound}"
    );
    assert!(attempts >= bound - 2, "the budget was spent: {attempts}");

    // Without a budget the same outage triples the load.
    let dead = Downstream::failing();
    let svc = RetryLayer::builder("retry")
        .no_budget()
        .backoff(Backoff::immediate())
        .build()
        .unwrap()
        .layer(dead.clone());
    for _ in 0..REQUESTS {
        assert!(svc.clone().oneshot(1).await.is_err());
    }
    assert_eq!(dead.calls().len(), 3 * REQUESTS);
}

#[tokio::test(start_paused = true)]
async fn a_service_deposits_its_requests_in_batches_of_16_and_when_dropped() {
    let budget = tight_budget(1.0, 0);
    let retry = RetryLayer::builder("retry").budget(budget.clone()).build().unwrap();
    let mut svc = retry.layer(Downstream::new(&[|| Ok(1)]));
    for _ in 0..15 {
        svc.ready().await.unwrap().call(1).await.unwrap();
    }
    assert_eq!(budget.available(), 0);
    svc.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(budget.available(), 16);
    for _ in 0..4 {
        svc.ready().await.unwrap().call(1).await.unwrap();
    }
    // A clone starts its own count; the original keeps its four.
    let mut clone = svc.clone();
    clone.ready().await.unwrap().call(1).await.unwrap();
    drop(clone);
    assert_eq!(budget.available(), 17);
    drop(svc);
    assert_eq!(budget.available(), 21);
}

#[tokio::test(start_paused = true)]
async fn clones_of_a_policy_share_its_default_budget() {
    let retry = RetryLayer::builder("retry").build().unwrap();
    let clone = retry.clone();
    let budget = retry.budget().unwrap();
    assert_eq!(budget.available(), 100);
    assert!(clone.budget().unwrap().withdraw());
    assert_eq!(budget.available(), 99);
    // A second policy built separately has its own.
    assert_eq!(
        RetryLayer::builder("retry")
            .build()
            .unwrap()
            .budget()
            .unwrap()
            .available(),
        100
    );
}

#[tokio::test(start_paused = true)]
async fn cancelling_during_the_backoff_stops_and_refunds() {
    let budget = tight_budget(0.0, 1);
    let downstream = Downstream::failing();
    let retry = RetryLayer::builder("retry")
        .budget(budget.clone())
        .exponential_1s_to_8s()
        .build()
        .unwrap();
    let mut svc = retry.layer(downstream.clone());
    svc.ready().await.unwrap();
    let mut call = Box::pin(svc.call(1));
    // First attempt fails; the policy takes a retry and waits 1 s.
    assert!(poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_pending())).await);
    assert_eq!(budget.available(), 0);
    tokio::time::advance(500 * MS).await;
    assert!(poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_pending())).await);
    drop(call);
    // The retry never happens and its withdrawal is given back.
    assert_eq!(budget.available(), 1);
    tokio::time::advance(10 * S).await;
    assert_eq!(downstream.calls(), [Duration::ZERO]);
}

#[tokio::test(start_paused = true)]
async fn cancelling_while_the_retry_waits_for_readiness_refunds() {
    let budget = lasting_budget();
    let before = budget.available();
    let (gate, retry) = ready_once_retrying_after_1s(&budget);
    let retry = retry.build().unwrap();
    let mut svc = retry.layer(gate.clone());
    svc.ready().await.unwrap();
    let mut call = Box::pin(svc.call(1));
    // The first attempt fails; the policy takes a retry and waits 1 s.
    assert!(poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_pending())).await);
    assert_eq!(budget.available(), before - 1);
    // The wait is over; the downstream is not ready for the retry.
    tokio::time::advance(2 * S).await;
    assert!(poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_pending())).await);
    assert_eq!(gate.state.lock().unwrap().polls_pending, 1);
    drop(call);
    // The retry was never sent: its withdrawal is given back.
    assert_eq!(budget.available(), before);
    assert_eq!(gate.state.lock().unwrap().calls, 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_refused_in_poll_ready_refunds_and_returns_the_refusal() {
    /// Ready once, failing that call; then refusing in `poll_ready`, as a
    /// breaker in front opened by that failure would.
    #[derive(Clone)]
    struct OpensAfterOne(Arc<Mutex<u32>>);

    impl Service<u32> for OpensAfterOne {
        type Response = u32;
        type Error = BoxError;
        type Future = std::future::Ready<Answer>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            if *self.0.lock().unwrap() == 0 {
                Poll::Ready(Ok(()))
            } else {
                Poll::Ready(Err(CircuitOpen::new("payments", 3 * S).into()))
            }
        }

        fn call(&mut self, _req: u32) -> Self::Future {
            *self.0.lock().unwrap() += 1;
            std::future::ready(Err("boom".into()))
        }
    }

    let budget = lasting_budget();
    let before = budget.available();
    let retry = RetryLayer::builder("retry")
        .budget(budget.clone())
        .backoff(Backoff::constant(S))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let calls = Arc::new(Mutex::new(0));
    let err = retry.layer(OpensAfterOne(calls.clone())).oneshot(1).await.unwrap_err();
    assert!(palisade_core::error::find::<CircuitOpen>(&*err).is_some(), "{err}");
    assert_eq!(*calls.lock().unwrap(), 1);
    assert_eq!(budget.available(), before);
}

#[tokio::test(start_paused = true)]
async fn pending_readiness_before_a_retry_is_woken_not_polled_in_a_loop() {
    let gate = Gated::default();
    gate.open(1);
    let retry = no_budget().backoff(Backoff::immediate()).build().unwrap();
    let mut svc = retry.layer(gate.clone());
    svc.ready().await.unwrap();
    let mut call = pin!(svc.call(1));
    // The first attempt failed; the retry waits for readiness.
    assert!(poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_pending())).await);
    assert_eq!(gate.state.lock().unwrap().calls, 1);
    assert!(poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_pending())).await);
    assert_eq!(
        gate.state.lock().unwrap().polls_pending,
        2,
        "polled only when the task was polled"
    );
    gate.open(2);
    let err = tokio::time::timeout(S, call.as_mut())
        .await
        .expect("woken by readiness")
        .unwrap_err();
    assert_eq!(err.to_string(), "boom");
    assert_eq!(gate.state.lock().unwrap().calls, 3);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_the_wait_for_readiness_before_a_retry() {
    // The first attempt fails; its retry, due 1 s later, finds the downstream
    // not ready (a full bulkhead, say) until past the 3 s deadline. The call
    // ends at the deadline with `DeadlineExceeded`, the retry is never sent,
    // and its withdrawal goes back to the budget.
    let budget = lasting_budget();
    let before = budget.available();
    let (gate, retry) = ready_once_retrying_after_1s(&budget);
    let retry = retry.deadline(3 * S).build().unwrap();
    let started = Instant::now();
    let call = tokio::spawn(retry.layer(gate.clone()).oneshot(1));
    let err = tokio::time::timeout(60 * S, call)
        .await
        .expect("answered by the deadline")
        .unwrap()
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(started.elapsed(), 3 * S);
    assert_eq!(budget.available(), before);
    gate.open(1);
    tokio::task::yield_now().await;
    assert_eq!(gate.state.lock().unwrap().calls, 1);

    // Ready again before the deadline, the retry goes out then.
    let gate = Gated::default();
    gate.open(1);
    let retry = no_budget()
        .backoff(Backoff::constant(S))
        .jitter(Jitter::None)
        .max_attempts(2)
        .deadline(3 * S)
        .build()
        .unwrap();
    let started = Instant::now();
    let call = tokio::spawn(retry.layer(gate.clone()).oneshot(1));
    tokio::time::sleep(2 * S).await;
    assert_eq!(gate.state.lock().unwrap().calls, 1);
    gate.open(1);
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "boom");
    assert_eq!(gate.state.lock().unwrap().calls, 2);
    assert_eq!(started.elapsed(), 2 * S);
}

#[tokio::test(start_paused = true)]
async fn the_request_deadline_bounds_the_wait_for_readiness_before_a_retry() {
    // No deadline of the retry's own; the task's deadline is 2.5 s away.
    let gate = Gated::default();
    gate.open(1);
    let retry = no_budget()
        .backoff(Backoff::constant(S))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let started = Instant::now();
    let call = Deadline::after(2500 * MS).scope(retry.layer(gate.clone()).oneshot(1));
    let err = tokio::time::timeout(60 * S, call)
        .await
        .expect("answered by the request's deadline")
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(started.elapsed(), 2500 * MS);
    assert_eq!(gate.state.lock().unwrap().calls, 1);
}

/// A downstream ready for one call, and a policy on `budget` that retries
/// after 1 s.
fn ready_once_retrying_after_1s(
    budget: &RetryBudget,
) -> (
    Gated,
    palisade_retry::RetryBuilder<palisade_core::ErrorClassifier, palisade_retry::AnyRequest>,
) {
    let gate = Gated::default();
    gate.open(1);
    let retry = RetryLayer::builder("retry")
        .budget(budget.clone())
        .backoff(Backoff::constant(S))
        .jitter(Jitter::None);
    (gate, retry)
}

/// Ready while it has permits (each call spends one), failing every call.
#[derive(Clone, Default)]
struct Gated {
    state: Arc<Mutex<GateState>>,
    ready: bool,
}

#[derive(Default)]
struct GateState {
    permits: u32,
    calls: u32,
    polls_pending: u32,
    waker: Option<std::task::Waker>,
}

impl Gated {
    fn open(&self, permits: u32) {
        let mut state = self.state.lock().unwrap();
        state.permits += permits;
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
    }
}

impl Service<u32> for Gated {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Answer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.ready {
            return Poll::Ready(Ok(()));
        }
        let mut state = self.state.lock().unwrap();
        if state.permits > 0 {
            state.permits -= 1;
            self.ready = true;
            Poll::Ready(Ok(()))
        } else {
            state.polls_pending += 1;
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    fn call(&mut self, _req: u32) -> Self::Future {
        assert!(std::mem::take(&mut self.ready), "called without readiness");
        self.state.lock().unwrap().calls += 1;
        std::future::ready(Err("boom".into()))
    }
}

#[tokio::test(start_paused = true)]
async fn enormous_waits_and_deadlines_do_not_overflow() {
    let downstream = Downstream::failing();
    let retry = no_budget()
        .backoff(Backoff::constant(Duration::MAX))
        .jitter(Jitter::None)
        .deadline(Duration::MAX)
        .build()
        .unwrap();
    let mut call = pin!(retry.layer(downstream.clone()).oneshot(1));
    assert!(poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_pending())).await);
    assert_eq!(downstream.calls().len(), 1, "waiting practically forever");

    // A wait that cannot even be represented ends past any deadline.
    let downstream = Downstream::failing();
    let retry = no_budget()
        .backoff(Backoff::constant(Duration::MAX))
        .jitter(Jitter::None)
        .deadline(Duration::from_secs(3600))
        .build()
        .unwrap();
    assert!(run(retry, &downstream).await.is_err());
    assert_eq!(downstream.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn readiness_errors_come_back_unchanged() {
    /// Never ready: rejects in `poll_ready`, as a breaker in front would.
    #[derive(Clone)]
    struct Rejecting;

    impl Service<u32> for Rejecting {
        type Response = u32;
        type Error = BoxError;
        type Future = std::future::Ready<Answer>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err(CircuitOpen::new("payments", 3 * S).into()))
        }

        fn call(&mut self, _req: u32) -> Self::Future {
            unreachable!("never ready")
        }
    }

    let retry = no_budget().build().unwrap();
    let err = retry.layer(Rejecting).oneshot(1).await.unwrap_err();
    let open = palisade_core::error::find::<CircuitOpen>(&*err).expect("the breaker's rejection");
    assert_eq!(open.retry_after(), 3 * S);
}

#[test]
fn builders_reject_impossible_settings() {
    use palisade_retry::ConfigError;
    assert_eq!(
        RetryLayer::builder("retry").max_attempts(0).build().unwrap_err(),
        ConfigError::ZeroAttempts
    );
    assert_eq!(
        RetryLayer::builder("retry")
            .deadline(Duration::ZERO)
            .build()
            .unwrap_err(),
        ConfigError::ZeroDeadline
    );
    assert_eq!(
        RetryLayer::builder("retry")
            .backoff(Backoff::exponential(2 * S, 2.0, S))
            .build()
            .unwrap_err(),
        ConfigError::CapBelowBase { base: 2 * S, cap: S }
    );
    assert_eq!(
        RetryLayer::builder("retry")
            .backoff(Backoff::exponential(S, 0.0, 2 * S))
            .build()
            .unwrap_err(),
        ConfigError::Multiplier(0.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_retried_call_runs_as_a_spawned_task() {
    let downstream = Downstream::new(&[|| Err("boom".into()), || Ok(3)]);
    let retry = no_budget()
        .backoff(Backoff::constant(200 * MS))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let call = retry.layer(downstream.clone()).oneshot(7);
    let answer = tokio::spawn(call).await.unwrap();
    assert_eq!(answer.unwrap(), 3);
    assert_eq!(downstream.calls(), [Duration::ZERO, 200 * MS]);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_counts_from_the_call_even_when_its_future_is_polled_later() {
    let downstream = Downstream::failing();
    let retry = no_budget()
        .backoff(Backoff::constant(S))
        .jitter(Jitter::None)
        .deadline(Duration::from_millis(10_500))
        .build()
        .unwrap();
    let mut svc = retry.layer(downstream.clone());
    let call = svc.ready().await.unwrap().call(7);
    // The first attempt is sent now; its result is read 8 s later.
    tokio::time::advance(8 * S).await;
    assert!(call.await.is_err());
    // Retried at 9 s and 10 s; a third retry would be sent at 11 s, past 10.5 s.
    assert_eq!(downstream.calls(), [Duration::ZERO, 9 * S, 10 * S]);
}

#[test]
fn the_retry_service_moves_freely_whatever_it_wraps() {
    fn unpin<T: Unpin>(_: &T) {}

    /// A service that may not be moved once pinned.
    #[derive(Clone)]
    struct Pinned(std::marker::PhantomPinned);

    impl Service<u32> for Pinned {
        type Response = u32;
        type Error = BoxError;
        type Future = std::future::Ready<Answer>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: u32) -> Self::Future {
            std::future::ready(Ok(req))
        }
    }

    let svc = no_budget().build().unwrap().layer(Pinned(std::marker::PhantomPinned));
    unpin(&svc);
}
