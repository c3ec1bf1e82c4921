//! Services failing with an error type of their own (no `AsError` impl, not
//! a `BoxError`): the layers retry them by what their `source()` chain holds.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use palisade_core::{BoxError, CircuitOpen};
use palisade_retry::{Backoff, HttpRetryLayer, Jitter, ReplayBody, RetryLayer};
use tower::{Layer, ServiceExt, service_fn};

/// A client library's error: a message and, maybe, what caused it.
#[derive(Debug)]
struct ClientError {
    message: &'static str,
    cause: Option<BoxError>,
}

impl ClientError {
    fn caused_by(message: &'static str, cause: impl Into<BoxError>) -> Self {
        Self {
            message,
            cause: Some(cause.into()),
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

impl Error for ClientError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.cause.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

fn http_retry() -> HttpRetryLayer {
    HttpRetryLayer::builder("foreign")
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .jitter(Jitter::None)
        .no_budget()
        .build()
        .unwrap()
}

/// An HTTP downstream failing every call with `error()`, counting calls.
async fn http_calls(error: fn() -> ClientError) -> (u32, BoxError) {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let downstream = service_fn(move |_: Request<ReplayBody<Full<Bytes>>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { Err::<Response<()>, ClientError>(error()) }
    });
    let req = Request::get("http://upstream.test/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let err = http_retry().layer(downstream).oneshot(req).await.unwrap_err();
    (calls.load(Ordering::SeqCst), err)
}

#[tokio::test(start_paused = true)]
async fn a_foreign_timeout_is_retried_and_comes_back_as_itself() {
    let (calls, err) =
        http_calls(|| ClientError::caused_by("operation timed out", tower::timeout::error::Elapsed::new())).await;
    assert_eq!(calls, 3);
    let client = err
        .downcast_ref::<ClientError>()
        .expect("the downstream's own error type");
    assert_eq!(client.message, "operation timed out");
}

#[tokio::test(start_paused = true)]
async fn a_foreign_connect_error_is_retried() {
    let (calls, err) = http_calls(|| {
        ClientError::caused_by(
            "error trying to connect",
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        )
    })
    .await;
    assert_eq!(calls, 3);
    assert!(palisade_core::error::is_connect_error(&*err));
}

#[tokio::test(start_paused = true)]
async fn a_foreign_error_after_which_the_server_may_have_acted_is_not_retried() {
    let (calls, err) = http_calls(|| {
        ClientError::caused_by(
            "connection closed before message completed",
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        )
    })
    .await;
    assert_eq!(calls, 1);
    assert!(err.is::<ClientError>());
}

#[tokio::test(start_paused = true)]
async fn a_circuit_open_inside_a_foreign_error_is_never_retried() {
    let (calls, err) =
        http_calls(|| ClientError::caused_by("rejected", CircuitOpen::new("payments", Duration::from_secs(5)))).await;
    assert_eq!(calls, 1);
    let open = palisade_core::error::find::<CircuitOpen>(&*err).expect("still in the chain");
    assert_eq!(open.name(), "payments");
}

#[tokio::test(start_paused = true)]
async fn any_request_layer_retries_a_foreign_error_and_not_a_rejection() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let downstream = service_fn(move |n: u32| {
        let call = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            match (n, call) {
                // Fails twice, then answers.
                (1, 0 | 1) => Err(ClientError {
                    message: "flaky",
                    cause: None,
                }),
                (1, _) => Ok(n * 10),
                _ => Err(ClientError::caused_by(
                    "wrapped",
                    CircuitOpen::new("inventory", Duration::ZERO),
                )),
            }
        }
    });
    let retry = RetryLayer::builder("foreign")
        .max_attempts(4)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .jitter(Jitter::None)
        .no_budget()
        .build()
        .unwrap();
    let client = retry.layer(downstream);
    assert_eq!(client.clone().oneshot(1).await.unwrap(), 10);
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    calls.store(0, Ordering::SeqCst);
    let err = client.oneshot(2).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "a local rejection is not retried");
    assert_eq!(err.downcast_ref::<ClientError>().unwrap().message, "wrapped");
}
