#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#![allow(
    clippy::disallowed_methods,
    reason = "test clients run on plain threads, not shards"
)]
//! Downstream HTTP/2 (prior knowledge), TLS with ALPN, and HTTP/1.1 pipelining.

mod common;

use std::io::{Read, Write};
use std::process::Command;

use common::*;

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, version) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_owned(), version.to_owned())
}

#[test]
fn h2_prior_knowledge_on_plain_tcp() {
    let mock = mock();
    let gw = Gateway::start(&upstream_config(mock.addr, ""), ONE_SHARD);
    let url = format!("http://{}/v1/chat/completions", gw.addr);
    let body = chat_body("gpt-mock", "over h2", true);
    let (out, version) = curl(&[
        "--http2-prior-knowledge",
        "-w",
        "\n%{http_version}",
        "-d",
        &body,
        &url,
    ]);
    assert_eq!(version, "2");
    let events: Vec<String> = out
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").map(str::to_owned))
        .collect();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{out}");
    assert_eq!(stream_text(&events), "This is a mock reply to: over h2");
}

#[test]
fn tls_with_alpn_h2_and_http1() {
    let mock = mock();
    let dir = std::env::temp_dir().join(format!("shardgate-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let config = upstream_config(mock.addr, "").replace(
        "[providers.up]",
        &format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n[providers.up]",
            cert_path.display(),
            key_path.display()
        ),
    );
    let gw = Gateway::start(&config, ONE_SHARD);
    let url = format!("https://localhost:{}/v1/chat/completions", gw.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", gw.addr.port());
    let ca = cert_path.to_str().unwrap();
    let body = chat_body("gpt-mock", "over tls", false);
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let args = [
            flag,
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            "-w",
            "\n%{http_version}",
            "-d",
            &body,
            &url,
        ];
        let (out, version) = curl(&args);
        assert_eq!(version, want, "ALPN with {flag}");
        assert!(out.contains("over tls"), "{out}");
    }
}

#[test]
fn pipelined_http1_requests_are_answered_in_order() {
    let mock = mock();
    let gw = Gateway::start(&upstream_config(mock.addr, ""), ONE_SHARD);
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut all = Vec::new();
    for i in 0..3 {
        let body = chat_body("gpt-mock", &format!("pipe{i}"), false);
        let close = if i == 2 { "connection: close\r\n" } else { "" };
        all.extend_from_slice(format!("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n{close}content-length: {}\r\n\r\n{body}", body.len()).as_bytes());
    }
    s.write_all(&all).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (a, b, c) = (
        raw.find("pipe0").unwrap(),
        raw.find("pipe1").unwrap(),
        raw.find("pipe2").unwrap(),
    );
    assert!(a < b && b < c, "in order");
    assert_eq!(raw.matches("HTTP/1.1 200 OK").count(), 3);
}

#[test]
fn tls_upstream_with_a_private_ca_and_alpn() {
    use shardgate::mock::Knobs;
    use shardgate::mock::server::{MockConfig, MockServer};
    let dir = std::env::temp_dir().join(format!("shardgate-uptls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let files = shardgate::config::TlsFiles {
        cert_file: cert_path.display().to_string(),
        key_file: key_path.display().to_string(),
    };
    let mock = MockServer::start(MockConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cores: vec![None],
        defaults: Knobs::default(),
        schedule: Default::default(),
        tls: Some(shardgate::http::tls::server_config(&files).unwrap()),
    })
    .unwrap();
    for (protocol, connections) in [("auto", 1.0), ("http1", 1.0)] {
        let config = upstream_config(mock.addr, "")
            .replace(
                &format!("http://{}", mock.addr),
                &format!("https://localhost:{}", mock.addr.port()),
            )
            .replace(
                "protocol = \"http1\"",
                &format!(
                    "protocol = \"{protocol}\"\nca_file = \"{}\"",
                    cert_path.display()
                ),
            );
        let gw = Gateway::start(&config, ONE_SHARD);
        for i in 0..4 {
            let res = gw.chat("gpt-mock", &format!("tls {i}"), i % 2 == 0);
            assert_eq!(res.status, 200, "{protocol}: {}", res.text());
            let text = if i % 2 == 0 {
                stream_text(&res.events())
            } else {
                res.json()["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            };
            assert_eq!(text, format!("This is a mock reply to: tls {i}"));
        }
        // Sequential requests share one TLS connection (h2 via ALPN, or h1 keep-alive).
        assert_eq!(
            gw.metric("gateway_upstream_connections_total{provider=\"up\"}"),
            connections,
            "{protocol}"
        );
    }
    // Without the private CA the public roots do not trust the mock: a clean 502.
    let config = upstream_config(mock.addr, "").replace(
        &format!("http://{}", mock.addr),
        &format!("https://localhost:{}", mock.addr.port()),
    );
    let gw = Gateway::start(&config, ONE_SHARD);
    gw.chat("gpt-mock", "x", false)
        .assert_error(502, "upstream_connect");
}

#[test]
fn idle_h2_connection_is_closed_quietly_not_sent_http1_bytes() {
    use std::io::{Read, Write};
    let config = "[server]\nlisten = \"127.0.0.1:0\"\nheader_timeout_ms = 200\nidle_timeout_ms = 600\n\n[providers.mock]\nkind = \"mock\"\n\n[models.mock]\nprovider = \"mock\"\n";
    let gw = Gateway::start(config, ONE_SHARD);
    let mut s = std::net::TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    // The h2 preface and an empty SETTINGS frame, then nothing.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(500),
        "closed by the idle timeout, not the head timeout"
    );
    assert!(
        !got.windows(8).any(|w| w == b"HTTP/1.1"),
        "no HTTP/1.1 bytes on an h2 connection"
    );
}
