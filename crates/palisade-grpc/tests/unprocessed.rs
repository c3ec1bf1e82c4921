//! Streams the server did not process, reached through a tonic channel: one
//! it refused (`RST_STREAM` with `REFUSED_STREAM`, RFC 9113 §8.7) and one
//! above the last stream a `GOAWAY` accepted (§6.8; gRPC's HTTP/2 guide says
//! to treat it as `UNAVAILABLE` and retry). The status layer answers
//! `UNAVAILABLE`, as gRPC's HTTP/2 mapping says, and the gRPC retry sends
//! the call again, which is safe whatever the method, once `channel_error`
//! marks it.
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
/// [`GOING_AWAY`], before it reads anything, and whose later ones are a real
/// HTTP/2 server that refuses the first `refused` streams and answers every
/// later one `OK` (trailers-only); counts the streams the HTTP/2 server saw.
async fn server(going_away: usize, refused: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let streams = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&streams);
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
                    if seen.fetch_add(1, Ordering::SeqCst) < refused {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
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
    (format!("http://{addr}"), streams)
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

/// One call through the gRPC retry over a channel to `endpoint`, its errors
/// marked by `channel_error`: the status it ends with.
async fn retried(endpoint: String) -> String {
    let retry = GrpcRetryLayer::builder("payments").build().unwrap();
    let client = ServiceBuilder::new()
        .layer(retry)
        .map_request(|req: Request<ReplayBody<tonic::body::Body>>| req.map(tonic::body::Body::new))
        .map_err(channel_error)
        .service(channel(endpoint));
    let res = client.oneshot(call::<tonic::body::Body>()).await.unwrap();
    res.headers()["grpc-status"].to_str().unwrap().to_owned()
}

/// One call through the status layer over a channel to `endpoint`: its status.
async fn answered(endpoint: String) -> String {
    let layer = GrpcStatusLayer::builder("payments").build().unwrap();
    let res = layer.layer(channel(endpoint)).oneshot(call()).await.unwrap();
    res.headers()["grpc-status"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_refused_stream_is_unavailable() {
    let (endpoint, streams) = server(0, 1).await;
    assert_eq!(answered(endpoint).await, "14");
    assert_eq!(streams.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_stream_is_retried_once_marked_by_channel_error() {
    let (endpoint, streams) = server(0, 1).await;
    assert_eq!(retried(endpoint).await, "0");
    assert_eq!(streams.load(Ordering::SeqCst), 2, "the refused call was sent again");
}

#[tokio::test]
async fn a_stream_above_the_goaway_is_unavailable() {
    let (endpoint, streams) = server(1, 0).await;
    assert_eq!(answered(endpoint).await, "14");
    assert_eq!(streams.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_stream_above_the_goaway_is_retried_once_marked_by_channel_error() {
    let (endpoint, streams) = server(1, 0).await;
    assert_eq!(retried(endpoint).await, "0");
    assert_eq!(streams.load(Ordering::SeqCst), 1, "sent again, on a new connection");
}

#[test]
fn every_http2_error_gets_the_code_of_grpcs_mapping() {
    use palisade_core::GrpcCode;
    use palisade_grpc::GrpcStatus;
    // PROTOCOL-HTTP2.md, "Errors": every protocol error is INTERNAL, but for
    // the four below; STREAM_CLOSED has no mapping (no stream to report on).
    let cases = [
        (h2::Reason::NO_ERROR, GrpcCode::Internal),
        (h2::Reason::PROTOCOL_ERROR, GrpcCode::Internal),
        (h2::Reason::INTERNAL_ERROR, GrpcCode::Internal),
        (h2::Reason::FLOW_CONTROL_ERROR, GrpcCode::Internal),
        (h2::Reason::SETTINGS_TIMEOUT, GrpcCode::Internal),
        (h2::Reason::STREAM_CLOSED, GrpcCode::Unknown),
        (h2::Reason::FRAME_SIZE_ERROR, GrpcCode::Internal),
        (h2::Reason::REFUSED_STREAM, GrpcCode::Unavailable),
        (h2::Reason::CANCEL, GrpcCode::Cancelled),
        (h2::Reason::COMPRESSION_ERROR, GrpcCode::Internal),
        (h2::Reason::CONNECT_ERROR, GrpcCode::Internal),
        (h2::Reason::ENHANCE_YOUR_CALM, GrpcCode::ResourceExhausted),
        (h2::Reason::INADEQUATE_SECURITY, GrpcCode::PermissionDenied),
        (h2::Reason::HTTP_1_1_REQUIRED, GrpcCode::Internal),
    ];
    for (reason, code) in cases {
        let error = h2::Error::from(reason);
        assert_eq!(
            GrpcStatus::for_error(&error, GrpcCode::Unavailable).code(),
            code,
            "{reason:?}"
        );
    }
}
