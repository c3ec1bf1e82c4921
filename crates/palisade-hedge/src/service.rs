//! [`Hedge`]: sends hedges of safe HTTP requests.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use palisade_retry::ReplayBody;
use tower_service::Service;

use crate::future::{ResponseFuture, replicate};
use crate::state::Shared;

/// The service of [`HedgeLayer`](crate::HedgeLayer).
///
/// Takes `http::Request<B>` and hands the inner service
/// `http::Request<ReplayBody<B>>`, so a hedge can send the body again, as
/// palisade-retry's `HttpRetry` does.
pub struct Hedge<S, C> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S, C> Hedge<S, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<C>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, C> Clone for Hedge<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for Hedge<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, C, B, ResB> Service<Request<B>> for Hedge<S, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResB>> + Clone,
    S::Error: palisade_core::AsError,
    B: Body,
    C: palisade_core::Classify<Response<ResB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, B, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        if shared.deposits
            && let Some(budget) = &shared.budget
        {
            budget.deposit();
        }
        // A gRPC request stream's length is unknown until it ends: it is kept
        // while it stays within the limit, as `GrpcRetry` keeps it.
        let limit = shared.replay_limit;
        let req = if palisade_core::is_grpc(req.headers()) {
            req.map(|body| ReplayBody::up_to(body, limit))
        } else {
            req.map(|body| ReplayBody::new(body, limit))
        };
        let next = (shared.is_safe(req.method(), req.uri(), req.headers()))
            .then(|| replicate(&req))
            .flatten()
            .map(|template| {
                // The clone takes the readied service's place; the call goes
                // to the service readied by `poll_ready`.
                let clone = self.inner.clone();
                (std::mem::replace(&mut self.inner, clone), template)
            });
        match next {
            Some((mut readied, template)) => {
                let original = readied.call(req);
                ResponseFuture::new(original, Some((readied, template)), shared.clone())
            }
            None => ResponseFuture::new(self.inner.call(req), None, shared.clone()),
        }
    }
}
