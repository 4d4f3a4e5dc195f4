//! Canonical (OpenAI-compatible) request and response pieces the gateway reads.
//!
//! Owns: decoding just the fields routing needs from a chat request (simd-json, borrowed),
//! locating and rewriting the `model` value in the raw body without re-serialising it,
//! reading `usage` out of answers, and splitting SSE byte streams into whole events.
//! Does not: own provider wire formats (see `providers`) or any IO.
//! Key types: [`ChatHead`], [`Usage`], [`sse::EventSplitter`].

pub mod chat;
pub mod embeddings;
pub mod json;
pub mod needle;
pub mod request;
pub mod response;
pub mod sse;
pub mod translate;
pub mod usage;

pub use chat::{ChatHead, DecodeScratch, decode_chat};
pub use request::ChatRequest;
pub use response::{ChatResponse, Delta, FinishReason};
pub use translate::TranslateError;
pub use usage::Usage;
