//! Reports: the JSON a run writes, the summary people read, the side-by-side comparison of
//! targets with ratios, CSV rows for `tuning/results/`, and an SVG latency-vs-throughput plot.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::scenario::{Mode, Protocol};
use crate::stats::{ErrorKind, Percentiles};

/// One run of a scenario against one target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Target label (direct, nginx, gateway).
    pub target: String,
    /// Request URL.
    pub url: String,
    /// HTTP version.
    pub protocol: Protocol,
    /// Generator threads.
    pub threads: usize,
    /// Steps in order.
    pub steps: Vec<StepReport>,
}

/// One step's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    /// Step label.
    pub label: String,
    /// Open or closed loop.
    pub mode: Mode,
    /// Offered rate (open loop).
    pub offered_rate: Option<f64>,
    /// Connections (or most requests in flight).
    pub connections: usize,
    /// Measured seconds (start to last answer).
    pub seconds: f64,
    /// Successful requests.
    pub ok: u64,
    /// Failures by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Successful requests per second.
    pub throughput: f64,
    /// Intended send → last byte.
    pub latency: Percentiles,
    /// Streams: intended send → first event.
    pub ttfc: Option<Percentiles>,
    /// Streams: gaps between events.
    pub gaps: Option<Percentiles>,
    /// How late the generator sent, against the schedule.
    pub send_lag: Percentiles,
    /// Streams: mean events per stream.
    pub chunks_per_stream: Option<f64>,
    /// Per request class.
    pub classes: Vec<ClassReport>,
    /// CPU and RSS of the processes under test.
    pub process: Option<ProcReport>,
}

/// One request class within a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassReport {
    /// Class name.
    pub name: String,
    /// Successes.
    pub ok: u64,
    /// Failures.
    pub errors: u64,
    /// Latency.
    pub latency: Percentiles,
    /// Streams: time to first event.
    pub ttfc: Option<Percentiles>,
}

/// CPU and memory of the processes under test over one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcReport {
    /// The processes summed.
    pub pids: Vec<u32>,
    /// CPU seconds used during the step.
    pub cpu_seconds: f64,
    /// CPU µs per successful request.
    pub cpu_us_per_request: f64,
    /// CPU seconds per wall second (1.0 = one core busy).
    pub cpu_utilisation: f64,
    /// RSS at the start of the step, KiB.
    pub rss_kib_start: u64,
    /// RSS at the end, KiB.
    pub rss_kib_end: u64,
    /// Lowest RSS seen.
    pub rss_kib_min: u64,
    /// Highest RSS seen.
    pub rss_kib_max: u64,
}

impl StepReport {
    /// All failures.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A duration in µs, readable: `850µs`, `1.25ms`, `2.31s`.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..=999 => format!("{us}µs"),
        1_000..=999_999 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

/// A signed difference in µs: `+40µs`, `-1.20ms`.
fn fmt_delta(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "+" };
    format!("{sign}{}", fmt_us(us.unsigned_abs()))
}

const HEADER: &str = "target          req/s      p50      p90      p99    p99.9      max  errors  cpu µs/req  cpu/s  rss MiB";

fn row(out: &mut String, name: &str, s: &StepReport) {
    let l = &s.latency;
    let (cpu, util, rss) = match &s.process {
        Some(p) => (
            format!("{:.1}", p.cpu_us_per_request),
            format!("{:.2}", p.cpu_utilisation),
            format!("{:.1}", p.rss_kib_max as f64 / 1024.0),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    let _ = writeln!(
        out,
        "{name:<10} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {cpu:>11} {util:>6} {rss:>8}",
        s.throughput,
        fmt_us(l.p50_us),
        fmt_us(l.p90_us),
        fmt_us(l.p99_us),
        fmt_us(l.p999_us),
        fmt_us(l.max_us),
        s.error_count(),
    );
    if let (Some(t), Some(g)) = (&s.ttfc, &s.gaps) {
        let _ = writeln!(
            out,
            "{:<10} streams: first chunk p50 {} p99 {} · gap p50 {} p99 {} · {:.1} chunks/stream",
            "",
            fmt_us(t.p50_us),
            fmt_us(t.p99_us),
            fmt_us(g.p50_us),
            fmt_us(g.p99_us),
            s.chunks_per_stream.unwrap_or_default(),
        );
    }
}

/// The readable summary of one run.
pub fn summary(r: &RunReport) -> String {
    let mut out = format!(
        "scenario {} → {} ({}, {:?}, {} generator thread(s))\n",
        r.scenario, r.url, r.target, r.protocol, r.threads
    );
    for s in &r.steps {
        let _ = writeln!(out, "\n── {} ({:.1} s)\n{HEADER}", s.label, s.seconds);
        row(&mut out, &r.target, s);
        if s.error_count() > 0 {
            let _ = writeln!(out, "errors: {:?}", s.errors);
        }
        if s.send_lag.p99_us > 1_000 {
            let _ = writeln!(
                out,
                "note: the generator sent late (p99 {}): it may be the bottleneck",
                fmt_us(s.send_lag.p99_us)
            );
        }
    }
    out
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "-".into()
    }
}

fn step_at(r: Option<&RunReport>, i: usize) -> Option<&StepReport> {
    r?.steps.get(i)
}

fn find<'a>(reports: &'a [RunReport], label: &str) -> Option<&'a RunReport> {
    reports.iter().find(|r| r.target == label)
}

/// The proxies judged against the references: this build, and (with `--against`) an earlier one.
const PROXIES: [&str; 2] = ["gateway", "before"];

/// Side by side: every target per step, then the ratios the targets are judged by (each proxy
/// against nginx, direct and the earlier build; latency added over direct).
pub fn compare(reports: &[RunReport]) -> String {
    let Some(first) = reports.first() else {
        return String::new();
    };
    let mut out = format!("scenario {}\n", first.scenario);
    let direct = find(reports, "direct");
    for (i, step) in first.steps.iter().enumerate() {
        let _ = writeln!(out, "\n── {}\n{HEADER}", step.label);
        for r in reports {
            if let Some(s) = r.steps.get(i) {
                row(&mut out, &r.target, s);
            }
        }
        let at = |label| step_at(find(reports, label), i);
        let cpu = |s: &StepReport| s.process.as_ref().map(|p| p.cpu_us_per_request);
        for (proxy, other) in pairs() {
            let (Some(g), Some(o)) = (at(proxy), at(other)) else {
                continue;
            };
            let cpu_ratio = match (cpu(g), cpu(o)) {
                (Some(a), Some(b)) => ratio(a, b),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "{proxy}/{other}: req/s {}, CPU per request {cpu_ratio}",
                ratio(g.throughput, o.throughput)
            );
        }
        if let Some(d) = step_at(direct, i) {
            let mut added = Vec::new();
            for name in ["gateway", "before", "nginx"] {
                let Some(s) = at(name) else { continue };
                let delta = |a: u64, b: u64| fmt_delta(a as i64 - b as i64);
                let mut line = format!(
                    "{name} p50 {} p99 {}",
                    delta(s.latency.p50_us, d.latency.p50_us),
                    delta(s.latency.p99_us, d.latency.p99_us)
                );
                if let (Some(sg), Some(dg)) = (&s.gaps, &d.gaps) {
                    let _ = write!(line, " gap p99 {}", delta(sg.p99_us, dg.p99_us));
                }
                added.push(line);
            }
            if !added.is_empty() {
                let _ = writeln!(out, "added over direct: {}", added.join(" · "));
            }
        }
    }
    // A peak means something for a closed-loop sweep only (open steps are offered rates).
    if first.steps.len() > 1 && first.steps.iter().all(|s| s.mode == Mode::Closed) {
        let peak = |r: &RunReport| {
            r.steps
                .iter()
                .max_by(|a, b| a.throughput.total_cmp(&b.throughput))
                .map(|s| (s.throughput, s.label.clone()))
        };
        let mut parts = Vec::new();
        for r in reports {
            if let Some((t, l)) = peak(r) {
                parts.push(format!("{} {t:.0} req/s ({l})", r.target));
            }
        }
        let _ = writeln!(out, "\npeak throughput: {}", parts.join(" · "));
        let peak_of = |label| find(reports, label).and_then(peak).map(|p| p.0);
        for (proxy, other) in pairs() {
            if let (Some(g), Some(o)) = (peak_of(proxy), peak_of(other)) {
                let _ = writeln!(out, "peak {proxy}/{other}: {}", ratio(g, o));
            }
        }
    }
    out
}

/// (proxy, reference) pairs in print order: each proxy against nginx, direct and static (nginx
/// answering by itself), then this build against the earlier one.
fn pairs() -> impl Iterator<Item = (&'static str, &'static str)> {
    PROXIES
        .into_iter()
        .flat_map(|p| [(p, "nginx"), (p, "direct"), (p, "static")])
        .chain([("gateway", "before")])
}

/// Where and when a run happened, for the CSV.
#[derive(Debug, Clone)]
pub struct Meta {
    /// UTC date and time.
    pub date: String,
    /// Commit (with `-dirty` when the tree had changes).
    pub commit: String,
    /// Machine description.
    pub machine: String,
}

/// The CSV header matching [`csv_rows`].
pub const CSV_HEADER: &str = "date,commit,machine,scenario,step,target,offered_rate,connections,\
throughput,ok,errors,p50_us,p90_us,p99_us,p999_us,max_us,ttfc_p99_us,gap_p99_us,\
cpu_us_per_request,rss_kib_max";

/// One CSV row per target and step.
pub fn csv_rows(reports: &[RunReport], meta: &Meta) -> Vec<String> {
    let clean = |s: &str| s.replace([',', '\n'], " ");
    let mut out = Vec::new();
    for r in reports {
        for s in &r.steps {
            let l = &s.latency;
            let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
            out.push(format!(
                "{},{},{},{},{},{},{},{},{:.1},{},{},{},{},{},{},{},{},{},{},{}",
                clean(&meta.date),
                clean(&meta.commit),
                clean(&meta.machine),
                clean(&r.scenario),
                clean(&s.label),
                clean(&r.target),
                s.offered_rate.map(|x| x.to_string()).unwrap_or_default(),
                s.connections,
                s.throughput,
                s.ok,
                s.error_count(),
                l.p50_us,
                l.p90_us,
                l.p99_us,
                l.p999_us,
                l.max_us,
                opt(s.ttfc.map(|t| t.p99_us)),
                opt(s.gaps.map(|t| t.p99_us)),
                s.process
                    .as_ref()
                    .map(|p| format!("{:.2}", p.cpu_us_per_request))
                    .unwrap_or_default(),
                opt(s.process.as_ref().map(|p| p.rss_kib_max)),
            ));
        }
    }
    out
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// An SVG plot of p50 (dashed) and p99 (solid) latency against achieved throughput, one
/// colour per target, log-scale latency.
pub fn svg(reports: &[RunReport]) -> String {
    let (w, h) = (860.0, 520.0);
    let (left, right, top, bottom) = (80.0, 160.0, 40.0, 60.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let points = reports.iter().flat_map(|r| r.steps.iter());
    let max_x = points
        .clone()
        .map(|s| s.throughput)
        .fold(1.0, f64::max)
        .mul_add(1.1, 0.0);
    let lat = points
        .clone()
        .flat_map(|s| [s.latency.p50_us, s.latency.p99_us])
        .filter(|&v| v > 0);
    let lo = lat.clone().min().unwrap_or(1).max(1) as f64;
    let hi = lat.max().unwrap_or(1000).max(2) as f64;
    let (d0, d1) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let x = |v: f64| left + v / max_x * pw;
    let y = |us: f64| top + ph - (us.max(1.0).log10() - d0) / (d1 - d0) * ph;
    let title = reports.first().map(|r| r.scenario.as_str()).unwrap_or("");
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{} — latency vs throughput \
         (solid p99, dashed p50)</text>\n",
        left + pw / 2.0,
        xml(title)
    );
    // Axes and grid.
    let _ = writeln!(
        s,
        "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>"
    );
    for i in 0..=5 {
        let v = max_x * f64::from(i) / 5.0;
        let _ = writeln!(
            s,
            "<line x1=\"{0}\" x2=\"{0}\" y1=\"{top}\" y2=\"{1}\" stroke=\"#ddd\"/>\
             <text x=\"{0}\" y=\"{2}\" text-anchor=\"middle\">{3:.0}</text>",
            x(v),
            top + ph,
            top + ph + 18.0,
            v
        );
    }
    let mut d = d0;
    while d <= d1 + 1e-9 {
        let us = 10f64.powf(d);
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{0}\" y1=\"{1}\" y2=\"{1}\" stroke=\"#ddd\"/>\
             <text x=\"{2}\" y=\"{3}\" text-anchor=\"end\">{4}</text>",
            left + pw,
            y(us),
            left - 6.0,
            y(us) + 4.0,
            fmt_us(us as u64)
        );
        d += 1.0;
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">throughput (successful req/s)</text>\
         <text x=\"18\" y=\"{}\" transform=\"rotate(-90 18 {})\" text-anchor=\"middle\">latency</text>",
        left + pw / 2.0,
        h - 14.0,
        top + ph / 2.0,
        top + ph / 2.0
    );
    for (i, r) in reports.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let mut steps: Vec<_> = r.steps.iter().collect();
        steps.sort_by(|a, b| a.throughput.total_cmp(&b.throughput));
        for (dash, pick) in [
            ("", (|p: &Percentiles| p.p99_us) as fn(&Percentiles) -> u64),
            (" stroke-dasharray=\"6 4\"", |p: &Percentiles| p.p50_us),
        ] {
            let pts: Vec<String> = steps
                .iter()
                .map(|st| format!("{:.1},{:.1}", x(st.throughput), y(pick(&st.latency) as f64)))
                .collect();
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
                pts.join(" ")
            );
            for p in &pts {
                let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(s, "<circle cx=\"{px}\" cy=\"{py}\" r=\"3\" fill=\"{c}\"/>");
            }
        }
        let ly = top + 20.0 + 22.0 * i as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{0}\" x2=\"{1}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{c}\" stroke-width=\"3\"/>\
             <text x=\"{2}\" y=\"{3}\">{4}</text>",
            left + pw + 12.0,
            left + pw + 36.0,
            left + pw + 42.0,
            ly + 4.0,
            xml(&r.target)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(label: &str, rps: f64, p50: u64, p99: u64, cpu: f64) -> StepReport {
        StepReport {
            label: label.into(),
            mode: Mode::Closed,
            offered_rate: Some(rps),
            connections: 32,
            seconds: 10.0,
            ok: (rps * 10.0) as u64,
            errors: BTreeMap::new(),
            throughput: rps,
            latency: Percentiles {
                count: 10,
                p50_us: p50,
                p90_us: p99,
                p99_us: p99,
                p999_us: p99,
                max_us: p99,
                ..Default::default()
            },
            ttfc: None,
            gaps: None,
            send_lag: Percentiles::default(),
            chunks_per_stream: None,
            classes: vec![],
            process: Some(ProcReport {
                pids: vec![1],
                cpu_seconds: cpu * rps * 10.0 / 1e6,
                cpu_us_per_request: cpu,
                cpu_utilisation: cpu * rps / 1e6,
                rss_kib_start: 1,
                rss_kib_end: 1,
                rss_kib_min: 1,
                rss_kib_max: 2048,
            }),
        }
    }

    fn report(target: &str, steps: Vec<StepReport>) -> RunReport {
        RunReport {
            scenario: "s".into(),
            target: target.into(),
            url: "http://x".into(),
            protocol: Protocol::Http1,
            threads: 1,
            steps,
        }
    }

    #[test]
    fn compare_gives_ratios_and_added_latency() {
        let rs = [
            report("direct", vec![step("a", 1000.0, 100, 200, 10.0)]),
            report("nginx", vec![step("a", 1000.0, 150, 300, 20.0)]),
            report("gateway", vec![step("a", 1000.0, 140, 260, 15.0)]),
        ];
        let text = compare(&rs);
        assert!(
            text.contains("gateway/nginx: req/s 1.00×, CPU per request 0.75×"),
            "{text}"
        );
        assert!(
            text.contains("gateway/direct: req/s 1.00×, CPU per request 1.50×"),
            "{text}"
        );
        assert!(
            text.contains("gateway p50 +40µs p99 +60µs · nginx p50 +50µs p99 +100µs"),
            "{text}"
        );
    }

    #[test]
    fn compare_names_the_peak_of_a_sweep() {
        let rs = [
            report(
                "nginx",
                vec![step("c8", 900.0, 1, 2, 1.0), step("c64", 1200.0, 1, 2, 1.0)],
            ),
            report(
                "gateway",
                vec![
                    step("c8", 1000.0, 1, 2, 1.0),
                    step("c64", 1100.0, 1, 2, 1.0),
                ],
            ),
        ];
        let text = compare(&rs);
        assert!(
            text.contains("nginx 1200 req/s (c64) · gateway 1100 req/s (c64)"),
            "{text}"
        );
        assert!(text.contains("peak gateway/nginx: 0.92×"), "{text}");
    }

    #[test]
    fn compare_judges_an_earlier_build_beside_this_one() {
        let rs = [
            report(
                "direct",
                vec![
                    step("c8", 2000.0, 1, 2, 5.0),
                    step("c64", 4000.0, 1, 2, 5.0),
                ],
            ),
            report(
                "before",
                vec![
                    step("c8", 1000.0, 1, 2, 20.0),
                    step("c64", 1600.0, 1, 2, 20.0),
                ],
            ),
            report(
                "gateway",
                vec![
                    step("c8", 1100.0, 1, 2, 18.0),
                    step("c64", 1500.0, 1, 2, 19.0),
                ],
            ),
        ];
        let text = compare(&rs);
        assert!(
            text.contains("before/direct: req/s 0.50×, CPU per request 4.00×"),
            "{text}"
        );
        assert!(
            text.contains("gateway/before: req/s 1.10×, CPU per request 0.90×"),
            "{text}"
        );
        assert!(text.contains("peak gateway/direct: 0.38×"), "{text}");
        assert!(text.contains("peak before/direct: 0.40×"), "{text}");
        assert!(text.contains("peak gateway/before: 0.94×"), "{text}");
        assert!(!text.contains("nginx"), "{text}");
    }

    #[test]
    fn csv_has_one_row_per_target_and_step_matching_the_header() {
        let rs = [report(
            "gateway",
            vec![step("a, b", 10.0, 1, 2, 3.0), step("c", 20.0, 1, 2, 3.0)],
        )];
        let meta = Meta {
            date: "2026-11-22T10:00:00Z".into(),
            commit: "abc123".into(),
            machine: "box, 2 cores".into(),
        };
        let rows = csv_rows(&rs, &meta);
        assert_eq!(rows.len(), 2);
        let columns = CSV_HEADER.split(',').count();
        for r in &rows {
            assert_eq!(r.split(',').count(), columns, "{r}");
        }
        assert!(rows[0].starts_with(
            "2026-11-22T10:00:00Z,abc123,box  2 cores,s,a  b,gateway,10,32,10.0,100,0,1,2,2"
        ));
    }

    #[test]
    fn svg_plots_every_target() {
        let rs = [
            report(
                "nginx",
                vec![
                    step("a", 500.0, 100, 900, 1.0),
                    step("b", 1000.0, 120, 2000, 1.0),
                ],
            ),
            report("gateway", vec![step("a", 500.0, 90, 800, 1.0)]),
        ];
        let svg = svg(&rs);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert_eq!(svg.matches("<circle").count(), 6);
        assert!(svg.contains(">nginx</text>") && svg.contains(">gateway</text>"));
        assert_eq!(fmt_us(999), "999µs");
        assert_eq!(fmt_us(1_250), "1.25ms");
    }
}
