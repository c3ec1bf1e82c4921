//! gRPC servers answer palisade's rejections with gRPC statuses.
//!
//! A tonic server turns only its own errors (`Status`, h2's, hyper's) into
//! statuses: a [`BulkheadFull`] or [`CircuitOpen`] from a layer inside
//! `Server::builder().layer(..)` would end the call as a reset stream or
//! `UNKNOWN`, which a client can neither retry safely nor back off from.
//! [`GrpcStatusLayer`] sits outermost in the server's stack and answers every
//! error of the layers inside it with a **trailers-only** gRPC response
//! (`200 OK` whose head carries `grpc-status`, no messages): the right code,
//! a fixed message that never carries the error's own text, and, when the
//! rejection knows when to come back, the wait the way gRPC clients read it
//! (`grpc-retry-pushback-ms`, and a `google.rpc.RetryInfo` in
//! `grpc-status-details-bin`). The service it makes is infallible.
//!
//! The client half of gRPC lives in the other crates: the breaker judges a
//! call by the status in its trailers with `AtEos(GrpcClassifier)`
//! (`palisade_core::eos`), and `palisade_retry::GrpcRetryLayer` retries as
//! gRPC's retry design says, honouring the pushback this layer sends.
//!
//! # Install
//!
//! Through the facade, which re-exports this crate as `palisade::grpc`:
//!
//! ```sh
//! cargo add palisade --features grpc
//! ```
//!
//! or on its own: `cargo add palisade-grpc`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::{BoxError, BulkheadFull};
//! use palisade_grpc::GrpcStatusLayer;
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! // Stands in for a tonic server's routes behind a full bulkhead.
//! let routes = tower::service_fn(|_req: http::Request<()>| async {
//!     Err::<http::Response<String>, BoxError>(BulkheadFull::new("inventory", Duration::from_millis(250)).into())
//! });
//! let svc = GrpcStatusLayer::builder("inventory").build()?.layer(routes);
//!
//! let res = svc.oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(res.status(), 200); // trailers-only: the status is in the head
//! assert_eq!(res.headers()["content-type"], "application/grpc");
//! assert_eq!(res.headers()["grpc-status"], "14"); // UNAVAILABLE
//! assert_eq!(res.headers()["grpc-retry-pushback-ms"], "250");
//! assert!(res.headers().contains_key("grpc-status-details-bin"));
//! # Ok(())
//! # }
//! ```
//!
//! With tonic, in outline (`palisade::stack::grpc_server` puts these layers in
//! this order, and `examples/tonic-stack` is a whole server and client with
//! generated code, tested end to end):
//!
//! ```ignore
//! tonic::transport::Server::builder()
//!     .layer(GrpcStatusLayer::builder("inventory").build()?)
//!     .layer(deadline)   // grpc-timeout in, DEADLINE_EXCEEDED when it passes
//!     .layer(bulkhead)   // BulkheadFull → UNAVAILABLE with pushback
//!     .add_service(InventoryServer::new(service))
//!     .serve(addr)
//!     .await?;
//! ```
//!
//! # Statuses
//!
//! | error (anywhere in the `source()` chain) | code | pushback and `RetryInfo` |
//! |---|---|---|
//! | [`CircuitOpen`] | `UNAVAILABLE` | the time until the breaker may admit; none when it cannot say (see below) |
//! | [`BulkheadFull`] | `UNAVAILABLE` (or `RESOURCE_EXHAUSTED`, see below) | the bulkhead's hint |
//! | [`BulkheadTimeout`] | as [`BulkheadFull`] | the bulkhead's hint |
//! | tower's `load_shed::error::Overloaded` | `UNAVAILABLE` | none |
//! | tower's or tokio's `Elapsed` (a timeout layer) | `DEADLINE_EXCEEDED` | none |
//! | `DeadlineExceeded` (the request's deadline passed: palisade-deadline) | `DEADLINE_EXCEEDED` | none |
//! | a connect error (refused, unreachable: in a client stack) | `UNAVAILABLE` | none |
//! | anything else | `UNKNOWN` | none |
//!
//! With the `tonic` feature, a tonic `Status` found in the chain keeps its
//! code (with the fixed message "the call failed"); an error the table does
//! not place but whose chain holds tonic's `ConnectError` (a tonic channel
//! that could not connect: a failed DNS lookup or TLS handshake, a missing
//! Unix socket) answers as a connect error, `UNAVAILABLE`, as tonic's own
//! conversion would; an HTTP/2 error under the channel's (h2's) answers
//! the code of gRPC's HTTP/2 mapping: `REFUSED_STREAM` and a stream above a
//! `GOAWAY`'s last accepted one (the server did not process the call)
//! `UNAVAILABLE`, `CANCEL` `CANCELLED`,
//! `ENHANCE_YOUR_CALM` `RESOURCE_EXHAUSTED`, `INADEQUATE_SECURITY`
//! `PERMISSION_DENIED`, `STREAM_CLOSED` `UNKNOWN`, every other error code
//! `INTERNAL`. And
//! [`channel_error`] turns a tonic channel's `TimeoutExpired` into a passed
//! deadline or a timeout, and a connect error or a stream the server did
//! not process (refused, or above a `GOAWAY`) into
//! [`ConnectFailed`](palisade_core::error::ConnectFailed) (never processed:
//! retried whatever the method), before the breaker and the retry see it.
//!
//! `grpc-message` is one fixed sentence per row ("the service is at
//! capacity; try again later", ...): an error's own text may name hosts,
//! queries or internals and stays on the server. The pushback is given in
//! whole milliseconds, rounded up. A rejection with a zero wait sends none
//! (a breaker that cannot say when it will admit, forced open by an
//! operator or half-open with every probe slot taken, whose [`CircuitOpen`]
//! carries a zero wait; a bulkhead built with a zero `retry_after`), and clients
//! back off on their own schedule (gRFC A6): a pushback of `0` would have
//! them retry at once into the same rejection, every attempt in an instant.
//!
//! **Why `UNAVAILABLE` for a full bulkhead.** gRPC's status-code guide says
//! to use `UNAVAILABLE` "if the client can retry just the failing call", and
//! describes it as "most likely a transient condition, which can be corrected
//! by retrying with a backoff"; `RESOURCE_EXHAUSTED` is for an exhausted
//! resource such as "a per-user quota, or perhaps the entire file system",
//! which retrying the same call does not cure. A bulkhead rejects the call
//! before the handler runs, so nothing was processed and the same call may
//! succeed in a moment or on another replica: that is `UNAVAILABLE`, the one
//! code gRPC clients retry by default (gRFC A6), and the pushback tells them
//! when. A service whose bulkheads stand for per-tenant quotas can answer
//! `RESOURCE_EXHAUSTED` instead with
//! [`bulkhead_code`](GrpcStatusBuilder::bulkhead_code).
//!
//! # Settings
//!
//! | setting | default | why |
//! |---|---|---|
//! | [`bulkhead_code`](GrpcStatusBuilder::bulkhead_code) | `UNAVAILABLE` | see above; `build()` refuses any code but it and `RESOURCE_EXHAUSTED` |
//! | [`retry_info`](GrpcStatusBuilder::retry_info) | on | clients using `google.rpc` error details (tonic-types, grpc-java's `StatusProto`) read the wait there |
//!
//! # Order with other layers
//!
//! Server stack, outermost first: **gRPC statuses** → deadline (from
//! `grpc-timeout`) → bulkhead → timeout → the service. It must be outside
//! every layer whose errors it answers, and tonic puts a layer given first
//! outermost. Readiness errors are answered too: the next call gets the
//! status instead of reaching the inner service.
//!
//! It serves a client stack the same way: outermost around the retry,
//! breaker, bulkhead and timeout over a tonic `Channel`, it turns their
//! errors into statuses a tonic client reads as such (`UNAVAILABLE` with the
//! pushback in the status's metadata for an open breaker), where tonic's own
//! conversion would call them `UNKNOWN`.
//!
//! # Telemetry
//!
//! `palisade_grpc_rejections_total` (counter; labels `name` and `reason`:
//! `circuit_open`, `bulkhead_full`, `bulkhead_timeout`, `overloaded`,
//! `timeout`, `deadline`, `unreachable`, `other`), registered in `build()` for every reason. Tracing,
//! target `palisade::grpc`: a `debug` event per answered error with the
//! fields `name`, `reason` and `code`.
//!
//! # Guarantees
//!
//! - Responses pass through untouched; only errors are answered.
//! - The service never fails and never panics on an error; tonic always gets
//!   a well-formed gRPC response, never a reset stream.
//! - A dropped call holds nothing of this layer's.
//!
//! # Performance
//!
//! A call that succeeds costs a clone of one `Arc` (the configuration) and
//! the match on the inner result. An answered error walks the error's
//! `source()` chain once, bumps one counter and builds the headers; with a
//! pushback and `RetryInfo` it encodes about thirty bytes of protobuf and
//! base64. No figures are recorded yet in the
//! [benchmark report](https://github.com/palisade-rs/palisade/blob/main/benches/REPORT.md).
//!
//! [`BulkheadFull`]: palisade_core::BulkheadFull
//! [`BulkheadTimeout`]: palisade_core::BulkheadTimeout
//! [`CircuitOpen`]: palisade_core::CircuitOpen

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "tonic")]
mod channel;
mod details;
mod error;
mod layer;
mod status;

#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub use channel::channel_error;
pub use error::ConfigError;
pub use layer::{GrpcStatusBuilder, GrpcStatusLayer, GrpcStatusService};
pub use status::{GrpcStatus, GrpcStatuses, Reason};
