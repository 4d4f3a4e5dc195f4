//! One scope's limits and budgets as configured ([`LimitSet`]: requests, tokens, concurrency
//! and spend), and the meters they become ([`LimitSpec`]).

use serde::{Deserialize, Serialize};

use super::meter::{Limit, Measure, Period};

/// Limits and budgets of one scope (a key, a team, a model, each end user, or everything).
/// Every field is optional; none set means nothing is limited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSet {
    /// Requests per minute (a 60 s window from the first request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Requests per calendar day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpd: Option<u64>,
    /// Tokens (input + output) per minute: estimated at admission, corrected at settlement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u64>,
    /// Spend per calendar day, in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend_per_day_usd: Option<f64>,
    /// Spend per calendar month, in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend_per_month_usd: Option<f64>,
    /// Spend in all, in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend_total_usd: Option<f64>,
}

/// One configured meter of a scope: what it counts, over which period, and its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSpec {
    /// What is counted.
    pub measure: Measure,
    /// Over which period.
    pub period: Period,
    /// The cap.
    pub limit: Limit,
}

/// Largest spend cap, in dollars (a billion: far past any real budget, far inside `u64`
/// nano-dollars).
pub const MAX_SPEND_USD: f64 = 1e9;

/// A [`LimitSet`] field that cannot be a cap.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{field}` must be {expect}")]
pub struct BadLimit {
    /// The field's name.
    pub field: &'static str,
    /// What it must be.
    pub expect: &'static str,
}

impl LimitSet {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The meters of a set already validated by [`LimitSet::specs`], without allocating
    /// (the request path's form); a field that would not validate is skipped.
    pub fn each(&self, exact: bool) -> impl Iterator<Item = LimitSpec> + '_ {
        let counts = [
            (self.rpm, Measure::Requests, Period::Minute),
            (self.rpd, Measure::Requests, Period::Day),
            (self.tpm, Measure::Tokens, Period::Minute),
            (self.max_concurrent, Measure::Concurrent, Period::Total),
        ];
        let spends = [
            (self.spend_per_day_usd, Period::Day),
            (self.spend_per_month_usd, Period::Month),
            (self.spend_total_usd, Period::Total),
        ];
        let counted = counts
            .into_iter()
            .filter_map(move |(max, measure, period)| {
                max.filter(|m| *m > 0).map(|max| LimitSpec {
                    measure,
                    period,
                    limit: Limit { max, exact },
                })
            });
        let spent = spends.into_iter().filter_map(move |(usd, period)| {
            usd.filter(|u| u.is_finite() && (0.0..=MAX_SPEND_USD).contains(u))
                .map(|usd| LimitSpec {
                    measure: Measure::Spend,
                    period,
                    limit: Limit {
                        max: (usd * 1e9).round() as u64,
                        exact,
                    },
                })
        });
        counted.chain(spent)
    }

    /// The meters this set configures, each `exact` or not.
    pub fn specs(&self, exact: bool) -> Result<Vec<LimitSpec>, BadLimit> {
        let mut out = Vec::new();
        let counts = [
            ("rpm", self.rpm, Measure::Requests, Period::Minute),
            ("rpd", self.rpd, Measure::Requests, Period::Day),
            ("tpm", self.tpm, Measure::Tokens, Period::Minute),
            (
                "max_concurrent",
                self.max_concurrent,
                Measure::Concurrent,
                Period::Total,
            ),
        ];
        for (field, max, measure, period) in counts {
            let Some(max) = max else { continue };
            if max == 0 {
                return Err(BadLimit {
                    field,
                    expect: "at least 1 (leave it out for no limit)",
                });
            }
            out.push(LimitSpec {
                measure,
                period,
                limit: Limit { max, exact },
            });
        }
        let spends = [
            ("spend_per_day_usd", self.spend_per_day_usd, Period::Day),
            (
                "spend_per_month_usd",
                self.spend_per_month_usd,
                Period::Month,
            ),
            ("spend_total_usd", self.spend_total_usd, Period::Total),
        ];
        for (field, usd, period) in spends {
            let Some(usd) = usd else { continue };
            if !(usd.is_finite() && (0.0..=MAX_SPEND_USD).contains(&usd)) {
                return Err(BadLimit {
                    field,
                    expect: "a number of dollars from 0 to 1e9",
                });
            }
            out.push(LimitSpec {
                measure: Measure::Spend,
                period,
                limit: Limit {
                    max: (usd * 1e9).round() as u64,
                    exact,
                },
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_becomes_its_meters() {
        let set = LimitSet {
            rpm: Some(100),
            tpm: Some(10_000),
            max_concurrent: Some(4),
            spend_per_day_usd: Some(1.5),
            ..LimitSet::default()
        };
        let specs = set.specs(true).unwrap_or_default();
        let got: Vec<_> = specs
            .iter()
            .map(|s| (s.measure, s.period, s.limit.max, s.limit.exact))
            .collect();
        assert_eq!(
            got,
            vec![
                (Measure::Requests, Period::Minute, 100, true),
                (Measure::Tokens, Period::Minute, 10_000, true),
                (Measure::Concurrent, Period::Total, 4, true),
                (Measure::Spend, Period::Day, 1_500_000_000, true),
            ]
        );
        assert!(LimitSet::default().specs(false).is_ok_and(|s| s.is_empty()));
        assert_eq!(set.each(true).collect::<Vec<_>>(), specs, "the same meters");
        assert!(LimitSet::default().is_empty());
        assert!(!set.is_empty());
    }

    #[test]
    fn caps_that_cannot_be_are_refused() {
        let zero = LimitSet {
            rpm: Some(0),
            ..LimitSet::default()
        };
        assert_eq!(zero.specs(false).map_err(|e| e.field), Err("rpm"));
        for usd in [-1.0, f64::NAN, f64::INFINITY, 2e9] {
            let bad = LimitSet {
                spend_total_usd: Some(usd),
                ..LimitSet::default()
            };
            assert_eq!(
                bad.specs(false).map_err(|e| e.field),
                Err("spend_total_usd"),
                "{usd}"
            );
        }
        // A zero budget is allowed: it blocks every priced request.
        let none = LimitSet {
            spend_per_month_usd: Some(0.0),
            ..LimitSet::default()
        };
        assert!(none.specs(false).is_ok_and(|s| s[0].limit.max == 0));
    }
}
