//! `RawConfig` → `Config`, with errors that name the path (and both sides of a reference).

use std::sync::Arc;
use std::time::Duration;

use http::Uri;

use super::raw::{self, RawConfig, RawProvider, RawProviderKind};
use super::{
    Config, ConfigError, Endpoint, KeyHeader, ModelRoute, ProviderConfig, ProviderKind, Scheme,
    Secret, ServerConfig, Timeouts, TlsFiles,
};
use crate::{DeploymentId, ModelId, ProviderId};

/// Validate a parsed config. `env` looks up environment variables (API keys).
pub fn validate(
    raw: RawConfig,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let invalid = |path: String, message: String| ConfigError::Invalid {
        origin: origin.to_owned(),
        path,
        message,
    };
    let s = raw.server;
    let listen = s.listen.unwrap_or_else(|| raw::DEFAULT_LISTEN.to_owned());
    if !listen.contains(':') {
        return Err(invalid(
            "server.listen".into(),
            format!("expected host:port, got `{listen}`"),
        ));
    }
    let max_header_bytes = s.max_header_bytes.unwrap_or(raw::DEFAULT_MAX_HEADER_BYTES);
    if max_header_bytes < 1024 {
        return Err(invalid(
            "server.max_header_bytes".into(),
            "must be at least 1024".into(),
        ));
    }
    let max_headers = s.max_headers.unwrap_or(raw::DEFAULT_MAX_HEADERS);
    if !(8..=10_000).contains(&max_headers) {
        return Err(invalid(
            "server.max_headers".into(),
            format!("must be between 8 and 10000, got {max_headers}"),
        ));
    }
    let max_body_bytes = s.max_body_bytes.unwrap_or(raw::DEFAULT_MAX_BODY_BYTES);
    if max_body_bytes == 0 {
        return Err(invalid(
            "server.max_body_bytes".into(),
            "must be at least 1".into(),
        ));
    }
    let ms = |v: Option<u64>, default: u64, path: &str| -> Result<Duration, ConfigError> {
        match v.unwrap_or(default) {
            0 => Err(invalid(path.to_owned(), "must be at least 1 ms".into())),
            v => Ok(Duration::from_millis(v)),
        }
    };
    let server = ServerConfig {
        listen,
        max_header_bytes,
        max_headers,
        max_body_bytes,
        header_timeout: ms(
            s.header_timeout_ms,
            raw::DEFAULT_HEADER_TIMEOUT_MS,
            "server.header_timeout_ms",
        )?,
        idle_timeout: ms(
            s.idle_timeout_ms,
            raw::DEFAULT_IDLE_TIMEOUT_MS,
            "server.idle_timeout_ms",
        )?,
        drain_delay: Duration::from_millis(s.drain_delay_ms.unwrap_or(raw::DEFAULT_DRAIN_DELAY_MS)),
        shutdown_grace: Duration::from_millis(
            s.shutdown_grace_ms
                .unwrap_or(raw::DEFAULT_SHUTDOWN_GRACE_MS),
        ),
        tls: s.tls.map(|t| TlsFiles {
            cert_file: t.cert_file,
            key_file: t.key_file,
        }),
    };

    let mut providers = Vec::with_capacity(raw.providers.len());
    for (id, p) in raw.providers {
        providers.push(Arc::new(provider(&id, p, &invalid, env)?));
    }

    let mut models = Vec::with_capacity(raw.models.len());
    for (name, m) in raw.models {
        let path = format!("models.{name}");
        if name.is_empty() {
            return Err(invalid(path, "model names must not be empty".into()));
        }
        let Some(index) = providers.iter().position(|p| *p.id.0 == m.provider) else {
            return Err(invalid(
                format!("{path}.provider"),
                format!(
                    "model `{name}` refers to provider `{}`, which is not configured",
                    m.provider
                ),
            ));
        };
        let upstream_model: Arc<str> = m.model.as_deref().unwrap_or(&name).into();
        if upstream_model.is_empty() {
            return Err(invalid(format!("{path}.model"), "must not be empty".into()));
        }
        let price = match m.price {
            None => None,
            Some(p) => {
                let at = |field: &str, v: f64| {
                    crate::budget::pricing::per_token(v).ok_or_else(|| {
                        invalid(
                            format!("{path}.price.{field}"),
                            "must be a number of dollars per million tokens, from 0 to 1000000"
                                .into(),
                        )
                    })
                };
                Some(crate::budget::pricing::Price {
                    input: at("input", p.input)?,
                    output: at("output", p.output)?,
                    cached_input: at("cached_input", p.cached_input.unwrap_or(p.input))?,
                })
            }
        };
        models.push(Arc::new(ModelRoute {
            deployment: DeploymentId(format!("{}/{}", m.provider, upstream_model).into()),
            public: ModelId(name.into()),
            provider: index,
            upstream_model,
            index: models.len(),
            price,
        }));
    }
    Ok(Config {
        server,
        providers,
        models,
    })
}

fn provider(
    id: &str,
    p: RawProvider,
    invalid: &dyn Fn(String, String) -> ConfigError,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ProviderConfig, ConfigError> {
    let path = format!("providers.{id}");
    let kind = match p.kind {
        RawProviderKind::Openai => ProviderKind::OpenAi,
        RawProviderKind::Anthropic => ProviderKind::Anthropic,
        RawProviderKind::Gemini => ProviderKind::Gemini,
        RawProviderKind::Mock => ProviderKind::Mock,
    };
    let endpoint = match (kind, p.base_url) {
        (ProviderKind::Mock, None) => None,
        (ProviderKind::Mock, Some(_)) => {
            return Err(invalid(
                format!("{path}.base_url"),
                "the in-process `mock` kind has no base_url; use kind = \"openai\" for shardgate-mock".into(),
            ));
        }
        (_, None) => return Err(invalid(format!("{path}.base_url"), "is required".into())),
        (_, Some(url)) => Some(endpoint(&url).map_err(|m| invalid(format!("{path}.base_url"), m))?),
    };
    if p.allow_fault_injection && kind != ProviderKind::Mock {
        return Err(invalid(
            format!("{path}.allow_fault_injection"),
            "only the `mock` kind takes fault injection".into(),
        ));
    }
    let api_key = match p.api_key_env {
        None => None,
        Some(var) => match env(&var) {
            Some(v) if !v.is_empty() => Some(Secret::new(v)),
            _ => {
                return Err(invalid(
                    format!("{path}.api_key_env"),
                    format!("environment variable `{var}` is not set"),
                ));
            }
        },
    };
    let ms = |v: Option<u64>, default: u64, field: &str| match v.unwrap_or(default) {
        0 => Err(invalid(
            format!("{path}.{field}"),
            "must be at least 1 ms".into(),
        )),
        v => Ok(Duration::from_millis(v)),
    };
    let timeouts = Timeouts {
        connect: ms(
            p.connect_timeout_ms,
            raw::DEFAULT_CONNECT_TIMEOUT_MS,
            "connect_timeout_ms",
        )?,
        first_byte: ms(
            p.first_byte_timeout_ms,
            raw::DEFAULT_FIRST_BYTE_TIMEOUT_MS,
            "first_byte_timeout_ms",
        )?,
        idle: ms(
            p.idle_timeout_ms,
            raw::DEFAULT_UPSTREAM_IDLE_TIMEOUT_MS,
            "idle_timeout_ms",
        )?,
        total: ms(
            p.total_timeout_ms,
            raw::DEFAULT_TOTAL_TIMEOUT_MS,
            "total_timeout_ms",
        )?,
    };
    if p.ca_file.is_some() && endpoint.as_ref().is_none_or(|e| e.scheme != Scheme::Https) {
        return Err(invalid(
            format!("{path}.ca_file"),
            "needs an https base_url".into(),
        ));
    }
    let key_header = match (kind, p.key_header.as_deref()) {
        (ProviderKind::Anthropic, None) => KeyHeader::XApiKey,
        (ProviderKind::Gemini, None) => KeyHeader::XGoogApiKey,
        (ProviderKind::OpenAi | ProviderKind::Mock, None | Some("authorization")) => {
            KeyHeader::Bearer
        }
        (ProviderKind::OpenAi, Some("api-key")) => KeyHeader::ApiKey,
        (ProviderKind::Anthropic | ProviderKind::Gemini | ProviderKind::Mock, Some(_)) => {
            return Err(invalid(
                format!("{path}.key_header"),
                "is set by the kind (Anthropic sends `x-api-key`, Gemini `x-goog-api-key`); only `openai` providers choose".into(),
            ));
        }
        (_, Some(other)) => {
            return Err(invalid(
                format!("{path}.key_header"),
                format!("`{other}` is not one of `authorization`, `api-key`"),
            ));
        }
    };
    if let Some(v) = &p.api_version {
        let url_safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if kind != ProviderKind::OpenAi || v.is_empty() || !v.chars().all(url_safe) {
            return Err(invalid(
                format!("{path}.api_version"),
                "takes a version such as `2024-10-21`, on the `openai` kind".into(),
            ));
        }
    }
    Ok(ProviderConfig {
        key_header,
        api_version: p.api_version,
        ca_file: p.ca_file,
        id: ProviderId(id.into()),
        kind,
        endpoint,
        api_key,
        protocol: p.protocol,
        timeouts,
        allow_fault_injection: p.allow_fault_injection,
    })
}

/// Parse a base URL into an [`Endpoint`]. Only `http` and `https`, no user info, no query.
pub(crate) fn endpoint(url: &str) -> Result<Endpoint, String> {
    // Messages quote the URL without any `user:pass@`, even when it does not parse.
    let shown = super::secrets::without_userinfo(url);
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("invalid URL `{shown}`: {e}"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        Some(other) => return Err(format!("unsupported scheme `{other}` (use http or https)")),
        None => return Err(format!("invalid URL `{shown}`: missing scheme")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("invalid URL `{shown}`: missing host"))?;
    if authority.as_str().contains('@') {
        return Err("credentials in the URL are not allowed; use api_key_env".into());
    }
    if uri.query().is_some() {
        return Err("a query string is not allowed in base_url".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("invalid URL `{shown}`: missing host"));
    }
    let port = authority.port_u16().unwrap_or(match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    });
    Ok(Endpoint {
        scheme,
        host: host.into(),
        port,
        base_path: uri.path().trim_end_matches('/').into(),
        authority: authority.as_str().into(),
    })
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn messages_never_quote_user_info() {
        for url in [
            "https://user:hunter2-secret@api.example.com:99999/v1",
            "https://user:hunter2-secret@exa mple.com/v1",
            "user:hunter2-secret@api.example.com/v1",
            "ftp://user:hunter2-secret@api.example.com/v1",
            "https://user:hunter2-secret@api.example.com/v1",
            "https://user:hunter2-secret@/v1",
        ] {
            let e = endpoint(url).err().unwrap_or_default();
            assert!(!e.is_empty(), "{url} must be refused");
            assert!(!e.contains("hunter2"), "{url}: {e}");
        }
        let e = endpoint("https://api.exa mple.com/v1").unwrap_err();
        assert!(
            e.contains("api.exa mple.com"),
            "the rest is still quoted: {e}"
        );
    }
}
