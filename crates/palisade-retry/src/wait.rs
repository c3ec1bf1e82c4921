//! [`Wait`]: the wait before a retry.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::budget::Withdrawal;

/// The wait before a retry (the policy's `Policy::Future`).
///
/// Dropping it before the retry is sent (the caller gave up during the
/// backoff) gives the retry it took back to the budget. tower's `Retry`
/// sends the retry once the wait is over; [`Retry`](crate::Retry) keeps the
/// withdrawal until the downstream is ready for the retry too, and gives up
/// the retry if the deadline passes first (tower's `Retry` waits for
/// readiness without a bound).
///
/// The timer is boxed: a retry's response future holds this future inline
/// for every request, so a timer held inline would make each request's future
/// several times larger, retried or not.
pub struct Wait {
    /// `None` when there is neither a backoff to wait nor a deadline to keep
    /// (or no tokio runtime to time a deadline on after a zero backoff).
    timer: Option<Pin<Box<Timer>>>,
    refund: Refund,
}

pin_project! {
    /// The backoff's timer, then, once it is over, the deadline's.
    struct Timer {
        #[pin]
        sleep: Sleep,
        // The nearer of the retry's deadline and the request's own: the
        // retry must be sent before it.
        send_by: Option<Instant>,
        elapsed: bool,
    }
}

impl Wait {
    pub(crate) fn new(wait: Duration, send_by: Option<Instant>, withdrawal: Option<Withdrawal>) -> Self {
        let sleep = if wait.is_zero() {
            // A zero backoff needs no runtime; only a deadline to keep is timed.
            send_by
                .filter(|_| tokio::runtime::Handle::try_current().is_ok())
                .map(|at| (tokio::time::sleep_until(at), true))
        } else {
            Some((tokio::time::sleep(wait), false))
        };
        let timer = sleep.map(|(sleep, elapsed)| {
            Box::pin(Timer {
                sleep,
                send_by,
                elapsed,
            })
        });
        Self {
            timer,
            refund: Refund(withdrawal),
        }
    }

    /// Polls the backoff alone, the withdrawal kept: [`Retry`](crate::Retry)
    /// gives it up only once the retry is sent ([`Wait::sent`]), so a call
    /// dropped while the downstream is not ready for the retry refunds it.
    pub(crate) fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(timer) = &mut self.timer {
            let timer = timer.as_mut().project();
            if !*timer.elapsed {
                ready!(timer.sleep.poll(cx));
                *timer.elapsed = true;
            }
        }
        Poll::Ready(())
    }

    fn send_by(&self) -> Option<Instant> {
        self.timer.as_ref().and_then(|timer| timer.send_by)
    }

    /// Once the backoff is over, while the downstream is not yet ready for
    /// the retry: ready when the deadline the retry must be sent by passes
    /// (the backoff's timer is reused for it), pending forever without one.
    pub(crate) fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(timer) = &mut self.timer else {
            return Poll::Pending;
        };
        let mut timer = timer.as_mut().project();
        let Some(at) = *timer.send_by else {
            return Poll::Pending;
        };
        if timer.sleep.deadline() != at {
            timer.sleep.as_mut().reset(at);
        }
        timer.sleep.poll(cx)
    }

    /// Whether the deadline the retry must be sent by has passed.
    pub(crate) fn past_deadline(&self) -> bool {
        self.send_by().is_some_and(|at| Instant::now() >= at)
    }

    /// The retry was sent: its withdrawal stands.
    pub(crate) fn sent(&mut self) {
        self.refund.0 = None;
    }
}

impl Future for Wait {
    type Output = ();

    // tower's `Retry` goes ahead with the retry once the wait is over: its
    // withdrawal stands from then on.
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        ready!(self.poll_elapsed(cx));
        self.sent();
        Poll::Ready(())
    }
}

impl fmt::Debug for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait")
            .field("until", &self.timer.as_ref().map(|t| t.sleep.deadline()))
            .field("send_by", &self.send_by())
            .finish()
    }
}

/// Gives a budget withdrawal back when dropped armed.
struct Refund(Option<Withdrawal>);

impl Drop for Refund {
    fn drop(&mut self) {
        if let Some(withdrawal) = self.0.take() {
            withdrawal.refund();
        }
    }
}
