//! Chat completion requests: decode the few fields the gateway needs, keep the rest as bytes.

use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::json;
use crate::error::GatewayError;

/// The fields of a chat completion request that routing and accounting read. Everything else
/// stays in the raw body, forwarded untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatHead {
    /// The public model name.
    pub model: String,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    /// Number of messages.
    pub messages: usize,
    /// The end user (`user`), for per-user limits.
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct RawHead<'a> {
    #[serde(borrow)]
    model: Option<&'a str>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    messages: Option<Vec<IgnoredAny>>,
    #[serde(borrow, default)]
    user: Option<&'a str>,
}

/// Reusable per-shard buffers for decoding (simd-json parses in place, so it needs a copy).
#[derive(Default)]
pub struct DecodeScratch {
    copy: Vec<u8>,
    buffers: Option<simd_json::Buffers>,
}

/// Decode and validate a chat request body. The whole body is validated as JSON; only the
/// fields in [`ChatHead`] are kept.
pub fn decode_chat(body: &[u8], scratch: &mut DecodeScratch) -> Result<ChatHead, GatewayError> {
    if body.is_empty() {
        return Err(GatewayError::bad_request(
            "The request body is empty; expected a JSON object.",
        ));
    }
    scratch.copy.clear();
    scratch.copy.extend_from_slice(body);
    let buffers = scratch
        .buffers
        .get_or_insert_with(|| simd_json::Buffers::new(body.len().max(1024)));
    let head: RawHead<'_> = simd_json::serde::from_slice_with_buffers(&mut scratch.copy, buffers)
        .map_err(|e| {
        GatewayError::bad_request(format!(
            "We could not parse the JSON body of your request ({}). Send a valid JSON object.",
            describe_json_error(&e)
        ))
    })?;
    let model = match head.model {
        Some(m) if !m.is_empty() => m.to_owned(),
        _ => {
            return Err(GatewayError::bad_request(
                "you must provide a model parameter",
            ));
        }
    };
    let messages = match head.messages {
        Some(m) if !m.is_empty() => m.len(),
        Some(_) => return Err(GatewayError::bad_request("'messages' must not be empty")),
        None => {
            return Err(GatewayError::bad_request(
                "you must provide a messages parameter",
            ));
        }
    };
    Ok(ChatHead {
        model,
        stream: head.stream.unwrap_or(false),
        include_usage: head
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        max_tokens: head.max_completion_tokens.or(head.max_tokens),
        messages,
        user: head.user.filter(|u| !u.is_empty()).map(str::to_owned),
    })
}

fn describe_json_error(e: &simd_json::Error) -> String {
    // simd-json's messages name the failing character and index; keep only that.
    let s = e.to_string();
    s.chars().take(120).collect()
}

/// The body to send upstream: untouched when the upstream model name is the public one,
/// else the same bytes with only the `model` value replaced.
pub fn rewrite_model(body: &Bytes, public: &str, upstream: &str) -> Result<Bytes, GatewayError> {
    upstream_body(body, public, upstream, false)
}

/// The body to send to an OpenAI-compatible upstream: the `model` value replaced when the
/// upstream name differs, and, with `ask_usage` (a stream whose client did not ask for usage),
/// `stream_options.include_usage` set to `true` so the answer carries usage for accounting.
/// Every other byte is kept; with nothing to change the body is not copied.
pub fn upstream_body(
    body: &Bytes,
    public: &str,
    upstream: &str,
    ask_usage: bool,
) -> Result<Bytes, GatewayError> {
    let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::with_capacity(2);
    if public != upstream {
        let span = json::top_level_value(body, b"model").ok_or_else(|| {
            GatewayError::bad_request("the `model` member must be written without escapes")
        })?;
        let mut name = Vec::with_capacity(upstream.len() + 2);
        json::write_string(&mut name, upstream);
        edits.push((span, name));
    }
    if ask_usage {
        edits.push(include_usage_edit(body).ok_or_else(|| {
            GatewayError::bad_request("`stream_options` must be an object written without escapes")
        })?);
    }
    if edits.is_empty() {
        return Ok(body.clone());
    }
    edits.sort_by_key(|(span, _)| span.start);
    let extra: usize = edits.iter().map(|(_, v)| v.len()).sum();
    let mut out = Vec::with_capacity(body.len() + extra);
    let mut at = 0;
    for (span, value) in edits {
        out.extend_from_slice(&body[at..span.start]);
        out.extend_from_slice(&value);
        at = span.end;
    }
    out.extend_from_slice(&body[at..]);
    Ok(Bytes::from(out))
}

/// The one edit that makes `stream_options.include_usage` true: set an existing member,
/// add it to an existing object, or add (or replace a `null`) `stream_options` itself.
fn include_usage_edit(body: &[u8]) -> Option<(Range<usize>, Vec<u8>)> {
    const MEMBER: &[u8] = br#""include_usage":true"#;
    let first_after = |i: usize| body[i..].iter().position(|b| !b.is_ascii_whitespace());
    match json::top_level_value(body, b"stream_options") {
        None => {
            let open = body.iter().position(|&b| b == b'{')? + 1;
            let empty = body.get(open + first_after(open)?) == Some(&b'}');
            let mut v = br#""stream_options":{"include_usage":true}"#.to_vec();
            if !empty {
                v.push(b',');
            }
            Some((open..open, v))
        }
        Some(span) if body[span.start] == b'{' => {
            let obj = &body[span.clone()];
            if let Some(v) = json::top_level_value(obj, b"include_usage") {
                return Some((span.start + v.start..span.start + v.end, b"true".to_vec()));
            }
            let open = span.start + 1;
            let empty = body.get(open + first_after(open)?) == Some(&b'}');
            let mut v = MEMBER.to_vec();
            if !empty {
                v.push(b',');
            }
            Some((open..open, v))
        }
        Some(span) if &body[span.clone()] == b"null" => {
            Some((span, br#"{"include_usage":true}"#.to_vec()))
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn decode(s: &str) -> Result<ChatHead, GatewayError> {
        decode_chat(s.as_bytes(), &mut DecodeScratch::default())
    }

    #[test]
    fn asks_for_stream_usage_in_every_shape() {
        let ask = |body: &str| {
            let out = upstream_body(&Bytes::from(body.to_owned()), "m", "m", true).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["stream_options"]["include_usage"], true, "{body}");
            assert_eq!(v["messages"][0]["content"], "hi", "{body}");
            v
        };
        ask(r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#);
        ask(
            r#"{ "model":"m","stream":true,"stream_options":null,"messages":[{"role":"user","content":"hi"}]}"#,
        );
        ask(
            r#"{"model":"m","stream":true,"stream_options":{ },"messages":[{"role":"user","content":"hi"}]}"#,
        );
        let v = ask(
            r#"{"model":"m","stream_options":{"include_obfuscation":false},"messages":[{"role":"user","content":"hi"}]}"#,
        );
        assert_eq!(v["stream_options"]["include_obfuscation"], false);
        let out = upstream_body(
            &Bytes::from_static(
                br#"{"model":"fast","stream_options":{"include_usage":false},"messages":[{"role":"user","content":"hi"}]}"#,
            ),
            "fast",
            "gpt-4o-mini",
            true,
        )
        .unwrap();
        assert_eq!(
            &out[..],
            br#"{"model":"gpt-4o-mini","stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#
        );
        // A `stream_options` that is not an object is refused, not silently dropped.
        let bad = Bytes::from_static(br#"{"model":"m","stream_options":5,"messages":[]}"#);
        assert!(upstream_body(&bad, "m", "m", true).is_err());
        // Nothing to do: the same bytes, not a copy.
        let body = Bytes::from_static(br#"{"model":"m","messages":[]}"#);
        assert_eq!(
            upstream_body(&body, "m", "m", false).unwrap().as_ptr(),
            body.as_ptr()
        );
    }

    #[test]
    fn reads_the_routing_fields() {
        let h = decode(
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,
               "stream_options":{"include_usage":true},"max_tokens":5,"temperature":0.2,
               "user":"u-1"}"#,
        )
        .unwrap();
        assert_eq!(
            h,
            ChatHead {
                model: "gpt-4o".into(),
                stream: true,
                include_usage: true,
                max_tokens: Some(5),
                messages: 1,
                user: Some("u-1".into()),
            }
        );
    }

    #[test]
    fn escaped_model_is_unescaped() {
        let h = decode(r#"{"model":"a\"b","messages":[{}]}"#).unwrap();
        assert_eq!(h.model, "a\"b");
    }

    #[test]
    fn bad_bodies_are_400s() {
        for body in [
            "",
            "{",
            "[1]",
            r#"{"messages":[{}]}"#,
            r#"{"model":"m"}"#,
            r#"{"model":"m","messages":[]}"#,
            r#"{"model":3,"messages":[{}]}"#,
            r#"{"model":"m","messages":[{}],"stream":"yes"}"#,
            r#"{"model":"a","model":"b","messages":[{}]}"#,
        ] {
            let e = decode(body).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::BadRequest, "{body}");
        }
    }

    #[test]
    fn rewrite_touches_only_the_model() {
        let body =
            Bytes::from_static(br#"{"messages":[{"content":"model"}],"model":"fast","n":1}"#);
        assert_eq!(
            rewrite_model(&body, "fast", "fast").unwrap().as_ptr(),
            body.as_ptr()
        );
        let out = rewrite_model(&body, "fast", "gpt-4o-\"mini\"").unwrap();
        assert_eq!(
            &out[..],
            br#"{"messages":[{"content":"model"}],"model":"gpt-4o-\"mini\"","n":1}"#
        );
        decode(std::str::from_utf8(&out).unwrap()).unwrap();
    }
}
