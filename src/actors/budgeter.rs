//! `BudgeterActor`: the node's authority over every rate limit and budget. Shards send it
//! batches of lease asks and usage reports; it answers each shard with grants, taken from
//! its [`Ledger`] (pure: `budget::ledger`), so that the units out on lease plus the units
//! used never pass a limit.
//!
//! When a shard asks and nothing is left while other shards hold unused units, the actor
//! asks those shards to give them back ([`ShardCmd::Reclaim`]) and answers the ask once they
//! do (or with an empty grant after [`PENDING_FOR`]): a shard never waits on another's idle
//! share for long, and never admits from units it was not granted.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::ShardCmd;
use crate::budget::lease::Ask;
use crate::budget::ledger::{Grant, Holder, Ledger, Report, Status};
use crate::budget::meter::MeterKey;
use crate::shard::bridge::InboxSender;

/// Longest time an ask waits for reclaimed units before an empty grant answers it.
pub const PENDING_FOR: Duration = Duration::from_secs(1);
/// How often meters whose window ended and that nobody holds are forgotten.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Messages to the budgeter.
pub enum BudgeterMsg {
    /// One shard's asks and reports since its last batch.
    Batch {
        /// The shard.
        shard: Holder,
        /// Lease refills it wants.
        asks: Vec<Ask>,
        /// Usage and returned units.
        reports: Vec<Report>,
    },
    /// Forget idle meters (the actor's own interval).
    Sweep,
    /// A meter's figures now (admin API, tests).
    Status(MeterKey, RpcReplyPort<Option<Status>>),
}

/// Budgeter start-up arguments.
pub struct BudgeterArgs {
    /// Every shard's inbox, by shard index.
    pub shards: Vec<InboxSender<ShardCmd>>,
    /// Calendar offset of days and months, seconds east of UTC.
    pub offset_secs: i32,
}

/// The actor's state.
pub struct BudgeterState {
    ledger: Ledger,
    shards: Vec<InboxSender<ShardCmd>>,
    /// Asks waiting for units other shards were asked to give back, with when they came.
    pending: Vec<(Holder, Ask, u64)>,
}

/// The budgeter.
pub struct BudgeterActor;

/// Wall-clock unix milliseconds (calendar periods need real time).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl BudgeterState {
    /// A budgeter for these shards.
    pub fn new(shards: Vec<InboxSender<ShardCmd>>, offset_secs: i32) -> Self {
        Self {
            ledger: Ledger::new(offset_secs),
            shards,
            pending: Vec::new(),
        }
    }

    /// Take one shard's batch at `now`: reports first (they free units), then the asks
    /// still pending, then the new ones. Returns the grants for each shard, and the
    /// shards to ask for unused units back, with the meters.
    pub fn on_batch(
        &mut self,
        shard: Holder,
        asks: Vec<Ask>,
        reports: &[Report],
        now: u64,
    ) -> (Vec<Vec<Grant>>, Vec<(Holder, Vec<MeterKey>)>) {
        for r in reports {
            self.ledger.report(shard, r, now);
        }
        let holders = u16::try_from(self.shards.len()).unwrap_or(u16::MAX).max(1);
        let mut grants: Vec<Vec<Grant>> = vec![Vec::new(); self.shards.len()];
        let mut reclaim: Vec<(Holder, Vec<MeterKey>)> = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        let fresh = asks.into_iter().map(|a| (shard, a, now));
        for (holder, ask, since) in pending.into_iter().chain(fresh) {
            if self.ledger.limit(&ask.key) != Some(ask.limit) {
                self.ledger.set_limit(ask.key.clone(), ask.limit);
            }
            let Some(grant) = self
                .ledger
                .grant(&ask.key, holder, ask.units, holders, now)
            else {
                continue;
            };
            let starved = grant.units == 0 && grant.others_out > 0;
            if starved && now.saturating_sub(since) < PENDING_FOR.as_millis() as u64 {
                let already = self.pending.iter().any(|(h, a, _)| a.key == ask.key && *h != holder);
                if !already {
                    for (other, out) in self.ledger.holders(&ask.key, now) {
                        if other == holder || out == 0 {
                            continue;
                        }
                        match reclaim.iter_mut().find(|(h, _)| *h == other) {
                            Some((_, keys)) => keys.push(ask.key.clone()),
                            None => reclaim.push((other, vec![ask.key.clone()])),
                        }
                    }
                }
                self.pending.push((holder, ask, since));
                continue;
            }
            if let Some(list) = grants.get_mut(usize::from(holder)) {
                list.push(grant);
            }
        }
        (grants, reclaim)
    }

    fn send(&self, grants: Vec<Vec<Grant>>, reclaim: Vec<(Holder, Vec<MeterKey>)>) {
        for (i, list) in grants.into_iter().enumerate() {
            if !list.is_empty()
                && let Some(s) = self.shards.get(i)
            {
                let _ = s.send(ShardCmd::Grants(list));
            }
        }
        for (h, keys) in reclaim {
            if let Some(s) = self.shards.get(usize::from(h)) {
                let _ = s.send(ShardCmd::Reclaim(keys));
            }
        }
    }
}

impl Actor for BudgeterActor {
    type Msg = BudgeterMsg;
    type State = BudgeterState;
    type Arguments = BudgeterArgs;

    async fn pre_start(
        &self,
        me: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        me.send_interval(SWEEP_EVERY, || BudgeterMsg::Sweep);
        Ok(BudgeterState::new(args.shards, args.offset_secs))
    }

    async fn handle(
        &self,
        _me: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BudgeterMsg::Batch {
                shard,
                asks,
                reports,
            } => {
                let (grants, reclaim) = state.on_batch(shard, asks, &reports, now_ms());
                state.send(grants, reclaim);
            }
            BudgeterMsg::Sweep => {
                let now = now_ms();
                state.ledger.sweep(now);
                // Asks that waited too long for reclaimed units are answered as they stand.
                if !state.pending.is_empty() {
                    let (grants, reclaim) = state.on_batch(0, Vec::new(), &[], now);
                    state.send(grants, reclaim);
                }
            }
            BudgeterMsg::Status(key, reply) => {
                let _ = reply.send(state.ledger.status(&key, now_ms()));
            }
        }
        Ok(())
    }
}
