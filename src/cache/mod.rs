//! The response cache (issue 14). For now its pure core: the cache key.
//!
//! Owns: what a cached answer is filed under ([`key::CacheKey`]): the tenant scope, the
//! route, the public model and every request field that can change the answer, in a
//! canonical form.
//! Does not: store, evict or look anything up yet (the per-shard partitions come next).
//! Key types: [`key::CacheKey`], [`key::Tenant`].

pub mod key;
