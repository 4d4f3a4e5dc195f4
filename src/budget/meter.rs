//! The nouns of limits: what is counted ([`Measure`]), for whom ([`Scope`]), over which span
//! ([`Period`]), together one meter ([`MeterKey`]), and its cap ([`Limit`]).
//!
//! Owns: the meter key and the limit value, and their fixed label strings (metrics labels
//! come from these, never from an id).
//! Does not: count anything ([`super::ledger`] and [`super::lease`] do) or compute windows
//! ([`super::period`]).
//! Key types: [`MeterKey`], [`Limit`].

use std::sync::Arc;

/// Whom a meter counts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The whole gateway.
    Global,
    /// One virtual key.
    Key(Arc<str>),
    /// One team.
    Team(Arc<str>),
    /// One end user (as the client names it).
    User(Arc<str>),
    /// One public model name.
    Model(Arc<str>),
    /// One deployment (a provider + upstream model).
    Deployment(Arc<str>),
}

/// The kind of a [`Scope`], without its id: a fixed, low-cardinality label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    /// [`Scope::Global`].
    Global,
    /// [`Scope::Key`].
    Key,
    /// [`Scope::Team`].
    Team,
    /// [`Scope::User`].
    User,
    /// [`Scope::Model`].
    Model,
    /// [`Scope::Deployment`].
    Deployment,
}

impl ScopeKind {
    /// The label: `global`, `key`, `team`, `user`, `model` or `deployment`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Key => "key",
            Self::Team => "team",
            Self::User => "user",
            Self::Model => "model",
            Self::Deployment => "deployment",
        }
    }
}

impl Scope {
    /// The kind, for labels.
    pub fn kind(&self) -> ScopeKind {
        match self {
            Self::Global => ScopeKind::Global,
            Self::Key(_) => ScopeKind::Key,
            Self::Team(_) => ScopeKind::Team,
            Self::User(_) => ScopeKind::User,
            Self::Model(_) => ScopeKind::Model,
            Self::Deployment(_) => ScopeKind::Deployment,
        }
    }

    /// The kind's label (`key`, `team`, ...): never the id, so it is safe as a metric label.
    pub fn as_str(&self) -> &'static str {
        self.kind().as_str()
    }

    /// The id of a scoped meter (`None` for [`Scope::Global`]).
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Global => None,
            Self::Key(id)
            | Self::Team(id)
            | Self::User(id)
            | Self::Model(id)
            | Self::Deployment(id) => Some(id),
        }
    }
}

/// What a meter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    /// Requests started (one unit each).
    Requests,
    /// Tokens (input and output), reserved as an estimate and settled at the real count.
    Tokens,
    /// Requests in flight: a unit is held while the request runs, then given back.
    Concurrent,
    /// Money, in nano-USD (the unit of [`super::Cost`]).
    Spend,
}

impl Measure {
    /// The label: `requests`, `tokens`, `concurrent` or `spend`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
            Self::Concurrent => "concurrent",
            Self::Spend => "spend",
        }
    }
}

/// The span a meter's count lives in (see [`super::period::window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// 60 seconds, anchored at the first use after the previous window ended.
    Minute,
    /// A calendar day at the configured UTC offset.
    Day,
    /// A calendar month at the configured UTC offset.
    Month,
    /// Never resets (lifetime budgets, and concurrency).
    Total,
}

impl Period {
    /// The label: `minute`, `day`, `month` or `total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Day => "day",
            Self::Month => "month",
            Self::Total => "total",
        }
    }
}

/// One thing that is counted and capped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeterKey {
    /// For whom.
    pub scope: Scope,
    /// What.
    pub measure: Measure,
    /// Over which span.
    pub period: Period,
}

impl MeterKey {
    /// A meter key.
    pub fn new(scope: Scope, measure: Measure, period: Period) -> Self {
        Self {
            scope,
            measure,
            period,
        }
    }
}

/// A meter's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Units allowed per window.
    pub max: u64,
    /// Exact: never admit past `max` (a request waits for its lease). Otherwise a shard may
    /// admit on credit up to [`Limit::borrow`] units per window while a refill is on its way.
    pub exact: bool,
}

impl Limit {
    /// Units a shard may admit on credit per window: 0 when exact (or when `max` is 0, which
    /// blocks everything), else `max(1, max / 100)`.
    pub fn borrow(&self) -> u64 {
        if self.exact || self.max == 0 {
            0
        } else {
            (self.max / 100).max(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_fixed_and_never_the_id() {
        let s = Scope::User(Arc::from("alice@example.com"));
        assert_eq!(s.as_str(), "user");
        assert_eq!(s.kind(), ScopeKind::User);
        assert_eq!(s.id(), Some("alice@example.com"));
        assert_eq!(Scope::Global.as_str(), "global");
        assert_eq!(Scope::Global.id(), None);
        assert_eq!(Scope::Key(Arc::from("k")).as_str(), "key");
        assert_eq!(Scope::Team(Arc::from("t")).as_str(), "team");
        assert_eq!(Scope::Model(Arc::from("m")).as_str(), "model");
        assert_eq!(Scope::Deployment(Arc::from("d")).as_str(), "deployment");
        assert_eq!(Measure::Requests.as_str(), "requests");
        assert_eq!(Measure::Tokens.as_str(), "tokens");
        assert_eq!(Measure::Concurrent.as_str(), "concurrent");
        assert_eq!(Measure::Spend.as_str(), "spend");
        assert_eq!(Period::Minute.as_str(), "minute");
        assert_eq!(Period::Day.as_str(), "day");
        assert_eq!(Period::Month.as_str(), "month");
        assert_eq!(Period::Total.as_str(), "total");
    }

    #[test]
    fn borrow_is_one_percent_at_least_one_and_none_when_exact() {
        let l = |max, exact| Limit { max, exact };
        assert_eq!(l(10_000, false).borrow(), 100);
        assert_eq!(l(150, false).borrow(), 1);
        assert_eq!(l(1, false).borrow(), 1);
        assert_eq!(l(0, false).borrow(), 0);
        assert_eq!(l(10_000, true).borrow(), 0);
    }

    #[test]
    fn keys_compare_by_all_three_parts() {
        let a = MeterKey::new(
            Scope::Key(Arc::from("k")),
            Measure::Requests,
            Period::Minute,
        );
        let b = MeterKey::new(Scope::Key(Arc::from("k")), Measure::Requests, Period::Day);
        assert_ne!(a, b);
        assert_eq!(a, a.clone());
    }
}
