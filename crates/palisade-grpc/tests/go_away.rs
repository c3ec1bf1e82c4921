//! A server that answers a new connection with `GOAWAY` (last stream id 0)
//! before reading any request: every stream the client opened on it is
//! above that id, which RFC 9113 §6.8 says the server did not process, and
//! gRPC's HTTP/2 guide says to treat as `UNAVAILABLE` and retry. Through a
//! tonic channel the status layer answers `UNAVAILABLE`, and the gRPC retry
//! sends the call again once `channel_error` marks it.
#![cfg(feature = "tonic")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Request, Response};
use palisade_grpc::{GrpcStatusLayer, channel_error};
use palisade_retry::{GrpcRetryLayer, ReplayBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::{Layer, ServiceBuilder, ServiceExt};

/// An empty SETTINGS frame, its acknowledgement of the client's, and a
/// GOAWAY with last stream id 0 and `NO_ERROR`: a server shutting down
/// that processed nothing.
const GOING_AWAY: [u8; 35] = [
    0, 0, 0, 4, 0, 0, 0, 0, 0, // SETTINGS
    0, 0, 0, 4, 1, 0, 0, 0, 0, // SETTINGS, ACK
    0, 0, 8, 7, 0, 0, 0, 0, 0, // GOAWAY, 8 bytes
    0, 0, 0, 0, // last stream id 0
    0, 0, 0, 0, // NO_ERROR
];

/// A server on loopback whose first `going_away` connections get only
/// [`GOING_AWAY`], and whose later ones are a real HTTP/2 server answering
/// every stream `OK` (trailers-only); counts the streams it answered.
async fn going_away_server(going_away: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&answered);
    tokio::spawn(async move {
        for connection in 0.. {
            let (mut socket, _) = listener.accept().await.unwrap();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                if connection < going_away {
                    socket.write_all(&GOING_AWAY).await.unwrap();
                    // Read and drop what the client sends until it closes.
                    let mut sink = [0; 1024];
                    while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
                    return;
                }
                let mut connection = h2::server::handshake(socket).await.unwrap();
                while let Some(Ok((_request, mut respond))) = connection.accept().await {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let ok = Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "0")
                        .body(())
                        .unwrap();
                    let _ = respond.send_response(ok, true);
                }
            });
        }
    });
    (format!("http://{addr}"), answered)
}

fn channel(endpoint: String) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(endpoint)
        .unwrap()
        .connect_lazy()
}

fn call<B: Default>() -> Request<B> {
    Request::builder()
        .method("POST")
        .uri("http://payments/payments.Payments/Charge")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(B::default())
        .unwrap()
}

#[tokio::test]
async fn a_stream_above_the_goaway_is_unavailable() {
    let (endpoint, answered) = going_away_server(1).await;
    let layer = GrpcStatusLayer::builder("payments").build().unwrap();
    let res = layer.layer(channel(endpoint)).oneshot(call()).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "14");
    assert_eq!(answered.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_stream_above_the_goaway_is_retried_once_marked_by_channel_error() {
    let (endpoint, answered) = going_away_server(1).await;
    let retry = GrpcRetryLayer::builder("payments").build().unwrap();
    let client = ServiceBuilder::new()
        .layer(retry)
        .map_request(|req: Request<ReplayBody<tonic::body::Body>>| req.map(tonic::body::Body::new))
        .map_err(channel_error)
        .service(channel(endpoint));
    let res = client.oneshot(call::<tonic::body::Body>()).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "0");
    assert_eq!(answered.load(Ordering::SeqCst), 1, "sent again, on a new connection");
}
