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

/// A command to queue: the outbox event the relay will deliver, and the URL
/// the client can poll for the work's status.
#[derive(Debug, Clone)]
pub struct Queued {
    event: Event,
    status_url: String,
}

impl Queued {
    /// Queues `event`; the answer points the client at `status_url`.
    pub fn new(event: Event, status_url: impl Into<String>) -> Self {
        Self {
            event,
            status_url: status_url.into(),
        }
    }
}

type Command<Res> = dyn Fn(&Failure<Res>) -> Option<Queued> + Send + Sync;

/// A fallback that queues the failed request's work for later: `command`
/// turns the [`Failure`] into a [`Queued`] command (or `None` to decline),
/// which is staged in the outbox in a transaction of its own on `pool`, and
/// the caller gets `202 Accepted` with `Location: <status_url>` and the
/// body `{"status":"queued","status_url":"<status_url>"}`. The outbox relay
/// delivers the command when it can; its consumer does the work (with the
/// same idempotency key as the first try, so it is done once).
///
/// If staging fails the fallback declines: the caller gets the original
/// failure. Its future is boxed: it runs on the failure path only.
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

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<DB, ResB> Service<Failure<Response<ResB>>> for QueueForLater<DB, Response<ResB>>
where
    DB: sqlx::Database,
    DB::Connection: OutboxConnection,
    ResB: From<Bytes> + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = Failure<Response<ResB>>;
    type Future = BoxFuture<Result<Response<ResB>, Failure<Response<ResB>>>>;

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
            let staged: Result<(), Box<dyn std::error::Error + Send + Sync>> = async {
                let mut tx = pool.begin().await?;
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
            Ok(res)
        })
    }
}
