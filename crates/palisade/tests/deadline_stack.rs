//! A server's deadline reaching a client stack built in the canonical order
//! through `ServiceBuilderExt`: fallback → hedging → circuit breaker →
//! bulkhead → deadline propagation → a downstream that hangs.
#![cfg(feature = "full")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::{CircuitBreakerLayer, State};
use palisade::deadline::{DeadlineLayer, PropagateDeadlineLayer};
use palisade::fallback::{Failure, FallbackLayer, Reason};
use palisade::hedge::HedgeLayer;
use palisade::prelude::*;
use palisade::retry::ReplayBody;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

type Res = Response<Full<Bytes>>;

/// What the downstream saw of each attempt: its budget header and whether
/// it was dropped.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, bool)>>>);

struct Dropped(Seen, usize);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.0.lock().unwrap()[self.1].1 = true;
    }
}

#[tokio::test(start_paused = true)]
async fn the_servers_deadline_bounds_every_attempt_and_the_fallback_answers() {
    let seen = Seen::default();
    let downstream = {
        let seen = seen.clone();
        service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
            let budget = req.headers()["x-request-timeout-ms"].to_str().unwrap().to_owned();
            let index = {
                let mut attempts = seen.0.lock().unwrap();
                attempts.push((budget, false));
                attempts.len() - 1
            };
            let dropped = Dropped(seen.clone(), index);
            async move {
                let _dropped = dropped;
                std::future::pending::<Result<Res, BoxError>>().await
            }
        })
    };
    let breaker = CircuitBreakerLayer::builder("inventory").build().unwrap();
    let breaker_handle = breaker.handle();
    let bulkhead = BulkheadLayer::builder("inventory").max_concurrent(4).build().unwrap();
    let bulkhead_handle = bulkhead.handle();
    let fallback = FallbackLayer::builder("inventory")
        .fallback(service_fn(|failure: Failure<Res>| async move {
            match failure.reason() {
                Reason::DeadlineExceeded => Ok(Response::new(Full::from("stale stock"))),
                _ => Err(failure),
            }
        }))
        .build()
        .unwrap();
    let client = ServiceBuilder::new()
        .fallback(fallback)
        .hedge(
            HedgeLayer::builder("inventory")
                .delay(50 * MS)
                .no_budget()
                .build()
                .unwrap(),
        )
        .circuit_breaker(breaker)
        .bulkhead(bulkhead)
        .propagate_deadline(PropagateDeadlineLayer::builder("inventory").build().unwrap())
        .service(downstream);

    let server = ServiceBuilder::new()
        .deadline(DeadlineLayer::builder("edge").timeout(300 * MS).build().unwrap())
        .service(service_fn(move |_req: Request<()>| {
            let client = client.clone();
            // The handler calls the client: the deadline goes with it.
            async move {
                client
                    .oneshot(Request::get("/stock").body(Full::default()).unwrap())
                    .await
            }
        }));

    let started = Instant::now();
    let res = server.oneshot(Request::new(())).await.unwrap();
    assert_eq!(
        started.elapsed(),
        290 * MS,
        "both attempts end at the deadline less the margin"
    );
    assert_eq!(res.status(), 200);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "stale stock");
    // The original attempt got 290 ms, the hedge sent at 50 ms what was left.
    assert_eq!(
        *seen.0.lock().unwrap(),
        [("290".to_owned(), true), ("240".to_owned(), true)]
    );
    assert_eq!(bulkhead_handle.snapshot().in_flight, 0);
    // Running out of the request's time says nothing about the downstream.
    assert_eq!(breaker_handle.state(), State::Closed);
}
