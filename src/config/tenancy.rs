//! `[auth]` and `[limits]`: who may call (virtual keys declared by hash), and the rate limits
//! and budgets of every scope (global, each key, team, model and end user).
//!
//! Without an `[auth]` section the gateway is open (the embedded default); `[limits]` applies
//! either way (with no keys, only the global, model and end-user scopes can match).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;

use crate::auth::jwt::{JwtConfig, JwtVerifier};
use crate::auth::key::KeyHash;
use crate::auth::table::KeyRecord;
use crate::budget::policy::{DEFAULT_THROTTLE_PERCENT, Downgrades, Thresholds};
use crate::budget::spec::{LimitSet, LimitSpec};

/// Default bounded wait for a lease refill at admission.
pub const DEFAULT_WAIT_MS: u64 = 250;
/// Default header naming the end user (besides the body's `user` field).
pub const DEFAULT_USER_HEADER: &str = "x-shardgate-user";
/// Default output tokens assumed at admission when the request sets no `max_tokens`.
pub const DEFAULT_OUTPUT_ESTIMATE_TOKENS: u32 = 256;
/// Longest key id, team or user name.
pub const MAX_NAME_BYTES: usize = 128;

/// `[auth]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Keys declared in the file, by hash (`shardgate keys hash` prints it).
    #[serde(default)]
    pub keys: Vec<RawKey>,
    /// JWT bearer tokens as a second way in.
    pub jwt: Option<RawJwt>,
}

/// `[auth.jwt]`: tokens verified against a JWKS file (RS256, ES256) or an HS256 secret.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    /// A JWKS file (JSON) with the RS256/ES256 public keys, chosen by the token's `kid`.
    pub jwks_file: Option<String>,
    /// Environment variable holding the HS256 secret (at least 32 bytes).
    pub hs256_secret_env: Option<String>,
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud`.
    pub audience: Option<String>,
    /// Claim holding the team (default `team`).
    pub team_claim: Option<String>,
    /// Claim holding the user (default `sub`).
    pub user_claim: Option<String>,
    /// Claim holding the allowed public model names (absent: every model).
    pub models_claim: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds (default 60).
    pub leeway_secs: Option<u64>,
    /// Verified tokens each shard keeps until they expire (default 10000).
    pub cache_entries: Option<usize>,
    /// Limits and budgets of each token subject (none: `limits.per_key`).
    #[serde(default)]
    pub limits: LimitSet,
}

/// `[[auth.keys]]`: one virtual key, declared by the SHA-256 of its secret.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// Public id (logs, metrics, the admin API): letters, digits, `-`, `_`, `.`.
    pub id: String,
    /// A name for people.
    pub name: Option<String>,
    /// `sha256:<64 hex digits>` of the key's secret.
    pub hash: String,
    /// The team the key belongs to (its limits and budgets apply too).
    pub team: Option<String>,
    /// The user the key belongs to.
    pub user: Option<String>,
    /// Public model names the key may use; absent: every model.
    pub models: Option<Vec<String>>,
    /// Expiry, unix seconds.
    pub expires_at_unix: Option<u64>,
    /// Free-form tags, returned by the admin API.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// A revoked key is refused (401) but kept for its history.
    #[serde(default)]
    pub revoked: bool,
    /// The key's own limits and budgets.
    #[serde(default)]
    pub limits: LimitSet,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Never admit past a limit, waiting for the budgeter instead (no borrowing).
    pub exact: Option<bool>,
    /// Budgets reserve the worst case (every body byte a token, `max_tokens` of output), so a
    /// cap is never passed by a request's real usage.
    pub hard_budgets: Option<bool>,
    /// Longest wait for a lease refill at admission before answering 429.
    pub wait_ms: Option<u64>,
    /// Header that names the end user (the body's `user` field wins).
    pub user_header: Option<String>,
    /// Offset of the calendar days and months of `rpd` and the spend budgets, `+HH:MM`.
    pub utc_offset: Option<String>,
    /// Output tokens assumed at admission when a request sets no `max_tokens`.
    pub output_estimate_tokens: Option<u32>,
    /// Limits over all traffic.
    #[serde(default)]
    pub global: LimitSet,
    /// Limits of every key that declares none of its own.
    #[serde(default)]
    pub per_key: LimitSet,
    /// Limits of each end user, separately.
    #[serde(default)]
    pub users: LimitSet,
    /// Limits per team name.
    #[serde(default)]
    pub teams: BTreeMap<String, LimitSet>,
    /// Limits per public model name.
    #[serde(default)]
    pub models: BTreeMap<String, LimitSet>,
    /// A provider account's own limits, per deployment id (requests, tokens, concurrency):
    /// routing passes over a deployment at its limit to the next one.
    #[serde(default)]
    pub deployments: BTreeMap<String, LimitSet>,
    /// Budget thresholds and their actions (default: 80 alert, 90 throttle, 95 restrict,
    /// 100 block), for every spend budget.
    pub thresholds: Option<Thresholds>,
    /// The share of a key's request rate left while its budget is past `throttle`, percent.
    pub throttle_percent: Option<u8>,
    /// `http://` URL that gets a JSON POST for each threshold crossed.
    pub webhook_url: Option<String>,
    /// Cheaper model per public model, used past a `restrict` threshold.
    #[serde(default)]
    pub downgrades: BTreeMap<String, String>,
}

/// Default verified tokens kept per shard.
pub const DEFAULT_JWT_CACHE_ENTRIES: usize = 10_000;

/// `[state]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// Data directory of the embedded store (`shardgate.redb`): keys made through the admin
    /// API, the spend book and the limit counters survive a restart there. Unset: kept in
    /// memory only.
    pub dir: Option<String>,
    /// Redis shared by every node (`redis://host:port/db`, `rediss://` for TLS): limits,
    /// budgets, keys and spend hold across nodes. Unset: this node alone.
    pub redis_url: Option<String>,
    /// Longest a Redis operation may take before the policy applies (default 100 ms).
    pub redis_timeout_ms: Option<u64>,
    /// `fail_open` (default: each node admits from its share, `max / nodes`, of every limit
    /// while Redis is away) or `fail_closed` (limited requests are refused while it is away).
    pub redis_policy: Option<String>,
    /// How many nodes share the Redis (for `fail_open` shares and lease sizes; default 1).
    pub nodes: Option<u16>,
    /// This node's name in Redis (default: random at each start).
    pub node_id: Option<String>,
    /// Prefix of every Redis key (default `shardgate:`).
    pub redis_prefix: Option<String>,
}

/// `[state]`, validated.
#[derive(Debug, Clone, Default)]
pub struct StateConfig {
    /// The data directory, if any.
    pub dir: Option<std::path::PathBuf>,
    /// Shared state in Redis, if configured.
    pub redis: Option<RedisConfig>,
}

/// What a node does with limited requests while Redis is away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisPolicy {
    /// Admit from this node's share of each limit (`max / nodes`).
    FailOpen,
    /// Refuse what a limit or budget applies to.
    FailClosed,
}

/// `[state]`'s Redis settings, validated.
#[derive(Clone)]
pub struct RedisConfig {
    /// The URL (may hold a password: never logged, see the `Debug` impl).
    pub url: String,
    /// Operation timeout.
    pub timeout: std::time::Duration,
    /// The policy while Redis is away.
    pub policy: RedisPolicy,
    /// Nodes sharing it.
    pub nodes: u16,
    /// This node's name.
    pub node_id: Option<String>,
    /// Key prefix.
    pub prefix: String,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &"<redacted>")
            .field("timeout", &self.timeout)
            .field("policy", &self.policy)
            .field("nodes", &self.nodes)
            .field("node_id", &self.node_id)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Validate `[state]`. Errors are (path, message).
pub fn state(raw: RawState) -> Result<StateConfig, (String, String)> {
    let bad = |field: &str, m: &str| (format!("state.{field}"), m.to_string());
    let redis = match raw.redis_url {
        None => {
            let stray = [
                ("redis_timeout_ms", raw.redis_timeout_ms.is_some()),
                ("redis_policy", raw.redis_policy.is_some()),
                ("nodes", raw.nodes.is_some()),
                ("node_id", raw.node_id.is_some()),
                ("redis_prefix", raw.redis_prefix.is_some()),
            ];
            if let Some((field, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(bad(field, "needs `redis_url`"));
            }
            None
        }
        Some(url) => {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(bad("redis_url", "must start with redis:// or rediss://"));
            }
            let timeout_ms = raw.redis_timeout_ms.unwrap_or(100);
            if !(1..=10_000).contains(&timeout_ms) {
                return Err(bad("redis_timeout_ms", "must be 1 to 10000"));
            }
            let policy = match raw.redis_policy.as_deref() {
                None | Some("fail_open") => RedisPolicy::FailOpen,
                Some("fail_closed") => RedisPolicy::FailClosed,
                Some(_) => return Err(bad("redis_policy", "must be fail_open or fail_closed")),
            };
            let nodes = raw.nodes.unwrap_or(1);
            if nodes == 0 {
                return Err(bad("nodes", "must be at least 1"));
            }
            let id_ok = |s: &str| {
                !s.is_empty()
                    && s.len() <= 64
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            };
            if let Some(id) = &raw.node_id
                && !id_ok(id)
            {
                return Err(bad("node_id", "must be 1 to 64 of A-Z a-z 0-9 - _"));
            }
            Some(RedisConfig {
                url,
                timeout: std::time::Duration::from_millis(timeout_ms),
                policy,
                nodes,
                node_id: raw.node_id,
                prefix: raw.redis_prefix.unwrap_or_else(|| "shardgate:".into()),
            })
        }
    };
    Ok(StateConfig {
        dir: raw.dir.map(std::path::PathBuf::from),
        redis,
    })
}

/// Who may call: the keys declared in the config, and JWTs when configured.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Keys from the file.
    pub keys: Vec<Arc<KeyRecord>>,
    /// The JWT verifier, when `[auth.jwt]` is set.
    pub jwt: Option<JwtAuth>,
}

/// `[auth.jwt]`, validated: the verifier built once, at load.
#[derive(Debug, Clone)]
pub struct JwtAuth {
    /// The verifier (keys from the JWKS, the secret, issuer, audience, claims).
    pub verifier: Arc<JwtVerifier>,
    /// Verified tokens each shard keeps.
    pub cache_entries: usize,
    /// Limits of each token subject.
    pub limits: LimitSet,
}

/// Limits and budgets, validated.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// No borrowing past a lease.
    pub exact: bool,
    /// Budgets reserve the worst case.
    pub hard_budgets: bool,
    /// Bounded wait for a refill.
    pub wait: Duration,
    /// End-user header.
    pub user_header: HeaderName,
    /// Calendar offset, seconds east of UTC.
    pub offset_secs: i32,
    /// Output tokens assumed without `max_tokens`.
    pub output_estimate_tokens: u32,
    /// Over all traffic.
    pub global: Vec<LimitSpec>,
    /// Keys without their own.
    pub per_key: Vec<LimitSpec>,
    /// Each end user.
    pub users: Vec<LimitSpec>,
    /// Per team.
    pub teams: BTreeMap<Arc<str>, Vec<LimitSpec>>,
    /// Per public model, by `ModelIdx`.
    pub models: Vec<Vec<LimitSpec>>,
    /// Per deployment (indexed by `DeploymentIdx`).
    pub deployments: Vec<Vec<LimitSpec>>,
    /// Budget thresholds.
    pub thresholds: Thresholds,
    /// Request rate left while throttled, percent.
    pub throttle_percent: u8,
    /// Where threshold alerts are POSTed.
    pub webhook_url: Option<http::Uri>,
    /// Cheaper models, past `restrict`.
    pub downgrades: Downgrades,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            exact: false,
            hard_budgets: false,
            wait: Duration::from_millis(DEFAULT_WAIT_MS),
            user_header: HeaderName::from_static(DEFAULT_USER_HEADER),
            offset_secs: 0,
            output_estimate_tokens: DEFAULT_OUTPUT_ESTIMATE_TOKENS,
            global: Vec::new(),
            per_key: Vec::new(),
            users: Vec::new(),
            teams: BTreeMap::new(),
            models: Vec::new(),
            deployments: Vec::new(),
            thresholds: Thresholds::default(),
            throttle_percent: DEFAULT_THROTTLE_PERCENT,
            webhook_url: None,
            downgrades: Downgrades::default(),
        }
    }
}

impl LimitsConfig {
    /// Whether any scope has a limit (keys' own limits aside).
    pub fn any(&self) -> bool {
        !(self.global.is_empty()
            && self.per_key.is_empty()
            && self.users.is_empty()
            && self.teams.is_empty()
            && self.models.iter().all(Vec::is_empty)
            && self.deployments.iter().all(Vec::is_empty))
    }
}

/// Names to indexes: how many there are, and the index of a name.
pub type Names<'a> = (usize, &'a dyn Fn(&str) -> Option<usize>);

/// Validate `[limits]` with the public model names and the deployment ids.
pub fn limits(
    raw: RawLimits,
    (models, model_index): Names<'_>,
    (deployments, deployment_index): Names<'_>,
) -> Result<LimitsConfig, (String, String)> {
    let exact = raw.exact.unwrap_or(false);
    let set = |s: &LimitSet, path: String| {
        s.specs(exact)
            .map_err(|e| (format!("{path}.{}", e.field), e.expect.to_owned()))
    };
    let wait = Duration::from_millis(raw.wait_ms.unwrap_or(DEFAULT_WAIT_MS));
    if wait > Duration::from_secs(10) {
        return Err((
            "limits.wait_ms".into(),
            "must be at most 10000 (a request never waits long for a lease)".into(),
        ));
    }
    let header = raw
        .user_header
        .unwrap_or_else(|| DEFAULT_USER_HEADER.to_owned());
    let user_header =
        HeaderName::from_bytes(header.to_ascii_lowercase().as_bytes()).map_err(|_| {
            (
                "limits.user_header".to_owned(),
                "not a header name".to_owned(),
            )
        })?;
    let offset_secs = match raw.utc_offset.as_deref() {
        None => 0,
        Some(text) => parse_offset(text).ok_or_else(|| {
            (
                "limits.utc_offset".to_owned(),
                format!("expected +HH:MM or -HH:MM within ±18:00, got `{text}`"),
            )
        })?,
    };
    let mut by_model = vec![Vec::new(); models];
    for (name, s) in &raw.models {
        let path = format!("limits.models.{name}");
        let Some(i) = model_index(name) else {
            return Err((path, format!("model `{name}` is not configured")));
        };
        if let Some(slot) = by_model.get_mut(i) {
            *slot = set(s, path)?;
        }
    }
    let mut by_deployment = vec![Vec::new(); deployments];
    for (id, s) in &raw.deployments {
        let path = format!("limits.deployments.{id}");
        let Some(i) = deployment_index(id) else {
            return Err((path, format!("deployment `{id}` is not configured")));
        };
        if s.spend_per_day_usd.is_some()
            || s.spend_per_month_usd.is_some()
            || s.spend_total_usd.is_some()
        {
            return Err((
                path,
                "a deployment takes rpm, rpd, tpm and max_concurrent; budgets go on a key, \
                 team, user, model or globally"
                    .into(),
            ));
        }
        if let Some(slot) = by_deployment.get_mut(i) {
            *slot = set(s, path)?;
        }
    }
    let mut teams = BTreeMap::new();
    for (name, s) in &raw.teams {
        check_name(name).map_err(|m| (format!("limits.teams.{name}"), m))?;
        teams.insert(
            Arc::from(name.as_str()),
            set(s, format!("limits.teams.{name}"))?,
        );
    }
    let throttle_percent = raw.throttle_percent.unwrap_or(DEFAULT_THROTTLE_PERCENT);
    if !(1..=100).contains(&throttle_percent) {
        return Err((
            "limits.throttle_percent".into(),
            "must be between 1 and 100".into(),
        ));
    }
    let webhook_url = match raw.webhook_url {
        None => None,
        Some(url) => {
            let uri: http::Uri = url.parse().map_err(|_| {
                (
                    "limits.webhook_url".to_owned(),
                    format!("`{url}` is not a URL"),
                )
            })?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err((
                    "limits.webhook_url".into(),
                    "must be an http:// URL with a host".into(),
                ));
            }
            Some(uri)
        }
    };
    let downgrades = Downgrades::new(raw.downgrades, &|m| model_index(m).is_some())
        .map_err(|e| ("limits.downgrades".to_owned(), e.to_string()))?;
    Ok(LimitsConfig {
        thresholds: raw.thresholds.unwrap_or_default(),
        throttle_percent,
        webhook_url,
        downgrades,
        exact,
        hard_budgets: raw.hard_budgets.unwrap_or(false),
        wait,
        user_header,
        offset_secs,
        output_estimate_tokens: raw
            .output_estimate_tokens
            .unwrap_or(DEFAULT_OUTPUT_ESTIMATE_TOKENS),
        global: set(&raw.global, "limits.global".into())?,
        per_key: set(&raw.per_key, "limits.per_key".into())?,
        users: set(&raw.users, "limits.users".into())?,
        teams,
        models: by_model,
        deployments: by_deployment,
    })
}

/// Validate `[auth.jwt]`: read the JWKS file, look the secret up in the environment, build
/// the verifier.
fn jwt(
    raw: RawJwt,
    exact: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<JwtAuth, (String, String)> {
    let jwks_json = match &raw.jwks_file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            (
                "auth.jwt.jwks_file".to_owned(),
                format!("cannot read `{path}`: {e}"),
            )
        })?,
        None => String::new(),
    };
    let hs256_secret = match &raw.hs256_secret_env {
        Some(var) => Some(
            env(var)
                .ok_or_else(|| {
                    (
                        "auth.jwt.hs256_secret_env".to_owned(),
                        format!("environment variable `{var}` is not set"),
                    )
                })?
                .into_bytes(),
        ),
        None => None,
    };
    if jwks_json.is_empty() && hs256_secret.is_none() {
        return Err((
            "auth.jwt".to_owned(),
            "set jwks_file, hs256_secret_env or both".to_owned(),
        ));
    }
    raw.limits
        .specs(exact)
        .map_err(|e| (format!("auth.jwt.limits.{}", e.field), e.expect.to_owned()))?;
    let defaults = JwtConfig::default();
    let verifier = JwtVerifier::new(JwtConfig {
        jwks_json,
        hs256_secret,
        issuer: raw.issuer,
        audience: raw.audience,
        team_claim: raw.team_claim.unwrap_or(defaults.team_claim),
        user_claim: raw.user_claim.unwrap_or(defaults.user_claim),
        models_claim: raw.models_claim,
        leeway_secs: raw.leeway_secs.unwrap_or(defaults.leeway_secs),
    })
    .map_err(|e| ("auth.jwt".to_owned(), e.to_string()))?;
    let cache_entries = raw.cache_entries.unwrap_or(DEFAULT_JWT_CACHE_ENTRIES);
    if !(1..=10_000_000).contains(&cache_entries) {
        return Err((
            "auth.jwt.cache_entries".to_owned(),
            "must be between 1 and 10000000".to_owned(),
        ));
    }
    Ok(JwtAuth {
        verifier: Arc::new(verifier),
        cache_entries,
        limits: raw.limits,
    })
}

/// Validate `[auth]`; `model_exists` says whether a public model name is configured, `env`
/// looks up environment variables (the HS256 secret).
pub fn auth(
    raw: RawAuth,
    exact: bool,
    model_exists: &dyn Fn(&str) -> bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AuthConfig, (String, String)> {
    let jwt = raw.jwt.map(|j| jwt(j, exact, env)).transpose()?;
    let mut keys: Vec<Arc<KeyRecord>> = Vec::with_capacity(raw.keys.len());
    for (i, k) in raw.keys.into_iter().enumerate() {
        let path = format!("auth.keys[{i}]");
        if keys.iter().any(|o| *o.id == *k.id) {
            return Err((
                format!("{path}.id"),
                format!("`{}` is declared twice", k.id),
            ));
        }
        let record = key_record(k, &path, exact, model_exists, 0)?;
        if keys.iter().any(|o| o.hash == record.hash) {
            return Err((
                format!("{path}.hash"),
                "the same key is declared twice".into(),
            ));
        }
        keys.push(Arc::new(record));
    }
    Ok(AuthConfig { keys, jwt })
}

/// Validate one key (from the config file, or from the admin API with a hash the gateway
/// made) into its record. Errors are `(path under `path`, message)`.
pub fn key_record(
    k: RawKey,
    path: &str,
    exact: bool,
    model_exists: &dyn Fn(&str) -> bool,
    created_at_ms: u64,
) -> Result<KeyRecord, (String, String)> {
    check_name(&k.id).map_err(|m| (format!("{path}.id"), m))?;
    let hash: KeyHash = k.hash.parse().map_err(|_| {
        (
            format!("{path}.hash"),
            "expected sha256: and 64 hex digits (`shardgate keys hash` prints it)".to_owned(),
        )
    })?;
    for (field, name) in [("team", &k.team), ("user", &k.user)] {
        if let Some(n) = name {
            check_name(n).map_err(|m| (format!("{path}.{field}"), m))?;
        }
    }
    if let Some(name) = &k.name
        && (name.is_empty() || name.len() > 256 || name.chars().any(char::is_control))
    {
        return Err((
            format!("{path}.name"),
            "use 1 to 256 printable characters".to_owned(),
        ));
    }
    if let Some(models) = &k.models {
        for m in models {
            if !model_exists(m) {
                return Err((
                    format!("{path}.models"),
                    format!("model `{m}` is not configured"),
                ));
            }
        }
    }
    if k.metadata.len() > 64
        || k.metadata
            .iter()
            .any(|(a, b)| a.len() > MAX_NAME_BYTES || b.len() > 1024)
    {
        return Err((
            format!("{path}.metadata"),
            "at most 64 entries, names up to 128 bytes, values up to 1024".to_owned(),
        ));
    }
    k.limits
        .specs(exact)
        .map_err(|e| (format!("{path}.limits.{}", e.field), e.expect.to_owned()))?;
    Ok(KeyRecord {
        id: Arc::from(k.id.as_str()),
        name: Arc::from(k.name.as_deref().unwrap_or(k.id.as_str())),
        hash,
        team: k.team.as_deref().map(Arc::from),
        user: k.user.as_deref().map(Arc::from),
        models: k
            .models
            .map(|ms| ms.iter().map(|m| Arc::from(m.as_str())).collect()),
        expires_at_ms: k.expires_at_unix.map(|s| s.saturating_mul(1000)),
        created_at_ms,
        metadata: k.metadata,
        revoked: k.revoked,
        limits: k.limits,
    })
}

/// A key id, team or user name: 1 to 128 bytes of letters, digits, `-`, `_`, `.`, `@`, `:`.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}`: use 1 to {MAX_NAME_BYTES} letters, digits, `-`, `_`, `.`, `@` or `:`"
        ))
    }
}

/// `+HH:MM` / `-HH:MM` as seconds east of UTC.
fn parse_offset(text: &str) -> Option<i32> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 18 && m < 60 && h * 60 + m <= 18 * 60).then_some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_within_a_day() {
        assert_eq!(parse_offset("+00:00"), Some(0));
        assert_eq!(parse_offset("+05:30"), Some(19_800));
        assert_eq!(parse_offset("-08:00"), Some(-28_800));
        for bad in ["05:30", "+5:30", "+19:00", "+05:60", "+18:01", "", "+aa:bb"] {
            assert_eq!(parse_offset(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_are_plain() {
        assert!(check_name("team-a.prod_1@x:y").is_ok());
        for bad in ["", "a b", "é", "x/y", &"a".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
