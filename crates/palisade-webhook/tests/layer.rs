//! The verify layer end to end: sign → verify round trips for every scheme,
//! rotation, tampering, clocks, replays, body limits, malformed headers,
//! the tower contract and cancellation.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use palisade_webhook::StoreFuture;
use palisade_webhook::{
    Claim, ConfigError, Encoding, FixedClock, GenericScheme, Lease, MemoryReplayStore, ReplayStore, Scheme, SchemeKind,
    SetMessageIdLayer, SignLayer, Signer, Verified, Verifier, VerifyLayer,
};
use tower::{Layer, Service, ServiceExt, service_fn};

const NOW: u64 = 1_700_000_000;
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_OLD_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const SIGNING_KEY: &str =
    "whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg==";
const PUBLIC_KEY: &str = "whpk_1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4=";

/// One request as the handler saw it: headers, body, verification.
type Received = (HeaderMap, Bytes, Option<Verified>);

/// What the handler saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Received>>>);

impl Seen {
    fn calls(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn last(&self) -> Received {
        self.0.lock().unwrap().last().cloned().expect("the handler was called")
    }
}

/// A handler recording what it received and answering `status`.
fn handler(
    seen: &Seen,
    status: StatusCode,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone + use<> {
    let seen = seen.clone();
    service_fn(move |req: Request<Full<Bytes>>| {
        let seen = seen.clone();
        async move {
            let verified = req.extensions().get::<Verified>().cloned();
            let headers = req.headers().clone();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            seen.0.lock().unwrap().push((headers, body, verified));
            let mut res = Response::new(Full::new(Bytes::from_static(b"handled")));
            *res.status_mut() = status;
            Ok::<_, Infallible>(res)
        }
    })
}

fn signed_request(signer: &Signer, body: &'static [u8]) -> Request<Full<Bytes>> {
    let mut req = Request::post("/hook")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    signer.sign(req.headers_mut(), body).unwrap();
    req
}

async fn send<S>(svc: S, req: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Bytes)
where
    S: Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible>,
{
    let res = svc.oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.into_body().collect().await.unwrap().to_bytes())
}

fn verifier(scheme: Scheme, secret: &str) -> Verifier {
    Verifier::builder(scheme)
        .secret(secret)
        .clock(FixedClock(NOW))
        .build()
        .unwrap()
}

fn signer(scheme: Scheme, secret: &str) -> Signer {
    Signer::builder(scheme)
        .secret(secret)
        .clock(FixedClock(NOW))
        .build()
        .unwrap()
}

fn generic_hex() -> GenericScheme {
    GenericScheme::new("X-Acme-Signature")
        .timestamp_header("X-Acme-Timestamp")
        .id_header("X-Acme-Id")
        .template("{id}:{timestamp}:{body}")
        .prefix("sha256=")
}

fn generic_base64() -> GenericScheme {
    GenericScheme::new("X-Plain-Signature").encoding(Encoding::Base64)
}

fn all_schemes() -> Vec<(Scheme, &'static str)> {
    vec![
        (Scheme::StandardWebhooks, SW_SECRET),
        (Scheme::Stripe, "whsec_stripe_test_secret"),
        (Scheme::GitHub, "github secret"),
        (Scheme::Slack, "8f742231b10e8888abcd99yyyzzz85a5"),
        (Scheme::Shopify, "shopify client secret"),
        (Scheme::Generic(generic_hex()), "generic secret"),
        (Scheme::Generic(generic_base64()), "plain secret"),
    ]
}

async fn assert_problem(status: StatusCode, headers: &HeaderMap, body: &Bytes, expected: u16, kind: &str) {
    assert_eq!(status.as_u16(), expected, "{}", String::from_utf8_lossy(body));
    assert_eq!(headers["content-type"], "application/problem+json");
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["status"], expected);
    assert_eq!(json["type"], format!("urn:palisade:problem:webhook-{kind}"));
}

#[tokio::test]
async fn every_scheme_round_trips_through_the_layers() {
    for (scheme, secret) in all_schemes() {
        let kind = scheme.kind();
        let seen = Seen::default();
        let layer = VerifyLayer::new(verifier(scheme.clone(), secret));
        let body: &'static [u8] = b"{\"id\":\"evt_1\",\"type\":\"order.paid\",\"bytes\":\"\xff\xfe not utf-8\"}";
        let req = signed_request(&signer(scheme.clone(), secret), body);
        let (status, _, answer) = send(layer.layer(handler(&seen, StatusCode::OK)), req).await;
        assert_eq!((status, &answer[..]), (StatusCode::OK, &b"handled"[..]), "{kind:?}");
        let (_, received, verified) = seen.last();
        assert_eq!(&received[..], body, "{kind:?}: the handler gets the exact bytes");
        let verified = verified.expect("verified in the extensions");
        assert_eq!(verified.scheme(), kind);
        assert_eq!(verified.key_index(), 0);
        let signs_timestamp = !matches!(kind, SchemeKind::GitHub | SchemeKind::Shopify)
            && !matches!(&scheme, Scheme::Generic(g) if *g == generic_base64());
        assert_eq!(verified.timestamp(), signs_timestamp.then_some(NOW), "{kind:?}");
        let has_id_header = matches!(
            kind,
            SchemeKind::StandardWebhooks | SchemeKind::GitHub | SchemeKind::Shopify
        ) || matches!(&scheme, Scheme::Generic(g) if *g == generic_hex());
        assert_eq!(verified.id().is_some(), has_id_header, "{kind:?}");

        // The sign layer produces the same headers from a request body.
        let forwarded = Seen::default();
        let sign = SignLayer::new(signer(scheme.clone(), secret)).layer(handler(&forwarded, StatusCode::OK));
        let req = Request::post("/out").body(Full::new(Bytes::from_static(body))).unwrap();
        let res = sign.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let (headers, sent, _) = forwarded.last();
        assert_eq!(&sent[..], body);
        let again = verifier(scheme.clone(), secret).verify(&headers, &sent).unwrap();
        assert_eq!(again.scheme(), kind);
    }
}

#[tokio::test]
async fn standard_webhooks_v1a_round_trips_and_mixes_with_v1() {
    let signer = Signer::builder(Scheme::StandardWebhooks)
        .secret(SW_SECRET)
        .signing_key(SIGNING_KEY)
        .clock(FixedClock(NOW))
        .build()
        .unwrap();
    let req = signed_request(&signer, b"{}");
    let header = req.headers()["webhook-signature"].to_str().unwrap().to_owned();
    assert!(header.starts_with("v1,") && header.contains(" v1a,"), "{header}");

    // A receiver holding only the public key verifies the v1a signature.
    let only_public = Verifier::builder(Scheme::StandardWebhooks)
        .public_key(PUBLIC_KEY)
        .clock(FixedClock(NOW))
        .build()
        .unwrap();
    let verified = only_public.verify(req.headers(), b"{}").unwrap();
    assert_eq!(verified.key_index(), 0);
    // With a secret too, the secret comes first in the key indices.
    let both = Verifier::builder(Scheme::StandardWebhooks)
        .secret(SW_OLD_SECRET)
        .public_key(PUBLIC_KEY)
        .clock(FixedClock(NOW))
        .build()
        .unwrap();
    assert_eq!(both.verify(req.headers(), b"{}").unwrap().key_index(), 1);
    assert!(both.verify(req.headers(), b"{ }").is_err());
}

#[test]
fn standard_webhooks_signatures_folded_by_a_proxy_are_read_one_by_one() {
    // Two `webhook-signature` lines, joined by an intermediary with ", " as
    // RFC 9110 allows: `v1,<new> , v1,<old>` reaches the receiver as one value.
    let signed = |secret| {
        let mut headers = HeaderMap::new();
        signer(Scheme::StandardWebhooks, secret)
            .sign_with(&mut headers, "msg_1", NOW, b"x")
            .unwrap();
        headers
    };
    let (signed_new, signed_old) = (signed(SW_SECRET), signed(SW_OLD_SECRET));
    for separator in [", ", ","] {
        let mut headers = signed_new.clone();
        let folded = format!(
            "{}{separator}{}",
            signed_new["webhook-signature"].to_str().unwrap(),
            signed_old["webhook-signature"].to_str().unwrap()
        );
        headers.insert("webhook-signature", HeaderValue::from_str(&folded).unwrap());
        let old_only = verifier(Scheme::StandardWebhooks, SW_OLD_SECRET);
        assert_eq!(old_only.verify(&headers, b"x").unwrap().key_index(), 0, "{folded}");
    }

    // An empty line folded in front, or an empty element between (RFC 9110
    // has recipients ignore empty list elements), with or without a space.
    let new_only = verifier(Scheme::StandardWebhooks, SW_SECRET);
    let signature = signed_new["webhook-signature"].to_str().unwrap();
    let (_, sig) = signature.split_once(',').unwrap();
    for folded in [
        format!(",{signature}"),
        format!(", {signature}"),
        format!(",,{signature}"),
        format!("v1,,{sig}"),
    ] {
        let mut headers = signed_new.clone();
        headers.insert("webhook-signature", HeaderValue::from_str(&folded).unwrap());
        assert_eq!(new_only.verify(&headers, b"x").unwrap().key_index(), 0, "{folded}");
    }
}

#[tokio::test]
async fn rotation_accepts_either_secret() {
    // The receiver already has the new secret and still the old one.
    let receiver = Verifier::builder(Scheme::StandardWebhooks)
        .secret(SW_SECRET)
        .secret(SW_OLD_SECRET)
        .clock(FixedClock(NOW))
        .build()
        .unwrap();
    let old_sender = signer(Scheme::StandardWebhooks, SW_OLD_SECRET);
    let new_sender = signer(Scheme::StandardWebhooks, SW_SECRET);
    assert_eq!(
        receiver
            .verify(signed_request(&old_sender, b"x").headers(), b"x")
            .unwrap()
            .key_index(),
        1
    );
    assert_eq!(
        receiver
            .verify(signed_request(&new_sender, b"x").headers(), b"x")
            .unwrap()
            .key_index(),
        0
    );

    // The sender signs with both while receivers move over; a receiver with either accepts.
    let both = Signer::builder(Scheme::Stripe)
        .secret("whsec_old")
        .secret("whsec_new")
        .clock(FixedClock(NOW))
        .build()
        .unwrap();
    let req = signed_request(&both, b"{}");
    assert_eq!(
        req.headers()["stripe-signature"]
            .to_str()
            .unwrap()
            .matches("v1=")
            .count(),
        2
    );
    for secret in ["whsec_old", "whsec_new"] {
        verifier(Scheme::Stripe, secret).verify(req.headers(), b"{}").unwrap();
    }
    let err = verifier(Scheme::Stripe, "whsec_other")
        .verify(req.headers(), b"{}")
        .unwrap_err();
    assert_eq!(err.status(), 401);
}

#[tokio::test]
async fn tampering_and_clock_skew_are_401_and_never_reach_the_handler() {
    for (scheme, secret) in all_schemes() {
        let seen = Seen::default();
        let svc = VerifyLayer::new(verifier(scheme.clone(), secret)).layer(handler(&seen, StatusCode::OK));
        let signer = signer(scheme.clone(), secret);

        let mut req = signed_request(&signer, b"amount=100");
        *req.body_mut() = Full::new(Bytes::from_static(b"amount=900"));
        let (status, headers, body) = send(svc.clone(), req).await;
        assert_problem(status, &headers, &body, 401, "bad-signature").await;

        let ts_header = match scheme.kind() {
            SchemeKind::StandardWebhooks => Some("webhook-timestamp"),
            SchemeKind::Slack => Some("x-slack-request-timestamp"),
            SchemeKind::Generic if scheme == Scheme::Generic(generic_hex()) => Some("x-acme-timestamp"),
            _ => None,
        };
        if let Some(name) = ts_header {
            let mut req = signed_request(&signer, b"amount=100");
            req.headers_mut().insert(name, HeaderValue::from(NOW - 1));
            let (status, headers, body) = send(svc.clone(), req).await;
            assert_problem(status, &headers, &body, 401, "bad-signature").await;
        }
        assert_eq!(seen.calls(), 0, "{:?}", scheme.kind());
    }

    // Stripe's timestamp lives in its signature header.
    let stripe = signer(Scheme::Stripe, "whsec_s");
    let req = signed_request(&stripe, b"{}");
    let header = req.headers()["stripe-signature"]
        .to_str()
        .unwrap()
        .replace(&format!("t={NOW}"), &format!("t={}", NOW + 1));
    let mut headers = req.headers().clone();
    headers.insert("stripe-signature", header.parse().unwrap());
    assert_eq!(
        verifier(Scheme::Stripe, "whsec_s")
            .verify(&headers, b"{}")
            .unwrap_err()
            .status(),
        401
    );
}

#[tokio::test]
async fn timestamps_within_tolerance_pass_and_outside_fail_both_ways() {
    for (signed_at, ok) in [
        (NOW - 300, true),
        (NOW + 300, true),
        (NOW - 301, false),
        (NOW + 301, false),
    ] {
        let seen = Seen::default();
        let svc = VerifyLayer::new(verifier(Scheme::StandardWebhooks, SW_SECRET)).layer(handler(&seen, StatusCode::OK));
        let signer = Signer::builder(Scheme::StandardWebhooks)
            .secret(SW_SECRET)
            .clock(FixedClock(signed_at))
            .build()
            .unwrap();
        let (status, headers, body) = send(svc, signed_request(&signer, b"{}")).await;
        if ok {
            assert_eq!(status, 200);
        } else {
            assert_problem(status, &headers, &body, 401, "stale-timestamp").await;
            assert_eq!(seen.calls(), 0);
        }
    }
    // A custom tolerance.
    let tight = Verifier::builder(Scheme::Slack)
        .secret("s")
        .tolerance(Duration::from_secs(10))
        .clock(FixedClock(NOW))
        .build()
        .unwrap();
    let late = Signer::builder(Scheme::Slack)
        .secret("s")
        .clock(FixedClock(NOW - 11))
        .build()
        .unwrap();
    assert_eq!(
        tight
            .verify(signed_request(&late, b"a").headers(), b"a")
            .unwrap_err()
            .status(),
        401
    );
}

/// A Standard Webhooks verifier reading the time from `clock` (Unix seconds).
fn standard_webhooks_on(clock: &Arc<std::sync::atomic::AtomicU64>) -> Verifier {
    let reading = Arc::clone(clock);
    Verifier::builder(Scheme::StandardWebhooks)
        .secret(SW_SECRET)
        .clock(move || reading.load(Ordering::SeqCst))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_body_held_back_past_the_tolerance_is_stale() {
    // A captured delivery replayed at once, its last byte held back for 11
    // minutes: the timestamp was fresh when the request began, stale when
    // the body was whole, and the replay window had forgotten the original.
    let clock = Arc::new(std::sync::atomic::AtomicU64::new(NOW));
    let verifier = standard_webhooks_on(&clock);
    let seen = Seen::default();
    let svc = VerifyLayer::new(verifier).layer(handler(&seen, StatusCode::OK));
    let captured = signed_request(&signer(Scheme::StandardWebhooks, SW_SECRET), b"{}");
    let (tx, pieces) = tokio::sync::mpsc::channel(2);
    let mut req = Request::post("/hook").body(ChannelBody(pieces)).unwrap();
    *req.headers_mut() = captured.headers().clone();
    tx.try_send(Bytes::from_static(b"{")).unwrap();
    let mut call = std::pin::pin!(svc.oneshot(req));
    assert!(
        futures_poll_once(call.as_mut()).is_pending(),
        "the body is still arriving"
    );
    clock.fetch_add(660, Ordering::SeqCst);
    tx.try_send(Bytes::from_static(b"}")).unwrap();
    drop(tx);
    let res = call.await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_problem(status, &headers, &body, 401, "stale-timestamp").await;
    assert_eq!(seen.calls(), 0);
}

#[tokio::test]
async fn malformed_headers_are_400_and_never_reach_the_handler() {
    let sw = signer(Scheme::StandardWebhooks, SW_SECRET);
    let good = signed_request(&sw, b"{}");
    let seen = Seen::default();
    let svc = VerifyLayer::new(verifier(Scheme::StandardWebhooks, SW_SECRET)).layer(handler(&seen, StatusCode::OK));

    let cases: Vec<(&str, Option<HeaderValue>, u16, &str)> = vec![
        ("webhook-signature", None, 400, "missing-header"),
        ("webhook-id", None, 400, "missing-header"),
        ("webhook-timestamp", None, 400, "missing-header"),
        (
            "webhook-signature",
            Some(HeaderValue::from_static("v1")),
            400,
            "malformed-header",
        ),
        (
            "webhook-signature",
            Some(HeaderValue::from_static("v1,")),
            400,
            "malformed-header",
        ),
        (
            "webhook-signature",
            Some(HeaderValue::from_static("v1,a,b")),
            400,
            "malformed-header",
        ),
        (
            "webhook-signature",
            Some(HeaderValue::from_static("v1,!!!notbase64!!!")),
            400,
            "malformed-header",
        ),
        (
            "webhook-signature",
            Some(HeaderValue::from_static("")),
            400,
            "malformed-header",
        ),
        (
            "webhook-signature",
            Some(HeaderValue::from_bytes(b"v1,\xff\xfe").unwrap()),
            400,
            "malformed-header",
        ),
        (
            "webhook-signature",
            Some(HeaderValue::from_static("v2,c2lnbmF0dXJl")),
            401,
            "bad-signature",
        ),
        (
            "webhook-timestamp",
            Some(HeaderValue::from_static("soon")),
            400,
            "malformed-header",
        ),
        (
            "webhook-timestamp",
            Some(HeaderValue::from_static("-1")),
            400,
            "malformed-header",
        ),
        (
            "webhook-timestamp",
            Some(HeaderValue::from_static("1700000000.5")),
            400,
            "malformed-header",
        ),
        (
            "webhook-timestamp",
            Some(HeaderValue::from_static("99999999999999999999999999")),
            400,
            "malformed-header",
        ),
        (
            "webhook-timestamp",
            Some(HeaderValue::from_static("18446744073709551615")),
            401,
            "stale-timestamp",
        ),
        (
            "webhook-id",
            Some(HeaderValue::from_static("")),
            400,
            "malformed-header",
        ),
    ];
    for (name, value, status_code, kind) in cases {
        let mut req = Request::post("/hook")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        *req.headers_mut() = good.headers().clone();
        match value {
            Some(value) => req.headers_mut().insert(name, value),
            None => req.headers_mut().remove(name),
        };
        let (status, headers, body) = send(svc.clone(), req).await;
        assert_problem(status, &headers, &body, status_code, kind).await;
    }
    assert_eq!(seen.calls(), 0);

    // The other schemes' own malformed shapes.
    let sha1 = format!("sha1={}", "0".repeat(40));
    let cases: Vec<(Scheme, &str, &str, u16)> = vec![
        (Scheme::Stripe, "stripe-signature", "v1=abc", 400),
        (Scheme::Stripe, "stripe-signature", "t=1,t=2,v1=00", 400),
        (Scheme::Stripe, "stripe-signature", "t=now,v1=00", 400),
        (Scheme::Stripe, "", "", 400),
        (Scheme::GitHub, "x-hub-signature-256", "sha256=nothex", 400),
        (Scheme::GitHub, "x-hub-signature-256", "sha256", 400),
        (Scheme::GitHub, "x-hub-signature-256", &sha1, 401),
        (Scheme::Slack, "x-slack-signature", "v0=", 400),
        (Scheme::Shopify, "x-shopify-hmac-sha256", "%%%", 400),
    ];
    for (scheme, name, value, expected) in cases {
        let mut req = Request::post("/hook")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        if scheme == Scheme::Slack {
            req.headers_mut()
                .insert("x-slack-request-timestamp", HeaderValue::from(NOW));
        }
        if !name.is_empty() {
            req.headers_mut().insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let svc = VerifyLayer::new(verifier(scheme.clone(), "secret")).layer(handler(&seen, StatusCode::OK));
        let (status, headers, body) = send(svc, req).await;
        assert_eq!(status.as_u16(), expected, "{:?} {name}: {value}", scheme.kind());
        assert_eq!(headers["content-type"], "application/problem+json");
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("secret"), "{text}");
    }
    assert_eq!(seen.calls(), 0);
}

#[test]
fn impossible_configurations_fail_at_build() {
    assert_eq!(
        Verifier::builder(Scheme::StandardWebhooks)
            .secret("whsec_")
            .build()
            .unwrap_err(),
        ConfigError::EmptySecret
    );
    assert_eq!(
        Signer::builder(Scheme::GitHub).secret("").build().unwrap_err(),
        ConfigError::EmptySecret
    );
    assert_eq!(
        Signer::builder(Scheme::GitHub)
            .signing_key(SIGNING_KEY)
            .build()
            .unwrap_err(),
        ConfigError::KeysNotSupported
    );
    let v = verifier(Scheme::GitHub, "s");
    assert_eq!(
        VerifyLayer::builder(v.clone()).max_body(0).build().unwrap_err(),
        ConfigError::ZeroBodyLimit
    );
    assert_eq!(
        VerifyLayer::builder(v)
            .replay_window(Duration::from_millis(10))
            .build()
            .unwrap_err(),
        ConfigError::ZeroReplayWindow
    );
    // A message signed with a timestamp stays fresh for twice the tolerance
    // (300 s) and a second: the clock is read in whole seconds, so one
    // accepted at `ts - 300` is still fresh at `ts + 300.9`. A replay window
    // shorter than that lets a capture in again.
    assert_eq!(
        VerifyLayer::builder(verifier(Scheme::StandardWebhooks, SW_SECRET))
            .replay_window(Duration::from_secs(600))
            .build()
            .unwrap_err(),
        ConfigError::ReplayWindowShorterThanFreshness {
            window: Duration::from_secs(600),
            needed: Duration::from_secs(601),
        }
    );
    VerifyLayer::builder(verifier(Scheme::StandardWebhooks, SW_SECRET))
        .replay_window(Duration::from_secs(601))
        .build()
        .unwrap();
    assert_eq!(
        VerifyLayer::builder(verifier(Scheme::GitHub, "s"))
            .lock_expiry(Duration::from_millis(999))
            .build()
            .unwrap_err(),
        ConfigError::ZeroLockExpiry
    );
    assert_eq!(
        VerifyLayer::builder(verifier(Scheme::GitHub, "s"))
            .store_timeout(Duration::ZERO)
            .build()
            .unwrap_err(),
        ConfigError::ZeroStoreTimeout
    );
}

/// A replay store whose connection is open but never answers.
struct SilentStore;

impl ReplayStore for SilentStore {
    fn claim(&self, _: &str, _: Lease, _: Duration) -> StoreFuture<Claim> {
        Box::pin(std::future::pending())
    }

    fn accept(&self, _: &str, _: Duration) -> StoreFuture<()> {
        Box::pin(std::future::pending())
    }

    fn release(&self, _: &str, _: Lease) {}
}

#[tokio::test(start_paused = true)]
async fn a_store_that_never_answers_a_claim_is_answered_503_at_the_store_timeout() {
    let seen = Seen::default();
    let svc = VerifyLayer::builder(verifier(Scheme::StandardWebhooks, SW_SECRET))
        .replay_store(SilentStore)
        .store_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .layer(handler(&seen, StatusCode::OK));
    let signer = signer(Scheme::StandardWebhooks, SW_SECRET);
    let started = tokio::time::Instant::now();
    let (status, headers, body) = send(svc, signed_request(&signer, b"{\"n\":1}")).await;
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["type"], "urn:palisade:problem:webhook-replay-store-unavailable");
    assert_eq!(seen.calls(), 0);
}

#[tokio::test]
async fn duplicate_ids_are_answered_200_without_the_handler() {
    let seen = Seen::default();
    let store = MemoryReplayStore::new();
    let layer = VerifyLayer::builder(verifier(Scheme::StandardWebhooks, SW_SECRET))
        .replay_store(store.clone())
        .build()
        .unwrap();
    let svc = layer.layer(handler(&seen, StatusCode::OK));
    let signer = signer(Scheme::StandardWebhooks, SW_SECRET);
    let first = signed_request(&signer, b"{\"n\":1}");
    let mut redelivery = Request::post("/hook")
        .body(Full::new(Bytes::from_static(b"{\"n\":1}")))
        .unwrap();
    *redelivery.headers_mut() = first.headers().clone();

    assert_eq!(send(svc.clone(), first).await.0, 200);
    let (status, headers, body) = send(svc.clone(), redelivery).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    assert!(headers.get("content-type").is_none());
    assert_eq!(seen.calls(), 1);
    // Another message goes through.
    assert_eq!(send(svc.clone(), signed_request(&signer, b"{\"n\":2}")).await.0, 200);
    assert_eq!(seen.calls(), 2);
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn stripe_and_github_ids_are_deduplicated() {
    let seen = Seen::default();
    let stripe = VerifyLayer::builder(verifier(Scheme::Stripe, "whsec_s"))
        .replay_store(MemoryReplayStore::new())
        .build()
        .unwrap()
        .layer(handler(&seen, StatusCode::OK));
    let signer_stripe = signer(Scheme::Stripe, "whsec_s");
    let event: &'static [u8] = br#"{"id":"evt_123","object":"event"}"#;
    assert_eq!(send(stripe.clone(), signed_request(&signer_stripe, event)).await.0, 200);
    assert_eq!(seen.last().2.unwrap().id(), Some("evt_123"));
    assert_eq!(
        send(stripe.clone(), signed_request(&signer_stripe, event))
            .await
            .2
            .len(),
        0
    );
    assert_eq!(seen.calls(), 1);

    let github = VerifyLayer::builder(verifier(Scheme::GitHub, "gh"))
        .replay_store(MemoryReplayStore::new())
        .build()
        .unwrap()
        .layer(handler(&seen, StatusCode::OK));
    let gh = Signer::builder(Scheme::GitHub)
        .secret("gh")
        .id_generator(|| "delivery-1".to_owned())
        .build()
        .unwrap();
    assert_eq!(
        send(github.clone(), signed_request(&gh, b"{}")).await.2.as_ref(),
        b"handled"
    );
    assert_eq!(send(github.clone(), signed_request(&gh, b"{}")).await.2.len(), 0);
    assert_eq!(seen.calls(), 2);
}

#[tokio::test]
async fn a_failed_handler_releases_the_id_so_the_retry_is_processed() {
    let seen = Seen::default();
    let store = MemoryReplayStore::new();
    let layer = VerifyLayer::builder(verifier(Scheme::StandardWebhooks, SW_SECRET))
        .replay_store(store.clone())
        .build()
        .unwrap();
    let signer = signer(Scheme::StandardWebhooks, SW_SECRET);
    let first = signed_request(&signer, b"{}");
    let headers = first.headers().clone();
    let retry = || {
        let mut req = Request::post("/hook")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        *req.headers_mut() = headers.clone();
        req
    };
    assert_eq!(
        send(layer.layer(handler(&seen, StatusCode::SERVICE_UNAVAILABLE)), first)
            .await
            .0,
        503
    );
    assert!(store.is_empty());
    assert_eq!(
        send(layer.layer(handler(&seen, StatusCode::NO_CONTENT)), retry())
            .await
            .0,
        204
    );
    assert_eq!(
        send(layer.layer(handler(&seen, StatusCode::NO_CONTENT)), retry())
            .await
            .0,
        200
    );
    assert_eq!(seen.calls(), 2);
}

/// A body delivered in chunks, counting how many were read.
struct Chunks {
    chunks: VecDeque<Bytes>,
    read: Arc<AtomicUsize>,
    announced: Option<u64>,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.chunks.pop_front() {
            Some(chunk) => {
                self.read.fetch_add(1, Ordering::SeqCst);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            None => Poll::Ready(None),
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.announced.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_without_reading_the_rest() {
    let seen = Seen::default();
    let layer = VerifyLayer::builder(verifier(Scheme::GitHub, "gh"))
        .max_body(1000)
        .build()
        .unwrap();
    let svc = layer.layer(handler(&seen, StatusCode::OK));
    let signer = signer(Scheme::GitHub, "gh");
    let chunk = Bytes::from(vec![b'a'; 400]);
    let whole: Vec<u8> = chunk.iter().copied().cycle().take(400 * 10).collect();

    for announced in [None, Some(4000)] {
        let read = Arc::new(AtomicUsize::new(0));
        let body = Chunks {
            chunks: std::iter::repeat_n(chunk.clone(), 10).collect(),
            read: read.clone(),
            announced,
        };
        let mut req = Request::post("/hook").body(body).unwrap();
        signer.sign(req.headers_mut(), &whole).unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        // Three chunks pass the limit; an announced length is refused before any.
        assert_eq!(read.load(Ordering::SeqCst), if announced.is_some() { 0 } else { 3 });
    }

    // A body of many chunks up to the limit arrives whole.
    let read = Arc::new(AtomicUsize::new(0));
    let exact: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let chunks = exact.chunks(7).map(Bytes::copy_from_slice).collect();
    let mut req = Request::post("/hook")
        .body(Chunks {
            chunks,
            read,
            announced: None,
        })
        .unwrap();
    signer.sign(req.headers_mut(), &exact).unwrap();
    assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), 200);
    assert_eq!(&seen.last().1[..], &exact[..]);
    assert_eq!(seen.calls(), 1);
}

#[tokio::test]
async fn bad_headers_on_large_or_unannounced_bodies_are_rejected_before_reading() {
    let seen = Seen::default();
    let svc = VerifyLayer::new(verifier(Scheme::StandardWebhooks, SW_SECRET)).layer(handler(&seen, StatusCode::OK));
    let stale = Signer::builder(Scheme::StandardWebhooks)
        .secret(SW_SECRET)
        .clock(FixedClock(NOW - 3600))
        .build()
        .unwrap();
    for announced in [None, Some(40_000)] {
        for signed in [false, true] {
            let read = Arc::new(AtomicUsize::new(0));
            let chunks = std::iter::repeat_n(Bytes::from(vec![b'a'; 4000]), 10).collect();
            let mut req = Request::post("/hook")
                .body(Chunks {
                    chunks,
                    read: read.clone(),
                    announced,
                })
                .unwrap();
            if signed {
                stale.sign(req.headers_mut(), &[b'a'; 40_000]).unwrap();
            }
            let res = svc.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), if signed { 401 } else { 400 });
            assert_eq!(read.load(Ordering::SeqCst), 0, "announced {announced:?}");
        }
    }
    assert_eq!(seen.calls(), 0);
}

/// A service that must be driven ready before each call, as tower requires.
struct NeedsReady {
    ready: bool,
    polls: Arc<AtomicUsize>,
}

/// A clone has reserved nothing: it must be driven ready itself.
impl Clone for NeedsReady {
    fn clone(&self) -> Self {
        Self {
            ready: false,
            polls: self.polls.clone(),
        }
    }
}

impl Service<Request<Full<Bytes>>> for NeedsReady {
    type Response = Response<Full<Bytes>>;
    type Error = &'static str;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Full<Bytes>>) -> Self::Future {
        let was_ready = std::mem::replace(&mut self.ready, false);
        std::future::ready(if was_ready {
            Ok(Response::new(Full::default()))
        } else {
            Err("called before ready")
        })
    }
}

#[tokio::test]
async fn the_inner_service_is_called_only_after_it_was_ready() {
    let polls = Arc::new(AtomicUsize::new(0));
    let mut svc = VerifyLayer::new(verifier(Scheme::GitHub, "gh")).layer(NeedsReady {
        ready: false,
        polls: polls.clone(),
    });
    let signer = signer(Scheme::GitHub, "gh");
    for _ in 0..3 {
        let res = ServiceExt::<Request<Full<Bytes>>>::ready(&mut svc)
            .await
            .unwrap()
            .call(signed_request(&signer, b"{}"))
            .await;
        assert_eq!(res.unwrap().status(), 200);
    }
    assert_eq!(polls.load(Ordering::SeqCst), 3);
    // A rejection leaves the readiness unspent; errors come back unchanged.
    let mut unsigned = Request::post("/hook").body(Full::new(Bytes::new())).unwrap();
    unsigned
        .headers_mut()
        .insert("x-hub-signature-256", "sha256=00".parse().unwrap());
    assert_eq!(
        ServiceExt::<Request<Full<Bytes>>>::ready(&mut svc)
            .await
            .unwrap()
            .call(unsigned)
            .await
            .unwrap()
            .status(),
        400
    );
}

#[tokio::test]
async fn inner_errors_pass_through_and_release_the_id() {
    let store = MemoryReplayStore::new();
    let failing = service_fn(|_: Request<Full<Bytes>>| async { Err::<Response<Full<Bytes>>, _>("database down") });
    let svc = VerifyLayer::builder(verifier(Scheme::StandardWebhooks, SW_SECRET))
        .replay_store(store.clone())
        .build()
        .unwrap()
        .layer(failing);
    let err = svc
        .oneshot(signed_request(&signer(Scheme::StandardWebhooks, SW_SECRET), b"{}"))
        .await
        .unwrap_err();
    assert_eq!(err, "database down");
    assert!(store.is_empty());
}

#[tokio::test]
async fn dropping_the_call_releases_the_id_and_the_body() {
    let store = MemoryReplayStore::new();
    let entered = Arc::new(AtomicUsize::new(0));
    let entered2 = entered.clone();
    let pending = service_fn(move |_: Request<Full<Bytes>>| {
        entered2.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>()
    });
    let mut svc = VerifyLayer::builder(verifier(Scheme::StandardWebhooks, SW_SECRET))
        .replay_store(store.clone())
        .build()
        .unwrap()
        .layer(pending);
    let req = signed_request(&signer(Scheme::StandardWebhooks, SW_SECRET), b"{}");
    let headers = req.headers().clone();
    let mut fut = Box::pin(
        ServiceExt::<Request<Full<Bytes>>>::ready(&mut svc)
            .await
            .unwrap()
            .call(req),
    );
    assert!(futures_poll_once(fut.as_mut()).is_pending());
    assert_eq!((entered.load(Ordering::SeqCst), store.len()), (1, 1));
    drop(fut);
    assert!(store.is_empty(), "the claim is released when the call is dropped");
    // The redelivery reaches the handler.
    let mut again = Request::post("/hook")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    *again.headers_mut() = headers;
    let mut fut = Box::pin(
        ServiceExt::<Request<Full<Bytes>>>::ready(&mut svc)
            .await
            .unwrap()
            .call(again),
    );
    assert!(futures_poll_once(fut.as_mut()).is_pending());
    assert_eq!(entered.load(Ordering::SeqCst), 2);

    // Dropped while the body is still arriving: nothing claimed, handler never called.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut req = Request::post("/hook").body(ChannelBody(rx)).unwrap();
    signer(Scheme::StandardWebhooks, SW_SECRET)
        .sign(req.headers_mut(), b"{}")
        .unwrap();
    let mut svc2 = VerifyLayer::builder(verifier(Scheme::StandardWebhooks, SW_SECRET))
        .replay_store(store.clone())
        .build()
        .unwrap()
        .layer(handler(&Seen::default(), StatusCode::OK));
    let mut fut = Box::pin(
        ServiceExt::<Request<ChannelBody>>::ready(&mut svc2)
            .await
            .unwrap()
            .call(req),
    );
    assert!(futures_poll_once(fut.as_mut()).is_pending());
    drop(fut);
    assert!(tx.is_closed(), "the body is dropped with the call");
    assert_eq!(store.len(), 1, "only the first, still running, call holds a claim");
}

fn futures_poll_once<F: std::future::Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(std::task::Waker::noop()))
}

/// A body whose frames arrive through a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

#[test]
fn rejections_are_counted_by_scheme_and_outcome() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let seen = Seen::default();
            let svc = VerifyLayer::builder(verifier(Scheme::GitHub, "gh"))
                .name("github-app")
                .build()
                .unwrap()
                .layer(handler(&seen, StatusCode::OK));
            let signer = signer(Scheme::GitHub, "gh");
            send(svc.clone(), signed_request(&signer, b"{}")).await;
            let mut bad = signed_request(&signer, b"{}");
            *bad.body_mut() = Full::new(Bytes::from_static(b"[]"));
            send(svc.clone(), bad).await;
            send(svc, Request::post("/").body(Full::default()).unwrap()).await;
        });
    });
    let mut counts: Vec<(String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            assert_eq!(key.key().name(), "palisade_webhook_verifications_total");
            let DebugValue::Counter(n) = value else {
                panic!("a counter")
            };
            (labels.join(","), n)
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        vec![
            ("name=github-app,scheme=github,outcome=bad_signature".to_owned(), 1),
            ("name=github-app,scheme=github,outcome=missing_header".to_owned(), 1),
            ("name=github-app,scheme=github,outcome=verified".to_owned(), 1),
        ]
    );
}

#[test]
fn secrets_never_show_in_debug_output() {
    let secret = "whsec_c3VwZXJzZWNyZXRrZXl2YWx1ZQ==";
    let v = Verifier::builder(Scheme::StandardWebhooks)
        .secret(secret)
        .build()
        .unwrap();
    let layer = VerifyLayer::builder(v.clone())
        .replay_store(MemoryReplayStore::new())
        .build()
        .unwrap();
    let s = Signer::builder(Scheme::StandardWebhooks)
        .secret(secret)
        .signing_key(SIGNING_KEY)
        .build()
        .unwrap();
    let shown = format!(
        "{v:?} {layer:?} {s:?} {:?} {:?}",
        SignLayer::new(s.clone()),
        layer.layer(())
    );
    for needle in ["c3VwZXJz", "6Xb/dCcH", "supersecret"] {
        assert!(!shown.contains(needle), "{shown}");
    }
}

/// A body that fails on its first frame.
struct Broken;

impl Body for Broken {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "peer went away",
        ))))
    }
}

#[tokio::test]
async fn broken_bodies_are_400_inbound_and_the_error_itself_outbound() {
    let seen = Seen::default();
    let mut req = Request::post("/hook").body(Broken).unwrap();
    signer(Scheme::GitHub, "gh").sign(req.headers_mut(), b"{}").unwrap();
    let res = VerifyLayer::new(verifier(Scheme::GitHub, "gh"))
        .layer(handler(&seen, StatusCode::OK))
        .oneshot(req)
        .await;
    let res = res.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    // The sign layer hands the body's error back, still findable by downcast.
    let sign = SignLayer::new(signer(Scheme::GitHub, "gh")).layer(handler(&seen, StatusCode::OK));
    let err = sign
        .oneshot(Request::post("/out").body(Broken).unwrap())
        .await
        .unwrap_err();
    let io = err.downcast_ref::<std::io::Error>().expect("the body's own error");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(seen.calls(), 0);
}

#[tokio::test]
async fn the_sign_layer_keeps_an_existing_id_for_redeliveries() {
    let seen = Seen::default();
    let sign = SignLayer::new(signer(Scheme::StandardWebhooks, SW_SECRET)).layer(handler(&seen, StatusCode::OK));
    let mut req = Request::post("/out")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    req.headers_mut()
        .insert("webhook-id", HeaderValue::from_static("evt_0192"));
    sign.clone().oneshot(req).await.unwrap();
    sign.oneshot(
        Request::post("/out")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap(),
    )
    .await
    .unwrap();
    let received = seen.0.lock().unwrap().clone();
    assert_eq!(received[0].0["webhook-id"], "evt_0192");
    let fresh = received[1].0["webhook-id"].to_str().unwrap().to_owned();
    assert!(uuid_like(&fresh), "{fresh}");
    for (headers, body, _) in &received {
        verifier(Scheme::StandardWebhooks, SW_SECRET)
            .verify(headers, body)
            .unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_retried_delivery_keeps_its_id_and_the_receiver_drops_the_repeat() {
    // The receiver accepts the first delivery, but its answer is lost on the
    // way (a gateway answers 503 instead), and the sender retries.
    let seen = Seen::default();
    let receiver = VerifyLayer::builder(verifier(Scheme::StandardWebhooks, SW_SECRET))
        .replay_store(MemoryReplayStore::new())
        .build()
        .unwrap()
        .layer(handler(&seen, StatusCode::OK));
    let delivered = Arc::new(AtomicUsize::new(0));
    let deliveries = delivered.clone();
    let wire = service_fn(move |req: Request<Full<Bytes>>| {
        let receiver = receiver.clone();
        let first = deliveries.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            let res = receiver.oneshot(req).await?;
            Ok::<_, Infallible>(if first {
                Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .body(Full::default())
                    .unwrap()
            } else {
                res
            })
        }
    });
    let signer = signer(Scheme::StandardWebhooks, SW_SECRET);
    let retry = palisade_retry::HttpRetryLayer::builder("hooks")
        .retry_methods([http::Method::POST])
        .backoff(palisade_retry::Backoff::constant(Duration::from_millis(10)))
        .no_budget()
        .build()
        .unwrap();
    let sender = tower::ServiceBuilder::new()
        .layer(SetMessageIdLayer::new(signer.clone()))
        .layer(retry)
        .layer(SignLayer::new(signer))
        .service(wire);
    let req = Request::post("/hook")
        .body(Full::new(Bytes::from_static(b"{\"n\":1}")))
        .unwrap();
    let res = sender.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(delivered.load(Ordering::SeqCst), 2, "sent twice");
    assert_eq!(seen.calls(), 1, "handled once: the retry carried the first id");
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().filter(|&c| c == '-').count() == 4 && id.as_bytes()[14] == b'7'
}

/// A replay store that answers claims as told (or never) and records
/// claims, acceptances and releases.
#[derive(Clone, Default)]
struct ScriptedStore {
    answer: Option<Claim>,
    accept_never_answers: bool,
    claimed: Arc<Mutex<Vec<(String, Lease)>>>,
    accepted: Arc<Mutex<Vec<String>>>,
    released: Arc<Mutex<Vec<(String, Lease)>>>,
}

impl palisade_webhook::ReplayStore for ScriptedStore {
    fn claim(&self, key: &str, lease: Lease, _: Duration) -> StoreFuture<Claim> {
        self.claimed.lock().unwrap().push((key.to_owned(), lease));
        match self.answer {
            Some(found) => Box::pin(std::future::ready(Ok(found))),
            None => Box::pin(std::future::pending()),
        }
    }

    fn accept(&self, key: &str, _: Duration) -> StoreFuture<()> {
        self.accepted.lock().unwrap().push(key.to_owned());
        if self.accept_never_answers {
            Box::pin(std::future::pending())
        } else {
            Box::pin(std::future::ready(Ok(())))
        }
    }

    fn release(&self, key: &str, lease: Lease) {
        self.released.lock().unwrap().push((key.to_owned(), lease));
    }
}

#[tokio::test]
async fn a_claim_in_flight_is_released_when_dropped_and_a_duplicate_never_is() {
    let signer = signer(Scheme::GitHub, "gh");
    let signed = || {
        let mut req = signed_request(&signer, b"{}");
        req.headers_mut()
            .insert("x-github-delivery", HeaderValue::from_static("d-1"));
        req
    };
    // GitHub's delivery id is not signed: the message is keyed on its signature.
    let signature = signed().headers()["x-hub-signature-256"].to_str().unwrap().to_owned();
    let key = format!("github:hmac:{}", signature.strip_prefix("sha256=").unwrap());
    let seen = Seen::default();

    let in_flight = ScriptedStore::default();
    let mut svc = VerifyLayer::builder(verifier(Scheme::GitHub, "gh"))
        .replay_store(in_flight.clone())
        .build()
        .unwrap()
        .layer(handler(&seen, StatusCode::OK));
    let mut fut = Box::pin(
        ServiceExt::<Request<Full<Bytes>>>::ready(&mut svc)
            .await
            .unwrap()
            .call(signed()),
    );
    assert!(futures_poll_once(fut.as_mut()).is_pending());
    assert!(in_flight.released.lock().unwrap().is_empty());
    drop(fut);
    let claimed = in_flight.claimed.lock().unwrap().clone();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].0, key);
    assert_eq!(
        *in_flight.released.lock().unwrap(),
        claimed,
        "released under its own lease"
    );

    for (found, status, body) in [
        (Claim::Accepted, StatusCode::OK, 0),
        (Claim::InFlight, StatusCode::CONFLICT, 1),
    ] {
        let duplicate = ScriptedStore {
            answer: Some(found),
            ..ScriptedStore::default()
        };
        let svc = VerifyLayer::builder(verifier(Scheme::GitHub, "gh"))
            .replay_store(duplicate.clone())
            .build()
            .unwrap()
            .layer(handler(&seen, StatusCode::OK));
        let (answered, _, answer) = send(svc, signed()).await;
        assert_eq!((answered, answer.len().min(1)), (status, body), "{found:?}");
        assert!(
            duplicate.released.lock().unwrap().is_empty() && duplicate.accepted.lock().unwrap().is_empty(),
            "the first delivery keeps its mark"
        );
    }
    assert_eq!(seen.calls(), 0);

    // A handled message is recorded as accepted, not released.
    let fresh = ScriptedStore {
        answer: Some(Claim::Acquired),
        ..ScriptedStore::default()
    };
    let svc = VerifyLayer::builder(verifier(Scheme::GitHub, "gh"))
        .replay_store(fresh.clone())
        .build()
        .unwrap()
        .layer(handler(&seen, StatusCode::OK));
    assert_eq!(send(svc, signed()).await.0, StatusCode::OK);
    assert_eq!(*fresh.accepted.lock().unwrap(), std::slice::from_ref(&key));
    assert!(fresh.released.lock().unwrap().is_empty());
    assert_eq!(seen.calls(), 1);

    // The answer waits for the store to record the acceptance; a call dropped
    // then keeps the mark, since the handler already did its work.
    let slow = ScriptedStore {
        answer: Some(Claim::Acquired),
        accept_never_answers: true,
        ..ScriptedStore::default()
    };
    let mut svc = VerifyLayer::builder(verifier(Scheme::GitHub, "gh"))
        .replay_store(slow.clone())
        .build()
        .unwrap()
        .layer(handler(&seen, StatusCode::OK));
    let mut fut = Box::pin(
        ServiceExt::<Request<Full<Bytes>>>::ready(&mut svc)
            .await
            .unwrap()
            .call(signed()),
    );
    assert!(futures_poll_once(fut.as_mut()).is_pending());
    assert_eq!((seen.calls(), slow.accepted.lock().unwrap().clone()), (2, vec![key]));
    drop(fut);
    assert!(slow.released.lock().unwrap().is_empty());
}

/// The headers of `req`, on a new request with `body`.
fn redelivery(headers: &HeaderMap, body: &'static [u8]) -> Request<Full<Bytes>> {
    let mut req = Request::post("/hook")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    *req.headers_mut() = headers.clone();
    req
}

#[tokio::test(start_paused = true)]
async fn a_redelivery_while_the_first_runs_is_not_acknowledged_and_one_after_its_failure_is_handled() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    // The first attempt takes ten seconds and fails; later ones succeed at once.
    let slow_then_failing = service_fn(move |_: Request<Full<Bytes>>| {
        let attempt = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut res = Response::new(Full::new(Bytes::from_static(b"handled")));
            if attempt == 0 {
                tokio::time::sleep(Duration::from_secs(10)).await;
                *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            } else {
                *res.status_mut() = StatusCode::NO_CONTENT;
            }
            Ok::<_, Infallible>(res)
        }
    });
    let svc = VerifyLayer::builder(verifier(Scheme::StandardWebhooks, SW_SECRET))
        .replay_store(MemoryReplayStore::new())
        .build()
        .unwrap()
        .layer(slow_then_failing);
    let first = signed_request(&signer(Scheme::StandardWebhooks, SW_SECRET), b"{}");
    let headers = first.headers().clone();

    let running = tokio::spawn(send(svc.clone(), first));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the first delivery is in the handler");

    // The sender must not take this as success: the first may still fail.
    let (status, answer, body) = send(svc.clone(), redelivery(&headers, b"{}")).await;
    assert_problem(status, &answer, &body, 409, "in-flight").await;
    assert_eq!(answer["retry-after"], "1");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the duplicate did not reach the handler"
    );

    assert_eq!(running.await.unwrap().0, StatusCode::INTERNAL_SERVER_ERROR);

    // After the failure the redelivery is handled, and once handled it is acknowledged.
    assert_eq!(
        send(svc.clone(), redelivery(&headers, b"{}")).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let (status, _, body) = send(svc, redelivery(&headers, b"{}")).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_captured_github_or_shopify_delivery_under_another_or_no_id_never_reaches_the_handler_twice() {
    for (scheme, secret, id_header) in [
        (Scheme::GitHub, "gh", "x-github-delivery"),
        (Scheme::Shopify, "shop", "x-shopify-webhook-id"),
    ] {
        let seen = Seen::default();
        let svc = VerifyLayer::builder(verifier(scheme.clone(), secret))
            .replay_store(MemoryReplayStore::new())
            .build()
            .unwrap()
            .layer(handler(&seen, StatusCode::OK));
        let signer = Signer::builder(scheme.clone())
            .secret(secret)
            .id_generator(|| "delivery-1".to_owned())
            .build()
            .unwrap();
        let captured = signed_request(&signer, b"{\"order\":1}");
        let headers = captured.headers().clone();
        assert_eq!(headers[id_header], "delivery-1");
        assert_eq!(send(svc.clone(), captured).await.2.as_ref(), b"handled");

        // The id header is not signed: changing or removing it makes no new message.
        let mut changed = headers.clone();
        changed.insert(id_header, HeaderValue::from_static("delivery-2"));
        let mut removed = headers.clone();
        removed.remove(id_header);
        for replay in [changed, removed] {
            let (status, _, body) = send(svc.clone(), redelivery(&replay, b"{\"order\":1}")).await;
            assert_eq!((status, body.len()), (StatusCode::OK, 0), "{:?}", scheme.kind());
        }
        assert_eq!(seen.calls(), 1, "{:?}", scheme.kind());

        // Another signed message, with or without an id, is handled.
        let mut other = signed_request(&signer, b"{\"order\":2}");
        other.headers_mut().remove(id_header);
        assert_eq!(send(svc.clone(), other).await.2.as_ref(), b"handled");
        assert_eq!(seen.calls(), 2, "{:?}", scheme.kind());
    }
}

#[test]
fn a_generic_scheme_refuses_id_and_timestamp_headers_its_template_does_not_sign() {
    let unsigned_id = GenericScheme::new("X-Acme-Signature")
        .id_header("X-Acme-Id")
        .timestamp_header("X-Acme-Timestamp")
        .template("{timestamp}.{body}");
    let unsigned_timestamp = GenericScheme::new("X-Acme-Signature")
        .id_header("X-Acme-Id")
        .timestamp_header("X-Acme-Timestamp")
        .template("{id}.{body}");
    for (scheme, header) in [(unsigned_id, "x-acme-id"), (unsigned_timestamp, "x-acme-timestamp")] {
        let verifier = Verifier::builder(Scheme::Generic(scheme.clone())).secret("s").build();
        let error = verifier.expect_err("an unsigned header is refused");
        assert!(error.to_string().contains(header), "{error}");
        let signer = Signer::builder(Scheme::Generic(scheme)).secret("s").build();
        assert_eq!(
            signer.expect_err("the signer refuses it too").to_string(),
            error.to_string()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_message_whose_handler_died_is_handled_again_after_the_lock_expiry() {
    let store = MemoryReplayStore::new();
    let layer = VerifyLayer::builder(verifier(Scheme::StandardWebhooks, SW_SECRET))
        .replay_store(store.clone())
        .lock_expiry(Duration::from_secs(30))
        .build()
        .unwrap();
    let entered = Arc::new(AtomicUsize::new(0));
    let counted = entered.clone();
    let mut stuck = layer.layer(service_fn(move |_: Request<Full<Bytes>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>()
    }));
    let first = signed_request(&signer(Scheme::StandardWebhooks, SW_SECRET), b"{}");
    let headers = first.headers().clone();
    let mut fut = Box::pin(
        ServiceExt::<Request<Full<Bytes>>>::ready(&mut stuck)
            .await
            .unwrap()
            .call(first),
    );
    assert!(futures_poll_once(fut.as_mut()).is_pending());
    assert_eq!(entered.load(Ordering::SeqCst), 1);
    // The process dies mid-handling: the call is never finished nor dropped.
    std::mem::forget(fut);

    let seen = Seen::default();
    let svc = layer.layer(handler(&seen, StatusCode::OK));
    tokio::time::advance(Duration::from_secs(29)).await;
    let (status, answer, body) = send(svc.clone(), redelivery(&headers, b"{}")).await;
    assert_problem(status, &answer, &body, 409, "in-flight").await;
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        send(svc.clone(), redelivery(&headers, b"{}")).await.2.as_ref(),
        b"handled"
    );
    let (status, _, body) = send(svc, redelivery(&headers, b"{}")).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    assert_eq!(seen.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_accepted_message_is_remembered_for_the_replay_window() {
    let seen = Seen::default();
    let svc = VerifyLayer::builder(verifier(Scheme::GitHub, "gh"))
        .replay_store(MemoryReplayStore::new())
        .replay_window(Duration::from_secs(3600))
        .build()
        .unwrap()
        .layer(handler(&seen, StatusCode::OK));
    let captured = signed_request(&signer(Scheme::GitHub, "gh"), b"{}");
    let headers = captured.headers().clone();
    assert_eq!(send(svc.clone(), captured).await.2.as_ref(), b"handled");
    tokio::time::advance(Duration::from_secs(3599)).await;
    assert_eq!(send(svc.clone(), redelivery(&headers, b"{}")).await.2.len(), 0);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(send(svc, redelivery(&headers, b"{}")).await.2.as_ref(), b"handled");
    assert_eq!(seen.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_retry_signed_afresh_hours_later_is_still_recognised() {
    // Standard Webhooks senders (Svix) and Stripe sign every retry anew, with
    // a fresh timestamp and the same id, for a day or more: 5 min, 30 min,
    // 2 h, ... The accepted mark must outlive that schedule, or a retry whose
    // first 2xx was lost runs the handler again.
    let clock = Arc::new(std::sync::atomic::AtomicU64::new(NOW));
    let verifier = standard_webhooks_on(&clock);
    let seen = Seen::default();
    let svc = VerifyLayer::builder(verifier)
        .replay_store(MemoryReplayStore::new())
        .build()
        .unwrap()
        .layer(handler(&seen, StatusCode::OK));
    let first = signed_request(&signer(Scheme::StandardWebhooks, SW_SECRET), b"{}");
    let id = first.headers()["webhook-id"].clone();
    assert_eq!(send(svc.clone(), first).await.2.as_ref(), b"handled");
    for later in [
        Duration::from_secs(30 * 60),
        Duration::from_secs(2 * 3600),
        Duration::from_secs(26 * 3600),
    ] {
        tokio::time::advance(later).await;
        let now = clock.fetch_add(later.as_secs(), Ordering::SeqCst) + later.as_secs();
        let resigner = Signer::builder(Scheme::StandardWebhooks)
            .secret(SW_SECRET)
            .clock(FixedClock(now))
            .build()
            .unwrap();
        let mut retry = Request::post("/hook")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        retry.headers_mut().insert("webhook-id", id.clone());
        resigner.sign(retry.headers_mut(), b"{}").unwrap();
        let (status, _, body) = send(svc.clone(), retry).await;
        assert_eq!((status, body.len()), (StatusCode::OK, 0), "{later:?} later");
    }
    assert_eq!(seen.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn layers_sharing_a_store_under_their_own_names_keep_their_messages_apart() {
    // Two tenants' senders both number a message "msg_1": one store, two
    // layers. Each message reaches its own handler; a redelivery of either
    // is still recognised.
    let store = MemoryReplayStore::new();
    let tenant = |name: &str, secret: &str, seen: &Seen| {
        VerifyLayer::builder(verifier(Scheme::StandardWebhooks, secret))
            .name(name)
            .replay_store(store.clone())
            .build()
            .unwrap()
            .layer(handler(seen, StatusCode::OK))
    };
    let (seen_a, seen_b) = (Seen::default(), Seen::default());
    let (a, b) = (
        tenant("tenant-a", SW_SECRET, &seen_a),
        tenant("tenant-b", SW_OLD_SECRET, &seen_b),
    );
    let message = |secret: &str| {
        let mut req = Request::post("/hook")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        req.headers_mut()
            .insert("webhook-id", HeaderValue::from_static("msg_1"));
        signer(Scheme::StandardWebhooks, secret)
            .sign(req.headers_mut(), b"{}")
            .unwrap();
        req
    };
    assert_eq!(send(a.clone(), message(SW_SECRET)).await.2.as_ref(), b"handled");
    assert_eq!(send(b.clone(), message(SW_OLD_SECRET)).await.2.as_ref(), b"handled");
    assert_eq!(send(a, message(SW_SECRET)).await.2.len(), 0, "a redelivery");
    assert_eq!(send(b, message(SW_OLD_SECRET)).await.2.len(), 0, "a redelivery");
    assert_eq!((seen_a.calls(), seen_b.calls()), (1, 1));
}

#[tokio::test]
async fn a_generic_id_cannot_take_in_the_text_that_ends_it() {
    // With `{id}.{body}`, the content `7.{"a":"b.c"}` is also id `7.{"a":"b`
    // with body `c"}`: a captured delivery could be sent again as another
    // message, under a new id, with a body its sender never sent.
    let scheme = GenericScheme::new("X-Acme-Signature")
        .id_header("X-Acme-Id")
        .template("{id}.{body}");
    let seen = Seen::default();
    let verifier = Verifier::builder(Scheme::Generic(scheme.clone()))
        .secret("s")
        .build()
        .unwrap();
    let svc = VerifyLayer::new(verifier).layer(handler(&seen, StatusCode::OK));
    let signer = Signer::builder(Scheme::Generic(scheme)).secret("s").build().unwrap();
    let mut original = Request::post("/hook")
        .body(Full::new(Bytes::from_static(br#"{"a":"b.c"}"#)))
        .unwrap();
    signer
        .sign_with(original.headers_mut(), "7", NOW, br#"{"a":"b.c"}"#)
        .unwrap();
    let mut shifted = original.headers().clone();
    shifted.insert("x-acme-id", HeaderValue::from_static(r#"7.{"a":"b"#));
    let mut forged = Request::post("/hook")
        .body(Full::new(Bytes::from_static(br#"c"}"#)))
        .unwrap();
    *forged.headers_mut() = shifted;
    let (status, headers, body) = send(svc.clone(), forged).await;
    assert_problem(status, &headers, &body, 400, "malformed-header").await;
    assert_eq!(send(svc, original).await.0, StatusCode::OK);
    assert_eq!(seen.calls(), 1);
    // Nor does the signer sign such an id.
    let mut headers = HeaderMap::new();
    let signer = Signer::builder(Scheme::Generic(
        GenericScheme::new("X-Acme-Signature")
            .id_header("X-Acme-Id")
            .template("{id}.{body}"),
    ))
    .secret("s")
    .build()
    .unwrap();
    assert!(signer.sign_with(&mut headers, "7.a", NOW, b"b").is_err());
}

#[tokio::test]
async fn a_generic_id_may_hold_the_template_text_that_does_not_end_it() {
    // With `v1:{id}.{body}` only `.` marks where an id ends: the default
    // UUID v7 ids (digits, hex and `-`) and ids holding `v`, `1` or `:` are
    // signed and verified.
    let scheme = GenericScheme::new("X-Acme-Signature")
        .id_header("X-Acme-Id")
        .template("v1:{id}.{body}");
    let signer = Signer::builder(Scheme::Generic(scheme.clone()))
        .secret("s")
        .build()
        .unwrap();
    let seen = Seen::default();
    let verifier = Verifier::builder(Scheme::Generic(scheme)).secret("s").build().unwrap();
    let svc = VerifyLayer::new(verifier).layer(handler(&seen, StatusCode::OK));
    for _ in 0..20 {
        let req = signed_request(&signer, b"{}");
        assert_eq!(send(svc.clone(), req).await.2.as_ref(), b"handled");
    }
    let mut headers = HeaderMap::new();
    signer.sign_with(&mut headers, "v1:1", NOW, b"{}").unwrap();
    assert!(signer.sign_with(&mut headers, "v1.1", NOW, b"{}").is_err());
    assert_eq!(seen.calls(), 20);
}

#[test]
fn a_zero_padded_timestamp_cannot_take_the_end_of_the_body() {
    // With nothing between `{body}` and `{timestamp}`, a trailing `0` of the
    // body read as a leading zero of the timestamp signs the same bytes, with
    // the same, fresh, time: a shorter body the sender never sent.
    let scheme = GenericScheme::new("x-sig")
        .timestamp_header("x-ts")
        .template("{body}{timestamp}");
    let signer = Signer::builder(Scheme::Generic(scheme.clone()))
        .secret("k")
        .build()
        .unwrap();
    let verifier = Verifier::builder(Scheme::Generic(scheme)).secret("k").build().unwrap();
    let mut headers = HeaderMap::new();
    signer
        .sign_with(&mut headers, "", 1_700_000_000, b"amount=100")
        .unwrap();
    verifier.verify_at(&headers, b"amount=100", 1_700_000_000).unwrap();
    headers.insert("x-ts", HeaderValue::from_static("001700000000"));
    let refused = verifier.verify_at(&headers, b"amount=1", 1_700_000_000).unwrap_err();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{refused}");
}

#[test]
fn the_signer_refuses_an_id_its_verifier_would() {
    let signer = signer(Scheme::StandardWebhooks, SW_SECRET);
    // Empty, not visible ASCII, or with blanks at an end, which HTTP strips on the way.
    for id in ["", "évt", "msg_1 ", " msg_1", "msg\t"] {
        let mut headers = HeaderMap::new();
        assert!(
            signer.sign_with(&mut headers, id, 1_700_000_000, b"{}").is_err(),
            "{id:?}"
        );
        // An id already in the headers is checked too.
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(id) {
            headers.insert("webhook-id", value);
            if !id.is_empty() {
                assert!(signer.sign(&mut headers, b"{}").is_err(), "{id:?}");
            }
        }
    }
    let mut headers = HeaderMap::new();
    signer.sign_with(&mut headers, "msg_1", 1_700_000_000, b"{}").unwrap();
    verifier(Scheme::StandardWebhooks, SW_SECRET)
        .verify_at(&headers, b"{}", 1_700_000_000)
        .unwrap();
}
