//! Cache keys: the tenant scope, the route, the public model and the request body in a
//! canonical form, hashed to 128 bits.
//!
//! Canonical: object members sorted by name at every depth, no whitespace, strings in
//! serde_json's escaping (so `"é"` and `"\u00e9"` are one string), numbers with an integral
//! value written as integers (`1.0` is `1`). The fields that cannot change the answer are left
//! out: `stream` and `stream_options` (a stream is served from a whole answer and the
//! reverse), `user` and `metadata` (labels for the caller), `store`, and `model` (the public
//! model is keyed on its own, so an alias and its body field agree).
//!
//! The hash is SHA-256 (ring, already in the build), truncated to 128 bits: the same on
//! every node and across restarts, which the Redis L2 and the warm snapshot need (a seeded
//! in-process hasher is not).

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// Who a cached answer may be served to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Tenant {
    /// Everyone (a model whose answers depend on nothing private).
    Global,
    /// One team's keys.
    Team(Arc<str>),
    /// One key.
    Key(Arc<str>),
}

/// Top-level request fields that never change the answer.
const IGNORED: [&str; 6] = [
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "model",
];

/// A cached answer's key: 128 bits of SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 16]);

impl CacheKey {
    /// The key of a request: `route` names the API (`chat`, `messages`, `embeddings`: the
    /// same body means different things on each), `model` the public model.
    pub fn of(tenant: &Tenant, route: &str, model: &str, body: &Value) -> Self {
        let mut text = Vec::with_capacity(256);
        match tenant {
            Tenant::Global => text.extend_from_slice(b"g"),
            Tenant::Team(t) => push_labelled(&mut text, b't', t),
            Tenant::Key(k) => push_labelled(&mut text, b'k', k),
        }
        push_labelled(&mut text, b'r', route);
        push_labelled(&mut text, b'm', model);
        text.push(b'\n');
        match body {
            Value::Object(members) => {
                let mut names: Vec<&String> = members
                    .keys()
                    .filter(|k| !IGNORED.contains(&k.as_str()))
                    .collect();
                names.sort_unstable();
                write_members(&mut text, names.into_iter().map(|k| (k, &members[k])));
            }
            other => write_canonical(&mut text, other),
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, &text);
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest.as_ref()[..16]);
        Self(out)
    }
}

impl CacheKey {
    /// Its 32 lowercase hex digits (every hit writes them twice: its key header and ETag).
    pub fn hex(&self) -> [u8; 32] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 32];
        for (pair, b) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
        }
        out
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex();
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

/// `<tag><length>:<text>`: unambiguous whatever the text holds.
fn push_labelled(out: &mut Vec<u8>, tag: u8, text: &str) {
    out.push(tag);
    out.extend_from_slice(text.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(text.as_bytes());
}

fn write_members<'a>(out: &mut Vec<u8>, members: impl Iterator<Item = (&'a String, &'a Value)>) {
    out.push(b'{');
    for (i, (name, value)) in members.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, name);
        out.push(b':');
        write_canonical(out, value);
    }
    out.push(b'}');
}

fn write_canonical(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, item);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let mut names: Vec<&String> = members.keys().collect();
            names.sort_unstable();
            write_members(out, names.into_iter().map(|k| (k, &members[k])));
        }
    }
}

fn write_number(out: &mut Vec<u8>, n: &serde_json::Number) {
    if let Some(i) = n.as_i64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(u) = n.as_u64() {
        out.extend_from_slice(u.to_string().as_bytes());
    } else if let Some(f) = n.as_f64() {
        // An integral float is the integer it equals (`1.0` is `1`).
        if f.fract() == 0.0 && f.abs() < 9.0e15 {
            out.extend_from_slice((f as i64).to_string().as_bytes());
        } else {
            out.extend_from_slice(n.to_string().as_bytes());
        }
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    // serde_json writes a string one way only (and into a Vec it cannot fail).
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(tenant: &Tenant, body: &str) -> CacheKey {
        let v: Value = serde_json::from_str(body).unwrap();
        CacheKey::of(tenant, "chat", "gpt-4o", &v)
    }

    const BODY: &str = r#"{"model":"gpt-4o","temperature":0.2,"max_tokens":64,
        "messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi é"}],
        "tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"b":{},"a":{}}}}}]}"#;

    #[test]
    fn hex_is_the_bytes_in_order() {
        let mut k = CacheKey([0; 16]);
        k.0[0] = 0x0f;
        k.0[15] = 0xa1;
        assert_eq!(k.to_string(), format!("0f{}a1", "0".repeat(28)));
    }

    #[test]
    fn member_order_whitespace_and_escapes_do_not_matter() {
        let g = Tenant::Global;
        let reordered = r#"{"tools":[{"function":{"parameters":{"properties":{"a":{},"b":{}},"type":"object"},"name":"f"},"type":"function"}],
            "messages":[{"content":"Be brief.","role":"system"},{"content":"Hi \u00e9","role":"user"}],"max_tokens":64.0,"temperature":0.2}"#;
        assert_eq!(key_of(&g, BODY), key_of(&g, reordered));
    }

    #[test]
    fn fields_that_cannot_change_the_answer_are_left_out() {
        let g = Tenant::Global;
        let base = key_of(&g, BODY);
        let mut v: Value = serde_json::from_str(BODY).unwrap();
        for (field, value) in [
            ("stream", Value::Bool(true)),
            ("stream_options", serde_json::json!({"include_usage": true})),
            ("user", "ann".into()),
            ("metadata", serde_json::json!({"team": "x"})),
            ("store", Value::Bool(false)),
            ("model", "an-alias".into()),
        ] {
            v[field] = value;
            assert_eq!(CacheKey::of(&g, "chat", "gpt-4o", &v), base, "{field}");
        }
    }

    #[test]
    fn every_field_that_can_change_the_answer_does() {
        let g = Tenant::Global;
        let base = key_of(&g, BODY);
        let v: Value = serde_json::from_str(BODY).unwrap();
        let changed = |f: &dyn Fn(&mut Value)| {
            let mut w = v.clone();
            f(&mut w);
            CacheKey::of(&g, "chat", "gpt-4o", &w)
        };
        let variants: Vec<CacheKey> = vec![
            changed(&|w| w["temperature"] = 0.3.into()),
            changed(&|w| w["max_tokens"] = 65.into()),
            changed(&|w| w["seed"] = 7.into()),
            changed(&|w| w["messages"][1]["content"] = "Hi e".into()),
            changed(&|w| w["messages"][0]["content"] = "Be long.".into()),
            changed(&|w| {
                let m = w["messages"].as_array_mut().unwrap();
                m.swap(0, 1);
            }),
            changed(&|w| w["tools"][0]["function"]["name"] = "g".into()),
            changed(&|w| w["response_format"] = serde_json::json!({"type": "json_object"})),
        ];
        for (i, k) in variants.iter().enumerate() {
            assert_ne!(*k, base, "variant {i}");
        }
        // Another public model, or another API, is another key.
        assert_ne!(CacheKey::of(&g, "chat", "gpt-4o-mini", &v), base);
        assert_ne!(CacheKey::of(&g, "messages", "gpt-4o", &v), base);
    }

    #[test]
    fn tenants_are_kept_apart_as_the_scope_says() {
        let (a, b) = (Tenant::Key("a".into()), Tenant::Key("b".into()));
        assert_ne!(key_of(&a, BODY), key_of(&b, BODY));
        assert_ne!(key_of(&a, BODY), key_of(&Tenant::Global, BODY));
        assert_ne!(key_of(&Tenant::Team("a".into()), BODY), key_of(&a, BODY));
        assert_eq!(
            key_of(&Tenant::Team("t".into()), BODY),
            key_of(&Tenant::Team("t".into()), BODY)
        );
        // Lengths are part of the labels: no two tenants' texts run into each other.
        let k1 = CacheKey::of(&Tenant::Key("ab".into()), "chat", "c", &Value::Null);
        let k2 = CacheKey::of(&Tenant::Key("a".into()), "chat", "bc", &Value::Null);
        assert_ne!(k1, k2);
    }

    #[test]
    fn keys_are_stable_and_print_as_hex() {
        // The same on every node and after a restart: the digest of the canonical text.
        let k = CacheKey::of(
            &Tenant::Global,
            "chat",
            "m",
            &serde_json::json!({"a": 1, "b": [true, null, "x"]}),
        );
        let canonical = b"gr4:chatm1:m\n{\"a\":1,\"b\":[true,null,\"x\"]}";
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical);
        assert_eq!(k.0, digest.as_ref()[..16]);
        let text = k.to_string();
        assert_eq!(text.len(), 32);
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
        let again = CacheKey::of(
            &Tenant::Global,
            "chat",
            "m",
            &serde_json::json!({"b": [true, null, "x"], "a": 1.0}),
        );
        assert_eq!(k, again);
        assert_eq!(format!("{k:?}"), format!("CacheKey({text})"));
    }
}
