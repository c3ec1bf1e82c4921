//! The client layer on paused time: each attempt's bound, the budget sent
//! downstream, and the retry policy inside the same deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use palisade_core::BoxError;
use palisade_core::deadline::{Deadline, DeadlineExceeded};
use palisade_deadline::PropagateDeadlineLayer;
use palisade_retry::{Backoff, HttpRetryLayer, Jitter, ReplayBody};
use tokio::time::Instant;
use tower::{Layer, ServiceBuilder, ServiceExt};

const MS: Duration = Duration::from_millis(1);

/// What the downstream saw of each attempt: when it came, its budget
/// headers, and whether its future was dropped before it answered.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Attempt>>>);

#[derive(Debug, Clone, PartialEq)]
struct Attempt {
    at: Duration,
    grpc_timeout: Option<String>,
    header: Option<String>,
    cancelled: bool,
}

struct Cancelled(Arc<Mutex<Vec<Attempt>>>, usize);

impl Drop for Cancelled {
    fn drop(&mut self) {
        self.0.lock().unwrap()[self.1].cancelled = true;
    }
}

type Fut = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, BoxError>> + Send>>;

/// A downstream answering `status` after `latency` (never, for `None`).
fn downstream<B: Send + 'static>(
    seen: &Seen,
    latency: Option<Duration>,
    status: u16,
) -> impl tower::Service<Request<B>, Response = Response<Full<Bytes>>, Error = BoxError, Future = Fut> + Clone {
    let seen = seen.clone();
    let origin = Instant::now();
    tower::service_fn(move |req: Request<B>| {
        let header = |name: &str| req.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        let mut attempts = seen.0.lock().unwrap();
        attempts.push(Attempt {
            at: origin.elapsed(),
            grpc_timeout: header("grpc-timeout"),
            header: header("x-request-timeout-ms"),
            cancelled: false,
        });
        let guard = Cancelled(seen.0.clone(), attempts.len() - 1);
        Box::pin(async move {
            match latency {
                Some(latency) => tokio::time::sleep(latency).await,
                None => std::future::pending().await,
            }
            std::mem::forget(guard);
            Ok(Response::builder().status(status).body(Full::default()).unwrap())
        }) as Fut
    })
}

fn propagate() -> PropagateDeadlineLayer {
    PropagateDeadlineLayer::builder("inventory").build().unwrap()
}

fn attempts(seen: &Seen) -> Vec<Attempt> {
    seen.0.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn the_remaining_budget_less_the_margin_is_sent_and_bounds_the_attempt() {
    let seen = Seen::default();
    let svc = propagate().layer(downstream(&seen, None, 200));
    let req = Request::get("/").extension(Deadline::after(300 * MS)).body(()).unwrap();
    let started = Instant::now();
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(started.elapsed(), 290 * MS);
    let expected = Attempt {
        at: Duration::ZERO,
        grpc_timeout: None,
        header: Some("290".into()),
        cancelled: true,
    };
    assert_eq!(attempts(&seen), [expected]);
}

#[tokio::test(start_paused = true)]
async fn grpc_requests_get_grpc_timeout_only() {
    let seen = Seen::default();
    let svc = propagate().layer(downstream(&seen, Some(5 * MS), 200));
    let req = Request::post("/pkg.S/M")
        .header("content-type", "application/grpc")
        .extension(Deadline::after(300 * MS))
        .body(())
        .unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
    let seen = attempts(&seen);
    assert_eq!(seen[0].grpc_timeout.as_deref(), Some("290000u"));
    assert_eq!(seen[0].header, None);
    assert!(!seen[0].cancelled);
}

#[tokio::test(start_paused = true)]
async fn the_serving_tasks_deadline_is_found_without_the_extension() {
    let seen = Seen::default();
    let svc = propagate().layer(downstream(&seen, Some(5 * MS), 200));
    let deadline = Deadline::after(120 * MS);
    let res = deadline
        .scope(async move { svc.oneshot(Request::get("/").body(()).unwrap()).await })
        .await;
    assert_eq!(res.unwrap().status(), 200);
    assert_eq!(attempts(&seen)[0].header.as_deref(), Some("110"));
}

#[tokio::test(start_paused = true)]
async fn a_shorter_own_timeout_bounds_the_attempt_as_a_timeout() {
    let seen = Seen::default();
    let layer = PropagateDeadlineLayer::builder("inventory")
        .timeout(100 * MS)
        .margin(20 * MS)
        .build()
        .unwrap();
    let svc = layer.layer(downstream(&seen, None, 200));
    let req = Request::get("/").extension(Deadline::after(300 * MS)).body(()).unwrap();
    let started = Instant::now();
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    assert!(!palisade_core::error::is_local_rejection(&*err));
    assert_eq!(started.elapsed(), 100 * MS);
    assert_eq!(attempts(&seen)[0].header.as_deref(), Some("100"));
    assert!(attempts(&seen)[0].cancelled);

    // Without a deadline, the own timeout is sent and bounds the call.
    let seen = Seen::default();
    let svc = layer.layer(downstream(&seen, None, 200));
    let err = svc.oneshot(Request::get("/").body(()).unwrap()).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>());
    assert_eq!(attempts(&seen)[0].header.as_deref(), Some("100"));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_without_time_left_is_not_sent() {
    let seen = Seen::default();
    let svc = propagate().layer(downstream(&seen, Some(MS), 200));
    // 10 ms left is all margin.
    let req = Request::get("/").extension(Deadline::after(10 * MS)).body(()).unwrap();
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert!(attempts(&seen).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_downstream_enforcing_the_budget_it_was_sent_is_cut_by_the_deadline() {
    // As a tonic channel enforces `grpc-timeout`: it fails with a timeout of
    // its own the moment the budget it was sent runs out, which is this
    // layer's bound; that is the deadline, not a slow downstream.
    let enforcing = tower::service_fn(|req: Request<()>| {
        let budget: u64 = req.headers()["x-request-timeout-ms"].to_str().unwrap().parse().unwrap();
        async move {
            tokio::time::sleep(Duration::from_millis(budget)).await;
            Err::<Response<()>, BoxError>(tower::timeout::error::Elapsed::new().into())
        }
    });
    let svc = propagate().layer(enforcing);
    let req = Request::get("/").extension(Deadline::after(200 * MS)).body(()).unwrap();
    let started = Instant::now();
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(started.elapsed(), 190 * MS);

    // Whatever its timeout error is (tonic's `TimeoutExpired`, unknown to
    // palisade without `palisade_grpc::channel_error`): at the deadline's
    // bound, the deadline passed.
    #[derive(Debug)]
    struct ItsOwnTimeout;
    impl std::fmt::Display for ItsOwnTimeout {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("timeout expired")
        }
    }
    impl std::error::Error for ItsOwnTimeout {}
    let its_own = tower::service_fn(|req: Request<()>| {
        let budget: u64 = req.headers()["x-request-timeout-ms"].to_str().unwrap().parse().unwrap();
        async move {
            tokio::time::sleep(Duration::from_millis(budget)).await;
            Err::<Response<()>, BoxError>(ItsOwnTimeout.into())
        }
    });
    let req = Request::get("/").extension(Deadline::after(200 * MS)).body(()).unwrap();
    let err = propagate().layer(its_own).oneshot(req).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");

    // Under an own timeout shorter than the deadline, the cut is a timeout.
    let layer = PropagateDeadlineLayer::builder("inventory")
        .timeout(50 * MS)
        .build()
        .unwrap();
    let svc = layer.layer(enforcing);
    let req = Request::get("/").extension(Deadline::after(200 * MS)).body(()).unwrap();
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn an_own_timeout_past_tokios_range_is_sent_capped_and_does_not_overflow() {
    let seen = Seen::default();
    let layer = PropagateDeadlineLayer::builder("inventory")
        .timeout(Duration::MAX)
        .build()
        .unwrap();
    let svc = layer.layer(downstream(&seen, Some(5 * MS), 200));
    assert_eq!(
        svc.oneshot(Request::get("/").body(()).unwrap()).await.unwrap().status(),
        200
    );
    // The largest value a receiver's `parse_millis` accepts.
    assert_eq!(attempts(&seen)[0].header.as_deref(), Some("999999999999"));
}

#[tokio::test(start_paused = true)]
async fn without_deadline_or_timeout_the_call_passes_through() {
    let seen = Seen::default();
    let svc = propagate().layer(downstream(&seen, Some(3600 * 1000 * MS), 200));
    assert_eq!(
        svc.oneshot(Request::get("/").body(()).unwrap()).await.unwrap().status(),
        200
    );
    assert_eq!(attempts(&seen)[0].header, None);
}

#[tokio::test(start_paused = true)]
async fn retries_inside_the_deadline_each_get_what_is_left() {
    // Each attempt fails with 503 after 50 ms; 100 ms backoff; 400 ms budget.
    // Attempts at 0 (budget 390), 150 (240), 300 (90); the next wait would
    // end at 450 ms, past the deadline: the 503 comes back at 350 ms.
    let seen = Seen::default();
    let retry = HttpRetryLayer::builder("inventory")
        .no_budget()
        .max_attempts(10)
        .backoff(Backoff::constant(100 * MS))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(propagate())
        .service(downstream::<ReplayBody<Full<Bytes>>>(&seen, Some(50 * MS), 503));
    let req = Request::get("/")
        .extension(Deadline::after(400 * MS))
        .body(Full::<Bytes>::default())
        .unwrap();
    let started = Instant::now();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(started.elapsed(), 350 * MS);
    let seen = attempts(&seen);
    let at: Vec<_> = seen.iter().map(|a| a.at).collect();
    let budgets: Vec<_> = seen.iter().map(|a| a.header.clone().unwrap()).collect();
    assert_eq!(at, [Duration::ZERO, 150 * MS, 300 * MS]);
    assert_eq!(budgets, ["390", "240", "90"]);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_attempt_ends_the_retries_at_the_deadline() {
    // The deadline cuts the only attempt; DeadlineExceeded is not retried.
    let seen = Seen::default();
    let retry = HttpRetryLayer::builder("inventory")
        .no_budget()
        .retry_error(|_| Some(true))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(propagate())
        .service(downstream::<ReplayBody<Full<Bytes>>>(&seen, None, 200));
    let req = Request::get("/")
        .extension(Deadline::after(300 * MS))
        .body(Full::<Bytes>::default())
        .unwrap();
    let started = Instant::now();
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_eq!(started.elapsed(), 290 * MS);
    assert_eq!(attempts(&seen).len(), 1);
    assert!(attempts(&seen)[0].cancelled);
}

/// The error `svc` fails `req` with, and when.
async fn failed_after<S>(svc: S, req: Request<()>) -> (BoxError, Duration)
where
    S: tower::Service<Request<()>, Error = BoxError>,
    S::Response: std::fmt::Debug,
{
    let started = Instant::now();
    let err = svc.oneshot(req).await.unwrap_err();
    (err, started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_calls_own_shorter_budget_is_kept_and_bounds_it_as_a_timeout() {
    // tonic's `Request::set_timeout` puts the call's own bound in
    // `grpc-timeout`: a longer one of the layer's must not replace it.
    let seen = Seen::default();
    let layer = PropagateDeadlineLayer::builder("inventory")
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let req = Request::post("/pkg.S/M")
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "100m")
        .body(())
        .unwrap();
    let (err, after) = failed_after(layer.layer(downstream(&seen, None, 200)), req).await;
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    assert_eq!(after, 100 * MS);
    assert_eq!(attempts(&seen)[0].grpc_timeout.as_deref(), Some("100000u"));

    // The same on HTTP, and under a deadline that leaves more.
    let seen = Seen::default();
    let req = Request::get("/")
        .header("x-request-timeout-ms", "50")
        .extension(Deadline::after(300 * MS))
        .body(())
        .unwrap();
    let (err, after) = failed_after(propagate().layer(downstream(&seen, None, 200)), req).await;
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    assert_eq!(after, 50 * MS);
    assert_eq!(attempts(&seen)[0].header.as_deref(), Some("50"));

    // A call's own budget longer than what the deadline leaves gives way to it.
    let seen = Seen::default();
    let svc = propagate().layer(downstream(&seen, None, 200));
    let req = Request::get("/")
        .header("x-request-timeout-ms", "5000")
        .extension(Deadline::after(300 * MS))
        .body(())
        .unwrap();
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(attempts(&seen)[0].header.as_deref(), Some("290"));
}

#[tokio::test(start_paused = true)]
async fn a_budget_that_would_be_sent_as_zero_milliseconds_is_not_sent() {
    // 10.5 ms left, 10 ms of margin: half a millisecond, which the header
    // can only say as "0", which a downstream answers as exceeded at once.
    let seen = Seen::default();
    let svc = propagate().layer(downstream(&seen, Some(MS), 200));
    let req = Request::get("/")
        .extension(Deadline::after(Duration::from_micros(10_500)))
        .body(())
        .unwrap();
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert!(attempts(&seen).is_empty());

    // gRPC says it in microseconds: the call goes.
    let seen = Seen::default();
    let svc = propagate().layer(downstream(&seen, Some(Duration::from_micros(100)), 200));
    let req = Request::post("/pkg.S/M")
        .header("content-type", "application/grpc")
        .extension(Deadline::after(Duration::from_micros(10_500)))
        .body(())
        .unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
    assert_eq!(attempts(&seen)[0].grpc_timeout.as_deref(), Some("500000n"));
}

/// A palisade server downstream: its deadline layer over a handler that never answers.
fn deadline_server()
-> impl tower::Service<Request<()>, Response = Response<palisade_deadline::DeadlineBody<Full<Bytes>>>, Error = BoxError>
+ Clone {
    let hang = tower::service_fn(|_: Request<()>| std::future::pending::<Result<Response<Full<Bytes>>, BoxError>>());
    palisade_deadline::DeadlineLayer::builder("downstream")
        .build()
        .unwrap()
        .layer(hang)
}

#[tokio::test(start_paused = true)]
async fn a_downstream_answering_that_the_budget_it_was_sent_passed_is_the_deadline() {
    // 300.5 ms left less 10 ms of margin: the header says 290 (rounded down), so the
    // downstream answers 504 half a millisecond before this layer's own bound.
    let svc = propagate().layer(deadline_server());
    let req = Request::get("/")
        .extension(Deadline::after(Duration::from_micros(300_500)))
        .body(())
        .unwrap();
    let started = Instant::now();
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert!(palisade_core::error::is_local_rejection(&*err));
    assert_eq!(started.elapsed(), 290 * MS);

    // gRPC: a trailers-only DEADLINE_EXCEEDED at the bound.
    let svc = propagate().layer(deadline_server());
    let req = Request::post("/pkg.S/M")
        .header("content-type", "application/grpc")
        .extension(Deadline::after(300 * MS))
        .body(())
        .unwrap();
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_504_well_before_the_bound_is_the_downstreams_own_answer() {
    let seen = Seen::default();
    let svc = propagate().layer(downstream(&seen, Some(50 * MS), 504));
    let req = Request::get("/").extension(Deadline::after(300 * MS)).body(()).unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 504);
}

#[tokio::test(start_paused = true)]
async fn every_value_of_a_repeated_budget_header_counts_and_one_goes_on() {
    // A proxy without a server deadline layer forwards the caller's budget
    // and appends its own, tighter one; a malformed value is not a budget.
    let seen = Seen::default();
    let req = Request::get("/")
        .header("x-request-timeout-ms", "5000")
        .header("x-request-timeout-ms", "soon")
        .header("x-request-timeout-ms", "200")
        .body(())
        .unwrap();
    let (err, after) = failed_after(propagate().layer(downstream(&seen, None, 200)), req).await;
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    assert_eq!(after, 200 * MS);
    assert_eq!(attempts(&seen)[0].header.as_deref(), Some("200"));
    // The same lines folded into one by a proxy (RFC 9110 §5.3).
    let seen = Seen::default();
    let req = Request::get("/")
        .header("x-request-timeout-ms", "5000, 200")
        .body(())
        .unwrap();
    let slow = downstream(&seen, Some(Duration::from_secs(10)), 200);
    let (_, after) = failed_after(propagate().layer(slow), req).await;
    assert_eq!(after, 200 * MS);
    assert_eq!(attempts(&seen)[0].header.as_deref(), Some("200"));
}
