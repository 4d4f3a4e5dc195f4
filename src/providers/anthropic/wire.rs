//! Anthropic Messages API wire types (`POST /v1/messages`), as documented. Requests parse
//! strictly (an unknown field is an error); answers parse leniently (a new block or event
//! type is skipped, never fatal).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API version the gateway speaks when the client did not name one.
pub const DEFAULT_VERSION: &str = "2023-06-01";

/// A Messages request.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Model name.
    pub model: String,
    /// Output token cap (required by Anthropic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// System prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Content>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// Stream as SSE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Temperature (0–1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Top-k sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    /// Tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// Tool choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// `{"user_id": …}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Extended thinking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Thinking>,
    /// Service tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// Code-execution container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Value>,
    /// Remote MCP servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<Value>,
    /// Context management.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_management: Option<Value>,
}

/// `metadata`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// An opaque end-user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// `thinking`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Thinking {
    /// Think with this budget.
    Enabled {
        /// Token budget.
        budget_tokens: u64,
    },
    /// Do not think.
    Disabled,
}

/// One message.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `user` or `assistant`.
    pub role: Role,
    /// Text or blocks.
    pub content: Content,
}

/// Who speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The user (and tool results).
    User,
    /// The model.
    Assistant,
}

/// A string or a list of blocks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Blocks.
    Blocks(Vec<Block>),
}

/// A content block in a request.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Block {
    /// Text.
    Text {
        /// The text.
        text: String,
        /// Prompt-caching hint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
        /// Citations (answers only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        citations: Option<Value>,
    },
    /// An image.
    Image {
        /// Where it comes from.
        source: ImageSource,
        /// Prompt-caching hint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// A document (PDF, text).
    Document {
        /// Where it comes from.
        source: Value,
        /// Other document fields.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<Value>,
        /// Prompt-caching hint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// A tool call by the model.
    ToolUse {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments.
        input: Value,
        /// Prompt-caching hint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// A tool's result, sent back by the client.
    ToolResult {
        /// Which call it answers.
        tool_use_id: String,
        /// The result.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<Content>,
        /// Did the tool fail?
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
        /// Prompt-caching hint.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache_control: Option<Value>,
    },
    /// The model's reasoning.
    Thinking {
        /// The reasoning text.
        thinking: String,
        /// Its signature.
        signature: String,
    },
    /// Reasoning the provider encrypted.
    RedactedThinking {
        /// Opaque data.
        data: String,
    },
}

/// An image's source.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ImageSource {
    /// Inline data.
    Base64 {
        /// `image/png` and so on.
        media_type: String,
        /// Base64 data.
        data: String,
    },
    /// A URL.
    Url {
        /// The URL.
        url: String,
    },
    /// An uploaded file.
    File {
        /// Its id.
        file_id: String,
    },
}

/// A tool declaration (custom tools; server tools carry a dated `type`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Tool {
    /// Absent or `custom` for client tools; e.g. `web_search_20250305` for server tools.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// Prompt-caching hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<Value>,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToolChoice {
    /// The model decides.
    Auto {
        /// At most one tool call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// Some tool must be called.
    Any {
        /// At most one tool call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// This tool must be called.
    Tool {
        /// Its name.
        name: String,
        /// At most one tool call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    /// No tools.
    None,
}

/// A Messages answer.
#[derive(Debug, Clone, Deserialize)]
pub struct Response {
    /// `msg_…`.
    #[serde(default)]
    pub id: String,
    /// Model.
    #[serde(default)]
    pub model: String,
    /// Content blocks.
    #[serde(default)]
    pub content: Vec<AnswerBlock>,
    /// Why it stopped.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// The stop sequence hit.
    #[serde(default)]
    pub stop_sequence: Option<String>,
    /// Usage.
    #[serde(default)]
    pub usage: Option<Usage>,
}

/// A content block in an answer (unknown types are skipped).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AnswerBlock {
    /// Text.
    Text {
        /// The text.
        #[serde(default)]
        text: String,
    },
    /// A tool call.
    ToolUse {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// Arguments (`{}` at a stream's block start).
        #[serde(default)]
        input: Value,
    },
    /// Reasoning.
    Thinking {
        /// The text.
        #[serde(default)]
        thinking: String,
        /// Signature.
        #[serde(default)]
        signature: Option<String>,
    },
    /// Anything else (server tool blocks, redacted thinking, …).
    #[serde(other)]
    Other,
}

/// Anthropic's usage object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Usage {
    /// Input tokens not read from or written to the cache.
    #[serde(default)]
    pub input_tokens: Option<u64>,
    /// Output tokens (thinking included).
    #[serde(default)]
    pub output_tokens: Option<u64>,
    /// Input tokens written to the cache.
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    /// Input tokens read from the cache.
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

/// One streamed event (its `data`; the `type` member repeats the event name).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The message shell, with input usage.
    MessageStart {
        /// The message so far.
        message: Response,
    },
    /// A block opens.
    ContentBlockStart {
        /// Block index.
        index: usize,
        /// The block shell.
        content_block: AnswerBlock,
    },
    /// A piece of a block.
    ContentBlockDelta {
        /// Block index.
        index: usize,
        /// The piece.
        delta: BlockDelta,
    },
    /// A block closes.
    ContentBlockStop {
        /// Block index.
        index: usize,
    },
    /// Stop reason and output usage.
    MessageDelta {
        /// Stop reason.
        delta: MessageDeltaBody,
        /// Cumulative usage.
        #[serde(default)]
        usage: Option<Usage>,
    },
    /// The end.
    MessageStop,
    /// Keep-alive.
    Ping,
    /// An error mid-stream.
    Error {
        /// What failed.
        error: ErrorBody,
    },
    /// Anything newer.
    #[serde(other)]
    Other,
}

/// A `content_block_delta` event's data, most of a stream: read on its own (see
/// `stream::Parser`), since reading it as a [`StreamEvent`] buffers the whole event first to
/// find its `type`.
#[derive(Debug, Clone, Deserialize)]
pub struct DeltaEvent {
    /// Block index.
    pub index: usize,
    /// The piece.
    pub delta: BlockDelta,
}

/// A block delta.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "FlatDelta")]
pub enum BlockDelta {
    /// Text.
    TextDelta {
        /// The piece.
        text: String,
    },
    /// Tool arguments JSON.
    InputJsonDelta {
        /// The piece.
        partial_json: String,
    },
    /// Reasoning.
    ThinkingDelta {
        /// The piece.
        thinking: String,
    },
    /// Reasoning signature.
    SignatureDelta {
        /// The signature.
        signature: String,
    },
    /// Anything else (citations, …).
    #[serde(other)]
    Other,
}

/// Every block delta has one string member besides its `type`: read them flat, so that serde
/// need not buffer the object to find its tag.
#[derive(Deserialize)]
struct FlatDelta {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    partial_json: Option<String>,
    thinking: Option<String>,
    signature: Option<String>,
}

impl TryFrom<FlatDelta> for BlockDelta {
    type Error = String;

    fn try_from(d: FlatDelta) -> Result<Self, String> {
        let need = |v: Option<String>, field: &str| {
            v.ok_or_else(|| format!("missing field `{field}` in a {}", d.kind))
        };
        Ok(match d.kind.as_str() {
            "text_delta" => Self::TextDelta {
                text: need(d.text, "text")?,
            },
            "input_json_delta" => Self::InputJsonDelta {
                partial_json: need(d.partial_json, "partial_json")?,
            },
            "thinking_delta" => Self::ThinkingDelta {
                thinking: need(d.thinking, "thinking")?,
            },
            "signature_delta" => Self::SignatureDelta {
                signature: need(d.signature, "signature")?,
            },
            _ => Self::Other,
        })
    }
}

/// `message_delta.delta`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MessageDeltaBody {
    /// Stop reason.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// The stop sequence hit.
    #[serde(default)]
    pub stop_sequence: Option<String>,
}

/// `{"type":"error","error":{"type","message"}}`'s inner object.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    /// Error type.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Message.
    #[serde(default)]
    pub message: String,
}
