#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#![allow(
    clippy::disallowed_methods,
    reason = "test clients run on plain threads, not shards"
)]
//! The scorer: outcomes batched from shards, snapshots published back, visible at
//! `/admin/scores` and in `/metrics`.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn score_table_reflects_a_slow_and_a_fast_upstream() {
    let mock = mock();
    let extra = &model("slow", "mock;latency_ms=120");
    let gw = Gateway::start(&upstream_config(mock.addr, extra), TWO_SHARDS);
    for i in 0..12 {
        assert_eq!(gw.chat("gpt-mock", &format!("f{i}"), false).status, 200);
        assert_eq!(gw.chat("slow", &format!("s{i}"), i % 2 == 0).status, 200);
    }
    let n = |t: &serde_json::Value, d: &str| t["deployments"][d]["window_samples"].as_u64();
    let table = scores_until(&gw, |t| {
        n(t, "up/mock") >= Some(12) && n(t, "up/mock;latency_ms=120") >= Some(12)
    });
    let fast = &table["deployments"]["up/mock"];
    let slow = &table["deployments"]["up/mock;latency_ms=120"];
    let (f, s) = (
        fast["latency_ewma_ms"].as_f64().unwrap(),
        slow["latency_ewma_ms"].as_f64().unwrap(),
    );
    assert!(s >= 120.0, "slow EWMA {s}");
    assert!(f < s / 2.0, "fast EWMA {f} vs slow {s}");
    assert!(fast["score"].as_f64().unwrap() > slow["score"].as_f64().unwrap());
    assert_eq!(fast["success_ratio"], 1.0);
    assert_eq!(fast["trusted"], true);
    // The same table is in /metrics.
    let m = gw.get("/metrics").text();
    assert!(
        m.contains(
            "gateway_deployment_latency_ewma_seconds{deployment=\"up/mock;latency_ms=120\"}"
        ),
        "{m}"
    );
    assert!(gw.metric("gateway_score_table_version") >= 1.0);
}

/// Poll `/admin/scores` until `done` holds, for at most 10 s.
fn scores_until(gw: &Gateway, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = gw.get("/admin/scores").json();
        if done(&t) {
            return t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "scores never caught up: {t}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_deployment_failing_everything_scores_zero() {
    let mock = mock();
    let extra = &model("bad", "mock;status=503");
    let gw = Gateway::start(&upstream_config(mock.addr, extra), ONE_SHARD);
    for _ in 0..4 {
        gw.chat("bad", "x", false)
            .assert_error(502, "upstream_status");
        assert_eq!(gw.chat("gpt-mock", "y", false).status, 200);
    }
    let n = |t: &serde_json::Value, d: &str| t["deployments"][d]["window_samples"].as_u64();
    let t = scores_until(&gw, |t| {
        n(t, "up/mock;status=503") >= Some(4) && n(t, "up/mock") >= Some(4)
    });
    let bad = &t["deployments"]["up/mock;status=503"];
    let good = &t["deployments"]["up/mock"];
    assert_eq!(bad["success_ratio"], 0.0, "{t}");
    // No latency sample, only failures: the worst latency term, and a score of nothing.
    assert_eq!(bad["latency_ewma_ms"], serde_json::Value::Null, "{t}");
    assert_eq!(bad["terms"]["latency"], 0.0, "{t}");
    assert_eq!(bad["score"], 0.0, "{t}");
    assert!(good["score"].as_f64().unwrap() > 0.5, "{t}");
    // The only deployment of its model: never ejected, however it fails.
    assert_eq!(bad["breaker"], "closed", "{t}");
    assert_eq!(bad["ejections"], 0, "{t}");
    assert_eq!(
        gw.metric("gateway_deployment_breaker_state{deployment=\"up/mock;status=503\"}"),
        0.0
    );
}

#[test]
fn the_scorer_ejects_a_failing_deployment_that_has_a_healthy_sibling() {
    let mock = mock();
    // Round robin keeps sending first attempts to the failing one (the default,
    // lowest_latency, would leave it after its first failure, before the breaker's five).
    let extra = r#"
[models.pair]
strategy = "round_robin"
[[models.pair.deployments]]
provider = "up"
model = "mock;status=500"
[[models.pair.deployments]]
provider = "up"
model = "mock"
"#;
    let gw = Gateway::start(&upstream_config(mock.addr, extra), TWO_SHARDS);
    // Enough failures for the default breaker (5 in a row), whether or not it fails over.
    for i in 0..20 {
        gw.chat("pair", &format!("p{i}"), false);
    }
    let ejections = |t: &serde_json::Value, d: &str| t["deployments"][d]["ejections"].as_u64();
    let t = scores_until(&gw, |t| ejections(t, "up/mock;status=500") >= Some(1));
    let healthy = &t["deployments"]["up/mock"];
    assert_eq!(healthy["ejections"], 0, "{t}");
    assert_eq!(healthy["breaker"], "closed", "{t}");
    assert_ne!(
        t["deployments"]["up/mock;status=500"]["breaker"], "closed",
        "{t}"
    );
    assert!(
        gw.metric("gateway_deployment_ejections_total{deployment=\"up/mock;status=500\"}") >= 1.0
    );
}
