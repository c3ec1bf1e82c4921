//! [`ReplayBody`]: a request body that can be sent again.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use palisade_core::BoxError;
use palisade_core::sync::Unpoison;
use pin_project_lite::pin_project;

use crate::error::ReplayUnavailable;

/// The default replay cap: 64 KiB, as linkerd's `ReplayBody`.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

pin_project! {
    /// A request body the retry policy can send again.
    ///
    /// Made by [`HttpRetry`](crate::HttpRetry) around every request body:
    ///
    /// - an empty body is replayed for free;
    /// - a body whose length is known to be at most the replay cap streams
    ///   through on the first attempt while its chunks are kept (shared, not
    ///   copied, when the body yields `Bytes`); a retry replays them, and
    ///   reads on from the original body if the first attempt did not read it
    ///   all;
    /// - a body of unknown length or longer than the cap streams through
    ///   untouched and is never buffered: the request is sent once, not
    ///   retried.
    ///
    /// If a body yields more than the cap after all (its size hint was
    /// wrong) or fails, buffering stops, the chunks kept are freed, and the
    /// request is not retried.
    ///
    /// Clones may be read at the same time, as hedges are
    /// (palisade-hedge): whichever reader is furthest reads on from the
    /// original body, and every reader waiting for it is woken when it
    /// yields, or when another reader is dropped.
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Empty,
        Once { #[pin] body: B },
        Replay { shared: Reader<B>, cursor: usize, trailers_sent: bool },
    }
}

/// One reader's hold on the shared state: dropping it wakes the readers
/// waiting on the original body, which may have waited on this one's poll.
struct Reader<B>(Arc<Mutex<Shared<B>>>);

impl<B> Reader<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared<B>> {
        self.0.lock().unpoison()
    }
}

impl<B> Drop for Reader<B> {
    fn drop(&mut self) {
        // The last reader has nobody to wake.
        if Arc::strong_count(&self.0) > 1 {
            self.lock().waiting.wake_all();
        }
    }
}

struct Shared<B> {
    /// The original body, until it ended or failed.
    body: Option<Pin<Box<B>>>,
    /// The data chunks read so far (empty once `unavailable`).
    chunks: Vec<Bytes>,
    /// Data chunks read from the original body so far.
    read: usize,
    /// Bytes kept in `chunks`.
    kept: usize,
    limit: usize,
    trailers: Option<HeaderMap>,
    /// The original body ended: `chunks` and `trailers` are all of it.
    complete: bool,
    /// Over the cap or failed: the body cannot be replayed.
    unavailable: bool,
    hint: SizeHint,
    /// Readers waiting for the original body to yield. A body wakes only the
    /// reader that polled it last, so the others are woken from here.
    waiting: Waiting,
}

/// Wakers of the readers waiting on the original body; the first inline, as
/// one reader at a time is the rule (a retry) and more the exception (hedges).
#[derive(Default)]
struct Waiting {
    first: Option<Waker>,
    more: Vec<Waker>,
}

impl Waiting {
    fn add(&mut self, waker: &Waker) {
        match &self.first {
            None => self.first = Some(waker.clone()),
            Some(first) if first.will_wake(waker) => {}
            Some(_) => {
                if !self.more.iter().any(|w| w.will_wake(waker)) {
                    self.more.push(waker.clone());
                }
            }
        }
    }

    /// Wakes every waiting reader but the one polling now (`current`).
    fn wake_others(&mut self, current: &Waker) {
        for waker in self.first.take().into_iter().chain(self.more.drain(..)) {
            if !waker.will_wake(current) {
                waker.wake();
            }
        }
    }

    fn wake_all(&mut self) {
        for waker in self.first.take().into_iter().chain(self.more.drain(..)) {
            waker.wake();
        }
    }
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, keeping it for replay when its length is known to be at
    /// most `limit` bytes.
    pub fn new(body: B, limit: usize) -> Self {
        let fits = body.size_hint().upper().is_some_and(|upper| upper <= limit as u64);
        Self::keeping(body, limit, fits)
    }

    /// Wraps `body`, keeping it for replay unless it is known to be longer
    /// than `limit` bytes: a body of unknown length (a gRPC request stream)
    /// is kept while it stays within `limit`, and stops being replayable
    /// when it yields more, as gRPC's retry buffer does.
    pub fn up_to(body: B, limit: usize) -> Self {
        let fits = body.size_hint().lower() <= limit as u64;
        Self::keeping(body, limit, fits)
    }

    fn keeping(body: B, limit: usize, fits: bool) -> Self {
        let hint = body.size_hint();
        let kind = if body.is_end_stream() {
            Kind::Empty
        } else if fits {
            Kind::Replay {
                shared: Reader(Arc::new(Mutex::new(Shared {
                    body: Some(Box::pin(body)),
                    chunks: Vec::new(),
                    read: 0,
                    kept: 0,
                    limit,
                    trailers: None,
                    complete: false,
                    unavailable: false,
                    hint,
                    waiting: Waiting::default(),
                }))),
                cursor: 0,
                trailers_sent: false,
            }
        } else {
            Kind::Once { body }
        };
        Self { kind }
    }
}

impl<B> ReplayBody<B> {
    /// Whether the body can still be sent again.
    pub fn is_replayable(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Once { .. } => false,
            Kind::Replay { shared, .. } => !shared.lock().unavailable,
        }
    }

    /// A copy that sends the body again from its start, or `None` when it
    /// cannot be replayed.
    pub fn try_clone(&self) -> Option<Self> {
        match &self.kind {
            Kind::Empty => Some(Self { kind: Kind::Empty }),
            Kind::Once { .. } => None,
            Kind::Replay { shared, .. } if shared.lock().unavailable => None,
            Kind::Replay { shared, .. } => Some(Self {
                kind: Kind::Replay {
                    shared: Reader(shared.0.clone()),
                    cursor: 0,
                    trailers_sent: false,
                },
            }),
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Empty => Poll::Ready(None),
            KindProj::Once { body } => match ready!(body.poll_frame(cx)) {
                Some(Ok(frame)) => Poll::Ready(Some(Ok(
                    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
                ))),
                Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
                None => Poll::Ready(None),
            },
            KindProj::Replay {
                shared,
                cursor,
                trailers_sent,
            } => {
                let mut shared = shared.lock();
                if *cursor < shared.read {
                    if shared.unavailable {
                        return Poll::Ready(Some(Err(ReplayUnavailable.into())));
                    }
                    let chunk = shared.chunks[*cursor].clone();
                    *cursor += 1;
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if shared.complete {
                    if !*trailers_sent {
                        *trailers_sent = true;
                        if let Some(trailers) = shared.trailers.clone() {
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                    }
                    return Poll::Ready(None);
                }
                shared.poll_original(cx, cursor, trailers_sent)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Once { body } => body.is_end_stream(),
            Kind::Replay {
                shared,
                cursor,
                trailers_sent,
            } => {
                let shared = shared.lock();
                shared.complete && *cursor >= shared.read && (*trailers_sent || shared.trailers.is_none())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Once { body } => body.size_hint(),
            Kind::Replay { shared, cursor, .. } => {
                let shared = shared.lock();
                if *cursor == 0 {
                    shared.hint
                } else if shared.complete && !shared.unavailable {
                    SizeHint::with_exact(shared.chunks[*cursor..].iter().map(|c| c.len() as u64).sum())
                } else {
                    SizeHint::default()
                }
            }
        }
    }
}

impl<B> Shared<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    /// Reads the next frame of the original body for the reader at `cursor`
    /// (which has seen every chunk read so far), keeping it for replay.
    fn poll_original(
        &mut self,
        cx: &mut Context<'_>,
        cursor: &mut usize,
        trailers_sent: &mut bool,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(body) = self.body.as_mut() else {
            // The original body failed on an earlier attempt.
            return Poll::Ready(Some(Err(ReplayUnavailable.into())));
        };
        let Poll::Ready(polled) = body.as_mut().poll_frame(cx) else {
            self.waiting.add(cx.waker());
            return Poll::Pending;
        };
        // What the body yielded is kept: readers behind this one read it
        // from `chunks`, and the one now furthest reads on.
        self.waiting.wake_others(cx.waker());
        match polled {
            None => {
                self.complete = true;
                self.body = None;
                *trailers_sent = true;
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                self.give_up();
                self.body = None;
                Poll::Ready(Some(Err(e.into())))
            }
            Some(Ok(frame)) => {
                let frame = frame.map_data(|mut data| data.copy_to_bytes(data.remaining()));
                if let Some(chunk) = frame.data_ref() {
                    self.read += 1;
                    *cursor = self.read;
                    if !self.unavailable {
                        if self.kept + chunk.len() > self.limit {
                            self.give_up();
                        } else {
                            self.kept += chunk.len();
                            self.chunks.push(chunk.clone());
                        }
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    *trailers_sent = true;
                    if !self.unavailable {
                        self.trailers = Some(trailers.clone());
                    }
                    // Trailers end a body: a reader that stops here (as
                    // hyper does) leaves the others to replay them rather
                    // than find the end and miss them.
                    self.complete = true;
                    self.body = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn give_up(&mut self) {
        self.unavailable = true;
        self.chunks = Vec::new();
        self.kept = 0;
        self.trailers = None;
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Empty => "empty",
            Kind::Once { .. } => "once",
            Kind::Replay { .. } => "replay",
        };
        f.debug_struct("ReplayBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}
