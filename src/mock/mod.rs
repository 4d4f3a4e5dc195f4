//! The deterministic mock provider: the same answers in-process (the embedded default) and as
//! an HTTP server (`shardgate-mock`, in [`server`]) that speaks the OpenAI, Anthropic and Gemini
//! wire formats, plus embeddings.
//!
//! Owns: reading a chat request the way a provider would, building the deterministic reply
//! (one format-neutral [`Reply`], rendered per format as whole JSON or SSE events, usage
//! included), the deterministic embeddings, and the fault knobs ([`Knobs`]).
//! Does not: route or account anything.
//! Key types: [`Reply`], [`Turn`], [`Format`], [`Knobs`], [`KnobPairs`], [`MockUsage`],
//! `server::MockServer`, `schedule::Schedule`. One file per wire format: [`openai`],
//! [`anthropic`], [`gemini`], [`embeddings`].

pub mod anthropic;
pub mod embeddings;
pub mod gemini;
pub mod openai;
#[cfg(feature = "mock-server")]
pub mod schedule;
#[cfg(feature = "mock-server")]
pub mod server;

use std::time::Duration;

use bytes::Bytes;

use crate::api::json::write_string;

pub use openai::error_body;

/// Default number of content chunks in a streamed reply.
pub const DEFAULT_CHUNKS: usize = 8;
/// Longest echo of the user's text (or of a tool result) in a reply.
const ECHO_CHARS: usize = 200;
/// Every reply text starts with this.
const REPLY_PREFIX: &str = "This is a mock reply to: ";

/// The deterministic answer to a chat request, in no particular wire format (the format
/// modules read requests into it and render it back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The model name as sent (without knob suffix).
    pub model: String,
    /// Streamed?
    pub stream: bool,
    /// OpenAI `stream_options.include_usage` (other formats always report usage).
    pub include_usage: bool,
    /// The reply text (empty when the reply is a tool call).
    pub content: String,
    /// The tool call the reply makes instead of text, if any.
    pub tool_call: Option<ToolCall>,
    /// Prompt tokens, cached ones included (request bytes / 4, at least 1).
    pub prompt_tokens: u64,
    /// Of the prompt tokens, how many to report as read from a cache (knob `cached_tokens`,
    /// at most `prompt_tokens`).
    pub cached_tokens: u64,
    /// Reasoning tokens reported on top of the reply's own (knob `reasoning_tokens`).
    pub reasoning_tokens: u64,
    /// Finish reason to report instead of the format's natural one (knob `finish`).
    pub finish: Option<String>,
}

/// A tool call made by the mock: always to one tool, with arguments `{"query":"<echo>"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The tool's name.
    pub name: String,
    /// The arguments as JSON text.
    pub arguments: String,
}

/// Token usage of one answer, normalised the way the gateway counts: `input_tokens` includes
/// cached tokens, `output_tokens` includes reasoning tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MockUsage {
    /// All prompt tokens (cached included).
    pub input_tokens: u64,
    /// All generated tokens (reasoning included).
    pub output_tokens: u64,
    /// Of the input tokens, those read from a cache.
    pub cached_input_tokens: u64,
    /// Of the output tokens, the reasoning ones.
    pub reasoning_tokens: u64,
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MockError(pub String);

/// What the conversation's last turn asks of the mock, read from any wire format.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Turn {
    /// The last user message's text (text parts joined with " ").
    pub text: String,
    /// Images in the last user message.
    pub images: usize,
    /// The last message's tool result text, when it carries one.
    pub tool_result: Option<String>,
    /// The tool to call: set by the format reader when tools are declared and allowed and the
    /// last message is a user message without tool results.
    pub call_tool: Option<String>,
}

/// A wire format the mock speaks for chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI chat completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini `generateContent`.
    Gemini,
}

impl Format {
    /// An error body in this format's shape.
    pub fn error_body(self, status: u16, message: &str) -> Bytes {
        match self {
            Self::OpenAi => openai::error_body(status, message),
            Self::Anthropic => anthropic::error_body(status, message),
            Self::Gemini => gemini::error_body(status, message),
        }
    }

    /// The whole (non-streamed) answer.
    pub fn answer(self, reply: &Reply) -> Bytes {
        match self {
            Self::OpenAi => reply.completion(),
            Self::Anthropic => anthropic::message(reply),
            Self::Gemini => gemini::response(reply),
        }
    }

    /// The streamed answer as whole SSE events, with the text (or tool arguments) in `chunks`
    /// pieces.
    pub fn events(self, reply: &Reply, chunks: usize) -> Vec<Bytes> {
        match self {
            Self::OpenAi => reply.events(chunks),
            Self::Anthropic => anthropic::events(reply, chunks),
            Self::Gemini => gemini::events(reply, chunks),
        }
    }

    /// The provider's own refusal of a request under the `error` knob: the status it answers
    /// with and the body, in this format's shape. Gemini refuses a prompt for its content with
    /// a 200 answer that has no candidates; for a stream that answer is one SSE event.
    pub fn provider_error(self, kind: ProviderError, reply: &Reply) -> (u16, Bytes) {
        match (self, kind) {
            (Self::OpenAi, ProviderError::ContextWindow) => (400, openai::context_window_error()),
            (Self::OpenAi, ProviderError::ContentPolicy) => (400, openai::content_policy_error()),
            (Self::Anthropic, ProviderError::ContextWindow) => {
                (400, anthropic::context_window_error())
            }
            (Self::Anthropic, ProviderError::ContentPolicy) => {
                (400, anthropic::content_policy_error())
            }
            (Self::Gemini, ProviderError::ContextWindow) => (400, gemini::context_window_error()),
            (Self::Gemini, ProviderError::ContentPolicy) => (200, gemini::prompt_blocked(reply)),
        }
    }

    /// The finish reason this format reports when the model refuses mid-answer (knob
    /// `refusal`): OpenAI's `content_filter`, Anthropic's `refusal`, Gemini's `SAFETY`.
    pub fn refusal_finish(self) -> &'static str {
        match self {
            Self::OpenAi => "content_filter",
            Self::Anthropic => "refusal",
            Self::Gemini => "SAFETY",
        }
    }

    /// The in-band error event a stream ends with under the `error_after` knob.
    pub fn stream_error(self) -> Bytes {
        self.stream_error_with("mock in-band error")
    }

    /// The in-band error event, with this message.
    pub fn stream_error_with(self, message: &str) -> Bytes {
        match self {
            Self::OpenAi => crate::api::sse::frame_data(&openai::error_body(500, message)),
            Self::Anthropic => anthropic::stream_error(message),
            Self::Gemini => gemini::stream_error(message),
        }
    }
}

impl Reply {
    /// The reply to `turn`: a tool-result echo, a tool call, or an echo of the user's text
    /// (with ` [N image(s)]` when the message carried images). `body_len` is the request's
    /// size in bytes, which sets the prompt tokens.
    pub fn new(model: String, stream: bool, body_len: usize, turn: Turn) -> Self {
        let (content, tool_call) = if let Some(result) = turn.tool_result {
            (format!("{REPLY_PREFIX}tool result {}", echo(&result)), None)
        } else if let Some(name) = turn.call_tool {
            let mut arguments = b"{\"query\":".to_vec();
            write_string(&mut arguments, &echo(&turn.text));
            arguments.push(b'}');
            let arguments = String::from_utf8_lossy(&arguments).into_owned();
            (String::new(), Some(ToolCall { name, arguments }))
        } else {
            let images = match turn.images {
                0 => String::new(),
                1 => " [1 image]".to_owned(),
                n => format!(" [{n} images]"),
            };
            (format!("{REPLY_PREFIX}{}{images}", echo(&turn.text)), None)
        };
        Self {
            model,
            stream,
            include_usage: false,
            content,
            tool_call,
            prompt_tokens: (body_len as u64 / 4).max(1),
            cached_tokens: 0,
            reasoning_tokens: 0,
            finish: None,
        }
    }

    /// Take the usage and finish knobs (`cached_tokens`, `reasoning_tokens`, `finish`).
    pub fn apply_knobs(&mut self, knobs: &Knobs) {
        self.cached_tokens = knobs.cached_tokens.min(self.prompt_tokens);
        self.reasoning_tokens = knobs.reasoning_tokens;
        self.finish = knobs.finish.clone();
    }

    /// Take the `refusal` knob in `format`: its refusal finish reason, unless `finish` set one.
    pub fn apply_refusal(&mut self, knobs: &Knobs, format: Format) {
        if knobs.refusal && self.finish.is_none() {
            self.finish = Some(format.refusal_finish().to_owned());
        }
    }

    /// Tokens of the reply itself: one per word of the text, or of the tool arguments' JSON
    /// (at least 1). Reasoning tokens not included.
    pub fn output_tokens(&self) -> u64 {
        match &self.tool_call {
            Some(call) => (call.arguments.split_whitespace().count() as u64).max(1),
            None => self.content.split_whitespace().count() as u64,
        }
    }

    /// All generated tokens: the reply's plus reasoning (OpenAI's `completion_tokens`).
    pub fn completion_tokens(&self) -> u64 {
        self.output_tokens() + self.reasoning_tokens
    }

    /// The usage of this answer, normalised (see [`MockUsage`]).
    pub fn usage(&self) -> MockUsage {
        MockUsage {
            input_tokens: self.prompt_tokens,
            output_tokens: self.completion_tokens(),
            cached_input_tokens: self.cached_tokens,
            reasoning_tokens: self.reasoning_tokens,
        }
    }

    /// The finish reason: the `finish` knob's, or `natural`.
    fn finish_or<'a>(&'a self, natural: &'a str) -> &'a str {
        self.finish.as_deref().unwrap_or(natural)
    }

    /// What a stream sends in pieces: the text, or the tool call's arguments.
    fn streamed_text(&self) -> &str {
        match &self.tool_call {
            Some(call) => &call.arguments,
            None => &self.content,
        }
    }
}

/// The first [`ECHO_CHARS`] characters of `s`.
fn echo(s: &str) -> String {
    s.chars().take(ECHO_CHARS).collect()
}

/// Split `s` into `n` pieces of about equal length, on char boundaries (some may be empty
/// when `s` is short).
fn split_pieces(s: &str, n: usize) -> Vec<&str> {
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for i in 1..=n {
        let mut end = if i == n { s.len() } else { s.len() * i / n };
        while !s.is_char_boundary(end) {
            end += 1;
        }
        let end = end.max(start);
        out.push(&s[start..end]);
        start = end;
    }
    out
}

/// A request's model name without its knob suffix (`mock;latency_ms=5` → `mock`).
fn base_model(model: &str) -> String {
    model.split(';').next().unwrap_or(model).to_owned()
}

/// How the mock misbehaves, per process (flags) and per request (model suffix
/// `name;key=value;...` or `x-mock-<key>` headers; headers win).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Knobs {
    /// Delay before the response head.
    pub latency: Delay,
    /// Streams: delay between the head and the first event.
    pub ttfc: Delay,
    /// Streams: delay between events.
    pub interval: Delay,
    /// Streams: content chunks (default [`DEFAULT_CHUNKS`]).
    pub chunks: Option<usize>,
    /// Answer with this HTTP status and an error in the request's format.
    pub status: Option<u16>,
    /// With status 429: the `Retry-After` seconds.
    pub retry_after: Option<u32>,
    /// Never answer (`head`) or stop after the head (`body`).
    pub stall: Option<Stall>,
    /// Streams: abort the connection after this many events.
    pub reset_after: Option<usize>,
    /// Streams: send an in-band error event after this many events, then end.
    pub error_after: Option<usize>,
    /// Report this many of the prompt tokens as read from a cache (capped at the prompt
    /// tokens).
    pub cached_tokens: u64,
    /// Report this many reasoning tokens on top of the reply's own.
    pub reasoning_tokens: u64,
    /// Report this finish reason instead of the natural one, verbatim (`SAFETY`, `length`,
    /// `max_tokens`...). Gemini answers with a blocking reason (`SAFETY`, `RECITATION`, ...)
    /// carry no content.
    pub finish: Option<String>,
    /// Echo the request's credential headers (`authorization`, `x-api-key`,
    /// `x-goog-api-key`, `api-key`) in the error message of the `status` knob and of the
    /// `error_after` in-band error, as some providers do (`echo_auth=1`).
    pub echo_auth: bool,
    /// Chat only: refuse the request the way the provider does for this reason, in the
    /// request's format (`error=context_window`, `error=content_policy`, `error=none`).
    /// Takes precedence over `status`; embeddings requests ignore it.
    pub error: Option<ProviderError>,
    /// Chat only: answer, but end with the format's refusal finish reason (`refusal=1`; see
    /// [`Format::refusal_finish`]); an explicit `finish` wins.
    pub refusal: bool,
}

/// A provider's own reason to refuse a chat request (knob `error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderError {
    /// The prompt is longer than the model's context window (400 in every format).
    ContextWindow,
    /// The request breaks the provider's content policy (400; Gemini: a 200 answer whose
    /// prompt is blocked).
    ContentPolicy,
}

/// A delay: fixed, or drawn per use from a distribution (the mock's latency model).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Delay {
    /// No delay.
    #[default]
    Zero,
    /// Always this long.
    Fixed(Duration),
    /// Uniform between the two bounds.
    Uniform(Duration, Duration),
    /// Exponential with this mean (memoryless gaps, long tail), capped at 20× the mean.
    Exp(Duration),
}

impl Delay {
    /// Parse milliseconds: `20`, `0.5`, `10..50` (uniform) or `exp:20` (exponential mean).
    pub fn parse_ms(v: &str) -> Option<Self> {
        let ms = |t: &str| {
            let x: f64 = t.trim().parse().ok()?;
            (x.is_finite() && (0.0..=3_600_000.0).contains(&x))
                .then(|| Duration::from_secs_f64(x / 1000.0))
        };
        if let Some(mean) = v.strip_prefix("exp:") {
            return Some(Self::Exp(ms(mean)?));
        }
        if let Some((lo, hi)) = v.split_once("..") {
            let (lo, hi) = (ms(lo)?, ms(hi)?);
            return (lo <= hi).then_some(Self::Uniform(lo, hi));
        }
        let d = ms(v)?;
        Some(if d.is_zero() {
            Self::Zero
        } else {
            Self::Fixed(d)
        })
    }

    /// Never waits?
    pub fn is_zero(&self) -> bool {
        *self == Self::Zero
    }

    /// One draw.
    pub fn sample(&self) -> Duration {
        match *self {
            Self::Zero => Duration::ZERO,
            Self::Fixed(d) => d,
            Self::Uniform(lo, hi) => lo + (hi - lo).mul_f64(unit_random()),
            Self::Exp(mean) => mean.mul_f64((-(1.0 - unit_random()).ln()).min(20.0)),
        }
    }
}

/// A uniform draw in [0, 1) from a per-thread xorshift generator (not for secrets).
fn unit_random() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) };
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// Where a stalled answer stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// Before the response head.
    Head,
    /// After the head, before any body byte.
    Body,
}

impl Knobs {
    /// Set one knob from text; unknown keys and bad values are errors.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), MockError> {
        let bad = || MockError(format!("mock knob `{key}`: bad value `{value}`"));
        let ms = |v: &str| Delay::parse_ms(v).ok_or_else(bad);
        match key {
            "latency_ms" | "latency-ms" => self.latency = ms(value)?,
            "ttfc_ms" | "ttfc-ms" => self.ttfc = ms(value)?,
            "interval_ms" | "interval-ms" => self.interval = ms(value)?,
            "chunks" => self.chunks = Some(value.parse().map_err(|_| bad())?),
            "status" => self.status = Some(value.parse().map_err(|_| bad())?),
            "retry_after" | "retry-after" => {
                self.retry_after = Some(value.parse().map_err(|_| bad())?)
            }
            "stall" => {
                self.stall = match value {
                    "head" => Some(Stall::Head),
                    "body" => Some(Stall::Body),
                    "none" => None,
                    _ => return Err(bad()),
                }
            }
            "reset_after" | "reset-after" => {
                self.reset_after = Some(value.parse().map_err(|_| bad())?)
            }
            "error_after" | "error-after" => {
                self.error_after = Some(value.parse().map_err(|_| bad())?)
            }
            "cached_tokens" | "cached-tokens" => {
                self.cached_tokens = value.parse().map_err(|_| bad())?
            }
            "reasoning_tokens" | "reasoning-tokens" => {
                self.reasoning_tokens = value.parse().map_err(|_| bad())?
            }
            "finish" => {
                if value.is_empty() {
                    return Err(bad());
                }
                self.finish = Some(value.to_owned())
            }
            "echo_auth" | "echo-auth" => self.echo_auth = flag(value).ok_or_else(bad)?,
            "error" => {
                self.error = match value {
                    "context_window" | "context-window" => Some(ProviderError::ContextWindow),
                    "content_policy" | "content-policy" => Some(ProviderError::ContentPolicy),
                    "none" => None,
                    _ => return Err(bad()),
                }
            }
            "refusal" => self.refusal = flag(value).ok_or_else(bad)?,
            _ => return Err(MockError(format!("unknown mock knob `{key}`"))),
        }
        Ok(())
    }

    /// Knobs from `key=value` pairs (`status=500;latency_ms=50`) over the defaults: what
    /// `PUT /mock/knobs` sets. Empty text gives the defaults.
    pub fn parse(text: &str) -> Result<Self, MockError> {
        let mut knobs = Self::default();
        for (k, v) in pairs(text) {
            knobs.set(k, v?)?;
        }
        Ok(knobs)
    }

    /// Apply `key=value` pairs from a model name's suffix (`mock;latency_ms=5;chunks=3`).
    pub fn apply_model_suffix(&mut self, model: &str) -> Result<(), MockError> {
        let suffix = model.split_once(';').map_or("", |(_, s)| s);
        for (k, v) in pairs(suffix) {
            self.set(k, v?)?;
        }
        Ok(())
    }

    /// Apply `x-mock-<key>` headers.
    pub fn apply_headers(&mut self, headers: &http::HeaderMap) -> Result<(), MockError> {
        for (name, value) in headers {
            if let Some(key) = name.as_str().strip_prefix("x-mock-") {
                let v = value
                    .to_str()
                    .map_err(|_| MockError(format!("header {name} is not text")))?;
                self.set(key, v)?;
            }
        }
        Ok(())
    }
}

/// `1`/`true` or `0`/`false`.
fn flag(value: &str) -> Option<bool> {
    match value {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// The `key=value` pairs of `;`-separated text (empty pieces skipped, both sides trimmed); a
/// piece without `=` is an error.
fn pairs(text: &str) -> impl Iterator<Item = (&str, Result<&str, MockError>)> {
    text.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (k.trim(), Ok(v.trim())),
            None => (
                pair,
                Err(MockError(format!("mock knob `{pair}` needs a value"))),
            ),
        })
}

/// Knob settings checked once and applied later on top of other knobs (a schedule window's
/// faults): `key=value` pairs in the model-suffix syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnobPairs(Vec<(String, String)>);

impl KnobPairs {
    /// Read and check `status=500;latency_ms=50`.
    pub fn parse(text: &str) -> Result<Self, MockError> {
        let mut out = Vec::new();
        let mut check = Knobs::default();
        for (k, v) in pairs(text) {
            let v = v?;
            check.set(k, v)?;
            out.push((k.to_owned(), v.to_owned()));
        }
        Ok(Self(out))
    }

    /// No pairs?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Set these pairs on `knobs`, in order.
    pub fn apply(&self, knobs: &mut Knobs) {
        for (k, v) in &self.0 {
            // Checked in `parse`, and whether a pair is valid does not depend on the knobs
            // it is set on: this cannot fail.
            let _ = knobs.set(k, v);
        }
    }
}

/// Helpers for the format modules' tests.
#[cfg(test)]
pub(crate) mod test_util {
    use bytes::Bytes;

    /// The `(event name, data JSON)` of each framed SSE event (`\n` or `\r\n` lines);
    /// `[DONE]` is skipped.
    pub fn parse_events(events: &[Bytes]) -> Vec<(Option<String>, serde_json::Value)> {
        let mut out = Vec::new();
        for e in events {
            let text = std::str::from_utf8(e).unwrap();
            assert!(
                text.ends_with("\n\n") || text.ends_with("\r\n\r\n"),
                "not one whole event: {text:?}"
            );
            let mut name = None;
            let mut data = None;
            for line in text.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    assert!(data.is_none(), "one data line per event");
                    data = Some(d.to_owned());
                }
            }
            let data = data.unwrap();
            if data != "[DONE]" {
                out.push((name, serde_json::from_str(&data).unwrap()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(text: &str) -> Turn {
        Turn {
            text: text.to_owned(),
            ..Turn::default()
        }
    }

    #[test]
    fn replies_echo_call_tools_and_answer_tool_results() {
        let long = "é".repeat(300);
        let r = Reply::new("m".into(), false, 2, turn(&long));
        assert_eq!(r.content, format!("{REPLY_PREFIX}{}", "é".repeat(200)));
        assert_eq!(r.prompt_tokens, 1, "at least one prompt token");
        assert_eq!(
            Reply::new("m".into(), false, 400, turn("")).prompt_tokens,
            100
        );

        let images = |n| {
            Reply::new(
                "m".into(),
                false,
                9,
                Turn {
                    images: n,
                    ..turn("hi")
                },
            )
            .content
        };
        assert_eq!(images(1), "This is a mock reply to: hi [1 image]");
        assert_eq!(images(3), "This is a mock reply to: hi [3 images]");

        let call = Reply::new(
            "m".into(),
            false,
            9,
            Turn {
                call_tool: Some("search".into()),
                images: 1,
                ..turn("say \"a\\b\"\n")
            },
        );
        assert_eq!(call.content, "");
        let t = call.tool_call.as_ref().unwrap();
        assert_eq!(t.name, "search");
        let args: serde_json::Value = serde_json::from_str(&t.arguments).unwrap();
        assert_eq!(args, serde_json::json!({"query": "say \"a\\b\"\n"}));
        assert_eq!(call.output_tokens(), 2);

        let result = Reply::new(
            "m".into(),
            false,
            9,
            Turn {
                tool_result: Some("x".repeat(250)),
                call_tool: Some("search".into()),
                ..turn("ignored")
            },
        );
        assert!(result.tool_call.is_none());
        assert_eq!(
            result.content,
            format!("{REPLY_PREFIX}tool result {}", "x".repeat(200))
        );
    }

    #[test]
    fn usage_is_normalised() {
        let mut r = Reply::new("m".into(), false, 40, turn("one two"));
        let mut k = Knobs::default();
        k.set("cached_tokens", "4").unwrap();
        k.set("reasoning-tokens", "5").unwrap();
        r.apply_knobs(&k);
        assert_eq!(r.output_tokens(), 8);
        assert_eq!(r.completion_tokens(), 13);
        assert_eq!(
            r.usage(),
            MockUsage {
                input_tokens: 10,
                output_tokens: 13,
                cached_input_tokens: 4,
                reasoning_tokens: 5,
            }
        );
        k.set("cached_tokens", "11").unwrap();
        r.apply_knobs(&k);
        assert_eq!(r.cached_tokens, 10, "capped at the prompt tokens");
    }

    #[test]
    fn pieces_cover_the_text_on_char_boundaries() {
        for n in [1, 2, 5, 40] {
            let pieces = split_pieces("aé🙂bc", n);
            assert_eq!(pieces.len(), n);
            assert_eq!(pieces.concat(), "aé🙂bc");
        }
    }

    #[test]
    fn knobs_parse_and_reject() {
        let mut k = Knobs::default();
        k.apply_model_suffix("mock;latency_ms=5;chunks=3;stall=body;status=429")
            .unwrap();
        assert_eq!(k.latency, Delay::Fixed(Duration::from_millis(5)));
        assert_eq!(k.chunks, Some(3));
        assert_eq!(k.stall, Some(Stall::Body));
        assert_eq!(k.status, Some(429));
        assert!(k.apply_model_suffix("mock;nope=1").is_err());
        assert!(k.apply_model_suffix("mock;chunks=x").is_err());
        let mut h = http::HeaderMap::new();
        h.insert("x-mock-reset-after", "2".parse().unwrap());
        k.apply_headers(&h).unwrap();
        assert_eq!(k.reset_after, Some(2));
    }

    #[test]
    fn delays_parse_and_draw_within_their_distribution() {
        let ms = Duration::from_millis;
        assert_eq!(Delay::parse_ms("0"), Some(Delay::Zero));
        assert_eq!(Delay::parse_ms("20"), Some(Delay::Fixed(ms(20))));
        assert_eq!(
            Delay::parse_ms("0.5"),
            Some(Delay::Fixed(Duration::from_micros(500)))
        );
        for bad in ["", "x", "-1", "5..1", "exp:", "exp:-3", "nan"] {
            assert_eq!(Delay::parse_ms(bad), None, "{bad}");
        }
        let u = Delay::parse_ms("10..50").unwrap();
        let draws: Vec<_> = (0..10_000).map(|_| u.sample()).collect();
        assert!(draws.iter().all(|d| (ms(10)..=ms(50)).contains(d)));
        let mean = draws.iter().sum::<Duration>() / 10_000;
        assert!(mean > ms(28) && mean < ms(32), "{mean:?}");
        let e = Delay::parse_ms("exp:20").unwrap();
        let draws: Vec<_> = (0..20_000).map(|_| e.sample()).collect();
        let mean = draws.iter().sum::<Duration>() / 20_000;
        assert!(mean > ms(18) && mean < ms(22), "{mean:?}");
        assert!(draws.iter().all(|d| *d <= ms(400)));
        assert!(
            draws.iter().any(|d| *d > ms(60)),
            "an exponential has a tail"
        );
    }

    #[test]
    fn knob_text_parses_into_knobs_and_pairs() {
        let k =
            Knobs::parse(" status=500; latency_ms=50 ;;error=content_policy;refusal=1\n").unwrap();
        assert_eq!(k.status, Some(500));
        assert_eq!(k.latency, Delay::Fixed(Duration::from_millis(50)));
        assert_eq!(k.error, Some(ProviderError::ContentPolicy));
        assert!(k.refusal);
        assert_eq!(Knobs::parse("").unwrap(), Knobs::default());
        for bad in [
            "status",
            "status=x",
            "nope=1",
            "error=teapot",
            "refusal=maybe",
        ] {
            assert!(Knobs::parse(bad).is_err(), "{bad}");
        }

        let pairs = KnobPairs::parse("status=429;retry_after=3").unwrap();
        let mut k = Knobs::parse("latency_ms=5;status=500").unwrap();
        pairs.apply(&mut k);
        assert_eq!(k.status, Some(429), "pairs override");
        assert_eq!(k.retry_after, Some(3));
        assert_eq!(
            k.latency,
            Delay::Fixed(Duration::from_millis(5)),
            "the rest stays"
        );
        assert!(KnobPairs::parse("").unwrap().is_empty());
        assert!(KnobPairs::parse("status=500;chunks=x").is_err());

        let mut k = Knobs::default();
        k.apply_model_suffix("m;error=context-window").unwrap();
        assert_eq!(k.error, Some(ProviderError::ContextWindow));
        k.apply_model_suffix("m;error=none;refusal=true").unwrap();
        assert_eq!((k.error, k.refusal), (None, true));
    }

    #[test]
    fn refusal_takes_each_format_s_reason_unless_finish_is_set() {
        let knobs = Knobs::parse("refusal=1").unwrap();
        for (format, reason) in [
            (Format::OpenAi, "content_filter"),
            (Format::Anthropic, "refusal"),
            (Format::Gemini, "SAFETY"),
        ] {
            let mut r = Reply::new("m".into(), false, 9, turn("hi"));
            r.apply_knobs(&knobs);
            r.apply_refusal(&knobs, format);
            assert_eq!(r.finish.as_deref(), Some(reason));
        }
        let knobs = Knobs::parse("refusal=1;finish=length").unwrap();
        let mut r = Reply::new("m".into(), false, 9, turn("hi"));
        r.apply_knobs(&knobs);
        r.apply_refusal(&knobs, Format::Anthropic);
        assert_eq!(r.finish.as_deref(), Some("length"));
    }

    #[test]
    fn provider_errors_have_each_provider_s_status_and_shape() {
        use serde_json::{Value as Json, json};
        let json_of = |b: &Bytes| serde_json::from_slice::<Json>(b).unwrap();
        let r = Reply::new("gemini-x".into(), false, 40, turn("hi"));
        let (status, body) = Format::OpenAi.provider_error(ProviderError::ContextWindow, &r);
        let v = json_of(&body);
        assert_eq!(status, 400);
        assert_eq!(v["error"]["code"], "context_length_exceeded");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "messages");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("This model's maximum context length is 128000 tokens.")
        );
        let (status, body) = Format::OpenAi.provider_error(ProviderError::ContentPolicy, &r);
        let v = json_of(&body);
        assert_eq!(status, 400);
        assert_eq!(v["error"]["code"], "content_policy_violation");
        assert_eq!(v["error"]["type"], "invalid_request_error");

        let (status, body) = Format::Anthropic.provider_error(ProviderError::ContextWindow, &r);
        assert_eq!(status, 400);
        assert_eq!(
            json_of(&body),
            json!({"type": "error", "error": {"type": "invalid_request_error",
                   "message": "prompt is too long: 210000 tokens > 200000 maximum"}})
        );
        let (status, body) = Format::Anthropic.provider_error(ProviderError::ContentPolicy, &r);
        assert_eq!(status, 400);
        let v = json_of(&body);
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("content filtering")
        );

        let (status, body) = Format::Gemini.provider_error(ProviderError::ContextWindow, &r);
        assert_eq!(status, 400);
        assert_eq!(
            json_of(&body),
            json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message":
                "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."}})
        );
        let (status, body) = Format::Gemini.provider_error(ProviderError::ContentPolicy, &r);
        assert_eq!(status, 200);
        let v = json_of(&body);
        assert_eq!(v["promptFeedback"]["blockReason"], "SAFETY");
        assert!(
            v.get("candidates").is_none(),
            "a blocked prompt has no candidates"
        );
        assert_eq!(v["usageMetadata"]["promptTokenCount"], 10);
        assert_eq!(v["modelVersion"], "gemini-x");

        let streamed = Reply::new("gemini-x".into(), true, 40, turn("hi"));
        let (status, body) = Format::Gemini.provider_error(ProviderError::ContentPolicy, &streamed);
        assert_eq!(status, 200);
        let events = test_util::parse_events(&[body]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].1["promptFeedback"]["blockReason"], "SAFETY");
    }

    #[test]
    fn new_knobs_parse_and_reject() {
        let mut k = Knobs::default();
        k.apply_model_suffix("mock;cached_tokens=3;reasoning_tokens=2;finish=SAFETY")
            .unwrap();
        assert_eq!((k.cached_tokens, k.reasoning_tokens), (3, 2));
        assert_eq!(k.finish.as_deref(), Some("SAFETY"));
        let mut h = http::HeaderMap::new();
        h.insert("x-mock-cached-tokens", "9".parse().unwrap());
        h.insert("x-mock-finish", "length".parse().unwrap());
        k.apply_headers(&h).unwrap();
        assert_eq!(k.cached_tokens, 9);
        assert_eq!(k.finish.as_deref(), Some("length"));
        assert!(!k.echo_auth);
        k.apply_model_suffix("mock;echo_auth=1").unwrap();
        assert!(k.echo_auth);
        for bad in [
            "mock;echo_auth=yes",
            "mock;cached_tokens=-1",
            "mock;reasoning_tokens=x",
            "mock;finish=",
        ] {
            assert!(k.apply_model_suffix(bad).is_err(), "{bad}");
        }
    }
}
