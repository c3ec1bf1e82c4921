//! The outbox context a request carries: the ids its events are stamped with.

use std::sync::Arc;

use http::HeaderMap;
use serde_json::Value;
use uuid::Uuid;

use crate::envelope::{Event, TraceContext};

/// The header a caller's correlation id is read from.
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";
/// The header a request id (used as the causation id) is read from.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest correlation or request id taken from a header; longer ones are ignored. Every
/// publisher carries ids of this length in its message properties (AMQP short strings hold
/// 255 bytes).
pub const MAX_ID_LEN: usize = 255;

/// The longest `traceparent` or `tracestate` taken from a header (they travel in the body only).
const MAX_TRACE_HEADER_LEN: usize = 256;

/// Put in the request extensions by [`PublishHook`](crate::PublishHook): the correlation id,
/// causation id, trace context and source that events staged while handling the request carry.
///
/// The correlation id is the request's `X-Correlation-ID`, else the trace id of its
/// `traceparent`, else a fresh UUIDv7. The causation id is the request's `X-Request-ID`, if any.
/// An id longer than [`MAX_ID_LEN`] (255 bytes, what every publisher's message properties
/// carry) is ignored, as if the header were missing.
///
/// In an axum handler: `Extension(ctx): Extension<OutboxContext>`, then
/// `ctx.event("OrderCreated", "Order", &id, payload)` and [`stage`](crate::stage()) it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxContext {
    correlation_id: String,
    causation_id: Option<String>,
    trace_context: Option<TraceContext>,
    source: Option<Arc<str>>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str, max_len: usize) -> Option<&'a str> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    (!value.is_empty() && value.len() <= max_len).then_some(value)
}

impl OutboxContext {
    /// The context for a request with `headers`, naming `source` as the producing service.
    pub fn from_headers(headers: &HeaderMap, source: Option<Arc<str>>) -> Self {
        let trace_context = header(headers, "traceparent", MAX_TRACE_HEADER_LEN).map(|traceparent| TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: header(headers, "tracestate", MAX_TRACE_HEADER_LEN).map(str::to_owned),
        });
        let correlation_id = header(headers, CORRELATION_ID_HEADER, MAX_ID_LEN)
            .map(str::to_owned)
            .or_else(|| {
                trace_context
                    .as_ref()
                    .and_then(TraceContext::trace_id)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| Uuid::now_v7().to_string());
        Self {
            correlation_id,
            causation_id: header(headers, REQUEST_ID_HEADER, MAX_ID_LEN).map(str::to_owned),
            trace_context: trace_context.filter(|t| t.trace_id().is_some()),
            source,
        }
    }

    /// The context for events staged in reaction to `event` (by a consumer of it): `event`'s
    /// correlation id (or, without one, its id) and trace context, and its id as the
    /// causation id, naming `source` as the producing service.
    pub fn caused_by(event: &Event, source: Option<Arc<str>>) -> Self {
        let event_id = event.event_id.to_string();
        Self {
            correlation_id: event
                .metadata
                .correlation_id
                .clone()
                .unwrap_or_else(|| event_id.clone()),
            causation_id: Some(event_id),
            trace_context: event.metadata.trace_context.clone(),
            source,
        }
    }

    /// The correlation id.
    pub fn correlation_id(&self) -> &str {
        &self.correlation_id
    }

    /// The causation id (the request's `X-Request-ID`).
    pub fn causation_id(&self) -> Option<&str> {
        self.causation_id.as_deref()
    }

    /// The request's W3C trace context, when it carried a valid `traceparent`.
    pub fn trace_context(&self) -> Option<&TraceContext> {
        self.trace_context.as_ref()
    }

    /// A new event carrying this request's ids (see [`Event::new`]).
    pub fn event(
        &self,
        event_type: impl Into<String>,
        aggregate_type: impl Into<String>,
        aggregate_id: impl Into<String>,
        payload: Value,
    ) -> Event {
        self.stamp(Event::new(event_type, aggregate_type, aggregate_id, payload))
    }

    /// Fills the ids `event` does not already carry from this request.
    pub fn stamp(&self, mut event: Event) -> Event {
        let metadata = &mut event.metadata;
        metadata
            .correlation_id
            .get_or_insert_with(|| self.correlation_id.clone());
        if metadata.causation_id.is_none() {
            metadata.causation_id.clone_from(&self.causation_id);
        }
        if metadata.trace_context.is_none() {
            metadata.trace_context.clone_from(&self.trace_context);
        }
        if metadata.source.is_none() {
            metadata.source = self.source.as_deref().map(str::to_owned);
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn correlation_id_from_header_then_trace_then_generated() {
        let ctx = OutboxContext::from_headers(
            &headers(&[("x-correlation-id", "corr-1"), ("traceparent", TRACEPARENT)]),
            None,
        );
        assert_eq!(ctx.correlation_id(), "corr-1");
        assert_eq!(ctx.trace_context().unwrap().traceparent, TRACEPARENT);

        let ctx = OutboxContext::from_headers(&headers(&[("traceparent", TRACEPARENT)]), None);
        assert_eq!(ctx.correlation_id(), "4bf92f3577b34da6a3ce929d0e0e4736");

        let ctx = OutboxContext::from_headers(&headers(&[("traceparent", "junk"), ("x-correlation-id", " ")]), None);
        assert_eq!(Uuid::parse_str(ctx.correlation_id()).unwrap().get_version_num(), 7);
        assert_eq!(ctx.trace_context(), None, "an invalid traceparent is not carried");

        let longest = "x".repeat(255);
        let ctx = OutboxContext::from_headers(
            &headers(&[("x-correlation-id", &longest), ("x-request-id", &longest)]),
            None,
        );
        assert_eq!(
            (ctx.correlation_id(), ctx.causation_id()),
            (longest.as_str(), Some(longest.as_str()))
        );
        let long = "x".repeat(256);
        let ctx = OutboxContext::from_headers(&headers(&[("x-correlation-id", &long), ("x-request-id", &long)]), None);
        assert_eq!(Uuid::parse_str(ctx.correlation_id()).unwrap().get_version_num(), 7);
        assert_eq!(ctx.causation_id(), None);
    }

    #[test]
    fn a_reaction_carries_its_cause_s_ids() {
        let ctx = OutboxContext::from_headers(
            &headers(&[
                (CORRELATION_ID_HEADER, "corr-1"),
                ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ]),
            None,
        );
        let cause = ctx.event("ChargeQueued", "Order", "ord_1", serde_json::json!({}));
        let reaction = OutboxContext::caused_by(&cause, Some(Arc::from("payments-worker")));
        assert_eq!(reaction.correlation_id(), "corr-1");
        assert_eq!(reaction.causation_id(), Some(cause.event_id.to_string().as_str()));
        assert_eq!(reaction.trace_context(), cause.metadata.trace_context.as_ref());
        let event = reaction.event("OrderCreated", "Order", "ord_1", serde_json::json!({}));
        assert_eq!(event.metadata.source.as_deref(), Some("payments-worker"));

        // A cause without a correlation id starts one: its own id.
        let bare = Event::new("ChargeQueued", "Order", "ord_2", serde_json::json!({}));
        let reaction = OutboxContext::caused_by(&bare, None);
        assert_eq!(reaction.correlation_id(), bare.event_id.to_string());
        assert_eq!(reaction.causation_id(), Some(bare.event_id.to_string().as_str()));
        assert_eq!(reaction.trace_context(), None);
    }

    #[test]
    fn events_are_stamped_without_overriding_their_own_ids() {
        let ctx = OutboxContext::from_headers(
            &headers(&[
                ("x-correlation-id", "corr"),
                ("x-request-id", "req-9"),
                ("traceparent", TRACEPARENT),
            ]),
            Some("orders".into()),
        );
        let event = ctx.event("OrderCreated", "Order", "o1", json!({}));
        assert_eq!(event.metadata.correlation_id.as_deref(), Some("corr"));
        assert_eq!(event.metadata.causation_id.as_deref(), Some("req-9"));
        assert_eq!(event.metadata.source.as_deref(), Some("orders"));
        assert_eq!(event.metadata.trace_context.as_ref().unwrap().traceparent, TRACEPARENT);
        let own = ctx.stamp(Event::new("X", "Order", "o1", json!({})).with_correlation_id("mine"));
        assert_eq!(own.metadata.correlation_id.as_deref(), Some("mine"));
        assert_eq!(own.metadata.causation_id.as_deref(), Some("req-9"));
    }
}
