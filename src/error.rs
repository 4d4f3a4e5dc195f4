//! Per-request errors: one type, [`GatewayError`], with three axes (kind, source, retry).
//!
//! Owns: the error vocabulary of the request path and the client-safe text of each error.
//! Does not: render anything. `http::respond` is the one place that turns an error into a
//! status, headers and an OpenAI-shaped body (or a final SSE error event).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// What went wrong, from a fixed list. Metrics and the `x-shardgate-error` header use
/// [`ErrorKind::as_str`], never `to_string()` of an error, so label cardinality stays fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or semantically invalid (400).
    BadRequest,
    /// No such route or model (404).
    NotFound,
    /// The route exists but not for this method (405).
    MethodNotAllowed,
    /// The request body is over the configured limit (413).
    PayloadTooLarge,
    /// The client took too long to send its request head (408).
    RequestTimeout,
    /// The request head is over the limit (431).
    HeadersTooLarge,
    /// Missing or wrong credentials (401).
    Unauthorized,
    /// The credentials are good but do not allow this request (a model the key may not use) (403).
    Forbidden,
    /// A rate limit was hit, here or upstream (429).
    RateLimited,
    /// A spend budget is used up (429, `insufficient_quota`).
    BudgetExceeded,
    /// No deployment can serve the model right now (503).
    NoProvider,
    /// The gateway is draining and takes no new work (503).
    Draining,
    /// The upstream could not be reached (502).
    UpstreamConnect,
    /// The upstream did not answer in time (504).
    UpstreamTimeout,
    /// The upstream answered with an error status (502, or relayed).
    UpstreamStatus(u16),
    /// The upstream broke the protocol or the connection mid-answer (502).
    UpstreamProtocol,
    /// The client went away; nothing is sent.
    ClientGone,
    /// A bug or an unexpected state in the gateway (500).
    Internal,
}

impl ErrorKind {
    /// Stable, low-cardinality name used in headers, metrics and the `code` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::HeadersTooLarge => "headers_too_large",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::BudgetExceeded => "budget_exceeded",
            Self::NoProvider => "no_provider",
            Self::Draining => "draining",
            Self::UpstreamConnect => "upstream_connect",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamStatus(_) => "upstream_status",
            Self::UpstreamProtocol => "upstream_protocol",
            Self::ClientGone => "client_gone",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status shown to the client for this kind.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::PayloadTooLarge => 413,
            Self::HeadersTooLarge => 431,
            Self::RateLimited | Self::BudgetExceeded => 429,
            Self::UpstreamStatus(429) => 429,
            Self::UpstreamConnect | Self::UpstreamProtocol | Self::UpstreamStatus(_) => 502,
            Self::NoProvider | Self::Draining => 503,
            Self::UpstreamTimeout => 504,
            Self::ClientGone => 499,
            Self::Internal => 500,
        }
    }

    /// The OpenAI `type` field for this kind.
    pub fn openai_type(self) -> &'static str {
        match self {
            Self::BadRequest
            | Self::NotFound
            | Self::MethodNotAllowed
            | Self::PayloadTooLarge
            | Self::HeadersTooLarge
            | Self::RequestTimeout => "invalid_request_error",
            Self::Unauthorized => "authentication_error",
            Self::Forbidden => "permission_error",
            Self::RateLimited | Self::UpstreamStatus(429) => "rate_limit_error",
            Self::BudgetExceeded => "insufficient_quota",
            Self::UpstreamConnect
            | Self::UpstreamTimeout
            | Self::UpstreamStatus(_)
            | Self::UpstreamProtocol
            | Self::NoProvider => "upstream_error",
            Self::Draining | Self::ClientGone | Self::Internal => "server_error",
        }
    }

    /// Where errors of this kind come from by default.
    fn default_source(self) -> ErrorSource {
        match self {
            Self::UpstreamConnect
            | Self::UpstreamTimeout
            | Self::UpstreamStatus(_)
            | Self::UpstreamProtocol => ErrorSource::Upstream,
            Self::Internal | Self::NoProvider | Self::Draining => ErrorSource::Internal,
            _ => ErrorSource::Downstream,
        }
    }

    /// Whether another attempt (same or other deployment) may help, before any byte was sent.
    fn default_retry(self) -> RetryPolicy {
        match self {
            Self::UpstreamConnect | Self::UpstreamTimeout | Self::UpstreamProtocol => {
                RetryPolicy::Retry
            }
            // 401/403/404 are about the deployment (the gateway's credentials, the deployment's
            // model name or URL), not the client's request: another deployment may answer.
            Self::UpstreamStatus(s) if s == 429 || s >= 500 || matches!(s, 401 | 403 | 404) => {
                RetryPolicy::Retry
            }
            _ => RetryPolicy::NoRetry,
        }
    }
}

/// Which side of the gateway caused the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client (bad input, went away).
    Downstream,
    /// The provider.
    Upstream,
    /// The gateway itself.
    Internal,
}

/// Whether routing may try again. Decided where the error is made; there is no undecided value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Do not try again.
    NoRetry,
    /// Another attempt may succeed.
    Retry,
}

/// Text that is safe to show a client: no URLs, keys or raw upstream bodies.
pub trait UserFacing {
    /// The message for the client.
    fn to_client_string(&self) -> Cow<'_, str>;
}

struct Inner {
    kind: ErrorKind,
    source: ErrorSource,
    retry: RetryPolicy,
    message: Cow<'static, str>,
    retry_after: Option<Duration>,
    close: bool,
    cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// The one per-request error type. Boxed so that `Result<T, GatewayError>` stays small.
pub struct GatewayError(Box<Inner>);

impl GatewayError {
    /// A new error of `kind` whose client-safe message is `message`.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self(Box::new(Inner {
            kind,
            source: kind.default_source(),
            retry: kind.default_retry(),
            message: message.into(),
            retry_after: None,
            close: false,
            cause: None,
        }))
    }

    /// Attach the underlying cause (logged, never shown to the client).
    pub fn with_cause(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.0.cause = Some(Box::new(cause));
        self
    }

    /// Attach a `Retry-After` hint.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.0.retry_after = Some(after);
        self
    }

    /// The error's kind.
    pub fn kind(&self) -> ErrorKind {
        self.0.kind
    }

    /// Which side caused it.
    pub fn source_side(&self) -> ErrorSource {
        self.0.source
    }

    /// Whether routing may try again.
    pub fn retry(&self) -> RetryPolicy {
        self.0.retry
    }

    /// The `Retry-After` hint, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }

    /// The connection cannot carry another request after this error's answer (its framing
    /// is broken or its body was left unread).
    pub fn closing(mut self) -> Self {
        self.0.close = true;
        self
    }

    /// Whether the answer to this error must close the downstream connection: a body left
    /// unread (413, a body timeout) or framing that cannot be trusted.
    pub fn closes_connection(&self) -> bool {
        self.0.close
            || matches!(
                self.0.kind,
                ErrorKind::PayloadTooLarge | ErrorKind::RequestTimeout | ErrorKind::HeadersTooLarge
            )
    }

    /// Shorthand for a 400.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// Shorthand for a 500.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl UserFacing for GatewayError {
    fn to_client_string(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.0.message)
    }
}

impl fmt::Debug for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayError")
            .field("kind", &self.0.kind)
            .field("source", &self.0.source)
            .field("retry", &self.0.retry)
            .field("message", &self.0.message)
            .field("cause", &self.0.cause.as_ref().map(|c| c.to_string()))
            .finish()
    }
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.kind.as_str(), self.0.message)?;
        let mut cause = self.0.cause.as_deref().map(|c| c as &dyn std::error::Error);
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_design() {
        assert_eq!(ErrorKind::BadRequest.status(), 400);
        assert_eq!(ErrorKind::NotFound.status(), 404);
        assert_eq!(ErrorKind::PayloadTooLarge.status(), 413);
        assert_eq!(ErrorKind::RequestTimeout.status(), 408);
        assert_eq!(ErrorKind::UpstreamStatus(500).status(), 502);
        assert_eq!(ErrorKind::UpstreamStatus(429).status(), 429);
        assert_eq!(ErrorKind::UpstreamTimeout.status(), 504);
        assert_eq!(ErrorKind::Draining.status(), 503);
    }

    #[test]
    fn retry_is_decided_at_construction() {
        assert_eq!(
            GatewayError::new(ErrorKind::UpstreamStatus(503), "x").retry(),
            RetryPolicy::Retry
        );
        assert_eq!(
            GatewayError::new(ErrorKind::UpstreamStatus(400), "x").retry(),
            RetryPolicy::NoRetry
        );
        assert_eq!(GatewayError::bad_request("x").retry(), RetryPolicy::NoRetry);
    }

    #[test]
    fn display_keeps_the_cause_but_client_text_does_not() {
        let io = std::io::Error::other("connect to 10.1.2.3:443 refused");
        let e =
            GatewayError::new(ErrorKind::UpstreamConnect, "upstream unreachable").with_cause(io);
        assert!(e.to_string().contains("10.1.2.3"));
        assert_eq!(e.to_client_string(), "upstream unreachable");
    }
}
