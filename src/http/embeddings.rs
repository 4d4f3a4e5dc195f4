//! `POST /v1/embeddings` at the edge: the body read within its limits, then the pipeline.

use std::rc::Rc;

use http::{Request, Response};
use hyper::body::Incoming;

use super::chat::read_request;
use crate::error::GatewayError;
use crate::pipeline::body::ResBody;
use crate::pipeline::context::RequestCtx;
use crate::pipeline::state::ShardState;

/// Handle an embeddings request.
pub async fn create(
    state: &Rc<ShardState>,
    ctx: &RequestCtx,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, GatewayError> {
    let (parts, body) = read_request(state, req).await?;
    crate::pipeline::embeddings::run(state, ctx, &parts.headers, body).await
}
