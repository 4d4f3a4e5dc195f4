//! # shardgate
//!
//! A thread-per-core LLM gateway. Each core runs a pinned glommio shard that owns its listener
//! (`SO_REUSEPORT`), its upstream connection pools and its metrics. Cross-core state lives in
//! ractor actors on a control-plane thread; shards and actors exchange batched messages.
//!
//! ## Request flow
//!
//! `http::server` accept → `http::routes` → `api` decode (simd-json, only routing fields) →
//! `pipeline`: resolve the model → admit → plan → `pipeline::attempt::open` (`providers::call`
//! builds the request; `upstream` pool send; head read, status mapped, still retryable) →
//! commit → `pipeline::relay` (whole SSE events, teeing usage) → settle (`metrics` +
//! `Outcome` batch to the scorer, `shard::bridge`). Every failure goes to `http::respond`, the
//! one place errors are rendered. Layers point down only: `http` → `pipeline` → `providers`,
//! `routing`, `upstream` → pure modules.
//!
//! ## Module map
//!
//! - [`shard`]: the thread-per-core runtime, the only module naming glommio: executors,
//!   hyper IO/executor/timer adapters, the shard ↔ control-plane bridge.
//! - [`http`]: the downstream edge: accept loop, limits, framing, routes, error rendering.
//! - [`auth`]: virtual keys and JWT bearer tokens: key hashing, the key table, verification.
//! - [`pipeline`]: one request's phases; what a shard owns; attempts and the SSE relay.
//! - [`routing`]: pure balancing strategies, circuit breakers, backoff and retry budget.
//! - [`upstream`]: per-shard connection pools to provider endpoints (h1/h2, TLS, timeouts).
//! - [`providers`]: provider kinds: wire formats, translation, stream parsing; no IO.
//! - [`api`]: canonical request pieces: decoding, usage, SSE splitting.
//! - [`scoring`]: pure scorer maths (EWMA, success windows, score blend).
//! - [`actors`]: the control plane (tokio + ractor): `ScorerActor`.
//! - `actors::admin`: the admin API (keys, scores) on its own listener and token, on the control plane.
//! - [`logbuf`]: access log lines buffered per shard, written on its flush tick.
//! - [`metrics`]: per-shard counters and histograms, Prometheus rendering.
//! - [`config`]: strict config and tuning parsing and validation.
//! - [`detect`]: the tuning detector (`shardgate tuning detect`): `/proc` + `/sys` → profile.
//! - [`mock`]: the deterministic mock provider, in-process and as an HTTP server.
//! - [`runtime`]: wires the topology: control plane, shards, shutdown.
//!
//! ## Glossary
//!
//! - **Shard** ([`ShardId`]): one pinned executor thread and everything it owns.
//! - **Upstream** is toward providers, **downstream** toward clients.
//! - [`ProviderId`]: a configured provider; [`ModelId`]: a public model name;
//!   [`DeploymentId`]: a provider + upstream model, the unit the scorer tracks.
//! - `Outcome`: what happened on one upstream attempt (latency, status, tokens).
//! - `ScoreTable`: the scorer's read-mostly snapshot, swapped into every shard whole.

pub mod actors;

pub mod api;
pub mod auth;
pub mod budget;
pub mod cache;
pub mod config;
pub mod detect;
pub mod error;
/// Fuzz entry points (one function per target), shared by the fuzzer and `tests/fuzz.rs`.
#[doc(hidden)]
pub mod fuzz_logic;
pub mod http;
pub mod logbuf;
pub mod metrics;
pub mod mock;
pub mod pipeline;
pub mod providers;
pub mod routing;
pub mod runtime;
pub mod scoring;
pub mod shard;
pub mod upstream;

use std::fmt;
use std::sync::Arc;

pub use error::{ErrorKind, GatewayError};

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Arc<str>);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl $name {
            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

id_newtype!(
    /// A configured provider (the key under `[providers]`).
    ProviderId
);
id_newtype!(
    /// A public model name (the key under `[models]`).
    ModelId
);
id_newtype!(
    /// A deployment: `provider/upstream_model`.
    DeploymentId
);

/// A shard's index, `0..shards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

macro_rules! index_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub u32);

        impl $name {
            /// The position, for indexing a per-item table.
            #[inline]
            pub fn get(self) -> usize {
                self.0 as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

index_newtype!(
    /// A provider's position in `Config::providers` (and in per-provider tables).
    ProviderIdx
);
index_newtype!(
    /// A public model's position in `Config::models` (and in per-model tables).
    ModelIdx
);
index_newtype!(
    /// A deployment's position in `Config::deployments` (and in per-deployment tables).
    DeploymentIdx
);
