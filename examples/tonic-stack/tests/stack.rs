//! The inventory stacks over real sockets: a tonic server and client, each
//! built from palisade layers, and the warehouse upstream scripted to fail.
//!
//! Real sockets need real time: waits are short and margins generous, and
//! no assertion depends on how fast the machine is.

use std::net::SocketAddr;
use std::time::Duration;

use palisade::circuit_breaker::State;
use tokio::net::TcpListener;
use tonic::Code;
use tonic_stack::client::{Client, ClientConfig, client};
use tonic_stack::proto::{GetStockRequest, WatchStockRequest};
use tonic_stack::server::{Running, ServerConfig, channel, spawn};
use tonic_stack::warehouse::{Behaviour, DEFAULT_COUNT, Warehouse};

struct Setup {
    warehouse: Warehouse,
    server: Running,
}

async fn setup(config: ServerConfig) -> Setup {
    let warehouse = Warehouse::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let warehouse_addr = listener.local_addr().unwrap();
    tokio::spawn(warehouse.clone().serve(listener));
    let server = spawn(TcpListener::bind("127.0.0.1:0").await.unwrap(), warehouse_addr, &config).unwrap();
    Setup { warehouse, server }
}

fn connect(addr: SocketAddr, config: ClientConfig) -> Client {
    client(channel(addr).unwrap(), &config).unwrap()
}

fn sku() -> GetStockRequest {
    GetStockRequest { sku: "apple".into() }
}

fn pushback_ms(status: &tonic::Status) -> Option<u64> {
    status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

/// A server whose upstream breaker stays out of the way.
fn patient_server() -> ServerConfig {
    ServerConfig {
        upstream_failures: 1_000,
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn unavailable_in_the_trailers_opens_the_client_breaker_and_then_calls_fail_fast_with_pushback() {
    let Setup { warehouse, server } = setup(patient_server()).await;
    let Client {
        mut inventory, breaker, ..
    } = connect(
        server.addr,
        ClientConfig {
            breaker_failures: 3,
            breaker_open: Duration::from_secs(30),
            ..ClientConfig::default()
        },
    );

    for n in 0..3u32 {
        // One count, then the warehouse fails: UNAVAILABLE in the trailers.
        warehouse.script([Behaviour::Count(7), Behaviour::Fail(Code::Unavailable)]);
        let mut stream = inventory
            .watch_stock(WatchStockRequest {
                sku: "apple".into(),
                updates: 2,
            })
            .await
            .expect("the head is 200 OK")
            .into_inner();
        assert_eq!(stream.message().await.unwrap().unwrap().available, 7);
        assert_eq!(breaker.snapshot().consecutive_failures, n, "not judged before the end");
        let status = stream.message().await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        if n < 2 {
            assert_eq!(breaker.snapshot().consecutive_failures, n + 1, "judged by the trailers");
        }
    }
    assert_eq!(breaker.state(), State::Open);

    let reached = warehouse.calls();
    let started = tokio::time::Instant::now();
    for _ in 0..5 {
        let status = inventory.get_stock(sku()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        let pushback = pushback_ms(&status).expect("the wait is sent");
        assert!(pushback > 0 && pushback <= 30_000, "{pushback}");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "failed fast");
    assert_eq!(warehouse.calls(), reached, "nothing reached the server");
}

#[tokio::test]
async fn a_full_server_bulkhead_answers_unavailable_with_pushback() {
    let Setup { warehouse, server } = setup(ServerConfig {
        max_concurrent: 1,
        ..patient_server()
    })
    .await;
    let one_attempt = ClientConfig {
        max_attempts: 1,
        ..ClientConfig::default()
    };
    let Client { inventory, .. } = connect(server.addr, one_attempt.clone());

    // The first call takes the only permit and stays in the handler.
    warehouse.script([Behaviour::Hang]);
    let mut first = inventory.clone();
    let hanging = tokio::spawn(async move { first.get_stock(sku()).await });
    while warehouse.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.bulkhead.snapshot().in_flight, 1);

    let Client {
        inventory: mut second, ..
    } = connect(server.addr, one_attempt);
    for _ in 0..3 {
        let status = second.get_stock(sku()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(status.message(), "the service is at capacity; try again later");
        assert_eq!(pushback_ms(&status), Some(200));
    }
    assert_eq!(warehouse.calls(), 1, "rejected calls never reached the handler");
    hanging.abort();
}

#[tokio::test]
async fn a_call_is_retried_after_two_unavailables_and_not_after_a_non_retryable_status() {
    let Setup { warehouse, server } = setup(patient_server()).await;
    let Client { mut inventory, .. } = connect(
        server.addr,
        ClientConfig {
            max_attempts: 3,
            first_backoff: Duration::from_millis(20),
            ..ClientConfig::default()
        },
    );

    warehouse.script([Behaviour::Fail(Code::Unavailable), Behaviour::Fail(Code::Unavailable)]);
    let stock = inventory.get_stock(sku()).await.expect("the third attempt succeeds");
    assert_eq!(stock.into_inner().available, DEFAULT_COUNT);
    assert_eq!(warehouse.calls(), 3);

    for code in [
        Code::Internal,
        Code::NotFound,
        Code::InvalidArgument,
        Code::ResourceExhausted,
    ] {
        let before = warehouse.calls();
        warehouse.script([Behaviour::Fail(code)]);
        let status = inventory.get_stock(sku()).await.unwrap_err();
        assert_eq!(status.code(), code);
        assert_eq!(warehouse.calls(), before + 1, "{code:?} is not retried");
    }
}

#[tokio::test]
async fn the_breaker_in_front_of_a_channel_never_lets_a_call_through_while_open() {
    let Setup { warehouse, server } = setup(patient_server()).await;
    let Client { inventory, breaker, .. } = connect(
        server.addr,
        ClientConfig {
            max_attempts: 1,
            breaker_failures: 2,
            breaker_open: Duration::from_millis(500),
            ..ClientConfig::default()
        },
    );

    // Two trailers-only UNAVAILABLEs open it.
    warehouse.script([Behaviour::Fail(Code::Unavailable), Behaviour::Fail(Code::Unavailable)]);
    for _ in 0..2 {
        assert_eq!(
            inventory.clone().get_stock(sku()).await.unwrap_err().code(),
            Code::Unavailable
        );
    }
    assert_eq!(breaker.state(), State::Open);

    // A burst of concurrent calls while open: none reaches the server.
    let reached = warehouse.calls();
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let mut inventory = inventory.clone();
            tokio::spawn(async move { inventory.get_stock(sku()).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap_err().code(), Code::Unavailable);
    }
    assert_eq!(warehouse.calls(), reached);

    // Half-open: exactly one probe goes through while the others are rejected.
    tokio::time::sleep(Duration::from_millis(600)).await;
    warehouse.script([Behaviour::Slow(Duration::from_millis(300), 9)]);
    let mut probe = inventory.clone();
    let probe = tokio::spawn(async move { probe.get_stock(sku()).await });
    while warehouse.calls() == reached {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(breaker.state(), State::HalfOpen);
    for _ in 0..10 {
        assert_eq!(
            inventory.clone().get_stock(sku()).await.unwrap_err().code(),
            Code::Unavailable
        );
    }
    assert_eq!(warehouse.calls(), reached + 1, "only the probe went through");
    assert_eq!(probe.await.unwrap().unwrap().into_inner().available, 9);
    assert_eq!(breaker.state(), State::Closed);
}

/// `grpc-timeout` as a duration (the units tonic and palisade send).
fn grpc_timeout(value: &str) -> Duration {
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().unwrap();
    match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => panic!("unit {unit}"),
    }
}

#[tokio::test]
async fn a_300_ms_client_deadline_reaches_the_server_and_its_upstream_call_which_is_cancelled() {
    let Setup { warehouse, server } = setup(patient_server()).await;
    let Client { mut inventory, .. } = connect(server.addr, ClientConfig::default());

    warehouse.script([Behaviour::Hang]);
    let mut request = tonic::Request::new(sku());
    request.set_timeout(Duration::from_millis(300));
    let started = tokio::time::Instant::now();
    let status = inventory.get_stock(request).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    // Each hop keeps a few milliseconds of the budget for the answer's way back.
    assert!(
        took >= Duration::from_millis(250),
        "not long before the deadline: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "at the deadline: {took:?}");

    // The server saw the deadline...
    let seen = server.deadlines_seen();
    assert_eq!(seen.len(), 1);
    let left = seen[0].expect("the handler runs under the caller's deadline");
    assert!(
        left <= Duration::from_millis(300) && left > Duration::from_millis(100),
        "{left:?}"
    );
    // ...and so did its upstream call, with less left...
    let sent = warehouse.timeouts();
    assert_eq!(sent.len(), 1);
    let upstream = grpc_timeout(sent[0].as_deref().expect("grpc-timeout sent upstream"));
    assert!(
        upstream < left && upstream > Duration::from_millis(50),
        "{upstream:?} after {left:?}"
    );
    // ...which was cancelled when the deadline passed.
    let waiting = tokio::time::Instant::now();
    while warehouse.cancelled() == 0 {
        assert!(
            waiting.elapsed() < Duration::from_secs(5),
            "the upstream call was never cancelled"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(warehouse.cancelled(), 1);
}
