//! The fuzz targets' entry points (`fuzz/src/lib.rs`, compiled in here as
//! is) in the normal suite: every file of the committed corpus
//! (`fuzz/corpus/<target>/`) is replayed, and a proptest with a fixed case
//! count (256 per property; `PROPTEST_CASES` raises it) feeds each entry
//! point generated and mutated input. The stored-response target needs Redis
//! (`REDIS_URL`); it is skipped with a printed reason when Redis is down,
//! unless `PALISADE_REQUIRE_SERVICES=1`.

#[allow(unreachable_pub)]
#[path = "../../fuzz/src/lib.rs"]
mod entry;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use palisade::idempotency::StoredResponse;
use proptest::prelude::*;

use entry::{MAX_RETRY_AFTER, StoredResponseTarget};

/// The committed corpus of `target`, file name and bytes.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a corpus entry").path();
            let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("a corpus file"))
        })
        .collect();
    files.sort();
    assert!(files.len() >= 3, "the corpus of {target} has its seeds");
    files
}

/// The Redis target for this test, or `None` (skipped) when Redis is down.
fn redis_target(test: &str) -> Option<(palisade_tests::Redis, StoredResponseTarget)> {
    let redis = entry::block_on(palisade_tests::Redis::connect(test))?;
    let target = StoredResponseTarget::connect(&redis.url, &redis.prefix).expect("Redis answered a moment ago");
    Some((redis, target))
}

/// The stored-response encoding: version, status, header count, each header
/// as name length, name, value length, value, then the body.
fn encode(status: u16, headers: &[(String, Vec<u8>)], body: &[u8]) -> Vec<u8> {
    let mut out = vec![1];
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&(headers.len() as u16).to_be_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out.extend_from_slice(body);
    out
}

#[test]
fn webhook_signature_corpus() {
    let files = corpus("webhook_signature");
    for (name, data) in &files {
        let status = entry::webhook_signature(data);
        if name.starts_with("signed-") {
            assert_eq!(
                status,
                Some(StatusCode::OK),
                "{name}: a validly signed seed reaches the handler"
            );
        }
    }
    for case in entry::webhook_case_names() {
        let seed = format!("signed-{case}");
        assert!(files.iter().any(|(name, _)| *name == seed), "a signed seed for {case}");
    }
}

#[test]
fn retry_after_corpus() {
    for (name, data) in corpus("retry_after") {
        let waited = entry::retry_after(&data);
        assert!(
            waited.is_some_and(|w| w <= MAX_RETRY_AFTER),
            "{name}: waited {waited:?}"
        );
    }
}

#[test]
fn idempotency_key_corpus() {
    for (name, data) in corpus("idempotency_key") {
        let status = entry::idempotency_key(&data);
        if name.starts_with("valid-") {
            assert_eq!(status, StatusCode::CREATED, "{name}");
        } else if name.starts_with("invalid-") {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{name}");
        }
    }
}

#[test]
fn trace_context_corpus() {
    for (_, data) in corpus("trace_context") {
        entry::trace_context(&data);
    }
}

#[test]
fn stored_response_corpus() {
    let files = corpus("stored_response");
    let Some((redis, target)) = redis_target("fuzz_stored_response_corpus") else {
        return;
    };
    for (name, data) in files {
        let decoded = entry::stored_response(&target, &data);
        if name.starts_with("valid-") {
            assert!(decoded.is_some(), "{name}: a well-formed record decodes");
        }
    }
    entry::block_on(redis.cleanup());
}

fn scheme_index() -> impl Strategy<Value = usize> {
    0..entry::webhook_case_names().len()
}

/// Header values a parser of each field might meet.
fn value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,40}",
        "[0-9 ]{0,14}",
        "\"[ -~]{0,30}\"",
        "00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}",
        "[0-9a-fA-F-]{0,60}",
        "(Mon|Sun), [0-9]{2} (Jan|Nov) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A message signed for its scheme reaches the handler; any one byte of
    /// it changed is answered by the handler only if the signature still
    /// holds, otherwise by a 400 or 401 (the entry point checks which).
    #[test]
    fn webhook_signature_signed_then_mutated(
        scheme in scheme_index(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
        mutation in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
    ) {
        let name = entry::webhook_case_names()[scheme];
        let signer = entry::webhook_signer(name).expect("a case");
        let mut headers = HeaderMap::new();
        signer.sign(&mut headers, &body).expect("signed");
        let mut data = format!("{name}\n").into_bytes();
        data.extend_from_slice(&entry::join_head(&headers, &body));
        match mutation {
            None => prop_assert_eq!(entry::webhook_signature(&data), Some(StatusCode::OK)),
            Some((at, byte)) => {
                let at = at.index(data.len());
                data[at] = byte;
                entry::webhook_signature(&data);
            }
        }
    }

    #[test]
    fn webhook_signature_arbitrary(
        scheme in scheme_index(),
        headers in proptest::collection::vec(("[a-z0-9-]{1,24}", value_text()), 0..6),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let name = entry::webhook_case_names()[scheme];
        let mut data = format!("{name}\n").into_bytes();
        for (header, value) in headers {
            data.extend_from_slice(format!("{header}: {value}\n").as_bytes());
        }
        data.push(b'\n');
        data.extend_from_slice(&body);
        entry::webhook_signature(&data);
    }

    #[test]
    fn retry_after_values(value in prop_oneof![value_text().prop_map(String::into_bytes), proptest::collection::vec(any::<u8>(), 0..40)]) {
        if let Some(waited) = entry::retry_after(&value) {
            prop_assert!(waited <= MAX_RETRY_AFTER);
        }
    }

    #[test]
    fn retry_after_seconds_are_waited(seconds in 0u64..20) {
        let waited = entry::retry_after(seconds.to_string().as_bytes());
        prop_assert_eq!(waited, Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER)));
    }

    #[test]
    fn idempotency_key_values(key in value_text(), body in proptest::collection::vec(any::<u8>(), 0..32)) {
        let mut data = format!("idempotency-key: {key}\ncontent-type: application/json\n\n").into_bytes();
        data.extend_from_slice(&body);
        let status = entry::idempotency_key(&data);
        prop_assert!(status == StatusCode::CREATED || status == StatusCode::BAD_REQUEST);
    }

    #[test]
    fn trace_context_values(
        traceparent in value_text(),
        tracestate in value_text(),
        correlation in proptest::option::of(value_text()),
    ) {
        let mut data = format!("traceparent: {traceparent}\ntracestate: {tracestate}\nx-request-id: r-1\n");
        if let Some(correlation) = correlation {
            data.push_str(&format!("x-correlation-id: {correlation}\n"));
        }
        entry::trace_context(data.as_bytes());
    }
}

#[test]
fn stored_response_round_trips_and_rejects_truncation() {
    let Some((redis, target)) = redis_target("fuzz_stored_response_proptest") else {
        return;
    };
    let strategy = (
        100u16..1000,
        proptest::collection::vec(("[a-z][a-z0-9-]{0,20}", "[ -~]{0,30}"), 0..5),
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<prop::sample::Index>(),
    );
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
    runner
        .run(&strategy, |(status, headers, body, cut)| {
            let headers: Vec<(String, Vec<u8>)> = headers
                .into_iter()
                .map(|(name, value)| (name, value.trim().as_bytes().to_vec()))
                .collect();
            let encoded = encode(status, &headers, &body);
            let decoded: StoredResponse =
                entry::stored_response(&target, &encoded).expect("a well-formed record decodes");
            prop_assert_eq!(decoded.status.as_u16(), status);
            let mut expected = HeaderMap::new();
            for (name, value) in &headers {
                expected.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_bytes(value).unwrap(),
                );
            }
            prop_assert_eq!(decoded.headers, expected);
            prop_assert_eq!(decoded.body, Bytes::from(body.clone()));
            // Cut inside the head: the record is corrupt, not a shorter response.
            let head = encoded.len() - body.len();
            let cut = cut.index(head);
            prop_assert!(entry::stored_response(&target, &encoded[..cut]).is_none());
            // Arbitrary bytes never panic.
            let mut garbled = encoded.clone();
            garbled[cut] ^= 0x5a;
            entry::stored_response(&target, &garbled);
            Ok(())
        })
        .unwrap();
    entry::block_on(redis.cleanup());
}
