#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#![allow(
    clippy::disallowed_methods,
    reason = "test clients run on plain threads, not shards"
)]
//! Chat completions through a real upstream (`shardgate-mock`), over real sockets.

mod common;

use common::*;

#[test]
fn non_streaming_chat_through_an_upstream() {
    let mock = mock();
    let gw = Gateway::start(&upstream_config(mock.addr, ""), ONE_SHARD);
    let res = gw.chat("gpt-mock", "hello gateway", false);
    assert_eq!(res.status, 200, "{}", res.text());
    let v = res.json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "This is a mock reply to: hello gateway"
    );
    assert_eq!(
        v["model"], "mock",
        "the upstream saw the rewritten model name"
    );
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(res.header("x-request-id").map(str::len), Some(24));
    let overhead: u64 = res
        .header("x-shardgate-overhead-us")
        .unwrap()
        .parse()
        .unwrap();
    assert!(overhead < 10_000_000);
    assert_eq!(
        mock.stats().chat.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // Usage reached the metrics.
    assert!(gw.metric("gateway_tokens_total{provider=\"up\",direction=\"output\"}") > 0.0);
}

#[test]
fn models_health_ready_and_unknown_routes() {
    let mock = mock();
    let gw = Gateway::start(&upstream_config(mock.addr, ""), ONE_SHARD);
    let models = gw.get("/v1/models").json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "gpt-mock");
    assert_eq!(gw.get("/health").status, 200);
    assert_eq!(gw.get("/ready").json()["status"], "ready");
    gw.get("/v1/nope").assert_error(404, "not_found");
    gw.get("/v1/chat/completions")
        .assert_error(405, "method_not_allowed");
}

#[test]
fn unknown_model_is_404() {
    let mock = mock();
    let gw = Gateway::start(&upstream_config(mock.addr, ""), ONE_SHARD);
    let res = gw.chat("no-such-model", "x", false);
    res.assert_error(404, "not_found");
    assert!(
        res.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-model")
    );
    assert_eq!(mock.requests(), 0, "nothing went upstream");
}

#[test]
fn malformed_json_is_400() {
    let mock = mock();
    let gw = Gateway::start(&upstream_config(mock.addr, ""), ONE_SHARD);
    for body in [
        "{\"model\":",
        "not json",
        "[1,2]",
        "{\"model\":\"gpt-mock\"}",
        "{\"model\":\"gpt-mock\",\"messages\":[],\"x\":1}",
    ] {
        gw.post("/v1/chat/completions", body)
            .assert_error(400, "bad_request");
    }
    assert_eq!(mock.requests(), 0);
}

#[test]
fn oversized_body_is_413_before_it_is_read() {
    let mock = mock();
    let gw = Gateway::start(&upstream_config(mock.addr, ""), ONE_SHARD);
    let big = chat_body("gpt-mock", &"x".repeat(70_000), false);
    gw.post("/v1/chat/completions", &big)
        .assert_error(413, "payload_too_large");
    // Chunked, with no length declared: counted as it arrives.
    let mut chunked = Vec::new();
    for piece in big.as_bytes().chunks(10_000) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let raw = raw_exchange(gw.addr, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n", &chunked);
    parse_response(&raw).assert_error(413, "payload_too_large");
    assert_eq!(mock.requests(), 0);
}

fn raw_exchange(addr: std::net::SocketAddr, head: &[u8], body: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(head).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn upstream_500_is_a_shaped_502() {
    let mock = mock();
    let extra = &model("broken", "mock;status=500");
    let gw = Gateway::start(&upstream_config(mock.addr, extra), ONE_SHARD);
    let res = gw.chat("broken", "x", false);
    res.assert_error(502, "upstream_status");
    assert!(
        !res.text().contains("127.0.0.1"),
        "no upstream address leaks: {}",
        res.text()
    );
    assert!(
        !res.text().contains("mock error"),
        "no raw upstream body leaks"
    );
}

#[test]
fn upstream_4xx_about_the_request_is_relayed_as_is() {
    let mock = mock();
    let extra = &model("picky", "mock;status=422");
    let gw = Gateway::start(&upstream_config(mock.addr, extra), ONE_SHARD);
    let res = gw.chat("picky", "x", false);
    assert_eq!(res.status, 422);
    assert_eq!(res.header("x-shardgate-error"), None, "relayed, not ours");
    assert_eq!(res.json()["error"]["code"], "mock_422");
}

#[test]
fn upstream_429_keeps_retry_after() {
    let mock = mock();
    let extra = &model("busy", "mock;status=429;retry_after=7");
    let gw = Gateway::start(&upstream_config(mock.addr, extra), ONE_SHARD);
    let res = gw.chat("busy", "x", false);
    res.assert_error(429, "upstream_status");
    assert_eq!(res.header("retry-after"), Some("7"));
}

#[test]
fn upstream_timeout_is_504() {
    let mock = mock();
    let config = upstream_config(mock.addr, &model("slow", "mock;latency_ms=3000")).replace(
        "first_byte_timeout_ms = 5000",
        "first_byte_timeout_ms = 300",
    );
    let gw = Gateway::start(&config, ONE_SHARD);
    let started = std::time::Instant::now();
    gw.chat("slow", "x", false)
        .assert_error(504, "upstream_timeout");
    assert!(
        started.elapsed() < std::time::Duration::from_millis(2500),
        "gave up at the timeout, not after the answer"
    );
    // The pool still works afterwards.
    assert_eq!(gw.chat("gpt-mock", "x", false).status, 200);
}

#[test]
fn unreachable_upstream_is_502() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = Gateway::start(&upstream_config(port, ""), ONE_SHARD);
    gw.chat("gpt-mock", "x", false)
        .assert_error(502, "upstream_connect");
}

#[test]
fn upstream_over_http2_prior_knowledge() {
    let mock = mock();
    let config =
        upstream_config(mock.addr, "").replace("protocol = \"http1\"", "protocol = \"http2\"");
    let gw = Gateway::start(&config, ONE_SHARD);
    for i in 0..5 {
        let res = gw.chat("gpt-mock", &format!("h2 {i}"), i % 2 == 1);
        assert_eq!(res.status, 200, "{}", res.text());
    }
    assert_eq!(
        mock.stats().chat.load(std::sync::atomic::Ordering::Relaxed),
        5
    );
}

#[test]
fn keep_alive_reuses_upstream_connections() {
    let mock = mock();
    let gw = Gateway::start(&upstream_config(mock.addr, ""), ONE_SHARD);
    for _ in 0..20 {
        assert_eq!(gw.chat("gpt-mock", "x", false).status, 200);
    }
    assert_eq!(
        gw.metric("gateway_upstream_requests_total{provider=\"up\",outcome=\"ok\"}"),
        20.0
    );
    // 20 sequential requests on one shard reuse one kept-alive upstream connection.
    assert_eq!(
        gw.metric("gateway_upstream_connections_total{provider=\"up\"}"),
        1.0
    );
}

#[test]
fn azure_openai_gets_its_deployment_path_api_key_and_api_version() {
    let mock = mock();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[providers.azure]
kind = "openai"
base_url = "http://{}/openai/deployments/gpt4o-prod"
api_key_env = "SHARDGATE_TEST_AZURE_KEY"
key_header = "api-key"
api_version = "2024-10-21"

[models.gpt-4o]
provider = "azure"
model = "gpt-4o"
"#,
        mock.addr
    );
    let gw = Gateway::start_with_env(
        &config,
        ONE_SHARD,
        &[("SHARDGATE_TEST_AZURE_KEY", "az-secret-1")],
    );
    let res = gw.chat("gpt-4o", "hello azure", false);
    assert_eq!(res.status, 200, "{}", res.text());
    let got = mock.stats().last_chat.load_full().unwrap();
    assert_eq!(
        got.path_and_query,
        "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(got.headers["api-key"], "az-secret-1");
    assert!(got.headers.get("authorization").is_none());
    // The key never shows in what the gateway prints.
    assert!(!gw.stderr().contains("az-secret-1"));
}
