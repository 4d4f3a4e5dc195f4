use super::*;
use crate::budget::pricing::per_token;

const MS: Duration = Duration::from_millis(1);

fn info(id: &str) -> DeploymentInfo {
    DeploymentInfo {
        id: DeploymentId(id.into()),
        io_price_pico_usd: None,
        quality: None,
        models: vec![ModelIdx(0)],
    }
}

/// `n` attempts at 10 ms intervals from `t0`, `ok` each, taking `latency_ms`.
fn feed(s: &mut DeploymentStats, t0: Instant, n: u32, ok: bool, latency_ms: u32) {
    for i in 0..n {
        s.observe(
            Observation {
                ok,
                latency: latency_ms * MS,
                ttfb: latency_ms / 2 * MS,
            },
            t0 + i * 10 * MS,
        );
    }
}

fn compute(infos: &[DeploymentInfo], stats: &mut [DeploymentStats], now: Instant) -> ScoreTable {
    ScoreTable::compute(1, infos, stats, &[], Weights::default(), 10, now)
}

#[test]
fn window_slides_and_forgets() {
    let t0 = Instant::now();
    let mut w = SuccessWindow::default();
    w.record(true, t0);
    w.record(false, t0 + Duration::from_secs(15));
    assert_eq!(w.totals(t0 + Duration::from_secs(20)), (1, 1));
    // After the whole window has passed, the first bucket is gone.
    assert_eq!(
        w.totals(t0 + WINDOW_BUCKET * WINDOW_BUCKETS as u32 + Duration::from_secs(1)),
        (0, 1)
    );
    assert_eq!(w.totals(t0 + Duration::from_secs(1000)), (0, 0));
}

#[test]
fn fast_beats_slow_and_failures_lower_availability() {
    let t0 = Instant::now();
    let infos = [info("a/fast"), info("b/slow")];
    let mut stats = vec![DeploymentStats::default(), DeploymentStats::default()];
    for i in 0..20 {
        let now = t0 + i * 10 * MS;
        stats[0].observe(
            Observation {
                ok: true,
                latency: 10 * MS,
                ttfb: 5 * MS,
            },
            now,
        );
        stats[1].observe(
            Observation {
                ok: i % 2 == 0,
                latency: 200 * MS,
                ttfb: 150 * MS,
            },
            now,
        );
    }
    let t = ScoreTable::compute(
        7,
        &infos,
        &mut stats,
        &[],
        Weights::default(),
        10,
        t0 + Duration::from_secs(1),
    );
    let fast = t.get(DeploymentIdx(0)).unwrap();
    let slow = t.by_id("b/slow").unwrap();
    assert_eq!(t.trusted_score(DeploymentIdx(0)), Some(fast.score));
    assert_eq!(t.version, 7);
    assert_eq!(fast.id, "a/fast");
    assert!((fast.latency_ewma_ms.unwrap() - 10.0).abs() < 1e-6);
    assert!((slow.latency_ewma_ms.unwrap() - 200.0).abs() < 1e-6);
    assert_eq!(fast.success_ratio, 1.0);
    assert_eq!(slow.success_ratio, 0.5);
    assert!(fast.trusted && slow.trusted);
    assert_eq!(fast.terms.latency, 1.0);
    assert!((slow.terms.latency - 0.05).abs() < 1e-9);
    assert!(fast.score > slow.score, "{} vs {}", fast.score, slow.score);
}

#[test]
fn failing_everything_scores_below_slow_and_healthy_below_fast_and_healthy() {
    let t0 = Instant::now();
    let infos = [info("fast"), info("slow"), info("failing")];
    let mut stats = vec![DeploymentStats::default(); 3];
    feed(&mut stats[0], t0, 20, true, 10);
    feed(&mut stats[1], t0, 20, true, 60);
    feed(&mut stats[2], t0, 20, false, 1);
    let t = compute(&infos, &mut stats, t0 + Duration::from_secs(1));
    let [fast, slow, failing] = [0, 1, 2].map(|i| t.get(DeploymentIdx(i)).unwrap());
    // No latency sample, but failures: the latency term is the worst, not the best.
    assert_eq!(failing.latency_ewma_ms, None);
    assert_eq!(failing.terms.latency, 0.0);
    assert_eq!(failing.score, 0.0, "{failing:?}");
    assert!(failing.score < slow.score, "{failing:?} vs {slow:?}");
    assert!(slow.score < fast.score, "{slow:?} vs {fast:?}");
    // Neutral quality and cost: a fast, healthy, unpriced deployment scores 0.75.
    assert!((fast.score - 0.75).abs() < 1e-9, "{fast:?}");
}

#[test]
fn a_deployment_that_turns_to_failing_loses_its_score_despite_its_old_latency() {
    let t0 = Instant::now();
    let infos = [info("a"), info("b")];
    let mut stats = vec![DeploymentStats::default(); 2];
    feed(&mut stats[0], t0, 20, true, 5);
    feed(&mut stats[1], t0, 20, true, 50);
    // Two windows later, `a` fails everything while `b` keeps answering.
    let later = t0 + 2 * WINDOW_BUCKET * WINDOW_BUCKETS as u32;
    feed(&mut stats[0], later, 20, false, 1);
    feed(&mut stats[1], later, 20, true, 50);
    let t = compute(&infos, &mut stats, later + Duration::from_secs(1));
    let (a, b) = (
        t.get(DeploymentIdx(0)).unwrap(),
        t.get(DeploymentIdx(1)).unwrap(),
    );
    assert!(a.latency_ewma_ms.is_some());
    assert_eq!((a.success_ratio, a.terms.latency, a.score), (0.0, 0.0, 0.0));
    assert!(b.score > 0.5, "{b:?}");
}

#[test]
fn a_slow_deployment_left_alone_wins_again_once_its_old_figure_has_decayed() {
    let t0 = Instant::now();
    let infos = [info("was-slow"), info("now-slow")];
    let mut stats = vec![DeploymentStats::default(); 2];
    feed(&mut stats[0], t0, 20, true, 60);
    feed(&mut stats[1], t0, 20, true, 5);
    // From then on only `now-slow` takes traffic, and it has turned slow (50 ms).
    for s in 1..=10u32 {
        feed(
            &mut stats[1],
            t0 + Duration::from_secs(s.into()),
            20,
            true,
            50,
        );
    }
    let t = compute(&infos, &mut stats, t0 + Duration::from_secs(10) + 200 * MS);
    let (was, now) = (
        t.get(DeploymentIdx(0)).unwrap(),
        t.get(DeploymentIdx(1)).unwrap(),
    );
    // `was-slow`'s 60 ms are ten seconds old: read now, they are below `now-slow`'s ~50.
    assert!(
        (was.latency_ewma_ms.unwrap() - 60.0).abs() < 1e-6,
        "{was:?}"
    );
    assert_eq!(was.terms.latency, 1.0, "{was:?}");
    assert!(was.score > now.score, "{was:?} vs {now:?}");
}

#[test]
fn half_failing_keeps_half_its_blend() {
    let t0 = Instant::now();
    let infos = [info("a"), info("b")];
    let mut stats = vec![DeploymentStats::default(); 2];
    feed(&mut stats[0], t0, 20, true, 10);
    feed(&mut stats[1], t0, 10, true, 10);
    feed(&mut stats[1], t0 + 200 * MS, 10, false, 10);
    let t = compute(&infos, &mut stats, t0 + Duration::from_secs(1));
    let (a, b) = (
        t.get(DeploymentIdx(0)).unwrap(),
        t.get(DeploymentIdx(1)).unwrap(),
    );
    assert_eq!(b.success_ratio, 0.5);
    // Same latency; b's blend loses availability 0.1 × 0.5, then half of that blend.
    assert!(
        (b.score - (a.score - 0.05) * 0.5).abs() < 1e-9,
        "{a:?} {b:?}"
    );
}

#[test]
fn few_samples_are_not_trusted_and_do_not_rescale_latency() {
    let t0 = Instant::now();
    let infos = [info("trusted"), info("lucky")];
    let mut stats = vec![DeploymentStats::default(); 2];
    feed(&mut stats[0], t0, 20, true, 40);
    feed(&mut stats[1], t0, 2, true, 1);
    let t = compute(&infos, &mut stats, t0 + Duration::from_secs(1));
    let (trusted, lucky) = (
        t.get(DeploymentIdx(0)).unwrap(),
        t.get(DeploymentIdx(1)).unwrap(),
    );
    assert!(trusted.trusted);
    assert!(!lucky.trusted);
    assert_eq!(lucky.window_samples, 2);
    // The 1 ms sample of an untrusted deployment does not make the trusted one look slow.
    assert_eq!(trusted.terms.latency, 1.0);
    assert_eq!(lucky.terms.latency, 1.0);
    // With nobody trusted, latency is relative to the fastest of all.
    let mut few = vec![DeploymentStats::default(); 2];
    feed(&mut few[0], t0, 2, true, 40);
    feed(&mut few[1], t0, 2, true, 10);
    let t = compute(&infos, &mut few, t0 + Duration::from_secs(1));
    assert!((t.get(DeploymentIdx(0)).unwrap().terms.latency - 0.25).abs() < 1e-9);
    // And with no sample at all, every term but quality and cost is neutral or full.
    let mut none = vec![DeploymentStats::default(); 2];
    let t = compute(&infos, &mut none, t0);
    let d = t.get(DeploymentIdx(0)).unwrap();
    assert_eq!(
        (d.terms.latency, d.success_ratio, d.trusted),
        (0.5, 1.0, false)
    );
}

#[test]
fn cost_and_quality_move_the_score_the_right_way() {
    let t0 = Instant::now();
    let price =
        |input: f64, output: f64| Some(per_token(input).unwrap() + per_token(output).unwrap());
    let mut infos = vec![info("cheap"), info("dear"), info("unpriced"), info("good")];
    infos[0].io_price_pico_usd = price(0.5, 1.5); // $2 per Mtok in + out
    infos[1].io_price_pico_usd = price(3.0, 5.0); // $8
    infos[3].io_price_pico_usd = price(3.0, 5.0);
    infos[3].quality = Some(0.9);
    infos[1].quality = Some(0.2);
    let mut stats = vec![DeploymentStats::default(); 4];
    for s in &mut stats {
        feed(s, t0, 20, true, 10);
    }
    let t = compute(&infos, &mut stats, t0 + Duration::from_secs(1));
    let [cheap, dear, unpriced, good] = [0, 1, 2, 3].map(|i| t.get(DeploymentIdx(i)).unwrap());
    assert_eq!(cheap.terms.cost, 1.0);
    assert!((dear.terms.cost - 0.25).abs() < 1e-9, "{dear:?}");
    assert_eq!(unpriced.terms.cost, NEUTRAL_TERM);
    assert_eq!(unpriced.terms.quality, NEUTRAL_TERM);
    assert_eq!(good.terms.quality, 0.9);
    // Cheaper wins at equal quality and latency...
    assert!(cheap.score > unpriced.score, "{cheap:?} vs {unpriced:?}");
    // ...and better quality wins at equal price.
    assert!(good.score > dear.score, "{good:?} vs {dear:?}");
    assert!(cheap.score > dear.score);
    // A free deployment is the cheapest there is.
    infos[2].io_price_pico_usd = Some(0);
    let t = compute(&infos, &mut stats, t0 + Duration::from_secs(1));
    assert_eq!(t.get(DeploymentIdx(2)).unwrap().terms.cost, 1.0);
    assert_eq!(t.get(DeploymentIdx(0)).unwrap().terms.cost, 0.0);
}

#[test]
fn breaker_views_are_published_with_a_cooldown_relative_to_publication() {
    let t0 = Instant::now();
    let infos = [info("a"), info("b")];
    let mut stats = vec![DeploymentStats::default(); 2];
    let views = [
        BreakerView {
            state: BreakerState::Open,
            open_until: Some(t0 + Duration::from_millis(2500)),
            ejections: 3,
        },
        BreakerView::default(),
    ];
    let now = t0 + Duration::from_millis(500);
    let t = ScoreTable::compute(2, &infos, &mut stats, &views, Weights::default(), 10, now);
    let a = t.get(DeploymentIdx(0)).unwrap();
    assert_eq!(
        (a.breaker, a.open_until_ms, a.ejections),
        (BreakerState::Open, Some(2000), 3)
    );
    assert_eq!(
        t.open_until(DeploymentIdx(0)),
        Some(t0 + Duration::from_millis(2500))
    );
    assert_eq!(t.open_until(DeploymentIdx(1)), None);
    // Nothing in the window: not trusted, no score to rank by.
    assert_eq!(t.trusted_score(DeploymentIdx(0)), None);
    assert_eq!(
        t.get(DeploymentIdx(1)).unwrap().breaker,
        BreakerState::Closed
    );
    assert_eq!(ScoreTable::default().get(DeploymentIdx(0)), None);
}

#[test]
fn serialises_keyed_by_id_in_index_order() {
    let t0 = Instant::now();
    let infos = [info("z/last-id"), info("a/first-id")];
    let mut stats = vec![DeploymentStats::default(); 2];
    feed(&mut stats[1], t0, 3, false, 1);
    let t = compute(&infos, &mut stats, t0 + Duration::from_secs(1));
    let text = serde_json::to_string(&t).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["version"], 1);
    let d = &v["deployments"]["a/first-id"];
    assert_eq!(d["id"], "a/first-id");
    assert_eq!(d["window_samples"], 3);
    assert_eq!(d["success_ratio"], 0.0);
    assert_eq!(d["breaker"], "closed");
    assert_eq!(d["open_until_ms"], serde_json::Value::Null);
    assert_eq!(d["terms"]["latency"], 0.0);
    // Index order, not name order.
    assert!(text.find("z/last-id") < text.find("a/first-id"), "{text}");
}
