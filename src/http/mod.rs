//! The downstream front: hyper HTTP/1.1 and HTTP/2 (optionally over TLS) on every shard.
//!
//! Owns: the accept loop and connection limits, header/idle timeouts (coarse per-shard
//! sweep), routes, the chat completions endpoint, response bodies, draining, and the single
//! place errors are rendered ([`respond`]).
//! Does not: talk to providers directly (see `providers`) or own pools (see `upstream`).
//! Key types: [`state::ShardState`], [`body::ResBody`], [`context::RequestCtx`].

pub mod body;
pub mod chat;
pub mod context;
pub mod embeddings;
pub mod respond;
pub mod routes;
pub mod server;
pub mod state;
pub mod tls;
