//! Keyed mode: one breaker per key, isolated, with a bounded number of keys.

mod common;

use std::future::Future;
use std::time::Duration;

use common::{Call, Downstream, assert_rejected};
use palisade_circuit_breaker::{CircuitBreakerBuilder, KeyedCircuitBreakerHandle, State};
use palisade_core::BoxError;
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt};

/// Requests carry their key: a host name and what the downstream does.
#[derive(Debug, Clone)]
struct Req(&'static str, Call);

#[derive(Clone, Default)]
struct ByHost(Downstream);

impl Service<Req> for ByHost {
    type Response = &'static str;
    type Error = BoxError;
    type Future = <Downstream as Service<Call>>::Future;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.0.call(req.1)
    }
}

async fn send<S>(svc: &mut S, host: &'static str, c: Call) -> Result<&'static str, BoxError>
where
    S: Service<Req, Response = &'static str, Error = BoxError>,
{
    svc.ready().await?.call(Req(host, c)).await
}

#[tokio::test(start_paused = true)]
async fn each_key_has_its_own_breaker() {
    let layer = CircuitBreakerBuilder::consecutive("hosts")
        .consecutive_failures(2)
        .build_keyed(|req: &Req| req.0.to_owned())
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(ByHost::default());
    send(&mut svc, "a.example", Call::Fail).await.unwrap_err();
    send(&mut svc, "a.example", Call::Fail).await.unwrap_err();
    let rejected = send(&mut svc, "a.example", Call::Ok).await;
    assert_rejected(&rejected, Duration::from_secs(30));
    let open = common::rejection(&rejected).unwrap();
    assert_eq!(open.name(), "hosts[a.example]");
    // The other host is untouched.
    send(&mut svc, "b.example", Call::Ok).await.unwrap();
    assert_eq!(handle.get(&"a.example".to_owned()).unwrap().state(), State::Open);
    assert_eq!(handle.get(&"b.example".to_owned()).unwrap().state(), State::Closed);
    assert_eq!(handle.len(), 2);
    // A clone of the service shares the breakers.
    let mut clone = svc.clone();
    assert!(common::rejection(&send(&mut clone, "a.example", Call::Ok).await).is_some());
}

#[tokio::test(start_paused = true)]
async fn keys_are_bounded_and_idle_ones_evicted() {
    let layer = CircuitBreakerBuilder::consecutive("bounded")
        .consecutive_failures(1)
        .max_keys(2)
        .key_idle_timeout(Duration::from_secs(60))
        .build_keyed(|req: &Req| req.0)
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(ByHost::default());
    send(&mut svc, "open", Call::Fail).await.unwrap_err();
    advance(Duration::from_secs(1)).await;
    send(&mut svc, "closed", Call::Ok).await.unwrap();
    advance(Duration::from_secs(1)).await;
    // A third key makes room: the least recently used closed breaker goes,
    // not the open one, whose outage would otherwise be forgotten.
    send(&mut svc, "new", Call::Ok).await.unwrap();
    assert_eq!(handle.len(), 2);
    let mut keys = handle.keys();
    keys.sort_unstable();
    assert_eq!(keys, ["new", "open"]);
    assert!(handle.get(&"open").is_some_and(|h| h.state() == State::Open));

    // Idle keys go first when room is needed, open or not.
    advance(Duration::from_secs(61)).await;
    send(&mut svc, "fresh", Call::Ok).await.unwrap();
    assert_eq!(handle.keys(), ["fresh"]);

    advance(Duration::from_secs(61)).await;
    assert_eq!(handle.evict_idle(), 1);
    assert!(handle.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_key_whose_call_is_in_flight_is_not_dropped_as_idle() {
    // A call to "a" runs for 70 s and fails; the key is not looked up again
    // meanwhile. A sweep at 61 s must not drop it: the failure belongs to the
    // key's breaker, which must open and turn the next call away.
    let layer = CircuitBreakerBuilder::consecutive("in-flight")
        .consecutive_failures(1)
        .key_idle_timeout(Duration::from_secs(60))
        .build_keyed(|req: &Req| req.0)
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(ByHost::default());
    let mut clone = svc.clone();
    let mut in_flight = std::pin::pin!(send(&mut clone, "a", Call::Slow(Duration::from_secs(70), true)));
    assert!(std::future::poll_fn(|cx| std::task::Poll::Ready(in_flight.as_mut().poll(cx).is_pending())).await);
    // A sweep dates the key's use to now; the next, 61 s later, finds it idle
    // since, but its call is still running.
    assert_eq!(handle.evict_idle(), 0);
    advance(Duration::from_secs(61)).await;
    assert_eq!(handle.evict_idle(), 0);
    assert_eq!(handle.keys(), ["a"]);
    in_flight.await.unwrap_err();
    assert_eq!(handle.get(&"a").map(|h| h.state()), Some(State::Open));
    assert_rejected(&send(&mut svc, "a", Call::Ok).await, Duration::from_secs(30));

    // Once the call is over, the key goes when idle like any other (its
    // breaker open past its open time).
    assert_eq!(handle.evict_idle(), 0);
    advance(Duration::from_secs(61)).await;
    assert_eq!(handle.evict_idle(), 1);
    assert!(handle.is_empty());
}

/// In a layer of two keys holding `kept`, used least recently: a closed key,
/// then a new one that needs room, which the closed key makes.
async fn make_room_keeping<S>(svc: &mut S, handle: &KeyedCircuitBreakerHandle<&'static str>, kept: &'static str)
where
    S: Service<Req, Response = &'static str, Error = BoxError>,
{
    advance(Duration::from_secs(1)).await;
    send(svc, "closed", Call::Ok).await.unwrap();
    advance(Duration::from_secs(1)).await;
    send(svc, "new", Call::Ok).await.unwrap();
    let mut keys = handle.keys();
    keys.sort_unstable();
    assert_eq!(keys, ["new", kept]);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_that_is_not_closed_is_kept_while_a_closed_one_can_go() {
    type Set = fn(&palisade_circuit_breaker::CircuitBreakerHandle);
    let operator: [(Set, State); 3] = [
        (|h| h.force_open(), State::ForcedOpen),
        (|h| h.disable(), State::Disabled),
        (|h| h.metrics_only(), State::MetricsOnly),
    ];
    for (set, state) in operator {
        let layer = CircuitBreakerBuilder::consecutive("bounded")
            .max_keys(2)
            .build_keyed(|req: &Req| req.0)
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(ByHost::default());
        send(&mut svc, "set", Call::Ok).await.unwrap();
        set(&handle.get(&"set").unwrap());
        // "set" is the least recently used, but the operator's state is kept.
        make_room_keeping(&mut svc, &handle, "set").await;
        assert_eq!(handle.get(&"set").unwrap().state(), state);
    }

    // A half-open breaker, mid-recovery, is kept too: its probe is in flight.
    fn host(req: &Req) -> &'static str {
        req.0
    }
    let layer = CircuitBreakerBuilder::consecutive("bounded")
        .consecutive_failures(1)
        .max_keys(2)
        .build_keyed(host as fn(&Req) -> &'static str)
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(ByHost::default());
    send(&mut svc, "recovering", Call::Fail).await.unwrap_err();
    advance(Duration::from_secs(60)).await;
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut prober = svc.clone();
    let mut probe = std::pin::pin!(send(&mut prober, "recovering", Call::Gate(gate.clone())));
    std::future::poll_fn(|cx| {
        assert!(probe.as_mut().poll(cx).is_pending(), "the probe waits at the gate");
        std::task::Poll::Ready(())
    })
    .await;
    assert_eq!(handle.get(&"recovering").unwrap().state(), State::HalfOpen);
    make_room_keeping(&mut svc, &handle, "recovering").await;
    // Its probe's answer reaches the breaker it was admitted by.
    gate.notify_one();
    probe.await.unwrap();
    let recovering = handle.get(&"recovering").unwrap().snapshot();
    assert_eq!((recovering.state, recovering.half_open_probes), (State::HalfOpen, 1));
}

#[tokio::test(start_paused = true)]
async fn an_idle_key_is_not_forgotten_while_open_or_set_by_an_operator() {
    let layer = CircuitBreakerBuilder::consecutive("idle")
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(120))
        .key_idle_timeout(Duration::from_secs(60))
        .build_keyed(|req: &Req| req.0)
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(ByHost::default());
    send(&mut svc, "open", Call::Fail).await.unwrap_err();
    send(&mut svc, "forced", Call::Ok).await.unwrap();
    handle.get(&"forced").unwrap().force_open();
    send(&mut svc, "closed", Call::Ok).await.unwrap();
    // Callers honour the 120 s `Retry-After`: nobody calls for 61 s.
    advance(Duration::from_secs(61)).await;
    assert_eq!(handle.evict_idle(), 1, "only the closed key goes");
    let mut keys = handle.keys();
    keys.sort_unstable();
    assert_eq!(keys, ["forced", "open"]);
    assert_rejected(&send(&mut svc, "open", Call::Ok).await, Duration::from_secs(59));
    assert_eq!(handle.get(&"forced").unwrap().state(), State::ForcedOpen);

    // Once its open time is over, an idle open key has nothing left to keep
    // (the rejected call above was a use, which this sweep dates).
    advance(Duration::from_secs(120)).await;
    assert_eq!(handle.evict_idle(), 0);
    advance(Duration::from_secs(61)).await;
    assert_eq!(handle.evict_idle(), 1);
    assert_eq!(handle.keys(), ["forced"], "what the operator set stays");
}
