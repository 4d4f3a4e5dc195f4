#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use super::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/ratios/fixtures")
        .join(name)
}

/// The fixtures, `before` then `gateway`.
fn fixtures() -> Vec<RunReport> {
    read_runs(&[fixture("before.json"), fixture("gateway.json")]).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Pairs whose gateway CPU per request is the fixture's times each factor.
fn pairs_with_cpu_factors(factors: &[f64]) -> Vec<Pair> {
    let runs = fixtures();
    factors
        .iter()
        .map(|f| {
            let mut new = runs[1].clone();
            for s in &mut new.steps {
                if let Some(p) = s.process.as_mut() {
                    p.cpu_us_per_request *= f;
                }
            }
            Pair {
                new,
                base: runs[0].clone(),
            }
        })
        .collect()
}

#[test]
fn spread_of_an_odd_count_is_its_middle_value() {
    let s = Spread::of([1.3, 0.8, 1.0, 1.41, 0.95]).unwrap();
    assert_eq!(
        s,
        Spread {
            median: 1.0,
            min: 0.8,
            max: 1.41,
            n: 5
        }
    );
}

#[test]
fn spread_of_an_even_count_is_the_mean_of_the_middle_two() {
    let s = Spread::of([1.2, 0.9, 1.0, 1.1]).unwrap();
    assert!(close(s.median, 1.05), "{s:?}");
    assert_eq!((s.min, s.max, s.n), (0.9, 1.2, 4));
    assert_eq!(Spread::of([2.0]).unwrap().median, 2.0);
}

#[test]
fn spread_skips_values_that_are_not_finite_and_is_none_when_nothing_is_left() {
    let s = Spread::of([f64::NAN, 1.0, f64::INFINITY, 3.0]).unwrap();
    assert_eq!((s.median, s.n), (2.0, 2));
    assert_eq!(Spread::of([f64::NAN]), None);
    assert_eq!(Spread::of([]), None);
}

#[test]
fn geomean_weighs_every_value_alike_and_skips_what_is_not_positive() {
    assert!(close(geomean([0.9, 1.0]).unwrap(), 0.9f64.sqrt()));
    assert!(close(geomean([4.0, 0.0, 1.0]).unwrap(), 2.0));
    assert_eq!(geomean([]), None);
}

#[test]
fn read_runs_reads_the_json_a_run_writes() {
    let runs = fixtures();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (runs[0].target.as_str(), runs[1].target.as_str()),
        ("before", "gateway")
    );
    let labels: Vec<_> = runs[0].steps.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, ["closed 8 conns", "closed 32 conns"]);
    let cpu = runs[1].steps[0]
        .process
        .as_ref()
        .unwrap()
        .cpu_us_per_request;
    assert_eq!(cpu, 72.0);
    assert_eq!(runs[1].steps[1].error_count(), 3);
}

#[test]
fn read_runs_names_the_file_it_cannot_read_or_parse() {
    let missing = fixture("missing.json");
    let err = read_runs(std::slice::from_ref(&missing)).unwrap_err();
    assert!(
        matches!(&err, RatiosError::Read { path, .. } if *path == missing),
        "{err}"
    );
    let not_a_run = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let err = read_runs(&[not_a_run]).unwrap_err();
    assert!(matches!(err, RatiosError::Parse { .. }), "{err}");
    assert!(
        err.to_string().ends_with("Cargo.toml: not a run report"),
        "{err}"
    );
}

#[test]
fn pair_up_pairs_the_builds_in_the_order_given() {
    let runs = fixtures();
    // Rounds alternate: before, gateway, then gateway, before.
    let order = vec![
        runs[0].clone(),
        runs[1].clone(),
        runs[1].clone(),
        runs[0].clone(),
    ];
    let pairs = pair_up(order, "gateway", "before").unwrap();
    assert_eq!(pairs.len(), 2);
    for p in &pairs {
        assert_eq!(
            (p.new.target.as_str(), p.base.target.as_str()),
            ("gateway", "before")
        );
    }
}

#[test]
fn pair_up_refuses_runs_that_do_not_pair() {
    let runs = fixtures();
    let err = pair_up(
        vec![runs[0].clone(), runs[1].clone(), runs[1].clone()],
        "gateway",
        "before",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "2 run(s) of `gateway` against 1 of `before`: they must pair up"
    );
    let err = pair_up(runs.clone(), "new", "old").unwrap_err();
    assert!(matches!(err, RatiosError::NoPairs { .. }), "{err}");
    let mut other = runs[1].clone();
    other.steps.pop();
    let err = pair_up(vec![runs[0].clone(), other], "gateway", "before").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("run 2 of `gateway`: steps [\"closed 8 conns\"]"),
        "{err}"
    );
}

#[test]
fn ratios_of_one_pair_per_step_and_overall() {
    let pairs = pair_up(fixtures(), "gateway", "before").unwrap();
    let r = ratios(&pairs);
    assert_eq!(
        (r.scenario.as_str(), r.new.as_str(), r.base.as_str()),
        ("saturation", "gateway", "before")
    );
    assert_eq!((r.pairs, r.runs_with_errors, r.steps.len()), (1, 1, 2));
    let ratio = |s: &Section, m| s.row(m).unwrap().ratio.unwrap().median;
    assert!(close(ratio(&r.steps[0], Measure::Throughput), 1.1));
    assert!(close(ratio(&r.steps[0], Measure::CpuPerRequest), 0.9));
    assert!(close(ratio(&r.steps[0], Measure::P50), 600.0 / 640.0));
    assert!(close(ratio(&r.steps[1], Measure::P99), 1.2));
    assert!(close(
        ratio(&r.overall, Measure::CpuPerRequest),
        0.9f64.sqrt()
    ));
    let cpu = r.overall.row(Measure::CpuPerRequest).unwrap();
    assert!(close(cpu.new.unwrap().median, (72.0f64 * 78.0).sqrt()));
    assert!(close(cpu.base.unwrap().median, (80.0f64 * 78.0).sqrt()));
}

#[test]
fn ratios_give_the_median_over_the_pairs_with_its_spread() {
    let r = ratios(&pairs_with_cpu_factors(&[1.0, 1.4, 0.8, 1.1, 1.2]));
    let cpu = r.steps[0]
        .row(Measure::CpuPerRequest)
        .unwrap()
        .ratio
        .unwrap();
    assert!(close(cpu.median, 0.9 * 1.1), "{cpu:?}");
    assert!(
        close(cpu.min, 0.9 * 0.8) && close(cpu.max, 0.9 * 1.4),
        "{cpu:?}"
    );
    assert_eq!(cpu.n, 5);
    // Throughput did not move: every pair gives the same ratio.
    let rps = r.steps[0].row(Measure::Throughput).unwrap().ratio.unwrap();
    assert!(close(rps.min, 1.1) && close(rps.max, 1.1));
}

#[test]
fn guard_judges_the_overall_median_cpu_ratio() {
    let r = ratios(&pairs_with_cpu_factors(&[1.0, 1.2, 1.1]));
    let median = 0.9f64.sqrt() * 1.1;
    assert!(matches!(r.guard(1.05), Verdict::Pass(m) if close(m, median)));
    assert!(matches!(r.guard(1.0), Verdict::Fail(m) if close(m, median)));
    let mut pairs = pair_up(fixtures(), "gateway", "before").unwrap();
    for s in &mut pairs[0].new.steps {
        s.process = None;
    }
    assert_eq!(ratios(&pairs).guard(1.05), Verdict::NoCpu);
}

#[test]
fn render_shows_every_step_measure_and_the_overall_section() {
    let text = ratios(&pairs_with_cpu_factors(&[1.0, 1.2, 1.1])).render();
    assert!(
        text.starts_with("scenario saturation: gateway/before over 3 pair(s)"),
        "{text}"
    );
    assert!(
        text.contains("note: 3 run(s) had failed requests"),
        "{text}"
    );
    for section in ["── closed 8 conns", "── closed 32 conns", "── overall"] {
        assert!(text.contains(section), "{text}");
    }
    assert!(
        text.contains("cpu µs/req           0.990×    0.900–1.080×   3      79.2µs      80.0µs"),
        "{text}"
    );
    assert!(
        text.contains("req/s                1.100×    1.100–1.100×   3       11000       10000"),
        "{text}"
    );
    assert!(
        text.contains("cpu µs/req           1.044×    0.949–1.138×   3      82.4µs      79.0µs"),
        "{text}"
    );
}
