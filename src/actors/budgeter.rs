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

use std::sync::Arc;

use super::ShardCmd;
use super::keyring::{Created, KeyError, KeyPatch, Keyring, NewKey};
use crate::auth::table::KeyRecord;
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
    /// Make a key (admin API); the reply carries its secret, once.
    CreateKey(NewKey, RpcReplyPort<Result<Created, KeyError>>),
    /// Change a key.
    UpdateKey(
        String,
        KeyPatch,
        RpcReplyPort<Result<Arc<KeyRecord>, KeyError>>,
    ),
    /// Revoke a key.
    RevokeKey(String, RpcReplyPort<Result<Arc<KeyRecord>, KeyError>>),
    /// One key.
    GetKey(String, RpcReplyPort<Option<Arc<KeyRecord>>>),
    /// Every key.
    ListKeys(RpcReplyPort<Vec<Arc<KeyRecord>>>),
}

/// Budgeter start-up arguments.
pub struct BudgeterArgs {
    /// Every shard's inbox, by shard index.
    pub shards: Vec<InboxSender<ShardCmd>>,
    /// Calendar offset of days and months, seconds east of UTC.
    pub offset_secs: i32,
    /// The keys (the config file's to begin with).
    pub keys: Keyring,
}

/// An ask that found nothing left while other shards held units: it waits until each of
/// them has answered the reclaim (or [`PENDING_FOR`] passed), then is answered as it stands.
#[derive(Debug)]
struct Pending {
    holder: Holder,
    ask: Ask,
    since: u64,
    /// Shards asked to give units back that have not sent a batch since.
    waiting_on: Vec<Holder>,
    /// Not yet looked at (reclaims are sent once, on the first look).
    fresh: bool,
}

/// The actor's state.
pub struct BudgeterState {
    ledger: Ledger,
    shards: Vec<InboxSender<ShardCmd>>,
    pending: Vec<Pending>,
    keys: Keyring,
    rng: ring::rand::SystemRandom,
}

/// The budgeter.
pub struct BudgeterActor;

/// Wall-clock unix milliseconds (calendar periods need real time).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Grants for each shard, and the shards to ask for unused units back (with the meters).
pub type Answers = (Vec<Vec<Grant>>, Vec<(Holder, Vec<MeterKey>)>);

impl BudgeterState {
    /// A budgeter for these shards.
    pub fn new(shards: Vec<InboxSender<ShardCmd>>, offset_secs: i32, keys: Keyring) -> Self {
        Self {
            ledger: Ledger::new(offset_secs),
            shards,
            pending: Vec::new(),
            keys,
            rng: ring::rand::SystemRandom::new(),
        }
    }

    /// Send every shard the key table as it stands. The shards swap it in when their inbox
    /// task next runs: a key created or revoked here is in force on every shard of this node
    /// within one inbox hop (microseconds when the shard is idle, one task turn when busy).
    fn publish_keys(&self) {
        let table = Arc::new(self.keys.table().clone());
        for s in &self.shards {
            let _ = s.send(ShardCmd::Keys(table.clone()));
        }
    }

    /// Reply `result`, and publish the table when it changed.
    fn after_key_change<T: Send + 'static>(
        &self,
        result: Result<T, KeyError>,
        reply: RpcReplyPort<Result<T, KeyError>>,
    ) {
        if result.is_ok() {
            self.publish_keys();
        }
        let _ = reply.send(result);
    }

    /// Take one shard's batch at `now`: its reports first (they free units), then the asks
    /// still pending, then its new ones.
    ///
    /// An ask that finds nothing left while other shards hold units is held, and those
    /// shards are asked for their unused units; once each has answered (any batch counts,
    /// an empty one too) or [`PENDING_FOR`] passed, the ask is answered with what there is.
    /// An empty final answer says `others_out: 0`: nothing more will come back for it in
    /// this window, so the shard refuses until the window ends rather than asking again.
    /// `shard` is `None` for the actor's own retry of pending asks.
    pub fn on_batch(
        &mut self,
        shard: Option<Holder>,
        asks: Vec<Ask>,
        reports: &[Report],
        now: u64,
    ) -> Answers {
        if let Some(shard) = shard {
            for r in reports {
                self.ledger.report(shard, r, now);
            }
        }
        let holders = u16::try_from(self.shards.len()).unwrap_or(u16::MAX).max(1);
        let mut grants: Vec<Vec<Grant>> = vec![Vec::new(); self.shards.len()];
        let mut reclaim: Vec<(Holder, Vec<MeterKey>)> = Vec::new();
        let mut pending = std::mem::take(&mut self.pending);
        for p in &mut pending {
            p.waiting_on.retain(|h| Some(*h) != shard);
        }
        let fresh = shard.into_iter().flat_map(|holder| {
            asks.iter().map(move |ask| Pending {
                holder,
                ask: ask.clone(),
                since: now,
                waiting_on: Vec::new(),
                fresh: true,
            })
        });
        for mut p in pending.into_iter().chain(fresh) {
            if self.ledger.limit(&p.ask.key) != Some(p.ask.limit) {
                self.ledger.set_limit(p.ask.key.clone(), p.ask.limit);
            }
            let Some(mut grant) =
                self.ledger
                    .grant(&p.ask.key, p.holder, p.ask.units, holders, now)
            else {
                continue;
            };
            let first_look = std::mem::replace(&mut p.fresh, false);
            if grant.units == 0 && grant.others_out > 0 {
                if first_look {
                    for (other, out) in self.ledger.holders(&p.ask.key, now) {
                        if other == p.holder || out == 0 {
                            continue;
                        }
                        p.waiting_on.push(other);
                        match reclaim.iter_mut().find(|(h, _)| *h == other) {
                            Some((_, keys)) => keys.push(p.ask.key.clone()),
                            None => reclaim.push((other, vec![p.ask.key.clone()])),
                        }
                    }
                }
                let timed_out = now.saturating_sub(p.since) >= PENDING_FOR.as_millis() as u64;
                if !p.waiting_on.is_empty() && !timed_out {
                    self.pending.push(p);
                    continue;
                }
                // Every holder answered: what they hold is in use.
                grant.others_out = 0;
            }
            if let Some(list) = grants.get_mut(usize::from(p.holder)) {
                list.push(grant);
            }
        }
        (grants, reclaim)
    }

    fn send(&self, (grants, reclaim): Answers) {
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
        Ok(BudgeterState::new(args.shards, args.offset_secs, args.keys))
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
                let answers = state.on_batch(Some(shard), asks, &reports, now_ms());
                state.send(answers);
            }
            BudgeterMsg::Sweep => {
                let now = now_ms();
                state.ledger.sweep(now);
                // Asks that waited too long for reclaimed units are answered as they stand.
                if !state.pending.is_empty() {
                    let answers = state.on_batch(None, Vec::new(), &[], now);
                    state.send(answers);
                }
            }
            BudgeterMsg::Status(key, reply) => {
                let _ = reply.send(state.ledger.status(&key, now_ms()));
            }
            BudgeterMsg::CreateKey(new, reply) => {
                let result = state.keys.create(new, &state.rng, now_ms());
                if let Ok(made) = &result {
                    tracing::info!(key = %made.record.id, "Key created.");
                }
                state.after_key_change(result, reply);
            }
            BudgeterMsg::UpdateKey(id, patch, reply) => {
                let result = state.keys.update(&id, patch);
                state.after_key_change(result, reply);
            }
            BudgeterMsg::RevokeKey(id, reply) => {
                let result = state.keys.revoke(&id);
                if result.is_ok() {
                    tracing::info!(key = %id, "Key revoked.");
                }
                state.after_key_change(result, reply);
            }
            BudgeterMsg::GetKey(id, reply) => {
                let _ = reply.send(state.keys.get(&id));
            }
            BudgeterMsg::ListKeys(reply) => {
                let _ = reply.send(state.keys.list());
            }
        }
        Ok(())
    }
}
