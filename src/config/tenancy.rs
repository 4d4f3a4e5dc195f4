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

use crate::auth::key::KeyHash;
use crate::auth::table::KeyRecord;
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
}

/// Who may call: the keys declared in the config.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Keys from the file.
    pub keys: Vec<Arc<KeyRecord>>,
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
            && self.models.iter().all(Vec::is_empty))
    }
}

/// Validate `[limits]`; `model_index` maps a public model name to its `ModelIdx`, and
/// `models` is their count.
pub fn limits(
    raw: RawLimits,
    models: usize,
    model_index: &dyn Fn(&str) -> Option<usize>,
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
    let mut teams = BTreeMap::new();
    for (name, s) in &raw.teams {
        check_name(name).map_err(|m| (format!("limits.teams.{name}"), m))?;
        teams.insert(
            Arc::from(name.as_str()),
            set(s, format!("limits.teams.{name}"))?,
        );
    }
    Ok(LimitsConfig {
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
    })
}

/// Validate `[auth]`; `model_exists` says whether a public model name is configured.
pub fn auth(
    raw: RawAuth,
    exact: bool,
    model_exists: &dyn Fn(&str) -> bool,
) -> Result<AuthConfig, (String, String)> {
    let mut keys: Vec<Arc<KeyRecord>> = Vec::with_capacity(raw.keys.len());
    for (i, k) in raw.keys.into_iter().enumerate() {
        let path = format!("auth.keys[{i}]");
        check_name(&k.id).map_err(|m| (format!("{path}.id"), m))?;
        if keys.iter().any(|o| *o.id == *k.id) {
            return Err((
                format!("{path}.id"),
                format!("`{}` is declared twice", k.id),
            ));
        }
        let hash: KeyHash = k.hash.parse().map_err(|_| {
            (
                format!("{path}.hash"),
                "expected sha256: and 64 hex digits (`shardgate keys hash` prints it)".to_owned(),
            )
        })?;
        if keys.iter().any(|o| o.hash == hash) {
            return Err((
                format!("{path}.hash"),
                "the same key is declared twice".into(),
            ));
        }
        for (field, name) in [("team", &k.team), ("user", &k.user)] {
            if let Some(n) = name {
                check_name(n).map_err(|m| (format!("{path}.{field}"), m))?;
            }
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
        k.limits
            .specs(exact)
            .map_err(|e| (format!("{path}.limits.{}", e.field), e.expect.to_owned()))?;
        keys.push(Arc::new(KeyRecord {
            id: Arc::from(k.id.as_str()),
            name: Arc::from(k.name.as_deref().unwrap_or(k.id.as_str())),
            hash,
            team: k.team.as_deref().map(Arc::from),
            user: k.user.as_deref().map(Arc::from),
            models: k
                .models
                .map(|ms| ms.iter().map(|m| Arc::from(m.as_str())).collect()),
            expires_at_ms: k.expires_at_unix.map(|s| s.saturating_mul(1000)),
            created_at_ms: 0,
            metadata: k.metadata,
            revoked: k.revoked,
            limits: k.limits,
        }));
    }
    Ok(AuthConfig { keys })
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
