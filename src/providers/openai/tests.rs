#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};

use super::translate::{from_wire, to_client, to_wire};
use crate::api::ChatRequest;

#[test]
fn streams_always_ask_for_usage_and_budgets_become_efforts() {
    let mut req = ChatRequest::from_json(
        br#"{"model":"public","messages":[{"role":"user","content":"x"}],"stream":true}"#,
    )
    .unwrap();
    req.thinking_budget = Some(8000);
    let w: Value = serde_json::from_slice(&to_wire(&req, "gpt-x").unwrap()).unwrap();
    assert_eq!(w["model"], "gpt-x");
    assert_eq!(w["stream_options"], json!({"include_usage": true}));
    assert_eq!(w["reasoning_effort"], "medium");
    assert!(w.get("thinking_budget").is_none() && w.get("top_k").is_none());
    req.top_k = Some(3);
    assert!(
        to_wire(&req, "gpt-x")
            .unwrap_err()
            .to_string()
            .contains("top_k")
    );
}

#[test]
fn answers_round_trip_through_the_canonical_response() {
    let path = format!(
        "{}/tests/fixtures/openai/tool_call.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc = std::fs::read(path).unwrap();
    let r = from_wire(&doc).unwrap();
    let again: Value = serde_json::from_slice(&to_client(&r, "m", 7)).unwrap();
    let want: Value = serde_json::from_slice(&doc).unwrap();
    assert_eq!(
        again["choices"][0]["message"]["tool_calls"],
        want["choices"][0]["message"]["tool_calls"]
    );
    assert_eq!(
        again["choices"][0]["finish_reason"],
        want["choices"][0]["finish_reason"]
    );
    assert_eq!(
        again["usage"]["prompt_tokens"],
        want["usage"]["prompt_tokens"]
    );
    assert_eq!(
        again["usage"]["completion_tokens"],
        want["usage"]["completion_tokens"]
    );
}
