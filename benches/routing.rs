#![allow(missing_docs)]
#![allow(
    clippy::panic,
    reason = "a bench stops on a broken set-up; it serves no requests"
)]
//! Routing on the request path: building a plan (`Router::plan`) for 2, 8 and 64 deployments
//! under each strategy, the per-attempt bookkeeping (`Router::start` + `Router::end`, the
//! breaker alone), and the scorer's update path (`DeploymentStats::observe`,
//! `ScoreTable::compute`). Issue 11's target: a plan for 8 deployments under 1 µs.
//!
//! Every router is warmed first the way a shard's is after some traffic: latency estimates
//! from finished attempts, a few requests in flight here and elsewhere, and a score table
//! computed from 30 observations per deployment (with the shards' in-flight counts) handed
//! over as `runtime::apply` does.
//!
//! Machine: 2-core shared VM (the CI kind), rustc 1.95, `cargo bench --bench routing`.
//! Last numbers: median per iteration, 2026-12-02, commit 7aef9cd with the tree's uncommitted
//! routing edits of the day, load average ~2 from other builds:
//!
//! | plan, `Needs::default()` |      2 |      8 |     64 |
//! |--------------------------|--------|--------|--------|
//! | weighted                 | 122 ns | 324 ns | 3.5 µs |
//! | round_robin              | 124 ns | 319 ns | 2.0 µs |
//! | least_busy               | 129 ns | 338 ns | 3.7 µs |
//! | lowest_latency           | 186 ns | 326 ns | 2.3 µs |
//! | lowest_cost              | 134 ns | 382 ns | 3.2 µs |
//! | score                    | 152 ns | 314 ns | 4.2 µs |
//! | score, vision + `eu` tag |        | 200 ns |        |
//!
//! Router start + end: 41 ns (success), 68 ns (failure). Breaker admit + record: 20 ns
//! (success), 27 ns (failure); eject → cooldown → probe → close: 129 ns. Scorer: observe
//! 39 ns; compute 570 ns (8), 3.3 µs (64).
//!
//! Where a plan for 8 goes (perf, `score` and `round_robin`): the rule checks and candidate
//! figures in `Router::extend`/`skip` (~40%), the u128 division of `Price::cost` for every
//! candidate (~11%, though only `lowest_cost` reads it), three small allocations (~10%),
//! the strategy's ordering (3% round robin, 16–30% the sorting ones). At 64, `weighted`
//! spends ~40% in smooth weighted round robin's linear search of its cursor.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shardgate::config::{Capabilities, Config};
use shardgate::routing::breaker::{Breaker, BreakerConfig};
use shardgate::routing::plan::{Needs, Router};
use shardgate::scoring::{
    BreakerView, DeploymentInfo, DeploymentStats, Observation, ScoreTable, Weights,
    table_min_samples,
};
use shardgate::{DeploymentIdx, ModelIdx};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [usize; 3] = [2, 8, 64];
const STRATEGIES: [&str; 6] = [
    "weighted",
    "round_robin",
    "least_busy",
    "lowest_latency",
    "lowest_cost",
    "score",
];

/// One model, `main`, over `n` deployments spread across four providers, each with its own
/// weight, price, quality, tags and capabilities. `extra` is appended (a `[routing]` table).
fn config(n: usize, strategy: &str, extra: &str) -> Arc<Config> {
    let mut toml = String::new();
    for p in 0..4 {
        toml += &format!(
            "[providers.p{p}]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{}/v1\"\n\n",
            9000 + p
        );
    }
    toml += &format!("[models.main]\nstrategy = \"{strategy}\"\n");
    for i in 0..n {
        let tags = if i % 3 == 0 {
            r#"["eu", "fast"]"#
        } else {
            r#"["us"]"#
        };
        // Writing to a String cannot fail.
        let _ = write!(
            toml,
            "[[models.main.deployments]]\nid = \"d{i}\"\nprovider = \"p{}\"\nmodel = \"m{i}\"\n\
             weight = {}\nquality = {:.1}\nprice = {{ input = {:.2}, output = {:.2} }}\n\
             vision = {}\ntags = {tags}\n\n",
            i % 4,
            1 + i % 5,
            0.5 + 0.1 * (i % 5) as f64,
            0.15 + 0.1 * (i % 7) as f64,
            0.60 + 0.4 * (i % 7) as f64,
            i % 2 == 0,
        );
    }
    toml += extra;
    let env = |_: &str| None;
    Arc::new(Config::from_toml(&toml, "bench", &env).unwrap_or_else(|e| panic!("{e}")))
}

fn main_model(config: &Config) -> ModelIdx {
    config
        .model("main")
        .map(|m| m.idx())
        .unwrap_or_else(|| panic!("no model `main`"))
}

/// Ids of `config`'s deployments.
fn deployments(config: &Config) -> impl Iterator<Item = DeploymentIdx> + use<> {
    (0..config.deployments.len()).map(|i| DeploymentIdx(i as u32))
}

/// What the scorer has after 30 attempts per deployment (every tenth failing), spread over
/// the last 3 s, each deployment at its own latency.
fn warm_stats(n: usize, t0: Instant) -> Vec<DeploymentStats> {
    (0..n)
        .map(|i| {
            let mut s = DeploymentStats::default();
            for k in 0..30u64 {
                let ms = 20 + 7 * i as u64 + k % 5;
                s.observe(
                    Observation {
                        ok: k % 10 != 9,
                        latency: Duration::from_millis(ms),
                        ttfb: Duration::from_millis(ms / 4),
                    },
                    t0 + Duration::from_millis(100 * k),
                );
            }
            s
        })
        .collect()
}

/// A router as a shard holds it after some traffic (see the header). Returns it with the
/// time "now" of its figures.
fn warm_router(config: &Arc<Config>) -> (Router, Instant) {
    let t0 = Instant::now();
    let now = t0 + Duration::from_secs(3);
    let mut router = Router::new(config.clone(), 42);
    for d in deployments(config) {
        let i = d.get() as u64;
        for k in 0..4u64 {
            let at = t0 + Duration::from_millis(500 * k);
            let ms = 20 + 7 * i + k;
            // A whole answer (total time), then a stream (time to first token).
            for (stream, ms) in [(false, ms), (true, ms / 4)] {
                if let Some(probe) = router.start(d, at) {
                    router.end(d, Some(true), probe, Duration::from_millis(ms), stream, at);
                }
            }
        }
        // A few requests in flight here.
        for _ in 0..(i % 3) {
            router.start(d, now);
        }
    }
    // The scorer's snapshot, handed over as `runtime::apply` does.
    let infos = DeploymentInfo::from_config(config);
    let mut stats = warm_stats(infos.len(), t0);
    let breakers = vec![BreakerView::default(); infos.len()];
    let mut table = ScoreTable::compute(
        1,
        &infos,
        &mut stats,
        &breakers,
        Weights::default(),
        table_min_samples(),
        now,
    );
    // Two shards report their requests in flight: this one (0) and another.
    table.in_flight = vec![
        (0..infos.len()).map(|i| (i % 3) as u32).collect(),
        (0..infos.len()).map(|i| (i % 4) as u32).collect(),
    ];
    for d in deployments(config) {
        let elsewhere = table.in_flight_elsewhere(0, d);
        if let Some(live) = router.live_mut(d) {
            live.merged_open_until = table.open_until(d);
            live.score = table.trusted_score(d);
            live.in_flight_elsewhere = elsewhere;
        }
    }
    (router, now)
}

fn plan(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    for strategy in STRATEGIES {
        for n in SIZES {
            let config = config(n, strategy, "");
            let model = main_model(&config);
            let (mut router, now) = warm_router(&config);
            let needs = Needs::default();
            g.bench_with_input(BenchmarkId::new(strategy, n), &n, |b, _| {
                b.iter(|| router.plan(black_box(model), black_box(&needs), now))
            });
        }
    }
    // Rules at work: a request with images (half the deployments lack vision) asking for
    // the `eu` tag (a third carry it).
    let config = config(8, "score", "");
    let model = main_model(&config);
    let (mut router, now) = warm_router(&config);
    let needs = Needs {
        caps: Capabilities {
            vision: true,
            ..Capabilities::NONE
        },
        tags: &["eu"],
        ..Needs::default()
    };
    let planned = router.plan(model, &needs, now);
    assert!(!planned.steps.is_empty(), "the filter leaves some");
    g.bench_function(BenchmarkId::new("score_vision_and_tag", 8), |b| {
        b.iter(|| router.plan(black_box(model), black_box(&needs), now))
    });
    g.finish();
}

/// Breaker thresholds out of reach, so that a failure is measured as the common case (one
/// that does not trip the breaker) however many iterations run.
const NO_TRIP: &str = "[routing.breaker]\nconsecutive_failures = 4000000000\n\
                       error_ratio = 1.0\nmin_volume = 4000000000000\n";

fn no_trip() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: u32::MAX,
        error_ratio: 1.0,
        min_volume: u64::MAX,
        ..BreakerConfig::default()
    }
}

fn bookkeeping(c: &mut Criterion) {
    let mut g = c.benchmark_group("attempt");
    let config = config(8, "score", NO_TRIP);
    let (mut router, now) = warm_router(&config);
    let d = DeploymentIdx(3);
    let mut t = now;
    g.bench_function("router_start_end_success", |b| {
        b.iter(|| {
            t += Duration::from_micros(50);
            let probe = router.start(black_box(d), t).unwrap_or(false);
            router.end(d, Some(true), probe, Duration::from_millis(40), false, t)
        })
    });
    g.bench_function("router_start_end_failure", |b| {
        b.iter(|| {
            t += Duration::from_micros(50);
            let probe = router.start(black_box(d), t).unwrap_or(false);
            router.end(d, Some(false), probe, Duration::from_millis(40), false, t)
        })
    });

    let mut breaker = Breaker::new(no_trip());
    let mut t = now;
    g.bench_function("breaker_admit_record_success", |b| {
        b.iter(|| {
            t += Duration::from_micros(50);
            black_box(breaker.admit(t));
            breaker.record(black_box(true), false, true, t)
        })
    });
    g.bench_function("breaker_admit_record_failure", |b| {
        b.iter(|| {
            t += Duration::from_micros(50);
            black_box(breaker.admit(t));
            breaker.record(black_box(false), false, true, t)
        })
    });
    // A whole cycle at the default thresholds: five failures eject, the cooldown passes, a
    // probe succeeds and closes.
    let mut breaker = Breaker::new(BreakerConfig::default());
    let mut t = now;
    g.bench_function("breaker_eject_probe_close_cycle", |b| {
        b.iter(|| {
            for _ in 0..5 {
                t += Duration::from_micros(50);
                black_box(breaker.admit(t));
                breaker.record(false, false, true, t);
            }
            t += BreakerConfig::default().base_cooldown;
            black_box(breaker.admit(t));
            breaker.record(true, true, true, t)
        })
    });
    g.finish();
}

fn scorer(c: &mut Criterion) {
    let mut g = c.benchmark_group("scorer");
    let t0 = Instant::now();
    let mut stats = DeploymentStats::default();
    let mut i = 0u64;
    g.bench_function("observe", |b| {
        b.iter(|| {
            i += 1;
            stats.observe(
                Observation {
                    ok: !i.is_multiple_of(10),
                    latency: Duration::from_micros(20_000 + i % 5000),
                    ttfb: Duration::from_micros(5_000 + i % 700),
                },
                t0 + Duration::from_micros(100 * i),
            );
        })
    });
    for n in [8, 64] {
        let config = config(n, "score", "");
        let infos = DeploymentInfo::from_config(&config);
        let mut stats = warm_stats(n, t0);
        let breakers = vec![BreakerView::default(); n];
        let now = t0 + Duration::from_secs(3);
        let mut version = 0;
        g.bench_with_input(BenchmarkId::new("compute", n), &n, |b, _| {
            b.iter(|| {
                version += 1;
                ScoreTable::compute(
                    version,
                    black_box(&infos),
                    &mut stats,
                    &breakers,
                    Weights::default(),
                    table_min_samples(),
                    now,
                )
            })
        });
    }
    g.finish();
}

/// Short runs, so that the whole file takes under two minutes: 27 benches of 1 s warm-up,
/// 2 s measurement, and a lighter bootstrap (the confidence interval, not the median).
fn short() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .nresamples(10_000)
}

criterion_group! {
    name = benches;
    config = short();
    targets = plan, bookkeeping, scorer
}
criterion_main!(benches);
