//! The published test vectors: valid signatures verify, invalid and decoy
//! signatures are rejected, and the signer reproduces the valid ones.

use http::{HeaderMap, HeaderName, HeaderValue};
use palisade_webhook::{FixedClock, Reason, Scheme, SchemeKind, Signer, Verifier};
use serde_json::Value;

const VECTORS: &str = include_str!("vectors/webhooks.json");

fn vectors(section: &str) -> Vec<Value> {
    let all: Value = serde_json::from_str(VECTORS).unwrap();
    let list = all[section]
        .as_array()
        .unwrap_or_else(|| panic!("no section {section}"))
        .clone();
    assert!(!list.is_empty(), "section {section} is empty");
    list
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_else(|| panic!("no {field} in {v}"))
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            )
        })
        .collect()
}

fn standard_headers(prefix: &str, v: &Value, signature: &str) -> HeaderMap {
    let ts = v["timestamp"].as_u64().unwrap().to_string();
    headers(&[
        (&format!("{prefix}-id"), text(v, "id")),
        (&format!("{prefix}-timestamp"), &ts),
        (&format!("{prefix}-signature"), signature),
    ])
}

#[test]
fn standard_webhooks_v1_vectors() {
    for v in vectors("standard_webhooks") {
        let ts = v["timestamp"].as_u64().unwrap();
        let body = text(&v, "body").as_bytes();
        let verifier = Verifier::builder(Scheme::StandardWebhooks)
            .secret(text(&v, "secret"))
            .clock(FixedClock(ts))
            .build()
            .unwrap();
        let valid = strings(&v, "valid");
        let invalid = strings(&v, "invalid");
        let decoys = strings(&v, "decoys_for_multi_signature_headers");
        for prefix in ["webhook", "svix"] {
            for sig in &valid {
                let verified = verifier.verify(&standard_headers(prefix, &v, sig), body).unwrap();
                assert_eq!(verified.scheme(), SchemeKind::StandardWebhooks);
                assert_eq!(verified.id(), Some(text(&v, "id")));
                assert_eq!(verified.timestamp(), Some(ts));
                // Any change to the body breaks it.
                let mut tampered = body.to_vec();
                tampered[0] ^= 1;
                let err = verifier
                    .verify(&standard_headers(prefix, &v, sig), &tampered)
                    .unwrap_err();
                assert_eq!(err.reason(), Reason::BadSignature);
            }
            for sig in &invalid {
                let err = verifier.verify(&standard_headers(prefix, &v, sig), body).unwrap_err();
                assert_eq!(err.reason(), Reason::BadSignature, "{sig}");
            }
            if !decoys.is_empty() {
                let only_decoys = decoys.join(" ");
                let err = verifier
                    .verify(&standard_headers(prefix, &v, &only_decoys), body)
                    .unwrap_err();
                assert_eq!(err.reason(), Reason::BadSignature);
                // A multi-signature header is accepted when any signature is valid, wherever it stands.
                for position in 0..=decoys.len() {
                    let mut list = decoys.clone();
                    list.insert(position, valid[0].clone());
                    verifier
                        .verify(&standard_headers(prefix, &v, &list.join(" ")), body)
                        .unwrap();
                }
            }
        }

        // The clock matters: a minute past the tolerance, either way, is stale.
        for now in [ts + 301, ts - 301] {
            let late = Verifier::builder(Scheme::StandardWebhooks)
                .secret(text(&v, "secret"))
                .clock(FixedClock(now))
                .build()
                .unwrap();
            let err = late
                .verify(&standard_headers("webhook", &v, &valid[0]), body)
                .unwrap_err();
            assert_eq!(err.reason(), Reason::StaleTimestamp);
        }

        // The signer reproduces the published signature.
        let signer = Signer::builder(Scheme::StandardWebhooks)
            .secret(text(&v, "secret"))
            .build()
            .unwrap();
        let mut signed = HeaderMap::new();
        signer.sign_with(&mut signed, text(&v, "id"), ts, body).unwrap();
        assert_eq!(signed, standard_headers("webhook", &v, &valid[0]));
    }
}

#[test]
fn standard_webhooks_v1a_ed25519_vectors() {
    for v in vectors("standard_webhooks_v1a_ed25519") {
        let ts = v["timestamp"].as_u64().unwrap();
        let body = text(&v, "body").as_bytes();
        let verifier = Verifier::builder(Scheme::StandardWebhooks)
            .public_key(text(&v, "public_key"))
            .clock(FixedClock(ts))
            .build()
            .unwrap();
        for sig in strings(&v, "valid") {
            let verified = verifier.verify(&standard_headers("webhook", &v, &sig), body).unwrap();
            assert_eq!(verified.key_index(), 0);
            let err = verifier
                .verify(&standard_headers("webhook", &v, &sig), b"{\"test\": 2432232315}")
                .unwrap_err();
            assert_eq!(err.reason(), Reason::BadSignature);
            // A v1 HMAC signature is not checked against a public key.
            let v1 = sig.replacen("v1a,", "v1,", 1);
            assert!(verifier.verify(&standard_headers("webhook", &v, &v1), body).is_err());

            let signer = Signer::builder(Scheme::StandardWebhooks)
                .signing_key(text(&v, "signing_key"))
                .build()
                .unwrap();
            let mut signed = HeaderMap::new();
            signer.sign_with(&mut signed, text(&v, "id"), ts, body).unwrap();
            assert_eq!(signed, standard_headers("webhook", &v, &sig));
        }
    }
}

#[test]
fn github_vectors() {
    for v in vectors("github") {
        let verifier = Verifier::builder(Scheme::GitHub)
            .secret(text(&v, "secret"))
            .build()
            .unwrap();
        let body = text(&v, "body").as_bytes();
        for sig in strings(&v, "valid") {
            let h = headers(&[(text(&v, "header"), &sig)]);
            let verified = verifier.verify(&h, body).unwrap();
            assert_eq!((verified.id(), verified.timestamp()), (None, None));
            assert_eq!(
                verifier.verify(&h, b"Hello, World").unwrap_err().reason(),
                Reason::BadSignature
            );

            let signer = Signer::builder(Scheme::GitHub)
                .secret(text(&v, "secret"))
                .build()
                .unwrap();
            let mut signed = HeaderMap::new();
            signer
                .sign_with(&mut signed, "72d3162e-cc78-11e3-81ab-4c9367dc0958", 0, body)
                .unwrap();
            assert_eq!(signed[text(&v, "header")], sig.as_str());
            assert_eq!(signed["x-github-delivery"], "72d3162e-cc78-11e3-81ab-4c9367dc0958");
        }
    }
}

#[test]
fn slack_vectors() {
    for v in vectors("slack") {
        let ts = v["timestamp"].as_u64().unwrap();
        let body = text(&v, "body").as_bytes();
        let verifier = Verifier::builder(Scheme::Slack)
            .secret(text(&v, "secret"))
            .clock(FixedClock(ts + 299))
            .build()
            .unwrap();
        for sig in strings(&v, "valid") {
            let h = headers(&[
                (text(&v, "header"), &sig),
                ("x-slack-request-timestamp", &ts.to_string()),
            ]);
            assert_eq!(verifier.verify(&h, body).unwrap().timestamp(), Some(ts));
            let moved = headers(&[
                (text(&v, "header"), &sig),
                ("x-slack-request-timestamp", &(ts + 1).to_string()),
            ]);
            assert_eq!(
                verifier.verify(&moved, body).unwrap_err().reason(),
                Reason::BadSignature
            );

            let signer = Signer::builder(Scheme::Slack)
                .secret(text(&v, "secret"))
                .build()
                .unwrap();
            let mut signed = HeaderMap::new();
            signer.sign_with(&mut signed, "", ts, body).unwrap();
            assert_eq!(signed, h);
        }
    }
}
