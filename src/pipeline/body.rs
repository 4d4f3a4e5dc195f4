//! Downstream response bodies, and the guard that closes a request's books when its body is
//! done (or dropped because the client went away).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use super::state::ShardState;
use crate::metrics::labels::Route;
use crate::shard::rt::ConnWatch;

/// Collects a body's data frames into one `Bytes`; zero-copy when it came in one frame.
#[derive(Debug, Default)]
pub struct BodyCollector {
    first: Option<Bytes>,
    rest: BytesMut,
}

impl BodyCollector {
    /// Add one frame's data.
    pub fn push(&mut self, data: Bytes) {
        match self.first.take() {
            None if self.rest.is_empty() => self.first = Some(data),
            None => self.rest.extend_from_slice(&data),
            Some(f) => {
                self.rest.reserve(f.len() + data.len());
                self.rest.extend_from_slice(&f);
                self.rest.extend_from_slice(&data);
            }
        }
    }

    /// Bytes collected so far.
    pub fn len(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.rest.len()
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole body.
    pub fn finish(self) -> Bytes {
        self.first.unwrap_or_else(|| self.rest.freeze())
    }
}

/// A streaming body made elsewhere (e.g. an upstream SSE relay). It never errors: failures
/// become a final SSE error event.
pub type DynStream = Pin<Box<dyn Body<Data = Bytes, Error = Infallible>>>;

enum Kind {
    Full(Option<Bytes>),
    Chunks(VecDeque<Bytes>),
    Stream(DynStream),
}

/// Closes the books of one request when dropped: request metrics, in-flight gauge, the
/// connection's idle clock, and its access log line (`server.access_log`).
pub struct Finish {
    state: Rc<ShardState>,
    watch: Option<Rc<ConnWatch>>,
    route: Route,
    status: u16,
    start: Instant,
    access: Option<Box<Access>>,
}

/// What a request's access log line says beyond its status and duration.
#[derive(Debug)]
pub struct Access {
    /// `x-request-id`.
    pub id: http::HeaderValue,
    /// The method.
    pub method: http::Method,
    /// The path (no query: it could carry a secret), at most 256 bytes.
    pub path: Box<str>,
    /// The cache's verdict (`x-shardgate-cache`), if the route is cached.
    pub cache: Option<http::HeaderValue>,
}

impl Finish {
    /// Start the books of a request (in-flight + 1).
    pub fn begin(
        state: Rc<ShardState>,
        watch: Option<Rc<ConnWatch>>,
        route: Route,
        start: Instant,
    ) -> Self {
        if route.counts_in_flight() {
            state.metrics.inflight.inc();
        }
        if let Some(w) = &watch {
            w.request_started();
        }
        Self {
            state,
            watch,
            route,
            status: 200,
            start,
            access: None,
        }
    }

    /// The status the request ended with.
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    /// Log this request's line when it ends.
    pub fn set_access(&mut self, access: Access) {
        self.access = Some(Box::new(access));
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        let m = &self.state.metrics;
        let took = self.start.elapsed();
        m.request(self.route, self.status, took);
        if let Some(a) = &self.access {
            tracing::info!(
                target: "shardgate::access",
                id = a.id.to_str().unwrap_or("-"),
                method = %a.method,
                path = &*a.path,
                status = self.status,
                ms = format_args!("{:.3}", took.as_secs_f64() * 1000.0),
                cache = a.cache.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
                "request"
            );
        }
        if self.route.counts_in_flight() {
            m.inflight.dec();
        }
        if let Some(w) = &self.watch {
            w.request_finished();
        }
    }
}

/// The body of every downstream response.
pub struct ResBody {
    kind: Kind,
    finish: Option<Finish>,
}

impl ResBody {
    /// A whole body.
    pub fn full(b: Bytes) -> Self {
        Self {
            kind: Kind::Full(Some(b)),
            finish: None,
        }
    }

    /// Pre-made chunks, sent as they are.
    pub fn chunks(c: impl IntoIterator<Item = Bytes>) -> Self {
        Self {
            kind: Kind::Chunks(c.into_iter().collect()),
            finish: None,
        }
    }

    /// A streaming body.
    pub fn stream(s: DynStream) -> Self {
        Self {
            kind: Kind::Stream(s),
            finish: None,
        }
    }

    /// Attach the request's books, closed when the body is done or dropped.
    pub fn with_finish(mut self, f: Finish) -> Self {
        self.finish = Some(f);
        self
    }

    fn done(&mut self) {
        self.finish = None;
    }
}

impl Body for ResBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        let next = match &mut this.kind {
            Kind::Full(b) => b.take(),
            Kind::Chunks(c) => c.pop_front(),
            Kind::Stream(s) => match s.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Some(Ok(frame))),
                Poll::Ready(None) => None,
            },
        };
        match next {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            None => {
                this.done();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Chunks(c) => c.is_empty(),
            Kind::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Stream(s) => s.size_hint(),
            Kind::Chunks(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collector_is_zero_copy_for_one_frame_and_joins_many() {
        let one = Bytes::from_static(b"hello");
        let mut c = BodyCollector::default();
        c.push(one.clone());
        assert_eq!(c.len(), 5);
        assert_eq!(c.finish().as_ptr(), one.as_ptr());
        let mut c = BodyCollector::default();
        for part in ["a", "bc", "", "def"] {
            c.push(Bytes::from(part));
        }
        assert_eq!(c.len(), 6);
        assert_eq!(&c.finish()[..], b"abcdef");
        assert!(BodyCollector::default().finish().is_empty());
    }
}
