//! The HTTP webhook publisher against a receiver behind palisade-webhook's verify layer.
#![cfg(all(feature = "http", feature = "sqlite"))]

mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::{Extension, Router};
use palisade_outbox::sqlite::SqliteStore;
use palisade_outbox::{Event, OutboxStore, PublishError, Publisher, PublisherHealth, Relay, stage};
use palisade_outbox::{HttpPublishError, HttpPublisher};
use palisade_webhook::{MemoryReplayStore, Scheme, Signer, Verified, Verifier, VerifyLayer};
use serde_json::json;
use sqlx::sqlite::SqlitePool;
use support::db;
use tokio::sync::mpsc;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(10);

/// One verified request as the receiver's handler saw it.
#[derive(Debug)]
struct Hit {
    path: String,
    webhook_id: String,
    content_type: String,
    event_type: String,
    body: Bytes,
}

/// A webhook receiver on 127.0.0.1 behind `VerifyLayer` (with replay protection). It answers
/// `.../status/{code}` with that status, and anything else with the next scripted status (200
/// once the script is empty).
struct Receiver {
    addr: SocketAddr,
    hits: mpsc::UnboundedReceiver<Hit>,
    script: Arc<Mutex<VecDeque<StatusCode>>>,
    /// Signalled when a request the receiver never answers is abandoned by its sender.
    abandoned: mpsc::UnboundedReceiver<()>,
}

/// Held by a handler that never answers; dropped when the server gives up on the request.
struct Hanging(mpsc::UnboundedSender<()>);

impl Drop for Hanging {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl Receiver {
    async fn start() -> Self {
        Self::start_with(false).await
    }

    async fn start_with(never_answer: bool) -> Self {
        let (sender, hits) = mpsc::unbounded_channel();
        let (abandon, abandoned) = mpsc::unbounded_channel();
        let script: Arc<Mutex<VecDeque<StatusCode>>> = Arc::default();
        let verify = VerifyLayer::builder(
            Verifier::builder(Scheme::StandardWebhooks)
                .secret(SECRET)
                .build()
                .unwrap(),
        )
        .replay_store(MemoryReplayStore::new())
        .build()
        .unwrap();
        let script_in_handler = script.clone();
        let handler = move |Extension(verified): Extension<Verified>, uri: Uri, headers: HeaderMap, body: Bytes| {
            let header = |name: &str| {
                headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            let hit = Hit {
                path: uri.path().to_owned(),
                webhook_id: verified.id().unwrap().to_owned(),
                content_type: header("content-type"),
                event_type: header("palisade-event-type"),
                body,
            };
            let status = match hit.path.split_once("/status/") {
                Some((_, code)) => StatusCode::from_bytes(code.as_bytes()).unwrap(),
                None => script_in_handler.lock().unwrap().pop_front().unwrap_or(StatusCode::OK),
            };
            let _ = sender.send(hit);
            let hanging = never_answer.then(|| Hanging(abandon.clone()));
            async move {
                if let Some(_hanging) = hanging {
                    std::future::pending::<()>().await;
                }
                (
                    status,
                    if status.is_success() {
                        ""
                    } else {
                        "rejected by the test receiver"
                    },
                )
            }
        };
        let app = Router::new().fallback(handler).layer(verify);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            hits,
            script,
            abandoned,
        }
    }

    fn base_url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    fn publisher(&self) -> HttpPublisher {
        HttpPublisher::builder(signer())
            .base_url(self.base_url())
            .build()
            .unwrap()
    }

    async fn next_hit(&mut self) -> Hit {
        tokio::time::timeout(WAIT, self.hits.recv())
            .await
            .expect("a request within the wait")
            .expect("receiver running")
    }
}

fn signer() -> Signer {
    Signer::builder(Scheme::StandardWebhooks)
        .secret(SECRET)
        .build()
        .unwrap()
}

async fn stage_committed(pool: &SqlitePool, event: &Event) {
    let mut tx = pool.begin().await.unwrap();
    stage(&mut tx, event).await.unwrap();
    tx.commit().await.unwrap();
}

fn order_event() -> Event {
    Event::new("OrderCreated", "Order", "ord_1", json!({ "total_amount": 5999 }))
}

async fn publish_error(publisher: &HttpPublisher, event: &Event) -> PublishError {
    publisher.publish(event).await.expect_err("the publish fails")
}

#[tokio::test]
async fn the_relay_delivers_a_verified_webhook_with_the_exact_body() {
    let mut receiver = Receiver::start().await;
    let db = db().await;
    let relay = Relay::builder(SqliteStore::new(db.pool.clone()), receiver.publisher())
        .build()
        .unwrap();
    let running = relay.spawn();
    let event = order_event();
    stage_committed(&db.pool, &event).await;
    running.wake();

    let hit = receiver.next_hit().await;
    assert_eq!(hit.path, "/hooks/Order", "base URL joined with the destination");
    assert_eq!(
        hit.webhook_id,
        event.event_id.to_string(),
        "the event id is the webhook id"
    );
    assert_eq!(hit.body, event.to_json(), "exactly the encoded envelope");
    assert_eq!(serde_json::from_slice::<Event>(&hit.body).unwrap(), event);
    assert_eq!(hit.content_type, "application/json");
    assert_eq!(hit.event_type, "OrderCreated");
    running.shutdown().await;
    let backlog = relay.store().backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.dead_lettered), (0, 0));
}

#[tokio::test]
async fn a_500_is_retried_then_delivered_under_the_same_webhook_id() {
    let mut receiver = Receiver::start().await;
    receiver
        .script
        .lock()
        .unwrap()
        .push_back(StatusCode::INTERNAL_SERVER_ERROR);
    let db = db().await;
    let store = SqliteStore::new(db.pool.clone());
    let relay = Relay::builder(store.clone(), receiver.publisher())
        .backoff(Duration::from_millis(1), Duration::from_millis(2), 2.0)
        .poll_interval(Duration::from_millis(5))
        .build()
        .unwrap();
    let event = order_event();
    stage_committed(&db.pool, &event).await;

    let first = relay.run_batch().await.unwrap();
    assert_eq!((first.claimed, first.failed, first.dead_lettered), (1, 1, 0));
    let running = relay.spawn();
    let failed = receiver.next_hit().await;
    let delivered = receiver.next_hit().await;
    assert_eq!(failed.webhook_id, event.event_id.to_string());
    assert_eq!(delivered.webhook_id, failed.webhook_id, "a redelivery keeps its id");
    assert_eq!(delivered.body, failed.body);
    running.shutdown().await;
    let backlog = store.backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.dead_lettered), (0, 0));
    assert!(receiver.hits.try_recv().is_err(), "not sent again once delivered");
}

#[tokio::test]
async fn a_400_is_dead_lettered_without_retries() {
    let mut receiver = Receiver::start().await;
    receiver.script.lock().unwrap().push_back(StatusCode::BAD_REQUEST);
    let db = db().await;
    let store = SqliteStore::new(db.pool.clone());
    let relay = Relay::builder(store.clone(), receiver.publisher())
        .max_attempts(5)
        .build()
        .unwrap();
    let event = order_event();
    stage_committed(&db.pool, &event).await;

    let report = relay.run_batch().await.unwrap();
    assert_eq!((report.claimed, report.failed, report.dead_lettered), (1, 1, 1));
    assert_eq!(receiver.next_hit().await.webhook_id, event.event_id.to_string());
    let dead = store.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].event.as_ref().map(|e| e.event_id), dead[0].attempts),
        (Some(event.event_id), 1)
    );
    let last_error = dead[0].last_error.as_deref().unwrap();
    assert!(
        last_error.contains("the receiver answered 400 Bad Request: rejected by the test receiver"),
        "{last_error}"
    );
    assert_eq!(relay.run_batch().await.unwrap().claimed, 0, "nothing left to retry");
    assert!(receiver.hits.try_recv().is_err(), "sent exactly once");
}

#[tokio::test]
async fn statuses_decide_between_delivered_retry_and_dead_letter() {
    let mut receiver = Receiver::start().await;
    let publisher = receiver.publisher();
    for code in [200, 201, 202, 204] {
        let event = order_event().with_destination(format!("status/{code}"));
        assert!(publisher.publish(&event).await.is_ok(), "{code} is delivered");
        assert_eq!(receiver.next_hit().await.path, format!("/hooks/status/{code}"));
    }
    for (code, transient) in [
        (408, true),
        (429, true),
        (500, true),
        (502, true),
        (503, true),
        (504, true),
        (301, false),
        (400, false),
        (401, false),
        (403, false),
        (404, false),
        (409, false),
        (410, false),
        (422, false),
    ] {
        let event = order_event().with_destination(format!("status/{code}"));
        let error = publish_error(&publisher, &event).await;
        assert_eq!(error.is_transient(), transient, "{code}: {error}");
        match palisade_core::error::find::<HttpPublishError>(&error) {
            Some(HttpPublishError::Status { status, .. }) => assert_eq!(status.as_u16(), code),
            other => panic!("{code}: {other:?}"),
        }
        receiver.next_hit().await;
    }
}

#[tokio::test]
async fn an_absolute_destination_is_used_as_is() {
    let mut receiver = Receiver::start().await;
    let publisher = HttpPublisher::builder(signer()).build().unwrap();
    let event = order_event().with_destination(format!("http://{}/elsewhere/orders", receiver.addr));
    publisher.publish(&event).await.unwrap();
    assert_eq!(receiver.next_hit().await.path, "/elsewhere/orders");

    let relative = order_event();
    let error = publish_error(&publisher, &relative).await;
    assert!(
        !error.is_transient(),
        "a relative destination without a base URL never works"
    );
    assert!(
        error.to_string().contains("not an absolute URL and no base URL is set"),
        "{error}"
    );
    let https = order_event().with_destination("https://example.com/hooks");
    let error = publish_error(&publisher, &https).await;
    assert!(!error.is_transient());
    assert!(error.to_string().contains("https needs a TLS connector"), "{error}");
    assert!(receiver.hits.try_recv().is_err(), "nothing was sent for either");
}

#[tokio::test]
async fn a_redelivered_event_is_dropped_by_the_receivers_replay_protection() {
    let mut receiver = Receiver::start().await;
    let publisher = receiver.publisher();
    let event = order_event();
    publisher.publish(&event).await.unwrap();
    publisher.publish(&event).await.unwrap();
    assert_eq!(receiver.next_hit().await.webhook_id, event.event_id.to_string());
    assert!(
        receiver.hits.try_recv().is_err(),
        "the second delivery was answered without reaching the handler"
    );
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let publisher = HttpPublisher::builder(signer())
        .base_url(format!("http://{addr}"))
        .build()
        .unwrap();
    let error = publish_error(&publisher, &order_event()).await;
    assert!(error.is_transient(), "{error}");
    assert!(palisade_core::error::is_connect_error(&error), "{error:?}");
    assert!(matches!(
        palisade_core::error::find::<HttpPublishError>(&error),
        Some(HttpPublishError::Transport(_))
    ));
}

#[tokio::test]
async fn health_says_whether_the_last_attempt_reached_a_receiver() {
    let mut receiver = Receiver::start().await;
    let publisher = receiver.publisher();
    assert_eq!(publisher.health(), PublisherHealth::Connected);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = listener.local_addr().unwrap();
    drop(listener);
    let unreachable = order_event().with_destination(format!("http://{gone}/hooks/Order"));
    let error = publish_error(&publisher, &unreachable).await;
    assert!(error.is_transient(), "{error}");
    assert_eq!(publisher.health(), PublisherHealth::Disconnected);
    let refused = order_event().with_destination("status/503");
    let error = publish_error(&publisher, &refused).await;
    assert!(error.is_transient(), "{error}");
    assert_eq!(
        publisher.health(),
        PublisherHealth::Connected,
        "any answer means the receiver is reachable"
    );
    assert_eq!(receiver.next_hit().await.path, "/hooks/status/503");
    let event = order_event();
    publisher.publish(&event).await.unwrap();
    assert_eq!(receiver.next_hit().await.webhook_id, event.event_id.to_string());
    assert_eq!(publisher.health(), PublisherHealth::Connected);
}

#[tokio::test(start_paused = true)]
async fn a_receiver_that_never_answers_times_out_as_transient() {
    let receiver = Receiver::start_with(true).await;
    let publisher = HttpPublisher::builder(signer())
        .base_url(receiver.base_url())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let error = publish_error(&publisher, &order_event()).await;
    assert!(error.is_transient(), "{error}");
    assert!(palisade_core::error::is_timeout(&error), "{error:?}");
    assert_eq!(error.to_string(), "publish failed (transient): no answer within 2s");
}

#[tokio::test]
async fn a_timeout_past_the_clocks_range_delivers_without_panicking() {
    let mut receiver = Receiver::start().await;
    let publisher = HttpPublisher::builder(signer())
        .base_url(receiver.base_url())
        .timeout(Duration::from_secs(10_000_000_000_000_000_000))
        .build()
        .unwrap();
    let event = order_event();
    publisher.publish(&event).await.unwrap();
    assert_eq!(receiver.next_hit().await.webhook_id, event.event_id.to_string());
}

#[tokio::test]
async fn a_dropped_publish_abandons_its_request() {
    let mut receiver = Receiver::start_with(true).await;
    let publisher = receiver.publisher();
    let event = order_event();
    {
        let publish = publisher.publish(&event);
        tokio::select! {
            result = publish => panic!("the receiver never answers, yet got {result:?}"),
            hit = receiver.next_hit() => assert_eq!(hit.webhook_id, event.event_id.to_string()),
        }
    }
    // The publish future is gone: its connection closes and the receiver drops the request.
    tokio::time::timeout(WAIT, receiver.abandoned.recv())
        .await
        .expect("the request is abandoned within the wait");
}
