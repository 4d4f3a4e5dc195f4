//! What a budget does as it fills: threshold actions (alert, throttle, restrict, block), each
//! fired once per window, and what the one in force does to a request.
//!
//! Owns: the threshold ladder ([`Thresholds`], default 80% alert, 90% throttle, 95% restrict,
//! 100% block), the per-meter record of what has fired in the current window ([`Watch`]),
//! the effect of an action on admission ([`effects`]), the validated downgrade map used by
//! `restrict` ([`Downgrades`]) and the alert webhook's JSON body ([`webhook_body`]).
//! Does not: read the clock or the ledger (the caller passes the meter's figures in), log,
//! count metrics, send the webhook or admit requests: it decides, the caller acts.
//! Key types: [`Action`], [`Thresholds`], [`Watch`], [`Fired`], [`Effects`], [`Downgrades`].
//!
//! A threshold at `p`% is crossed when `used × 100 ≥ p × max` (integer arithmetic, exact).
//! A meter with `max == 0` allows nothing: only its thresholds at 100% are crossed, at once.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Cost;
use super::meter::{Measure, MeterKey};

/// What a budget does when a threshold is crossed. Ordered by strength: each action carries
/// the request effects of the weaker ones (see [`effects`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Tell someone: a log line, a metric and, if configured, a webhook POST.
    Alert,
    /// Lower the key's request rate.
    Throttle,
    /// Route requests to cheaper models (the [`Downgrades`] map).
    Restrict,
    /// Refuse requests (429, code `budget_exceeded`) until the window resets.
    Block,
}

impl Action {
    /// The label: `alert`, `throttle`, `restrict` or `block` (as in config and metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Throttle => "throttle",
            Self::Restrict => "restrict",
            Self::Block => "block",
        }
    }
}

/// One rung of the ladder: at `at_percent`% of the budget, do `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// The share of the budget, 1 to 100, at and past which the action fires.
    pub at_percent: u8,
    /// What to do.
    pub action: Action,
}

/// A budget's thresholds: sorted by percentage, each from 1 to 100, no percentage twice.
/// Parsed from a list (`[{ at_percent = 80, action = "alert" }, ...]`) and validated on the
/// way in. An empty list is allowed: the budget only counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Threshold>", into = "Vec<Threshold>")]
pub struct Thresholds(Vec<Threshold>);

/// The default throttle: the key's request rate at half (see [`effects`]).
pub const DEFAULT_THROTTLE_PERCENT: u8 = 50;

impl Thresholds {
    /// The defaults: 80% alert, 90% throttle, 95% restrict, 100% block.
    pub fn default_set() -> Self {
        let t = |at_percent, action| Threshold { at_percent, action };
        Self(vec![
            t(80, Action::Alert),
            t(90, Action::Throttle),
            t(95, Action::Restrict),
            t(100, Action::Block),
        ])
    }

    /// Validate a list (in any order) into a ladder sorted by percentage.
    pub fn new(mut list: Vec<Threshold>) -> Result<Self, PolicyError> {
        if let Some(t) = list.iter().find(|t| !(1..=100).contains(&t.at_percent)) {
            return Err(PolicyError::PercentOutOfRange {
                at_percent: t.at_percent,
            });
        }
        list.sort_by_key(|t| t.at_percent);
        if let Some(w) = list.windows(2).find(|w| w[0].at_percent == w[1].at_percent) {
            return Err(PolicyError::DuplicatePercent {
                at_percent: w[0].at_percent,
            });
        }
        Ok(Self(list))
    }

    /// The thresholds, in order of percentage.
    pub fn as_slice(&self) -> &[Threshold] {
        &self.0
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Self::default_set()
    }
}

impl TryFrom<Vec<Threshold>> for Thresholds {
    type Error = PolicyError;
    fn try_from(list: Vec<Threshold>) -> Result<Self, PolicyError> {
        Self::new(list)
    }
}

impl From<Thresholds> for Vec<Threshold> {
    fn from(t: Thresholds) -> Self {
        t.0
    }
}

/// Whether `used` of `max` has reached `at_percent`% (`max == 0`: only 100% is reached).
fn crossed(at_percent: u8, used: u64, max: u64) -> bool {
    if max == 0 {
        return at_percent == 100;
    }
    u128::from(used) * 100 >= u128::from(at_percent) * u128::from(max)
}

/// What one budget meter's thresholds have fired, per window, so each fires exactly once per
/// window. One per budget [`MeterKey`], kept by whoever folds in the meter's reports.
///
/// It keeps the window id, the set of percentages fired in it (a set rather than the
/// highest: a budget at 0 fires its 100% rung first, and raised later must still fire the
/// lower ones) and the highest `used` seen in it (reports may arrive out of order; settled
/// spend never goes down within a window).
/// A later window re-arms every threshold; an observation of an earlier window is stale and
/// changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watch {
    /// The current window's id; `None` before the first observation.
    window_id: Option<u64>,
    /// The percentages fired in the window: bit `p` for `p`%.
    fired: u128,
    /// The highest `used` observed in the window.
    used: u64,
    /// The strongest action among the thresholds crossed at `used` and the last `max`.
    in_force: Option<Action>,
}

/// One threshold crossed: what to do, and the figures for the log line, the metric and the
/// webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The budget's meter.
    pub key: MeterKey,
    /// The threshold's action.
    pub action: Action,
    /// The threshold's percentage.
    pub at_percent: u8,
    /// Units used in the window when it fired (nano-USD for spend).
    pub used: u64,
    /// The meter's limit (nano-USD for spend).
    pub max: u64,
    /// When the window ends and the budget resets (exclusive), in unix ms; `u64::MAX` for
    /// a window that never ends.
    pub window_end_ms: u64,
}

impl Watch {
    /// A watch with nothing fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed the meter's figures after a report (`used` = settled spend in the window,
    /// `window_id` from the ledger); returns the thresholds crossed since the last call, in
    /// order, each once per window (a new window re-arms them all). `max == 0` fires nothing
    /// below 100% and the 100% thresholds (by default, block) at once.
    ///
    /// `used` lower than already seen in the window (an out-of-order report) fires nothing
    /// new. A changed `max` counts from the next call on: raising it lowers the action in
    /// force without re-arming what fired; lowering it fires what it newly crosses.
    pub fn observe(
        &mut self,
        thresholds: &Thresholds,
        key: &MeterKey,
        window_id: u64,
        window_end_ms: u64,
        used: u64,
        max: u64,
    ) -> Vec<Fired> {
        match self.window_id {
            Some(w) if window_id < w => return Vec::new(),
            Some(w) if window_id == w => {}
            _ => {
                *self = Self {
                    window_id: Some(window_id),
                    ..Self::default()
                }
            }
        }
        self.used = self.used.max(used);
        let mut fired = Vec::new();
        let mut in_force = None;
        for t in thresholds.as_slice() {
            if !crossed(t.at_percent, self.used, max) {
                continue;
            }
            in_force = in_force.max(Some(t.action));
            // `at_percent` is at most 100 (validated), so the bit fits.
            let bit = 1u128 << t.at_percent;
            if self.fired & bit == 0 {
                self.fired |= bit;
                fired.push(Fired {
                    key: key.clone(),
                    action: t.action,
                    at_percent: t.at_percent,
                    used: self.used,
                    max,
                    window_end_ms,
                });
            }
        }
        self.in_force = in_force;
        fired
    }

    /// The strongest action in force now for this window (`None` before any threshold, and
    /// for any window but the one last observed).
    pub fn in_force(&self, window_id: u64) -> Option<Action> {
        if self.window_id == Some(window_id) {
            self.in_force
        } else {
            None
        }
    }
}

/// The effect of the action in force on a request, for the admission stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    /// The share of the key's request rate still allowed, 1 to 100 (50: halved; 100: as
    /// configured).
    pub throttle_factor_percent: u8,
    /// Route to the cheaper model of the [`Downgrades`] map, where it names one.
    pub restrict: bool,
    /// Refuse the request: 429, code `budget_exceeded`, with when the window resets.
    pub block: bool,
}

/// What `action` does to a request, with a throttle to `throttle_percent`% of the key's
/// request rate (clamped to 1..=100). Actions are a ladder: each carries the effects of the
/// weaker ones, so a budget past its restrict threshold stays throttled too. `None` and
/// [`Action::Alert`] change nothing.
pub fn effects(action: Option<Action>, throttle_percent: u8) -> Effects {
    let at_least = |a: Action| action.is_some_and(|x| x >= a);
    Effects {
        throttle_factor_percent: if at_least(Action::Throttle) {
            throttle_percent.clamp(1, 100)
        } else {
            100
        },
        restrict: at_least(Action::Restrict),
        block: at_least(Action::Block),
    }
}

/// The downgrade map for `restrict`: public model → cheaper public model, one hop (a
/// restricted request for `a` with `a → b, b → c` goes to `b`). Validated: every target is a
/// configured model and no chain loops back on itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Downgrades(BTreeMap<String, String>);

impl Downgrades {
    /// Validate `map`; `exists` says whether a public model is configured.
    pub fn new(
        map: BTreeMap<String, String>,
        exists: &dyn Fn(&str) -> bool,
    ) -> Result<Self, PolicyError> {
        if let Some((from, to)) = map.iter().find(|(_, to)| !exists(to)) {
            return Err(PolicyError::UnknownTarget {
                from: from.clone(),
                to: to.clone(),
            });
        }
        // Each model has one target, so a walk from any model either ends or loops.
        let mut done: BTreeSet<&str> = BTreeSet::new();
        for start in map.keys() {
            let mut path: Vec<&str> = Vec::new();
            let mut at = start.as_str();
            while !done.contains(at) {
                if let Some(i) = path.iter().position(|&m| m == at) {
                    let mut cycle: Vec<String> = path[i..].iter().map(|m| m.to_string()).collect();
                    cycle.push(at.to_string());
                    return Err(PolicyError::Cycle { models: cycle });
                }
                path.push(at);
                match map.get(at) {
                    Some(next) => at = next,
                    None => break,
                }
            }
            done.extend(path);
        }
        Ok(Self(map))
    }

    /// The cheaper model to route `model` to under `restrict`, if one is configured.
    pub fn target(&self, model: &str) -> Option<&str> {
        self.0.get(model).map(String::as_str)
    }
}

/// The JSON body of the alert webhook POST (the caller sends it):
///
/// ```json
/// {"event": "budget_threshold", "scope": {"kind": "key", "id": "k_1"},
///  "measure": "spend", "period": "month", "action": "alert", "at_percent": 80,
///  "used_usd": 80.5, "max_usd": 100.0, "used": 80500000000, "max": 100000000000,
///  "window_end_unix_ms": 1767225600000}
/// ```
///
/// `used` and `max` are the meter's units (nano-USD for spend, exact); `used_usd` and
/// `max_usd` are dollars for a spend meter and `null` for any other measure. The scope's
/// `id` is `null` for the global scope; a key scope carries the key's id, never its secret.
/// `window_end_unix_ms` is `null` for a window that never ends (a total budget).
pub fn webhook_body(f: &Fired) -> Value {
    let usd = |units: u64| (f.key.measure == Measure::Spend).then(|| Cost(units).usd());
    json!({
        "event": "budget_threshold",
        "scope": { "kind": f.key.scope.as_str(), "id": f.key.scope.id() },
        "measure": f.key.measure.as_str(),
        "period": f.key.period.as_str(),
        "action": f.action.as_str(),
        "at_percent": f.at_percent,
        "used_usd": usd(f.used),
        "max_usd": usd(f.max),
        "used": f.used,
        "max": f.max,
        "window_end_unix_ms": (f.window_end_ms != u64::MAX).then_some(f.window_end_ms),
    })
}

/// A threshold list or downgrade map that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A threshold's percentage is not from 1 to 100.
    #[error("threshold at {at_percent}%: `at_percent` must be from 1 to 100")]
    PercentOutOfRange {
        /// The percentage given.
        at_percent: u8,
    },
    /// Two thresholds share a percentage.
    #[error("two thresholds at {at_percent}%: each percentage may appear once")]
    DuplicatePercent {
        /// The percentage given twice.
        at_percent: u8,
    },
    /// A downgrade names a target that is not a configured model.
    #[error("downgrade `{from}` → `{to}` names model `{to}`, which is not configured")]
    UnknownTarget {
        /// The model downgraded.
        from: String,
        /// The missing target.
        to: String,
    },
    /// Downgrades loop back on themselves.
    #[error("downgrades loop: {}", models.join(" → "))]
    Cycle {
        /// The loop, its first model repeated at the end (`a → b → a`).
        models: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::budget::meter::{Period, Scope};

    fn key() -> MeterKey {
        MeterKey::new(Scope::Key(Arc::from("k_1")), Measure::Spend, Period::Month)
    }

    fn t(at_percent: u8, action: Action) -> Threshold {
        Threshold { at_percent, action }
    }

    /// Observe with the default set and max 1000, returning `(percent, action)` fired.
    fn fire(w: &mut Watch, window: u64, used: u64) -> Vec<(u8, Action)> {
        obs(w, &Thresholds::default_set(), window, used, 1000)
    }

    fn obs(w: &mut Watch, th: &Thresholds, window: u64, used: u64, max: u64) -> Vec<(u8, Action)> {
        w.observe(th, &key(), window, window + 10, used, max)
            .into_iter()
            .map(|f| (f.at_percent, f.action))
            .collect()
    }

    use Action::{Alert, Block, Restrict, Throttle};

    #[test]
    fn default_set_is_the_issue_ladder() {
        let d = Thresholds::default_set();
        assert_eq!(
            d.as_slice(),
            &[
                t(80, Alert),
                t(90, Throttle),
                t(95, Restrict),
                t(100, Block)
            ]
        );
        assert_eq!(Thresholds::default(), d);
    }

    #[test]
    fn creeping_up_fires_each_once_in_order() {
        let mut w = Watch::new();
        let mut all = Vec::new();
        for used in (0..=1200).step_by(7) {
            all.extend(fire(&mut w, 1, used));
        }
        assert_eq!(
            all,
            vec![(80, Alert), (90, Throttle), (95, Restrict), (100, Block)]
        );
        assert_eq!(w.in_force(1), Some(Block));
    }

    #[test]
    fn exactly_at_the_percentage_fires() {
        let mut w = Watch::new();
        assert_eq!(fire(&mut w, 1, 799), vec![]);
        assert_eq!(w.in_force(1), None);
        assert_eq!(fire(&mut w, 1, 800), vec![(80, Alert)]);
        assert_eq!(w.in_force(1), Some(Alert));
        assert_eq!(fire(&mut w, 1, 800), vec![]);
    }

    #[test]
    fn a_jump_past_several_fires_all_crossed_in_order() {
        let mut w = Watch::new();
        assert_eq!(fire(&mut w, 1, 10), vec![]);
        assert_eq!(
            fire(&mut w, 1, 960),
            vec![(80, Alert), (90, Throttle), (95, Restrict)]
        );
        assert_eq!(w.in_force(1), Some(Restrict));
        assert_eq!(fire(&mut w, 1, 5000), vec![(100, Block)]);
        assert_eq!(fire(&mut w, 1, 6000), vec![]);
    }

    #[test]
    fn fired_carries_the_figures() {
        let mut w = Watch::new();
        let f = w.observe(&Thresholds::default_set(), &key(), 7, 99, 850, 1000);
        assert_eq!(
            f,
            vec![Fired {
                key: key(),
                action: Alert,
                at_percent: 80,
                used: 850,
                max: 1000,
                window_end_ms: 99,
            }]
        );
    }

    #[test]
    fn a_new_window_rearms_them_all() {
        let mut w = Watch::new();
        assert_eq!(fire(&mut w, 1, 1000).len(), 4);
        assert_eq!(w.in_force(2), None);
        assert_eq!(fire(&mut w, 2, 0), vec![]);
        assert_eq!(w.in_force(1), None, "the old window is over");
        assert_eq!(w.in_force(2), None);
        assert_eq!(fire(&mut w, 2, 900), vec![(80, Alert), (90, Throttle)]);
        assert_eq!(w.in_force(2), Some(Throttle));
        // A window may start with usage already in it (e.g. a restart): fires at once.
        assert_eq!(fire(&mut w, 3, 2000).len(), 4);
    }

    #[test]
    fn out_of_order_observations_fire_nothing_new() {
        let mut w = Watch::new();
        assert_eq!(fire(&mut w, 5, 920), vec![(80, Alert), (90, Throttle)]);
        // Used going down within the window: nothing, and the action in force stays.
        assert_eq!(fire(&mut w, 5, 810), vec![]);
        assert_eq!(fire(&mut w, 5, 0), vec![]);
        assert_eq!(w.in_force(5), Some(Throttle));
        // A report of an earlier window is stale: nothing, nothing re-armed.
        assert_eq!(fire(&mut w, 4, 1000), vec![]);
        assert_eq!(w.in_force(5), Some(Throttle));
        assert_eq!(w.in_force(4), None);
        assert_eq!(fire(&mut w, 5, 950), vec![(95, Restrict)]);
    }

    #[test]
    fn max_zero_blocks_at_once_and_nothing_below() {
        let d = Thresholds::default_set();
        let mut w = Watch::new();
        assert_eq!(obs(&mut w, &d, 1, 0, 0), vec![(100, Block)]);
        assert_eq!(w.in_force(1), Some(Block));
        assert_eq!(obs(&mut w, &d, 1, 50, 0), vec![]);
        let below = Thresholds::new(vec![t(50, Alert), t(99, Throttle)]).unwrap();
        let mut w = Watch::new();
        assert_eq!(obs(&mut w, &below, 1, 10, 0), vec![]);
        assert_eq!(w.in_force(1), None);
    }

    #[test]
    fn a_raised_limit_lowers_the_action_in_force_without_rearming() {
        let d = Thresholds::default_set();
        let mut w = Watch::new();
        assert_eq!(obs(&mut w, &d, 1, 1000, 1000).len(), 4);
        assert_eq!(w.in_force(1), Some(Block));
        // The operator doubles the budget: 50%, nothing in force, nothing fires.
        assert_eq!(obs(&mut w, &d, 1, 1000, 2000), vec![]);
        assert_eq!(w.in_force(1), None);
        // Climbing again: in force again, but each threshold fired once this window.
        assert_eq!(obs(&mut w, &d, 1, 1900, 2000), vec![]);
        assert_eq!(w.in_force(1), Some(Restrict));
    }

    #[test]
    fn a_zero_budget_raised_later_still_fires_the_lower_rungs() {
        let d = Thresholds::default_set();
        let mut w = Watch::new();
        assert_eq!(obs(&mut w, &d, 1, 0, 0), vec![(100, Block)]);
        assert_eq!(
            obs(&mut w, &d, 1, 910, 1000),
            vec![(80, Alert), (90, Throttle)]
        );
        assert_eq!(w.in_force(1), Some(Throttle));
        assert_eq!(obs(&mut w, &d, 1, 1000, 1000), vec![(95, Restrict)]);
        assert_eq!(w.in_force(1), Some(Block));
    }

    #[test]
    fn huge_figures_do_not_overflow() {
        let mut w = Watch::new();
        let d = Thresholds::default_set();
        assert_eq!(obs(&mut w, &d, 1, u64::MAX / 10 * 8, u64::MAX), vec![]);
        assert_eq!(obs(&mut w, &d, 1, u64::MAX, u64::MAX).len(), 4);
    }

    #[test]
    fn thresholds_are_sorted_and_validated() {
        let th = Thresholds::new(vec![t(100, Block), t(50, Alert), t(75, Throttle)]).unwrap();
        assert_eq!(
            th.as_slice(),
            &[t(50, Alert), t(75, Throttle), t(100, Block)]
        );
        assert_eq!(
            Thresholds::new(vec![t(0, Alert)]),
            Err(PolicyError::PercentOutOfRange { at_percent: 0 })
        );
        assert_eq!(
            Thresholds::new(vec![t(80, Alert), t(101, Block)]),
            Err(PolicyError::PercentOutOfRange { at_percent: 101 })
        );
        let dup = Thresholds::new(vec![t(90, Alert), t(80, Alert), t(90, Block)]);
        assert_eq!(dup, Err(PolicyError::DuplicatePercent { at_percent: 90 }));
        assert!(dup.unwrap_err().to_string().contains("90%"));
        assert!(Thresholds::new(Vec::new()).is_ok_and(|t| t.as_slice().is_empty()));
        // The same ladder may repeat an action at two percentages.
        assert!(Thresholds::new(vec![t(50, Alert), t(80, Alert)]).is_ok());
    }

    #[test]
    fn thresholds_parse_strictly_and_validate() {
        #[derive(Deserialize)]
        struct Cfg {
            thresholds: Thresholds,
        }
        let ok: Cfg = toml::from_str(
            "thresholds = [{ at_percent = 100, action = \"block\" }, \
             { at_percent = 50, action = \"alert\" }]",
        )
        .unwrap();
        assert_eq!(ok.thresholds.as_slice(), &[t(50, Alert), t(100, Block)]);
        let bad = [
            "thresholds = [{ at_percent = 0, action = \"block\" }]",
            "thresholds = [{ at_percent = 50, action = \"Block\" }]",
            "thresholds = [{ at_percent = 50, action = \"alert\", extra = 1 }]",
            "thresholds = [{ at_percent = 50, action = \"alert\" }, \
             { at_percent = 50, action = \"block\" }]",
        ];
        for s in bad {
            assert!(toml::from_str::<Cfg>(s).is_err(), "{s}");
        }
        assert_eq!(serde_json::to_value(Restrict).unwrap(), json!("restrict"));
        assert_eq!(
            serde_json::to_value(Thresholds::default_set()).unwrap()[3],
            json!({"at_percent": 100, "action": "block"})
        );
    }

    #[test]
    fn actions_are_ordered_by_strength_and_labelled() {
        assert!(Alert < Throttle && Throttle < Restrict && Restrict < Block);
        let labels: Vec<_> = [Alert, Throttle, Restrict, Block]
            .iter()
            .map(|a| a.as_str())
            .collect();
        assert_eq!(labels, ["alert", "throttle", "restrict", "block"]);
    }

    #[test]
    fn effects_climb_the_ladder() {
        let e = |throttle_factor_percent, restrict, block| Effects {
            throttle_factor_percent,
            restrict,
            block,
        };
        assert_eq!(effects(None, 50), e(100, false, false));
        assert_eq!(effects(Some(Alert), 50), e(100, false, false));
        assert_eq!(effects(Some(Throttle), 50), e(50, false, false));
        assert_eq!(effects(Some(Restrict), 25), e(25, true, false));
        assert_eq!(effects(Some(Block), 50), e(50, true, true));
        // Out of range: never a zero rate (that would be a block) nor a raise.
        assert_eq!(effects(Some(Throttle), 0).throttle_factor_percent, 1);
        assert_eq!(effects(Some(Throttle), 200).throttle_factor_percent, 100);
        assert_eq!(
            effects(Some(Throttle), DEFAULT_THROTTLE_PERCENT).throttle_factor_percent,
            50
        );
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn any(_: &str) -> bool {
        true
    }

    #[test]
    fn downgrades_route_one_hop() {
        let d = Downgrades::new(
            map(&[("gpt-4o", "gpt-4o-mini"), ("gpt-4o-mini", "tiny")]),
            &any,
        )
        .unwrap();
        assert_eq!(d.target("gpt-4o"), Some("gpt-4o-mini"));
        assert_eq!(d.target("gpt-4o-mini"), Some("tiny"));
        assert_eq!(d.target("tiny"), None);
        assert_eq!(Downgrades::default().target("gpt-4o"), None);
    }

    #[test]
    fn downgrade_cycles_are_refused() {
        let two = Downgrades::new(map(&[("a", "b"), ("b", "a")]), &any);
        assert_eq!(
            two,
            Err(PolicyError::Cycle {
                models: vec!["a".into(), "b".into(), "a".into()]
            })
        );
        assert_eq!(two.unwrap_err().to_string(), "downgrades loop: a → b → a");
        let own = Downgrades::new(map(&[("a", "a")]), &any);
        assert_eq!(
            own,
            Err(PolicyError::Cycle {
                models: vec!["a".into(), "a".into()]
            })
        );
        // A chain leading into a loop names the loop only.
        let tail = Downgrades::new(map(&[("a", "b"), ("b", "c"), ("c", "d"), ("d", "c")]), &any);
        assert_eq!(
            tail,
            Err(PolicyError::Cycle {
                models: vec!["c".into(), "d".into(), "c".into()]
            })
        );
        // Chains that merge are fine.
        assert!(Downgrades::new(map(&[("a", "c"), ("b", "c"), ("c", "d")]), &any).is_ok());
    }

    #[test]
    fn downgrade_targets_must_exist() {
        let known = |m: &str| matches!(m, "big" | "small");
        let d = Downgrades::new(map(&[("big", "smol")]), &known);
        assert_eq!(
            d,
            Err(PolicyError::UnknownTarget {
                from: "big".into(),
                to: "smol".into()
            })
        );
        assert_eq!(
            d.unwrap_err().to_string(),
            "downgrade `big` → `smol` names model `smol`, which is not configured"
        );
        assert!(Downgrades::new(map(&[("big", "small")]), &known).is_ok());
    }

    #[test]
    fn webhook_body_has_the_shape_and_dollars() {
        let f = Fired {
            key: key(),
            action: Alert,
            at_percent: 80,
            used: 80_500_000_000,
            max: 100_000_000_000,
            window_end_ms: 1_767_225_600_000,
        };
        assert_eq!(
            webhook_body(&f),
            json!({
                "event": "budget_threshold",
                "scope": {"kind": "key", "id": "k_1"},
                "measure": "spend",
                "period": "month",
                "action": "alert",
                "at_percent": 80,
                "used_usd": 80.5,
                "max_usd": 100.0,
                "used": 80_500_000_000u64,
                "max": 100_000_000_000u64,
                "window_end_unix_ms": 1_767_225_600_000u64,
            })
        );
        // Global scope: no id. Total period: no end. Not spend: no dollars.
        let g = Fired {
            key: MeterKey::new(Scope::Global, Measure::Tokens, Period::Total),
            action: Block,
            at_percent: 100,
            used: 7,
            max: 7,
            window_end_ms: u64::MAX,
        };
        let b = webhook_body(&g);
        assert_eq!(b["scope"], json!({"kind": "global", "id": null}));
        assert_eq!(b["used_usd"], Value::Null);
        assert_eq!(b["max_usd"], Value::Null);
        assert_eq!((b["used"].as_u64(), b["max"].as_u64()), (Some(7), Some(7)));
        assert_eq!(b["window_end_unix_ms"], Value::Null);
        assert_eq!(b["action"], json!("block"));
    }

    /// A small ladder for the property: any valid set from 1..=100.
    fn ladder() -> impl Strategy<Value = Thresholds> {
        proptest::collection::btree_map(
            1u8..=100,
            prop_oneof![Just(Alert), Just(Throttle), Just(Restrict), Just(Block)],
            0..6,
        )
        .prop_map(|m| {
            Thresholds::new(m.into_iter().map(|(p, a)| t(p, a)).collect()).unwrap_or_default()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// For any sequence of observations (windows mostly advancing, sometimes stale;
        /// used and max anywhere, max sometimes 0): every (window, threshold) fires at most
        /// once, in order within a call, and by a window's end every threshold crossed by
        /// some observation of it (not stale) has fired.
        #[test]
        fn each_threshold_fires_once_and_surely(
            th in ladder(),
            steps in proptest::collection::vec(
                (0u64..4, 0u64..=1300, prop_oneof![Just(0u64), Just(1000u64), Just(997u64), 1u64..2000]),
                1..60,
            ),
        ) {
            let mut w = Watch::new();
            let mut window = 100u64;
            let mut latest = 0u64;
            let mut fired: BTreeSet<(u64, u8)> = BTreeSet::new();
            let mut due: BTreeSet<(u64, u8)> = BTreeSet::new();
            let mut hi = (u64::MAX, 0u64);
            for (step, used, max) in steps {
                // 0: stay, 1: next window, 2: stale (an earlier window), 3: stay.
                let win = match step {
                    1 => { window += 1; window }
                    2 => window - 1,
                    _ => window,
                };
                let out = w.observe(&th, &key(), win, win + 1, used, max);
                let stale = win < latest;
                latest = latest.max(win);
                if stale {
                    prop_assert!(out.is_empty());
                    prop_assert_eq!(w.in_force(win), None);
                    continue;
                }
                prop_assert!(out.windows(2).all(|p| p[0].at_percent < p[1].at_percent));
                for f in &out {
                    prop_assert!(fired.insert((win, f.at_percent)), "fired twice: {:?}", (win, f.at_percent));
                    prop_assert!(crossed(f.at_percent, f.used, f.max));
                    prop_assert_eq!(f.window_end_ms, win + 1);
                }
                for x in th.as_slice() {
                    let hit = if max == 0 { x.at_percent == 100 }
                        else { u128::from(used) * 100 >= u128::from(x.at_percent) * u128::from(max) };
                    if hit {
                        due.insert((win, x.at_percent));
                    }
                }
                // In force: the strongest rung crossed by the highest used of the window.
                if hi.0 != win {
                    hi = (win, 0);
                }
                hi.1 = hi.1.max(used);
                let want = th
                    .as_slice()
                    .iter()
                    .filter(|x| crossed(x.at_percent, hi.1, max))
                    .map(|x| x.action)
                    .max();
                prop_assert_eq!(w.in_force(win), want);
            }
            prop_assert!(due.is_subset(&fired), "due {:?} fired {:?}", due, fired);
        }
    }
}
