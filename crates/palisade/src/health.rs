//! A ready-made `/health` fragment: the state of palisade's layers as JSON,
//! built from their handles, so a service does not hand-build it.
//!
//! ```
//! # #[cfg(all(feature = "circuit-breaker", feature = "bulkhead"))] {
//! use palisade::health::Health;
//! use palisade::{bulkhead::BulkheadLayer, circuit_breaker::CircuitBreakerLayer};
//!
//! let breaker = CircuitBreakerLayer::builder("payments").build().unwrap();
//! let bulkhead = BulkheadLayer::builder("payments").max_concurrent(32).build().unwrap();
//! breaker.handle().force_open();
//!
//! let health = Health::new().breaker(&breaker.handle()).bulkhead(&bulkhead.handle());
//! assert_eq!(health.status(), "degraded");
//! let json = health.to_json();
//! assert_eq!(json["breakers"]["payments"]["state"], "forced_open");
//! assert_eq!(json["bulkheads"]["payments"]["limit"], 32);
//! # }
//! ```
//!
//! The fragment is `{"status", "breakers": {name: snapshot}, "bulkheads":
//! {name: snapshot}, "outbox": {"backlog", "publisher"}}`, each snapshot as
//! its `Serialize` implementation writes it. `status` is `"degraded"` while a
//! breaker is open (or forced open) or the outbox's publisher is
//! disconnected, else `"ok"`: palisade's layers keep a service answering in
//! those states, so they are not reasons for a `503`; a service decides that
//! from its own stores.

use serde_json::{Map, Value};

/// The state of palisade's layers, collected from their handles; see the
/// [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct Health {
    degraded: bool,
    breakers: Map<String, Value>,
    bulkheads: Map<String, Value>,
    outbox: Option<Value>,
}

impl Health {
    /// An empty report: `"ok"`, nothing listed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a breaker's snapshot under its name; an open or forced-open
    /// breaker makes the report `"degraded"`.
    #[cfg(feature = "circuit-breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "circuit-breaker")))]
    pub fn breaker(mut self, handle: &palisade_circuit_breaker::CircuitBreakerHandle) -> Self {
        use palisade_circuit_breaker::State;
        let snapshot = handle.snapshot();
        self.degraded |= matches!(snapshot.state, State::Open | State::ForcedOpen);
        self.breakers.insert(snapshot.name.to_string(), to_value(&snapshot));
        self
    }

    /// Adds a bulkhead's snapshot under its name.
    #[cfg(feature = "bulkhead")]
    #[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
    pub fn bulkhead(mut self, handle: &palisade_bulkhead::BulkheadHandle) -> Self {
        let snapshot = handle.snapshot();
        self.bulkheads.insert(snapshot.name.to_string(), to_value(&snapshot));
        self
    }

    /// Adds the outbox: its backlog (`None` when the store did not answer)
    /// and whether the relay's publisher reaches its broker
    /// ([`Relay::publisher_health`](palisade_outbox::Relay::publisher_health));
    /// a disconnected publisher makes the report `"degraded"`.
    #[cfg(feature = "outbox")]
    #[cfg_attr(docsrs, doc(cfg(feature = "outbox")))]
    pub fn outbox(
        mut self,
        backlog: Option<&palisade_outbox::Backlog>,
        publisher: palisade_outbox::PublisherHealth,
    ) -> Self {
        self.degraded |= publisher == palisade_outbox::PublisherHealth::Disconnected;
        self.outbox = Some(serde_json::json!({ "backlog": backlog, "publisher": publisher }));
        self
    }

    /// `"ok"`, or `"degraded"` (see the [module docs](self)).
    pub fn status(&self) -> &'static str {
        if self.degraded { "degraded" } else { "ok" }
    }

    /// The fragment as JSON.
    pub fn to_json(&self) -> Value {
        let mut json = serde_json::json!({
            "status": self.status(),
            "breakers": self.breakers,
            "bulkheads": self.bulkheads,
        });
        if let Some(outbox) = &self.outbox {
            json["outbox"] = outbox.clone();
        }
        json
    }
}

impl serde::Serialize for Health {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// A snapshot's JSON; serialising numbers and strings into a `Value` cannot fail.
#[cfg(any(feature = "circuit-breaker", feature = "bulkhead"))]
fn to_value(snapshot: &impl serde::Serialize) -> Value {
    serde_json::to_value(snapshot).unwrap_or(Value::Null)
}

#[cfg(all(test, feature = "circuit-breaker", feature = "bulkhead", feature = "outbox"))]
mod tests {
    use super::*;
    use palisade_bulkhead::BulkheadLayer;
    use palisade_circuit_breaker::CircuitBreakerLayer;
    use palisade_outbox::{Backlog, PublisherHealth};
    use std::time::Duration;

    #[test]
    fn the_fragment_lists_every_handle_and_says_ok_while_nothing_is_open() {
        let breaker = CircuitBreakerLayer::builder("payments").build().unwrap();
        let bulkhead = BulkheadLayer::builder("db").max_concurrent(8).build().unwrap();
        let backlog = Backlog {
            pending: 3,
            oldest: Some(Duration::from_millis(1_500)),
            dead_lettered: 1,
        };
        let health = Health::new()
            .breaker(&breaker.handle())
            .bulkhead(&bulkhead.handle())
            .outbox(Some(&backlog), PublisherHealth::Connected);
        assert_eq!(health.status(), "ok");
        assert_eq!(
            health.to_json(),
            serde_json::json!({
                "status": "ok",
                "breakers": {"payments": {
                    "name": "payments", "state": "closed", "failure_rate": 0.0, "slow_call_rate": 0.0,
                    "calls_in_window": 0, "failed_calls": 0, "slow_calls": 0, "consecutive_failures": 0,
                    "time_until_half_open_ms": null, "half_open_probes": 0
                }},
                "bulkheads": {"db": {"name": "db", "limit": 8, "in_flight": 0, "queued": 0, "adaptive": false}},
                "outbox": {"backlog": {"pending": 3, "oldest_ms": 1500, "dead_lettered": 1}, "publisher": "connected"}
            })
        );
        assert_eq!(serde_json::to_value(&health).unwrap(), health.to_json());
    }

    #[test]
    fn an_open_breaker_or_a_disconnected_publisher_degrades_it() {
        let breaker = CircuitBreakerLayer::builder("payments").build().unwrap();
        assert_eq!(Health::new().breaker(&breaker.handle()).status(), "ok");
        breaker.handle().force_open();
        assert_eq!(Health::new().breaker(&breaker.handle()).status(), "degraded");
        breaker.handle().disable();
        assert_eq!(Health::new().breaker(&breaker.handle()).status(), "ok");

        let health = Health::new().outbox(None, PublisherHealth::Disconnected);
        assert_eq!(health.status(), "degraded");
        assert_eq!(
            health.to_json()["outbox"],
            serde_json::json!({"backlog": null, "publisher": "disconnected"})
        );
        assert_eq!(
            Health::new().to_json(),
            serde_json::json!({"status": "ok", "breakers": {}, "bulkheads": {}})
        );
    }
}
