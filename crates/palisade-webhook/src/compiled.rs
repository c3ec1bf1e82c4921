//! A scheme with its configuration checked and its header names parsed:
//! what the verifier and the signer both work from.

use hmac::Mac;
use hmac::digest::CtOutput;

use crate::error::ConfigError;
use crate::key::{HmacKey, HmacSha256, MAX_KEYS, SecretInput};
use crate::scheme::{CompiledGeneric, Part, Scheme, SchemeKind};

/// The schemes' header names, parsed once: a lookup by `HeaderName` skips
/// the parsing a lookup by `&str` does on every request.
pub(crate) mod headers {
    use http::HeaderName;

    pub(crate) static WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
    pub(crate) static WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
    pub(crate) static WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
    pub(crate) static SVIX_ID: HeaderName = HeaderName::from_static("svix-id");
    pub(crate) static SVIX_TIMESTAMP: HeaderName = HeaderName::from_static("svix-timestamp");
    pub(crate) static SVIX_SIGNATURE: HeaderName = HeaderName::from_static("svix-signature");
    pub(crate) static STRIPE_SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");
    pub(crate) static GITHUB_SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature-256");
    pub(crate) static GITHUB_DELIVERY: HeaderName = HeaderName::from_static("x-github-delivery");
    pub(crate) static SLACK_SIGNATURE: HeaderName = HeaderName::from_static("x-slack-signature");
    pub(crate) static SLACK_TIMESTAMP: HeaderName = HeaderName::from_static("x-slack-request-timestamp");
    pub(crate) static SHOPIFY_HMAC: HeaderName = HeaderName::from_static("x-shopify-hmac-sha256");
    pub(crate) static SHOPIFY_WEBHOOK_ID: HeaderName = HeaderName::from_static("x-shopify-webhook-id");
}

/// The pieces of a message that signatures cover, as sent: the id and the
/// timestamp as their header text (empty where the scheme has none), and the body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    pub(crate) id: &'a [u8],
    pub(crate) timestamp: &'a [u8],
    pub(crate) body: &'a [u8],
}

/// A scheme with its configuration checked.
#[derive(Debug, Clone)]
pub(crate) enum Compiled {
    StandardWebhooks,
    Stripe,
    GitHub,
    Slack,
    Shopify,
    Generic(CompiledGeneric),
}

impl Compiled {
    pub(crate) fn new(scheme: &Scheme) -> Result<Self, ConfigError> {
        Ok(match scheme {
            Scheme::StandardWebhooks => Self::StandardWebhooks,
            Scheme::Stripe => Self::Stripe,
            Scheme::GitHub => Self::GitHub,
            Scheme::Slack => Self::Slack,
            Scheme::Shopify => Self::Shopify,
            Scheme::Generic(generic) => Self::Generic(generic.compile()?),
        })
    }

    /// Checks a scheme, how many keys it is given (`ed25519_keys` public or
    /// signing keys beside the secrets), and decodes the secrets; shared by
    /// the verifier and the signer.
    pub(crate) fn with_secrets(
        scheme: &Scheme,
        secrets: &[SecretInput],
        ed25519_keys: usize,
    ) -> Result<(Self, Vec<HmacKey>), ConfigError> {
        let compiled = Self::new(scheme)?;
        let kind = compiled.kind();
        if secrets.is_empty() && ed25519_keys == 0 {
            return Err(ConfigError::NoKeys);
        }
        if secrets.len() + ed25519_keys > MAX_KEYS {
            return Err(ConfigError::TooManyKeys { max: MAX_KEYS });
        }
        if ed25519_keys > 0 && kind != SchemeKind::StandardWebhooks {
            return Err(ConfigError::KeysNotSupported);
        }
        let keys = secrets
            .iter()
            .map(|s| HmacKey::decode(kind, s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((compiled, keys))
    }

    /// The HMAC of `message` under `key`, as this scheme signs it. `CtOutput`
    /// compares in constant time.
    pub(crate) fn mac(&self, key: &HmacKey, message: Message<'_>) -> CtOutput<HmacSha256> {
        let mut mac = key.0.clone();
        self.signed_content(message, |part| mac.update(part));
        mac.finalize()
    }

    /// Hands the content a signature covers to `feed`, part by part, in
    /// order: each scheme's signed content, defined once for signing and
    /// verifying. A MAC takes the parts one after another, so the body is
    /// never copied to join them.
    pub(crate) fn signed_content<'a>(&'a self, message: Message<'a>, mut feed: impl FnMut(&'a [u8])) {
        let Message { id, timestamp, body } = message;
        match self {
            Self::StandardWebhooks => [id, b".", timestamp, b".", body].into_iter().for_each(feed),
            Self::Stripe => [timestamp, b".", body].into_iter().for_each(feed),
            Self::Slack => [b"v0:", timestamp, b":", body].into_iter().for_each(feed),
            Self::GitHub | Self::Shopify => feed(body),
            Self::Generic(g) => {
                for part in &g.template.parts {
                    feed(match part {
                        Part::Literal(bytes) => bytes,
                        Part::Id => id,
                        Part::Timestamp => timestamp,
                        Part::Body => body,
                    });
                }
            }
        }
    }

    /// The signed content joined into one buffer, for ed25519, which signs one slice.
    pub(crate) fn signed_message(&self, message: Message<'_>) -> Vec<u8> {
        let mut joined = Vec::new();
        self.signed_content(message, |part| joined.extend_from_slice(part));
        joined
    }

    pub(crate) fn signs_timestamp(&self) -> bool {
        match self {
            Self::StandardWebhooks | Self::Stripe | Self::Slack => true,
            Self::GitHub | Self::Shopify => false,
            Self::Generic(g) => g.timestamp_header.is_some(),
        }
    }

    pub(crate) fn kind(&self) -> SchemeKind {
        match self {
            Self::StandardWebhooks => SchemeKind::StandardWebhooks,
            Self::Stripe => SchemeKind::Stripe,
            Self::GitHub => SchemeKind::GitHub,
            Self::Slack => SchemeKind::Slack,
            Self::Shopify => SchemeKind::Shopify,
            Self::Generic(_) => SchemeKind::Generic,
        }
    }
}
