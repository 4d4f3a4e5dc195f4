//! The single rescue point: every [`GatewayError`] becomes a status, headers and an
//! OpenAI-shaped JSON body here, or a final SSE error event once a stream has started.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use std::time::Instant;

use crate::config::ServerConfig;
use crate::config::secrets::Redactor;
use crate::error::{ErrorKind, ErrorSource, GatewayError, UserFacing};
use crate::metrics::log_limit::LogKey;
use crate::pipeline::body::ResBody;
use crate::pipeline::context::RequestCtx;
use crate::pipeline::state::ShardState;
use crate::providers::Dialect;
use crate::providers::openai::translate::error_json;
use crate::shard::rt::HeadAnswers;

/// `x-shardgate-error`: present on every error the gateway made (absent on relayed ones).
pub static X_ERROR: HeaderName = HeaderName::from_static("x-shardgate-error");
/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-shardgate-overhead-us`.
pub static X_OVERHEAD: HeaderName = HeaderName::from_static("x-shardgate-overhead-us");

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The response for an error before any byte was sent, in the client's dialect.
pub fn error_response(err: &GatewayError, dialect: Dialect) -> Response<ResBody> {
    error_response_redacted(err, dialect, &Redactor::default())
}

/// [`error_response`], with every configured secret blanked from the message (which may
/// quote upstream text).
pub fn error_response_redacted(
    err: &GatewayError,
    dialect: Dialect,
    redactor: &Redactor,
) -> Response<ResBody> {
    let kind = err.kind();
    let message = err.to_client_string();
    let mut res = Response::new(ResBody::full(Bytes::from(
        dialect.error_body(kind, &redactor.redact_str(&message)),
    )));
    *res.status_mut() =
        StatusCode::from_u16(kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, JSON);
    h.insert(X_ERROR.clone(), HeaderValue::from_static(kind.as_str()));
    // Every 429 says when to come back (1 s unless known); so does any other refusal that
    // knows (the queue's 503).
    if kind.status() == 429 || err.retry_after().is_some() {
        let secs = err.retry_after().map_or(1, |d| d.as_secs().max(1));
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

/// The rescue of a request that failed before its response started: log the error (rate
/// limited, secrets blanked), count it, and render it in the client's dialect.
pub fn rescue(
    state: &ShardState,
    ctx: &RequestCtx,
    err: &GatewayError,
    dialect: Dialect,
) -> Response<ResBody> {
    log_error(state, ctx, err);
    state.count_error(err.kind());
    error_response_redacted(err, dialect, &state.redactor)
}

/// Log an error once, with the request id; metrics count it elsewhere. Upstream and internal
/// errors go through the shard's [`crate::metrics::log_limit::LogLimiter`] (per provider and kind), debug lines are
/// formatted only when enabled, and every line has the configured secrets blanked.
pub fn log_error(state: &ShardState, ctx: &RequestCtx, err: &GatewayError) {
    let side = err.source_side();
    let enabled = match side {
        ErrorSource::Internal => tracing::enabled!(tracing::Level::ERROR),
        ErrorSource::Upstream => tracing::enabled!(tracing::Level::WARN),
        ErrorSource::Downstream => tracing::enabled!(tracing::Level::DEBUG),
    };
    if !enabled {
        return;
    }
    let provider = ctx.provider.get();
    let suppressed = if side == ErrorSource::Downstream {
        0
    } else {
        let key = LogKey::new(provider, err.kind());
        match state.log_limit.borrow_mut().admit(key, Instant::now()) {
            Some(n) => n,
            None => return,
        }
    };
    let id = ctx.id.to_str().unwrap_or("-");
    let text = err.to_string();
    let text = state.redactor.redact_str(&text);
    let provider = provider
        .and_then(|i| state.config.providers.get(i))
        .map_or("-", |p| p.id.as_str());
    match side {
        ErrorSource::Internal => tracing::error!(
            request_id = id,
            provider,
            suppressed,
            error = %text,
            "Request failed."
        ),
        ErrorSource::Upstream => tracing::warn!(
            request_id = id,
            provider,
            suppressed,
            error = %text,
            "Upstream failed."
        ),
        ErrorSource::Downstream => {
            tracing::debug!(request_id = id, error = %text, "Request rejected.")
        }
    }
}

/// Stamp the headers every response carries.
pub fn stamp(res: &mut Response<ResBody>, ctx: &RequestCtx) {
    let h = res.headers_mut();
    h.insert(X_REQUEST_ID.clone(), ctx.id.clone());
    h.insert(
        X_OVERHEAD.clone(),
        HeaderValue::from(ctx.overhead().as_micros() as u64),
    );
    if let Some(q) = ctx.quota.get() {
        q.stamp(h);
    }
}

/// A whole static HTTP/1.1 error response (written by the IO layer, no request to stamp).
fn static_response(status: &str, kind: ErrorKind, message: &str) -> Vec<u8> {
    let body = error_json(kind, message);
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nx-shardgate-error: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        kind.as_str(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// The answers the IO layer writes itself: head timeout (408), head too large or with too
/// many fields (431), malformed head (400). Made once per shard at start-up and kept for the
/// process lifetime.
pub fn head_answers(server: &ServerConfig) -> &'static HeadAnswers {
    let timeout_ms = server.header_timeout.as_millis();
    let max_header_bytes = server.max_header_bytes;
    let max_headers = server.max_headers;
    Box::leak(Box::new(HeadAnswers {
        timeout: static_response(
            "408 Request Timeout",
            ErrorKind::RequestTimeout,
            &format!("The request head was not received within {timeout_ms} ms."),
        ),
        too_large: static_response(
            "431 Request Header Fields Too Large",
            ErrorKind::HeadersTooLarge,
            &format!("The request head is over the limit of {max_header_bytes} bytes."),
        ),
        too_many_headers: static_response(
            "431 Request Header Fields Too Large",
            ErrorKind::HeadersTooLarge,
            &format!(
                "The request has more header fields than the limit of {max_headers} \
                 (server.max_headers)."
            ),
        ),
        malformed: static_response(
            "400 Bad Request",
            ErrorKind::BadRequest,
            "The request head is not valid HTTP/1.1.",
        ),
        limit: max_header_bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::openai::translate::error_event;
    use http_body_util::BodyExt;

    #[test]
    fn errors_are_openai_shaped() {
        let e = GatewayError::new(ErrorKind::NotFound, "The model `x` does not exist.");
        let res = error_response(&e, Dialect::OpenAi);
        assert_eq!(res.status(), 404);
        assert_eq!(res.headers()[&X_ERROR], "not_found");
        let body = futures_lite::future::block_on(res.into_body().collect())
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["message"], "The model `x` does not exist.");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "not_found");
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        let e = GatewayError::new(ErrorKind::UpstreamStatus(429), "slow down")
            .with_retry_after(std::time::Duration::from_secs(7));
        let res = error_response(&e, Dialect::OpenAi);
        assert_eq!(res.status(), 429);
        assert_eq!(res.headers()[RETRY_AFTER], "7");
        let busy = GatewayError::new(ErrorKind::NoProvider, "busy")
            .with_retry_after(std::time::Duration::from_secs(2));
        let res = error_response(&busy, Dialect::OpenAi);
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[RETRY_AFTER], "2");
        let plain = error_response(
            &GatewayError::new(ErrorKind::NoProvider, "x"),
            Dialect::OpenAi,
        );
        assert!(plain.headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    fn messages_are_redacted_when_rendered() {
        let r = Redactor::new(&[crate::config::Secret::new("sk-canary-12345678")]);
        let e = GatewayError::bad_request("The upstream said: bad key sk-canary-12345678.");
        let res = error_response_redacted(&e, Dialect::Anthropic, &r);
        let body = futures_lite::future::block_on(res.into_body().collect())
            .unwrap()
            .to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("sk-canary"), "{text}");
        assert!(text.contains("bad key [REDACTED]."), "{text}");
    }

    #[test]
    fn error_event_is_one_sse_event() {
        let ev = error_event(ErrorKind::UpstreamProtocol, "cut");
        assert!(ev.starts_with(b"data: {\"error\":"));
        assert!(ev.ends_with(b"\n\n"));
        assert_eq!(crate::api::sse::data_payloads(&ev).count(), 1);
    }
}
