//! Provider kinds: how a request reaches each kind of upstream and how its answer comes back
//! in the dialect the client speaks.
//!
//! Owns: one folder per kind, each with the same files (`wire.rs` types, `translate.rs`
//! request and answer translation, `stream.rs` SSE parsing/encoding, `tests.rs`):
//! [`openai`] (also OpenAI-compatible servers and Azure OpenAI), [`anthropic`], [`gemini`];
//! one call's parts and answer handling ([`call`]: what is sent, relayed or translated, what an
//! error status means); and [`Transcoder`], which turns one kind's stream into another
//! dialect's.
//! Does not: do IO (the `pipeline` sends and relays), pick deployments (`routing`) or
//! render errors (`http::respond`).
//! Key types: [`Dialect`], [`Transcoder`], [`call::Target`].

pub mod anthropic;
pub mod call;
pub mod gemini;
pub mod openai;
pub mod replay;

#[cfg(test)]
mod conformance;

use bytes::Bytes;

use crate::api::response::Delta;
use crate::api::sse::data_payloads;
use crate::api::{TranslateError, Usage};
use crate::config::ProviderKind;
use crate::error::ErrorKind;

/// The API a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI Chat Completions (`/v1/chat/completions`).
    OpenAi,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
}

impl Dialect {
    /// The dialect a provider kind speaks natively (`None`: it speaks neither).
    pub fn of_kind(kind: ProviderKind) -> Option<Self> {
        match kind {
            ProviderKind::OpenAi | ProviderKind::Mock => Some(Self::OpenAi),
            ProviderKind::Anthropic => Some(Self::Anthropic),
            ProviderKind::Gemini => None,
        }
    }

    /// The final SSE event for a failure after a stream started, in this dialect.
    pub fn error_event(self, kind: ErrorKind, message: &str) -> Bytes {
        match self {
            Self::OpenAi => openai::translate::error_event(kind, message),
            Self::Anthropic => Bytes::from(anthropic::stream::error_event(kind.status(), message)),
        }
    }

    /// A whole error body in this dialect.
    pub fn error_body(self, kind: ErrorKind, message: &str) -> Vec<u8> {
        match self {
            Self::OpenAi => openai::translate::error_json(kind, message),
            Self::Anthropic => anthropic::translate::error_json(kind.status(), message),
        }
    }
}

/// Reads one kind's stream events into deltas.
#[derive(Debug)]
pub enum Decoder {
    /// OpenAI chunks.
    OpenAi(openai::stream::Parser),
    /// Anthropic events.
    Anthropic(anthropic::stream::Parser),
    /// Gemini chunks.
    Gemini(gemini::stream::Parser),
}

impl Decoder {
    /// The decoder for a kind's streams.
    pub fn of_kind(kind: ProviderKind) -> Self {
        match kind {
            ProviderKind::OpenAi | ProviderKind::Mock => Self::OpenAi(Default::default()),
            ProviderKind::Anthropic => Self::Anthropic(Default::default()),
            ProviderKind::Gemini => Self::Gemini(Default::default()),
        }
    }

    /// Read one event's data.
    pub fn parse_chunk(&mut self, data: &[u8], out: &mut Vec<Delta>) -> Result<(), TranslateError> {
        match self {
            Self::OpenAi(p) => p.parse_chunk(data, out),
            Self::Anthropic(p) => p.parse_chunk(data, out),
            Self::Gemini(p) => p.parse_chunk(data, out),
        }
    }

    /// Has the stream reached its documented end?
    pub fn is_complete(&self) -> bool {
        match self {
            Self::OpenAi(p) => p.is_complete(),
            Self::Anthropic(p) => p.is_complete(),
            Self::Gemini(p) => p.is_complete(),
        }
    }
}

/// Writes deltas in a client's dialect.
#[derive(Debug)]
pub enum Encoder {
    /// OpenAI chunks.
    OpenAi(openai::stream::Encoder),
    /// Anthropic events.
    Anthropic(anthropic::stream::Encoder),
}

impl Encoder {
    /// The encoder for a dialect; `model` names the answer until the upstream does,
    /// `include_usage` adds OpenAI's usage chunk.
    pub fn new(dialect: Dialect, model: &str, include_usage: bool) -> Self {
        match dialect {
            Dialect::OpenAi => Self::OpenAi(openai::stream::Encoder::new(
                model,
                unix_now(),
                include_usage,
            )),
            Dialect::Anthropic => Self::Anthropic(anthropic::stream::Encoder::new(model)),
        }
    }

    fn encode(&mut self, d: Delta, out: &mut Vec<u8>) -> Result<(), TranslateError> {
        match self {
            Self::OpenAi(e) => e.encode(d, out),
            Self::Anthropic(e) => e.encode(d, out),
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        match self {
            Self::OpenAi(e) => e.finish(out),
            Self::Anthropic(e) => e.finish(out),
        }
    }

    fn fail(&mut self, kind: ErrorKind, message: &str, out: &mut Vec<u8>) {
        match self {
            Self::OpenAi(e) => e.fail(kind, message, out),
            Self::Anthropic(e) => e.fail(kind.status(), message, out),
        }
    }
}

/// Seconds since the Unix epoch (OpenAI's `created`).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Turns a stream of one kind into another dialect's, event by event, keeping the usage.
#[derive(Debug)]
pub struct Transcoder {
    decoder: Decoder,
    encoder: Encoder,
    deltas: Vec<Delta>,
    usage: Option<Usage>,
    saw_error: bool,
}

impl Transcoder {
    /// From `decoder`'s kind to `encoder`'s dialect.
    pub fn new(decoder: Decoder, encoder: Encoder) -> Self {
        Self {
            decoder,
            encoder,
            deltas: Vec::with_capacity(8),
            usage: None,
            saw_error: false,
        }
    }

    /// Translate a run of whole SSE events; what to send goes into `out`.
    pub fn events(&mut self, events: &[u8], out: &mut Vec<u8>) -> Result<(), TranslateError> {
        for data in data_payloads(events) {
            self.decoder.parse_chunk(&data, &mut self.deltas)?;
            for d in self.deltas.drain(..) {
                match &d {
                    Delta::Usage(u) => self.usage = Some(*u),
                    Delta::Error(_) => self.saw_error = true,
                    _ => {}
                }
                self.encoder.encode(d, out)?;
            }
        }
        Ok(())
    }

    /// The upstream ended. A complete stream gets its closing events and `true`; an
    /// incomplete one gets nothing and `false` (the caller then fails it).
    pub fn finish(&mut self, out: &mut Vec<u8>) -> bool {
        if !self.decoder.is_complete() {
            return false;
        }
        self.encoder.finish(out);
        true
    }

    /// End with one error event in the client's dialect.
    pub fn fail(&mut self, kind: ErrorKind, message: &str, out: &mut Vec<u8>) {
        self.encoder.fail(kind, message, out);
    }

    /// The last usage the upstream reported.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Did the upstream report an error in the stream?
    pub fn saw_error(&self) -> bool {
        self.saw_error
    }
}

/// Build the upstream call for a client's request: the body in the provider's format, its
/// path and headers, and how the answer comes back. `body` is the client's, in `dialect`;
/// `public` is the model name the client used, `upstream` the deployment's.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    dialect: Dialect,
    public: &str,
    upstream: &str,
    kind: ProviderKind,
    target: Option<&call::Target>,
    body: &Bytes,
    stream: bool,
    include_usage: bool,
    client_headers: &http::HeaderMap,
) -> Result<call::Call, crate::error::GatewayError> {
    use call::{ANTHROPIC_BETA, ANTHROPIC_VERSION, Answer, Call};
    let translate = |from| Answer::Translate {
        from,
        to: dialect,
        model: public.to_owned(),
        include_usage,
    };
    // Anthropic upstreams get the client's API version and betas, else the default version.
    let anthropic_headers = || {
        let mut h = Vec::with_capacity(2);
        let version = client_headers.get(&ANTHROPIC_VERSION).cloned().unwrap_or(
            http::HeaderValue::from_static(anthropic::wire::DEFAULT_VERSION),
        );
        h.push((ANTHROPIC_VERSION.clone(), version));
        if let Some(beta) = client_headers.get(&ANTHROPIC_BETA) {
            h.push((ANTHROPIC_BETA.clone(), beta.clone()));
        }
        h
    };
    let canonical = || match dialect {
        Dialect::OpenAi => crate::api::ChatRequest::from_json(body),
        Dialect::Anthropic => anthropic::translate::from_client(body),
    };
    let call = |body: Bytes, answer| Call {
        body,
        uris: None,
        headers: Vec::new(),
        stream,
        answer,
    };
    Ok(match (dialect, kind) {
        (Dialect::OpenAi, ProviderKind::OpenAi | ProviderKind::Mock) => {
            // Pass-through: streams always ask for usage (accounting needs it); the extra
            // chunk is dropped again when the client did not ask for it.
            let strip_usage = stream && !include_usage && kind == ProviderKind::OpenAi;
            call(
                crate::api::chat::upstream_body(body, public, upstream, strip_usage)?,
                Answer::Pass {
                    dialect,
                    strip_usage,
                },
            )
        }
        (Dialect::Anthropic, ProviderKind::Anthropic) => {
            let mut c = call(
                crate::api::chat::rewrite_model(body, public, upstream)?,
                Answer::Pass {
                    dialect,
                    strip_usage: false,
                },
            );
            c.headers = anthropic_headers();
            c
        }
        (Dialect::Anthropic, ProviderKind::OpenAi | ProviderKind::Mock) => {
            let req = canonical()?;
            call(
                Bytes::from(openai::translate::to_wire(&req, upstream)?),
                translate(kind),
            )
        }
        (Dialect::OpenAi, ProviderKind::Anthropic) => {
            let req = canonical()?;
            let wire = anthropic::translate::to_wire(&req, upstream)?;
            let bytes = serde_json::to_vec(&wire).map_err(|e| {
                crate::error::GatewayError::internal("Cannot encode the request.").with_cause(e)
            })?;
            let mut c = call(Bytes::from(bytes), translate(kind));
            c.headers = anthropic_headers();
            c
        }
        (_, ProviderKind::Gemini) => {
            let req = canonical()?;
            let wire = gemini::translate::to_wire(&req)?;
            let bytes = serde_json::to_vec(&wire).map_err(|e| {
                crate::error::GatewayError::internal("Cannot encode the request.").with_cause(e)
            })?;
            let mut c = call(Bytes::from(bytes), translate(kind));
            let method = if stream {
                ":streamGenerateContent?alt=sse"
            } else {
                ":generateContent"
            };
            if let Some(t) = target {
                c.uris = Some(t.uris(&format!("/models/{upstream}{method}"))?);
            }
            c
        }
    })
}
