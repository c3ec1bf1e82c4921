//! [`Failure`]: what a fallback receives, and gives back when it declines.

use std::error::Error;
use std::fmt;

use http::request::Parts;
use palisade_core::deadline::DeadlineExceeded;
use palisade_core::error::find;
use palisade_core::{BoxError, BulkheadFull, BulkheadTimeout, CircuitOpen};

/// Why the fallback was asked to answer (the `reason` of the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The call's result was classified a failure (a 5xx, a transport error).
    Failure,
    /// A circuit breaker was open.
    CircuitOpen,
    /// A bulkhead was full.
    BulkheadFull,
    /// A call waited too long for a bulkhead permit.
    BulkheadTimeout,
    /// The request's deadline passed.
    DeadlineExceeded,
}

impl Reason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Failure => "failure",
            Reason::CircuitOpen => "circuit_open",
            Reason::BulkheadFull => "bulkhead_full",
            Reason::BulkheadTimeout => "bulkhead_timeout",
            Reason::DeadlineExceeded => "deadline_exceeded",
        }
    }

    pub(crate) const ALL: [Reason; 5] = [
        Reason::Failure,
        Reason::CircuitOpen,
        Reason::BulkheadFull,
        Reason::BulkheadTimeout,
        Reason::DeadlineExceeded,
    ];

    pub(crate) fn of_error(error: &(dyn Error + 'static)) -> Reason {
        if find::<CircuitOpen>(error).is_some() {
            Reason::CircuitOpen
        } else if find::<BulkheadFull>(error).is_some() {
            Reason::BulkheadFull
        } else if find::<BulkheadTimeout>(error).is_some() {
            Reason::BulkheadTimeout
        } else if find::<DeadlineExceeded>(error).is_some() {
            Reason::DeadlineExceeded
        } else {
            Reason::Failure
        }
    }
}

/// The inner call's failed result.
#[derive(Debug)]
pub enum Cause<Res> {
    /// A response the classifier called a failure.
    Response(Res),
    /// An error: a failure, or one of palisade's local rejections.
    Error(BoxError),
}

/// What a fallback receives: the head of the request that failed (method,
/// URI, version, headers, extensions) and the failed result.
///
/// A fallback that declines returns it as its error: the caller then gets
/// the original result unchanged, a failed response as it was, an error
/// with its `source()` chain intact (a `CircuitOpen` is still found by
/// `downcast_ref` or [`find`]).
pub struct Failure<Res> {
    parts: Parts,
    cause: Cause<Res>,
    reason: Reason,
}

impl<Res> Failure<Res> {
    pub(crate) fn new(parts: Parts, cause: Cause<Res>) -> Self {
        let reason = match &cause {
            Cause::Response(_) => Reason::Failure,
            Cause::Error(e) => Reason::of_error(&**e),
        };
        Self { parts, cause, reason }
    }

    /// The request's head.
    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// Why the fallback was asked.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// The failed result.
    pub fn cause(&self) -> &Cause<Res> {
        &self.cause
    }

    /// The error, when the call failed with one.
    pub fn error(&self) -> Option<&(dyn Error + 'static)> {
        match &self.cause {
            Cause::Error(e) => Some(&**e),
            Cause::Response(_) => None,
        }
    }

    /// The failed response, when the call answered one.
    pub fn response(&self) -> Option<&Res> {
        match &self.cause {
            Cause::Response(res) => Some(res),
            Cause::Error(_) => None,
        }
    }

    /// The request's head and the failed result.
    pub fn into_parts(self) -> (Parts, Cause<Res>) {
        (self.parts, self.cause)
    }

    /// The original result, as the caller gets it when the fallback declines.
    pub fn into_result(self) -> Result<Res, BoxError> {
        match self.cause {
            Cause::Response(res) => Ok(res),
            Cause::Error(e) => Err(e),
        }
    }
}

impl<Res> fmt::Debug for Failure<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failure")
            .field("method", &self.parts.method)
            .field("uri", &self.parts.uri)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}
