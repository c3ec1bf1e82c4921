//! A palisade client stack over reqwest, built in one call, and a driver
//! that runs it against flaky local servers and reports, second by second,
//! what each layer did.
//!
//! # The stack, outermost first
//!
//! [`palisade::stack::client`] assembles it in the canonical order; the
//! example replaces three of its parts and keeps the rest:
//!
//! 1. **Idempotency key** (the default part): every POST without an
//!    `Idempotency-Key` gets one, once per logical request, so every retry
//!    carries the same key and the server can de-duplicate. It is also what
//!    makes the retry layer retry a POST at all.
//! 2. **Retry with a budget** ([`HttpRetryLayer`], replaced to shorten the
//!    waits): 503, 429, 408, timeouts and connect errors are retried, up to
//!    [`StackConfig::max_attempts`] attempts with exponential backoff and
//!    full jitter, within the default budget (20 % of requests plus 10
//!    retries a second), so an outage does not triple the load. Outside the
//!    breaker: an open breaker's fast `CircuitOpen` is never retried.
//!    Outside the bulkhead: a request waiting between attempts holds no
//!    permit.
//! 3. **Circuit breaker per host** ([`KeyedCircuitBreakerLayer`], keyed by
//!    the URI's authority, in place of the default single breaker): one
//!    failing host opens its own breaker only; the other hosts keep being
//!    called. Opens after [`StackConfig::breaker_failures`] failed attempts
//!    in a row, probes after [`StackConfig::breaker_open`].
//! 4. **Bulkhead** ([`BulkheadLayer`]): at most [`StackConfig::max_concurrent`]
//!    attempts in flight, no queue: when slow answers pile up, new attempts
//!    are rejected at once (`BulkheadFull`) instead of queueing behind them.
//!    Inside the breaker, which does not count these local rejections.
//! 5. **Timeout per attempt** ([`StackConfig::attempt_timeout`]): a slow
//!    attempt becomes a timeout, which the breaker counts and the retry
//!    layer retries.
//! 6. `reqwest::Client` through palisade's
//!    [`ReqwestService`], whose timeouts
//!    and connect errors the retry and the breaker recognise; or, with
//!    `--hyper`, hyper-util's legacy `Client` ([`client_stack_over`] takes
//!    any transport).
//!
//! The transport counts the attempts that reach it; a local rejection
//! (`CircuitOpen`, `BulkheadFull`) is never retried, so it ends its request
//! and the driver counts that attempt from the request's outcome. The
//! stack's [`StackHandle`] reports the breakers, the bulkhead and the
//! budget as JSON (`main` prints it at the end).
//!
//! # Running it
//!
//! `cargo run -p client-stack -- --seconds 10` starts two local servers,
//! `steady` (5 % of answers 503) and `flaky` (20 % 503 and 5 % slow, then an
//! outage of 100 % 503 during seconds 3 to 5, then 5 %, and every answer
//! taking 200 ms during seconds 8 and 9), sends
//! [`DriveConfig::rate`] POSTs a second alternately to each, and prints a
//! line per second: requests sent, answered 2xx, retries, failures by kind
//! (the breaker's and the bulkhead's rejections, timeouts, 5xx after the
//! retries) and both breakers' states. During the outage the `flaky` breaker
//! opens while `steady` stays closed; during the slowdown the answers,
//! though within the timeout, hold the bulkhead's permits longer and the
//! bulkhead turns the excess away.
//!
//! # Example
//!
//! ```no_run
//! use client_stack::{DriveConfig, StackConfig, client_stack, drive, flaky::FlakyServer};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let server = FlakyServer::start(tokio::net::TcpListener::bind("127.0.0.1:0").await?, 7)?;
//! server.control().set_failure_rate(0.3);
//! let targets = vec![("flaky".to_owned(), format!("http://{}/charges", server.addr()).parse()?)];
//! let stack = client_stack(&StackConfig::default())?;
//! let report = drive(stack, &DriveConfig { seconds: 3, rate: 50 }, targets, |_, line| {
//!     println!("{line}")
//! })
//! .await?;
//! assert_eq!(report.sent, report.ok + report.failed());
//! # Ok(())
//! # }
//! ```

pub mod flaky;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::{CircuitBreakerBuilder, KeyedCircuitBreakerHandle, KeyedCircuitBreakerLayer};
use palisade::core::error::{find, is_timeout};
use palisade::prelude::*;
use palisade::reqwest::ReqwestService;
use palisade::retry::{Backoff, HttpRetryLayer, Jitter, ReplayBody};
use palisade::stack::StackHandle;
use tokio::task::JoinSet;
use tower::util::BoxCloneService;
use tower::{Layer as _, ServiceExt as _};

/// The request body the stack takes.
pub type Body = Full<Bytes>;

/// The client stack: `Request<Body>` in, the answer with its whole body out.
pub type ClientStack = BoxCloneService<Request<Body>, Response<Bytes>, BoxError>;

/// The stack's settings.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Attempts per request, the first included (default 3).
    pub max_attempts: u32,
    /// First backoff wait, doubling up to 200 ms (default 20 ms).
    pub retry_backoff: Duration,
    /// Failed attempts in a row that open a host's breaker (default 5).
    pub breaker_failures: u32,
    /// How long a host's breaker stays open before probing (default 2 s:
    /// short, so a ten-second run shows it close again).
    pub breaker_open: Duration,
    /// Attempts in flight at once, all hosts together (default 8: far above
    /// what healthy hosts need at the demo's rate, below what a slowdown of
    /// one host takes).
    pub max_concurrent: usize,
    /// Time allowed to one attempt (default 250 ms).
    pub attempt_timeout: Duration,
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            retry_backoff: Duration::from_millis(20),
            breaker_failures: 5,
            breaker_open: Duration::from_secs(2),
            max_concurrent: 8,
            attempt_timeout: Duration::from_millis(250),
        }
    }
}

/// Counts what passes through a stack.
#[derive(Debug, Default)]
pub struct Counters {
    sent_to_transport: AtomicU64,
}

impl Counters {
    /// Attempts that reached the transport (a connection was tried).
    pub fn sent_to_transport(&self) -> u64 {
        self.sent_to_transport.load(Ordering::Relaxed)
    }
}

/// A built stack, with what the driver reads from it.
#[derive(Debug, Clone)]
pub struct BuiltStack {
    /// The stack.
    pub service: ClientStack,
    /// Its per-host breakers.
    pub breakers: KeyedCircuitBreakerHandle<String>,
    /// Every part's state, for a health report.
    pub health: StackHandle,
    /// Its attempt counter.
    pub counters: Arc<Counters>,
}

/// Builds the stack over a fresh `reqwest::Client` (plain HTTP: no TLS
/// backend is compiled in).
pub fn client_stack(config: &StackConfig) -> Result<BuiltStack, BoxError> {
    client_stack_over(config, ReqwestService::new(reqwest::Client::new()))
}

/// Builds the stack over hyper-util's pooled client, reading each answer's
/// whole body.
pub fn client_stack_over_hyper(config: &StackConfig) -> Result<BuiltStack, BoxError> {
    client_stack_over(config, hyper_client())
}

/// Builds the stack over any transport taking the retry layer's replayable
/// requests and answering an HTTP body.
pub fn client_stack_over<T, B>(config: &StackConfig, transport: T) -> Result<BuiltStack, BoxError>
where
    T: tower::Service<Request<ReplayBody<Body>>, Response = Response<B>, Error = BoxError> + Clone + Send + 'static,
    T::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let breakers: KeyedCircuitBreakerLayer<String, _, HttpClassifier> = CircuitBreakerBuilder::consecutive("client")
        .classifier(HttpClassifier)
        .consecutive_failures(config.breaker_failures)
        .open_duration(config.breaker_open)
        .build_keyed(host_of)?;
    let breaker_handle = breakers.handle();
    let stack = palisade::stack::client("client")
        .retry(
            HttpRetryLayer::builder("client")
                .max_attempts(config.max_attempts)
                .backoff(Backoff::exponential(
                    config.retry_backoff,
                    2.0,
                    Duration::from_millis(200),
                ))
                .jitter(Jitter::Full),
        )
        .circuit_breaker(breakers)
        .bulkhead(BulkheadLayer::builder("client").max_concurrent(config.max_concurrent))
        .attempt_timeout(config.attempt_timeout)
        .build()?;
    let health = stack.handle();
    let counters = Arc::new(Counters::default());
    let counted = counters.clone();
    let transport = transport.map_request(move |req: Request<ReplayBody<Body>>| {
        counted.sent_to_transport.fetch_add(1, Ordering::Relaxed);
        req
    });
    let service = stack.layer(transport).and_then(|res: Response<B>| async move {
        let (parts, body) = res.into_parts();
        let body = body.collect().await.map_err(Into::into)?.to_bytes();
        Ok::<_, BoxError>(Response::from_parts(parts, body))
    });
    Ok(BuiltStack {
        service: BoxCloneService::new(service),
        breakers: breaker_handle,
        health,
        counters,
    })
}

fn host_of(req: &Request<ReplayBody<Body>>) -> String {
    req.uri().authority().map_or_else(String::new, ToString::to_string)
}

/// hyper-util's pooled client.
fn hyper_client() -> impl tower::Service<
    Request<ReplayBody<Body>>,
    Response = Response<hyper::body::Incoming>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<hyper::body::Incoming>, BoxError>> + Send,
> + Clone
+ Send
+ 'static {
    let client: Client<HttpConnector, ReplayBody<Body>> = Client::builder(TokioExecutor::new()).build_http();
    tower::service_fn(move |req: Request<ReplayBody<Body>>| {
        let sent = client.request(req);
        async move { Ok(sent.await?) }
    })
}

/// How the driver loads the stack.
#[derive(Debug, Clone)]
pub struct DriveConfig {
    /// Seconds to send for (the requests still in flight then are awaited).
    pub seconds: u64,
    /// Requests sent per second, spread evenly, alternating between targets.
    pub rate: u32,
}

/// How the requests of a run (or of one second of it) ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Logical requests sent (retries not included).
    pub sent: u64,
    /// Attempts made, first attempts included.
    pub attempts: u64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests answered with another status after the retries (a 503 when
    /// the retries or the budget ran out).
    pub bad_status: u64,
    /// Requests the open breaker of their host rejected.
    pub circuit_open: u64,
    /// Requests the full bulkhead rejected.
    pub bulkhead_full: u64,
    /// Requests whose last attempt timed out.
    pub timed_out: u64,
    /// Requests that failed otherwise (connect errors and the like).
    pub other_error: u64,
}

impl Report {
    /// Retries made: attempts beyond the first of each request.
    pub fn retries(&self) -> u64 {
        self.attempts.saturating_sub(self.sent)
    }

    /// Requests that did not end 2xx.
    pub fn failed(&self) -> u64 {
        self.bad_status + self.circuit_open + self.bulkhead_full + self.timed_out + self.other_error
    }

    fn minus(&self, earlier: &Report) -> Report {
        Report {
            sent: self.sent - earlier.sent,
            attempts: self.attempts - earlier.attempts,
            ok: self.ok - earlier.ok,
            bad_status: self.bad_status - earlier.bad_status,
            circuit_open: self.circuit_open - earlier.circuit_open,
            bulkhead_full: self.bulkhead_full - earlier.bulkhead_full,
            timed_out: self.timed_out - earlier.timed_out,
            other_error: self.other_error - earlier.other_error,
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sent {:>4}  ok {:>4}  retries {:>3}  5xx {:>3}  open-rejected {:>3}  bulkhead-rejected {:>3}  timeouts {:>3}  other {:>3}",
            self.sent,
            self.ok,
            self.retries(),
            self.bad_status,
            self.circuit_open,
            self.bulkhead_full,
            self.timed_out,
            self.other_error
        )
    }
}

#[derive(Debug, Default)]
struct Outcomes {
    sent: AtomicU64,
    ok: AtomicU64,
    bad_status: AtomicU64,
    circuit_open: AtomicU64,
    bulkhead_full: AtomicU64,
    timed_out: AtomicU64,
    other_error: AtomicU64,
}

impl Outcomes {
    fn record(&self, result: &Result<Response<Bytes>, BoxError>) {
        let counter = match result {
            Ok(res) if res.status().is_success() => &self.ok,
            Ok(_) => &self.bad_status,
            Err(e) if find::<CircuitOpen>(&**e).is_some() => &self.circuit_open,
            Err(e) if find::<BulkheadFull>(&**e).is_some() => &self.bulkhead_full,
            Err(e) if is_timeout(&**e) => &self.timed_out,
            Err(_) => &self.other_error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self, counters: &Counters) -> Report {
        let circuit_open = self.circuit_open.load(Ordering::Relaxed);
        let bulkhead_full = self.bulkhead_full.load(Ordering::Relaxed);
        Report {
            sent: self.sent.load(Ordering::Relaxed),
            // A local rejection ends its request: its attempt never reached
            // the transport.
            attempts: counters.sent_to_transport() + circuit_open + bulkhead_full,
            ok: self.ok.load(Ordering::Relaxed),
            bad_status: self.bad_status.load(Ordering::Relaxed),
            circuit_open,
            bulkhead_full,
            timed_out: self.timed_out.load(Ordering::Relaxed),
            other_error: self.other_error.load(Ordering::Relaxed),
        }
    }
}

/// Sends `rate` POSTs a second through `stack` for `seconds`, alternating between the `targets` (name, URL). After each
/// second, calls `each_second(second, line)` with that second's counts and
/// the breakers' states (`each_second` may also change the servers, to stage
/// an outage). Waits for the requests in flight, and returns the totals.
pub async fn drive(
    stack: BuiltStack,
    config: &DriveConfig,
    targets: Vec<(String, Uri)>,
    mut each_second: impl FnMut(u64, String),
) -> Result<Report, BoxError> {
    if targets.is_empty() || config.rate == 0 {
        return Err("drive needs a target and a rate above zero".into());
    }
    let BuiltStack {
        service: client,
        breakers,
        counters,
        ..
    } = stack;
    let outcomes = Arc::new(Outcomes::default());
    let mut in_flight = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / config.rate);
    let mut previous = Report::default();
    let mut next_target = targets.iter().cycle();
    for second in 1..=config.seconds {
        for _ in 0..config.rate {
            tick.tick().await;
            let (_, uri) = next_target.next().ok_or("no target")?;
            let req = Request::builder()
                .method(Method::POST)
                .uri(uri.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(br#"{"amount":100}"#)))?;
            outcomes.sent.fetch_add(1, Ordering::Relaxed);
            let outcomes = outcomes.clone();
            let client = client.clone();
            in_flight.spawn(async move {
                let result = client.oneshot(req).await;
                outcomes.record(&result);
            });
            // Reap finished requests so the set does not grow for the whole run.
            while in_flight.try_join_next().is_some() {}
        }
        let now = outcomes.report(&counters);
        let states = targets
            .iter()
            .map(|(name, uri)| {
                let key = uri.authority().map_or_else(String::new, ToString::to_string);
                let state = breakers.get(&key).map_or("unused", |b| b.state().as_str());
                format!("{name}={state}")
            })
            .collect::<Vec<_>>()
            .join(" ");
        each_second(
            second,
            format!("{second:>3}s  {}  breakers: {states}", now.minus(&previous)),
        );
        previous = now;
    }
    while in_flight.join_next().await.is_some() {}
    Ok(outcomes.report(&counters))
}
