//! The response future of [`Hedge`](crate::Hedge).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use palisade_core::error::{is_local_rejection, is_refused_unsent};
use palisade_core::telemetry::hedge as names;
use palisade_core::{AsError, Classify, Outcome};
use palisade_retry::{ReplayBody, Withdrawal};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::state::Shared;

type Req<B> = Request<ReplayBody<B>>;

pin_project! {
    /// The response future of [`Hedge`](crate::Hedge): the original attempt
    /// and, past the delay, up to `max_attempts - 1` hedges; the first good
    /// answer wins and the other attempts are dropped.
    pub struct ResponseFuture<S, B, C>
    where
        S: Service<Req<B>>,
    {
        #[pin]
        original: Option<S::Future>,
        original_started: Instant,
        // Hedges are the rare path: one allocation each.
        hedges: Vec<Hedge<S::Future>>,
        #[pin]
        timer: Option<Sleep>,
        // What a hedge needs: a clone of the service and of the request.
        // `None` once no more hedges will be sent.
        next: Option<(S, Req<B>)>,
        sent: u32,
        failure: Option<Result<S::Response, S::Error>>,
        shared: Arc<Shared<C>>,
    }
}

/// A hedge in flight.
struct Hedge<F> {
    future: Pin<Box<F>>,
    started: Instant,
    /// Its draw on the budget, given back if this side refuses it.
    withdrawal: Option<Withdrawal>,
    /// Whether it carries the idempotency key.
    keyed: bool,
}

impl<S, B, C> ResponseFuture<S, B, C>
where
    S: Service<Req<B>>,
{
    pub(crate) fn new(original: S::Future, next: Option<(S, Req<B>)>, shared: Arc<Shared<C>>) -> Self {
        let timer = next.as_ref().and_then(|_| shared.delay()).map(tokio::time::sleep);
        Self {
            original: Some(original),
            original_started: Instant::now(),
            hedges: Vec::new(),
            next: if timer.is_some() { next } else { None },
            timer,
            sent: 1,
            failure: None,
            shared,
        }
    }
}

impl<S, B, C> fmt::Debug for ResponseFuture<S, B, C>
where
    S: Service<Req<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("sent", &self.sent)
            .field("in_flight", &(usize::from(self.original.is_some()) + self.hedges.len()))
            .finish_non_exhaustive()
    }
}

impl<S, B, C, ResB> Future for ResponseFuture<S, B, C>
where
    S: Service<Req<B>, Response = Response<ResB>>,
    S::Error: AsError,
    C: Classify<Response<ResB>>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared = &**this.shared;
        loop {
            if let Some(original) = this.original.as_mut().as_pin_mut()
                && let Poll::Ready(result) = original.poll(cx)
            {
                this.original.set(None);
                let outcome = classify(shared, &result);
                shared.record(this.original_started.elapsed(), outcome);
                // A 409 to the key the hedges carry too: a hedge reached the
                // server first and runs under the key; its answer is the one
                // to wait for.
                let hedge_holds_key = matches!(&result, Ok(res) if res.status() == StatusCode::CONFLICT)
                    && this.hedges.iter().any(|hedge| hedge.keyed);
                if outcome == Outcome::Success && !hedge_holds_key {
                    shared.original_wins_total.increment(1);
                    this.hedges.clear();
                    return Poll::Ready(result);
                }
                if hedge_holds_key {
                    // Any further hedge would get the same 409.
                    *this.next = None;
                    this.timer.set(None);
                }
                this.failure.get_or_insert(result);
            }
            let mut i = 0;
            while i < this.hedges.len() {
                if let Poll::Ready(result) = this.hedges[i].future.as_mut().poll(cx) {
                    let hedge = this.hedges.swap_remove(i);
                    if let Err(e) = &result
                        && is_local_rejection(e.as_error())
                    {
                        // No answer came back: refused on this side (a full
                        // bulkhead, an open breaker), when no duplicate went
                        // out and the draw on the budget is given back, or
                        // cut by the deadline, when it may have gone out and
                        // the draw stands. The attempts in flight go on.
                        if is_refused_unsent(e.as_error())
                            && let Some(withdrawal) = hedge.withdrawal
                        {
                            withdrawal.refund();
                        }
                        continue;
                    }
                    if hedge.keyed
                        && let Ok(res) = &result
                        && res.status() == StatusCode::CONFLICT
                    {
                        // The server is still running the original with this
                        // key: its answer is the one to wait for.
                        continue;
                    }
                    let outcome = classify(shared, &result);
                    shared.record(hedge.started.elapsed(), outcome);
                    if outcome == Outcome::Success {
                        shared.hedge_wins_total.increment(1);
                        if this.original.is_some() {
                            shared.record_ran(this.original_started.elapsed());
                        }
                        // The losers are dropped now, not with this future.
                        this.original.set(None);
                        this.hedges.clear();
                        return Poll::Ready(result);
                    }
                    this.failure.get_or_insert(result);
                } else {
                    i += 1;
                }
            }
            if this.original.is_none() && this.hedges.is_empty() {
                // Every attempt sent has failed: the first failure answers.
                if let Some(failure) = this.failure.take() {
                    return Poll::Ready(failure);
                }
            }
            // Time for a hedge?
            let Some(timer) = this.timer.as_mut().as_pin_mut() else {
                return Poll::Pending;
            };
            if timer.poll(cx).is_pending() {
                return Poll::Pending;
            }
            let Some((svc, _)) = this.next.as_mut() else {
                this.timer.set(None);
                return Poll::Pending;
            };
            match svc.poll_ready(cx) {
                // The inner service is busy: the attempts in flight go on,
                // and the hedge waits for readiness.
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => {
                    this.next.take();
                    this.timer.set(None);
                    continue;
                }
                Poll::Ready(Ok(())) => {}
            }
            let Some((mut svc, template)) = this.next.take() else {
                return Poll::Pending;
            };
            // Copied before the withdrawal, so a body that can no longer be
            // replayed costs the budget nothing.
            let Some(request) = replicate(&template) else {
                this.timer.set(None);
                continue;
            };
            let withdrawal = match &shared.budget {
                Some(budget) => match budget.withdrawal() {
                    Some(withdrawal) => Some(withdrawal),
                    None => {
                        shared.budget_exhausted_total.increment(1);
                        tracing::debug!(target: names::TARGET, name = &*shared.name, "not hedging: retry budget exhausted");
                        this.timer.set(None);
                        continue;
                    }
                },
                None => None,
            };
            *this.sent += 1;
            shared.hedges_total.increment(1);
            tracing::debug!(target: names::TARGET, name = &*shared.name, attempt = *this.sent, "hedging");
            let keyed = shared.carries_key(request.headers());
            this.hedges.push(Hedge {
                future: Box::pin(svc.call(request)),
                started: Instant::now(),
                withdrawal,
                keyed,
            });
            match shared.delay() {
                Some(delay) if *this.sent < shared.max_attempts => {
                    *this.next = Some((svc, template));
                    this.timer.set(Some(tokio::time::sleep(delay)));
                }
                _ => this.timer.set(None),
            }
        }
    }
}

/// Only a success wins; a failure waits for the other attempts.
fn classify<C, R, E>(shared: &Shared<C>, result: &Result<R, E>) -> Outcome
where
    C: Classify<R>,
    E: AsError,
{
    let result = result.as_ref().map_err(|e| e.as_error());
    shared.classifier.classify(result)
}

/// A copy of `req` with its body replayed from the start.
pub(crate) fn replicate<B>(req: &Req<B>) -> Option<Req<B>> {
    let mut clone = Request::new(req.body().try_clone()?);
    *clone.method_mut() = req.method().clone();
    *clone.uri_mut() = req.uri().clone();
    *clone.version_mut() = req.version();
    *clone.headers_mut() = req.headers().clone();
    *clone.extensions_mut() = req.extensions().clone();
    Some(clone)
}
