//! The response cache's hot paths: the cache key of a typical chat request (a system prompt,
//! a few turns, a tool; about 2 KB of body), from its parsed body (the canonical text and its
//! SHA-256); a lookup in a shard's own partition; and the hop to another shard over the
//! shard mesh and back (two pinned glommio shards, one lookup in flight at a time, and 64).
#![allow(missing_docs, clippy::panic)]

use std::hint::black_box;

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use shardgate::ShardId;
use shardgate::cache::key::{CacheKey, Tenant};
use shardgate::cache::{Entry, Form, Partition};
use shardgate::shard::mesh::{Mesh, MeshSpec};
use shardgate::shard::{Pulse, ShardSpec};

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

fn entry() -> Arc<Entry> {
    Arc::new(Entry {
        form: Form::Whole,
        body: bytes::Bytes::from(vec![b'x'; 1_000]),
        frames: Box::new([]),
        usage_chunk: false,
        usage: None,
        stored_ms: 0,
        expires_ms: u64::MAX,
        model: Arc::from("gpt-4o"),
        tenant: Tenant::Global,
        tags: Box::new([]),
        source: None,
    })
}

fn local_lookup(c: &mut Criterion) {
    let mut p = Partition::new(64 << 20);
    let keys: Vec<CacheKey> = (0..10_000)
        .map(|i| CacheKey::of(&Tenant::Global, "chat", "m", &serde_json::json!(i)))
        .collect();
    for k in &keys {
        p.insert(*k, entry());
    }
    let mut i = 0;
    c.bench_function("cache_partition_hit", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            p.get(black_box(&keys[i]), 1, None)
        })
    });
}

/// A lookup on the mesh: a key, or the owner's answer.
enum Hop {
    Ask(CacheKey),
    Answer(Option<Arc<Entry>>),
}

/// Two shards on their own cores: shard 0 asks, shard 1 answers from its partition. Each
/// run of `n` lookups with `depth` in flight reports its wall time back.
fn mesh_hop(c: &mut Criterion) {
    let spec = MeshSpec::<Hop>::new(2, 1024);
    let (runs_tx, runs_rx) = flume::unbounded::<(u64, usize)>();
    let (took_tx, took_rx) = flume::unbounded::<Duration>();
    let key = CacheKey([7; 16]);
    let mut handles = Vec::new();
    for (id, core) in [Some(0), Some(1)].into_iter().enumerate() {
        let spec = spec.clone();
        let (runs_rx, took_tx) = (runs_rx.clone(), took_tx.clone());
        let spin = Duration::from_micros(200);
        let shard = ShardSpec {
            id: ShardId(id as u16),
            core,
            ring_depth: 64,
            spin_before_park: spin,
            io_memory: 64 << 10,
        };
        handles.push(
            shardgate::shard::start(shard, move || async move {
                let me: Rc<OnceCell<Rc<Mesh<Hop>>>> = Rc::default();
                let answered = Rc::new(Cell::new(0u64));
                let pulse = Rc::new(Pulse::default());
                let mut p = Partition::new(1 << 20);
                p.insert(key, entry());
                let p = Rc::new(RefCell::new(p));
                let (mesh_ref, got, wake) = (me.clone(), answered.clone(), pulse.clone());
                let on_batch = move |from: usize, batch: Vec<Hop>| {
                    for msg in batch {
                        match msg {
                            Hop::Ask(k) => {
                                let e = p.borrow_mut().get(&k, 1, None);
                                if let Some(m) = mesh_ref.get() {
                                    m.send(from, Hop::Answer(e));
                                }
                            }
                            Hop::Answer(e) => {
                                black_box(e);
                                got.set(got.get() + 1);
                                wake.notify();
                            }
                        }
                    }
                };
                let mesh = match Mesh::join(spec, id, on_batch).await {
                    Ok(m) => m,
                    Err(e) => {
                        eprintln!("shard {id}: {e}");
                        return;
                    }
                };
                let _ = me.set(mesh.clone());
                if id == 1 {
                    // The owner only answers, until the bench is over.
                    while !runs_rx.is_disconnected() {
                        shardgate::shard::sleep(Duration::from_millis(50)).await;
                    }
                    return;
                }
                while let Ok((n, depth)) = runs_rx.recv_async().await {
                    let started = Instant::now();
                    let base = answered.get();
                    let mut sent = 0u64;
                    loop {
                        let done = answered.get() - base;
                        if done >= n {
                            break;
                        }
                        while sent < n && sent - done < depth as u64 {
                            mesh.send(1, Hop::Ask(key));
                            sent += 1;
                        }
                        pulse.wait().await;
                    }
                    let _ = took_tx.send(started.elapsed());
                }
            })
            .map_err(|e| e.to_string()),
        );
    }
    let handles_note = handles
        .iter()
        .filter_map(|h| h.as_ref().err().cloned())
        .collect::<Vec<_>>()
        .join("; ");
    let mut g = c.benchmark_group("cache_hop");
    for depth in [1usize, 64] {
        g.bench_function(format!("mesh_round_trip_depth_{depth}"), |b| {
            b.iter_custom(|iters| {
                let _ = runs_tx.send((iters, depth));
                took_rx
                    .recv_timeout(Duration::from_secs(30))
                    .unwrap_or_else(|_| panic!("the shards did not answer: {handles_note}"))
            })
        });
    }
    g.finish();
    drop(runs_tx);
    for h in handles.into_iter().flatten() {
        let _ = h.join();
    }
}

criterion_group!(benches, cache_key, local_lookup, mesh_hop);
criterion_main!(benches);
