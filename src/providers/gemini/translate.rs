//! Gemini ⇄ canonical: requests to Gemini-kind upstreams ([`to_wire`]) and their answers
//! ([`from_wire`]). Gemini is only ever upstream, so there is no client side.

use hashbrown::HashMap;
use serde_json::{Value, json};

use super::wire::{
    self, Blob, FileData, FunctionCallingConfig, GenerationConfig, Part, ToolConfig,
};
use crate::api::request::{self, ChatRequest, Role, ToolChoice};
use crate::api::response::{ChatResponse, Delta, FinishReason};
use crate::api::{TranslateError, Usage};

fn refuse<T>(feature: &str) -> Result<T, TranslateError> {
    Err(TranslateError::unsupported(format!(
        "`{feature}` with a gemini model"
    )))
}

/// A canonical request as a Gemini `generateContent` body (the model goes in the path).
pub fn to_wire(req: &ChatRequest) -> Result<wire::Request, TranslateError> {
    req.refuse_openai_only("gemini")?;
    if req.parallel_tool_calls == Some(false) {
        return refuse("parallel_tool_calls: false");
    }
    if req.user.is_some() || req.safety_identifier.is_some() {
        return refuse("user");
    }
    let mut system: Vec<Part> = Vec::new();
    let mut contents: Vec<wire::Content> = Vec::with_capacity(req.messages.len());
    // Tool results name their function on Gemini; OpenAI names the call's id.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for (i, m) in req.messages.iter().enumerate() {
        let at = |what: &str| format!("messages[{i}].{what}");
        match m.role {
            Role::System | Role::Developer => {
                system.push(text_part(m.system_text(
                    i,
                    !contents.is_empty(),
                    "gemini",
                )?));
            }
            Role::User => {
                let parts = m.user_items(i, text_part, user_part)?;
                push_parts(&mut contents, "user", parts);
            }
            Role::Assistant => {
                let mut parts = Vec::new();
                if let Some(c) = &m.content {
                    let text = c.plain_text(&at("content"))?;
                    if !text.is_empty() {
                        parts.push(text_part(text));
                    }
                }
                for (j, call) in m.tool_calls.iter().flatten().enumerate() {
                    call_names.insert(&call.id, &call.function.name);
                    let args = if call.function.arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str::<Value>(&call.function.arguments)
                            .ok()
                            .filter(Value::is_object)
                            .ok_or_else(|| {
                                TranslateError::invalid(format!(
                                    "{} must be a JSON object",
                                    at(&format!("tool_calls[{j}].function.arguments"))
                                ))
                            })?
                    };
                    parts.push(Part {
                        function_call: Some(wire::FunctionCall {
                            id: None,
                            name: call.function.name.clone(),
                            args,
                        }),
                        ..Part::default()
                    });
                }
                push_parts(&mut contents, "model", parts);
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let name = call_names.get(id).copied().ok_or_else(|| {
                    TranslateError::invalid(format!(
                        "{}: `{id}` answers no earlier assistant tool call",
                        at("tool_call_id")
                    ))
                })?;
                let text = m.plain_text(i)?;
                // Gemini wants an object: a JSON object result goes as it is, anything else
                // is wrapped as `{"result": …}`.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    Ok(v) => json!({ "result": v }),
                    Err(_) => json!({ "result": text }),
                };
                let part = Part {
                    function_response: Some(wire::FunctionResponse {
                        id: None,
                        name: name.to_owned(),
                        response,
                    }),
                    ..Part::default()
                };
                push_parts(&mut contents, "user", vec![part]);
            }
            Role::Function => return refuse("function messages"),
        }
    }
    let tools = match &req.tools {
        None => None,
        Some(list) => Some(vec![wire::Tool {
            function_declarations: list
                .iter()
                .map(|t| {
                    if t.function.strict == Some(true) {
                        return refuse("tools[].function.strict");
                    }
                    Ok(wire::FunctionDeclaration {
                        name: t.function.name.clone(),
                        description: t.function.description.clone(),
                        parameters_json_schema: t.function.parameters.clone(),
                    })
                })
                .collect::<Result<_, _>>()?,
        }]),
    };
    let tool_config = match &req.tool_choice {
        None => None,
        Some(ToolChoice::Mode(m)) => Some(ToolConfig {
            function_calling_config: FunctionCallingConfig {
                mode: match m.as_str() {
                    "none" => "NONE",
                    "auto" => "AUTO",
                    "required" => "ANY",
                    other => {
                        return Err(TranslateError::invalid(format!(
                            "`tool_choice` must be none, auto, required or a named function, not `{other}`"
                        )));
                    }
                },
                allowed_function_names: None,
            },
        }),
        Some(ToolChoice::Named { function, .. }) => Some(ToolConfig {
            function_calling_config: FunctionCallingConfig {
                mode: "ANY",
                allowed_function_names: Some(vec![function.name.clone()]),
            },
        }),
    };
    let (response_mime_type, response_json_schema) = match &req.response_format {
        None => (None, None),
        Some(f) => match f.get("type").and_then(Value::as_str) {
            Some("text") => (None, None),
            Some("json_object") => (Some("application/json".to_owned()), None),
            Some("json_schema") => (
                Some("application/json".to_owned()),
                f.get("json_schema").and_then(|s| s.get("schema")).cloned(),
            ),
            _ => {
                return Err(TranslateError::invalid(
                    "`response_format.type` must be text, json_object or json_schema",
                ));
            }
        },
    };
    let thinking_budget = match (req.thinking_budget, req.reasoning_effort.as_deref()) {
        (Some(b), _) => Some(b),
        (None, None) => None,
        (None, Some("minimal" | "none")) => Some(0),
        (None, Some("low")) => Some(1024),
        (None, Some("medium")) => Some(8192),
        (None, Some("high")) => Some(24576),
        (None, Some(other)) => {
            return Err(TranslateError::invalid(format!(
                "`reasoning_effort` must be minimal, low, medium or high, not `{other}`"
            )));
        }
    };
    let generation_config = GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        max_output_tokens: req.output_cap(),
        stop_sequences: req.stop.clone().map(request::Stop::into_vec),
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        response_mime_type,
        response_json_schema,
        thinking_config: thinking_budget
            .map(|thinking_budget| wire::ThinkingConfig { thinking_budget }),
    };
    Ok(wire::Request {
        contents,
        system_instruction: (!system.is_empty()).then_some(wire::Content {
            role: None,
            parts: system,
        }),
        tools,
        tool_config,
        generation_config: (generation_config != GenerationConfig::default())
            .then_some(generation_config),
    })
}

fn text_part(text: String) -> Part {
    Part {
        text: Some(text),
        ..Part::default()
    }
}

fn push_parts(contents: &mut Vec<wire::Content>, role: &str, parts: Vec<Part>) {
    if let Some(last) = contents.last_mut()
        && last.role.as_deref() == Some(role)
    {
        last.parts.extend(parts);
        return;
    }
    contents.push(wire::Content {
        role: Some(role.to_owned()),
        parts,
    });
}

fn user_part(p: &request::Part, field: &str) -> Result<Part, TranslateError> {
    match p {
        request::Part::Text { text } => Ok(text_part(text.clone())),
        request::Part::ImageUrl { image_url } => {
            if let Some((mime, data)) = request::data_url(&image_url.url) {
                return Ok(Part {
                    inline_data: Some(Blob {
                        mime_type: mime.to_owned(),
                        data: data.to_owned(),
                    }),
                    ..Part::default()
                });
            }
            let url = &image_url.url;
            let ext = url
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            let mime = match ext.as_str() {
                "png" => "image/png",
                "jpg" | "jpeg" => "image/jpeg",
                "webp" => "image/webp",
                "gif" => "image/gif",
                "heic" => "image/heic",
                _ if url.starts_with("gs://") || url.starts_with("https://") => {
                    return Err(TranslateError::unsupported(format!(
                        "an image URL without a known file extension in {field} (send a data: URL)"
                    )));
                }
                _ => {
                    return Err(TranslateError::invalid(format!(
                        "{field}: an image URL must be https, gs or a base64 data: URL"
                    )));
                }
            };
            Ok(Part {
                file_data: Some(FileData {
                    mime_type: Some(mime.to_owned()),
                    file_uri: url.clone(),
                }),
                ..Part::default()
            })
        }
        other => Err(TranslateError::unsupported(format!(
            "`{}` parts with a gemini model",
            other.kind()
        ))),
    }
}

/// Gemini's `finishReason` as a canonical finish reason.
pub fn finish_reason(s: &str, called_tools: bool) -> FinishReason {
    match s {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => FinishReason::ContentFilter,
        _ if called_tools => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Gemini usage, normalised: output counts thoughts too. Sums saturate: an upstream's absurd
/// counts must not wrap into a small bill (or panic).
pub fn usage_from_wire(u: &wire::UsageMetadata) -> Usage {
    let thoughts = u.thoughts_token_count.unwrap_or(0);
    Usage {
        input_tokens: u
            .prompt_token_count
            .unwrap_or(0)
            .saturating_add(u.tool_use_prompt_token_count.unwrap_or(0)),
        output_tokens: u
            .candidates_token_count
            .unwrap_or(0)
            .saturating_add(thoughts),
        cached_input_tokens: u.cached_content_token_count.unwrap_or(0),
        reasoning_tokens: thoughts,
    }
}

/// Where a Gemini answer is in the deltas it produced so far.
#[derive(Debug, Default)]
pub struct Progress {
    started: bool,
    tools: usize,
    /// Saw a finish reason (or a blocked prompt, or an error).
    pub finished: bool,
}

/// The deltas of one Gemini answer or chunk.
pub fn response_deltas(r: wire::Response, p: &mut Progress, out: &mut Vec<Delta>) {
    if let Some(e) = r.error {
        p.finished = true;
        out.push(Delta::Error(if e.message.is_empty() {
            e.status
        } else {
            e.message
        }));
        return;
    }
    if !p.started {
        p.started = true;
        out.push(Delta::Start {
            id: r.response_id.clone().unwrap_or_default(),
            model: r.model_version.clone().unwrap_or_default(),
        });
    }
    if let Some(c) = r.candidates.into_iter().next() {
        for part in c.content.map(|c| c.parts).unwrap_or_default() {
            if let Some(t) = part.text.filter(|t| !t.is_empty()) {
                out.push(if part.thought == Some(true) {
                    Delta::Reasoning(t)
                } else {
                    Delta::Text(t)
                });
            }
            if let Some(call) = part.function_call {
                let index = p.tools;
                p.tools += 1;
                let id = call.id.unwrap_or_else(|| {
                    format!(
                        "call_{}_{index}",
                        r.response_id.as_deref().unwrap_or("gemini")
                    )
                });
                out.push(Delta::ToolStart {
                    index,
                    id,
                    name: call.name,
                });
                let args = if call.args.is_null() {
                    json!({})
                } else {
                    call.args
                };
                out.push(Delta::ToolArgs {
                    index,
                    json: args.to_string(),
                });
            }
        }
        if let Some(f) = c.finish_reason.filter(|f| f != "FINISH_REASON_UNSPECIFIED") {
            p.finished = true;
            out.push(Delta::Finish {
                reason: finish_reason(&f, p.tools > 0),
                stop_sequence: None,
            });
        }
    } else if r.prompt_feedback.and_then(|f| f.block_reason).is_some() {
        p.finished = true;
        out.push(Delta::Finish {
            reason: FinishReason::ContentFilter,
            stop_sequence: None,
        });
    }
    if let Some(u) = r.usage_metadata {
        out.push(Delta::Usage(usage_from_wire(&u)));
    }
}

/// A Gemini answer as a canonical response.
pub fn from_wire(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let r: wire::Response = serde_json::from_slice(body)
        .map_err(|e| TranslateError::upstream(format!("a Gemini answer ({e})")))?;
    let mut deltas = Vec::new();
    let mut p = Progress::default();
    response_deltas(r, &mut p, &mut deltas);
    let mut resp = ChatResponse::from_deltas(deltas);
    if resp.finish.is_none() {
        resp.finish = Some(if resp.tool_calls.is_empty() {
            FinishReason::Stop
        } else {
            FinishReason::ToolCalls
        });
    }
    Ok(resp)
}

/// An embeddings request as a Gemini `batchEmbedContents` body for `model`.
pub fn embed_to_wire(
    req: &crate::api::embeddings::EmbeddingsRequest,
    model: &str,
) -> Result<wire::BatchEmbedRequest, TranslateError> {
    if req.user.is_some() {
        return refuse("user");
    }
    let requests = req
        .texts("gemini")?
        .into_iter()
        .map(|t| wire::EmbedRequest {
            model: format!("models/{model}"),
            content: wire::Content {
                role: None,
                parts: vec![text_part(t)],
            },
            output_dimensionality: req.dimensions,
        })
        .collect();
    Ok(wire::BatchEmbedRequest { requests })
}

/// A Gemini `batchEmbedContents` answer's vectors.
pub fn embed_from_wire(body: &[u8]) -> Result<Vec<Vec<f32>>, TranslateError> {
    let r: wire::BatchEmbedResponse = serde_json::from_slice(body)
        .map_err(|e| TranslateError::upstream(format!("a Gemini embeddings answer ({e})")))?;
    Ok(r.embeddings.into_iter().map(|e| e.values).collect())
}
