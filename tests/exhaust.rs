#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]
//! Connection exhaustion and slowloris (issue 10, defect 4), the short CI pass: silent and
//! slowloris connections against a gateway with a short header timeout and a small connection
//! cap, with a normal client measured alongside. The long run with the figures is
//! `scripts/exhaust.sh`.
//!
//! The harness is the load-test crate's `loadtest/src/exhaust.rs`, compiled into this test
//! (it is self-contained for that): only this crate's tests can start the gateway binary.

mod common;
#[path = "../loadtest/src/exhaust.rs"]
mod exhaust;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Gateway;
use exhaust::{Attack, AttackConfig, NormalConfig, ProcSample};

const HEADER_TIMEOUT_MS: u64 = 500;
const MAX_CONNECTIONS: usize = 128;
const SILENT: u64 = 200;
const SLOWLORIS: u64 = 50;
/// Generous: a bound on "closed once the header timeout is over", not a performance figure.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

/// The idle timeout stays at its default (60 s): only the header timeout may close a
/// connection that never completed a request head.
fn config(mock: SocketAddr) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nheader_timeout_ms = {HEADER_TIMEOUT_MS}\n\n{}\n{}",
        common::provider("up", "openai", mock),
        common::model("gpt-mock", "mock"),
    )
}

fn tuning() -> String {
    format!(
        "{}\n[http]\nmax_connections_per_shard = {MAX_CONNECTIONS}\n",
        common::ONE_SHARD
    )
}

fn normal(seconds: f64) -> NormalConfig {
    NormalConfig {
        rate: 50.0,
        seconds,
        timeout_ms: 3000,
        // A fresh connection every 10 requests: new clients keep arriving during the attack.
        reuse: 10,
        max_connections: 16,
        model: "gpt-mock".into(),
    }
}

/// The gateway's descriptors once they stop changing (three equal samples in a row).
fn steady(pid: u32) -> ProcSample {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = ProcSample::of(pid).unwrap();
    let mut same = 0;
    while same < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = ProcSample::of(pid).unwrap();
        same = if now.fds == last.fds { same + 1 } else { 0 };
        last = now;
    }
    last
}

/// One kind's counts and close times, without the list of every close.
fn brief(k: &exhaust::KindReport) -> String {
    format!(
        "opened {}, peak open {}, closed by the server {} (answered {}, reset {}), open at stop \
         {}, connect failures {:?}, connect → close {:?}",
        k.opened,
        k.peak_open,
        k.closed_by_server,
        k.answered,
        k.reset,
        k.open_at_stop,
        k.connect_failures,
        k.closed_after
    )
}

/// Poll `done` every 50 ms until it holds or `limit` passes; whether it held.
fn poll(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn silent_and_slowloris_connections_neither_linger_nor_lock_out_a_normal_client() {
    exhaust::raise_nofile(4096).unwrap();
    let mock = common::mock();
    let gw = Gateway::start(&config(mock.addr), &tuning());
    let pid = gw.child.id();

    let baseline = exhaust::run_normal(gw.addr, &normal(1.0)).unwrap();
    assert_eq!(baseline.error_count(), 0, "without an attack: {baseline:?}");
    let base = steady(pid);

    // More connections than the cap: silent ones are not reopened (each must be closed by
    // the server), slowloris ones are (a sustained trickle).
    let attack = Attack::start(
        gw.addr,
        AttackConfig {
            silent: SILENT as usize,
            slowloris: SLOWLORIS as usize,
            byte_every_ms: 200,
            ramp_ms: 200,
            connect_timeout_ms: 3000,
            reopen_silent: false,
            reopen_slowloris: true,
            reopen_delay_ms: 0,
        },
    )
    .unwrap();
    let all_connected = poll(Duration::from_secs(10), || {
        let s = attack.snapshot();
        s.silent.opened == SILENT && s.slowloris.opened >= SLOWLORIS
    });
    let under_attack = exhaust::run_normal(gw.addr, &normal(3.0)).unwrap();
    let silent_closed = poll(
        Duration::from_millis(HEADER_TIMEOUT_MS) + CLOSE_BOUND + Duration::from_secs(5),
        || attack.snapshot().silent.closed_by_server == SILENT,
    );
    let report = attack.stop().unwrap();
    let fds_back = poll(Duration::from_secs(10), || {
        ProcSample::of(pid).unwrap().fds_back_to(&base)
    });
    let after = ProcSample::of(pid).unwrap();

    eprintln!(
        "normal client: baseline {baseline:?}\nunder attack {under_attack:?}\nsilent: {}\n\
         slowloris: {}\ngateway descriptors: {} before the attack, {} after",
        brief(&report.silent),
        brief(&report.slowloris),
        base.fds,
        after.fds
    );
    assert!(
        all_connected,
        "the attack could not connect: silent {}, slowloris {}",
        brief(&report.silent),
        brief(&report.slowloris)
    );
    assert_eq!(
        under_attack.error_count(),
        0,
        "the normal client failed under attack: {:?} (baseline p99 {} ms)",
        under_attack,
        baseline.latency.p99_ms
    );
    assert!(
        silent_closed,
        "the server closed {} of {SILENT} silent connections (connect → close: {:?}); still \
         open at stop: {}",
        report.silent.closed_by_server, report.silent.closed_after, report.silent.open_at_stop
    );
    let bound = Duration::from_millis(HEADER_TIMEOUT_MS) + CLOSE_BOUND;
    let late: Vec<_> = (report.silent.closed_after_all.iter())
        .filter(|d| **d > bound)
        .collect();
    assert!(
        late.is_empty(),
        "{} silent connections closed later than {bound:?}: {:?}",
        late.len(),
        report.silent.closed_after
    );
    assert!(
        report.slowloris.closed_by_server >= SLOWLORIS,
        "the server closed only {} slowloris connections: {}",
        report.slowloris.closed_by_server,
        brief(&report.slowloris)
    );
    assert!(
        fds_back,
        "gateway descriptors: {} before the attack, {} after",
        base.fds, after.fds
    );
}
