//! [`DeadlineBody`]: the inner service's response body, or the layer's own
//! answer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use palisade_core::deadline::Deadline;
use pin_project_lite::pin_project;

pin_project! {
    /// The response body of [`SetDeadline`](crate::SetDeadline): the inner
    /// service's body, or the layer's own answer (a problem, or nothing for
    /// a gRPC trailers-only response).
    #[project = DeadlineBodyProj]
    #[allow(missing_docs)]
    pub enum DeadlineBody<B> {
        /// The inner service's body, polled with the request's deadline,
        /// if it has one, as the current one.
        Inner {
            #[pin]
            body: B,
            deadline: Option<Deadline>,
        },
        /// The layer's own answer.
        Reply {
            bytes: Option<Bytes>,
        },
    }
}

impl<B> DeadlineBody<B> {
    pub(crate) fn reply(bytes: Bytes) -> Self {
        Self::Reply {
            bytes: (!bytes.is_empty()).then_some(bytes),
        }
    }
}

/// An empty answer: what a layer answering errors with a response of its own
/// (palisade-grpc's trailers-only statuses) puts in its place.
impl<B> Default for DeadlineBody<B> {
    fn default() -> Self {
        Self::Reply { bytes: None }
    }
}

impl<B> std::fmt::Debug for DeadlineBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inner { .. } => f.write_str("DeadlineBody::Inner"),
            Self::Reply { bytes } => f.debug_struct("DeadlineBody::Reply").field("bytes", bytes).finish(),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for DeadlineBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project() {
            // A streamed body is work serving the request too (a
            // server-streaming handler calls downstream services while it is
            // polled): the deadline stays current for it, though it does not cut it.
            DeadlineBodyProj::Inner { body, deadline } => match deadline {
                Some(deadline) => deadline.sync_scope(|| body.poll_frame(cx)),
                None => body.poll_frame(cx),
            },
            DeadlineBodyProj::Reply { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner { body, .. } => body.is_end_stream(),
            Self::Reply { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner { body, .. } => body.size_hint(),
            Self::Reply { bytes } => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
