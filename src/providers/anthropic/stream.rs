//! Anthropic's SSE event sequence, both ways: [`Parser`] reads an Anthropic-kind upstream's
//! events into deltas; [`Encoder`] writes deltas as the events an Anthropic client expects
//! (`message_start`, `content_block_start` / `_delta` / `_stop` per block, `message_delta`
//! with usage, `message_stop`; `error` for a failure).

use serde_json::{Value, json};

use super::translate::{block_deltas, error_type, finish_reason, usage_from_wire, usage_json};
use super::wire::{self, BlockDelta, StreamEvent};
use crate::api::json::{self, write_string, write_u64};
use crate::api::response::{Delta, FinishReason};
use crate::api::{TranslateError, Usage};

/// What a block index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    Tool(usize),
    Other,
}

/// Reads Anthropic stream events into deltas.
#[derive(Debug, Default)]
pub struct Parser {
    blocks: Vec<(usize, Open)>,
    tools: usize,
    usage: wire::Usage,
    done: bool,
}

impl Parser {
    /// Read one event's `data` (the JSON carries its own `type`).
    pub fn parse_chunk(&mut self, data: &[u8], out: &mut Vec<Delta>) -> Result<(), TranslateError> {
        let malformed = |e| TranslateError::upstream(format!("a malformed Anthropic event ({e})"));
        let is_delta = json::top_level_value(data, b"type")
            .is_some_and(|t| data[t] == *b"\"content_block_delta\"");
        let ev = if is_delta {
            let d: wire::DeltaEvent = serde_json::from_slice(data).map_err(malformed)?;
            StreamEvent::ContentBlockDelta {
                index: d.index,
                delta: d.delta,
            }
        } else {
            serde_json::from_slice(data).map_err(malformed)?
        };
        match ev {
            StreamEvent::MessageStart { message } => {
                if let Some(u) = message.usage {
                    self.usage = u;
                }
                out.push(Delta::Start {
                    id: message.id,
                    model: message.model,
                });
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => {
                let open = match &content_block {
                    wire::AnswerBlock::Text { .. } => Open::Text,
                    wire::AnswerBlock::Thinking { .. } => Open::Thinking,
                    wire::AnswerBlock::ToolUse { .. } => Open::Tool(self.tools),
                    wire::AnswerBlock::Other => Open::Other,
                };
                self.blocks.push((index, open));
                block_deltas(content_block, &mut self.tools, out);
            }
            StreamEvent::ContentBlockDelta { index, delta } => {
                let open = self
                    .blocks
                    .iter()
                    .rev()
                    .find(|(i, _)| *i == index)
                    .map(|(_, o)| *o)
                    .ok_or_else(|| {
                        TranslateError::upstream("a delta for a block that never started")
                    })?;
                match (delta, open) {
                    (BlockDelta::TextDelta { text }, _) => out.push(Delta::Text(text)),
                    (BlockDelta::InputJsonDelta { partial_json }, Open::Tool(index)) => {
                        out.push(Delta::ToolArgs {
                            index,
                            json: partial_json,
                        })
                    }
                    (BlockDelta::ThinkingDelta { thinking }, _) => {
                        out.push(Delta::Reasoning(thinking))
                    }
                    (BlockDelta::SignatureDelta { signature }, _) => {
                        out.push(Delta::ReasoningSignature(signature))
                    }
                    (BlockDelta::InputJsonDelta { .. }, _) => {
                        return Err(TranslateError::upstream(
                            "tool input for a block that is not a tool call",
                        ));
                    }
                    (BlockDelta::Other, _) => {}
                }
            }
            StreamEvent::ContentBlockStop { .. } | StreamEvent::Ping | StreamEvent::Other => {}
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(u) = usage {
                    // Cumulative: later counts replace earlier ones, absent ones are kept.
                    let keep = |new: Option<u64>, old: Option<u64>| new.or(old);
                    self.usage = wire::Usage {
                        input_tokens: keep(u.input_tokens, self.usage.input_tokens),
                        output_tokens: keep(u.output_tokens, self.usage.output_tokens),
                        cache_creation_input_tokens: keep(
                            u.cache_creation_input_tokens,
                            self.usage.cache_creation_input_tokens,
                        ),
                        cache_read_input_tokens: keep(
                            u.cache_read_input_tokens,
                            self.usage.cache_read_input_tokens,
                        ),
                    };
                }
                if let Some(reason) = delta.stop_reason {
                    out.push(Delta::Finish {
                        reason: finish_reason(&reason),
                        stop_sequence: delta.stop_sequence,
                    });
                }
                out.push(Delta::Usage(usage_from_wire(&self.usage)));
            }
            StreamEvent::MessageStop => self.done = true,
            StreamEvent::Error { error } => {
                self.done = true;
                out.push(Delta::Error(if error.message.is_empty() {
                    error.kind
                } else {
                    error.message
                }));
            }
        }
        Ok(())
    }

    /// Did the stream reach `message_stop` (or an `error` event)?
    pub fn is_complete(&self) -> bool {
        self.done
    }
}

/// Writes deltas as Anthropic stream events.
#[derive(Debug)]
pub struct Encoder {
    model: String,
    started: bool,
    ended: bool,
    next_block: usize,
    open: Option<(usize, Open)>,
    finish: Option<(FinishReason, Option<String>)>,
    usage: Option<Usage>,
}

impl Encoder {
    /// An encoder naming `model` until the upstream names its own.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            started: false,
            ended: false,
            next_block: 0,
            open: None,
            finish: None,
            usage: None,
        }
    }

    fn event(out: &mut Vec<u8>, name: &str, data: &Value) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // Serialising a `Value` into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, data);
        out.extend_from_slice(b"\n\n");
    }

    fn start(&mut self, id: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        });
        Self::event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": message}),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            out.extend_from_slice(
                b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":",
            );
            write_u64(out, index as u64);
            out.extend_from_slice(b"}\n\n");
        }
    }

    fn open(&mut self, kind: Open, block: Value, out: &mut Vec<u8>) -> usize {
        if let Some((index, open)) = self.open
            && open == kind
        {
            return index;
        }
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, kind));
        Self::event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    /// A `content_block_delta` whose delta is `{"type": kind, field: text}`: every delta kind
    /// has this shape, and they are most of a stream, so they are written directly.
    fn delta(out: &mut Vec<u8>, index: usize, kind: &str, field: &str, text: &str) {
        out.extend_from_slice(
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
        );
        write_u64(out, index as u64);
        out.extend_from_slice(b",\"delta\":{\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"");
        out.extend_from_slice(field.as_bytes());
        out.extend_from_slice(b"\":");
        write_string(out, text);
        out.extend_from_slice(b"}}\n\n");
    }

    /// Write one delta.
    pub fn encode(&mut self, d: Delta, out: &mut Vec<u8>) -> Result<(), TranslateError> {
        if self.ended {
            return Ok(());
        }
        if let Delta::Start { id, model } = &d {
            if !model.is_empty() {
                self.model.clone_from(model);
            }
            self.start(id, out);
            return Ok(());
        }
        self.start("msg_shardgate", out);
        match d {
            Delta::Start { .. } => {}
            Delta::Text(text) => {
                let i = self.open(Open::Text, json!({"type": "text", "text": ""}), out);
                Self::delta(out, i, "text_delta", "text", &text);
            }
            Delta::Reasoning(thinking) => {
                let i = self.open(
                    Open::Thinking,
                    json!({"type": "thinking", "thinking": "", "signature": ""}),
                    out,
                );
                Self::delta(out, i, "thinking_delta", "thinking", &thinking);
            }
            Delta::ReasoningSignature(signature) => {
                if let Some((i, Open::Thinking)) = self.open {
                    Self::delta(out, i, "signature_delta", "signature", &signature);
                }
            }
            Delta::ToolStart { index, id, name } => {
                self.close(out);
                self.open(
                    Open::Tool(index),
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    out,
                );
            }
            Delta::ToolArgs { index, json } => match self.open {
                Some((i, Open::Tool(t))) if t == index => {
                    Self::delta(out, i, "input_json_delta", "partial_json", &json);
                }
                _ => {
                    return Err(TranslateError::upstream(
                        "tool-call arguments interleaved between calls",
                    ));
                }
            },
            Delta::Finish {
                reason,
                stop_sequence,
            } => self.finish = Some((reason, stop_sequence)),
            Delta::Usage(u) => self.usage = Some(u),
            Delta::Error(message) => {
                self.ended = true;
                Self::event(
                    out,
                    "error",
                    &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
                );
            }
        }
        Ok(())
    }

    /// The upstream ended cleanly: close the open block, then `message_delta` and
    /// `message_stop`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.start("msg_shardgate", out);
        self.close(out);
        self.ended = true;
        let (reason, stop_sequence) = self.finish.clone().unwrap_or((FinishReason::Stop, None));
        let usage = usage_json(&self.usage.unwrap_or_default());
        Self::event(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": reason.anthropic(), "stop_sequence": stop_sequence},
                "usage": usage,
            }),
        );
        Self::event(out, "message_stop", &json!({"type": "message_stop"}));
    }

    /// A failure: one `error` event, and nothing after it.
    pub fn fail(&mut self, status: u16, message: &str, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        out.extend_from_slice(&error_event(status, message));
    }
}

/// Anthropic's `error` event for a failure with this HTTP status.
pub fn error_event(status: u16, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 96);
    Encoder::event(
        &mut out,
        "error",
        &json!({"type": "error", "error": {"type": error_type(status), "message": message}}),
    );
    out
}
