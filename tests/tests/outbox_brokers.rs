//! The outbox's RabbitMQ and Redis Streams publishers against live brokers.

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use palisade_outbox::publisher::{RabbitMqPublisher, RabbitMqRejected, RedisPublisher};
use palisade_outbox::{Encoding, Event, Publisher};
use palisade_tests::{RabbitMq, Redis, unique_name};
use serde_json::json;

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
    let publisher = RabbitMqPublisher::new(channel.clone(), "").await.unwrap();
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

    let cloud = RabbitMqPublisher::new(channel.clone(), "")
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
    assert!(results[0].is_ok());
    let refused = results[1].as_ref().unwrap_err();
    let rejected = std::error::Error::source(refused)
        .unwrap()
        .downcast_ref::<RabbitMqRejected>();
    assert!(matches!(rejected, Some(RabbitMqRejected::Unroutable(_))), "{refused}");
    assert!(results[2].is_ok());
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
