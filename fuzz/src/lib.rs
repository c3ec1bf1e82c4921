//! Entry points for fuzzing palisade's parsers of outside input, each
//! through the public API a deployment exposes to that input: the webhook
//! verify layer, the HTTP retry policy, the Idempotency-Key layer, the
//! outbox's request context and the Redis idempotency store.
//!
//! Each function takes the raw fuzz input, feeds it in, and panics only when
//! palisade breaks a promise about it (a panic inside palisade is one such
//! break). The fuzz targets under `fuzz_targets/` call them, and the
//! workspace test suite (`tests/tests/fuzz_replay.rs`) replays the committed
//! corpus and a proptest through the very same functions.
//!
//! Inputs that carry HTTP headers are written like an HTTP head:
//! `name: value` lines, then an empty line, then the body. Lines that are not
//! a valid header are skipped, as an HTTP server would never deliver them.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade::idempotency::redis::RedisStore;
use palisade::idempotency::{
    Begin, Fingerprint, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, IdempotencyLayer, IdempotencyStore, StoreErrorKind,
    StoreKey, StoredResponse,
};
use palisade::outbox::OutboxContext;
use palisade::retry::{Backoff, HttpRetryLayer, Jitter, ReplayBody};
use palisade::webhook::{Encoding, FixedClock, GenericScheme, Scheme, Signer, Verifier, VerifyLayer};
use tokio::runtime::Runtime;
use tower::{Layer, ServiceExt, service_fn};

/// The clock every verifier and signer here reads: 2023-11-14T22:13:20Z.
pub const NOW: u64 = 1_700_000_000;

/// The cap the retry target's policy puts on `Retry-After`.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The wait the retry target's policy uses when `Retry-After` says nothing usable.
pub const BACKOFF: Duration = Duration::from_secs(1);

/// The Standard Webhooks secret of the webhook target (Svix's documented example).
pub const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The secret of the other webhook schemes.
pub const SECRET: &str = "fuzz-secret";

thread_local! {
    static RUNTIME: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    static PAUSED: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a paused tokio runtime");
    static VERIFIERS: RefCell<Option<Vec<(&'static str, VerifyLayer)>>> = const { RefCell::new(None) };
}

/// Runs `future` on this thread's runtime (real time; the one the stored
/// response target's connection must be made on).
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(future))
}

/// Splits an HTTP-like input into its headers (invalid lines skipped) and body.
pub fn split_head(data: &[u8]) -> (HeaderMap, &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(line[..colon].trim_ascii());
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    (headers, body)
}

/// Writes `headers` and `body` in the input format [`split_head`] reads.
pub fn join_head(headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

/// The Standard Webhooks ed25519 signing key of the `standard-ed25519` case.
pub const SIGNING_KEY: &str =
    "whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg==";

/// The public key of [`SIGNING_KEY`].
pub const PUBLIC_KEY: &str = "whpk_1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4=";

/// The key a webhook case signs and verifies with.
#[derive(Debug, Clone, Copy)]
enum Key {
    /// An HMAC secret.
    Secret(&'static str),
    /// The ed25519 pair [`SIGNING_KEY`] and [`PUBLIC_KEY`] (`v1a`).
    Ed25519,
}

/// The cases of the webhook target, by the name its input's first line gives.
fn webhook_cases() -> Vec<(&'static str, Scheme, Key)> {
    vec![
        ("standard", Scheme::StandardWebhooks, Key::Secret(WHSEC)),
        ("standard-ed25519", Scheme::StandardWebhooks, Key::Ed25519),
        ("stripe", Scheme::Stripe, Key::Secret(SECRET)),
        ("github", Scheme::GitHub, Key::Secret(SECRET)),
        ("slack", Scheme::Slack, Key::Secret(SECRET)),
        ("shopify", Scheme::Shopify, Key::Secret(SECRET)),
        (
            "generic",
            Scheme::Generic(
                GenericScheme::new("x-acme-signature")
                    .timestamp_header("x-acme-timestamp")
                    .id_header("x-acme-delivery")
                    .template("{id}.{timestamp}.{body}")
                    .encoding(Encoding::Base64)
                    .prefix("v1="),
            ),
            Key::Secret(SECRET),
        ),
    ]
}

/// The names of the webhook target's cases: `standard`, `standard-ed25519`,
/// `stripe`, `github`, `slack`, `shopify`, `generic`.
pub fn webhook_case_names() -> Vec<&'static str> {
    webhook_cases().into_iter().map(|(name, _, _)| name).collect()
}

/// A signer whose signatures the webhook target's verifier for the case
/// `name` accepts, or `None` for no such case.
pub fn webhook_signer(name: &str) -> Option<Signer> {
    let (_, scheme, key) = webhook_cases().into_iter().find(|(case, _, _)| *case == name)?;
    let builder = Signer::builder(scheme).clock(FixedClock(NOW));
    let builder = match key {
        Key::Secret(secret) => builder.secret(secret),
        Key::Ed25519 => builder.signing_key(SIGNING_KEY),
    };
    Some(builder.build().expect("a valid signer"))
}

fn verifiers() -> Vec<(&'static str, VerifyLayer)> {
    webhook_cases()
        .into_iter()
        .map(|(name, scheme, key)| {
            let builder = Verifier::builder(scheme).clock(FixedClock(NOW));
            let builder = match key {
                Key::Secret(secret) => builder.secret(secret),
                Key::Ed25519 => builder.public_key(PUBLIC_KEY),
            };
            (name, VerifyLayer::new(builder.build().expect("a valid verifier")))
        })
        .collect()
}

/// Webhook signature headers of every scheme, through `VerifyLayer`.
///
/// Input: the case's name (see [`webhook_case_names`]) on the first line,
/// then headers and body. Promise:
/// the answer is the handler's (which got exactly the body that was sent),
/// or a 400 or 401 problem+json; never a 5xx. Returns the status, or `None`
/// for an input naming no scheme.
pub fn webhook_signature(data: &[u8]) -> Option<StatusCode> {
    let (scheme, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => return None,
    };
    let layer = VERIFIERS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let verifiers = cell.get_or_insert_with(verifiers);
        verifiers
            .iter()
            .find(|(name, _)| name.as_bytes() == scheme.trim_ascii())
            .map(|(_, layer)| layer.clone())
    })?;
    let (headers, body) = split_head(rest);
    let mut request = Request::post("/hooks")
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("a request");
    *request.headers_mut() = headers;
    let handler = layer.layer(service_fn(|req: Request<Full<Bytes>>| async move {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok::<_, std::convert::Infallible>(Response::new(Full::new(body)))
    }));
    let response = block_on(handler.oneshot(request)).expect("the verify layer answers");
    let status = response.status();
    let content_type = response.headers().get(CONTENT_TYPE).cloned();
    let answer = block_on(response.into_body().collect())
        .expect("a full body")
        .to_bytes();
    match status {
        StatusCode::OK => assert_eq!(&answer[..], body, "the handler got other bytes than were verified"),
        StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED => assert_eq!(
            content_type.as_ref().and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "a rejection is a problem document"
        ),
        other => panic!("the verify layer answered {other} to a webhook"),
    }
    Some(status)
}

/// `Retry-After` values, through `HttpRetryLayer` in `RetryLayer`.
///
/// Input: the header value's bytes. Promise: a 503 carrying it is retried
/// once, after exactly the seconds it gives (capped at [`MAX_RETRY_AFTER`]),
/// after at most the cap for an HTTP-date, or after the backoff schedule
/// when the value is neither. Returns the wait, or `None` for bytes that
/// are no header value.
pub fn retry_after(data: &[u8]) -> Option<Duration> {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return None;
    };
    let retry = HttpRetryLayer::builder("retry")
        .max_attempts(2)
        .backoff(Backoff::constant(BACKOFF))
        .jitter(Jitter::None)
        .max_retry_after(MAX_RETRY_AFTER)
        .no_budget()
        .build()
        .expect("a valid retry");
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let downstream = service_fn(move |_: Request<ReplayBody<Full<Bytes>>>| {
        let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
        let value = value.clone();
        async move {
            let mut response = Response::new(());
            if first {
                *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                response.headers_mut().insert(RETRY_AFTER, value);
            }
            Ok::<_, palisade::core::BoxError>(response)
        }
    });
    let client = retry.layer(downstream);
    let (response, waited) = PAUSED.with(|rt| {
        rt.block_on(async {
            let started = tokio::time::Instant::now();
            let request = Request::get("http://downstream/")
                .body(Full::new(Bytes::new()))
                .expect("a request");
            let response = client.oneshot(request).await.expect("the downstream answers");
            (response, started.elapsed())
        })
    });
    assert_eq!(response.status(), StatusCode::OK, "the 503 was retried");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one retry");
    // Optional whitespace (SP, HTAB: the only ASCII whitespace a header
    // value can hold) around delay-seconds; other bytes make it no delay-seconds.
    let seconds = data.trim_ascii();
    if !seconds.is_empty() && seconds.iter().all(u8::is_ascii_digit) {
        let asked = std::str::from_utf8(seconds)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map_or(Duration::MAX, Duration::from_secs);
        assert_eq!(
            waited,
            asked.min(MAX_RETRY_AFTER),
            "waited what Retry-After asked, capped"
        );
    } else {
        assert!(waited <= MAX_RETRY_AFTER, "waited {waited:?}, over the cap");
    }
    Some(waited)
}

/// The `Idempotency-Key` structured field (and any other header), through
/// `IdempotencyLayer` with its memory store.
///
/// Input: headers and body of a `POST /orders`. Promise: the request either
/// runs (201) or is refused with a 400 problem+json without running; when it
/// ran with one key, the same request again is a replay that does not run.
/// Returns the first answer's status.
pub fn idempotency_key(data: &[u8]) -> StatusCode {
    let (headers, body) = split_head(data);
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let handler = service_fn(move |_: Request<Full<Bytes>>| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let mut response = Response::new(Full::new(Bytes::from(format!("order {n}"))));
            *response.status_mut() = StatusCode::CREATED;
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let service = IdempotencyLayer::new().layer(handler);
    let send = || {
        let mut request = Request::post("/orders")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .expect("a request");
        *request.headers_mut() = headers.clone();
        let service = service.clone();
        block_on(async move {
            let response = service.oneshot(request).await.expect("the layer answers");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("a full body").to_bytes();
            (parts, body)
        })
    };
    let (first, first_body) = send();
    match first.status {
        StatusCode::CREATED => assert_eq!(runs.load(Ordering::SeqCst), 1, "ran once"),
        StatusCode::BAD_REQUEST => {
            assert_eq!(runs.load(Ordering::SeqCst), 0, "a refused request did not run");
            assert_eq!(
                first.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
                Some("application/problem+json"),
                "a refusal is a problem document"
            );
            return first.status;
        }
        other => panic!("the idempotency layer answered {other} to a first request"),
    }
    let (again, again_body) = send();
    assert_eq!(again.status, StatusCode::CREATED, "the same request again");
    if headers.get_all(IDEMPOTENCY_KEY).iter().count() == 1 {
        assert_eq!(runs.load(Ordering::SeqCst), 1, "a repeated key did not run again");
        assert_eq!(
            again.headers.get(IDEMPOTENT_REPLAYED).map(|v| v.as_bytes()),
            Some(&b"true"[..])
        );
        assert_eq!(again_body, first_body, "the replay is the first response");
    }
    first.status
}

/// `traceparent`, `tracestate` and correlation ids, through
/// `OutboxContext::from_headers` (what the outbox hook does for each request).
///
/// Input: headers. Promise: the correlation id is the `x-correlation-id`
/// header when it is usable, else the traceparent's trace id, else a fresh
/// one; a carried trace context always has a valid trace id.
pub fn trace_context(data: &[u8]) {
    let (headers, _) = split_head(data);
    let context = OutboxContext::from_headers(&headers, None);
    let usable = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 256)
    };
    let correlation = context.correlation_id();
    assert!(
        !correlation.is_empty() && correlation.len() <= 256,
        "correlation id {correlation:?}"
    );
    if let Some(given) = usable("x-correlation-id") {
        assert_eq!(correlation, given, "the caller's correlation id is kept");
    }
    if let Some(trace) = context.trace_context() {
        let id = trace.trace_id().expect("a carried trace context has a trace id");
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) && id.bytes().any(|b| b != b'0'));
        if usable("x-correlation-id").is_none() {
            assert_eq!(
                correlation, id,
                "the trace id correlates when no correlation id was given"
            );
        }
    }
    let event = context.event("fuzzed", "order", "1", serde_json::Value::Null);
    assert_eq!(event.metadata.correlation_id.as_deref(), Some(correlation));
}

/// A Redis connection and key prefix for [`stored_response`].
#[derive(Debug, Clone)]
pub struct StoredResponseTarget {
    conn: redis::aio::MultiplexedConnection,
    store: RedisStore<redis::aio::MultiplexedConnection>,
    key: StoreKey,
    redis_key: String,
}

impl StoredResponseTarget {
    /// Writes records under `prefix` through `conn`, a connection made on
    /// [`block_on`]'s runtime.
    pub fn new(conn: redis::aio::MultiplexedConnection, prefix: &str) -> Self {
        let store = RedisStore::with_prefix(conn.clone(), prefix).expect("a non-empty prefix");
        let key = StoreKey::from_bytes([0x5a; 32]);
        let redis_key = format!("{prefix}{key}");
        Self {
            conn,
            store,
            key,
            redis_key,
        }
    }

    /// Connects to `url` on [`block_on`]'s runtime.
    pub fn connect(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = block_on(client.get_multiplexed_async_connection())?;
        Ok(Self::new(conn, prefix))
    }
}

/// The stored-response codec, through `RedisStore::begin` reading a
/// completed record whose stored response is the input.
///
/// Input: the encoded response (after the record's state, fingerprint and
/// lease). Promise: `begin` answers the completed response or a `Corrupt`
/// store error (which the layer turns into a 503), never anything else.
/// Returns the decoded response.
pub fn stored_response(target: &StoredResponseTarget, data: &[u8]) -> Option<StoredResponse> {
    let fingerprint = Fingerprint::from_bytes([0xa5; 32]);
    let mut record = Vec::with_capacity(1 + 32 + 16 + data.len());
    record.push(b'C');
    record.extend_from_slice(fingerprint.as_bytes());
    record.extend_from_slice(&7_u128.to_be_bytes());
    record.extend_from_slice(data);
    let mut conn = target.conn.clone();
    let begun = block_on(async {
        let () = redis::cmd("SET")
            .arg(&target.redis_key)
            .arg(record)
            .arg("PX")
            .arg(60_000)
            .query_async(&mut conn)
            .await
            .expect("Redis stores the record");
        target
            .store
            .begin(&target.key, &fingerprint, Duration::from_secs(60))
            .await
    });
    match begun {
        Ok(Begin::Completed {
            fingerprint: stored,
            response,
        }) => {
            assert_eq!(stored, fingerprint, "the fingerprint read back");
            assert!(data.len() >= 5 + response.body.len(), "the body is part of the input");
            Some(response)
        }
        Ok(other) => panic!("a completed record read as {other:?}"),
        Err(err) => {
            assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{err}");
            None
        }
    }
}
