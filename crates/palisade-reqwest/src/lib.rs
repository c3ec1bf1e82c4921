//! `reqwest::Client` as a tower `Service`, so palisade's client stack (or
//! any tower middleware) wraps a reqwest client: [`ReqwestService`] takes an
//! `http::Request<B>` and answers an `http::Response<reqwest::Body>`, the
//! body streamed as reqwest streams it.
//!
//! Its errors are `BoxError`s in which palisade recognises reqwest's
//! timeouts and connect errors: a `reqwest::Error` that reqwest calls a
//! timeout ([`is_timeout`](reqwest::Error::is_timeout), which includes the
//! client's own `timeout` and `connect_timeout`) is wrapped in
//! [`TimedOut`](palisade_core::error::TimedOut), one that failed to connect
//! ([`is_connect`](reqwest::Error::is_connect): refused, DNS, TLS handshake)
//! in [`ConnectFailed`](palisade_core::error::ConnectFailed), and so, with
//! the `http2` feature, is a request an HTTP/2 server refused unprocessed
//! (see [Settings](#settings)). So
//! `palisade_core::error::is_timeout` and `is_connect_error` see them, the
//! HTTP retry policy retries them (the request never reached the server, or
//! the timeout is the client's), the breaker counts them, and the retry
//! metrics label them `timeout` and `connect`. The `reqwest::Error` itself
//! stays in the `source()` chain, found by
//! [`palisade_core::error::find`]. Other errors (a body error, a reset
//! connection after the request was sent) are boxed unmarked and, by the
//! HTTP classifier, not retried.
//!
//! The facade's one-call client stack (`palisade::stack::client`, feature
//! `reqwest` of `palisade`) puts this service under the canonical layers.
//!
//! # Install
//!
//! Through the facade, which re-exports this crate as `palisade::reqwest`:
//!
//! ```sh
//! cargo add palisade --features reqwest
//! ```
//!
//! or on its own: `cargo add palisade-reqwest`.
//!
//! # Example
//!
//! A refused connection, recognised as a connect error:
//!
//! ```
//! use palisade_core::error::{find, is_connect_error};
//! use palisade_reqwest::ReqwestService;
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // A port nothing listens on.
//! let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
//! let client = ReqwestService::new(reqwest::Client::new());
//! let req = http::Request::get(format!("http://127.0.0.1:{port}/")).body(String::new())?;
//! let err = client.oneshot(req).await.unwrap_err();
//! assert!(is_connect_error(&*err));
//! assert!(find::<reqwest::Error>(&*err).is_some_and(reqwest::Error::is_connect));
//! # Ok(())
//! # }
//! ```
//!
//! Under a retry layer and a breaker:
//!
//! ```no_run
//! use std::time::Duration;
//! use palisade_circuit_breaker::CircuitBreakerLayer;
//! use palisade_core::HttpClassifier;
//! use palisade_reqwest::ReqwestService;
//! use palisade_retry::HttpRetryLayer;
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let reqwest = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
//! let client = ServiceBuilder::new()
//!     .layer(HttpRetryLayer::builder("payments").build()?)
//!     .layer(CircuitBreakerLayer::builder("payments").classifier(HttpClassifier).build()?)
//!     .service(ReqwestService::new(reqwest));
//! # let _ = client;
//! # Ok(())
//! # }
//! ```
//!
//! # Settings
//!
//! None of its own: timeouts, TLS, proxies, redirects and the pool are the
//! `reqwest::Client`'s. This crate depends on reqwest without its default
//! features, so it compiles no TLS backend and no HTTP/2 of its own; turn on
//! the ones you need (`rustls`, `http2`, ...) in your own `reqwest`
//! dependency and cargo unifies them.
//!
//! reqwest itself sends a request again when an HTTP/2 server refused it
//! unprocessed (`REFUSED_STREAM`, a graceful `GOAWAY`), if it can copy the
//! body: a request without a body goes to it as reqwest's own empty body, so
//! it keeps doing so through this service; a request with a body goes as a
//! stream reqwest cannot copy, and such a refusal comes back as an error.
//! With this crate's `http2` feature (which turns on reqwest's), that error
//! is marked [`ConnectFailed`](palisade_core::error::ConnectFailed): HTTP/2
//! promises the server did not process the request (RFC 9113 §8.7, §6.8),
//! so palisade's retry sends it again as a request that never left, within
//! its method and `Idempotency-Key` rules. Without the feature such an
//! error is boxed unmarked, and not retried.
//!
//! # Order with other layers
//!
//! Innermost, under the per-attempt timeout: client stack, outermost first,
//! total deadline → idempotency key → retry (with budget) → circuit breaker
//! → bulkhead → per-attempt timeout → **reqwest**. The per-attempt timeout
//! and reqwest's own `timeout` both end an attempt as a retryable timeout;
//! set the client's to the same or longer, or leave it out. reqwest's
//! `connect_timeout` is worth keeping short: a connect timeout is retried
//! without doubt that the request reached the server.
//!
//! The `reqwest-middleware` crate is not integrated: its `Middleware` gets
//! the rest of the chain as a borrowed `Next<'_>` with one `&mut Extensions`
//! per call, which a tower retry (sending a request several times from a
//! cloned service) cannot share. Put palisade under reqwest-middleware's
//! chain by building that chain's client on a reqwest client, or put this
//! service under palisade's layers.
//!
//! # Telemetry
//!
//! None of its own: the layers above it report, and the retry policy labels
//! the marked errors `timeout` and `connect`.
//!
//! # Guarantees
//!
//! - Dropping the response future cancels the request, as reqwest does.
//! - A request reqwest cannot take (a URI without a scheme or host) fails
//!   with reqwest's builder error, unmarked, so it is not retried.
//! - Ready at once: reqwest's client queues inside its pool.
//! - No error is converted lossily: the `reqwest::Error` is the marker's
//!   source, or the boxed error itself.
//!
//! # Performance
//!
//! A call converts the request into reqwest's (the URI is parsed as a URL,
//! which allocates, and the body is boxed by `reqwest::Body::wrap`) and the
//! response back (no copy of the body). The future is reqwest's own, named,
//! not boxed again. Nothing is measured beyond reqwest's own cost; see the
//! [benchmark report](https://github.com/palisade-rs/palisade/blob/main/benches/REPORT.md)
//! for the layers above it.

mod error;
pub mod future;
mod service;

pub use service::ReqwestService;
