//! OpenAI Chat Completions wire types. The request is the canonical one
//! ([`crate::api::ChatRequest`]); answers and stream chunks parse leniently (fields the gateway
//! does not need are skipped).

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

pub use crate::api::request::ChatRequest as Request;
pub use crate::api::usage::OpenAiUsage as Usage;

/// A whole answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Response {
    /// `chatcmpl-…`.
    #[serde(default)]
    pub id: String,
    /// Model.
    #[serde(default)]
    pub model: String,
    /// Choices (the gateway reads the first).
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// Usage.
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// One choice of a whole answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Choice {
    /// The message.
    pub message: AnswerMessage,
    /// Why it stopped.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The assistant message of an answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AnswerMessage {
    /// Text.
    #[serde(default)]
    pub content: Option<String>,
    /// Reasoning text (DeepSeek, vLLM and others).
    #[serde(default, alias = "reasoning")]
    pub reasoning_content: Option<String>,
    /// Refusal text.
    #[serde(default)]
    pub refusal: Option<String>,
    /// Tool calls.
    #[serde(default)]
    pub tool_calls: Option<Vec<crate::api::request::ToolCall>>,
}

/// One stream chunk.
#[derive(Debug, Clone, Deserialize)]
pub struct Chunk<'a> {
    /// `chatcmpl-…` (borrowed: every chunk repeats it, only the first is kept).
    #[serde(default, borrow)]
    pub id: Cow<'a, str>,
    /// Model (borrowed, as `id`).
    #[serde(default, borrow)]
    pub model: Cow<'a, str>,
    /// Choices.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Usage (the last chunk, with `include_usage`).
    #[serde(default)]
    pub usage: Option<Usage>,
    /// An in-band error.
    #[serde(default)]
    pub error: Option<Value>,
}

/// One choice of a chunk.
#[derive(Debug, Clone, Deserialize)]
pub struct ChunkChoice {
    /// Choice index.
    #[serde(default)]
    pub index: u32,
    /// The delta.
    #[serde(default)]
    pub delta: ChunkDelta,
    /// Why it stopped (last chunk of the choice).
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// A chunk's delta.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChunkDelta {
    /// Text.
    #[serde(default)]
    pub content: Option<String>,
    /// Reasoning text.
    #[serde(default, alias = "reasoning")]
    pub reasoning_content: Option<String>,
    /// Refusal text.
    #[serde(default)]
    pub refusal: Option<String>,
    /// Tool-call pieces.
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// A piece of a tool call.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolCallDelta {
    /// Which call.
    #[serde(default)]
    pub index: usize,
    /// Its id (first piece).
    #[serde(default)]
    pub id: Option<String>,
    /// Name and arguments pieces.
    #[serde(default)]
    pub function: Option<FunctionDelta>,
}

/// Name and arguments pieces.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FunctionDelta {
    /// Name (first piece).
    #[serde(default)]
    pub name: Option<String>,
    /// Arguments piece.
    #[serde(default)]
    pub arguments: Option<String>,
}
