//! [`RetryLayer`] and [`HttpRetryLayer`]: put a policy around a service.

use palisade_core::{ErrorClassifier, HttpClassifier};
use tower_layer::Layer;

use crate::budget::RetryBudget;
use crate::policy::{HttpRetryPolicy, RetryPolicy};
use crate::service::{BoxErrors, HttpRetry, Retry};

/// Retries any request that can be cloned with a [`RetryPolicy`]: it makes
/// a [`Retry`].
///
/// The inner service may fail with any error that is `Into<BoxError>`: the
/// layer boxes it ([`BoxErrors`]) before the policy classifies it, so the
/// retried service's errors are `BoxError`s.
///
/// Built by [`RetryLayer::builder`]. Clones share the policy's settings and
/// budget.
#[derive(Debug, Clone)]
pub struct RetryLayer<C = ErrorClassifier> {
    policy: RetryPolicy<C>,
}

/// Retries `http::Request`s: a [`RetryLayer`] that also checks methods,
/// replays bodies and honours `Retry-After`. It makes an [`HttpRetry`].
///
/// Built by [`HttpRetryLayer::builder`]. Clones share the policy's settings
/// and budget.
#[derive(Debug, Clone)]
pub struct HttpRetryLayer<C = HttpClassifier> {
    policy: HttpRetryPolicy<C>,
}

impl<C> RetryLayer<C> {
    pub(crate) fn new(policy: RetryPolicy<C>) -> Self {
        Self { policy }
    }

    /// The policy, for tower's `Retry` or `ServiceBuilder::retry` directly.
    pub fn policy(&self) -> &RetryPolicy<C> {
        &self.policy
    }

    /// The retry budget, when one is on: a handle to inspect it or to share
    /// it with another layer.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.policy.budget()
    }
}

impl<C> HttpRetryLayer<C> {
    pub(crate) fn new(policy: HttpRetryPolicy<C>) -> Self {
        Self { policy }
    }

    /// The policy.
    pub fn policy(&self) -> &HttpRetryPolicy<C> {
        &self.policy
    }

    /// The retry budget, when one is on: a handle to inspect it or to share
    /// it with another layer.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.policy.budget()
    }
}

impl<S, C> Layer<S> for RetryLayer<C> {
    type Service = Retry<BoxErrors<S>, RetryPolicy<C>>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(BoxErrors::new(inner), self.policy.clone())
    }
}

impl<S, C> Layer<S> for HttpRetryLayer<C> {
    type Service = HttpRetry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpRetry::new(inner, self.policy.clone())
    }
}
