//! The Gemini API (`POST .../models/{model}:generateContent`, `:streamGenerateContent?alt=sse`;
//! embeddings are in [`super::embeddings`]): the model path parsed, a request read into a
//! [`Reply`], the reply rendered back whole or as `data:` events with CRLF line ends (as Gemini
//! sends them), and Google-shaped error bodies.

use bytes::Bytes;
use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use super::{MockError, Reply, Turn, split_pieces};
use crate::api::json::{write_string, write_u64};

/// The mock's `responseId`.
pub const RESPONSE_ID: &str = "mock-response";

/// A Gemini model method the mock serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `:generateContent`.
    GenerateContent,
    /// `:streamGenerateContent` (served with `alt=sse` only).
    StreamGenerateContent,
    /// `:embedContent`.
    EmbedContent,
    /// `:batchEmbedContents`.
    BatchEmbedContents,
}

/// A Gemini model path: `.../models/{model}:{method}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The model segment, URL-decoded, with any `;knob=value` suffix still on it.
    pub model: String,
    /// The method after the `:`.
    pub method: Method,
}

/// Read a Gemini model path (`/v1beta/models/{model}:{method}`, `/v1/models/...`, or any path
/// whose last two segments are `models/{model}:{method}`); `None` for any other path.
pub fn route(path: &str) -> Option<Route> {
    let (parent, last) = path.rsplit_once('/')?;
    if !parent.ends_with("/models") && parent != "models" {
        return None;
    }
    let last = percent_decode(last)?;
    let (model, method) = last.rsplit_once(':')?;
    let method = match method {
        "generateContent" => Method::GenerateContent,
        "streamGenerateContent" => Method::StreamGenerateContent,
        "embedContent" => Method::EmbedContent,
        "batchEmbedContents" => Method::BatchEmbedContents,
        _ => return None,
    };
    (!model.is_empty()).then(|| Route {
        model: model.to_owned(),
        method,
    })
}

/// `%XX` escapes decoded; `None` when an escape is malformed or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A member by its JSON (lowerCamelCase) name or its proto (snake_case) name; Gemini accepts
/// both.
fn field<'v, 'a>(v: &'v Value<'a>, camel: &str, snake: &str) -> Option<&'v Value<'a>> {
    v.get(camel).or_else(|| v.get(snake))
}

/// The parts of a content (none when missing).
fn parts<'v, 'a>(content: &'v Value<'a>) -> impl Iterator<Item = &'v Value<'a>> {
    content
        .get_array("parts")
        .map(|p| p.iter())
        .into_iter()
        .flatten()
}

/// Read a `generateContent` request for `model` (the path's model segment, knob suffix
/// allowed); `body` is a scratch copy simd-json may modify.
pub fn parse(model: &str, stream: bool, body: &mut [u8]) -> Result<Reply, MockError> {
    let len = body.len();
    let v = simd_json::to_borrowed_value(body)
        .map_err(|e| MockError(format!("Invalid JSON payload received. {e}")))?;
    let contents = v
        .get_array("contents")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            MockError("* GenerateContentRequest.contents: contents is not specified".into())
        })?;
    let model = super::base_model(model);
    Ok(Reply::new(model, stream, len, turn(contents, &v)))
}

/// What the last turn asks: the last user content's text parts and `inlineData`/`fileData`
/// parts, the `functionResponse` parts of the last content, or a call to the first declared
/// (or only allowed) function.
fn turn(contents: &[Value<'_>], req: &Value<'_>) -> Turn {
    let mut t = Turn::default();
    // A content without a role is the user's.
    let is_user = |c: &&Value<'_>| matches!(c.get_str("role"), None | Some("user"));
    if let Some(user) = contents.iter().rfind(is_user) {
        t.text = parts(user)
            .filter_map(|p| p.get_str("text"))
            .collect::<Vec<_>>()
            .join(" ");
        t.images = parts(user)
            .filter(|p| {
                field(p, "inlineData", "inline_data").is_some()
                    || field(p, "fileData", "file_data").is_some()
            })
            .count();
    }
    if let Some(last) = contents.last() {
        let results: Vec<String> = parts(last)
            .filter_map(|p| field(p, "functionResponse", "function_response"))
            .map(|f| f.get("response").map(|r| r.encode()).unwrap_or_default())
            .collect();
        if !results.is_empty() {
            t.tool_result = Some(results.join(" "));
        } else if is_user(&last) {
            t.call_tool = tool_to_call(req);
        }
    }
    t
}

/// The function to call: the first of `allowedFunctionNames`, else the first declared; none
/// when nothing is declared or the calling mode is `NONE`.
fn tool_to_call(req: &Value<'_>) -> Option<String> {
    let first = req
        .get_array("tools")?
        .iter()
        .filter_map(|t| field(t, "functionDeclarations", "function_declarations")?.as_array())
        .flatten()
        .find_map(|d| d.get_str("name"))?;
    let config = field(req, "toolConfig", "tool_config")
        .and_then(|c| field(c, "functionCallingConfig", "function_calling_config"));
    if config.and_then(|c| c.get_str("mode")) == Some("NONE") {
        return None;
    }
    let allowed = config
        .and_then(|c| field(c, "allowedFunctionNames", "allowed_function_names"))
        .and_then(|a| a.as_array()?.first()?.as_str());
    Some(allowed.unwrap_or(first).to_owned())
}

/// Finish reasons that block the answer: the candidate then carries no content.
fn is_blocking(reason: &str) -> bool {
    matches!(
        reason,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
    )
}

/// `usageMetadata` with every count (`cachedContentTokenCount` and `thoughtsTokenCount` only
/// when not zero); `promptTokenCount` includes cached tokens.
fn usage_full(out: &mut Vec<u8>, r: &Reply) {
    let o = r.output_tokens();
    out.extend_from_slice(b"{\"promptTokenCount\":");
    write_u64(out, r.prompt_tokens);
    out.extend_from_slice(b",\"candidatesTokenCount\":");
    write_u64(out, o);
    out.extend_from_slice(b",\"totalTokenCount\":");
    write_u64(out, r.prompt_tokens + o + r.reasoning_tokens);
    if r.cached_tokens > 0 {
        out.extend_from_slice(b",\"cachedContentTokenCount\":");
        write_u64(out, r.cached_tokens);
    }
    if r.reasoning_tokens > 0 {
        out.extend_from_slice(b",\"thoughtsTokenCount\":");
        write_u64(out, r.reasoning_tokens);
    }
    out.push(b'}');
}

/// `usageMetadata` of a chunk before the last: the prompt only.
fn usage_prompt(out: &mut Vec<u8>, r: &Reply) {
    out.extend_from_slice(b"{\"promptTokenCount\":");
    write_u64(out, r.prompt_tokens);
    out.extend_from_slice(b",\"totalTokenCount\":");
    write_u64(out, r.prompt_tokens);
    out.push(b'}');
}

/// A model content holding one text part.
fn text_content(text: &str) -> Vec<u8> {
    let mut out = b"{\"role\":\"model\",\"parts\":[{\"text\":".to_vec();
    write_string(&mut out, text);
    out.extend_from_slice(b"}]}");
    out
}

/// The reply's whole content: its text, or its function call.
fn content(r: &Reply) -> Vec<u8> {
    match &r.tool_call {
        Some(call) => {
            let mut out = b"{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":".to_vec();
            write_string(&mut out, &call.name);
            out.extend_from_slice(b",\"args\":");
            out.extend_from_slice(call.arguments.as_bytes());
            out.extend_from_slice(b"}}]}");
            out
        }
        None => text_content(&r.content),
    }
}

/// One `GenerateContentResponse`.
fn response_json(r: &Reply, content: Option<&[u8]>, finish: Option<&str>, last: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.map_or(0, <[u8]>::len) + 300);
    out.extend_from_slice(b"{\"candidates\":[{");
    if let Some(c) = content {
        out.extend_from_slice(b"\"content\":");
        out.extend_from_slice(c);
        out.push(b',');
    }
    if let Some(f) = finish {
        out.extend_from_slice(b"\"finishReason\":");
        write_string(&mut out, f);
        out.push(b',');
    }
    out.extend_from_slice(b"\"index\":0}],\"usageMetadata\":");
    if last {
        usage_full(&mut out, r);
    } else {
        usage_prompt(&mut out, r);
    }
    out.extend_from_slice(b",\"modelVersion\":");
    write_string(&mut out, &r.model);
    out.extend_from_slice(b",\"responseId\":\"");
    out.extend_from_slice(RESPONSE_ID.as_bytes());
    out.extend_from_slice(b"\"}");
    out
}

/// The whole (non-streamed) answer. A blocking finish reason (knob `finish=SAFETY`) leaves
/// the candidate without content.
pub fn response(r: &Reply) -> Bytes {
    let finish = r.finish_or("STOP");
    let content = (!is_blocking(finish)).then(|| content(r));
    Bytes::from(response_json(r, content.as_deref(), Some(finish), true))
}

/// One `data:` event, CRLF-terminated as Gemini sends them.
fn frame(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 10);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\r\n\r\n");
    Bytes::from(out)
}

/// The streamed answer (`alt=sse`) as whole events: one text piece per event, the last one
/// with `finishReason` and the full usage. A function call comes whole in one event (Gemini
/// does not stream arguments). With a blocking finish reason, the text pieces are followed by
/// one more event that has no content, the finish reason and the usage.
pub fn events(r: &Reply, chunks: usize) -> Vec<Bytes> {
    let finish = r.finish_or("STOP");
    let blocking = is_blocking(finish);
    if r.tool_call.is_some() {
        let content = (!blocking).then(|| content(r));
        return vec![frame(&response_json(
            r,
            content.as_deref(),
            Some(finish),
            true,
        ))];
    }
    let pieces = split_pieces(&r.content, chunks.max(1));
    let n = pieces.len();
    let mut out = Vec::with_capacity(n + 1);
    for (i, p) in pieces.into_iter().enumerate() {
        let last = i + 1 == n && !blocking;
        let finish = last.then_some(finish);
        out.push(frame(&response_json(
            r,
            Some(&text_content(p)),
            finish,
            last,
        )));
    }
    if blocking {
        out.push(frame(&response_json(r, None, Some(finish), true)));
    }
    out
}

/// The Google RPC status name for an HTTP status.
fn rpc_status(status: u16) -> &'static str {
    match status {
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        400..=499 => "INVALID_ARGUMENT",
        _ => "INTERNAL",
    }
}

/// A Google-shaped error body: `{"error":{"code":..,"message":..,"status":..}}`.
pub fn error_body(status: u16, message: &str) -> Bytes {
    let mut out = b"{\"error\":{\"code\":".to_vec();
    write_u64(&mut out, u64::from(status));
    out.extend_from_slice(b",\"message\":");
    write_string(&mut out, message);
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(rpc_status(status).as_bytes());
    out.extend_from_slice(b"\"}}");
    Bytes::from(out)
}

/// The in-band stream error (Gemini has no error event): a `data:` event holding a 503
/// `UNAVAILABLE` error body.
pub fn stream_error(message: &str) -> Bytes {
    frame(&error_body(503, message))
}

/// Gemini's context-window error: 400 `INVALID_ARGUMENT` naming the input token count.
// Shape: Google's `{"error":{"code","message","status"}}` (AIP-193 error model).
pub fn context_window_error() -> Bytes {
    error_body(
        400,
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
    )
}

/// How Gemini refuses a prompt for its content: a 200 answer without candidates whose
/// `promptFeedback.blockReason` is `SAFETY`, with the prompt's usage. Streamed, it is the one
/// event of the stream.
// Shape: ai.google.dev `GenerateContentResponse.PromptFeedback` ("If set, the prompt was
// blocked and no candidates are returned").
pub fn prompt_blocked(r: &Reply) -> Bytes {
    let mut out = b"{\"promptFeedback\":{\"blockReason\":\"SAFETY\",\"safetyRatings\":[{\"category\":\"HARM_CATEGORY_DANGEROUS_CONTENT\",\"probability\":\"HIGH\"}]},\"usageMetadata\":".to_vec();
    usage_prompt(&mut out, r);
    out.extend_from_slice(b",\"modelVersion\":");
    write_string(&mut out, &r.model);
    out.extend_from_slice(b",\"responseId\":\"");
    out.extend_from_slice(RESPONSE_ID.as_bytes());
    out.extend_from_slice(b"\"}");
    if r.stream {
        frame(&out)
    } else {
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::test_util::parse_events;
    use crate::mock::{Knobs, MockUsage};
    use serde_json::{Value as Json, json};

    fn reply(body: &str) -> Reply {
        parse(
            "gemini-2.5-flash;chunks=3",
            false,
            &mut body.as_bytes().to_vec(),
        )
        .unwrap()
    }

    const TOOLS: &str = r#""tools":[{"googleSearch":{}},{"functionDeclarations":[{"name":"search","description":"d","parameters":{"type":"object"}},{"name":"weather"}]}]"#;

    #[test]
    fn routes_model_paths() {
        let r = route("/v1beta/models/gemini-2.5-flash:streamGenerateContent").unwrap();
        assert_eq!(r.model, "gemini-2.5-flash");
        assert_eq!(r.method, Method::StreamGenerateContent);
        let r = route("/v1/models/mock%3Bchunks%3D3%3Blatency_ms=exp:2:generateContent").unwrap();
        assert_eq!(r.model, "mock;chunks=3;latency_ms=exp:2");
        assert_eq!(r.method, Method::GenerateContent);
        assert_eq!(
            route("/v1beta/models/e:batchEmbedContents").unwrap().method,
            Method::BatchEmbedContents
        );
        assert_eq!(
            route("/v1beta/models/e:embedContent").unwrap().method,
            Method::EmbedContent
        );
        for bad in [
            "/v1beta/models/m:countTokens",
            "/v1beta/models/m",
            "/v1beta/tunedModels/m:generateContent",
            "/v1beta/models/:generateContent",
            "/v1beta/models/m%zz:generateContent",
        ] {
            assert_eq!(route(bad), None, "{bad}");
        }
    }

    #[test]
    fn text_response_and_stream() {
        let r = reply(
            r#"{"systemInstruction":{"parts":[{"text":"be brief"}]},"contents":[{"role":"user","parts":[{"text":"first"}]},{"role":"model","parts":[{"text":"ok"}]},{"parts":[{"text":"héllo"},{"inlineData":{"mimeType":"image/png","data":"AAAA"}},{"text":"wörld"}]}],"generationConfig":{"temperature":0.2,"maxOutputTokens":64}}"#,
        );
        assert_eq!(r.model, "gemini-2.5-flash");
        assert_eq!(r.content, "This is a mock reply to: héllo wörld [1 image]");
        let v: Json = serde_json::from_slice(&response(&r)).unwrap();
        let (p, o) = (r.prompt_tokens, r.output_tokens());
        assert_eq!(
            v,
            json!({
                "candidates": [{"content": {"role": "model", "parts": [{"text": r.content}]},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": p, "candidatesTokenCount": o,
                                  "totalTokenCount": p + o},
                "modelVersion": "gemini-2.5-flash",
                "responseId": RESPONSE_ID,
            })
        );

        for n in [1, 3, 8, 100] {
            let raw = events(&r, n);
            assert_eq!(raw.len(), n);
            assert!(raw.iter().all(|e| e.ends_with(b"}\r\n\r\n")));
            let events = parse_events(&raw);
            let mut text = String::new();
            for (i, (_, e)) in events.iter().enumerate() {
                let c = &e["candidates"][0];
                assert_eq!(c["content"]["role"], "model");
                text.push_str(c["content"]["parts"][0]["text"].as_str().unwrap());
                assert_eq!(e["usageMetadata"]["promptTokenCount"], p);
                if i + 1 < n {
                    assert!(c.get("finishReason").is_none());
                    assert!(e["usageMetadata"].get("candidatesTokenCount").is_none());
                } else {
                    assert_eq!(c["finishReason"], "STOP");
                    assert_eq!(e["usageMetadata"], v["usageMetadata"]);
                }
            }
            assert_eq!(text, r.content);
        }
    }

    #[test]
    fn function_call_response_and_stream() {
        let r = reply(&format!(
            r#"{{{TOOLS},"contents":[{{"role":"user","parts":[{{"text":"find cats"}}]}}]}}"#
        ));
        assert_eq!(r.tool_call.as_ref().unwrap().name, "search");
        let v: Json = serde_json::from_slice(&response(&r)).unwrap();
        let want = json!({"role": "model", "parts": [{"functionCall": {"name": "search",
                          "args": {"query": "find cats"}}}]});
        assert_eq!(v["candidates"][0]["content"], want);
        assert_eq!(v["candidates"][0]["finishReason"], "STOP");
        assert_eq!(
            v["usageMetadata"]["candidatesTokenCount"],
            r.output_tokens()
        );
        let events = parse_events(&events(&r, 5));
        assert_eq!(events.len(), 1, "a function call comes whole");
        assert_eq!(events[0].1["candidates"][0]["content"], want);
        assert_eq!(events[0].1["candidates"][0]["finishReason"], "STOP");

        let choose = |config: &str| {
            reply(&format!(
                r#"{{{TOOLS},"toolConfig":{{"functionCallingConfig":{config}}},"contents":[{{"role":"user","parts":[{{"text":"x"}}]}}]}}"#
            ))
            .tool_call
            .map(|c| c.name)
        };
        assert_eq!(
            choose(r#"{"mode":"ANY","allowedFunctionNames":["weather"]}"#).as_deref(),
            Some("weather")
        );
        assert_eq!(choose(r#"{"mode":"AUTO"}"#).as_deref(), Some("search"));
        assert_eq!(choose(r#"{"mode":"NONE"}"#), None);
    }

    #[test]
    fn answers_function_responses() {
        let r = reply(&format!(
            r#"{{{TOOLS},"contents":[{{"role":"user","parts":[{{"text":"weather?"}}]}},{{"role":"model","parts":[{{"functionCall":{{"name":"search","args":{{"query":"weather?"}}}}}}]}},{{"role":"user","parts":[{{"functionResponse":{{"name":"search","response":{{"result":"sunny","temp":21}}}}}}]}}]}}"#
        ));
        assert!(r.tool_call.is_none());
        assert_eq!(
            r.content,
            r#"This is a mock reply to: tool result {"result":"sunny","temp":21}"#
        );
    }

    #[test]
    fn usage_counts_cached_and_thoughts() {
        let mut r = reply(r#"{"contents":[{"parts":[{"text":"count me"}]}]}"#);
        let mut k = Knobs::default();
        k.set("cached_tokens", "3").unwrap();
        k.set("reasoning_tokens", "11").unwrap();
        r.apply_knobs(&k);
        let (p, o) = (r.prompt_tokens, r.output_tokens());
        let want = json!({"promptTokenCount": p, "candidatesTokenCount": o,
                          "totalTokenCount": p + o + 11, "cachedContentTokenCount": 3,
                          "thoughtsTokenCount": 11});
        let v: Json = serde_json::from_slice(&response(&r)).unwrap();
        assert_eq!(v["usageMetadata"], want);
        let events = parse_events(&events(&r, 2));
        assert_eq!(events[1].1["usageMetadata"], want);
        assert_eq!(
            r.usage(),
            MockUsage {
                input_tokens: p,
                output_tokens: o + 11,
                cached_input_tokens: 3,
                reasoning_tokens: 11,
            }
        );
    }

    #[test]
    fn finish_knob_blocks_or_relabels() {
        let mut r = reply(r#"{"contents":[{"parts":[{"text":"bad words"}]}]}"#);
        let mut k = Knobs::default();
        k.set("finish", "SAFETY").unwrap();
        r.apply_knobs(&k);
        let v: Json = serde_json::from_slice(&response(&r)).unwrap();
        assert_eq!(
            v["candidates"][0],
            json!({"finishReason": "SAFETY", "index": 0})
        );
        let events = parse_events(&events(&r, 3));
        assert_eq!(events.len(), 4);
        assert!(
            events[..3]
                .iter()
                .all(|(_, e)| e["candidates"][0].get("finishReason").is_none())
        );
        assert_eq!(
            events[3].1["candidates"][0],
            json!({"finishReason": "SAFETY", "index": 0})
        );
        assert!(events[3].1["usageMetadata"]["candidatesTokenCount"].is_u64());

        k.set("finish", "MAX_TOKENS").unwrap();
        r.apply_knobs(&k);
        let v: Json = serde_json::from_slice(&response(&r)).unwrap();
        assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
        assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], r.content);
    }

    #[test]
    fn errors_are_google_shaped() {
        for (status, name) in [
            (400, "INVALID_ARGUMENT"),
            (401, "UNAUTHENTICATED"),
            (403, "PERMISSION_DENIED"),
            (404, "NOT_FOUND"),
            (429, "RESOURCE_EXHAUSTED"),
            (500, "INTERNAL"),
            (503, "UNAVAILABLE"),
        ] {
            let v: Json = serde_json::from_slice(&error_body(status, "m \"q\"")).unwrap();
            assert_eq!(
                v,
                json!({"error": {"code": status, "message": "m \"q\"", "status": name}})
            );
        }
        let e = stream_error("gone");
        assert!(e.ends_with(b"\r\n\r\n"));
        let events = parse_events(&[e]);
        assert_eq!(events[0].1["error"]["status"], "UNAVAILABLE");
        for bad in ["{", r#"{"contents":[]}"#, "{}"] {
            assert!(parse("m", false, &mut bad.as_bytes().to_vec()).is_err());
        }
    }
}
