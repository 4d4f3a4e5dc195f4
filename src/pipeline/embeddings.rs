//! `POST /v1/embeddings`, past the edge: OpenAI-compatible upstreams get the body untouched
//! but for the model name; Gemini upstreams get `batchEmbedContents` and the answer comes back
//! in OpenAI's shape; the in-process mock answers locally.

use std::rc::Rc;

use bytes::Bytes;
use http::Response;

use super::attempts::Prepared;
use super::body::ResBody;
use super::context::RequestCtx;
use super::local;
use super::state::ShardState;
use crate::api::TranslateError;
use crate::api::embeddings::{EmbeddingsRequest, estimate_tokens};
use crate::config::{ModelRoute, ProviderKind};
use crate::error::{ErrorKind, GatewayError};
use crate::providers::call::{Answer, Call};
use crate::providers::{Dialect, gemini};
use crate::routing::plan::Needs;

/// Run an embeddings request whose body was read whole.
pub async fn run(
    state: &Rc<ShardState>,
    ctx: &RequestCtx,
    headers: &http::HeaderMap,
    body: Bytes,
) -> Result<Response<ResBody>, GatewayError> {
    #[derive(serde::Deserialize)]
    struct Head {
        model: Option<String>,
        #[serde(default)]
        user: Option<String>,
    }
    let caller = super::admit::authenticate(state, headers, super::admit::now_ms())?;
    let head: Head = serde_json::from_slice(&body).map_err(|e| {
        GatewayError::bad_request(format!(
            "We could not parse the JSON body of your request ({e}). Send a valid JSON object."
        ))
    })?;
    let Some(public) = head.model.filter(|m| !m.is_empty()) else {
        return Err(GatewayError::bad_request(
            "you must provide a model parameter",
        ));
    };
    let Some(model) = state.config.model(&public).cloned() else {
        return Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("The model `{public}` does not exist or you do not have access to it."),
        ));
    };
    let user = head
        .user
        .filter(|u| !u.is_empty())
        .or_else(|| super::chat::end_user(state, headers));
    let downgrade = super::admit::admit(
        state,
        ctx,
        &super::admit::Admission {
            caller: caller.as_ref(),
            public: &public,
            model: &model,
            body_len: body.len(),
            // Embeddings have no output tokens.
            max_tokens: Some(0),
            user: user.as_deref(),
        },
    )
    .await?;
    let cacheable = match downgrade {
        Some(_) => None,
        None => super::cache::cacheable(
            state,
            (caller.as_ref(), None),
            &model,
            super::cache::EMBEDDINGS,
            Dialect::OpenAi,
            &body,
            headers,
            false,
            false,
        ),
    };
    let flight = match super::cache::before(state, cacheable.as_ref(), headers).await {
        std::ops::ControlFlow::Break(res) => return Ok(res),
        std::ops::ControlFlow::Continue(flight) => flight,
    };
    let model = downgrade.unwrap_or(model);
    let res = call(state, ctx, &public, &model, &body).await;
    super::cache::after(state, cacheable, flight, res)
}

/// Send an embeddings request (`body`, OpenAI's shape) to `model`'s deployments: retries,
/// failover and translation as for a client's request, with no cache and no admission (the
/// caller admitted it, or it is the gateway's own: the semantic cache's embeddings).
pub async fn call(
    state: &Rc<ShardState>,
    ctx: &RequestCtx,
    public: &str,
    model: &ModelRoute,
    body: &Bytes,
) -> Result<Response<ResBody>, GatewayError> {
    // Embeddings have no output tokens.
    let needs = Needs {
        max_tokens: Some(0),
        ..Needs::default()
    };
    super::attempts::run(state, ctx, public, model.idx(), &needs, |served| {
        let upstream = &*served.dep.upstream_model;
        let target = state
            .targets
            .get(served.dep.provider.get())
            .and_then(Option::as_ref);
        let path = |p: &str| target.map(|t| t.uris(p)).transpose();
        let call = match served.provider.kind {
            ProviderKind::OpenAi => Call {
                body: crate::api::chat::rewrite_model(body, public, upstream)?,
                uris: path("/embeddings")?,
                headers: Vec::new(),
                stream: false,
                answer: Answer::Pass {
                    dialect: Dialect::OpenAi,
                    strip_usage: false,
                },
            },
            ProviderKind::Gemini => {
                let req = EmbeddingsRequest::from_json(body)?;
                let texts = req.texts("gemini")?;
                let wire = gemini::translate::embed_to_wire(&req, upstream)?;
                let bytes = serde_json::to_vec(&wire).map_err(|e| {
                    GatewayError::internal("Cannot encode the request.").with_cause(e)
                })?;
                Call {
                    body: Bytes::from(bytes),
                    uris: path(&format!("/models/{upstream}:batchEmbedContents"))?,
                    headers: Vec::new(),
                    stream: false,
                    answer: Answer::GeminiEmbeddings {
                        model: public.to_owned(),
                        base64: req.base64(),
                        input_tokens: estimate_tokens(&texts),
                    },
                }
            }
            ProviderKind::Anthropic => {
                return Err(TranslateError::unsupported(
                    "embeddings with an anthropic model (Anthropic has no embeddings API)",
                )
                .into());
            }
            ProviderKind::Mock => {
                let req = EmbeddingsRequest::from_json(body)?;
                return local::embeddings(state, served, &req).map(Prepared::Local);
            }
        };
        Ok(Prepared::Upstream(call))
    })
    .await
}
