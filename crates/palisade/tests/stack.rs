//! The layers composed in the canonical client order through
//! `ServiceBuilderExt`: what each layer sees of the others.
#![cfg(feature = "full")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::{CircuitBreakerBuilder, State};
use palisade::core::error::find;
use palisade::prelude::*;
use palisade::retry::{Backoff, Jitter, RetryLayer};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// A downstream that fails every call, counting them.
fn failing(calls: Arc<AtomicU32>) -> impl tower::Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(move |_: u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Err::<u32, BoxError>("connection reset".into()) }
    })
}

#[tokio::test(start_paused = true)]
async fn retry_stops_at_an_open_breaker_instead_of_retrying_it() {
    let calls = Arc::new(AtomicU32::new(0));
    let breaker = CircuitBreakerBuilder::consecutive("inventory")
        .consecutive_failures(2)
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    let client = ServiceBuilder::new()
        .retry_layer(
            RetryLayer::builder("inventory")
                .max_attempts(5)
                .backoff(Backoff::constant(Duration::from_millis(100)))
                .jitter(Jitter::None)
                .no_budget()
                .build()
                .unwrap(),
        )
        .circuit_breaker(breaker)
        .bulkhead(BulkheadLayer::builder("inventory").max_concurrent(4).build().unwrap())
        .service(failing(calls.clone()));

    let err = client.oneshot(1).await.unwrap_err();
    // Two real failures trip the breaker; the third attempt is rejected fast
    // and the retry policy gives up on it rather than spending attempts 4 and 5.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let open = find::<CircuitOpen>(&*err).expect("the breaker's rejection comes back to the caller");
    assert_eq!(open.name(), "inventory");
    assert_eq!(breaker_handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn the_breaker_does_not_count_bulkhead_rejections() {
    let breaker = CircuitBreakerBuilder::consecutive("reports")
        .consecutive_failures(1)
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    let bulkhead = BulkheadLayer::builder("reports").max_concurrent(1).build().unwrap();
    let client = ServiceBuilder::new()
        .circuit_breaker(breaker)
        .bulkhead(bulkhead)
        .service(service_fn(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, BoxError>(ms)
        }));

    let busy = tokio::spawn(client.clone().oneshot(1_000));
    tokio::task::yield_now().await;
    for _ in 0..3 {
        let err = client.clone().oneshot(1).await.unwrap_err();
        assert!(find::<BulkheadFull>(&*err).is_some(), "{err}");
    }
    // One consecutive failure would have opened it: the local rejections did not count.
    assert_eq!(breaker_handle.state(), State::Closed);
    tokio::time::advance(Duration::from_millis(1_000)).await;
    assert_eq!(busy.await.unwrap().unwrap(), 1_000);
    assert_eq!(client.oneshot(5).await.unwrap(), 5);
}
