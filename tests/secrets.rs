#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#![allow(
    clippy::disallowed_methods,
    reason = "test clients run on plain threads, not shards"
)]
//! Secret canaries (issue 10, defects 6 and 8): each provider gets a random canary API key,
//! and the mock echoes the request's credential headers in its error bodies and in-band
//! stream errors (knob `echo_auth`). The canary must appear in no response body or header,
//! no line of the gateway's log at `RUST_LOG=debug`, and not in `/metrics`. And a run of
//! failing upstream attempts writes a few rate-limited WARN lines while `/metrics` counts
//! every attempt.

mod common;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::Instant;

use serde_json::{Value, json};
use shardgate::mock::server::MockServer;

use common::*;

const KINDS: [&str; 3] = ["openai", "anthropic", "gemini"];

/// A fresh canary key per provider: `sk-canary-<kind>-<random hex>`.
fn canary(kind: &str) -> String {
    let mut h = RandomState::new().build_hasher();
    h.write(kind.as_bytes());
    format!("sk-canary-{kind}-{:016x}", h.finish())
}

struct Env {
    _mock: MockServer,
    gw: Gateway,
    canaries: Vec<String>,
}

/// One provider of each kind (each with its canary key) on one mock, and per kind the models
/// `<kind>-echo400`, `<kind>-echo401`, `<kind>-inband` (error after 2 events) whose upstream
/// errors echo the credentials. The gateway logs at debug.
fn start() -> Env {
    let mock = mock();
    let canaries: Vec<String> = KINDS.iter().map(|k| canary(k)).collect();
    let config = config(mock.addr);
    let vars: Vec<(String, String)> = KINDS
        .iter()
        .zip(&canaries)
        .map(|(k, c)| (format!("SG_CANARY_{}", k.to_uppercase()), c.clone()))
        .chain([("RUST_LOG".to_owned(), "debug".to_owned())])
        .collect();
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let gw = Gateway::start_with_env(&config, ONE_SHARD, &env);
    Env {
        _mock: mock,
        gw,
        canaries,
    }
}

fn config(mock: SocketAddr) -> String {
    let mut c = "[server]\nlisten = \"127.0.0.1:0\"\nheader_timeout_ms = 2000\n".to_owned();
    for kind in KINDS {
        c.push_str(&provider(kind, kind, mock));
        c.push_str(&format!(
            "api_key_env = \"SG_CANARY_{}\"\n",
            kind.to_uppercase()
        ));
        for (suffix, upstream) in [
            ("echo400", "mock;status=400;echo_auth=1"),
            ("echo401", "mock;status=401;echo_auth=1"),
            ("inband", "mock;error_after=2;echo_auth=1"),
        ] {
            c.push_str(&model_on(kind, &format!("{kind}-{suffix}"), upstream));
        }
    }
    c
}

impl Env {
    /// Assert that no canary is in `res` (body or headers).
    fn clean(&self, what: &str, res: &Resp) {
        for c in &self.canaries {
            assert!(
                !res.text().contains(c.as_str()),
                "{what}: the body carries a provider key: {}",
                res.text()
            );
            for (k, v) in &res.headers {
                assert!(!v.contains(c.as_str()), "{what}: header {k} carries a key");
            }
        }
    }

    /// Assert that the upstream really echoed a key, which the gateway blanked.
    fn redacted(&self, what: &str, res: &Resp) {
        self.clean(what, res);
        assert!(
            res.text().contains("[REDACTED]"),
            "{what}: the upstream's echo should be there, blanked: {}",
            res.text()
        );
    }

    /// Assert that no canary is in the log (debug level) or in `/metrics`.
    fn log_and_metrics_clean(&self) {
        // A request the gateway rejects logs at debug: proof that debug lines are on.
        assert_eq!(self.gw.get("/no-such-path").status, 404);
        let metrics = self.gw.get("/metrics").text();
        let log = self.gw.stderr();
        assert!(
            log.contains("DEBUG"),
            "the gateway logs at debug level: {log}"
        );
        for c in &self.canaries {
            assert!(!metrics.contains(c.as_str()), "/metrics carries a key");
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(c.as_str())).collect();
            assert!(lines.is_empty(), "the log carries a key: {lines:#?}");
        }
    }

    fn messages(&self, model: &str, stream: bool) -> Resp {
        let body = json!({"model": model, "max_tokens": 8, "stream": stream,
            "messages": [{"role": "user", "content": "a long enough message to stream"}]});
        request(
            self.gw.addr,
            "POST",
            "/v1/messages",
            &[
                ("content-type", "application/json"),
                ("x-api-key", "client-key"),
                ("anthropic-version", "2023-06-01"),
            ],
            body.to_string().as_bytes(),
        )
    }
}

#[test]
fn relayed_error_bodies_never_carry_a_provider_key() {
    let env = start();
    // OpenAI client, OpenAI upstream: the 400 body is relayed.
    let res = env.gw.chat("openai-echo400", "x", false);
    assert_eq!(res.status, 400, "{}", res.text());
    assert_eq!(res.header("x-shardgate-error"), None, "relayed");
    env.redacted("openai pass-through 400", &res);
    let v = res.json();
    assert!(v["error"]["message"].is_string(), "still valid JSON: {v}");
    // Anthropic client, Anthropic upstream: relayed too.
    let res = env.messages("anthropic-echo400", false);
    assert_eq!(res.status, 400, "{}", res.text());
    env.redacted("anthropic pass-through 400", &res);
    assert_eq!(res.json()["type"], "error");
    env.log_and_metrics_clean();
}

#[test]
fn translated_errors_never_carry_a_provider_key() {
    let env = start();
    for kind in ["anthropic", "gemini"] {
        let res = env.gw.chat(&format!("{kind}-echo400"), "x", false);
        res.assert_error(400, "bad_request");
        env.redacted(&format!("openai client, {kind} 400"), &res);
    }
    for kind in ["openai", "gemini"] {
        let res = env.messages(&format!("{kind}-echo400"), false);
        assert_eq!(res.status, 400, "{}", res.text());
        env.redacted(&format!("anthropic client, {kind} 400"), &res);
    }
    // 401s are never relayed: the client gets the gateway's own words, in both dialects.
    for kind in KINDS {
        let m = format!("{kind}-echo401");
        env.clean(&m, &env.gw.chat(&m, "x", false));
        env.clean(&m, &env.messages(&m, false));
    }
    env.log_and_metrics_clean();
}

#[test]
fn in_band_stream_errors_never_carry_a_provider_key() {
    let env = start();
    for kind in KINDS {
        let m = format!("{kind}-inband");
        let res = env.gw.chat(&m, "a long enough message to stream", true);
        assert_eq!(res.status, 200, "{m}: {}", res.text());
        let last: Value = serde_json::from_str(res.events().last().unwrap()).unwrap();
        assert!(last.get("error").is_some(), "{m}: {}", res.text());
        env.redacted(&format!("openai client, {m}"), &res);
        let res = env.messages(&m, true);
        assert_eq!(res.status, 200, "{m}: {}", res.text());
        assert!(res.text().contains("event: error"), "{m}: {}", res.text());
        env.redacted(&format!("anthropic client, {m}"), &res);
    }
    env.log_and_metrics_clean();
}

#[test]
fn embeddings_errors_never_carry_a_provider_key() {
    let env = start();
    for kind in ["openai", "gemini"] {
        for suffix in ["echo400", "echo401"] {
            let m = format!("{kind}-{suffix}");
            let res = env.gw.post(
                "/v1/embeddings",
                &json!({"model": m, "input": ["one", "two"]}).to_string(),
            );
            assert!(res.status >= 400, "{m}: {}", res.text());
            env.clean(&m, &res);
        }
    }
    // The OpenAI-compatible 400 is relayed: the echo is there, blanked.
    let res = env.gw.post(
        "/v1/embeddings",
        &json!({"model": "openai-echo400", "input": "x"}).to_string(),
    );
    assert_eq!(res.status, 400, "{}", res.text());
    env.redacted("openai embeddings 400", &res);
    env.log_and_metrics_clean();
}

#[test]
fn upstream_warnings_are_rate_limited_and_metrics_count_every_failure() {
    let mock = mock();
    let gw = Gateway::start(
        &upstream_config(mock.addr, &model("broken", "mock;status=500")),
        ONE_SHARD,
    );
    const N: usize = 200;
    let started = Instant::now();
    for _ in 0..N {
        gw.chat("broken", "x", false)
            .assert_error(502, "upstream_status");
    }
    let secs = started.elapsed().as_secs();
    let log = gw.stderr();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("Upstream failed."))
        .collect();
    // One key (provider `up`, kind upstream_status) on one shard: at most one line per
    // second of the run, plus the first.
    assert!(!warns.is_empty(), "the first failure is logged: {log}");
    assert!(
        warns.len() as u64 <= secs + 2,
        "{} WARN lines in {secs} s for {N} failures:\n{}",
        warns.len(),
        warns.join("\n")
    );
    if warns.len() > 1 {
        assert!(
            warns[1..].iter().all(|l| l.contains("suppressed")),
            "later lines say how many were suppressed: {warns:#?}"
        );
    }
    assert_eq!(
        gw.metric("gateway_upstream_requests_total{provider=\"up\",outcome=\"status\"}"),
        N as f64,
        "metrics count every failed attempt"
    );
    assert_eq!(
        gw.metric("gateway_errors_total{kind=\"upstream_status\"}"),
        N as f64
    );
}
