//! The response body of the layer: the inner service's body untouched, a
//! stored or problem body from memory, or the part of a too-large body that
//! was read before the layer gave up storing it, followed by the rest.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of responses that went through the
    /// [`Idempotency`](crate::Idempotency) service.
    ///
    /// Data frames are [`Bytes`] (taken from the inner body's frames without
    /// copying when they are `Bytes` already); errors are the inner body's.
    pub struct ResponseBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
        Prefixed { prefix: Option<Bytes>, held: Option<Result<HeaderMap, B::Error>>, #[pin] rest: B },
    }
}

impl<B: Body> ResponseBody<B> {
    /// The inner service's body, passed through.
    pub fn new(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A complete body held in memory.
    pub fn full(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self {
            kind: Kind::Full { data },
        }
    }

    /// `prefix` already read from `rest`, then what `rest` read last
    /// (trailers or an error), then the remainder of `rest`.
    pub(crate) fn prefixed(prefix: Bytes, held: Option<Result<HeaderMap, B::Error>>, rest: B) -> Self {
        let prefix = (!prefix.is_empty()).then_some(prefix);
        Self {
            kind: Kind::Prefixed { prefix, held, rest },
        }
    }
}

impl<B: Body> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Full { .. } => "Full",
            Kind::Prefixed { .. } => "Prefixed",
        };
        f.debug_struct("ResponseBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

fn to_bytes<D: Buf>(frame: Frame<D>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx).map(|f| f.map(|f| f.map(to_bytes))),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Prefixed { prefix, held, rest } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                if let Some(held) = held.take() {
                    return Poll::Ready(Some(held.map(Frame::trailers)));
                }
                let frame = ready!(rest.poll_frame(cx));
                Poll::Ready(frame.map(|f| f.map(to_bytes)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
            Kind::Prefixed { prefix, held, rest } => prefix.is_none() && held.is_none() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Prefixed { prefix, rest, .. } => {
                let read = prefix.as_ref().map_or(0, |d| d.len() as u64);
                let rest = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(read));
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper.saturating_add(read));
                }
                hint
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test]
    async fn prefixed_body_replays_what_was_read_then_the_rest() {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
            vec![Ok(Frame::data("c".into())), Ok(Frame::trailers(HeaderMap::new()))];
        let rest = StreamBody::new(futures_util::stream::iter(frames));
        let body = ResponseBody::prefixed("ab".into(), None, rest);
        let collected = body.collect().await.unwrap();
        assert!(collected.trailers().is_some());
        assert_eq!(collected.to_bytes(), "abc");

        let failing = StreamBody::new(futures_util::stream::iter(Vec::<Result<Frame<Bytes>, _>>::new()));
        let body = ResponseBody::prefixed("ab".into(), Some(Err(std::io::Error::other("reset"))), failing);
        assert_eq!(body.collect().await.unwrap_err().to_string(), "reset");
    }

    #[test]
    fn full_body_hints_its_exact_size() {
        let body = ResponseBody::<http_body_util::Empty<Bytes>>::full("abc".into());
        assert_eq!(body.size_hint().exact(), Some(3));
        assert!(!body.is_end_stream());
        assert!(ResponseBody::<http_body_util::Empty<Bytes>>::full(Bytes::new()).is_end_stream());
    }
}
