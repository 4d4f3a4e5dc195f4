//! Per-deployment statistics and the score table snapshot.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Ewma;
use crate::DeploymentId;

/// Latency decay constant.
pub const DEFAULT_TAU: Duration = Duration::from_secs(10);
/// Success window: this many buckets...
pub const WINDOW_BUCKETS: usize = 6;
/// ...of this length each.
pub const WINDOW_BUCKET: Duration = Duration::from_secs(10);
/// Samples needed in the window before a score is trusted.
pub const DEFAULT_MIN_SAMPLES: u64 = 10;

/// Score blend weights (the design's defaults).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Weights {
    /// Latency weight.
    pub latency: f64,
    /// Quality weight.
    pub quality: f64,
    /// Cost weight.
    pub cost: f64,
    /// Availability weight.
    pub availability: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            latency: 0.4,
            quality: 0.3,
            cost: 0.2,
            availability: 0.1,
        }
    }
}

/// Successes and failures over a sliding window of [`WINDOW_BUCKETS`] fixed buckets.
#[derive(Debug, Clone)]
pub struct SuccessWindow {
    buckets: [(u64, u64); WINDOW_BUCKETS],
    bucket: Duration,
    head_start: Option<Instant>,
    head: usize,
}

impl Default for SuccessWindow {
    fn default() -> Self {
        Self::new(WINDOW_BUCKET * WINDOW_BUCKETS as u32)
    }
}

impl SuccessWindow {
    /// A window `span` long (kept in [`WINDOW_BUCKETS`] buckets; at least 1 ms each).
    pub fn new(span: Duration) -> Self {
        Self {
            buckets: [(0, 0); WINDOW_BUCKETS],
            bucket: (span / WINDOW_BUCKETS as u32).max(Duration::from_millis(1)),
            head_start: None,
            head: 0,
        }
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.buckets = [(0, 0); WINDOW_BUCKETS];
    }

    fn advance(&mut self, now: Instant) {
        let Some(start) = self.head_start else {
            self.head_start = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        let steps = (elapsed.as_nanos() / self.bucket.as_nanos()) as usize;
        if steps == 0 {
            return;
        }
        for _ in 0..steps.min(WINDOW_BUCKETS) {
            self.head = (self.head + 1) % WINDOW_BUCKETS;
            self.buckets[self.head] = (0, 0);
        }
        self.head_start = Some(start + self.bucket * steps.min(u32::MAX as usize) as u32);
    }

    /// Record one attempt.
    pub fn record(&mut self, ok: bool, now: Instant) {
        self.advance(now);
        let b = &mut self.buckets[self.head];
        if ok { b.0 += 1 } else { b.1 += 1 }
    }

    /// (successes, failures) in the window as of `now`.
    pub fn totals(&mut self, now: Instant) -> (u64, u64) {
        self.advance(now);
        self.buckets
            .iter()
            .fold((0, 0), |(s, f), b| (s + b.0, f + b.1))
    }
}

/// One upstream attempt as the scorer sees it.
#[derive(Debug, Clone, Copy)]
pub struct Observation {
    /// Whether the attempt succeeded.
    pub ok: bool,
    /// Total time of the attempt.
    pub latency: Duration,
    /// Time to the response head.
    pub ttfb: Duration,
}

/// Running statistics of one deployment.
#[derive(Debug, Clone)]
pub struct DeploymentStats {
    latency: Ewma,
    ttfb: Ewma,
    window: SuccessWindow,
    total: u64,
}

impl Default for DeploymentStats {
    fn default() -> Self {
        Self {
            latency: Ewma::new(DEFAULT_TAU),
            ttfb: Ewma::new(DEFAULT_TAU),
            window: SuccessWindow::default(),
            total: 0,
        }
    }
}

impl DeploymentStats {
    /// Fold one observation in. Failed attempts count for availability only: their latency
    /// says little about a healthy answer.
    pub fn observe(&mut self, o: Observation, now: Instant) {
        self.total += 1;
        self.window.record(o.ok, now);
        if o.ok {
            self.latency.observe(o.latency.as_secs_f64() * 1e3, now);
            self.ttfb.observe(o.ttfb.as_secs_f64() * 1e3, now);
        }
    }
}

/// A deployment's published figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeploymentScore {
    /// EWMA of total latency of successful attempts, ms.
    pub latency_ewma_ms: Option<f64>,
    /// EWMA of time to first byte of successful attempts, ms.
    pub ttfb_ewma_ms: Option<f64>,
    /// Successes / attempts in the window (1.0 with no samples).
    pub success_ratio: f64,
    /// Attempts in the window.
    pub window_samples: u64,
    /// Attempts ever seen.
    pub total_samples: u64,
    /// Whether the window holds enough samples to trust the score.
    pub trusted: bool,
    /// Blended score in 0..=1, higher is better.
    pub score: f64,
}

/// The snapshot every shard holds: one version, swapped in whole.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScoreTable {
    /// Increases by one with each publication.
    pub version: u64,
    /// Per deployment.
    pub deployments: BTreeMap<String, DeploymentScore>,
}

impl ScoreTable {
    /// Compute a table from running stats. Latency is scored relative to the fastest
    /// deployment (fastest = 1.0); quality and cost have no inputs yet and count as neutral.
    pub fn compute(
        version: u64,
        stats: &mut BTreeMap<DeploymentId, DeploymentStats>,
        weights: Weights,
        min_samples: u64,
        now: Instant,
    ) -> Self {
        let best = stats
            .values()
            .filter_map(|s| s.latency.get())
            .fold(f64::INFINITY, f64::min);
        let deployments = stats
            .iter_mut()
            .map(|(id, s)| {
                let (ok, failed) = s.window.totals(now);
                let n = ok + failed;
                let success_ratio = if n == 0 { 1.0 } else { ok as f64 / n as f64 };
                let latency = s.latency.get();
                let latency_score = match latency {
                    Some(l) if l > 0.0 && best.is_finite() => (best / l).clamp(0.0, 1.0),
                    _ => 1.0,
                };
                let score = (weights.latency * latency_score
                    + weights.quality
                    + weights.cost
                    + weights.availability * success_ratio)
                    / (weights.latency + weights.quality + weights.cost + weights.availability)
                        .max(f64::MIN_POSITIVE);
                let score = DeploymentScore {
                    latency_ewma_ms: latency,
                    ttfb_ewma_ms: s.ttfb.get(),
                    success_ratio,
                    window_samples: n,
                    total_samples: s.total,
                    trusted: n >= min_samples,
                    score,
                };
                (id.0.to_string(), score)
            })
            .collect();
        Self {
            version,
            deployments,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(s: &str) -> DeploymentId {
        DeploymentId(s.into())
    }

    #[test]
    fn window_slides_and_forgets() {
        let t0 = Instant::now();
        let mut w = SuccessWindow::default();
        w.record(true, t0);
        w.record(false, t0 + Duration::from_secs(15));
        assert_eq!(w.totals(t0 + Duration::from_secs(20)), (1, 1));
        // After the whole window has passed, the first bucket is gone.
        assert_eq!(
            w.totals(t0 + WINDOW_BUCKET * WINDOW_BUCKETS as u32 + Duration::from_secs(1)),
            (0, 1)
        );
        assert_eq!(w.totals(t0 + Duration::from_secs(1000)), (0, 0));
    }

    #[test]
    fn fast_beats_slow_and_failures_lower_availability() {
        let t0 = Instant::now();
        let mut stats = BTreeMap::new();
        for i in 0..20 {
            let now = t0 + Duration::from_millis(i * 10);
            stats
                .entry(dep("a/fast"))
                .or_insert_with(DeploymentStats::default)
                .observe(
                    Observation {
                        ok: true,
                        latency: Duration::from_millis(10),
                        ttfb: Duration::from_millis(5),
                    },
                    now,
                );
            stats
                .entry(dep("b/slow"))
                .or_insert_with(DeploymentStats::default)
                .observe(
                    Observation {
                        ok: i % 2 == 0,
                        latency: Duration::from_millis(200),
                        ttfb: Duration::from_millis(150),
                    },
                    now,
                );
        }
        let t = ScoreTable::compute(
            7,
            &mut stats,
            Weights::default(),
            10,
            t0 + Duration::from_secs(1),
        );
        let fast = &t.deployments["a/fast"];
        let slow = &t.deployments["b/slow"];
        assert_eq!(t.version, 7);
        assert!((fast.latency_ewma_ms.unwrap() - 10.0).abs() < 1e-6);
        assert!((slow.latency_ewma_ms.unwrap() - 200.0).abs() < 1e-6);
        assert_eq!(fast.success_ratio, 1.0);
        assert_eq!(slow.success_ratio, 0.5);
        assert!(fast.trusted && slow.trusted);
        assert!(fast.score > slow.score, "{} vs {}", fast.score, slow.score);
    }

    #[test]
    fn few_samples_are_not_trusted() {
        let t0 = Instant::now();
        let mut stats = BTreeMap::new();
        stats
            .entry(dep("a/x"))
            .or_insert_with(DeploymentStats::default)
            .observe(
                Observation {
                    ok: true,
                    latency: Duration::from_millis(1),
                    ttfb: Duration::from_millis(1),
                },
                t0,
            );
        let t = ScoreTable::compute(1, &mut stats, Weights::default(), 10, t0);
        assert!(!t.deployments["a/x"].trusted);
    }
}

/// What happened on one upstream attempt, as shards report it to the scorer.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The deployment tried.
    pub deployment: DeploymentId,
    /// Whether it answered completely and successfully.
    pub ok: bool,
    /// HTTP status (0 when none was received).
    pub status: u16,
    /// Whole attempt duration.
    pub latency: Duration,
    /// Time to the response head.
    pub ttfb: Duration,
    /// Usage, when reported.
    pub usage: Option<crate::api::Usage>,
    /// What the usage cost, for models with a price.
    pub cost: Option<crate::budget::Cost>,
    /// When it ended.
    pub at: Instant,
}

impl Outcome {
    /// The part the statistics use.
    pub fn observation(&self) -> Observation {
        Observation {
            ok: self.ok,
            latency: self.latency,
            ttfb: self.ttfb,
        }
    }
}
