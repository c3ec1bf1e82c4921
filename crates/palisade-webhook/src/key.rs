//! Secrets and keys, decoded once at build time and never shown.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit};
use sha2::Sha256;

use crate::error::ConfigError;
use crate::scheme::SchemeKind;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// The most secrets or keys one verifier or signer holds: rotation needs two
/// or three, and the bound keeps per-request work small.
pub const MAX_KEYS: usize = 8;

/// A secret as configured: text (decoded per scheme) or raw key bytes.
#[derive(Clone)]
pub(crate) enum SecretInput {
    Text(String),
    Bytes(Vec<u8>),
}

impl fmt::Debug for SecretInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An HMAC-SHA256 key with its inner and outer pads already hashed: each
/// message clones this state instead of re-deriving it from the key.
#[derive(Clone)]
pub(crate) struct HmacKey(pub(crate) HmacSha256);

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

impl HmacKey {
    pub(crate) fn decode(scheme: SchemeKind, input: &SecretInput) -> Result<Self, ConfigError> {
        let bytes = match input {
            SecretInput::Bytes(bytes) => bytes.clone(),
            SecretInput::Text(text) => match scheme {
                // Standard Webhooks: the key is the base64 after `whsec_`.
                SchemeKind::StandardWebhooks => {
                    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
                    if encoded.is_empty() {
                        return Err(ConfigError::EmptySecret);
                    }
                    STANDARD.decode(encoded).map_err(|_| ConfigError::InvalidSecret)?
                }
                // Everyone else, Stripe included, keys with the secret's text as given.
                _ => text.as_bytes().to_vec(),
            },
        };
        if bytes.is_empty() {
            return Err(ConfigError::EmptySecret);
        }
        // HMAC takes keys of any length, so this cannot fail for a non-empty key.
        HmacSha256::new_from_slice(&bytes)
            .map(Self)
            .map_err(|_| ConfigError::InvalidSecret)
    }
}

/// Decodes `whpk_<base64 of 32 bytes>` (the prefix is optional).
pub(crate) fn decode_public_key(text: &str) -> Result<ed25519_dalek::VerifyingKey, ConfigError> {
    let encoded = text.strip_prefix("whpk_").unwrap_or(text);
    let bytes: [u8; 32] = decode_base64_array(encoded.as_bytes()).ok_or(ConfigError::InvalidPublicKey)?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| ConfigError::InvalidPublicKey)
}

/// Decodes `whsk_<base64>` of a 32-byte seed or a 64-byte seed + public key pair.
pub(crate) fn decode_signing_key(text: &str) -> Result<ed25519_dalek::SigningKey, ConfigError> {
    let encoded = text.strip_prefix("whsk_").unwrap_or(text);
    if let Some(pair) = decode_base64_array::<64>(encoded.as_bytes()) {
        return ed25519_dalek::SigningKey::from_keypair_bytes(&pair).map_err(|_| ConfigError::InvalidSigningKey);
    }
    let seed: [u8; 32] = decode_base64_array(encoded.as_bytes()).ok_or(ConfigError::InvalidSigningKey)?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// Decodes standard, padded base64 of exactly `N` bytes into an array, without allocating.
pub(crate) fn decode_base64_array<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    // Base64 of N bytes is 4 * ceil(N / 3) characters; anything longer cannot fit.
    if text.len() != N.div_ceil(3) * 4 {
        return None;
    }
    let mut buf = [0u8; 96];
    let written = STANDARD.decode_slice(text, &mut buf).ok()?;
    if written != N {
        return None;
    }
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[..N]);
    Some(out)
}

/// Decodes 64 hex digits (either case) into 32 bytes, without allocating.
pub(crate) fn decode_hex_32(text: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_arrays_need_the_exact_length() {
        let encoded = STANDARD.encode([7u8; 32]);
        assert_eq!(decode_base64_array::<32>(encoded.as_bytes()), Some([7u8; 32]));
        assert_eq!(decode_base64_array::<32>(&encoded.as_bytes()[..43]), None);
        assert_eq!(decode_base64_array::<32>(STANDARD.encode([7u8; 31]).as_bytes()), None);
        // Unpadded, or 33 bytes' worth, is not 32 bytes.
        assert_eq!(
            decode_base64_array::<32>(encoded.trim_end_matches('=').as_bytes()),
            None
        );
        assert_eq!(decode_base64_array::<32>(STANDARD.encode([7u8; 33]).as_bytes()), None);
        assert_eq!(
            decode_base64_array::<32>(b"!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!="),
            None
        );
        let sig = STANDARD.encode([9u8; 64]);
        assert_eq!(decode_base64_array::<64>(sig.as_bytes()), Some([9u8; 64]));
        // A second spelling of the same bytes (trailing bits set) is refused.
        assert!(encoded.ends_with("c="));
        assert_eq!(decode_base64_array::<32>(encoded.replace("c=", "d=").as_bytes()), None);
    }

    #[test]
    fn hex_needs_64_digits() {
        assert_eq!(decode_hex_32("aB".repeat(32).as_bytes()), Some([0xab; 32]));
        assert_eq!(decode_hex_32("ab".repeat(31).as_bytes()), None);
        assert_eq!(decode_hex_32("zz".repeat(32).as_bytes()), None);
    }

    #[test]
    fn secrets_decode_per_scheme_and_never_print() {
        let sw = SecretInput::Text("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
        let key = HmacKey::decode(SchemeKind::StandardWebhooks, &sw).unwrap();
        assert_eq!(format!("{key:?} {sw:?}"), "HmacKey(<redacted>) <redacted>");
        for (scheme, text, err) in [
            (SchemeKind::StandardWebhooks, "whsec_", ConfigError::EmptySecret),
            (SchemeKind::StandardWebhooks, "whsec_***", ConfigError::InvalidSecret),
            (SchemeKind::GitHub, "", ConfigError::EmptySecret),
        ] {
            assert_eq!(
                HmacKey::decode(scheme, &SecretInput::Text(text.into())).unwrap_err(),
                err,
                "{text}"
            );
        }
        assert_eq!(
            HmacKey::decode(SchemeKind::Slack, &SecretInput::Bytes(vec![])).unwrap_err(),
            ConfigError::EmptySecret
        );
        assert_eq!(
            decode_public_key("whpk_abc").unwrap_err(),
            ConfigError::InvalidPublicKey
        );
        assert_eq!(
            decode_signing_key("whsk_abc").unwrap_err(),
            ConfigError::InvalidSigningKey
        );
    }
}
