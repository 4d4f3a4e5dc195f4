//! The plan and attempts phases: ask the router for a plan, then try its steps in order until
//! one answers. Retries and failover happen only before the first byte reaches the client:
//! a stream is committed at its response head, a whole answer once it is read. Between
//! attempts: backoff with full jitter, the shard's retry budget, the request's deadline, and
//! `Retry-After` (the limited deployment is left alone until then).

use std::rc::Rc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{HeaderName, Response};

use super::admit::Held;
use super::attempt::{Attempt, Opening, open};
use super::body::ResBody;
use super::context::RequestCtx;
use super::state::ShardState;
use crate::budget::lease::Refusal;
use crate::config::{Deployment, ProviderConfig};
use crate::error::{ErrorKind, GatewayError, RetryPolicy};
use crate::metrics::ModelMetrics;
use crate::providers::call::{Call, FallbackReason};
use crate::routing::plan::{Needs, Plan};
use crate::shard;
use crate::{DeploymentIdx, ModelIdx};

/// `x-shardgate-deployment`: the deployment that answered (and, on requests where the model
/// allows it, the deployments the client pins, comma-separated).
pub static X_DEPLOYMENT: HeaderName = HeaderName::from_static("x-shardgate-deployment");
/// `x-shardgate-attempts`: how many attempts the answer took.
pub static X_ATTEMPTS: HeaderName = HeaderName::from_static("x-shardgate-attempts");

/// The deployment one attempt goes to, for the model it serves.
pub struct Served<'a> {
    /// The model name the client used.
    pub public: &'a str,
    /// The model the attempt serves (the asked one or a fallback).
    pub model: ModelIdx,
    /// The deployment.
    pub deployment: DeploymentIdx,
    /// Its config.
    pub dep: &'a Deployment,
    /// Its provider.
    pub provider: &'a ProviderConfig,
    /// What the request runs up (its usage and cost are added to it), once admitted.
    pub tab: Option<&'a Rc<super::admit::Tab>>,
}

/// What one attempt sends.
pub enum Prepared {
    /// A call to an upstream.
    Upstream(Call),
    /// An answer made on the shard (the in-process mock).
    Local(Response<ResBody>),
}

/// Plan `model`'s attempts for `needs` and run them; `prepare` builds each attempt's call.
pub async fn run(
    state: &Rc<ShardState>,
    ctx: &RequestCtx,
    public: &str,
    model: ModelIdx,
    needs: &Needs<'_>,
    mut prepare: impl FnMut(&Served) -> Result<Prepared, GatewayError>,
) -> Result<Response<ResBody>, GatewayError> {
    let routing = &state.config.routing;
    let started = Instant::now();
    let deadline = started + routing.request_timeout;
    let mut plan = plan_or_wait(state, model, needs, deadline).await?;
    state.retry_budget.borrow_mut().on_request(started);
    let mut failures: Vec<(DeploymentIdx, GatewayError)> = Vec::new();
    let mut tries = 0u32;
    let mut rerouted: Vec<FallbackReason> = Vec::new();
    let mut next = 0;
    // Deployments passed over for their own limits, and when a dry one may be waited for.
    let mut limited: Vec<Refusal> = Vec::new();
    let mut dry = false;
    let limit_wait_until = started + state.config.limits.wait;
    loop {
        let Some(&step) = plan.steps.get(next) else {
            // Every step passed over for a deployment's own limits, none tried: wait for a
            // lease refill (bounded) and go over the plan again.
            if tries == 0 && dry && wait_for_leases(state, limit_wait_until).await {
                (next, dry) = (0, false);
                limited.clear();
                continue;
            }
            break;
        };
        next += 1;
        if tries >= routing.max_attempts {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if tries > 0 {
            if !state.retry_budget.borrow_mut().try_retry(now) {
                state.metrics.retry_budget_refused.inc();
                break;
            }
            let random = state.router.borrow_mut().random();
            let wait = routing
                .backoff
                .delay(tries, random)
                .min(deadline.saturating_duration_since(now));
            if !wait.is_zero() {
                shard::sleep(wait).await;
            }
            state.metrics.retries.inc();
        }
        let config = &state.config;
        let Some(dep) = config.deployments.get(step.deployment.get()) else {
            continue;
        };
        let Some(provider) = config.providers.get(dep.provider.get()) else {
            continue;
        };
        let hold = match super::admit::hold(state, step.deployment, needs) {
            Ok(hold) => hold,
            Err(Held::Dry) => {
                dry = true;
                continue;
            }
            Err(Held::Refused(r)) => {
                limited.push(r);
                continue;
            }
        };
        let served = Served {
            public,
            model: step.model,
            deployment: step.deployment,
            dep,
            provider,
            tab: ctx.tab.get(),
        };
        let call = match prepare(&served)? {
            Prepared::Upstream(call) => call,
            // The in-process mock answers on the shard and keeps its own books.
            Prepared::Local(res) => return Ok(answered(res, dep, tries + 1)),
        };
        let Some(probe) = state
            .router
            .borrow_mut()
            .start(step.deployment, Instant::now())
        else {
            continue; // a half-open probe is already out
        };
        tries += 1;
        let attempt = Attempt::start(state, step.model, step.deployment, probe, needs.stream)
            .with_tab(ctx.tab.get().cloned())
            .with_hold(hold);
        let result = match open(state, ctx, attempt, dep.timeouts, &call).await {
            Ok(Opening::Ready(opened)) => opened.commit(state, ctx, &call).await,
            Ok(Opening::Answer(res)) => Ok(res),
            Ok(Opening::Refused(reason, answer)) => {
                // The request itself was refused (too long, or by content policy): go on to
                // the models configured for that, once; without any, the refusal stands.
                let routes = state.config.models.get(model.get()).map(|r| match reason {
                    FallbackReason::ContextWindow => r.context_window_fallbacks.clone(),
                    FallbackReason::ContentPolicy => r.content_policy_fallbacks.clone(),
                });
                let routes = routes.unwrap_or_default();
                if routes.is_empty() || rerouted.contains(&reason) {
                    return (*answer).map(|res| answered(res, dep, tries));
                }
                rerouted.push(reason);
                plan.steps.truncate(next);
                let mut router = state.router.borrow_mut();
                for m in routes {
                    router.extend(&mut plan, m, needs, Instant::now());
                }
                state.metrics.fallbacks.inc();
                continue;
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(res) => return Ok(answered(res, dep, tries)),
            Err(e) => {
                if let Some(after) = e.retry_after()
                    && e.kind() == ErrorKind::UpstreamStatus(429)
                {
                    let until = Instant::now() + after.min(routing.backoff.retry_after_cap);
                    if let Some(live) = state.router.borrow_mut().live_mut(step.deployment) {
                        live.not_before = Some(until);
                    }
                }
                let retry = e.retry() == RetryPolicy::Retry;
                failures.push((step.deployment, e));
                if !retry {
                    break;
                }
            }
        }
    }
    if tries == 0 && (dry || !limited.is_empty()) {
        return Err(super::admit::deployments_limited(&limited));
    }
    Err(all_failed(state, failures, tries))
}

/// Wait for the budgeter's next grant, until `until`: whether there is time left to look.
async fn wait_for_leases(state: &ShardState, until: Instant) -> bool {
    let left = until.saturating_duration_since(Instant::now());
    !left.is_zero() && shard::timeout(left, state.lease_pulse.wait()).await.is_ok()
}

/// A plan, or, when every deployment is busy or cooling down, a bounded wait for one.
async fn plan_or_wait(
    state: &Rc<ShardState>,
    model: ModelIdx,
    needs: &Needs<'_>,
    deadline: Instant,
) -> Result<Plan, GatewayError> {
    let plan = state.router.borrow_mut().plan(model, needs, Instant::now());
    if !plan.steps.is_empty() {
        return Ok(plan);
    }
    let route = state.config.models.get(model.get());
    let (queue_max, queue_timeout) =
        route.map_or((0, Duration::ZERO), |r| (r.queue_max, r.queue_timeout));
    let refuse = |retry_after: Duration| {
        GatewayError::new(
            ErrorKind::NoProvider,
            "Every deployment of this model is busy or cooling down; retry later.",
        )
        .with_retry_after(retry_after.max(Duration::from_secs(1)))
    };
    let Some(m) = state.metrics.models.get(model.get()) else {
        return Err(refuse(queue_timeout));
    };
    let until = (Instant::now() + queue_timeout).min(deadline);
    let full = !plan.waitable || queue_max == 0 || m.queued.get() >= i64::from(queue_max);
    // Rate limited upstream for longer than the queue would wait: say so now.
    if full || plan.retry_at.is_some_and(|at| at > until) {
        m.queue_refused.inc();
        return Err(limited(&plan).unwrap_or_else(|| refuse(queue_timeout)));
    }
    // Wait in the model's bounded queue: poll the router every few ms until a deployment
    // frees up, the queue timeout passes, or the request's deadline does. The gauge is the
    // queue's count; a dropped request (client gone) leaves through the guard.
    let waiting = Queued::enter(m);
    let result = loop {
        shard::sleep(QUEUE_POLL).await;
        let now = Instant::now();
        let plan = state.router.borrow_mut().plan(model, needs, now);
        if !plan.steps.is_empty() {
            break Ok(plan);
        }
        if now >= until {
            m.queue_refused.inc();
            break Err(refuse(queue_timeout));
        }
    };
    drop(waiting);
    result
}

/// A request's place in a model's queue: counted in on entry, out (with its wait) on drop.
struct Queued<'a> {
    model: &'a ModelMetrics,
    since: Instant,
}

impl<'a> Queued<'a> {
    fn enter(model: &'a ModelMetrics) -> Self {
        model.queued.inc();
        Self {
            model,
            since: Instant::now(),
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.model.queued.dec();
        self.model.queue_wait.observe(self.since.elapsed());
    }
}

/// A 429 with the remaining `Retry-After` when the plan is empty because the model's
/// deployments asked to be left alone for a while.
fn limited(plan: &Plan) -> Option<GatewayError> {
    let at = plan.retry_at?;
    let left = at.saturating_duration_since(Instant::now());
    Some(
        GatewayError::new(
            ErrorKind::RateLimited,
            "The upstream provider is rate limiting requests; retry later.",
        )
        .with_retry_after(Duration::from_secs(
            left.as_secs_f64().ceil().max(1.0) as u64
        )),
    )
}

/// How often a queued request looks for a free deployment.
const QUEUE_POLL: Duration = Duration::from_millis(5);

/// Stamp the routing headers on an answer.
fn answered(mut res: Response<ResBody>, dep: &Deployment, tries: u32) -> Response<ResBody> {
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(dep.id.as_str()) {
        h.insert(X_DEPLOYMENT.clone(), v);
    }
    h.insert(X_ATTEMPTS.clone(), HeaderValue::from(tries));
    res
}

/// The error when no attempt answered: the last attempt's, but a 429 only if every attempt
/// was rate limited; every attempt is logged in one line.
fn all_failed(
    state: &ShardState,
    mut failures: Vec<(DeploymentIdx, GatewayError)>,
    tries: u32,
) -> GatewayError {
    if failures.len() > 1 {
        let summary: Vec<String> = failures
            .iter()
            .map(|(d, e)| {
                let id = state
                    .config
                    .deployments
                    .get(d.get())
                    .map_or("?", |dep| dep.id.as_str());
                format!("{id}: {}", e.kind().as_str())
            })
            .collect();
        tracing::debug!(attempts = tries, failures = %summary.join(", "), "Every attempt failed.");
    }
    let all_429 = !failures.is_empty()
        && failures
            .iter()
            .all(|(_, e)| e.kind() == ErrorKind::UpstreamStatus(429));
    match failures.pop() {
        Some((_, e)) if e.kind() != ErrorKind::UpstreamStatus(429) || all_429 => e,
        Some((_, e)) => GatewayError::new(
            ErrorKind::UpstreamStatus(502),
            "Every deployment of this model failed; the last was rate limited.",
        )
        .with_cause(e),
        None => GatewayError::new(
            ErrorKind::NoProvider,
            "No deployment of this model can take the request now; retry later.",
        )
        .with_retry_after(Duration::from_secs(1)),
    }
}
