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

mod remote;

use std::sync::Arc;

use super::ShardCmd;
use super::keyring::{Created, KeyError, KeyPatch, Keyring, NewKey};
use super::persist::{Op, Persist, SpendRows};
use super::redis::Shared;
use super::store::{SpendRow, SpendScope, SpendTotals, utc_day};
use crate::auth::table::KeyRecord;
use crate::budget::book::{BudgetBatch, Spent};
use crate::budget::lease::Ask;
use crate::budget::ledger::{Grant, Holder, Ledger, Report, Status};
use crate::budget::meter::MeterKey;
use crate::budget::meter::{Measure, Scope};
use crate::budget::policy::{self, Action, Fired, Thresholds, Watch};
use crate::metrics::ControlMetrics;
use crate::shard::bridge::InboxSender;
use hashbrown::HashMap;

/// Longest time an ask waits for reclaimed units before an empty grant answers it.
pub const PENDING_FOR: Duration = Duration::from_secs(1);
/// How often the spend book and the meter windows go to the store: what a crash can lose.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often meters whose window ended and that nobody holds are forgotten.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Messages to the budgeter.
pub enum BudgeterMsg {
    /// One shard's asks, reports and settled spend since its last batch.
    Batch {
        /// The shard.
        shard: Holder,
        /// What it sends.
        batch: BudgetBatch,
    },
    /// Write the spend book and the meter windows to the store (the actor's own interval).
    Flush,
    /// The spend book between two UTC days (yyyymmdd), both included (admin API): the
    /// stored rows plus what is not written yet.
    Spend {
        /// First day.
        from: u32,
        /// Last day.
        to: u32,
        /// The rows.
        reply: RpcReplyPort<Result<SpendRows, String>>,
    },
    /// Forget idle meters (the actor's own interval).
    Sweep,
    /// A meter's figures now (admin API, tests).
    Status(MeterKey, RpcReplyPort<Option<Status>>),
    /// Every meter in use now: its figures and this node's shards' leases (admin API).
    Limits(RpcReplyPort<Vec<MeterView>>),
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
    /// Redis work (the actor's own interval, with `[state] redis_url`).
    Tick,
    /// The connection to Redis is made.
    RedisLink(super::redis::Shared),
    /// A ping to a Redis that went away came back (`true`: it answered).
    RedisProbe(bool),
    /// Another node asks one of this node's shards for its unused units of a meter.
    RemoteReclaim(Holder, MeterKey),
}

/// One meter as the admin API shows it.
#[derive(Debug, Clone)]
pub struct MeterView {
    /// The meter.
    pub key: MeterKey,
    /// Its figures (with Redis: as the last exchange gave them, every node together).
    pub status: Status,
    /// Units on lease to each of this node's shards (from the local ledger).
    pub leases: Vec<(Holder, u64)>,
}

/// Budgeter start-up arguments.
pub struct BudgeterArgs {
    /// Every shard's inbox, by shard index.
    pub shards: Vec<InboxSender<ShardCmd>>,
    /// Calendar offset of days and months, seconds east of UTC.
    pub offset_secs: i32,
    /// The keys (the config file's to begin with, and the stored ones).
    pub keys: Keyring,
    /// The store's thread, when a data directory is configured.
    pub persist: Option<Persist>,
    /// Meter windows read from the store at start: (meter, window start, used).
    pub windows: Vec<(MeterKey, u64, u64)>,
    /// Budget thresholds and their actions.
    pub thresholds: Thresholds,
    /// Where alerts are POSTed.
    pub webhook_url: Option<http::Uri>,
    /// The control plane's counters.
    pub metrics: Arc<ControlMetrics>,
    /// The shared Redis, when configured.
    pub redis: Option<crate::config::tenancy::RedisConfig>,
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

impl Pending {
    /// A shard's new asks (none for the actor's own retries, `shard: None`).
    fn asked(shard: Option<Holder>, asks: Vec<Ask>, now: u64) -> impl Iterator<Item = Pending> {
        shard.into_iter().flat_map(move |holder| {
            asks.clone().into_iter().map(move |ask| Pending {
                holder,
                ask,
                since: now,
                waiting_on: Vec::new(),
                fresh: true,
            })
        })
    }
}

/// The actor's state.
pub struct BudgeterState {
    ledger: Ledger,
    shards: Vec<InboxSender<ShardCmd>>,
    pending: Vec<Pending>,
    keys: Keyring,
    rng: ring::rand::SystemRandom,
    persist: Option<Persist>,
    /// Spend not yet written, by scope and day.
    book: HashMap<(SpendScope, u32), SpendTotals>,
    thresholds: Thresholds,
    webhook_url: Option<http::Uri>,
    metrics: Arc<ControlMetrics>,
    /// Each spend budget's thresholds fired in its window.
    watches: HashMap<MeterKey, Watch>,
    /// The strongest action in force per scope, as last published to the shards.
    actions: Arc<HashMap<Scope, Action>>,
    /// Calendar offset of days and months, seconds east of UTC.
    offset_secs: i32,
    /// Spend per team since start (for `gateway_team_spend_usd_total`), and whether it
    /// changed since it was last published.
    team_spend: std::collections::BTreeMap<Arc<str>, u64>,
    team_spend_changed: bool,
    /// The shared Redis side, when configured.
    remote: Option<remote::Remote>,
}

/// The budgeter.
pub struct BudgeterActor;

/// Wall-clock unix milliseconds (calendar periods need real time).
pub(crate) fn now_ms() -> u64 {
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
            persist: None,
            book: HashMap::new(),
            thresholds: Thresholds::default(),
            webhook_url: None,
            metrics: Arc::default(),
            watches: HashMap::new(),
            actions: Arc::default(),
            offset_secs,
            team_spend: Default::default(),
            team_spend_changed: false,
            remote: None,
        }
    }

    /// Every meter with figures now, sorted by their text.
    pub fn meters(&self, now: u64) -> Vec<MeterView> {
        let mut keys: Vec<&MeterKey> = self.ledger.meters().collect();
        if let Some(r) = &self.remote {
            keys.extend(r.meters());
        }
        let mut out: Vec<MeterView> = keys
            .into_iter()
            .filter_map(|k| {
                Some(MeterView {
                    key: k.clone(),
                    status: self.status(k, now)?,
                    leases: self.ledger.holders(k, now),
                })
            })
            .collect();
        out.sort_by_cached_key(|m| super::store::meter_text(&m.key));
        out.dedup_by(|a, b| a.key == b.key);
        out
    }

    /// A meter's figures: Redis's as last seen when it is shared, else the local ledger's.
    pub fn status(&self, key: &MeterKey, now: u64) -> Option<Status> {
        self.remote
            .as_ref()
            .and_then(|r| r.status(key, now))
            .or_else(|| self.ledger.status(key, now))
    }

    /// Fold spend reports into the budgets' thresholds: each threshold crossed fires once per
    /// window (a log line, a metric, and the webhook when configured), and when the strongest
    /// action of a scope changes the shards get the new table of actions.
    ///
    /// `spent_out` are budgets the ledger just refused for good in this window (nothing left
    /// to lease, nothing out): they count as used up, since the last request that would fit
    /// is refused even if the settled spend sits a reservation short of the cap.
    pub fn watch_budgets(
        &mut self,
        reports: &[Report],
        spent_out: &[MeterKey],
        now: u64,
    ) -> Vec<Fired> {
        let mut fired = Vec::new();
        let mut changed = false;
        let reported = reports
            .iter()
            .map(|r| (&r.key, false))
            .chain(spent_out.iter().map(|k| (k, true)));
        for (key, used_up) in reported.filter(|(k, _)| k.measure == Measure::Spend) {
            let Some(st) = self.status(key, now) else {
                continue;
            };
            let watch = self.watches.entry(key.clone()).or_default();
            // Window ends grow with the windows, so they order them as ids do.
            let window = st.window_end_ms;
            let used = if used_up {
                st.used.max(st.max)
            } else {
                st.used
            };
            fired.extend(watch.observe(
                &self.thresholds,
                key,
                window,
                st.window_end_ms,
                used,
                st.max,
            ));
            let now_in_force = watch.in_force(window);
            if self.actions.get(&key.scope).copied() != now_in_force {
                changed = true;
            }
        }
        if changed {
            let mut table: HashMap<Scope, Action> = HashMap::new();
            for (key, watch) in &self.watches {
                let window = self.status(key, now).map_or(0, |s| s.window_end_ms);
                if let Some(a) = watch.in_force(window) {
                    let e = table.entry(key.scope.clone()).or_insert(a);
                    *e = (*e).max(a);
                }
            }
            self.actions = Arc::new(table);
            for s in &self.shards {
                let _ = s.send(ShardCmd::Actions(self.actions.clone()));
            }
        }
        for f in &fired {
            self.metrics.thresholds_fired[f.action as usize].inc();
            tracing::warn!(
                scope = f.key.scope.as_str(),
                id = f.key.scope.id().unwrap_or("-"),
                period = f.key.period.as_str(),
                at_percent = f.at_percent,
                action = f.action.as_str(),
                used_usd = crate::budget::Cost(f.used).usd(),
                max_usd = crate::budget::Cost(f.max).usd(),
                "Budget threshold reached."
            );
        }
        fired
    }

    /// POST each fired threshold to the webhook, off the actor.
    fn alert(&self, fired: Vec<Fired>) {
        let Some(url) = self.webhook_url.clone() else {
            return;
        };
        // With Redis, the first node to see a crossing claims it and alone POSTs it.
        let shared = self.remote.as_ref().and_then(|r| r.live());
        for f in fired {
            let (url, metrics, shared) = (url.clone(), self.metrics.clone(), shared.clone());
            let body = policy::webhook_body(&f).to_string().into_bytes();
            tokio::spawn(async move {
                if let Some(link) = shared {
                    // Unanswered: POST anyway (a duplicate alert beats a lost one).
                    let claimed = link
                        .claim_alert(&f.key, f.at_percent, f.window_end_ms, now_ms())
                        .await;
                    if matches!(claimed, Ok(false)) {
                        return;
                    }
                }
                match super::webhook::post(&url, body).await {
                    Ok(status) if (200..300).contains(&status) => {}
                    Ok(status) => {
                        metrics.webhook_failures.inc();
                        tracing::warn!(status, "Budget webhook answered with an error.");
                    }
                    Err(e) => {
                        metrics.webhook_failures.inc();
                        tracing::warn!(error = %e, "Budget webhook failed.");
                    }
                }
            });
        }
    }

    /// Add settled requests to the spend book: each counts for the global scope, its key,
    /// team, end user and model, on its UTC day. Teams' totals also go to the metrics.
    pub fn book(&mut self, spent: &[Spent]) {
        fold_spent(&mut self.book, spent);
        for s in spent.iter().filter(|s| s.nano_usd > 0) {
            let Some(team) = &s.team else { continue };
            let label = if self.team_spend.contains_key(team)
                || self.team_spend.len() < crate::metrics::MAX_TEAM_LABELS
            {
                team.clone()
            } else {
                Arc::from("_other")
            };
            let t = self.team_spend.entry(label).or_default();
            *t = t.saturating_add(s.nano_usd);
            self.team_spend_changed = true;
        }
    }

    /// Hand the unwritten spend and the meter windows to the store thread.
    fn flush(&mut self) {
        let Some(persist) = &self.persist else {
            return;
        };
        if !self.book.is_empty() {
            let rows = self.book.drain().map(|(k, t)| SpendRow::of(k, t)).collect();
            persist.send(Op::Spend(rows));
        }
        let windows = self
            .ledger
            .windows()
            .map(|(k, start, used)| (k.clone(), start, used))
            .collect();
        persist.send(Op::Windows(windows));
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

    /// A key was made or changed here: store it, and write it to Redis when shared.
    async fn key_changed(&mut self, record: &KeyRecord) {
        if let Some(p) = &self.persist {
            p.send(Op::Key(Box::new(record.clone())));
        }
        self.remote_key(record, now_ms()).await;
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
        for mut p in pending.into_iter().chain(Pending::asked(shard, asks, now)) {
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

    /// Send the answers, then look at the budgets: the reports' and those the answers say
    /// are spent for good (nothing left, nothing out: they count as 100%).
    fn answer(&mut self, answers: Answers, reports: &[Report], now: u64) {
        // While Redis is away the policy answers: its refusals say nothing of the budgets.
        let authority = self.remote.as_ref().is_none_or(|r| r.is_up());
        let spent_out: Vec<MeterKey> = answers
            .0
            .iter()
            .flatten()
            .filter(|g| authority && g.units == 0 && g.remaining == 0 && g.others_out == 0)
            .map(|g| g.key.clone())
            .collect();
        self.send(answers);
        if reports.is_empty() && spent_out.is_empty() {
            return;
        }
        let fired = self.watch_budgets(reports, &spent_out, now);
        self.alert(fired);
    }

    fn send(&self, (grants, reclaim): Answers) {
        let made = grants.iter().flatten().filter(|g| g.units > 0).count();
        self.metrics.lease_grants.add(made as u64);
        self.metrics.lease_reclaims.add(reclaim.len() as u64);
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

/// Add settled requests to a spend book: each counts for the global scope, its key, team,
/// end user and model, on its UTC day.
pub(super) fn fold_spent(book: &mut HashMap<(SpendScope, u32), SpendTotals>, spent: &[Spent]) {
    for s in spent {
        let day = utc_day(s.at_ms);
        let scopes = [
            Some(SpendScope::Global),
            s.key.as_ref().map(|k| SpendScope::Key(k.to_string())),
            s.team.as_ref().map(|t| SpendScope::Team(t.to_string())),
            s.user.as_ref().map(|u| SpendScope::User(u.to_string())),
            Some(SpendScope::Model(s.model.to_string())),
        ];
        for scope in scopes.into_iter().flatten() {
            let t = book.entry((scope, day)).or_default();
            t.nano_usd = t.nano_usd.saturating_add(s.nano_usd);
            t.input_tokens = t.input_tokens.saturating_add(s.input_tokens);
            t.output_tokens = t.output_tokens.saturating_add(s.output_tokens);
            t.requests = t.requests.saturating_add(s.requests);
        }
    }
}

/// Stored rows plus the unwritten ones, added up per scope and day.
fn merge(stored: SpendRows, pending: SpendRows) -> SpendRows {
    let mut all: std::collections::BTreeMap<(u32, SpendScope), SpendTotals> = Default::default();
    for (scope, day, t) in stored.into_iter().chain(pending) {
        let e = all.entry((day, scope)).or_default();
        e.nano_usd = e.nano_usd.saturating_add(t.nano_usd);
        e.input_tokens = e.input_tokens.saturating_add(t.input_tokens);
        e.output_tokens = e.output_tokens.saturating_add(t.output_tokens);
        e.requests = e.requests.saturating_add(t.requests);
    }
    all.into_iter()
        .map(|((day, scope), t)| (scope, day, t))
        .collect()
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
        me.send_interval(FLUSH_EVERY, || BudgeterMsg::Flush);
        let mut state = BudgeterState::new(args.shards, args.offset_secs, args.keys);
        let now = now_ms();
        for (key, window, used) in &args.windows {
            state.ledger.restore(key, *window, *used, now);
        }
        state.persist = args.persist;
        state.thresholds = args.thresholds;
        state.webhook_url = args.webhook_url;
        state.metrics = args.metrics;
        if let Some(cfg) = args.redis {
            let node = cfg.node_id.clone().unwrap_or_else(|| {
                let mut b = [0u8; 4];
                let _ = ring::rand::SecureRandom::fill(&state.rng, &mut b);
                b.iter().map(|x| format!("{x:02x}")).collect()
            });
            let shards = u16::try_from(state.shards.len()).unwrap_or(u16::MAX);
            state.remote = Some(remote::Remote::new(cfg.clone(), node.clone(), now));
            // The first connection before the first ask is answered (asks queue meanwhile),
            // so a node does not start on its policy; later ones in the background.
            let metrics = state.metrics.clone();
            match Shared::connect(&cfg, node.clone(), now, shards, args.offset_secs, metrics).await
            {
                Ok(link) => {
                    remote::listen_for_reclaims(me.clone(), link.clone());
                    state.remote_up(Some(link), now).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Cannot connect to Redis yet; the policy applies.");
                    remote::connect_in_background(
                        me.clone(),
                        cfg,
                        node,
                        now,
                        shards,
                        args.offset_secs,
                        state.metrics.clone(),
                    );
                }
            }
            me.send_interval(remote::TICK_EVERY, || BudgeterMsg::Tick);
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _me: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.remote_flush(now_ms()).await;
        state.flush();
        if let Some(p) = &state.persist {
            p.sync();
        }
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            BudgeterMsg::Batch { shard, batch } => {
                state.book(&batch.spent);
                let now = now_ms();
                let answers = match &mut state.remote {
                    Some(remote) => {
                        remote.backlog.add_spent(&batch.spent);
                        remote.backlog.add_reports(shard, &batch.reports);
                        // The local ledger counts too, for the windows it opened while
                        // Redis was away (it ignores the rest).
                        for r in &batch.reports {
                            state.ledger.report(shard, r, now);
                        }
                        state.remote_exchange(Some(shard), batch.asks, now).await
                    }
                    None => state.on_batch(Some(shard), batch.asks, &batch.reports, now),
                };
                state.answer(answers, &batch.reports, now);
            }
            BudgeterMsg::Flush => {
                if std::mem::take(&mut state.team_spend_changed) {
                    let snapshot = state
                        .team_spend
                        .iter()
                        .map(|(t, n)| (t.clone(), *n))
                        .collect();
                    state.metrics.team_spend.store(Arc::new(snapshot));
                }
                state.flush();
            }
            BudgeterMsg::Spend { from, to, reply } => {
                if let Some((link, unwritten)) = state.remote_spend() {
                    // Every node's spend is in Redis, plus what this node has not written.
                    let unwritten: SpendRows = unwritten
                        .into_iter()
                        .filter(|(_, day, _)| (from..=to).contains(day))
                        .collect();
                    tokio::spawn(async move {
                        let rows = link.spend(from, to).await.map_err(|e| e.to_string());
                        let _ = reply.send(rows.map(|rows| merge(rows, unwritten)));
                    });
                    return Ok(());
                }
                let pending: SpendRows = state
                    .book
                    .iter()
                    .filter(|((_, day), _)| (from..=to).contains(day))
                    .map(|((scope, day), t)| (scope.clone(), *day, *t))
                    .collect();
                match &state.persist {
                    Some(p) => {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        p.send(Op::Read {
                            from,
                            to,
                            reply: tx,
                        });
                        // Answered off the actor, so a slow disk never holds it up.
                        tokio::spawn(async move {
                            let stored = rx.await.unwrap_or_else(|_| Err("store gone".into()));
                            let _ = reply.send(stored.map(|rows| merge(rows, pending)));
                        });
                    }
                    None => {
                        let _ = reply.send(Ok(merge(Vec::new(), pending)));
                    }
                }
            }
            BudgeterMsg::Sweep => {
                let now = now_ms();
                state.ledger.sweep(now);
                // Asks that waited too long for reclaimed units are answered as they stand.
                if !state.pending.is_empty() {
                    let answers = state.on_batch(None, Vec::new(), &[], now);
                    state.answer(answers, &[], now);
                }
            }
            BudgeterMsg::Limits(reply) => {
                let _ = reply.send(state.meters(now_ms()));
            }
            BudgeterMsg::Status(key, reply) => {
                let _ = reply.send(state.status(&key, now_ms()));
            }
            BudgeterMsg::Tick => state.remote_tick(&me, now_ms()).await,
            BudgeterMsg::RedisLink(link) => {
                remote::listen_for_reclaims(me.clone(), link.clone());
                state.remote_up(Some(link), now_ms()).await;
            }
            BudgeterMsg::RedisProbe(true) => state.remote_up(None, now_ms()).await,
            BudgeterMsg::RedisProbe(false) => state.probe_failed(),
            BudgeterMsg::RemoteReclaim(shard, key) => {
                state.metrics.lease_reclaims.inc();
                if let Some(s) = state.shards.get(usize::from(shard)) {
                    let _ = s.send(ShardCmd::Reclaim(vec![key]));
                }
            }
            BudgeterMsg::CreateKey(new, reply) => {
                let result = state.keys.create(new, &state.rng, now_ms());
                if let Ok(made) = &result {
                    state.key_changed(&made.record).await;
                }
                state.after_key_change(result, reply);
            }
            BudgeterMsg::UpdateKey(id, patch, reply) => {
                let result = state.keys.update(&id, patch);
                if let Ok(k) = &result {
                    state.key_changed(k).await;
                }
                state.after_key_change(result, reply);
            }
            BudgeterMsg::RevokeKey(id, reply) => {
                let result = state.keys.revoke(&id);
                if let Ok(k) = &result {
                    state.key_changed(k).await;
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
