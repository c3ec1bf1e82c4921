//! The fault proxy itself, against a loopback echo server: it forwards both ways, and each
//! control and trigger does exactly what the fault tests rely on.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use palisade_tests::fault_proxy::{Action, Direction, FaultProxy};
use palisade_tests::{upstream_of, via};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

/// An echo server that also reports every chunk it received.
async fn echo_server() -> (SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = [0_u8; 1024];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = seen.send(Vec::new());
                            return;
                        }
                        Ok(n) => {
                            let _ = seen.send(buf[..n].to_vec());
                            if socket.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, received)
}

async fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    timeout(WAIT, stream.read_exact(&mut buf))
        .await
        .expect("bytes in time")
        .expect("read");
    buf
}

/// What a read on a cut connection gives: a reset (or, at worst, the end of the stream).
async fn assert_closed(stream: &mut TcpStream) {
    let mut buf = [0_u8; 16];
    match timeout(WAIT, stream.read(&mut buf)).await.expect("closed in time") {
        Ok(0) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("{n} bytes after the cut"),
    }
}

async fn assert_quiet(stream: &mut TcpStream) {
    let mut buf = [0_u8; 16];
    assert!(
        timeout(QUIET, stream.read(&mut buf)).await.is_err(),
        "nothing comes through"
    );
}

async fn next_chunk(received: &mut mpsc::UnboundedReceiver<Vec<u8>>) -> Vec<u8> {
    timeout(WAIT, received.recv()).await.expect("the server read").unwrap()
}

#[tokio::test]
async fn forwards_both_ways_and_passes_the_close_on() {
    let (upstream, mut received) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    assert_eq!(proxy.upstream(), upstream);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    assert_eq!(read_exactly(&mut client, 5).await, b"hello");
    assert_eq!(next_chunk(&mut received).await, b"hello");
    assert_eq!((proxy.accepted(), proxy.open_connections()), (1, 1));
    client.shutdown().await.unwrap();
    assert_eq!(next_chunk(&mut received).await, b"", "the server sees the close");
    assert_eq!(timeout(WAIT, client.read(&mut [0; 4])).await.unwrap().unwrap(), 0);
    timeout(WAIT, async {
        while proxy.open_connections() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the connection is forgotten once closed");
}

#[tokio::test]
async fn cut_resets_every_open_connection_and_new_ones_still_work() {
    let (upstream, mut received) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let mut first = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut second = TcpStream::connect(proxy.addr()).await.unwrap();
    for client in [&mut first, &mut second] {
        client.write_all(b"x").await.unwrap();
        read_exactly(client, 1).await;
        next_chunk(&mut received).await;
    }
    proxy.cut();
    assert_closed(&mut first).await;
    assert_closed(&mut second).await;
    // Both server sides saw the connection end.
    assert_eq!(next_chunk(&mut received).await, b"");
    assert_eq!(next_chunk(&mut received).await, b"");
    let mut third = TcpStream::connect(proxy.addr()).await.unwrap();
    third.write_all(b"again").await.unwrap();
    assert_eq!(read_exactly(&mut third, 5).await, b"again");
}

#[tokio::test]
async fn a_stall_holds_bytes_one_way_until_resumed() {
    let (upstream, mut received) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    proxy.stall(Direction::ToClient);
    client.write_all(b"ping").await.unwrap();
    assert_eq!(next_chunk(&mut received).await, b"ping", "the other way still moves");
    assert_quiet(&mut client).await;
    proxy.resume();
    assert_eq!(read_exactly(&mut client, 4).await, b"ping", "held, not dropped");

    proxy.stall(Direction::ToUpstream);
    client.write_all(b"pong").await.unwrap();
    assert!(
        timeout(QUIET, received.recv()).await.is_err(),
        "nothing reaches the server"
    );
    proxy.resume();
    assert_eq!(next_chunk(&mut received).await, b"pong");
    assert_eq!(read_exactly(&mut client, 4).await, b"pong");

    // The close is held like any byte.
    proxy.stall(Direction::ToUpstream);
    client.shutdown().await.unwrap();
    assert!(
        timeout(QUIET, received.recv()).await.is_err(),
        "the server sees no close"
    );
    proxy.resume();
    assert_eq!(next_chunk(&mut received).await, b"", "the close arrives");
}

#[tokio::test]
async fn refused_connections_are_reset_until_resumed() {
    let (upstream, _received) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    proxy.refuse();
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_closed(&mut refused).await;
    assert_eq!((proxy.accepted(), proxy.open_connections()), (1, 0));
    proxy.resume();
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(b"ok").await.unwrap();
    assert_eq!(read_exactly(&mut client, 2).await, b"ok");
}

#[tokio::test]
async fn a_cut_trigger_forwards_what_came_before_the_match_and_nothing_after() {
    let (upstream, mut received) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let fault = proxy.on(Direction::ToUpstream, b"COMMIT", Action::Cut);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(b"INSERT").await.unwrap();
    assert_eq!(next_chunk(&mut received).await, b"INSERT");
    assert_eq!(read_exactly(&mut client, 6).await, b"INSERT");
    assert!(!fault.has_fired());
    // Split across two writes, the pattern still matches.
    client.write_all(b"COM").await.unwrap();
    assert_eq!(next_chunk(&mut received).await, b"COM");
    read_exactly(&mut client, 3).await;
    client.write_all(b"MIT").await.unwrap();
    timeout(WAIT, fault.fired()).await.expect("fired");
    assert_eq!(next_chunk(&mut received).await, b"", "the server only sees the reset");
    assert_closed(&mut client).await;

    // One-shot: the next connection passes the same bytes.
    let mut next = TcpStream::connect(proxy.addr()).await.unwrap();
    next.write_all(b"COMMIT").await.unwrap();
    assert_eq!(read_exactly(&mut next, 6).await, b"COMMIT");
}

#[tokio::test]
async fn a_cut_trigger_towards_the_client_drops_the_answer_and_only_that_connection() {
    let (upstream, mut received) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let mut bystander = TcpStream::connect(proxy.addr()).await.unwrap();
    let fault = proxy.on(Direction::ToClient, b"ack", Action::Cut);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(b"ack").await.unwrap();
    assert_eq!(next_chunk(&mut received).await, b"ack", "the request arrived");
    timeout(WAIT, fault.fired()).await.expect("fired");
    assert_closed(&mut client).await;
    bystander.write_all(b"ack").await.unwrap();
    assert_eq!(read_exactly(&mut bystander, 3).await, b"ack");
}

#[tokio::test]
async fn cut_at_reply_delivers_the_request_and_drops_its_answer() {
    let (upstream, mut received) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let fault = proxy.on(Direction::ToUpstream, b"write", Action::CutAtReply);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(b"write").await.unwrap();
    assert_eq!(next_chunk(&mut received).await, b"write", "the request arrived");
    assert!(fault.has_fired());
    assert_closed(&mut client).await;
}

#[tokio::test]
async fn a_stall_trigger_holds_the_connection_from_the_match_until_resumed() {
    let (upstream, mut received) = echo_server().await;
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let fault = proxy.on(Direction::ToUpstream, b"slow", Action::Stall);
    let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
    client.write_all(b"fast").await.unwrap();
    assert_eq!(read_exactly(&mut client, 4).await, b"fast");
    next_chunk(&mut received).await;
    client.write_all(b"slow").await.unwrap();
    timeout(WAIT, fault.fired()).await.expect("fired");
    assert!(timeout(QUIET, received.recv()).await.is_err(), "held");
    assert_quiet(&mut client).await;
    proxy.resume();
    assert_eq!(next_chunk(&mut received).await, b"slow");
    assert_eq!(read_exactly(&mut client, 4).await, b"slow");
}

#[test]
fn urls_are_pointed_at_the_proxy_keeping_user_path_and_query() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let upstream: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let proxy = FaultProxy::start(upstream).await.unwrap();
        let port = proxy.addr().port();
        assert_eq!(
            via("postgres://postgres@127.0.0.1:5432/test?options=x", &proxy),
            format!("postgres://postgres@127.0.0.1:{port}/test?options=x")
        );
        assert_eq!(
            via("amqp://guest:guest@localhost/%2f", &proxy),
            format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
        );
        assert_eq!(
            via("redis://127.0.0.1:6379", &proxy),
            format!("redis://127.0.0.1:{port}")
        );
    });
    assert_eq!(upstream_of("nats://127.0.0.1:4222", 4222).port(), 4222);
    assert_eq!(upstream_of("amqp://guest:guest@127.0.0.1/%2f", 5672).port(), 5672);
    assert_eq!(
        upstream_of("postgres://postgres@127.0.0.1:5433/test", 5432),
        "127.0.0.1:5433".parse().unwrap()
    );
}
