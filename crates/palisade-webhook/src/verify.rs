//! Signature verification over raw bytes, usable without the tower layer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hmac::digest::CtOutput;
use http::header::GetAll;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::clock::{Clock, ClockDebug, SystemClock};
use crate::compiled::{Compiled, Message, headers};
use crate::error::{ConfigError, Reason, Rejection};
use crate::key::{HmacKey, SecretInput, decode_base64_array, decode_hex_32, decode_public_key};
use crate::scheme::{Encoding, Scheme, SchemeKind};

/// The default timestamp tolerance: five minutes either way, as Stripe,
/// Slack and Standard Webhooks recommend.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The most signatures of one header that are checked; more are ignored.
pub const MAX_SIGNATURES: usize = 8;

const MAX_ED25519_SIGNATURES: usize = 2;

/// What verification established; the layer puts it in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    scheme: SchemeKind,
    id: Option<MessageId>,
    timestamp: Option<u64>,
    key_index: usize,
}

/// The longest message id kept inline in [`Verified`].
const INLINE_ID: usize = 48;

/// A message id, visible ASCII: copied inline when short, as ids are (a
/// Standard Webhooks `msg_…` or a UUID), which costs less than sharing the
/// header's bytes, whose reference count is an atomic operation on clone and
/// on drop; a longer id shares them.
#[derive(Clone)]
enum MessageId {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Shared(HeaderValue),
}

impl MessageId {
    fn of(value: &HeaderValue) -> Self {
        let text = value.as_bytes();
        match u8::try_from(text.len()) {
            Ok(len) if text.len() <= INLINE_ID => {
                let mut bytes = [0; INLINE_ID];
                bytes[..text.len()].copy_from_slice(text);
                Self::Inline { len, bytes }
            }
            _ => Self::Shared(value.clone()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Shared(value) => value.as_bytes(),
        }
    }
}

impl PartialEq for MessageId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for MessageId {}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(self.as_bytes()), f)
    }
}

impl Verified {
    /// The scheme that verified the message.
    pub fn scheme(&self) -> SchemeKind {
        self.scheme
    }

    /// The message id, where the scheme has one in a header (`webhook-id`,
    /// `X-GitHub-Delivery`, `X-Shopify-Webhook-Id`, a generic id header).
    /// Stripe's event id is in the body (see [`stripe_event_id`]); the layer
    /// fills it in when replay protection is on.
    ///
    /// GitHub's and Shopify's id headers are not covered by their
    /// signatures: anyone relaying the message can change them. Use them for
    /// logs, not to decide whether a message is new (the layer's replay
    /// protection keys those schemes on the signature instead).
    pub fn id(&self) -> Option<&str> {
        self.id.as_ref().and_then(|id| std::str::from_utf8(id.as_bytes()).ok())
    }

    /// The signed Unix timestamp, where the scheme signs one.
    pub fn timestamp(&self) -> Option<u64> {
        self.timestamp
    }

    /// Which configured key verified the message: secrets count from 0 in the
    /// order they were added, then public keys after them. Shows when an old
    /// secret stops being used and can be retired.
    pub fn key_index(&self) -> usize {
        self.key_index
    }

    pub(crate) fn set_id(&mut self, id: &str) {
        self.id = HeaderValue::from_str(id)
            .ok()
            .filter(|id| id.to_str().is_ok())
            .map(|id| MessageId::of(&id));
    }
}

/// Verifies webhook signatures of one scheme against one or more secrets or keys.
///
/// Cheap to clone. [`verify`](Self::verify) works on any headers and body, so
/// it serves frameworks other than tower too.
///
/// ```
/// use palisade_webhook::{FixedClock, Scheme, Verifier};
///
/// let verifier = Verifier::builder(Scheme::GitHub)
///     .secret("It's a Secret to Everybody")
///     .build()?;
/// let mut headers = http::HeaderMap::new();
/// headers.insert(
///     "x-hub-signature-256",
///     "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".parse()?,
/// );
/// let verified = verifier.verify(&headers, b"Hello, World!")?;
/// assert_eq!(verified.key_index(), 0);
/// assert!(verifier.verify(&headers, b"Hello, World?").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<VerifierInner>,
}

struct VerifierInner {
    scheme: Compiled,
    hmac_keys: Vec<HmacKey>,
    public_keys: Vec<ed25519_dalek::VerifyingKey>,
    tolerance: u64,
    clock: Box<dyn Clock>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.inner.scheme)
            .field("secrets", &self.inner.hmac_keys.len())
            .field("public_keys", &self.inner.public_keys.len())
            .field("tolerance_secs", &self.inner.tolerance)
            .field("clock", &ClockDebug)
            .finish()
    }
}

/// Configures a [`Verifier`].
pub struct VerifierBuilder {
    scheme: Scheme,
    secrets: Vec<SecretInput>,
    public_keys: Vec<String>,
    tolerance: Duration,
    clock: Box<dyn Clock>,
}

impl fmt::Debug for VerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierBuilder")
            .field("scheme", &self.scheme)
            .field("secrets", &self.secrets.len())
            .field("public_keys", &self.public_keys.len())
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

impl VerifierBuilder {
    /// Adds a secret, as the sender shows it (`whsec_...` for Standard
    /// Webhooks and Stripe, the plain secret for the others). Add the old and
    /// the new secret while rotating: either verifying is enough.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secrets.push(SecretInput::Text(secret.into()));
        self
    }

    /// Adds a raw HMAC key, used as given.
    pub fn secret_bytes(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.secrets.push(SecretInput::Bytes(key.into()));
        self
    }

    /// Adds an ed25519 public key (`whpk_...`) for Standard Webhooks `v1a` signatures.
    pub fn public_key(mut self, key: impl Into<String>) -> Self {
        self.public_keys.push(key.into());
        self
    }

    /// How far the signed timestamp may be from now, either way (default 300 s).
    /// Whole seconds; a fraction is dropped.
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The wall clock timestamps are checked against (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Checks and decodes the configuration.
    ///
    /// # Errors
    ///
    /// No keys, too many, an empty or undecodable secret or key, ed25519 keys
    /// outside Standard Webhooks, a bad generic scheme, a zero tolerance.
    pub fn build(self) -> Result<Verifier, ConfigError> {
        let (scheme, hmac_keys) = Compiled::with_secrets(&self.scheme, &self.secrets, self.public_keys.len())?;
        let public_keys = self
            .public_keys
            .iter()
            .map(|k| decode_public_key(k))
            .collect::<Result<Vec<_>, _>>()?;
        let tolerance = self.tolerance.as_secs();
        if tolerance == 0 {
            return Err(ConfigError::ZeroTolerance);
        }
        Ok(Verifier {
            inner: Arc::new(VerifierInner {
                scheme,
                hmac_keys,
                public_keys,
                tolerance,
                clock: self.clock,
            }),
        })
    }
}

/// The parts of the headers verification needs, borrowed from them.
#[derive(Debug)]
pub(crate) struct HeaderFacts<'a> {
    id: Option<&'a HeaderValue>,
    timestamp: Option<(&'a [u8], u64)>,
    signatures: GetAll<'a, HeaderValue>,
    signature_name: &'a HeaderName,
}

/// The signatures found in a header, decoded into fixed arrays.
struct Candidates {
    hmac: [[u8; 32]; MAX_SIGNATURES],
    hmac_len: usize,
    ed25519: [[u8; 64]; MAX_ED25519_SIGNATURES],
    ed25519_len: usize,
    malformed: bool,
}

impl Candidates {
    fn new() -> Self {
        Self {
            hmac: [[0; 32]; MAX_SIGNATURES],
            hmac_len: 0,
            ed25519: [[0; 64]; MAX_ED25519_SIGNATURES],
            ed25519_len: 0,
            malformed: false,
        }
    }

    fn push_hmac(&mut self, tag: Option<[u8; 32]>) {
        match tag {
            Some(tag) if self.hmac_len < MAX_SIGNATURES => {
                self.hmac[self.hmac_len] = tag;
                self.hmac_len += 1;
            }
            Some(_) => {}
            None => self.malformed = true,
        }
    }

    fn push_ed25519(&mut self, sig: Option<[u8; 64]>) {
        match sig {
            Some(sig) if self.ed25519_len < MAX_ED25519_SIGNATURES => {
                self.ed25519[self.ed25519_len] = sig;
                self.ed25519_len += 1;
            }
            Some(_) => {}
            None => self.malformed = true,
        }
    }

    fn is_empty(&self) -> bool {
        self.hmac_len == 0 && self.ed25519_len == 0
    }
}

impl Verifier {
    /// Starts configuring a verifier for `scheme`.
    pub fn builder(scheme: Scheme) -> VerifierBuilder {
        VerifierBuilder {
            scheme,
            secrets: Vec::new(),
            public_keys: Vec::new(),
            tolerance: DEFAULT_TOLERANCE,
            clock: Box::new(SystemClock),
        }
    }

    /// The scheme verified.
    pub fn scheme(&self) -> SchemeKind {
        self.inner.scheme.kind()
    }

    /// The timestamp tolerance.
    pub fn tolerance(&self) -> Duration {
        Duration::from_secs(self.inner.tolerance)
    }

    /// Whether the scheme signs a timestamp.
    pub fn signs_timestamp(&self) -> bool {
        self.inner.scheme.signs_timestamp()
    }

    /// The current time by the configured clock, in Unix seconds.
    pub(crate) fn now(&self) -> u64 {
        self.inner.clock.now_unix()
    }

    /// Verifies `body` against the signatures in `headers`, at the clock's current time.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] saying why: a missing or malformed header, a timestamp
    /// outside the tolerance, or no signature matching any key.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Verified, Rejection> {
        self.verify_at(headers, body, self.now())
    }

    /// Verifies as [`verify`](Self::verify), with `now` (Unix seconds) as the current time.
    ///
    /// # Errors
    ///
    /// As [`verify`](Self::verify).
    pub fn verify_at(&self, headers: &HeaderMap, body: &[u8], now: u64) -> Result<Verified, Rejection> {
        self.verify_with_mac(headers, body, now).map(|(verified, _)| verified)
    }

    /// Verifies as [`verify_at`](Self::verify_at), and also hands back the
    /// HMAC that matched (`None` when an ed25519 signature verified).
    pub(crate) fn verify_with_mac(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<(Verified, Option<[u8; 32]>), Rejection> {
        let facts = self.check_headers(headers, now)?;
        let mut candidates = Candidates::new();
        self.collect_signatures(&facts, &mut candidates)?;
        let message = Message {
            id: facts.id.map_or(&[][..], HeaderValue::as_bytes),
            timestamp: facts.timestamp.map_or(&[][..], |(text, _)| text),
            body,
        };
        let (key_index, mac) = self.matching_key(message, &candidates).ok_or_else(|| {
            if candidates.is_empty() && candidates.malformed {
                Rejection::header(Reason::MalformedHeader, facts.signature_name)
            } else {
                Rejection::new(Reason::BadSignature)
            }
        })?;
        let verified = Verified {
            scheme: self.scheme(),
            id: facts.id.map(MessageId::of),
            timestamp: facts.timestamp.map(|(_, ts)| ts),
            key_index,
        };
        Ok((verified, mac))
    }

    /// The key replay protection records a verified message under: what the
    /// signature covers. The message id where it is signed (Standard
    /// Webhooks, a generic scheme's id header, Stripe's event id in the
    /// body, set on `verified` by the caller); for GitHub and Shopify, whose
    /// id header is not signed, the HMAC that verified, so changing or
    /// removing the id makes no new message. `None` when there is nothing to
    /// key on (Slack, a generic scheme without an id, a Stripe body without one).
    /// `scope` (the layer's name, when one was given) comes first, so layers
    /// sharing a store keep apart messages of the same id from different senders.
    pub(crate) fn replay_key(
        &self,
        verified: &Verified,
        mac: Option<&[u8; 32]>,
        scope: Option<&str>,
    ) -> Option<String> {
        let scheme = self.scheme().as_str();
        let (scope, sep) = scope.map_or(("", ""), |scope| (scope, ":"));
        match &self.inner.scheme {
            Compiled::GitHub | Compiled::Shopify => {
                mac.map(|mac| format!("{scope}{sep}{scheme}:hmac:{}", hex::encode(mac)))
            }
            Compiled::Slack => None,
            Compiled::StandardWebhooks | Compiled::Stripe | Compiled::Generic(_) => {
                verified.id().map(|id| format!("{scope}{sep}{scheme}:{id}"))
            }
        }
    }

    /// Checks what can be checked before the body arrives: the headers are
    /// there and the timestamp is an integer within the tolerance.
    pub(crate) fn check_headers<'a>(&'a self, headers: &'a HeaderMap, now: u64) -> Result<HeaderFacts<'a>, Rejection> {
        use self::headers::*;
        let signatures = |name: &'a HeaderName| {
            let all = headers.get_all(name);
            if all.iter().next().is_none() {
                Err(Rejection::header(Reason::MissingHeader, name))
            } else {
                Ok(all)
            }
        };
        let required = |name: &'a HeaderName| {
            headers
                .get(name)
                .ok_or_else(|| Rejection::header(Reason::MissingHeader, name))
        };
        // An id must be visible ASCII to be compared, stored and shown.
        let id_text = |value: &'a HeaderValue, name: &HeaderName| {
            if !valid_id(value) {
                Err(Rejection::header(Reason::MalformedHeader, name))
            } else {
                Ok(value)
            }
        };
        let optional_id = |name: &HeaderName| {
            headers
                .get(name)
                .filter(|v| !v.is_empty() && HeaderText::of(v).is_some())
        };
        let timestamp = |value: &'a HeaderValue, name: &HeaderName| {
            let text = value.as_bytes();
            parse_timestamp(text)
                .map(|ts| (text, ts))
                .ok_or_else(|| Rejection::header(Reason::MalformedHeader, name))
        };
        let facts = match &self.inner.scheme {
            Compiled::StandardWebhooks => {
                let webhook = headers.get_all(&WEBHOOK_SIGNATURE);
                let (id_name, ts_name, sig_name, signatures) = if webhook.iter().next().is_some() {
                    (&WEBHOOK_ID, &WEBHOOK_TIMESTAMP, &WEBHOOK_SIGNATURE, webhook)
                } else {
                    // Svix's own header names, when the standard ones are absent.
                    let svix = headers.get_all(&SVIX_SIGNATURE);
                    if svix.iter().next().is_none() {
                        return Err(Rejection::header(Reason::MissingHeader, &WEBHOOK_SIGNATURE));
                    }
                    (&SVIX_ID, &SVIX_TIMESTAMP, &SVIX_SIGNATURE, svix)
                };
                let id = id_text(required(id_name)?, id_name)?;
                let timestamp = timestamp(required(ts_name)?, ts_name)?;
                HeaderFacts {
                    id: Some(id),
                    timestamp: Some(timestamp),
                    signatures,
                    signature_name: sig_name,
                }
            }
            Compiled::Stripe => {
                let signatures = signatures(&STRIPE_SIGNATURE)?;
                let malformed = || Rejection::header(Reason::MalformedHeader, &STRIPE_SIGNATURE);
                let mut found = None;
                for value in signatures.iter() {
                    for item in value.as_bytes().split(|&b| b == b',') {
                        if let Some(ts) = item.trim_ascii().strip_prefix(b"t=") {
                            let parsed = parse_timestamp(ts).ok_or_else(malformed)?;
                            if found.replace((ts, parsed)).is_some() {
                                return Err(malformed());
                            }
                        }
                    }
                }
                let timestamp = found.ok_or_else(malformed)?;
                HeaderFacts {
                    id: None,
                    timestamp: Some(timestamp),
                    signatures,
                    signature_name: &STRIPE_SIGNATURE,
                }
            }
            Compiled::GitHub => HeaderFacts {
                signatures: signatures(&GITHUB_SIGNATURE)?,
                id: optional_id(&GITHUB_DELIVERY),
                timestamp: None,
                signature_name: &GITHUB_SIGNATURE,
            },
            Compiled::Slack => {
                let signatures = signatures(&SLACK_SIGNATURE)?;
                let timestamp = timestamp(required(&SLACK_TIMESTAMP)?, &SLACK_TIMESTAMP)?;
                HeaderFacts {
                    id: None,
                    timestamp: Some(timestamp),
                    signatures,
                    signature_name: &SLACK_SIGNATURE,
                }
            }
            Compiled::Shopify => HeaderFacts {
                signatures: signatures(&SHOPIFY_HMAC)?,
                id: optional_id(&SHOPIFY_WEBHOOK_ID),
                timestamp: None,
                signature_name: &SHOPIFY_HMAC,
            },
            Compiled::Generic(g) => {
                let signatures = signatures(&g.signature_header)?;
                let id = match &g.id_header {
                    // An id holding the byte that marks its end in the template
                    // would let the signed content split another way (see
                    // `id_separators`).
                    Some(name) => Some(id_text(required(name)?, name).and_then(|id| {
                        if id.as_bytes().iter().any(|b| g.id_separators.contains(b)) {
                            Err(Rejection::header(Reason::MalformedHeader, name))
                        } else {
                            Ok(id)
                        }
                    })?),
                    None => None,
                };
                let timestamp = match &g.timestamp_header {
                    Some(name) => Some(timestamp(required(name)?, name)?),
                    None => None,
                };
                HeaderFacts {
                    id,
                    timestamp,
                    signatures,
                    signature_name: &g.signature_header,
                }
            }
        };
        if let Some((_, ts)) = facts.timestamp
            && ts.abs_diff(now) > self.inner.tolerance
        {
            return Err(Rejection::new(Reason::StaleTimestamp));
        }
        Ok(facts)
    }

    fn collect_signatures(&self, facts: &HeaderFacts<'_>, out: &mut Candidates) -> Result<(), Rejection> {
        let malformed = || Rejection::header(Reason::MalformedHeader, facts.signature_name);
        let mut tokens = 0usize;
        for value in facts.signatures.iter() {
            let text = HeaderText::of(value).ok_or_else(malformed)?;
            match &self.inner.scheme {
                Compiled::StandardWebhooks => {
                    text.for_each_token(is_blank, |token| {
                        // An intermediary joins a repeated header with ", "
                        // (RFC 9110), whose recipients ignore empty list
                        // elements: a token may hold several
                        // `version,signature` pairs and empty elements
                        // around them; a signature has no comma.
                        let mut parts = token.split(|&b| b == b',').filter(|part| !part.is_empty());
                        while let Some(version) = parts.next() {
                            tokens += 1;
                            match (version, parts.next()) {
                                (b"v1", Some(sig)) => out.push_hmac(decode_base64_array(sig)),
                                (b"v1a", Some(sig)) => out.push_ed25519(decode_base64_array(sig)),
                                (_, Some(_)) => {}
                                _ => {
                                    out.malformed = true;
                                    return;
                                }
                            }
                        }
                    });
                }
                Compiled::Stripe => {
                    for item in text.bytes.split(|&b| b == b',') {
                        let item = item.trim_ascii();
                        tokens += 1;
                        match split_once(item, b'=') {
                            Some((b"v1", sig)) => out.push_hmac(decode_hex_32(sig)),
                            Some((key, _)) if !key.is_empty() => {}
                            _ => out.malformed = true,
                        }
                    }
                }
                Compiled::GitHub | Compiled::Slack => {
                    let version: &[u8] = if matches!(self.inner.scheme, Compiled::GitHub) {
                        b"sha256"
                    } else {
                        b"v0"
                    };
                    text.for_each_token(is_list_separator, |token| {
                        tokens += 1;
                        match split_once(token, b'=') {
                            Some((v, sig)) if v == version => out.push_hmac(decode_hex_32(sig)),
                            Some((v, _)) if !v.is_empty() => {}
                            _ => out.malformed = true,
                        }
                    });
                }
                Compiled::Shopify => {
                    text.for_each_token(is_list_separator, |token| {
                        tokens += 1;
                        out.push_hmac(decode_base64_array(token));
                    });
                }
                Compiled::Generic(g) => {
                    text.for_each_token(is_list_separator, |token| {
                        tokens += 1;
                        if let Some(encoded) = token.strip_prefix(g.prefix.as_bytes()) {
                            out.push_hmac(match g.encoding {
                                Encoding::Hex => decode_hex_32(encoded),
                                Encoding::Base64 => decode_base64_array(encoded),
                            });
                        }
                    });
                }
            }
        }
        if tokens == 0 {
            return Err(malformed());
        }
        Ok(())
    }

    /// The index of the key that verifies, and the HMAC that matched.
    fn matching_key(&self, message: Message<'_>, candidates: &Candidates) -> Option<(usize, Option<[u8; 32]>)> {
        let scheme = &self.inner.scheme;
        let hmac_candidates = &candidates.hmac[..candidates.hmac_len];
        if !hmac_candidates.is_empty() {
            for (index, key) in self.inner.hmac_keys.iter().enumerate() {
                // Each comparison takes the same time whatever the bytes; which
                // candidate matched is no secret, so the loop may stop early.
                let tag = scheme.mac(key, message);
                if hmac_candidates
                    .iter()
                    .any(|candidate| tag == CtOutput::new((*candidate).into()))
                {
                    return Some((index, Some(tag.into_bytes().into())));
                }
            }
        }
        let ed_candidates = &candidates.ed25519[..candidates.ed25519_len];
        if !ed_candidates.is_empty() && !self.inner.public_keys.is_empty() {
            let signed = scheme.signed_message(message);
            for (index, key) in self.inner.public_keys.iter().enumerate() {
                for sig in ed_candidates {
                    let signature = ed25519_dalek::Signature::from_bytes(sig);
                    if key.verify_strict(&signed, &signature).is_ok() {
                        return Some((self.inner.hmac_keys.len() + index, None));
                    }
                }
            }
        }
        None
    }
}

/// A header value that is visible ASCII (what `HeaderValue::to_str`
/// accepts), and which separators it holds.
struct HeaderText<'a> {
    bytes: &'a [u8],
    /// A space or tab.
    blank: bool,
    comma: bool,
}

impl<'a> HeaderText<'a> {
    /// Checks `value` in one pass with no branch per byte, which the compiler
    /// vectorizes: every request's id and signatures go through here.
    fn of(value: &'a HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let (mut invisible, mut blank, mut comma) = (0u8, 0u8, 0u8);
        for &b in bytes {
            let is_blank = u8::from(is_blank(b));
            invisible |= !(is_blank | u8::from(b.is_ascii_graphic())) & 1;
            blank |= is_blank;
            comma |= u8::from(b == b',');
        }
        (invisible == 0).then_some(Self {
            bytes,
            blank: blank != 0,
            comma: comma != 0,
        })
    }

    /// Calls `each` with every non-empty item between separators; a value
    /// holding none (one signature, as most are) is one item, found without
    /// another scan.
    fn for_each_token(&self, separator: fn(u8) -> bool, mut each: impl FnMut(&'a [u8])) {
        let separated = (self.blank && separator(b' ')) || (self.comma && separator(b','));
        if separated {
            self.bytes
                .split(|&b| separator(b))
                .filter(|token| !token.is_empty())
                .for_each(each);
        } else if !self.bytes.is_empty() {
            each(self.bytes);
        }
    }
}

/// What separates Standard Webhooks signatures.
fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Whether `value` can be a message id: visible ASCII, with blanks only
/// inside (HTTP strips them at the ends on the way), and not empty. The
/// verifier refuses any other; the signer makes no other.
pub(crate) fn valid_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => !is_blank(first) && !is_blank(last) && HeaderText::of(value).is_some(),
        _ => false,
    }
}

/// What separates signatures in a list: spaces or commas.
fn is_list_separator(b: u8) -> bool {
    b == b',' || is_blank(b)
}

/// The bytes before and after the first `separator`.
fn split_once(bytes: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == separator)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// An integer Unix timestamp: ASCII digits only, no sign, no fraction, no
/// leading zero, fits in u64. One way to write each time: a template with no
/// text between `{body}` and `{timestamp}` could otherwise read a body's
/// trailing `0` as the timestamp's leading zero, signing the same bytes.
pub(crate) fn parse_timestamp(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || (text.len() > 1 && text[0] == b'0') {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// The `id` of a Stripe event: the top-level `id` field of the JSON body.
///
/// Stripe puts its event id in the body, not in a header; the layer reads it
/// this way for replay protection.
pub fn stripe_event_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Event {
        id: String,
    }
    serde_json::from_slice::<Event>(body)
        .ok()
        .map(|event| event.id)
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::MAX_KEYS;

    #[test]
    fn timestamps_are_plain_integers() {
        assert_eq!(parse_timestamp(b"1614265330"), Some(1_614_265_330));
        assert_eq!(parse_timestamp(b"0"), Some(0));
        assert_eq!(parse_timestamp(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"99999999999999999999999",
            b"-1",
            b"+1",
            b"1.5",
            b" 1",
            b"1e9",
            b"01614265330",
            b"00",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn verified_ids_come_back_as_sent_short_or_long() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let signer = crate::Signer::builder(Scheme::StandardWebhooks)
            .secret(secret)
            .build()
            .unwrap();
        let verifier = Verifier::builder(Scheme::StandardWebhooks)
            .secret(secret)
            .build()
            .unwrap();
        let long = format!("msg_{}", "x".repeat(200));
        for id in ["m", "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", &"y".repeat(INLINE_ID), &long] {
            let mut headers = HeaderMap::new();
            signer.sign_with(&mut headers, id, 1_700_000_000, b"{}").unwrap();
            let verified = verifier.verify_at(&headers, b"{}", 1_700_000_000).unwrap();
            assert_eq!(verified.id(), Some(id));
            assert_eq!(verified.clone(), verified);
            assert!(format!("{verified:?}").contains(&format!("{id:?}")));
        }
        let mut a = Verified {
            scheme: SchemeKind::Stripe,
            id: None,
            timestamp: None,
            key_index: 0,
        };
        let mut b = a.clone();
        a.set_id("evt_1");
        b.id = Some(MessageId::Shared(HeaderValue::from_static("evt_1")));
        // The same id is the same, however it is held.
        assert_eq!(a, b);
        a.set_id("évt");
        assert_eq!(a.id(), None, "an id that is not visible ASCII is not kept");
    }

    #[test]
    fn stripe_event_ids_come_from_the_body() {
        assert_eq!(
            stripe_event_id(br#"{"id":"evt_1","object":"event","data":{}}"#).as_deref(),
            Some("evt_1")
        );
        assert_eq!(stripe_event_id(br#"{"object":"event"}"#), None);
        assert_eq!(stripe_event_id(b"\xff\xfe"), None);
        assert_eq!(stripe_event_id(br#"{"id":""}"#), None);
    }

    #[test]
    fn builder_rejects_impossible_configurations() {
        let build = |b: VerifierBuilder| b.build().unwrap_err();
        assert_eq!(build(Verifier::builder(Scheme::Stripe)), ConfigError::NoKeys);
        assert_eq!(
            build(Verifier::builder(Scheme::Stripe).secret("")),
            ConfigError::EmptySecret
        );
        assert_eq!(
            build(Verifier::builder(Scheme::Stripe).secret("s").tolerance(Duration::ZERO)),
            ConfigError::ZeroTolerance
        );
        assert_eq!(
            build(Verifier::builder(Scheme::Stripe).public_key("whpk_1SiA4o9hyqTCpIqC5V9HUakiiaeACeqfZTInDBbOir4=")),
            ConfigError::KeysNotSupported
        );
        let mut many = Verifier::builder(Scheme::GitHub);
        for i in 0..=MAX_KEYS {
            many = many.secret(format!("s{i}"));
        }
        assert_eq!(build(many), ConfigError::TooManyKeys { max: MAX_KEYS });
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let builder = Verifier::builder(Scheme::GitHub).secret("hunter2-secret");
        assert!(!format!("{builder:?}").contains("hunter2"));
        let verifier = builder.build().unwrap();
        let shown = format!("{verifier:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("secrets: 1"), "{shown}");
    }
}
