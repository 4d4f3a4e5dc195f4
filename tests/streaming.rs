#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#![allow(
    clippy::disallowed_methods,
    reason = "test clients run on plain threads, not shards"
)]
//! Streaming (SSE) through an upstream, and failures after the first byte.

mod common;

use common::*;

#[test]
fn streamed_chat_through_an_upstream() {
    let mock = mock();
    let gw = Gateway::start(&upstream_config(mock.addr, ""), ONE_SHARD);
    let res = gw.chat("gpt-mock", "stream me please", true);
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    let events = res.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(
        stream_text(&events),
        "This is a mock reply to: stream me please"
    );
    // The usage event came through and was teed into the metrics.
    assert!(events.iter().any(|e| e.contains("\"usage\":{")));
    assert!(gw.metric("gateway_tokens_total{provider=\"up\",direction=\"output\"}") > 0.0);
}

#[test]
fn usage_is_accounted_even_when_the_client_did_not_ask_for_it() {
    let mock = mock();
    let gw = Gateway::start(&upstream_config(mock.addr, ""), ONE_SHARD);
    let body = serde_json::json!({
        "model": "gpt-mock",
        "stream": true,
        "messages": [{"role": "user", "content": "count my tokens"}],
    });
    let res = gw.post("/v1/chat/completions", &body.to_string());
    assert_eq!(res.status, 200, "{}", res.text());
    let events = res.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(
        stream_text(&events),
        "This is a mock reply to: count my tokens"
    );
    // The gateway asked the upstream for usage, took it, and dropped the extra chunk the
    // client never asked for.
    assert!(
        !events.iter().any(|e| e.contains("\"usage\"")),
        "{events:?}"
    );
    let output = gw.metric("gateway_tokens_total{provider=\"up\",direction=\"output\"}");
    let words = stream_text(&events).split_whitespace().count();
    assert_eq!(
        output, words as f64,
        "the mock counts one token per word of its reply"
    );
    assert!(gw.metric("gateway_tokens_total{provider=\"up\",direction=\"input\"}") > 0.0);
}

#[test]
fn upstream_reset_mid_stream_ends_with_one_error_event() {
    let mock = mock();
    let extra = &model("flaky", "mock;reset_after=3");
    let gw = Gateway::start(&upstream_config(mock.addr, extra), ONE_SHARD);
    let res = gw.chat("flaky", "x", true);
    assert_eq!(res.status, 200);
    let events = res.events();
    assert_eq!(events.len(), 4, "{events:?}");
    let last: serde_json::Value = serde_json::from_str(&events[3]).unwrap();
    assert_eq!(last["error"]["code"], "upstream_protocol", "{last}");
    assert_eq!(events.iter().filter(|e| e.contains("\"error\"")).count(), 1);
    assert!(
        !events
            .iter()
            .any(|e| e == "[DONE]" || e.contains("\"finish_reason\":\"stop\"")),
        "never looks complete"
    );
}

#[test]
fn in_band_upstream_error_is_relayed_once() {
    let mock = mock();
    let extra = &model("errs", "mock;error_after=2");
    let gw = Gateway::start(&upstream_config(mock.addr, extra), ONE_SHARD);
    let events = gw.chat("errs", "x", true).events();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(
        events.iter().filter(|e| e.contains("\"error\"")).count(),
        1,
        "{events:?}"
    );
}

#[test]
fn upstream_stall_mid_stream_hits_the_idle_timeout() {
    let mock = mock();
    let config = upstream_config(mock.addr, &model("stall", "mock;stall=body"))
        .replace("idle_timeout_ms = 5000", "idle_timeout_ms = 300");
    let gw = Gateway::start(&config, ONE_SHARD);
    let res = gw.chat("stall", "x", true);
    assert_eq!(res.status, 200);
    let events = res.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("upstream_timeout"), "{events:?}");
}

#[test]
fn slow_chunks_are_not_buffered() {
    // 5 content chunks 150 ms apart: the first must arrive long before the last.
    use std::io::{BufRead, BufReader, Write};
    let mock = mock();
    let extra = &model("drip", "mock;chunks=5;interval_ms=150");
    let gw = Gateway::start(&upstream_config(mock.addr, extra), ONE_SHARD);
    let body = chat_body("drip", "x", true);
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    write!(s, "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
    let started = std::time::Instant::now();
    let mut r = BufReader::new(s);
    let mut first_data = None;
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 0 {
        if line.starts_with("data: ") && first_data.is_none() {
            first_data = Some(started.elapsed());
        }
        line.clear();
    }
    let total = started.elapsed();
    let first = first_data.unwrap();
    assert!(
        total.as_millis() >= 600,
        "the mock spaced the chunks: {total:?}"
    );
    assert!(
        first * 3 < total,
        "first event at {first:?} of {total:?}: buffered?"
    );
}
