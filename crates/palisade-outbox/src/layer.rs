use std::sync::Arc;

use tower_layer::Layer;

use crate::relay::Wakeup;
use crate::service::PublishHook;

/// Wraps a server's services in [`PublishHook`]: an [`OutboxContext`](crate::OutboxContext) in
/// every request's extensions, and the relay woken as soon as the response is produced.
#[derive(Debug, Clone)]
pub struct PublishHookLayer {
    pub(crate) wakeup: Wakeup,
    pub(crate) source: Option<Arc<str>>,
}

impl PublishHookLayer {
    /// A layer waking relays through `wakeup` (from [`Relay::wakeup`](crate::Relay::wakeup)).
    pub fn new(wakeup: Wakeup) -> Self {
        Self { wakeup, source: None }
    }

    /// Names the service in the `source` of events staged through the context.
    pub fn source(mut self, source: impl Into<Arc<str>>) -> Self {
        self.source = Some(source.into());
        self
    }
}

impl<S> Layer<S> for PublishHookLayer {
    type Service = PublishHook<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PublishHook {
            inner,
            layer: self.clone(),
        }
    }
}
