//! [`HedgeLayer`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Method, Uri};
use palisade_core::HttpClassifier;
use palisade_core::telemetry::{LABEL_NAME, LABEL_WINNER, hedge as names};
use palisade_retry::{DEFAULT_REPLAY_LIMIT, IDEMPOTENCY_KEY, RetryBudget};
use tower_layer::Layer;

use crate::error::ConfigError;
use crate::latency::Window;
use crate::service::Hedge;
use crate::state::{Delay, Predicate, Shared};

/// The most samples a latency window keeps: what it holds is allocated at build.
const MAX_SAMPLES: usize = 1_000_000;

/// Hedges safe HTTP requests: past a delay without an answer, sends another
/// attempt; the first good answer wins. Makes a [`Hedge`].
///
/// Built by [`HedgeLayer::builder`]; clones share one configuration, latency
/// window and budget.
#[derive(Debug)]
pub struct HedgeLayer<C = HttpClassifier> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for HedgeLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl HedgeLayer {
    /// A builder for a layer named `name` (the `name` label of its metrics).
    pub fn builder(name: &str) -> HedgeBuilder {
        HedgeBuilder {
            name: name.into(),
            delay: DelayConfig::Percentile {
                percentile: 0.95,
                samples: 1000,
                min_samples: 100,
            },
            max_attempts: 2,
            budget: Budget::Own(None),
            classifier: HttpClassifier,
            methods: vec![
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::PUT,
                Method::DELETE,
                Method::TRACE,
            ],
            idempotency_key: Some(IDEMPOTENCY_KEY),
            predicate: None,
            replay_limit: DEFAULT_REPLAY_LIMIT,
        }
    }
}

impl<C> HedgeLayer<C> {
    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The retry budget hedges draw on, when one is on.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.shared.budget.as_ref()
    }

    /// The delay a hedge waits for now: the fixed one, or the percentile of
    /// the latencies seen (`None` until enough were seen).
    pub fn current_delay(&self) -> Option<Duration> {
        self.shared.delay()
    }
}

impl<S, C> Layer<S> for HedgeLayer<C> {
    type Service = Hedge<S, C>;

    fn layer(&self, inner: S) -> Hedge<S, C> {
        Hedge::new(inner, self.shared.clone())
    }
}

#[derive(Debug, Clone)]
enum DelayConfig {
    Fixed(Duration),
    Percentile {
        percentile: f64,
        samples: usize,
        min_samples: usize,
    },
}

#[derive(Debug, Clone)]
enum Budget {
    /// `None`: a default budget made by `build`, one per layer.
    Own(Option<RetryBudget>),
    Shared(RetryBudget),
    None,
}

/// Configures a [`HedgeLayer`].
///
/// Defaults: the delay is the 95th percentile of the last 1000 attempts'
/// latencies, once 100 were seen (no hedging before); at most 2 attempts
/// (the original and one hedge); a retry budget of its own with
/// [`RetryBudget`]'s defaults; [`HttpClassifier`] decides what a good answer
/// is; safe requests are those with an idempotent method (GET, HEAD,
/// OPTIONS, PUT, DELETE, TRACE) or an `Idempotency-Key`; bodies up to 64 KiB
/// are replayed.
#[derive(Clone)]
pub struct HedgeBuilder<C = HttpClassifier> {
    name: Arc<str>,
    delay: DelayConfig,
    max_attempts: u32,
    budget: Budget,
    classifier: C,
    methods: Vec<Method>,
    idempotency_key: Option<HeaderName>,
    predicate: Option<Predicate>,
    replay_limit: usize,
}

impl<C: std::fmt::Debug> std::fmt::Debug for HedgeBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HedgeBuilder")
            .field("name", &self.name)
            .field("delay", &self.delay)
            .field("max_attempts", &self.max_attempts)
            .field("budget", &self.budget)
            .field("classifier", &self.classifier)
            .field("methods", &self.methods)
            .field("idempotency_key", &self.idempotency_key)
            .field("predicate", &self.predicate.is_some())
            .field("replay_limit", &self.replay_limit)
            .finish()
    }
}

impl<C> HedgeBuilder<C> {
    /// Hedges after a fixed delay, and again after each further delay.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = DelayConfig::Fixed(delay);
        self
    }

    /// Hedges after the `percentile` (strictly between 0 and 1, default
    /// 0.95) of the latencies of the last `samples` attempts (default 1000,
    /// at most 1,000,000: the window is allocated at build), once at least
    /// `min_samples` (default 100) were seen; no hedge before.
    pub fn percentile(mut self, percentile: f64, samples: usize, min_samples: usize) -> Self {
        self.delay = DelayConfig::Percentile {
            percentile,
            samples,
            min_samples,
        };
        self
    }

    /// At most this many attempts of a request in flight, the original
    /// included (default 2).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Draws hedges on `budget`, shared with the retry layer around this one
    /// (its `budget()`), so hedges and retries together stay within one
    /// share of the traffic. That layer deposits for every request it sends,
    /// so this one only withdraws: each request counts once.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Budget::Shared(budget);
        self
    }

    /// Draws hedges on `budget`, a budget of their own that this layer
    /// deposits every request in (by default a [`RetryBudget::default`]).
    pub fn own_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Budget::Own(Some(budget));
        self
    }

    /// Sends hedges without a budget: only `max_attempts` bounds them.
    pub fn no_budget(mut self) -> Self {
        self.budget = Budget::None;
        self
    }

    /// The methods whose requests may be hedged.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// The header that makes a request of any method safe to hedge (default
    /// `Idempotency-Key`); `None` for none.
    pub fn idempotency_key(mut self, header: Option<HeaderName>) -> Self {
        self.idempotency_key = header;
        self
    }

    /// Decides which requests may be hedged instead of the methods and the
    /// key (for gRPC, whose calls are all POSTs: by path).
    pub fn hedge_if(mut self, predicate: impl Fn(&Method, &Uri, &HeaderMap) -> bool + Send + Sync + 'static) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Bodies up to this many bytes are kept for hedges (default 64 KiB); a
    /// larger body is sent once and not hedged.
    pub fn replay_limit(mut self, limit: usize) -> Self {
        self.replay_limit = limit;
        self
    }

    /// Decides what a good answer is: only a [`Outcome::Success`](palisade_core::Outcome)
    /// wins; a failure waits for the other attempts.
    pub fn classifier<C2>(self, classifier: C2) -> HedgeBuilder<C2> {
        HedgeBuilder {
            name: self.name,
            delay: self.delay,
            max_attempts: self.max_attempts,
            budget: self.budget,
            classifier,
            methods: self.methods,
            idempotency_key: self.idempotency_key,
            predicate: self.predicate,
            replay_limit: self.replay_limit,
        }
    }

    /// The layer, or the setting that cannot work.
    pub fn build(self) -> Result<HedgeLayer<C>, ConfigError> {
        if self.max_attempts < 2 {
            return Err(ConfigError::MaxAttempts(self.max_attempts));
        }
        let delay = match self.delay {
            DelayConfig::Fixed(delay) if delay.is_zero() => return Err(ConfigError::ZeroDelay),
            DelayConfig::Fixed(delay) => Delay::Fixed(delay),
            DelayConfig::Percentile { percentile, .. } if !(percentile > 0.0 && percentile < 1.0) => {
                return Err(ConfigError::Percentile(percentile));
            }
            DelayConfig::Percentile {
                samples, min_samples, ..
            } if samples == 0 || samples < min_samples => return Err(ConfigError::Samples { samples, min_samples }),
            DelayConfig::Percentile { samples, .. } if samples > MAX_SAMPLES => {
                return Err(ConfigError::TooManySamples {
                    samples,
                    max: MAX_SAMPLES,
                });
            }
            DelayConfig::Percentile {
                percentile,
                samples,
                min_samples,
            } => Delay::Percentile(Window::new(percentile, samples, min_samples.max(1))),
        };
        let (budget, deposits) = match self.budget {
            Budget::Own(budget) => (Some(budget.unwrap_or_default()), true),
            Budget::Shared(budget) => (Some(budget), false),
            Budget::None => (None, false),
        };
        let label = self.name.to_string();
        let shared = Shared {
            hedges_total: metrics::counter!(names::HEDGES_TOTAL, LABEL_NAME => label.clone()),
            original_wins_total: metrics::counter!(names::WINS_TOTAL, LABEL_NAME => label.clone(), LABEL_WINNER => "original"),
            hedge_wins_total: metrics::counter!(names::WINS_TOTAL, LABEL_NAME => label.clone(), LABEL_WINNER => "hedge"),
            budget_exhausted_total: metrics::counter!(names::BUDGET_EXHAUSTED_TOTAL, LABEL_NAME => label),
            name: self.name,
            delay,
            max_attempts: self.max_attempts,
            budget,
            deposits,
            classifier: self.classifier,
            methods: self.methods,
            idempotency_key: self.idempotency_key,
            predicate: self.predicate,
            replay_limit: self.replay_limit,
        };
        Ok(HedgeLayer {
            shared: Arc::new(shared),
        })
    }
}
