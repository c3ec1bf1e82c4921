//! Three services on loopback, edge → middle → last, each behind a
//! `DeadlineLayer` and calling the next through a `PropagateDeadlineLayer`;
//! the edge gives a request 300 ms and the last hop hangs. Every hop must
//! give up by the deadline, stop its work, and answer 504.
//!
//! Real sockets need real time: the bounds are generous (the deadline plus
//! 150 ms), as this checks correctness, not speed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade_core::BoxError;
use palisade_core::deadline::Deadline;
use palisade_deadline::{DeadlineLayer, PropagateDeadline, PropagateDeadlineLayer};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const BUDGET: Duration = Duration::from_millis(300);
const SLACK: Duration = Duration::from_millis(150);

/// What one hop did.
#[derive(Default)]
struct Hop {
    /// The `x-request-timeout-ms` it received.
    budget_header: Mutex<Option<u64>>,
    /// Its answer's status and when (since the test began) it left.
    answered: Mutex<Option<(u16, Duration)>>,
    /// The handler's future ended, by finishing or by being dropped.
    ended: AtomicBool,
    /// It was dropped before it finished: its work was cancelled.
    cancelled: AtomicBool,
    /// Units of work the last hop did (one per 5 ms).
    work: AtomicUsize,
}

struct Ends<'a>(&'a Hop, bool);

impl Drop for Ends<'_> {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::SeqCst);
        if !self.1 {
            self.0.cancelled.store(true, Ordering::SeqCst);
        }
    }
}

type HttpClient = PropagateDeadline<Client<HttpConnector, Empty<Bytes>>>;

#[derive(Clone)]
struct Forward {
    hop: Arc<Hop>,
    next: String,
    client: HttpClient,
}

/// The edge and the middle hop: call the next service and relay its status
/// and body, or answer the client's error as a problem.
async fn forward(State(state): State<Forward>, req: Request) -> Response {
    record_budget(&state.hop, &req);
    let mut ends = Ends(&state.hop, false);
    let outgoing = http::Request::get(&state.next).body(Empty::new()).unwrap();
    // The task's deadline reaches the client without copying anything.
    assert!(Deadline::current().is_some());
    let res = match state.client.clone().oneshot(outgoing).await {
        Ok(res) => {
            let (parts, body) = res.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            Response::from_parts(parts, Body::from(body))
        }
        Err(e) => palisade_core::problem::problem_for_error(&*e).into_response_with(Body::from),
    };
    ends.1 = true;
    res
}

/// The last hop: works until cancelled.
async fn hang(State(hop): State<Arc<Hop>>, req: Request) -> Response {
    record_budget(&hop, &req);
    let _ends = Ends(&hop, false);
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        hop.work.fetch_add(1, Ordering::SeqCst);
    }
}

fn record_budget(hop: &Hop, req: &Request) {
    let header = req.headers().get("x-request-timeout-ms");
    *hop.budget_header.lock().unwrap() = header.map(|v| v.to_str().unwrap().parse().unwrap());
}

/// Serves `router` behind a `DeadlineLayer`, recording each answer.
async fn serve(router: Router, deadline: DeadlineLayer, hop: Arc<Hop>, origin: Instant) -> String {
    let app = router
        .layer(deadline)
        .layer(axum::middleware::map_response(move |res: Response| {
            let hop = hop.clone();
            async move {
                *hop.answered.lock().unwrap() = Some((res.status().as_u16(), origin.elapsed()));
                res
            }
        }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

fn client(name: &str) -> HttpClient {
    let http = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    PropagateDeadlineLayer::builder(name).build().unwrap().layer(http)
}

#[tokio::test]
async fn every_hop_gives_up_by_the_deadline_and_stops_working() -> Result<(), BoxError> {
    let origin = Instant::now();
    let [edge, middle, last] = [(); 3].map(|_| Arc::new(Hop::default()));
    let reads_headers = || DeadlineLayer::builder("hop").build().unwrap();

    let last_url = serve(
        Router::new().route("/", get(hang)).with_state(last.clone()),
        reads_headers(),
        last.clone(),
        origin,
    )
    .await;
    let middle_state = Forward {
        hop: middle.clone(),
        next: last_url,
        client: client("last"),
    };
    let middle_url = serve(
        Router::new().route("/", get(forward)).with_state(middle_state),
        reads_headers(),
        middle.clone(),
        origin,
    )
    .await;
    let edge_state = Forward {
        hop: edge.clone(),
        next: middle_url,
        client: client("middle"),
    };
    let edge_url = serve(
        Router::new().route("/", get(forward)).with_state(edge_state),
        DeadlineLayer::builder("edge").timeout(BUDGET).build()?,
        edge.clone(),
        origin,
    )
    .await;

    // The caller sends no budget: the edge's 300 ms is the request's.
    let caller = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let started = Instant::now();
    let res = caller
        .request(http::Request::get(&edge_url).body(Empty::new())?)
        .await?;
    let elapsed = started.elapsed();
    let status = res.status();
    let content_type = res.headers()["content-type"].clone();
    let body = res.into_body().collect().await?.to_bytes();

    assert_eq!(status, 504);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(
        body,
        r#"{"type":"urn:palisade:problem:deadline-exceeded","title":"Deadline exceeded","status":504,"detail":"The request's time budget ran out before it was answered."}"#
    );
    assert!(
        elapsed >= BUDGET - Duration::from_millis(50) && elapsed <= BUDGET + SLACK,
        "answered after {elapsed:?}"
    );

    // Each hop inherited a smaller budget: the edge's, less each client's
    // 10 ms margin and the time spent getting there.
    assert_eq!(*edge.budget_header.lock().unwrap(), None);
    let middle_budget = middle.budget_header.lock().unwrap().unwrap();
    let last_budget = last.budget_header.lock().unwrap().unwrap();
    assert!((200..=290).contains(&middle_budget), "middle got {middle_budget} ms");
    assert!(
        (150..=280).contains(&last_budget) && last_budget < middle_budget,
        "last got {last_budget} ms"
    );

    // Every hop answered 504 by the deadline.
    for (name, hop) in [("edge", &edge), ("middle", &middle), ("last", &last)] {
        let (status, at) = hop.answered.lock().unwrap().expect("answered");
        assert_eq!(status, 504, "{name}");
        assert!(at <= BUDGET + SLACK, "{name} answered at {at:?}");
        assert!(hop.ended.load(Ordering::SeqCst), "{name}'s handler is still running");
    }
    // The last hop's work was cancelled, and nothing works on after it.
    assert!(
        last.cancelled.load(Ordering::SeqCst),
        "the hanging handler was not dropped"
    );
    let work = last.work.load(Ordering::SeqCst);
    assert!(work > 0, "the last hop did work before the deadline");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(last.work.load(Ordering::SeqCst), work, "the last hop kept working");
    Ok(())
}
