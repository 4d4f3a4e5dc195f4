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
use crate::actors::budgeter::BudgeterMsg;
use crate::actors::keyring::{KeyPatch, NewKey};
use crate::actors::scorer::ScorerMsg;
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
        for (m, p) in [
            (Method::DELETE, "/admin/keys"),
            (Method::POST, "/admin/keys/ci"),
            (Method::GET, "/admin/keys/ci/revoke"),
            (Method::POST, "/admin/scores"),
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
}
