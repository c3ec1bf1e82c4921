//! The tower contract suite (see `palisade_tests::contract`) on every
//! protocol-agnostic layer and configuration, and on the canonical client
//! stack. One line per configuration; each gets one test per check.

use std::time::Duration;

use palisade::bulkhead::{Aimd, BulkheadLayer, Gradient2};
use palisade::circuit_breaker::{CircuitBreakerBuilder, State};
use palisade::deadline::{DeadlineLayer, PropagateDeadlineLayer};
use palisade::fallback::{Failure, FallbackLayer};
use palisade::hedge::HedgeLayer;
use palisade::prelude::*;
use palisade::retry::{Backoff, Jitter, RetryBudget, RetryLayer};
use palisade_tests::contract::{REQUEST, Reply, Request, Response, Scripted, Subject, refused};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

fn key(request: &Request) -> u32 {
    request.key
}

/// Retries with a fixed 100 ms wait, three attempts.
fn retry_builder(name: &str) -> palisade::retry::RetryBuilder<ErrorClassifier, palisade::retry::AnyRequest> {
    RetryLayer::builder(name)
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(100)))
        .jitter(Jitter::None)
}

fn breaker_rate() -> Subject {
    let layer = CircuitBreakerBuilder::rate_based("rate").build().unwrap();
    let handle = layer.handle();
    Subject::new(layer)
        .switch(move |admit| if admit { handle.reset() } else { handle.force_open() })
        .refuses([
            refused(CircuitBreakerBuilder::rate_based("x").failure_rate(0.0).build()),
            refused(CircuitBreakerBuilder::rate_based("x").failure_rate(100.5).build()),
            refused(CircuitBreakerBuilder::rate_based("x").failure_rate(f64::NAN).build()),
            refused(CircuitBreakerBuilder::rate_based("x").count_window(0).build()),
            refused(
                CircuitBreakerBuilder::rate_based("x")
                    .count_window(10)
                    .minimum_calls(11)
                    .build(),
            ),
            refused(
                CircuitBreakerBuilder::rate_based("x")
                    .time_window(Duration::from_millis(5), 10)
                    .build(),
            ),
            refused(CircuitBreakerBuilder::rate_based("x").no_failure_rate().build()),
        ])
}

fn breaker_consecutive() -> Subject {
    let layer = CircuitBreakerBuilder::consecutive("consecutive").build().unwrap();
    let handle = layer.handle();
    Subject::new(layer)
        .switch(move |admit| if admit { handle.reset() } else { handle.force_open() })
        .refuses([
            refused(CircuitBreakerBuilder::consecutive("x").consecutive_failures(0).build()),
            refused(
                CircuitBreakerBuilder::consecutive("x")
                    .open_duration(Duration::ZERO)
                    .build(),
            ),
            refused(
                CircuitBreakerBuilder::consecutive("x")
                    .permitted_calls_in_half_open(0)
                    .build(),
            ),
            refused(
                CircuitBreakerBuilder::consecutive("x")
                    .open_duration_growing(Duration::from_secs(10), Duration::from_secs(1))
                    .build(),
            ),
        ])
}

/// A breaker tripped by one failure whose open time has passed: the next
/// calls are its two half-open probes.
async fn breaker_half_open() -> Subject {
    let layer = CircuitBreakerBuilder::consecutive("half-open")
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(1))
        .permitted_calls_in_half_open(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    let subject = Subject::new(layer).concurrency(2).refuses([refused(
        CircuitBreakerBuilder::consecutive("x")
            .permitted_calls_in_half_open(u32::MAX)
            .build(),
    )]);
    subject.script().reply([Reply::Err]);
    subject.service().oneshot(REQUEST).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
    tokio::time::advance(Duration::from_secs(1)).await;
    subject
}

fn breaker_keyed() -> Subject {
    let layer = CircuitBreakerBuilder::rate_based("keyed").build_keyed(key).unwrap();
    let handle = layer.handle();
    Subject::new(layer)
        .switch(move |admit| {
            let breaker = handle.get(&REQUEST.key).expect("the key's breaker exists once called");
            if admit { breaker.reset() } else { breaker.force_open() }
        })
        .refuses([
            refused(CircuitBreakerBuilder::rate_based("x").max_keys(0).build_keyed(key)),
            refused(
                CircuitBreakerBuilder::rate_based("x")
                    .key_idle_timeout(Duration::ZERO)
                    .build_keyed(key),
            ),
            refused(
                CircuitBreakerBuilder::rate_based("x")
                    .failure_rate(0.0)
                    .build_keyed(key),
            ),
        ])
}

fn bulkhead_fixed() -> Subject {
    Subject::new(BulkheadLayer::builder("fixed").max_concurrent(2).build().unwrap())
        .concurrency(2)
        .refuses([
            refused(BulkheadLayer::builder("x").max_concurrent(0).build()),
            refused(BulkheadLayer::builder("x").max_concurrent(usize::MAX).build()),
        ])
}

fn bulkhead_queued() -> Subject {
    let layer = BulkheadLayer::builder("queued")
        .max_concurrent(2)
        .max_queued(2)
        .max_wait(Duration::from_secs(5))
        .build()
        .unwrap();
    Subject::new(layer).concurrency(2).queue(2).refuses([
        refused(BulkheadLayer::builder("x").max_queued(usize::MAX).build()),
        refused(
            BulkheadLayer::builder("x")
                .max_queued(1)
                .max_wait(Duration::ZERO)
                .build(),
        ),
    ])
}

fn bulkhead_keyed() -> Subject {
    let layer = BulkheadLayer::builder("keyed")
        .max_concurrent(2)
        .build_keyed(key)
        .unwrap();
    Subject::new(layer).concurrency(2).refuses([
        refused(BulkheadLayer::builder("x").max_keys(0).build_keyed(key)),
        refused(BulkheadLayer::builder("x").max_concurrent(0).build_keyed(key)),
    ])
}

fn bulkhead_adaptive() -> Subject {
    let aimd = Aimd::builder()
        .min_limit(1)
        .initial_limit(2)
        .max_limit(2)
        .build()
        .unwrap();
    Subject::new(BulkheadLayer::builder("adaptive").adaptive(aimd).build().unwrap())
        .concurrency(2)
        .refuses([
            refused(Aimd::builder().min_limit(0).build()),
            refused(Aimd::builder().min_limit(3).initial_limit(2).build()),
            refused(Aimd::builder().backoff_ratio(1.0).build()),
            refused(Aimd::builder().timeout(Duration::ZERO).build()),
            refused(Gradient2::builder().initial_limit(300).max_limit(200).build()),
            refused(Gradient2::builder().smoothing(0.0).build()),
            refused(Gradient2::builder().rtt_tolerance(f64::NAN).build()),
        ])
}

fn retry_refusals() -> [Option<String>; 6] {
    [
        refused(retry_builder("x").max_attempts(0).build()),
        refused(
            retry_builder("x")
                .backoff(Backoff::exponential(
                    Duration::from_secs(2),
                    2.0,
                    Duration::from_secs(1),
                ))
                .build(),
        ),
        refused(
            retry_builder("x")
                .backoff(Backoff::exponential(
                    Duration::from_secs(1),
                    f64::NAN,
                    Duration::from_secs(2),
                ))
                .build(),
        ),
        refused(retry_builder("x").deadline(Duration::ZERO).build()),
        refused(RetryBudget::builder().ratio(-0.5).build()),
        refused(RetryBudget::builder().window(Duration::ZERO).build()),
    ]
}

fn retry_with_budget() -> Subject {
    Subject::new(retry_builder("budget").build().unwrap()).refuses(retry_refusals())
}

fn retry_without_budget() -> Subject {
    Subject::new(retry_builder("no-budget").no_budget().build().unwrap()).refuses(retry_refusals())
}

/// The canonical client stack: retry (with budget) → circuit breaker →
/// bulkhead → per-attempt timeout → the inner service.
fn client_stack() -> Subject {
    let breaker = CircuitBreakerBuilder::rate_based("stack").build().unwrap();
    let handle = breaker.handle();
    let stack = ServiceBuilder::new()
        .retry_layer(retry_builder("stack").build().unwrap())
        .circuit_breaker(breaker)
        .bulkhead(
            BulkheadLayer::builder("stack")
                .max_concurrent(2)
                .max_queued(1)
                .build()
                .unwrap(),
        )
        .timeout(Duration::from_secs(30));
    Subject::new(stack)
        .concurrency(2)
        .queue(1)
        .switch(move |admit| if admit { handle.reset() } else { handle.force_open() })
        .refuses([
            refused(retry_builder("x").max_attempts(0).build()),
            refused(CircuitBreakerBuilder::rate_based("x").failure_rate(0.0).build()),
            refused(BulkheadLayer::builder("x").max_concurrent(0).build()),
        ])
}

/// The body of the HTTP requests the suite sends through HTTP layers.
type Empty = http_body_util::Empty<bytes::Bytes>;

/// An HTTP layer under the suite: the suite's request travels in an
/// `http::Request`'s extensions through it (its body `X` is the layer's
/// wrapping of an empty body), the inner answer in an `http::Response`'s
/// extensions; an answer of the layer's own is an error.
fn over_http<L, X, B, E>(
    layer: L,
) -> impl Layer<
    Scripted,
    Service: Service<Request, Response = Response, Error = BoxError, Future: Send + 'static> + Clone + Send + 'static,
>
where
    L: Layer<
        tower::util::MapRequest<
            tower::util::MapResponse<Scripted, fn(Response) -> http::Response<()>>,
            fn(http::Request<X>) -> Request,
        >,
    >,
    L::Service: Service<http::Request<Empty>, Response = http::Response<B>, Error = E> + Clone + Send + 'static,
    <L::Service as Service<http::Request<Empty>>>::Future: Send + 'static,
    X: 'static,
    B: 'static,
    E: Into<BoxError> + 'static,
    BoxError: From<E>,
{
    fn to_http(request: Request) -> http::Request<Empty> {
        let mut req = http::Request::new(Empty::new());
        req.extensions_mut().insert(request);
        req
    }
    fn from_http<X>(req: http::Request<X>) -> Request {
        *req.extensions().get::<Request>().expect("the suite's request")
    }
    fn response_to_http(response: Response) -> http::Response<()> {
        let mut res = http::Response::new(());
        res.extensions_mut().insert(response);
        res
    }
    fn response_from_http<B, E: Into<BoxError>>(result: Result<http::Response<B>, E>) -> Result<Response, BoxError> {
        let res = result.map_err(Into::into)?;
        res.extensions()
            .get::<Response>()
            .copied()
            .ok_or_else(|| format!("answered by the layer: {}", res.status()).into())
    }
    ServiceBuilder::new()
        .map_request(to_http as fn(Request) -> http::Request<Empty>)
        .map_result(response_from_http::<B, E> as fn(Result<http::Response<B>, E>) -> Result<Response, BoxError>)
        .layer(layer)
        .map_request(from_http::<X> as fn(http::Request<X>) -> Request)
        .map_response(response_to_http as fn(Response) -> http::Response<()>)
}

fn deadline_server() -> Subject {
    let layer = DeadlineLayer::builder("server")
        .timeout(Duration::from_secs(86_400))
        .max_timeout(Duration::from_secs(86_400))
        .build()
        .unwrap();
    Subject::new(over_http::<_, Empty, _, _>(layer)).refuses([
        refused(DeadlineLayer::builder("x").timeout(Duration::ZERO).build()),
        refused(DeadlineLayer::builder("x").max_timeout(Duration::ZERO).build()),
        refused(
            DeadlineLayer::builder("x")
                .timeout(Duration::from_secs(2))
                .max_timeout(Duration::from_secs(1))
                .build(),
        ),
    ])
}

fn deadline_client() -> Subject {
    let layer = PropagateDeadlineLayer::builder("client")
        .timeout(Duration::from_secs(86_400))
        .build()
        .unwrap();
    Subject::new(over_http(layer)).refuses([refused(
        PropagateDeadlineLayer::builder("x").timeout(Duration::ZERO).build(),
    )])
}

/// Hedging with a delay no check reaches: the layer's own bookkeeping
/// around the one attempt.
fn hedge() -> Subject {
    let layer = HedgeLayer::builder("hedge")
        .delay(Duration::from_secs(3600))
        .build()
        .unwrap();
    Subject::new(over_http::<_, palisade::retry::ReplayBody<Empty>, _, _>(layer)).refuses([
        refused(HedgeLayer::builder("x").max_attempts(1).build()),
        refused(HedgeLayer::builder("x").delay(Duration::ZERO).build()),
        refused(HedgeLayer::builder("x").percentile(1.5, 100, 10).build()),
        refused(HedgeLayer::builder("x").percentile(0.9, 10, 100).build()),
    ])
}

/// A fallback that declines every failure: the layer must give back each
/// result and error exactly as the inner service produced it.
fn fallback() -> Subject {
    let declining =
        tower::service_fn(|failure: Failure<http::Response<()>>| async move { Err::<http::Response<()>, _>(failure) });
    let layer = FallbackLayer::builder("fallback").fallback(declining).build().unwrap();
    Subject::new(over_http::<_, Empty, _, _>(layer)).refuses([refused(FallbackLayer::builder("x").build())])
}

palisade_tests::contract_suite! {
    circuit_breaker_rate => breaker_rate();
    circuit_breaker_consecutive => breaker_consecutive();
    circuit_breaker_half_open => breaker_half_open().await;
    circuit_breaker_keyed => breaker_keyed();
    bulkhead_fixed => bulkhead_fixed();
    bulkhead_queued => bulkhead_queued();
    bulkhead_keyed => bulkhead_keyed();
    bulkhead_adaptive => bulkhead_adaptive();
    retry_with_budget => retry_with_budget();
    retry_without_budget => retry_without_budget();
    client_stack => client_stack();
    deadline_server => deadline_server();
    deadline_client => deadline_client();
    hedge => hedge();
    fallback => fallback();
}
