//! The service fixtures against the live services: each connects, isolates
//! the test, and cleans up after it.

use futures_util::StreamExt;
use palisade_tests::{Kafka, Nats, Postgres, RabbitMq, Redis, unique_name};
use redis::AsyncCommands;

#[test]
fn unique_names_are_unique_and_identifier_safe() {
    let a = unique_name("Some Test-Name");
    let b = unique_name("Some Test-Name");
    assert_ne!(a, b);
    assert!(a.starts_with("palisade_some_test_name_"), "{a}");
    assert!(
        a.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "{a}"
    );
}

#[tokio::test]
async fn postgres_schemas_isolate_tests() {
    let Some(first) = Postgres::connect("pg_isolation").await else {
        return;
    };
    let Some(second) = Postgres::connect("pg_isolation").await else {
        return;
    };
    assert_ne!(first.schema, second.schema);

    for (pg, value) in [(&first, 1_i32), (&second, 2)] {
        sqlx::query("CREATE TABLE items (value int NOT NULL)")
            .execute(&pg.pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO items VALUES ($1)")
            .bind(value)
            .execute(&pg.pool)
            .await
            .unwrap();
    }
    // Same unqualified table name, each test sees only its own row, on every pooled connection.
    for _ in 0..4 {
        let a: Vec<i32> = sqlx::query_scalar("SELECT value FROM items")
            .fetch_all(&first.pool)
            .await
            .unwrap();
        let b: Vec<i32> = sqlx::query_scalar("SELECT value FROM items")
            .fetch_all(&second.pool)
            .await
            .unwrap();
        assert_eq!((a, b), (vec![1], vec![2]));
    }

    let schema = first.schema.clone();
    let url = first.url.clone();
    first.cleanup().await;
    second.cleanup().await;
    let check = sqlx::PgPool::connect(&url).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1")
        .bind(&schema)
        .fetch_one(&check)
        .await
        .unwrap();
    assert_eq!(left, 0, "cleanup drops the schema");
}

#[tokio::test]
async fn redis_prefixes_isolate_tests() {
    let Some(redis) = Redis::connect("redis_isolation").await else {
        return;
    };
    let Some(other) = Redis::connect("redis_isolation").await else {
        return;
    };
    assert_ne!(redis.prefix, other.prefix);

    let mut conn = redis.conn.clone();
    let _: () = conn.set(redis.key("a"), "1").await.unwrap();
    let _: () = conn.set(redis.key("b"), "2").await.unwrap();
    let _: () = conn.set(other.key("a"), "other").await.unwrap();
    let a: String = conn.get(redis.key("a")).await.unwrap();
    assert_eq!(a, "1");

    assert_eq!(redis.cleanup().await, 2);
    let mut conn = other.conn.clone();
    let kept: Option<String> = conn.get(other.key("a")).await.unwrap();
    assert_eq!(kept.as_deref(), Some("other"), "another test's keys are untouched");
    assert_eq!(other.cleanup().await, 1);
}

#[tokio::test]
async fn nats_subjects_deliver_within_a_test() {
    let Some(nats) = Nats::connect("nats_roundtrip").await else {
        return;
    };
    let subject = nats.subject("ping");
    let mut sub = nats.client.subscribe(subject.clone()).await.unwrap();
    nats.client.publish(subject.clone(), "hello".into()).await.unwrap();
    let msg = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.subject.as_str(), subject);
    assert_eq!(&msg.payload[..], b"hello");
    nats.cleanup().await;
}

#[tokio::test]
async fn rabbitmq_queue_roundtrip() {
    use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
    use lapin::{BasicProperties, types::FieldTable};

    let Some(amqp) = RabbitMq::connect("amqp_roundtrip").await else {
        return;
    };
    let channel = amqp.connection.create_channel().await.unwrap();
    channel
        .queue_declare(&amqp.queue, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    channel
        .basic_publish(
            "",
            &amqp.queue,
            BasicPublishOptions::default(),
            b"hello",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let got = channel
        .basic_get(&amqp.queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a message");
    assert_eq!(got.delivery.data, b"hello");
    amqp.cleanup().await;
}

#[tokio::test]
async fn kafka_topics_isolate_tests_and_are_deleted_at_cleanup() {
    let Some(first) = Kafka::connect("kafka_isolation").await else {
        return;
    };
    let Some(second) = Kafka::connect("kafka_isolation").await else {
        return;
    };
    assert_ne!(first.topic, second.topic);
    first.create_topic(&first.topic, 2).await;
    second.create_topic(&second.topic, 1).await;
    let listed = first.client.list_topics().await.unwrap();
    let partitions = |topic: &str| listed.iter().find(|t| t.name == topic).map(|t| t.partitions.len());
    assert_eq!(partitions(&first.topic), Some(2));
    assert_eq!(partitions(&second.topic), Some(1));
    assert!(first.records(&first.topic).await.is_empty());

    let (topic, client) = (first.topic.clone(), first.client.clone());
    first.cleanup(&[&topic]).await;
    let listed = client.list_topics().await.unwrap();
    assert!(listed.iter().all(|t| t.name != topic), "deleted");
    assert!(
        listed.iter().any(|t| t.name == second.topic),
        "the other test's topic stays"
    );
    let other = second.topic.clone();
    second.cleanup(&[&other]).await;
}
