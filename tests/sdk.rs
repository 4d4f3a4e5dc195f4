#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#![allow(
    clippy::disallowed_methods,
    reason = "test clients run on plain threads, not shards"
)]
//! The official `openai` and `anthropic` Python SDKs (from PyPI) as real clients, in both
//! dialects and across provider kinds (translated and relayed). Missing SDK = failure.
//!
//! The scripts under `tests/sdk/` print one line per check and `N passed, M failed`; to rerun
//! one by hand, start a gateway with [`dialects_config`] and pass the arguments their
//! docstrings name.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::*;

/// Run one script under `tests/sdk/` with `args`; fail the test with its whole output unless
/// every check passed.
fn run_script(script: &str, args: &[String]) {
    let path = format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Shown with `--nocapture`.
    println!("{script} {args:?}\n{stdout}");
    assert!(
        out.status.success() && stdout.contains("passed, 0 failed"),
        "{script} {args:?}: checks failed (are `openai` and `anthropic` installed? .ci/run \
         installs them)\n{stdout}\n{stderr}"
    );
}

/// The upstream names every SDK script expects, as `<prefix>-<suffix>`.
const SCRIPT_MODELS: [(&str, &str); 6] = [
    ("mock", "mock"),
    ("chunks", "mock;chunks=5"),
    ("usage", "mock;cached_tokens=4;reasoning_tokens=3"),
    ("429", "mock;status=429"),
    ("500", "mock;status=500"),
    ("cut", "mock;error_after=2"),
];

/// Three providers of three kinds on one mock: `up` (OpenAI), `claude` (Anthropic) and `gem`
/// (Gemini), with [`SCRIPT_MODELS`] on each as `gpt-*`, `claude-*` and `gemini-*`.
fn dialects_config(mock: SocketAddr) -> String {
    let mut extra = provider("claude", "anthropic", mock) + &provider("gem", "gemini", mock);
    for (prefix, provider) in [("gpt", "up"), ("claude", "claude"), ("gemini", "gem")] {
        for (suffix, upstream) in SCRIPT_MODELS {
            // `gpt-mock` is in `upstream_config` already.
            if (prefix, suffix) != ("gpt", "mock") {
                extra += &model_on(provider, &format!("{prefix}-{suffix}"), upstream);
            }
        }
    }
    upstream_config(mock, &extra)
}

/// Start a mock and a gateway on [`dialects_config`], then run `script` with the gateway's
/// root, the mock probe, `prefix` and the mock's address.
fn run_against(script: &str, prefix: &str) {
    let mock = mock();
    let gw = Gateway::start(&dialects_config(mock.addr), ONE_SHARD);
    with_probe(&mock, |probe| {
        let args = [
            format!("http://{}", gw.addr),
            probe.to_string(),
            prefix.to_owned(),
            mock.addr.to_string(),
        ];
        run_script(script, &args);
    });
}

#[test]
fn openai_sdk_on_anthropic_upstream() {
    run_against("openai_sdk_dialects.py", "claude");
}

#[test]
fn openai_sdk_on_gemini_upstream() {
    run_against("openai_sdk_dialects.py", "gemini");
}

#[test]
fn anthropic_sdk_on_openai_upstream() {
    run_against("anthropic_sdk.py", "gpt");
}

#[test]
fn anthropic_sdk_relays_anthropic_upstream_untouched() {
    run_against("anthropic_sdk.py", "claude");
}

#[test]
fn openai_python_sdk_round_trips() {
    let mock = mock();
    let extra = model("broken", "mock;status=500") + &model("flaky", "mock;reset_after=3");
    let gw = Gateway::start(&upstream_config(mock.addr, &extra), TWO_SHARDS);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk.py");
    let out = Command::new("python3")
        .args([script, &format!("http://{}/v1", gw.addr)])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai SDK checks failed (is `pip install openai` done? .ci/run installs it)\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("passed, 0 failed"), "{stdout}");
}

#[test]
fn openai_python_sdk_sees_no_failure_while_one_of_two_deployments_is_down() {
    let live = mock();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead); // nothing listens there now: connections are refused
    // Round robin sends every other first attempt to the dead deployment, and the breaker
    // never ejects it, so half the calls need a failover.
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n{}{}\
         [models.m]\nstrategy = \"round_robin\"\n\
         [[models.m.deployments]]\nid = \"down\"\nprovider = \"dead\"\nmodel = \"mock\"\n\
         [[models.m.deployments]]\nid = \"up\"\nprovider = \"live\"\nmodel = \"mock\"\n\
         [routing]\nbackoff_base_ms = 1\nbackoff_max_ms = 5\nretry_budget_ratio = 1.0\n\
         [routing.breaker]\nconsecutive_failures = 1000\nmin_volume = 100000\n",
        provider("dead", "openai", dead_addr),
        provider("live", "openai", live.addr),
    );
    let gw = Gateway::start(&cfg, ONE_SHARD);
    let n = 20;
    run_script(
        "openai_sdk_failover.py",
        &[
            format!("http://{}/v1", gw.addr),
            "m".into(),
            "up".into(),
            n.to_string(),
        ],
    );
    assert_eq!(live.requests(), 2 * n);
    // Every other call tried the dead deployment first.
    assert!(
        gw.metric("gateway_retries_total") >= n as f64,
        "{}",
        gw.stderr()
    );
}

/// Cached answers that were translated, read back by both SDKs: the OpenAI SDK on an
/// Anthropic upstream and the Anthropic SDK on an OpenAI upstream, streamed and whole.
#[test]
fn both_sdks_parse_translated_cache_hits() {
    let mock = mock();
    let extra = String::from("cache_ttl_s = 60\n")
        + &provider("claude", "anthropic", mock.addr)
        + &model_on("claude", "claude-mock", "mock")
        + "cache_ttl_s = 60\n";
    let gw = Gateway::start(&upstream_config(mock.addr, &extra), TWO_SHARDS);
    run_script("cache_sdk.py", &[format!("http://{}", gw.addr)]);
    assert_eq!(
        mock.requests(),
        2,
        "one upstream call per SDK, the rest from the cache"
    );
}

/// A virtual key's secret for tests: `sk-sg-`, `tag`, padded to 49 characters like a
/// generated one.
fn key_secret(tag: &str) -> String {
    format!("{:x<49}", format!("sk-sg-{tag}"))
}

/// A `[[auth.keys]]` entry for `secret`, stored as its hash.
fn auth_key(id: &str, secret: &str, extra: &str) -> String {
    format!(
        "[[auth.keys]]\nid = \"{id}\"\nhash = \"{}\"\n{extra}\n",
        shardgate::auth::key::hash(secret)
    )
}

/// Both SDKs with virtual keys: a key without limits is answered (whole and streamed), an
/// unknown key is the SDK's `AuthenticationError`, and a key with `rpm = 3` (exact) gets
/// three answers with counting-down `x-ratelimit-*` headers, then `RateLimitError` with
/// `Retry-After`, which the openai SDK's own retries honour. Each SDK has its own limited
/// key, so the two do not share a window.
#[test]
fn sdks_with_virtual_keys_and_rate_limits() {
    let mock = mock();
    let (open, oa_limited, an_limited) = (
        key_secret("open"),
        key_secret("oa-limited"),
        key_secret("an-limited"),
    );
    let limited = "limits = { rpm = 3 }";
    let extra = format!(
        "[limits]\nexact = true\n\n[auth]\n{}{}{}",
        auth_key("open", &open, ""),
        auth_key("oa-limited", &oa_limited, limited),
        auth_key("an-limited", &an_limited, limited),
    );
    let gw = Gateway::start(&upstream_config(mock.addr, &extra), TWO_SHARDS);
    run_script(
        "keys_sdk.py",
        &[format!("http://{}", gw.addr), open, oa_limited, an_limited],
    );
}
