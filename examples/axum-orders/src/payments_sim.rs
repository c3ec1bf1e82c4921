//! The built-in simulated payments service: charges once per `Idempotency-Key`,
//! and fails or slows down on demand (`PUT /mode`), so the client stack's
//! layers can be watched at work without a real payments provider.

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
    /// The status of a failed charge (default 503, which clients retry).
    pub status: u16,
}

impl Default for Mode {
    fn default() -> Self {
        Self {
            failure_rate: 0.0,
            latency_ms: 0,
            status: 503,
        }
    }
}

#[derive(Debug)]
struct SimState {
    mode: Mode,
    /// Charges made, by idempotency key (a charge without a key gets a fresh one).
    charges: HashMap<String, String>,
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

    /// Distinct charges made so far.
    pub fn charges(&self) -> usize {
        self.lock().charges.len()
    }

    /// `POST /charges` requests received so far, failed and repeated ones
    /// included (counted on arrival, before the simulated latency).
    pub fn requests(&self) -> u64 {
        self.lock().requests
    }

    /// The simulator's routes: `POST /charges`, `GET /charges`, `GET /mode`, `PUT /mode`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/charges", post(charge).get(count_charges))
            .route("/mode", get(get_mode).put(put_mode))
            .with_state(self.clone())
    }
}

async fn charge(State(sim): State<PaymentsSim>, headers: HeaderMap, body: Bytes) -> Response {
    let mode = {
        let mut state = sim.lock();
        state.requests += 1;
        state.mode
    };
    if mode.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(mode.latency_ms)).await;
    }
    let mut state = sim.lock();
    if state.rng.f64() < mode.failure_rate {
        let status = StatusCode::from_u16(mode.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return (status, Json(json!({ "error": "simulated payment failure" }))).into_response();
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| format!("anonymous-{}", uuid::Uuid::now_v7()), str::to_owned);
    let fresh = format!("ch_{}", uuid::Uuid::now_v7().simple());
    let charge_id = state.charges.entry(key).or_insert(fresh).clone();
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (
        StatusCode::OK,
        Json(json!({ "id": charge_id, "status": "succeeded", "request": request })),
    )
        .into_response()
}

async fn count_charges(State(sim): State<PaymentsSim>) -> Json<serde_json::Value> {
    Json(json!({ "charges": sim.charges(), "requests": sim.requests() }))
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
    palisade::Problem::new(StatusCode::UNPROCESSABLE_ENTITY)
        .with_title("Invalid mode")
        .with_detail(detail)
        .into_response()
}
