//! Provider choice for one request, and the resilience rules around it.
//!
//! Owns: balancing strategies ([`select`]), the per-deployment circuit breaker ([`breaker`]),
//! backoff and the retry budget ([`retry`]).
//! Does not: send anything, read files or know HTTP; every function takes time and
//! randomness as arguments, so tests need no clock and no sleeps.
//! Key types: [`select::Strategy`], [`select::Candidate`], [`breaker::Breaker`],
//! [`retry::RetryBudget`].

pub mod breaker;
pub mod plan;
pub mod retry;
pub mod select;
