//! Gemini-kind upstreams (`generateContent`, `streamGenerateContent?alt=sse`,
//! `batchEmbedContents`).
//!
//! Owns: the wire types ([`wire`]), translation from the canonical request and back
//! ([`translate`]), and the chunk stream parser ([`stream`]).
//! Does not: do IO (see `pipeline::attempt`), or serve clients (Gemini is upstream only).

pub mod stream;
pub mod translate;
pub mod wire;

#[cfg(test)]
mod tests;
