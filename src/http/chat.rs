//! `POST /v1/chat/completions` and `POST /v1/messages` at the edge: the body read within its
//! size and time limits (framing errors answered and the connection closed), then the pipeline.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::error::{ErrorKind, GatewayError};
use crate::pipeline::body::{BodyCollector, ResBody};
use crate::pipeline::context::RequestCtx;
use crate::pipeline::state::ShardState;
use crate::providers::Dialect;
use crate::shard;

/// Handle a chat request: `POST /v1/chat/completions` (OpenAI dialect) or
/// `POST /v1/messages` (Anthropic dialect).
pub async fn completions(
    state: &Rc<ShardState>,
    ctx: &RequestCtx,
    req: Request<Incoming>,
    dialect: Dialect,
) -> Result<Response<ResBody>, GatewayError> {
    let (parts, body) = read_request(state, req).await?;
    crate::pipeline::chat::run(state, ctx, &parts.headers, body, dialect).await
}

/// Split a request and read its whole body within the configured size and time limits.
pub(super) async fn read_request(
    state: &ShardState,
    req: Request<Incoming>,
) -> Result<(http::request::Parts, Bytes), GatewayError> {
    let server = &state.config.server;
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > server.max_body_bytes as u64
    {
        if len <= (server.max_body_bytes + LINGER_BYTES) as u64 {
            // Read (and drop) the rest so the client sees the 413 instead of a reset.
            let _ = shard::timeout(server.header_timeout, discard(body, LINGER_BYTES)).await;
        }
        return Err(too_large(len, server.max_body_bytes));
    }
    let body = read_body(body, server.max_body_bytes, server.header_timeout).await?;
    Ok((parts, body))
}

fn too_large(len: u64, limit: usize) -> GatewayError {
    GatewayError::new(
        ErrorKind::PayloadTooLarge,
        format!("The request body is {len} bytes; the limit is {limit} bytes."),
    )
}

/// Bytes past the body limit the gateway reads and drops before answering 413, so that the
/// client reads the answer rather than a connection reset (a bounded lingering close).
const LINGER_BYTES: usize = 1024 * 1024;

/// Read and drop up to `max` bytes of a body.
async fn discard(mut body: Incoming, max: usize) {
    let mut seen = 0;
    while let Some(Ok(frame)) = body.frame().await {
        seen += frame.data_ref().map_or(0, Bytes::len);
        if seen > max {
            return;
        }
    }
}

/// A request body that failed to arrive: broken chunked framing or a body cut short is the
/// client's error (400, and the connection closes: its framing can no longer be trusted);
/// a reset or other socket error means the client is gone.
fn body_error(e: hyper::Error) -> GatewayError {
    let io_kind = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    let framing = e.is_incomplete_message()
        || matches!(
            io_kind,
            Some(
                std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::UnexpectedEof
            )
        );
    if framing {
        GatewayError::bad_request(
            "The request body's framing is invalid (a bad chunk size or line, or a body \
             shorter than declared).",
        )
        .with_cause(e)
        .closing()
    } else {
        GatewayError::new(ErrorKind::ClientGone, "The request body could not be read.")
            .with_cause(e)
    }
}

/// Read a whole request body, bounded in bytes and time. Zero-copy when it came in one frame.
async fn read_body(
    mut body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, GatewayError> {
    let read = async {
        let mut collected = BodyCollector::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(body_error)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let total = collected.len() + data.len();
            if total > limit {
                let _ = discard(body, LINGER_BYTES).await;
                return Err(too_large(total as u64, limit));
            }
            collected.push(data);
        }
        Ok(collected.finish())
    };
    // A small body usually arrived with the head: no timer for it.
    let mut read = std::pin::pin!(read);
    if let Some(done) = futures_lite::future::poll_once(read.as_mut()).await {
        return done;
    }
    shard::timeout(timeout, read).await.unwrap_or_else(|_| {
        Err(GatewayError::new(
            ErrorKind::RequestTimeout,
            format!(
                "The request body was not received within {} ms.",
                timeout.as_millis()
            ),
        ))
    })
}
