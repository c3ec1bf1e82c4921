//! Reading a body into one [`Bytes`], up to a limit: how the HTTP layers that
//! need a whole body (a webhook's signed bytes, an idempotent request's
//! fingerprint, a response to store) read it.
//!
//! A body of one data frame (a `Full<Bytes>`, a small hyper body) is kept as
//! it came, without copying; more frames are joined into one buffer. Trailers
//! are not data and are skipped. The limit is checked before a frame is kept,
//! so a body over it is never held whole.
//!
//! ```
//! use std::pin::pin;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use palisade_core::body::{Collected, CollectError};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let chunk = Bytes::from_static(b"{\"id\":1}");
//! let mut collected = Collected::default();
//! let mut body = pin!(Full::new(chunk.clone()));
//! let bytes = std::future::poll_fn(|cx| collected.poll_collect(body.as_mut(), 64, cx)).await.unwrap();
//! assert_eq!(bytes.as_ptr(), chunk.as_ptr(), "one frame is not copied");
//!
//! let mut body = pin!(Full::new(chunk));
//! let over = std::future::poll_fn(|cx| collected.poll_collect(body.as_mut(), 4, cx)).await;
//! assert!(matches!(over, Err(CollectError::TooLarge)));
//! # });
//! ```

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;

/// Why collecting a body stopped short.
#[derive(Debug)]
pub enum CollectError<E> {
    /// More than the limit arrived; the rest is not read.
    TooLarge,
    /// The body failed.
    Failed(E),
}

/// Whether `body` announces more than `limit` bytes (its size hint's lower
/// bound), so it can be refused before anything is read.
pub fn announces_more_than<B: Body>(body: &B, limit: usize) -> bool {
    usize::try_from(body.size_hint().lower()).map_or(true, |lower| lower > limit)
}

/// Data read from a body: a single chunk kept as it came, more chunks joined.
#[derive(Debug, Default)]
pub struct Collected {
    first: Option<Bytes>,
    joined: Option<BytesMut>,
    len: usize,
}

impl Collected {
    /// How many bytes are held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data`: kept without copying if it is the first chunk and a
    /// [`Bytes`], joined to what is held otherwise. Empty chunks are ignored.
    pub fn push(&mut self, data: impl Buf) {
        self.append(data, 0);
    }

    /// Appends `data`, `more` bytes expected after it (room reserved when
    /// chunks are joined).
    fn append(&mut self, mut data: impl Buf, more: usize) {
        let n = data.remaining();
        if n == 0 {
            return;
        }
        self.len += n;
        if let Some(joined) = &mut self.joined {
            put(joined, data);
        } else if let Some(first) = self.first.take() {
            let mut joined = BytesMut::with_capacity(self.len.saturating_add(more));
            joined.extend_from_slice(&first);
            put(&mut joined, data);
            self.joined = Some(joined);
        } else {
            self.first = Some(data.copy_to_bytes(n));
        }
    }

    /// Takes what is held, leaving nothing.
    pub fn take(&mut self) -> Bytes {
        self.len = 0;
        match (self.joined.take(), self.first.take()) {
            (Some(joined), _) => joined.freeze(),
            (None, Some(first)) => first,
            (None, None) => Bytes::new(),
        }
    }

    /// Polls `body` until it ends (then takes all that was read), fails, or
    /// would take what is held past `limit` bytes. Trailers are skipped.
    pub fn poll_collect<B: Body>(
        &mut self,
        mut body: Pin<&mut B>,
        limit: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Bytes, CollectError<B::Error>>> {
        loop {
            let Some(frame) = ready!(body.as_mut().poll_frame(cx)) else {
                return Poll::Ready(Ok(self.take()));
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(error) => return Poll::Ready(Err(CollectError::Failed(error))),
            };
            let Ok(data) = frame.into_data() else { continue };
            if data.remaining() > limit - self.len {
                return Poll::Ready(Err(CollectError::TooLarge));
            }
            // Room for what the body still announces, within the limit.
            let more = usize::try_from(body.size_hint().lower())
                .unwrap_or(0)
                .min(limit - self.len - data.remaining());
            self.append(data, more);
        }
    }
}

fn put(buf: &mut BytesMut, mut data: impl Buf) {
    while data.has_remaining() {
        let chunk = data.chunk();
        let n = chunk.len();
        buf.extend_from_slice(chunk);
        data.advance(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::{Full, StreamBody};
    use std::convert::Infallible;

    #[test]
    fn collected_keeps_one_chunk_and_joins_several() {
        let mut one = Collected::default();
        let chunk = Bytes::from_static(b"hello");
        one.push(chunk.clone());
        assert_eq!(one.len(), 5);
        let taken = one.take();
        assert_eq!(taken.as_ptr(), chunk.as_ptr(), "a single chunk is not copied");

        let mut many = Collected::default();
        for part in ["ab", "", "cd", "e"] {
            many.push(Bytes::from(part));
        }
        assert_eq!(many.len(), 5);
        assert_eq!(many.take(), "abcde");
        assert_eq!(many.take(), "");
        assert!(many.is_empty());
    }

    fn frames(parts: &[&'static str], trailers: bool) -> impl Body<Data = Bytes, Error = Infallible> + Unpin {
        let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        if trailers {
            frames.push(Ok(Frame::trailers(http::HeaderMap::new())));
        }
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn collect<B: Body + Unpin>(body: &mut B, limit: usize) -> Result<Bytes, CollectError<B::Error>> {
        let mut collected = Collected::default();
        std::future::poll_fn(|cx| collected.poll_collect(Pin::new(&mut *body), limit, cx)).await
    }

    #[tokio::test]
    async fn collects_frames_up_to_the_limit_and_skips_trailers() {
        assert_eq!(collect(&mut frames(&["ab", "cd"], true), 4).await.unwrap(), "abcd");
        assert!(matches!(
            collect(&mut frames(&["ab", "cde"], false), 4).await,
            Err(CollectError::TooLarge)
        ));
        assert_eq!(collect(&mut Full::new(Bytes::new()), 0).await.unwrap(), "");
        let mut failing = StreamBody::new(futures_util::stream::iter(vec![Err::<Frame<Bytes>, _>("reset")]));
        assert!(matches!(
            collect(&mut failing, 4).await,
            Err(CollectError::Failed("reset"))
        ));
    }

    #[test]
    fn a_body_announcing_more_than_the_limit_is_refused_unread() {
        assert!(announces_more_than(&Full::new(Bytes::from_static(b"abcde")), 4));
        assert!(!announces_more_than(&Full::new(Bytes::from_static(b"abcd")), 4));
    }
}
