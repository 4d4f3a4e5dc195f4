//! OpenAI's chunk stream, both ways: [`Parser`] reads an OpenAI-compatible upstream's chunks
//! into deltas (for Anthropic clients); [`Encoder`] writes deltas as the chunks an OpenAI
//! client expects (for the other kinds). Pass-through streams use neither.

use super::translate::chunk_deltas;
use super::translate::error_json;
use super::wire;
use crate::api::json::{write_string, write_u64};
use crate::api::response::Delta;
use crate::api::{TranslateError, Usage};
use crate::error::ErrorKind;

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
///
/// Every chunk starts with the same bytes (`id`, `object`, `created`, `model`, the choice's
/// index), kept ready in `head`; the frequent deltas (text, reasoning, tool arguments) are
/// written straight after it, so an event costs one escape of its text and no allocation.
#[derive(Debug)]
pub struct Encoder {
    id: String,
    model: String,
    created: u64,
    head: Vec<u8>,
    include_usage: bool,
    usage: Option<Usage>,
    ended: bool,
}

impl Encoder {
    /// An encoder naming `model` until the upstream names its own; `include_usage` when the
    /// client asked for the usage chunk.
    pub fn new(model: &str, created: u64, include_usage: bool) -> Self {
        let mut e = Self {
            id: String::from("chatcmpl-shardgate"),
            model: model.to_owned(),
            created,
            head: Vec::new(),
            include_usage,
            usage: None,
            ended: false,
        };
        e.set_head();
        e
    }

    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,` for every chunk.
    fn set_head(&mut self) {
        let h = &mut self.head;
        h.clear();
        h.extend_from_slice(b"data: {\"id\":");
        write_string(h, &self.id);
        h.extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        write_u64(h, self.created);
        h.extend_from_slice(b",\"model\":");
        write_string(h, &self.model);
        h.push(b',');
    }

    /// One chunk with one choice whose `delta` the closure writes (a JSON object).
    fn chunk(&self, out: &mut Vec<u8>, finish: Option<&str>, delta: impl FnOnce(&mut Vec<u8>)) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"\"choices\":[{\"index\":0,\"delta\":");
        delta(out);
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(f) => write_string(out, f),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]}\n\n");
    }

    /// A delta object with one string member: `{"key":"text"}`.
    fn text_chunk(&self, out: &mut Vec<u8>, key: &[u8], text: &str) {
        self.chunk(out, None, |o| {
            o.extend_from_slice(b"{\"");
            o.extend_from_slice(key);
            o.extend_from_slice(b"\":");
            write_string(o, text);
            o.push(b'}');
        });
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
                self.set_head();
                self.chunk(out, None, |o| {
                    o.extend_from_slice(br#"{"role":"assistant","content":""}"#);
                });
            }
            Delta::Text(t) => self.text_chunk(out, b"content", &t),
            Delta::Reasoning(t) => self.text_chunk(out, b"reasoning_content", &t),
            // OpenAI's format has no place for a reasoning signature.
            Delta::ReasoningSignature(_) => {}
            Delta::ToolStart { index, id, name } => self.chunk(out, None, |o| {
                o.extend_from_slice(br#"{"tool_calls":[{"index":"#);
                write_u64(o, index as u64);
                o.extend_from_slice(br#","id":"#);
                write_string(o, &id);
                o.extend_from_slice(br#","type":"function","function":{"name":"#);
                write_string(o, &name);
                o.extend_from_slice(br#","arguments":""}}]}"#);
            }),
            Delta::ToolArgs { index, json } => self.chunk(out, None, |o| {
                o.extend_from_slice(br#"{"tool_calls":[{"index":"#);
                write_u64(o, index as u64);
                o.extend_from_slice(br#","function":{"arguments":"#);
                write_string(o, &json);
                o.extend_from_slice(b"}}]}");
            }),
            Delta::Finish { reason, .. } => {
                self.chunk(out, Some(reason.openai()), |o| o.extend_from_slice(b"{}"));
            }
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
            out.extend_from_slice(&self.head);
            out.extend_from_slice(b"\"choices\":[],\"usage\":");
            // Serialising plain numbers into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &self.usage.unwrap_or_default().openai_json());
            out.extend_from_slice(b"}\n\n");
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
