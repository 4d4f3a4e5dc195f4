//! The router of one shard: rules filter a model's deployments, a strategy orders them, and
//! the result is a [`Plan`]: the model's deployments, then its fallback models'.
//!
//! Pure: time and randomness come in as arguments ([`Router::plan`] takes `now`; the router
//! owns a seeded RNG). The shard keeps the live figures the strategies need (its own breakers,
//! latency estimates, requests in flight) and folds in the scorer's merged view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::breaker::{Admit, Breaker, BreakerState};
use super::select::{self, Candidate, Cursor, Strategy};
use crate::config::{Capabilities, Config, ModelRoute};
use crate::scoring::Ewma;
use crate::{DeploymentIdx, ModelIdx};

/// Latency a failed attempt counts as, so that a failing deployment never looks fast.
pub const FAILURE_LATENCY: Duration = Duration::from_secs(5);
/// Decay of the per-shard latency estimate (a peak EWMA: up at once, down over this).
pub const LATENCY_TAU: Duration = Duration::from_secs(5);

/// What a request needs from a deployment (by default: nothing but plain chat).
#[derive(Debug, Clone, Copy)]
pub struct Needs<'a> {
    /// Capabilities the request uses.
    pub caps: Capabilities,
    /// Estimated prompt tokens.
    pub prompt_tokens: u32,
    /// Tags every deployment tried must carry.
    pub tags: &'a [&'a str],
    /// Deployment ids the request pins, in its preferred order (only where allowed).
    pub pin: &'a [&'a str],
    /// A stream (latency is time to first token) or a whole answer (total time).
    pub stream: bool,
    /// The request's `max_tokens`, if set (a deployment's token limit reserves it).
    pub max_tokens: Option<u64>,
}

impl Default for Needs<'_> {
    fn default() -> Self {
        Self {
            caps: Capabilities::NONE,
            prompt_tokens: 0,
            tags: &[],
            pin: &[],
            stream: false,
            max_tokens: None,
        }
    }
}

/// Why a deployment is not in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// It lacks a capability the request uses.
    Capabilities,
    /// The request is over its context window.
    ContextWindow,
    /// It lacks a tag the request asks for.
    Tags,
    /// The request pins other deployments.
    NotPinned,
    /// Its breaker is open (here or in the scorer's merged view).
    Ejected,
    /// It asked to be left alone (`Retry-After`) until a later time.
    RetryAfter,
    /// It is at `max_in_flight` on this shard.
    Saturated,
}

/// One attempt of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The public model it serves (the asked one, or a fallback).
    pub model: ModelIdx,
    /// The deployment to try.
    pub deployment: DeploymentIdx,
}

/// The ordered attempts for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Best first.
    pub steps: Vec<Step>,
    /// Deployments left out only because they are busy or cooling down: the request may
    /// wait for one instead of failing.
    pub waitable: bool,
    /// The earliest a deployment left out for its `Retry-After` takes requests again.
    pub retry_at: Option<Instant>,
}

/// What a shard knows of one deployment.
#[derive(Debug, Clone)]
pub struct Live {
    /// This shard's breaker.
    pub breaker: Breaker,
    /// Peak EWMA of time to first token (streams), ms.
    pub ttft: Ewma,
    /// Peak EWMA of total time (whole answers), ms.
    pub total: Ewma,
    /// Requests in flight from this shard.
    pub in_flight: u32,
    /// Requests in flight from the other shards (last snapshot).
    pub in_flight_elsewhere: u32,
    /// Not before this (a 429's `Retry-After`).
    pub not_before: Option<Instant>,
    /// The scorer's merged verdict: ejected until then.
    pub merged_open_until: Option<Instant>,
    /// The scorer's blended score, when trusted.
    pub score: Option<f64>,
}

/// A model's deployment as `/admin/routes` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RouteRow {
    /// Deployment id.
    pub deployment: String,
    /// Breaker state here.
    pub breaker: BreakerState,
    /// Latency estimate (ms) the strategies use.
    pub latency_ms: Option<f64>,
    /// In flight, this shard and the others.
    pub in_flight: u32,
    /// The scorer's score, when trusted.
    pub score: Option<f64>,
    /// Why it would not be chosen for a plain request now (`None`: eligible).
    pub skip: Option<Skip>,
}

/// One shard's router.
#[derive(Debug)]
pub struct Router {
    config: Arc<Config>,
    live: Vec<Live>,
    cursors: Vec<Cursor>,
    rng: fastrand::Rng,
    /// An in-flight count changed since [`Router::take_load`] last ran.
    load_changed: bool,
}

impl Router {
    /// A router for `config`, its randomness seeded with `seed`.
    pub fn new(config: Arc<Config>, seed: u64) -> Self {
        let live = config
            .deployments
            .iter()
            .map(|_| Live {
                breaker: Breaker::new(config.routing.breaker),
                ttft: Ewma::new(LATENCY_TAU),
                total: Ewma::new(LATENCY_TAU),
                in_flight: 0,
                in_flight_elsewhere: 0,
                not_before: None,
                merged_open_until: None,
                score: None,
            })
            .collect();
        let cursors = vec![Cursor::default(); config.models.len()];
        Self {
            config,
            live,
            cursors,
            rng: fastrand::Rng::with_seed(seed),
            load_changed: false,
        }
    }

    /// This shard's in-flight count per deployment (`DeploymentIdx` order), when one changed
    /// since the last call: what the shard reports for the other shards' `least_busy`.
    pub fn take_load(&mut self) -> Option<Vec<u32>> {
        if !std::mem::take(&mut self.load_changed) {
            return None;
        }
        Some(self.live.iter().map(|l| l.in_flight).collect())
    }

    /// A uniform random number in `0..1` from the router's seeded generator (backoff jitter).
    pub fn random(&mut self) -> f64 {
        self.rng.f64()
    }

    /// The live figures of a deployment.
    pub fn live(&self, d: DeploymentIdx) -> Option<&Live> {
        self.live.get(d.get())
    }

    /// The live figures of a deployment, to update from a snapshot.
    pub fn live_mut(&mut self, d: DeploymentIdx) -> Option<&mut Live> {
        self.live.get_mut(d.get())
    }

    /// Why `d` cannot serve this request now, if it cannot.
    pub fn skip(
        &self,
        d: DeploymentIdx,
        model: &ModelRoute,
        needs: &Needs,
        now: Instant,
    ) -> Option<Skip> {
        let (Some(dep), Some(live)) =
            (self.config.deployments.get(d.get()), self.live.get(d.get()))
        else {
            return Some(Skip::Ejected);
        };
        if !dep.caps.covers(needs.caps) {
            return Some(Skip::Capabilities);
        }
        if dep
            .max_context_tokens
            .is_some_and(|max| needs.prompt_tokens > max)
        {
            return Some(Skip::ContextWindow);
        }
        if !dep.has_tags(needs.tags.iter().copied()) {
            return Some(Skip::Tags);
        }
        if model.allow_pin && !needs.pin.is_empty() && !needs.pin.contains(&dep.id.as_str()) {
            return Some(Skip::NotPinned);
        }
        if live.breaker.state(now) == BreakerState::Open
            || live.merged_open_until.is_some_and(|t| now < t)
        {
            return Some(Skip::Ejected);
        }
        if live.not_before.is_some_and(|t| now < t) {
            return Some(Skip::RetryAfter);
        }
        if dep.max_in_flight.is_some_and(|max| live.in_flight >= max) {
            return Some(Skip::Saturated);
        }
        None
    }

    /// The plan for a request to `model`: its eligible deployments ordered by its strategy,
    /// then each fallback model's the same way (a deployment appears once).
    pub fn plan(&mut self, model: ModelIdx, needs: &Needs, now: Instant) -> Plan {
        let mut plan = Plan::default();
        let config = self.config.clone();
        let Some(first) = config.models.get(model.get()) else {
            return plan;
        };
        self.extend(&mut plan, model, needs, now);
        for &m in &first.fallbacks {
            self.extend(&mut plan, m, needs, now);
        }
        plan
    }

    /// Add `model`'s eligible deployments (not already planned) to `plan`, best first.
    pub fn extend(&mut self, plan: &mut Plan, model: ModelIdx, needs: &Needs, now: Instant) {
        let config = self.config.clone();
        let Some(route) = config.models.get(model.get()) else {
            return;
        };
        let mut candidates: Vec<Candidate> = Vec::with_capacity(route.deployments.len());
        for &d in &route.deployments {
            if plan.steps.iter().any(|s| s.deployment == d) {
                continue;
            }
            match self.skip(d, route, needs, now) {
                None => candidates.push(self.candidate(d, route.strategy, needs, now)),
                Some(Skip::RetryAfter) => {
                    plan.waitable = true;
                    let at = self.live[d.get()].not_before;
                    plan.retry_at = match (plan.retry_at, at) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                Some(Skip::Saturated | Skip::Ejected) => plan.waitable = true,
                Some(_) => {}
            }
        }
        let cursor = &mut self.cursors[model.get()];
        if route.allow_pin && !needs.pin.is_empty() {
            // The request's own order.
            candidates.sort_by_key(|c| {
                let id = config.deployments[c.deployment.get()].id.as_str();
                needs.pin.iter().position(|p| *p == id)
            });
        } else {
            select::order(route.strategy, &mut candidates, cursor, &mut self.rng);
        }
        plan.steps.extend(candidates.iter().map(|c| Step {
            model,
            deployment: c.deployment,
        }));
    }

    fn candidate(
        &self,
        d: DeploymentIdx,
        strategy: Strategy,
        needs: &Needs,
        now: Instant,
    ) -> Candidate {
        let dep = &self.config.deployments[d.get()];
        let live = &self.live[d.get()];
        let latency = if needs.stream {
            &live.ttft
        } else {
            &live.total
        };
        let expected_output = 500u64;
        // Only `lowest_cost` reads it (a 128-bit division per candidate otherwise).
        let price = dep.price.filter(|_| strategy == Strategy::LowestCost);
        let cost = price.map_or(0, |p| {
            p.cost(&crate::api::Usage {
                input_tokens: u64::from(needs.prompt_tokens),
                output_tokens: expected_output,
                ..crate::api::Usage::default()
            })
            .0
        });
        Candidate {
            deployment: d,
            weight: dep.weight,
            // Read at `now`: a deployment left alone since it was slow is measured again
            // once its old figure has decayed below the others' (else it never would be).
            latency_ms: latency.get_at(now),
            in_flight: live.in_flight.saturating_add(live.in_flight_elsewhere),
            cost,
            score: live.score,
        }
    }

    /// An attempt at `d` starts: may it go (and is it the half-open probe)? `None`: its
    /// breaker has a probe out already; try the next step.
    pub fn start(&mut self, d: DeploymentIdx, now: Instant) -> Option<bool> {
        let live = self.live.get_mut(d.get())?;
        let probe = match live.breaker.admit(now) {
            Admit::Yes => false,
            Admit::Probe => true,
            Admit::No => return None,
        };
        live.in_flight = live.in_flight.saturating_add(1);
        self.load_changed = true;
        Some(probe)
    }

    /// An attempt at `d` ended. `ok: None` says nothing of its health (the client left);
    /// `latency` is time to first token for streams, total time otherwise. Returns the
    /// breaker's new state when it changed.
    pub fn end(
        &mut self,
        d: DeploymentIdx,
        ok: Option<bool>,
        probe: bool,
        latency: Duration,
        stream: bool,
        now: Instant,
    ) -> Option<BreakerState> {
        let may_eject = self.may_eject(d, now);
        let live = self.live.get_mut(d.get())?;
        live.in_flight = live.in_flight.saturating_sub(1);
        self.load_changed = true;
        let Some(ok) = ok else {
            if probe {
                live.breaker.release_probe();
            }
            return None;
        };
        let sample = if ok {
            latency
        } else {
            latency.max(FAILURE_LATENCY)
        };
        let ms = sample.as_secs_f64() * 1e3;
        if stream {
            live.ttft.observe_peak(ms, now);
        } else {
            live.total.observe_peak(ms, now);
        }
        live.breaker.record(ok, probe, may_eject, now)
    }

    /// Would ejecting `d` leave one of its models without a deployment taking traffic?
    fn may_eject(&self, d: DeploymentIdx, now: Instant) -> bool {
        let Some(dep) = self.config.deployments.get(d.get()) else {
            return false;
        };
        dep.models.iter().all(|m| {
            self.config.models.get(m.get()).is_some_and(|route| {
                route.deployments.iter().any(|&other| {
                    other != d
                        && self.live.get(other.get()).is_some_and(|l| {
                            l.breaker.state(now) != BreakerState::Open
                                && l.merged_open_until.is_none_or(|t| now >= t)
                        })
                })
            })
        })
    }

    /// Each deployment of `model`, as `/admin/routes` shows it.
    pub fn explain(&self, model: ModelIdx, now: Instant) -> Vec<RouteRow> {
        let Some(route) = self.config.models.get(model.get()) else {
            return Vec::new();
        };
        let needs = Needs::default();
        route
            .deployments
            .iter()
            .filter_map(|&d| {
                let dep = self.config.deployments.get(d.get())?;
                let live = self.live.get(d.get())?;
                Some(RouteRow {
                    deployment: dep.id.to_string(),
                    breaker: live.breaker.state(now),
                    latency_ms: live.total.get().or(live.ttft.get()),
                    in_flight: live.in_flight.saturating_add(live.in_flight_elsewhere),
                    score: live.score,
                    skip: self.skip(d, route, &needs, now),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop_assert, proptest};

    const CONFIG: &str = r#"
[providers.a]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[providers.b]
kind = "openai"
base_url = "http://127.0.0.1:10/v1"

[models.main]
strategy = "round_robin"
fallbacks = ["spare"]
allow_pin = true
[[models.main.deployments]]
id = "one"
provider = "a"
model = "m1"
max_in_flight = 1
tags = ["eu"]
[[models.main.deployments]]
id = "two"
provider = "b"
model = "m2"
vision = false
max_context_tokens = 1000
[[models.main.deployments]]
id = "three"
provider = "b"
model = "m3"

[models.spare]
provider = "a"
model = "s"

[routing.breaker]
consecutive_failures = 2
"#;

    fn router() -> (Router, Arc<Config>) {
        let config = Arc::new(Config::from_toml(CONFIG, "test", &|_| None).unwrap());
        (Router::new(config.clone(), 7), config)
    }

    fn idx(config: &Config, id: &str) -> DeploymentIdx {
        config.deployment_by_id(id).unwrap().0
    }

    fn model(config: &Config, name: &str) -> ModelIdx {
        config.model(name).unwrap().idx()
    }

    fn ids(config: &Config, plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .map(|s| config.deployments[s.deployment.get()].id.to_string())
            .collect()
    }

    #[test]
    fn a_plan_is_the_models_deployments_then_its_fallbacks() {
        let (mut r, c) = router();
        let now = Instant::now();
        let main = model(&c, "main");
        let plan = r.plan(main, &Needs::default(), now);
        assert_eq!(plan.steps.len(), 4);
        assert_eq!(ids(&c, &plan)[3], "a/s", "the fallback comes last");
        assert!(plan.steps[..3].iter().all(|s| s.model == main));
        // Round robin: the next plan starts elsewhere.
        let next = r.plan(main, &Needs::default(), now);
        assert_ne!(ids(&c, &plan)[0], ids(&c, &next)[0]);
    }

    #[test]
    fn the_load_is_reported_once_per_change() {
        let (mut r, c) = router();
        let now = Instant::now();
        let (one, three) = (idx(&c, "one"), idx(&c, "three"));
        assert_eq!(r.take_load(), None, "nothing changed yet");
        r.start(one, now);
        r.start(three, now);
        r.start(three, now);
        let load = r.take_load().unwrap();
        assert_eq!((load[one.get()], load[three.get()]), (1, 2));
        assert_eq!(load.iter().sum::<u32>(), 3);
        assert_eq!(r.take_load(), None);
        r.end(three, None, false, Duration::ZERO, false, now);
        assert_eq!(r.take_load().unwrap()[three.get()], 1);
    }

    #[test]
    fn rules_filter_by_capability_context_tags_and_pin() {
        let (mut r, c) = router();
        let now = Instant::now();
        let main = model(&c, "main");
        let vision = Needs {
            caps: Capabilities {
                vision: true,
                ..Capabilities::NONE
            },
            ..Needs::default()
        };
        let plan = ids(&c, &r.plan(main, &vision, now));
        assert!(!plan.contains(&"two".to_owned()), "{plan:?}");
        let long = Needs {
            prompt_tokens: 5000,
            ..Needs::default()
        };
        assert!(!ids(&c, &r.plan(main, &long, now)).contains(&"two".to_owned()));
        let eu = Needs {
            tags: &["eu"],
            ..Needs::default()
        };
        assert_eq!(ids(&c, &r.plan(main, &eu, now)), ["one"]);
        let pinned = Needs {
            pin: &["three", "one"],
            ..Needs::default()
        };
        assert_eq!(ids(&c, &r.plan(main, &pinned, now))[..2], ["three", "one"]);
    }

    #[test]
    fn ejected_and_saturated_deployments_are_left_out_and_waitable() {
        let (mut r, c) = router();
        let now = Instant::now();
        let main = model(&c, "main");
        let (one, two) = (idx(&c, "one"), idx(&c, "two"));
        // `one` allows one request in flight.
        assert_eq!(r.start(one, now), Some(false));
        let plan = r.plan(main, &Needs::default(), now);
        assert!(!ids(&c, &plan).contains(&"one".to_owned()));
        assert!(plan.waitable);
        r.end(one, Some(true), false, Duration::from_millis(5), false, now);
        // Two failures eject `two`; its cooldown keeps it out.
        for _ in 0..2 {
            r.start(two, now);
            r.end(
                two,
                Some(false),
                false,
                Duration::from_millis(5),
                false,
                now,
            );
        }
        assert_eq!(r.live(two).unwrap().breaker.state(now), BreakerState::Open);
        assert!(!ids(&c, &r.plan(main, &Needs::default(), now)).contains(&"two".to_owned()));
        // After the cooldown, one probe at a time.
        let later = r.live(two).unwrap().breaker.open_until().unwrap();
        assert!(ids(&c, &r.plan(main, &Needs::default(), later)).contains(&"two".to_owned()));
        assert_eq!(r.start(two, later), Some(true));
        assert_eq!(r.start(two, later), None);
        let closed = r.end(
            two,
            Some(true),
            true,
            Duration::from_millis(5),
            false,
            later,
        );
        assert_eq!(closed, Some(BreakerState::Closed));
    }

    #[test]
    fn the_last_healthy_deployment_of_a_model_is_never_ejected() {
        let (mut r, c) = router();
        let now = Instant::now();
        let spare = idx(&c, "a/s");
        for _ in 0..20 {
            r.start(spare, now);
            r.end(
                spare,
                Some(false),
                false,
                Duration::from_millis(5),
                false,
                now,
            );
        }
        assert_eq!(
            r.live(spare).unwrap().breaker.state(now),
            BreakerState::Closed
        );
        // Of `main`'s three, two may go; the third stays.
        let all = ["one", "two", "three"].map(|id| idx(&c, id));
        for d in all {
            for _ in 0..2 {
                r.start(d, now);
                r.end(d, Some(false), false, Duration::from_millis(5), false, now);
            }
        }
        let open = all
            .iter()
            .filter(|&&d| r.live(d).unwrap().breaker.state(now) == BreakerState::Open)
            .count();
        assert_eq!(open, 2);
    }

    #[test]
    fn a_failure_makes_a_deployment_look_slow_at_once() {
        let (mut r, c) = router();
        let now = Instant::now();
        let one = idx(&c, "one");
        r.start(one, now);
        r.end(one, Some(true), false, Duration::from_millis(5), false, now);
        r.start(one, now);
        r.end(
            one,
            Some(false),
            false,
            Duration::from_millis(5),
            false,
            now,
        );
        let ms = r.live(one).unwrap().total.get().unwrap();
        assert!(ms >= FAILURE_LATENCY.as_secs_f64() * 1e3, "{ms}");
    }

    #[test]
    fn lowest_latency_measures_a_slow_deployment_again_once_its_figure_has_decayed() {
        let config = r#"
[providers.a]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[models.m]
strategy = "lowest_latency"
[[models.m.deployments]]
id = "was-slow"
provider = "a"
model = "x"
[[models.m.deployments]]
id = "now-slow"
provider = "a"
model = "y"
"#;
        let c = Arc::new(Config::from_toml(config, "test", &|_| None).unwrap());
        let mut r = Router::new(c.clone(), 3);
        let (m, was, now_slow) = (model(&c, "m"), idx(&c, "was-slow"), idx(&c, "now-slow"));
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // `was-slow` answered in 60 ms once; `now-slow` in 5 ms, then turns slow (50 ms).
        for (d, latency) in [(was, ms(60)), (now_slow, ms(5)), (now_slow, ms(50))] {
            r.start(d, t0);
            r.end(d, Some(true), false, latency, false, t0);
        }
        let first = |r: &mut Router, at| ids(&c, &r.plan(m, &Needs::default(), at))[0].clone();
        assert_eq!(first(&mut r, t0), "now-slow");
        // `now-slow` keeps answering in 50 ms; nobody measures `was-slow` again, so its
        // figure decays until it is tried.
        let later = t0 + LATENCY_TAU;
        r.start(now_slow, later);
        r.end(now_slow, Some(true), false, ms(50), false, later);
        assert_eq!(first(&mut r, later), "was-slow");
    }

    proptest! {
        /// Whatever happened before, a plan never holds an ejected, filtered or duplicated
        /// deployment.
        #[test]
        fn plans_never_hold_an_ejected_or_filtered_deployment(
            events in proptest::collection::vec((0u32..4, any::<bool>(), 0u64..20), 0..60),
            vision in any::<bool>(),
            tagged in any::<bool>(),
        ) {
            let (mut r, c) = router();
            let t0 = Instant::now();
            let mut now = t0;
            for (d, ok, advance) in events {
                now += Duration::from_millis(advance * 500);
                let d = DeploymentIdx(d);
                if let Some(probe) = r.start(d, now) {
                    r.end(d, Some(ok), probe, Duration::from_millis(5), false, now);
                }
            }
            let tags: &[&str] = if tagged { &["eu"] } else { &[] };
            let needs = Needs {
                caps: Capabilities { vision, ..Capabilities::NONE },
                tags,
                ..Needs::default()
            };
            let main = model(&c, "main");
            let plan = r.plan(main, &needs, now);
            let mut seen = Vec::new();
            for s in &plan.steps {
                let route = &c.models[s.model.get()];
                prop_assert!(r.skip(s.deployment, route, &needs, now).is_none());
                prop_assert!(!seen.contains(&s.deployment));
                seen.push(s.deployment);
            }
        }
    }
}
