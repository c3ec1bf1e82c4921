//! The one-call stacks: the canonical order as a caller sees it, parts
//! replaced and removed, build errors, and the handle's JSON.
#![cfg(feature = "full")]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerLayer};
use palisade::core::error::find;
use palisade::prelude::*;
use palisade::retry::{Backoff, HttpRetryLayer, Jitter, ReplayBody};
use palisade::stack::{self, ConfigError};
use serde_json::json;
use tower::{Layer, ServiceExt, service_fn};

type Req = Request<ReplayBody<Full<Bytes>>>;

/// What the downstream saw of one attempt.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    key: Option<String>,
}

/// A downstream answering from a script of (status, delay) (the last one
/// repeats), recording every attempt.
fn downstream(
    script: &'static [(u16, u64)],
    seen: Arc<Mutex<Vec<Seen>>>,
) -> impl tower::Service<Req, Response = Response<Full<Bytes>>, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(move |req: Req| {
        let n = {
            let mut seen = seen.lock().unwrap();
            seen.push(Seen {
                method: req.method().clone(),
                key: req
                    .headers()
                    .get("idempotency-key")
                    .map(|v| v.to_str().unwrap().to_owned()),
            });
            seen.len() - 1
        };
        let (status, delay_ms) = script[n.min(script.len() - 1)];
        async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            Ok::<_, BoxError>(Response::builder().status(status).body(Full::default()).unwrap())
        }
    })
}

fn post() -> Request<Full<Bytes>> {
    Request::post("http://payments.test/charges")
        .body(Full::new(Bytes::from_static(b"{\"amount\":10}")))
        .unwrap()
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://payments.test/balance")
        .body(Full::default())
        .unwrap()
}

fn quick_retry(name: &str, attempts: u32) -> HttpRetryLayer {
    HttpRetryLayer::builder(name)
        .max_attempts(attempts)
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .jitter(Jitter::None)
        .no_budget()
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_default_client_stack_keys_a_post_once_and_retries_it_with_that_key() {
    let seen = Arc::default();
    let client = stack::client("payments")
        .build()
        .unwrap()
        .layer(downstream(&[(503, 0), (503, 0), (200, 0)], Arc::clone(&seen)));
    let res = client.oneshot(post()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "a keyed POST is retried: {seen:?}");
    let key = seen[0].key.clone().expect("the key was added");
    assert!(
        seen.iter()
            .all(|s| s.method == Method::POST && s.key.as_deref() == Some(&*key))
    );
}

#[tokio::test(start_paused = true)]
async fn the_retry_sees_the_breakers_rejection_and_stops() {
    let seen = Arc::default();
    let payments = stack::client("payments")
        .retry(quick_retry("payments", 5))
        .circuit_breaker(
            CircuitBreakerBuilder::consecutive("payments")
                .classifier(HttpClassifier)
                .consecutive_failures(2),
        )
        .build()
        .unwrap();
    let handle = payments.handle();
    let client = payments.layer(downstream(&[(503, 0)], Arc::clone(&seen)));
    let err = client.oneshot(get()).await.unwrap_err();
    // Two 503s open the breaker; its CircuitOpen ends the retries at once.
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(find::<CircuitOpen>(&*err).map(CircuitOpen::name), Some("payments"));
    assert_eq!(handle.snapshot()["layers"][2]["state"], "open");
}

#[tokio::test(start_paused = true)]
async fn a_slow_attempt_times_out_inside_the_retry_and_is_retried() {
    let seen = Arc::default();
    let client = stack::client("payments")
        .retry(quick_retry("payments", 3))
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(downstream(&[(200, 5_000), (200, 0)], Arc::clone(&seen)));
    let res = client.oneshot(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_bulkhead_sits_inside_the_breaker_and_the_retry() {
    let seen = Arc::default();
    let client = stack::client("reports")
        .retry(quick_retry("reports", 3))
        .circuit_breaker(
            CircuitBreakerBuilder::consecutive("reports")
                .classifier(HttpClassifier)
                .consecutive_failures(1),
        )
        .bulkhead(BulkheadLayer::builder("reports").max_concurrent(1))
        .build()
        .unwrap();
    let handle = client.handle();
    let client = client.layer(downstream(&[(200, 1_000), (200, 0)], Arc::clone(&seen)));
    let busy = tokio::spawn(client.clone().oneshot(get()));
    tokio::task::yield_now().await;
    let err = client.clone().oneshot(get()).await.unwrap_err();
    // Rejected locally: not retried, not counted by the breaker.
    assert!(find::<BulkheadFull>(&*err).is_some(), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(handle.snapshot()["layers"][2]["state"], "closed");
    let report = handle.snapshot();
    assert_eq!(report["layers"][3]["in_flight"], 1);
    assert_eq!(busy.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(handle.snapshot()["layers"][3]["in_flight"], 0);
}

#[tokio::test(start_paused = true)]
async fn the_default_client_stack_counts_an_attempt_in_flight_until_its_body_ends() {
    // A downstream that sends its head at once and then streams the body
    // holds a socket until the body ends: the bulkhead caps those too.
    let client = stack::client("reports").build().unwrap();
    let handle = client.handle();
    let client = client.layer(service_fn(|_: Req| async {
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::from_static(b"report"))))
    }));
    let res = client.oneshot(get()).await.unwrap();
    assert_eq!(handle.snapshot()["layers"][3]["in_flight"], 1, "the body still streams");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "report");
    assert_eq!(handle.snapshot()["layers"][3]["in_flight"], 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_in_backoff_holds_no_permit_though_its_503_had_a_body() {
    // The bulkhead holds a permit until the response body ends: the retry
    // must let the 503 (and its unread body) go before it waits.
    let client = stack::client("reports")
        .retry(quick_retry("reports", 2))
        .build()
        .unwrap();
    let handle = client.handle();
    let attempts = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&attempts);
    let client = client.layer(service_fn(move |_: Req| {
        let status = if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            503
        } else {
            200
        };
        async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from_static(b"report")))
                    .unwrap(),
            )
        }
    }));
    let mut call = Box::pin(client.oneshot(get()));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut call)
            .await
            .is_err(),
        "in its 100 ms backoff"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert_eq!(
        handle.snapshot()["layers"][3]["in_flight"],
        0,
        "no permit held in backoff"
    );
    let res = call.await.unwrap();
    assert_eq!((res.status(), attempts.load(Ordering::SeqCst)), (StatusCode::OK, 2));
    assert_eq!(handle.snapshot()["layers"][3]["in_flight"], 1, "the body still streams");
    res.into_body().collect().await.unwrap();
    assert_eq!(handle.snapshot()["layers"][3]["in_flight"], 0);
}

#[tokio::test(start_paused = true)]
async fn removed_parts_are_gone_from_the_stack_and_the_report() {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let bare = stack::client("payments")
        .no_idempotency_key()
        .no_retry()
        .no_circuit_breaker()
        .build()
        .unwrap();
    assert_eq!(bare.handle().layers(), ["bulkhead", "attempt_timeout"]);
    let client = bare.layer(service_fn({
        let seen = Arc::clone(&seen);
        move |req: Request<Full<Bytes>>| {
            seen.lock().unwrap().push(Seen {
                method: req.method().clone(),
                key: req
                    .headers()
                    .get("idempotency-key")
                    .map(|v| v.to_str().unwrap().to_owned()),
            });
            async { Ok::<_, BoxError>(Response::builder().status(503).body(Full::<Bytes>::default()).unwrap()) }
        }
    }));
    // Without the retry the body is not wrapped, and nothing is sent twice.
    let res = client.clone().oneshot(post()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].key, None);

    let nothing = stack::client("none")
        .no_idempotency_key()
        .no_retry()
        .no_circuit_breaker()
        .no_bulkhead()
        .no_attempt_timeout()
        .build()
        .unwrap();
    assert!(nothing.handle().layers().is_empty());
    let echo = nothing.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    assert_eq!(echo.oneshot(7).await.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_replaced_part_is_the_one_the_stack_uses() {
    let breaker = CircuitBreakerLayer::builder("mine")
        .classifier(HttpClassifier)
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    breaker_handle.force_open();
    let seen = Arc::default();
    let client = stack::client("payments").circuit_breaker(breaker).build().unwrap();
    let report = client.handle().snapshot();
    assert_eq!(report["layers"][2]["name"], "mine");
    assert_eq!(report["layers"][2]["state"], "forced_open");
    let err = client
        .layer(downstream(&[(200, 0)], Arc::clone(&seen)))
        .oneshot(get())
        .await
        .unwrap_err();
    assert_eq!(find::<CircuitOpen>(&*err).map(CircuitOpen::name), Some("mine"));
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn an_impossible_part_fails_build_under_its_slot() {
    let err = stack::client("payments")
        .retry(HttpRetryLayer::builder("payments").max_attempts(0))
        .build()
        .unwrap_err();
    assert_eq!(err, ConfigError::Retry(palisade::retry::ConfigError::ZeroAttempts));
    assert!(err.to_string().starts_with("retry: "), "{err}");

    let err = stack::server("orders")
        .bulkhead(BulkheadLayer::builder("orders").max_concurrent(0))
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::Bulkhead(_)), "{err:?}");

    // Timeouts under which no request could succeed.
    let err = stack::server("orders").timeout(Duration::ZERO).build().unwrap_err();
    assert_eq!(err, ConfigError::Deadline(palisade::deadline::ConfigError::ZeroTimeout));
    let err = stack::client("payments")
        .attempt_timeout(Duration::from_micros(500))
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        ConfigError::Deadline(palisade::deadline::ConfigError::TimeoutUnderHeaderUnit(
            Duration::from_micros(500)
        ))
    );
}

#[tokio::test(start_paused = true)]
async fn the_handle_reports_every_part_as_json() {
    let payments = stack::client("payments").build().unwrap();
    let handle = payments.handle();
    let client = payments.layer(downstream(&[(200, 0)], Arc::default()));
    client.oneshot(get()).await.unwrap();

    let report = handle.snapshot();
    let budget = &report["layers"][1]["budget"];
    assert!(budget["available"].is_u64(), "{report}");
    let available = budget["available"].clone();
    assert_eq!(
        report,
        json!({
            "name": "payments",
            "layers": [
                {"layer": "idempotency_key"},
                {"layer": "retry", "name": "payments", "budget": {"available": available, "ratio": 0.2, "min_per_sec": 10, "window_ms": 10_000}},
                {
                    "layer": "circuit_breaker", "name": "payments", "state": "closed",
                    "failure_rate": 0.0, "slow_call_rate": 0.0, "calls_in_window": 1, "failed_calls": 0, "slow_calls": 0,
                    "consecutive_failures": 0, "time_until_half_open_ms": null, "half_open_probes": 0
                },
                {"layer": "bulkhead", "name": "payments", "limit": 100, "in_flight": 0, "queued": 0, "adaptive": false},
                {"layer": "attempt_timeout", "timeout_ms": 10_000}
            ]
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_keyed_breaker_reports_each_key() {
    let breakers = CircuitBreakerBuilder::consecutive("hosts")
        .classifier(HttpClassifier)
        .consecutive_failures(1)
        .build_keyed(|req: &Req| req.uri().host().unwrap_or_default().to_owned())
        .unwrap();
    let hosts = stack::client("hosts")
        .retry(quick_retry("hosts", 1))
        .circuit_breaker(breakers)
        .build()
        .unwrap();
    let handle = hosts.handle();
    let client = hosts.layer(downstream(&[(503, 0)], Arc::default()));
    client.oneshot(get()).await.unwrap();
    let report = handle.snapshot();
    assert_eq!(
        report["layers"][2]["keys"]["payments.test"]["state"], "open",
        "{report}"
    );
}

/// The handler behind the server stack: counts its calls; `/slow` takes 60 s.
fn handler(
    calls: Arc<AtomicU32>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
+ Send {
    service_fn(move |req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok(Response::builder()
                .status(201)
                .body(Full::new(Bytes::from_static(b"created")))
                .unwrap())
        }
    })
}

fn keyed_post(path: &str, key: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("idempotency-key", key)
        .body(Full::new(Bytes::from_static(b"{\"sku\":1}")))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_server_stack_replays_before_the_bulkhead_and_answers_its_rejections() {
    let calls = Arc::new(AtomicU32::new(0));
    let orders = stack::server("orders")
        .bulkhead(BulkheadLayer::builder("orders").max_concurrent(1))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    assert_eq!(orders.handle().layers(), ["idempotency", "bulkhead", "timeout"]);
    let server = orders.layer(handler(calls.clone()));

    let first = server.clone().oneshot(keyed_post("/orders", "\"k1\"")).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);

    // The only permit is held by a slow request.
    let slow = tokio::spawn(server.clone().oneshot(keyed_post("/slow", "\"k2\"")));
    tokio::task::yield_now().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A repeat of the first key is answered from the store, without a permit.
    let replay = server.clone().oneshot(keyed_post("/orders", "\"k1\"")).await.unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.into_body().collect().await.unwrap().to_bytes(), "created");

    // A new request meets the full bulkhead: 503 problem+json, Retry-After.
    let full = server.clone().oneshot(keyed_post("/orders", "\"k3\"")).await.unwrap();
    assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(full.headers()["content-type"], "application/problem+json");
    assert!(full.headers().contains_key("retry-after"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // The slow request runs into the timeout: 504.
    let timed_out = slow.await.unwrap().unwrap();
    assert_eq!(timed_out.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(orders.handle().snapshot()["layers"][1]["in_flight"], 0);
}

#[tokio::test(start_paused = true)]
async fn the_server_stack_without_limits_passes_everything() {
    let calls = Arc::new(AtomicU32::new(0));
    let server = stack::server("plain")
        .no_idempotency()
        .no_bulkhead()
        .no_timeout()
        .build()
        .unwrap();
    assert!(server.handle().layers().is_empty());
    let server = server.layer(handler(calls.clone()));
    for _ in 0..2 {
        let res = server.clone().oneshot(keyed_post("/orders", "\"k1\"")).await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        assert!(!res.headers().contains_key("idempotent-replayed"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_total_deadline_stops_the_retries_that_would_end_past_it() {
    let seen = Arc::default();
    let started = tokio::time::Instant::now();
    let client = stack::client("payments")
        .deadline(Duration::from_secs(1))
        .retry(
            HttpRetryLayer::builder("payments")
                .max_attempts(10)
                .backoff(Backoff::constant(Duration::from_millis(400)))
                .jitter(Jitter::None)
                .no_budget(),
        )
        .build()
        .unwrap();
    assert_eq!(
        client.handle().snapshot()["layers"][0],
        json!({"layer": "deadline", "timeout_ms": 1000})
    );
    let client = client.layer(downstream(&[(503, 0)], Arc::clone(&seen)));
    let res = client.oneshot(get()).await.unwrap();
    // Attempts at 0, 400 and 800 ms; the next wait would end at 1.2 s.
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert_eq!(started.elapsed(), Duration::from_millis(800));
}

#[tokio::test(start_paused = true)]
async fn each_attempt_carries_its_budget_downstream() {
    let budgets = Arc::new(Mutex::new(Vec::new()));
    let seen_budgets = Arc::clone(&budgets);
    let client = stack::client("payments")
        .deadline(Duration::from_secs(3))
        .retry(quick_retry("payments", 2))
        .build()
        .unwrap()
        .layer(service_fn(move |req: Req| {
            let budget = req.headers()["x-request-timeout-ms"]
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap();
            seen_budgets.lock().unwrap().push(budget);
            async { Ok::<_, BoxError>(Response::builder().status(503).body(Full::<Bytes>::default()).unwrap()) }
        }));
    client.oneshot(get()).await.unwrap();
    // Each attempt gets what is left of the 3 s deadline, less the 10 ms
    // margin: the second one, 100 ms later, 100 ms less.
    assert_eq!(*budgets.lock().unwrap(), [2_990, 2_890]);
}

#[tokio::test(start_paused = true)]
async fn the_server_deadline_is_outermost_and_answers_504() {
    let calls = Arc::new(AtomicU32::new(0));
    let server = stack::server("orders")
        .deadline(Duration::from_secs(2))
        .build()
        .unwrap();
    assert_eq!(
        server.handle().layers(),
        ["deadline", "idempotency", "bulkhead", "timeout"]
    );
    let server = server.layer(handler(calls.clone()));
    let res = server.oneshot(keyed_post("/slow", "\"k9\"")).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A budget the stack is given in code is not a caller's request: it may be
/// longer than the 5 minutes a caller's header is capped at.
#[tokio::test(start_paused = true)]
async fn a_deadline_longer_than_the_callers_cap_builds_and_bounds_the_call() {
    let ten_minutes = Duration::from_secs(600);
    let client = stack::client("exports")
        .deadline(ten_minutes)
        .attempt_timeout(Duration::from_secs(900))
        .build()
        .unwrap();
    assert_eq!(
        client.handle().snapshot()["layers"][0],
        json!({"layer": "deadline", "timeout_ms": 600_000})
    );
    let budgets = Arc::new(Mutex::new(Vec::new()));
    let seen_budgets = Arc::clone(&budgets);
    let client = client.layer(service_fn(move |req: Req| {
        let budget = req.headers()["x-request-timeout-ms"].to_str().unwrap().to_owned();
        seen_budgets.lock().unwrap().push(budget);
        async { Ok::<_, BoxError>(Response::builder().status(200).body(Full::<Bytes>::default()).unwrap()) }
    }));
    client.oneshot(get()).await.unwrap();
    assert_eq!(*budgets.lock().unwrap(), ["599990"], "ten minutes less the margin");

    let server = stack::server("exports")
        .deadline(ten_minutes)
        .build()
        .unwrap()
        .layer(service_fn(|req: Request<Full<Bytes>>| async move {
            let left = palisade::core::deadline::Deadline::of(&req).unwrap().remaining();
            let body = Full::new(Bytes::from(left.as_secs().to_string()));
            Ok::<_, std::convert::Infallible>(Response::new(body))
        }));
    // A caller asking for more is cut to the stack's own budget.
    let mut req = post();
    req.headers_mut()
        .insert("x-request-timeout-ms", "1200000".parse().unwrap());
    let res = server.clone().oneshot(req).await.unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "600");
    let mut req = post();
    req.headers_mut()
        .insert("x-request-timeout-ms", "420000".parse().unwrap());
    let res = server.oneshot(req).await.unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "420");
}
