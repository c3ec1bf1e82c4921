//! A bound on one call to a backing store: a future that takes longer than
//! its bound fails with [`TimedOut`], converted into the caller's own error.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

/// A call did not answer within its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut {
    after: Duration,
}

impl TimedOut {
    /// A call that exceeded `after`.
    pub fn new(after: Duration) -> Self {
        Self { after }
    }

    /// The bound the call exceeded.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no answer within {:?}", self.after)
    }
}

impl std::error::Error for TimedOut {}

pin_project! {
    /// A fallible future bounded by `after`; past it, the future is dropped
    /// and the call fails with the caller's error made from [`TimedOut`].
    ///
    /// The timer starts the first time the future is pending, so a call
    /// that answers at once (an in-memory store) never touches tokio's
    /// timer. Outside a tokio runtime the call is not bounded.
    #[derive(Debug)]
    pub struct Timed<F> {
        #[pin]
        future: F,
        #[pin]
        sleep: Option<Sleep>,
        after: Duration,
    }
}

impl<F: Unpin> Timed<F> {
    /// The bounded future, for a caller that goes away to hand it to a task
    /// of its own (with a bound of that task's).
    pub fn future_mut(self: Pin<&mut Self>) -> &mut F {
        self.project().future.get_mut()
    }
}

impl<F> Timed<F> {
    /// Bounds `future` by `after`.
    pub fn new(future: F, after: Duration) -> Self {
        Self {
            future,
            sleep: None,
            after,
        }
    }

    /// Starts the bound afresh, the next time the future is pending: for a
    /// caller that goes away to hand the future to a task of its own, which
    /// waits a whole bound of its own rather than what the caller left.
    pub fn restart(self: Pin<&mut Self>) {
        self.project().sleep.set(None);
    }
}

impl<F, T, E> Future for Timed<F>
where
    F: Future<Output = Result<T, E>>,
    E: From<TimedOut>,
{
    type Output = Result<T, E>;

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
            Some(Poll::Ready(())) => Poll::Ready(Err(TimedOut { after: *this.after }.into())),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_over_its_bound_fails_as_timed_out() {
        let started = tokio::time::Instant::now();
        let stalled = std::future::pending::<Result<(), TimedOut>>();
        let error = Timed::new(stalled, Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(error.after(), Duration::from_secs(2));
        assert_eq!(error.to_string(), "no answer within 2s");
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_within_its_bound_gives_its_answer() {
        let slow = async {
            tokio::time::sleep(Duration::from_millis(1999)).await;
            Ok::<_, TimedOut>(7)
        };
        assert_eq!(Timed::new(slow, Duration::from_secs(2)).await.unwrap(), 7);
    }

    #[test]
    fn outside_a_runtime_a_call_is_not_bounded() {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut call = std::pin::pin!(Timed::new(
            std::future::pending::<Result<(), TimedOut>>(),
            Duration::ZERO
        ));
        assert!(call.as_mut().poll(&mut cx).is_pending());
    }
}
