//! Open-loop arrival schedules: when the i-th request is meant to be sent.
//!
//! A schedule is a list of stages, each holding a constant rate or ramping linearly from one
//! rate to another. Request `i` is due when the integral of the rate since the start reaches
//! `i` (the first request at 0). Latency is measured from this intended time, not from when
//! the request actually left, so a slow server cannot hide its queueing (no coordinated
//! omission).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One stage of an open-loop schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Stage length in seconds.
    pub seconds: f64,
    /// Rate at the start of the stage, requests per second.
    pub from: f64,
    /// Rate at the end of the stage (equal to `from` for a constant rate).
    pub to: f64,
}

impl Stage {
    /// A constant rate for `seconds`.
    pub fn constant(rate: f64, seconds: f64) -> Self {
        Self {
            seconds,
            from: rate,
            to: rate,
        }
    }

    /// Requests issued over the whole stage (the integral of its rate).
    fn requests(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.seconds
    }

    /// Seconds into the stage at which `n` requests have been issued (`n` within the stage).
    fn time_of(&self, n: f64) -> f64 {
        let slope = (self.to - self.from) / self.seconds;
        if slope.abs() < 1e-12 {
            return n / self.from;
        }
        // n = from·t + slope·t²/2, solved for the root that is non-negative and in range.
        let disc = (self.from * self.from + 2.0 * slope * n).max(0.0);
        (disc.sqrt() - self.from) / slope
    }
}

/// The intended send times of an open-loop run.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    stages: Vec<Stage>,
    /// Requests issued before each stage, and the stage's start time.
    starts: Vec<(f64, f64)>,
    total: u64,
}

/// Why a schedule cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    /// No stages.
    #[error("an open-loop schedule needs at least one stage")]
    Empty,
    /// A stage with a zero or negative length, or a negative rate.
    #[error("stage {0}: length must be > 0 and rates >= 0, with some traffic")]
    BadStage(usize),
}

impl Schedule {
    /// Build a schedule from its stages.
    pub fn new(stages: Vec<Stage>) -> Result<Self, ScheduleError> {
        if stages.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let mut starts = Vec::with_capacity(stages.len());
        let (mut n, mut t) = (0.0, 0.0);
        for (i, s) in stages.iter().enumerate() {
            let finite = s.seconds.is_finite() && s.from.is_finite() && s.to.is_finite();
            if !finite || s.seconds <= 0.0 || s.from < 0.0 || s.to < 0.0 || s.from + s.to <= 0.0 {
                return Err(ScheduleError::BadStage(i));
            }
            starts.push((n, t));
            n += s.requests();
            t += s.seconds;
        }
        Ok(Self {
            stages,
            starts,
            total: n.floor() as u64,
        })
    }

    /// How many requests the whole schedule issues.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Total length.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.stages.iter().map(|s| s.seconds).sum())
    }

    /// When request `i` (0-based) is due, from the start of the run; `None` past the end.
    pub fn due(&self, i: u64) -> Option<Duration> {
        if i >= self.total {
            return None;
        }
        let n = i as f64;
        let k = self.starts.partition_point(|&(before, _)| before <= n) - 1;
        let (before, start) = self.starts[k];
        let t = start + self.stages[k].time_of(n - before);
        Some(Duration::from_secs_f64(t.max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_rate_spaces_requests_evenly() {
        let s = Schedule::new(vec![Stage::constant(1000.0, 2.0)]).unwrap();
        assert_eq!(s.total(), 2000);
        assert_eq!(s.due(0), Some(Duration::ZERO));
        assert_eq!(s.due(1), Some(Duration::from_millis(1)));
        assert_eq!(s.due(1500), Some(Duration::from_millis(1500)));
        assert_eq!(s.due(2000), None);
    }

    #[test]
    fn a_linear_ramp_issues_its_integral_and_speeds_up() {
        // 0 → 2000 req/s over 30 s: 30,000 requests; half of them in the last ~8.8 s.
        let s = Schedule::new(vec![Stage {
            seconds: 30.0,
            from: 0.0,
            to: 2000.0,
        }])
        .unwrap();
        assert_eq!(s.total(), 30_000);
        // n(t) = 2000/30 · t² / 2 → t(n) = sqrt(30 n / 1000)
        let t = s.due(15_000).unwrap().as_secs_f64();
        assert!((t - (30.0f64 * 15.0).sqrt()).abs() < 1e-9, "{t}");
        let gaps: Vec<f64> = (1..30_000)
            .map(|i| (s.due(i).unwrap() - s.due(i - 1).unwrap()).as_secs_f64())
            .collect();
        assert!(
            gaps.windows(2).all(|w| w[1] <= w[0] + 1e-9),
            "gaps must shrink"
        );
        let last = gaps[gaps.len() - 1];
        assert!((last - 1.0 / 2000.0).abs() < 2e-5, "{last}");
    }

    #[test]
    fn stages_chain_without_a_gap() {
        let s = Schedule::new(vec![
            Stage {
                seconds: 1.0,
                from: 0.0,
                to: 100.0,
            },
            Stage::constant(100.0, 1.0),
        ])
        .unwrap();
        assert_eq!(s.total(), 150);
        // Request 50 opens the second stage, exactly at t = 1 s; then one every 10 ms.
        assert_eq!(s.due(50), Some(Duration::from_secs(1)));
        let d = s.due(60).unwrap().as_secs_f64();
        assert!((d - 1.1).abs() < 1e-9, "{d}");
        let times: Vec<_> = (0..150).map(|i| s.due(i).unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert!(s.due(149).unwrap() < s.duration());
    }

    #[test]
    fn rejects_empty_and_bad_stages() {
        assert_eq!(Schedule::new(vec![]), Err(ScheduleError::Empty));
        assert_eq!(
            Schedule::new(vec![Stage::constant(10.0, 1.0), Stage::constant(10.0, 0.0)]),
            Err(ScheduleError::BadStage(1))
        );
        assert_eq!(
            Schedule::new(vec![Stage::constant(0.0, 1.0)]),
            Err(ScheduleError::BadStage(0))
        );
    }
}
