//! Fuzzing in the normal suite: header parsers, template parsing and the
//! verify path on arbitrary bytes never panic and only ever answer 2xx
//! (never, in practice, for random input) or 4xx.
//!
//! 512 cases per property, fixed so runs are comparable; raise
//! `PROPTEST_CASES` for a longer hunt.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use http_body_util::Full;
use palisade_webhook::{Encoding, FixedClock, GenericScheme, Scheme, Signer, Verifier, VerifyLayer};
use proptest::prelude::*;
use tower::{Layer, ServiceExt, service_fn};

const NOW: u64 = 1_700_000_000;

fn schemes() -> Vec<Scheme> {
    vec![
        Scheme::StandardWebhooks,
        Scheme::Stripe,
        Scheme::GitHub,
        Scheme::Slack,
        Scheme::Shopify,
        Scheme::Generic(
            GenericScheme::new("x-sig")
                .timestamp_header("x-ts")
                .id_header("x-id")
                .template("{id}.{timestamp}.{body}"),
        ),
        Scheme::Generic(GenericScheme::new("x-sig").encoding(Encoding::Base64).prefix("v1=")),
    ]
}

const HEADER_NAMES: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "svix-id",
    "svix-timestamp",
    "svix-signature",
    "stripe-signature",
    "x-hub-signature-256",
    "x-github-delivery",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "x-shopify-hmac-sha256",
    "x-shopify-webhook-id",
    "x-sig",
    "x-ts",
    "x-id",
];

/// Header values that look like signatures often enough to reach the decoders.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..120),
        "(v1a?|v0|sha256|t|v1)[,=][A-Za-z0-9+/=,]{0,100}( (v1|v1a),[A-Za-z0-9+/=]{0,90})*".prop_map(String::into_bytes),
        "[0-9]{0,25}".prop_map(String::into_bytes),
        "t=[0-9]{1,12},v1=[0-9a-f]{60,68}".prop_map(String::into_bytes),
    ]
}

fn headers_from(pairs: &[(usize, Vec<u8>)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (index, value) in pairs {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(HEADER_NAMES[index % HEADER_NAMES.len()]), value);
        }
    }
    headers
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn verify_never_panics_on_arbitrary_headers_and_bodies(
        pairs in proptest::collection::vec((any::<usize>(), header_value()), 0..8),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        scheme_index in 0usize..7,
    ) {
        let headers = headers_from(&pairs);
        let scheme = schemes()[scheme_index].clone();
        let verifier = Verifier::builder(scheme)
            .secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .clock(FixedClock(NOW))
            .build()
            .unwrap();
        if let Err(rejection) = verifier.verify(&headers, &body) {
            prop_assert!(rejection.status().is_client_error());
        }
    }

    #[test]
    fn the_layer_answers_4xx_for_arbitrary_requests(
        pairs in proptest::collection::vec((any::<usize>(), header_value()), 0..8),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        scheme_index in 0usize..7,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let scheme = schemes()[scheme_index].clone();
        let verifier = Verifier::builder(scheme).secret("c2VjcmV0").clock(FixedClock(NOW)).build().unwrap();
        let layer = VerifyLayer::builder(verifier).max_body(200).build().unwrap();
        let handler = service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::<Bytes>::default()))
        });
        let mut req = Request::post("/").body(Full::new(Bytes::from(body))).unwrap();
        *req.headers_mut() = headers_from(&pairs);
        let res = rt.block_on(layer.layer(handler).oneshot(req)).unwrap();
        prop_assert!(res.status().is_client_error(), "{}", res.status());
    }

    #[test]
    fn a_signed_message_verifies_and_any_flipped_bit_does_not(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        secret in "[ -~]{1,40}",
        flip in any::<usize>(),
        scheme_index in 0usize..7,
    ) {
        let scheme = schemes()[scheme_index].clone();
        let signer = Signer::builder(scheme.clone()).secret_bytes(secret.as_bytes()).clock(FixedClock(NOW)).build().unwrap();
        let verifier =
            Verifier::builder(scheme).secret_bytes(secret.as_bytes()).clock(FixedClock(NOW)).build().unwrap();
        let mut headers = HeaderMap::new();
        signer.sign(&mut headers, &body).unwrap();
        prop_assert!(verifier.verify(&headers, &body).is_ok());
        if !body.is_empty() {
            let mut tampered = body.clone();
            tampered[flip % body.len()] ^= 1 << (flip % 8);
            prop_assert_eq!(verifier.verify(&headers, &tampered).unwrap_err().status(), 401);
        }
    }

    #[test]
    fn generic_scheme_templates_never_panic(template in "[{}a-z.:]{0,30}", prefix in "[ -~]{0,8}") {
        // Only headers the template signs may be configured.
        let mut scheme = GenericScheme::new("x-sig").template(template.clone()).prefix(prefix);
        if template.contains("{timestamp}") {
            scheme = scheme.timestamp_header("x-ts");
        }
        if template.contains("{id}") {
            scheme = scheme.id_header("x-id");
        }
        if let Ok(signer) = Signer::builder(Scheme::Generic(scheme.clone())).secret("k").clock(FixedClock(NOW)).build() {
            let verifier = Verifier::builder(Scheme::Generic(scheme)).secret("k").clock(FixedClock(NOW)).build().unwrap();
            let mut headers = HeaderMap::new();
            signer.sign(&mut headers, b"body").unwrap();
            prop_assert!(verifier.verify(&headers, b"body").is_ok());
        }
    }

    #[test]
    fn no_other_reading_of_a_generic_signed_content_verifies(
        pieces in proptest::collection::vec(template_piece(), 1..5),
        body_at in any::<prop::sample::Index>(),
        id in "[a-z0-9.:|-]{1,6}",
        body in "[a-z0-9.:|-]{0,6}",
    ) {
        // Any template, any id the signer signs: the bytes it signs, split
        // into another id and another body, must not pass as a message of
        // its own (a captured delivery replayed under a new id).
        let mut pieces = pieces;
        pieces.insert(body_at.index(pieces.len() + 1), Piece::Body);
        let template: String = pieces.iter().map(Piece::text).collect();
        let mut scheme = GenericScheme::new("x-sig").template(template);
        if pieces.contains(&Piece::Id) {
            scheme = scheme.id_header("x-id");
        }
        if pieces.contains(&Piece::Timestamp) {
            scheme = scheme.timestamp_header("x-ts");
        }
        let Ok(signer) = Signer::builder(Scheme::Generic(scheme.clone())).secret("k").build() else {
            return Ok(());
        };
        let verifier = Verifier::builder(Scheme::Generic(scheme)).secret("k").clock(FixedClock(NOW)).build().unwrap();
        let mut headers = HeaderMap::new();
        if signer.sign_with(&mut headers, &id, NOW, body.as_bytes()).is_err() {
            return Ok(());
        }
        prop_assert!(verifier.verify(&headers, body.as_bytes()).is_ok());
        let content: Vec<u8> = pieces.iter().flat_map(|p| p.signed(id.as_bytes(), body.as_bytes())).collect();
        let mut others = Vec::new();
        readings(&pieces, &content, None, None, &mut others);
        let signed_id = pieces.contains(&Piece::Id).then_some(id.as_bytes());
        for (other_id, other_body) in others {
            if other_id.as_deref() == signed_id {
                continue;
            }
            let mut forged = headers.clone();
            if let Some(other_id) = &other_id {
                forged.insert("x-id", HeaderValue::from_bytes(other_id).unwrap());
            }
            prop_assert!(
                verifier.verify(&forged, &other_body).is_err(),
                "id {:?} body {:?} verified", String::from_utf8_lossy(other_id.as_deref().unwrap_or_default()), String::from_utf8_lossy(&other_body)
            );
        }
    }
}

/// A piece of a generic template, for building templates at random.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(String),
    Id,
    Timestamp,
    Body,
}

impl Piece {
    fn text(&self) -> String {
        match self {
            Piece::Literal(text) => text.clone(),
            Piece::Id => "{id}".to_owned(),
            Piece::Timestamp => "{timestamp}".to_owned(),
            Piece::Body => "{body}".to_owned(),
        }
    }

    fn signed(&self, id: &[u8], body: &[u8]) -> Vec<u8> {
        match self {
            Piece::Literal(text) => text.as_bytes().to_vec(),
            Piece::Id => id.to_vec(),
            Piece::Timestamp => NOW.to_string().into_bytes(),
            Piece::Body => body.to_vec(),
        }
    }
}

fn template_piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        3 => "[a-z0-9.:|-]{1,3}".prop_map(Piece::Literal),
        2 => Just(Piece::Id),
        1 => Just(Piece::Timestamp),
    ]
}

/// Every way `content` reads as `pieces` with the signed timestamp: the id
/// (non-empty, the same at each `{id}`) and the body of each reading.
fn readings(
    pieces: &[Piece],
    content: &[u8],
    id: Option<&[u8]>,
    body: Option<&[u8]>,
    out: &mut Vec<(Option<Vec<u8>>, Vec<u8>)>,
) {
    let Some((piece, rest)) = pieces.split_first() else {
        if content.is_empty() {
            out.push((id.map(<[u8]>::to_vec), body.unwrap_or_default().to_vec()));
        }
        return;
    };
    let fixed = match piece {
        Piece::Literal(text) => Some(text.as_bytes()),
        Piece::Timestamp => Some(&b"1700000000"[..]),
        Piece::Id => id,
        Piece::Body => None,
    };
    if let Some(fixed) = fixed {
        if let Some(after) = content.strip_prefix(fixed) {
            readings(rest, after, id, body, out);
        }
        return;
    }
    let shortest = usize::from(*piece == Piece::Id);
    for len in shortest..=content.len() {
        let (taken, after) = content.split_at(len);
        match piece {
            Piece::Id => readings(rest, after, Some(taken), body, out),
            _ => readings(rest, after, id, Some(taken), out),
        }
    }
}
