//! Every palisade rejection answered with its gRPC status, trailers-only,
//! with pushback and RetryInfo, and nothing internal in the message.

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use http::{Request, Response};
use palisade_core::{BoxError, BulkheadFull, BulkheadTimeout, CircuitOpen, GrpcCode};
use palisade_grpc::{ConfigError, GrpcStatusLayer};
use prost::Message;
use tower::{Layer, Service, ServiceExt};

#[derive(Clone, PartialEq, Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// An error wrapping another, with text that must not reach the client.
#[derive(Debug)]
struct Wrapped(BoxError);

impl fmt::Display for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("db01.internal:5432 refused")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

async fn answer(layer: &GrpcStatusLayer, error: fn() -> BoxError) -> Response<String> {
    let failing = tower::service_fn(move |_req: Request<()>| async move {
        Err::<Response<String>, BoxError>(Box::new(Wrapped(error())))
    });
    layer.layer(failing).oneshot(Request::new(())).await.unwrap()
}

fn header<'a>(res: &'a Response<String>, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

fn details(res: &Response<String>) -> Option<(Status, RetryInfo)> {
    let value = header(res, "grpc-status-details-bin")?;
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD.decode(value).unwrap();
    let status = Status::decode(&bytes[..]).unwrap();
    assert_eq!(status.details.len(), 1);
    assert_eq!(status.details[0].type_url, "type.googleapis.com/google.rpc.RetryInfo");
    let info = RetryInfo::decode(&status.details[0].value[..]).unwrap();
    Some((status, info))
}

/// An error, the code it gets and the pushback it carries.
type Case = (fn() -> BoxError, &'static str, Option<&'static str>);

#[tokio::test]
async fn each_rejection_has_its_status() {
    let layer = GrpcStatusLayer::builder("inventory").build().unwrap();
    let cases: [Case; 9] = [
        (
            || CircuitOpen::new("upstream", Duration::from_millis(2_500)).into(),
            "14",
            Some("2500"),
        ),
        (
            || BulkheadFull::new("db", Duration::from_millis(100)).into(),
            "14",
            Some("100"),
        ),
        (
            || BulkheadTimeout::new("db", Duration::from_secs(1), Duration::from_micros(1_500)).into(),
            "14",
            Some("2"),
        ),
        (|| tower::load_shed::error::Overloaded::new().into(), "14", None),
        (|| tower::timeout::error::Elapsed::new().into(), "4", None),
        // No known wait (forced open, half-open probes all taken): no pushback.
        (|| CircuitOpen::new("upstream", Duration::ZERO).into(), "14", None),
        (
            || std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
            "14",
            None,
        ),
        (|| palisade_core::deadline::DeadlineExceeded.into(), "4", None),
        (|| "secret: connection string postgres://user:pw@db".into(), "2", None),
    ];
    for (error, code, pushback) in cases {
        let res = answer(&layer, error).await;
        assert_eq!(res.status(), 200, "trailers-only");
        assert_eq!(header(&res, "content-type"), Some("application/grpc"));
        assert_eq!(header(&res, "grpc-status"), Some(code));
        assert_eq!(header(&res, "grpc-retry-pushback-ms"), pushback);
        let message = header(&res, "grpc-message").unwrap();
        assert!(
            !message.contains("db01") && !message.contains("secret") && !message.contains("upstream"),
            "{message}"
        );
        assert_eq!(res.body(), "", "no messages");
        match (pushback, details(&res)) {
            (Some(ms), Some((status, info))) => {
                assert_eq!(status.code.to_string(), code);
                assert_eq!(status.message, message);
                let delay = info.retry_delay.unwrap();
                let sent = Duration::new(delay.seconds as u64, delay.nanos as u32);
                assert_eq!(sent.as_nanos().div_ceil(1_000_000).to_string(), ms);
            }
            (None, None) => {}
            (p, d) => panic!("pushback {p:?} but details {:?}", d.is_some()),
        }
    }
}

#[tokio::test]
async fn a_zero_wait_sends_no_pushback() {
    // A pushback of 0 would have clients retry at once into the same
    // rejection: their own backoff decides instead.
    let layer = GrpcStatusLayer::builder("inventory").build().unwrap();
    let zero: [fn() -> BoxError; 3] = [
        || BulkheadFull::new("db", Duration::ZERO).into(),
        || BulkheadTimeout::new("db", Duration::from_secs(1), Duration::ZERO).into(),
        || CircuitOpen::new("db", Duration::ZERO).into(),
    ];
    for error in zero {
        let res = answer(&layer, error).await;
        assert_eq!(header(&res, "grpc-status"), Some("14"));
        assert_eq!(header(&res, "grpc-retry-pushback-ms"), None);
    }
}

#[tokio::test]
async fn a_bulkhead_may_answer_resource_exhausted_and_retry_info_may_be_off() {
    let layer = GrpcStatusLayer::builder("inventory")
        .bulkhead_code(GrpcCode::ResourceExhausted)
        .retry_info(false)
        .build()
        .unwrap();
    let res = answer(&layer, || BulkheadFull::new("db", Duration::from_secs(1)).into()).await;
    assert_eq!(header(&res, "grpc-status"), Some("8"));
    assert_eq!(header(&res, "grpc-retry-pushback-ms"), Some("1000"));
    assert_eq!(header(&res, "grpc-status-details-bin"), None);
    // An open breaker is still UNAVAILABLE.
    let res = answer(&layer, || CircuitOpen::new("x", Duration::from_secs(1)).into()).await;
    assert_eq!(header(&res, "grpc-status"), Some("14"));
}

#[test]
fn only_unavailable_or_resource_exhausted_for_a_bulkhead() {
    for code in [GrpcCode::Internal, GrpcCode::Ok, GrpcCode::Unknown, GrpcCode::Aborted] {
        assert_eq!(
            GrpcStatusLayer::builder("x").bulkhead_code(code).build().unwrap_err(),
            ConfigError::BulkheadCode(code)
        );
    }
}

/// Fails its readiness with an open breaker; must never be called.
#[derive(Clone)]
struct Unready;

impl Service<Request<()>> for Unready {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<String>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Err(CircuitOpen::new("upstream", Duration::from_secs(3)).into()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        panic!("called without readiness")
    }
}

#[tokio::test]
async fn readiness_errors_are_answered_without_calling_the_service() {
    let layer = GrpcStatusLayer::builder("inventory").build().unwrap();
    let res = layer.layer(Unready).oneshot(Request::new(())).await.unwrap();
    assert_eq!(header(&res, "grpc-status"), Some("14"));
    assert_eq!(header(&res, "grpc-retry-pushback-ms"), Some("3000"));
}

#[tokio::test]
async fn responses_pass_through() {
    let layer = GrpcStatusLayer::builder("inventory").build().unwrap();
    let ok = tower::service_fn(|_req: Request<()>| async {
        Ok::<_, BoxError>(
            Response::builder()
                .header("grpc-status", "5")
                .body("kept".to_owned())
                .unwrap(),
        )
    });
    let res = layer.layer(ok).oneshot(Request::new(())).await.unwrap();
    assert_eq!(header(&res, "grpc-status"), Some("5"));
    assert_eq!(res.body(), "kept");
}

#[tokio::test]
async fn rejections_are_counted_by_reason() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let layer = metrics::with_local_recorder(&recorder, || GrpcStatusLayer::builder("inventory").build().unwrap());
    answer(&layer, || BulkheadFull::new("db", Duration::ZERO).into()).await;
    answer(&layer, || BulkheadFull::new("db", Duration::ZERO).into()).await;
    answer(&layer, || CircuitOpen::new("x", Duration::ZERO).into()).await;
    let counts: Vec<(String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let key = key.key();
            assert_eq!(key.name(), "palisade_grpc_rejections_total");
            let reason = key.labels().find(|l| l.key() == "reason").unwrap().value().to_owned();
            match value {
                DebugValue::Counter(n) if n > 0 => Some((reason, n)),
                _ => None,
            }
        })
        .collect();
    let mut counts = counts;
    counts.sort();
    assert_eq!(
        counts,
        [("bulkhead_full".to_owned(), 2), ("circuit_open".to_owned(), 1)]
    );
}

#[cfg(feature = "tonic")]
#[tokio::test]
async fn a_tonic_status_keeps_its_code_but_not_its_message() {
    let layer = GrpcStatusLayer::builder("inventory").build().unwrap();
    let res = answer(&layer, || {
        Box::new(tonic::Status::permission_denied("tenant 42 may not read db01"))
    })
    .await;
    assert_eq!(header(&res, "grpc-status"), Some("7"));
    assert_eq!(header(&res, "grpc-message"), Some("the call failed"));
}

/// The answer of a status layer over a lazy tonic channel to `endpoint`.
#[cfg(feature = "tonic")]
async fn through_channel(endpoint: String) -> Response<tonic::body::Body> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .unwrap()
        .connect_lazy();
    let layer = GrpcStatusLayer::builder("inventory").build().unwrap();
    let req = Request::builder()
        .uri("http://inventory/inventory.Inventory/Get")
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::default())
        .unwrap();
    layer.layer(channel).oneshot(req).await.unwrap()
}

#[cfg(feature = "tonic")]
#[tokio::test]
async fn a_tonic_channel_that_cannot_connect_is_unavailable() {
    // A refused connection: tonic's `ConnectError` around the I/O error.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let res = through_channel(format!("http://127.0.0.1:{port}")).await;
    assert_eq!(res.headers()["grpc-status"], "14");
    assert_eq!(res.headers()["grpc-message"], "the service is unreachable");
    // A socket that is not there: only tonic's `ConnectError` says the call
    // was never sent, as for a failed DNS lookup or TLS handshake.
    let absent = std::env::temp_dir().join(format!("palisade-grpc-{}-absent.sock", std::process::id()));
    let res = through_channel(format!("unix://{}", absent.display())).await;
    assert_eq!(res.headers()["grpc-status"], "14");
    assert_eq!(res.headers()["grpc-message"], "the service is unreachable");
    assert!(!res.headers().contains_key("grpc-retry-pushback-ms"));
}

/// tonic's `ConnectError` is a fallback: what palisade knows in the chain
/// decides first.
#[cfg(feature = "tonic")]
#[tokio::test]
async fn known_errors_under_a_tonic_connect_error_keep_their_status() {
    let layer = GrpcStatusLayer::builder("inventory").build().unwrap();
    let res = answer(&layer, || {
        Box::new(tonic::ConnectError(tower::timeout::error::Elapsed::new().into()))
    })
    .await;
    assert_eq!(header(&res, "grpc-status"), Some("4"));
    let res = answer(&layer, || {
        Box::new(tonic::ConnectError(Box::new(tonic::Status::permission_denied(
            "tls: bad certificate",
        ))))
    })
    .await;
    assert_eq!(header(&res, "grpc-status"), Some("7"));
    assert_eq!(header(&res, "grpc-message"), Some("the call failed"));
}

/// A breaker forced open by an operator cannot say when it will admit: it
/// sends no pushback, so a client backs off on its own schedule instead of
/// being told to retry at once into a breaker that will reject it again.
#[tokio::test(start_paused = true)]
async fn a_forced_open_breaker_leaves_the_wait_to_the_clients_backoff() {
    use std::sync::{Arc, Mutex};

    use palisade_circuit_breaker::CircuitBreakerBuilder;
    use palisade_retry::{GrpcRetryLayer, Jitter, ReplayBody};
    use tokio::time::Instant;

    type Body = ReplayBody<http_body_util::Empty<bytes::Bytes>>;

    let breaker = CircuitBreakerBuilder::consecutive("upstream").build().unwrap();
    breaker.handle().force_open();
    let routes = tower::service_fn(|_req: Request<Body>| async {
        Ok::<_, BoxError>(Response::new(String::from("never reached")))
    });
    let server = GrpcStatusLayer::builder("inventory")
        .build()
        .unwrap()
        .layer(breaker.layer(routes));

    let res = server
        .clone()
        .oneshot(Request::new(Body::up_to(Default::default(), 0)))
        .await
        .unwrap();
    assert_eq!(header(&res, "grpc-status"), Some("14"));
    assert_eq!(header(&res, "grpc-retry-pushback-ms"), None);
    assert_eq!(header(&res, "grpc-status-details-bin"), None);

    let sent = Arc::new(Mutex::new(Vec::new()));
    let recorded = {
        let sent = sent.clone();
        tower::service_fn(move |req: Request<Body>| {
            sent.lock().unwrap().push(Instant::now());
            server.clone().oneshot(req)
        })
    };
    let client = GrpcRetryLayer::builder("inventory")
        .jitter(Jitter::None)
        .build()
        .unwrap()
        .layer(recorded);
    let res = client
        .oneshot(Request::new(http_body_util::Empty::<bytes::Bytes>::new()))
        .await
        .unwrap();
    assert_eq!(header(&res, "grpc-status"), Some("14"));
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 3, "every attempt was made");
    assert!(
        sent.windows(2).all(|pair| pair[1] > pair[0]),
        "the retries waited: {sent:?}"
    );
}
