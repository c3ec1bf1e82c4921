//! RFC 9457 `application/problem+json` rejections, and the mapping from
//! palisade's layer errors to HTTP responses.
//!
//! | error (anywhere in the `source()` chain) | status | `type` | `Retry-After` |
//! |---|---|---|---|
//! | [`CircuitOpen`] | 503 | [`types::CIRCUIT_OPEN`] | time until the breaker may admit |
//! | [`BulkheadFull`] | 503 | [`types::BULKHEAD_FULL`] | the bulkhead's hint |
//! | [`BulkheadTimeout`] | 503 | [`types::BULKHEAD_TIMEOUT`] | the bulkhead's hint |
//! | tower's `load_shed::error::Overloaded` | 503 | [`types::OVERLOADED`] | none |
//! | tower's or tokio's `Elapsed` | 504 | [`types::TIMEOUT`] | none |
//! | [`DeadlineExceeded`] | 504 | [`types::DEADLINE_EXCEEDED`] | none |
//! | anything else | 500 | `about:blank` | none |
//!
//! Each row is the error's [`ToProblem`] implementation, the one way every
//! palisade layer turns a rejection into a response (HTTP layers implement it
//! for their own rejections and answer with
//! [`to_response`](ToProblem::to_response)).
//!
//! Bodies never carry an error's text: a rejection's `detail` is a fixed
//! sentence, and an unknown error becomes a plain 500 without `detail`.
//! `Retry-After` is given in whole seconds, rounded up, at least 1.
//!
//! # With axum
//!
//! With the `axum` feature, [`Problem`] and the rejections above implement
//! axum's `IntoResponse`, so a handler can return `Result<_, Problem>`.
//! Layer errors reach a response through `HandleErrorLayer`:
//!
//! ```
//! use axum::{error_handling::HandleErrorLayer, routing::get, Router};
//! use tower::ServiceBuilder;
//!
//! let app: Router = Router::new().route("/", get(|| async { "hi" })).layer(
//!     ServiceBuilder::new()
//!         .layer(HandleErrorLayer::new(palisade_core::problem::handle_error))
//!         .load_shed()
//!         .concurrency_limit(64),
//! );
//! # let _ = app;
//! ```
//!
//! # With a plain hyper service
//!
//! Put [`ProblemResponseLayer`](crate::response::ProblemResponseLayer) on top
//! of the stack: it turns errors into these responses, so the service hyper
//! serves is infallible.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::error::Error;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

use crate::BoxError;
use crate::deadline::{DeadlineExceeded, MalformedTimeout};
use crate::error::chain;
use crate::{BulkheadFull, BulkheadTimeout, CircuitOpen};

/// The media type of problem details.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// The `type` URIs palisade's rejections use.
pub mod types {
    /// No more specific type: the status says it all.
    pub const ABOUT_BLANK: &str = "about:blank";
    /// A circuit breaker is open.
    pub const CIRCUIT_OPEN: &str = "urn:palisade:problem:circuit-open";
    /// A bulkhead is full.
    pub const BULKHEAD_FULL: &str = "urn:palisade:problem:bulkhead-full";
    /// A call waited too long for a bulkhead permit.
    pub const BULKHEAD_TIMEOUT: &str = "urn:palisade:problem:bulkhead-timeout";
    /// A load shedder rejected the call.
    pub const OVERLOADED: &str = "urn:palisade:problem:overloaded";
    /// The call took longer than its timeout.
    pub const TIMEOUT: &str = "urn:palisade:problem:timeout";
    /// The request's whole time budget (its deadline) ran out.
    pub const DEADLINE_EXCEEDED: &str = "urn:palisade:problem:deadline-exceeded";
    /// A request's timeout header (`grpc-timeout`, `x-request-timeout-ms`) is malformed.
    pub const MALFORMED_TIMEOUT: &str = "urn:palisade:problem:malformed-timeout";
}

/// An RFC 9457 problem details object, with an optional `Retry-After`.
///
/// ```
/// use http::StatusCode;
/// use palisade_core::problem::Problem;
///
/// let res: http::Response<String> = Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
///     .with_type("urn:example:problem:key-reused")
///     .with_title("Idempotency key reused")
///     .with_detail("The key was first used with another request body.")
///     .into_response_with(|bytes| String::from_utf8(bytes.to_vec()).unwrap());
/// assert_eq!(res.status(), 422);
/// assert_eq!(res.headers()["content-type"], "application/problem+json");
/// assert_eq!(
///     res.body(),
///     r#"{"type":"urn:example:problem:key-reused","title":"Idempotency key reused","status":422,"detail":"The key was first used with another request body."}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    kind: Cow<'static, str>,
    title: Cow<'static, str>,
    status: StatusCode,
    detail: Option<Cow<'static, str>>,
    /// `instance` and extension members, boxed: most problems have neither,
    /// and a `Problem` stays small enough to be an `Err` by value.
    extra: Option<Box<Extra>>,
    retry_after: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Extra {
    instance: Option<Cow<'static, str>>,
    extensions: BTreeMap<Cow<'static, str>, serde_json::Value>,
}

/// The members RFC 9457 defines: an extension member may not take one of
/// these names.
pub const STANDARD_MEMBERS: [&str; 5] = ["type", "title", "status", "detail", "instance"];

/// Why [`Problem::with_extension`] refused an extension member.
#[derive(Debug)]
#[non_exhaustive]
pub enum ExtensionError {
    /// The name is one of the [`STANDARD_MEMBERS`]: as an extension it would
    /// hide or duplicate the standard member in the JSON object.
    Reserved(Cow<'static, str>),
    /// The value could not be turned into JSON (a map with keys that are not
    /// strings, a `Serialize` implementation that failed).
    Value(serde_json::Error),
}

impl std::fmt::Display for ExtensionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reserved(name) => write!(f, "`{name}` is a standard problem member, not an extension"),
            Self::Value(_) => f.write_str("the extension member's value is not representable as JSON"),
        }
    }
}

impl Error for ExtensionError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Reserved(_) => None,
            Self::Value(e) => Some(e),
        }
    }
}

impl Serialize for Problem {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let instance = self.instance();
        let extensions = self.extra.as_ref().map_or(0, |extra| extra.extensions.len());
        let len = 3 + usize::from(self.detail.is_some()) + usize::from(instance.is_some()) + extensions;
        let mut map = s.serialize_map(Some(len))?;
        map.serialize_entry("type", &self.kind)?;
        map.serialize_entry("title", &self.title)?;
        map.serialize_entry("status", &self.status.as_u16())?;
        if let Some(detail) = &self.detail {
            map.serialize_entry("detail", detail)?;
        }
        if let Some(instance) = instance {
            map.serialize_entry("instance", instance)?;
        }
        // Extension members sit at the top level, beside the standard ones
        // (RFC 9457, section 3.2); `with_extension` keeps their names apart.
        for (name, value) in self.extensions() {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl Problem {
    /// A problem of type `about:blank` whose title is the status's reason phrase.
    pub fn new(status: StatusCode) -> Self {
        Self {
            kind: Cow::Borrowed(types::ABOUT_BLANK),
            title: Cow::Borrowed(status.canonical_reason().unwrap_or("Error")),
            status,
            detail: None,
            extra: None,
            retry_after: None,
        }
    }

    /// Sets the `type` URI.
    pub fn with_type(mut self, kind: impl Into<Cow<'static, str>>) -> Self {
        self.kind = kind.into();
        self
    }

    /// Sets the short, human-readable `title`.
    pub fn with_title(mut self, title: impl Into<Cow<'static, str>>) -> Self {
        self.title = title.into();
        self
    }

    /// Sets the `detail` explaining this occurrence. Never put internal error
    /// text here: it goes to the client.
    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Sets the `instance`: a URI reference that identifies this occurrence
    /// of the problem (the request's path, an id a support team can look up).
    pub fn with_instance(mut self, instance: impl Into<Cow<'static, str>>) -> Self {
        self.extra.get_or_insert_default().instance = Some(instance.into());
        self
    }

    /// Adds an extension member, serialised at the top level of the JSON
    /// object beside the standard members (RFC 9457, section 3.2).
    ///
    /// Refuses a name among the [`STANDARD_MEMBERS`] and a value that is not
    /// representable as JSON. Adding a name twice keeps the last value. As
    /// with `detail`, never put internal error text here.
    ///
    /// ```
    /// use http::StatusCode;
    /// use palisade_core::problem::{ExtensionError, Problem};
    ///
    /// let problem = Problem::new(StatusCode::FORBIDDEN)
    ///     .with_type("https://example.com/probs/out-of-credit")
    ///     .with_instance("/account/12345/msgs/abc")
    ///     .with_extension("balance", 30)?
    ///     .with_extension("accounts", ["/account/12345", "/account/67890"])?;
    /// assert_eq!(
    ///     problem.to_json(),
    ///     r#"{"type":"https://example.com/probs/out-of-credit","title":"Forbidden","status":403,"instance":"/account/12345/msgs/abc","accounts":["/account/12345","/account/67890"],"balance":30}"#
    /// );
    /// assert!(matches!(problem.with_extension("status", 500), Err(ExtensionError::Reserved(_))));
    /// # Ok::<(), ExtensionError>(())
    /// ```
    pub fn with_extension(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Serialize,
    ) -> Result<Self, ExtensionError> {
        let name = name.into();
        if STANDARD_MEMBERS.contains(&&*name) {
            return Err(ExtensionError::Reserved(name));
        }
        let value = serde_json::to_value(value).map_err(ExtensionError::Value)?;
        self.extra.get_or_insert_default().extensions.insert(name, value);
        Ok(self)
    }

    /// Adds a `Retry-After` header to the response.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `type` URI.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The detail, if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// The instance, if any.
    pub fn instance(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|extra| extra.instance.as_deref())
    }

    /// An extension member's value, if the problem has one by that name.
    pub fn extension(&self, name: &str) -> Option<&serde_json::Value> {
        self.extra.as_ref().and_then(|extra| extra.extensions.get(name))
    }

    /// The extension members, by name.
    pub fn extensions(&self) -> impl Iterator<Item = (&str, &serde_json::Value)> {
        self.extra
            .iter()
            .flat_map(|extra| extra.extensions.iter())
            .map(|(name, value)| (&**name, value))
    }

    /// The `Retry-After` duration, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The JSON body.
    pub fn to_json(&self) -> Bytes {
        // Serialising strings and a number into a Vec cannot fail.
        serde_json::to_vec(self).map(Bytes::from).unwrap_or_default()
    }

    /// The HTTP response, with a body type that can be made from bytes
    /// (`axum::body::Body`, `http_body_util::Full<Bytes>`, ...).
    pub fn into_response<B: From<Bytes>>(self) -> Response<B> {
        self.into_response_with(B::from)
    }

    /// The HTTP response, with the body made by `body` from the JSON bytes.
    pub fn into_response_with<B>(self, body: impl FnOnce(Bytes) -> B) -> Response<B> {
        let mut res = Response::new(body(self.to_json()));
        *res.status_mut() = self.status;
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(after)));
        }
        res
    }
}

impl From<Problem> for Response<Full<Bytes>> {
    fn from(problem: Problem) -> Self {
        problem.into_response()
    }
}

/// A handler can return `Result<_, Problem>`: the problem is the response,
/// with its status, `application/problem+json` and `Retry-After`.
///
/// ```
/// use axum::{Router, routing::get};
/// use http::StatusCode;
/// use palisade_core::problem::Problem;
///
/// async fn order(axum::extract::Path(id): axum::extract::Path<u64>) -> Result<String, Problem> {
///     if id == 0 {
///         return Err(Problem::new(StatusCode::NOT_FOUND)
///             .with_type("urn:example:problem:no-such-order")
///             .with_instance(format!("/orders/{id}")));
///     }
///     Ok(format!("order {id}"))
/// }
/// let app: Router = Router::new().route("/orders/{id}", get(order));
/// # let _ = app;
/// ```
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum_core::response::IntoResponse for Problem {
    fn into_response(self) -> axum_core::response::Response {
        self.into_response_with(axum_core::body::Body::from)
    }
}

/// Implements axum's `IntoResponse` for rejections that answer with a problem.
macro_rules! into_axum_response {
    ($($ty:ty),*) => {$(
        /// Answers with the rejection's problem (see the table in [`problem`](crate::problem)).
        #[cfg(feature = "axum")]
        #[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
        impl axum_core::response::IntoResponse for $ty {
            fn into_response(self) -> axum_core::response::Response {
                self.to_response_with(axum_core::body::Body::from)
            }
        }
    )*};
}
into_axum_response!(CircuitOpen, BulkheadFull, BulkheadTimeout, DeadlineExceeded);

/// `Retry-After` in whole seconds: rounded up, at least 1, so a client never
/// comes back before the layer can admit it, nor at once.
pub fn retry_after_secs(after: Duration) -> u64 {
    let secs = after.as_secs().saturating_add(u64::from(after.subsec_nanos() > 0));
    secs.max(1)
}

/// The problem for an error: palisade's rejections and tower's timeouts and
/// load shedding by the table above, anything else a plain 500.
pub fn problem_for_error(error: &(dyn Error + 'static)) -> Problem {
    chain(error)
        .find_map(known_problem)
        .unwrap_or_else(|| Problem::new(StatusCode::INTERNAL_SERVER_ERROR))
}

fn known_problem(error: &(dyn Error + 'static)) -> Option<Problem> {
    fn problem_of<E: Error + ToProblem + 'static>(error: &(dyn Error + 'static)) -> Option<Problem> {
        error.downcast_ref::<E>().map(E::to_problem)
    }
    problem_of::<CircuitOpen>(error)
        .or_else(|| problem_of::<BulkheadFull>(error))
        .or_else(|| problem_of::<BulkheadTimeout>(error))
        .or_else(|| problem_of::<tower::load_shed::error::Overloaded>(error))
        .or_else(|| problem_of::<tower::timeout::error::Elapsed>(error))
        .or_else(|| problem_of::<tokio::time::error::Elapsed>(error))
        .or_else(|| problem_of::<DeadlineExceeded>(error))
}

/// A rejection that answers HTTP with a problem: the one way from a layer's
/// error to its `application/problem+json` response.
///
/// palisade's rejections implement it (the table above), and so does every
/// HTTP layer's own rejection; [`problem_for_error`] uses it for the errors it
/// finds in a chain. The problem must not carry internal error text: only a
/// fixed title and detail, and what the client may act on (`Retry-After`).
///
/// ```
/// use std::time::Duration;
/// use palisade_core::{BulkheadFull, problem::ToProblem};
///
/// let full = BulkheadFull::new("db", Duration::from_secs(2));
/// let res: http::Response<String> = full.to_response_with(|b| String::from_utf8_lossy(&b).into_owned());
/// assert_eq!(res.status(), 503);
/// assert_eq!(res.headers()["retry-after"], "2");
/// assert_eq!(full.to_problem().kind(), palisade_core::problem::types::BULKHEAD_FULL);
/// ```
pub trait ToProblem {
    /// The problem this rejection answers with.
    fn to_problem(&self) -> Problem;

    /// The response, with a body type that can be made from bytes.
    fn to_response<B: From<Bytes>>(&self) -> Response<B> {
        self.to_problem().into_response()
    }

    /// The response, with the body made by `body` from the JSON bytes.
    fn to_response_with<B>(&self, body: impl FnOnce(Bytes) -> B) -> Response<B> {
        self.to_problem().into_response_with(body)
    }
}

fn unavailable(kind: &'static str, title: &'static str, detail: &'static str) -> Problem {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE)
        .with_type(kind)
        .with_title(title)
        .with_detail(detail)
}

impl ToProblem for DeadlineExceeded {
    fn to_problem(&self) -> Problem {
        Problem::new(StatusCode::GATEWAY_TIMEOUT)
            .with_type(types::DEADLINE_EXCEEDED)
            .with_title("Deadline exceeded")
            .with_detail("The request's time budget ran out before it was answered.")
    }
}

impl ToProblem for MalformedTimeout {
    fn to_problem(&self) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST)
            .with_type(types::MALFORMED_TIMEOUT)
            .with_title("Malformed timeout")
            .with_detail("The request's timeout header is not in its format.")
    }
}

impl ToProblem for CircuitOpen {
    fn to_problem(&self) -> Problem {
        unavailable(
            types::CIRCUIT_OPEN,
            "Dependency unavailable",
            "A dependency of this service is failing; calls to it are paused.",
        )
        .with_retry_after(self.retry_after())
    }
}

impl ToProblem for BulkheadFull {
    fn to_problem(&self) -> Problem {
        unavailable(
            types::BULKHEAD_FULL,
            "Too many concurrent requests",
            "The service is at its concurrency limit for this kind of request.",
        )
        .with_retry_after(self.retry_after())
    }
}

impl ToProblem for BulkheadTimeout {
    fn to_problem(&self) -> Problem {
        unavailable(
            types::BULKHEAD_TIMEOUT,
            "Too many concurrent requests",
            "The request waited too long for a free slot.",
        )
        .with_retry_after(self.retry_after())
    }
}

impl ToProblem for tower::load_shed::error::Overloaded {
    fn to_problem(&self) -> Problem {
        unavailable(types::OVERLOADED, "Service overloaded", "The service is shedding load.")
    }
}

fn timed_out() -> Problem {
    Problem::new(StatusCode::GATEWAY_TIMEOUT)
        .with_type(types::TIMEOUT)
        .with_title("Request timed out")
        .with_detail("The request took longer than its time limit.")
}

impl ToProblem for tower::timeout::error::Elapsed {
    fn to_problem(&self) -> Problem {
        timed_out()
    }
}

impl ToProblem for tokio::time::error::Elapsed {
    fn to_problem(&self) -> Problem {
        timed_out()
    }
}

/// The response for an error, per the table above.
pub fn error_response<B: From<Bytes>>(error: &(dyn Error + 'static)) -> Response<B> {
    problem_for_error(error).into_response()
}

/// For axum's `HandleErrorLayer`: turns a layer error into its problem response.
pub async fn handle_error(error: BoxError) -> Response<Full<Bytes>> {
    error_response(&*error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapper: secret internals")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    async fn parts(res: Response<Full<Bytes>>) -> (StatusCode, Option<String>, String, serde_json::Value) {
        let status = res.status();
        let retry_after = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            retry_after,
            content_type,
            serde_json::from_slice(&body).unwrap(),
        )
    }

    #[tokio::test]
    async fn circuit_open_is_503_with_retry_after() {
        let err: BoxError = CircuitOpen::new("payments", Duration::from_millis(2_500)).into();
        let (status, retry_after, ct, body) = parts(handle_error(err).await).await;
        assert_eq!(status, 503);
        assert_eq!(retry_after.as_deref(), Some("3"));
        assert_eq!(ct, "application/problem+json");
        assert_eq!(
            body,
            serde_json::json!({
                "type": "urn:palisade:problem:circuit-open",
                "title": "Dependency unavailable",
                "status": 503,
                "detail": "A dependency of this service is failing; calls to it are paused."
            })
        );
        // The breaker's name is internal: it is not in the body.
        assert!(!body.to_string().contains("payments"));
    }

    #[tokio::test]
    async fn bulkhead_rejections_are_503_with_retry_after_when_wrapped() {
        let full: BoxError = Box::new(Wrapper(BulkheadFull::new("db", Duration::from_secs(1)).into()));
        let (status, retry_after, _, body) = parts(handle_error(full).await).await;
        assert_eq!((status.as_u16(), retry_after.as_deref()), (503, Some("1")));
        assert_eq!(body["type"], types::BULKHEAD_FULL);

        let timeout: BoxError = BulkheadTimeout::new("db", Duration::from_secs(2), Duration::from_secs(4)).into();
        let (status, retry_after, _, body) = parts(handle_error(timeout).await).await;
        assert_eq!((status.as_u16(), retry_after.as_deref()), (503, Some("4")));
        assert_eq!(body["type"], types::BULKHEAD_TIMEOUT);
    }

    #[tokio::test]
    async fn timeouts_and_load_shedding() {
        let elapsed: BoxError = tower::timeout::error::Elapsed::new().into();
        let (status, retry_after, _, body) = parts(handle_error(elapsed).await).await;
        assert_eq!((status.as_u16(), retry_after), (504, None));
        assert_eq!(body["type"], types::TIMEOUT);

        let overloaded: BoxError = tower::load_shed::error::Overloaded::new().into();
        let (status, retry_after, _, body) = parts(handle_error(overloaded).await).await;
        assert_eq!((status.as_u16(), retry_after), (503, None));
        assert_eq!(body["type"], types::OVERLOADED);
    }

    #[tokio::test]
    async fn unknown_errors_are_a_plain_500_without_detail() {
        let err: BoxError = Box::new(Wrapper("password=hunter2".into()));
        let (status, retry_after, ct, body) = parts(handle_error(err).await).await;
        assert_eq!((status.as_u16(), retry_after), (500, None));
        assert_eq!(ct, "application/problem+json");
        assert_eq!(
            body,
            serde_json::json!({"type": "about:blank", "title": "Internal Server Error", "status": 500})
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(30)), 30);
        // The longest wait does not wrap around to one second.
        assert_eq!(retry_after_secs(Duration::MAX), u64::MAX);
    }

    #[test]
    fn problem_escapes_json() {
        let p = Problem::new(StatusCode::BAD_REQUEST).with_detail("header \"x\" is\nbad");
        assert_eq!(
            p.to_json(),
            Bytes::from_static(
                br#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"header \"x\" is\nbad"}"#
            )
        );
        let res: Response<Full<Bytes>> = p.into();
        assert_eq!(res.status(), 400);
        assert!(res.headers().get("retry-after").is_none());
    }

    #[test]
    fn a_malformed_timeout_is_a_400_problem() {
        assert_eq!(
            MalformedTimeout.to_problem().to_json(),
            bytes::Bytes::from_static(
                br#"{"type":"urn:palisade:problem:malformed-timeout","title":"Malformed timeout","status":400,"detail":"The request's timeout header is not in its format."}"#
            )
        );
    }

    #[test]
    fn deadline_exceeded_is_a_504_problem() {
        let p = DeadlineExceeded.to_problem();
        assert_eq!(p.status(), 504);
        assert_eq!(
            p.to_json(),
            bytes::Bytes::from_static(
                br#"{"type":"urn:palisade:problem:deadline-exceeded","title":"Deadline exceeded","status":504,"detail":"The request's time budget ran out before it was answered."}"#
            )
        );
    }

    #[test]
    fn instance_and_extensions_are_top_level_members_after_the_standard_ones() {
        let p = Problem::new(StatusCode::FORBIDDEN)
            .with_type("https://example.com/probs/out-of-credit")
            .with_title("You do not have enough credit.")
            .with_detail("Your current balance is 30, but that costs 50.")
            .with_instance("/account/12345/msgs/abc")
            .with_extension("balance", 30)
            .unwrap()
            .with_extension("accounts", ["/account/12345", "/account/67890"])
            .unwrap()
            .with_extension("balance", 31)
            .unwrap();
        assert_eq!(
            p.to_json(),
            Bytes::from_static(
                br#"{"type":"https://example.com/probs/out-of-credit","title":"You do not have enough credit.","status":403,"detail":"Your current balance is 30, but that costs 50.","instance":"/account/12345/msgs/abc","accounts":["/account/12345","/account/67890"],"balance":31}"#
            )
        );
        assert_eq!(p.instance(), Some("/account/12345/msgs/abc"));
        assert_eq!(p.extension("balance"), Some(&serde_json::json!(31)));
        assert_eq!(p.extensions().count(), 2);
        // Small enough to be returned as an `Err` by value.
        assert!(
            std::mem::size_of::<Problem>() <= 112,
            "{}",
            std::mem::size_of::<Problem>()
        );
    }

    #[test]
    fn extensions_never_take_a_standard_member_name() {
        for name in STANDARD_MEMBERS {
            let err = Problem::new(StatusCode::BAD_REQUEST)
                .with_extension(name, "spoofed")
                .unwrap_err();
            assert!(
                matches!(&err, ExtensionError::Reserved(n) if n == name),
                "{name}: {err:?}"
            );
        }
        // A name differing only in case is another member in JSON: allowed.
        let p = Problem::new(StatusCode::BAD_REQUEST)
            .with_extension("Status", 1)
            .unwrap();
        assert_eq!(
            p.to_json(),
            Bytes::from_static(br#"{"type":"about:blank","title":"Bad Request","status":400,"Status":1}"#)
        );
    }

    #[test]
    fn an_extension_that_is_not_json_is_refused() {
        let mut map = std::collections::HashMap::new();
        map.insert((1, 2), "tuple keys are not JSON object keys");
        let err = Problem::new(StatusCode::BAD_REQUEST)
            .with_extension("map", map)
            .unwrap_err();
        assert!(matches!(err, ExtensionError::Value(_)));
        assert!(err.source().is_some());
    }

    #[cfg(feature = "axum")]
    #[tokio::test]
    async fn axum_handlers_return_problems_and_rejections() {
        use axum::{Router, routing::get};
        use tower::ServiceExt;

        async fn handler() -> Result<&'static str, Problem> {
            Err(Problem::new(StatusCode::CONFLICT)
                .with_instance("/orders/7")
                .with_retry_after(Duration::from_millis(1_500))
                .with_extension("order_id", 7)
                .unwrap())
        }
        async fn rejected() -> Result<&'static str, CircuitOpen> {
            Err(CircuitOpen::new("payments", Duration::from_secs(4)))
        }
        async fn late() -> Result<&'static str, DeadlineExceeded> {
            Err(DeadlineExceeded)
        }
        let app = Router::new()
            .route("/p", get(handler))
            .route("/r", get(rejected))
            .route("/d", get(late));
        let res = app
            .clone()
            .oneshot(http::Request::get("/d").body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 504);
        assert_eq!(res.headers()["content-type"], CONTENT_TYPE);

        let res = app
            .clone()
            .oneshot(http::Request::get("/p").body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 409);
        assert_eq!(res.headers()["content-type"], CONTENT_TYPE);
        assert_eq!(res.headers()["retry-after"], "2");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"type": "about:blank", "title": "Conflict", "status": 409, "instance": "/orders/7", "order_id": 7})
        );

        let res = app
            .oneshot(http::Request::get("/r").body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()["retry-after"], "4");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["type"], types::CIRCUIT_OPEN);
    }
}
