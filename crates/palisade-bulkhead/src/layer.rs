//! The bulkhead layers and their builder.

use palisade_core::events::{EventHook, LayerEvent};
use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::time::Duration;

use palisade_core::ErrorClassifier;
use tower_layer::Layer;

use crate::compartments::Compartments;
use crate::error::ConfigError;
use crate::gate::{Gate, GateMetrics, Settings};
use crate::handle::{BulkheadHandle, KeyedBulkheadHandle};
use crate::limit::{Limit, LimitConfig, MAX_COUNT};
use crate::release::{OnBodyEnd, OnResponse};
use crate::service::{Bulkhead, KeyedBulkhead};
use crate::sync::Arc;

/// Configures a bulkhead; [`build`](BulkheadBuilder::build) makes one compartment,
/// [`build_keyed`](BulkheadBuilder::build_keyed) one per key.
///
/// Defaults: `max_concurrent` 10, `max_queued` 0 (reject at once when every
/// permit is taken, which is what a server that sheds load wants),
/// `max_wait` unbounded (only matters with a queue), `retry_after` 1 s,
/// `max_keys` 1024, [`ErrorClassifier`], permit released with the response.
#[derive(Debug, Clone)]
pub struct BulkheadBuilder<C = ErrorClassifier, M = OnResponse> {
    name: std::sync::Arc<str>,
    limit: LimitConfig,
    max_queued: usize,
    max_wait: Option<Duration>,
    retry_after: Duration,
    max_keys: usize,
    events: EventHook,
    classifier: C,
    release: PhantomData<fn() -> M>,
}

impl BulkheadBuilder {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            limit: LimitConfig::Fixed(10),
            max_queued: 0,
            max_wait: None,
            retry_after: Duration::from_secs(1),
            max_keys: 1024,
            events: EventHook::none(),
            classifier: ErrorClassifier,
            release: PhantomData,
        }
    }
}

impl<C, M> BulkheadBuilder<C, M> {
    /// At most this many calls in flight (a fixed limit; default 10).
    pub fn max_concurrent(mut self, limit: usize) -> Self {
        self.limit = LimitConfig::Fixed(limit);
        self
    }

    /// Lets `limit` set the concurrency limit from observed latency and
    /// failures instead of a fixed `max_concurrent` (see [`Limit`](crate::Limit)).
    /// A keyed bulkhead gives each key its own copy.
    pub fn adaptive<L: Limit + Clone + Sync>(mut self, limit: L) -> Self {
        self.limit = LimitConfig::Adaptive(std::sync::Arc::new(move || Box::new(limit.clone())));
        self
    }

    /// At most this many calls wait for a permit (default 0: reject at once).
    pub fn max_queued(mut self, max_queued: usize) -> Self {
        self.max_queued = max_queued;
        self
    }

    /// A queued call waits at most this long, then fails with
    /// [`BulkheadTimeout`](palisade_core::BulkheadTimeout) (default: no bound).
    /// Needs a Tokio runtime with its timer, as any Tokio sleep does.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// The hint rejections carry, sent as `Retry-After` (default 1 s).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Calls `hook` for every call the bulkhead refuses
    /// ([`LayerEvent::BulkheadRejected`], reason `full` or `timeout`), on
    /// the calling task; see [`palisade_core::events`]. Unset, it costs nothing.
    pub fn on_event(mut self, hook: impl Fn(&LayerEvent<'_>) + Send + Sync + 'static) -> Self {
        self.events = EventHook::new(hook);
        self
    }

    /// A keyed bulkhead keeps at most this many keys (default 1024); see
    /// [`build_keyed`](BulkheadBuilder::build_keyed).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Decides which outcomes an adaptive limit counts as drops (default:
    /// any error). Local rejections of other palisade layers never count.
    pub fn classifier<C2>(self, classifier: C2) -> BulkheadBuilder<C2, M> {
        self.retype(|_| classifier)
    }

    /// Holds each permit until the `http::Response` body has been sent, not
    /// just until the response head is there: streamed responses then count
    /// against the limit while they stream.
    pub fn hold_permit_until_body_end(self) -> BulkheadBuilder<C, OnBodyEnd> {
        self.retype(|classifier| classifier)
    }

    fn retype<C2, M2>(self, classifier: impl FnOnce(C) -> C2) -> BulkheadBuilder<C2, M2> {
        BulkheadBuilder {
            name: self.name,
            limit: self.limit,
            max_queued: self.max_queued,
            max_wait: self.max_wait,
            retry_after: self.retry_after,
            max_keys: self.max_keys,
            events: self.events,
            classifier: classifier(self.classifier),
            release: PhantomData,
        }
    }

    fn settings(&self) -> Result<std::sync::Arc<Settings>, ConfigError> {
        if let LimitConfig::Fixed(limit) = self.limit
            && !(1..=MAX_COUNT).contains(&limit)
        {
            return Err(ConfigError::MaxConcurrent(limit));
        }
        if self.max_queued > MAX_COUNT {
            return Err(ConfigError::MaxQueued(self.max_queued));
        }
        if self.max_wait.is_some_and(|wait| wait.is_zero()) {
            return Err(ConfigError::ZeroMaxWait);
        }
        Ok(std::sync::Arc::new(Settings {
            name: std::sync::Arc::clone(&self.name),
            max_queued: self.max_queued,
            max_wait: self.max_wait,
            retry_after: self.retry_after,
            events: self.events.clone(),
            held_epoch: tokio::time::Instant::now(),
        }))
    }

    /// A layer with one compartment, shared by every service it wraps.
    pub fn build(self) -> Result<BulkheadLayer<C, M>, ConfigError> {
        let settings = self.settings()?;
        let metrics = GateMetrics::register(&self.name);
        let gate = match &self.limit {
            LimitConfig::Fixed(limit) => Gate::new(settings, *limit, None, metrics),
            LimitConfig::Adaptive(make) => Gate::new(settings, 0, Some(make()), metrics),
        };
        Ok(BulkheadLayer {
            gate: Arc::new(gate),
            classifier: self.classifier,
            release: PhantomData,
        })
    }

    /// A layer with one compartment per key, `key(&request)`: each key (a
    /// downstream host, a tenant, a route) gets its own limit and queue.
    ///
    /// At most `max_keys` keys are kept. When a new key arrives at that bound,
    /// the compartments nobody is using are forgotten; if every one is in
    /// use, the call is rejected with [`BulkheadFull`](palisade_core::BulkheadFull).
    pub fn build_keyed<Req, K, F>(self, key: F) -> Result<KeyedBulkheadLayer<K, F, C, M>, ConfigError>
    where
        F: Fn(&Req) -> K,
        K: Hash + Eq,
    {
        let settings = self.settings()?;
        if self.max_keys == 0 {
            return Err(ConfigError::ZeroMaxKeys);
        }
        let compartments = Compartments::new(settings, self.limit, self.max_keys);
        Ok(KeyedBulkheadLayer {
            compartments: Arc::new(compartments),
            key,
            classifier: self.classifier,
            release: PhantomData,
        })
    }
}

/// Limits the calls in flight through the services it wraps; see the
/// [crate documentation](crate).
///
/// Every service made by one layer shares its compartment: make one layer
/// per dependency or route.
pub struct BulkheadLayer<C = ErrorClassifier, M = OnResponse> {
    gate: Arc<Gate>,
    classifier: C,
    release: PhantomData<fn() -> M>,
}

impl BulkheadLayer {
    /// A builder for a bulkhead called `name` (used in errors, metrics and logs).
    pub fn builder(name: &str) -> BulkheadBuilder {
        BulkheadBuilder::new(name)
    }
}

impl<C, M> BulkheadLayer<C, M> {
    /// A handle reporting the bulkhead's state and resizing its limit.
    pub fn handle(&self) -> BulkheadHandle {
        BulkheadHandle::new(Arc::clone(&self.gate))
    }
}

impl<C: Clone, M> Clone for BulkheadLayer<C, M> {
    fn clone(&self) -> Self {
        Self {
            gate: Arc::clone(&self.gate),
            classifier: self.classifier.clone(),
            release: PhantomData,
        }
    }
}

impl<C, M> fmt::Debug for BulkheadLayer<C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone, M> Layer<S> for BulkheadLayer<C, M> {
    type Service = Bulkhead<S, C, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::new(inner, Arc::clone(&self.gate), self.classifier.clone())
    }
}

/// Limits the calls in flight per key of the request; see
/// [`BulkheadBuilder::build_keyed`].
pub struct KeyedBulkheadLayer<K, F, C = ErrorClassifier, M = OnResponse> {
    compartments: Arc<Compartments<K>>,
    key: F,
    classifier: C,
    release: PhantomData<fn() -> M>,
}

impl<K, F, C, M> KeyedBulkheadLayer<K, F, C, M> {
    /// A handle reporting each key's state and resizing the per-key limit.
    pub fn handle(&self) -> KeyedBulkheadHandle<K> {
        KeyedBulkheadHandle::new(Arc::clone(&self.compartments))
    }
}

impl<K, F: Clone, C: Clone, M> Clone for KeyedBulkheadLayer<K, F, C, M> {
    fn clone(&self) -> Self {
        Self {
            compartments: Arc::clone(&self.compartments),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
            release: PhantomData,
        }
    }
}

impl<K, F, C, M> fmt::Debug for KeyedBulkheadLayer<K, F, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBulkheadLayer")
            .field("compartments", &self.compartments)
            .finish_non_exhaustive()
    }
}

impl<S, K, F: Clone, C: Clone, M> Layer<S> for KeyedBulkheadLayer<K, F, C, M> {
    type Service = KeyedBulkhead<S, K, F, C, M>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedBulkhead::new(
            inner,
            Arc::clone(&self.compartments),
            self.key.clone(),
            self.classifier.clone(),
        )
    }
}
