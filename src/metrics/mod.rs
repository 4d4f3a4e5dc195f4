//! Per-shard metrics and their Prometheus rendering.
//!
//! Owns: counters, gauges and histograms of each shard, and rendering all shards' figures as
//! one aggregated Prometheus text page.
//! Does not: aggregate by message. Each shard writes only its own [`ShardMetrics`]; any shard
//! serving `/metrics` reads all of them directly.
//! Key types: [`ShardMetrics`], [`Registry`], [`labels`].
//!
//! Why atomics here: a shard's block is written by that shard alone, with a plain relaxed
//! load and store (no read-modify-write, no lock prefix, no contention), which costs what a
//! `Cell` would. The atomics exist only so that another shard may *read* the block when it
//! renders `/metrics`, with no message and no lock.

pub mod labels;
pub mod log_limit;
mod render;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub use render::render;

use labels::{Route, StatusLabel, UpstreamOutcome};

/// A counter written by one shard only.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`. Only the owning shard calls this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Add one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A gauge written by one shard only.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Set the value.
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.store(v as u64, Relaxed);
    }

    /// Add one.
    #[inline]
    pub fn inc(&self) {
        self.0.store(self.0.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// Subtract one.
    #[inline]
    pub fn dec(&self) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(1), Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Relaxed) as i64
    }
}

/// Histogram bucket upper bounds, seconds.
pub const BUCKETS: [f64; 18] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// A latency histogram written by one shard only.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; BUCKETS.len()],
    count: Counter,
    sum_ns: Counter,
}

impl Histogram {
    /// Record one duration.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| s <= b) {
            self.buckets[i].inc();
        }
        self.count.inc();
        self.sum_ns.add(d.as_nanos().min(u64::MAX as u128) as u64);
    }

    /// (per-bucket counts, not cumulative; count; sum in seconds).
    pub fn snapshot(&self) -> ([u64; BUCKETS.len()], u64, f64) {
        let mut b = [0; BUCKETS.len()];
        for (o, c) in b.iter_mut().zip(&self.buckets) {
            *o = c.get();
        }
        (b, self.count.get(), self.sum_ns.get() as f64 / 1e9)
    }
}

/// Per-provider figures.
#[derive(Debug, Default)]
pub struct ProviderMetrics {
    /// Upstream attempts by outcome.
    pub attempts: [Counter; UpstreamOutcome::ALL.len()],
    /// Whole attempt duration.
    pub duration: Histogram,
    /// Time to the response head.
    pub ttfb: Histogram,
    /// Input tokens.
    pub input_tokens: Counter,
    /// Output tokens.
    pub output_tokens: Counter,
    /// Upstream connections opened.
    pub connects: Counter,
}

/// Usage and cost of one public model, on one shard.
#[derive(Debug, Default)]
pub struct ModelMetrics {
    /// Input tokens (cached ones included).
    pub input_tokens: Counter,
    /// Output tokens (reasoning included).
    pub output_tokens: Counter,
    /// Input tokens read from the provider's cache.
    pub cached_input_tokens: Counter,
    /// Reasoning tokens.
    pub reasoning_tokens: Counter,
    /// Cost in nano-dollars (models with a price).
    pub cost_nano_usd: Counter,
    /// Requests waiting in this model's queue now (also the queue's own count).
    pub queued: Gauge,
    /// How long queued requests waited, served or not.
    pub queue_wait: Histogram,
    /// Requests refused because every deployment was busy or cooling down (queue full, not
    /// waitable, or the wait ran out).
    pub queue_refused: Counter,
}

/// Figures of one deployment, on one shard.
#[derive(Debug, Default)]
pub struct DeploymentMetrics {
    /// Upstream attempts by outcome.
    pub attempts: [Counter; UpstreamOutcome::ALL.len()],
}

/// The response cache, per shard.
#[derive(Debug, Default)]
pub struct CacheMetrics {
    /// Requests answered from the cache.
    pub hits: Counter,
    /// Requests on a cached model the cache could not answer.
    pub misses: Counter,
    /// Requests on a cached model that opted out (`no-store`, `x-shardgate-cache: off`).
    pub bypassed: Counter,
    /// Requests that waited on an identical request in flight instead of going upstream.
    pub coalesced: Counter,
    /// Lookups sent to the key's owner shard.
    pub cross_shard: Counter,
    /// Hits served from this shard's copy of an answer it does not own (also in `hits`).
    pub replica_hits: Counter,
    /// Hits served from the L2 in Redis (also counted in `hits`).
    pub l2_hits: Counter,
    /// L2 lookups that did not answer within the Redis timeout.
    pub l2_timeouts: Counter,
    /// Answers stored (by the owner shard).
    pub stored: Counter,
    /// Answers not stored: incomplete, failed, or over the entry size limit.
    pub not_stored: Counter,
    /// Answers the partition turned away (heavier than an entry may be).
    pub refused: Counter,
    /// Entries evicted to make room.
    pub evictions: Counter,
    /// Entries removed by invalidation.
    pub invalidated: Counter,
    /// Entries held by this shard's partition.
    pub entries: Gauge,
    /// Bytes held by this shard's partition.
    pub bytes: Gauge,
    /// Hot answers fetched again before they expired (`cache.refresh_before_s`).
    pub refreshed: Counter,
    /// Refreshes that failed (the answer then expires as usual).
    pub refresh_failed: Counter,
    /// Requests answered with an earlier answer to a similar question (also in `hits`).
    pub semantic_hits: Counter,
    /// Semantic lookups that found no neighbour above the threshold.
    pub semantic_misses: Counter,
    /// Neighbours above the threshold the guard refused (negation, number, quote, name).
    pub semantic_refused: Counter,
    /// Semantic lookups that did not finish within `cache.semantic.timeout_ms`, or failed.
    pub semantic_timeouts: Counter,
    /// Shadow mode: requests that would have been semantic hits.
    pub shadow_would_hit: Counter,
    /// Shadow mode: would-be hits whose cached answer agreed with the fresh one.
    pub shadow_agreed: Counter,
    /// Shadow mode: would-be hits whose cached answer did not agree with the fresh one.
    pub shadow_disagreed: Counter,
}

/// Everything one shard counts.
#[derive(Debug)]
pub struct ShardMetrics {
    /// Requests by route and status.
    pub requests: [[Counter; StatusLabel::ALL.len()]; Route::ALL.len()],
    /// Request duration by route (downstream view).
    pub duration: [Histogram; Route::ALL.len()],
    /// Time spent in the gateway itself, excluding upstream.
    pub overhead: Histogram,
    /// Gateway errors by kind.
    pub errors: [Counter; labels::ERROR_KINDS.len()],
    /// Requests being handled now.
    pub inflight: Gauge,
    /// Open downstream connections.
    pub connections: Gauge,
    /// Downstream connections accepted.
    pub connections_total: Counter,
    /// Connections closed by the header or idle sweep.
    pub timeouts: Counter,
    /// Waiting connections closed near the connection cap to make room.
    pub connections_shed: Counter,
    /// Attempts after a request's first (failover and retries).
    pub retries: Counter,
    /// Retries the retry budget refused.
    pub retry_budget_refused: Counter,
    /// Deployments this shard's breakers ejected.
    pub ejections: Counter,
    /// Requests sent on to a context-window or content-policy fallback model.
    pub fallbacks: Counter,
    /// Panics caught while handling a request.
    pub panics: Counter,
    /// Requests admitted past auth, limits and budgets (with auth or limits configured).
    pub admitted: Counter,
    /// Requests refused by a limit or budget, by scope ([`labels::LIMIT_SCOPES`]) and
    /// measure ([`labels::LIMIT_MEASURES`]).
    pub limit_refusals: [[Counter; labels::LIMIT_MEASURES.len()]; labels::LIMIT_SCOPES.len()],
    /// Requests refused because no lease share came in the bounded wait.
    pub limit_wait_timeouts: Counter,
    /// The response cache on this shard.
    pub cache: CacheMetrics,

    /// Per provider, in config order.
    pub providers: Vec<ProviderMetrics>,
    /// Per public model, in config order.
    pub models: Vec<ModelMetrics>,
    /// Per deployment, in config order.
    pub deployments: Vec<DeploymentMetrics>,
}

impl ShardMetrics {
    /// Zeroed metrics for this many providers, models and deployments.
    pub fn new(providers: usize, models: usize, deployments: usize) -> Self {
        Self {
            requests: Default::default(),
            duration: Default::default(),
            overhead: Histogram::default(),
            errors: Default::default(),
            inflight: Gauge::default(),
            connections: Gauge::default(),
            connections_total: Counter::default(),
            timeouts: Counter::default(),
            connections_shed: Counter::default(),
            retries: Counter::default(),
            retry_budget_refused: Counter::default(),
            ejections: Counter::default(),
            fallbacks: Counter::default(),
            panics: Counter::default(),
            admitted: Counter::default(),
            limit_refusals: Default::default(),
            limit_wait_timeouts: Counter::default(),
            cache: CacheMetrics::default(),
            providers: (0..providers).map(|_| ProviderMetrics::default()).collect(),
            models: (0..models).map(|_| ModelMetrics::default()).collect(),
            deployments: (0..deployments)
                .map(|_| DeploymentMetrics::default())
                .collect(),
        }
    }

    /// Record a finished downstream request.
    #[inline]
    pub fn request(&self, route: Route, status: u16, elapsed: Duration) {
        self.requests[route as usize][StatusLabel::from_code(status) as usize].inc();
        self.duration[route as usize].observe(elapsed);
    }

    /// Requests this shard has answered, all routes.
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().flatten().map(Counter::get).sum()
    }
}

/// All shards' metrics, shared read-only between shards (each writes only its own).
#[derive(Debug, Clone)]
pub struct Registry {
    /// One block per shard, by shard index.
    pub shards: Arc<[Arc<ShardMetrics>]>,
    /// Provider ids, in config order (label values).
    pub providers: Arc<[Arc<str>]>,
    /// Public model names, in config order (label values).
    pub models: Arc<[Arc<str>]>,
    /// Deployment ids, in config order (label values).
    pub deployments: Arc<[Arc<str>]>,
    /// The control plane's own counters (written by the budgeter only).
    pub control: Arc<ControlMetrics>,
}

/// Counters of the control plane's actors; each is written by one actor only.
#[derive(Debug, Default)]
pub struct ControlMetrics {
    /// Budget thresholds crossed, by action (`budget::policy::Action` order: alert,
    /// throttle, restrict, block).
    pub thresholds_fired: [Counter; 4],
    /// Alert webhooks that failed (no answer in time, or a status other than 2xx).
    pub webhook_failures: Counter,
    /// Lease grants made (units above zero).
    pub lease_grants: Counter,
    /// Reclaims asked of shards for a starving one.
    pub lease_reclaims: Counter,
    /// Redis operations answered.
    pub redis_ops: Counter,
    /// Redis operations failed or timed out.
    pub redis_errors: Counter,
    /// Redis operation latency (written by the budgeter and its tasks on the one control
    /// plane thread).
    pub redis_latency: Histogram,
    /// 1 while the shared Redis answers, 0 while it is away (or not configured).
    pub redis_up: Gauge,
    /// Spend settled on this node per team since start, nano-USD, by team name: at most
    /// [`MAX_TEAM_LABELS`] teams, the rest under `_other`. Replaced whole by the budgeter once
    /// a second (the scrape reads a snapshot, never a lock).
    pub team_spend: arc_swap::ArcSwap<Vec<(std::sync::Arc<str>, u64)>>,
    /// Texts in the semantic cache's index.
    pub semantic_entries: Gauge,
    /// Texts the semantic index dropped to stay within `max_entries`.
    pub semantic_evicted: Counter,
    /// Texts the local encoder embedded.
    pub semantic_embedded: Counter,
    /// Local encoder or index failures (each answered as a miss).
    pub semantic_errors: Counter,
}

/// Teams named in `gateway_team_spend_usd_total` before the rest share `_other`.
pub const MAX_TEAM_LABELS: usize = 64;

impl Registry {
    /// A registry for `shards` shards and these providers, public models and deployments.
    pub fn new(
        shards: usize,
        providers: Vec<Arc<str>>,
        models: Vec<Arc<str>>,
        deployments: Vec<Arc<str>>,
    ) -> Self {
        let (n, m, d) = (providers.len(), models.len(), deployments.len());
        Self {
            shards: (0..shards)
                .map(|_| Arc::new(ShardMetrics::new(n, m, d)))
                .collect(),
            providers: providers.into(),
            models: models.into(),
            deployments: deployments.into(),
            control: Arc::new(ControlMetrics::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_sum() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let (b, count, sum) = h.snapshot();
        assert_eq!(count, 3);
        assert_eq!(b[0], 1);
        assert_eq!(b[5], 1);
        assert_eq!(b.iter().sum::<u64>(), 2, "100 s only lands in +Inf");
        assert!((sum - 100.00305).abs() < 1e-9);
    }

    #[test]
    fn gauges_go_both_ways() {
        let g = Gauge::default();
        g.inc();
        g.inc();
        g.dec();
        assert_eq!(g.get(), 1);
        g.dec();
        g.dec();
        assert_eq!(g.get(), -1);
    }
}
