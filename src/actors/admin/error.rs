//! What an admin request can fail with, and the one place it is rendered: a status and
//! `{"error":{"message","type","code"}}` (plus `param` naming an invalid field), the same
//! shape as the main listener's errors.

use bytes::Bytes;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use super::MAX_BODY_BYTES;
use crate::actors::keyring::KeyError;
use crate::config::secrets::Redactor;

/// Why an admin request failed. The text of each is safe to show the caller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AdminError {
    /// No `Authorization: Bearer <admin token>`, or the wrong token (401).
    #[error("This API needs the admin token: Authorization: Bearer <admin token>.")]
    Unauthorized,
    /// No such route or key (404).
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method (405).
    #[error("Method {method} is not allowed on {path}.")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The path.
        path: String,
    },
    /// The body is not acceptable: malformed JSON, or a field the key rules refuse (400).
    #[error("{message}")]
    Invalid {
        /// The field, when one is at fault.
        param: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The change conflicts with what exists: the id is taken, or the key is the config
    /// file's (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is over [`MAX_BODY_BYTES`] (413).
    #[error("The request body is over the limit of {MAX_BODY_BYTES} bytes.")]
    TooLarge,
    /// The client took too long to send the body (408).
    #[error("The request body did not arrive in time.")]
    Timeout,
    /// The control plane's actor did not answer (stopping, or busy past the timeout) (503).
    #[error("The control plane did not answer; try again.")]
    Unavailable,
    /// A bug or a failed system call (500).
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable `code` field (and `x-shardgate-error` header).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::Invalid { .. } => "bad_request",
            Self::Conflict(_) => "conflict",
            Self::TooLarge => "payload_too_large",
            Self::Timeout => "request_timeout",
            Self::Unavailable => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The OpenAI-style `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized => "authentication_error",
            Self::NotFound(_)
            | Self::MethodNotAllowed { .. }
            | Self::Invalid { .. }
            | Self::Conflict(_)
            | Self::TooLarge
            | Self::Timeout => "invalid_request_error",
            Self::Unavailable | Self::Internal(_) => "server_error",
        }
    }

    /// A malformed body: serde's message says where.
    pub fn bad_json(e: &serde_json::Error) -> Self {
        Self::Invalid {
            param: None,
            message: format!("The body is not valid JSON for this route: {e}."),
        }
    }

    /// The rendered response. The message goes through `redactor` (the admin token and the
    /// provider keys), as every error body of the gateway does.
    pub fn into_response(self, redactor: &Redactor) -> Response<Full<Bytes>> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            code: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            param: Option<&'a str>,
        }
        let text = self.to_string();
        let message = redactor.redact_str(&text);
        let param = match &self {
            Self::Invalid { param, .. } => param.as_deref(),
            _ => None,
        };
        let body = Body {
            error: Inner {
                message: &message,
                kind: self.kind(),
                code: self.code(),
                param,
            },
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"error":{"message":"error","type":"server_error","code":"internal"}}"#.to_vec()
        });
        let mut res = super::json(self.status(), Bytes::from(bytes));
        res.headers_mut()
            .insert("x-shardgate-error", HeaderValue::from_static(self.code()));
        if self == Self::Unauthorized {
            res.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl From<KeyError> for AdminError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::NotFound(_) => Self::NotFound(capitalized(&e)),
            KeyError::Exists(_) | KeyError::FromConfig(_) => Self::Conflict(capitalized(&e)),
            KeyError::Invalid(path, message) => {
                // The keyring validates under `key.`; the admin API names the body's field.
                let field = path.strip_prefix("key.").unwrap_or(&path).to_owned();
                Self::Invalid {
                    message: format!("{field}: {message}"),
                    param: Some(field),
                }
            }
            KeyError::Rng => Self::Internal(capitalized(&e)),
        }
    }
}

/// `KeyError`'s text as a sentence.
fn capitalized(e: &KeyError) -> String {
    let text = e.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(err: AdminError) -> (u16, serde_json::Value) {
        let redactor = Redactor::new(&[crate::config::Secret::new("sk-secret-0123456789")]);
        let res = err.into_response(&redactor);
        let status = res.status().as_u16();
        let bytes =
            futures_lite::future::block_on(http_body_util::BodyExt::collect(res.into_body()))
                .unwrap()
                .to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn key_errors_map_to_their_statuses() {
        let (s, v) = body(KeyError::NotFound("k".into()).into());
        assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
        assert_eq!(v["error"]["message"], "No key `k`.");
        let (s, v) = body(KeyError::Exists("k".into()).into());
        assert_eq!((s, v["error"]["code"].as_str()), (409, Some("conflict")));
        let (s, v) = body(KeyError::FromConfig("cfg".into()).into());
        assert_eq!(s, 409);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("declared in the config file"),
            "{v}"
        );
        let (s, v) = body(KeyError::Invalid("key.models".into(), "model `x`".into()).into());
        assert_eq!(s, 400);
        assert_eq!(v["error"]["param"], "models");
        assert_eq!(v["error"]["message"], "models: model `x`");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        let (s, v) = body(AdminError::Unauthorized);
        assert_eq!(
            (s, v["error"]["type"].as_str()),
            (401, Some("authentication_error"))
        );
        assert!(v["error"].get("param").is_none());
    }

    #[test]
    fn messages_are_redacted() {
        let err = AdminError::Invalid {
            param: None,
            message: "invalid type: string \"sk-secret-0123456789\"".into(),
        };
        let (_, v) = body(err);
        assert_eq!(v["error"]["message"], "invalid type: string \"[REDACTED]\"");
    }
}
