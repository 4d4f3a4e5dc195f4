//! The admin API: virtual keys and scores, on a listener and behind a token of its own
//! (`[admin]`), so the main listener serves only the client API, health, readiness and
//! metrics.
//!
//! Owns: the admin listener (one, on the control plane's tokio runtime: never on a shard),
//! its HTTP/1.1 connections and their limits (connections, head and body size, timeouts), the
//! admin token check ([`crate::auth::admin_token::authorized`]), and turning each request into one actor call
//! (the budgeter's key messages, the scorer's snapshot).
//! Does not: hold state of its own (the budgeter owns the keys and publishes every change to
//! the shards), log a key's secret (it is in one response body, never in a record), or
//! serve the client API.
//! Key types: [`AdminArgs`], [`serve`], [`AdminError`].

pub mod error;
pub mod routes;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use ractor::ActorRef;

pub use error::AdminError;

use crate::actors::budgeter::BudgeterMsg;
use crate::actors::scorer::ScorerMsg;
use crate::config::Secret;
use crate::config::secrets::Redactor;

/// Largest request body (a new key or a patch is a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest request head.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Time a client has to send a request head, and the longest a kept-alive connection idles.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send the body once the head arrived.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for an actor's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections open at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;

/// What the control plane needs to serve the admin API.
pub struct AdminArgs {
    /// The bound listener (non-blocking; bound in `runtime`, so a busy port fails start-up).
    pub listener: std::net::TcpListener,
    /// The admin token.
    pub token: Secret,
    /// Blanks the admin token and the provider keys in error messages.
    pub redactor: Redactor,
}

/// Bind the admin listener (non-blocking, for tokio).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// What every admin request handler reads.
pub struct Admin {
    /// The admin token.
    pub token: Secret,
    /// Blanks secrets in error messages.
    pub redactor: Redactor,
    /// The keys' owner.
    pub budgeter: ActorRef<BudgeterMsg>,
    /// The scores' owner.
    pub scorer: ActorRef<ScorerMsg>,
    /// Every shard's inbox (cache invalidation).
    pub shards: Vec<crate::shard::bridge::InboxSender<crate::actors::ShardCmd>>,
    /// The cache's L2 (invalidation in Redis and on the other nodes).
    pub cache_l2: Option<crate::cache::l2::L2Sender>,
}

/// Serve the admin API until the control plane's runtime stops. Runs on that runtime.
pub async fn serve(
    args: AdminArgs,
    budgeter: ActorRef<BudgeterMsg>,
    scorer: ActorRef<ScorerMsg>,
    shards: Vec<crate::shard::bridge::InboxSender<crate::actors::ShardCmd>>,
    cache_l2: Option<crate::cache::l2::L2Sender>,
) {
    let listener = match tokio::net::TcpListener::from_std(args.listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "Cannot serve the admin API.");
            return;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(addr = %addr, "Admin API listening.");
    }
    let admin = Arc::new(Admin {
        token: args.token,
        redactor: args.redactor,
        budgeter,
        scorer,
        shards,
        cache_l2,
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "Admin accept failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(admin, stream).await;
        });
    }
}

/// One HTTP/1.1 connection.
async fn connection(admin: Arc<Admin>, stream: tokio::net::TcpStream) {
    let service = hyper::service::service_fn(move |req| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(routes::handle(&admin, req).await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "Admin connection ended with an error.");
    }
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}
