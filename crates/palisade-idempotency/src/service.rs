//! [`Idempotency`], the service the layer wraps around the inner one.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use palisade_core::telemetry::idempotency::TARGET;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::disconnect::{Complete, InCaller};
use crate::future::{self, ResponseFuture, Spawn};
use crate::problem::Rejection;
use crate::scope::Scope;
use crate::state::Shared;
use crate::store::IdempotencyStore;
use crate::{hash, key};
use palisade_core::body::announces_more_than;
use palisade_core::problem::ToProblem;

/// Replays the first response of requests that carry the same
/// `Idempotency-Key`: see the [crate docs](crate).
///
/// Made by [`IdempotencyLayer`](crate::IdempotencyLayer). The inner service gets the request with its
/// body read into memory, rebuilt as `ReqB::from(bytes)`, so the request body
/// type must implement `From<Bytes>` (axum's `Body` and `Full<Bytes>` do;
/// map hyper's `Incoming` to one of them first). The response body must be
/// `Unpin` (axum's, hyper's and `http-body-util`'s are; box others) because a
/// body too large to store is handed back to the caller after being partly read.
///
/// With the default [`Complete`](crate::disconnect::Complete) policy, the protected call runs
/// on a task of its own, so the inner future, its response body (and the
/// body's error) and the inner error must be `Send + 'static`; the
/// [`InCaller`](crate::disconnect::InCaller) policies need neither.
pub struct Idempotency<S, St, Sc, D = Complete> {
    inner: S,
    shared: Arc<Shared<St, Sc>>,
    disconnect: PhantomData<fn() -> D>,
}

impl<S, St, Sc, D> Idempotency<S, St, Sc, D> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<St, Sc>>) -> Self {
        Self {
            inner,
            shared,
            disconnect: PhantomData,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, St, Sc, D> Clone for Idempotency<S, St, Sc, D> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            disconnect: PhantomData,
        }
    }
}

impl<S: fmt::Debug, St: fmt::Debug, Sc, D> fmt::Debug for Idempotency<S, St, Sc, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("inner", &self.inner)
            .field("config", &self.shared.config)
            .field("store", &self.shared.store)
            .field("disconnect", &std::any::type_name::<D>())
            .finish()
    }
}

impl<S, St, Sc, ReqB, ResB> Service<Request<ReqB>> for Idempotency<S, St, Sc, Complete>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body + From<Bytes>,
    ResB: Body + Unpin + Send + 'static,
    ResB::Error: Send,
    St: IdempotencyStore,
    Sc: Scope,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB, ResB, St, Sc>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        self.call_with(req, Some(future::spawn), false)
    }
}

impl<S, St, Sc, D, ReqB, ResB> Service<Request<ReqB>> for Idempotency<S, St, Sc, D>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    ReqB: Body + From<Bytes>,
    ResB: Body + Unpin,
    St: IdempotencyStore,
    Sc: Scope,
    D: InCaller,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqB, ResB, St, Sc>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        self.call_with(req, None, D::RELEASE_ON_DROP)
    }
}

impl<S, St, Sc, D> Idempotency<S, St, Sc, D> {
    /// The call of every policy: `spawn` runs the protected call on the
    /// runtime, or (none) the response future runs it and `release_on_drop`
    /// says what dropping it does.
    fn call_with<ReqB, ResB>(
        &mut self,
        req: Request<ReqB>,
        spawn: Option<Spawn<S, ReqB, ResB, St, Sc>>,
        release_on_drop: bool,
    ) -> ResponseFuture<S, ReqB, ResB, St, Sc>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
        ReqB: Body,
        ResB: Body,
        St: IdempotencyStore,
        Sc: Scope,
    {
        let shared = &self.shared;
        let config = &shared.config;
        if !config.methods.contains(req.method()) {
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        let (parts, body) = req.into_parts();
        let mut values = parts.headers.get_all(&config.header).iter();
        let value = match (values.next(), values.next()) {
            (Some(value), None) => value,
            (None, _) if !config.require_key => {
                return ResponseFuture::passthrough(self.inner.call(Request::from_parts(parts, body)));
            }
            (None, _) => {
                shared.metrics.missing_key.increment(1);
                tracing::debug!(target: TARGET, name = %config.name, reason = "missing_key", "request refused");
                return ResponseFuture::respond(Rejection::MissingKey.to_response_with(ResponseBody::full));
            }
            (Some(_), Some(_)) => return invalid_key(shared),
        };
        let Ok(client_key) = key::parse(value) else {
            return invalid_key(shared);
        };
        if announces_more_than(&body, config.max_request_body) {
            return ResponseFuture::body_too_large(shared);
        }
        let scope = shared.scope.scope(&parts);
        let store_key = hash::store_key(scope.as_ref(), &parts.method, parts.uri.path(), &client_key);
        drop(client_key);
        // The future calls the instance that was polled ready; this one must
        // be polled again before its next call.
        let ready = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, ready);
        ResponseFuture::keyed(
            Arc::clone(shared),
            ready,
            parts,
            body,
            store_key,
            spawn,
            release_on_drop,
        )
    }
}

fn invalid_key<S, St, Sc, ReqB, ResB>(shared: &Shared<St, Sc>) -> ResponseFuture<S, ReqB, ResB, St, Sc>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
    St: IdempotencyStore,
{
    shared.metrics.malformed_key.increment(1);
    tracing::debug!(target: TARGET, name = %shared.config.name, reason = "malformed_key", "request refused");
    ResponseFuture::respond(Rejection::InvalidKey.to_response_with(ResponseBody::full))
}
