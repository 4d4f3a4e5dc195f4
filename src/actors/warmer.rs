//! The WarmerActor: which cached answers are hot, over every shard.
//!
//! Shards send batches of the lookups they saw (key and answer size, no bodies). The warmer
//! counts them with decay ([`HotSet`]) and, every second when it changed, tells every shard
//! the hottest keys: a shard that is not a hot key's owner then keeps its own copy of the
//! answer the next time the owner gives it one, and answers that key without the hop.
//!
//! On shutdown every shard hands over its entries (shared, not copied); the warmer writes the
//! hottest of them, within the snapshot's bounds, to `<state.dir>/cache.snapshot`, which the
//! next start loads into the shards before they listen (`cache::wire`'s snapshot layout).
//! Only the control plane writes the data directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::ShardCmd;
use crate::cache::hot::{HotSet, Seen};
use crate::cache::{CacheKey, Entry, wire};
use crate::shard::bridge::InboxSender;

/// Bytes of answers replicated to every shard, at most.
pub const REPLICATED_BYTES: u64 = 4 << 20;
/// Lookups a key needs (decayed) before it is replicated.
pub const REPLICATE_AFTER: u32 = 8;
/// Keys the warmer counts, at most.
const COUNTED_KEYS: usize = 65_536;
/// Lookups between two halvings of every count.
const HALVE_EVERY: u64 = 1 << 20;
/// How often the hot keys are published (when they changed).
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// The snapshot file's name under the data directory.
pub const SNAPSHOT_FILE: &str = "cache.snapshot";

/// What the warmer is told.
pub enum WarmerMsg {
    /// Lookups one shard saw.
    Seen(Vec<Seen>),
    /// A shard's entries at shutdown.
    Entries(Vec<(CacheKey, Arc<Entry>)>),
    /// Publish the hot keys if they changed (the actor's own interval).
    Publish,
}

/// The warmer's settings.
pub struct WarmerArgs {
    /// Every shard's inbox.
    pub shards: Vec<InboxSender<ShardCmd>>,
    /// Where the snapshot goes (`None`: no snapshot).
    pub dir: Option<PathBuf>,
    /// Keys in the snapshot, at most.
    pub snapshot_keys: usize,
    /// Bytes of answers in the snapshot, at most.
    pub snapshot_bytes: u64,
    /// Hot answers are refreshed before they expire: tell the shards when each hot key was
    /// last looked up (a refresh is only for an answer someone read).
    pub refresh: bool,
    /// Hot keys replicated to every shard, at most (`[cache] replicate_hot_keys`; 0: none).
    pub replicate_keys: usize,
}

/// The warmer.
pub struct WarmerActor;

/// Its state.
pub struct WarmerState {
    args: WarmerArgs,
    hot: HotSet,
    published: Arc<hashbrown::HashSet<CacheKey>>,
    /// When each hot key was last looked up (unix ms), with `refresh` only: every key seen
    /// since the last publish, pruned to the hot ones at each publish.
    read_at: hashbrown::HashMap<CacheKey, u64>,
    entries: Vec<(CacheKey, Arc<Entry>)>,
}

impl Actor for WarmerActor {
    type Msg = WarmerMsg;
    type State = WarmerState;
    type Arguments = WarmerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WarmerMsg>,
        args: WarmerArgs,
    ) -> Result<WarmerState, ActorProcessingErr> {
        myself.send_interval(PUBLISH_EVERY, || WarmerMsg::Publish);
        Ok(WarmerState {
            args,
            hot: HotSet::new(COUNTED_KEYS, HALVE_EVERY),
            published: Arc::default(),
            read_at: hashbrown::HashMap::new(),
            entries: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<WarmerMsg>,
        msg: WarmerMsg,
        state: &mut WarmerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WarmerMsg::Seen(batch) => {
                let now = crate::pipeline::admit::now_ms();
                for s in batch {
                    // Every key seen since the last publish (pruned to the hot ones there).
                    if state.args.refresh && s.read {
                        state.read_at.insert(s.key, now);
                    }
                    state.hot.observe(s);
                }
            }
            WarmerMsg::Entries(entries) => state.entries.extend(entries),
            WarmerMsg::Publish => {
                let top: hashbrown::HashSet<CacheKey> = state
                    .hot
                    .top(state.args.replicate_keys, REPLICATED_BYTES, REPLICATE_AFTER)
                    .into_iter()
                    .collect();
                if top != *state.published {
                    state.published = Arc::new(top);
                    for s in &state.args.shards {
                        let _ = s.send(ShardCmd::HotKeys(state.published.clone()));
                    }
                }
                if state.args.refresh {
                    let published = &state.published;
                    state.read_at.retain(|k, _| published.contains(k));
                    let reads = Arc::new(state.read_at.clone());
                    for s in &state.args.shards {
                        let _ = s.send(ShardCmd::HotReads(reads.clone()));
                    }
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WarmerMsg>,
        state: &mut WarmerState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(dir) = &state.args.dir else {
            return Ok(());
        };
        let now = crate::pipeline::admit::now_ms();
        let chosen = choose(
            &state.hot,
            &state.entries,
            now,
            state.args.snapshot_keys,
            state.args.snapshot_bytes,
        );
        let file = wire::encode_snapshot(chosen.iter().map(|(k, e)| (k, &**e)));
        match write_atomically(&dir.join(SNAPSHOT_FILE), &file) {
            Ok(()) => tracing::info!(
                entries = chosen.len(),
                bytes = file.len(),
                "Cache snapshot written."
            ),
            Err(e) => tracing::warn!(error = %e, "Cannot write the cache snapshot."),
        }
        Ok(())
    }
}

/// The entries to snapshot: fresh ones, the most asked first, within the bounds.
fn choose<'a>(
    hot: &HotSet,
    entries: &'a [(CacheKey, Arc<Entry>)],
    now_ms: u64,
    keys: usize,
    bytes: u64,
) -> Vec<&'a (CacheKey, Arc<Entry>)> {
    let mut fresh: Vec<&(CacheKey, Arc<Entry>)> =
        entries.iter().filter(|(_, e)| e.is_fresh(now_ms)).collect();
    fresh.sort_by(|a, b| hot.count(&b.0).cmp(&hot.count(&a.0)).then(a.0.cmp(&b.0)));
    let mut total = 0u64;
    fresh
        .into_iter()
        .take(keys)
        .take_while(|(_, e)| {
            total += e.weight();
            total <= bytes
        })
        .collect()
}

/// Write `bytes` to `path` through a temporary file and a rename, so a crash mid-write
/// leaves the old snapshot, never half a new one.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("snapshot.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Read the snapshot under `dir`: the fresh entries, or none (no file, or not a snapshot).
pub fn load(dir: &std::path::Path, now_ms: u64) -> Vec<(CacheKey, Entry)> {
    let path = dir.join(SNAPSHOT_FILE);
    let Ok(bytes) = std::fs::read(&path) else {
        return Vec::new();
    };
    match wire::decode_snapshot(&bytes) {
        Ok(entries) => entries
            .into_iter()
            .filter(|(_, e)| e.is_fresh(now_ms))
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "Ignoring the cache snapshot.");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Form, Tenant};

    fn entry(bytes: usize, expires_ms: u64) -> Arc<Entry> {
        Arc::new(Entry {
            form: Form::Whole,
            body: bytes::Bytes::from(vec![b'x'; bytes]),
            frames: Box::new([]),
            usage_chunk: false,
            usage: None,
            stored_ms: 0,
            expires_ms,
            model: Arc::from("m"),
            tenant: Tenant::Global,
            tags: Box::new([]),
            source: None,
        })
    }

    #[test]
    fn the_snapshot_keeps_the_hottest_fresh_entries_within_bounds() {
        let mut hot = HotSet::new(100, u64::MAX);
        let k = |n: u8| CacheKey([n; 16]);
        for (n, times) in [(1u8, 5), (2, 9), (3, 1), (4, 7)] {
            for _ in 0..times {
                hot.observe(Seen {
                    key: k(n),
                    bytes: 100,
                    read: true,
                });
            }
        }
        let entries = vec![
            (k(1), entry(100, 1_000)),
            (k(2), entry(100, 1_000)),
            (k(3), entry(100, 1_000)),
            (k(4), entry(100, 10)), // expired by now
        ];
        let picked: Vec<CacheKey> = choose(&hot, &entries, 500, 10, u64::MAX)
            .into_iter()
            .map(|(key, _)| *key)
            .collect();
        assert_eq!(picked, vec![k(2), k(1), k(3)]);
        let two = choose(&hot, &entries, 500, 2, u64::MAX);
        assert_eq!(two.len(), 2);
        let one_fits = entries[0].1.weight() + 10;
        assert_eq!(choose(&hot, &entries, 500, 10, one_fits).len(), 1);
    }

    #[test]
    fn a_snapshot_written_is_read_back() {
        let dir = std::env::temp_dir().join(format!("sg-warm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (entry(10, 1_000), entry(20, 5));
        let file = wire::encode_snapshot([(&CacheKey([1; 16]), &*a), (&CacheKey([2; 16]), &*b)]);
        write_atomically(&dir.join(SNAPSHOT_FILE), &file).unwrap();
        let back = load(&dir, 100);
        assert_eq!(back.len(), 1, "the expired one is left out");
        assert_eq!(back[0].0, CacheKey([1; 16]));
        std::fs::write(dir.join(SNAPSHOT_FILE), b"junk").unwrap();
        assert!(load(&dir, 100).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(load(&dir, 100).is_empty(), "no file, no entries");
    }
}
