use super::*;

fn env_none(_: &str) -> Option<String> {
    None
}

#[test]
fn embedded_default_serves_mock() {
    let c = Config::embedded_default().unwrap();
    assert_eq!(c.server.listen, "127.0.0.1:8080");
    let m = c.model("mock").unwrap();
    assert_eq!(c.providers[m.provider].kind, ProviderKind::Mock);
    assert_eq!(&*m.deployment.0, "mock/mock");
}

#[test]
fn full_provider_validates() {
    let text = r#"
[server]
listen = "0.0.0.0:9000"
max_body_bytes = 1000

[providers.openai]
kind = "openai"
base_url = "https://api.openai.com/v1/"
api_key_env = "OPENAI_KEY"
connect_timeout_ms = 1500

[models.fast]
provider = "openai"
model = "gpt-4o-mini"
"#;
    let env = |k: &str| (k == "OPENAI_KEY").then(|| "sk-secret".to_owned());
    let c = Config::from_toml(text, "t.toml", &env).unwrap();
    let p = &c.providers[0];
    let ep = p.endpoint.as_ref().unwrap();
    assert_eq!(
        (ep.scheme, &*ep.host, ep.port, &*ep.base_path),
        (Scheme::Https, "api.openai.com", 443, "/v1")
    );
    assert_eq!(p.timeouts.connect, Duration::from_millis(1500));
    assert_eq!(format!("{:?}", p.api_key), "Some(*****)");
    assert_eq!(p.api_key.as_ref().unwrap().expose(), "sk-secret");
    assert_eq!(&*c.model("fast").unwrap().upstream_model, "gpt-4o-mini");
}

#[test]
fn unknown_fields_are_errors_naming_the_path() {
    let e = Config::from_toml(
        "[providers.x]\nkind = \"mock\"\nbase_ulr = \"http://a\"\n",
        "c.toml",
        &env_none,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("providers.x") && e.contains("base_ulr"), "{e}");
}

#[test]
fn cross_reference_errors_name_both_sides() {
    let e = Config::from_toml("[models.fast]\nprovider = \"groq\"\n", "c.toml", &env_none)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("models.fast.provider") && e.contains("`groq`"),
        "{e}"
    );
}

#[test]
fn bad_urls_and_missing_keys_are_rejected() {
    for (url, want) in [
        ("ftp://x", "unsupported scheme"),
        ("http://user:pw@x", "credentials"),
        ("http://x/v1?a=b", "query"),
        ("not a url", "invalid URL"),
    ] {
        let text = format!("[providers.p]\nkind = \"openai\"\nbase_url = \"{url}\"\n");
        let e = Config::from_toml(&text, "c", &env_none)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("providers.p.base_url") && e.contains(want),
            "{url}: {e}"
        );
    }
    let text =
        "[providers.p]\nkind = \"openai\"\nbase_url = \"http://x\"\napi_key_env = \"NOPE\"\n";
    let e = Config::from_toml(text, "c", &env_none)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("providers.p.api_key_env") && e.contains("NOPE"),
        "{e}"
    );
}

#[test]
fn every_toml_in_the_repo_loads() {
    // Examples cannot rot: every tuning profile and every gateway config in the repo validates.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    stack.push(path);
                }
                continue;
            }
            if !name.ends_with(".toml")
                || name == "Cargo.toml"
                || name == "rust-toolchain.toml"
                || name.ends_with("clippy.toml")
                || name == "rustfmt.toml"
            {
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            if rel.starts_with("tuning/") || name == "tuning.toml" {
                Tuning::from_toml(&text, &rel, (0..128).collect())
                    .unwrap_or_else(|e| panic!("{e}"));
            } else if rel.starts_with("loadtest/scenarios/") {
                continue; // load scenarios are checked by the loadtest crate
            } else {
                let env = |_: &str| Some("test-key".to_owned());
                Config::from_toml(&text, &rel, &env).unwrap_or_else(|e| panic!("{e}"));
            }
            seen += 1;
        }
    }
    assert!(
        seen >= 4,
        "expected the shipped tuning profiles and configs, saw {seen}"
    );
}

#[test]
fn kinds_choose_their_key_header_and_prices_are_checked() {
    let env = |_: &str| Some("k".to_owned());
    let text = "[providers.a]\nkind = \"anthropic\"\nbase_url = \"https://api.anthropic.com/v1\"\napi_key_env = \"K\"\n[providers.g]\nkind = \"gemini\"\nbase_url = \"https://generativelanguage.googleapis.com/v1beta\"\n[models.m]\nprovider = \"a\"\nprice = { input = 3.0, output = 15.0 }\n";
    let c = Config::from_toml(text, "c", &env).unwrap();
    assert_eq!(c.providers[0].key_header, crate::config::KeyHeader::XApiKey);
    assert_eq!(
        c.providers[1].key_header,
        crate::config::KeyHeader::XGoogApiKey
    );
    let p = c.deployments[c.models[0].deployments[0].get()]
        .price
        .unwrap();
    assert_eq!(
        (p.input, p.cached_input, p.output),
        (3_000_000, 3_000_000, 15_000_000)
    );
    let e = Config::from_toml(
        "[providers.a]\nkind = \"anthropic\"\nbase_url = \"https://h/v1\"\nkey_header = \"api-key\"\n",
        "c",
        &env,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("providers.a.key_header"), "{e}");
    let e = Config::from_toml(
        "[providers.a]\nkind = \"anthropic\"\nbase_url = \"https://h/v1\"\n[models.m]\nprovider = \"a\"\nprice = { input = -1.0, output = 1.0 }\n",
        "c",
        &env,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("models.m.price.input"), "{e}");
}

#[test]
fn server_limits_are_checked_with_their_floors() {
    for (field, value, want) in [
        ("max_header_bytes", "512", "at least 1024"),
        ("max_headers", "3", "between 8 and 10000"),
        ("max_headers", "100000", "between 8 and 10000"),
    ] {
        let text = format!("[server]\n{field} = {value}\n");
        let e = Config::from_toml(&text, "c", &env_none)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("server.{field}")) && e.contains(want),
            "{e}"
        );
    }
    let c = Config::from_toml("[server]\nmax_headers = 20\n", "c", &env_none).unwrap();
    assert_eq!(c.server.max_headers, 20);
    let c = Config::from_toml("", "c", &env_none).unwrap();
    assert_eq!(c.server.max_headers, super::raw::DEFAULT_MAX_HEADERS);
}

const TWO_PROVIDERS: &str = r#"
[providers.azure]
kind = "openai"
base_url = "https://east.example.com/v1"
first_byte_timeout_ms = 45000

[providers.openai]
kind = "openai"
base_url = "https://api.openai.com/v1"
"#;

fn with_providers(models: &str) -> Result<Config, ConfigError> {
    Config::from_toml(&format!("{TWO_PROVIDERS}\n{models}"), "c.toml", &env_none)
}

fn error_of(models: &str) -> String {
    match with_providers(models) {
        Ok(_) => format!("no error for:\n{models}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_single_form_is_one_deployment_as_before() {
    let c = with_providers(
        r#"
[models.gpt-mock]
provider = "openai"
model = "mock"
price = { input = 2.5, output = 10.0 }

[models.plain]
provider = "azure"
"#,
    )
    .unwrap();
    // What `ModelRoute` said before deployments existed.
    let m = c.model("gpt-mock").unwrap();
    assert_eq!(
        (
            m.provider,
            &*m.upstream_model,
            m.deployment.as_str(),
            m.index
        ),
        (1, "mock", "openai/mock", 0)
    );
    let price = crate::budget::pricing::Price {
        input: 2_500_000,
        output: 10_000_000,
        cached_input: 2_500_000,
    };
    assert_eq!(c.deployments[m.deployments[0].get()].price, Some(price));
    let p = c.model("plain").unwrap();
    assert_eq!(
        (
            p.provider,
            &*p.upstream_model,
            p.deployment.as_str(),
            p.index
        ),
        (0, "plain", "azure/plain", 1)
    );
    assert_eq!(c.deployments[p.deployments[0].get()].price, None);
    // The same thing as one deployment with every default.
    assert_eq!(c.deployments.len(), 2);
    assert_eq!(m.deployments, [DeploymentIdx(0)]);
    assert_eq!(p.deployments, [DeploymentIdx(1)]);
    assert_eq!(
        c.deployment(DeploymentIdx(0)),
        Some(&Deployment {
            id: DeploymentId("openai/mock".into()),
            provider: ProviderIdx(1),
            upstream_model: "mock".into(),
            weight: 1,
            price: Some(price),
            quality: None,
            timeouts: c.providers[1].timeouts,
            max_in_flight: None,
            max_context_tokens: None,
            caps: Capabilities::ALL,
            tags: Vec::new(),
            models: vec![ModelIdx(0)],
        })
    );
    assert_eq!(c.deployments[1].timeouts, c.providers[0].timeouts);
    assert_eq!(
        c.deployments[1].timeouts.first_byte,
        Duration::from_millis(45_000)
    );
    for m in [m, p] {
        assert_eq!(m.strategy, Strategy::LowestLatency);
        assert!(m.fallbacks.is_empty() && m.context_window_fallbacks.is_empty());
        assert!(m.content_policy_fallbacks.is_empty() && !m.allow_pin);
        assert_eq!(m.queue_max, raw::DEFAULT_QUEUE_MAX);
        assert_eq!(
            m.queue_timeout,
            Duration::from_millis(raw::DEFAULT_QUEUE_TIMEOUT_MS)
        );
        assert_eq!(
            c.model_at(m.idx()).map(|x| x.public.as_str()),
            Some(m.public.as_str())
        );
    }
    assert_eq!(c.routing, defaults_routing());
}

fn defaults_routing() -> RoutingConfig {
    use crate::routing::{breaker, retry};
    RoutingConfig {
        max_attempts: retry::DEFAULT_MAX_ATTEMPTS,
        request_timeout: retry::DEFAULT_REQUEST_TIMEOUT,
        backoff: crate::routing::retry::Backoff::default(),
        budget: RetryBudgetConfig {
            ratio: retry::DEFAULT_BUDGET_RATIO,
            floor_per_sec: retry::DEFAULT_BUDGET_FLOOR_PER_SEC,
            window: retry::DEFAULT_BUDGET_WINDOW,
        },
        breaker: breaker::BreakerConfig::default(),
    }
}

const FULL: &str = r#"
[models.gpt-4o]
strategy = "weighted"
fallbacks = ["gpt-4o-mini", "claude"]
context_window_fallbacks = ["gpt-4o-long"]
content_policy_fallbacks = ["claude"]
allow_pin = true
queue_max = 8
queue_timeout_ms = 1500

[[models.gpt-4o.deployments]]
id = "azure-east"
provider = "azure"
model = "gpt-4o-2024-08-06"
weight = 2
price = { input = 2.5, output = 10.0, cached_input = 1.25 }
quality = 0.9
connect_timeout_ms = 2000
first_byte_timeout_ms = 20000
idle_timeout_ms = 30000
total_timeout_ms = 300000
max_in_flight = 100
max_context_tokens = 128000
tools = true
vision = false
json_mode = false
tags = ["eu", "fast"]

[[models.gpt-4o.deployments]]
provider = "openai"

[models.gpt-4o-mini]
provider = "openai"

[models.gpt-4o-long]
strategy = "round_robin"
[[models.gpt-4o-long.deployments]]
id = "openai-no-tools"
provider = "openai"
model = "gpt-4o"
tools = false

[models.claude]
provider = "azure"
model = "claude-sonnet"
"#;

#[test]
fn the_deployments_form_fills_every_field() {
    let c = with_providers(FULL).unwrap();
    let names: Vec<&str> = c.models.iter().map(|m| m.public.as_str()).collect();
    assert_eq!(names, ["claude", "gpt-4o", "gpt-4o-long", "gpt-4o-mini"]);
    let idx = |name: &str| c.model(name).unwrap().idx();
    let m = c.model("gpt-4o").unwrap();
    assert_eq!(m.strategy, Strategy::Weighted);
    assert_eq!(m.fallbacks, [idx("gpt-4o-mini"), idx("claude")]);
    assert_eq!(m.context_window_fallbacks, [idx("gpt-4o-long")]);
    assert_eq!(m.content_policy_fallbacks, [idx("claude")]);
    assert!(m.allow_pin);
    assert_eq!(
        (m.queue_max, m.queue_timeout),
        (8, Duration::from_millis(1500))
    );
    assert_eq!(
        c.model("gpt-4o-long").unwrap().strategy,
        Strategy::RoundRobin
    );

    let ds: Vec<(DeploymentIdx, &Deployment)> = c.deployments_of(m).collect();
    assert_eq!(ds.len(), 2);
    let (east_idx, east) = ds[0];
    assert_eq!(
        c.deployment_by_id("azure-east").map(|(i, _)| i),
        Some(east_idx)
    );
    assert_eq!(
        east,
        &Deployment {
            id: DeploymentId("azure-east".into()),
            provider: ProviderIdx(0),
            upstream_model: "gpt-4o-2024-08-06".into(),
            weight: 2,
            price: Some(crate::budget::pricing::Price {
                input: 2_500_000,
                output: 10_000_000,
                cached_input: 1_250_000,
            }),
            quality: Some(0.9),
            timeouts: Timeouts {
                connect: Duration::from_millis(2000),
                first_byte: Duration::from_millis(20_000),
                idle: Duration::from_millis(30_000),
                total: Duration::from_millis(300_000),
            },
            max_in_flight: Some(100),
            max_context_tokens: Some(128_000),
            caps: Capabilities {
                tools: true,
                vision: false,
                json_mode: false,
            },
            tags: vec!["eu".into(), "fast".into()],
            models: vec![idx("gpt-4o")],
        }
    );
    assert!(east.has_tags(["fast"].into_iter()) && !east.has_tags(["us"].into_iter()));
    assert!(east.caps.covers(Capabilities {
        tools: true,
        ..Capabilities::NONE
    }));
    assert!(!east.caps.covers(Capabilities {
        vision: true,
        ..Capabilities::NONE
    }));
    // The second one: every default, the upstream name from the public one.
    let (_, second) = ds[1];
    assert_eq!(
        (second.id.as_str(), second.provider, &*second.upstream_model),
        ("openai/gpt-4o", ProviderIdx(1), "gpt-4o")
    );
    assert_eq!(
        (second.weight, second.quality, second.price, second.caps),
        (1, None, None, Capabilities::ALL)
    );
    assert_eq!(second.timeouts, c.providers[1].timeouts);
    // `ModelRoute`'s single-provider view is the first deployment.
    assert_eq!(
        (m.provider, &*m.upstream_model, m.deployment.as_str()),
        (0, "gpt-4o-2024-08-06", "azure-east")
    );
    // The same provider + model under another id is another deployment.
    let (long_idx, long) = c.deployment_by_id("openai-no-tools").unwrap();
    assert_eq!(c.model("gpt-4o-long").unwrap().deployments, [long_idx]);
    assert_eq!((&*long.upstream_model, long.caps.tools), ("gpt-4o", false));
    // The flat list has every deployment once, in order of first listing.
    let ids: Vec<&str> = c.deployments.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "azure/claude-sonnet",
            "azure-east",
            "openai/gpt-4o",
            "openai-no-tools",
            "openai/gpt-4o-mini"
        ]
    );
    for (i, d) in c.deployments.iter().enumerate() {
        for m in &d.models {
            assert!(
                c.models[m.get()]
                    .deployments
                    .contains(&DeploymentIdx(i as u32))
            );
        }
    }
}

#[test]
fn the_routing_section_fills_every_field() {
    let c = with_providers(
        r#"
[routing]
max_attempts = 4
request_timeout_ms = 90000
backoff_base_ms = 20
backoff_max_ms = 1000
retry_after_cap_ms = 3000
retry_budget_ratio = 0.25
retry_budget_floor_per_sec = 2
retry_budget_window_ms = 20000

[routing.breaker]
consecutive_failures = 3
error_ratio = 0.6
min_volume = 10
window_ms = 15000
base_cooldown_ms = 1000
max_cooldown_ms = 60000
"#,
    )
    .unwrap();
    let ms = Duration::from_millis;
    assert_eq!(
        c.routing,
        RoutingConfig {
            max_attempts: 4,
            request_timeout: ms(90_000),
            backoff: crate::routing::retry::Backoff {
                base: ms(20),
                max: ms(1000),
                retry_after_cap: ms(3000),
            },
            budget: RetryBudgetConfig {
                ratio: 0.25,
                floor_per_sec: 2,
                window: ms(20_000),
            },
            breaker: crate::routing::breaker::BreakerConfig {
                consecutive_failures: 3,
                error_ratio: 0.6,
                min_volume: 10,
                window: ms(15_000),
                base_cooldown: ms(1000),
                max_cooldown: ms(60_000),
            },
        }
    );
    // An empty section is every default.
    let c = with_providers("[routing]\n[routing.breaker]\n").unwrap();
    assert_eq!(c.routing, defaults_routing());
    // The budget it builds takes the floor: 2/s over 20 s with no requests.
    let mut budget = RetryBudgetConfig {
        ratio: 0.0,
        floor_per_sec: 2,
        window: ms(1000),
    }
    .budget();
    let now = std::time::Instant::now();
    assert!(budget.try_retry(now) && budget.try_retry(now) && !budget.try_retry(now));
}

#[test]
fn routing_values_out_of_range_name_their_path() {
    for (section, field, value, want) in [
        ("routing", "max_attempts", "0", "between 1 and 10"),
        ("routing", "max_attempts", "11", "between 1 and 10"),
        ("routing", "request_timeout_ms", "0", "at least 1 ms"),
        ("routing", "retry_budget_ratio", "1.5", "between 0 and 1"),
        ("routing", "retry_budget_ratio", "-0.1", "between 0 and 1"),
        ("routing", "retry_budget_ratio", "nan", "between 0 and 1"),
        ("routing", "retry_budget_window_ms", "0", "at least 1 ms"),
        ("routing", "backoff_base_ms", "5000", "backoff_max_ms"),
        ("routing.breaker", "consecutive_failures", "0", "at least 1"),
        ("routing.breaker", "error_ratio", "2.0", "between 0 and 1"),
        ("routing.breaker", "min_volume", "0", "at least 1"),
        ("routing.breaker", "window_ms", "0", "at least 1 ms"),
        ("routing.breaker", "base_cooldown_ms", "0", "at least 1 ms"),
        (
            "routing.breaker",
            "base_cooldown_ms",
            "400000",
            "max_cooldown_ms",
        ),
        ("routing.breaker", "cooldown_ms", "1", "unknown field"),
        ("routing", "retries", "1", "unknown field"),
    ] {
        let e = error_of(&format!("[{section}]\n{field} = {value}\n"));
        assert!(
            e.contains(&format!("{section}.{field}")) && e.contains(want),
            "{section}.{field} = {value}: {e}"
        );
    }
}

#[test]
fn model_and_deployment_errors_name_their_path_and_both_sides() {
    let one = |extra: &str| {
        format!("[models.gpt]\n[[models.gpt.deployments]]\nprovider = \"openai\"\n{extra}\n")
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "[models.gpt]\nprovider = \"openai\"\n[[models.gpt.deployments]]\nprovider = \"azure\"\n".into(),
            "models.gpt.provider",
            "one form or the other",
        ),
        (
            "[models.gpt]\nprice = { input = 1.0, output = 1.0 }\n[[models.gpt.deployments]]\nprovider = \"azure\"\n".into(),
            "models.gpt.price",
            "inside each deployment",
        ),
        (
            "[models.gpt]\ndeployments = []\n".into(),
            "models.gpt.deployments",
            "at least one deployment",
        ),
        (
            "[models.gpt]\nstrategy = \"weighted\"\n".into(),
            "models.gpt",
            "needs `provider` (one deployment) or `deployments`",
        ),
        (
            "[models.gpt]\nprovider = \"openai\"\nstrategy = \"fastest\"\n".into(),
            "models.gpt.strategy",
            "unknown variant",
        ),
        (
            "[models.gpt]\n[[models.gpt.deployments]]\nprovider = \"openai\"\n[[models.gpt.deployments]]\nprovider = \"groq\"\n".into(),
            "models.gpt.deployments[1].provider",
            "model `gpt` refers to provider `groq`, which is not configured",
        ),
        (
            "[models.gpt]\nprovider = \"openai\"\nfallbacks = [\"nope\"]\n".into(),
            "models.gpt.fallbacks[0]",
            "model `gpt` falls back to model `nope`, which is not configured",
        ),
        (
            "[models.gpt]\nprovider = \"openai\"\n[models.b]\nprovider = \"openai\"\ncontext_window_fallbacks = [\"gpt\", \"b\"]\n".into(),
            "models.b.context_window_fallbacks[1]",
            "model `b` cannot fall back to itself",
        ),
        (
            "[models.gpt]\nprovider = \"openai\"\n[models.b]\nprovider = \"openai\"\ncontent_policy_fallbacks = [\"gpt\", \"gpt\"]\n".into(),
            "models.b.content_policy_fallbacks[1]",
            "`gpt` is listed twice",
        ),
        (
            "[models.gpt]\nprovider = \"openai\"\nqueue_timeout_ms = 0\n".into(),
            "models.gpt.queue_timeout_ms",
            "at least 1 ms",
        ),
        (one("weight = 0"), "models.gpt.deployments[0].weight", "must be at least 1"),
        (one("quality = 1.5"), "models.gpt.deployments[0].quality", "between 0 and 1"),
        (one("quality = -0.5"), "models.gpt.deployments[0].quality", "between 0 and 1"),
        (one("max_in_flight = 0"), "models.gpt.deployments[0].max_in_flight", "at least 1"),
        (
            one("max_context_tokens = 0"),
            "models.gpt.deployments[0].max_context_tokens",
            "at least 1",
        ),
        (
            one("first_byte_timeout_ms = 0"),
            "models.gpt.deployments[0].first_byte_timeout_ms",
            "at least 1 ms",
        ),
        (
            one("price = { input = 1.0, output = -2.0 }"),
            "models.gpt.deployments[0].price.output",
            "dollars per million",
        ),
        (one("model = \"\""), "models.gpt.deployments[0].model", "must not be empty"),
        (one("id = \"\""), "models.gpt.deployments[0].id", "visible ASCII"),
        (one("id = \"a b\""), "models.gpt.deployments[0].id", "visible ASCII"),
        (one("id = \"a,b\""), "models.gpt.deployments[0].id", "commas"),
        (one("tags = [\"eu\", \"\"]"), "models.gpt.deployments[0].tags[1]", "visible ASCII"),
        (one("tags = [\"eu\", \"e u\"]"), "models.gpt.deployments[0].tags[1]", "spaces"),
        (one("tags = [\"eu\", \"eu\"]"), "models.gpt.deployments[0].tags[1]", "listed twice"),
        (
            one("temperature = 1"),
            "models.gpt.deployments[0].temperature",
            "unknown field",
        ),
    ];
    for (models, path, want) in cases {
        let e = error_of(&models);
        assert!(
            e.contains(&format!(": {path}: ")) && e.contains(want),
            "{models}\n=> {e}"
        );
    }
}

#[test]
fn deployments_are_shared_by_id_only_when_defined_alike() {
    // Same provider + model, default ids: one deployment listed by both models.
    let c = with_providers(
        r#"
[models.a]
[[models.a.deployments]]
provider = "openai"
model = "gpt-4o"
weight = 3
[[models.a.deployments]]
provider = "azure"
model = "gpt-4o"

[models.b]
[[models.b.deployments]]
provider = "openai"
model = "gpt-4o"
weight = 3
"#,
    )
    .unwrap();
    assert_eq!(c.deployments.len(), 2);
    let (shared, d) = c.deployment_by_id("openai/gpt-4o").unwrap();
    assert_eq!(d.models, [ModelIdx(0), ModelIdx(1)]);
    assert_eq!(
        c.model("a").unwrap().deployments,
        [shared, DeploymentIdx(1)]
    );
    assert_eq!(c.model("b").unwrap().deployments, [shared]);
    // The single form shares too, when it comes out the same.
    let c = with_providers(
        "[models.a]\nprovider = \"openai\"\nmodel = \"m\"\n[models.b]\n[[models.b.deployments]]\nprovider = \"openai\"\nmodel = \"m\"\n",
    )
    .unwrap();
    assert_eq!(c.deployments.len(), 1);
    assert_eq!(c.deployments[0].models, [ModelIdx(0), ModelIdx(1)]);
    // The same explicit id shares, even under models that name it differently.
    let c = with_providers(
        "[models.a]\n[[models.a.deployments]]\nid = \"x\"\nprovider = \"openai\"\nmodel = \"m\"\n[models.b]\n[[models.b.deployments]]\nid = \"x\"\nprovider = \"openai\"\nmodel = \"m\"\n",
    )
    .unwrap();
    assert_eq!(c.deployments.len(), 1);
    // Different ids for the same provider + model: two deployments.
    let c = with_providers(
        "[models.a]\n[[models.a.deployments]]\nid = \"x\"\nprovider = \"openai\"\nmodel = \"m\"\n[[models.a.deployments]]\nid = \"y\"\nprovider = \"openai\"\nmodel = \"m\"\nmax_in_flight = 4\n",
    )
    .unwrap();
    assert_eq!(c.deployments.len(), 2);
    assert_eq!(
        c.model("a").unwrap().deployments,
        [DeploymentIdx(0), DeploymentIdx(1)]
    );

    // Same id, different settings: an error naming both places and the setting.
    for (first, second, setting) in [
        ("weight = 3", "weight = 2", "weight"),
        ("", "max_in_flight = 10", "max_in_flight"),
        ("", "tags = [\"eu\"]", "tags"),
        ("", "total_timeout_ms = 1000", "total_timeout_ms"),
        ("price = { input = 1.0, output = 2.0 }", "", "price"),
    ] {
        let e = error_of(&format!(
            "[models.a]\n[[models.a.deployments]]\nprovider = \"azure\"\n[[models.a.deployments]]\nprovider = \"openai\"\nmodel = \"m\"\n{first}\n[models.b]\n[[models.b.deployments]]\nprovider = \"openai\"\nmodel = \"m\"\n{second}\n"
        ));
        assert!(
            e.contains(": models.b.deployments[0]: ")
                && e.contains("deployment `openai/m` is also defined at models.a.deployments[1]")
                && e.contains(&format!("different `{setting}`")),
            "{e}"
        );
    }
    let e = error_of(
        "[models.a]\n[[models.a.deployments]]\nid = \"x\"\nprovider = \"openai\"\nmodel = \"m\"\n[models.b]\n[[models.b.deployments]]\nid = \"x\"\nprovider = \"azure\"\nmodel = \"m\"\n",
    );
    assert!(
        e.contains(": models.b.deployments[0]: ")
            && e.contains("models.a.deployments[0]")
            && e.contains("different `provider`"),
        "{e}"
    );
    // Listed twice in one model.
    let e = error_of(
        "[models.a]\n[[models.a.deployments]]\nprovider = \"openai\"\nmodel = \"m\"\n[[models.a.deployments]]\nprovider = \"openai\"\nmodel = \"m\"\n",
    );
    assert!(
        e.contains(": models.a.deployments[1].id: ")
            && e.contains("listed twice in model `a` (first at models.a.deployments[0])"),
        "{e}"
    );
}

const ADMIN_TOKEN: &str = "adm-0123456789abcdef0123456789abcdef";

fn admin_env(k: &str) -> Option<String> {
    match k {
        "ADMIN_TOKEN" => Some(ADMIN_TOKEN.to_owned()),
        "SHORT" => Some("adm-short-token".to_owned()),
        "SPACED" => Some("adm 0123456789abcdef0123456789abcdef".to_owned()),
        _ => None,
    }
}

fn admin_error(section: &str) -> String {
    Config::from_toml(section, "c.toml", &admin_env)
        .unwrap_err()
        .to_string()
}

#[test]
fn the_admin_section_is_optional_and_fills_its_defaults() {
    assert!(Config::embedded_default().unwrap().admin.is_none());
    let c = Config::from_toml("[admin]\ntoken_env = \"ADMIN_TOKEN\"\n", "c", &admin_env).unwrap();
    let admin = c.admin.as_ref().unwrap();
    assert_eq!(admin.listen, raw::DEFAULT_ADMIN_LISTEN);
    assert_eq!(admin.listen, "127.0.0.1:8081");
    assert_eq!(admin.token.expose(), ADMIN_TOKEN);
    let shown = format!("{c:?}");
    assert!(
        !shown.contains(ADMIN_TOKEN) && shown.contains("*****"),
        "{shown}"
    );
    let c = Config::from_toml(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"ADMIN_TOKEN\"\n",
        "c",
        &admin_env,
    )
    .unwrap();
    assert_eq!(c.admin.unwrap().listen, "127.0.0.1:0");
}

#[test]
fn the_admin_section_parses_strictly() {
    let e = admin_error("[admin]\nlisten = \"127.0.0.1:0\"\n");
    assert!(e.contains("admin") && e.contains("token_env"), "{e}");
    let e = admin_error("[admin]\ntoken_env = \"ADMIN_TOKEN\"\ntoken = \"inline\"\n");
    assert!(
        e.contains("c.toml: admin") && e.contains("unknown field `token`"),
        "{e}"
    );
    let e = admin_error("[admin]\ntoken_env = 5\n");
    assert!(e.contains("admin.token_env"), "{e}");
}

#[test]
fn admin_values_are_checked_and_errors_never_quote_the_token() {
    for (section, path, want) in [
        (
            "listen = \"8081\"\ntoken_env = \"ADMIN_TOKEN\"",
            "admin.listen",
            "expected host:port",
        ),
        ("token_env = \"\"", "admin.token_env", "name an environment"),
        (
            "token_env = \"UNSET\"",
            "admin.token_env",
            "`UNSET` is not set",
        ),
        ("token_env = \"SHORT\"", "admin.token_env", "at least 32"),
        (
            "token_env = \"SPACED\"",
            "admin.token_env",
            "without spaces",
        ),
    ] {
        let e = admin_error(&format!("[admin]\n{section}\n"));
        assert!(
            e.contains(&format!("c.toml: {path}: ")) && e.contains(want),
            "{section}: {e}"
        );
        for token in ["adm-short-token", "adm 0123456789abcdef", ADMIN_TOKEN] {
            assert!(!e.contains(token), "{e}");
        }
    }
}

#[test]
fn the_admin_token_is_redacted_like_a_provider_key() {
    let c = Config::from_toml("[admin]\ntoken_env = \"ADMIN_TOKEN\"\n", "c", &admin_env).unwrap();
    let r = secrets::Redactor::from_config(&c);
    assert_eq!(
        r.redact_str(&format!("Bearer {ADMIN_TOKEN}.")),
        "Bearer [REDACTED]."
    );
}

#[test]
fn hot_keys_are_replicated_unless_turned_off() {
    let model = "[models.chat]\nprovider = \"openai\"\nmodel = \"gpt-4o\"\ncache_ttl_s = 60\n";
    let c = with_providers(model).unwrap();
    assert_eq!(c.cache.replicate_hot_keys, 64);
    let c = with_providers(&format!("{model}[cache]\nreplicate_hot_keys = 0\n")).unwrap();
    assert_eq!(c.cache.replicate_hot_keys, 0);
}

#[test]
fn the_semantic_cache_is_checked_and_resolved() {
    let model = |extra: &str| {
        format!(
            "[models.chat]\nprovider = \"openai\"\nmodel = \"gpt-4o\"\n{extra}\n\
             [models.embed]\nprovider = \"openai\"\nmodel = \"text-embedding-3-small\"\n"
        )
    };
    let c = with_providers(&format!(
        "{}\n[cache.semantic]\nembeddings = \"embed\"\nthreshold = 0.8\n",
        model("cache_ttl_s = 60\nsemantic = \"shadow\"")
    ))
    .unwrap();
    let sem = c.cache.semantic.as_ref().unwrap();
    assert_eq!(
        sem.embeddings,
        crate::config::Embeddings::Model(crate::ModelIdx(1))
    );
    assert!(sem.guard);
    let mode = c.model("chat").unwrap().semantic.unwrap();
    assert!(mode.shadow());
    assert_eq!(mode.threshold(sem.threshold), 0.8);
    // No model uses it: no semantic config, whatever `[cache.semantic]` says.
    let c = with_providers(&format!(
        "{}\n[cache.semantic]\nembeddings = \"x\"\n",
        model("")
    ));
    assert!(c.unwrap().cache.semantic.is_none());
    for (extra, tail, want) in [
        (
            "semantic = \"on\"",
            "embeddings = \"embed\"",
            "needs `cache_ttl_s`",
        ),
        (
            "cache_ttl_s = 9\nsemantic = \"maybe\"",
            "embeddings = \"embed\"",
            "`shadow`",
        ),
        ("cache_ttl_s = 9\nsemantic = \"on\"", "", "set `local` or"),
        (
            "cache_ttl_s = 9\nsemantic = \"on\"",
            "embeddings = \"nope\"",
            "`nope`",
        ),
        (
            "cache_ttl_s = 9\nsemantic = \"on\"\nsemantic_threshold = 1.5",
            "embeddings = \"embed\"",
            "semantic_threshold",
        ),
        (
            "cache_ttl_s = 9\nsemantic = \"on\"",
            "embeddings = \"embed\"\ntimeout_ms = 0",
            "timeout_ms",
        ),
        (
            "cache_ttl_s = 9\nsemantic = \"on\"",
            "embeddings = \"local\"",
            if cfg!(feature = "local-embed") {
                "local_model_dir"
            } else {
                "--features local-embed"
            },
        ),
    ] {
        let e = error_of(&format!("{}\n[cache.semantic]\n{tail}\n", model(extra)));
        assert!(e.contains(want), "{extra} / {tail}: {e}");
    }
}
