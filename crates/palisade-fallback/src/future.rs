//! The response future of [`Fallback`](crate::Fallback).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::request::Parts;
use palisade_core::error::is_local_rejection;
use palisade_core::{BoxError, Classify, Outcome};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::failure::{Cause, Failure};
use crate::state::Shared;

pin_project! {
    /// The response future of [`Fallback`](crate::Fallback): the inner call,
    /// then, if it failed, the fallback's.
    pub struct ResponseFuture<Fut, F, C, Res>
    where
        F: Service<Failure<Res>>,
    {
        #[pin]
        inner: Option<Fut>,
        #[pin]
        answer: Option<F::Future>,
        parts: Option<Parts>,
        failure: Option<Failure<Res>>,
        fallback: F,
        shared: Arc<Shared<C>>,
    }
}

impl<Fut, F, C, Res> ResponseFuture<Fut, F, C, Res>
where
    F: Service<Failure<Res>>,
{
    pub(crate) fn new(inner: Fut, parts: Parts, fallback: F, shared: Arc<Shared<C>>) -> Self {
        Self {
            inner: Some(inner),
            answer: None,
            parts: Some(parts),
            failure: None,
            fallback,
            shared,
        }
    }
}

impl<Fut, F, C, Res> fmt::Debug for ResponseFuture<Fut, F, C, Res>
where
    F: Service<Failure<Res>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("in_inner", &self.inner.is_some())
            .field("in_fallback", &self.answer.is_some())
            .finish_non_exhaustive()
    }
}

impl<Fut, F, C, Res, E> Future for ResponseFuture<Fut, F, C, Res>
where
    Fut: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    F: Service<Failure<Res>, Response = Res, Error = Failure<Res>>,
    C: Classify<Res>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(inner) = this.inner.as_mut().as_pin_mut() {
            let result = ready!(inner.poll(cx));
            this.inner.set(None);
            let classifier = &this.shared.classifier;
            let cause = match result {
                Ok(res) if classifier.classify(Ok(&res)) == Outcome::Failure => Cause::Response(res),
                Ok(res) => return Poll::Ready(Ok(res)),
                Err(e) => {
                    let e: BoxError = e.into();
                    if !is_local_rejection(&*e) && classifier.classify(Err(&*e)) != Outcome::Failure {
                        return Poll::Ready(Err(e));
                    }
                    Cause::Error(e)
                }
            };
            let parts = this
                .parts
                .take()
                .unwrap_or_else(|| http::Request::new(()).into_parts().0);
            *this.failure = Some(Failure::new(parts, cause));
        }
        if let Some(failure) = this.failure.take() {
            match this.fallback.poll_ready(cx) {
                Poll::Pending => {
                    *this.failure = Some(failure);
                    return Poll::Pending;
                }
                // A fallback that cannot answer declines.
                Poll::Ready(Err(_)) => return Poll::Ready(failure.into_result()),
                Poll::Ready(Ok(())) => {}
            }
            let reason = failure.reason();
            this.answer.set(Some(this.fallback.call(failure)));
            this.shared.count(reason);
        }
        match this.answer.as_pin_mut() {
            Some(answer) => Poll::Ready(match ready!(answer.poll(cx)) {
                Ok(res) => Ok(res),
                // Declined: the original result, unchanged.
                Err(failure) => failure.into_result(),
            }),
            None => panic!("fallback ResponseFuture polled after completion"),
        }
    }
}
