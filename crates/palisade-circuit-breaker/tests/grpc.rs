//! A breaker judging gRPC calls at the end of their stream
//! (`AtEos(GrpcClassifier)`): the status in the trailers is what counts, for
//! unary and streaming responses alike; a body dropped before its end counts
//! as neither.
#![cfg(not(loom))]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use palisade_circuit_breaker::{CircuitBreakerBuilder, State};
use palisade_core::eos::AtEos;
use palisade_core::{CircuitOpen, GrpcClassifier};
use tower::{Layer, Service, ServiceExt};

/// A response body: its frames, given one per poll.
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// What the downstream answers: `messages` messages, then trailers carrying
/// `status` (or a trailers-only response when `messages` is `None`).
#[derive(Clone, Copy)]
struct Answer {
    messages: Option<usize>,
    status: &'static str,
}

fn grpc_server() -> impl Service<Request<Answer>, Response = Response<Frames>, Error = Infallible> + Clone {
    tower::service_fn(|req: Request<Answer>| async move {
        let answer = *req.body();
        let res = match answer.messages {
            None => Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", answer.status)
                .body(Frames(VecDeque::new()))
                .unwrap(),
            Some(n) => {
                let mut frames: VecDeque<_> = (0..n)
                    .map(|i| Frame::data(Bytes::from(vec![0, 0, 0, 0, 1, i as u8])))
                    .collect();
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", answer.status.parse().unwrap());
                frames.push_back(Frame::trailers(trailers));
                Response::builder()
                    .header("content-type", "application/grpc")
                    .body(Frames(frames))
                    .unwrap()
            }
        };
        Ok::<_, Infallible>(res)
    })
}

/// A breaker opening after `failures` failures in a row, judging at the
/// end of the stream, around the server; and its handle.
fn judged_at_eos(
    failures: u32,
) -> (
    impl Service<
        Request<Answer>,
        Response = Response<impl Body<Data = Bytes, Error = Infallible> + std::fmt::Debug>,
        Error = palisade_core::BoxError,
    > + Clone,
    palisade_circuit_breaker::CircuitBreakerHandle,
) {
    let layer = CircuitBreakerBuilder::consecutive("inventory")
        .consecutive_failures(failures)
        .classifier(AtEos(GrpcClassifier))
        .build()
        .unwrap();
    let handle = layer.handle();
    (layer.layer(grpc_server()), handle)
}

fn unary(status: &'static str) -> Request<Answer> {
    Request::new(Answer {
        messages: Some(1),
        status,
    })
}

#[tokio::test(start_paused = true)]
async fn unavailable_in_the_trailers_opens_the_breaker() {
    let (svc, handle) = judged_at_eos(3);

    for n in 1..=3 {
        let res = svc.clone().oneshot(unary("14")).await.unwrap();
        // The head says 200 OK: nothing is recorded yet.
        assert_eq!(handle.snapshot().consecutive_failures, n - 1);
        res.into_body().collect().await.unwrap();
        if n < 3 {
            assert_eq!(handle.snapshot().consecutive_failures, n, "after call {n}");
        }
    }
    assert_eq!(handle.state(), State::Open);
    let err = svc.clone().oneshot(unary("0")).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
}

#[tokio::test(start_paused = true)]
async fn ok_in_the_trailers_is_a_success_and_resets_the_count() {
    let (svc, handle) = judged_at_eos(3);
    for status in ["14", "14", "0", "14", "14"] {
        svc.clone()
            .oneshot(unary(status))
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
    }
    assert_eq!(handle.snapshot().consecutive_failures, 2);
    assert_eq!(handle.state(), State::Closed);
    // A code that is the caller's business (NOT_FOUND) is a success too.
    svc.clone()
        .oneshot(unary("5"))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(handle.snapshot().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn a_streaming_response_is_judged_after_its_last_message() {
    let (svc, handle) = judged_at_eos(1);
    let res = svc
        .clone()
        .oneshot(Request::new(Answer {
            messages: Some(5),
            status: "13",
        }))
        .await
        .unwrap();
    let mut body = res.into_body();
    for _ in 0..5 {
        assert!(body.frame().await.unwrap().unwrap().is_data());
        assert_eq!(handle.state(), State::Closed, "still streaming");
    }
    assert!(body.frame().await.unwrap().unwrap().is_trailers());
    assert_eq!(handle.state(), State::Open, "INTERNAL in the trailers");
}

#[tokio::test(start_paused = true)]
async fn a_trailers_only_error_is_judged_at_the_head() {
    let (svc, handle) = judged_at_eos(1);
    let res = svc
        .clone()
        .oneshot(Request::new(Answer {
            messages: None,
            status: "14",
        }))
        .await
        .unwrap();
    assert_eq!(handle.state(), State::Open, "decided before the body is read");
    drop(res);
}

#[tokio::test(start_paused = true)]
async fn a_body_dropped_before_its_end_counts_as_neither_and_frees_its_probe() {
    let layer = CircuitBreakerBuilder::consecutive("inventory")
        .consecutive_failures(1)
        .open_duration(Duration::from_secs(10))
        .permitted_calls_in_half_open(1)
        .classifier(AtEos(GrpcClassifier))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(grpc_server());

    // Dropped mid-stream while closed: nothing recorded.
    let res = svc.clone().oneshot(unary("14")).await.unwrap();
    drop(res);
    assert_eq!(handle.snapshot().consecutive_failures, 0);

    // Open it, then half-open it with one probe that is dropped unread.
    svc.clone()
        .oneshot(unary("14"))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(handle.state(), State::Open);
    tokio::time::advance(Duration::from_secs(10)).await;
    let probe = svc.clone().oneshot(unary("0")).await.unwrap();
    assert_eq!(handle.state(), State::HalfOpen);
    // The probe slot is held while the body streams...
    assert!(svc.clone().oneshot(unary("0")).await.unwrap_err().is::<CircuitOpen>());
    drop(probe);
    // ...and given back when it is dropped: the next probe goes through and closes it.
    svc.clone()
        .oneshot(unary("0"))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_keyed_breaker_judges_each_key_at_the_end_of_its_streams() {
    let layer = CircuitBreakerBuilder::consecutive("inventory")
        .consecutive_failures(1)
        .classifier(AtEos(GrpcClassifier))
        .build_keyed(|req: &Request<Answer>| req.body().status)
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(grpc_server());
    for status in ["14", "0"] {
        let res = svc.clone().oneshot(unary(status)).await.unwrap();
        assert_eq!(
            handle.get(&status).unwrap().state(),
            State::Closed,
            "not before the end"
        );
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(handle.get(&"14").unwrap().state(), State::Open);
    assert_eq!(handle.get(&"0").unwrap().state(), State::Closed);
}
