//! The admin API end to end: its own listener and token, keys made, used, narrowed and
//! revoked on a running two-shard gateway, and the main listener's admin routes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

const ADMIN_TOKEN: &str = "adm-test-0123456789abcdef0123456789abcdef";
/// The config file's key (declared by hash; the admin API cannot change it).
const CFG_KEY: &str = "sk-sg-config-key-0123456789abcdef0123456789abcdef";

/// Two models, `[auth]` with the config key `cfg`, and `admin` appended (the `[admin]`
/// section or nothing).
fn config(up: std::net::SocketAddr, admin: &str) -> String {
    let extra = format!(
        "{}\n[[auth.keys]]\nid = \"cfg\"\nhash = \"{}\"\n\n{admin}\n",
        model("other", "mock"),
        shardgate::auth::key::hash(CFG_KEY),
    );
    upstream_config(up, &extra).replace("[models.gpt-mock]", "[auth]\n\n[models.gpt-mock]")
}

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"SG_ADMIN_TOKEN\"\n";

fn start(up: std::net::SocketAddr) -> Gateway {
    Gateway::start_with_env(
        &config(up, ADMIN),
        TWO_SHARDS,
        &[("SG_ADMIN_TOKEN", ADMIN_TOKEN)],
    )
}

/// An admin request with this bearer token (`None`: no `Authorization`).
fn admin_as(gw: &Gateway, token: Option<&str>, method: &str, path: &str, body: &str) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    request(
        gw.admin.expect("the gateway has [admin]"),
        method,
        path,
        &headers,
        body.as_bytes(),
    )
}

fn admin(gw: &Gateway, method: &str, path: &str, body: &str) -> Resp {
    admin_as(gw, Some(ADMIN_TOKEN), method, path, body)
}

/// An admin API error of this status and code, shaped `{"error":{"message","type","code"}}`.
fn assert_admin_error(res: &Resp, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(res.status, status, "{}", res.text());
    let v = res.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["type"].is_string(), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    v
}

/// A chat request with a virtual key, on a fresh connection.
fn chat_as(gw: &Gateway, key: &str, model: &str) -> Resp {
    let auth = format!("Bearer {key}");
    request(
        gw.addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        chat_body(model, "hello", false).as_bytes(),
    )
}

/// The shard that answered (the request id is boot, shard, sequence in hex: 8 + 4 + 12).
fn shard_of(res: &Resp) -> String {
    res.header("x-request-id").unwrap()[8..12].to_owned()
}

/// Send `key` for `model` on fresh connections until every shard has answered `status` to
/// 16 requests in a row (at most 2 s): a key change is in force on the whole node.
fn until_every_shard_says(gw: &Gateway, key: &str, model: &str, status: u16, what: &str) {
    let mut streak = 0;
    let mut shards = BTreeSet::new();
    poll_until(Duration::from_secs(2), what, || {
        let res = chat_as(gw, key, model);
        if res.status == status {
            streak += 1;
            shards.insert(shard_of(&res));
        } else {
            streak = 0;
            shards.clear();
        }
        streak >= 16 && shards.len() == 2
    });
}

#[test]
fn every_admin_request_needs_the_admin_token() {
    let up = mock();
    let gw = start(up.addr);
    for token in [None, Some("wrong-token"), Some(CFG_KEY)] {
        for (method, path) in [
            ("GET", "/admin/keys"),
            ("POST", "/admin/keys"),
            ("GET", "/admin/keys/cfg"),
            ("POST", "/admin/keys/cfg/revoke"),
            ("GET", "/admin/scores"),
            ("GET", "/admin/nothing-here"),
        ] {
            let res = admin_as(&gw, token, method, path, "{}");
            assert_admin_error(&res, 401, "unauthorized");
            assert_eq!(res.header("www-authenticate"), Some("Bearer"));
        }
    }
    // A token one byte short or long is as wrong as any other.
    let res = admin_as(&gw, Some(&ADMIN_TOKEN[1..]), "GET", "/admin/keys", "");
    assert_admin_error(&res, 401, "unauthorized");
    let res = admin_as(
        &gw,
        Some(&format!("{ADMIN_TOKEN}x")),
        "GET",
        "/admin/keys",
        "",
    );
    assert_admin_error(&res, 401, "unauthorized");
    // Nothing was created by the refused POST.
    let keys = admin(&gw, "GET", "/admin/keys", "").json();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 1, "{keys}");

    // Unknown routes and methods, with the token.
    assert_admin_error(
        &admin(&gw, "GET", "/admin/nothing-here", ""),
        404,
        "not_found",
    );
    assert_admin_error(
        &admin(&gw, "DELETE", "/admin/keys", ""),
        405,
        "method_not_allowed",
    );

    // Bad bodies: 400 with serde's message, 413 over 64 KiB; nothing echoed of the token.
    let v = assert_admin_error(
        &admin(&gw, "POST", "/admin/keys", "{\"id\":"),
        400,
        "bad_request",
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("EOF"),
        "{v}"
    );
    let body = format!("{{\"id\":\"x\",\"token\":\"{ADMIN_TOKEN}\"}}");
    let res = admin(&gw, "POST", "/admin/keys", &body);
    let v = assert_admin_error(&res, 400, "bad_request");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `token`"),
        "{v}"
    );
    let body = format!("{{\"expires_at_unix\":\"{ADMIN_TOKEN}\"}}");
    let res = admin(&gw, "POST", "/admin/keys", &body);
    assert_admin_error(&res, 400, "bad_request");
    assert!(!res.text().contains(ADMIN_TOKEN), "{}", res.text());
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(70 * 1024));
    assert_admin_error(
        &admin(&gw, "POST", "/admin/keys", &big),
        413,
        "payload_too_large",
    );
    let v = assert_admin_error(
        &admin(&gw, "POST", "/admin/keys", "{\"id\":\"a b\"}"),
        400,
        "bad_request",
    );
    assert_eq!(v["error"]["param"], "id", "{v}");

    // Scores, as the main listener renders them.
    let res = admin(&gw, "GET", "/admin/scores", "");
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.json()["deployments"].is_object(), "{}", res.text());

    // The main listener's admin routes need the admin token when [auth] is set: not the
    // virtual key, not nothing.
    for path in ["/admin/scores", "/admin/routes"] {
        gw.get(path).assert_error(401, "unauthorized");
        let with = |token: &str| {
            let auth = format!("Bearer {token}");
            request(gw.addr, "GET", path, &[("authorization", &auth)], b"")
        };
        with(CFG_KEY).assert_error(401, "unauthorized");
        let res = with(ADMIN_TOKEN);
        assert_eq!(res.status, 200, "{path}: {}", res.text());
        assert!(res.json().is_object());
    }
    // The client API is not served on the admin listener.
    let res = request(gw.admin.unwrap(), "GET", "/v1/models", &[], b"");
    assert_admin_error(&res, 401, "unauthorized");
    assert!(!gw.stderr().contains(ADMIN_TOKEN));
}

#[test]
fn the_main_listeners_admin_routes_are_gone_without_admin_and_open_without_auth() {
    let up = mock();
    // [auth] without [admin]: not there.
    let gw = Gateway::start(&config(up.addr, ""), ONE_SHARD);
    assert!(gw.admin.is_none());
    for path in ["/admin/scores", "/admin/routes"] {
        gw.get(path).assert_error(404, "not_found");
        let auth = format!("Bearer {CFG_KEY}");
        request(gw.addr, "GET", path, &[("authorization", &auth)], b"")
            .assert_error(404, "not_found");
    }
    drop(gw);
    // No [auth]: open, as before.
    let gw = Gateway::start(&upstream_config(up.addr, ""), ONE_SHARD);
    for path in ["/admin/scores", "/admin/routes"] {
        assert_eq!(gw.get(path).status, 200, "{path}");
    }
}

#[test]
fn a_created_key_works_on_every_shard_until_revoked() {
    let up = mock();
    let gw = start(up.addr);
    let res = admin(
        &gw,
        "POST",
        "/admin/keys",
        r#"{"id":"ci","name":"CI runner","team":"research","metadata":{"owner":"ops"}}"#,
    );
    assert_eq!(res.status, 201, "{}", res.text());
    let made = res.json();
    let secret = made["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sk-sg-"), "{made}");
    let record = &made["record"];
    assert_eq!(record["id"], "ci");
    assert_eq!(record["team"], "research");
    assert_eq!(record["revoked"], false);
    assert!(record["hash"].as_str().unwrap().starts_with("sha256:"));
    assert!(record.get("key").is_none(), "{record}");
    assert!(!record.to_string().contains(&secret));

    // In force on both shards within one inbox hop.
    until_every_shard_says(
        &gw,
        &secret,
        "gpt-mock",
        200,
        "the new key works everywhere",
    );

    // Listed and read back without its secret.
    for path in ["/admin/keys", "/admin/keys/ci"] {
        let res = admin(&gw, "GET", path, "");
        assert_eq!(res.status, 200, "{}", res.text());
        assert!(!res.text().contains(&secret), "{}", res.text());
        assert!(res.text().contains("sha256:"), "{}", res.text());
    }
    let ids: Vec<String> = admin(&gw, "GET", "/admin/keys", "").json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["cfg", "ci"]);
    // The id is taken now.
    let res = admin(&gw, "POST", "/admin/keys", r#"{"id":"ci"}"#);
    assert_admin_error(&res, 409, "conflict");

    // Revoked: 401 on both shards, on fresh connections, within 2 s.
    let res = admin(&gw, "POST", "/admin/keys/ci/revoke", "");
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["revoked"], true);
    until_every_shard_says(
        &gw,
        &secret,
        "gpt-mock",
        401,
        "the revoked key fails everywhere",
    );
    let mut shards = BTreeSet::new();
    for _ in 0..20 {
        let res = chat_as(&gw, &secret, "gpt-mock");
        res.assert_error(401, "unauthorized");
        assert!(res.text().contains("revoked"), "{}", res.text());
        shards.insert(shard_of(&res));
    }
    assert_eq!(shards.len(), 2, "both shards answered: {shards:?}");
    assert_eq!(
        admin(&gw, "GET", "/admin/keys/ci", "").json()["revoked"],
        true
    );

    // The log names the key by id, never by its secret.
    let log = gw.stderr();
    assert!(log.contains("ci"), "{log}");
    assert!(!log.contains(&secret), "the secret is in the log");
    assert!(!log.contains(ADMIN_TOKEN), "the admin token is in the log");
}

#[test]
fn keys_are_narrowed_by_patch_and_config_keys_stay_as_declared() {
    let up = mock();
    let gw = start(up.addr);
    // No body: a key with a generated id.
    let res = admin(&gw, "POST", "/admin/keys", "");
    assert_eq!(res.status, 201, "{}", res.text());
    let made = res.json();
    let (secret, id) = (
        made["key"].as_str().unwrap().to_owned(),
        made["record"]["id"].as_str().unwrap().to_owned(),
    );
    assert!(id.starts_with("key_"), "{made}");
    until_every_shard_says(&gw, &secret, "other", 200, "the new key works everywhere");

    // Narrowed to one model: the other is a 403 everywhere.
    let path = format!("/admin/keys/{id}");
    let res = admin(&gw, "PATCH", &path, r#"{"models":["gpt-mock"]}"#);
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["models"], serde_json::json!(["gpt-mock"]));
    assert!(!res.text().contains(&secret));
    until_every_shard_says(&gw, &secret, "other", 403, "the narrowed key is refused");
    chat_as(&gw, &secret, "other").assert_error(403, "forbidden");
    assert_eq!(chat_as(&gw, &secret, "gpt-mock").status, 200);
    assert_eq!(admin(&gw, "GET", &path, "").json()["models"][0], "gpt-mock");

    // Refused changes.
    let v = assert_admin_error(
        &admin(&gw, "PATCH", &path, r#"{"models":["nope"]}"#),
        400,
        "bad_request",
    );
    assert_eq!(v["error"]["param"], "models", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`nope`"),
        "{v}"
    );
    let v = assert_admin_error(
        &admin(&gw, "PATCH", &path, r#"{"modles":["other"]}"#),
        400,
        "bad_request",
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("modles"),
        "{v}"
    );
    assert_admin_error(
        &admin(&gw, "PATCH", "/admin/keys/nope", "{}"),
        404,
        "not_found",
    );
    assert_admin_error(&admin(&gw, "GET", "/admin/keys/nope", ""), 404, "not_found");
    assert_admin_error(
        &admin(&gw, "POST", "/admin/keys/nope/revoke", ""),
        404,
        "not_found",
    );

    // The config file's key: read-only here, and still in force after the refusals.
    for (method, p, body) in [
        ("POST", "/admin/keys/cfg/revoke", ""),
        ("PATCH", "/admin/keys/cfg", r#"{"models":["other"]}"#),
    ] {
        let v = assert_admin_error(&admin(&gw, method, p, body), 409, "conflict");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("declared in the config file"),
            "{v}"
        );
    }
    let cfg = admin(&gw, "GET", "/admin/keys/cfg", "").json();
    assert_eq!(
        (&cfg["id"], &cfg["revoked"]),
        (&"cfg".into(), &false.into())
    );
    assert!(cfg.get("models").is_none(), "{cfg}");
    for _ in 0..8 {
        assert_eq!(chat_as(&gw, CFG_KEY, "other").status, 200);
    }

    let log = gw.stderr();
    assert!(log.contains(&id), "the changes are logged by id: {log}");
    assert!(!log.contains(&secret), "the secret is in the log");
    assert!(
        !admin(&gw, "GET", "/admin/keys", "")
            .text()
            .contains(&secret)
    );
}

/// With `[state] dir`, keys made and revoked through the admin API survive a restart.
#[test]
fn admin_keys_survive_a_restart() {
    let up = mock();
    let dir = std::env::temp_dir().join(format!("shardgate-admin-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = config(
        up.addr,
        &format!("{ADMIN}\n[state]\ndir = \"{}\"\n", dir.display()),
    );
    let env = [("SG_ADMIN_TOKEN", ADMIN_TOKEN)];
    let mut gw = Gateway::start_with_env(&cfg, TWO_SHARDS, &env);
    let kept = admin(&gw, "POST", "/admin/keys", r#"{"id":"kept"}"#).json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let gone = admin(&gw, "POST", "/admin/keys", r#"{"id":"gone"}"#).json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        admin(&gw, "POST", "/admin/keys/gone/revoke", "").status,
        200
    );
    gw.sigterm();
    assert!(gw.wait(std::time::Duration::from_secs(15)).is_some());

    let gw = Gateway::start_with_env(&cfg, TWO_SHARDS, &env);
    for _ in 0..4 {
        assert_eq!(
            chat_as(&gw, &kept, "gpt-mock").status,
            200,
            "kept on every shard"
        );
        let r = chat_as(&gw, &gone, "gpt-mock");
        r.assert_error(401, "unauthorized");
        assert!(r.text().contains("revoked"), "{}", r.text());
    }
    let listed = admin(&gw, "GET", "/admin/keys", "").text();
    assert!(
        listed.contains("\"kept\"") && listed.contains("\"gone\""),
        "{listed}"
    );
    assert!(!listed.contains(&kept), "no secret in the list");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET /admin/spend` lists the spend book by day and scope, `GET /admin/limits` every meter
/// in use with its window and this node's leases; bad queries are 400s naming the parameter.
#[test]
fn spend_and_limits_are_listed() {
    let up = mock();
    let extra = format!(
        "price = {{ input = 10.0, output = 20.0 }}\n\n[limits]\nexact = true\n\n[auth]\n\
         [[auth.keys]]\nid = \"cfg\"\nhash = \"{}\"\nteam = \"blue\"\n\
         limits = {{ rpm = 50, spend_per_day_usd = 1.0 }}\n\n{ADMIN}",
        shardgate::auth::key::hash(CFG_KEY),
    );
    let gw = Gateway::start_with_env(
        &upstream_config(up.addr, &extra),
        TWO_SHARDS,
        &[("SG_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    for _ in 0..6 {
        assert_eq!(chat_as(&gw, CFG_KEY, "gpt-mock").status, 200);
    }
    let rows = || admin(&gw, "GET", "/admin/spend?scope=key", "").json()["rows"].clone();
    // Shards send settled spend on their next batch.
    poll_until(
        Duration::from_secs(5),
        "six requests in the spend book",
        || rows()[0]["requests"] == 6,
    );
    let v = rows();
    let row = &v[0];
    assert_eq!((&row["scope"], &row["id"]), (&"key".into(), &"cfg".into()));
    assert!(row["nano_usd"].as_u64().unwrap() > 0, "{row}");
    assert!(row["spend_usd"].as_f64().unwrap() > 0.0, "{row}");
    let all = admin(&gw, "GET", "/admin/spend", "").json();
    let scopes: BTreeSet<String> = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["scope"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        scopes,
        ["global", "key", "team", "model"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    assert_eq!(all["from"], all["to"]);
    // Spend by team in /metrics (published once a second), equal to the team's book row.
    let team_nano = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["scope"] == "team")
        .unwrap()["nano_usd"]
        .as_u64()
        .unwrap();
    poll_until(Duration::from_secs(5), "team spend in /metrics", || {
        gw.metric("gateway_team_spend_usd_total{team=\"blue\"}") > 0.0
    });
    let metric = gw.metric("gateway_team_spend_usd_total{team=\"blue\"}");
    assert!(
        (metric - team_nano as f64 / 1e9).abs() < 1e-9,
        "{metric} vs {team_nano}"
    );

    let limits = admin(&gw, "GET", "/admin/limits", "").json();
    let rpm = limits["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "cfg" && m["measure"] == "requests" && m["period"] == "minute")
        .unwrap_or_else(|| panic!("{limits}"))
        .clone();
    assert_eq!(rpm["max"], 50);
    let (used, out) = (rpm["used"].as_u64().unwrap(), rpm["out"].as_u64().unwrap());
    let leased: u64 = rpm["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l[1].as_u64().unwrap())
        .sum();
    assert_eq!(leased, out, "{rpm}");
    assert!(used + out <= 50 && used + out >= 6, "{rpm}");
    assert_eq!(rpm["remaining"].as_u64().unwrap(), 50 - used - out, "{rpm}");

    for (query, param) in [
        ("from=yesterday", "from"),
        ("scope=planet", "scope"),
        ("from=20261203&to=20261202", "from"),
    ] {
        let v = assert_admin_error(
            &admin(&gw, "GET", &format!("/admin/spend?{query}"), ""),
            400,
            "bad_request",
        );
        assert_eq!(v["error"]["param"], param, "{v}");
    }
}

/// A canary virtual key, made through the admin API, used for every kind of answer (served,
/// streamed, 400, 403, 429 in both dialects, an upstream error that echoes credentials,
/// 401 once revoked) and presented slightly wrong: after all of it, the key is in no response
/// body or header, no log line at `RUST_LOG=debug`, not in `/metrics` and in no admin answer
/// but the one that made it.
#[test]
fn a_canary_key_never_leaks() {
    let up = mock();
    let extra = format!(
        "{}{}\n[limits]\nexact = true\n\n[auth]\n\n{ADMIN}",
        model("echo", "mock;status=500;echo_auth=1"),
        model("other", "mock"),
    );
    let gw = Gateway::start_with_env(
        &upstream_config(up.addr, &extra),
        TWO_SHARDS,
        &[("SG_ADMIN_TOKEN", ADMIN_TOKEN), ("RUST_LOG", "debug")],
    );
    let made = admin(
        &gw,
        "POST",
        "/admin/keys",
        r#"{"id":"canary","models":["gpt-mock","echo"],"limits":{"rpm":6}}"#,
    );
    assert_eq!(made.status, 201);
    let canary = made.json()["key"].as_str().unwrap().to_owned();
    // The same key with its last character changed: an unknown key must not be echoed either.
    let mut near = canary.clone();
    let last = near.pop().unwrap();
    near.push(if last == 'A' { 'B' } else { 'A' });
    let tail = &canary[canary.len() - 12..];

    let mut answers = Vec::new();
    let send = |path: &str, auth: (&str, &str), body: &str| {
        request(
            gw.addr,
            "POST",
            path,
            &[("content-type", "application/json"), auth],
            body.as_bytes(),
        )
    };
    let bearer = format!("Bearer {canary}");
    let as_bearer = ("authorization", bearer.as_str());
    let as_x_api_key = ("x-api-key", canary.as_str());
    let messages =
        r#"{"model":"gpt-mock","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..4 {
        answers.push(send(
            "/v1/chat/completions",
            as_bearer,
            &chat_body("gpt-mock", "hi", false),
        ));
        answers.push(send(
            "/v1/chat/completions",
            as_bearer,
            &chat_body("gpt-mock", "hi", true),
        ));
        answers.push(send("/v1/messages", as_x_api_key, messages));
        answers.push(send(
            "/v1/chat/completions",
            as_bearer,
            &chat_body("echo", "hi", false),
        ));
        answers.push(send(
            "/v1/chat/completions",
            as_bearer,
            &chat_body("other", "hi", false),
        ));
        answers.push(send("/v1/chat/completions", as_bearer, "{not json"));
    }
    let statuses: BTreeSet<u16> = answers.iter().map(|r| r.status).collect();
    for s in [200, 400, 403, 429] {
        assert!(statuses.contains(&s), "a {s} among {statuses:?}");
    }
    assert_eq!(
        admin(&gw, "POST", "/admin/keys/canary/revoke", "").status,
        200
    );
    answers.push(send(
        "/v1/chat/completions",
        as_bearer,
        &chat_body("gpt-mock", "hi", false),
    ));
    answers.push(send("/v1/messages", as_x_api_key, messages));
    let near_bearer = format!("Bearer {near}");
    answers.push(send(
        "/v1/chat/completions",
        ("authorization", &near_bearer),
        "{}",
    ));
    answers.push(send("/v1/messages", ("x-api-key", &near), messages));
    assert_eq!(answers[answers.len() - 4].status, 401);

    let mut seen = vec![("/metrics".to_owned(), gw.get("/metrics").text())];
    for path in [
        "/admin/keys",
        "/admin/keys/canary",
        "/admin/limits",
        "/admin/spend",
    ] {
        seen.push((path.to_owned(), admin(&gw, "GET", path, "").text()));
    }
    for (i, r) in answers.iter().enumerate() {
        let headers: String = r
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect();
        seen.push((format!("answer {i} ({})", r.status), headers + &r.text()));
    }
    gw.sigterm();
    seen.push(("the log".to_owned(), gw.stderr()));
    for (what, text) in &seen {
        for secret in [canary.as_str(), near.as_str(), tail] {
            assert!(!text.contains(secret), "the key is in {what}: {text}");
        }
    }
    assert!(
        seen.last().unwrap().1.contains("canary"),
        "the log names the key by id"
    );
}
