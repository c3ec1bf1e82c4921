//! [`Idempotency`], the service the layer wraps around the inner one.

use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use palisade_core::telemetry::idempotency::TARGET;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::future::ResponseFuture;
use crate::layer::{IdempotencyLayer, Scope};
use crate::store::IdempotencyStore;
use crate::{hash, key, problem};

/// Replays the first response of requests that carry the same
/// `Idempotency-Key`: see the [crate docs](crate).
///
/// Made by [`IdempotencyLayer`]. The inner service gets the request with its
/// body read into memory, rebuilt as `ReqB::from(bytes)`, so the request body
/// type must implement `From<Bytes>` (axum's `Body` and `Full<Bytes>` do;
/// map hyper's `Incoming` to one of them first). The response body must be
/// `Unpin` (axum's, hyper's and `http-body-util`'s are; box others) because a
/// body too large to store is handed back to the caller after being partly read.
pub struct Idempotency<S, St, Sc> {
    inner: S,
    layer: IdempotencyLayer<St, Sc>,
}

impl<S, St, Sc> Idempotency<S, St, Sc> {
    pub(crate) fn new(inner: S, layer: IdempotencyLayer<St, Sc>) -> Self {
        Self { inner, layer }
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

impl<S: Clone, St, Sc> Clone for Idempotency<S, St, Sc> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, St: fmt::Debug, Sc> fmt::Debug for Idempotency<S, St, Sc> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, St, Sc, ReqB, ResB> Service<Request<ReqB>> for Idempotency<S, St, Sc>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    ReqB: Body + From<Bytes>,
    ResB: Body + Unpin,
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
        let shared = self.layer.shared();
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
                return ResponseFuture::respond(problem::missing_key().into_response_with(ResponseBody::full));
            }
            (Some(_), Some(_)) => return invalid_key(shared),
        };
        let Ok(client_key) = key::parse(value) else {
            return invalid_key(shared);
        };
        if body.size_hint().lower() > config.max_request_body as u64 {
            return ResponseFuture::body_too_large(shared);
        }
        let scope = shared.scope.scope(&parts);
        let store_key = hash::store_key(scope.as_ref(), &parts.method, parts.uri.path(), &client_key);
        drop(client_key);
        // The future calls the instance that was polled ready; this one must
        // be polled again before its next call.
        let ready = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, ready);
        ResponseFuture::keyed(std::sync::Arc::clone(shared), ready, parts, body, store_key)
    }
}

fn invalid_key<S, St, Sc, ReqB, ResB>(shared: &crate::layer::Shared<St, Sc>) -> ResponseFuture<S, ReqB, ResB, St, Sc>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
    St: IdempotencyStore,
{
    shared.metrics.malformed_key.increment(1);
    tracing::debug!(target: TARGET, name = %shared.config.name, reason = "malformed_key", "request refused");
    ResponseFuture::respond(problem::invalid_key().into_response_with(ResponseBody::full))
}
