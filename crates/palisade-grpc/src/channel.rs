//! [`channel_error`]: a tonic channel's errors, as palisade's layers
//! understand them.

use palisade_core::BoxError;
use palisade_core::deadline::{Deadline, DeadlineExceeded};
use palisade_core::error::ConnectFailed;

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
/// a failure, retryable) otherwise. The `grpc-timeout` palisade-deadline's
/// `PropagateDeadline` sends is what the deadline leaves less a margin, so
/// the channel fails before the deadline passes: that layer, above, turns an
/// `Elapsed` at the bound it set from the deadline into `DeadlineExceeded`.
///
/// A channel that could not connect (a failed DNS lookup or TLS handshake, a
/// refused connection) fails with tonic's `ConnectError`: the call was never
/// sent, and this marks it [`ConnectFailed`], which the retry retries and
/// the breaker counts as the downstream's failure, as for any client. So is
/// a stream the server refused (`RST_STREAM` with `REFUSED_STREAM`, its
/// maximum of concurrent streams reached), and one above the last stream a
/// server shutting down accepted in its `GOAWAY`: HTTP/2 promises that the
/// server did not process them (RFC 9113 §8.7, §6.8), so sending them again
/// is safe whatever the method. Every other error is boxed unchanged.
///
/// ```
/// use palisade_core::{BoxError, error::is_timeout};
///
/// let expired: BoxError = Box::new(tonic::TimeoutExpired(()));
/// assert!(is_timeout(&*palisade_grpc::channel_error(expired)));
/// ```
pub fn channel_error(error: impl Into<BoxError>) -> BoxError {
    let error = error.into();
    if palisade_core::error::find::<tonic::ConnectError>(&*error).is_some()
        || palisade_core::error::is_unprocessed_h2(&*error)
    {
        return ConnectFailed::new(error).into();
    }
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

    #[test]
    fn a_channel_that_could_not_connect_is_a_connect_error() {
        use palisade_core::error::is_connect_error;
        // What a tonic channel returns when a DNS lookup fails: nothing in it
        // that palisade's classifiers know without the mark.
        let dns = tonic::ConnectError(std::io::Error::other("failed to lookup address").into());
        let marked = channel_error(dns);
        assert!(marked.is::<ConnectFailed>());
        assert!(is_connect_error(&*marked));
        assert!(
            palisade_core::error::find::<tonic::ConnectError>(&*marked).is_some(),
            "kept as the source"
        );
    }
}
