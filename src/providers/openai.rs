//! OpenAI-compatible upstreams: the body goes through untouched but for the model name, the
//! answer comes back as the provider sent it; streams are relayed as whole SSE events, with
//! usage, `[DONE]` and in-band errors teed out of the stream on the way.

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

use crate::DeploymentId;
use crate::api::chat::upstream_body;
use crate::api::sse::{EventSplitter, data_payloads, without_events};
use crate::api::usage::is_usage_only_chunk;
use crate::api::{ChatHead, Usage, json};
use crate::config::{KeyHeader, ModelRoute, ProviderConfig, Scheme};
use crate::error::{ErrorKind, GatewayError};
use crate::http::body::{BodyCollector, ResBody};
use crate::http::context::RequestCtx;
use crate::http::respond::error_event;
use crate::http::state::ShardState;
use crate::metrics::labels::UpstreamOutcome;
use crate::scoring::Outcome;
use crate::shard::{self, Timer};
use crate::upstream::{Lease, ReqBody};

/// Most bytes of a non-streamed answer the gateway buffers.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Most bytes of an upstream error body read.
pub const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Upstream statuses whose bodies are relayed to the client as they are: they are about the
/// client's request, not about the gateway or the provider's health.
const RELAYED: [u16; 5] = [400, 404, 409, 413, 422];

static SHARDGATE_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("shardgate/", env!("CARGO_PKG_VERSION")));

/// One upstream attempt, for the books.
struct Attempt {
    state: Rc<ShardState>,
    provider: usize,
    deployment: DeploymentId,
    started: Instant,
    ttfb: Duration,
}

impl Attempt {
    fn record(&self, status: u16, usage: Option<Usage>, result: UpstreamOutcome) {
        if result == UpstreamOutcome::Cancelled {
            // The client left: says nothing about the deployment's health.
            if let Some(m) = self.state.metrics.providers.get(self.provider) {
                m.attempts[result as usize].inc();
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
            at: Instant::now(),
        };
        self.state.record_attempt(self.provider, outcome, result);
    }
}

/// A provider's target could not be built from its config.
#[derive(Debug, thiserror::Error)]
#[error("provider `{provider}`: {message}")]
pub struct TargetError {
    provider: String,
    message: String,
}

/// The fixed parts of every chat request to one provider, built once at start-up.
#[derive(Debug, Clone)]
pub struct Target {
    origin: Uri,
    absolute: Uri,
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
        let mut path = format!("{}/chat/completions", ep.base_path);
        if let Some(v) = &provider.api_version {
            path.push_str("?api-version=");
            path.push_str(v);
        }
        let scheme = if ep.scheme == Scheme::Https {
            "https"
        } else {
            "http"
        };
        let origin: Uri = path
            .parse()
            .map_err(|e| err(format!("invalid path: {e}")))?;
        let absolute: Uri = format!("{scheme}://{}{path}", ep.authority)
            .parse()
            .map_err(|e| err(format!("invalid URI: {e}")))?;
        let host =
            HeaderValue::from_str(&ep.authority).map_err(|e| err(format!("invalid host: {e}")))?;
        let auth = match &provider.api_key {
            None => None,
            Some(key) => {
                // The key itself never goes into the message.
                let (name, value) = match provider.key_header {
                    KeyHeader::Bearer => (AUTHORIZATION, format!("Bearer {}", key.expose())),
                    KeyHeader::ApiKey => (HeaderName::from_static("api-key"), key.expose().into()),
                };
                let mut v = HeaderValue::from_str(&value)
                    .map_err(|_| err("the API key is not a valid HTTP header value".into()))?;
                v.set_sensitive(true);
                Some((name, v))
            }
        };
        Ok(Some(Self {
            origin,
            absolute,
            host,
            auth,
        }))
    }
}

/// Send a chat request to an OpenAI-compatible upstream and relay the answer.
pub async fn chat(
    state: &Rc<ShardState>,
    ctx: &RequestCtx,
    model: &ModelRoute,
    provider: &ProviderConfig,
    head: &ChatHead,
    body: Bytes,
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
    // Streams always ask for usage (accounting needs it); the extra chunk is dropped again
    // below when the client did not ask for it.
    let strip_usage = head.stream && !head.include_usage;
    let upstream_body = upstream_body(
        &body,
        model.public.as_str(),
        &model.upstream_model,
        strip_usage,
    )?;
    let build = |h2: bool| {
        let mut req = Request::new(ReqBody::new(upstream_body.clone()));
        *req.method_mut() = Method::POST;
        if h2 {
            *req.uri_mut() = target.absolute.clone();
        } else {
            *req.uri_mut() = target.origin.clone();
            req.headers_mut().insert(HOST, target.host.clone());
        }
        let h = req.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(USER_AGENT, SHARDGATE_AGENT.clone());
        if let Some((name, value)) = &target.auth {
            h.insert(name.clone(), value.clone());
        }
        req
    };

    let timeouts = provider.timeouts;
    let started = Instant::now();
    let mut attempt = Attempt {
        state: state.clone(),
        provider: model.provider,
        deployment: model.deployment.clone(),
        started,
        ttfb: Duration::ZERO,
    };
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
        return upstream_error(&attempt, parts.status, &parts.headers, body.ok());
    }

    let event_stream = parts
        .headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if head.stream && event_stream {
        ctx.add_upstream(sent.ttfb);
        let relay = Relay {
            attempt,
            upstream: Some(incoming),
            lease: Some(lease),
            splitter: EventSplitter::default(),
            timer: Timer::new(timeouts.idle),
            idle: timeouts.idle,
            deadline,
            usage: None,
            saw_done: false,
            saw_error: false,
            strip_usage,
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
    match answer {
        Ok(bytes) => {
            lease.release();
            let usage = Usage::from_openai_json(&bytes);
            attempt.record(parts.status.as_u16(), usage, UpstreamOutcome::Ok);
            let mut res = Response::new(ResBody::full(bytes));
            let ct = parts.headers.get(CONTENT_TYPE).cloned();
            res.headers_mut().insert(
                CONTENT_TYPE,
                ct.unwrap_or(HeaderValue::from_static("application/json")),
            );
            Ok(res)
        }
        Err(err) => {
            attempt.record(
                parts.status.as_u16(),
                None,
                UpstreamOutcome::from_error(err.kind()),
            );
            Err(err)
        }
    }
}

/// Map an upstream error status to the client's answer.
fn upstream_error(
    attempt: &Attempt,
    status: StatusCode,
    headers: &HeaderMap,
    body: Option<Bytes>,
) -> Result<Response<ResBody>, GatewayError> {
    let code = status.as_u16();
    if RELAYED.contains(&code)
        && let Some(body) = body.filter(|b| json::top_level_value(b, b"error").is_some())
    {
        // The provider's verdict on the client's request: relayed as it is (no
        // x-shardgate-error), and no mark against the deployment.
        attempt.record(code, None, UpstreamOutcome::Ok);
        let mut res = Response::new(ResBody::full(body));
        *res.status_mut() = status;
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return Ok(res);
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
    usage: Option<Usage>,
    saw_done: bool,
    saw_error: bool,
    /// Drop the usage-only chunk (the gateway asked for it, the client did not).
    strip_usage: bool,
}

impl Relay {
    fn inspect(&mut self, events: &[u8]) {
        let interesting = memmem::find(events, b"[DONE]").is_some()
            || memmem::find(events, b"\"usage\"").is_some()
            || memmem::find(events, b"\"error\"").is_some();
        if !interesting {
            return;
        }
        for data in data_payloads(events) {
            if data == b"[DONE]" {
                self.saw_done = true;
            } else if let Some(u) = Usage::from_openai_json(&data) {
                self.usage = Some(u);
            } else if json::top_level_value(&data, b"error").is_some() {
                self.saw_error = true;
            }
        }
    }

    fn end(&mut self, result: UpstreamOutcome) {
        self.upstream = None;
        if let Some(lease) = self.lease.take()
            && result == UpstreamOutcome::Ok
        {
            lease.release();
        }
        self.attempt.record(200, self.usage, result);
    }

    /// End with a final error event (or quietly, if the provider already sent one).
    fn fail(
        &mut self,
        kind: ErrorKind,
        message: &str,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let result = UpstreamOutcome::from_error(kind);
        let already = self.saw_error;
        self.end(result);
        if already {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Ok(Frame::data(error_event(kind, message)))))
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
                    if let Some(mut events) = this.splitter.push(data) {
                        this.inspect(&events);
                        if this.strip_usage && memmem::find(&events, b"\"usage\"").is_some() {
                            events = without_events(&events, is_usage_only_chunk);
                            if events.is_empty() {
                                continue;
                            }
                        }
                        return Poll::Ready(Some(Ok(Frame::data(events))));
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    return this.fail(
                        ErrorKind::UpstreamProtocol,
                        "The upstream connection failed mid-stream.",
                    );
                }
                Poll::Ready(None) => {
                    if this.saw_done && this.splitter.pending_len() == 0 {
                        let result = if this.saw_error {
                            UpstreamOutcome::Protocol
                        } else {
                            UpstreamOutcome::Ok
                        };
                        this.end(result);
                        return Poll::Ready(None);
                    }
                    return this.fail(
                        ErrorKind::UpstreamProtocol,
                        "The upstream ended the stream before it was complete.",
                    );
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
                .record(200, self.usage, UpstreamOutcome::Cancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn provider(key: &str) -> ProviderConfig {
        let text = "[providers.p]\nkind = \"openai\"\nbase_url = \"https://api.example.com:8443/v1\"\napi_key_env = \"K\"\n";
        let key = key.to_owned();
        let env = move |_: &str| Some(key.clone());
        let c = Config::from_toml(text, "t", &env).unwrap();
        (*c.providers[0]).clone()
    }

    #[test]
    fn target_is_built_once_from_the_endpoint() {
        let t = Target::new(&provider("sk-good")).unwrap().unwrap();
        assert_eq!(t.origin, "/v1/chat/completions");
        assert_eq!(
            t.absolute,
            "https://api.example.com:8443/v1/chat/completions"
        );
        assert_eq!(t.host, "api.example.com:8443");
        let (name, auth) = t.auth.unwrap();
        assert_eq!(name, AUTHORIZATION);
        assert!(auth.is_sensitive());
        assert_eq!(auth, "Bearer sk-good");
    }

    #[test]
    fn azure_targets_send_api_key_and_api_version() {
        let text = "[providers.az]\nkind = \"openai\"\nbase_url = \"https://res.openai.azure.com/openai/deployments/gpt4o\"\napi_key_env = \"K\"\nkey_header = \"api-key\"\napi_version = \"2024-10-21\"\n";
        let env = |_: &str| Some("az-key".to_owned());
        let c = Config::from_toml(text, "t", &env).unwrap();
        let t = Target::new(&c.providers[0]).unwrap().unwrap();
        assert_eq!(
            t.origin,
            "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
        );
        let (name, value) = t.auth.unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("api-key", "az-key")
        );
        assert!(value.is_sensitive());
        for (field, bad) in [("key_header", "\"x-key\""), ("api_version", "\"a b\"")] {
            let text = format!(
                "[providers.az]\nkind = \"openai\"\nbase_url = \"https://h/v1\"\n{field} = {bad}\n"
            );
            let e = Config::from_toml(&text, "t", &env).unwrap_err().to_string();
            assert!(e.contains(&format!("providers.az.{field}")), "{e}");
        }
    }

    #[test]
    fn a_bad_key_fails_at_start_up_without_printing_it() {
        let e = Target::new(&provider("sk-secret\nvalue"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("provider `p`") && e.contains("API key"), "{e}");
        assert!(!e.contains("sk-secret"), "{e}");
    }
}
