//! Virtual keys, rate limits and budgets end to end: the gateway as a real process with two
//! shards, the mock as its upstream, many client connections at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::net::SocketAddr;

use common::*;

fn chat_as(gw: &Gateway, key: &str, model: &str) -> Resp {
    post_with_key(
        gw.addr,
        "/v1/chat/completions",
        key,
        &chat_body(model, "hello", false),
    )
}

fn messages_body(model: &str) -> String {
    format!(
        r#"{{"model":"{model}","max_tokens":16,"messages":[{{"role":"user","content":"hi"}}]}}"#
    )
}

/// An Anthropic-shaped error of this type.
fn assert_anthropic_error(res: &Resp, status: u16, kind: &str) {
    assert_eq!(res.status, status, "{}", res.text());
    let v = res.json();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], kind, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
}

/// `n` chat requests for `model` with `key`, all at once.
fn burst_chats(addr: SocketAddr, n: usize, key: &str, model: &'static str) -> Vec<Resp> {
    let key = key.to_owned();
    burst(addr, n, move |addr, _| {
        post_with_key(
            addr,
            "/v1/chat/completions",
            &key,
            &chat_body(model, "hi", false),
        )
    })
}

#[test]
fn keys_admit_and_refuse_in_the_clients_dialect() {
    let up = mock();
    let (good, revoked, expired, narrow) = (
        secret("good"),
        secret("revoked"),
        secret("expired"),
        secret("narrow"),
    );
    let cfg = upstream_config(
        up.addr,
        &format!(
            "{}\n{}\n{}\n{}\n{}",
            model("other", "mock"),
            key("good", &good, "team = \"research\""),
            key("revoked", &revoked, "revoked = true"),
            key("expired", &expired, "expires_at_unix = 1000"),
            key("narrow", &narrow, "models = [\"other\"]"),
        ),
    )
    .replace("[models.gpt-mock]", "[auth]\n\n[models.gpt-mock]");
    let gw = Gateway::start(&cfg, TWO_SHARDS);

    // No key: 401 in both dialects.
    gw.chat("gpt-mock", "hi", false)
        .assert_error(401, "unauthorized");
    let res = gw.post("/v1/messages", &messages_body("gpt-mock"));
    assert_anthropic_error(&res, 401, "authentication_error");

    // Wrong, revoked and expired keys: 401, and the body never quotes what was sent.
    for k in [secret("wrong"), revoked.clone(), expired.clone()] {
        let res = chat_as(&gw, &k, "gpt-mock");
        res.assert_error(401, "unauthorized");
        assert!(!res.text().contains(&k), "{}", res.text());
        assert!(!res.text().contains("sk-sg-"), "{}", res.text());
    }
    let res = chat_as(&gw, &revoked, "gpt-mock");
    assert!(res.text().contains("revoked"), "{}", res.text());

    // The good key works, as a bearer and as x-api-key on the Anthropic route.
    assert_eq!(chat_as(&gw, &good, "gpt-mock").status, 200);
    let res = request(
        gw.addr,
        "POST",
        "/v1/messages",
        &[("content-type", "application/json"), ("x-api-key", &good)],
        messages_body("gpt-mock").as_bytes(),
    );
    assert_eq!(res.status, 200, "{}", res.text());

    // A model the key may not use: 403, OpenAI- and Anthropic-shaped.
    let res = chat_as(&gw, &narrow, "gpt-mock");
    res.assert_error(403, "forbidden");
    assert!(
        res.text().contains("narrow"),
        "names the key id: {}",
        res.text()
    );
    assert_eq!(chat_as(&gw, &narrow, "other").status, 200);
    let res = post_with_key(gw.addr, "/v1/messages", &narrow, &messages_body("gpt-mock"));
    assert_anthropic_error(&res, 403, "permission_error");

    // Health, readiness and metrics need no key.
    assert_eq!(gw.get("/health").status, 200);
    let metrics = gw.get("/metrics").text();
    for k in [&good, &revoked, &expired, &narrow] {
        assert!(!metrics.contains(k.as_str()));
        assert!(!gw.stderr().contains(k.as_str()), "a key reached the log");
    }
}

/// Requests per minute across two shards, many connections at once: with `exact`, exactly
/// the limit is admitted; each refusal is a 429 with `Retry-After` and the quota headers.
#[test]
fn requests_per_minute_hold_exactly_across_shards() {
    let up = mock();
    let keys: Vec<String> = (0..3).map(|i| secret(&format!("rpm{i}"))).collect();
    let mut extra = String::from("[limits]\nexact = true\n\n[auth]\n");
    for (i, k) in keys.iter().enumerate() {
        extra.push_str(&key(&format!("k{i}"), k, "limits = { rpm = 20 }"));
    }
    let gw = Gateway::start(&upstream_config(up.addr, &extra), TWO_SHARDS);
    for k in &keys {
        let res = burst_chats(gw.addr, 120, k, "gpt-mock");
        let ok = res.iter().filter(|r| r.status == 200).count();
        assert_eq!(ok, 20, "admitted with rpm = 20 (exact)");
        for r in res.iter().filter(|r| r.status != 200) {
            r.assert_error(429, "rate_limited");
            let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "retry-after {retry}");
            assert_eq!(r.header("x-ratelimit-limit-requests"), Some("20"));
            assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
            assert!(r.header("x-ratelimit-reset-requests").is_some());
        }
        let admitted = res.iter().find(|r| r.status == 200).unwrap();
        assert_eq!(admitted.header("x-ratelimit-limit-requests"), Some("20"));
    }
    let refused = gw.metric("gateway_limit_refusals_total{scope=\"key\",measure=\"requests\"}");
    let waited = gw.metric("gateway_limit_wait_timeouts_total");
    assert_eq!(refused + waited, 300.0, "every refusal counted once");
}

/// Without `exact`, shards may borrow past their lease: the overshoot stays within the
/// written bound (shards × max(1, max/100)).
#[test]
fn requests_per_minute_overshoot_stays_in_its_bound() {
    let up = mock();
    let k = secret("loose");
    let extra = format!("[auth]\n{}", key("loose", &k, "limits = { rpm = 30 }"));
    let gw = Gateway::start(&upstream_config(up.addr, &extra), TWO_SHARDS);
    let res = burst_chats(gw.addr, 150, &k, "gpt-mock");
    let ok = res.iter().filter(|r| r.status == 200).count();
    let bound = 30 + 2; // 2 shards × borrow of max(1, 30/100)
    assert!((30..=bound).contains(&ok), "admitted {ok}, bound {bound}");
}

/// Concurrent requests: with two slots, two slow requests run and the rest are refused at
/// once; when they end the slots are free again.
#[test]
fn concurrency_limits_free_their_slots() {
    let up = mock();
    let k = secret("conc");
    let extra = format!(
        "{}\n[limits]\nexact = true\n\n[auth]\n{}",
        model("slow", "mock;latency_ms=400"),
        key("conc", &k, "limits = { max_concurrent = 2 }")
    );
    let gw = Gateway::start(&upstream_config(up.addr, &extra), TWO_SHARDS);
    let res = burst_chats(gw.addr, 8, &k, "slow");
    let ok = res.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 2, "two slots");
    for r in res.iter().filter(|r| r.status != 200) {
        r.assert_error(429, "rate_limited");
        assert!(r.text().contains("in flight"), "{}", r.text());
    }
    // The slots came back: within the 1 s `Retry-After` of the refusals, requests one
    // after the other pass again (on either shard).
    let mut passed = 0;
    poll_until(
        std::time::Duration::from_secs(5),
        "slots to come back",
        || {
            if chat_as(&gw, &k, "slow").status == 200 {
                passed += 1;
            }
            passed == 2
        },
    );
}

/// Per-user limits: each end user (the body's `user`, or the header) has its own window.
#[test]
fn each_end_user_has_their_own_limit() {
    let up = mock();
    let extra = "[limits]\nexact = true\nusers = { rpm = 2 }\n";
    let gw = Gateway::start(&upstream_config(up.addr, extra), TWO_SHARDS);
    let as_user = |user: &str| {
        request(
            gw.addr,
            "POST",
            "/v1/chat/completions",
            &[
                ("content-type", "application/json"),
                ("x-shardgate-user", user),
            ],
            chat_body("gpt-mock", "hi", false).as_bytes(),
        )
    };
    assert_eq!(as_user("ann").status, 200);
    assert_eq!(as_user("ann").status, 200);
    let third = as_user("ann");
    third.assert_error(429, "rate_limited");
    assert!(third.text().contains("user `ann`"), "{}", third.text());
    assert_eq!(as_user("bob").status, 200, "another user is not limited");
    // No user named: no per-user limit applies.
    for _ in 0..3 {
        assert_eq!(gw.chat("gpt-mock", "hi", false).status, 200);
    }
}

/// A spend cap reached by concurrent streamed requests: the spend charged is the priced usage
/// the mock reported, and refusals say `budget_exceeded`. A model without a price is never
/// blocked by a budget.
#[test]
fn budgets_charge_real_streamed_usage_and_block_at_the_cap() {
    let up = mock();
    let k = secret("spend");
    // At $10 / $20 per million tokens an answer of the mock costs well under a tenth of a
    // cent, and admission reserves about $0.0016 (the body's size, and 64 output tokens): a
    // $0.01 cap is reached after a dozen answers or so.
    let extra = format!(
        "price = {{ input = 10.0, output = 20.0 }}\n{}\n\
         [limits]\nexact = true\noutput_estimate_tokens = 64\n\n[auth]\n{}",
        model("free", "mock;latency_ms=0"),
        key("spend", &k, "limits = { spend_total_usd = 0.01 }")
    );
    let gw = Gateway::start(&upstream_config(up.addr, &extra), TWO_SHARDS);
    let mut admitted = 0;
    let mut refused = 0;
    for round in 0..20 {
        let key = k.clone();
        let res = burst(gw.addr, 4, move |addr, i| {
            let body = chat_body("gpt-mock", &format!("hello {round} {i}"), true);
            post_with_key(addr, "/v1/chat/completions", &key, &body)
        });
        for r in &res {
            match r.status {
                200 => {
                    admitted += 1;
                    assert!(r.text().contains("[DONE]"), "a whole stream");
                }
                _ => {
                    r.assert_error(429, "budget_exceeded");
                    assert!(r.text().contains("budget"), "{}", r.text());
                    refused += 1;
                }
            }
        }
        if refused > 8 {
            break;
        }
    }
    assert!(
        admitted > 0 && refused > 0,
        "admitted {admitted}, refused {refused}"
    );
    let spent = gw.metric("gateway_cost_usd_total{model=\"gpt-mock\"}");
    assert!(spent > 0.0);
    // Settled at the real usage; past the cap by at most the in-flight estimates' error
    // (4 requests at once here).
    let per = spent / f64::from(admitted);
    assert!(
        spent <= 0.01 + 4.0 * per + 1e-9,
        "spent ${spent} over a $0.01 cap ({admitted} answers of ~${per})"
    );
    // The unpriced model is not blocked by the used-up budget.
    assert_eq!(chat_as(&gw, &k, "free").status, 200);
}

/// JWT bearer tokens: verified once (HS256 here), claims mapped to team and user, the team's
/// limits applied; expired, forged and unknown-scheme tokens get a 401 that never quotes them.
#[test]
fn jwt_bearers_are_verified_and_limited_by_their_team() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let up = mock();
    let secret = "a-test-secret-of-at-least-32-bytes!!";
    let extra = "[limits]\nexact = true\n[limits.teams.blue]\nrpm = 3\n\n\
                 [auth]\n[auth.jwt]\nhs256_secret_env = \"TEST_JWT_SECRET\"\nissuer = \"idp\"\n";
    let gw = Gateway::start_with_env(
        &upstream_config(up.addr, extra),
        TWO_SHARDS,
        &[("TEST_JWT_SECRET", secret)],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |sub: &str, exp: u64, key: &str| {
        let claims = serde_json::json!({
            "sub": sub, "iss": "idp", "team": "blue", "exp": exp, "iat": now
        });
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let ann = token("ann", now + 600, secret);
    for _ in 0..3 {
        let r = chat_as(&gw, &ann, "gpt-mock");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The team's limit holds across its members.
    let bob = token("bob", now + 600, secret);
    let r = chat_as(&gw, &bob, "gpt-mock");
    r.assert_error(429, "rate_limited");
    assert!(r.text().contains("team `blue`"), "{}", r.text());
    for bad in [
        token("ann", now - 600, secret),
        token("ann", now + 600, "another-secret-of-at-least-32-bytes!"),
    ] {
        let r = chat_as(&gw, &bad, "gpt-mock");
        r.assert_error(401, "unauthorized");
        assert!(!r.text().contains(&bad), "{}", r.text());
    }
    assert!(!gw.stderr().contains(&ann), "a token reached the log");
}

/// A restart of a single node (no Redis) keeps the settled spend: a budget half used before
/// the restart is not whole again after it.
#[test]
fn a_restart_keeps_settled_spend() {
    let up = mock();
    let k = secret("restart");
    let dir = std::env::temp_dir().join(format!("shardgate-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let extra = format!(
        "price = {{ input = 10.0, output = 20.0 }}\n\
         [limits]\nexact = true\noutput_estimate_tokens = 64\n\n\
         [state]\ndir = \"{}\"\n\n[auth]\n{}",
        dir.display(),
        key("restart", &k, "limits = { spend_total_usd = 0.01 }")
    );
    let cfg = upstream_config(up.addr, &extra);
    let spend = |gw: &Gateway| gw.metric("gateway_cost_usd_total{model=\"gpt-mock\"}");

    let mut gw = Gateway::start(&cfg, TWO_SHARDS);
    for i in 0..6 {
        let r = post_with_key(
            gw.addr,
            "/v1/chat/completions",
            &k,
            &chat_body("gpt-mock", &format!("before {i}"), false),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let before = spend(&gw);
    gw.sigterm();
    assert!(
        gw.wait(std::time::Duration::from_secs(15)).is_some(),
        "drained and stopped"
    );

    let gw = Gateway::start(&cfg, TWO_SHARDS);
    let mut after = 0;
    for i in 0..40 {
        let r = post_with_key(
            gw.addr,
            "/v1/chat/completions",
            &k,
            &chat_body("gpt-mock", &format!("after {i}"), false),
        );
        match r.status {
            200 => after += 1,
            _ => {
                r.assert_error(429, "budget_exceeded");
                break;
            }
        }
    }
    let total = before + spend(&gw);
    let per = before / 6.0;
    assert!(
        total <= 0.01 + 1e-9,
        "spent ${total} in all against a $0.01 cap ({after} answers after the restart, ~${per} each)"
    );
    assert!(
        after < 40 && (0.01 - total) < 2.0 * 0.0016,
        "the budget was used up, not reset: {after} answers after the restart, ${total} in all"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Budget thresholds fire once each, at 80, 90, 95 and 100%: a log line, a metric, a webhook
/// POST on loopback; past 100% the key is blocked with `budget_exceeded`.
#[test]
fn budget_thresholds_fire_once_each_and_post_the_webhook() {
    let up = mock();
    let (hook, got) = webhook();
    let k = secret("thresholds");
    // An estimate of one output token: settlement charges more than was reserved, so the
    // settled spend itself walks up through every threshold.
    let extra = format!(
        "price = {{ input = 10.0, output = 20.0 }}\n\
         [limits]\noutput_estimate_tokens = 1\nwebhook_url = \"http://{hook}/budget\"\n\n\
         [auth]\n{}",
        key("thr", &k, "limits = { spend_total_usd = 0.01 }")
    );
    let gw = Gateway::start(&upstream_config(up.addr, &extra), TWO_SHARDS);
    // Walk the budget up until it is used up: each 429 must be `budget_exceeded`.
    let mut admitted = 0;
    let mut refused = 0;
    for i in 0..200 {
        let r = post_with_key(
            gw.addr,
            "/v1/chat/completions",
            &k,
            &chat_body("gpt-mock", &format!("walk {i}"), false),
        );
        if r.status == 429 {
            r.assert_error(429, "budget_exceeded");
            refused += 1;
            if refused >= 3 {
                break;
            }
            continue;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        admitted += 1;
    }
    assert!(
        admitted > 4 && refused >= 3,
        "admitted {admitted}, refused {refused}"
    );
    // Posted concurrently: in any order.
    let mut events: Vec<serde_json::Value> = (0..4)
        .map(|_| {
            got.recv_timeout(std::time::Duration::from_secs(5))
                .expect("four webhook posts")
        })
        .collect();
    events.sort_by_key(|e| e["at_percent"].as_u64());
    let rungs: Vec<(u64, String)> = events
        .iter()
        .map(|e| {
            (
                e["at_percent"].as_u64().unwrap(),
                e["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rungs,
        vec![
            (80, "alert".into()),
            (90, "throttle".into()),
            (95, "restrict".into()),
            (100, "block".into())
        ],
        "{events:?}"
    );
    for e in &events {
        assert_eq!(e["event"], "budget_threshold");
        assert_eq!(e["scope"]["kind"], "key");
        assert_eq!(e["scope"]["id"], "thr");
        assert!(!e.to_string().contains(&k), "no secret in the webhook");
    }
    for action in ["alert", "throttle", "restrict", "block"] {
        assert_eq!(
            gw.metric(&format!(
                "gateway_budget_thresholds_total{{action=\"{action}\"}}"
            )),
            1.0,
            "{action} fired once"
        );
    }
    assert!(
        got.recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "each threshold posts once"
    );
    // Blocked now, whatever the shard.
    for _ in 0..4 {
        chat_as(&gw, &k, "gpt-mock").assert_error(429, "budget_exceeded");
    }
}

/// A deployment's own limits (a provider account's): routing passes over a deployment at its
/// limit to the next one, exactly, and a model whose every deployment is at its limit gets a
/// 429 with `Retry-After`. No `[auth]`: these hold for an open gateway too.
#[test]
fn deployment_limits_route_around_a_limited_deployment() {
    let up = mock();
    let dep = |model: &str, id: &str| {
        format!(
            "[[models.{model}.deployments]]\nid = \"{id}\"\nprovider = \"up\"\nmodel = \"mock\"\n"
        )
    };
    let extra = format!(
        "\n[models.dl]\nstrategy = \"round_robin\"\n{}{}\n[models.only]\n{}\n\
         [limits]\nexact = true\n[limits.deployments.small]\nrpm = 5\n\
         [limits.deployments.lone]\nrpm = 3\n",
        dep("dl", "small"),
        dep("dl", "big"),
        dep("only", "lone"),
    );
    let gw = Gateway::start(&upstream_config(up.addr, &extra), TWO_SHARDS);
    let mut by_dep = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..24 {
        let r = gw.chat("dl", "hi", false);
        assert_eq!(r.status, 200, "{}", r.text());
        *by_dep
            .entry(r.header("x-shardgate-deployment").unwrap().to_owned())
            .or_default() += 1;
    }
    // Never past its limit; a dry lease is passed over rather than waited for while another
    // deployment can answer, so `small` may serve fewer than 5.
    let small = by_dep.get("small").copied().unwrap_or(0);
    assert!((1..=5).contains(&small), "{by_dep:?}");
    assert_eq!(
        small + by_dep.get("big").copied().unwrap_or(0),
        24,
        "{by_dep:?}"
    );
    let answers: Vec<Resp> = (0..5).map(|_| gw.chat("only", "hi", false)).collect();
    assert_eq!(answers.iter().filter(|r| r.status == 200).count(), 3);
    for r in answers.iter().filter(|r| r.status != 200) {
        r.assert_error(429, "rate_limited");
        assert!(r.text().contains("Every deployment"), "{}", r.text());
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "retry-after {retry}");
    }
    // The two refused requests at least (and the passes over `small` once it was spent).
    let counted =
        gw.metric("gateway_limit_refusals_total{scope=\"deployment\",measure=\"requests\"}");
    assert!(counted >= 2.0, "{counted}");
}
