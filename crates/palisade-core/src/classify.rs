//! Deciding whether a call succeeded, failed or does not count, and whether
//! it may be retried.
//!
//! The circuit breaker counts [`Outcome::Failure`]s; the retry policy retries
//! outcomes that are [`Classify::retryable`]. The two questions are separate on
//! purpose: a `501 Not Implemented` is a failure of the downstream but retrying
//! it cannot help, while a `429 Too Many Requests` is both.
//!
//! | classifier | failure | retryable |
//! |---|---|---|
//! | [`ErrorClassifier`] (default) | any error | any error |
//! | [`HttpClassifier`] | 5xx, 408, 429, any error | 408, 429, 500, 502, 503, 504, connect errors, timeouts |
//! | [`GrpcClassifier`] | `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNKNOWN`, `DATA_LOSS`, any error | `UNAVAILABLE`, connect errors, timeouts |
//! | [`ClassifyFn`] | what the closure says (local rejections aside) | its failures |
//!
//! In every classifier palisade's own local rejections ([`CircuitOpen`],
//! [`BulkheadFull`], [`BulkheadTimeout`]) are [`Outcome::Ignored`] and never
//! retryable: they say nothing about the downstream's health.
//!
//! [`CircuitOpen`]: crate::CircuitOpen
//! [`BulkheadFull`]: crate::BulkheadFull
//! [`BulkheadTimeout`]: crate::BulkheadTimeout

use std::error::Error;
use std::fmt;

use http::{HeaderMap, Response, StatusCode};

use crate::error::{is_connect_error, is_local_rejection, is_timeout};

/// The verdict on one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The downstream did its job.
    Success,
    /// The downstream failed; a circuit breaker counts it against the downstream.
    Failure,
    /// Counts as neither (a local rejection, a cancelled call, an outcome the
    /// user chose to ignore).
    Ignored,
}

/// The result a classifier inspects: the response, or the error as a trait
/// object so its [`source()`](Error::source) chain can be walked.
pub type CallResult<'a, Res> = Result<&'a Res, &'a (dyn Error + 'static)>;

/// Decides success, failure or ignored for a call's result, and separately
/// whether it may be retried.
///
/// One trait serves every palisade layer, so a stack classifies the same way
/// in its breaker, its retry policy and its metrics.
pub trait Classify<Res> {
    /// Whether the call succeeded, failed or does not count.
    fn classify(&self, result: CallResult<'_, Res>) -> Outcome;

    /// Whether retrying the call may help.
    ///
    /// The default retries exactly the failures; local rejections are
    /// [`Outcome::Ignored`] and so never retried.
    fn retryable(&self, result: CallResult<'_, Res>) -> bool {
        self.classify(result) == Outcome::Failure
    }
}

fn classify_error(error: &(dyn Error + 'static)) -> Outcome {
    if is_local_rejection(error) {
        Outcome::Ignored
    } else {
        Outcome::Failure
    }
}

fn transport_error_retryable(error: &(dyn Error + 'static)) -> bool {
    !is_local_rejection(error) && (is_connect_error(error) || is_timeout(error))
}

/// Any error is a failure and retryable; any response is a success.
///
/// The default classifier of the protocol-agnostic layers.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorClassifier;

impl<Res> Classify<Res> for ErrorClassifier {
    fn classify(&self, result: CallResult<'_, Res>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => classify_error(e),
        }
    }
}

/// HTTP semantics: 5xx, 408 and 429 responses and transport errors fail; other
/// statuses (including the other 4xx, which are the caller's fault) succeed.
///
/// Retryable: 408, 429, 500, 502, 503, 504, connect errors and timeouts. Other
/// transport errors are not retryable: the request may have been processed.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpClassifier;

impl HttpClassifier {
    /// True for the statuses that count as failures of the downstream.
    pub fn is_failure_status(status: StatusCode) -> bool {
        status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS
    }

    /// True for the statuses a retry may cure.
    pub fn is_retryable_status(status: StatusCode) -> bool {
        matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
    }
}

impl<B> Classify<Response<B>> for HttpClassifier {
    fn classify(&self, result: CallResult<'_, Response<B>>) -> Outcome {
        match result {
            Ok(res) if Self::is_failure_status(res.status()) => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(e) => classify_error(e),
        }
    }

    fn retryable(&self, result: CallResult<'_, Response<B>>) -> bool {
        match result {
            Ok(res) => Self::is_retryable_status(res.status()),
            Err(e) => transport_error_retryable(e),
        }
    }
}

/// A gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcCode {
    /// The code for a numeric value; values outside the spec are `Unknown`, as
    /// gRPC implementations treat them.
    pub fn from_i32(value: i32) -> Self {
        use GrpcCode::*;
        match value {
            0 => Ok,
            1 => Cancelled,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            _ => Unknown,
        }
    }

    /// The status a gRPC client infers from a non-200 HTTP status when no
    /// `grpc-status` was sent (gRPC's "HTTP to gRPC status code mapping").
    pub fn from_http_status(status: StatusCode) -> Self {
        match status.as_u16() {
            200 => GrpcCode::Ok,
            400 => GrpcCode::Internal,
            401 => GrpcCode::Unauthenticated,
            403 => GrpcCode::PermissionDenied,
            404 => GrpcCode::Unimplemented,
            429 | 502 | 503 | 504 => GrpcCode::Unavailable,
            _ => GrpcCode::Unknown,
        }
    }

    /// The code a response's head carries: its `grpc-status` header (present in
    /// trailers-only responses, which is how servers send most errors), or the
    /// mapping of a non-200 HTTP status. `None` for a 200 whose status will
    /// only arrive in the trailers.
    pub fn of_response<B>(res: &Response<B>) -> Option<Self> {
        match Self::of_headers(res.headers()) {
            Some(code) => Some(code),
            None if res.status() != StatusCode::OK => Some(Self::from_http_status(res.status())),
            None => None,
        }
    }

    /// The code in a `grpc-status` header of `headers` (a response head or
    /// its trailers), read as tonic reads it: exactly `0` to `16`, anything
    /// else (`00`, `+14`, ` 0`, `17`) `Unknown`; a missing header is `None`.
    pub fn of_headers(headers: &HeaderMap) -> Option<Self> {
        // A lenient parse would judge a call by a code the tonic client
        // behind the breaker or the retry never sees.
        headers.get("grpc-status").map(|value| match *value.as_bytes() {
            [digit @ b'0'..=b'9'] => GrpcCode::from_i32(i32::from(digit - b'0')),
            [b'1', digit @ b'0'..=b'6'] => GrpcCode::from_i32(10 + i32::from(digit - b'0')),
            _ => GrpcCode::Unknown,
        })
    }

    /// [`Outcome::Failure`] for the [failure](Self::is_failure) codes, else
    /// [`Outcome::Success`].
    pub fn outcome(self) -> Outcome {
        if self.is_failure() {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }

    /// True for the codes that count as failures of the downstream.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            GrpcCode::Unavailable
                | GrpcCode::DeadlineExceeded
                | GrpcCode::ResourceExhausted
                | GrpcCode::Internal
                | GrpcCode::Unknown
                | GrpcCode::DataLoss
        )
    }
}

/// True for the head of a gRPC request or response: its `content-type` is
/// `application/grpc`, with or without a `+format` suffix.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// gRPC semantics: the `UNAVAILABLE`, `DEADLINE_EXCEEDED`,
/// `RESOURCE_EXHAUSTED`, `INTERNAL`, `UNKNOWN` and `DATA_LOSS` codes and
/// transport errors fail; other codes succeed.
///
/// As a [`Classify`], it sees the response head only: the code of a
/// trailers-only response (a `grpc-status` header) or one inferred from a
/// non-200 HTTP status; a `200 OK` whose status will come in the trailers
/// counts as a success. That is right for a retry policy, which must decide
/// at the head (a call whose messages were passed on is never retried), and
/// wrong for a breaker or a metric: wrap it in
/// [`AtEos`](crate::eos::AtEos) to judge the call by the status its trailers
/// carry (see [`crate::eos`], whose [`ClassifyEos`](crate::eos::ClassifyEos) it implements).
///
/// Only `UNAVAILABLE` and connect errors (a call never sent, or a stream
/// the server did not process) are retryable, as in gRPC's own retry
/// design: the other codes may mean the call was processed, and so may a
/// timed-out attempt, which gRPC never retries (a gRPC method may not be
/// safe to repeat, and nothing in the call says whether it is).
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcClassifier;

impl<B> Classify<Response<B>> for GrpcClassifier {
    fn classify(&self, result: CallResult<'_, Response<B>>) -> Outcome {
        match result {
            Ok(res) => GrpcCode::of_response(res).map_or(Outcome::Success, GrpcCode::outcome),
            Err(e) => classify_error(e),
        }
    }

    fn retryable(&self, result: CallResult<'_, Response<B>>) -> bool {
        match result {
            Ok(res) => GrpcCode::of_response(res) == Some(GrpcCode::Unavailable),
            Err(e) => !is_local_rejection(e) && is_connect_error(e),
        }
    }
}

/// What `classifier` says of `result`, but [`Outcome::Ignored`] for a local
/// rejection whatever it says: how a layer judging its downstream asks a
/// classifier it did not write (one written by hand must not let another
/// palisade layer's refusal count against the downstream).
#[inline(always)]
pub fn downstream_outcome<C: Classify<Res>, Res>(classifier: &C, result: CallResult<'_, Res>) -> Outcome {
    unless_local_rejection(result, |result| classifier.classify(result))
}

/// `judge`'s outcome for `result`, or [`Outcome::Ignored`] for a local rejection.
#[inline(always)]
fn unless_local_rejection<'a, Res>(
    result: CallResult<'a, Res>,
    judge: impl FnOnce(CallResult<'a, Res>) -> Outcome,
) -> Outcome {
    match result {
        Err(error) if is_local_rejection(error) => Outcome::Ignored,
        result => judge(result),
    }
}

/// A classifier from a closure; its failures are retryable.
///
/// ```
/// use palisade_core::{classify_fn, CallResult, Classify, Outcome};
///
/// // Only a `None` answer from the downstream counts as a failure.
/// let classifier = classify_fn(|result: CallResult<'_, Option<u32>>| match result {
///     Ok(Some(_)) => Outcome::Success,
///     Ok(None) | Err(_) => Outcome::Failure,
/// });
/// assert_eq!(classifier.classify(Ok(&Some(1))), Outcome::Success);
/// assert_eq!(classifier.classify(Ok(&None)), Outcome::Failure);
/// assert!(classifier.retryable(Ok(&None)));
/// ```
#[derive(Clone, Copy)]
pub struct ClassifyFn<F> {
    f: F,
}

/// Makes a [`ClassifyFn`].
pub fn classify_fn<Res, F>(f: F) -> ClassifyFn<F>
where
    F: Fn(CallResult<'_, Res>) -> Outcome,
{
    ClassifyFn { f }
}

impl<F> fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyFn").finish_non_exhaustive()
    }
}

impl<Res, F> Classify<Res> for ClassifyFn<F>
where
    F: Fn(CallResult<'_, Res>) -> Outcome,
{
    fn classify(&self, result: CallResult<'_, Res>) -> Outcome {
        // As in every classifier: the closure judges the downstream, and a
        // local rejection says nothing about it.
        unless_local_rejection(result, &self.f)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::BoxError;
    use crate::{BulkheadFull, BulkheadTimeout, CircuitOpen};

    fn response(status: u16) -> Response<()> {
        Response::builder().status(status).body(()).unwrap()
    }

    fn grpc(code: &str) -> Response<()> {
        Response::builder()
            .status(200)
            .header("grpc-status", code)
            .body(())
            .unwrap()
    }

    fn err(e: impl Into<BoxError>) -> BoxError {
        e.into()
    }

    #[test]
    fn a_closure_classifier_ignores_local_rejections() {
        let c = classify_fn(|r: CallResult<'_, u8>| match r {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        });
        for e in local_rejections() {
            assert_eq!(c.classify(Err(&*e)), Outcome::Ignored, "{e}");
            assert!(!c.retryable(Err(&*e)), "{e}");
        }
        let refused: BoxError = "connection refused".into();
        assert_eq!(c.classify(Err(&*refused)), Outcome::Failure);
    }

    fn local_rejections() -> Vec<BoxError> {
        vec![
            err(CircuitOpen::new("cb", Duration::from_secs(1))),
            err(BulkheadFull::new("bh", Duration::from_secs(1))),
            err(BulkheadTimeout::new(
                "bh",
                Duration::from_millis(10),
                Duration::from_secs(1),
            )),
            err(crate::deadline::DeadlineExceeded),
        ]
    }

    #[test]
    fn error_classifier() {
        let c = ErrorClassifier;
        assert_eq!(Classify::<u8>::classify(&c, Ok(&1)), Outcome::Success);
        let boom = err("boom");
        assert_eq!(Classify::<u8>::classify(&c, Err(&*boom)), Outcome::Failure);
        assert!(Classify::<u8>::retryable(&c, Err(&*boom)));
        assert!(!Classify::<u8>::retryable(&c, Ok(&1)));
        for rejection in local_rejections() {
            assert_eq!(Classify::<u8>::classify(&c, Err(&*rejection)), Outcome::Ignored);
            assert!(!Classify::<u8>::retryable(&c, Err(&*rejection)));
        }
    }

    #[test]
    fn http_statuses_by_class() {
        let c = HttpClassifier;
        for status in [100u16, 101, 200, 201, 204, 301, 302, 304] {
            assert_eq!(c.classify(Ok(&response(status))), Outcome::Success, "{status}");
            assert!(!c.retryable(Ok(&response(status))), "{status}");
        }
        // Other 4xx are the caller's fault: neither a failure nor retryable.
        for status in [400u16, 401, 403, 404, 405, 409, 410, 413, 422] {
            assert_eq!(c.classify(Ok(&response(status))), Outcome::Success, "{status}");
            assert!(!c.retryable(Ok(&response(status))), "{status}");
        }
        for status in [408u16, 429] {
            assert_eq!(c.classify(Ok(&response(status))), Outcome::Failure, "{status}");
            assert!(c.retryable(Ok(&response(status))), "{status}");
        }
        for status in [500u16, 502, 503, 504] {
            assert_eq!(c.classify(Ok(&response(status))), Outcome::Failure, "{status}");
            assert!(c.retryable(Ok(&response(status))), "{status}");
        }
        // Failures that retrying cannot cure.
        for status in [501u16, 505, 507, 511, 599] {
            assert_eq!(c.classify(Ok(&response(status))), Outcome::Failure, "{status}");
            assert!(!c.retryable(Ok(&response(status))), "{status}");
        }
    }

    #[test]
    fn http_transport_errors() {
        let c = HttpClassifier;
        let refused = err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let timeout = err(tower::timeout::error::Elapsed::new());
        let reset = err(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        for e in [&refused, &timeout, &reset] {
            assert_eq!(Classify::<Response<()>>::classify(&c, Err(&**e)), Outcome::Failure);
        }
        assert!(Classify::<Response<()>>::retryable(&c, Err(&*refused)));
        assert!(Classify::<Response<()>>::retryable(&c, Err(&*timeout)));
        // The request may have reached the server: not retryable.
        assert!(!Classify::<Response<()>>::retryable(&c, Err(&*reset)));
        for rejection in local_rejections() {
            assert_eq!(
                Classify::<Response<()>>::classify(&c, Err(&*rejection)),
                Outcome::Ignored
            );
            assert!(!Classify::<Response<()>>::retryable(&c, Err(&*rejection)));
        }
    }

    #[test]
    fn grpc_heads_are_told_by_their_content_type() {
        let head = |ct: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ct));
            headers
        };
        assert!(is_grpc(&head("application/grpc")));
        assert!(is_grpc(&head("application/grpc+proto")));
        assert!(!is_grpc(&head("application/json")));
        assert!(!is_grpc(&head("application/grp")));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn grpc_codes() {
        let c = GrpcClassifier;
        let failing = [
            ("14", true),  // UNAVAILABLE
            ("4", false),  // DEADLINE_EXCEEDED
            ("8", false),  // RESOURCE_EXHAUSTED
            ("13", false), // INTERNAL
            ("2", false),  // UNKNOWN
            ("15", false), // DATA_LOSS
        ];
        for (code, retryable) in failing {
            assert_eq!(c.classify(Ok(&grpc(code))), Outcome::Failure, "code {code}");
            assert_eq!(c.retryable(Ok(&grpc(code))), retryable, "code {code}");
        }
        for code in ["0", "1", "3", "5", "6", "7", "9", "10", "11", "12", "16"] {
            assert_eq!(c.classify(Ok(&grpc(code))), Outcome::Success, "code {code}");
            assert!(!c.retryable(Ok(&grpc(code))), "code {code}");
        }
        // Out-of-range and unparsable codes are UNKNOWN, a failure.
        assert_eq!(c.classify(Ok(&grpc("99"))), Outcome::Failure);
        assert_eq!(c.classify(Ok(&grpc("x"))), Outcome::Failure);
        // A 200 without grpc-status: the status comes in trailers later.
        assert_eq!(c.classify(Ok(&response(200))), Outcome::Success);
        // Non-200 HTTP statuses map as gRPC clients map them.
        assert_eq!(c.classify(Ok(&response(503))), Outcome::Failure);
        assert!(c.retryable(Ok(&response(503))));
        assert_eq!(c.classify(Ok(&response(404))), Outcome::Success);
        assert_eq!(GrpcCode::of_response(&response(404)), Some(GrpcCode::Unimplemented));
        assert_eq!(GrpcCode::of_response(&response(500)), Some(GrpcCode::Unknown));
        assert_eq!(c.classify(Ok(&response(500))), Outcome::Failure);
        let refused = err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(Classify::<Response<()>>::classify(&c, Err(&*refused)), Outcome::Failure);
        assert!(Classify::<Response<()>>::retryable(&c, Err(&*refused)));
    }

    #[test]
    fn grpc_status_is_read_as_tonic_reads_it() {
        let code = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("grpc-status", http::HeaderValue::from_static(value));
            GrpcCode::of_headers(&headers)
        };
        assert_eq!(code("0"), Some(GrpcCode::Ok));
        assert_eq!(code("14"), Some(GrpcCode::Unavailable));
        assert_eq!(code("16"), Some(GrpcCode::Unauthenticated));
        for value in 0..=16 {
            let expected = GrpcCode::from_i32(value);
            let mut headers = HeaderMap::new();
            headers.insert("grpc-status", http::HeaderValue::from(value));
            assert_eq!(GrpcCode::of_headers(&headers), Some(expected), "{value}");
        }
        // tonic's `Code::from_bytes` takes exactly "0" to "16": anything a
        // lenient integer parse would also accept is UNKNOWN to the client.
        for value in ["00", "+14", "014", " 0", "0 ", "17", "-1", "-0", "", "1 4", "x"] {
            assert_eq!(code(value), Some(GrpcCode::Unknown), "{value:?}");
        }
        assert_eq!(GrpcCode::of_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn closure_adapter() {
        let c = classify_fn(|r: CallResult<'_, Response<()>>| match r {
            Ok(res) if res.status() == StatusCode::CONFLICT => Outcome::Ignored,
            Ok(res) if res.status().is_client_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        });
        assert_eq!(c.classify(Ok(&response(409))), Outcome::Ignored);
        assert_eq!(c.classify(Ok(&response(404))), Outcome::Failure);
        assert!(c.retryable(Ok(&response(404))));
        assert!(!c.retryable(Ok(&response(409))));
        assert_eq!(c.classify(Ok(&response(500))), Outcome::Success);
    }
}
