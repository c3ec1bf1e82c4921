//! One `palisade.retry.attempt` span per attempt, closed when the attempt's
//! result arrives, and each attempt's duration in the histogram.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use palisade_core::BoxError;
use palisade_core::telemetry::{retry as names, spans};
use palisade_retry::{Backoff, Jitter, RetryLayer};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[derive(Debug, Clone)]
struct SpanRecord {
    name: &'static str,
    target: String,
    fields: HashMap<String, String>,
    opened: Instant,
    closed: Option<Instant>,
    refs: usize,
}

/// Records spans: their fields, when they opened and when their last handle
/// was dropped.
#[derive(Clone, Default)]
struct Spans {
    next: Arc<AtomicU64>,
    spans: Arc<Mutex<HashMap<u64, SpanRecord>>>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Spans {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.spans.lock().unwrap().insert(
            id,
            SpanRecord {
                name: attrs.metadata().name(),
                target: attrs.metadata().target().to_owned(),
                fields,
                opened: Instant::now(),
                closed: None,
                refs: 1,
            },
        );
        Id::from_u64(id)
    }
    fn record(&self, id: &Id, values: &Record<'_>) {
        if let Some(span) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
    fn clone_span(&self, id: &Id) -> Id {
        if let Some(span) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            span.refs += 1;
        }
        id.clone()
    }
    fn try_close(&self, id: Id) -> bool {
        let mut spans = self.spans.lock().unwrap();
        let Some(span) = spans.get_mut(&id.into_u64()) else {
            return false;
        };
        span.refs -= 1;
        if span.refs == 0 {
            span.closed = Some(Instant::now());
            return true;
        }
        false
    }
}

#[tokio::test(start_paused = true)]
async fn each_attempt_has_a_span_and_a_duration() {
    let spans = Spans::default();
    let _tracing = tracing::subscriber::set_default(spans.clone());
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _metrics = metrics::set_default_local_recorder(&recorder);

    let retry = RetryLayer::builder("inventory")
        .no_budget()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(250)))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    // Each attempt takes 100 ms; the first two time out, the third succeeds.
    let calls = Arc::new(AtomicU64::new(0));
    let svc = retry.layer(tower::service_fn(move |_: u32| {
        let n = calls.fetch_add(1, Ordering::Relaxed);
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if n < 2 {
                Err::<u32, BoxError>(tower::timeout::error::Elapsed::new().into())
            } else {
                Ok(7)
            }
        }
    }));
    let start = Instant::now();
    // The service is kept alive: its own policy must not hold an attempt's span open.
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 7);

    let mut attempts: Vec<SpanRecord> = spans
        .spans
        .lock()
        .unwrap()
        .values()
        .filter(|s| s.name == spans::RETRY_ATTEMPT)
        .cloned()
        .collect();
    attempts.sort_by_key(|s| s.opened);
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    for (i, span) in attempts.iter().enumerate() {
        assert_eq!(span.target, names::TARGET);
        assert_eq!(span.fields["name"], "inventory");
        assert_eq!(span.fields["attempt"], (i + 1).to_string());
        assert_eq!(span.fields["retried"], if i < 2 { "true" } else { "false" });
        // Attempt i starts after i attempts of 100 ms and i waits of 250 ms,
        // and its span closes when its result arrives, 100 ms later.
        let opened = Duration::from_millis(350 * i as u64);
        assert_eq!(span.opened - start, opened, "attempt {}", i + 1);
        assert_eq!(
            span.closed.map(|c| c - start),
            Some(opened + Duration::from_millis(100)),
            "attempt {}",
            i + 1
        );
    }
    drop(svc);

    let histogram = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(key, _, _, _)| key.key().name() == names::ATTEMPT_DURATION_SECONDS)
        .map(|(key, _, _, value)| {
            (
                key.key()
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect::<Vec<_>>(),
                value,
            )
        });
    match histogram {
        Some((labels, DebugValue::Histogram(values))) => {
            assert_eq!(labels, ["name=inventory"]);
            assert_eq!(
                values.iter().map(|v| v.into_inner()).collect::<Vec<_>>(),
                [0.1, 0.1, 0.1]
            );
        }
        other => panic!("no attempt histogram: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_that_cannot_be_retried_leaves_no_span_open() {
    // tower hands the policy no result for a request it kept no copy of (an
    // unsafe method): a span opened for it would stay open, held by the
    // service's policy, until the service's next request.
    let spans = Spans::default();
    let _tracing = tracing::subscriber::set_default(spans.clone());
    let retry = palisade_retry::HttpRetryLayer::builder("orders").build().unwrap();
    let mut svc = retry.layer(tower::service_fn(
        |_: http::Request<palisade_retry::ReplayBody<http_body_util::Full<bytes::Bytes>>>| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, BoxError>(http::Response::new(()))
        },
    ));
    for method in [http::Method::POST, http::Method::GET] {
        let req = http::Request::builder()
            .method(method.clone())
            .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
            .unwrap();
        tower::Service::call(svc.ready().await.unwrap(), req).await.unwrap();
        // The service lives on, ready for its next request.
        let open: Vec<_> = spans
            .spans
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.name == spans::RETRY_ATTEMPT && s.closed.is_none())
            .cloned()
            .collect();
        assert!(open.is_empty(), "{method}: {open:?}");
    }
    let attempts: Vec<_> = spans
        .spans
        .lock()
        .unwrap()
        .values()
        .filter(|s| s.name == spans::RETRY_ATTEMPT)
        .map(|s| s.closed.map(|c| c - s.opened))
        .collect();
    assert_eq!(attempts, [Some(Duration::from_millis(100))], "the GET's attempt only");
}
