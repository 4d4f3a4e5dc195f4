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
    let p = c.models[0].price.unwrap();
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
