//! The in-process mock provider: answers `mock` models on the shard, no network.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Response};

use crate::api::{ChatHead, Usage};
use crate::config::{ModelRoute, ProviderConfig};
use crate::error::GatewayError;
use crate::http::body::ResBody;
use crate::http::context::RequestCtx;
use crate::http::state::ShardState;
use crate::metrics::labels::UpstreamOutcome;
use crate::mock::{DEFAULT_CHUNKS, Knobs, Reply};
use crate::scoring::Outcome;

/// Answer a chat request from the built-in mock.
pub fn chat(
    state: &Rc<ShardState>,
    _ctx: &RequestCtx,
    model: &ModelRoute,
    provider: &ProviderConfig,
    head: &ChatHead,
    body: &Bytes,
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
        .apply_model_suffix(&model.upstream_model)
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
    reply.model = model
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
    let outcome = Outcome {
        deployment: model.deployment.clone(),
        ok: true,
        status: 200,
        latency: started.elapsed(),
        ttfb: started.elapsed(),
        usage: Some(usage),
        at: Instant::now(),
    };
    state.record_attempt(model.provider, outcome, UpstreamOutcome::Ok);
    let res = if head.stream {
        reply.include_usage = head.include_usage;
        let mut res = Response::new(ResBody::chunks(
            reply.events(knobs.chunks.unwrap_or(DEFAULT_CHUNKS)),
        ));
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        res
    } else {
        let mut res = Response::new(ResBody::full(reply.completion()));
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        res
    };
    Ok(res)
}
