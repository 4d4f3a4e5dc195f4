//! One shard's side of limits: the units it may admit from without asking ([`Leases`]),
//! and what each admitted request reserved ([`Ticket`]).
//!
//! Owns: admission against local leases (all or nothing over a request's meters), borrowing
//! in non-exact mode, refill asks ahead of need, settlement at real usage, refunds, and the
//! reports that tell the ledger what happened. Pure: time comes in as unix milliseconds.
//! Does not: decide how many units a shard gets (the [`super::ledger::Ledger`] does), carry
//! messages (the caller moves [`Ask`]s, grants and [`Report`]s between shard and budgeter),
//! or wait (a [`Admit::Wait`] answer means "retry once a grant has come").
//! Key types: [`Leases`], [`Want`], [`Admit`], [`Ticket`].
//!
//! Every lease unit a shard holds is counted `out` at the ledger: units taken from a lease
//! and consumed are reported as `used - over`, unused ones as `returned`; units borrowed or
//! settled above the reserve are reported `over`. A lease lives until its window ends, at
//! the same instant the ledger drops it.
//!
//! A shard refuses a meter only when a grant said nothing is left anywhere (no units, no
//! remaining, nothing out to other shards) *and* had counted every unit this shard gave back
//! ([`Grant::returned`]): messages may arrive in any order, and a give-back still on its way
//! makes "nothing left" untrue. A raised limit lifts a refusal when the budgeter sends a
//! grant of 0 units (`Ledger::grant(key, holder, 0, ..)`) whose `remaining` is above 0.

use hashbrown::HashMap;

use super::ledger::{Grant, Report};
use super::meter::{Limit, Measure, MeterKey, Period};

/// How long an ask may go unanswered before it is asked again (the answer was lost, say
/// because the budgeter restarted).
pub const ASK_RETRY_MS: u64 = 1_000;

/// `retry_after_ms` of a refusal on a meter whose window never ends ([`Period::Total`]):
/// concurrency units come back when requests end, so soon is worth a try.
pub const TOTAL_RETRY_AFTER_MS: u64 = 1_000;

/// A request for more units of a meter, for the budgeter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    /// The meter.
    pub key: MeterKey,
    /// Units wanted (the ledger caps them).
    pub units: u64,
    /// The meter's limit as this shard knows it (the budgeter takes it from the ask).
    pub limit: Limit,
}

/// One meter a request must pass, and how much it reserves there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// The meter.
    pub key: MeterKey,
    /// Its limit (for borrowing and for the refusal's `max`).
    pub limit: Limit,
    /// Units to reserve: 1 for requests and concurrency, an estimate for tokens and spend.
    pub amount: u64,
}

/// Why a request was refused: the meter that is spent, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The meter.
    pub key: MeterKey,
    /// Its limit.
    pub max: u64,
    /// Milliseconds until the window ends ([`TOTAL_RETRY_AFTER_MS`] for a window that never
    /// ends); 0 when waiting cannot help (the request alone exceeds the limit).
    pub retry_after_ms: u64,
}

/// The answer to [`Leases::admit`].
#[derive(Debug)]
pub enum Admit {
    /// Admitted: settle or refund the ticket exactly once.
    Admitted(Ticket),
    /// Not yet: a lease is empty and its refill has been asked for. Retry after a grant.
    Wait,
    /// No: a meter is spent for its window.
    Refused(Refusal),
}

/// What one meter reserved for a request.
#[derive(Debug)]
struct Reserved {
    key: MeterKey,
    window_id: u64,
    /// Units taken from the lease's free units.
    from_lease: u64,
    /// Units admitted on credit.
    borrowed: u64,
}

/// What one admitted request reserved, on which meters and windows. Settle it
/// ([`Leases::settle`]) or refund it ([`Leases::refund`]) exactly once: both take it by
/// value, and it cannot be cloned.
#[derive(Debug)]
#[must_use = "settle or refund the ticket, or its units stay reserved"]
pub struct Ticket {
    reserved: Vec<Reserved>,
}

impl Ticket {
    /// Units reserved on `key` (from the lease and on credit).
    pub fn reserved(&self, key: &MeterKey) -> u64 {
        self.reserved
            .iter()
            .filter(|r| r.key == *key)
            .fold(0, |s, r| {
                s.saturating_add(r.from_lease).saturating_add(r.borrowed)
            })
    }
}

/// A request's real usage, at settlement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actual {
    /// Tokens consumed (input and output).
    pub tokens: u64,
    /// Money spent, in nano-USD.
    pub spend: u64,
}

/// What a shard can say about a meter (the `x-ratelimit-*` headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The limit.
    pub max: u64,
    /// About how many units remain: the ledger's `remaining` at the last grant plus this
    /// shard's free units.
    pub remaining: u64,
    /// When the window ends, in unix ms.
    pub reset_ms: u64,
}

/// This shard's lease on one meter.
#[derive(Debug, Default)]
struct Lease {
    /// The window the lease is for, `(id, end)`; `None` before the first grant of a window.
    window: Option<(u64, u64)>,
    /// Units this shard may admit from.
    free: u64,
    /// Units admitted on credit in this window and not given back.
    borrowed: u64,
    /// The last grant: its units, the ledger's remaining after it and the limit.
    last_units: u64,
    last_remaining: u64,
    max: u64,
    /// The last grant said nothing is left anywhere: refuse until the window ends.
    exhausted: bool,
    /// When the pending ask was queued.
    asked_at: Option<u64>,
    /// Units given back in this window. A "nothing left" grant that counted fewer was made
    /// before some of them arrived: not to be trusted.
    returned: u64,
    /// The last admission or grant.
    last_used_ms: u64,
}

impl Lease {
    /// Drop the lease's units if its window ended (the ledger drops them at the same time).
    fn roll(&mut self, now: u64) {
        if self.window.is_some_and(|(_, end)| now >= end) {
            *self = Lease {
                asked_at: self.asked_at,
                ..Lease::default()
            };
        }
    }

    /// The lease's window if it has one and it has not ended.
    fn current(&self, now: u64) -> Option<(u64, u64)> {
        self.window.filter(|&(_, end)| now < end)
    }

    fn may_ask(&self, now: u64) -> bool {
        self.asked_at
            .is_none_or(|at| now >= at.saturating_add(ASK_RETRY_MS))
    }

    /// Free units running low: worth a refill ask now, ahead of need.
    fn wants_refill(&self) -> bool {
        self.free == 0 || self.free < self.last_units / 2
    }

    /// The next ask's size: double the last grant (the ledger caps it), at least `need`.
    fn ask_units(&self, need: u64) -> u64 {
        self.last_units.saturating_mul(2).max(need).max(1)
    }

    /// Give the free units back; how many.
    fn give_back(&mut self) -> u64 {
        let n = std::mem::take(&mut self.free);
        if n > 0 {
            self.returned = self.returned.saturating_add(n);
            self.exhausted = false;
        }
        n
    }
}

/// One shard's leases on every meter it has admitted against.
#[derive(Debug, Default)]
pub struct Leases {
    leases: HashMap<MeterKey, Lease>,
    asks: Vec<Ask>,
    /// Reports since the last take, one per meter (its latest window) ...
    reports: HashMap<MeterKey, Report>,
    /// ... and those of earlier windows that a later one pushed out.
    stale_reports: Vec<Report>,
}

/// How one want would pass: from free units and on credit.
#[derive(Debug, Clone, Copy, Default)]
struct Take {
    from_lease: u64,
    borrowed: u64,
    /// The want cannot pass now (nothing is taken).
    blocked: bool,
}

impl Leases {
    /// No leases yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Admit a request that must pass every meter in `wants`, all or nothing.
    ///
    /// Per want: take `amount` from the lease's free units; else borrow (non-exact limits,
    /// up to [`Limit::borrow`] per meter per window); else, if the last grant of this window
    /// said nothing is left anywhere (units, remaining and others' out all 0), refuse until
    /// the window ends; else ask for a refill (once while an ask is pending) and answer
    /// [`Admit::Wait`]. Nothing is debited unless every want passes. A want needs a lease
    /// for the current window even to borrow: the first request of a window waits for one.
    /// Once admitted, a lease whose free units fall below half its last grant asks for a
    /// refill ahead of need.
    pub fn admit(&mut self, wants: &[Want], now_ms: u64) -> Admit {
        // One map probe per want to decide, one more per want to debit: this runs on every
        // request of a limited key.
        let mut takes: Vec<Take> = Vec::with_capacity(wants.len());
        let mut blocked = false;
        for (i, w) in wants.iter().enumerate() {
            // Earlier wants on the same meter have first call on its units.
            let (prior_free, prior_borrowed) = wants[..i]
                .iter()
                .zip(&takes)
                .filter(|(p, _)| p.key == w.key)
                .fold((0u64, 0u64), |(f, b), (_, t)| {
                    (f.saturating_add(t.from_lease), b.saturating_add(t.borrowed))
                });
            let lease = self.leases.get_mut(&w.key).map(|l| {
                l.roll(now_ms);
                &*l
            });
            let current = lease.and_then(|l| l.current(now_ms).map(|win| (l, win)));
            let take = current.and_then(|(l, _)| {
                let free = l.free.saturating_sub(prior_free);
                let credit = w
                    .limit
                    .borrow()
                    .saturating_sub(l.borrowed.saturating_add(prior_borrowed));
                if free >= w.amount {
                    Some(Take {
                        from_lease: w.amount,
                        borrowed: 0,
                        blocked: false,
                    })
                } else if free.saturating_add(credit) >= w.amount {
                    Some(Take {
                        from_lease: free,
                        borrowed: w.amount - free,
                        blocked: false,
                    })
                } else {
                    None
                }
            });
            if let Some(t) = take {
                takes.push(t);
                continue;
            }
            // This want cannot pass now: refuse, or wait for a grant.
            if w.amount > w.limit.max.saturating_add(w.limit.borrow()) {
                return Admit::Refused(Refusal {
                    key: w.key.clone(),
                    max: w.limit.max,
                    retry_after_ms: 0,
                });
            }
            // Spent for this window, unless the limit was raised since the final answer
            // (then the budgeter is asked again, with the new limit).
            if let Some((l, (_, end))) =
                current.filter(|(l, _)| l.exhausted && w.limit.max <= l.max)
            {
                return Admit::Refused(Refusal {
                    key: w.key.clone(),
                    max: l.max,
                    retry_after_ms: if w.key.period == Period::Total {
                        TOTAL_RETRY_AFTER_MS
                    } else {
                        end - now_ms
                    },
                });
            }
            takes.push(Take {
                blocked: true,
                ..Take::default()
            });
            blocked = true;
        }
        if blocked {
            for (w, _) in wants.iter().zip(&takes).filter(|(_, t)| t.blocked) {
                self.ask(&w.key, w.limit, w.amount.saturating_mul(2), now_ms);
            }
            return Admit::Wait;
        }
        let mut reserved = Vec::with_capacity(wants.len());
        let mut refills = 0u64;
        for (i, (w, t)) in wants.iter().zip(takes).enumerate() {
            let Some(l) = self.leases.get_mut(&w.key) else {
                continue;
            };
            let Some((window_id, _)) = l.current(now_ms) else {
                continue;
            };
            l.free -= t.from_lease;
            l.borrowed = l.borrowed.saturating_add(t.borrowed);
            l.last_used_ms = now_ms;
            if !l.exhausted && l.wants_refill() && i < 64 {
                refills |= 1 << i;
            }
            reserved.push(Reserved {
                key: w.key.clone(),
                window_id,
                from_lease: t.from_lease,
                borrowed: t.borrowed,
            });
        }
        if refills != 0 {
            for (i, w) in wants.iter().enumerate().take(64) {
                if refills & (1 << i) != 0 {
                    self.ask(&w.key, w.limit, 1, now_ms);
                }
            }
        }
        Admit::Admitted(Ticket { reserved })
    }

    /// Queue an ask for `key` unless one is pending: double the last grant, at least `need`.
    fn ask(&mut self, key: &MeterKey, limit: Limit, need: u64, now_ms: u64) {
        let l = self.leases.entry(key.clone()).or_default();
        if !l.may_ask(now_ms) {
            return;
        }
        l.asked_at = Some(now_ms);
        self.asks.push(Ask {
            key: key.clone(),
            units: l.ask_units(need),
            limit,
        });
    }

    /// A grant from the ledger: its units join the lease's free units. A grant for a
    /// window that has ended is dropped (the ledger dropped it too); one for a newer window
    /// replaces the lease.
    pub fn on_grant(&mut self, g: &Grant, now_ms: u64) {
        let l = self.leases.entry(g.key.clone()).or_default();
        l.asked_at = None;
        if now_ms >= g.window_end_ms {
            return;
        }
        l.roll(now_ms);
        match l.window {
            Some((id, _)) if id == g.window_id => {}
            Some((id, _)) if g.window_id < id => return,
            _ => {
                *l = Lease {
                    window: Some((g.window_id, g.window_end_ms)),
                    ..Lease::default()
                };
            }
        }
        l.free = l.free.saturating_add(g.units);
        l.last_units = g.units;
        l.last_remaining = g.remaining;
        l.max = g.max;
        l.last_used_ms = now_ms;
        // Units this shard gave back may have reached the ledger after it made this answer:
        // then "nothing left" is not to be trusted.
        l.exhausted =
            g.units == 0 && g.remaining == 0 && g.others_out == 0 && g.returned >= l.returned;
    }

    /// Settle an admitted request at its real usage. Per meter, the units consumed are: 1
    /// for requests, none for concurrency (the slot goes back to the free units), the real
    /// tokens or spend. Reserve above that goes back to the free units (or to the borrowing
    /// credit); usage above the reserve comes from the free units, and what they lack is
    /// reported `over`. A ticket whose window has ended reports its usage for that window
    /// (the ledger ignores it for limiting) and gives nothing back.
    pub fn settle(&mut self, t: Ticket, actual: Actual, now_ms: u64) {
        for r in t.reserved {
            let consumed = match r.key.measure {
                Measure::Requests => 1,
                Measure::Concurrent => 0,
                Measure::Tokens => actual.tokens,
                Measure::Spend => actual.spend,
            };
            let from_lease_used = match self.lease_of(&r, now_ms) {
                Some(l) => {
                    let reserve = r.from_lease.saturating_add(r.borrowed);
                    if consumed <= reserve {
                        let from_lease_used = consumed.min(r.from_lease);
                        let borrowed_used = consumed - from_lease_used;
                        l.free = l.free.saturating_add(r.from_lease - from_lease_used);
                        l.borrowed = l.borrowed.saturating_sub(r.borrowed - borrowed_used);
                        from_lease_used
                    } else {
                        let extra = l.free.min(consumed - reserve);
                        l.free -= extra;
                        r.from_lease.saturating_add(extra)
                    }
                }
                None => consumed.min(r.from_lease),
            };
            self.add_report(&r.key, r.window_id, consumed, consumed - from_lease_used, 0);
        }
    }

    /// Refund a request that never ran (or was dropped unsettled): everything it reserved
    /// goes back, requests too. Nothing comes back from a window that has ended.
    pub fn refund(&mut self, t: Ticket, now_ms: u64) {
        for r in t.reserved {
            if let Some(l) = self.lease_of(&r, now_ms) {
                l.free = l.free.saturating_add(r.from_lease);
                l.borrowed = l.borrowed.saturating_sub(r.borrowed);
            }
        }
    }

    /// The lease a reservation came from, if it is still that window's.
    fn lease_of(&mut self, r: &Reserved, now_ms: u64) -> Option<&mut Lease> {
        self.leases
            .get_mut(&r.key)
            .filter(|l| l.current(now_ms).is_some_and(|(id, _)| id == r.window_id))
    }

    fn add_report(&mut self, key: &MeterKey, window_id: u64, used: u64, over: u64, returned: u64) {
        if used == 0 && over == 0 && returned == 0 {
            return;
        }
        // One probe, and no copy of the key, when the meter already has a report.
        let fresh = || Report {
            key: key.clone(),
            window_id,
            used: 0,
            over: 0,
            returned: 0,
        };
        let r = match self.reports.get_mut(key) {
            Some(r) if r.window_id == window_id => r,
            Some(r) => {
                if window_id < r.window_id {
                    // A late settlement of an earlier window: its own report.
                    let mut old = fresh();
                    old.used = used;
                    old.over = over;
                    old.returned = returned;
                    self.stale_reports.push(old);
                    return;
                }
                let older = std::mem::replace(r, fresh());
                self.stale_reports.push(older);
                r
            }
            None => self.reports.entry(key.clone()).or_insert_with(fresh),
        };
        r.used = r.used.saturating_add(used);
        r.over = r.over.saturating_add(over);
        r.returned = r.returned.saturating_add(returned);
    }

    /// The asks queued since the last call, at most one per meter.
    pub fn take_asks(&mut self) -> Vec<Ask> {
        std::mem::take(&mut self.asks)
    }

    /// The reports since the last call, one per meter and window.
    pub fn take_reports(&mut self) -> Vec<Report> {
        let mut out = std::mem::take(&mut self.stale_reports);
        out.extend(self.reports.drain().map(|(_, r)| r));
        out
    }

    /// Give back the free units of `keys` (the budgeter reclaims them for a starving shard).
    pub fn reclaim(&mut self, keys: &[MeterKey], now_ms: u64) {
        for key in keys {
            let Some(l) = self.leases.get_mut(key) else {
                continue;
            };
            l.roll(now_ms);
            let Some((window_id, _)) = l.current(now_ms) else {
                continue;
            };
            let n = l.give_back();
            self.add_report(key, window_id, 0, 0, n);
        }
    }

    /// Housekeeping: drop leases whose window ended (unless an ask for the next is pending),
    /// and give back the free units of leases not used for `idle_ms`. A lease of the current
    /// window stays even when empty: it counts what this shard gave back, which tells a
    /// stale "nothing left" grant from a true one (and the ledger keeps that window too).
    pub fn trim(&mut self, now_ms: u64, idle_ms: u64) {
        let mut returned = Vec::new();
        self.leases.retain(|key, l| {
            l.roll(now_ms);
            match l.current(now_ms) {
                Some((window_id, _)) => {
                    if now_ms.saturating_sub(l.last_used_ms) >= idle_ms && l.free > 0 {
                        returned.push((key.clone(), window_id, l.give_back()));
                    }
                    true
                }
                None => !l.may_ask(now_ms),
            }
        });
        for (key, window_id, n) in returned {
            self.add_report(&key, window_id, 0, 0, n);
        }
    }

    /// What this shard knows of `key`'s quota in the current window; `None` without a
    /// lease for it.
    pub fn quota(&self, key: &MeterKey, now_ms: u64) -> Option<Quota> {
        let l = self.leases.get(key)?;
        let (_, end) = l.current(now_ms)?;
        Some(Quota {
            max: l.max,
            remaining: l.last_remaining.saturating_add(l.free),
            reset_ms: end,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::budget::meter::Scope;

    const T0: u64 = 1_700_000_000_000;
    const END: u64 = T0 + 60_000;

    fn key(measure: Measure, period: Period) -> MeterKey {
        MeterKey::new(Scope::Key(Arc::from("k")), measure, period)
    }

    fn reqs() -> MeterKey {
        key(Measure::Requests, Period::Minute)
    }

    fn want(key: &MeterKey, max: u64, exact: bool, amount: u64) -> Want {
        Want {
            key: key.clone(),
            limit: Limit { max, exact },
            amount,
        }
    }

    fn grant(key: &MeterKey, units: u64, remaining: u64, others_out: u64) -> Grant {
        Grant {
            key: key.clone(),
            units,
            window_id: T0,
            window_end_ms: END,
            max: 100,
            remaining,
            others_out,
            returned: 0,
        }
    }

    fn admitted(a: Admit) -> Ticket {
        match a {
            Admit::Admitted(t) => t,
            other => panic!("not admitted: {other:?}"),
        }
    }

    fn refused(a: Admit) -> Refusal {
        match a {
            Admit::Refused(r) => r,
            other => panic!("not refused: {other:?}"),
        }
    }

    fn free(l: &Leases, k: &MeterKey) -> u64 {
        l.leases.get(k).map_or(0, |l| l.free)
    }

    #[test]
    fn a_raised_limit_asks_again_after_a_final_answer() {
        let mut l = Leases::default();
        let k = reqs();
        // Spent: the budgeter's final answer (nothing left, nothing out) at max 100.
        l.on_grant(&grant(&k, 0, 0, 0), T0);
        refused(l.admit(&[want(&k, 100, true, 1)], T0 + 1));
        assert!(l.take_asks().is_empty(), "a spent meter asks nothing");
        // The key's limit is raised to 150: ask again, with the new limit.
        assert!(matches!(
            l.admit(&[want(&k, 150, true, 1)], T0 + 2),
            Admit::Wait
        ));
        let asks = l.take_asks();
        assert_eq!(asks.len(), 1);
        assert_eq!(asks[0].limit.max, 150);
        let mut more = grant(&k, 10, 40, 0);
        more.max = 150;
        l.on_grant(&more, T0 + 3);
        let t = admitted(l.admit(&[want(&k, 150, true, 1)], T0 + 4));
        l.refund(t, T0 + 5);
        assert_eq!(free(&l, &k), 10);
    }

    fn report(k: &MeterKey, used: u64, over: u64, returned: u64) -> Report {
        Report {
            key: k.clone(),
            window_id: T0,
            used,
            over,
            returned,
        }
    }

    #[test]
    fn the_first_request_waits_and_asks_once() {
        let k = reqs();
        let mut l = Leases::new();
        assert!(matches!(
            l.admit(&[want(&k, 100, false, 1)], T0),
            Admit::Wait
        ));
        assert_eq!(
            l.take_asks(),
            vec![Ask {
                key: k.clone(),
                units: 2,
                limit: Limit {
                    max: 100,
                    exact: false
                }
            }]
        );
        // While the ask is pending, no second one...
        assert!(matches!(
            l.admit(&[want(&k, 100, false, 1)], T0 + 10),
            Admit::Wait
        ));
        assert!(l.take_asks().is_empty());
        // ...unless it went unanswered too long.
        assert!(matches!(
            l.admit(&[want(&k, 100, false, 1)], T0 + ASK_RETRY_MS),
            Admit::Wait
        ));
        assert_eq!(l.take_asks().len(), 1);
        // The grant answers it: admitted from the lease.
        l.on_grant(&grant(&k, 10, 80, 10), T0 + 1_001);
        let t = admitted(l.admit(&[want(&k, 100, false, 1)], T0 + 1_002));
        assert_eq!(t.reserved(&k), 1);
        assert_eq!(free(&l, &k), 9);
        let q = l.quota(&k, T0 + 1_002).unwrap();
        assert_eq!(
            q,
            Quota {
                max: 100,
                remaining: 89,
                reset_ms: END
            }
        );
        l.settle(t, Actual::default(), T0 + 1_003);
        assert_eq!(l.take_reports(), vec![report(&k, 1, 0, 0)]);
        assert!(l.take_reports().is_empty());
    }

    #[test]
    fn refills_are_asked_ahead_and_grow() {
        let k = reqs();
        let mut l = Leases::new();
        l.on_grant(&grant(&k, 10, 80, 10), T0);
        let mut tickets = Vec::new();
        for _ in 0..5 {
            tickets.push(admitted(l.admit(&[want(&k, 100, true, 1)], T0 + 1)));
        }
        // 5 of 10 free: not below half yet.
        assert!(l.take_asks().is_empty());
        tickets.push(admitted(l.admit(&[want(&k, 100, true, 1)], T0 + 2)));
        // 4 free: ask for double the last grant, once.
        assert_eq!(
            l.take_asks(),
            vec![Ask {
                key: k.clone(),
                units: 20,
                limit: Limit {
                    max: 100,
                    exact: true
                }
            }]
        );
        tickets.push(admitted(l.admit(&[want(&k, 100, true, 1)], T0 + 3)));
        assert!(l.take_asks().is_empty());
        // The refill joins the free units.
        l.on_grant(&grant(&k, 20, 60, 10), T0 + 4);
        assert_eq!(free(&l, &k), 23);
        for t in tickets {
            l.refund(t, T0 + 5);
        }
        assert_eq!(free(&l, &k), 30);
        assert!(l.take_reports().is_empty());
    }

    #[test]
    fn admission_is_all_or_nothing() {
        let a = reqs();
        let b = key(Measure::Tokens, Period::Day);
        let mut l = Leases::new();
        l.on_grant(&grant(&a, 5, 0, 0), T0);
        // `b` has no lease: wait, and `a` is not debited.
        let wants = [want(&a, 100, true, 1), want(&b, 1_000, true, 300)];
        assert!(matches!(l.admit(&wants, T0 + 1), Admit::Wait));
        assert_eq!(free(&l, &a), 5);
        assert_eq!(
            l.take_asks(),
            vec![Ask {
                key: b.clone(),
                units: 600,
                limit: Limit {
                    max: 1_000,
                    exact: true
                }
            }]
        );
        // With `b` leased but short, still nothing moves.
        l.on_grant(&grant(&b, 200, 700, 0), T0 + 2);
        assert!(matches!(l.admit(&wants, T0 + 3), Admit::Wait));
        assert_eq!((free(&l, &a), free(&l, &b)), (5, 200));
        // Both pass: both debited, on one ticket.
        l.on_grant(&grant(&b, 200, 500, 0), T0 + 4);
        let t = admitted(l.admit(&wants, T0 + 5));
        assert_eq!((free(&l, &a), free(&l, &b)), (4, 100));
        assert_eq!((t.reserved(&a), t.reserved(&b)), (1, 300));
        // The same meter twice must fit twice.
        let twice = [want(&a, 100, true, 3), want(&a, 100, true, 3)];
        assert!(matches!(l.admit(&twice, T0 + 6), Admit::Wait));
        assert_eq!(free(&l, &a), 4);
        l.refund(t, T0 + 7);
        assert_eq!((free(&l, &a), free(&l, &b)), (5, 400));
        let t = admitted(l.admit(&twice[..1], T0 + 8));
        assert_eq!(free(&l, &a), 2);
        l.refund(t, T0 + 9);
    }

    #[test]
    fn borrowing_only_when_not_exact() {
        let k = reqs();
        // Exact: an empty lease waits.
        let mut l = Leases::new();
        l.on_grant(&grant(&k, 0, 0, 50), T0);
        assert!(matches!(
            l.admit(&[want(&k, 200, true, 1)], T0 + 1),
            Admit::Wait
        ));
        // Not exact: borrow up to max / 100 = 2 per window, then wait.
        let mut l = Leases::new();
        l.on_grant(&grant(&k, 0, 0, 50), T0);
        let t1 = admitted(l.admit(&[want(&k, 200, false, 1)], T0 + 1));
        let t2 = admitted(l.admit(&[want(&k, 200, false, 1)], T0 + 1));
        assert!(matches!(
            l.admit(&[want(&k, 200, false, 1)], T0 + 2),
            Admit::Wait
        ));
        // Borrowed units are reported over the lease.
        l.settle(t1, Actual::default(), T0 + 3);
        assert_eq!(l.take_reports(), vec![report(&k, 1, 1, 0)]);
        // A refund gives the credit back: one more may borrow.
        l.refund(t2, T0 + 4);
        let t3 = admitted(l.admit(&[want(&k, 200, false, 1)], T0 + 5));
        assert!(matches!(
            l.admit(&[want(&k, 200, false, 1)], T0 + 6),
            Admit::Wait
        ));
        l.refund(t3, T0 + 7);
        // Free units first, the rest on credit (tokens: 1_000 max, 10 credit).
        let tk = key(Measure::Tokens, Period::Minute);
        l.on_grant(&grant(&tk, 5, 0, 50), T0 + 8);
        let t = admitted(l.admit(&[want(&tk, 1_000, false, 12)], T0 + 9));
        assert_eq!(free(&l, &tk), 0);
        assert_eq!(l.leases.get(&tk).map(|l| l.borrowed), Some(7));
        // Used 6: from the lease 5, 1 over; the other 6 borrowed return to credit.
        l.settle(
            t,
            Actual {
                tokens: 6,
                spend: 0,
            },
            T0 + 10,
        );
        assert_eq!(l.leases.get(&tk).map(|l| l.borrowed), Some(1));
        assert_eq!(l.take_reports(), vec![report(&tk, 6, 1, 0)]);
    }

    #[test]
    fn refusals_say_when_to_retry() {
        let k = reqs();
        let mut l = Leases::new();
        // Nothing left anywhere: refused until the window ends.
        l.on_grant(&grant(&k, 0, 0, 0), T0);
        let r = refused(l.admit(&[want(&k, 100, true, 1)], T0 + 1_000));
        assert_eq!(
            r,
            Refusal {
                key: k.clone(),
                max: 100,
                retry_after_ms: 59_000
            }
        );
        assert!(l.take_asks().is_empty());
        // Not exact: borrow first (1 unit), then refuse.
        let t = admitted(l.admit(&[want(&k, 100, false, 1)], T0 + 1_000));
        assert!(matches!(
            l.admit(&[want(&k, 100, false, 1)], T0 + 1_000),
            Admit::Refused(_)
        ));
        l.settle(t, Actual::default(), T0 + 1_001);
        // Others still hold units: wait for them instead.
        let mut l = Leases::new();
        l.on_grant(&grant(&k, 0, 0, 3), T0);
        assert!(matches!(
            l.admit(&[want(&k, 100, true, 1)], T0 + 1),
            Admit::Wait
        ));
        // A window that never ends: retry soon.
        let c = key(Measure::Concurrent, Period::Total);
        let mut l = Leases::new();
        l.on_grant(
            &Grant {
                window_id: 0,
                window_end_ms: u64::MAX,
                ..grant(&c, 0, 0, 0)
            },
            T0,
        );
        let r = refused(l.admit(&[want(&c, 100, true, 1)], T0 + 1));
        assert_eq!(r.retry_after_ms, TOTAL_RETRY_AFTER_MS);
        // A request bigger than the limit can never pass: refused at once, no retry.
        let tk = key(Measure::Tokens, Period::Minute);
        let r = refused(l.admit(&[want(&tk, 1_000, false, 1_011)], T0 + 1));
        assert_eq!((r.max, r.retry_after_ms), (1_000, 0));
        assert!(matches!(
            l.admit(&[want(&tk, 1_000, false, 1_010)], T0 + 1),
            Admit::Wait
        ));
        // A limit of 0 blocks everything, exact or not.
        assert!(matches!(
            l.admit(&[want(&k, 0, false, 1)], T0 + 1),
            Admit::Refused(_)
        ));
        // The window ended: the refusal is forgotten, the next request asks.
        let mut l = Leases::new();
        l.on_grant(&grant(&k, 0, 0, 0), T0);
        assert!(matches!(
            l.admit(&[want(&k, 100, true, 1)], END),
            Admit::Wait
        ));
        assert_eq!(l.take_asks().len(), 1);
    }

    #[test]
    fn a_nothing_left_answer_that_missed_a_give_back_is_not_trusted() {
        let k = reqs();
        let mut l = Leases::new();
        l.on_grant(&grant(&k, 4, 0, 0), T0);
        let t = admitted(l.admit(&[want(&k, 100, true, 3)], T0 + 1));
        // Free 1 < half of 4: a refill ask is queued...
        assert_eq!(l.take_asks().len(), 1);
        // ...then the budgeter reclaims the free unit; the answer to the ask was made before.
        l.reclaim(std::slice::from_ref(&k), T0 + 2);
        assert_eq!(l.take_reports(), vec![report(&k, 0, 0, 1)]);
        l.on_grant(&grant(&k, 0, 0, 0), T0 + 3);
        assert!(matches!(
            l.admit(&[want(&k, 100, true, 1)], T0 + 4),
            Admit::Wait
        ));
        // However many answers come before the report arrives (messages may be reordered).
        l.on_grant(&grant(&k, 0, 0, 0), T0 + 4);
        assert!(matches!(
            l.admit(&[want(&k, 100, true, 1)], T0 + 4),
            Admit::Wait
        ));
        // Once the ledger has counted the unit given back, "nothing left" is believed.
        l.on_grant(
            &Grant {
                returned: 1,
                ..grant(&k, 0, 0, 0)
            },
            T0 + 5,
        );
        assert!(matches!(
            l.admit(&[want(&k, 100, true, 1)], T0 + 6),
            Admit::Refused(_)
        ));
        l.refund(t, T0 + 7);
        // Its own units still admit.
        let t = admitted(l.admit(&[want(&k, 100, true, 1)], T0 + 8));
        l.settle(t, Actual::default(), T0 + 9);
    }

    #[test]
    fn settlement_at_real_usage() {
        let tk = key(Measure::Tokens, Period::Minute);
        let mut l = Leases::new();
        l.on_grant(&grant(&tk, 1_000, 0, 0), T0);
        // Below the reserve: the rest goes back.
        let t = admitted(l.admit(&[want(&tk, 10_000, true, 400)], T0 + 1));
        assert_eq!(free(&l, &tk), 600);
        l.settle(
            t,
            Actual {
                tokens: 250,
                spend: 9,
            },
            T0 + 2,
        );
        assert_eq!(free(&l, &tk), 750);
        // Above the reserve: the excess comes from free units...
        let t = admitted(l.admit(&[want(&tk, 10_000, true, 500)], T0 + 3));
        l.settle(
            t,
            Actual {
                tokens: 600,
                spend: 0,
            },
            T0 + 4,
        );
        assert_eq!(free(&l, &tk), 150);
        // ...and what they lack is over.
        let t = admitted(l.admit(&[want(&tk, 10_000, true, 100)], T0 + 5));
        l.settle(
            t,
            Actual {
                tokens: 300,
                spend: 0,
            },
            T0 + 6,
        );
        assert_eq!(free(&l, &tk), 0);
        // One report for the meter and window: 250 + 600 + 300 used, 150 over.
        assert_eq!(l.take_reports(), vec![report(&tk, 1_150, 150, 0)]);

        // Spend settles at the spend, requests at 1, concurrency at nothing.
        let sp = key(Measure::Spend, Period::Month);
        let rq = reqs();
        let cc = key(Measure::Concurrent, Period::Total);
        let total = |k: &MeterKey, units| Grant {
            window_id: 0,
            window_end_ms: u64::MAX,
            ..grant(k, units, 0, 0)
        };
        let mut l = Leases::new();
        l.on_grant(&grant(&sp, 1_000_000, 0, 0), T0);
        l.on_grant(&grant(&rq, 10, 0, 0), T0);
        l.on_grant(&total(&cc, 2), T0);
        let wants = [
            want(&sp, 10_000_000, true, 50_000),
            want(&rq, 100, true, 1),
            want(&cc, 4, true, 1),
        ];
        let t = admitted(l.admit(&wants, T0 + 1));
        assert_eq!(
            (free(&l, &sp), free(&l, &rq), free(&l, &cc)),
            (950_000, 9, 1)
        );
        l.settle(
            t,
            Actual {
                tokens: 77,
                spend: 42_000,
            },
            T0 + 2,
        );
        assert_eq!(
            (free(&l, &sp), free(&l, &rq), free(&l, &cc)),
            (958_000, 9, 2)
        );
        let mut reports = l.take_reports();
        reports.sort_by_key(|r| r.used);
        assert_eq!(
            reports,
            vec![report(&rq, 1, 0, 0), report(&sp, 42_000, 0, 0)]
        );
    }

    #[test]
    fn refunds_give_everything_back() {
        let k = reqs();
        let tk = key(Measure::Tokens, Period::Minute);
        let mut l = Leases::new();
        l.on_grant(&grant(&k, 3, 0, 0), T0);
        l.on_grant(&grant(&tk, 50, 0, 0), T0);
        let t = admitted(l.admit(&[want(&k, 100, true, 1), want(&tk, 100, false, 51)], T0 + 1));
        assert_eq!((free(&l, &k), free(&l, &tk)), (2, 0));
        l.refund(t, T0 + 2);
        assert_eq!((free(&l, &k), free(&l, &tk)), (3, 50));
        assert_eq!(l.leases.get(&tk).map(|l| l.borrowed), Some(0));
        assert!(l.take_reports().is_empty());
    }

    #[test]
    fn tickets_of_an_ended_window_report_and_give_nothing_back() {
        let k = key(Measure::Tokens, Period::Minute);
        let mut l = Leases::new();
        l.on_grant(&grant(&k, 100, 0, 0), T0);
        let t1 = admitted(l.admit(&[want(&k, 1_000, true, 40)], T0 + 1));
        let t2 = admitted(l.admit(&[want(&k, 1_000, true, 40)], T0 + 1));
        // The window ends; the next window's grant arrives.
        l.on_grant(
            &Grant {
                window_id: END + 5,
                window_end_ms: END + 60_005,
                ..grant(&k, 10, 0, 0)
            },
            END + 5,
        );
        assert_eq!(free(&l, &k), 10);
        l.settle(
            t1,
            Actual {
                tokens: 70,
                spend: 0,
            },
            END + 6,
        );
        l.refund(t2, END + 7);
        assert_eq!(free(&l, &k), 10);
        // Reported for the old window: 40 from its lease, 30 over.
        assert_eq!(l.take_reports(), vec![report(&k, 70, 30, 0)]);
        // A late grant for the old window is dropped.
        l.on_grant(&grant(&k, 99, 0, 0), END + 8);
        assert_eq!(free(&l, &k), 10);
        // The lease ends with its window even without a new grant.
        let t = admitted(l.admit(&[want(&k, 1_000, true, 5)], END + 9));
        l.settle(
            t,
            Actual {
                tokens: 5,
                spend: 0,
            },
            END + 60_005,
        );
        let old = Report {
            window_id: END + 5,
            ..report(&k, 5, 0, 0)
        };
        assert_eq!(l.take_reports(), vec![old]);
        assert_eq!(l.quota(&k, END + 60_005), None);
        assert!(matches!(
            l.admit(&[want(&k, 1_000, true, 1)], END + 60_005),
            Admit::Wait
        ));
        assert_eq!(free(&l, &k), 0);
    }

    #[test]
    fn reclaim_gives_free_units_back() {
        let k = reqs();
        let other = key(Measure::Tokens, Period::Minute);
        let mut l = Leases::new();
        l.on_grant(&grant(&k, 10, 0, 0), T0);
        let t = admitted(l.admit(&[want(&k, 100, true, 1)], T0 + 1));
        l.reclaim(&[k.clone(), other.clone()], T0 + 2);
        assert_eq!(free(&l, &k), 0);
        assert_eq!(l.take_reports(), vec![report(&k, 0, 0, 9)]);
        // The ticket still settles.
        l.settle(t, Actual::default(), T0 + 3);
        assert_eq!(l.take_reports(), vec![report(&k, 1, 0, 0)]);
        // Nothing to reclaim after the window.
        l.on_grant(&grant(&k, 5, 0, 0), T0 + 4);
        l.reclaim(std::slice::from_ref(&k), END);
        assert!(l.take_reports().is_empty());
    }

    #[test]
    fn trim_returns_idle_units_and_forgets_ended_leases() {
        let a = reqs();
        let b = key(Measure::Tokens, Period::Minute);
        let c = key(Measure::Concurrent, Period::Total);
        let mut l = Leases::new();
        l.on_grant(&grant(&a, 10, 0, 0), T0);
        l.on_grant(&grant(&b, 10, 0, 0), T0);
        l.on_grant(
            &Grant {
                window_id: 0,
                window_end_ms: u64::MAX,
                ..grant(&c, 4, 0, 0)
            },
            T0,
        );
        let tb = admitted(l.admit(&[want(&b, 100, true, 2)], T0 + 4_000));
        let tc = admitted(l.admit(&[want(&c, 100, true, 1)], T0 + 4_000));
        // At 5 s with idle 5 s: `a` (idle since its grant at T0) gives its 10 back; `b` and
        // `c` were used at 4 s.
        l.trim(T0 + 5_000, 5_000);
        assert_eq!(l.take_reports(), vec![report(&a, 0, 0, 10)]);
        assert_eq!(free(&l, &a), 0);
        assert_eq!((free(&l, &b), free(&l, &c)), (8, 3));
        // Later: `b` and `c` give back their free units; their tickets still settle.
        l.trim(T0 + 9_000, 5_000);
        let mut r = l.take_reports();
        r.sort_by_key(|r| r.window_id);
        assert_eq!(
            r,
            vec![
                Report {
                    window_id: 0,
                    ..report(&c, 0, 0, 3)
                },
                report(&b, 0, 0, 8)
            ]
        );
        l.settle(
            tb,
            Actual {
                tokens: 2,
                spend: 0,
            },
            T0 + 9_001,
        );
        l.settle(tc, Actual::default(), T0 + 9_001);
        assert_eq!(l.take_reports(), vec![report(&b, 2, 0, 0)]);
        // The concurrency slot came back free; idle again, it is given back.
        l.trim(T0 + 20_000, 5_000);
        assert_eq!(
            l.take_reports(),
            vec![Report {
                window_id: 0,
                ..report(&c, 0, 0, 1)
            }]
        );
        // The windows of `a` and `b` end: dropped; an ask pending keeps a lease alive until
        // it expires; `c`'s window never ends.
        assert!(matches!(
            l.admit(&[want(&a, 100, true, 1)], END + 1),
            Admit::Wait
        ));
        l.trim(END + 2, 5_000);
        assert!(!l.leases.contains_key(&b));
        assert!(l.leases.contains_key(&a));
        l.trim(END + 1 + ASK_RETRY_MS, 5_000);
        assert!(!l.leases.contains_key(&a));
        assert!(l.leases.contains_key(&c));
    }

    #[test]
    fn grants_for_ended_windows_are_dropped_and_answer_the_ask() {
        let k = reqs();
        let mut l = Leases::new();
        assert!(matches!(
            l.admit(&[want(&k, 100, true, 1)], T0),
            Admit::Wait
        ));
        assert_eq!(l.take_asks().len(), 1);
        l.on_grant(&grant(&k, 10, 0, 0), END);
        assert_eq!(l.quota(&k, END), None);
        // The ask was answered: the next request asks again at once.
        assert!(matches!(
            l.admit(&[want(&k, 100, true, 1)], END + 1),
            Admit::Wait
        ));
        assert_eq!(l.take_asks().len(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Grant(u64),
        Admit(u64),
        Settle(usize, u64),
        Refund(usize),
        Reclaim,
        Trim(u64),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => (0u64..40).prop_map(Op::Grant),
            5 => (0u64..15).prop_map(Op::Admit),
            3 => (any::<usize>(), 0u64..30).prop_map(|(i, a)| Op::Settle(i, a)),
            1 => any::<usize>().prop_map(Op::Refund),
            1 => Just(Op::Reclaim),
            1 => (0u64..3_000).prop_map(Op::Trim),
            2 => (0u64..1_500).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Within a window: every unit granted is, at any time, free, reserved by a ticket,
        /// or reported as used from the lease or returned; borrowing stays within its
        /// credit; once every ticket is settled or refunded, free + used from the lease +
        /// returned is exactly what was granted.
        #[test]
        fn lease_accounting(exact: bool, max in 1u64..2_000, ops in proptest::collection::vec(op(), 1..150)) {
            let k = key(Measure::Tokens, Period::Minute);
            let mut l = Leases::new();
            let mut tickets: Vec<Ticket> = Vec::new();
            let (mut granted, mut from_lease_used, mut returned) = (0u64, 0u64, 0u64);
            let mut now = T0;
            let limit = Limit { max, exact };
            let drain = |l: &mut Leases, from_lease_used: &mut u64, returned: &mut u64| {
                for r in l.take_reports() {
                    prop_assert_eq!(r.window_id, T0);
                    prop_assert!(r.over <= r.used);
                    *from_lease_used += r.used - r.over;
                    *returned += r.returned;
                }
                Ok(())
            };
            for op in ops {
                match op {
                    Op::Grant(u) => {
                        l.on_grant(&grant(&k, u, 0, 1), now);
                        granted += u;
                    }
                    Op::Admit(a) => {
                        let w = Want { key: k.clone(), limit, amount: a };
                        let before = free(&l, &k);
                        match l.admit(&[w], now) {
                            Admit::Admitted(t) => tickets.push(t),
                            Admit::Wait | Admit::Refused(_) => prop_assert_eq!(free(&l, &k), before),
                        }
                    }
                    Op::Settle(i, tokens) if !tickets.is_empty() => {
                        let t = tickets.swap_remove(i % tickets.len());
                        l.settle(t, Actual { tokens, spend: 0 }, now);
                    }
                    Op::Refund(i) if !tickets.is_empty() => {
                        let t = tickets.swap_remove(i % tickets.len());
                        l.refund(t, now);
                    }
                    Op::Settle(..) | Op::Refund(_) => {}
                    Op::Reclaim => l.reclaim(std::slice::from_ref(&k), now),
                    Op::Trim(idle) => l.trim(now, idle),
                    Op::Advance(ms) => now = (now + ms).min(END - 1),
                }
                drain(&mut l, &mut from_lease_used, &mut returned)?;
                let reserved: u64 = tickets.iter().flat_map(|t| &t.reserved).map(|r| r.from_lease).sum();
                let borrowed: u64 = tickets.iter().flat_map(|t| &t.reserved).map(|r| r.borrowed).sum();
                prop_assert_eq!(free(&l, &k) + reserved + from_lease_used + returned, granted);
                let credit_used = l.leases.get(&k).map_or(0, |l| l.borrowed);
                prop_assert!(borrowed <= credit_used);
                prop_assert!(credit_used <= limit.borrow());
            }
            for t in tickets.drain(..) {
                l.refund(t, now);
            }
            drain(&mut l, &mut from_lease_used, &mut returned)?;
            prop_assert_eq!(free(&l, &k) + from_lease_used + returned, granted);
        }
    }
}
