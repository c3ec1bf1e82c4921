//! The `Idempotency-Key` header value: a Structured Field string (`"abc"`,
//! RFC 8941, where a space is a character like any other) or a bare token
//! (`abc`), 1 to 255 printable ASCII characters once unquoted.

use std::borrow::Cow;

use http::HeaderValue;

/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// Why a header value is not a valid key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InvalidKey {
    /// Nothing between the quotes, or an empty header.
    Empty,
    /// More than [`MAX_KEY_LEN`] characters.
    TooLong,
    /// A character outside printable ASCII (or a space outside quotes), a
    /// stray quote or a bad escape.
    Malformed,
}

const fn visible(b: u8) -> bool {
    matches!(b, 0x21..=0x7e)
}

/// What an sf-string holds: visible ASCII and the space.
const fn printable(b: u8) -> bool {
    matches!(b, 0x20..=0x7e)
}

/// The key an `Idempotency-Key` header value carries, as the layer reads it:
/// unquoted and unescaped, so `"k1"` and `k1` are the same key; `None` for a
/// value the layer refuses (400).
///
/// A handler that derives anything from the key (an order id, the key it
/// passes on to a payments provider) reads it with this, so that it agrees
/// with the layer on which requests share a key.
///
/// ```
/// use http::HeaderValue;
/// use palisade_idempotency::parse_key;
///
/// let quoted = HeaderValue::from_static("\"order-42\"");
/// let bare = HeaderValue::from_static("order-42");
/// assert_eq!(parse_key(&quoted), parse_key(&bare));
/// assert_eq!(parse_key(&bare).as_deref(), Some(&b"order-42"[..]));
/// assert_eq!(parse_key(&HeaderValue::from_static("\"unterminated")), None);
/// ```
pub fn parse_key(value: &HeaderValue) -> Option<Cow<'_, [u8]>> {
    parse(value).ok()
}

/// Parses a key header value into the key's bytes (unescaped when quoted).
pub(crate) fn parse(value: &HeaderValue) -> Result<Cow<'_, [u8]>, InvalidKey> {
    let raw = value.as_bytes().trim_ascii();
    let key: Cow<'_, [u8]> = match raw {
        [b'"', inner @ .., b'"'] => unquote(inner)?,
        [b'"', ..] => return Err(InvalidKey::Malformed),
        bare => {
            if !bare.iter().all(|&b| visible(b) && b != b'"' && b != b'\\') {
                return Err(InvalidKey::Malformed);
            }
            Cow::Borrowed(bare)
        }
    };
    match key.len() {
        0 => Err(InvalidKey::Empty),
        n if n > MAX_KEY_LEN => Err(InvalidKey::TooLong),
        _ => Ok(key),
    }
}

/// The inside of an sf-string: printable ASCII, a space included; `\"` and
/// `\\` are escapes, any other backslash or quote is malformed.
fn unquote(inner: &[u8]) -> Result<Cow<'_, [u8]>, InvalidKey> {
    if !inner.contains(&b'\\') {
        return if inner.iter().all(|&b| printable(b) && b != b'"') {
            Ok(Cow::Borrowed(inner))
        } else {
            Err(InvalidKey::Malformed)
        };
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(&e @ (b'"' | b'\\')) => out.push(e),
                _ => return Err(InvalidKey::Malformed),
            },
            b'"' => return Err(InvalidKey::Malformed),
            b if printable(b) => out.push(b),
            _ => return Err(InvalidKey::Malformed),
        }
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_str(s: &str) -> Result<Vec<u8>, InvalidKey> {
        parse(&HeaderValue::from_str(s).unwrap()).map(Cow::into_owned)
    }

    #[test]
    fn accepts_quoted_and_bare_keys() {
        assert_eq!(parse_str("\"8e03978e-40d5-43e8\"").unwrap(), b"8e03978e-40d5-43e8");
        assert_eq!(parse_str("8e03978e-40d5-43e8").unwrap(), b"8e03978e-40d5-43e8");
        assert_eq!(parse_str("  abc  ").unwrap(), b"abc");
        assert_eq!(parse_str(r#""a\"b\\c""#).unwrap(), br#"a"b\c"#);
        assert_eq!(parse_str("a+b/c=").unwrap(), b"a+b/c=");
        // RFC 8941: an sf-string may hold spaces.
        assert_eq!(parse_str("\"order 42\"").unwrap(), b"order 42");
        assert_eq!(parse_str(r#""a b\"c""#).unwrap(), br#"a b"c"#);
    }

    #[test]
    fn rejects_malformed_keys() {
        assert_eq!(parse_str(""), Err(InvalidKey::Empty));
        assert_eq!(parse_str("\"\""), Err(InvalidKey::Empty));
        assert_eq!(parse_str("\"abc"), Err(InvalidKey::Malformed));
        assert_eq!(parse_str("a\"bc"), Err(InvalidKey::Malformed));
        assert_eq!(parse_str("a b"), Err(InvalidKey::Malformed));
        assert_eq!(parse_str(r#""a\nb""#), Err(InvalidKey::Malformed));
        assert_eq!(parse_str(r#""a"b""#), Err(InvalidKey::Malformed));
        assert_eq!(parse_str("a\\b"), Err(InvalidKey::Malformed));
        let non_ascii = HeaderValue::from_bytes("clé".as_bytes()).unwrap();
        assert_eq!(parse(&non_ascii), Err(InvalidKey::Malformed));
    }

    #[test]
    fn length_is_counted_after_unquoting() {
        let max = "k".repeat(MAX_KEY_LEN);
        assert_eq!(parse_str(&max).unwrap().len(), MAX_KEY_LEN);
        assert_eq!(parse_str(&format!("\"{max}\"")).unwrap().len(), MAX_KEY_LEN);
        assert_eq!(parse_str(&format!("{max}k")), Err(InvalidKey::TooLong));
        assert_eq!(parse_str(&format!("\"{max}k\"")), Err(InvalidKey::TooLong));
    }

    proptest! {
        // 256 cases: every generated key is short and covers the whole printable range.
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn quoting_any_valid_key_gives_it_back(key in "[ -~]{1,255}") {
            let escaped = key.replace('\\', "\\\\").replace('"', "\\\"");
            prop_assert_eq!(parse_str(&format!("\"{escaped}\"")).unwrap(), key.as_bytes());
            // Bare, a key is a token: no quote, backslash or space.
            if !key.contains(['"', '\\', ' ']) {
                prop_assert_eq!(parse_str(&key).unwrap(), key.as_bytes());
            }
        }
    }
}
