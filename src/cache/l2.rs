//! What a shard asks of the cache's second level (Redis, shared by the nodes), served on the
//! control plane: shards never hold a Redis connection.

use std::sync::Arc;

use super::entry::Entry;
use super::key::CacheKey;
use super::partition::Selector;

/// One request to the L2.
pub enum L2Request {
    /// The answer under `key`, if Redis has it; the reply is `None` on a miss, an error or a
    /// timeout (the shard waits at most its own timeout anyway).
    Get {
        /// The key.
        key: CacheKey,
        /// Where the answer goes.
        reply: tokio::sync::oneshot::Sender<Option<Arc<Entry>>>,
    },
    /// Store an answer (compressed, with its remaining TTL).
    Put {
        /// The key.
        key: CacheKey,
        /// The answer.
        entry: Arc<Entry>,
    },
    /// Remove what `selector` names from Redis, and tell the other nodes to remove it from
    /// their shards.
    Invalidate(Selector),
}

/// The sending half every shard (and the admin API) holds.
pub type L2Sender = flume::Sender<L2Request>;
