//! The response cache's hot paths. For now: the cache key of a typical chat request (a
//! system prompt, a few turns, a tool; about 2 KB of body), from its parsed body: the
//! canonical text and its SHA-256.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use shardgate::cache::key::{CacheKey, Tenant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn body() -> serde_json::Value {
    let turn = "Summarise the attached quarterly figures in three bullet points, plain words. ";
    serde_json::json!({
        "model": "gpt-4o",
        "temperature": 0.2,
        "max_tokens": 256,
        "stream": true,
        "messages": [
            {"role": "system", "content": turn.repeat(4)},
            {"role": "user", "content": turn.repeat(6)},
            {"role": "assistant", "content": turn.repeat(5)},
            {"role": "user", "content": turn.repeat(4)},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Find a figure.",
            "parameters": {"type": "object", "properties": {"quarter": {"type": "string"}}}}}],
    })
}

fn cache_key(c: &mut Criterion) {
    let body = body();
    let size = body.to_string().len();
    assert!((1_500..3_000).contains(&size), "{size} bytes");
    let tenant = Tenant::Key("key_5a1e0f3b9c2d4e6f".into());
    let k = CacheKey::of(&tenant, "chat", "gpt-4o", &body);
    assert_eq!(k, CacheKey::of(&tenant, "chat", "gpt-4o", &body.clone()));
    c.bench_function("cache_key_chat_2kb", |b| {
        b.iter(|| CacheKey::of(&tenant, "chat", "gpt-4o", black_box(&body)))
    });
}

criterion_group!(benches, cache_key);
criterion_main!(benches);
