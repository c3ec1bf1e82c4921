//! The one-call gRPC stacks: the canonical order as a gRPC caller sees it,
//! parts replaced and removed, build errors, and the handle's JSON.
#![cfg(feature = "full")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::core::eos::AtEos;
use palisade::prelude::*;
use palisade::retry::{Backoff, GrpcRetryLayer, Jitter, ReplayBody};
use palisade::stack::{self, ConfigError};
use serde_json::json;
use tower::{Layer, ServiceExt, service_fn};

type Req = Request<ReplayBody<Full<Bytes>>>;

/// A channel answering every call trailers-only with `grpc-status`
/// `code`, recording the headers of every attempt.
fn channel(
    code: &'static str,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
) -> impl tower::Service<Req, Response = Response<Full<Bytes>>, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(move |req: Req| {
        seen.lock().unwrap().push(req.headers().clone());
        async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", code)
                    .body(Full::default())
                    .unwrap(),
            )
        }
    })
}

fn call() -> Request<Full<Bytes>> {
    Request::post("http://inventory.test/inventory.v1.Inventory/GetStock")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::default())
        .unwrap()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test(start_paused = true)]
async fn the_client_retry_does_not_retry_the_breakers_circuit_open_which_is_answered_unavailable() {
    let seen = Arc::default();
    let client = stack::grpc_client("inventory")
        .retry(
            GrpcRetryLayer::builder("inventory")
                .max_attempts(3)
                .backoff(Backoff::constant(Duration::from_millis(100)))
                .jitter(Jitter::None)
                .no_budget(),
        )
        .circuit_breaker(
            CircuitBreakerLayer::builder("inventory")
                .no_failure_rate()
                .consecutive_failures(2)
                .open_duration(Duration::from_secs(30))
                .classifier(AtEos(GrpcClassifier)),
        )
        .build()
        .unwrap()
        .layer(channel("14", Arc::clone(&seen)));

    // Two UNAVAILABLE attempts open the breaker; the third attempt meets it
    // open, and the retry gives up rather than retry the rejection.
    let res = client.clone().oneshot(call()).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(res.status(), 200);
    assert_eq!(header(res.headers(), "grpc-status"), Some("14"));
    assert_eq!(
        header(res.headers(), "grpc-message"),
        Some("the service is unavailable; try again later")
    );
    assert!(res.headers().contains_key("grpc-retry-pushback-ms"));

    // While open, a call never reaches the channel and is answered at once.
    let started = tokio::time::Instant::now();
    let res = client.oneshot(call()).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(header(res.headers(), "grpc-status"), Some("14"));
}

#[tokio::test(start_paused = true)]
async fn the_client_retries_unavailable_and_sends_each_attempt_what_is_left_as_grpc_timeout() {
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let client = stack::grpc_client("inventory")
        .deadline(Duration::from_secs(1))
        .retry(
            GrpcRetryLayer::builder("inventory")
                .max_attempts(2)
                .backoff(Backoff::constant(Duration::from_millis(300)))
                .jitter(Jitter::None)
                .no_budget(),
        )
        .build()
        .unwrap()
        .layer(channel("14", Arc::clone(&seen)));

    let res = client.oneshot(call()).await.unwrap();
    assert_eq!(header(res.headers(), "grpc-status"), Some("14"));
    let seen = seen.lock().unwrap();
    let timeouts: Vec<_> = seen.iter().map(|h| header(h, "grpc-timeout")).collect();
    // 1 s, then 700 ms after the 300 ms backoff, less the 10 ms margin.
    assert_eq!(timeouts, [Some("990000u"), Some("690000u")]);
    assert!(seen.iter().all(|h| !h.contains_key("x-request-timeout-ms")));
}

#[tokio::test(start_paused = true)]
async fn the_client_deadline_is_shortened_by_the_calls_own_grpc_timeout() {
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let client = stack::grpc_client("inventory")
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap()
        .layer(channel("0", Arc::clone(&seen)));

    let mut req = call();
    req.headers_mut().insert("grpc-timeout", "200m".parse().unwrap());
    let res = client.oneshot(req).await.unwrap();
    assert_eq!(header(res.headers(), "grpc-status"), Some("0"));
    assert_eq!(header(&seen.lock().unwrap()[0], "grpc-timeout"), Some("190000u"));
}

/// A service that never answers.
fn stalled()
-> impl tower::Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = BoxError, Future: Send> + Clone + Send
{
    service_fn(|_req: Request<Full<Bytes>>| async {
        std::future::pending::<()>().await;
        Ok::<_, BoxError>(Response::new(Full::default()))
    })
}

#[tokio::test(start_paused = true)]
async fn a_full_server_bulkhead_answers_trailers_only_unavailable_with_pushback() {
    let server = stack::grpc_server("inventory")
        .bulkhead(
            BulkheadLayer::builder("inventory")
                .max_concurrent(1)
                .retry_after(Duration::from_millis(200)),
        )
        .build()
        .unwrap()
        .layer(stalled());

    let first = tokio::spawn(server.clone().oneshot(call()));
    tokio::task::yield_now().await;
    let res = server.oneshot(call()).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(res.headers(), "content-type"), Some("application/grpc"));
    assert_eq!(header(res.headers(), "grpc-status"), Some("14"));
    assert_eq!(header(res.headers(), "grpc-retry-pushback-ms"), Some("200"));
    assert!(!first.is_finished());
    first.abort();
}

#[tokio::test(start_paused = true)]
async fn the_server_deadline_reads_grpc_timeout_and_answers_deadline_exceeded() {
    let server = stack::grpc_server("inventory").build().unwrap().layer(stalled());

    let mut req = call();
    req.headers_mut().insert("grpc-timeout", "50m".parse().unwrap());
    let started = tokio::time::Instant::now();
    let res = server.oneshot(req).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    assert_eq!(res.status(), 200);
    assert_eq!(header(res.headers(), "grpc-status"), Some("4"));
}

#[tokio::test(start_paused = true)]
async fn the_server_timeout_bounds_a_call_without_grpc_timeout() {
    let server = stack::grpc_server("inventory")
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .layer(stalled());

    let started = tokio::time::Instant::now();
    let res = server.oneshot(call()).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(header(res.headers(), "grpc-status"), Some("4"));
}

#[tokio::test(start_paused = true)]
async fn the_handles_list_the_parts_outermost_first_and_leave_removed_ones_out() {
    let client = stack::grpc_client("inventory")
        .deadline(Duration::from_secs(3))
        .build()
        .unwrap();
    let report = client.handle().snapshot();
    assert_eq!(
        client.handle().layers(),
        [
            "grpc_status",
            "deadline",
            "retry",
            "circuit_breaker",
            "bulkhead",
            "attempt_timeout"
        ]
    );
    assert_eq!(report["name"], "inventory");
    assert_eq!(report["layers"][0], json!({"layer": "grpc_status"}));
    assert_eq!(report["layers"][1], json!({"layer": "deadline", "timeout_ms": 3000}));
    assert_eq!(report["layers"][2]["name"], "inventory");
    assert_eq!(report["layers"][2]["budget"]["ratio"], 0.2);
    assert_eq!(report["layers"][3]["state"], "closed");
    assert_eq!(report["layers"][4]["limit"], 100);
    assert_eq!(
        report["layers"][5],
        json!({"layer": "attempt_timeout", "timeout_ms": 10000})
    );

    let server = stack::grpc_server("inventory").no_timeout().build().unwrap();
    assert_eq!(server.handle().layers(), ["grpc_status", "deadline", "bulkhead"]);
    let report = server.handle().snapshot();
    assert_eq!(report["layers"][1], json!({"layer": "deadline", "name": "inventory"}));
    assert_eq!(report["layers"][2]["limit"], 100);
    assert_eq!(report["layers"][2]["in_flight"], 0);

    let bare = stack::grpc_client("bare")
        .no_grpc_status()
        .no_retry()
        .no_circuit_breaker()
        .no_bulkhead()
        .no_attempt_timeout()
        .build()
        .unwrap();
    assert!(bare.handle().layers().is_empty());
}

#[test]
fn a_bad_part_is_a_build_error_under_its_slot() {
    let err = stack::grpc_server("inventory")
        .bulkhead(BulkheadLayer::builder("inventory").max_concurrent(0))
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::Bulkhead(_)), "{err:?}");
    let err = stack::grpc_client("inventory")
        .retry(GrpcRetryLayer::builder("inventory").max_attempts(0))
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::Retry(_)), "{err:?}");
    let err = stack::grpc_client("inventory")
        .deadline(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::Deadline(_)), "{err:?}");
    let err = stack::grpc_server("inventory")
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::Deadline(_)), "{err:?}");
}

/// A budget the stack is given in code may be longer than the 5 minutes a
/// caller's `grpc-timeout` is capped at.
#[tokio::test(start_paused = true)]
async fn a_deadline_longer_than_the_callers_cap_builds() {
    let ten_minutes = Duration::from_secs(600);
    let seen = Arc::default();
    let client = stack::grpc_client("exports")
        .deadline(ten_minutes)
        .attempt_timeout(Duration::from_secs(900))
        .build()
        .unwrap()
        .layer(channel("0", Arc::clone(&seen)));
    client.oneshot(call()).await.unwrap();
    let sent = header(&seen.lock().unwrap()[0], "grpc-timeout").unwrap().to_owned();
    assert_eq!(
        palisade::core::deadline::parse_grpc_timeout(sent.as_bytes()),
        Ok(Duration::from_millis(599_990)),
        "ten minutes less the margin: {sent}"
    );
    stack::grpc_server("exports").deadline(ten_minutes).build().unwrap();
}

#[tokio::test]
async fn a_streaming_call_is_in_flight_until_its_stream_ends() {
    use http_body_util::BodyExt;
    // A server-streaming handler answers its head at once and streams after:
    // the server's bulkhead counts the call until its stream ends.
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel::<Bytes>();
    let receiver = Arc::new(Mutex::new(Some(receiver)));
    let streaming = service_fn(move |_: Request<Full<Bytes>>| {
        let messages = receiver.lock().unwrap().take().expect("one call");
        async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .header("content-type", "application/grpc")
                    .body(Messages(messages))
                    .unwrap(),
            )
        }
    });
    let server = stack::grpc_server("inventory").build().unwrap();
    let handle = server.handle();
    let in_flight = || handle.snapshot()["layers"][2]["in_flight"].clone();
    let res = server.layer(streaming).oneshot(call()).await.unwrap();
    assert_eq!(in_flight(), 1, "the head is out, the stream is not");
    sender.send(Bytes::from_static(b"\0\0\0\0\x01\x07")).unwrap();
    drop(sender);
    let body = res.into_body().collect().await.unwrap();
    assert_eq!(body.to_bytes().len(), 6);
    assert_eq!(in_flight(), 0);
}

/// A response stream of the messages sent on a channel, ending when it closes.
struct Messages(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

impl http_body::Body for Messages {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|message| message.map(|m| Ok(http_body::Frame::data(m))))
    }
}
