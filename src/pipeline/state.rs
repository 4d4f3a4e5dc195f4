//! What one shard owns: `Rc`-held, `!Send` by design, no locks. The downstream edge keeps
//! its connection watches here too (types from `shard::rt`), so that one `Rc` reaches all.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;

use crate::ShardId;
use crate::api::DecodeScratch;
use crate::auth::table::KeyTable;
use crate::budget::book::{BudgetBatch, Spent, SpentKey};
use crate::budget::lease::Leases;
use crate::config::secrets::Redactor;
use crate::config::{Config, Tuning};
use crate::metrics::labels::{UpstreamOutcome, error_index};
use crate::metrics::log_limit::LogLimiter;
use crate::metrics::{Registry, ShardMetrics};
use crate::providers::call::Target;
use crate::routing::breaker::BreakerState;
use crate::routing::plan::Router;
use crate::routing::retry::RetryBudget;
use crate::scoring::{Outcome, ScoreTable};
use crate::shard::Signal;
use crate::shard::bridge::Batcher;
use crate::shard::rt::{HeadAnswers, WatchList};
use crate::upstream::EndpointPool;

/// A lease unused this long gives its free units back.
pub const LEASE_IDLE_MS: u64 = 1_000;

/// Where a shard's batches go (the budgeter, in the gateway).
pub type BudgetSink = Box<dyn Fn(BudgetBatch)>;

/// Tenants (key, team, user, model and day) a shard adds spend up for before it sends them
/// anyway.
const SPENT_BATCH: usize = 256;

/// Everything a shard owns.
pub struct ShardState {
    /// This shard.
    pub id: ShardId,
    /// The gateway config (one snapshot; a reload swaps it whole).
    pub config: Arc<Config>,
    /// The tuning profile.
    pub tuning: Arc<Tuning>,
    /// This shard's metrics (written only here).
    pub metrics: Arc<ShardMetrics>,
    /// Every shard's metrics, for `/metrics`.
    pub registry: Registry,
    /// The latest score table from the scorer.
    pub scores: RefCell<Arc<ScoreTable>>,
    /// Outcomes batched to the scorer.
    pub outcomes: Rc<Batcher<Outcome>>,
    /// Upstream pools, by provider index (`None` for in-process providers).
    pub pools: Vec<Option<Rc<EndpointPool>>>,
    /// Fixed request parts per provider, by provider index (built once at start-up).
    pub targets: Arc<[Option<Target>]>,
    /// Reused decode buffers.
    pub scratch: RefCell<DecodeScratch>,
    /// Live downstream connections.
    pub watches: WatchList,
    /// Fired when the shard starts draining.
    pub drain: Signal,
    /// Set when the shutdown grace is over: running streams end with an error event.
    pub cut: Rc<Cell<bool>>,
    /// The `GET /v1/models` body.
    pub models_body: Bytes,
    /// Answers the IO layer writes itself (head timeout, head too large, bad head).
    pub head_answers: &'static HeadAnswers,
    /// Blanks every configured secret from upstream bytes bound for an error or a log line.
    pub redactor: Redactor,
    /// Rate limit of repeated error log lines (per provider and kind).
    pub log_limit: RefCell<LogLimiter>,
    /// This shard's router: live figures and breakers per deployment, strategy cursors.
    pub router: RefCell<Router>,
    /// Retries this shard allows itself.
    pub retry_budget: RefCell<RetryBudget>,
    /// The key table (a snapshot the control plane swaps in whole).
    pub keys: RefCell<Arc<KeyTable>>,
    /// Budget actions in force per scope (throttle, restrict, block), from the budgeter.
    pub actions: RefCell<
        Arc<hashbrown::HashMap<crate::budget::meter::Scope, crate::budget::policy::Action>>,
    >,
    /// JWTs this shard verified, until they expire.
    pub jwt_cache: RefCell<crate::auth::JwtCache>,
    /// This shard's leases of every limit and budget.
    pub leases: RefCell<Leases>,
    /// Pulsed when a grant arrives (admissions waiting for one re-check).
    pub lease_pulse: crate::shard::Pulse,
    /// The response cache: this shard's partition, flights, and the mesh to the others.
    pub cache: super::cache::ShardCache,
    budget_sink: BudgetSink,
    spent: RefCell<hashbrown::HashMap<SpentKey, Spent>>,
    trimmed_at: Cell<u64>,
    seq: Cell<u64>,
    boot: u32,
}

impl ShardState {
    /// A shard's state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ShardId,
        config: Arc<Config>,
        tuning: Arc<Tuning>,
        registry: Registry,
        outcomes: Rc<Batcher<Outcome>>,
        pools: Vec<Option<Rc<EndpointPool>>>,
        targets: Arc<[Option<Target>]>,
        head_answers: &'static HeadAnswers,
        budget_sink: BudgetSink,
        keys: Arc<KeyTable>,
        boot: u32,
    ) -> Rc<Self> {
        let jwt_entries = config
            .auth
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .map_or(1, |j| j.cache_entries);
        let models_body = models_json(&config);
        let (cache_bytes, shards) = (tuning.cache_bytes_per_shard, tuning.shard_count());
        let redactor = Redactor::from_config(&config);
        let seed = u64::from(boot) ^ (u64::from(id.0) << 32);
        let router = RefCell::new(Router::new(config.clone(), seed));
        let budget = config.routing.budget;
        let retry_budget = RefCell::new(RetryBudget::new(
            budget.ratio,
            budget.floor_per_sec,
            budget.window,
        ));
        Rc::new(Self {
            id,
            metrics: registry.shards[id.0 as usize].clone(),
            registry,
            config,
            tuning,
            scores: RefCell::new(Arc::new(ScoreTable::default())),
            outcomes,
            pools,
            targets,
            scratch: RefCell::new(DecodeScratch::default()),
            watches: WatchList::default(),
            drain: Signal::default(),
            cut: Rc::new(Cell::new(false)),
            models_body,
            head_answers,
            redactor,
            log_limit: RefCell::new(LogLimiter::default()),
            router,
            retry_budget,
            keys: RefCell::new(keys),
            actions: RefCell::default(),
            jwt_cache: RefCell::new(crate::auth::JwtCache::new(jwt_entries)),
            leases: RefCell::new(Leases::new()),
            lease_pulse: crate::shard::Pulse::default(),
            cache: super::cache::ShardCache::new(cache_bytes, shards),
            budget_sink,
            spent: RefCell::default(),
            trimmed_at: Cell::new(0),
            seq: Cell::new(0),
            boot,
        })
    }

    /// Send what the leases have queued for the budgeter (refill asks, usage reports), if
    /// anything: at once when an admission waits, else on the bridge's flush tick.
    pub fn flush_budget(&self) {
        self.send_budget(false);
    }

    /// Answer the budgeter's reclaim: a batch goes even when empty, so that the budgeter
    /// knows this shard has given back all it could.
    pub fn answer_reclaim(&self) {
        self.send_budget(true);
    }

    fn send_budget(&self, always: bool) {
        let Ok(mut leases) = self.leases.try_borrow_mut() else {
            return;
        };
        let (asks, reports) = (leases.take_asks(), leases.take_reports());
        drop(leases);
        let spent: Vec<Spent> = self.spent.borrow_mut().drain().map(|(_, s)| s).collect();
        if always || !asks.is_empty() || !reports.is_empty() || !spent.is_empty() {
            (self.budget_sink)(BudgetBatch {
                asks,
                reports,
                spent,
            });
        }
    }

    /// Note a settled request for the spend book (sent with the next batch).
    pub fn spent(&self, s: Spent) {
        let full = {
            let mut spent = self.spent.borrow_mut();
            match spent.entry(s.key()) {
                hashbrown::hash_map::Entry::Occupied(mut e) => e.get_mut().add(&s),
                hashbrown::hash_map::Entry::Vacant(e) => {
                    e.insert(s);
                }
            }
            spent.len() >= SPENT_BATCH
        };
        if full {
            self.flush_budget();
        }
    }

    /// At most once per [`LEASE_IDLE_MS`]: drop leases whose window ended and give back the
    /// free units of leases idle that long (sent with the next flush), so a shard that
    /// stopped using a limit does not hold a share another shard needs.
    pub fn trim_leases(&self) {
        let now = crate::pipeline::admit::now_ms();
        if now.saturating_sub(self.trimmed_at.get()) < LEASE_IDLE_MS {
            return;
        }
        self.trimmed_at.set(now);
        if let Ok(mut leases) = self.leases.try_borrow_mut() {
            leases.trim(now, LEASE_IDLE_MS);
        }
    }

    /// Whether the shard is draining (readiness fails).
    pub fn draining(&self) -> bool {
        self.drain.is_fired()
    }

    /// A new request id: boot nonce, shard, sequence (unique per process run).
    pub fn next_request_id(&self) -> HeaderValue {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        // 8 hex digits of boot time, 4 of shard, 12 of sequence: built without `format!`.
        let mut out = [0u8; 24];
        hex_into(&mut out[..8], u64::from(self.boot));
        hex_into(&mut out[8..12], u64::from(self.id.0));
        hex_into(&mut out[12..], n);
        HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("0"))
    }

    /// Record one upstream attempt: provider metrics, and an outcome for the scorer.
    /// Returns the cost of its usage, for deployments with a price.
    pub fn record_attempt(
        &self,
        provider: usize,
        model: usize,
        mut outcome: Outcome,
        result: UpstreamOutcome,
    ) -> Option<crate::budget::Cost> {
        self.count_attempt(provider, outcome.deployment, result);
        if let Some(m) = self.metrics.providers.get(provider) {
            m.duration.observe(outcome.latency);
            if outcome.ok {
                m.ttfb.observe(outcome.ttfb);
            }
            if let Some(u) = outcome.usage {
                m.input_tokens.add(u.input_tokens);
                m.output_tokens.add(u.output_tokens);
            }
        }
        if let Some(u) = &outcome.usage {
            outcome.cost = self.record_usage(model, outcome.deployment, u);
        }
        let cost = outcome.cost;
        self.outcomes.push(outcome);
        cost
    }

    /// Count one attempt's outcome for its provider and its deployment.
    pub fn count_attempt(&self, provider: usize, d: crate::DeploymentIdx, result: UpstreamOutcome) {
        if let Some(m) = self.metrics.providers.get(provider) {
            m.attempts[result as usize].inc();
        }
        if let Some(m) = self.metrics.deployments.get(d.get()) {
            m.attempts[result as usize].inc();
        }
    }

    /// Count a model's usage and its cost at the price of the deployment that answered
    /// (returned, for deployments with a price).
    pub fn record_usage(
        &self,
        model: usize,
        deployment: crate::DeploymentIdx,
        u: &crate::api::Usage,
    ) -> Option<crate::budget::Cost> {
        let m = self.metrics.models.get(model)?;
        m.input_tokens.add(u.input_tokens);
        m.output_tokens.add(u.output_tokens);
        m.cached_input_tokens.add(u.cached_input_tokens);
        m.reasoning_tokens.add(u.reasoning_tokens);
        let cost = self
            .config
            .deployments
            .get(deployment.get())?
            .price?
            .cost(u);
        m.cost_nano_usd.add(cost.0);
        Some(cost)
    }

    /// A deployment's breaker changed state on this shard: say so once (rare by nature).
    pub fn breaker_changed(&self, d: crate::DeploymentIdx, to: BreakerState) {
        let id = self
            .config
            .deployments
            .get(d.get())
            .map_or("?", |dep| dep.id.as_str());
        match to {
            BreakerState::Open => {
                self.metrics.ejections.inc();
                tracing::warn!(shard = %self.id, deployment = id, "Deployment ejected.");
            }
            BreakerState::Closed => {
                tracing::info!(shard = %self.id, deployment = id, "Deployment re-admitted.");
            }
            BreakerState::HalfOpen => {}
        }
    }

    /// Count a gateway error.
    pub fn count_error(&self, kind: crate::ErrorKind) {
        self.metrics.errors[error_index(kind)].inc();
    }
}

fn models_json(config: &Config) -> Bytes {
    let mut out = b"{\"object\":\"list\",\"data\":[".to_vec();
    for (i, m) in config.models.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        crate::api::json::write_string(&mut out, m.public.as_str());
        out.extend_from_slice(b",\"object\":\"model\",\"created\":0,\"owned_by\":");
        crate::api::json::write_string(&mut out, config.providers[m.provider].id.as_str());
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// Write the low `out.len()` hex digits of `v` into `out`, most significant first.
fn hex_into(out: &mut [u8], mut v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_digits_are_fixed_width() {
        let mut out = [0u8; 12];
        super::hex_into(&mut out, 0xab_cdef);
        assert_eq!(&out, b"000000abcdef");
        let mut short = [0u8; 4];
        super::hex_into(&mut short, 0x1_2345);
        assert_eq!(&short, b"2345", "only the low digits fit");
    }
}
