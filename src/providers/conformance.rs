//! The provider conformance suite: every kind passes the same cases, driven by answers
//! recorded from each provider's public API documentation (`tests/fixtures/<kind>/`).
//!
//! Each case reads a fixture twice: once with a small oracle written here against plain
//! `serde_json` values (what the documentation says the answer means), and once through the
//! gateway's own path ([`Answer::whole`] / [`Answer::transcode`]) into each client dialect,
//! whose output is read back with that dialect's oracle. The two must agree on the text,
//! every tool call (name and arguments, parsed), the finish reason and the usage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use serde_json::Value;

use super::Dialect;
use super::call::{Answer, provider_message};
use crate::api::Usage;
use crate::config::ProviderKind;

/// What an answer means, independent of its dialect.
#[derive(Debug, Clone, Default, PartialEq)]
struct Meaning {
    text: String,
    tools: Vec<(String, Value)>,
    finish: String,
    usage: Option<Usage>,
}

fn fixture(kind: &str, name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/{kind}/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn data_events(sse: &[u8]) -> Vec<Value> {
    crate::api::sse::data_payloads(sse)
        .filter(|d| **d != *b"[DONE]")
        .map(|d| {
            serde_json::from_slice(&d)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&d)))
        })
        .collect()
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Finish reasons in one vocabulary: OpenAI's.
fn finish_of(kind: &str, raw: &str, tools: bool) -> String {
    match (kind, raw) {
        ("anthropic", "end_turn" | "stop_sequence" | "pause_turn") => "stop",
        ("anthropic", "max_tokens") => "length",
        ("anthropic", "tool_use") => "tool_calls",
        ("anthropic", "refusal") => "content_filter",
        ("gemini", "MAX_TOKENS") => "length",
        ("gemini", "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII") => {
            "content_filter"
        }
        ("gemini", _) if tools => "tool_calls",
        ("gemini", _) => "stop",
        (_, other) => other,
    }
    .to_owned()
}

fn openai_usage(u: &Value) -> Usage {
    Usage {
        input_tokens: n(&u["prompt_tokens"]),
        output_tokens: n(&u["completion_tokens"]),
        cached_input_tokens: n(&u["prompt_tokens_details"]["cached_tokens"]),
        reasoning_tokens: n(&u["completion_tokens_details"]["reasoning_tokens"]),
    }
}

fn anthropic_usage(u: &Value) -> Usage {
    Usage {
        input_tokens: n(&u["input_tokens"])
            + n(&u["cache_read_input_tokens"])
            + n(&u["cache_creation_input_tokens"]),
        output_tokens: n(&u["output_tokens"]),
        cached_input_tokens: n(&u["cache_read_input_tokens"]),
        reasoning_tokens: 0,
    }
}

fn gemini_usage(u: &Value) -> Usage {
    Usage {
        input_tokens: n(&u["promptTokenCount"]),
        output_tokens: n(&u["candidatesTokenCount"]) + n(&u["thoughtsTokenCount"]),
        cached_input_tokens: n(&u["cachedContentTokenCount"]),
        reasoning_tokens: n(&u["thoughtsTokenCount"]),
    }
}

fn args(s: &str) -> Value {
    if s.is_empty() {
        return Value::Object(Default::default());
    }
    // Not JSON (the property tests' arbitrary pieces): compared as text.
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_owned()))
}

/// The oracle for a whole answer.
fn whole_meaning(kind: &str, v: &Value) -> Meaning {
    let mut m = Meaning::default();
    match kind {
        "openai" => {
            let msg = &v["choices"][0]["message"];
            m.text = msg["content"].as_str().unwrap_or_default().to_owned();
            for c in msg["tool_calls"].as_array().into_iter().flatten() {
                m.tools.push((
                    c["function"]["name"].as_str().unwrap().to_owned(),
                    args(c["function"]["arguments"].as_str().unwrap()),
                ));
            }
            m.finish = v["choices"][0]["finish_reason"]
                .as_str()
                .unwrap()
                .to_owned();
            m.usage = v.get("usage").filter(|u| u.is_object()).map(openai_usage);
        }
        "anthropic" => {
            for b in v["content"].as_array().unwrap() {
                match b["type"].as_str().unwrap() {
                    "text" => m.text.push_str(b["text"].as_str().unwrap()),
                    "tool_use" => m
                        .tools
                        .push((b["name"].as_str().unwrap().to_owned(), b["input"].clone())),
                    _ => {}
                }
            }
            m.finish = finish_of(kind, v["stop_reason"].as_str().unwrap(), false);
            m.usage = v.get("usage").map(anthropic_usage);
        }
        "gemini" => {
            let c = &v["candidates"][0];
            for p in c["content"]["parts"].as_array().into_iter().flatten() {
                if let Some(t) = p["text"].as_str() {
                    m.text.push_str(t);
                }
                if p.get("functionCall").is_some() {
                    let f = &p["functionCall"];
                    m.tools
                        .push((f["name"].as_str().unwrap().to_owned(), f["args"].clone()));
                }
            }
            m.finish = finish_of(
                kind,
                c["finishReason"].as_str().unwrap_or("STOP"),
                !m.tools.is_empty(),
            );
            m.usage = v.get("usageMetadata").map(gemini_usage);
        }
        _ => unreachable!(),
    }
    m
}

/// The oracle for a stream.
fn stream_meaning(kind: &str, sse: &[u8]) -> Meaning {
    let mut m = Meaning::default();
    let mut tool_args: Vec<String> = Vec::new();
    let mut raw_finish = String::new();
    match kind {
        "openai" => {
            for e in data_events(sse) {
                if let Some(u) = e.get("usage").filter(|u| u.is_object()) {
                    m.usage = Some(openai_usage(u));
                }
                let Some(c) = e["choices"].get(0) else {
                    continue;
                };
                m.text
                    .push_str(c["delta"]["content"].as_str().unwrap_or_default());
                for t in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                    let i = n(&t["index"]) as usize;
                    if let Some(name) = t["function"]["name"].as_str() {
                        m.tools.push((name.to_owned(), Value::Null));
                        tool_args.push(String::new());
                    }
                    tool_args[i].push_str(t["function"]["arguments"].as_str().unwrap_or_default());
                }
                if let Some(f) = c["finish_reason"].as_str() {
                    raw_finish = f.to_owned();
                }
            }
        }
        "anthropic" => {
            let mut blocks = std::collections::HashMap::new();
            for e in data_events(sse) {
                match e["type"].as_str().unwrap() {
                    "message_start" => m.usage = Some(anthropic_usage(&e["message"]["usage"])),
                    "content_block_start" if e["content_block"]["type"] == "tool_use" => {
                        blocks.insert(n(&e["index"]), tool_args.len());
                        m.tools.push((
                            e["content_block"]["name"].as_str().unwrap().to_owned(),
                            Value::Null,
                        ));
                        tool_args.push(String::new());
                    }
                    "content_block_delta" => match e["delta"]["type"].as_str().unwrap() {
                        "text_delta" => m.text.push_str(e["delta"]["text"].as_str().unwrap()),
                        "input_json_delta" => tool_args[blocks[&n(&e["index"])]]
                            .push_str(e["delta"]["partial_json"].as_str().unwrap()),
                        _ => {}
                    },
                    "message_delta" => {
                        raw_finish = e["delta"]["stop_reason"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        let mut u = m.usage.unwrap_or_default();
                        let d = &e["usage"];
                        u.output_tokens = n(&d["output_tokens"]);
                        if d.get("input_tokens").is_some() {
                            u = anthropic_usage(d);
                        }
                        m.usage = Some(u);
                    }
                    _ => {}
                }
            }
        }
        "gemini" => {
            for e in data_events(sse) {
                let c = &e["candidates"][0];
                for p in c["content"]["parts"].as_array().into_iter().flatten() {
                    m.text.push_str(p["text"].as_str().unwrap_or_default());
                    if p.get("functionCall").is_some() {
                        m.tools.push((
                            p["functionCall"]["name"].as_str().unwrap().to_owned(),
                            Value::Null,
                        ));
                        tool_args.push(p["functionCall"]["args"].to_string());
                    }
                }
                if let Some(f) = c["finishReason"].as_str() {
                    raw_finish = f.to_owned();
                }
                if let Some(u) = e.get("usageMetadata") {
                    m.usage = Some(gemini_usage(u));
                }
            }
        }
        _ => unreachable!(),
    }
    for (t, a) in m.tools.iter_mut().zip(&tool_args) {
        t.1 = args(a);
    }
    m.finish = finish_of(kind, &raw_finish, !m.tools.is_empty());
    m
}

fn kind_of(name: &str) -> ProviderKind {
    match name {
        "openai" => ProviderKind::OpenAi,
        "anthropic" => ProviderKind::Anthropic,
        _ => ProviderKind::Gemini,
    }
}

/// Every way a `kind` answer can reach a client: pass-through for its own dialect, else
/// translated.
fn answers(kind: &str) -> Vec<(&'static str, Answer)> {
    let k = kind_of(kind);
    [
        (Dialect::OpenAi, "openai"),
        (Dialect::Anthropic, "anthropic"),
    ]
    .into_iter()
    .map(|(dialect, name)| {
        let answer = if Dialect::of_kind(k) == Some(dialect) {
            Answer::Pass {
                dialect,
                strip_usage: false,
            }
        } else {
            Answer::Translate {
                from: k,
                to: dialect,
                model: "public-model".into(),
                include_usage: true,
            }
        };
        (name, answer)
    })
    .collect()
}

/// Whole answers: each client dialect reads the same meaning.
pub(super) fn whole(kind: &str, file: &str) {
    let body = fixture(kind, file);
    let want = whole_meaning(kind, &serde_json::from_slice(&body).unwrap());
    assert!(
        !want.text.is_empty() || !want.tools.is_empty(),
        "{kind}/{file}: empty oracle"
    );
    for (dialect, answer) in answers(kind) {
        let (out, usage) = answer.whole(Bytes::from(body.clone())).unwrap();
        let got = whole_meaning(dialect, &serde_json::from_slice(&out).unwrap());
        assert_eq!(got.text, want.text, "{kind}/{file} → {dialect}");
        assert_eq!(got.tools, want.tools, "{kind}/{file} → {dialect}");
        assert_eq!(got.finish, want.finish, "{kind}/{file} → {dialect}");
        assert_eq!(
            usage, want.usage,
            "{kind}/{file} → {dialect}: accounted usage"
        );
        if let Some(u) = want.usage {
            assert_eq!(
                got.usage,
                Some(u),
                "{kind}/{file} → {dialect}: client usage"
            );
        }
    }
}

/// Streams, split into reads at every `step` bytes: each client dialect reads the same
/// meaning, and the stream ends cleanly.
pub(super) fn stream(kind: &str, file: &str, step: usize) {
    let sse = fixture(kind, file);
    let want = stream_meaning(kind, &sse);
    for (dialect, answer) in answers(kind) {
        let t = answer.transcode(
            sse.chunks(step)
                .map(Bytes::copy_from_slice)
                .collect::<Vec<_>>(),
        );
        assert!(t.complete, "{kind}/{file} → {dialect}: incomplete");
        let out = t.bytes();
        if matches!(answer, Answer::Pass { .. }) {
            assert_eq!(out, sse, "{kind}/{file}: pass-through changes no byte");
        }
        let got = stream_meaning(dialect, &out);
        assert_eq!(got.text, want.text, "{kind}/{file} → {dialect}");
        assert_eq!(got.tools, want.tools, "{kind}/{file} → {dialect}");
        assert_eq!(got.finish, want.finish, "{kind}/{file} → {dialect}");
        assert_eq!(
            t.usage, want.usage,
            "{kind}/{file} → {dialect}: accounted usage"
        );
        if want.usage.is_some() && !matches!(answer, Answer::Pass { .. }) {
            assert_eq!(
                got.usage, want.usage,
                "{kind}/{file} → {dialect}: client usage"
            );
        }
    }
}

/// A stream cut mid-event, or carrying a malformed event, ends with exactly one error event
/// in the client's dialect, after which nothing is sent.
pub(super) fn broken(kind: &str, file: &str) {
    let sse = fixture(kind, file);
    for (dialect, answer) in answers(kind) {
        let passes = matches!(answer, Answer::Pass { .. });
        let t = answer.transcode([Bytes::from(sse.clone())]);
        let out = t.bytes();
        let events = data_events_lossy(&out);
        let last = events
            .last()
            .unwrap_or_else(|| panic!("{kind}/{file} → {dialect}: no events"));
        if file.starts_with("malformed") && passes {
            // Relayed untouched: the client's SDK sees the provider's own bytes.
            assert!(out.starts_with(&sse[..sse.len() / 2]), "{kind}/{file}");
            continue;
        }
        assert!(!t.complete, "{kind}/{file} → {dialect}: reported complete");
        let is_error = match dialect {
            "openai" => last.get("error").is_some(),
            _ => last["type"] == "error",
        };
        assert!(is_error, "{kind}/{file} → {dialect}: last event {last}");
        let errors = events
            .iter()
            .filter(|e| e.get("error").is_some() && (dialect == "openai" || e["type"] == "error"))
            .count();
        assert_eq!(errors, 1, "{kind}/{file} → {dialect}: one error event");
        let text = String::from_utf8_lossy(&out);
        assert!(
            !text.contains("[DONE]") && !text.contains("message_stop"),
            "{kind}/{file} → {dialect}"
        );
    }
}

fn data_events_lossy(sse: &[u8]) -> Vec<Value> {
    crate::api::sse::data_payloads(sse)
        .filter_map(|d| serde_json::from_slice(&d).ok())
        .collect()
}

/// Documented error bodies give up their message.
pub(super) fn error_bodies(kind: &str) {
    for file in ["error_429.json", "error_500.json"] {
        let m = provider_message(&fixture(kind, file));
        assert!(m.is_some_and(|m| !m.is_empty()), "{kind}/{file}");
    }
}

macro_rules! conformance {
    ($($kind:ident),*) => {$(
        mod $kind {
            #[test]
            fn plain() {
                super::whole(stringify!($kind), "plain.json");
            }
            #[test]
            fn tool_call() {
                super::whole(stringify!($kind), "tool_call.json");
            }
            #[test]
            fn stream_in_any_reads() {
                for step in [1, 7, 64, usize::MAX] {
                    super::stream(stringify!($kind), "stream.sse", step);
                }
            }
            #[test]
            fn tool_call_stream_in_any_reads() {
                for step in [1, 13, usize::MAX] {
                    super::stream(stringify!($kind), "tool_call_stream.sse", step);
                }
            }
            #[test]
            fn malformed_chunk() {
                super::broken(stringify!($kind), "malformed_stream.sse");
            }
            #[test]
            fn cut_stream() {
                super::broken(stringify!($kind), "cut_stream.sse");
            }
            #[test]
            fn error_bodies() {
                super::error_bodies(stringify!($kind));
            }
        }
    )*};
}

conformance!(openai, anthropic, gemini);

#[test]
fn anthropic_thinking_reaches_openai_clients_as_reasoning() {
    let sse = fixture("anthropic", "thinking_stream.sse");
    let answer = Answer::Translate {
        from: ProviderKind::Anthropic,
        to: Dialect::OpenAi,
        model: "m".into(),
        include_usage: false,
    };
    let t = answer.transcode([Bytes::from(sse.clone())]);
    assert!(t.complete);
    let mut thinking = String::new();
    let mut reasoning = String::new();
    for e in data_events(&sse) {
        if e["delta"]["type"] == "thinking_delta" {
            thinking.push_str(e["delta"]["thinking"].as_str().unwrap());
        }
    }
    for e in data_events(&t.bytes()) {
        if let Some(r) = e["choices"][0]["delta"]["reasoning_content"].as_str() {
            reasoning.push_str(r);
        }
    }
    assert!(!thinking.is_empty());
    assert_eq!(reasoning, thinking);
}

#[test]
fn gemini_safety_block_is_a_content_filter_finish() {
    let body = fixture("gemini", "safety.json");
    for (dialect, answer) in answers("gemini") {
        let (out, _) = answer.whole(Bytes::from(body.clone())).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let finish = match dialect {
            "openai" => v["choices"][0]["finish_reason"].clone(),
            _ => v["stop_reason"].clone(),
        };
        let want = if dialect == "openai" {
            "content_filter"
        } else {
            "refusal"
        };
        assert_eq!(finish, want, "{dialect}: {v}");
    }
}

/// A stream in `kind`'s format carrying these text pieces, then one tool call whose
/// arguments arrive in these pieces (Gemini sends a call whole, so its arguments are one
/// JSON object built from the pieces).
fn synthetic_stream(kind: &str, text: &[String], arg_pieces: &[String]) -> Vec<u8> {
    let mut out = String::new();
    let mut data = |event: Option<&str>, v: Value| {
        if let Some(e) = event {
            out.push_str(&format!("event: {e}\n"));
        }
        out.push_str(&format!("data: {v}\n\n"));
    };
    match kind {
        "openai" => {
            let chunk = |delta: Value, finish: Value| {
                serde_json::json!({"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
                    "choices":[{"index":0,"delta":delta,"finish_reason":finish}]})
            };
            data(
                None,
                chunk(
                    serde_json::json!({"role":"assistant","content":""}),
                    Value::Null,
                ),
            );
            for t in text {
                data(None, chunk(serde_json::json!({"content": t}), Value::Null));
            }
            data(
                None,
                chunk(
                    serde_json::json!({"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}),
                    Value::Null,
                ),
            );
            for a in arg_pieces {
                data(
                    None,
                    chunk(
                        serde_json::json!({"tool_calls":[{"index":0,"function":{"arguments":a}}]}),
                        Value::Null,
                    ),
                );
            }
            data(
                None,
                chunk(serde_json::json!({}), Value::from("tool_calls")),
            );
            data(
                None,
                serde_json::json!({"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}),
            );
            out.push_str("data: [DONE]\n\n");
        }
        "anthropic" => {
            data(
                Some("message_start"),
                serde_json::json!({"type":"message_start","message":{"id":"msg","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"usage":{"input_tokens":3,"output_tokens":1}}}),
            );
            data(
                Some("content_block_start"),
                serde_json::json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
            );
            for t in text {
                data(
                    Some("content_block_delta"),
                    serde_json::json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":t}}),
                );
            }
            data(
                Some("content_block_stop"),
                serde_json::json!({"type":"content_block_stop","index":0}),
            );
            data(
                Some("content_block_start"),
                serde_json::json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}),
            );
            for a in arg_pieces {
                data(
                    Some("content_block_delta"),
                    serde_json::json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":a}}),
                );
            }
            data(
                Some("content_block_stop"),
                serde_json::json!({"type":"content_block_stop","index":1}),
            );
            data(
                Some("message_delta"),
                serde_json::json!({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":4}}),
            );
            data(
                Some("message_stop"),
                serde_json::json!({"type":"message_stop"}),
            );
        }
        _ => {
            for t in text {
                data(
                    None,
                    serde_json::json!({"candidates":[{"content":{"role":"model","parts":[{"text":t}]},"index":0}]}),
                );
            }
            let args: serde_json::Map<String, Value> = arg_pieces
                .iter()
                .enumerate()
                .map(|(i, a)| (format!("k{i}"), Value::from(a.as_str())))
                .collect();
            data(
                None,
                serde_json::json!({"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"f","args":args}}]},"finishReason":"STOP","index":0}],
                "usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":4,"totalTokenCount":7}}),
            );
        }
    }
    out.into_bytes()
}

/// Every tool call's raw argument text, in order (not parsed: byte order is the point).
fn raw_tool_args(dialect: &str, sse: &[u8]) -> String {
    let mut out = String::new();
    for e in data_events(sse) {
        match dialect {
            "openai" => {
                for t in e["choices"][0]["delta"]["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    out.push_str(t["function"]["arguments"].as_str().unwrap_or_default());
                }
            }
            _ => out.push_str(e["delta"]["partial_json"].as_str().unwrap_or_default()),
        }
    }
    out
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn pieces() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(
            any::<String>().prop_map(|s| s.chars().take(12).collect()),
            1..8,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any split of a valid stream into reads, for every kind and dialect: the client
        /// gets every text and tool-argument byte, in order, and a clean end.
        #[test]
        fn any_split_keeps_every_byte_in_order(
            text in pieces(),
            args in pieces(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            for kind in ["openai", "anthropic", "gemini"] {
                let sse = synthetic_stream(kind, &text, &args);
                let mut at: Vec<usize> = cuts.iter().map(|i| i.index(sse.len())).collect();
                at.sort_unstable();
                at.dedup();
                let mut reads = Vec::new();
                let mut prev = 0;
                for c in at.into_iter().chain([sse.len()]) {
                    reads.push(Bytes::copy_from_slice(&sse[prev..c]));
                    prev = c;
                }
                let want_text: String = text.concat();
                let want_args = if kind == "gemini" {
                    stream_meaning(kind, &sse).tools[0].1.to_string()
                } else {
                    args.concat()
                };
                for (dialect, answer) in answers(kind) {
                    let t = answer.transcode(reads.clone());
                    prop_assert!(t.complete, "{} → {}", kind, dialect);
                    let out = t.bytes();
                    prop_assert_eq!(&stream_meaning(dialect, &out).text, &want_text, "{} → {}", kind, dialect);
                    prop_assert_eq!(raw_tool_args(dialect, &out), want_args.clone(), "{} → {}", kind, dialect);
                    prop_assert_eq!(t.usage.map(|u| (u.input_tokens, u.output_tokens)), Some((3, 4)));
                }
            }
        }
    }
}
