//! A breaker's state and a snapshot of its figures.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls go through; outcomes are recorded and judged.
    Closed,
    /// Calls fail fast with `CircuitOpen` until the open duration has passed.
    Open,
    /// A limited number of probes go through; the rest fail fast.
    HalfOpen,
    /// Operator state: every call goes through and nothing is recorded.
    Disabled,
    /// Operator state: every call fails fast.
    ForcedOpen,
    /// Operator state: every call goes through; outcomes are recorded and
    /// reported but never open the breaker.
    MetricsOnly,
}

impl State {
    pub(crate) fn bits(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::Disabled => 3,
            State::ForcedOpen => 4,
            State::MetricsOnly => 5,
        }
    }

    pub(crate) fn from_bits(bits: u64) -> Self {
        match bits {
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::Disabled,
            4 => State::ForcedOpen,
            5 => State::MetricsOnly,
            _ => State::Closed,
        }
    }

    /// The state's position in every per-state table: 0 closed, 1 open,
    /// 2 half-open, 3 disabled, 4 forced open, 5 metrics only.
    pub(crate) fn index(self) -> usize {
        self.bits() as usize
    }

    /// The state's name in telemetry: `closed`, `open`, `half_open`, `disabled`,
    /// `forced_open`, `metrics_only`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::Disabled => "disabled",
            State::ForcedOpen => "forced_open",
            State::MetricsOnly => "metrics_only",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A breaker's state at one moment, for health endpoints and dashboards.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The breaker's name.
    pub name: Arc<str>,
    /// Its state.
    pub state: State,
    /// Failed calls in the window, in percent (0 for an empty window or without a rate rule).
    pub failure_rate: f64,
    /// Slow calls in the window, in percent.
    pub slow_call_rate: f64,
    /// Calls the window holds (0 without a rate rule).
    pub calls_in_window: u64,
    /// Failed calls the window holds.
    pub failed_calls: u64,
    /// Slow calls the window holds.
    pub slow_calls: u64,
    /// Failures in a row in the current closed state.
    pub consecutive_failures: u32,
    /// While open, the time until the next call may half-open it.
    pub time_until_half_open: Option<Duration>,
    /// While half-open, the probe slots taken (in flight or succeeded).
    pub half_open_probes: u32,
}

impl serde::Serialize for State {
    /// As its telemetry name: `"closed"`, `"open"`, `"half_open"`, ...
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// For a health endpoint: the fields by name, `state` as its telemetry name
/// and `time_until_half_open` as whole milliseconds (`time_until_half_open_ms`,
/// `null` unless open).
///
/// ```json
/// {"name":"payments","state":"open","failure_rate":100.0,"slow_call_rate":0.0,
///  "calls_in_window":0,"failed_calls":0,"slow_calls":0,"consecutive_failures":5,
///  "time_until_half_open_ms":9500,"half_open_probes":0}
/// ```
impl serde::Serialize for Snapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut map = s.serialize_struct("Snapshot", 10)?;
        map.serialize_field("name", &*self.name)?;
        map.serialize_field("state", &self.state)?;
        map.serialize_field("failure_rate", &self.failure_rate)?;
        map.serialize_field("slow_call_rate", &self.slow_call_rate)?;
        map.serialize_field("calls_in_window", &self.calls_in_window)?;
        map.serialize_field("failed_calls", &self.failed_calls)?;
        map.serialize_field("slow_calls", &self.slow_calls)?;
        map.serialize_field("consecutive_failures", &self.consecutive_failures)?;
        map.serialize_field(
            "time_until_half_open_ms",
            &self
                .time_until_half_open
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )?;
        map.serialize_field("half_open_probes", &self.half_open_probes)?;
        map.end()
    }
}
