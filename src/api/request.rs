//! The canonical chat request: OpenAI's Chat Completions shape, typed. Requests that go
//! through untouched are never parsed into it; translated ones are, strictly: a field the
//! gateway does not know is an error, never a silent drop.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::translate::TranslateError;

/// A chat completion request (OpenAI's shape), with the few extensions other dialects need
/// (`top_k`, `thinking_budget`), which are never read from an OpenAI client.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// The model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Stream the answer as SSE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Stream options (`include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Output token cap (legacy name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Output token cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// Which tool, if any, the model must call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// May the model call several tools in one turn?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// End-user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Number of choices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Seed for sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Presence penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    /// `{"type":"text"|"json_object"|"json_schema", ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// `minimal`, `low`, `medium`, `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// Return log probabilities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// How many alternatives per token with `logprobs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// Token biases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<Value>,
    /// Store the completion at OpenAI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    /// OpenAI-side metadata for stored completions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Output modalities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modalities: Option<Vec<String>>,
    /// Audio output settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Value>,
    /// Predicted output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Value>,
    /// Service tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// Prompt cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_cache_key: Option<String>,
    /// End-user safety identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safety_identifier: Option<String>,
    /// Output verbosity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<String>,
    /// Web search options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_search_options: Option<Value>,
    /// Deprecated function calling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub functions: Option<Value>,
    /// Deprecated function calling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<Value>,
    /// Top-k sampling (from Anthropic clients; OpenAI has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u64>,
    /// Extended-thinking budget in tokens (from Anthropic clients; OpenAI has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_budget: Option<u64>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct StreamOptions {
    /// Add a usage chunk at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Obfuscation padding (OpenAI only; harmless elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_obfuscation: Option<bool>,
}

/// Who says a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions.
    System,
    /// Instructions (newer name).
    Developer,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// A tool's result.
    Tool,
    /// A deprecated function's result.
    Function,
}

/// One message.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Who says it.
    pub role: Role,
    /// Text or parts (absent or null on an assistant turn that only calls tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    /// Participant name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Assistant: the tools it called.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Tool: which call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Assistant: a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Assistant: reasoning text as some servers return it; ignored on input, as they do.
    #[serde(default, skip_serializing)]
    pub reasoning_content: Option<String>,
    /// Assistant: audio reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Value>,
    /// Deprecated function call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<Value>,
}

impl Message {
    /// The message's text (text parts joined; none is empty), or an error naming the
    /// first non-text part of message `index`.
    pub fn plain_text(&self, index: usize) -> Result<String, TranslateError> {
        self.content
            .as_ref()
            .map(|c| c.plain_text(&format!("messages[{index}].content")))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// A user message's content as a provider's items: plain text through `text`, each part
    /// through `part` (given the field path for its errors); missing content is an error.
    pub fn user_items<T>(
        &self,
        index: usize,
        text: impl FnOnce(String) -> T,
        part: impl Fn(&Part, &str) -> Result<T, TranslateError>,
    ) -> Result<Vec<T>, TranslateError> {
        let field = format!("messages[{index}].content");
        match &self.content {
            Some(Content::Text(t)) => Ok(vec![text(t.clone())]),
            Some(Content::Parts(parts)) => parts.iter().map(|p| part(p, &field)).collect(),
            None => Err(TranslateError::invalid(format!("{field} is missing"))),
        }
    }

    /// A system or developer message's text, for providers that take instructions only
    /// before the conversation (`started`: a turn came before it).
    pub fn system_text(
        &self,
        index: usize,
        started: bool,
        target: &str,
    ) -> Result<String, TranslateError> {
        if started {
            return Err(TranslateError::unsupported(format!(
                "system messages after the conversation started with a {target} model"
            )));
        }
        self.plain_text(index)
    }

    /// A message with text content and nothing else.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            refusal: None,
            reasoning_content: None,
            audio: None,
            function_call: None,
        }
    }
}

/// Message content: a string or a list of parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts.
    Parts(Vec<Part>),
}

impl Content {
    /// The text parts joined (no separator), or an error naming the first non-text part.
    pub fn plain_text(&self, field: &str) -> Result<String, TranslateError> {
        match self {
            Self::Text(t) => Ok(t.clone()),
            Self::Parts(parts) => {
                let mut out = String::new();
                for p in parts {
                    match p {
                        Part::Text { text } => out.push_str(text),
                        other => {
                            return Err(TranslateError::unsupported(format!(
                                "`{}` parts in {field}",
                                other.kind()
                            )));
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
                Ok(Content::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(p) = seq.next_element()? {
                    parts.push(p);
                }
                Ok(Content::Parts(parts))
            }
        }
        d.deserialize_any(V)
    }
}

/// One content part.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Part {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image by URL or `data:` URL.
    ImageUrl {
        /// The image.
        image_url: ImageUrl,
    },
    /// Audio input.
    InputAudio {
        /// The audio.
        input_audio: Value,
    },
    /// A file.
    File {
        /// The file.
        file: Value,
    },
    /// An assistant refusal part.
    Refusal {
        /// The refusal text.
        refusal: String,
    },
}

impl Part {
    /// The part's `type` as the client wrote it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::ImageUrl { .. } => "image_url",
            Self::InputAudio { .. } => "input_audio",
            Self::File { .. } => "file",
            Self::Refusal { .. } => "refusal",
        }
    }
}

/// `image_url`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImageUrl {
    /// `https://…` or `data:<mime>;base64,<data>`.
    pub url: String,
    /// `auto`, `low`, `high`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An image split into media type and base64 data, when it is a `data:` URL.
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (mime, data) = rest.split_once(',')?;
    let mime = mime.strip_suffix(";base64")?;
    Some((mime, data))
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function.
    pub function: FunctionDef,
}

/// A function's declaration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionDef {
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Strict schema adherence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// A call the model made.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ToolCall {
    /// Call id (answered by a tool message's `tool_call_id`).
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    /// Name and arguments.
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_owned()
}

/// A function call: name and JSON arguments as text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct FunctionCall {
    /// Function name.
    pub name: String,
    /// JSON text of the arguments.
    pub arguments: String,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `none`, `auto` or `required`.
    Mode(String),
    /// `{"type":"function","function":{"name":…}}`.
    Named {
        /// Always `function`.
        #[serde(rename = "type")]
        kind: String,
        /// The function to call.
        function: NamedFunction,
    },
}

/// A function named by `tool_choice`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct NamedFunction {
    /// Its name.
    pub name: String,
}

/// `stop`: one string or several.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Stop {
    /// One sequence.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    /// As a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

impl ChatRequest {
    /// Parse an OpenAI-shaped request strictly. Errors name the field.
    pub fn from_json(body: &[u8]) -> Result<Self, TranslateError> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let req: Self =
            serde_path_to_error::deserialize(&mut de).map_err(TranslateError::from_path)?;
        if req.top_k.is_some() {
            return Err(TranslateError::invalid("unknown field `top_k`"));
        }
        if req.thinking_budget.is_some() {
            return Err(TranslateError::invalid("unknown field `thinking_budget`"));
        }
        Ok(req)
    }

    /// The output token cap the client asked for.
    pub fn output_cap(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Streamed?
    pub fn streams(&self) -> bool {
        self.stream == Some(true)
    }

    /// Did the client ask for a usage chunk?
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// Refuse the fields no non-OpenAI provider has, when they ask for something (a value
    /// that changes nothing, such as `n: 1` or `store: false`, passes). `target` names the
    /// provider kind in the message.
    pub fn refuse_openai_only(&self, target: &str) -> Result<(), TranslateError> {
        let refuse = |feature: &str| {
            Err(TranslateError::unsupported(format!(
                "`{feature}` with a {target} model"
            )))
        };
        if self.n.is_some_and(|n| n != 1) {
            return refuse("n");
        }
        if self.logprobs == Some(true) || self.top_logprobs.is_some() {
            return refuse("logprobs");
        }
        if self.logit_bias.as_ref().is_some_and(non_empty) {
            return refuse("logit_bias");
        }
        if self.store == Some(true) {
            return refuse("store");
        }
        if self.metadata.as_ref().is_some_and(non_empty) {
            return refuse("metadata");
        }
        if self
            .modalities
            .as_ref()
            .is_some_and(|m| m.iter().any(|x| x != "text"))
            || self.audio.is_some()
        {
            return refuse("audio output");
        }
        if self.prediction.is_some() {
            return refuse("prediction");
        }
        if self.web_search_options.is_some() {
            return refuse("web_search_options");
        }
        if self.functions.is_some() || self.function_call.is_some() {
            return refuse("functions (use tools)");
        }
        if self.prompt_cache_key.is_some() {
            return refuse("prompt_cache_key");
        }
        if self.verbosity.is_some() {
            return refuse("verbosity");
        }
        if self
            .service_tier
            .as_deref()
            .is_some_and(|t| t != "auto" && t != "default")
        {
            return refuse("service_tier");
        }
        for m in &self.messages {
            if m.audio.is_some() || m.function_call.is_some() || m.role == Role::Function {
                return refuse("function or audio messages");
            }
            if m.name.is_some() {
                return refuse("message `name`");
            }
        }
        Ok(())
    }
}

fn non_empty(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_items_map_text_and_parts_and_name_missing_content() {
        let kinds = |m: &Message| {
            m.user_items(
                3,
                |t| format!("text:{t}"),
                |p, field| match p {
                    Part::Text { text } => Ok(format!("part:{text}")),
                    other => Err(TranslateError::unsupported(format!(
                        "`{}` parts in {field}",
                        other.kind()
                    ))),
                },
            )
        };
        let m: Message = serde_json::from_str(r#"{"role":"user","content":"hi"}"#).unwrap();
        assert_eq!(kinds(&m).unwrap(), ["text:hi"]);
        let m: Message = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}"#,
        )
        .unwrap();
        assert_eq!(kinds(&m).unwrap(), ["part:a", "part:b"]);
        let m: Message = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}"#,
        )
        .unwrap();
        let err = kinds(&m).unwrap_err().to_string();
        assert!(
            err.contains("`image_url` parts in messages[3].content"),
            "{err}"
        );
        let m: Message = serde_json::from_str(r#"{"role":"user"}"#).unwrap();
        let err = kinds(&m).unwrap_err().to_string();
        assert!(err.contains("messages[3].content is missing"), "{err}");
    }

    #[test]
    fn parses_every_content_shape() {
        let r = ChatRequest::from_json(
            br#"{"model":"m","messages":[
                {"role":"system","content":"be brief"},
                {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},
                {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"c1","content":"42"}],
              "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
              "tool_choice":{"type":"function","function":{"name":"f"}},"stop":"x"}"#,
        )
        .unwrap();
        assert_eq!(r.messages.len(), 4);
        assert!(matches!(&r.messages[1].content, Some(Content::Parts(p)) if p.len() == 2));
        assert_eq!(r.messages[2].content, None);
        assert!(matches!(r.tool_choice, Some(ToolChoice::Named { .. })));
        assert_eq!(r.stop.unwrap().into_vec(), ["x"]);
        assert_eq!(
            data_url("data:image/png;base64,AAAA"),
            Some(("image/png", "AAAA"))
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        for (body, field) in [
            (
                r#"{"model":"m","messages":[],"frobnicate":1}"#,
                "frobnicate",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x","colour":1}]}"#,
                "colour",
            ),
            (r#"{"model":"m","messages":[],"top_k":3}"#, "top_k"),
        ] {
            let e = ChatRequest::from_json(body.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[test]
    fn openai_only_features_are_refused_by_name() {
        let base = r#""model":"m","messages":[{"role":"user","content":"x"}]"#;
        for (extra, feature) in [
            (r#""n":2"#, "`n`"),
            (r#""logprobs":true"#, "logprobs"),
            (r#""logit_bias":{"1":2}"#, "logit_bias"),
            (r#""modalities":["text","audio"]"#, "audio"),
            (r#""store":true"#, "store"),
        ] {
            let r = ChatRequest::from_json(format!("{{{base},{extra}}}").as_bytes()).unwrap();
            let e = r.refuse_openai_only("anthropic").unwrap_err().to_string();
            assert!(e.contains(feature) && e.contains("anthropic"), "{e}");
        }
        for harmless in [
            r#""n":1"#,
            r#""store":false"#,
            r#""logprobs":false"#,
            r#""logit_bias":{}"#,
        ] {
            let r = ChatRequest::from_json(format!("{{{base},{harmless}}}").as_bytes()).unwrap();
            r.refuse_openai_only("anthropic").unwrap();
        }
    }
}
