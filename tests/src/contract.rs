//! The tower contract suite: the same checks for every protocol-agnostic
//! layer and configuration.
//!
//! A [`Subject`] is one layer (or a whole stack) wrapped around a
//! [`Scripted`] inner service. The script decides the inner service's
//! readiness (ready, pending, failing) and each call's reply (an answer, an
//! error, or a hang until released), and records everything the layer did to
//! it: readiness polls, wakers registered, every call with whether
//! `poll_ready` had returned ready on that service value before it, calls in
//! flight and their peak, calls completed and futures dropped.
//!
//! [`contract_suite!`](crate::contract_suite) turns one line per
//! configuration into one test per check:
//!
//! ```ignore
//! palisade_tests::contract_suite! {
//!     bulkhead_fixed => Subject::new(BulkheadLayer::builder("b").max_concurrent(2).build().unwrap()).concurrency(2);
//! }
//! ```
//!
//! The checks:
//!
//! - [`ready_before_every_call`]: the inner service's `poll_ready` returned
//!   ready on the very service value each `call` is made on, clones and retry
//!   attempts included.
//! - [`clones_never_exceed_admitted_concurrency`]: however many clones (and
//!   clones of readied clones) call at once, at most the admitted number
//!   reach the inner service and at most the queue's size wait.
//! - [`pending_readiness_registers_waker`]: a pending inner readiness leaves
//!   the caller's waker with the inner service, the layer never wakes itself
//!   while it waits, and the wake from the inner service (or the timer of a
//!   backoff) is enough to make progress.
//! - [`errors_stay_findable`]: readiness and call errors of the inner
//!   service come back findable with `palisade_core::error::find`.
//! - [`dropping_releases_what_was_held`]: dropping running and queued
//!   response futures and readied clones gives back every permit, queue
//!   place and probe slot; a future dropped after a failed attempt makes no
//!   further call.
//! - [`readiness_is_stable_until_the_call`]: a service that answered ready
//!   accepts its call even when the inner service stopped being ready for
//!   others and time went by.
//! - [`admission_follows_current_state`]: a layer whose admission changed
//!   (the breaker opened, the compartment filled) while the inner service was
//!   pending decides on the state at the call, not on the stale one.
//! - [`impossible_configuration_fails_at_build`]: the configurations the
//!   subject lists as impossible are refused by `build()`.
//!
//! Every check runs on paused tokio time.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use palisade_core::BoxError;
use palisade_core::error::find;
use tokio::task::JoinHandle;
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt};

/// The request every subject takes: `key` feeds keyed layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// What a keyed layer keys on.
    pub key: u32,
}

/// The request the checks send.
pub const REQUEST: Request = Request { key: 7 };

/// The inner service's answer: which of its calls produced it (from 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The number of the inner call that answered.
    pub call: usize,
}

/// Where a [`ScriptError`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failed {
    /// The inner service's `poll_ready`.
    Ready,
    /// The inner service's response future.
    Call,
}

/// The error the scripted inner service fails with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptError(pub Failed);

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Failed::Ready => f.write_str("scripted readiness failure"),
            Failed::Call => f.write_str("scripted call failure"),
        }
    }
}

impl std::error::Error for ScriptError {}

/// What the inner service's `poll_ready` answers a service value that has
/// not reserved its readiness yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Ready at once.
    Ready,
    /// Pending; the waker is kept and woken when the readiness changes.
    Pending,
    /// Fails with [`ScriptError`]`(`[`Failed::Ready`]`)`.
    Fail,
}

/// How one inner call answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// At once, with a [`Response`].
    Ok,
    /// At once, with [`ScriptError`]`(`[`Failed::Call`]`)`.
    Err,
    /// Not before [`Script::release`], then with a [`Response`].
    Hang,
}

/// One call the inner service saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRecord {
    /// Whether `poll_ready` had returned ready on this service value, and
    /// no call had spent it, when the call was made.
    pub readied: bool,
    /// The request.
    pub request: Request,
}

#[derive(Debug)]
struct State {
    readiness: Readiness,
    ready_wakers: Vec<Waker>,
    ready_polls: usize,
    waker_registrations: usize,
    replies: VecDeque<Reply>,
    default_reply: Reply,
    calls: Vec<CallRecord>,
    in_flight: usize,
    peak: usize,
    completed: usize,
    dropped: usize,
    /// Bumped by every release; a hanging call started before it answers.
    released: u64,
    hang_wakers: Vec<Waker>,
}

/// The shared script and record of a [`Scripted`] service and its clones.
#[derive(Debug, Clone)]
pub struct Script {
    state: Arc<Mutex<State>>,
}

impl Default for Script {
    fn default() -> Self {
        Self::new()
    }
}

impl Script {
    /// A script: ready, every call answered at once.
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                readiness: Readiness::Ready,
                ready_wakers: Vec::new(),
                ready_polls: 0,
                waker_registrations: 0,
                replies: VecDeque::new(),
                default_reply: Reply::Ok,
                calls: Vec::new(),
                in_flight: 0,
                peak: 0,
                completed: 0,
                dropped: 0,
                released: 0,
                hang_wakers: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new inner service value following this script (not ready yet).
    pub fn service(&self) -> Scripted {
        Scripted {
            script: self.clone(),
            readied: false,
        }
    }

    /// Sets the readiness, waking every waker a pending poll left.
    pub fn set_readiness(&self, readiness: Readiness) {
        let wakers = {
            let mut state = self.lock();
            state.readiness = readiness;
            std::mem::take(&mut state.ready_wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The readiness now.
    pub fn readiness(&self) -> Readiness {
        self.lock().readiness
    }

    /// Whether a pending poll left a waker that has not been woken yet.
    pub fn has_ready_waker(&self) -> bool {
        !self.lock().ready_wakers.is_empty()
    }

    /// Queues replies for the next calls, in order.
    pub fn reply(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().replies.extend(replies);
    }

    /// The reply of calls with nothing queued.
    pub fn set_default_reply(&self, reply: Reply) {
        self.lock().default_reply = reply;
    }

    /// Answers every hanging call.
    pub fn release(&self) {
        let wakers = {
            let mut state = self.lock();
            state.released += 1;
            std::mem::take(&mut state.hang_wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().calls.clone()
    }

    /// How many calls were made.
    pub fn call_count(&self) -> usize {
        self.lock().calls.len()
    }

    /// Inner response futures alive now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// The most inner response futures alive at once.
    pub fn peak(&self) -> usize {
        self.lock().peak
    }

    /// Inner response futures that answered.
    pub fn completed(&self) -> usize {
        self.lock().completed
    }

    /// Inner response futures dropped before answering.
    pub fn dropped(&self) -> usize {
        self.lock().dropped
    }

    /// `poll_ready` calls on the inner service.
    pub fn ready_polls(&self) -> usize {
        self.lock().ready_polls
    }

    /// Pending polls that left a waker.
    pub fn waker_registrations(&self) -> usize {
        self.lock().waker_registrations
    }

    /// Panics unless every call was made on a service value whose
    /// `poll_ready` had returned ready.
    pub fn assert_every_call_readied(&self, case: &str) {
        for (n, call) in self.calls().iter().enumerate() {
            assert!(
                call.readied,
                "{case}: inner call {} was made without poll_ready returning ready first",
                n + 1
            );
        }
    }
}

/// The scripted inner service. A clone has not reserved readiness: it must
/// be polled ready itself, as a clone of tower's `ConcurrencyLimit` must.
#[derive(Debug)]
pub struct Scripted {
    script: Script,
    readied: bool,
}

impl Clone for Scripted {
    fn clone(&self) -> Self {
        self.script.service()
    }
}

impl Service<Request> for Scripted {
    type Response = Response;
    type Error = BoxError;
    type Future = ScriptedFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let mut state = self.script.lock();
        state.ready_polls += 1;
        if self.readied {
            return Poll::Ready(Ok(()));
        }
        match state.readiness {
            Readiness::Ready => {
                self.readied = true;
                Poll::Ready(Ok(()))
            }
            Readiness::Pending => {
                state.waker_registrations += 1;
                state.ready_wakers.push(cx.waker().clone());
                Poll::Pending
            }
            Readiness::Fail => Poll::Ready(Err(ScriptError(Failed::Ready).into())),
        }
    }

    fn call(&mut self, request: Request) -> ScriptedFuture {
        let readied = std::mem::replace(&mut self.readied, false);
        let mut state = self.script.lock();
        state.calls.push(CallRecord { readied, request });
        state.in_flight += 1;
        state.peak = state.peak.max(state.in_flight);
        let reply = state.replies.pop_front().unwrap_or(state.default_reply);
        ScriptedFuture {
            script: self.script.clone(),
            call: state.calls.len(),
            reply,
            started: state.released,
            done: false,
        }
    }
}

/// The response future of [`Scripted`]; its drop before answering is recorded.
#[derive(Debug)]
pub struct ScriptedFuture {
    script: Script,
    call: usize,
    reply: Reply,
    started: u64,
    done: bool,
}

impl Future for ScriptedFuture {
    type Output = Result<Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        assert!(!self.done, "scripted response future polled after it answered");
        let result = {
            let mut state = self.script.lock();
            let result = match self.reply {
                Reply::Ok => Ok(Response { call: self.call }),
                Reply::Err => Err(ScriptError(Failed::Call).into()),
                Reply::Hang if state.released > self.started => Ok(Response { call: self.call }),
                Reply::Hang => {
                    state.hang_wakers.push(cx.waker().clone());
                    return Poll::Pending;
                }
            };
            state.in_flight -= 1;
            state.completed += 1;
            result
        };
        self.done = true;
        Poll::Ready(result)
    }
}

impl Drop for ScriptedFuture {
    fn drop(&mut self) {
        if !self.done {
            let mut state = self.script.lock();
            state.in_flight -= 1;
            state.dropped += 1;
        }
    }
}

/// The service under test, boxed so every check takes every subject.
pub type Svc = BoxCloneService<Request, Response, BoxError>;

type Switch = Arc<dyn Fn(bool) + Send + Sync>;

/// A layer (or stack) around a [`Scripted`] service, with what the checks
/// need to know about it.
pub struct Subject {
    script: Script,
    service: Svc,
    concurrency: Option<usize>,
    queue: usize,
    switch: Option<Switch>,
    refused: Vec<Option<String>>,
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subject")
            .field("concurrency", &self.concurrency)
            .field("queue", &self.queue)
            .field("switch", &self.switch.is_some())
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

impl Subject {
    /// `layer` around a fresh scripted service; no concurrency limit, no
    /// queue, no switch, no impossible configuration listed.
    pub fn new<L>(layer: L) -> Self
    where
        L: Layer<Scripted>,
        L::Service: Service<Request, Response = Response> + Clone + Send + 'static,
        <L::Service as Service<Request>>::Error: Into<BoxError>,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        let script = Script::new();
        let service = BoxCloneService::new(layer.layer(script.service()).map_err(Into::into));
        Self {
            script,
            service,
            concurrency: None,
            queue: 0,
            switch: None,
            refused: Vec::new(),
        }
    }

    /// At most `limit` calls reach the inner service at once.
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = Some(limit);
        self
    }

    /// At most `places` calls wait for admission; the rest are rejected.
    pub fn queue(mut self, places: usize) -> Self {
        self.queue = places;
        self
    }

    /// How to make the layer reject new calls (`false`) and admit them
    /// again (`true`), e.g. a breaker's `force_open` and `reset`.
    pub fn switch(mut self, switch: impl Fn(bool) + Send + Sync + 'static) -> Self {
        self.switch = Some(Arc::new(switch));
        self
    }

    /// Configurations `build()` must refuse, each as [`refused`] made it.
    pub fn refuses(mut self, refused: impl IntoIterator<Item = Option<String>>) -> Self {
        self.refused.extend(refused);
        self
    }

    /// The script of the inner service.
    pub fn script(&self) -> &Script {
        &self.script
    }

    /// A new clone of the service under test.
    pub fn service(&self) -> Svc {
        self.service.clone()
    }
}

/// What a `build()` result says for [`Subject::refuses`]: the error's text
/// when it was refused, `None` when it was accepted.
pub fn refused<T, E: fmt::Display>(result: Result<T, E>) -> Option<String> {
    result.err().map(|e| e.to_string())
}

/// Lets every spawned task run until it waits on something; time does not move.
pub async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

/// Counts the wakes of a waker.
#[derive(Debug, Default)]
pub struct WakeCounter(AtomicUsize);

impl WakeCounter {
    /// A waker counting into a new counter.
    pub fn waker() -> (Waker, Arc<WakeCounter>) {
        let counter = Arc::new(WakeCounter::default());
        (Waker::from(Arc::clone(&counter)), counter)
    }

    /// Wakes so far.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Wake for WakeCounter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type Task = JoinHandle<Result<Response, BoxError>>;

/// Calls `n` times, each on a fresh clone polled ready; the response
/// futures run as tasks. Returns them once they all settled.
async fn start_calls(subject: &Subject, n: usize) -> Vec<Task> {
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let mut svc = subject.service();
        svc.ready().await.expect("the inner service is ready");
        tasks.push(tokio::spawn(svc.call(REQUEST)));
    }
    settle().await;
    tasks
}

/// How many calls a fill is made of: enough to take every permit and queue
/// place and be refused twice.
fn overfill(subject: &Subject) -> usize {
    subject.concurrency.map_or(4, |limit| limit + subject.queue + 2)
}

/// Checks the calls of `tasks` (all started after the inner service had no
/// call in flight) against the subject's limits: exactly the admitted number
/// reach the inner service, exactly the queue's size wait, and the rest fail
/// with the layer's own rejection. Returns the calls still running or waiting.
async fn assert_admitted(case: &str, subject: &Subject, tasks: Vec<Task>) -> Vec<Task> {
    let total = tasks.len();
    let (finished, unfinished): (Vec<Task>, Vec<Task>) = tasks.into_iter().partition(|t| t.is_finished());
    let in_flight = subject.script.in_flight();
    let expected_in_flight = subject.concurrency.map_or(total, |limit| limit.min(total));
    assert_eq!(
        in_flight, expected_in_flight,
        "{case}: calls let through to the inner service"
    );
    let expected_waiting = subject.queue.min(total - expected_in_flight);
    assert_eq!(
        unfinished.len() - in_flight,
        expected_waiting,
        "{case}: calls waiting for admission"
    );
    for task in finished {
        let err = task
            .await
            .expect("the call's task ran")
            .expect_err("a finished call over the limit was rejected");
        assert!(
            find::<ScriptError>(&*err).is_none(),
            "{case}: a call over the limit reached the inner service ({err})"
        );
    }
    unfinished
}

/// Answers every call, now and later, and waits for `tasks` to end.
async fn finish(subject: &Subject, tasks: Vec<Task>) {
    subject.script.set_default_reply(Reply::Ok);
    subject.script.release();
    for task in tasks {
        let _ = task.await.expect("the call's task ran");
    }
}

/// The inner service's `poll_ready` returned ready on the very service value
/// each `call` was made on: first calls, clones, calls that waited for
/// readiness, and retry attempts after a failure and after a pending
/// readiness.
pub async fn ready_before_every_call(case: &str, subject: Subject) {
    let script = subject.script.clone();
    // Plain calls on clones, some failing (a retrying layer retries them).
    script.reply([Reply::Err, Reply::Ok, Reply::Err, Reply::Err, Reply::Ok]);
    for _ in 0..4 {
        let _ = subject.service().oneshot(REQUEST).await;
    }
    // A call that waits for the inner readiness.
    script.set_readiness(Readiness::Pending);
    let calls = script.call_count();
    let waiting = tokio::spawn(subject.service().oneshot(REQUEST));
    settle().await;
    if waiting.is_finished() {
        // Only a layer's own fast rejection may end it before the inner service is ready.
        script.assert_every_call_readied(case);
        let err = waiting
            .await
            .expect("the call's task ran")
            .expect_err("no answer without a call");
        assert!(find::<ScriptError>(&*err).is_none(), "{case}: {err}");
    } else {
        script.set_readiness(Readiness::Ready);
        let _ = waiting.await.expect("the call's task ran");
    }
    assert_eq!(
        script.call_count(),
        calls + usize::from(script.readiness() == Readiness::Ready),
        "{case}: calls made"
    );
    script.set_readiness(Readiness::Ready);
    // A failed attempt, then a pending readiness before any next attempt.
    script.reply([Reply::Err, Reply::Ok]);
    let calls = script.call_count();
    let attempt = tokio::spawn(subject.service().oneshot(REQUEST));
    settle().await;
    if script.call_count() == calls {
        // A layer rejecting fast (an open breaker) makes no attempt at all.
        let err = attempt
            .await
            .expect("the call's task ran")
            .expect_err("no answer without a call");
        assert!(find::<ScriptError>(&*err).is_none(), "{case}: {err}");
    } else {
        assert_eq!(script.call_count(), calls + 1, "{case}: one first attempt");
        script.set_readiness(Readiness::Pending);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            script.call_count(),
            calls + 1,
            "{case}: an attempt was made while the inner service was pending"
        );
        script.set_readiness(Readiness::Ready);
        let _ = attempt.await.expect("the call's task ran");
    }
    assert!(script.call_count() >= 2, "{case}: the calls reached the inner service");
    script.assert_every_call_readied(case);
}

/// However many clones, and clones of readied clones, call at once, exactly
/// the admitted number reach the inner service and exactly the queue's size
/// waits; the queued calls run once the first ones end, and the peak never
/// exceeds the limit.
pub async fn clones_never_exceed_admitted_concurrency(case: &str, subject: Subject) {
    let script = subject.script.clone();
    script.set_default_reply(Reply::Hang);
    let pairs = overfill(&subject).div_ceil(2) + 1;
    let mut tasks = Vec::new();
    for _ in 0..pairs {
        let mut svc = subject.service();
        svc.ready().await.expect("the inner service is ready");
        // A clone of a readied service has reserved nothing: it is polled itself.
        let mut copy = svc.clone();
        tasks.push(tokio::spawn(svc.call(REQUEST)));
        copy.ready().await.expect("the inner service is ready");
        tasks.push(tokio::spawn(copy.call(REQUEST)));
    }
    settle().await;
    let tasks = assert_admitted(case, &subject, tasks).await;
    finish(&subject, tasks).await;
    if let Some(limit) = subject.concurrency {
        assert!(
            script.peak() <= limit,
            "{case}: {} calls in flight at once, limit {limit}",
            script.peak()
        );
    }
    assert_eq!(script.in_flight(), 0, "{case}: calls still in flight");
    script.assert_every_call_readied(case);
}

/// Polls `fut` to its end with a counting waker, checking that each pending
/// poll left the waker where the next step wakes it: with the inner
/// service's readiness, or with a timer. A layer that woke itself while
/// pending, or that nothing wakes after the step it waits for, fails.
async fn drive<F: Future + Unpin>(case: &str, script: &Script, mut fut: F) -> F::Output {
    let (waker, wakes) = WakeCounter::waker();
    let mut cx = Context::from_waker(&waker);
    for _ in 0..100 {
        let before = wakes.count();
        if let Poll::Ready(out) = Pin::new(&mut fut).poll(&mut cx) {
            return out;
        }
        assert_eq!(
            wakes.count(),
            before,
            "{case}: the future woke itself while pending (busy polling)"
        );
        if script.readiness() == Readiness::Pending && script.has_ready_waker() {
            script.set_readiness(Readiness::Ready);
        } else {
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert!(
            wakes.count() > before,
            "{case}: the pending future's waker was not woken by what it waited for"
        );
    }
    panic!("{case}: the future did not finish within 100 steps");
}

/// A pending inner readiness leaves the caller's waker with the inner
/// service, the layer does not wake itself (busy polling) while it waits,
/// and the inner service's wake makes it ready. The same holds for a
/// response future whose next attempt waits for readiness.
pub async fn pending_readiness_registers_waker(case: &str, subject: Subject) {
    let script = subject.script.clone();
    script.set_readiness(Readiness::Pending);
    let mut svc = subject.service();
    let (waker, wakes) = WakeCounter::waker();
    let mut cx = Context::from_waker(&waker);
    for _ in 0..3 {
        let polls = script.ready_polls();
        assert!(
            svc.poll_ready(&mut cx).is_pending(),
            "{case}: ready while the inner service is pending"
        );
        assert!(
            script.ready_polls() - polls <= 1,
            "{case}: the inner service was polled again and again in one poll"
        );
    }
    assert!(
        script.waker_registrations() >= 1,
        "{case}: the inner service got no waker"
    );
    assert_eq!(
        wakes.count(),
        0,
        "{case}: the service woke itself while pending (busy polling)"
    );
    script.set_readiness(Readiness::Ready);
    assert!(
        wakes.count() >= 1,
        "{case}: the inner service's wake did not reach the caller"
    );
    assert!(
        matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))),
        "{case}: not ready once the inner service is"
    );

    // A response future: an attempt fails, then the inner service is pending.
    script.reply([Reply::Err, Reply::Ok]);
    let calls = script.call_count();
    let fut = svc.call(REQUEST);
    script.set_readiness(Readiness::Pending);
    let result = drive(case, &script, fut).await;
    match result {
        Ok(response) => assert_eq!(response.call, calls + 2, "{case}: answered by the second attempt"),
        Err(err) => {
            assert_eq!(
                find::<ScriptError>(&*err),
                Some(&ScriptError(Failed::Call)),
                "{case}: {err}"
            );
            assert_eq!(
                script.call_count(),
                calls + 1,
                "{case}: a failure not retried is not called again"
            );
        }
    }
    script.assert_every_call_readied(case);
}

/// The inner service's readiness error and call error come back to the
/// caller findable by `palisade_core::error::find`, not replaced by another.
pub async fn errors_stay_findable(case: &str, subject: Subject) {
    let script = subject.script.clone();
    script.set_readiness(Readiness::Fail);
    let err = subject
        .service()
        .ready()
        .await
        .map(drop)
        .expect_err("the readiness failure comes back");
    assert_eq!(
        find::<ScriptError>(&*err),
        Some(&ScriptError(Failed::Ready)),
        "{case}: readiness error lost: {err}"
    );
    script.set_readiness(Readiness::Ready);
    script.set_default_reply(Reply::Err);
    let err = subject
        .service()
        .oneshot(REQUEST)
        .await
        .expect_err("the call failure comes back");
    assert_eq!(
        find::<ScriptError>(&*err),
        Some(&ScriptError(Failed::Call)),
        "{case}: call error lost: {err}"
    );
    assert!(script.call_count() >= 1, "{case}: the call reached the inner service");
}

/// Dropping what a caller holds gives back everything it held: readied
/// clones (a reserved probe slot), running response futures (permits) and
/// queued ones (queue places), so the layer admits as much as before. A
/// response future dropped after a failed attempt makes no further call.
pub async fn dropping_releases_what_was_held(case: &str, subject: Subject) {
    let script = subject.script.clone();
    script.set_default_reply(Reply::Hang);
    // Readied clones, dropped without a call.
    let mut readied = Vec::new();
    for _ in 0..overfill(&subject) {
        let mut svc = subject.service();
        svc.ready().await.expect("the inner service is ready");
        readied.push(svc);
    }
    drop(readied);
    // Running and queued response futures, dropped.
    let n = overfill(&subject);
    let tasks = start_calls(&subject, n).await;
    let tasks = assert_admitted(case, &subject, tasks).await;
    let in_flight = script.in_flight();
    tasks.iter().for_each(|t| t.abort());
    settle().await;
    assert_eq!(
        script.in_flight(),
        0,
        "{case}: dropped calls still in flight at the inner service"
    );
    assert_eq!(
        script.dropped(),
        in_flight,
        "{case}: the inner futures were dropped with theirs"
    );
    // Everything is admitted again as before.
    let tasks = start_calls(&subject, n).await;
    let tasks = assert_admitted(case, &subject, tasks).await;
    finish(&subject, tasks).await;
    // A failed attempt, then the caller gives up.
    script.reply([Reply::Err]);
    let calls = script.call_count();
    let gave_up = tokio::spawn(subject.service().oneshot(REQUEST));
    settle().await;
    assert_eq!(script.call_count(), calls + 1, "{case}: the first attempt was made");
    gave_up.abort();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        script.call_count(),
        calls + 1,
        "{case}: a dropped future made another attempt"
    );
    script.assert_every_call_readied(case);
}

/// A service that answered ready takes its call, even when the inner
/// service stopped being ready for anyone else meanwhile and time went by;
/// polling it again keeps it ready.
pub async fn readiness_is_stable_until_the_call(case: &str, subject: Subject) {
    let script = subject.script.clone();
    let mut svc = subject.service();
    svc.ready().await.expect("the inner service is ready");
    script.set_readiness(Readiness::Pending);
    tokio::time::advance(Duration::from_secs(600)).await;
    let (waker, _wakes) = WakeCounter::waker();
    assert!(
        matches!(svc.poll_ready(&mut Context::from_waker(&waker)), Poll::Ready(Ok(()))),
        "{case}: a ready service stopped being ready before its call"
    );
    let calls = script.call_count();
    let response = svc.call(REQUEST).await.expect("the readied call is made");
    assert_eq!(response.call, calls + 1, "{case}: answered by the inner service");
    script.assert_every_call_readied(case);
}

/// When what decides admission changed while the inner service was pending,
/// the call follows the state at the call: a subject with a switch is turned
/// to rejecting while pending and must reject, without calling the inner
/// service; a subject with a concurrency limit is filled up while pending and
/// must stay within it. A subject with neither must make the call once the
/// inner service is ready.
pub async fn admission_follows_current_state(case: &str, subject: Subject) {
    let script = subject.script.clone();
    subject
        .service()
        .oneshot(REQUEST)
        .await
        .expect("a first call goes through");
    let (waker, _wakes) = WakeCounter::waker();
    let mut cx = Context::from_waker(&waker);
    let mut checked = false;

    if let Some(switch) = subject.switch.clone() {
        script.set_readiness(Readiness::Pending);
        let mut svc = subject.service();
        assert!(
            svc.poll_ready(&mut cx).is_pending(),
            "{case}: ready while admitting and the inner service pending"
        );
        switch(false);
        script.set_readiness(Readiness::Ready);
        let calls = script.call_count();
        let result = match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => svc.call(REQUEST).await,
            Poll::Ready(Err(err)) => Err(err),
            Poll::Pending => panic!("{case}: pending once the inner service is ready"),
        };
        let err = result.expect_err(&format!(
            "{case}: a call admitted on the state before the inner service was ready went through after the layer switched to rejecting"
        ));
        assert!(find::<ScriptError>(&*err).is_none(), "{case}: {err}");
        assert_eq!(
            script.call_count(),
            calls,
            "{case}: the rejected call reached the inner service"
        );
        switch(true);
        subject.service().oneshot(REQUEST).await.expect("admitted again");
        checked = true;
    }

    if let Some(limit) = subject.concurrency {
        script.set_readiness(Readiness::Pending);
        let mut svc = subject.service();
        assert!(
            svc.poll_ready(&mut cx).is_pending(),
            "{case}: ready with the inner service pending"
        );
        script.set_readiness(Readiness::Ready);
        script.set_default_reply(Reply::Hang);
        let tasks = start_calls(&subject, limit + subject.queue).await;
        let waiting_before = tasks.iter().filter(|t| !t.is_finished()).count() - script.in_flight();
        let result = match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {
                let calls = script.call_count();
                let mut call = svc.call(REQUEST);
                match Pin::new(&mut call).poll(&mut cx) {
                    Poll::Ready(result) => Some(result),
                    Poll::Pending => {
                        let waiting = waiting_before + usize::from(script.call_count() == calls);
                        assert!(
                            script.in_flight() <= limit,
                            "{case}: {} calls in flight, limit {limit}",
                            script.in_flight()
                        );
                        assert!(
                            waiting <= subject.queue,
                            "{case}: {waiting} calls queued, {} places",
                            subject.queue
                        );
                        drop(call);
                        None
                    }
                }
            }
            Poll::Ready(Err(err)) => Some(Err(err)),
            Poll::Pending => panic!("{case}: pending once the inner service is ready"),
        };
        if let Some(Err(err)) = &result {
            assert!(find::<ScriptError>(&**err).is_none(), "{case}: {err}");
        }
        assert!(
            script.peak() <= limit,
            "{case}: {} calls in flight at once, limit {limit}",
            script.peak()
        );
        finish(&subject, tasks).await;

        // And the other way: full while pending, free at the call.
        script.set_default_reply(Reply::Hang);
        let tasks = start_calls(&subject, limit).await;
        script.set_readiness(Readiness::Pending);
        let mut svc = subject.service();
        let calls = script.call_count();
        if svc.poll_ready(&mut cx).is_pending() {
            finish(&subject, tasks).await;
            script.set_readiness(Readiness::Ready);
            assert!(
                matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))),
                "{case}: not ready once the inner service is"
            );
            let calls = script.call_count();
            let response = svc.call(REQUEST).await.expect("a free layer admits the call");
            assert_eq!(response.call, calls + 1, "{case}: answered by the inner service");
        } else {
            // A layer deciding in poll_ready rejects fast instead of waiting, and keeps that decision.
            let err = svc
                .call(REQUEST)
                .await
                .expect_err("a full layer ready without its inner service rejects");
            assert!(find::<ScriptError>(&*err).is_none(), "{case}: {err}");
            assert_eq!(
                script.call_count(),
                calls,
                "{case}: the rejected call reached the inner service"
            );
            finish(&subject, tasks).await;
            script.set_readiness(Readiness::Ready);
        }
        checked = true;
    }

    if !checked {
        script.set_readiness(Readiness::Pending);
        let mut svc = subject.service();
        assert!(
            svc.poll_ready(&mut cx).is_pending(),
            "{case}: ready with the inner service pending"
        );
        script.set_readiness(Readiness::Ready);
        assert!(
            matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))),
            "{case}: not ready once the inner service is"
        );
        let calls = script.call_count();
        let response = svc.call(REQUEST).await.expect("the call is made");
        assert_eq!(response.call, calls + 1, "{case}: answered by the inner service");
    }
    script.assert_every_call_readied(case);
}

/// Every configuration the subject lists as impossible was refused by
/// `build()` with an error that says why.
pub async fn impossible_configuration_fails_at_build(case: &str, subject: Subject) {
    assert!(!subject.refused.is_empty(), "{case}: lists no impossible configuration");
    for (n, refused) in subject.refused.iter().enumerate() {
        let reason = refused
            .as_deref()
            .unwrap_or_else(|| panic!("{case}: impossible configuration {} was accepted by build()", n + 1));
        assert!(
            !reason.is_empty(),
            "{case}: configuration {} refused without a reason",
            n + 1
        );
    }
}

/// One test per contract check for each `name => subject;` line, as a
/// module `name` of `#[tokio::test]`s on paused time. The subject
/// expression is evaluated in an async block, so it may `.await`.
#[macro_export]
macro_rules! contract_suite {
    ($($case:ident => $subject:expr;)+) => {
        $(
            mod $case {
                #[allow(unused_imports)]
                use super::*;

                async fn subject() -> $crate::contract::Subject {
                    $subject
                }

                $crate::contract_suite!(@checks $case:
                    ready_before_every_call,
                    clones_never_exceed_admitted_concurrency,
                    pending_readiness_registers_waker,
                    errors_stay_findable,
                    dropping_releases_what_was_held,
                    readiness_is_stable_until_the_call,
                    admission_follows_current_state,
                    impossible_configuration_fails_at_build,
                );
            }
        )+
    };
    (@checks $case:ident: $($check:ident,)+) => {
        $(
            #[::tokio::test(start_paused = true)]
            async fn $check() {
                $crate::contract::$check(stringify!($case), subject().await).await;
            }
        )+
    };
}

#[cfg(test)]
mod tests {
    //! The checks fail on layers that break the contract.

    use super::*;
    use tower::layer::layer_fn;

    /// Calls a fresh clone of the inner service without polling it.
    #[derive(Clone)]
    struct SkipsReadiness<S>(S);

    impl<S: Service<Request> + Clone> Service<Request> for SkipsReadiness<S> {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request) -> S::Future {
            self.0.clone().call(request)
        }
    }

    /// Wakes itself whenever the inner service is pending.
    #[derive(Clone)]
    struct BusyPolls<S>(S);

    impl<S: Service<Request>> Service<Request> for BusyPolls<S> {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            let poll = self.0.poll_ready(cx);
            if poll.is_pending() {
                cx.waker().wake_by_ref();
            }
            poll
        }

        fn call(&mut self, request: Request) -> S::Future {
            self.0.call(request)
        }
    }

    /// Never drops the inner response future it was given.
    #[derive(Clone)]
    struct Leaks<S>(S);

    struct Leaked<F>(Option<Pin<Box<F>>>);

    impl<F: Future> Future for Leaked<F> {
        type Output = F::Output;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.0.as_mut().expect("polled after drop").as_mut().poll(cx)
        }
    }

    impl<F> Drop for Leaked<F> {
        fn drop(&mut self) {
            std::mem::forget(self.0.take());
        }
    }

    impl<S: Service<Request>> Service<Request> for Leaks<S> {
        type Response = S::Response;
        type Error = S::Error;
        type Future = Leaked<S::Future>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.0.poll_ready(cx)
        }

        fn call(&mut self, request: Request) -> Self::Future {
            Leaked(Some(Box::pin(self.0.call(request))))
        }
    }

    /// Decides admission in `poll_ready` and keeps that decision even when
    /// it waited for the inner service meanwhile.
    #[derive(Clone)]
    struct Stale<S> {
        inner: S,
        open: Arc<std::sync::atomic::AtomicBool>,
        admitted: Option<bool>,
    }

    impl Service<Request> for Stale<Scripted> {
        type Response = Response;
        type Error = BoxError;
        type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            let admitted = *self.admitted.get_or_insert_with(|| !self.open.load(Ordering::SeqCst));
            if !admitted {
                return Poll::Ready(Ok(()));
            }
            self.inner.poll_ready(cx)
        }

        fn call(&mut self, request: Request) -> Self::Future {
            if self.admitted.take() == Some(true) {
                Box::pin(self.inner.call(request))
            } else {
                Box::pin(std::future::ready(Err("open".into())))
            }
        }
    }

    fn identity() -> tower::layer::util::Identity {
        tower::layer::util::Identity::new()
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "without poll_ready returning ready first")]
    async fn a_call_without_readiness_is_caught() {
        ready_before_every_call("skips", Subject::new(layer_fn(SkipsReadiness))).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "woke itself while pending")]
    async fn busy_polling_is_caught() {
        pending_readiness_registers_waker("busy", Subject::new(layer_fn(BusyPolls))).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "readiness error lost")]
    async fn an_error_turned_into_text_is_caught() {
        let lossy = layer_fn(|inner: Scripted| inner.map_err(|e: BoxError| BoxError::from(e.to_string())));
        errors_stay_findable("lossy", Subject::new(lossy)).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "calls let through to the inner service")]
    async fn a_limit_not_kept_is_caught() {
        clones_never_exceed_admitted_concurrency("unlimited", Subject::new(identity()).concurrency(2)).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "was accepted by build()")]
    async fn an_accepted_impossible_configuration_is_caught() {
        let accepted = Subject::new(identity()).refuses([refused(Ok::<(), String>(()))]);
        impossible_configuration_fails_at_build("accepted", accepted).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "dropped calls still in flight")]
    async fn a_leaked_inner_future_is_caught() {
        dropping_releases_what_was_held("leaks", Subject::new(layer_fn(Leaks))).await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "went through after the layer switched to rejecting")]
    async fn a_stale_admission_is_caught() {
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let switch = Arc::clone(&open);
        let stale = layer_fn(move |inner| Stale {
            inner,
            open: Arc::clone(&open),
            admitted: None,
        });
        let subject = Subject::new(stale).switch(move |admit| switch.store(!admit, Ordering::SeqCst));
        admission_follows_current_state("stale", subject).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_plain_service_keeps_the_contract() {
        ready_before_every_call("identity", Subject::new(identity())).await;
        pending_readiness_registers_waker("identity", Subject::new(identity())).await;
        errors_stay_findable("identity", Subject::new(identity())).await;
        dropping_releases_what_was_held("identity", Subject::new(identity())).await;
        readiness_is_stable_until_the_call("identity", Subject::new(identity())).await;
        admission_follows_current_state("identity", Subject::new(identity())).await;
    }
}
