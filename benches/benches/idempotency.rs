// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

//! The Idempotency-Key layer's cost: a replay and a first request through the
//! memory store against the bare HTTP service in the same run, first requests
//! into a full memory store and replays from one, holding 1,000 and 1,000,000
//! responses, the
//! default disconnect policy's task against running the call in the caller,
//! and requests/s through a live Redis store beside a plain `GET` round trip
//! on the same connection.
//!
//! Run with `cargo bench -p palisade-benches --bench idempotency` (add
//! `-- --quick` for a fast pass). Redis comes from `REDIS_URL` (default
//! `redis://127.0.0.1:6379`); when it is unreachable the Redis entries are
//! skipped with a printed reason.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use http_body_util::Full;
use palisade_benches::{Harness, http_created};
use palisade_idempotency::disconnect::KeepLocked;
use palisade_idempotency::redis::RedisStore;
use palisade_idempotency::{IdempotencyLayer, MemoryStore};
use tower::{Layer, ServiceExt};

const BODY: &[u8] = b"{\"sku\":\"A-1\",\"quantity\":2,\"customer\":\"cus_42\"}";

fn order(key: http::HeaderValue) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::from_static(BODY)));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static("/orders");
    req.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    req.headers_mut().insert("idempotency-key", key);
    req
}

fn memory(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut harness = Harness::new(c, "idempotency");
    harness.overhead("http_bare", http_created(), || {
        order(http::HeaderValue::from_static("k"))
    });

    // Every call replays the response stored by the first. The entries
    // measured on the bench thread run the protected call in the response
    // future (`KeepLocked`); the default's task is measured below.
    let layer = IdempotencyLayer::builder("idempotency")
        .on_disconnect(KeepLocked)
        .build()
        .expect("layer");
    harness.overhead("memory_replay", layer.layer(http_created()), || {
        order(http::HeaderValue::from_static(
            "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"",
        ))
    });

    // Every call is a first request: a retention of 1 µs makes each key free
    // again at once, so the store stays small and every call acquires,
    // runs the service, and stores its response.
    let layer = IdempotencyLayer::builder("idempotency")
        .store(MemoryStore::new())
        .on_disconnect(KeepLocked)
        .lock_expiry(Duration::from_nanos(1))
        .retention(Duration::from_micros(1))
        .build()
        .expect("layer");
    let keys: Vec<http::HeaderValue> = (0..64).map(|i| http::HeaderValue::from(i as u64)).collect();
    let mut i = 0;
    harness.overhead("memory_first", layer.layer(http_created()), move || {
        i = (i + 1) % keys.len();
        order(keys[i].clone())
    });

    // First requests into a memory store already holding `stored` unexpired
    // responses and at its cap: each call's own record has expired by the
    // next call, so making room for it is the store's expiry work alone.
    for stored in [1_000_u32, 1_000_000] {
        let layer = IdempotencyLayer::builder("idempotency")
            .store(filled(stored))
            .on_disconnect(KeepLocked)
            .lock_expiry(Duration::from_nanos(1))
            .retention(Duration::from_micros(1))
            .build()
            .expect("layer");
        let keys: Vec<http::HeaderValue> = (0..64).map(|i| http::HeaderValue::from(i as u64)).collect();
        let mut i = 0;
        harness.overhead(
            &format!("memory_first_at_cap/{stored}_stored"),
            layer.layer(http_created()),
            move || {
                i = (i + 1) % keys.len();
                order(keys[i].clone())
            },
        );
    }

    // Replays from a memory store already holding `stored` responses.
    for stored in [1_000_u32, 1_000_000] {
        let layer = IdempotencyLayer::builder("idempotency")
            .store(filled(stored))
            .on_disconnect(KeepLocked)
            .build()
            .expect("layer");
        harness.overhead(
            &format!("memory_replay_at/{stored}_stored"),
            layer.layer(http_created()),
            || {
                order(http::HeaderValue::from_static(
                    "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"",
                ))
            },
        );
    }

    // A method the layer does not protect: the pass-through cost.
    let layer = IdempotencyLayer::new();
    harness.overhead("passthrough_get", layer.layer(http_created()), || {
        let mut req = order(http::HeaderValue::from_static("k"));
        *req.method_mut() = http::Method::GET;
        req
    });
    harness.finish();

    // The default policy (`Complete`): a first request's protected call runs
    // on a task of its own, against the same request run in the response
    // future, both awaited on a current-thread runtime.
    let mut group = c.benchmark_group("idempotency_first_on_runtime");
    group.throughput(Throughput::Elements(1));
    let in_caller = IdempotencyLayer::builder("idempotency")
        .on_disconnect(KeepLocked)
        .lock_expiry(Duration::from_nanos(1))
        .retention(Duration::from_micros(1))
        .build()
        .expect("layer")
        .layer(http_created());
    let on_task = IdempotencyLayer::builder("idempotency")
        .lock_expiry(Duration::from_nanos(1))
        .retention(Duration::from_micros(1))
        .build()
        .expect("layer")
        .layer(http_created());
    let keys: Vec<http::HeaderValue> = (0..64).map(|i| http::HeaderValue::from(i as u64)).collect();
    group.bench_function("keep_locked", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            rt.block_on(in_caller.clone().oneshot(order(keys[i].clone())))
        })
    });
    group.bench_function("complete_default", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            rt.block_on(on_task.clone().oneshot(order(keys[i].clone())))
        })
    });
    group.finish();
}

/// A memory store with room for one key more than `n`, holding `n` responses
/// kept for a day, as `n` earlier customers' requests would.
fn filled(n: u32) -> MemoryStore {
    let store = MemoryStore::builder().max_keys(n as usize + 1).build().expect("store");
    use palisade_idempotency::{Begin, Fingerprint, IdempotencyStore, StoreKey, StoredResponse};
    let response = StoredResponse {
        status: http::StatusCode::CREATED,
        headers: http::HeaderMap::new(),
        body: Bytes::from_static(b"{}"),
    };
    for i in 0..n {
        let mut bytes = [0xff; 32];
        bytes[..4].copy_from_slice(&i.to_be_bytes());
        let (key, fingerprint) = (StoreKey::from_bytes(bytes), Fingerprint::from_bytes(bytes));
        let begun = store.begin(&key, &fingerprint, Duration::from_secs(60)).into_inner();
        let Ok(Begin::Acquired(lease)) = begun else {
            panic!("filling the store: {begun:?}")
        };
        let stored = store.complete(&key, &fingerprint, &lease, &response, Duration::from_secs(86_400));
        assert!(stored.into_inner().is_ok(), "filling the store");
    }
    store
}

fn redis(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let conn = rt.block_on(async {
        let client = redis::Client::open(url.as_str())?;
        tokio::time::timeout(Duration::from_secs(3), client.get_multiplexed_async_connection())
            .await
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::IoError, "connect timed out")))?
    });
    let conn = match conn {
        Ok(conn) => conn,
        Err(e) => {
            println!("skipping the Redis benchmarks: Redis at {url} is unreachable: {e}");
            palisade_benches::record(&serde_json::json!({
                "kind": "skipped",
                "group": "idempotency_redis",
                "reason": format!("Redis at {url} is unreachable: {e}"),
            }));
            return;
        }
    };
    let prefix = format!("palisade:bench:{}:", std::process::id());
    let store = RedisStore::with_prefix(conn.clone(), prefix.clone()).expect("prefix");
    let layer = IdempotencyLayer::builder("idempotency")
        .store(store)
        .build()
        .expect("layer");
    let svc = layer.layer(http_created());

    let version = rt.block_on(async {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn.clone())
            .await
            .unwrap_or_default();
        info.lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .unwrap_or("unknown")
            .trim()
            .to_owned()
    });
    palisade_benches::record(&serde_json::json!({"kind": "service", "name": "Redis", "version": version}));

    let mut group = c.benchmark_group("idempotency_redis");
    group.throughput(Throughput::Elements(1));
    // The reference: one plain `GET` round trip on the same connection, what any
    // request that asks Redis once pays.
    group.bench_function("redis_get/sequential", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut conn = conn.clone();
                let key = format!("{prefix}reference");
                #[allow(clippy::disallowed_types)] // wall time is what a bench measures
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    let value: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
                    std::hint::black_box(value);
                }
                start.elapsed()
            })
        })
    });
    // One request at a time: the latency of one round trip (replay) or two (first).
    group.bench_function("replay/sequential", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let key = http::HeaderValue::from_static("replayed-key");
                let _ = svc.clone().oneshot(order(key.clone())).await;
                #[allow(clippy::disallowed_types)] // wall time is what a bench measures
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    let _ = std::hint::black_box(svc.clone().oneshot(order(key.clone())).await);
                }
                start.elapsed()
            })
        })
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    group.bench_function("first/sequential", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                #[allow(clippy::disallowed_types)] // wall time is what a bench measures
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    let key = http::HeaderValue::from(NEXT.fetch_add(1, Ordering::Relaxed));
                    let _ = std::hint::black_box(svc.clone().oneshot(order(key)).await);
                }
                start.elapsed()
            })
        })
    });
    // 32 requests in flight on the bench thread: throughput.
    group.bench_function("replay/32_in_flight", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let key = http::HeaderValue::from_static("replayed-key");
                #[allow(clippy::disallowed_types)] // wall time is what a bench measures
                let start = std::time::Instant::now();
                let tasks: Vec<_> = (0..32)
                    .map(|t| {
                        let svc = svc.clone();
                        let key = key.clone();
                        let n = iters / 32 + u64::from(t < iters % 32);
                        tokio::spawn(async move {
                            for _ in 0..n {
                                let _ = std::hint::black_box(svc.clone().oneshot(order(key.clone())).await);
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    let _ = task.await;
                }
                start.elapsed()
            })
        })
    });
    group.finish();

    rt.block_on(async {
        let mut conn = conn;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<usize, _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
        }
    });
}

criterion_group!(benches, memory, redis);
criterion_main!(benches);
