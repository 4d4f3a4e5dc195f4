//! The cache's second level in Redis, on the control plane's runtime: answers shared between
//! nodes (LZ4-compressed, with their TTL), looked up when a shard's own cache misses, and
//! invalidations passed to every node over pub/sub.
//!
//! Layout under the prefix: `c:<key>` the answer (`cache::wire`), `ci:m:<model>`,
//! `ci:t:<tenant>` and `ci:g:<tag>` the keys filed under each (sets, for invalidation), and
//! the channel `cache:inval` (`<origin>|<name>=<value>`).
//!
//! Redis down or slow: every operation is bounded by the configured timeout and a failed
//! lookup is a miss; the shard waits no longer than that timeout in any case.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::ShardCmd;
use crate::cache::l2::L2Request;
use crate::cache::{CacheKey, Entry, Selector, Tenant, wire};
use crate::config::tenancy::RedisConfig;
use crate::shard::bridge::InboxSender;

/// What the L2 task needs.
pub struct L2Args {
    /// The shards' requests.
    pub requests: flume::Receiver<L2Request>,
    /// The shared Redis.
    pub redis: RedisConfig,
    /// How long an index set of keys lives (the longest TTL an answer may have).
    pub max_ttl: Duration,
}

/// How often a node that cannot reach Redis tries again.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// Serve the shards' L2 requests until every sender is gone.
pub async fn run(args: L2Args, shards: Vec<InboxSender<ShardCmd>>) {
    tracing::debug!("Cache L2: starting.");
    let origin = format!(
        "{:x}",
        std::process::id() as u64 ^ crate::pipeline::admit::now_ms().rotate_left(20)
    );
    let link = Arc::new(tokio::sync::OnceCell::<ConnectionManager>::new());
    tokio::spawn(connect(link.clone(), args.redis.clone()));
    tokio::spawn(listen(
        args.redis.clone(),
        origin.clone(),
        shards,
        args.requests.clone(),
    ));
    let l2 = Arc::new(L2 {
        link,
        prefix: args.redis.prefix.clone(),
        timeout: args.redis.timeout,
        max_ttl: args.max_ttl,
        origin,
    });
    while let Ok(req) = args.requests.recv_async().await {
        let l2 = l2.clone();
        tokio::spawn(async move { l2.serve(req).await });
    }
}

struct L2 {
    link: Arc<tokio::sync::OnceCell<ConnectionManager>>,
    prefix: String,
    timeout: Duration,
    max_ttl: Duration,
    origin: String,
}

/// Connect once (retrying until Redis answers); the manager reconnects by itself after that.
async fn connect(link: Arc<tokio::sync::OnceCell<ConnectionManager>>, cfg: RedisConfig) {
    loop {
        let attempt = async {
            let client = redis::Client::open(cfg.url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(cfg.timeout))
                .set_connection_timeout(Some(cfg.timeout.max(Duration::from_secs(1))))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            ConnectionManager::new_with_config(client, config).await
        };
        match tokio::time::timeout(cfg.timeout.max(Duration::from_secs(1)), attempt).await {
            Ok(Ok(conn)) => {
                tracing::info!("Cache L2: connected to Redis.");
                let _ = link.set(conn);
                return;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "Cache L2: Redis not reachable yet."),
            Err(_) => tracing::debug!("Cache L2: Redis did not answer in time."),
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

impl L2 {
    fn entry_key(&self, key: &CacheKey) -> String {
        format!("{}c:{key}", self.prefix)
    }

    fn index_keys(&self, e: &Entry) -> Vec<String> {
        let mut out = vec![format!("{}ci:m:{}", self.prefix, e.model)];
        out.push(format!("{}ci:t:{}", self.prefix, tenant_text(&e.tenant)));
        for t in e.tags.iter() {
            out.push(format!("{}ci:g:{t}", self.prefix));
        }
        out
    }

    async fn serve(&self, req: L2Request) {
        tracing::trace!(connected = self.link.get().is_some(), "Cache L2: request.");
        let Some(conn) = self.link.get() else {
            if let L2Request::Get { reply, .. } = req {
                let _ = reply.send(None);
            }
            return;
        };
        let mut conn = conn.clone();
        match req {
            L2Request::Get { key, reply } => {
                let got: Option<Vec<u8>> = match tokio::time::timeout(
                    self.timeout,
                    conn.get(self.entry_key(&key)),
                )
                .await
                {
                    Ok(Ok(v)) => v,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "Cache L2: lookup failed.");
                        None
                    }
                    Err(_) => None,
                };
                let entry = got.and_then(|b| wire::decode(&b).ok()).map(Arc::new);
                let _ = reply.send(entry);
            }
            L2Request::Put { key, entry } => {
                let now = crate::pipeline::admit::now_ms();
                let ttl_ms = entry.expires_ms.saturating_sub(now);
                if ttl_ms == 0 {
                    return;
                }
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(self.entry_key(&key))
                    .arg(wire::encode(&entry))
                    .arg("PX")
                    .arg(ttl_ms)
                    .ignore();
                let index_ttl = self.max_ttl.as_millis() as u64;
                for set in self.index_keys(&entry) {
                    pipe.cmd("SADD").arg(&set).arg(key.to_string()).ignore();
                    pipe.cmd("PEXPIRE").arg(&set).arg(index_ttl).ignore();
                }
                let done = tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn));
                match done.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "Cache L2: store failed."),
                    Err(_) => tracing::debug!("Cache L2: store timed out."),
                }
            }
            L2Request::Invalidate(selector) => {
                // Removal may take a few round trips (a set's members, a scan): bounded by a
                // second, not the lookup timeout.
                let work = async {
                    self.remove(&mut conn, &selector).await?;
                    let (name, value) = selector.pair();
                    let message = format!("{}|{name}={value}", self.origin);
                    conn.publish::<_, _, ()>(format!("{}cache:inval", self.prefix), message)
                        .await
                };
                match tokio::time::timeout(Duration::from_secs(1).max(self.timeout), work).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "Cache L2: invalidation failed."),
                    Err(_) => tracing::warn!("Cache L2: invalidation timed out."),
                }
            }
        }
    }

    async fn remove(
        &self,
        conn: &mut ConnectionManager,
        selector: &Selector,
    ) -> redis::RedisResult<()> {
        let index = match selector {
            Selector::Key(k) => return conn.del(self.entry_key(k)).await,
            Selector::Model(m) => format!("{}ci:m:{m}", self.prefix),
            Selector::Tenant(t) => format!("{}ci:t:{}", self.prefix, tenant_text(t)),
            Selector::Tag(t) => format!("{}ci:g:{t}", self.prefix),
            Selector::Prefix(p) => {
                return self
                    .remove_matching(conn, &format!("{}c:{p}*", self.prefix))
                    .await;
            }
            Selector::All => {
                self.remove_matching(conn, &format!("{}c:*", self.prefix))
                    .await?;
                return self
                    .remove_matching(conn, &format!("{}ci:*", self.prefix))
                    .await;
            }
        };
        let members: Vec<String> = conn.smembers(&index).await?;
        let mut keys: Vec<String> = members
            .iter()
            .map(|k| format!("{}c:{k}", self.prefix))
            .collect();
        keys.push(index);
        conn.del(keys).await
    }

    async fn remove_matching(
        &self,
        conn: &mut ConnectionManager,
        pattern: &str,
    ) -> redis::RedisResult<()> {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await?;
            if !keys.is_empty() {
                conn.del::<_, ()>(keys).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

fn tenant_text(t: &Tenant) -> String {
    match t {
        Tenant::Global => "global".into(),
        Tenant::Key(k) => format!("key:{k}"),
        Tenant::Team(t) => format!("team:{t}"),
    }
}

/// Apply the other nodes' invalidations to this node's shards, until the control plane stops
/// (`alive`: the requests channel, whose senders are gone then).
async fn listen(
    cfg: RedisConfig,
    origin: String,
    shards: Vec<InboxSender<ShardCmd>>,
    alive: flume::Receiver<L2Request>,
) {
    let channel = format!("{}cache:inval", cfg.prefix);
    loop {
        let subscribed = async {
            let client = redis::Client::open(cfg.url.as_str())?;
            let mut sub = client.get_async_pubsub().await?;
            sub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(sub)
        };
        let wait = cfg.timeout.max(Duration::from_secs(1));
        if let Ok(Ok(sub)) = tokio::time::timeout(wait, subscribed).await {
            let mut messages = sub.into_on_message();
            while let Some(msg) = futures_lite::StreamExt::next(&mut messages).await {
                let Ok(text) = msg.get_payload::<String>() else {
                    continue;
                };
                let Some((from, pair)) = text.split_once('|') else {
                    continue;
                };
                let Some((name, value)) = pair.split_once('=') else {
                    continue;
                };
                if from == origin {
                    continue;
                }
                match Selector::parse(name, value) {
                    Ok(selector) => {
                        for s in &shards {
                            let _ = s.send(ShardCmd::CacheInvalidate(selector.clone()));
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "Cache L2: unreadable invalidation."),
                }
            }
        }
        if alive.is_disconnected() {
            return;
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}
