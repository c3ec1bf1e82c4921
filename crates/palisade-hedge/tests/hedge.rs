//! The hedging layer on paused time.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use palisade_bulkhead::BulkheadLayer;
use palisade_core::BoxError;
use palisade_hedge::{ConfigError, HedgeLayer};
use palisade_retry::{ReplayBody, RetryBudget};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);

/// One attempt the downstream saw.
#[derive(Debug, Clone, PartialEq)]
struct Attempt {
    at: Duration,
    body: String,
    /// Dropped before it answered.
    dropped: bool,
}

/// A downstream whose n-th call (from 0) answers `plan(n)`: a latency and a
/// status.
#[derive(Clone)]
struct Downstream {
    seen: Arc<Mutex<Vec<Attempt>>>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
    origin: Instant,
    plan: Arc<dyn Fn(usize) -> (Duration, u16) + Send + Sync>,
}

struct DropMark(Arc<Mutex<Vec<Attempt>>>, usize);

impl Drop for DropMark {
    fn drop(&mut self) {
        self.0.lock().unwrap()[self.1].dropped = true;
    }
}

type Fut = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, BoxError>> + Send>>;

impl Downstream {
    fn new(plan: impl Fn(usize) -> (Duration, u16) + Send + Sync + 'static) -> Self {
        Self {
            seen: Arc::default(),
            calls: Arc::default(),
            origin: Instant::now(),
            plan: Arc::new(plan),
        }
    }

    fn attempts(&self) -> Vec<Attempt> {
        self.seen.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }

    fn service(
        &self,
    ) -> impl tower::Service<
        Request<ReplayBody<Full<Bytes>>>,
        Response = Response<Full<Bytes>>,
        Error = BoxError,
        Future = Fut,
    > + Clone {
        let this = self.clone();
        tower::service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
            let this = this.clone();
            let index = {
                let mut seen = this.seen.lock().unwrap();
                seen.push(Attempt {
                    at: this.origin.elapsed(),
                    body: String::new(),
                    dropped: false,
                });
                seen.len() - 1
            };
            let call = this.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (latency, status) = (this.plan)(call);
            Box::pin(async move {
                let mark = DropMark(this.seen.clone(), index);
                let body = req.into_body().collect().await?.to_bytes();
                this.seen.lock().unwrap()[index].body = String::from_utf8(body.to_vec()).unwrap();
                tokio::time::sleep(latency).await;
                std::mem::forget(mark);
                Ok(Response::builder()
                    .status(status)
                    .body(Full::from(format!("call {call}")))
                    .unwrap())
            }) as Fut
        })
    }
}

fn get() -> Request<Full<Bytes>> {
    Request::get("/search").body(Full::default()).unwrap()
}

async fn send(layer: &HedgeLayer, downstream: &Downstream, req: Request<Full<Bytes>>) -> (u16, String, Duration) {
    let started = Instant::now();
    let res = layer.layer(downstream.service()).oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    let body = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    (status, body, started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_percentile_hedge_fires_only_for_slow_calls() {
    // Calls take 10 ms, except the 101st (index 100), which takes 500 ms.
    let downstream = Downstream::new(|n| if n == 100 { (500 * MS, 200) } else { (10 * MS, 200) });
    let layer = HedgeLayer::builder("search")
        .percentile(0.99, 100, 100)
        .no_budget()
        .build()
        .unwrap();
    for _ in 0..100 {
        // Before 100 latencies were seen, nothing is hedged.
        let (status, _, elapsed) = send(&layer, &downstream, get()).await;
        assert_eq!((status, elapsed), (200, 10 * MS));
    }
    assert_eq!(downstream.attempts().len(), 100);
    assert_eq!(layer.current_delay(), Some(10 * MS));

    // The slow call is hedged at its p99, 10 ms; the hedge (10 ms) wins at
    // 20 ms and the original is dropped.
    downstream.clear();
    let (status, body, elapsed) = send(&layer, &downstream, get()).await;
    assert_eq!((status, body.as_str(), elapsed), (200, "call 101", 20 * MS));
    let attempts = downstream.attempts();
    assert_eq!(attempts.len(), 2);
    assert_eq!((attempts[0].at, attempts[0].dropped), (100 * 10 * MS, true));
    assert_eq!((attempts[1].at, attempts[1].dropped), (100 * 10 * MS + 10 * MS, false));

    // A fast call (10 ms, answered as the delay ends) is not hedged.
    downstream.clear();
    let (status, _, elapsed) = send(&layer, &downstream, get()).await;
    assert_eq!((status, elapsed), (200, 10 * MS));
    assert_eq!(downstream.attempts().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_loser_is_dropped_and_its_bulkhead_permit_released() {
    let downstream = Downstream::new(|n| {
        if n == 0 {
            (Duration::from_secs(60), 200)
        } else {
            (5 * MS, 200)
        }
    });
    let bulkhead = BulkheadLayer::builder("search").max_concurrent(2).build().unwrap();
    let handle = bulkhead.handle();
    let layer = HedgeLayer::builder("search")
        .delay(20 * MS)
        .no_budget()
        .build()
        .unwrap();
    let svc = layer.layer(bulkhead.layer(downstream.service()));
    let started = Instant::now();
    let res = svc.oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(started.elapsed(), 25 * MS);
    let attempts = downstream.attempts();
    assert!(attempts[0].dropped, "the slow original was dropped");
    assert!(!attempts[1].dropped);
    // Both permits are back.
    assert_eq!(handle.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_sends_no_hedge() {
    let downstream = Downstream::new(|_| (100 * MS, 200));
    let budget = RetryBudget::builder().ratio(0.0).min_per_sec(0).build().unwrap();
    assert!(!budget.withdraw());
    let layer = HedgeLayer::builder("search")
        .delay(10 * MS)
        .budget(budget)
        .build()
        .unwrap();
    let (status, _, elapsed) = send(&layer, &downstream, get()).await;
    assert_eq!((status, elapsed), (200, 100 * MS));
    assert_eq!(downstream.attempts().len(), 1);

    // A budget with room for one hedge pays for one, then none.
    let downstream = Downstream::new(|n| if n % 2 == 0 { (100 * MS, 200) } else { (MS, 200) });
    let budget = one_a_second();
    assert_eq!(budget.available(), 1);
    let layer = HedgeLayer::builder("search")
        .delay(10 * MS)
        .budget(budget.clone())
        .build()
        .unwrap();
    let (_, body, elapsed) = send(&layer, &downstream, get()).await;
    assert_eq!((body.as_str(), elapsed), ("call 1", 11 * MS));
    assert_eq!(budget.available(), 0);
    let (_, body, elapsed) = send(&layer, &downstream, get()).await;
    assert_eq!((body.as_str(), elapsed), ("call 2", 100 * MS));
    assert_eq!(downstream.attempts().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn unsafe_requests_are_never_hedged() {
    let downstream = Downstream::new(|_| (100 * MS, 200));
    let layer = HedgeLayer::builder("orders")
        .delay(10 * MS)
        .no_budget()
        .build()
        .unwrap();
    for method in [http::Method::POST, http::Method::PATCH] {
        let req = Request::builder()
            .method(method.clone())
            .body(Full::from("order"))
            .unwrap();
        let (status, _, elapsed) = send(&layer, &downstream, req).await;
        assert_eq!((status, elapsed), (200, 100 * MS), "{method}");
    }
    assert_eq!(downstream.attempts().len(), 2);

    // With an Idempotency-Key the POST may run twice: it is hedged, its body replayed.
    downstream.clear();
    let req = Request::post("/orders")
        .header("idempotency-key", "k-1")
        .body(Full::from("order"))
        .unwrap();
    let (_, _, elapsed) = send(&layer, &downstream, req).await;
    assert_eq!(elapsed, 100 * MS);
    let bodies: Vec<_> = downstream.attempts().into_iter().map(|a| a.body).collect();
    assert_eq!(bodies, ["order", "order"]);

    // A predicate decides instead of methods and key.
    downstream.clear();
    let layer = HedgeLayer::builder("grpc")
        .delay(10 * MS)
        .no_budget()
        .hedge_if(|_, uri, _| uri.path() == "/search.Search/Query")
        .build()
        .unwrap();
    let req = Request::post("/search.Search/Query").body(Full::default()).unwrap();
    send(&layer, &downstream, req).await;
    let req = Request::get("/search.Search/Other").body(Full::default()).unwrap();
    send(&layer, &downstream, req).await;
    assert_eq!(
        downstream.attempts().len(),
        3,
        "two attempts of the first call, one of the second"
    );
}

#[tokio::test(start_paused = true)]
async fn failures_do_not_win_and_at_most_max_attempts_are_in_flight() {
    // The original fails after 15 ms; hedges at 10 and 20 ms; the first
    // hedge fails at 40 ms, the second succeeds at 50 ms.
    let downstream = Downstream::new(|n| match n {
        0 => (15 * MS, 503),
        1 => (30 * MS, 500),
        _ => (30 * MS, 200),
    });
    let layer = HedgeLayer::builder("search")
        .delay(10 * MS)
        .max_attempts(3)
        .no_budget()
        .build()
        .unwrap();
    let (status, body, elapsed) = send(&layer, &downstream, get()).await;
    assert_eq!((status, body.as_str(), elapsed), (200, "call 2", 50 * MS));
    let at: Vec<_> = downstream.attempts().iter().map(|a| a.at).collect();
    assert_eq!(at, [Duration::ZERO, 10 * MS, 20 * MS], "no fourth attempt");

    // Every attempt fails: the first failure answers, once none is in flight.
    let downstream = Downstream::new(|n| (if n == 0 { 30 * MS } else { 5 * MS }, [503, 500][n.min(1)]));
    let layer = HedgeLayer::builder("search")
        .delay(10 * MS)
        .no_budget()
        .build()
        .unwrap();
    let (status, body, elapsed) = send(&layer, &downstream, get()).await;
    assert_eq!((status, body.as_str(), elapsed), (500, "call 1", 30 * MS));
}

#[tokio::test(start_paused = true)]
async fn a_failure_before_the_delay_is_answered_at_once() {
    let downstream = Downstream::new(|_| (5 * MS, 503));
    let layer = HedgeLayer::builder("search")
        .delay(10 * MS)
        .no_budget()
        .build()
        .unwrap();
    let (status, _, elapsed) = send(&layer, &downstream, get()).await;
    assert_eq!((status, elapsed), (503, 5 * MS));
    assert_eq!(downstream.attempts().len(), 1);
}

/// A request body arriving in pieces through a channel; its length is
/// announced, or unknown (a gRPC request stream).
struct Arriving {
    pieces: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
    len: Option<u64>,
}

impl http_body::Body for Arriving {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.pieces
            .poll_recv(cx)
            .map(|piece| piece.map(|p| Ok(http_body::Frame::data(p))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.len
            .map_or_else(http_body::SizeHint::default, http_body::SizeHint::with_exact)
    }
}

/// A downstream whose attempts read their request body in a task of their
/// own, as a connection does, and answer `statuses[n]` once it is whole.
fn uploads(
    statuses: &'static [u16],
    bodies: Arc<Mutex<Vec<Bytes>>>,
) -> impl tower::Service<Request<ReplayBody<Arriving>>, Response = Response<Full<Bytes>>, Error = BoxError, Future = Fut>
+ Clone {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tower::service_fn(move |req: Request<ReplayBody<Arriving>>| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let bodies = bodies.clone();
        let connection = tokio::spawn(async move {
            let body = req.into_body().collect().await?.to_bytes();
            bodies.lock().unwrap().push(body);
            Ok::<_, BoxError>(())
        });
        Box::pin(async move {
            connection.await??;
            Ok(Response::builder().status(statuses[n]).body(Full::default()).unwrap())
        }) as Fut
    })
}

/// Sends a request with head `head` through `svc`, its body `pieces[0]` at
/// once and `pieces[1]` at 20 ms, when it ends (its length announced as
/// `len`): the answer, and how long it took.
async fn upload<S>(
    svc: S,
    head: http::request::Builder,
    len: Option<u64>,
    pieces: [&'static [u8]; 2],
) -> (Response<Full<Bytes>>, Duration)
where
    S: tower::Service<Request<Arriving>, Response = Response<Full<Bytes>>, Error = BoxError> + Send + 'static,
    S::Future: Send,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(Bytes::from_static(pieces[0])).unwrap();
    let req = head.body(Arriving { pieces: rx, len }).unwrap();
    let started = Instant::now();
    let call = tokio::spawn(svc.oneshot(req));
    tokio::time::sleep(20 * MS).await;
    if !pieces[1].is_empty() {
        tx.send(Bytes::from_static(pieces[1])).unwrap();
    }
    drop(tx);
    let res = tokio::time::timeout(Duration::from_secs(1), call)
        .await
        .expect("an attempt was left waiting for its body")
        .unwrap()
        .unwrap();
    (res, started.elapsed())
}

/// A budget with room for one retry or hedge a second, and no more.
fn one_a_second() -> RetryBudget {
    RetryBudget::builder()
        .ratio(0.0)
        .min_per_sec(1)
        .window(Duration::from_secs(1))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_hedge_sent_while_the_body_arrives_leaves_the_original_its_body() {
    // The hedge fires at 10 ms, while the upload is half done; both attempts
    // read the rest as it arrives. The hedge fails, so the answer is the
    // original's, which must not be left waiting for its body.
    let bodies = Arc::default();
    let layer = HedgeLayer::builder("upload")
        .delay(10 * MS)
        .no_budget()
        .build()
        .unwrap();
    let svc = layer.layer(uploads(&[200, 503], Arc::clone(&bodies)));
    let (res, elapsed) = upload(svc, Request::put("/blob"), Some(2), [b"a", b"b"]).await;
    assert_eq!((res.status().as_u16(), elapsed), (200, 20 * MS));
    assert_eq!(*bodies.lock().unwrap(), ["ab", "ab"]);
}

#[tokio::test(start_paused = true)]
async fn a_grpc_request_stream_of_unknown_length_is_hedged() {
    let bodies = Arc::default();
    let layer = HedgeLayer::builder("search")
        .delay(10 * MS)
        .no_budget()
        .hedge_if(|_, uri, _| uri.path() == "/search.Search/Query")
        .build()
        .unwrap();
    // The original answers 503 once its body is read; the hedge wins.
    let svc = layer.layer(uploads(&[503, 200], Arc::clone(&bodies)));
    let head = Request::post("/search.Search/Query").header("content-type", "application/grpc");
    let (res, _) = upload(svc, head, None, [b"\0\0\0\0\x02hi", b""]).await;
    assert_eq!(res.status(), 200, "the hedge answered");
    assert_eq!(*bodies.lock().unwrap(), [&b"\0\0\0\0\x02hi"[..]; 2]);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_whose_body_cannot_be_replayed_costs_the_budget_nothing() {
    // The body claims 5 bytes and yields 20, past the 16 kept: by the time
    // the hedge is due, it cannot be sent again, and no hedge goes out.
    let budget = one_a_second();
    let bodies = Arc::default();
    let layer = HedgeLayer::builder("upload")
        .delay(10 * MS)
        .replay_limit(16)
        .budget(budget.clone())
        .build()
        .unwrap();
    let svc = layer.layer(uploads(&[200], Arc::clone(&bodies)));
    let (res, _) = upload(svc, Request::put("/blob"), Some(5), [b"0123456789abcdefghij", b""]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(bodies.lock().unwrap().len(), 1, "no hedge");
    assert_eq!(budget.available(), 1);
}

#[tokio::test(start_paused = true)]
async fn local_rejections_do_not_count_as_latencies() {
    // An open breaker inside the hedge answers at once; were those answers
    // counted, the percentile would fall to zero and every request would be
    // sent `max_attempts` times at once after recovery.
    let layer = HedgeLayer::builder("search")
        .percentile(0.5, 10, 10)
        .no_budget()
        .build()
        .unwrap();
    let open = tower::service_fn(|_: Request<ReplayBody<Full<Bytes>>>| async {
        Err::<Response<Full<Bytes>>, BoxError>(palisade_core::CircuitOpen::new("search", Duration::from_secs(5)).into())
    });
    for _ in 0..10 {
        let err = layer.layer(open).oneshot(get()).await.unwrap_err();
        assert!(err.is::<palisade_core::CircuitOpen>());
    }
    assert_eq!(layer.current_delay(), None, "no latency seen yet");

    // Real answers still count.
    let downstream = Downstream::new(|_| (10 * MS, 503));
    for _ in 0..10 {
        send(&layer, &downstream, get()).await;
    }
    assert_eq!(layer.current_delay(), Some(10 * MS));
}

#[tokio::test(start_paused = true)]
async fn originals_a_hedge_beat_keep_the_percentile_where_it_was() {
    // Of every 100 requests, 97 take 1 to 97 ms and 3 take a second; a hedge
    // (another replica) takes 5 ms. Hedging after the 95th percentile sends
    // a hedge for 5 % of requests: the 3 slow ones and the 2 slowest fast
    // ones. The slow originals never finish (a hedge beats them): were they
    // left out of the window, the percentile would sink to that of the fast
    // calls alone and hedge 8 % of requests, and more, the further it sank.
    let attempts: Arc<Mutex<std::collections::HashMap<u64, u32>>> = Arc::default();
    let downstream = {
        let attempts = attempts.clone();
        tower::service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
            let id: u64 = req.headers()["x-request"].to_str().unwrap().parse().unwrap();
            let attempt = {
                let mut attempts = attempts.lock().unwrap();
                let count = attempts.entry(id).or_default();
                *count += 1;
                *count
            };
            let latency = match (attempt, id % 100) {
                (2.., _) => 5 * MS,
                (_, fast @ 0..=96) => (fast as u32 + 1) * MS,
                _ => 1000 * MS,
            };
            async move {
                tokio::time::sleep(latency).await;
                Ok::<_, BoxError>(Response::new(Full::<Bytes>::default()))
            }
        })
    };
    let layer = HedgeLayer::builder("search")
        .percentile(0.95, 1000, 100)
        .no_budget()
        .build()
        .unwrap();
    let hedged = |ids: std::ops::Range<u64>| {
        let attempts = attempts.lock().unwrap();
        ids.filter(|id| attempts[id] > 1).count()
    };
    for id in 0..3000 {
        let req = Request::get("/search")
            .header("x-request", id.to_string())
            .body(Full::default())
            .unwrap();
        let res = layer.layer(downstream.clone()).oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(hedged(0..100), 0, "no hedge before 100 latencies were seen");
    assert_eq!(layer.current_delay(), Some(95 * MS));
    // Once the window of 1000 is full, 5 of every 100 (while it fills, 5 or 6).
    for hundred in 1..30 {
        let range = hundred * 100..(hundred + 1) * 100;
        let expected = if hundred < 10 { 5..=6 } else { 5..=5 };
        assert!(expected.contains(&hedged(range.clone())), "requests {range:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_budget_shared_with_the_retry_layer_counts_each_request_once() {
    let downstream = Downstream::new(|_| (MS, 200));
    let ok = tower::service_fn(|_: Request<ReplayBody<ReplayBody<Full<Bytes>>>>| async {
        Ok::<_, BoxError>(Response::new(Full::<Bytes>::default()))
    });
    let budget = RetryBudget::builder().ratio(0.2).min_per_sec(0).build().unwrap();
    let retry = palisade_retry::HttpRetryLayer::builder("search")
        .budget(budget.clone())
        .build()
        .unwrap();
    let hedge = HedgeLayer::builder("search")
        .delay(Duration::from_secs(1))
        .budget(budget.clone())
        .build()
        .unwrap();
    let mut svc = retry.layer(hedge.layer(ok));
    for _ in 0..160 {
        let res = svc.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    drop(svc);
    // 160 requests at 20 %: 32 retries or hedges, not 64.
    assert_eq!(budget.available(), 32);

    // A budget of the hedges' own is deposited in by the hedge layer.
    let own = RetryBudget::builder().ratio(0.2).min_per_sec(0).build().unwrap();
    let hedge = HedgeLayer::builder("search")
        .delay(Duration::from_secs(1))
        .own_budget(own.clone())
        .build()
        .unwrap();
    for _ in 0..160 {
        send(&hedge, &downstream, get()).await;
    }
    assert_eq!(own.available(), 32);
}

#[test]
fn build_refuses_impossible_settings() {
    let refused = |b: palisade_hedge::HedgeBuilder| b.build().unwrap_err();
    assert_eq!(
        refused(HedgeLayer::builder("x").max_attempts(1)),
        ConfigError::MaxAttempts(1)
    );
    assert_eq!(
        refused(HedgeLayer::builder("x").delay(Duration::ZERO)),
        ConfigError::ZeroDelay
    );
    assert_eq!(
        refused(HedgeLayer::builder("x").percentile(1.0, 10, 1)),
        ConfigError::Percentile(1.0)
    );
    assert_eq!(
        refused(HedgeLayer::builder("x").percentile(0.0, 10, 1)),
        ConfigError::Percentile(0.0)
    );
    assert!(matches!(
        refused(HedgeLayer::builder("x").percentile(f64::NAN, 10, 1)),
        ConfigError::Percentile(_)
    ));
    assert_eq!(
        refused(HedgeLayer::builder("x").percentile(0.9, 10, 11)),
        ConfigError::Samples {
            samples: 10,
            min_samples: 11
        }
    );
    assert_eq!(
        refused(HedgeLayer::builder("x").percentile(0.9, 0, 0)),
        ConfigError::Samples {
            samples: 0,
            min_samples: 0
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_keyed_hedge_answered_409_waits_for_the_original() {
    // The server runs the original under its key and answers a repeat of the
    // key with 409 while it does.
    let downstream = Downstream::new(|n| if n == 0 { (100 * MS, 201) } else { (MS, 409) });
    let layer = HedgeLayer::builder("orders")
        .delay(10 * MS)
        .no_budget()
        .build()
        .unwrap();
    let keyed = Request::post("/orders")
        .header("idempotency-key", "order-42")
        .body(Full::from("order"))
        .unwrap();
    let (status, body, elapsed) = send(&layer, &downstream, keyed).await;
    assert_eq!((status, body.as_str(), elapsed), (201, "call 0", 100 * MS));
    let attempts = downstream.attempts();
    assert_eq!(attempts.len(), 2);
    assert!(!attempts[0].dropped, "the original was not dropped for the 409");

    // Without a key, a 409 is an answer like any other 4xx.
    let downstream = Downstream::new(|n| if n == 0 { (100 * MS, 200) } else { (MS, 409) });
    let (status, _, elapsed) = send(&layer, &downstream, get()).await;
    assert_eq!((status, elapsed), (409, 11 * MS));
}

#[tokio::test(start_paused = true)]
async fn a_hedge_refused_on_this_side_leaves_the_original_its_answer_and_the_budget_its_retry() {
    // The bulkhead holds one call: the hedge is refused at once.
    let downstream = Downstream::new(|_| (30 * MS, 503));
    let bulkhead = BulkheadLayer::builder("search").max_concurrent(1).build().unwrap();
    let budget = one_a_second();
    let layer = HedgeLayer::builder("search")
        .delay(10 * MS)
        .budget(budget.clone())
        .build()
        .unwrap();
    let started = Instant::now();
    let res = layer
        .layer(bulkhead.layer(downstream.service()))
        .oneshot(get())
        .await
        .expect("the downstream's own answer");
    assert_eq!((res.status().as_u16(), started.elapsed()), (503, 30 * MS));
    assert_eq!(downstream.attempts().len(), 1, "the hedge never left");
    assert_eq!(budget.available(), 1, "its withdrawal was given back");
}

#[tokio::test(start_paused = true)]
async fn a_hedge_the_deadline_cut_after_it_went_out_keeps_its_draw_on_the_budget() {
    // The dependency takes a second for everyone; the request has 300 ms.
    // The hedge goes out at 50 ms and, like the original, is cut by the
    // deadline (less its 10 ms margin) at 290 ms: a duplicate reached the
    // dependency, so the budget keeps the retry it spent.
    let downstream = Downstream::new(|_| (1000 * MS, 200));
    let budget = one_a_second();
    let layer = HedgeLayer::builder("search")
        .delay(50 * MS)
        .budget(budget.clone())
        .build()
        .unwrap();
    let propagate = palisade_deadline::PropagateDeadlineLayer::builder("search")
        .build()
        .unwrap();
    let mut req = get();
    req.extensions_mut()
        .insert(palisade_core::deadline::Deadline::after(300 * MS));
    let started = Instant::now();
    let err = layer
        .layer(propagate.layer(downstream.service()))
        .oneshot(req)
        .await
        .unwrap_err();
    assert!(err.is::<palisade_core::deadline::DeadlineExceeded>(), "{err}");
    assert_eq!(started.elapsed(), 290 * MS);
    let attempts = downstream.attempts();
    assert_eq!(
        attempts.iter().map(|a| (a.at, a.dropped)).collect::<Vec<_>>(),
        [(Duration::ZERO, true), (50 * MS, true)]
    );
    assert_eq!(budget.available(), 0, "the hedge went out: its withdrawal stands");
}

#[tokio::test(start_paused = true)]
async fn a_keyed_original_answered_409_waits_for_the_hedge_running_under_the_key() {
    // The original's packets were held up: the hedge, sent at 10 ms, reached
    // the server first and runs under the key; the original then gets 409
    // at 30 ms. The hedge's 201 at 70 ms is the answer.
    let downstream = Downstream::new(|n| if n == 0 { (30 * MS, 409) } else { (60 * MS, 201) });
    let layer = HedgeLayer::builder("orders")
        .delay(10 * MS)
        .no_budget()
        .build()
        .unwrap();
    let keyed = || {
        Request::post("/orders")
            .header("idempotency-key", "order-42")
            .body(Full::from("order"))
            .unwrap()
    };
    let (status, body, elapsed) = send(&layer, &downstream, keyed()).await;
    assert_eq!((status, body.as_str(), elapsed), (201, "call 1", 70 * MS));
    assert!(
        !downstream.attempts()[1].dropped,
        "the hedge was not dropped for the 409"
    );

    // Should the hedge fail, the 409 answers.
    let downstream = Downstream::new(|n| if n == 0 { (30 * MS, 409) } else { (60 * MS, 503) });
    let (status, _, elapsed) = send(&layer, &downstream, keyed()).await;
    assert_eq!((status, elapsed), (409, 70 * MS));

    // Once the original got its 409, no further hedge goes out: it would get
    // the same. (Hedges due at 20 and 40 ms; the 409 comes at 30 ms.)
    let downstream = Downstream::new(|n| if n == 0 { (30 * MS, 409) } else { (60 * MS, 201) });
    let three = HedgeLayer::builder("orders")
        .delay(20 * MS)
        .max_attempts(3)
        .no_budget()
        .build()
        .unwrap();
    let (status, body, elapsed) = send(&three, &downstream, keyed()).await;
    assert_eq!((status, body.as_str(), elapsed), (201, "call 1", 80 * MS));
    assert_eq!(downstream.attempts().len(), 2);

    // With no hedge in flight yet, the 409 is the answer at once: the server
    // runs an earlier request with the key.
    let downstream = Downstream::new(|_| (5 * MS, 409));
    let (status, _, elapsed) = send(&layer, &downstream, keyed()).await;
    assert_eq!((status, elapsed), (409, 5 * MS));
}
