//! The deterministic mock provider: the same answers in-process (the embedded default) and as
//! an OpenAI-compatible HTTP server (`shardgate-mock`, in [`server`]).
//!
//! Owns: reading a chat request the way a provider would, building the deterministic reply
//! (whole JSON or SSE events, usage included), and the fault knobs ([`Knobs`]).
//! Does not: route or account anything.
//! Key types: [`Reply`], [`Knobs`], [`server::MockServer`].

pub mod server;

use std::time::Duration;

use bytes::Bytes;
use simd_json::prelude::*;

use crate::api::json::write_string;

/// Default number of content chunks in a streamed reply.
pub const DEFAULT_CHUNKS: usize = 8;
/// Longest echo of the user's text in a reply.
const ECHO_CHARS: usize = 200;
/// Fixed `created` timestamp, so answers are byte-for-byte deterministic.
const CREATED: u64 = 1_700_000_000;

/// What a mock request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The model name as sent (without knob suffix).
    pub model: String,
    /// Streamed?
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// The reply text.
    pub content: String,
    /// Prompt tokens (request bytes / 4, at least 1).
    pub prompt_tokens: u64,
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MockError(pub String);

impl Reply {
    /// Read a chat request body (parsed with simd-json; `body` is a scratch copy it may
    /// modify). The reply echoes the last user message's text.
    pub fn from_request(body: &mut [u8]) -> Result<Self, MockError> {
        let len = body.len() as u64;
        let v = simd_json::to_borrowed_value(body)
            .map_err(|e| MockError(format!("invalid JSON: {e}")))?;
        let model = v
            .get_str("model")
            .ok_or_else(|| MockError("you must provide a model parameter".into()))?;
        let model = model.split(';').next().unwrap_or(model).to_owned();
        let messages = v
            .get("messages")
            .and_then(|m| m.as_array())
            .ok_or_else(|| MockError("you must provide a messages parameter".into()))?;
        let last_user = messages
            .iter()
            .filter(|m| m.get_str("role") == Some("user"))
            .last();
        let text = match last_user.and_then(|m| m.get("content")) {
            Some(c) if c.is_str() => c.as_str().unwrap_or_default().to_owned(),
            Some(c) => c
                .as_array()
                .map(|parts| {
                    parts
                        .iter()
                        .filter_map(|p| p.get_str("text"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default(),
            None => String::new(),
        };
        let echo: String = text.chars().take(ECHO_CHARS).collect();
        Ok(Self {
            model,
            stream: v.get_bool("stream").unwrap_or(false),
            include_usage: v
                .get("stream_options")
                .and_then(|o| o.get_bool("include_usage"))
                .unwrap_or(false),
            content: format!("This is a mock reply to: {echo}"),
            prompt_tokens: (len / 4).max(1),
        })
    }

    /// Output tokens: one per word.
    pub fn completion_tokens(&self) -> u64 {
        self.content.split_whitespace().count() as u64
    }

    fn usage_json(&self, out: &mut Vec<u8>) {
        let c = self.completion_tokens();
        out.extend_from_slice(
            format!(
                "{{\"prompt_tokens\":{},\"completion_tokens\":{c},\"total_tokens\":{}}}",
                self.prompt_tokens,
                self.prompt_tokens + c
            )
            .as_bytes(),
        );
    }

    fn head(&self, out: &mut Vec<u8>, object: &str) {
        out.extend_from_slice(b"{\"id\":\"chatcmpl-mock\",\"object\":\"");
        out.extend_from_slice(object.as_bytes());
        out.extend_from_slice(format!("\",\"created\":{CREATED},\"model\":").as_bytes());
        write_string(out, &self.model);
        out.extend_from_slice(b",\"system_fingerprint\":\"shardgate-mock\"");
    }

    /// The whole (non-streamed) answer.
    pub fn completion(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.content.len() + 400);
        self.head(&mut out, "chat.completion");
        out.extend_from_slice(
            b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":",
        );
        write_string(&mut out, &self.content);
        out.extend_from_slice(
            b",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":",
        );
        self.usage_json(&mut out);
        out.push(b'}');
        Bytes::from(out)
    }

    fn chunk(&self, delta: &str, finish: Option<&str>) -> Bytes {
        let mut out = Vec::with_capacity(delta.len() + 300);
        out.extend_from_slice(b"data: ");
        self.head(&mut out, "chat.completion.chunk");
        out.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":");
        out.extend_from_slice(delta.as_bytes());
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(f) => write_string(&mut out, f),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]}\n\n");
        Bytes::from(out)
    }

    /// The streamed answer as whole SSE events: a role event, `chunks` content events, a
    /// finish event, a usage event (when asked for), and `[DONE]`.
    pub fn events(&self, chunks: usize) -> Vec<Bytes> {
        let pieces = split_pieces(&self.content, chunks.max(1));
        let mut out = Vec::with_capacity(pieces.len() + 4);
        out.push(self.chunk("{\"role\":\"assistant\",\"content\":\"\"}", None));
        for p in pieces {
            let mut d = b"{\"content\":".to_vec();
            write_string(&mut d, p);
            d.push(b'}');
            out.push(self.chunk(&String::from_utf8_lossy(&d), None));
        }
        out.push(self.chunk("{}", Some("stop")));
        if self.include_usage {
            let mut u = b"data: ".to_vec();
            self.head(&mut u, "chat.completion.chunk");
            u.extend_from_slice(b",\"choices\":[],\"usage\":");
            self.usage_json(&mut u);
            u.extend_from_slice(b"}\n\n");
            out.push(Bytes::from(u));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }
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
    /// Answer with this HTTP status and an OpenAI-shaped error.
    pub status: Option<u16>,
    /// With status 429: the `Retry-After` seconds.
    pub retry_after: Option<u32>,
    /// Never answer (`head`) or stop after the head (`body`).
    pub stall: Option<Stall>,
    /// Streams: abort the connection after this many events.
    pub reset_after: Option<usize>,
    /// Streams: send an in-band error event after this many events, then end.
    pub error_after: Option<usize>,
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
            _ => return Err(MockError(format!("unknown mock knob `{key}`"))),
        }
        Ok(())
    }

    /// Apply `key=value` pairs from a model name's suffix (`mock;latency_ms=5;chunks=3`).
    pub fn apply_model_suffix(&mut self, model: &str) -> Result<(), MockError> {
        for pair in model.split(';').skip(1).filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| MockError(format!("mock knob `{pair}` needs a value")))?;
            self.set(k.trim(), v.trim())?;
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

/// An OpenAI-shaped error body.
pub fn error_body(status: u16, message: &str) -> Bytes {
    let mut out = b"{\"error\":{\"message\":".to_vec();
    write_string(&mut out, message);
    let kind = match status {
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    out.extend_from_slice(
        format!(",\"type\":\"{kind}\",\"param\":null,\"code\":\"mock_{status}\"}}}}").as_bytes(),
    );
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: &str) -> Reply {
        Reply::from_request(&mut body.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn echoes_the_last_user_message() {
        let r = reply(
            r#"{"model":"mock;chunks=2","messages":[{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":[{"type":"text","text":"hi there"}]}]}"#,
        );
        assert_eq!(r.model, "mock");
        assert_eq!(r.content, "This is a mock reply to: hi there");
        assert_eq!(r.completion_tokens(), 8);
        let v: serde_json::Value = serde_json::from_slice(&r.completion()).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], r.content);
        assert_eq!(v["usage"]["completion_tokens"], 8);
        assert_eq!(v["usage"]["total_tokens"], r.prompt_tokens + 8);
    }

    #[test]
    fn stream_reassembles_to_the_content() {
        let mut r = reply(
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"héllo wörld, a longer text"}]}"#,
        );
        r.include_usage = true;
        for n in [1, 3, 8, 100] {
            let events = r.events(n);
            let mut text = String::new();
            let mut usage = None;
            for e in &events[..events.len() - 1] {
                let json = e
                    .strip_prefix(b"data: ")
                    .unwrap()
                    .strip_suffix(b"\n\n")
                    .unwrap();
                let v: serde_json::Value = serde_json::from_slice(json).unwrap();
                if let Some(c) = v["choices"]
                    .get(0)
                    .and_then(|c| c["delta"]["content"].as_str())
                {
                    text.push_str(c);
                }
                if v["usage"].is_object() {
                    usage = Some(v["usage"]["completion_tokens"].as_u64().unwrap());
                }
            }
            assert_eq!(text, r.content, "chunks={n}");
            assert_eq!(usage, Some(r.completion_tokens()));
            assert_eq!(&events[events.len() - 1][..], b"data: [DONE]\n\n");
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
    fn bad_requests_are_errors() {
        for b in ["{", r#"{"messages":[]}"#, r#"{"model":"m"}"#] {
            assert!(
                Reply::from_request(&mut b.as_bytes().to_vec()).is_err(),
                "{b}"
            );
        }
    }
}
