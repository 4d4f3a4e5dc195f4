//! Cached answers in the client's dialect: what the cache needs to know of an answer the
//! client received (complete and healthy? its usage), and an answer turned from one form to
//! the other (a stream served from a whole answer and the reverse), through the same
//! decoders and encoders as live traffic.

use bytes::Bytes;

use super::{Decoder, Dialect, Encoder};
use crate::api::response::{ChatResponse, Delta};
use crate::api::sse::data_payloads;
use crate::api::{TranslateError, Usage};
use crate::config::ProviderKind;

/// What a finished answer says of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// It reached its dialect's documented end, with no in-band error.
    pub complete: bool,
    /// Its usage, if it reported one.
    pub usage: Option<Usage>,
}

fn decoder(dialect: Dialect) -> Decoder {
    Decoder::of_kind(match dialect {
        Dialect::OpenAi => ProviderKind::OpenAi,
        Dialect::Anthropic => ProviderKind::Anthropic,
    })
}

/// Read a stream's events (as the client received them) into one answer; `None` when an
/// event is unreadable.
fn read_stream(dialect: Dialect, events: &[u8]) -> Option<(ChatResponse, bool)> {
    let mut dec = decoder(dialect);
    let mut deltas = Vec::new();
    let mut answer = ChatResponse::default();
    for data in data_payloads(events) {
        dec.parse_chunk(&data, &mut deltas).ok()?;
        for d in deltas.drain(..) {
            answer.apply(d);
        }
    }
    Some((answer, dec.is_complete()))
}

/// The answer's text (its tool calls' names and arguments after it), whole or streamed: what
/// shadow mode compares between a cached answer and a fresh one. `None` when unreadable.
pub fn answer_text(dialect: Dialect, body: &[u8], stream: bool) -> Option<String> {
    let answer = if stream {
        read_stream(dialect, body)?.0
    } else {
        read_whole(dialect, body).ok()?
    };
    let mut text = answer.text;
    for call in &answer.tool_calls {
        text.push('\n');
        text.push_str(&call.function.name);
        text.push(' ');
        text.push_str(&call.function.arguments);
    }
    Some(text)
}

/// Whether a stream the client received is complete and healthy, and its usage.
pub fn check_stream(dialect: Dialect, events: &[u8]) -> Checked {
    match read_stream(dialect, events) {
        Some((answer, complete)) => Checked {
            complete: complete && answer.error.is_none() && answer.finish.is_some(),
            usage: answer.usage,
        },
        None => Checked {
            complete: false,
            usage: None,
        },
    }
}

fn read_whole(dialect: Dialect, body: &[u8]) -> Result<ChatResponse, TranslateError> {
    match dialect {
        Dialect::OpenAi => super::openai::translate::from_wire(body),
        Dialect::Anthropic => super::anthropic::translate::from_wire(body),
    }
}

/// Whether a whole answer the client received is a complete answer, and its usage.
pub fn check_whole(dialect: Dialect, body: &[u8]) -> Checked {
    match read_whole(dialect, body) {
        Ok(a) => Checked {
            complete: a.error.is_none() && a.finish.is_some(),
            usage: a.usage,
        },
        Err(_) => Checked {
            complete: false,
            usage: None,
        },
    }
}

/// Whether an embeddings answer (OpenAI's shape, which every upstream's is turned into) is
/// complete: a `data` list of embeddings and no error; its usage.
pub fn check_embeddings(body: &[u8]) -> Checked {
    #[derive(serde::Deserialize)]
    struct Answer {
        data: Vec<serde::de::IgnoredAny>,
        #[serde(default)]
        usage: Option<Tokens>,
        #[serde(default)]
        error: Option<serde::de::IgnoredAny>,
    }
    #[derive(serde::Deserialize)]
    struct Tokens {
        #[serde(default)]
        prompt_tokens: u64,
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(a) => Checked {
            complete: !a.data.is_empty() && a.error.is_none(),
            usage: a.usage.map(|u| Usage {
                input_tokens: u.prompt_tokens,
                ..Usage::default()
            }),
        },
        Err(_) => Checked {
            complete: false,
            usage: None,
        },
    }
}

/// A stream's events as the whole answer a client of `dialect` expects.
pub fn stream_to_whole(
    dialect: Dialect,
    events: &[u8],
    model: &str,
) -> Result<Vec<u8>, TranslateError> {
    let Some((answer, true)) = read_stream(dialect, events) else {
        return Err(TranslateError::upstream(
            "a cached stream that is not complete",
        ));
    };
    write_whole(dialect, &answer, model)
}

fn write_whole(
    dialect: Dialect,
    answer: &ChatResponse,
    model: &str,
) -> Result<Vec<u8>, TranslateError> {
    match dialect {
        Dialect::OpenAi => Ok(super::openai::translate::to_client(
            answer,
            model,
            super::unix_now(),
        )),
        Dialect::Anthropic => super::anthropic::translate::to_client(answer, model),
    }
}

/// A whole answer as the stream a client of `dialect` expects, one frame per event.
pub fn whole_to_stream(
    dialect: Dialect,
    body: &[u8],
    model: &str,
    include_usage: bool,
) -> Result<Vec<Bytes>, TranslateError> {
    let answer = read_whole(dialect, body)?;
    encode(dialect, answer.to_deltas(), model, include_usage)
}

/// A stream encoded again (a cached OpenAI stream whose usage chunk the client did not ask
/// for), one frame per event.
pub fn restream(
    dialect: Dialect,
    events: &[u8],
    model: &str,
    include_usage: bool,
) -> Result<Vec<Bytes>, TranslateError> {
    let Some((answer, true)) = read_stream(dialect, events) else {
        return Err(TranslateError::upstream(
            "a cached stream that is not complete",
        ));
    };
    encode(dialect, answer.to_deltas(), model, include_usage)
}

fn encode(
    dialect: Dialect,
    deltas: Vec<Delta>,
    model: &str,
    include_usage: bool,
) -> Result<Vec<Bytes>, TranslateError> {
    let mut enc = Encoder::new(dialect, model, include_usage);
    let mut frames = Vec::with_capacity(deltas.len() + 2);
    let mut out = Vec::new();
    for d in deltas {
        enc.encode(d, &mut out)?;
        if !out.is_empty() {
            frames.push(Bytes::from(std::mem::take(&mut out)));
        }
    }
    enc.finish(&mut out);
    if !out.is_empty() {
        frames.push(Bytes::from(out));
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::response::FinishReason;

    fn answer() -> ChatResponse {
        ChatResponse {
            id: "chatcmpl-1".into(),
            model: "m".into(),
            text: "Hello there".into(),
            finish: Some(FinishReason::Stop),
            usage: Some(Usage {
                input_tokens: 3,
                output_tokens: 2,
                ..Usage::default()
            }),
            ..ChatResponse::default()
        }
    }

    fn joined(frames: &[Bytes]) -> Vec<u8> {
        frames.iter().flat_map(|f| f.iter().copied()).collect()
    }

    #[test]
    fn both_forms_round_trip_in_both_dialects() {
        for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
            let whole = write_whole(dialect, &answer(), "m").unwrap();
            let c = check_whole(dialect, &whole);
            assert!(c.complete, "{dialect:?}");
            assert_eq!(c.usage, answer().usage);
            let frames = whole_to_stream(dialect, &whole, "m", true).unwrap();
            assert!(frames.len() > 2, "one frame per event, not one blob");
            let events = joined(&frames);
            let c = check_stream(dialect, &events);
            assert!(
                c.complete,
                "{dialect:?}: {}",
                String::from_utf8_lossy(&events)
            );
            assert_eq!(c.usage.map(|u| u.output_tokens), Some(2));
            let back = stream_to_whole(dialect, &events, "m").unwrap();
            let again = read_whole(dialect, &back).unwrap();
            assert_eq!(again.text, "Hello there");
            assert_eq!(again.id, "chatcmpl-1");
        }
    }

    #[test]
    fn a_cut_or_failed_stream_is_not_complete() {
        let frames = whole_to_stream(
            Dialect::OpenAi,
            &write_whole(Dialect::OpenAi, &answer(), "m").unwrap(),
            "m",
            false,
        )
        .unwrap();
        let all = joined(&frames);
        let cut = joined(&frames[..frames.len() - 1]);
        assert!(check_stream(Dialect::OpenAi, &all).complete);
        assert!(!check_stream(Dialect::OpenAi, &cut).complete);
        assert!(stream_to_whole(Dialect::OpenAi, &cut, "m").is_err());
        let mut failed = cut.clone();
        failed.extend_from_slice(&super::super::openai::translate::error_event(
            crate::error::ErrorKind::UpstreamProtocol,
            "gone",
        ));
        assert!(!check_stream(Dialect::OpenAi, &failed).complete);
        assert!(!check_stream(Dialect::OpenAi, b"data: {not json\n\n").complete);
        assert!(!check_whole(Dialect::OpenAi, b"{\"error\":{\"message\":\"x\"}}").complete);
    }

    #[test]
    fn embeddings_answers_are_checked() {
        let ok = br#"{"object":"list","data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        let c = check_embeddings(ok);
        assert!(c.complete);
        assert_eq!(c.usage.map(|u| u.input_tokens), Some(4));
        assert!(!check_embeddings(br#"{"data":[]}"#).complete);
        assert!(!check_embeddings(br#"{"data":[1],"error":{"message":"x"}}"#).complete);
        assert!(!check_embeddings(b"{").complete);
    }

    #[test]
    fn restreaming_drops_or_keeps_the_usage_chunk() {
        let whole = write_whole(Dialect::OpenAi, &answer(), "m").unwrap();
        let with = joined(&whole_to_stream(Dialect::OpenAi, &whole, "m", true).unwrap());
        let without = joined(&restream(Dialect::OpenAi, &with, "m", false).unwrap());
        assert!(String::from_utf8_lossy(&with).contains("\"prompt_tokens\":3"));
        assert!(!String::from_utf8_lossy(&without).contains("\"prompt_tokens\""));
        assert!(check_stream(Dialect::OpenAi, &without).complete);
    }
}
