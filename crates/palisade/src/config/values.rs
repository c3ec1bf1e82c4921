//! Values shared by the settings of several layers: the `"off"` switch,
//! and header names and methods read from text.

#[cfg(any(feature = "circuit-breaker", feature = "retry", feature = "deadline"))]
use serde::Deserialize;

/// A setting that takes a value or the word `"off"`.
///
/// Read by hand rather than as an untagged enum, whose one error ("data did
/// not match any variant") would hide the value's own: a typo inside a table
/// is then named with its key, like anywhere else.
#[cfg(any(feature = "circuit-breaker", feature = "retry", feature = "deadline"))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Switch<T> {
    /// Switched off.
    Off(Off),
    /// The value.
    On(T),
}

#[cfg(any(feature = "circuit-breaker", feature = "retry", feature = "deadline"))]
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Switch<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SwitchVisitor(std::marker::PhantomData))
    }
}

/// Takes `"off"`, or hands the value as it came to `T`.
#[cfg(any(feature = "circuit-breaker", feature = "retry", feature = "deadline"))]
struct SwitchVisitor<T>(std::marker::PhantomData<T>);

#[cfg(any(feature = "circuit-breaker", feature = "retry", feature = "deadline"))]
impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for SwitchVisitor<T> {
    type Value = Switch<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"off\" or a value")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Switch<T>, E> {
        if v == "off" {
            return Ok(Switch::Off(Off::Off));
        }
        T::deserialize(serde::de::value::StrDeserializer::<E>::new(v))
            .map(Switch::On)
            .map_err(|e| E::custom(format_args!("{v:?} is not \"off\" ({e})")))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Switch<T>, E> {
        T::deserialize(serde::de::IntoDeserializer::into_deserializer(v)).map(Switch::On)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Switch<T>, E> {
        T::deserialize(serde::de::IntoDeserializer::into_deserializer(v)).map(Switch::On)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Switch<T>, E> {
        T::deserialize(serde::de::IntoDeserializer::into_deserializer(v)).map(Switch::On)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Switch<T>, E> {
        T::deserialize(serde::de::IntoDeserializer::into_deserializer(v)).map(Switch::On)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Switch<T>, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Switch::On)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Switch<T>, A::Error> {
        T::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(Switch::On)
    }
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
