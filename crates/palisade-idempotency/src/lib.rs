//! Idempotency-Key middleware for tower HTTP services: a client that retries
//! a state-changing request (after a timeout, a dropped connection, a 503)
//! gets the original result instead of a second charge, across several server
//! instances when the store is shared.
//!
//! It follows the IETF httpapi draft "The Idempotency-Key HTTP Header Field"
//! and Stripe's practice.
//!
//! # Install
//!
//! Through the facade, which re-exports this crate as `palisade::idempotency`:
//!
//! ```sh
//! cargo add palisade --features idempotency
//! ```
//!
//! or on its own, where the features have the backends' names: `cargo add
//! palisade-idempotency --features redis`. Shared stores are features of their
//! own: `idempotency-redis` (a Redis server or Redis Cluster) and
//! `idempotency-postgres`.
//!
//! # What it does
//!
//! For requests with a protected method (default POST and PATCH):
//!
//! | request | answer | inner service called |
//! |---|---|---|
//! | no `Idempotency-Key` | passes through, unprotected (default), or **400** with [`require_key`](IdempotencyBuilder::require_key) | yes / no |
//! | key not 1–255 printable ASCII characters (as an sf-string `"abc"`, spaces allowed, or a bare `abc`), or the header twice | **400** | no |
//! | body larger than [`max_request_body`](IdempotencyBuilder::max_request_body) | **413** | no |
//! | first use of the key | runs; the response is stored (see below) | yes |
//! | repeat after completion | the stored response, byte for byte, plus `Idempotent-Replayed: true` | no |
//! | repeat while the first is in flight | **409** with `Retry-After` (palisade-retry retries it after that wait, and a palisade-hedge hedge leaves the first to answer) | no |
//! | same key, same method and path, different query or body | **422** | no |
//! | same key on another method or path | another key (keys are scoped to method and path, below): runs | yes |
//! | the store fails, does not answer within the [store timeout](IdempotencyBuilder::store_timeout), or is full | **503** with `Retry-After` (fail closed, default) or passes through unprotected ([`fail_open`](IdempotencyBuilder::fail_open)) | no / yes |
//!
//! Every rejection is an RFC 9457 `application/problem+json` response made
//! through [`ToProblem`](palisade_core::problem::ToProblem), as in every
//! palisade HTTP layer; its `type` is one of [`problem::types`],
//! and it never carries internal details. Other methods pass through
//! untouched.
//!
//! - **Key scope.** The stored key is SHA-256 of the request's
//!   [`Scope`] (e.g. the authenticated principal from request extensions),
//!   method, path and the client's key, so one tenant can never replay
//!   another's response. [`HeaderScope`] scopes by a header's value as
//!   sent: a credential that changes between a request and its retry (a
//!   refreshed OAuth token, a per-request signature) is a new scope, where
//!   the retry runs again, so scope by the principal it authenticates (an
//!   extension your authentication layer sets) unless the header is stable,
//!   such as an API key. The default [`GlobalScope`] is one scope for all.
//! - **Fingerprint.** SHA-256 of method, path, query and body. The body is
//!   read into memory (up to the cap) before the store is asked, and handed
//!   to the inner service as `ReqB::from(bytes)` (request trailers are
//!   neither fingerprinted nor forwarded).
//! - **Lock.** The first request takes an in-flight lock in the store
//!   (atomic `begin`) that expires after [`lock_expiry`](IdempotencyBuilder::lock_expiry)
//!   (default 60 s), so a crashed instance frees its keys. After expiry a
//!   new request may take the key over; each lock carries a fencing token
//!   ([`Lease`]), so the stale owner's late completion is not stored over
//!   the new owner's. Set the expiry above the longest your handler takes
//!   to answer, counting the response body: the layer reads the body whole,
//!   under the lock, before it stores it, and a handler timeout such as
//!   tower-http's `TimeoutLayer` bounds only the time to the response head.
//!   A body still arriving when the lock expires lets a retry take the key
//!   over and run the handler again.
//! - **What is stored.** Status, headers and body (up to
//!   [`max_response_body`](IdempotencyBuilder::max_response_body)) for
//!   [`retention`](IdempotencyBuilder::retention) (default 24 h), when
//!   [`store_status`](IdempotencyBuilder::store_status) says so (default
//!   2xx and 4xx except 400, 408, 422, 425 and 429: like Stripe, a request
//!   refused as invalid is not remembered, so the corrected retry runs). Hop-by-hop
//!   headers are never stored, nor `Set-Cookie` unless
//!   [`store_set_cookie`](IdempotencyBuilder::store_set_cookie). The
//!   layer waits for the store to confirm before answering, so a retry that
//!   arrives after the first answer is a replay.
//! - **What releases the key.** A response not to be stored (5xx, 408, 425,
//!   429, 400, 422), a response body over the cap or ending in trailers (a gRPC
//!   response; either is passed through whole, not stored, as trailers are
//!   not stored), and an error of the inner service: the client may then retry and the
//!   request runs again. That includes a 504 from a timeout inside this
//!   layer (the server stack's; tower-http's `TimeoutLayer` answers 408), which cuts the handler wherever it was: a
//!   handler whose effects must not repeat passes its key on to what it
//!   calls (a payments provider's own idempotency key), so the rerun finds
//!   them done. Nothing else does once the handler has been called
//!   (unless the [`disconnect::Release`] policy was chosen). A failure of the
//!   store (or its timeout) while storing the response after the handler succeeded leaves the
//!   key locked until its lock expires (the caller still gets the response;
//!   a retry gets 409 until then and runs again only after it), and so do
//!   a response body that fails after the handler answered (the caller gets
//!   the failure) and a panicking handler. What a caller that goes away does is the
//!   [disconnect policy](#disconnects).
//!
//! # Disconnects
//!
//! A caller may go away while its request runs: the client disconnects, a
//! timeout layer outside this one fires, and the response future is
//! dropped. The handler may already have acted (charged a card), so the
//! layer must not let a retry run it again. The policy is chosen with
//! [`on_disconnect`](IdempotencyBuilder::on_disconnect):
//!
//! | policy | the protected call | caller gone after the key is locked | cost |
//! |---|---|---|---|
//! | [`disconnect::Complete`] (default) | runs on a tokio task of its own | it still finishes and its response is stored: a retry gets 409 while it runs, then the stored response | the inner future, its response body (and body error) and the inner error must be `Send + 'static`; one task spawned per first request (about 1.3 µs, see [Performance](#performance)) |
//! | [`disconnect::KeepLocked`] | runs in the response future | the key stays locked until its lock expires: a retry gets 409 until then, and runs again after it | no task, no extra bounds; the retry waits up to `lock_expiry` |
//! | [`disconnect::Release`] | runs in the response future | while the handler runs, the key is released (spawned on the current runtime, fenced by the lease; without a runtime the lock expires): a retry runs again | only right for handlers whose effects are undone when dropped |
//!
//! With [`Complete`](disconnect::Complete), the task runs in the caller's
//! tracing span; task-locals of the caller's task are not carried over.
//! Replays and rejections spawn nothing. Polled outside a tokio runtime,
//! the call runs in the response future as with
//! [`KeepLocked`](disconnect::KeepLocked). A handler that panics panics its
//! caller too (the panic is resumed from the task), and a runtime shutting
//! down under a running task answers **503** (`Retry-After` the lock
//! expiry); in both cases the key stays locked until its lock expires.
//! Dropping the response future before the key is locked holds nothing,
//! whatever the policy. Dropped while the store's answer to `begin` is on
//! its way (the store may have locked the key already), the answer is
//! awaited on a task of its own, for a whole store timeout from then, and a
//! lock it took is released, whatever the policy: the handler never ran, so
//! a retry runs it instead of getting 409 until the lock expires. Without a
//! runtime to await it on, such a lock expires.
//!
//! Once the handler has answered, its effects stand whatever the policy:
//! dropped while its response is read, the key stays locked until its lock
//! expires, with [`Release`](disconnect::Release) too. Dropped while the
//! store's answer to what the layer decided is on its way (storing the
//! response, or releasing the key after an error or a response it does not
//! store), the same operation is made again from a task of its own, bounded
//! by the store timeout and fenced by the lease (a first try that took
//! effect makes the second change nothing): a retry gets the stored
//! response, or runs the handler. Without a runtime, the lock expires.
//!
//! # Defaults
//!
//! | setting | default | why |
//! |---|---|---|
//! | methods | POST, PATCH | the non-idempotent methods; PUT and DELETE are idempotent by definition |
//! | header | `Idempotency-Key` | the draft's name |
//! | key required | no | adding the layer must not break clients that send none |
//! | lock expiry | [`DEFAULT_LOCK_EXPIRY`] (60 s) | longer than almost any handler, short enough to recover from a crash |
//! | retention | [`DEFAULT_RETENTION`] (24 h) | Stripe's; covers client retries across a day |
//! | request body cap | [`DEFAULT_MAX_REQUEST_BODY`] (1 MiB) | the body is held in memory for the fingerprint |
//! | response body cap | [`DEFAULT_MAX_RESPONSE_BODY`] (1 MiB) | stored responses are held in the store |
//! | stored statuses | [`default_store_status`]: 2xx, 4xx except 400, 408, 422, 425, 429 | 5xx, 408, 425 and 429 mean "try again", 400 and 422 "invalid, correct it": the key is released |
//! | caller gone | [`disconnect::Complete`]: the call finishes on a task | a charge made for a client that went away is answered to its retry |
//! | `Set-Cookie` stored | no | a session cookie must not go to whoever holds the key |
//! | store failure | fail closed (503) | running a payment twice is worse than refusing it |
//! | store timeout | [`DEFAULT_STORE_TIMEOUT`] (3 s) per store call | a stalled connection must not hold requests forever; a healthy store answers in milliseconds |
//! | 409 `Retry-After` | [`DEFAULT_CONFLICT_RETRY_AFTER`] (1 s) | a request in flight usually ends within a second |
//! | 503 `Retry-After` | the store's own time (a full [`MemoryStore`]: until its oldest record expires), else [`DEFAULT_UNAVAILABLE_RETRY_AFTER`] (1 s) | a backend hiccup usually passes within a second |
//! | store | [`MemoryStore`], at most [`DEFAULT_MAX_KEYS`] keys; when full, new keys get 503, stored responses are never evicted | no infrastructure; use Redis or Postgres with several instances |
//!
//! # Stores
//!
//! One trait, [`IdempotencyStore`], with atomic `begin` / `complete` /
//! `release`: [`MemoryStore`] (default), [`redis::RedisStore`]
//! (feature `redis`: one round trip per operation, Lua scripts, configurable
//! key prefix) and [`postgres::PostgresStore`] (feature `postgres`,
//! sqlx: `INSERT .. ON CONFLICT`, a shipped migration applied by
//! `migrate()`, and `cleanup_expired()` to schedule). See [`IdempotencyStore`].
//!
//! **Lost connections.** A store call that fails because its connection
//! dropped is a store failure (503, the key state kept safe as above); the
//! store then serves again by itself, without a restart:
//! [`RedisStore`](redis::RedisStore) runs on redis's
//! `ConnectionManager` by default, which connects again in the background
//! (a bare `MultiplexedConnection` never does, so do not hand it one in
//! production), and [`PostgresStore`](postgres::PostgresStore)'s sqlx
//! pool drops a broken connection and opens a new one for the next call.
//!
//! **Stalled connections.** Neither sqlx nor redis bounds a call by default,
//! and a connection that stays open while no answer comes back would hold a
//! request forever. The layer bounds every store call by its
//! [`store_timeout`](IdempotencyBuilder::store_timeout) (default
//! [`DEFAULT_STORE_TIMEOUT`], 3 s): a `begin` over it answers 503 with
//! `Retry-After` (the stalled `begin` may still have locked the key, and then
//! retries get 409 until its lock expires; the handler has not run), a
//! `complete` over it leaves the key locked until its lock expires exactly as
//! a failed write does (the caller still gets its response; the write may
//! still land, and retries then get it replayed), and a `release` over it
//! leaves the lock to expire. Set the store client's own bounds as well
//! (sqlx's `acquire_timeout`, redis's `ConnectionManagerConfig`
//! response timeout) so its connections are freed sooner.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::post};
//! use palisade_idempotency::IdempotencyLayer;
//! use tower::ServiceExt;
//!
//! # #[derive(Clone)] struct Principal(String);
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let idempotency = IdempotencyLayer::builder("idempotency")
//!     .scope(|parts: &http::request::Parts| {
//!         parts.extensions.get::<Principal>().map(|p| p.0.clone()).unwrap_or_default()
//!     })
//!     .require_key(true)
//!     .build()
//!     .expect("valid configuration");
//! let app: Router = Router::new()
//!     .route("/orders", post(|body: String| async move { (http::StatusCode::CREATED, body) }))
//!     .layer(idempotency);
//!
//! let order = || {
//!     http::Request::post("/orders")
//!         .header("idempotency-key", "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"")
//!         .body(axum::body::Body::from("{\"sku\":\"A\"}"))
//!         .unwrap()
//! };
//! let first = app.clone().oneshot(order()).await.unwrap();
//! assert_eq!(first.status(), 201);
//! let retry = app.oneshot(order()).await.unwrap();
//! assert_eq!(retry.status(), 201);
//! assert_eq!(retry.headers()["idempotent-replayed"], "true");
//! # }
//! ```
//!
//! With a shared store (feature `redis`):
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # async fn shared() -> Result<(), Box<dyn std::error::Error>> {
//! use palisade_idempotency::{IdempotencyLayer, redis::RedisStore};
//!
//! // A ConnectionManager connects again by itself after its connection drops.
//! let conn = redis::aio::ConnectionManager::new(redis::Client::open("redis://127.0.0.1/")?).await?;
//! let layer = IdempotencyLayer::builder("idempotency").store(RedisStore::new(conn)).build()?;
//! # let _ = layer; Ok(()) }
//! ```
//!
//! # Types the layer needs
//!
//! The request body must implement `From<Bytes>` (axum's `Body` and
//! `http_body_util::Full<Bytes>` do; map hyper's `Incoming` into one first),
//! the response body must be `Unpin` (axum's, hyper's and http-body-util's
//! are; box others), and the inner service `Clone` (the response future
//! calls the instance that was polled ready, as tower's contract wants).
//! With the default [`disconnect::Complete`] policy the inner future, the
//! response body, its error and the inner error must also be
//! `Send + 'static` (axum's, hyper's and tonic's are); the other policies
//! do not ask for it. Responses come back as `Response<`[`ResponseBody`]`<B>>`.
//!
//! # Ordering with other layers
//!
//! Server stack, outermost first: tracing / request id → webhook verify →
//! **idempotency** → outbox hook → bulkhead → timeout → handler. Anything
//! that establishes the principal (authentication) goes outside it, so the
//! scope can read it. A replay is cheap and skips everything inside, and a
//! 503 from a bulkhead inside it is not stored, so the retry runs.
//!
//! Client stack: [`client::SetIdempotencyKeyLayer`] goes outside the retry
//! layer, so every attempt of one logical request carries the same key:
//! key → total deadline → retry → circuit breaker → bulkhead → timeout → client.
//!
//! # Telemetry
//!
//! An event hook set with the builder's `on_event` hears of every replay (`LayerEvent::IdempotencyReplayed`) and conflict (`LayerEvent::IdempotencyConflict`, `in_flight` or `mismatch`), on the
//! calling task ([`palisade_core::events`]); unset, it costs nothing.
//!
//! - Metric `palisade_idempotency_requests_total` (counter), labels `name`
//!   and `outcome`: `first`, `replayed`, `conflict` (409), `mismatch` (422),
//!   `invalid` (with `reason` `missing_key`, `malformed_key`,
//!   `body_too_large`, `unreadable_body`), `store_error` (with `reason`
//!   `fail_closed` or `fail_open`). Counters are registered when the layer
//!   is built, so
//!   [install the recorder before building the layer](palisade_core::telemetry#install-the-recorder-before-building-layers).
//! - Metric `palisade_idempotency_store_duration_seconds` (histogram, in
//!   seconds), labels `name` and `operation` (`begin`, `complete`,
//!   `release`): every store operation, failed or timed out included (two
//!   clock reads and a record per operation).
//! - Tracing target `palisade::idempotency`: debug events for rejections and
//!   replays, warnings for store failures, lost leases and failed releases,
//!   with the fields `name` and `reason`.
//!
//! # Performance
//!
//! A method the layer does not protect is passed through after a check of
//! its method. A protected request has its body read and its key and body
//! hashed (SHA-256) before the store is asked; a replay then costs one store
//! lookup and builds the stored response, a first request takes the lock,
//! runs the service and stores its response. With a shared store each store
//! step is a round trip, one for a replay and two (`begin` and `complete`)
//! for a first request, and the round trips are most of the time.
//!
//! **Headline cost**: with the memory store, about 0.5 µs and three
//! allocations over the bare HTTP service for a replay, 1.0 µs and five for
//! a first request, the same with 1,000 or 1,000,000 responses stored; every
//! figure, beside its references and with the machine and load it was
//! measured on, is in the
//! [benchmark report](https://github.com/palisade-rs/palisade/blob/main/benches/REPORT.md).
//!
//! The default [`disconnect::Complete`] spawns one task per first request
//! (about 1.3 µs over [`disconnect::KeepLocked`] in a run on a loaded
//! machine), and a full memory store makes room in O(log n) whatever it holds.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
pub mod client;
pub mod disconnect;
mod error;
pub mod future;
mod hash;
mod key;
mod layer;
mod measured;
pub mod problem;
mod scope;
mod service;
mod state;
mod store;
mod sync;

pub use body::ResponseBody;
pub use error::{ConfigError, StoreError, StoreErrorKind};
pub use hash::{Fingerprint, StoreKey};
pub use key::{MAX_KEY_LEN, parse_key};
pub use layer::{
    DEFAULT_CONFLICT_RETRY_AFTER, DEFAULT_LOCK_EXPIRY, DEFAULT_MAX_REQUEST_BODY, DEFAULT_MAX_RESPONSE_BODY,
    DEFAULT_RETENTION, DEFAULT_STORE_TIMEOUT, DEFAULT_UNAVAILABLE_RETRY_AFTER, IdempotencyBuilder, IdempotencyLayer,
    default_store_status,
};
pub use scope::{GlobalScope, HeaderScope, Scope};
pub use service::Idempotency;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use store::postgres;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::redis;
pub use store::{
    Begin, Completion, DEFAULT_MAX_KEYS, IdempotencyStore, Lease, MemoryStore, MemoryStoreBuilder, StoredResponse,
};

/// The request header carrying the key.
pub const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// The response header marking a replay.
pub const IDEMPOTENT_REPLAYED: http::HeaderName = http::HeaderName::from_static("idempotent-replayed");
