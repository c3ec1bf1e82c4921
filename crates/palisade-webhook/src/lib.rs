//! Webhook signatures for tower: [`VerifyLayer`] checks inbound webhooks
//! before the handler runs; [`SignLayer`] and [`Signer`] sign outbound ones.
//!
//! Mount the verify layer on the routes that receive webhooks from Stripe,
//! GitHub, Slack, Shopify or any [Standard Webhooks](https://www.standardwebhooks.com/)
//! / Svix sender. The handler then only ever sees messages that are
//! authentic (a valid signature by one of the configured secrets), fresh
//! (signed timestamp within the tolerance), not replayed (optional
//! de-duplication through a replay store), and exactly the bytes that were
//! signed.
//!
//! # Install
//!
//! Through the facade, which re-exports this crate as `palisade::webhook`:
//!
//! ```sh
//! cargo add palisade --features webhook
//! ```
//!
//! or on its own, where the features have the backends' names: `cargo add
//! palisade-webhook --features redis`. A replay store shared by several
//! instances comes with `webhook-redis` (a Redis server or Redis Cluster).
//!
//! # Example
//!
//! ```
//! use axum::{Extension, Router, body::Bytes, routing::post};
//! use palisade_webhook::{MemoryReplayStore, Scheme, Signer, Verified, Verifier, VerifyLayer};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
//! let verify = VerifyLayer::builder(Verifier::builder(Scheme::StandardWebhooks).secret(secret).build()?)
//!     .replay_store(MemoryReplayStore::new())
//!     .build()?;
//! let app = Router::new()
//!     .route(
//!         "/hooks/payments",
//!         post(|Extension(hook): Extension<Verified>, body: Bytes| async move {
//!             format!("{} bytes of {}", body.len(), hook.id().unwrap_or("?"))
//!         }),
//!     )
//!     .route_layer(verify);
//!
//! // A sender signs with the same secret (the `SignLayer` does this for a tower client).
//! let body = br#"{"type":"payment.succeeded"}"#;
//! let mut request = http::Request::post("/hooks/payments").body(axum::body::Body::from(&body[..]))?;
//! let signed = Signer::builder(Scheme::StandardWebhooks).secret(secret).build()?.sign(request.headers_mut(), body)?;
//!
//! let response = app.clone().oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//!
//! // A request without a valid signature never reaches the handler.
//! let forged = http::Request::post("/hooks/payments").body(axum::body::Body::from(&body[..]))?;
//! let response = app.oneshot(forged).await?;
//! assert_eq!(response.status(), 400);
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! # let _ = signed;
//! # Ok(())
//! # }
//! ```
//!
//! # Schemes
//!
//! | scheme | signature | signed content | timestamp | replay protection keyed on |
//! |---|---|---|---|---|
//! | Standard Webhooks / Svix | `webhook-signature` (or `svix-signature`): `v1,<base64>` HMAC-SHA256, `v1a,<base64>` ed25519 | `{id}.{timestamp}.{body}` | `webhook-timestamp` | `webhook-id` (signed) |
//! | Stripe | `Stripe-Signature: t=<ts>,v1=<hex>` | `{timestamp}.{body}` | `t=` | the event `id` in the (signed) body |
//! | GitHub | `X-Hub-Signature-256: sha256=<hex>` | `{body}` | none | the signature (`X-GitHub-Delivery` is not signed) |
//! | Slack | `X-Slack-Signature: v0=<hex>` | `v0:{timestamp}:{body}` | `X-Slack-Request-Timestamp` | nothing: not de-duplicated |
//! | Shopify | `X-Shopify-Hmac-Sha256: <base64>` | `{body}` | none | the signature (`X-Shopify-Webhook-Id` is not signed) |
//! | generic | configured header, prefix, hex or base64 | configured template | optional header, which the template must sign | optional id header, which the template must sign |
//!
//! Secrets are given as the sender shows them: Standard Webhooks' `whsec_` +
//! base64 is decoded, Stripe's whole `whsec_...` string is the key, the others
//! are used as text; [`VerifierBuilder::secret_bytes`] takes raw key bytes.
//! Standard Webhooks `v1a` signatures are checked against `whpk_` public keys
//! ([`VerifierBuilder::public_key`]) with strict ed25519 verification.
//!
//! **Rotation**: add the new secret next to the old one. Any configured secret
//! or key verifying is enough, and [`Verified::key_index`] tells which one did,
//! so the old one can be removed once it stops showing up. A header carrying
//! several signatures (space- or comma-separated, or the header repeated) is
//! checked signature by signature; signatures of unknown versions (`v2,...`,
//! `sha1=...`) are skipped, not errors.
//!
//! # What the handler gets
//!
//! The request with its body replaced by a [`Full<Bytes>`](http_body_util::Full)
//! holding exactly the bytes received (no re-encoding, any bytes, UTF-8 or
//! not), and a [`Verified`] in its extensions: the scheme, the message id, the
//! signed timestamp and the index of the key that verified it.
//!
//! # Rejections
//!
//! The layer answers these itself, as RFC 9457 `application/problem+json`
//! ([`palisade_core::problem::Problem`]); the handler is not called. The body names
//! the header at fault, never a signature, a secret or the payload. A
//! [`Rejection`] (also what [`Verifier::verify`] returns) answers with the
//! same response through
//! [`ToProblem`](palisade_core::problem::ToProblem).
//!
//! | cause | status | `type` |
//! |---|---|---|
//! | a header the scheme needs is missing | 400 | `urn:palisade:problem:webhook-missing-header` |
//! | a header is malformed: non-ASCII, a non-integer or overflowing timestamp, `v1` without a signature, undecodable base64 or hex, a duplicate Stripe `t=` | 400 | `urn:palisade:problem:webhook-malformed-header` |
//! | the timestamp is more than the tolerance away from now, either way | 401 | `urn:palisade:problem:webhook-stale-timestamp` |
//! | no signature verifies with any key | 401 | `urn:palisade:problem:webhook-bad-signature` |
//! | the body is over the limit | 413 | `urn:palisade:problem:webhook-body-too-large` |
//! | the body failed mid-read | 400 | `urn:palisade:problem:webhook-body-unreadable` |
//! | the replay store failed, or did not answer the claim within the store timeout | 503, `Retry-After: 1` | `urn:palisade:problem:webhook-replay-store-unavailable` |
//! | another delivery of the message is being handled right now | 409, `Retry-After: 1` | `urn:palisade:problem:webhook-in-flight` |
//!
//! A redelivered message that was already accepted is answered **200 with
//! an empty body**, so the sender stops retrying, and the handler is not
//! called. See [Replay protection](#replay-protection).
//!
//! # Defaults, and why
//!
//! | setting | default | why |
//! |---|---|---|
//! | timestamp tolerance ([`VerifierBuilder::tolerance`]) | 300 s, both directions | what Stripe, Slack and Standard Webhooks recommend; both ways because a clock ahead is as suspicious as one behind |
//! | body limit ([`VerifyBuilder::max_body`]) | 1 MiB ([`DEFAULT_MAX_BODY`]) | above the payloads of the common senders (raise it for GitHub, which sends up to 25 MB); a larger body is answered 413 at once when announced, or as soon as the limit is passed, without reading the rest |
//! | replay protection | off | it needs a store; turn it on with [`VerifyBuilder::replay_store`] |
//! | replay window ([`VerifyBuilder::replay_window`]): how long an accepted message is remembered | 3 days; 24 h for GitHub and Shopify | senders that sign a timestamp sign each retry anew with the same id, for up to 3 days (Stripe) or more than a day (Svix), so a retry whose 2xx was lost comes back fresh; schemes without a signed timestamp are redelivered for about a day |
//! | in-flight lock expiry ([`VerifyBuilder::lock_expiry`]) | 60 s ([`DEFAULT_LOCK_EXPIRY`]) | longer than any sender waits for an answer (Svix 15 s, GitHub 10 s, Shopify 5 s); short enough that a message whose handler died with its process is retried soon |
//! | replay-store timeout ([`VerifyBuilder::store_timeout`]) | 3 s per store call ([`DEFAULT_STORE_TIMEOUT`]) | a store connection that stalls must not hold deliveries until the sender gives up; a healthy store answers in milliseconds |
//! | in-memory store capacity | 100 000 keys ([`DEFAULT_MEMORY_CAPACITY`]) | bounded memory (a few MB); the oldest key goes first when full |
//! | keys per verifier | at most 8 ([`MAX_KEYS`]) | rotation needs two or three; bounds the work a forged request can cause |
//! | signatures checked per header | 8 HMAC and 2 ed25519 ([`MAX_SIGNATURES`]) | a sender puts one per active secret; the bound keeps the work per request small; more are ignored |
//! | clock | [`SystemClock`] | webhook timestamps are calendar time; tests inject a [`FixedClock`] or a closure |
//!
//! Headers and timestamp are checked before a body larger than 16 KiB (or of
//! unannounced size) is read, so a forged or stale message costs no body
//! read; a smaller announced body is read first and everything is checked once.
//!
//! # Replay protection
//!
//! With a [`ReplayStore`] ([`VerifyBuilder::replay_store`]) every
//! verified message is keyed on something its signature covers: its id where
//! the id is signed (`<scheme>:<id>`: Standard Webhooks, Stripe's event id in
//! the body, a generic scheme's id header), and for GitHub and Shopify, whose
//! id headers are not signed, the HMAC that verified it
//! (`<scheme>:hmac:<hex>`). Changing or removing an unsigned id header thus
//! makes no new message. The flip side: two GitHub or Shopify deliveries
//! with byte-identical bodies signed by the same secret count as one message,
//! and a redelivery signed by another secret (mid-rotation) counts as a new
//! one. Slack messages, generic schemes without an id header and Stripe
//! bodies without an `id` are not de-duplicated.
//!
//! A message is **accepted** when the handler answers it with a 2xx status.
//! Before calling the handler the layer claims the key, marking it **in
//! flight** for the lock expiry; the promises, for every store:
//!
//! | a delivery whose key is | answer | handler |
//! |---|---|---|
//! | new (or its mark has expired) | the handler's | called |
//! | in flight: another delivery is being handled | **409** problem+json, `Retry-After: 1` | not called |
//! | accepted, within the replay window | **200**, empty body | not called |
//!
//! - A redelivery is never acknowledged with 2xx before a delivery of the
//!   message was accepted: while the first runs it may still fail, so the
//!   duplicate gets a status the sender retries.
//! - Handler 2xx: the key is recorded as accepted for the replay window
//!   before the answer goes out, so a redelivery after the answer is a
//!   duplicate. If the store cannot record it, the handler's answer still
//!   goes out (logged at `WARN`) and the in-flight mark expires after the
//!   lock expiry; a redelivery after that runs the handler again.
//! - Any other status, an error from the handler, or a call dropped before
//!   the handler answered: the in-flight mark is released, so the sender's
//!   next retry reaches the handler. A call dropped after a 2xx, while the
//!   acceptance is being recorded (a timeout outside the layer, a reset
//!   stream), keeps the mark, and the recording goes on, on a task of its
//!   own within the store timeout, so the sender's redelivery is a
//!   duplicate (without a tokio runtime, the in-flight mark stays until the
//!   lock expiry).
//! - The process dies while the handler runs: nothing releases the mark; it
//!   expires after the lock expiry (default 60 s), and the sender's next
//!   retry after that reaches the handler. Set the lock expiry above the
//!   longest time your handler runs: a handler still running past it may
//!   run alongside a redelivery.
//! - Each claim carries a [`Lease`] unique to the delivery: a release only
//!   removes that delivery's own in-flight mark, never an accepted one nor
//!   the mark of a redelivery that took over after an expiry.
//! - The store fails when claiming, or does not answer within the
//!   [store timeout](VerifyBuilder::store_timeout) (default 3 s): 503
//!   with `Retry-After: 1`, the handler is not called, and the sender
//!   retries later. A claim that timed out may still have been recorded:
//!   its mark is released like any unanswered claim's.
//! - Recording the acceptance times out: as when it fails, the handler's
//!   answer goes out and the in-flight mark stays until the lock expiry
//!   (or until the late write lands, which makes it accepted).
//!
//! [`MemoryReplayStore`] protects one process; it is bounded, and when full
//! the oldest key goes first, in flight or accepted, so size it above the
//! messages one replay window brings. Layers sharing a store (one per
//! tenant, or senders that number their messages alike) each need a
//! [`name`](VerifyBuilder::name) of their own, which scopes their keys. `RedisReplayStore` (feature `redis`)
//! protects every instance sharing the Redis and prefix: a Lua script claims
//! in one round trip, `SET PX` records the acceptance, and Redis expires both
//! marks itself. Its releases run as a background task (a release cannot be
//! awaited from a dropped call), so a retry arriving right after a failure
//! may still get a 409 for a moment. Build it on redis's `ConnectionManager`:
//! after a lost connection the calls on it fail (503) and the manager
//! connects again by itself, so the store serves again without a restart; a
//! bare `MultiplexedConnection` never reconnects. See [`ReplayStore`].
//!
//! # Signing
//!
//! [`Signer`] writes the scheme's headers for a body (Standard Webhooks `v1`
//! and `v1a`, Stripe, GitHub, Slack, Shopify, generic), stamping the current
//! time and a fresh UUID v7 id ([`IdGenerator`] to change it). An id already in
//! the headers is kept, so a redelivery carries its first id and the receiver
//! drops the duplicate once the first was accepted. [`SignLayer`] does the same for a tower HTTP client:
//! it reads the request body, signs it, and sends the same bytes on as a
//! `Full<Bytes>`. With several secrets, Standard Webhooks, Stripe and generic
//! schemes carry one signature per secret; GitHub, Slack and Shopify carry one,
//! by the first secret.
//!
//! # Order with other layers
//!
//! Server side, outermost first: tracing / request id → **webhook verify** →
//! idempotency → outbox hook → bulkhead → timeout → handler. Verify early: a
//! forged request should cost nothing further, and nothing inside should see
//! unverified bytes. Put it on the webhook routes only (axum's
//! `Router::route_layer` or a nested router), not on the whole application.
//! Client side, outermost first: [`SetMessageIdLayer`] → retry →
//! [`SignLayer`] → HTTP client. The message id is set once, outside the
//! retries, so every attempt carries it and the receiver drops a retry of a
//! delivery it accepted (a retry sends a copy of the request as it was
//! before its first attempt: an id the `SignLayer` made would be new each
//! time); the `SignLayer` is innermost, so each attempt is stamped and signed
//! afresh, with that id.
//!
//! # Telemetry
//!
//! - Counter `palisade_webhook_verifications_total{name, scheme, outcome}`,
//!   outcome `verified`, `duplicate` (already accepted), `in_flight` (409)
//!   or a rejection reason (`missing_header`, `malformed_header`,
//!   `stale_timestamp`, `bad_signature`, `body_too_large`, `body_unreadable`,
//!   `replay_store_unavailable`). `name` defaults to the scheme label
//!   ([`VerifyBuilder::name`]). An outcome's series is registered on
//!   its first occurrence and held by the layer from then on, so
//!   [install the recorder before building the layer](palisade_core::telemetry#install-the-recorder-before-building-layers);
//!   outcomes that never happen report no series.
//! - A tracing event per rejection at `INFO` under target `palisade::webhook`,
//!   with fields `name`, `scheme` and `reason` (never a secret, a signature or
//!   the body); duplicates and in-flight answers at `DEBUG`; a store that
//!   could not record an acceptance at `WARN`.
//!
//! # Security notes
//!
//! MACs are compared in constant time. Secrets and keys are decoded once at
//! build time and never appear in `Debug` output, logs, errors or responses.
//! Timestamps must be plain integers (no sign, fraction or exponent) that fit
//! in 64 bits. Header values that are not visible ASCII are rejected as
//! malformed; bodies may be any bytes. Nothing in the verify path panics on
//! input: a proptest run over arbitrary headers and bodies is part of the suite.
//!
//! # Performance
//!
//! Verification costs what HMAC-SHA256 of the body costs, plus a fixed part.
//! The key's inner and outer pads are hashed once at build time, so each
//! message saves two SHA-256 blocks over a plain `Hmac::new_from_slice`;
//! signatures decode into fixed arrays; a body that arrives in one frame (a
//! `Full<Bytes>`, a small hyper body) is handed on without a copy.
//!
//! Beyond the HMAC, the verify path parses the headers, decodes the
//! signature, collects the body and compares in constant time. A verified
//! request allocates only for the [`Verified`] extension (http allocates the
//! extension map on first use, so a request that already carries extensions,
//! as from hyper or axum, allocates less) and copies nothing without replay
//! protection; a body arriving in several frames is gathered into one buffer
//! sized from its announced length. The fixed part matters for small bodies;
//! at 1 MiB the layer runs at SHA-256 speed.
//!
//! **Headline cost**: the verify path takes 1.0 times the raw HMAC-SHA256 of
//! the same content at 1 MiB and 1.21 to 1.28 times at 1 KiB; every figure,
//! beside its references and with the machine and load it was measured on, is
//! in the
//! [benchmark report](https://github.com/palisade-rs/palisade/blob/main/benches/REPORT.md).

#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod compiled;
mod error;
pub mod future;
mod key;
mod layer;
mod replay;
mod scheme;
mod service;
mod sign;
mod state;
mod verify;

pub use clock::{Clock, FixedClock, SystemClock};
pub use error::{ConfigError, Reason, Rejection, STORE_UNAVAILABLE_RETRY_AFTER, StoreError};
pub use key::MAX_KEYS;
pub use layer::{
    DEFAULT_LOCK_EXPIRY, DEFAULT_MAX_BODY, DEFAULT_STORE_TIMEOUT, SetMessageIdLayer, SignLayer, VerifyBuilder,
    VerifyLayer,
};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use replay::RedisReplayStore;
pub use replay::{Claim, DEFAULT_MEMORY_CAPACITY, Lease, MemoryReplayStore, ReplayStore, StoreFuture};
pub use scheme::{Encoding, GenericScheme, Scheme, SchemeKind};
pub use service::{SetMessageId, Sign, Verify};
pub use sign::{IdGenerator, InvalidId, Signed, Signer, SignerBuilder, UuidV7};
pub use state::IN_FLIGHT_RETRY_AFTER;
pub use verify::{DEFAULT_TOLERANCE, MAX_SIGNATURES, Verified, Verifier, VerifierBuilder, stripe_event_id};
