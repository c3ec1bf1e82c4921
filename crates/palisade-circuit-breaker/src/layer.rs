//! The breaker layer.

use std::fmt;
use std::sync::Arc;

use palisade_core::ErrorClassifier;
use tower_layer::Layer;

use crate::breaker::Breaker;
use crate::config::Config;
use crate::handle::CircuitBreakerHandle;
use crate::service::CircuitBreaker;
use crate::telemetry::{CallCounters, StateGauge};

/// Wraps services in a [`CircuitBreaker`].
///
/// Every service this layer makes shares the layer's one breaker: build one
/// layer per downstream you protect.
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = ErrorClassifier> {
    breaker: Arc<Breaker>,
    classifier: C,
}

impl<C> CircuitBreakerLayer<C> {
    pub(crate) fn from_config(config: Arc<Config>, classifier: C) -> Self {
        let name = config.name.clone();
        let calls = CallCounters::new(&name, config.call_durations);
        let gauge = StateGauge::single(&name);
        Self {
            breaker: Arc::new(Breaker::new(config, name, calls, gauge)),
            classifier,
        }
    }

    /// The handle of this layer's breaker.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(self.breaker.clone())
    }
}

impl<C: fmt::Debug> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("config", self.breaker.config())
            .field("classifier", &self.classifier)
            .finish()
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.breaker.clone(), self.classifier.clone())
    }
}
