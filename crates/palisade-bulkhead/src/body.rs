//! A response body that holds a bulkhead permit until it has been sent.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::gate::Permit;

pin_project! {
    /// An `http::Response` body holding its call's bulkhead permit; the
    /// permit is released at the end of the stream, on a body error, or when
    /// the body is dropped, whichever comes first.
    ///
    /// Produced by bulkheads built with [`OnBodyEnd`](crate::OnBodyEnd).
    #[derive(Debug)]
    pub struct PermitBody<B> {
        #[pin]
        inner: B,
        permit: Option<Permit>,
    }
}

impl<B: Body> PermitBody<B> {
    pub(crate) fn new(inner: B, permit: Permit) -> Self {
        // An empty body is sent as soon as the head is: nothing to hold for.
        let permit = (!inner.is_end_stream()).then_some(permit);
        Self { inner, permit }
    }

    /// True while the body still holds its permit.
    pub fn holds_permit(&self) -> bool {
        self.permit.is_some()
    }
}

/// An empty answer holding no permit: what a layer answering errors with a
/// response of its own (palisade-grpc's trailers-only statuses) puts in its place.
impl<B: Default> Default for PermitBody<B> {
    fn default() -> Self {
        Self {
            inner: B::default(),
            permit: None,
        }
    }
}

impl<B: Body> Body for PermitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        // The end of the stream (reached or announced) or a failure: the
        // body is done with, even if its owner keeps it around.
        let done = match &frame {
            Some(Ok(_)) => this.inner.is_end_stream(),
            None | Some(Err(_)) => true,
        };
        if done {
            drop(this.permit.take());
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
