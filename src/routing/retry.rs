//! When and how soon to try the next attempt: exponential backoff with full jitter, a capped
//! `Retry-After`, and a retry budget so that an outage does not multiply upstream load.
//!
//! Pure: time and randomness are arguments.

use std::time::{Duration, Instant};

use crate::scoring::SuccessWindow;

/// Default attempts per request, across deployments and fallbacks together (1 = no retry).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default deadline for all of a request's attempts together.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Default first backoff step.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(50);
/// Default longest backoff.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Default longest `Retry-After` the gateway waits on before another attempt.
pub const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(5);
/// Default share of requests that may be retried...
pub const DEFAULT_BUDGET_RATIO: f64 = 0.2;
/// ...plus this many retries per second whatever the traffic...
pub const DEFAULT_BUDGET_FLOOR_PER_SEC: u32 = 5;
/// ...counted over this window.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(10);

/// Backoff between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First step.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Longest `Retry-After` honoured.
    pub retry_after_cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: DEFAULT_BACKOFF_BASE,
            max: DEFAULT_BACKOFF_MAX,
            retry_after_cap: DEFAULT_RETRY_AFTER_CAP,
        }
    }
}

impl Backoff {
    /// The wait before retry number `retry` (1 for the first retry): uniform in
    /// `0..=min(max, base × 2^(retry-1))` ("full jitter"). `random` is uniform in `0..1`.
    pub fn delay(&self, retry: u32, random: f64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1 << retry.saturating_sub(1).min(20))
            .min(self.max);
        ceiling.mul_f64(random.clamp(0.0, 1.0))
    }
}

/// Retries allowed as a share of requests, plus a floor per second, over a sliding window
/// (Envoy's retry budget): when every deployment fails, upstream attempts stay within
/// `requests × (1 + ratio) + floor × window`.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    ratio: f64,
    floor_per_sec: u32,
    window_len: Duration,
    /// First attempts count as "successes", retries as "failures".
    window: SuccessWindow,
}

impl RetryBudget {
    /// A budget of `ratio` of requests plus `floor_per_sec`, over `window`.
    pub fn new(ratio: f64, floor_per_sec: u32, window: Duration) -> Self {
        Self {
            ratio,
            floor_per_sec,
            window_len: window,
            window: SuccessWindow::new(window),
        }
    }

    /// A request's first attempt.
    pub fn on_request(&mut self, now: Instant) {
        self.window.record(true, now);
    }

    /// May another attempt go? Takes one retry from the budget when it may.
    pub fn try_retry(&mut self, now: Instant) -> bool {
        let (requests, retries) = self.window.totals(now);
        let floor = f64::from(self.floor_per_sec) * self.window_len.as_secs_f64();
        if (retries as f64) < self.ratio * requests as f64 + floor {
            self.window.record(false, now);
            true
        } else {
            false
        }
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(
            DEFAULT_BUDGET_RATIO,
            DEFAULT_BUDGET_FLOOR_PER_SEC,
            DEFAULT_BUDGET_WINDOW,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn backoff_grows_doubling_and_stays_under_its_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(700),
            retry_after_cap: Duration::from_secs(5),
        };
        assert_eq!(b.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(2, 1.0), Duration::from_millis(200));
        assert_eq!(b.delay(3, 1.0), Duration::from_millis(400));
        assert_eq!(b.delay(4, 1.0), Duration::from_millis(700));
        assert_eq!(b.delay(60, 1.0), Duration::from_millis(700));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(200));
        assert_eq!(b.delay(3, 0.0), Duration::ZERO);
    }

    proptest! {
        #[test]
        fn backoff_is_within_bounds(retry in 0u32..100, random in -1.0f64..2.0) {
            let b = Backoff::default();
            let d = b.delay(retry, random);
            prop_assert!(d <= b.max);
        }

        /// Under any sequence of requests and retry wishes over time, the retries granted in
        /// any window never exceed ratio × requests + floor × window.
        #[test]
        fn the_retry_budget_is_never_exceeded(
            steps in proptest::collection::vec((0u64..400, any::<bool>(), 0u8..4), 1..400)
        ) {
            let window = Duration::from_secs(10);
            let mut budget = RetryBudget::new(0.2, 1, window);
            let t0 = Instant::now();
            let mut now = t0;
            let mut log: Vec<(Instant, bool)> = Vec::new(); // (when, is_retry)
            for (advance_ms, request, wishes) in steps {
                now += Duration::from_millis(advance_ms);
                if request {
                    budget.on_request(now);
                    log.push((now, false));
                }
                for _ in 0..wishes {
                    if budget.try_retry(now) {
                        log.push((now, true));
                    }
                }
            }
            // The budget keeps whole buckets (a sixth of the window each), so it remembers
            // between 5/6 of a window and a whole one: the retries of the last 5/6 window
            // never exceed the share of the requests of the last 7/6 window plus the floor.
            let bucket = window / 6;
            for &(end, _) in &log {
                let (mut requests, mut retries) = (0.0f64, 0.0f64);
                for &(t, retry) in &log {
                    if t > end {
                        continue;
                    }
                    if retry && t + window > end + bucket {
                        retries += 1.0;
                    } else if !retry && t + window + bucket > end {
                        requests += 1.0;
                    }
                }
                prop_assert!(
                    retries <= 0.2 * requests + 10.0 + 1.0,
                    "{retries} retries against {requests} requests"
                );
            }
        }
    }

    #[test]
    fn an_outage_is_held_to_the_budget() {
        // 100 requests a second for 10 s, each wanting 3 retries: the floor (5/s × 10 s) plus
        // 20% of the requests get through, not 3×.
        let t0 = Instant::now();
        let mut budget = RetryBudget::default();
        let (mut requests, mut retries) = (0u64, 0u64);
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i * 10);
            budget.on_request(now);
            requests += 1;
            for _ in 0..3 {
                if budget.try_retry(now) {
                    retries += 1;
                }
            }
        }
        assert!(retries <= requests / 5 + 50, "{retries} retries");
        assert!(retries >= requests / 5, "{retries} retries");
    }
}
