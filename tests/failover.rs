#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#![allow(
    clippy::disallowed_methods,
    reason = "test clients run on plain threads, not shards"
)]
//! Routing over several deployments, end to end: real gateway, real sockets, several
//! `shardgate-mock`s with different fault profiles.

mod common;

use std::net::{SocketAddr, TcpListener};

use common::*;

/// A loopback address nothing listens on (bound, then released).
fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// A model `m` over the given upstream addresses, in order, with `extra` model settings.
fn config(ups: &[SocketAddr], extra: &str, routing: &str) -> String {
    let mut c = String::from("[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_ms = 2000\n\n");
    for (i, addr) in ups.iter().enumerate() {
        c.push_str(&format!(
            "[providers.p{i}]\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nprotocol = \"http1\"\nconnect_timeout_ms = 500\nfirst_byte_timeout_ms = 2000\n\n"
        ));
    }
    c.push_str(&format!("[models.m]\n{extra}\n"));
    for i in 0..ups.len() {
        c.push_str(&format!(
            "[[models.m.deployments]]\nid = \"d{i}\"\nprovider = \"p{i}\"\nmodel = \"mock\"\n\n"
        ));
    }
    c.push_str(routing);
    c
}

#[test]
fn a_deployment_refusing_connections_is_failed_over_for_every_request() {
    let good = mock();
    let cfg = config(
        &[dead_addr(), good.addr],
        "strategy = \"round_robin\"",
        "[routing]\nbackoff_base_ms = 1\nbackoff_max_ms = 5\n",
    );
    let gw = Gateway::start(&cfg, ONE_SHARD);
    for i in 0..20 {
        let res = gw.chat("m", &format!("hello {i}"), i % 2 == 0);
        assert_eq!(res.status, 200, "request {i}: {}", res.text());
        assert_eq!(res.header("x-shardgate-deployment"), Some("d1"));
    }
    assert_eq!(good.requests(), 20);
    assert!(gw.metric("gateway_retries_total") >= 1.0);
}

#[test]
fn an_upstream_500_is_retried_elsewhere_and_the_client_sees_200() {
    let bad = mock_with("status=500");
    let good = mock();
    let cfg = config(
        &[bad.addr, good.addr],
        "strategy = \"round_robin\"",
        "[routing]\nbackoff_base_ms = 1\nbackoff_max_ms = 5\n[routing.breaker]\nconsecutive_failures = 100\n",
    );
    let gw = Gateway::start(&cfg, ONE_SHARD);
    let mut two_attempts = 0;
    for i in 0..10 {
        let res = gw.chat("m", &format!("x{i}"), false);
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.header("x-shardgate-deployment"), Some("d1"));
        if res.header("x-shardgate-attempts") == Some("2") {
            two_attempts += 1;
        }
    }
    // Round robin sends half the first attempts to the failing one.
    assert_eq!(two_attempts, 5);
    assert_eq!(bad.requests(), 5);
    assert_eq!(good.requests(), 10);
    // Every attempt is in the metrics, by deployment and outcome.
    let attempts = |d: &str, outcome: &str| {
        gw.metric(&format!(
            "gateway_deployment_attempts_total{{deployment=\"{d}\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(attempts("d0", "status"), 5.0);
    assert_eq!(attempts("d1", "ok"), 10.0);
    assert_eq!(gw.metric("gateway_retries_total"), 5.0);
}

#[test]
fn a_429_goes_to_the_next_deployment_and_the_limited_one_rests_until_retry_after() {
    let limited = mock_with("status=429;retry_after=30");
    let good = mock();
    let cfg = config(
        &[limited.addr, good.addr],
        "strategy = \"round_robin\"",
        "[routing]\nbackoff_base_ms = 1\nbackoff_max_ms = 5\nretry_after_cap_ms = 60000\n",
    );
    let gw = Gateway::start(&cfg, ONE_SHARD);
    for i in 0..10 {
        let res = gw.chat("m", &format!("x{i}"), false);
        assert_eq!(res.status, 200, "{}", res.text());
    }
    assert_eq!(limited.requests(), 1, "tried once, then left alone");
    assert_eq!(good.requests(), 10);
}

#[test]
fn the_breaker_ejects_a_failing_deployment_and_never_the_last_healthy_one() {
    let bad = mock_with("status=500");
    let good = mock();
    let cfg = config(
        &[bad.addr, good.addr],
        "strategy = \"round_robin\"",
        "[routing]\nbackoff_base_ms = 1\nbackoff_max_ms = 5\n[routing.breaker]\nconsecutive_failures = 3\nbase_cooldown_ms = 60000\n",
    );
    let gw = Gateway::start(&cfg, ONE_SHARD);
    for i in 0..30 {
        assert_eq!(gw.chat("m", &format!("x{i}"), false).status, 200);
    }
    assert_eq!(bad.requests(), 3, "ejected after three failures");
    let routes = gw.get("/admin/routes").json();
    let rows = routes["models"]["m"]["deployments"]
        .as_array()
        .unwrap()
        .clone();
    let state = |id: &str| {
        rows.iter()
            .find(|r| r["deployment"] == id)
            .map(|r| (r["breaker"].clone(), r["skip"].clone()))
            .unwrap()
    };
    assert_eq!(state("d0").0, "open", "{routes}");
    assert_eq!(state("d0").1, "ejected");
    assert_eq!(state("d1").0, "closed");
    assert!(gw.metric("gateway_breaker_ejections_total") >= 1.0);
    // Now the healthy one fails too: it is the model's last, so it stays in.
    good.set_knobs(shardgate::mock::Knobs::parse("status=500").unwrap());
    for i in 0..10 {
        assert_eq!(gw.chat("m", &format!("y{i}"), false).status, 502);
    }
    let routes = gw.get("/admin/routes").json();
    let d1 = routes["models"]["m"]["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["deployment"] == "d1")
        .unwrap()
        .clone();
    assert_eq!(d1["breaker"], "closed", "{routes}");
}

#[test]
fn every_attempt_failing_gives_the_last_status_and_upstream_load_stays_within_the_budget() {
    let a = mock_with("status=503");
    let b = mock_with("status=503");
    let cfg = config(
        &[a.addr, b.addr],
        "",
        "[routing]\nmax_attempts = 3\nbackoff_base_ms = 1\nbackoff_max_ms = 2\nretry_budget_ratio = 0.2\nretry_budget_floor_per_sec = 1\n[routing.breaker]\nconsecutive_failures = 1000\nmin_volume = 100000\n",
    );
    let gw = Gateway::start(&cfg, ONE_SHARD);
    let n = 100;
    for i in 0..n {
        let res = gw.chat("m", &format!("x{i}"), false);
        res.assert_error(502, "upstream_status");
    }
    let upstream = a.requests() + b.requests();
    // 100 first attempts, plus at most 20% of them, plus the floor over the 10 s window.
    assert!(upstream >= n, "{upstream}");
    assert!(
        upstream <= n + n / 5 + 10 + 1,
        "{upstream} upstream attempts for {n} requests"
    );
    assert!(gw.metric("gateway_retry_budget_refused_total") >= 1.0);
}

#[test]
fn an_upstream_404_is_the_deployments_fault_and_fails_over() {
    let wrong = mock_with("status=404");
    let good = mock();
    let cfg = config(
        &[wrong.addr, good.addr],
        "strategy = \"round_robin\"",
        "[routing]\nbackoff_base_ms = 1\nbackoff_max_ms = 5\n",
    );
    let gw = Gateway::start(&cfg, ONE_SHARD);
    for i in 0..4 {
        let res = gw.chat("m", &format!("x{i}"), false);
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.header("x-shardgate-deployment"), Some("d1"));
    }
    assert!(wrong.requests() >= 1);
}

#[test]
fn context_window_and_content_policy_refusals_go_to_their_fallback_models() {
    let small = mock_with("error=context_window");
    let strict = mock_with("error=content_policy");
    let big = mock();
    let cfg = format!(
        r#"[server]
listen = "127.0.0.1:0"

[providers.small]
kind = "openai"
base_url = "http://{}/v1"
[providers.strict]
kind = "openai"
base_url = "http://{}/v1"
[providers.big]
kind = "openai"
base_url = "http://{}/v1"

[models.short]
provider = "small"
model = "mock"
context_window_fallbacks = ["long"]
[models.picky]
provider = "strict"
model = "mock"
content_policy_fallbacks = ["long"]
[models.alone]
provider = "small"
model = "mock"
[models.long]
provider = "big"
model = "mock"
"#,
        small.addr, strict.addr, big.addr
    );
    let gw = Gateway::start(&cfg, ONE_SHARD);
    let res = gw.chat("short", "a very long prompt", false);
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-shardgate-deployment"), Some("big/mock"));
    let res = gw.chat("picky", "something refused", true);
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-shardgate-deployment"), Some("big/mock"));
    assert_eq!(big.requests(), 2);
    // Without a fallback route, the provider's own refusal reaches the client as it is.
    let res = gw.chat("alone", "a very long prompt", false);
    assert_eq!(res.status, 400);
    assert!(
        res.text().contains("context_length_exceeded"),
        "{}",
        res.text()
    );
    assert_eq!(gw.metric("gateway_fallbacks_total"), 2.0);
}

#[test]
fn a_request_with_an_image_only_goes_to_deployments_with_vision() {
    let text_only = mock();
    let vision = mock();
    let cfg = config(
        &[text_only.addr, vision.addr],
        "strategy = \"round_robin\"",
        "",
    )
    .replace(
        "id = \"d0\"\nprovider = \"p0\"\nmodel = \"mock\"\n",
        "id = \"d0\"\nprovider = \"p0\"\nmodel = \"mock\"\nvision = false\n",
    );
    let gw = Gateway::start(&cfg, ONE_SHARD);
    let image = r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"what is this"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}]}"#;
    for _ in 0..4 {
        let res = gw.post("/v1/chat/completions", image);
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.header("x-shardgate-deployment"), Some("d1"));
    }
    // Plain text still spreads over both.
    for i in 0..4 {
        assert_eq!(gw.chat("m", &format!("x{i}"), false).status, 200);
    }
    assert_eq!(text_only.requests(), 2);
    assert_eq!(vision.requests(), 6);
}

/// Usage is priced at the deployment that answered: the same requests cost ten times more on
/// the deployment whose prices are ten times higher (the model's first deployment's price was
/// once charged for every answer).
#[test]
fn spend_is_priced_at_the_deployment_that_answered() {
    let (cheap, dear) = (mock(), mock());
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n{}\n{}\n[models.m]\nallow_pin = true\n\
         [[models.m.deployments]]\nid = \"cheap\"\nprovider = \"a\"\nmodel = \"mock\"\n\
         price = {{ input = 1.0, output = 2.0 }}\n\
         [[models.m.deployments]]\nid = \"dear\"\nprovider = \"b\"\nmodel = \"mock\"\n\
         price = {{ input = 10.0, output = 20.0 }}\n",
        provider("a", "openai", cheap.addr),
        provider("b", "openai", dear.addr),
    );
    let gw = Gateway::start(&cfg, ONE_SHARD);
    let spend = || gw.metric("gateway_cost_usd_total{model=\"m\"}");
    let send = |pin: &str| {
        for i in 0..5 {
            let body = chat_body("m", &format!("the same words {i}"), i % 2 == 0);
            let res = request(
                gw.addr,
                "POST",
                "/v1/chat/completions",
                &[
                    ("content-type", "application/json"),
                    ("x-shardgate-deployment", pin),
                ],
                body.as_bytes(),
            );
            assert_eq!(res.status, 200, "{}", res.text());
            assert_eq!(res.header("x-shardgate-deployment"), Some(pin));
        }
    };
    send("cheap");
    let on_cheap = spend();
    send("dear");
    let on_dear = spend() - on_cheap;
    assert!(on_cheap > 0.0, "usage was priced");
    let ratio = on_dear / on_cheap;
    assert!(
        (ratio - 10.0).abs() < 1e-6,
        "dear/cheap spend = {ratio} (expected 10)"
    );
}
