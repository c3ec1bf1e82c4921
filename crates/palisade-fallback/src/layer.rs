//! [`FallbackLayer`] and its builder.

use std::sync::Arc;

use palisade_core::HttpClassifier;
use tower_layer::Layer;

use crate::error::ConfigError;
use crate::service::Fallback;
use crate::state::Shared;

/// Answers from a fallback service when the inner call's result is
/// classified a failure or is one of palisade's local rejections
/// (`CircuitOpen`, `BulkheadFull`, `BulkheadTimeout`, `DeadlineExceeded`).
/// Makes a [`Fallback`].
///
/// Built by [`FallbackLayer::builder`]; clones share one configuration and
/// clone the fallback service.
pub struct FallbackLayer<F, C = HttpClassifier> {
    fallback: F,
    shared: Arc<Shared<C>>,
}

impl<F: Clone, C> Clone for FallbackLayer<F, C> {
    fn clone(&self) -> Self {
        Self {
            fallback: self.fallback.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<F, C: std::fmt::Debug> std::fmt::Debug for FallbackLayer<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// No fallback given yet.
#[derive(Debug, Clone, Copy)]
pub struct NoFallback;

impl FallbackLayer<NoFallback> {
    /// A builder for a layer named `name` (the `name` label of its metrics).
    pub fn builder(name: &str) -> FallbackBuilder<NoFallback> {
        FallbackBuilder {
            name: name.into(),
            fallback: None,
            classifier: HttpClassifier,
        }
    }
}

impl<F, C> FallbackLayer<F, C> {
    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

impl<S, F: Clone, C> Layer<S> for FallbackLayer<F, C> {
    type Service = Fallback<S, F, C>;

    fn layer(&self, inner: S) -> Fallback<S, F, C> {
        Fallback::new(inner, self.fallback.clone(), self.shared.clone())
    }
}

/// Configures a [`FallbackLayer`].
///
/// Defaults: [`HttpClassifier`] decides what a failure is (every 5xx, 408,
/// 429, transport errors); palisade's local rejections always go to the
/// fallback.
#[derive(Debug, Clone)]
pub struct FallbackBuilder<F, C = HttpClassifier> {
    name: Arc<str>,
    fallback: Option<F>,
    classifier: C,
}

impl<F, C> FallbackBuilder<F, C> {
    /// The fallback: a service taking the [`Failure`](crate::Failure) and
    /// answering the response, or giving the failure back as its error to
    /// decline. A closure works through `tower::service_fn`.
    pub fn fallback<F2>(self, fallback: F2) -> FallbackBuilder<F2, C> {
        FallbackBuilder {
            name: self.name,
            fallback: Some(fallback),
            classifier: self.classifier,
        }
    }

    /// Decides which results are failures.
    pub fn classifier<C2>(self, classifier: C2) -> FallbackBuilder<F, C2> {
        FallbackBuilder {
            name: self.name,
            fallback: self.fallback,
            classifier,
        }
    }

    /// The layer; [`ConfigError::NoFallback`] when no fallback was given.
    pub fn build(self) -> Result<FallbackLayer<F, C>, ConfigError> {
        Ok(FallbackLayer {
            fallback: self.fallback.ok_or(ConfigError::NoFallback)?,
            shared: Arc::new(Shared::new(self.name, self.classifier)),
        })
    }
}
