//! The webhook verifier's settings.

use std::fmt;
use std::time::Duration;

use palisade_webhook::{
    Clock, ConfigError, Encoding, GenericScheme, Scheme, SystemClock, Verifier, VerifyBuilder, VerifyLayer,
};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{DEFAULT_INSTANCE, Environment, KeyError, LayerSettings};

/// A webhook verifier's settings; a missing key keeps the verifier's or the
/// layer's default (see `palisade_webhook`'s docs). An instance needs a
/// `scheme` and at least one key (`secrets`, `secrets_env` or
/// `public_keys`); the `default` block holds what instances share and no
/// keys. The replay store and the clock are set in code.
///
/// `Debug` shows how many secrets there are, never the secrets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// The signature scheme: `"standard_webhooks"`, `"stripe"`, `"github"`,
    /// `"slack"`, `"shopify"`, or `{ generic = { signature_header = ... } }`.
    pub scheme: Option<SchemeSettings>,
    /// Secrets, in the order the verifier tries them (several while
    /// rotating). Prefer `secrets_env`: a file is easily shared or committed,
    /// and a file that does not parse is reported with the line at fault.
    pub secrets: Secrets,
    /// Names of environment variables holding secrets, read when loading;
    /// their secrets come after those of `secrets`.
    pub secrets_env: Vec<String>,
    /// ed25519 public keys (`whpk_...`) for Standard Webhooks `v1a` signatures.
    pub public_keys: Vec<String>,
    /// How far a signed timestamp may be from now.
    #[serde(with = "humantime_serde")]
    pub tolerance: Option<Duration>,
    /// The largest body read, in bytes.
    pub max_body: Option<usize>,
    /// How long an accepted message is remembered (with a replay store).
    #[serde(with = "humantime_serde")]
    pub replay_window: Option<Duration>,
    /// How long a message stays marked in flight when nothing ends its handling.
    #[serde(with = "humantime_serde")]
    pub lock_expiry: Option<Duration>,
    /// How long one replay-store call may take.
    #[serde(with = "humantime_serde")]
    pub store_timeout: Option<Duration>,
    /// The secrets read from `secrets_env`.
    #[serde(skip)]
    env_secrets: Secrets,
}

/// A signature scheme as written in the settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SchemeSettings {
    /// Standard Webhooks (and Svix).
    StandardWebhooks,
    /// Stripe.
    Stripe,
    /// GitHub.
    #[serde(rename = "github")]
    GitHub,
    /// Slack.
    Slack,
    /// Shopify.
    Shopify,
    /// A generic HMAC-SHA256 scheme.
    Generic(GenericSchemeSettings),
}

/// A generic scheme: `palisade_webhook::GenericScheme`'s settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericSchemeSettings {
    /// The header carrying the signatures.
    pub signature_header: String,
    /// The header carrying the Unix timestamp; the template must sign it.
    pub timestamp_header: Option<String>,
    /// The header carrying the message id; the template must sign it.
    pub id_header: Option<String>,
    /// The signed content over `{id}`, `{timestamp}` and `{body}` (default `{body}`).
    pub template: Option<String>,
    /// `"hex"` (the default) or `"base64"`.
    pub encoding: Option<EncodingSettings>,
    /// The text before each signature, e.g. `"sha256="`.
    pub prefix: Option<String>,
}

/// How a generic scheme's signatures are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncodingSettings {
    /// Hex.
    Hex,
    /// Base64.
    Base64,
}

/// Secrets, shown as their count only. Read from a list of strings; any
/// other value is refused without repeating it.
#[derive(Clone, Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// How many secrets there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for Secrets {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read the value whole, so a wrong one is refused without serde's
        // error quoting it.
        let refused = || serde::de::Error::custom("must be a list of secrets, each a string");
        match Value::deserialize(deserializer)? {
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(secret) => Ok(secret),
                    _ => Err(refused()),
                })
                .collect::<Result<_, _>>()
                .map(Self),
            _ => Err(refused()),
        }
    }
}

impl SchemeSettings {
    fn scheme(&self) -> Scheme {
        match self {
            Self::StandardWebhooks => Scheme::StandardWebhooks,
            Self::Stripe => Scheme::Stripe,
            Self::GitHub => Scheme::GitHub,
            Self::Slack => Scheme::Slack,
            Self::Shopify => Scheme::Shopify,
            Self::Generic(generic) => {
                let mut scheme = GenericScheme::new(generic.signature_header.as_str());
                if let Some(header) = &generic.timestamp_header {
                    scheme = scheme.timestamp_header(header.as_str());
                }
                if let Some(header) = &generic.id_header {
                    scheme = scheme.id_header(header.as_str());
                }
                if let Some(template) = &generic.template {
                    scheme = scheme.template(template.as_str());
                }
                if let Some(encoding) = generic.encoding {
                    scheme = scheme.encoding(match encoding {
                        EncodingSettings::Hex => Encoding::Hex,
                        EncodingSettings::Base64 => Encoding::Base64,
                    });
                }
                if let Some(prefix) = &generic.prefix {
                    scheme = scheme.prefix(prefix.as_str());
                }
                Scheme::Generic(scheme)
            }
        }
    }
}

impl WebhookSettings {
    /// The verifier with the scheme, the keys and the tolerance, checking
    /// timestamps against `clock`.
    pub(super) fn build_verifier(&self, clock: impl Clock) -> Result<Verifier, KeyError> {
        let scheme = self
            .scheme
            .as_ref()
            .ok_or((Some("scheme"), "every instance needs a scheme".to_owned()))?;
        let mut builder = Verifier::builder(scheme.scheme()).clock(clock);
        for secret in self.secrets.0.iter().chain(&self.env_secrets.0) {
            builder = builder.secret(secret.as_str());
        }
        for key in &self.public_keys {
            builder = builder.public_key(key.as_str());
        }
        if let Some(tolerance) = self.tolerance {
            builder = builder.tolerance(tolerance);
        }
        builder.build().map_err(|e| (self.key_of(&e), e.to_string()))
    }

    /// The layer's builder around `verifier` with the layer's settings applied.
    pub(super) fn layer(&self, name: &str, verifier: Verifier) -> VerifyBuilder {
        let mut builder = VerifyLayer::builder(verifier).name(name);
        if let Some(bytes) = self.max_body {
            builder = builder.max_body(bytes);
        }
        if let Some(window) = self.replay_window {
            builder = builder.replay_window(window);
        }
        if let Some(expiry) = self.lock_expiry {
            builder = builder.lock_expiry(expiry);
        }
        if let Some(timeout) = self.store_timeout {
            builder = builder.store_timeout(timeout);
        }
        builder
    }

    /// The key a verifier error is about.
    fn key_of(&self, error: &ConfigError) -> Option<&'static str> {
        let generic = match &self.scheme {
            Some(SchemeSettings::Generic(generic)) => Some(generic),
            _ => None,
        };
        Some(match error {
            ConfigError::NoKeys | ConfigError::TooManyKeys { .. } => "secrets",
            // A secret that cannot be decoded: from the file or from the environment.
            ConfigError::EmptySecret | ConfigError::InvalidSecret => {
                if self.env_secrets.is_empty() || self.file_secrets_refused() {
                    "secrets"
                } else {
                    "secrets_env"
                }
            }
            ConfigError::InvalidPublicKey | ConfigError::KeysNotSupported => "public_keys",
            ConfigError::InvalidHeaderName(name) => match generic {
                Some(g) if g.timestamp_header.as_ref() == Some(name) => "scheme.generic.timestamp_header",
                Some(g) if g.id_header.as_ref() == Some(name) => "scheme.generic.id_header",
                _ => "scheme.generic.signature_header",
            },
            ConfigError::InvalidTemplate(_) | ConfigError::UnsignedHeader(_) => "scheme.generic.template",
            ConfigError::InvalidPrefix => "scheme.generic.prefix",
            ConfigError::ZeroTolerance => "tolerance",
            ConfigError::ZeroBodyLimit => "max_body",
            ConfigError::ZeroReplayWindow => "replay_window",
            ConfigError::ZeroLockExpiry => "lock_expiry",
            ConfigError::ZeroStoreTimeout => "store_timeout",
            _ => return None,
        })
    }

    /// Whether the file's own secrets are refused by the scheme.
    fn file_secrets_refused(&self) -> bool {
        let Some(scheme) = &self.scheme else { return false };
        self.secrets
            .0
            .iter()
            .fold(Verifier::builder(scheme.scheme()), |builder, secret| {
                builder.secret(secret.as_str())
            })
            .build()
            .is_err_and(|e| matches!(e, ConfigError::EmptySecret | ConfigError::InvalidSecret))
    }
}

impl LayerSettings for WebhookSettings {
    const SECTION: &'static str = "webhook";

    fn read_environment(&mut self, env: &Environment<'_>) -> Result<(), KeyError> {
        let not_set = |name: &String| {
            (
                Some("secrets_env"),
                format!("the environment variable {name} is not set"),
            )
        };
        self.env_secrets = self
            .secrets_env
            .iter()
            .map(|name| env(name).ok_or_else(|| not_set(name)))
            .collect::<Result<_, _>>()
            .map(Secrets)?;
        Ok(())
    }

    fn check(&self, name: &str) -> Result<(), KeyError> {
        let verifier = if name == DEFAULT_INSTANCE {
            // Keys belong to one sender: the default block holds what
            // instances share, checked here with a stand-in key.
            let keys = [
                ("secrets", !self.secrets.is_empty()),
                ("secrets_env", !self.secrets_env.is_empty()),
                ("public_keys", !self.public_keys.is_empty()),
            ];
            if let Some((key, _)) = keys.into_iter().find(|(_, set)| *set) {
                return Err((Some(key), "keys belong to an instance, not to the default block".into()));
            }
            let mut with_stand_in = self.clone();
            with_stand_in.scheme.get_or_insert(SchemeSettings::GitHub);
            // Base64, so Standard Webhooks decodes it too.
            with_stand_in.env_secrets = Secrets(vec!["c3RhbmQtaW4=".into()]);
            with_stand_in.build_verifier(SystemClock)?
        } else {
            self.build_verifier(SystemClock)?
        };
        self.layer(name, verifier)
            .build()
            .map(drop)
            .map_err(|e| (self.key_of(&e), e.to_string()))
    }
}
