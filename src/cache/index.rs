//! The semantic cache's vector index: one HNSW graph per partition (`cache::semantic::split`),
//! bounded in texts over every partition, with time passed in.
//!
//! Owns: [`Index`] (insert, nearest live neighbour, invalidation, bounds). Does not: embed
//! (the semantic thread's encoder or an embeddings model), judge a pair (`cache::guard`), or
//! hold answers (the exact cache does: a point names the exact key of its answer).
//!
//! The graph is `hnsw_rs`'s. It cannot delete, so a point that expired, was replaced or was
//! invalidated is marked dead and skipped, and a partition whose dead points outnumber its
//! live ones is rebuilt from the live ones (their vectors are kept for that). The index lives
//! on the semantic thread only, never on a shard: `hnsw_rs` locks inside.

use std::sync::Arc;

use hashbrown::HashMap;
use hnsw_rs::prelude::{Distance, Hnsw};

use super::key::{CacheKey, Tenant};
use super::partition::Selector;

/// Links per node per layer (HNSW's M): 16 suits sentence embeddings of a few hundred
/// dimensions.
const LINKS: usize = 16;
/// Candidates explored while building (efConstruction).
const EF_BUILD: usize = 64;
/// Candidates explored while searching (efSearch): partitions are small, so recall is near 1.
const EF_SEARCH: usize = 48;
/// Neighbours fetched per search: dead ones are skipped, so a few spares.
const K: usize = 8;

/// Cosine distance of unit vectors, `1 − a·b`, clamped at 0 (rounding can put a vector's dot
/// with itself a hair above 1, where `hnsw_rs`'s own dot distance asserts).
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// The dot product (the cosine of two unit vectors). Eight running sums, so that the
/// compiler keeps them in vector registers (one sum would be a chain of dependent adds: float
/// addition is not reassociated for it).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0.0f32; 8];
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Scale `v` to unit length in place; `false` (and `v` untouched) when it has none to scale
/// (zero, or not finite).
pub fn normalize(v: &mut [f32]) -> bool {
    let norm = dot(v, v).sqrt();
    if !norm.is_finite() || norm <= f32::EPSILON {
        return false;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    true
}

/// A text in the index.
#[derive(Debug, Clone)]
pub struct Point {
    /// The exact key its answer is cached under.
    pub key: CacheKey,
    /// The text (the last user message), for the guard.
    pub text: Box<str>,
    /// When the answer expires (ms since the epoch).
    pub expires_ms: u64,
    /// The text's unit embedding.
    pub vector: Box<[f32]>,
    /// The tenant and model it was filed under, for invalidation (`Selector`).
    pub tags: Tags,
}

/// What invalidation can name a point by (a `Selector`, as for its answer).
#[derive(Debug, Clone)]
pub struct Tags {
    /// The tenant it was filed for.
    pub tenant: Tenant,
    /// The public model.
    pub model: Arc<str>,
    /// The request's cache tags.
    pub tags: Box<[Box<str>]>,
}

/// The nearest live neighbour of a search.
#[derive(Debug, Clone)]
pub struct Near {
    /// Its answer's exact key.
    pub key: CacheKey,
    /// Its text.
    pub text: Box<str>,
    /// Cosine similarity to the query.
    pub similarity: f32,
}

struct Part {
    graph: Hnsw<'static, f32, UnitCosine>,
    /// Every point inserted since the last rebuild, by data id (`None`: dead).
    points: Vec<Option<Point>>,
    live: usize,
    dim: usize,
    last_used_ms: u64,
}

impl Part {
    fn new(dim: usize, capacity: usize) -> Self {
        Self {
            graph: Hnsw::new(LINKS, capacity.max(16), 16, EF_BUILD, UnitCosine),
            points: Vec::new(),
            live: 0,
            dim,
            last_used_ms: 0,
        }
    }

    fn push(&mut self, p: Point) {
        let id = self.points.len();
        self.graph.insert((&p.vector, id));
        self.points.push(Some(p));
        self.live += 1;
    }

    fn kill(&mut self, id: usize) -> bool {
        match self.points.get_mut(id) {
            Some(slot @ Some(_)) => {
                *slot = None;
                self.live -= 1;
                true
            }
            _ => false,
        }
    }

    /// A new graph over the live points (the newest `keep` of them).
    fn rebuild(&mut self, keep: usize) -> usize {
        let live: Vec<Point> = self.points.drain(..).flatten().collect();
        let dropped = live.len().saturating_sub(keep);
        let mut fresh = Part::new(self.dim, keep);
        fresh.last_used_ms = self.last_used_ms;
        for p in live.into_iter().skip(dropped) {
            fresh.push(p);
        }
        *self = fresh;
        dropped
    }
}

/// The index over every partition.
pub struct Index {
    parts: HashMap<CacheKey, Part>,
    /// Where each exact key's point is: (partition, data id).
    by_key: HashMap<CacheKey, (CacheKey, usize)>,
    live: usize,
    max_entries: usize,
    evicted: u64,
}

impl Index {
    /// An empty index holding at most `max_entries` texts.
    pub fn new(max_entries: usize) -> Self {
        Self {
            parts: HashMap::new(),
            by_key: HashMap::new(),
            live: 0,
            max_entries: max_entries.max(1),
            evicted: 0,
        }
    }

    /// Texts held.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The bound it was made with.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Texts dropped to stay in bounds, so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// File `point` in `partition` (replacing the point of the same exact key). A vector of
    /// another length than the partition's is refused (`false`).
    pub fn insert(&mut self, partition: CacheKey, point: Point, now_ms: u64) -> bool {
        if point.vector.is_empty() {
            return false;
        }
        self.remove_key(&point.key);
        let dim = point.vector.len();
        let part = self
            .parts
            .entry(partition)
            .or_insert_with(|| Part::new(dim, 64));
        if part.dim != dim {
            return false;
        }
        part.last_used_ms = now_ms;
        // Dead points outnumber live ones: rebuild before the graph grows further.
        if part.points.len() >= 64 && part.points.len() > 2 * part.live {
            let live = part.live;
            part.rebuild(live);
            self.reindex(&partition);
        }
        let Some(part) = self.parts.get_mut(&partition) else {
            return false;
        };
        let key = point.key;
        let id = part.points.len();
        part.push(point);
        self.by_key.insert(key, (partition, id));
        self.live += 1;
        self.bound(&partition, now_ms);
        true
    }

    /// The nearest live, unexpired neighbour of `vector` in `partition`.
    pub fn nearest(&mut self, partition: &CacheKey, vector: &[f32], now_ms: u64) -> Option<Near> {
        let part = self.parts.get_mut(partition)?;
        if part.dim != vector.len() || part.live == 0 {
            return None;
        }
        part.last_used_ms = now_ms;
        let found = part
            .graph
            .search(vector, K.min(part.points.len()), EF_SEARCH);
        let mut expired = Vec::new();
        let mut best: Option<Near> = None;
        for n in found {
            let Some(Some(p)) = part.points.get(n.d_id) else {
                continue;
            };
            if p.expires_ms <= now_ms {
                expired.push(n.d_id);
                continue;
            }
            let similarity = dot(vector, &p.vector);
            if best.as_ref().is_none_or(|b| similarity > b.similarity) {
                best = Some(Near {
                    key: p.key,
                    text: p.text.clone(),
                    similarity,
                });
            }
        }
        for id in expired {
            self.kill(partition, id);
        }
        best
    }

    /// A new expiry for the point of the answer under `key` (stored again); `false` when the
    /// index has no such point.
    pub fn extend(&mut self, key: &CacheKey, expires_ms: u64) -> bool {
        let Some((pk, id)) = self.by_key.get(key).copied() else {
            return false;
        };
        match self.parts.get_mut(&pk).and_then(|p| p.points.get_mut(id)) {
            Some(Some(p)) => {
                p.expires_ms = expires_ms;
                true
            }
            _ => false,
        }
    }

    /// Drop the points whose answers `selector` names; returns how many.
    pub fn invalidate(&mut self, selector: &Selector) -> usize {
        if matches!(selector, Selector::All) {
            let n = self.live;
            self.clear();
            return n;
        }
        self.remove_where(|k, p| selector.selects(k, &p.tags.model, &p.tags.tenant, &p.tags.tags))
    }

    /// Drop the points `matches` names; returns how many.
    pub fn remove_where(&mut self, matches: impl Fn(&CacheKey, &Point) -> bool) -> usize {
        let doomed: Vec<(CacheKey, usize)> = self
            .parts
            .iter()
            .flat_map(|(pk, part)| {
                part.points.iter().enumerate().filter_map(|(id, p)| {
                    p.as_ref().filter(|p| matches(&p.key, p)).map(|_| (*pk, id))
                })
            })
            .collect();
        let n = doomed.len();
        for (pk, id) in doomed {
            self.kill(&pk, id);
        }
        n
    }

    /// Drop everything.
    pub fn clear(&mut self) {
        self.parts.clear();
        self.by_key.clear();
        self.live = 0;
    }

    fn remove_key(&mut self, key: &CacheKey) {
        if let Some((pk, id)) = self.by_key.get(key).copied() {
            self.kill(&pk, id);
        }
    }

    fn kill(&mut self, partition: &CacheKey, id: usize) {
        let Some(part) = self.parts.get_mut(partition) else {
            return;
        };
        let key = part.points.get(id).and_then(|p| p.as_ref()).map(|p| p.key);
        if part.kill(id) {
            self.live -= 1;
            if let Some(k) = key {
                self.by_key.remove(&k);
            }
        }
        if part.live == 0 {
            self.parts.remove(partition);
        }
    }

    /// Point `by_key` at a rebuilt partition's new data ids.
    fn reindex(&mut self, partition: &CacheKey) {
        if let Some(part) = self.parts.get(partition) {
            for (id, p) in part.points.iter().enumerate() {
                if let Some(p) = p {
                    self.by_key.insert(p.key, (*partition, id));
                }
            }
        }
    }

    /// Over `max_entries`: drop the least recently used partitions other than `current`,
    /// then, if `current` alone is over, its oldest points.
    fn bound(&mut self, current: &CacheKey, _now_ms: u64) {
        while self.live > self.max_entries {
            let victim = self
                .parts
                .iter()
                .filter(|(k, _)| *k != current)
                .min_by_key(|(_, p)| p.last_used_ms)
                .map(|(k, _)| *k);
            match victim {
                Some(v) => {
                    if let Some(part) = self.parts.remove(&v) {
                        for p in part.points.iter().flatten() {
                            self.by_key.remove(&p.key);
                        }
                        self.live -= part.live;
                        self.evicted += part.live as u64;
                    }
                }
                None => {
                    let Some(part) = self.parts.get_mut(current) else {
                        return;
                    };
                    let over = self.live - self.max_entries;
                    // Keep the newest three quarters of the bound, so that a full partition
                    // does not rebuild on every insert.
                    let keep = part
                        .live
                        .saturating_sub(over)
                        .min(self.max_entries * 3 / 4)
                        .max(1);
                    let dead_keys: Vec<CacheKey> = part
                        .points
                        .iter()
                        .flatten()
                        .take(part.live - keep)
                        .map(|p| p.key)
                        .collect();
                    let dropped = part.rebuild(keep);
                    for k in dead_keys {
                        self.by_key.remove(&k);
                    }
                    self.live -= dropped;
                    self.evicted += dropped as u64;
                    self.reindex(current);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(n: u32) -> CacheKey {
        CacheKey::of(&Tenant::Global, "chat", "m", &json!({ "n": n }))
    }

    /// A unit vector of `dim` dimensions from a seed (deterministic, spread out).
    fn vector(seed: u32, dim: usize) -> Box<[f32]> {
        let mut rng = fastrand::Rng::with_seed(u64::from(seed));
        let mut v: Vec<f32> = (0..dim).map(|_| rng.f32() - 0.5).collect();
        assert!(normalize(&mut v));
        v.into()
    }

    fn point(n: u32, v: Box<[f32]>, expires_ms: u64) -> Point {
        Point {
            key: key(n),
            text: format!("text {n}").into(),
            expires_ms,
            vector: v,
            tags: Tags {
                tenant: Tenant::Global,
                model: "m".into(),
                tags: Box::new([format!("t{}", n % 10).into()]),
            },
        }
    }

    #[test]
    fn finds_the_nearest_live_point_of_its_own_partition_only() {
        let mut ix = Index::new(1000);
        let (a, b) = (key(10_000), key(10_001));
        for n in 0..200 {
            assert!(ix.insert(a, point(n, vector(n, 32), 1_000), 0));
        }
        // The same vector in another partition is never found from `a`'s.
        assert!(ix.insert(b, point(500, vector(7, 32), 1_000), 0));
        let near = ix.nearest(&a, &vector(7, 32), 10).unwrap();
        assert_eq!(near.key, key(7));
        assert!(near.similarity > 0.999, "{}", near.similarity);
        assert_eq!(ix.nearest(&b, &vector(7, 32), 10).unwrap().key, key(500));
        // A query of another length finds nothing rather than panicking in the graph.
        assert!(ix.nearest(&a, &vector(7, 16), 10).is_none());
        assert!(!ix.insert(a, point(900, vector(1, 16), 1_000), 0));
    }

    #[test]
    fn expired_and_replaced_points_are_skipped() {
        let mut ix = Index::new(1000);
        let p = key(10_000);
        ix.insert(p, point(1, vector(1, 16), 100), 0);
        ix.insert(p, point(2, vector(2, 16), 1_000), 0);
        assert_eq!(ix.nearest(&p, &vector(1, 16), 50).unwrap().key, key(1));
        // Expired: the next best live point answers instead.
        let near = ix.nearest(&p, &vector(1, 16), 100).unwrap();
        assert_eq!(near.key, key(2));
        assert_eq!(ix.len(), 1);
        // Stored again: lives on past its first expiry.
        assert!(ix.extend(&key(2), 2_000));
        assert!(!ix.extend(&key(99), 2_000));
        assert_eq!(ix.nearest(&p, &vector(2, 16), 1_500).unwrap().key, key(2));
        // The same exact key filed again replaces its point.
        ix.insert(p, point(2, vector(3, 16), 1_000), 0);
        assert_eq!(ix.len(), 1);
        let near = ix.nearest(&p, &vector(3, 16), 100).unwrap();
        assert!(near.similarity > 0.999);
    }

    #[test]
    fn stays_within_its_bound_dropping_the_least_recently_used_partition() {
        let mut ix = Index::new(100);
        let (old, hot) = (key(20_000), key(20_001));
        for n in 0..50 {
            ix.insert(old, point(n, vector(n, 16), u64::MAX), 1);
        }
        for n in 50..100 {
            ix.insert(hot, point(n, vector(n, 16), u64::MAX), 2);
        }
        ix.nearest(&old, &vector(1, 16), 3);
        // Touched after `hot`: `hot` is the one to go when a third partition arrives.
        ix.insert(key(20_002), point(100, vector(100, 16), u64::MAX), 4);
        assert!(ix.len() <= 100);
        assert!(ix.nearest(&hot, &vector(60, 16), 5).is_none());
        assert_eq!(ix.nearest(&old, &vector(1, 16), 5).unwrap().key, key(1));
        // One partition alone over the bound keeps its newest points.
        let mut ix = Index::new(100);
        for n in 0..300 {
            ix.insert(old, point(n, vector(n, 16), u64::MAX), u64::from(n));
            assert!(ix.len() <= 100);
        }
        assert!(ix.evicted() >= 200);
        assert_eq!(
            ix.nearest(&old, &vector(299, 16), 400).unwrap().key,
            key(299)
        );
        assert!(
            ix.nearest(&old, &vector(0, 16), 400)
                .is_none_or(|n| n.key != key(0))
        );
    }

    #[test]
    fn many_dead_points_rebuild_the_graph_and_keep_the_live_ones() {
        let mut ix = Index::new(10_000);
        let p = key(30_000);
        for n in 0..100 {
            ix.insert(p, point(n, vector(n, 16), u64::MAX), 0);
        }
        let gone =
            ix.invalidate(&Selector::Tag("t0".into())) + ix.invalidate(&Selector::Tag("t5".into()));
        assert_eq!(gone, 20);
        assert_eq!(ix.invalidate(&Selector::Model("other".into())), 0);
        for round in 0..5u32 {
            for n in 0..100 {
                ix.insert(p, point(n, vector(n + 1000 * round, 16), u64::MAX), 0);
            }
        }
        assert_eq!(ix.len(), 100);
        let near = ix.nearest(&p, &vector(4042, 16), 1).unwrap();
        assert_eq!(near.key, key(42));
        assert!(near.similarity > 0.999);
    }

    #[test]
    fn dot_is_the_plain_sum_of_products_at_any_length() {
        for len in [0, 1, 7, 8, 9, 384, 385] {
            let a: Vec<f32> = (0..len).map(|i| i as f32 * 0.5).collect();
            let b: Vec<f32> = (0..len).map(|i| 1.0 - i as f32 * 0.25).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!(
                (dot(&a, &b) - plain).abs() <= plain.abs() * 1e-5 + 1e-5,
                "{len}"
            );
        }
    }

    #[test]
    fn unit_cosine_never_goes_below_zero() {
        let v = vector(5, 384);
        assert!(UnitCosine.eval(&v, &v) >= 0.0);
        let mut zero = vec![0.0f32; 4];
        assert!(!normalize(&mut zero));
    }
}
