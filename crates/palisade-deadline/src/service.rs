//! [`SetDeadline`], the server side, and [`PropagateDeadline`], the client side.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use palisade_core::BoxError;
use palisade_core::deadline::{self, Deadline, GRPC_TIMEOUT, MalformedTimeout, attempt_timeout};
use palisade_core::telemetry::deadline as names;
use tower_service::Service;

use crate::body::DeadlineBody;
use crate::future::{PropagateFuture, ResponseFuture};
use crate::reply::{Reply, TimeoutHeader};
use crate::state::{Client, Server};

/// The service of [`DeadlineLayer`](crate::DeadlineLayer): sets each
/// request's [`Deadline`], answers `504 Gateway Timeout` (or gRPC
/// `DEADLINE_EXCEEDED`) when it passes, and cancels the work.
pub struct SetDeadline<S> {
    inner: S,
    shared: Arc<Server>,
}

impl<S> SetDeadline<S> {
    pub(crate) fn new(inner: S, shared: Arc<Server>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone> Clone for SetDeadline<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for SetDeadline<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetDeadline")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The request's budget: the shortest of the configured one and the
    /// caller's (capped). `Err` names the malformed header.
    fn budget<B>(&self, req: &Request<B>) -> Result<Option<Duration>, TimeoutHeader> {
        let mut budget = self.timeout;
        let mut consider = |found: Duration| {
            let found = found.min(self.max_timeout);
            budget = Some(budget.map_or(found, |b| b.min(found)));
        };
        // Every value of a repeated header counts (a gateway may append its
        // own, tighter budget), and any malformed one refuses the request.
        if self.grpc_timeout {
            for value in req.headers().get_all(GRPC_TIMEOUT) {
                consider(
                    deadline::parse_grpc_timeout(value.as_bytes()).map_err(|MalformedTimeout| TimeoutHeader::Grpc)?,
                );
            }
        }
        if let Some(header) = &self.header {
            for value in req.headers().get_all(header) {
                consider(
                    deadline::parse_millis_list(value.as_bytes()).map_err(|MalformedTimeout| TimeoutHeader::Http)?,
                );
            }
        }
        Ok(budget)
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for SetDeadline<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<DeadlineBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let shared = &self.shared;
        let grpc = palisade_core::is_grpc(req.headers());
        let budget = match shared.budget(&req) {
            Ok(budget) => budget,
            Err(header) => {
                match header {
                    TimeoutHeader::Grpc => shared.malformed_grpc_total.increment(1),
                    TimeoutHeader::Http => shared.malformed_header_total.increment(1),
                }
                tracing::debug!(target: names::TARGET, name = &*shared.name, reason = header.reason(), "malformed timeout header: request refused");
                return ResponseFuture::reply(Reply::Malformed(header), grpc, shared.clone());
            }
        };
        // An enclosing deadline (an outer layer's, or one the request
        // already carries) still holds: the earliest wins.
        let enclosing = Deadline::of(&req);
        let deadline = match (budget.map(Deadline::after), enclosing) {
            (Some(own), Some(outer)) => Some(own.min(outer)),
            (own, outer) => own.or(outer),
        };
        if let Some(deadline) = deadline {
            if deadline.is_expired() {
                shared.exceeded_total.increment(1);
                tracing::debug!(target: names::TARGET, name = &*shared.name, "deadline exceeded on arrival");
                return ResponseFuture::reply(Reply::Exceeded, grpc, shared.clone());
            }
            req.extensions_mut().insert(deadline);
        }
        let inner = &mut self.inner;
        let future = match deadline {
            Some(deadline) => deadline.sync_scope(|| inner.call(req)),
            None => inner.call(req),
        };
        ResponseFuture::called(future, deadline, grpc, shared.clone())
    }
}

/// The service of [`PropagateDeadlineLayer`](crate::PropagateDeadlineLayer):
/// bounds each attempt of an outgoing call by the smaller of its own timeout
/// and what is left of the request's [`Deadline`] less a margin, and tells
/// the downstream that budget (`grpc-timeout`, or the HTTP header).
pub struct PropagateDeadline<S> {
    inner: S,
    shared: Arc<Client>,
}

impl<S> PropagateDeadline<S> {
    pub(crate) fn new(inner: S, shared: Arc<Client>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone> Clone for PropagateDeadline<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for PropagateDeadline<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PropagateDeadline")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for PropagateDeadline<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = PropagateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let shared = &self.shared;
        let deadline = Deadline::of(&req);
        let grpc = palisade_core::is_grpc(req.headers());
        // Where the budget goes: a budget the caller already put there (tonic's
        // `Request::set_timeout` writes `grpc-timeout`) is the call's own bound too.
        let grpc_timeout = GRPC_TIMEOUT;
        let header = if grpc {
            Some(&grpc_timeout).filter(|_| shared.grpc_timeout)
        } else {
            shared.header.as_ref()
        };
        // Every value of a repeated header counts, the shortest winning (a
        // proxy may append its own); a malformed one is no budget, and the
        // one value sent below replaces them all.
        let callers = header.and_then(|name| {
            let parse = if grpc {
                deadline::parse_grpc_timeout
            } else {
                deadline::parse_millis_list
            };
            req.headers()
                .get_all(name)
                .iter()
                .filter_map(|value| parse(value.as_bytes()).ok())
                .min()
        });
        let own = match (shared.timeout, callers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(timeout) = attempt_timeout(own, deadline, shared.margin) else {
            return PropagateFuture::called(self.inner.call(req), None, shared.clone());
        };
        // A budget the header can only say as zero (under a millisecond, in
        // whole milliseconds) is one the downstream answers as exceeded.
        let sent_as_zero = !grpc && header.is_some() && timeout < Duration::from_millis(1);
        if timeout.is_zero() || sent_as_zero {
            return PropagateFuture::exceeded(shared.clone());
        }
        let by_deadline = own.is_none_or(|own| timeout < own);
        if let Some(name) = header {
            let value = if grpc {
                deadline::format_grpc_timeout(timeout)
            } else {
                deadline::format_millis(timeout)
            };
            req.headers_mut().insert(name.clone(), value);
        }
        // Kept in tokio's range, as a deadline is: `timeout` may be huge.
        let at = Deadline::after(timeout).instant();
        PropagateFuture::called(self.inner.call(req), Some((at, by_deadline)), shared.clone())
    }
}
