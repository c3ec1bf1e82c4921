//! [`DeadlineBody`]: the inner service's response body, or the layer's own
//! answer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The response body of [`SetDeadline`](crate::SetDeadline): the inner
    /// service's body, or the layer's own answer (a problem, or nothing for
    /// a gRPC trailers-only response).
    #[project = DeadlineBodyProj]
    #[allow(missing_docs)]
    pub enum DeadlineBody<B> {
        /// The inner service's body.
        Inner {
            #[pin]
            body: B,
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
            DeadlineBodyProj::Inner { body } => body.poll_frame(cx),
            DeadlineBodyProj::Reply { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner { body } => body.is_end_stream(),
            Self::Reply { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner { body } => body.size_hint(),
            Self::Reply { bytes } => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
