//! Several nodes sharing limits, budgets, keys and spend through Redis: a real `redis-server`
//! (Debian's package, started here on a loopback port) and two gateway processes with two
//! shards each, the mock as their upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;

const ADMIN_TOKEN: &str = "test-admin-token-redis-0123456789";

/// A `redis-server` of our own on a free loopback port, with an append-only file fsynced on
/// every write (so a SIGKILL loses nothing it acknowledged). Stopped by PID on drop.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("shardgate-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self::start_on(port, dir)
    }

    fn start_on(port: u16, dir: PathBuf) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                dir.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; .ci/run installs it)");
        let r = Self { child, port, dir };
        poll_until(Duration::from_secs(10), "redis-server answers", || {
            r.conn().is_ok()
        });
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn conn(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_millis(500))
    }

    fn signal(&self, sig: i32) {
        // Our own child only.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// SIGKILL, then a new server on the same port and data directory.
    fn kill_and_restart(mut self) -> Self {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        let (port, dir) = (self.port, std::mem::take(&mut self.dir));
        std::mem::forget(self);
        Self::start_on(port, dir)
    }

    /// The spend book of today (UTC) for a scope: (nano-USD, output tokens, requests).
    fn spend_today(&self, scope: &str) -> (u64, u64, u64) {
        let day = shardgate::actors::store::utc_day(now_ms());
        let mut c = self.conn().unwrap();
        let key = format!("shardgate:spend:{day}");
        let get = |c: &mut redis::Connection, f: &str| -> u64 {
            redis::cmd("HGET")
                .arg(&key)
                .arg(format!("{scope}|{f}"))
                .query::<Option<u64>>(c)
                .unwrap()
                .unwrap_or(0)
        };
        (get(&mut c, "n"), get(&mut c, "o"), get(&mut c, "r"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Redis settings for tests of exactness: a loaded CI machine may take longer than the
/// default 100 ms to answer, and a timeout must not hand limits to the policy mid-test.
const PATIENT: &str = "redis_timeout_ms = 3000\nredis_policy = \"fail_closed\"\n";

/// One node's config: the mock upstream, `[state]` on this Redis, and `extra`.
fn node_config(up: SocketAddr, redis: &Redis, state: &str, extra: &str) -> String {
    upstream_config(
        up,
        &format!(
            "price = {{ input = 10.0, output = 20.0 }}\n\n[state]\nredis_url = \"{}\"\nnodes = 2\n{state}\n{extra}",
            redis.url()
        ),
    )
}

fn chat_with_key(addr: SocketAddr, key: &str, body: &str) -> Resp {
    let auth = format!("Bearer {key}");
    request(
        addr,
        "POST",
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        body.as_bytes(),
    )
}

/// `n` requests at once, one connection each, alternating between the nodes.
fn burst_over(nodes: &[SocketAddr], n: usize, key: &str, stream: bool) -> Vec<Resp> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, key, addr) = (barrier.clone(), key.to_owned(), nodes[i % nodes.len()]);
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    let mut body: serde_json::Value =
                        serde_json::from_str(&chat_body("gpt-mock", &format!("hi {i}"), stream))
                            .unwrap();
                    // A known worst case, for hard budgets.
                    body["max_tokens"] = 64.into();
                    let body = body.to_string();
                    barrier.wait();
                    chat_with_key(addr, &key, &body)
                })
                .unwrap()
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn count(res: &[Resp], status: u16) -> usize {
    res.iter().filter(|r| r.status == status).count()
}

/// 1,000 requests at once from one key limited to 100 a minute, spread over two nodes of
/// two shards each: with `exact`, exactly 100 are admitted, 20 runs out of 20; without it,
/// at most 100 plus the stated bound (one borrowed unit per shard: 4).
#[test]
fn a_minute_limit_holds_exactly_over_two_nodes() {
    let up = mock();
    let redis = Redis::start();
    let secrets: Vec<String> = (0..23).map(|i| secret(&format!("run{i}"))).collect();
    let keys = |range: std::ops::Range<usize>| -> String {
        range
            .map(|i| key(&format!("run{i}"), &secrets[i], "limits = { rpm = 100 }"))
            .collect()
    };
    let exact = node_config(
        up.addr,
        &redis,
        PATIENT,
        // Requests wait for units as long as it takes (a loaded CI machine runs the other
        // tests beside this one); a refusal then only ever means the limit is spent.
        &format!(
            "[limits]\nexact = true\nwait_ms = 5000\n\n[auth]\n{}",
            keys(0..20)
        ),
    );
    let a = Gateway::start(&exact, TWO_SHARDS);
    let b = Gateway::start(&exact, TWO_SHARDS);
    let nodes = [a.addr, b.addr];
    for (run, s) in secrets[..20].iter().enumerate() {
        let res = burst_over(&nodes, 1000, s, false);
        for r in res.iter().filter(|r| r.status != 200) {
            r.assert_error(429, "rate_limited");
        }
        assert_eq!(
            (count(&res, 200), count(&res, 429)),
            (100, 900),
            "run {run}: exactly 100 of 1,000 admitted"
        );
    }
    for gw in [&a, &b] {
        assert!(
            !gw.stderr().contains("Redis is away"),
            "Redis answered throughout"
        );
    }
    drop((a, b));
    // Not exact: shards may borrow one unit each past an empty lease.
    let loose = node_config(
        up.addr,
        &redis,
        PATIENT,
        &format!(
            "[limits]\nexact = false\nwait_ms = 5000\n\n[auth]\n{}",
            keys(20..23)
        ),
    );
    let a = Gateway::start(&loose, TWO_SHARDS);
    let b = Gateway::start(&loose, TWO_SHARDS);
    for s in &secrets[20..23] {
        let res = burst_over(&[a.addr, b.addr], 1000, s, false);
        let admitted = count(&res, 200);
        assert!(
            (100..=104).contains(&admitted),
            "{admitted} admitted: at most 100 + 4 borrowed, and no fewer than the limit"
        );
    }
}

/// A $0.10 total budget spent by concurrent streamed requests over both nodes: the spend in
/// Redis is the priced usage the mock reported, and passes the cap by at most the in-flight
/// estimates' error; with `hard_budgets`, not at all.
#[test]
fn a_budget_holds_over_two_nodes_with_streams() {
    let up = mock();
    let redis = Redis::start();
    for (hard, tag) in [(false, "soft"), (true, "hard")] {
        let s = secret(tag);
        let cfg = node_config(
            up.addr,
            &redis,
            PATIENT,
            &format!(
                "[limits]\nexact = true\nhard_budgets = {hard}\noutput_estimate_tokens = 64\n\n[auth]\n{}",
                key(tag, &s, "limits = { spend_total_usd = 0.02 }")
            ),
        );
        let a = Gateway::start(&cfg, TWO_SHARDS);
        let b = Gateway::start(&cfg, TWO_SHARDS);
        let (mut admitted, mut refused, mut priced) = (0u64, 0, 0u64);
        for _ in 0..40 {
            for r in burst_over(&[a.addr, b.addr], 8, &s, true) {
                if r.status == 200 {
                    admitted += 1;
                    priced += streamed_cost(&r);
                } else {
                    r.assert_error(429, "budget_exceeded");
                    refused += 1;
                }
            }
            if refused >= 16 {
                break;
            }
        }
        assert!(
            admitted > 0 && refused >= 16,
            "{tag}: {admitted} admitted, {refused} refused"
        );
        // Every node wrote what it settled (the tick writes every 20 ms).
        let scope = format!("key:{tag}");
        poll_until(Duration::from_secs(5), "spend written", || {
            redis.spend_today(&scope).2 == admitted
        });
        let (nano, _, requests) = redis.spend_today(&scope);
        assert_eq!(requests, admitted);
        assert_eq!(nano, priced, "{tag}: the spend is the priced usage");
        let cap = 20_000_000; // $0.02 in nano-USD
        let per = priced / admitted;
        if hard {
            assert!(nano <= cap, "hard: {nano} over {cap}");
        } else {
            assert!(
                nano <= cap + 8 * per,
                "{nano} over {cap} by more than 8 answers"
            );
        }
    }
}

/// What a streamed answer costs at $10 / $20 per million tokens, from its usage chunk, in
/// nano-USD (the gateway's rounding: per token class, each rounded down).
fn streamed_cost(r: &Resp) -> u64 {
    let usage = r
        .events()
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .find_map(|v| v.get("usage").filter(|u| u.is_object()).cloned())
        .unwrap_or_else(|| panic!("no usage in the stream: {}", r.text()));
    let (i, o) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    i * 10_000 + o * 20_000
}

/// A key made and revoked on node A through the admin API: B admits it, then refuses it
/// within the stated bound (one key poll, 500 ms, plus a round trip: 1 s).
#[test]
fn a_key_revoked_on_one_node_is_refused_on_the_other() {
    let up = mock();
    let redis = Redis::start();
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"SG_ADMIN_TOKEN\"\n";
    let cfg = |extra: &str| node_config(up.addr, &redis, "", &format!("{extra}\n[auth]\n"));
    let env = [("SG_ADMIN_TOKEN", ADMIN_TOKEN)];
    let a = Gateway::start_with_env(&cfg(admin), TWO_SHARDS, &env);
    let b = Gateway::start(&cfg(""), TWO_SHARDS);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let call = |method: &str, path: &str, body: &str| {
        request(
            a.admin.unwrap(),
            method,
            path,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
    };
    let made = call("POST", "/admin/keys", r#"{"id":"roaming"}"#);
    assert_eq!(made.status, 201, "{}", made.text());
    let k = made.json()["key"].as_str().unwrap().to_owned();
    let body = chat_body("gpt-mock", "hi", false);
    let mut admitted = 0;
    poll_until(Duration::from_secs(2), "B admits the new key", || {
        let ok = chat_with_key(b.addr, &k, &body).status == 200;
        admitted += u64::from(ok);
        ok
    });
    for addr in [a.addr, b.addr, a.addr, b.addr] {
        assert_eq!(chat_with_key(addr, &k, &body).status, 200);
        admitted += 1;
    }
    // A's admin API reads every node's spend from Redis.
    poll_until(Duration::from_secs(5), "both nodes' spend on A", || {
        let v = call("GET", "/admin/spend?scope=key", "").json();
        v["rows"][0]["id"] == "roaming" && v["rows"][0]["requests"] == admitted
    });
    assert_eq!(call("POST", "/admin/keys/roaming/revoke", "").status, 200);
    let revoked_at = Instant::now();
    poll_until(Duration::from_secs(5), "B refuses the revoked key", || {
        chat_with_key(b.addr, &k, &body).status == 401
    });
    let took = revoked_at.elapsed();
    assert!(
        took <= Duration::from_secs(1),
        "B refused after {took:?}, over the 1 s bound"
    );
    // Every shard of B.
    for _ in 0..8 {
        chat_with_key(b.addr, &k, &body).assert_error(401, "unauthorized");
    }
    assert!(
        !b.stderr().contains(&k) && !a.stderr().contains(&k),
        "a key in a log"
    );
}

/// Redis frozen (SIGSTOP), then killed and started again, under load on both nodes: no
/// request waits much past the operation timeout; while Redis is away a meter no shard holds
/// units of is admitted from the node's share with `fail_open` and refused with
/// `fail_closed`; once Redis is back the spend book counts every request.
#[test]
fn redis_frozen_then_killed_mid_load() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let up = mock();
    let mut redis = Redis::start();
    let (load, fresh) = (secret("load"), secret("fresh"));
    let node = |policy: &str| {
        node_config(
            up.addr,
            &redis,
            &format!("redis_timeout_ms = 100\nredis_policy = \"{policy}\"\n"),
            &format!(
                "[limits]\nexact = true\n\n[auth]\n{}{}",
                key("load", &load, "limits = { rpm = 1000000 }"),
                key("fresh", &fresh, "limits = { rpm = 100 }")
            ),
        )
    };
    let open = Gateway::start(&node("fail_open"), TWO_SHARDS);
    let closed = Gateway::start(&node("fail_closed"), TWO_SHARDS);
    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    // Two clients per node, one request after another: (sent at, took, status).
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (stop, done, load) = (stop.clone(), done.clone(), load.clone());
            let addr = if i % 2 == 0 { open.addr } else { closed.addr };
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let body = chat_body("gpt-mock", "hi", false);
                while !stop.load(Relaxed) {
                    let at = Instant::now();
                    let r = chat_with_key(addr, &load, &body);
                    seen.push((at, at.elapsed(), r.status));
                    done.fetch_add(1, Relaxed);
                }
                seen
            })
        })
        .collect();
    let more = |n: usize| {
        let target = done.load(Relaxed) + n;
        poll_until(Duration::from_secs(10), "requests under load", || {
            done.load(Relaxed) >= target
        });
    };
    let redis_up = |v: f64| {
        for gw in [&open, &closed] {
            poll_until(Duration::from_secs(10), "gateway_redis_up", || {
                gw.metric("gateway_redis_up") == v
            });
        }
    };
    redis_up(1.0);
    more(100);
    redis.signal(libc::SIGSTOP);
    redis_up(0.0);
    more(100);
    // A meter no shard holds units of needs Redis: the policy answers.
    let body = chat_body("gpt-mock", "fresh", false);
    for _ in 0..5 {
        assert_eq!(
            chat_with_key(open.addr, &fresh, &body).status,
            200,
            "fail_open"
        );
        chat_with_key(closed.addr, &fresh, &body).assert_error(429, "rate_limited");
    }
    redis = redis.kill_and_restart();
    redis_up(1.0);
    more(100);
    stop.store(true, Relaxed);
    let per_client: Vec<Vec<_>> = clients.into_iter().map(|t| t.join().unwrap()).collect();
    // `fail_open` admits the load from the node's share while Redis is away: none refused
    // there (how many `fail_closed` refuses depends on how long the freeze lasted).
    for (i, seen) in per_client.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        assert!(!seen.is_empty(), "client {i} sent nothing");
        assert!(
            seen.iter().all(|x| x.2 == 200),
            "fail_open refused: {seen:?}"
        );
    }
    let seen: Vec<_> = per_client.into_iter().flatten().collect();

    let slowest = seen.iter().map(|x| x.1).max().unwrap();
    assert!(
        slowest < Duration::from_millis(100 + 250 + 1000),
        "a request took {slowest:?}: past the 100 ms timeout, the 250 ms wait and 1 s of slack"
    );
    // Every admitted request is in Redis's spend book once Redis is back: none lost, none
    // counted twice.
    let admitted = seen.iter().filter(|x| x.2 == 200).count() as u64;
    assert!(admitted >= 100, "{admitted} admitted of {}", seen.len());
    poll_until(
        Duration::from_secs(10),
        "every settled request in Redis",
        || redis.spend_today("key:load").2 >= admitted,
    );
    assert_eq!(redis.spend_today("key:load").2, admitted);
    assert_eq!(redis.spend_today("key:fresh").2, 5, "fail_open's five");
    assert_eq!(redis.spend_today("global").2, admitted + 5);
}

/// The Lua ledger against a real Redis, driven through the budgeter's own client with
/// injected time: shares shrink toward the edge, a batch retried after a timeout counts once,
/// a starved ask names the holders with units out, a dead node's units come back, windows
/// roll, and the spend book reads back.
#[test]
fn the_shared_ledger_keeps_the_ledger_s_rules() {
    use shardgate::actors::redis::{Backlog, RemoteAsk, Shared};
    use shardgate::budget::book::Spent;
    use shardgate::budget::ledger::Report;
    use shardgate::budget::meter::{Measure, MeterKey, Period, Scope};
    use shardgate::config::tenancy::{RedisConfig, RedisPolicy};

    let redis = Redis::start();
    let cfg = RedisConfig {
        url: redis.url(),
        timeout: Duration::from_secs(2),
        policy: RedisPolicy::FailOpen,
        nodes: 2,
        node_id: None,
        prefix: "shardgate:".into(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let metrics = Arc::new(shardgate::metrics::ControlMetrics::default());
        let connect =
            |node: &str, boot: u64| Shared::connect(&cfg, node.into(), boot, 2, 0, metrics.clone());
        let (a, b) = (
            connect("a", 1).await.unwrap(),
            connect("b", 1).await.unwrap(),
        );
        let t0 = 1_800_000_000_000u64;
        let k = MeterKey::new(
            Scope::Key(Arc::from("k")),
            Measure::Requests,
            Period::Minute,
        );
        let ask = |holder, units| RemoteAsk {
            key: k.clone(),
            holder,
            units,
            max: 100,
        };
        // 2 nodes × 2 shards: a share is at most available / 8.
        let g = a.sync(t0, None, &[ask(0, 50)]).await.unwrap().grants;
        let g0 = &g[0].grant;
        assert_eq!((g0.units, g0.remaining, g0.others_out), (12, 88, 0));
        assert_eq!((g0.window_id, g0.window_end_ms), (t0, t0 + 60_000));
        let g = b.sync(t0 + 1, None, &[ask(1, 50)]).await.unwrap().grants;
        assert_eq!((g[0].grant.units, g[0].grant.others_out), (11, 12));
        // A report sent twice under one id (a retry after a timeout) counts once.
        let mut backlog = Backlog::new("a-test".into());
        let report = Report {
            key: k.clone(),
            window_id: t0,
            used: 10,
            over: 0,
            returned: 2,
        };
        backlog.add_reports(0, std::slice::from_ref(&report));
        backlog.add_spent(&[Spent {
            key: Some(Arc::from("k")),
            team: None,
            user: None,
            model: Arc::from("m"),
            nano_usd: 1234,
            input_tokens: 3,
            output_tokens: 4,
            requests: 1,
            at_ms: t0,
        }]);
        let batch = backlog.to_send().cloned().unwrap();
        for _ in 0..2 {
            // Each answer gives the window's figure after the report (counted once).
            let synced = a.sync(t0 + 2, Some(&batch), &[]).await.unwrap();
            assert_eq!(synced.reported, [Some(10)]);
        }
        let g = a.sync(t0 + 3, None, &[ask(0, 0)]).await.unwrap().grants;
        // used 10; out: b's 11 (a's 12 came back as 10 used and 2 returned).
        assert_eq!((g[0].used, g[0].grant.others_out), (10, 11));
        assert_eq!((g[0].grant.remaining, g[0].grant.returned), (79, 2));
        let day = shardgate::actors::store::utc_day(t0);
        let rows = a.spend(day, day).await.unwrap();
        let key_row = rows
            .iter()
            .find(|(s, _, _)| *s == shardgate::actors::store::SpendScope::Key("k".into()))
            .unwrap();
        assert_eq!((key_row.2.nano_usd, key_row.2.requests), (1234, 1));
        // Take everything: the last asks name the holders with units out.
        let mut taken = 0;
        loop {
            let g = a.sync(t0 + 4, None, &[ask(0, 100)]).await.unwrap().grants;
            if g[0].grant.units == 0 {
                assert_eq!(g[0].grant.others_out, 11);
                assert_eq!(g[0].others, vec![(b.me().to_owned(), 1)]);
                break;
            }
            taken += g[0].grant.units;
        }
        assert_eq!(taken, 79);
        // Node b goes silent past 10 s: its units are no longer counted.
        let mut c = redis.conn().unwrap();
        let _: () = redis::cmd("DEL")
            .arg(format!("shardgate:alive:{}", b.me()))
            .query(&mut c)
            .unwrap();
        let g = a.sync(t0 + 5, None, &[ask(0, 100)]).await.unwrap().grants;
        assert_eq!((g[0].grant.units, g[0].grant.others_out), (1, 0));
        // The window ends: a fresh one opens at the first ask after it.
        let g = a
            .sync(t0 + 70_000, None, &[ask(0, 100)])
            .await
            .unwrap()
            .grants;
        let g0 = &g[0].grant;
        assert_eq!(
            (g0.window_id, g0.units, g0.remaining),
            (t0 + 70_000, 12, 88)
        );
    });
}

/// Budget thresholds crossed while two nodes serve one key: each threshold's webhook is
/// POSTed once in all (the first node to see the crossing claims it in Redis), not once per
/// node.
#[test]
fn a_threshold_alert_is_posted_once_over_two_nodes() {
    let up = mock();
    let redis = Redis::start();
    let (hook, got) = webhook();
    let s = secret("alerts");
    let cfg = node_config(
        up.addr,
        &redis,
        "",
        &format!(
            "[limits]\noutput_estimate_tokens = 1\nwebhook_url = \"http://{hook}/budget\"\n\n\
             [auth]\n{}",
            key("alerts", &s, "limits = { spend_total_usd = 0.01 }")
        ),
    );
    let a = Gateway::start(&cfg, TWO_SHARDS);
    let b = Gateway::start(&cfg, TWO_SHARDS);
    // Walk the budget up, alternating nodes, until every threshold has posted: the last one,
    // 100%, once the budget is refused for good (at the first ask after the other nodes'
    // shards gave their units back).
    let mut posts = Vec::new();
    let started = Instant::now();
    let mut i = 0;
    while posts.len() < 4 && started.elapsed() < Duration::from_secs(20) {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        i += 1;
        let r = chat_with_key(
            addr,
            &s,
            &chat_body("gpt-mock", &format!("walk {i}"), false),
        );
        if r.status == 429 {
            r.assert_error(429, "budget_exceeded");
            // Refused: give the other nodes a moment before asking again.
            if let Ok(v) = got.recv_timeout(Duration::from_millis(300)) {
                posts.push(v);
            }
        } else {
            assert_eq!(r.status, 200, "{}", r.text());
        }
        while let Ok(v) = got.try_recv() {
            posts.push(v);
        }
    }
    // Any duplicate would come within a second.
    while let Ok(v) = got.recv_timeout(Duration::from_secs(1)) {
        posts.push(v);
    }
    let mut rungs: Vec<u64> = posts
        .iter()
        .map(|e| e["at_percent"].as_u64().unwrap())
        .collect();
    rungs.sort_unstable();
    assert_eq!(
        rungs,
        [80, 90, 95, 100],
        "one POST per threshold: {posts:?}"
    );
}

/// A node started while its Redis is down serves on its policy (`fail_open`), connects
/// when Redis comes up, and writes the spend it settled meanwhile.
#[test]
fn a_node_started_before_its_redis_catches_up() {
    let up = mock();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!(
        "shardgate-redis-late-{}-{port}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let s = secret("early");
    let cfg = upstream_config(
        up.addr,
        &format!(
            "price = {{ input = 10.0, output = 20.0 }}\n\n[state]\n\
             redis_url = \"redis://127.0.0.1:{port}/\"\nredis_timeout_ms = 200\n\n\
             [limits]\nexact = true\n\n[auth]\n{}",
            key("early", &s, "limits = { rpm = 1000 }")
        ),
    );
    let gw = Gateway::start(&cfg, TWO_SHARDS);
    assert_eq!(gw.metric("gateway_redis_up"), 0.0);
    let body = chat_body("gpt-mock", "hi", false);
    for _ in 0..6 {
        assert_eq!(chat_with_key(gw.addr, &s, &body).status, 200, "fail_open");
    }
    let redis = Redis::start_on(port, dir);
    poll_until(Duration::from_secs(10), "the node connects", || {
        gw.metric("gateway_redis_up") == 1.0
    });
    for _ in 0..4 {
        assert_eq!(chat_with_key(gw.addr, &s, &body).status, 200);
    }
    poll_until(Duration::from_secs(5), "ten requests in Redis", || {
        redis.spend_today("key:early").2 == 10
    });
    let log = gw.stderr();
    assert!(log.contains("Cannot connect to Redis yet"), "{log}");
    assert!(
        !log.contains(&format!("127.0.0.1:{port}/")),
        "the URL is not logged"
    );
}

/// The cache shared by two nodes: an answer fetched on A is a hit on B (from Redis); an
/// invalidation on A empties B; with Redis frozen, lookups give up at the timeout and the
/// requests are answered from upstream.
#[test]
fn the_cache_is_shared_over_two_nodes() {
    let redis = Redis::start();
    let up = mock();
    let cached = "cache_ttl_s = 60\n";
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"SG_ADMIN_TOKEN\"\n";
    let state = "redis_timeout_ms = 200\n";
    let config = |extra: &str| {
        node_config(up.addr, &redis, state, extra).replacen(
            "model = \"mock\"\n",
            &format!("model = \"mock\"\n{cached}"),
            1,
        )
    };
    let env = [("SG_ADMIN_TOKEN", ADMIN_TOKEN)];
    let a = Gateway::start_with_env(&config(admin), TWO_SHARDS, &env);
    let b = Gateway::start_with_env(&config(""), TWO_SHARDS, &env);
    let body = chat_body("gpt-mock", "shared between nodes", false);
    let first = a.post("/v1/chat/completions", &body);
    assert_eq!(verdict(&first), "miss", "{}", first.text());
    // The put to Redis is asynchronous: wait until the answer is there, then ask B.
    let stored = format!(
        "shardgate:c:{}",
        first.header("x-shardgate-cache-key").unwrap()
    );
    poll_until(Duration::from_secs(5), "the answer in Redis", || {
        redis::cmd("EXISTS")
            .arg(&stored)
            .query::<u32>(&mut redis.conn().unwrap())
            .unwrap()
            == 1
    });
    let from_redis = b.post("/v1/chat/completions", &body);
    assert_eq!(verdict(&from_redis), "hit");
    assert_eq!(from_redis.body, first.body);
    assert_eq!(up.requests(), 1, "B never went upstream");
    assert_eq!(b.metric("gateway_cache_l2_hits_total"), 1.0);
    let again = b.post("/v1/chat/completions", &body);
    assert_eq!(verdict(&again), "hit");
    assert_eq!(again.body, first.body);
    assert_eq!(
        b.metric("gateway_cache_l2_hits_total"),
        1.0,
        "now from B's own cache"
    );

    // Invalidated on A: gone from Redis and from B's shards.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = request(
        a.admin.unwrap(),
        "DELETE",
        "/admin/cache?model=gpt-mock",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    poll_until(Duration::from_secs(5), "B to forget the answer", || {
        b.metric("gateway_cache_invalidated_total") >= 1.0
    });
    assert_eq!(verdict(&b.post("/v1/chat/completions", &body)), "miss");
    assert_eq!(up.requests(), 2);

    // Redis frozen: every lookup gives up at the timeout; the answers come from upstream.
    redis.signal(libc::SIGSTOP);
    for i in 0..5 {
        let body = chat_body("gpt-mock", &format!("while frozen {i}"), false);
        for node in [&a, &b] {
            let started = Instant::now();
            let r = node.post("/v1/chat/completions", &body);
            let took = started.elapsed();
            assert_eq!(r.status, 200, "{}", r.text());
            assert!(took < Duration::from_millis(1_500), "{took:?}");
        }
    }
    assert!(
        a.metric("gateway_cache_l2_timeouts_total") + b.metric("gateway_cache_l2_timeouts_total")
            >= 5.0
    );
    redis.signal(libc::SIGCONT);
}
