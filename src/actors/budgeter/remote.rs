//! The budgeter with a shared Redis (`[state] redis_url`): Redis holds the ledger of every
//! node, and this node's shards are holders in it (`<node>~<boot>.<shard>`), so a lease is granted
//! to a shard straight from the shared ledger, by the Lua script, in one round trip per
//! batch of asks.
//!
//! While Redis is away (an error, or no answer within the operation timeout) the declared
//! policy answers asks: `fail_open` grants from the local ledger with this node's share of
//! each limit (`max / nodes`, in the window last seen in Redis when it is still open),
//! `fail_closed` refuses for a second at a time. Reports and spend wait in the [`Backlog`]
//! and are written, once each, when Redis answers again; key changes made here wait too.
//! A ping every [`PROBE_EVERY`] tells when it is back.

use std::time::Duration;

use hashbrown::HashMap;
use ractor::ActorRef;

use super::{Answers, BudgeterMsg, BudgeterState, PENDING_FOR, Pending};
use crate::actors::redis::{Backlog, RemoteAsk, Shared};
use crate::auth::table::KeyRecord;
use crate::budget::lease::Ask;
use crate::budget::ledger::{Grant, Holder, Status};
use crate::budget::meter::{Limit, MeterKey};
use crate::config::tenancy::{RedisConfig, RedisPolicy};

/// How often a Redis that went away is asked whether it is back.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How often the key table is compared with Redis's: the bound on a key created, changed or
/// revoked on another node reaching this one (plus one round trip and one inbox hop).
pub const KEYS_EVERY: Duration = Duration::from_millis(500);
/// How often the budgeter looks at Redis work: retries of asks waiting for units, and the
/// reports and spend of batches that had no asks.
pub const TICK_EVERY: Duration = Duration::from_millis(20);
/// How often a node tells Redis it is alive when it has nothing else to say (a node silent
/// for 10 s holds nothing there: `sync.lua`).
pub const BEAT_EVERY: Duration = Duration::from_secs(2);
/// How long a `fail_closed` refusal lasts before the shard asks again.
const CLOSED_FOR_MS: u64 = 1_000;

/// The budgeter's side of the shared Redis.
pub struct Remote {
    cfg: RedisConfig,
    /// The connection, once made.
    link: Option<Shared>,
    /// Redis answered the last operation.
    up: bool,
    /// A ping is out.
    probing: bool,
    next_probe_ms: u64,
    next_keys_ms: u64,
    next_beat_ms: u64,
    /// Reports and spend not written yet.
    pub(super) backlog: Backlog,
    /// Asks waiting for units other holders have out.
    pending: Vec<Pending>,
    /// The key table's version in Redis, as last read.
    keys_version: Option<u64>,
    /// Keys changed here and not yet written.
    key_writes: HashMap<std::sync::Arc<str>, KeyRecord>,
    /// Each meter's window and figures as the last answer gave them.
    seen: HashMap<MeterKey, Status>,
    /// Reports of spend whose figures moved in the last exchange: thresholds to look at.
    moved: Vec<crate::budget::ledger::Report>,
}

impl Remote {
    /// The Redis side of a node named `node`, started at `boot` (unix ms).
    pub fn new(cfg: RedisConfig, node: String, boot: u64) -> Self {
        let backlog = Backlog::new(format!("{node}-{boot:x}"));
        Self {
            cfg,
            link: None,
            up: false,
            probing: false,
            next_probe_ms: 0,
            next_keys_ms: 0,
            next_beat_ms: 0,
            backlog,
            pending: Vec::new(),
            keys_version: None,
            key_writes: HashMap::new(),
            seen: HashMap::new(),
            moved: Vec::new(),
        }
    }

    /// The meters Redis has given figures for.
    pub fn meters(&self) -> impl Iterator<Item = &MeterKey> {
        self.seen.keys()
    }

    /// A meter's figures as Redis last gave them, while that window is open.
    pub fn status(&self, key: &MeterKey, now: u64) -> Option<Status> {
        self.seen
            .get(key)
            .filter(|s| now < s.window_end_ms)
            .copied()
    }

    /// Redis answered the last operation.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The connection, while Redis answers.
    pub(super) fn live(&self) -> Option<Shared> {
        self.link.clone().filter(|_| self.up)
    }
}

/// Try to connect until it works, then hand the connection to the budgeter.
pub fn connect_in_background(
    me: ActorRef<BudgeterMsg>,
    cfg: RedisConfig,
    node: String,
    boot: u64,
    shards: u16,
    offset_secs: i32,
    metrics: std::sync::Arc<crate::metrics::ControlMetrics>,
) {
    tokio::spawn(async move {
        // The caller said so once; every later failure is a debug line.
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            match Shared::connect(
                &cfg,
                node.clone(),
                boot,
                shards,
                offset_secs,
                metrics.clone(),
            )
            .await
            {
                Ok(link) => {
                    let _ = me.cast(BudgeterMsg::RedisLink(link));
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "Still cannot connect to Redis."),
            }
        }
    });
}

/// Take other nodes' reclaims of this node's units for as long as the node runs
/// (resubscribing after Redis went away).
pub fn listen_for_reclaims(me: ActorRef<BudgeterMsg>, link: Shared) {
    tokio::spawn(async move {
        loop {
            let to = me.clone();
            let ended = link
                .reclaims(|shard, key| {
                    let _ = to.cast(BudgeterMsg::RemoteReclaim(shard, key));
                })
                .await;
            if let Err(e) = ended {
                tracing::debug!(error = %e, "Reclaim subscription ended; subscribing again.");
            }
            if me.get_status() != ractor::ActorStatus::Running {
                return;
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    });
}

impl BudgeterState {
    /// Take a batch's asks (and the asks still waiting) to Redis with the reports and spend
    /// not written yet, or, while Redis is away, answer them by the policy.
    pub(super) async fn remote_exchange(
        &mut self,
        shard: Option<Holder>,
        asks: Vec<Ask>,
        now: u64,
    ) -> Answers {
        let Some(mut remote) = self.remote.take() else {
            return self.on_batch(shard, asks, &[], now);
        };
        let answers = self.exchange_with(&mut remote, shard, asks, now).await;
        let moved = std::mem::take(&mut remote.moved);
        self.remote = Some(remote);
        self.watch_moved(&moved, now);
        answers
    }

    /// Look at the thresholds of budgets whose figures an exchange moved.
    fn watch_moved(&mut self, moved: &[crate::budget::ledger::Report], now: u64) {
        if !moved.is_empty() {
            let fired = self.watch_budgets(moved, &[], now);
            self.alert(fired);
        }
    }

    async fn exchange_with(
        &mut self,
        remote: &mut Remote,
        shard: Option<Holder>,
        asks: Vec<Ask>,
        now: u64,
    ) -> Answers {
        let mut waiting = std::mem::take(&mut remote.pending);
        if remote.up {
            // Asks the policy held while Redis was away go to Redis now.
            waiting.append(&mut self.pending);
        }
        let mut all: Vec<Pending> = waiting
            .into_iter()
            .chain(Pending::asked(shard, asks, now))
            .collect();
        if remote.up && all.is_empty() && shard.is_some() {
            // Reports alone wait for the tick: one write per tick, not one per batch.
            return (vec![Vec::new(); self.shards.len()], Vec::new());
        }
        if let Some(link) = remote.live() {
            match self.ask_redis(remote, &link, &mut all, now).await {
                Ok(answers) => return answers,
                Err(e) => self.redis_down(remote, &e, now),
            }
        }
        self.by_policy(remote, shard, all, now)
    }

    /// One exchange with Redis. On an error, `all` is left as it was.
    async fn ask_redis(
        &mut self,
        remote: &mut Remote,
        link: &Shared,
        all: &mut Vec<Pending>,
        now: u64,
    ) -> Result<Answers, crate::actors::redis::RedisError> {
        let mut grants: Vec<Vec<Grant>> = vec![Vec::new(); self.shards.len()];
        let mut reclaim: Vec<(Holder, Vec<MeterKey>)> = Vec::new();
        let batch = remote.backlog.to_send().cloned();
        if batch.is_none() && all.is_empty() {
            return Ok((grants, reclaim));
        }
        let wire: Vec<RemoteAsk> = all
            .iter()
            .map(|p| RemoteAsk {
                key: p.ask.key.clone(),
                holder: p.holder,
                units: p.ask.units,
                max: p.ask.limit.max,
            })
            .collect();
        let synced = link.sync(now, batch.as_ref(), &wire).await?;
        if let Some(batch) = &batch {
            remote.backlog.acknowledge();
            // The budgets' new figures, every node's spend included: thresholds may fire.
            let mut moved = Vec::new();
            for ((_, r), used) in batch.reports.iter().zip(&synced.reported) {
                if let (Some(used), Some(st)) = (used, remote.seen.get_mut(&r.key))
                    && r.key.measure == crate::budget::meter::Measure::Spend
                    && now < st.window_end_ms
                {
                    st.used = *used;
                    moved.push(r.clone());
                }
            }
            remote.moved.extend(moved);
        }
        for (mut p, a) in std::mem::take(all).into_iter().zip(synced.grants) {
            let mut grant = a.grant;
            remote.seen.insert(
                grant.key.clone(),
                Status {
                    max: grant.max,
                    used: a.used,
                    // Every holder's units after this grant, this one's included.
                    out: grant
                        .max
                        .saturating_sub(a.used)
                        .saturating_sub(grant.remaining),
                    remaining: grant.remaining,
                    window_end_ms: grant.window_end_ms,
                },
            );
            if grant.units == 0 && grant.others_out > 0 {
                if std::mem::replace(&mut p.fresh, false) {
                    // Holders with units are asked for them back: this node's shards
                    // directly, other nodes' through their reclaim channel.
                    let me = link.me();
                    let (here, there): (Vec<_>, Vec<_>) =
                        a.others.iter().cloned().partition(|(n, _)| n == me);
                    for (_, other) in here.iter().filter(|(_, h)| *h != p.holder) {
                        match reclaim.iter_mut().find(|(h, _)| h == other) {
                            Some((_, keys)) => keys.push(p.ask.key.clone()),
                            None => reclaim.push((*other, vec![p.ask.key.clone()])),
                        }
                    }
                    if !there.is_empty() {
                        let (link, key) = (link.clone(), p.ask.key.clone());
                        tokio::spawn(async move {
                            let _ = link.ask_back(&there, &key).await;
                        });
                    }
                }
                if now.saturating_sub(p.since) < PENDING_FOR.as_millis() as u64 {
                    remote.pending.push(p);
                    continue;
                }
                grant.others_out = 0;
            }
            if let Some(list) = grants.get_mut(usize::from(p.holder)) {
                list.push(grant);
            }
        }
        Ok((grants, reclaim))
    }

    /// Redis did not answer: say so once, and apply the policy until a ping says it is back.
    fn redis_down(&self, remote: &mut Remote, e: &crate::actors::redis::RedisError, now: u64) {
        if remote.up {
            let policy = match remote.cfg.policy {
                RedisPolicy::FailOpen => "fail_open",
                RedisPolicy::FailClosed => "fail_closed",
            };
            tracing::warn!(error = %e, policy, "Redis is away; limits follow the policy until it answers.");
        }
        remote.up = false;
        remote.next_probe_ms = now.saturating_add(PROBE_EVERY.as_millis() as u64);
        self.metrics.redis_up.set(0);
    }

    /// Answer asks while Redis is away (`shard`: whose batch this is, if any).
    fn by_policy(
        &mut self,
        remote: &Remote,
        shard: Option<Holder>,
        all: Vec<Pending>,
        now: u64,
    ) -> Answers {
        match remote.cfg.policy {
            RedisPolicy::FailOpen => {
                let nodes = u64::from(remote.cfg.nodes.max(1));
                for mut p in all {
                    // This node's share, in the window Redis had open (if it still is).
                    p.ask.limit = Limit {
                        max: p.ask.limit.max.div_ceil(nodes),
                        exact: p.ask.limit.exact,
                    };
                    if let Some(seen) = remote.seen.get(&p.ask.key) {
                        let start = self.window_start(&p.ask.key, seen.window_end_ms);
                        self.ledger.restore(&p.ask.key, start, 0, now);
                    }
                    self.pending.push(p);
                }
                self.on_batch(shard, Vec::new(), &[], now)
            }
            RedisPolicy::FailClosed => {
                let mut grants: Vec<Vec<Grant>> = vec![Vec::new(); self.shards.len()];
                for p in all {
                    if let Some(list) = grants.get_mut(usize::from(p.holder)) {
                        list.push(Grant {
                            key: p.ask.key,
                            units: 0,
                            window_id: now,
                            window_end_ms: now.saturating_add(CLOSED_FOR_MS),
                            max: p.ask.limit.max,
                            remaining: 0,
                            others_out: 0,
                            returned: u64::MAX,
                        });
                    }
                }
                (grants, Vec::new())
            }
        }
    }

    /// The start of the window that ends at `end` (minute windows last 60 s; calendar and
    /// total windows are found from their end).
    fn window_start(&self, key: &MeterKey, end: u64) -> u64 {
        use crate::budget::meter::Period;
        match key.period {
            Period::Minute => end.saturating_sub(crate::budget::period::MINUTE_MS),
            Period::Total => 0,
            p => crate::budget::period::window(p, end.saturating_sub(1), None, self.offset_secs).0,
        }
    }

    /// The budgeter's 20 ms tick: ping Redis when away; when up, retry waiting asks, write
    /// the backlog and look for key changes.
    pub(super) async fn remote_tick(&mut self, me: &ActorRef<BudgeterMsg>, now: u64) {
        let Some(mut remote) = self.remote.take() else {
            return;
        };
        if !remote.up {
            if let Some(link) = remote.link.clone()
                && !remote.probing
                && now >= remote.next_probe_ms
            {
                remote.probing = true;
                remote.next_probe_ms = now.saturating_add(PROBE_EVERY.as_millis() as u64);
                let me = me.clone();
                tokio::spawn(async move {
                    let ok = link.ping().await.is_ok();
                    let _ = me.cast(BudgeterMsg::RedisProbe(ok));
                });
            }
            if !self.pending.is_empty() {
                let answers = self.on_batch(None, Vec::new(), &[], now);
                self.answer(answers, &[], now);
            }
        } else {
            if !remote.pending.is_empty() || !remote.backlog.is_empty() {
                let answers = self.exchange_with(&mut remote, None, Vec::new(), now).await;
                self.answer(answers, &[], now);
            }
            if now >= remote.next_beat_ms
                && let Some(link) = remote.live()
            {
                remote.next_beat_ms = now.saturating_add(BEAT_EVERY.as_millis() as u64);
                if let Err(e) = link.sync(now, None, &[]).await {
                    self.redis_down(&mut remote, &e, now);
                }
            }
            if now >= remote.next_keys_ms {
                remote.next_keys_ms = now.saturating_add(KEYS_EVERY.as_millis() as u64);
                self.remote_keys(&mut remote, now).await;
            }
        }
        let moved = std::mem::take(&mut remote.moved);
        self.remote = Some(remote);
        self.watch_moved(&moved, now);
    }

    /// Redis answers (first connection, or a ping after it went away).
    pub(super) async fn remote_up(&mut self, link: Option<Shared>, now: u64) {
        let Some(mut remote) = self.remote.take() else {
            return;
        };
        if let Some(link) = link {
            tracing::info!(node = link.node(), "Connected to Redis.");
            remote.link = Some(link);
        } else if !remote.up {
            tracing::info!("Redis answers again; writing what waited.");
        }
        remote.probing = false;
        remote.up = true;
        self.metrics.redis_up.set(1);
        self.remote_keys(&mut remote, now).await;
        self.remote = Some(remote);
    }

    /// For the spend book: the connection while Redis answers, and the spend not yet in it.
    pub(super) fn remote_spend(&self) -> Option<(Shared, crate::actors::persist::SpendRows)> {
        let r = self.remote.as_ref()?;
        Some((r.live()?, r.backlog.unwritten_spend()))
    }

    /// A ping came back unanswered.
    pub(super) fn probe_failed(&mut self) {
        if let Some(r) = &mut self.remote {
            r.probing = false;
        }
    }

    /// Queue a key made or changed here for Redis, and write what is queued.
    pub(super) async fn remote_key(&mut self, record: &KeyRecord, now: u64) {
        let Some(mut remote) = self.remote.take() else {
            return;
        };
        remote.key_writes.insert(record.id.clone(), record.clone());
        self.remote_keys(&mut remote, now).await;
        self.remote = Some(remote);
    }

    /// Write the keys changed here, then take the table's changes from other nodes.
    async fn remote_keys(&mut self, remote: &mut Remote, now: u64) {
        let Some(link) = remote.live() else {
            return;
        };
        if !remote.key_writes.is_empty() {
            let keys: Vec<KeyRecord> = remote.key_writes.values().cloned().collect();
            if let Err(e) = link.put_keys(&keys).await {
                self.redis_down(remote, &e, now);
                return;
            }
            remote.key_writes.clear();
        }
        match link.keys(remote.keys_version).await {
            Ok(Some((version, keys))) => {
                remote.keys_version = Some(version);
                if let Some(p) = &self.persist {
                    for k in &keys {
                        p.send(super::Op::Key(Box::new(k.clone())));
                    }
                }
                self.keys.restore(keys);
                self.publish_keys();
            }
            Ok(None) => {}
            Err(e) => self.redis_down(remote, &e, now),
        }
    }

    /// Write what waits before stopping (bounded by the operation timeout).
    pub(super) async fn remote_flush(&mut self, now: u64) {
        let Some(mut remote) = self.remote.take() else {
            return;
        };
        if let Some(link) = remote.live()
            && let Some(batch) = remote.backlog.to_send().cloned()
        {
            match link.sync(now, Some(&batch), &[]).await {
                Ok(_) => remote.backlog.acknowledge(),
                Err(e) => tracing::error!(
                    error = %e,
                    "Cannot write the last reports and spend to Redis before stopping."
                ),
            }
        }
        self.remote = Some(remote);
    }
}
