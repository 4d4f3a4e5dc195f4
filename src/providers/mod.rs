//! Provider kinds: how a chat request reaches each kind of upstream and how its answer comes
//! back.
//!
//! Owns: the OpenAI-compatible pass-through ([`openai`]: model name rewritten in place, body
//! otherwise untouched, SSE relayed as whole events with usage teed out) and the in-process
//! mock ([`mock`]).
//! Does not: pick deployments (routing) or render errors (`http::respond`).

pub mod mock;
pub mod openai;
