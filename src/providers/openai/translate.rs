//! OpenAI ⇄ canonical. The canonical request *is* OpenAI's, so requests need only the
//! dialect extensions settled ([`to_wire`]); answers go both ways ([`from_wire`] for
//! Anthropic clients, [`to_client`] for OpenAI clients of other kinds).

use serde_json::{Value, json};

use super::wire;
use crate::api::request::{ChatRequest, StreamOptions};
use crate::api::response::{ChatResponse, Delta, FinishReason};
use crate::api::{TranslateError, Usage};

/// A canonical request as the JSON body for an OpenAI-compatible upstream, for `model`.
/// Streams always ask for usage.
pub fn to_wire(req: &ChatRequest, model: &str) -> Result<Vec<u8>, TranslateError> {
    if req.top_k.is_some() {
        return Err(TranslateError::unsupported("`top_k` with an openai model"));
    }
    let mut out = req.clone();
    out.model = model.to_owned();
    if let Some(budget) = out.thinking_budget.take() {
        // Anthropic clients give a token budget; OpenAI reasoning models take an effort.
        out.reasoning_effort = Some(
            match budget {
                0..4096 => "low",
                4096..16384 => "medium",
                _ => "high",
            }
            .to_owned(),
        );
    }
    if out.streams() {
        out.stream_options
            .get_or_insert_with(StreamOptions::default)
            .include_usage = Some(true);
    }
    serde_json::to_vec(&out).map_err(|e| TranslateError::invalid(e.to_string()))
}

/// OpenAI's `finish_reason` as a canonical finish reason.
pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// An OpenAI answer as a canonical response (the first choice).
pub fn from_wire(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let r: wire::Response = serde_json::from_slice(body)
        .map_err(|e| TranslateError::upstream(format!("an OpenAI chat completion ({e})")))?;
    let choice = r
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| TranslateError::upstream("an answer with no choices"))?;
    let m = choice.message;
    let mut resp = ChatResponse {
        id: r.id,
        model: r.model,
        text: m.content.or(m.refusal).unwrap_or_default(),
        reasoning: m.reasoning_content.unwrap_or_default(),
        tool_calls: m.tool_calls.unwrap_or_default(),
        finish: Some(
            choice
                .finish_reason
                .as_deref()
                .map_or(FinishReason::Stop, finish_reason),
        ),
        usage: r.usage.map(Usage::from),
        ..ChatResponse::default()
    };
    if resp.finish == Some(FinishReason::Stop) && !resp.tool_calls.is_empty() {
        resp.finish = Some(FinishReason::ToolCalls);
    }
    Ok(resp)
}

/// A canonical answer as the chat completion an OpenAI client expects.
pub fn to_client(r: &ChatResponse, model: &str, created: u64) -> Vec<u8> {
    let mut message = json!({
        "role": "assistant",
        "content": if r.text.is_empty() && !r.tool_calls.is_empty() { Value::Null } else { Value::from(r.text.as_str()) },
        "refusal": null,
    });
    if !r.reasoning.is_empty() {
        message["reasoning_content"] = Value::from(r.reasoning.as_str());
    }
    if !r.tool_calls.is_empty() {
        message["tool_calls"] = json!(r.tool_calls);
    }
    let body = json!({
        "id": r.id,
        "object": "chat.completion",
        "created": created,
        "model": if r.model.is_empty() { model } else { &r.model },
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": r.finish.unwrap_or_default().openai(),
        }],
        "usage": r.usage.unwrap_or_default().openai_json(),
    });
    body.to_string().into_bytes()
}

/// The deltas of one stream chunk (used by the stream parser).
pub(super) fn chunk_deltas(c: wire::Chunk<'_>, started: &mut bool, out: &mut Vec<Delta>) {
    if !*started {
        *started = true;
        out.push(Delta::Start {
            id: c.id.into_owned(),
            model: c.model.into_owned(),
        });
    }
    if let Some(e) = c.error {
        let message = e
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("The provider reported an error.")
            .to_owned();
        out.push(Delta::Error(message));
        return;
    }
    for choice in c.choices.into_iter().filter(|ch| ch.index == 0) {
        let d = choice.delta;
        if let Some(r) = d.reasoning_content.filter(|s| !s.is_empty()) {
            out.push(Delta::Reasoning(r));
        }
        if let Some(t) = d.content.filter(|s| !s.is_empty()) {
            out.push(Delta::Text(t));
        }
        if let Some(t) = d.refusal.filter(|s| !s.is_empty()) {
            out.push(Delta::Text(t));
        }
        for tc in d.tool_calls.into_iter().flatten() {
            let f = tc.function.unwrap_or_default();
            if let Some(id) = tc.id {
                out.push(Delta::ToolStart {
                    index: tc.index,
                    id,
                    name: f.name.unwrap_or_default(),
                });
            }
            if let Some(a) = f.arguments.filter(|s| !s.is_empty()) {
                out.push(Delta::ToolArgs {
                    index: tc.index,
                    json: a,
                });
            }
        }
        if let Some(f) = choice.finish_reason {
            out.push(Delta::Finish {
                reason: finish_reason(&f),
                stop_sequence: None,
            });
        }
    }
    if let Some(u) = c.usage {
        out.push(Delta::Usage(u.into()));
    }
}

/// `{"error":{"message","type","param","code"}}`.
pub fn error_json(kind: crate::error::ErrorKind, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 96);
    out.extend_from_slice(b"{\"error\":{\"message\":");
    crate::api::json::write_string(&mut out, message);
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(kind.openai_type().as_bytes());
    out.extend_from_slice(b"\",\"param\":null,\"code\":\"");
    out.extend_from_slice(kind.as_str().as_bytes());
    out.extend_from_slice(b"\"}}");
    out
}

/// The final SSE event for a failure after the stream started. The OpenAI SDKs raise on an
/// event whose data has an `error` member.
pub fn error_event(kind: crate::error::ErrorKind, message: &str) -> bytes::Bytes {
    crate::api::sse::frame_data(&error_json(kind, message))
}
