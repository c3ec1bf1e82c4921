//! [`RetryLayer`]: puts a policy into tower's `Retry`.

use tower_layer::Layer;

use crate::policy::{HttpRetryPolicy, RetryPolicy};
use crate::service::HttpRetry;

/// Wraps a service in tower's `Retry` with a palisade policy.
///
/// With a [`RetryPolicy`] it makes `tower::retry::Retry`; with an
/// [`HttpRetryPolicy`] it makes [`HttpRetry`], which also wraps request
/// bodies for replay. Clones share the policy's budget.
#[derive(Debug, Clone)]
pub struct RetryLayer<P> {
    policy: P,
}

impl<P> RetryLayer<P> {
    /// A layer applying `policy`.
    pub fn new(policy: P) -> Self {
        Self { policy }
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }
}

impl<S, C> Layer<S> for RetryLayer<RetryPolicy<C>> {
    type Service = tower::retry::Retry<RetryPolicy<C>, S>;

    fn layer(&self, inner: S) -> Self::Service {
        tower::retry::Retry::new(self.policy.clone(), inner)
    }
}

impl<S, C> Layer<S> for RetryLayer<HttpRetryPolicy<C>> {
    type Service = HttpRetry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpRetry::new(inner, self.policy.clone())
    }
}
