//! The semantic cache's costs off the shards: a search of the HNSW index (one partition of
//! 10,000 questions, 384-dimensional unit vectors in 200 clusters, as sentence embeddings
//! group by topic; uniform random vectors are the worst case, where HNSW visits most of the
//! graph: reported too), an insert,
//! the split of a chat request into partition and text (on the shard), the guard on a pair,
//! and, with `--features local-embed` and the model in target/minilm (scripts/minilm.sh), the
//! local encoder on one question and on a batch of 32.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use shardgate::cache::index::{Index, Point, Tags, normalize};
use shardgate::cache::key::{CacheKey, Tenant};
use shardgate::cache::{guard, semantic};

fn vector(rng: &mut fastrand::Rng) -> Box<[f32]> {
    let mut v: Vec<f32> = (0..384).map(|_| rng.f32() - 0.5).collect();
    normalize(&mut v);
    v.into()
}

/// A vector near one of `centers` (cosine about 0.8 to its center).
fn clustered(rng: &mut fastrand::Rng, centers: &[Box<[f32]>]) -> Box<[f32]> {
    let c = &centers[rng.usize(..centers.len())];
    let noise = vector(rng);
    let mut v: Vec<f32> = c
        .iter()
        .zip(noise.iter())
        .map(|(a, b)| a + 0.7 * b)
        .collect();
    normalize(&mut v);
    v.into()
}

fn key(n: u64) -> CacheKey {
    CacheKey::of(&Tenant::Global, "chat", "m", &serde_json::json!({ "n": n }))
}

fn point(n: u64, vector: Box<[f32]>) -> Point {
    Point {
        key: key(n),
        text: "a question".into(),
        expires_ms: u64::MAX,
        vector,
        tags: Tags {
            tenant: Tenant::Global,
            model: "m".into(),
            tags: Box::new([]),
        },
    }
}

fn index(c: &mut Criterion) {
    let mut rng = fastrand::Rng::with_seed(7);
    let centers: Vec<Box<[f32]>> = (0..200).map(|_| vector(&mut rng)).collect();
    for (name, uniform) in [("clustered", false), ("uniform", true)] {
        let make = |rng: &mut fastrand::Rng| {
            if uniform {
                vector(rng)
            } else {
                clustered(rng, &centers)
            }
        };
        let partition = key(u64::MAX);
        let mut ix = Index::new(20_000);
        for n in 0..10_000 {
            ix.insert(partition, point(n, make(&mut rng)), 0);
        }
        let queries: Vec<Box<[f32]>> = (0..256).map(|_| make(&mut rng)).collect();
        let mut i = 0;
        c.bench_function(&format!("semantic/search_10k_{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                black_box(ix.nearest(&partition, &queries[i], 1))
            })
        });
        let mut n = 10_000;
        c.bench_function(&format!("semantic/insert_into_10k_{name}"), |b| {
            b.iter(|| {
                n += 1;
                black_box(ix.insert(partition, point(n % 15_000, make(&mut rng)), 2))
            })
        });
    }
}

fn shard_side(c: &mut Criterion) {
    let body = serde_json::json!({
        "model": "gpt-4o",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
            {"role": "user", "content": "How do I turn on dark mode in the settings app?"},
        ],
    });
    c.bench_function("semantic/split", |b| {
        b.iter(|| black_box(semantic::split(&Tenant::Global, "chat", "gpt-4o", &body)))
    });
    c.bench_function("semantic/guard", |b| {
        b.iter(|| {
            black_box(guard::check(
                "How do I turn on dark mode in the settings app?",
                "how can I enable dark mode in settings",
            ))
        })
    });
}

#[cfg(feature = "local-embed")]
fn encoder(c: &mut Criterion) {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/minilm");
    let Ok(enc) = shardgate::cache::encoder::Encoder::load(&dir) else {
        eprintln!("no model in {}: run scripts/minilm.sh", dir.display());
        return;
    };
    let one = ["How do I turn on dark mode in the settings app?"];
    let batch: Vec<&str> = (0..32).map(|_| one[0]).collect();
    let mut g = c.benchmark_group("semantic/encode");
    g.sample_size(20);
    g.bench_function("one", |b| b.iter(|| black_box(enc.encode(&one).unwrap())));
    g.bench_function("batch_32", |b| {
        b.iter(|| black_box(enc.encode(&batch).unwrap()))
    });
    g.finish();
}

#[cfg(not(feature = "local-embed"))]
fn encoder(_: &mut Criterion) {}

criterion_group!(benches, index, shard_side, encoder);
criterion_main!(benches);
