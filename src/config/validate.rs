//! `RawConfig` → `Config`, with errors that name the path (and both sides of a reference).

use std::sync::Arc;
use std::time::Duration;

use http::Uri;

use super::raw::{
    self, RawAdmin, RawConfig, RawDeployment, RawModel, RawPrice, RawProvider, RawProviderKind,
    RawRouting,
};
use super::{
    AdminConfig, Capabilities, Config, ConfigError, Deployment, Endpoint, KeyHeader, ModelRoute,
    ProviderConfig, ProviderKind, RetryBudgetConfig, RoutingConfig, Scheme, Secret, ServerConfig,
    Timeouts, TlsFiles,
};
use crate::budget::pricing::Price;
use crate::routing::breaker::{self, BreakerConfig};
use crate::routing::retry::{self, Backoff};
use crate::{DeploymentId, DeploymentIdx, ModelId, ModelIdx, ProviderId, ProviderIdx};

/// Validate a parsed config. `env` looks up environment variables (API keys).
pub fn validate(
    raw: RawConfig,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let invalid = |path: String, message: String| ConfigError::Invalid {
        origin: origin.to_owned(),
        path,
        message,
    };
    let s = raw.server;
    let listen = s.listen.unwrap_or_else(|| raw::DEFAULT_LISTEN.to_owned());
    if !listen.contains(':') {
        return Err(invalid(
            "server.listen".into(),
            format!("expected host:port, got `{listen}`"),
        ));
    }
    let max_header_bytes = s.max_header_bytes.unwrap_or(raw::DEFAULT_MAX_HEADER_BYTES);
    if max_header_bytes < 1024 {
        return Err(invalid(
            "server.max_header_bytes".into(),
            "must be at least 1024".into(),
        ));
    }
    let max_headers = s.max_headers.unwrap_or(raw::DEFAULT_MAX_HEADERS);
    if !(8..=10_000).contains(&max_headers) {
        return Err(invalid(
            "server.max_headers".into(),
            format!("must be between 8 and 10000, got {max_headers}"),
        ));
    }
    let max_body_bytes = s.max_body_bytes.unwrap_or(raw::DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        return Err(invalid(
            "server.max_body_bytes".into(),
            "must be at least 1".into(),
        ));
    }
    let ms = |v: Option<u64>, default: u64, path: &str| -> Result<Duration, ConfigError> {
        match v.unwrap_or(default) {
            0 => Err(invalid(path.to_owned(), "must be at least 1 ms".into())),
            v => Ok(Duration::from_millis(v)),
        }
    };
    let server = ServerConfig {
        access_log: s.access_log.unwrap_or(false),
        listen,
        max_header_bytes,
        max_headers,
        max_body_bytes,
        header_timeout: ms(
            s.header_timeout_ms,
            raw::DEFAULT_HEADER_TIMEOUT_MS,
            "server.header_timeout_ms",
        )?,
        idle_timeout: ms(
            s.idle_timeout_ms,
            raw::DEFAULT_IDLE_TIMEOUT_MS,
            "server.idle_timeout_ms",
        )?,
        drain_delay: Duration::from_millis(s.drain_delay_ms.unwrap_or(raw::DEFAULT_DRAIN_DELAY_MS)),
        shutdown_grace: Duration::from_millis(
            s.shutdown_grace_ms
                .unwrap_or(raw::DEFAULT_SHUTDOWN_GRACE_MS),
        ),
        tls: s.tls.map(|t| TlsFiles {
            cert_file: t.cert_file,
            key_file: t.key_file,
        }),
    };

    let mut providers = Vec::with_capacity(raw.providers.len());
    for (id, p) in raw.providers {
        providers.push(Arc::new(provider(&id, p, &invalid, env)?));
    }

    let routing = routing(raw.routing, &invalid)?;

    // Model indices first: fallbacks may name any model, before or after their own. The
    // names come sorted (a `BTreeMap`), and `Config::models` keeps that order.
    let names: Vec<String> = raw.models.keys().cloned().collect();
    let model_idx = |name: &str| {
        let i = names.binary_search_by(|n| n.as_str().cmp(name)).ok()?;
        u32::try_from(i).ok().map(ModelIdx)
    };
    let mut registry = Registry::default();
    let mut models = Vec::with_capacity(raw.models.len());
    for (name, mut m) in raw.models {
        let path = format!("models.{name}");
        if name.is_empty() {
            return Err(invalid(path, "model names must not be empty".into()));
        }
        let Some(me) = model_idx(&name) else {
            return Err(invalid(path, "too many models".into()));
        };
        let listed = listed_deployments(&path, &name, &mut m, &invalid)?;
        let mut own: Vec<DeploymentIdx> = Vec::with_capacity(listed.len());
        for (at, raw_deployment) in listed {
            let d = deployment(&at, &name, raw_deployment, &providers, &invalid)?;
            own.push(registry.add(d, at, me, &name, &own, &invalid)?);
        }
        let fallbacks = |list: Vec<String>, field: &str| {
            fallbacks(
                list,
                &format!("{path}.{field}"),
                &name,
                me,
                &model_idx,
                &invalid,
            )
        };
        let fallbacks_main = fallbacks(m.fallbacks, "fallbacks")?;
        let context_window_fallbacks =
            fallbacks(m.context_window_fallbacks, "context_window_fallbacks")?;
        let content_policy_fallbacks =
            fallbacks(m.content_policy_fallbacks, "content_policy_fallbacks")?;
        let queue_timeout = match m.queue_timeout_ms.unwrap_or(raw::DEFAULT_QUEUE_TIMEOUT_MS) {
            0 => {
                return Err(invalid(
                    format!("{path}.queue_timeout_ms"),
                    "must be at least 1 ms (set queue_max = 0 for no queue)".into(),
                ));
            }
            v => Duration::from_millis(v),
        };
        let Some(first) = own.first().and_then(|&i| registry.list.get(i.get())) else {
            return Err(invalid(
                format!("{path}.deployments"),
                "must list at least one deployment".into(),
            ));
        };
        models.push(Arc::new(ModelRoute {
            deployment: first.id.clone(),
            provider: first.provider.get(),
            upstream_model: first.upstream_model.clone(),
            public: ModelId(name.into()),
            index: me.get(),
            deployments: own,
            strategy: m.strategy.unwrap_or_default(),
            fallbacks: fallbacks_main,
            context_window_fallbacks,
            content_policy_fallbacks,
            allow_pin: m.allow_pin.unwrap_or(false),
            queue_max: m.queue_max.unwrap_or(raw::DEFAULT_QUEUE_MAX),
            queue_timeout,
            cache_ttl: match m.cache_ttl_s {
                None => None,
                Some(0) => {
                    return Err(invalid(
                        format!("{path}.cache_ttl_s"),
                        "must be at least 1 (leave it out to not cache this model)".into(),
                    ));
                }
                Some(s) => Some(Duration::from_secs(s)),
            },
            semantic: semantic_mode(
                (m.semantic.as_deref(), m.semantic_threshold, m.cache_ttl_s),
                &path,
                &invalid,
            )?,
        }));
    }
    let named = |name: &str| models.iter().position(|m| &*m.public.0 == name);
    let deployment = |id: &str| registry.list.iter().position(|d| &*d.id.0 == id);
    let limits = super::tenancy::limits(
        raw.limits,
        (models.len(), &named),
        (registry.list.len(), &deployment),
    )
    .map_err(|(path, message)| invalid(path, message))?;
    let auth = raw
        .auth
        .map(|a| super::tenancy::auth(a, limits.exact, &|name| named(name).is_some(), env))
        .transpose()
        .map_err(|(path, message)| invalid(path, message))?;
    let admin = raw.admin.map(|a| admin(a, &invalid, env)).transpose()?;
    let state =
        super::tenancy::state(raw.state).map_err(|(path, message)| invalid(path, message))?;
    let uses_semantic = models.iter().any(|m| m.semantic.is_some());
    let cache = cache(raw.cache, uses_semantic, &named, &invalid)?;
    if let Some(r) = &cache.refresh {
        match (&r.key, &auth) {
            (None, Some(_)) => {
                return Err(invalid(
                    "cache.refresh_key".into(),
                    "with [auth], refreshes are charged to a key: name one".into(),
                ));
            }
            (Some(_), None) => {
                return Err(invalid(
                    "cache.refresh_key".into(),
                    "there is no [auth]: no key to charge".into(),
                ));
            }
            _ => {}
        }
    }
    Ok(Config {
        cache,
        server,
        providers,
        models,
        deployments: registry.list,
        routing,
        auth,
        limits,
        state,
        admin,
    })
}

/// A model's `semantic` and `semantic_threshold`.
fn semantic_mode(
    (mode, threshold, cache_ttl_s): (Option<&str>, Option<f32>, Option<u64>),
    path: &str,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<Option<super::SemanticMode>, ConfigError> {
    let threshold = threshold
        .map(|t| similarity(t, &format!("{path}.semantic_threshold"), invalid))
        .transpose()?;
    let mode = match mode {
        None | Some("off") => return Ok(None),
        Some("on") => super::SemanticMode::On { threshold },
        Some("shadow") => super::SemanticMode::Shadow { threshold },
        Some(other) => {
            return Err(invalid(
                format!("{path}.semantic"),
                format!("expected `off`, `on` or `shadow`, got `{other}`"),
            ));
        }
    };
    if cache_ttl_s.is_none() {
        return Err(invalid(
            format!("{path}.semantic"),
            "needs `cache_ttl_s` (the semantic cache serves cached answers)".into(),
        ));
    }
    Ok(Some(mode))
}

/// A similarity threshold: above 0 and at most 1.
fn similarity(
    t: f32,
    path: &str,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<f32, ConfigError> {
    if t > 0.0 && t <= 1.0 {
        Ok(t)
    } else {
        Err(invalid(
            path.into(),
            format!("must be above 0 and at most 1, got {t}"),
        ))
    }
}

/// Validate `[cache.semantic]`, when a model uses the semantic cache.
fn semantic(
    s: Option<raw::RawSemantic>,
    named: &dyn Fn(&str) -> Option<usize>,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<super::SemanticConfig, ConfigError> {
    let s = s.unwrap_or_default();
    let embeddings = match s.embeddings.as_deref() {
        None => {
            return Err(invalid(
                "cache.semantic.embeddings".into(),
                "a model uses the semantic cache: set `local` or an embeddings model's name".into(),
            ));
        }
        Some("local") => {
            if !cfg!(feature = "local-embed") {
                return Err(invalid(
                    "cache.semantic.embeddings".into(),
                    "`local` needs a gateway built with `--features local-embed`".into(),
                ));
            }
            let Some(dir) = s.local_model_dir.filter(|d| !d.is_empty()) else {
                return Err(invalid(
                    "cache.semantic.local_model_dir".into(),
                    "`embeddings = \"local\"` needs the model's directory".into(),
                ));
            };
            super::Embeddings::Local(dir.into())
        }
        Some(name) => match named(name) {
            Some(i) => {
                super::Embeddings::Model(crate::ModelIdx(u32::try_from(i).unwrap_or(u32::MAX)))
            }
            None => {
                return Err(invalid(
                    "cache.semantic.embeddings".into(),
                    format!("no model is named `{name}`"),
                ));
            }
        },
    };
    let threshold = similarity(
        s.threshold.unwrap_or(DEFAULT_SEMANTIC_THRESHOLD),
        "cache.semantic.threshold",
        invalid,
    )?;
    let agree_at = similarity(
        s.agree_at.unwrap_or(DEFAULT_AGREE_AT),
        "cache.semantic.agree_at",
        invalid,
    )?;
    let timeout = Duration::from_millis(s.timeout_ms.unwrap_or(100));
    if !(1..=10_000).contains(&timeout.as_millis()) {
        return Err(invalid(
            "cache.semantic.timeout_ms".into(),
            "must be between 1 and 10000".into(),
        ));
    }
    let max_entries = s.max_entries.unwrap_or(10_000);
    if !(1..=10_000_000).contains(&max_entries) {
        return Err(invalid(
            "cache.semantic.max_entries".into(),
            "must be between 1 and 10000000".into(),
        ));
    }
    Ok(super::SemanticConfig {
        embeddings,
        threshold,
        guard: s.guard.unwrap_or(true),
        timeout,
        max_entries,
        agree_at,
    })
}

/// The semantic cache's default similarity threshold (README, "Picking a threshold").
pub const DEFAULT_SEMANTIC_THRESHOLD: f32 = 0.85;
/// Shadow mode's default agreement bar between two answers.
pub const DEFAULT_AGREE_AT: f32 = 0.9;

/// Validate `[cache]`.
fn cache(
    c: raw::RawCache,
    uses_semantic: bool,
    named: &dyn Fn(&str) -> Option<usize>,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<super::CacheConfig, ConfigError> {
    let default = super::CacheConfig::default();
    let scope = match c.scope.as_deref() {
        None | Some("key") => super::CacheScope::Key,
        Some("team") => super::CacheScope::Team,
        Some("global") => super::CacheScope::Global,
        Some(other) => {
            return Err(invalid(
                "cache.scope".into(),
                format!("expected `key`, `team` or `global`, got `{other}`"),
            ));
        }
    };
    let max_entry_bytes = c.max_entry_bytes.unwrap_or(default.max_entry_bytes);
    if !(1024..=64 << 20).contains(&max_entry_bytes) {
        return Err(invalid(
            "cache.max_entry_bytes".into(),
            "must be between 1024 and 67108864".into(),
        ));
    }
    let max_ttl = c.max_ttl_s.map_or(default.max_ttl, Duration::from_secs);
    if max_ttl.is_zero() {
        return Err(invalid(
            "cache.max_ttl_s".into(),
            "must be at least 1".into(),
        ));
    }
    Ok(super::CacheConfig {
        scope,
        max_entry_bytes,
        max_ttl,
        max_followers: c.max_followers.unwrap_or(default.max_followers),
        replicate_hot_keys: c.replicate_hot_keys.unwrap_or(default.replicate_hot_keys),
        refresh: match c.refresh_before_s {
            None if c.refresh_key.is_some() => {
                return Err(invalid(
                    "cache.refresh_key".into(),
                    "needs `refresh_before_s`".into(),
                ));
            }
            None => None,
            Some(0) => {
                return Err(invalid(
                    "cache.refresh_before_s".into(),
                    "must be at least 1 (leave it out to never refresh)".into(),
                ));
            }
            Some(s) => Some(super::RefreshConfig {
                before: Duration::from_secs(s),
                key: c.refresh_key.map(Arc::from),
            }),
        },
        semantic: uses_semantic
            .then(|| semantic(c.semantic, named, invalid))
            .transpose()?,
    })
}

/// Validate `[admin]`: the listen address and the token, looked up in the environment.
fn admin(
    a: RawAdmin,
    invalid: &dyn Fn(String, String) -> ConfigError,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AdminConfig, ConfigError> {
    let listen = a
        .listen
        .unwrap_or_else(|| raw::DEFAULT_ADMIN_LISTEN.to_owned());
    if !listen.contains(':') {
        return Err(invalid(
            "admin.listen".into(),
            format!("expected host:port, got `{listen}`"),
        ));
    }
    let var = a.token_env;
    let path = "admin.token_env".to_owned();
    if var.is_empty() {
        return Err(invalid(path, "name an environment variable".into()));
    }
    // The messages name the variable and the length, never the token.
    let Some(token) = env(&var).filter(|t| !t.is_empty()) else {
        return Err(invalid(
            path,
            format!("environment variable `{var}` is not set"),
        ));
    };
    if token.len() < raw::MIN_ADMIN_TOKEN_BYTES {
        return Err(invalid(
            path,
            format!(
                "the token in `{var}` is {} bytes; use at least {} (e.g. `openssl rand -hex 32`)",
                token.len(),
                raw::MIN_ADMIN_TOKEN_BYTES
            ),
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            path,
            format!(
                "the token in `{var}` must be printable ASCII without spaces (it is sent in a header)"
            ),
        ));
    }
    Ok(AdminConfig {
        listen,
        token: Secret::new(token),
    })
}

/// A model's deployments with the path of each: the `deployments` list, or the single form
/// (`provider`, `model`, `price`) as one deployment at the model's own path.
fn listed_deployments(
    path: &str,
    name: &str,
    m: &mut RawModel,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<Vec<(String, RawDeployment)>, ConfigError> {
    if let Some(list) = m.deployments.take() {
        let single = [
            ("provider", m.provider.is_some()),
            ("model", m.model.is_some()),
            ("price", m.price.is_some()),
        ];
        if let Some((field, _)) = single.iter().find(|(_, set)| *set) {
            return Err(invalid(
                format!("{path}.{field}"),
                format!(
                    "model `{name}` lists `deployments`, so `{field}` goes inside each deployment; use one form or the other"
                ),
            ));
        }
        if list.is_empty() {
            return Err(invalid(
                format!("{path}.deployments"),
                "must list at least one deployment".into(),
            ));
        }
        return Ok(list
            .into_iter()
            .enumerate()
            .map(|(i, d)| (format!("{path}.deployments[{i}]"), d))
            .collect());
    }
    let Some(provider) = m.provider.take() else {
        return Err(invalid(
            path.to_owned(),
            "needs `provider` (one deployment) or `deployments` (several)".into(),
        ));
    };
    let single = RawDeployment {
        id: None,
        provider,
        model: m.model.take(),
        weight: None,
        price: m.price.take(),
        quality: None,
        connect_timeout_ms: None,
        first_byte_timeout_ms: None,
        idle_timeout_ms: None,
        total_timeout_ms: None,
        max_in_flight: None,
        max_context_tokens: None,
        tools: None,
        vision: None,
        json_mode: None,
        tags: Vec::new(),
    };
    Ok(vec![(path.to_owned(), single)])
}

/// The flat deployment list being built, with where each was first defined (for errors that
/// name both places).
#[derive(Default)]
struct Registry {
    list: Vec<Deployment>,
    defined_at: Vec<String>,
}

impl Registry {
    /// Add `d`, defined at `at` for `model` (which already lists `own`): a new deployment, or
    /// one more model for an existing one with the same id and the same settings.
    fn add(
        &mut self,
        mut d: Deployment,
        at: String,
        model: ModelIdx,
        model_name: &str,
        own: &[DeploymentIdx],
        invalid: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<DeploymentIdx, ConfigError> {
        let Some(i) = self.list.iter().position(|e| e.id == d.id) else {
            let idx = deployment_idx(self.list.len(), &at, invalid)?;
            d.models.push(model);
            self.list.push(d);
            self.defined_at.push(at);
            return Ok(idx);
        };
        let idx = deployment_idx(i, &at, invalid)?;
        let first_at = &self.defined_at[i];
        if own.contains(&idx) {
            return Err(invalid(
                format!("{at}.id"),
                format!(
                    "deployment `{}` is listed twice in model `{model_name}` (first at {first_at})",
                    d.id
                ),
            ));
        }
        if let Some(field) = first_difference(&self.list[i], &d) {
            return Err(invalid(
                at,
                format!(
                    "deployment `{}` is also defined at {first_at} with a different `{field}`; a deployment shared by several models must be defined the same way in each (or give each its own `id`)",
                    d.id
                ),
            ));
        }
        self.list[i].models.push(model);
        Ok(idx)
    }
}

/// One of a model's fallback lists (`at` is its path), as model indices.
fn fallbacks(
    list: Vec<String>,
    at: &str,
    name: &str,
    me: ModelIdx,
    model_idx: &dyn Fn(&str) -> Option<ModelIdx>,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<Vec<ModelIdx>, ConfigError> {
    let mut out = Vec::with_capacity(list.len());
    for (i, other) in list.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let Some(idx) = model_idx(other) else {
            return Err(invalid(
                at,
                format!("model `{name}` falls back to model `{other}`, which is not configured"),
            ));
        };
        if idx == me {
            return Err(invalid(
                at,
                format!("model `{name}` cannot fall back to itself"),
            ));
        }
        if out.contains(&idx) {
            return Err(invalid(at, format!("model `{other}` is listed twice")));
        }
        out.push(idx);
    }
    Ok(out)
}

fn deployment_idx(
    i: usize,
    at: &str,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<DeploymentIdx, ConfigError> {
    u32::try_from(i)
        .map(DeploymentIdx)
        .map_err(|_| invalid(at.to_owned(), "too many deployments".into()))
}

/// One deployment, validated; `at` is its path (`models.m` for the single form, else
/// `models.m.deployments[i]`), `public` the model listing it. `models` is left empty.
fn deployment(
    at: &str,
    public: &str,
    d: RawDeployment,
    providers: &[Arc<ProviderConfig>],
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<Deployment, ConfigError> {
    let Some(pi) = providers.iter().position(|p| *p.id.0 == d.provider) else {
        return Err(invalid(
            format!("{at}.provider"),
            format!(
                "model `{public}` refers to provider `{}`, which is not configured",
                d.provider
            ),
        ));
    };
    let provider = u32::try_from(pi)
        .map(ProviderIdx)
        .map_err(|_| invalid(format!("{at}.provider"), "too many providers".into()))?;
    let upstream_model: Arc<str> = d.model.as_deref().unwrap_or(public).into();
    if upstream_model.is_empty() {
        return Err(invalid(format!("{at}.model"), "must not be empty".into()));
    }
    let id = match d.id {
        None => format!("{}/{upstream_model}", d.provider),
        Some(id) => {
            let bad = |c: char| !c.is_ascii_graphic() || matches!(c, ',' | '"' | '\\');
            if id.is_empty() || id.len() > raw::MAX_DEPLOYMENT_ID_BYTES || id.contains(bad) {
                return Err(invalid(
                    format!("{at}.id"),
                    format!(
                        "must be 1 to {} visible ASCII characters without spaces, commas, quotes or backslashes",
                        raw::MAX_DEPLOYMENT_ID_BYTES
                    ),
                ));
            }
            id
        }
    };
    let weight = d.weight.unwrap_or(raw::DEFAULT_WEIGHT);
    if weight == 0 {
        return Err(invalid(format!("{at}.weight"), "must be at least 1".into()));
    }
    let price = d.price.map(|p| price(at, p, invalid)).transpose()?;
    if let Some(q) = d.quality
        && !(q.is_finite() && (0.0..=1.0).contains(&q))
    {
        return Err(invalid(
            format!("{at}.quality"),
            format!("must be between 0 and 1, got {q}"),
        ));
    }
    let over = |v: Option<u64>, base: Duration, field: &str| match v {
        None => Ok(base),
        Some(0) => Err(invalid(
            format!("{at}.{field}"),
            "must be at least 1 ms".into(),
        )),
        Some(v) => Ok(Duration::from_millis(v)),
    };
    let base = providers[pi].timeouts;
    let timeouts = Timeouts {
        connect: over(d.connect_timeout_ms, base.connect, "connect_timeout_ms")?,
        first_byte: over(
            d.first_byte_timeout_ms,
            base.first_byte,
            "first_byte_timeout_ms",
        )?,
        idle: over(d.idle_timeout_ms, base.idle, "idle_timeout_ms")?,
        total: over(d.total_timeout_ms, base.total, "total_timeout_ms")?,
    };
    let at_least_one = |v: Option<u32>, field: &str| match v {
        Some(0) => Err(invalid(
            format!("{at}.{field}"),
            "must be at least 1 (leave it out for no limit)".into(),
        )),
        v => Ok(v),
    };
    let max_in_flight = at_least_one(d.max_in_flight, "max_in_flight")?;
    let max_context_tokens = at_least_one(d.max_context_tokens, "max_context_tokens")?;
    let mut tags: Vec<Arc<str>> = Vec::with_capacity(d.tags.len());
    for (i, tag) in d.tags.iter().enumerate() {
        let bad = |c: char| !c.is_ascii_graphic() || c == ',';
        if tag.is_empty() || tag.contains(bad) {
            return Err(invalid(
                format!("{at}.tags[{i}]"),
                "must be visible ASCII characters without spaces or commas".into(),
            ));
        }
        if tags.iter().any(|t| **t == **tag) {
            return Err(invalid(
                format!("{at}.tags[{i}]"),
                format!("`{tag}` is listed twice"),
            ));
        }
        tags.push(tag.as_str().into());
    }
    Ok(Deployment {
        id: DeploymentId(id.into()),
        provider,
        upstream_model,
        weight,
        price,
        quality: d.quality,
        timeouts,
        max_in_flight,
        max_context_tokens,
        caps: Capabilities {
            tools: d.tools.unwrap_or(true),
            vision: d.vision.unwrap_or(true),
            json_mode: d.json_mode.unwrap_or(true),
        },
        tags,
        models: Vec::new(),
    })
}

/// The first setting in which two definitions of one deployment differ (`models` aside).
fn first_difference(a: &Deployment, b: &Deployment) -> Option<&'static str> {
    // Destructured in full, so that a new field cannot be forgotten here.
    let Deployment {
        id,
        provider,
        upstream_model,
        weight,
        price,
        quality,
        timeouts,
        max_in_flight,
        max_context_tokens,
        caps,
        tags,
        models: _,
    } = a;
    [
        ("id", *id == b.id),
        ("provider", *provider == b.provider),
        ("model", *upstream_model == b.upstream_model),
        ("weight", *weight == b.weight),
        ("price", *price == b.price),
        ("quality", *quality == b.quality),
        ("connect_timeout_ms", timeouts.connect == b.timeouts.connect),
        (
            "first_byte_timeout_ms",
            timeouts.first_byte == b.timeouts.first_byte,
        ),
        ("idle_timeout_ms", timeouts.idle == b.timeouts.idle),
        ("total_timeout_ms", timeouts.total == b.timeouts.total),
        ("max_in_flight", *max_in_flight == b.max_in_flight),
        (
            "max_context_tokens",
            *max_context_tokens == b.max_context_tokens,
        ),
        ("tools", caps.tools == b.caps.tools),
        ("vision", caps.vision == b.caps.vision),
        ("json_mode", caps.json_mode == b.caps.json_mode),
        ("tags", *tags == b.tags),
    ]
    .into_iter()
    .find_map(|(field, same)| (!same).then_some(field))
}

/// `price = { .. }` at `at`.
fn price(
    at: &str,
    p: RawPrice,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<Price, ConfigError> {
    let usd = |field: &str, v: f64| {
        crate::budget::pricing::per_token(v).ok_or_else(|| {
            invalid(
                format!("{at}.price.{field}"),
                "must be a number of dollars per million tokens, from 0 to 1000000".into(),
            )
        })
    };
    Ok(Price {
        input: usd("input", p.input)?,
        output: usd("output", p.output)?,
        cached_input: usd("cached_input", p.cached_input.unwrap_or(p.input))?,
    })
}

/// `[routing]` with its defaults from `routing::{retry, breaker}`.
fn routing(
    r: RawRouting,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<RoutingConfig, ConfigError> {
    let ms = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_millis);
    let positive = |v: Option<u64>, default: Duration, path: &str| match v {
        Some(0) => Err(invalid(path.to_owned(), "must be at least 1 ms".into())),
        v => Ok(ms(v, default)),
    };
    let ratio = |v: Option<f64>, default: f64, path: &str| match v.unwrap_or(default) {
        v if v.is_finite() && (0.0..=1.0).contains(&v) => Ok(v),
        v => Err(invalid(
            path.to_owned(),
            format!("must be between 0 and 1, got {v}"),
        )),
    };
    let max_attempts = r.max_attempts.unwrap_or(retry::DEFAULT_MAX_ATTEMPTS);
    if !(1..=10).contains(&max_attempts) {
        return Err(invalid(
            "routing.max_attempts".into(),
            format!("must be between 1 and 10, got {max_attempts}"),
        ));
    }
    let request_timeout = positive(
        r.request_timeout_ms,
        retry::DEFAULT_REQUEST_TIMEOUT,
        "routing.request_timeout_ms",
    )?;
    let backoff = Backoff {
        base: ms(r.backoff_base_ms, retry::DEFAULT_BACKOFF_BASE),
        max: ms(r.backoff_max_ms, retry::DEFAULT_BACKOFF_MAX),
        retry_after_cap: ms(r.retry_after_cap_ms, retry::DEFAULT_RETRY_AFTER_CAP),
    };
    if backoff.base > backoff.max {
        return Err(invalid(
            "routing.backoff_base_ms".into(),
            format!(
                "must not exceed routing.backoff_max_ms ({} ms)",
                backoff.max.as_millis()
            ),
        ));
    }
    let budget = RetryBudgetConfig {
        ratio: ratio(
            r.retry_budget_ratio,
            retry::DEFAULT_BUDGET_RATIO,
            "routing.retry_budget_ratio",
        )?,
        floor_per_sec: r
            .retry_budget_floor_per_sec
            .unwrap_or(retry::DEFAULT_BUDGET_FLOOR_PER_SEC),
        window: positive(
            r.retry_budget_window_ms,
            retry::DEFAULT_BUDGET_WINDOW,
            "routing.retry_budget_window_ms",
        )?,
    };
    let b = r.breaker;
    let consecutive_failures = b
        .consecutive_failures
        .unwrap_or(breaker::DEFAULT_CONSECUTIVE_FAILURES);
    if consecutive_failures == 0 {
        return Err(invalid(
            "routing.breaker.consecutive_failures".into(),
            "must be at least 1".into(),
        ));
    }
    let min_volume = b.min_volume.unwrap_or(breaker::DEFAULT_MIN_VOLUME);
    if min_volume == 0 {
        return Err(invalid(
            "routing.breaker.min_volume".into(),
            "must be at least 1".into(),
        ));
    }
    let breaker = BreakerConfig {
        consecutive_failures,
        error_ratio: ratio(
            b.error_ratio,
            breaker::DEFAULT_ERROR_RATIO,
            "routing.breaker.error_ratio",
        )?,
        min_volume,
        window: positive(
            b.window_ms,
            breaker::DEFAULT_WINDOW,
            "routing.breaker.window_ms",
        )?,
        base_cooldown: positive(
            b.base_cooldown_ms,
            breaker::DEFAULT_BASE_COOLDOWN,
            "routing.breaker.base_cooldown_ms",
        )?,
        max_cooldown: ms(b.max_cooldown_ms, breaker::DEFAULT_MAX_COOLDOWN),
    };
    if breaker.base_cooldown > breaker.max_cooldown {
        return Err(invalid(
            "routing.breaker.base_cooldown_ms".into(),
            format!(
                "must not exceed routing.breaker.max_cooldown_ms ({} ms)",
                breaker.max_cooldown.as_millis()
            ),
        ));
    }
    Ok(RoutingConfig {
        max_attempts,
        request_timeout,
        backoff,
        budget,
        breaker,
    })
}

fn provider(
    id: &str,
    p: RawProvider,
    invalid: &dyn Fn(String, String) -> ConfigError,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ProviderConfig, ConfigError> {
    let path = format!("providers.{id}");
    let kind = match p.kind {
        RawProviderKind::Openai => ProviderKind::OpenAi,
        RawProviderKind::Anthropic => ProviderKind::Anthropic,
        RawProviderKind::Gemini => ProviderKind::Gemini,
        RawProviderKind::Mock => ProviderKind::Mock,
    };
    let endpoint = match (kind, p.base_url) {
        (ProviderKind::Mock, None) => None,
        (ProviderKind::Mock, Some(_)) => {
            return Err(invalid(
                format!("{path}.base_url"),
                "the in-process `mock` kind has no base_url; use kind = \"openai\" for shardgate-mock".into(),
            ));
        }
        (_, None) => return Err(invalid(format!("{path}.base_url"), "is required".into())),
        (_, Some(url)) => Some(endpoint(&url).map_err(|m| invalid(format!("{path}.base_url"), m))?),
    };
    if p.allow_fault_injection && kind != ProviderKind::Mock {
        return Err(invalid(
            format!("{path}.allow_fault_injection"),
            "only the `mock` kind takes fault injection".into(),
        ));
    }
    let api_key = match p.api_key_env {
        None => None,
        Some(var) => match env(&var) {
            Some(v) if !v.is_empty() => Some(Secret::new(v)),
            _ => {
                return Err(invalid(
                    format!("{path}.api_key_env"),
                    format!("environment variable `{var}` is not set"),
                ));
            }
        },
    };
    let ms = |v: Option<u64>, default: u64, field: &str| match v.unwrap_or(default) {
        0 => Err(invalid(
            format!("{path}.{field}"),
            "must be at least 1 ms".into(),
        )),
        v => Ok(Duration::from_millis(v)),
    };
    let timeouts = Timeouts {
        connect: ms(
            p.connect_timeout_ms,
            raw::DEFAULT_CONNECT_TIMEOUT_MS,
            "connect_timeout_ms",
        )?,
        first_byte: ms(
            p.first_byte_timeout_ms,
            raw::DEFAULT_FIRST_BYTE_TIMEOUT_MS,
            "first_byte_timeout_ms",
        )?,
        idle: ms(
            p.idle_timeout_ms,
            raw::DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS,
            "idle_timeout_ms",
        )?,
        total: ms(
            p.total_timeout_ms,
            raw::DEFAULT_TOTAL_TIMEOUT_MS,
            "total_timeout_ms",
        )?,
    };
    if p.ca_file.is_some() && endpoint.as_ref().is_none_or(|e| e.scheme != Scheme::Https) {
        return Err(invalid(
            format!("{path}.ca_file"),
            "needs an https base_url".into(),
        ));
    }
    let key_header = match (kind, p.key_header.as_deref()) {
        (ProviderKind::Anthropic, None) => KeyHeader::XApiKey,
        (ProviderKind::Gemini, None) => KeyHeader::XGoogApiKey,
        (ProviderKind::OpenAi | ProviderKind::Mock, None | Some("authorization")) => {
            KeyHeader::Bearer
        }
        (ProviderKind::OpenAi, Some("api-key")) => KeyHeader::ApiKey,
        (ProviderKind::Anthropic | ProviderKind::Gemini | ProviderKind::Mock, Some(_)) => {
            return Err(invalid(
                format!("{path}.key_header"),
                "is set by the kind (Anthropic sends `x-api-key`, Gemini `x-goog-api-key`); only `openai` providers choose".into(),
            ));
        }
        (_, Some(other)) => {
            return Err(invalid(
                format!("{path}.key_header"),
                format!("`{other}` is not one of `authorization`, `api-key`"),
            ));
        }
    };
    if let Some(v) = &p.api_version {
        let url_safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if kind != ProviderKind::OpenAi || v.is_empty() || !v.chars().all(url_safe) {
            return Err(invalid(
                format!("{path}.api_version"),
                "takes a version such as `2024-10-21`, on the `openai` kind".into(),
            ));
        }
    }
    Ok(ProviderConfig {
        key_header,
        api_version: p.api_version,
        ca_file: p.ca_file,
        id: ProviderId(id.into()),
        kind,
        endpoint,
        api_key,
        protocol: p.protocol,
        timeouts,
        allow_fault_injection: p.allow_fault_injection,
    })
}

/// Parse a base URL into an [`Endpoint`]. Only `http` and `https`, no user info, no query.
pub(crate) fn endpoint(url: &str) -> Result<Endpoint, String> {
    // Messages quote the URL without any `user:pass@`, even when it does not parse.
    let shown = super::secrets::without_userinfo(url);
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL `{shown}`: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        Some(other) => return Err(format!("unsupported scheme `{other}` (use http or https)")),
        None => return Err(format!("invalid URL `{shown}`: missing scheme")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("invalid URL `{shown}`: missing host"))?;
    if authority.as_str().contains('@') {
        return Err("credentials in the URL are not allowed; use api_key_env".into());
    }
    if uri.query().is_some() {
        return Err("a query string is not allowed in base_url".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("invalid URL `{shown}`: missing host"));
    }
    let port = authority.port_u16().unwrap_or(match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    });
    Ok(Endpoint {
        scheme,
        host: host.into(),
        port,
        base_path: uri.path().trim_end_matches('/').into(),
        authority: authority.as_str().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn messages_never_quote_user_info() {
        for url in [
            "https://user:hunter2-secret@api.example.com:99999/v1",
            "https://user:hunter2-secret@exa mple.com/v1",
            "user:hunter2-secret@api.example.com/v1",
            "ftp://user:hunter2-secret@api.example.com/v1",
            "https://user:hunter2-secret@api.example.com/v1",
            "https://user:hunter2-secret@/v1",
        ] {
            let e = endpoint(url).err().unwrap_or_default();
            assert!(!e.is_empty(), "{url} must be refused");
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
        let e = endpoint("https://api.exa mple.com/v1").unwrap_err();
        assert!(
            e.contains("api.exa mple.com"),
            "the rest is still quoted: {e}"
        );
    }
}
