//! Scenarios as data: `loadtest/scenarios/*.toml`, resolved into request classes and steps.
//!
//! A scenario names its requests (weighted classes: prompt size, streaming, headers), the
//! mock's latency model (flags for `shardgate-mock`), and a list of steps: open loop at a rate
//! (or a ramp of stages, or a sweep of rates) or closed loop with N connections.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use serde::Deserialize;

use crate::schedule::{Schedule, ScheduleError, Stage};

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name (matches the file name).
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Request path.
    #[serde(default = "default_path")]
    pub path: String,
    /// Wire protocol to the target.
    #[serde(default)]
    pub protocol: Protocol,
    /// Model name put in generated bodies.
    #[serde(default = "default_model")]
    pub model: String,
    /// Unrecorded closed-loop warm-up before the first step, seconds.
    #[serde(default = "default_warmup")]
    pub warmup_s: f64,
    /// Per-request timeout, milliseconds.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Flags for `shardgate-mock` (`ttfc_ms = "exp:20"` becomes `--ttfc-ms exp:20`).
    #[serde(default)]
    pub mock: BTreeMap<String, toml::Value>,
    /// The request mix.
    pub requests: Vec<RequestSpec>,
    /// What to run, in order.
    #[serde(default)]
    pub steps: Vec<StepSpec>,
}

fn default_path() -> String {
    "/v1/chat/completions".into()
}
fn default_model() -> String {
    "gpt-mock".into()
}
fn default_warmup() -> f64 {
    2.0
}
fn default_timeout() -> u64 {
    30_000
}

/// HTTP version spoken to the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive, one request in flight per connection.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge; several streams per connection.
    Http2,
}

/// One class of request in the mix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Class name in reports.
    pub name: String,
    /// Share of the mix (relative to the other classes).
    #[serde(default = "one")]
    pub weight: u32,
    /// Ask for an SSE stream.
    #[serde(default)]
    pub stream: bool,
    /// Generated user prompt of about this many bytes.
    #[serde(default)]
    pub prompt_bytes: Option<usize>,
    /// Raw request body (instead of a generated one).
    #[serde(default)]
    pub body: Option<String>,
    /// Make every request of the class distinct (a counter in the generated prompt), so a
    /// cache never answers it and identical requests never ride one upstream call.
    #[serde(default)]
    pub unique: bool,
    /// Cycle through this many distinct prompts (a counter modulo N in the generated prompt):
    /// a working set of N keys for a cache, e.g. more than the gateway's shards replicate.
    #[serde(default)]
    pub distinct: Option<u64>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

/// Open or closed loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Requests at a fixed arrival rate, whatever the latency.
    Open,
    /// N connections, each sending its next request when the last one finished.
    Closed,
}

/// One step as written in the scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Open or closed loop.
    pub mode: Mode,
    /// Closed: connections (= requests in flight). Open: most requests in flight (HTTP/1.1
    /// connections, or HTTP/2 streams).
    pub connections: usize,
    /// HTTP/2: TCP connections to spread the streams over.
    #[serde(default = "one_usize")]
    pub tcp_connections: usize,
    /// Step length (closed, or open at `rate`/`rates`).
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Closed: stop after this many requests (instead of, or before, `seconds`).
    #[serde(default)]
    pub requests: Option<u64>,
    /// Open: constant rate.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Open: a sweep, one step per rate.
    #[serde(default)]
    pub rates: Option<Vec<f64>>,
    /// Open: ramps and plateaus.
    #[serde(default)]
    pub stages: Option<Vec<Stage>>,
}

fn one_usize() -> usize {
    1
}

/// How a resolved step generates load.
#[derive(Debug, Clone)]
pub enum Load {
    /// Open loop along a schedule.
    Open(Schedule),
    /// Closed loop until time or count runs out.
    Closed {
        /// Step length, seconds.
        seconds: Option<f64>,
        /// Request cap.
        requests: Option<u64>,
    },
}

/// A resolved step.
#[derive(Debug, Clone)]
pub struct Step {
    /// Label in reports ("rate 500/s", "closed 32 conns").
    pub label: String,
    /// Open or closed.
    pub mode: Mode,
    /// Offered rate (open loop, peak of the schedule).
    pub rate: Option<f64>,
    /// Requests in flight at most.
    pub connections: usize,
    /// HTTP/2 TCP connections.
    pub tcp_connections: usize,
    /// The load.
    pub load: Load,
}

/// A resolved request class.
#[derive(Debug, Clone)]
pub struct Class {
    /// Name.
    pub name: String,
    /// Streamed?
    pub stream: bool,
    /// The body.
    pub body: Bytes,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Distinct prompts the class cycles through: the body holds [`UNIQUE_MARK`], overwritten
    /// per request with a counter modulo this (`u64::MAX` for `unique`); `None`: one body.
    pub variants: Option<u64>,
}

/// The placeholder a `unique` class's prompt starts with: 16 hex digits follow `u`, overwritten
/// with a counter per request (same length, so the framing does not change).
pub const UNIQUE_MARK: &[u8] = b"u0000000000000000";

/// Overwrite the [`UNIQUE_MARK`] in `bytes` (a body or a whole request) with `n`; `bytes` as
/// they are when there is no mark.
pub fn stamp_unique(bytes: &Bytes, n: u64) -> Bytes {
    let Some(at) = memchr::memmem::find(bytes, UNIQUE_MARK) else {
        return bytes.clone();
    };
    let mut out = bytes.to_vec();
    let digits = format!("{n:016x}");
    out[at + 1..at + UNIQUE_MARK.len()].copy_from_slice(digits.as_bytes());
    Bytes::from(out)
}

/// A scenario ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The file as written.
    pub scenario: Scenario,
    /// Request classes.
    pub classes: Vec<Class>,
    /// Class of request `i` is `order[i % order.len()]` (weights, smoothly interleaved).
    pub order: Vec<usize>,
    /// Steps in order.
    pub steps: Vec<Step>,
}

/// Why a scenario cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Unreadable file.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not valid TOML for a scenario.
    #[error("{path}: {source}")]
    Parse {
        /// File.
        path: String,
        /// Cause.
        source: Box<toml::de::Error>,
    },
    /// Valid TOML but not a runnable scenario.
    #[error("{0}")]
    Invalid(String),
}

impl From<ScheduleError> for ScenarioError {
    fn from(e: ScheduleError) -> Self {
        Self::Invalid(e.to_string())
    }
}

/// Scale factor for step lengths and request counts (quick runs: `--scale 0.1`).
pub type Scale = f64;

impl Plan {
    /// Load and resolve a scenario file.
    pub fn load(path: &Path, scale: Scale) -> Result<Self, ScenarioError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: p.clone(),
            source,
        })?;
        let scenario: Scenario = toml::from_str(&text).map_err(|e| ScenarioError::Parse {
            path: p,
            source: Box::new(e),
        })?;
        Self::resolve(scenario, scale)
    }

    /// Resolve a parsed scenario.
    pub fn resolve(scenario: Scenario, scale: Scale) -> Result<Self, ScenarioError> {
        let bad = |m: String| ScenarioError::Invalid(format!("scenario {}: {m}", scenario.name));
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(bad(format!("scale must be > 0, not {scale}")));
        }
        if scenario.requests.is_empty() || scenario.requests.iter().all(|r| r.weight == 0) {
            return Err(bad("needs at least one request with a weight > 0".into()));
        }
        if let Some(r) = scenario.requests.iter().find(|r| {
            r.distinct == Some(0) || (r.distinct.is_some() && (r.unique || r.body.is_some()))
        }) {
            return Err(bad(format!(
                "request {}: `distinct` needs a generated prompt (no `body`), at least 1, and no `unique`",
                r.name
            )));
        }
        let classes = scenario
            .requests
            .iter()
            .map(|r| Class {
                name: r.name.clone(),
                stream: r.stream,
                body: r.body.clone().map(Bytes::from).unwrap_or_else(|| {
                    generated_body(
                        &scenario.model,
                        r.stream,
                        r.prompt_bytes.unwrap_or(64),
                        r.unique || r.distinct.is_some(),
                    )
                }),
                variants: if r.unique { Some(u64::MAX) } else { r.distinct },
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect();
        let order = interleave(
            &scenario
                .requests
                .iter()
                .map(|r| r.weight)
                .collect::<Vec<_>>(),
        );
        let mut steps = Vec::new();
        for (i, s) in scenario.steps.iter().enumerate() {
            let at = |m: &str| bad(format!("step {}: {m}", i + 1));
            if s.connections == 0 || s.tcp_connections == 0 {
                return Err(at("connections must be > 0"));
            }
            let seconds = s.seconds.map(|x| x * scale);
            let base = Step {
                label: String::new(),
                mode: s.mode,
                rate: None,
                connections: s.connections,
                tcp_connections: s.tcp_connections,
                load: Load::Closed {
                    seconds,
                    requests: None,
                },
            };
            match s.mode {
                Mode::Closed => {
                    if seconds.is_none() && s.requests.is_none() {
                        return Err(at("a closed step needs `seconds` or `requests`"));
                    }
                    if s.rate.is_some() || s.rates.is_some() || s.stages.is_some() {
                        return Err(at("rates and stages belong to open steps"));
                    }
                    let requests = s
                        .requests
                        .map(|n| ((n as f64 * scale).ceil() as u64).max(1));
                    steps.push(Step {
                        label: format!("closed {} conns", s.connections),
                        load: Load::Closed { seconds, requests },
                        ..base
                    });
                }
                Mode::Open => {
                    let mut add = |label: String, rate: f64, stages: Vec<Stage>| {
                        let sched = Schedule::new(stages)?;
                        steps.push(Step {
                            label,
                            rate: Some(rate),
                            load: Load::Open(sched),
                            ..base.clone()
                        });
                        Ok::<(), ScenarioError>(())
                    };
                    match (s.rate, &s.rates, &s.stages, seconds) {
                        (Some(r), None, None, Some(t)) => {
                            add(format!("rate {r}/s"), r, vec![Stage::constant(r, t)])?
                        }
                        (None, Some(rs), None, Some(t)) => {
                            for &r in rs {
                                add(format!("rate {r}/s"), r, vec![Stage::constant(r, t)])?;
                            }
                        }
                        (None, None, Some(st), None) => {
                            let st: Vec<Stage> = st
                                .iter()
                                .map(|x| Stage {
                                    seconds: x.seconds * scale,
                                    ..*x
                                })
                                .collect();
                            let peak = st.iter().map(|x| x.from.max(x.to)).fold(0.0, f64::max);
                            add(format!("ramp to {peak}/s"), peak, st)?;
                        }
                        _ => {
                            return Err(at(
                                "an open step needs `rate` or `rates` with `seconds`, or `stages`",
                            ));
                        }
                    }
                }
            }
        }
        if steps.is_empty() {
            return Err(bad("needs at least one step".into()));
        }
        Ok(Self {
            scenario,
            classes,
            order,
            steps,
        })
    }

    /// The mock's command-line flags for this scenario's latency model.
    pub fn mock_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.scenario.mock {
            out.push(format!("--{}", k.replace('_', "-")));
            out.push(match v {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        out
    }
}

/// Smooth weighted round robin: each class appears `weight` times in a cycle, spread evenly
/// (weights 6:3:1 give a cycle of 10 with the light class alone, not in bursts).
pub fn interleave(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(weights) {
            *c += i64::from(*w);
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|&(i, c)| (*c, std::cmp::Reverse(i)))
            .unwrap_or((0, &0));
        current[best] -= total;
        out.push(best);
    }
    out
}

/// A chat body with a user prompt of about `prompt_bytes` bytes of plain words; `unique`
/// starts the prompt with [`UNIQUE_MARK`].
pub fn generated_body(model: &str, stream: bool, prompt_bytes: usize, unique: bool) -> Bytes {
    const WORDS: &str = "the quick brown fox jumps over the lazy dog while a gateway routes \
                         every token to the best provider it can find ";
    let mut prompt = String::with_capacity(prompt_bytes + WORDS.len());
    if unique {
        prompt.push_str(&String::from_utf8_lossy(UNIQUE_MARK));
        prompt.push(' ');
    }
    while prompt.len() < prompt_bytes {
        prompt.push_str(WORDS);
    }
    prompt.truncate(prompt_bytes.max(1));
    let body = serde_json::json!({
        "model": model,
        "stream": stream,
        "max_tokens": 256,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": prompt.trim_end()},
        ],
    });
    Bytes::from(body.to_string())
}

#[cfg(test)]
mod tests {

    #[test]
    fn unique_requests_differ_in_the_prompt_only() {
        let body = super::generated_body("m", false, 100, true);
        let a = super::stamp_unique(&body, 1);
        let b = super::stamp_unique(&body, 0xabc);
        assert_eq!(a.len(), body.len());
        assert_ne!(a, b);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        let prompt = v["messages"][1]["content"].as_str().unwrap();
        assert!(prompt.starts_with("u0000000000000abc "), "{prompt}");
        let plain = super::generated_body("m", false, 100, false);
        assert_eq!(super::stamp_unique(&plain, 5), plain, "no mark, no change");
    }

    use super::*;

    fn plan(text: &str) -> Result<Plan, ScenarioError> {
        Plan::resolve(toml::from_str(text).unwrap(), 1.0)
    }

    const MIX: &str = r#"
        name = "t"
        description = "d"
        [mock]
        ttfc_ms = "exp:20"
        chunks = 20
        [[requests]]
        name = "short"
        weight = 6
        [[requests]]
        name = "long"
        weight = 3
        prompt_bytes = 4000
        [[requests]]
        name = "stream"
        weight = 1
        stream = true
    "#;

    #[test]
    fn distinct_cycles_a_marked_prompt_and_refuses_what_it_cannot_mark() {
        let base = "name = \"t\"\ndescription = \"d\"\n[[steps]]\nmode = \"closed\"\nconnections = 1\nseconds = 1\n\
                    [[requests]]\nname = \"r\"\n";
        let p = plan(&format!("{base}distinct = 3\n")).unwrap();
        assert_eq!(p.classes[0].variants, Some(3));
        assert!(memchr::memmem::find(&p.classes[0].body, UNIQUE_MARK).is_some());
        assert_eq!(
            plan(&format!("{base}unique = true\n")).unwrap().classes[0].variants,
            Some(u64::MAX)
        );
        assert_eq!(plan(base).unwrap().classes[0].variants, None);
        for bad in [
            "distinct = 0\n",
            "distinct = 2\nunique = true\n",
            "distinct = 2\nbody = \"{}\"\n",
        ] {
            assert!(plan(&format!("{base}{bad}")).is_err(), "{bad}");
        }
    }

    #[test]
    fn weights_interleave_evenly() {
        let o = interleave(&[6, 3, 1]);
        assert_eq!(o.len(), 10);
        assert_eq!(o.iter().filter(|&&c| c == 0).count(), 6);
        assert_eq!(o.iter().filter(|&&c| c == 1).count(), 3);
        assert_eq!(o.iter().filter(|&&c| c == 2).count(), 1);
        // The heavy class never runs three in a row.
        assert!(
            o.windows(3).all(|w| !(w[0] == 0 && w[1] == 0 && w[2] == 0)),
            "{o:?}"
        );
        assert_eq!(interleave(&[0, 2]), vec![1, 1]);
    }

    #[test]
    fn resolves_steps_sweeps_and_mock_flags() {
        let p = plan(&format!(
            r#"{MIX}
            [[steps]]
            mode = "closed"
            connections = 1
            requests = 5000
            [[steps]]
            mode = "open"
            connections = 64
            rates = [500, 2000]
            seconds = 10
            [[steps]]
            mode = "open"
            connections = 64
            stages = [{{ seconds = 30, from = 0, to = 2000 }}, {{ seconds = 10, from = 2000, to = 2000 }}]
            "#
        ))
        .unwrap();
        let labels: Vec<_> = p.steps.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "closed 1 conns",
                "rate 500/s",
                "rate 2000/s",
                "ramp to 2000/s"
            ]
        );
        match &p.steps[2].load {
            Load::Open(s) => assert_eq!(s.total(), 20_000),
            other => panic!("{other:?}"),
        }
        match &p.steps[3].load {
            Load::Open(s) => assert_eq!(s.total(), 50_000),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.mock_args(), ["--chunks", "20", "--ttfc-ms", "exp:20"]);
        let long: serde_json::Value = serde_json::from_slice(&p.classes[1].body).unwrap();
        let prompt = long["messages"][1]["content"].as_str().unwrap();
        assert!((3990..=4000).contains(&prompt.len()), "{}", prompt.len());
        assert_eq!(long["stream"], false);
        assert!(p.classes[2].stream);
    }

    #[test]
    fn scale_shortens_steps() {
        let text = format!(
            "{MIX}\n[[steps]]\nmode = \"open\"\nconnections = 8\nrate = 100\nseconds = 10\n"
        );
        let p = Plan::resolve(toml::from_str(&text).unwrap(), 0.1).unwrap();
        match &p.steps[0].load {
            Load::Open(s) => assert_eq!(s.total(), 100),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_unrunnable_steps() {
        for (step, want) in [
            (
                "mode = \"closed\"\nconnections = 4",
                "needs `seconds` or `requests`",
            ),
            (
                "mode = \"open\"\nconnections = 4\nseconds = 1",
                "needs `rate`",
            ),
            (
                "mode = \"open\"\nconnections = 0\nrate = 1\nseconds = 1",
                "connections must be",
            ),
            (
                "mode = \"closed\"\nconnections = 4\nseconds = 1\nrate = 5",
                "belong to open",
            ),
        ] {
            let err = plan(&format!("{MIX}\n[[steps]]\n{step}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{step}: {err}");
        }
        assert!(
            plan(MIX)
                .unwrap_err()
                .to_string()
                .contains("at least one step")
        );
    }
}
