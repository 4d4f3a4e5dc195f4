//! Admin paths → handlers. Each handler is one actor call; errors go to
//! [`AdminError::into_response`].
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /admin/keys` (a `NewKey`) | 201 `{"key": "<secret, shown once>", "record": {..}}` |
//! | `GET /admin/keys` | `{"keys": [records by id]}` |
//! | `GET /admin/keys/{id}` | the record |
//! | `PATCH /admin/keys/{id}` (a `KeyPatch`) | the record as changed |
//! | `POST /admin/keys/{id}/revoke` | the record, revoked |
//! | `GET /admin/scores` | the scorer's table (as the main listener's `/admin/scores`) |
//! | `GET /admin/spend?from=&to=&scope=` | `{"from","to","rows":[..]}`: the spend book by day |
//! | `GET /admin/limits` | `{"limits":[..]}`: every meter in use, its window and leases |
//! | `DELETE /admin/cache?key=|model=|tenant=|tag=|prefix=|all=true` | 202 `{"invalidated": {..}, "shards": n}`: this node's shards, Redis and (over pub/sub) the other nodes |

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use ractor::rpc::CallResult;
use ractor::{ActorRef, Message, RpcReplyPort};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Admin, AdminError, BODY_TIMEOUT, CALL_TIMEOUT, MAX_BODY_BYTES};
use crate::actors::budgeter::{BudgeterMsg, MeterView};
use crate::actors::keyring::{KeyPatch, NewKey};
use crate::actors::scorer::ScorerMsg;
use crate::actors::store::SpendScope;
use crate::auth::table::KeyRecord;

/// An admin endpoint, with the key id it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `POST /admin/keys`.
    CreateKey,
    /// `GET /admin/keys`.
    ListKeys,
    /// `GET /admin/keys/{id}`.
    GetKey(&'a str),
    /// `PATCH /admin/keys/{id}`.
    UpdateKey(&'a str),
    /// `POST /admin/keys/{id}/revoke`.
    RevokeKey(&'a str),
    /// `GET /admin/scores`.
    Scores,
    /// `GET /admin/spend`.
    Spend,
    /// `GET /admin/limits`.
    Limits,
    /// `DELETE /admin/cache`.
    Cache,
}

/// The route a method and path name, or why none does.
pub fn route<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, AdminError> {
    let not_found = || AdminError::NotFound(format!("Invalid URL ({method} {path})."));
    let rest = path.strip_prefix("/admin/").ok_or_else(not_found)?;
    let segments: Vec<&str> = rest.split('/').collect();
    let found = match segments.as_slice() {
        ["keys"] => match *method {
            Method::GET => Some(Route::ListKeys),
            Method::POST => Some(Route::CreateKey),
            _ => None,
        },
        ["keys", id] if !id.is_empty() => match *method {
            Method::GET => Some(Route::GetKey(id)),
            Method::PATCH => Some(Route::UpdateKey(id)),
            _ => None,
        },
        ["keys", id, "revoke"] if !id.is_empty() => {
            (*method == Method::POST).then_some(Route::RevokeKey(id))
        }
        ["scores"] => (*method == Method::GET).then_some(Route::Scores),
        ["spend"] => (*method == Method::GET).then_some(Route::Spend),
        ["limits"] => (*method == Method::GET).then_some(Route::Limits),
        ["cache"] => (*method == Method::DELETE).then_some(Route::Cache),
        _ => return Err(not_found()),
    };
    found.ok_or_else(|| AdminError::MethodNotAllowed {
        method: method.to_string(),
        path: path.to_owned(),
    })
}

/// Handle one admin request. Never fails: every error is rendered.
pub async fn handle(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    // The token first: without it, not even whether a path exists is told.
    let result = if crate::auth::admin_token::authorized(req.headers(), &admin.token) {
        dispatch(admin, req).await
    } else {
        Err(AdminError::Unauthorized)
    };
    result.unwrap_or_else(|e| e.into_response(&admin.redactor))
}

async fn dispatch(
    admin: &Admin,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, AdminError> {
    let (parts, body) = req.into_parts();
    match route(&parts.method, parts.uri.path())? {
        Route::CreateKey => {
            let new: NewKey = read_json(body).await?;
            let made = call(&admin.budgeter, |r| BudgeterMsg::CreateKey(new, r)).await??;
            tracing::info!(key = %made.record.id, "Admin API: key created.");
            #[derive(Serialize)]
            struct Created<'a> {
                key: &'a str,
                record: &'a KeyRecord,
            }
            let body = Created {
                key: made.secret.expose(),
                record: &made.record,
            };
            respond(StatusCode::CREATED, &body)
        }
        Route::ListKeys => {
            let keys = call(&admin.budgeter, BudgeterMsg::ListKeys).await?;
            #[derive(Serialize)]
            struct Keys {
                keys: Vec<Arc<KeyRecord>>,
            }
            respond(StatusCode::OK, &Keys { keys })
        }
        Route::GetKey(id) => {
            let id = id.to_owned();
            let found = call(&admin.budgeter, |r| BudgeterMsg::GetKey(id.clone(), r)).await?;
            let record = found.ok_or_else(|| AdminError::NotFound(format!("No key `{id}`.")))?;
            respond(StatusCode::OK, &*record)
        }
        Route::UpdateKey(id) => {
            let patch: KeyPatch = read_json(body).await?;
            let id = id.to_owned();
            let record = call(&admin.budgeter, |r| BudgeterMsg::UpdateKey(id, patch, r)).await??;
            tracing::info!(key = %record.id, "Admin API: key changed.");
            respond(StatusCode::OK, &*record)
        }
        Route::RevokeKey(id) => {
            let id = id.to_owned();
            let record = call(&admin.budgeter, |r| BudgeterMsg::RevokeKey(id, r)).await??;
            tracing::info!(key = %record.id, "Admin API: key revoked.");
            respond(StatusCode::OK, &*record)
        }
        Route::Scores => {
            let table = call(&admin.scorer, ScorerMsg::Snapshot).await?;
            respond(StatusCode::OK, &*table)
        }
        Route::Spend => {
            let today = crate::actors::store::utc_day(crate::actors::budgeter::now_ms());
            let q = SpendQuery::parse(parts.uri.query().unwrap_or(""), today)?;
            let rows = call(&admin.budgeter, |reply| BudgeterMsg::Spend {
                from: q.from,
                to: q.to,
                reply,
            })
            .await?
            .map_err(|e| AdminError::Internal(format!("Cannot read the spend book: {e}.")))?;
            let rows: Vec<SpendLine> = rows
                .iter()
                .filter(|(scope, _, _)| q.scope.is_none_or(|k| scope_parts(scope).0 == k))
                .map(|(scope, day, t)| {
                    let (kind, id) = scope_parts(scope);
                    SpendLine {
                        day: *day,
                        scope: kind,
                        id,
                        spend_usd: crate::budget::Cost(t.nano_usd).usd(),
                        nano_usd: t.nano_usd,
                        input_tokens: t.input_tokens,
                        output_tokens: t.output_tokens,
                        requests: t.requests,
                    }
                })
                .collect();
            #[derive(Serialize)]
            struct Spend<'a> {
                from: u32,
                to: u32,
                rows: Vec<SpendLine<'a>>,
            }
            respond(
                StatusCode::OK,
                &Spend {
                    from: q.from,
                    to: q.to,
                    rows,
                },
            )
        }
        Route::Cache => {
            let selector = cache_selector(parts.uri.query().unwrap_or(""))?;
            for s in &admin.shards {
                let _ = s.send(crate::actors::ShardCmd::CacheInvalidate(selector.clone()));
            }
            if let Some(l2) = &admin.cache_l2 {
                let _ = l2.send(crate::cache::l2::L2Request::Invalidate(selector.clone()));
            }
            tracing::info!(selector = ?selector, "Admin API: cache invalidated.");
            #[derive(Serialize)]
            struct Invalidated {
                invalidated: String,
                shards: usize,
            }
            respond(
                StatusCode::ACCEPTED,
                &Invalidated {
                    invalidated: format!("{selector:?}"),
                    shards: admin.shards.len(),
                },
            )
        }
        Route::Limits => {
            let meters = call(&admin.budgeter, BudgeterMsg::Limits).await?;
            let limits: Vec<LimitLine> = meters.iter().map(LimitLine::of).collect();
            #[derive(Serialize)]
            struct Limits<'a> {
                limits: Vec<LimitLine<'a>>,
            }
            respond(StatusCode::OK, &Limits { limits })
        }
    }
}

/// `DELETE /admin/cache`'s selector: exactly one of `key` (32 hex digits, as
/// `x-shardgate-cache-key` shows it), `model`, `tenant` (`global`, `key:<id>`, `team:<id>`),
/// `tag`, `prefix` (hex digits of the key) or `all=true`.
fn cache_selector(query: &str) -> Result<crate::cache::Selector, AdminError> {
    let pairs = url_pairs(query);
    let [(name, value)] = pairs.as_slice() else {
        return Err(AdminError::Invalid {
            param: Some("query".to_owned()),
            message: "Name exactly one of key, model, tenant, tag, prefix or all=true.".into(),
        });
    };
    crate::cache::Selector::parse(name, value).map_err(|message| AdminError::Invalid {
        param: Some(name.clone()),
        message,
    })
}

/// A query string's `name=value` pairs, percent-decoded.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(n), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escaped = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], escaped) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One row of `GET /admin/spend`.
#[derive(Serialize)]
struct SpendLine<'a> {
    day: u32,
    scope: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    spend_usd: f64,
    nano_usd: u64,
    input_tokens: u64,
    output_tokens: u64,
    requests: u64,
}

/// A spend scope's kind and id.
fn scope_parts(scope: &SpendScope) -> (&'static str, Option<&str>) {
    match scope {
        SpendScope::Global => ("global", None),
        SpendScope::Key(id) => ("key", Some(id)),
        SpendScope::Team(id) => ("team", Some(id)),
        SpendScope::User(id) => ("user", Some(id)),
        SpendScope::Model(id) => ("model", Some(id)),
    }
}

/// `GET /admin/spend`'s query: `from` and `to` (UTC days, `yyyymmdd`, default today, at most
/// 366 days apart) and `scope` (`global`, `key`, `team`, `user` or `model`; default all).
#[derive(Debug, PartialEq, Eq)]
struct SpendQuery {
    from: u32,
    to: u32,
    scope: Option<&'static str>,
}

impl SpendQuery {
    fn parse(query: &str, today: u32) -> Result<Self, AdminError> {
        let bad = |param: &str, message: &str| AdminError::Invalid {
            param: Some(param.to_owned()),
            message: message.to_owned(),
        };
        let day = |v: &str, param: &str| {
            v.parse::<u32>()
                .ok()
                .filter(|d| {
                    (19_700_101..=99_991_231).contains(d)
                        && (1..=12).contains(&(d / 100 % 100))
                        && (1..=31).contains(&(d % 100))
                })
                .ok_or_else(|| bad(param, "A day is yyyymmdd, such as 20261202."))
        };
        let (mut from, mut to, mut scope) = (None, None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "from" => from = Some(day(v, "from")?),
                "to" => to = Some(day(v, "to")?),
                "scope" => {
                    scope = Some(
                        ["global", "key", "team", "user", "model"]
                            .into_iter()
                            .find(|s| *s == v)
                            .ok_or_else(|| {
                                bad("scope", "The scope is global, key, team, user or model.")
                            })?,
                    );
                }
                _ => return Err(bad(k, "Unknown parameter: from, to and scope are known.")),
            }
        }
        let to = to.unwrap_or(today);
        let from = from.unwrap_or(to);
        if from > to {
            return Err(bad("from", "`from` is after `to`."));
        }
        // yyyymmdd numbers: a year apart is 10,000.
        if to - from > 10_000 {
            return Err(bad("from", "At most a year at a time."));
        }
        Ok(Self { from, to, scope })
    }
}

/// One meter of `GET /admin/limits`.
#[derive(Serialize)]
struct LimitLine<'a> {
    scope: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    measure: &'static str,
    period: &'static str,
    /// Units: requests, tokens, requests in flight, or nano-USD for spend.
    max: u64,
    used: u64,
    out: u64,
    remaining: u64,
    window_end_ms: u64,
    /// This node's shards' leases: (shard, units).
    leases: &'a [(u16, u64)],
}

impl<'a> LimitLine<'a> {
    fn of(m: &'a MeterView) -> Self {
        Self {
            scope: m.key.scope.as_str(),
            id: m.key.scope.id(),
            measure: m.key.measure.as_str(),
            period: m.key.period.as_str(),
            max: m.status.max,
            used: m.status.used,
            out: m.status.out,
            remaining: m.status.remaining,
            window_end_ms: m.status.window_end_ms,
            leases: &m.leases,
        }
    }
}

/// Ask an actor and wait for its answer, at most [`CALL_TIMEOUT`].
async fn call<M: Message, T: Send + 'static>(
    actor: &ActorRef<M>,
    msg: impl FnOnce(RpcReplyPort<T>) -> M,
) -> Result<T, AdminError> {
    match actor.call(msg, Some(CALL_TIMEOUT)).await {
        Ok(CallResult::Success(answer)) => Ok(answer),
        Ok(CallResult::Timeout) => {
            tracing::warn!(actor = ?actor.get_name(), "Admin API: the actor did not answer in time.");
            Err(AdminError::Unavailable)
        }
        Ok(CallResult::SenderError) | Err(_) => Err(AdminError::Unavailable),
    }
}

/// The body as `T`: at most [`MAX_BODY_BYTES`], within [`BODY_TIMEOUT`]; an empty body reads
/// as `{}`.
async fn read_json<T: DeserializeOwned>(body: Incoming) -> Result<T, AdminError> {
    let collected =
        tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY_BYTES).collect())
            .await
            .map_err(|_| AdminError::Timeout)?
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    AdminError::TooLarge
                } else {
                    AdminError::Invalid {
                        param: None,
                        message: "The request body could not be read.".into(),
                    }
                }
            })?;
    let bytes = collected.to_bytes();
    let text: &[u8] = if bytes.trim_ascii().is_empty() {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(text).map_err(|e| AdminError::bad_json(&e))
}

fn respond<T: Serialize + ?Sized>(
    status: StatusCode,
    body: &T,
) -> Result<Response<Full<Bytes>>, AdminError> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| AdminError::Internal(format!("Cannot render the answer: {e}.")))?;
    Ok(super::json(status, Bytes::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_methods() {
        let ok = |m: Method, p: &'static str| route(&m, p).unwrap();
        assert_eq!(ok(Method::POST, "/admin/keys"), Route::CreateKey);
        assert_eq!(ok(Method::GET, "/admin/keys"), Route::ListKeys);
        assert_eq!(ok(Method::GET, "/admin/keys/ci"), Route::GetKey("ci"));
        assert_eq!(
            ok(Method::PATCH, "/admin/keys/a:b"),
            Route::UpdateKey("a:b")
        );
        assert_eq!(
            ok(Method::POST, "/admin/keys/ci/revoke"),
            Route::RevokeKey("ci")
        );
        assert_eq!(ok(Method::GET, "/admin/scores"), Route::Scores);
        assert_eq!(ok(Method::GET, "/admin/spend"), Route::Spend);
        assert_eq!(ok(Method::GET, "/admin/limits"), Route::Limits);
        assert_eq!(ok(Method::DELETE, "/admin/cache"), Route::Cache);
        for (m, p) in [
            (Method::DELETE, "/admin/keys"),
            (Method::POST, "/admin/keys/ci"),
            (Method::GET, "/admin/keys/ci/revoke"),
            (Method::POST, "/admin/scores"),
            (Method::POST, "/admin/spend"),
            (Method::DELETE, "/admin/limits"),
            (Method::GET, "/admin/cache"),
        ] {
            assert_eq!(route(&m, p).unwrap_err().status(), 405, "{m} {p}");
        }
        for p in [
            "/",
            "/admin",
            "/admin/",
            "/admin/keys/",
            "/admin/keys//revoke",
            "/admin/keys/ci/revoke/x",
            "/admin/routes",
            "/v1/chat/completions",
        ] {
            assert_eq!(route(&Method::GET, p).unwrap_err().status(), 404, "{p}");
        }
    }

    #[test]
    fn cache_selectors() {
        use crate::cache::{CacheKey, Selector, Tenant};
        let key = "00112233445566778899aabbccddeeff";
        let Ok(Selector::Key(CacheKey(k))) = cache_selector(&format!("key={key}")) else {
            panic!("a key");
        };
        assert_eq!(k[1], 0x11);
        assert_eq!(
            cache_selector("model=gpt%2D4o").unwrap(),
            Selector::Model("gpt-4o".into())
        );
        assert_eq!(
            cache_selector("tag=a+b").unwrap(),
            Selector::Tag("a b".into())
        );
        assert_eq!(
            cache_selector("tenant=team:blue").unwrap(),
            Selector::Tenant(Tenant::Team("blue".into()))
        );
        assert_eq!(
            cache_selector("tenant=global").unwrap(),
            Selector::Tenant(Tenant::Global)
        );
        assert_eq!(
            cache_selector("prefix=AB").unwrap(),
            Selector::Prefix("ab".into())
        );
        assert_eq!(cache_selector("all=true").unwrap(), Selector::All);
        for bad in [
            "",
            "key=123",
            "key=zz112233445566778899aabbccddeeff",
            "model=",
            "tenant=key:",
            "tenant=people",
            "prefix=xyz",
            "all=yes",
            "model=a&tag=b",
            "size=1",
        ] {
            assert!(cache_selector(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spend_queries() {
        let today = 20261202;
        let q = |s: &str| SpendQuery::parse(s, today);
        assert_eq!(
            q("").unwrap(),
            SpendQuery {
                from: today,
                to: today,
                scope: None
            }
        );
        assert_eq!(
            q("from=20261101&scope=team").unwrap(),
            SpendQuery {
                from: 20261101,
                to: today,
                scope: Some("team")
            }
        );
        assert_eq!(q("to=20261130").unwrap().from, 20261130);
        for (bad, param) in [
            ("from=2026-12-01", "from"),
            ("to=20261332", "to"),
            ("from=20261203", "from"),
            ("from=20241201", "from"),
            ("scope=everyone", "scope"),
            ("day=20261202", "day"),
        ] {
            match q(bad) {
                Err(AdminError::Invalid { param: Some(p), .. }) => assert_eq!(p, param, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
