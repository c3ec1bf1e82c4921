//! Transport errors an HTTP client adapter has recognised, for client
//! libraries whose own error types keep the kind private.

use std::error::Error;
use std::fmt;

use crate::BoxError;

macro_rules! transport_kind {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            source: BoxError,
        }

        impl $name {
            /// Marks `error` as this kind; the error stays the
            /// [`source()`](Error::source), findable by `downcast_ref`.
            pub fn new(error: impl Into<BoxError>) -> Self {
                Self { source: error.into() }
            }

            /// The client's own error.
            pub fn get_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
                &*self.source
            }

            /// The client's own error, consuming the marker.
            pub fn into_inner(self) -> BoxError {
                self.source
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.source, f)
            }
        }

        impl Error for $name {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&*self.source)
            }
        }
    };
}

transport_kind! {
    /// A client's error that is a timeout, though nothing in its `source()`
    /// chain says so in a type palisade knows (reqwest's own timeout type is
    /// private, for one). [`is_timeout`](crate::error::is_timeout) recognises
    /// it; its `Display` is the client error's.
    TimedOut
}

transport_kind! {
    /// A client's error that shows the connection was never established, so
    /// the request was not sent (a refused connection, a failed DNS lookup, a
    /// failed TLS handshake). [`is_connect_error`](crate::error::is_connect_error)
    /// recognises it; its `Display` is the client error's.
    ConnectFailed
}
