//! reqwest's errors, marked so palisade recognises their kind.

use palisade_core::BoxError;
use palisade_core::error::{ConnectFailed, TimedOut};

/// Boxes a `reqwest::Error`, marked [`TimedOut`] when reqwest calls it a
/// timeout (its own timeout type is private, so nothing else in its chain
/// says so) and [`ConnectFailed`] when it failed to connect (DNS, refused,
/// TLS handshake) or, with the `http2` feature, when an HTTP/2 server
/// refused it unprocessed. The `reqwest::Error` stays the marker's source.
pub(crate) fn mark(error: reqwest::Error) -> BoxError {
    if error.is_timeout() {
        TimedOut::new(error).into()
    } else if error.is_connect() || unprocessed(&error) {
        ConnectFailed::new(error).into()
    } else {
        error.into()
    }
}

#[cfg(feature = "http2")]
fn unprocessed(error: &reqwest::Error) -> bool {
    palisade_core::error::is_unprocessed_h2(error)
}

#[cfg(not(feature = "http2"))]
fn unprocessed(_: &reqwest::Error) -> bool {
    false
}
