//! The semantic cache's own thread: the vector index (`cache::index`) and, with
//! `--features local-embed`, the local sentence encoder (`cache::encoder`).
//!
//! Why a thread of its own and not an actor on the control plane: one embedding costs about
//! 12 ms of CPU, which would stall every actor on the control plane's single runtime thread
//! (the store has its own thread for the same reason, `actors::persist`). Shards never wait
//! on it longer than `cache.semantic.timeout_ms`; a request whose shard gave up is dropped
//! unembedded.
//!
//! Each turn takes every request queued (up to a batch), embeds the texts of all of them in
//! one forward pass, then searches and files in arrival order. A panic inside the encoder or
//! the index is caught, counted and answered as a miss: the thread lives on.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::cache::index::Index;
use crate::cache::semantic::{SemanticRequest, judge};
use crate::metrics::ControlMetrics;

/// Most requests taken in one turn (and texts embedded in one forward pass).
const BATCH: usize = 32;
/// Requests queued before shards are told the thread is busy (their lookups then miss).
pub const QUEUE: usize = 4096;

/// What embeds texts on this thread.
pub trait Embed {
    /// One unit vector per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String>;
}

#[cfg(feature = "local-embed")]
impl Embed for crate::cache::encoder::Encoder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        self.encode(texts).map_err(|e| e.to_string())
    }
}

/// No local encoder: embeddings come through the pipeline, and an `Embed` request fails.
pub struct NoEncoder;

impl Embed for NoEncoder {
    fn embed(&self, _: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        Err("no local encoder in this gateway".into())
    }
}

/// Start the thread, with its index bounded at `max_entries` texts, pinned to `core` (the
/// control plane's, when the tuning profile gives one). It ends when every sender is gone.
pub fn start(
    encoder: Box<dyn Embed + Send>,
    max_entries: usize,
    core: Option<usize>,
    metrics: Arc<ControlMetrics>,
) -> std::io::Result<crate::cache::semantic::SemanticSender> {
    let (tx, rx) = flume::bounded(QUEUE);
    // The encoder's matrix products and the tokenizer parallelise over rayon's current pool:
    // one thread of its own, so that they never spread onto the shards' cores.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .thread_name(|_| "semantic-math".into())
        .start_handler(move |_| pin(core))
        .build()
        .map_err(std::io::Error::other)?;
    std::thread::Builder::new()
        .name("semantic".into())
        .spawn(move || {
            pin(core);
            let mut thread = Thread {
                index: Index::new(max_entries),
                encoder,
                metrics,
            };
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                batch.extend(rx.try_iter().take(BATCH - 1));
                pool.install(|| thread.turn(batch));
            }
        })?;
    Ok(tx)
}

fn pin(core: Option<usize>) {
    if let Some(id) = core {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
}

/// The thread's state.
pub struct Thread {
    index: Index,
    encoder: Box<dyn Embed + Send>,
    metrics: Arc<ControlMetrics>,
}

impl Thread {
    /// Handle one batch.
    pub fn turn(&mut self, batch: Vec<SemanticRequest>) {
        let mut embeds = Vec::new();
        let mut rest = Vec::new();
        for req in batch {
            match req {
                SemanticRequest::Embed { texts, reply } if !reply.is_closed() => {
                    embeds.push((texts, reply));
                }
                SemanticRequest::Embed { .. } => {}
                other => rest.push(other),
            }
        }
        self.embed_all(embeds);
        for req in rest {
            self.handle(req);
        }
        self.metrics
            .semantic_entries
            .set(i64::try_from(self.index.len()).unwrap_or(i64::MAX));
    }

    fn embed_all(&mut self, embeds: Vec<(Vec<String>, EmbedReply)>) {
        if embeds.is_empty() {
            return;
        }
        let texts: Vec<&str> = embeds
            .iter()
            .flat_map(|(t, _)| t.iter().map(String::as_str))
            .collect();
        let encoder = &self.encoder;
        let vectors = catch_unwind(AssertUnwindSafe(|| encoder.embed(&texts)))
            .unwrap_or_else(|_| Err("the local encoder panicked".into()));
        let vectors = match vectors {
            Ok(v) if v.len() == texts.len() => v,
            Ok(_) | Err(_) => {
                self.metrics.semantic_errors.inc();
                for (_, reply) in embeds {
                    let _ = reply.send(Err("the local encoder failed".into()));
                }
                return;
            }
        };
        self.metrics.semantic_embedded.add(texts.len() as u64);
        let mut vectors = vectors.into_iter();
        for (t, reply) in embeds {
            let _ = reply.send(Ok(vectors.by_ref().take(t.len()).collect()));
        }
    }

    fn handle(&mut self, req: SemanticRequest) {
        let index = &mut self.index;
        let (evicted, bound) = (index.evicted(), index.max_entries());
        let done = catch_unwind(AssertUnwindSafe(|| match req {
            SemanticRequest::Search {
                partition,
                vector,
                text,
                threshold,
                guard,
                now_ms,
                reply,
            } => {
                if reply.is_closed() {
                    return;
                }
                let near = index.nearest(&partition, &vector, now_ms);
                let _ = reply.send(judge(near, &text, threshold, guard));
            }
            SemanticRequest::Insert {
                partition,
                point,
                now_ms,
            } => {
                index.insert(partition, point, now_ms);
            }
            SemanticRequest::Extend { key, expires_ms } => {
                index.extend(&key, expires_ms);
            }
            SemanticRequest::Invalidate(selector) => {
                index.invalidate(&selector);
            }
            SemanticRequest::Embed { reply, .. } => {
                let _ = reply.send(Err("out of turn".into()));
            }
        }));
        if done.is_err() {
            // The index may be half-changed: start it over (it refills from new answers).
            self.metrics.semantic_errors.inc();
            self.index = Index::new(bound);
            return;
        }
        self.metrics
            .semantic_evicted
            .add(self.index.evicted().saturating_sub(evicted));
    }
}

type EmbedReply = tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>, String>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::index::{Point, Tags};
    use crate::cache::semantic::Searched;
    use crate::cache::{CacheKey, Selector, Tenant};
    use serde_json::json;

    /// Embeds a text as a one-hot vector by its first letter; panics on "boom".
    struct Letters;

    impl Embed for Letters {
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
            Ok(texts
                .iter()
                .map(|t| {
                    assert!(*t != "boom", "the encoder fell over");
                    let mut v = vec![0.0; 26];
                    v[usize::from(t.as_bytes()[0].saturating_sub(b'a')) % 26] = 1.0;
                    v
                })
                .collect())
        }
    }

    fn thread() -> Thread {
        Thread {
            index: Index::new(100),
            encoder: Box::new(Letters),
            metrics: Arc::new(ControlMetrics::default()),
        }
    }

    fn embed(texts: &[&str]) -> (SemanticRequest, EmbedRx) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let texts = texts.iter().map(|t| (*t).to_owned()).collect();
        (SemanticRequest::Embed { texts, reply }, rx)
    }

    type EmbedRx = tokio::sync::oneshot::Receiver<Result<Vec<Vec<f32>>, String>>;

    fn key(n: u32) -> CacheKey {
        CacheKey::of(&Tenant::Global, "chat", "m", &json!({ "n": n }))
    }

    #[test]
    fn a_batch_embeds_in_one_pass_and_each_caller_gets_its_own_vectors() {
        let mut t = thread();
        let (a, mut ra) = embed(&["apple", "banana"]);
        let (b, mut rb) = embed(&["cherry"]);
        let (gone, rg) = embed(&["date"]);
        drop(rg);
        t.turn(vec![a, gone, b]);
        let va = ra.try_recv().unwrap().unwrap();
        let vb = rb.try_recv().unwrap().unwrap();
        assert_eq!((va.len(), vb.len()), (2, 1));
        assert_eq!(va[1][1], 1.0);
        assert_eq!(vb[0][2], 1.0);
        // The caller that gave up is not embedded for.
        assert_eq!(t.metrics.semantic_embedded.get(), 3);
    }

    #[test]
    fn a_panicking_encoder_fails_its_batch_and_the_thread_goes_on() {
        let mut t = thread();
        let (a, mut ra) = embed(&["boom"]);
        t.turn(vec![a]);
        assert!(ra.try_recv().unwrap().is_err());
        assert_eq!(t.metrics.semantic_errors.get(), 1);
        let (b, mut rb) = embed(&["fine"]);
        t.turn(vec![b]);
        assert!(rb.try_recv().unwrap().is_ok());
    }

    #[test]
    fn inserts_searches_and_invalidations_apply_in_arrival_order() {
        let mut t = thread();
        let partition = key(1000);
        let vector: Arc<[f32]> = Letters.embed(&["apple"]).unwrap().remove(0).into();
        let insert = SemanticRequest::Insert {
            partition,
            point: Point {
                key: key(1),
                text: "apple pie".into(),
                expires_ms: 1_000,
                vector: vector.to_vec().into(),
                tags: Tags {
                    tenant: Tenant::Global,
                    model: "m".into(),
                    tags: Box::new(["desserts".into()]),
                },
            },
            now_ms: 0,
        };
        let search = |text: &str| {
            let (reply, rx) = tokio::sync::oneshot::channel();
            let req = SemanticRequest::Search {
                partition,
                vector: vector.clone(),
                text: text.into(),
                threshold: 0.9,
                guard: true,
                now_ms: 10,
                reply,
            };
            (req, rx)
        };
        let (s1, mut r1) = search("apple pie");
        let (s2, mut r2) = search("no apple pie");
        let inval = SemanticRequest::Invalidate(Selector::Tag("desserts".into()));
        let (s3, mut r3) = search("apple pie");
        t.turn(vec![insert, s1, s2, inval, s3]);
        assert!(matches!(r1.try_recv().unwrap(), Searched::Hit(n) if n.key == key(1)));
        assert!(matches!(r2.try_recv().unwrap(), Searched::Refused(..)));
        assert!(matches!(r3.try_recv().unwrap(), Searched::Miss(None)));
        assert_eq!(t.metrics.semantic_entries.get(), 0);
    }
}
