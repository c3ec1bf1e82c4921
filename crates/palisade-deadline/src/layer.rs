//! [`DeadlineLayer`] (server) and [`PropagateDeadlineLayer`] (client), and
//! their builders.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use palisade_core::deadline::REQUEST_TIMEOUT_MS;
use tower_layer::Layer;

use crate::error::ConfigError;
use crate::service::{PropagateDeadline, SetDeadline};
use crate::state::{Client, Server, exceeded_counter, malformed_counter};

/// The default cap on a caller's budget: 5 minutes.
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// The default margin kept from the remaining budget for the answer to come
/// back: 10 ms.
pub const DEFAULT_MARGIN: Duration = Duration::from_millis(10);

/// Sets each request's total budget at the edge: the shortest of the
/// configured [`timeout`](DeadlineBuilder::timeout), the caller's
/// `grpc-timeout` and the caller's HTTP header, each capped at
/// [`max_timeout`](DeadlineBuilder::max_timeout). Makes a [`SetDeadline`].
///
/// Built by [`DeadlineLayer::builder`]; clones share one configuration.
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    shared: Arc<Server>,
}

impl DeadlineLayer {
    /// A builder for a layer named `name` (the `name` label of its metrics).
    pub fn builder(name: &str) -> DeadlineBuilder {
        DeadlineBuilder {
            name: name.into(),
            timeout: None,
            max_timeout: DEFAULT_MAX_TIMEOUT,
            header: Some(REQUEST_TIMEOUT_MS),
            grpc_timeout: true,
        }
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = SetDeadline<S>;

    fn layer(&self, inner: S) -> SetDeadline<S> {
        SetDeadline::new(inner, self.shared.clone())
    }
}

/// Configures a [`DeadlineLayer`].
///
/// Defaults: no budget of its own (only the caller's headers set one),
/// `max_timeout` 5 minutes, the HTTP header `x-request-timeout-ms`, and
/// `grpc-timeout` read.
#[derive(Debug, Clone)]
pub struct DeadlineBuilder {
    name: Arc<str>,
    timeout: Option<Duration>,
    max_timeout: Duration,
    header: Option<HeaderName>,
    grpc_timeout: bool,
}

impl DeadlineBuilder {
    /// The budget every request gets at most (default: none, so only a
    /// caller's header sets one).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The cap on a budget a caller asks for (default 5 minutes): a larger
    /// `grpc-timeout` or header value is cut to it.
    pub fn max_timeout(mut self, max_timeout: Duration) -> Self {
        self.max_timeout = max_timeout;
        self
    }

    /// The HTTP header a caller's budget is read from, in whole
    /// milliseconds (default `x-request-timeout-ms`).
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = Some(header);
        self
    }

    /// Reads no HTTP header: only `grpc-timeout` and the configured budget count.
    pub fn no_header(mut self) -> Self {
        self.header = None;
        self
    }

    /// Whether a caller's `grpc-timeout` is read (default true).
    pub fn grpc_timeout(mut self, read: bool) -> Self {
        self.grpc_timeout = read;
        self
    }

    /// The layer, or the setting that cannot work.
    pub fn build(self) -> Result<DeadlineLayer, ConfigError> {
        if self.max_timeout.is_zero() {
            return Err(ConfigError::ZeroMaxTimeout);
        }
        if let Some(timeout) = self.timeout {
            if timeout.is_zero() {
                return Err(ConfigError::ZeroTimeout);
            }
            if timeout > self.max_timeout {
                return Err(ConfigError::TimeoutOverMax {
                    timeout,
                    max: self.max_timeout,
                });
            }
        }
        let shared = Server {
            exceeded_total: exceeded_counter(&self.name, "server"),
            malformed_grpc_total: malformed_counter(&self.name, "grpc_timeout"),
            malformed_header_total: malformed_counter(&self.name, "header"),
            name: self.name,
            timeout: self.timeout,
            max_timeout: self.max_timeout,
            header: self.header,
            grpc_timeout: self.grpc_timeout,
        };
        Ok(DeadlineLayer {
            shared: Arc::new(shared),
        })
    }
}

/// Bounds each attempt of an outgoing HTTP or gRPC call by the smaller of
/// its own [`timeout`](PropagateDeadlineBuilder::timeout) and what is left
/// of the request's [`Deadline`](palisade_core::deadline::Deadline) less a
/// [`margin`](PropagateDeadlineBuilder::margin), and sends that budget
/// downstream. Makes a [`PropagateDeadline`]; goes inside the retry layer, so
/// each attempt gets what is left.
///
/// Built by [`PropagateDeadlineLayer::builder`]; clones share one configuration.
#[derive(Debug, Clone)]
pub struct PropagateDeadlineLayer {
    shared: Arc<Client>,
}

impl PropagateDeadlineLayer {
    /// A builder for a layer named `name` (the `name` label of its metrics).
    pub fn builder(name: &str) -> PropagateDeadlineBuilder {
        PropagateDeadlineBuilder {
            name: name.into(),
            timeout: None,
            margin: DEFAULT_MARGIN,
            header: Some(REQUEST_TIMEOUT_MS),
            grpc_timeout: true,
        }
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;

    fn layer(&self, inner: S) -> PropagateDeadline<S> {
        PropagateDeadline::new(inner, self.shared.clone())
    }
}

/// Configures a [`PropagateDeadlineLayer`].
///
/// Defaults: no timeout of its own (only the deadline bounds an attempt), a
/// 10 ms margin, the HTTP header `x-request-timeout-ms`, and `grpc-timeout`
/// sent on gRPC requests.
#[derive(Debug, Clone)]
pub struct PropagateDeadlineBuilder {
    name: Arc<str>,
    timeout: Option<Duration>,
    margin: Duration,
    header: Option<HeaderName>,
    grpc_timeout: bool,
}

impl PropagateDeadlineBuilder {
    /// Each attempt's own timeout, used when it is shorter than what the
    /// deadline leaves (default: none). Such a timeout fails the attempt
    /// with tower's `Elapsed`, which the retry policy may retry; running out
    /// of the deadline fails it with `DeadlineExceeded`, which it does not.
    /// At least a millisecond while the HTTP header is sent (see
    /// [`no_header`](Self::no_header)).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The time kept from the remaining budget for the answer to travel back
    /// and be handled (default 10 ms).
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// The HTTP header the budget is sent in, in whole milliseconds
    /// (default `x-request-timeout-ms`).
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = Some(header);
        self
    }

    /// Sends no HTTP header (gRPC requests still get `grpc-timeout`).
    pub fn no_header(mut self) -> Self {
        self.header = None;
        self
    }

    /// Whether gRPC requests get `grpc-timeout` (default true).
    pub fn grpc_timeout(mut self, send: bool) -> Self {
        self.grpc_timeout = send;
        self
    }

    /// The layer, or the setting that cannot work.
    pub fn build(self) -> Result<PropagateDeadlineLayer, ConfigError> {
        match self.timeout {
            Some(timeout) if timeout.is_zero() => return Err(ConfigError::ZeroTimeout),
            // The header says whole milliseconds: less is said as zero, which
            // a downstream answers as exceeded, so no such attempt is sent.
            Some(timeout) if self.header.is_some() && timeout < Duration::from_millis(1) => {
                return Err(ConfigError::TimeoutUnderHeaderUnit(timeout));
            }
            _ => {}
        }
        let shared = Client {
            exceeded_total: exceeded_counter(&self.name, "client"),
            name: self.name,
            timeout: self.timeout,
            margin: self.margin,
            header: self.header,
            grpc_timeout: self.grpc_timeout,
        };
        Ok(PropagateDeadlineLayer {
            shared: Arc::new(shared),
        })
    }
}
