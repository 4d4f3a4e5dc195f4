//! The downstream edge: hyper HTTP/1.1 and HTTP/2 (optionally over TLS) on every shard.
//!
//! Owns: the accept loop, connection limits and shedding, header/idle timeouts (coarse
//! per-shard sweep), framing checks, routes, reading request bodies within their limits,
//! draining, and the single place errors are rendered ([`respond`]).
//! Does not: run a request's phases (see `pipeline`), talk to providers or own pools.
//! Key types: [`routes::handle`], [`respond::rescue`].

pub mod chat;
pub mod embeddings;
pub mod respond;
pub mod routes;
pub mod server;
pub mod tls;
