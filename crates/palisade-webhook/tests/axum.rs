//! Through axum and a real HTTP connection: the handler receives exactly the
//! bytes that were signed, and the verified id in its extensions.

use axum::Router;
use axum::body::Bytes;
use axum::extract::Extension;
use axum::routing::post;
use palisade_webhook::{MemoryReplayStore, Scheme, Signer, Verified, Verifier, VerifyLayer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn exchange(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> String {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn an_axum_handler_receives_exactly_the_signed_bytes() {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Bytes, Verified)>();
    let layer = VerifyLayer::builder(
        Verifier::builder(Scheme::StandardWebhooks)
            .secret(SECRET)
            .build()
            .unwrap(),
    )
    .replay_store(MemoryReplayStore::new())
    .build()
    .unwrap();
    let app = Router::new()
        .route(
            "/hooks/orders",
            post(
                move |Extension(verified): Extension<Verified>, body: Bytes| async move {
                    tx.send((body, verified)).unwrap();
                    "ok"
                },
            ),
        )
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // Bytes a JSON re-encoder would change: spacing, key order, escapes, and invalid UTF-8.
    let body: &[u8] = b"{ \"b\":1,  \"a\":\"\\u00e9\",\n\"raw\":\"\xc3\x28\" }";
    let signer = Signer::builder(Scheme::StandardWebhooks)
        .secret(SECRET)
        .build()
        .unwrap();
    let mut headers = http::HeaderMap::new();
    let signed = signer.sign(&mut headers, body).unwrap();
    let mut head = format!(
        "POST /hooks/orders HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in &headers {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap()));
    }
    head.push_str("\r\n");

    let answer = exchange(addr, &head, body).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    let (received, verified) = rx.recv().await.unwrap();
    assert_eq!(&received[..], body);
    assert_eq!(verified.id(), signed.id.as_deref());
    assert_eq!(verified.timestamp(), signed.timestamp);

    // The same delivery again: 200, empty, and the handler is not called.
    let answer = exchange(addr, &head, body).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("content-length: 0"), "{answer}");
    assert!(rx.try_recv().is_err());

    // A forged one: 401 problem+json.
    let forged = head.replace(signed.id.as_deref().unwrap(), "msg_forged");
    let answer = exchange(addr, &forged, body).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("content-type: application/problem+json"), "{answer}");
    assert!(rx.try_recv().is_err());
    server.abort();
}
