//! The gRPC retry policy (gRFC A6): retryable codes, commitment at the
//! head, server pushback, `grpc-previous-rpc-attempts`, streams of unknown
//! length replayed, the budget shared with HTTP.
#![cfg(not(loom))]

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, StreamBody};
use palisade_core::{BoxError, GrpcCode};
use palisade_retry::{
    Backoff, GRPC_PREVIOUS_RPC_ATTEMPTS, GrpcRetryLayer, HttpRetryLayer, Jitter, ReplayBody, RetryBudget,
};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const MS: Duration = Duration::from_millis(1);

/// How the server answers one attempt.
#[derive(Clone, Copy)]
enum Reply {
    /// A trailers-only response with this `grpc-status` and, maybe, pushback.
    TrailersOnly(&'static str, Option<&'static str>),
    /// `200 OK`, a message, and this status in the trailers.
    Streamed(&'static str),
}

/// What the server saw of one attempt.
#[derive(Debug, Clone)]
struct Seen {
    at: Duration,
    previous_attempts: Option<String>,
    body: Bytes,
}

type ReqBody = StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;
type ResBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

#[derive(Clone)]
struct Server {
    script: Arc<Mutex<VecDeque<Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    origin: Instant,
}

impl Server {
    fn new(script: impl IntoIterator<Item = Reply>) -> Self {
        Self {
            script: Arc::new(Mutex::new(script.into_iter().collect())),
            seen: Arc::default(),
            origin: Instant::now(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn service(
        &self,
    ) -> impl tower::Service<Request<ReplayBody<ReqBody>>, Response = Response<ResBody>, Error = BoxError> + Clone + use<>
    {
        let this = self.clone();
        tower::service_fn(move |req: Request<ReplayBody<ReqBody>>| {
            let this = this.clone();
            async move {
                let previous_attempts = req
                    .headers()
                    .get(GRPC_PREVIOUS_RPC_ATTEMPTS)
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = match req.into_body().collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(e) => return Err(e),
                };
                this.seen.lock().unwrap().push(Seen {
                    at: this.origin.elapsed(),
                    previous_attempts,
                    body,
                });
                let reply = {
                    let mut script = this.script.lock().unwrap();
                    if script.len() > 1 {
                        script.pop_front()
                    } else {
                        script.front().copied()
                    }
                }
                .expect("a scripted reply");
                let res = match reply {
                    Reply::TrailersOnly(status, pushback) => {
                        let mut res = Response::builder()
                            .header("content-type", "application/grpc")
                            .header("grpc-status", status);
                        if let Some(p) = pushback {
                            res = res.header("grpc-retry-pushback-ms", p);
                        }
                        res.body(Empty::new().map_err(never).boxed()).unwrap()
                    }
                    Reply::Streamed(status) => {
                        let mut trailers = HeaderMap::new();
                        trailers.insert("grpc-status", status.parse().unwrap());
                        let body = http_body_util::Full::new(Bytes::from_static(b"\0\0\0\0\x01\x07"))
                            .map_err(never)
                            .with_trailers(async move { Some(Ok::<_, BoxError>(trailers)) })
                            .boxed();
                        Response::builder()
                            .header("content-type", "application/grpc")
                            .body(body)
                            .unwrap()
                    }
                };
                Ok::<_, BoxError>(res)
            }
        })
    }
}

fn never(e: std::convert::Infallible) -> BoxError {
    match e {}
}

/// A unary call's request: one length-prefixed message in a stream of
/// unknown length, as tonic sends it.
fn call() -> Request<ReqBody> {
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x03"))),
        Ok(Frame::data(Bytes::from_static(b"sku"))),
    ];
    Request::post("http://inventory/inventory.v1.Inventory/GetStock")
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap()
}

fn grpc_status<B>(res: &Response<B>) -> Option<&str> {
    res.headers().get("grpc-status").map(|v| v.to_str().unwrap())
}

fn layer() -> palisade_retry::RetryBuilder<palisade_core::GrpcClassifier, palisade_retry::GrpcRequest> {
    GrpcRetryLayer::builder("inventory")
        .max_attempts(5)
        .backoff(Backoff::constant(100 * MS))
        .jitter(Jitter::None)
}

#[tokio::test(start_paused = true)]
async fn succeeds_after_two_unavailables_replaying_the_request_stream() {
    let server = Server::new([
        Reply::TrailersOnly("14", None),
        Reply::TrailersOnly("14", None),
        Reply::Streamed("0"),
    ]);
    let svc = layer().build().unwrap().layer(server.service());
    let res = svc.oneshot(call()).await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen.iter().map(|s| s.previous_attempts.clone()).collect::<Vec<_>>(),
        [None, Some("1".into()), Some("2".into())]
    );
    for s in &seen {
        assert_eq!(&s.body[..], b"\0\0\0\0\x03sku", "every attempt sends the same message");
    }
    assert_eq!(seen[1].at - seen[0].at, 100 * MS);
    assert_eq!(seen[2].at - seen[1].at, 100 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_non_retryable_status_is_returned_at_once() {
    for status in ["13", "4", "8", "3", "5"] {
        let server = Server::new([Reply::TrailersOnly(status, None), Reply::Streamed("0")]);
        let svc = layer().build().unwrap().layer(server.service());
        let res = svc.oneshot(call()).await.unwrap();
        assert_eq!(grpc_status(&res), Some(status));
        assert_eq!(server.seen().len(), 1, "status {status} is not retried");
    }
    // Unless configured retryable.
    let server = Server::new([Reply::TrailersOnly("8", None), Reply::Streamed("0")]);
    let svc = layer()
        .retry_codes([GrpcCode::Unavailable, GrpcCode::ResourceExhausted])
        .build()
        .unwrap()
        .layer(server.service());
    let res = svc.oneshot(call()).await.unwrap();
    assert_eq!(grpc_status(&res), None);
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_head_came_without_a_status_is_committed() {
    // UNAVAILABLE in the trailers, after a message: never retried.
    let server = Server::new([Reply::Streamed("14"), Reply::Streamed("0")]);
    let svc = layer().build().unwrap().layer(server.service());
    let res = svc.oneshot(call()).await.unwrap();
    let trailers = res.into_body().collect().await.unwrap().trailers().cloned().unwrap();
    assert_eq!(trailers["grpc-status"], "14");
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn server_pushback_sets_the_wait_and_a_bad_one_stops_retries() {
    let server = Server::new([Reply::TrailersOnly("14", Some("1500")), Reply::Streamed("0")]);
    let svc = layer().build().unwrap().layer(server.service());
    svc.oneshot(call()).await.unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].at - seen[0].at,
        1500 * MS,
        "the pushback, not the 100 ms backoff"
    );

    // Capped by max_pushback.
    let server = Server::new([Reply::TrailersOnly("14", Some("600000")), Reply::Streamed("0")]);
    let svc = layer()
        .max_pushback(Duration::from_secs(2))
        .build()
        .unwrap()
        .layer(server.service());
    svc.oneshot(call()).await.unwrap();
    let seen = server.seen();
    assert_eq!(seen[1].at - seen[0].at, Duration::from_secs(2));

    for bad in ["-1", "soon", "1.5", ""] {
        let server = Server::new([Reply::TrailersOnly("14", Some(bad)), Reply::Streamed("0")]);
        let svc = layer().build().unwrap().layer(server.service());
        let res = svc.oneshot(call()).await.unwrap();
        assert_eq!(grpc_status(&res), Some("14"));
        assert_eq!(server.seen().len(), 1, "pushback {bad:?} means do not retry");
    }
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_shared_with_http() {
    let budget = RetryBudget::builder().ratio(0.0).min_per_sec(1).build().unwrap();
    let http = HttpRetryLayer::builder("payments")
        .budget(budget.clone())
        .build()
        .unwrap();
    let grpc = layer().budget(budget.clone()).build().unwrap();
    assert_eq!(http.budget().unwrap().available(), grpc.budget().unwrap().available());
    let before = budget.available();
    assert!(before >= 1);

    let server = Server::new([Reply::TrailersOnly("14", None), Reply::Streamed("0")]);
    grpc.layer(server.service()).oneshot(call()).await.unwrap();
    assert_eq!(server.seen().len(), 2);
    assert_eq!(
        budget.available(),
        before - 1,
        "the gRPC retry drew on the shared budget"
    );
    assert_eq!(http.budget().unwrap().available(), before - 1);
}

#[tokio::test(start_paused = true)]
async fn attempts_run_out() {
    let server = Server::new([Reply::TrailersOnly("14", None)]);
    let svc = layer().max_attempts(3).build().unwrap().layer(server.service());
    let res = svc.oneshot(call()).await.unwrap();
    assert_eq!(grpc_status(&res), Some("14"));
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_sent_more_than_the_replay_limit_is_not_retried() {
    let server = Server::new([Reply::TrailersOnly("14", None), Reply::Streamed("0")]);
    let svc = layer().replay_limit(1024).build().unwrap().layer(server.service());
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from(vec![0u8; 600]))),
        Ok(Frame::data(Bytes::from(vec![1u8; 600]))),
    ];
    let big = Request::post("http://inventory/inventory.v1.Inventory/GetStock")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let res = svc.oneshot(big).await.unwrap();
    assert_eq!(grpc_status(&res), Some("14"));
    assert_eq!(server.seen().len(), 1, "1200 bytes sent, 1024 kept: not replayable");
    assert_eq!(server.seen()[0].body.len(), 1200, "the first attempt sent it all");
}

#[tokio::test(start_paused = true)]
async fn the_calls_own_grpc_timeout_bounds_all_its_attempts() {
    // gRFC A6: the call's deadline covers every attempt, not each one. tonic's
    // `Request::set_timeout` sends it as `grpc-timeout`.
    let server = Server::new([Reply::TrailersOnly("14", None)]);
    let mut req = call();
    req.headers_mut().insert("grpc-timeout", "250m".parse().unwrap());
    let res = layer()
        .no_budget()
        .build()
        .unwrap()
        .layer(server.service())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(grpc_status(&res), Some("14"));
    let at: Vec<_> = server.seen().iter().map(|s| s.at).collect();
    assert_eq!(at, [Duration::ZERO, 100 * MS, 200 * MS], "no wait past 250 ms");
}

#[tokio::test(start_paused = true)]
async fn the_calls_own_grpc_timeout_bounds_the_wait_for_readiness_too() {
    // The retry is due at 100 ms, but the channel has no room for it (its one
    // slot is taken) until past the call's 1 s: the call ends at 1 s with
    // `DeadlineExceeded`, and no second attempt is sent late.
    let server = Server::new([Reply::TrailersOnly("14", None)]);
    let room = Arc::new(tokio::sync::Semaphore::new(1));
    let svc = layer()
        .no_budget()
        .build()
        .unwrap()
        .layer(tower::limit::ConcurrencyLimit::with_semaphore(
            server.service(),
            room.clone(),
        ));
    let mut req = call();
    req.headers_mut().insert("grpc-timeout", "1S".parse().unwrap());
    let started = Instant::now();
    let mut call = std::pin::pin!(svc.oneshot(req));
    assert!(std::future::poll_fn(|cx| std::task::Poll::Ready(call.as_mut().poll(cx).is_pending())).await);
    let taken = room.clone().try_acquire_owned().expect("the first attempt is over");
    let err = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("answered by the call's deadline")
        .unwrap_err();
    assert!(err.is::<palisade_core::deadline::DeadlineExceeded>(), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    drop(taken);
    tokio::task::yield_now().await;
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_attempt_is_not_retried_one_never_sent_is() {
    // A gRPC method may not be safe to repeat, and a timed-out attempt may
    // have been processed: only an error proving the call was not sent is retried.
    for (error, calls) in [
        ((|| tower::timeout::error::Elapsed::new().into()) as fn() -> BoxError, 1),
        (
            || palisade_core::error::ConnectFailed::new("connection refused").into(),
            2,
        ),
    ] {
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = sent.clone();
        let failing = tower::service_fn(move |_: Request<ReplayBody<ReqBody>>| {
            let first = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
            async move {
                if first {
                    return Err(error());
                }
                let ok: Response<ResBody> = Response::builder()
                    .header("grpc-status", "0")
                    .body(Empty::<Bytes>::new().map_err(never).boxed())
                    .unwrap();
                Ok(ok)
            }
        });
        let result = layer()
            .no_budget()
            .build()
            .unwrap()
            .layer(failing)
            .oneshot(call())
            .await;
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), calls);
        assert_eq!(result.is_ok(), calls == 2);
    }
}
