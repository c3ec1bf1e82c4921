//! [`Scope`]: what keeps one principal's keys apart from another's.

use http::HeaderValue;
use http::request::Parts;

/// Derives a request's scope: the part of the store key that keeps one
/// principal's keys (and responses) apart from another's.
///
/// Implemented for closures `Fn(&http::request::Parts) -> impl AsRef<[u8]>`,
/// for example the authenticated principal an earlier layer put in the
/// request extensions:
///
/// ```
/// # #[derive(Clone)] struct Principal(String);
/// let scope = |parts: &http::request::Parts| {
///     parts.extensions.get::<Principal>().map(|p| p.0.clone()).unwrap_or_default()
/// };
/// let layer = palisade_idempotency::IdempotencyLayer::builder("idempotency").scope(scope).build().unwrap();
/// # let _ = layer;
/// ```
pub trait Scope: Send + Sync + 'static {
    /// The scope's bytes.
    type Output: AsRef<[u8]>;

    /// The scope of a request.
    fn scope(&self, parts: &Parts) -> Self::Output;
}

impl<F, R> Scope for F
where
    F: Fn(&Parts) -> R + Send + Sync + 'static,
    R: AsRef<[u8]>,
{
    type Output = R;

    fn scope(&self, parts: &Parts) -> R {
        self(parts)
    }
}

/// One scope for every request: right only when the service has a single
/// principal, or when an outer layer already separates tenants (keys still
/// differ by method and path).
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalScope;

impl Scope for GlobalScope {
    type Output = [u8; 0];

    fn scope(&self, _parts: &Parts) -> [u8; 0] {
        []
    }
}

/// The scope is the value of one request header, for example an API key:
/// requests with different credentials never share keys. The value only
/// goes into the store key's SHA-256, so credentials are never stored. A
/// request without the header has the empty scope.
///
/// Only for a header that stays the same across a request's retries: a
/// bearer token refreshed between them, or a signature made per request,
/// puts the retry in a scope of its own, where it runs again. Scope those
/// by the principal they authenticate instead.
#[derive(Debug, Clone)]
pub struct HeaderScope(pub http::HeaderName);

impl Scope for HeaderScope {
    type Output = HeaderValue;

    fn scope(&self, parts: &Parts) -> HeaderValue {
        parts
            .headers
            .get(&self.0)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_scope_is_the_header_value_or_empty() {
        let scope = HeaderScope(http::header::AUTHORIZATION);
        let (with, ()) = http::Request::post("/")
            .header("authorization", "Bearer a")
            .body(())
            .unwrap()
            .into_parts();
        let (without, ()) = http::Request::post("/").body(()).unwrap().into_parts();
        assert_eq!(scope.scope(&with).as_bytes(), b"Bearer a");
        assert_eq!(scope.scope(&without).as_bytes(), b"");
    }
}
