//! A service checked or profiled under valgrind (memcheck, callgrind) verifies
//! and signs webhooks there like anywhere else: the system clock must not
//! read memory valgrind does not map, such as the kernel's vDSO image.
//!
//! The test runs itself again under valgrind. It is skipped, with the reason
//! printed, where valgrind is not installed, unless
//! `PALISADE_REQUIRE_SERVICES=1`, where that fails it.

use std::process::Command;

use bytes::Bytes;
use http::HeaderMap;
use palisade_webhook::{Scheme, Signer, Verifier};

/// Set in the copy of this test that runs under valgrind.
const UNDER_VALGRIND: &str = "PALISADE_WEBHOOK_UNDER_VALGRIND";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Signs and verifies one message with the system clock, as a service does.
fn sign_and_verify() {
    let body = Bytes::from_static(br#"{"type":"invoice.paid"}"#);
    let mut headers = HeaderMap::new();
    let signer = Signer::builder(Scheme::StandardWebhooks)
        .secret(SECRET)
        .build()
        .unwrap();
    signer.sign(&mut headers, &body).unwrap();
    let verifier = Verifier::builder(Scheme::StandardWebhooks)
        .secret(SECRET)
        .build()
        .unwrap();
    let verified = verifier.verify(&headers, &body).unwrap();
    assert_eq!(verified.id(), headers["webhook-id"].to_str().ok());
}

#[test]
fn webhooks_are_signed_and_verified_under_valgrind() {
    if std::env::var_os(UNDER_VALGRIND).is_some() {
        sign_and_verify();
        return;
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        let required = std::env::var("PALISADE_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
        assert!(!required, "valgrind is not installed (PALISADE_REQUIRE_SERVICES=1)");
        eprintln!("skipped: valgrind is not installed");
        return;
    }
    let this_test = std::env::current_exe().unwrap();
    let run = Command::new("valgrind")
        .args(["--quiet", "--error-exitcode=99"])
        .arg(&this_test)
        .args([
            "--exact",
            "webhooks_are_signed_and_verified_under_valgrind",
            "--test-threads=1",
        ])
        .env(UNDER_VALGRIND, "1")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "under valgrind: {}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    // The copy ran the test, rather than filtering it out.
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("1 passed"),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
}
