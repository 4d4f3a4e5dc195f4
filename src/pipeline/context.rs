//! Per-request context: id, timings.

use std::cell::{Cell, OnceCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use http::HeaderValue;

/// What the gateway knows about one request while handling it.
#[derive(Debug)]
pub struct RequestCtx {
    /// `x-request-id`.
    pub id: HeaderValue,
    /// When the handler started.
    pub start: Instant,
    /// Time spent waiting on upstreams so far (excluded from the overhead figure).
    pub upstream: Cell<Duration>,
    /// The provider (index) of the last upstream attempt, if any (keys error log limits).
    pub provider: Cell<Option<usize>>,
    /// What the request runs up, once admitted (each attempt adds its usage to it).
    pub tab: OnceCell<Rc<super::admit::Tab>>,
    /// The rate-limit quotas reported on the response (`x-ratelimit-*`).
    pub quota: Cell<Option<super::admit::Quotas>>,
}

impl RequestCtx {
    /// A context starting now.
    pub fn new(id: HeaderValue) -> Self {
        Self {
            id,
            start: Instant::now(),
            upstream: Cell::new(Duration::ZERO),
            provider: Cell::new(None),
            tab: OnceCell::new(),
            quota: Cell::new(None),
        }
    }

    /// Set the quotas the response reports.
    pub fn set_quota(&self, q: super::admit::Quotas) {
        if q.requests.is_some() || q.tokens.is_some() {
            self.quota.set(Some(q));
        }
    }

    /// Add upstream wait time.
    pub fn add_upstream(&self, d: Duration) {
        self.upstream.set(self.upstream.get() + d);
    }

    /// Time spent in the gateway itself so far.
    pub fn overhead(&self) -> Duration {
        self.start.elapsed().saturating_sub(self.upstream.get())
    }
}
