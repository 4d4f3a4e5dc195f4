//! Path → endpoint, and the one wrapper every request goes through (ids, books, panics,
//! error rendering).

use std::convert::Infallible;
use std::rc::Rc;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::chat;
use super::respond::{error_response, rescue, stamp};
use crate::error::{ErrorKind, GatewayError};
use crate::metrics::labels::Route;
use crate::pipeline::body::{Finish, ResBody};
use crate::pipeline::context::RequestCtx;
use crate::pipeline::state::ShardState;
use crate::providers::Dialect;
use crate::shard::{self, rt::ConnWatch};

/// Which endpoint a method and path name; `None` for the method when the path exists but
/// not for it.
pub fn route_of(method: &Method, path: &str) -> (Route, bool) {
    let (route, want) = match path {
        "/v1/chat/completions" | "/chat/completions" => (Route::ChatCompletions, Method::POST),
        "/v1/messages" => (Route::Messages, Method::POST),
        "/v1/embeddings" | "/embeddings" => (Route::Embeddings, Method::POST),
        "/v1/models" | "/models" => (Route::Models, Method::GET),
        "/health" => (Route::Health, Method::GET),
        "/ready" => (Route::Ready, Method::GET),
        "/metrics" => (Route::Metrics, Method::GET),
        "/admin/scores" => (Route::AdminScores, Method::GET),
        "/admin/routes" => (Route::AdminRoutes, Method::GET),
        _ => return (Route::Unknown, true),
    };
    (
        route,
        *method == want || (want == Method::GET && *method == Method::HEAD),
    )
}

/// Handle one request. Never fails: errors and panics become rendered responses.
pub async fn handle(
    state: Rc<ShardState>,
    watch: Option<Rc<ConnWatch>>,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, Infallible> {
    let ctx = RequestCtx::new(state.next_request_id());
    let (route, method_ok) = route_of(req.method(), req.uri().path());
    // Kept for the access log line only when it is on (a path copy per request).
    let access = state.config.server.access_log.then(|| {
        let path = req.uri().path();
        let cut = (0..=path.len().min(256))
            .rev()
            .find(|&i| path.is_char_boundary(i))
            .unwrap_or(0);
        (req.method().clone(), Box::<str>::from(&path[..cut]))
    });
    // hyper reads a request with both framing fields as chunked and drops the length; the
    // IO layer saw both, and such a request is refused unread.
    let smuggled = watch.as_ref().is_some_and(|w| w.conflicting_framing());
    let mut finish = Finish::begin(state.clone(), watch.clone(), route, ctx.start);
    let dialect = if route == Route::Messages {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    let limit = state.config.server.max_header_bytes;
    let result = if smuggled {
        Some(Err(GatewayError::bad_request(
            "The request has both Content-Length and Transfer-Encoding; send exactly one.",
        )
        .closing()))
    } else if head_size(&req) > limit {
        Some(Err(GatewayError::new(
            ErrorKind::HeadersTooLarge,
            format!(
                "The request head is over the limit of {limit} bytes (server.max_header_bytes)."
            ),
        )))
    } else {
        shard::guarded("request", dispatch(&state, &ctx, route, method_ok, req)).await
    };
    let mut closing = false;
    let mut res = match result {
        Some(Ok(res)) => res,
        Some(Err(err)) => {
            closing = err.closes_connection();
            rescue(&state, &ctx, &err, dialect)
        }
        None => {
            state.metrics.panics.inc();
            let err = GatewayError::internal("The gateway failed while handling this request.");
            state.count_error(err.kind());
            error_response(&err, dialect)
        }
    };
    if closing {
        res.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        if let Some(w) = &watch {
            w.close_after_response();
        }
    }
    stamp(&mut res, &ctx);
    finish.set_status(res.status().as_u16());
    if let Some((method, path)) = access {
        finish.set_access(crate::pipeline::body::Access {
            id: ctx.id.clone(),
            method,
            path,
            cache: res
                .headers()
                .get(&crate::cache::directives::X_CACHE)
                .cloned(),
        });
    }
    Ok(res.map(|b| b.with_finish(finish)))
}

/// The size of a request head as sent (request line and fields, CRLFs included). hyper's
/// own limit is its read buffer, which has a floor of 8 KiB and grows by whole reads, so the
/// configured limit is checked here, exactly.
fn head_size<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + req.uri().path().len() + 12;
    let query = req.uri().query().map_or(0, |q| q.len() + 1);
    let fields: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    line + query + fields + 2
}

async fn dispatch(
    state: &Rc<ShardState>,
    ctx: &RequestCtx,
    route: Route,
    method_ok: bool,
    req: Request<Incoming>,
) -> Result<Response<ResBody>, GatewayError> {
    if !method_ok {
        return Err(GatewayError::new(
            ErrorKind::MethodNotAllowed,
            format!(
                "Method {} is not allowed on {}.",
                req.method(),
                req.uri().path()
            ),
        ));
    }
    if matches!(route, Route::AdminScores | Route::AdminRoutes) {
        admin_gate(state, &req)?;
    }
    match route {
        Route::ChatCompletions => chat::completions(state, ctx, req, Dialect::OpenAi).await,
        Route::Messages => chat::completions(state, ctx, req, Dialect::Anthropic).await,
        Route::Embeddings => super::embeddings::create(state, ctx, req).await,
        Route::Models => Ok(json(state.models_body.clone())),
        Route::Health => Ok(json(Bytes::from_static(b"{\"status\":\"ok\"}"))),
        Route::Ready if state.draining() => Err(GatewayError::new(
            ErrorKind::Draining,
            "The gateway is shutting down.",
        )),
        Route::Ready => Ok(json(Bytes::from_static(b"{\"status\":\"ready\"}"))),
        Route::Metrics => {
            let scores = state.scores.borrow().clone();
            let text = crate::metrics::render(&state.registry, &scores);
            let mut res = Response::new(ResBody::full(Bytes::from(text)));
            res.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(res)
        }
        Route::AdminScores => {
            let scores = state.scores.borrow().clone();
            let body = serde_json::to_vec(&*scores).map_err(|e| {
                GatewayError::internal("Cannot render the score table.").with_cause(e)
            })?;
            Ok(json(Bytes::from(body)))
        }
        Route::AdminRoutes => {
            let routes = crate::pipeline::routes_json(state);
            let body = serde_json::to_vec(&routes)
                .map_err(|e| GatewayError::internal("Cannot render the routes.").with_cause(e))?;
            Ok(json(Bytes::from(body)))
        }
        Route::Unknown => Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("Invalid URL ({} {}).", req.method(), req.uri().path()),
        )),
    }
}

/// `/admin/scores` and `/admin/routes` on the main listener: open while the gateway is (no
/// `[auth]`); with `[auth]`, they need the admin token, and without `[admin]` they are not
/// there at all.
fn admin_gate<B>(state: &ShardState, req: &Request<B>) -> Result<(), GatewayError> {
    if state.config.auth.is_none() {
        return Ok(());
    }
    match &state.config.admin {
        None => Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("Invalid URL ({} {}).", req.method(), req.uri().path()),
        )),
        Some(admin) if !crate::auth::admin_token::authorized(req.headers(), &admin.token) => {
            Err(GatewayError::new(
                ErrorKind::Unauthorized,
                "This route needs the admin token: Authorization: Bearer <admin token>.",
            ))
        }
        Some(_) => Ok(()),
    }
}

/// A 200 JSON response.
pub fn json(body: Bytes) -> Response<ResBody> {
    let mut res = Response::new(ResBody::full(body));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_size_counts_the_head_as_sent() {
        let raw = "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: gw\r\nx-a: bc\r\n\r\n";
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/chat/completions?x=1")
            .header("host", "gw")
            .header("x-a", "bc")
            .body(())
            .unwrap();
        assert_eq!(head_size(&req), raw.len());
    }

    #[test]
    fn routes_and_methods() {
        assert_eq!(
            route_of(&Method::POST, "/v1/chat/completions"),
            (Route::ChatCompletions, true)
        );
        assert_eq!(
            route_of(&Method::GET, "/v1/chat/completions"),
            (Route::ChatCompletions, false)
        );
        assert_eq!(route_of(&Method::HEAD, "/health"), (Route::Health, true));
        assert_eq!(route_of(&Method::GET, "/nope"), (Route::Unknown, true));
    }
}
