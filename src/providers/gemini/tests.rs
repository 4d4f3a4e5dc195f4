#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};

use super::translate::to_wire;
use crate::api::ChatRequest;

fn fixture(kind: &str, name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/{kind}/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn openai_doc(name: &str) -> ChatRequest {
    let mut doc = fixture("openai", name);
    let o = doc.as_object_mut().unwrap();
    o.remove("store");
    if let Some(t) = o.get_mut("tools") {
        t[0]["function"].as_object_mut().unwrap().remove("strict");
    }
    ChatRequest::from_json(doc.to_string().as_bytes()).unwrap()
}

/// The shape of a conversation: roles and the kind of each part.
fn shape(contents: &Value) -> Vec<(String, Vec<String>)> {
    contents
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let kinds = c["parts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_object().unwrap().keys().next().unwrap().clone())
                .collect();
            (c["role"].as_str().unwrap_or("user").to_owned(), kinds)
        })
        .collect()
}

/// OpenAI's documented tool-result turn has the shape of Gemini's documented one: a user
/// turn, a model `functionCall`, a user `functionResponse` naming the same function.
#[test]
fn tool_results_take_gemini_s_documented_shape() {
    let w =
        serde_json::to_value(to_wire(&openai_doc("request_tool_result.json")).unwrap()).unwrap();
    let doc = fixture("gemini", "request_tool_result.json");
    assert_eq!(shape(&w["contents"]), shape(&doc["contents"]));
    let call = &w["contents"][1]["parts"][0]["functionCall"];
    let answer = &w["contents"][2]["parts"][0]["functionResponse"];
    assert_eq!(call["name"], "get_weather");
    assert_eq!(
        call["args"],
        json!({"latitude": 48.8566, "longitude": 2.3522})
    );
    assert_eq!(answer["name"], call["name"]);
    assert_eq!(answer["response"], json!({"result": 14}));
    assert_eq!(
        w["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["required"],
        json!(["latitude", "longitude"])
    );
}

#[test]
fn images_take_gemini_s_documented_shape() {
    let w = serde_json::to_value(to_wire(&openai_doc("request_image.json")).unwrap()).unwrap();
    let doc = fixture("gemini", "request_image.json");
    let mut got = shape(&w["contents"]);
    let mut want = shape(&doc["contents"]);
    // Part order follows each example's own order.
    got[0].1.sort();
    want[0].1.sort();
    assert_eq!(got, want);
    let blob = w["contents"][0]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|p| p.get("inlineData"))
        .unwrap();
    assert_eq!(blob["mimeType"], "image/png");
}

#[test]
fn settings_map_and_gaps_are_named() {
    let req = ChatRequest::from_json(
        br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"x"}],
            "temperature":0.2,"max_tokens":9,"stop":"END","seed":3,"reasoning_effort":"low",
            "response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object"}}},
            "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"f"}}}"#,
    )
    .unwrap();
    let w = serde_json::to_value(to_wire(&req).unwrap()).unwrap();
    assert_eq!(
        w["systemInstruction"],
        json!({"parts": [{"text": "be brief"}]})
    );
    let g = &w["generationConfig"];
    assert_eq!(g["maxOutputTokens"], 9);
    assert_eq!(g["stopSequences"], json!(["END"]));
    assert_eq!(g["seed"], 3);
    assert_eq!(g["responseMimeType"], "application/json");
    assert_eq!(g["responseJsonSchema"], json!({"type": "object"}));
    assert_eq!(g["thinkingConfig"], json!({"thinkingBudget": 1024}));
    assert_eq!(
        w["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}})
    );
    for (body, feature) in [
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"user":"u"}"#,
            "user",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":3}"#,
            "`n`",
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"parallel_tool_calls":false}"#,
            "parallel_tool_calls",
        ),
        (
            r#"{"model":"m","messages":[{"role":"tool","tool_call_id":"nope","content":"x"}]}"#,
            "nope",
        ),
    ] {
        let e = to_wire(&ChatRequest::from_json(body.as_bytes()).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains(feature), "{body}: {e}");
    }
}
