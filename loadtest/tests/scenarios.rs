#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! Every shipped scenario resolves, and gives the mock flags it accepts.

use loadtest::scenario::{Load, Mode, Plan};
use shardgate::mock::Knobs;

#[test]
fn every_shipped_scenario_resolves() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let plan = Plan::load(&path, 1.0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            path.file_stem().unwrap().to_string_lossy(),
            plan.scenario.name,
            "file name and scenario name differ"
        );
        let args = plan.mock_args();
        let mut knobs = Knobs::default();
        for pair in args.chunks(2) {
            let key = pair[0].trim_start_matches("--").replace('-', "_");
            knobs
                .set(&key, &pair[1])
                .unwrap_or_else(|e| panic!("{}: {e}", plan.scenario.name));
        }
        names.push(plan.scenario.name.clone());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "baseline",
            "burst",
            "cache-hit",
            "cache-hop",
            "cache-miss",
            "overhead",
            "saturation",
            "saturation-auth",
            "spike",
            "streaming",
            "stress"
        ]
    );
}

#[test]
fn the_issue_s_shapes_hold() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let load = |n: &str| Plan::load(&dir.join(format!("{n}.toml")), 1.0).unwrap();
    // baseline: 60/30/10 with streams.
    let b = load("baseline");
    let weights: Vec<_> = b.scenario.requests.iter().map(|r| r.weight).collect();
    assert_eq!(weights, [60, 30, 10]);
    assert!(b.classes[2].stream && !b.classes[0].stream);
    // spike reaches 2,000 req/s within 30 s of leaving the quiet level.
    let s = load("spike");
    let ramp = s.scenario.steps[0].stages.as_ref().unwrap()[1];
    assert!(ramp.seconds <= 30.0 && ramp.to >= 2000.0);
    // overhead: 5,000 requests at concurrency 1, then fixed 500 and 2,000 req/s.
    let o = load("overhead");
    assert!(matches!(
        o.steps[0].load,
        Load::Closed {
            requests: Some(5000),
            ..
        }
    ));
    assert_eq!(o.steps[0].connections, 1);
    assert_eq!(
        o.steps[1..].iter().map(|s| s.rate).collect::<Vec<_>>(),
        [Some(500.0), Some(2000.0)]
    );
    // streaming: 1,000 concurrent streams.
    let st = load("streaming");
    assert_eq!(
        (st.steps[0].mode, st.steps[0].connections),
        (Mode::Closed, 1000)
    );
    // stress: 1,000 req/s for minutes.
    let total: f64 = load("stress")
        .steps
        .iter()
        .map(|s| match &s.load {
            Load::Open(sch) => sch.duration().as_secs_f64(),
            Load::Closed { .. } => 0.0,
        })
        .sum();
    assert!(total >= 120.0, "{total}");
}
