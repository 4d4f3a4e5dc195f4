#![allow(missing_docs)]
//! Hot pure functions of the request path.
//!
//! Machine: 2-core shared VM (the CI kind), rustc 1.95, `cargo bench --bench hot_paths`.
//! Numbers are recorded in the README's Benchmarks section with the date and commit.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shardgate::api::chat::rewrite_model;
use shardgate::api::sse::{EventSplitter, data_payloads, frame_data};
use shardgate::api::{DecodeScratch, Usage, decode_chat};
use shardgate::config::Secret;
use shardgate::config::secrets::Redactor;
use shardgate::metrics::Histogram;
use shardgate::mock::Reply;
use shardgate::scoring::{DeploymentStats, Observation};

fn chat_body(content_bytes: usize) -> Bytes {
    let text = "lorem ipsum dolor sit amet ".repeat(content_bytes / 27 + 1);
    Bytes::from(
        serde_json::json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are helpful."},
                {"role": "user", "content": &text[..content_bytes]},
            ],
            "temperature": 0.2,
            "max_tokens": 256,
        })
        .to_string(),
    )
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_chat");
    for (name, size) in [("1KB", 1_000), ("50KB", 50_000)] {
        let body = chat_body(size);
        let mut scratch = DecodeScratch::default();
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| decode_chat(black_box(&body), &mut scratch).ok())
        });
    }
    g.finish();
}

fn rewrite(c: &mut Criterion) {
    let mut g = c.benchmark_group("rewrite_model");
    for (name, size) in [("1KB", 1_000), ("50KB", 50_000)] {
        let body = chat_body(size);
        g.bench_function(format!("{name}/same"), |b| {
            b.iter(|| rewrite_model(black_box(&body), "gpt-4o-mini", "gpt-4o-mini").ok())
        });
        g.bench_function(format!("{name}/rename"), |b| {
            b.iter(|| rewrite_model(black_box(&body), "gpt-4o-mini", "gpt-4o-mini-2024-07-18").ok())
        });
    }
    g.finish();
}

fn sse(c: &mut Criterion) {
    let mut reply =
        Reply::from_request(&mut chat_body(1_000).to_vec()).unwrap_or_else(|_| unreachable!());
    reply.include_usage = true;
    let events = reply.events(20);
    let joined: Vec<u8> = events.iter().flat_map(|e| e.iter().copied()).collect();
    let joined = Bytes::from(joined);
    let mut g = c.benchmark_group("sse");
    g.throughput(Throughput::Bytes(joined.len() as u64));
    g.bench_function("split_20_event_stream_whole_events", |b| {
        b.iter(|| {
            let mut s = EventSplitter::default();
            for e in &events {
                black_box(s.push(e.clone()));
            }
        })
    });
    g.bench_function("split_20_event_stream_64B_reads", |b| {
        b.iter(|| {
            let mut s = EventSplitter::default();
            for i in (0..joined.len()).step_by(64) {
                black_box(s.push(joined.slice(i..(i + 64).min(joined.len()))));
            }
        })
    });
    let payloads: Vec<Vec<u8>> = data_payloads(&joined).map(|d| d.into_owned()).collect();
    g.bench_function("reframe_20_payloads", |b| {
        b.iter(|| {
            for p in &payloads {
                black_box(frame_data(black_box(p)));
            }
        })
    });
    g.bench_function("payloads_and_usage_20_events", |b| {
        b.iter(|| {
            let mut usage = None;
            for d in data_payloads(black_box(&joined)) {
                if let Some(u) = Usage::from_openai_json(&d) {
                    usage = Some(u);
                }
            }
            usage
        })
    });
    g.finish();
}

fn scoring_and_metrics(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut stats = DeploymentStats::default();
    let mut i = 0u64;
    c.bench_function("score_update", |b| {
        b.iter(|| {
            i += 1;
            stats.observe(
                Observation {
                    ok: !i.is_multiple_of(10),
                    latency: Duration::from_micros(i % 5000),
                    ttfb: Duration::from_micros(i % 700),
                },
                t0 + Duration::from_micros(i),
            );
        })
    });
    let h = Histogram::default();
    c.bench_function("metrics_histogram_observe", |b| {
        b.iter(|| h.observe(black_box(Duration::from_micros(1234))))
    });
}

/// Redaction of an upstream error body (three provider keys configured, as with one provider
/// of each kind): a clean 1 KB body (the common case, borrowed, no allocation) and one that
/// echoes a key.
fn redact(c: &mut Criterion) {
    let keys = [
        Secret::new("sk-proj-0123456789abcdefghijklmnopqrstuvwxyzABCDEF"),
        Secret::new("sk-ant-api03-0123456789abcdefghijklmnopqrstuvwxyz"),
        Secret::new("AIzaSy0123456789abcdefghijklmnopqrstu"),
    ];
    let r = Redactor::new(&keys);
    let filler =
        "The request is invalid: the field `messages` must be a non-empty array. ".repeat(14);
    let clean =
        format!("{{\"error\":{{\"message\":\"{filler}\",\"type\":\"invalid_request_error\"}}}}");
    let dirty = format!(
        "{{\"error\":{{\"message\":\"{filler} You sent: Bearer {}\",\"type\":\"invalid_request_error\"}}}}",
        keys[0].expose()
    );
    let mut g = c.benchmark_group("redact");
    for (name, body) in [("1KB_clean", clean), ("1KB_dirty", dirty)] {
        let body = Bytes::from(body);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| b.iter(|| r.redact_bytes(black_box(body.clone()))));
    }
    g.finish();
}

/// The upstream HTTP/1.1 exchange's framing: a 1 KB request serialised, a typical response
/// head parsed, and a 20-event chunked stream decoded from one read.
fn upstream_h1(c: &mut Criterion) {
    use shardgate::upstream::h1::codec::{Chunk, Decoded, Framing, encode_request, parse_head};
    let mut g = c.benchmark_group("upstream_h1");
    let req = http::Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("host", "api.openai.com")
        .header("content-type", "application/json")
        .header(
            "authorization",
            "Bearer sk-0123456789abcdef0123456789abcdef",
        )
        .header("user-agent", "shardgate/0.1")
        .body(chat_body(1024))
        .unwrap_or_else(|_| unreachable!());
    g.bench_function("encode_request_1k", |b| {
        b.iter(|| encode_request(black_box(&req)))
    });
    let head = bytes::BytesMut::from(
        &b"HTTP/1.1 200 OK\r\ndate: Wed, 02 Dec 2026 07:00:00 GMT\r\ncontent-type: text/event-stream\r\n\
           transfer-encoding: chunked\r\nconnection: keep-alive\r\nx-request-id: req_0123456789\r\n\
           openai-processing-ms: 12\r\n\r\n"[..],
    );
    g.bench_function("parse_head", |b| {
        b.iter(|| parse_head(&mut black_box(head.clone())).unwrap_or_else(|_| unreachable!()))
    });
    let event = b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"}}]}\n\n";
    let mut chunked = Vec::new();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("{:x}\r\n", event.len()).as_bytes());
        chunked.extend_from_slice(event);
        chunked.extend_from_slice(b"\r\n");
    }
    let chunked = bytes::BytesMut::from(&chunked[..]);
    g.bench_function("decode_20_chunks_one_read", |b| {
        b.iter(|| {
            let mut buf = chunked.clone();
            let mut f = Framing::Chunked(Chunk::Size);
            let mut n = 0;
            while let Ok(Decoded::Data(d)) = f.decode(&mut buf, false) {
                n += d.len();
            }
            n
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    decode,
    rewrite,
    sse,
    scoring_and_metrics,
    redact,
    upstream_h1
);
criterion_main!(benches);
