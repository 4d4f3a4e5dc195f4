//! OpenAI chat completions: a request read into a [`Reply`], the reply rendered back whole or
//! as SSE chunks (text or one tool call), and OpenAI-shaped error bodies.

use bytes::Bytes;
use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use super::{MockError, Reply, Turn, split_pieces};
use crate::api::json::{write_string, write_u64};

/// Fixed `created` timestamp, so answers are byte-for-byte deterministic.
const CREATED: u64 = 1_700_000_000;
/// The id of the mock's tool call.
pub const TOOL_CALL_ID: &str = "call_mock_1";

impl Reply {
    /// Read an OpenAI chat request body (parsed with simd-json; `body` is a scratch copy it
    /// may modify). The reply echoes the last user message's text, answers a trailing `tool`
    /// message, or calls the first declared tool (see [`Turn`]).
    pub fn from_request(body: &mut [u8]) -> Result<Self, MockError> {
        let len = body.len();
        let v = simd_json::to_borrowed_value(body)
            .map_err(|e| MockError(format!("invalid JSON: {e}")))?;
        let model = v
            .get_str("model")
            .ok_or_else(|| MockError("you must provide a model parameter".into()))?;
        let model = super::base_model(model);
        let messages = v
            .get_array("messages")
            .ok_or_else(|| MockError("you must provide a messages parameter".into()))?;
        let mut reply = Self::new(
            model,
            v.get_bool("stream").unwrap_or(false),
            len,
            turn(messages, &v),
        );
        reply.include_usage = v
            .get("stream_options")
            .and_then(|o| o.get_bool("include_usage"))
            .unwrap_or(false);
        Ok(reply)
    }

    fn usage_json(&self, out: &mut Vec<u8>) {
        let completion = self.completion_tokens();
        out.extend_from_slice(b"{\"prompt_tokens\":");
        write_u64(out, self.prompt_tokens);
        out.extend_from_slice(b",\"completion_tokens\":");
        write_u64(out, completion);
        out.extend_from_slice(b",\"total_tokens\":");
        write_u64(out, self.prompt_tokens + completion);
        // The details objects appear only when their count is not zero.
        if self.cached_tokens > 0 {
            out.extend_from_slice(b",\"prompt_tokens_details\":{\"cached_tokens\":");
            write_u64(out, self.cached_tokens);
            out.push(b'}');
        }
        if self.reasoning_tokens > 0 {
            out.extend_from_slice(b",\"completion_tokens_details\":{\"reasoning_tokens\":");
            write_u64(out, self.reasoning_tokens);
            out.push(b'}');
        }
        out.push(b'}');
    }

    fn head(&self, out: &mut Vec<u8>, object: &str) {
        out.extend_from_slice(b"{\"id\":\"chatcmpl-mock\",\"object\":\"");
        out.extend_from_slice(object.as_bytes());
        out.extend_from_slice(format!("\",\"created\":{CREATED},\"model\":").as_bytes());
        write_string(out, &self.model);
        out.extend_from_slice(b",\"system_fingerprint\":\"shardgate-mock\"");
    }

    fn openai_finish(&self) -> &str {
        self.finish_or(if self.tool_call.is_some() {
            "tool_calls"
        } else {
            "stop"
        })
    }

    /// The whole (non-streamed) OpenAI answer.
    pub fn completion(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.content.len() + 400);
        self.head(&mut out, "chat.completion");
        out.extend_from_slice(
            b",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":",
        );
        match &self.tool_call {
            Some(call) => {
                out.extend_from_slice(b"null,\"tool_calls\":[{\"id\":\"");
                out.extend_from_slice(TOOL_CALL_ID.as_bytes());
                out.extend_from_slice(b"\",\"type\":\"function\",\"function\":{\"name\":");
                write_string(&mut out, &call.name);
                out.extend_from_slice(b",\"arguments\":");
                write_string(&mut out, &call.arguments);
                out.extend_from_slice(b"}}]");
            }
            None => write_string(&mut out, &self.content),
        }
        out.extend_from_slice(b",\"refusal\":null},\"logprobs\":null,\"finish_reason\":");
        write_string(&mut out, self.openai_finish());
        out.extend_from_slice(b"}],\"usage\":");
        self.usage_json(&mut out);
        out.push(b'}');
        Bytes::from(out)
    }

    fn chunk(&self, delta: &[u8], finish: Option<&str>) -> Bytes {
        let mut out = Vec::with_capacity(delta.len() + 300);
        out.extend_from_slice(b"data: ");
        self.head(&mut out, "chat.completion.chunk");
        out.extend_from_slice(b",\"choices\":[{\"index\":0,\"delta\":");
        out.extend_from_slice(delta);
        out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
        match finish {
            Some(f) => write_string(&mut out, f),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}]}\n\n");
        Bytes::from(out)
    }

    /// The streamed OpenAI answer as whole SSE events: a role event (which opens the tool
    /// call, for a tool call), `chunks` content (or arguments) events, a finish event, a usage
    /// event (when asked for), and `[DONE]`.
    pub fn events(&self, chunks: usize) -> Vec<Bytes> {
        let pieces = split_pieces(self.streamed_text(), chunks.max(1));
        let mut out = Vec::with_capacity(pieces.len() + 4);
        match &self.tool_call {
            Some(call) => {
                let mut d = b"{\"role\":\"assistant\",\"content\":null,".to_vec();
                d.extend_from_slice(b"\"tool_calls\":[{\"index\":0,\"id\":\"");
                d.extend_from_slice(TOOL_CALL_ID.as_bytes());
                d.extend_from_slice(b"\",\"type\":\"function\",\"function\":{\"name\":");
                write_string(&mut d, &call.name);
                d.extend_from_slice(b",\"arguments\":\"\"}}]}");
                out.push(self.chunk(&d, None));
            }
            None => out.push(self.chunk(b"{\"role\":\"assistant\",\"content\":\"\"}", None)),
        }
        for p in pieces {
            let mut d = Vec::with_capacity(p.len() + 64);
            if self.tool_call.is_some() {
                d.extend_from_slice(b"{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":");
                write_string(&mut d, p);
                d.extend_from_slice(b"}}]}");
            } else {
                d.extend_from_slice(b"{\"content\":");
                write_string(&mut d, p);
                d.push(b'}');
            }
            out.push(self.chunk(&d, None));
        }
        out.push(self.chunk(b"{}", Some(self.openai_finish())));
        if self.include_usage {
            let mut u = b"data: ".to_vec();
            self.head(&mut u, "chat.completion.chunk");
            u.extend_from_slice(b",\"choices\":[],\"usage\":");
            self.usage_json(&mut u);
            u.extend_from_slice(b"}\n\n");
            out.push(Bytes::from(u));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }
}

/// What the last turn asks: the last user message's text and `image_url` parts, a trailing
/// `tool` message's content, or a call to the first declared (or forced) tool.
fn turn(messages: &[Value<'_>], req: &Value<'_>) -> Turn {
    let mut t = Turn::default();
    if let Some(user) = messages.iter().rfind(|m| m.get_str("role") == Some("user")) {
        t.text = content_text(user.get("content"));
        t.images = user.get_array("content").map_or(0, |parts| {
            parts
                .iter()
                .filter(|p| p.get_str("type") == Some("image_url"))
                .count()
        });
    }
    let last = messages.last();
    match last.and_then(|m| m.get_str("role")) {
        Some("tool") => t.tool_result = Some(content_text(last.and_then(|m| m.get("content")))),
        Some("user") => t.call_tool = tool_to_call(req),
        _ => {}
    }
    t
}

/// A message's text: string content, or its parts' texts joined with " ".
fn content_text(content: Option<&Value<'_>>) -> String {
    match content {
        Some(c) if c.is_str() => c.as_str().unwrap_or_default().to_owned(),
        Some(c) => c
            .as_array()
            .map(|parts| {
                parts
                    .iter()
                    .filter_map(|p| p.get_str("text"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
        None => String::new(),
    }
}

/// The tool to call: the one `tool_choice` forces, else the first declared; none when no
/// tool is declared or `tool_choice` is `"none"`.
fn tool_to_call(req: &Value<'_>) -> Option<String> {
    let first = req
        .get_array("tools")?
        .iter()
        .find_map(|t| t.get("function")?.get_str("name"))?;
    let name = match req.get("tool_choice") {
        Some(c) if c.as_str() == Some("none") => return None,
        Some(c) => c
            .get("function")
            .and_then(|f| f.get_str("name"))
            .unwrap_or(first),
        None => first,
    };
    Some(name.to_owned())
}

/// An OpenAI-shaped error body.
pub fn error_body(status: u16, message: &str) -> Bytes {
    let mut out = b"{\"error\":{\"message\":".to_vec();
    write_string(&mut out, message);
    let kind = match status {
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    out.extend_from_slice(
        format!(",\"type\":\"{kind}\",\"param\":null,\"code\":\"mock_{status}\"}}}}").as_bytes(),
    );
    Bytes::from(out)
}

/// OpenAI's context-window error (400, code `context_length_exceeded`).
// Shape: OpenAI's chat completions 400 as its SDKs surface it (`BadRequestError`, code
// `context_length_exceeded`, param `messages`).
pub fn context_window_error() -> Bytes {
    Bytes::from_static(
        b"{\"error\":{\"message\":\"This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens. Please reduce the length of the messages.\",\"type\":\"invalid_request_error\",\"param\":\"messages\",\"code\":\"context_length_exceeded\"}}",
    )
}

/// OpenAI's content-policy error (400, code `content_policy_violation`).
// Shape: OpenAI's safety-system rejection (`content_policy_violation`, type
// `invalid_request_error`, param null), as relayed in one-api issue #737.
pub fn content_policy_error() -> Bytes {
    Bytes::from_static(
        b"{\"error\":{\"message\":\"Your request was rejected as a result of our safety system. Your prompt may contain text that is not allowed by our safety system.\",\"type\":\"invalid_request_error\",\"param\":null,\"code\":\"content_policy_violation\"}}",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::Knobs;
    use crate::mock::test_util::parse_events;
    use serde_json::{Value as Json, json};

    fn reply(body: &str) -> Reply {
        Reply::from_request(&mut body.as_bytes().to_vec()).unwrap()
    }

    fn knobs(pairs: &[(&str, &str)]) -> Knobs {
        let mut k = Knobs::default();
        for (key, v) in pairs {
            k.set(key, v).unwrap();
        }
        k
    }

    const TOOLS: &str = r#""tools":[{"type":"function","function":{"name":"search","parameters":{}}},{"type":"function","function":{"name":"weather"}}]"#;

    #[test]
    fn echoes_the_last_user_message() {
        let r = reply(
            r#"{"model":"mock;chunks=2","messages":[{"role":"user","content":"first"},{"role":"assistant","content":"x"},{"role":"user","content":[{"type":"text","text":"hi there"}]}]}"#,
        );
        assert_eq!(r.model, "mock");
        assert_eq!(r.content, "This is a mock reply to: hi there");
        assert_eq!(r.completion_tokens(), 8);
        let v: Json = serde_json::from_slice(&r.completion()).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], r.content);
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["completion_tokens"], 8);
        assert_eq!(v["usage"]["total_tokens"], r.prompt_tokens + 8);
        assert!(v["usage"].get("prompt_tokens_details").is_none());
    }

    #[test]
    fn counts_images_in_the_last_user_message() {
        let img = r#"{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}"#;
        let one = reply(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"text","text":"look"}},{img}]}}]}}"#
        ));
        assert_eq!(one.content, "This is a mock reply to: look [1 image]");
        let two = reply(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":[{img},{{"type":"text","text":"a"}},{img},{{"type":"text","text":"b"}}]}}]}}"#
        ));
        assert_eq!(two.content, "This is a mock reply to: a b [2 images]");
    }

    #[test]
    fn stream_reassembles_to_the_content() {
        let mut r = reply(
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"héllo wörld, a longer text"}]}"#,
        );
        assert!(r.stream && r.include_usage);
        for n in [1, 3, 8, 100] {
            let events = r.events(n);
            assert_eq!(&events[events.len() - 1][..], b"data: [DONE]\n\n");
            let mut text = String::new();
            let mut usage = None;
            for (_, v) in parse_events(&events) {
                if let Some(c) = v["choices"]
                    .get(0)
                    .and_then(|c| c["delta"]["content"].as_str())
                {
                    text.push_str(c);
                }
                if v["usage"].is_object() {
                    usage = Some(v["usage"]["completion_tokens"].as_u64().unwrap());
                }
            }
            assert_eq!(text, r.content, "chunks={n}");
            assert_eq!(usage, Some(r.completion_tokens()));
        }
        r.include_usage = false;
        assert!(
            parse_events(&r.events(2))
                .iter()
                .all(|(_, v)| v["usage"].is_null())
        );
    }

    #[test]
    fn calls_the_first_tool_and_streams_its_arguments() {
        let r = reply(&format!(
            r#"{{"model":"m",{TOOLS},"messages":[{{"role":"user","content":"find \"cats\""}}]}}"#
        ));
        assert_eq!(r.content, "");
        let call = r.tool_call.clone().unwrap();
        assert_eq!(call.name, "search");
        let args: Json = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(args, json!({"query": "find \"cats\""}));
        assert_eq!(r.output_tokens(), 2);

        let v: Json = serde_json::from_slice(&r.completion()).unwrap();
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Json::Null);
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": TOOL_CALL_ID, "type": "function",
                    "function": {"name": "search", "arguments": call.arguments}}])
        );
        assert_eq!(v["usage"]["completion_tokens"], 2);

        for n in [1, 4, 50] {
            let events = parse_events(&r.events(n));
            let first = &events[0].1["choices"][0]["delta"];
            assert_eq!(first["role"], "assistant");
            assert_eq!(first["content"], Json::Null);
            assert_eq!(first["tool_calls"][0]["id"], TOOL_CALL_ID);
            assert_eq!(first["tool_calls"][0]["function"]["name"], "search");
            assert_eq!(first["tool_calls"][0]["function"]["arguments"], "");
            let mut args = String::new();
            for (_, e) in &events[1..=n] {
                let tc = &e["choices"][0]["delta"]["tool_calls"][0];
                assert_eq!(tc["index"], 0);
                args.push_str(tc["function"]["arguments"].as_str().unwrap());
            }
            assert_eq!(args, call.arguments);
            assert_eq!(events[n + 1].1["choices"][0]["finish_reason"], "tool_calls");
        }
    }

    #[test]
    fn tool_choice_forces_or_disables_the_call() {
        let ask = |choice: &str| {
            reply(&format!(
                r#"{{"model":"m",{TOOLS},"tool_choice":{choice},"messages":[{{"role":"user","content":"hi"}}]}}"#
            ))
        };
        let forced = ask(r#"{"type":"function","function":{"name":"weather"}}"#);
        assert_eq!(forced.tool_call.unwrap().name, "weather");
        assert_eq!(ask(r#""required""#).tool_call.unwrap().name, "search");
        let none = ask(r#""none""#);
        assert!(none.tool_call.is_none());
        assert_eq!(none.content, "This is a mock reply to: hi");
    }

    #[test]
    fn answers_a_tool_result() {
        let r = reply(&format!(
            r#"{{"model":"m",{TOOLS},"messages":[{{"role":"user","content":"weather?"}},{{"role":"assistant","content":null,"tool_calls":[{{"id":"call_mock_1","type":"function","function":{{"name":"search","arguments":"{{}}"}}}}]}},{{"role":"tool","tool_call_id":"call_mock_1","content":"sunny, 21C"}}]}}"#
        ));
        assert!(r.tool_call.is_none());
        assert_eq!(r.content, "This is a mock reply to: tool result sunny, 21C");
        let parts = reply(
            r#"{"model":"m","messages":[{"role":"tool","tool_call_id":"x","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
        );
        assert_eq!(parts.content, "This is a mock reply to: tool result a b");
    }

    #[test]
    fn usage_reports_cached_and_reasoning_tokens() {
        let mut r = reply(
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"count me please"}]}"#,
        );
        let p = r.prompt_tokens;
        r.apply_knobs(&knobs(&[
            ("cached_tokens", "1000000"),
            ("reasoning_tokens", "7"),
        ]));
        assert_eq!(r.cached_tokens, p, "cached tokens are capped at the prompt");
        let o = r.output_tokens();
        let check = |u: &Json| {
            assert_eq!(u["prompt_tokens"], p);
            assert_eq!(u["completion_tokens"], o + 7);
            assert_eq!(u["total_tokens"], p + o + 7);
            assert_eq!(u["prompt_tokens_details"]["cached_tokens"], p);
            assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 7);
        };
        let v: Json = serde_json::from_slice(&r.completion()).unwrap();
        check(&v["usage"]);
        let events = parse_events(&r.events(3));
        check(&events.last().unwrap().1["usage"]);
        assert_eq!(
            r.usage(),
            crate::mock::MockUsage {
                input_tokens: p,
                output_tokens: o + 7,
                cached_input_tokens: p,
                reasoning_tokens: 7,
            }
        );
    }

    #[test]
    fn finish_knob_overrides_the_finish_reason() {
        let mut r = reply(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#);
        r.apply_knobs(&knobs(&[("finish", "length")]));
        let v: Json = serde_json::from_slice(&r.completion()).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn error_bodies_are_openai_shaped() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (429, "rate_limit_error"),
            (503, "server_error"),
        ] {
            let v: Json = serde_json::from_slice(&error_body(status, "boom \"x\"")).unwrap();
            assert_eq!(v["error"]["message"], "boom \"x\"");
            assert_eq!(v["error"]["type"], kind);
            assert_eq!(v["error"]["code"], format!("mock_{status}"));
        }
    }

    #[test]
    fn bad_requests_are_errors() {
        for b in ["{", r#"{"messages":[]}"#, r#"{"model":"m"}"#] {
            assert!(
                Reply::from_request(&mut b.as_bytes().to_vec()).is_err(),
                "{b}"
            );
        }
    }
}
