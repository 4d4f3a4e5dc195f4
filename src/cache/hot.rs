//! Which cached answers are hot: a decaying count per key of the lookups every shard reports,
//! for the warmer (replicate the hottest to every shard, snapshot them on shutdown).
//!
//! Exact counts in a bounded map, halved every `halve_every` events (the aging of TinyLFU's
//! sketch: what was hot an hour ago fades), and aged further when the map is full until a
//! quarter of it is free. Why by hand: the warmer needs top-K over hashes it already has, on one thread, with
//! the time passed in; the count-min crates on crates.io are unmaintained, and a map of a
//! few tens of thousands of counters is all the precision top-64 needs.

use hashbrown::HashMap;

use super::key::CacheKey;

/// One lookup a shard saw: the key and its answer's size (0 on a miss).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The key.
    pub key: CacheKey,
    /// The answer's bytes (its weight), 0 when there was none.
    pub bytes: u32,
    /// A client's lookup (`false`: the answer being stored, which tells its size).
    pub read: bool,
}

/// Decaying counts of lookups per key.
#[derive(Debug)]
pub struct HotSet {
    counts: HashMap<CacheKey, (u32, u32)>,
    cap: usize,
    events: u64,
    halve_every: u64,
}

impl HotSet {
    /// Count at most `cap` keys; halve every count each `halve_every` events.
    pub fn new(cap: usize, halve_every: u64) -> Self {
        Self {
            counts: HashMap::with_capacity(cap.min(4096)),
            cap: cap.max(16),
            events: 0,
            halve_every: halve_every.max(1),
        }
    }

    /// Count one lookup.
    pub fn observe(&mut self, s: Seen) {
        self.events += 1;
        if self.events.is_multiple_of(self.halve_every) {
            self.counts.retain(|_, (n, _)| {
                *n /= 2;
                *n > 0
            });
        }
        if self.counts.len() >= self.cap && !self.counts.contains_key(&s.key) {
            // Full: age every count until a quarter of the room is free (the keys asked for
            // least go first). A pass costs the map's size and frees at least a quarter of it,
            // so this is constant work per event however the keys come (at most 32 passes:
            // a count halves to nothing).
            while self.counts.len() > self.cap / 4 * 3 {
                self.counts.retain(|_, (n, _)| {
                    *n /= 2;
                    *n > 0
                });
            }
        }
        let e = self.counts.entry(s.key).or_insert((0, 0));
        e.0 = e.0.saturating_add(1);
        if s.bytes > 0 {
            e.1 = s.bytes;
        }
    }

    /// The hottest keys with an answer (counted at least `min` times), hottest first, at
    /// most `k` of them and `bytes` of answers in all.
    pub fn top(&self, k: usize, bytes: u64, min: u32) -> Vec<CacheKey> {
        let mut all: Vec<(&CacheKey, &(u32, u32))> = self
            .counts
            .iter()
            .filter(|(_, (n, b))| *n >= min && *b > 0)
            .collect();
        all.sort_unstable_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        let mut total = 0u64;
        all.into_iter()
            .take(k)
            .take_while(|(_, (_, b))| {
                total += u64::from(*b);
                total <= bytes
            })
            .map(|(key, _)| *key)
            .collect()
    }

    /// How often `key` was counted (decayed).
    pub fn count(&self, key: &CacheKey) -> u32 {
        self.counts.get(key).map_or(0, |c| c.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 16])
    }

    fn seen(n: u8, bytes: u32) -> Seen {
        Seen {
            key: key(n),
            bytes,
            read: true,
        }
    }

    #[test]
    fn the_most_asked_come_first_within_the_bounds() {
        let mut h = HotSet::new(1000, 1_000_000);
        for (n, times) in [(1u8, 50), (2, 10), (3, 30), (4, 1)] {
            for _ in 0..times {
                h.observe(seen(n, 100));
            }
        }
        assert_eq!(h.top(10, u64::MAX, 2), vec![key(1), key(3), key(2)]);
        assert_eq!(h.top(2, u64::MAX, 2), vec![key(1), key(3)]);
        assert_eq!(h.top(10, 250, 2), vec![key(1), key(3)], "a byte budget");
        // A key never answered (only misses) is not replicated.
        for _ in 0..99 {
            h.observe(seen(9, 0));
        }
        assert!(!h.top(10, u64::MAX, 1).contains(&key(9)));
    }

    #[test]
    fn counts_fade() {
        let mut h = HotSet::new(1000, 10);
        for _ in 0..9 {
            h.observe(seen(1, 1));
        }
        assert_eq!(h.count(&key(1)), 9);
        h.observe(seen(2, 1)); // the 10th event halves, then counts key 2
        assert_eq!(h.count(&key(1)), 4);
        for _ in 0..40 {
            h.observe(seen(2, 1));
        }
        assert_eq!(h.count(&key(1)), 0, "faded away");
        assert_eq!(h.top(1, u64::MAX, 1), vec![key(2)]);
    }

    #[test]
    fn a_full_set_of_keys_each_seen_twice_still_makes_room() {
        // Every key counted twice (a miss, then its store): a pass must still free room, and
        // the set must not rescan itself on every new key.
        let mut h = HotSet::new(64, u64::MAX);
        for n in 0..10_000u32 {
            let mut k = [0u8; 16];
            k[..4].copy_from_slice(&n.to_le_bytes());
            for _ in 0..2 {
                h.observe(Seen {
                    key: CacheKey(k),
                    bytes: 1,
                    read: true,
                });
            }
            assert!(h.counts.len() <= 64);
            assert!(h.count(&CacheKey(k)) > 0, "the newest key is counted");
        }
    }

    #[test]
    fn a_full_set_keeps_its_hot_key() {
        let mut h = HotSet::new(16, u64::MAX);
        for _ in 0..1_000 {
            h.observe(seen(200, 1));
        }
        for n in 0..100u8 {
            h.observe(seen(n, 1));
        }
        assert!(h.counts.len() <= 16);
        assert!(h.count(&key(200)) > 1, "aged, not dropped");
        assert_eq!(h.top(1, u64::MAX, 1), vec![key(200)]);
    }
}
