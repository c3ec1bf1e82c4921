//! [`channel_error`]: a tonic channel's errors, as palisade's layers
//! understand them.

use palisade_core::BoxError;
use palisade_core::deadline::{Deadline, DeadlineExceeded};

/// The error of a tonic `Channel`, for the layers above it: put it right
/// above the channel (`ServiceBuilder::map_err(palisade_grpc::channel_error)`).
///
/// A channel enforces the `grpc-timeout` a request carries and fails with
/// tonic's own `TimeoutExpired` when it passes, which palisade's classifiers
/// do not know (a breaker would count it as a failure of the downstream, the
/// retry would not retry it). This makes it
/// [`DeadlineExceeded`] when the call's deadline
/// ([`Deadline::current`]) has passed (a local rejection: not counted, not
/// retried, answered `DEADLINE_EXCEEDED`), and tower's `Elapsed` (a timeout:
/// a failure, retryable) otherwise. Every other error is boxed unchanged.
///
/// ```
/// use palisade_core::{BoxError, error::is_timeout};
///
/// let expired: BoxError = Box::new(tonic::TimeoutExpired(()));
/// assert!(is_timeout(&*palisade_grpc::channel_error(expired)));
/// ```
pub fn channel_error(error: impl Into<BoxError>) -> BoxError {
    let error = error.into();
    if palisade_core::error::find::<tonic::TimeoutExpired>(&*error).is_none() {
        return error;
    }
    match Deadline::current() {
        Some(deadline) if deadline.is_expired() => DeadlineExceeded.into(),
        _ => tower::timeout::error::Elapsed::new().into(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_timeout_at_the_deadline_is_the_deadline() {
        let deadline = Deadline::after(Duration::from_millis(100));
        deadline
            .scope(async {
                let early = channel_error(tonic::TimeoutExpired(()));
                assert!(early.is::<tower::timeout::error::Elapsed>());
                tokio::time::advance(Duration::from_millis(100)).await;
                assert!(channel_error(tonic::TimeoutExpired(())).is::<DeadlineExceeded>());
            })
            .await;
        assert!(channel_error(tonic::TimeoutExpired(())).is::<tower::timeout::error::Elapsed>());
        let other = channel_error(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(other.is::<std::io::Error>());
    }
}
