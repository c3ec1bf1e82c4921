//! The event hook hears of every state change and every refused call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_circuit_breaker::CircuitBreakerBuilder;
use palisade_core::BoxError;
use palisade_core::events::LayerEvent;
use tower::{Layer, ServiceExt};

/// What the hook heard, as text, in order.
fn recorder() -> (
    Arc<Mutex<Vec<String>>>,
    impl Fn(&LayerEvent<'_>) + Send + Sync + 'static,
) {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = heard.clone();
    (heard, move |event: &LayerEvent<'_>| {
        let line = match event {
            LayerEvent::BreakerTransition { name, from, to } => format!("{name}: {from} -> {to}"),
            LayerEvent::BreakerRejected { name, retry_after } => {
                format!("{name}: rejected, retry after {retry_after:?}")
            }
            other => format!("unexpected {other:?}"),
        };
        sink.lock().unwrap().push(line);
    })
}

#[tokio::test(start_paused = true)]
async fn transitions_and_rejections_reach_the_hook_in_order() {
    let (heard, hook) = recorder();
    let breaker = CircuitBreakerBuilder::consecutive("payments")
        .consecutive_failures(2)
        .open_duration(Duration::from_secs(10))
        .permitted_calls_in_half_open(1)
        .on_event(hook)
        .build()
        .unwrap();
    let failing = breaker.layer(tower::service_fn(|_: ()| async { Err::<(), BoxError>("down".into()) }));
    let healthy = breaker.layer(tower::service_fn(|_: ()| async { Ok::<(), BoxError>(()) }));
    for _ in 0..2 {
        assert!(failing.clone().oneshot(()).await.is_err());
    }
    assert!(healthy.clone().oneshot(()).await.is_err(), "open: refused");
    tokio::time::advance(Duration::from_secs(10)).await;
    healthy.clone().oneshot(()).await.unwrap();
    assert_eq!(
        *heard.lock().unwrap(),
        [
            "payments: closed -> open",
            "payments: rejected, retry after 10s",
            "payments: open -> half_open",
            "payments: half_open -> closed",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_keyed_breaker_names_the_key() {
    let (heard, hook) = recorder();
    let breaker = CircuitBreakerBuilder::consecutive("hosts")
        .consecutive_failures(1)
        .on_event(hook)
        .build_keyed(|host: &&'static str| *host)
        .unwrap();
    let svc = breaker.layer(tower::service_fn(|_: &'static str| async {
        Err::<(), BoxError>("down".into())
    }));
    assert!(svc.clone().oneshot("a.example").await.is_err());
    assert_eq!(*heard.lock().unwrap(), ["hosts[a.example]: closed -> open"]);
}
