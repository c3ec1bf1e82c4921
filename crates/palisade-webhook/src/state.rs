//! What every clone of a verify layer, its services and their futures share:
//! the configuration, the prebuilt counters, and the answers the layer makes
//! itself.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use metrics::{Counter, Key, Label, Metadata, SharedString};
use palisade_core::problem::Problem;
use palisade_core::problem::ToProblem;
use palisade_core::telemetry::{LABEL_NAME, LABEL_OUTCOME, LABEL_SCHEME, webhook};
use palisade_core::timed::Timed;

use crate::error::{Reason, Rejection};
use crate::replay::{ReplayStore, StoreFuture};
use crate::scheme::SchemeKind;
use crate::verify::Verifier;

/// The `Retry-After` of the 409 answered to a delivery whose message is still being handled.
pub const IN_FLIGHT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The problem `type` of the 409 answered while a delivery of the message is being handled.
const IN_FLIGHT_TYPE: &str = "urn:palisade:problem:webhook-in-flight";

/// A verify layer's configuration, behind one `Arc`.
pub(crate) struct Shared {
    pub(crate) verifier: Verifier,
    pub(crate) max_body: usize,
    pub(crate) replay: Option<Arc<dyn ReplayStore>>,
    pub(crate) replay_window: Duration,
    pub(crate) lock_expiry: Duration,
    pub(crate) store_timeout: Duration,
    pub(crate) name: SharedString,
    /// The name given to the layer, which scopes its replay keys.
    pub(crate) replay_scope: Option<Box<str>>,
    pub(crate) counters: Counters,
}

/// `palisade_webhook_verifications_total` by outcome. Each outcome's key is
/// built with the layer, and its counter is registered by the outcome's
/// first occurrence and held from then on, so a request clones no label and
/// outcomes that never happen report no series.
pub(crate) struct Counters {
    verified: LazyCounter,
    duplicate: LazyCounter,
    in_flight: LazyCounter,
    rejected: [LazyCounter; Reason::ALL.len()],
}

/// A counter's key, and the counter once its first increment registered it.
struct LazyCounter {
    key: Key,
    counter: OnceLock<Counter>,
}

impl LazyCounter {
    fn increment(&self) {
        static METADATA: Metadata<'static> = Metadata::new(webhook::TARGET, metrics::Level::INFO, Some(module_path!()));
        self.counter
            .get_or_init(|| metrics::with_recorder(|recorder| recorder.register_counter(&self.key, &METADATA)))
            .increment(1);
    }
}

/// The outcome a request is counted under.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Verified,
    Duplicate,
    InFlight,
    Rejected(Reason),
}

impl Counters {
    pub(crate) fn new(name: &SharedString, scheme: SchemeKind) -> Self {
        let lazy = |outcome: &'static str| LazyCounter {
            key: Key::from_parts(
                webhook::VERIFICATIONS_TOTAL,
                vec![
                    Label::new(LABEL_NAME, name.clone()),
                    Label::from_static_parts(LABEL_SCHEME, scheme.as_str()),
                    Label::from_static_parts(LABEL_OUTCOME, outcome),
                ],
            ),
            counter: OnceLock::new(),
        };
        Self {
            verified: lazy("verified"),
            duplicate: lazy("duplicate"),
            in_flight: lazy("in_flight"),
            rejected: Reason::ALL.map(|reason| lazy(reason.as_str())),
        }
    }

    pub(crate) fn increment(&self, outcome: Outcome) {
        match outcome {
            Outcome::Verified => &self.verified,
            Outcome::Duplicate => &self.duplicate,
            Outcome::InFlight => &self.in_flight,
            Outcome::Rejected(reason) => &self.rejected[reason as usize],
        }
        .increment();
    }
}

/// An answer made by the layer itself.
#[derive(Debug)]
pub(crate) enum Answer {
    Rejected(Rejection),
    /// The message was accepted before: 200, so the sender stops.
    Duplicate,
    /// The message is being handled by another delivery, which may still
    /// fail: 409, so the sender retries.
    InFlight,
}

impl Shared {
    /// Records, on a task of its own and within the store timeout, the
    /// acceptance of a delivery whose caller went away after its handler's
    /// 2xx. Without a runtime it is not recorded, and the in-flight mark
    /// stays until the lock expiry.
    pub(crate) fn accept_elsewhere(&self, accept: StoreFuture<()>) {
        let name = self.name.clone();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(target: webhook::TARGET, name = &*name, "no runtime to record an accepted webhook whose caller went away; its in-flight mark stays until the lock expiry");
            return;
        };
        let accept = Timed::new(accept, self.store_timeout);
        runtime.spawn(async move {
            if let Err(error) = accept.await {
                tracing::warn!(target: webhook::TARGET, name = &*name, %error, "could not record an accepted webhook");
            }
        });
    }

    pub(crate) fn answer<ResBody: From<Bytes>>(&self, answer: Answer) -> Response<ResBody> {
        let scheme = self.verifier.scheme().as_str();
        match answer {
            Answer::Rejected(rejection) => {
                self.counters.increment(Outcome::Rejected(rejection.reason()));
                let reason = rejection.reason().as_str();
                tracing::info!(target: webhook::TARGET, name = &*self.name, scheme, reason, "webhook rejected");
                rejection.to_response()
            }
            Answer::Duplicate => {
                self.counters.increment(Outcome::Duplicate);
                tracing::debug!(target: webhook::TARGET, name = &*self.name, scheme, "webhook already accepted");
                let mut res = Response::new(ResBody::from(Bytes::new()));
                *res.status_mut() = StatusCode::OK;
                res
            }
            Answer::InFlight => {
                self.counters.increment(Outcome::InFlight);
                tracing::debug!(target: webhook::TARGET, name = &*self.name, scheme, "webhook still being handled");
                Problem::new(StatusCode::CONFLICT)
                    .with_type(IN_FLIGHT_TYPE)
                    .with_title("Webhook still being handled")
                    .with_detail("A delivery of this message is still being handled; retry later.")
                    .with_retry_after(IN_FLIGHT_RETRY_AFTER)
                    .into_response()
            }
        }
    }
}
