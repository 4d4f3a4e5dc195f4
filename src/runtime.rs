//! Wires the topology: environment checks, listeners, control plane, shards, shutdown.
//!
//! Start: check io_uring and locked memory → resolve the listen address and every provider's
//! host (here, never on a shard) → bind one `SO_REUSEPORT` listener per shard → start the
//! control plane (actors) → start the shards, each building its own pools and state and
//! serving its listener. Stop: on SIGTERM/SIGINT every shard drains; when all have returned,
//! the actors stop last.

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::ShardId;
use crate::actors::budgeter::BudgeterMsg;
use crate::actors::scorer::ScorerMsg;
use crate::actors::warmer::WarmerMsg;
use crate::actors::{ControlPlane, ControlPlaneArgs, DnsTarget, ShardCmd};
use crate::config::{Config, Protocol, Scheme, Tuning};
use crate::metrics::Registry;
use crate::pipeline::state::ShardState;
use crate::providers::call::Target;
use crate::shard::bridge::{Batcher, inbox};
use crate::shard::net::{Listener, bind_reuseport};
use crate::shard::{self, ShardSpec};
use crate::upstream::{EndpointPool, PoolLimits, tls_client_config};

/// Locked memory glommio needs per shard.
pub const MEMLOCK_PER_SHARD: u64 = 512 * 1024;
/// How often the scorer publishes a changed table.
pub const SCORE_PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// Why the gateway could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The environment cannot run io_uring shards; the message says what to change.
    #[error("{0}")]
    Environment(String),
    /// An address could not be resolved or bound.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::http::tls::TlsError),
    /// A provider's request target could not be built.
    #[error(transparent)]
    Target(#[from] crate::providers::call::TargetError),
    /// A rustls config could not be built.
    #[error("TLS client config: {0}")]
    Rustls(#[from] rustls::Error),
    /// The semantic cache's local encoder could not be loaded.
    #[error("{0}")]
    Encoder(String),
}

/// What embeds texts on the semantic thread: the local encoder, loaded from its directory, or
/// none (embeddings come through a configured model).
fn semantic_encoder(
    embeddings: &crate::config::Embeddings,
) -> Result<Box<dyn crate::actors::semantic::Embed + Send>, RuntimeError> {
    match embeddings {
        #[cfg(feature = "local-embed")]
        crate::config::Embeddings::Local(dir) => {
            let encoder = crate::cache::encoder::Encoder::load(dir)
                .map_err(|e| RuntimeError::Encoder(e.to_string()))?;
            tracing::info!(dir = %dir.display(), dim = encoder.dim(), "Local embeddings model loaded.");
            Ok(Box::new(encoder))
        }
        #[cfg(not(feature = "local-embed"))]
        crate::config::Embeddings::Local(_) => Err(RuntimeError::Encoder(
            "`cache.semantic.embeddings = \"local\"` needs a gateway built with `--features local-embed`".into(),
        )),
        crate::config::Embeddings::Model(_) => Ok(Box::new(crate::actors::semantic::NoEncoder)),
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

/// Check that this machine can run `shards` io_uring shards; raise the locked-memory soft
/// limit when the hard limit allows. The error says in one sentence what to change.
pub fn check_environment(shards: usize) -> Result<(), RuntimeError> {
    let need = MEMLOCK_PER_SHARD * shards as u64 + 8 * 1024 * 1024;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0
        && lim.rlim_cur != libc::RLIM_INFINITY
        && lim.rlim_cur < need
    {
        let raised = libc::rlimit {
            rlim_cur: need.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        let ok = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0;
        let have = if ok { raised.rlim_cur } else { lim.rlim_cur };
        if have < MEMLOCK_PER_SHARD * shards as u64 {
            return Err(RuntimeError::Environment(format!(
                "The locked-memory limit is {} KiB but {shards} shard(s) need at least {} KiB: raise it (ulimit -l, or LimitMEMLOCK= in systemd, or --ulimit memlock in Docker).",
                have / 1024,
                MEMLOCK_PER_SHARD * shards as u64 / 1024
            )));
        }
    }
    shard::probe_io_uring().map_err(|e| {
        RuntimeError::Environment(format!(
            "io_uring is not available ({e}): the kernel lacks it or a seccomp profile blocks it (Docker's default does: run with --security-opt seccomp=unconfined, or on the host)."
        ))
    })
}

/// Options for [`serve`] beyond config and tuning.
pub struct ServeOptions {
    /// Install SIGTERM/SIGINT handlers (the binary does; embedded uses may not).
    pub handle_signals: bool,
}

/// A started gateway (for embedding: tests, benches).
pub struct Gateway {
    /// The address every shard listens on.
    pub addr: SocketAddr,
    /// The admin API's address (`[admin]`).
    pub admin_addr: Option<SocketAddr>,
    control: ControlPlane,
    shards: Vec<shard::ShardHandle>,
}

impl Gateway {
    /// Wait for every shard to finish, then stop the actors.
    pub fn wait(self) -> Result<(), RuntimeError> {
        let mut first_err = None;
        for h in self.shards {
            if let Err(e) = h.join() {
                first_err.get_or_insert(e);
            }
        }
        self.control.stop();
        match first_err {
            Some(e) => Err(RuntimeError::Io {
                what: "shard".into(),
                source: e,
            }),
            None => Ok(()),
        }
    }
}

struct PoolSpec {
    provider: usize,
    endpoint: crate::config::Endpoint,
    protocol: Protocol,
    addrs: Arc<[SocketAddr]>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

fn resolve(host: &str, port: u16) -> Result<Arc<[SocketAddr]>, RuntimeError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(io_err(format!("cannot resolve {host}:{port}")))?
        .collect();
    if addrs.is_empty() {
        return Err(RuntimeError::Io {
            what: format!("cannot resolve {host}:{port}"),
            source: std::io::Error::other("no addresses"),
        });
    }
    Ok(addrs.into())
}

/// Start the gateway and return once every shard is listening.
pub fn start(config: Config, tuning: Tuning, opts: ServeOptions) -> Result<Gateway, RuntimeError> {
    let n = tuning.shard_count();
    check_environment(n)?;
    if !tuning.transparent_huge_pages
        && let Err(e) = shard::disable_transparent_huge_pages()
    {
        tracing::warn!(error = %e, "Cannot turn transparent huge pages off; running with them.");
    }
    let listen = config.server.listen.clone();
    let addr = listen
        .to_socket_addrs()
        .map_err(io_err(format!("cannot resolve listen address {listen}")))?
        .next()
        .ok_or_else(|| RuntimeError::Io {
            what: format!("listen address {listen}"),
            source: std::io::Error::other("no address"),
        })?;
    let listeners = bind_reuseport(addr, &tuning.placement.cores, config.server.header_timeout)
        .map_err(io_err(format!("cannot listen on {addr}")))?;
    let addr = listeners
        .first()
        .map(|l| l.local_addr())
        .transpose()
        .map_err(io_err("local address"))?
        .unwrap_or(addr);

    let mut pools = Vec::new();
    for (i, p) in config.providers.iter().enumerate() {
        let Some(ep) = &p.endpoint else { continue };
        let tls = match ep.scheme {
            Scheme::Http => None,
            Scheme::Https => Some(tls_client_config(
                match p.protocol {
                    Protocol::Auto => &[b"h2", b"http/1.1"],
                    Protocol::Http1 => &[b"http/1.1"],
                    Protocol::Http2 => &[b"h2"],
                },
                p.ca_file.as_deref(),
            )?),
        };
        pools.push(PoolSpec {
            provider: i,
            endpoint: ep.clone(),
            protocol: p.protocol,
            addrs: resolve(&ep.host, ep.port)?,
            tls,
        });
    }
    let pools = Arc::new(pools);
    let targets: Arc<[Option<Target>]> = config
        .providers
        .iter()
        .map(|p| Target::new(p))
        .collect::<Result<_, _>>()?;
    let downstream_tls = config
        .server
        .tls
        .as_ref()
        .map(crate::http::tls::server_config)
        .transpose()?;

    let (admin, admin_addr) = admin_listener(&config)?;
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..n).map(|_| inbox::<ShardCmd>()).unzip();
    let mut keys = crate::actors::keyring::Keyring::new(
        config.auth.as_ref().map_or(&[][..], |a| &a.keys[..]),
        config.models.iter().map(|m| m.public.to_string()).collect(),
        config.limits.exact,
    );
    let (persist, windows) = match &config.state.dir {
        Some(dir) => {
            let store = crate::actors::store::Store::open(dir).map_err(|e| RuntimeError::Io {
                what: format!("cannot open the store in {}", dir.display()),
                source: std::io::Error::other(e.to_string()),
            })?;
            let read = |what: &str, e: crate::actors::store::StoreError| RuntimeError::Io {
                what: format!("cannot read the {what} from the store in {}", dir.display()),
                source: std::io::Error::other(e.to_string()),
            };
            keys.restore(store.keys().map_err(|e| read("keys", e))?);
            let windows = store.windows().map_err(|e| read("meter windows", e))?;
            let persist = crate::actors::persist::Persist::start(store)
                .map_err(io_err("cannot start the store thread"))?;
            (Some(persist), windows)
        }
        None => {
            if config.auth.is_some() || config.limits.any() {
                tracing::warn!(
                    "No [state] dir: keys made through the admin API, spend and limit counters \
                     are kept in memory and lost on restart."
                );
            }
            (None, Vec::new())
        }
    };
    let registry = Registry::new(
        n,
        config.providers.iter().map(|p| p.id.0.clone()).collect(),
        config.models.iter().map(|m| m.public.0.clone()).collect(),
        config.deployments.iter().map(|d| d.id.0.clone()).collect(),
    );
    // The shards start with the whole table (the config's keys and the stored ones); later
    // changes come from the budgeter.
    let key_table = Arc::new(keys.table().clone());
    // The cache's L2: Redis configured and some model cached.
    let cached = config.models.iter().any(|m| m.cache_ttl.is_some());
    let (l2_tx, l2_args) = match (&config.state.redis, cached) {
        (Some(redis), true) => {
            let (tx, rx) = flume::unbounded();
            let args = crate::actors::cache_l2::L2Args {
                requests: rx,
                redis: redis.clone(),
                max_ttl: config.cache.max_ttl,
            };
            (Some(tx), Some(args))
        }
        _ => (None, None),
    };
    let l2_timeout = config.state.redis.as_ref().map(|r| r.timeout);
    // The semantic cache's thread: its index and, with `embeddings = "local"`, the encoder
    // (loaded now: a missing or broken model directory stops the start).
    let semantic_tx = match &config.cache.semantic {
        Some(sem) => Some(
            crate::actors::semantic::start(
                semantic_encoder(&sem.embeddings)?,
                sem.max_entries,
                tuning.control_plane_core,
                registry.control.clone(),
            )
            .map_err(io_err("cannot start the semantic cache's thread"))?,
        ),
        None => None,
    };
    // The warm snapshot: loaded now, each entry to its owner shard, before any shard listens.
    let mut warm: Vec<Vec<(crate::cache::CacheKey, crate::cache::Entry)>> =
        (0..n).map(|_| Vec::new()).collect();
    if cached && let Some(dir) = &config.state.dir {
        let entries = crate::actors::warmer::load(dir, crate::pipeline::admit::now_ms());
        if !entries.is_empty() {
            tracing::info!(entries = entries.len(), "Cache snapshot loaded.");
        }
        for (key, entry) in entries {
            warm[crate::cache::partition::owner(&key, n)].push((key, entry));
        }
    }
    let warmer_args = crate::actors::warmer::WarmerArgs {
        shards: senders.clone(),
        dir: config.state.dir.clone().filter(|_| cached),
        snapshot_keys: 100_000,
        snapshot_bytes: tuning.cache_bytes_per_shard.saturating_mul(n as u64),
        refresh: cached && config.cache.refresh.is_some(),
        replicate_keys: config.cache.replicate_hot_keys,
    };
    let control = ControlPlane::start(ControlPlaneArgs {
        warmer: warmer_args,
        cache_l2: l2_args,
        cache_l2_sender: l2_tx.clone(),
        shards: senders,
        core: tuning.control_plane_core,
        publish_every: SCORE_PUBLISH_EVERY,
        handle_signals: opts.handle_signals,
        dns: pools
            .iter()
            .map(|p| DnsTarget {
                provider: p.provider,
                host: p.endpoint.host.to_string(),
                port: p.endpoint.port,
                addrs: p.addrs.clone(),
            })
            .collect(),
        dns_refresh: tuning.dns_refresh,
        offset_secs: config.limits.offset_secs,
        keys,
        persist,
        windows,
        thresholds: config.limits.thresholds.clone(),
        webhook_url: config.limits.webhook_url.clone(),
        redis: config.state.redis.clone(),
        metrics: registry.control.clone(),
        deployments: crate::scoring::DeploymentInfo::from_config(&config),
        breaker: config.routing.breaker,
        admin,
    })
    .map_err(io_err("cannot start the control plane"))?;

    let config = Arc::new(config);
    let tuning = Arc::new(tuning);
    let boot = boot_nonce();
    let mut shards = Vec::with_capacity(n);
    // The shards' mesh (cache lookups at a key's owner), when there is more than one.
    let mesh = (n > 1).then(|| crate::shard::mesh::MeshSpec::new(n, MESH_DEPTH));
    let (up_tx, up_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    for (i, ((listener, inbox), warm)) in listeners.into_iter().zip(inboxes).zip(warm).enumerate() {
        let spec = ShardSpec {
            id: ShardId(i as u16),
            core: tuning.placement.cores[i],
            ring_depth: tuning.ring_depth,
            spin_before_park: tuning.spin_before_park,
            io_memory: tuning.io_memory,
        };
        let (config, tuning, registry, pools, tls) = (
            config.clone(),
            tuning.clone(),
            registry.clone(),
            pools.clone(),
            downstream_tls.clone(),
        );
        let scorer = control.scorer.clone();
        let budgeter = control.budgeter.clone();
        let warmer = control.warmer.clone();
        let key_table = key_table.clone();
        let targets = targets.clone();
        let mesh = mesh.clone();
        let l2 = l2_tx.clone().zip(l2_timeout);
        let semantic_tx = semantic_tx.clone();
        let (st_cached, tuning_batch) = (cached, tuning.batch_size);
        let up_tx = up_tx.clone();
        let handle = shard::start(spec, move || async move {
            let id = ShardId(i as u16);
            let limits = PoolLimits {
                max_idle: tuning.upstream_max_idle,
                h2_connections: tuning.upstream_h2_connections,
                h2_streams: tuning.upstream_h2_streams,
                read_bytes: tuning.upstream_read_bytes,
            };
            let mut shard_pools = vec![None; config.providers.len()];
            let metrics = registry.shards[i].clone();
            for p in pools.iter() {
                let (m, idx) = (metrics.clone(), p.provider);
                let on_connect = move || {
                    if let Some(pm) = m.providers.get(idx) {
                        pm.connects.inc();
                    }
                };
                shard_pools[p.provider] = Some(EndpointPool::new(
                    p.endpoint.clone(),
                    p.protocol,
                    p.addrs.clone(),
                    p.tls.clone(),
                    limits,
                    on_connect,
                ));
            }
            let (sink, flush_interval) = (scorer.clone(), tuning.flush_interval);
            let outcomes = Batcher::new(tuning.batch_size, move |batch| {
                let _ = sink.cast(ScorerMsg::Outcomes(batch));
            });
            let head_answers = crate::http::respond::head_answers(&config.server);
            let budget_sink: crate::pipeline::state::BudgetSink = Box::new(move |batch| {
                let _ = budgeter.cast(BudgeterMsg::Batch {
                    shard: i as u16,
                    batch,
                });
            });
            if config.server.access_log {
                crate::logbuf::buffer_here();
            }
            let state = ShardState::new(
                id,
                config,
                tuning,
                registry,
                outcomes,
                shard_pools,
                targets,
                head_answers,
                budget_sink,
                key_table,
                boot,
            );
            // Every flush interval: outcomes to the scorer, and this shard's in-flight
            // counts when they changed (the other shards' `least_busy` reads them).
            shard::every(
                "bridge flush",
                flush_interval,
                Rc::downgrade(&state),
                move |st: &ShardState| {
                    crate::logbuf::flush();
                    st.outcomes.flush();
                    st.trim_leases();
                    crate::pipeline::cache::sweep(st);
                    st.cache.flush_seen();
                    st.flush_budget();
                    let load = st
                        .router
                        .try_borrow_mut()
                        .ok()
                        .and_then(|mut r| r.take_load());
                    if let Some(in_flight) = load {
                        let _ = scorer.cast(ScorerMsg::Load {
                            shard: i,
                            in_flight,
                        });
                    }
                },
            );
            if let Some((tx, timeout)) = l2 {
                state.cache.set_l2(tx, timeout);
            }
            if let Some(tx) = semantic_tx {
                state.cache.set_semantic(tx);
            }
            if st_cached && state.config.cache.refresh.is_some() {
                shard::every_rc(
                    "cache refresh",
                    Duration::from_secs(1),
                    Rc::downgrade(&state),
                    crate::pipeline::refresh::tick,
                );
            }
            if st_cached {
                let to = warmer.clone();
                let seen = Batcher::new(tuning_batch, move |batch| {
                    let _ = to.cast(WarmerMsg::Seen(batch));
                });
                let entries = Box::new(move |e| {
                    let _ = warmer.cast(WarmerMsg::Entries(e));
                });
                state
                    .cache
                    .set_warmer(crate::pipeline::cache::WarmerLink { seen, entries });
                crate::pipeline::cache::warm(&state, warm);
            }
            if let Some(spec) = mesh {
                let weak = Rc::downgrade(&state);
                let on_batch = move |from: usize, batch| {
                    if let Some(st) = weak.upgrade() {
                        crate::pipeline::cache::on_batch(&st, from, batch);
                    }
                };
                match crate::shard::mesh::Mesh::join(spec, i, on_batch).await {
                    Ok(m) => state.cache.set_mesh(m),
                    Err(e) => {
                        let _ = up_tx.send(Err(format!("shard {i}: {e}")));
                        return;
                    }
                }
            }
            let st = state.clone();
            inbox.serve(move |cmd| apply(&st, cmd));
            let listener = match Listener::adopt(listener) {
                Ok(l) => l,
                Err(e) => {
                    let _ = up_tx.send(Err(format!("shard {i}: {e}")));
                    return;
                }
            };
            let _ = up_tx.send(Ok(()));
            crate::http::server::run(state.clone(), listener, tls).await;
            // Drained: what the last requests settled goes to the budgeter before the
            // control plane stops (it drains its mailbox before it stops).
            state.outcomes.flush();
            state.flush_budget();
            crate::pipeline::cache::hand_over(&state);
            crate::logbuf::flush();
        })
        .map_err(io_err(format!("cannot start shard {i}")))?;
        shards.push(handle);
    }
    drop(up_tx);
    for _ in 0..n {
        match up_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(RuntimeError::Io {
                    what: e,
                    source: std::io::Error::other("shard start-up failed"),
                });
            }
            Err(_) => {
                return Err(RuntimeError::Io {
                    what: "shard start-up".into(),
                    source: std::io::Error::other("a shard exited during start-up"),
                });
            }
        }
    }
    Ok(Gateway {
        addr,
        admin_addr,
        control,
        shards,
    })
}

/// Bind the admin API's listener when `[admin]` is set (here, so a busy port fails start-up),
/// with what the control plane needs to serve it, and its address.
fn admin_listener(
    config: &Config,
) -> Result<(Option<crate::actors::admin::AdminArgs>, Option<SocketAddr>), RuntimeError> {
    let Some(admin) = &config.admin else {
        return Ok((None, None));
    };
    let listen = &admin.listen;
    let addr = listen
        .to_socket_addrs()
        .map_err(io_err(format!("cannot resolve admin.listen {listen}")))?
        .next()
        .ok_or_else(|| RuntimeError::Io {
            what: format!("admin.listen {listen}"),
            source: std::io::Error::other("no address"),
        })?;
    let listener = crate::actors::admin::bind(addr)
        .map_err(io_err(format!("cannot listen on {addr} (admin.listen)")))?;
    let bound = listener
        .local_addr()
        .map_err(io_err("admin local address"))?;
    let args = crate::actors::admin::AdminArgs {
        listener,
        token: admin.token.clone(),
        redactor: crate::config::secrets::Redactor::from_config(config),
    };
    Ok((Some(args), Some(bound)))
}

fn apply(state: &Rc<ShardState>, cmd: ShardCmd) {
    match cmd {
        ShardCmd::Scores(table) => {
            // The merged verdicts reach the router: ejections until their cooldown ends, and
            // trusted scores. Never borrowed across an await; if it were, the next table
            // (a whole snapshot) carries the same verdicts.
            if let Ok(mut router) = state.router.try_borrow_mut() {
                for i in 0..table.deployments.len() {
                    let d = crate::DeploymentIdx(u32::try_from(i).unwrap_or(u32::MAX));
                    let elsewhere = table.in_flight_elsewhere(usize::from(state.id.0), d);
                    if let Some(live) = router.live_mut(d) {
                        live.merged_open_until = table.open_until(d);
                        live.score = table.trusted_score(d);
                        live.in_flight_elsewhere = elsewhere;
                    }
                }
            }
            *state.scores.borrow_mut() = table;
        }
        ShardCmd::Addrs { provider, addrs } => {
            if let Some(Some(pool)) = state.pools.get(provider) {
                pool.set_addrs(addrs);
            }
        }
        ShardCmd::Grants(grants) => {
            let now = crate::pipeline::admit::now_ms();
            if let Ok(mut leases) = state.leases.try_borrow_mut() {
                for g in &grants {
                    leases.on_grant(g, now);
                }
            }
            state.lease_pulse.notify();
        }
        ShardCmd::Reclaim(keys) => {
            let now = crate::pipeline::admit::now_ms();
            if let Ok(mut leases) = state.leases.try_borrow_mut() {
                leases.reclaim(&keys, now);
            }
            state.answer_reclaim();
        }
        ShardCmd::Keys(table) => {
            *state.keys.borrow_mut() = table;
        }
        ShardCmd::Actions(table) => {
            *state.actions.borrow_mut() = table;
        }
        ShardCmd::HotKeys(hot) => crate::pipeline::cache::set_hot(state, hot),
        ShardCmd::HotReads(reads) => state.cache.set_hot_reads(reads),
        ShardCmd::CacheInvalidate(selector) => {
            crate::pipeline::cache::invalidate_here(state, &selector);
        }
        ShardCmd::Drain => {
            if !state.draining() {
                tracing::info!(shard = %state.id, "Draining.");
                state.drain.fire();
            }
        }
    }
}

/// Batches that may wait between two shards before a sender waits.
const MESH_DEPTH: usize = 1024;

fn boot_nonce() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    (t as u32) ^ ((t >> 32) as u32) ^ std::process::id().rotate_left(16)
}
