//! Shared state of several nodes in Redis: the ledger of every limit and budget (one Lua
//! script per exchange, atomic), the keys, and the spend book. Control plane only: the
//! budgeter calls it on the control plane's tokio runtime, never a shard.
//!
//! Owns: [`Shared`] (a reconnecting connection, the prefix, this node's name and the
//! operation timeout), the wire form of asks, grants, reports and spend rows, and
//! [`Backlog`] (reports and spend not yet written, sealed into idempotent batches).
//! Does not: decide what happens while Redis is away (the budgeter applies the policy) or
//! admit anything (shards do, from leases).
//! Key types: [`Shared`], [`Backlog`], [`SyncBatch`], [`RemoteGrant`].
//!
//! Layout under the prefix (`shardgate:` by default):
//! - `w:<meter>`: a meter's window, as in `sync.lua`;
//! - `done:<batch>`: batches already applied (a day), so a retry never counts twice;
//! - `spend:<yyyymmdd>`: the spend book of a UTC day (`<scope>|n`, `|i`, `|o`, `|r`), and
//!   `spend:days` the days it has;
//! - `keys` (id → the key record, JSON, hash only) and `keys:ver` (bumped on every change).

use std::time::{Duration, Instant};

use hashbrown::HashMap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::budgeter::fold_spent;
use super::persist::SpendRows;
use super::store::{
    SpendRow, SpendScope, SpendTotals, parse_spend_scope, push_meter, push_spend_scope,
};
use crate::auth::table::KeyRecord;
use crate::budget::book::Spent;
use crate::budget::ledger::{Grant, Holder, Report};
use crate::budget::meter::MeterKey;
use crate::budget::period;
use crate::config::tenancy::RedisConfig;
use crate::metrics::ControlMetrics;

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// No answer in time.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The client's error (connection refused, reset, a server error).
    #[error("Redis: {0}")]
    Client(#[from] redis::RedisError),
    /// An answer that is not what the script returns.
    #[error("Redis sent an answer shardgate cannot read: {0}")]
    Reply(&'static str),
}

/// One ask for units, as the script takes it.
#[derive(Debug, Clone)]
pub struct RemoteAsk {
    /// The meter.
    pub key: MeterKey,
    /// The local shard asking.
    pub holder: Holder,
    /// Units wanted.
    pub units: u64,
    /// The meter's limit.
    pub max: u64,
}

/// The script's answer to one ask.
#[derive(Debug, Clone)]
pub struct RemoteGrant {
    /// The grant, as a shard takes it.
    pub grant: Grant,
    /// When nothing was granted: the holders with units out, as (`<node>~<boot>`, shard).
    pub others: Vec<(String, Holder)>,
    /// Units used in the window, all nodes together.
    pub used: u64,
}

/// The answer to one exchange.
#[derive(Debug, Clone)]
pub struct Synced {
    /// One per ask.
    pub grants: Vec<RemoteGrant>,
    /// Per report of the batch: the units used in its window after it (`None`: the window
    /// is over).
    pub reported: Vec<Option<u64>>,
}

/// Reports and spend sealed under one id: written at most once, however often it is sent.
#[derive(Debug, Clone, Default)]
pub struct SyncBatch {
    /// `<node>-<boot>-<seq>`.
    pub id: String,
    /// Per shard, its reports (summed per meter and window).
    pub reports: Vec<(Holder, Report)>,
    /// Spend rows.
    pub spend: Vec<SpendRow>,
}

/// What is not in Redis yet: open entries (summed per meter, window and shard, and per
/// scope and day, so memory stays bounded however long Redis is away) and at most one
/// sealed batch waiting to be acknowledged.
#[derive(Debug, Default)]
pub struct Backlog {
    prefix: String,
    seq: u64,
    reports: HashMap<(MeterKey, u64, Holder), (u64, u64, u64)>,
    spend: HashMap<(SpendScope, u32), SpendTotals>,
    sealed: Option<SyncBatch>,
}

impl Backlog {
    /// A backlog whose batch ids start with `prefix` (unique to this node and start).
    pub fn new(prefix: String) -> Self {
        Self {
            prefix,
            ..Self::default()
        }
    }

    /// Add a shard's reports.
    pub fn add_reports(&mut self, holder: Holder, reports: &[Report]) {
        for r in reports.iter().filter(|r| !r.is_empty()) {
            let e = self
                .reports
                .entry((r.key.clone(), r.window_id, holder))
                .or_default();
            e.0 = e.0.saturating_add(r.used);
            e.1 = e.1.saturating_add(r.over);
            e.2 = e.2.saturating_add(r.returned);
        }
    }

    /// Add settled spend: each counts for its scopes, per UTC day.
    pub fn add_spent(&mut self, spent: &[Spent]) {
        fold_spent(&mut self.spend, spent);
    }

    /// The batch to send: the sealed one if it was not acknowledged, else the open entries
    /// sealed under a new id; `None` when there is nothing to write.
    pub fn to_send(&mut self) -> Option<&SyncBatch> {
        if self.sealed.is_none() && !(self.reports.is_empty() && self.spend.is_empty()) {
            self.seq += 1;
            let reports = self
                .reports
                .drain()
                .map(|((key, window_id, holder), (used, over, returned))| {
                    let r = Report {
                        key,
                        window_id,
                        used,
                        over,
                        returned,
                    };
                    (holder, r)
                })
                .collect();
            let spend = self
                .spend
                .drain()
                .map(|(k, t)| SpendRow::of(k, t))
                .collect();
            self.sealed = Some(SyncBatch {
                id: format!("{}-{}", self.prefix, self.seq),
                reports,
                spend,
            });
        }
        self.sealed.as_ref()
    }

    /// The sealed batch is in Redis.
    pub fn acknowledge(&mut self) {
        self.sealed = None;
    }

    /// Spend not yet in Redis (sealed and open), per scope and day.
    pub fn unwritten_spend(&self) -> SpendRows {
        let sealed = self
            .sealed
            .iter()
            .flat_map(|b| &b.spend)
            .map(|r| (r.scope.clone(), r.day, r.totals()));
        let open = self.spend.iter().map(|((s, d), t)| (s.clone(), *d, *t));
        sealed.chain(open).collect()
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.sealed.is_none() && self.reports.is_empty() && self.spend.is_empty()
    }
}

/// The script, loaded once per connection (EVALSHA, loaded again if Redis lost it).
fn script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(include_str!("sync.lua")))
}

/// A connection to the shared Redis, cheap to clone (clones share one multiplexed
/// connection, which reconnects by itself after an error).
#[derive(Clone)]
pub struct Shared {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    node: String,
    /// `<node>~<boot>`: this start's name in Redis (holders are `<me>.<shard>`).
    me: String,
    timeout: Duration,
    offset_secs: i32,
    holders: u16,
    metrics: std::sync::Arc<ControlMetrics>,
}

impl Shared {
    /// Connect (bounded by the operation timeout, and a second at least for the first
    /// connection). `shards` is this node's shard count: lease shares are split over
    /// `nodes × shards` holders.
    pub async fn connect(
        cfg: &RedisConfig,
        node: String,
        boot: u64,
        shards: u16,
        offset_secs: i32,
        metrics: std::sync::Arc<ControlMetrics>,
    ) -> Result<Self, RedisError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let connect_for = cfg.timeout.max(Duration::from_secs(1));
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(cfg.timeout))
            .set_connection_timeout(Some(connect_for))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            connect_for,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| RedisError::Timeout(connect_for))??;
        Ok(Self {
            client,
            conn,
            prefix: cfg.prefix.clone(),
            me: format!("{node}~{boot:x}"),
            node,
            timeout: cfg.timeout,
            offset_secs,
            holders: cfg.nodes.saturating_mul(shards).max(1),
            metrics,
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// This start's name in Redis, `<node>~<boot>`: the node part of its holders' names.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Run one operation under the timeout, counting it.
    async fn run<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::Timeout(self.timeout)),
        };
        self.metrics.redis_latency.observe(started.elapsed());
        match &result {
            Ok(_) => self.metrics.redis_ops.inc(),
            Err(_) => self.metrics.redis_errors.inc(),
        }
        result
    }

    /// Is Redis answering?
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        self.run(async move {
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok(())
        })
        .await
    }

    /// One exchange: write `batch` (at most once, by its id), then answer `asks`, atomically.
    pub async fn sync(
        &self,
        now_ms: u64,
        batch: Option<&SyncBatch>,
        asks: &[RemoteAsk],
    ) -> Result<Synced, RedisError> {
        let script = script();
        let mut inv = script.prepare_invoke();
        let empty = SyncBatch::default();
        let b = batch.unwrap_or(&empty);
        inv.arg(&self.prefix)
            .arg(now_ms)
            .arg(&b.id)
            .arg(b.reports.len())
            .arg(b.spend.len())
            .arg(asks.len())
            .arg(&self.me);
        let mut text = String::new();
        for (holder, r) in &b.reports {
            text.clear();
            push_meter(&mut text, &r.key);
            inv.arg(&text)
                .arg(r.window_id)
                .arg(self.holder_name(*holder))
                .arg(as_i64(r.used))
                .arg(as_i64(r.over))
                .arg(as_i64(r.returned));
        }
        for row in &b.spend {
            text.clear();
            push_spend_scope(&mut text, &row.scope);
            inv.arg(row.day)
                .arg(&text)
                .arg(as_i64(row.nano_usd))
                .arg(as_i64(row.input_tokens))
                .arg(as_i64(row.output_tokens))
                .arg(as_i64(row.requests));
        }
        for a in asks {
            text.clear();
            push_meter(&mut text, &a.key);
            let (start, end) = period::window(a.key.period, now_ms, None, self.offset_secs);
            let expire = if end == u64::MAX {
                0
            } else {
                end.saturating_add(period::MINUTE_MS)
            };
            inv.arg(&text)
                .arg(self.holder_name(a.holder))
                .arg(as_i64(a.units))
                .arg(as_i64(a.max))
                .arg(self.holders)
                .arg(start)
                .arg(end)
                .arg(expire);
        }
        let mut conn = self.conn.clone();
        type Row = (u64, String, String, u64, u64, u64, String, u64);
        let (reported, rows): (Vec<i64>, Vec<Row>) = self
            .run(async move { Ok(inv.invoke_async(&mut conn).await?) })
            .await?;
        if reported.len() != b.reports.len() {
            return Err(RedisError::Reply("one figure per report"));
        }
        if rows.len() != asks.len() {
            return Err(RedisError::Reply("one answer per ask"));
        }
        let mut out = Vec::with_capacity(rows.len());
        for (a, (units, start, end, remaining, others_out, returned, others, used)) in
            asks.iter().zip(rows)
        {
            let parse = |s: &str| s.parse::<u64>().map_err(|_| RedisError::Reply("window"));
            let grant = Grant {
                key: a.key.clone(),
                units,
                window_id: parse(&start)?,
                window_end_ms: parse(&end)?,
                max: a.max,
                remaining,
                others_out,
                returned,
            };
            let others = others
                .split(',')
                .filter_map(|h| {
                    let (node, shard) = h.rsplit_once('.')?;
                    Some((node.to_owned(), shard.parse().ok()?))
                })
                .collect();
            out.push(RemoteGrant {
                grant,
                others,
                used,
            });
        }
        let reported = reported
            .into_iter()
            .map(|u| u64::try_from(u).ok())
            .collect();
        Ok(Synced {
            grants: out,
            reported,
        })
    }

    /// Write keys (made or changed on this node) and bump the version, atomically.
    pub async fn put_keys(&self, keys: &[KeyRecord]) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for k in keys {
            let json = serde_json::to_string(k).map_err(|_| RedisError::Reply("key record"))?;
            pipe.hset(format!("{}keys", self.prefix), &*k.id, json)
                .ignore();
        }
        pipe.incr(format!("{}keys:ver", self.prefix), 1).ignore();
        let mut conn = self.conn.clone();
        self.run(async move {
            pipe.query_async::<()>(&mut conn).await?;
            Ok(())
        })
        .await
    }

    /// The keys, if their version is not `known`: `(version, keys)`. A record that does not
    /// parse is skipped with a log line (its id only).
    pub async fn keys(
        &self,
        known: Option<u64>,
    ) -> Result<Option<(u64, Vec<KeyRecord>)>, RedisError> {
        let mut conn = self.conn.clone();
        let (ver_key, keys_key) = (
            format!("{}keys:ver", self.prefix),
            format!("{}keys", self.prefix),
        );
        self.run(async move {
            let ver: Option<u64> = redis::cmd("GET")
                .arg(&ver_key)
                .query_async(&mut conn)
                .await?;
            let ver = ver.unwrap_or(0);
            if known == Some(ver) {
                return Ok(None);
            }
            let (ver, all): (Option<u64>, Vec<(String, String)>) = redis::pipe()
                .atomic()
                .get(&ver_key)
                .hgetall(&keys_key)
                .query_async(&mut conn)
                .await?;
            let keys = all
                .into_iter()
                .filter_map(|(id, json)| match serde_json::from_str(&json) {
                    Ok(k) => Some(k),
                    Err(_) => {
                        tracing::warn!(key = %id, "A key record in Redis does not parse; skipped.");
                        None
                    }
                })
                .collect();
            Ok(Some((ver.unwrap_or(0), keys)))
        })
        .await
    }

    /// The spend book between two UTC days (yyyymmdd), both included.
    pub async fn spend(&self, from: u32, to: u32) -> Result<SpendRows, RedisError> {
        let mut conn = self.conn.clone();
        let prefix = self.prefix.clone();
        self.run(async move {
            let days: Vec<u32> = redis::cmd("SMEMBERS")
                .arg(format!("{prefix}spend:days"))
                .query_async(&mut conn)
                .await?;
            let days: Vec<u32> = days
                .into_iter()
                .filter(|d| (from..=to).contains(d))
                .collect();
            let mut pipe = redis::pipe();
            for d in &days {
                pipe.hgetall(format!("{prefix}spend:{d}"));
            }
            let maps: Vec<Vec<(String, u64)>> = pipe.query_async(&mut conn).await?;
            let mut rows: std::collections::BTreeMap<(u32, String), SpendTotals> =
                Default::default();
            for (day, fields) in days.iter().zip(maps) {
                for (field, v) in fields {
                    let Some((scope, which)) = field.rsplit_once('|') else {
                        continue;
                    };
                    let t = rows.entry((*day, scope.to_owned())).or_default();
                    match which {
                        "n" => t.nano_usd = v,
                        "i" => t.input_tokens = v,
                        "o" => t.output_tokens = v,
                        "r" => t.requests = v,
                        _ => {}
                    }
                }
            }
            Ok(rows
                .into_iter()
                .filter_map(|((day, scope), t)| Some((parse_spend_scope(&scope)?, day, t)))
                .collect())
        })
        .await
    }

    /// Ask holders on other nodes to give their unused units of `key` back (a shard here is
    /// starved while they hold some): one message per holder on its node's channel.
    pub async fn ask_back(
        &self,
        holders: &[(String, Holder)],
        key: &MeterKey,
    ) -> Result<(), RedisError> {
        let mut meter = String::new();
        push_meter(&mut meter, key);
        let mut pipe = redis::pipe();
        for (node, shard) in holders {
            pipe.publish(
                format!("{}reclaim:{node}", self.prefix),
                format!("{shard}|{meter}"),
            )
            .ignore();
        }
        let mut conn = self.conn.clone();
        self.run(async move {
            pipe.query_async::<()>(&mut conn).await?;
            Ok(())
        })
        .await
    }

    /// Listen for other nodes asking this start's shards for units back, calling `on` with
    /// each (shard, meter), until the subscription ends (an error, or Redis went away).
    pub async fn reclaims(&self, mut on: impl FnMut(Holder, MeterKey)) -> Result<(), RedisError> {
        let wait = self.timeout.max(Duration::from_secs(1));
        let mut sub = tokio::time::timeout(wait, self.client.get_async_pubsub())
            .await
            .map_err(|_| RedisError::Timeout(wait))??;
        let channel = format!("{}reclaim:{}", self.prefix, self.me);
        tokio::time::timeout(wait, sub.subscribe(&channel))
            .await
            .map_err(|_| RedisError::Timeout(wait))??;
        let mut messages = sub.into_on_message();
        while let Some(msg) = futures_lite::StreamExt::next(&mut messages).await {
            let Ok(text) = msg.get_payload::<String>() else {
                continue;
            };
            let parsed = text.split_once('|').and_then(|(shard, meter)| {
                Some((
                    shard.parse::<Holder>().ok()?,
                    super::store::parse_meter(meter)?,
                ))
            });
            if let Some((shard, key)) = parsed {
                on(shard, key);
            }
        }
        Ok(())
    }

    /// Claim the alert of a budget threshold for this node: `true` for the first node to
    /// claim it in its window (that node POSTs the webhook; the others do not).
    pub async fn claim_alert(
        &self,
        key: &MeterKey,
        at_percent: u8,
        window_end_ms: u64,
        now_ms: u64,
    ) -> Result<bool, RedisError> {
        let mut text = format!("{}alert:", self.prefix);
        push_meter(&mut text, key);
        text.push_str(&format!(":{window_end_ms}:{at_percent}"));
        // Kept until the window ends (a day for windows that never end, past which a second
        // alert of the same threshold is no news anyway).
        let ttl = window_end_ms
            .saturating_sub(now_ms)
            .clamp(1_000, 86_400_000)
            .saturating_add(60_000);
        let mut conn = self.conn.clone();
        self.run(async move {
            let set: Option<String> = redis::cmd("SET")
                .arg(&text)
                .arg(&self.me)
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .query_async(&mut conn)
                .await?;
            Ok(set.is_some())
        })
        .await
    }

    /// A holder's name in Redis: `<node>~<boot>.<shard>`.
    fn holder_name(&self, shard: Holder) -> String {
        format!("{}.{shard}", self.me)
    }
}

/// Redis integers are signed 64-bit: larger counts are clamped (18 billion USD in nano-USD).
fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::budget::meter::{Measure, Period, Scope};

    fn report(used: u64, over: u64, returned: u64) -> Report {
        Report {
            key: MeterKey::new(
                Scope::Key(Arc::from("k")),
                Measure::Requests,
                Period::Minute,
            ),
            window_id: 7,
            used,
            over,
            returned,
        }
    }

    #[test]
    fn a_sealed_batch_is_resent_unchanged_until_acknowledged() {
        let mut b = Backlog::new("n-1".into());
        assert!(b.to_send().is_none() && b.is_empty());
        b.add_reports(0, &[report(2, 0, 1), report(0, 0, 0)]);
        b.add_reports(0, &[report(3, 1, 0)]);
        b.add_spent(&[Spent {
            key: None,
            team: None,
            user: None,
            model: Arc::from("m"),
            nano_usd: 5,
            input_tokens: 1,
            output_tokens: 2,
            requests: 1,
            at_ms: 1_700_000_000_000,
        }]);
        let first = b.to_send().cloned().unwrap();
        assert_eq!(first.id, "n-1-1");
        assert_eq!(first.reports.len(), 1);
        let (h, r) = &first.reports[0];
        assert_eq!((*h, r.used, r.over, r.returned), (0, 5, 1, 1));
        // More arrives while the batch is out: it waits for the next batch.
        b.add_reports(1, &[report(1, 0, 0)]);
        let again = b.to_send().cloned().unwrap();
        assert_eq!((again.id.as_str(), again.reports.len()), ("n-1-1", 1));
        // Global and the model's row.
        assert_eq!(b.unwritten_spend().len(), 2);
        b.acknowledge();
        let second = b.to_send().cloned().unwrap();
        assert_eq!((second.id.as_str(), second.reports[0].0), ("n-1-2", 1));
        assert!(second.spend.is_empty());
        b.acknowledge();
        assert!(b.to_send().is_none() && b.is_empty());
    }

    #[test]
    fn counts_past_i64_are_clamped() {
        assert_eq!(as_i64(5), 5);
        assert_eq!(as_i64(u64::MAX), i64::MAX);
    }
}
