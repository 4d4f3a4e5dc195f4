//! The control plane: one thread running a tokio runtime that hosts the ractor actors.
//!
//! Owns: the control-plane thread and its runtime, the actors (`ScorerActor`: scores and the
//! circuit breakers merged over every shard, for now), process signals (SIGTERM/SIGINT start
//! a drain on every shard), and [`ShardCmd`], what actors send to shards through their
//! inboxes.
//! Does not: run on a shard or block one. Shards only `cast` to actors.
//! Key types: [`ControlPlane`], [`ShardCmd`], [`scorer::ScorerActor`].

pub mod admin;
pub mod budgeter;
pub mod cache_l2;
pub mod keyring;
pub mod persist;
pub mod redis;
pub mod scorer;
pub mod semantic;
pub mod store;
pub mod warmer;
pub mod webhook;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ractor::{Actor, ActorRef};

use crate::routing::breaker::BreakerConfig;
use crate::scoring::{DeploymentInfo, ScoreTable};
use crate::shard::bridge::InboxSender;
use budgeter::{BudgeterActor, BudgeterArgs, BudgeterMsg};
use scorer::{ScorerActor, ScorerArgs, ScorerMsg};

/// What the control plane tells a shard.
#[derive(Debug, Clone)]
pub enum ShardCmd {
    /// A new score table: swap it in whole.
    Scores(Arc<ScoreTable>),
    /// Start draining: readiness fails now, listeners close after the drain delay.
    Drain,
    /// Lease grants from the budgeter.
    Grants(Vec<crate::budget::ledger::Grant>),
    /// The budgeter wants the unused units of these meters back (another shard is short).
    Reclaim(Vec<crate::budget::meter::MeterKey>),
    /// A new key table: swap it in whole.
    Keys(Arc<crate::auth::table::KeyTable>),
    /// The budget actions in force per scope (throttle, restrict, block): swap it in whole.
    Actions(Arc<hashbrown::HashMap<crate::budget::meter::Scope, crate::budget::policy::Action>>),
    /// Remove the cached answers a selector names from the shard's partition.
    CacheInvalidate(crate::cache::Selector),
    /// The hottest cached keys over every shard (kept as local copies on every shard).
    HotKeys(Arc<hashbrown::HashSet<crate::cache::CacheKey>>),
    /// When each hot key was last looked up over every shard (unix ms): the owners refresh
    /// the answers that were read before they expire.
    HotReads(Arc<hashbrown::HashMap<crate::cache::CacheKey, u64>>),
    /// A provider's host name resolved to new addresses.
    Addrs {
        /// Provider index.
        provider: usize,
        /// The addresses, in the resolver's order.
        addrs: Arc<[SocketAddr]>,
    },
}

/// A provider host the control plane keeps resolved.
#[derive(Debug, Clone)]
pub struct DnsTarget {
    /// Provider index.
    pub provider: usize,
    /// Host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The addresses the shards have now.
    pub addrs: Arc<[SocketAddr]>,
}

/// Control-plane settings.
pub struct ControlPlaneArgs {
    /// Every shard's inbox, by shard index.
    pub shards: Vec<InboxSender<ShardCmd>>,
    /// CPU to pin the thread to.
    pub core: Option<usize>,
    /// How often the scorer publishes a changed table.
    pub publish_every: Duration,
    /// Handle SIGTERM/SIGINT by draining every shard (off in tests that embed the gateway).
    pub handle_signals: bool,
    /// Provider hosts to re-resolve.
    pub dns: Vec<DnsTarget>,
    /// How often (`None` = never).
    pub dns_refresh: Option<Duration>,
    /// The deployments the scorer tracks, in `DeploymentIdx` order
    /// (`DeploymentInfo::from_config`).
    pub deployments: Vec<DeploymentInfo>,
    /// The scorer's breakers (`Config::routing.breaker`).
    pub breaker: BreakerConfig,
    /// Calendar offset of limit days and months, seconds east of UTC.
    pub offset_secs: i32,
    /// The node's keys (the config file's, and the stored ones).
    pub keys: keyring::Keyring,
    /// The store's thread, when a data directory is configured.
    pub persist: Option<persist::Persist>,
    /// Meter windows read from the store.
    pub windows: Vec<(crate::budget::meter::MeterKey, u64, u64)>,
    /// Budget thresholds.
    pub thresholds: crate::budget::policy::Thresholds,
    /// Where threshold alerts are POSTed.
    pub webhook_url: Option<http::Uri>,
    /// The shared Redis, when configured.
    pub redis: Option<crate::config::tenancy::RedisConfig>,
    /// The control plane's counters.
    pub metrics: Arc<crate::metrics::ControlMetrics>,
    /// The admin API's listener and token (`[admin]`), served on this runtime.
    pub admin: Option<crate::actors::admin::AdminArgs>,
    /// The cache's second level in Redis, when Redis is configured and a model is cached.
    pub cache_l2: Option<cache_l2::L2Args>,
    /// The warmer's snapshot directory and bounds (the shards' inboxes are added here).
    pub warmer: warmer::WarmerArgs,
    /// Where the admin API sends invalidations for the other nodes (with `cache_l2`).
    pub cache_l2_sender: Option<crate::cache::l2::L2Sender>,
}

/// The running control plane.
pub struct ControlPlane {
    /// The scorer (cast only from shards).
    pub scorer: ActorRef<ScorerMsg>,
    /// The budgeter (cast only from shards).
    pub budgeter: ActorRef<BudgeterMsg>,
    /// The cache warmer (cast only from shards).
    pub warmer: ActorRef<warmer::WarmerMsg>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ControlPlane {
    /// Start the thread and its actors.
    pub fn start(args: ControlPlaneArgs) -> io::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("control-plane".into())
            .spawn(move || {
                if let Some(core) = args.core {
                    core_affinity::set_for_current(core_affinity::CoreId { id: core });
                }
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let scorer_args = ScorerArgs {
                        shards: args.shards.clone(),
                        publish_every: args.publish_every,
                        weights: Default::default(),
                        min_samples: crate::scoring::table_min_samples(),
                        deployments: args.deployments,
                        breaker: args.breaker,
                    };
                    let (scorer, join) =
                        match Actor::spawn(Some("scorer".into()), ScorerActor, scorer_args).await {
                            Ok(x) => x,
                            Err(e) => {
                                let _ = ready_tx.send(Err(io::Error::other(format!(
                                    "cannot start scorer: {e}"
                                ))));
                                return;
                            }
                        };
                    let budgeter_args = BudgeterArgs {
                        shards: args.shards.clone(),
                        offset_secs: args.offset_secs,
                        keys: args.keys,
                        persist: args.persist,
                        windows: args.windows,
                        thresholds: args.thresholds,
                        webhook_url: args.webhook_url,
                        redis: args.redis,
                        metrics: args.metrics,
                    };
                    let (budgeter, budgeter_join) =
                        match Actor::spawn(Some("budgeter".into()), BudgeterActor, budgeter_args)
                            .await
                        {
                            Ok(x) => x,
                            Err(e) => {
                                let _ = ready_tx.send(Err(io::Error::other(format!(
                                    "cannot start budgeter: {e}"
                                ))));
                                return;
                            }
                        };
                    let (warmer, warmer_join) =
                        match Actor::spawn(Some("warmer".into()), warmer::WarmerActor, args.warmer)
                            .await
                        {
                            Ok(x) => x,
                            Err(e) => {
                                let _ = ready_tx.send(Err(io::Error::other(format!(
                                    "cannot start warmer: {e}"
                                ))));
                                return;
                            }
                        };
                    let _ = ready_tx.send(Ok((scorer.clone(), budgeter.clone(), warmer.clone())));
                    if let Some(every) = args.dns_refresh.filter(|_| !args.dns.is_empty()) {
                        let (shards, dns) = (args.shards.clone(), args.dns.clone());
                        tokio::spawn(refresh_dns(dns, every, shards));
                    }
                    if let Some(l2) = args.cache_l2 {
                        tokio::spawn(cache_l2::run(l2, args.shards.clone()));
                    }
                    if let Some(admin) = args.admin {
                        tokio::spawn(crate::actors::admin::serve(
                            admin,
                            budgeter.clone(),
                            scorer.clone(),
                            args.shards.clone(),
                            args.cache_l2_sender,
                        ));
                    }
                    if args.handle_signals {
                        let shards = args.shards.clone();
                        tokio::spawn(async move { watch_signals(shards).await });
                    }
                    let _ = stop_rx.await;
                    scorer.stop(None);
                    // Drained, not stopped: the shards' last batches (settled spend) are in its
                    // mailbox, and its post_stop writes them to the store.
                    let _ = budgeter.drain();
                    // Drained too: the shards' entries are in its mailbox; its post_stop
                    // writes the snapshot.
                    let _ = warmer.drain();
                    let _ = join.await;
                    let _ = budgeter_join.await;
                    let _ = warmer_join.await;
                });
            })?;
        let (scorer, budgeter, warmer) = ready_rx
            .recv()
            .map_err(|_| io::Error::other("control plane thread exited during start-up"))??;
        Ok(Self {
            scorer,
            budgeter,
            warmer,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stop the actors and the thread (after the shards are done).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn watch_signals(shards: Vec<InboxSender<ShardCmd>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers; SIGTERM will not drain.");
        return;
    };
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        seen += 1;
        if seen == 1 {
            tracing::info!("Shutdown signal received; draining.");
            for s in &shards {
                let _ = s.send(ShardCmd::Drain);
            }
        } else {
            tracing::warn!("Second shutdown signal; exiting now.");
            std::process::exit(130);
        }
    }
}

/// Re-resolve provider hosts off the shards; tell every shard when an answer changes. A
/// failed or empty lookup keeps the old addresses.
async fn refresh_dns(
    mut targets: Vec<DnsTarget>,
    every: Duration,
    shards: Vec<InboxSender<ShardCmd>>,
) {
    loop {
        tokio::time::sleep(every).await;
        for t in &mut targets {
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((t.host.as_str(), t.port))
                .await
            {
                Ok(it) => it.collect(),
                Err(e) => {
                    tracing::warn!(host = %t.host, error = %e, "DNS refresh failed; keeping the old addresses.");
                    continue;
                }
            };
            let (mut old, mut new) = (t.addrs.to_vec(), addrs.clone());
            old.sort_unstable();
            new.sort_unstable();
            if addrs.is_empty() || old == new {
                continue;
            }
            tracing::info!(host = %t.host, addrs = ?addrs, "Provider addresses changed.");
            t.addrs = addrs.into();
            for s in &shards {
                let _ = s.send(ShardCmd::Addrs {
                    provider: t.provider,
                    addrs: t.addrs.clone(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn dns_refresh_sends_changed_addresses_to_every_shard() {
        let (tx0, rx0) = flume::unbounded();
        let (tx1, rx1) = flume::unbounded();
        let stale: Arc<[SocketAddr]> = vec!["192.0.2.1:8000".parse().unwrap()].into();
        let target = DnsTarget {
            provider: 3,
            host: "localhost".into(),
            port: 8000,
            addrs: stale,
        };
        let task = tokio::spawn(refresh_dns(
            vec![target],
            Duration::from_secs(30),
            vec![tx0, tx1],
        ));
        for rx in [rx0, rx1] {
            match rx.recv_async().await.unwrap() {
                ShardCmd::Addrs { provider, addrs } => {
                    assert_eq!(provider, 3);
                    assert!(
                        !addrs.is_empty()
                            && addrs
                                .iter()
                                .all(|a| a.ip().is_loopback() && a.port() == 8000)
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        task.abort();
    }
}
