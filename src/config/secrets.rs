//! Keeping configured secrets out of what the gateway prints: a [`Redactor`] that blanks
//! every configured secret in upstream bytes before they reach an error body or a log line,
//! and [`without_userinfo`] for URLs quoted in messages.
//!
//! Owns: the set of secrets to look for and the scan. Does not: decide where to scan (the
//! error paths in `providers::call` and `http::respond` do).
//!
//! It lives beside [`Secret`] because it is built from the validated config (every provider's
//! API key) and must change with it; it is pure (no IO, no runtime) so any layer may hold one.
//!
//! Short secrets: there is no minimum length. Every non-empty secret is redacted, however
//! short; a very short key (a test key such as `k`) may blank ordinary text in an error
//! message, which costs readability, never a leak. Empty secrets are ignored.

use std::borrow::Cow;

use memchr::memmem;

use super::{Config, Secret};

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Blanks every configured secret in a byte slice. Built once per config; the finders are
/// prepared up front, so a scan allocates nothing unless it finds something.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// One finder per distinct needle: each secret, and its JSON-escaped form when that
    /// differs (a provider that echoes the key inside a JSON string may escape `"`, `\` or
    /// `/`).
    finders: Vec<memmem::Finder<'static>>,
}

impl Redactor {
    /// A redactor for every secret in `config` (each provider's API key, the admin token).
    pub fn from_config(config: &Config) -> Self {
        Self::new(
            config
                .providers
                .iter()
                .filter_map(|p| p.api_key.as_ref())
                .chain(config.admin.iter().map(|a| &a.token)),
        )
    }

    /// A redactor for these secrets (empty ones are ignored, duplicates kept once).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut needles: Vec<Vec<u8>> = Vec::new();
        for s in secrets {
            let raw = s.expose();
            if raw.is_empty() {
                continue;
            }
            needles.push(raw.as_bytes().to_vec());
            let escaped = json_escaped(raw);
            if escaped.as_bytes() != raw.as_bytes() {
                needles.push(escaped.as_bytes().to_vec());
                // Some encoders also escape `/` as `\/`.
                let slashed = escaped.replace('/', "\\/");
                if slashed != escaped {
                    needles.push(slashed.into_bytes());
                }
            }
        }
        // Longest first: among matches that start at the same byte, the longest wins.
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Self {
            finders: needles
                .into_iter()
                .map(|n| memmem::Finder::new(&n).into_owned())
                .collect(),
        }
    }

    /// Are there no secrets to look for?
    pub fn is_empty(&self) -> bool {
        self.finders.is_empty()
    }

    /// `bytes` with every occurrence of a secret replaced by [`REDACTED`]. Overlapping or
    /// touching occurrences (of one secret or of several) become one [`REDACTED`], so no byte
    /// of any occurrence survives. Borrowed, with no allocation, when nothing matches.
    pub fn redact<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        // Fast path: one SIMD scan per needle, no allocation.
        if !self.finds(bytes) {
            return Cow::Borrowed(bytes);
        }
        let mut spans = Vec::new();
        for f in &self.finders {
            let n = f.needle().len();
            spans.extend(f.find_iter(bytes).map(|at| (at, at + n)));
        }
        // Sorted by start, then merged when they overlap or touch: one `[REDACTED]` each.
        spans.sort_unstable();
        let mut out = Vec::with_capacity(bytes.len());
        let mut copied = 0;
        let mut i = 0;
        while i < spans.len() {
            let (start, mut end) = spans[i];
            i += 1;
            while i < spans.len() && spans[i].0 <= end {
                end = end.max(spans[i].1);
                i += 1;
            }
            if start >= copied {
                out.extend_from_slice(&bytes[copied..start]);
                out.extend_from_slice(REDACTED.as_bytes());
            }
            copied = copied.max(end);
        }
        out.extend_from_slice(&bytes[copied..]);
        Cow::Owned(out)
    }

    /// [`Redactor::redact`] for text. Secrets are whole UTF-8 strings, so their occurrences
    /// start and end on character boundaries and the result stays valid UTF-8.
    pub fn redact_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.redact(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(v) => Cow::Owned(
                String::from_utf8(v)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into()),
            ),
        }
    }

    /// [`Redactor::redact`] for owned bytes: the same `Bytes` back when nothing matches.
    pub fn redact_bytes(&self, bytes: bytes::Bytes) -> bytes::Bytes {
        match self.redact(&bytes) {
            Cow::Borrowed(_) => bytes,
            Cow::Owned(v) => bytes::Bytes::from(v),
        }
    }

    /// Does `bytes` hold any secret?
    pub fn finds(&self, bytes: &[u8]) -> bool {
        self.finders.iter().any(|f| f.find(bytes).is_some())
    }
}

/// `s` as it appears inside a JSON string (without the quotes).
fn json_escaped(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + 2);
    crate::api::json::write_string(&mut out, s);
    let inner = out.get(1..out.len().saturating_sub(1)).unwrap_or_default();
    String::from_utf8_lossy(inner).into_owned()
}

/// `url` with any user info (`user:pass@`) removed, for quoting in a message. Works on
/// malformed URLs too (that is when they get quoted): the authority is whatever follows
/// `scheme://` (or the start) up to the first `/`, `?` or `#`, and everything in it up to
/// its last `@` is dropped.
pub fn without_userinfo(url: &str) -> Cow<'_, str> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        None => Cow::Borrowed(url),
        Some(at) => Cow::Owned(format!("{}{}", &url[..start], &rest[at + 1..])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(secrets: &[&str]) -> Redactor {
        let s: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        Redactor::new(&s)
    }

    fn run(r: &Redactor, text: &str) -> String {
        r.redact_str(text).into_owned()
    }

    #[test]
    fn clean_input_is_borrowed() {
        let r = redactor(&["sk-canary-0123456789"]);
        let body = b"{\"error\":{\"message\":\"bad request\"}}";
        assert!(matches!(r.redact(body), Cow::Borrowed(_)));
        assert!(matches!(r.redact(b""), Cow::Borrowed(_)));
        let b = bytes::Bytes::from_static(b"clean");
        assert_eq!(
            r.redact_bytes(b.clone()).as_ptr(),
            b.as_ptr(),
            "same buffer back"
        );
    }

    #[test]
    fn every_occurrence_of_every_secret_goes() {
        let r = redactor(&["sk-aaaa-1111", "gem-bbbb-2222"]);
        assert_eq!(
            run(
                &r,
                "Authorization: Bearer sk-aaaa-1111, x-goog-api-key: gem-bbbb-2222; again sk-aaaa-1111"
            ),
            "Authorization: Bearer [REDACTED], x-goog-api-key: [REDACTED]; again [REDACTED]"
        );
        assert_eq!(run(&r, "sk-aaaa-1111"), "[REDACTED]", "the whole input");
        assert_eq!(
            run(&r, "sk-aaaa-111"),
            "sk-aaaa-111",
            "a prefix is not the secret"
        );
    }

    #[test]
    fn overlapping_and_adjacent_occurrences_leave_no_byte() {
        // "abcdefgh" and "efghijkl" overlap in "abcdefghijkl": one redaction covers both.
        let r = redactor(&["abcdefgh", "efghijkl"]);
        assert_eq!(run(&r, "x abcdefghijkl y"), "x [REDACTED] y");
        // Adjacent occurrences of one secret.
        assert_eq!(run(&r, "abcdefghabcdefgh!"), "[REDACTED]!");
        // A secret inside another: the longer one wins, nothing is left.
        let r = redactor(&["key-12345678", "12345678"]);
        assert_eq!(
            run(&r, "[key-12345678][12345678]"),
            "[[REDACTED]][[REDACTED]]"
        );
        // Self-overlapping secret.
        let r = redactor(&["aaaaaaaa"]);
        assert_eq!(run(&r, "aaaaaaaaaaaa."), "[REDACTED]aaaa.");
        let r = redactor(&["abababab"]);
        assert_eq!(run(&r, "ababababab"), "[REDACTED]ab");
    }

    #[test]
    fn empty_secrets_are_ignored_and_short_ones_still_apply() {
        let r = redactor(&["", ""]);
        assert!(r.is_empty());
        assert_eq!(run(&r, "anything"), "anything");
        // No minimum length: a short key is redacted too (readability is the price).
        let r = redactor(&["k1"]);
        assert_eq!(run(&r, "bad key k1."), "bad key [REDACTED].");
    }

    #[test]
    fn json_escaped_forms_are_found() {
        let r = redactor(&["sk/with\"quote"]);
        assert_eq!(
            run(&r, r#"{"m":"key sk/with\"quote"}"#),
            r#"{"m":"key [REDACTED]"}"#
        );
        assert_eq!(
            run(&r, r#"{"m":"key sk\/with\"quote"}"#),
            r#"{"m":"key [REDACTED]"}"#
        );
        assert_eq!(run(&r, "raw sk/with\"quote"), "raw [REDACTED]");
    }

    #[test]
    fn text_stays_utf8() {
        let r = redactor(&["clé-secrète-01"]);
        assert_eq!(run(&r, "é clé-secrète-01 ü"), "é [REDACTED] ü");
    }

    #[test]
    fn from_config_takes_every_provider_key() {
        let text = "[providers.a]\nkind = \"openai\"\nbase_url = \"http://x\"\napi_key_env = \"A\"\n\
                    [providers.b]\nkind = \"gemini\"\nbase_url = \"http://y\"\napi_key_env = \"B\"\n\
                    [providers.c]\nkind = \"openai\"\nbase_url = \"http://z\"\n";
        let env = |k: &str| match k {
            "A" => Some("sk-first-key-1".to_owned()),
            "B" => Some("gem-second-key-2".to_owned()),
            _ => None,
        };
        let config = Config::from_toml(text, "t", &env).unwrap();
        let r = Redactor::from_config(&config);
        assert_eq!(
            run(&r, "sk-first-key-1 gem-second-key-2"),
            "[REDACTED] [REDACTED]"
        );
    }

    #[test]
    fn userinfo_is_dropped_from_urls() {
        assert_eq!(
            without_userinfo("https://user:pa55@api.example.com/v1"),
            "https://api.example.com/v1"
        );
        assert_eq!(
            without_userinfo("http://u:p@x@host:8080?q=1"),
            "http://host:8080?q=1"
        );
        assert_eq!(without_userinfo("user:pass@host/v1"), "host/v1");
        assert_eq!(
            without_userinfo("https://api.example.com/v1/a@b"),
            "https://api.example.com/v1/a@b",
            "an @ in the path is not user info"
        );
        assert!(matches!(
            without_userinfo("https://api.example.com"),
            Cow::Borrowed(_)
        ));
        assert_eq!(without_userinfo("ht tp://us er:p w@h st/"), "ht tp://h st/");
    }
}
