//! The built-in simulated payments service. It keeps a provider's rules, so
//! the service's tests meet them, and fails or slows down on demand
//! (`PUT /mode`), so the client stack's layers can be watched at work
//! without a real payments provider:
//!
//! - a charge is made once per `Idempotency-Key`: a repeat with the same body
//!   answers the first charge again, a repeat with another body is a `400`
//!   with `{"error": {"type": "idempotency_error", …}}`;
//! - `POST /refunds` with `{"order_id"}` refunds the charge made for that
//!   order, once (a repeat answers the same refund); `404` when the order was
//!   never charged;
//! - [`Mode::charge_first`] records the charge on arrival, before the
//!   simulated latency: with a long `latency_ms` the charge is made and the
//!   answer comes late, or never.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// How the simulator answers `POST /charges`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mode {
    /// Share of charges answered with `status` instead of succeeding, 0.0–1.0.
    pub failure_rate: f64,
    /// Delay before every answer, in milliseconds.
    pub latency_ms: u64,
    /// The status of a failed charge (default 503, which clients retry; a
    /// 4xx such as 402 is a decline).
    pub status: u16,
    /// Record the charge as soon as it arrives, then wait `latency_ms` and
    /// answer (with `status` at `failure_rate`): the charge is made whatever
    /// the caller sees, as when a provider's answer is lost or late. Default false:
    /// the charge is recorded after the latency, and a failed one is not recorded.
    pub charge_first: bool,
}

impl Default for Mode {
    fn default() -> Self {
        Self {
            failure_rate: 0.0,
            latency_ms: 0,
            status: 503,
            charge_first: false,
        }
    }
}

/// One charge: its id and the body it was first requested with.
#[derive(Debug)]
struct Charge {
    id: String,
    request: serde_json::Value,
}

#[derive(Debug)]
struct SimState {
    mode: Mode,
    /// Charges made, by idempotency key (a charge without a key gets a fresh one).
    charges: HashMap<String, Charge>,
    /// Refunds made, by the refunded charge's id.
    refunds: HashMap<String, String>,
    /// `POST /charges` requests received, failed and repeated ones included.
    requests: u64,
    rng: fastrand::Rng,
}

/// The simulator's shared state; clones share it.
#[derive(Debug, Clone)]
pub struct PaymentsSim {
    state: Arc<Mutex<SimState>>,
}

impl Default for PaymentsSim {
    fn default() -> Self {
        Self::with_seed(fastrand::u64(..))
    }
}

impl PaymentsSim {
    /// A simulator whose failures follow the given random seed.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(SimState {
                mode: Mode::default(),
                charges: HashMap::new(),
                refunds: HashMap::new(),
                requests: 0,
                rng: fastrand::Rng::with_seed(seed),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.lock().mode
    }

    /// Sets the mode; refuses a failure rate outside 0.0–1.0 or a status that is not an error status.
    pub fn set_mode(&self, mode: Mode) -> Result<(), String> {
        if !(0.0..=1.0).contains(&mode.failure_rate) {
            return Err(format!(
                "failure_rate must be within 0.0 and 1.0, not {}",
                mode.failure_rate
            ));
        }
        if !(400..=599).contains(&mode.status) {
            return Err(format!("status must be an error status (400-599), not {}", mode.status));
        }
        self.lock().mode = mode;
        Ok(())
    }

    /// Distinct charges made so far (refunded ones included).
    pub fn charges(&self) -> usize {
        self.lock().charges.len()
    }

    /// Charges refunded so far.
    pub fn refunds(&self) -> usize {
        self.lock().refunds.len()
    }

    /// `POST /charges` requests received so far, failed and repeated ones
    /// included (counted on arrival, before the simulated latency).
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    /// The simulator's routes: `POST /charges`, `GET /charges`, `POST /refunds`,
    /// `GET /mode`, `PUT /mode`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/charges", post(charge).get(count_charges))
            .route("/refunds", post(refund))
            .route("/mode", get(get_mode).put(put_mode))
            .with_state(self.clone())
    }
}

impl SimState {
    /// The charge for `key`: made now, or the one made before with the same
    /// request; `None` when the key was used with another request.
    fn charge(&mut self, key: String, request: serde_json::Value) -> Option<String> {
        match self.charges.get(&key) {
            Some(charge) if charge.request == request => Some(charge.id.clone()),
            Some(_) => None,
            None => {
                let id = format!("ch_{}", uuid::Uuid::now_v7().simple());
                self.charges.insert(
                    key,
                    Charge {
                        id: id.clone(),
                        request,
                    },
                );
                Some(id)
            }
        }
    }
}

async fn charge(State(sim): State<PaymentsSim>, headers: HeaderMap, body: Bytes) -> Response {
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| format!("anonymous-{}", uuid::Uuid::now_v7()), str::to_owned);
    let (mode, recorded) = {
        let mut state = sim.lock();
        state.requests += 1;
        let mode = state.mode;
        let recorded = mode.charge_first.then(|| state.charge(key.clone(), request.clone()));
        (mode, recorded)
    };
    if mode.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(mode.latency_ms)).await;
    }
    let mut state = sim.lock();
    if state.rng.f64() < mode.failure_rate {
        let status = StatusCode::from_u16(mode.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return (
            status,
            Json(json!({ "error": { "type": "simulated", "message": "simulated payment failure" } })),
        )
            .into_response();
    }
    let charged = match recorded {
        Some(recorded) => recorded,
        None => state.charge(key, request.clone()),
    };
    match charged {
        Some(id) => (
            StatusCode::OK,
            Json(json!({ "id": id, "status": "succeeded", "request": request })),
        )
            .into_response(),
        None => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": {
                "type": "idempotency_error",
                "message": "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            } })),
        )
            .into_response(),
    }
}

async fn refund(State(sim): State<PaymentsSim>, body: Bytes) -> Response {
    let order_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|body| body.get("order_id")?.as_str().map(str::to_owned));
    let Some(order_id) = order_id else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": { "type": "invalid_request_error", "message": "order_id is required" } })),
        )
            .into_response();
    };
    let mut state = sim.lock();
    let charge = state
        .charges
        .values()
        .find(|charge| charge.request.get("order_id").and_then(|v| v.as_str()) == Some(&order_id))
        .map(|charge| charge.id.clone());
    let Some(charge) = charge else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": { "type": "invalid_request_error", "message": "no charge for this order" } })),
        )
            .into_response();
    };
    let refund = state
        .refunds
        .entry(charge.clone())
        .or_insert_with(|| format!("re_{}", uuid::Uuid::now_v7().simple()))
        .clone();
    (
        StatusCode::OK,
        Json(json!({ "id": refund, "charge": charge, "status": "succeeded" })),
    )
        .into_response()
}

async fn count_charges(State(sim): State<PaymentsSim>) -> Json<serde_json::Value> {
    Json(json!({ "charges": sim.charges(), "requests": sim.requests(), "refunds": sim.refunds() }))
}

async fn get_mode(State(sim): State<PaymentsSim>) -> Json<Mode> {
    Json(sim.mode())
}

async fn put_mode(State(sim): State<PaymentsSim>, body: Bytes) -> Response {
    let mode = match serde_json::from_slice::<Mode>(&body) {
        Ok(mode) => mode,
        Err(e) => return invalid_mode(format!("invalid mode: {e}")),
    };
    match sim.set_mode(mode) {
        Ok(()) => Json(mode).into_response(),
        Err(e) => invalid_mode(e),
    }
}

fn invalid_mode(detail: String) -> Response {
    palisade::core::problem::Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
        .with_title("Invalid mode")
        .with_detail(detail)
        .into_response()
}
