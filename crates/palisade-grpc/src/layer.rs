//! [`GrpcStatusLayer`] and its builder.

use std::sync::Arc;

use palisade_core::GrpcCode;
use palisade_core::response::ErrorResponse;
use palisade_core::telemetry::{LABEL_NAME, LABEL_REASON, grpc as names};
use tower_layer::Layer;

use crate::error::ConfigError;
use crate::status::{Config, GrpcStatuses, Reason};

/// Answers the errors of the layers inside it (an open breaker, a full
/// bulkhead, a timeout) with trailers-only gRPC statuses; see the
/// [crate docs](crate).
///
/// Put it outermost in a tonic server's stack
/// (`Server::builder().layer(..)`). Clones share one configuration.
#[derive(Debug, Clone)]
pub struct GrpcStatusLayer {
    answer: GrpcStatuses,
}

/// The service of [`GrpcStatusLayer`]: palisade-core's
/// [`ErrorResponse`] answering with [`GrpcStatuses`]; infallible.
pub type GrpcStatusService<S> = ErrorResponse<S, GrpcStatuses>;

impl GrpcStatusLayer {
    /// A builder with the defaults; `name` labels the layer's metrics and logs.
    pub fn builder(name: impl Into<Arc<str>>) -> GrpcStatusBuilder {
        GrpcStatusBuilder {
            name: name.into(),
            bulkhead_code: GrpcCode::Unavailable,
            retry_info: true,
        }
    }
}

impl<S> Layer<S> for GrpcStatusLayer {
    type Service = GrpcStatusService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        palisade_core::response::ErrorResponseLayer::answering(self.answer.clone()).layer(inner)
    }
}

/// Builds a [`GrpcStatusLayer`]; `build()` validates.
#[derive(Debug, Clone)]
pub struct GrpcStatusBuilder {
    name: Arc<str>,
    bulkhead_code: GrpcCode,
    retry_info: bool,
}

impl GrpcStatusBuilder {
    /// The code a full or timed-out bulkhead answers: `UNAVAILABLE` (the
    /// default) or `RESOURCE_EXHAUSTED`; see the crate docs for why.
    pub fn bulkhead_code(mut self, code: GrpcCode) -> Self {
        self.bulkhead_code = code;
        self
    }

    /// Whether a rejection that carries a wait also sends it as a
    /// `google.rpc.RetryInfo` in `grpc-status-details-bin` (default on).
    pub fn retry_info(mut self, on: bool) -> Self {
        self.retry_info = on;
        self
    }

    /// Validates the settings and makes the layer.
    pub fn build(self) -> Result<GrpcStatusLayer, ConfigError> {
        if !matches!(self.bulkhead_code, GrpcCode::Unavailable | GrpcCode::ResourceExhausted) {
            return Err(ConfigError::BulkheadCode(self.bulkhead_code));
        }
        let rejections = Reason::ALL.map(|reason| {
            metrics::counter!(names::REJECTIONS_TOTAL, LABEL_NAME => self.name.to_string(), LABEL_REASON => reason.label())
        });
        Ok(GrpcStatusLayer {
            answer: GrpcStatuses {
                config: Arc::new(Config {
                    name: self.name,
                    bulkhead_code: self.bulkhead_code,
                    retry_info: self.retry_info,
                    rejections,
                }),
            },
        })
    }
}
