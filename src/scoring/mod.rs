//! Pure scorer maths. No runtime, no clock: every function takes `now`.
//!
//! Owns: the per-deployment statistics (EWMA of latency and time to first byte, success
//! ratio over a sliding window) and the [`ScoreTable`] snapshot shards read, indexed by
//! `DeploymentIdx`.
//! Does not: receive messages, run breakers or publish snapshots (that is `actors::scorer`,
//! with `routing::breaker`).
//! Key types: [`Ewma`], [`SuccessWindow`], [`DeploymentStats`], [`DeploymentInfo`],
//! [`ScoreTable`].

mod ewma;
mod table;

pub use ewma::Ewma;
pub use table::{
    BreakerView, DeploymentInfo, DeploymentScore, DeploymentStats, NEUTRAL_TERM, Observation,
    Outcome, ScoreTable, ScoreTerms, SuccessWindow, Weights,
};

/// Samples needed before a score is trusted (the default).
pub fn table_min_samples() -> u64 {
    table::DEFAULT_MIN_SAMPLES
}
