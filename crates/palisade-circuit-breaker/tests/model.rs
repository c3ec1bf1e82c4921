//! A property test: random sequences of outcomes, call durations and clock
//! advances go through the breaker and through a small sequential reference
//! model; both must admit and reject the same calls, with the same
//! `Retry-After`, and agree on the state after every step.
//!
//! 256 cases per run (`ProptestConfig::with_cases(256)`), sequences of up to
//! 60 steps.

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Call, Downstream, rejection};
use palisade_circuit_breaker::{CircuitBreakerBuilder, OpenDuration, State, Window};
use proptest::prelude::*;
use tokio::sync::Notify;
use tower::{Layer, Service, ServiceExt};

const SLOW: Duration = Duration::from_secs(2);
const JITTER: f64 = 0.5;

#[derive(Debug, Clone, Copy, PartialEq)]
enum WindowCfg {
    Count(u32),
    Time { length_ms: u64, buckets: u32 },
}

#[derive(Debug, Clone)]
struct Cfg {
    consecutive: Option<u32>,
    failure_rate: Option<f64>,
    slow_rate: Option<f64>,
    window: WindowCfg,
    minimum_calls: u32,
    open: OpenDuration,
    half_open_calls: u32,
    max_half_open: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Ok,
    Fail,
    Ignore,
}

#[derive(Debug, Clone)]
enum Step {
    /// A call taking `ms` that ends with the outcome.
    Call(Outcome, u64),
    /// A call dropped after `ms`, before it ends.
    Drop(u64),
    Advance(u64),
    /// A call that stays in flight until released or cancelled.
    Hold,
    /// The held call at this index (modulo) ends with the outcome.
    Release(usize, bool),
    /// The held call at this index (modulo) is dropped.
    Cancel(usize),
}

fn cfg() -> impl Strategy<Value = Cfg> {
    let window = prop_oneof![
        (1u32..=6).prop_map(WindowCfg::Count),
        (prop_oneof![Just(4_000u64), Just(10_000)], 1u32..=5)
            .prop_map(|(length_ms, buckets)| WindowCfg::Time { length_ms, buckets }),
    ];
    let open = prop_oneof![
        (1u64..=5).prop_map(|s| OpenDuration::Fixed(Duration::from_secs(s))),
        Just(OpenDuration::Growing {
            base: Duration::from_secs(1),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: JITTER,
        }),
    ];
    (
        proptest::option::of(1u32..=4),
        proptest::option::of(prop_oneof![Just(25.0), Just(50.0), Just(100.0)]),
        proptest::option::of(prop_oneof![Just(50.0), Just(100.0)]),
        window,
        1u32..=6,
        open,
        1u32..=3,
        proptest::option::of(Just(Duration::from_secs(4))),
    )
        .prop_map(
            |(consecutive, failure_rate, slow_rate, window, minimum_calls, open, half_open_calls, max_half_open)| {
                let minimum_calls = match window {
                    WindowCfg::Count(n) => minimum_calls.min(n),
                    WindowCfg::Time { .. } => minimum_calls,
                };
                let consecutive = if consecutive.is_none() && failure_rate.is_none() && slow_rate.is_none() {
                    Some(2)
                } else {
                    consecutive
                };
                Cfg {
                    consecutive,
                    failure_rate,
                    slow_rate,
                    window,
                    minimum_calls,
                    open,
                    half_open_calls,
                    max_half_open,
                }
            },
        )
}

fn step() -> impl Strategy<Value = Step> {
    let outcome = prop_oneof![4 => Just(Outcome::Fail), 4 => Just(Outcome::Ok), 1 => Just(Outcome::Ignore)];
    let ms = prop_oneof![Just(0u64), Just(500), Just(1_000), Just(2_000), Just(2_500)];
    prop_oneof![
        6 => (outcome, ms).prop_map(|(o, ms)| Step::Call(o, ms)),
        1 => (1u64..=3_000).prop_map(Step::Drop),
        3 => (0u64..=6_000).prop_map(Step::Advance),
        2 => Just(Step::Hold),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(i, fail)| Step::Release(i, fail)),
        1 => any::<usize>().prop_map(Step::Cancel),
    ]
}

/// The reference: the documented semantics, written plainly.
struct Model {
    cfg: Cfg,
    state: State,
    now: u64,
    open_until: u64,
    half_open_since: u64,
    trips: u32,
    consecutive: u32,
    /// (finish time, failed, slow)
    calls: VecDeque<(u64, bool, bool)>,
    taken: u32,
    succeeded: u32,
    /// Bumped by every transition: outcomes of calls admitted before one are ignored.
    epoch: u64,
}

#[derive(Debug, PartialEq, Clone, Copy)]
enum Decision {
    Admit { probe: bool, epoch: u64 },
    Reject(Duration),
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

impl Model {
    fn new(cfg: Cfg) -> Self {
        Self {
            cfg,
            state: State::Closed,
            now: 0,
            open_until: 0,
            half_open_since: 0,
            trips: 0,
            consecutive: 0,
            calls: VecDeque::new(),
            taken: 0,
            succeeded: 0,
            epoch: 0,
        }
    }

    fn open_duration(&self, trip: u32) -> Duration {
        match self.cfg.open {
            OpenDuration::Fixed(d) => d,
            OpenDuration::Growing {
                base,
                max,
                multiplier,
                jitter,
            } => {
                let grown = (base.as_secs_f64() * multiplier.powi(trip as i32)).min(max.as_secs_f64());
                Duration::try_from_secs_f64(grown * (1.0 - jitter * JITTER)).unwrap()
            }
        }
    }

    fn trip(&mut self) {
        let in_a_row = if self.state == State::Closed { 0 } else { self.trips };
        self.trips = in_a_row + 1;
        self.open_until = self.now + nanos(self.open_duration(in_a_row));
        self.state = State::Open;
        self.epoch += 1;
    }

    fn close(&mut self) {
        self.state = State::Closed;
        self.epoch += 1;
        self.trips = 0;
        self.consecutive = 0;
        self.calls.clear();
    }

    fn admit(&mut self) -> Decision {
        loop {
            match self.state {
                State::Closed => {
                    return Decision::Admit {
                        probe: false,
                        epoch: self.epoch,
                    };
                }
                State::Open if self.now < self.open_until => {
                    return Decision::Reject(Duration::from_nanos(self.open_until - self.now));
                }
                State::Open => {
                    self.state = State::HalfOpen;
                    self.epoch += 1;
                    self.half_open_since = self.now;
                    self.taken = 0;
                    self.succeeded = 0;
                }
                State::HalfOpen => {
                    if let Some(max) = self.cfg.max_half_open
                        && self.now - self.half_open_since >= nanos(max)
                    {
                        self.trip();
                        continue;
                    }
                    if self.taken >= self.cfg.half_open_calls {
                        return Decision::Reject(Duration::ZERO);
                    }
                    self.taken += 1;
                    return Decision::Admit {
                        probe: true,
                        epoch: self.epoch,
                    };
                }
                other => unreachable!("{other:?}"),
            }
        }
    }

    fn window_totals(&mut self) -> (u64, u64, u64) {
        match self.cfg.window {
            WindowCfg::Count(n) => {
                while self.calls.len() > n as usize {
                    self.calls.pop_front();
                }
            }
            WindowCfg::Time { length_ms, buckets } => {
                let bucket = nanos(Duration::from_millis(length_ms)) / u64::from(buckets);
                let tick = self.now / bucket;
                self.calls.retain(|(t, _, _)| t / bucket + u64::from(buckets) > tick);
            }
        }
        let calls = self.calls.len() as u64;
        let failed = self.calls.iter().filter(|c| c.1).count() as u64;
        let slow = self.calls.iter().filter(|c| c.2).count() as u64;
        (calls, failed, slow)
    }

    fn cancel(&mut self, probe: bool, epoch: u64) {
        if probe && epoch == self.epoch {
            self.taken -= 1;
        }
    }

    fn finish(&mut self, probe: bool, epoch: u64, outcome: Outcome, took: Duration) {
        if epoch != self.epoch {
            return;
        }
        let slow = self.cfg.slow_rate.is_some() && took >= SLOW;
        if outcome == Outcome::Ignore {
            if probe {
                self.taken -= 1;
            }
            return;
        }
        let failed = outcome == Outcome::Fail;
        if probe {
            if failed || slow {
                self.trip();
            } else {
                self.succeeded += 1;
                if self.succeeded >= self.cfg.half_open_calls {
                    match self.cfg.max_half_open {
                        Some(max) if self.now - self.half_open_since >= nanos(max) => self.trip(),
                        _ => self.close(),
                    }
                }
            }
            return;
        }
        let mut trip = false;
        if let Some(limit) = self.cfg.consecutive {
            self.consecutive = if failed { self.consecutive + 1 } else { 0 };
            trip |= self.consecutive >= limit;
        }
        if self.cfg.failure_rate.is_some() || self.cfg.slow_rate.is_some() {
            self.calls.push_back((self.now, failed, slow));
            let (calls, failures, slows) = self.window_totals();
            if calls >= u64::from(self.cfg.minimum_calls) {
                let c = calls as f64;
                trip |= self.cfg.failure_rate.is_some_and(|r| failures as f64 * 100.0 >= r * c);
                trip |= self.cfg.slow_rate.is_some_and(|r| slows as f64 * 100.0 >= r * c);
            }
        }
        if trip {
            self.trip();
        }
    }
}

fn build(cfg: &Cfg) -> palisade_circuit_breaker::CircuitBreakerLayer {
    let mut b = CircuitBreakerBuilder::rate_based("model")
        .no_failure_rate()
        .open_duration_with(cfg.open)
        .random(|| JITTER)
        .permitted_calls_in_half_open(cfg.half_open_calls)
        .minimum_calls(cfg.minimum_calls);
    b = match cfg.window {
        WindowCfg::Count(n) => b.window(Window::Count(n)),
        WindowCfg::Time { length_ms, buckets } => b.time_window(Duration::from_millis(length_ms), buckets),
    };
    if let Some(n) = cfg.consecutive {
        b = b.consecutive_failures(n);
    }
    if let Some(rate) = cfg.failure_rate {
        b = b.failure_rate(rate);
    }
    if let Some(rate) = cfg.slow_rate {
        b = b.slow_calls(rate, SLOW);
    }
    if let Some(max) = cfg.max_half_open {
        b = b.max_half_open_duration(max);
    }
    b.build().expect("generated configurations are valid")
}

struct Held {
    task: tokio::task::JoinHandle<Result<&'static str, palisade_core::BoxError>>,
    gate: Arc<Notify>,
    fail: Arc<AtomicBool>,
    probe: bool,
    epoch: u64,
    start: u64,
}

async fn run(cfg: Cfg, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let layer = build(&cfg);
    let handle = layer.handle();
    let mut svc = layer.layer(Downstream::default());
    let mut model = Model::new(cfg);
    let mut held: Vec<Held> = Vec::new();
    for (i, step) in steps.into_iter().enumerate() {
        match step {
            Step::Advance(ms) => {
                tokio::time::advance(Duration::from_millis(ms)).await;
                model.now += nanos(Duration::from_millis(ms));
            }
            Step::Call(outcome, ms) => {
                let expected = model.admit();
                let took = Duration::from_millis(ms);
                let call = match outcome {
                    Outcome::Ok => Call::Slow(took, false),
                    Outcome::Fail => Call::Slow(took, true),
                    Outcome::Ignore => Call::Ignore,
                };
                let took = if outcome == Outcome::Ignore {
                    Duration::ZERO
                } else {
                    took
                };
                let result = svc.ready().await.unwrap().call(call).await;
                match (rejection(&result), &expected) {
                    (Some(open), Decision::Reject(after)) => prop_assert_eq!(open.retry_after(), *after, "step {}", i),
                    (None, Decision::Admit { probe, epoch }) => {
                        model.now += nanos(took);
                        model.finish(*probe, *epoch, outcome, took);
                    }
                    (got, _) => prop_assert!(false, "step {}: breaker {:?}, model {:?}", i, got, expected),
                }
            }
            Step::Drop(ms) => {
                let expected = model.admit();
                let fut = svc
                    .ready()
                    .await
                    .unwrap()
                    .call(Call::Slow(Duration::from_secs(3_600), false));
                let dropped = tokio::time::timeout(Duration::from_millis(ms), fut).await;
                match (dropped, &expected) {
                    (Ok(result), Decision::Reject(after)) => {
                        prop_assert_eq!(rejection(&result).map(|o| o.retry_after()), Some(*after), "step {}", i)
                    }
                    (Err(_), Decision::Admit { probe, epoch }) => {
                        model.now += nanos(Duration::from_millis(ms));
                        model.cancel(*probe, *epoch);
                    }
                    (got, _) => prop_assert!(false, "step {}: breaker {:?}, model {:?}", i, got.is_ok(), expected),
                }
            }
            Step::Hold => {
                let expected = model.admit();
                let gate = Arc::new(Notify::new());
                let fail = Arc::new(AtomicBool::new(false));
                let mut held_svc = svc.clone();
                let call = Call::Until(gate.clone(), fail.clone());
                let task = tokio::spawn(async move { held_svc.ready().await?.call(call).await });
                tokio::task::yield_now().await;
                match expected {
                    Decision::Reject(after) => {
                        prop_assert!(task.is_finished(), "step {}: the model rejects", i);
                        let result = task.await.unwrap();
                        prop_assert_eq!(rejection(&result).map(|o| o.retry_after()), Some(after), "step {}", i);
                    }
                    Decision::Admit { probe, epoch } => {
                        prop_assert!(!task.is_finished(), "step {}: the model admits", i);
                        held.push(Held {
                            task,
                            gate,
                            fail,
                            probe,
                            epoch,
                            start: model.now,
                        });
                    }
                }
            }
            Step::Release(index, failed) if !held.is_empty() => {
                let call = held.remove(index % held.len());
                call.fail.store(failed, Ordering::SeqCst);
                call.gate.notify_one();
                let result = call.task.await.unwrap();
                prop_assert_eq!(result.is_err(), failed, "step {}", i);
                let outcome = if failed { Outcome::Fail } else { Outcome::Ok };
                model.finish(
                    call.probe,
                    call.epoch,
                    outcome,
                    Duration::from_nanos(model.now - call.start),
                );
            }
            Step::Cancel(index) if !held.is_empty() => {
                let call = held.remove(index % held.len());
                call.task.abort();
                prop_assert!(call.task.await.unwrap_err().is_cancelled());
                model.cancel(call.probe, call.epoch);
            }
            Step::Release(..) | Step::Cancel(_) => {}
        }
        let state = handle.state();
        // The model half-opens on the first call after the open duration, as the breaker does.
        prop_assert_eq!(state, model.state, "state after step {}", i);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn breaker_matches_the_reference_model(cfg in cfg(), steps in proptest::collection::vec(step(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(run(cfg, steps))?;
    }
}
