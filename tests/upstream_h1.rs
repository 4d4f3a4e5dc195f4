#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The upstream HTTP/1.1 exchange (no connection task) against a hand-driven upstream: what
//! it reuses, what it never reuses, and how it reads framings hyper's server never sends.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::Duration;

use common::{Gateway, ONE_SHARD, upstream_config};

const COMPLETION: &str = r#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hand answer"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

/// What the upstream does with one request on a connection (the index of the request on
/// that connection is passed too); `false` closes the connection after it.
type Answer = fn(usize, &mut TcpStream) -> bool;

/// An upstream that accepts connections one at a time and reports each accept and each
/// connection's end, in order.
fn upstream(answer: Answer) -> (SocketAddr, mpsc::Receiver<&'static str>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            if tx.send("accept").is_err() {
                return;
            }
            let mut n = 0;
            while read_request(&mut conn) && answer(n, &mut conn) {
                n += 1;
            }
            drop(conn);
            if tx.send("closed").is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// Read one request with a `content-length` body; `false` at the end of the connection.
fn read_request(conn: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match conn.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return false,
        }
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).is_ok()
}

fn whole(conn: &mut TcpStream, extra: &str) {
    let res = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n{COMPLETION}",
        COMPLETION.len()
    );
    conn.write_all(res.as_bytes()).unwrap();
}

fn next(rx: &mpsc::Receiver<&'static str>) -> &'static str {
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

fn gateway(addr: SocketAddr) -> Gateway {
    Gateway::start(&upstream_config(addr, ""), ONE_SHARD)
}

fn connections(gw: &Gateway) -> f64 {
    gw.metric("gateway_upstream_connections_total{provider=\"up\"}")
}

#[test]
fn a_connection_the_upstream_closed_while_idle_is_not_used_again() {
    // Answer once, then close as soon as the answer is out: the gateway holds an idle
    // connection that is already closed when the next request comes.
    let (addr, rx) = upstream(|_, conn| {
        whole(conn, "");
        false
    });
    let gw = gateway(addr);
    for _ in 0..3 {
        let r = gw.chat("gpt-mock", "hi", false);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.text().contains("hand answer"));
        assert_eq!(next(&rx), "accept");
        assert_eq!(next(&rx), "closed");
    }
    assert_eq!(connections(&gw), 3.0);
    assert_eq!(
        gw.metric("gateway_upstream_requests_total{provider=\"up\",outcome=\"ok\"}"),
        3.0,
        "no request failed on a closed connection"
    );
}

#[test]
fn bytes_after_the_body_or_connection_close_mean_the_connection_is_not_reused() {
    let stray: Answer = |_, conn| {
        // Keep-alive, but a stray byte after the body: the framing cannot be trusted.
        whole(conn, "");
        conn.write_all(b"X").unwrap();
        true
    };
    // The upstream says it closes, but leaves the socket open.
    let closing: Answer = |_, conn| {
        whole(conn, "connection: close\r\n");
        true
    };
    let clean: Answer = |_, conn| {
        whole(conn, "");
        true
    };
    for (answer, expected) in [(stray, 3.0), (closing, 3.0), (clean, 1.0)] {
        let (addr, _rx) = upstream(answer);
        let gw = gateway(addr);
        for _ in 0..3 {
            let r = gw.chat("gpt-mock", "hi", false);
            assert_eq!(r.status, 200, "{}", r.text());
            assert!(r.text().contains("hand answer"));
        }
        assert_eq!(connections(&gw), expected);
    }
}

#[test]
fn a_chunked_stream_with_trailers_and_events_in_one_write_arrives_whole() {
    let (addr, _rx) = upstream(|_, conn| {
        let mut body = Vec::new();
        let mut chunk =
            |s: &str| body.extend_from_slice(format!("{:x}\r\n{s}\r\n", s.len()).as_bytes());
        for word in ["one ", "two ", "three"] {
            chunk(&format!(
                "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{word}\"}},\"finish_reason\":null}}]}}\n\n"
            ));
        }
        chunk(
            "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        );
        // An event split across two chunks.
        chunk("da");
        chunk("ta: [DONE]\n\n");
        body.extend_from_slice(b"0\r\nx-checksum: 1\r\n\r\n");
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let mut all = head.as_bytes().to_vec();
        all.extend_from_slice(&body);
        conn.write_all(&all).unwrap();
        true
    });
    let gw = gateway(addr);
    for _ in 0..3 {
        let r = gw.chat("gpt-mock", "hi", true);
        assert_eq!(r.status, 200);
        let events = r.events();
        assert_eq!(common::stream_text(&events), "one two three");
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    }
    assert_eq!(
        connections(&gw),
        1.0,
        "a cleanly ended chunked body keeps the connection"
    );
}

#[test]
fn a_malformed_upstream_answer_is_a_502_in_the_clients_dialect() {
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let (addr, _rx) = upstream(|_, conn| {
        let bad: &[u8] = match SEEN.fetch_add(1, Relaxed) % 2 {
            0 => b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabc",
            _ => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        };
        conn.write_all(bad).unwrap();
        false
    });
    let gw = gateway(addr);
    for _ in 0..2 {
        let r = gw.chat("gpt-mock", "hi", false);
        assert_eq!(r.status, 502, "{}", r.text());
        let body = r.json();
        assert!(body["error"]["message"].is_string(), "{body}");
    }
}
