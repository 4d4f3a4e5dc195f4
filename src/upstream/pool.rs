//! One endpoint's connections on one shard: an HTTP/1.1 idle list and HTTP/2 connections.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::client::conn::http2;
use rustls::ClientConfig;

use super::UpstreamError;
use super::body::UpBody;
use super::connect::{UpStream, open};
use super::h1::{ExchangeError, H1Conn, Returned};
use crate::config::{Endpoint, Protocol, Scheme, Timeouts};
use crate::shard::rt::{Io, ShardExec};
use crate::shard::{self};

/// Upstream HTTP/2 request body: the whole (possibly rewritten) client body.
pub type ReqBody = http_body_util::Full<Bytes>;

/// Pool sizes from the tuning profile.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Idle HTTP/1 connections kept.
    pub max_idle: usize,
    /// HTTP/2 connections opened at most.
    pub h2_connections: usize,
    /// Streams per HTTP/2 connection before another connection is opened.
    pub h2_streams: u32,
    /// Largest single read into an HTTP/1.1 body buffer of known size.
    pub read_bytes: usize,
}

struct H2Conn {
    tx: http2::SendRequest<ReqBody>,
    inflight: Rc<Cell<u32>>,
}

/// The connections of one endpoint on one shard.
pub struct EndpointPool {
    endpoint: Endpoint,
    protocol: Protocol,
    addrs: RefCell<Arc<[SocketAddr]>>,
    tls: Option<Arc<ClientConfig>>,
    limits: PoolLimits,
    idle: RefCell<Vec<H1Conn>>,
    h2: RefCell<Vec<H2Conn>>,
    /// For `auto` over TLS: what ALPN chose last time.
    alpn_h2: Cell<Option<bool>>,
    on_connect: Box<dyn Fn()>,
}

/// A connection in use by one request. Dropping it closes an HTTP/1 connection; only
/// [`PoolConn::release`] after a complete response puts it back.
pub enum PoolConn {
    /// HTTP/1.1: the connection is ours alone until released.
    H1 {
        /// Where the body leaves the connection when it ended cleanly.
        back: Returned,
        /// Where to put it back.
        pool: Weak<EndpointPool>,
    },
    /// HTTP/2: one stream of a shared connection.
    H2(StreamSlot),
}

/// One stream counted against an HTTP/2 connection; uncounted on drop.
pub struct StreamSlot(Rc<Cell<u32>>);

impl StreamSlot {
    fn take(n: Rc<Cell<u32>>) -> Self {
        n.set(n.get() + 1);
        Self(n)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl PoolConn {
    /// The response was read completely: the connection may serve another request.
    pub fn release(self) {
        if let PoolConn::H1 { back, pool } = self
            && let Some(pool) = pool.upgrade()
            && let Some(conn) = back.take()
        {
            let mut idle = pool.idle.borrow_mut();
            if idle.len() < pool.limits.max_idle {
                idle.push(conn);
            }
        }
    }
}

/// A response head and the connection that must outlive its body.
pub struct Sent {
    /// The response (body not yet read).
    pub response: Response<UpBody>,
    /// The connection, ours until the body is read.
    pub conn: PoolConn,
    /// Time to the response head.
    pub ttfb: Duration,
}

enum Conn {
    H1(H1Conn),
    H2(http2::SendRequest<ReqBody>, Rc<Cell<u32>>),
}

impl EndpointPool {
    /// A pool for `endpoint` with resolved `addrs`. `tls` is required for https endpoints;
    /// `on_connect` runs for every connection opened (metrics).
    pub fn new(
        endpoint: Endpoint,
        protocol: Protocol,
        addrs: Arc<[SocketAddr]>,
        tls: Option<Arc<ClientConfig>>,
        limits: PoolLimits,
        on_connect: impl Fn() + 'static,
    ) -> Rc<Self> {
        Rc::new(Self {
            endpoint,
            protocol,
            addrs: RefCell::new(addrs),
            tls,
            limits,
            idle: RefCell::new(Vec::new()),
            h2: RefCell::new(Vec::new()),
            alpn_h2: Cell::new(None),
            on_connect: Box::new(on_connect),
        })
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// New addresses for the endpoint (from the control plane's DNS refresh). Open
    /// connections stay until they close; new ones go to the new addresses.
    pub fn set_addrs(&self, addrs: Arc<[SocketAddr]>) {
        *self.addrs.borrow_mut() = addrs;
    }

    fn wants_h2(&self) -> bool {
        match self.protocol {
            Protocol::Http1 => false,
            Protocol::Http2 => true,
            Protocol::Auto => {
                self.endpoint.scheme == Scheme::Https && self.alpn_h2.get() == Some(true)
            }
        }
    }

    /// Send a request built by `build(h2)` (h2 needs an absolute URI), with the connect and
    /// first-byte timeouts. A request that never left (hyper returned it unsent) on a reused
    /// connection that turned out to be closed is sent once more on a fresh one; nothing that
    /// may have been written is ever sent twice.
    pub async fn send(
        self: &Rc<Self>,
        build: impl Fn(bool) -> Request<Bytes>,
        timeouts: &Timeouts,
    ) -> Result<Sent, UpstreamError> {
        let mut retried = false;
        loop {
            let started = Instant::now();
            let (conn, reused) = self.checkout(timeouts.connect).await?;
            let first_byte = timeouts.first_byte;
            // Only a request that certainly never left (no byte written, or hyper handed it
            // back unsent) on a reused connection that turned out to be closed is sent once
            // more: one that may have reached the upstream (an incomplete answer, a reset
            // after the write) never is. Trying elsewhere is the router's decision.
            let (sent, conn) = match conn {
                Conn::H1(h1) => {
                    let back = Returned::default();
                    let exchange = h1.exchange(build(false), back.clone(), self.limits.read_bytes);
                    let sent = shard::timeout(first_byte, exchange)
                        .await
                        .map(|r| r.map(|res| res.map(UpBody::H1)));
                    let pool = Rc::downgrade(self);
                    (sent, PoolConn::H1 { back, pool })
                }
                Conn::H2(mut tx, inflight) => {
                    let held = PoolConn::H2(StreamSlot::take(inflight));
                    let req = build(true).map(ReqBody::new);
                    let sent = shard::timeout(first_byte, tx.try_send_request(req))
                        .await
                        .map(|r| {
                            r.map(|res| res.map(UpBody::H2)).map_err(|mut e| {
                                let unsent = e.take_message().is_some();
                                let error = UpstreamError::Http(e.into_error());
                                ExchangeError { error, unsent }
                            })
                        });
                    (sent, held)
                }
            };
            match sent {
                Err(_) => return Err(UpstreamError::Timeout("first byte", first_byte)),
                Ok(Ok(response)) => {
                    return Ok(Sent {
                        response,
                        conn,
                        ttfb: started.elapsed(),
                    });
                }
                Ok(Err(ExchangeError { error, unsent })) => {
                    if reused && unsent && !retried {
                        retried = true;
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    }

    async fn checkout(
        self: &Rc<Self>,
        connect_timeout: Duration,
    ) -> Result<(Conn, bool), UpstreamError> {
        if self.wants_h2() {
            if let Some(c) = self.pick_h2() {
                return Ok((c, true));
            }
        } else {
            let mut idle = self.idle.borrow_mut();
            // Most recently used first; a connection the upstream closed while idle is
            // dropped here.
            while let Some(conn) = idle.pop() {
                if conn.idle_alive() {
                    return Ok((Conn::H1(conn), true));
                }
            }
        }
        let conn = self.connect(connect_timeout).await?;
        Ok((conn, false))
    }

    /// The least busy HTTP/2 connection, unless all are full and another may be opened.
    fn pick_h2(&self) -> Option<Conn> {
        let mut conns = self.h2.borrow_mut();
        conns.retain(|c| !c.tx.is_closed());
        let best = conns.iter().min_by_key(|c| c.inflight.get())?;
        let full = best.inflight.get() >= self.limits.h2_streams;
        if full && conns.len() < self.limits.h2_connections {
            return None;
        }
        Some(Conn::H2(best.tx.clone(), best.inflight.clone()))
    }

    async fn connect(self: &Rc<Self>, timeout: Duration) -> Result<Conn, UpstreamError> {
        let host = &*self.endpoint.host;
        let tls = match self.endpoint.scheme {
            Scheme::Http => None,
            Scheme::Https => self.tls.as_ref().map(|c| (c, host)),
        };
        let addrs = self.addrs.borrow().clone();
        let stream = open(&addrs, tls, timeout).await?;
        (self.on_connect)();
        let h2 = match (self.protocol, &stream) {
            (Protocol::Http1, _) => false,
            (Protocol::Http2, _) => true,
            (Protocol::Auto, UpStream::Plain(_)) => false,
            (Protocol::Auto, s) => {
                let h2 = s.alpn_h2();
                self.alpn_h2.set(Some(h2));
                h2
            }
        };
        if h2 {
            let io = Io::new(stream, None);
            let (tx, conn) = http2::Builder::new(ShardExec)
                .handshake::<_, ReqBody>(io)
                .await
                .map_err(UpstreamError::Http)?;
            shard::spawn("upstream h2 connection", async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "Upstream HTTP/2 connection ended.");
                }
            });
            let inflight = Rc::new(Cell::new(0));
            self.h2.borrow_mut().push(H2Conn {
                tx: tx.clone(),
                inflight: inflight.clone(),
            });
            Ok(Conn::H2(tx, inflight))
        } else {
            Ok(Conn::H1(H1Conn::new(stream)))
        }
    }
}
