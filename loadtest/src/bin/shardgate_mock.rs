//! `shardgate-mock`: a mock provider for tests and load tests that speaks OpenAI, Anthropic
//! Messages and Gemini (chat and embeddings).
//!
//! Per-process knobs are flags; per-request knobs are `x-mock-<knob>` headers or a model name
//! suffix (`mock;latency_ms=20;chunks=20`; for Gemini, on the path's model segment). See
//! `shardgate::mock::Knobs` and `shardgate::mock::server`. Faults switch at run time through
//! `PUT`/`DELETE /mock/knobs`, or on a schedule (`--fault-schedule`).

use anyhow::{Context, bail};
use shardgate::mock::Knobs;
use shardgate::mock::schedule::Schedule;
use shardgate::mock::server::{MockConfig, MockServer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
shardgate-mock: a mock provider speaking OpenAI, Anthropic Messages and Gemini

USAGE:
    shardgate-mock [--listen ADDR] [--shards N] [--cores LIST] [--tls-cert PEM --tls-key PEM]
                   [--fault-schedule SPEC] [--KNOB VALUE]...

KNOBS (per process; per request via x-mock-<knob> headers or `model;knob=value`):
    --latency-ms MS     delay before the response head (MS: 20, 0.5, 10..50 uniform,
                        exp:20 exponential mean; same for ttfc and interval)
    --ttfc-ms MS        streams: delay before the first event
    --interval-ms MS    streams: delay between events
    --chunks N          streams: content chunks (default 8)
    --status CODE       answer with this status and an error in the request's format
    --retry-after S     with --status 429: Retry-After seconds
    --stall head|body   never answer / stop after the head
    --reset-after K     streams: abort the connection after K events
    --error-after K     streams: an in-band error event after K events
    --cached-tokens N   report N of the prompt tokens as cached
    --reasoning-tokens N  report N reasoning tokens on top of the reply's
    --finish REASON     report this finish reason (Gemini SAFETY etc. blocks the content)
    --error KIND        chat: refuse as the provider does: context_window | content_policy
    --refusal 1         chat: answer, ending with the format's refusal finish reason
    --echo-auth 1       echo credential headers in injected errors

SCHEDULE (ms since start; FROM or UNTIL may be empty; later windows win):
    --fault-schedule '2000..5000:status=500;10000..:latency_ms=50'

ROUTES (POST):
    .../chat/completions, .../embeddings              OpenAI (and Azure deployment paths)
    .../v1/messages                                   Anthropic (needs anthropic-version)
    .../models/{model}:generateContent                Gemini; also :streamGenerateContent?alt=sse,
                                                      :embedContent, :batchEmbedContents

CONTROL (any shard; not counted as requests):
    PUT /mock/knobs  body `status=500;latency_ms=50`   replace the default knobs
    DELETE /mock/knobs                                  restore the start-up defaults
    GET /mock/stats                                     the counters as JSON";

fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:9090".to_owned();
    let mut shards = 1usize;
    let mut cores: Option<Vec<usize>> = None;
    let mut knobs = Knobs::default();
    let mut schedule = Schedule::default();
    let (mut tls_cert, mut tls_key) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            "--listen" => listen = args.next().context("--listen needs a value")?,
            "--tls-cert" => tls_cert = Some(args.next().context("--tls-cert needs a value")?),
            "--tls-key" => tls_key = Some(args.next().context("--tls-key needs a value")?),
            "--fault-schedule" => {
                let spec = args.next().context("--fault-schedule needs a value")?;
                schedule = Schedule::parse(&spec).map_err(|e| anyhow::anyhow!("{e}\n\n{USAGE}"))?;
            }
            "--shards" => shards = args.next().context("--shards needs a value")?.parse()?,
            "--cores" => {
                let list = args.next().context("--cores needs a value")?;
                cores = Some(
                    list.split(',')
                        .map(|c| c.trim().parse())
                        .collect::<Result<_, _>>()?,
                );
            }
            flag if flag.starts_with("--") => {
                let v = args
                    .next()
                    .with_context(|| format!("{flag} needs a value"))?;
                knobs
                    .set(&flag[2..], &v)
                    .map_err(|e| anyhow::anyhow!("{e}\n\n{USAGE}"))?;
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    let cores = match cores {
        Some(c) => c.into_iter().map(Some).collect(),
        None => vec![None; shards.max(1)],
    };
    let listen = listen
        .parse()
        .with_context(|| format!("bad --listen {listen}"))?;
    shardgate::runtime::check_environment(1)?;
    let tls = match (tls_cert, tls_key) {
        (Some(cert_file), Some(key_file)) => Some(shardgate::http::tls::server_config(
            &shardgate::config::TlsFiles {
                cert_file,
                key_file,
            },
        )?),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = MockServer::start(MockConfig {
        listen,
        cores,
        defaults: knobs,
        schedule,
        tls,
    })?;
    println!("shardgate-mock listening on {scheme}://{}", server.addr);
    server.wait();
    Ok(())
}
