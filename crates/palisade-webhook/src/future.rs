//! Response futures of the verify and sign services.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use palisade_core::BoxError;
use palisade_core::body::{CollectError, Collected};
use palisade_core::telemetry::webhook;
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::error::{Reason, Rejection};
use crate::replay::{Claim, Lease, ReplayStore, StoreFuture};
use crate::scheme::SchemeKind;
use crate::sign::Signer;
use crate::state::{Answer, Outcome, Shared};
use crate::verify::stripe_event_id;
use palisade_core::timed::Timed;

pin_project! {
    /// The response future of [`Verify`](crate::Verify).
    pub struct VerifyFuture<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        #[pin]
        state: VerifyState<S, B>,
        shared: Arc<Shared>,
    }

    impl<S, B> PinnedDrop for VerifyFuture<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // The handler answered 2xx and its caller went away while the
            // acceptance was on its way to the store: it did its work, so
            // the acceptance must land, or the sender's redelivery (it never
            // heard the 2xx) runs the handler again once the in-flight mark
            // expires.
            if let VerifyStateProj::Accept { accept, .. } = this.state.project() {
                let accept = std::mem::replace(accept.future_mut(), Box::pin(std::future::pending()));
                this.shared.accept_elsewhere(accept);
            }
        }
    }
}

pin_project! {
    #[project = VerifyStateProj]
    enum VerifyState<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        Answer { answer: Option<Answer> },
        Collect {
            #[pin]
            body: B,
            collector: Collected,
            parts: Option<Parts>,
            inner: Option<S>,
        },
        Claim {
            #[pin]
            claim: Timed<StoreFuture<Claim>>,
            claimed: Option<Claimed>,
            request: Option<Request<Full<Bytes>>>,
            inner: Option<S>,
        },
        Call {
            #[pin]
            future: S::Future,
            claimed: Option<Claimed>,
        },
        Accept {
            #[pin]
            accept: Timed<StoreFuture<()>>,
            response: Option<S::Response>,
        },
    }
}

/// A message claimed in flight in the replay store: released unless the
/// handler accepts it, including when the call is dropped.
struct Claimed {
    store: Arc<dyn ReplayStore>,
    key: String,
    lease: Lease,
    keep: bool,
}

impl Drop for Claimed {
    fn drop(&mut self) {
        if !self.keep {
            self.store.release(&self.key, self.lease);
        }
    }
}

impl<S, B> std::fmt::Debug for VerifyFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyFuture")
            .field("name", &&*self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, B> VerifyFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
{
    pub(crate) fn rejected(shared: Arc<Shared>, rejection: Rejection) -> Self {
        Self {
            state: VerifyState::Answer {
                answer: Some(Answer::Rejected(rejection)),
            },
            shared,
        }
    }

    pub(crate) fn collecting(shared: Arc<Shared>, inner: S, parts: Parts, body: B) -> Self {
        Self {
            state: VerifyState::Collect {
                body,
                collector: Collected::default(),
                parts: Some(parts),
                inner: Some(inner),
            },
            shared,
        }
    }
}

impl<S, B, ResBody> Future for VerifyFuture<S, B>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>>,
    B: Body,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                VerifyStateProj::Answer { answer } => {
                    let answer = answer
                        .take()
                        .unwrap_or(Answer::Rejected(Rejection::new(Reason::BodyUnreadable)));
                    return Poll::Ready(Ok(this.shared.answer(answer)));
                }
                VerifyStateProj::Collect {
                    body,
                    collector,
                    parts,
                    inner,
                } => {
                    let bytes = match ready!(collector.poll_collect(body, this.shared.max_body, cx)) {
                        Ok(bytes) => bytes,
                        Err(CollectError::TooLarge) => {
                            return Poll::Ready(Ok(this
                                .shared
                                .answer(Answer::Rejected(Rejection::new(Reason::BodyTooLarge)))));
                        }
                        Err(CollectError::Failed(_)) => {
                            return Poll::Ready(Ok(this
                                .shared
                                .answer(Answer::Rejected(Rejection::new(Reason::BodyUnreadable)))));
                        }
                    };
                    let (Some(mut parts), Some(inner)) = (parts.take(), inner.take()) else {
                        return Poll::Ready(Ok(this
                            .shared
                            .answer(Answer::Rejected(Rejection::new(Reason::BodyUnreadable)))));
                    };
                    let verifier = &this.shared.verifier;
                    // Freshness is judged now, with the whole body in: a body
                    // held back past the tolerance (and past the replay
                    // window) must not carry the timestamp in with it.
                    let now = verifier.now();
                    let (mut verified, mac) = match verifier.verify_with_mac(&parts.headers, &bytes, now) {
                        Ok(verified) => verified,
                        Err(rejection) => return Poll::Ready(Ok(this.shared.answer(Answer::Rejected(rejection)))),
                    };
                    let replay = this.shared.replay.as_ref();
                    if replay.is_some()
                        && verified.scheme() == SchemeKind::Stripe
                        && let Some(id) = stripe_event_id(&bytes)
                    {
                        verified.set_id(&id);
                    }
                    let key = replay.and_then(|_| {
                        verifier.replay_key(&verified, mac.as_ref(), this.shared.replay_scope.as_deref())
                    });
                    parts.extensions.insert(verified);
                    let request = Request::from_parts(parts, Full::new(bytes));
                    match (replay, key) {
                        (Some(store), Some(key)) => {
                            // A UUID v7: time-ordered, 74 random bits, unique across instances.
                            let lease = Lease::new(uuid::Uuid::now_v7().as_u128());
                            VerifyState::Claim {
                                claim: Timed::new(
                                    store.claim(&key, lease, this.shared.lock_expiry),
                                    this.shared.store_timeout,
                                ),
                                // Dropped before the store answers, the claim may or
                                // may not have been recorded: it is released (only
                                // this attempt's own mark), so the sender's retry is
                                // processed rather than refused until the mark expires.
                                claimed: Some(Claimed {
                                    store: Arc::clone(store),
                                    key,
                                    lease,
                                    keep: false,
                                }),
                                request: Some(request),
                                inner: Some(inner),
                            }
                        }
                        _ => {
                            this.shared.counters.increment(Outcome::Verified);
                            let mut inner = inner;
                            VerifyState::Call {
                                future: inner.call(request),
                                claimed: None,
                            }
                        }
                    }
                }
                VerifyStateProj::Claim {
                    claim,
                    claimed,
                    request,
                    inner,
                } => {
                    let first = ready!(claim.poll(cx));
                    let (Some(mut guard), Some(request), Some(mut inner)) =
                        (claimed.take(), request.take(), inner.take())
                    else {
                        return Poll::Ready(Ok(this
                            .shared
                            .answer(Answer::Rejected(Rejection::new(Reason::ReplayStoreUnavailable)))));
                    };
                    match first {
                        Ok(Claim::Acquired) => {
                            this.shared.counters.increment(Outcome::Verified);
                            VerifyState::Call {
                                future: inner.call(request),
                                claimed: Some(guard),
                            }
                        }
                        // The mark belongs to another delivery: this call leaves it alone.
                        Ok(found) => {
                            guard.keep = true;
                            let answer = match found {
                                Claim::InFlight => Answer::InFlight,
                                Claim::Accepted | Claim::Acquired => Answer::Duplicate,
                            };
                            return Poll::Ready(Ok(this.shared.answer(answer)));
                        }
                        // The claim may have been recorded before the store failed;
                        // the guard releases this attempt's own mark, if any.
                        Err(_) => {
                            drop(guard);
                            return Poll::Ready(Ok(this
                                .shared
                                .answer(Answer::Rejected(Rejection::new(Reason::ReplayStoreUnavailable)))));
                        }
                    }
                }
                VerifyStateProj::Call { future, claimed } => {
                    let result = ready!(future.poll(cx));
                    match (result, claimed.take()) {
                        // Accepted: recorded before the sender hears 2xx, so a
                        // redelivery after the answer is a duplicate. From here on
                        // the mark is never released, even if this call is dropped.
                        (Ok(response), Some(mut guard)) if response.status().is_success() => {
                            guard.keep = true;
                            VerifyState::Accept {
                                accept: Timed::new(
                                    guard.store.accept(&guard.key, this.shared.replay_window),
                                    this.shared.store_timeout,
                                ),
                                response: Some(response),
                            }
                        }
                        // Anything else releases the mark (the guard's drop).
                        (result, guard) => {
                            drop(guard);
                            return Poll::Ready(result);
                        }
                    }
                }
                VerifyStateProj::Accept { accept, response } => {
                    let accepted = ready!(accept.poll(cx));
                    let response = response.take();
                    // Recorded: nothing is left for a drop to hand over.
                    this.state.set(VerifyState::Answer { answer: None });
                    if let Err(error) = accepted {
                        // The handler did its work: the sender is told so. The
                        // in-flight mark stays until the lock expiry.
                        tracing::warn!(
                            target: webhook::TARGET,
                            name = &*this.shared.name,
                            scheme = this.shared.verifier.scheme().as_str(),
                            %error,
                            "could not record an accepted webhook"
                        );
                    }
                    return Poll::Ready(Ok(match response {
                        Some(response) => response,
                        None => this
                            .shared
                            .answer(Answer::Rejected(Rejection::new(Reason::ReplayStoreUnavailable))),
                    }));
                }
            };
            this.state.set(next);
        }
    }
}

pin_project! {
    /// The response future of [`Sign`](crate::Sign).
    pub struct SignFuture<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        #[pin]
        state: SignState<S, B>,
    }
}

pin_project! {
    #[project = SignStateProj]
    enum SignState<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        Collect {
            #[pin]
            body: B,
            collector: Collected,
            parts: Option<Parts>,
            inner: Option<S>,
            signer: Signer,
        },
        Call {
            #[pin]
            future: S::Future,
        },
    }
}

impl<S, B> SignFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
{
    pub(crate) fn new(signer: Signer, inner: S, parts: Parts, body: B) -> Self {
        Self {
            state: SignState::Collect {
                body,
                collector: Collected::default(),
                parts: Some(parts),
                inner: Some(inner),
                signer,
            },
        }
    }
}

impl<S, B> std::fmt::Debug for SignFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignFuture").finish_non_exhaustive()
    }
}

/// The sign service's future was polled after it completed.
#[derive(Debug, thiserror::Error)]
#[error("webhook sign future polled after completion")]
struct PolledAfterCompletion;

impl<S, B> Future for SignFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                SignStateProj::Collect {
                    body,
                    collector,
                    parts,
                    inner,
                    signer,
                } => {
                    let bytes = match ready!(collector.poll_collect(body, usize::MAX, cx)) {
                        Ok(bytes) => bytes,
                        Err(CollectError::Failed(error)) => return Poll::Ready(Err(error.into())),
                        // The sign service reads without a limit; kept for completeness of the match.
                        Err(CollectError::TooLarge) => {
                            return Poll::Ready(Err(Rejection::new(Reason::BodyTooLarge).into()));
                        }
                    };
                    let (Some(mut parts), Some(mut inner)) = (parts.take(), inner.take()) else {
                        return Poll::Ready(Err(PolledAfterCompletion.into()));
                    };
                    if let Err(error) = signer.sign(&mut parts.headers, &bytes) {
                        return Poll::Ready(Err(error.into()));
                    }
                    SignState::Call {
                        future: inner.call(Request::from_parts(parts, Full::new(bytes))),
                    }
                }
                SignStateProj::Call { future } => return future.poll(cx).map_err(Into::into),
            };
            this.state.set(next);
        }
    }
}
