// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

//! Webhook verification: the whole verify layer (header parsing, base64
//! decoding, body collection, constant-time comparison, the handler call)
//! against the raw HMAC-SHA256 of the same signed content, for 64 B, 1 KiB
//! and 1 MiB bodies, in one run.
//!
//! Run with `cargo bench -p palisade-benches --bench webhook`. Criterion
//! prints time and bytes/s per entry; the paired ratios are printed (and
//! recorded for the report); the harness then prints allocations per call of
//! the 64 B layer call.
//!
//! For instruction counts, which hold on a busy machine, the bench binary
//! (printed by `cargo bench --no-run`) also runs without criterion:
//! `--calls N --only ENTRY` calls one entry N times, after a tenth more to
//! warm up, and prints its allocations per call. ENTRY is
//! `<entry>/<size>`, as in the groups below (`raw_hmac/1KiB`,
//! `verifier/64B`, `handler_alone/1KiB`, `layer/1KiB`), and
//! `layer_with_extensions/<size>` and `handler_alone_with_extensions/<size>`
//! for requests that already carry extensions. Under
//! `valgrind --tool=callgrind` at two call counts, the difference of the
//! totals over 1.1 times the difference of the calls is the instructions of
//! one call.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group};
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
        let body = body_of(size);
        let headers = signed(&body);
        let mut group = c.benchmark_group(format!("webhook_verify/{label}"));
        group.throughput(Throughput::Bytes(size as u64));
        if size >= 1024 * 1024 {
            group.sample_size(30);
        }

        let signed_content = SignedContent::of(&headers, &body);
        group.bench_function("raw_hmac", |b| {
            b.iter(|| std::hint::black_box(signed_content.raw_hmac(&key)))
        });
        // The reference computes the very signature the sender put in the header.
        let expected = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(signed_content.raw_hmac(&key))
        );
        assert_eq!(headers["webhook-signature"], expected.as_str());

        let v = verifier();
        group.bench_function("verifier", |b| {
            b.iter(|| std::hint::black_box(v.verify(&headers, &body).unwrap()))
        });

        // The handler alone, given the same request built the same way: what any
        // route pays to build, take and answer a request. The verify path
        // costs `layer` minus this.
        let mut bare = handler();
        group.bench_function("handler_alone", |b| {
            b.iter(|| std::hint::black_box(drive(&mut bare, request(&headers, &body)).unwrap()))
        });

        let mut svc = VerifyLayer::new(verifier()).layer(handler());
        group.bench_function("layer", |b| {
            b.iter(|| {
                let res = drive(&mut svc, request(&headers, &body)).unwrap();
                assert_eq!(res.status(), 200);
                std::hint::black_box(res)
            })
        });
        group.finish();

        // Load on a shared machine drifts between criterion's entries; timing
        // the two side by side, round after round, gives a steadier ratio.
        let rounds = if size >= 1024 * 1024 { 60 } else { 400 };
        let per_round = if size >= 1024 * 1024 { 3 } else { 2_000 };
        // Requests served by hyper and axum already carry extensions (the
        // upgrade handle, the matched path); then `Verified` joins an existing
        // map instead of allocating one. Both cases are reported.
        for (case, with_extensions) in [("fresh request", false), ("request with extensions", true)] {
            let make = |headers: &HeaderMap, body: &Bytes| {
                let mut req = request(headers, body);
                if with_extensions {
                    add_extension(&mut req);
                }
                req
            };
            let verify_path = paired_ratio(
                rounds,
                per_round,
                || {
                    std::hint::black_box(signed_content.raw_hmac(&key));
                },
                || {
                    std::hint::black_box(drive(&mut svc, make(&headers, &body)).unwrap());
                },
                || {
                    std::hint::black_box(drive(&mut bare, make(&headers, &body)).unwrap());
                },
            );
            println!(
                "webhook_verify/{label} ({case}): (layer - handler alone) / raw HMAC, median of {rounds} paired rounds: {verify_path:.3}"
            );
            palisade_benches::record(&serde_json::json!({
                "kind": "paired_ratio",
                "group": format!("webhook_verify/{label}"),
                "case": case,
                "rounds": rounds,
                "ratio": verify_path,
            }));
        }
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

/// An extension a server puts on requests before they reach the layers.
#[derive(Debug, Clone, Copy)]
struct PeerAddr(#[allow(dead_code)] std::net::SocketAddr);

/// Adds what hyper and axum put in a request's extensions before the layers see it.
fn add_extension(req: &mut Request<Full<Bytes>>) {
    req.extensions_mut()
        .insert(PeerAddr(std::net::SocketAddr::from(([127, 0, 0, 1], 40_000))));
}

fn body_of(size: usize) -> Bytes {
    Bytes::from((0..size).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>())
}

/// What a Standard Webhooks signature covers, taken from the headers once.
struct SignedContent {
    id: Vec<u8>,
    timestamp: Vec<u8>,
    body: Bytes,
}

impl SignedContent {
    fn of(headers: &HeaderMap, body: &Bytes) -> Self {
        Self {
            id: headers["webhook-id"].as_bytes().to_vec(),
            timestamp: headers["webhook-timestamp"].as_bytes().to_vec(),
            body: body.clone(),
        }
    }

    /// The reference: HMAC-SHA256 of `{id}.{timestamp}.{body}` from the key,
    /// as a receiver without palisade would compute it.
    fn raw_hmac(&self, key: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(std::hint::black_box(key)).unwrap();
        for part in [&self.id[..], b".", &self.timestamp[..], b".", &self.body[..]] {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// The median over `rounds` of `(layer - handler) / raw`, each timed for
/// `per_round` calls back to back within the round.
fn paired_ratio(
    rounds: usize,
    per_round: usize,
    mut raw: impl FnMut(),
    mut layer: impl FnMut(),
    mut handler: impl FnMut(),
) -> f64 {
    #[allow(clippy::disallowed_types)] // wall time is what a bench measures
    fn time(per_round: usize, f: &mut impl FnMut()) -> f64 {
        let start = std::time::Instant::now();
        for _ in 0..per_round {
            f();
        }
        start.elapsed().as_secs_f64()
    }
    let mut ratios: Vec<f64> = (0..rounds)
        .map(|_| {
            let raw = time(per_round, &mut raw);
            let layer = time(per_round, &mut layer);
            let handler = time(per_round, &mut handler);
            (layer - handler) / raw
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    ratios[rounds / 2]
}

/// The decoded key behind `SECRET` (base64 after `whsec_`).
fn palisade_webhook_key() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap()
}

/// Calls each entry named in `only` (`<entry>/<size>`) `calls` times, after
/// a tenth more to warm up, outside criterion, and prints its allocations
/// per call: the figures to read under callgrind.
fn count_calls(calls: usize, only: &[String]) {
    let key = palisade_webhook_key();
    for (size, label) in SIZES {
        if !only.iter().any(|entry| entry.ends_with(&format!("/{label}"))) {
            continue;
        }
        let body = body_of(size);
        let headers = signed(&body);
        let signed_content = SignedContent::of(&headers, &body);
        let (headers, body) = (&headers, &body);
        let verifier = verifier();
        let (mut bare, mut bare_for_extended) = (handler(), handler());
        let mut svc = VerifyLayer::new(verifier.clone()).layer(handler());
        let mut svc_for_extended = svc.clone();
        let extended = || {
            let mut req = request(headers, body);
            add_extension(&mut req);
            req
        };
        let verified = |res: Response<Full<Bytes>>| assert_eq!(res.status(), 200);
        let mut entries: [(&str, &mut dyn FnMut()); 6] = [
            ("raw_hmac", &mut || {
                std::hint::black_box(signed_content.raw_hmac(&key));
            }),
            ("verifier", &mut || {
                std::hint::black_box(verifier.verify(headers, body).unwrap());
            }),
            ("handler_alone", &mut || {
                std::hint::black_box(drive(&mut bare, request(headers, body)).unwrap());
            }),
            ("handler_alone_with_extensions", &mut || {
                std::hint::black_box(drive(&mut bare_for_extended, extended()).unwrap());
            }),
            ("layer", &mut || {
                verified(drive(&mut svc, request(headers, body)).unwrap())
            }),
            ("layer_with_extensions", &mut || {
                verified(drive(&mut svc_for_extended, extended()).unwrap())
            }),
        ];
        for (name, call) in &mut entries {
            let entry = format!("{name}/{label}");
            if !only.contains(&entry) {
                continue;
            }
            for _ in 0..calls / 10 + calls {
                call();
            }
            let mut counted = tower::service_fn(|()| {
                call();
                ready(Ok::<_, Infallible>(()))
            });
            let allocations = palisade_benches::allocations_per_call(&mut counted, || ());
            println!("{entry}: {calls} calls, {allocations:.2} allocations per call");
        }
    }
}

criterion_group!(benches, webhook);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value_of = |flag: &'static str| {
        args.windows(2)
            .filter(move |pair| pair[0] == flag)
            .map(|pair| pair[1].clone())
    };
    if let Some(calls) = value_of("--calls").next() {
        let calls = calls.parse().expect("--calls takes a number");
        count_calls(calls, &value_of("--only").collect::<Vec<_>>());
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
