//! The verify and sign services.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::Full;
use palisade_core::BoxError;
use palisade_core::body::announces_more_than;
use tower_service::Service;

use crate::error::{Reason, Rejection};
use crate::future::{SignFuture, VerifyFuture};
use crate::sign::Signer;
use crate::state::Shared;

/// Bodies announced above this size have their headers checked before they are read.
const EARLY_CHECK_ABOVE: u64 = 16 * 1024;

/// Verifies inbound webhooks, then calls the inner service with the exact
/// verified bytes as a `Full<Bytes>` body. Made by [`VerifyLayer`](crate::VerifyLayer).
pub struct Verify<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Verify<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone> Clone for Verify<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Verify<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verify")
            .field("inner", &self.inner)
            .field("name", &&*self.shared.name)
            .finish()
    }
}

impl<S, B, ResBody> Service<Request<B>> for Verify<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone,
    B: Body,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = VerifyFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        if announces_more_than(req.body(), shared.max_body) {
            return VerifyFuture::rejected(shared, Rejection::new(Reason::BodyTooLarge));
        }
        // A forged or stale message is turned away before a large or
        // unannounced body is read. A small announced body is cheaper to read
        // than the headers are to check twice, so its headers are checked once,
        // with the body.
        if req
            .body()
            .size_hint()
            .upper()
            .is_none_or(|upper| upper > EARLY_CHECK_ABOVE)
            && let Err(rejection) = shared.verifier.check_headers(req.headers(), shared.verifier.now())
        {
            return VerifyFuture::rejected(shared, rejection);
        }
        // The body arrives later; the service that was driven ready goes with
        // the request and a fresh clone stays for the next poll_ready.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        VerifyFuture::collecting(shared, ready, parts, body)
    }
}

/// Gives an outbound webhook request its message id, once, for every
/// attempt to carry. Made by [`SetMessageIdLayer`](crate::SetMessageIdLayer).
#[derive(Debug, Clone)]
pub struct SetMessageId<S> {
    inner: S,
    signer: Signer,
}

impl<S> SetMessageId<S> {
    pub(crate) fn new(inner: S, signer: Signer) -> Self {
        Self { inner, signer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<Request<B>> for SetMessageId<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(name) = self.signer.id_header()
            && req.headers().get(&name).is_none_or(HeaderValue::is_empty)
            // An id the generator got wrong is left out: signing makes
            // another and reports it.
            && let Ok(id) = self.signer.fresh_id()
        {
            req.headers_mut().insert(name, id);
        }
        self.inner.call(req)
    }
}

/// Signs outbound webhook requests. Made by [`SignLayer`](crate::SignLayer).
pub struct Sign<S> {
    inner: S,
    signer: Signer,
}

impl<S> Sign<S> {
    pub(crate) fn new(inner: S, signer: Signer) -> Self {
        Self { inner, signer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone> Clone for Sign<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            signer: self.signer.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Sign<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sign")
            .field("inner", &self.inner)
            .field("signer", &self.signer)
            .finish()
    }
}

impl<S, B> Service<Request<B>> for Sign<S>
where
    S: Service<Request<Full<Bytes>>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = SignFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        SignFuture::new(self.signer.clone(), ready, parts, body)
    }
}
