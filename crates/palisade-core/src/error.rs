//! Errors shared by every palisade layer and helpers to find them.
//!
//! The protocol-agnostic layers (circuit breaker, bulkhead, retry) return
//! [`BoxError`](crate::BoxError), as tower's own middleware does. Their
//! rejections are small types at the crate root ([`CircuitOpen`],
//! [`BulkheadFull`], [`BulkheadTimeout`]), so a caller can `downcast_ref`
//! them, whichever layer crate produced them, and so [`crate::problem`] can
//! turn any of them into an HTTP response without depending on the layer
//! crates. The helpers here find them however deep they were wrapped.

use std::error::Error;

use crate::deadline::DeadlineExceeded;
use crate::rejection::{BulkheadFull, BulkheadTimeout, CircuitOpen};
pub use crate::transport::{ConnectFailed, TimedOut};

/// Finds the first error of type `E` in `error` or anywhere in its
/// [`source()`](Error::source) chain.
///
/// Layers wrap and box errors; this finds a palisade rejection (or any other
/// typed error) however deep it was wrapped.
///
/// ```
/// use palisade_core::error::find;
/// use palisade_core::{BoxError, CircuitOpen};
/// use std::time::Duration;
///
/// let err: BoxError = CircuitOpen::new("payments", Duration::from_secs(3)).into();
/// let open = find::<CircuitOpen>(&*err).expect("a CircuitOpen");
/// assert_eq!(open.name(), "payments");
/// ```
pub fn find<'a, E: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<&'a E> {
    chain(error).find_map(|e| e.downcast_ref::<E>())
}

/// Iterates over `error` and its [`source()`](Error::source) chain.
pub fn chain<'a>(error: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&e: &&'a (dyn Error + 'static)| e.source())
}

/// True when the error is one of palisade's own local rejections
/// ([`CircuitOpen`], [`BulkheadFull`], [`BulkheadTimeout`],
/// [`DeadlineExceeded`]) anywhere in its chain.
///
/// A local rejection says nothing about the health of the downstream: the
/// breaker does not count it as a failure and the retry policy does not retry it.
pub fn is_local_rejection(error: &(dyn Error + 'static)) -> bool {
    chain(error).any(|e| is_refusal(e) || e.is::<DeadlineExceeded>())
}

/// True when the error is one of palisade's refusals to send a request
/// ([`CircuitOpen`], [`BulkheadFull`], [`BulkheadTimeout`]) anywhere in its
/// chain: no copy of the request left. Unlike [`is_local_rejection`], it
/// leaves out [`DeadlineExceeded`], which also ends requests already sent.
pub fn is_refused_unsent(error: &(dyn Error + 'static)) -> bool {
    chain(error).any(is_refusal)
}

fn is_refusal(error: &(dyn Error + 'static)) -> bool {
    error.is::<CircuitOpen>() || error.is::<BulkheadFull>() || error.is::<BulkheadTimeout>()
}

/// True when the error is a timeout anywhere in its chain: tower's
/// `timeout::error::Elapsed`, tokio's `time::error::Elapsed`, a client error a
/// client adapter marked [`TimedOut`], or an I/O error of kind `TimedOut`.
pub fn is_timeout(error: &(dyn Error + 'static)) -> bool {
    chain(error).any(|e| {
        e.is::<TimedOut>()
            || e.is::<tower::timeout::error::Elapsed>()
            || e.is::<tokio::time::error::Elapsed>()
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

/// True when HTTP/2 says the server did not process the request's stream:
/// an `h2::Error` in the chain from the server refusing it (`RST_STREAM`
/// with `REFUSED_STREAM`, RFC 9113 §8.7), or for a stream above the last one
/// a `GOAWAY` accepted (§6.8; h2 gives only those a remote `GOAWAY` error,
/// and streams cut when the connection then closes a broken pipe). Sending
/// such a request again is safe whatever its method: client adapters mark
/// it [`ConnectFailed`].
#[cfg(feature = "h2")]
pub fn is_unprocessed_h2(error: &(dyn Error + 'static)) -> bool {
    find::<h2::Error>(error)
        .is_some_and(|h2| h2.is_remote() && (h2.reason() == Some(h2::Reason::REFUSED_STREAM) || h2.is_go_away()))
}

/// True when the error shows that a connection could not be established, so
/// the request was never sent: a client error a client adapter marked
/// [`ConnectFailed`], or an I/O error of kind `ConnectionRefused`,
/// `AddrNotAvailable`, `HostUnreachable` or `NetworkUnreachable` anywhere in its
/// chain. hyper-util's and reqwest's connect errors carry such an I/O error as
/// their source when the connection was refused.
pub fn is_connect_error(error: &(dyn Error + 'static)) -> bool {
    use std::io::ErrorKind::*;
    chain(error).any(|e| {
        e.is::<ConnectFailed>()
            || e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable
                )
            })
    })
}

#[cfg(test)]
mod tests {
    use crate::BoxError;
    use std::fmt;
    use std::time::Duration;

    use super::*;

    #[derive(Debug)]
    struct Wrapper(BoxError);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn find_walks_the_source_chain() {
        let inner: BoxError = BulkheadFull::new("inventory", Duration::from_secs(1)).into();
        let outer: BoxError = Box::new(Wrapper(Box::new(Wrapper(inner))));
        let full = find::<BulkheadFull>(&*outer).expect("found two levels down");
        assert_eq!(full.name(), "inventory");
        assert_eq!(full.retry_after(), Duration::from_secs(1));
        assert!(find::<CircuitOpen>(&*outer).is_none());
        assert_eq!(chain(&*outer).count(), 3);
    }

    #[test]
    fn local_rejections_are_recognised_when_wrapped() {
        let cases: Vec<BoxError> = vec![
            CircuitOpen::new("a", Duration::ZERO).into(),
            BulkheadFull::new("b", Duration::ZERO).into(),
            BulkheadTimeout::new("c", Duration::from_millis(5), Duration::ZERO).into(),
            DeadlineExceeded.into(),
        ];
        for (i, err) in cases.into_iter().enumerate() {
            let wrapped: BoxError = Box::new(Wrapper(err));
            assert!(is_local_rejection(&*wrapped));
            // The deadline also ends requests already sent.
            assert_eq!(is_refused_unsent(&*wrapped), i < 3, "{wrapped}");
        }
        let other: BoxError = "connection reset".into();
        assert!(!is_local_rejection(&*other));
        assert!(!is_refused_unsent(&*other));
    }

    #[test]
    fn timeouts_and_connect_errors() {
        let elapsed: BoxError = tower::timeout::error::Elapsed::new().into();
        assert!(is_timeout(&*elapsed));
        let io_timeout: BoxError = std::io::Error::from(std::io::ErrorKind::TimedOut).into();
        assert!(is_timeout(&*io_timeout));
        assert!(!is_connect_error(&*io_timeout));

        for kind in [
            std::io::ErrorKind::ConnectionRefused,
            std::io::ErrorKind::AddrNotAvailable,
            std::io::ErrorKind::HostUnreachable,
            std::io::ErrorKind::NetworkUnreachable,
        ] {
            let err: BoxError = Box::new(Wrapper(std::io::Error::from(kind).into()));
            assert!(is_connect_error(&*err), "{kind:?}");
            assert!(!is_timeout(&*err), "{kind:?}");
        }
        let reset: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
        assert!(!is_connect_error(&*reset));
    }

    #[test]
    fn marked_client_errors_keep_their_own_error() {
        let timed_out: BoxError = Box::new(Wrapper(TimedOut::new("operation timed out").into()));
        assert!(is_timeout(&*timed_out));
        assert!(!is_connect_error(&*timed_out));
        let marker = find::<TimedOut>(&*timed_out).unwrap();
        assert_eq!(marker.to_string(), "operation timed out");
        assert_eq!(marker.get_ref().to_string(), "operation timed out");

        let refused: BoxError = ConnectFailed::new(Wrapper("dns error".into())).into();
        assert!(is_connect_error(&*refused));
        assert!(!is_timeout(&*refused));
        assert!(find::<Wrapper>(&*refused).is_some(), "the client's error is the source");
        assert!(!is_local_rejection(&*refused));
    }

    #[test]
    fn displays_name_the_layer() {
        assert_eq!(
            CircuitOpen::new("payments", Duration::from_secs(2)).to_string(),
            "circuit breaker `payments` is open"
        );
        assert_eq!(
            BulkheadFull::new("db", Duration::ZERO).to_string(),
            "bulkhead `db` is full"
        );
        assert_eq!(
            BulkheadTimeout::new("db", Duration::from_millis(250), Duration::ZERO).to_string(),
            "bulkhead `db` timed out after waiting 250ms for a permit"
        );
    }
}
