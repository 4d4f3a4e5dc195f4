//! What a shard sends the budgeter: lease asks, usage reports, and what each settled request
//! spent, for the spend book (by key, team, end user, model and day). Pure data.

use std::sync::Arc;

use super::lease::Ask;
use super::ledger::Report;

/// What a shard sends the budgeter in one batch.
#[derive(Debug, Default)]
pub struct BudgetBatch {
    /// Lease refills wanted.
    pub asks: Vec<Ask>,
    /// Usage and returned units per meter.
    pub reports: Vec<Report>,
    /// Settled requests, for the spend book.
    pub spent: Vec<Spent>,
}

/// One settled request's usage and cost, and who it counts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spent {
    /// The key's id (none when the gateway is open).
    pub key: Option<Arc<str>>,
    /// The key's team.
    pub team: Option<Arc<str>>,
    /// The end user.
    pub user: Option<Arc<str>>,
    /// The public model the client asked for.
    pub model: Arc<str>,
    /// Cost in nano-USD (0 for models without a price).
    pub nano_usd: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// When it settled, unix milliseconds.
    pub at_ms: u64,
}
