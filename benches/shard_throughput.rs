#![allow(missing_docs)]
#![allow(
    clippy::panic,
    reason = "a bench stops on a broken set-up; it serves no requests"
)]
//! Whole-request throughput of one gateway shard against an in-process mock, over loopback:
//! a keep-alive client sends a ~1 KB chat completion and reads the answer. The same request
//! straight at the mock is measured beside it, so the ratio (not the absolute time, which
//! depends on the machine) is the number to watch.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shardgate::config::{Config, Tuning};
use shardgate::mock::Knobs;
use shardgate::mock::server::{MockConfig, MockServer};
use shardgate::runtime::{ServeOptions, start};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn body() -> String {
    let prompt = "the quick brown fox jumps over the lazy dog ".repeat(20);
    format!(
        r#"{{"model":"gpt-mock","max_tokens":256,"messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"{prompt}"}}]}}"#
    )
}

/// One keep-alive HTTP/1.1 client that reads `Content-Length` answers.
struct Client {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).unwrap_or_default();
        let body = body();
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        Self {
            stream,
            request,
            buf: vec![0; 64 * 1024],
        }
    }

    fn round_trip(&mut self) -> usize {
        self.stream
            .write_all(&self.request)
            .unwrap_or_else(|e| panic!("{e}"));
        let mut have = 0;
        loop {
            let n = self
                .stream
                .read(&mut self.buf[have..])
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(n > 0, "server closed");
            have += n;
            let text = &self.buf[..have];
            if let Some(end) = text.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&text[..end]).unwrap_or_default();
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or_else(|| panic!("no content-length: {head}"));
                if have >= end + 4 + len {
                    return len;
                }
            }
        }
    }
}

fn shard_throughput(c: &mut Criterion) {
    let mock = MockServer::start(MockConfig {
        listen: "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
        cores: vec![None],
        defaults: Knobs::default(),
        schedule: Default::default(),
        tls: None,
    })
    .unwrap_or_else(|e| panic!("mock: {e}"));
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[providers.up]
kind = "openai"
base_url = "http://{}/v1"
protocol = "http1"

[models.gpt-mock]
provider = "up"
model = "mock"
"#,
        mock.addr
    );
    let env = |_: &str| None;
    let config = Config::from_toml(&config, "bench", &env).unwrap_or_else(|e| panic!("{e}"));
    let tuning = Tuning::from_toml("[shards]\ncount = 1\npin = false\n", "bench", vec![0])
        .unwrap_or_else(|e| panic!("{e}"));
    let gw = start(
        config,
        tuning,
        ServeOptions {
            handle_signals: false,
        },
    )
    .unwrap_or_else(|e| panic!("gateway: {e}"));

    let mut g = c.benchmark_group("shard_throughput");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));
    let mut direct = Client::new(mock.addr);
    g.bench_function("chat_1k_keepalive_direct_to_mock", |b| {
        b.iter(|| direct.round_trip())
    });
    let mut through = Client::new(gw.addr);
    g.bench_function("chat_1k_keepalive_through_gateway", |b| {
        b.iter(|| through.round_trip())
    });
    g.finish();
}

criterion_group!(benches, shard_throughput);
criterion_main!(benches);
