//! A flaky local HTTP server to drive the client stack against: it answers
//! `503` to a share of the requests, answers another share slowly, and `200`
//! otherwise. The shares can be changed while it runs, to stage an outage.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How long a slow answer takes: longer than the client's per-attempt
/// timeout, so it shows up as a timeout there.
pub const SLOW_ANSWER: Duration = Duration::from_millis(400);

/// Changes a [`FlakyServer`]'s behaviour while it runs and counts its requests.
#[derive(Debug, Clone)]
pub struct FlakyControl {
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    failures_per_mille: AtomicU32,
    slow_per_mille: AtomicU32,
    latency_ms: AtomicU64,
    requests: AtomicU64,
    keyed_requests: AtomicU64,
    rng: Mutex<fastrand::Rng>,
}

impl FlakyControl {
    fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(State {
                failures_per_mille: AtomicU32::new(0),
                slow_per_mille: AtomicU32::new(0),
                latency_ms: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                keyed_requests: AtomicU64::new(0),
                rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            }),
        }
    }

    /// The share of requests answered `503` (0.0 to 1.0).
    pub fn set_failure_rate(&self, rate: f64) {
        self.state.failures_per_mille.store(per_mille(rate), Ordering::Relaxed);
    }

    /// The share of requests answered after [`SLOW_ANSWER`] (0.0 to 1.0).
    pub fn set_slow_rate(&self, rate: f64) {
        self.state.slow_per_mille.store(per_mille(rate), Ordering::Relaxed);
    }

    /// How long a `200` that is not slow takes (default none).
    pub fn set_latency(&self, latency: Duration) {
        let millis = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.state.latency_ms.store(millis, Ordering::Relaxed);
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Requests received so far that carried an `Idempotency-Key`.
    pub fn keyed_requests(&self) -> u64 {
        self.state.keyed_requests.load(Ordering::Relaxed)
    }

    fn decide(&self, req: &Request<Incoming>) -> Answer {
        self.state.requests.fetch_add(1, Ordering::Relaxed);
        if req.headers().contains_key("idempotency-key") {
            self.state.keyed_requests.fetch_add(1, Ordering::Relaxed);
        }
        let roll = self
            .state
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .u32(0..1000);
        let failures = self.state.failures_per_mille.load(Ordering::Relaxed);
        let slow = self.state.slow_per_mille.load(Ordering::Relaxed);
        if roll < failures {
            Answer::Unavailable
        } else if roll < failures.saturating_add(slow) {
            Answer::After(SLOW_ANSWER)
        } else {
            Answer::After(Duration::from_millis(self.state.latency_ms.load(Ordering::Relaxed)))
        }
    }
}

fn per_mille(rate: f64) -> u32 {
    // Saturating float-to-int cast: NaN becomes 0, out-of-range values clamp.
    (rate.clamp(0.0, 1.0) * 1000.0).round() as u32
}

enum Answer {
    After(Duration),
    Unavailable,
}

/// A running flaky server; stops accepting when dropped.
#[derive(Debug)]
pub struct FlakyServer {
    addr: SocketAddr,
    control: FlakyControl,
    accept: JoinHandle<()>,
}

impl FlakyServer {
    /// Serves on `listener`, healthy until told otherwise; `seed` makes its
    /// choices repeatable.
    pub fn start(listener: TcpListener, seed: u64) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let control = FlakyControl::new(seed);
        let served = control.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let control = served.clone();
                let service = tower::service_fn(move |req: Request<Incoming>| answer(control.clone(), req));
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)),
                );
            }
        });
        Ok(Self { addr, control, accept })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its control.
    pub fn control(&self) -> &FlakyControl {
        &self.control
    }
}

impl Drop for FlakyServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn answer(control: FlakyControl, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = match control.decide(&req) {
        Answer::After(latency) => {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            StatusCode::OK
        }
        Answer::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut res = Response::new(Full::new(Bytes::from_static(b"{}")));
    *res.status_mut() = status;
    Ok(res)
}
