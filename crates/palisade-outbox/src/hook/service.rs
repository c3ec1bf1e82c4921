use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::hook::context::OutboxContext;
use crate::hook::future::ResponseFuture;
use crate::hook::wakeup::Wakeup;

/// What a [`PublishHookLayer`](crate::PublishHookLayer) configures, shared by its services.
#[derive(Debug, Clone)]
pub(crate) struct HookConfig {
    pub(crate) wakeup: Wakeup,
    pub(crate) source: Option<Arc<str>>,
    pub(crate) wake_on_safe_methods: bool,
}

/// The publish-hook service; see [`PublishHookLayer`](crate::PublishHookLayer).
///
/// Readiness and errors are the inner service's, untouched. For a request with an unsafe method
/// the relay is woken when the inner future completes, with a response or an error (a handler
/// may have committed before failing); a request dropped before completing wakes nothing and
/// its events go at the next poll.
#[derive(Debug, Clone)]
pub struct PublishHook<S> {
    pub(crate) inner: S,
    pub(crate) config: HookConfig,
}

impl<S> PublishHook<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Consumes the hook, returning the wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for PublishHook<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let context = OutboxContext::from_headers(request.headers(), self.config.source.clone());
        let wakeup =
            (self.config.wake_on_safe_methods || !request.method().is_safe()).then(|| self.config.wakeup.clone());
        request.extensions_mut().insert(context);
        ResponseFuture::new(self.inner.call(request), wakeup)
    }
}
