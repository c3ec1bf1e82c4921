//! Values shared by the settings of several layers.

use serde::Deserialize;

/// A setting that takes a value or the word `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Switch<T> {
    /// Switched off.
    Off(Off),
    /// The value.
    On(T),
}

/// The word `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Off {
    /// `"off"`.
    #[serde(rename = "off")]
    Off,
}
