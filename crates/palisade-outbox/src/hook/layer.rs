use std::sync::Arc;

use tower_layer::Layer;

use crate::hook::service::{HookConfig, PublishHook};
use crate::hook::wakeup::Wakeup;

/// Wraps a server's services in [`PublishHook`]: an [`OutboxContext`](crate::OutboxContext) in
/// every request's extensions, and the relay woken as soon as the response to a request with an
/// unsafe method (`POST`, `PUT`, `PATCH`, `DELETE`, ...) is produced.
///
/// Requests with a safe method (`GET`, `HEAD`, `OPTIONS`, `TRACE`) change no state, so they
/// stage no events and wake nothing: reads under load cost the relay no claims. A service that
/// does stage events on safe methods turns that off with
/// [`wake_on_safe_methods`](PublishHookLayer::wake_on_safe_methods).
#[derive(Debug, Clone)]
pub struct PublishHookLayer {
    config: HookConfig,
}

/// [`PublishHookLayer::new`]: so `ServiceBuilder` methods take the wakeup itself.
impl From<Wakeup> for PublishHookLayer {
    fn from(wakeup: Wakeup) -> Self {
        Self::new(wakeup)
    }
}

impl PublishHookLayer {
    /// A layer waking relays through `wakeup` (from [`Relay::wakeup`](crate::Relay::wakeup)).
    pub fn new(wakeup: Wakeup) -> Self {
        Self {
            config: HookConfig {
                wakeup,
                source: None,
                wake_on_safe_methods: false,
            },
        }
    }

    /// Wakes the relay after requests with safe methods too (default `false`), for services
    /// whose `GET` handlers stage events.
    pub fn wake_on_safe_methods(mut self, wake: bool) -> Self {
        self.config.wake_on_safe_methods = wake;
        self
    }

    /// Names the service in the `source` of events staged through the context.
    pub fn source(mut self, source: impl Into<Arc<str>>) -> Self {
        self.config.source = Some(source.into());
        self
    }
}

impl<S> Layer<S> for PublishHookLayer {
    type Service = PublishHook<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PublishHook {
            inner,
            config: self.config.clone(),
        }
    }
}
