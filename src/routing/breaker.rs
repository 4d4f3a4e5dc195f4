//! The circuit breaker of one deployment: closed → open (ejected for a cooldown) → half-open
//! (one probe at a time) → closed again, or open again with a longer cooldown.
//!
//! Pure: every call takes `now`. A shard keeps one per deployment and acts on its own
//! failures at once; the scorer keeps one per deployment over every shard's outcomes and
//! publishes its state, so every shard sees the merged verdict within one snapshot.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::scoring::SuccessWindow;

/// Default consecutive failures that eject a deployment.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// Default error ratio over the window that ejects a deployment...
pub const DEFAULT_ERROR_RATIO: f64 = 0.5;
/// ...once the window holds at least this many attempts.
pub const DEFAULT_MIN_VOLUME: u64 = 20;
/// Default window for the error ratio.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
/// Default first cooldown; each ejection in a row doubles it...
pub const DEFAULT_BASE_COOLDOWN: Duration = Duration::from_secs(5);
/// ...up to this.
pub const DEFAULT_MAX_COOLDOWN: Duration = Duration::from_secs(300);

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures that eject.
    pub consecutive_failures: u32,
    /// Failed share of the window's attempts that ejects (with `min_volume`).
    pub error_ratio: f64,
    /// Attempts the window must hold before the ratio counts.
    pub min_volume: u64,
    /// Length of the error-ratio window.
    pub window: Duration,
    /// First cooldown.
    pub base_cooldown: Duration,
    /// Longest cooldown.
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            error_ratio: DEFAULT_ERROR_RATIO,
            min_volume: DEFAULT_MIN_VOLUME,
            window: DEFAULT_WINDOW,
            base_cooldown: DEFAULT_BASE_COOLDOWN,
            max_cooldown: DEFAULT_MAX_COOLDOWN,
        }
    }
}

/// A breaker's state as reported (metrics gauge, admin output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Taking traffic.
    Closed,
    /// Ejected until its cooldown ends.
    Open,
    /// Cooldown over: one probe at a time decides.
    HalfOpen,
}

impl BreakerState {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

/// Whether an attempt may go to the deployment now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Yes, as usual.
    Yes,
    /// Yes, as the half-open probe: its verdict closes or re-opens the breaker.
    Probe,
    /// No: ejected, or a probe is already out.
    No,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// One deployment's breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    phase: Phase,
    consecutive: u32,
    window: SuccessWindow,
    /// Ejections in a row without a recovery: the next cooldown is base × 2^(n-1).
    ejections: u32,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            phase: Phase::Closed,
            consecutive: 0,
            window: SuccessWindow::new(config.window),
            ejections: 0,
        }
    }

    /// The state at `now` (an open breaker whose cooldown is over reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until } if now < until => BreakerState::Open,
            Phase::Open { .. } | Phase::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// When an open breaker's cooldown ends.
    pub fn open_until(&self) -> Option<Instant> {
        match self.phase {
            Phase::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Ejections in a row so far.
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    /// May an attempt go now? A `Probe` answer must be followed by [`Breaker::record`]
    /// with `probe = true` or by [`Breaker::release_probe`].
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.phase {
            Phase::Closed => Admit::Yes,
            Phase::Open { until } if now < until => Admit::No,
            Phase::Open { .. } | Phase::HalfOpen { probing: false } => {
                self.phase = Phase::HalfOpen { probing: true };
                Admit::Probe
            }
            Phase::HalfOpen { probing: true } => Admit::No,
        }
    }

    /// A probe ended without a verdict (the client went away): another may go.
    pub fn release_probe(&mut self) {
        if let Phase::HalfOpen { probing: true } = self.phase {
            self.phase = Phase::HalfOpen { probing: false };
        }
    }

    /// Fold in one attempt's result. `may_eject` is false when opening would leave a model
    /// without any healthy deployment (the last one is never ejected). Returns the new state
    /// when this result changed it.
    pub fn record(
        &mut self,
        ok: bool,
        probe: bool,
        may_eject: bool,
        now: Instant,
    ) -> Option<BreakerState> {
        self.window.record(ok, now);
        if ok {
            self.consecutive = 0;
        } else {
            self.consecutive = self.consecutive.saturating_add(1);
        }
        let trips = !ok && may_eject && self.phase == Phase::Closed && self.should_open(now);
        match self.phase {
            Phase::HalfOpen { .. } | Phase::Open { .. } if probe => {
                if ok {
                    self.close();
                    Some(BreakerState::Closed)
                } else {
                    self.open(now);
                    Some(BreakerState::Open)
                }
            }
            Phase::Closed if trips => {
                self.open(now);
                Some(BreakerState::Open)
            }
            // Results of attempts sent before the breaker opened say nothing new.
            _ => None,
        }
    }

    /// Open now (the scorer's merged verdict reached this shard), unless already open.
    pub fn force_open(&mut self, until: Instant) {
        if !matches!(self.phase, Phase::Open { .. }) {
            self.phase = Phase::Open { until };
        }
    }

    fn should_open(&mut self, now: Instant) -> bool {
        if self.consecutive >= self.config.consecutive_failures {
            return true;
        }
        let (ok, failed) = self.window.totals(now);
        let n = ok + failed;
        n >= self.config.min_volume && failed as f64 >= self.config.error_ratio * n as f64
    }

    fn open(&mut self, now: Instant) {
        self.ejections = self.ejections.saturating_add(1);
        self.phase = Phase::Open {
            until: now + self.cooldown(),
        };
    }

    fn close(&mut self) {
        self.phase = Phase::Closed;
        self.consecutive = 0;
        self.ejections = 0;
        self.window.clear();
    }

    /// The cooldown of the current ejection.
    fn cooldown(&self) -> Duration {
        let doublings = self.ejections.saturating_sub(1).min(20);
        self.config
            .base_cooldown
            .saturating_mul(1 << doublings)
            .min(self.config.max_cooldown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn config() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            error_ratio: 0.5,
            min_volume: 10,
            window: Duration::from_secs(30),
            base_cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(20),
        }
    }

    #[test]
    fn consecutive_failures_open_then_a_probe_closes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        assert_eq!(b.record(false, false, true, t0), None);
        assert_eq!(b.record(false, false, true, t0), None);
        assert_eq!(b.admit(t0), Admit::Yes);
        assert_eq!(b.record(false, false, true, t0), Some(BreakerState::Open));
        assert_eq!(b.state(t0 + 4 * S), BreakerState::Open);
        assert_eq!(b.admit(t0 + 4 * S), Admit::No);
        // Cooldown over: one probe, and only one.
        assert_eq!(b.state(t0 + 5 * S), BreakerState::HalfOpen);
        assert_eq!(b.admit(t0 + 5 * S), Admit::Probe);
        assert_eq!(b.admit(t0 + 5 * S), Admit::No);
        assert_eq!(
            b.record(true, true, true, t0 + 6 * S),
            Some(BreakerState::Closed)
        );
        assert_eq!(b.admit(t0 + 6 * S), Admit::Yes);
        assert_eq!(b.ejections(), 0);
    }

    #[test]
    fn a_failed_probe_reopens_with_a_longer_cooldown_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            b.record(false, false, true, t0);
        }
        let mut now = t0;
        for want in [10, 20, 20] {
            now = b.open_until().unwrap();
            assert_eq!(b.admit(now), Admit::Probe);
            assert_eq!(b.record(false, true, true, now), Some(BreakerState::Open));
            assert_eq!(b.open_until().unwrap() - now, Duration::from_secs(want));
        }
        // A released probe lets the next one through.
        let later = b.open_until().unwrap();
        assert_eq!(b.admit(later), Admit::Probe);
        b.release_probe();
        assert_eq!(b.admit(later), Admit::Probe);
        assert!(now < later);
    }

    #[test]
    fn the_error_ratio_needs_its_minimum_volume() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        // Alternate: never 3 in a row, but half of the attempts fail.
        for i in 0..9 {
            assert_eq!(b.record(i % 2 == 0, false, true, t0), None, "at {i}");
        }
        assert_eq!(b.record(false, false, true, t0), Some(BreakerState::Open));
    }

    #[test]
    fn the_last_healthy_deployment_is_never_ejected() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        for _ in 0..50 {
            assert_eq!(b.record(false, false, false, t0), None);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        // Once it may, the next failure ejects.
        assert_eq!(b.record(false, false, true, t0), Some(BreakerState::Open));
    }

    #[test]
    fn late_results_of_attempts_sent_before_opening_change_nothing() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        for _ in 0..3 {
            b.record(false, false, true, t0);
        }
        let until = b.open_until();
        assert_eq!(b.record(true, false, true, t0 + S), None);
        assert_eq!(b.record(false, false, true, t0 + S), None);
        assert_eq!(b.open_until(), until);
    }

    #[test]
    fn a_merged_verdict_opens_a_closed_breaker() {
        let t0 = Instant::now();
        let mut b = Breaker::new(config());
        b.force_open(t0 + 7 * S);
        assert_eq!(b.admit(t0 + 6 * S), Admit::No);
        assert_eq!(b.admit(t0 + 7 * S), Admit::Probe);
    }
}
