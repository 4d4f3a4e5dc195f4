//! Token usage as providers report it, normalised.

use serde::{Deserialize, Serialize};

use super::json;

/// Normalised token usage of one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Input (prompt) tokens.
    pub input_tokens: u64,
    /// Output (completion) tokens.
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cached_input_tokens: u64,
    /// Reasoning tokens, where reported.
    pub reasoning_tokens: u64,
}

/// `prompt_tokens_details` / `completion_tokens_details`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Details {
    /// Prompt tokens read from the cache.
    #[serde(default)]
    pub cached_tokens: Option<u64>,
    /// Reasoning tokens (included in `completion_tokens`).
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

/// OpenAI's `usage` object.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct OpenAiUsage {
    /// Prompt tokens (cached ones included).
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Completion tokens (reasoning included).
    #[serde(default)]
    pub completion_tokens: u64,
    /// Prompt details.
    #[serde(default)]
    pub prompt_tokens_details: Option<Details>,
    /// Completion details.
    #[serde(default)]
    pub completion_tokens_details: Option<Details>,
}

impl From<OpenAiUsage> for Usage {
    fn from(u: OpenAiUsage) -> Self {
        Self {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            cached_input_tokens: u
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            reasoning_tokens: u
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// Is this stream chunk the extra one `stream_options.include_usage` adds: empty `choices`
/// and a `usage` object?
pub fn is_usage_only_chunk(doc: &[u8]) -> bool {
    let Some(choices) = json::top_level_value(doc, b"choices") else {
        return false;
    };
    let empty = doc[choices]
        .iter()
        .filter(|b| !b.is_ascii_whitespace())
        .eq(b"[]".iter());
    empty && json::top_level_value(doc, b"usage").is_some_and(|u| doc[u.start] == b'{')
}

crate::needles! {
    USAGE = b"\"usage\"";
}

impl Usage {
    /// Read the top-level `usage` object of an OpenAI-shaped JSON document (a response or a
    /// stream chunk). `None` when absent or `null`.
    pub fn from_openai_json(doc: &[u8]) -> Option<Self> {
        // Most stream chunks carry no usage: skip the structural scan for them.
        USAGE.find(doc)?;
        let span = json::top_level_value(doc, b"usage")?;
        let raw = &doc[span];
        if raw.first() != Some(&b'{') {
            return None;
        }
        let u: OpenAiUsage = serde_json::from_slice(raw).ok()?;
        Some(u.into())
    }

    /// OpenAI's `usage` object for this usage.
    pub fn openai_json(&self) -> serde_json::Value {
        serde_json::json!({
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens.saturating_add(self.output_tokens),
            "prompt_tokens_details": {"cached_tokens": self.cached_input_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_usage_only_chunk() {
        assert!(is_usage_only_chunk(
            br#"{"id":"x","choices":[ ],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#
        ));
        for other in [
            r#"{"id":"x","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}"#,
            r#"{"id":"x","choices":[],"usage":null}"#,
            r#"{"id":"x","choices":[{"delta":{}}],"usage":{"prompt_tokens":1}}"#,
            r#"{"error":{"message":"x"}}"#,
        ] {
            assert!(!is_usage_only_chunk(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn reads_openai_usage() {
        let doc = br#"{"id":"x","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,
            "prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":1}}}"#;
        assert_eq!(
            Usage::from_openai_json(doc),
            Some(Usage {
                input_tokens: 12,
                output_tokens: 3,
                cached_input_tokens: 4,
                reasoning_tokens: 1
            })
        );
        assert_eq!(Usage::from_openai_json(br#"{"usage":null}"#), None);
        assert_eq!(Usage::from_openai_json(br#"{"choices":[]}"#), None);
    }
}
