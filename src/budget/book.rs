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

/// Settled requests' usage and cost, and who they count for: one request as a shard settles
/// it, or several of the same key, team, user, model and UTC day added up ([`Spent::add`])
/// before they are sent.
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
    /// Requests.
    pub requests: u64,
    /// When it settled (the first of them), unix milliseconds.
    pub at_ms: u64,
}

/// Milliseconds in a day.
const DAY_MS: u64 = 86_400_000;

/// Who a [`Spent`] counts for and on which UTC day: requests with the same one are added up
/// on the shard, so the budgeter gets one entry per tenant and day per batch, not one per
/// request.
pub type SpentKey = (
    Option<Arc<str>>,
    Option<Arc<str>>,
    Option<Arc<str>>,
    Arc<str>,
    u64,
);

impl Spent {
    /// Its tenant and UTC day.
    pub fn key(&self) -> SpentKey {
        (
            self.key.clone(),
            self.team.clone(),
            self.user.clone(),
            self.model.clone(),
            self.at_ms / DAY_MS,
        )
    }

    /// Add another's figures (same [`Spent::key`]).
    pub fn add(&mut self, o: &Spent) {
        self.nano_usd = self.nano_usd.saturating_add(o.nano_usd);
        self.input_tokens = self.input_tokens.saturating_add(o.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        self.requests = self.requests.saturating_add(o.requests);
    }
}
