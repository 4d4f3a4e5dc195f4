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
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let table = loop {
        let t = gw.get("/admin/scores").json();
        let n = |d: &str| t["deployments"][d]["window_samples"].as_u64().unwrap_or(0);
        if n("up/mock") == 12 && n("up/mock;latency_ms=120") == 12 {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "scores never caught up: {t}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
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

#[test]
fn failures_lower_the_success_ratio() {
    let mock = mock();
    let extra = &model("bad", "mock;status=503");
    let gw = Gateway::start(&upstream_config(mock.addr, extra), ONE_SHARD);
    for _ in 0..4 {
        gw.chat("bad", "x", false)
            .assert_error(502, "upstream_status");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = gw.get("/admin/scores").json();
        let d = &t["deployments"]["up/mock;status=503"];
        if d["window_samples"] == 4 {
            assert_eq!(d["success_ratio"], 0.0, "{t}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{t}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
