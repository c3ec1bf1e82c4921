//! [`Measured`]: a store operation bounded by the store timeout, its duration
//! recorded in `palisade_idempotency_store_duration_seconds`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use metrics::Histogram;
use palisade_core::timed::{Timed, TimedOut};
use pin_project_lite::pin_project;
use tokio::time::Instant;

pin_project! {
    /// A store operation: [`Timed`], and timed into its histogram when it
    /// ends, failed or timed out included. Dropped before it ends, it records
    /// nothing.
    #[derive(Debug)]
    pub(crate) struct Measured<F> {
        #[pin]
        future: Timed<F>,
        started: Instant,
        histogram: Histogram,
    }
}

impl<F> Measured<F> {
    /// `future`, bounded by `timeout`, recorded in `histogram` (a clone of a
    /// handle registered at build: no lookup, no allocation).
    pub(crate) fn new(future: F, timeout: Duration, histogram: &Histogram) -> Self {
        Self {
            future: Timed::new(future, timeout),
            started: Instant::now(),
            histogram: histogram.clone(),
        }
    }

    /// Starts the store timeout afresh (see [`Timed::restart`]).
    pub(crate) fn restart(self: Pin<&mut Self>) {
        self.project().future.restart();
    }
}

impl<F, T, E> Future for Measured<F>
where
    F: Future<Output = Result<T, E>>,
    E: From<TimedOut>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = ready!(this.future.poll(cx));
        this.histogram.record(this.started.elapsed());
        Poll::Ready(output)
    }
}
