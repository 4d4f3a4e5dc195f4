//! Rate-limited log lines: at most one line per (provider, error kind) per interval on a
//! shard, the next one saying how many were suppressed. Metrics keep the exact counts.

use std::time::{Duration, Instant};

use hashbrown::HashMap;

use crate::error::ErrorKind;
use crate::metrics::labels::error_index;

/// How often a line of one kind per provider may be logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// What a rate-limited log line is about: a provider (by index; `None` when the request never
/// reached one) and an error kind (by its index in the fixed list of kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LogKey {
    provider: Option<usize>,
    kind: usize,
}

impl LogKey {
    /// The key of an error of `kind` at `provider`.
    pub fn new(provider: Option<usize>, kind: ErrorKind) -> Self {
        Self {
            provider,
            kind: error_index(kind),
        }
    }
}

/// At most one line per key per interval; the next line that gets through says how many of
/// that key were suppressed since the last one. Pure (time is passed in), one per shard.
/// Keys come from the config's providers and the fixed list of error kinds, so it is bounded.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    keys: HashMap<LogKey, LogSlot>,
}

#[derive(Debug, Clone, Copy)]
struct LogSlot {
    last: Instant,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self::new(LOG_INTERVAL)
    }
}

impl LogLimiter {
    /// A limiter letting one line per key through every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            keys: HashMap::new(),
        }
    }

    /// May a line for `key` be written at `now`? `Some(n)`: yes, and `n` lines of this key
    /// were suppressed since the last one written; `None`: no (it is counted).
    pub fn admit(&mut self, key: LogKey, now: Instant) -> Option<u64> {
        match self.keys.get_mut(&key) {
            None => {
                self.keys.insert(
                    key,
                    LogSlot {
                        last: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
            Some(slot) if now.saturating_duration_since(slot.last) >= self.interval => {
                let n = slot.suppressed;
                *slot = LogSlot {
                    last: now,
                    suppressed: 0,
                };
                Some(n)
            }
            Some(slot) => {
                slot.suppressed += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_lets_one_line_per_key_per_interval_and_counts_the_rest() {
        let t0 = Instant::now();
        let s = Duration::from_millis;
        let mut l = LogLimiter::new(Duration::from_secs(1));
        let a = LogKey::new(Some(0), ErrorKind::UpstreamStatus(500));
        let a503 = LogKey::new(Some(0), ErrorKind::UpstreamStatus(503));
        let b = LogKey::new(Some(1), ErrorKind::UpstreamStatus(500));
        let t = LogKey::new(Some(0), ErrorKind::UpstreamTimeout);
        assert_eq!(a, a503, "statuses share the kind's fixed label");
        assert_eq!(l.admit(a, t0), Some(0), "the first line passes");
        for i in 1..=50 {
            assert_eq!(l.admit(a, t0 + s(i * 10)), None, "then {i} is suppressed");
        }
        // Other providers and other kinds have their own budget.
        assert_eq!(l.admit(b, t0 + s(10)), Some(0));
        assert_eq!(l.admit(t, t0 + s(10)), Some(0));
        assert_eq!(l.admit(b, t0 + s(20)), None);
        // After the interval, the next line passes and reports the count.
        assert_eq!(l.admit(a, t0 + s(999)), None);
        assert_eq!(l.admit(a, t0 + s(1000)), Some(51));
        assert_eq!(l.admit(a, t0 + s(1500)), None);
        assert_eq!(l.admit(a, t0 + s(2000)), Some(1), "the count restarts");
        assert_eq!(l.admit(b, t0 + s(5000)), Some(1));
        // A quiet key passes at once with nothing suppressed.
        assert_eq!(l.admit(a, t0 + s(9000)), Some(0));
        // Time going backwards (it cannot with Instant, but be safe) suppresses, never panics.
        assert_eq!(l.admit(t, t0), None);
    }
}
