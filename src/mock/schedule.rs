//! A fault schedule: knob settings that apply only during windows of time after the mock
//! started (`2000..5000:status=500;10000..:latency_ms=50`, milliseconds since start).
//!
//! Owns: reading the schedule text and answering which knobs apply at a given elapsed time
//! (time passed in, so tests need no clock).
//! Does not: keep time or serve anything (the server resolves it per request).

use std::str::FromStr;
use std::time::Duration;

use super::{KnobPairs, Knobs, MockError};

/// Knob settings per time window, applied in the order written (a later window's knob wins
/// where windows overlap).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    windows: Vec<Window>,
}

/// One window: from `from` (inclusive) until `until` (exclusive; `None` = forever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Start, since the mock started.
    pub from: Duration,
    /// End, since the mock started (`None`: open-ended).
    pub until: Option<Duration>,
    /// The knobs set while the window is open.
    pub knobs: KnobPairs,
}

impl Window {
    /// Is the window open at `elapsed`?
    pub fn is_open(&self, elapsed: Duration) -> bool {
        elapsed >= self.from && self.until.is_none_or(|u| elapsed < u)
    }
}

impl Schedule {
    /// Read `FROM..UNTIL:knob=value;knob=value;FROM..:knob=value` (milliseconds since start;
    /// `FROM` may be empty for 0, `UNTIL` empty for open-ended). A `;`-separated piece that
    /// starts with a range opens a new window; the pieces after it are that window's knobs.
    pub fn parse(text: &str) -> Result<Self, MockError> {
        let mut windows = Vec::new();
        // (from, until, the window's knob text)
        let mut current: Option<(Duration, Option<Duration>, String)> = None;
        for piece in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some((range, first)) = window_start(piece)? {
                if let Some(w) = current.take() {
                    windows.push(close(w)?);
                }
                current = Some((range.0, range.1, first.to_owned()));
            } else {
                let Some((_, _, knobs)) = current.as_mut() else {
                    return Err(MockError(format!(
                        "fault schedule: `{piece}` comes before any `FROM..UNTIL:` window"
                    )));
                };
                knobs.push(';');
                knobs.push_str(piece);
            }
        }
        if let Some(w) = current {
            windows.push(close(w)?);
        }
        Ok(Self { windows })
    }

    /// No windows?
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// The windows, in order.
    pub fn windows(&self) -> &[Window] {
        &self.windows
    }

    /// Set the knobs of every window open at `elapsed` on `knobs`, in order.
    pub fn apply_at(&self, elapsed: Duration, knobs: &mut Knobs) {
        for w in self.windows.iter().filter(|w| w.is_open(elapsed)) {
            w.knobs.apply(knobs);
        }
    }
}

impl FromStr for Schedule {
    type Err = MockError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

type Range = (Duration, Option<Duration>);

/// `FROM..UNTIL:rest` → the range and `rest`; `None` when the piece is a plain knob pair (its
/// text before the first `:` is not a range: `latency_ms=exp:20` has an `=` there).
fn window_start(piece: &str) -> Result<Option<(Range, &str)>, MockError> {
    let Some((range, rest)) = piece.split_once(':') else {
        return Ok(None);
    };
    let Some((from, until)) = range.split_once("..") else {
        return Ok(None);
    };
    if range.contains('=') {
        return Ok(None);
    }
    let bad = || {
        MockError(format!(
            "fault schedule: bad window `{range}` (milliseconds)"
        ))
    };
    let ms = |t: &str| t.trim().parse::<u64>().map(Duration::from_millis);
    let from = match from.trim() {
        "" => Duration::ZERO,
        t => ms(t).map_err(|_| bad())?,
    };
    let until = match until.trim() {
        "" => None,
        t => Some(ms(t).map_err(|_| bad())?),
    };
    if until.is_some_and(|u| u <= from) {
        return Err(MockError(format!(
            "fault schedule: window `{range}` ends before it starts"
        )));
    }
    Ok(Some(((from, until), rest)))
}

/// A window from its parts, its knob text checked.
fn close((from, until, text): (Duration, Option<Duration>, String)) -> Result<Window, MockError> {
    let knobs = KnobPairs::parse(&text)
        .map_err(|e| MockError(format!("fault schedule, window from {from:?}: {}", e.0)))?;
    if knobs.is_empty() {
        return Err(MockError(format!(
            "fault schedule: the window from {from:?} sets no knob"
        )));
    }
    Ok(Window { from, until, knobs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::{Delay, ProviderError};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn at(s: &Schedule, elapsed_ms: u64) -> Knobs {
        let mut k = Knobs::default();
        s.apply_at(ms(elapsed_ms), &mut k);
        k
    }

    #[test]
    fn windows_open_and_close_at_their_bounds() {
        let s = Schedule::parse("2000..5000:status=500;10000..:latency_ms=50").unwrap();
        assert_eq!(s.windows().len(), 2);
        assert_eq!(at(&s, 0), Knobs::default());
        assert_eq!(at(&s, 1999), Knobs::default());
        assert_eq!(at(&s, 2000).status, Some(500));
        assert_eq!(at(&s, 4999).status, Some(500));
        assert_eq!(at(&s, 5000), Knobs::default(), "the end is exclusive");
        assert_eq!(at(&s, 9999), Knobs::default());
        let late = at(&s, 10_000);
        assert_eq!((late.status, late.latency), (None, Delay::Fixed(ms(50))));
        assert_eq!(
            at(&s, u64::MAX / 2).latency,
            Delay::Fixed(ms(50)),
            "open-ended"
        );
    }

    #[test]
    fn a_window_holds_several_knobs_and_later_windows_win() {
        let s = Schedule::parse(
            " ..3000:status=503; retry_after=2 ;latency_ms=10..20; 1000..2000:status=429;error=context_window",
        )
        .unwrap();
        let k = at(&s, 500);
        assert_eq!(k.status, Some(503));
        assert_eq!(k.retry_after, Some(2));
        assert_eq!(k.latency, Delay::Uniform(ms(10), ms(20)));
        let k = at(&s, 1500);
        assert_eq!(
            k.status,
            Some(429),
            "the later window wins where both are open"
        );
        assert_eq!(k.retry_after, Some(2));
        assert_eq!(k.error, Some(ProviderError::ContextWindow));
        assert_eq!(at(&s, 2500).error, None);
    }

    #[test]
    fn knob_values_with_colons_and_ranges_stay_knobs() {
        let s = Schedule::parse("0..:latency_ms=exp:20;ttfc_ms=5..6").unwrap();
        assert_eq!(s.windows().len(), 1);
        let k = at(&s, 7);
        assert_eq!(k.latency, Delay::Exp(ms(20)));
        assert_eq!(k.ttfc, Delay::Uniform(ms(5), ms(6)));
    }

    #[test]
    fn bad_schedules_are_errors() {
        assert!(Schedule::parse("").unwrap().is_empty());
        for bad in [
            "status=500",           // no window
            "1000..:",              // a window without knobs
            "5000..2000:status=1",  // ends before it starts
            "5000..5000:status=1",  // empty window
            "x..2000:status=500",   // not milliseconds
            "1.5..2000:status=500", // whole milliseconds only
            "0..100:nope=1",        // unknown knob
            "0..100:chunks=x",      // bad value
            "0..100:status",        // no value
            "0..100:status=500;1000..:error=teapot",
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(
                e.0.contains("fault schedule") || e.0.contains("mock knob"),
                "{bad}: {e}"
            );
        }
    }
}
