//! Spend: the one money type ([`Cost`]) and the price table that turns usage into it.
//!
//! Owns: [`Cost`] (integer nano-dollars, so sums are exact), [`pricing::Price`] and the cost
//! of a [`crate::api::Usage`].
//! Does not: enforce budgets (the budgeter actor will) or know any provider's prices (they
//! come from the config).
//! Key types: [`Cost`], [`pricing::Price`].

pub mod pricing;
pub mod spec;

/// An amount of money in nano-US-dollars (10⁻⁹ USD). Integer, so shard sums are exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Cost(pub u64);

impl Cost {
    /// In dollars, for display.
    pub fn usd(self) -> f64 {
        self.0 as f64 / 1e9
    }
}

impl std::ops::Add for Cost {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self(self.0.saturating_add(o.0))
    }
}
