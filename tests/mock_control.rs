#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#![allow(
    clippy::disallowed_methods,
    reason = "test clients run on plain threads, not shards"
)]
//! The mock's run-time controls, straight against `shardgate-mock` (no gateway): faults
//! switched through `PUT`/`DELETE /mock/knobs` and the Rust API, the fault schedule, the
//! provider-style context-window and content-policy answers per format, and several mocks
//! side by side, each counting its own requests.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use common::*;
use serde_json::{Value as Json, json};
use shardgate::mock::Knobs;
use shardgate::mock::schedule::Schedule;
use shardgate::mock::server::{MockConfig, MockServer};

const ANTHROPIC_VERSION: (&str, &str) = ("anthropic-version", "2023-06-01");

fn start(shards: usize, defaults: &str, schedule: &str) -> MockServer {
    MockServer::start(MockConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cores: vec![None; shards],
        defaults: Knobs::parse(defaults).unwrap(),
        schedule: Schedule::parse(schedule).unwrap(),
        tls: None,
    })
    .unwrap()
}

/// An OpenAI chat request straight to the mock (a fresh connection each time, so that the
/// kernel spreads them over the mock's shards).
fn chat(addr: SocketAddr, headers: &[(&str, &str)]) -> Resp {
    let body = chat_body("mock", "hello", false);
    request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[&[("content-type", "application/json")], headers].concat(),
        body.as_bytes(),
    )
}

fn put_knobs(addr: SocketAddr, knobs: &str) -> Resp {
    request(addr, "PUT", "/mock/knobs", &[], knobs.as_bytes())
}

fn stats(addr: SocketAddr) -> Json {
    let r = request(addr, "GET", "/mock/stats", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    r.json()
}

#[test]
fn faults_switch_at_run_time_over_http_on_every_shard() {
    let mock = start(2, "finish=length", "");
    let a = mock.addr;
    let r = chat(a, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");

    let r = put_knobs(a, "status=503;echo_auth=0\n");
    assert_eq!(r.status, 204, "{}", r.text());
    // Fresh connections land on either shard: every one sees the new defaults.
    for _ in 0..12 {
        let r = chat(a, &[]);
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.json()["error"]["type"], "server_error");
    }
    // Per-request knobs still win over the defaults.
    let r = chat(a, &[("x-mock-status", "200")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(
        r.json()["choices"][0]["finish_reason"],
        "length",
        "PUT replaces the start-up defaults, it does not add to them"
    );
    assert_eq!(mock.knobs(), Knobs::parse("status=503").unwrap());

    // A bad body is refused and changes nothing.
    for bad in ["status=abc", "nope=1", "status"] {
        let r = put_knobs(a, bad);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.json()["error"]["message"].is_string());
    }
    assert_eq!(chat(a, &[]).status, 503);

    let s = stats(a);
    assert_eq!(s["chat"], 15);
    assert_eq!(s["requests"], 15, "control calls are not counted: {s}");
    assert_eq!(s["faults"], 13);
    assert_eq!(s["streams"], 0);
    assert_eq!(
        s["by_format"],
        json!({"openai": 15, "anthropic": 0, "gemini": 0})
    );

    let r = request(a, "DELETE", "/mock/knobs", &[], b"");
    assert_eq!(r.status, 204);
    for _ in 0..6 {
        let r = chat(a, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["choices"][0]["finish_reason"], "length");
    }

    // The same through the Rust API.
    mock.set_knobs(Knobs::parse("status=429;retry_after=7").unwrap());
    let r = chat(a, &[]);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    mock.reset_knobs();
    assert_eq!(chat(a, &[]).status, 200);
    assert_eq!(mock.knobs(), Knobs::parse("finish=length").unwrap());

    assert_eq!(request(a, "GET", "/mock/nothing", &[], b"").status, 404);
    assert_eq!(request(a, "POST", "/mock/knobs", &[], b"").status, 404);
    mock.stop();
}

#[test]
fn the_schedule_applies_inside_its_windows_only() {
    // An hour-long window open from the start, and one that opens after an hour: the test
    // does not depend on how fast it runs.
    let mock = start(1, "", "0..3600000:status=500;3600000..:status=418");
    let r = chat(mock.addr, &[]);
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(chat(mock.addr, &[("x-mock-status", "200")]).status, 200);
    // The schedule applies over run-time defaults too.
    assert_eq!(put_knobs(mock.addr, "latency_ms=0").status, 204);
    assert_eq!(chat(mock.addr, &[]).status, 500);
    mock.stop();

    let later = start(1, "", "3600000..:status=500");
    assert_eq!(chat(later.addr, &[]).status, 200);
    later.stop();
}

/// A chat request in `format` (`openai`, `anthropic`, `gemini`) with `knobs` in headers.
fn chat_in(addr: SocketAddr, format: &str, stream: bool, knobs: &[(&str, &str)]) -> Resp {
    let (path, body, mut headers) = match format {
        "openai" => (
            "/v1/chat/completions".to_owned(),
            chat_body("gpt", "hello", stream),
            vec![],
        ),
        "anthropic" => (
            "/v1/messages".to_owned(),
            json!({"model": "claude", "max_tokens": 64, "stream": stream,
                   "messages": [{"role": "user", "content": "hello"}]})
            .to_string(),
            vec![ANTHROPIC_VERSION],
        ),
        "gemini" => (
            if stream {
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse".to_owned()
            } else {
                "/v1beta/models/gemini-2.5-flash:generateContent".to_owned()
            },
            json!({"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}).to_string(),
            vec![],
        ),
        _ => unreachable!(),
    };
    headers.push(("content-type", "application/json"));
    headers.extend_from_slice(knobs);
    request(addr, "POST", &path, &headers, body.as_bytes())
}

#[test]
fn provider_style_errors_per_format() {
    let mock = start(1, "", "");
    let a = mock.addr;
    let context = [("x-mock-error", "context_window")];
    let policy = [("x-mock-error", "content_policy")];

    for stream in [false, true] {
        // OpenAI
        let r = chat_in(a, "openai", stream, &context);
        assert_eq!(r.status, 400);
        let e = &r.json()["error"];
        assert_eq!(e["code"], "context_length_exceeded");
        assert_eq!(e["type"], "invalid_request_error");
        assert_eq!(e["param"], "messages");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("This model's maximum context length is 128000 tokens.")
        );
        let r = chat_in(a, "openai", stream, &policy);
        assert_eq!(r.status, 400);
        let e = &r.json()["error"];
        assert_eq!(e["code"], "content_policy_violation");
        assert_eq!(e["type"], "invalid_request_error");

        // Anthropic
        let r = chat_in(a, "anthropic", stream, &context);
        assert_eq!(r.status, 400);
        assert_eq!(
            r.json(),
            json!({"type": "error", "error": {"type": "invalid_request_error",
                   "message": "prompt is too long: 210000 tokens > 200000 maximum"}})
        );
        let r = chat_in(a, "anthropic", stream, &policy);
        assert_eq!(r.status, 400);
        assert_eq!(r.json()["type"], "error");
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
        assert_eq!(
            r.json()["error"]["message"],
            "Output blocked by content filtering policy"
        );

        // Gemini
        let r = chat_in(a, "gemini", stream, &context);
        assert_eq!(r.status, 400);
        assert_eq!(
            r.json()["error"],
            json!({"code": 400, "status": "INVALID_ARGUMENT", "message":
                "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."})
        );
    }

    // Gemini refuses a prompt with a 200 answer without candidates, whole or as one event.
    let r = chat_in(a, "gemini", false, &policy);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["promptFeedback"]["blockReason"], "SAFETY");
    assert!(v.get("candidates").is_none(), "{v}");
    assert!(v["usageMetadata"]["promptTokenCount"].as_u64().unwrap() > 0);
    let r = chat_in(a, "gemini", true, &policy);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let events = r.events();
    assert_eq!(events.len(), 1, "{}", r.text());
    let v: Json = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(v["promptFeedback"]["blockReason"], "SAFETY");
    assert!(v.get("candidates").is_none(), "{v}");

    // The answer-form refusal: each format's finish reason, whole and streamed.
    let refusal = [("x-mock-refusal", "1")];
    let r = chat_in(a, "anthropic", false, &refusal);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["stop_reason"], "refusal");
    let r = chat_in(a, "anthropic", true, &refusal);
    assert_eq!(r.status, 200);
    let delta = r
        .events()
        .iter()
        .map(|e| serde_json::from_str::<Json>(e).unwrap())
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "refusal");
    assert!(
        r.text()
            .ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
    );
    let r = chat_in(a, "openai", false, &refusal);
    assert_eq!(r.json()["choices"][0]["finish_reason"], "content_filter");
    let r = chat_in(a, "gemini", false, &refusal);
    assert_eq!(
        r.json()["candidates"][0],
        json!({"finishReason": "SAFETY", "index": 0})
    );

    // `error` wins over `status`; embeddings ignore it.
    let r = chat_in(a, "openai", false, &[context[0], ("x-mock-status", "500")]);
    assert_eq!(r.status, 400);
    let r = request(
        a,
        "POST",
        "/v1/embeddings",
        &[("content-type", "application/json"), context[0]],
        br#"{"model":"emb","input":"a"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let s = mock.stats();
    assert_eq!(s.faults.load(Relaxed), 2 * 5 + 2 + 1);
    assert_eq!(s.anthropic.load(Relaxed), 6);
    assert_eq!(s.gemini.load(Relaxed), 5);
    assert_eq!(s.openai.load(Relaxed), 4 + 1 + 1 + 1);
    mock.stop();
}

#[test]
fn several_mocks_keep_their_own_profiles_and_counts() {
    let healthy = mock_with("");
    let failing = mock_with("status=500");
    let slow = mock_with("latency_ms=1");
    assert_ne!(healthy.addr, failing.addr);
    assert_ne!(failing.addr, slow.addr);
    for _ in 0..3 {
        assert_eq!(chat(healthy.addr, &[]).status, 200);
    }
    for _ in 0..2 {
        assert_eq!(chat(failing.addr, &[]).status, 500);
    }
    assert_eq!(chat(slow.addr, &[]).status, 200);
    assert_eq!(healthy.requests(), 3);
    assert_eq!(failing.requests(), 2);
    assert_eq!(slow.requests(), 1);
    assert_eq!(failing.stats().faults.load(Relaxed), 2);
    assert_eq!(healthy.stats().faults.load(Relaxed), 0);

    // Flipping one mock leaves the others alone.
    assert_eq!(put_knobs(healthy.addr, "status=502").status, 204);
    assert_eq!(chat(healthy.addr, &[]).status, 502);
    assert_eq!(chat(slow.addr, &[]).status, 200);
    assert_eq!(put_knobs(failing.addr, "").status, 204);
    assert_eq!(chat(failing.addr, &[]).status, 200);
    assert_eq!(stats(failing.addr)["requests"], 3);
    for m in [healthy, failing, slow] {
        m.stop();
    }
}
