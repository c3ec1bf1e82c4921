//! Values shared by the settings of several layers: the `"off"` switch,
//! and header names and methods read from text.

#[cfg(any(feature = "circuit-breaker", feature = "retry", feature = "deadline"))]
use serde::Deserialize;

/// A setting that takes a value or the word `"off"`.
#[cfg(any(feature = "circuit-breaker", feature = "retry", feature = "deadline"))]
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Switch<T> {
    /// Switched off.
    Off(Off),
    /// The value.
    On(T),
}

/// The word `"off"`.
#[cfg(any(feature = "circuit-breaker", feature = "retry", feature = "deadline"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Off {
    /// `"off"`.
    #[serde(rename = "off")]
    Off,
}

/// `name` as a header name, or the error naming `key`.
#[cfg(any(feature = "retry", feature = "idempotency", feature = "deadline"))]
pub(super) fn header(key: &'static str, name: &str) -> Result<http::HeaderName, super::KeyError> {
    http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| (Some(key), format!("{name:?} is not a header name")))
}

/// `names` as HTTP methods, or the error naming `key` and the first bad one.
#[cfg(any(feature = "retry", feature = "idempotency"))]
pub(super) fn methods(key: &'static str, names: &[String]) -> Result<Vec<http::Method>, super::KeyError> {
    names
        .iter()
        .map(|m| {
            // Methods are case-sensitive: `post` would parse, as an extension
            // method no request carries, and match nothing.
            if m.bytes().any(|b| b.is_ascii_lowercase()) {
                return Err((
                    Some(key),
                    format!("{m:?}: methods are case-sensitive; write {:?}", m.to_ascii_uppercase()),
                ));
            }
            http::Method::from_bytes(m.as_bytes()).map_err(|_| (Some(key), format!("{m:?} is not an HTTP method")))
        })
        .collect()
}
