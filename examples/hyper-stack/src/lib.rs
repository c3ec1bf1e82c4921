//! A plain hyper 1.x server with palisade: a webhook receiver behind
//! signature verification and a proxy route whose upstream calls are guarded
//! by retry, a circuit breaker, a bulkhead and a per-attempt timeout.
//!
//! No framework: hyper-util's `auto` connection builder (HTTP/1.1 and HTTP/2)
//! serves a tower service through `TowerToHyperService`, and
//! `GracefulShutdown` lets connections in flight finish when the shutdown
//! future completes (Ctrl-C in the binary).
//!
//! # Routes
//!
//! - `POST /webhooks` — a [Standard Webhooks](https://www.standardwebhooks.com/)
//!   receiver. palisade-webhook's [`VerifyLayer`]
//!   checks the signature, the timestamp (5 minutes either way) and the
//!   message id (a redelivery is answered 200 and not handled twice) before
//!   the handler runs; the handler answers `200` with
//!   `{"id": <webhook-id>, "bytes": <body length>}`. A forged, altered or stale
//!   message is answered `401`/`400` `application/problem+json` and never
//!   reaches the handler.
//! - `/proxy/{path}` (any method) — forwards to `{upstream}/{path}` and
//!   answers the upstream's status and body. An upstream that still answers
//!   5xx after the retries is answered `502` problem+json; while the breaker
//!   is open, or the bulkhead is full, the route answers `503` problem+json
//!   with `Retry-After` at once, without calling the upstream.
//! - anything else: `404` problem+json.
//!
//! # The proxy stack, outermost first
//!
//! Steps 3 to 6 are palisade's one-call client stack
//! (`palisade::stack::client`) without its idempotency key, each part set
//! from the [`Config`].
//!
//! 1. [`ProblemResponseLayer`]:
//!    the errors of the layers below become RFC 9457 responses
//!    (`CircuitOpen`, `BulkheadFull` → 503 + `Retry-After`; a timeout → 504),
//!    so hyper always gets a response.
//! 2. 5xx → 502: the upstream's failure, after the retries, is reported as a
//!    bad gateway rather than passed off as this server's own error.
//! 3. **retry** ([`HttpRetryLayer`]):
//!    idempotent methods (and requests carrying an `Idempotency-Key`) are
//!    retried on 5xx, 408, 429, connect errors and timeouts, within a retry
//!    budget. Outside the breaker, so it sees the breaker's `CircuitOpen` and
//!    does not retry it; outside the bulkhead, so a request waiting between
//!    attempts holds no permit.
//! 4. **circuit breaker**: opens after [`Config::breaker_failures`]
//!    consecutive failed attempts (5xx, timeouts, transport errors), stays
//!    open [`Config::breaker_open`], then probes. It does not count the
//!    bulkhead's rejections, which are local, not the upstream's fault.
//! 5. **bulkhead**: at most [`Config::max_concurrent`] upstream calls at once,
//!    a short queue, then rejection; one slow upstream cannot take every
//!    connection of the server.
//! 6. **timeout per attempt** ([`Config::attempt_timeout`]): a slow attempt
//!    becomes a retryable timeout and a failure for the breaker.
//! 7. hyper-util's pooled client, reading the upstream's whole body (so the
//!    timeout and the bulkhead permit cover the body too).
//!
//! The layers are built once and shared by every connection: the breaker's
//! and the bulkhead's state, and the retry budget, are per server, not per
//! connection.
//!
//! # Running it
//!
//! `cargo run -p hyper-stack` listens on 127.0.0.1:3100, starts a small
//! built-in upstream (see [`upstream`]) unless `--upstream-url` is given, and
//! prints the webhook secret it generated unless `--webhook-secret` (or
//! `WEBHOOK_SECRET`) is given. Tests start [`serve`] on `127.0.0.1:0`.
//!
//! # Example
//!
//! ```no_run
//! use hyper_stack::{Config, serve, upstream};
//! use tokio::net::TcpListener;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let upstream_listener = TcpListener::bind("127.0.0.1:0").await?;
//! let upstream_url = format!("http://{}", upstream_listener.local_addr()?).parse()?;
//! let (_control, demo) = upstream::service();
//! tokio::spawn(hyper_stack::serve_service(upstream_listener, demo, std::future::pending()));
//!
//! let config = Config::new(hyper_stack::generate_secret()?, upstream_url);
//! let listener = TcpListener::bind("127.0.0.1:3100").await?;
//! serve(listener, config, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

pub mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerHandle};
use palisade::prelude::*;
use palisade::retry::{Backoff, HttpRetryLayer, Jitter, ReplayBody};
use palisade::webhook::{MemoryReplayStore, Scheme, Verified, Verifier, VerifyLayer};
use palisade_core::problem::Problem;
use palisade_core::response::ProblemResponseLayer;
use tokio::net::TcpListener;
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder, ServiceExt as _};

/// The server's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Standard Webhooks secret (`whsec_` + base64) senders sign with.
    pub webhook_secret: String,
    /// The base URL the proxy route forwards to, e.g. `http://127.0.0.1:3101`.
    pub upstream: Uri,
    /// Consecutive failed upstream attempts that open the breaker (default 5:
    /// fewer would open on a single unlucky request and its two retries).
    pub breaker_failures: u32,
    /// How long the breaker stays open before probing (default 10 s).
    pub breaker_open: Duration,
    /// Attempts per proxied request, the first included (default 3).
    pub max_attempts: u32,
    /// Wait between attempts (default 50 ms, equal jitter: a proxy answers a
    /// waiting client, so retries stay quick).
    pub retry_backoff: Duration,
    /// Upstream calls in flight at once (default 32).
    pub max_concurrent: usize,
    /// Upstream calls waiting for a permit before rejection (default 32),
    /// each for at most 1 s.
    pub max_queued: usize,
    /// Time allowed to one attempt, body included (default 2 s).
    pub attempt_timeout: Duration,
}

impl Config {
    /// The defaults documented on each field, with this secret and upstream.
    pub fn new(webhook_secret: impl Into<String>, upstream: Uri) -> Self {
        Self {
            webhook_secret: webhook_secret.into(),
            upstream,
            breaker_failures: 5,
            breaker_open: Duration::from_secs(10),
            max_attempts: 3,
            retry_backoff: Duration::from_millis(50),
            max_concurrent: 32,
            max_queued: 32,
            attempt_timeout: Duration::from_secs(2),
        }
    }
}

/// A fresh Standard Webhooks secret: `whsec_` and 24 random bytes from the
/// operating system, in base64.
pub fn generate_secret() -> Result<String, BoxError> {
    let mut key = [0_u8; 24];
    getrandom::fill(&mut key).map_err(|e| format!("no randomness for a webhook secret: {e}"))?;
    Ok(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    ))
}

/// The response body of every route.
pub type Body = Full<Bytes>;

/// A route: an infallible, cloneable HTTP service taking request bodies `B`.
pub type Route<B> = BoxCloneService<Request<B>, Response<Body>, Infallible>;

/// The application: the routes, built once from a [`Config`].
#[derive(Clone)]
pub struct App {
    webhooks: Route<Incoming>,
    upstream: Route<Body>,
    upstream_base: Uri,
    breaker: CircuitBreakerHandle,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Builds the routes; fails on an invalid secret or setting.
    pub fn new(config: &Config) -> Result<Self, BoxError> {
        let verify = VerifyLayer::builder(
            Verifier::builder(Scheme::StandardWebhooks)
                .secret(config.webhook_secret.clone())
                .build()?,
        )
        .replay_store(MemoryReplayStore::new())
        .build()?;
        let webhooks = ServiceBuilder::new()
            .layer(ProblemResponseLayer::new())
            .webhook_verify(verify)
            .service_fn(receive_webhook);
        let webhooks = BoxCloneService::new(webhooks);

        let breaker = CircuitBreakerBuilder::consecutive("upstream")
            .classifier(HttpClassifier)
            .consecutive_failures(config.breaker_failures)
            .open_duration(config.breaker_open)
            .build()?;
        let breaker_handle = breaker.handle();
        // The canonical client stack in one call, its parts set from the
        // config. No idempotency key: a proxy forwards requests as they came.
        let guarded = palisade::stack::client("upstream")
            .no_idempotency_key()
            .retry(
                HttpRetryLayer::builder("upstream")
                    .max_attempts(config.max_attempts)
                    .backoff(Backoff::constant(config.retry_backoff))
                    .jitter(Jitter::Equal),
            )
            .circuit_breaker(breaker)
            .bulkhead(
                BulkheadLayer::builder("upstream")
                    .max_concurrent(config.max_concurrent)
                    .max_queued(config.max_queued)
                    .max_wait(Duration::from_secs(1)),
            )
            .attempt_timeout(config.attempt_timeout)
            .build()?;
        let upstream = ServiceBuilder::new()
            .layer(ProblemResponseLayer::new())
            .map_response(bad_gateway_on_server_error)
            .layer(guarded)
            .service(upstream_client());
        Ok(Self {
            webhooks,
            upstream: BoxCloneService::new(upstream),
            upstream_base: config.upstream.clone(),
            breaker: breaker_handle,
        })
    }

    /// The proxy's circuit breaker, for health checks and tests.
    pub fn breaker(&self) -> &CircuitBreakerHandle {
        &self.breaker
    }

    /// Answers one request.
    pub async fn handle(self, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let path = req.uri().path();
        if path == "/webhooks" {
            if req.method() != Method::POST {
                return Ok(Problem::new(StatusCode::METHOD_NOT_ALLOWED).into_response());
            }
            self.webhooks.oneshot(req).await
        } else if path.starts_with("/proxy/") {
            Ok(self.proxy(req).await)
        } else {
            Ok(Problem::new(StatusCode::NOT_FOUND).into_response())
        }
    }

    /// `/proxy/{path}`: rewrites the request for the upstream and sends it
    /// through the client stack.
    async fn proxy(self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                return Problem::new(StatusCode::BAD_REQUEST)
                    .with_detail(format!("the request body could not be read: {e}"))
                    .into_response();
            }
        };
        let Some(uri) = upstream_uri(&self.upstream_base, &parts.uri) else {
            return Problem::new(StatusCode::BAD_REQUEST)
                .with_detail("the path cannot be forwarded")
                .into_response();
        };
        let mut forwarded = Request::new(Full::new(body));
        *forwarded.method_mut() = parts.method;
        *forwarded.uri_mut() = uri;
        for name in [
            http::header::CONTENT_TYPE,
            http::header::ACCEPT,
            palisade::retry::IDEMPOTENCY_KEY,
        ] {
            if let Some(value) = parts.headers.get(&name) {
                forwarded.headers_mut().insert(name, value.clone());
            }
        }
        match self.upstream.oneshot(forwarded).await {
            Ok(res) => res,
            Err(never) => match never {},
        }
    }
}

async fn receive_webhook(req: Request<Body>) -> Result<Response<Body>, BoxError> {
    let id = req
        .extensions()
        .get::<Verified>()
        .and_then(Verified::id)
        .map(str::to_owned);
    let body = req.into_body().collect().await?.to_bytes();
    let answer = serde_json::json!({ "id": id, "bytes": body.len() });
    Ok(json_response(StatusCode::OK, answer.to_string()))
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    res
}

fn bad_gateway_on_server_error(res: Response<Body>) -> Response<Body> {
    if !res.status().is_server_error() {
        return res;
    }
    Problem::new(StatusCode::BAD_GATEWAY)
        .with_title("The upstream failed")
        .with_detail(format!(
            "the upstream answered {} after the retries",
            res.status().as_u16()
        ))
        .into_response()
}

type UpstreamRequest = Request<ReplayBody<Body>>;

/// hyper-util's pooled client, answering the upstream's whole body.
fn upstream_client() -> impl Service<
    UpstreamRequest,
    Response = Response<Body>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<Body>, BoxError>> + Send,
> + Clone
+ Send
+ 'static {
    let client: Client<HttpConnector, ReplayBody<Body>> = Client::builder(TokioExecutor::new()).build_http();
    tower::service_fn(move |req: UpstreamRequest| {
        let sent = client.request(req);
        async move {
            let res = sent.await?;
            let (parts, body) = res.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok(Response::from_parts(parts, Full::new(body)))
        }
    })
}

/// `{base}{path after /proxy}{?query}`.
fn upstream_uri(base: &Uri, incoming: &Uri) -> Option<Uri> {
    let rest = incoming.path_and_query()?.as_str().strip_prefix("/proxy")?;
    let base = base.to_string();
    format!("{}{rest}", base.trim_end_matches('/')).parse().ok()
}

/// Serves `service` on `listener` until `shutdown` completes, then stops
/// accepting, lets the connections finish their requests in flight and
/// returns.
pub async fn serve_service<S>(listener: TcpListener, service: S, shutdown: impl Future<Output = ()>)
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving the
                    // connections we have.
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service.clone()))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves the application on `listener` until `shutdown` completes (see
/// [`serve_service`]); fails only on an invalid [`Config`].
pub async fn serve(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), BoxError> {
    let app = App::new(&config)?;
    serve_service(
        listener,
        tower::service_fn(move |req| app.clone().handle(req)),
        shutdown,
    )
    .await;
    Ok(())
}
