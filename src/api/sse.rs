//! Server-sent events: split a byte stream into whole events, and look inside them.
//!
//! The gateway relays only whole events downstream, so that an upstream failure can always be
//! followed by one clean error event (never a half event glued to it).

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

/// Index one past the end of the last complete event in `buf` (after a blank line). `buf`
/// starts at a line start (an event boundary), so a blank line there ends an (empty) event too:
/// where the reads fall must not decide where an event ends.
pub fn last_event_end(buf: &[u8]) -> Option<usize> {
    let mut end = match buf {
        [b'\n', ..] => Some(1),
        [b'\r', b'\n', ..] => Some(2),
        _ => None,
    };
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'\n', &buf[i..]) {
        let nl = i + off;
        let next = nl + 1;
        match buf.get(next) {
            Some(b'\n') => end = Some(next + 1),
            Some(b'\r') if buf.get(next + 1) == Some(&b'\n') => end = Some(next + 2),
            _ => {}
        }
        i = next;
    }
    end
}

/// Splits an SSE byte stream into runs of whole events. Zero-copy when a chunk ends on an
/// event boundary, which is the common case.
#[derive(Debug, Default)]
pub struct EventSplitter {
    pending: BytesMut,
}

impl EventSplitter {
    /// Feed one chunk; returns the whole events now complete (possibly several), if any.
    pub fn push(&mut self, chunk: Bytes) -> Option<Bytes> {
        if self.pending.is_empty() {
            return match last_event_end(&chunk) {
                Some(end) if end == chunk.len() => Some(chunk),
                Some(end) => {
                    self.pending.extend_from_slice(&chunk[end..]);
                    Some(chunk.slice(..end))
                }
                None => {
                    self.pending.extend_from_slice(&chunk);
                    None
                }
            };
        }
        self.pending.extend_from_slice(&chunk);
        let end = last_event_end(&self.pending)?;
        Some(self.pending.split_to(end).freeze())
    }

    /// Bytes of an incomplete event still held back.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

/// The `data` payloads of each event in a run of whole events (multi-line data joined by
/// `\n`). Comments, `event:`, `id:` and `retry:` lines are skipped.
pub fn data_payloads(events: &[u8]) -> impl Iterator<Item = Cow<'_, [u8]>> + '_ {
    each_event(events).filter_map(event_data)
}

/// Each event (with its blank-line terminator) of a run of whole events.
fn each_event(events: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = events;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = last_event_end_first(rest).unwrap_or(rest.len());
        let (event, tail) = rest.split_at(end);
        rest = tail;
        Some(event)
    })
}

/// One event's `data`, or `None` when it has no data line: borrowed from the event when it has
/// one data line (nearly always), joined by `\n` when it has several.
fn event_data(event: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut data: Option<Cow<'_, [u8]>> = None;
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', event).chain([event.len()]) {
        let line = &event[start..end];
        start = end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(v) = line.strip_prefix(b"data:") else {
            continue;
        };
        let v = v.strip_prefix(b" ").unwrap_or(v);
        data = Some(match data {
            None => Cow::Borrowed(v),
            Some(d) => {
                let mut d = d.into_owned();
                d.push(b'\n');
                d.extend_from_slice(v);
                Cow::Owned(d)
            }
        });
    }
    data
}

/// The events of a run whose data `drop` rejects removed, the others kept byte for byte
/// (the same `Bytes`, not a copy, when nothing is removed).
pub fn without_events(events: &Bytes, drop: impl Fn(&[u8]) -> bool) -> Bytes {
    let dropped = |e: &[u8]| event_data(e).is_some_and(|d| drop(&d));
    if !each_event(events).any(dropped) {
        return events.clone();
    }
    let mut out = BytesMut::with_capacity(events.len());
    for e in each_event(events).filter(|e| !dropped(e)) {
        out.extend_from_slice(e);
    }
    out.freeze()
}

/// Index one past the end of the first complete event (`buf` starts at a line start, so a
/// blank line there is an event of its own, as [`last_event_end`] counts it).
fn last_event_end_first(buf: &[u8]) -> Option<usize> {
    match buf {
        [b'\n', ..] => return Some(1),
        [b'\r', b'\n', ..] => return Some(2),
        _ => {}
    }
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'\n', &buf[i..]) {
        let next = i + off + 1;
        match buf.get(next) {
            Some(b'\n') => return Some(next + 1),
            Some(b'\r') if buf.get(next + 1) == Some(&b'\n') => return Some(next + 2),
            _ => {}
        }
        i = next;
    }
    None
}

/// One SSE event carrying `data` (JSON text), framed.
pub fn frame_data(json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STREAM: &str =
        "data: {\"a\":1}\n\n: comment\n\ndata: {\"b\":\ndata: 2}\r\n\r\nevent: x\ndata: [DONE]\n\n";

    #[test]
    fn drops_only_the_rejected_events() {
        let all = Bytes::from_static(STREAM.as_bytes());
        let kept = without_events(&all, |d| d == b"{\"a\":1}");
        assert_eq!(
            &kept[..],
            b": comment\n\ndata: {\"b\":\ndata: 2}\r\n\r\nevent: x\ndata: [DONE]\n\n"
        );
        let same = without_events(&all, |_| false);
        assert_eq!(same.as_ptr(), all.as_ptr());
    }

    #[test]
    fn payloads_in_order() {
        let got: Vec<String> = data_payloads(STREAM.as_bytes())
            .map(|d| String::from_utf8(d.into_owned()).unwrap())
            .collect();
        assert_eq!(got, vec!["{\"a\":1}", "{\"b\":\n2}", "[DONE]"]);
    }

    #[test]
    fn one_line_payloads_are_borrowed_several_are_joined() {
        let got: Vec<Cow<'_, [u8]>> = data_payloads(STREAM.as_bytes()).collect();
        let borrowed: Vec<bool> = got.iter().map(|d| matches!(d, Cow::Borrowed(_))).collect();
        assert_eq!(borrowed, [true, false, true]);
        assert_eq!(&*got[1], b"{\"b\":\n2}");
        assert_eq!(
            data_payloads(b"data:x\n\ndata:\n\n").collect::<Vec<_>>(),
            [&b"x"[..], b""]
        );
    }

    #[test]
    fn a_blank_line_in_a_read_of_its_own_ends_an_event() {
        // Found by fuzzing: the last `\n` of `[DONE]\n\n\n` in a read of its own was held
        // back as an unfinished event, so the stream looked cut after its end.
        let mut s = EventSplitter::default();
        assert!(s.push(Bytes::from_static(b"data: [DONE]\n\n")).is_some());
        assert_eq!(
            s.push(Bytes::from_static(b"\n")).as_deref(),
            Some(&b"\n"[..])
        );
        assert_eq!(
            s.push(Bytes::from_static(b"\r\n")).as_deref(),
            Some(&b"\r\n"[..])
        );
        assert_eq!(s.pending_len(), 0);
        // Events are read the same way, so a dropped event takes no blank line with it.
        let run = Bytes::from_static(b"\n\ndata: x\n\n");
        assert_eq!(&without_events(&run, |d| d == b"x")[..], b"\n\n");
    }

    #[test]
    fn whole_chunk_passes_zero_copy() {
        let mut s = EventSplitter::default();
        let chunk = Bytes::from_static(b"data: 1\n\ndata: 2\n\n");
        let out = s.push(chunk.clone()).unwrap();
        assert_eq!(out.as_ptr(), chunk.as_ptr());
        assert_eq!(s.pending_len(), 0);
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(cuts in proptest::collection::vec(0usize..STREAM.len(), 0..12)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            cuts.dedup();
            let bytes = Bytes::from_static(STREAM.as_bytes());
            let mut s = EventSplitter::default();
            let mut out = Vec::new();
            let mut last = 0;
            for c in cuts.into_iter().chain([STREAM.len()]) {
                if let Some(ev) = s.push(bytes.slice(last..c)) {
                    // Every run handed out ends on an event boundary.
                    prop_assert_eq!(last_event_end(&ev), Some(ev.len()));
                    out.extend_from_slice(&ev);
                }
                last = c;
            }
            prop_assert_eq!(s.pending_len(), 0);
            prop_assert_eq!(&out[..], STREAM.as_bytes());
        }
    }
}
