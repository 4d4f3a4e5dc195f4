//! The semantic cache, on the shard: after an exact miss, a chat request's last user message
//! is embedded (by the local encoder on the semantic thread, or by a configured embeddings
//! model through the pipeline) and its nearest earlier question in the same partition looked
//! up on the semantic thread; a neighbour above the threshold that the guard lets through
//! answers with its cached answer (`x-shardgate-cache: semantic-hit`).
//!
//! In shadow mode nothing is served from it: the would-be hit is kept, the request goes
//! upstream, and once the fresh answer is stored the two answers are compared (their
//! embeddings' similarity against `agree_at`) and counted as agreeing or not.
//!
//! Every wait is bounded by `cache.semantic.timeout_ms`; a late, failed or refused lookup is a
//! miss and the request goes upstream.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::BodyExt;

use super::context::RequestCtx;
use super::state::ShardState;
use crate::cache::index::{Near, Point, Tags, dot, normalize};
use crate::cache::semantic::{Searched, SemanticRequest, SemanticSender, Split};
use crate::cache::{CacheKey, Entry, Form};
use crate::config::{Embeddings, ModelRoute, SemanticConfig};
use crate::providers::{Dialect, replay};

/// A request's semantic side.
#[derive(Debug)]
pub struct Semantic {
    split: Split,
    shadow: bool,
    threshold: f32,
    /// The question's embedding, once made (filed with the answer when it is stored).
    vector: RefCell<Option<Arc<[f32]>>>,
    /// Shadow mode: the neighbour that would have answered.
    would: RefCell<Option<Near>>,
}

/// The semantic side of a cacheable chat request on a model that uses the semantic cache.
pub fn plan(
    state: &ShardState,
    model: &ModelRoute,
    tenant: &crate::cache::Tenant,
    route: &str,
    body: &serde_json::Value,
) -> Option<Semantic> {
    let mode = model.semantic?;
    let config = state.config.cache.semantic.as_ref()?;
    let split = crate::cache::semantic::split(tenant, route, &model.public.0, body)?;
    Some(Semantic {
        split,
        shadow: mode.shadow(),
        threshold: mode.threshold(config.threshold),
        vector: RefCell::new(None),
        would: RefCell::new(None),
    })
}

/// The neighbour whose answer may serve this request, after an exact miss; `None` on a miss,
/// a refusal, a timeout, or in shadow mode (where a would-be hit is kept for the comparison).
pub async fn nearest(state: &Rc<ShardState>, sem: &Semantic) -> Option<Near> {
    let config = state.config.cache.semantic.as_ref()?;
    let tx = state.cache.semantic()?;
    let m = &state.metrics.cache;
    let search = async {
        let vector = embed_one(state, config, tx, &sem.split.text).await?;
        sem.vector.replace(Some(vector.clone()));
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.try_send(SemanticRequest::Search {
            partition: sem.split.partition,
            vector,
            text: sem.split.text.clone(),
            threshold: sem.threshold,
            guard: config.guard,
            now_ms: super::admit::now_ms(),
            reply,
        })
        .ok()?;
        rx.await.ok()
    };
    let Ok(Some(verdict)) = crate::shard::timeout(config.timeout, search).await else {
        m.semantic_timeouts.inc();
        return None;
    };
    match verdict {
        Searched::Hit(near) if sem.shadow => {
            m.shadow_would_hit.inc();
            sem.would.replace(Some(near));
            None
        }
        Searched::Hit(near) => Some(near),
        Searched::Refused(near, why) => {
            tracing::debug!(
                similarity = near.similarity,
                ?why,
                "Semantic cache: the guard refused a neighbour."
            );
            m.semantic_refused.inc();
            None
        }
        Searched::Miss(_) => {
            m.semantic_misses.inc();
            None
        }
    }
}

/// The similarity header's value (four decimals).
pub fn similarity_header(near: &Near) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{:.4}", near.similarity)).ok()
}

/// An answer was stored under `key` for this request: file its question in the index, and in
/// shadow mode compare it with the would-be hit's answer (in the background).
pub fn stored(
    state: &Rc<ShardState>,
    sem: &Semantic,
    key: CacheKey,
    entry: &Arc<Entry>,
    dialect: Dialect,
) {
    let Some(tx) = state.cache.semantic() else {
        return;
    };
    let vector = sem.vector.borrow().clone();
    let req = match vector {
        Some(vector) => SemanticRequest::Insert {
            partition: sem.split.partition,
            point: Point {
                key,
                text: sem.split.text.as_str().into(),
                expires_ms: entry.expires_ms,
                vector: vector.to_vec().into_boxed_slice(),
                tags: Tags {
                    tenant: entry.tenant.clone(),
                    model: entry.model.clone(),
                    tags: entry.tags.clone(),
                },
            },
            now_ms: super::admit::now_ms(),
        },
        // Stored without a lookup (a refresh, `no-cache`): the question filed earlier, if
        // any, now answers until this answer expires.
        None => SemanticRequest::Extend {
            key,
            expires_ms: entry.expires_ms,
        },
    };
    let _ = tx.try_send(req);
    compare_later(state, sem, entry, dialect);
}

/// Shadow mode: compare the would-be hit's answer with the fresh one, in the background.
fn compare_later(state: &Rc<ShardState>, sem: &Semantic, entry: &Arc<Entry>, dialect: Dialect) {
    if let Some(near) = sem.would.take() {
        let (st, fresh) = (state.clone(), entry.clone());
        crate::shard::spawn("shadow comparison", async move {
            compare(&st, near, fresh, dialect).await;
        });
    }
}

/// Shadow mode: does the would-be hit's cached answer agree with the fresh one?
async fn compare(state: &Rc<ShardState>, near: Near, fresh: Arc<Entry>, dialect: Dialect) {
    let (Some(config), Some(tx)) = (state.config.cache.semantic.as_ref(), state.cache.semantic())
    else {
        return;
    };
    let Some(cached) = super::cache::fetch(state, near.key).await else {
        // Gone (expired, evicted) before the fresh answer came: nothing to compare.
        return;
    };
    let text = |e: &Entry| replay::answer_text(dialect, &e.body, e.form == Form::Stream);
    let (Some(a), Some(b)) = (text(&cached), text(&fresh)) else {
        return;
    };
    let m = &state.metrics.cache;
    let agree = if a == b {
        Some(true)
    } else {
        let both = embed(state, config, tx, vec![a, b]);
        match crate::shard::timeout(config.timeout * 4, both).await {
            Ok(Some(v)) if v.len() == 2 => Some(dot(&v[0], &v[1]) >= config.agree_at),
            _ => None,
        }
    };
    match agree {
        Some(true) => m.shadow_agreed.inc(),
        Some(false) => m.shadow_disagreed.inc(),
        None => m.semantic_timeouts.inc(),
    }
}

async fn embed_one(
    state: &Rc<ShardState>,
    config: &SemanticConfig,
    tx: &SemanticSender,
    text: &str,
) -> Option<Arc<[f32]>> {
    let mut v = embed(state, config, tx, vec![text.to_owned()]).await?;
    v.pop().map(Arc::from)
}

/// Unit vectors for `texts`, from wherever the config says embeddings come from.
async fn embed(
    state: &Rc<ShardState>,
    config: &SemanticConfig,
    tx: &SemanticSender,
    texts: Vec<String>,
) -> Option<Vec<Vec<f32>>> {
    let n = texts.len();
    let mut vectors = match config.embeddings {
        Embeddings::Local(_) => {
            let (reply, rx) = tokio::sync::oneshot::channel();
            tx.try_send(SemanticRequest::Embed { texts, reply }).ok()?;
            rx.await.ok()?.ok()?
        }
        Embeddings::Model(model) => through_model(state, model, texts).await?,
    };
    if vectors.len() != n || !vectors.iter_mut().all(|v| normalize(v)) {
        return None;
    }
    Some(vectors)
}

/// Embeddings from a configured model, through the pipeline (routing, retries, failover).
/// The gateway's own call: no tenant is charged for it (its tokens show in the deployment's
/// usage).
async fn through_model(
    state: &Rc<ShardState>,
    model: crate::ModelIdx,
    texts: Vec<String>,
) -> Option<Vec<Vec<f32>>> {
    let route = state.config.model_at(model)?.clone();
    let body = serde_json::json!({ "model": &*route.public.0, "input": texts });
    let body = Bytes::from(serde_json::to_vec(&body).ok()?);
    let ctx = RequestCtx::new(HeaderValue::from_static("semantic-cache"));
    let res = super::embeddings::call(state, &ctx, &route.public.0, &route, &body)
        .await
        .ok()?;
    if !res.status().is_success() {
        return None;
    }
    let bytes = res.into_body().collect().await.ok()?.to_bytes();
    parse_vectors(&bytes)
}

/// The vectors of an OpenAI embeddings answer, in input order.
fn parse_vectors(body: &[u8]) -> Option<Vec<Vec<f32>>> {
    #[derive(serde::Deserialize)]
    struct Answer {
        data: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        index: usize,
        embedding: Vec<f32>,
    }
    let mut a: Answer = serde_json::from_slice(body).ok()?;
    a.data.sort_by_key(|i| i.index);
    a.data
        .iter()
        .enumerate()
        .all(|(n, i)| n == i.index)
        .then(|| a.data.into_iter().map(|i| i.embedding).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_come_back_in_input_order_or_not_at_all() {
        let body = br#"{"object":"list","data":[
            {"object":"embedding","index":1,"embedding":[0.0,1.0]},
            {"object":"embedding","index":0,"embedding":[1.0,0.0]}]}"#;
        assert_eq!(
            parse_vectors(body).unwrap(),
            vec![vec![1.0, 0.0], vec![0.0, 1.0]]
        );
        let gap = br#"{"data":[{"index":0,"embedding":[1.0]},{"index":2,"embedding":[1.0]}]}"#;
        assert!(parse_vectors(gap).is_none());
        assert!(parse_vectors(b"{\"error\":{}}").is_none());
    }
}
