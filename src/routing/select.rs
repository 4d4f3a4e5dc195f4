//! Balancing strategies: order one model's eligible deployments, best first. The first is
//! the one tried; the others are where a failed attempt goes next.
//!
//! Pure: randomness comes in as a seeded [`fastrand::Rng`], the per-shard cursor state as
//! [`Cursor`].

use serde::{Deserialize, Serialize};

use crate::DeploymentIdx;

/// How a model spreads its requests over its deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// In proportion to `weight` (smooth weighted round robin: exact, no clumping).
    Weighted,
    /// One after the other.
    RoundRobin,
    /// The lowest latency (peak EWMA of time to first token for streams, of the whole answer
    /// otherwise; a failure counts as 5 s), by power of two choices so that equals share.
    /// The default: in `scripts/strategies.sh` it matched `score` where latencies differ and
    /// beat it where the fast deployment fails now and then (no retries, a third of the p99),
    /// and it learns on each shard from the first failure without a window to fill.
    #[default]
    LowestLatency,
    /// The fewest requests in flight (this shard's exactly, other shards' from the snapshot),
    /// by power of two choices.
    LeastBusy,
    /// The lowest price × expected tokens; equals share.
    LowestCost,
    /// The design's blend (latency .4, quality .3, cost .2, availability .1), by power of two
    /// choices among trusted deployments; untrusted ones get a share of exploration traffic.
    Score,
}

impl Strategy {
    /// Every strategy, for docs and metrics.
    pub const ALL: [Strategy; 6] = [
        Self::Weighted,
        Self::RoundRobin,
        Self::LowestLatency,
        Self::LeastBusy,
        Self::LowestCost,
        Self::Score,
    ];

    /// The config and metrics name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Weighted => "weighted",
            Self::RoundRobin => "round_robin",
            Self::LowestLatency => "lowest_latency",
            Self::LeastBusy => "least_busy",
            Self::LowestCost => "lowest_cost",
            Self::Score => "score",
        }
    }
}

/// What the router knows of one eligible deployment when it chooses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The deployment.
    pub deployment: DeploymentIdx,
    /// Configured weight (`weighted`).
    pub weight: u32,
    /// Latency estimate in ms, `None` before any sample (`lowest_latency`).
    pub latency_ms: Option<f64>,
    /// Requests in flight (`least_busy`).
    pub in_flight: u32,
    /// Expected cost of this request in nano-USD, 0 when unpriced (`lowest_cost`).
    pub cost: u64,
    /// Blended score in 0..=1, `None` while untrusted (`score`).
    pub score: Option<f64>,
}

/// Per-model selection state a shard keeps between requests.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    next: usize,
    /// Smooth weighted round robin's running weights, by deployment.
    current: Vec<(DeploymentIdx, i64)>,
}

/// Share of `score` traffic sent to an untrusted deployment while any exists.
pub const EXPLORE_SHARE: f64 = 0.1;

/// Order `candidates` best first for `strategy`. Every candidate stays in the list.
pub fn order(
    strategy: Strategy,
    candidates: &mut [Candidate],
    cursor: &mut Cursor,
    rng: &mut fastrand::Rng,
) {
    if candidates.len() < 2 {
        return;
    }
    match strategy {
        Strategy::Weighted => {
            let first = smooth_weighted(candidates, cursor);
            candidates.swap(0, first);
            candidates[1..].sort_by_key(|c| std::cmp::Reverse(c.weight));
        }
        Strategy::RoundRobin => {
            let first = cursor.next % candidates.len();
            cursor.next = cursor.next.wrapping_add(1);
            candidates.rotate_left(first);
        }
        Strategy::LowestLatency => {
            // No sample yet counts as fastest: a new deployment gets measured.
            let key = |c: &Candidate| c.latency_ms.unwrap_or(0.0);
            two_choices_then_sorted(candidates, rng, key);
        }
        Strategy::LeastBusy => {
            two_choices_then_sorted(candidates, rng, |c| f64::from(c.in_flight));
        }
        Strategy::LowestCost => {
            // Equals share: shuffle, then a stable sort keeps ties in random order.
            rng.shuffle(candidates);
            candidates.sort_by_key(|c| c.cost);
        }
        Strategy::Score => {
            let untrusted = candidates.iter().filter(|c| c.score.is_none()).count();
            if untrusted > 0 && (untrusted == candidates.len() || rng.f64() < EXPLORE_SHARE) {
                let pick = rng.usize(..untrusted);
                candidates.sort_by_key(|c| c.score.is_some());
                candidates.swap(0, pick);
                candidates[1..].sort_by(score_desc);
            } else {
                // Trusted first, best first; the choice is between two trusted ones.
                candidates.sort_by(score_desc);
                let trusted = candidates.len() - untrusted;
                if trusted >= 2 {
                    two_choices_then_sorted(&mut candidates[..trusted], rng, |c| {
                        -c.score.unwrap_or(-1.0)
                    });
                }
            }
        }
    }
}

fn score_desc(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    let (a, b) = (a.score.unwrap_or(-1.0), b.score.unwrap_or(-1.0));
    b.total_cmp(&a)
}

/// Power of two choices on `key` (lower is better): two distinct candidates at random, the
/// better one first; the rest follow sorted by `key` (where failed attempts go next).
fn two_choices_then_sorted(
    candidates: &mut [Candidate],
    rng: &mut fastrand::Rng,
    key: impl Fn(&Candidate) -> f64,
) {
    let n = candidates.len();
    let a = rng.usize(..n);
    let b = (a + 1 + rng.usize(..n - 1)) % n;
    let first = if key(&candidates[b]) < key(&candidates[a]) {
        b
    } else {
        a
    };
    candidates.swap(0, first);
    candidates[1..].sort_by(|x, y| key(x).total_cmp(&key(y)));
}

/// Smooth weighted round robin (nginx's): every candidate gains its weight, the richest is
/// chosen and pays the total. Over any run the picks follow the weights exactly, spread out.
fn smooth_weighted(candidates: &[Candidate], cursor: &mut Cursor) -> usize {
    let total: i64 = candidates.iter().map(|c| i64::from(c.weight.max(1))).sum();
    let mut best = 0;
    let mut best_value = i64::MIN;
    for (i, c) in candidates.iter().enumerate() {
        let slot = match cursor.current.iter().position(|(d, _)| *d == c.deployment) {
            Some(p) => p,
            None => {
                cursor.current.push((c.deployment, 0));
                cursor.current.len() - 1
            }
        };
        let value = &mut cursor.current[slot].1;
        *value += i64::from(c.weight.max(1));
        if *value > best_value {
            best_value = *value;
            best = i;
        }
    }
    if let Some(slot) = cursor
        .current
        .iter_mut()
        .find(|(d, _)| *d == candidates[best].deployment)
    {
        slot.1 -= total;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{any, prop_assert_eq, proptest};

    fn cand(i: u32) -> Candidate {
        Candidate {
            deployment: DeploymentIdx(i),
            weight: 1,
            latency_ms: None,
            in_flight: 0,
            cost: 0,
            score: None,
        }
    }

    fn pick_counts(strategy: Strategy, base: &[Candidate], picks: usize, seed: u64) -> Vec<usize> {
        let mut counts = vec![0; base.len()];
        let mut cursor = Cursor::default();
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut list = base.to_vec();
        for _ in 0..picks {
            list.copy_from_slice(base);
            order(strategy, &mut list, &mut cursor, &mut rng);
            counts[list[0].deployment.get()] += 1;
        }
        counts
    }

    #[test]
    fn weighted_follows_the_weights_within_3_percent_over_100k_picks() {
        let weights = [1u32, 3, 6, 10];
        let base: Vec<_> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Candidate {
                weight: w,
                ..cand(i as u32)
            })
            .collect();
        let counts = pick_counts(Strategy::Weighted, &base, 100_000, 1);
        let total: u32 = weights.iter().sum();
        for (i, &w) in weights.iter().enumerate() {
            let want = 100_000.0 * f64::from(w) / f64::from(total);
            let got = counts[i] as f64;
            assert!((got - want).abs() <= want * 0.03, "{i}: {got} vs {want}");
        }
    }

    #[test]
    fn round_robin_takes_turns() {
        let base: Vec<_> = (0..3).map(cand).collect();
        assert_eq!(
            pick_counts(Strategy::RoundRobin, &base, 300, 1),
            [100, 100, 100]
        );
    }

    #[test]
    fn lowest_latency_prefers_the_fast_and_follows_with_the_rest_in_order() {
        let base = [
            Candidate {
                latency_ms: Some(50.0),
                ..cand(0)
            },
            Candidate {
                latency_ms: Some(5.0),
                ..cand(1)
            },
        ];
        assert_eq!(
            pick_counts(Strategy::LowestLatency, &base, 1000, 2),
            [0, 1000]
        );
        let three = [
            Candidate {
                latency_ms: Some(50.0),
                ..cand(0)
            },
            Candidate {
                latency_ms: Some(5.0),
                ..cand(1)
            },
            Candidate {
                latency_ms: Some(20.0),
                ..cand(2)
            },
        ];
        let counts = pick_counts(Strategy::LowestLatency, &three, 3000, 3);
        // Power of two choices: the slowest is never first, the fastest most often.
        assert_eq!(counts[0], 0);
        assert!(counts[1] > counts[2] && counts[2] > 0, "{counts:?}");
        let mut list = three;
        order(
            Strategy::LowestLatency,
            &mut list,
            &mut Cursor::default(),
            &mut fastrand::Rng::with_seed(9),
        );
        let rest: Vec<_> = list[1..].iter().map(|c| c.latency_ms.unwrap()).collect();
        assert!(rest[0] <= rest[1], "{rest:?}");
    }

    #[test]
    fn least_busy_spreads_and_lowest_cost_picks_the_cheapest() {
        let base = [
            Candidate {
                in_flight: 9,
                cost: 5,
                ..cand(0)
            },
            Candidate {
                in_flight: 1,
                cost: 7,
                ..cand(1)
            },
        ];
        assert_eq!(pick_counts(Strategy::LeastBusy, &base, 100, 4), [0, 100]);
        assert_eq!(pick_counts(Strategy::LowestCost, &base, 100, 4), [100, 0]);
        // Equal prices share.
        let tied = [cand(0), cand(1)];
        let counts = pick_counts(Strategy::LowestCost, &tied, 1000, 5);
        assert!(counts[0] > 400 && counts[1] > 400, "{counts:?}");
    }

    #[test]
    fn score_explores_untrusted_deployments_with_a_small_share() {
        let base = [
            Candidate {
                score: Some(0.9),
                ..cand(0)
            },
            Candidate {
                score: Some(0.5),
                ..cand(1)
            },
            cand(2),
        ];
        let counts = pick_counts(Strategy::Score, &base, 10_000, 6);
        assert_eq!(counts[1], 0, "{counts:?}");
        let explored = counts[2] as f64 / 10_000.0;
        assert!((explored - EXPLORE_SHARE).abs() < 0.02, "{counts:?}");
    }

    proptest! {
        /// Every strategy returns a permutation of its input: nothing dropped, nothing added.
        #[test]
        fn order_is_a_permutation(
            n in 1usize..12,
            seed in any::<u64>(),
            strategy in proptest::sample::select(Strategy::ALL.to_vec()),
            weights in proptest::collection::vec(0u32..20, 12),
            lat in proptest::collection::vec(proptest::option::of(0.0f64..1000.0), 12),
        ) {
            let mut list: Vec<Candidate> = (0..n)
                .map(|i| Candidate {
                    weight: weights[i],
                    latency_ms: lat[i],
                    in_flight: weights[i],
                    cost: u64::from(weights[i]),
                    score: lat[i].map(|l| l / 1000.0),
                    ..cand(i as u32)
                })
                .collect();
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut cursor = Cursor::default();
            for _ in 0..3 {
                order(strategy, &mut list, &mut cursor, &mut rng);
            }
            let mut ids: Vec<u32> = list.iter().map(|c| c.deployment.0).collect();
            ids.sort_unstable();
            prop_assert_eq!(ids, (0..n as u32).collect::<Vec<_>>());
        }
    }
}
