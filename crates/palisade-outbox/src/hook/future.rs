//! The publish hook's response future.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::hook::wakeup::Wakeup;

pin_project! {
    /// Resolves to the inner service's result, waking the relay first (when the request's method asks for it).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        wakeup: Option<Wakeup>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, wakeup: Option<Wakeup>) -> Self {
        Self { inner, wakeup }
    }
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        if let Some(wakeup) = this.wakeup.take() {
            wakeup.wake();
        }
        Poll::Ready(output)
    }
}
