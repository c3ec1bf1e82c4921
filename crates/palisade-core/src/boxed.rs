//! [`BoxError`] and [`AsError`], reached at the crate root.

use std::error::Error;

use crate::rejection::{BulkheadFull, BulkheadTimeout, CircuitOpen};

/// The error type of the protocol-agnostic layers, as in tower.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Gives a `&dyn Error` view of an error value, so classifiers can walk its
/// [`source()`](Error::source) chain.
///
/// `BoxError` does not implement [`Error`] itself, so a blanket implementation
/// for every `E: Error` could not also cover it; this trait is implemented for
/// the boxed error types tower stacks use and for the common concrete ones.
/// Other error types can be mapped into [`BoxError`] (`map_err(Into::into)`)
/// or implement this trait in one line.
pub trait AsError {
    /// The error as a trait object.
    fn as_error(&self) -> &(dyn Error + 'static);
}

impl AsError for Box<dyn Error + Send + Sync> {
    fn as_error(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsError for Box<dyn Error + Send> {
    fn as_error(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsError for Box<dyn Error> {
    fn as_error(&self) -> &(dyn Error + 'static) {
        &**self
    }
}

impl AsError for std::io::Error {
    fn as_error(&self) -> &(dyn Error + 'static) {
        self
    }
}

impl AsError for std::convert::Infallible {
    fn as_error(&self) -> &(dyn Error + 'static) {
        match *self {}
    }
}

macro_rules! as_error_for {
    ($($ty:ty),* $(,)?) => {
        $(impl AsError for $ty {
            fn as_error(&self) -> &(dyn Error + 'static) {
                self
            }
        })*
    };
}

as_error_for!(
    CircuitOpen,
    BulkheadFull,
    BulkheadTimeout,
    tower::timeout::error::Elapsed,
    tokio::time::error::Elapsed,
);
