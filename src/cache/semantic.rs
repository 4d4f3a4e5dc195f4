//! The semantic cache's partitions: a chat request split into what must match exactly (the
//! tenant, the model, every parameter, the system prompt and every turn but the last) and the
//! last user message's text, which is compared by meaning within that partition only.
//!
//! Owns: [`split`] (the partition key and the text to embed), what a shard asks of the
//! semantic thread ([`SemanticRequest`]) and how a neighbour is judged ([`judge`]). Does not:
//! embed (`cache::encoder`, or an embeddings model through the pipeline), index
//! (`cache::index`), or tell two texts apart (`cache::guard`).

use std::sync::Arc;

use serde_json::Value;

use super::guard::{self, Refusal};
use super::index::{Near, Point};
use super::key::{CacheKey, Tenant};
use super::partition::Selector;

/// One request to the semantic thread (`actors::semantic`).
pub enum SemanticRequest {
    /// Embed texts with the local encoder: unit vectors in order, or why not.
    Embed {
        /// The texts.
        texts: Vec<String>,
        /// Where the vectors go.
        reply: tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>, String>>,
    },
    /// The nearest earlier question to `vector` in `partition`, judged.
    Search {
        /// The partition (`split`).
        partition: CacheKey,
        /// The question's unit embedding.
        vector: Arc<[f32]>,
        /// The question's text, for the guard.
        text: String,
        /// Least similarity of a hit.
        threshold: f32,
        /// Whether the guard judges the neighbour.
        guard: bool,
        /// Now, ms since the epoch (expired points are skipped).
        now_ms: u64,
        /// The verdict.
        reply: tokio::sync::oneshot::Sender<Searched>,
    },
    /// File a question whose answer was just stored under `point.key`.
    Insert {
        /// The partition.
        partition: CacheKey,
        /// The question.
        point: Point,
        /// Now, ms since the epoch.
        now_ms: u64,
    },
    /// The answer under `key` was stored again (a refresh, a `no-cache` request) without a
    /// lookup: its question lives until `expires_ms`.
    Extend {
        /// The answer's exact key.
        key: CacheKey,
        /// Its new expiry (ms since the epoch).
        expires_ms: u64,
    },
    /// Forget the questions whose answers `selector` names.
    Invalidate(Selector),
}

/// The sending half every shard holds.
pub type SemanticSender = flume::Sender<SemanticRequest>;

/// A search's verdict.
#[derive(Debug, Clone)]
pub enum Searched {
    /// A neighbour above the threshold the guard let through.
    Hit(Near),
    /// A neighbour above the threshold the guard refused.
    Refused(Near, Refusal),
    /// Nothing above the threshold (the best similarity seen, if any).
    Miss(Option<f32>),
}

/// Judge the nearest neighbour of the question `asked`.
pub fn judge(near: Option<Near>, asked: &str, threshold: f32, use_guard: bool) -> Searched {
    match near {
        None => Searched::Miss(None),
        Some(n) if n.similarity < threshold => Searched::Miss(Some(n.similarity)),
        Some(n) => match use_guard.then(|| guard::check(&n.text, asked)) {
            Some(Err(why)) => Searched::Refused(n, why),
            _ => Searched::Hit(n),
        },
    }
}

/// A request as the semantic cache sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Everything but the last user message's text, hashed: candidates share it.
    pub partition: CacheKey,
    /// The last user message's text (its text parts, joined by newlines).
    pub text: String,
}

/// Longest last message the semantic cache compares, in bytes (a longer one is looked up
/// exactly only: a long prompt's meaning is not one embedding's).
pub const MAX_TEXT_BYTES: usize = 2_048;

/// Split a chat body (OpenAI's or Anthropic's: both keep the turns in `messages`, with
/// `content` a string or a list of parts). `None` when the request is not one the semantic
/// cache takes: the last message is not the user's, it carries anything but text (an image,
/// a tool result), or its text is empty or longer than [`MAX_TEXT_BYTES`].
pub fn split(tenant: &Tenant, route: &str, model: &str, body: &Value) -> Option<Split> {
    let messages = body.get("messages")?.as_array()?;
    let last = messages.last()?;
    if last.get("role")?.as_str()? != "user" {
        return None;
    }
    let text = match last.get("content")? {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for p in parts {
                if p.get("type")?.as_str()? != "text" {
                    return None;
                }
                texts.push(p.get("text")?.as_str()?);
            }
            texts.join("\n")
        }
        _ => return None,
    };
    if text.trim().is_empty() || text.len() > MAX_TEXT_BYTES {
        return None;
    }
    // The partition: the body with the last message's content blanked, under its own route
    // name so that it never equals an exact key.
    let mut rest = body.clone();
    if let Some(Value::Array(ms)) = rest.get_mut("messages")
        && let Some(m) = ms.last_mut()
    {
        m["content"] = Value::Null;
    }
    let partition = CacheKey::of(tenant, &format!("semantic:{route}"), model, &rest);
    Some(Split { partition, text })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn near(text: &str, similarity: f32) -> Option<Near> {
        Some(Near {
            key: CacheKey::of(&Tenant::Global, "chat", "m", &json!({ "t": text })),
            text: text.into(),
            similarity,
        })
    }

    #[test]
    fn a_neighbour_hits_only_above_the_threshold_and_past_the_guard() {
        let asked = "How do I turn off dark mode?";
        assert!(matches!(
            judge(near("How can I disable dark mode?", 0.95), asked, 0.9, true),
            Searched::Hit(_)
        ));
        assert!(matches!(
            judge(near("How can I disable dark mode?", 0.85), asked, 0.9, true),
            Searched::Miss(Some(s)) if (s - 0.85).abs() < 1e-6
        ));
        assert!(matches!(
            judge(None, asked, 0.9, true),
            Searched::Miss(None)
        ));
        // The failure users report: "turn on" and "turn off" embed as near twins.
        assert!(matches!(
            judge(near("How do I turn on dark mode?", 0.93), asked, 0.9, true),
            Searched::Refused(_, Refusal::Negation)
        ));
        // With the guard off, the threshold alone decides.
        assert!(matches!(
            judge(near("How do I turn on dark mode?", 0.93), asked, 0.9, false),
            Searched::Hit(_)
        ));
    }

    fn body(last: Value) -> Value {
        json!({
            "model": "gpt-4o",
            "temperature": 0.2,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                last,
            ],
        })
    }

    fn of(b: &Value) -> Option<Split> {
        split(&Tenant::Global, "chat", "gpt-4o", b)
    }

    #[test]
    fn the_last_user_text_is_taken_out_of_the_partition() {
        let a = of(&body(
            json!({"role": "user", "content": "How do I enable dark mode?"}),
        ))
        .unwrap();
        let b = of(&body(json!({"role": "user", "content": [
            {"type": "text", "text": "how can I turn on"},
            {"type": "text", "text": "dark mode"},
        ]})))
        .unwrap();
        assert_eq!(a.partition, b.partition, "only the last text differs");
        assert_eq!(a.text, "How do I enable dark mode?");
        assert_eq!(b.text, "how can I turn on\ndark mode");
        let exact = CacheKey::of(
            &Tenant::Global,
            "chat",
            "gpt-4o",
            &body(json!({"role": "user", "content": null})),
        );
        assert_ne!(a.partition, exact, "never an exact key");
    }

    #[test]
    fn everything_else_must_match() {
        let base = of(&body(json!({"role": "user", "content": "q"}))).unwrap();
        let mut other = body(json!({"role": "user", "content": "q"}));
        other["temperature"] = json!(0.9);
        assert_ne!(of(&other).unwrap().partition, base.partition, "a parameter");
        let mut other = body(json!({"role": "user", "content": "q"}));
        other["messages"][0]["content"] = json!("Be thorough.");
        assert_ne!(
            of(&other).unwrap().partition,
            base.partition,
            "the system prompt"
        );
        let mut other = body(json!({"role": "user", "content": "q"}));
        other["messages"][2]["content"] = json!("Hey!");
        assert_ne!(
            of(&other).unwrap().partition,
            base.partition,
            "an earlier turn"
        );
        let b = body(json!({"role": "user", "content": "q"}));
        let team = split(&Tenant::Team("t".into()), "chat", "gpt-4o", &b).unwrap();
        assert_ne!(team.partition, base.partition, "the tenant");
        assert_ne!(
            split(&Tenant::Global, "chat", "gpt-4o-mini", &b)
                .unwrap()
                .partition,
            base.partition,
            "the model"
        );
    }

    #[test]
    fn only_a_last_user_message_of_text_is_taken() {
        assert!(of(&body(json!({"role": "assistant", "content": "x"}))).is_none());
        assert!(
            of(&body(json!({"role": "user", "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": "data:..."}},
            ]})))
            .is_none()
        );
        assert!(of(&body(json!({"role": "user", "content": "   "}))).is_none());
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        assert!(of(&body(json!({"role": "user", "content": long}))).is_none());
        assert!(of(&json!({"model": "m"})).is_none());
    }
}
