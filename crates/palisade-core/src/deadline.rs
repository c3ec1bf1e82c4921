//! A request's deadline: one [`Deadline`] value that every layer, handler
//! and client of a request reads, and the wire formats that carry it from
//! one service to the next.
//!
//! - [`Deadline`]: the instant a request's whole budget runs out. The server
//!   layer that sets it (palisade-deadline's `DeadlineLayer`) puts it in the
//!   request's extensions and makes it [`current`](Deadline::current) for
//!   the task that serves the request; [`Deadline::of`] finds it for an
//!   outgoing request (its extensions first, then the task's).
//! - [`DeadlineExceeded`]: the error of a call whose deadline passed, a
//!   local rejection (see [`is_local_rejection`](crate::error::is_local_rejection)):
//!   not retried, not counted as a failure by a breaker, answered
//!   `504 Gateway Timeout` over HTTP.
//! - [`parse_grpc_timeout`] and [`format_grpc_timeout`]: gRPC's
//!   `grpc-timeout` header, 1 to 8 ASCII digits and a unit (`H`, `M`, `S`,
//!   `m`, `u`, `n`).
//! - [`parse_millis`], [`parse_millis_list`] and [`format_millis`]: the
//!   HTTP header palisade sends the remaining budget in
//!   ([`REQUEST_TIMEOUT_MS`]), whole milliseconds.
//! - [`attempt_timeout`]: the timeout of one attempt of an outgoing call,
//!   the smaller of its own timeout and what is left of the deadline less a
//!   safety margin.
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::deadline::{Deadline, attempt_timeout, format_grpc_timeout, parse_grpc_timeout};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! assert_eq!(parse_grpc_timeout(b"300m"), Ok(Duration::from_millis(300)));
//! assert_eq!(format_grpc_timeout(Duration::from_millis(300)), "300000u");
//!
//! let deadline = Deadline::after(Duration::from_millis(300));
//! let request = http::Request::builder().extension(deadline).body(()).unwrap();
//! assert_eq!(Deadline::of(&request), Some(deadline));
//! // A 1 s attempt timeout is cut to the 300 ms left, less a 20 ms margin.
//! let margin = Duration::from_millis(20);
//! assert_eq!(
//!     attempt_timeout(Some(Duration::from_secs(1)), Some(deadline), margin),
//!     Some(Duration::from_millis(280))
//! );
//! # }
//! ```

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;

/// `grpc-timeout`, the header gRPC carries a call's remaining time in.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// `x-request-timeout-ms`, the HTTP header palisade reads a caller's budget
/// from and sends the remaining budget in by default: whole milliseconds,
/// 1 to 12 ASCII digits.
pub const REQUEST_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-request-timeout-ms");

/// About 30 years: where an instant past tokio's range is put, as tokio does
/// for its own far-future timers, and the longest expiry palisade's stores
/// are given (a settings file may give any duration).
pub const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `duration` as the whole milliseconds of a store's expiry (Redis's `PX`):
/// at least 1, and at most [`FAR_FUTURE`]'s, which a server can add to its
/// clock (Redis refuses an expiry past its range).
pub fn expiry_millis(duration: Duration) -> u64 {
    u64::try_from(duration.min(FAR_FUTURE).as_millis()).map_or(u64::MAX, |ms| ms.max(1))
}

tokio::task_local! {
    static CURRENT: Deadline;
}

/// The instant a request's whole budget runs out.
///
/// Cheap to copy; ordered, so the earlier of two deadlines is
/// `a.min(b)`. It is measured on tokio's clock, so it follows paused time in
/// tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// The deadline at `at`.
    pub fn at(at: Instant) -> Self {
        Self { at }
    }

    /// The deadline `budget` from now (about 30 years at most).
    pub fn after(budget: Duration) -> Self {
        let now = Instant::now();
        Self {
            at: now.checked_add(budget.min(FAR_FUTURE)).unwrap_or(now),
        }
    }

    /// The instant it runs out.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// The time left, zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// True once it has passed.
    pub fn is_expired(&self) -> bool {
        Instant::now() >= self.at
    }

    /// True when something that takes `wait` from now would end at or past
    /// the deadline.
    pub fn cannot_fit(&self, wait: Duration) -> bool {
        Instant::now().checked_add(wait).is_none_or(|end| end >= self.at)
    }

    /// The deadline of the task being polled: set by the server layer for
    /// the work serving a request (see [`scope`](Deadline::scope)). `None`
    /// outside such work, and in tasks spawned from it: a spawned task does
    /// not inherit it, so copy the [`Deadline`] into what it sends.
    pub fn current() -> Option<Deadline> {
        CURRENT.try_with(|d| *d).ok()
    }

    /// The deadline of an outgoing request: the `Deadline` in its
    /// extensions, else the [`current`](Deadline::current) one.
    pub fn of<B>(req: &http::Request<B>) -> Option<Deadline> {
        req.extensions().get::<Deadline>().copied().or_else(Deadline::current)
    }

    /// Runs `future` with this deadline as the [`current`](Deadline::current)
    /// one (the earlier of it and an enclosing one).
    pub fn scope<F: Future>(self, future: F) -> TaskLocalFuture<Deadline, F> {
        let deadline = Deadline::current().map_or(self, |outer| outer.min(self));
        CURRENT.scope(deadline, future)
    }

    /// Runs `f` with this deadline as the current one (the earlier of it and
    /// an enclosing one), for the synchronous part of a call.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        let deadline = Deadline::current().map_or(self, |outer| outer.min(self));
        CURRENT.sync_scope(deadline, f)
    }
}

/// The timeout of one attempt of an outgoing call: the smaller of its own
/// `timeout` and what is left of `deadline` less `margin` (time kept for the
/// answer to travel back and be handled). `None` when neither bounds it;
/// `Some(Duration::ZERO)` when the deadline leaves no time for the attempt,
/// which should then not be sent.
pub fn attempt_timeout(timeout: Option<Duration>, deadline: Option<Deadline>, margin: Duration) -> Option<Duration> {
    let left = deadline.map(|d| d.remaining().saturating_sub(margin));
    match (timeout, left) {
        (Some(t), Some(l)) => Some(t.min(l)),
        (t, l) => t.or(l),
    }
}

/// A call's deadline passed before it was answered.
///
/// A local rejection: the retry policy does not retry it and a breaker does
/// not count it; over HTTP it is `504 Gateway Timeout` with the problem type
/// [`types::DEADLINE_EXCEEDED`](crate::problem::types::DEADLINE_EXCEEDED),
/// over gRPC `DEADLINE_EXCEEDED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeadlineExceeded;

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request's deadline passed")
    }
}

impl Error for DeadlineExceeded {}

/// A timeout header that is not in its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedTimeout;

impl fmt::Display for MalformedTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed timeout header")
    }
}

impl Error for MalformedTimeout {}

/// Parses a `grpc-timeout` value: 1 to 8 ASCII digits and one unit, `H`
/// (hours), `M` (minutes), `S` (seconds), `m` (milliseconds), `u`
/// (microseconds) or `n` (nanoseconds). No sign, no spaces, no other unit.
/// Zero is accepted, as gRPC implementations accept it: the call is already
/// late.
pub fn parse_grpc_timeout(value: &[u8]) -> Result<Duration, MalformedTimeout> {
    let (&unit, digits) = value.split_last().ok_or(MalformedTimeout)?;
    let n = parse_digits(digits, 8)?;
    Ok(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Err(MalformedTimeout),
    })
}

/// Formats `timeout` as a `grpc-timeout` value in the finest unit that holds
/// it in 8 digits, rounded down (a receiver is never told it has more time
/// than it has); at most `99999999H`.
pub fn format_grpc_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = timeout.as_nanos();
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let (n, unit) = units
        .iter()
        .map(|&(per, unit)| (nanos / per, unit))
        .find(|&(n, _)| n <= MAX)
        .unwrap_or((MAX, 'H'));
    // Digits and an ASCII letter: always a valid header value.
    HeaderValue::from_str(&format!("{n}{unit}")).unwrap_or(HeaderValue::from_static("0n"))
}

/// Parses a timeout in whole milliseconds: 1 to 12 ASCII digits (the
/// format of [`REQUEST_TIMEOUT_MS`]).
pub fn parse_millis(value: &[u8]) -> Result<Duration, MalformedTimeout> {
    parse_digits(value, 12).map(Duration::from_millis)
}

/// Parses a field value of the millisecond header as a list: one or more
/// [`parse_millis`] values separated by commas, as a proxy folds repeated
/// lines into one (RFC 9110 §5.3), blanks around them and empty elements
/// ignored; the shortest. Malformed when an element is, or none is there.
pub fn parse_millis_list(value: &[u8]) -> Result<Duration, MalformedTimeout> {
    value
        .split(|&b| b == b',')
        .map(|element| element.trim_ascii())
        .filter(|element| !element.is_empty())
        .try_fold(None, |shortest: Option<Duration>, element| {
            let found = parse_millis(element)?;
            Ok(Some(shortest.map_or(found, |s| s.min(found))))
        })?
        .ok_or(MalformedTimeout)
}

/// Formats `timeout` in whole milliseconds, rounded down, and capped at
/// the 12 digits [`parse_millis`] accepts (about 31 years), as
/// [`format_grpc_timeout`] caps at gRPC's 8.
pub fn format_millis(timeout: Duration) -> HeaderValue {
    const MAX: u128 = 999_999_999_999;
    HeaderValue::from(timeout.as_millis().min(MAX) as u64)
}

fn parse_digits(digits: &[u8], max_len: usize) -> Result<u64, MalformedTimeout> {
    if digits.is_empty() || digits.len() > max_len || !digits.iter().all(u8::is_ascii_digit) {
        return Err(MalformedTimeout);
    }
    Ok(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        let cases: [(&[u8], Duration); 8] = [
            (b"1H", Duration::from_secs(3600)),
            (b"2M", Duration::from_secs(120)),
            (b"3S", Duration::from_secs(3)),
            (b"300m", Duration::from_millis(300)),
            (b"250u", Duration::from_micros(250)),
            (b"99999999n", Duration::from_nanos(99_999_999)),
            (b"00000007S", Duration::from_secs(7)),
            (b"0m", Duration::ZERO),
        ];
        for (value, expected) in cases {
            assert_eq!(
                parse_grpc_timeout(value),
                Ok(expected),
                "{}",
                String::from_utf8_lossy(value)
            );
        }
        assert_eq!(
            parse_grpc_timeout(b"99999999H"),
            Ok(Duration::from_secs(99_999_999 * 3600))
        );
    }

    #[test]
    fn malformed_grpc_timeouts_are_refused() {
        let cases: [&[u8]; 13] = [
            b"",
            b"S",
            b"100",
            b"123456789n",
            b"10s",
            b"10 m",
            b" 10m",
            b"-1S",
            b"+1S",
            b"1.5S",
            b"10ms",
            b"1x",
            "١S".as_bytes(),
        ];
        for value in cases {
            assert_eq!(parse_grpc_timeout(value), Err(MalformedTimeout), "{:?}", value);
        }
    }

    #[test]
    fn grpc_timeout_is_formatted_in_the_finest_unit_that_fits() {
        let cases = [
            (Duration::ZERO, "0n"),
            (Duration::from_nanos(99_999_999), "99999999n"),
            (Duration::from_millis(300), "300000u"),
            (Duration::from_nanos(300_000_999), "300000u"),
            (Duration::from_micros(99_999_999), "99999999u"),
            (Duration::from_secs(100), "100000m"),
            (Duration::from_secs(100_000), "100000S"),
        ];
        for (timeout, expected) in cases {
            assert_eq!(format_grpc_timeout(timeout), expected, "{timeout:?}");
            assert!(parse_grpc_timeout(expected.as_bytes()).unwrap() <= timeout);
        }
        assert_eq!(format_grpc_timeout(Duration::from_secs(100_000_000 * 60)), "1666666H");
        assert_eq!(format_grpc_timeout(Duration::MAX), "99999999H");
    }

    #[test]
    fn millis_round_trip_and_refusals() {
        assert_eq!(parse_millis(b"250"), Ok(Duration::from_millis(250)));
        assert_eq!(
            parse_millis(b"999999999999"),
            Ok(Duration::from_millis(999_999_999_999))
        );
        for value in [&b""[..], b"1000000000000", b"1.5", b"-1", b"10ms", b" 1"] {
            assert_eq!(parse_millis(value), Err(MalformedTimeout), "{:?}", value);
        }
        assert_eq!(format_millis(Duration::from_micros(250_999)), "250");
        assert_eq!(format_millis(Duration::MAX), "999999999999");
        assert_eq!(
            parse_millis(b"999999999999"),
            Ok(Duration::from_millis(999_999_999_999))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn remaining_time_follows_the_clock() {
        let deadline = Deadline::after(Duration::from_millis(300));
        assert_eq!(deadline.remaining(), Duration::from_millis(300));
        assert!(!deadline.cannot_fit(Duration::from_millis(299)));
        assert!(deadline.cannot_fit(Duration::from_millis(300)));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(deadline.remaining(), Duration::from_millis(100));
        assert!(!deadline.is_expired());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(deadline.is_expired());
        assert_eq!(deadline.remaining(), Duration::ZERO);
        // A huge budget is kept in range instead of overflowing.
        assert_eq!(Deadline::after(Duration::MAX).remaining(), FAR_FUTURE);
        assert_eq!(expiry_millis(Duration::MAX), 946_080_000_000);
        assert_eq!(
            expiry_millis(Duration::from_micros(10)),
            1,
            "never 0, which means no expiry"
        );
        assert_eq!(expiry_millis(Duration::from_millis(1_500)), 1_500);
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_timeout_is_the_smaller_of_its_own_and_what_is_left() {
        let margin = Duration::from_millis(20);
        let deadline = Deadline::after(Duration::from_millis(300));
        let own = Some(Duration::from_millis(100));
        assert_eq!(attempt_timeout(own, Some(deadline), margin), own);
        assert_eq!(
            attempt_timeout(None, Some(deadline), margin),
            Some(Duration::from_millis(280))
        );
        assert_eq!(attempt_timeout(own, None, margin), own);
        assert_eq!(attempt_timeout(None, None, margin), None);
        tokio::time::advance(Duration::from_millis(290)).await;
        assert_eq!(attempt_timeout(own, Some(deadline), margin), Some(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn the_current_deadline_is_the_earliest_in_scope_and_extensions_come_first() {
        assert_eq!(Deadline::current(), None);
        let outer = Deadline::after(Duration::from_millis(100));
        let later = Deadline::after(Duration::from_millis(500));
        let earlier = Deadline::after(Duration::from_millis(50));
        outer
            .scope(async move {
                assert_eq!(Deadline::current(), Some(outer));
                later
                    .scope(async move { assert_eq!(Deadline::current(), Some(outer)) })
                    .await;
                earlier
                    .scope(async move { assert_eq!(Deadline::current(), Some(earlier)) })
                    .await;
                let bare = http::Request::new(());
                assert_eq!(Deadline::of(&bare), Some(outer));
                let carried = http::Request::builder().extension(later).body(()).unwrap();
                assert_eq!(Deadline::of(&carried), Some(later));
                // A spawned task does not inherit it.
                assert_eq!(tokio::spawn(async { Deadline::current() }).await.unwrap(), None);
            })
            .await;
        assert_eq!(outer.sync_scope(Deadline::current), Some(outer));
    }
}
