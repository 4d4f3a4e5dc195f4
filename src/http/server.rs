//! The per-shard accept loop, connection serving, timeout sweep and drain.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use hyper_util::server::conn::auto;

use super::routes;
use crate::pipeline::state::ShardState;
use crate::shard::net::{Listener, TcpStream};
use crate::shard::rt::{ConnWatch, Expired, Io, ReadUninit, ShardExec, Timeouts, Watched};
use crate::shard::{self, Semaphore};

/// Serve on `listener` until the shard drains; returns when every connection is closed (or
/// the shutdown grace is over).
pub async fn run(
    state: Rc<ShardState>,
    listener: Listener,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let builder = Rc::new(builder(&state));
    let cap = state.tuning.max_connections_per_shard;
    let sem = Rc::new(Semaphore::new(cap as u64));
    // Near the cap the connections that have waited longest on their client (silent, slow
    // or idle) are shed, a batch at a time, so that a live client always finds room
    // (nginx and Envoy's overload manager do the same in spirit).
    let high_water = cap - (cap / 16).max(1).min(cap - 1);
    let shed_batch = (cap / 64).max(1);
    spawn_sweep(&state);
    let drain_delay = state.config.server.drain_delay;
    let stop_accepting = async {
        state.drain.wait().await;
        shard::sleep(drain_delay).await;
        None
    };
    let mut stop_accepting = Box::pin(stop_accepting);
    loop {
        let accept = async {
            let permit = match sem.clone().acquire_static_permit(1).await {
                Ok(p) => p,
                Err(_) => return Some(Err(std::io::Error::other("connection semaphore closed"))),
            };
            Some(listener.accept().await.map(|s| (s, permit)))
        };
        match accept.or(stop_accepting.as_mut()).await {
            None => break,
            Some(Ok((stream, permit))) => {
                let live = cap - sem.available() as usize;
                if live >= high_water && state.watches.shedding() < shed_batch {
                    let shed = state.watches.shed(shed_batch);
                    state.metrics.connections_shed.add(shed as u64);
                }
                let state = state.clone();
                let builder = builder.clone();
                let tls = tls.clone();
                shard::spawn("connection", async move {
                    state.metrics.connections.inc();
                    state.metrics.connections_total.inc();
                    // The TLS branch is boxed: a task is as large as its largest branch
                    // (rustls' state and a TLS-typed connection), and a plain connection
                    // would carry it for its whole life (8 KB of the 11 KB task, measured
                    // with scripts/heap.sh).
                    match tls {
                        None => serve_io(&state, &builder, stream).await,
                        Some(cfg) => Box::pin(serve_tls(&state, &builder, stream, cfg)).await,
                    }
                    state.metrics.connections.dec();
                    drop(permit);
                });
            }
            Some(Err(e)) => {
                tracing::warn!(shard = %state.id, error = %e, "Accept failed.");
                // Out of descriptors and similar: back off instead of spinning.
                shard::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    tracing::info!(shard = %state.id, connections = state.watches.len(), "Listener closed; draining connections.");
    state.watches.drain_all();
    let deadline = Instant::now() + state.config.server.shutdown_grace;
    wait_closed(&state, deadline).await;
    if !state.watches.is_empty() {
        tracing::warn!(shard = %state.id, connections = state.watches.len(), "Shutdown grace over; ending streams and closing connections.");
        // Streams still running end with one error event and a terminated body; then
        // whatever is left is closed.
        state.cut.set(true);
        state.watches.wake_all();
        wait_closed(&state, Instant::now() + CUT_GRACE).await;
        state.watches.expire_all(Expired::Shutdown, false);
        shard::sleep(Duration::from_millis(50)).await;
    }
    state.outcomes.flush();
}

/// How long streams cut at the end of the shutdown grace get to write their final event.
const CUT_GRACE: Duration = Duration::from_millis(500);

/// Wait until every connection is closed, or `deadline`.
async fn wait_closed(state: &ShardState, deadline: Instant) {
    while !state.watches.is_empty() && Instant::now() < deadline {
        shard::sleep(Duration::from_millis(10)).await;
    }
}

fn builder(state: &ShardState) -> auto::Builder<ShardExec> {
    let mut b = auto::Builder::new(ShardExec);
    let max_head = state.config.server.max_header_bytes;
    let mut h1 = b.http1();
    if state.config.server.max_headers != crate::config::raw::DEFAULT_MAX_HEADERS {
        // hyper parses into a stack array at its default (100) and allocates per request
        // for any other limit: only pay for it when the operator asked.
        h1.max_headers(state.config.server.max_headers);
    }
    h1.keep_alive(true)
        .half_close(false)
        .max_buf_size(max_head.max(8192))
        // No `pipeline_flush`: hyper 1.x then skips a flush while its read buffer holds
        // bytes (awaiting the next pipelined request), and a connection that closes after
        // the answer (`Connection: close`, HTTP/1.0) shuts down with the answer unwritten
        // when the client sent anything after its request. Clients rarely pipeline; the
        // flush per answer costs them nothing else.
        .pipeline_flush(false);
    b.http2()
        .max_concurrent_streams(state.tuning.h2_max_concurrent_streams)
        .max_header_list_size(max_head.min(u32::MAX as usize) as u32);
    b
}

async fn serve_tls(
    state: &Rc<ShardState>,
    builder: &auto::Builder<ShardExec>,
    stream: TcpStream,
    cfg: Arc<rustls::ServerConfig>,
) {
    let handshake = futures_rustls::TlsAcceptor::from(cfg).accept(stream);
    match shard::timeout(state.config.server.header_timeout, handshake).await {
        Ok(Ok(tls)) => serve_io(state, builder, tls).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed."),
        Err(_) => tracing::debug!("TLS handshake timed out."),
    }
}

async fn serve_io<S>(state: &Rc<ShardState>, builder: &auto::Builder<ShardExec>, stream: S)
where
    S: ReadUninit + futures_lite::AsyncWrite + Unpin + 'static,
{
    let watch = ConnWatch::new(state.head_answers);
    state.watches.add(&watch);
    let svc_state = state.clone();
    let svc_watch = watch.clone();
    // hyper keeps one slot per connection sized for the service's future, for the
    // connection's whole life, streams included. The request's future (14.5 KB) is boxed
    // instead: allocated per request, freed once the response head is out.
    let service = hyper::service::service_fn(move |req| {
        Box::pin(routes::handle(
            svc_state.clone(),
            Some(svc_watch.clone()),
            req,
        ))
    });
    let conn = builder.serve_connection(Io::new(stream, Some(watch.clone())), service);
    if let Err(e) = Watched::new(conn, watch.clone()).await {
        tracing::debug!(error = %e, "Connection ended with an error.");
    }
    if watch.was_shed() {
        state.watches.shed_closed();
    }
}

/// How long an accepted connection may stay silent. The listener defers accept until a
/// client's first bytes arrive or it has been silent for the header timeout
/// (`shard::net::bind_reuseport`), so a live client has spoken by accept, and one that comes in
/// silent has been silent all along (or came through SYN cookies when the SYN queue was full,
/// and then speaks within a round trip).
const SILENT_GRACE: Duration = Duration::from_secs(1);

/// Connections the sweep closes at most per tick: thousands of connections opened together
/// time out together, and closing them in one go would stall the shard for milliseconds.
const SWEEP_BUDGET: usize = 64;

/// The coarse per-shard timer: header and idle timeouts for every connection, checked a few
/// times per timeout period instead of a timer per request. Expiries are spread: at most
/// [`SWEEP_BUDGET`] per tick, and a tick that used its budget is followed by a short one.
fn spawn_sweep(state: &Rc<ShardState>) {
    let server = &state.config.server;
    let timeouts = Timeouts {
        silent: SILENT_GRACE,
        head: server.header_timeout,
        idle: server.idle_timeout,
    };
    // The silent grace sets the pace too (a tick of 250 ms at the defaults): under a flood of
    // silent connections, closing them 1-2 s after accept instead of 1-1.25 s filled the
    // connection cap (4,007 of 4,096 at peak in `scripts/exhaust.sh`, new-connection p99
    // 95 ms against 53 ms).
    let shortest = timeouts.silent.min(timeouts.head).min(timeouts.idle);
    let tick = (shortest / 4).clamp(Duration::from_millis(25), Duration::from_secs(1));
    let catch_up = Duration::from_millis(20).min(tick);
    let weak = Rc::downgrade(state);
    let mut release = state
        .tuning
        .release_after_burst
        .then(shard::mem::ReleasePolicy::default);
    shard::spawn_background("timeout sweep", async move {
        let mut wait = tick;
        loop {
            shard::sleep(wait).await;
            let Some(state) = weak.upgrade() else { return };
            let n = state.watches.sweep(Instant::now(), &timeouts, SWEEP_BUDGET);
            state.metrics.timeouts.add(n as u64);
            wait = if n == SWEEP_BUDGET { catch_up } else { tick };
            if let Some(policy) = release.as_mut()
                && policy.tick(state.watches.len())
            {
                shard::mem::release_freed();
            }
        }
    });
}
