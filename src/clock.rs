//! The process's monotonic clock, as integers that fit in atomics and limiter state.

use std::sync::OnceLock;
use std::time::Instant;

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Milliseconds since the process started.
pub fn now_ms() -> u64 {
    ms_at(Instant::now())
}

/// Microseconds since the process started.
pub fn now_us() -> u64 {
    us_at(Instant::now())
}

/// Milliseconds from the process's start to `at` (0 for an instant before it), for a time
/// already read: a request's start serves its policies without another clock read.
pub fn ms_at(at: Instant) -> u64 {
    at.saturating_duration_since(start()).as_millis() as u64
}

/// Microseconds from the process's start to `at` (0 for an instant before it).
pub fn us_at(at: Instant) -> u64 {
    at.saturating_duration_since(start()).as_micros() as u64
}
