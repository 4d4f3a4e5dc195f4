//! Fuzz entry points: one plain function per target, taking arbitrary bytes.
//!
//! The same functions run under the coverage-guided fuzzer (`fuzz/`, driven by
//! `scripts/fuzz.sh`) and in `cargo test` (`tests/fuzz.rs`: mutated fixtures and the kept
//! regression inputs), so a crash found by one is replayed by the other.
//!
//! A target must never panic, whatever the bytes. Where the code under test promises more, the
//! target checks it and returns a [`Violation`] naming the broken promise; the harnesses turn
//! that into a crash. Targets: [`TARGETS`].
//!
//! When one upstream read holds good events followed by a malformed one, the events before
//! it go out, then the error event (`providers::call::Unreadable`). The stream targets still
//! compare cut streams up to their final error event by prefix (a looser check, kept from when
//! those events were dropped).

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::Value;

use crate::api::embeddings::{EmbeddingsRequest, estimate_tokens};
use crate::api::sse::{EventSplitter, data_payloads, last_event_end, without_events};
use crate::api::{ChatRequest, DecodeScratch, Usage, chat, decode_chat, json};
use crate::config::ProviderKind;
use crate::providers::call::Answer;
use crate::providers::{Dialect, anthropic, gemini, openai};

/// A promise the code under test broke for some input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{target}: {what}")]
pub struct Violation {
    /// The target that found it.
    pub target: &'static str,
    /// What went wrong.
    pub what: String,
}

/// What a target returns.
pub type Outcome = Result<(), Violation>;

/// One fuzz target.
#[derive(Clone, Copy)]
pub struct Target {
    /// Its name (the fuzzer's `SHARDGATE_FUZZ_TARGET`, the corpus folder).
    pub name: &'static str,
    /// Fixture files (under `tests/fixtures/`) that make good seeds: `kind/suffix` patterns.
    pub seeds: &'static [&'static str],
    /// The function.
    pub run: fn(&[u8]) -> Outcome,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "chat_head",
        seeds: &["*/request_*.json"],
        run: chat_head,
    },
    Target {
        name: "chat_request",
        seeds: &["*/request_*.json"],
        run: chat_request,
    },
    Target {
        name: "anthropic_request",
        seeds: &["anthropic/request_*.json"],
        run: anthropic_request,
    },
    Target {
        name: "embeddings_request",
        seeds: &[],
        run: embeddings_request,
    },
    Target {
        name: "json_member",
        seeds: &["*/*.json"],
        run: json_member,
    },
    Target {
        name: "sse_split",
        seeds: &["*/*.sse"],
        run: sse_split,
    },
    Target {
        name: "stream_openai_openai",
        seeds: &["openai/*.sse"],
        run: |d| stream(ProviderKind::OpenAi, Dialect::OpenAi, d),
    },
    Target {
        name: "stream_openai_anthropic",
        seeds: &["openai/*.sse"],
        run: |d| stream(ProviderKind::OpenAi, Dialect::Anthropic, d),
    },
    Target {
        name: "stream_anthropic_openai",
        seeds: &["anthropic/*.sse"],
        run: |d| stream(ProviderKind::Anthropic, Dialect::OpenAi, d),
    },
    Target {
        name: "stream_anthropic_anthropic",
        seeds: &["anthropic/*.sse"],
        run: |d| stream(ProviderKind::Anthropic, Dialect::Anthropic, d),
    },
    Target {
        name: "stream_gemini_openai",
        seeds: &["gemini/*.sse"],
        run: |d| stream(ProviderKind::Gemini, Dialect::OpenAi, d),
    },
    Target {
        name: "stream_gemini_anthropic",
        seeds: &["gemini/*.sse"],
        run: |d| stream(ProviderKind::Gemini, Dialect::Anthropic, d),
    },
    Target {
        name: "whole_openai",
        seeds: &["openai/*.json"],
        run: |d| whole(ProviderKind::OpenAi, d),
    },
    Target {
        name: "whole_anthropic",
        seeds: &["anthropic/*.json"],
        run: |d| whole(ProviderKind::Anthropic, d),
    },
    Target {
        name: "whole_gemini",
        seeds: &["gemini/*.json"],
        run: |d| whole(ProviderKind::Gemini, d),
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

fn violation(target: &'static str, what: impl Into<String>) -> Outcome {
    Err(Violation {
        target,
        what: what.into(),
    })
}

/// Shorthand: `check!(target, cond, "format", args)` returns a violation when `cond` fails.
macro_rules! check {
    ($t:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            return violation($t, format!($($msg)+));
        }
    };
}

fn show(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(&b[..b.len().min(400)])
}

/// `decode_chat` (simd-json, the pass-through path): the same answer with a fresh and a reused
/// scratch, never a model or message count serde_json disagrees with, and a body the edit for
/// the upstream (`upstream_body`) keeps valid, with only `model` and `stream_options` changed.
pub fn chat_head(data: &[u8]) -> Outcome {
    const T: &str = "chat_head";
    let mut scratch = DecodeScratch::default();
    let first = decode_chat(data, &mut scratch);
    // A reused scratch (bigger buffers, stale bytes) must not change the answer.
    let _ = decode_chat(b"{\"model\":\"a-much-longer-model-name-than-most\",\"messages\":[{},{},{},{}],\"stream\":true}", &mut scratch);
    let again = decode_chat(data, &mut scratch);
    check!(
        T,
        first.as_ref().ok() == again.as_ref().ok(),
        "scratch reuse changed the decode: {first:?} vs {again:?}"
    );
    let Ok(head) = first else {
        return Ok(());
    };
    let Ok(doc) = serde_json::from_slice::<Value>(data) else {
        // simd-json accepted what serde_json refuses: note what, if it is more than a quirk.
        return violation(
            T,
            format!(
                "decode_chat accepted a body serde_json rejects: {}",
                show(data)
            ),
        );
    };
    let Some(obj) = doc.as_object() else {
        return violation(
            T,
            format!("decode_chat accepted a non-object: {}", show(data)),
        );
    };
    check!(
        T,
        obj.get("model").and_then(Value::as_str) == Some(head.model.as_str()),
        "model {:?} but the body says {:?}",
        head.model,
        obj.get("model")
    );
    check!(
        T,
        obj.get("messages").and_then(Value::as_array).map(Vec::len) == Some(head.messages),
        "{} messages but the body has {:?}",
        head.messages,
        obj.get("messages")
    );
    let body = Bytes::copy_from_slice(data);
    for (upstream, ask_usage) in [
        (head.model.as_str(), false),
        ("fuzz-upstream", false),
        (head.model.as_str(), true),
        ("fuzz-upstream", true),
    ] {
        let Ok(out) = chat::upstream_body(&body, &head.model, upstream, ask_usage) else {
            continue;
        };
        let edited: Value = match serde_json::from_slice(&out) {
            Ok(v) => v,
            Err(e) => {
                return violation(
                    T,
                    format!(
                        "upstream_body({upstream}, {ask_usage}) made invalid JSON ({e}): {}",
                        show(&out)
                    ),
                );
            }
        };
        let Some(eobj) = edited.as_object() else {
            return violation(T, "upstream_body made a non-object");
        };
        check!(
            T,
            eobj.get("model").and_then(Value::as_str) == Some(upstream),
            "upstream_body left model {:?}, wanted {upstream:?}: {}",
            eobj.get("model"),
            show(&out)
        );
        if ask_usage {
            let usage = eobj
                .get("stream_options")
                .and_then(|o| o.get("include_usage"));
            check!(
                T,
                usage == Some(&Value::Bool(true)),
                "upstream_body did not ask for usage ({usage:?}): {}",
                show(&out)
            );
        }
        for (k, v) in obj {
            if k == "model" || (ask_usage && k == "stream_options") {
                continue;
            }
            check!(
                T,
                eobj.get(k) == Some(v),
                "upstream_body changed member {k:?}: {}",
                show(&out)
            );
        }
        check!(
            T,
            eobj.len() == obj.len() + usize::from(ask_usage && !obj.contains_key("stream_options")),
            "upstream_body changed the member count: {}",
            show(&out)
        );
    }
    Ok(())
}

/// `ChatRequest::from_json` (the translated path), then the request in every provider's wire
/// format: no panic; OpenAI's body is valid JSON naming the upstream model.
pub fn chat_request(data: &[u8]) -> Outcome {
    let Ok(req) = ChatRequest::from_json(data) else {
        return Ok(());
    };
    to_every_wire("chat_request", &req)
}

fn to_every_wire(t: &'static str, req: &ChatRequest) -> Outcome {
    let _ = (req.output_cap(), req.streams(), req.wants_stream_usage());
    if let Ok(body) = openai::translate::to_wire(req, "fuzz-upstream") {
        let v: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return violation(t, format!("openai::to_wire made invalid JSON ({e})")),
        };
        check!(
            t,
            v.get("model").and_then(Value::as_str) == Some("fuzz-upstream"),
            "openai::to_wire lost the model"
        );
    }
    if let Ok(wire) = anthropic::translate::to_wire(req, "fuzz-upstream") {
        check!(
            t,
            serde_json::to_vec(&wire).is_ok(),
            "anthropic::to_wire made an unserialisable request"
        );
    }
    if let Ok(wire) = gemini::translate::to_wire(req) {
        check!(
            t,
            serde_json::to_vec(&wire).is_ok(),
            "gemini::to_wire made an unserialisable request"
        );
    }
    Ok(())
}

/// An Anthropic client's request: the routing head and the full translation agree on the
/// model, and the canonical request goes to every wire format without a panic.
pub fn anthropic_request(data: &[u8]) -> Outcome {
    const T: &str = "anthropic_request";
    let head = anthropic::translate::client_head(data);
    let Ok(req) = anthropic::translate::from_client(data) else {
        return Ok(());
    };
    if let Ok(h) = &head {
        check!(
            T,
            h.model == req.model,
            "client_head says model {:?}, from_client {:?}",
            h.model,
            req.model
        );
        check!(
            T,
            h.stream == req.streams(),
            "client_head and from_client disagree on stream"
        );
    }
    to_every_wire(T, &req)
}

/// An embeddings request: decode, its texts, and Gemini's batch body.
pub fn embeddings_request(data: &[u8]) -> Outcome {
    const T: &str = "embeddings_request";
    let Ok(req) = EmbeddingsRequest::from_json(data) else {
        return Ok(());
    };
    let _ = req.base64();
    if let Ok(texts) = req.texts("fuzz") {
        check!(T, !texts.is_empty(), "texts() gave no text");
        let _ = estimate_tokens(&texts);
    }
    if let Ok(wire) = gemini::translate::embed_to_wire(&req, "fuzz-upstream") {
        check!(
            T,
            serde_json::to_vec(&wire).is_ok(),
            "embed_to_wire made an unserialisable request"
        );
    }
    Ok(())
}

/// The raw member scanner (`json::top_level_value`) against serde_json: on a valid object
/// whose keys are written without escapes and appear once, the span it finds for a key holds
/// exactly that member's value. Also `Usage::from_openai_json` and `is_usage_only_chunk`.
pub fn json_member(data: &[u8]) -> Outcome {
    const T: &str = "json_member";
    let _ = Usage::from_openai_json(data);
    let _ = crate::api::usage::is_usage_only_chunk(data);
    let keys: [&[u8]; 5] = [b"model", b"usage", b"stream_options", b"choices", b"error"];
    for k in keys {
        let _ = json::top_level_value(data, k);
    }
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(data) else {
        return Ok(());
    };
    for (k, v) in &obj {
        let quoted = {
            let mut q = Vec::with_capacity(k.len() + 2);
            json::write_string(&mut q, k);
            q
        };
        // Only keys that need no escape, written once (anywhere in the document).
        if quoted.len() != k.len() + 2 || memchr::memmem::find_iter(data, &quoted).count() != 1 {
            continue;
        }
        let Some(span) = json::top_level_value(data, k.as_bytes()) else {
            return violation(T, format!("member {k:?} not found in {}", show(data)));
        };
        let found: Result<Value, _> = serde_json::from_slice(&data[span.clone()]);
        check!(
            T,
            found.as_ref().ok() == Some(v),
            "member {k:?}: span {span:?} holds {found:?}, not {v}"
        );
    }
    Ok(())
}

/// A small deterministic generator for split points, seeded from the input itself so a crash
/// replays from its bytes alone.
struct SplitRng(u64);

impl SplitRng {
    fn new(data: &[u8]) -> Self {
        // FNV-1a.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in data {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Self(h | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64*.
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Ways to cut `data` into chunks: whole, at pseudo-random points, and (when short) one byte
/// at a time.
fn splits(data: &[u8]) -> Vec<Vec<Bytes>> {
    let all = Bytes::copy_from_slice(data);
    let mut ways = vec![vec![all.clone()]];
    if data.len() > 1 {
        let mut rng = SplitRng::new(data);
        let n = 1 + (rng.next() % 16) as usize;
        let mut cuts: Vec<usize> = (0..n)
            .map(|_| (rng.next() % data.len() as u64) as usize)
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut chunks = Vec::with_capacity(cuts.len() + 1);
        let mut last = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            chunks.push(all.slice(last..c));
            last = c;
        }
        ways.push(chunks);
    }
    if data.len() > 1 && data.len() <= 512 {
        ways.push((0..data.len()).map(|i| all.slice(i..i + 1)).collect());
    }
    ways
}

/// The SSE splitter: any chunking hands out the same bytes, in runs that each end on an event
/// boundary, holds back exactly the unfinished tail, and finds the same data payloads.
pub fn sse_split(data: &[u8]) -> Outcome {
    const T: &str = "sse_split";
    let complete = last_event_end(data).unwrap_or(0);
    let whole: Vec<Cow<'_, [u8]>> = data_payloads(&data[..complete]).collect();
    for chunks in splits(data) {
        let n = chunks.len();
        let mut s = EventSplitter::default();
        let mut out = Vec::with_capacity(data.len());
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        for c in chunks {
            if let Some(run) = s.push(c) {
                check!(
                    T,
                    !run.is_empty() && last_event_end(&run) == Some(run.len()),
                    "a run that does not end on an event boundary ({n} chunks)"
                );
                payloads.extend(data_payloads(&run).map(Cow::into_owned));
                out.extend_from_slice(&run);
            }
        }
        check!(
            T,
            out == data[..complete],
            "{n} chunks gave {} bytes of events, whole input {complete}",
            out.len()
        );
        check!(
            T,
            s.pending_len() == data.len() - complete,
            "{n} chunks left {} bytes pending, not {}",
            s.pending_len(),
            data.len() - complete
        );
        check!(
            T,
            payloads.len() == whole.len() && payloads.iter().zip(&whole).all(|(a, b)| **a == **b),
            "{n} chunks gave other data payloads than the whole input"
        );
    }
    // Dropping nothing keeps the bytes; dropping every data event keeps only the others.
    let events = Bytes::copy_from_slice(&data[..complete]);
    check!(
        T,
        without_events(&events, |_| false) == events,
        "without_events dropped bytes while dropping nothing"
    );
    let kept = without_events(&events, |_| true);
    check!(
        T,
        data_payloads(&kept).next().is_none() && kept.len() <= events.len(),
        "without_events kept a data event"
    );
    Ok(())
}

/// One SSE event of the output, read back.
struct Event<'a> {
    raw: &'a [u8],
    name: Option<&'a [u8]>,
    data: Option<Cow<'a, [u8]>>,
}

/// Index one past the first event's blank line (`buf` starts at a line start).
fn first_event_end(buf: &[u8]) -> Option<usize> {
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

/// Split SSE output into events, or say why it is not well formed.
fn events_of(out: &[u8]) -> Result<Vec<Event<'_>>, String> {
    if out.is_empty() {
        return Ok(Vec::new());
    }
    if last_event_end(out) != Some(out.len()) {
        return Err(format!(
            "the output does not end with a blank line: {}",
            show(&out[out.len().saturating_sub(200)..])
        ));
    }
    let mut events = Vec::new();
    let mut rest = out;
    while !rest.is_empty() {
        let end = first_event_end(rest).ok_or("an event without its blank line")?;
        let (raw, tail) = rest.split_at(end);
        rest = tail;
        let name = raw
            .split(|&b| b == b'\n')
            .find_map(|l| l.strip_prefix(b"event: "));
        let data = data_payloads(raw).next();
        events.push(Event { raw, name, data });
    }
    Ok(events)
}

/// Is this event an error, as a client reads it: Anthropic's `error` event (by name or type),
/// or a chunk with a top-level `error` that is not `null`?
fn is_error_event(e: &Event<'_>) -> bool {
    if e.name == Some(b"error") {
        return true;
    }
    e.data.as_deref().is_some_and(|d| {
        json::top_level_value(d, b"type").is_some_and(|t| d[t] == *b"\"error\"")
            || json::top_level_value(d, b"error").is_some_and(|v| d[v] != *b"null")
    })
}

/// The `created` seconds of OpenAI chunks read the clock: blank them before comparing runs.
fn without_created(out: &[u8]) -> Vec<u8> {
    const KEY: &[u8] = b"\"created\":";
    let mut v = Vec::with_capacity(out.len());
    let mut rest = out;
    while let Some(i) = memchr::memmem::find(rest, KEY) {
        v.extend_from_slice(&rest[..i + KEY.len()]);
        rest = &rest[i + KEY.len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        rest = &rest[digits..];
    }
    v.extend_from_slice(rest);
    v
}

/// A stream from a `kind` upstream to a `dialect` client, through the relay's own logic
/// (`Answer::transcode`), cut at arbitrary points. Promises:
/// - the client gets whole SSE events only (every one ends with a blank line);
/// - an incomplete stream ends with an error event, never silently;
/// - translated output: every event's data is valid JSON (or OpenAI's `[DONE]`, last), with
///   at most one error event, and nothing after it;
/// - relayed output: the upstream's whole events byte for byte (bar the dropped usage chunk);
/// - the same bytes, usage and completeness however the stream is cut.
pub fn stream(kind: ProviderKind, dialect: Dialect, data: &[u8]) -> Outcome {
    let t: &'static str = match (kind, dialect) {
        (ProviderKind::OpenAi | ProviderKind::Mock, Dialect::OpenAi) => "stream_openai_openai",
        (ProviderKind::OpenAi | ProviderKind::Mock, Dialect::Anthropic) => {
            "stream_openai_anthropic"
        }
        (ProviderKind::Anthropic, Dialect::OpenAi) => "stream_anthropic_openai",
        (ProviderKind::Anthropic, Dialect::Anthropic) => "stream_anthropic_anthropic",
        (ProviderKind::Gemini, Dialect::OpenAi) => "stream_gemini_openai",
        (ProviderKind::Gemini, Dialect::Anthropic) => "stream_gemini_anthropic",
    };
    let native = Dialect::of_kind(kind) == Some(dialect);
    let answers: Vec<Answer> = if native {
        let strips: &[bool] = if dialect == Dialect::OpenAi {
            &[false, true]
        } else {
            &[false]
        };
        strips
            .iter()
            .map(|&strip_usage| Answer::Pass {
                dialect,
                strip_usage,
            })
            .collect()
    } else {
        [false, true]
            .into_iter()
            .map(|include_usage| Answer::Translate {
                from: kind,
                to: dialect,
                model: "fuzz-model".into(),
                include_usage,
            })
            .collect()
    };
    let complete_end = last_event_end(data).unwrap_or(0);
    for answer in &answers {
        let mut reference: Option<(Vec<u8>, Option<Usage>, bool)> = None;
        for chunks in splits(data) {
            let n = chunks.len();
            let got = answer.transcode(chunks);
            let out = got.bytes();
            let events = match events_of(&out) {
                Ok(e) => e,
                Err(why) => return violation(t, format!("{answer:?}, {n} chunks: {why}")),
            };
            let errors = events.iter().filter(|e| is_error_event(e)).count();
            if !got.complete {
                check!(
                    t,
                    events.last().is_some_and(|e| is_error_event(e)),
                    "{answer:?}, {n} chunks: an incomplete stream without a final error event"
                );
                // The relay adds no error event of its own when the upstream reported one
                // in-band: then the client must already have had it.
                if got.saw_error {
                    let own = usize::from(matches!(answer, Answer::Pass { .. }));
                    check!(
                        t,
                        events[..events.len() - own]
                            .iter()
                            .any(|e| is_error_event(e)),
                        "{answer:?}, {n} chunks: cut after an in-band error the client never \
                         saw: the relay would end it silently"
                    );
                }
            }
            if let Answer::Pass { strip_usage, .. } = answer {
                let relayed = if got.complete {
                    &out[..]
                } else {
                    // The gateway's own error event is the last one.
                    let last = events.last().map_or(0, |e| e.raw.len());
                    &out[..out.len() - last]
                };
                if *strip_usage {
                    check!(
                        t,
                        relayed.len() <= complete_end,
                        "{answer:?}: relayed more bytes than the upstream sent"
                    );
                } else {
                    check!(
                        t,
                        *relayed == data[..complete_end],
                        "{answer:?}, {n} chunks: relayed bytes differ from the upstream's events"
                    );
                }
            } else {
                check!(
                    t,
                    errors <= 1,
                    "{answer:?}, {n} chunks: {errors} error events"
                );
                if let Some(i) = events.iter().position(|e| is_error_event(e)) {
                    check!(
                        t,
                        i + 1 == events.len(),
                        "{answer:?}, {n} chunks: events after the error event"
                    );
                }
                for (i, e) in events.iter().enumerate() {
                    let Some(d) = e.data.as_deref() else {
                        return violation(
                            t,
                            format!(
                                "{answer:?}, {n} chunks: event {i} has no data: {}",
                                show(e.raw)
                            ),
                        );
                    };
                    if d == b"[DONE]" && dialect == Dialect::OpenAi {
                        check!(
                            t,
                            i + 1 == events.len(),
                            "{answer:?}, {n} chunks: events after [DONE]"
                        );
                        continue;
                    }
                    if let Err(err) = serde_json::from_slice::<Value>(d) {
                        return violation(
                            t,
                            format!(
                                "{answer:?}, {n} chunks: event {i} is not JSON ({err}): {}",
                                show(d)
                            ),
                        );
                    }
                }
            }
            // Compared without the final error event of an incomplete stream: a read that
            // holds good events and a malformed one loses the good ones' translation (known,
            // see the module doc), so a cut stream may show fewer events, never other ones.
            let kept = if got.complete {
                &out[..]
            } else {
                &out[..out.len() - events.last().map_or(0, |e| e.raw.len())]
            };
            let norm = without_created(kept);
            match &reference {
                None => reference = Some((norm, got.usage, got.complete)),
                Some((r_out, r_usage, r_complete)) => {
                    check!(
                        t,
                        *r_complete == got.complete,
                        "{answer:?}: complete {r_complete} whole, {} in {n} chunks",
                        got.complete
                    );
                    let same = if got.complete {
                        *r_out == norm
                    } else {
                        norm.starts_with(r_out) || r_out.starts_with(&norm)
                    };
                    check!(
                        t,
                        same,
                        "{answer:?}: other bytes in {n} chunks than whole:\n{}\n---\n{}",
                        show(r_out),
                        show(&norm)
                    );
                    check!(
                        t,
                        !got.complete || *r_usage == got.usage,
                        "{answer:?}: usage {r_usage:?} whole, {:?} in {n} chunks",
                        got.usage
                    );
                }
            }
        }
    }
    Ok(())
}

/// A whole upstream answer of `kind`, to each client dialect (translated or relayed): no
/// panic, and a translated answer is valid JSON.
pub fn whole(kind: ProviderKind, data: &[u8]) -> Outcome {
    let t: &'static str = match kind {
        ProviderKind::OpenAi | ProviderKind::Mock => "whole_openai",
        ProviderKind::Anthropic => "whole_anthropic",
        ProviderKind::Gemini => "whole_gemini",
    };
    let body = Bytes::copy_from_slice(data);
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        let answer = if Dialect::of_kind(kind) == Some(dialect) {
            Answer::Pass {
                dialect,
                strip_usage: false,
            }
        } else {
            Answer::Translate {
                from: kind,
                to: dialect,
                model: "fuzz-model".into(),
                include_usage: true,
            }
        };
        let Ok((out, _usage)) = answer.whole(body.clone()) else {
            continue;
        };
        if matches!(answer, Answer::Translate { .. }) {
            if let Err(e) = serde_json::from_slice::<Value>(&out) {
                return violation(
                    t,
                    format!("{answer:?}: the translated answer is not JSON ({e})"),
                );
            }
        } else {
            check!(t, out == body, "{answer:?}: a relayed answer was changed");
        }
    }
    if kind == ProviderKind::Gemini {
        for base64 in [false, true] {
            let answer = Answer::GeminiEmbeddings {
                model: "fuzz-model".into(),
                base64,
                input_tokens: 3,
            };
            if let Ok((out, _)) = answer.whole(body.clone())
                && let Err(e) = serde_json::from_slice::<Value>(&out)
            {
                return violation(t, format!("embeddings answer is not JSON ({e})"));
            }
        }
    }
    Ok(())
}
