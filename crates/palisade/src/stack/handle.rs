//! [`StackHandle`]: one report of every part of a stack, for `/health`.

use std::fmt;
use std::sync::Arc;

use serde_json::{Map, Value};

/// Reports one part's state as JSON; called on every
/// [`StackHandle::snapshot`].
pub type Reporter = Arc<dyn Fn() -> Map<String, Value> + Send + Sync>;

/// Reports the state of every part of a one-call stack as JSON, for a
/// health endpoint. Cheap to clone; reads the parts' own handles, so a
/// snapshot is as fresh as theirs.
///
/// [`snapshot`](StackHandle::snapshot) returns
///
/// ```json
/// {
///   "name": "payments",
///   "layers": [
///     {"layer": "idempotency_key"},
///     {"layer": "retry", "name": "payments", "budget": {"available": 100, "ratio": 0.2, "min_per_sec": 10, "window_ms": 10000}},
///     {"layer": "circuit_breaker", "name": "payments", "state": "closed", "failure_rate": 0.0, ...},
///     {"layer": "bulkhead", "name": "payments", "limit": 100, "in_flight": 0, "queued": 0, "adaptive": false},
///     {"layer": "attempt_timeout", "timeout_ms": 10000}
///   ]
/// }
/// ```
///
/// with the layers outermost first and removed ones left out. Each part's
/// fields are listed in the [module docs](crate::stack#the-handle).
#[derive(Clone)]
pub struct StackHandle {
    name: Arc<str>,
    parts: Arc<[(&'static str, Reporter)]>,
}

impl StackHandle {
    pub(crate) fn new(name: Arc<str>, parts: Vec<(&'static str, Reporter)>) -> Self {
        Self {
            name,
            parts: parts.into(),
        }
    }

    /// The stack's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layers present, outermost first (`"retry"`, `"circuit_breaker"`, ...).
    pub fn layers(&self) -> Vec<&'static str> {
        self.parts.iter().map(|(layer, _)| *layer).collect()
    }

    /// Every part's state now, as JSON (see the type's docs).
    pub fn snapshot(&self) -> Value {
        let layers = self
            .parts
            .iter()
            .map(|(layer, report)| {
                let mut fields = Map::new();
                fields.insert("layer".to_owned(), Value::from(*layer));
                fields.extend(report());
                Value::Object(fields)
            })
            .collect();
        let mut out = Map::new();
        out.insert("name".to_owned(), Value::from(&*self.name));
        out.insert("layers".to_owned(), Value::Array(layers));
        Value::Object(out)
    }
}

impl fmt::Debug for StackHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackHandle")
            .field("name", &self.name)
            .field("layers", &self.layers())
            .finish()
    }
}
