//! Serde input types for the gateway config. Strict: every struct denies unknown fields.
//! These types are never used past validation; see `config::validate`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::routing::select::Strategy;

/// Default listen address when none is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default cap on request head (request line + headers) bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Default cap on request header fields (hyper's own default, kept on its allocation-free path).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default cap on request body bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default time a client has to send a whole request head.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// Default keep-alive idle time before the gateway closes a connection.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default time between readiness failing and listeners closing on shutdown.
pub const DEFAULT_DRAIN_DELAY_MS: u64 = 0;
/// Default time in-flight requests get to finish on shutdown.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Default upstream time to first byte of the response head.
pub const DEFAULT_FIRST_BYTE_TIMEOUT_MS: u64 = 60_000;
/// Default upstream idle time between body chunks.
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Default upstream total time per attempt.
pub const DEFAULT_TOTAL_TIMEOUT_MS: u64 = 600_000;

/// Default requests a model holds waiting when every deployment is saturated or ejected.
pub const DEFAULT_QUEUE_MAX: u32 = 64;
/// Default time a request waits in its model's queue before a 503 with `Retry-After`.
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 2_000;
/// Default deployment weight (`weighted` strategy).
pub const DEFAULT_WEIGHT: u32 = 1;
/// Longest explicit deployment id.
pub const MAX_DEPLOYMENT_ID_BYTES: usize = 128;
/// Default address of the admin API's own listener (loopback only).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8081";
/// Shortest admin token accepted, in bytes.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 32;

/// The whole gateway config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Downstream server settings.
    #[serde(default)]
    pub server: RawServer,
    /// Upstream providers by id.
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    /// Public model names and where they go.
    #[serde(default)]
    pub models: BTreeMap<String, RawModel>,
    /// Attempts, retries, backoff and circuit breakers, for every model.
    #[serde(default)]
    pub routing: RawRouting,
    /// Virtual keys; without this section the gateway is open.
    pub auth: Option<super::tenancy::RawAuth>,
    /// Rate limits and budgets per scope.
    #[serde(default)]
    pub limits: super::tenancy::RawLimits,
    /// Where state that lasts is kept (keys made through the admin API, spend, counters).
    #[serde(default)]
    pub state: super::tenancy::RawState,
    /// The admin API's own listener and token; without this section there is no admin API.
    pub admin: Option<RawAdmin>,
    /// The response cache (enabled per model by `cache_ttl_s`).
    #[serde(default)]
    pub cache: RawCache,
}

/// `[cache]`: how the response cache files and bounds answers. A model's answers are cached
/// only when the model sets `cache_ttl_s`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Who a cached answer may be served to: `key` (default), `team` or `global`.
    pub scope: Option<String>,
    /// Largest answer stored, in bytes (default 1 MiB).
    pub max_entry_bytes: Option<usize>,
    /// Longest TTL a request may ask for with `x-shardgate-cache-ttl` (default 1 day).
    pub max_ttl_s: Option<u64>,
    /// Requests that may wait on one identical request in flight (default 1000); more go
    /// upstream on their own.
    pub max_followers: Option<usize>,
    /// Hot keys every shard keeps its own copy of, saving the hop to their owner (default 64;
    /// 0: none, every lookup of another shard's key crosses).
    pub replicate_hot_keys: Option<usize>,
    /// Refresh hot answers this many seconds before they expire (absent: never).
    pub refresh_before_s: Option<u64>,
    /// The key (its id) refreshes are charged to; required when `[auth]` is configured.
    pub refresh_key: Option<String>,
    /// The semantic cache (used by models that set `semantic`).
    pub semantic: Option<RawSemantic>,
}

/// `[cache.semantic]`: how the semantic cache embeds and bounds its index.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSemantic {
    /// `local` (the in-process encoder, `--features local-embed`) or the public name of an
    /// embeddings model of this config.
    pub embeddings: Option<String>,
    /// With `embeddings = "local"`: the directory holding all-MiniLM-L6-v2's `config.json`,
    /// `tokenizer.json` and `model.safetensors`.
    pub local_model_dir: Option<String>,
    /// Least cosine similarity of a hit (default 0.85), unless a model sets its own.
    pub threshold: Option<f32>,
    /// Refuse hits whose negations, numbers, quoted strings or names differ (default true).
    pub guard: Option<bool>,
    /// Longest wait for an embedding and a search before the request goes upstream (ms).
    pub timeout_ms: Option<u64>,
    /// Most texts the index holds over every partition (default 10000).
    pub max_entries: Option<usize>,
    /// Shadow mode: two answers agree when their embeddings' similarity is at least this.
    pub agree_at: Option<f32>,
}

/// `[admin]`: the admin API (keys, scores) on its own listener, behind its own bearer token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address the admin API listens on (one listener, on the control plane); default
    /// `127.0.0.1:8081`. Port 0 takes any free port (the gateway prints the one it got).
    pub listen: Option<String>,
    /// Name of the environment variable holding the admin bearer token (at least 32 bytes
    /// of printable ASCII, no spaces).
    pub token_env: String,
}

/// `[server]`: the downstream front.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address every shard listens on (`SO_REUSEPORT`), e.g. `0.0.0.0:8080`.
    pub listen: Option<String>,
    /// One log line per request (INFO, target `shardgate::access`); default off.
    pub access_log: Option<bool>,
    /// Request head (request line + headers) byte limit; over it the client gets 431.
    pub max_header_bytes: Option<usize>,
    /// Request header field count limit; over it the client gets 431.
    pub max_headers: Option<usize>,
    /// Request body byte limit; over it the client gets 413 before the body is read.
    pub max_body_bytes: Option<usize>,
    /// Time a client has to send a complete request head once it started (408).
    pub header_timeout_ms: Option<u64>,
    /// Keep-alive idle time after which the gateway closes a connection.
    pub idle_timeout_ms: Option<u64>,
    /// On shutdown: time between readiness failing and listeners closing.
    pub drain_delay_ms: Option<u64>,
    /// On shutdown: time in-flight requests and streams get to finish.
    pub shutdown_grace_ms: Option<u64>,
    /// Downstream TLS; without it the gateway speaks plain HTTP/1.1 and h2 prior knowledge.
    pub tls: Option<RawTls>,
}

/// `[server.tls]`: certificate chain and key, PEM files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM file with the certificate chain, leaf first.
    pub cert_file: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
}

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawProviderKind {
    /// OpenAI or an OpenAI-compatible server.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API.
    Gemini,
    /// The built-in in-process mock (no network).
    Mock,
}

/// Upstream HTTP protocol choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawProtocol {
    /// HTTP/2 when TLS ALPN agrees, else HTTP/1.1.
    #[default]
    Auto,
    /// Always HTTP/1.1.
    Http1,
    /// Always HTTP/2 (prior knowledge on plain TCP).
    Http2,
}

/// `[providers.<id>]`: one upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    /// Wire format: `openai`, `anthropic`, `gemini` or `mock`.
    pub kind: RawProviderKind,
    /// Base URL, e.g. `https://api.openai.com/v1` (required except for `mock`).
    pub base_url: Option<String>,
    /// Name of the environment variable holding the provider API key.
    pub api_key_env: Option<String>,
    /// Upstream HTTP protocol: `auto`, `http1` or `http2`.
    #[serde(default)]
    pub protocol: RawProtocol,
    /// Connect timeout per attempt.
    pub connect_timeout_ms: Option<u64>,
    /// Time to the first byte of the response head, per attempt.
    pub first_byte_timeout_ms: Option<u64>,
    /// Idle time between response body chunks.
    pub idle_timeout_ms: Option<u64>,
    /// Total time per attempt.
    pub total_timeout_ms: Option<u64>,
    /// PEM file of CA certificates to trust for this provider instead of the public web
    /// roots (for a private CA in front of a self-hosted model server).
    pub ca_file: Option<String>,
    /// `mock` only: honour fault-injection headers (`x-mock-panic`). Never enable in production.
    #[serde(default)]
    pub allow_fault_injection: bool,
    /// `openai` kind: how the API key is sent, `authorization` (`Bearer <key>`, the default)
    /// or `api-key` (Azure OpenAI). Anthropic always uses `x-api-key`, Gemini
    /// `x-goog-api-key`.
    pub key_header: Option<String>,
    /// Azure OpenAI: the `api-version` query parameter sent with every request.
    pub api_version: Option<String>,
}

/// `[models.<public name>]`: where a public model name goes. Either the single form
/// (`provider`, `model`, `price`: one deployment) or a `deployments` list, never both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// Single form: provider id (a key of `[providers]`).
    pub provider: Option<String>,
    /// Single form: model name sent upstream; defaults to the public name.
    pub model: Option<String>,
    /// Single form: prices in US dollars per million tokens, for cost accounting.
    pub price: Option<RawPrice>,
    /// The deployments serving this model (instead of the single form).
    pub deployments: Option<Vec<RawDeployment>>,
    /// How requests spread over the deployments; defaults to `score`.
    pub strategy: Option<Strategy>,
    /// Other public models tried, in order, after this model's own deployments.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Public models tried when a provider says the request is over its context window.
    #[serde(default)]
    pub context_window_fallbacks: Vec<String>,
    /// Public models tried when a provider refuses the request by its content policy.
    #[serde(default)]
    pub content_policy_fallbacks: Vec<String>,
    /// May a request pin or reorder deployments with `x-shardgate-deployment`? Default no.
    pub allow_pin: Option<bool>,
    /// Requests held waiting when every deployment is saturated or ejected (0: none wait).
    pub queue_max: Option<u32>,
    /// Longest wait in that queue before a 503 with `Retry-After`.
    pub queue_timeout_ms: Option<u64>,
    /// Cache this model's answers for this many seconds (absent: not cached).
    pub cache_ttl_s: Option<u64>,
    /// The semantic cache for this model: `off` (default), `on` or `shadow`.
    pub semantic: Option<String>,
    /// Least similarity of a semantic hit for this model (default `cache.semantic.threshold`).
    pub semantic_threshold: Option<f32>,
}

/// `[[models.<public name>.deployments]]`: one provider + upstream model serving the model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    /// Id in metrics, admin output and `x-shardgate-deployment`; defaults to
    /// `<provider>/<model>`. Unique across the config: models listing the same id share it.
    pub id: Option<String>,
    /// Provider id (a key of `[providers]`).
    pub provider: String,
    /// Model name sent upstream; defaults to the public name.
    pub model: Option<String>,
    /// Share of traffic under the `weighted` strategy (at least 1).
    pub weight: Option<u32>,
    /// Prices in US dollars per million tokens (cost accounting, `lowest_cost`, `score`).
    pub price: Option<RawPrice>,
    /// Configured quality in `0..=1` for the `score` strategy; unset is neutral.
    pub quality: Option<f64>,
    /// Connect timeout per attempt; defaults to the provider's.
    pub connect_timeout_ms: Option<u64>,
    /// Time to the first byte of the response head; defaults to the provider's.
    pub first_byte_timeout_ms: Option<u64>,
    /// Idle time between response body chunks; defaults to the provider's.
    pub idle_timeout_ms: Option<u64>,
    /// Total time per attempt; defaults to the provider's.
    pub total_timeout_ms: Option<u64>,
    /// Requests in flight per shard before it counts as saturated; default unlimited.
    pub max_in_flight: Option<u32>,
    /// Largest request (estimated prompt tokens) it takes; default unlimited.
    pub max_context_tokens: Option<u32>,
    /// Takes tool definitions and tool calls; default true.
    pub tools: Option<bool>,
    /// Takes images; default true.
    pub vision: Option<bool>,
    /// Takes JSON mode and JSON schema output; default true.
    pub json_mode: Option<bool>,
    /// Free-form labels a request can ask for (`x-shardgate-tags`, `metadata.tags`).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `price = { .. }` of a model or deployment: US dollars per million tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    /// Input tokens.
    pub input: f64,
    /// Output tokens (reasoning included).
    pub output: f64,
    /// Input tokens read from the provider's prompt cache; defaults to `input`.
    pub cached_input: Option<f64>,
}

/// `[routing]`: attempts, retries and backoff for every model. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// Attempts per request across deployments and fallbacks together (1 = no retry), 1..=10.
    pub max_attempts: Option<u32>,
    /// Deadline for all of a request's attempts together.
    pub request_timeout_ms: Option<u64>,
    /// First backoff step before a retry (full jitter: the wait is uniform up to the step).
    pub backoff_base_ms: Option<u64>,
    /// Longest backoff step.
    pub backoff_max_ms: Option<u64>,
    /// Longest `Retry-After` waited on; a longer one sends the attempt to the next deployment.
    pub retry_after_cap_ms: Option<u64>,
    /// Retries allowed as a share of requests, in `0..=1`...
    pub retry_budget_ratio: Option<f64>,
    /// ...plus this many retries per second whatever the traffic...
    pub retry_budget_floor_per_sec: Option<u32>,
    /// ...counted over this sliding window.
    pub retry_budget_window_ms: Option<u64>,
    /// Per-deployment circuit breakers.
    #[serde(default)]
    pub breaker: RawBreaker,
}

/// `[routing.breaker]`: when a deployment is ejected, and for how long.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    /// Consecutive failures that eject a deployment (at least 1).
    pub consecutive_failures: Option<u32>,
    /// Failed share of the window's attempts that ejects, in `0..=1`...
    pub error_ratio: Option<f64>,
    /// ...once the window holds at least this many attempts (at least 1).
    pub min_volume: Option<u64>,
    /// Length of the error-ratio window.
    pub window_ms: Option<u64>,
    /// First cooldown; each ejection in a row doubles it...
    pub base_cooldown_ms: Option<u64>,
    /// ...up to this (at least `base_cooldown_ms`).
    pub max_cooldown_ms: Option<u64>,
}
