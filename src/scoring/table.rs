//! Per-deployment statistics and the score table snapshot.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde::ser::{SerializeMap, SerializeStruct, Serializer};

use super::Ewma;
use crate::config::Config;
use crate::routing::breaker::BreakerState;
use crate::{DeploymentId, DeploymentIdx, ModelIdx};

/// Latency decay constant.
pub const DEFAULT_TAU: Duration = Duration::from_secs(10);
/// Success window: this many buckets...
pub const WINDOW_BUCKETS: usize = 6;
/// ...of this length each.
pub const WINDOW_BUCKET: Duration = Duration::from_secs(10);
/// A latency figure younger than this is current; an older one fades (toward zero, by the
/// EWMA's own decay) until the deployment is measured again.
pub const STALE_AFTER: Duration = Duration::from_secs(1);
/// Samples needed in the window before a score is trusted.
pub const DEFAULT_MIN_SAMPLES: u64 = 10;
/// The value of a term the scorer has no input for (no configured quality, no price, no
/// latency sample and no failure): halfway, so that it neither wins nor loses against
/// deployments that have one.
pub const NEUTRAL_TERM: f64 = 0.5;

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

/// What the scorer knows of one deployment from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentInfo {
    /// Its id, as published (`/admin/scores`, metric labels).
    pub id: DeploymentId,
    /// Price of one input token plus one output token, in pico-USD (that is USD per million
    /// input tokens plus USD per million output tokens, × 10⁶). `None`: unpriced.
    pub io_price_pico_usd: Option<u64>,
    /// Configured quality in `0..=1`; `None`: unknown.
    pub quality: Option<f64>,
    /// The models listing it.
    pub models: Vec<ModelIdx>,
}

impl DeploymentInfo {
    /// One per deployment of `config`, in `DeploymentIdx` order.
    pub fn from_config(config: &Config) -> Vec<Self> {
        config
            .deployments
            .iter()
            .map(|d| Self {
                id: d.id.clone(),
                io_price_pico_usd: d.price.map(|p| p.input.saturating_add(p.output)),
                quality: d.quality,
                models: d.models.clone(),
            })
            .collect()
    }
}

/// The scorer's breaker verdict on one deployment, as it goes into a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerView {
    /// The state when the table is computed.
    pub state: BreakerState,
    /// When an open breaker's cooldown ends.
    pub open_until: Option<Instant>,
    /// Times the scorer's breaker has opened since start.
    pub ejections: u32,
}

impl Default for BreakerView {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed,
            open_until: None,
            ejections: 0,
        }
    }
}

/// The four terms of a score, each in `0..=1`, higher is better.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ScoreTerms {
    /// Fastest trusted latency EWMA / this one's; 0 when the window holds failures and no
    /// success; [`NEUTRAL_TERM`] with no sample at all.
    pub latency: f64,
    /// The configured quality; [`NEUTRAL_TERM`] when unset.
    pub quality: f64,
    /// Cheapest priced deployment's input + output price / this one's; [`NEUTRAL_TERM`] when
    /// unpriced.
    pub cost: f64,
    /// The success ratio in the window.
    pub availability: f64,
}

/// A deployment's published figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeploymentScore {
    /// The deployment's id.
    pub id: String,
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
    /// Blended score in 0..=1, higher is better (see [`ScoreTable::compute`]).
    pub score: f64,
    /// The blend's terms.
    pub terms: ScoreTerms,
    /// The scorer's breaker, merged over every shard's outcomes.
    pub breaker: BreakerState,
    /// An open breaker's remaining cooldown, in ms from the table's publication.
    pub open_until_ms: Option<u64>,
    /// Times the scorer's breaker has opened since start.
    pub ejections: u32,
}

/// The snapshot every shard holds: one version, swapped in whole.
///
/// `deployments[i]` is the deployment at `DeploymentIdx(i)` of the config the scorer was
/// started with. It serialises as `{"version": n, "deployments": {"<id>": {...}, ...}}`, in
/// `DeploymentIdx` order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoreTable {
    /// Increases by one with each publication.
    pub version: u64,
    /// Per deployment, indexed by `DeploymentIdx`.
    pub deployments: Vec<DeploymentScore>,
    /// When the scorer computed it (`open_until_ms` counts from here); `None` for the empty
    /// table a shard starts with.
    pub published_at: Option<Instant>,
    /// Requests in flight per shard (by shard index) and deployment (`DeploymentIdx`), as
    /// each shard last reported them: what `least_busy` knows of the other shards.
    pub in_flight: Vec<Vec<u32>>,
}

impl Serialize for ScoreTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct ById<'a>(&'a [DeploymentScore]);
        impl Serialize for ById<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.len()))?;
                for d in self.0 {
                    map.serialize_entry(&d.id, d)?;
                }
                map.end()
            }
        }
        let mut st = s.serialize_struct("ScoreTable", 2)?;
        st.serialize_field("version", &self.version)?;
        st.serialize_field("deployments", &ById(&self.deployments))?;
        st.end()
    }
}

impl ScoreTable {
    /// The figures of deployment `d` (O(1)); `None` before the first table.
    pub fn get(&self, d: DeploymentIdx) -> Option<&DeploymentScore> {
        self.deployments.get(d.get())
    }

    /// The figures of the deployment with id `id` (a linear search: for tools and tests).
    pub fn by_id(&self, id: &str) -> Option<&DeploymentScore> {
        self.deployments.iter().find(|d| d.id == id)
    }

    /// Requests in flight at `d` from every shard but `shard` (as last reported).
    pub fn in_flight_elsewhere(&self, shard: usize, d: DeploymentIdx) -> u32 {
        self.in_flight
            .iter()
            .enumerate()
            .filter(|(s, _)| *s != shard)
            .filter_map(|(_, load)| load.get(d.get()))
            .fold(0u32, |sum, n| sum.saturating_add(*n))
    }

    /// The score of `d` when it is trusted (what the `score` strategy ranks by).
    pub fn trusted_score(&self, d: DeploymentIdx) -> Option<f64> {
        self.get(d).filter(|s| s.trusted).map(|s| s.score)
    }

    /// When the scorer's open breaker of `d` ends its cooldown, as an `Instant` again.
    pub fn open_until(&self, d: DeploymentIdx) -> Option<Instant> {
        let ms = self.get(d)?.open_until_ms?;
        Some(self.published_at? + Duration::from_millis(ms))
    }

    /// Compute a table. `deployments`, `stats` and `breakers` are indexed alike by
    /// `DeploymentIdx` (missing stats or breakers count as empty and closed).
    ///
    /// The score is the weighted mean of four terms ([`ScoreTerms`]), **multiplied by the
    /// success ratio**: a score is the value of one attempt, and an attempt that fails brings
    /// nothing (and costs a retry), so a deployment failing everything scores 0 whatever its
    /// latency, price or quality, and one failing half its attempts keeps half its blend.
    /// Availability also stays in the blend with its own weight, so that among deployments
    /// with the same success ratio the weights still read as configured.
    ///
    /// - Latency is relative to the fastest *trusted* deployment (one with `min_samples` in
    ///   its window and a latency sample), so a lucky first sample from a new deployment
    ///   does not rescale everyone; with no trusted one, to the fastest of all. A figure
    ///   older than [`STALE_AFTER`] fades ([`Ewma::get_at`]): a deployment left alone since
    ///   it was slow looks better and better until it wins a request and is measured again
    ///   (else one that recovers would never get traffic back). A deployment
    ///   whose window holds failures and no success gets 0 (the worst): it has no good
    ///   latency to show. One with no sample at all is neutral.
    /// - Quality is the configured `quality` (fed-back quality can replace it later);
    ///   unset is neutral.
    /// - Cost is the cheapest priced deployment's input + output price over this one's
    ///   (free is 1, and when the cheapest is free the others get 0); unpriced is neutral.
    /// - Availability is the success ratio (1 with no sample).
    pub fn compute(
        version: u64,
        deployments: &[DeploymentInfo],
        stats: &mut [DeploymentStats],
        breakers: &[BreakerView],
        weights: Weights,
        min_samples: u64,
        now: Instant,
    ) -> Self {
        // First pass: window totals and latency of each.
        let seen: Vec<Seen> = (0..deployments.len())
            .map(|i| {
                stats
                    .get_mut(i)
                    .map_or_else(Seen::default, |s| Seen::of(s, now))
            })
            .collect();
        let fastest = |trusted_only: bool| {
            seen.iter()
                .filter(|s| !trusted_only || s.samples() >= min_samples)
                // An old latency of a deployment that now fails everything is no yardstick.
                .filter(|s| !s.only_failures())
                .filter_map(|s| s.latency_now)
                .filter(|l| l.is_finite())
                .fold(f64::INFINITY, f64::min)
        };
        let best_latency = Some(fastest(true))
            .filter(|b| b.is_finite())
            .unwrap_or_else(|| fastest(false));
        let cheapest = deployments.iter().filter_map(|d| d.io_price_pico_usd).min();
        let weight_sum = (weights.latency + weights.quality + weights.cost + weights.availability)
            .max(f64::MIN_POSITIVE);

        let deployments = deployments
            .iter()
            .zip(seen)
            .enumerate()
            .map(|(i, (info, seen))| {
                let n = seen.samples();
                let success_ratio = if n == 0 {
                    1.0
                } else {
                    seen.ok as f64 / n as f64
                };
                let terms = ScoreTerms {
                    latency: latency_term(&seen, best_latency),
                    quality: info.quality.map_or(NEUTRAL_TERM, |q| q.clamp(0.0, 1.0)),
                    cost: cost_term(info.io_price_pico_usd, cheapest),
                    availability: success_ratio,
                };
                let blend = (weights.latency * terms.latency
                    + weights.quality * terms.quality
                    + weights.cost * terms.cost
                    + weights.availability * terms.availability)
                    / weight_sum;
                let breaker = breakers.get(i).copied().unwrap_or_default();
                DeploymentScore {
                    id: info.id.as_str().to_owned(),
                    latency_ewma_ms: seen.latency,
                    ttfb_ewma_ms: seen.ttfb,
                    success_ratio,
                    window_samples: n,
                    total_samples: seen.total,
                    trusted: n >= min_samples,
                    score: (blend * success_ratio).clamp(0.0, 1.0),
                    terms,
                    breaker: breaker.state,
                    open_until_ms: breaker.open_until.map(|until| {
                        u64::try_from(until.saturating_duration_since(now).as_millis())
                            .unwrap_or(u64::MAX)
                    }),
                    ejections: breaker.ejections,
                }
            })
            .collect();
        Self {
            version,
            deployments,
            published_at: Some(now),
            in_flight: Vec::new(),
        }
    }
}

/// One deployment's figures as of one computation.
#[derive(Debug, Default)]
struct Seen {
    ok: u64,
    failed: u64,
    latency: Option<f64>,
    /// `latency` read at `now` (decayed since its last sample): what the term compares.
    latency_now: Option<f64>,
    ttfb: Option<f64>,
    total: u64,
}

impl Seen {
    fn of(s: &mut DeploymentStats, now: Instant) -> Self {
        let (ok, failed) = s.window.totals(now);
        Self {
            ok,
            failed,
            latency: s.latency.get(),
            latency_now: s
                .latency
                .get_at(now.checked_sub(STALE_AFTER).unwrap_or(now)),
            ttfb: s.ttfb.get(),
            total: s.total,
        }
    }

    fn samples(&self) -> u64 {
        self.ok + self.failed
    }

    /// Failures in the window and no success.
    fn only_failures(&self) -> bool {
        self.ok == 0 && self.failed > 0
    }
}

fn latency_term(seen: &Seen, best: f64) -> f64 {
    if seen.only_failures() {
        return 0.0;
    }
    match seen.latency_now {
        Some(l) if l <= 0.0 => 1.0,
        Some(l) if best.is_finite() => (best / l).clamp(0.0, 1.0),
        _ => NEUTRAL_TERM,
    }
}

fn cost_term(price: Option<u64>, cheapest: Option<u64>) -> f64 {
    match (price, cheapest) {
        (Some(0), _) => 1.0,
        (Some(p), Some(c)) => (c as f64 / p as f64).clamp(0.0, 1.0),
        _ => NEUTRAL_TERM,
    }
}

/// What happened on one upstream attempt, as shards report it to the scorer.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The deployment tried.
    pub deployment: DeploymentIdx,
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

#[cfg(test)]
mod tests;
