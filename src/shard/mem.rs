//! Giving freed heap back to the kernel after a burst.
//!
//! mimalloc purges freed pages only from inside later allocator calls: a shard that served a
//! burst of 1,000 streams and then went quiet kept their 47 MB (`scripts/heap.sh`: live data
//! under 1 KB per stream, RSS 59.7 MB against 13.3 before). The sweep tick asks for a collect
//! once the shard's connections fall well below their peak, so memory returns after a burst
//! and a steady load pays nothing.

/// Decides on each sweep tick whether to return freed memory, from the live connection count.
#[derive(Debug, Default)]
pub struct ReleasePolicy {
    /// Most connections seen since the last release.
    peak: usize,
}

/// Fewest connections a burst must have dropped by for a release to be worth a collect.
pub const RELEASE_MIN_DROP: usize = 32;

impl ReleasePolicy {
    /// One tick with `live` connections: `true` when at least half of the peak since the
    /// last release (and [`RELEASE_MIN_DROP`] connections) have closed.
    pub fn tick(&mut self, live: usize) -> bool {
        self.peak = self.peak.max(live);
        let dropped = self.peak - live;
        if dropped >= RELEASE_MIN_DROP && live * 2 <= self.peak {
            self.peak = live;
            return true;
        }
        false
    }
}

/// Return this thread's freed heap pages to the kernel now (mimalloc's `mi_collect`).
pub fn release_freed() {
    // SAFETY: mi_collect only walks and purges the calling thread's own heap; it takes no
    // pointers and is safe to call at any time from any thread.
    unsafe { libmimalloc_sys::mi_collect(false) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_that_ends_is_released_once_and_steady_load_never() {
        let mut p = ReleasePolicy::default();
        for live in [0, 10, 500, 1000, 990, 800] {
            assert!(!p.tick(live), "{live} connections: not yet");
        }
        assert!(p.tick(500), "half the peak closed");
        assert!(!p.tick(500), "released once");
        assert!(!p.tick(480), "too few closed since");
        assert!(p.tick(0));

        let mut steady = ReleasePolicy::default();
        for i in 0..1000 {
            assert!(!steady.tick(100 + i % 7));
        }
        let mut small = ReleasePolicy::default();
        assert!(!small.tick(20));
        assert!(
            !small.tick(0),
            "fewer than RELEASE_MIN_DROP connections closed"
        );
    }
}
