//! The inventory server: its stack of palisade layers, and the
//! breaker-protected call to its upstream, the warehouse.
//!
//! Server stack ([`palisade::stack::grpc_server`]), outermost first:
//!
//! 1. [`GrpcStatusLayer`](palisade::grpc::GrpcStatusLayer): every error of the layers below becomes a
//!    trailers-only gRPC status (an open breaker or a full bulkhead is
//!    `UNAVAILABLE` with `grpc-retry-pushback-ms`), never a reset stream or
//!    `UNKNOWN`;
//! 2. the deadline: the caller's `grpc-timeout` (capped by `max_timeout`)
//!    or the server's own budget, whichever is shorter, bounds the handler and
//!    every call it makes; when it passes the handler is dropped, which cancels
//!    its call to the warehouse, and the caller gets `DEADLINE_EXCEEDED`;
//! 3. a bulkhead: at most `max_concurrent` calls in the handlers, no queue,
//!    so a saturated server sheds load at once instead of piling up calls
//!    that will miss their deadlines;
//! 4. the inventory service, whose handlers call the warehouse through a
//!    circuit breaker judging each call by its final status, with what is
//!    left of the deadline sent on as `grpc-timeout`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use palisade::bulkhead::{BulkheadHandle, BulkheadLayer};
use palisade::circuit_breaker::{CircuitBreakerHandle, CircuitBreakerLayer, future::Record};
use palisade::deadline::{DeadlineLayer, PropagateDeadlineLayer};
use palisade_core::deadline::Deadline;
use palisade_core::eos::{AtEos, EosBody};
use palisade_core::{BoxError, GrpcClassifier};
use palisade_grpc::channel_error;
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::proto::inventory_server::{Inventory as InventoryApi, InventoryServer};
use crate::proto::warehouse_client::WarehouseClient;
use crate::proto::{GetStockRequest, Stock, WatchStockRequest};

/// The body of a response that went through a breaker judging at the end of
/// the stream.
pub type JudgedBody = EosBody<Body, GrpcClassifier, Record>;

/// A client stack as a tonic client sees it: infallible (errors are
/// statuses already), answering bodies of type `B`.
pub type StackService<B = JudgedBody> = BoxCloneSyncService<Request<Body>, Response<B>, Infallible>;

/// The inventory server's settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Calls in the handlers at once; more are answered `UNAVAILABLE`.
    pub max_concurrent: usize,
    /// Failed warehouse calls in a row that open the upstream breaker.
    pub upstream_failures: u32,
    /// How long the upstream breaker stays open.
    pub upstream_open: Duration,
    /// The server's own budget for a call; a caller's shorter `grpc-timeout` wins.
    pub timeout: Duration,
    /// The longest `grpc-timeout` a caller may ask for.
    pub max_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 64,
            upstream_failures: 5,
            upstream_open: Duration::from_secs(10),
            timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(30),
        }
    }
}

/// A running inventory server.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The breaker in front of the warehouse.
    pub upstream_breaker: CircuitBreakerHandle,
    /// The server's bulkhead.
    pub bulkhead: BulkheadHandle,
    /// The serving task.
    pub task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    deadlines: Deadlines,
}

impl Running {
    /// The time each call had left when its handler started, in order.
    pub fn deadlines_seen(&self) -> Vec<Option<Duration>> {
        self.deadlines.lock().unwrap().clone()
    }
}

/// What the handlers saw of their calls' deadlines.
type Deadlines = Arc<Mutex<Vec<Option<Duration>>>>;

/// A channel to `addr`, connected on first use.
pub fn channel(addr: SocketAddr) -> Result<Channel, BoxError> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy())
}

/// The inventory service: answers from the warehouse.
#[derive(Debug, Clone)]
pub struct Inventory {
    warehouse: WarehouseClient<StackService>,
    deadlines: Deadlines,
}

impl Inventory {
    fn note_deadline(&self) {
        let left = Deadline::current().map(|d| d.remaining());
        self.deadlines.lock().unwrap().push(left);
    }
}

/// Starts the inventory server on `listener`, calling the warehouse at
/// `warehouse`.
pub fn spawn(listener: TcpListener, warehouse: SocketAddr, config: &ServerConfig) -> Result<Running, BoxError> {
    let addr = listener.local_addr()?;
    let breaker = CircuitBreakerLayer::builder("warehouse")
        .no_failure_rate()
        .consecutive_failures(config.upstream_failures)
        .open_duration(config.upstream_open)
        .permitted_calls_in_half_open(1)
        .classifier(AtEos(GrpcClassifier))
        .build()?;
    let upstream_breaker = breaker.handle();
    // The gRPC client stack without retry or bulkhead: the inventory's own
    // caller retries, and the server's bulkhead caps the calls already.
    let upstream_stack = palisade::stack::grpc_client("warehouse")
        .no_retry()
        .circuit_breaker(breaker)
        .no_bulkhead()
        // What is left of the caller's deadline bounds the call and goes on as `grpc-timeout`.
        .attempt_timeout(PropagateDeadlineLayer::builder("warehouse"))
        .build()?;
    let upstream = ServiceBuilder::new()
        .layer(upstream_stack)
        .map_err(channel_error)
        .service(channel(warehouse)?);
    let deadlines = Deadlines::default();
    let inventory = Inventory {
        warehouse: WarehouseClient::new(BoxCloneSyncService::new(upstream)),
        deadlines: deadlines.clone(),
    };

    let bulkhead = BulkheadLayer::builder("inventory")
        .max_concurrent(config.max_concurrent)
        .max_queued(0)
        .retry_after(Duration::from_millis(200))
        .build()?;
    let bulkhead_handle = bulkhead.handle();
    let server_stack = palisade::stack::grpc_server("inventory")
        .deadline(
            DeadlineLayer::builder("inventory")
                .timeout(config.timeout)
                .max_timeout(config.max_timeout),
        )
        .bulkhead(bulkhead)
        // The deadline's own budget bounds every call already.
        .no_timeout()
        .build()?;
    let router = tonic::transport::Server::builder()
        .layer(server_stack)
        .add_service(InventoryServer::new(inventory));
    let task = tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    Ok(Running {
        addr,
        upstream_breaker,
        bulkhead: bulkhead_handle,
        task,
        deadlines,
    })
}

/// The status the inventory answers for a failed warehouse call: the same
/// code, its own message, and the warehouse's pushback passed on.
fn upstream_failed(status: Status) -> Status {
    let message = match status.code() {
        Code::Unavailable => "the warehouse is unavailable",
        Code::DeadlineExceeded => "the warehouse did not answer in time",
        _ => "the warehouse failed",
    };
    let mut metadata = tonic::metadata::MetadataMap::new();
    if let Some(pushback) = status.metadata().get("grpc-retry-pushback-ms") {
        metadata.insert("grpc-retry-pushback-ms", pushback.clone());
    }
    Status::with_metadata(status.code(), message, metadata)
}

#[tonic::async_trait]
impl InventoryApi for Inventory {
    async fn get_stock(&self, request: tonic::Request<GetStockRequest>) -> Result<tonic::Response<Stock>, Status> {
        self.note_deadline();
        let request = request.into_inner();
        let stock = self
            .warehouse
            .clone()
            .count_stock(request)
            .await
            .map_err(upstream_failed)?;
        Ok(tonic::Response::new(stock.into_inner()))
    }

    type WatchStockStream = ReceiverStream<Result<Stock, Status>>;

    async fn watch_stock(
        &self,
        request: tonic::Request<WatchStockRequest>,
    ) -> Result<tonic::Response<Self::WatchStockStream>, Status> {
        self.note_deadline();
        let WatchStockRequest { sku, updates } = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut warehouse = self.warehouse.clone();
        // The counting task leaves the handler's task: it carries the deadline along.
        let deadline = Deadline::current();
        let counting = async move {
            for _ in 0..updates {
                let counted = warehouse
                    .count_stock(GetStockRequest { sku: sku.clone() })
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(upstream_failed);
                let failed = counted.is_err();
                // The caller went away: stop counting.
                if tx.send(counted).await.is_err() || failed {
                    break;
                }
            }
        };
        match deadline {
            Some(deadline) => tokio::spawn(deadline.scope(counting)),
            None => tokio::spawn(counting),
        };
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}
