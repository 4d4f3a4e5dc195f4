//! Anthropic-kind upstreams (the Messages API), and the Anthropic dialect clients speak on
//! `POST /v1/messages`.
//!
//! Owns: the wire types ([`wire`]), translation to and from the canonical request and answer
//! ([`translate`]), and the SSE event sequence both ways ([`stream`]).
//! Does not: do IO (see `pipeline::attempt`).

pub mod stream;
pub mod translate;
pub mod wire;

#[cfg(test)]
mod tests;
