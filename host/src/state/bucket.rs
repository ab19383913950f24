//! Token-bucket arithmetic (GCRA form), a pure function of the bucket, the limit and the
//! time: no clock, no lock, no I/O, so refill behaviour is tested exactly.
//!
//! A bucket is one number, its *theoretical arrival time* (`tat`): the instant at which
//! the bucket would be full again. Taking a token moves it one `interval` (1 / rate) later;
//! a take is allowed while `tat` stays within `burst` intervals of now. This is exactly a
//! token bucket of capacity `burst` refilled at `rate` tokens per second, stored in one
//! integer.

use std::time::Duration;

/// Nanoseconds per second.
const NANOS_PER_SEC: f64 = 1_000_000_000.0;

/// A token-bucket limit: `rate` tokens per second, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Tokens added per second (> 0; fractions allowed: `0.5` is one every 2 s).
    pub rate: f64,
    /// Bucket capacity: the most requests admitted at once (≥ 1).
    pub burst: u64,
}

impl Limit {
    /// Nanoseconds between two tokens (at least 1).
    pub fn interval_ns(&self) -> u64 {
        let interval = (NANOS_PER_SEC / self.rate).round();
        if interval.is_finite() && interval >= 1.0 {
            // `as` saturates for huge values, which is the right answer for tiny rates.
            interval as u64
        } else {
            1
        }
    }
}

/// The answer of a bucket (or quota) check, with what the `RateLimit-*` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The limit as clients see it (`RateLimit-Limit`): the burst, or the quota.
    pub limit: u64,
    /// What is left after this request (`RateLimit-Remaining`).
    pub remaining: u64,
    /// Until the next request could be admitted (`Retry-After`); zero when allowed.
    pub retry_after: Duration,
    /// Until the limit is fully available again (`RateLimit-Reset`).
    pub reset: Duration,
}

impl Decision {
    /// An allowed decision that says nothing was limited (fail open).
    pub fn unlimited(limit: u64) -> Decision {
        Decision {
            allowed: true,
            limit,
            remaining: limit,
            retry_after: Duration::ZERO,
            reset: Duration::ZERO,
        }
    }
}

/// Takes one token from the bucket whose state is `tat` (nanoseconds on the caller's
/// clock; `0` for a bucket never used) at time `now` (same clock). Updates `tat` only when
/// the request is allowed.
pub fn take(tat: &mut u64, limit: Limit, now: u64) -> Decision {
    let interval = limit.interval_ns();
    let burst = limit.burst.max(1);
    let tolerance = interval.saturating_mul(burst);
    let start = (*tat).max(now);
    let new_tat = start.saturating_add(interval);
    let ahead = new_tat - now;
    if ahead > tolerance {
        return Decision {
            allowed: false,
            limit: burst,
            remaining: 0,
            retry_after: Duration::from_nanos(ahead - tolerance),
            reset: Duration::from_nanos(start - now),
        };
    }
    *tat = new_tat;
    Decision {
        allowed: true,
        limit: burst,
        remaining: (tolerance - ahead) / interval,
        retry_after: Duration::ZERO,
        reset: Duration::from_nanos(ahead),
    }
}

/// Whether a bucket with state `tat` is full at `now` (it can be forgotten: a missing
/// bucket is a full one).
pub fn is_full(tat: u64, now: u64) -> bool {
    tat <= now
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000_000_000;

    fn limit(rate: f64, burst: u64) -> Limit {
        Limit { rate, burst }
    }

    #[test]
    fn a_new_bucket_admits_exactly_burst_at_once() {
        let mut tat = 0;
        let now = 5 * SEC;
        for expected_remaining in (0..3).rev() {
            let d = take(&mut tat, limit(1.0, 3), now);
            assert!(d.allowed);
            assert_eq!(d.remaining, expected_remaining);
            assert_eq!(d.limit, 3);
        }
        let denied = take(&mut tat, limit(1.0, 3), now);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 0);
        assert_eq!(denied.retry_after, Duration::from_secs(1));
        assert_eq!(denied.reset, Duration::from_secs(3));
    }

    #[test]
    fn refills_one_token_per_interval_exactly() {
        let mut tat = 0;
        let l = limit(10.0, 2);
        let t0 = SEC;
        assert!(take(&mut tat, l, t0).allowed);
        assert!(take(&mut tat, l, t0).allowed);
        assert!(!take(&mut tat, l, t0).allowed);
        // 99.999999 ms later: still nothing.
        let early = take(&mut tat, l, t0 + 100 * MS - 1);
        assert!(!early.allowed);
        assert_eq!(early.retry_after, Duration::from_nanos(1));
        // Exactly one interval later: one token, not two.
        assert!(take(&mut tat, l, t0 + 100 * MS).allowed);
        assert!(!take(&mut tat, l, t0 + 100 * MS).allowed);
        // After a long pause the bucket is full again, but never fuller than `burst`.
        let later = t0 + 60 * SEC;
        assert!(is_full(tat, later));
        assert_eq!(take(&mut tat, l, later).remaining, 1);
        assert_eq!(take(&mut tat, l, later).remaining, 0);
        assert!(!take(&mut tat, l, later).allowed);
    }

    #[test]
    fn a_denied_request_costs_nothing() {
        let mut tat = 0;
        let l = limit(1.0, 1);
        assert!(take(&mut tat, l, SEC).allowed);
        for _ in 0..10 {
            assert!(!take(&mut tat, l, SEC + 500 * MS).allowed);
        }
        assert!(take(&mut tat, l, 2 * SEC).allowed);
    }

    #[test]
    fn fractional_rates_and_steady_flow() {
        let l = limit(0.5, 1);
        assert_eq!(l.interval_ns(), 2 * SEC);
        let mut tat = 0;
        assert!(take(&mut tat, l, 0).allowed);
        assert!(!take(&mut tat, l, SEC).allowed);
        assert!(take(&mut tat, l, 2 * SEC).allowed);

        // A client sending exactly at the rate is never refused.
        let l = limit(100.0, 1);
        let mut tat = 0;
        for i in 0..1000 {
            assert!(take(&mut tat, l, SEC + i * 10 * MS).allowed, "request {i}");
        }
    }

    #[test]
    fn reset_is_the_time_until_full() {
        let mut tat = 0;
        let l = limit(4.0, 4);
        take(&mut tat, l, SEC);
        let d = take(&mut tat, l, SEC);
        assert_eq!(d.reset, Duration::from_millis(500));
        assert_eq!(d.remaining, 2);
    }
}
