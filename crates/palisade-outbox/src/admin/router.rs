//! The routes and their builder.

use std::borrow::Cow;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};
use palisade_core::telemetry::outbox as names;
use serde::{Deserialize, Serialize};

use crate::admin::problem::AdminProblem;
use crate::store::admin::{DeadLetterFilter, DeadLetterId, OutboxAdmin};

/// How many dead letters a list returns unless `limit` says otherwise.
pub const DEFAULT_LIMIT: usize = 100;
/// The most dead letters one list returns.
pub const MAX_LIMIT: usize = 1000;

/// Builds the admin routes over a store: read-only unless requeueing or purging is allowed.
///
/// ```
/// # #[cfg(feature = "sqlite")] fn example(store: palisade_outbox::sqlite::SqliteStore) {
/// use palisade_outbox::admin::AdminRouter;
///
/// // On the admin port only: GET /outbox/stats, GET /outbox/dead-letters, ...
/// let admin: axum::Router = axum::Router::new().nest("/outbox", AdminRouter::new(store).allow_requeue().build());
/// # let _ = admin;
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use = "build() makes the router"]
pub struct AdminRouter<S> {
    store: S,
    requeue: bool,
    purge: bool,
}

impl<S: OutboxAdmin> AdminRouter<S> {
    /// The read-only routes over `store`: stats, the dead-letter list and each dead letter.
    pub fn new(store: S) -> Self {
        Self {
            store,
            requeue: false,
            purge: false,
        }
    }

    /// Adds `POST /dead-letters/{id}/requeue` and `POST /dead-letters/requeue` (every dead
    /// letter the query's filter selects).
    pub fn allow_requeue(mut self) -> Self {
        self.requeue = true;
        self
    }

    /// Adds `DELETE /dead-letters?older_than=7d`, which deletes dead letters for good.
    pub fn allow_purge(mut self) -> Self {
        self.purge = true;
        self
    }

    /// The router, to mount (`nest`) on an admin port. Unknown routes answer 404 and known
    /// routes with another method 405, both as problem details.
    pub fn build(self) -> Router {
        let mut list = get(list::<S>);
        if self.purge {
            list = list.delete(purge::<S>);
        }
        let mut router = Router::new()
            .route("/stats", get(stats::<S>))
            .route("/dead-letters", list)
            .route("/dead-letters/{id}", get(show::<S>));
        if self.requeue {
            router = router
                .route("/dead-letters/{id}/requeue", post(requeue_one::<S>))
                .route("/dead-letters/requeue", post(requeue_where::<S>));
        }
        router
            .fallback(|| async { AdminProblem::Status(StatusCode::NOT_FOUND) })
            .method_not_allowed_fallback(|| async { AdminProblem::Status(StatusCode::METHOD_NOT_ALLOWED) })
            .with_state(self.store)
    }
}

/// `value` as a 200 JSON response.
fn json<T: Serialize>(value: &T) -> Response {
    // The admin types serialize to plain JSON; this cannot fail.
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The query of the dead-letter routes. An unknown parameter is refused: a
/// misspelled filter would otherwise select every dead letter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterQuery {
    destination: Option<String>,
    /// `7d`, `12h`, `30m`.
    older_than: Option<String>,
    limit: Option<usize>,
}

impl FilterQuery {
    fn from(query: Result<Query<Self>, QueryRejection>) -> Result<Self, AdminProblem> {
        query
            .map(|Query(query)| query)
            .map_err(|rejection| AdminProblem::Invalid(Cow::Owned(rejection.body_text())))
    }

    fn filter(&self) -> Result<DeadLetterFilter, AdminProblem> {
        let older_than = self
            .older_than
            .as_deref()
            .map(|text| {
                humantime::parse_duration(text).map_err(|error| {
                    AdminProblem::Invalid(Cow::Owned(format!(
                        "older_than {text:?} is no duration like 7d or 12h: {error}"
                    )))
                })
            })
            .transpose()?;
        Ok(DeadLetterFilter {
            destination: self.destination.clone(),
            older_than,
        })
    }

    fn older_than(&self) -> Result<Duration, AdminProblem> {
        self.filter()?.older_than.ok_or(AdminProblem::Invalid(Cow::Borrowed(
            "older_than is required, e.g. older_than=7d",
        )))
    }

    /// The filter of a requeue or a purge, which take every dead letter it
    /// selects: a limit is refused rather than ignored.
    fn bulk_filter(&self) -> Result<DeadLetterFilter, AdminProblem> {
        if self.limit.is_some() {
            return Err(AdminProblem::Invalid(Cow::Borrowed(
                "limit bounds a list only: a requeue or a purge takes every dead letter the filter selects",
            )));
        }
        self.filter()
    }

    fn limit(&self) -> Result<usize, AdminProblem> {
        match self.limit.unwrap_or(DEFAULT_LIMIT) {
            limit @ 1..=MAX_LIMIT => Ok(limit),
            _ => Err(AdminProblem::Invalid(Cow::Owned(format!(
                "limit must be from 1 to {MAX_LIMIT}"
            )))),
        }
    }
}

/// The dead letter's id in the path: a path axum cannot read as text (`%FF`) is refused as
/// every other bad input is, with a problem.
fn id(path: Result<Path<String>, PathRejection>) -> Result<DeadLetterId, AdminProblem> {
    let Path(text) = path.map_err(|rejection| AdminProblem::Invalid(Cow::Owned(rejection.body_text())))?;
    text.parse()
        .map_err(|error: crate::store::admin::InvalidDeadLetterId| AdminProblem::Invalid(Cow::Owned(error.to_string())))
}

async fn stats<S: OutboxAdmin>(State(store): State<S>) -> Result<Response, AdminProblem> {
    Ok(json(&store.stats().await?))
}

async fn list<S: OutboxAdmin>(
    State(store): State<S>,
    query: Result<Query<FilterQuery>, QueryRejection>,
) -> Result<Response, AdminProblem> {
    let query = FilterQuery::from(query)?;
    Ok(json(&store.list_dead(&query.filter()?, query.limit()?).await?))
}

async fn show<S: OutboxAdmin>(
    State(store): State<S>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminProblem> {
    let dead = store.show_dead(id(path)?).await?.ok_or(AdminProblem::NotFound)?;
    Ok(json(&dead))
}

async fn requeue_one<S: OutboxAdmin>(
    State(store): State<S>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, AdminProblem> {
    let id = id(path)?;
    if !store.requeue_dead(id).await? {
        return Err(AdminProblem::NotFound);
    }
    tracing::info!(target: names::TARGET, id = %id, "outbox dead letter requeued through the admin routes");
    Ok(json(&serde_json::json!({ "requeued": 1 })))
}

async fn requeue_where<S: OutboxAdmin>(
    State(store): State<S>,
    query: Result<Query<FilterQuery>, QueryRejection>,
) -> Result<Response, AdminProblem> {
    let filter = FilterQuery::from(query)?.bulk_filter()?;
    let requeued = store.requeue_dead_where(&filter).await?;
    tracing::info!(
        target: names::TARGET, requeued, destination = ?filter.destination, older_than = ?filter.older_than,
        "outbox dead letters requeued through the admin routes"
    );
    Ok(json(&serde_json::json!({ "requeued": requeued })))
}

async fn purge<S: OutboxAdmin>(
    State(store): State<S>,
    query: Result<Query<FilterQuery>, QueryRejection>,
) -> Result<Response, AdminProblem> {
    let query = FilterQuery::from(query)?;
    let filter = DeadLetterFilter {
        older_than: Some(query.older_than()?),
        ..query.bulk_filter()?
    };
    let purged = store.purge_dead(&filter).await?;
    tracing::info!(
        target: names::TARGET, purged, destination = ?filter.destination, older_than = ?filter.older_than,
        "outbox dead letters purged through the admin routes"
    );
    Ok(json(&serde_json::json!({ "purged": purged })))
}
