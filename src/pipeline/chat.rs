//! Chat, past the edge (`POST /v1/chat/completions` and `POST /v1/messages`): resolve the
//! public model, prepare the call in the provider's format, and run it.

use std::rc::Rc;

use bytes::Bytes;
use http::{HeaderMap, Response};

use super::body::ResBody;
use super::context::RequestCtx;
use super::state::ShardState;
use crate::api::decode_chat;
use crate::config::ProviderKind;
use crate::error::{ErrorKind, GatewayError};
use crate::providers::{self, Dialect};

/// Run a chat request whose body was read whole, in the client's `dialect`.
pub async fn run(
    state: &Rc<ShardState>,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    body: Bytes,
    dialect: Dialect,
) -> Result<Response<ResBody>, GatewayError> {
    let (public, stream, include_usage) = match dialect {
        Dialect::OpenAi => {
            let head = decode_chat(&body, &mut state.scratch.borrow_mut())?;
            (head.model, head.stream, head.include_usage)
        }
        Dialect::Anthropic => {
            let head = providers::anthropic::translate::client_head(&body)?;
            (head.model, head.stream, false)
        }
    };
    let Some(model) = state.config.model(&public).cloned() else {
        return Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("The model `{public}` does not exist or you do not have access to it."),
        ));
    };
    let provider = state.config.providers[model.provider].clone();
    let target = state.targets.get(model.provider).and_then(Option::as_ref);
    let call = providers::prepare(
        dialect,
        &model,
        provider.kind,
        target,
        &body,
        stream,
        include_usage,
        headers,
    )?;
    match provider.kind {
        ProviderKind::Mock => super::local::chat(
            state,
            &model,
            &provider,
            &call.body,
            stream,
            &call.answer,
            headers,
        ),
        _ => super::attempt::send(state, ctx, &model, &provider, call).await,
    }
}
