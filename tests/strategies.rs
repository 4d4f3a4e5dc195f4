#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#![allow(
    clippy::disallowed_methods,
    reason = "test clients run on plain threads, not shards"
)]
//! The balancing strategies and backpressure, end to end: the real gateway over several
//! in-process `shardgate-mock`s on loopback, each with its own latency, stream pace or price.
//! Where a request went is read from `x-shardgate-deployment`; faults and latencies change at
//! run time through the mocks' `PUT /mock/knobs`.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use shardgate::mock::server::MockServer;

/// One shard, and outcomes flushed to the scorer every 10 ms (the scorer publishes every
/// 100 ms), so that scores are trusted soon after the warm-up.
const TUNING: &str = "[shards]\ncount = 1\npin = false\n[bridge]\nflush_interval_ms = 10\n";

/// A loopback address nothing listens on (bound, then released).
fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// A model `m` with `model_extra` settings over deployments `d0`, `d1`, ... (provider `p<i>`
/// at the given address, plus that deployment's own extra lines), then `routing`.
fn config(deps: &[(SocketAddr, &str)], model_extra: &str, routing: &str) -> String {
    let mut c = String::from("[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace_ms = 2000\n\n");
    for (i, (addr, _)) in deps.iter().enumerate() {
        c.push_str(&format!(
            "[providers.p{i}]\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\nprotocol = \"http1\"\nconnect_timeout_ms = 500\nfirst_byte_timeout_ms = 5000\n\n"
        ));
    }
    c.push_str(&format!("[models.m]\n{model_extra}\n"));
    for (i, (_, extra)) in deps.iter().enumerate() {
        c.push_str(&format!(
            "[[models.m.deployments]]\nid = \"d{i}\"\nprovider = \"p{i}\"\nmodel = \"mock\"\n{extra}\n\n"
        ));
    }
    c.push_str(routing);
    c
}

/// Send `n` requests to `m` one after the other; every one must answer 200. Returns how many
/// each deployment answered.
fn spread(gw: &Gateway, n: usize, stream: bool) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let res = gw.chat("m", &format!("request {i}"), stream);
        assert_eq!(res.status, 200, "{}", res.text());
        let id = res.header("x-shardgate-deployment").unwrap().to_owned();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

fn count(counts: &HashMap<String, usize>, id: &str) -> usize {
    counts.get(id).copied().unwrap_or(0)
}

/// Replace a mock's knobs the way an operator does: `PUT /mock/knobs` on its own listener.
fn put_knobs(mock: SocketAddr, knobs: &str) {
    let res = request(mock, "PUT", "/mock/knobs", &[], knobs.as_bytes());
    assert_eq!(res.status, 204, "{}", res.text());
}

/// Two deployments, `d0` slow (50 ms) and `d1` fast (5 ms): after a warm-up at least 90% of
/// requests go to `d1`. Then the two swap latencies at run time, and within a bounded time
/// most requests go to `d0`.
fn the_fast_deployment_wins_and_traffic_follows_a_swap(strategy: &str, warm_up: impl Fn(&Gateway)) {
    let slow = mock_with("latency_ms=50");
    let fast = mock_with("latency_ms=5");
    let cfg = config(
        &[(slow.addr, ""), (fast.addr, "")],
        &format!("strategy = \"{strategy}\""),
        "",
    );
    let gw = Gateway::start(&cfg, TUNING);
    warm_up(&gw);

    let n = 40;
    let counts = spread(&gw, n, false);
    assert!(
        count(&counts, "d1") * 10 >= n * 9,
        "{strategy}: {counts:?}; {}",
        gw.get("/admin/routes").text()
    );

    put_knobs(slow.addr, "latency_ms=5");
    put_knobs(fast.addr, "latency_ms=50");
    // Windows of 10 requests until one goes mostly to the new fast deployment.
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut sent = 0;
    loop {
        let window = spread(&gw, 10, false);
        sent += 10;
        if count(&window, "d0") >= 8 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{strategy}: traffic has not moved after the swap ({sent} requests): last window \
             {window:?}\nroutes: {}\nscores: {}",
            gw.get("/admin/routes").text(),
            gw.get("/admin/scores").text()
        );
    }
    let after = spread(&gw, 20, false);
    assert!(
        count(&after, "d0") * 10 >= 20 * 9,
        "{strategy}: moved after {sent} requests, then {after:?}"
    );
    println!(
        "{strategy}: {counts:?} before the swap; moved within {sent} requests; {after:?} after"
    );
}

#[test]
fn lowest_latency_sends_most_requests_to_the_fast_deployment_and_follows_a_swap() {
    the_fast_deployment_wins_and_traffic_follows_a_swap("lowest_latency", |gw| {
        // A deployment without a sample counts as fastest: a few requests measure both.
        spread(gw, 5, false);
    });
}

#[test]
fn score_sends_most_requests_to_the_fast_deployment_and_follows_a_swap() {
    the_fast_deployment_wins_and_traffic_follows_a_swap("score", |gw| {
        // Untrusted deployments share the traffic until the scorer trusts both (10 samples
        // each; once one is trusted, the other gets only the exploration share).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            spread(gw, 4, false);
            let scores = gw.get("/admin/scores").json();
            let trusted = |id: &str| scores["deployments"][id]["trusted"] == true;
            if trusted("d0") && trusted("d1") {
                break;
            }
            assert!(Instant::now() < deadline, "never trusted: {scores}");
        }
    });
}

#[test]
fn least_busy_spreads_long_streams_over_both_deployments() {
    // Each stream takes about 20 × 50 ms, so all of them are in flight together.
    let a = mock_with("chunks=20;interval_ms=50");
    let b = mock_with("chunks=20;interval_ms=50");
    let cfg = config(
        &[(a.addr, ""), (b.addr, "")],
        "strategy = \"least_busy\"",
        "",
    );
    let gw = Gateway::start(&cfg, TUNING);
    let n = 12;
    let answers: Vec<Resp> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let gw = &gw;
                s.spawn(move || gw.chat("m", &format!("stream {i}"), true))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut counts: HashMap<String, usize> = HashMap::new();
    for res in &answers {
        assert_eq!(res.status, 200, "{}", res.text());
        let events = res.events();
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{events:?}"
        );
        assert!(stream_text(&events).starts_with("This is a mock reply to: stream"));
        let id = res.header("x-shardgate-deployment").unwrap().to_owned();
        *counts.entry(id).or_insert(0) += 1;
    }
    for id in ["d0", "d1"] {
        assert!(count(&counts, id) >= n / 2 - 1, "{counts:?}");
    }
    assert_eq!(
        a.stats().streams.load(Ordering::Relaxed) as usize,
        count(&counts, "d0")
    );
    assert_eq!(
        b.stats().streams.load(Ordering::Relaxed) as usize,
        count(&counts, "d1")
    );
}

/// Prices (USD per million tokens): `d1` cheapest, then `d2`, then `d0`.
const PRICES: [&str; 3] = [
    "price = { input = 3.0, output = 6.0 }",
    "price = { input = 1.0, output = 2.0 }",
    "price = { input = 2.0, output = 4.0 }",
];

#[test]
fn lowest_cost_sends_every_request_to_the_cheapest() {
    let mocks = [mock(), mock(), mock()];
    let deps: Vec<_> = mocks.iter().zip(PRICES).map(|(m, p)| (m.addr, p)).collect();
    let cfg = config(&deps, "strategy = \"lowest_cost\"", "");
    let gw = Gateway::start(&cfg, TUNING);
    let counts = spread(&gw, 20, false);
    assert_eq!(count(&counts, "d1"), 20, "{counts:?}");
    let counts = spread(&gw, 10, true);
    assert_eq!(count(&counts, "d1"), 10, "{counts:?}");
    assert_eq!(mocks[0].requests() + mocks[2].requests(), 0);
}

#[test]
fn lowest_cost_goes_to_the_next_cheapest_when_the_cheapest_is_down() {
    let (dear, next) = (mock(), mock());
    let deps = [
        (dear.addr, PRICES[0]),
        (dead_addr(), PRICES[1]),
        (next.addr, PRICES[2]),
    ];
    let cfg = config(
        &deps,
        "strategy = \"lowest_cost\"",
        "[routing]\nbackoff_base_ms = 1\nbackoff_max_ms = 5\n",
    );
    let gw = Gateway::start(&cfg, TUNING);
    let mut failed_over = 0;
    for i in 0..20 {
        let res = gw.chat("m", &format!("x{i}"), i % 2 == 1);
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.header("x-shardgate-deployment"), Some("d2"));
        if res.header("x-shardgate-attempts") == Some("2") {
            failed_over += 1;
        }
    }
    // The cheapest was tried first until its breaker ejected it, never the dearest.
    assert!(
        failed_over >= 1,
        "the dead cheapest deployment was never tried"
    );
    assert_eq!(next.requests(), 20);
    assert_eq!(dear.requests(), 0);
}

/// Two deployments of one slow model, each taking one request at a time (`max_in_flight = 1`
/// on the one shard), with a queue of two that waits `queue_timeout_ms`.
fn saturation_config(latency_ms: u64, queue_timeout_ms: u64) -> (MockServer, MockServer, String) {
    let a = mock_with(&format!("latency_ms={latency_ms}"));
    let b = mock_with(&format!("latency_ms={latency_ms}"));
    let cfg = config(
        &[(a.addr, "max_in_flight = 1"), (b.addr, "max_in_flight = 1")],
        &format!("queue_max = 2\nqueue_timeout_ms = {queue_timeout_ms}"),
        "",
    );
    (a, b, cfg)
}

/// `n` clients at once, each sending until it is served or has been refused `tries` times.
/// Each answer comes with the number of 200 answers received before it.
fn burst(gw: &Gateway, n: usize, tries: usize) -> Vec<(Resp, usize)> {
    let served = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (gw, served) = (gw, &served);
                s.spawn(move || {
                    let mut answers = Vec::new();
                    for t in 0..tries {
                        let res = gw.chat("m", &format!("burst {i}.{t}"), false);
                        let ok = res.status == 200;
                        let before = if ok {
                            served.fetch_add(1, Ordering::SeqCst)
                        } else {
                            served.load(Ordering::SeqCst)
                        };
                        answers.push((res, before));
                        if ok {
                            break;
                        }
                    }
                    answers
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Every answer of a saturated burst is a 200 or our 503 (`no_provider`), never another kind
/// of error. Returns (served, refused, refused without a `Retry-After` of at least 1 s).
fn tally(answers: &[(Resp, usize)]) -> (usize, usize, usize) {
    let (mut ok, mut refused, mut no_retry_after) = (0, 0, 0);
    for (res, _) in answers {
        if res.status == 200 {
            ok += 1;
            continue;
        }
        res.assert_error(503, "no_provider");
        refused += 1;
        let after = res
            .header("retry-after")
            .and_then(|v| v.parse::<u64>().ok());
        if after.is_none_or(|s| s < 1) {
            no_retry_after += 1;
        }
    }
    (ok, refused, no_retry_after)
}

#[test]
fn a_saturated_model_queues_a_bounded_time_then_refuses_with_503() {
    // Upstreams take 1.5 s; the queue waits 0.2 s.
    let (a, b, cfg) = saturation_config(1500, 200);
    let gw = Gateway::start(&cfg, TUNING);
    let n = 12;
    let answers = burst(&gw, n, 1);
    let (ok, refused, _) = tally(&answers);
    // One request per deployment; the two queued and the eight over the queue are refused.
    assert_eq!((ok, refused), (2, n - 2));
    assert_eq!(a.requests() + b.requests(), 2);
    // The queue's figures: every refusal counted, two of them after waiting, none left.
    assert_eq!(
        gw.metric("gateway_queue_refused_total{model=\"m\"}"),
        refused as f64
    );
    assert_eq!(
        gw.metric("gateway_queue_wait_seconds_count{model=\"m\"}"),
        2.0
    );
    assert_eq!(gw.metric("gateway_queue_depth{model=\"m\"}"), 0.0);
    // No refusal waited for a slot to free up: every one came back before either upstream
    // answer, which takes several times the queue timeout.
    for (res, served_before) in &answers {
        if res.status == 503 {
            assert_eq!(*served_before, 0, "a refusal waited for an upstream answer");
        }
    }
    let routes = gw.get("/admin/routes").json();
    let rows = routes["models"]["m"]["deployments"].as_array().unwrap();
    for row in rows {
        assert_eq!(
            row["breaker"], "closed",
            "saturation is not a failure: {routes}"
        );
    }
}

#[test]
fn every_saturation_refusal_carries_retry_after() {
    let (_a, _b, cfg) = saturation_config(1000, 100);
    let gw = Gateway::start(&cfg, TUNING);
    let answers = burst(&gw, 8, 1);
    let (ok, refused, no_retry_after) = tally(&answers);
    assert_eq!((ok, refused), (2, 6));
    assert_eq!(
        no_retry_after, 0,
        "{refused} refused, {no_retry_after} without Retry-After"
    );
}

#[test]
fn a_queued_request_is_served_when_a_deployment_frees_up() {
    // Upstreams take 0.3 s; the queue waits up to 10 s.
    let (a, b, cfg) = saturation_config(300, 10_000);
    let gw = Gateway::start(&cfg, TUNING);
    let answers = burst(&gw, 4, 1);
    let (ok, refused, _) = tally(&answers);
    // Two served at once, two after waiting in the queue for a free deployment.
    assert_eq!((ok, refused), (4, 0));
    assert_eq!(a.requests() + b.requests(), 4);
}

#[test]
fn memory_stays_flat_over_rounds_of_saturating_bursts() {
    let (a, b, cfg) = saturation_config(600, 100);
    let gw = Gateway::start(&cfg, TUNING);
    // Per round, 48 clients each retry a refusal up to 10 times: about 450 requests, nearly
    // all refused at once or after the queue's wait.
    let (rounds, n, tries) = (6, 48, 10);
    let mut rss = Vec::new();
    let (mut served_total, mut refused_total) = (0, 0);
    for _ in 0..rounds {
        let answers = burst(&gw, n, tries);
        let (ok, refused, _) = tally(&answers);
        assert_eq!(ok + refused, answers.len());
        assert!(ok >= 2, "{ok} served");
        served_total += ok;
        refused_total += refused;
        rss.push(gw.rss_kb());
    }
    assert_eq!(a.requests() + b.requests(), served_total as u64);
    let (first, last) = (rss[0], rss[rounds - 1]);
    println!("RSS by round (KiB): {rss:?}; {served_total} served, {refused_total} refused");
    assert!(
        last <= first + 20 * 1024,
        "RSS grew from {first} KiB to {last} KiB over {rounds} rounds: {rss:?}"
    );
}
