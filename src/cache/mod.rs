//! The response cache: what an answer is filed under, what is kept of it, and each shard's
//! partition of it.
//!
//! Owns: the cache key ([`key::CacheKey`]: the tenant scope, the route, the public model and
//! every request field that can change the answer, canonical), the cached answer
//! ([`entry::Entry`], whole or a stream's frames), one shard's byte-bounded partition with
//! its eviction and admission policy ([`partition::Partition`]), what a request asks of the
//! cache ([`directives::Directives`]), an answer as compressed bytes for Redis and the warm
//! snapshot ([`wire`]), the decaying lookup counts the warmer ranks keys by ([`hot`]), what a
//! shard asks of the Redis L2 ([`l2`]), and the semantic cache's first pieces: its partitions
//! ([`semantic`]) and its guard ([`guard`]).
//! Does not: do IO or know HTTP bodies and shards (`pipeline::cache` looks up, hops to the
//! owner shard, serves and stores; `actors::cache_l2` and `actors::warmer` run on the control
//! plane). Design notes: `docs/design/cache.md`.
//! Key types: [`key::CacheKey`], [`entry::Entry`], [`partition::Partition`].

pub mod directives;
#[cfg(feature = "local-embed")]
pub mod encoder;
pub mod entry;
pub mod guard;
pub mod hot;
pub mod index;
pub mod key;
pub mod l2;
pub mod partition;
pub mod semantic;
pub mod wire;

pub use entry::{Entry, Form};
pub use key::{CacheKey, Tenant};
pub use partition::{Partition, Selector};
