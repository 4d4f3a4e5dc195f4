//! Anthropic ⇄ canonical, both ways: requests to Anthropic-kind upstreams ([`to_wire`]) and
//! their answers ([`from_wire`]); requests from Anthropic clients ([`from_client`]) and the
//! answers they get ([`to_client`]).

use serde_json::{Value, json};

use super::wire::{self, AnswerBlock, Block, Content, ImageSource, Role as WireRole};
use crate::api::request::{
    self, ChatRequest, FunctionDef, ImageUrl, Message, NamedFunction, Part, Role, Stop,
    StreamOptions, ToolCall, ToolChoice,
};
use crate::api::response::{ChatResponse, Delta, FinishReason};
use crate::api::{TranslateError, Usage};

/// `max_tokens` sent when an OpenAI client set no cap (Anthropic requires one).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// A canonical request as an Anthropic Messages request for `model`.
pub fn to_wire(req: &ChatRequest, model: &str) -> Result<wire::Request, TranslateError> {
    req.refuse_openai_only("anthropic")?;
    let refuse = |f: &str| {
        Err(TranslateError::unsupported(format!(
            "`{f}` with an anthropic model"
        )))
    };
    if req.seed.is_some() {
        return refuse("seed");
    }
    if req.presence_penalty.is_some_and(|p| p != 0.0) {
        return refuse("presence_penalty");
    }
    if req.frequency_penalty.is_some_and(|p| p != 0.0) {
        return refuse("frequency_penalty");
    }
    if req
        .response_format
        .as_ref()
        .is_some_and(|f| f.get("type").and_then(Value::as_str) != Some("text"))
    {
        return refuse("response_format (JSON mode)");
    }
    if req.reasoning_effort.is_some() {
        return refuse("reasoning_effort (send an Anthropic `thinking` budget instead)");
    }
    let mut system: Vec<Block> = Vec::new();
    let mut messages: Vec<wire::Message> = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let at = |what: &str| format!("messages[{i}].{what}");
        match m.role {
            Role::System | Role::Developer => {
                system.push(text_block(m.system_text(
                    i,
                    !messages.is_empty(),
                    "anthropic",
                )?));
            }
            Role::User => {
                let blocks = m.user_items(i, text_block, user_part)?;
                push_blocks(&mut messages, WireRole::User, blocks);
            }
            Role::Assistant => {
                let mut blocks = Vec::new();
                if let Some(c) = &m.content {
                    let text = match c {
                        request::Content::Text(t) => t.clone(),
                        request::Content::Parts(parts) => parts
                            .iter()
                            .map(|p| match p {
                                Part::Text { text } | Part::Refusal { refusal: text } => {
                                    Ok(text.as_str())
                                }
                                other => Err(TranslateError::unsupported(format!(
                                    "`{}` parts in assistant messages",
                                    other.kind()
                                ))),
                            })
                            .collect::<Result<String, _>>()?,
                    };
                    if !text.is_empty() {
                        blocks.push(text_block(text));
                    }
                }
                for (j, call) in m.tool_calls.iter().flatten().enumerate() {
                    blocks.push(Block::ToolUse {
                        id: call.id.clone(),
                        name: call.function.name.clone(),
                        input: arguments_object(
                            &call.function.arguments,
                            &at(&format!("tool_calls[{j}].function.arguments")),
                        )?,
                        cache_control: None,
                    });
                }
                push_blocks(&mut messages, WireRole::Assistant, blocks);
            }
            Role::Tool => {
                let id = m.tool_call_id.clone().ok_or_else(|| {
                    TranslateError::invalid(format!("{} is missing", at("tool_call_id")))
                })?;
                let block = Block::ToolResult {
                    tool_use_id: id,
                    content: Some(Content::Text(m.plain_text(i)?)),
                    is_error: None,
                    cache_control: None,
                };
                push_blocks(&mut messages, WireRole::User, vec![block]);
            }
            Role::Function => return refuse("function messages"),
        }
    }
    let mut tools = None;
    if let Some(list) = &req.tools {
        let mut out = Vec::with_capacity(list.len());
        for t in list {
            if t.function.strict == Some(true) {
                return refuse("tools[].function.strict");
            }
            out.push(wire::Tool {
                kind: None,
                name: t.function.name.clone(),
                description: t.function.description.clone(),
                input_schema: Some(
                    t.function
                        .parameters
                        .clone()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                ),
                cache_control: None,
            });
        }
        tools = Some(out);
    }
    let single = (req.parallel_tool_calls == Some(false)).then_some(true);
    let tool_choice = match &req.tool_choice {
        None if single.is_some() && tools.is_some() => Some(wire::ToolChoice::Auto {
            disable_parallel_tool_use: single,
        }),
        None => None,
        Some(ToolChoice::Mode(m)) => Some(match m.as_str() {
            "none" => wire::ToolChoice::None,
            "auto" => wire::ToolChoice::Auto {
                disable_parallel_tool_use: single,
            },
            "required" => wire::ToolChoice::Any {
                disable_parallel_tool_use: single,
            },
            other => {
                return Err(TranslateError::invalid(format!(
                    "`tool_choice` must be none, auto, required or a named function, not `{other}`"
                )));
            }
        }),
        Some(ToolChoice::Named { function, .. }) => Some(wire::ToolChoice::Tool {
            name: function.name.clone(),
            disable_parallel_tool_use: single,
        }),
    };
    Ok(wire::Request {
        model: model.to_owned(),
        max_tokens: Some(req.output_cap().unwrap_or(DEFAULT_MAX_TOKENS)),
        messages,
        system: (!system.is_empty()).then_some(Content::Blocks(system)),
        stop_sequences: req.stop.clone().map(Stop::into_vec),
        stream: req.stream,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        tools,
        tool_choice,
        metadata: req
            .user
            .clone()
            .map(|u| wire::Metadata { user_id: Some(u) }),
        thinking: req
            .thinking_budget
            .map(|budget_tokens| wire::Thinking::Enabled { budget_tokens }),
        ..wire::Request::default()
    })
}

fn text_block(text: String) -> Block {
    Block::Text {
        text,
        cache_control: None,
        citations: None,
    }
}

/// Append blocks to the conversation, merging into the previous message when it has the same
/// role (Anthropic wants tool results, and any text after them, in one user turn).
fn push_blocks(messages: &mut Vec<wire::Message>, role: WireRole, blocks: Vec<Block>) {
    if let Some(last) = messages.last_mut()
        && last.role == role
    {
        let existing = match std::mem::replace(&mut last.content, Content::Blocks(Vec::new())) {
            Content::Text(t) => vec![text_block(t)],
            Content::Blocks(b) => b,
        };
        let mut merged = existing;
        merged.extend(blocks);
        last.content = Content::Blocks(merged);
        return;
    }
    let content = match <[Block; 1]>::try_from(blocks) {
        Ok(
            [
                Block::Text {
                    text,
                    cache_control: None,
                    citations: None,
                },
            ],
        ) => Content::Text(text),
        Ok([b]) => Content::Blocks(vec![b]),
        Err(v) => Content::Blocks(v),
    };
    messages.push(wire::Message { role, content });
}

fn user_part(p: &Part, field: &str) -> Result<Block, TranslateError> {
    match p {
        Part::Text { text } => Ok(text_block(text.clone())),
        Part::ImageUrl { image_url } => Ok(Block::Image {
            source: match request::data_url(&image_url.url) {
                Some((media_type, data)) => ImageSource::Base64 {
                    media_type: media_type.to_owned(),
                    data: data.to_owned(),
                },
                None if image_url.url.starts_with("https://")
                    || image_url.url.starts_with("http://") =>
                {
                    ImageSource::Url {
                        url: image_url.url.clone(),
                    }
                }
                None => {
                    return Err(TranslateError::invalid(format!(
                        "{field}: an image URL must be http(s) or a base64 data: URL"
                    )));
                }
            },
            cache_control: None,
        }),
        other => Err(TranslateError::unsupported(format!(
            "`{}` parts with an anthropic model",
            other.kind()
        ))),
    }
}

/// Tool-call arguments (JSON text) as the object Anthropic wants.
fn arguments_object(args: &str, field: &str) -> Result<Value, TranslateError> {
    if args.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(TranslateError::invalid(format!(
            "{field} must be a JSON object"
        ))),
    }
}

/// Anthropic's `stop_reason` as a canonical finish reason.
pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "stop_sequence" => FinishReason::StopSequence,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        "pause_turn" => FinishReason::Paused,
        _ => FinishReason::Stop,
    }
}

/// Anthropic usage, normalised: input counts every prompt token (cache reads and writes too).
/// Sums saturate: an upstream's absurd counts must not wrap into a small bill (or panic).
pub fn usage_from_wire(u: &wire::Usage) -> Usage {
    let cached = u.cache_read_input_tokens.unwrap_or(0);
    Usage {
        input_tokens: u
            .input_tokens
            .unwrap_or(0)
            .saturating_add(u.cache_creation_input_tokens.unwrap_or(0))
            .saturating_add(cached),
        output_tokens: u.output_tokens.unwrap_or(0),
        cached_input_tokens: cached,
        reasoning_tokens: 0,
    }
}

/// The deltas of a whole Anthropic answer's blocks.
pub(super) fn block_deltas(block: AnswerBlock, tools: &mut usize, out: &mut Vec<Delta>) {
    match block {
        AnswerBlock::Text { text } => {
            if !text.is_empty() {
                out.push(Delta::Text(text));
            }
        }
        AnswerBlock::ToolUse { id, name, input } => {
            let index = *tools;
            *tools += 1;
            out.push(Delta::ToolStart { index, id, name });
            let empty = input.is_null() || input.as_object().is_some_and(|o| o.is_empty());
            if !empty {
                out.push(Delta::ToolArgs {
                    index,
                    json: input.to_string(),
                });
            }
        }
        AnswerBlock::Thinking {
            thinking,
            signature,
        } => {
            if !thinking.is_empty() {
                out.push(Delta::Reasoning(thinking));
            }
            if let Some(s) = signature.filter(|s| !s.is_empty()) {
                out.push(Delta::ReasoningSignature(s));
            }
        }
        AnswerBlock::Other => {}
    }
}

/// An Anthropic answer as a canonical response.
pub fn from_wire(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let r: wire::Response = serde_json::from_slice(body)
        .map_err(|e| TranslateError::upstream(format!("an Anthropic message ({e})")))?;
    let mut deltas = vec![Delta::Start {
        id: r.id,
        model: r.model,
    }];
    let mut tools = 0;
    let any_tool_args = r
        .content
        .iter()
        .any(|b| matches!(b, AnswerBlock::ToolUse { .. }));
    for b in r.content {
        block_deltas(b, &mut tools, &mut deltas);
    }
    let mut resp = ChatResponse::from_deltas(deltas);
    // A tool called with no arguments still has an arguments object.
    if any_tool_args {
        for c in &mut resp.tool_calls {
            if c.function.arguments.is_empty() {
                c.function.arguments.push_str("{}");
            }
        }
    }
    resp.finish = Some(
        r.stop_reason
            .as_deref()
            .map_or(FinishReason::Stop, finish_reason),
    );
    resp.stop_sequence = r.stop_sequence;
    resp.usage = r.usage.as_ref().map(usage_from_wire);
    Ok(resp)
}

/// An Anthropic client's request as a canonical request.
pub fn from_client(body: &[u8]) -> Result<ChatRequest, TranslateError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let req: wire::Request =
        serde_path_to_error::deserialize(&mut de).map_err(TranslateError::from_path)?;
    let Some(max_tokens) = req.max_tokens else {
        return Err(TranslateError::invalid("max_tokens: Field required"));
    };
    let refuse = |f: &str| Err(TranslateError::unsupported(f.to_owned()));
    if req.container.is_some() {
        return refuse("`container`");
    }
    if req.mcp_servers.is_some() {
        return refuse("`mcp_servers`");
    }
    if req.context_management.is_some() {
        return refuse("`context_management`");
    }
    if req.service_tier.as_deref().is_some_and(|t| t != "auto") {
        return refuse("`service_tier`");
    }
    let mut messages = Vec::with_capacity(req.messages.len() + 1);
    match req.system {
        None => {}
        Some(Content::Text(t)) => messages.push(Message::text(Role::System, t)),
        Some(Content::Blocks(blocks)) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for b in blocks {
                match b {
                    Block::Text { text, .. } => parts.push(Part::Text { text }),
                    _ => return refuse("non-text blocks in `system`"),
                }
            }
            let mut m = Message::text(Role::System, String::new());
            m.content = Some(request::Content::Parts(parts));
            messages.push(m);
        }
    }
    for (i, m) in req.messages.into_iter().enumerate() {
        match (m.role, m.content) {
            (WireRole::User, Content::Text(t)) => messages.push(Message::text(Role::User, t)),
            (WireRole::Assistant, Content::Text(t)) => {
                messages.push(Message::text(Role::Assistant, t))
            }
            (WireRole::User, Content::Blocks(blocks)) => {
                let mut parts = Vec::new();
                for b in blocks {
                    match b {
                        Block::Text { text, .. } => parts.push(Part::Text { text }),
                        Block::Image { source, .. } => parts.push(Part::ImageUrl {
                            image_url: ImageUrl {
                                url: match source {
                                    ImageSource::Base64 { media_type, data } => {
                                        format!("data:{media_type};base64,{data}")
                                    }
                                    ImageSource::Url { url } => url,
                                    ImageSource::File { .. } => {
                                        return refuse("images by `file_id`");
                                    }
                                },
                                detail: None,
                            },
                        }),
                        Block::ToolResult {
                            tool_use_id,
                            content,
                            is_error,
                            ..
                        } => {
                            let mut text = match content {
                                None => String::new(),
                                Some(Content::Text(t)) => t,
                                Some(Content::Blocks(bs)) => {
                                    let mut s = String::new();
                                    for b in bs {
                                        match b {
                                            Block::Text { text, .. } => s.push_str(&text),
                                            _ => {
                                                return refuse(
                                                    "non-text blocks in a `tool_result`",
                                                );
                                            }
                                        }
                                    }
                                    s
                                }
                            };
                            if is_error == Some(true) {
                                text.insert_str(0, "[tool error] ");
                            }
                            let mut tm = Message::text(Role::Tool, text);
                            tm.tool_call_id = Some(tool_use_id);
                            messages.push(tm);
                        }
                        Block::Document { .. } => return refuse("`document` blocks"),
                        Block::ToolUse { .. }
                        | Block::Thinking { .. }
                        | Block::RedactedThinking { .. } => {
                            return Err(TranslateError::invalid(format!(
                                "messages[{i}]: user messages cannot carry tool_use or thinking blocks"
                            )));
                        }
                    }
                }
                if !parts.is_empty() {
                    let mut um = Message::text(Role::User, String::new());
                    um.content = Some(request::Content::Parts(parts));
                    messages.push(um);
                }
            }
            (WireRole::Assistant, Content::Blocks(blocks)) => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for b in blocks {
                    match b {
                        Block::Text { text: t, .. } => text.push_str(&t),
                        Block::ToolUse {
                            id, name, input, ..
                        } => calls.push(ToolCall {
                            id,
                            kind: "function".to_owned(),
                            function: request::FunctionCall {
                                name,
                                arguments: input.to_string(),
                            },
                        }),
                        // Earlier turns' reasoning only means something to Anthropic itself.
                        Block::Thinking { .. } | Block::RedactedThinking { .. } => {}
                        _ => {
                            return Err(TranslateError::invalid(format!(
                                "messages[{i}]: assistant messages carry only text, tool_use and thinking blocks"
                            )));
                        }
                    }
                }
                let mut am = Message::text(Role::Assistant, text);
                if !calls.is_empty() {
                    if am
                        .content
                        .as_ref()
                        .is_some_and(|c| matches!(c, request::Content::Text(t) if t.is_empty()))
                    {
                        am.content = None;
                    }
                    am.tool_calls = Some(calls);
                }
                messages.push(am);
            }
        }
    }
    let mut tools = None;
    if let Some(list) = req.tools {
        let mut out = Vec::with_capacity(list.len());
        for t in list {
            if let Some(kind) = t.kind.as_deref().filter(|k| *k != "custom") {
                return refuse(&format!("the server tool `{kind}`"));
            }
            out.push(request::Tool {
                kind: "function".to_owned(),
                function: FunctionDef {
                    name: t.name,
                    description: t.description,
                    parameters: t.input_schema,
                    strict: None,
                },
            });
        }
        tools = Some(out);
    }
    let (tool_choice, single) = match req.tool_choice {
        None => (None, None),
        Some(wire::ToolChoice::None) => (Some(ToolChoice::Mode("none".into())), None),
        Some(wire::ToolChoice::Auto {
            disable_parallel_tool_use,
        }) => (
            Some(ToolChoice::Mode("auto".into())),
            disable_parallel_tool_use,
        ),
        Some(wire::ToolChoice::Any {
            disable_parallel_tool_use,
        }) => (
            Some(ToolChoice::Mode("required".into())),
            disable_parallel_tool_use,
        ),
        Some(wire::ToolChoice::Tool {
            name,
            disable_parallel_tool_use,
        }) => (
            Some(ToolChoice::Named {
                kind: "function".into(),
                function: NamedFunction { name },
            }),
            disable_parallel_tool_use,
        ),
    };
    let stream = req.stream == Some(true);
    Ok(ChatRequest {
        model: req.model,
        messages,
        stream: stream.then_some(true),
        stream_options: stream.then_some(StreamOptions {
            include_usage: Some(true),
            include_obfuscation: None,
        }),
        max_tokens: Some(max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop: req.stop_sequences.map(Stop::Many),
        tools,
        tool_choice,
        parallel_tool_calls: (single == Some(true)).then_some(false),
        user: req.metadata.and_then(|m| m.user_id),
        thinking_budget: match req.thinking {
            Some(wire::Thinking::Enabled { budget_tokens }) => Some(budget_tokens),
            _ => None,
        },
        ..ChatRequest::default()
    })
}

/// Anthropic's `usage` object for a normalised usage.
pub fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input_tokens.saturating_sub(u.cached_input_tokens),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": u.cached_input_tokens,
        "output_tokens": u.output_tokens,
    })
}

/// A canonical answer as the Anthropic message an Anthropic client expects.
pub fn to_client(r: &ChatResponse, model: &str) -> Result<Vec<u8>, TranslateError> {
    let mut content = Vec::new();
    if !r.reasoning.is_empty() {
        content.push(json!({
            "type": "thinking",
            "thinking": r.reasoning,
            "signature": r.reasoning_signature.clone().unwrap_or_default(),
        }));
    }
    if !r.text.is_empty() {
        content.push(json!({"type": "text", "text": r.text}));
    }
    for c in &r.tool_calls {
        let input =
            arguments_object(&c.function.arguments, "a tool call's arguments").map_err(|_| {
                TranslateError::upstream("tool-call arguments that are not a JSON object")
            })?;
        content
            .push(json!({"type": "tool_use", "id": c.id, "name": c.function.name, "input": input}));
    }
    let body = json!({
        "id": r.id,
        "type": "message",
        "role": "assistant",
        "model": if r.model.is_empty() { model } else { &r.model },
        "content": content,
        "stop_reason": r.finish.unwrap_or_default().anthropic(),
        "stop_sequence": r.stop_sequence,
        "usage": usage_json(&r.usage.unwrap_or_default()),
    });
    serde_json::to_vec(&body).map_err(|e| TranslateError::upstream(e.to_string()))
}

/// Anthropic's error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 405 | 408 | 431 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// `{"type":"error","error":{"type","message"}}`.
pub fn error_json(status: u16, message: &str) -> Vec<u8> {
    let body = json!({"type": "error", "error": {"type": error_type(status), "message": message}});
    body.to_string().into_bytes()
}

/// The fields of an Anthropic client's request that routing reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHead {
    /// The public model name.
    pub model: String,
    /// `stream: true`.
    pub stream: bool,
    /// `max_tokens` (required by the API).
    pub max_tokens: u64,
    /// `metadata.user_id`, for per-user limits.
    pub user: Option<String>,
}

/// Read the routing fields of an Anthropic client's request (the body stays bytes).
pub fn client_head(body: &[u8]) -> Result<ClientHead, TranslateError> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow, default)]
        model: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        stream: Option<bool>,
        #[serde(default)]
        max_tokens: Option<u64>,
        #[serde(default)]
        messages: Option<Vec<serde::de::IgnoredAny>>,
        #[serde(borrow, default)]
        metadata: Option<Meta<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Meta<'a> {
        #[serde(borrow, default)]
        user_id: Option<std::borrow::Cow<'a, str>>,
    }
    let h: Head<'_> = serde_json::from_slice(body).map_err(|e| {
        TranslateError::invalid(format!(
            "We could not parse the JSON body of your request ({e}). Send a valid JSON object."
        ))
    })?;
    let model = match h.model {
        Some(m) if !m.is_empty() => m.into_owned(),
        _ => return Err(TranslateError::invalid("model: Field required")),
    };
    let Some(max_tokens) = h.max_tokens else {
        return Err(TranslateError::invalid("max_tokens: Field required"));
    };
    if h.messages.is_none() {
        return Err(TranslateError::invalid("messages: Field required"));
    }
    Ok(ClientHead {
        model,
        stream: h.stream.unwrap_or(false),
        max_tokens,
        user: h
            .metadata
            .and_then(|m| m.user_id)
            .filter(|u| !u.is_empty())
            .map(|u| u.into_owned()),
    })
}
