//! The partition's eviction and admission policy against plain LRU on the same Zipf trace:
//! 1,000,000 requests over 100,000 distinct prompts, Zipf(0.99), room for 10% of them.
//! Equal entry sizes, so both caches hold the same number of answers. Run with
//! `--nocapture` to see both hit ratios.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::num::NonZeroUsize;
use std::sync::Arc;

use bytes::Bytes;
use shardgate::cache::{CacheKey, Entry, Form, Partition, Tenant};

const PROMPTS: usize = 100_000;
const REQUESTS: usize = 1_000_000;
const ROOM: usize = PROMPTS / 10;
const BODY: usize = 800;

/// A Zipf(s) sampler over ranks `0..n` (inverse CDF by binary search).
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 1..=n {
            total += 1.0 / (rank as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self { cdf }
    }

    fn sample(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

fn entry() -> Arc<Entry> {
    Arc::new(Entry {
        form: Form::Whole,
        body: Bytes::from(vec![b'x'; BODY]),
        frames: Box::new([]),
        usage_chunk: false,
        usage: None,
        stored_ms: 0,
        expires_ms: u64::MAX,
        model: Arc::from("m"),
        tenant: Tenant::Global,
        tags: Box::new([]),
        source: None,
    })
}

/// The trace: prompt ranks drawn from Zipf(0.99), each rank's key a real cache key (so
/// popularity and hash order are unrelated).
fn trace(seed: u64, n: usize, s: f64) -> (Vec<CacheKey>, Vec<u32>) {
    let keys: Vec<CacheKey> = (0..PROMPTS)
        .map(|i| {
            CacheKey::of(
                &Tenant::Global,
                "chat",
                "m",
                &serde_json::json!({ "messages": [{ "role": "user", "content": format!("prompt {i}") }] }),
            )
        })
        .collect();
    let zipf = Zipf::new(PROMPTS, s);
    let mut rng = fastrand::Rng::with_seed(seed);
    let ranks = (0..n).map(|_| zipf.sample(rng.f64()) as u32).collect();
    (keys, ranks)
}

fn partition_hits(keys: &[CacheKey], ranks: &[u32]) -> usize {
    let one = entry();
    let mut p = Partition::new(one.weight() * ROOM as u64);
    let mut hits = 0;
    for &r in ranks {
        let k = keys[r as usize];
        if p.get(&k, 1, None).is_some() {
            hits += 1;
        } else {
            p.insert(k, one.clone());
        }
    }
    hits
}

fn lru_hits(keys: &[CacheKey], ranks: &[u32]) -> usize {
    let one = entry();
    let mut lru = lru::LruCache::new(NonZeroUsize::new(ROOM).unwrap());
    let mut hits = 0;
    for &r in ranks {
        let k = keys[r as usize];
        if lru.get(&k).is_some() {
            hits += 1;
        } else {
            lru.put(k, one.clone());
        }
    }
    hits
}

#[test]
fn the_partition_beats_lru_on_a_zipf_trace() {
    let (keys, ranks) = trace(0x5eed, REQUESTS, 0.99);
    let ours = partition_hits(&keys, &ranks);
    let lru = lru_hits(&keys, &ranks);
    let ratio = |h: usize| h as f64 / REQUESTS as f64;
    println!(
        "Zipf(0.99), {REQUESTS} requests over {PROMPTS} prompts, room for {ROOM}: \
         partition (quick_cache unsync) {:.4}, LRU {:.4}",
        ratio(ours),
        ratio(lru)
    );
    assert!(ours > lru, "partition {ours} hits, LRU {lru}");
}

#[test]
fn a_scan_of_one_hit_wonders_does_not_flush_the_hot_set() {
    // The hot set (the 1,000 most popular prompts) is warm; then 50,000 prompts seen once
    // each go by, interleaved with the hot traffic. The hot set's hit ratio after the scan
    // must stay high, where LRU loses much of it.
    let (keys, hot) = trace(7, 200_000, 1.2);
    let one = entry();
    let mut p = Partition::new(one.weight() * ROOM as u64);
    let mut lru = lru::LruCache::new(NonZeroUsize::new(ROOM).unwrap());
    for &r in &hot[..100_000] {
        let k = keys[r as usize];
        if p.get(&k, 1, None).is_none() {
            p.insert(k, one.clone());
        }
        if lru.get(&k).is_none() {
            lru.put(k, one.clone());
        }
    }
    let (mut ours, mut theirs, mut asked) = (0, 0, 0);
    for (i, &r) in hot[100_000..].iter().enumerate() {
        let wonder = CacheKey::of(&Tenant::Global, "scan", "m", &serde_json::json!(i));
        if p.get(&wonder, 1, None).is_none() {
            p.insert(wonder, one.clone());
        }
        if lru.get(&wonder).is_none() {
            lru.put(wonder, one.clone());
        }
        let k = keys[r as usize];
        asked += 1;
        if p.get(&k, 1, None).is_some() {
            ours += 1;
        } else {
            p.insert(k, one.clone());
        }
        if lru.get(&k).is_some() {
            theirs += 1;
        } else {
            lru.put(k, one.clone());
        }
    }
    println!(
        "hot traffic during a scan of one-hit wonders: partition {:.4}, LRU {:.4}",
        ours as f64 / asked as f64,
        theirs as f64 / asked as f64
    );
    assert!(ours > theirs, "partition {ours}, LRU {theirs} of {asked}");
}
