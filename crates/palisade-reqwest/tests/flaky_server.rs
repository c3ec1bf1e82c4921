//! `ReqwestService` under palisade's client layers, against a local server
//! over a real socket. Real sockets run on real time: the waits are short,
//! and the tests assert counts, headers and lower bounds on waits, never
//! how fast anything was.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use palisade_circuit_breaker::{CircuitBreakerBuilder, State};
use palisade_core::error::{ConnectFailed, TimedOut, find, is_connect_error, is_timeout};
use palisade_core::{BoxError, CircuitOpen, HttpClassifier};
use palisade_idempotency::client::SetIdempotencyKeyLayer;
use palisade_reqwest::ReqwestService;
use palisade_retry::{Backoff, HttpRetryLayer, Jitter};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

/// What the server does with its n-th request (0-based).
#[derive(Debug, Clone, Copy)]
struct Answer {
    status: u16,
    retry_after: Option<&'static str>,
    delay: Duration,
}

const OK: Answer = Answer {
    status: 200,
    retry_after: None,
    delay: Duration::ZERO,
};

const fn status(status: u16) -> Answer {
    Answer {
        status,
        retry_after: None,
        delay: Duration::ZERO,
    }
}

/// A request as the server received it.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    method: Method,
    key: Option<String>,
    body: Bytes,
}

/// A server on 127.0.0.1 answering from a script (the last answer repeats).
struct Server {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(script: &[Answer]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script: Arc<[Answer]> = script.into();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (script, log) = (script.clone(), log.clone());
                let service = tower::service_fn(move |req: Request<Incoming>| {
                    let (script, log) = (script.clone(), log.clone());
                    async move {
                        let at = Instant::now();
                        let method = req.method().clone();
                        let key = req
                            .headers()
                            .get("idempotency-key")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let n = {
                            let mut log = log.lock().unwrap();
                            log.push(Received { at, method, key, body });
                            log.len() - 1
                        };
                        let answer = script[n.min(script.len() - 1)];
                        tokio::time::sleep(answer.delay).await;
                        let mut res = Response::builder().status(answer.status);
                        if let Some(after) = answer.retry_after {
                            res = res.header("retry-after", after);
                        }
                        Ok::<_, Infallible>(res.body(Full::new(Bytes::from_static(b"answer"))).unwrap())
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)),
                );
            }
        });
        Self { addr, received, accept }
    }

    fn url(&self) -> String {
        format!("http://{}/charges", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn retry(max_attempts: u32) -> HttpRetryLayer {
    HttpRetryLayer::builder("reqwest-test")
        .max_attempts(max_attempts)
        .backoff(Backoff::constant(Duration::from_millis(5)))
        .jitter(Jitter::None)
        .no_budget()
        .build()
        .unwrap()
}

fn body(text: &'static str) -> Full<Bytes> {
    Full::new(Bytes::from_static(text.as_bytes()))
}

#[tokio::test]
async fn a_503_with_retry_after_is_retried_after_the_wait_it_asks() {
    let server = Server::start(&[
        Answer {
            retry_after: Some("1"),
            ..status(503)
        },
        OK,
    ])
    .await;
    let client = ServiceBuilder::new()
        .layer(retry(3))
        .service(ReqwestService::new(reqwest::Client::new()));
    let res = client
        .oneshot(Request::get(server.url()).body(body("")).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "answer");
    let received = server.received();
    assert_eq!(received.len(), 2);
    // The backoff says 5 ms; the server asked for a second.
    let gap = received[1].at - received[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
}

#[tokio::test]
async fn a_reqwest_timeout_is_a_timeout_and_is_retried() {
    let server = Server::start(&[
        Answer {
            delay: Duration::from_secs(10),
            ..OK
        },
        OK,
    ])
    .await;
    let reqwest = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();

    let client = ServiceBuilder::new()
        .layer(retry(3))
        .service(ReqwestService::new(reqwest.clone()));
    let res = client
        .oneshot(Request::get(server.url()).body(body("")).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(server.received().len(), 2);

    // Without the retry: the error is reqwest's, marked as a timeout.
    let slow = Server::start(&[Answer {
        delay: Duration::from_secs(10),
        ..OK
    }])
    .await;
    let err = ReqwestService::new(reqwest)
        .oneshot(Request::get(slow.url()).body(body("")).unwrap())
        .await
        .unwrap_err();
    assert!(is_timeout(&*err), "{err}");
    assert!(!is_connect_error(&*err), "{err}");
    assert!(err.is::<TimedOut>());
    assert!(find::<reqwest::Error>(&*err).is_some_and(reqwest::Error::is_timeout));
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_opens_the_breaker() {
    // A port nobody listens on any more.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let breaker = CircuitBreakerBuilder::consecutive("closed-port")
        .classifier(HttpClassifier)
        .consecutive_failures(3)
        .open_duration(Duration::from_secs(60))
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    let attempts = Arc::new(Mutex::new(0_u32));
    let counted = attempts.clone();
    let client = ServiceBuilder::new()
        .layer(retry(3))
        .map_request(move |req| {
            *counted.lock().unwrap() += 1;
            req
        })
        .layer(breaker)
        .service(ReqwestService::new(reqwest::Client::new()));
    let get = || Request::get(format!("http://{addr}/")).body(body("")).unwrap();

    let err: BoxError = client.clone().oneshot(get()).await.unwrap_err();
    assert_eq!(*attempts.lock().unwrap(), 3, "all three attempts were made");
    assert!(is_connect_error(&*err), "{err}");
    assert!(err.is::<ConnectFailed>());
    assert!(find::<reqwest::Error>(&*err).is_some_and(reqwest::Error::is_connect));
    assert_eq!(breaker_handle.state(), State::Open);

    // The open breaker answers at once, and its rejection is not retried.
    let err = client.oneshot(get()).await.unwrap_err();
    assert_eq!(*attempts.lock().unwrap(), 4);
    assert_eq!(find::<CircuitOpen>(&*err).map(CircuitOpen::name), Some("closed-port"));
}

#[tokio::test]
async fn a_post_without_an_idempotency_key_is_never_retried() {
    let server = Server::start(&[status(503)]).await;
    let client = ServiceBuilder::new()
        .layer(retry(5))
        .service(ReqwestService::new(reqwest::Client::new()));
    let res = client
        .oneshot(Request::post(server.url()).body(body("charge 10")).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].key, None);
}

#[tokio::test]
async fn the_key_is_added_once_and_every_attempt_carries_it() {
    let server = Server::start(&[status(503), status(502), OK]).await;
    let client = ServiceBuilder::new()
        .layer(SetIdempotencyKeyLayer::new())
        .layer(retry(5))
        .service(ReqwestService::new(reqwest::Client::new()));
    let res = client
        .clone()
        .oneshot(Request::post(server.url()).body(body("charge 10")).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let received = server.received();
    assert_eq!(received.len(), 3);
    let key = received[0].key.clone().expect("the first attempt carries a key");
    assert!(key.len() > 2, "{key}");
    for attempt in &received {
        assert_eq!(attempt.method, Method::POST);
        assert_eq!(attempt.key.as_deref(), Some(&*key));
        assert_eq!(attempt.body, "charge 10");
    }

    // The next request gets a key of its own.
    client
        .oneshot(Request::post(server.url()).body(body("charge 20")).unwrap())
        .await
        .unwrap();
    let received = server.received();
    assert_eq!(received.len(), 4);
    assert_ne!(received[3].key.as_deref(), Some(&*key));
    assert!(received[3].key.is_some());
}

#[tokio::test]
async fn a_request_reqwest_cannot_take_fails_unmarked() {
    let err = ReqwestService::default()
        .oneshot(Request::get("/relative").body(body("")).unwrap())
        .await
        .unwrap_err();
    assert!(!is_timeout(&*err) && !is_connect_error(&*err), "{err}");
    assert!(
        err.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_builder)
    );
}
