//! A downstream whose every call says how it ends, for the breaker's tests.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use palisade_circuit_breaker::State;
use palisade_core::CircuitOpen;
use palisade_core::{BoxError, BulkheadFull};
use tokio::sync::Notify;
use tower::{Service, ServiceExt};

/// What the downstream does with a call.
#[derive(Debug, Clone)]
pub enum Call {
    Ok,
    Fail,
    /// Fails with a local rejection, which the breaker ignores.
    Ignore,
    /// Takes this long, then succeeds (false) or fails (true).
    Slow(Duration, bool),
    /// Waits for the notify, then succeeds.
    Gate(Arc<Notify>),
    /// Waits for the notify, then fails if the flag is set.
    Until(Arc<Notify>, Arc<std::sync::atomic::AtomicBool>),
}

/// The downstream's error.
#[derive(Debug, PartialEq, Eq)]
pub struct Boom;

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}

impl std::error::Error for Boom {}

/// A downstream counting the calls that reached it.
#[derive(Debug, Clone, Default)]
pub struct Downstream {
    pub reached: Arc<AtomicUsize>,
}

impl Downstream {
    pub fn reached(&self) -> usize {
        self.reached.load(Ordering::SeqCst)
    }
}

impl Service<Call> for Downstream {
    type Response = &'static str;
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<&'static str, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        self.reached.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match call {
                Call::Ok => Ok("ok"),
                Call::Fail => Err(Boom.into()),
                Call::Ignore => Err(BulkheadFull::new("pool", Duration::from_secs(1)).into()),
                Call::Slow(d, fail) => {
                    tokio::time::sleep(d).await;
                    if fail { Err(Boom.into()) } else { Ok("ok") }
                }
                Call::Gate(notify) => {
                    notify.notified().await;
                    Ok("ok")
                }
                Call::Until(notify, fail) => {
                    notify.notified().await;
                    if fail.load(Ordering::SeqCst) {
                        Err(Boom.into())
                    } else {
                        Ok("ok")
                    }
                }
            }
        })
    }
}

/// One call through `svc`, readiness first.
pub async fn call<S>(svc: &mut S, call: Call) -> Result<&'static str, BoxError>
where
    S: Service<Call, Response = &'static str, Error = BoxError>,
{
    svc.ready().await?.call(call).await
}

/// The rejection in `result`, if the breaker rejected it.
pub fn rejection(result: &Result<&'static str, BoxError>) -> Option<CircuitOpen> {
    result
        .as_ref()
        .err()
        .and_then(|e| e.downcast_ref::<CircuitOpen>())
        .cloned()
}

/// Asserts the call was rejected with exactly `retry_after`.
#[track_caller]
pub fn assert_rejected(result: &Result<&'static str, BoxError>, retry_after: Duration) {
    let open = rejection(result).unwrap_or_else(|| panic!("expected a rejection, got {result:?}"));
    assert_eq!(open.retry_after(), retry_after);
}

#[track_caller]
pub fn assert_state(handle: &palisade_circuit_breaker::CircuitBreakerHandle, state: State) {
    assert_eq!(handle.state(), state);
}
