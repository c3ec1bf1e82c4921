//! The outbox's RabbitMQ and Redis Streams publishers against live brokers, and a Redis
//! connection gone silent under a publish, through a fault proxy.

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use std::collections::HashSet;
use std::time::Duration;

use palisade_outbox::postgres::PgStore;
use palisade_outbox::{Encoding, Event, OutboxStore, Publisher, PublisherHealth, Relay, stage};
use palisade_outbox::{RabbitMqPublisher, RabbitMqRejected, ReconnectingConnection, RedisPublisher};
use palisade_tests::fault_proxy::{Action, Direction, FaultProxy};
use palisade_tests::{Postgres, RabbitMq, Redis, unique_name, upstream_of, via};
use serde_json::json;
use tokio::time::Instant;

/// An `XRANGE` entry: its id and its field/value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// A channel with the test's queue declared, and a publisher on the default exchange (so a
/// destination names a queue).
async fn queue_publisher(rabbit: &RabbitMq) -> (lapin::Channel, RabbitMqPublisher) {
    let channel = rabbit.connection.create_channel().await.unwrap();
    channel
        .queue_declare(&rabbit.queue, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let publisher = RabbitMqPublisher::connect(&rabbit.url, "").await.unwrap();
    (channel, publisher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_publishes_persistent_confirmed_messages_with_the_event_id() {
    let Some(rabbit) = RabbitMq::connect("outbox_rabbitmq").await else {
        return;
    };
    let (channel, publisher) = queue_publisher(&rabbit).await;
    let event = Event::new("OrderCreated", "Order", "o1", json!({"total": 5}))
        .with_destination(rabbit.queue.clone())
        .with_correlation_id("corr-1");
    publisher.publish(&event).await.unwrap();

    let message = channel
        .basic_get(&rabbit.queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the confirmed message is in the queue");
    let properties = &message.delivery.properties;
    assert_eq!(
        properties.message_id().as_ref().unwrap().as_str(),
        event.event_id.to_string()
    );
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    assert_eq!(properties.kind().as_ref().unwrap().as_str(), "OrderCreated");
    assert_eq!(properties.correlation_id().as_ref().unwrap().as_str(), "corr-1");
    assert_eq!(properties.content_type().as_ref().unwrap().as_str(), "application/json");
    assert_eq!(serde_json::from_slice::<Event>(&message.delivery.data).unwrap(), event);

    // Mandatory publishing: a message no queue receives fails instead of vanishing.
    let nowhere = event.clone().with_destination(unique_name("no_such_queue"));
    let error = publisher.publish(&nowhere).await.unwrap_err();
    assert!(error.is_transient());
    let rejected = std::error::Error::source(&error)
        .unwrap()
        .downcast_ref::<RabbitMqRejected>();
    assert!(matches!(rejected, Some(RabbitMqRejected::Unroutable(_))), "{error}");

    let cloud = RabbitMqPublisher::connect(&rabbit.url, "")
        .await
        .unwrap()
        .with_encoding(Encoding::CloudEvents);
    cloud.publish(&event).await.unwrap();
    let message = channel
        .basic_get(&rabbit.queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&message.delivery.data).unwrap();
    assert_eq!(body["id"], event.event_id.to_string());
    assert_eq!(
        message.delivery.properties.content_type().as_ref().unwrap().as_str(),
        "application/cloudevents+json"
    );
    rabbit.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_appends_to_the_stream_with_the_event_id_as_a_field() {
    let Some(redis) = Redis::connect("outbox_redis").await else {
        return;
    };
    let publisher = RedisPublisher::new(redis.conn.clone()).with_prefix(redis.prefix.clone());
    let first = Event::new("OrderCreated", "Order", "o1", json!({"total": 5}));
    let second = Event::new("OrderPaid", "Order", "o1", json!({})).with_version(2);
    publisher.publish(&first).await.unwrap();
    publisher.publish(&second).await.unwrap();

    let mut conn = redis.conn.clone();
    let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg(redis.key("Order"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries.len(), 2, "appended in publish order");
    for ((_, fields), event) in entries.iter().zip([&first, &second]) {
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(
            String::from_utf8(field("event_id")).unwrap(),
            event.event_id.to_string()
        );
        assert_eq!(String::from_utf8(field("event_type")).unwrap(), event.event_type);
        assert_eq!(String::from_utf8(field("aggregate_id")).unwrap(), "o1");
        assert_eq!(String::from_utf8(field("content_type")).unwrap(), "application/json");
        assert_eq!(serde_json::from_slice::<Event>(&field("data")).unwrap(), *event);
    }

    let capped = RedisPublisher::new(redis.conn.clone())
        .with_prefix(redis.prefix.clone())
        .with_max_len(1);
    capped.publish(&first.clone().with_destination("capped")).await.unwrap();
    let len: usize = redis::cmd("XLEN")
        .arg(redis.key("capped"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, 1);
    assert_eq!(redis.cleanup().await, 2);
}

/// The results of publishing `events` as one run.
async fn run_results<P: Publisher>(publisher: &P, events: &[Event]) -> Vec<Result<(), palisade_outbox::PublishError>> {
    use futures_util::StreamExt;
    publisher.publish_run(events).collect().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_pipelines_a_run_and_yields_each_confirm_in_order() {
    let Some(rabbit) = RabbitMq::connect("outbox_rabbitmq_run").await else {
        return;
    };
    let (channel, publisher) = queue_publisher(&rabbit).await;
    let event = |version: i64| {
        Event::new("OrderChanged", "Order", "o1", json!({}))
            .with_version(version)
            .with_destination(rabbit.queue.clone())
    };
    // The second is unroutable: the broker refuses it but routes the third, already sent.
    let run = [
        event(1),
        event(2).with_destination(unique_name("no_such_queue")),
        event(3),
    ];
    let results = run_results(&publisher, &run).await;
    assert_eq!(results.len(), 3, "one result per event");
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let refused = results[1].as_ref().unwrap_err();
    let rejected = std::error::Error::source(refused)
        .unwrap()
        .downcast_ref::<RabbitMqRejected>();
    assert!(matches!(rejected, Some(RabbitMqRejected::Unroutable(_))), "{refused}");
    assert!(results[2].is_ok(), "{:?}", results[2]);
    let mut versions = Vec::new();
    while let Some(message) = channel
        .basic_get(&rabbit.queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        versions.push(serde_json::from_slice::<Event>(&message.delivery.data).unwrap().version);
    }
    assert_eq!(versions, [1, 3], "sent in order; the refused one is missing");
    rabbit.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_tells_each_unroutable_message_of_concurrent_runs_apart_from_the_delivered_ones() {
    let Some(rabbit) = RabbitMq::connect("outbox_rabbitmq_returns").await else {
        return;
    };
    let (channel, publisher) = queue_publisher(&rabbit).await;
    // Four runs at once, as a relay publishes several aggregates' runs: every third message
    // has no queue. The broker returns those and confirms several messages with one
    // acknowledgement, so a return must be matched to its message by id, not by which
    // confirm it arrived with.
    let runs: Vec<Vec<Event>> = (0..4)
        .map(|run| {
            (0..60)
                .map(|i| {
                    let event = Event::new("OrderChanged", "Order", format!("o{run}"), json!({}))
                        .with_version(i + 1)
                        .with_destination(rabbit.queue.clone());
                    if i % 3 == 1 {
                        event.with_destination(unique_name("no_such_queue"))
                    } else {
                        event
                    }
                })
                .collect()
        })
        .collect();
    let results = futures_util::future::join_all(runs.iter().map(|run| run_results(&publisher, run))).await;
    let mut delivered_expected = HashSet::new();
    for (run, results) in runs.iter().zip(&results) {
        assert_eq!(results.len(), run.len(), "one result per event");
        for (event, result) in run.iter().zip(results) {
            if event.destination == rabbit.queue {
                assert!(result.is_ok(), "{} v{}: {result:?}", event.aggregate_id, event.version);
                delivered_expected.insert(event.event_id);
            } else {
                let refused = result.as_ref().unwrap_err();
                let rejected = std::error::Error::source(refused)
                    .unwrap()
                    .downcast_ref::<RabbitMqRejected>();
                assert!(matches!(rejected, Some(RabbitMqRejected::Unroutable(key)) if *key == event.destination));
            }
        }
    }
    let delivered: HashSet<_> = drain_queue(&channel, &rabbit.queue)
        .await
        .into_iter()
        .map(|(event, _)| event.event_id)
        .collect();
    assert_eq!(delivered, delivered_expected);
    rabbit.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_pipelines_a_run_and_yields_each_reply_in_order() {
    let Some(redis) = Redis::connect("outbox_redis_run").await else {
        return;
    };
    let mut conn = redis.conn.clone();
    // A plain string where the second event's stream would be: its XADD fails, the rest do not.
    redis::cmd("SET")
        .arg(redis.key("taken"))
        .arg("not a stream")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let publisher = RedisPublisher::new(redis.conn.clone()).with_prefix(redis.prefix.clone());
    let event = |version: i64| Event::new("OrderChanged", "Order", "o1", json!({})).with_version(version);
    let run = [event(1), event(2).with_destination("taken"), event(3), event(4)];
    let results = run_results(&publisher, &run).await;
    assert_eq!(results.len(), 4, "one result per event");
    assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
    let wrong_type = results[1].as_ref().unwrap_err();
    assert!(wrong_type.is_transient());
    assert!(wrong_type.to_string().contains("WRONGTYPE"), "{wrong_type}");
    let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg(redis.key("Order"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let ids: Vec<String> = entries
        .iter()
        .map(|(_, fields)| String::from_utf8(fields.iter().find(|(k, _)| k == "event_id").unwrap().1.clone()).unwrap())
        .collect();
    let expected: Vec<String> = [&run[0], &run[2], &run[3]]
        .iter()
        .map(|e| e.event_id.to_string())
        .collect();
    assert_eq!(ids, expected, "appended in run order");
    assert_eq!(redis.cleanup().await, 2);
}

/// A relay on a fresh PostgreSQL outbox, publishing through `publisher`, retrying after 1 ms.
async fn rabbit_relay(
    test: &str,
    publisher: RabbitMqPublisher,
) -> Option<(Postgres, Relay<PgStore, RabbitMqPublisher>)> {
    let pg = Postgres::connect(test).await?;
    palisade_outbox::postgres::migrate(&pg.pool).await.unwrap();
    let relay = Relay::builder(PgStore::new(pg.pool.clone()), publisher)
        .backoff(Duration::from_millis(1), Duration::from_millis(1), 1.0)
        .build()
        .unwrap();
    Some((pg, relay))
}

async fn stage_committed(pool: &sqlx::PgPool, events: &[Event]) {
    let mut tx = pool.begin().await.unwrap();
    for event in events {
        stage(&mut tx, event).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// Runs batches until nothing is left to publish, or fails after a while.
async fn drain(relay: &Relay<PgStore, RabbitMqPublisher>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let backlog = relay.store().backlog().await.unwrap();
        if backlog.pending == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the outbox drained in time: {backlog:?}");
        if let Err(error) = relay.run_batch().await {
            panic!("batch failed: {error}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every message in `queue`, in order: (the decoded event, its `correlation_id` property).
async fn drain_queue(channel: &lapin::Channel, queue: &str) -> Vec<(Event, Option<String>)> {
    let mut messages = Vec::new();
    while let Some(message) = channel
        .basic_get(queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let properties = &message.delivery.properties;
        messages.push((
            serde_json::from_slice::<Event>(&message.delivery.data).unwrap(),
            properties.correlation_id().as_ref().map(|c| c.as_str().to_owned()),
        ));
    }
    messages
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_fields_past_amqp_limits_never_break_the_connection() {
    let Some(rabbit) = RabbitMq::connect("outbox_rabbitmq_limits").await else {
        return;
    };
    let (channel, publisher) = queue_publisher(&rabbit).await;
    let Some((pg, relay)) = rabbit_relay("outbox_rabbitmq_limits", publisher).await else {
        return;
    };
    let event = |aggregate: &str, version: i64| {
        Event::new("OrderChanged", "Order", aggregate, json!({ "v": version }))
            .with_version(version)
            .with_destination(rabbit.queue.clone())
    };
    // The longest correlation id a request can bring (`OutboxContext` takes up to 255 bytes)
    // fits; a longer one set by hand is left out of the properties, and stays in the body.
    let longest = "c".repeat(255);
    let staged = [
        event("a", 1).with_correlation_id(longest.clone()),
        event("a", 2).with_correlation_id("c".repeat(256)),
        Event::new("T".repeat(256), "Order", "a", json!({}))
            .with_version(3)
            .with_destination(rabbit.queue.clone()),
        event("a", 4),
        event("b", 1).with_destination(format!("{}{}", rabbit.queue, "q".repeat(256))),
        event("c", 1),
    ];
    stage_committed(&pg.pool, &staged).await;
    drain(&relay).await;

    let received = drain_queue(&channel, &rabbit.queue).await;
    let of = |aggregate: &str| -> Vec<(i64, Option<String>)> {
        received
            .iter()
            .filter(|(e, _)| e.aggregate_id == aggregate)
            .map(|(e, correlation)| (e.version, correlation.clone()))
            .collect()
    };
    assert_eq!(of("a"), [(1, Some(longest)), (2, None), (4, None)]);
    assert_eq!(of("b"), []);
    assert_eq!(of("c"), [(1, None)]);
    let too_long = received.iter().find(|(e, _)| e.version == 2).unwrap();
    assert_eq!(too_long.0, staged[1], "the body carries the whole correlation id");

    let dead: Vec<(uuid::Uuid, Option<String>)> = relay
        .store()
        .dead_letters(10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.event.unwrap().event_id, d.last_error))
        .collect();
    assert_eq!(
        dead,
        [
            (
                staged[2].event_id,
                Some(
                    "publish failed (permanent): the event's event type cannot be sent: 256 bytes long, more than the 255 the protocol carries"
                        .to_owned()
                )
            ),
            (
                staged[4].event_id,
                Some(format!(
                    "publish failed (permanent): the event's routing key cannot be sent: {} bytes long, more than the 255 the protocol carries",
                    rabbit.queue.len() + 256
                ))
            ),
        ]
    );
    assert_eq!(relay.publisher_health(), PublisherHealth::Connected);
    pg.cleanup().await;
    rabbit.cleanup().await;
}

/// Closes, from the broker's side, every connection whose client named itself `name`.
/// Returns false (the test skips) when `rabbitmqctl` cannot be run here.
fn close_connections_named(name: &str) -> bool {
    let listed = match std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
    {
        Ok(listed) if listed.status.success() => listed,
        other => {
            assert!(
                !palisade_tests::services_required(),
                "rabbitmqctl is needed to close a connection: {other:?}"
            );
            palisade_tests::skip(format_args!("rabbitmqctl cannot list connections: {other:?}"));
            return false;
        }
    };
    let listed = String::from_utf8_lossy(&listed.stdout);
    let pids: Vec<&str> = listed
        .lines()
        .filter(|line| line.contains(name))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(pids.len(), 1, "one connection named {name}: {listed}");
    let closed = std::process::Command::new("rabbitmqctl")
        .args(["-q", "close_connection", pids[0], "closed by the test"])
        .status()
        .unwrap();
    assert!(closed.success());
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_reconnects_after_the_broker_closes_its_connection() {
    let Some(rabbit) = RabbitMq::connect("outbox_rabbitmq_reconnect").await else {
        return;
    };
    let channel = rabbit.connection.create_channel().await.unwrap();
    channel
        .queue_declare(&rabbit.queue, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let name = unique_name("publisher");
    let properties = lapin::ConnectionProperties::default().with_connection_name(name.clone().into());
    let publisher = RabbitMqPublisher::connect_with(&rabbit.url, properties, "")
        .await
        .unwrap();
    let Some((pg, relay)) = rabbit_relay("outbox_rabbitmq_reconnect", publisher).await else {
        return;
    };
    let event = |version: i64| {
        Event::new("OrderChanged", "Order", "a", json!({}))
            .with_version(version)
            .with_destination(rabbit.queue.clone())
    };
    stage_committed(&pg.pool, &[event(1)]).await;
    drain(&relay).await;
    if !close_connections_named(&name) {
        return;
    }
    let deadline = Instant::now() + WAIT;
    while relay.publisher_health() == PublisherHealth::Connected {
        assert!(Instant::now() < deadline, "the publisher saw its connection close");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stage_committed(&pg.pool, &[event(2), event(3)]).await;
    drain(&relay).await;
    assert_eq!(relay.publisher_health(), PublisherHealth::Connected);
    let versions: Vec<i64> = drain_queue(&channel, &rabbit.queue)
        .await
        .into_iter()
        .map(|(e, _)| e.version)
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    assert_eq!(relay.store().dead_letters(10).await.unwrap(), []);
    pg.cleanup().await;
    rabbit.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_reopens_a_channel_the_broker_closed() {
    let Some(rabbit) = RabbitMq::connect("outbox_rabbitmq_channel").await else {
        return;
    };
    let channel = rabbit.connection.create_channel().await.unwrap();
    let exchange = unique_name("exchange");
    let declare = || async {
        channel
            .exchange_declare(
                &exchange,
                lapin::ExchangeKind::Direct,
                lapin::options::ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_declare(&rabbit.queue, QueueDeclareOptions::default(), FieldTable::default())
            .await
            .unwrap();
        channel
            .queue_bind(
                &rabbit.queue,
                &exchange,
                "orders",
                lapin::options::QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    };
    declare().await;
    let publisher = RabbitMqPublisher::connect(&rabbit.url, exchange.clone()).await.unwrap();
    let event = |version: i64| {
        Event::new("OrderChanged", "Order", "a", json!({}))
            .with_version(version)
            .with_destination("orders")
    };
    publisher.publish(&event(1)).await.unwrap();
    // Publishing to a missing exchange is a channel error: the broker closes the channel.
    channel
        .exchange_delete(&exchange, lapin::options::ExchangeDeleteOptions::default())
        .await
        .unwrap();
    let error = publisher.publish(&event(2)).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(publisher.health(), PublisherHealth::Disconnected);
    declare().await;
    publisher.publish(&event(2)).await.unwrap();
    publisher.publish(&event(3)).await.unwrap();
    assert_eq!(publisher.health(), PublisherHealth::Connected);
    let versions: Vec<i64> = drain_queue(&channel, &rabbit.queue)
        .await
        .into_iter()
        .map(|(e, _)| e.version)
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    channel
        .exchange_delete(&exchange, lapin::options::ExchangeDeleteOptions::default())
        .await
        .unwrap();
    rabbit.cleanup().await;
}

/// A Redis user of the test's own (so its connections can be told apart and killed), and the
/// URL that connects as it.
async fn redis_user(redis: &Redis, name: &str) -> String {
    let mut admin = redis.conn.clone();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(name)
        .arg("on")
        .arg(">secret")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    redis.url.replacen("redis://", &format!("redis://{name}:secret@"), 1)
}

/// Version `version` of aggregate `o1`'s change.
fn order_changed(version: i64) -> Event {
    Event::new("OrderChanged", "Order", "o1", json!({})).with_version(version)
}

/// A publisher connected through `client`, under the test's prefix, that has published
/// [`order_changed`] version 1.
async fn redis_publisher(client: redis::Client, redis: &Redis) -> RedisPublisher<ReconnectingConnection> {
    let publisher = RedisPublisher::connect(client)
        .await
        .unwrap()
        .with_prefix(redis.prefix.clone());
    publisher.publish(&order_changed(1)).await.unwrap();
    assert_eq!(publisher.health(), PublisherHealth::Connected);
    publisher
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_reconnects_after_the_server_closes_its_connection() {
    let Some(redis) = Redis::connect("outbox_redis_reconnect").await else {
        return;
    };
    let user = unique_name("publisher");
    let url = redis_user(&redis, &user).await;
    let publisher = redis_publisher(redis::Client::open(url.as_str()).unwrap(), &redis).await;
    let event = order_changed;

    let mut admin = redis.conn.clone();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("USER")
        .arg(&user)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    // The publish that finds the connection gone fails (the relay retries it); the next one
    // goes out on a new connection.
    let lost = publisher.publish(&event(2)).await.unwrap_err();
    assert!(lost.is_transient(), "{lost}");
    assert_eq!(publisher.health(), PublisherHealth::Disconnected);
    publisher.publish(&event(2)).await.unwrap();
    publisher.publish(&event(3)).await.unwrap();
    assert_eq!(publisher.health(), PublisherHealth::Connected);

    let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg(redis.key("Order"))
        .arg("-")
        .arg("+")
        .query_async(&mut admin)
        .await
        .unwrap();
    let versions: Vec<i64> = entries
        .iter()
        .map(|(_, fields)| {
            let data = &fields.iter().find(|(k, _)| k == "data").unwrap().1;
            serde_json::from_slice::<Event>(data).unwrap().version
        })
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    redis.cleanup().await;
}

/// A connection that goes silent without closing (a failover, a network path that drops every
/// packet): the publish on it has no reply until the relay's publish timeout gives it up. The
/// publisher then reports the broker unreachable and opens a new connection for the next
/// publish, instead of sending every later publish down the silent one until the kernel gives
/// up on it, minutes later, and dead-lettering events meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_forgets_a_connection_that_went_silent_under_a_publish() {
    let Some(redis) = Redis::connect("outbox_redis_silent").await else {
        return;
    };
    let proxy = FaultProxy::start(upstream_of(&redis.url, 6379)).await.unwrap();
    let publisher = redis_publisher(redis::Client::open(via(&redis.url, &proxy)).unwrap(), &redis).await;
    let event = order_changed;
    assert_eq!(proxy.accepted(), 1);

    // The next command on that connection, and everything after it, is held.
    let silent = proxy.on(Direction::ToUpstream, b"XADD", Action::Stall);
    let publish_timeout = Duration::from_millis(300);
    let given_up = tokio::time::timeout(publish_timeout, publisher.publish(&event(2))).await;
    assert!(given_up.is_err(), "no reply on a silent connection");
    assert!(silent.has_fired());
    assert_eq!(publisher.health(), PublisherHealth::Disconnected);

    let retried = tokio::time::timeout(Duration::from_secs(10), publisher.publish(&event(2))).await;
    assert!(
        matches!(retried, Ok(Ok(()))),
        "the retry goes out on a new connection: {retried:?}"
    );
    assert_eq!(proxy.accepted(), 2);
    assert_eq!(publisher.health(), PublisherHealth::Connected);
    drop(proxy);
    redis.cleanup().await;
}
