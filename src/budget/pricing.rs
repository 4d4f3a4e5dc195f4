//! Prices per model, from the config, and the cost of an answer's usage.

use super::Cost;
use crate::api::Usage;

/// A model's prices, in pico-dollars (10⁻¹² USD) per token, which is dollars per million
/// tokens times 10⁶: exact for prices given to six decimals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    /// Input tokens not read from the cache.
    pub input: u64,
    /// Input tokens read from the provider's cache.
    pub cached_input: u64,
    /// Output tokens (reasoning included).
    pub output: u64,
}

/// Dollars per million tokens as pico-dollars per token; `None` for a negative, non-finite
/// or absurd (over $1M per million tokens) price.
pub fn per_token(usd_per_million: f64) -> Option<u64> {
    (usd_per_million.is_finite() && (0.0..=1e6).contains(&usd_per_million))
        .then(|| (usd_per_million * 1e6).round() as u64)
}

impl Price {
    /// The cost of `usage` at these prices.
    pub fn cost(&self, usage: &Usage) -> Cost {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let fresh = usage.input_tokens - cached;
        let pico = u128::from(fresh) * u128::from(self.input)
            + u128::from(cached) * u128::from(self.cached_input)
            + u128::from(usage.output_tokens) * u128::from(self.output);
        // Round to the nearest nano-dollar.
        Cost(u64::try_from((pico + 500) / 1000).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_split_cached_input() {
        // $3 / $15 per million, cached input $0.30.
        let p = Price {
            input: per_token(3.0).unwrap(),
            cached_input: per_token(0.3).unwrap(),
            output: per_token(15.0).unwrap(),
        };
        let u = Usage {
            input_tokens: 1_000,
            output_tokens: 200,
            cached_input_tokens: 400,
            reasoning_tokens: 50,
        };
        // 600 × 3e-6 + 400 × 0.3e-6 + 200 × 15e-6 = 0.0018 + 0.00012 + 0.003 = $0.00492
        assert_eq!(p.cost(&u), Cost(4_920_000));
        assert!((p.cost(&u).usd() - 0.00492).abs() < 1e-12);
        // Cheap models keep their precision: $0.075 per million, one token.
        let cheap = Price {
            input: per_token(0.075).unwrap(),
            ..Price::default()
        };
        let one = Usage {
            input_tokens: 1,
            ..Usage::default()
        };
        assert_eq!(cheap.cost(&one), Cost(75));
        assert_eq!(per_token(-1.0), None);
        assert_eq!(per_token(f64::NAN), None);
    }
}
