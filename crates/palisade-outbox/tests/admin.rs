//! The admin router over a real SQLite outbox: read-only unless allowed, JSON answers,
//! problem+json errors. (The operations themselves are tested on PostgreSQL and SQLite through
//! the palisade-outbox tool, crates/palisade-outbox-cli/tests/cli.rs.)
#![cfg(all(feature = "sqlite", feature = "admin"))]

mod support;

use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use palisade_outbox::admin::AdminRouter;
use palisade_outbox::sqlite::SqliteStore;
use palisade_outbox::{ChannelPublisher, Event, Relay, stage};
use serde_json::{Value, json};
use support::{Db, db, unmigrated_db};
use tower::ServiceExt;
use uuid::Uuid;

const CHANNEL_CLOSED: &str = "publish failed (transient): the channel's receiver was dropped";

/// Milliseconds since the epoch of 2020-03-01T00:00:00Z and 2020-02-29T23:59:00Z.
const MARCH_2020_MS: i64 = 1_583_020_800_000;
const STAGED_MS: i64 = MARCH_2020_MS - 60_000;

fn event(n: u128, aggregate_type: &str, aggregate_id: &str) -> Event {
    let mut event = Event::new("Failed", aggregate_type, aggregate_id, json!({ "n": n as u64 }));
    event.event_id = Uuid::from_u128(n);
    event.timestamp = time::OffsetDateTime::from_unix_timestamp(MARCH_2020_MS / 1000 - 120).unwrap();
    event
}

/// Dead letters 1 (Order, dead since 2020-03-01) and 2 (Payment, dead since now), and
/// pending event 3 (Order).
async fn outbox() -> (Db, SqliteStore) {
    let db = db().await;
    let store = SqliteStore::new(db.pool.clone());
    for e in [event(1, "Order", "ord_1"), event(2, "Payment", "pay_1")] {
        let mut tx = db.pool.begin().await.unwrap();
        stage(&mut tx, &e).await.unwrap();
        tx.commit().await.unwrap();
    }
    let (publisher, events) = ChannelPublisher::new(4);
    drop(events);
    let relay = Relay::builder(store.clone(), publisher)
        .max_attempts(1)
        .build()
        .unwrap();
    assert_eq!(relay.run_batch().await.unwrap().dead_lettered, 2);
    sqlx::query("UPDATE palisade_outbox SET staged_at = ?, dead_lettered_at = ? WHERE seq = 1")
        .bind(STAGED_MS)
        .bind(MARCH_2020_MS)
        .execute(&db.pool)
        .await
        .unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    stage(&mut tx, &event(3, "Order", "ord_2")).await.unwrap();
    tx.commit().await.unwrap();
    (db, store)
}

/// Status, content type and JSON body of `method uri` on `router`.
async fn call(router: &Router, method: Method, uri: &str) -> (StatusCode, String, Value) {
    let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, content_type, json)
}

fn problem(status: u16, kind: &str, title: &str, detail: Option<&str>) -> (StatusCode, String, Value) {
    let mut body = json!({ "type": kind, "title": title, "status": status });
    if let Some(detail) = detail {
        body["detail"] = json!(detail);
    }
    (
        StatusCode::from_u16(status).unwrap(),
        "application/problem+json".to_owned(),
        body,
    )
}

fn ok(body: Value) -> (StatusCode, String, Value) {
    (StatusCode::OK, "application/json".to_owned(), body)
}

fn order_dead_letter() -> Value {
    json!({
        "seq": 1,
        "event": {
            "event_id": "00000000-0000-0000-0000-000000000001",
            "event_type": "Failed",
            "aggregate_type": "Order",
            "aggregate_id": "ord_1",
            "destination": "Order",
            "timestamp": "2020-02-29T23:58:00Z",
            "version": 1,
            "payload": { "n": 1 },
            "metadata": {}
        },
        "attempts": 1,
        "last_error": CHANNEL_CLOSED,
        "staged_at": "2020-02-29T23:59:00Z",
        "dead_lettered_at": "2020-03-01T00:00:00Z"
    })
}

async fn dead_seqs(router: &Router) -> Vec<i64> {
    let (status, _, list) = call(router, Method::GET, "/dead-letters").await;
    assert_eq!(status, StatusCode::OK);
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| d["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn read_only_by_default_the_mutating_routes_do_not_exist() {
    let (_db, store) = outbox().await;
    let router = AdminRouter::new(store).build();

    let (status, content_type, mut stats) = call(&router, Method::GET, "/stats").await;
    assert_eq!((status, content_type.as_str()), (StatusCode::OK, "application/json"));
    assert!(stats["oldest_pending_age_ms"].take().as_u64().unwrap() < 60_000);
    assert!(stats["destinations"][0]["oldest_pending_age_ms"].take().is_u64());
    let staged = stats["oldest_pending_at"].take();
    assert_eq!(stats["destinations"][0]["oldest_pending_at"].take(), staged);
    assert_eq!(
        stats,
        json!({
            "pending": 1, "retrying": 0, "oldest_pending_at": null, "oldest_pending_age_ms": null,
            "dead": 2, "published_last_minute": 0,
            "destinations": [
                { "destination": "Order", "pending": 1, "retrying": 0, "oldest_pending_at": null,
                  "oldest_pending_age_ms": null, "dead": 1, "published_last_minute": 0 },
                { "destination": "Payment", "pending": 0, "retrying": 0, "oldest_pending_at": null,
                  "oldest_pending_age_ms": null, "dead": 1, "published_last_minute": 0 },
            ]
        })
    );
    assert_eq!(
        call(&router, Method::GET, "/dead-letters/1").await,
        ok(order_dead_letter())
    );
    assert_eq!(
        call(
            &router,
            Method::GET,
            "/dead-letters/00000000-0000-0000-0000-000000000001"
        )
        .await,
        ok(order_dead_letter())
    );
    assert_eq!(
        call(&router, Method::GET, "/dead-letters?older_than=7d").await,
        ok(json!([order_dead_letter()]))
    );

    assert_eq!(
        call(&router, Method::POST, "/dead-letters/1/requeue").await,
        problem(404, "about:blank", "Not Found", None)
    );
    assert_eq!(
        call(&router, Method::POST, "/dead-letters/requeue").await,
        problem(405, "about:blank", "Method Not Allowed", None)
    );
    assert_eq!(
        call(&router, Method::DELETE, "/dead-letters?older_than=1s").await,
        problem(405, "about:blank", "Method Not Allowed", None)
    );
    let request = Request::delete("/dead-letters?older_than=1s")
        .body(Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(
        response.headers().get("allow").map(|v| v.to_str().unwrap()),
        Some("GET,HEAD")
    );
    assert_eq!(dead_seqs(&router).await, [1, 2], "nothing changed");
}

#[tokio::test]
async fn requeue_when_allowed_and_the_relay_publishes_the_event_again() {
    let (_db, store) = outbox().await;
    let router = AdminRouter::new(store.clone()).allow_requeue().build();

    assert_eq!(
        call(&router, Method::POST, "/dead-letters/1/requeue").await,
        ok(json!({ "requeued": 1 }))
    );
    assert_eq!(dead_seqs(&router).await, [2]);
    let (publisher, mut events) = ChannelPublisher::new(4);
    let relay = Relay::builder(store, publisher).build().unwrap();
    assert_eq!(relay.run_batch().await.unwrap().published, 2);
    let mut published = [events.recv().await.unwrap(), events.recv().await.unwrap()];
    published.sort_by_key(|e| e.event_id);
    assert_eq!(
        published.iter().map(|e| e.event_id.as_u128()).collect::<Vec<_>>(),
        [1, 3],
        "the requeued event and the pending one"
    );

    assert_eq!(
        call(&router, Method::POST, "/dead-letters/1/requeue").await,
        problem(
            404,
            "urn:palisade:problem:outbox-dead-letter-not-found",
            "No such dead letter",
            Some("No dead letter has this sequence number or event id.")
        )
    );
    assert_eq!(
        call(&router, Method::POST, "/dead-letters/requeue?destination=Order").await,
        ok(json!({ "requeued": 0 }))
    );
    assert_eq!(
        call(&router, Method::POST, "/dead-letters/requeue?destination=Payment").await,
        ok(json!({ "requeued": 1 }))
    );
    assert_eq!(dead_seqs(&router).await, Vec::<i64>::new());
    assert_eq!(
        call(&router, Method::DELETE, "/dead-letters?older_than=1s").await,
        problem(405, "about:blank", "Method Not Allowed", None),
        "purging is allowed on its own"
    );
}

#[tokio::test]
async fn purge_when_allowed_deletes_only_the_older_dead_letters() {
    let (_db, store) = outbox().await;
    let router = AdminRouter::new(store).allow_purge().build();

    assert_eq!(
        call(&router, Method::DELETE, "/dead-letters").await,
        problem(
            400,
            "urn:palisade:problem:outbox-invalid-request",
            "Invalid request",
            Some("older_than is required, e.g. older_than=7d")
        )
    );
    assert_eq!(
        call(
            &router,
            Method::DELETE,
            "/dead-letters?older_than=7d&destination=Payment"
        )
        .await,
        ok(json!({ "purged": 0 }))
    );
    assert_eq!(
        call(&router, Method::DELETE, "/dead-letters?older_than=7d").await,
        ok(json!({ "purged": 1 }))
    );
    assert_eq!(dead_seqs(&router).await, [2]);
    assert_eq!(
        call(&router, Method::POST, "/dead-letters/2/requeue").await,
        problem(404, "about:blank", "Not Found", None),
        "requeueing is allowed on its own"
    );
}

#[tokio::test]
async fn bad_requests_unknown_routes_and_missing_tables_answer_problems() {
    let (_db, store) = outbox().await;
    let router = AdminRouter::new(store).allow_requeue().allow_purge().build();
    let invalid = |detail: &str| {
        problem(
            400,
            "urn:palisade:problem:outbox-invalid-request",
            "Invalid request",
            Some(detail),
        )
    };
    assert_eq!(
        call(&router, Method::GET, "/dead-letters/ord_1").await,
        invalid(r#""ord_1" is neither a sequence number nor an event id (UUID)"#)
    );
    assert_eq!(
        call(&router, Method::POST, "/dead-letters/ord_1/requeue").await,
        invalid(r#""ord_1" is neither a sequence number nor an event id (UUID)"#)
    );
    assert_eq!(
        call(&router, Method::GET, "/dead-letters?limit=0").await,
        invalid("limit must be from 1 to 1000")
    );
    assert_eq!(
        call(&router, Method::GET, "/dead-letters?limit=1001").await,
        invalid("limit must be from 1 to 1000")
    );
    let (status, content_type, body) = call(&router, Method::GET, "/dead-letters?limit=many").await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::BAD_REQUEST, "application/problem+json")
    );
    assert_eq!(body["type"], "urn:palisade:problem:outbox-invalid-request");
    assert_eq!(
        call(&router, Method::DELETE, "/dead-letters?older_than=soon").await,
        invalid(r#"older_than "soon" is no duration like 7d or 12h: expected number at 0"#)
    );
    assert_eq!(
        call(&router, Method::GET, "/dead-letters/99").await,
        problem(
            404,
            "urn:palisade:problem:outbox-dead-letter-not-found",
            "No such dead letter",
            Some("No dead letter has this sequence number or event id.")
        )
    );
    assert_eq!(
        call(&router, Method::GET, "/dead-letters/3").await.0,
        StatusCode::NOT_FOUND,
        "a pending event is no dead letter"
    );
    assert_eq!(
        call(&router, Method::GET, "/nothing-here").await,
        problem(404, "about:blank", "Not Found", None)
    );
    assert_eq!(
        call(&router, Method::PUT, "/stats").await,
        problem(405, "about:blank", "Method Not Allowed", None)
    );
    // A misspelled filter would select every dead letter: refused.
    for (method, uri) in [
        (Method::POST, "/dead-letters/requeue?destinaton=Payment"),
        (Method::DELETE, "/dead-letters?older_than=1s&destinaton=Payment"),
        (Method::GET, "/dead-letters?destinaton=Payment"),
    ] {
        let (status, content_type, body) = call(&router, method.clone(), uri).await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::BAD_REQUEST, "application/problem+json"),
            "{method} {uri}"
        );
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("unknown field `destinaton`"), "{detail}");
    }
    // A limit bounds a list; a requeue or a purge takes every dead letter the
    // filter selects, so a limit there would not do what it says.
    for (method, uri) in [
        (Method::POST, "/dead-letters/requeue?limit=1"),
        (Method::DELETE, "/dead-letters?older_than=1s&limit=1"),
    ] {
        assert_eq!(
            call(&router, method.clone(), uri).await,
            invalid("limit bounds a list only: a requeue or a purge takes every dead letter the filter selects"),
            "{method} {uri}"
        );
    }
    assert_eq!(dead_seqs(&router).await, [1, 2], "nothing changed");

    let bare = unmigrated_db().await;
    let router = AdminRouter::new(SqliteStore::new(bare.pool.clone()))
        .allow_requeue()
        .allow_purge()
        .build();
    let missing = problem(
        503,
        "urn:palisade:problem:outbox-missing-tables",
        "No outbox tables",
        Some("The database has no outbox tables: it was not migrated, or this is not the outbox's database or schema."),
    );
    for (method, uri) in [
        (Method::GET, "/stats"),
        (Method::GET, "/dead-letters"),
        (Method::GET, "/dead-letters/1"),
        (Method::POST, "/dead-letters/1/requeue"),
        (Method::POST, "/dead-letters/requeue"),
        (Method::DELETE, "/dead-letters?older_than=1d"),
    ] {
        assert_eq!(call(&router, method.clone(), uri).await, missing, "{method} {uri}");
    }
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
        .fetch_all(&bare.pool)
        .await
        .unwrap();
    assert_eq!(tables, Vec::<String>::new(), "nothing was created");
}

#[tokio::test]
async fn an_id_that_is_not_text_gets_a_problem_too() {
    let (_db, store) = outbox().await;
    let router = AdminRouter::new(store).allow_requeue().build();
    for (method, uri) in [
        (Method::GET, "/dead-letters/%FF"),
        (Method::POST, "/dead-letters/%FF/requeue"),
    ] {
        let (status, content_type, body) = call(&router, method, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(content_type, "application/problem+json", "{uri}");
        assert_eq!(body["status"], 400, "{uri}");
    }
}
