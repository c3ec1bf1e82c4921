//! The warehouse: the upstream the inventory service asks for its counts.
//!
//! A plain tonic server with no palisade layer, whose answers can be
//! scripted, so the demo and the tests can make it fail, stall or answer
//! slowly, and can see what it was sent (its `grpc-timeout`) and which calls
//! were cancelled.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Code, Request, Response, Status};

use crate::proto::warehouse_server::{Warehouse as WarehouseApi, WarehouseServer};
use crate::proto::{GetStockRequest, Stock};

/// How the warehouse answers one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers this count at once.
    Count(u32),
    /// Fails with this code (a trailers-only response, as tonic sends errors).
    Fail(Code),
    /// Answers this count after a delay.
    Slow(Duration, u32),
    /// Never answers.
    Hang,
}

/// The count answered when nothing is scripted.
pub const DEFAULT_COUNT: u32 = 42;

#[derive(Debug, Default)]
struct State {
    script: Mutex<VecDeque<Behaviour>>,
    calls: AtomicUsize,
    cancelled: AtomicUsize,
    timeouts: Mutex<Vec<Option<String>>>,
}

/// The warehouse service; clones share one script and one record.
#[derive(Debug, Clone, Default)]
pub struct Warehouse {
    state: Arc<State>,
}

impl Warehouse {
    /// A warehouse answering [`DEFAULT_COUNT`] until scripted otherwise.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues answers, one per call, after those already queued; once the
    /// queue is empty, calls get [`DEFAULT_COUNT`].
    pub fn script(&self, behaviours: impl IntoIterator<Item = Behaviour>) {
        self.state.script.lock().unwrap().extend(behaviours);
    }

    /// Calls received.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Calls dropped before they were answered: cancelled by the caller.
    pub fn cancelled(&self) -> usize {
        self.state.cancelled.load(Ordering::SeqCst)
    }

    /// The `grpc-timeout` each call carried, in order.
    pub fn timeouts(&self) -> Vec<Option<String>> {
        self.state.timeouts.lock().unwrap().clone()
    }

    /// Serves the warehouse on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(WarehouseServer::new(self))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
    }
}

/// Counts a call as cancelled when dropped before it was answered.
struct Answering<'a> {
    state: &'a State,
    answered: bool,
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.state.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tonic::async_trait]
impl WarehouseApi for Warehouse {
    async fn count_stock(&self, request: Request<GetStockRequest>) -> Result<Response<Stock>, Status> {
        let state = &*self.state;
        state.calls.fetch_add(1, Ordering::SeqCst);
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        state.timeouts.lock().unwrap().push(timeout);
        let behaviour = state
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Behaviour::Count(DEFAULT_COUNT));
        let mut answering = Answering { state, answered: false };
        let sku = request.into_inner().sku;
        let result = match behaviour {
            Behaviour::Count(available) => Ok(Response::new(Stock { sku, available })),
            Behaviour::Fail(code) => Err(Status::new(code, "warehouse says no")),
            Behaviour::Slow(delay, available) => {
                tokio::time::sleep(delay).await;
                Ok(Response::new(Stock { sku, available }))
            }
            Behaviour::Hang => std::future::pending().await,
        };
        answering.answered = true;
        result
    }
}
