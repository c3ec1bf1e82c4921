//! The event envelope: what is staged, stored and published.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

/// One domain event, as staged in the outbox and published to the broker.
///
/// The JSON form (what [`Event::to_json`] produces and publishers send by
/// default) is the envelope consumers decode:
///
/// ```json
/// {
///   "event_id": "0193f1c2-8c4e-7b8a-9d3e-2f1a5b6c7d8e",
///   "event_type": "OrderCreated",
///   "aggregate_type": "Order",
///   "aggregate_id": "ord_123",
///   "destination": "Order",
///   "timestamp": "2026-11-21T10:30:05.123456Z",
///   "version": 1,
///   "payload": { "total_amount": 5999 },
///   "metadata": { "correlation_id": "corr_xyz789", "source": "order-service" }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id, a UUIDv7 (time-ordered); brokers use it to drop redeliveries.
    pub event_id: Uuid,
    /// What happened, e.g. `OrderCreated`.
    pub event_type: String,
    /// The kind of entity the event is about, e.g. `Order`.
    pub aggregate_type: String,
    /// Which entity; events of one aggregate are published in staging order.
    pub aggregate_id: String,
    /// Where publishers send it (NATS subject, RabbitMQ routing key, Redis stream, under the
    /// publisher's prefix). Defaults to the aggregate type.
    pub destination: String,
    /// When the event happened (UTC, microsecond precision so it survives the database).
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
    /// The aggregate's version after this event (1 unless set).
    pub version: i64,
    /// The event's data.
    pub payload: Value,
    /// Correlation, causation, source and trace context.
    #[serde(default)]
    pub metadata: Metadata,
}

/// Who caused an event and which request it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The id shared by everything one user action caused (from `X-Correlation-ID`, the trace, or generated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The id of the message or request that directly caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    /// The service that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// W3C trace context of the request that staged the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<TraceContext>,
}

/// W3C Trace Context headers, carried so consumers continue the trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// The `traceparent` header value.
    pub traceparent: String,
    /// The `tracestate` header value, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// The trace id of a `traceparent` W3C Trace Context accepts: `<version>-<32 hex>-<16
    /// hex>-<2 hex>` in lowercase hex, the version not `ff`, nothing more after version `00`
    /// (a later version may add fields), neither id all zeros.
    pub fn trace_id(&self) -> Option<&str> {
        let mut parts = self.traceparent.split('-');
        let (version, trace_id, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
        let valid = hex(version, 2)
            && version != "ff"
            && (version != "00" || parts.next().is_none())
            && hex(trace_id, 32)
            && hex(parent, 16)
            && hex(flags, 2)
            && nonzero(trace_id)
            && nonzero(parent);
        valid.then_some(trace_id)
    }
}

/// The deepest nesting of arrays and objects a staged payload may have (`[[0]]` nests 2 deep).
///
/// serde_json, which reads the payload back from the database and which most consumers decode
/// the published envelope with, refuses JSON nested 128 levels deep by default, and the
/// envelope puts the payload one level below its top. [`stage`](crate::stage()) refuses a
/// deeper payload with [`OutboxError::PayloadTooDeep`](crate::OutboxError::PayloadTooDeep).
pub const MAX_PAYLOAD_DEPTH: usize = 126;

/// Whether `value` nests no deeper than `limit`, found without recursion (so any depth is safe).
pub(crate) fn nests_within(value: &Value, limit: usize) -> bool {
    let mut pending: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((value, enclosing)) = pending.pop() {
        let depth = enclosing + 1;
        match value {
            Value::Array(_) | Value::Object(_) if depth > limit => return false,
            Value::Array(items) => pending.extend(items.iter().map(|child| (child, depth))),
            Value::Object(fields) => pending.extend(fields.values().map(|child| (child, depth))),
            _ => {}
        }
    }
    true
}

/// The current time truncated to microseconds, the precision PostgreSQL keeps.
pub(crate) fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000).unwrap_or(now)
}

impl Event {
    /// A new event with a fresh UUIDv7, the current time, version 1, the aggregate type as
    /// destination and empty metadata.
    pub fn new(
        event_type: impl Into<String>,
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        payload: Value,
    ) -> Self {
        let aggregate_type = aggregate_type.into();
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            destination: aggregate_type.clone(),
            aggregate_type,
            aggregate_id: aggregate_id.into(),
            timestamp: now_micros(),
            version: 1,
            payload,
            metadata: Metadata::default(),
        }
    }

    /// Sets the event id (the default is a fresh UUIDv7).
    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    /// Sets the aggregate version.
    pub fn with_version(mut self, version: i64) -> Self {
        self.version = version;
        self
    }

    /// Sends this event somewhere other than its aggregate type's destination.
    pub fn with_destination(mut self, destination: impl Into<String>) -> Self {
        self.destination = destination.into();
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.causation_id = Some(id.into());
        self
    }

    /// Sets the producing service.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.metadata.source = Some(source.into());
        self
    }

    /// Sets the trace context.
    pub fn with_trace_context(mut self, trace_context: TraceContext) -> Self {
        self.metadata.trace_context = Some(trace_context);
        self
    }

    /// The envelope as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing cannot fail: every map key is a string, and staging refuses a timestamp
        // RFC 3339 cannot express (the stores dead-letter such a row they find).
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The CloudEvents `source`: the metadata's source, or `/<aggregate type>`.
    pub(crate) fn cloud_event_source(&self) -> String {
        self.metadata
            .source
            .clone()
            .unwrap_or_else(|| format!("/{}", self.aggregate_type))
    }

    /// The event as a CloudEvents 1.0 event.
    pub fn to_cloud_event(&self) -> CloudEvent {
        let trace = self.metadata.trace_context.as_ref();
        CloudEvent {
            specversion: "1.0".to_owned(),
            id: self.event_id.to_string(),
            source: self.cloud_event_source(),
            event_type: self.event_type.clone(),
            subject: Some(self.aggregate_id.clone()),
            time: Some(self.timestamp),
            datacontenttype: Some("application/json".to_owned()),
            data: self.payload.clone(),
            aggregatetype: Some(self.aggregate_type.clone()),
            aggregateversion: Some(self.version),
            correlationid: self.metadata.correlation_id.clone(),
            causationid: self.metadata.causation_id.clone(),
            traceparent: trace.map(|t| t.traceparent.clone()),
            tracestate: trace.and_then(|t| t.tracestate.clone()),
        }
    }
}

/// A CloudEvents 1.0 event in its structured JSON form (`application/cloudevents+json`).
///
/// `subject` is the aggregate id; the aggregate type and version, the correlation and
/// causation ids travel as extension attributes, the trace context as the distributed
/// tracing extension.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// The event id.
    pub id: String,
    /// The event's metadata source, or `/<aggregate type>` when none was set.
    pub source: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The aggregate id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When the event happened.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub time: Option<OffsetDateTime>,
    /// `application/json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// The payload.
    pub data: Value,
    /// Extension: the aggregate type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregatetype: Option<String>,
    /// Extension: the aggregate version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregateversion: Option<i64>,
    /// Extension: the correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<String>,
    /// Extension: the causation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<String>,
    /// Distributed tracing extension: `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Distributed tracing extension: `tracestate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl CloudEvent {
    /// The structured JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// How publishers encode an event into a message.
///
/// Whatever the encoding, every publisher also puts the trace context (`traceparent`,
/// `tracestate`) and the correlation id in the broker's own headers, so a consumer continues
/// the trace without decoding the body; see [the publishers](crate#trace-context-on-the-wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    /// The palisade envelope ([`Event`] as JSON), `application/json`.
    #[default]
    Envelope,
    /// CloudEvents 1.0 structured mode: the whole [`CloudEvent`] as the body,
    /// `application/cloudevents+json`. For brokers without headers, and consumers that read
    /// only the body.
    CloudEvents,
    /// CloudEvents 1.0 binary mode: the body is the payload alone (`application/json`), and
    /// every other attribute of the [`CloudEvent`] travels in the broker's headers under the
    /// protocol binding's prefix: `ce_` for Kafka record headers (and Redis stream fields,
    /// which have no binding of their own), `ce-` for HTTP and NATS headers, `cloudEvents_`
    /// for AMQP headers. A CloudEvents SDK reads such a message as an event.
    CloudEventsBinary,
}

impl Encoding {
    /// The message body for `event`.
    pub fn encode(self, event: &Event) -> Vec<u8> {
        match self {
            Self::Envelope => event.to_json(),
            Self::CloudEvents => event.to_cloud_event().to_json(),
            // Serializing a JSON value cannot fail.
            Self::CloudEventsBinary => serde_json::to_vec(&event.payload).unwrap_or_default(),
        }
    }

    /// The body's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Envelope | Self::CloudEventsBinary => "application/json",
            Self::CloudEvents => "application/cloudevents+json",
        }
    }

    /// Whether the event's attributes travel in the broker's headers (binary mode).
    pub fn is_binary(self) -> bool {
        self == Self::CloudEventsBinary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_traceparent_w3c_trace_context_accepts_has_a_trace_id() {
        let trace = |traceparent: &str| TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: None,
        };
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let parent = "00f067aa0ba902b7";
        assert_eq!(trace(&format!("00-{id}-{parent}-01")).trace_id(), Some(id));
        // A later version may carry more fields, after the four it starts with.
        assert_eq!(trace(&format!("01-{id}-{parent}-01-more")).trace_id(), Some(id));
        for refused in [
            format!("ff-{id}-{parent}-01"),
            format!("zz-{id}-{parent}-01"),
            format!("0-{id}-{parent}-01"),
            format!("00-{id}-{parent}-01-junk"),
            format!("00-{}-{parent}-01", id.to_uppercase()),
            format!("00-{id}-0000000000000000-01"),
            format!("00-00000000000000000000000000000000-{parent}-01"),
            format!("00-{id}-{parent}-1"),
        ] {
            assert_eq!(trace(&refused).trace_id(), None, "{refused}");
        }
    }

    #[test]
    fn new_event_defaults() {
        let event = Event::new("OrderCreated", "Order", "ord_1", json!({"total": 5}));
        assert_eq!(event.event_id.get_version_num(), 7);
        assert_eq!(event.destination, "Order");
        assert_eq!(event.version, 1);
        assert_eq!(event.timestamp.nanosecond() % 1_000, 0);
        assert_eq!(event.metadata, Metadata::default());
        let later = Event::new("OrderCreated", "Order", "ord_1", json!({}));
        assert!(later.event_id > event.event_id, "UUIDv7 ids grow with time");
    }

    #[test]
    fn envelope_round_trips_through_json() {
        let event = Event::new("OrderCreated", "Order", "ord_1", json!({"total": 5}))
            .with_version(3)
            .with_destination("orders.created")
            .with_correlation_id("corr")
            .with_causation_id("cause")
            .with_source("order-service")
            .with_trace_context(TraceContext {
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                tracestate: Some("k=v".into()),
            });
        let decoded: Event = serde_json::from_slice(&event.to_json()).unwrap();
        assert_eq!(decoded, event);
        let value: Value = serde_json::from_slice(&event.to_json()).unwrap();
        assert_eq!(value["metadata"]["correlation_id"], "corr");
        assert_eq!(value["event_type"], "OrderCreated");
    }

    #[test]
    fn cloud_event_mapping() {
        let event = Event::new("OrderCreated", "Order", "ord_1", json!({"total": 5})).with_correlation_id("c");
        let ce = event.to_cloud_event();
        let value: Value = serde_json::from_slice(&ce.to_json()).unwrap();
        assert_eq!(value["specversion"], "1.0");
        assert_eq!(value["id"], event.event_id.to_string());
        assert_eq!(value["source"], "/Order");
        assert_eq!(value["type"], "OrderCreated");
        assert_eq!(value["subject"], "ord_1");
        assert_eq!(value["data"], json!({"total": 5}));
        assert_eq!(value["correlationid"], "c");
        assert!(value.get("causationid").is_none());
        let time = OffsetDateTime::parse(
            value["time"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        );
        assert_eq!(time.unwrap(), event.timestamp);
        let with_source = event.with_source("order-service").to_cloud_event();
        assert_eq!(with_source.source, "order-service");
        assert_eq!(Encoding::CloudEvents.content_type(), "application/cloudevents+json");
    }

    fn nested(depth: usize) -> Value {
        (0..depth).fold(json!(0), |inner, _| json!([inner]))
    }

    #[test]
    fn the_deepest_payload_staged_makes_an_envelope_serde_json_reads() {
        assert!(nests_within(&json!(5), 0));
        assert!(!nests_within(&json!([]), 0));
        assert!(nests_within(&json!({"a": [1, {"b": 2}]}), 3));
        assert!(!nests_within(&json!({"a": [1, {"b": {}}]}), 3));
        let deepest = Event::new("E", "A", "a", nested(MAX_PAYLOAD_DEPTH));
        assert!(nests_within(&deepest.payload, MAX_PAYLOAD_DEPTH));
        let decoded: Event = serde_json::from_slice(&deepest.to_json()).unwrap();
        assert_eq!(decoded, deepest);
        let cloud: CloudEvent = serde_json::from_slice(&deepest.to_cloud_event().to_json()).unwrap();
        assert_eq!(cloud.data, deepest.payload);
        let too_deep = Event::new("E", "A", "a", nested(MAX_PAYLOAD_DEPTH + 1));
        assert!(!nests_within(&too_deep.payload, MAX_PAYLOAD_DEPTH));
        let error = serde_json::from_slice::<Event>(&too_deep.to_json()).unwrap_err();
        assert!(error.to_string().starts_with("recursion limit exceeded"), "{error}");
    }

    #[test]
    fn trace_id_only_from_valid_traceparent() {
        let tc = |s: &str| TraceContext {
            traceparent: s.into(),
            tracestate: None,
        };
        assert_eq!(
            tc("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").trace_id(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            tc("00-00000000000000000000000000000000-00f067aa0ba902b7-01").trace_id(),
            None
        );
        assert_eq!(tc("00-4bf92f-00f067aa0ba902b7-01").trace_id(), None);
        assert_eq!(tc("garbage").trace_id(), None);
    }
}
