//! GCRA (the generic cell rate algorithm): an exact token bucket kept as one number per key,
//! the theoretical arrival time (TAT) of the next request. Times are microseconds on whatever
//! clock the caller passes, so tests move time instead of sleeping.

/// The shape of a limit: `limit` requests per `per`, with bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Microseconds between two requests at the sustained rate.
    pub interval_us: u64,
    /// How far ahead of `now` the TAT may run: `interval * burst`.
    pub tolerance_us: u64,
}

impl Rate {
    pub fn new(limit: u32, per_us: u64, burst: u32) -> Rate {
        let interval_us = (per_us / u64::from(limit.max(1))).max(1);
        Rate {
            interval_us,
            tolerance_us: interval_us * u64::from(burst.max(1)),
        }
    }

    pub fn burst(&self) -> u64 {
        self.tolerance_us / self.interval_us
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// Requests left in the bucket after this one.
    pub remaining: u64,
    /// Microseconds until the next request would be allowed (0 when allowed).
    pub retry_after_us: u64,
    /// Microseconds until the bucket is full again.
    pub reset_us: u64,
}

/// Decides one request against a stored TAT. Returns the outcome and the TAT to store
/// (unchanged when refused: a refused request is not charged).
pub fn decide(rate: Rate, stored_tat: Option<u64>, now: u64) -> (Outcome, u64) {
    let tat = stored_tat.unwrap_or(now).max(now);
    let new_tat = tat + rate.interval_us;
    let ahead = new_tat - now;
    if ahead > rate.tolerance_us {
        let outcome = Outcome {
            allowed: false,
            remaining: 0,
            retry_after_us: ahead - rate.tolerance_us,
            reset_us: tat - now,
        };
        return (outcome, tat);
    }
    let outcome = Outcome {
        allowed: true,
        remaining: (rate.tolerance_us - ahead) / rate.interval_us,
        retry_after_us: 0,
        reset_us: ahead,
    };
    (outcome, new_tat)
}

/// Gives back one request charged by [`decide`] (when a later policy refused it).
pub fn refund(rate: Rate, stored_tat: u64, now: u64) -> u64 {
    stored_tat.saturating_sub(rate.interval_us).max(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    fn run(rate: Rate, tat: &mut Option<u64>, now: u64) -> Outcome {
        let (o, next) = decide(rate, *tat, now);
        *tat = Some(next);
        o
    }

    #[test]
    fn exactly_limit_requests_pass_at_once_then_the_next_is_refused() {
        let rate = Rate::new(20, 60 * SEC, 20);
        let mut tat = None;
        for i in 0..20 {
            let o = run(rate, &mut tat, 0);
            assert!(o.allowed, "request {i}");
            assert_eq!(o.remaining, 19 - i);
        }
        let o = run(rate, &mut tat, 0);
        assert!(!o.allowed);
        assert_eq!(o.retry_after_us, 3 * SEC, "one request every 3 s refills");
    }

    #[test]
    fn the_bucket_refills_at_the_sustained_rate() {
        let rate = Rate::new(20, 60 * SEC, 20);
        let mut tat = None;
        for _ in 0..20 {
            run(rate, &mut tat, 0);
        }
        assert!(!run(rate, &mut tat, 3 * SEC - 1).allowed);
        assert!(run(rate, &mut tat, 3 * SEC).allowed);
        assert!(!run(rate, &mut tat, 3 * SEC).allowed);
        // A full window later the whole burst is back.
        let later = 3 * SEC + 60 * SEC;
        for _ in 0..20 {
            assert!(run(rate, &mut tat, later).allowed);
        }
        assert!(!run(rate, &mut tat, later).allowed);
    }

    #[test]
    fn a_smaller_burst_spreads_requests_out() {
        let rate = Rate::new(60, 60 * SEC, 2);
        let mut tat = None;
        assert!(run(rate, &mut tat, 0).allowed);
        assert!(run(rate, &mut tat, 0).allowed);
        let o = run(rate, &mut tat, 0);
        assert!(!o.allowed);
        assert_eq!(o.retry_after_us, SEC);
    }

    #[test]
    fn refused_requests_are_not_charged_and_a_refund_gives_one_back() {
        let rate = Rate::new(2, 10 * SEC, 2);
        let mut tat = None;
        run(rate, &mut tat, 0);
        run(rate, &mut tat, 0);
        for _ in 0..100 {
            assert!(!run(rate, &mut tat, 0).allowed);
        }
        assert_eq!(tat, Some(10 * SEC), "refusals did not push the TAT");
        tat = Some(refund(rate, tat.unwrap(), 0));
        assert!(run(rate, &mut tat, 0).allowed);
    }
}
