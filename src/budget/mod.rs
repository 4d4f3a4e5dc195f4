//! Limits and spend: the one money type ([`Cost`]), the price table that turns usage into
//! it, and the pure counting core of limits and budgets (design: `docs/design/limits.md`).
//!
//! Owns: [`Cost`] (integer nano-dollars, so sums are exact), [`pricing::Price`] and the cost
//! of a [`crate::api::Usage`]; meters and limits ([`meter`]), their windows ([`period`]), the
//! node's authority over them ([`ledger::Ledger`], held by the budgeter actor only) and one
//! shard's leases on them ([`lease::Leases`]). All pure: time comes in as unix milliseconds.
//! What a budget does as it fills (alert, throttle, restrict, block, each once per window)
//! is [`policy`].
//! Does not: run anything, carry messages between shards and the budgeter, persist usage
//! (the budgeter actor does all three) or know any provider's prices (they come from the
//! config).
//! Key types: [`Cost`], [`pricing::Price`], [`meter::MeterKey`], [`meter::Limit`],
//! [`ledger::Ledger`], [`lease::Leases`], [`lease::Ticket`].

pub mod book;
pub mod lease;
pub mod ledger;
pub mod meter;
pub mod period;
pub mod policy;
pub mod pricing;
pub mod spec;
#[cfg(test)]
mod tests;

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
