#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#![allow(
    clippy::disallowed_methods,
    reason = "test clients run on plain threads, not shards"
)]
//! Every provider kind behind both client dialects, over real sockets: the gateway in front
//! of `shardgate-mock`, which speaks OpenAI, Anthropic and Gemini on one port and reports
//! what it received and the usage it sent.

mod common;

use std::net::SocketAddr;

use serde_json::{Value, json};
use shardgate::mock::MockUsage;
use shardgate::mock::server::MockServer;

use common::*;

/// The kinds behind the gateway: (model prefix, provider kind).
const KINDS: [&str; 3] = ["openai", "anthropic", "gemini"];

/// One provider of each kind on the same mock, and models `<kind>-<suffix>` per knob set.
fn config(mock: SocketAddr) -> String {
    let mut c = format!(
        r#"
[server]
listen = "127.0.0.1:0"
header_timeout_ms = 2000

[providers.openai]
kind = "openai"
base_url = "http://{mock}/v1"
protocol = "http1"

[providers.anthropic]
kind = "anthropic"
base_url = "http://{mock}/v1"
protocol = "http1"
api_key_env = "SG_TEST_ANTHROPIC_KEY"

[providers.gemini]
kind = "gemini"
base_url = "http://{mock}/v1beta"
protocol = "http1"
api_key_env = "SG_TEST_GEMINI_KEY"

[providers.inproc]
kind = "mock"

[models.mock-plain]
provider = "inproc"
model = "mock"
"#
    );
    for kind in KINDS {
        for (suffix, upstream) in [
            ("plain", "mock"),
            ("chunks", "mock;chunks=5"),
            ("usage", "mock;cached_tokens=3;reasoning_tokens=2"),
            ("429", "mock;status=429;retry_after=7"),
            ("500", "mock;status=500"),
            ("cut", "mock;reset_after=3"),
            ("inband", "mock;error_after=2"),
        ] {
            c.push_str(&format!(
                "[models.{kind}-{suffix}]\nprovider = \"{kind}\"\nmodel = \"{upstream}\"\n"
            ));
        }
        c.push_str(&format!(
            "[models.{kind}-priced]\nprovider = \"{kind}\"\nmodel = \"mock;cached_tokens=3\"\nprice = {{ input = 2.0, output = 10.0, cached_input = 0.5 }}\n"
        ));
    }
    c
}

fn start() -> (MockServer, Gateway) {
    let mock = mock();
    let gw = Gateway::start_with_env(
        &config(mock.addr),
        ONE_SHARD,
        &[
            ("SG_TEST_ANTHROPIC_KEY", "sk-ant-secret-1"),
            ("SG_TEST_GEMINI_KEY", "gem-secret-2"),
        ],
    );
    (mock, gw)
}

fn last_usage(mock: &MockServer) -> MockUsage {
    *mock
        .stats()
        .last_usage
        .load_full()
        .expect("the mock answered")
}

fn model_tokens(gw: &Gateway, model: &str, kind: &str) -> f64 {
    gw.metric(&format!(
        "gateway_model_tokens_total{{model=\"{model}\",type=\"{kind}\"}}"
    ))
}

fn messages(gw: &Gateway, body: &Value) -> Resp {
    request(
        gw.addr,
        "POST",
        "/v1/messages",
        &[
            ("content-type", "application/json"),
            ("x-api-key", "client-key"),
            ("anthropic-version", "2023-06-01"),
        ],
        body.to_string().as_bytes(),
    )
}

/// The data of each event, as JSON.
fn json_events(res: &Resp) -> Vec<Value> {
    res.events()
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap_or_else(|_| panic!("bad event {e}")))
        .collect()
}

#[test]
fn openai_clients_reach_every_kind_with_exact_usage() {
    let (mock, gw) = start();
    for kind in KINDS {
        let m = format!("{kind}-usage");
        let res = gw.chat(&m, "hello there", false);
        assert_eq!(res.status, 200, "{kind}: {}", res.text());
        let v = res.json();
        assert_eq!(
            v["choices"][0]["message"]["content"], "This is a mock reply to: hello there",
            "{kind}"
        );
        let u = last_usage(&mock);
        assert_eq!(v["usage"]["prompt_tokens"], u.input_tokens, "{kind}: {v}");
        assert_eq!(
            v["usage"]["completion_tokens"], u.output_tokens,
            "{kind}: {v}"
        );
        // Streamed, the usage the gateway accounts is what the mock reported, per type.
        let before =
            ["input", "output", "cached_input", "reasoning"].map(|t| model_tokens(&gw, &m, t));
        let res = gw.chat(&m, "stream it", true);
        assert_eq!(res.status, 200, "{kind}: {}", res.text());
        let events = res.events();
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{kind}");
        assert_eq!(
            stream_text(&events),
            "This is a mock reply to: stream it",
            "{kind}"
        );
        let u = last_usage(&mock);
        let after =
            ["input", "output", "cached_input", "reasoning"].map(|t| model_tokens(&gw, &m, t));
        assert_eq!(
            (u.cached_input_tokens, u.reasoning_tokens),
            (3, 2),
            "{kind}: knobs"
        );
        // Anthropic's usage has no reasoning count (thinking is inside output_tokens).
        let reasoning = if kind == "anthropic" {
            0
        } else {
            u.reasoning_tokens
        };
        let want = [
            u.input_tokens,
            u.output_tokens,
            u.cached_input_tokens,
            reasoning,
        ];
        for i in 0..4 {
            assert_eq!(
                after[i] - before[i],
                want[i] as f64,
                "{kind}: usage type {i}"
            );
        }
        // The client asked for the usage chunk: it carries the same numbers.
        let chunk: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        assert_eq!(chunk["usage"]["prompt_tokens"], u.input_tokens, "{kind}");
        assert_eq!(
            chunk["usage"]["prompt_tokens_details"]["cached_tokens"], 3,
            "{kind}"
        );
    }
}

#[test]
fn anthropic_clients_reach_every_kind() {
    let (mock, gw) = start();
    for kind in ["openai", "anthropic", "gemini", "mock"] {
        let m = format!("{kind}-plain");
        let body = json!({"model": m, "max_tokens": 64, "system": "be brief",
            "messages": [{"role": "user", "content": "hi claude"}]});
        let res = messages(&gw, &body);
        assert_eq!(res.status, 200, "{kind}: {}", res.text());
        let v = res.json();
        assert_eq!(v["type"], "message", "{kind}");
        assert_eq!(
            v["content"][0]["text"], "This is a mock reply to: hi claude",
            "{kind}"
        );
        assert_eq!(v["stop_reason"], "end_turn", "{kind}");
        assert!(
            v["usage"]["output_tokens"].as_u64().unwrap() > 0,
            "{kind}: {v}"
        );
        // Streamed: Anthropic's event sequence, whatever the provider.
        let mut body = body;
        body["stream"] = json!(true);
        let res = messages(&gw, &body);
        assert_eq!(res.status, 200, "{kind}: {}", res.text());
        let events = json_events(&res);
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(types.first(), Some(&"message_start"), "{kind}: {types:?}");
        assert_eq!(
            &types[types.len() - 2..],
            ["message_delta", "message_stop"],
            "{kind}"
        );
        let text: String = events
            .iter()
            .filter(|e| e["type"] == "content_block_delta")
            .map(|e| e["delta"]["text"].as_str().unwrap())
            .collect();
        assert_eq!(text, "This is a mock reply to: hi claude", "{kind}");
        let delta = &events[events.len() - 2];
        assert_eq!(delta["delta"]["stop_reason"], "end_turn", "{kind}");
        if kind != "mock" {
            let u = last_usage(&mock);
            assert_eq!(
                delta["usage"]["output_tokens"], u.output_tokens,
                "{kind}: {delta}"
            );
        }
    }
    // Anthropic-kind upstreams get the version header and the provider key, never the
    // client's key.
    let got = mock.stats().last_chat.load_full().unwrap();
    let _ = got;
    messages(
        &gw,
        &json!({"model": "anthropic-plain", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}),
    );
    let got = mock.stats().last_chat.load_full().unwrap();
    assert_eq!(got.headers["anthropic-version"], "2023-06-01");
    assert_eq!(got.headers["x-api-key"], "sk-ant-secret-1");
    assert!(!gw.stderr().contains("sk-ant-secret-1"));
}

#[test]
fn tool_calls_tool_results_and_images_cross_every_kind() {
    let (mock, gw) = start();
    let tools = json!([{"type": "function", "function": {"name": "lookup", "description": "Look a thing up.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]);
    for kind in KINDS {
        for m in [format!("{kind}-plain"), format!("{kind}-chunks")] {
            // A tool call, whole and streamed (arguments in several pieces).
            let body = json!({"model": m, "tools": tools, "messages": [{"role": "user", "content": "weather in Paris"}]});
            let v = gw.post("/v1/chat/completions", &body.to_string()).json();
            let call = &v["choices"][0]["message"]["tool_calls"][0];
            assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{m}: {v}");
            assert_eq!(call["function"]["name"], "lookup", "{m}");
            let args: Value =
                serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
            assert_eq!(args, json!({"query": "weather in Paris"}), "{m}");
            let mut sbody = body.clone();
            sbody["stream"] = json!(true);
            let res = gw.post("/v1/chat/completions", &sbody.to_string());
            let mut streamed = String::new();
            let mut pieces = 0;
            for e in json_events(&res) {
                for t in e["choices"][0]["delta"]["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if let Some(a) = t["function"]["arguments"]
                        .as_str()
                        .filter(|a| !a.is_empty())
                    {
                        streamed.push_str(a);
                        pieces += 1;
                    }
                }
            }
            assert_eq!(
                serde_json::from_str::<Value>(&streamed).unwrap(),
                args,
                "{m}"
            );
            if m.ends_with("chunks") && kind != "gemini" {
                assert!(pieces > 1, "{m}: arguments arrive in pieces");
            }
            // The tool's result goes back; the mock echoes it.
            let id = call["id"].as_str().unwrap();
            let turn = json!({"model": m, "tools": tools, "messages": [
                {"role": "user", "content": "weather in Paris"},
                {"role": "assistant", "content": null, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": id, "content": "sunny"}]});
            let v = gw.post("/v1/chat/completions", &turn.to_string()).json();
            let text = v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                text.starts_with("This is a mock reply to: tool result"),
                "{m}: {v}"
            );
            assert!(text.contains("sunny"), "{m}: {text}");
        }
        // An image part.
        let img = json!({"model": format!("{kind}-plain"), "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
        let v = gw.post("/v1/chat/completions", &img.to_string()).json();
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "This is a mock reply to: what is this [1 image]",
            "{kind}: {v}"
        );
        let sent: Value =
            serde_json::from_slice(&mock.stats().last_chat.load_full().unwrap().body).unwrap();
        let s = sent.to_string();
        match kind {
            "anthropic" => assert!(s.contains(r#""type":"base64""#), "{s}"),
            "gemini" => assert!(s.contains(r#""inlineData""#), "{s}"),
            _ => assert!(s.contains("data:image/png;base64"), "{s}"),
        }
    }
}

#[test]
fn upstream_failures_in_every_kind_and_dialect() {
    let (_mock, gw) = start();
    for kind in KINDS {
        let res = gw.chat(&format!("{kind}-429"), "x", false);
        res.assert_error(429, "upstream_status");
        assert_eq!(res.header("retry-after"), Some("7"), "{kind}");
        gw.chat(&format!("{kind}-500"), "x", false)
            .assert_error(502, "upstream_status");
        // Anthropic clients get Anthropic-shaped errors.
        let res = messages(
            &gw,
            &json!({"model": format!("{kind}-429"), "max_tokens": 8,
            "messages": [{"role": "user", "content": "x"}]}),
        );
        assert_eq!(res.status, 429, "{kind}");
        let v = res.json();
        assert_eq!(
            (v["type"].as_str(), v["error"]["type"].as_str()),
            (Some("error"), Some("rate_limit_error")),
            "{v}"
        );
        // A stream cut mid-way, or an in-band provider error: one final error event, in the
        // client's dialect, and no clean end.
        for suffix in ["cut", "inband"] {
            let m = format!("{kind}-{suffix}");
            let res = gw.chat(&m, "a long enough message to stream", true);
            let events = json_events(&res);
            assert!(
                events.last().unwrap().get("error").is_some(),
                "{m}: {events:?}"
            );
            assert!(!res.text().contains("[DONE]"), "{m}");
            let res = messages(
                &gw,
                &json!({"model": m, "max_tokens": 8, "stream": true,
                "messages": [{"role": "user", "content": "a long enough message to stream"}]}),
            );
            let events = json_events(&res);
            assert_eq!(events.last().unwrap()["type"], "error", "{m}: {events:?}");
            assert_eq!(
                events.iter().filter(|e| e["type"] == "error").count(),
                1,
                "{m}"
            );
            assert!(!res.text().contains("message_stop"), "{m}");
        }
    }
}

#[test]
fn gaps_are_named_in_a_400_never_dropped() {
    let (_mock, gw) = start();
    let body =
        json!({"model": "anthropic-plain", "n": 2, "messages": [{"role": "user", "content": "x"}]});
    let res = gw.post("/v1/chat/completions", &body.to_string());
    res.assert_error(400, "bad_request");
    assert!(
        res.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`n`")
    );
    let res = messages(
        &gw,
        &json!({"model": "gemini-plain", "max_tokens": 8,
        "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]}),
    );
    assert_eq!(res.status, 400);
    let v = res.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("document"),
        "{v}"
    );
    let res = messages(
        &gw,
        &json!({"model": "openai-plain", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(res.status, 400);
    assert!(res.text().contains("max_tokens"));
}

#[test]
fn cost_is_accounted_by_model_from_the_price_table() {
    let (mock, gw) = start();
    for kind in KINDS {
        let m = format!("{kind}-priced");
        let before = gw.metric(&format!("gateway_cost_usd_total{{model=\"{m}\"}}"));
        let res = gw.chat(&m, "what does this cost", true);
        assert_eq!(res.status, 200);
        let u = last_usage(&mock);
        let want = ((u.input_tokens - u.cached_input_tokens) as f64 * 2.0
            + u.cached_input_tokens as f64 * 0.5
            + u.output_tokens as f64 * 10.0)
            / 1e6;
        let got = gw.metric(&format!("gateway_cost_usd_total{{model=\"{m}\"}}")) - before;
        assert!((got - want).abs() < 1e-9, "{kind}: {got} vs {want}");
        assert!(want > 0.0);
    }
}

#[test]
fn embeddings_reach_openai_and_gemini_kinds() {
    let (mock, gw) = start();
    let body = json!({"model": "openai-plain", "input": ["alpha", "beta"], "dimensions": 4});
    let res = gw.post("/v1/embeddings", &body.to_string());
    assert_eq!(res.status, 200, "{}", res.text());
    let openai = res.json();
    assert_eq!(openai["data"].as_array().unwrap().len(), 2);
    let res = gw.post(
        "/v1/embeddings",
        &json!({"model": "gemini-plain", "input": ["alpha", "beta"], "dimensions": 4}).to_string(),
    );
    assert_eq!(res.status, 200, "{}", res.text());
    let gemini = res.json();
    // The mock's vectors depend only on the text: both routes give the same ones.
    assert_eq!(
        gemini["data"][1]["embedding"],
        openai["data"][1]["embedding"]
    );
    assert_eq!(gemini["object"], "list");
    assert!(gemini["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let sent: Value =
        serde_json::from_slice(&mock.stats().last_embeddings.load_full().unwrap().body).unwrap();
    assert_eq!(sent["requests"][0]["outputDimensionality"], 4, "{sent}");
    let res = gw.post(
        "/v1/embeddings",
        &json!({"model": "gemini-plain", "input": "one", "encoding_format": "base64"}).to_string(),
    );
    assert!(res.json()["data"][0]["embedding"].is_string());
    let res = gw.post(
        "/v1/embeddings",
        &json!({"model": "anthropic-plain", "input": "x"}).to_string(),
    );
    res.assert_error(400, "bad_request");
    let res = gw.post(
        "/v1/embeddings",
        &json!({"model": "mock-plain", "input": "alpha", "dimensions": 4}).to_string(),
    );
    assert_eq!(
        res.json()["data"][0]["embedding"],
        openai["data"][0]["embedding"]
    );
}
