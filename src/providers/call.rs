//! One call to a provider: what is sent ([`Call`], [`Target`]), how its answer reaches the
//! client ([`Answer`]: relayed untouched when the client speaks the provider's dialect, else
//! translated, whole or event by event with [`StreamMode`]), and what an error status means
//! ([`refusal`]). Pure: no sockets, no timers; `pipeline` sends and relays.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use memchr::memmem;

use super::{Decoder, Dialect, Encoder, Transcoder, anthropic, gemini, openai};
use crate::api::response::{ChatResponse, Delta};
use crate::api::sse::{EventSplitter, data_payloads, without_events};
use crate::api::usage::is_usage_only_chunk;
use crate::api::{TranslateError, Usage, json};
use crate::config::secrets::Redactor;
use crate::config::{KeyHeader, ProviderConfig, ProviderKind, Scheme};
use crate::error::{ErrorKind, GatewayError};
use crate::metrics::labels::UpstreamOutcome;

/// Most bytes of a non-streamed answer the gateway buffers.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Most bytes of an upstream error body read.
pub const MAX_ERROR_BYTES: usize = 64 * 1024;
/// Upstream statuses that are about the client's request, not about the provider's health:
/// relayed as they are when the client speaks the provider's dialect, else translated. A 404 is not
/// among them: the gateway chose the model name and URL, so it is the deployment's fault.
const RELAYED: [u16; 4] = [400, 409, 413, 422];

/// `user-agent` on every upstream request.
pub static SHARDGATE_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("shardgate/", env!("CARGO_PKG_VERSION")));
/// `anthropic-version`.
pub static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
/// `anthropic-beta`.
pub static ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// A provider's target could not be built from its config.
#[derive(Debug, thiserror::Error)]
#[error("provider `{provider}`: {message}")]
pub struct TargetError {
    provider: String,
    message: String,
}

/// The fixed parts of every request to one provider, built once at start-up.
#[derive(Debug, Clone)]
pub struct Target {
    scheme: &'static str,
    authority: String,
    base_path: String,
    query: Option<String>,
    /// The chat path (OpenAI and Anthropic kinds): origin form and absolute form.
    pub(crate) chat: (Uri, Uri),
    /// `host` for HTTP/1.1.
    pub(crate) host: HeaderValue,
    /// The provider's credential header.
    pub(crate) auth: Option<(HeaderName, HeaderValue)>,
}

impl Target {
    /// The target of a provider with an endpoint (`None` for in-process providers).
    pub fn new(provider: &ProviderConfig) -> Result<Option<Self>, TargetError> {
        let Some(ep) = &provider.endpoint else {
            return Ok(None);
        };
        let err = |message: String| TargetError {
            provider: provider.id.to_string(),
            message,
        };
        let scheme = if ep.scheme == Scheme::Https {
            "https"
        } else {
            "http"
        };
        let host =
            HeaderValue::from_str(&ep.authority).map_err(|e| err(format!("invalid host: {e}")))?;
        let auth = match &provider.api_key {
            None => None,
            Some(key) => {
                // The key itself never goes into the message.
                let (name, value) = match provider.key_header {
                    KeyHeader::Bearer => (AUTHORIZATION, format!("Bearer {}", key.expose())),
                    KeyHeader::ApiKey => (HeaderName::from_static("api-key"), key.expose().into()),
                    KeyHeader::XApiKey => {
                        (HeaderName::from_static("x-api-key"), key.expose().into())
                    }
                    KeyHeader::XGoogApiKey => (
                        HeaderName::from_static("x-goog-api-key"),
                        key.expose().into(),
                    ),
                };
                let mut v = HeaderValue::from_str(&value)
                    .map_err(|_| err("the API key is not a valid HTTP header value".into()))?;
                v.set_sensitive(true);
                Some((name, v))
            }
        };
        let mut t = Self {
            scheme,
            authority: ep.authority.to_string(),
            base_path: ep.base_path.to_string(),
            query: provider
                .api_version
                .as_ref()
                .map(|v| format!("api-version={v}")),
            chat: (Uri::from_static("/"), Uri::from_static("/")),
            host,
            auth,
        };
        let chat = match provider.kind {
            ProviderKind::Anthropic => "/messages",
            _ => "/chat/completions",
        };
        t.chat = t.uris(chat).map_err(|e| err(e.to_string()))?;
        Ok(Some(t))
    }

    /// The origin-form and absolute URIs of `path` under the base path (with the configured
    /// query, if any).
    pub fn uris(&self, path: &str) -> Result<(Uri, Uri), GatewayError> {
        let mut p = format!("{}{path}", self.base_path);
        if let Some(q) = &self.query {
            p.push(if path.contains('?') { '&' } else { '?' });
            p.push_str(q);
        }
        let bad = |e: http::uri::InvalidUri| {
            GatewayError::bad_request("The model name cannot be used in an upstream URL.")
                .with_cause(e)
        };
        let origin: Uri = p.parse().map_err(bad)?;
        let absolute: Uri = format!("{}://{}{p}", self.scheme, self.authority)
            .parse()
            .map_err(bad)?;
        Ok((origin, absolute))
    }
}

/// How an answer reaches the client.
#[derive(Debug, Clone)]
pub enum Answer {
    /// As the provider sent it: the client speaks its dialect. Usage is read on the way;
    /// `strip_usage` drops the usage-only chunk the gateway asked for (OpenAI).
    Pass {
        /// The shared dialect.
        dialect: Dialect,
        /// Drop the usage-only chunk.
        strip_usage: bool,
    },
    /// Translated from the provider's kind to the client's dialect.
    Translate {
        /// The provider's kind.
        from: ProviderKind,
        /// The client's dialect.
        to: Dialect,
        /// The public model name (until the provider names one).
        model: String,
        /// OpenAI clients: add the usage chunk.
        include_usage: bool,
    },
    /// Gemini embeddings, as OpenAI's embeddings answer.
    GeminiEmbeddings {
        /// The public model name.
        model: String,
        /// Vectors as base64.
        base64: bool,
        /// Estimated input tokens (Gemini reports none for embeddings).
        input_tokens: u64,
    },
}

impl Answer {
    /// The client's dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            Self::Pass { dialect, .. } => *dialect,
            Self::Translate { to, .. } => *to,
            Self::GeminiEmbeddings { .. } => Dialect::OpenAi,
        }
    }

    /// A whole answer for the client, and its usage.
    pub fn whole(&self, bytes: Bytes) -> Result<(Bytes, Option<Usage>), TranslateError> {
        match self {
            Self::Pass {
                dialect: Dialect::OpenAi,
                ..
            } => {
                let usage = Usage::from_openai_json(&bytes);
                Ok((bytes, usage))
            }
            Self::Pass {
                dialect: Dialect::Anthropic,
                ..
            } => {
                let usage = json::top_level_value(&bytes, b"usage")
                    .and_then(|r| serde_json::from_slice::<anthropic::wire::Usage>(&bytes[r]).ok())
                    .map(|u| anthropic::translate::usage_from_wire(&u));
                Ok((bytes, usage))
            }
            Self::Translate {
                from, to, model, ..
            } => {
                let resp: ChatResponse = match from {
                    ProviderKind::OpenAi | ProviderKind::Mock => {
                        openai::translate::from_wire(&bytes)?
                    }
                    ProviderKind::Anthropic => anthropic::translate::from_wire(&bytes)?,
                    ProviderKind::Gemini => gemini::translate::from_wire(&bytes)?,
                };
                let out = match to {
                    Dialect::OpenAi => {
                        openai::translate::to_client(&resp, model, super::unix_now())
                    }
                    Dialect::Anthropic => anthropic::translate::to_client(&resp, model)?,
                };
                Ok((Bytes::from(out), resp.usage))
            }
            Self::GeminiEmbeddings {
                model,
                base64,
                input_tokens,
            } => {
                let vectors = gemini::translate::embed_from_wire(&bytes)?;
                let usage = Usage {
                    input_tokens: *input_tokens,
                    ..Usage::default()
                };
                let out =
                    crate::api::embeddings::openai_answer(model, &vectors, *base64, *input_tokens);
                Ok((Bytes::from(out), Some(usage)))
            }
        }
    }

    /// The stream state for this answer.
    pub fn stream_mode(&self) -> StreamMode {
        match self {
            // Embeddings never stream; relaying bytes is the safe default.
            Self::GeminiEmbeddings { .. } => StreamMode::PassOpenAi {
                strip_usage: false,
                saw_done: false,
                usage: None,
                saw_error: false,
            },
            Self::Pass {
                dialect: Dialect::OpenAi,
                strip_usage,
            } => StreamMode::PassOpenAi {
                strip_usage: *strip_usage,
                saw_done: false,
                usage: None,
                saw_error: false,
            },
            Self::Pass {
                dialect: Dialect::Anthropic,
                ..
            } => StreamMode::PassAnthropic(Box::default()),
            Self::Translate {
                from,
                to,
                model,
                include_usage,
            } => StreamMode::Translate(Box::new(Transcoder::new(
                Decoder::of_kind(*from),
                Encoder::new(*to, model, *include_usage),
            ))),
        }
    }

    /// Run a whole stream through this answer's relay logic at once, from chunks split
    /// anywhere (as reads arrive): the bytes the client gets, the usage, and whether the
    /// stream ended cleanly. The relay does the same, one read at a time.
    pub fn transcode(&self, chunks: impl IntoIterator<Item = Bytes>) -> Transcoded {
        let mut mode = self.stream_mode();
        let mut splitter = EventSplitter::default();
        let mut out = Vec::new();
        for chunk in chunks {
            let Some(events) = splitter.push(chunk) else {
                continue;
            };
            match mode.events(events) {
                Ok(Some(b)) => out.push(b),
                Ok(None) => {}
                Err(e) => {
                    out.extend(e.before);
                    out.push(mode.fail(
                        self.dialect(),
                        ErrorKind::UpstreamProtocol,
                        UNREADABLE_EVENT,
                    ));
                    return Transcoded {
                        events: out,
                        usage: mode.usage(),
                        complete: false,
                        saw_error: mode.saw_error(),
                    };
                }
            }
        }
        let finished = if splitter.pending_len() == 0 {
            mode.finish()
        } else {
            Err(Incomplete)
        };
        let complete = match finished {
            Ok(tail) => {
                out.extend(tail);
                true
            }
            Err(Incomplete) => {
                out.push(mode.fail(
                    self.dialect(),
                    ErrorKind::UpstreamProtocol,
                    "The upstream ended the stream before it was complete.",
                ));
                false
            }
        };
        Transcoded {
            events: out,
            usage: mode.usage(),
            complete,
            saw_error: mode.saw_error(),
        }
    }
}

/// A whole stream run through [`Answer::transcode`].
#[derive(Debug)]
pub struct Transcoded {
    /// What the client gets, frame by frame.
    pub events: Vec<Bytes>,
    /// The usage the upstream reported.
    pub usage: Option<Usage>,
    /// Did the upstream report an error in the stream? (The relay then adds no error event of
    /// its own when the stream is cut: the client already has the upstream's.)
    pub saw_error: bool,
    /// Did the upstream stream end as its API documents?
    pub complete: bool,
}

impl Transcoded {
    /// All the bytes the client gets.
    pub fn bytes(&self) -> Vec<u8> {
        self.events.concat()
    }
}

/// One request to send upstream.
#[derive(Debug)]
pub struct Call {
    /// The body, in the provider's format.
    pub body: Bytes,
    /// The path's URIs, when not the provider's chat path.
    pub uris: Option<(Uri, Uri)>,
    /// Extra headers (e.g. `anthropic-version`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Is the answer a stream?
    pub stream: bool,
    /// How the answer reaches the client.
    pub answer: Answer,
}

/// The `error.message` of a provider's error body (the same path in all three formats).
pub(crate) fn provider_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("error")?
        .get("message")?
        .as_str()
        .map(|s| s.chars().take(500).collect())
}

/// Why a provider refused a request in a way another model may not: the routes a model
/// configures for it (`context_window_fallbacks`, `content_policy_fallbacks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// The request is over the model's context window.
    ContextWindow,
    /// The provider's content policy refused it.
    ContentPolicy,
}

/// Read a refusal's body for a reason with a fallback route, in each provider's words:
/// OpenAI's `context_length_exceeded` and `content_policy_violation` codes, Anthropic's
/// "prompt is too long" and content-filtering messages, Gemini's "input token count ...
/// exceeds". Only 400 and 413 answers are read.
pub fn fallback_reason(status: StatusCode, body: &[u8]) -> Option<FallbackReason> {
    if !matches!(status.as_u16(), 400 | 413) {
        return None;
    }
    let has = |needle: &[u8]| memmem::find(body, needle).is_some();
    if has(b"context_length_exceeded")
        || has(b"prompt is too long")
        || has(b"maximum context length")
        || (has(b"input token count") && has(b"exceeds"))
    {
        Some(FallbackReason::ContextWindow)
    } else if has(b"content_policy_violation")
        || has(b"content_filter")
        || has(b"content filtering")
    {
        Some(FallbackReason::ContentPolicy)
    } else {
        None
    }
}

/// What an upstream error status means for the client.
#[derive(Debug)]
pub enum Refusal {
    /// The provider's verdict on the client's request, in the client's dialect: relayed as
    /// it is (no `x-shardgate-error`), with every configured secret blanked.
    Relay(Bytes),
    /// An error for the gateway to render.
    Error(GatewayError),
}

/// Map an upstream error status (and its body, when it was read) to the client's answer, and
/// to what the attempt counts as for the deployment's health.
pub fn refusal(
    answer: &Answer,
    status: StatusCode,
    headers: &HeaderMap,
    body: Option<Bytes>,
    redactor: &Redactor,
) -> (Refusal, UpstreamOutcome) {
    let code = status.as_u16();
    if RELAYED.contains(&code) {
        let body = body.filter(|b| json::top_level_value(b, b"error").is_some());
        match (answer, body) {
            (Answer::Pass { .. }, Some(body)) => {
                // Some providers echo the request's credentials: never relay our key.
                let body = redactor.redact_bytes(body);
                return (Refusal::Relay(body), UpstreamOutcome::Ok);
            }
            (Answer::Translate { .. }, Some(body)) => {
                let kind = match code {
                    404 => ErrorKind::NotFound,
                    413 => ErrorKind::PayloadTooLarge,
                    _ => ErrorKind::BadRequest,
                };
                let message = provider_message(&body).unwrap_or_else(|| "no message".to_owned());
                let message = redactor.redact_str(&message);
                let err = GatewayError::new(
                    kind,
                    format!("The upstream provider rejected the request: {message}"),
                );
                return (Refusal::Error(err), UpstreamOutcome::Ok);
            }
            _ => {}
        }
    }
    let kind = ErrorKind::UpstreamStatus(code);
    let err = match code {
        429 => {
            let after = headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(1);
            GatewayError::new(
                kind,
                "The upstream provider is rate limiting requests; retry later.",
            )
            .with_retry_after(Duration::from_secs(after))
        }
        401 | 403 => GatewayError::new(
            kind,
            "The upstream provider rejected the gateway's credentials.",
        ),
        _ => GatewayError::new(
            kind,
            format!("The upstream provider returned an error (HTTP {code})."),
        ),
    };
    (Refusal::Error(err), UpstreamOutcome::Status)
}

/// A run of upstream events with one the gateway could not read.
#[derive(Debug)]
pub struct Unreadable {
    /// What the events before it became, to send before the error.
    pub before: Option<Bytes>,
    /// Why (logged; it may quote upstream values, so never shown to the client).
    pub error: TranslateError,
}

/// What the client is told when an upstream stream event cannot be read.
pub const UNREADABLE_EVENT: &str = "The upstream sent a stream event the gateway could not read.";

/// The upstream ended a stream before its terminal event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incomplete;

/// What a stream relay does with each run of whole events: relay them as they are (usage
/// and the terminal event teed out) or translate them. Pure: the relay in `pipeline` feeds it.
pub enum StreamMode {
    /// OpenAI to OpenAI: bytes as they are, usage and `[DONE]` teed out.
    PassOpenAi {
        /// Drop the usage-only chunk (the client did not ask for it).
        strip_usage: bool,
        /// A `data: [DONE]` event went by.
        saw_done: bool,
        /// The last usage seen.
        usage: Option<Usage>,
        /// The upstream sent an in-band error.
        saw_error: bool,
    },
    /// Anthropic to Anthropic: bytes as they are; the message events are read for usage.
    PassAnthropic(Box<PassAnthropic>),
    /// Any other pair: parsed and re-encoded.
    Translate(Box<Transcoder>),
}

/// Anthropic pass-through state: the message events, parsed for usage and the end.
#[derive(Default)]
pub struct PassAnthropic {
    parser: anthropic::stream::Parser,
    deltas: Vec<Delta>,
    usage: Option<Usage>,
    saw_error: bool,
}

crate::needles! {
    DONE = b"[DONE]";
    USAGE = b"\"usage\"";
    ERROR = b"\"error\"";
    MESSAGE_ = b"\"message_";
    CONTENT_BLOCK = b"content_block";
}

impl StreamMode {
    /// Take a run of whole events; `Some` bytes to send.
    pub fn events(&mut self, events: Bytes) -> Result<Option<Bytes>, Unreadable> {
        match self {
            Self::PassOpenAi {
                strip_usage,
                saw_done,
                usage,
                saw_error,
            } => {
                // Only an event whose whole data payload is `[DONE]` ends the stream; the
                // bytes inside a chunk's text do not.
                if DONE.find(&events).is_some() && data_payloads(&events).any(|d| *d == *b"[DONE]")
                {
                    *saw_done = true;
                }
                let interesting = USAGE.find(&events).is_some() || ERROR.find(&events).is_some();
                if interesting {
                    for data in data_payloads(&events) {
                        if let Some(u) = Usage::from_openai_json(&data) {
                            *usage = Some(u);
                        } else if json::top_level_value(&data, b"error")
                            .is_some_and(|e| data[e] != *b"null")
                        {
                            // `"error": null` in a healthy chunk is no error.
                            *saw_error = true;
                        }
                    }
                }
                if *strip_usage && USAGE.find(&events).is_some() {
                    let kept = without_events(&events, is_usage_only_chunk);
                    return Ok((!kept.is_empty()).then_some(kept));
                }
                Ok(Some(events))
            }
            Self::PassAnthropic(p) => {
                if MESSAGE_.find(&events).is_some() || ERROR.find(&events).is_some() {
                    for data in data_payloads(&events) {
                        let interesting =
                            MESSAGE_.find(&data).is_some() || ERROR.find(&data).is_some();
                        if !interesting || CONTENT_BLOCK.find(&data).is_some() {
                            continue;
                        }
                        // Relayed untouched: a malformed event is the client's to see.
                        if p.parser.parse_chunk(&data, &mut p.deltas).is_err() {
                            continue;
                        }
                        for d in p.deltas.drain(..) {
                            match d {
                                Delta::Usage(u) => p.usage = Some(u),
                                Delta::Error(_) => p.saw_error = true,
                                _ => {}
                            }
                        }
                    }
                }
                Ok(Some(events))
            }
            Self::Translate(t) => {
                let mut out = Vec::with_capacity(events.len() + 64);
                match t.events(&events, &mut out) {
                    Ok(()) => Ok((!out.is_empty()).then(|| Bytes::from(out))),
                    // What was translated before the bad event still goes out (it may hold
                    // the upstream's own error event), then the relay's error.
                    Err(error) => Err(Unreadable {
                        before: (!out.is_empty()).then(|| Bytes::from(out)),
                        error,
                    }),
                }
            }
        }
    }

    /// The upstream ended: `Ok` with any closing bytes when the stream was complete.
    pub fn finish(&mut self) -> Result<Option<Bytes>, Incomplete> {
        match self {
            Self::PassOpenAi { saw_done, .. } => {
                if *saw_done {
                    Ok(None)
                } else {
                    Err(Incomplete)
                }
            }
            Self::PassAnthropic(p) => {
                if p.parser.is_complete() {
                    Ok(None)
                } else {
                    Err(Incomplete)
                }
            }
            Self::Translate(t) => {
                let mut out = Vec::new();
                if !t.finish(&mut out) {
                    return Err(Incomplete);
                }
                Ok((!out.is_empty()).then(|| Bytes::from(out)))
            }
        }
    }

    /// The final error event.
    pub fn fail(&mut self, dialect: Dialect, kind: ErrorKind, message: &str) -> Bytes {
        match self {
            Self::Translate(t) => {
                let mut out = Vec::new();
                t.fail(kind, message, &mut out);
                Bytes::from(out)
            }
            _ => dialect.error_event(kind, message),
        }
    }

    /// The usage reported so far.
    pub fn usage(&self) -> Option<Usage> {
        match self {
            Self::PassOpenAi { usage, .. } => *usage,
            Self::PassAnthropic(p) => p.usage,
            Self::Translate(t) => t.usage(),
        }
    }

    /// Whether the upstream sent its own error event.
    pub fn saw_error(&self) -> bool {
        match self {
            Self::PassOpenAi { saw_error, .. } => *saw_error,
            Self::PassAnthropic(p) => p.saw_error,
            Self::Translate(t) => t.saw_error(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_reasons_are_read_in_each_providers_words() {
        let bad = StatusCode::BAD_REQUEST;
        let cases: [(&[u8], Option<FallbackReason>); 6] = [
            (
                br#"{"error":{"code":"context_length_exceeded","message":"..."}}"#,
                Some(FallbackReason::ContextWindow),
            ),
            (
                br#"{"type":"error","error":{"message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
                Some(FallbackReason::ContextWindow),
            ),
            (
                br#"{"error":{"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."}}"#,
                Some(FallbackReason::ContextWindow),
            ),
            (
                br#"{"error":{"code":"content_policy_violation"}}"#,
                Some(FallbackReason::ContentPolicy),
            ),
            (
                br#"{"error":{"message":"Output blocked by content filtering policy"}}"#,
                Some(FallbackReason::ContentPolicy),
            ),
            (br#"{"error":{"message":"temperature must be at most 2"}}"#, None),
        ];
        for (body, want) in cases {
            assert_eq!(
                fallback_reason(bad, body),
                want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Only refusals of the request itself: a 500 saying the same is not one.
        let body = br#"{"error":{"code":"context_length_exceeded"}}"#;
        assert_eq!(
            fallback_reason(StatusCode::INTERNAL_SERVER_ERROR, body),
            None
        );
    }
}
