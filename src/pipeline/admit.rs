//! The admit and settle phases: who calls (a virtual key), whether the key may use the model,
//! and whether every limit and budget that applies (the key's, its team's, the end user's,
//! the model's, the global ones) has room. Admission takes from this shard's leases, with no
//! store and no other thread on the way; when a lease runs dry the shard asks the budgeter
//! and waits, bounded by `limits.wait_ms`. What a request reserved is settled exactly once,
//! with its real usage and cost, when the last part of it (the streamed body included) is
//! done: see [`Tab`].

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::context::RequestCtx;
use super::state::ShardState;
use crate::DeploymentIdx;
use crate::api::Usage;
use crate::auth::table::{KeyRecord, Verdict};
use crate::auth::{AuthError, Credential};
use crate::budget::Cost;
use crate::budget::book::Spent;
use crate::budget::lease::{Actual, Admit, Quota, Refusal, Ticket, Want};
use crate::budget::meter::{Measure, MeterKey, Period, Scope};
use crate::budget::pricing::Price;
use crate::budget::spec::LimitSpec;
use crate::config::{Config, ModelRoute};
use crate::error::{ErrorKind, GatewayError};
use crate::routing::plan::Needs;

/// `x-api-key`: the Anthropic SDK's way to send a key (accepted on every route).
pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Wall-clock unix milliseconds: calendar periods (days, months) need real time.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Who calls: `Ok(None)` when the gateway is open (no `[auth]`), else the key's (or the
/// token subject's) record, or 401. The messages never quote what was presented.
///
/// The credential is `Authorization: Bearer <key or JWT>`, else `x-api-key`. A virtual key
/// costs one SHA-256 and one probe of the shard's key table; a JWT is verified once and then
/// found in the shard's cache by its hash until it expires.
pub fn authenticate(
    state: &ShardState,
    headers: &HeaderMap,
    now_ms: u64,
) -> Result<Option<Arc<KeyRecord>>, GatewayError> {
    let Some(auth) = &state.config.auth else {
        return Ok(None);
    };
    let header = headers
        .get(AUTHORIZATION)
        .or_else(|| headers.get(&X_API_KEY))
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let presented = match crate::auth::credential(header) {
        Ok(c) => c,
        Err(AuthError::Missing) => {
            return Err(unauthorized(
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>` \
                 (or `x-api-key: <key>`).",
            ));
        }
        Err(_) => {
            return Err(unauthorized(
                "The credential is neither an API key nor a bearer token.",
            ));
        }
    };
    match presented {
        Credential::Key(key) => match state.keys.borrow().check(key, now_ms) {
            Verdict::Valid(record) => Ok(Some(record.clone())),
            Verdict::Unknown => Err(unauthorized("Incorrect API key provided.")),
            Verdict::Revoked => Err(unauthorized("This API key has been revoked.")),
            Verdict::Expired => Err(unauthorized("This API key has expired.")),
        },
        Credential::Jwt(token) => {
            let Some(jwt) = &auth.jwt else {
                return Err(unauthorized("Incorrect API key provided."));
            };
            let mut cache = state.jwt_cache.borrow_mut();
            if let Some(record) = cache.get(token, now_ms) {
                return Ok(Some(record.clone()));
            }
            let mut record = jwt.verifier.verify(token, now_ms).map_err(|e| {
                GatewayError::new(
                    ErrorKind::Unauthorized,
                    format!("The bearer token was refused: {e}."),
                )
            })?;
            if !jwt.limits.is_empty() {
                Arc::make_mut(&mut record).limits = jwt.limits;
            }
            if let Some(exp) = record.expires_at_ms {
                cache.insert(token, record.clone(), exp, now_ms);
            }
            Ok(Some(record))
        }
    }
}

fn unauthorized(message: &'static str) -> GatewayError {
    GatewayError::new(ErrorKind::Unauthorized, message)
}

/// What admission reads from a decoded request.
pub struct Admission<'a> {
    /// The key, when auth is on.
    pub caller: Option<&'a Arc<KeyRecord>>,
    /// The model as the client named it.
    pub public: &'a str,
    /// Its route.
    pub model: &'a ModelRoute,
    /// Request body bytes (the prompt's size).
    pub body_len: usize,
    /// `max_tokens` (or `max_completion_tokens`), if set.
    pub max_tokens: Option<u64>,
    /// The end user (the body's `user`, else the configured header).
    pub user: Option<&'a str>,
}

/// Admit a request, or refuse it (403, 429 with `Retry-After`). On success the request's
/// [`Tab`] is in `ctx` (settled when the request is done) and the tightest per-minute
/// quotas are there for the `x-ratelimit-*` headers. Returns the cheaper model to serve
/// instead when a budget of the request is past its `restrict` threshold and the model has
/// a downgrade.
pub async fn admit(
    state: &Rc<ShardState>,
    ctx: &RequestCtx,
    a: &Admission<'_>,
) -> Result<Option<Arc<ModelRoute>>, GatewayError> {
    if let Some(key) = a.caller
        && !key.allows(a.public)
    {
        return Err(GatewayError::new(
            ErrorKind::Forbidden,
            format!("The key `{}` may not use the model `{}`.", key.id, a.public),
        ));
    }
    let mut wants = wants(&state.config, a)?;
    if wants.is_empty() && a.caller.is_none() {
        return Ok(None);
    }
    let downgrade = apply_actions(state, a, &mut wants)?;
    let deadline = std::time::Instant::now() + state.config.limits.wait;
    loop {
        let now = now_ms();
        let verdict = state.leases.borrow_mut().admit(&wants, now);
        match verdict {
            Admit::Admitted(ticket) => {
                state.metrics.admitted.inc();
                ctx.set_quota(quota_of(state, &wants, now));
                let user = user_scope(&wants).or_else(|| a.user.map(Arc::from));
                let tab = Tab::new(state, ticket, a, user);
                let _ = ctx.tab.set(Rc::new(tab));
                return Ok(downgrade);
            }
            Admit::Refused(refusal) => {
                ctx.set_quota(quota_of(state, &wants, now));
                state.metrics.limit_refusals[scope_index(&refusal.key.scope)]
                    [measure_index(refusal.key.measure)]
                .inc();
                return Err(refused(&refusal));
            }
            Admit::Wait => {
                state.flush_budget();
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero()
                    || crate::shard::timeout(left, state.lease_pulse.wait())
                        .await
                        .is_err()
                {
                    state.metrics.limit_wait_timeouts.inc();
                    let now = now_ms();
                    ctx.set_quota(quota_of(state, &wants, now));
                    return Err(starved(state, &wants, now));
                }
            }
        }
    }
}

/// Apply the budget actions in force on the request's scopes: `block` refuses it, `throttle`
/// lowers its per-minute request limits, `restrict` names the cheaper model to serve.
fn apply_actions(
    state: &ShardState,
    a: &Admission<'_>,
    wants: &mut [Want],
) -> Result<Option<Arc<ModelRoute>>, GatewayError> {
    let actions = state.actions.borrow();
    if actions.is_empty() {
        return Ok(None);
    }
    let in_force = |scope: &Scope| actions.get(scope).copied();
    let strongest = wants
        .iter()
        .filter_map(|w| in_force(&w.key.scope).map(|act| (act, w.key.scope.clone())))
        .max_by_key(|(act, _)| *act);
    let Some((action, scope)) = strongest else {
        return Ok(None);
    };
    let limits = &state.config.limits;
    let fx = crate::budget::policy::effects(Some(action), limits.throttle_percent);
    if fx.block {
        return Err(GatewayError::new(
            ErrorKind::BudgetExceeded,
            format!(
                "The budget of {} has reached its block threshold; requests are refused until \
                 it resets.",
                scope_text(&scope)
            ),
        )
        .with_retry_after(Duration::from_secs(60)));
    }
    if fx.throttle_factor_percent < 100 {
        for w in wants.iter_mut() {
            if w.key.measure == Measure::Requests && in_force(&w.key.scope).is_some() {
                let scaled = w
                    .limit
                    .max
                    .saturating_mul(u64::from(fx.throttle_factor_percent))
                    / 100;
                w.limit.max = scaled.max(1);
            }
        }
    }
    if fx.restrict
        && let Some(target) = limits.downgrades.target(a.public)
    {
        return Ok(state.config.model(target).cloned());
    }
    Ok(None)
}

/// The end user's id as the request's user meter carries it (shared, not copied again), if
/// per-user limits are configured.
fn user_scope(wants: &[Want]) -> Option<Arc<str>> {
    wants.iter().find_map(|w| match &w.key.scope {
        Scope::User(u) => Some(u.clone()),
        _ => None,
    })
}

/// Every meter the request must pass, with what it reserves on each (public for
/// `benches/tenancy.rs`).
pub fn wants(config: &Config, a: &Admission<'_>) -> Result<Vec<Want>, GatewayError> {
    let limits = &config.limits;
    let prompt = u64::try_from(a.body_len / 4).unwrap_or(u64::MAX);
    let output = a
        .max_tokens
        .unwrap_or(u64::from(limits.output_estimate_tokens));
    let price = max_price(config, a.model);
    // The spend estimate, once: `None` for a model without a price (no budget blocks it),
    // `Some(None)` for a hard budget without `max_tokens` (its worst case is unknown).
    let spend = price.map(|p| {
        let (input, output) = if limits.hard_budgets {
            // The worst case: every byte of the body a token, every allowed output token.
            (u64::try_from(a.body_len).unwrap_or(u64::MAX), a.max_tokens)
        } else {
            (prompt, Some(output))
        };
        output.map(|output| {
            p.cost(&Usage {
                input_tokens: input,
                output_tokens: output,
                ..Usage::default()
            })
            .0
        })
    });
    let mut out = Vec::new();
    let mut add =
        |scope: Scope, specs: &mut dyn Iterator<Item = LimitSpec>| -> Result<(), GatewayError> {
            for s in specs {
                let amount = match s.measure {
                    Measure::Requests | Measure::Concurrent => 1,
                    Measure::Tokens => prompt.saturating_add(output),
                    Measure::Spend => match spend {
                        None => continue,
                        Some(None) => {
                            return Err(GatewayError::bad_request(
                                "This request falls under a hard budget: set `max_tokens` so its \
                                 worst-case cost is known.",
                            ));
                        }
                        Some(Some(amount)) => amount,
                    },
                };
                out.push(Want {
                    key: MeterKey {
                        scope: scope.clone(),
                        measure: s.measure,
                        period: s.period,
                    },
                    limit: s.limit,
                    amount,
                });
            }
            Ok(())
        };
    if let Some(key) = a.caller {
        let scope = Scope::Key(key.id.clone());
        if key.limits.is_empty() {
            add(scope, &mut limits.per_key.iter().copied())?;
        } else {
            add(scope, &mut key.limits.each(limits.exact))?;
        }
        if let Some(team) = &key.team
            && let Some(specs) = limits.teams.get(team)
        {
            add(Scope::Team(team.clone()), &mut specs.iter().copied())?;
        }
    }
    if let Some(user) = a.user
        && !limits.users.is_empty()
    {
        add(
            Scope::User(Arc::from(user)),
            &mut limits.users.iter().copied(),
        )?;
    }
    if let Some(specs) = limits.models.get(a.model.idx().get())
        && !specs.is_empty()
    {
        add(
            Scope::Model(a.model.public.0.clone()),
            &mut specs.iter().copied(),
        )?;
    }
    add(Scope::Global, &mut limits.global.iter().copied())?;
    Ok(out)
}

/// The highest price of each kind over every deployment the request may reach (the model's
/// and its fallbacks'): an estimate that settlement corrects, and the worst case for hard
/// budgets. `None` when no deployment has a price.
fn max_price(config: &Config, route: &ModelRoute) -> Option<Price> {
    let routes = std::iter::once(route).chain(
        route
            .fallbacks
            .iter()
            .filter_map(|m| config.model_at(*m).map(|r| &**r)),
    );
    routes
        .flat_map(|r| r.deployments.iter())
        .filter_map(|d| config.deployment(*d).and_then(|d| d.price))
        .reduce(|a, b| Price {
            input: a.input.max(b.input),
            cached_input: a.cached_input.max(b.cached_input),
            output: a.output.max(b.output),
        })
}

/// The 429 for an admission that waited its whole `wait_ms` for a share of a nearly used-up
/// limit: it names the first meter this shard is short on.
fn starved(state: &ShardState, wants: &[Want], now: u64) -> GatewayError {
    let leases = state.leases.borrow();
    // The quota counts the ledger's unleased remainder too, so a meter may look fine and
    // still be the one this shard waits for: then name a budget if there is one.
    let short = wants
        .iter()
        .find(|w| {
            leases
                .quota(&w.key, now)
                .is_none_or(|q| q.remaining < w.amount)
        })
        .or_else(|| wants.iter().find(|w| w.key.measure == Measure::Spend))
        .or(wants.first());
    let (kind, what) = match short.map(|w| (&w.key.scope, w.key.measure)) {
        Some((scope, Measure::Spend)) => (
            ErrorKind::BudgetExceeded,
            format!("The budget of {}", scope_text(scope)),
        ),
        Some((scope, m)) => (
            ErrorKind::RateLimited,
            format!("The {} limit of {}", m.as_str(), scope_text(scope)),
        ),
        None => (ErrorKind::RateLimited, "A limit of this request".to_owned()),
    };
    GatewayError::new(
        kind,
        format!(
            "{what} is nearly used up and no share of it came free in time. Try again shortly."
        ),
    )
    .with_retry_after(Duration::from_secs(1))
}

/// How a refusal names a scope (a key by its id, never its secret).
fn scope_text(scope: &Scope) -> String {
    match scope {
        Scope::Global => "the gateway".to_owned(),
        Scope::Key(id) => format!("key `{id}`"),
        Scope::Team(t) => format!("team `{t}`"),
        Scope::User(u) => format!("user `{u}`"),
        Scope::Model(m) => format!("model `{m}`"),
        Scope::Deployment(d) => format!("deployment `{d}`"),
    }
}

/// A scope's index in `metrics::labels::LIMIT_SCOPES`.
fn scope_index(s: &Scope) -> usize {
    match s {
        Scope::Global => 0,
        Scope::Key(_) => 1,
        Scope::Team(_) => 2,
        Scope::User(_) => 3,
        Scope::Model(_) => 4,
        Scope::Deployment(_) => 5,
    }
}

/// A measure's index in `metrics::labels::LIMIT_MEASURES`.
fn measure_index(m: Measure) -> usize {
    match m {
        Measure::Requests => 0,
        Measure::Tokens => 1,
        Measure::Concurrent => 2,
        Measure::Spend => 3,
    }
}

/// The 429 for a refusal, naming the scope and the limit (never a key's secret).
fn refused(r: &Refusal) -> GatewayError {
    let scope = scope_text(&r.key.scope);
    let per = match r.key.period {
        Period::Minute => "per minute",
        Period::Day => "per day",
        Period::Month => "per month",
        Period::Total => "in all",
    };
    let retry = Duration::from_millis(r.retry_after_ms.max(1000));
    let (kind, message) = match r.key.measure {
        Measure::Spend => (
            ErrorKind::BudgetExceeded,
            format!(
                "The budget of {scope} is used up: ${:.2} {per}. It resets in {}.",
                Cost(r.max).usd(),
                reset_text(r.retry_after_ms),
            ),
        ),
        Measure::Concurrent => (
            ErrorKind::RateLimited,
            format!(
                "Too many requests in flight for {scope}: the limit is {}. Try again when one \
                 ends.",
                r.max
            ),
        ),
        m => (
            ErrorKind::RateLimited,
            format!(
                "Rate limit reached for {scope}: {} {} {per}. Try again in {}.",
                r.max,
                m.as_str(),
                reset_text(r.retry_after_ms),
            ),
        ),
    };
    GatewayError::new(kind, message).with_retry_after(retry)
}

/// OpenAI's duration form for `x-ratelimit-reset-*`: `20ms`, `7s`, `6m0s`, `2h3m0s`.
pub fn reset_text(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms.div_ceil(1000);
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// The per-minute quotas of the tightest request and token meters of the request.
fn quota_of(state: &ShardState, wants: &[Want], now: u64) -> Quotas {
    let leases = state.leases.borrow();
    let tightest = |measure: Measure| {
        wants
            .iter()
            .filter(|w| w.key.measure == measure && w.key.period == Period::Minute)
            .filter_map(|w| leases.quota(&w.key, now))
            .min_by_key(|q| q.remaining)
    };
    Quotas {
        requests: tightest(Measure::Requests),
        tokens: tightest(Measure::Tokens),
        now,
    }
}

/// The quotas a response reports in its `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quotas {
    /// Requests per minute.
    pub requests: Option<Quota>,
    /// Tokens per minute.
    pub tokens: Option<Quota>,
    /// When they were read (unix ms).
    pub now: u64,
}

impl Quotas {
    /// Add `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` to `headers`.
    pub fn stamp(&self, headers: &mut HeaderMap) {
        for (q, names) in [
            (self.requests, &REQUEST_HEADERS),
            (self.tokens, &TOKEN_HEADERS),
        ] {
            let Some(q) = q else { continue };
            headers.insert(names[0].clone(), HeaderValue::from(q.max));
            headers.insert(names[1].clone(), HeaderValue::from(q.remaining));
            let reset = reset_text(q.reset_ms.saturating_sub(self.now));
            if let Ok(v) = HeaderValue::from_str(&reset) {
                headers.insert(names[2].clone(), v);
            }
        }
    }
}

static REQUEST_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
static TOKEN_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

/// What one admitted request runs up: its reservation, and the usage and cost of every
/// attempt that reported any. Shared (`Rc`) by the request and each attempt; when the last
/// holder is done (the streamed body included) it settles the reservation with the real
/// figures. Settling exactly once is the type's job: the ticket is taken out once, on drop.
pub struct Tab {
    state: Rc<ShardState>,
    ticket: RefCell<Option<Ticket>>,
    key: Option<Arc<KeyRecord>>,
    user: Option<Arc<str>>,
    model: Arc<str>,
    input: Cell<u64>,
    output: Cell<u64>,
    spend: Cell<u64>,
}

impl Tab {
    fn new(
        state: &Rc<ShardState>,
        ticket: Ticket,
        a: &Admission<'_>,
        user: Option<Arc<str>>,
    ) -> Self {
        Self {
            state: state.clone(),
            ticket: RefCell::new(Some(ticket)),
            key: a.caller.cloned(),
            user,
            model: a.model.public.0.clone(),
            input: Cell::new(0),
            output: Cell::new(0),
            spend: Cell::new(0),
        }
    }

    /// Add an attempt's usage and cost.
    pub fn charge(&self, usage: &Usage, cost: Option<Cost>) {
        self.input
            .set(self.input.get().saturating_add(usage.input_tokens));
        self.output
            .set(self.output.get().saturating_add(usage.output_tokens));
        if let Some(c) = cost {
            self.spend.set(self.spend.get().saturating_add(c.0));
        }
    }
}

impl std::fmt::Debug for Tab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tab")
            .field("input", &self.input.get())
            .field("output", &self.output.get())
            .field("spend", &self.spend.get())
            .finish_non_exhaustive()
    }
}

impl Drop for Tab {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.get_mut().take() else {
            return;
        };
        let now = now_ms();
        let (input, output, spend) = (self.input.get(), self.output.get(), self.spend.get());
        self.state.spent(Spent {
            key: self.key.as_ref().map(|k| k.id.clone()),
            team: self.key.as_ref().and_then(|k| k.team.clone()),
            user: self.user.take(),
            model: self.model.clone(),
            nano_usd: spend,
            input_tokens: input,
            output_tokens: output,
            requests: 1,
            at_ms: now,
        });
        let actual = Actual {
            tokens: input.saturating_add(output),
            spend,
        };
        match self.state.leases.try_borrow_mut() {
            Ok(mut leases) => leases.settle(ticket, actual, now),
            Err(_) => {
                // Never happens: no code holds the leases across a drop of a request.
                tracing::error!("Leases busy at settlement; the reservation is lost.");
            }
        }
    }
}

/// A deployment's reservation for one attempt, against the deployment's own limits
/// (`[limits.deployments]`): settled once, with that attempt's usage, when the attempt ends.
pub struct Hold {
    state: Rc<ShardState>,
    ticket: Option<Ticket>,
    tokens: Cell<u64>,
}

impl Hold {
    /// Add the attempt's usage.
    pub fn charge(&self, usage: &Usage) {
        let t = usage.input_tokens.saturating_add(usage.output_tokens);
        self.tokens.set(self.tokens.get().saturating_add(t));
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let actual = Actual {
            tokens: self.tokens.get(),
            spend: 0,
        };
        if let Ok(mut leases) = self.state.leases.try_borrow_mut() {
            leases.settle(ticket, actual, now_ms());
        }
    }
}

/// Why an attempt at a deployment was not admitted by the deployment's own limits.
#[derive(Debug)]
pub enum Held {
    /// Its lease is dry: the budgeter was asked for more.
    Dry,
    /// A limit is reached.
    Refused(Refusal),
}

/// Reserve an attempt at deployment `d` against its own limits: `Ok(None)` when it has none.
/// Never waits: a deployment at its limit is passed over for the plan's next one.
pub fn hold(state: &Rc<ShardState>, d: DeploymentIdx, needs: &Needs) -> Result<Option<Hold>, Held> {
    let Some(specs) = state.config.limits.deployments.get(d.get()) else {
        return Ok(None);
    };
    if specs.is_empty() {
        return Ok(None);
    }
    let Some(dep) = state.config.deployments.get(d.get()) else {
        return Ok(None);
    };
    let output = needs
        .max_tokens
        .unwrap_or(u64::from(state.config.limits.output_estimate_tokens));
    let tokens = u64::from(needs.prompt_tokens).saturating_add(output);
    let scope = Scope::Deployment(dep.id.0.clone());
    let wants: Vec<Want> = specs
        .iter()
        .map(|s| Want {
            key: MeterKey {
                scope: scope.clone(),
                measure: s.measure,
                period: s.period,
            },
            limit: s.limit,
            amount: if s.measure == Measure::Tokens {
                tokens
            } else {
                1
            },
        })
        .collect();
    let verdict = state.leases.borrow_mut().admit(&wants, now_ms());
    match verdict {
        Admit::Admitted(ticket) => Ok(Some(Hold {
            state: state.clone(),
            ticket: Some(ticket),
            tokens: Cell::new(0),
        })),
        Admit::Refused(r) => {
            state.metrics.limit_refusals[scope_index(&r.key.scope)][measure_index(r.key.measure)]
                .inc();
            Err(Held::Refused(r))
        }
        Admit::Wait => {
            state.flush_budget();
            Err(Held::Dry)
        }
    }
}

/// The 429 when every deployment of a plan was at its own limit: the soonest reset.
pub fn deployments_limited(refusals: &[Refusal]) -> GatewayError {
    let soonest = refusals
        .iter()
        .map(|r| r.retry_after_ms)
        .min()
        .unwrap_or(1000);
    GatewayError::new(
        ErrorKind::RateLimited,
        format!(
            "Every deployment of this model is at its rate limit. Try again in {}.",
            reset_text(soonest)
        ),
    )
    .with_retry_after(Duration::from_millis(soonest.max(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_reads_like_openai() {
        assert_eq!(reset_text(20), "20ms");
        assert_eq!(reset_text(1000), "1s");
        assert_eq!(reset_text(6_400), "7s");
        assert_eq!(reset_text(360_000), "6m0s");
        assert_eq!(reset_text(7_380_000), "2h3m0s");
    }
}
