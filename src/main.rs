//! The `shardgate` binary: `serve` (default), `check-config`, `tuning detect` and `keys`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use shardgate::config::{Config, Tuning};
use shardgate::runtime::{self, ServeOptions};

// mimalloc serves; with `--features dhat-heap` (scripts/heap.sh) dhat's allocator takes its
// place to record every allocation's size and backtrace: much slower, for profiling only.
#[cfg(not(feature = "dhat-heap"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static GLOBAL: dhat::Alloc = dhat::Alloc;

const USAGE: &str = "\
shardgate: a thread-per-core LLM gateway

USAGE:
    shardgate [serve] [--config FILE] [--tuning FILE] [--listen ADDR]
    shardgate check-config FILE [--tuning FILE]
    shardgate tuning detect [--root DIR]
    shardgate keys create [--id ID] [--team TEAM]
    shardgate keys hash < KEY

`tuning detect` prints a tuning profile for this machine (or for the /proc and /sys tree under
DIR) followed by suggested IRQ, RPS/XPS, memlock and NUMA settings; it changes nothing.

`keys create` makes a virtual key: it prints the key once (it is stored nowhere) and the
`[[auth.keys]]` entry that declares it by hash. `keys hash` prints the hash of a key read from
standard input (never from the command line, where other users and the shell history see it).

With no --config, shardgate serves its embedded default: a built-in mock provider answering
model `mock` on 127.0.0.1:8080 (no keys, no network).
Logs go to stderr (RUST_LOG sets the level, default info; the access log, when on, at any level
unless RUST_LOG names `shardgate::access`).";

struct Args {
    command: String,
    config: Option<PathBuf>,
    tuning: Option<PathBuf>,
    listen: Option<String>,
    /// `tuning detect`: the subcommand word and the root to read.
    sub: Option<String>,
    root: Option<PathBuf>,
    /// `keys create`: the key's id and team.
    id: Option<String>,
    team: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        command: "serve".into(),
        config: None,
        tuning: None,
        listen: None,
        sub: None,
        root: None,
        id: None,
        team: None,
    };
    let mut it = std::env::args().skip(1).peekable();
    if let Some(first) = it.peek()
        && !first.starts_with('-')
    {
        args.command = it.next().unwrap_or_default();
    }
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--config" | "-c" => args.config = Some(value("--config")?.into()),
            "--tuning" | "-t" => args.tuning = Some(value("--tuning")?.into()),
            "--listen" | "-l" => args.listen = Some(value("--listen")?),
            "--root" if args.command == "tuning" => args.root = Some(value("--root")?.into()),
            "--id" if args.command == "keys" => args.id = Some(value("--id")?),
            "--team" if args.command == "keys" => args.team = Some(value("--team")?),
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--version" | "-V" => {
                println!("shardgate {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other
                if args.command == "check-config"
                    && args.config.is_none()
                    && !other.starts_with('-') =>
            {
                args.config = Some(other.into());
            }
            other if matches!(args.command.as_str(), "tuning" | "keys") && args.sub.is_none() => {
                args.sub = Some(other.into());
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    Ok(args)
}

fn load(args: &Args) -> anyhow::Result<(Config, Tuning)> {
    let config = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::embedded_default()?,
    };
    let tuning = match &args.tuning {
        Some(p) => Tuning::load(p)?,
        None => Tuning::embedded_default()?,
    };
    Ok((config, tuning))
}

/// `tuning detect`: read the machine (or a fixture tree), print the profile; write nothing else.
fn detect_tuning(root: Option<PathBuf>) -> anyhow::Result<()> {
    use shardgate::detect;
    let (root, io_uring) = match root {
        Some(r) => (r, detect::IoUring::NotProbed),
        None => (PathBuf::from("/"), detect::live::probe_io_uring()),
    };
    let detected = detect::detect(&root, io_uring)?;
    let plan = detect::plan(&detected);
    print!(
        "{}",
        detect::render(&detected, &plan, &root.display().to_string())
    );
    Ok(())
}

/// `keys create` and `keys hash`.
fn keys(args: &Args) -> anyhow::Result<()> {
    use shardgate::auth::key;
    match args.sub.as_deref() {
        Some("create") => {
            let rng = ring::rand::SystemRandom::new();
            let (secret, hash) = key::generate(&rng)?;
            let id = match &args.id {
                Some(id) => id.clone(),
                None => key::new_id(&rng)?.to_string(),
            };
            println!("key: {}", secret.expose());
            println!("(shown once: it is stored nowhere, only its hash below)\n");
            println!("[[auth.keys]]\nid = \"{id}\"\nhash = \"{hash}\"");
            if let Some(team) = &args.team {
                println!("team = \"{team}\"");
            }
            Ok(())
        }
        Some("hash") => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            let presented = text.trim();
            if presented.is_empty() {
                bail!("keys hash reads the key from standard input, and it was empty");
            }
            println!("{}", key::hash(presented));
            Ok(())
        }
        _ => bail!("keys needs a subcommand: create or hash\n\n{USAGE}"),
    }
}

fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    match args.command.as_str() {
        "check-config" => {
            if args.config.is_none() {
                bail!("check-config needs a FILE\n\n{USAGE}");
            }
            let (config, tuning) = load(&args)?;
            println!(
                "ok: {} provider(s), {} model(s), {} shard(s)",
                config.providers.len(),
                config.models.len(),
                tuning.shard_count()
            );
            Ok(())
        }
        "keys" => keys(&args),
        "tuning" => match args.sub.as_deref() {
            Some("detect") => detect_tuning(args.root),
            _ => bail!("tuning needs a subcommand: detect\n\n{USAGE}"),
        },
        "serve" => {
            let (mut config, tuning) = load(&args)?;
            if let Some(l) = &args.listen {
                config.server.listen = l.clone();
            }
            let shards = tuning.shard_count();
            let default = args.config.is_none();
            let gw = runtime::start(
                config,
                tuning,
                ServeOptions {
                    handle_signals: true,
                },
            )?;
            println!(
                "shardgate listening on http://{} ({shards} shard(s){})",
                gw.addr,
                if default {
                    ", embedded default config: model `mock`"
                } else {
                    ""
                }
            );
            if let Some(admin) = gw.admin_addr {
                println!("admin listening on http://{admin}");
            }
            tracing::info!(addr = %gw.addr, shards, "Listening.");
            gw.wait()?;
            tracing::info!("Stopped.");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

fn main() -> ExitCode {
    // dhat-heap: profile from here until `main` returns (after the shards drained on
    // SIGTERM/SIGINT), when dropping the profiler writes the JSON. Backtraces are not cut to
    // dhat's default 10 frames (only its own frames go), so each site reaches the gateway, hyper
    // or glommio frame under the allocator, `bytes` and std ones. `--help` and `--version`
    // leave by `process::exit` and write nothing.
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::builder()
        .file_name(
            std::env::var_os("SHARDGATE_DHAT_OUT").unwrap_or_else(|| "dhat-heap.json".into()),
        )
        .trim_backtraces(Some(usize::MAX))
        .build();
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    const ACCESS: &str = "shardgate::access";
    let from_env =
        || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let is_access = |m: &tracing::Metadata<'_>| m.target() == ACCESS;
    // Colour codes only on a terminal: a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The access log (`server.access_log`) has a layer of its own: its lines go through each
    // shard's buffer (`shardgate::logbuf`), and it is written at any level unless RUST_LOG
    // names it (`RUST_LOG=warn` keeps the lines an operator turned on).
    let named = std::env::var("RUST_LOG").is_ok_and(|v| v.contains(ACCESS));
    let access = tracing_subscriber::fmt::layer()
        .with_writer(shardgate::logbuf::Lines)
        .with_ansi(ansi)
        .with_filter(tracing_subscriber::filter::filter_fn(is_access))
        .with_filter(if named {
            from_env()
        } else {
            tracing_subscriber::EnvFilter::new("info")
        });
    let rest = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_filter(tracing_subscriber::filter::filter_fn(move |m| {
            !is_access(m)
        }))
        .with_filter(from_env());
    tracing_subscriber::registry()
        .with(rest)
        .with(access)
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
