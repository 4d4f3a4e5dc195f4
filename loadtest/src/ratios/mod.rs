//! Ratios of repeated A/B runs: the regression guard of `scripts/loadtest.sh --runs N`.
//!
//! Owns: pairing the runs of two builds (by default `gateway`, this build, against `before`, an
//! earlier commit) made on the same mock, and the median ratio with its min–max spread per step
//! and overall, for req/s, CPU per request, p50 and p99; the absolute medians beside them; the
//! CPU guard ([`Ratios::guard`]).
//! Does not: run anything, or decide the order of the runs (the script alternates it to cancel
//! drift); it reads the JSON the runs wrote.
//!
//! One run on a shared VM cannot resolve a 5% change (CPU per request of identical code moves
//! by 0.8–1.4× from run to run); the median of N paired runs can, and the spread says how far
//! to trust it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::report::{RunReport, StepReport, fmt_us};

/// Why runs could not be read or paired.
#[derive(Debug, thiserror::Error)]
pub enum RatiosError {
    /// A run file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A run file is not a run report.
    #[error("{path}: not a run report")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The two builds do not have the same number of runs.
    #[error("{new_runs} run(s) of `{new}` against {base_runs} of `{base}`: they must pair up")]
    Unpaired {
        /// Label of the build judged.
        new: String,
        /// Its runs.
        new_runs: usize,
        /// Label of the reference build.
        base: String,
        /// Its runs.
        base_runs: usize,
    },
    /// No run of either build.
    #[error("no runs labelled `{new}` and `{base}`")]
    NoPairs {
        /// Label of the build judged.
        new: String,
        /// Label of the reference build.
        base: String,
    },
    /// The runs are not of the same scenario and steps.
    #[error("run {index} of `{target}`: {what}")]
    Mismatch {
        /// Which run (1-based, in the order given).
        index: usize,
        /// Its label.
        target: String,
        /// What differs.
        what: String,
    },
}

/// Read run reports (the JSON of `shardgate-loadtest run --json`).
pub fn read_runs<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<RunReport>, RatiosError> {
    paths
        .iter()
        .map(|p| {
            let path = p.as_ref();
            let text = std::fs::read_to_string(path).map_err(|source| RatiosError::Read {
                path: path.to_owned(),
                source,
            })?;
            serde_json::from_str(&text).map_err(|source| RatiosError::Parse {
                path: path.to_owned(),
                source,
            })
        })
        .collect()
}

/// The median of some values with their range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median (the mean of the two middle values for an even count).
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// How many values.
    pub n: usize,
}

impl Spread {
    /// The spread of the finite values, `None` when there is none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let (&min, &max) = (v.first()?, v.last()?);
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min,
            max,
            n,
        })
    }
}

/// The geometric mean of the positive finite values, `None` when there is none.
fn geomean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .filter(|x| x.is_finite() && *x > 0.0)
        .fold((0.0, 0u32), |(s, n), x| (s + x.ln(), n + 1));
    (n > 0).then(|| (sum / f64::from(n)).exp())
}

/// What the ratios are taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Successful requests per second.
    Throughput,
    /// CPU µs of the processes under test per successful request.
    CpuPerRequest,
    /// Median latency.
    P50,
    /// 99th percentile latency.
    P99,
}

impl Measure {
    /// Every measure, in print order.
    pub const ALL: [Measure; 4] = [
        Measure::Throughput,
        Measure::CpuPerRequest,
        Measure::P50,
        Measure::P99,
    ];

    /// Its name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Measure::Throughput => "req/s",
            Measure::CpuPerRequest => "cpu µs/req",
            Measure::P50 => "p50",
            Measure::P99 => "p99",
        }
    }

    /// Its value in one step (CPU only when the run measured processes).
    pub fn of(self, s: &StepReport) -> Option<f64> {
        match self {
            Measure::Throughput => Some(s.throughput),
            Measure::CpuPerRequest => s.process.as_ref().map(|p| p.cpu_us_per_request),
            Measure::P50 => Some(s.latency.p50_us as f64),
            Measure::P99 => Some(s.latency.p99_us as f64),
        }
    }

    fn fmt(self, v: f64) -> String {
        match self {
            Measure::Throughput => format!("{v:.0}"),
            Measure::CpuPerRequest => format!("{v:.1}µs"),
            Measure::P50 | Measure::P99 => fmt_us(v.round() as u64),
        }
    }
}

/// One run of each build, made on the same mock.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The build judged (`gateway`).
    pub new: RunReport,
    /// The reference build (`before`).
    pub base: RunReport,
}

/// Pair the runs labelled `new` with those labelled `base`, in the order given (the first of
/// each, then the second...). Every run must be of the same scenario with the same steps.
pub fn pair_up(reports: Vec<RunReport>, new: &str, base: &str) -> Result<Vec<Pair>, RatiosError> {
    let mismatch = |index, r: &RunReport, what: String| RatiosError::Mismatch {
        index,
        target: r.target.clone(),
        what,
    };
    let (mut news, mut bases) = (Vec::new(), Vec::new());
    for (i, r) in reports.into_iter().enumerate() {
        if r.target == new {
            news.push((i + 1, r));
        } else if r.target == base {
            bases.push((i + 1, r));
        }
    }
    if news.len() != bases.len() {
        return Err(RatiosError::Unpaired {
            new: new.into(),
            new_runs: news.len(),
            base: base.into(),
            base_runs: bases.len(),
        });
    }
    // Every run is held to the first one given.
    let mut all: Vec<&(usize, RunReport)> = news.iter().chain(&bases).collect();
    all.sort_by_key(|(i, _)| *i);
    let Some((_, first)) = all.first() else {
        return Err(RatiosError::NoPairs {
            new: new.into(),
            base: base.into(),
        });
    };
    let labels: Vec<&str> = first.steps.iter().map(|s| s.label.as_str()).collect();
    for (i, r) in &all {
        if r.scenario != first.scenario {
            let what = format!("scenario `{}`, not `{}`", r.scenario, first.scenario);
            return Err(mismatch(*i, r, what));
        }
        let these: Vec<&str> = r.steps.iter().map(|s| s.label.as_str()).collect();
        if these != labels {
            let what = format!("steps {these:?}, not {labels:?}");
            return Err(mismatch(*i, r, what));
        }
    }
    Ok(news
        .into_iter()
        .zip(bases)
        .map(|((_, new), (_, base))| Pair { new, base })
        .collect())
}

/// One measure's figures over the pairs.
#[derive(Debug, Clone)]
pub struct Row {
    /// What.
    pub measure: Measure,
    /// new/base, one value per pair.
    pub ratio: Option<Spread>,
    /// The build judged, one value per run.
    pub new: Option<Spread>,
    /// The reference build, one value per run.
    pub base: Option<Spread>,
}

/// The rows of one step, or overall.
#[derive(Debug, Clone)]
pub struct Section {
    /// Step label, or `overall`.
    pub label: String,
    /// One row per [`Measure`].
    pub rows: Vec<Row>,
}

impl Section {
    /// The row of one measure.
    pub fn row(&self, m: Measure) -> Option<&Row> {
        self.rows.iter().find(|r| r.measure == m)
    }
}

/// Every step's ratios and the overall ones.
#[derive(Debug, Clone)]
pub struct Ratios {
    /// Scenario name.
    pub scenario: String,
    /// Label of the build judged.
    pub new: String,
    /// Label of the reference build.
    pub base: String,
    /// Pairs of runs.
    pub pairs: usize,
    /// Runs (of either build) in which a step had failed requests.
    pub runs_with_errors: usize,
    /// One section per step.
    pub steps: Vec<Section>,
    /// Over the steps: per run, the geometric mean of the steps' values (each step weighs the
    /// same; the ratio of two such means is the geometric mean of the step ratios).
    pub overall: Section,
}

/// The geometric mean over a run's steps of one measure.
fn run_value(r: &RunReport, m: Measure) -> Option<f64> {
    geomean(r.steps.iter().filter_map(|s| m.of(s)))
}

/// Ratios of paired runs (see [`pair_up`]).
pub fn ratios(pairs: &[Pair]) -> Ratios {
    let first = pairs.first();
    let label = |f: fn(&Pair) -> &RunReport| first.map(|p| f(p).target.clone()).unwrap_or_default();
    let row = |m: Measure, value: &dyn Fn(&RunReport) -> Option<f64>| {
        let ratio = |p: &Pair| match (value(&p.new), value(&p.base)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        Row {
            measure: m,
            ratio: Spread::of(pairs.iter().filter_map(ratio)),
            new: Spread::of(pairs.iter().filter_map(|p| value(&p.new))),
            base: Spread::of(pairs.iter().filter_map(|p| value(&p.base))),
        }
    };
    let steps = first
        .map(|p| {
            p.new
                .steps
                .iter()
                .map(|s| s.label.clone())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, label)| Section {
            label,
            rows: Measure::ALL
                .into_iter()
                .map(|m| row(m, &|r: &RunReport| r.steps.get(i).and_then(|s| m.of(s))))
                .collect(),
        })
        .collect();
    let overall = Section {
        label: "overall".into(),
        rows: Measure::ALL
            .into_iter()
            .map(|m| row(m, &|r: &RunReport| run_value(r, m)))
            .collect(),
    };
    let runs_with_errors = pairs
        .iter()
        .flat_map(|p| [&p.new, &p.base])
        .filter(|r| r.steps.iter().any(|s| s.error_count() > 0))
        .count();
    Ratios {
        scenario: first.map(|p| p.new.scenario.clone()).unwrap_or_default(),
        new: label(|p| &p.new),
        base: label(|p| &p.base),
        pairs: pairs.len(),
        runs_with_errors,
        steps,
        overall,
    }
}

/// What the CPU guard found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The overall median CPU ratio is at most the limit.
    Pass(f64),
    /// It exceeds the limit.
    Fail(f64),
    /// The runs measured no CPU (run without `--pid`).
    NoCpu,
}

impl Ratios {
    /// The overall median CPU-per-request ratio against `max`.
    pub fn guard(&self, max: f64) -> Verdict {
        let ratio = self
            .overall
            .row(Measure::CpuPerRequest)
            .and_then(|r| r.ratio);
        match ratio {
            Some(s) if s.median <= max => Verdict::Pass(s.median),
            Some(s) => Verdict::Fail(s.median),
            None => Verdict::NoCpu,
        }
    }

    /// The table people read.
    pub fn render(&self) -> String {
        let pair = format!("{}/{}", self.new, self.base);
        let mut out = format!(
            "scenario {}: {pair} over {} pair(s) of runs on the same mock \
             (median, min–max over the pairs; {} and {}: medians over their runs)\n",
            self.scenario, self.pairs, self.new, self.base
        );
        if self.runs_with_errors > 0 {
            let _ = writeln!(
                out,
                "note: {} run(s) had failed requests; see their JSON",
                self.runs_with_errors
            );
        }
        let header = format!(
            "{:<11} {:>15} {:>15} {:>3} {:>11} {:>11}",
            "measure", pair, "min–max", "n", self.new, self.base
        );
        let overall = Section {
            label: "overall (geometric mean over the steps)".into(),
            rows: self.overall.rows.clone(),
        };
        for section in self.steps.iter().chain([&overall]) {
            let _ = writeln!(out, "\n── {}\n{header}", section.label);
            for r in &section.rows {
                let (ratio, range, n) = match r.ratio {
                    Some(s) => (
                        format!("{:.3}×", s.median),
                        format!("{:.3}–{:.3}×", s.min, s.max),
                        s.n.to_string(),
                    ),
                    None => ("-".into(), "-".into(), "0".into()),
                };
                let abs = |s: Option<Spread>| s.map_or("-".into(), |s| r.measure.fmt(s.median));
                let _ = writeln!(
                    out,
                    "{:<11} {ratio:>15} {range:>15} {n:>3} {:>11} {:>11}",
                    r.measure.name(),
                    abs(r.new),
                    abs(r.base),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
