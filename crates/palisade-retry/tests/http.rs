//! The HTTP retry policy: safe methods, Idempotency-Key, Retry-After,
//! per-status overrides, the attempt header and body replay.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, StreamBody};
use palisade_core::deadline::{Deadline, DeadlineExceeded};
use palisade_core::{BoxError, CircuitOpen};
use palisade_retry::{Backoff, HttpRetryLayer, Jitter, ReplayBody, X_RETRY_ATTEMPT};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// What the downstream saw of one attempt.
#[derive(Debug, Clone)]
struct Seen {
    at: Duration,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

#[derive(Clone, Copy)]
enum Reply {
    Status(u16),
    StatusWith(u16, &'static str, fn() -> String),
    /// Answers before reading the body.
    StatusUnread(u16),
    Error(fn() -> BoxError),
}

/// A downstream answering from a script (the last reply repeats) that reads
/// every request body whole, unless told not to.
#[derive(Clone)]
struct Downstream {
    script: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    origin: Instant,
}

impl Downstream {
    fn new(script: &[Reply]) -> Self {
        Self {
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            seen: Arc::default(),
            origin: Instant::now(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn times(&self) -> Vec<Duration> {
        self.seen().iter().map(|s| s.at).collect()
    }
}

impl<B> Service<Request<ReplayBody<B>>> for Downstream
where
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
    B::Data: Send,
{
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody<B>>) -> Self::Future {
        let reply = {
            let mut script = self.script.lock().unwrap();
            if script.len() > 1 {
                script.pop_front().unwrap()
            } else {
                script[0]
            }
        };
        let at = self.origin.elapsed();
        let seen = self.seen.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let (body, trailers) = if matches!(reply, Reply::StatusUnread(_)) {
                (Bytes::new(), None)
            } else {
                let collected = body.collect().await?;
                let trailers = collected.trailers().cloned();
                (collected.to_bytes(), trailers)
            };
            seen.lock().unwrap().push(Seen {
                at,
                method: parts.method,
                headers: parts.headers,
                body,
                trailers,
            });
            match reply {
                Reply::Status(status) | Reply::StatusUnread(status) => Ok(Response::builder()
                    .status(status)
                    .body(Full::<Bytes>::default())
                    .unwrap()),
                Reply::StatusWith(status, name, value) => Ok(Response::builder()
                    .status(status)
                    .header(name, value())
                    .body(Full::<Bytes>::default())
                    .unwrap()),
                Reply::Error(error) => Err(error()),
            }
        })
    }
}

fn policy() -> palisade_retry::RetryBuilder<palisade_core::HttpClassifier, palisade_retry::HttpRequest> {
    HttpRetryLayer::builder("retry")
        .no_budget()
        .backoff(Backoff::constant(100 * MS))
        .jitter(Jitter::None)
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::<Bytes>::default()).unwrap()
}

async fn send<B>(retry: HttpRetryLayer, downstream: &Downstream, req: Request<B>) -> Result<StatusCode, BoxError>
where
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
    B::Data: Send,
{
    retry
        .layer(downstream.clone())
        .oneshot(req)
        .await
        .map(|res| res.status())
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_gives_back_only_a_withdrawal_still_in_the_window() {
    // One retry a second over a 1 s window; the server asks for 5 s. The
    // caller gives up after 2 s, when the withdrawal no longer counts: giving
    // it back then would leave the budget one over what it allows.
    let budget = palisade_retry::RetryBudget::builder()
        .ratio(0.0)
        .min_per_sec(1)
        .window(S)
        .build()
        .unwrap();
    let downstream = Downstream::new(&[Reply::StatusWith(503, "retry-after", || "5".into())]);
    let retry = policy().budget(budget.clone()).build().unwrap();
    let call = tokio::spawn(retry.clone().layer(downstream.clone()).oneshot(get("/")));
    tokio::task::yield_now().await;
    assert_eq!(budget.available(), 0, "the retry took the one there was");
    tokio::time::advance(2 * S).await;
    assert_eq!(budget.available(), 1, "the withdrawal aged out");
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    assert_eq!(budget.available(), 1);

    // Cancelled while its withdrawal still counts, the wait gives it back.
    let call = tokio::spawn(retry.layer(downstream).oneshot(get("/")));
    tokio::task::yield_now().await;
    assert_eq!(budget.available(), 0);
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    assert_eq!(budget.available(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_wait_ends_past_the_deadline_the_request_carries() {
    // 100 ms waits; the request's deadline, in its extensions, is 250 ms
    // away: attempts at 0, 100 and 200 ms, and the wait to 300 ms is not taken.
    let downstream = Downstream::new(&[Reply::Status(503)]);
    let mut req = get("/");
    req.extensions_mut().insert(Deadline::after(250 * MS));
    let started = Instant::now();
    let p = policy().max_attempts(10).build().unwrap();
    assert_eq!(send(p, &downstream, req).await.unwrap(), 503);
    assert_eq!(downstream.times(), [Duration::ZERO, 100 * MS, 200 * MS]);
    assert_eq!(started.elapsed(), 200 * MS);

    // A Retry-After past the deadline: the response comes back at once.
    let downstream = Downstream::new(&[Reply::StatusWith(503, "retry-after", || "2".into()), Reply::Status(200)]);
    let mut req = get("/");
    req.extensions_mut().insert(Deadline::after(S));
    let started = Instant::now();
    assert_eq!(send(policy().build().unwrap(), &downstream, req).await.unwrap(), 503);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_passing_before_the_retry_can_be_sent_ends_the_call() {
    // The 503 asks for a retry in 100 ms; by then the downstream has no room
    // (its one permit is taken) until past the request's 1 s deadline. The
    // call ends at the deadline with `DeadlineExceeded`; nothing is resent.
    let downstream = Downstream::new(&[Reply::Status(503)]);
    let room = Arc::new(tokio::sync::Semaphore::new(1));
    let svc = policy()
        .build()
        .unwrap()
        .layer(tower::limit::ConcurrencyLimit::with_semaphore(
            downstream.clone(),
            room.clone(),
        ));
    let mut req = get("/");
    req.extensions_mut().insert(Deadline::after(S));
    let started = Instant::now();
    let call = tokio::spawn(svc.oneshot(req));
    tokio::task::yield_now().await;
    let taken = room.clone().try_acquire_owned().expect("the first attempt is over");
    let err = tokio::time::timeout(60 * S, call)
        .await
        .expect("answered by the deadline")
        .unwrap()
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(started.elapsed(), S);
    drop(taken);
    tokio::task::yield_now().await;
    assert_eq!(downstream.times(), [Duration::ZERO]);
}

/// A response body that notes when it is dropped.
struct Tracked(Arc<std::sync::atomic::AtomicBool>);

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(None)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_waiting_to_retry_holds_nothing_of_the_last_response() {
    // A response body may hold a connection, or a bulkhead permit until it
    // ends: the 503's is let go when the retry is decided, not kept through
    // the wait, deadline or not.
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let downstream = {
        let dropped = dropped.clone();
        tower::service_fn(move |_req: Request<ReplayBody<Full<Bytes>>>| {
            let body = Tracked(dropped.clone());
            async move { Ok::<_, BoxError>(Response::builder().status(503).body(body).unwrap()) }
        })
    };
    let mut req = get("/");
    req.extensions_mut().insert(Deadline::after(S));
    let mut call = std::pin::pin!(policy().build().unwrap().layer(downstream).oneshot(req));
    assert!(std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_pending())).await);
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "the 503 is let go during the backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn retryable_statuses_are_retried_and_others_returned() {
    for status in [408u16, 429, 500, 502, 503, 504] {
        let downstream = Downstream::new(&[Reply::Status(status), Reply::Status(200)]);
        assert_eq!(
            send(policy().build().unwrap(), &downstream, get("/")).await.unwrap(),
            200,
            "{status}"
        );
        assert_eq!(downstream.times(), [Duration::ZERO, 100 * MS], "{status}");
    }
    for status in [400u16, 401, 403, 404, 409, 422, 501, 505] {
        let downstream = Downstream::new(&[Reply::Status(status), Reply::Status(200)]);
        assert_eq!(
            send(policy().build().unwrap(), &downstream, get("/")).await.unwrap(),
            status
        );
        assert_eq!(downstream.seen().len(), 1, "{status} is not retried");
    }
    // After the last attempt the last response comes back.
    let downstream = Downstream::new(&[Reply::Status(503)]);
    assert_eq!(
        send(policy().build().unwrap(), &downstream, get("/")).await.unwrap(),
        503
    );
    assert_eq!(downstream.seen().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn per_status_overrides() {
    let downstream = Downstream::new(&[Reply::Status(404), Reply::Status(200)]);
    let p = policy().retry_status(StatusCode::NOT_FOUND, true).build().unwrap();
    assert_eq!(send(p, &downstream, get("/")).await.unwrap(), 200);
    assert_eq!(downstream.seen().len(), 2);

    let downstream = Downstream::new(&[Reply::Status(503), Reply::Status(200)]);
    let p = policy()
        .retry_status(StatusCode::SERVICE_UNAVAILABLE, false)
        .build()
        .unwrap();
    assert_eq!(send(p, &downstream, get("/")).await.unwrap(), 503);
    assert_eq!(downstream.seen().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn transport_errors_connect_and_timeout_are_retried_others_not() {
    let refused: fn() -> BoxError = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
    let timed_out: fn() -> BoxError = || tower::timeout::error::Elapsed::new().into();
    for error in [refused, timed_out] {
        let downstream = Downstream::new(&[Reply::Error(error), Reply::Status(200)]);
        assert_eq!(
            send(policy().build().unwrap(), &downstream, get("/")).await.unwrap(),
            200
        );
    }
    // A reset may have reached the server: returned as it is.
    let downstream = Downstream::new(&[Reply::Error(|| {
        std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()
    })]);
    let err = send(policy().build().unwrap(), &downstream, get("/"))
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<std::io::Error>().unwrap().kind(),
        std::io::ErrorKind::ConnectionReset
    );
    assert_eq!(downstream.seen().len(), 1);
    // The breaker's fast rejection is never retried.
    let downstream = Downstream::new(&[Reply::Error(|| CircuitOpen::new("payments", S).into())]);
    let err = send(policy().build().unwrap(), &downstream, get("/"))
        .await
        .unwrap_err();
    assert_eq!(err.downcast_ref::<CircuitOpen>().unwrap().name(), "payments");
    assert_eq!(downstream.seen().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn only_safe_methods_or_idempotency_keys_are_retried() {
    let safe = [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::TRACE,
    ];
    let unsafe_ = [Method::POST, Method::PATCH, Method::CONNECT];
    let cases = safe
        .into_iter()
        .map(|m| (m, 200, 2))
        .chain(unsafe_.into_iter().map(|m| (m, 503, 1)));
    for (method, status, attempts) in cases {
        let downstream = Downstream::new(&[Reply::Status(503), Reply::Status(200)]);
        let req = Request::builder()
            .method(method.clone())
            .body(Full::<Bytes>::default())
            .unwrap();
        assert_eq!(
            send(policy().build().unwrap(), &downstream, req).await.unwrap(),
            status,
            "{method}"
        );
        assert_eq!(downstream.seen().len(), attempts, "{method}");
    }
    // An Idempotency-Key makes a POST safe to repeat.
    let downstream = Downstream::new(&[Reply::Status(503), Reply::Status(201)]);
    let req = Request::post("/orders")
        .header("idempotency-key", "order-42")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    assert_eq!(send(policy().build().unwrap(), &downstream, req).await.unwrap(), 201);
    let seen = downstream.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.method == Method::POST && s.headers["idempotency-key"] == "order-42")
    );

    // Configurable: POST allowed outright, or keys ignored.
    let downstream = Downstream::new(&[Reply::Status(503), Reply::Status(200)]);
    let p = policy().retry_methods([Method::POST]).build().unwrap();
    assert_eq!(
        send(
            p,
            &downstream,
            Request::post("/").body(Full::<Bytes>::default()).unwrap()
        )
        .await
        .unwrap(),
        200
    );
    let downstream = Downstream::new(&[Reply::Status(503), Reply::Status(200)]);
    let p = policy().idempotency_key_header(None).build().unwrap();
    let req = Request::post("/")
        .header("idempotency-key", "k")
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(send(p, &downstream, req).await.unwrap(), 503);
}

#[tokio::test(start_paused = true)]
async fn a_409_to_a_keyed_request_waits_for_the_attempt_still_running() {
    // The server still runs the attempt this side gave up on; it answers a
    // repeat of the key with 409 and when to come back.
    let downstream = Downstream::new(&[Reply::StatusWith(409, "retry-after", || "2".into()), Reply::Status(201)]);
    let keyed = || {
        Request::post("/orders")
            .header("idempotency-key", "order-42")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    };
    assert_eq!(
        send(policy().build().unwrap(), &downstream, keyed()).await.unwrap(),
        201
    );
    assert_eq!(downstream.times(), [Duration::ZERO, 2 * S], "after its Retry-After");

    // Without a key, a 409 is the answer; so it is when told so.
    for (retry, req) in [
        (
            policy().build().unwrap(),
            Request::put("/orders/42").body(Full::<Bytes>::default()).unwrap(),
        ),
        (
            policy().retry_status(StatusCode::CONFLICT, false).build().unwrap(),
            keyed(),
        ),
    ] {
        let downstream = Downstream::new(&[Reply::Status(409), Reply::Status(201)]);
        assert_eq!(send(retry, &downstream, req).await.unwrap(), 409);
        assert_eq!(downstream.seen().len(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_in_seconds_and_as_a_date_capped() {
    // Seconds, instead of the 100 ms backoff.
    let downstream = Downstream::new(&[Reply::StatusWith(503, "retry-after", || "3".into()), Reply::Status(200)]);
    assert_eq!(
        send(policy().build().unwrap(), &downstream, get("/")).await.unwrap(),
        200
    );
    assert_eq!(downstream.times(), [Duration::ZERO, 3 * S]);

    // An HTTP-date ten whole seconds ahead: the wait is what is left of them.
    fn in_ten_seconds() -> String {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(now + 10))
    }
    let downstream = Downstream::new(&[
        Reply::StatusWith(429, "retry-after", in_ten_seconds),
        Reply::Status(200),
    ]);
    assert_eq!(
        send(policy().build().unwrap(), &downstream, get("/")).await.unwrap(),
        200
    );
    let waited = downstream.times()[1];
    assert!(waited > 9 * S && waited <= 10 * S, "{waited:?}");

    // A date in the past: at once.
    let downstream = Downstream::new(&[
        Reply::StatusWith(503, "retry-after", || "Sun, 06 Nov 1994 08:49:37 GMT".into()),
        Reply::Status(200),
    ]);
    assert_eq!(
        send(policy().build().unwrap(), &downstream, get("/")).await.unwrap(),
        200
    );
    assert_eq!(downstream.times(), [Duration::ZERO, Duration::ZERO]);

    // Capped by the configured maximum.
    let downstream = Downstream::new(&[
        Reply::StatusWith(503, "retry-after", || "120".into()),
        Reply::Status(200),
    ]);
    let p = policy().max_retry_after(5 * S).build().unwrap();
    assert_eq!(send(p, &downstream, get("/")).await.unwrap(), 200);
    assert_eq!(downstream.times(), [Duration::ZERO, 5 * S]);

    // Past the deadline: the response comes back at once instead.
    let downstream = Downstream::new(&[
        Reply::StatusWith(503, "retry-after", || "20".into()),
        Reply::Status(200),
    ]);
    let p = policy().deadline(10 * S).build().unwrap();
    let started = Instant::now();
    assert_eq!(send(p, &downstream, get("/")).await.unwrap(), 503);
    assert_eq!(started.elapsed(), Duration::ZERO);

    // Malformed: the backoff applies.
    let downstream = Downstream::new(&[
        Reply::StatusWith(503, "retry-after", || "soon".into()),
        Reply::Status(200),
    ]);
    assert_eq!(
        send(policy().build().unwrap(), &downstream, get("/")).await.unwrap(),
        200
    );
    assert_eq!(downstream.times(), [Duration::ZERO, 100 * MS]);
}

#[tokio::test(start_paused = true)]
async fn a_503_or_429_without_retry_after_uses_the_backoff() {
    let downstream = Downstream::new(&[
        Reply::Status(503),
        Reply::Status(429),
        Reply::Status(503),
        Reply::Status(200),
    ]);
    let p = policy().exponential_1s_to_8s().build().unwrap();
    assert_eq!(send(p, &downstream, get("/")).await.unwrap(), 200);
    assert_eq!(downstream.times(), [Duration::ZERO, S, 3 * S, 7 * S]);
}

#[tokio::test(start_paused = true)]
async fn the_attempt_header_numbers_retries() {
    let downstream = Downstream::new(&[Reply::Status(503)]);
    let p = policy().attempt_header(X_RETRY_ATTEMPT).build().unwrap();
    assert_eq!(send(p, &downstream, get("/")).await.unwrap(), 503);
    let numbers: Vec<Option<String>> = downstream
        .seen()
        .iter()
        .map(|s| s.headers.get("x-retry-attempt").map(|v| v.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(numbers, [None, Some("2".into()), Some("3".into())]);
    // Off by default.
    let downstream = Downstream::new(&[Reply::Status(503)]);
    send(policy().build().unwrap(), &downstream, get("/")).await.unwrap();
    assert!(
        downstream
            .seen()
            .iter()
            .all(|s| !s.headers.contains_key("x-retry-attempt"))
    );
}

/// A body of known length sent in several chunks, with trailers.
struct Chunked {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// The length it claims (may lie).
    claimed: u64,
}

impl Chunked {
    fn new(chunks: &[&'static str], trailers: bool) -> Self {
        let chunks: VecDeque<Bytes> = chunks.iter().map(|c| Bytes::from_static(c.as_bytes())).collect();
        let claimed = chunks.iter().map(|c| c.len() as u64).sum();
        let trailers = trailers.then(|| {
            let mut t = HeaderMap::new();
            t.insert("checksum", "abc".parse().unwrap());
            t
        });
        Self {
            chunks,
            trailers,
            claimed,
        }
    }
}

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.claimed)
    }
}

#[tokio::test(start_paused = true)]
async fn bodies_are_replayed_identically_on_every_attempt() {
    let downstream = Downstream::new(&[Reply::Status(503)]);
    let body = Chunked::new(&["{\"order\":", "42,", "\"qty\":3}"], true);
    let req = Request::put("/orders/42").body(body).unwrap();
    assert_eq!(send(policy().build().unwrap(), &downstream, req).await.unwrap(), 503);
    let seen = downstream.seen();
    assert_eq!(seen.len(), 3);
    for attempt in &seen {
        assert_eq!(attempt.body, "{\"order\":42,\"qty\":3}");
        assert_eq!(attempt.trailers.as_ref().unwrap()["checksum"], "abc");
    }

    // A full body at exactly the cap is replayed.
    let downstream = Downstream::new(&[Reply::Status(503)]);
    let payload = Bytes::from(vec![7u8; 1024]);
    let req = Request::put("/").body(Full::new(payload.clone())).unwrap();
    assert_eq!(
        send(policy().replay_limit(1024).build().unwrap(), &downstream, req)
            .await
            .unwrap(),
        503
    );
    assert_eq!(downstream.seen().len(), 3);
    assert!(downstream.seen().iter().all(|s| s.body == payload));
}

#[tokio::test(start_paused = true)]
async fn a_body_the_first_attempt_did_not_read_is_sent_whole_on_the_retry() {
    let downstream = Downstream::new(&[Reply::StatusUnread(503), Reply::Status(200)]);
    let req = Request::put("/").body(Chunked::new(&["a", "b", "c"], false)).unwrap();
    assert_eq!(send(policy().build().unwrap(), &downstream, req).await.unwrap(), 200);
    let seen = downstream.seen();
    assert_eq!(seen[0].body, "");
    assert_eq!(seen[1].body, "abc");
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_cap_or_of_unknown_length_are_sent_once() {
    // Over the cap (default 64 KiB).
    let downstream = Downstream::new(&[Reply::Status(503), Reply::Status(200)]);
    let big = Bytes::from(vec![1u8; 64 * 1024 + 1]);
    let req = Request::put("/").body(Full::new(big.clone())).unwrap();
    assert_eq!(send(policy().build().unwrap(), &downstream, req).await.unwrap(), 503);
    assert_eq!(downstream.seen().len(), 1);
    assert_eq!(downstream.seen()[0].body, big, "sent once, whole");

    // A stream of unknown length.
    let downstream = Downstream::new(&[Reply::Status(503), Reply::Status(200)]);
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(Bytes::from_static(b"x"))),
        Ok(Frame::data(Bytes::from_static(b"y"))),
    ];
    let req = Request::put("/")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    assert_eq!(send(policy().build().unwrap(), &downstream, req).await.unwrap(), 503);
    assert_eq!(downstream.seen().len(), 1);
    assert_eq!(downstream.seen()[0].body, "xy");

    // A body that claims to fit but yields more: sent whole, not retried.
    let downstream = Downstream::new(&[Reply::Status(503), Reply::Status(200)]);
    let mut liar = Chunked::new(&["0123456789", "0123456789"], false);
    liar.claimed = 5;
    let req = Request::put("/").body(liar).unwrap();
    assert_eq!(
        send(policy().replay_limit(16).build().unwrap(), &downstream, req)
            .await
            .unwrap(),
        503
    );
    assert_eq!(downstream.seen().len(), 1);
    assert_eq!(downstream.seen()[0].body, "01234567890123456789");
}

/// A request body arriving in pieces through a channel, its length announced
/// up front (as a proxied upload with a `content-length`).
struct Arriving {
    pieces: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
    len: u64,
}

impl Body for Arriving {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.pieces.poll_recv(cx).map(|piece| piece.map(|p| Ok(Frame::data(p))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

fn arriving(len: u64) -> (tokio::sync::mpsc::UnboundedSender<Bytes>, ReplayBody<Arriving>) {
    let (tx, pieces) = tokio::sync::mpsc::unbounded_channel();
    (tx, ReplayBody::new(Arriving { pieces, len }, 64))
}

/// The whole body a reader task collected, failing if it was left waiting.
async fn collected(reader: tokio::task::JoinHandle<Result<http_body_util::Collected<Bytes>, BoxError>>) -> Bytes {
    tokio::time::timeout(S, reader)
        .await
        .expect("a reader was left waiting for the body")
        .unwrap()
        .unwrap()
        .to_bytes()
}

#[tokio::test(start_paused = true)]
async fn clones_read_at_once_each_get_the_whole_body_as_it_arrives() {
    // A hedge reads the body beside the attempt it hedges, each from its own
    // task (its connection's). The original body wakes only the reader that
    // polled it last; the other must be woken too.
    let (tx, original) = arriving(2);
    let hedge = original.try_clone().unwrap();
    tx.send(Bytes::from_static(b"a")).unwrap();
    let first = tokio::spawn(original.collect());
    tokio::time::sleep(MS).await;
    let second = tokio::spawn(hedge.collect());
    tokio::time::sleep(MS).await;
    // Both have read "a" and wait, the body holding the second's waker.
    tx.send(Bytes::from_static(b"b")).unwrap();
    drop(tx);
    assert_eq!(collected(first).await, "ab");
    assert_eq!(collected(second).await, "ab");
}

#[tokio::test(start_paused = true)]
async fn a_reader_dropped_while_waiting_leaves_the_others_woken() {
    let (tx, original) = arriving(1);
    let hedge = original.try_clone().unwrap();
    let first = tokio::spawn(original.collect());
    tokio::time::sleep(MS).await;
    let second = tokio::spawn(hedge.collect());
    tokio::time::sleep(MS).await;
    // The body holds the second reader's waker; that reader goes (the hedge
    // lost), and the first must still hear of what arrives.
    second.abort();
    assert!(second.await.unwrap_err().is_cancelled());
    tx.send(Bytes::from_static(b"a")).unwrap();
    drop(tx);
    assert_eq!(collected(first).await, "a");
}

#[tokio::test(start_paused = true)]
async fn trailers_are_replayed_to_a_clone_after_a_reader_stopped_at_them() {
    // A sender stops polling once it has the trailers, the last frame of a
    // body (hyper does); a clone that catches up gets them from the copy.
    let original = ReplayBody::new(Chunked::new(&["a"], true), 64);
    let mut first = original.try_clone().unwrap();
    let data = first.frame().await.unwrap().unwrap();
    assert_eq!(data.into_data().unwrap(), "a");
    let trailers = first.frame().await.unwrap().unwrap().into_trailers().unwrap();
    assert_eq!(trailers["checksum"], "abc");
    let replayed = original.collect().await.unwrap();
    assert_eq!(
        replayed.trailers().map(|t| &t["checksum"]),
        Some(&"abc".parse().unwrap())
    );
    assert_eq!(replayed.to_bytes(), "a");
}

#[tokio::test(start_paused = true)]
async fn replay_body_clones_and_limits() {
    let body = ReplayBody::new(Full::new(Bytes::from_static(b"hello")), 5);
    assert!(body.is_replayable());
    let clone = body.try_clone().unwrap();
    assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
    assert_eq!(clone.size_hint().exact(), Some(5));
    assert_eq!(clone.collect().await.unwrap().to_bytes(), "hello");

    let once = ReplayBody::new(Full::new(Bytes::from_static(b"hello")), 4);
    assert!(!once.is_replayable());
    assert!(once.try_clone().is_none());

    let empty = ReplayBody::new(Full::new(Bytes::new()), 0);
    assert!(empty.is_end_stream());
    assert!(empty.try_clone().is_some());
}
