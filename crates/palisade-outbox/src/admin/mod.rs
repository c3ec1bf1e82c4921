//! The operator's operations as an axum router to mount on an admin port (feature `admin`).
//!
//! [`AdminRouter::new`] makes the read-only routes; requeueing and purging are added only when
//! allowed in the builder ([`allow_requeue`](AdminRouter::allow_requeue),
//! [`allow_purge`](AdminRouter::allow_purge)). Without them those routes do not exist: a
//! `POST .../requeue` answers 404 and a `DELETE /dead-letters` 405. The routes call the store's
//! [`OutboxAdmin`](crate::OutboxAdmin) operations, the same the `palisade-outbox`
//! tool runs, and answer JSON in the tool's `--json` form.
//!
//! | route | needs | answer |
//! |---|---|---|
//! | `GET /stats` | | [`Stats`](crate::Stats) |
//! | `GET /dead-letters?destination=D&older_than=7d&limit=100` | | the matching [`DeadLetter`](crate::DeadLetter)s, oldest first (`limit` 1 to 1000, default 100) |
//! | `GET /dead-letters/{id}` | | one [`DeadLetter`](crate::DeadLetter); `id` is its sequence number or event id |
//! | `POST /dead-letters/{id}/requeue` | `allow_requeue` | `{"requeued": 1}` |
//! | `POST /dead-letters/requeue?destination=D&older_than=1h` | `allow_requeue` | `{"requeued": n}`: every dead letter the filter selects (all without one) |
//! | `DELETE /dead-letters?older_than=7d&destination=D` | `allow_purge` | `{"purged": n}`; `older_than` is required |
//!
//! Errors are RFC 9457 `application/problem+json` ([`palisade_core::problem::Problem`]),
//! without internal error text (a failed store is logged under `palisade::outbox`):
//!
//! | status | `type` | when |
//! |---|---|---|
//! | 400 | [`types::INVALID_REQUEST`] | an id that is neither a number nor a UUID, an `older_than` that is no duration, a `limit` out of range or on a requeue or purge, a missing `older_than` on a purge, a query parameter the route does not know (a misspelled filter would select every dead letter) |
//! | 404 | [`types::DEAD_LETTER_NOT_FOUND`] | no dead letter with that id |
//! | 404, 405 | `about:blank` | no such route, or not with this method (a mutating route not allowed) |
//! | 503 | [`types::MISSING_TABLES`] | the database has no outbox tables |
//! | 503 | [`types::STORE_UNAVAILABLE`] | the database failed |
//!
//! Requeues and purges are logged (info, `palisade::outbox`) with what they selected and how
//! many rows they changed. The router has no authentication of its own: serve it on a port
//! only operators reach, or put your authentication layer around it.
//!
//! ```
//! # #[cfg(feature = "sqlite")] mod example {
//! use palisade_outbox::admin::AdminRouter;
//! use palisade_outbox::sqlite::SqliteStore;
//!
//! # #[allow(dead_code)]
//! async fn serve_admin(store: SqliteStore) -> std::io::Result<()> {
//!     let admin = axum::Router::new().nest(
//!         "/outbox",
//!         AdminRouter::new(store).allow_requeue().build(), // no purge over HTTP
//!     );
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:9091").await?;
//!     axum::serve(listener, admin).await
//! }
//! # }
//! # fn main() {}
//! ```

mod problem;
mod router;

pub use problem::types;
pub use router::{AdminRouter, DEFAULT_LIMIT, MAX_LIMIT};
