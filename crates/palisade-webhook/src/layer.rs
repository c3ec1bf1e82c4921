//! The verify and sign layers.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use metrics::SharedString;
use tower_layer::Layer;

use crate::error::ConfigError;
use crate::replay::ReplayStore;
use crate::service::{SetMessageId, Sign, Verify};
use crate::sign::Signer;
use crate::state::{Counters, Shared};
use crate::verify::Verifier;

/// The default body limit: 1 MiB, above every major sender's payload cap
/// (GitHub 25 MB is the outlier; raise it for GitHub).
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// The default in-flight lock expiry: 60 s, longer than any sender waits for
/// an answer (Standard Webhooks / Svix 15 s, GitHub 10 s, Shopify 5 s), short
/// enough that a message whose handler died with its process is retried soon.
pub const DEFAULT_LOCK_EXPIRY: Duration = Duration::from_secs(60);
/// The default bound on one replay-store call (claim or accept).
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(3);

/// Verifies inbound webhooks before the handler sees them.
///
/// See the [crate docs](crate) for the full behaviour. Cheap to clone.
#[derive(Clone)]
pub struct VerifyLayer {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for VerifyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &*self.shared;
        f.debug_struct("VerifyLayer")
            .field("name", &&*shared.name)
            .field("verifier", &shared.verifier)
            .field("max_body", &shared.max_body)
            .field("replay", &shared.replay.is_some())
            .field("replay_window", &shared.replay_window)
            .field("lock_expiry", &shared.lock_expiry)
            .field("store_timeout", &shared.store_timeout)
            .finish()
    }
}

impl VerifyLayer {
    /// A layer with the defaults: 1 MiB body limit, no replay protection,
    /// named after the scheme.
    pub fn new(verifier: Verifier) -> Self {
        Self::builder(verifier).build_defaults()
    }

    /// Configures a layer around `verifier`.
    pub fn builder(verifier: Verifier) -> VerifyBuilder {
        VerifyBuilder {
            verifier,
            max_body: DEFAULT_MAX_BODY,
            replay: None,
            replay_window: None,
            lock_expiry: DEFAULT_LOCK_EXPIRY,
            store_timeout: DEFAULT_STORE_TIMEOUT,
            name: None,
        }
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.shared.verifier
    }
}

impl<S> Layer<S> for VerifyLayer {
    type Service = Verify<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Verify::new(inner, self.shared.clone())
    }
}

/// Configures a [`VerifyLayer`].
pub struct VerifyBuilder {
    verifier: Verifier,
    max_body: usize,
    replay: Option<Arc<dyn ReplayStore>>,
    replay_window: Option<Duration>,
    lock_expiry: Duration,
    store_timeout: Duration,
    name: Option<String>,
}

impl fmt::Debug for VerifyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyBuilder")
            .field("verifier", &self.verifier)
            .field("max_body", &self.max_body)
            .field("replay", &self.replay.is_some())
            .field("replay_window", &self.replay_window)
            .field("lock_expiry", &self.lock_expiry)
            .field("store_timeout", &self.store_timeout)
            .field("name", &self.name)
            .finish()
    }
}

impl VerifyBuilder {
    /// The largest body read (default 1 MiB). Longer bodies are answered 413
    /// without reading the rest.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Turns on replay protection with `store`.
    pub fn replay_store(mut self, store: impl ReplayStore) -> Self {
        self.replay = Some(Arc::new(store));
        self
    }

    /// How long an accepted message is remembered. Default: 3 days for
    /// schemes that sign a timestamp, whose senders sign every retry anew
    /// with the same id (Stripe retries for up to 3 days, Svix for more than
    /// a day): a captured message fails the timestamp check after the
    /// tolerance, but a retry whose first 2xx was lost comes back fresh; 24
    /// hours for schemes that sign no timestamp (GitHub, Shopify), whose
    /// senders redeliver for about that long. For a scheme that signs a
    /// timestamp it must be at least twice the verifier's tolerance and a
    /// second (a message stays fresh from `tolerance` before its timestamp
    /// to the last whole second `tolerance` after it), which `build()`
    /// checks; the default grows to it.
    pub fn replay_window(mut self, window: Duration) -> Self {
        self.replay_window = Some(window);
        self
    }

    /// How long a message stays marked in flight when nothing ends its
    /// handling (default [`DEFAULT_LOCK_EXPIRY`], 60 s): the process died, or
    /// the store could not be told. Until then its redeliveries are answered
    /// 409; after it, the next one reaches the handler. Set it above the
    /// longest time your handler runs: a handler still running past it may
    /// run alongside a redelivery.
    pub fn lock_expiry(mut self, expiry: Duration) -> Self {
        self.lock_expiry = expiry;
        self
    }

    /// How long one replay-store call may take (default
    /// [`DEFAULT_STORE_TIMEOUT`], 3 s). A store connection that stays open
    /// while no answer comes back would otherwise hold the delivery forever.
    /// A claim over the bound answers 503 with `Retry-After` and the handler
    /// is not called; an acceptance over it is treated as a failed
    /// acceptance: the handler's answer goes out and the in-flight mark stays
    /// until the lock expiry (or the late write lands).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// The instance name in metrics and logs (default: the scheme's label).
    /// A name also scopes the layer's replay keys: layers sharing a replay
    /// store (one per tenant, or two senders numbering their messages alike)
    /// need names of their own, or a message of one with the id of a message
    /// of the other is taken for its redelivery.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// A zero body limit, replay window or lock expiry (under one second),
    /// a zero store timeout, or, for a scheme that signs a timestamp, a
    /// replay window shorter than twice the verifier's tolerance.
    pub fn build(self) -> Result<VerifyLayer, ConfigError> {
        if self.max_body == 0 {
            return Err(ConfigError::ZeroBodyLimit);
        }
        if self.replay_window.is_some_and(|w| w.as_secs() == 0) {
            return Err(ConfigError::ZeroReplayWindow);
        }
        if let Some(window) = self.replay_window
            && let Some(needed) = self.freshness()
            && window < needed
        {
            return Err(ConfigError::ReplayWindowShorterThanFreshness { window, needed });
        }
        if self.lock_expiry.as_secs() == 0 {
            return Err(ConfigError::ZeroLockExpiry);
        }
        if self.store_timeout.is_zero() {
            return Err(ConfigError::ZeroStoreTimeout);
        }
        Ok(self.build_defaults())
    }

    /// How long a message can stay fresh after it was accepted, when the
    /// scheme signs a timestamp: from `tolerance` before its timestamp to
    /// the end of the whole second `tolerance` after it (the clock is read
    /// in whole seconds). The replay window must cover it.
    fn freshness(&self) -> Option<Duration> {
        self.verifier.signs_timestamp().then(|| {
            self.verifier
                .tolerance()
                .saturating_mul(2)
                .saturating_add(Duration::from_secs(1))
        })
    }

    fn build_defaults(self) -> VerifyLayer {
        let freshness = self.freshness();
        let verifier = self.verifier;
        let replay_window = self.replay_window.unwrap_or_else(|| match freshness {
            Some(freshness) => Duration::from_secs(3 * 24 * 60 * 60).max(freshness),
            None => Duration::from_secs(24 * 60 * 60),
        });
        let replay_scope = self.name.as_deref().map(Box::from);
        let name = match self.name {
            Some(name) => SharedString::from_shared(Arc::<str>::from(name)),
            None => SharedString::const_str(verifier.scheme().as_str()),
        };
        let counters = Counters::new(&name, verifier.scheme());
        VerifyLayer {
            shared: Arc::new(Shared {
                verifier,
                max_body: self.max_body,
                replay: self.replay,
                replay_window,
                lock_expiry: self.lock_expiry,
                store_timeout: self.store_timeout,
                name,
                replay_scope,
                counters,
            }),
        }
    }
}

/// Signs outbound webhook requests: reads the body, signs it, and sends the
/// request on with the scheme's headers and the same bytes.
///
/// For senders that do not use tower, [`Signer::sign`] does the same on a
/// header map and a byte slice.
#[derive(Debug, Clone)]
pub struct SignLayer {
    signer: Signer,
}

impl SignLayer {
    /// A layer signing with `signer`.
    pub fn new(signer: Signer) -> Self {
        Self { signer }
    }
}

/// [`SignLayer::new`]: so `ServiceBuilder` methods take the signer itself.
impl From<Signer> for SignLayer {
    fn from(signer: Signer) -> Self {
        Self::new(signer)
    }
}

/// A [`Layer`] that gives each outbound webhook request a message id (the
/// scheme's id header: `webhook-id`, `X-GitHub-Delivery`, ...) from the
/// signer's id generator, unless it has one; nothing for schemes without an
/// id header.
///
/// Put it outside the retry layer, with [`SignLayer`] inside: a retry sends
/// a copy of the request as it was before its first attempt, so an id added
/// by the `SignLayer` alone would be new on every attempt, and the receiver,
/// which drops a message whose id it has accepted, would take a retry of a
/// delivery whose answer was lost for a new message.
#[derive(Debug, Clone)]
pub struct SetMessageIdLayer {
    signer: Signer,
}

impl SetMessageIdLayer {
    /// A layer making ids with `signer`'s id generator, in its scheme's header.
    pub fn new(signer: Signer) -> Self {
        Self { signer }
    }
}

impl<S> Layer<S> for SetMessageIdLayer {
    type Service = SetMessageId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetMessageId::new(inner, self.signer.clone())
    }
}

/// [`VerifyLayer::new`], the defaults: so `ServiceBuilder` methods take the
/// verifier itself.
impl From<Verifier> for VerifyLayer {
    fn from(verifier: Verifier) -> Self {
        Self::new(verifier)
    }
}

impl<S> Layer<S> for SignLayer {
    type Service = Sign<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Sign::new(inner, self.signer.clone())
    }
}
