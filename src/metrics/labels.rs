//! Label values, from fixed enums only (never from `to_string()` of something dynamic).

use crate::error::ErrorKind;

/// Downstream route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Route {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/messages` (Anthropic dialect)
    Messages,
    /// `POST /v1/embeddings`
    Embeddings,
    /// `GET /v1/models`
    Models,
    /// `GET /health`
    Health,
    /// `GET /ready`
    Ready,
    /// `GET /metrics`
    Metrics,
    /// `GET /admin/scores`
    AdminScores,
    /// `GET /admin/routes`
    AdminRoutes,
    /// Anything else.
    Unknown,
}

impl Route {
    /// Whether a request on this route counts in `gateway_inflight_requests`: every one but
    /// the scrape reading the gauge.
    pub fn counts_in_flight(self) -> bool {
        self != Route::Metrics
    }

    /// Every route, in index order.
    pub const ALL: [Route; 10] = [
        Route::ChatCompletions,
        Route::Messages,
        Route::Embeddings,
        Route::Models,
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::AdminScores,
        Route::AdminRoutes,
        Route::Unknown,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::ChatCompletions => "chat_completions",
            Route::Messages => "messages",
            Route::Embeddings => "embeddings",
            Route::Models => "models",
            Route::Health => "health",
            Route::Ready => "ready",
            Route::Metrics => "metrics",
            Route::AdminScores => "admin_scores",
            Route::AdminRoutes => "admin_routes",
            Route::Unknown => "unknown",
        }
    }
}

/// Status label: the codes the gateway emits, and `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum StatusLabel {
    /// 200
    S200,
    /// 400
    S400,
    /// 401
    S401,
    /// 403
    S403,
    /// 404
    S404,
    /// 405
    S405,
    /// 408
    S408,
    /// 413
    S413,
    /// 422
    S422,
    /// 429
    S429,
    /// 431
    S431,
    /// 499 (client went away)
    S499,
    /// 500
    S500,
    /// 502
    S502,
    /// 503
    S503,
    /// 504
    S504,
    /// Any other code.
    Other,
}

impl StatusLabel {
    /// Every label, in index order.
    pub const ALL: [StatusLabel; 17] = [
        Self::S200,
        Self::S400,
        Self::S401,
        Self::S403,
        Self::S404,
        Self::S405,
        Self::S408,
        Self::S413,
        Self::S422,
        Self::S429,
        Self::S431,
        Self::S499,
        Self::S500,
        Self::S502,
        Self::S503,
        Self::S504,
        Self::Other,
    ];

    /// The label for a status code.
    pub fn from_code(code: u16) -> Self {
        match code {
            200 => Self::S200,
            400 => Self::S400,
            401 => Self::S401,
            403 => Self::S403,
            404 => Self::S404,
            405 => Self::S405,
            408 => Self::S408,
            413 => Self::S413,
            422 => Self::S422,
            429 => Self::S429,
            431 => Self::S431,
            499 => Self::S499,
            500 => Self::S500,
            502 => Self::S502,
            503 => Self::S503,
            504 => Self::S504,
            _ => Self::Other,
        }
    }

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S200 => "200",
            Self::S400 => "400",
            Self::S401 => "401",
            Self::S403 => "403",
            Self::S404 => "404",
            Self::S405 => "405",
            Self::S408 => "408",
            Self::S413 => "413",
            Self::S422 => "422",
            Self::S429 => "429",
            Self::S431 => "431",
            Self::S499 => "499",
            Self::S500 => "500",
            Self::S502 => "502",
            Self::S503 => "503",
            Self::S504 => "504",
            Self::Other => "other",
        }
    }
}

/// How an upstream attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum UpstreamOutcome {
    /// A complete, successful answer.
    Ok,
    /// An error status from the provider.
    Status,
    /// Could not connect.
    Connect,
    /// A timeout (connect, first byte, idle or total).
    Timeout,
    /// The connection or the stream broke mid-answer.
    Protocol,
    /// The client went away first.
    Cancelled,
}

impl UpstreamOutcome {
    /// Every outcome, in index order.
    pub const ALL: [UpstreamOutcome; 6] = [
        Self::Ok,
        Self::Status,
        Self::Connect,
        Self::Timeout,
        Self::Protocol,
        Self::Cancelled,
    ];

    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Status => "status",
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Protocol => "protocol",
            Self::Cancelled => "cancelled",
        }
    }

    /// The outcome an error kind stands for.
    pub fn from_error(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::UpstreamStatus(_) => Self::Status,
            ErrorKind::UpstreamConnect => Self::Connect,
            ErrorKind::UpstreamTimeout => Self::Timeout,
            ErrorKind::ClientGone => Self::Cancelled,
            _ => Self::Protocol,
        }
    }
}

/// Limit scopes as label values, in index order (`gateway_limit_refusals_total{scope}`).
pub const LIMIT_SCOPES: [&str; 6] = ["global", "key", "team", "user", "model", "deployment"];
/// Limit measures as label values, in index order (`gateway_limit_refusals_total{measure}`).
pub const LIMIT_MEASURES: [&str; 4] = ["requests", "tokens", "concurrent", "spend"];

/// Error kinds as label values, in index order (for `gateway_errors_total`).
pub const ERROR_KINDS: [&str; 18] = [
    "headers_too_large",
    "bad_request",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "request_timeout",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "budget_exceeded",
    "no_provider",
    "draining",
    "upstream_connect",
    "upstream_timeout",
    "upstream_status",
    "upstream_protocol",
    "client_gone",
    "internal",
];

/// Index of an error kind in [`ERROR_KINDS`].
pub fn error_index(kind: ErrorKind) -> usize {
    let name = kind.as_str();
    ERROR_KINDS
        .iter()
        .position(|k| *k == name)
        .unwrap_or(ERROR_KINDS.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_match_positions() {
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, s) in StatusLabel::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        for (i, o) in UpstreamOutcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
        for k in [
            ErrorKind::BadRequest,
            ErrorKind::Internal,
            ErrorKind::UpstreamStatus(500),
            ErrorKind::Draining,
        ] {
            assert_eq!(ERROR_KINDS[error_index(k)], k.as_str());
        }
    }
}
