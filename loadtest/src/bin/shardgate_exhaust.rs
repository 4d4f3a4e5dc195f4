//! `shardgate-exhaust`: silent and slowloris connections against a gateway on loopback, with a
//! normal client measured alongside (see `loadtest::exhaust`; `scripts/exhaust.sh` runs it).

use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{Context, bail};
use loadtest::exhaust::{self, AttackConfig, NormalConfig, Plan};

const USAGE: &str = "\
shardgate-exhaust: connection exhaustion and slowloris with a normal client alongside

USAGE:
    shardgate-exhaust --target HOST:PORT [--pid PID] [--json OUT] [--check] [--quiet]
                      [--silent N] [--slowloris N] [--byte-every-ms MS] [--ramp-ms MS]
                      [--no-reopen | --reopen-delay-ms MS] [--rate R] [--warmup-s S]
                      [--baseline-s S] [--seconds S] [--settle-s S] [--timeout-ms MS]
                      [--reuse N] [--max-connections N] [--model NAME]

Runs: warm-up, then the normal client alone (the baseline), then N silent connections
(connect, never send) and N slowloris connections (one header byte every MS, staggered),
each reopened when the server closes it (at once, or --reopen-delay-ms later), opened
over --ramp-ms; then the normal client again for --seconds alongside them; then closes
them all and waits up to --settle-s for the gateway's descriptors and RSS (--pid)
to come back. Loopback targets only.

DEFAULTS (the issue's figures):
    --silent 5000 --slowloris 2000 --byte-every-ms 5000 --ramp-ms 5000 --rate 50
    --warmup-s 2 --baseline-s 10 --seconds 60 --settle-s 30 --timeout-ms 15000
    --reuse 20 (requests per normal connection) --max-connections 64 --model gpt-mock

--check exits with status 1 when a criterion fails (0 normal errors, p99 at most twice the
baseline, descriptors and RSS back to baseline).";

fn main() -> anyhow::Result<()> {
    let mut target: Option<SocketAddr> = None;
    let (mut pid, mut json) = (None, None);
    let (mut check, mut quiet) = (false, false);
    let mut plan = Plan {
        warmup_s: 2.0,
        baseline_s: 10.0,
        attack_s: 60.0,
        settle_s: 30.0,
        normal: NormalConfig::default(),
        attack: AttackConfig::default(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            "--target" => {
                let t = value()?;
                let addr = t
                    .to_socket_addrs()
                    .with_context(|| format!("bad --target {t}"))?
                    .next()
                    .with_context(|| format!("--target {t}: no address"))?;
                target = Some(addr);
            }
            "--pid" => pid = Some(value()?.parse().context("--pid")?),
            "--json" => json = Some(value()?),
            "--check" => check = true,
            "--quiet" => quiet = true,
            "--no-reopen" => {
                plan.attack.reopen_silent = false;
                plan.attack.reopen_slowloris = false;
            }
            "--silent" => plan.attack.silent = value()?.parse().context("--silent")?,
            "--slowloris" => plan.attack.slowloris = value()?.parse().context("--slowloris")?,
            "--byte-every-ms" => {
                plan.attack.byte_every_ms = value()?.parse().context("--byte-every-ms")?;
            }
            "--ramp-ms" => plan.attack.ramp_ms = value()?.parse().context("--ramp-ms")?,
            "--reopen-delay-ms" => {
                plan.attack.reopen_delay_ms = value()?.parse().context("--reopen-delay-ms")?;
            }
            "--rate" => plan.normal.rate = value()?.parse().context("--rate")?,
            "--warmup-s" => plan.warmup_s = value()?.parse().context("--warmup-s")?,
            "--baseline-s" => plan.baseline_s = value()?.parse().context("--baseline-s")?,
            "--seconds" => plan.attack_s = value()?.parse().context("--seconds")?,
            "--settle-s" => plan.settle_s = value()?.parse().context("--settle-s")?,
            "--timeout-ms" => plan.normal.timeout_ms = value()?.parse().context("--timeout-ms")?,
            "--reuse" => plan.normal.reuse = value()?.parse().context("--reuse")?,
            "--max-connections" => {
                plan.normal.max_connections = value()?.parse().context("--max-connections")?;
            }
            "--model" => plan.normal.model = value()?,
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    let Some(target) = target else {
        bail!("--target is required\n\n{USAGE}");
    };
    exhaust::check_loopback(target).map_err(anyhow::Error::msg)?;
    exhaust::raise_nofile(plan.fds_needed()).map_err(anyhow::Error::msg)?;
    let report = exhaust::run(target, pid, &plan, !quiet).map_err(anyhow::Error::msg)?;
    print!("{}", exhaust::render(&report));
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(&path, text).with_context(|| format!("writing {path}"))?;
    }
    if check && report.verdicts().iter().any(|(_, ok)| !ok) {
        std::process::exit(1);
    }
    Ok(())
}
