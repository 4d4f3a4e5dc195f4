//! One request's way through the gateway, phase by phase, between the downstream edge
//! (`http`: accept, parse, limits, render) and the wire formats (`providers`).
//!
//! Phases, in order (pingora's phase chart is the model; later issues add theirs where
//! marked):
//!
//! 1. **resolve**: the public model from the decoded request head.
//! 2. **admit**: the key, rate limits and budgets, from this shard's leases ([`admit`]).
//! 3. **cache lookup**: a hit, a ride on an identical request in flight, or a miss
//!    ([`cache`]; models with a cache TTL only).
//! 4. **plan**: the ordered deployments to try.
//! 5. **attempts**: open an attempt (head read, status mapped, still retryable), or fail over.
//! 6. **relay**: commit to an attempt and stream or return its answer, usage teed out.
//! 7. **cache insert**: a complete, healthy answer teed into the cache as it goes out.
//! 8. **settle**: usage, cost and the attempt's outcome to the scorer batch; the
//!    admission's reservation settled with the real usage ([`admit::Tab`]).
//!
//! Owns: [`state::ShardState`] (what a shard owns), [`context::RequestCtx`], the response body
//! type [`body::ResBody`]. Does not: parse HTTP or render errors (`http`), know a provider's
//! wire format (`providers`).

pub mod admit;
pub mod attempt;
pub mod attempts;
pub mod body;
pub mod cache;
pub mod chat;
pub mod context;
pub mod embeddings;
pub mod local;
pub mod refresh;
pub mod relay;
pub mod semantic;
pub mod state;

/// `GET /admin/routes`: per model, its strategy and fallbacks, and each deployment as this
/// shard's router sees it now (breaker, latency, in flight, score, and why it would not be
/// chosen for a plain request).
pub fn routes_json(state: &state::ShardState) -> serde_json::Value {
    let now = std::time::Instant::now();
    let router = state.router.borrow();
    let config = &state.config;
    let name = |m: &crate::ModelIdx| {
        config
            .models
            .get(m.get())
            .map_or_else(String::new, |r| r.public.to_string())
    };
    let models: serde_json::Map<String, serde_json::Value> = config
        .models
        .iter()
        .map(|route| {
            let rows = router.explain(route.idx(), now);
            let value = serde_json::json!({
                "strategy": route.strategy.as_str(),
                "fallbacks": route.fallbacks.iter().map(name).collect::<Vec<_>>(),
                "context_window_fallbacks":
                    route.context_window_fallbacks.iter().map(name).collect::<Vec<_>>(),
                "content_policy_fallbacks":
                    route.content_policy_fallbacks.iter().map(name).collect::<Vec<_>>(),
                "deployments": rows,
            });
            (route.public.to_string(), value)
        })
        .collect();
    serde_json::json!({ "shard": state.id.0, "models": models })
}
