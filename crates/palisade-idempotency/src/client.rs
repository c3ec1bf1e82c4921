//! The client side: [`SetIdempotencyKeyLayer`] gives every non-idempotent
//! outbound request an `Idempotency-Key`, so a retry layer inside it may
//! resend the request safely.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, HeaderValue, Method, Request};
use tower_layer::Layer;
use tower_service::Service;

type KeyFn = dyn Fn() -> HeaderValue + Send + Sync;

/// A new key as an sf-string: a quoted UUIDv7, as the IETF draft's examples write it.
pub fn uuid_v7_key() -> HeaderValue {
    let mut buf = [0_u8; 2 + uuid::fmt::Hyphenated::LENGTH];
    buf[0] = b'"';
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buf[1..=uuid::fmt::Hyphenated::LENGTH]);
    buf[uuid::fmt::Hyphenated::LENGTH + 1] = b'"';
    // A quoted lowercase UUID is visible ASCII, a valid header value.
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
}

struct Config {
    header: HeaderName,
    methods: Vec<Method>,
    make_key: Arc<KeyFn>,
}

/// Adds an `Idempotency-Key` to requests with a non-idempotent method
/// (default POST and PATCH) that do not carry one.
///
/// Put it **outside** the retry layer: it runs once per logical request, and
/// every retry then resends the same key, so the server replays instead of
/// acting twice (and `palisade-retry` treats a request with a key as safe to
/// retry).
///
/// ```
/// use palisade_idempotency::client::SetIdempotencyKeyLayer;
/// use tower::{Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut client = ServiceBuilder::new()
///     .layer(SetIdempotencyKeyLayer::new())
///     // .layer(retry) .layer(breaker) ...
///     .service_fn(|req: http::Request<()>| async move {
///         Ok::<_, std::convert::Infallible>(req.headers().get("idempotency-key").cloned())
///     });
/// let post = http::Request::post("/orders").body(()).unwrap();
/// let key = client.ready().await.unwrap().call(post).await.unwrap();
/// assert!(key.is_some());
/// let get = http::Request::get("/orders").body(()).unwrap();
/// assert!(client.ready().await.unwrap().call(get).await.unwrap().is_none());
/// # }
/// ```
#[derive(Clone)]
pub struct SetIdempotencyKeyLayer {
    header: HeaderName,
    methods: Vec<Method>,
    make_key: Arc<KeyFn>,
}

impl fmt::Debug for SetIdempotencyKeyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetIdempotencyKeyLayer")
            .field("header", &self.header)
            .field("methods", &self.methods)
            .finish_non_exhaustive()
    }
}

impl Default for SetIdempotencyKeyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl SetIdempotencyKeyLayer {
    /// Keys from [`uuid_v7_key`] in `Idempotency-Key`, for POST and PATCH.
    pub fn new() -> Self {
        Self {
            header: crate::IDEMPOTENCY_KEY,
            methods: vec![Method::POST, Method::PATCH],
            make_key: Arc::new(uuid_v7_key),
        }
    }

    /// The header to set (default `Idempotency-Key`).
    pub fn header_name(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// The methods that get a key (default POST and PATCH).
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// How keys are made (default [`uuid_v7_key`]); deterministic keys make tests reproducible.
    pub fn key_fn(mut self, make_key: impl Fn() -> HeaderValue + Send + Sync + 'static) -> Self {
        self.make_key = Arc::new(make_key);
        self
    }
}

impl<S> Layer<S> for SetIdempotencyKeyLayer {
    type Service = SetIdempotencyKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let config = Config {
            header: self.header.clone(),
            methods: self.methods.clone(),
            make_key: Arc::clone(&self.make_key),
        };
        SetIdempotencyKey {
            inner,
            config: Arc::new(config),
        }
    }
}

/// The service of [`SetIdempotencyKeyLayer`]: adds the key, then calls the
/// inner service; its future is the inner service's own.
#[derive(Clone)]
pub struct SetIdempotencyKey<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for SetIdempotencyKey<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetIdempotencyKey")
            .field("inner", &self.inner)
            .field("header", &self.config.header)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for SetIdempotencyKey<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        let config = &self.config;
        if config.methods.contains(req.method()) && !req.headers().contains_key(&config.header) {
            req.headers_mut().insert(config.header.clone(), (config.make_key)());
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tower::ServiceExt;

    fn echo_key() -> impl Service<Request<()>, Response = Option<HeaderValue>, Error = std::convert::Infallible> + Clone
    {
        tower::service_fn(|req: Request<()>| async move { Ok(req.headers().get("idempotency-key").cloned()) })
    }

    #[test]
    fn default_keys_are_quoted_uuid_v7() {
        let key = uuid_v7_key();
        let s = key.to_str().unwrap();
        assert_eq!(s.len(), 38);
        let uuid = uuid::Uuid::parse_str(s.trim_matches('"')).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
        assert!(crate::key::parse(&key).is_ok());
        assert_ne!(uuid_v7_key(), key);
    }

    #[tokio::test]
    async fn only_non_idempotent_requests_without_a_key_get_one() {
        let counter = Arc::new(AtomicU32::new(0));
        let layer = SetIdempotencyKeyLayer::new().key_fn({
            let counter = Arc::clone(&counter);
            move || HeaderValue::from(counter.fetch_add(1, Ordering::Relaxed))
        });
        let svc = layer.layer(echo_key());
        let call = |req: Request<()>| svc.clone().oneshot(req);

        assert_eq!(call(Request::post("/").body(()).unwrap()).await.unwrap().unwrap(), "0");
        assert_eq!(call(Request::patch("/").body(()).unwrap()).await.unwrap().unwrap(), "1");
        for method in [Method::GET, Method::PUT, Method::DELETE, Method::HEAD, Method::OPTIONS] {
            assert_eq!(
                call(Request::builder().method(method).body(()).unwrap()).await.unwrap(),
                None
            );
        }
        let own = Request::post("/").header("idempotency-key", "mine").body(()).unwrap();
        assert_eq!(call(own).await.unwrap().unwrap(), "mine");
        assert_eq!(counter.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn header_and_methods_are_configurable() {
        let layer = SetIdempotencyKeyLayer::new()
            .header_name(HeaderName::from_static("x-request-key"))
            .methods([Method::PUT])
            .key_fn(|| HeaderValue::from_static("k"));
        let svc = layer.layer(tower::service_fn(|req: Request<()>| async move {
            Ok::<_, std::convert::Infallible>(req.headers().get("x-request-key").cloned())
        }));
        let put = svc.clone().oneshot(Request::put("/").body(()).unwrap()).await.unwrap();
        assert_eq!(put.unwrap(), "k");
        assert_eq!(svc.oneshot(Request::post("/").body(()).unwrap()).await.unwrap(), None);
    }
}
