//! `ScorerActor`: outcome batches in, `ScoreTable` snapshots out to every shard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::ShardCmd;
use crate::DeploymentId;
use crate::scoring::{DeploymentStats, Outcome, ScoreTable, Weights};
use crate::shard::bridge::InboxSender;

/// Longest time between publications even when nothing changed (windows keep sliding).
const REPUBLISH_EVERY: Duration = Duration::from_secs(5);

/// Messages to the scorer.
pub enum ScorerMsg {
    /// A batch of outcomes from one shard.
    Outcomes(Vec<Outcome>),
    /// Publish a new table if anything changed (sent by the actor's own interval).
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
}

/// Scorer state.
pub struct ScorerState {
    args: ScorerArgs,
    stats: BTreeMap<DeploymentId, DeploymentStats>,
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
        Ok(ScorerState {
            args,
            stats: BTreeMap::new(),
            table: Arc::new(ScoreTable::default()),
            dirty: false,
            published_at: Instant::now(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ScorerMsg>,
        msg: ScorerMsg,
        state: &mut ScorerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ScorerMsg::Outcomes(batch) => {
                for o in batch {
                    state
                        .stats
                        .entry(o.deployment.clone())
                        .or_default()
                        .observe(o.observation(), o.at);
                }
                state.dirty = true;
            }
            ScorerMsg::Publish => {
                let now = Instant::now();
                if state.dirty || now.duration_since(state.published_at) >= REPUBLISH_EVERY {
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
    let table = Arc::new(ScoreTable::compute(
        version,
        &mut state.stats,
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
mod tests {
    use super::*;

    fn outcome(dep: &str, ms: u64, ok: bool) -> Outcome {
        Outcome {
            cost: None,
            deployment: DeploymentId(dep.into()),
            ok,
            status: if ok { 200 } else { 500 },
            latency: Duration::from_millis(ms),
            ttfb: Duration::from_millis(ms / 2),
            usage: None,
            at: Instant::now(),
        }
    }

    #[tokio::test]
    async fn batches_in_snapshots_out_to_every_shard() {
        let (tx0, rx0) = flume::unbounded();
        let (tx1, rx1) = flume::unbounded();
        let args = ScorerArgs {
            shards: vec![tx0, tx1],
            publish_every: Duration::from_millis(5),
            weights: Weights::default(),
            min_samples: 2,
        };
        let (actor, join) = Actor::spawn(None, ScorerActor, args).await.unwrap();
        actor
            .cast(ScorerMsg::Outcomes(vec![
                outcome("p/fast", 10, true),
                outcome("p/slow", 300, true),
            ]))
            .unwrap();
        actor
            .cast(ScorerMsg::Outcomes(vec![
                outcome("p/fast", 10, true),
                outcome("p/slow", 300, false),
            ]))
            .unwrap();
        let table = loop {
            let ShardCmd::Scores(t) = rx0.recv_async().await.unwrap() else {
                continue;
            };
            if t.deployments.len() == 2 && t.deployments["p/slow"].window_samples == 2 {
                break t;
            }
        };
        assert!(table.deployments["p/fast"].score > table.deployments["p/slow"].score);
        assert_eq!(table.deployments["p/slow"].success_ratio, 0.5);
        // The other shard got the same snapshots.
        let mut latest = None;
        while let Ok(ShardCmd::Scores(t)) = rx1.try_recv() {
            latest = Some(t);
        }
        assert!(latest.unwrap().version >= 1);
        let snap = ractor::call!(actor, ScorerMsg::Snapshot).unwrap();
        assert!(snap.version >= table.version);
        actor.stop(None);
        join.await.unwrap();
    }
}
