//! The response cache end to end: the gateway as a real process with two shards (so most
//! keys are owned by the other shard and looked up over the mesh), the mock as its upstream,
//! whose request counter says what reached it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// A gateway in front of `up` whose model `gpt-mock` is cached for `ttl_s`, with `extra`.
fn cached(up: &shardgate::mock::server::MockServer, ttl_s: u64, extra: &str) -> Gateway {
    let config = upstream_config(up.addr, &format!("cache_ttl_s = {ttl_s}\n{extra}"));
    Gateway::start(&config, TWO_SHARDS)
}

fn post(addr: SocketAddr, body: &str, headers: &[(&str, &str)]) -> Resp {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    request(addr, "POST", "/v1/chat/completions", &h, body.as_bytes())
}

#[test]
fn a_hit_is_served_with_age_and_etag_and_revalidates() {
    let up = mock();
    let gw = cached(&up, 60, "");
    let body = chat_body("gpt-mock", "what is a cache", false);
    let first = post(gw.addr, &body, &[]);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(verdict(&first), "miss");
    // The same request in another member order and spacing is the same key.
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reordered = format!(
        "{{ \"messages\": {},\n \"model\": \"gpt-mock\" }}",
        v["messages"]
    );
    for b in [&body, &reordered] {
        let hit = post(gw.addr, b, &[]);
        assert_eq!(verdict(&hit), "hit");
        assert_eq!(hit.body, first.body, "a hit is the answer as first sent");
        assert!(hit.header("age").is_some());
    }
    assert_eq!(up.requests(), 1);
    let hit = post(gw.addr, &body, &[]);
    let etag = hit.header("etag").unwrap().to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let revalidated = post(gw.addr, &body, &[("if-none-match", &etag)]);
    assert_eq!(revalidated.status, 304);
    assert!(revalidated.body.is_empty());
    let changed = post(gw.addr, &body, &[("if-none-match", "W/\"other\"")]);
    assert_eq!(changed.status, 200);
    // A streamed request is served from the whole answer, as a stream.
    let streamed = post(
        gw.addr,
        &chat_body("gpt-mock", "what is a cache", true),
        &[],
    );
    assert_eq!(verdict(&streamed), "hit");
    assert_eq!(
        stream_text(&streamed.events()),
        first.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
    );
    assert!(streamed.events().len() > 2, "replayed event by event");
    assert_eq!(up.requests(), 1);
    assert_eq!(gw.metric("gateway_cache_hits_total"), 6.0);
    assert!(gw.metric("gateway_cache_cross_shard_lookups_total") >= 1.0);
}

#[test]
fn a_stream_replays_byte_for_byte_on_pass_through() {
    let up = mock();
    let gw = cached(&up, 60, "");
    let body = chat_body("gpt-mock", "stream me", true);
    let first = post(gw.addr, &body, &[]);
    assert_eq!(verdict(&first), "miss");
    let second = post(gw.addr, &body, &[]);
    assert_eq!(verdict(&second), "hit");
    assert_eq!(second.body, first.body, "the same bytes");
    assert_eq!(second.events().last().map(String::as_str), Some("[DONE]"));
    // Asked without usage: the usage chunk is left out of the replay.
    let no_usage = serde_json::json!({
        "model": "gpt-mock", "stream": true,
        "messages": [{"role": "user", "content": "stream me"}],
    });
    let third = post(gw.addr, &no_usage.to_string(), &[]);
    assert_eq!(verdict(&third), "hit");
    assert!(
        !third.text().contains("\"prompt_tokens\""),
        "{}",
        third.text()
    );
    assert_eq!(stream_text(&third.events()), stream_text(&first.events()));
    // Asked whole: the stream is made whole.
    let whole = post(gw.addr, &chat_body("gpt-mock", "stream me", false), &[]);
    assert_eq!(verdict(&whole), "hit");
    assert_eq!(
        whole.json()["choices"][0]["message"]["content"],
        stream_text(&first.events())
    );
    assert_eq!(up.requests(), 1);
}

#[test]
fn one_keys_answer_is_never_served_to_another_under_key_scope() {
    let up = mock();
    let (a, b) = (secret("alpha"), secret("bravo"));
    let extra = format!(
        "\n[auth]\n{}{}",
        key("alpha", &a, "team = \"t\""),
        key("bravo", &b, "team = \"t\"")
    );
    let gw = cached(&up, 60, &extra);
    let body = chat_body("gpt-mock", "private question", false);
    assert_eq!(
        verdict(&post_with_key(gw.addr, "/v1/chat/completions", &a, &body)),
        "miss"
    );
    assert_eq!(
        verdict(&post_with_key(gw.addr, "/v1/chat/completions", &a, &body)),
        "hit"
    );
    let other = post_with_key(gw.addr, "/v1/chat/completions", &b, &body);
    assert_eq!(other.status, 200);
    assert_eq!(verdict(&other), "miss", "key B never gets key A's answer");
    assert_eq!(up.requests(), 2);

    // Under `team` scope the team's keys share answers.
    let up = mock();
    let gw = cached(&up, 60, &format!("\n[cache]\nscope = \"team\"\n{extra}"));
    assert_eq!(
        verdict(&post_with_key(gw.addr, "/v1/chat/completions", &a, &body)),
        "miss"
    );
    assert_eq!(
        verdict(&post_with_key(gw.addr, "/v1/chat/completions", &b, &body)),
        "hit"
    );
    assert_eq!(up.requests(), 1);
}

#[test]
fn request_directives_are_honoured() {
    let up = mock();
    let gw = cached(&up, 1, "");
    let body = chat_body("gpt-mock", "directives", false);
    // no-store: neither read nor written.
    let r = post(gw.addr, &body, &[("cache-control", "no-store")]);
    assert_eq!(verdict(&r), "bypass");
    let r = post(gw.addr, &body, &[("x-shardgate-cache", "off")]);
    assert_eq!(verdict(&r), "bypass");
    assert_eq!(
        verdict(&post(gw.addr, &body, &[])),
        "miss",
        "nothing was stored"
    );
    assert_eq!(verdict(&post(gw.addr, &body, &[])), "hit");
    assert_eq!(up.requests(), 3);
    // no-cache and max-age=0: fetched again (and stored).
    assert_eq!(
        verdict(&post(gw.addr, &body, &[("cache-control", "no-cache")])),
        "miss"
    );
    assert_eq!(
        verdict(&post(gw.addr, &body, &[("cache-control", "max-age=0")])),
        "miss"
    );
    assert_eq!(up.requests(), 5);
    assert_eq!(
        verdict(&post(gw.addr, &body, &[("cache-control", "max-age=60")])),
        "hit"
    );
    // The TTL (1 s): the answer expires.
    poll_until(Duration::from_secs(5), "the entry to expire", || {
        verdict(&post(gw.addr, &body, &[])) == "miss"
    });
    // A request's own TTL (capped by max_ttl_s) keeps its answer longer than the model's.
    let long = chat_body("gpt-mock", "keep me", false);
    assert_eq!(
        verdict(&post(gw.addr, &long, &[("x-shardgate-cache-ttl", "60")])),
        "miss"
    );
    let short = chat_body("gpt-mock", "drop me", false);
    assert_eq!(verdict(&post(gw.addr, &short, &[])), "miss");
    poll_until(Duration::from_secs(5), "the short entry to expire", || {
        verdict(&post(gw.addr, &short, &[])) == "miss"
    });
    assert_eq!(verdict(&post(gw.addr, &long, &[])), "hit");
    assert!(gw.metric("gateway_cache_bypassed_total") >= 2.0);
}

#[test]
fn errors_cut_streams_and_oversized_answers_are_never_stored() {
    let up = mock();
    let gw = cached(
        &up,
        60,
        "\n[routing]\nmax_attempts = 1\n\n[cache]\nmax_entry_bytes = 1024\n",
    );
    // An error answer.
    up.set_knobs(shardgate::mock::Knobs::parse("status=500").unwrap());
    let body = chat_body("gpt-mock", "fails once", false);
    assert_ne!(post(gw.addr, &body, &[]).status, 200);
    up.reset_knobs();
    assert_eq!(
        verdict(&post(gw.addr, &body, &[])),
        "miss",
        "the error was not stored"
    );
    // A stream cut by the upstream.
    up.set_knobs(shardgate::mock::Knobs::parse("reset_after=2").unwrap());
    let stream = chat_body("gpt-mock", "cut me short please", true);
    let cut = post(gw.addr, &stream, &[]);
    assert_eq!(cut.status, 200);
    assert_ne!(cut.events().last().map(String::as_str), Some("[DONE]"));
    up.reset_knobs();
    assert_eq!(
        verdict(&post(gw.addr, &stream, &[])),
        "miss",
        "the cut stream was not stored"
    );
    // An answer over the entry size limit (a stream of many events).
    up.set_knobs(shardgate::mock::Knobs::parse("chunks=30").unwrap());
    let big = chat_body("gpt-mock", "a long answer", true);
    let r = post(gw.addr, &big, &[]);
    assert!(r.body.len() > 1024, "{}", r.body.len());
    assert_eq!(
        verdict(&post(gw.addr, &big, &[])),
        "miss",
        "too large to store"
    );
    assert!(gw.metric("gateway_cache_not_stored_total") >= 3.0);
}

#[test]
fn identical_requests_in_flight_make_one_upstream_call() {
    for stream in [false, true] {
        let up = mock_with("latency_ms=400");
        let gw = cached(&up, 60, "");
        let body = chat_body("gpt-mock", "everyone asks this", stream);
        let all = burst(gw.addr, 100, move |addr, _| post(addr, &body, &[]));
        let mut verdicts = std::collections::BTreeMap::new();
        for r in &all {
            *verdicts
                .entry(format!("{} {}", r.status, verdict(r)))
                .or_insert(0) += 1;
        }
        assert_eq!(up.requests(), 1, "stream={stream}: {verdicts:?}");
        let first = &all[0];
        for r in &all {
            assert_eq!(r.status, 200, "{}", r.text());
            if stream {
                assert_eq!(stream_text(&r.events()), stream_text(&first.events()));
                assert_eq!(r.events().last().map(String::as_str), Some("[DONE]"));
            } else {
                assert_eq!(r.json()["choices"], first.json()["choices"]);
            }
        }
        let coalesced = all.iter().filter(|r| verdict(r) == "coalesced").count();
        let hits = all.iter().filter(|r| verdict(r) == "hit").count();
        assert_eq!(coalesced + hits, 99, "stream={stream}");
        assert_eq!(
            gw.metric("gateway_cache_coalesced_total") as usize,
            coalesced
        );
    }
}

#[test]
fn followers_of_a_failed_leader_still_get_an_answer() {
    let up = mock_with("latency_ms=600;status=500");
    let gw = cached(&up, 60, "\n[routing]\nmax_attempts = 1\n");
    let body = chat_body("gpt-mock", "the leader fails", false);
    let leader = {
        let body = body.clone();
        let addr = gw.addr;
        std::thread::spawn(move || post(addr, &body, &[]))
    };
    poll_until(
        Duration::from_secs(5),
        "the leader to reach the mock",
        || up.requests() == 1,
    );
    // The next attempt is healthy (and slow enough for the others to follow it).
    up.set_knobs(shardgate::mock::Knobs::parse("latency_ms=300").unwrap());
    let followers = burst(gw.addr, 20, move |addr, _| post(addr, &body, &[]));
    let leader = leader.join().unwrap();
    assert_ne!(leader.status, 200, "the leader's own answer is its failure");
    for r in &followers {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        up.requests(),
        2,
        "one failed call, then one follower led the next"
    );
}

#[test]
fn hits_cost_no_tokens_and_are_counted() {
    let up = mock();
    let k = secret("tokens");
    // Room for about two requests' estimated tokens a minute: were hits charged, the third
    // request would be refused.
    let extra = format!(
        "\n[limits]\nexact = true\noutput_estimate_tokens = 100\n\n[auth]\n{}",
        key("tokens", &k, "limits = { tpm = 250 }")
    );
    let gw = cached(&up, 60, &extra);
    let body = chat_body("gpt-mock", "free when cached", false);
    let first = post_with_key(gw.addr, "/v1/chat/completions", &k, &body);
    assert_eq!(verdict(&first), "miss");
    for _ in 0..20 {
        let r = post_with_key(gw.addr, "/v1/chat/completions", &k, &body);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(verdict(&r), "hit");
    }
    assert_eq!(up.requests(), 1);
    assert_eq!(gw.metric("gateway_cache_hits_total"), 20.0);
    assert_eq!(gw.metric("gateway_cache_misses_total"), 1.0);
}

#[test]
fn each_invalidation_selector_empties_what_it_names() {
    const TOKEN: &str = "adm-cache-0123456789abcdef0123456789abcdef";
    let up = mock();
    let (a, b) = (secret("inv-a"), secret("inv-b"));
    let config = upstream_config(
        up.addr,
        &format!(
            "cache_ttl_s = 60\n{}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"SG_ADMIN\"\n\n[auth]\n{}{}",
            model("other-mock", "mock") + "cache_ttl_s = 60\n",
            key("inv-a", &a, "team = \"red\""),
            key("inv-b", &b, "")
        ),
    );
    let gw = Gateway::start_with_env(&config, TWO_SHARDS, &[("SG_ADMIN", TOKEN)]);
    let admin = gw.admin.unwrap();
    let delete = |query: &str| {
        let auth = format!("Bearer {TOKEN}");
        let path = format!("/admin/cache?{query}");
        let r = request(admin, "DELETE", &path, &[("authorization", &auth)], b"");
        assert_eq!(r.status, 202, "{query}: {}", r.text());
    };
    let ask = |k: &str, model: &str, text: &str, tags: &str| {
        let body = chat_body(model, text, false);
        let auth = format!("Bearer {k}");
        let mut h = vec![
            ("content-type", "application/json"),
            ("authorization", &*auth),
        ];
        if !tags.is_empty() {
            h.push(("x-shardgate-cache-tags", tags));
        }
        let r = request(gw.addr, "POST", "/v1/chat/completions", &h, body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        (
            verdict(&r).to_owned(),
            r.header("x-shardgate-cache-key").unwrap().to_owned(),
        )
    };
    // Each case: fill, check it is cached, invalidate, check only what was named went.
    let cases: [(&str, &str, &str, &str, &str); 6] = [
        // (key, model, text, tags, what to delete: `KEY` stands for the answer's own key)
        (&a, "gpt-mock", "by key", "", "key=KEY"),
        (&a, "other-mock", "by model", "", "model=other-mock"),
        (&a, "gpt-mock", "by tenant", "", "tenant=key:inv-a"),
        (&b, "gpt-mock", "by tag", "release-7", "tag=release-7"),
        (&b, "gpt-mock", "by prefix", "", "prefix=PREFIX"),
        (&b, "gpt-mock", "everything", "", "all=true"),
    ];
    let keeper = |text: &str| ask(&b, "gpt-mock", &format!("keeper {text}"), "");
    for (k, model_name, text, tags, what) in cases {
        assert_eq!(ask(k, model_name, text, tags).0, "miss");
        let (hit, cache_key) = ask(k, model_name, text, tags);
        assert_eq!(hit, "hit", "{what}");
        assert_eq!(keeper(text).0, "miss");
        let query = what
            .replace("KEY", &cache_key)
            .replace("PREFIX", &cache_key[..10]);
        delete(&query);
        poll_until(Duration::from_secs(5), what, || {
            ask(k, model_name, text, tags).0 == "miss"
        });
        let kept = keeper(text).0;
        if what == "all=true" {
            assert_eq!(kept, "miss", "all=true empties everything");
        } else {
            assert_eq!(kept, "hit", "{what} removed only what it named");
        }
    }
    assert!(gw.metric("gateway_cache_invalidated_total") >= 6.0);
}

#[test]
fn a_restart_keeps_serving_hits_from_the_warm_snapshot() {
    let up = mock();
    let dir = std::env::temp_dir().join(format!("shardgate-cache-warm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = upstream_config(
        up.addr,
        &format!(
            "cache_ttl_s = 600\n\n[state]\ndir = \"{}\"\n",
            dir.display()
        ),
    );
    let texts: Vec<String> = (0..20).map(|i| format!("remember me {i}")).collect();
    let mut first = Vec::new();
    {
        let mut gw = Gateway::start(&config, TWO_SHARDS);
        for t in &texts {
            let r = post(gw.addr, &chat_body("gpt-mock", t, t.ends_with('7')), &[]);
            assert_eq!(verdict(&r), "miss");
            first.push(r.body);
        }
        gw.sigterm();
        assert!(
            gw.wait(Duration::from_secs(20))
                .is_some_and(|s| s.success())
        );
    }
    assert!(dir.join("cache.snapshot").exists());
    let gw = Gateway::start(&config, TWO_SHARDS);
    for (t, body) in texts.iter().zip(&first) {
        let r = post(gw.addr, &chat_body("gpt-mock", t, t.ends_with('7')), &[]);
        assert_eq!(verdict(&r), "hit", "{t}");
        assert_eq!(&r.body, body, "the same answer as before the restart");
    }
    assert_eq!(up.requests(), 20, "nothing fetched again");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_hot_answer_is_copied_to_every_shard() {
    let up = mock();
    let gw = cached(&up, 60, "");
    let body = chat_body("gpt-mock", "everybody wants this one", false);
    assert_eq!(verdict(&post(gw.addr, &body, &[])), "miss");
    // New connections land on both shards; once the warmer has published the key as hot
    // (each second), the shard that does not own it answers from its own copy.
    poll_until(
        Duration::from_secs(10),
        "a hit from a shard's own copy",
        || {
            for _ in 0..20 {
                assert_eq!(verdict(&post(gw.addr, &body, &[])), "hit");
            }
            gw.metric("gateway_cache_replica_hits_total") > 0.0
        },
    );
    assert_eq!(up.requests(), 1);
}

/// One keep-alive connection: every request on it reaches the same shard.
struct Conn(std::net::TcpStream);

impl Conn {
    fn open(addr: SocketAddr) -> Self {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Self(s)
    }

    /// A chat request whose answer has a `content-length` (not streamed).
    fn post(&mut self, body: &str, headers: &[(&str, &str)]) -> Resp {
        use std::io::{Read, Write};
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        let head = request_head("POST", "/v1/chat/completions", &h, body.len());
        self.0.write_all(head.as_bytes()).unwrap();
        self.0.write_all(body.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let mut byte = [0u8; 1];
        while !raw.ends_with(b"\r\n\r\n") {
            self.0.read_exact(&mut byte).unwrap();
            raw.push(byte[0]);
        }
        let length: usize = String::from_utf8_lossy(&raw)
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .expect("a content-length");
        let mut rest = vec![0u8; length];
        self.0.read_exact(&mut rest).unwrap();
        raw.extend_from_slice(&rest);
        common::parse_response(&raw)
    }
}

/// Two shards caching without the warmer's hot-key replicas (only the copies a shard keeps
/// when it crosses to the owner stop the hops), and 16 prompts sent in rounds.
struct CopyRounds {
    gw: Gateway,
    up: shardgate::mock::server::MockServer,
    bodies: Vec<String>,
}

impl CopyRounds {
    fn new(prompt: &str) -> Self {
        let up = mock();
        let gw = cached(&up, 60, "\n[cache]\nreplicate_hot_keys = 0\n");
        let bodies = (0..16)
            .map(|i| chat_body("gpt-mock", &format!("{prompt} {i}"), false))
            .collect();
        Self { gw, up, bodies }
    }

    /// Send every prompt on `conn`, each answered `want`: how many lookups crossed shards.
    fn round(&self, conn: &mut Conn, want: &str, headers: &[(&str, &str)]) -> f64 {
        let before = self.gw.metric("gateway_cache_cross_shard_lookups_total");
        for b in &self.bodies {
            assert_eq!(verdict(&conn.post(b, headers)), want);
        }
        self.gw.metric("gateway_cache_cross_shard_lookups_total") - before
    }
}

#[test]
fn a_shard_keeps_a_copy_of_what_it_fetched_from_the_owner() {
    let t = CopyRounds::new("copy me");
    let mut conn = Conn::open(t.gw.addr);
    let owned_elsewhere = t.round(&mut conn, "miss", &[]);
    assert!(
        owned_elsewhere > 0.0,
        "some of 16 keys are the other shard's"
    );
    assert_eq!(
        t.round(&mut conn, "hit", &[]),
        owned_elsewhere,
        "each crosses once"
    );
    assert_eq!(
        t.round(&mut conn, "hit", &[]),
        0.0,
        "then is answered from the copy"
    );
    assert!(t.gw.metric("gateway_cache_replica_hits_total") >= owned_elsewhere);
    // `no-cache` fetches anew and drops this shard's copies: the next hits ask the owner
    // for the new answers.
    t.round(&mut conn, "miss", &[("cache-control", "no-cache")]);
    assert_eq!(t.round(&mut conn, "hit", &[]), owned_elsewhere);
    assert_eq!(t.up.requests(), 32);
}

#[test]
fn a_new_answer_at_the_owner_drops_the_other_shards_copies() {
    let t = CopyRounds::new("forget me");
    // Connection `a` stores the answers, then keeps copies of those the other shard owns.
    let mut a = Conn::open(t.gw.addr);
    t.round(&mut a, "miss", &[]);
    let copied = t.round(&mut a, "hit", &[]);
    assert!(copied > 0.0 && copied < 16.0, "{copied} of 16 keys crossed");
    assert_eq!(t.round(&mut a, "hit", &[]), 0.0);
    // A connection on the other shard: its hits cross for the keys `a`'s shard owns (on
    // `a`'s shard they would all be answered from the copies).
    let mut b = (0..32)
        .map(|_| Conn::open(t.gw.addr))
        .find_map(|mut c| (t.round(&mut c, "hit", &[]) > 0.0).then_some(c))
        .expect("a connection on the other shard");
    // `no-cache` there replaces every answer; the keys its shard owns are the ones `a`'s shard
    // holds copies of, and their owner tells it to drop them.
    t.round(&mut b, "miss", &[("cache-control", "no-cache")]);
    let mut crossed = 0.0;
    poll_until(Duration::from_secs(10), "a's copies dropped", || {
        crossed += t.round(&mut a, "hit", &[]);
        assert!(crossed <= copied, "{crossed} > {copied}");
        crossed == copied
    });
    assert_eq!(t.up.requests(), 32);
}

#[test]
fn memory_stays_within_the_cache_budget_under_a_working_set_ten_times_larger() {
    let up = mock();
    let extra = format!(
        "cache_ttl_s = 600\n{}cache_ttl_s = 600\n",
        model("big", "mock;chunks=200")
    );
    let budget_mib = 4u64;
    let tuning = format!("{ONE_SHARD}\n[memory]\ncache_mib_per_shard = {budget_mib}\n");
    let gw = Gateway::start(&upstream_config(up.addr, &extra), &tuning);
    let ask = |i: usize| {
        let r = post(
            gw.addr,
            &chat_body("big", &format!("working set {i}"), true),
            &[],
        );
        assert_eq!(r.status, 200);
        r.body.len()
    };
    // Warm the gateway's own buffers first, with answers of the same size.
    for i in 0..50 {
        ask(i);
    }
    let before_kb = gw.rss_kb();
    let mut sent = 0usize;
    let mut i = 50;
    while sent < (10 * budget_mib as usize) << 20 {
        sent += ask(i);
        i += 1;
    }
    let after_kb = gw.rss_kb();
    let held = gw.metric("gateway_cache_bytes") as u64;
    let grew_kb = after_kb.saturating_sub(before_kb);
    println!(
        "{i} answers, {} MiB through a {budget_mib} MiB cache: {held} bytes held, RSS {before_kb} → {after_kb} kB (+{grew_kb} kB)",
        sent >> 20
    );
    assert!(held <= budget_mib << 20, "{held}");
    assert!(gw.metric("gateway_cache_evictions_total") > 0.0);
    assert!(
        grew_kb <= (budget_mib << 10) * 11 / 10,
        "RSS grew {grew_kb} kB for a {budget_mib} MiB cache"
    );
}

#[test]
fn embeddings_are_cached_too() {
    let up = mock();
    let gw = cached(&up, 60, "");
    let body = r#"{"model":"gpt-mock","input":["one","two"]}"#;
    let first = request(
        gw.addr,
        "POST",
        "/v1/embeddings",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(verdict(&first), "miss");
    let reordered = r#"{ "input": ["one", "two"], "model": "gpt-mock" }"#;
    let second = request(
        gw.addr,
        "POST",
        "/v1/embeddings",
        &[("content-type", "application/json")],
        reordered.as_bytes(),
    );
    assert_eq!(verdict(&second), "hit");
    assert_eq!(second.body, first.body);
    assert_eq!(
        up.stats()
            .embeddings
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The same body on the chat route is another key.
    let chat = post(gw.addr, body, &[]);
    assert_ne!(verdict(&chat), "hit");
}

#[test]
fn a_semantic_hit_through_a_configured_embeddings_model() {
    const TOKEN: &str = "adm-sem-0123456789abcdef0123456789abcdef";
    // The mock's embeddings are fixed vectors per text: pick two questions it embeds close.
    let cos = |a: &str, b: &str| {
        let (mut x, mut y) = (
            shardgate::mock::embeddings::vector(a, 8),
            shardgate::mock::embeddings::vector(b, 8),
        );
        shardgate::cache::index::normalize(&mut x);
        shardgate::cache::index::normalize(&mut y);
        shardgate::cache::index::dot(&x, &y)
    };
    let fruits = [
        "apples", "pears", "plums", "figs", "limes", "kiwis", "dates", "grapes", "melons",
        "cherries", "lemons", "mangoes", "peaches", "berries", "oranges", "quinces",
    ];
    let texts: Vec<String> = fruits
        .iter()
        .map(|f| format!("tell me about {f}"))
        .collect();
    let (a, b, sim) = texts
        .iter()
        .flat_map(|a| texts.iter().map(move |b| (a, b)))
        .filter(|(a, b)| a != b)
        .map(|(a, b)| (a, b, cos(a, b)))
        .max_by(|x, y| x.2.total_cmp(&y.2))
        .unwrap();
    assert!(sim > 0.5, "no close pair among the mock's vectors: {sim}");
    let threshold = sim - 0.01;
    let up = mock();
    let config = upstream_config(
        up.addr,
        &format!(
            "cache_ttl_s = 60\nsemantic = \"on\"\nsemantic_threshold = {threshold}\n{}\n\
             [cache.semantic]\nembeddings = \"embed-mock\"\ntimeout_ms = 5000\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"SG_ADMIN\"\n",
            model("embed-mock", "mock")
        ),
    );
    let gw = Gateway::start_with_env(&config, TWO_SHARDS, &[("SG_ADMIN", TOKEN)]);
    let first = gw.chat("gpt-mock", a, false);
    assert_eq!(verdict(&first), "miss", "{}", first.text());
    let hit = gw.chat("gpt-mock", b, false);
    assert_eq!(verdict(&hit), "semantic-hit", "{}", gw.stderr());
    assert_eq!(hit.body, first.body);
    let shown: f32 = hit
        .header("x-shardgate-cache-similarity")
        .unwrap()
        .parse()
        .unwrap();
    assert!((shown - sim).abs() < 1e-3, "{shown} vs {sim}");
    // Chat went upstream once; the embeddings calls went to the same mock.
    assert_eq!(gw.metric("gateway_cache_semantic_hits_total"), 1.0);
    // Invalidating the served answer takes its question out of the index too.
    let key = first.header("x-shardgate-cache-key").unwrap();
    let auth = format!("Bearer {TOKEN}");
    let r = request(
        gw.admin.unwrap(),
        "DELETE",
        &format!("/admin/cache?key={key}"),
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 202);
    poll_until(Duration::from_secs(10), "index emptied", || {
        gw.metric("gateway_cache_semantic_entries") <= 1.0
    });
    let after = gw.chat("gpt-mock", b, false);
    assert_eq!(verdict(&after), "miss");
    // A question far from every other is a semantic miss.
    let (c, far) = texts
        .iter()
        .map(|c| (c, cos(c, b)))
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .unwrap();
    assert!(far < threshold);
    assert_eq!(verdict(&gw.chat("gpt-mock", c, false)), "miss");
    assert!(gw.metric("gateway_cache_semantic_misses_total") >= 1.0);
}

#[test]
fn a_hot_answer_is_refreshed_before_it_expires_and_charged_to_the_refresh_key() {
    let up = mock();
    let (user, warmer) = (secret("rf-user"), secret("rf-warmer"));
    let config = upstream_config(
        up.addr,
        &format!(
            "cache_ttl_s = 3\nprice = {{ input = 1.0, output = 2.0 }}\n\n\
             [cache]\nrefresh_before_s = 2\nrefresh_key = \"warmer\"\n\n[auth]\n{}{}",
            key("user", &user, "team = \"app\""),
            key("warmer", &warmer, "team = \"ops\""),
        ),
    );
    let gw = Gateway::start(&config, TWO_SHARDS);
    let body = chat_body("gpt-mock", "a popular question", false);
    let ask = || post_with_key(gw.addr, "/v1/chat/completions", &user, &body);
    let first = ask();
    assert_eq!(verdict(&first), "miss", "{}", first.text());
    // Hot: looked up often enough for the warmer (8 lookups), then read once more.
    for _ in 0..10 {
        assert_eq!(verdict(&ask()), "hit");
    }
    poll_until(Duration::from_secs(10), "a refresh", || {
        gw.metric("gateway_cache_refreshed_total") >= 1.0
    });
    assert_eq!(up.requests(), 2, "one fetch and one refresh");
    // The refreshed answer is served: younger than the first, same key, same tenant.
    let hit = ask();
    assert_eq!(verdict(&hit), "hit");
    assert_eq!(
        hit.header("x-shardgate-cache-key"),
        first.header("x-shardgate-cache-key")
    );
    assert_eq!(hit.body, first.body);
    // Charged to the refresh key's team, not the user's.
    poll_until(Duration::from_secs(5), "the refresh's spend", || {
        gw.metric("gateway_team_spend_usd_total{team=\"ops\"}") > 0.0
    });
    let app = gw.metric("gateway_team_spend_usd_total{team=\"app\"}");
    // Read after the refresh: refreshed again before it expires; then nobody reads it, and it
    // is left to expire.
    poll_until(Duration::from_secs(10), "a second refresh", || {
        gw.metric("gateway_cache_refreshed_total") >= 2.0
    });
    let quiet_since = std::time::Instant::now();
    poll_until(Duration::from_secs(10), "two TTLs unread", || {
        quiet_since.elapsed() >= Duration::from_secs(6)
    });
    assert_eq!(gw.metric("gateway_cache_refreshed_total"), 2.0);
    assert_eq!(gw.metric("gateway_cache_refresh_failures_total"), 0.0);
    assert_eq!(up.requests(), 3);
    assert_eq!(verdict(&ask()), "miss", "expired once nobody read it");
    poll_until(
        Duration::from_secs(5),
        "the user's spend on the miss",
        || gw.metric("gateway_team_spend_usd_total{team=\"app\"}") > app,
    );
}

#[test]
fn the_access_log_says_hit_or_miss() {
    let up = mock();
    let config = upstream_config(up.addr, "cache_ttl_s = 60\n")
        .replace("[server]\n", "[server]\naccess_log = true\n");
    // At level warn: the access log, once turned on, is written whatever the level.
    let gw = Gateway::start_with_env(&config, ONE_SHARD, &[("RUST_LOG", "warn")]);
    let body = chat_body("gpt-mock", "log me", false);
    let miss = post(gw.addr, &body, &[]);
    let hit = post(gw.addr, &body, &[]);
    assert_eq!((verdict(&miss), verdict(&hit)), ("miss", "hit"));
    let line = |r: &Resp| {
        let id = r.header("x-request-id").unwrap().to_owned();
        poll_until(Duration::from_secs(5), "the access log line", || {
            gw.stderr().lines().any(|l| l.contains(&id))
        });
        gw.stderr()
            .lines()
            .find(|l| l.contains(&id))
            .unwrap()
            .to_owned()
    };
    let (m, h) = (line(&miss), line(&hit));
    assert!(
        !gw.stderr().contains("Listening."),
        "other INFO lines stay off"
    );
    for (l, verdict) in [(&m, "miss"), (&h, "hit")] {
        assert!(l.contains("shardgate::access"), "{l}");
        assert!(
            l.contains("POST") && l.contains("/v1/chat/completions"),
            "{l}"
        );
        assert!(l.contains("status=200"), "{l}");
        assert!(
            l.contains(&format!("cache=\"{verdict}\"")) || l.contains(&format!("cache={verdict}")),
            "{l}"
        );
    }
}
