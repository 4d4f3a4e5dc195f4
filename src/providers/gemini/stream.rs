//! Gemini's `streamGenerateContent?alt=sse` stream: every event is a whole
//! `GenerateContentResponse` chunk; there is no end marker, so the stream is complete once a
//! chunk carried a finish reason.

use super::translate::{Progress, response_deltas};
use super::wire;
use crate::api::TranslateError;
use crate::api::response::Delta;

/// Reads Gemini chunks into deltas.
#[derive(Debug, Default)]
pub struct Parser {
    progress: Progress,
}

impl Parser {
    /// Read one event's `data`.
    pub fn parse_chunk(&mut self, data: &[u8], out: &mut Vec<Delta>) -> Result<(), TranslateError> {
        let r: wire::Response = serde_json::from_slice(data)
            .map_err(|e| TranslateError::upstream(format!("a malformed Gemini chunk ({e})")))?;
        response_deltas(r, &mut self.progress, out);
        Ok(())
    }

    /// Did a chunk carry a finish reason (or an error)?
    pub fn is_complete(&self) -> bool {
        self.progress.finished
    }
}
