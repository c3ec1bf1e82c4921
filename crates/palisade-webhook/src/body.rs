//! Reading a request body into one `Bytes`, up to a limit.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;

/// Why collection stopped short.
#[derive(Debug)]
pub(crate) enum CollectError<E> {
    /// More than the limit arrived (or was announced); the rest is not read.
    TooLarge,
    /// The body failed.
    Failed(E),
}

/// Accumulates data frames. A body of one frame (a `Full<Bytes>`, a small
/// hyper body) is kept as it came, without copying.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    state: Acc,
    len: usize,
}

#[derive(Debug, Default)]
enum Acc {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Collector {
    /// Checks the body's announced size against `limit` before reading anything.
    pub(crate) fn precheck<B: Body>(body: &B, limit: usize) -> Result<(), CollectError<B::Error>> {
        let lower = body.size_hint().lower();
        if usize::try_from(lower).map_or(true, |lower| lower > limit) {
            return Err(CollectError::TooLarge);
        }
        Ok(())
    }

    /// Polls `body` until it ends, fails, or passes `limit`.
    pub(crate) fn poll_collect<B: Body>(
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
            // Trailers are not part of the signed bytes.
            let Ok(mut data) = frame.into_data() else { continue };
            let n = data.remaining();
            if n > limit - self.len {
                return Poll::Ready(Err(CollectError::TooLarge));
            }
            self.len += n;
            self.state = match std::mem::take(&mut self.state) {
                Acc::Empty => Acc::One(data.copy_to_bytes(n)),
                Acc::One(first) => {
                    // Room for what arrived plus what the body still announces.
                    let rest = usize::try_from(body.size_hint().lower()).unwrap_or(0);
                    let mut buf = BytesMut::with_capacity(self.len.saturating_add(rest).min(limit));
                    buf.extend_from_slice(&first);
                    put(&mut buf, data);
                    Acc::Many(buf)
                }
                Acc::Many(mut buf) => {
                    put(&mut buf, data);
                    Acc::Many(buf)
                }
            };
        }
    }

    fn take(&mut self) -> Bytes {
        match std::mem::take(&mut self.state) {
            Acc::Empty => Bytes::new(),
            Acc::One(bytes) => bytes,
            Acc::Many(buf) => buf.freeze(),
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
