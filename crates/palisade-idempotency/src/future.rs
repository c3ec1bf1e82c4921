//! The response future of [`Idempotency`](crate::Idempotency), and the
//! future of the protected call that runs once a key is locked.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, request, response};
use http_body::Body;
use palisade_core::events::LayerEvent;
use palisade_core::telemetry::idempotency::TARGET;
use pin_project_lite::pin_project;
use tokio::task::JoinHandle;
use tower_service::Service;
use tracing::Instrument;

use crate::IDEMPOTENT_REPLAYED;
use crate::body::ResponseBody;
use crate::error::StoreError;
use crate::hash::{self, Fingerprint, StoreKey};
use crate::measured::Measured;
use crate::problem::Rejection;
use crate::scope::Scope;
use crate::state::Shared;
use crate::store::{Begin, Completion, IdempotencyStore, Lease, StoredResponse};
use palisade_core::body::{CollectError, Collected};
use palisade_core::deadline::Deadline;
use palisade_core::problem::ToProblem;

type Answer<ResB, E> = Result<Response<ResponseBody<ResB>>, E>;

/// The protected call of a request to `S`.
pub(crate) type ProtectedFor<S, ReqB, ResB, St, Sc> =
    Protected<<S as Service<Request<ReqB>>>::Future, ResB, <S as Service<Request<ReqB>>>::Error, St, Sc>;

/// Hands a protected call to the runtime, or gives it back when there is
/// no runtime to run it.
pub(crate) type Spawn<S, ReqB, ResB, St, Sc> =
    fn(
        ProtectedFor<S, ReqB, ResB, St, Sc>,
    )
        -> Result<JoinHandle<Answer<ResB, <S as Service<Request<ReqB>>>::Error>>, ProtectedFor<S, ReqB, ResB, St, Sc>>;

type StateFor<S, ReqB, ResB, St, Sc> =
    State<<S as Service<Request<ReqB>>>::Future, ReqB, ResB, <S as Service<Request<ReqB>>>::Error, St, Sc>;

/// Spawns `protected` on the current tokio runtime, in the current tracing
/// span and under the request's deadline ([`Deadline::current`]), so the
/// handler and the clients it calls see both; without a runtime, gives it
/// back to be run in the response future.
pub(crate) fn spawn<P>(protected: P) -> Result<JoinHandle<P::Output>, P>
where
    P: Future + Send + 'static,
    P::Output: Send + 'static,
{
    let runtime = match tokio::runtime::Handle::try_current() {
        Ok(runtime) => runtime,
        Err(_) => return Err(protected),
    };
    let protected = protected.in_current_span();
    Ok(match Deadline::current() {
        Some(deadline) => runtime.spawn(deadline.scope(protected)),
        None => runtime.spawn(protected),
    })
}

/// After the store answered `begin`: run the protected call, or answer now.
// Made once per request and consumed at once: boxing either would only add
// an allocation.
#[allow(clippy::large_enum_variant)]
enum Next<P, ResB: Body> {
    Run(P),
    Respond(Response<ResponseBody<ResB>>),
}

pin_project! {
    /// The response future of [`Idempotency`](crate::Idempotency).
    ///
    /// What dropping it does once its request holds a key's lock depends on
    /// the layer's [`disconnect`](crate::disconnect) policy: by default the
    /// protected call runs on a task of its own, which dropping this future
    /// does not stop; otherwise the key stays locked until its lock expires,
    /// or is released when the layer was built to release it.
    pub struct ResponseFuture<S, ReqB, ResB, St, Sc>
    where
        S: Service<Request<ReqB>>,
        ResB: http_body::Body,
        St: IdempotencyStore,
    {
        #[pin]
        kind: Kind<S, ReqB, ResB, St, Sc>,
    }

    impl<S, ReqB, ResB, St, Sc> PinnedDrop for ResponseFuture<S, ReqB, ResB, St, Sc>
    where
        S: Service<Request<ReqB>>,
        ResB: http_body::Body,
        St: IdempotencyStore,
    {
        fn drop(this: Pin<&mut Self>) {
            // The store may have locked the key for this request already,
            // its answer still on the way.
            if let KindProj::Keyed { state, ctx } = this.project().kind.project()
                && let StateProjReplace::Begin { future } = state.project_replace(State::Done)
            {
                (ctx.abandon)(Arc::clone(&ctx.shared), ctx.key, future);
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, ReqB, ResB, St, Sc>
    where
        S: Service<Request<ReqB>>,
        ResB: http_body::Body,
        St: IdempotencyStore,
    {
        Passthrough { #[pin] future: S::Future },
        Respond { response: Option<Response<ResponseBody<ResB>>> },
        Keyed { #[pin] state: State<S::Future, ReqB, ResB, S::Error, St, Sc>, ctx: Keyed<S, ReqB, ResB, St, Sc> },
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateProjReplace]
    enum State<F, ReqB, ResB, E, St, Sc>
    where
        ResB: http_body::Body,
        St: IdempotencyStore,
    {
        ReadRequest { #[pin] body: ReqB },
        // Boxed, so that a caller going away can hand it to a task of its
        // own (see `abandon_begin`).
        Begin { future: Pin<Box<Measured<St::BeginFuture>>> },
        Inline { #[pin] protected: Protected<F, ResB, E, St, Sc> },
        Spawned { handle: JoinHandle<Answer<ResB, E>> },
        Done,
    }
}

/// What a keyed request carries until its key is locked.
struct Keyed<S, ReqB, ResB, St, Sc>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
    St: IdempotencyStore,
{
    shared: Arc<Shared<St, Sc>>,
    service: Option<S>,
    request: Option<request::Parts>,
    key: StoreKey,
    fingerprint: Fingerprint,
    collected: Collected,
    spawn: Option<Spawn<S, ReqB, ResB, St, Sc>>,
    abandon: Abandon<St, Sc>,
    release_on_drop: bool,
}

pin_project! {
    /// The protected call once its key is locked: the inner service's
    /// future, then reading its response, then storing it (or releasing
    /// the key). Its output is the caller's answer.
    pub(crate) struct Protected<F, ResB, E, St, Sc>
    where
        ResB: http_body::Body,
        St: IdempotencyStore,
    {
        #[pin]
        step: Step<F, St>,
        held: Held<ResB, E, St, Sc>,
    }

    impl<F, ResB, E, St, Sc> PinnedDrop for Protected<F, ResB, E, St, Sc>
    where
        ResB: http_body::Body,
        St: IdempotencyStore,
    {
        fn drop(this: Pin<&mut Self>) {
            // A panic on its way through leaves the key to `Held`'s policy.
            if std::thread::panicking() {
                return;
            }
            // The layer had decided what becomes of the key (store the
            // response, or release the key) and the store's answer was on its
            // way: the same operation goes on from a task of its own. It is
            // fenced by the lease, so repeating one that already took effect
            // changes nothing. Given up, a stored response would be lost with
            // the key locked (or, released, the handler run again).
            let this = this.project();
            let held = this.held;
            let step = this.step.project_replace(Step::Done);
            let (Some(lease), Ok(runtime)) = (held.lease, tokio::runtime::Handle::try_current()) else {
                return;
            };
            let span = tracing::Span::current();
            match step {
                StepProjReplace::Complete { .. } => {
                    let Some(stored) = held.stored.take() else { return };
                    held.lease = None;
                    let again = complete_again(&held.shared, &held.key, &held.fingerprint, lease, stored);
                    runtime.spawn(again.instrument(span));
                }
                StepProjReplace::Release { .. } => {
                    held.lease = None;
                    runtime.spawn(release(&held.shared, &held.key, &lease).instrument(span));
                }
                _ => {}
            }
        }
    }
}

pin_project! {
    #[project = StepProj]
    #[project_replace = StepProjReplace]
    enum Step<F, St>
    where
        St: IdempotencyStore,
    {
        Call { #[pin] future: F },
        ReadResponse,
        Complete { #[pin] future: Measured<St::CompleteFuture> },
        Release { #[pin] future: Measured<St::ReleaseFuture> },
        Done,
    }
}

/// What a protected call carries from step to step. Dropped while it holds
/// the lease: the key stays locked until its lock expires, or is released
/// when the layer was built to release it.
struct Held<ResB: Body, E, St, Sc>
where
    St: IdempotencyStore,
{
    shared: Arc<Shared<St, Sc>>,
    key: StoreKey,
    fingerprint: Fingerprint,
    lease: Option<Lease>,
    collected: Collected,
    response: Option<(response::Parts, ResB)>,
    // The response being stored, to store it again from a task of its own
    // should the caller go away before the store answers.
    stored: Option<StoredResponse>,
    answer: Option<Answer<ResB, E>>,
    release_on_drop: bool,
}

impl<ResB: Body, E, St, Sc> Drop for Held<ResB, E, St, Sc>
where
    St: IdempotencyStore,
{
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else { return };
        let name = &self.shared.config.name;
        if !self.release_on_drop {
            tracing::debug!(target: TARGET, name = %name, "a request holding a key was dropped; the key stays locked until its lock expires");
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(release(&self.shared, &self.key, &lease));
            }
            Err(_) => {
                tracing::debug!(target: TARGET, name = %name, "no runtime to release a dropped request's key; its lock will expire");
            }
        }
    }
}

/// The store's `complete`, bounded by the store timeout and timed.
fn store_complete<St: IdempotencyStore, Sc>(
    shared: &Shared<St, Sc>,
    key: &StoreKey,
    fingerprint: &Fingerprint,
    lease: &Lease,
    stored: &StoredResponse,
) -> Measured<St::CompleteFuture> {
    let config = &shared.config;
    Measured::new(
        shared.store.complete(key, fingerprint, lease, stored, config.retention),
        config.store_timeout,
        &shared.metrics.store_complete,
    )
}

/// The store's `release`, bounded by the store timeout and timed.
fn store_release<St: IdempotencyStore, Sc>(
    shared: &Shared<St, Sc>,
    key: &StoreKey,
    lease: &Lease,
) -> Measured<St::ReleaseFuture> {
    Measured::new(
        shared.store.release(key, lease),
        shared.config.store_timeout,
        &shared.metrics.store_release,
    )
}

/// Stores `stored` under `key` held by `lease` for a request that went away
/// while it was being stored, bounded by the store timeout. The first try may
/// have taken effect: its lock is then gone, and this finds the lease lost.
fn complete_again<St: IdempotencyStore, Sc>(
    shared: &Shared<St, Sc>,
    key: &StoreKey,
    fingerprint: &Fingerprint,
    lease: Lease,
    stored: StoredResponse,
) -> impl Future<Output = ()> + Send + 'static {
    let complete = store_complete(shared, key, fingerprint, &lease, &stored);
    let name = shared.config.name.clone();
    async move {
        match complete.await {
            Ok(Completion::LeaseLost) => {
                tracing::debug!(target: TARGET, name = %name, "a dropped request's response was stored already, or its lock taken over");
            }
            completed => log_completion(&name, completed),
        }
    }
}

/// Logs what storing a response came to, when it did not store it.
fn log_completion(name: &str, completed: Result<Completion, StoreError>) {
    match completed {
        Ok(Completion::Stored) => {}
        Ok(Completion::LeaseLost) => {
            tracing::warn!(target: TARGET, name = %name, "the key's lock expired and was taken over before the response was ready; response not stored");
        }
        Err(error) => {
            // The handler ran: releasing would let a retry run it again.
            tracing::warn!(target: TARGET, name = %name, %error, "storing the response failed; the key stays locked until its lock expires");
        }
    }
}

/// Releases `key` held by `lease` for a request that went away, bounded by
/// the store timeout; a failure is logged, and the lock expires.
fn release<St: IdempotencyStore, Sc>(
    shared: &Shared<St, Sc>,
    key: &StoreKey,
    lease: &Lease,
) -> impl Future<Output = ()> + Send + 'static {
    let release = store_release(shared, key, lease);
    let name = shared.config.name.clone();
    async move {
        if let Err(error) = release.await {
            tracing::warn!(target: TARGET, name = %name, %error, "releasing a dropped request's key failed; its lock will expire");
        }
    }
}

/// Hands the `begin` of a request that went away to a task of its own.
type Abandon<St, Sc> = fn(Arc<Shared<St, Sc>>, StoreKey, Pin<Box<Measured<<St as IdempotencyStore>::BeginFuture>>>);

/// Waits, on a task of its own, for the store's answer to the `begin` of a
/// request that went away, and releases the key if the store locked it:
/// the handler never ran, so a retry may run it. The answer gets a whole
/// store timeout from here, not what the caller had left of its own.
/// Without a runtime the answer is not waited for, and a lock it took
/// expires.
fn abandon_begin<St: IdempotencyStore, Sc: Scope>(
    shared: Arc<Shared<St, Sc>>,
    key: StoreKey,
    mut begin: Pin<Box<Measured<St::BeginFuture>>>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::debug!(target: TARGET, name = %shared.config.name, "no runtime to wait for the store's answer to a dropped request; a lock it took will expire");
        return;
    };
    begin.as_mut().restart();
    runtime.spawn(async move {
        match begin.await {
            Ok(Begin::Acquired(lease)) => release(&shared, &key, &lease).await,
            Ok(Begin::InFlight { .. } | Begin::Completed { .. }) => {}
            Err(error) => {
                tracing::debug!(target: TARGET, name = %shared.config.name, %error, "the store's answer to a dropped request failed; a lock it took will expire");
            }
        }
    });
}

impl<S, ReqB, ResB, St, Sc> ResponseFuture<S, ReqB, ResB, St, Sc>
where
    S: Service<Request<ReqB>>,
    ResB: Body,
    St: IdempotencyStore,
{
    pub(crate) fn passthrough(future: S::Future) -> Self {
        Self {
            kind: Kind::Passthrough { future },
        }
    }

    pub(crate) fn respond(response: Response<ResponseBody<ResB>>) -> Self {
        Self {
            kind: Kind::Respond {
                response: Some(response),
            },
        }
    }

    pub(crate) fn body_too_large(shared: &Shared<St, Sc>) -> Self {
        Self::respond(body_too_large(shared))
    }

    /// A keyed request: `spawn` runs its protected call on the runtime
    /// (none: in this future, dropped per `release_on_drop`).
    pub(crate) fn keyed(
        shared: Arc<Shared<St, Sc>>,
        service: S,
        request: request::Parts,
        body: ReqB,
        key: StoreKey,
        spawn: Option<Spawn<S, ReqB, ResB, St, Sc>>,
        release_on_drop: bool,
    ) -> Self
    where
        Sc: Scope,
    {
        let ctx = Keyed {
            shared,
            service: Some(service),
            request: Some(request),
            key,
            fingerprint: Fingerprint::from_bytes([0; 32]),
            collected: Collected::default(),
            spawn,
            abandon: abandon_begin::<St, Sc>,
            release_on_drop,
        };
        Self {
            kind: Kind::Keyed {
                state: State::ReadRequest { body },
                ctx,
            },
        }
    }
}

impl<S, ReqB, ResB, St, Sc> Future for ResponseFuture<S, ReqB, ResB, St, Sc>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body + From<Bytes>,
    ResB: Body + Unpin,
    St: IdempotencyStore,
{
    type Output = Answer<ResB, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { future } => future.poll(cx).map_ok(|res| res.map(ResponseBody::new)),
            KindProj::Respond { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("idempotency ResponseFuture polled after completion"),
            },
            KindProj::Keyed { state, ctx } => ctx.poll(state, cx),
        }
    }
}

/// A header the layer never stores: hop-by-hop headers (RFC 9110 §7.6.1),
/// the headers the `Connection` header names, and `Set-Cookie` unless asked.
fn stored_headers(headers: &HeaderMap, store_set_cookie: bool) -> HeaderMap {
    const HOP_BY_HOP: [HeaderName; 8] = [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ];
    let named_by_connection = |name: &HeaderName| {
        headers.get_all(header::CONNECTION).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case(name.as_str()))
            })
        })
    };
    let mut kept = HeaderMap::with_capacity(headers.keys_len());
    for (name, value) in headers {
        let dropped =
            HOP_BY_HOP.contains(name) || (!store_set_cookie && name == header::SET_COOKIE) || named_by_connection(name);
        if !dropped {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

fn replay<B: Body>(stored: StoredResponse) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::full(stored.body));
    *response.status_mut() = stored.status;
    *response.headers_mut() = stored.headers;
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

impl<S, ReqB, ResB, St, Sc> Keyed<S, ReqB, ResB, St, Sc>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body + From<Bytes>,
    ResB: Body + Unpin,
    St: IdempotencyStore,
{
    fn poll(
        &mut self,
        mut state: Pin<&mut StateFor<S, ReqB, ResB, St, Sc>>,
        cx: &mut Context<'_>,
    ) -> Poll<Answer<ResB, S::Error>> {
        loop {
            match state.as_mut().project() {
                StateProj::ReadRequest { body } => {
                    let next = ready!(self.poll_request_body(body, cx));
                    match next {
                        Ok(()) => {
                            let begin = Box::pin(self.begin());
                            state.set(State::Begin { future: begin });
                        }
                        Err(rejection) => {
                            state.set(State::Done);
                            return Poll::Ready(Ok(rejection));
                        }
                    }
                }
                StateProj::Begin { future } => {
                    let begun = ready!(future.as_mut().poll(cx));
                    // The answer is in: should the inner service panic in
                    // `call`, the drop must not hand the finished `begin` on
                    // to be awaited again.
                    state.set(State::Done);
                    match self.on_begin(begun) {
                        Next::Run(protected) => match self.spawn {
                            Some(spawn) if protected.held.lease.is_some() => match spawn(protected) {
                                Ok(handle) => state.set(State::Spawned { handle }),
                                Err(protected) => state.set(State::Inline { protected }),
                            },
                            _ => state.set(State::Inline { protected }),
                        },
                        Next::Respond(answer) => return Poll::Ready(Ok(answer)),
                    }
                }
                StateProj::Inline { protected } => {
                    let answer = ready!(protected.poll(cx));
                    state.set(State::Done);
                    return Poll::Ready(answer);
                }
                StateProj::Spawned { handle } => {
                    let joined = ready!(Pin::new(handle).poll(cx));
                    state.set(State::Done);
                    return Poll::Ready(match joined {
                        Ok(answer) => answer,
                        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                        // Only a runtime shutting down cancels the task; the key stays locked.
                        Err(_) => {
                            Ok(Rejection::Interrupted(self.shared.config.lock_expiry)
                                .to_response_with(ResponseBody::full))
                        }
                    });
                }
                StateProj::Done => panic!("idempotency ResponseFuture polled after completion"),
            }
        }
    }

    /// Reads the request body up to the cap; on success the fingerprint is set.
    fn poll_request_body(
        &mut self,
        body: Pin<&mut ReqB>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Response<ResponseBody<ResB>>>> {
        let config = &self.shared.config;
        // Request trailers are not part of the fingerprint, and are not forwarded.
        match ready!(self.collected.poll_collect(body, config.max_request_body, cx)) {
            Ok(body) => {
                if let Some(parts) = &self.request {
                    self.fingerprint = hash::fingerprint(&parts.method, parts.uri.path(), parts.uri.query(), &body);
                }
                self.collected.push(body);
                Poll::Ready(Ok(()))
            }
            Err(CollectError::TooLarge) => Poll::Ready(Err(body_too_large(&self.shared))),
            Err(CollectError::Failed(_)) => {
                self.shared.metrics.unreadable_body.increment(1);
                tracing::debug!(target: TARGET, name = %config.name, reason = "unreadable_body", "request refused");
                Poll::Ready(Err(Rejection::UnreadableBody.to_response_with(ResponseBody::full)))
            }
        }
    }

    fn begin(&self) -> Measured<St::BeginFuture> {
        let config = &self.shared.config;
        Measured::new(
            self.shared
                .store
                .begin(&self.key, &self.fingerprint, config.lock_expiry),
            config.store_timeout,
            &self.shared.metrics.store_begin,
        )
    }

    /// Either the protected call to run, or the answer without calling the
    /// inner service.
    fn on_begin(&mut self, begun: Result<Begin, StoreError>) -> Next<ProtectedFor<S, ReqB, ResB, St, Sc>, ResB> {
        let shared = &self.shared;
        let config = &shared.config;
        match begun {
            Ok(Begin::Acquired(lease)) => {
                shared.metrics.first.increment(1);
                self.call_inner(Some(lease))
            }
            Ok(Begin::InFlight { fingerprint } | Begin::Completed { fingerprint, .. })
                if fingerprint != self.fingerprint =>
            {
                shared.metrics.mismatch.increment(1);
                tracing::debug!(target: TARGET, name = %config.name, reason = "mismatch", "key reused with another request");
                config.events.emit(|| LayerEvent::IdempotencyConflict {
                    name: &config.name,
                    reason: "mismatch",
                });
                Next::Respond(Rejection::KeyReused.to_response_with(ResponseBody::full))
            }
            Ok(Begin::InFlight { .. }) => {
                shared.metrics.conflict.increment(1);
                tracing::debug!(target: TARGET, name = %config.name, reason = "in_flight", "key in flight");
                config.events.emit(|| LayerEvent::IdempotencyConflict {
                    name: &config.name,
                    reason: "in_flight",
                });
                Next::Respond(Rejection::InFlight(config.conflict_retry_after).to_response_with(ResponseBody::full))
            }
            Ok(Begin::Completed { response, .. }) => {
                shared.metrics.replayed.increment(1);
                tracing::debug!(target: TARGET, name = %config.name, "response replayed");
                config
                    .events
                    .emit(|| LayerEvent::IdempotencyReplayed { name: &config.name });
                Next::Respond(replay(response))
            }
            Err(error) if config.fail_open => {
                shared.metrics.store_error_open.increment(1);
                tracing::warn!(target: TARGET, name = %config.name, reason = "fail_open", %error, "idempotency store failed; request passed through unprotected");
                self.call_inner(None)
            }
            Err(error) => {
                shared.metrics.store_error_closed.increment(1);
                tracing::warn!(target: TARGET, name = %config.name, reason = "fail_closed", %error, "idempotency store failed; request refused");
                let retry_after = error.retry_after().unwrap_or(config.unavailable_retry_after);
                Next::Respond(Rejection::StoreUnavailable(retry_after).to_response_with(ResponseBody::full))
            }
        }
    }

    /// Calls the inner service: the protected call, holding `lease` (none
    /// when a failing store let the request through unprotected).
    fn call_inner(&mut self, lease: Option<Lease>) -> Next<ProtectedFor<S, ReqB, ResB, St, Sc>, ResB> {
        match (self.service.take(), self.request.take()) {
            (Some(mut service), Some(parts)) => {
                let body = ReqB::from(self.collected.take());
                let future = service.call(Request::from_parts(parts, body));
                Next::Run(Protected {
                    step: Step::Call { future },
                    held: Held {
                        shared: Arc::clone(&self.shared),
                        key: self.key,
                        fingerprint: self.fingerprint,
                        lease,
                        collected: Collected::default(),
                        response: None,
                        stored: None,
                        answer: None,
                        release_on_drop: self.release_on_drop,
                    },
                })
            }
            _ => panic!("idempotency ResponseFuture polled after completion"),
        }
    }
}

impl<F, ResB, E, St, Sc> Future for Protected<F, ResB, E, St, Sc>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    ResB: Body + Unpin,
    St: IdempotencyStore,
{
    type Output = Answer<ResB, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (mut step, held) = (this.step, this.held);
        loop {
            match step.as_mut().project() {
                StepProj::Call { future } => {
                    let result = ready!(future.poll(cx));
                    let next = held.on_response(result);
                    step.set(next);
                }
                StepProj::ReadResponse => {
                    let next = ready!(held.poll_response_body(cx));
                    step.set(next);
                }
                StepProj::Complete { future } => {
                    log_completion(&held.shared.config.name, ready!(future.poll(cx)));
                    held.lease = None;
                    held.stored = None;
                    step.set(Step::Done);
                }
                StepProj::Release { future } => {
                    if let Err(error) = ready!(future.poll(cx)) {
                        tracing::warn!(target: TARGET, name = %held.shared.config.name, %error, "releasing the key failed; its lock will expire");
                    }
                    held.lease = None;
                    step.set(Step::Done);
                }
                // The answer is ready: the response, or the inner error, with the key settled.
                StepProj::Done => return Poll::Ready(held.take_answer()),
            }
        }
    }
}

impl<ResB, E, St, Sc> Held<ResB, E, St, Sc>
where
    ResB: Body + Unpin,
    St: IdempotencyStore,
{
    fn take_answer(&mut self) -> Answer<ResB, E> {
        match self.answer.take() {
            Some(answer) => answer,
            None => panic!("idempotency protected call polled after completion"),
        }
    }

    fn release<F>(&self) -> Step<F, St> {
        match &self.lease {
            Some(lease) => Step::Release {
                future: store_release(&self.shared, &self.key, lease),
            },
            None => Step::Done,
        }
    }

    /// Decides what happens to the inner service's answer.
    fn on_response<F>(&mut self, result: Result<Response<ResB>, E>) -> Step<F, St> {
        let config = &self.shared.config;
        let response = match result {
            Ok(response) if self.lease.is_some() => response,
            Ok(response) => {
                // Fail-open: nothing is held, nothing to store.
                self.answer = Some(Ok(response.map(ResponseBody::new)));
                return Step::Done;
            }
            Err(error) => {
                self.answer = Some(Err(error));
                return self.release();
            }
        };
        let storable = (config.store_status)(response.status())
            && response.body().size_hint().lower() <= config.max_response_body as u64;
        if !storable {
            self.answer = Some(Ok(response.map(ResponseBody::new)));
            return self.release();
        }
        // The handler answered: its effects stand, whatever becomes of the caller.
        self.release_on_drop = false;
        self.response = Some(response.into_parts());
        Step::ReadResponse
    }

    /// Reads the response body up to the cap, then stores it, or gives up
    /// storing it and releases the key.
    fn poll_response_body<F>(&mut self, cx: &mut Context<'_>) -> Poll<Step<F, St>> {
        let max = self.shared.config.max_response_body;
        let Some((_, body)) = &mut self.response else {
            panic!("idempotency protected call polled after completion");
        };
        let held = loop {
            match ready!(Pin::new(&mut *body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        self.collected.push(data);
                        if self.collected.len() > max {
                            break None;
                        }
                    }
                    Err(frame) => {
                        // Trailers cannot be replayed: pass the response through unstored.
                        if let Ok(trailers) = frame.into_trailers() {
                            break Some(Ok(trailers));
                        }
                    }
                },
                Some(Err(error)) => break Some(Err(error)),
                None => return Poll::Ready(self.complete()),
            }
        };
        // The handler ran and answered; a body that then fails cannot be stored, and
        // releasing the key would let the retry run the handler again: it stays locked
        // until its lock expires, as when storing fails.
        let body_failed = matches!(held, Some(Err(_)));
        if let Some((parts, rest)) = self.response.take() {
            let read = self.collected.take();
            self.answer = Some(Ok(Response::from_parts(
                parts,
                ResponseBody::prefixed(read, held, rest),
            )));
        }
        if body_failed {
            self.lease = None;
            tracing::warn!(target: TARGET, name = %self.shared.config.name, "the response body failed after the handler ran; the key stays locked until its lock expires");
            return Poll::Ready(Step::Done);
        }
        Poll::Ready(self.release())
    }

    fn complete<F>(&mut self) -> Step<F, St> {
        let (Some((parts, _)), Some(lease)) = (self.response.take(), self.lease) else {
            return Step::Done;
        };
        let body = self.collected.take();
        let config = &self.shared.config;
        let stored = StoredResponse {
            status: parts.status,
            headers: stored_headers(&parts.headers, config.store_set_cookie),
            body: body.clone(),
        };
        let future = store_complete(&self.shared, &self.key, &self.fingerprint, &lease, &stored);
        self.stored = Some(stored);
        self.answer = Some(Ok(Response::from_parts(parts, ResponseBody::full(body))));
        Step::Complete { future }
    }
}

fn body_too_large<B: Body, St, Sc>(shared: &Shared<St, Sc>) -> Response<ResponseBody<B>> {
    shared.metrics.body_too_large.increment(1);
    tracing::debug!(target: TARGET, name = %shared.config.name, reason = "body_too_large", "request refused");
    Rejection::BodyTooLarge.to_response_with(ResponseBody::full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_cookies_are_not_stored() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        headers.append("x-multi", HeaderValue::from_static("1"));
        headers.append("x-multi", HeaderValue::from_static("2"));

        let kept = stored_headers(&headers, false);
        let names: Vec<_> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "x-multi"]);
        assert_eq!(kept.get_all("x-multi").iter().collect::<Vec<_>>(), ["1", "2"]);

        let with_cookies = stored_headers(&headers, true);
        assert_eq!(
            with_cookies.get_all(header::SET_COOKIE).iter().collect::<Vec<_>>(),
            ["a=1", "b=2"]
        );
    }
}
