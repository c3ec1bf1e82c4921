//! [`QueueForLater`]: a ready fallback that stages the work as a command in
//! the outbox and answers `202 Accepted`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use palisade_core::telemetry::fallback as names;
use palisade_outbox::{Event, OutboxConnection, stage};
use tower_service::Service;

use crate::failure::Failure;

/// A command to queue: the outbox event the relay will deliver, the URL
/// the client can poll for the work's status, and optionally an update of the
/// application's own rows committed with it.
///
/// The `202 Accepted` answer carries the `Queued` it staged in its
/// extensions, so code inside the caller (a handler calling a client wrapped
/// in the fallback) tells a queued call from the dependency's own `202`.
#[derive(Debug, Clone)]
pub struct Queued {
    event: Event,
    status_url: String,
    update: Option<Update>,
}

/// A statement run in the command's transaction, with text parameters.
#[derive(Debug, Clone)]
struct Update {
    sql: String,
    params: Vec<String>,
}

impl Queued {
    /// Queues `event`; the answer points the client at `status_url`.
    pub fn new(event: Event, status_url: impl Into<String>) -> Self {
        Self {
            event,
            status_url: status_url.into(),
            update: None,
        }
    }

    /// Runs `sql` in the same transaction, before the command is staged,
    /// with `params` bound as text to `$1`, `$2`, ... (the placeholders
    /// PostgreSQL and SQLite both take). The work's own state then changes
    /// with the command or not at all: `UPDATE orders SET status =
    /// 'payment_queued' WHERE id = $1 AND status = 'new'` leaves no order
    /// marked queued without its command, and no command without its order.
    ///
    /// When the statement changes no row, the work is no longer in a state
    /// to be queued (done meanwhile, or taken by another path): nothing is
    /// staged and the fallback declines, so the caller gets the original
    /// failure.
    pub fn with_update(mut self, sql: impl Into<String>, params: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.update = Some(Update {
            sql: sql.into(),
            params: params.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// The command's outbox event.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// Where the client polls for the work's status (the answer's `Location`).
    pub fn status_url(&self) -> &str {
        &self.status_url
    }
}

/// Why a command was not queued.
#[derive(Debug, thiserror::Error)]
enum NotQueued {
    #[error("the update changed no row: the work is no longer in a state to be queued")]
    Unchanged,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Outbox(#[from] palisade_outbox::OutboxError),
}

type Command<Res> = dyn Fn(&Failure<Res>) -> Option<Queued> + Send + Sync;

/// A fallback that queues the failed request's work for later: `command`
/// turns the [`Failure`] into a [`Queued`] command (or `None` to decline),
/// which is staged in the outbox in a transaction of its own on `pool`, and
/// the caller gets `202 Accepted` with `Location: <status_url>` and the
/// body `{"status":"queued","status_url":"<status_url>"}`. The outbox relay
/// delivers the command when it can; its consumer does the work (with the
/// same idempotency key as the first try, so it is done once: put this
/// layer inside the one that adds the key, and the [`Failure`]'s head carries
/// it for `command` to copy).
///
/// With [`Queued::with_update`] the application's own rows change in the
/// same transaction. If staging fails, or the update changes no row, the
/// fallback declines: the caller gets the original failure. Its future is
/// boxed: it runs on the failure path only.
pub struct QueueForLater<DB: sqlx::Database, Res> {
    pool: sqlx::Pool<DB>,
    command: Arc<Command<Res>>,
}

impl<DB: sqlx::Database, Res> QueueForLater<DB, Res> {
    /// Queues on `pool` what `command` makes of a failure.
    pub fn new(
        pool: sqlx::Pool<DB>,
        command: impl Fn(&Failure<Res>) -> Option<Queued> + Send + Sync + 'static,
    ) -> Self {
        Self {
            pool,
            command: Arc::new(command),
        }
    }
}

impl<DB: sqlx::Database, Res> Clone for QueueForLater<DB, Res> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            command: self.command.clone(),
        }
    }
}

impl<DB: sqlx::Database, Res> fmt::Debug for QueueForLater<DB, Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueForLater").finish_non_exhaustive()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

mod sealed {
    pub trait Sealed {}
}

/// The databases [`QueueForLater`] stages on: SQLite and PostgreSQL, each with
/// its feature. Sealed.
pub trait QueueDatabase: sqlx::Database + sealed::Sealed {
    #[doc(hidden)]
    fn execute_update<'c>(
        conn: &'c mut Self::Connection,
        sql: &'c str,
        params: &'c [String],
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>>;
}

/// Implements [`QueueDatabase`] for `$db`, whose connection is `$conn`.
macro_rules! queue_database {
    ($db:ty, $conn:ty) => {
        impl sealed::Sealed for $db {}
        impl QueueDatabase for $db {
            fn execute_update<'c>(
                conn: &'c mut $conn,
                sql: &'c str,
                params: &'c [String],
            ) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
                Box::pin(async move {
                    let mut query = sqlx::query(sql);
                    for param in params {
                        query = query.bind(param.as_str());
                    }
                    Ok(query.execute(conn).await?.rows_affected())
                })
            }
        }
    };
}

#[cfg(feature = "outbox-sqlite")]
queue_database!(sqlx::Sqlite, sqlx::SqliteConnection);
#[cfg(feature = "outbox-postgres")]
queue_database!(sqlx::Postgres, sqlx::PgConnection);

impl<DB, ResB> Service<Failure<Response<ResB>>> for QueueForLater<DB, Response<ResB>>
where
    DB: QueueDatabase,
    DB::Connection: OutboxConnection,
    ResB: From<Bytes> + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = Failure<Response<ResB>>;
    type Future = BoxFuture<'static, Result<Response<ResB>, Failure<Response<ResB>>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, failure: Failure<Response<ResB>>) -> Self::Future {
        let pool = self.pool.clone();
        let queued = (self.command)(&failure);
        Box::pin(async move {
            let Some(queued) = queued else { return Err(failure) };
            let Ok(location) = HeaderValue::from_str(&queued.status_url) else {
                return Err(failure);
            };
            let staged: Result<(), NotQueued> = async {
                let mut tx = pool.begin().await?;
                if let Some(update) = &queued.update
                    && DB::execute_update(&mut tx, &update.sql, &update.params).await? == 0
                {
                    // Dropping the transaction rolls it back.
                    return Err(NotQueued::Unchanged);
                }
                stage(&mut *tx, &queued.event).await?;
                tx.commit().await?;
                Ok(())
            }
            .await;
            if let Err(e) = staged {
                tracing::warn!(target: names::TARGET, error = %e, "could not queue the command: declining");
                return Err(failure);
            }
            let body = serde_json::json!({"status": "queued", "status_url": queued.status_url});
            let mut res = Response::new(ResB::from(Bytes::from(body.to_string())));
            *res.status_mut() = StatusCode::ACCEPTED;
            res.headers_mut().insert(header::LOCATION, location);
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            res.extensions_mut().insert(queued);
            Ok(res)
        })
    }
}
