//! Permit and queue accounting of one compartment.
//!
//! One atomic word holds both counts, in flight (low 32 bits) and queued (high
//! 32 bits), so the uncontended path is a single compare-and-swap and a
//! release is a single `fetch_sub`. Waiters sit in a FIFO list behind a mutex
//! that is only touched when someone waits: while any call is queued, new
//! callers cannot take a permit on the fast path, and a released permit goes to
//! the head of the queue.

use palisade_core::events::EventHook;
use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroU64;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use palisade_core::sync::Unpoison;
use palisade_core::telemetry::{LABEL_NAME, LABEL_REASON, bulkhead as names};

use crate::limit::{Limit, MAX_COUNT, Sample};
use crate::sync::{Arc, AtomicU64, AtomicUsize, Mutex, Ordering::SeqCst};

const QUEUED_ONE: u64 = 1 << 32;
const IN_FLIGHT_MASK: u64 = u32::MAX as u64;

fn in_flight(state: u64) -> u64 {
    state & IN_FLIGHT_MASK
}

fn queued(state: u64) -> u64 {
    state >> 32
}

/// What every compartment of one bulkhead shares: its name and queueing rules.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) name: std::sync::Arc<str>,
    pub(crate) max_queued: usize,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) retry_after: Duration,
    pub(crate) events: EventHook,
    /// What permits' start times count from (see [`Permit`]).
    pub(crate) held_epoch: tokio::time::Instant,
}

/// The metric handles of a bulkhead, registered once when it is built so a
/// call never formats labels.
#[derive(Clone)]
pub(crate) struct GateMetrics {
    in_flight: Gauge,
    queued: Gauge,
    limit: Gauge,
    rejected_full: Counter,
    rejected_timeout: Counter,
    wait: Histogram,
    held: Histogram,
    /// Whether `held` records anywhere: a permit reads the clock only then.
    times_held: bool,
}

impl GateMetrics {
    pub(crate) fn register(name: &str) -> Self {
        let name = name.to_owned();
        let held = metrics::histogram!(names::CALL_DURATION_SECONDS, LABEL_NAME => name.clone());
        Self {
            in_flight: metrics::gauge!(names::IN_FLIGHT, LABEL_NAME => name.clone()),
            queued: metrics::gauge!(names::QUEUED, LABEL_NAME => name.clone()),
            limit: metrics::gauge!(names::LIMIT, LABEL_NAME => name.clone()),
            rejected_full: metrics::counter!(names::REJECTIONS_TOTAL, LABEL_NAME => name.clone(), LABEL_REASON => "full"),
            rejected_timeout: metrics::counter!(
                names::REJECTIONS_TOTAL, LABEL_NAME => name.clone(), LABEL_REASON => "timeout"
            ),
            wait: metrics::histogram!(names::WAIT_SECONDS, LABEL_NAME => name),
            times_held: palisade_core::telemetry::records(&held),
            held,
        }
    }

    pub(crate) fn rejected_full(&self) {
        self.rejected_full.increment(1);
    }

    pub(crate) fn rejected_timeout(&self, waited: Duration) {
        self.rejected_timeout.increment(1);
        self.wait.record(waited);
    }

    pub(crate) fn waited(&self, waited: Duration) {
        self.wait.record(waited);
    }

    /// The start of a permit taken now, if the held-time histogram records:
    /// nanoseconds after `epoch`, plus one.
    #[inline]
    fn held_since(&self, epoch: tokio::time::Instant) -> Option<NonZeroU64> {
        self.times_held.then(|| {
            let nanos = palisade_core::nanos::since(epoch);
            NonZeroU64::MIN.saturating_add(nanos)
        })
    }

    /// Records how long a permit taken at `since` (see [`Self::held_since`]) was held.
    fn record_held(&self, epoch: tokio::time::Instant, since: NonZeroU64) {
        let taken = Duration::from_nanos(since.get() - 1);
        self.held.record(epoch.elapsed().saturating_sub(taken));
    }
}

impl fmt::Debug for GateMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateMetrics").finish_non_exhaustive()
    }
}

/// The result of asking for a permit without waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A permit was taken; the count in flight before this call.
    Acquired(u32),
    /// No permit, but a queue place was reserved: call [`Gate::enqueue`].
    Enqueue,
    /// No permit and no queue place.
    Full,
}

/// Where an enqueued call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    /// A permit was free by the time the call reached the queue.
    Granted(u32),
    /// Waiting in this slot.
    Waiting(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    Waiting,
    /// A permit was handed over; the count in flight before it.
    Granted(u32),
}

#[derive(Debug)]
struct Slot {
    state: SlotState,
    waker: Option<Waker>,
}

/// The FIFO queue: slots are reused, so a warm queue allocates nothing.
#[derive(Debug, Default)]
struct WaitList {
    slots: Vec<Slot>,
    free: Vec<usize>,
    order: VecDeque<usize>,
}

impl WaitList {
    fn push(&mut self) -> usize {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot {
                    state: SlotState::Free,
                    waker: None,
                });
                self.slots.len() - 1
            }
        };
        self.slots[slot].state = SlotState::Waiting;
        self.order.push_back(slot);
        slot
    }

    fn release_slot(&mut self, slot: usize) {
        self.slots[slot] = Slot {
            state: SlotState::Free,
            waker: None,
        };
        self.free.push(slot);
    }
}

/// One compartment: a limit, the calls in flight and the queue.
///
/// The fields the fast path touches come first, in this order, so they share
/// a cache line with the `Arc`'s reference count (taken and dropped by every
/// call too): under contention one line moves between cores, not two.
#[repr(C)]
pub(crate) struct Gate {
    /// In flight (low 32 bits) and queued (high 32 bits).
    state: AtomicU64,
    limit: AtomicUsize,
    /// A copy of the setting, next to the counters the fast path reads.
    max_queued: u64,
    pub(crate) settings: std::sync::Arc<Settings>,
    waiters: Mutex<WaitList>,
    adaptive: Option<Mutex<Box<dyn Limit>>>,
    pub(crate) metrics: GateMetrics,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.load(SeqCst);
        f.debug_struct("Gate")
            .field("name", &self.settings.name)
            .field("limit", &self.limit.load(SeqCst))
            .field("in_flight", &in_flight(state))
            .field("queued", &queued(state))
            .field("adaptive", &self.adaptive.is_some())
            .finish()
    }
}

impl Gate {
    pub(crate) fn new(
        settings: std::sync::Arc<Settings>,
        limit: usize,
        adaptive: Option<Box<dyn Limit>>,
        metrics: GateMetrics,
    ) -> Self {
        let limit = adaptive.as_ref().map_or(limit, |l| l.limit()).clamp(1, MAX_COUNT);
        metrics.limit.set(limit as f64);
        Self {
            max_queued: settings.max_queued as u64,
            settings,
            state: AtomicU64::new(0),
            limit: AtomicUsize::new(limit),
            waiters: Mutex::new(WaitList::default()),
            adaptive: adaptive.map(Mutex::new),
            metrics,
        }
    }

    pub(crate) fn name(&self) -> &std::sync::Arc<str> {
        &self.settings.name
    }

    #[inline]
    pub(crate) fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(SeqCst)
    }

    /// Calls holding a permit and calls waiting for one, from one load of
    /// the state: read apart, a grant between the two reads could show its
    /// call in neither.
    pub(crate) fn occupancy(&self) -> (usize, usize) {
        let state = self.state.load(SeqCst);
        (in_flight(state) as usize, queued(state) as usize)
    }

    /// Takes a permit if one is free and nobody waits, else reserves a queue
    /// place if the queue has room.
    #[inline]
    pub(crate) fn try_admit(&self) -> Admission {
        let limit = self.limit.load(SeqCst) as u64;
        // Guess the idle state instead of loading first: a failed exchange
        // returns the actual state, and under contention one exchange moves
        // the cache line once where a load and an exchange move it twice.
        let mut current = 0;
        loop {
            let (next, admission) = if queued(current) == 0 && in_flight(current) < limit {
                (current + 1, Admission::Acquired(in_flight(current) as u32))
            } else if queued(current) < self.max_queued {
                (current + QUEUED_ONE, Admission::Enqueue)
            } else {
                self.metrics.rejected_full();
                return Admission::Full;
            };
            match self.state.compare_exchange(current, next, SeqCst, SeqCst) {
                Ok(_) => {
                    match admission {
                        Admission::Acquired(_) => self.metrics.in_flight.increment(1.0),
                        _ => self.metrics.queued.increment(1.0),
                    }
                    return admission;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Joins the queue with the place reserved by [`Gate::try_admit`].
    pub(crate) fn enqueue(&self) -> Queued {
        let mut list = self.waiters.lock().unpoison();
        let slot = list.push();
        self.grant_locked(&mut list);
        match list.slots[slot].state {
            SlotState::Granted(before) => {
                list.release_slot(slot);
                Queued::Granted(before)
            }
            _ => Queued::Waiting(slot),
        }
    }

    /// Hands free permits to the head of the queue, first come first served.
    fn grant_locked(&self, list: &mut WaitList) {
        while let Some(&slot) = list.order.front() {
            let limit = self.limit.load(SeqCst) as u64;
            let mut current = self.state.load(SeqCst);
            let before = loop {
                if in_flight(current) >= limit {
                    return;
                }
                // One queued call becomes one call in flight.
                let next = current + 1 - QUEUED_ONE;
                match self.state.compare_exchange_weak(current, next, SeqCst, SeqCst) {
                    Ok(_) => break in_flight(current) as u32,
                    Err(actual) => current = actual,
                }
            };
            list.order.pop_front();
            let waiter = &mut list.slots[slot];
            waiter.state = SlotState::Granted(before);
            self.metrics.queued.decrement(1.0);
            self.metrics.in_flight.increment(1.0);
            if let Some(waker) = waiter.waker.take() {
                waker.wake();
            }
        }
    }

    /// Checks whether the waiter in `slot` was granted a permit; registers
    /// the waker if not.
    pub(crate) fn poll_granted(&self, slot: usize, cx: &mut Context<'_>) -> Poll<u32> {
        let mut list = self.waiters.lock().unpoison();
        let waiter = &mut list.slots[slot];
        match waiter.state {
            SlotState::Granted(before) => {
                list.release_slot(slot);
                Poll::Ready(before)
            }
            _ => {
                match &mut waiter.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    other => *other = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// Leaves the queue. If a permit was handed over in the meantime it is
    /// kept when `keep_granted` (a wait that timed out as it was served), else
    /// given back. Returns the permit's in-flight count when kept.
    pub(crate) fn leave_queue(&self, slot: usize, keep_granted: bool) -> Option<u32> {
        let mut list = self.waiters.lock().unpoison();
        match list.slots[slot].state {
            SlotState::Granted(before) => {
                list.release_slot(slot);
                drop(list);
                if keep_granted {
                    return Some(before);
                }
                self.release();
            }
            _ => {
                if let Some(position) = list.order.iter().position(|&s| s == slot) {
                    list.order.remove(position);
                }
                list.release_slot(slot);
                self.state.fetch_sub(QUEUED_ONE, SeqCst);
                self.metrics.queued.decrement(1.0);
            }
        }
        None
    }

    /// Gives a permit back, handing it to the head of the queue if any.
    // Inlined into the permit's drop, the queue's part out of line: a call
    // here cost the fixed bulkhead about 2 ns a call in a plain loop.
    #[inline]
    pub(crate) fn release(&self) {
        let before = self.state.fetch_sub(1, SeqCst);
        self.metrics.in_flight.decrement(1.0);
        if queued(before) > 0 {
            self.grant_queued();
        }
    }

    /// Hands free permits to the queue, under its lock.
    #[inline(never)]
    fn grant_queued(&self) {
        let mut list = self.waiters.lock().unpoison();
        self.grant_locked(&mut list);
    }

    /// Sets the limit; calls in flight above a lowered limit finish, and no
    /// new call is admitted until the count is below it.
    pub(crate) fn set_limit(&self, limit: usize) {
        let limit = limit.clamp(1, MAX_COUNT);
        let before = self.limit.swap(limit, SeqCst);
        if before == limit {
            return;
        }
        self.metrics.limit.set(limit as f64);
        if limit > before && queued(self.state.load(SeqCst)) > 0 {
            self.grant_queued();
        }
    }

    /// Feeds one completed call to the adaptive limit and applies its verdict.
    pub(crate) fn sample(&self, sample: &Sample) {
        if let Some(limit) = &self.adaptive {
            // Set under the limit's lock: set after it, two calls ending at
            // once could apply their limits in the wrong order and leave the
            // older in force.
            let mut limit = limit.lock().unpoison();
            let next = limit.update(sample);
            self.set_limit(next);
        }
    }
}

/// A permit of a bulkhead compartment, released when dropped.
///
/// Response futures hold one while the inner service runs; with
/// [`OnBodyEnd`](crate::OnBodyEnd) the response body holds it until the body
/// has been sent.
pub struct Permit {
    gate: Arc<Gate>,
    /// When the permit was taken, if the held-time histogram records (see
    /// [`GateMetrics::held_since`]): eight bytes where an `Option<Instant>`
    /// takes sixteen. A call moves its permit several times within a few
    /// cycles of building it, and on x86 a copy of that wider value waited on
    /// the narrower stores that had just built it: about 10 ns a call.
    since: Option<NonZeroU64>,
}

impl Permit {
    #[inline]
    pub(crate) fn new(gate: Arc<Gate>) -> Self {
        let since = gate.metrics.held_since(gate.settings.held_epoch);
        Self { gate, since }
    }

    #[inline]
    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(since) = self.since {
            self.gate.metrics.record_held(self.gate.settings.held_epoch, since);
        }
        self.gate.release();
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("bulkhead", self.gate.name())
            .finish_non_exhaustive()
    }
}

/// When a call of an adaptive bulkhead was admitted, and the calls in flight
/// then (itself included), for its sample.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started {
    at: tokio::time::Instant,
    in_flight: u32,
}

impl Started {
    /// Starts the clock for a call admitted with `in_flight_before` others
    /// in flight, if `gate` is adaptive.
    #[inline]
    pub(crate) fn of(gate: &Gate, in_flight_before: u32) -> Option<Self> {
        gate.is_adaptive().then(|| Self {
            at: tokio::time::Instant::now(),
            in_flight: in_flight_before + 1,
        })
    }

    /// The sample of the call that started here and ended now.
    pub(crate) fn sample(self, dropped: bool) -> Sample {
        Sample::new(self.at.elapsed(), self.in_flight as usize, dropped)
    }
}
