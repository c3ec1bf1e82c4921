//! A real HTTP/2 server that refuses a stream (`RST_STREAM` with
//! `REFUSED_STREAM`: it did not process the request, RFC 9113 §8.7).
//! reqwest's client sends such a request again by itself when it can copy
//! the body; through `ReqwestService` it must still be able to.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::Response;
use http_body_util::Empty;
use palisade_reqwest::ReqwestService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// An HTTP/2 server on loopback that refuses the first stream and answers
/// every later one 200; counts the streams it saw.
async fn refusing_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let streams = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&streams);
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut connection = h2::server::handshake(socket).await.unwrap();
                while let Some(Ok((_request, mut respond))) = connection.accept().await {
                    if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let _ = respond.send_response(Response::new(()), true);
                }
            });
        }
    });
    (format!("http://{addr}/"), streams)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().http2_prior_knowledge().build().unwrap()
}

#[tokio::test]
async fn a_refused_stream_is_sent_again_as_reqwest_itself_would() {
    // reqwest alone: the premise.
    let (url, streams) = refusing_server().await;
    let direct = client().get(&url).send().await.unwrap();
    assert_eq!((direct.status().as_u16(), streams.load(Ordering::SeqCst)), (200, 2));

    // Through the adapter, a request without a body.
    let (url, streams) = refusing_server().await;
    let req = http::Request::get(&url).body(Empty::<Bytes>::new()).unwrap();
    let res = ReqwestService::new(client())
        .oneshot(req)
        .await
        .expect("refused unprocessed, then sent again");
    assert_eq!((res.status().as_u16(), streams.load(Ordering::SeqCst)), (200, 2));
}

#[cfg(feature = "http2")]
#[tokio::test]
async fn a_refused_stream_with_a_body_is_marked_unsent_and_retried() {
    use http_body_util::Full;
    use palisade_core::error::is_connect_error;
    use palisade_retry::{Backoff, HttpRetryLayer, Jitter};
    use tower::Layer;

    // reqwest cannot copy a streamed body, so it gives such a refusal back;
    // HTTP/2 promises the server did not process it, so it is marked as a
    // request never sent, and palisade's retry sends a PUT again.
    let (url, streams) = refusing_server().await;
    let req = http::Request::put(&url)
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let error = ReqwestService::new(client()).oneshot(req).await.unwrap_err();
    assert!(is_connect_error(&*error), "{error:?}");
    assert_eq!(streams.load(Ordering::SeqCst), 1);

    let (url, streams) = refusing_server().await;
    let retry = HttpRetryLayer::builder("refused")
        .backoff(Backoff::constant(std::time::Duration::from_millis(1)))
        .jitter(Jitter::None)
        .no_budget()
        .build()
        .unwrap();
    let req = http::Request::put(&url)
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let res = retry
        .layer(ReqwestService::new(client()))
        .oneshot(req)
        .await
        .expect("refused unprocessed, then sent again");
    assert_eq!((res.status().as_u16(), streams.load(Ordering::SeqCst)), (200, 2));
}
