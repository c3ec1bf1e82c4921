//! What every publisher puts in the broker's own headers besides the body: the trace context,
//! the correlation id and, in CloudEvents binary mode, the event's attributes.

use std::borrow::Cow;

use palisade_core::telemetry::outbox as names;
use time::format_description::well_known::Rfc3339;

use crate::envelope::{Encoding, Event};

/// How one broker's headers spell what palisade puts in them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spelling {
    /// The prefix of CloudEvents attributes in binary mode (`ce_`, `ce-`, `cloudEvents_`).
    pub(crate) ce_prefix: &'static str,
    /// The header for the correlation id, where the protocol has no property for it.
    pub(crate) correlation_id: Option<&'static str>,
}

/// One header of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header<'a> {
    pub(crate) name: Cow<'static, str>,
    pub(crate) value: Cow<'a, str>,
    /// A required CloudEvents attribute in binary mode (`specversion`, `id`, `source`, `type`):
    /// an event whose required attribute the broker cannot carry is not sent. Any other header
    /// the broker cannot carry is left out with a warning ([`left_out`]).
    #[cfg_attr(
        not(any(feature = "nats", feature = "rabbitmq", feature = "http")),
        allow(dead_code, reason = "Kafka and Redis carry every header")
    )]
    pub(crate) required: bool,
}

impl<'a> Header<'a> {
    fn new(name: impl Into<Cow<'static, str>>, value: impl Into<Cow<'a, str>>, required: bool) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            required,
        }
    }
}

/// The headers of `event`'s message, required ones first: in binary mode the CloudEvents
/// attributes other than `data` and `datacontenttype` (which the body and the content type
/// carry) under the binding's prefix; in every mode `traceparent`, `tracestate` (the W3C
/// names tracing libraries read) and the correlation id.
pub(crate) fn headers(event: &Event, encoding: Encoding, spelling: Spelling) -> Vec<Header<'_>> {
    let trace = event.metadata.trace_context.as_ref();
    let mut headers = Vec::with_capacity(16);
    let ce = |attribute: &str| Cow::Owned(format!("{}{attribute}", spelling.ce_prefix));
    if encoding.is_binary() {
        headers.push(Header::new(ce("specversion"), "1.0", true));
        headers.push(Header::new(ce("id"), event.event_id.to_string(), true));
        headers.push(Header::new(ce("source"), event.cloud_event_source(), true));
        headers.push(Header::new(ce("type"), event.event_type.as_str(), true));
    }
    if let Some(trace) = trace {
        headers.push(Header::new("traceparent", trace.traceparent.as_str(), false));
        if let Some(state) = &trace.tracestate {
            headers.push(Header::new("tracestate", state.as_str(), false));
        }
    }
    if let (Some(name), Some(id)) = (spelling.correlation_id, &event.metadata.correlation_id) {
        headers.push(Header::new(name, id.as_str(), false));
    }
    if encoding.is_binary() {
        headers.push(Header::new(ce("subject"), event.aggregate_id.as_str(), false));
        if let Ok(time) = event.timestamp.format(&Rfc3339) {
            headers.push(Header::new(ce("time"), time, false));
        }
        headers.push(Header::new(ce("aggregatetype"), event.aggregate_type.as_str(), false));
        headers.push(Header::new(ce("aggregateversion"), event.version.to_string(), false));
        let metadata = &event.metadata;
        for (attribute, value) in [
            ("correlationid", metadata.correlation_id.as_deref()),
            ("causationid", metadata.causation_id.as_deref()),
            ("traceparent", trace.map(|t| t.traceparent.as_str())),
            ("tracestate", trace.and_then(|t| t.tracestate.as_deref())),
        ] {
            if let Some(value) = value {
                headers.push(Header::new(ce(attribute), value, false));
            }
        }
    }
    headers
}

/// Warns that an optional header of `event` is left out of its message, and why.
#[cfg_attr(
    not(any(feature = "nats", feature = "rabbitmq", feature = "http")),
    allow(dead_code, reason = "Kafka and Redis carry every header")
)]
pub(crate) fn left_out(event: &Event, field: &str, reason: &str) {
    tracing::warn!(
        target: names::TARGET, event_id = %event.event_id, field, reason,
        "outbox event field left out of the message headers"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::TraceContext;
    use serde_json::json;

    const KAFKA: Spelling = Spelling {
        ce_prefix: "ce_",
        correlation_id: Some("correlation_id"),
    };

    fn pairs(headers: &[Header<'_>]) -> Vec<(String, String, bool)> {
        headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_string(), h.required))
            .collect()
    }

    #[test]
    fn every_encoding_carries_the_trace_context_and_correlation_id() {
        let event = Event::new("OrderCreated", "Order", "o1", json!({}))
            .with_correlation_id("corr-1")
            .with_trace_context(TraceContext {
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                tracestate: Some("k=v".into()),
            });
        for encoding in [Encoding::Envelope, Encoding::CloudEvents] {
            assert_eq!(
                pairs(&headers(&event, encoding, KAFKA)),
                [
                    (
                        "traceparent".into(),
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                        false
                    ),
                    ("tracestate".into(), "k=v".into(), false),
                    ("correlation_id".into(), "corr-1".into(), false),
                ]
            );
        }
        let amqp = Spelling {
            ce_prefix: "cloudEvents_",
            correlation_id: None,
        };
        let bare = Event::new("OrderCreated", "Order", "o1", json!({}));
        assert!(headers(&bare, Encoding::Envelope, amqp).is_empty());
        assert!(
            headers(&event.clone(), Encoding::Envelope, amqp)
                .iter()
                .all(|h| h.name != "correlation_id")
        );
    }

    #[test]
    fn binary_mode_carries_every_attribute_but_data_required_ones_first() {
        let event = Event::new("OrderCreated", "Order", "o1", json!({"a": 1}))
            .with_version(3)
            .with_correlation_id("corr-1")
            .with_causation_id("cause-1")
            .with_trace_context(TraceContext {
                traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                tracestate: None,
            });
        let id = event.event_id.to_string();
        let time = event.timestamp.format(&Rfc3339).unwrap();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned();
        let expected: Vec<(String, String, bool)> = [
            ("ce_specversion", "1.0", true),
            ("ce_id", id.as_str(), true),
            ("ce_source", "/Order", true),
            ("ce_type", "OrderCreated", true),
            ("traceparent", tp.as_str(), false),
            ("correlation_id", "corr-1", false),
            ("ce_subject", "o1", false),
            ("ce_time", time.as_str(), false),
            ("ce_aggregatetype", "Order", false),
            ("ce_aggregateversion", "3", false),
            ("ce_correlationid", "corr-1", false),
            ("ce_causationid", "cause-1", false),
            ("ce_traceparent", tp.as_str(), false),
        ]
        .iter()
        .map(|(n, v, r)| ((*n).to_owned(), (*v).to_owned(), *r))
        .collect();
        assert_eq!(pairs(&headers(&event, Encoding::CloudEventsBinary, KAFKA)), expected);
        assert_eq!(Encoding::CloudEventsBinary.encode(&event), br#"{"a":1}"#);
        assert_eq!(Encoding::CloudEventsBinary.content_type(), "application/json");
    }
}
