//! `ScorerActor`: outcome batches in, `ScoreTable` snapshots out to every shard.
//!
//! The actor holds a [`Board`] (pure: statistics and one circuit breaker per deployment, fed
//! every shard's outcomes) and publishes its table on an interval when something changed,
//! and at once when a breaker changes state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::ShardCmd;
use crate::DeploymentIdx;
use crate::routing::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::scoring::{BreakerView, DeploymentInfo, DeploymentStats, Outcome, ScoreTable, Weights};
use crate::shard::bridge::InboxSender;

/// Longest time between publications even when nothing changed (windows keep sliding).
const REPUBLISH_EVERY: Duration = Duration::from_secs(5);

/// The control plane's clock: tokio's, so that actor tests can run on paused time (outside
/// paused tests it reads the same clock as `Instant::now`).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Messages to the scorer.
pub enum ScorerMsg {
    /// A batch of outcomes from one shard.
    Outcomes(Vec<Outcome>),
    /// A shard's requests in flight per deployment (`DeploymentIdx` order), sent when they
    /// changed.
    Load {
        /// The shard's index.
        shard: usize,
        /// In flight per deployment.
        in_flight: Vec<u32>,
    },
    /// Publish a new table if anything changed (sent by the actor's own interval, and when
    /// a breaker's cooldown ends).
    Publish,
    /// The current table (for tests and tools).
    Snapshot(RpcReplyPort<Arc<ScoreTable>>),
}

/// Scorer start-up arguments.
pub struct ScorerArgs {
    /// Every shard's inbox.
    pub shards: Vec<InboxSender<ShardCmd>>,
    /// Publication interval.
    pub publish_every: Duration,
    /// Score weights.
    pub weights: Weights,
    /// Samples before a score is trusted.
    pub min_samples: u64,
    /// The config's deployments, in `DeploymentIdx` order.
    pub deployments: Vec<DeploymentInfo>,
    /// The breakers' settings (`Config::routing.breaker`).
    pub breaker: BreakerConfig,
}

/// The scorer's merged view of every deployment: statistics and a circuit breaker each,
/// indexed by `DeploymentIdx`. Pure: every call takes its time from the outcome or as `now`.
#[derive(Debug, Clone)]
pub struct Board {
    infos: Vec<DeploymentInfo>,
    stats: Vec<DeploymentStats>,
    breakers: Vec<Breaker>,
    /// Times each breaker has opened.
    ejections: Vec<u32>,
    /// Each model's deployments, by `ModelIdx`.
    members: Vec<Vec<DeploymentIdx>>,
    /// Each breaker's state in the last table.
    published: Vec<BreakerState>,
    /// Each shard's last reported in-flight counts (by shard index, then deployment).
    load: Vec<Vec<u32>>,
}

impl Board {
    /// A board for these deployments, every breaker closed.
    pub fn new(infos: Vec<DeploymentInfo>, breaker: BreakerConfig) -> Self {
        let n = infos.len();
        let mut members: Vec<Vec<DeploymentIdx>> = Vec::new();
        for (i, info) in infos.iter().enumerate() {
            let Ok(d) = u32::try_from(i) else { break };
            for m in &info.models {
                if members.len() <= m.get() {
                    members.resize_with(m.get() + 1, Vec::new);
                }
                members[m.get()].push(DeploymentIdx(d));
            }
        }
        Self {
            infos,
            stats: vec![DeploymentStats::default(); n],
            breakers: vec![Breaker::new(breaker); n],
            ejections: vec![0; n],
            members,
            published: vec![BreakerState::Closed; n],
            load: Vec::new(),
        }
    }

    /// Keep shard `shard`'s in-flight counts for the next table.
    pub fn set_load(&mut self, shard: usize, in_flight: Vec<u32>) {
        // Bounded by the shard count: shards are numbered from 0 by the runtime.
        if shard >= self.load.len() {
            self.load.resize_with(shard + 1, Vec::new);
        }
        self.load[shard] = in_flight;
    }

    /// Fold one outcome in (an unknown deployment is ignored). Returns the breaker's new
    /// state when this outcome changed it.
    ///
    /// While the breaker is half-open (cooldown over), the outcome is the probe's verdict: a
    /// success closes it, a failure opens it again, unless that would leave one of its
    /// models with no deployment closed or half-open, in which case it stays half-open.
    pub fn observe(&mut self, o: &Outcome) -> Option<BreakerState> {
        let i = o.deployment.get();
        self.stats.get_mut(i)?.observe(o.observation(), o.at);
        let may_eject = !o.ok && self.may_eject(i, o.at);
        let breaker = self.breakers.get_mut(i)?;
        let probe = breaker.state(o.at) == BreakerState::HalfOpen && (o.ok || may_eject);
        let changed = breaker.record(o.ok, probe, may_eject, o.at);
        if changed == Some(BreakerState::Open)
            && let Some(n) = self.ejections.get_mut(i)
        {
            *n = n.saturating_add(1);
        }
        changed
    }

    /// Whether opening deployment `i`'s breaker leaves every one of its models another
    /// deployment whose breaker is closed or half-open (the last healthy is never ejected).
    fn may_eject(&self, i: usize, now: Instant) -> bool {
        let Some(info) = self.infos.get(i) else {
            return false;
        };
        info.models.iter().all(|m| {
            self.members.get(m.get()).is_some_and(|ds| {
                ds.iter().any(|d| {
                    d.get() != i
                        && self
                            .breakers
                            .get(d.get())
                            .is_some_and(|b| b.state(now) != BreakerState::Open)
                })
            })
        })
    }

    /// Whether a breaker's state at `now` differs from the last table's (a cooldown ended).
    pub fn breakers_changed(&self, now: Instant) -> bool {
        self.breakers
            .iter()
            .zip(&self.published)
            .any(|(b, p)| b.state(now) != *p)
    }

    /// The table at `now`; its breaker states become the published ones.
    pub fn table(
        &mut self,
        version: u64,
        weights: Weights,
        min_samples: u64,
        now: Instant,
    ) -> ScoreTable {
        let views: Vec<BreakerView> = self
            .breakers
            .iter()
            .zip(&self.ejections)
            .map(|(b, &ejections)| {
                let state = b.state(now);
                BreakerView {
                    state,
                    open_until: b.open_until().filter(|_| state == BreakerState::Open),
                    ejections,
                }
            })
            .collect();
        self.published = views.iter().map(|v| v.state).collect();
        ScoreTable {
            in_flight: self.load.clone(),
            ..ScoreTable::compute(
                version,
                &self.infos,
                &mut self.stats,
                &views,
                weights,
                min_samples,
                now,
            )
        }
    }

    /// When deployment `d`'s open breaker ends its cooldown.
    pub fn open_until(&self, d: DeploymentIdx) -> Option<Instant> {
        self.breakers.get(d.get())?.open_until()
    }
}

/// Scorer state.
pub struct ScorerState {
    args: ScorerArgs,
    board: Board,
    table: Arc<ScoreTable>,
    dirty: bool,
    published_at: Instant,
}

/// The scorer actor.
pub struct ScorerActor;

impl Actor for ScorerActor {
    type Msg = ScorerMsg;
    type State = ScorerState;
    type Arguments = ScorerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ScorerMsg>,
        args: ScorerArgs,
    ) -> Result<ScorerState, ActorProcessingErr> {
        myself.send_interval(args.publish_every, || ScorerMsg::Publish);
        let board = Board::new(args.deployments.clone(), args.breaker);
        Ok(ScorerState {
            args,
            board,
            table: Arc::new(ScoreTable::default()),
            dirty: false,
            published_at: now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ScorerMsg>,
        msg: ScorerMsg,
        state: &mut ScorerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ScorerMsg::Outcomes(batch) => {
                let mut breaker_changed = false;
                for o in &batch {
                    match state.board.observe(o) {
                        Some(BreakerState::Open) => {
                            breaker_changed = true;
                            // Publish the half-open state when the cooldown ends.
                            if let Some(until) = state.board.open_until(o.deployment) {
                                let wait = until.saturating_duration_since(now());
                                myself.send_after(wait, || ScorerMsg::Publish);
                            }
                        }
                        Some(_) => breaker_changed = true,
                        None => {}
                    }
                }
                state.dirty = true;
                if breaker_changed {
                    publish(state, now());
                }
            }
            ScorerMsg::Load { shard, in_flight } => {
                if shard < state.args.shards.len() {
                    state.board.set_load(shard, in_flight);
                    state.dirty = true;
                }
            }
            ScorerMsg::Publish => {
                let now = now();
                if state.dirty
                    || state.board.breakers_changed(now)
                    || now.duration_since(state.published_at) >= REPUBLISH_EVERY
                {
                    publish(state, now);
                }
            }
            ScorerMsg::Snapshot(reply) => {
                let _ = reply.send(state.table.clone());
            }
        }
        Ok(())
    }
}

fn publish(state: &mut ScorerState, now: Instant) {
    let version = state.table.version + 1;
    let table = Arc::new(state.board.table(
        version,
        state.args.weights,
        state.args.min_samples,
        now,
    ));
    for shard in &state.args.shards {
        let _ = shard.send(ShardCmd::Scores(table.clone()));
    }
    state.table = table;
    state.dirty = false;
    state.published_at = now;
}

#[cfg(test)]
mod tests;
