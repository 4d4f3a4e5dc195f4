#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! The generator against a real mock server on loopback: request counts, open-loop schedules,
//! streams, HTTP/2, and errors by kind.

use loadtest::run::{Options, Target, run};
use loadtest::scenario::Plan;
use loadtest::stats::ErrorKind;
use shardgate::mock::Knobs;
use shardgate::mock::server::{MockConfig, MockServer};

fn mock(knobs: &[(&str, &str)]) -> MockServer {
    let mut defaults = Knobs::default();
    for (k, v) in knobs {
        defaults.set(k, v).unwrap();
    }
    MockServer::start(MockConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        cores: vec![None],
        defaults,
        schedule: Default::default(),
        tls: None,
    })
    .unwrap()
}

fn plan(text: &str) -> Plan {
    Plan::resolve(toml::from_str(text).unwrap(), 1.0).unwrap()
}

/// Run a plan against `addr`, reporting this test process's CPU and RSS.
fn run_at(addr: std::net::SocketAddr, p: &Plan) -> loadtest::report::RunReport {
    let target = Target::parse(&format!("http://{addr}")).unwrap();
    run(p, &target, &opts()).unwrap()
}

fn opts() -> Options {
    Options {
        label: "direct".into(),
        threads: 1,
        pids: vec![std::process::id()],
        progress: false,
    }
}

const MIX: &str = r#"
name = "t"
description = "test"
warmup_s = 0
[[requests]]
name = "short"
weight = 3
prompt_bytes = 100
[[requests]]
name = "stream"
weight = 1
stream = true
"#;

#[test]
fn open_loop_sends_exactly_the_schedule_and_counts_streams() {
    let m = mock(&[("chunks", "5")]);
    let p = plan(&format!(
        "{MIX}\n[[steps]]\nmode = \"open\"\nconnections = 8\nrate = 400\nseconds = 1\n"
    ));
    let r = run_at(m.addr, &p);
    let s = &r.steps[0];
    assert_eq!(s.ok, 400, "{:?}", s.errors);
    assert_eq!(m.requests(), 400);
    assert_eq!(s.classes[0].ok, 300);
    assert_eq!(s.classes[1].ok, 100);
    // 5 content chunks plus the role and finish events.
    assert_eq!(s.chunks_per_stream, Some(7.0));
    assert_eq!(s.ttfc.unwrap().count, 100);
    assert_eq!(s.latency.count, 400);
    assert!(s.latency.p50_us > 0 && s.latency.p50_us <= s.latency.p99_us);
    // Open loop: the run lasts about as long as its schedule, whatever the answers.
    assert!(s.seconds >= 0.99, "{}", s.seconds);
    assert!(s.process.as_ref().unwrap().cpu_seconds >= 0.0);
}

#[test]
fn closed_loop_stops_at_its_request_cap_over_http2() {
    let m = mock(&[]);
    let h2_mix = MIX.replacen("warmup_s = 0", "warmup_s = 0\nprotocol = \"http2\"", 1);
    let p = plan(&format!(
        "{h2_mix}\n[[steps]]\nmode = \"closed\"\nconnections = 4\ntcp_connections = 2\nrequests = 250\n"
    ));
    let r = run_at(m.addr, &p);
    let s = &r.steps[0];
    assert_eq!(s.ok, 250, "{:?}", s.errors);
    assert_eq!(m.requests(), 250);
    assert_eq!(s.chunks_per_stream, Some(10.0)); // 8 default chunks + role + finish
}

#[test]
fn failures_are_counted_by_kind() {
    let m = mock(&[("status", "503")]);
    let p = plan(&format!(
        "{MIX}\n[[steps]]\nmode = \"closed\"\nconnections = 2\nrequests = 20\n"
    ));
    let r = run_at(m.addr, &p);
    assert_eq!(r.steps[0].ok, 0);
    assert_eq!(r.steps[0].errors.get(&ErrorKind::Status5xx), Some(&20));

    // A stream cut mid-way is a stream error, not a success.
    let m = mock(&[("reset_after", "2")]);
    let p = plan(
        r#"
name = "t"
description = "d"
warmup_s = 0
[[requests]]
name = "stream"
stream = true
[[steps]]
mode = "closed"
connections = 1
requests = 3
"#,
    );
    let r = run_at(m.addr, &p);
    assert_eq!(r.steps[0].ok, 0);
    assert_eq!(
        r.steps[0].errors.values().sum::<u64>(),
        3,
        "{:?}",
        r.steps[0].errors
    );

    // Nobody listening: connect errors, bounded by the step length.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let p = plan(&format!(
        "{MIX}\n[[steps]]\nmode = \"closed\"\nconnections = 1\nseconds = 0.3\n"
    ));
    let r = run_at(addr, &p);
    assert_eq!(r.steps[0].ok, 0);
    assert!(
        r.steps[0]
            .errors
            .get(&ErrorKind::Connect)
            .copied()
            .unwrap_or(0)
            >= 1
    );
}
