//! OpenAI-kind upstreams: OpenAI and every OpenAI-compatible server (vLLM, Ollama, Groq,
//! Together, Mistral, DeepSeek, Azure OpenAI with its deployment URL, `api-key` header and
//! `api-version` query).
//!
//! Owns: the wire types ([`wire`]; the request is the canonical one), translation of answers
//! to and from the canonical response ([`translate`]), and the chunk stream both ways
//! ([`stream`]). OpenAI clients reach OpenAI-kind upstreams without any of it: the body goes
//! through untouched but for the model name (see `pipeline::attempt`).
//! Does not: do IO.

pub mod stream;
pub mod translate;
pub mod wire;

#[cfg(test)]
mod tests;
