//! One attempt at one deployment: send the request and read the response head (the status
//! mapped, still retryable), then commit to it: relay the stream or read the whole answer.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderValue, Method, Request, Response};

use super::body::ResBody;
use super::context::RequestCtx;
use super::relay::{Relay, read_all};
use super::state::ShardState;
use crate::api::Usage;
use crate::api::sse::EventSplitter;
use crate::config::Timeouts;
use crate::error::GatewayError;
use crate::metrics::labels::UpstreamOutcome;
use crate::providers::call::{
    Answer, Call, FallbackReason, MAX_ANSWER_BYTES, MAX_ERROR_BYTES, Refusal, SHARDGATE_AGENT,
    fallback_reason, refusal,
};
use crate::scoring::Outcome;
use crate::shard::Timer;
use crate::upstream::{PoolConn, UpBody};
use crate::{DeploymentIdx, ModelIdx};

/// One upstream attempt, for the books. Every attempt is recorded exactly once: by
/// [`Attempt::record`], or as cancelled when it is dropped unrecorded.
pub struct Attempt {
    /// The shard.
    pub state: Rc<ShardState>,
    /// The provider tried.
    pub provider: usize,
    /// The deployment tried.
    pub deployment: DeploymentIdx,
    /// The public model the attempt serves (the asked one or a fallback).
    pub model: usize,
    /// When the attempt started.
    pub started: Instant,
    /// Time to the response head.
    pub ttfb: Duration,
    /// The breaker's half-open probe.
    pub probe: bool,
    /// A streamed answer (its latency is time to first token).
    pub stream: bool,
    /// The request's tab: the attempt's usage and cost are added to it.
    tab: Option<Rc<super::admit::Tab>>,
    /// The deployment's own reservation (its limits), settled with this attempt's usage.
    hold: Option<super::admit::Hold>,
    recorded: Cell<bool>,
}

impl Attempt {
    /// An attempt at `deployment` for `model` starting now (the router has counted it in).
    pub fn start(
        state: &Rc<ShardState>,
        model: ModelIdx,
        deployment: DeploymentIdx,
        probe: bool,
        stream: bool,
    ) -> Self {
        let provider = state
            .config
            .deployments
            .get(deployment.get())
            .map_or(0, |d| d.provider.get());
        Self {
            state: state.clone(),
            provider,
            deployment,
            model: model.get(),
            started: Instant::now(),
            ttfb: Duration::ZERO,
            probe,
            stream,
            tab: None,
            hold: None,
            recorded: Cell::new(false),
        }
    }

    /// Charge the attempt's usage and cost to `tab`.
    pub fn with_tab(mut self, tab: Option<Rc<super::admit::Tab>>) -> Self {
        self.tab = tab;
        self
    }

    /// Settle the deployment's reservation with this attempt's usage.
    pub fn with_hold(mut self, hold: Option<super::admit::Hold>) -> Self {
        self.hold = hold;
        self
    }

    /// Add usage to the request's tab and the deployment's reservation.
    fn charge(&self, usage: &Usage, cost: Option<crate::budget::Cost>) {
        if let Some(tab) = &self.tab {
            tab.charge(usage, cost);
        }
        if let Some(hold) = &self.hold {
            hold.charge(usage);
        }
    }

    /// Close the attempt's books: provider metrics, usage and cost, the router's live
    /// figures and breaker, the scorer's outcome. Only the first call counts.
    pub fn record(&self, status: u16, usage: Option<Usage>, result: UpstreamOutcome) {
        if self.recorded.replace(true) {
            return;
        }
        let now = Instant::now();
        let health =
            (result != UpstreamOutcome::Cancelled).then_some(result == UpstreamOutcome::Ok);
        let latency = if self.stream && self.ttfb > Duration::ZERO {
            self.ttfb
        } else {
            self.started.elapsed()
        };
        let change = self.state.router.borrow_mut().end(
            self.deployment,
            health,
            self.probe,
            latency,
            self.stream,
            now,
        );
        if let Some(change) = change {
            self.state.breaker_changed(self.deployment, change);
        }
        if result == UpstreamOutcome::Cancelled {
            // The client left: says nothing about the deployment's health.
            self.state
                .count_attempt(self.provider, self.deployment, result);
            if let Some(u) = usage {
                // Tokens the provider already reported are still spent.
                let cost = self.state.record_usage(self.model, self.deployment, &u);
                self.charge(&u, cost);
            }
            return;
        }
        let outcome = Outcome {
            deployment: self.deployment,
            ok: result == UpstreamOutcome::Ok,
            status,
            latency: self.started.elapsed(),
            ttfb: self.ttfb,
            usage,
            cost: None,
            at: now,
        };
        let cost = self
            .state
            .record_attempt(self.provider, self.model, outcome, result);
        if let Some(u) = &usage {
            self.charge(u, cost);
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.recorded.get() {
            self.record(0, None, UpstreamOutcome::Cancelled);
        }
    }
}

/// An attempt whose response head arrived with a success status: nothing has reached the
/// client yet, so the request may still go elsewhere if reading the answer fails.
pub struct Opened {
    attempt: Attempt,
    response: Response<UpBody>,
    conn: PoolConn,
    timeouts: Timeouts,
    deadline: Instant,
}

/// How an opened attempt ended before commit.
pub enum Opening {
    /// A success head: commit to it (boxed: it holds the connection).
    Ready(Box<Opened>),
    /// A final answer made without committing (the provider's verdict on the client's
    /// request, relayed as it is).
    Answer(Response<ResBody>),
    /// A refusal with a fallback route (context window, content policy): the answer to give
    /// when the model configures none.
    Refused(FallbackReason, Box<Result<Response<ResBody>, GatewayError>>),
}

/// Send `call` to `model`'s provider and read the response head within the connect and
/// first-byte timeouts. An error status is mapped here (and counted against the deployment
/// when it is the deployment's fault); a success head is returned unread.
pub async fn open(
    state: &Rc<ShardState>,
    ctx: &RequestCtx,
    mut attempt: Attempt,
    timeouts: Timeouts,
    call: &Call,
) -> Result<Opening, GatewayError> {
    let pool = state
        .pools
        .get(attempt.provider)
        .and_then(Clone::clone)
        .ok_or_else(|| GatewayError::internal("No connection pool for this provider."))?;
    let target = state
        .targets
        .get(attempt.provider)
        .and_then(Option::as_ref)
        .ok_or_else(|| GatewayError::internal("No request target for this provider."))?;
    let (origin, absolute) = call.uris.as_ref().unwrap_or(&target.chat);
    ctx.provider.set(Some(attempt.provider));
    let build = |h2: bool| {
        let mut req = Request::new(call.body.clone());
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

    let started = attempt.started;
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
    if sent.response.status().is_success() {
        return Ok(Opening::Ready(Box::new(Opened {
            attempt,
            response: sent.response,
            conn: sent.conn,
            timeouts,
            deadline,
        })));
    }
    let (parts, incoming) = sent.response.into_parts();
    let body = read_all(incoming, timeouts.idle, deadline, MAX_ERROR_BYTES).await;
    ctx.add_upstream(started.elapsed());
    if body.is_ok() {
        sent.conn.release();
    }
    let code = parts.status.as_u16();
    let body = body.ok();
    let reason = body
        .as_deref()
        .and_then(|b| fallback_reason(parts.status, b));
    let (verdict, outcome) = refusal(
        &call.answer,
        parts.status,
        &parts.headers,
        body,
        &state.redactor,
    );
    attempt.record(code, None, outcome);
    let answer = match verdict {
        Refusal::Relay(body) => {
            let mut res = Response::new(ResBody::full(body));
            *res.status_mut() = parts.status;
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(res)
        }
        Refusal::Error(err) => Err(err),
    };
    match (reason, answer) {
        (Some(reason), answer) => Ok(Opening::Refused(reason, Box::new(answer))),
        (None, Ok(res)) => Ok(Opening::Answer(res)),
        (None, Err(err)) => Err(err),
    }
}

impl Opened {
    /// Commit to this attempt: a stream is relayed from here on (a failure now ends it with
    /// one error event); a whole answer is read and converted first.
    pub async fn commit(
        self,
        state: &Rc<ShardState>,
        ctx: &RequestCtx,
        call: &Call,
    ) -> Result<Response<ResBody>, GatewayError> {
        let Opened {
            attempt,
            response,
            conn,
            timeouts,
            deadline,
        } = self;
        let (parts, incoming) = response.into_parts();
        let event_stream = parts
            .headers
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        if call.stream && event_stream {
            ctx.add_upstream(attempt.ttfb);
            let relay = Relay {
                attempt,
                upstream: Some(incoming),
                conn: Some(conn),
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
        ctx.add_upstream(attempt.started.elapsed());
        let status = parts.status.as_u16();
        let bytes = match answer {
            Ok(bytes) => {
                conn.release();
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
}
