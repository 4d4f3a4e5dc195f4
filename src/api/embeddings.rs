//! `POST /v1/embeddings` requests (OpenAI's shape), and the answer built from plain vectors.

use serde::Deserialize;
use serde_json::Value;

use super::translate::TranslateError;

/// An embeddings request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    /// Model.
    pub model: String,
    /// A string, strings, tokens or token lists.
    pub input: Value,
    /// `float` (default) or `base64`.
    #[serde(default)]
    pub encoding_format: Option<String>,
    /// Truncate vectors to this many dimensions.
    #[serde(default)]
    pub dimensions: Option<u32>,
    /// End-user id.
    #[serde(default)]
    pub user: Option<String>,
}

impl EmbeddingsRequest {
    /// Parse strictly; errors name the field.
    pub fn from_json(body: &[u8]) -> Result<Self, TranslateError> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let r: Self =
            serde_path_to_error::deserialize(&mut de).map_err(TranslateError::from_path)?;
        match r.encoding_format.as_deref() {
            None | Some("float" | "base64") => Ok(r),
            Some(other) => Err(TranslateError::invalid(format!(
                "`encoding_format` must be float or base64, not `{other}`"
            ))),
        }
    }

    /// The inputs as texts; token inputs are refused (only OpenAI reads tokens).
    pub fn texts(&self, target: &str) -> Result<Vec<String>, TranslateError> {
        let bad = || TranslateError::invalid("`input` must be a string or an array of strings");
        let texts = match &self.input {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) if items.is_empty() => return Err(bad()),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    match i {
                        Value::String(s) => out.push(s.clone()),
                        Value::Number(_) | Value::Array(_) => {
                            return Err(TranslateError::unsupported(format!(
                                "token-array `input` with a {target} model"
                            )));
                        }
                        _ => return Err(bad()),
                    }
                }
                out
            }
            _ => return Err(bad()),
        };
        if texts.iter().any(String::is_empty) {
            return Err(TranslateError::invalid(
                "`input` must not contain empty strings",
            ));
        }
        Ok(texts)
    }

    /// Base64 vectors asked for?
    pub fn base64(&self) -> bool {
        self.encoding_format.as_deref() == Some("base64")
    }
}

/// OpenAI's embeddings answer for these vectors.
pub fn openai_answer(
    model: &str,
    vectors: &[Vec<f32>],
    base64: bool,
    prompt_tokens: u64,
) -> Vec<u8> {
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum Vector<'a> {
        // Serialised as f32, so the digits are the float's own (`0.6654361`), as OpenAI's.
        Floats(&'a [f32]),
        Base64(String),
    }
    #[derive(serde::Serialize)]
    struct Item<'a> {
        object: &'static str,
        index: usize,
        embedding: Vector<'a>,
    }
    let data: Vec<Item<'_>> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| Item {
            object: "embedding",
            index,
            embedding: if base64 {
                Vector::Base64(base64_f32(v))
            } else {
                Vector::Floats(v)
            },
        })
        .collect();
    #[derive(serde::Serialize)]
    struct Usage {
        prompt_tokens: u64,
        total_tokens: u64,
    }
    #[derive(serde::Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Item<'a>>,
        model: &'a str,
        usage: Usage,
    }
    let list = List {
        object: "list",
        data,
        model,
        usage: Usage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    };
    // Serialising plain structs into a Vec cannot fail.
    serde_json::to_vec(&list).unwrap_or_default()
}

/// Little-endian f32 bytes, base64 (standard alphabet, padded), as OpenAI sends them.
pub fn base64_f32(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64(&bytes)
}

/// Standard base64 (RFC 4648 alphabet, `=` padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A token estimate for providers that report none: one per four bytes, at least one.
pub fn estimate_tokens(texts: &[String]) -> u64 {
    texts
        .iter()
        .map(|t| (t.len() as u64).div_ceil(4).max(1))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        // 1.0f32 = 00 00 80 3f → "AACAPw=="
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, -2.0]), "AACAPwAAAMA=");
    }

    #[test]
    fn inputs_are_checked() {
        let r = |s: &str| EmbeddingsRequest::from_json(s.as_bytes());
        assert_eq!(
            r(r#"{"model":"m","input":"a"}"#)
                .unwrap()
                .texts("gemini")
                .unwrap(),
            ["a"]
        );
        assert_eq!(
            r(r#"{"model":"m","input":["a","b"]}"#)
                .unwrap()
                .texts("gemini")
                .unwrap(),
            ["a", "b"]
        );
        let e = r(r#"{"model":"m","input":[1,2]}"#)
            .unwrap()
            .texts("gemini")
            .unwrap_err();
        assert!(e.to_string().contains("token-array"), "{e}");
        assert!(
            r(r#"{"model":"m","input":[]}"#)
                .unwrap()
                .texts("x")
                .is_err()
        );
        assert!(r(r#"{"model":"m","input":"a","encoding_format":"hex"}"#).is_err());
        assert!(r(r#"{"model":"m","input":"a","extra":1}"#).is_err());
    }
}
