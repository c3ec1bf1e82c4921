//! Trace context on the wire: every publisher puts `traceparent`, `tracestate` and the
//! correlation id in the broker's own headers (NATS headers, AMQP headers and properties,
//! Redis stream fields, HTTP headers; Kafka's record headers are in `outbox_kafka.rs`), and in
//! CloudEvents binary mode every attribute under the binding's prefix, with the payload alone
//! as the body. Each is read back from the live broker, as a consumer would.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use palisade_outbox::{Encoding, Event, Publisher, TraceContext};
use palisade_outbox::{HttpPublisher, NatsPublisher, RabbitMqPublisher, RedisPublisher};
use palisade_tests::{Nats, RabbitMq, Redis};
use serde_json::json;

/// An `XRANGE` entry: its id and its field/value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn traced(event: Event) -> Event {
    event
        .with_correlation_id("corr-7")
        .with_causation_id("req-3")
        .with_trace_context(TraceContext {
            traceparent: TRACEPARENT.to_owned(),
            tracestate: Some("vendor=1".to_owned()),
        })
        .with_version(4)
}

/// The CloudEvents attributes binary mode puts in headers, by attribute name.
fn attributes(event: &Event) -> Vec<(&'static str, String)> {
    vec![
        ("specversion", "1.0".to_owned()),
        ("id", event.event_id.to_string()),
        ("source", "/Order".to_owned()),
        ("type", event.event_type.clone()),
        ("subject", event.aggregate_id.clone()),
        ("aggregatetype", "Order".to_owned()),
        ("aggregateversion", "4".to_owned()),
        ("correlationid", "corr-7".to_owned()),
        ("causationid", "req-3".to_owned()),
        ("traceparent", TRACEPARENT.to_owned()),
        ("tracestate", "vendor=1".to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_messages_carry_the_trace_context_and_binary_mode_attributes_in_headers() {
    let Some(nats) = Nats::connect("trace_nats").await else {
        return;
    };
    let js = jetstream::new(nats.client.clone());
    js.create_stream(stream::Config {
        name: nats.stream.clone(),
        subjects: vec![format!("{}>", nats.prefix)],
        storage: stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
    let event = traced(Event::new("OrderCreated", "Order", "o1", json!({ "total": 5 })));
    let envelope = NatsPublisher::new(nats.client.clone()).with_prefix(nats.prefix.clone());
    envelope.publish(&event).await.unwrap();
    let binary = envelope.clone().with_encoding(Encoding::CloudEventsBinary);
    let second = traced(Event::new("OrderPaid", "Order", "o1", json!({ "paid": true })));
    binary.publish(&second).await.unwrap();

    let stream = js.get_stream(&nats.stream).await.unwrap();
    let message = stream.get_raw_message(1).await.unwrap();
    let header = |message: &async_nats::jetstream::message::StreamMessage, name: &str| {
        message.headers.get(name).map(|v| v.as_str().to_owned())
    };
    assert_eq!(header(&message, "traceparent").as_deref(), Some(TRACEPARENT));
    assert_eq!(header(&message, "tracestate").as_deref(), Some("vendor=1"));
    assert_eq!(header(&message, "X-Correlation-ID").as_deref(), Some("corr-7"));
    assert_eq!(header(&message, "ce-id"), None);
    assert_eq!(serde_json::from_slice::<Event>(&message.payload).unwrap(), event);

    let message = stream.get_raw_message(2).await.unwrap();
    assert_eq!(&message.payload[..], br#"{"paid":true}"#);
    assert_eq!(header(&message, "Content-Type").as_deref(), Some("application/json"));
    assert_eq!(header(&message, "traceparent").as_deref(), Some(TRACEPARENT));
    for (attribute, value) in attributes(&second) {
        assert_eq!(header(&message, &format!("ce-{attribute}")), Some(value), "{attribute}");
    }

    // A header NATS cannot carry: an optional one is left out, a required one fails the event.
    let broken = Event::new("OrderShipped", "Order", "o1", json!({})).with_trace_context(TraceContext {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nX-Injected: 1".to_owned(),
        tracestate: None,
    });
    envelope.publish(&broken).await.unwrap();
    let message = stream.get_raw_message(3).await.unwrap();
    assert_eq!(header(&message, "traceparent"), None);
    assert_eq!(header(&message, "X-Injected"), None);
    let error = binary
        .publish(&broken.clone().with_source("orders\nservice"))
        .await
        .unwrap_err();
    assert!(!error.is_transient(), "{error}");
    assert!(error.to_string().contains("ce-source"), "{error}");
    nats.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_messages_carry_the_trace_context_and_binary_mode_attributes_in_headers() {
    let Some(rabbit) = RabbitMq::connect("trace_rabbitmq").await else {
        return;
    };
    let channel = rabbit.connection.create_channel().await.unwrap();
    channel
        .queue_declare(&rabbit.queue, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let envelope = RabbitMqPublisher::connect(&rabbit.url, "").await.unwrap();
    let event = traced(Event::new("OrderCreated", "Order", "o1", json!({}))).with_destination(rabbit.queue.clone());
    envelope.publish(&event).await.unwrap();
    let binary = RabbitMqPublisher::connect(&rabbit.url, "")
        .await
        .unwrap()
        .with_encoding(Encoding::CloudEventsBinary);
    let second =
        traced(Event::new("OrderPaid", "Order", "o1", json!({ "paid": true }))).with_destination(rabbit.queue.clone());
    binary.publish(&second).await.unwrap();

    let mut messages = Vec::new();
    while let Some(message) = channel
        .basic_get(&rabbit.queue, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        messages.push(message.delivery);
    }
    assert_eq!(messages.len(), 2);
    let headers = |delivery: &lapin::message::Delivery| -> HashMap<String, String> {
        let table = delivery.properties.headers().clone().unwrap_or_default();
        table
            .inner()
            .iter()
            .map(|(name, value)| {
                let AMQPValue::LongString(value) = value else {
                    panic!("{name} is a long string")
                };
                (name.to_string(), value.to_string())
            })
            .collect()
    };
    let first = headers(&messages[0]);
    assert_eq!(first.get("traceparent").map(String::as_str), Some(TRACEPARENT));
    assert_eq!(first.get("tracestate").map(String::as_str), Some("vendor=1"));
    assert!(!first.contains_key("cloudEvents_id"));
    assert_eq!(
        messages[0].properties.correlation_id().as_ref().unwrap().as_str(),
        "corr-7"
    );

    let second_headers = headers(&messages[1]);
    assert_eq!(&messages[1].data[..], br#"{"paid":true}"#);
    assert_eq!(
        messages[1].properties.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(second_headers.get("traceparent").map(String::as_str), Some(TRACEPARENT));
    for (attribute, value) in attributes(&second) {
        assert_eq!(
            second_headers.get(&format!("cloudEvents_{attribute}")),
            Some(&value),
            "{attribute}"
        );
    }
    rabbit.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_entries_carry_the_trace_context_and_binary_mode_attributes_in_fields() {
    let Some(redis) = Redis::connect("trace_redis").await else {
        return;
    };
    let event = traced(Event::new("OrderCreated", "Order", "o1", json!({})));
    let envelope = RedisPublisher::new(redis.conn.clone()).with_prefix(redis.prefix.clone());
    envelope.publish(&event).await.unwrap();
    let binary = envelope.clone().with_encoding(Encoding::CloudEventsBinary);
    let second = traced(Event::new("OrderPaid", "Order", "o1", json!({ "paid": true })));
    binary.publish(&second).await.unwrap();

    let mut conn = redis.conn.clone();
    let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg(redis.key("Order"))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries.len(), 2);
    let fields = |entry: &StreamEntry| -> HashMap<String, String> {
        entry
            .1
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8(v.clone()).unwrap()))
            .collect()
    };
    let first = fields(&entries[0]);
    assert_eq!(first.get("traceparent").map(String::as_str), Some(TRACEPARENT));
    assert_eq!(first.get("tracestate").map(String::as_str), Some("vendor=1"));
    assert_eq!(first.get("correlation_id").map(String::as_str), Some("corr-7"));
    assert!(!first.contains_key("ce_id"));
    let second_fields = fields(&entries[1]);
    assert_eq!(second_fields.get("data").map(String::as_str), Some(r#"{"paid":true}"#));
    assert_eq!(
        second_fields.get("content_type").map(String::as_str),
        Some("application/json")
    );
    for (attribute, value) in attributes(&second) {
        assert_eq!(
            second_fields.get(&format!("ce_{attribute}")),
            Some(&value),
            "{attribute}"
        );
    }
    redis.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_carry_the_trace_context_and_binary_mode_attributes_in_headers() {
    use axum::http::HeaderMap;
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel::<(HeaderMap, axum::body::Bytes)>();
    let app = axum::Router::new().route(
        "/hooks/{destination}",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let _ = sender.send((headers, body));
            async { "ok" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let signer = palisade_webhook::Signer::builder(palisade_webhook::Scheme::StandardWebhooks)
        .secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .build()
        .unwrap();
    let base = format!("http://{addr}/hooks");
    let envelope = HttpPublisher::builder(signer.clone()).base_url(&base).build().unwrap();
    let binary = HttpPublisher::builder(signer)
        .base_url(&base)
        .encoding(Encoding::CloudEventsBinary)
        .build()
        .unwrap();
    let event = traced(Event::new("OrderCreated", "Order", "o1", json!({})));
    envelope.publish(&event).await.unwrap();
    let second = traced(Event::new("OrderPaid", "Order", "o1", json!({ "paid": true })));
    binary.publish(&second).await.unwrap();

    let wait = Duration::from_secs(10);
    let header = |headers: &HeaderMap, name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    let (headers, body) = tokio::time::timeout(wait, received.recv()).await.unwrap().unwrap();
    assert_eq!(header(&headers, "traceparent").as_deref(), Some(TRACEPARENT));
    assert_eq!(header(&headers, "tracestate").as_deref(), Some("vendor=1"));
    assert_eq!(header(&headers, "x-correlation-id").as_deref(), Some("corr-7"));
    assert_eq!(header(&headers, "ce-id"), None);
    assert_eq!(serde_json::from_slice::<Event>(&body).unwrap(), event);

    let (headers, body) = tokio::time::timeout(wait, received.recv()).await.unwrap().unwrap();
    assert_eq!(&body[..], br#"{"paid":true}"#);
    assert_eq!(header(&headers, "content-type").as_deref(), Some("application/json"));
    assert_eq!(header(&headers, "traceparent").as_deref(), Some(TRACEPARENT));
    for (attribute, value) in attributes(&second) {
        assert_eq!(header(&headers, &format!("ce-{attribute}")), Some(value), "{attribute}");
    }
    server.abort();
}
