//! The hedging layer's settings.

use std::time::Duration;

use palisade_hedge::{ConfigError, HedgeBuilder, HedgeLayer};
use serde::Deserialize;

use super::retry::BudgetSettings;
use super::values::Switch;
use super::{KeyError, LayerSettings};

/// A hedging layer's settings; a missing key keeps the builder's default
/// (see `palisade_hedge`'s docs). The methods hedged, the key header and a
/// predicate are set in code.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HedgeSettings {
    /// Hedge after this fixed delay (instead of a percentile). An instance
    /// setting `delay` or `percentile` takes neither from the default block.
    #[serde(with = "humantime_serde")]
    pub delay: Option<Duration>,
    /// Hedge after a percentile of the latencies seen:
    /// `{ percentile = 0.95, samples = 1000, min_samples = 100 }`.
    pub percentile: Option<PercentileSettings>,
    /// Attempts of a request in flight at most, the original included.
    pub max_attempts: Option<u32>,
    /// A budget of the layer's own, or `"off"`.
    pub budget: Option<Switch<BudgetSettings>>,
    /// Bodies up to this many bytes are kept for hedges.
    pub replay_limit: Option<usize>,
}

/// The latency percentile a hedge waits for.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PercentileSettings {
    /// Strictly between 0 and 1.
    pub percentile: f64,
    /// The latencies kept.
    pub samples: usize,
    /// The latencies seen before the first hedge.
    pub min_samples: usize,
}

impl HedgeSettings {
    pub(super) fn apply(&self, name: &str) -> HedgeBuilder {
        let mut builder = HedgeLayer::builder(name);
        if let Some(delay) = self.delay {
            builder = builder.delay(delay);
        }
        if let Some(p) = self.percentile {
            builder = builder.percentile(p.percentile, p.samples, p.min_samples);
        }
        if let Some(n) = self.max_attempts {
            builder = builder.max_attempts(n);
        }
        match self.budget {
            Some(Switch::Off(_)) => builder = builder.no_budget(),
            // Checked at load time (`check`).
            Some(Switch::On(budget)) => {
                if let Ok(budget) = budget.build() {
                    builder = builder.own_budget(budget);
                }
            }
            None => {}
        }
        if let Some(limit) = self.replay_limit {
            builder = builder.replay_limit(limit);
        }
        builder
    }
}

impl LayerSettings for HedgeSettings {
    const SECTION: &'static str = "hedge";
    const ALTERNATIVES: &'static [&'static [&'static str]] = &[&["delay", "percentile"]];

    fn check(&self, name: &str) -> Result<(), KeyError> {
        if self.delay.is_some() && self.percentile.is_some() {
            return Err((Some("delay"), "set either delay or percentile".into()));
        }
        if let Some(Switch::On(budget)) = &self.budget {
            budget.check()?;
        }
        let key = |error: &ConfigError| match error {
            ConfigError::MaxAttempts(_) => Some("max_attempts"),
            ConfigError::ZeroDelay => Some("delay"),
            ConfigError::Percentile(_) | ConfigError::Samples { .. } => Some("percentile"),
            _ => None,
        };
        self.apply(name).build().map(drop).map_err(|e| (key(&e), e.to_string()))
    }
}
