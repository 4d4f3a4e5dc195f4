//! What one request asks of the cache, from its headers: `Cache-Control` (`no-store`,
//! `no-cache`, `max-age=N`), `x-shardgate-cache: off`, `x-shardgate-cache-ttl: N` (seconds,
//! capped by the configured maximum) and `x-shardgate-cache-tags` (comma-separated).

use http::HeaderMap;
use http::header::{CACHE_CONTROL, HeaderName};

/// `x-shardgate-cache`: `off` on a request opts out; on a response, `hit`, `miss`,
/// `bypass` or `semantic-hit`.
pub static X_CACHE: HeaderName = HeaderName::from_static("x-shardgate-cache");
/// `x-shardgate-cache-ttl`: the seconds to keep this request's answer.
pub static X_CACHE_TTL: HeaderName = HeaderName::from_static("x-shardgate-cache-ttl");
/// `x-shardgate-cache-tags`: tags to file this request's answer under (for invalidation).
pub static X_CACHE_TAGS: HeaderName = HeaderName::from_static("x-shardgate-cache-tags");
/// `x-shardgate-cache-key`: the key an answer is filed under (hex), on every cached route's
/// response, for `DELETE /admin/cache?key=`.
pub static X_CACHE_KEY: HeaderName = HeaderName::from_static("x-shardgate-cache-key");
/// `x-shardgate-cache-similarity`: on a semantic hit, the cosine similarity of the question
/// to the one whose answer is served.
pub static X_CACHE_SIMILARITY: HeaderName = HeaderName::from_static("x-shardgate-cache-similarity");

/// Tags per request, and bytes per tag, at most.
pub const MAX_TAGS: usize = 8;
/// Bytes per tag, at most.
pub const MAX_TAG_BYTES: usize = 64;

/// A request's cache directives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// Neither read nor write the cache (`no-store`, or `x-shardgate-cache: off`).
    pub bypass: bool,
    /// Do not answer from the cache, but store the fresh answer (`no-cache`).
    pub refresh: bool,
    /// Serve only an answer at most this old (`max-age=N`).
    pub max_age_ms: Option<u64>,
    /// Keep this request's answer this long instead of the model's TTL (capped).
    pub ttl_ms: Option<u64>,
    /// Tags to file the answer under.
    pub tags: Vec<Box<str>>,
}

impl Directives {
    /// Read the directives from `headers`; `max_ttl_ms` caps a requested TTL.
    pub fn from_headers(headers: &HeaderMap, max_ttl_ms: u64) -> Self {
        let mut d = Self::default();
        if headers
            .get(&X_CACHE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("off"))
        {
            d.bypass = true;
        }
        for value in headers.get_all(CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for part in value.split(',') {
                let part = part.trim();
                let (name, arg) = match part.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (part, None),
                };
                if name.eq_ignore_ascii_case("no-store") {
                    d.bypass = true;
                } else if name.eq_ignore_ascii_case("no-cache") {
                    d.refresh = true;
                } else if name.eq_ignore_ascii_case("max-age")
                    && let Some(secs) = arg.and_then(|a| a.parse::<u64>().ok())
                {
                    let ms = secs.saturating_mul(1000);
                    // Two max-ages: the stricter one.
                    d.max_age_ms = Some(d.max_age_ms.map_or(ms, |m| m.min(ms)));
                }
            }
        }
        if let Some(secs) = headers
            .get(&X_CACHE_TTL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            d.ttl_ms = Some(secs.saturating_mul(1000).min(max_ttl_ms));
        }
        if let Some(tags) = headers.get(&X_CACHE_TAGS).and_then(|v| v.to_str().ok()) {
            d.tags = tags
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty() && t.len() <= MAX_TAG_BYTES)
                .take(MAX_TAGS)
                .map(Box::from)
                .collect();
        }
        d
    }

    /// Whether a cached answer may be served.
    pub fn may_read(&self) -> bool {
        !self.bypass && !self.refresh && self.max_age_ms != Some(0)
    }

    /// Whether the answer may be stored.
    pub fn may_write(&self) -> bool {
        !self.bypass && self.ttl_ms != Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn nothing_asked_reads_and_writes() {
        let d = Directives::from_headers(&HeaderMap::new(), 60_000);
        assert_eq!(d, Directives::default());
        assert!(d.may_read() && d.may_write());
    }

    #[test]
    fn cache_control_is_read_in_any_case_and_order() {
        let d = Directives::from_headers(&headers(&[("cache-control", "No-Store")]), 1);
        assert!(d.bypass && !d.may_read() && !d.may_write());
        let d = Directives::from_headers(&headers(&[("cache-control", "no-cache")]), 1);
        assert!(!d.may_read() && d.may_write());
        let d = Directives::from_headers(
            &headers(&[
                ("cache-control", "private, max-age=30"),
                ("cache-control", "max-age=\"10\""),
            ]),
            1,
        );
        assert_eq!(d.max_age_ms, Some(10_000));
        assert!(d.may_read());
        let d = Directives::from_headers(&headers(&[("cache-control", "max-age=0")]), 1);
        assert!(!d.may_read() && d.may_write());
        let d = Directives::from_headers(&headers(&[("cache-control", "max-age=soon")]), 1);
        assert_eq!(d.max_age_ms, None);
    }

    #[test]
    fn opt_out_ttl_and_tags() {
        let d = Directives::from_headers(&headers(&[("x-shardgate-cache", " OFF ")]), 1);
        assert!(d.bypass);
        let d = Directives::from_headers(&headers(&[("x-shardgate-cache-ttl", "90")]), 60_000);
        assert_eq!(d.ttl_ms, Some(60_000), "capped");
        let d = Directives::from_headers(&headers(&[("x-shardgate-cache-ttl", "0")]), 60_000);
        assert!(!d.may_write());
        let long = "x".repeat(MAX_TAG_BYTES + 1);
        let tags = format!("a, b,,{long},c,d,e,f,g,h,i,j");
        let d = Directives::from_headers(&headers(&[("x-shardgate-cache-tags", &tags)]), 1);
        let want: Vec<Box<str>> = ["a", "b", "c", "d", "e", "f", "g", "h"]
            .map(Box::from)
            .into();
        assert_eq!(d.tags, want);
    }
}
