//! The tracing events of the retry policy: target and field names.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_core::telemetry::{FIELD_ATTEMPT, FIELD_NAME, FIELD_REASON, FIELD_WAIT_MS, retry as names};
use palisade_retry::{Backoff, Jitter, RetryLayer};
use tower::{Layer, ServiceExt};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

type Fields = Vec<(String, String)>;

/// Records every event's target, message and fields.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, Fields)>>>);

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Vec::new();
        event.record(&mut Visitor(&mut fields));
        self.0
            .lock()
            .unwrap()
            .push((event.metadata().target().to_owned(), fields));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[tokio::test(start_paused = true)]
async fn each_retry_logs_attempt_reason_and_wait() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());

    let retry = RetryLayer::builder("inventory")
        .no_budget()
        .backoff(Backoff::constant(Duration::from_millis(250)))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let failing =
        tower::service_fn(|_: u32| async { Err::<u32, BoxError>(tower::timeout::error::Elapsed::new().into()) });
    assert!(retry.layer(failing).oneshot(1).await.is_err());

    let events = capture.0.lock().unwrap().clone();
    let retries: Vec<&Fields> = events
        .iter()
        .filter(|(target, fields)| target == names::TARGET && field(fields, "message") == Some("retrying"))
        .map(|(_, fields)| fields)
        .collect();
    assert_eq!(retries.len(), 2);
    for (retry, attempt) in retries.iter().zip(["2", "3"]) {
        assert_eq!(field(retry, FIELD_NAME), Some("inventory"));
        assert_eq!(field(retry, FIELD_ATTEMPT), Some(attempt));
        assert_eq!(field(retry, FIELD_REASON), Some("timeout"));
        assert_eq!(field(retry, FIELD_WAIT_MS), Some("250"));
    }
    let exhausted = events
        .iter()
        .filter(|(_, f)| field(f, "message") == Some("not retrying: attempts exhausted"))
        .count();
    assert_eq!(exhausted, 1);
}
