//! A cached answer: the bytes the client received (a whole body, or a stream's events with
//! their frame boundaries), and what the cache needs to serve, age, revalidate and
//! invalidate it. `Send + Sync`: an entry crosses shards (`Arc`) on a cross-shard hit.

use std::sync::Arc;

use bytes::Bytes;

use super::key::{CacheKey, Tenant};
use crate::api::Usage;

/// How the answer was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A whole JSON body.
    Whole,
    /// A stream of SSE events.
    Stream,
}

/// One cached answer.
#[derive(Debug)]
pub struct Entry {
    /// Whole or stream.
    pub form: Form,
    /// The whole body, or every event of the stream back to back.
    pub body: Bytes,
    /// For a stream: where each frame the client received ends in `body` (replayed frame by
    /// frame, never as one blob). Empty for a whole body.
    pub frames: Box<[u32]>,
    /// An OpenAI stream that carries the usage-only chunk.
    pub usage_chunk: bool,
    /// The answer's usage (what a replay reports; the tenant pays nothing).
    pub usage: Option<Usage>,
    /// When it was stored (unix ms).
    pub stored_ms: u64,
    /// When it stops being served (unix ms).
    pub expires_ms: u64,
    /// The public model (an invalidation selector).
    pub model: Arc<str>,
    /// Whose answer it is (an invalidation selector).
    pub tenant: Tenant,
    /// Tags from `x-shardgate-cache-tags` (an invalidation selector).
    pub tags: Box<[Box<str>]>,
    /// The request it answers, kept only when hot answers are refreshed before they expire
    /// (`cache.refresh_before_s`); never written to Redis or the snapshot.
    pub source: Option<Arc<Source>>,
}

/// The request an answer was fetched for: what a refresh sends again.
#[derive(Debug)]
pub struct Source {
    /// The route (`chat` or `messages`).
    pub route: &'static str,
    /// The request body as the client sent it.
    pub body: Bytes,
    /// The TTL the answer was stored with (ms).
    pub ttl_ms: u64,
}

/// Bytes an entry costs beyond its body: the struct, its map slot and the key (an estimate,
/// so that many small entries cannot exceed the byte budget unseen).
pub const ENTRY_OVERHEAD: u64 = 192;

impl Entry {
    /// What the entry weighs against the partition's byte budget.
    pub fn weight(&self) -> u64 {
        let tags: usize = self.tags.iter().map(|t| t.len() + 16).sum();
        let source = self.source.as_ref().map_or(0, |s| s.body.len() + 48);
        (self.body.len() + self.frames.len() * 4 + tags + self.model.len() + source) as u64
            + ENTRY_OVERHEAD
    }

    /// Seconds since it was stored (the `Age` header).
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_ms) / 1000
    }

    /// Whether it may still be served at `now_ms`.
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }

    /// Whether it may be served at `now_ms` to a request that takes answers at most
    /// `max_age_ms` old.
    pub fn servable(&self, now_ms: u64, max_age_ms: Option<u64>) -> bool {
        self.is_fresh(now_ms)
            && max_age_ms.is_none_or(|max| now_ms.saturating_sub(self.stored_ms) <= max)
    }

    /// The stream's frames, as the client received them.
    pub fn frames(&self) -> impl Iterator<Item = Bytes> + '_ {
        let mut start = 0usize;
        self.frames.iter().map(move |&end| {
            let end = (end as usize).min(self.body.len());
            let frame = self.body.slice(start.min(end)..end);
            start = end;
            frame
        })
    }

    /// The entity tag of this answer under `key`: the key and the time it was stored, so a
    /// refreshed answer gets a new tag. Weak (`W/"…"`): the whole and streamed forms of one
    /// answer share it.
    pub fn etag(&self, key: &CacheKey) -> String {
        // The key's first 64 bits (its hex form's first 16 digits) and the store time.
        let hex = key.hex();
        let first = std::str::from_utf8(&hex[..16]).unwrap_or_default();
        format!("W/\"{first}-{:x}\"", self.stored_ms)
    }
}

/// Builds a stream entry's body and frame table from the frames a relay sent.
#[derive(Debug, Default)]
pub struct StreamTee {
    body: Vec<u8>,
    frames: Vec<u32>,
    /// Past the size limit: the answer will not be stored.
    over: bool,
}

impl StreamTee {
    /// Add one frame; past `limit` bytes the tee gives up (and frees what it held).
    pub fn push(&mut self, frame: &[u8], limit: usize) {
        if self.over {
            return;
        }
        if self.body.len() + frame.len() > limit || self.frames.len() >= u32::MAX as usize {
            self.over = true;
            self.body = Vec::new();
            self.frames = Vec::new();
            return;
        }
        self.body.extend_from_slice(frame);
        self.frames.push(self.body.len() as u32);
    }

    /// Whether the stream grew past the size limit.
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// The body and frame table, unless it grew past the limit.
    pub fn finish(self) -> Option<(Bytes, Box<[u32]>)> {
        (!self.over).then(|| (Bytes::from(self.body), self.frames.into_boxed_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn entry(form: Form, body: &'static [u8], frames: &[u32]) -> Entry {
        Entry {
            form,
            body: Bytes::from_static(body),
            frames: frames.into(),
            usage_chunk: false,
            usage: None,
            stored_ms: 10_000,
            expires_ms: 70_000,
            model: Arc::from("m"),
            tenant: Tenant::Global,
            tags: Box::new([]),
            source: None,
        }
    }

    #[test]
    fn frames_come_back_as_they_went_in() {
        let mut tee = StreamTee::default();
        for f in ["data: a\n\n", "data: bb\n\n", "", "data: [DONE]\n\n"] {
            tee.push(f.as_bytes(), 1024);
        }
        let (body, frames) = tee.finish().unwrap();
        let e = Entry {
            body,
            frames,
            ..entry(Form::Stream, b"", &[])
        };
        let got: Vec<Bytes> = e.frames().collect();
        assert_eq!(
            got,
            ["data: a\n\n", "data: bb\n\n", "", "data: [DONE]\n\n"].map(Bytes::from)
        );
    }

    #[test]
    fn a_stream_past_the_limit_is_not_kept() {
        let mut tee = StreamTee::default();
        tee.push(b"0123456789", 15);
        assert!(!tee.is_over());
        tee.push(b"0123456789", 15);
        assert!(tee.is_over());
        tee.push(b"1", 15);
        assert!(tee.finish().is_none());
    }

    #[test]
    fn age_freshness_weight_and_etag() {
        let e = entry(Form::Whole, b"{\"x\":1}", &[]);
        assert_eq!(e.age_secs(12_999), 2);
        assert_eq!(e.age_secs(1), 0, "a clock behind the store time is age 0");
        assert!(e.is_fresh(69_999));
        assert!(!e.is_fresh(70_000));
        assert!(e.servable(12_000, Some(2_000)));
        assert!(!e.servable(12_001, Some(2_000)), "older than max-age");
        assert!(!e.servable(70_000, None));
        assert_eq!(e.weight(), 7 + 1 + ENTRY_OVERHEAD);
        let key = CacheKey([0xab; 16]);
        assert_eq!(e.etag(&key), "W/\"abababababababab-2710\"");
        let later = Entry {
            stored_ms: 10_001,
            ..entry(Form::Whole, b"{}", &[])
        };
        assert_ne!(
            later.etag(&key),
            e.etag(&key),
            "a refreshed answer has a new tag"
        );
    }
}
