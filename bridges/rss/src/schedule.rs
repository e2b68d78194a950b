//! When to fetch a feed next: the polite interval (the configured default, lengthened by
//! the feed's own TTL, `Cache-Control` and `skipHours`, never below the minimum), backoff
//! after errors, `Retry-After`, and jitter so feeds do not poll in lockstep. Pure functions
//! of their inputs: the engine supplies the clock and the randomness.

use std::time::Duration;

/// The configured bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    /// `[rss] default_interval`.
    pub default: Duration,
    /// `[rss] min_interval`.
    pub min: Duration,
}

/// No feed waits longer than this between polls, whatever it asks for.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// What a feed said about how often to poll it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hints {
    /// RSS `<ttl>`.
    pub ttl: Option<Duration>,
    /// `Cache-Control: max-age`.
    pub max_age: Option<Duration>,
    /// RSS `<skipHours>`: hours (UTC, 0–23) not to poll in.
    pub skip_hours: Vec<u8>,
}

impl Intervals {
    /// The base interval after a successful poll: the default, lengthened (never shortened)
    /// by the feed's TTL or max-age, at least `min`, at most [`MAX_INTERVAL`].
    pub fn after_success(&self, hints: &Hints) -> Duration {
        let mut d = self.default;
        for asked in [hints.ttl, hints.max_age].into_iter().flatten() {
            d = d.max(asked);
        }
        d.max(self.min).min(MAX_INTERVAL.max(self.min))
    }

    /// The delay after the `failures`-th failure in a row (1 for the first): doubling from
    /// `min` (at least a minute, unless `min` is shorter), capped at the larger of four
    /// default intervals and six hours.
    pub fn after_failure(&self, failures: u32) -> Duration {
        let base = self.min.max(Duration::from_secs(60).min(self.default));
        let cap = (self.default * 4).max(Duration::from_secs(6 * 3600));
        let shift = failures.saturating_sub(1).min(20);
        base.saturating_mul(1 << shift).min(cap).max(self.min)
    }

    /// The delay a `Retry-After` asks for, kept within [min, MAX_INTERVAL].
    pub fn after_retry_after(&self, asked: Duration) -> Duration {
        asked.max(self.min).min(MAX_INTERVAL)
    }
}

/// Spreads `d` by up to ±10 % using `unit` (a random number in [0, 1)), so feeds added
/// together drift apart.
pub fn jitter(d: Duration, unit: f64) -> Duration {
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.5
    };
    d.mul_f64(0.9 + 0.2 * unit)
}

/// Moves a fetch planned at `at_ms` (unix milliseconds) out of the feed's skip hours: to
/// the start of the first hour (UTC) that is not skipped. All 24 hours skipped means the
/// feed asks for nothing sensible; it is then left alone.
pub fn skip_hours(at_ms: i64, hours: &[u8]) -> i64 {
    const HOUR_MS: i64 = 3_600_000;
    if hours.is_empty() || (0..24u8).all(|h| hours.contains(&h)) {
        return at_ms;
    }
    let mut t = at_ms;
    for _ in 0..24 {
        let hour = u8::try_from(t.div_euclid(HOUR_MS).rem_euclid(24)).unwrap_or(0);
        if !hours.contains(&hour) {
            return t;
        }
        t = (t.div_euclid(HOUR_MS) + 1) * HOUR_MS;
    }
    at_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn iv(default_min: u64, min_min: u64) -> Intervals {
        Intervals {
            default: MIN * default_min as u32,
            min: MIN * min_min as u32,
        }
    }

    #[test]
    fn feed_hints_lengthen_but_never_shorten() {
        let i = iv(60, 5);
        assert_eq!(i.after_success(&Hints::default()), MIN * 60);
        let short = Hints {
            ttl: Some(MIN),
            max_age: Some(Duration::from_secs(10)),
            ..Hints::default()
        };
        assert_eq!(i.after_success(&short), MIN * 60);
        let long = Hints {
            ttl: Some(MIN * 180),
            ..Hints::default()
        };
        assert_eq!(i.after_success(&long), MIN * 180);
        let cached = Hints {
            max_age: Some(MIN * 90),
            ..Hints::default()
        };
        assert_eq!(i.after_success(&cached), MIN * 90);
        let absurd = Hints {
            ttl: Some(MIN * 60 * 24 * 365),
            ..Hints::default()
        };
        assert_eq!(i.after_success(&absurd), MAX_INTERVAL);
        // The minimum wins over a shorter default.
        assert_eq!(iv(1, 5).after_success(&Hints::default()), MIN * 5);
    }

    #[test]
    fn failures_back_off_to_a_cap() {
        let i = iv(60, 5);
        let delays: Vec<Duration> = (1..=12).map(|n| i.after_failure(n)).collect();
        assert_eq!(delays[0], MIN * 5);
        assert_eq!(delays[1], MIN * 10);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(delays[11], MIN * 60 * 6);
        // Tests may run with a one-second minimum.
        let fast = Intervals {
            default: Duration::from_secs(2),
            min: Duration::from_secs(1),
        };
        assert_eq!(fast.after_failure(1), Duration::from_secs(2));
        assert!(fast.after_failure(50) <= Duration::from_secs(6 * 3600));
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let i = iv(60, 5);
        assert_eq!(i.after_retry_after(MIN * 120), MIN * 120);
        assert_eq!(i.after_retry_after(Duration::from_secs(3)), MIN * 5);
        assert_eq!(i.after_retry_after(MIN * 60 * 100), MAX_INTERVAL);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let d = MIN * 60;
        assert_eq!(jitter(d, 0.0), d.mul_f64(0.9));
        assert_eq!(jitter(d, 1.0), d.mul_f64(1.1));
        assert_eq!(jitter(d, 0.5), d);
        assert_eq!(jitter(d, f64::NAN), d);
    }

    #[test]
    fn skip_hours_move_to_the_next_open_hour() {
        let hour = 3_600_000i64;
        let day = 20_000 * 24 * hour; // some midnight UTC
        // 02:30 with hours 2 and 3 skipped → 04:00.
        assert_eq!(
            skip_hours(day + 2 * hour + hour / 2, &[2, 3]),
            day + 4 * hour
        );
        // Not in a skipped hour: unchanged.
        assert_eq!(skip_hours(day + 5 * hour + 7, &[2, 3]), day + 5 * hour + 7);
        // 23:10 with 23 and 0 skipped → 01:00 the next day.
        assert_eq!(
            skip_hours(day + 23 * hour + 600_000, &[23, 0]),
            day + 25 * hour
        );
        let all: Vec<u8> = (0..24).collect();
        assert_eq!(skip_hours(day + 42, &all), day + 42);
    }
}
