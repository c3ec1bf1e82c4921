//! The README's client stack, as written there (between the markers): it
//! compiles and serves a request.
#![cfg(feature = "full")]

use bytes::Bytes;
use http_body_util::Full;
use tower::ServiceExt;
// README: begin
use palisade::bulkhead::BulkheadLayer;
use palisade::prelude::*;
use std::time::Duration;
use tower::Layer;
// README: end

#[tokio::test]
async fn the_readme_client_stack_builds_and_serves() -> Result<(), BoxError> {
    let http_client = tower::service_fn(|_req: http::Request<_>| async {
        Ok::<_, BoxError>(http::Response::new(Full::new(Bytes::from_static(b"charged"))))
    });
    // README: begin
    let payments = palisade::stack::client("payments")
        .bulkhead(BulkheadLayer::builder("payments").max_concurrent(32)) // at most 32 calls at once
        .attempt_timeout(Duration::from_secs(2)) // per attempt
        .build()?;
    let health = payments.handle(); // every part's snapshot, for /health
    let client = payments.layer(http_client);
    // README: end
    let res = client
        .oneshot(http::Request::post("/charges").body(Full::new(Bytes::from_static(b"{}")))?)
        .await?;
    assert_eq!(res.status(), 200);
    let report = health.snapshot();
    assert_eq!(report["layers"][2]["state"], "closed", "{report}");
    assert_eq!(report["layers"][3]["limit"], 32, "{report}");
    assert_eq!(report["layers"][3]["in_flight"], 0, "{report}");
    Ok(())
}

/// Every line of the README's snippet is in the test above, so the README
/// cannot show a stack that does not compile.
#[test]
fn the_readme_shows_the_tested_stack() {
    let readme = include_str!("../../../README.md");
    let this = include_str!("readme.rs");
    let snippet = readme
        .split("## A client stack in one call")
        .nth(1)
        .and_then(|rest| rest.split("```rust\n").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("the README has the snippet");
    // Compared with runs of spaces collapsed: rustfmt aligns comments its way.
    let words = |line: &str| line.split_whitespace().collect::<Vec<_>>().join(" ");
    let tested: Vec<String> = this.lines().map(words).collect();
    for line in snippet.lines().map(words).filter(|l| !l.is_empty()) {
        assert!(tested.contains(&line), "README line not in the test: {line}");
    }
}
