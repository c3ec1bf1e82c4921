//! Adaptive limits against a simulated downstream, on paused time: the
//! limit must settle near the downstream's capacity, fall when the downstream
//! degrades, and come back when it recovers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_bulkhead::{Aimd, BulkheadLayer, Gradient2, Limit};
use palisade_core::{BoxError, BulkheadFull};
use tower::{Layer, Service, ServiceExt};

/// A downstream with `capacity` workers: up to that many calls take `BASE`
/// each; beyond it they share the workers and take proportionally longer.
#[derive(Clone)]
struct Downstream {
    active: Arc<AtomicUsize>,
    capacity: Arc<AtomicUsize>,
}

const BASE: Duration = Duration::from_millis(10);

struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service<()> for Downstream {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: ()) -> Self::Future {
        let active = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        let guard = Active(Arc::clone(&self.active));
        let capacity = self.capacity.load(Ordering::SeqCst);
        let latency = BASE.mul_f64((active as f64 / capacity as f64).max(1.0));
        Box::pin(async move {
            let _guard = guard;
            tokio::time::sleep(latency).await;
            Ok(())
        })
    }
}

/// The limit, sampled every 100 ms, for each phase of the run.
struct Run {
    phases: Vec<Vec<usize>>,
}

impl Run {
    /// The mean limit over the last `seconds` of phase `phase`.
    fn settled(&self, phase: usize, seconds: usize) -> f64 {
        let samples = &self.phases[phase];
        let tail = &samples[samples.len() - seconds * 10..];
        tail.iter().sum::<usize>() as f64 / tail.len() as f64
    }
}

/// 100 clients call in a closed loop (backing off 1 ms when rejected) while
/// the downstream's capacity goes through `capacities`, each for `seconds`.
async fn simulate<L: Limit + Clone + Sync>(limit: L, capacities: &[(usize, u64)]) -> Run {
    let downstream = Downstream {
        active: Arc::default(),
        capacity: Arc::new(AtomicUsize::new(capacities[0].0)),
    };
    let layer = BulkheadLayer::builder("simulated").adaptive(limit).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(downstream.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let svc = svc.clone();
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if let Err(err) = svc.clone().oneshot(()).await {
                        assert!(err.is::<BulkheadFull>(), "only rejections: {err}");
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            })
        })
        .collect();
    let mut phases = Vec::new();
    for &(capacity, seconds) in capacities {
        downstream.capacity.store(capacity, Ordering::SeqCst);
        let mut samples = Vec::new();
        for _ in 0..seconds * 10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let snapshot = handle.snapshot();
            assert!(snapshot.in_flight <= snapshot.limit.max(downstream.active.load(Ordering::SeqCst)));
            samples.push(snapshot.limit);
        }
        phases.push(samples);
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    Run { phases }
}

// The downstream has 10 workers, then 3 for 5 s (degraded), then 10 again.
const PHASES: [(usize, u64); 3] = [(10, 10), (3, 5), (10, 10)];

#[tokio::test(start_paused = true)]
async fn aimd_converges_near_capacity_and_recovers_after_an_overload() {
    // Calls slower than 1.5 × the unloaded latency count as drops, so the
    // limit saws just under 1.5 × capacity.
    let aimd = Aimd::builder()
        .initial_limit(50)
        .min_limit(1)
        .max_limit(200)
        .timeout(BASE.mul_f64(1.5))
        .build()
        .unwrap();
    let run = simulate(aimd, &PHASES).await;
    let (steady, degraded, recovered) = (run.settled(0, 5), run.settled(1, 2), run.settled(2, 5));
    assert!((10.0..=16.0).contains(&steady), "steady at {steady}");
    assert!(
        run.phases[0][50..].iter().all(|&limit| (10..=16).contains(&limit)),
        "{:?}",
        run.phases[0]
    );
    assert!((3.0..=5.5).contains(&degraded), "degraded at {degraded}");
    assert!(
        (steady - recovered).abs() <= 1.0,
        "recovered to {recovered}, was {steady}"
    );
}

#[tokio::test(start_paused = true)]
async fn gradient2_converges_near_capacity_and_recovers_after_an_overload() {
    // Gradient2 keeps latency within its tolerance (1.5) of the unloaded
    // latency plus its queue size (4): the limit settles at 1.5 × capacity + 4.
    let gradient = Gradient2::builder()
        .initial_limit(5)
        .min_limit(1)
        .max_limit(200)
        .build()
        .unwrap();
    let run = simulate(gradient, &PHASES).await;
    let (steady, degraded, recovered) = (run.settled(0, 5), run.settled(1, 2), run.settled(2, 5));
    assert!((10.0..=19.0).contains(&steady), "steady at {steady}");
    assert!(
        run.phases[0][50..].iter().all(|&limit| (10..=19).contains(&limit)),
        "no drift: {:?}",
        run.phases[0]
    );
    assert!((3.0..=8.5).contains(&degraded), "degraded at {degraded}");
    assert!(
        (steady - recovered).abs() <= 1.0,
        "recovered to {recovered}, was {steady}"
    );
}

/// A limit that keeps every sample it is given.
#[derive(Debug, Clone, Default)]
struct Recording(Arc<std::sync::Mutex<Vec<bool>>>);

impl Limit for Recording {
    fn limit(&self) -> usize {
        4
    }

    fn update(&mut self, sample: &palisade_bulkhead::Sample) -> usize {
        self.0.lock().unwrap().push(sample.dropped());
        4
    }
}

#[tokio::test]
async fn a_custom_classifier_never_samples_another_palisade_layers_rejection() {
    let samples = Recording::default();
    let layer = BulkheadLayer::builder("outer")
        .adaptive(samples.clone())
        .classifier(palisade_core::classify_fn(
            |result: palisade_core::CallResult<'_, ()>| match result {
                Ok(()) => palisade_core::Outcome::Success,
                Err(_) => palisade_core::Outcome::Failure,
            },
        ))
        .build()
        .unwrap();
    let inner = tower::service_fn(|fail: bool| async move {
        if fail {
            Err::<(), BoxError>(BulkheadFull::new("inner", Duration::from_secs(1)).into())
        } else {
            Ok(())
        }
    });
    let mut svc = layer.layer(inner);
    let rejected = svc.ready().await.unwrap().call(true).await.unwrap_err();
    assert!(rejected.is::<BulkheadFull>());
    svc.ready().await.unwrap().call(false).await.unwrap();
    assert_eq!(
        *samples.0.lock().unwrap(),
        [false],
        "the inner bulkhead's rejection is not a sample; the success is"
    );
}
