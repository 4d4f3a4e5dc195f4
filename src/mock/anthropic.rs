//! Anthropic Messages (`POST /v1/messages`): a request read into a [`Reply`], the reply
//! rendered back as a whole message or as named SSE events (text or one `tool_use` block), and
//! Anthropic-shaped error bodies and stream error events.

use bytes::Bytes;
use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use super::{MockError, Reply, Turn, split_pieces};
use crate::api::json::{write_string, write_u64};

/// The header every Anthropic request must carry.
pub const VERSION_HEADER: &str = "anthropic-version";
/// The id of the mock's message.
pub const MESSAGE_ID: &str = "msg_mock";
/// The id of the mock's `tool_use` block.
pub const TOOL_USE_ID: &str = "toolu_mock_1";

/// Read an Anthropic Messages request (`body` is a scratch copy simd-json may modify).
/// Requires the `anthropic-version` header and `model`, `messages` and `max_tokens` in the
/// body, as Anthropic does.
pub fn parse(body: &mut [u8], headers: &http::HeaderMap) -> Result<Reply, MockError> {
    if !headers.contains_key(VERSION_HEADER) {
        return Err(MockError(format!("{VERSION_HEADER}: header is required")));
    }
    let len = body.len();
    let v = simd_json::to_borrowed_value(body)
        .map_err(|e| MockError(format!("There was an error parsing the body: {e}")))?;
    let model = v
        .get_str("model")
        .ok_or_else(|| MockError("model: Field required".into()))?;
    let model = super::base_model(model);
    let messages = v
        .get_array("messages")
        .ok_or_else(|| MockError("messages: Field required".into()))?;
    match v.get("max_tokens") {
        None => return Err(MockError("max_tokens: Field required".into())),
        Some(m) if m.as_u64().is_none() => {
            return Err(MockError(
                "max_tokens: Input should be a valid integer".into(),
            ));
        }
        Some(_) => {}
    }
    Ok(Reply::new(
        model,
        v.get_bool("stream").unwrap_or(false),
        len,
        turn(messages, &v),
    ))
}

/// What the last turn asks: the last user message's text blocks and `image` blocks, the
/// `tool_result` blocks of a trailing user message, or a call to the first declared (or
/// forced) tool.
fn turn(messages: &[Value<'_>], req: &Value<'_>) -> Turn {
    let mut t = Turn::default();
    let is_user = |m: &&Value<'_>| m.get_str("role") == Some("user");
    if let Some(user) = messages.iter().rfind(is_user) {
        t.text = blocks_text(user.get("content"));
        t.images = blocks(user)
            .filter(|b| b.get_str("type") == Some("image"))
            .count();
    }
    if let Some(last) = messages.last().filter(is_user) {
        let results: Vec<String> = blocks(last)
            .filter(|b| b.get_str("type") == Some("tool_result"))
            .map(|b| blocks_text(b.get("content")))
            .collect();
        if results.is_empty() {
            t.call_tool = tool_to_call(req);
        } else {
            t.tool_result = Some(results.join(" "));
        }
    }
    t
}

/// The content blocks of a message (none when its content is a string).
fn blocks<'v, 'a>(message: &'v Value<'a>) -> impl Iterator<Item = &'v Value<'a>> {
    message
        .get_array("content")
        .map(|b| b.iter())
        .into_iter()
        .flatten()
}

/// String content, or the `text` blocks' texts joined with " ".
fn blocks_text(content: Option<&Value<'_>>) -> String {
    match content {
        Some(c) if c.is_str() => c.as_str().unwrap_or_default().to_owned(),
        Some(c) => c
            .as_array()
            .map(|b| {
                b.iter()
                    .filter(|b| b.get_str("type") == Some("text"))
                    .filter_map(|b| b.get_str("text"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
        None => String::new(),
    }
}

/// The tool to call: the one `tool_choice` `{"type":"tool"}` names, else the first declared;
/// none when no tool is declared or `tool_choice` is `{"type":"none"}`.
fn tool_to_call(req: &Value<'_>) -> Option<String> {
    let first = req
        .get_array("tools")?
        .iter()
        .find_map(|t| t.get_str("name"))?;
    let choice = req.get("tool_choice");
    let name = match choice.and_then(|c| c.get_str("type")) {
        Some("none") => return None,
        Some("tool") => choice.and_then(|c| c.get_str("name")).unwrap_or(first),
        _ => first,
    };
    Some(name.to_owned())
}

fn stop_reason(r: &Reply) -> &str {
    r.finish_or(if r.tool_call.is_some() {
        "tool_use"
    } else {
        "end_turn"
    })
}

/// Anthropic usage: `input_tokens` excludes cache reads; `output_tokens` includes thinking.
fn usage_json(out: &mut Vec<u8>, r: &Reply, output_tokens: u64) {
    out.extend_from_slice(b"{\"input_tokens\":");
    write_u64(out, r.prompt_tokens - r.cached_tokens);
    out.extend_from_slice(b",\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":");
    write_u64(out, r.cached_tokens);
    out.extend_from_slice(b",\"output_tokens\":");
    write_u64(out, output_tokens);
    out.push(b'}');
}

/// The message object up to (not including) `content`.
fn message_head(out: &mut Vec<u8>, r: &Reply) {
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(MESSAGE_ID.as_bytes());
    out.extend_from_slice(b"\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    write_string(out, &r.model);
}

/// The whole (non-streamed) message.
pub fn message(r: &Reply) -> Bytes {
    let mut out = Vec::with_capacity(r.content.len() + 400);
    message_head(&mut out, r);
    out.extend_from_slice(b",\"content\":[");
    match &r.tool_call {
        Some(call) => {
            out.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":\"");
            out.extend_from_slice(TOOL_USE_ID.as_bytes());
            out.extend_from_slice(b"\",\"name\":");
            write_string(&mut out, &call.name);
            out.extend_from_slice(b",\"input\":");
            out.extend_from_slice(call.arguments.as_bytes());
            out.push(b'}');
        }
        None => {
            out.extend_from_slice(b"{\"type\":\"text\",\"text\":");
            write_string(&mut out, &r.content);
            out.push(b'}');
        }
    }
    out.extend_from_slice(b"],\"stop_reason\":");
    write_string(&mut out, stop_reason(r));
    out.extend_from_slice(b",\"stop_sequence\":null,\"usage\":");
    usage_json(&mut out, r, r.completion_tokens());
    out.push(b'}');
    Bytes::from(out)
}

/// One named SSE event.
fn event(name: &str, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(name.len() + data.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The streamed message as whole SSE events: `message_start`, `content_block_start`, `ping`,
/// `chunks` × `content_block_delta` (`text_delta` or `input_json_delta`),
/// `content_block_stop`, `message_delta` (stop reason and output tokens), `message_stop`.
pub fn events(r: &Reply, chunks: usize) -> Vec<Bytes> {
    let pieces = split_pieces(r.streamed_text(), chunks.max(1));
    let mut out = Vec::with_capacity(pieces.len() + 6);

    let mut d = b"{\"type\":\"message_start\",\"message\":".to_vec();
    message_head(&mut d, r);
    d.extend_from_slice(b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":");
    usage_json(&mut d, r, 1);
    d.extend_from_slice(b"}}");
    out.push(event("message_start", &d));

    let mut d = b"{\"type\":\"content_block_start\",\"index\":0,\"content_block\":".to_vec();
    match &r.tool_call {
        Some(call) => {
            d.extend_from_slice(b"{\"type\":\"tool_use\",\"id\":\"");
            d.extend_from_slice(TOOL_USE_ID.as_bytes());
            d.extend_from_slice(b"\",\"name\":");
            write_string(&mut d, &call.name);
            d.extend_from_slice(b",\"input\":{}}}");
        }
        None => d.extend_from_slice(b"{\"type\":\"text\",\"text\":\"\"}}"),
    }
    out.push(event("content_block_start", &d));
    out.push(event("ping", b"{\"type\":\"ping\"}"));

    let (kind, field): (&[u8], &[u8]) = match r.tool_call {
        Some(_) => (b"input_json_delta", b"partial_json"),
        None => (b"text_delta", b"text"),
    };
    for p in pieces {
        let mut d =
            b"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"".to_vec();
        d.extend_from_slice(kind);
        d.extend_from_slice(b"\",\"");
        d.extend_from_slice(field);
        d.extend_from_slice(b"\":");
        write_string(&mut d, p);
        d.extend_from_slice(b"}}");
        out.push(event("content_block_delta", &d));
    }
    out.push(event(
        "content_block_stop",
        b"{\"type\":\"content_block_stop\",\"index\":0}",
    ));

    let mut d = b"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":".to_vec();
    write_string(&mut d, stop_reason(r));
    d.extend_from_slice(b",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
    write_u64(&mut d, r.completion_tokens());
    d.extend_from_slice(b"}}");
    out.push(event("message_delta", &d));
    out.push(event("message_stop", b"{\"type\":\"message_stop\"}"));
    out
}

/// The error `type` Anthropic gives an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

fn error_json(kind: &str, message: &str) -> Vec<u8> {
    let mut out = b"{\"type\":\"error\",\"error\":{\"type\":\"".to_vec();
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    write_string(&mut out, message);
    out.extend_from_slice(b"}}");
    out
}

/// An Anthropic-shaped error body: `{"type":"error","error":{"type":..,"message":..}}`.
pub fn error_body(status: u16, message: &str) -> Bytes {
    Bytes::from(error_json(error_type(status), message))
}

/// The in-band stream error: an `error` event with an `overloaded_error`.
pub fn stream_error(message: &str) -> Bytes {
    event("error", &error_json("overloaded_error", message))
}

/// Anthropic's context-window error: a 400 `invalid_request_error` "prompt is too long".
// Shape: Anthropic's API errors page (`{"type":"error","error":{"type","message"}}`); the
// message as the API words it.
pub fn context_window_error() -> Bytes {
    Bytes::from(error_json(
        "invalid_request_error",
        "prompt is too long: 210000 tokens > 200000 maximum",
    ))
}

/// Anthropic's content-filter error: Anthropic has no dedicated code, it answers a 400
/// `invalid_request_error` whose message says the output was blocked (the `refusal` knob gives
/// the other form, `stop_reason: "refusal"`).
// Shape: the 400 bodies reported in anthropics/claude-code issues (e.g. #43487).
pub fn content_policy_error() -> Bytes {
    Bytes::from(error_json(
        "invalid_request_error",
        "Output blocked by content filtering policy",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::test_util::parse_events;
    use crate::mock::{Knobs, MockUsage};
    use serde_json::{Value as Json, json};

    fn headers() -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(VERSION_HEADER, "2023-06-01".parse().unwrap());
        h
    }

    fn reply(body: &str) -> Reply {
        parse(&mut body.as_bytes().to_vec(), &headers()).unwrap()
    }

    const TOOLS: &str = r#""tools":[{"name":"search","description":"d","input_schema":{"type":"object"}},{"name":"weather","input_schema":{"type":"object"}}]"#;

    #[test]
    fn requires_the_version_header_and_max_tokens() {
        let ok = r#"{"model":"claude;chunks=2","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
        let err = parse(&mut ok.as_bytes().to_vec(), &http::HeaderMap::new()).unwrap_err();
        assert_eq!(err.0, "anthropic-version: header is required");
        let r = reply(ok);
        assert_eq!(r.model, "claude");
        assert_eq!(r.content, "This is a mock reply to: hi");
        for (body, msg) in [
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
                "max_tokens: Field required",
            ),
            (
                r#"{"model":"m","max_tokens":"x","messages":[]}"#,
                "max_tokens: Input should be a valid integer",
            ),
            (r#"{"max_tokens":1,"messages":[]}"#, "model: Field required"),
            (
                r#"{"model":"m","max_tokens":1}"#,
                "messages: Field required",
            ),
        ] {
            let e = parse(&mut body.as_bytes().to_vec(), &headers()).unwrap_err();
            assert_eq!(e.0, msg, "{body}");
        }
        assert!(parse(&mut b"{".to_vec(), &headers()).is_err());
    }

    #[test]
    fn text_message_and_stream() {
        let r = reply(
            r#"{"model":"claude","max_tokens":100,"stream":true,"system":[{"type":"text","text":"be brief"}],"messages":[{"role":"user","content":"first"},{"role":"assistant","content":"ok"},{"role":"user","content":[{"type":"text","text":"héllo"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"AAAA"}},{"type":"text","text":"wörld"},{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]}]}"#,
        );
        assert!(r.stream);
        assert_eq!(r.content, "This is a mock reply to: héllo wörld [2 images]");
        let v: Json = serde_json::from_slice(&message(&r)).unwrap();
        assert_eq!(v["id"], MESSAGE_ID);
        assert_eq!(v["type"], "message");
        assert_eq!(v["role"], "assistant");
        assert_eq!(v["model"], "claude");
        assert_eq!(v["content"], json!([{"type": "text", "text": r.content}]));
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(v["stop_sequence"], Json::Null);
        assert_eq!(
            v["usage"],
            json!({"input_tokens": r.prompt_tokens, "cache_creation_input_tokens": 0,
                   "cache_read_input_tokens": 0, "output_tokens": r.output_tokens()})
        );

        for n in [1, 3, 8, 100] {
            let events = events(&r, n);
            assert!(events.iter().all(|e| !e.ends_with(b"[DONE]\n\n")));
            let events = parse_events(&events);
            let names: Vec<_> = events.iter().map(|(n, _)| n.clone().unwrap()).collect();
            let mut want = vec!["message_start", "content_block_start", "ping"];
            want.extend(std::iter::repeat_n("content_block_delta", n));
            want.extend(["content_block_stop", "message_delta", "message_stop"]);
            assert_eq!(names, want);
            for (name, data) in &events {
                assert_eq!(Some(data["type"].as_str().unwrap()), name.as_deref());
            }
            let start = &events[0].1["message"];
            assert_eq!(start["content"], json!([]));
            assert_eq!(start["stop_reason"], Json::Null);
            assert_eq!(start["usage"]["input_tokens"], r.prompt_tokens);
            assert_eq!(start["usage"]["output_tokens"], 1);
            assert_eq!(
                events[1].1["content_block"],
                json!({"type": "text", "text": ""})
            );
            let text: String = events[3..3 + n]
                .iter()
                .map(|(_, d)| {
                    assert_eq!(d["delta"]["type"], "text_delta");
                    d["delta"]["text"].as_str().unwrap().to_owned()
                })
                .collect();
            assert_eq!(text, r.content);
            let delta = &events[n + 4].1;
            assert_eq!(
                delta["delta"],
                json!({"stop_reason": "end_turn", "stop_sequence": null})
            );
            assert_eq!(delta["usage"]["output_tokens"], r.output_tokens());
        }
    }

    #[test]
    fn tool_use_message_and_stream() {
        let r = reply(&format!(
            r#"{{"model":"m","max_tokens":5,{TOOLS},"tool_choice":{{"type":"auto"}},"messages":[{{"role":"user","content":"find cats"}}]}}"#
        ));
        let call = r.tool_call.clone().unwrap();
        assert_eq!(call.name, "search");
        let v: Json = serde_json::from_slice(&message(&r)).unwrap();
        assert_eq!(
            v["content"],
            json!([{"type": "tool_use", "id": TOOL_USE_ID, "name": "search",
                    "input": {"query": "find cats"}}])
        );
        assert_eq!(v["stop_reason"], "tool_use");

        for n in [1, 5, 60] {
            let events = parse_events(&events(&r, n));
            assert_eq!(
                events[1].1["content_block"],
                json!({"type": "tool_use", "id": TOOL_USE_ID, "name": "search", "input": {}})
            );
            let json_text: String = events[3..3 + n]
                .iter()
                .map(|(_, d)| {
                    assert_eq!(d["delta"]["type"], "input_json_delta");
                    d["delta"]["partial_json"].as_str().unwrap().to_owned()
                })
                .collect();
            let input: Json = serde_json::from_str(&json_text).unwrap();
            assert_eq!(input, json!({"query": "find cats"}));
            assert_eq!(events[n + 4].1["delta"]["stop_reason"], "tool_use");
        }

        let choose = |choice: &str| {
            reply(&format!(
                r#"{{"model":"m","max_tokens":5,{TOOLS},"tool_choice":{choice},"messages":[{{"role":"user","content":"x"}}]}}"#
            ))
            .tool_call
            .map(|c| c.name)
        };
        assert_eq!(
            choose(r#"{"type":"tool","name":"weather"}"#).as_deref(),
            Some("weather")
        );
        assert_eq!(choose(r#"{"type":"any"}"#).as_deref(), Some("search"));
        assert_eq!(choose(r#"{"type":"none"}"#), None);
    }

    #[test]
    fn answers_tool_results() {
        let r = reply(&format!(
            r#"{{"model":"m","max_tokens":5,{TOOLS},"messages":[{{"role":"user","content":"weather?"}},{{"role":"assistant","content":[{{"type":"tool_use","id":"toolu_mock_1","name":"search","input":{{"query":"weather?"}}}}]}},{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_mock_1","content":[{{"type":"text","text":"sunny"}},{{"type":"text","text":"21C"}}]}}]}}]}}"#
        ));
        assert!(r.tool_call.is_none());
        assert_eq!(r.content, "This is a mock reply to: tool result sunny 21C");
        let s = reply(
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"plain","is_error":true}]}]}"#,
        );
        assert_eq!(s.content, "This is a mock reply to: tool result plain");
    }

    #[test]
    fn usage_excludes_cache_reads_from_input_and_counts_thinking_as_output() {
        let mut r = reply(
            r#"{"model":"m","max_tokens":5,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"count these words"}]}"#,
        );
        let mut k = Knobs::default();
        k.set("cached_tokens", "10").unwrap();
        k.set("reasoning_tokens", "4").unwrap();
        r.apply_knobs(&k);
        let (p, o) = (r.prompt_tokens, r.output_tokens());
        let v: Json = serde_json::from_slice(&message(&r)).unwrap();
        assert_eq!(
            v["usage"],
            json!({"input_tokens": p - 10, "cache_creation_input_tokens": 0,
                   "cache_read_input_tokens": 10, "output_tokens": o + 4})
        );
        let events = parse_events(&events(&r, 2));
        assert_eq!(events[0].1["message"]["usage"]["input_tokens"], p - 10);
        assert_eq!(
            events[0].1["message"]["usage"]["cache_read_input_tokens"],
            10
        );
        assert_eq!(events[6].1["usage"]["output_tokens"], o + 4);
        assert_eq!(
            r.usage(),
            MockUsage {
                input_tokens: p,
                output_tokens: o + 4,
                cached_input_tokens: 10,
                reasoning_tokens: 4,
            }
        );
    }

    #[test]
    fn errors_are_anthropic_shaped() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (529, "overloaded_error"),
        ] {
            let v: Json = serde_json::from_slice(&error_body(status, "no \"way\"")).unwrap();
            assert_eq!(
                v,
                json!({"type": "error", "error": {"type": kind, "message": "no \"way\""}})
            );
        }
        let e = stream_error("gone");
        let events = parse_events(&[e]);
        assert_eq!(events[0].0.as_deref(), Some("error"));
        assert_eq!(events[0].1["error"]["type"], "overloaded_error");
        assert_eq!(events[0].1["error"]["message"], "gone");
    }
}
