//! Prometheus text exposition of all shards, aggregated, plus per-shard totals and scores.

use std::fmt::Write;

use super::labels::{ERROR_KINDS, Route, StatusLabel, UpstreamOutcome};
use super::{BUCKETS, Counter, Histogram, Registry, ShardMetrics};
use crate::scoring::ScoreTable;

fn sum_hist<'a>(hs: impl Iterator<Item = &'a Histogram>) -> ([u64; BUCKETS.len()], u64, f64) {
    let mut out = ([0u64; BUCKETS.len()], 0u64, 0f64);
    for h in hs {
        let (b, c, s) = h.snapshot();
        for (o, v) in out.0.iter_mut().zip(b) {
            *o += v;
        }
        out.1 += c;
        out.2 += s;
    }
    out
}

fn write_hist(out: &mut String, name: &str, labels: &str, h: ([u64; BUCKETS.len()], u64, f64)) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cum = 0;
    for (le, n) in BUCKETS.iter().zip(h.0) {
        cum += n;
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cum}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.1);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.2);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.1);
}

fn sum<'a>(shards: &'a [std::sync::Arc<ShardMetrics>], f: impl Fn(&'a ShardMetrics) -> u64) -> u64 {
    shards.iter().map(|s| f(s)).sum()
}

/// A counter per outcome for each of `names` (the label's values, in index order), summed
/// over the shards; `attempts` finds a shard's counters for the thing at an index.
fn by_outcome(
    out: &mut String,
    metric: &str,
    help: &str,
    (label, names): (&str, &[std::sync::Arc<str>]),
    shards: &[std::sync::Arc<ShardMetrics>],
    attempts: impl Fn(&ShardMetrics, usize) -> Option<&[Counter; UpstreamOutcome::ALL.len()]>,
) {
    let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
    for (i, name) in names.iter().enumerate() {
        for o in UpstreamOutcome::ALL {
            let n = sum(shards, |s| {
                attempts(s, i).map_or(0, |a| a[o as usize].get())
            });
            let _ = writeln!(
                out,
                "{metric}{{{label}=\"{name}\",outcome=\"{}\"}} {n}",
                o.as_str()
            );
        }
    }
}

/// Render every shard's metrics and the score table as Prometheus text.
pub fn render(reg: &Registry, scores: &ScoreTable) -> String {
    let shards = &reg.shards[..];
    let mut out = String::with_capacity(16 * 1024);

    out.push_str("# HELP gateway_requests_total Downstream requests by route and status.\n# TYPE gateway_requests_total counter\n");
    for route in Route::ALL {
        for status in StatusLabel::ALL {
            let n = sum(shards, |s| {
                s.requests[route as usize][status as usize].get()
            });
            if n > 0 {
                let _ = writeln!(
                    out,
                    "gateway_requests_total{{route=\"{}\",status=\"{}\"}} {n}",
                    route.as_str(),
                    status.as_str()
                );
            }
        }
    }
    out.push_str("# HELP gateway_request_duration_seconds Downstream request duration by route.\n# TYPE gateway_request_duration_seconds histogram\n");
    for route in [Route::ChatCompletions, Route::Models] {
        let h = sum_hist(shards.iter().map(|s| &s.duration[route as usize]));
        write_hist(
            &mut out,
            "gateway_request_duration_seconds",
            &format!("route=\"{}\"", route.as_str()),
            h,
        );
    }
    out.push_str("# HELP gateway_overhead_seconds Time spent in the gateway per proxied request, excluding upstream.\n# TYPE gateway_overhead_seconds histogram\n");
    write_hist(
        &mut out,
        "gateway_overhead_seconds",
        "",
        sum_hist(shards.iter().map(|s| &s.overhead)),
    );

    out.push_str("# HELP gateway_errors_total Gateway errors by kind.\n# TYPE gateway_errors_total counter\n");
    for (i, kind) in ERROR_KINDS.iter().enumerate() {
        let n = sum(shards, |s| s.errors[i].get());
        if n > 0 {
            let _ = writeln!(out, "gateway_errors_total{{kind=\"{kind}\"}} {n}");
        }
    }

    by_outcome(
        &mut out,
        "gateway_upstream_requests_total",
        "Upstream attempts by provider and outcome.",
        ("provider", &reg.providers),
        shards,
        |s, p| s.providers.get(p).map(|m| &m.attempts),
    );
    out.push_str("# HELP gateway_upstream_connections_total Upstream connections opened by provider.\n# TYPE gateway_upstream_connections_total counter\n");
    for (p, name) in reg.providers.iter().enumerate() {
        let n = sum(shards, |s| {
            s.providers.get(p).map_or(0, |m| m.connects.get())
        });
        let _ = writeln!(
            out,
            "gateway_upstream_connections_total{{provider=\"{name}\"}} {n}"
        );
    }
    out.push_str("# HELP gateway_upstream_duration_seconds Upstream attempt duration by provider.\n# TYPE gateway_upstream_duration_seconds histogram\n");
    for (p, name) in reg.providers.iter().enumerate() {
        let h = sum_hist(
            shards
                .iter()
                .filter_map(|s| s.providers.get(p).map(|m| &m.duration)),
        );
        write_hist(
            &mut out,
            "gateway_upstream_duration_seconds",
            &format!("provider=\"{name}\""),
            h,
        );
    }
    out.push_str("# HELP gateway_upstream_ttfb_seconds Upstream time to response head by provider.\n# TYPE gateway_upstream_ttfb_seconds histogram\n");
    for (p, name) in reg.providers.iter().enumerate() {
        let h = sum_hist(
            shards
                .iter()
                .filter_map(|s| s.providers.get(p).map(|m| &m.ttfb)),
        );
        write_hist(
            &mut out,
            "gateway_upstream_ttfb_seconds",
            &format!("provider=\"{name}\""),
            h,
        );
    }
    out.push_str("# HELP gateway_tokens_total Tokens by provider and direction.\n# TYPE gateway_tokens_total counter\n");
    for (p, name) in reg.providers.iter().enumerate() {
        let i = sum(shards, |s| {
            s.providers.get(p).map_or(0, |m| m.input_tokens.get())
        });
        let o = sum(shards, |s| {
            s.providers.get(p).map_or(0, |m| m.output_tokens.get())
        });
        let _ = writeln!(
            out,
            "gateway_tokens_total{{provider=\"{name}\",direction=\"input\"}} {i}"
        );
        let _ = writeln!(
            out,
            "gateway_tokens_total{{provider=\"{name}\",direction=\"output\"}} {o}"
        );
    }
    out.push_str("# HELP gateway_model_tokens_total Tokens by public model and type (input includes cached_input, output includes reasoning).\n# TYPE gateway_model_tokens_total counter\n");
    for (i, name) in reg.models.iter().enumerate() {
        let get = |f: fn(&crate::metrics::ModelMetrics) -> u64| {
            sum(shards, |s| s.models.get(i).map_or(0, f))
        };
        for (kind, n) in [
            ("input", get(|m| m.input_tokens.get())),
            ("output", get(|m| m.output_tokens.get())),
            ("cached_input", get(|m| m.cached_input_tokens.get())),
            ("reasoning", get(|m| m.reasoning_tokens.get())),
        ] {
            let _ = writeln!(
                out,
                "gateway_model_tokens_total{{model=\"{name}\",type=\"{kind}\"}} {n}"
            );
        }
    }
    out.push_str("# HELP gateway_cost_usd_total Spend by public model, from the configured prices.\n# TYPE gateway_cost_usd_total counter\n");
    for (i, name) in reg.models.iter().enumerate() {
        let nano = sum(shards, |s| {
            s.models.get(i).map_or(0, |m| m.cost_nano_usd.get())
        });
        let _ = writeln!(
            out,
            "gateway_cost_usd_total{{model=\"{name}\"}} {}",
            crate::budget::Cost(nano).usd()
        );
    }

    by_outcome(
        &mut out,
        "gateway_deployment_attempts_total",
        "Upstream attempts by deployment and outcome.",
        ("deployment", &reg.deployments),
        shards,
        |s, d| s.deployments.get(d).map(|m| &m.attempts),
    );
    out.push_str("# HELP gateway_queue_depth Requests waiting for a free deployment, by public model.\n# TYPE gateway_queue_depth gauge\n");
    for (i, name) in reg.models.iter().enumerate() {
        let n: i64 = shards
            .iter()
            .filter_map(|s| s.models.get(i))
            .map(|m| m.queued.get())
            .sum();
        let _ = writeln!(out, "gateway_queue_depth{{model=\"{name}\"}} {n}");
    }
    out.push_str("# HELP gateway_queue_refused_total Requests refused because every deployment was busy or cooling down, by public model.\n# TYPE gateway_queue_refused_total counter\n");
    for (i, name) in reg.models.iter().enumerate() {
        let n = sum(shards, |s| {
            s.models.get(i).map_or(0, |m| m.queue_refused.get())
        });
        let _ = writeln!(out, "gateway_queue_refused_total{{model=\"{name}\"}} {n}");
    }
    out.push_str("# HELP gateway_queue_wait_seconds Time requests waited in a model's queue.\n# TYPE gateway_queue_wait_seconds histogram\n");
    for (i, name) in reg.models.iter().enumerate() {
        let h = sum_hist(
            shards
                .iter()
                .filter_map(|s| s.models.get(i).map(|m| &m.queue_wait)),
        );
        if h.1 > 0 {
            write_hist(
                &mut out,
                "gateway_queue_wait_seconds",
                &format!("model=\"{name}\""),
                h,
            );
        }
    }

    let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        &mut out,
        "gateway_inflight_requests",
        "Requests being handled.",
        shards.iter().map(|s| s.inflight.get()).sum(),
    );
    gauge(
        &mut out,
        "gateway_open_connections",
        "Open downstream connections.",
        shards.iter().map(|s| s.connections.get()).sum(),
    );
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    counter(
        &mut out,
        "gateway_connections_total",
        "Downstream connections accepted.",
        sum(shards, |s| s.connections_total.get()),
    );
    counter(
        &mut out,
        "gateway_connection_timeouts_total",
        "Connections closed by the header or idle timeout.",
        sum(shards, |s| s.timeouts.get()),
    );
    counter(
        &mut out,
        "gateway_connections_shed_total",
        "Silent, slow or idle connections closed near the connection cap to make room.",
        sum(shards, |s| s.connections_shed.get()),
    );
    counter(
        &mut out,
        "gateway_retries_total",
        "Attempts after a request's first (retries and failover).",
        sum(shards, |s| s.retries.get()),
    );
    counter(
        &mut out,
        "gateway_retry_budget_refused_total",
        "Retries the retry budget refused.",
        sum(shards, |s| s.retry_budget_refused.get()),
    );
    counter(
        &mut out,
        "gateway_breaker_ejections_total",
        "Deployments the shards' own breakers ejected.",
        sum(shards, |s| s.ejections.get()),
    );
    counter(
        &mut out,
        "gateway_fallbacks_total",
        "Requests sent on to a context-window or content-policy fallback model.",
        sum(shards, |s| s.fallbacks.get()),
    );
    counter(
        &mut out,
        "gateway_admitted_total",
        "Requests admitted past auth, limits and budgets (when any is configured).",
        sum(shards, |s| s.admitted.get()),
    );
    counter(
        &mut out,
        "gateway_limit_wait_timeouts_total",
        "Requests refused because no lease share of a nearly used-up limit came in time.",
        sum(shards, |s| s.limit_wait_timeouts.get()),
    );
    let c = |f: fn(&super::CacheMetrics) -> &super::Counter| sum(shards, |s| f(&s.cache).get());
    let (hits, misses) = (c(|m| &m.hits), c(|m| &m.misses));
    for (name, help, v) in [
        (
            "gateway_cache_hits_total",
            "Requests answered from the response cache.",
            hits,
        ),
        (
            "gateway_cache_misses_total",
            "Requests on a cached model the cache could not answer.",
            misses,
        ),
        (
            "gateway_cache_bypassed_total",
            "Requests on a cached model that opted out of the cache.",
            c(|m| &m.bypassed),
        ),
        (
            "gateway_cache_coalesced_total",
            "Requests that rode an identical request in flight.",
            c(|m| &m.coalesced),
        ),
        (
            "gateway_cache_cross_shard_lookups_total",
            "Cache lookups sent to the key's owner shard.",
            c(|m| &m.cross_shard),
        ),
        (
            "gateway_cache_replica_hits_total",
            "Hits served from a shard's copy of an answer another shard owns (no hop to its owner).",
            c(|m| &m.replica_hits),
        ),
        (
            "gateway_cache_l2_hits_total",
            "Hits served from the cache's L2 in Redis.",
            c(|m| &m.l2_hits),
        ),
        (
            "gateway_cache_l2_timeouts_total",
            "L2 lookups Redis did not answer in time.",
            c(|m| &m.l2_timeouts),
        ),
        (
            "gateway_cache_stored_total",
            "Answers stored in the cache.",
            c(|m| &m.stored),
        ),
        (
            "gateway_cache_not_stored_total",
            "Answers not stored: incomplete, failed or too large.",
            c(|m| &m.not_stored),
        ),
        (
            "gateway_cache_admissions_refused_total",
            "Answers the cache turned away.",
            c(|m| &m.refused),
        ),
        (
            "gateway_cache_evictions_total",
            "Cache entries evicted to make room.",
            c(|m| &m.evictions),
        ),
        (
            "gateway_cache_invalidated_total",
            "Cache entries removed by invalidation.",
            c(|m| &m.invalidated),
        ),
        (
            "gateway_cache_refreshed_total",
            "Hot answers fetched again before they expired.",
            c(|m| &m.refreshed),
        ),
        (
            "gateway_cache_refresh_failures_total",
            "Refreshes of hot answers that failed.",
            c(|m| &m.refresh_failed),
        ),
        (
            "gateway_cache_semantic_hits_total",
            "Requests answered with the cached answer to a similar question (also hits).",
            c(|m| &m.semantic_hits),
        ),
        (
            "gateway_cache_semantic_misses_total",
            "Semantic lookups with no neighbour above the threshold.",
            c(|m| &m.semantic_misses),
        ),
        (
            "gateway_cache_semantic_refused_total",
            "Neighbours above the threshold that the guard refused.",
            c(|m| &m.semantic_refused),
        ),
        (
            "gateway_cache_semantic_timeouts_total",
            "Semantic lookups that timed out or failed (served upstream).",
            c(|m| &m.semantic_timeouts),
        ),
        (
            "gateway_cache_semantic_shadow_would_hit_total",
            "Shadow mode: requests that would have been semantic hits.",
            c(|m| &m.shadow_would_hit),
        ),
        (
            "gateway_cache_semantic_shadow_agreed_total",
            "Shadow mode: would-be hits whose cached answer agreed with the fresh one.",
            c(|m| &m.shadow_agreed),
        ),
        (
            "gateway_cache_semantic_shadow_disagreed_total",
            "Shadow mode: would-be hits whose cached answer disagreed with the fresh one.",
            c(|m| &m.shadow_disagreed),
        ),
    ] {
        counter(&mut out, name, help, v);
    }
    let ratio = if hits + misses == 0 {
        0.0
    } else {
        hits as f64 / (hits + misses) as f64
    };
    let _ = writeln!(
        out,
        "# HELP gateway_cache_hit_ratio Hits over hits and misses since start.\n# TYPE gateway_cache_hit_ratio gauge\ngateway_cache_hit_ratio {ratio:.6}"
    );
    let (agreed, disagreed) = (c(|m| &m.shadow_agreed), c(|m| &m.shadow_disagreed));
    let agreement = if agreed + disagreed == 0 {
        0.0
    } else {
        agreed as f64 / (agreed + disagreed) as f64
    };
    let _ = writeln!(
        out,
        "# HELP gateway_cache_semantic_shadow_agreement_ratio Shadow mode: would-be hits whose answers agreed, over those compared.\n# TYPE gateway_cache_semantic_shadow_agreement_ratio gauge\ngateway_cache_semantic_shadow_agreement_ratio {agreement:.6}"
    );
    gauge(
        &mut out,
        "gateway_cache_entries",
        "Entries in the response cache.",
        shards.iter().map(|s| s.cache.entries.get()).sum(),
    );
    gauge(
        &mut out,
        "gateway_cache_bytes",
        "Bytes held by the response cache (entry weight).",
        shards.iter().map(|s| s.cache.bytes.get()).sum(),
    );
    out.push_str("# HELP gateway_limit_refusals_total Requests refused by a rate limit or budget.\n# TYPE gateway_limit_refusals_total counter\n");
    for (si, scope) in super::labels::LIMIT_SCOPES.iter().enumerate() {
        for (mi, measure) in super::labels::LIMIT_MEASURES.iter().enumerate() {
            let n = sum(shards, |s| s.limit_refusals[si][mi].get());
            if n > 0 {
                let _ = writeln!(
                    out,
                    "gateway_limit_refusals_total{{scope=\"{scope}\",measure=\"{measure}\"}} {n}"
                );
            }
        }
    }
    let control = &reg.control;
    out.push_str("# HELP gateway_budget_thresholds_total Budget thresholds crossed, by action.\n# TYPE gateway_budget_thresholds_total counter\n");
    for (i, action) in ["alert", "throttle", "restrict", "block"]
        .iter()
        .enumerate()
    {
        let _ = writeln!(
            out,
            "gateway_budget_thresholds_total{{action=\"{action}\"}} {}",
            control.thresholds_fired[i].get()
        );
    }
    counter(
        &mut out,
        "gateway_budget_webhook_failures_total",
        "Threshold alert webhooks that failed.",
        control.webhook_failures.get(),
    );
    counter(
        &mut out,
        "gateway_lease_grants_total",
        "Lease grants the budgeter made to shards.",
        control.lease_grants.get(),
    );
    counter(
        &mut out,
        "gateway_lease_reclaims_total",
        "Times the budgeter asked shards to give unused lease units back.",
        control.lease_reclaims.get(),
    );
    counter(
        &mut out,
        "gateway_redis_ops_total",
        "Redis operations of the budgeter that were answered.",
        control.redis_ops.get(),
    );
    counter(
        &mut out,
        "gateway_redis_errors_total",
        "Redis operations of the budgeter that failed or timed out.",
        control.redis_errors.get(),
    );
    gauge(
        &mut out,
        "gateway_cache_semantic_entries",
        "Texts in the semantic cache's index.",
        control.semantic_entries.get(),
    );
    counter(
        &mut out,
        "gateway_cache_semantic_evicted_total",
        "Texts the semantic index dropped to stay within its bound.",
        control.semantic_evicted.get(),
    );
    counter(
        &mut out,
        "gateway_cache_semantic_embedded_total",
        "Texts the local encoder embedded.",
        control.semantic_embedded.get(),
    );
    counter(
        &mut out,
        "gateway_cache_semantic_errors_total",
        "Failures of the local encoder or the semantic index.",
        control.semantic_errors.get(),
    );
    out.push_str("# HELP gateway_team_spend_usd_total Spend settled per team (at most 64 teams; the rest as _other).\n# TYPE gateway_team_spend_usd_total counter\n");
    for (team, nano) in control.team_spend.load().iter() {
        let _ = writeln!(
            out,
            "gateway_team_spend_usd_total{{team=\"{team}\"}} {}",
            crate::budget::Cost(*nano).usd()
        );
    }
    out.push_str("# HELP gateway_redis_up 1 while the shared Redis answers.\n# TYPE gateway_redis_up gauge\n");
    let _ = writeln!(out, "gateway_redis_up {}", control.redis_up.get());
    out.push_str("# HELP gateway_redis_op_seconds Redis operation latency.\n# TYPE gateway_redis_op_seconds histogram\n");
    write_hist(
        &mut out,
        "gateway_redis_op_seconds",
        "",
        control.redis_latency.snapshot(),
    );
    counter(
        &mut out,
        "gateway_panics_total",
        "Panics caught while handling requests.",
        sum(shards, |s| s.panics.get()),
    );

    out.push_str("# HELP gateway_shard_requests_total Requests answered per shard.\n# TYPE gateway_shard_requests_total counter\n");
    for (i, s) in shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "gateway_shard_requests_total{{shard=\"{i}\"}} {}",
            s.total_requests()
        );
    }
    out.push_str("# HELP gateway_shard_open_connections Open downstream connections per shard.\n# TYPE gateway_shard_open_connections gauge\n");
    for (i, s) in shards.iter().enumerate() {
        let _ = writeln!(
            out,
            "gateway_shard_open_connections{{shard=\"{i}\"}} {}",
            s.connections.get()
        );
    }

    let _ = writeln!(
        out,
        "# HELP gateway_score_table_version Version of the score table this shard holds.\n# TYPE gateway_score_table_version gauge\ngateway_score_table_version {}",
        scores.version
    );
    let deployments = &scores.deployments;
    out.push_str("# HELP gateway_deployment_latency_ewma_seconds EWMA latency of successful attempts.\n# TYPE gateway_deployment_latency_ewma_seconds gauge\n");
    for s in deployments {
        if let Some(ms) = s.latency_ewma_ms {
            let _ = writeln!(
                out,
                "gateway_deployment_latency_ewma_seconds{{deployment=\"{}\"}} {}",
                s.id,
                ms / 1e3
            );
        }
    }
    out.push_str("# HELP gateway_deployment_success_ratio Success ratio over the scorer window.\n# TYPE gateway_deployment_success_ratio gauge\n");
    for s in deployments {
        let _ = writeln!(
            out,
            "gateway_deployment_success_ratio{{deployment=\"{}\"}} {}",
            s.id, s.success_ratio
        );
    }
    out.push_str("# HELP gateway_deployment_score Blended deployment score (0..1, higher is better).\n# TYPE gateway_deployment_score gauge\n");
    for s in deployments {
        let _ = writeln!(
            out,
            "gateway_deployment_score{{deployment=\"{}\"}} {}",
            s.id, s.score
        );
    }
    out.push_str("# HELP gateway_deployment_breaker_state Circuit breaker merged over all shards (0 closed, 1 half-open, 2 open).\n# TYPE gateway_deployment_breaker_state gauge\n");
    for s in deployments {
        let _ = writeln!(
            out,
            "gateway_deployment_breaker_state{{deployment=\"{}\"}} {}",
            s.id,
            s.breaker.gauge()
        );
    }
    out.push_str("# HELP gateway_deployment_ejections_total Times the merged circuit breaker opened.\n# TYPE gateway_deployment_ejections_total counter\n");
    for s in deployments {
        let _ = writeln!(
            out,
            "gateway_deployment_ejections_total{{deployment=\"{}\"}} {}",
            s.id, s.ejections
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn aggregates_over_shards() {
        let reg = Registry::new(2, vec!["p".into()], vec!["m".into()], vec!["p/m".into()]);
        reg.shards[0].request(Route::ChatCompletions, 200, Duration::from_millis(1));
        reg.shards[1].request(Route::ChatCompletions, 200, Duration::from_millis(2));
        reg.shards[1].request(Route::ChatCompletions, 502, Duration::from_millis(2));
        reg.shards[0].providers[0].input_tokens.add(5);
        reg.shards[0].deployments[0].attempts[UpstreamOutcome::Ok as usize].inc();
        reg.shards[1].deployments[0].attempts[UpstreamOutcome::Ok as usize].inc();
        reg.shards[1].deployments[0].attempts[UpstreamOutcome::Timeout as usize].inc();
        reg.shards[0].models[0].queued.inc();
        reg.shards[1].models[0].queued.inc();
        reg.shards[1].models[0]
            .queue_wait
            .observe(Duration::from_millis(20));
        let text = render(&reg, &ScoreTable::default());
        for line in [
            "gateway_deployment_attempts_total{deployment=\"p/m\",outcome=\"ok\"} 2\n",
            "gateway_deployment_attempts_total{deployment=\"p/m\",outcome=\"timeout\"} 1\n",
            "gateway_queue_depth{model=\"m\"} 2\n",
            "gateway_queue_wait_seconds_count{model=\"m\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(
            text.contains("gateway_requests_total{route=\"chat_completions\",status=\"200\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("gateway_requests_total{route=\"chat_completions\",status=\"502\"} 1\n")
        );
        assert!(text.contains("gateway_shard_requests_total{shard=\"0\"} 1\n"));
        assert!(text.contains("gateway_shard_requests_total{shard=\"1\"} 2\n"));
        assert!(text.contains("gateway_tokens_total{provider=\"p\",direction=\"input\"} 5\n"));
        assert!(
            text.contains("gateway_request_duration_seconds_count{route=\"chat_completions\"} 3\n")
        );
    }

    #[test]
    fn the_score_table_in_deployment_order_with_breakers() {
        use crate::DeploymentId;
        use crate::routing::breaker::BreakerState;
        use crate::scoring::{BreakerView, DeploymentInfo, DeploymentStats, Weights};
        use std::time::Instant;

        let reg = Registry::new(1, vec!["p".into()], vec!["m".into()], vec!["p/m".into()]);
        let infos: Vec<DeploymentInfo> = ["p/b", "p/a"]
            .iter()
            .map(|id| DeploymentInfo {
                id: DeploymentId((*id).into()),
                io_price_pico_usd: None,
                quality: None,
                models: vec![crate::ModelIdx(0)],
            })
            .collect();
        let now = Instant::now();
        let views = [
            BreakerView {
                state: BreakerState::Open,
                open_until: Some(now + Duration::from_secs(5)),
                ejections: 2,
            },
            BreakerView::default(),
        ];
        let mut stats = vec![DeploymentStats::default(); 2];
        let table = ScoreTable::compute(3, &infos, &mut stats, &views, Weights::default(), 1, now);
        let text = render(&reg, &table);
        for line in [
            "gateway_score_table_version 3\n",
            "gateway_deployment_breaker_state{deployment=\"p/b\"} 2\n",
            "gateway_deployment_breaker_state{deployment=\"p/a\"} 0\n",
            "gateway_deployment_ejections_total{deployment=\"p/b\"} 2\n",
            "gateway_deployment_success_ratio{deployment=\"p/a\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
        let (b, a) = (
            text.find("gateway_deployment_score{deployment=\"p/b\"}"),
            text.find("gateway_deployment_score{deployment=\"p/a\"}"),
        );
        assert!(b.is_some() && b < a, "{text}");
    }
}
