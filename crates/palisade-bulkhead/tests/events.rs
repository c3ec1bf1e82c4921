//! The event hook hears of every refused call, with its reason.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_bulkhead::BulkheadLayer;
use palisade_core::BoxError;
use palisade_core::events::LayerEvent;
use tower::{Layer, Service, ServiceExt};

#[tokio::test(start_paused = true)]
async fn full_and_timed_out_calls_reach_the_hook() {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    let bulkhead = BulkheadLayer::builder("reports")
        .max_concurrent(1)
        .max_queued(1)
        .max_wait(Duration::from_millis(100))
        .on_event(move |event| {
            if let LayerEvent::BulkheadRejected { name, reason } = event {
                sink.lock().unwrap().push(format!("{name}: {reason}"));
            }
        })
        .build()
        .unwrap();
    let svc = bulkhead.layer(tower::service_fn(|_: ()| {
        std::future::pending::<Result<(), BoxError>>()
    }));
    // One call holds the permit, one waits in the queue, one finds it full.
    let mut holder = svc.clone();
    let held = holder.ready().await.unwrap().call(());
    let held = tokio::spawn(held);
    tokio::task::yield_now().await;
    let queued = tokio::spawn(svc.clone().oneshot(()));
    tokio::task::yield_now().await;
    assert!(svc.clone().oneshot(()).await.is_err());
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(queued.await.unwrap().is_err());
    assert_eq!(*heard.lock().unwrap(), ["reports: full", "reports: timeout"]);
    held.abort();
}
