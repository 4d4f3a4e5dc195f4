//! Chat, past the edge (`POST /v1/chat/completions` and `POST /v1/messages`): resolve the
//! public model, prepare the call in the provider's format, and run it.

use std::rc::Rc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Response};

use super::admit;
use super::attempts::{Prepared, X_DEPLOYMENT};
use super::body::ResBody;
use super::context::RequestCtx;
use super::state::ShardState;
use crate::api::decode_chat;
use crate::config::{Capabilities, Config, ModelRoute, ProviderKind};
use crate::error::{ErrorKind, GatewayError};
use crate::providers::{self, Dialect};
use crate::routing::plan::Needs;

/// Run a chat request whose body was read whole, in the client's `dialect`.
pub async fn run(
    state: &Rc<ShardState>,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    body: Bytes,
    dialect: Dialect,
) -> Result<Response<ResBody>, GatewayError> {
    let caller = admit::authenticate(state, headers, admit::now_ms())?;
    run_as(state, ctx, headers, body, dialect, caller, None).await
}

/// Run a chat request for `caller` (already authenticated, or the gateway's own refresh key),
/// its answer filed for `tenant` when given (a refresh files under the tenant whose answer it
/// refreshes) rather than the caller's.
pub async fn run_as(
    state: &Rc<ShardState>,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    body: Bytes,
    dialect: Dialect,
    caller: Option<std::sync::Arc<crate::auth::table::KeyRecord>>,
    tenant: Option<&crate::cache::Tenant>,
) -> Result<Response<ResBody>, GatewayError> {
    let (public, stream, include_usage, max_tokens, user) = match dialect {
        Dialect::OpenAi => {
            let head = decode_chat(&body, &mut state.scratch.borrow_mut())?;
            (
                head.model,
                head.stream,
                head.include_usage,
                head.max_tokens,
                head.user,
            )
        }
        Dialect::Anthropic => {
            let head = providers::anthropic::translate::client_head(&body)?;
            (
                head.model,
                head.stream,
                false,
                Some(head.max_tokens),
                head.user,
            )
        }
    };
    let Some(model) = state.config.model(&public).cloned() else {
        return Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("The model `{public}` does not exist or you do not have access to it."),
        ));
    };
    let user = user.or_else(|| end_user(state, headers));
    let downgrade = admit::admit(
        state,
        ctx,
        &admit::Admission {
            caller: caller.as_ref(),
            public: &public,
            model: &model,
            body_len: body.len(),
            max_tokens,
            user: user.as_deref(),
        },
    )
    .await?;
    // The cache answers for the model asked for; a downgraded request is not cached.
    let cacheable = match (&downgrade, dialect) {
        (Some(_), _) => None,
        (None, Dialect::OpenAi) => super::cache::cacheable(
            state,
            (caller.as_ref(), tenant),
            &model,
            "chat",
            dialect,
            &body,
            headers,
            stream,
            include_usage,
        ),
        (None, Dialect::Anthropic) => super::cache::cacheable(
            state,
            (caller.as_ref(), tenant),
            &model,
            "messages",
            dialect,
            &body,
            headers,
            stream,
            false,
        ),
    };
    let flight = match super::cache::before(state, cacheable.as_ref(), headers).await {
        std::ops::ControlFlow::Break(res) => return Ok(res),
        std::ops::ControlFlow::Continue(flight) => flight,
    };
    // Past a `restrict` threshold: served by the cheaper model of the downgrade map.
    let model = downgrade.unwrap_or(model);
    let tags = header_list(headers, &X_TAGS);
    let pin = header_list(headers, &X_DEPLOYMENT);
    let needs = Needs {
        caps: if caps_matter(&state.config, &model) {
            needed_caps(&body)
        } else {
            Capabilities::NONE
        },
        prompt_tokens: estimate_prompt_tokens(&body),
        tags: &tags,
        pin: &pin,
        stream,
        max_tokens,
    };
    let res = super::attempts::run(state, ctx, &public, model.idx(), &needs, |served| {
        let target = state
            .targets
            .get(served.dep.provider.get())
            .and_then(Option::as_ref);
        let call = providers::prepare(
            dialect,
            served.public,
            &served.dep.upstream_model,
            served.provider.kind,
            target,
            &body,
            stream,
            include_usage,
            headers,
        )?;
        if served.provider.kind == ProviderKind::Mock {
            return super::local::chat(
                state,
                served,
                served.provider,
                &call.body,
                stream,
                &call.answer,
                headers,
            )
            .map(Prepared::Local);
        }
        Ok(Prepared::Upstream(call))
    })
    .await;
    super::cache::after(state, cacheable, flight, res)
}

/// The end user named by the configured header (`limits.user_header`), when the body names
/// none: at most 128 bytes, so that a header cannot make a meter key of any size.
pub fn end_user(state: &ShardState, headers: &HeaderMap) -> Option<String> {
    headers
        .get(&state.config.limits.user_header)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|u| !u.is_empty() && u.len() <= 128)
        .map(str::to_owned)
}

/// `x-shardgate-tags`: tags every deployment tried must carry, comma-separated.
pub static X_TAGS: HeaderName = HeaderName::from_static("x-shardgate-tags");

/// A comma-separated header's items (at most a few; empty when absent).
fn header_list<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Vec<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .take(16)
                .collect()
        })
        .unwrap_or_default()
}

/// What a request uses beyond plain chat, from a scan of its body (no second decode). A
/// false positive (the word in a message's text) only narrows the choice to deployments
/// that have the capability, which by default all do.
pub fn needed_caps(body: &[u8]) -> Capabilities {
    let has = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    Capabilities {
        tools: has(b"\"tools\"") || has(b"\"functions\""),
        vision: has(b"\"image_url\"") || has(b"\"type\":\"image\""),
        json_mode: has(b"\"response_format\""),
    }
}

/// Whether any deployment the request may reach (the model's or its fallbacks') lacks a
/// capability: only then is the body scanned for what it uses (a few `memmem` passes, which
/// cost microseconds on a large body).
fn caps_matter(config: &Config, route: &ModelRoute) -> bool {
    let routes = std::iter::once(route).chain(
        route
            .fallbacks
            .iter()
            .filter_map(|m| config.models.get(m.get()).map(|r| &**r)),
    );
    routes
        .flat_map(|r| r.deployments.iter())
        .filter_map(|d| config.deployments.get(d.get()))
        .any(|d| d.caps != Capabilities::ALL)
}

/// Prompt tokens, estimated from the body's size (about four bytes per token).
pub fn estimate_prompt_tokens(body: &[u8]) -> u32 {
    u32::try_from(body.len() / 4).unwrap_or(u32::MAX)
}
