//! Holding the permit until an `http::Response` body has been sent.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty};
use palisade_bulkhead::BulkheadLayer;
use tokio::sync::mpsc;
use tower::{Layer, ServiceExt, service_fn};

/// A body streamed from a channel: ends when the sender is dropped.
#[derive(Debug)]
struct Streamed(mpsc::Receiver<Bytes>);

impl Body for Streamed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// A service whose first response streams from `rx`.
fn streaming(
    rx: mpsc::Receiver<Bytes>,
) -> impl tower::Service<(), Response = http::Response<Streamed>, Error = Infallible, Future: Send> + Clone {
    let rx = Arc::new(Mutex::new(Some(rx)));
    service_fn(move |_: ()| {
        let body = Streamed(rx.lock().unwrap().take().unwrap_or_else(|| mpsc::channel(1).1));
        async move { Ok::<_, Infallible>(http::Response::new(body)) }
    })
}

#[tokio::test(start_paused = true)]
async fn the_body_holds_the_permit_until_its_end() {
    let layer = BulkheadLayer::builder("downloads")
        .max_concurrent(1)
        .hold_permit_until_body_end()
        .build()
        .unwrap();
    let handle = layer.handle();
    let (tx, rx) = mpsc::channel(4);
    let svc = layer.layer(streaming(rx));
    let mut body = svc.clone().oneshot(()).await.unwrap().into_body();
    assert!(body.holds_permit());
    assert_eq!(handle.snapshot().in_flight, 1, "the head is sent, the body is not");
    let err = svc.clone().oneshot(()).await.unwrap_err();
    assert!(err.is::<palisade_core::BulkheadFull>());

    tx.send(Bytes::from_static(b"part")).await.unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "part");
    assert_eq!(handle.snapshot().in_flight, 1);
    drop(tx);
    assert!(body.frame().await.is_none());
    assert!(!body.holds_permit());
    assert_eq!(handle.snapshot().in_flight, 0, "released at the end of the stream");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_body_releases_the_permit() {
    let layer = BulkheadLayer::builder("downloads")
        .max_concurrent(1)
        .hold_permit_until_body_end()
        .build()
        .unwrap();
    let handle = layer.handle();
    let (_tx, rx) = mpsc::channel(1);
    let svc = layer.layer(streaming(rx));
    let response = svc.oneshot(()).await.unwrap();
    assert_eq!(handle.snapshot().in_flight, 1);
    drop(response);
    assert_eq!(handle.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn an_empty_body_holds_nothing() {
    let layer = BulkheadLayer::builder("heads")
        .max_concurrent(1)
        .hold_permit_until_body_end()
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_: ()| async {
        Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
    }));
    let response = svc.oneshot(()).await.unwrap();
    assert!(!response.body().holds_permit());
    assert_eq!(handle.snapshot().in_flight, 0);
}
