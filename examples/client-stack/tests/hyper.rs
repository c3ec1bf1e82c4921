//! The same one-call stack over hyper-util's client.

use client_stack::flaky::FlakyServer;
use client_stack::{DriveConfig, StackConfig, client_stack_over_hyper, drive};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_over_hyper_retries_with_the_same_key_and_counts_every_request() {
    let flaky = FlakyServer::start(TcpListener::bind("127.0.0.1:0").await.unwrap(), 5).unwrap();
    flaky.control().set_failure_rate(0.3);
    let stack = client_stack_over_hyper(&StackConfig::default()).unwrap();
    let target = format!("http://{}/charges", flaky.addr()).parse().unwrap();
    let report = drive(
        stack,
        &DriveConfig { seconds: 1, rate: 100 },
        vec![("flaky".to_owned(), target)],
        |_, _| {},
    )
    .await
    .unwrap();

    assert_eq!(report.sent, 100);
    assert_eq!(report.sent, report.ok + report.failed(), "{report:?}");
    assert!(report.retries() > 0, "{report:?}");
    assert!(flaky.control().requests() <= report.attempts, "{report:?}");
    assert_eq!(flaky.control().keyed_requests(), flaky.control().requests());
}
