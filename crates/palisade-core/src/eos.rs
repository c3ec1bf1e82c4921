//! Classification at the end of a response stream.
//!
//! An HTTP response can carry its verdict after its head: a gRPC server
//! sends `200 OK`, the messages, and only then the call's `grpc-status`, in the
//! trailers. A layer that judges such a call when the head arrives judges
//! too early: nearly every gRPC error would count as a success. This module is
//! the one mechanism every palisade layer that classifies uses to judge a
//! call by how its stream ended, as tower-http's `ClassifyEos` does:
//!
//! - a classifier that can read the end of a stream implements
//!   [`ClassifyEos`] ([`GrpcClassifier`] does): a
//!   verdict from the head when the head decides (a trailers-only gRPC
//!   response, a non-200 status), else one from the trailers;
//! - wrapped in [`AtEos`] it becomes a [`Judge`]: the layer hands it the
//!   call's result and lends it a [`Settle`] (where the outcome goes), and
//!   gets back the response to pass on, with its body wrapped in an
//!   [`EosBody`] that takes the `Settle` along and settles the outcome when
//!   the stream ends;
//! - every plain [`Classify`] is a [`Judge`] too, settling at once and passing
//!   the response on untouched, so a layer written against [`Judge`] serves
//!   both.
//!
//! The circuit breaker records its outcomes through this trait: with
//! `.classifier(AtEos(GrpcClassifier))` a status in the trailers counts, for
//! unary and streaming calls alike.
//!
//! # How a stream's end is judged
//!
//! | the stream | outcome, for [`GrpcClassifier`] |
//! |---|---|
//! | head carries `grpc-status` (trailers-only) or a non-200 status | decided at the head; the body is passed on unwrapped |
//! | trailers with `grpc-status` | that code's outcome |
//! | ended without trailers, or trailers without `grpc-status` | failure (gRPC's `INTERNAL`: the status is missing) |
//! | the body failed (reset stream, broken connection) | failure |
//! | the body was dropped before its end | **neither**: nothing is settled |
//!
//! A body dropped early is a call its caller gave up on (a cancelled RPC, a
//! stream read only in part): like a dropped response future it says nothing
//! about the downstream's health, so it counts as neither success nor
//! failure. The [`Settle`] is dropped unsettled; the breaker's gives its
//! half-open probe slot back.
//!
//! ```
//! use bytes::Bytes;
//! use http::{HeaderMap, Response};
//! use http_body_util::{BodyExt, Full, StreamBody};
//! use palisade_core::eos::{AtEos, Judge, Settle};
//! use palisade_core::{GrpcClassifier, Outcome};
//! use std::sync::{Arc, Mutex};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Where the outcome goes: here, a shared slot.
//! #[derive(Clone, Default)]
//! struct Slot(Arc<Mutex<Option<Outcome>>>);
//! impl Settle for Slot {
//!     fn settle(&mut self, outcome: Outcome) {
//!         *self.0.lock().unwrap() = Some(outcome);
//!     }
//! }
//!
//! // A `200 OK` whose trailers say UNAVAILABLE.
//! let mut trailers = HeaderMap::new();
//! trailers.insert("grpc-status", "14".parse().unwrap());
//! let body = Full::new(Bytes::from_static(b"\0\0\0\0\0")).with_trailers(async { Some(Ok(trailers)) });
//! let res = Response::new(body);
//!
//! let slot = Slot::default();
//! let res = AtEos(GrpcClassifier).judge(Ok(res), &mut slot.clone()).unwrap();
//! assert_eq!(*slot.0.lock().unwrap(), None, "not judged at the head");
//! let _ = res.into_body().collect().await;
//! assert_eq!(*slot.0.lock().unwrap(), Some(Outcome::Failure));
//! # }
//! ```

use std::error::Error;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;
use crate::classify::{Classify, GrpcClassifier, GrpcCode, Outcome, downstream_outcome};

/// Where a call's outcome goes once it is known: a breaker's recorder, a
/// metric.
///
/// [`settle`](Self::settle) is called at most once per call. A `Settle`
/// dropped without it is a call that counts as neither success nor failure
/// (cancelled); its `Drop` gives back whatever it held.
pub trait Settle {
    /// Takes the call's outcome.
    fn settle(&mut self, outcome: Outcome);
}

impl<S: Settle> Settle for Option<S> {
    fn settle(&mut self, outcome: Outcome) {
        if let Some(mut sink) = self.take() {
            sink.settle(outcome);
        }
    }
}

/// Nowhere: the outcome is not wanted.
impl Settle for () {
    fn settle(&mut self, _: Outcome) {}
}

/// How a stream ended, as an [`EosBody`] saw it.
#[derive(Debug, Clone, Copy)]
pub enum StreamEnd<'a> {
    /// It ended with these trailers.
    Trailers(&'a HeaderMap),
    /// It ended without trailers.
    NoTrailers,
    /// Reading it failed: a reset stream, a broken connection.
    Failed,
}

/// A classifier that can judge a response by how its stream ends.
///
/// Implemented by [`GrpcClassifier`]; wrap it in
/// [`AtEos`] to hand it to a layer.
pub trait ClassifyEos {
    /// The verdict the head already gives, or `None` when it waits for the
    /// end of the stream.
    fn classify_head<B>(&self, res: &Response<B>) -> Option<Outcome>;

    /// The verdict once the stream has ended.
    fn classify_end(&self, end: StreamEnd<'_>) -> Outcome;
}

/// Decides a call's outcome, now or when its response stream ends, and
/// hands on the response to pass up the stack.
///
/// Every [`Classify`] is a `Judge` that settles at once and passes the
/// response on as it is; [`AtEos`] settles at the end of the stream.
pub trait Judge<Res> {
    /// The response handed on when `sink` of type `S` receives the outcome.
    type Response<S: Settle>;

    /// Settles `result`'s outcome into `sink` now, or takes the sink (leaving
    /// its default behind) into the response to settle it later, and returns
    /// what to pass on.
    ///
    /// The sink is lent rather than given so that a judge settling at once
    /// leaves it where the caller keeps it: a layer polled right after its
    /// call would otherwise copy its sink out of memory it had just written,
    /// with wide loads that wait on the narrower stores (a few nanoseconds a
    /// call on x86).
    fn judge<S: Settle + Default>(
        &self,
        result: Result<Res, BoxError>,
        sink: &mut S,
    ) -> Result<Self::Response<S>, BoxError>;
}

impl<C, Res> Judge<Res> for C
where
    C: Classify<Res>,
{
    type Response<S: Settle> = Res;

    // Always inlined: out of line, the result came in through memory its
    // caller had just written and was copied out with a wide load that
    // waited on those stores. With the sink lent, inlining no longer costs
    // the criterion harness what it saves the plain loop.
    #[inline(always)]
    fn judge<S: Settle + Default>(&self, result: Result<Res, BoxError>, sink: &mut S) -> Result<Res, BoxError> {
        sink.settle(downstream_outcome(
            self,
            result.as_ref().map_err(|e| &**e as &(dyn Error + 'static)),
        ));
        result
    }
}

/// A classifier that judges HTTP responses at the end of their stream; see
/// the [module docs](self).
///
/// Errors (no response at all) are classified at once by the inner
/// classifier's [`Classify`] implementation, so palisade's local rejections
/// stay [`Outcome::Ignored`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AtEos<C>(pub C);

impl<C, B> Judge<Response<B>> for AtEos<C>
where
    C: ClassifyEos + Classify<Response<B>> + Clone,
    B: Body,
{
    type Response<S: Settle> = Response<EosBody<B, C, S>>;

    fn judge<S: Settle + Default>(
        &self,
        result: Result<Response<B>, BoxError>,
        sink: &mut S,
    ) -> Result<Response<EosBody<B, C, S>>, BoxError> {
        match result {
            Err(e) => {
                sink.settle(downstream_outcome(&self.0, Err(&*e)));
                Err(e)
            }
            Ok(res) => match self.0.classify_head(&res) {
                Some(outcome) => {
                    sink.settle(outcome);
                    Ok(res.map(EosBody::passing))
                }
                // Ended at its head (`HEADERS` with END_STREAM): there is no
                // end to wait for, and tonic and hyper drop such a body unread.
                None if res.body().is_end_stream() => {
                    sink.settle(self.0.classify_end(StreamEnd::NoTrailers));
                    Ok(res.map(EosBody::passing))
                }
                None => {
                    let classifier = self.0.clone();
                    Ok(res.map(|body| EosBody::judging(body, classifier, std::mem::take(sink))))
                }
            },
        }
    }
}

pin_project! {
    /// A response body that settles its call's outcome when the stream ends;
    /// made by [`AtEos`].
    ///
    /// Its frames pass through unchanged. Dropped before its end, it settles
    /// nothing.
    pub struct EosBody<B, C, S> {
        #[pin]
        inner: B,
        judging: Option<(C, S)>,
    }
}

impl<B, C, S> EosBody<B, C, S> {
    /// A body whose outcome was settled already (or is not wanted).
    pub fn passing(inner: B) -> Self {
        Self { inner, judging: None }
    }

    /// A body that settles into `sink` what `classifier` says of its end.
    pub fn judging(inner: B, classifier: C, sink: S) -> Self {
        Self {
            inner,
            judging: Some((classifier, sink)),
        }
    }

    /// True until the outcome has been settled.
    pub fn is_judging(&self) -> bool {
        self.judging.is_some()
    }

    /// The inner body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

/// An empty body that judges nothing: what a layer answering errors with a
/// response of its own (a gRPC status) puts in its place.
impl<B: Default, C, S> Default for EosBody<B, C, S> {
    fn default() -> Self {
        Self::passing(B::default())
    }
}

impl<B, C, S> std::fmt::Debug for EosBody<B, C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EosBody")
            .field("judging", &self.judging.is_some())
            .finish_non_exhaustive()
    }
}

fn settle_end<C: ClassifyEos, S: Settle>(judging: &mut Option<(C, S)>, end: StreamEnd<'_>) {
    if let Some((classifier, mut sink)) = judging.take() {
        sink.settle(classifier.classify_end(end));
    }
}

impl<B, C, S> Body for EosBody<B, C, S>
where
    B: Body,
    C: ClassifyEos,
    S: Settle,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if this.judging.is_some() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        settle_end(this.judging, StreamEnd::Trailers(trailers));
                    } else if this.inner.is_end_stream() {
                        settle_end(this.judging, StreamEnd::NoTrailers);
                    }
                }
                Some(Err(_)) => settle_end(this.judging, StreamEnd::Failed),
                None => settle_end(this.judging, StreamEnd::NoTrailers),
            }
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

/// The status in the head (trailers-only) or the trailers decides; a stream
/// that ends without one, or breaks, is a failure.
impl ClassifyEos for GrpcClassifier {
    fn classify_head<B>(&self, res: &Response<B>) -> Option<Outcome> {
        GrpcCode::of_response(res).map(GrpcCode::outcome)
    }

    fn classify_end(&self, end: StreamEnd<'_>) -> Outcome {
        match end {
            StreamEnd::Trailers(trailers) => match GrpcCode::of_headers(trailers) {
                Some(code) => code.outcome(),
                // gRPC clients read a missing status as INTERNAL.
                None => Outcome::Failure,
            },
            StreamEnd::NoTrailers | StreamEnd::Failed => Outcome::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full, StreamBody};

    use super::*;
    use crate::{CircuitOpen, HttpClassifier};

    #[derive(Clone, Default)]
    struct Slot(Arc<Mutex<Vec<Outcome>>>);

    impl Slot {
        fn seen(&self) -> Vec<Outcome> {
            self.0.lock().unwrap().clone()
        }
    }

    impl Settle for Slot {
        fn settle(&mut self, outcome: Outcome) {
            self.0.lock().unwrap().push(outcome);
        }
    }

    fn trailers(status: Option<&str>) -> HeaderMap {
        let mut t = HeaderMap::new();
        if let Some(s) = status {
            t.insert("grpc-status", s.parse().unwrap());
        }
        t
    }

    type Frames = Vec<Result<Frame<Bytes>, std::io::Error>>;
    type Streamed = StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>>;

    fn streamed(frames: Frames) -> Response<Streamed> {
        Response::new(StreamBody::new(futures_util::stream::iter(frames)))
    }

    fn message(n: u8) -> Result<Frame<Bytes>, std::io::Error> {
        Ok(Frame::data(Bytes::from(vec![0, 0, 0, 0, 1, n])))
    }

    #[test]
    fn a_stream_already_ended_at_its_head_is_judged_at_once() {
        // `HEADERS` with END_STREAM and no `grpc-status`: the body is over
        // before anyone reads it, and tonic and hyper drop such a body unread.
        let slot = Slot::default();
        let res = AtEos(GrpcClassifier)
            .judge(Ok(Response::new(Empty::<Bytes>::new())), &mut slot.clone())
            .unwrap();
        assert_eq!(slot.seen(), [Outcome::Failure], "a missing status is INTERNAL");
        assert!(!res.body().is_judging());
        drop(res);
        assert_eq!(slot.seen(), [Outcome::Failure], "settled once");
    }

    #[test]
    fn every_judge_ignores_local_rejections_whatever_its_classifier_says() {
        // A classifier written by hand that calls every error a failure.
        #[derive(Clone)]
        struct EveryError;
        impl crate::Classify<Response<Empty<Bytes>>> for EveryError {
            fn classify(&self, result: crate::classify::CallResult<'_, Response<Empty<Bytes>>>) -> Outcome {
                if result.is_err() {
                    Outcome::Failure
                } else {
                    Outcome::Success
                }
            }
        }
        impl ClassifyEos for EveryError {
            fn classify_head<B>(&self, _: &Response<B>) -> Option<Outcome> {
                Some(Outcome::Success)
            }
            fn classify_end(&self, _: StreamEnd<'_>) -> Outcome {
                Outcome::Success
            }
        }
        let open = || -> BoxError { Box::new(CircuitOpen::new("inner", std::time::Duration::from_secs(1))) };
        let slot = Slot::default();
        EveryError.judge(Err(open()), &mut slot.clone()).unwrap_err();
        AtEos(EveryError).judge(Err(open()), &mut slot.clone()).unwrap_err();
        assert_eq!(slot.seen(), [Outcome::Ignored, Outcome::Ignored]);
        let refused: BoxError = "connection refused".into();
        EveryError.judge(Err(refused), &mut slot.clone()).unwrap_err();
        assert_eq!(
            slot.seen()[2],
            Outcome::Failure,
            "other errors are the classifier's to judge"
        );
    }

    #[tokio::test]
    async fn a_status_in_the_trailers_decides_at_the_end_of_a_stream() {
        for (status, outcome) in [
            ("14", Outcome::Failure),
            ("0", Outcome::Success),
            ("13", Outcome::Failure),
            ("5", Outcome::Success),
        ] {
            let slot = Slot::default();
            let res = AtEos(GrpcClassifier)
                .judge(
                    Ok(streamed(vec![
                        message(1),
                        message(2),
                        message(3),
                        Ok(Frame::trailers(trailers(Some(status)))),
                    ])),
                    &mut slot.clone(),
                )
                .unwrap();
            assert!(res.body().is_judging());
            let mut body = res.into_body();
            for _ in 0..3 {
                assert!(body.frame().await.unwrap().unwrap().is_data());
                assert_eq!(slot.seen(), vec![], "status {status}: not before the trailers");
            }
            assert!(body.frame().await.unwrap().unwrap().is_trailers());
            assert_eq!(slot.seen(), vec![outcome], "status {status}");
            assert!(body.frame().await.is_none());
            assert_eq!(slot.seen(), vec![outcome], "settled once");
        }
    }

    #[tokio::test]
    async fn a_trailers_only_response_is_decided_at_the_head() {
        let slot = Slot::default();
        let res = Response::builder()
            .header("grpc-status", "14")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = AtEos(GrpcClassifier).judge(Ok(res), &mut slot.clone()).unwrap();
        assert_eq!(slot.seen(), vec![Outcome::Failure]);
        assert!(!res.body().is_judging());
        let _ = res.into_body().collect().await.unwrap();
        assert_eq!(slot.seen(), vec![Outcome::Failure]);

        let slot = Slot::default();
        let res = Response::builder().status(503).body(Empty::<Bytes>::new()).unwrap();
        AtEos(GrpcClassifier).judge(Ok(res), &mut slot.clone()).unwrap();
        assert_eq!(slot.seen(), vec![Outcome::Failure]);
    }

    #[tokio::test]
    async fn a_missing_status_and_a_broken_stream_are_failures() {
        for frames in [
            vec![message(1)],
            vec![message(1), Ok(Frame::trailers(trailers(None)))],
            vec![
                message(1),
                Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            ],
        ] {
            let slot = Slot::default();
            let res = AtEos(GrpcClassifier)
                .judge(Ok(streamed(frames)), &mut slot.clone())
                .unwrap();
            let _ = res.into_body().collect().await;
            assert_eq!(slot.seen(), vec![Outcome::Failure]);
        }
        // A body that says it is over with its last data frame.
        let slot = Slot::default();
        let res = AtEos(GrpcClassifier)
            .judge(
                Ok(Response::new(Full::new(Bytes::from_static(b"\0\0\0\0\0")))),
                &mut slot.clone(),
            )
            .unwrap();
        let _ = res.into_body().collect().await;
        assert_eq!(slot.seen(), vec![Outcome::Failure]);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_settles_nothing() {
        let slot = Slot::default();
        let res = AtEos(GrpcClassifier)
            .judge(
                Ok(streamed(vec![
                    message(1),
                    message(2),
                    Ok(Frame::trailers(trailers(Some("14")))),
                ])),
                &mut slot.clone(),
            )
            .unwrap();
        let mut body = res.into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(slot.seen(), vec![]);
    }

    #[test]
    fn errors_are_classified_at_once_and_local_rejections_ignored() {
        let slot = Slot::default();
        let err: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into();
        let judged: Result<Response<EosBody<Empty<Bytes>, _, _>>, _> =
            AtEos(GrpcClassifier).judge(Err(err), &mut slot.clone());
        assert!(judged.is_err());
        let open: BoxError = CircuitOpen::new("x", std::time::Duration::ZERO).into();
        let judged: Result<Response<EosBody<Empty<Bytes>, _, _>>, _> =
            AtEos(GrpcClassifier).judge(Err(open), &mut slot.clone());
        assert!(judged.is_err());
        assert_eq!(slot.seen(), vec![Outcome::Failure, Outcome::Ignored]);
    }

    #[test]
    fn a_plain_classifier_settles_at_once_and_passes_the_response_on() {
        let slot = Slot::default();
        let res = Response::builder().status(503).body("x").unwrap();
        let res: Response<&str> = HttpClassifier.judge(Ok(res), &mut slot.clone()).unwrap();
        assert_eq!(*res.body(), "x");
        assert_eq!(slot.seen(), vec![Outcome::Failure]);
    }
}
