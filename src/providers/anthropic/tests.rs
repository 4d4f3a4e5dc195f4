#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};

use super::translate::{from_client, to_wire};
use crate::api::ChatRequest;

fn fixture(kind: &str, name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/{kind}/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// An Anthropic client's request, through the canonical request and back, is the request it
/// was (content given as one text block comes back as a plain string, which Anthropic reads
/// the same).
#[test]
fn documented_requests_survive_the_round_trip() {
    for name in ["request_tool_result.json", "request_image.json"] {
        let doc = fixture("anthropic", name);
        let canonical = from_client(doc.to_string().as_bytes()).unwrap();
        let back =
            serde_json::to_value(to_wire(&canonical, doc["model"].as_str().unwrap()).unwrap())
                .unwrap();
        assert_eq!(back["model"], doc["model"], "{name}");
        assert_eq!(back["max_tokens"], doc["max_tokens"], "{name}");
        assert_eq!(
            back["tools"],
            doc.get("tools").cloned().unwrap_or(Value::Null),
            "{name}"
        );
        let norm = |m: &Value| match &m["content"] {
            Value::String(s) => json!([{"type": "text", "text": s}]),
            other => other.clone(),
        };
        let (a, b) = (
            back["messages"].as_array().unwrap(),
            doc["messages"].as_array().unwrap(),
        );
        assert_eq!(a.len(), b.len(), "{name}: {back}");
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x["role"], y["role"], "{name}");
            assert_eq!(norm(x), norm(y), "{name}");
        }
    }
}

/// OpenAI's documented tool-result turn becomes Anthropic's: the call as a `tool_use` block,
/// the result as a `tool_result` block with the same id, in the next user turn.
#[test]
fn openai_tool_results_become_tool_result_blocks() {
    let mut doc = fixture("openai", "request_tool_result.json");
    // As documented, the request asks for two things Anthropic has not got: both are named.
    let e = ChatRequest::from_json(doc.to_string().as_bytes())
        .unwrap()
        .refuse_openai_only("anthropic")
        .unwrap_err();
    assert!(e.to_string().contains("store"), "{e}");
    doc.as_object_mut().unwrap().remove("store");
    let req = ChatRequest::from_json(doc.to_string().as_bytes()).unwrap();
    let e = to_wire(&req, "claude").unwrap_err();
    assert!(e.to_string().contains("strict"), "{e}");
    doc["tools"][0]["function"]
        .as_object_mut()
        .unwrap()
        .remove("strict");
    let req = ChatRequest::from_json(doc.to_string().as_bytes()).unwrap();
    let w = serde_json::to_value(to_wire(&req, "claude").unwrap()).unwrap();
    let call = &doc["messages"][1]["tool_calls"][0];
    assert_eq!(w["messages"][1]["role"], "assistant");
    let tool_use = &w["messages"][1]["content"][0];
    assert_eq!(tool_use["type"], "tool_use");
    assert_eq!(tool_use["id"], call["id"]);
    assert_eq!(
        tool_use["input"],
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap()
    );
    let result = &w["messages"][2]["content"][0];
    assert_eq!(w["messages"][2]["role"], "user");
    assert_eq!(result["type"], "tool_result");
    assert_eq!(result["tool_use_id"], call["id"]);
    assert_eq!(result["content"], "14");
    assert_eq!(
        w["tools"][0]["input_schema"],
        doc["tools"][0]["function"]["parameters"]
    );
    assert_eq!(w["max_tokens"], super::translate::DEFAULT_MAX_TOKENS);
}

#[test]
fn openai_images_become_base64_image_blocks() {
    let doc = fixture("openai", "request_image.json");
    let req = ChatRequest::from_json(doc.to_string().as_bytes()).unwrap();
    let w = serde_json::to_value(to_wire(&req, "claude").unwrap()).unwrap();
    let url = doc["messages"][0]["content"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|p| p["image_url"]["url"].as_str())
        .unwrap();
    let (mime, data) = crate::api::request::data_url(url).unwrap();
    let image = w["messages"][0]["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "image")
        .unwrap()
        .clone();
    assert_eq!(
        image["source"],
        json!({"type": "base64", "media_type": mime, "data": data})
    );
}

#[test]
fn features_without_an_anthropic_equivalent_are_named() {
    let base = r#""model":"m","messages":[{"role":"user","content":"x"}]"#;
    for (extra, feature) in [
        (r#""seed":1"#, "seed"),
        (r#""presence_penalty":0.5"#, "presence_penalty"),
        (
            r#""response_format":{"type":"json_object"}"#,
            "response_format",
        ),
        (r#""reasoning_effort":"high""#, "reasoning_effort"),
        (
            r#""messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}],"model":"m""#,
            "input_audio",
        ),
    ] {
        let body = if extra.contains("\"messages\"") {
            format!("{{{extra}}}")
        } else {
            format!("{{{base},{extra}}}")
        };
        let req = ChatRequest::from_json(body.as_bytes()).unwrap();
        let e = to_wire(&req, "claude").unwrap_err().to_string();
        assert!(e.contains(feature), "{e}");
    }
    // Harmless values pass, and map: parallel_tool_calls false → disable_parallel_tool_use.
    let req = ChatRequest::from_json(
        format!(r#"{{{base},"n":1,"parallel_tool_calls":false,"tools":[{{"type":"function","function":{{"name":"f"}}}}],"tool_choice":"required","stop":["END"],"user":"u1"}}"#)
            .as_bytes(),
    )
    .unwrap();
    let w = serde_json::to_value(to_wire(&req, "claude").unwrap()).unwrap();
    assert_eq!(
        w["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(w["stop_sequences"], json!(["END"]));
    assert_eq!(w["metadata"], json!({"user_id": "u1"}));
}

#[test]
fn anthropic_clients_need_max_tokens_and_get_named_refusals() {
    let e =
        from_client(br#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#).unwrap_err();
    assert!(e.to_string().contains("max_tokens"), "{e}");
    let e = from_client(
        br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}],"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("web_search_20250305"), "{e}");
    let e = from_client(br#"{"model":"m","max_tokens":5,"messages":[],"frobnicate":true}"#)
        .unwrap_err();
    assert!(e.to_string().contains("frobnicate"), "{e}");
}

#[test]
fn block_deltas_are_read_flat_and_checked() {
    use crate::api::response::Delta;

    use super::stream::Parser;

    let start =
        br#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#;
    let run = |events: &[&[u8]]| {
        let mut p = Parser::default();
        let mut out = Vec::new();
        let mut last = Ok(());
        for e in events {
            last = p.parse_chunk(e, &mut out);
        }
        last.map(|()| out)
    };
    // Member order is free, and an escaped text arrives unescaped.
    let out = run(&[
        start,
        br#"{"delta":{"text":"a\"b\u00e9","type":"text_delta"},"index":0,"type":"content_block_delta"}"#,
    ])
    .unwrap();
    assert!(
        matches!(out.last(), Some(Delta::Text(t)) if t == "a\"bé"),
        "{out:?}"
    );
    // Newer delta kinds are skipped, not refused.
    let out = run(&[
        start,
        br#"{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{}}}"#,
    ])
    .unwrap();
    assert!(out.is_empty(), "{out:?}");
    // A known kind without its member is malformed, and the error names it.
    let err = run(&[
        start,
        br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta"}}"#,
    ])
    .unwrap_err();
    assert!(err.to_string().contains("`text`"), "{err}");
    let err = run(&[
        start,
        br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":7}}"#,
    ]);
    assert!(err.is_err());
}
