//! The semantic cache's partitions: a chat request split into what must match exactly (the
//! tenant, the model, every parameter, the system prompt and every turn but the last) and the
//! last user message's text, which is compared by meaning within that partition only.
//!
//! Owns: [`split`] (the partition key and the text to embed). Does not: embed, index or
//! search (to come), or judge two texts (`cache::guard`).

use serde_json::Value;

use super::key::{CacheKey, Tenant};

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
