//! One upstream exchange: send the request to a provider's endpoint, then relay its answer
//! (untouched, when the client speaks the provider's dialect) or translate it (whole or
//! event by event), accounting usage and the attempt's outcome on the way. A failure after
//! the first streamed byte ends the stream with one error event in the client's dialect.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use memchr::memmem;

use super::{Decoder, Dialect, Encoder, Transcoder, anthropic, gemini, openai};
use crate::DeploymentId;
use crate::api::response::{ChatResponse, Delta};
use crate::api::sse::{EventSplitter, data_payloads, without_events};
use crate::api::usage::is_usage_only_chunk;
use crate::api::{TranslateError, Usage, json};
use crate::config::{KeyHeader, ModelRoute, ProviderConfig, ProviderKind, Scheme};
use crate::error::{ErrorKind, GatewayError};
use crate::http::body::{BodyCollector, ResBody};
use crate::http::context::RequestCtx;
use crate::http::state::ShardState;
use crate::metrics::labels::UpstreamOutcome;
use crate::scoring::Outcome;
use crate::shard::{self, Timer};
use crate::upstream::{Lease, ReqBody};

/// Most bytes of a non-streamed answer the gateway buffers.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Most bytes of an upstream error body read.
pub const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Upstream statuses that are about the client's request, not about the provider's health:
/// relayed as they are when the client speaks the provider's dialect, else translated.
const RELAYED: [u16; 5] = [400, 404, 409, 413, 422];

static SHARDGATE_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("shardgate/", env!("CARGO_PKG_VERSION")));
/// `anthropic-version`.
pub static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
/// `anthropic-beta`.
pub static ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// One upstream attempt, for the books.
pub(crate) struct Attempt {
    pub(crate) state: Rc<ShardState>,
    pub(crate) provider: usize,
    pub(crate) deployment: DeploymentId,
    pub(crate) model: usize,
    pub(crate) started: Instant,
    pub(crate) ttfb: Duration,
}

impl Attempt {
    /// An attempt starting now.
    pub(crate) fn start(state: &Rc<ShardState>, model: &ModelRoute) -> Self {
        Self {
            state: state.clone(),
            provider: model.provider,
            deployment: model.deployment.clone(),
            model: model.index,
            started: Instant::now(),
            ttfb: Duration::ZERO,
        }
    }

    pub(crate) fn record(&self, status: u16, usage: Option<Usage>, result: UpstreamOutcome) {
        if result == UpstreamOutcome::Cancelled {
            // The client left: says nothing about the deployment's health.
            if let Some(m) = self.state.metrics.providers.get(self.provider) {
                m.attempts[result as usize].inc();
            }
            if let Some(u) = usage {
                // Tokens the provider already reported are still spent.
                self.state.record_usage(self.model, &u);
            }
            return;
        }
        let outcome = Outcome {
            deployment: self.deployment.clone(),
            ok: result == UpstreamOutcome::Ok,
            status,
            latency: self.started.elapsed(),
            ttfb: self.ttfb,
            usage,
            cost: None,
            at: Instant::now(),
        };
        self.state
            .record_attempt(self.provider, self.model, outcome, result);
    }
}

/// A provider's target could not be built from its config.
#[derive(Debug, thiserror::Error)]
#[error("provider `{provider}`: {message}")]
pub struct TargetError {
    provider: String,
    message: String,
}

/// The fixed parts of every request to one provider, built once at start-up.
#[derive(Debug, Clone)]
pub struct Target {
    scheme: &'static str,
    authority: String,
    base_path: String,
    query: Option<String>,
    /// The chat path (OpenAI and Anthropic kinds): origin form and absolute form.
    chat: (Uri, Uri),
    host: HeaderValue,
    auth: Option<(HeaderName, HeaderValue)>,
}

impl Target {
    /// The target of a provider with an endpoint (`None` for in-process providers).
    pub fn new(provider: &ProviderConfig) -> Result<Option<Self>, TargetError> {
        let Some(ep) = &provider.endpoint else {
            return Ok(None);
        };
        let err = |message: String| TargetError {
            provider: provider.id.to_string(),
            message,
        };
        let scheme = if ep.scheme == Scheme::Https {
            "https"
        } else {
            "http"
        };
        let host =
            HeaderValue::from_str(&ep.authority).map_err(|e| err(format!("invalid host: {e}")))?;
        let auth = match &provider.api_key {
            None => None,
            Some(key) => {
                // The key itself never goes into the message.
                let (name, value) = match provider.key_header {
                    KeyHeader::Bearer => (AUTHORIZATION, format!("Bearer {}", key.expose())),
                    KeyHeader::ApiKey => (HeaderName::from_static("api-key"), key.expose().into()),
                    KeyHeader::XApiKey => {
                        (HeaderName::from_static("x-api-key"), key.expose().into())
                    }
                    KeyHeader::XGoogApiKey => (
                        HeaderName::from_static("x-goog-api-key"),
                        key.expose().into(),
                    ),
                };
                let mut v = HeaderValue::from_str(&value)
                    .map_err(|_| err("the API key is not a valid HTTP header value".into()))?;
                v.set_sensitive(true);
                Some((name, v))
            }
        };
        let mut t = Self {
            scheme,
            authority: ep.authority.to_string(),
            base_path: ep.base_path.to_string(),
            query: provider
                .api_version
                .as_ref()
                .map(|v| format!("api-version={v}")),
            chat: (Uri::from_static("/"), Uri::from_static("/")),
            host,
            auth,
        };
        let chat = match provider.kind {
            ProviderKind::Anthropic => "/messages",
            _ => "/chat/completions",
        };
        t.chat = t.uris(chat).map_err(|e| err(e.to_string()))?;
        Ok(Some(t))
    }

    /// The origin-form and absolute URIs of `path` under the base path (with the configured
    /// query, if any).
    pub fn uris(&self, path: &str) -> Result<(Uri, Uri), GatewayError> {
        let mut p = format!("{}{path}", self.base_path);
        if let Some(q) = &self.query {
            p.push(if path.contains('?') { '&' } else { '?' });
            p.push_str(q);
        }
        let bad = |e: http::uri::InvalidUri| {
            GatewayError::bad_request("The model name cannot be used in an upstream URL.")
                .with_cause(e)
        };
        let origin: Uri = p.parse().map_err(bad)?;
        let absolute: Uri = format!("{}://{}{p}", self.scheme, self.authority)
            .parse()
            .map_err(bad)?;
        Ok((origin, absolute))
    }
}

/// How an answer reaches the client.
#[derive(Debug, Clone)]
pub enum Answer {
    /// As the provider sent it: the client speaks its dialect. Usage is read on the way;
    /// `strip_usage` drops the usage-only chunk the gateway asked for (OpenAI).
    Pass {
        /// The shared dialect.
        dialect: Dialect,
        /// Drop the usage-only chunk.
        strip_usage: bool,
    },
    /// Translated from the provider's kind to the client's dialect.
    Translate {
        /// The provider's kind.
        from: ProviderKind,
        /// The client's dialect.
        to: Dialect,
        /// The public model name (until the provider names one).
        model: String,
        /// OpenAI clients: add the usage chunk.
        include_usage: bool,
    },
    /// Gemini embeddings, as OpenAI's embeddings answer.
    GeminiEmbeddings {
        /// The public model name.
        model: String,
        /// Vectors as base64.
        base64: bool,
        /// Estimated input tokens (Gemini reports none for embeddings).
        input_tokens: u64,
    },
}

impl Answer {
    /// The client's dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            Self::Pass { dialect, .. } => *dialect,
            Self::Translate { to, .. } => *to,
            Self::GeminiEmbeddings { .. } => Dialect::OpenAi,
        }
    }

    /// A whole answer for the client, and its usage.
    pub fn whole(&self, bytes: Bytes) -> Result<(Bytes, Option<Usage>), TranslateError> {
        match self {
            Self::Pass {
                dialect: Dialect::OpenAi,
                ..
            } => {
                let usage = Usage::from_openai_json(&bytes);
                Ok((bytes, usage))
            }
            Self::Pass {
                dialect: Dialect::Anthropic,
                ..
            } => {
                let usage = json::top_level_value(&bytes, b"usage")
                    .and_then(|r| serde_json::from_slice::<anthropic::wire::Usage>(&bytes[r]).ok())
                    .map(|u| anthropic::translate::usage_from_wire(&u));
                Ok((bytes, usage))
            }
            Self::Translate {
                from, to, model, ..
            } => {
                let resp: ChatResponse = match from {
                    ProviderKind::OpenAi | ProviderKind::Mock => {
                        openai::translate::from_wire(&bytes)?
                    }
                    ProviderKind::Anthropic => anthropic::translate::from_wire(&bytes)?,
                    ProviderKind::Gemini => gemini::translate::from_wire(&bytes)?,
                };
                let out = match to {
                    Dialect::OpenAi => {
                        openai::translate::to_client(&resp, model, super::unix_now())
                    }
                    Dialect::Anthropic => anthropic::translate::to_client(&resp, model)?,
                };
                Ok((Bytes::from(out), resp.usage))
            }
            Self::GeminiEmbeddings {
                model,
                base64,
                input_tokens,
            } => {
                let vectors = gemini::translate::embed_from_wire(&bytes)?;
                let usage = Usage {
                    input_tokens: *input_tokens,
                    ..Usage::default()
                };
                let out =
                    crate::api::embeddings::openai_answer(model, &vectors, *base64, *input_tokens);
                Ok((Bytes::from(out), Some(usage)))
            }
        }
    }

    /// The stream state for this answer.
    fn stream_mode(&self) -> Mode {
        match self {
            // Embeddings never stream; relaying bytes is the safe default.
            Self::GeminiEmbeddings { .. } => Mode::PassOpenAi {
                strip_usage: false,
                saw_done: false,
                usage: None,
                saw_error: false,
            },
            Self::Pass {
                dialect: Dialect::OpenAi,
                strip_usage,
            } => Mode::PassOpenAi {
                strip_usage: *strip_usage,
                saw_done: false,
                usage: None,
                saw_error: false,
            },
            Self::Pass {
                dialect: Dialect::Anthropic,
                ..
            } => Mode::PassAnthropic(Box::default()),
            Self::Translate {
                from,
                to,
                model,
                include_usage,
            } => Mode::Translate(Box::new(Transcoder::new(
                Decoder::of_kind(*from),
                Encoder::new(*to, model, *include_usage),
            ))),
        }
    }

    /// Run a whole stream through this answer's relay logic at once, from chunks split
    /// anywhere (as reads arrive): the bytes the client gets, the usage, and whether the
    /// stream ended cleanly. The relay does the same, one read at a time.
    pub fn transcode(&self, chunks: impl IntoIterator<Item = Bytes>) -> Transcoded {
        let mut mode = self.stream_mode();
        let mut splitter = EventSplitter::default();
        let mut out = Vec::new();
        for chunk in chunks {
            let Some(events) = splitter.push(chunk) else {
                continue;
            };
            match mode.events(events) {
                Ok(Some(b)) => out.push(b),
                Ok(None) => {}
                Err(e) => {
                    out.push(mode.fail(
                        self.dialect(),
                        ErrorKind::UpstreamProtocol,
                        &e.to_string(),
                    ));
                    return Transcoded {
                        events: out,
                        usage: mode.usage(),
                        complete: false,
                        saw_error: mode.saw_error(),
                    };
                }
            }
        }
        let finished = if splitter.pending_len() == 0 {
            mode.finish()
        } else {
            Err(())
        };
        let complete = match finished {
            Ok(tail) => {
                out.extend(tail);
                true
            }
            Err(()) => {
                out.push(mode.fail(
                    self.dialect(),
                    ErrorKind::UpstreamProtocol,
                    "The upstream ended the stream before it was complete.",
                ));
                false
            }
        };
        Transcoded {
            events: out,
            usage: mode.usage(),
            complete,
            saw_error: mode.saw_error(),
        }
    }
}

/// A whole stream run through [`Answer::transcode`].
#[derive(Debug)]
pub struct Transcoded {
    /// What the client gets, frame by frame.
    pub events: Vec<Bytes>,
    /// The usage the upstream reported.
    pub usage: Option<Usage>,
    /// Did the upstream report an error in the stream? (The relay then adds no error event of
    /// its own when the stream is cut: the client already has the upstream's.)
    pub saw_error: bool,
    /// Did the upstream stream end as its API documents?
    pub complete: bool,
}

impl Transcoded {
    /// All the bytes the client gets.
    pub fn bytes(&self) -> Vec<u8> {
        self.events.concat()
    }
}

/// One request to send upstream.
#[derive(Debug)]
pub struct Call {
    /// The body, in the provider's format.
    pub body: Bytes,
    /// The path's URIs, when not the provider's chat path.
    pub uris: Option<(Uri, Uri)>,
    /// Extra headers (e.g. `anthropic-version`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Is the answer a stream?
    pub stream: bool,
    /// How the answer reaches the client.
    pub answer: Answer,
}

/// Send a request upstream and answer the client.
pub async fn send(
    state: &Rc<ShardState>,
    ctx: &RequestCtx,
    model: &ModelRoute,
    provider: &ProviderConfig,
    call: Call,
) -> Result<Response<ResBody>, GatewayError> {
    let pool = state
        .pools
        .get(model.provider)
        .and_then(Clone::clone)
        .ok_or_else(|| GatewayError::internal("No connection pool for this provider."))?;
    let target = state
        .targets
        .get(model.provider)
        .and_then(Option::as_ref)
        .ok_or_else(|| GatewayError::internal("No request target for this provider."))?;
    let (origin, absolute) = call.uris.as_ref().unwrap_or(&target.chat);
    ctx.provider.set(Some(model.provider));
    let build = |h2: bool| {
        let mut req = Request::new(ReqBody::new(call.body.clone()));
        *req.method_mut() = Method::POST;
        if h2 {
            *req.uri_mut() = absolute.clone();
        } else {
            *req.uri_mut() = origin.clone();
            req.headers_mut().insert(HOST, target.host.clone());
        }
        let h = req.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(USER_AGENT, SHARDGATE_AGENT.clone());
        if let Some((name, value)) = &target.auth {
            h.insert(name.clone(), value.clone());
        }
        for (name, value) in &call.headers {
            h.insert(name.clone(), value.clone());
        }
        req
    };

    let timeouts = provider.timeouts;
    let started = Instant::now();
    let mut attempt = Attempt::start(state, model);
    let sent = match pool.send(build, &timeouts).await {
        Ok(s) => s,
        Err(e) => {
            let err = e.into_gateway();
            attempt.ttfb = started.elapsed();
            attempt.record(0, None, UpstreamOutcome::from_error(err.kind()));
            ctx.add_upstream(started.elapsed());
            return Err(err);
        }
    };
    attempt.ttfb = sent.ttfb;
    let deadline = started + timeouts.total;
    let (parts, incoming) = sent.response.into_parts();
    let lease = sent.lease;

    if !parts.status.is_success() {
        let body = read_all(incoming, timeouts.idle, deadline, MAX_ERROR_BYTES).await;
        ctx.add_upstream(started.elapsed());
        if body.is_ok() {
            lease.release();
        }
        return upstream_error(
            &attempt,
            &call.answer,
            parts.status,
            &parts.headers,
            body.ok(),
        );
    }

    let event_stream = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if call.stream && event_stream {
        ctx.add_upstream(sent.ttfb);
        let relay = Relay {
            attempt,
            upstream: Some(incoming),
            lease: Some(lease),
            splitter: EventSplitter::default(),
            timer: Timer::new(timeouts.idle),
            idle: timeouts.idle,
            deadline,
            dialect: call.answer.dialect(),
            mode: call.answer.stream_mode(),
            cut: state.cut.clone(),
        };
        let mut res = Response::new(ResBody::stream(Box::pin(relay)));
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return Ok(res);
    }

    let answer = read_all(incoming, timeouts.idle, deadline, MAX_ANSWER_BYTES).await;
    ctx.add_upstream(started.elapsed());
    let status = parts.status.as_u16();
    let bytes = match answer {
        Ok(bytes) => {
            lease.release();
            bytes
        }
        Err(err) => {
            attempt.record(status, None, UpstreamOutcome::from_error(err.kind()));
            return Err(err);
        }
    };
    let relay_type = matches!(call.answer, Answer::Pass { .. })
        .then(|| parts.headers.get(CONTENT_TYPE).cloned())
        .flatten();
    match call.answer.whole(bytes) {
        Ok((body, usage)) => {
            attempt.record(status, usage, UpstreamOutcome::Ok);
            let mut res = Response::new(ResBody::full(body));
            res.headers_mut().insert(
                CONTENT_TYPE,
                relay_type.unwrap_or(HeaderValue::from_static("application/json")),
            );
            Ok(res)
        }
        Err(e) => {
            attempt.record(status, None, UpstreamOutcome::Protocol);
            Err(e.into())
        }
    }
}

/// The `error.message` of a provider's error body (the same path in all three formats).
pub(crate) fn provider_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("error")?
        .get("message")?
        .as_str()
        .map(|s| s.chars().take(500).collect())
}

/// Map an upstream error status to the client's answer.
fn upstream_error(
    attempt: &Attempt,
    answer: &Answer,
    status: StatusCode,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> Result<Response<ResBody>, GatewayError> {
    let code = status.as_u16();
    if RELAYED.contains(&code) {
        let body = body.filter(|b| json::top_level_value(b, b"error").is_some());
        match (answer, body) {
            (Answer::Pass { .. }, Some(body)) => {
                // The provider's verdict on the client's request, in the client's dialect:
                // relayed as it is (no x-shardgate-error), and no mark against the deployment.
                attempt.record(code, None, UpstreamOutcome::Ok);
                // Some providers echo the request's credentials: never relay our key.
                let body = attempt.state.redactor.redact_bytes(body);
                let mut res = Response::new(ResBody::full(body));
                *res.status_mut() = status;
                res.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                return Ok(res);
            }
            (Answer::Translate { .. }, Some(body)) => {
                attempt.record(code, None, UpstreamOutcome::Ok);
                let kind = match code {
                    404 => ErrorKind::NotFound,
                    413 => ErrorKind::PayloadTooLarge,
                    _ => ErrorKind::BadRequest,
                };
                let message = provider_message(&body).unwrap_or_else(|| "no message".to_owned());
                let message = attempt.state.redactor.redact_str(&message);
                return Err(GatewayError::new(
                    kind,
                    format!("The upstream provider rejected the request: {message}"),
                ));
            }
            _ => {}
        }
    }
    attempt.record(code, None, UpstreamOutcome::Status);
    let kind = ErrorKind::UpstreamStatus(code);
    let err = match code {
        429 => {
            let after = headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1);
            GatewayError::new(
                kind,
                "The upstream provider is rate limiting requests; retry later.",
            )
            .with_retry_after(Duration::from_secs(after))
        }
        401 | 403 => GatewayError::new(
            kind,
            "The upstream provider rejected the gateway's credentials.",
        ),
        _ => GatewayError::new(
            kind,
            format!("The upstream provider returned an error (HTTP {code})."),
        ),
    };
    Err(err)
}

/// Read a whole upstream body within the idle and total timeouts and a byte cap.
async fn read_all(
    mut body: Incoming,
    idle: Duration,
    deadline: Instant,
    cap: usize,
) -> Result<Bytes, GatewayError> {
    let mut collected = BodyCollector::default();
    loop {
        // Most answers are already buffered: take a ready frame without arming a timer.
        let ready = futures_lite::future::poll_once(body.frame()).await;
        let frame = match ready {
            Some(f) => Ok(f),
            None => {
                let wait = idle.min(deadline.saturating_duration_since(Instant::now()));
                shard::timeout(wait, body.frame()).await
            }
        };
        let frame = match frame {
            Err(_) => {
                return Err(GatewayError::new(
                    ErrorKind::UpstreamTimeout,
                    "The upstream provider stopped sending its answer.",
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(GatewayError::new(
                    ErrorKind::UpstreamProtocol,
                    "The connection to the upstream provider failed mid-answer.",
                )
                .with_cause(e));
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if collected.len() + data.len() > cap {
            return Err(GatewayError::new(
                ErrorKind::UpstreamProtocol,
                "The upstream answer is too large.",
            ));
        }
        collected.push(data);
    }
    Ok(collected.finish())
}

/// What a relay does with each run of events.
enum Mode {
    /// OpenAI to OpenAI: bytes as they are, usage and `[DONE]` teed out.
    PassOpenAi {
        strip_usage: bool,
        saw_done: bool,
        usage: Option<Usage>,
        saw_error: bool,
    },
    /// Anthropic to Anthropic: bytes as they are; the message events are read for usage.
    PassAnthropic(Box<PassAnthropic>),
    /// Any other pair: parsed and re-encoded.
    Translate(Box<Transcoder>),
}

#[derive(Default)]
struct PassAnthropic {
    parser: anthropic::stream::Parser,
    deltas: Vec<Delta>,
    usage: Option<Usage>,
    saw_error: bool,
}

impl Mode {
    /// Take a run of whole events; `Some` bytes to send.
    fn events(&mut self, events: Bytes) -> Result<Option<Bytes>, TranslateError> {
        match self {
            Self::PassOpenAi {
                strip_usage,
                saw_done,
                usage,
                saw_error,
            } => {
                // Only an event whose whole data payload is `[DONE]` ends the stream; the
                // bytes inside a chunk's text do not.
                if memmem::find(&events, b"[DONE]").is_some()
                    && data_payloads(&events).any(|d| *d == *b"[DONE]")
                {
                    *saw_done = true;
                }
                let interesting = memmem::find(&events, b"\"usage\"").is_some()
                    || memmem::find(&events, b"\"error\"").is_some();
                if interesting {
                    for data in data_payloads(&events) {
                        if let Some(u) = Usage::from_openai_json(&data) {
                            *usage = Some(u);
                        } else if json::top_level_value(&data, b"error")
                            .is_some_and(|e| data[e] != *b"null")
                        {
                            // `"error": null` in a healthy chunk is no error.
                            *saw_error = true;
                        }
                    }
                }
                if *strip_usage && memmem::find(&events, b"\"usage\"").is_some() {
                    let kept = without_events(&events, is_usage_only_chunk);
                    return Ok((!kept.is_empty()).then_some(kept));
                }
                Ok(Some(events))
            }
            Self::PassAnthropic(p) => {
                if memmem::find(&events, b"\"message_").is_some()
                    || memmem::find(&events, b"\"error\"").is_some()
                {
                    for data in data_payloads(&events) {
                        let interesting = memmem::find(&data, b"\"message_").is_some()
                            || memmem::find(&data, b"\"error\"").is_some();
                        if !interesting || memmem::find(&data, b"content_block").is_some() {
                            continue;
                        }
                        // Relayed untouched: a malformed event is the client's to see.
                        if p.parser.parse_chunk(&data, &mut p.deltas).is_err() {
                            continue;
                        }
                        for d in p.deltas.drain(..) {
                            match d {
                                Delta::Usage(u) => p.usage = Some(u),
                                Delta::Error(_) => p.saw_error = true,
                                _ => {}
                            }
                        }
                    }
                }
                Ok(Some(events))
            }
            Self::Translate(t) => {
                let mut out = Vec::with_capacity(events.len() + 64);
                t.events(&events, &mut out)?;
                Ok((!out.is_empty()).then(|| Bytes::from(out)))
            }
        }
    }

    /// The upstream ended: `Ok` with any closing bytes when the stream was complete.
    fn finish(&mut self) -> Result<Option<Bytes>, ()> {
        match self {
            Self::PassOpenAi { saw_done, .. } => {
                if *saw_done {
                    Ok(None)
                } else {
                    Err(())
                }
            }
            Self::PassAnthropic(p) => {
                if p.parser.is_complete() {
                    Ok(None)
                } else {
                    Err(())
                }
            }
            Self::Translate(t) => {
                let mut out = Vec::new();
                if !t.finish(&mut out) {
                    return Err(());
                }
                Ok((!out.is_empty()).then(|| Bytes::from(out)))
            }
        }
    }

    /// The final error event.
    fn fail(&mut self, dialect: Dialect, kind: ErrorKind, message: &str) -> Bytes {
        match self {
            Self::Translate(t) => {
                let mut out = Vec::new();
                t.fail(kind, message, &mut out);
                Bytes::from(out)
            }
            _ => dialect.error_event(kind, message),
        }
    }

    fn usage(&self) -> Option<Usage> {
        match self {
            Self::PassOpenAi { usage, .. } => *usage,
            Self::PassAnthropic(p) => p.usage,
            Self::Translate(t) => t.usage(),
        }
    }

    fn saw_error(&self) -> bool {
        match self {
            Self::PassOpenAi { saw_error, .. } => *saw_error,
            Self::PassAnthropic(p) => p.saw_error,
            Self::Translate(t) => t.saw_error(),
        }
    }
}

/// Relays an upstream SSE stream downstream as whole events. An upstream failure, idle
/// timeout, total timeout or early end becomes one final error event (unless the provider
/// already sent its own), never a silent truncation.
struct Relay {
    attempt: Attempt,
    upstream: Option<Incoming>,
    lease: Option<Lease>,
    splitter: EventSplitter,
    timer: Timer,
    idle: Duration,
    deadline: Instant,
    dialect: Dialect,
    mode: Mode,
    /// The shard's shutdown grace is over: end with an error event.
    cut: Rc<Cell<bool>>,
}

impl Relay {
    fn usage(&self) -> Option<Usage> {
        self.mode.usage()
    }

    fn end(&mut self, result: UpstreamOutcome) {
        self.upstream = None;
        if let Some(lease) = self.lease.take()
            && result == UpstreamOutcome::Ok
        {
            lease.release();
        }
        self.attempt.record(200, self.usage(), result);
    }

    /// End with a final error event (or quietly, if the provider already sent one).
    fn fail(
        &mut self,
        kind: ErrorKind,
        message: &str,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let result = UpstreamOutcome::from_error(kind);
        let already = self.mode.saw_error();
        let message = self.attempt.state.redactor.redact_str(message);
        let event = self.mode.fail(self.dialect, kind, &message);
        self.end(result);
        if already {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Frame::data(event))))
    }
}

impl Body for Relay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.cut.get() && this.upstream.is_some() {
            return this.fail(
                ErrorKind::Draining,
                "The gateway is shutting down; the stream was ended before it was complete.",
            );
        }
        loop {
            // `upstream` is `None` once the relay has ended.
            let Some(upstream) = this.upstream.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let left = this.deadline.saturating_duration_since(Instant::now());
                    this.timer.reset(this.idle.min(left));
                    let Some(events) = this.splitter.push(data) else {
                        continue;
                    };
                    match this.mode.events(events) {
                        Ok(Some(out)) => {
                            // A healthy stream is the model's answer and is not scanned; once
                            // the upstream reported an error in-band, what follows is.
                            let out = if this.mode.saw_error() {
                                this.attempt.state.redactor.redact_bytes(out)
                            } else {
                                out
                            };
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                        Ok(None) => {}
                        Err(e) => return this.fail(ErrorKind::UpstreamProtocol, &e.to_string()),
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    return this.fail(
                        ErrorKind::UpstreamProtocol,
                        "The upstream connection failed mid-stream.",
                    );
                }
                Poll::Ready(None) => {
                    let finished = if this.splitter.pending_len() == 0 {
                        this.mode.finish()
                    } else {
                        Err(())
                    };
                    return match finished {
                        Ok(tail) => {
                            let result = if this.mode.saw_error() {
                                UpstreamOutcome::Protocol
                            } else {
                                UpstreamOutcome::Ok
                            };
                            this.end(result);
                            Poll::Ready(tail.map(|b| Ok(Frame::data(b))))
                        }
                        Err(()) => this.fail(
                            ErrorKind::UpstreamProtocol,
                            "The upstream ended the stream before it was complete.",
                        ),
                    };
                }
                Poll::Pending => {
                    return match Pin::new(&mut this.timer).poll(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(()) if Instant::now() >= this.deadline => this.fail(
                            ErrorKind::UpstreamTimeout,
                            "The upstream stream exceeded its total time limit.",
                        ),
                        Poll::Ready(()) => this.fail(
                            ErrorKind::UpstreamTimeout,
                            "The upstream stopped sending for too long.",
                        ),
                    };
                }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.upstream.is_some() {
            // The client went away mid-stream: the upstream connection is closed, not reused.
            self.lease = None;
            self.attempt
                .record(200, self.usage(), UpstreamOutcome::Cancelled);
        }
    }
}
