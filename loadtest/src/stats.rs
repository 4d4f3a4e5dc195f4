//! What a run records: HdrHistogram latencies (µs), stream timings, and errors by kind.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency a histogram tracks: 10 minutes in µs (larger values are clamped).
const MAX_US: u64 = 600_000_000;

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Could not open a connection.
    Connect,
    /// Read or write failed, or the server closed mid-response.
    Io,
    /// No complete answer within the request timeout.
    Timeout,
    /// A 4xx answer.
    Status4xx,
    /// A 5xx answer (or any other non-2xx).
    Status5xx,
    /// Not valid HTTP.
    BadResponse,
    /// A stream that carried an error event or ended without `[DONE]`.
    Stream,
}

/// A latency histogram in microseconds, 3 significant digits.
#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    #[allow(
        clippy::expect_used,
        reason = "constant, valid bounds: new_with_bounds cannot fail"
    )]
    fn default() -> Self {
        // 3 significant figures over 1 µs ..= MAX_US.
        Self(Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"))
    }
}

impl Hist {
    /// Record one duration.
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, MAX_US);
        self.0.saturating_record(us);
    }

    /// Fold another histogram in.
    pub fn merge(&mut self, other: &Hist) {
        // Same bounds on both sides, so `add` cannot fail; a failure would only drop samples.
        let _ = self.0.add(&other.0);
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Nothing recorded?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The summary of this histogram.
    pub fn summary(&self) -> Percentiles {
        let q = |p: f64| self.0.value_at_quantile(p);
        Percentiles {
            count: self.0.len(),
            mean_us: self.0.mean(),
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: self.0.max(),
        }
    }
}

/// Percentiles of one histogram, in µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

/// Everything recorded for one request class (or all of them).
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    /// Intended send → last byte, successful requests.
    pub latency: Hist,
    /// Streams: intended send → first SSE event.
    pub ttfc: Hist,
    /// Streams: gap between consecutive SSE events.
    pub gaps: Hist,
    /// Actual send − intended send (how late the generator itself was).
    pub send_lag: Hist,
    /// Successful requests.
    pub ok: u64,
    /// SSE events received over all streams.
    pub chunks: u64,
    /// Failures by kind.
    pub errors: BTreeMap<ErrorKind, u64>,
}

/// One request's outcome.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Intended send → last byte.
    pub latency: Duration,
    /// Actual send − intended send.
    pub send_lag: Duration,
    /// Streams: intended send → first event.
    pub ttfc: Option<Duration>,
    /// Streams: the gaps between consecutive events.
    pub gaps: Vec<Duration>,
    /// Streams: events received.
    pub chunks: u64,
}

impl Recorder {
    /// Record a success.
    pub fn ok(&mut self, s: &Sample) {
        self.ok += 1;
        self.latency.record(s.latency);
        self.send_lag.record(s.send_lag);
        if let Some(t) = s.ttfc {
            self.ttfc.record(t);
        }
        for g in &s.gaps {
            self.gaps.record(*g);
        }
        self.chunks += s.chunks;
    }

    /// Record a failure.
    pub fn error(&mut self, kind: ErrorKind) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// Failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Fold another recorder in.
    pub fn merge(&mut self, o: &Recorder) {
        self.latency.merge(&o.latency);
        self.ttfc.merge(&o.ttfc);
        self.gaps.merge(&o.gaps);
        self.send_lag.merge(&o.send_lag);
        self.ok += o.ok;
        self.chunks += o.chunks;
        for (k, v) in &o.errors {
            *self.errors.entry(*k).or_default() += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut h = Hist::default();
        for i in 1..=10_000 {
            h.record(us(i));
        }
        let p = h.summary();
        assert_eq!(p.count, 10_000);
        // 3 significant digits: within 0.1% of the exact rank value.
        for (got, want) in [(p.p50_us, 5_000), (p.p90_us, 9_000), (p.p99_us, 9_900)] {
            assert!(got.abs_diff(want) <= want / 1000 + 1, "{got} vs {want}");
        }
        assert!(p.p999_us.abs_diff(9_990) <= 10, "{}", p.p999_us);
        assert!(p.max_us.abs_diff(10_000) <= 10, "{}", p.max_us);
        assert!((p.mean_us - 5_000.5).abs() < 5.0, "{}", p.mean_us);
    }

    #[test]
    fn a_rare_outlier_shows_at_the_tail_only() {
        let mut h = Hist::default();
        for _ in 0..999 {
            h.record(us(100));
        }
        h.record(Duration::from_secs(2));
        let p = h.summary();
        assert_eq!(p.p50_us, 100);
        assert_eq!(p.p99_us, 100);
        assert!(p.max_us >= 1_999_000, "{}", p.max_us);
        assert!(p.p999_us <= 100 || p.p999_us >= 1_999_000);
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut h = Hist::default();
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(3600));
        assert_eq!(h.len(), 2);
        assert!(h.summary().max_us >= MAX_US - MAX_US / 1000);
    }

    #[test]
    fn merging_recorders_adds_everything() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        a.ok(&Sample {
            latency: us(10),
            chunks: 3,
            ttfc: Some(us(5)),
            gaps: vec![us(1), us(2)],
            ..Default::default()
        });
        b.ok(&Sample {
            latency: us(30),
            ..Default::default()
        });
        b.error(ErrorKind::Timeout);
        b.error(ErrorKind::Timeout);
        a.merge(&b);
        assert_eq!((a.ok, a.chunks, a.error_count()), (2, 3, 2));
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.gaps.len(), 2);
        assert_eq!(a.errors[&ErrorKind::Timeout], 2);
    }
}
