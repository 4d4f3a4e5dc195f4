#![allow(missing_docs)]
#![allow(clippy::unwrap_used, reason = "bench set-up on known-good inputs")]
//! Translation in every direction, at 1 KB and 50 KB: requests (client dialect → provider
//! wire), whole answers and streams (provider wire → client dialect), beside the OpenAI
//! pass-through edit for scale.
//!
//! Machine: 2-core shared VM (the CI kind), rustc 1.95, `cargo bench --bench translate`.
//! Numbers are recorded in the README's Benchmarks section with the date and commit.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use shardgate::api::ChatRequest;
use shardgate::api::chat::upstream_body;
use shardgate::config::ProviderKind;
use shardgate::providers::call::Answer;
use shardgate::providers::{Dialect, anthropic, gemini, openai};

const SIZES: [(&str, usize); 2] = [("1KB", 1024), ("50KB", 50 * 1024)];

fn text(bytes: usize) -> String {
    let t = "lorem ipsum dolor sit amet ".repeat(bytes / 27 + 1);
    t[..bytes].to_owned()
}

/// A multi-turn OpenAI request with a tool call, whose bodies add up to about `bytes`.
fn openai_request(bytes: usize) -> Bytes {
    let t = text(bytes.saturating_sub(700) / 2);
    Bytes::from(
        json!({
            "model": "m", "max_tokens": 256, "temperature": 0.2,
            "tools": [{"type": "function", "function": {"name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
            "messages": [
                {"role": "system", "content": "You are helpful."},
                {"role": "user", "content": t},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": t},
            ],
        })
        .to_string(),
    )
}

fn anthropic_request(bytes: usize) -> Bytes {
    let t = text(bytes.saturating_sub(600) / 2);
    Bytes::from(
        json!({
            "model": "m", "max_tokens": 256, "system": "You are helpful.",
            "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": t},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": t}]},
            ],
        })
        .to_string(),
    )
}

fn answers(bytes: usize) -> [(&'static str, ProviderKind, Dialect, Bytes); 3] {
    let t = text(bytes.saturating_sub(300));
    let usage = json!({"prompt_tokens": 10, "completion_tokens": 20});
    [
        (
            "anthropic→openai",
            ProviderKind::Anthropic,
            Dialect::OpenAi,
            Bytes::from(json!({"id": "msg", "type": "message", "role": "assistant", "model": "m",
                "content": [{"type": "text", "text": t}], "stop_reason": "end_turn",
                "usage": {"input_tokens": 10, "output_tokens": 20}}).to_string()),
        ),
        (
            "gemini→openai",
            ProviderKind::Gemini,
            Dialect::OpenAi,
            Bytes::from(json!({"candidates": [{"content": {"role": "model", "parts": [{"text": t}]},
                "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 20}}).to_string()),
        ),
        (
            "openai→anthropic",
            ProviderKind::OpenAi,
            Dialect::Anthropic,
            Bytes::from(json!({"id": "c", "object": "chat.completion", "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}],
                "usage": usage}).to_string()),
        ),
    ]
}

/// A stream of `bytes` of text in 64-byte pieces, in `kind`'s format.
fn stream(kind: ProviderKind, bytes: usize) -> Bytes {
    let t = text(bytes);
    let mut out = String::new();
    let mut data = |event: Option<&str>, v: Value| {
        if let Some(e) = event {
            out.push_str(&format!("event: {e}\n"));
        }
        out.push_str(&format!("data: {v}\n\n"));
    };
    let pieces: Vec<&str> = t
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    match kind {
        ProviderKind::Anthropic => {
            data(
                Some("message_start"),
                json!({"type": "message_start", "message": {"id": "m", "model": "m", "content": [], "usage": {"input_tokens": 10}}}),
            );
            data(
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            );
            for p in pieces {
                data(
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}}),
                );
            }
            data(
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 0}),
            );
            data(
                Some("message_delta"),
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 20}}),
            );
            data(Some("message_stop"), json!({"type": "message_stop"}));
        }
        ProviderKind::Gemini => {
            let n = pieces.len();
            for (i, p) in pieces.into_iter().enumerate() {
                let mut c =
                    json!({"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}}]});
                if i + 1 == n {
                    c["candidates"][0]["finishReason"] = json!("STOP");
                    c["usageMetadata"] =
                        json!({"promptTokenCount": 10, "candidatesTokenCount": 20});
                }
                data(None, c);
            }
        }
        _ => {
            for p in pieces {
                data(
                    None,
                    json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
                    "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]}),
                );
            }
            data(
                None,
                json!({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            );
            data(
                None,
                json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 20}}),
            );
            out.push_str("data: [DONE]\n\n");
        }
    }
    Bytes::from(out)
}

fn requests(c: &mut Criterion) {
    let mut g = c.benchmark_group("request");
    for (label, size) in SIZES {
        let oa = openai_request(size);
        let an = anthropic_request(size);
        g.bench_with_input(
            BenchmarkId::new("openai pass-through", label),
            &oa,
            |b, body| b.iter(|| upstream_body(black_box(body), "m", "gpt-4o", true).unwrap()),
        );
        g.bench_with_input(
            BenchmarkId::new("openai→anthropic", label),
            &oa,
            |b, body| {
                b.iter(|| {
                    let r = ChatRequest::from_json(black_box(body)).unwrap();
                    serde_json::to_vec(&anthropic::translate::to_wire(&r, "claude").unwrap())
                        .unwrap()
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("openai→gemini", label),
            &oa,
            |b, body| {
                b.iter(|| {
                    let r = ChatRequest::from_json(black_box(body)).unwrap();
                    serde_json::to_vec(&gemini::translate::to_wire(&r).unwrap()).unwrap()
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("anthropic→openai", label),
            &an,
            |b, body| {
                b.iter(|| {
                    let r = anthropic::translate::from_client(black_box(body)).unwrap();
                    openai::translate::to_wire(&r, "gpt-4o").unwrap()
                })
            },
        );
    }
    g.finish();
}

fn whole_answers(c: &mut Criterion) {
    let mut g = c.benchmark_group("answer");
    for (label, size) in SIZES {
        for (name, from, to, body) in answers(size) {
            let answer = Answer::Translate {
                from,
                to,
                model: "m".into(),
                include_usage: true,
            };
            g.bench_with_input(BenchmarkId::new(name, label), &body, |b, body| {
                b.iter(|| answer.whole(black_box(body.clone())).unwrap())
            });
        }
    }
    g.finish();
}

fn streams(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream");
    for (label, size) in SIZES {
        for (name, from, to) in [
            ("anthropic→openai", ProviderKind::Anthropic, Dialect::OpenAi),
            ("gemini→openai", ProviderKind::Gemini, Dialect::OpenAi),
            ("openai→anthropic", ProviderKind::OpenAi, Dialect::Anthropic),
        ] {
            let sse = stream(from, size);
            let answer = Answer::Translate {
                from,
                to,
                model: "m".into(),
                include_usage: true,
            };
            g.bench_with_input(BenchmarkId::new(name, label), &sse, |b, sse| {
                b.iter(|| answer.transcode([black_box(sse.clone())]))
            });
        }
        let sse = stream(ProviderKind::OpenAi, size);
        let pass = Answer::Pass {
            dialect: Dialect::OpenAi,
            strip_usage: true,
        };
        g.bench_with_input(
            BenchmarkId::new("openai pass-through", label),
            &sse,
            |b, sse| b.iter(|| pass.transcode([black_box(sse.clone())])),
        );
    }
    g.finish();
}

criterion_group!(benches, requests, whole_answers, streams);
criterion_main!(benches);
