//! Test harness: the gateway as a real process (port 0), `shardgate-mock` in-process (port 0),
//! and a small blocking HTTP/1.1 client over real sockets.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use shardgate::mock::Knobs;
use shardgate::mock::server::{MockConfig, MockServer};

/// Start `shardgate-mock` in this process on an OS-chosen loopback port.
pub fn mock() -> MockServer {
    MockServer::start(MockConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cores: vec![None],
        defaults: Knobs::default(),
        schedule: Default::default(),
        tls: None,
    })
    .unwrap()
}

/// Start another in-process `shardgate-mock` on its own port, with these default knobs
/// (`"latency_ms=50;status=500"`, the model-suffix syntax). Each mock counts its own
/// requests ([`MockServer::stats`]); change its knobs at run time with
/// [`MockServer::set_knobs`] or `PUT /mock/knobs`.
pub fn mock_with(knobs: &str) -> MockServer {
    MockServer::start(MockConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cores: vec![None],
        defaults: Knobs::parse(knobs).unwrap_or_else(|e| panic!("mock_with({knobs:?}): {e}")),
        schedule: Default::default(),
        tls: None,
    })
    .unwrap()
}

/// A config with one OpenAI-kind provider `up` pointing at `mock`, plus `extra` appended.
pub fn upstream_config(mock: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 65536
header_timeout_ms = 2000
shutdown_grace_ms = 10000

[providers.up]
kind = "openai"
base_url = "http://{mock}/v1"
protocol = "http1"
connect_timeout_ms = 1000
first_byte_timeout_ms = 5000
idle_timeout_ms = 5000

[models.gpt-mock]
provider = "up"
model = "mock"
{extra}
"#
    )
}

/// A `[models.<name>]` entry on provider `up`, sent upstream as `upstream` (mock knobs ride
/// on the upstream name: `mock;latency_ms=100`).
pub fn model(name: &str, upstream: &str) -> String {
    format!("[models.{name}]\nprovider = \"up\"\nmodel = \"{upstream}\"\n")
}

/// One shard, unpinned (tests run many gateways at once).
pub const ONE_SHARD: &str = "[shards]\ncount = 1\npin = false\n";
/// Two shards, unpinned.
pub const TWO_SHARDS: &str = "[shards]\ncount = 2\npin = false\n";

static SEQ: AtomicU32 = AtomicU32::new(0);

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "shardgate-test-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The gateway binary running as a child process.
pub struct Gateway {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin API's address, when the config has `[admin]`.
    pub admin: Option<SocketAddr>,
    pub stderr_path: PathBuf,
}

impl Gateway {
    /// Start with this config and tuning text; returns once it listens.
    pub fn start(config: &str, tuning: &str) -> Self {
        Self::start_with_env(config, tuning, &[])
    }

    /// Start with extra environment variables (API keys named by `api_key_env`).
    pub fn start_with_env(config: &str, tuning: &str, env: &[(&str, &str)]) -> Self {
        let dir = temp_dir();
        let (c, t) = (dir.join("gateway.toml"), dir.join("tuning.toml"));
        std::fs::write(&c, config).unwrap();
        std::fs::write(&t, tuning).unwrap();
        let stderr_path = dir.join("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardgate"))
            .args([
                "serve",
                "--config",
                c.to_str().unwrap(),
                "--tuning",
                t.to_str().unwrap(),
            ])
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Every line, to the end: a line printed later never meets a closed pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let Some(addr) = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
        else {
            let _ = child.kill();
            panic!(
                "gateway did not start: {line:?}\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        };
        // With `[admin]`, the next line is `admin listening on http://ADDR`.
        let admin = config.contains("[admin]").then(|| {
            let line = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
            line.strip_prefix("admin listening on http://")
                .and_then(|a| a.trim().parse().ok())
                .unwrap_or_else(|| panic!("no admin address: {line:?}"))
        });
        Self {
            child,
            addr,
            admin,
            stderr_path,
        }
    }

    /// Send SIGTERM.
    pub fn sigterm(&self) {
        // SAFETY: kill(2) on the PID of a child we started and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Wait for exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Its resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"))
    }

    /// Its log so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// GET a path.
    pub fn get(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, &[], b"")
    }

    /// POST JSON to a path.
    pub fn post(&self, path: &str, body: &str) -> Resp {
        request(
            self.addr,
            "POST",
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    }

    /// POST a chat completion request for `model` with one user message.
    pub fn chat(&self, model: &str, text: &str, stream: bool) -> Resp {
        self.post("/v1/chat/completions", &chat_body(model, text, stream))
    }

    /// One metric's value (sum over matching lines).
    pub fn metric(&self, line_prefix: &str) -> f64 {
        self.get("/metrics")
            .text()
            .lines()
            .filter(|l| l.starts_with(line_prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The cache's verdict on a response (`x-shardgate-cache`), `-` when it has none.
pub fn verdict(r: &Resp) -> &str {
    r.header("x-shardgate-cache").unwrap_or("-")
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The `data:` payloads of an SSE body.
    pub fn events(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter_map(|ev| {
                let data: Vec<&str> = ev
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                (!data.is_empty()).then(|| data.join("\n"))
            })
            .collect()
    }

    /// Assert an OpenAI-shaped gateway error of this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        assert!(v["error"]["type"].is_string(), "{v}");
        assert_eq!(self.header("x-shardgate-error"), Some(code));
        assert!(self.header("x-request-id").is_some());
    }
}

/// One request on a new connection (`Connection: close`), read to EOF.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut h = vec![("connection", "close")];
    h.extend_from_slice(headers);
    s.write_all(request_head(method, path, &h, body.len()).as_bytes())
        .unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

/// An HTTP/1.1 request head with these headers and a `content-length`.
pub fn request_head(method: &str, path: &str, headers: &[(&str, &str)], body_len: usize) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {body_len}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Parse a raw HTTP/1.1 response (content-length, chunked, or to EOF).
pub fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        b = &b[nl + 2..];
        if size == 0 || b.len() < size {
            out.extend_from_slice(&b[..size.min(b.len())]);
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
    out
}

/// A chat request body.
pub fn chat_body(model: &str, text: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "stream_options": if stream { serde_json::json!({"include_usage": true}) } else { serde_json::Value::Null },
        "messages": [{"role": "user", "content": text}],
    })
    .to_string()
}

/// Concatenated `delta.content` of a streamed answer's events.
pub fn stream_text(events: &[String]) -> String {
    events
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .filter_map(|v| {
            v["choices"]
                .get(0)
                .and_then(|c| c["delta"]["content"].as_str().map(str::to_owned))
        })
        .collect()
}

/// `[providers.<id>]` of `kind` (`openai`, `anthropic` or `gemini`) pointing at `mock`, with
/// the path prefix that kind's clients expect (`/v1`, or `/v1beta` for Gemini).
pub fn provider(id: &str, kind: &str, mock: SocketAddr) -> String {
    let prefix = if kind == "gemini" { "v1beta" } else { "v1" };
    format!(
        "[providers.{id}]\nkind = \"{kind}\"\nbase_url = \"http://{mock}/{prefix}\"\nprotocol = \"http1\"\n\
         connect_timeout_ms = 1000\nfirst_byte_timeout_ms = 5000\nidle_timeout_ms = 5000\n"
    )
}

/// A `[models.<name>]` entry on `provider`, sent upstream as `upstream`.
pub fn model_on(provider: &str, name: &str, upstream: &str) -> String {
    format!("[models.{name}]\nprovider = \"{provider}\"\nmodel = \"{upstream}\"\n")
}

/// Run `f` while a loopback HTTP endpoint lets an out-of-process client (an SDK script) read
/// what `mock` recorded: `GET /usage` is the last answer's usage
/// (`{"input","output","cached_input","reasoning"}`, or `null`), `GET /chat` the last chat
/// request as the mock received it (`{"path","headers":{name:value},"body":"<text>"}`, or
/// `null`). The endpoint stops when `f` returns.
pub fn with_probe<R>(mock: &MockServer, f: impl FnOnce(SocketAddr) -> R) -> R {
    use std::sync::atomic::AtomicBool;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(conn) = conn {
                    serve_probe(mock, conn);
                }
            }
        });
        // Stop the endpoint even when `f` panics, or the scope would wait for it forever.
        let _stop = StopProbe(&stop, addr);
        f(addr)
    })
}

struct StopProbe<'a>(&'a std::sync::atomic::AtomicBool, SocketAddr);

impl Drop for StopProbe<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.1);
    }
}

fn serve_probe(mock: &MockServer, mut conn: TcpStream) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut line = String::new();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Skip the rest of the head.
    let mut h = String::new();
    while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
        h.clear();
    }
    let path = line.split(' ').nth(1).unwrap_or("");
    let stats = mock.stats();
    let body = match path {
        "/usage" => match stats.last_usage.load_full() {
            Some(u) => serde_json::json!({
                "input": u.input_tokens,
                "output": u.output_tokens,
                "cached_input": u.cached_input_tokens,
                "reasoning": u.reasoning_tokens,
            }),
            None => serde_json::Value::Null,
        },
        "/chat" => match stats.last_chat.load_full() {
            Some(r) => serde_json::json!({
                "path": r.path_and_query,
                "headers": r
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                        (k.as_str().to_owned(), serde_json::Value::String(v))
                    })
                    .collect::<serde_json::Map<_, _>>(),
                "body": String::from_utf8_lossy(&r.body),
            }),
            None => serde_json::Value::Null,
        },
        _ => {
            let _ = conn.write_all(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            return;
        }
    }
    .to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Call `ready` every 10 ms until it says yes; panic naming `what` after `limit`.
pub fn poll_until(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A loopback webhook receiver: answers 200 to every POST and keeps the JSON bodies.
pub fn webhook() -> (SocketAddr, std::sync::mpsc::Receiver<serde_json::Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, got) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(v) = serde_json::from_slice(&body)
            {
                let _ = seen.send(v);
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (addr, got)
}

/// A key's secret for tests: `sk-sg-` and 43 characters, like a generated one.
pub fn secret(tag: &str) -> String {
    let mut s = format!("sk-sg-{tag}");
    while s.len() < 49 {
        s.push('x');
    }
    s
}

pub fn hash(secret: &str) -> String {
    shardgate::auth::key::hash(secret).to_string()
}

/// A `[[auth.keys]]` entry.
pub fn key(id: &str, secret: &str, extra: &str) -> String {
    format!(
        "[[auth.keys]]\nid = \"{id}\"\nhash = \"{}\"\n{extra}\n",
        hash(secret)
    )
}

pub fn post_with_key(addr: SocketAddr, path: &str, key: &str, body: &str) -> Resp {
    let auth = format!("Bearer {key}");
    request(
        addr,
        "POST",
        path,
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        body.as_bytes(),
    )
}

/// Send `n` requests at once (one connection each, released together by a barrier) and
/// return their responses.
pub fn burst(
    addr: SocketAddr,
    n: usize,
    send: impl Fn(SocketAddr, usize) -> Resp + Send + Sync + 'static,
) -> Vec<Resp> {
    let barrier = Arc::new(Barrier::new(n));
    let send = Arc::new(send);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, send) = (barrier.clone(), send.clone());
            std::thread::spawn(move || {
                barrier.wait();
                send(addr, i)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}
