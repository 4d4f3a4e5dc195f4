//! The node's authority over every meter: per window, the units `used` (reported consumed)
//! and the units `out` on lease to each holder (a shard).
//!
//! Owns: [`Ledger`], its grants ([`Grant`]) and the reports it folds in ([`Report`]). Pure:
//! time comes in as unix milliseconds, and a window rolls lazily on the first call at or
//! after its end (used back to 0, every lease on it void: holders drop theirs at the same
//! instant).
//! Does not: talk to shards (the budgeter actor carries asks, grants and reports), persist
//! anything (it hands out [`Ledger::windows`] and takes [`Ledger::restore`]) or admit
//! requests (shards do, from their leases: [`super::lease`]).
//! Key types: [`Ledger`], [`Grant`], [`Report`], [`Status`].
//!
//! The invariant, per meter and window: `used + Σ out ≤ max`, except by units reported
//! `over` a lease and units [`Ledger::charge`]d. A grant never passes `max`.

use hashbrown::HashMap;

use super::meter::{Limit, MeterKey};
use super::period;

/// Who holds a lease: a shard.
pub type Holder = u16;

/// Units leased to one holder for one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The meter.
    pub key: MeterKey,
    /// Units granted (0 when none are available).
    pub units: u64,
    /// The window's id: its start, in unix ms.
    pub window_id: u64,
    /// The window's end (exclusive), in unix ms: the lease expires then.
    pub window_end_ms: u64,
    /// The meter's limit.
    pub max: u64,
    /// Units still available at the ledger after this grant: `max - used - Σ out`.
    pub remaining: u64,
    /// Units out on lease to the other holders.
    pub others_out: u64,
    /// Units this holder has given back in this window, as far as the ledger has counted
    /// them when it made this grant. A holder that has given back more cannot trust a grant
    /// of nothing: the rest of its units were on their way back.
    pub returned: u64,
}

/// What a holder did with its leases on one meter and window since its last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The meter.
    pub key: MeterKey,
    /// The window the units belong to.
    pub window_id: u64,
    /// Units consumed.
    pub used: u64,
    /// The part of `used` not taken from a lease: borrowed, or settled above the reserve.
    pub over: u64,
    /// Unused lease units given back.
    pub returned: u64,
}

impl Report {
    /// Nothing to say.
    pub fn is_empty(&self) -> bool {
        self.used == 0 && self.over == 0 && self.returned == 0
    }
}

/// A meter's state in its current window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The limit.
    pub max: u64,
    /// Units consumed.
    pub used: u64,
    /// Units out on lease to all holders.
    pub out: u64,
    /// Units neither used nor out: `max - used - out`, at least 0.
    pub remaining: u64,
    /// When the window ends (exclusive), in unix ms.
    pub window_end_ms: u64,
}

/// One holder's units in one window.
#[derive(Debug, Clone, Copy)]
struct Held {
    holder: Holder,
    /// Units on lease.
    out: u64,
    /// Units given back so far (echoed in grants).
    returned: u64,
}

/// One meter's current window.
#[derive(Debug, Clone)]
struct Window {
    start: u64,
    end: u64,
    used: u64,
    /// Per holder that took a lease in this window: few, one per shard at most.
    held: Vec<Held>,
}

impl Window {
    fn open((start, end): (u64, u64)) -> Self {
        Self {
            start,
            end,
            used: 0,
            held: Vec::new(),
        }
    }

    fn out_total(&self) -> u64 {
        self.held.iter().fold(0, |s, h| s.saturating_add(h.out))
    }

    fn of_mut(&mut self, holder: Holder) -> &mut Held {
        let i = match self.held.iter().position(|h| h.holder == holder) {
            Some(i) => i,
            None => {
                self.held.push(Held {
                    holder,
                    out: 0,
                    returned: 0,
                });
                self.held.len() - 1
            }
        };
        &mut self.held[i]
    }
}

/// The node's authority over every meter. Held by the budgeter actor only.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    offset_secs: i32,
    limits: HashMap<MeterKey, Limit>,
    windows: HashMap<MeterKey, Window>,
}

impl Ledger {
    /// An empty ledger whose day and month windows are calendar periods at the UTC offset
    /// `offset_secs` (east positive).
    pub fn new(offset_secs: i32) -> Self {
        Self {
            offset_secs,
            limits: HashMap::new(),
            windows: HashMap::new(),
        }
    }

    /// Set (or change) a meter's limit. The current window's usage and leases stay.
    pub fn set_limit(&mut self, key: MeterKey, limit: Limit) {
        self.limits.insert(key, limit);
    }

    /// Remove a meter's limit: grants stop ([`Ledger::grant`] answers `None`); usage is still
    /// counted until the window ends.
    pub fn remove_limit(&mut self, key: &MeterKey) {
        self.limits.remove(key);
    }

    /// Every meter with a limit.
    pub fn meters(&self) -> impl Iterator<Item = &MeterKey> {
        self.limits.keys()
    }

    /// A meter's limit.
    pub fn limit(&self, key: &MeterKey) -> Option<Limit> {
        self.limits.get(key).copied()
    }

    /// Grant up to `ask` units of `key` to `holder`, one of `holders` sharing the meter.
    /// `None` if the meter has no limit.
    ///
    /// With `available = max - used - Σ out` (at least 0), the grant is
    /// `min(ask, available, max(1, available / (2 × holders)))`, and 0 when nothing is
    /// available: shares shrink as the quota nears its end, so shards near the edge hold
    /// little and ask often.
    pub fn grant(
        &mut self,
        key: &MeterKey,
        holder: Holder,
        ask: u64,
        holders: u16,
        now_ms: u64,
    ) -> Option<Grant> {
        let limit = self.limit(key)?;
        let w = self.current_or_open(key, now_ms);
        let out = w.out_total();
        let available = limit.max.saturating_sub(w.used).saturating_sub(out);
        let share = (available / (2 * u64::from(holders.max(1)))).max(1);
        let units = ask.min(available).min(share);
        let mine = w.of_mut(holder);
        mine.out = mine.out.saturating_add(units);
        let (mine_out, returned) = (mine.out, mine.returned);
        Some(Grant {
            key: key.clone(),
            units,
            window_id: w.start,
            window_end_ms: w.end,
            max: limit.max,
            remaining: available - units,
            others_out: out.saturating_add(units).saturating_sub(mine_out),
            returned,
        })
    }

    /// Fold in a holder's report: its `out` shrinks by what it used from its lease
    /// (`used - over`) plus what it gave back (at least to 0), and `used` grows by `used`.
    /// A report for a window that is no longer current changes nothing: its window is over.
    pub fn report(&mut self, holder: Holder, r: &Report, now_ms: u64) {
        let Some(w) = self.current(&r.key, now_ms) else {
            return;
        };
        if w.start != r.window_id {
            return;
        }
        let back = r.used.saturating_sub(r.over).saturating_add(r.returned);
        let mine = w.of_mut(holder);
        mine.out = mine.out.saturating_sub(back);
        mine.returned = mine.returned.saturating_add(r.returned);
        w.used = w.used.saturating_add(r.used);
    }

    /// Units consumed outside any lease: `used` grows by `units` in the current window.
    pub fn charge(&mut self, key: &MeterKey, units: u64, now_ms: u64) {
        let w = self.current_or_open(key, now_ms);
        w.used = w.used.saturating_add(units);
    }

    /// A limited meter's state in the window containing `now_ms` (a window that has ended
    /// reads as the fresh one that will follow).
    pub fn status(&self, key: &MeterKey, now_ms: u64) -> Option<Status> {
        let max = self.limit(key)?.max;
        let (used, out, window_end_ms) = match self.windows.get(key) {
            Some(w) if now_ms < w.end => (w.used, w.out_total(), w.end),
            w => {
                let anchor = w.map(|w| w.start);
                let (_, end) = period::window(key.period, now_ms, anchor, self.offset_secs);
                (0, 0, end)
            }
        };
        Some(Status {
            max,
            used,
            out,
            remaining: max.saturating_sub(used).saturating_sub(out),
            window_end_ms,
        })
    }

    /// The holders with units out on `key` in the current window, and how many each: whom
    /// to ask to give unused units back.
    pub fn holders(&self, key: &MeterKey, now_ms: u64) -> Vec<(Holder, u64)> {
        match self.windows.get(key) {
            Some(w) if now_ms < w.end => w
                .held
                .iter()
                .filter(|h| h.out > 0)
                .map(|h| (h.holder, h.out))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A holder is gone (its shard stopped): its leases return.
    pub fn release_holder(&mut self, holder: Holder) {
        for w in self.windows.values_mut() {
            w.held.retain(|h| h.holder != holder);
        }
    }

    /// For persistence: every meter's window as `(key, window id, used)`. A window may have
    /// ended since (then [`Ledger::restore`] ignores it).
    pub fn windows(&self) -> impl Iterator<Item = (&MeterKey, u64, u64)> {
        self.windows.iter().map(|(k, w)| (k, w.start, w.used))
    }

    /// Restore a meter's usage from the store (at start, before serving): ignored if that
    /// window is over at `now_ms`, or if the meter already counts in a different window. The
    /// result is the larger of the two counts, so restoring twice does not double it.
    pub fn restore(&mut self, key: &MeterKey, window_id: u64, used: u64, now_ms: u64) {
        let span = period::window(key.period, now_ms, Some(window_id), self.offset_secs);
        if span.0 != window_id || now_ms >= span.1 {
            return;
        }
        let live = self.current(key, now_ms).map(|w| w.start);
        match live {
            Some(start) if start != window_id => {}
            Some(_) => {
                if let Some(w) = self.windows.get_mut(key) {
                    w.used = w.used.max(used);
                }
            }
            None => {
                let mut w = Window::open(span);
                w.used = used;
                self.windows.insert(key.clone(), w);
            }
        }
    }

    /// Forget every window that has ended (its leases are void): memory stays bounded by
    /// the meters in use, however many per-user meters came and went. Limits stay.
    pub fn sweep(&mut self, now_ms: u64) {
        self.windows.retain(|_, w| now_ms < w.end);
    }

    /// The meter's current window, rolled if it ended; `None` if it has none.
    fn current(&mut self, key: &MeterKey, now_ms: u64) -> Option<&mut Window> {
        let offset = self.offset_secs;
        let w = self.windows.get_mut(key)?;
        if now_ms >= w.end {
            *w = Window::open(period::window(key.period, now_ms, Some(w.start), offset));
        }
        Some(w)
    }

    /// The meter's current window, opened at `now_ms` if it has none.
    fn current_or_open(&mut self, key: &MeterKey, now_ms: u64) -> &mut Window {
        let offset = self.offset_secs;
        let w = self
            .windows
            .entry(key.clone())
            .or_insert_with(|| Window::open(period::window(key.period, now_ms, None, offset)));
        if now_ms >= w.end {
            *w = Window::open(period::window(key.period, now_ms, Some(w.start), offset));
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::budget::meter::{Measure, Period, Scope};

    const T0: u64 = 1_700_000_000_000;

    fn key(period: Period) -> MeterKey {
        MeterKey::new(Scope::Key(Arc::from("k")), Measure::Requests, period)
    }

    fn ledger(max: u64) -> (Ledger, MeterKey) {
        let mut l = Ledger::new(0);
        let k = key(Period::Minute);
        l.set_limit(k.clone(), Limit { max, exact: true });
        (l, k)
    }

    fn report(k: &MeterKey, window_id: u64, used: u64, over: u64, returned: u64) -> Report {
        Report {
            key: k.clone(),
            window_id,
            used,
            over,
            returned,
        }
    }

    #[test]
    fn no_limit_no_grant() {
        let mut l = Ledger::new(0);
        let k = key(Period::Minute);
        assert_eq!(l.grant(&k, 0, 10, 1, T0), None);
        assert_eq!(l.status(&k, T0), None);
        l.set_limit(
            k.clone(),
            Limit {
                max: 5,
                exact: false,
            },
        );
        assert_eq!(
            l.limit(&k),
            Some(Limit {
                max: 5,
                exact: false
            })
        );
        assert!(l.grant(&k, 0, 10, 1, T0).is_some());
        l.remove_limit(&k);
        assert_eq!(l.limit(&k), None);
        assert_eq!(l.grant(&k, 0, 10, 1, T0), None);
    }

    #[test]
    fn grants_shrink_toward_the_edge() {
        let (mut l, k) = ledger(100);
        // 2 holders: at most available / 4.
        let g = l.grant(&k, 0, 1_000, 2, T0).unwrap();
        assert_eq!((g.units, g.remaining, g.others_out), (25, 75, 0));
        assert_eq!(
            (g.window_id, g.window_end_ms, g.max),
            (T0, T0 + 60_000, 100)
        );
        let g = l.grant(&k, 1, 1_000, 2, T0 + 1).unwrap();
        assert_eq!((g.units, g.remaining, g.others_out), (18, 57, 25));
        // A small ask is granted whole.
        let g = l.grant(&k, 1, 3, 2, T0 + 2).unwrap();
        assert_eq!((g.units, g.remaining, g.others_out), (3, 54, 25));
        assert_eq!(l.holders(&k, T0 + 2), vec![(0, 25), (1, 21)]);
        // Near the end the share is at least one unit, until nothing is left.
        l.charge(&k, 52, T0 + 3);
        let g = l.grant(&k, 0, 10, 2, T0 + 4).unwrap();
        assert_eq!((g.units, g.remaining), (1, 1));
        let g = l.grant(&k, 0, 10, 2, T0 + 4).unwrap();
        assert_eq!((g.units, g.remaining), (1, 0));
        let g = l.grant(&k, 0, 10, 2, T0 + 4).unwrap();
        assert_eq!((g.units, g.remaining, g.others_out), (0, 0, 21));
        // Zero holders counts as one; an ask of 0 gets nothing.
        let (mut l, k) = ledger(10);
        assert_eq!(l.grant(&k, 0, 100, 0, T0).unwrap().units, 5);
        assert_eq!(l.grant(&k, 0, 0, 1, T0).unwrap().units, 0);
    }

    #[test]
    fn reports_move_units_from_out_to_used() {
        let (mut l, k) = ledger(100);
        let g = l.grant(&k, 3, 40, 1, T0).unwrap();
        assert_eq!(g.units, 40);
        // 10 used from the lease, 2 more over it, 5 given back.
        l.report(3, &report(&k, T0, 12, 2, 5), T0 + 10);
        // Grants echo what the holder gave back in the window.
        assert_eq!(l.grant(&k, 3, 0, 1, T0 + 10).unwrap().returned, 5);
        assert_eq!(l.grant(&k, 2, 0, 1, T0 + 10).unwrap().returned, 0);
        let s = l.status(&k, T0 + 10).unwrap();
        assert_eq!((s.used, s.out, s.remaining), (12, 25, 63));
        assert_eq!(l.holders(&k, T0 + 10), vec![(3, 25)]);
        // Giving everything back empties the holder.
        l.report(3, &report(&k, T0, 0, 0, 25), T0 + 20);
        assert!(l.holders(&k, T0 + 20).is_empty());
        // A report claiming more than is out stops at 0 (no underflow, no wrap).
        l.report(3, &report(&k, T0, 7, 0, 0), T0 + 30);
        let s = l.status(&k, T0 + 30).unwrap();
        assert_eq!((s.used, s.out), (19, 0));
        // A malformed over > used moves nothing out.
        let g = l.grant(&k, 3, 4, 1, T0 + 31).unwrap();
        assert_eq!(g.units, 4);
        l.report(3, &report(&k, T0, 1, 5, 0), T0 + 32);
        assert_eq!(l.holders(&k, T0 + 32), vec![(3, 4)]);
    }

    #[test]
    fn stale_reports_change_nothing() {
        let (mut l, k) = ledger(100);
        l.grant(&k, 0, 10, 1, T0).unwrap();
        // Another window's id.
        l.report(0, &report(&k, T0 - 60_000, 5, 0, 5), T0 + 1);
        let s = l.status(&k, T0 + 1).unwrap();
        assert_eq!((s.used, s.out), (0, 10));
        // The window rolled: the old window's report is ignored, the new one is clean.
        l.report(0, &report(&k, T0, 5, 0, 5), T0 + 60_000);
        let s = l.status(&k, T0 + 60_000).unwrap();
        assert_eq!((s.used, s.out, s.window_end_ms), (0, 0, T0 + 120_000));
        // A report for a meter with no window at all is ignored too.
        let other = key(Period::Day);
        l.report(0, &report(&other, 0, 5, 0, 0), T0);
        assert_eq!(l.windows().count(), 1);
    }

    #[test]
    fn windows_roll_lazily_and_anchor_at_first_use() {
        let (mut l, k) = ledger(10);
        l.charge(&k, 4, T0 + 500);
        l.grant(&k, 1, 2, 1, T0 + 600).unwrap();
        // Before the end: same window.
        let s = l.status(&k, T0 + 60_499).unwrap();
        assert_eq!((s.used, s.out, s.window_end_ms), (4, 2, T0 + 60_500));
        // status and holders at the end read the fresh window without changing anything.
        let s = l.status(&k, T0 + 70_000).unwrap();
        assert_eq!(
            (s.used, s.out, s.remaining, s.window_end_ms),
            (0, 0, 10, T0 + 130_000)
        );
        assert!(l.holders(&k, T0 + 70_000).is_empty());
        // The first mutating call after the end opens the window at its own time.
        let g = l.grant(&k, 1, 1, 1, T0 + 90_000).unwrap();
        assert_eq!(
            (g.window_id, g.window_end_ms, g.remaining),
            (T0 + 90_000, T0 + 150_000, 9)
        );
        // Day windows roll at midnight (UTC here).
        let mut l = Ledger::new(0);
        let d = key(Period::Day);
        l.set_limit(
            d.clone(),
            Limit {
                max: 10,
                exact: true,
            },
        );
        let midnight = 1_700_006_400_000; // 2023-11-15T00:00:00Z
        l.charge(&d, 7, midnight - 1);
        assert_eq!(l.status(&d, midnight - 1).unwrap().window_end_ms, midnight);
        l.charge(&d, 1, midnight);
        let s = l.status(&d, midnight).unwrap();
        assert_eq!((s.used, s.window_end_ms), (1, midnight + 86_400_000));
    }

    #[test]
    fn total_windows_never_roll() {
        let mut l = Ledger::new(0);
        let k = MeterKey::new(Scope::Global, Measure::Concurrent, Period::Total);
        l.set_limit(
            k.clone(),
            Limit {
                max: 4,
                exact: true,
            },
        );
        let g = l.grant(&k, 0, 10, 1, T0).unwrap();
        assert_eq!((g.units, g.window_id, g.window_end_ms), (2, 0, u64::MAX));
        let s = l.status(&k, u64::MAX - 1).unwrap();
        assert_eq!((s.out, s.remaining), (2, 2));
    }

    #[test]
    fn set_limit_keeps_usage() {
        let (mut l, k) = ledger(10);
        l.charge(&k, 8, T0);
        l.set_limit(
            k.clone(),
            Limit {
                max: 20,
                exact: true,
            },
        );
        let s = l.status(&k, T0).unwrap();
        assert_eq!((s.max, s.used, s.remaining), (20, 8, 12));
        // Lowered below usage: nothing remains, grants give 0.
        l.set_limit(
            k.clone(),
            Limit {
                max: 5,
                exact: true,
            },
        );
        assert_eq!(l.status(&k, T0).unwrap().remaining, 0);
        assert_eq!(l.grant(&k, 0, 5, 1, T0).unwrap().units, 0);
    }

    #[test]
    fn release_holder_returns_its_leases() {
        let (mut l, k) = ledger(100);
        l.grant(&k, 0, 10, 2, T0).unwrap();
        l.grant(&k, 1, 10, 2, T0).unwrap();
        l.release_holder(0);
        assert_eq!(l.holders(&k, T0), vec![(1, 10)]);
        assert_eq!(l.status(&k, T0).unwrap().remaining, 90);
    }

    #[test]
    fn persistence_round_trips_the_current_window() {
        let (mut l, k) = ledger(100);
        l.charge(&k, 30, T0 + 5);
        let saved: Vec<(MeterKey, u64, u64)> = l
            .windows()
            .map(|(k, id, used)| (k.clone(), id, used))
            .collect();
        assert_eq!(saved, vec![(k.clone(), T0 + 5, 30)]);

        // A new process, 20 s later: same window, same usage, same end.
        let (mut l2, _) = ledger(100);
        l2.restore(&k, T0 + 5, 30, T0 + 20_000);
        let s = l2.status(&k, T0 + 20_000).unwrap();
        assert_eq!((s.used, s.window_end_ms), (30, T0 + 60_005));
        // Restoring again does not double it; a larger count wins.
        l2.restore(&k, T0 + 5, 30, T0 + 20_001);
        assert_eq!(l2.status(&k, T0 + 20_001).unwrap().used, 30);
        l2.restore(&k, T0 + 5, 35, T0 + 20_002);
        assert_eq!(l2.status(&k, T0 + 20_002).unwrap().used, 35);

        // A window that is over by now is ignored.
        let (mut l3, _) = ledger(100);
        l3.restore(&k, T0 + 5, 30, T0 + 60_005);
        assert_eq!(l3.windows().count(), 0);
        // As is a window that is not a window of the period (not today's midnight).
        let d = key(Period::Day);
        l3.restore(&d, T0 + 5, 30, T0 + 6);
        assert_eq!(l3.windows().count(), 0);
        // A meter already counting in another window keeps it.
        l3.charge(&k, 1, T0 + 10);
        l3.restore(&k, T0 + 5, 30, T0 + 11);
        assert_eq!(l3.status(&k, T0 + 11).unwrap().used, 1);
    }

    #[test]
    fn sweep_forgets_ended_windows_but_not_limits() {
        let mut l = Ledger::new(0);
        for i in 0..100 {
            let k = MeterKey::new(
                Scope::User(Arc::from(format!("u{i}"))),
                Measure::Requests,
                Period::Minute,
            );
            l.set_limit(
                k.clone(),
                Limit {
                    max: 10,
                    exact: true,
                },
            );
            l.grant(&k, 0, 1, 1, T0 + i).unwrap();
        }
        l.sweep(T0 + 60_050);
        assert_eq!(l.windows().count(), 49);
        l.sweep(T0 + 60_100);
        assert_eq!(l.windows().count(), 0);
        let k = MeterKey::new(
            Scope::User(Arc::from("u0")),
            Measure::Requests,
            Period::Minute,
        );
        assert_eq!(
            l.limit(&k),
            Some(Limit {
                max: 10,
                exact: true
            })
        );
        assert_eq!(l.grant(&k, 0, 100, 1, T0 + 61_000).unwrap().units, 5);
    }

    #[derive(Debug, Clone)]
    enum Op {
        SetLimit(u64),
        RemoveLimit,
        Grant {
            holder: Holder,
            ask: u64,
        },
        /// Fractions (in 1/8) of the holder's out that it used and gave back, units over,
        /// and whether the report names a stale window.
        Report {
            holder: Holder,
            used8: u64,
            returned8: u64,
            over: u64,
            stale: bool,
        },
        Charge(u64),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => (0u64..80).prop_map(Op::SetLimit),
            1 => Just(Op::RemoveLimit),
            6 => (0u16..4, 0u64..60).prop_map(|(holder, ask)| Op::Grant { holder, ask }),
            5 => (0u16..4, 0u64..=8, 0u64..=8, 0u64..4, proptest::bool::weighted(0.1)).prop_map(
                |(holder, used8, returned8, over, stale)| Op::Report { holder, used8, returned8, over, stale }
            ),
            1 => (0u64..5).prop_map(Op::Charge),
            2 => (0u64..25_000).prop_map(Op::Advance),
        ]
    }

    /// The model of one window: what each holder was granted minus what it reported.
    #[derive(Debug, Default)]
    struct Model {
        start: Option<(u64, u64)>,
        out: [u64; 4],
        returned: [u64; 4],
        used: u64,
        over: u64,
        charged: u64,
        /// The largest max set during the window (a lowered max may leave it above).
        cap: u64,
    }

    impl Model {
        /// Mirrors the ledger's lazy roll on a mutating call.
        fn touch(&mut self, now: u64, max: u64, open: bool) {
            match self.start {
                Some((s, e)) if now >= e => {
                    *self = Model {
                        start: Some(period::window(Period::Minute, now, Some(s), 0)),
                        cap: max,
                        ..Model::default()
                    };
                }
                None if open => self.start = Some(period::window(Period::Minute, now, None, 0)),
                _ => {}
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// For any sequence of limits, grants, reports, charges and time: a grant never
        /// passes what is available, `used + Σ out` never passes the max except by units
        /// reported over and charged, and each holder's out is exactly what it was granted
        /// minus what it reported.
        #[test]
        fn ledger_invariants(ops in proptest::collection::vec(op(), 1..120)) {
            let k = key(Period::Minute);
            let mut l = Ledger::new(0);
            let mut max: Option<u64> = Some(40);
            l.set_limit(k.clone(), Limit { max: 40, exact: true });
            let mut m = Model { cap: 40, ..Model::default() };
            let mut now = T0;
            for op in ops {
                match op {
                    Op::SetLimit(x) => {
                        l.set_limit(k.clone(), Limit { max: x, exact: true });
                        max = Some(x);
                        m.cap = m.cap.max(x);
                    }
                    Op::RemoveLimit => {
                        l.remove_limit(&k);
                        max = None;
                    }
                    Op::Grant { holder, ask } => {
                        let g = l.grant(&k, holder, ask, 4, now);
                        let Some(mx) = max else {
                            prop_assert!(g.is_none());
                            continue;
                        };
                        m.touch(now, mx, true);
                        let g = g.unwrap();
                        let out: u64 = m.out.iter().sum();
                        let available = mx.saturating_sub(m.used).saturating_sub(out);
                        prop_assert!(g.units <= available);
                        prop_assert!(g.units <= ask);
                        let expect = if available == 0 { 0 } else { ask.min(available).min((available / 8).max(1)) };
                        prop_assert_eq!(g.units, expect);
                        prop_assert_eq!(g.remaining, available - g.units);
                        m.out[usize::from(holder)] += g.units;
                        prop_assert_eq!(g.returned, m.returned[usize::from(holder)]);
                        prop_assert_eq!(g.others_out, m.out.iter().sum::<u64>() - m.out[usize::from(holder)]);
                        prop_assert_eq!(Some((g.window_id, g.window_end_ms)), m.start);
                    }
                    Op::Report { holder, used8, returned8, over, stale } => {
                        m.touch(now, max.unwrap_or(0), false);
                        let Some((start, _)) = m.start else {
                            l.report(holder, &report(&k, now, 1, 0, 0), now);
                            continue;
                        };
                        let h = usize::from(holder);
                        let from_lease = m.out[h] * used8 / 8;
                        let returned = (m.out[h] - from_lease) * returned8 / 8;
                        let r = report(&k, if stale { start.wrapping_sub(1) } else { start }, from_lease + over, over, returned);
                        l.report(holder, &r, now);
                        if !stale {
                            m.out[h] -= from_lease + returned;
                            m.returned[h] += returned;
                            m.used += from_lease + over;
                            m.over += over;
                        }
                    }
                    Op::Charge(u) => {
                        m.touch(now, max.unwrap_or(0), true);
                        l.charge(&k, u, now);
                        m.used += u;
                        m.charged += u;
                    }
                    Op::Advance(ms) => now += ms,
                }
                // Compare with the model wherever the window is current.
                if let Some((_, end)) = m.start.filter(|&(_, e)| now < e) {
                    let want: Vec<(Holder, u64)> = (0..4u16).map(|h| (h, m.out[usize::from(h)])).filter(|&(_, n)| n > 0).collect();
                    let mut got = l.holders(&k, now);
                    got.sort_unstable();
                    prop_assert_eq!(got, want);
                    if let Some(s) = l.status(&k, now) {
                        prop_assert_eq!(s.used, m.used);
                        prop_assert_eq!(s.window_end_ms, end);
                        prop_assert!(s.used + s.out <= m.cap + m.over + m.charged,
                            "used {} + out {} > cap {} + over {} + charged {}", s.used, s.out, m.cap, m.over, m.charged);
                    }
                }
            }
        }
    }
}
