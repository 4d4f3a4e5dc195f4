//! Refreshing hot answers before they expire (`cache.refresh_before_s`): the warmer names the
//! hottest keys over every shard (`ShardCmd::HotKeys`); each key's owner shard, once a second,
//! sends again the request of every hot answer it owns that expires within `refresh_before_s`,
//! as `Cache-Control: no-cache` (fetched and stored, with the answer's own TTL and tags),
//! charged to `cache.refresh_key`, filed under the tenant whose answer it refreshes. Clients
//! of a hot key then never see it expire; the refresh key's spend shows what it costs.

use std::rc::Rc;
use std::sync::Arc;

use http::header::CACHE_CONTROL;
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;

use super::context::RequestCtx;
use super::state::ShardState;
use crate::cache::Entry;
use crate::cache::directives::{X_CACHE_TAGS, X_CACHE_TTL};
use crate::providers::Dialect;

/// Start the refresh of every hot answer this shard owns that is due (the shard's 1 s tick).
pub fn tick(state: &Rc<ShardState>) {
    let Some(refresh) = &state.config.cache.refresh else {
        return;
    };
    let before = refresh.before.as_millis() as u64;
    for (key, entry) in super::cache::due_for_refresh(state, super::admit::now_ms(), before) {
        let st = state.clone();
        crate::shard::spawn("cache refresh", async move {
            let ok = refresh_one(&st, &entry).await;
            let m = &st.metrics.cache;
            if ok {
                m.refreshed.inc();
            } else {
                m.refresh_failed.inc();
            }
            st.cache.refreshing.borrow_mut().remove(&key);
        });
    }
}

/// Send `entry`'s request again and let the cache store the answer; whether it was stored.
async fn refresh_one(state: &Rc<ShardState>, entry: &Arc<Entry>) -> bool {
    let Some(source) = &entry.source else {
        return false;
    };
    let caller = match state
        .config
        .cache
        .refresh
        .as_ref()
        .and_then(|r| r.key.clone())
    {
        None => None,
        Some(id) => match state.keys.borrow().get_id(&id) {
            Some(k) => Some(k.clone()),
            None => {
                tracing::warn!(key = %id, "Cache refresh: the refresh key does not exist; not refreshed.");
                return false;
            }
        },
    };
    let mut headers = HeaderMap::new();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        X_CACHE_TTL.clone(),
        HeaderValue::from(source.ttl_ms.div_ceil(1000).max(1)),
    );
    if !entry.tags.is_empty()
        && let Ok(v) = HeaderValue::from_str(&entry.tags.join(","))
    {
        headers.insert(X_CACHE_TAGS.clone(), v);
    }
    let dialect = if source.route == "messages" {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    let ctx = RequestCtx::new(HeaderValue::from_static("cache-refresh"));
    let res = super::chat::run_as(
        state,
        &ctx,
        &headers,
        source.body.clone(),
        dialect,
        caller,
        Some(&entry.tenant),
    )
    .await;
    let Ok(res) = res else {
        return false;
    };
    if !res.status().is_success() {
        return false;
    }
    // Read to the end: the cache stores the answer as its body ends.
    res.into_body().collect().await.is_ok()
}
