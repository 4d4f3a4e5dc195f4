//! OpenAI's chunk stream, both ways: [`Parser`] reads an OpenAI-compatible upstream's chunks
//! into deltas (for Anthropic clients); [`Encoder`] writes deltas as the chunks an OpenAI
//! client expects (for the other kinds). Pass-through streams use neither.

use serde_json::{Value, json};

use super::translate::chunk_deltas;
use super::wire;
use crate::api::response::Delta;
use crate::api::{TranslateError, Usage};
use crate::error::ErrorKind;
use crate::http::respond::error_json;

/// Reads OpenAI chunks into deltas.
#[derive(Debug, Default)]
pub struct Parser {
    started: bool,
    done: bool,
}

impl Parser {
    /// Read one event's `data`.
    pub fn parse_chunk(&mut self, data: &[u8], out: &mut Vec<Delta>) -> Result<(), TranslateError> {
        if data == b"[DONE]" {
            self.done = true;
            return Ok(());
        }
        let c: wire::Chunk = serde_json::from_slice(data)
            .map_err(|e| TranslateError::upstream(format!("a malformed OpenAI chunk ({e})")))?;
        if c.error.is_some() {
            self.done = true;
        }
        chunk_deltas(c, &mut self.started, out);
        Ok(())
    }

    /// Did the stream reach `[DONE]` (or an error)?
    pub fn is_complete(&self) -> bool {
        self.done
    }
}

/// Writes deltas as OpenAI chunks.
#[derive(Debug)]
pub struct Encoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    usage: Option<Usage>,
    ended: bool,
}

impl Encoder {
    /// An encoder naming `model` until the upstream names its own; `include_usage` when the
    /// client asked for the usage chunk.
    pub fn new(model: &str, created: u64, include_usage: bool) -> Self {
        Self {
            id: String::from("chatcmpl-shardgate"),
            model: model.to_owned(),
            created,
            include_usage,
            usage: None,
            ended: false,
        }
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        let body = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        Self::data(out, &body);
    }

    fn data(out: &mut Vec<u8>, v: &Value) {
        out.extend_from_slice(b"data: ");
        // Serialising a `Value` into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, v);
        out.extend_from_slice(b"\n\n");
    }

    /// Write one delta.
    pub fn encode(&mut self, d: Delta, out: &mut Vec<u8>) -> Result<(), TranslateError> {
        if self.ended {
            return Ok(());
        }
        match d {
            Delta::Start { id, model } => {
                if !id.is_empty() {
                    self.id = id;
                }
                if !model.is_empty() {
                    self.model = model;
                }
                self.chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            Delta::Text(t) => self.chunk(out, json!({"content": t}), None),
            Delta::Reasoning(t) => self.chunk(out, json!({"reasoning_content": t}), None),
            // OpenAI's format has no place for a reasoning signature.
            Delta::ReasoningSignature(_) => {}
            Delta::ToolStart { index, id, name } => self.chunk(
                out,
                json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
                None,
            ),
            Delta::ToolArgs { index, json } => self.chunk(
                out,
                json!({"tool_calls": [{"index": index, "function": {"arguments": json}}]}),
                None,
            ),
            Delta::Finish { reason, .. } => self.chunk(out, json!({}), Some(reason.openai())),
            Delta::Usage(u) => self.usage = Some(u),
            Delta::Error(message) => {
                self.ended = true;
                out.extend_from_slice(&crate::api::sse::frame_data(&error_json(
                    ErrorKind::UpstreamProtocol,
                    &message,
                )));
            }
        }
        Ok(())
    }

    /// The upstream ended cleanly: the usage chunk (when asked for) and `[DONE]`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        if self.include_usage {
            let body = json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage.unwrap_or_default().openai_json(),
            });
            Self::data(out, &body);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    /// A failure: one error event, and nothing after it.
    pub fn fail(&mut self, kind: ErrorKind, message: &str, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        out.extend_from_slice(&crate::api::sse::frame_data(&error_json(kind, message)));
    }
}
