//! One shard's part of the cache: the answers whose keys it owns, bounded by a byte budget.
//!
//! Eviction and admission are quick_cache's `unsync` cache (one shard, no locks): a
//! Clock-PRO variant close to S3-FIFO. A new answer enters the small cold queue and is
//! promoted only when it is asked for again, and keys evicted lately are remembered as ghosts,
//! so a stream of one-hit wonders passes through the cold queue without pushing hot answers
//! out; the crate needs no separate frequency filter for that. `tests/cache_policy.rs`
//! measures it against LRU on a Zipf trace.
//!
//! Entries are weighted by their bytes ([`Entry::weight`]). Expiry is checked on read (an
//! expired entry is removed when found), and [`Partition::sweep`] drops what expired
//! unread.

use std::sync::Arc;

use quick_cache::Lifecycle;
use quick_cache::unsync::Cache;

use super::entry::Entry;
use super::key::{CacheKey, Tenant};

/// Weighs an entry by its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByBytes;

impl quick_cache::Weighter<CacheKey, Arc<Entry>> for ByBytes {
    fn weight(&self, _key: &CacheKey, val: &Arc<Entry>) -> u64 {
        val.weight()
    }
}

/// Counts the entries an insert evicted.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountEvictions;

impl Lifecycle<CacheKey, Arc<Entry>> for CountEvictions {
    type RequestState = u32;

    fn begin_request(&self) -> u32 {
        0
    }

    fn on_evict(&self, evicted: &mut u32, _key: CacheKey, _val: Arc<Entry>) {
        *evicted += 1;
    }
}

/// What an insert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// The entry is in the partition.
    pub stored: bool,
    /// Other entries evicted to make room.
    pub evicted: u32,
}

/// Which entries an invalidation removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One key.
    Key(CacheKey),
    /// Every answer of a public model.
    Model(Arc<str>),
    /// Every answer of a tenant.
    Tenant(Tenant),
    /// Every answer carrying a tag.
    Tag(Box<str>),
    /// Every key whose hex form starts with this (lowercase hex digits).
    Prefix(Box<str>),
    /// Everything.
    All,
}

impl Selector {
    /// The selector a `name=value` pair names (the admin API's query, and the message
    /// other nodes get): `key` (32 hex digits), `model`, `tenant` (`global`, `key:<id>`,
    /// `team:<id>`), `tag`, `prefix` (hex digits) or `all=true`. The error says what is wrong.
    pub fn parse(name: &str, value: &str) -> Result<Self, String> {
        let hex = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_hexdigit());
        Ok(match name {
            "key" if value.len() == 32 && hex(value) => {
                let mut k = [0u8; 16];
                for (i, b) in k.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&value[2 * i..2 * i + 2], 16)
                        .map_err(|_| "Expected 32 hex digits.".to_owned())?;
                }
                Self::Key(CacheKey(k))
            }
            "key" => return Err("Expected 32 hex digits.".into()),
            "model" if !value.is_empty() => Self::Model(value.into()),
            "tag" if !value.is_empty() => Self::Tag(value.into()),
            "prefix" if hex(value) && value.len() <= 32 => {
                Self::Prefix(value.to_ascii_lowercase().into())
            }
            "tenant" => match value.split_once(':') {
                None if value == "global" => Self::Tenant(Tenant::Global),
                Some(("key", id)) if !id.is_empty() => Self::Tenant(Tenant::Key(id.into())),
                Some(("team", id)) if !id.is_empty() => Self::Tenant(Tenant::Team(id.into())),
                _ => return Err("Expected `global`, `key:<id>` or `team:<id>`.".into()),
            },
            "all" if value == "true" => Self::All,
            other => return Err(format!("`{other}={value}` names nothing to invalidate.")),
        })
    }

    /// The `name=value` pair [`Selector::parse`] reads back.
    pub fn pair(&self) -> (&'static str, String) {
        match self {
            Self::Key(k) => ("key", k.to_string()),
            Self::Model(m) => ("model", m.to_string()),
            Self::Tenant(Tenant::Global) => ("tenant", "global".into()),
            Self::Tenant(Tenant::Key(k)) => ("tenant", format!("key:{k}")),
            Self::Tenant(Tenant::Team(t)) => ("tenant", format!("team:{t}")),
            Self::Tag(t) => ("tag", t.to_string()),
            Self::Prefix(p) => ("prefix", p.to_string()),
            Self::All => ("all", "true".into()),
        }
    }

    /// Whether `entry`, filed under `key`, is selected.
    pub fn matches(&self, key: &CacheKey, entry: &Entry) -> bool {
        self.selects(key, &entry.model, &entry.tenant, &entry.tags)
    }

    /// Whether an answer filed under `key`, of `model` and `tenant`, tagged `tags`, is
    /// selected.
    pub fn selects(&self, key: &CacheKey, model: &str, tenant: &Tenant, tags: &[Box<str>]) -> bool {
        match self {
            Self::Key(k) => k == key,
            Self::Model(m) => model == &**m,
            Self::Tenant(t) => tenant == t,
            Self::Tag(t) => tags.iter().any(|x| x == t),
            Self::Prefix(p) => key.to_string().starts_with(&**p),
            Self::All => true,
        }
    }
}

/// One shard's partition.
pub struct Partition {
    cache: Cache<CacheKey, Arc<Entry>, ByBytes, quick_cache::DefaultHashBuilder, CountEvictions>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("entries", &self.cache.len())
            .field("bytes", &self.cache.weight())
            .field("capacity", &self.cache.capacity())
            .finish()
    }
}

/// The average entry size the partition's table is first sized for.
const EXPECTED_ENTRY_BYTES: u64 = 4096;

impl Partition {
    /// A partition holding at most `bytes` (entries weighed by [`Entry::weight`]).
    pub fn new(bytes: u64) -> Self {
        let items =
            usize::try_from((bytes / EXPECTED_ENTRY_BYTES).clamp(16, 1 << 20)).unwrap_or(16);
        Self {
            cache: Cache::with(
                items,
                bytes.max(1),
                ByBytes,
                quick_cache::DefaultHashBuilder::default(),
                CountEvictions,
            ),
        }
    }

    /// The fresh entry under `key` no older than `max_age_ms`, if any. An expired entry is
    /// removed; an entry too old for this request stays for others.
    pub fn get(
        &mut self,
        key: &CacheKey,
        now_ms: u64,
        max_age_ms: Option<u64>,
    ) -> Option<Arc<Entry>> {
        let entry = self.cache.get(key)?;
        if !entry.is_fresh(now_ms) {
            self.cache.remove(key);
            return None;
        }
        entry.servable(now_ms, max_age_ms).then(|| entry.clone())
    }

    /// The entry under `key`, fresh or not, without counting it as used (the warmer's and
    /// the tests' look).
    pub fn peek(&self, key: &CacheKey) -> Option<&Arc<Entry>> {
        self.cache.peek(key)
    }

    /// File `entry` under `key` (replacing what was there). A new entry may be turned away
    /// at once when it weighs more than the cache lets one entry weigh.
    pub fn insert(&mut self, key: CacheKey, entry: Arc<Entry>) -> Inserted {
        let evicted = self.cache.insert_with_lifecycle(key, entry);
        let stored = self.cache.contains_key(&key);
        Inserted {
            stored,
            // A refused entry goes through the same eviction hook.
            evicted: evicted.saturating_sub(u32::from(!stored)),
        }
    }

    /// Remove every entry `selector` picks; how many went.
    pub fn invalidate(&mut self, selector: &Selector) -> usize {
        if let Selector::Key(k) = selector {
            return usize::from(self.cache.remove(k).is_some());
        }
        let before = self.cache.len();
        self.cache.retain(|k, e| !selector.matches(k, e));
        before - self.cache.len()
    }

    /// Drop entries that expired unread; how many went.
    pub fn sweep(&mut self, now_ms: u64) -> usize {
        let before = self.cache.len();
        self.cache.retain(|_, e| e.is_fresh(now_ms));
        before - self.cache.len()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Bytes held (by [`Entry::weight`]).
    pub fn bytes(&self) -> u64 {
        self.cache.weight()
    }

    /// Every entry, in no particular order (the warm snapshot and the tests).
    pub fn iter(&self) -> impl Iterator<Item = (&CacheKey, &Arc<Entry>)> {
        self.cache.iter()
    }
}

/// The shard that owns `key` among `shards`.
pub fn owner(key: &CacheKey, shards: usize) -> usize {
    let mut low = [0u8; 8];
    low.copy_from_slice(&key.0[8..]);
    (u64::from_le_bytes(low) % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Form;
    use bytes::Bytes;

    fn key(n: u32) -> CacheKey {
        let mut k = [0u8; 16];
        k[..4].copy_from_slice(&n.to_be_bytes());
        k[12..].copy_from_slice(&n.to_le_bytes());
        CacheKey(k)
    }

    fn entry(bytes: usize, model: &str, tenant: Tenant, tags: &[&str]) -> Arc<Entry> {
        Arc::new(Entry {
            form: Form::Whole,
            body: Bytes::from(vec![b'x'; bytes]),
            frames: Box::new([]),
            usage_chunk: false,
            usage: None,
            stored_ms: 1_000,
            expires_ms: 61_000,
            model: Arc::from(model),
            tenant,
            tags: tags.iter().map(|t| Box::from(*t)).collect(),
            source: None,
        })
    }

    #[test]
    fn gets_respect_expiry_and_max_age() {
        let mut p = Partition::new(1 << 20);
        assert!(
            p.insert(key(1), entry(100, "m", Tenant::Global, &[]))
                .stored
        );
        assert!(p.get(&key(1), 2_000, None).is_some());
        assert!(
            p.get(&key(1), 2_000, Some(500)).is_none(),
            "older than max-age"
        );
        assert!(p.get(&key(1), 2_000, Some(1_000)).is_some());
        assert!(p.get(&key(1), 61_000, None).is_none(), "expired");
        assert!(p.is_empty(), "an expired entry found is removed");
    }

    #[test]
    fn the_byte_budget_holds() {
        let mut p = Partition::new(100_000);
        let mut evicted = 0;
        for i in 0..1_000 {
            evicted += p
                .insert(key(i), entry(1_000, "m", Tenant::Global, &[]))
                .evicted;
        }
        assert!(p.bytes() <= 100_000, "{} bytes held", p.bytes());
        assert!(p.len() >= 50, "{} entries held", p.len());
        assert_eq!(
            evicted as usize + p.len(),
            1_000,
            "every entry is held or was evicted"
        );
    }

    #[test]
    fn an_entry_too_heavy_is_refused_without_evicting() {
        let mut p = Partition::new(10_000);
        p.insert(key(1), entry(100, "m", Tenant::Global, &[]));
        let r = p.insert(key(2), entry(50_000, "m", Tenant::Global, &[]));
        assert_eq!(
            r,
            Inserted {
                stored: false,
                evicted: 0
            }
        );
        assert!(p.get(&key(1), 2_000, None).is_some());
    }

    #[test]
    fn each_selector_removes_what_it_names() {
        let mut p = Partition::new(1 << 20);
        let team = Tenant::Team(Arc::from("t"));
        p.insert(key(1), entry(10, "a", Tenant::Global, &["x"]));
        p.insert(key(2), entry(10, "b", team.clone(), &["y"]));
        p.insert(key(3), entry(10, "b", Tenant::Global, &["x", "z"]));
        p.insert(key(4), entry(10, "c", Tenant::Key(Arc::from("k")), &[]));
        assert_eq!(p.invalidate(&Selector::Tag("x".into())), 2);
        assert_eq!(p.invalidate(&Selector::Tenant(team)), 1);
        assert_eq!(p.len(), 1);
        let prefix = key(4).to_string()[..6].to_owned();
        assert_eq!(p.invalidate(&Selector::Prefix("ffff".into())), 0);
        assert_eq!(p.invalidate(&Selector::Prefix(prefix.into())), 1);
        p.insert(key(5), entry(10, "c", Tenant::Global, &[]));
        p.insert(key(6), entry(10, "d", Tenant::Global, &[]));
        assert_eq!(p.invalidate(&Selector::Model(Arc::from("c"))), 1);
        assert_eq!(p.invalidate(&Selector::Key(key(6))), 1);
        assert_eq!(p.invalidate(&Selector::Key(key(6))), 0);
        p.insert(key(7), entry(10, "d", Tenant::Global, &[]));
        assert_eq!(p.invalidate(&Selector::All), 1);
        assert!(p.is_empty());
    }

    #[test]
    fn selectors_read_back_what_they_write() {
        let all = [
            Selector::Key(key(7)),
            Selector::Model(Arc::from("gpt-4o")),
            Selector::Tenant(Tenant::Global),
            Selector::Tenant(Tenant::Key(Arc::from("k:1"))),
            Selector::Tenant(Tenant::Team(Arc::from("t"))),
            Selector::Tag("a b".into()),
            Selector::Prefix("0f".into()),
            Selector::All,
        ];
        for s in all {
            let (n, v) = s.pair();
            assert_eq!(Selector::parse(n, &v), Ok(s));
        }
    }

    #[test]
    fn sweep_drops_the_expired() {
        let mut p = Partition::new(1 << 20);
        p.insert(key(1), entry(10, "a", Tenant::Global, &[]));
        assert_eq!(p.sweep(60_999), 0);
        assert_eq!(p.sweep(61_000), 1);
    }

    #[test]
    fn owners_spread_over_shards() {
        let mut seen = [0usize; 4];
        for i in 0..4_000 {
            let k = CacheKey::of(&Tenant::Global, "chat", "m", &serde_json::json!({ "i": i }));
            seen[owner(&k, 4)] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1_200).contains(&n)), "{seen:?}");
        assert_eq!(owner(&key(9), 1), 0);
    }
}
