//! hyper-stack over real sockets: started on 127.0.0.1:0, driven by an HTTP
//! client, shut down.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_stack::upstream::{self, UpstreamControl};
use hyper_stack::{Config, generate_secret, serve, serve_service};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::webhook::{Scheme, Signer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Running {
    addr: SocketAddr,
    secret: String,
    upstream: UpstreamControl,
    stop: oneshot::Sender<()>,
    server: JoinHandle<Result<(), BoxError>>,
    stop_upstream: oneshot::Sender<()>,
    client: Client<HttpConnector, Full<Bytes>>,
}

async fn start() -> Running {
    let upstream_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream_listener.local_addr().unwrap();
    let (control, demo) = upstream::service();
    let (stop_upstream, upstream_stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_service(upstream_listener, demo, async {
        let _ = upstream_stopped.await;
    }));

    let secret = generate_secret().unwrap();
    let mut config = Config::new(secret.clone(), format!("http://{upstream_addr}").parse().unwrap());
    config.retry_backoff = Duration::from_millis(5);
    config.breaker_open = Duration::from_secs(60);
    // Bound before the server task starts: connections queue in the backlog
    // until it accepts them, so no test waits for readiness.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, config, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        secret,
        upstream: control,
        stop,
        server,
        stop_upstream,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

impl Running {
    async fn send(&self, req: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
        let res = self.client.request(req).await.unwrap();
        let (parts, body) = res.into_parts();
        (
            Response::from_parts(parts, ()),
            body.collect().await.unwrap().to_bytes(),
        )
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn shut_down(self) {
        drop(self.client);
        self.stop.send(()).unwrap();
        let finished = tokio::time::timeout(Duration::from_secs(10), self.server).await;
        finished.expect("the server shuts down").unwrap().unwrap();
        let _ = self.stop_upstream.send(());
    }
}

fn json(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn a_signed_webhook_is_handled_and_a_tampered_one_is_rejected() {
    let server = start().await;
    let signer = Signer::builder(Scheme::StandardWebhooks)
        .secret(server.secret.clone())
        .build()
        .unwrap();
    let payload = br#"{"type":"payment.succeeded","data":{"order_id":"ord_1"}}"#;

    let mut signed = Request::post(server.url("/webhooks"))
        .body(Full::new(Bytes::from_static(payload)))
        .unwrap();
    signer.sign(signed.headers_mut(), payload).unwrap();
    let headers = signed.headers().clone();
    let id = headers["webhook-id"].to_str().unwrap().to_owned();
    let (res, body) = server.send(signed).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json(&body), serde_json::json!({ "id": id, "bytes": payload.len() }));

    // A redelivery of the same message is acknowledged, not handled again.
    let mut again = Request::post(server.url("/webhooks"))
        .body(Full::new(Bytes::from_static(payload)))
        .unwrap();
    *again.headers_mut() = headers.clone();
    let (res, body) = server.send(again).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(body.is_empty(), "the handler did not run again");

    // The same signature over different bytes.
    let tampered_payload = br#"{"type":"payment.succeeded","data":{"order_id":"ord_2"}}"#;
    let mut tampered = Request::post(server.url("/webhooks"))
        .body(Full::new(Bytes::from_static(tampered_payload)))
        .unwrap();
    *tampered.headers_mut() = headers;
    let (res, body) = server.send(tampered).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(json(&body)["type"], "urn:palisade:problem:webhook-bad-signature");

    server.shut_down().await;
}

#[tokio::test]
async fn the_proxy_route_answers_what_the_upstream_answers() {
    let server = start().await;
    let (res, body) = server
        .send(
            Request::get(server.url("/proxy/items/7?full=1"))
                .body(Full::default())
                .unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        json(&body),
        serde_json::json!({ "upstream": "demo", "method": "GET", "path": "/items/7" })
    );
    assert_eq!(server.upstream.requests(), 1);

    let (res, body) = server
        .send(Request::get(server.url("/elsewhere")).body(Full::default()).unwrap())
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(&body)["status"], 404);

    server.shut_down().await;
}

#[tokio::test]
async fn a_failing_upstream_opens_the_breaker_and_the_route_answers_503_with_retry_after() {
    let server = start().await;
    server.upstream.set_failing(true);
    let get = || Request::get(server.url("/proxy/items")).body(Full::default()).unwrap();

    // Three attempts, all 500: the client gets a bad gateway.
    let (res, body) = server.send(get()).await;
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(json(&body)["status"], 502);
    assert_eq!(server.upstream.requests(), 3);

    // Two more failed attempts make five in a row: the breaker opens, and the
    // third attempt is rejected without reaching the upstream (and not retried).
    let (res, body) = server.send(get()).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(json(&body)["type"], "urn:palisade:problem:circuit-open");
    assert_eq!(server.upstream.requests(), 5);

    // Open: even a recovered upstream is not called until the breaker probes.
    server.upstream.set_failing(false);
    let (res, _) = server.send(get()).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(server.upstream.requests(), 5);

    server.shut_down().await;
}

#[tokio::test]
async fn shutdown_completes_and_closes_the_listener() {
    let server = start().await;
    let (res, _) = server
        .send(Request::get(server.url("/proxy/ping")).body(Full::default()).unwrap())
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let addr = server.addr;
    server.shut_down().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let server = start().await;
    server.upstream.set_latency(Duration::from_millis(300));
    let client = server.client.clone();
    let in_flight =
        tokio::spawn(client.request(Request::get(server.url("/proxy/slow")).body(Full::default()).unwrap()));
    server.upstream.received(1).await;
    server.stop.send(()).unwrap();

    let res = in_flight.await.unwrap().unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(json(&body)["path"], "/slow");
    let finished = tokio::time::timeout(Duration::from_secs(10), server.server).await;
    finished.expect("the server shuts down").unwrap().unwrap();
    let _ = server.stop_upstream.send(());
}
