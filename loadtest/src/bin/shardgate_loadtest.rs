//! `shardgate-loadtest`: run a scenario against a target, compare runs, plot them.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use loadtest::ratios::{self, Verdict};
use loadtest::report::{self, Meta, RunReport};
use loadtest::run::{Options, Target, run};
use loadtest::scenario::Plan;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
shardgate-loadtest: a load generator for LLM gateways

USAGE:
    shardgate-loadtest run SCENARIO.toml --url http://HOST:PORT [--label NAME]
                       [--pid PID[,PID...]] [--threads N] [--scale F] [--json OUT] [--quiet]
    shardgate-loadtest mock-args SCENARIO.toml
    shardgate-loadtest compare RUN.json... [--csv FILE --commit C --date D --machine M]
    shardgate-loadtest plot OUT.svg RUN.json...
    shardgate-loadtest ratios RUN.json... [--new gateway] [--base before] [--max-cpu-ratio X]

run        runs every step of the scenario (after its warm-up) and prints a summary;
           --pid reports the CPU per request and RSS of those processes (summed);
           --scale multiplies step lengths and request counts (0.1 for a quick look).
mock-args  prints the shardgate-mock flags for the scenario's latency model.
compare    prints runs side by side with the ratios (targets labelled direct, nginx,
           gateway), and appends CSV rows to FILE when --csv is given.
plot       writes a latency-vs-throughput SVG of the runs.
ratios     pairs the runs of two builds on the same mock (the i-th run labelled --new with the
           i-th labelled --base) and prints per step and overall the median ratio new/base of
           req/s, CPU per request, p50 and p99 with its min-max spread, and the absolute
           medians; with --max-cpu-ratio it fails when the overall median CPU ratio exceeds X.";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => cmd_run(&args[1..]),
        Some("mock-args") => {
            let path = args.get(1).context("mock-args needs a scenario file")?;
            let plan = Plan::load(path.as_ref(), 1.0)?;
            println!("{}", plan.mock_args().join(" "));
            Ok(())
        }
        Some("compare") => cmd_compare(&args[1..]),
        Some("plot") => {
            let out = args.get(1).context("plot needs an output file")?;
            let reports = load_reports(&args[2..])?;
            std::fs::write(out, report::svg(&reports)).with_context(|| format!("writing {out}"))?;
            Ok(())
        }
        Some("ratios") => cmd_ratios(&args[1..]),
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

fn flag_value<'a>(
    it: &mut impl Iterator<Item = &'a String>,
    flag: &str,
) -> anyhow::Result<&'a str> {
    it.next()
        .map(String::as_str)
        .with_context(|| format!("{flag} needs a value"))
}

fn cmd_run(args: &[String]) -> anyhow::Result<()> {
    let mut scenario: Option<PathBuf> = None;
    let (mut url, mut json) = (None, None);
    let mut opts = Options {
        label: "target".into(),
        threads: 1,
        progress: true,
        ..Default::default()
    };
    let mut scale = 1.0;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--url" => url = Some(flag_value(&mut it, a)?.to_owned()),
            "--label" => opts.label = flag_value(&mut it, a)?.to_owned(),
            "--json" => json = Some(flag_value(&mut it, a)?.to_owned()),
            "--threads" => opts.threads = flag_value(&mut it, a)?.parse()?,
            "--scale" => scale = flag_value(&mut it, a)?.parse()?,
            "--quiet" => opts.progress = false,
            "--pid" => {
                for p in flag_value(&mut it, a)?.split(',').filter(|p| !p.is_empty()) {
                    opts.pids
                        .push(p.trim().parse().with_context(|| format!("bad pid {p}"))?);
                }
            }
            other if other.starts_with("--") => bail!("unknown flag {other}\n\n{USAGE}"),
            path if scenario.is_none() => scenario = Some(path.into()),
            other => bail!("unexpected argument {other}\n\n{USAGE}"),
        }
    }
    let scenario = scenario.context("run needs a scenario file")?;
    let url = url.context("run needs --url")?;
    let plan = Plan::load(&scenario, scale)?;
    let target = Target::parse(&url).map_err(anyhow::Error::msg)?;
    let result = run(&plan, &target, &opts).map_err(anyhow::Error::msg)?;
    print!("{}", report::summary(&result));
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&result)?;
        std::fs::write(&path, text).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

fn load_reports(paths: &[String]) -> anyhow::Result<Vec<RunReport>> {
    paths
        .iter()
        .filter(|p| !p.starts_with("--"))
        .map(|p| {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?;
            serde_json::from_str(&text).with_context(|| format!("{p}: not a run report"))
        })
        .collect()
}

fn cmd_compare(args: &[String]) -> anyhow::Result<()> {
    let mut files = Vec::new();
    let (mut csv, mut commit, mut date, mut machine) = (None, None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--csv" => csv = Some(flag_value(&mut it, a)?.to_owned()),
            "--commit" => commit = Some(flag_value(&mut it, a)?.to_owned()),
            "--date" => date = Some(flag_value(&mut it, a)?.to_owned()),
            "--machine" => machine = Some(flag_value(&mut it, a)?.to_owned()),
            other if other.starts_with("--") => bail!("unknown flag {other}\n\n{USAGE}"),
            file => files.push(file.to_owned()),
        }
    }
    let reports = load_reports(&files)?;
    print!("{}", report::compare(&reports));
    if let Some(path) = csv {
        let meta = Meta {
            date: date.unwrap_or_default(),
            commit: commit.unwrap_or_default(),
            machine: machine.unwrap_or_default(),
        };
        let new = !std::path::Path::new(&path).exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {path}"))?;
        if new {
            writeln!(f, "{}", report::CSV_HEADER)?;
        }
        for row in report::csv_rows(&reports, &meta) {
            writeln!(f, "{row}")?;
        }
    }
    Ok(())
}

fn cmd_ratios(args: &[String]) -> anyhow::Result<()> {
    let mut files = Vec::new();
    let (mut new, mut base, mut max_cpu) = ("gateway", "before", None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--new" => new = flag_value(&mut it, a)?,
            "--base" => base = flag_value(&mut it, a)?,
            "--max-cpu-ratio" => {
                let v = flag_value(&mut it, a)?;
                let x: f64 = v.parse().with_context(|| format!("--max-cpu-ratio {v}"))?;
                if !(x.is_finite() && x > 0.0) {
                    bail!("--max-cpu-ratio {v}: a positive ratio, e.g. 1.05");
                }
                max_cpu = Some(x);
            }
            other if other.starts_with("--") => bail!("unknown flag {other}\n\n{USAGE}"),
            file => files.push(file.to_owned()),
        }
    }
    let pairs = ratios::pair_up(ratios::read_runs(&files)?, new, base)?;
    let table = ratios::ratios(&pairs);
    print!("{}", table.render());
    let Some(max) = max_cpu else {
        return Ok(());
    };
    match table.guard(max) {
        Verdict::Pass(m) => {
            println!("\nguard: median CPU ratio {m:.3}× ≤ {max}: pass");
            Ok(())
        }
        Verdict::Fail(m) => {
            println!("\nguard: median CPU ratio {m:.3}× > {max}: FAIL");
            // A verdict, not a fault: one line on stderr and status 1, no backtrace.
            eprintln!("{new}/{base}: median CPU per request ratio {m:.3}× exceeds {max}");
            std::process::exit(1)
        }
        Verdict::NoCpu => bail!("--max-cpu-ratio: the runs measured no CPU (run them with --pid)"),
    }
}
