//! A cached answer as bytes, for the Redis L2 and the warm snapshot: a small binary layout,
//! LZ4-compressed (lz4_flex, pure Rust). Answers are JSON and SSE text, which LZ4 shrinks
//! several times over at a few GB/s, so compressing costs less than the bytes it saves on the
//! wire and in Redis's memory.
//!
//! Layout (before compression), every integer little-endian:
//! `version u8 | form u8 | usage_chunk u8 | has_usage u8 | usage 4×u64 | stored_ms u64 |
//! expires_ms u64 | model str | tenant u8 + str | tags u16 + strs | frames u32 + u32s |
//! body u32 + bytes`, where a `str` is a u16 length and UTF-8.

use std::sync::Arc;

use bytes::Bytes;

use super::entry::{Entry, Form};
use super::key::{CacheKey, Tenant};
use crate::api::Usage;

const VERSION: u8 = 1;

/// Why bytes are not a cached answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not LZ4, or cut short.
    #[error("the cached answer does not decompress")]
    Compression,
    /// Not this layout (another version, or damaged).
    #[error("the cached answer is not in a layout this build reads")]
    Layout,
}

/// The entry as compressed bytes.
pub fn encode(e: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + e.body.len() + e.frames.len() * 4);
    out.push(VERSION);
    out.push(match e.form {
        Form::Whole => 0,
        Form::Stream => 1,
    });
    out.push(u8::from(e.usage_chunk));
    out.push(u8::from(e.usage.is_some()));
    let u = e.usage.unwrap_or_default();
    for n in [
        u.input_tokens,
        u.output_tokens,
        u.cached_input_tokens,
        u.reasoning_tokens,
        e.stored_ms,
        e.expires_ms,
    ] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    put_str(&mut out, &e.model);
    match &e.tenant {
        Tenant::Global => put_tagged(&mut out, 0, ""),
        Tenant::Team(t) => put_tagged(&mut out, 1, t),
        Tenant::Key(k) => put_tagged(&mut out, 2, k),
    }
    out.extend_from_slice(&(e.tags.len().min(u16::MAX as usize) as u16).to_le_bytes());
    for t in e.tags.iter().take(u16::MAX as usize) {
        put_str(&mut out, t);
    }
    out.extend_from_slice(&(e.frames.len() as u32).to_le_bytes());
    for f in e.frames.iter() {
        out.extend_from_slice(&f.to_le_bytes());
    }
    out.extend_from_slice(&(e.body.len() as u32).to_le_bytes());
    out.extend_from_slice(&e.body);
    lz4_flex::compress_prepend_size(&out)
}

/// An entry from [`encode`]'s bytes.
pub fn decode(bytes: &[u8]) -> Result<Entry, WireError> {
    let raw = lz4_flex::decompress_size_prepended(bytes).map_err(|_| WireError::Compression)?;
    let mut r = Reader { b: &raw, at: 0 };
    if r.u8()? != VERSION {
        return Err(WireError::Layout);
    }
    let form = match r.u8()? {
        0 => Form::Whole,
        1 => Form::Stream,
        _ => return Err(WireError::Layout),
    };
    let usage_chunk = r.u8()? == 1;
    let has_usage = r.u8()? == 1;
    let usage = Usage {
        input_tokens: r.u64()?,
        output_tokens: r.u64()?,
        cached_input_tokens: r.u64()?,
        reasoning_tokens: r.u64()?,
    };
    let (stored_ms, expires_ms) = (r.u64()?, r.u64()?);
    let model: Arc<str> = Arc::from(r.str()?);
    let tenant = match r.u8()? {
        0 => {
            r.str()?;
            Tenant::Global
        }
        1 => Tenant::Team(Arc::from(r.str()?)),
        2 => Tenant::Key(Arc::from(r.str()?)),
        _ => return Err(WireError::Layout),
    };
    let tags = (0..r.u16()?)
        .map(|_| r.str().map(Box::from))
        .collect::<Result<Box<[Box<str>]>, _>>()?;
    let frame_count = r.u32()? as usize;
    if frame_count > raw.len() / 4 {
        return Err(WireError::Layout);
    }
    let frames = (0..frame_count)
        .map(|_| r.u32())
        .collect::<Result<Box<[u32]>, _>>()?;
    let len = r.u32()? as usize;
    let body = Bytes::copy_from_slice(r.take(len)?);
    if r.at != raw.len() || frames.iter().any(|&f| f as usize > body.len()) {
        return Err(WireError::Layout);
    }
    Ok(Entry {
        form,
        body,
        frames,
        usage_chunk,
        usage: has_usage.then_some(usage),
        stored_ms,
        expires_ms,
        model,
        tenant,
        tags,
        source: None,
    })
}

/// The first bytes of a snapshot file (and its layout's version).
const SNAPSHOT_MAGIC: &[u8; 8] = b"SGCACHE1";

/// Entries as a snapshot file: the magic, then per entry its key (16 bytes), a u32 length
/// and [`encode`]'s bytes.
pub fn encode_snapshot<'a>(
    entries: impl IntoIterator<Item = (&'a CacheKey, &'a Entry)>,
) -> Vec<u8> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    for (key, e) in entries {
        let bytes = encode(e);
        out.extend_from_slice(&key.0);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// The entries of a snapshot file; a damaged record ends the read (what came before it
/// stands). `Err` when it is not a snapshot at all.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Vec<(CacheKey, Entry)>, WireError> {
    let rest = bytes
        .strip_prefix(SNAPSHOT_MAGIC.as_slice())
        .ok_or(WireError::Layout)?;
    let mut r = Reader { b: rest, at: 0 };
    let mut out = Vec::new();
    while r.at < rest.len() {
        let Ok(key) = r.take(16) else { break };
        let mut k = [0u8; 16];
        k.copy_from_slice(key);
        let Ok(len) = r.u32() else { break };
        let Ok(record) = r.take(len as usize) else {
            break;
        };
        match decode(record) {
            Ok(e) => out.push((CacheKey(k), e)),
            Err(_) => break,
        }
    }
    Ok(out)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s);
}

fn put_tagged(out: &mut Vec<u8>, tag: u8, s: &str) {
    out.push(tag);
    put_str(out, s);
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).ok_or(WireError::Layout)?;
        let s = self.b.get(self.at..end).ok_or(WireError::Layout)?;
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        let mut a = [0u8; 2];
        a.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(a))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn str(&mut self) -> Result<&'a str, WireError> {
        let n = self.u16()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| WireError::Layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            form: Form::Stream,
            body: Bytes::from_static(b"data: {\"a\":1}\n\ndata: [DONE]\n\n"),
            frames: Box::new([15, 29]),
            usage_chunk: true,
            usage: Some(Usage {
                input_tokens: 3,
                output_tokens: 5,
                cached_input_tokens: 1,
                reasoning_tokens: 0,
            }),
            stored_ms: 1_700_000_000_000,
            expires_ms: 1_700_000_060_000,
            model: Arc::from("gpt-4o"),
            tenant: Tenant::Team(Arc::from("research")),
            tags: vec![Box::from("a"), Box::from("release-7")].into_boxed_slice(),
            source: None,
        }
    }

    fn same(a: &Entry, b: &Entry) {
        assert_eq!(a.form, b.form);
        assert_eq!(a.body, b.body);
        assert_eq!(a.frames, b.frames);
        assert_eq!(a.usage_chunk, b.usage_chunk);
        assert_eq!(a.usage, b.usage);
        assert_eq!((a.stored_ms, a.expires_ms), (b.stored_ms, b.expires_ms));
        assert_eq!(a.model, b.model);
        assert_eq!(a.tenant, b.tenant);
        assert_eq!(a.tags, b.tags);
    }

    #[test]
    fn entries_round_trip() {
        let e = entry();
        same(&decode(&encode(&e)).unwrap(), &e);
        let whole = Entry {
            form: Form::Whole,
            frames: Box::new([]),
            usage: None,
            tenant: Tenant::Global,
            tags: Box::new([]),
            ..entry()
        };
        same(&decode(&encode(&whole)).unwrap(), &whole);
        let key = Entry {
            tenant: Tenant::Key(Arc::from("k1")),
            ..entry()
        };
        same(&decode(&encode(&key)).unwrap(), &key);
    }

    #[test]
    fn snapshots_round_trip_and_stop_at_damage() {
        let (a, b) = (
            entry(),
            Entry {
                body: Bytes::from_static(b"{}"),
                frames: Box::new([]),
                ..entry()
            },
        );
        let (ka, kb) = (CacheKey([1; 16]), CacheKey([2; 16]));
        let file = encode_snapshot([(&ka, &a), (&kb, &b)]);
        let back = decode_snapshot(&file).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].0, ka);
        same(&back[1].1, &b);
        let cut = decode_snapshot(&file[..file.len() - 2]).unwrap();
        assert_eq!(cut.len(), 1, "the whole records before the damage");
        assert_eq!(
            decode_snapshot(b"not a snapshot").unwrap_err(),
            WireError::Layout
        );
        assert!(decode_snapshot(&encode_snapshot([])).unwrap().is_empty());
    }

    #[test]
    fn repetitive_answers_compress() {
        let body = "data: {\"choices\":[{\"delta\":{\"content\":\"word \"}}]}\n\n".repeat(200);
        let e = Entry {
            body: Bytes::from(body),
            frames: Box::new([]),
            ..entry()
        };
        let bytes = encode(&e);
        assert!(
            bytes.len() * 4 < e.body.len(),
            "{} of {}",
            bytes.len(),
            e.body.len()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

        /// Bytes from Redis or a file never panic the reader, whatever they are.
        #[test]
        fn any_bytes_are_read_or_refused(bytes: Vec<u8>) {
            let _ = decode(&bytes);
            let mut snapshot = SNAPSHOT_MAGIC.to_vec();
            snapshot.extend_from_slice(&bytes);
            let _ = decode_snapshot(&snapshot);
        }

        /// A valid entry with one byte changed (before compression) is read or refused.
        #[test]
        fn a_changed_byte_is_read_or_refused(at: usize, to: u8) {
            let mut raw = lz4_flex::decompress_size_prepended(&encode(&entry())).unwrap();
            let i = at % raw.len();
            raw[i] = to;
            let _ = decode(&lz4_flex::compress_prepend_size(&raw));
        }
    }

    #[test]
    fn damaged_bytes_are_refused_not_trusted() {
        let bytes = encode(&entry());
        assert_eq!(decode(b"").unwrap_err(), WireError::Compression);
        assert!(decode(&bytes[..bytes.len() - 3]).is_err());
        // A valid compression of a wrong layout.
        let mut raw = lz4_flex::decompress_size_prepended(&bytes).unwrap();
        raw[0] = 9;
        assert_eq!(
            decode(&lz4_flex::compress_prepend_size(&raw)).unwrap_err(),
            WireError::Layout
        );
        let mut raw = lz4_flex::decompress_size_prepended(&bytes).unwrap();
        raw.push(0);
        assert_eq!(
            decode(&lz4_flex::compress_prepend_size(&raw)).unwrap_err(),
            WireError::Layout,
            "trailing bytes"
        );
        // A frame past the body's end.
        let mut e = entry();
        e.frames = Box::new([1_000]);
        assert_eq!(decode(&encode(&e)).unwrap_err(), WireError::Layout);
    }
}
