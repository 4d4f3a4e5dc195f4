//! `shardgate-mock`: an HTTP server on the same shard runtime as the gateway (so it is never the
//! bottleneck) that speaks three wire formats, with per-process and per-request fault knobs,
//! request counters, and a record of the last requests and usage.
//!
//! Routes (`POST` unless noted):
//! - any path ending `/chat/completions`: OpenAI chat (Azure deployment paths included);
//! - any path ending `/embeddings`: OpenAI embeddings;
//! - any path ending `/v1/messages`: Anthropic Messages;
//! - `.../models/{model}:generateContent`, `:streamGenerateContent?alt=sse`, `:embedContent`,
//!   `:batchEmbedContents`: Gemini (knobs may ride on the model segment, `mock;chunks=3`);
//! - `GET /v1/models`, `GET /models`: a one-model list.
//!
//! Control (paths no provider uses; not counted as requests):
//! - `PUT /mock/knobs` with `key=value;...` (the model-suffix syntax): replace the process-wide
//!   default knobs, on every shard at once (knobs not named go back to their zero value);
//! - `DELETE /mock/knobs`: restore the start-up defaults;
//! - `GET /mock/stats`: the counters as JSON.
//!
//! A request's knobs: the current defaults, then the windows of the fault schedule open at the
//! time since start ([`MockConfig::schedule`]), then the model suffix, then `x-mock-*` headers.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_lite::FutureExt;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::server::conn::auto;

use super::schedule::Schedule;
use super::{
    DEFAULT_CHUNKS, Format, Knobs, MockError, MockUsage, Reply, Stall, anthropic, embeddings,
    error_body, gemini,
};
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
    /// Knobs applied to every request (requests may override; `PUT /mock/knobs` and
    /// [`MockServer::set_knobs`] replace them at run time).
    pub defaults: Knobs,
    /// Knobs that apply only during windows of time after start, over the defaults (empty:
    /// none).
    pub schedule: Schedule,
    /// Serve TLS (ALPN h2 + http/1.1) with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Largest `PUT /mock/knobs` body.
const MAX_CONTROL_BODY_BYTES: usize = 64 * 1024;

/// What every shard of one mock reads per request to pick its knobs.
///
/// The defaults are an `ArcSwap` loaded on each request: a swap from any thread (the admin
/// route on one shard, or a test) reaches every shard at once. The gateway itself never shares
/// state this way on its request path; the mock is test tooling, so one atomic load per
/// request is fine here.
#[derive(Debug)]
struct Control {
    /// The defaults now.
    defaults: ArcSwap<Knobs>,
    /// The defaults at start (what `DELETE /mock/knobs` restores).
    startup: Knobs,
    /// The fault schedule.
    schedule: Schedule,
    /// When the mock started (the schedule's zero).
    started: Instant,
}

impl Control {
    /// The knobs for one request: the defaults, then the schedule's open windows, then the
    /// model suffix, then `x-mock-*` headers.
    fn request_knobs(&self, model: &str, headers: &http::HeaderMap) -> Result<Knobs, MockError> {
        let mut knobs = Knobs::clone(&self.defaults.load());
        if !self.schedule.is_empty() {
            self.schedule.apply_at(self.started.elapsed(), &mut knobs);
        }
        knobs.apply_model_suffix(model)?;
        knobs.apply_headers(headers)?;
        Ok(knobs)
    }
}

/// Request counters (shared by the mock's shards; the mock is a test tool, so atomics are fine).
#[derive(Debug, Default)]
pub struct MockStats {
    /// Every request, except the control routes (`/mock/...`).
    pub requests: AtomicU64,
    /// Chat requests, in any format.
    pub chat: AtomicU64,
    /// Streamed chat requests, in any format.
    pub streams: AtomicU64,
    /// Embeddings requests (OpenAI and Gemini).
    pub embeddings: AtomicU64,
    /// Chat and embeddings requests in the OpenAI format.
    pub openai: AtomicU64,
    /// Chat requests in the Anthropic format.
    pub anthropic: AtomicU64,
    /// Chat and embeddings requests in the Gemini format.
    pub gemini: AtomicU64,
    /// Requests answered with an injected fault instead of an answer: the `status` or `error`
    /// knob (Gemini's blocked-prompt answer included).
    pub faults: AtomicU64,
    /// The last chat request as it arrived, in any format, so tests can check what a gateway
    /// sent.
    pub last_chat: arc_swap::ArcSwapOption<Received>,
    /// The last embeddings request as it arrived.
    pub last_embeddings: arc_swap::ArcSwapOption<Received>,
    /// The usage of the last successful chat answer (stored when a whole answer is sent, or
    /// when a stream sends its last event), normalised (see [`MockUsage`]).
    pub last_usage: arc_swap::ArcSwapOption<MockUsage>,
}

impl MockStats {
    /// The counters as JSON (what `GET /mock/stats` answers):
    /// `{"requests","chat","streams","embeddings","faults","by_format":{"openai","anthropic","gemini"}}`.
    pub fn to_json(&self) -> Bytes {
        let n = |c: &AtomicU64| c.load(Relaxed);
        Bytes::from(format!(
            "{{\"requests\":{},\"chat\":{},\"streams\":{},\"embeddings\":{},\"faults\":{},\"by_format\":{{\"openai\":{},\"anthropic\":{},\"gemini\":{}}}}}",
            n(&self.requests),
            n(&self.chat),
            n(&self.streams),
            n(&self.embeddings),
            n(&self.faults),
            n(&self.openai),
            n(&self.anthropic),
            n(&self.gemini),
        ))
    }

    fn count_format(&self, format: Format) {
        match format {
            Format::OpenAi => &self.openai,
            Format::Anthropic => &self.anthropic,
            Format::Gemini => &self.gemini,
        }
        .fetch_add(1, Relaxed);
    }
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
    control: Arc<Control>,
    stop: Vec<flume::Sender<()>>,
    shards: Vec<ShardHandle>,
}

impl MockServer {
    /// Start the mock's shards.
    pub fn start(cfg: MockConfig) -> io::Result<Self> {
        let n = cfg.cores.len().max(1);
        let listeners = bind_reuseport(cfg.listen, &vec![None; n], std::time::Duration::ZERO)?;
        let addr = listeners[0].local_addr()?;
        let stats = Arc::new(MockStats::default());
        let control = Arc::new(Control {
            defaults: ArcSwap::from_pointee(cfg.defaults.clone()),
            startup: cfg.defaults,
            schedule: cfg.schedule,
            started: Instant::now(),
        });
        let mut stop = Vec::new();
        let mut shards = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let (tx, rx) = flume::bounded::<()>(1);
            stop.push(tx);
            let stats = stats.clone();
            let control = control.clone();
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
                accept_loop(listener, rx, control, stats, tls).await;
            })?);
        }
        Ok(Self {
            addr,
            stats,
            control,
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

    /// Replace the default knobs of every shard at once (what `PUT /mock/knobs` does);
    /// per-request knobs still override them.
    pub fn set_knobs(&self, knobs: Knobs) {
        self.control.defaults.store(Arc::new(knobs));
    }

    /// Restore the start-up default knobs (what `DELETE /mock/knobs` does).
    pub fn reset_knobs(&self) {
        self.control
            .defaults
            .store(Arc::new(self.control.startup.clone()));
    }

    /// The default knobs now.
    pub fn knobs(&self) -> Knobs {
        Knobs::clone(&self.control.defaults.load())
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
    control: Arc<Control>,
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
        let (builder, control, stats, tls) =
            (builder.clone(), control.clone(), stats.clone(), tls.clone());
        shard::spawn("mock connection", async move {
            let svc =
                hyper::service::service_fn(move |req| handle(req, control.clone(), stats.clone()));
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
    control: Arc<Control>,
    stats: Arc<MockStats>,
) -> Result<Response<MockBody>, io::Error> {
    let path = req.uri().path().to_owned();
    if let Some(what) = path.strip_prefix("/mock/") {
        return control_route(req, what, &control, &stats).await;
    }
    stats.requests.fetch_add(1, Relaxed);
    match (req.method(), path.as_str()) {
        (&Method::GET, "/v1/models" | "/models") => Ok(json(
            StatusCode::OK,
            Bytes::from_static(b"{\"object\":\"list\",\"data\":[{\"id\":\"mock\",\"object\":\"model\",\"created\":0,\"owned_by\":\"shardgate-mock\"}]}"),
        )),
        // OpenAI's path, and Azure OpenAI's `/openai/deployments/<name>/chat/completions`.
        (&Method::POST, p) if p.ends_with("/chat/completions") => {
            chat(req, Chat::OpenAi, &control, &stats).await
        }
        (&Method::POST, p) if p.ends_with("/embeddings") => {
            embeddings(req, Embed::OpenAi, &control, &stats).await
        }
        (&Method::POST, p) if p.ends_with("/v1/messages") => {
            chat(req, Chat::Anthropic, &control, &stats).await
        }
        (&Method::POST, p) => match gemini::route(p) {
            Some(route) => gemini_method(req, route, &control, &stats).await,
            None => Ok(not_found(&path)),
        },
        _ => Ok(not_found(&path)),
    }
}

/// The control routes under `/mock/` (`what` is the rest of the path).
async fn control_route(
    req: Request<Incoming>,
    what: &str,
    control: &Control,
    stats: &MockStats,
) -> Result<Response<MockBody>, io::Error> {
    let no_content = || {
        let mut res = Response::new(MockBody::full(Bytes::new()));
        *res.status_mut() = StatusCode::NO_CONTENT;
        res
    };
    match (req.method(), what) {
        (&Method::GET, "stats") => Ok(json(StatusCode::OK, stats.to_json())),
        (&Method::PUT, "knobs") => {
            let limited = http_body_util::Limited::new(req.into_body(), MAX_CONTROL_BODY_BYTES);
            let body = match limited.collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    let message = format!("knobs: at most {MAX_CONTROL_BODY_BYTES} bytes");
                    return Ok(json(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        error_body(413, &message),
                    ));
                }
            };
            let parsed = std::str::from_utf8(&body)
                .map_err(|_| MockError("knobs: the body is not UTF-8".into()))
                .and_then(Knobs::parse);
            match parsed {
                Ok(knobs) => {
                    control.defaults.store(Arc::new(knobs));
                    Ok(no_content())
                }
                Err(e) => Ok(json(StatusCode::BAD_REQUEST, error_body(400, &e.0))),
            }
        }
        (&Method::DELETE, "knobs") => {
            control.defaults.store(Arc::new(control.startup.clone()));
            Ok(no_content())
        }
        _ => Ok(not_found(req.uri().path())),
    }
}

/// Gemini's `.../models/{model}:{method}` routes.
async fn gemini_method(
    req: Request<Incoming>,
    route: gemini::Route,
    control: &Control,
    stats: &Arc<MockStats>,
) -> Result<Response<MockBody>, io::Error> {
    let model = route.model;
    match route.method {
        gemini::Method::GenerateContent => {
            let chat_route = Chat::Gemini {
                model,
                stream: false,
            };
            chat(req, chat_route, control, stats).await
        }
        gemini::Method::StreamGenerateContent => {
            let chat_route = Chat::Gemini {
                model,
                stream: true,
            };
            chat(req, chat_route, control, stats).await
        }
        gemini::Method::EmbedContent => {
            let embed_route = Embed::Gemini {
                model,
                batch: false,
            };
            embeddings(req, embed_route, control, stats).await
        }
        gemini::Method::BatchEmbedContents => {
            let embed_route = Embed::Gemini { model, batch: true };
            embeddings(req, embed_route, control, stats).await
        }
    }
}

fn not_found(path: &str) -> Response<MockBody> {
    json(
        StatusCode::NOT_FOUND,
        error_body(404, &format!("no route {path}")),
    )
}

/// Which chat API a request came in on.
enum Chat {
    OpenAi,
    Anthropic,
    /// The model (knob suffix included) comes from the path.
    Gemini {
        model: String,
        stream: bool,
    },
}

impl Chat {
    fn format(&self) -> Format {
        match self {
            Self::OpenAi => Format::OpenAi,
            Self::Anthropic => Format::Anthropic,
            Self::Gemini { .. } => Format::Gemini,
        }
    }
}

/// Which embeddings API a request came in on.
enum Embed {
    OpenAi,
    /// The model (knob suffix included) comes from the path.
    Gemini {
        model: String,
        batch: bool,
    },
}

/// The request's head and whole body, recorded as [`Received`].
async fn receive(req: Request<Incoming>) -> io::Result<(http::request::Parts, Received)> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    let received = Received {
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body,
    };
    Ok((parts, received))
}

/// The faults that come before any answer: stall before the head, latency, the `error` knob
/// (chat only: `chat` is the reply it would have sent) and the `status` knob (an error in
/// `format`'s shape). `Some` is the response to send instead of the answer.
async fn early_faults(
    knobs: &Knobs,
    format: Format,
    headers: &http::HeaderMap,
    chat: Option<&Reply>,
    stats: &MockStats,
) -> Option<Response<MockBody>> {
    if knobs.stall == Some(Stall::Head) {
        std::future::pending::<()>().await;
    }
    if !knobs.latency.is_zero() {
        shard::sleep(knobs.latency.sample()).await;
    }
    if let (Some(kind), Some(reply)) = (knobs.error, chat) {
        stats.faults.fetch_add(1, Relaxed);
        let (status, body) = format.provider_error(kind, reply);
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut res = json(code, body);
        if code == StatusCode::OK && reply.stream {
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        }
        return Some(res);
    }
    let status = knobs.status.filter(|s| !(200..300).contains(s))?;
    stats.faults.fetch_add(1, Relaxed);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut message = format!("mock error {status}");
    if knobs.echo_auth {
        message.push_str("; you sent ");
        message.push_str(&credentials(headers));
    }
    let mut res = json(code, format.error_body(status, &message));
    if status == 429 {
        res.headers_mut().insert(
            RETRY_AFTER,
            HeaderValue::from(knobs.retry_after.unwrap_or(1)),
        );
    }
    Some(res)
}

/// The request's credential headers as `name: value` pairs (knob `echo_auth`).
fn credentials(headers: &http::HeaderMap) -> String {
    let mut out = Vec::new();
    for name in ["authorization", "x-api-key", "x-goog-api-key", "api-key"] {
        for v in headers.get_all(name) {
            out.push(format!("{name}: {}", String::from_utf8_lossy(v.as_bytes())));
        }
    }
    out.join(", ")
}

fn bad_request(format: Format, e: &MockError) -> Response<MockBody> {
    json(StatusCode::BAD_REQUEST, format.error_body(400, &e.0))
}

async fn chat(
    req: Request<Incoming>,
    route: Chat,
    control: &Control,
    stats: &Arc<MockStats>,
) -> Result<Response<MockBody>, io::Error> {
    stats.chat.fetch_add(1, Relaxed);
    let format = route.format();
    stats.count_format(format);
    let (parts, received) = receive(req).await?;
    let body = received.body.clone();
    stats.last_chat.store(Some(Arc::new(received)));
    let mut scratch = body.to_vec();
    let parsed = match &route {
        Chat::OpenAi => Reply::from_request(&mut scratch),
        Chat::Anthropic => anthropic::parse(&mut scratch, &parts.headers),
        Chat::Gemini { model, stream } => {
            if *stream && !query_has(parts.uri.query(), "alt", "sse") {
                Err(MockError(
                    "shardgate-mock serves streamGenerateContent with alt=sse only".into(),
                ))
            } else {
                gemini::parse(model, *stream, &mut scratch)
            }
        }
    };
    let mut reply = match parsed {
        Ok(r) => r,
        Err(e) => return Ok(bad_request(format, &e)),
    };
    let model_full = match &route {
        Chat::Gemini { model, .. } => model.clone(),
        _ => model_with_suffix(&body),
    };
    let knobs = match control.request_knobs(&model_full, &parts.headers) {
        Ok(k) => k,
        Err(e) => return Ok(bad_request(format, &e)),
    };
    reply.apply_knobs(&knobs);
    reply.apply_refusal(&knobs, format);
    if let Some(res) = early_faults(&knobs, format, &parts.headers, Some(&reply), stats).await {
        return Ok(res);
    }
    if !reply.stream {
        stats.last_usage.store(Some(Arc::new(reply.usage())));
        return Ok(json(StatusCode::OK, format.answer(&reply)));
    }
    stats.streams.fetch_add(1, Relaxed);
    let events = format.events(&reply, knobs.chunks.unwrap_or(DEFAULT_CHUNKS));
    let done = (stats.clone(), reply.usage());
    let error_event = if knobs.echo_auth {
        format.stream_error_with(&format!(
            "mock in-band error; you sent {}",
            credentials(&parts.headers)
        ))
    } else {
        format.stream_error()
    };
    let mut res = Response::new(MockBody::stream(events, knobs, error_event, Some(done)));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    Ok(res)
}

async fn embeddings(
    req: Request<Incoming>,
    route: Embed,
    control: &Control,
    stats: &MockStats,
) -> Result<Response<MockBody>, io::Error> {
    stats.embeddings.fetch_add(1, Relaxed);
    let format = match route {
        Embed::OpenAi => Format::OpenAi,
        Embed::Gemini { .. } => Format::Gemini,
    };
    stats.count_format(format);
    let (parts, received) = receive(req).await?;
    let body = received.body.clone();
    stats.last_embeddings.store(Some(Arc::new(received)));
    let mut scratch = body.to_vec();
    let answer = match &route {
        Embed::OpenAi => {
            embeddings::Request::from_openai(&mut scratch).map(|r| r.openai_response())
        }
        Embed::Gemini { batch: false, .. } => embeddings::gemini_embed(&mut scratch),
        Embed::Gemini { batch: true, .. } => embeddings::gemini_batch(&mut scratch),
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return Ok(bad_request(format, &e)),
    };
    let model_full = match &route {
        Embed::Gemini { model, .. } => model.clone(),
        Embed::OpenAi => model_with_suffix(&body),
    };
    let knobs = match control.request_knobs(&model_full, &parts.headers) {
        Ok(k) => k,
        Err(e) => return Ok(bad_request(format, &e)),
    };
    if let Some(res) = early_faults(&knobs, format, &parts.headers, None, stats).await {
        return Ok(res);
    }
    Ok(json(StatusCode::OK, answer))
}

/// Does the query string hold `key=value`?
fn query_has(query: Option<&str>, key: &str, value: &str) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split_once('=') == Some((key, value)))
    })
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
    /// The in-band error event `error_after` sends, in the stream's format.
    error_event: Bytes,
    /// Where to record the usage once the last event goes out.
    done: Option<(Arc<MockStats>, MockUsage)>,
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
            error_event: Bytes::new(),
            done: None,
        }
    }

    fn stream(
        events: Vec<Bytes>,
        knobs: Knobs,
        error_event: Bytes,
        done: Option<(Arc<MockStats>, MockUsage)>,
    ) -> Self {
        let first = knobs.ttfc.sample();
        Self {
            full: None,
            events: events.into(),
            timer: (!first.is_zero()).then(|| Timer::new(first)),
            knobs,
            sent: 0,
            streaming: true,
            reset_armed: false,
            error_event,
            done,
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
            this.done = None;
            this.sent += 1;
            return Poll::Ready(Some(Ok(Frame::data(this.error_event.clone()))));
        }
        let Some(ev) = this.events.pop_front() else {
            return Poll::Ready(None);
        };
        this.sent += 1;
        if this.events.is_empty()
            && let Some((stats, usage)) = this.done.take()
        {
            stats.last_usage.store(Some(Arc::new(usage)));
        }
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use serde_json::{Value as Json, json};

    use super::*;

    fn start() -> MockServer {
        MockServer::start(MockConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            cores: vec![None],
            defaults: Knobs::default(),
            schedule: Schedule::default(),
            tls: None,
        })
        .unwrap()
    }

    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn json(&self) -> Json {
            serde_json::from_slice(&self.body).unwrap()
        }

        fn text(&self) -> &str {
            std::str::from_utf8(&self.body).unwrap()
        }
    }

    /// One HTTP/1.1 POST over a fresh connection (closed after the answer).
    fn post(mock: &MockServer, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut s = TcpStream::connect(mock.addr).unwrap();
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nhost: mock\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (n, v) in headers {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = std::str::from_utf8(&raw[..split]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap()[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_ascii_lowercase(), v.trim().to_owned())
            })
            .collect();
        let mut body = raw[split + 4..].to_vec();
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
        if chunked {
            body = dechunk(&body);
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    fn dechunk(mut b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap(), 16).unwrap();
            if size == 0 {
                return out;
            }
            out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
            b = &b[eol + 4 + size..];
        }
    }

    fn last_usage(mock: &MockServer) -> MockUsage {
        **mock.stats().last_usage.load().as_ref().unwrap()
    }

    #[test]
    fn openai_chat_and_embeddings_over_a_socket() {
        let mock = start();
        let body = r#"{"model":"gpt;chunks=3","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hello there"}]}"#;
        let a = post(
            &mock,
            "/v1/chat/completions",
            &[
                ("x-mock-cached-tokens", "5"),
                ("x-mock-reasoning-tokens", "2"),
            ],
            body,
        );
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-type"), Some("text/event-stream"));
        assert!(a.text().ends_with("data: [DONE]\n\n"));
        // role + 3 pieces + finish + usage + [DONE]
        assert_eq!(a.text().matches("data: ").count(), 7);
        let got = mock.stats().last_chat.load_full().unwrap();
        assert_eq!(got.path_and_query, "/v1/chat/completions");
        assert_eq!(got.headers["x-mock-cached-tokens"], "5");
        assert_eq!(&got.body[..], body.as_bytes());
        let p = body.len() as u64 / 4;
        assert_eq!(
            last_usage(&mock),
            MockUsage {
                input_tokens: p,
                output_tokens: 8 + 2, // "This is a mock reply to: hello there" + reasoning
                cached_input_tokens: 5,
                reasoning_tokens: 2,
            }
        );

        let a = post(
            &mock,
            "/v1/embeddings",
            &[],
            r#"{"model":"emb","input":["a","b"],"dimensions":4}"#,
        );
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert_eq!(
            a.json()["data"][1]["embedding"].as_array().unwrap().len(),
            4
        );
        let got = mock.stats().last_embeddings.load_full().unwrap();
        assert_eq!(got.path_and_query, "/v1/embeddings");

        let a = post(
            &mock,
            "/v1/embeddings",
            &[("x-mock-status", "429"), ("x-mock-retry-after", "7")],
            r#"{"model":"emb","input":"a"}"#,
        );
        assert_eq!(a.status, 429);
        assert_eq!(a.header("retry-after"), Some("7"));
        assert_eq!(a.json()["error"]["type"], "rate_limit_error");

        let s = mock.stats();
        assert_eq!(s.chat.load(Relaxed), 1);
        assert_eq!(s.streams.load(Relaxed), 1);
        assert_eq!(s.embeddings.load(Relaxed), 2);
        mock.stop();
    }

    #[test]
    fn anthropic_messages_over_a_socket() {
        let mock = start();
        let version = ("anthropic-version", "2023-06-01");
        let body = r#"{"model":"claude;cached_tokens=3","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
        let a = post(&mock, "/v1/messages", &[version], body);
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.header("content-type"), Some("application/json"));
        let v = a.json();
        assert_eq!(v["model"], "claude");
        assert_eq!(v["content"][0]["text"], "This is a mock reply to: hi");
        let p = body.len() as u64 / 4;
        assert_eq!(v["usage"]["input_tokens"], p - 3);
        assert_eq!(
            last_usage(&mock),
            MockUsage {
                input_tokens: p,
                output_tokens: 7, // "This is a mock reply to: hi"
                cached_input_tokens: 3,
                reasoning_tokens: 0,
            }
        );
        assert_eq!(
            mock.stats().last_chat.load_full().unwrap().path_and_query,
            "/v1/messages"
        );

        let stream = r#"{"model":"claude","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let a = post(
            &mock,
            "/v1/messages",
            &[version, ("x-mock-chunks", "2")],
            stream,
        );
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-type"), Some("text/event-stream"));
        assert!(a.text().starts_with("event: message_start\ndata: {"));
        assert!(
            a.text()
                .ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
        );
        assert_eq!(a.text().matches("event: content_block_delta\n").count(), 2);

        let a = post(
            &mock,
            "/v1/messages",
            &[version, ("x-mock-error-after", "2")],
            stream,
        );
        assert_eq!(a.status, 200);
        assert!(a.text().ends_with(
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"mock in-band error\"}}\n\n"
        ));
        assert_eq!(a.text().matches("event: ").count(), 3);

        let a = post(&mock, "/v1/messages", &[], body);
        assert_eq!(a.status, 400);
        assert_eq!(
            a.json(),
            json!({"type": "error", "error": {"type": "invalid_request_error",
                   "message": "anthropic-version: header is required"}})
        );
        let a = post(
            &mock,
            "/v1/messages",
            &[version, ("x-mock-status", "529")],
            body,
        );
        assert_eq!(a.status, 529);
        assert_eq!(a.json()["error"]["type"], "overloaded_error");
        assert_eq!(mock.stats().chat.load(Relaxed), 5);
        assert_eq!(mock.stats().streams.load(Relaxed), 2);
        mock.stop();
    }

    #[test]
    fn gemini_generate_and_embed_over_a_socket() {
        let mock = start();
        let key = ("x-goog-api-key", "g-key");
        let body = r#"{"contents":[{"role":"user","parts":[{"text":"hi gemini"}]}]}"#;
        let path = "/v1beta/models/gemini-2.5-flash;chunks=2;reasoning_tokens=4:streamGenerateContent?alt=sse";
        let a = post(&mock, path, &[key], body);
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.header("content-type"), Some("text/event-stream"));
        assert!(a.text().ends_with("}\r\n\r\n"));
        assert_eq!(a.text().matches("data: ").count(), 2);
        assert!(!a.text().contains("[DONE]"));
        let got = mock.stats().last_chat.load_full().unwrap();
        assert_eq!(got.path_and_query, path);
        assert_eq!(got.headers["x-goog-api-key"], "g-key");
        let p = body.len() as u64 / 4;
        assert_eq!(
            last_usage(&mock),
            MockUsage {
                input_tokens: p,
                output_tokens: 8 + 4, // "This is a mock reply to: hi gemini" + thoughts
                cached_input_tokens: 0,
                reasoning_tokens: 4,
            }
        );

        let a = post(
            &mock,
            "/v1beta/models/gemini-2.5-flash:generateContent",
            &[key, ("x-mock-finish", "SAFETY")],
            body,
        );
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert_eq!(
            a.json()["candidates"][0],
            json!({"finishReason": "SAFETY", "index": 0})
        );
        assert_eq!(a.json()["modelVersion"], "gemini-2.5-flash");

        let a = post(
            &mock,
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            &[],
            body,
        );
        assert_eq!(a.status, 400);
        assert_eq!(a.json()["error"]["status"], "INVALID_ARGUMENT");
        let a = post(
            &mock,
            "/v1/models/gemini-2.5-flash%3Bstatus%3D429:generateContent",
            &[],
            body,
        );
        assert_eq!(a.status, 429);
        assert_eq!(
            a.json()["error"],
            json!({"code": 429, "message": "mock error 429", "status": "RESOURCE_EXHAUSTED"})
        );

        let a = post(
            &mock,
            "/v1beta/models/text-embedding-004:embedContent",
            &[key],
            r#"{"content":{"parts":[{"text":"a"}]},"outputDimensionality":3}"#,
        );
        assert_eq!(a.status, 200, "{}", a.text());
        let values: Vec<f32> = a.json()["embedding"]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(values, embeddings::vector("a", 3));
        assert_eq!(
            mock.stats()
                .last_embeddings
                .load_full()
                .unwrap()
                .path_and_query,
            "/v1beta/models/text-embedding-004:embedContent"
        );
        assert_eq!(mock.stats().chat.load(Relaxed), 4);
        assert_eq!(mock.stats().embeddings.load(Relaxed), 1);
        mock.stop();
    }
}
