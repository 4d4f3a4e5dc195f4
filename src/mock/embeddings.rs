//! Embeddings: deterministic vectors from text ([`vector`]), served on OpenAI's
//! `POST .../embeddings` and Gemini's `:embedContent` / `:batchEmbedContents`. The same text and
//! dimension give the same vector on every route, so tests can compare them.

use bytes::Bytes;
use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use super::MockError;
use crate::api::json::{write_string, write_u64};

/// Vector length when the request names none.
pub const DEFAULT_DIMENSIONS: usize = 8;
/// Longest vector the mock makes.
pub const MAX_DIMENSIONS: usize = 65_536;

/// The embedding of `text`: `dimensions` values in [-1, 1], from a sequence seeded by a hash
/// of the text (FNV-1a into splitmix64). Not normalised. A shorter vector of the same text is
/// a prefix of a longer one.
pub fn vector(text: &str, dimensions: usize) -> Vec<f32> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (0..dimensions)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
            (unit * 2.0 - 1.0) as f32
        })
        .collect()
}

pub use crate::api::embeddings::base64;

/// An OpenAI embeddings request, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The model name as sent (without knob suffix).
    pub model: String,
    /// The inputs' texts (a token array becomes its numbers joined with " ").
    pub inputs: Vec<String>,
    /// Vector length (`dimensions`, default [`DEFAULT_DIMENSIONS`]).
    pub dimensions: usize,
    /// `encoding_format: "base64"`?
    pub base64: bool,
}

impl Request {
    /// Read an OpenAI embeddings body (`{model, input, encoding_format?, dimensions?}`; `body`
    /// is a scratch copy simd-json may modify). `input` is a string, an array of strings, an
    /// array of token ids, or an array of token-id arrays.
    pub fn from_openai(body: &mut [u8]) -> Result<Self, MockError> {
        let v = simd_json::to_borrowed_value(body)
            .map_err(|e| MockError(format!("invalid JSON: {e}")))?;
        let model = v
            .get_str("model")
            .ok_or_else(|| MockError("you must provide a model parameter".into()))?;
        let model = super::base_model(model);
        let input = v
            .get("input")
            .ok_or_else(|| MockError("you must provide an input parameter".into()))?;
        let base64 = match v.get("encoding_format") {
            None => false,
            Some(f) if f.is_null() || f.as_str() == Some("float") => false,
            Some(f) if f.as_str() == Some("base64") => true,
            Some(_) => {
                return Err(MockError(
                    "encoding_format must be \"float\" or \"base64\"".into(),
                ));
            }
        };
        Ok(Self {
            model,
            inputs: openai_inputs(input)?,
            dimensions: dimensions(v.get("dimensions"))?,
            base64,
        })
    }

    /// Prompt tokens: the inputs' total bytes / 4, at least 1.
    pub fn prompt_tokens(&self) -> u64 {
        (self.inputs.iter().map(String::len).sum::<usize>() as u64 / 4).max(1)
    }

    /// The OpenAI answer: one `embedding` per input (floats, or base64 of little-endian f32),
    /// and usage.
    pub fn openai_response(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.inputs.len() * (self.dimensions * 12 + 48) + 128);
        out.extend_from_slice(b"{\"object\":\"list\",\"data\":[");
        for (i, text) in self.inputs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"object\":\"embedding\",\"index\":");
            write_u64(&mut out, i as u64);
            out.extend_from_slice(b",\"embedding\":");
            let values = vector(text, self.dimensions);
            if self.base64 {
                let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
                write_string(&mut out, &base64(&bytes));
            } else {
                push_values(&mut out, &values);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"model\":");
        write_string(&mut out, &self.model);
        let p = self.prompt_tokens();
        out.extend_from_slice(b",\"usage\":{\"prompt_tokens\":");
        write_u64(&mut out, p);
        out.extend_from_slice(b",\"total_tokens\":");
        write_u64(&mut out, p);
        out.extend_from_slice(b"}}");
        Bytes::from(out)
    }
}

fn bad_input() -> MockError {
    MockError(
        "input must be a string, an array of strings, an array of tokens, or an array of \
         token arrays"
            .into(),
    )
}

/// The texts of an OpenAI `input`.
fn openai_inputs(input: &Value<'_>) -> Result<Vec<String>, MockError> {
    if let Some(s) = input.as_str() {
        return Ok(vec![s.to_owned()]);
    }
    let items = input
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(bad_input)?;
    if items.iter().all(|i| i.is_str()) {
        Ok(items
            .iter()
            .map(|i| i.as_str().unwrap_or_default().to_owned())
            .collect())
    } else if let Some(tokens) = tokens_text(items) {
        Ok(vec![tokens])
    } else {
        items
            .iter()
            .map(|i| {
                i.as_array()
                    .and_then(|t| tokens_text(t))
                    .ok_or_else(bad_input)
            })
            .collect()
    }
}

/// Token ids joined with " ", or `None` when one is not an integer.
fn tokens_text(items: &[Value<'_>]) -> Option<String> {
    let ids: Option<Vec<String>> = items
        .iter()
        .map(|t| t.as_i64().map(|n| n.to_string()))
        .collect();
    Some(ids?.join(" "))
}

/// A requested vector length (default [`DEFAULT_DIMENSIONS`]).
fn dimensions(v: Option<&Value<'_>>) -> Result<usize, MockError> {
    match v {
        None => Ok(DEFAULT_DIMENSIONS),
        Some(d) if d.is_null() => Ok(DEFAULT_DIMENSIONS),
        Some(d) => d
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=MAX_DIMENSIONS).contains(n))
            .ok_or_else(|| MockError(format!("dimensions must be 1 to {MAX_DIMENSIONS}"))),
    }
}

/// A JSON array of floats.
fn push_values(out: &mut Vec<u8>, values: &[f32]) {
    out.push(b'[');
    for (i, x) in values.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(x.to_string().as_bytes());
    }
    out.push(b']');
}

/// A Gemini `ContentEmbedding` (`{"values":[..]}`) for one request object
/// (`{content:{parts:[{text}]}, outputDimensionality?}`).
fn gemini_embedding(out: &mut Vec<u8>, req: &Value<'_>) -> Result<(), MockError> {
    let content = req.get("content").ok_or_else(|| {
        MockError("* EmbedContentRequest.content: content is not specified".into())
    })?;
    let text = content
        .get_array("parts")
        .map(|p| {
            p.iter()
                .filter_map(|p| p.get_str("text"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let dims = dimensions(
        req.get("outputDimensionality")
            .or_else(|| req.get("output_dimensionality")),
    )?;
    out.extend_from_slice(b"{\"values\":");
    push_values(out, &vector(&text, dims));
    out.push(b'}');
    Ok(())
}

/// The Gemini `:embedContent` answer (`{"embedding":{"values":[..]}}`) to `body`.
pub fn gemini_embed(body: &mut [u8]) -> Result<Bytes, MockError> {
    let v = simd_json::to_borrowed_value(body)
        .map_err(|e| MockError(format!("Invalid JSON payload received. {e}")))?;
    let mut out = b"{\"embedding\":".to_vec();
    gemini_embedding(&mut out, &v)?;
    out.push(b'}');
    Ok(Bytes::from(out))
}

/// The Gemini `:batchEmbedContents` answer (`{"embeddings":[{"values":[..]},..]}`) to `body`
/// (`{requests:[{model, content, outputDimensionality?}]}`).
pub fn gemini_batch(body: &mut [u8]) -> Result<Bytes, MockError> {
    let v = simd_json::to_borrowed_value(body)
        .map_err(|e| MockError(format!("Invalid JSON payload received. {e}")))?;
    let requests = v
        .get_array("requests")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            MockError("* BatchEmbedContentsRequest.requests: requests is not specified".into())
        })?;
    let mut out = b"{\"embeddings\":[".to_vec();
    for (i, r) in requests.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        gemini_embedding(&mut out, r)?;
    }
    out.extend_from_slice(b"]}");
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as Json;

    fn openai(body: &str) -> Result<Request, MockError> {
        Request::from_openai(&mut body.as_bytes().to_vec())
    }

    fn floats(v: &Json) -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    }

    fn unbase64(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 {c}"),
        };
        let mut out = Vec::new();
        for quad in s.as_bytes().chunks(4) {
            let pad = quad.iter().filter(|&&c| c == b'=').count();
            let n = quad
                .iter()
                .map(|&c| if c == b'=' { 0 } else { u32::from(val(c)) })
                .fold(0u32, |n, v| (n << 6) | v);
            out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
        }
        out
    }

    #[test]
    fn vectors_are_deterministic_and_bounded() {
        let a = vector("hello", 64);
        assert_eq!(a, vector("hello", 64));
        assert_ne!(a, vector("hellp", 64));
        assert_eq!(&a[..8], &vector("hello", 8)[..]);
        assert!(a.iter().all(|x| (-1.0..=1.0).contains(x)));
        assert!(a.iter().any(|x| *x < 0.0) && a.iter().any(|x| *x > 0.0));
        assert!(vector("", 3).len() == 3 && vector("x", 0).is_empty());
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
            assert_eq!(unbase64(enc), raw.as_bytes());
        }
    }

    #[test]
    fn openai_inputs_of_every_shape() {
        let r = openai(r#"{"model":"emb;latency_ms=1","input":"one"}"#).unwrap();
        assert_eq!(
            (r.model.as_str(), r.dimensions, r.base64),
            ("emb", 8, false)
        );
        assert_eq!(r.inputs, ["one"]);
        assert_eq!(r.prompt_tokens(), 1);
        let r = openai(r#"{"model":"e","input":["a","bb"],"dimensions":3}"#).unwrap();
        assert_eq!((r.inputs.len(), r.dimensions), (2, 3));
        let r = openai(r#"{"model":"e","input":[1,2,3]}"#).unwrap();
        assert_eq!(r.inputs, ["1 2 3"]);
        let r = openai(r#"{"model":"e","input":[[1,2],[30]]}"#).unwrap();
        assert_eq!(r.inputs, ["1 2", "30"]);
        let r = openai(r#"{"model":"e","input":"0123456789abcdef"}"#).unwrap();
        assert_eq!(r.prompt_tokens(), 4);
        for bad in [
            r#"{"input":"x"}"#,
            r#"{"model":"e"}"#,
            r#"{"model":"e","input":[]}"#,
            r#"{"model":"e","input":[1,"a"]}"#,
            r#"{"model":"e","input":[[1],[1.5]]}"#,
            r#"{"model":"e","input":{}}"#,
            r#"{"model":"e","input":"x","dimensions":0}"#,
            r#"{"model":"e","input":"x","encoding_format":"hex"}"#,
            "{",
        ] {
            assert!(openai(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn openai_response_floats_and_base64_agree() {
        let r = openai(r#"{"model":"e","input":["cat","dog"],"dimensions":5}"#).unwrap();
        let v: Json = serde_json::from_slice(&r.openai_response()).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "e");
        assert_eq!(v["usage"]["prompt_tokens"], 1);
        assert_eq!(v["usage"]["total_tokens"], 1);
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        for (i, text) in ["cat", "dog"].iter().enumerate() {
            assert_eq!(data[i]["object"], "embedding");
            assert_eq!(data[i]["index"], i);
            assert_eq!(floats(&data[i]["embedding"]), vector(text, 5));
        }

        let b = openai(
            r#"{"model":"e","input":["cat","dog"],"dimensions":5,"encoding_format":"base64"}"#,
        )
        .unwrap();
        let v: Json = serde_json::from_slice(&b.openai_response()).unwrap();
        for (i, text) in ["cat", "dog"].iter().enumerate() {
            let bytes = unbase64(v["data"][i]["embedding"].as_str().unwrap());
            let back: Vec<f32> = bytes
                .chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(back, vector(text, 5));
        }
    }

    #[test]
    fn gemini_embeddings_match_openai() {
        let v: Json = serde_json::from_slice(
            &gemini_embed(
                &mut br#"{"content":{"parts":[{"text":"cat"},{"text":"nap"}]},"outputDimensionality":6,"taskType":"RETRIEVAL_QUERY"}"#
                    .to_vec(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(floats(&v["embedding"]["values"]), vector("cat nap", 6));
        let o = openai(r#"{"model":"e","input":"cat nap","dimensions":6}"#).unwrap();
        let ov: Json = serde_json::from_slice(&o.openai_response()).unwrap();
        assert_eq!(ov["data"][0]["embedding"], v["embedding"]["values"]);

        let v: Json = serde_json::from_slice(
            &gemini_batch(
                &mut br#"{"requests":[{"model":"models/e","content":{"parts":[{"text":"a"}]}},{"model":"models/e","content":{"parts":[{"text":"b"}]},"outputDimensionality":2}]}"#
                    .to_vec(),
            )
            .unwrap(),
        )
        .unwrap();
        let e = v["embeddings"].as_array().unwrap();
        assert_eq!(floats(&e[0]["values"]), vector("a", DEFAULT_DIMENSIONS));
        assert_eq!(floats(&e[1]["values"]), vector("b", 2));
        for bad in ["{}", r#"{"requests":[]}"#, r#"{"requests":[{}]}"#, "{"] {
            assert!(gemini_batch(&mut bad.as_bytes().to_vec()).is_err(), "{bad}");
        }
        assert!(gemini_embed(&mut b"{}".to_vec()).is_err());
    }
}
