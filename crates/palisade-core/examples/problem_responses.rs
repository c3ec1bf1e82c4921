//! Prints the HTTP answer palisade gives for each of its layer errors.
//!
//! `cargo run -p palisade-core --example problem_responses`

use std::time::Duration;

use palisade_core::problem::problem_for_error;
use palisade_core::{BoxError, BulkheadFull, BulkheadTimeout, CircuitOpen};

fn main() {
    let errors: Vec<(&str, BoxError)> = vec![
        (
            "an open circuit breaker",
            CircuitOpen::new("payments", Duration::from_millis(12_300)).into(),
        ),
        (
            "a full bulkhead",
            BulkheadFull::new("inventory", Duration::from_secs(1)).into(),
        ),
        (
            "a bulkhead wait that timed out",
            BulkheadTimeout::new("inventory", Duration::from_millis(250), Duration::from_secs(1)).into(),
        ),
        ("a tower timeout", tower::timeout::error::Elapsed::new().into()),
        ("any other error", "connection to 10.0.0.7 refused: password=...".into()),
    ];
    for (what, error) in errors {
        let response: http::Response<String> =
            problem_for_error(&*error).into_response_with(|body| String::from_utf8_lossy(&body).into_owned());
        println!("{what} ({error}):");
        println!("  HTTP {}", response.status());
        for (name, value) in response.headers() {
            println!("  {name}: {}", value.to_str().unwrap_or("<binary>"));
        }
        println!("  {}\n", response.body());
    }
}
