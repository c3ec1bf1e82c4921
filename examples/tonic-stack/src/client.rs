//! The inventory client: a tonic client over a stack of palisade layers.
//!
//! Client stack ([`palisade::stack::grpc_client`]), outermost first:
//!
//! 1. [`GrpcStatusLayer`](palisade::grpc::GrpcStatusLayer): the layers' rejections become statuses the tonic
//!    client reads as such (an open breaker is `UNAVAILABLE` with the
//!    pushback in the status's metadata), where tonic would say `UNKNOWN`;
//! 2. the deadline: the call's whole budget, the shorter of the client's own
//!    and the one the caller set on the request (`Request::set_timeout`);
//!    when it passes the call is dropped and answered `DEADLINE_EXCEEDED`;
//! 3. retry ([`GrpcRetryLayer`]): `UNAVAILABLE` from a trailers-only
//!    response, connect errors and per-attempt timeouts, with backoff, the
//!    server's pushback and a budget; never once messages arrived, and no
//!    wait that would end past the deadline;
//! 4. circuit breaker, judging each call by its final status
//!    ([`AtEos`]`(`[`GrpcClassifier`]`)`): inside the retry, so each attempt
//!    counts and an open breaker's fast rejection is not retried;
//! 5. bulkhead: each attempt takes its own permit, so a call waiting in
//!    backoff holds none;
//! 6. per-attempt timeout, bounded by what is left of the deadline, which is
//!    sent to the server as `grpc-timeout`: a stalled attempt ends as a
//!    failure the breaker counts (not retried: it may have been processed),
//!    and the server knows how long it has;
//! 7. the tonic `Channel`.

use std::time::Duration;

use http::Request;
use palisade::bulkhead::{BulkheadHandle, BulkheadLayer};
use palisade::circuit_breaker::{CircuitBreakerHandle, CircuitBreakerLayer};
use palisade::deadline::DeadlineBody;
use palisade_core::backoff::{Backoff, Jitter};
use palisade_core::eos::AtEos;
use palisade_core::{BoxError, GrpcClassifier};
use palisade_grpc::channel_error;
use palisade_retry::{GrpcRetryLayer, ReplayBody};
use tonic::body::Body;
use tonic::transport::Channel;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::proto::inventory_client::InventoryClient;
use crate::server::{JudgedBody, StackService};

/// The responses of the client stack: judged by the breaker, cut by the deadline.
pub type ClientBody = DeadlineBody<JudgedBody>;

/// The client's settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// The wait before the first retry; doubling after.
    pub first_backoff: Duration,
    /// Failed attempts in a row that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open.
    pub breaker_open: Duration,
    /// Attempts in flight at once.
    pub max_concurrent: usize,
    /// How long one attempt may take.
    pub attempt_timeout: Duration,
    /// How long a whole call may take, retries and waits included; a
    /// shorter timeout set on the request wins.
    pub deadline: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            first_backoff: Duration::from_millis(50),
            breaker_failures: 5,
            breaker_open: Duration::from_secs(10),
            max_concurrent: 32,
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
        }
    }
}

/// A client and the handles of its stateful layers.
#[derive(Debug, Clone)]
pub struct Client {
    /// The generated tonic client, over the stack.
    pub inventory: InventoryClient<StackService<ClientBody>>,
    /// The client's breaker.
    pub breaker: CircuitBreakerHandle,
    /// The client's bulkhead.
    pub bulkhead: BulkheadHandle,
}

/// A client over `channel`.
pub fn client(channel: Channel, config: &ClientConfig) -> Result<Client, BoxError> {
    let retry = GrpcRetryLayer::builder("inventory")
        .max_attempts(config.max_attempts)
        .backoff(Backoff::exponential(config.first_backoff, 2.0, Duration::from_secs(2)))
        .jitter(Jitter::None);
    let breaker = CircuitBreakerLayer::builder("inventory")
        .no_failure_rate()
        .consecutive_failures(config.breaker_failures)
        .open_duration(config.breaker_open)
        .permitted_calls_in_half_open(1)
        .classifier(AtEos(GrpcClassifier))
        .build()?;
    let bulkhead = BulkheadLayer::builder("inventory")
        .max_concurrent(config.max_concurrent)
        .build()?;
    let (breaker_handle, bulkhead_handle) = (breaker.handle(), bulkhead.handle());
    // The canonical gRPC client stack, its parts configured; the breaker and
    // the bulkhead built here to keep their handles.
    let client_stack = palisade::stack::grpc_client("inventory")
        .deadline(config.deadline)
        .retry(retry)
        .circuit_breaker(breaker)
        .bulkhead(bulkhead)
        .attempt_timeout(config.attempt_timeout)
        .build()?;
    let stack = ServiceBuilder::new()
        .layer(client_stack)
        .map_err(channel_error)
        // The retry keeps the request for replay; the channel takes tonic's body.
        .map_request(|req: Request<ReplayBody<Body>>| req.map(Body::new))
        .service(channel);
    Ok(Client {
        inventory: InventoryClient::new(BoxCloneSyncService::new(stack)),
        breaker: breaker_handle,
        bulkhead: bulkhead_handle,
    })
}
