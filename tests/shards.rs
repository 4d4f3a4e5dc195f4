#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#![allow(
    clippy::disallowed_methods,
    reason = "test clients run on plain threads, not shards"
)]
//! Shards: both serve; a panic in one request harms nothing else; timeouts.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::*;

#[test]
fn two_shards_both_serve() {
    let mock = mock();
    let gw = Gateway::start(&upstream_config(mock.addr, ""), TWO_SHARDS);
    // Each request on a new connection: the kernel spreads connections over the shards.
    for i in 0..200 {
        let res = gw.chat("gpt-mock", &format!("n{i}"), false);
        assert_eq!(res.status, 200);
    }
    let metrics = gw.get("/metrics").text();
    let per_shard: Vec<f64> = (0..2)
        .map(|s| {
            gw_metric_line(
                &metrics,
                &format!("gateway_shard_requests_total{{shard=\"{s}\"}}"),
            )
        })
        .collect();
    assert!(
        per_shard.iter().all(|&n| n > 0.0),
        "both shards served: {per_shard:?}"
    );
    assert!(per_shard.iter().sum::<f64>() >= 200.0);
}

fn gw_metric_line(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

const PANIC_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
header_timeout_ms = 300
idle_timeout_ms = 400

[providers.mock]
kind = "mock"
allow_fault_injection = true

[models.mock]
provider = "mock"
"#;

#[test]
fn a_panicking_request_harms_nothing_else() {
    let gw = Gateway::start(PANIC_CONFIG, ONE_SHARD);
    // A slow stream in flight on the same shard while another request panics.
    let body = chat_body("mock", "before", false);
    let res = request(
        gw.addr,
        "POST",
        "/v1/chat/completions",
        &[("x-mock-panic", "1")],
        body.as_bytes(),
    );
    res.assert_error(500, "internal");
    assert!(
        !res.text().contains("x-mock-panic"),
        "panic text stays in the log"
    );
    for _ in 0..5 {
        assert_eq!(gw.post("/v1/chat/completions", &body).status, 200);
    }
    assert_eq!(gw.metric("gateway_panics_total"), 1.0);
    assert!(gw.stderr().contains("panicked"));
}

#[test]
fn slow_request_head_gets_408() {
    let gw = Gateway::start(PANIC_CONFIG, ONE_SHARD);
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw).assert_error_no_id(408, "request_timeout");
}

/// A connection that never sends a byte is closed by the header timeout (not kept for the
/// idle timeout, which is a minute here), quietly.
#[test]
fn a_silent_connection_is_closed_by_the_header_timeout() {
    let config = PANIC_CONFIG.replace("idle_timeout_ms = 400", "idle_timeout_ms = 60000");
    let gw = Gateway::start(&config, ONE_SHARD);
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).unwrap(), 0, "closed without a byte");
    assert!(gw.metric("gateway_connection_timeouts_total") >= 1.0);
}

/// Accept is deferred until a client speaks: fifty clients that connect and say nothing hold
/// no descriptor of the gateway's (and cannot queue ahead of a live client), which is served
/// at once among them.
#[test]
fn silent_connections_are_not_accepted_until_they_speak() {
    let config = PANIC_CONFIG.replace("header_timeout_ms = 300", "header_timeout_ms = 10000");
    let gw = Gateway::start(&config, ONE_SHARD);
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", gw.child.id()))
            .unwrap()
            .count()
    };
    assert_eq!(gw.get("/health").status, 200);
    let before = fds();
    let silent: Vec<_> = (0..50)
        .map(|_| std::net::TcpStream::connect(gw.addr).unwrap())
        .collect();
    assert_eq!(gw.get("/health").status, 200, "a live client is served");
    let during = fds();
    assert!(
        during < before + 10,
        "50 silent connections took descriptors: {before} -> {during}"
    );
    // A client that speaks after a while is accepted then and served.
    let mut late = std::net::TcpStream::connect(gw.addr).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    late.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    late.read_to_end(&mut raw).unwrap();
    assert_eq!(parse_response(&raw).status, 200);
    drop(silent);
}

/// Between requests the idle timeout applies, and the close is quiet.
#[test]
fn idle_keep_alive_connection_is_closed() {
    let config = PANIC_CONFIG.replace("header_timeout_ms = 300", "header_timeout_ms = 60000");
    let gw = Gateway::start(&config, ONE_SHARD);
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        parse_response(&raw).status,
        200,
        "one answer, then a quiet close"
    );
    assert!(gw.metric("gateway_connection_timeouts_total") >= 1.0);
}

#[test]
fn oversized_headers_are_rejected() {
    let gw = Gateway::start(PANIC_CONFIG, ONE_SHARD);
    let huge = "a".repeat(40_000);
    let res = request(gw.addr, "GET", "/health", &[("x-big", &huge)], b"");
    res.assert_error_no_id(431, "headers_too_large");
    // A head hyper cannot parse gets a 400 the same way.
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nbad header line\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert_eq!(parse_response(&raw).status, 400);
    assert_eq!(gw.get("/health").status, 200);
}

trait AssertNoId {
    fn assert_error_no_id(&self, status: u16, code: &str);
}

impl AssertNoId for Resp {
    fn assert_error_no_id(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.json()["error"]["code"], code);
        assert_eq!(self.header("x-shardgate-error"), Some(code));
    }
}
