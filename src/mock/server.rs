//! `shardgate-mock`: an OpenAI-compatible HTTP server on the same shard runtime as the
//! gateway (so it is never the bottleneck), with per-process and per-request fault knobs,
//! and request counters.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::FutureExt;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::server::conn::auto;

use super::{DEFAULT_CHUNKS, Knobs, Reply, Stall, error_body};
use crate::ShardId;
use crate::shard::net::{Listener, bind_reuseport};
use crate::shard::rt::{Io, ShardExec};
use crate::shard::{self, ShardHandle, ShardSpec, Timer};

/// How to run the mock.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Listen address (port 0 for any).
    pub listen: SocketAddr,
    /// CPU per shard (`None` = unpinned); its length is the shard count.
    pub cores: Vec<Option<usize>>,
    /// Knobs applied to every request (requests may override).
    pub defaults: Knobs,
    /// Serve TLS (ALPN h2 + http/1.1) with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Request counters (shared by the mock's shards; the mock is a test tool, so atomics are fine).
#[derive(Debug, Default)]
pub struct MockStats {
    /// Every request.
    pub requests: AtomicU64,
    /// Chat completion requests.
    pub chat: AtomicU64,
    /// Streamed chat completion requests.
    pub streams: AtomicU64,
    /// The last chat request as it arrived, so tests can check what a gateway sent.
    pub last_chat: arc_swap::ArcSwapOption<Received>,
}

/// A request as the mock received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path and query.
    pub path_and_query: String,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

/// A running mock server.
pub struct MockServer {
    /// Where it listens.
    pub addr: SocketAddr,
    stats: Arc<MockStats>,
    stop: Vec<flume::Sender<()>>,
    shards: Vec<ShardHandle>,
}

impl MockServer {
    /// Start the mock's shards.
    pub fn start(cfg: MockConfig) -> io::Result<Self> {
        let n = cfg.cores.len().max(1);
        let listeners = bind_reuseport(cfg.listen, n)?;
        let addr = listeners[0].local_addr()?;
        let stats = Arc::new(MockStats::default());
        let mut stop = Vec::new();
        let mut shards = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let (tx, rx) = flume::bounded::<()>(1);
            stop.push(tx);
            let stats = stats.clone();
            let defaults = cfg.defaults.clone();
            let tls = cfg.tls.clone();
            let spec = ShardSpec {
                id: ShardId(i as u16),
                core: cfg.cores.get(i).copied().flatten(),
                ring_depth: 256,
                spin_before_park: Duration::ZERO,
                io_memory: 128 * 1024,
            };
            shards.push(shard::start(spec, move || async move {
                let listener = match Listener::adopt(l) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "Mock cannot adopt its listener.");
                        return;
                    }
                };
                accept_loop(listener, rx, Rc::new(defaults), stats, tls).await;
            })?);
        }
        Ok(Self {
            addr,
            stats,
            stop,
            shards,
        })
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Relaxed)
    }

    /// The counters.
    pub fn stats(&self) -> &MockStats {
        &self.stats
    }

    /// Stop accepting and end the shards.
    pub fn stop(self) {
        for s in &self.stop {
            let _ = s.send(());
        }
        for h in self.shards {
            let _ = h.join();
        }
    }

    /// Block until the shards end (they do not, unless stopped from elsewhere).
    pub fn wait(self) {
        for h in self.shards {
            let _ = h.join();
        }
    }
}

async fn accept_loop(
    listener: Listener,
    stop: flume::Receiver<()>,
    defaults: Rc<Knobs>,
    stats: Arc<MockStats>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let builder = Rc::new({
        let mut b = auto::Builder::new(ShardExec);
        b.http1().keep_alive(true).pipeline_flush(true);
        b.http2().max_concurrent_streams(1024);
        b
    });
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                let _ = stop.recv_async().await;
                None
            })
            .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(_)) => {
                shard::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let (builder, defaults, stats, tls) = (
            builder.clone(),
            defaults.clone(),
            stats.clone(),
            tls.clone(),
        );
        shard::spawn("mock connection", async move {
            let svc =
                hyper::service::service_fn(move |req| handle(req, defaults.clone(), stats.clone()));
            match tls {
                None => {
                    let _ = builder.serve_connection(Io::new(stream, None), svc).await;
                }
                Some(cfg) => {
                    if let Ok(s) = futures_rustls::TlsAcceptor::from(cfg).accept(stream).await {
                        let _ = builder.serve_connection(Io::new(s, None), svc).await;
                    }
                }
            }
        });
    }
}

fn json(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut res = Response::new(MockBody::full(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

async fn handle(
    req: Request<Incoming>,
    defaults: Rc<Knobs>,
    stats: Arc<MockStats>,
) -> Result<Response<MockBody>, io::Error> {
    stats.requests.fetch_add(1, Relaxed);
    let path = req.uri().path().to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/v1/models" | "/models") => Ok(json(
            StatusCode::OK,
            Bytes::from_static(b"{\"object\":\"list\",\"data\":[{\"id\":\"mock\",\"object\":\"model\",\"created\":0,\"owned_by\":\"shardgate-mock\"}]}"),
        )),
        (&Method::GET, "/mock/stats") => Ok(json(
            StatusCode::OK,
            Bytes::from(format!(
                "{{\"requests\":{},\"chat\":{},\"streams\":{}}}",
                stats.requests.load(Relaxed),
                stats.chat.load(Relaxed),
                stats.streams.load(Relaxed)
            )),
        )),
        // OpenAI's path, and Azure OpenAI's `/openai/deployments/<name>/chat/completions`.
        (&Method::POST, p) if p.ends_with("/chat/completions") => chat(req, &defaults, &stats).await,
        _ => Ok(json(StatusCode::NOT_FOUND, error_body(404, &format!("no route {path}")))),
    }
}

async fn chat(
    req: Request<Incoming>,
    defaults: &Knobs,
    stats: &MockStats,
) -> Result<Response<MockBody>, io::Error> {
    stats.chat.fetch_add(1, Relaxed);
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    stats.last_chat.store(Some(Arc::new(Received {
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body: body.clone(),
    })));
    let mut scratch = body.to_vec();
    let mut reply = match Reply::from_request(&mut scratch) {
        Ok(r) => r,
        Err(e) => return Ok(json(StatusCode::BAD_REQUEST, error_body(400, &e.0))),
    };
    let mut knobs = defaults.clone();
    let model_full = model_with_suffix(&body);
    if let Err(e) = knobs
        .apply_model_suffix(&model_full)
        .and_then(|_| knobs.apply_headers(&parts.headers))
    {
        return Ok(json(StatusCode::BAD_REQUEST, error_body(400, &e.0)));
    }
    if knobs.stall == Some(Stall::Head) {
        std::future::pending::<()>().await;
    }
    if !knobs.latency.is_zero() {
        shard::sleep(knobs.latency.sample()).await;
    }
    if let Some(status) = knobs.status.filter(|s| !(200..300).contains(s)) {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = json(code, error_body(status, &format!("mock error {status}")));
        if status == 429 {
            res.headers_mut().insert(
                RETRY_AFTER,
                HeaderValue::from(knobs.retry_after.unwrap_or(1)),
            );
        }
        return Ok(res);
    }
    if !reply.stream {
        return Ok(json(StatusCode::OK, reply.completion()));
    }
    stats.streams.fetch_add(1, Relaxed);
    let events = reply.events(knobs.chunks.unwrap_or(DEFAULT_CHUNKS));
    reply.include_usage = false;
    let mut res = Response::new(MockBody::stream(events, knobs));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    Ok(res)
}

/// The raw `model` string (with any `;knob=value` suffix), which `Reply` strips.
fn model_with_suffix(body: &[u8]) -> String {
    crate::api::json::top_level_value(body, b"model")
        .and_then(|r| serde_json::from_slice::<String>(&body[r]).ok())
        .unwrap_or_default()
}

/// The mock's response body: whole, or events with delays and faults.
pub struct MockBody {
    full: Option<Bytes>,
    events: std::collections::VecDeque<Bytes>,
    knobs: Knobs,
    sent: usize,
    timer: Option<Timer>,
    streaming: bool,
    reset_armed: bool,
}

impl MockBody {
    fn full(b: Bytes) -> Self {
        Self {
            full: Some(b),
            events: Default::default(),
            knobs: Knobs::default(),
            sent: 0,
            timer: None,
            streaming: false,
            reset_armed: false,
        }
    }

    fn stream(events: Vec<Bytes>, knobs: Knobs) -> Self {
        let first = knobs.ttfc.sample();
        Self {
            full: None,
            events: events.into(),
            timer: (!first.is_zero()).then(|| Timer::new(first)),
            knobs,
            sent: 0,
            streaming: true,
            reset_armed: false,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if !this.streaming {
            return Poll::Ready(this.full.take().map(|b| Ok(Frame::data(b))));
        }
        if this.knobs.stall == Some(Stall::Body) {
            return Poll::Pending;
        }
        if let Some(t) = this.timer.as_mut() {
            match Pin::new(t).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => this.timer = None,
            }
        }
        if this.knobs.reset_after == Some(this.sent) {
            if !this.reset_armed {
                // Pause first so hyper flushes the events already sent: the client really
                // receives `reset_after` events before the connection breaks.
                this.reset_armed = true;
                let mut t = Timer::new(Duration::from_millis(5));
                let _ = Pin::new(&mut t).poll(cx);
                this.timer = Some(t);
                return Poll::Pending;
            }
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "mock reset",
            ))));
        }
        if this.knobs.error_after == Some(this.sent) {
            this.events.clear();
            this.sent += 1;
            let ev = crate::api::sse::frame_data(&error_body(500, "mock in-band error"));
            return Poll::Ready(Some(Ok(Frame::data(ev))));
        }
        let Some(ev) = this.events.pop_front() else {
            return Poll::Ready(None);
        };
        this.sent += 1;
        if !this.knobs.interval.is_zero() && !this.events.is_empty() {
            this.timer = Some(Timer::new(this.knobs.interval.sample()));
        }
        Poll::Ready(Some(Ok(Frame::data(ev))))
    }

    fn is_end_stream(&self) -> bool {
        !self.streaming && self.full.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.full, self.streaming) {
            (Some(b), false) => SizeHint::with_exact(b.len() as u64),
            (None, false) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
