//! [`ReplayBody`]: a request body that can be sent again.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

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
        Replay { shared: Arc<Mutex<Shared<B>>>, cursor: usize, trailers_sent: bool },
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
                shared: Arc::new(Mutex::new(Shared {
                    body: Some(Box::pin(body)),
                    chunks: Vec::new(),
                    read: 0,
                    kept: 0,
                    limit,
                    trailers: None,
                    complete: false,
                    unavailable: false,
                    hint,
                })),
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
            Kind::Replay { shared, .. } => !shared.lock().unpoison().unavailable,
        }
    }

    /// A copy that sends the body again from its start, or `None` when it
    /// cannot be replayed.
    pub fn try_clone(&self) -> Option<Self> {
        match &self.kind {
            Kind::Empty => Some(Self { kind: Kind::Empty }),
            Kind::Once { .. } => None,
            Kind::Replay { shared, .. } if shared.lock().unpoison().unavailable => None,
            Kind::Replay { shared, .. } => Some(Self {
                kind: Kind::Replay {
                    shared: shared.clone(),
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
                let mut shared = shared.lock().unpoison();
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
                let shared = shared.lock().unpoison();
                shared.complete && *cursor >= shared.read && (*trailers_sent || shared.trailers.is_none())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Once { body } => body.size_hint(),
            Kind::Replay { shared, cursor, .. } => {
                let shared = shared.lock().unpoison();
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
        match ready!(body.as_mut().poll_frame(cx)) {
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
