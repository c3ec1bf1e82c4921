//! The response future of the bulkhead services, and what holds the permit
//! once the response is there.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use palisade_core::telemetry::bulkhead::TARGET;
use palisade_core::{Classify, Outcome, downstream_outcome};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::gate::{Admission, Gate, Permit, Queued, Started};
use crate::release::PermitRelease;
use crate::sync::Arc;
use palisade_core::events::LayerEvent;
use palisade_core::{BoxError, BulkheadFull, BulkheadTimeout};

/// The compartment a call goes to: borrowed from a single bulkhead, or
/// looked up (and so owned) by a keyed one.
pub(crate) enum GateRef<'a> {
    Shared(&'a Arc<Gate>),
    Owned(Arc<Gate>),
}

impl GateRef<'_> {
    fn gate(&self) -> &Gate {
        match self {
            GateRef::Shared(gate) => gate,
            GateRef::Owned(gate) => gate,
        }
    }

    fn into_arc(self) -> Arc<Gate> {
        match self {
            GateRef::Shared(gate) => Arc::clone(gate),
            GateRef::Owned(gate) => gate,
        }
    }
}

/// A rejection, kept so that polling again answers the same.
#[derive(Debug, Clone)]
enum Rejection {
    Full(BulkheadFull),
    Timeout(BulkheadTimeout),
}

impl Rejection {
    fn to_error(&self) -> BoxError {
        match self {
            Rejection::Full(full) => Box::new(full.clone()),
            Rejection::Timeout(timeout) => Box::new(timeout.clone()),
        }
    }
}

/// A call's place in a queue; leaves it when dropped before being served.
struct Waiter {
    gate: Arc<Gate>,
    slot: usize,
    done: bool,
}

impl Waiter {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<u32> {
        let before = ready!(self.gate.poll_granted(self.slot, cx));
        self.done = true;
        Poll::Ready(before)
    }

    /// The wait is over: keeps a permit handed over meanwhile, if any.
    fn time_out(&mut self) -> Option<u32> {
        self.done = true;
        self.gate.leave_queue(self.slot, true)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if !self.done {
            self.gate.leave_queue(self.slot, false);
        }
    }
}

impl fmt::Debug for Waiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waiter")
            .field("slot", &self.slot)
            .field("done", &self.done)
            .finish()
    }
}

pin_project! {
    #[project = DeadlineProj]
    enum Deadline {
        Unbounded,
        At { #[pin] sleep: Sleep },
    }
}

impl Deadline {
    fn poll_expired(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.project() {
            DeadlineProj::Unbounded => Poll::Pending,
            DeadlineProj::At { sleep } => sleep.poll(cx),
        }
    }
}

pin_project! {
    /// A queued call: its place in the queue, the service and request it goes
    /// with once admitted, since when and until when it waits. Boxed in the
    /// response future (one allocation per call that waits): held inline, the
    /// request and the timer would make every response future several times
    /// larger, and admitted calls, which never wait, would pay for moving them.
    #[project = QueueProj]
    struct Queue<S, Req> {
        waiter: Waiter,
        call: Option<(S, Req)>,
        // Once admitted: the permit, held while the service is polled ready.
        admitted: Option<(Permit, u32)>,
        since: Instant,
        #[pin]
        deadline: Deadline,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F> {
        Waiting {
            queue: Pin<Box<Queue<S, Req>>>,
        },
        Running {
            #[pin]
            future: F,
            permit: Option<Permit>,
            started: Option<Started>,
        },
        Rejected {
            error: Rejection,
        },
        // Failed with the inner service's readiness error, which is not kept.
        Done,
    }
}

pin_project! {
    /// The response future of [`Bulkhead`](crate::Bulkhead) and
    /// [`KeyedBulkhead`](crate::KeyedBulkhead).
    ///
    /// It waits for a permit when the call was queued (then for a clone of
    /// the inner service to be ready: the one polled ready before the call
    /// is let go while it waits, so what it reserved serves other calls),
    /// calls the inner service, and holds the permit until the inner future
    /// completes (or hands it to the response body with [`OnBodyEnd`]).
    /// Dropping it at any point gives back its queue place or its permit.
    pub struct ResponseFuture<S, Req, C, M>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, S::Future>,
        classifier: C,
        release: PhantomData<fn() -> M>,
    }
}

impl<S, Req, C, M> ResponseFuture<S, Req, C, M>
where
    S: Service<Req> + Clone,
{
    /// Starts a call in `gate`, or rejects it with the error `gate` carries
    /// instead: takes a permit at once, joins the queue, or rejects.
    // Always inlined, and each outcome builds its state here from values
    // made out of line, with one place for every rejection: the usual call,
    // admitted at once, then builds its future where the caller keeps it. A
    // state built out of line, or by several outcomes in one place, was
    // copied with wide loads that waited on the narrower stores that had just
    // built it (about 5 ns a call).
    #[inline(always)]
    pub(crate) fn start(gate: Result<GateRef<'_>, BulkheadFull>, inner: &mut S, req: Req, classifier: &C) -> Self
    where
        C: Clone,
    {
        let admitted = match gate {
            Ok(gate) => match gate.gate().try_admit() {
                Admission::Acquired(before) => Ok((gate, before)),
                Admission::Enqueue => match gate.gate().enqueue() {
                    Queued::Granted(before) => Ok((gate, before)),
                    Queued::Waiting(slot) => {
                        let queue = Self::queue(gate.into_arc(), slot, inner, req);
                        return Self::with_state(State::Waiting { queue }, classifier);
                    }
                },
                Admission::Full => Err(rejected_full(gate.gate())),
            },
            Err(full) => Err(full),
        };
        let state = match admitted {
            Ok((gate, before)) => running(Permit::new(gate.into_arc()), before, inner, req),
            Err(full) => State::Rejected {
                error: Rejection::Full(full),
            },
        };
        Self::with_state(state, classifier)
    }

    #[inline(always)]
    fn with_state(state: State<S, Req, S::Future>, classifier: &C) -> Self
    where
        C: Clone,
    {
        Self {
            state,
            classifier: classifier.clone(),
            release: PhantomData,
        }
    }

    /// A queued call's place in the queue, and the service and request it goes with.
    #[inline(never)]
    fn queue(gate: Arc<Gate>, slot: usize, inner: &mut S, req: Req) -> Pin<Box<Queue<S, Req>>> {
        // First, so that the place is given back if what follows panics (a
        // timer outside a runtime, the inner service's `clone`).
        let waiter = Waiter {
            gate,
            slot,
            done: false,
        };
        let deadline = match waiter.gate.settings.max_wait {
            Some(max_wait) => Deadline::At {
                sleep: tokio::time::sleep(max_wait),
            },
            None => Deadline::Unbounded,
        };
        // The service polled ready may hold what it reserved for this call (a
        // `ConcurrencyLimit`'s permit, a `Buffer`'s slot), which other
        // compartments' calls need while this one waits: it is let go, and
        // the call takes a clone it polls ready once admitted. The bulkhead
        // keeps a fresh clone to poll next time.
        let fresh = inner.clone();
        drop(std::mem::replace(inner, fresh));
        Box::pin(Queue {
            waiter,
            call: Some((inner.clone(), req)),
            admitted: None,
            since: Instant::now(),
            deadline,
        })
    }
}

/// A queued call admitted, its service ready: what it runs with.
struct Admitted<S, Req> {
    svc: S,
    req: Req,
    permit: Permit,
    before: u32,
}

/// Why a queued call was not sent.
enum Unsent {
    /// `max_wait` passed, waiting for a permit or for the service.
    TimedOut(Rejection),
    /// The service failed its readiness once the call was admitted.
    NotReady(BoxError),
}

impl<S: Service<Req>, Req> Queue<S, Req>
where
    S::Error: Into<BoxError>,
{
    /// Waits for a permit, then, holding it, for the call's service to be
    /// ready; `max_wait` bounds both.
    fn poll_admitted(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Admitted<S, Req>, Unsent>> {
        let QueueProj {
            waiter,
            call,
            admitted,
            since,
            mut deadline,
        } = self.project();
        if admitted.is_none() {
            let before = match waiter.poll(cx) {
                Poll::Ready(before) => before,
                Poll::Pending => {
                    ready!(deadline.as_mut().poll_expired(cx));
                    match waiter.time_out() {
                        Some(before) => before,
                        None => return Poll::Ready(Err(Unsent::TimedOut(timed_out(&waiter.gate, since.elapsed())))),
                    }
                }
            };
            *admitted = Some((Permit::new(Arc::clone(&waiter.gate)), before));
        }
        let (svc, _) = call.as_mut().expect("a queued call keeps its request until admitted");
        match svc.poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(error)) => return Poll::Ready(Err(Unsent::NotReady(error.into()))),
            Poll::Pending => {
                // No permit is held past `max_wait` by a call not yet sent.
                ready!(deadline.poll_expired(cx));
                return Poll::Ready(Err(Unsent::TimedOut(timed_out(&waiter.gate, since.elapsed()))));
            }
        }
        waiter.gate.metrics.waited(since.elapsed());
        let (svc, req) = call.take().expect("a queued call keeps its request until admitted");
        let (permit, before) = admitted.take().expect("an admitted call holds its permit");
        Poll::Ready(Ok(Admitted {
            svc,
            req,
            permit,
            before,
        }))
    }
}

/// The rejection of a call that found its compartment and its queue full.
#[inline(never)]
fn rejected_full(gate: &Gate) -> BulkheadFull {
    tracing::debug!(target: TARGET, name = %gate.name(), reason = "full", "bulkhead rejected a call");
    gate.settings.events.emit(|| LayerEvent::BulkheadRejected {
        name: gate.name(),
        reason: "full",
    });
    BulkheadFull::new(std::sync::Arc::clone(gate.name()), gate.settings.retry_after)
}

/// The rejection of a call that waited `waited` in the queue for nothing.
#[inline(never)]
fn timed_out(gate: &Gate, waited: std::time::Duration) -> Rejection {
    gate.metrics.rejected_timeout(waited);
    tracing::debug!(
        target: TARGET,
        name = %gate.name(),
        reason = "timeout",
        wait_ms = waited.as_millis() as u64,
        "bulkhead rejected a call"
    );
    gate.settings.events.emit(|| LayerEvent::BulkheadRejected {
        name: gate.name(),
        reason: "timeout",
    });
    Rejection::Timeout(BulkheadTimeout::new(
        std::sync::Arc::clone(gate.name()),
        waited,
        gate.settings.retry_after,
    ))
}

// Built in place: a state built out of line and copied into the response
// future cost about 5 ns a call on x86, the copy's wide loads waiting on the
// narrower stores that had just built it.
#[inline(always)]
fn running<S: Service<Req>, Req>(permit: Permit, before: u32, inner: &mut S, req: Req) -> State<S, Req, S::Future> {
    let started = Started::of(permit.gate(), before);
    State::Running {
        future: inner.call(req),
        permit: Some(permit),
        started,
    }
}

impl<S, Req, C, M> Future for ResponseFuture<S, Req, C, M>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response>,
    M: PermitRelease<S::Response>,
{
    type Output = Result<M::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting { queue } => match ready!(queue.as_mut().poll_admitted(cx)) {
                    Ok(Admitted {
                        mut svc,
                        req,
                        permit,
                        before,
                    }) => {
                        this.state.set(running(permit, before, &mut svc, req));
                    }
                    Err(Unsent::TimedOut(error)) => {
                        let boxed = error.to_error();
                        this.state.set(State::Rejected { error });
                        return Poll::Ready(Err(boxed));
                    }
                    Err(Unsent::NotReady(error)) => {
                        // The permit goes back with the call.
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error));
                    }
                },
                StateProj::Running {
                    future,
                    permit,
                    started,
                } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    let permit = permit.take().expect("response future polled after completion");
                    if let Some(started) = *started {
                        let view = match &result {
                            Ok(response) => Ok(response),
                            Err(error) => Err(&**error as &(dyn Error + 'static)),
                        };
                        // Another palisade layer's rejection says nothing about the
                        // downstream, whatever a custom classifier makes of it.
                        let dropped = match downstream_outcome(this.classifier, view) {
                            Outcome::Success => Some(false),
                            Outcome::Failure => Some(true),
                            Outcome::Ignored => None,
                        };
                        if let Some(dropped) = dropped {
                            permit.gate().sample(&started.sample(dropped));
                        }
                    }
                    return Poll::Ready(result.map(|response| M::attach(response, permit)));
                }
                StateProj::Rejected { error } => return Poll::Ready(Err(error.to_error())),
                StateProj::Done => panic!("bulkhead response future polled after completion"),
            }
        }
    }
}

impl<S, Req, C, M> fmt::Debug for ResponseFuture<S, Req, C, M>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting",
            State::Running { .. } => "running",
            State::Rejected { .. } => "rejected",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
