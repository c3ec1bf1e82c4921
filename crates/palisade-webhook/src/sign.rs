//! Signing outbound webhooks, usable without the tower layer.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signer as _;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::clock::{Clock, ClockDebug, SystemClock};
use crate::compiled::{Compiled, Message, headers};
use crate::error::ConfigError;
use crate::key::{HmacKey, SecretInput, decode_signing_key};
use crate::scheme::{Encoding, Scheme, SchemeKind};

/// A source of fresh message ids.
pub trait IdGenerator: Send + Sync + 'static {
    /// A new, unique message id (visible ASCII).
    fn next_id(&self) -> String;
}

/// The default id generator: UUID v7 (time-ordered, with 74 random bits).
#[derive(Debug, Clone, Copy, Default)]
pub struct UuidV7;

impl IdGenerator for UuidV7 {
    fn next_id(&self) -> String {
        uuid::Uuid::now_v7().to_string()
    }
}

impl<F> IdGenerator for F
where
    F: Fn() -> String + Send + Sync + 'static,
{
    fn next_id(&self) -> String {
        self()
    }
}

/// What a signature covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The message id sent in a header, where the scheme has one.
    pub id: Option<String>,
    /// The signed timestamp, where the scheme signs one.
    pub timestamp: Option<u64>,
}

/// Signs outbound webhooks so that the receiver's verifier (palisade's or
/// the scheme's own library) accepts them.
///
/// ```
/// use palisade_webhook::{FixedClock, Scheme, Signer, Verifier};
///
/// let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// let signer = Signer::builder(Scheme::StandardWebhooks).secret(secret).build()?;
/// let mut headers = http::HeaderMap::new();
/// let signed = signer.sign(&mut headers, b"{\"event\":\"ping\"}")?;
/// assert!(headers["webhook-signature"].to_str()?.starts_with("v1,"));
///
/// let verifier = Verifier::builder(Scheme::StandardWebhooks).secret(secret).build()?;
/// let verified = verifier.verify(&headers, b"{\"event\":\"ping\"}")?;
/// assert_eq!(verified.id(), signed.id.as_deref());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Signer {
    inner: Arc<SignerInner>,
}

struct SignerInner {
    scheme: Compiled,
    hmac_keys: Vec<HmacKey>,
    signing_keys: Vec<ed25519_dalek::SigningKey>,
    clock: Box<dyn Clock>,
    ids: Box<dyn IdGenerator>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("scheme", &self.inner.scheme)
            .field("secrets", &self.inner.hmac_keys.len())
            .field("signing_keys", &self.inner.signing_keys.len())
            .field("clock", &ClockDebug)
            .finish_non_exhaustive()
    }
}

/// Configures a [`Signer`].
pub struct SignerBuilder {
    scheme: Scheme,
    secrets: Vec<SecretInput>,
    signing_keys: Vec<String>,
    clock: Box<dyn Clock>,
    ids: Box<dyn IdGenerator>,
}

impl fmt::Debug for SignerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerBuilder")
            .field("scheme", &self.scheme)
            .field("secrets", &self.secrets.len())
            .field("signing_keys", &self.signing_keys.len())
            .finish_non_exhaustive()
    }
}

/// A signing failure: an id that a verifier refuses (empty, not visible
/// ASCII, or with blanks at an end, which HTTP strips on the way), or, for a
/// generic scheme, an id holding the byte that marks its end in the
/// template (see [`GenericScheme::template`](crate::GenericScheme::template)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the message id is not visible ASCII with blanks only inside, or holds the byte that marks its end in the template"
)]
pub struct InvalidId;

impl SignerBuilder {
    /// Adds an HMAC secret, written as for [`VerifierBuilder::secret`](crate::VerifierBuilder::secret).
    /// Standard Webhooks, Stripe and generic schemes sign with every secret
    /// (one signature each, for receivers mid-rotation); GitHub, Slack and
    /// Shopify carry one signature, made with the first secret.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secrets.push(SecretInput::Text(secret.into()));
        self
    }

    /// Adds a raw HMAC key, used as given.
    pub fn secret_bytes(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.secrets.push(SecretInput::Bytes(key.into()));
        self
    }

    /// Adds an ed25519 signing key (`whsk_` + base64 of the 32-byte seed or
    /// the 64-byte seed and public key) for Standard Webhooks `v1a` signatures.
    pub fn signing_key(mut self, key: impl Into<String>) -> Self {
        self.signing_keys.push(key.into());
        self
    }

    /// The clock that stamps messages (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Where fresh message ids come from (default [`UuidV7`]).
    pub fn id_generator(mut self, ids: impl IdGenerator) -> Self {
        self.ids = Box::new(ids);
        self
    }

    /// Checks and decodes the configuration.
    ///
    /// # Errors
    ///
    /// No keys, too many, an empty or undecodable secret or key, signing keys
    /// outside Standard Webhooks, a bad generic scheme.
    pub fn build(self) -> Result<Signer, ConfigError> {
        let (scheme, hmac_keys) = Compiled::with_secrets(&self.scheme, &self.secrets, self.signing_keys.len())?;
        let signing_keys = self
            .signing_keys
            .iter()
            .map(|k| decode_signing_key(k))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Signer {
            inner: Arc::new(SignerInner {
                scheme,
                hmac_keys,
                signing_keys,
                clock: self.clock,
                ids: self.ids,
            }),
        })
    }
}

impl Signer {
    /// Starts configuring a signer for `scheme`.
    pub fn builder(scheme: Scheme) -> SignerBuilder {
        SignerBuilder {
            scheme,
            secrets: Vec::new(),
            signing_keys: Vec::new(),
            clock: Box::new(SystemClock),
            ids: Box::new(UuidV7),
        }
    }

    /// The scheme signed.
    pub fn scheme(&self) -> SchemeKind {
        self.inner.scheme.kind()
    }

    /// Signs `body` now and writes the scheme's headers into `headers`.
    ///
    /// A message id already in `headers` (`webhook-id`, `X-GitHub-Delivery`,
    /// ...) is kept and signed, so a redelivery carries its original id and
    /// the receiver can drop the duplicate; otherwise a fresh id is made.
    ///
    /// # Errors
    ///
    /// [`InvalidId`] when the id in `headers`, or the one the id generator
    /// makes, is not one a verifier takes: visible ASCII, blanks only inside.
    pub fn sign(&self, headers: &mut HeaderMap, body: &[u8]) -> Result<Signed, InvalidId> {
        let id = match self.id_header() {
            Some(name) => Some(match headers.get(&name) {
                Some(existing) if !existing.is_empty() => checked_id(existing.clone())?,
                _ => self.fresh_id()?,
            }),
            None => None,
        };
        let timestamp = self.inner.clock.now_unix();
        self.write(headers, id, timestamp, body)
    }

    /// Signs `body` with the given id and timestamp (Unix seconds), writing the
    /// scheme's headers into `headers`. The id is ignored by schemes without
    /// an id header (Stripe, Slack, generic schemes without one).
    ///
    /// # Errors
    ///
    /// [`InvalidId`] when `id` is not one a verifier takes: visible ASCII,
    /// blanks only inside, not empty.
    pub fn sign_with(
        &self,
        headers: &mut HeaderMap,
        id: &str,
        timestamp: u64,
        body: &[u8],
    ) -> Result<Signed, InvalidId> {
        let id = match self.id_header() {
            Some(_) => Some(checked_id(HeaderValue::try_from(id).map_err(|_| InvalidId)?)?),
            None => None,
        };
        self.write(headers, id, timestamp, body)
    }

    /// The header that carries the message id in this signer's scheme (`webhook-id`,
    /// `X-GitHub-Delivery`, `X-Shopify-Webhook-Id`, or a generic scheme's configured one);
    /// `None` for schemes without one (Stripe, Slack, generic schemes without an id header).
    ///
    /// A sender that redelivers a message puts its own id in this header before
    /// [`sign`](Signer::sign), which keeps it, so every attempt carries the same id.
    ///
    /// ```
    /// use palisade_webhook::{GenericScheme, Scheme, Signer};
    ///
    /// let scheme = GenericScheme::new("X-Acme-Signature")
    ///     .id_header("X-Acme-Delivery")
    ///     .template("{id}.{body}");
    /// let signer = Signer::builder(Scheme::Generic(scheme)).secret("s3cret").build()?;
    /// let name = signer.id_header().expect("the scheme has an id header");
    /// assert_eq!(name, "x-acme-delivery");
    /// let attempt = || {
    ///     let mut headers = http::HeaderMap::new();
    ///     headers.insert(name.clone(), http::HeaderValue::from_static("evt_1"));
    ///     signer.sign(&mut headers, b"{}").map(|signed| (signed.id, headers))
    /// };
    /// let (first, second) = (attempt()?, attempt()?);
    /// assert_eq!(first.0.as_deref(), Some("evt_1"));
    /// assert_eq!(second.0, first.0);
    /// assert_eq!(second.1["x-acme-delivery"], "evt_1");
    ///
    /// let stripe = Signer::builder(Scheme::Stripe).secret("whsec_abc").build()?;
    /// assert_eq!(stripe.id_header(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn id_header(&self) -> Option<HeaderName> {
        match &self.inner.scheme {
            Compiled::StandardWebhooks => Some(headers::WEBHOOK_ID.clone()),
            Compiled::GitHub => Some(headers::GITHUB_DELIVERY.clone()),
            Compiled::Shopify => Some(headers::SHOPIFY_WEBHOOK_ID.clone()),
            Compiled::Stripe | Compiled::Slack => None,
            Compiled::Generic(g) => g.id_header.clone(),
        }
    }

    /// A new message id from the id generator, checked as [`sign`](Self::sign) checks it.
    pub(crate) fn fresh_id(&self) -> Result<HeaderValue, InvalidId> {
        checked_id(HeaderValue::try_from(self.inner.ids.next_id()).map_err(|_| InvalidId)?)
    }

    fn write(
        &self,
        headers: &mut HeaderMap,
        id: Option<HeaderValue>,
        timestamp: u64,
        body: &[u8],
    ) -> Result<Signed, InvalidId> {
        // Formatted once: the text signed is the header value sent.
        let ts = HeaderValue::from(timestamp);
        let inner = &*self.inner;
        if let (Compiled::Generic(g), Some(id)) = (&inner.scheme, &id)
            && id.as_bytes().iter().any(|b| g.id_separators.contains(b))
        {
            return Err(InvalidId);
        }
        let message = Message {
            id: id.as_ref().map_or(&[][..], HeaderValue::as_bytes),
            timestamp: ts.as_bytes(),
            body,
        };
        let mac = |key: &HmacKey| -> [u8; 32] { inner.scheme.mac(key, message).into_bytes().into() };
        let first_mac = || inner.hmac_keys.first().map(mac);
        let value = match &inner.scheme {
            Compiled::StandardWebhooks => {
                let mut value = String::new();
                for key in &inner.hmac_keys {
                    push_item(&mut value, " ", "v1,", &STANDARD.encode(mac(key)));
                }
                if !inner.signing_keys.is_empty() {
                    let signed = inner.scheme.signed_message(message);
                    for key in &inner.signing_keys {
                        push_item(&mut value, " ", "v1a,", &STANDARD.encode(key.sign(&signed).to_bytes()));
                    }
                }
                headers.insert(headers::WEBHOOK_TIMESTAMP.clone(), ts);
                Some((headers::WEBHOOK_SIGNATURE.clone(), value))
            }
            Compiled::Stripe => {
                let mut value = format!("t={timestamp}");
                for key in &inner.hmac_keys {
                    push_item(&mut value, ",", "v1=", &hex::encode(mac(key)));
                }
                Some((headers::STRIPE_SIGNATURE.clone(), value))
            }
            Compiled::GitHub => first_mac().map(|tag| {
                (
                    headers::GITHUB_SIGNATURE.clone(),
                    format!("sha256={}", hex::encode(tag)),
                )
            }),
            Compiled::Slack => {
                let signature =
                    first_mac().map(|tag| (headers::SLACK_SIGNATURE.clone(), format!("v0={}", hex::encode(tag))));
                headers.insert(headers::SLACK_TIMESTAMP.clone(), ts);
                signature
            }
            Compiled::Shopify => first_mac().map(|tag| (headers::SHOPIFY_HMAC.clone(), STANDARD.encode(tag))),
            Compiled::Generic(g) => {
                let mut value = String::new();
                for key in &inner.hmac_keys {
                    let tag = mac(key);
                    let encoded = match g.encoding {
                        Encoding::Hex => hex::encode(tag),
                        Encoding::Base64 => STANDARD.encode(tag),
                    };
                    push_item(&mut value, " ", &g.prefix, &encoded);
                }
                if let Some(name) = &g.timestamp_header {
                    headers.insert(name.clone(), ts);
                }
                Some((g.signature_header.clone(), value))
            }
        };
        if let Some((name, value)) = value {
            // Hex, base64 and the checked prefix are all visible ASCII.
            let value = HeaderValue::try_from(value).map_err(|_| InvalidId)?;
            headers.insert(name, value);
        }
        let signs_timestamp = inner.scheme.signs_timestamp();
        let id_text = id.as_ref().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if let (Some(name), Some(value)) = (self.id_header(), id) {
            headers.insert(name, value);
        }
        Ok(Signed {
            id: id_text,
            timestamp: signs_timestamp.then_some(timestamp),
        })
    }
}

fn push_item(out: &mut String, separator: &str, prefix: &str, encoded: &str) {
    if !out.is_empty() {
        out.push_str(separator);
    }
    out.push_str(prefix);
    out.push_str(encoded);
}

/// `id` if a verifier takes it as a message id.
fn checked_id(id: HeaderValue) -> Result<HeaderValue, InvalidId> {
    if crate::verify::valid_id(&id) {
        Ok(id)
    } else {
        Err(InvalidId)
    }
}
