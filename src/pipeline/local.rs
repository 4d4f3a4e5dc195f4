//! The in-process mock provider: answers `mock` models on the shard, no network.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Response};

use super::attempts::Served;
use crate::api::Usage;
use crate::api::embeddings::EmbeddingsRequest;
use crate::config::ProviderConfig;
use crate::error::GatewayError;
use crate::metrics::labels::UpstreamOutcome;
use crate::mock::{DEFAULT_CHUNKS, Knobs, Reply};
use crate::pipeline::body::ResBody;
use crate::pipeline::state::ShardState;
use crate::providers::call::Answer;
use crate::scoring::Outcome;

/// Answer a chat request from the built-in mock. `body` is an OpenAI-shaped request (the
/// client's, or a translation of it); `answer` says how the reply reaches the client.
#[allow(clippy::too_many_arguments)]
pub fn chat(
    state: &Rc<ShardState>,
    served: &Served<'_>,
    provider: &ProviderConfig,
    body: &Bytes,
    stream: bool,
    answer: &Answer,
    headers: &HeaderMap,
) -> Result<Response<ResBody>, GatewayError> {
    let started = Instant::now();
    if provider.allow_fault_injection && headers.contains_key("x-mock-panic") {
        // Fault injection for tests of panic isolation; off unless configured.
        #[expect(clippy::panic, reason = "deliberate, opt-in fault injection for tests")]
        {
            panic!("mock fault injection: x-mock-panic");
        }
    }
    let mut knobs = Knobs::default();
    knobs
        .apply_model_suffix(&served.dep.upstream_model)
        .map_err(|e| GatewayError::bad_request(e.0))?;
    if knobs
        != (Knobs {
            chunks: knobs.chunks,
            ..Knobs::default()
        })
    {
        return Err(GatewayError::bad_request(
            "The in-process mock takes only the `chunks` knob; use shardgate-mock for faults.",
        ));
    }
    let mut scratch = body.to_vec();
    let mut reply =
        Reply::from_request(&mut scratch).map_err(|e| GatewayError::bad_request(e.0))?;
    reply.model = served
        .dep
        .upstream_model
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    let usage = Usage {
        input_tokens: reply.prompt_tokens,
        output_tokens: reply.completion_tokens(),
        ..Usage::default()
    };
    record(state, served, usage, started.elapsed());
    let res = if stream {
        if matches!(answer, Answer::Translate { .. }) {
            // The translation reads usage from the stream, and adds it back only if asked.
            reply.include_usage = true;
        }
        let events = answer
            .transcode(reply.events(knobs.chunks.unwrap_or(DEFAULT_CHUNKS)))
            .events;
        let mut res = Response::new(ResBody::chunks(events));
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        res
    } else {
        let (body, _) = answer.whole(reply.completion())?;
        let mut res = Response::new(ResBody::full(body));
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res
    };
    Ok(res)
}

/// Answer an embeddings request from the built-in mock: the same deterministic vectors as
/// `shardgate-mock` (8 dimensions unless asked otherwise).
pub fn embeddings(
    state: &Rc<ShardState>,
    served: &Served<'_>,
    req: &EmbeddingsRequest,
) -> Result<Response<ResBody>, GatewayError> {
    let texts = req.texts("mock")?;
    let dims = req.dimensions.map_or(8, |d| d as usize).clamp(1, 4096);
    let vectors: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| crate::mock::embeddings::vector(t, dims))
        .collect();
    let tokens = crate::api::embeddings::estimate_tokens(&texts);
    let usage = Usage {
        input_tokens: tokens,
        ..Usage::default()
    };
    record(state, served, usage, std::time::Duration::ZERO);
    let body = crate::api::embeddings::openai_answer(served.public, &vectors, req.base64(), tokens);
    let mut res = Response::new(ResBody::full(Bytes::from(body)));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(res)
}

/// The books of a local answer: always a success, counted like an upstream attempt.
fn record(state: &ShardState, served: &Served<'_>, usage: Usage, took: std::time::Duration) {
    let outcome = Outcome {
        deployment: served.deployment,
        ok: true,
        status: 200,
        latency: took,
        ttfb: took,
        usage: Some(usage),
        cost: None,
        at: Instant::now(),
    };
    let cost = state.record_attempt(
        served.dep.provider.get(),
        served.model.get(),
        outcome,
        UpstreamOutcome::Ok,
    );
    if let Some(tab) = served.tab {
        tab.charge(&usage, cost);
    }
}
