//! The client stack against flaky local servers, in real time (the servers
//! are real sockets), for a second or two.

use client_stack::flaky::FlakyServer;
use client_stack::{DriveConfig, StackConfig, client_stack, drive};
use std::time::Duration;

use http::Uri;
use tokio::net::TcpListener;

async fn server(seed: u64) -> FlakyServer {
    FlakyServer::start(TcpListener::bind("127.0.0.1:0").await.unwrap(), seed).unwrap()
}

/// The default stack with an attempt timeout no busy test machine reaches,
/// for tests that count exact attempts.
fn patient() -> StackConfig {
    StackConfig {
        attempt_timeout: Duration::from_secs(5),
        ..StackConfig::default()
    }
}

fn url(server: &FlakyServer) -> Uri {
    format!("http://{}/charges", server.addr()).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_ends_counted_and_a_flaky_server_gets_retries() {
    let flaky = server(11).await;
    flaky.control().set_failure_rate(0.3);
    flaky.control().set_slow_rate(0.05);
    let mut lines = Vec::new();
    let config = DriveConfig { seconds: 2, rate: 100 };
    let report = drive(
        client_stack(&StackConfig::default()).unwrap(),
        &config,
        vec![("flaky".to_owned(), url(&flaky))],
        |second, line| lines.push((second, line)),
    )
    .await
    .unwrap();

    assert_eq!(report.sent, 200);
    assert_eq!(report.sent, report.ok + report.failed(), "{report:?}");
    assert!(report.retries() > 0, "{report:?}");
    assert!(report.ok > 0, "{report:?}");
    // Every attempt of every POST carries the key the stack added.
    assert_eq!(flaky.control().keyed_requests(), flaky.control().requests());
    // Attempts rejected inside the client never reach the server.
    assert!(flaky.control().requests() <= report.attempts, "{report:?}");
    assert!(
        report.attempts <= report.sent * 3,
        "at most three attempts each: {report:?}"
    );
    assert_eq!(lines.iter().map(|(second, _)| *second).collect::<Vec<_>>(), [1, 2]);
    assert!(
        lines.iter().all(|(_, line)| line.contains("breakers: flaky=")),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_down_host_opens_its_own_breaker_only() {
    let up = server(1).await;
    let down = server(2).await;
    down.control().set_failure_rate(1.0);
    let mut last_line = String::new();
    let report = drive(
        client_stack(&patient()).unwrap(),
        &DriveConfig { seconds: 1, rate: 100 },
        vec![("up".to_owned(), url(&up)), ("down".to_owned(), url(&down))],
        |_, line| last_line = line,
    )
    .await
    .unwrap();

    assert_eq!(report.sent, 100);
    assert_eq!(report.ok, 50, "every request to the healthy host succeeds: {report:?}");
    assert_eq!(report.bad_status + report.circuit_open, 50, "{report:?}");
    assert!(report.circuit_open > 0, "{report:?}");
    assert_eq!(up.control().requests(), 50);
    // Five failed attempts open the breaker; it stays open for the rest of
    // the run, so the down host sees a handful of attempts, not 150.
    assert!(down.control().requests() < 20, "{}", down.control().requests());
    assert!(last_line.ends_with("breakers: up=closed down=open"), "{last_line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_host_fills_the_bulkhead_and_the_excess_is_rejected_not_retried() {
    let slow = server(3).await;
    // Within the attempt timeout, but 100 requests a second at 200 ms each
    // need about 20 permits; the bulkhead has 8.
    slow.control().set_latency(Duration::from_millis(200));
    let report = drive(
        client_stack(&patient()).unwrap(),
        &DriveConfig { seconds: 1, rate: 100 },
        vec![("slow".to_owned(), url(&slow))],
        |_, _| {},
    )
    .await
    .unwrap();

    assert_eq!(report.sent, 100);
    assert!(report.bulkhead_full > 0, "{report:?}");
    assert_eq!(report.ok + report.bulkhead_full, 100, "{report:?}");
    // Local rejections are not retried and never reach the server.
    assert_eq!(report.retries(), 0, "{report:?}");
    assert_eq!(slow.control().requests(), report.ok);
}
