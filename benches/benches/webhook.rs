// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

//! Webhook verification: the whole verify layer (header parsing, base64
//! decoding, body collection, constant-time comparison, the handler call)
//! against the raw HMAC-SHA256 of the same signed content, for 64 B, 1 KiB
//! and 1 MiB bodies, in one run.
//!
//! Run with `cargo bench -p palisade-benches --bench webhook`. Criterion
//! prints time and bytes/s per entry; the harness then prints allocations
//! per call of the 64 B layer call.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use palisade_benches::{Harness, drive};
use palisade_webhook::{Scheme, Signer, Verifier, VerifyLayer};
use sha2::Sha256;
use tower::{Layer, service_fn};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SIZES: [(usize, &str); 3] = [(64, "64B"), (1024, "1KiB"), (1024 * 1024, "1MiB")];

type Handler = tower::util::ServiceFn<fn(Request<Full<Bytes>>) -> Ready<Result<Response<Full<Bytes>>, Infallible>>>;

fn handler() -> Handler {
    fn ok(_: Request<Full<Bytes>>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
        ready(Ok(Response::new(Full::default())))
    }
    service_fn(ok as fn(_) -> _)
}

fn verifier() -> Verifier {
    // A day of tolerance so a long run never goes stale; the clock is the system's.
    Verifier::builder(Scheme::StandardWebhooks)
        .secret(SECRET)
        .tolerance(Duration::from_secs(86_400))
        .build()
        .unwrap()
}

fn signed(body: &Bytes) -> HeaderMap {
    let mut headers = HeaderMap::new();
    Signer::builder(Scheme::StandardWebhooks)
        .secret(SECRET)
        .build()
        .unwrap()
        .sign(&mut headers, body)
        .unwrap();
    headers
}

fn request(headers: &HeaderMap, body: &Bytes) -> Request<Full<Bytes>> {
    let mut req = Request::post("/hooks").body(Full::new(body.clone())).unwrap();
    *req.headers_mut() = headers.clone();
    req
}

fn webhook(c: &mut Criterion) {
    let key = palisade_webhook_key();
    for (size, label) in SIZES {
        let body = Bytes::from((0..size).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>());
        let headers = signed(&body);
        let mut group = c.benchmark_group(format!("webhook_verify/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        if size >= 1024 * 1024 {
            group.sample_size(30);
        }

        // The reference: HMAC-SHA256 of `{id}.{timestamp}.{body}` from the key, as a receiver
        // without palisade would compute it.
        let id = headers["webhook-id"].as_bytes().to_vec();
        let ts = headers["webhook-timestamp"].as_bytes().to_vec();
        group.bench_function("raw_hmac", |b| {
            b.iter(|| {
                let mut mac = Hmac::<Sha256>::new_from_slice(std::hint::black_box(&key)).unwrap();
                for part in [&id[..], b".", &ts[..], b".", &body[..]] {
                    mac.update(part);
                }
                std::hint::black_box(mac.finalize().into_bytes())
            })
        });
        // The reference computes the very signature the sender put in the header.
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        for part in [&id[..], b".", &ts[..], b".", &body[..]] {
            mac.update(part);
        }
        let expected = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(headers["webhook-signature"], expected.as_str());

        let v = verifier();
        group.bench_function("verifier", |b| {
            b.iter(|| std::hint::black_box(v.verify(&headers, &body).unwrap()))
        });

        // The handler alone with the same request: what any route pays to take
        // a request and answer it. The verify path costs `layer` minus this.
        let mut bare = handler();
        group.bench_function("handler_alone", |b| {
            b.iter_batched(
                || request(&headers, &body),
                |req| drive(&mut bare, req).unwrap(),
                BatchSize::SmallInput,
            )
        });

        let mut svc = VerifyLayer::new(verifier()).layer(handler());
        group.bench_function("layer", |b| {
            b.iter_batched(
                || request(&headers, &body),
                |req| {
                    let res = drive(&mut svc, req).unwrap();
                    assert_eq!(res.status(), 200);
                    res
                },
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }

    let body = Bytes::from_static(&[b'x'; 64]);
    let headers = signed(&body);
    let mut harness = Harness::new(c, "webhook_overhead");
    harness.overhead(
        "verify_layer_64B",
        VerifyLayer::new(verifier()).layer(handler()),
        || request(&headers, &body),
    );
    harness.finish();
}

/// The decoded key behind `SECRET` (base64 after `whsec_`).
fn palisade_webhook_key() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap()
}

criterion_group!(benches, webhook);
criterion_main!(benches);
