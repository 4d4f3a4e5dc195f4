//! Gateway configuration: strict parsing, then validation into typed structs.
//!
//! Owns: `Config` (what the gateway serves) and `Tuning` (how fast it runs), their loading and
//! validation, and the embedded default that runs the built-in mock with no files at all.
//! Does not: touch sockets or runtimes (DNS resolution happens in `runtime`).
//! Key types: [`Config`], [`ProviderConfig`], [`ModelRoute`], [`Deployment`],
//! [`RoutingConfig`], [`AdminConfig`], [`Tuning`], [`Secret`].

pub mod raw;
pub mod secrets;
pub mod tenancy;
pub mod tuning;
mod validate;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use tuning::Tuning;
pub use validate::{DEFAULT_AGREE_AT, DEFAULT_SEMANTIC_THRESHOLD, validate};

use crate::budget::pricing::Price;
use crate::routing::breaker::BreakerConfig;
use crate::routing::retry::{Backoff, RetryBudget};
use crate::routing::select::Strategy;
use crate::{DeploymentId, DeploymentIdx, ModelId, ModelIdx, ProviderId, ProviderIdx};

/// The config used when none is given: one in-process mock provider serving model `mock`.
pub const EMBEDDED_DEFAULT: &str = r#"
[server]
listen = "127.0.0.1:8080"

[providers.mock]
kind = "mock"

[models.mock]
provider = "mock"
"#;

/// Errors from loading or validating config and tuning files.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has a field of the wrong type or name.
    #[error("{origin}: {path}: {message}")]
    Parse {
        /// The file (or `<embedded ...>`).
        origin: String,
        /// The path of the field, e.g. `providers.openai.base_url`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("{origin}: {path}: {message}")]
    Invalid {
        /// The file.
        origin: String,
        /// The path of the field.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Parse TOML strictly, with errors that name the field path.
pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
) -> Result<T, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ConfigError::Parse {
            origin: origin.to_owned(),
            path: if path == "." {
                "(top level)".to_owned()
            } else {
                path
            },
            message: inner.message().trim().to_owned(),
        }
    })
}

/// A secret string (API key). Its `Debug` and `Display` print `*****`.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wrap a secret.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The secret itself: use only to put it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

/// The validated gateway config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Downstream server settings.
    pub server: ServerConfig,
    /// Providers, indexed by position (`ModelRoute::provider`).
    pub providers: Vec<Arc<ProviderConfig>>,
    /// Public model names in config order (sorted by name), indexed by [`ModelIdx`].
    pub models: Vec<Arc<ModelRoute>>,
    /// Every deployment once, in order of first listing, indexed by [`DeploymentIdx`].
    pub deployments: Vec<Deployment>,
    /// Attempts, retries, backoff and breakers.
    pub routing: RoutingConfig,
    /// Virtual keys (`None`: the gateway is open).
    pub auth: Option<tenancy::AuthConfig>,
    /// Rate limits and budgets.
    pub limits: tenancy::LimitsConfig,
    /// Where state that lasts is kept.
    pub state: tenancy::StateConfig,
    /// The admin API (`None`: no admin listener).
    pub admin: Option<AdminConfig>,
    /// The response cache.
    pub cache: CacheConfig,
}

/// Validated `[cache]`.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Who a cached answer may be served to.
    pub scope: CacheScope,
    /// Largest answer stored, in bytes.
    pub max_entry_bytes: usize,
    /// Longest TTL a request may ask for.
    pub max_ttl: Duration,
    /// Requests that may wait on one identical request in flight.
    pub max_followers: usize,
    /// Hot keys replicated to every shard, at most (0: none).
    pub replicate_hot_keys: usize,
    /// Refreshing hot answers before they expire (`None`: never).
    pub refresh: Option<RefreshConfig>,
    /// The semantic cache (`None`: no model uses it).
    pub semantic: Option<SemanticConfig>,
}

/// Validated `cache.refresh_before_s` and `cache.refresh_key`.
#[derive(Debug, Clone)]
pub struct RefreshConfig {
    /// How long before a hot answer expires it is fetched again.
    pub before: Duration,
    /// The key id refreshes are charged to (`None`: no `[auth]`, nobody is charged).
    pub key: Option<Arc<str>>,
}

/// Validated `[cache.semantic]`.
#[derive(Debug, Clone)]
pub struct SemanticConfig {
    /// Where embeddings come from.
    pub embeddings: Embeddings,
    /// Least similarity of a hit, for models that set none.
    pub threshold: f32,
    /// Whether the guard judges candidates (`cache::guard`).
    pub guard: bool,
    /// Longest wait for an embedding and a search.
    pub timeout: Duration,
    /// Most texts in the index.
    pub max_entries: usize,
    /// Shadow mode's agreement bar between two answers.
    pub agree_at: f32,
}

/// Where the semantic cache's embeddings come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Embeddings {
    /// The in-process encoder, with its weights in this directory.
    Local(std::path::PathBuf),
    /// A configured embeddings model, called through the pipeline.
    Model(ModelIdx),
}

/// A model's semantic cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SemanticMode {
    /// Serve the nearest earlier answer above `threshold`.
    On {
        /// Least similarity of a hit (`None`: `cache.semantic.threshold`).
        threshold: Option<f32>,
    },
    /// Serve from upstream; record what would have hit and whether the answers agree.
    Shadow {
        /// Least similarity of a would-be hit (`None`: `cache.semantic.threshold`).
        threshold: Option<f32>,
    },
}

impl SemanticMode {
    /// Its similarity threshold, or `default` when the model sets none.
    pub fn threshold(self, default: f32) -> f32 {
        match self {
            Self::On { threshold } | Self::Shadow { threshold } => threshold.unwrap_or(default),
        }
    }

    /// Whether hits are only recorded, never served.
    pub fn shadow(self) -> bool {
        matches!(self, Self::Shadow { .. })
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            scope: CacheScope::Key,
            max_entry_bytes: 1 << 20,
            max_ttl: Duration::from_secs(86_400),
            max_followers: 1000,
            replicate_hot_keys: 64,
            refresh: None,
            semantic: None,
        }
    }
}

/// Who a cached answer may be served to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// The key that asked (a gateway without keys: everyone).
    Key,
    /// Every key of the asking key's team (a key without a team: that key).
    Team,
    /// Everyone.
    Global,
}

/// Validated `[admin]`: the admin API's own listener and bearer token.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Listen address (host:port, resolved at start; port 0 takes any free port).
    pub listen: String,
    /// The bearer token every admin request must present (also redacted from logs and
    /// error bodies, as the provider keys are).
    pub token: Secret,
}

impl Config {
    /// The embedded default config (built-in mock, no keys).
    pub fn embedded_default() -> Result<Self, ConfigError> {
        Self::from_toml(EMBEDDED_DEFAULT, "<embedded config>", &|_| None)
    }

    /// Load and validate a config file, reading API keys from the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string(), &|k| {
            std::env::var(k).ok()
        })
    }

    /// Parse and validate config text; `env` looks up environment variables.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = parse_toml(text, origin)?;
        validate(raw, origin, env)
    }

    /// Look a public model name up.
    pub fn model(&self, name: &str) -> Option<&Arc<ModelRoute>> {
        self.models.iter().find(|m| &*m.public.0 == name)
    }

    /// The model at `idx` (every `ModelIdx` in a `Config` indexes its own `models`).
    pub fn model_at(&self, idx: ModelIdx) -> Option<&Arc<ModelRoute>> {
        self.models.get(idx.get())
    }

    /// The deployment at `idx` (every `DeploymentIdx` in a `Config` indexes its own
    /// `deployments`).
    pub fn deployment(&self, idx: DeploymentIdx) -> Option<&Deployment> {
        self.deployments.get(idx.get())
    }

    /// Look a deployment id up.
    pub fn deployment_by_id(&self, id: &str) -> Option<(DeploymentIdx, &Deployment)> {
        let i = self.deployments.iter().position(|d| d.id.as_str() == id)?;
        Some((DeploymentIdx(u32::try_from(i).ok()?), &self.deployments[i]))
    }

    /// The provider at `idx`.
    pub fn provider_at(&self, idx: ProviderIdx) -> Option<&Arc<ProviderConfig>> {
        self.providers.get(idx.get())
    }

    /// A model's deployments, in config order.
    pub fn deployments_of<'a>(
        &'a self,
        model: &'a ModelRoute,
    ) -> impl Iterator<Item = (DeploymentIdx, &'a Deployment)> + 'a {
        model
            .deployments
            .iter()
            .filter_map(|&i| Some((i, self.deployment(i)?)))
    }
}

/// Downstream TLS material (PEM file paths; loaded at start-up).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain file.
    pub cert_file: String,
    /// Private key file.
    pub key_file: String,
}

/// Validated `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address (host:port, resolved at start).
    pub listen: String,
    /// One log line per request, as its response ends.
    pub access_log: bool,
    /// Request head byte limit.
    pub max_header_bytes: usize,
    /// Request header field count limit.
    pub max_headers: usize,
    /// Request body byte limit.
    pub max_body_bytes: usize,
    /// Request head read timeout.
    pub header_timeout: Duration,
    /// Keep-alive idle timeout.
    pub idle_timeout: Duration,
    /// Drain delay on shutdown.
    pub drain_delay: Duration,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// Downstream TLS.
    pub tls: Option<TlsFiles>,
}

/// What a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI-compatible HTTP API.
    OpenAi,
    /// Anthropic Messages API.
    Anthropic,
    /// Google Gemini API.
    Gemini,
    /// In-process mock.
    Mock,
}

/// Upstream protocol preference.
pub use raw::RawProtocol as Protocol;

/// URL scheme of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain TCP.
    Http,
    /// TLS (rustls, webpki roots).
    Https,
}

/// Where a provider lives.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// http or https.
    pub scheme: Scheme,
    /// Host name or address (also the TLS server name).
    pub host: Arc<str>,
    /// Port.
    pub port: u16,
    /// Path prefix without a trailing slash, e.g. `/v1`.
    pub base_path: Arc<str>,
    /// Value of the `Host` header.
    pub authority: Arc<str>,
}

/// Per-attempt upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Connect (TCP + TLS).
    pub connect: Duration,
    /// Time to the response head.
    pub first_byte: Duration,
    /// Idle time between body chunks.
    pub idle: Duration,
    /// Whole attempt.
    pub total: Duration,
}

/// A validated provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Its id (the config key).
    pub id: ProviderId,
    /// Its wire format.
    pub kind: ProviderKind,
    /// Its endpoint (`None` for the in-process mock).
    pub endpoint: Option<Endpoint>,
    /// Its API key, if any.
    pub api_key: Option<Secret>,
    /// Upstream protocol.
    pub protocol: Protocol,
    /// Timeouts per attempt.
    pub timeouts: Timeouts,
    /// CA certificates to trust instead of the web roots (PEM file).
    pub ca_file: Option<String>,
    /// Mock only: honour fault-injection headers.
    pub allow_fault_injection: bool,
    /// How the API key is sent.
    pub key_header: KeyHeader,
    /// Azure OpenAI: `api-version` query parameter.
    pub api_version: Option<String>,
}

/// The header that carries a provider's API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHeader {
    /// `Authorization: Bearer <key>` (OpenAI and most compatible servers).
    Bearer,
    /// `api-key: <key>` (Azure OpenAI).
    ApiKey,
    /// `x-api-key: <key>` (Anthropic).
    XApiKey,
    /// `x-goog-api-key: <key>` (Gemini).
    XGoogApiKey,
}

/// A public model name, its deployments and how requests for it are routed.
///
/// `provider`, `upstream_model`, `deployment` and `price` describe the model's first
/// deployment (the single-provider view the request path used before deployments).
#[derive(Debug, Clone)]
pub struct ModelRoute {
    /// The name clients use.
    pub public: ModelId,
    /// First deployment: index into `Config::providers`.
    pub provider: usize,
    /// First deployment: the name sent upstream.
    pub upstream_model: Arc<str>,
    /// First deployment: its id, the unit the scorer tracks.
    pub deployment: DeploymentId,
    /// Position in `Config::models` (indexes per-model metrics).
    pub index: usize,
    /// Every deployment, in config order (never empty).
    pub deployments: Vec<DeploymentIdx>,
    /// How requests spread over `deployments`.
    pub strategy: Strategy,
    /// Models tried, in order, after this model's own deployments.
    pub fallbacks: Vec<ModelIdx>,
    /// Models tried when a provider says the request is over its context window.
    pub context_window_fallbacks: Vec<ModelIdx>,
    /// Models tried when a provider refuses the request by its content policy.
    pub content_policy_fallbacks: Vec<ModelIdx>,
    /// Whether a request may pin or reorder deployments (`x-shardgate-deployment`).
    pub allow_pin: bool,
    /// Requests held waiting when every deployment is saturated or ejected (0: none).
    pub queue_max: u32,
    /// Longest wait in that queue before a 503 with `Retry-After`.
    pub queue_timeout: Duration,
    /// How long its answers are cached (`None`: not cached).
    pub cache_ttl: Option<Duration>,
    /// Its semantic cache (`None`: exact only).
    pub semantic: Option<SemanticMode>,
}

impl ModelRoute {
    /// Its position in `Config::models`.
    pub fn idx(&self) -> ModelIdx {
        ModelIdx(u32::try_from(self.index).unwrap_or(u32::MAX))
    }

    /// First deployment: its index (`deployments` is never empty).
    pub fn deployment_idx(&self) -> DeploymentIdx {
        self.deployments.first().copied().unwrap_or_default()
    }
}

/// What a deployment accepts besides plain text chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Tool definitions and tool calls.
    pub tools: bool,
    /// Image inputs.
    pub vision: bool,
    /// JSON mode and JSON schema output.
    pub json_mode: bool,
}

impl Capabilities {
    /// Everything (the default of a deployment).
    pub const ALL: Self = Self {
        tools: true,
        vision: true,
        json_mode: true,
    };
    /// Nothing (what a plain text request needs).
    pub const NONE: Self = Self {
        tools: false,
        vision: false,
        json_mode: false,
    };

    /// Does this cover every capability `needed` asks for?
    pub fn covers(self, needed: Self) -> bool {
        (self.tools || !needed.tools)
            && (self.vision || !needed.vision)
            && (self.json_mode || !needed.json_mode)
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Self::ALL
    }
}

/// One provider + upstream model serving one or more public models.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// Its id: configured, or `<provider>/<upstream model>`. Unique in the config.
    pub id: DeploymentId,
    /// Its provider.
    pub provider: ProviderIdx,
    /// The model name sent upstream.
    pub upstream_model: Arc<str>,
    /// Share of traffic under the `weighted` strategy (at least 1).
    pub weight: u32,
    /// Prices, when configured.
    pub price: Option<Price>,
    /// Configured quality in `0..=1`; `None` is neutral.
    pub quality: Option<f64>,
    /// The provider's timeouts with this deployment's overrides applied.
    pub timeouts: Timeouts,
    /// Requests in flight per shard before it counts as saturated; `None`: unlimited.
    pub max_in_flight: Option<u32>,
    /// Largest request in estimated prompt tokens; `None`: unlimited.
    pub max_context_tokens: Option<u32>,
    /// What it accepts.
    pub caps: Capabilities,
    /// Labels a request can ask for.
    pub tags: Vec<Arc<str>>,
    /// The models listing it, in config order (never empty).
    pub models: Vec<ModelIdx>,
}

impl Deployment {
    /// Does it carry every tag in `wanted`?
    pub fn has_tags<'a>(&self, mut wanted: impl Iterator<Item = &'a str>) -> bool {
        wanted.all(|w| self.tags.iter().any(|t| &**t == w))
    }
}

/// The retry budget's settings (see [`RetryBudget`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed as a share of requests, in `0..=1`.
    pub ratio: f64,
    /// Retries allowed per second whatever the traffic.
    pub floor_per_sec: u32,
    /// The sliding window both are counted over.
    pub window: Duration,
}

impl RetryBudgetConfig {
    /// A fresh budget with these settings.
    pub fn budget(&self) -> RetryBudget {
        RetryBudget::new(self.ratio, self.floor_per_sec, self.window)
    }
}

/// Validated `[routing]`: attempts, retries, backoff and breakers, for every model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutingConfig {
    /// Attempts per request across deployments and fallbacks together (1: no retry).
    pub max_attempts: u32,
    /// Deadline for all of a request's attempts together.
    pub request_timeout: Duration,
    /// Backoff between attempts and the `Retry-After` cap.
    pub backoff: Backoff,
    /// How many retries the gateway allows itself.
    pub budget: RetryBudgetConfig,
    /// Per-deployment circuit breakers.
    pub breaker: BreakerConfig,
}

#[cfg(test)]
mod tests;
