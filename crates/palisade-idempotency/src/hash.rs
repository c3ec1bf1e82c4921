//! The two digests the layer computes per keyed request: the store key
//! (scope, method, path and the client's key) and the request fingerprint
//! (method, path, query and body).

use std::fmt;

use http::Method;
use sha2::{Digest, Sha256};

/// Where a request's response is stored: SHA-256 of the scope, method, path
/// and the client's key, so keys of different principals or routes never
/// meet, and the store never sees the principal or the raw key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreKey([u8; 32]);

/// SHA-256 of a request's method, path, query and body: a repeat with the
/// same key must carry the same fingerprint, or it is answered 422.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

macro_rules! digest_type {
    ($ty:ident) => {
        impl $ty {
            /// The digest from its 32 bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The digest's 32 bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// The digest as 64 lowercase hexadecimal characters.
            pub fn to_hex(&self) -> String {
                self.to_string()
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut out = [0_u8; 64];
                for (i, b) in self.0.iter().enumerate() {
                    out[2 * i] = HEX[usize::from(b >> 4)];
                    out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
                }
                // Only ASCII hex digits were written.
                f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({self})", stringify!($ty))
            }
        }
    };
}

digest_type!(StoreKey);
digest_type!(Fingerprint);

/// Feeds `field` with its length first, so no two field lists hash alike.
fn field(hasher: &mut Sha256, field: &[u8]) {
    hasher.update((field.len() as u64).to_be_bytes());
    hasher.update(field);
}

pub(crate) fn store_key(scope: &[u8], method: &Method, path: &str, key: &[u8]) -> StoreKey {
    let mut hasher = Sha256::new();
    hasher.update(b"palisade-idempotency-key/1");
    for part in [scope, method.as_str().as_bytes(), path.as_bytes(), key] {
        field(&mut hasher, part);
    }
    StoreKey(hasher.finalize().into())
}

pub(crate) fn fingerprint(method: &Method, path: &str, query: Option<&str>, body: &[u8]) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update(b"palisade-idempotency-fingerprint/1");
    field(&mut hasher, method.as_str().as_bytes());
    field(&mut hasher, path.as_bytes());
    match query {
        // "no query" and "empty query" are different requests.
        None => hasher.update([0]),
        Some(q) => {
            hasher.update([1]);
            field(&mut hasher, q.as_bytes());
        }
    }
    field(&mut hasher, body);
    Fingerprint(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cannot_run_into_each_other() {
        let a = store_key(b"ab", &Method::POST, "/c", b"k");
        let b = store_key(b"a", &Method::POST, "b/c", b"k");
        assert_ne!(a, b);
        assert_ne!(
            store_key(b"", &Method::POST, "/", b"k"),
            store_key(b"", &Method::PATCH, "/", b"k")
        );
        assert_ne!(
            fingerprint(&Method::POST, "/o", None, b""),
            fingerprint(&Method::POST, "/o", Some(""), b"")
        );
        assert_ne!(
            fingerprint(&Method::POST, "/o", Some("a=1"), b"x"),
            fingerprint(&Method::POST, "/o", Some("a=1x"), b"")
        );
        assert_eq!(
            fingerprint(&Method::POST, "/o", None, b"{}"),
            fingerprint(&Method::POST, "/o", None, b"{}")
        );
    }

    #[test]
    fn hex_is_lowercase_and_64_long() {
        let key = StoreKey::from_bytes([0xab; 32]);
        assert_eq!(key.to_hex(), "ab".repeat(32));
        assert_eq!(format!("{key:?}"), format!("StoreKey({})", "ab".repeat(32)));
        assert_eq!(Fingerprint::from_bytes([1; 32]).as_bytes(), &[1; 32]);
    }
}
