#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#![allow(
    clippy::disallowed_methods,
    reason = "test clients and fake upstreams run on plain threads, not shards"
)]
//! Issue 10's adversarial suite: a hostile but honest client over raw sockets (requests with
//! bytes after them, pipelining, smuggling variants, bad chunking, limits), upstreams that
//! misbehave at each point of an exchange (a recording upstream that closes or resets), streams
//! whose text looks like a terminal event, and shutdown with idle clients and running streams.
//!
//! Every socket has a read deadline: a case that would hang fails with `Timeout` instead.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The longest any one read-to-the-end may take.
const READ_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Raw client side.

/// How a read to the end stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The peer closed (FIN).
    Eof,
    /// The peer reset the connection.
    Reset,
    /// Nothing more came before the deadline: the connection was left open.
    Timeout,
}

/// A loopback connection with read and write deadlines.
fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_LIMIT)).unwrap();
    s.set_write_timeout(Some(READ_LIMIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Read until the peer closes, resets, or `READ_LIMIT` passes.
fn read_to_close(s: &mut TcpStream) -> (Vec<u8>, End) {
    read_to_close_within(s, READ_LIMIT)
}

fn read_to_close_within(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, End) {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, End::Timeout);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (out, End::Eof),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (out, End::Timeout);
            }
            Err(_) => return (out, End::Reset),
        }
    }
}

/// Read until `done(bytes so far)` holds (or the peer closes, or the deadline passes).
fn read_until(s: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + READ_LIMIT;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while !done(&out) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out waiting; got {:?}",
            String::from_utf8_lossy(&out)
        );
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read failed ({e}); got {:?}", String::from_utf8_lossy(&out)),
        }
    }
    out
}

/// Write `bytes` in one write on a new connection, then read until the gateway closes.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Exchange {
    let mut s = connect(addr);
    s.write_all(bytes).unwrap();
    let (raw, end) = read_to_close(&mut s);
    Exchange::new(raw, end)
}

/// What came back on one connection.
#[derive(Debug)]
struct Exchange {
    raw: Vec<u8>,
    end: End,
    answers: Vec<Answer>,
    /// Bytes after the last whole response head that are not a response.
    leftover: Vec<u8>,
}

impl Exchange {
    fn new(raw: Vec<u8>, end: End) -> Self {
        let (answers, leftover) = split_answers(&raw);
        Self {
            raw,
            end,
            answers,
            leftover,
        }
    }

    /// Raw bytes for a failure message.
    fn show(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw);
        let cut: String = text.chars().take(1500).collect();
        format!(
            "end {:?}, {} bytes, {} response(s): {cut:?}",
            self.end,
            self.raw.len(),
            self.answers.len()
        )
    }

    /// How many status lines (`HTTP/1.x NNN`) appear anywhere in the bytes.
    fn status_lines(&self) -> usize {
        self.raw
            .windows(7)
            .enumerate()
            .filter(|(i, w)| {
                (w == b"HTTP/1." && (*i == 0 || self.raw[i - 1] == b'\n'))
                    && self.raw.get(i + 8) == Some(&b' ')
            })
            .count()
    }

    /// Exactly one response of one of `statuses`, then the connection closed.
    fn assert_one_then_closed(&self, statuses: &[u16]) {
        assert_eq!(self.answers.len(), 1, "one response: {}", self.show());
        let a = &self.answers[0];
        assert!(
            statuses.contains(&a.status),
            "status {} not in {statuses:?}: {}",
            a.status,
            self.show()
        );
        assert!(a.complete, "a whole response: {}", self.show());
        assert!(
            self.leftover.is_empty(),
            "nothing after it: {}",
            self.show()
        );
        assert_eq!(self.status_lines(), 1, "one status line: {}", self.show());
        assert_ne!(
            self.end,
            End::Timeout,
            "the gateway closes the connection: {}",
            self.show()
        );
    }
}

/// One response read off the wire.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunked: bool,
    /// The framing was whole: `Content-Length` bytes, the chunked terminator, or EOF for a
    /// close-delimited body.
    complete: bool,
}

impl Answer {
    fn resp(&self) -> Resp {
        Resp {
            status: self.status,
            headers: self.headers.clone(),
            body: self.body.clone(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Split consecutive HTTP/1.x responses (1xx skipped); the rest, if not a response, is returned.
fn split_answers(raw: &[u8]) -> (Vec<Answer>, Vec<u8>) {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let rest = &raw[pos..];
        let Some(head_end) = find(rest, b"\r\n\r\n") else {
            return (out, rest.to_vec());
        };
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status = match status_line.strip_prefix("HTTP/1.") {
            Some(s) => s.get(2..5).and_then(|c| c.parse::<u16>().ok()),
            None => None,
        };
        let Some(status) = status else {
            return (out, rest.to_vec());
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let body_start = head_end + 4;
        pos += body_start;
        if (100..200).contains(&status) {
            continue;
        }
        let rest = &raw[pos..];
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let (body, used, complete) = if status == 204 || status == 304 {
            (Vec::new(), 0, true)
        } else if chunked {
            dechunk(rest)
        } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let n = len.min(rest.len());
            (rest[..n].to_vec(), n, n == len)
        } else {
            (rest.to_vec(), rest.len(), true)
        };
        pos += used;
        out.push(Answer {
            status,
            headers,
            body,
            chunked,
            complete,
        });
    }
    (out, Vec::new())
}

/// A chunked body: (payload, bytes used, terminator seen).
fn dechunk(b: &[u8]) -> (Vec<u8>, usize, bool) {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let Some(nl) = find(&b[pos..], b"\r\n") else {
            return (out, b.len(), false);
        };
        let line = String::from_utf8_lossy(&b[pos..pos + nl]).into_owned();
        let size_text = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return (out, b.len(), false);
        };
        pos += nl + 2;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let Some(nl) = find(&b[pos..], b"\r\n") else {
                    return (out, b.len(), false);
                };
                pos += nl + 2;
                if nl == 0 {
                    return (out, pos, true);
                }
            }
        }
        if b.len() < pos + size + 2 {
            out.extend_from_slice(&b[pos..(pos + size).min(b.len())]);
            return (out, b.len(), false);
        }
        out.extend_from_slice(&b[pos..pos + size]);
        pos += size + 2;
    }
}

/// A chat request's bytes: `version` is `1.1` or `1.0`, `extra` more header lines (each ending
/// in `\r\n`).
fn chat_request(version: &str, text: &str, extra: &str) -> Vec<u8> {
    let body = chat_body("gpt-mock", text, false);
    format!(
        "POST /v1/chat/completions HTTP/{version}\r\nhost: gw\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The reply text of a whole (non-streamed) chat answer.
fn reply_text(a: &Answer) -> String {
    let v: Value = serde_json::from_slice(&a.body)
        .unwrap_or_else(|e| panic!("answer body is not JSON ({e}): {}", a.text()));
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no reply text: {v}"))
        .to_owned()
}

fn upstream_chats(mock: &shardgate::mock::server::MockServer) -> u64 {
    mock.stats().chat.load(Relaxed)
}

// ---------------------------------------------------------------------------------------------
// Defect 1: a response is lost when bytes follow a request on a connection that closes after it.

/// The answer reached the client whole and the upstream saw exactly one request, or the request
/// was refused before anything went upstream: never an upstream call with the answer lost.
fn assert_answered_or_refused(
    gw: &Gateway,
    mock: &shardgate::mock::server::MockServer,
    bytes: &[u8],
    text: &str,
) {
    let ex = exchange(gw.addr, bytes);
    let calls = upstream_chats(mock);
    match ex.answers.first() {
        Some(a) if a.status == 200 => {
            assert!(a.complete, "a whole answer: {}", ex.show());
            assert_eq!(reply_text(a), format!("This is a mock reply to: {text}"));
            assert_eq!(calls, 1, "one upstream request: {}", ex.show());
            assert_eq!(ex.answers.len(), 1, "one answer only: {}", ex.show());
        }
        Some(a) if (400..500).contains(&a.status) => {
            assert_eq!(calls, 0, "refused, so nothing upstream: {}", ex.show());
        }
        _ => panic!(
            "lost response: {calls} upstream request(s), client got {}",
            ex.show()
        ),
    }
    assert_ne!(ex.end, End::Timeout, "the connection closes: {}", ex.show());
}

fn gateway_on_mock() -> (shardgate::mock::server::MockServer, Gateway) {
    let mock = mock();
    let gw = Gateway::start(&upstream_config(mock.addr, ""), ONE_SHARD);
    (mock, gw)
}

#[test]
fn lost_response_connection_close_plus_one_byte() {
    let (mock, gw) = gateway_on_mock();
    let mut bytes = chat_request("1.1", "close then one byte", "connection: close\r\n");
    bytes.push(b'X');
    assert_answered_or_refused(&gw, &mock, &bytes, "close then one byte");
}

#[test]
fn lost_response_connection_close_plus_second_request() {
    let (mock, gw) = gateway_on_mock();
    let mut bytes = chat_request("1.1", "close then more", "connection: close\r\n");
    bytes.extend(chat_request("1.1", "never asked", ""));
    assert_answered_or_refused(&gw, &mock, &bytes, "close then more");
}

#[test]
fn lost_response_http10_plus_one_byte() {
    let (mock, gw) = gateway_on_mock();
    let mut bytes = chat_request("1.0", "old client", "");
    bytes.push(b'X');
    assert_answered_or_refused(&gw, &mock, &bytes, "old client");
}

#[test]
fn lost_response_health_connection_close_plus_one_byte() {
    let (_mock, gw) = gateway_on_mock();
    let ex = exchange(
        gw.addr,
        b"GET /health HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\nX",
    );
    let first = ex.answers.first();
    assert!(
        first.is_some_and(|a| a.complete && (a.status == 200 || (400..500).contains(&a.status))),
        "lost response: {}",
        ex.show()
    );
    assert_ne!(ex.end, End::Timeout, "{}", ex.show());
}

#[test]
fn lost_response_pipelined_keep_alive_then_garbage() {
    let (mock, gw) = gateway_on_mock();
    let mut bytes = chat_request("1.1", "first", "");
    bytes.extend(chat_request("1.1", "second", ""));
    bytes.extend_from_slice(b"\x01\x02 garbage \x7f\r\n\r\n");
    let ex = exchange(gw.addr, &bytes);
    assert!(ex.answers.len() >= 2, "both answered: {}", ex.show());
    for (a, text) in ex.answers.iter().zip(["first", "second"]) {
        assert_eq!(a.status, 200, "{}", ex.show());
        assert_eq!(reply_text(a), format!("This is a mock reply to: {text}"));
    }
    assert_eq!(upstream_chats(&mock), 2);
    // Then a 400 for the garbage, or a plain close; nothing else.
    assert!(ex.answers.len() <= 3, "{}", ex.show());
    if let Some(a) = ex.answers.get(2) {
        assert_eq!(a.status, 400, "{}", ex.show());
    }
    assert!(ex.leftover.is_empty(), "{}", ex.show());
    assert_ne!(ex.end, End::Timeout, "{}", ex.show());
}

// ---------------------------------------------------------------------------------------------
// Defect 5: framing.

/// POST `/v1/chat/completions` with these header lines and body bytes: exactly one response of
/// `statuses`, then the connection closes, and nothing went upstream.
fn assert_refused(head_lines: &str, body: &[u8], statuses: &[u16]) {
    let (mock, gw) = gateway_on_mock();
    let mut bytes = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n{head_lines}\r\n"
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    let ex = exchange(gw.addr, &bytes);
    ex.assert_one_then_closed(statuses);
    assert_eq!(upstream_chats(&mock), 0, "nothing upstream: {}", ex.show());
}

/// A chunked body that ends, followed by a smuggled request.
fn smuggling_body() -> Vec<u8> {
    b"0\r\n\r\nGET /health HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n".to_vec()
}

#[test]
fn framing_content_length_and_chunked_is_refused_and_closed() {
    let body = smuggling_body();
    assert_refused(
        &format!(
            "content-length: {}\r\ntransfer-encoding: chunked\r\n",
            body.len()
        ),
        &body,
        &[400],
    );
}

#[test]
fn framing_chunked_then_content_length_is_refused_and_closed() {
    let body = smuggling_body();
    assert_refused(
        &format!(
            "transfer-encoding: chunked\r\ncontent-length: {}\r\n",
            body.len()
        ),
        &body,
        &[400],
    );
}

#[test]
fn framing_chunked_identity_is_refused_and_closed() {
    let body = smuggling_body();
    assert_refused(
        &format!(
            "content-length: {}\r\ntransfer-encoding: chunked, identity\r\n",
            body.len()
        ),
        &body,
        &[400],
    );
}

#[test]
fn framing_xchunked_is_refused_and_closed() {
    let body = smuggling_body();
    assert_refused(
        &format!(
            "content-length: {}\r\ntransfer-encoding: xchunked\r\n",
            body.len()
        ),
        &body,
        &[400, 501],
    );
}

#[test]
fn framing_duplicate_differing_content_length_is_refused_and_closed() {
    assert_refused("content-length: 2\r\ncontent-length: 3\r\n", b"{} ", &[400]);
}

#[test]
fn framing_plus_sign_content_length_is_refused_and_closed() {
    assert_refused("content-length: +2\r\n", b"{}", &[400]);
}

#[test]
fn framing_obs_fold_header_is_refused_and_closed() {
    assert_refused("content-length: 2\r\nx-folded: a\r\n  b\r\n", b"{}", &[400]);
}

#[test]
fn framing_space_before_colon_is_refused_and_closed() {
    let body = smuggling_body();
    assert_refused(
        &format!(
            "content-length: {}\r\ntransfer-encoding : chunked\r\n",
            body.len()
        ),
        &body,
        &[400],
    );
}

/// A chunked body with broken framing: 400, then close.
fn assert_bad_chunking(body: &[u8]) {
    assert_refused("transfer-encoding: chunked\r\n", body, &[400]);
}

#[test]
fn framing_chunk_size_zz() {
    assert_bad_chunking(b"zz\r\nhello\r\n0\r\n\r\n");
}

#[test]
fn framing_chunk_size_negative() {
    assert_bad_chunking(b"-1\r\nhello\r\n0\r\n\r\n");
}

#[test]
fn framing_chunk_size_hex_prefix() {
    let mut body = b"0x3e\r\n".to_vec();
    body.extend_from_slice(&[b'a'; 0x3e]);
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    assert_bad_chunking(&body);
}

#[test]
fn framing_chunk_size_overflow() {
    assert_bad_chunking(b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n");
}

#[test]
fn framing_chunk_bare_lf() {
    // A valid chat request in the chunk, so a lenient decoder would pass it upstream.
    let json = chat_body("gpt-mock", "bare lf", false);
    let body = format!("{:x}\n{json}\n0\n\n", json.len());
    assert_bad_chunking(body.as_bytes());
}

#[test]
fn framing_short_chunk() {
    // Declared 10, sent 5, then the next size line.
    assert_bad_chunking(b"a\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n");
}

#[test]
fn framing_body_far_over_limit_gets_one_413_and_nothing_after() {
    let (mock, gw) = gateway_on_mock();
    // `upstream_config` sets max_body_bytes = 65536; declare and send 2 MiB more.
    let len = 65536 + 2 * 1024 * 1024;
    let mut s = connect(gw.addr);
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    )
    .unwrap();
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        // The gateway may stop reading: errors and a blocked write (deadline) are fine.
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < len {
            if writer.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
    });
    let (raw, end) = read_to_close(&mut s);
    drop(s);
    sender.join().unwrap();
    let ex = Exchange::new(raw, end);
    ex.assert_one_then_closed(&[413]);
    assert_eq!(upstream_chats(&mock), 0);
}

/// `GET /health` with `n` header lines in all (host and connection included).
fn with_headers(n: usize) -> Vec<u8> {
    let mut req = "GET /health HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n".to_owned();
    for i in 0..n - 2 {
        req.push_str(&format!("x-small-header-{i:03}: v\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

#[test]
fn framing_101_headers_get_431_naming_the_limit() {
    let (_mock, gw) = gateway_on_mock();
    let ok = exchange(gw.addr, &with_headers(100));
    assert_eq!(
        ok.answers.first().map(|a| a.status),
        Some(200),
        "{}",
        ok.show()
    );
    let req = with_headers(101);
    assert!(req.len() < 2500, "small headers: {} bytes", req.len());
    assert_431_naming(&exchange(gw.addr, &req), 100);
}

/// One answer, a 431 whose message names the header-count limit `limit`.
fn assert_431_naming(ex: &Exchange, limit: usize) {
    assert_eq!(ex.answers.len(), 1, "{}", ex.show());
    let a = &ex.answers[0];
    assert_eq!(a.status, 431, "{}", ex.show());
    let text = a.text().to_ascii_lowercase();
    assert!(
        text.contains("header") && text.contains(&limit.to_string()),
        "the message names the header-count limit: {}",
        a.text()
    );
}

#[test]
fn framing_max_headers_is_a_config_knob() {
    let mock = mock();
    let config = upstream_config(mock.addr, "").replace(
        "max_body_bytes = 65536",
        "max_body_bytes = 65536\nmax_headers = 20",
    );
    let gw = Gateway::start(&config, ONE_SHARD);
    let ok = exchange(gw.addr, &with_headers(20));
    assert_eq!(
        ok.answers.first().map(|a| a.status),
        Some(200),
        "{}",
        ok.show()
    );
    assert_431_naming(&exchange(gw.addr, &with_headers(21)), 20);
}

#[test]
fn framing_head_over_max_header_bytes_gets_431() {
    let mock = mock();
    let config = upstream_config(mock.addr, "").replace(
        "max_body_bytes = 65536",
        "max_body_bytes = 65536\nmax_header_bytes = 4096",
    );
    let gw = Gateway::start(&config, ONE_SHARD);
    let req = format!(
        "GET /health HTTP/1.1\r\nhost: gw\r\nconnection: close\r\nx-big: {}\r\n\r\n",
        "a".repeat(8000)
    );
    let ex = exchange(gw.addr, req.as_bytes());
    ex.assert_one_then_closed(&[431]);
}

#[test]
fn framing_head_over_default_max_header_bytes_gets_431() {
    // The default limit is 32 KiB.
    let (_mock, gw) = gateway_on_mock();
    let req = format!(
        "GET /health HTTP/1.1\r\nhost: gw\r\nconnection: close\r\nx-big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let ex = exchange(gw.addr, req.as_bytes());
    ex.assert_one_then_closed(&[431]);
}

// ---------------------------------------------------------------------------------------------
// Fake upstreams: plain threads on loopback.

/// A thread server on `127.0.0.1:0` running `handle` per connection (each on its own thread);
/// stops accepting when dropped.
struct ThreadServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicUsize>,
}

impl ThreadServer {
    fn start(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let handle = Arc::new(handle);
        let (stop2, accepted2) = (stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                accepted2.fetch_add(1, Relaxed);
                conn.set_read_timeout(Some(READ_LIMIT)).unwrap();
                conn.set_write_timeout(Some(READ_LIMIT)).unwrap();
                let handle = handle.clone();
                std::thread::spawn(move || handle(conn));
            }
        });
        Self {
            addr,
            stop,
            accepted,
        }
    }
}

impl Drop for ThreadServer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Read one whole request (head and `Content-Length` or chunked body) from `conn`, keeping
/// what follows in `buf`; `None` when the connection ends first.
fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let mut tmp = [0u8; 16 * 1024];
    let mut fill = |conn: &mut TcpStream, buf: &mut Vec<u8>| match conn.read(&mut tmp) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    };
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if !fill(conn, buf) {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let start = head_end + 4;
    let body = if head.contains("transfer-encoding: chunked") {
        let end = loop {
            if let Some(i) = find(&buf[start..], b"\r\n0\r\n\r\n") {
                break start + i + 7;
            }
            if buf[start..].starts_with(b"0\r\n\r\n") {
                break start + 5;
            }
            if !fill(conn, buf) {
                return None;
            }
        };
        let (body, _, _) = dechunk(&buf[start..end]);
        buf.drain(..end);
        body
    } else {
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < start + len {
            if !fill(conn, buf) {
                return None;
            }
        }
        let body = buf[start..start + len].to_vec();
        buf.drain(..start + len);
        body
    };
    Some((head, body))
}

/// A whole OpenAI chat completion, keep-alive.
fn completion_response() -> Vec<u8> {
    let body = r#"{"id":"chatcmpl-adv","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"recorded answer"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Defect 2: a request that may have reached the upstream is never sent again.

/// Where the recording upstream misbehaves on the second and later requests of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Misbehave {
    /// (i) Close right after reading the whole request.
    CloseAfterRequest,
    /// (ii) Reset (`SO_LINGER` 0, close) after reading the whole request.
    ResetAfterRequest,
    /// (iii) Close after reading only part of the request head.
    CloseInRequestHead,
    /// (iv) Close after sending half the response head.
    CloseInResponseHead,
    /// (v) Close in the middle of a `Content-Length` body.
    CloseInResponseBody,
    /// (vi) Close without reading anything once the next request arrives.
    CloseUnread,
}

impl Misbehave {
    /// Does the upstream read the whole request before it misbehaves?
    fn reads_request(self) -> bool {
        !matches!(self, Self::CloseInRequestHead | Self::CloseUnread)
    }
}

/// An upstream that answers the first request of each connection and misbehaves on the next;
/// it reports the body of every request it fully received, and counts its misbehaviours.
struct Recorder {
    server: ThreadServer,
    received: mpsc::Receiver<String>,
    misbehaved: Arc<AtomicUsize>,
}

impl Recorder {
    fn start(mode: Misbehave) -> Self {
        let (tx, received) = mpsc::channel();
        let misbehaved = Arc::new(AtomicUsize::new(0));
        let count = misbehaved.clone();
        let server = ThreadServer::start(move |conn| {
            record_connection(conn, mode, &tx, &count);
        });
        Self {
            server,
            received,
            misbehaved,
        }
    }
}

fn record_connection(
    mut conn: TcpStream,
    mode: Misbehave,
    tx: &mpsc::Sender<String>,
    misbehaved: &AtomicUsize,
) {
    let mut buf = Vec::new();
    for n in 0.. {
        if n > 0 && buf.is_empty() {
            match mode {
                Misbehave::CloseUnread => {
                    // Wait until the next request arrives, then close without reading it.
                    let mut one = [0u8; 1];
                    if !matches!(conn.peek(&mut one), Ok(1)) {
                        return;
                    }
                    misbehaved.fetch_add(1, Relaxed);
                    return;
                }
                Misbehave::CloseInRequestHead => {
                    let mut part = [0u8; 16];
                    if !matches!(conn.read(&mut part), Ok(k) if k > 0) {
                        return;
                    }
                    misbehaved.fetch_add(1, Relaxed);
                    return;
                }
                _ => {}
            }
        }
        let Some((_head, body)) = read_request(&mut conn, &mut buf) else {
            return;
        };
        let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
        if n == 0 {
            if conn.write_all(&completion_response()).is_err() {
                return;
            }
            continue;
        }
        misbehaved.fetch_add(1, Relaxed);
        let answer = completion_response();
        match mode {
            Misbehave::CloseAfterRequest => {
                let _ = conn.shutdown(std::net::Shutdown::Both);
            }
            Misbehave::ResetAfterRequest => {
                let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
            }
            Misbehave::CloseInResponseHead => {
                let head_end = find(&answer, b"\r\n\r\n").unwrap();
                let _ = conn.write_all(&answer[..head_end / 2]);
                let _ = conn.flush();
            }
            Misbehave::CloseInResponseBody => {
                let head_end = find(&answer, b"\r\n\r\n").unwrap() + 4;
                let half = head_end + (answer.len() - head_end) / 2;
                let _ = conn.write_all(&answer[..half]);
                let _ = conn.flush();
            }
            Misbehave::CloseInRequestHead | Misbehave::CloseUnread => {}
        }
        return;
    }
}

/// The marker of each client request in what the upstream received.
fn marker(i: usize) -> String {
    format!("adversarial request {i:02}")
}

/// 10 sequential client requests through a pooled keep-alive upstream that misbehaves on
/// every reused connection: no request reaches it twice, and every client gets an answer or
/// a 5xx, never a hang.
fn assert_no_duplicates(mode: Misbehave) {
    const N: usize = 10;
    let up = Recorder::start(mode);
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nheader_timeout_ms = 2000\n\n{}\n{}",
        provider("up", "openai", up.server.addr),
        model_on("up", "m", "m")
    );
    let gw = Gateway::start(&config, ONE_SHARD);
    let mut statuses = Vec::new();
    for i in 0..N {
        let body = chat_body("m", &marker(i), false);
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let ex = exchange(gw.addr, req.as_bytes());
        let a = ex
            .answers
            .first()
            .unwrap_or_else(|| panic!("client {i} got no answer: {}", ex.show()));
        assert!(
            a.status == 200 || (502..=504).contains(&a.status),
            "client {i}: {}",
            ex.show()
        );
        if a.status == 200 {
            assert_eq!(reply_text(a), "recorded answer");
        }
        statuses.push(a.status);
    }
    let received: Vec<String> = up.received.try_iter().collect();
    let per_request: Vec<usize> = (0..N)
        .map(|i| received.iter().filter(|b| b.contains(&marker(i))).count())
        .collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let summary = format!(
        "{mode:?}: {} upstream requests for {N} client requests over {} connections; \
         per client request {per_request:?}; client statuses {statuses:?}",
        received.len(),
        up.server.accepted.load(Relaxed)
    );
    assert!(
        up.misbehaved.load(Relaxed) > 0,
        "the pool never reused a connection: {summary}"
    );
    assert!(per_request.iter().all(|n| *n <= 1), "duplicates: {summary}");
    assert_eq!(
        received.len(),
        per_request.iter().sum::<usize>(),
        "{summary}"
    );
    assert!(ok <= received.len(), "{summary}");
    if mode.reads_request() {
        assert_eq!(received.len(), N, "{summary}");
        assert!(ok < N, "the misbehaving exchanges failed: {summary}");
    }
}

#[test]
fn duplicate_post_upstream_closes_after_reading_request() {
    assert_no_duplicates(Misbehave::CloseAfterRequest);
}

#[test]
fn duplicate_post_upstream_resets_after_reading_request() {
    assert_no_duplicates(Misbehave::ResetAfterRequest);
}

#[test]
fn duplicate_post_upstream_closes_inside_request_head() {
    assert_no_duplicates(Misbehave::CloseInRequestHead);
}

#[test]
fn duplicate_post_upstream_closes_inside_response_head() {
    assert_no_duplicates(Misbehave::CloseInResponseHead);
}

#[test]
fn duplicate_post_upstream_closes_inside_response_body() {
    assert_no_duplicates(Misbehave::CloseInResponseBody);
}

#[test]
fn duplicate_post_upstream_closes_unread_request() {
    assert_no_duplicates(Misbehave::CloseUnread);
}

// ---------------------------------------------------------------------------------------------
// Defect 3: only the real terminal event ends a stream.

/// An upstream that reads one request per connection and answers with these SSE events in a
/// chunked body (properly terminated), then closes.
fn sse_upstream(events: Vec<String>) -> ThreadServer {
    let mut bytes = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for e in &events {
        bytes.extend_from_slice(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes());
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    ThreadServer::start(move |mut conn| {
        let mut buf = Vec::new();
        if read_request(&mut conn, &mut buf).is_some() {
            let _ = conn.write_all(&bytes);
            let _ = conn.shutdown(std::net::Shutdown::Write);
            // Let the gateway read to the end before the socket goes.
            let _ = read_to_close_within(&mut conn, Duration::from_secs(5));
        }
    })
}

fn openai_chunk(content: &str, finish: Option<&str>) -> String {
    let v = serde_json::json!({
        "id": "chatcmpl-adv", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
    });
    format!("data: {v}\n\n")
}

/// A streamed chat through a gateway whose model `m` is on a `kind` provider at `up`.
fn stream_through(kind: &str, up: &ThreadServer, anthropic_client: bool) -> Exchange {
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nheader_timeout_ms = 2000\n\n{}\n{}",
        provider("up", kind, up.addr),
        model_on("up", "m", "m")
    );
    let gw = Gateway::start(&config, ONE_SHARD);
    let (path, body, extra) = if anthropic_client {
        let body = serde_json::json!({"model": "m", "max_tokens": 64, "stream": true,
            "messages": [{"role": "user", "content": "x"}]});
        (
            "/v1/messages",
            body.to_string(),
            "x-api-key: client-key\r\nanthropic-version: 2023-06-01\r\n",
        )
    } else {
        ("/v1/chat/completions", chat_body("m", "x", true), "")
    };
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(gw.addr, req.as_bytes())
}

/// The stream ended with exactly one final error event and nothing that looks complete.
fn assert_cut_with_error(ex: &Exchange, text: &str) {
    assert_eq!(ex.answers.len(), 1, "{}", ex.show());
    let a = &ex.answers[0];
    assert_eq!(a.status, 200, "{}", ex.show());
    let events = a.resp().events();
    let last: Value = events
        .last()
        .and_then(|e| serde_json::from_str(e).ok())
        .unwrap_or_else(|| panic!("no final JSON event: {events:?}"));
    assert!(
        last.get("error").is_some() || last["type"] == "error",
        "the stream must end with an error event, not cleanly: {events:?}"
    );
    let errors = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|v| v.get("error").is_some() || v["type"] == "error")
        .count();
    assert_eq!(errors, 1, "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    assert!(
        !events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .any(|v| v["type"] == "message_stop"),
        "{events:?}"
    );
    assert!(a.text().contains(text), "the text was relayed: {events:?}");
}

#[test]
fn done_inside_text_openai_is_not_the_end() {
    let up = sse_upstream(vec![
        openai_chunk("", None),
        openai_chunk("the token [DONE] appears here", None),
    ]);
    let ex = stream_through("openai", &up, false);
    assert_cut_with_error(&ex, "the token [DONE] appears here");
}

#[test]
fn done_line_escaped_in_json_openai_is_not_the_end() {
    let up = sse_upstream(vec![
        openai_chunk("", None),
        openai_chunk("\ndata: [DONE]\n\n", None),
        openai_chunk("data: [DONE]", None),
    ]);
    let ex = stream_through("openai", &up, false);
    assert_cut_with_error(&ex, "data: [DONE]");
}

#[test]
fn done_real_terminal_event_openai_ends_cleanly() {
    let up = sse_upstream(vec![
        openai_chunk("", None),
        openai_chunk("the token [DONE] appears here", None),
        openai_chunk("", Some("stop")),
        "data: [DONE]\n\n".to_owned(),
    ]);
    let ex = stream_through("openai", &up, false);
    assert_eq!(ex.answers.len(), 1, "{}", ex.show());
    let events = ex.answers[0].resp().events();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e.contains("\"error\"")),
        "{events:?}"
    );
    assert_eq!(stream_text(&events), "the token [DONE] appears here");
    assert!(ex.answers[0].complete, "{}", ex.show());
}

fn anthropic_event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn anthropic_events(text: &str) -> Vec<String> {
    vec![
        anthropic_event(
            "message_start",
            &serde_json::json!({"type": "message_start", "message": {"id": "msg_adv",
                "type": "message", "role": "assistant", "content": [], "model": "m",
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 5, "output_tokens": 1}}}),
        ),
        anthropic_event(
            "content_block_start",
            &serde_json::json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
        ),
        anthropic_event(
            "content_block_delta",
            &serde_json::json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}}),
        ),
        anthropic_event(
            "content_block_stop",
            &serde_json::json!({"type": "content_block_stop", "index": 0}),
        ),
        anthropic_event(
            "message_delta",
            &serde_json::json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": 7}}),
        ),
    ]
}

const MESSAGE_STOP_TEXT: &str =
    r#"then message_stop: {"type":"message_stop"} and event: message_stop"#;

#[test]
fn message_stop_inside_text_anthropic_is_not_the_end() {
    let up = sse_upstream(anthropic_events(MESSAGE_STOP_TEXT));
    let ex = stream_through("anthropic", &up, true);
    assert_cut_with_error(&ex, "then message_stop");
}

#[test]
fn message_stop_real_terminal_event_anthropic_ends_cleanly() {
    let mut events = anthropic_events(MESSAGE_STOP_TEXT);
    events.push(anthropic_event(
        "message_stop",
        &serde_json::json!({"type": "message_stop"}),
    ));
    let up = sse_upstream(events);
    let ex = stream_through("anthropic", &up, true);
    assert_eq!(ex.answers.len(), 1, "{}", ex.show());
    let events: Vec<Value> = ex.answers[0]
        .resp()
        .events()
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(
        events.last().map(|v| v["type"].clone()),
        Some(Value::from("message_stop")),
        "{events:?}"
    );
    assert!(!events.iter().any(|v| v["type"] == "error"), "{events:?}");
}

fn gemini_chunk(text: &str, finish: Option<&str>) -> String {
    let mut candidate = serde_json::json!({
        "content": {"parts": [{"text": text}], "role": "model"}, "index": 0,
    });
    let mut v = serde_json::json!({});
    if let Some(f) = finish {
        candidate["finishReason"] = Value::from(f);
        v["usageMetadata"] = serde_json::json!({"promptTokenCount": 3,
            "candidatesTokenCount": 5, "totalTokenCount": 8});
    }
    v["candidates"] = Value::Array(vec![candidate]);
    format!("data: {v}\n\n")
}

const FINISH_TEXT: &str = r#"the word finishReason and "finishReason": "STOP" appear here"#;

#[test]
fn finish_reason_inside_text_gemini_is_not_the_end() {
    let up = sse_upstream(vec![gemini_chunk(FINISH_TEXT, None)]);
    let ex = stream_through("gemini", &up, false);
    assert_cut_with_error(&ex, "the word finishReason");
}

#[test]
fn finish_reason_real_gemini_ends_cleanly() {
    let up = sse_upstream(vec![
        gemini_chunk(FINISH_TEXT, None),
        gemini_chunk(" done", Some("STOP")),
    ]);
    let ex = stream_through("gemini", &up, false);
    assert_eq!(ex.answers.len(), 1, "{}", ex.show());
    let events = ex.answers[0].resp().events();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e.contains("\"error\"")),
        "{events:?}"
    );
    assert_eq!(stream_text(&events), format!("{FINISH_TEXT} done"));
}

// ---------------------------------------------------------------------------------------------
// Defect 7: shutdown.

#[test]
fn shutdown_idle_keep_alive_client_does_not_hold_the_process() {
    let mock = mock();
    let drain = Duration::from_millis(300);
    let config = upstream_config(mock.addr, "").replace(
        "shutdown_grace_ms = 10000",
        &format!(
            "shutdown_grace_ms = 10000\ndrain_delay_ms = {}",
            drain.as_millis()
        ),
    );
    let mut gw = Gateway::start(&config, ONE_SHARD);
    // A keep-alive client: one answered request, then idle, never closing its side.
    let mut idle = connect(gw.addr);
    idle.write_all(b"GET /health HTTP/1.1\r\nhost: gw\r\n\r\n")
        .unwrap();
    let got = read_until(&mut idle, |b| {
        split_answers(b).0.first().is_some_and(|a| a.complete)
    });
    assert_eq!(split_answers(&got).0[0].status, 200);
    let started = Instant::now();
    gw.sigterm();
    let status = gw.wait(drain + Duration::from_secs(1));
    let took = started.elapsed();
    assert!(
        status.is_some(),
        "still running {took:?} after SIGTERM with an idle keep-alive client (drain delay {drain:?})\n{}",
        gw.stderr()
    );
    drop(idle);
}

#[test]
fn shutdown_stream_cut_at_grace_end_gets_error_event_and_terminated_body() {
    let mock = mock();
    // A 10 s stream against a 1 s grace.
    let extra = &model("slow", "mock;chunks=100;interval_ms=100");
    let config = upstream_config(mock.addr, extra).replace(
        "shutdown_grace_ms = 10000",
        "shutdown_grace_ms = 1000\ndrain_delay_ms = 100",
    );
    let mut gw = Gateway::start(&config, ONE_SHARD);
    let body = chat_body("slow", "keep talking", true);
    let mut s = connect(gw.addr);
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = read_until(&mut s, |b| find(b, b"data: ").is_some());
    gw.sigterm();
    let (rest, end) = read_to_close(&mut s);
    raw.extend(rest);
    let ex = Exchange::new(raw, end);
    assert_eq!(ex.end, End::Eof, "{}", ex.show());
    assert_eq!(ex.answers.len(), 1, "{}", ex.show());
    let a = &ex.answers[0];
    assert!(a.chunked, "{}", ex.show());
    assert!(
        a.complete && ex.raw.ends_with(b"0\r\n\r\n"),
        "the chunked body must be terminated: {}",
        ex.show()
    );
    let events = a.resp().events();
    let last: Value = events
        .last()
        .and_then(|e| serde_json::from_str(e).ok())
        .unwrap_or_else(|| panic!("no final JSON event: {events:?}"));
    assert!(
        last.get("error").is_some(),
        "one final error event: {events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| e.contains("\"error\"")).count(),
        1,
        "{events:?}"
    );
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    assert!(
        gw.wait(Duration::from_secs(5)).is_some(),
        "the gateway exits after the grace"
    );
}
