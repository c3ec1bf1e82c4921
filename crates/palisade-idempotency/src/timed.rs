//! The bound on one store call: a store future that takes longer than the
//! layer's store timeout fails as the store being unavailable.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::error::StoreError;

pin_project! {
    /// A store future bounded by `after`. The timer starts the first time
    /// the store future is pending, so a store that answers at once (the
    /// memory store) never touches tokio's timer. Outside a tokio runtime
    /// the call is not bounded.
    pub(crate) struct Timed<F> {
        #[pin]
        future: F,
        #[pin]
        sleep: Option<Sleep>,
        after: Duration,
    }
}

impl<F> Timed<F> {
    pub(crate) fn new(future: F, after: Duration) -> Self {
        Self {
            future,
            sleep: None,
            after,
        }
    }
}

impl<F, T> Future for Timed<F>
where
    F: Future<Output = Result<T, StoreError>>,
{
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(output);
        }
        if this.sleep.is_none() {
            if tokio::runtime::Handle::try_current().is_err() {
                return Poll::Pending;
            }
            this.sleep.set(Some(tokio::time::sleep(*this.after)));
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(StoreError::timed_out(*this.after))),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StoreErrorKind;

    #[tokio::test(start_paused = true)]
    async fn a_call_over_its_bound_fails_as_timed_out() {
        let started = tokio::time::Instant::now();
        let stalled = std::future::pending::<Result<(), StoreError>>();
        let error = Timed::new(stalled, Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_within_its_bound_gives_its_answer() {
        let slow = async {
            tokio::time::sleep(Duration::from_millis(1999)).await;
            Ok::<_, StoreError>(7)
        };
        assert_eq!(Timed::new(slow, Duration::from_secs(2)).await.unwrap(), 7);
    }
}
