//! [`IdempotencyLayer`] and its builder.

use palisade_core::events::{EventHook, LayerEvent};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method, StatusCode};
use tower_layer::Layer;

use crate::disconnect::{self, Complete};
use crate::error::ConfigError;
use crate::scope::{GlobalScope, Scope};
use crate::service::Idempotency;
use crate::state::{Config, Metrics, Shared};
use crate::store::{IdempotencyStore, MemoryStore};

/// The default in-flight lock expiry: a crashed instance frees its keys after this.
pub const DEFAULT_LOCK_EXPIRY: Duration = Duration::from_secs(60);
/// The default retention of stored responses.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// The default cap on a request body read for the fingerprint (1 MiB).
pub const DEFAULT_MAX_REQUEST_BODY: usize = 1024 * 1024;
/// The default cap on a response body stored for replay (1 MiB).
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 1024 * 1024;
/// The default `Retry-After` of a 409 for a request still in flight.
pub const DEFAULT_CONFLICT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The default `Retry-After` of a 503 for a failing store that gives no
/// time of its own (a full memory store gives the time until its oldest
/// record expires).
pub const DEFAULT_UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The default bound on one store call: a store that answers none of
/// `begin`, `complete` or `release` within it is treated as unavailable.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(3);

/// The default of which responses are stored: 2xx and 4xx except 400, 408,
/// 422, 425 and 429. 5xx, 408 (a timeout: tower-http's `TimeoutLayer`
/// answers it), 425 and 429 say "try again", and 400 and 422 say "the
/// request is invalid" (the handler refused it before acting, as Stripe does
/// not store them either), so their key is released and the retry runs.
pub fn default_store_status(status: StatusCode) -> bool {
    (status.is_success() || status.is_client_error())
        && !matches!(
            status,
            StatusCode::BAD_REQUEST
                | StatusCode::REQUEST_TIMEOUT
                | StatusCode::UNPROCESSABLE_ENTITY
                | StatusCode::TOO_EARLY
                | StatusCode::TOO_MANY_REQUESTS
        )
}

/// A [`Layer`] that makes state-changing requests carrying an
/// `Idempotency-Key` run once: see the [crate docs](crate).
///
/// Cheap to clone: every clone (and every service it makes) shares one
/// configuration and one store.
///
/// `D` is the [`disconnect`] policy (default [`Complete`]).
pub struct IdempotencyLayer<St = MemoryStore, Sc = GlobalScope, D = Complete> {
    shared: Arc<Shared<St, Sc>>,
    disconnect: PhantomData<fn() -> D>,
}

impl<St, Sc, D> Clone for IdempotencyLayer<St, Sc, D> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            disconnect: PhantomData,
        }
    }
}

impl<St: fmt::Debug, Sc, D> fmt::Debug for IdempotencyLayer<St, Sc, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("config", &self.shared.config)
            .field("store", &self.shared.store)
            .field("disconnect", &std::any::type_name::<D>())
            .finish_non_exhaustive()
    }
}

impl IdempotencyLayer {
    /// A layer named `idempotency` with every default and a fresh [`MemoryStore`].
    pub fn new() -> Self {
        Self::builder("idempotency").into_layer()
    }

    /// A builder, starting from the defaults. `name` labels the layer's
    /// metrics and logs.
    pub fn builder(name: impl Into<String>) -> IdempotencyBuilder {
        let config = Config {
            name: name.into(),
            methods: vec![Method::POST, Method::PATCH],
            header: crate::IDEMPOTENCY_KEY,
            require_key: false,
            lock_expiry: DEFAULT_LOCK_EXPIRY,
            retention: DEFAULT_RETENTION,
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_response_body: DEFAULT_MAX_RESPONSE_BODY,
            store_status: Box::new(default_store_status),
            store_set_cookie: false,
            fail_open: false,
            conflict_retry_after: DEFAULT_CONFLICT_RETRY_AFTER,
            unavailable_retry_after: DEFAULT_UNAVAILABLE_RETRY_AFTER,
            store_timeout: DEFAULT_STORE_TIMEOUT,
            events: EventHook::none(),
        };
        IdempotencyBuilder {
            config,
            store: MemoryStore::new(),
            scope: GlobalScope,
            disconnect: PhantomData,
        }
    }
}

impl Default for IdempotencyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<St, Sc, D> IdempotencyLayer<St, Sc, D> {
    /// The layer's store.
    pub fn store(&self) -> &St {
        &self.shared.store
    }
}

impl<S, St, Sc, D> Layer<S> for IdempotencyLayer<St, Sc, D> {
    type Service = Idempotency<S, St, Sc, D>;

    fn layer(&self, inner: S) -> Self::Service {
        Idempotency::new(inner, Arc::clone(&self.shared))
    }
}

/// Configures an [`IdempotencyLayer`]; every setting has a default (see the
/// [crate docs](crate#defaults)).
pub struct IdempotencyBuilder<St = MemoryStore, Sc = GlobalScope, D = Complete> {
    config: Config,
    store: St,
    scope: Sc,
    disconnect: PhantomData<fn() -> D>,
}

impl<St: fmt::Debug, Sc, D> fmt::Debug for IdempotencyBuilder<St, Sc, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyBuilder")
            .field("config", &self.config)
            .field("store", &self.store)
            .field("disconnect", &std::any::type_name::<D>())
            .finish_non_exhaustive()
    }
}

impl<St, Sc, D> IdempotencyBuilder<St, Sc, D> {
    /// Where keys and responses live (default: a [`MemoryStore`] of its own).
    pub fn store<T: IdempotencyStore>(self, store: T) -> IdempotencyBuilder<T, Sc, D> {
        IdempotencyBuilder {
            config: self.config,
            store,
            scope: self.scope,
            disconnect: PhantomData,
        }
    }

    /// How a request's scope (principal, tenant) is derived (default:
    /// [`GlobalScope`], one scope for all).
    pub fn scope<T: Scope>(self, scope: T) -> IdempotencyBuilder<St, T, D> {
        IdempotencyBuilder {
            config: self.config,
            store: self.store,
            scope,
            disconnect: PhantomData,
        }
    }

    /// What becomes of a request whose caller goes away after it locked its
    /// key (default [`disconnect::Complete`]: it runs to the end on a task
    /// of its own and its response is stored). [`disconnect::KeepLocked`]
    /// runs it in the response future and leaves the key locked until its
    /// lock expires when that future is dropped; [`disconnect::Release`]
    /// releases the key then. See the [crate docs](crate#disconnects).
    pub fn on_disconnect<P: disconnect::Policy>(self, _policy: P) -> IdempotencyBuilder<St, Sc, P> {
        IdempotencyBuilder {
            config: self.config,
            store: self.store,
            scope: self.scope,
            disconnect: PhantomData,
        }
    }

    /// The methods the layer protects (default POST and PATCH); other
    /// requests pass through untouched.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.config.methods = methods.into_iter().collect();
        self
    }

    /// The key's header (default `Idempotency-Key`).
    pub fn header_name(mut self, header: HeaderName) -> Self {
        self.config.header = header;
        self
    }

    /// Whether a protected request without a key is refused with 400
    /// (default false: it passes through, unprotected).
    pub fn require_key(mut self, require: bool) -> Self {
        self.config.require_key = require;
        self
    }

    /// How long a request holds its key's in-flight lock (default 60 s).
    /// Set it above the longest time the inner service may take, its
    /// response body included (the layer reads it whole before storing it):
    /// after it, another request with the key may take the key over and run
    /// again.
    pub fn lock_expiry(mut self, expiry: Duration) -> Self {
        self.config.lock_expiry = expiry;
        self
    }

    /// How long a stored response is replayed (default 24 h).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.config.retention = retention;
        self
    }

    /// The largest request body read for the fingerprint (default 1 MiB);
    /// a larger one is refused with 413.
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.config.max_request_body = bytes;
        self
    }

    /// The largest response body stored (default 1 MiB); a larger response
    /// is passed through, not stored, and its key released.
    pub fn max_response_body(mut self, bytes: usize) -> Self {
        self.config.max_response_body = bytes;
        self
    }

    /// Which responses are stored, by status (default
    /// [`default_store_status`]: 2xx and 4xx except 400, 408, 422, 425 and 429). A
    /// response not stored releases its key, so the client may retry.
    pub fn store_status(mut self, policy: impl Fn(StatusCode) -> bool + Send + Sync + 'static) -> Self {
        self.config.store_status = Box::new(policy);
        self
    }

    /// Whether `Set-Cookie` headers are stored and replayed (default false:
    /// a session cookie must not be handed to whoever holds the key).
    pub fn store_set_cookie(mut self, store: bool) -> Self {
        self.config.store_set_cookie = store;
        self
    }

    /// Whether a failing store lets requests through unprotected (default
    /// false: they are refused with 503).
    pub fn fail_open(mut self, fail_open: bool) -> Self {
        self.config.fail_open = fail_open;
        self
    }

    /// The `Retry-After` of a 409 for a request still in flight (default 1 s).
    pub fn conflict_retry_after(mut self, after: Duration) -> Self {
        self.config.conflict_retry_after = after;
        self
    }

    /// The `Retry-After` of a 503 for a failing store that gives no time of
    /// its own (default 1 s). A full [`MemoryStore`] gives the time until its
    /// oldest record expires, and that is sent instead.
    pub fn unavailable_retry_after(mut self, after: Duration) -> Self {
        self.config.unavailable_retry_after = after;
        self
    }

    /// How long one store call (`begin`, `complete` or `release`) may take
    /// (default [`DEFAULT_STORE_TIMEOUT`], 3 s). Neither sqlx nor a redis
    /// connection bounds a call by default, so a store whose connection
    /// stalls (open, but no answer) would hold the request forever. A call
    /// over the bound fails like a store failure: a `begin` answers 503 with
    /// `Retry-After` (or passes through with
    /// [`fail_open`](Self::fail_open)); a `complete` leaves the key locked
    /// until its lock expires, as a failed write does; a `release` leaves
    /// the lock to expire. Needs tokio's timer (a runtime with time
    /// enabled); outside a tokio runtime calls are not bounded.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.config.store_timeout = timeout;
        self
    }

    /// Calls `hook` for every replayed response ([`LayerEvent::IdempotencyReplayed`])
    /// and every conflict ([`LayerEvent::IdempotencyConflict`]: `in_flight`, 409, or
    /// `mismatch`, 422), on the calling task; see [`palisade_core::events`].
    /// Unset, it costs nothing.
    pub fn on_event(mut self, hook: impl Fn(&LayerEvent<'_>) + Send + Sync + 'static) -> Self {
        self.config.events = EventHook::new(hook);
        self
    }

    /// The layer, or why the configuration is impossible.
    pub fn build(self) -> Result<IdempotencyLayer<St, Sc, D>, ConfigError> {
        let config = &self.config;
        if config.lock_expiry.is_zero() {
            return Err(ConfigError::ZeroLockExpiry);
        }
        if config.retention.is_zero() {
            return Err(ConfigError::ZeroRetention);
        }
        if config.retention < config.lock_expiry {
            return Err(ConfigError::RetentionShorterThanLock {
                retention: config.retention,
                lock_expiry: config.lock_expiry,
            });
        }
        if config.store_timeout.is_zero() {
            return Err(ConfigError::ZeroStoreTimeout);
        }
        if config.methods.is_empty() {
            return Err(ConfigError::NoMethods);
        }
        Ok(self.into_layer())
    }

    fn into_layer(self) -> IdempotencyLayer<St, Sc, D> {
        let metrics = Metrics::new(&self.config.name);
        let shared = Shared {
            config: self.config,
            store: self.store,
            scope: self.scope,
            metrics,
        };
        IdempotencyLayer {
            shared: Arc::new(shared),
            disconnect: PhantomData,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_settings_fail_to_build() {
        let err = |b: IdempotencyBuilder| b.build().unwrap_err();
        assert_eq!(
            err(IdempotencyLayer::builder("idempotency").lock_expiry(Duration::ZERO)),
            ConfigError::ZeroLockExpiry
        );
        assert_eq!(
            err(IdempotencyLayer::builder("idempotency").retention(Duration::ZERO)),
            ConfigError::ZeroRetention
        );
        assert_eq!(
            err(IdempotencyLayer::builder("idempotency")
                .lock_expiry(Duration::from_secs(10))
                .retention(Duration::from_secs(5))),
            ConfigError::RetentionShorterThanLock {
                retention: Duration::from_secs(5),
                lock_expiry: Duration::from_secs(10)
            }
        );
        assert_eq!(
            err(IdempotencyLayer::builder("idempotency").methods([])),
            ConfigError::NoMethods
        );
        assert_eq!(
            err(IdempotencyLayer::builder("idempotency").store_timeout(Duration::ZERO)),
            ConfigError::ZeroStoreTimeout
        );
        assert!(IdempotencyLayer::builder("idempotency").build().is_ok());
    }

    #[test]
    fn default_policy_stores_2xx_and_4xx_but_not_validation_try_again_or_5xx() {
        for (status, stored) in [
            (200, true),
            (201, true),
            (400, false),
            (404, true),
            (409, true),
            (422, false),
        ] {
            assert_eq!(
                default_store_status(StatusCode::from_u16(status).unwrap()),
                stored,
                "{status}"
            );
        }
        // 408 (tower-http's `TimeoutLayer` answers it) and 425 say "try again" too.
        for status in [101, 302, 408, 425, 429, 500, 502, 503] {
            assert!(!default_store_status(StatusCode::from_u16(status).unwrap()), "{status}");
        }
    }
}
