//! [`Fallback`]: answers from a fallback when the inner call fails.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use palisade_core::BoxError;
use tower_service::Service;

use crate::failure::Failure;
use crate::future::ResponseFuture;
use crate::state::Shared;

/// The service of [`FallbackLayer`](crate::FallbackLayer).
pub struct Fallback<S, F, C> {
    inner: S,
    fallback: F,
    shared: Arc<Shared<C>>,
}

impl<S, F, C> Fallback<S, F, C> {
    pub(crate) fn new(inner: S, fallback: F, shared: Arc<Shared<C>>) -> Self {
        Self {
            inner,
            fallback,
            shared,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone, F: Clone, C> Clone for Fallback<S, F, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            fallback: self.fallback.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, F, C: fmt::Debug> fmt::Debug for Fallback<S, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<S, F, C, B> Service<Request<B>> for Fallback<S, F, C>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    F: Service<Failure<S::Response>, Response = S::Response, Error = Failure<S::Response>> + Clone,
    C: palisade_core::Classify<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, F, C, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The head is kept for the fallback: its headers are cloned.
        let (mut kept, ()) = Request::new(()).into_parts();
        kept.method = req.method().clone();
        kept.uri = req.uri().clone();
        kept.version = req.version();
        kept.headers = req.headers().clone();
        kept.extensions = req.extensions().clone();
        ResponseFuture::new(self.inner.call(req), kept, self.fallback.clone(), self.shared.clone())
    }
}
