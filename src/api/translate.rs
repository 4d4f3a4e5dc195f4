//! What can go wrong translating between dialects, and how it reaches the client.

use crate::error::{ErrorKind, GatewayError};

/// A translation failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The client's request is malformed for its dialect (400).
    #[error("{0}")]
    Invalid(String),
    /// The client asked for something the target provider cannot do (400, naming it).
    #[error("This request uses {0}, which the model's provider does not support.")]
    Unsupported(String),
    /// The provider's answer is not what its API documents (502).
    #[error("The upstream provider sent an answer the gateway cannot read: {0}.")]
    Upstream(String),
}

impl TranslateError {
    /// A malformed request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    /// A feature with no equivalent on the target.
    pub fn unsupported(feature: impl Into<String>) -> Self {
        Self::Unsupported(feature.into())
    }

    /// A malformed answer.
    pub fn upstream(what: impl Into<String>) -> Self {
        Self::Upstream(what.into())
    }

    /// A serde error with the path of the failing field, as a malformed request.
    pub fn from_path(e: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // serde's "unknown field `x`, expected one of …" lists every field: keep the name.
        let msg = match msg.find(", expected") {
            Some(i) if msg.starts_with("unknown field") => msg[..i].to_owned(),
            _ => msg,
        };
        if path == "." || path.is_empty() {
            Self::Invalid(format!("Invalid request body: {msg}."))
        } else {
            Self::Invalid(format!("Invalid request body at `{path}`: {msg}."))
        }
    }
}

impl From<TranslateError> for GatewayError {
    fn from(e: TranslateError) -> Self {
        let kind = match e {
            TranslateError::Invalid(_) | TranslateError::Unsupported(_) => ErrorKind::BadRequest,
            TranslateError::Upstream(_) => ErrorKind::UpstreamProtocol,
        };
        GatewayError::new(kind, e.to_string())
    }
}
