//! The server layer on paused time: where the budget comes from, what is
//! answered when it passes, and that the work is cancelled.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use palisade_core::deadline::Deadline;
use palisade_deadline::{ConfigError, DeadlineBody, DeadlineLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);
const S: Duration = Duration::from_secs(1);

/// Counts calls and drops of the inner futures: a guard held by each call
/// counts when the future is dropped.
#[derive(Clone, Default)]
struct Counters {
    calls: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Counters {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
    fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

type Fut = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

/// A handler that answers after `latency` (never, for `None`), with the
/// deadline it saw in its extensions and as the current one.
fn handler(
    counters: &Counters,
    latency: Option<Duration>,
) -> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible, Future = Fut> + Clone {
    let counters = counters.clone();
    tower::service_fn(move |req: Request<()>| {
        counters.calls.fetch_add(1, Ordering::SeqCst);
        let guard = Guard(counters.dropped.clone());
        let seen = req.extensions().get::<Deadline>().copied();
        Box::pin(async move {
            let _guard = guard;
            assert_eq!(Deadline::current(), seen, "the task's deadline is the request's");
            match latency {
                Some(latency) => tokio::time::sleep(latency).await,
                None => std::future::pending().await,
            }
            let body = match seen {
                Some(d) => format!("{}", d.remaining().as_millis()),
                None => "none".into(),
            };
            Ok(Response::new(Full::from(body)))
        }) as Fut
    })
}

fn get() -> http::request::Builder {
    Request::get("/")
}

fn grpc() -> http::request::Builder {
    Request::post("/pkg.Service/Method").header("content-type", "application/grpc+proto")
}

async fn body<B: http_body::Body<Data = Bytes>>(res: Response<B>) -> String
where
    B::Error: std::fmt::Debug,
{
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

const EXCEEDED_BODY: &str = r#"{"type":"urn:palisade:problem:deadline-exceeded","title":"Deadline exceeded","status":504,"detail":"The request's time budget ran out before it was answered."}"#;
const MALFORMED_BODY: &str = r#"{"type":"urn:palisade:problem:malformed-timeout","title":"Malformed timeout","status":400,"detail":"The request's timeout header is not in its format."}"#;

fn assert_grpc_status(res: &Response<DeadlineBody<Full<Bytes>>>, code: &str, message: &str) {
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/grpc");
    assert_eq!(res.headers()["grpc-status"], code);
    assert_eq!(res.headers()["grpc-message"], message);
    assert_eq!(res.headers().len(), 3);
}

/// Sends `req` to a hanging handler and returns the response and how long it took.
async fn hang(layer: &DeadlineLayer, req: Request<()>) -> (Response<DeadlineBody<Full<Bytes>>>, Duration, Counters) {
    let counters = Counters::default();
    let started = Instant::now();
    let res = layer.layer(handler(&counters, None)).oneshot(req).await.unwrap();
    (res, started.elapsed(), counters)
}

#[tokio::test(start_paused = true)]
async fn every_grpc_timeout_unit_sets_the_budget() {
    let layer = DeadlineLayer::builder("edge")
        .max_timeout(2 * 3600 * S)
        .build()
        .unwrap();
    let cases = [
        ("1H", 3600 * S),
        ("2M", 120 * S),
        ("3S", 3 * S),
        ("300m", 300 * MS),
        ("2500u", Duration::from_micros(2500)),
        ("750000n", Duration::from_nanos(750_000)),
    ];
    for (value, budget) in cases {
        let (res, elapsed, counters) = hang(&layer, grpc().header("grpc-timeout", value).body(()).unwrap()).await;
        assert_grpc_status(&res, "4", "deadline exceeded");
        assert_eq!(body(res).await, "", "{value}: trailers-only, no body");
        // Tokio's timer has millisecond resolution: a sub-millisecond budget
        // fires on the next millisecond.
        assert!(elapsed >= budget && elapsed <= budget + MS, "{value}: {elapsed:?}");
        assert_eq!((counters.calls(), counters.dropped()), (1, 1), "{value}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_http_header_sets_the_budget_in_milliseconds() {
    let layer = DeadlineLayer::builder("edge").build().unwrap();
    let (res, elapsed, counters) = hang(&layer, get().header("x-request-timeout-ms", "250").body(()).unwrap()).await;
    assert_eq!(res.status(), 504);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(body(res).await, EXCEEDED_BODY);
    assert_eq!(elapsed, 250 * MS);
    assert_eq!(counters.dropped(), 1);

    // Another header name, configured.
    let layer = DeadlineLayer::builder("edge")
        .header(http::HeaderName::from_static("x-budget"))
        .build()
        .unwrap();
    let (res, elapsed, _) = hang(
        &layer,
        get()
            .header("x-budget", "40")
            .header("x-request-timeout-ms", "10")
            .body(())
            .unwrap(),
    )
    .await;
    assert_eq!((res.status().as_u16(), elapsed), (504, 40 * MS));
}

#[tokio::test(start_paused = true)]
async fn malformed_timeouts_are_refused_without_calling_the_handler() {
    let layer = DeadlineLayer::builder("edge").timeout(S).build().unwrap();
    let grpc_values = ["", "10", "S", "123456789m", "10s", "1.5S", "-1S", " 1S", "10ms", "1x"];
    for value in grpc_values {
        // Over HTTP: 400 with a problem.
        let (res, elapsed, counters) = hang(&layer, get().header("grpc-timeout", value).body(()).unwrap()).await;
        assert_eq!(res.status(), 400, "{value:?}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert_eq!(body(res).await, MALFORMED_BODY);
        assert_eq!((elapsed, counters.calls()), (Duration::ZERO, 0), "{value:?}");
        // Over gRPC: INVALID_ARGUMENT, trailers-only.
        let (res, _, counters) = hang(&layer, grpc().header("grpc-timeout", value).body(()).unwrap()).await;
        assert_grpc_status(&res, "3", "malformed grpc-timeout");
        assert_eq!(counters.calls(), 0);
    }
    for value in ["", "1.5", "-1", "10ms", "1000000000000", "0x10"] {
        let (res, _, counters) = hang(&layer, get().header("x-request-timeout-ms", value).body(()).unwrap()).await;
        assert_eq!(res.status(), 400, "{value:?}");
        assert_eq!(body(res).await, MALFORMED_BODY);
        assert_eq!(counters.calls(), 0);
    }
    // A gRPC call whose HTTP header is malformed is told which header it was.
    let req = grpc().header("x-request-timeout-ms", "soon").body(()).unwrap();
    let (res, _, _) = hang(&layer, req).await;
    assert_grpc_status(&res, "3", "malformed timeout header");
    // Not UTF-8 at all.
    let value = http::HeaderValue::from_bytes(b"1\xffS").unwrap();
    let (res, _, _) = hang(&layer, grpc().header("grpc-timeout", value).body(()).unwrap()).await;
    assert_grpc_status(&res, "3", "malformed grpc-timeout");
}

#[tokio::test(start_paused = true)]
async fn absurd_budgets_are_capped() {
    let layer = DeadlineLayer::builder("edge").max_timeout(10 * S).build().unwrap();
    let (res, elapsed, _) = hang(&layer, grpc().header("grpc-timeout", "99999999H").body(()).unwrap()).await;
    assert_grpc_status(&res, "4", "deadline exceeded");
    assert_eq!(elapsed, 10 * S);
    let (res, elapsed, _) = hang(
        &layer,
        get().header("x-request-timeout-ms", "999999999999").body(()).unwrap(),
    )
    .await;
    assert_eq!((res.status().as_u16(), elapsed), (504, 10 * S));
    // The default cap is 5 minutes.
    let layer = DeadlineLayer::builder("edge").build().unwrap();
    let (_, elapsed, _) = hang(&layer, grpc().header("grpc-timeout", "1H").body(()).unwrap()).await;
    assert_eq!(elapsed, 300 * S);
}

#[tokio::test(start_paused = true)]
async fn the_shortest_budget_wins() {
    let layer = DeadlineLayer::builder("edge").timeout(300 * MS).build().unwrap();
    let cases = [
        (None, None, 300 * MS),
        (Some("200m"), None, 200 * MS),
        (None, Some("100"), 100 * MS),
        (Some("200m"), Some("100"), 100 * MS),
        (Some("50m"), Some("100"), 50 * MS),
        (Some("1S"), Some("900"), 300 * MS),
    ];
    for (grpc_timeout, header, expected) in cases {
        let mut req = get();
        if let Some(v) = grpc_timeout {
            req = req.header("grpc-timeout", v);
        }
        if let Some(v) = header {
            req = req.header("x-request-timeout-ms", v);
        }
        let (res, elapsed, _) = hang(&layer, req.body(()).unwrap()).await;
        assert_eq!(
            (res.status().as_u16(), elapsed),
            (504, expected),
            "{grpc_timeout:?} {header:?}"
        );
    }
    // Headers the layer is told not to read do not count.
    let layer = DeadlineLayer::builder("edge")
        .timeout(300 * MS)
        .no_header()
        .grpc_timeout(false)
        .build()
        .unwrap();
    let req = get()
        .header("grpc-timeout", "x")
        .header("x-request-timeout-ms", "10")
        .body(())
        .unwrap();
    let (res, elapsed, _) = hang(&layer, req).await;
    assert_eq!((res.status().as_u16(), elapsed), (504, 300 * MS));
    // An enclosing deadline, carried by the request, still holds.
    let layer = DeadlineLayer::builder("edge").timeout(300 * MS).build().unwrap();
    let req = get().extension(Deadline::after(70 * MS)).body(()).unwrap();
    let (res, elapsed, _) = hang(&layer, req).await;
    assert_eq!((res.status().as_u16(), elapsed), (504, 70 * MS));
}

#[tokio::test(start_paused = true)]
async fn the_inner_future_is_dropped_when_the_deadline_passes() {
    let layer = DeadlineLayer::builder("edge").timeout(300 * MS).build().unwrap();
    let counters = Counters::default();
    let mut svc = layer.layer(handler(&counters, None));
    svc.ready().await.unwrap();
    let mut call = pin!(svc.call(get().body(()).unwrap()));
    // Before the deadline, the work runs.
    tokio::time::advance(299 * MS).await;
    assert!(futures_poll(call.as_mut()).is_pending());
    assert_eq!(counters.dropped(), 0);
    tokio::time::advance(MS).await;
    let res = call.as_mut().await.unwrap();
    assert_eq!(res.status(), 504);
    // Dropped by the layer at the deadline, while its future is still held.
    assert_eq!(counters.dropped(), 1);
}

fn futures_poll<F: Future>(f: Pin<&mut F>) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    f.poll(&mut cx)
}

#[tokio::test(start_paused = true)]
async fn an_answer_in_time_passes_through_and_the_handler_sees_the_deadline() {
    let layer = DeadlineLayer::builder("edge").timeout(300 * MS).build().unwrap();
    let counters = Counters::default();
    let svc = layer.layer(handler(&counters, Some(100 * MS)));
    let res = svc.oneshot(get().body(()).unwrap()).await.unwrap();
    assert_eq!(res.status(), 200);
    // The handler read 200 ms left after its 100 ms of work.
    assert_eq!(body(res).await, "200");
    assert_eq!(counters.dropped(), 1);
}

#[tokio::test(start_paused = true)]
async fn without_any_budget_the_request_passes_untouched() {
    let layer = DeadlineLayer::builder("edge").build().unwrap();
    let counters = Counters::default();
    let svc = layer.layer(handler(&counters, Some(3600 * S)));
    let res = svc.oneshot(get().body(()).unwrap()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(body(res).await, "none");
}

#[tokio::test(start_paused = true)]
async fn a_zero_budget_is_exceeded_on_arrival() {
    let layer = DeadlineLayer::builder("edge").build().unwrap();
    let (res, elapsed, counters) = hang(&layer, grpc().header("grpc-timeout", "0m").body(()).unwrap()).await;
    assert_grpc_status(&res, "4", "deadline exceeded");
    assert_eq!((elapsed, counters.calls()), (Duration::ZERO, 0));
    let (res, _, counters) = hang(&layer, get().header("x-request-timeout-ms", "0").body(()).unwrap()).await;
    assert_eq!(res.status(), 504);
    assert_eq!(body(res).await, EXCEEDED_BODY);
    assert_eq!(counters.calls(), 0);
}

#[test]
fn build_refuses_impossible_settings() {
    assert_eq!(
        DeadlineLayer::builder("x").timeout(Duration::ZERO).build().unwrap_err(),
        ConfigError::ZeroTimeout
    );
    assert_eq!(
        DeadlineLayer::builder("x")
            .max_timeout(Duration::ZERO)
            .build()
            .unwrap_err(),
        ConfigError::ZeroMaxTimeout
    );
    assert_eq!(
        DeadlineLayer::builder("x")
            .timeout(10 * S)
            .max_timeout(5 * S)
            .build()
            .unwrap_err(),
        ConfigError::TimeoutOverMax {
            timeout: 10 * S,
            max: 5 * S
        }
    );
    assert_eq!(
        palisade_deadline::PropagateDeadlineLayer::builder("x")
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err(),
        ConfigError::ZeroTimeout
    );
    // Said as 0 ms in the header, every HTTP attempt would be refused unsent.
    let sub_millisecond = Duration::from_micros(500);
    assert_eq!(
        palisade_deadline::PropagateDeadlineLayer::builder("x")
            .timeout(sub_millisecond)
            .build()
            .unwrap_err(),
        ConfigError::TimeoutUnderHeaderUnit(sub_millisecond)
    );
    palisade_deadline::PropagateDeadlineLayer::builder("x")
        .timeout(sub_millisecond)
        .no_header()
        .build()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn every_value_of_a_repeated_timeout_header_counts() {
    let layer = DeadlineLayer::builder("edge").build().unwrap();
    // A gateway that appends its tighter budget after the caller's.
    let req = get()
        .header("x-request-timeout-ms", "5000")
        .header("x-request-timeout-ms", "100")
        .body(())
        .unwrap();
    let (res, elapsed, _) = hang(&layer, req).await;
    assert_eq!((res.status().as_u16(), elapsed), (504, 100 * MS));
    // The same lines folded into one by a proxy (RFC 9110 §5.3), empty
    // elements ignored.
    for folded in ["5000, 100", "5000,100", "5000 ,\t100", ",5000,,100,"] {
        let req = get().header("x-request-timeout-ms", folded).body(()).unwrap();
        let (res, elapsed, _) = hang(&layer, req).await;
        assert_eq!((res.status().as_u16(), elapsed), (504, 100 * MS), "{folded:?}");
    }
    for malformed in ["5000, soon", "100 200", ",", ""] {
        let req = get().header("x-request-timeout-ms", malformed).body(()).unwrap();
        let (res, elapsed, _) = hang(&layer, req).await;
        assert_eq!((res.status().as_u16(), elapsed), (400, Duration::ZERO), "{malformed:?}");
    }
    let req = grpc()
        .header("grpc-timeout", "1S")
        .header("grpc-timeout", "200m")
        .body(())
        .unwrap();
    let (_, elapsed, _) = hang(&layer, req).await;
    assert_eq!(elapsed, 200 * MS);
    // A malformed value is refused wherever it stands.
    let req = get()
        .header("x-request-timeout-ms", "100")
        .header("x-request-timeout-ms", "soon")
        .body(())
        .unwrap();
    let (res, elapsed, _) = hang(&layer, req).await;
    assert_eq!((res.status().as_u16(), elapsed), (400, Duration::ZERO));
    let req = grpc()
        .header("grpc-timeout", "1S")
        .header("grpc-timeout", "x")
        .body(())
        .unwrap();
    let (res, _, _) = hang(&layer, req).await;
    assert_grpc_status(&res, "3", "malformed grpc-timeout");
}

/// A streamed body that notes the current deadline each time it is polled.
struct Noting(Arc<std::sync::Mutex<Vec<Option<Deadline>>>>, usize);

impl http_body::Body for Noting {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0.lock().unwrap().push(Deadline::current());
        if self.1 == 0 {
            return std::task::Poll::Ready(None);
        }
        self.1 -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"chunk")))))
    }
}

#[tokio::test(start_paused = true)]
async fn a_streamed_body_runs_with_the_deadline_as_the_current_one() {
    // A server-streaming handler calls downstream services while its stream
    // is polled, after the response head: they must see the deadline too.
    let noted: Arc<std::sync::Mutex<Vec<Option<Deadline>>>> = Arc::default();
    let seen = noted.clone();
    let layer = DeadlineLayer::builder("stream")
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let svc = layer.layer(tower::service_fn(move |_: Request<()>| {
        let body = Noting(seen.clone(), 2);
        async move { Ok::<_, Infallible>(Response::new(body)) }
    }));
    let res = svc.oneshot(get().body(()).unwrap()).await.unwrap();
    let collected = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(collected, "chunkchunk");
    let noted = noted.lock().unwrap().clone();
    assert_eq!(noted.len(), 3);
    for deadline in noted {
        assert_eq!(
            deadline.map(|d| d.instant()),
            Some(started + Duration::from_millis(300))
        );
    }
}
