//! The relay: an upstream SSE stream sent downstream as whole events, usage teed out, ending
//! only on the stream's real terminal event; and whole-body reads with their timeouts.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use super::attempt::Attempt;
use super::body::BodyCollector;
use crate::api::Usage;
use crate::api::sse::EventSplitter;
use crate::error::{ErrorKind, GatewayError};
use crate::metrics::labels::UpstreamOutcome;
use crate::providers::Dialect;
use crate::providers::call::{Incomplete, StreamMode, UNREADABLE_EVENT};
use crate::shard::{self, Timer};
use crate::upstream::{PoolConn, UpBody};

/// Read a whole upstream body within the idle and total timeouts and a byte cap.
pub async fn read_all(
    mut body: UpBody,
    idle: Duration,
    deadline: Instant,
    cap: usize,
) -> Result<Bytes, GatewayError> {
    let mut collected = BodyCollector::default();
    loop {
        // Most answers are already buffered: take a ready frame without arming a timer.
        let ready = futures_lite::future::poll_once(body.frame()).await;
        let frame = match ready {
            Some(f) => Ok(f),
            None => {
                let wait = idle.min(deadline.saturating_duration_since(Instant::now()));
                shard::timeout(wait, body.frame()).await
            }
        };
        let frame = match frame {
            Err(_) => {
                return Err(GatewayError::new(
                    ErrorKind::UpstreamTimeout,
                    "The upstream provider stopped sending its answer.",
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(GatewayError::new(
                    ErrorKind::UpstreamProtocol,
                    "The connection to the upstream provider failed mid-answer.",
                )
                .with_cause(e));
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if collected.len() + data.len() > cap {
            return Err(GatewayError::new(
                ErrorKind::UpstreamProtocol,
                "The upstream answer is too large.",
            ));
        }
        collected.push(data);
    }
    Ok(collected.finish())
}

/// Relays an upstream SSE stream downstream as whole events. An upstream failure, idle
/// timeout, total timeout or early end becomes one final error event (unless the provider
/// already sent its own), never a silent truncation.
pub struct Relay {
    pub(super) attempt: Attempt,
    pub(super) upstream: Option<UpBody>,
    pub(super) conn: Option<PoolConn>,
    pub(super) splitter: EventSplitter,
    pub(super) timer: Timer,
    pub(super) idle: Duration,
    pub(super) deadline: Instant,
    pub(super) dialect: Dialect,
    pub(super) mode: StreamMode,
    /// The shard's shutdown grace is over: end with an error event.
    pub(super) cut: Rc<Cell<bool>>,
}

impl Relay {
    fn usage(&self) -> Option<Usage> {
        self.mode.usage()
    }

    fn end(&mut self, result: UpstreamOutcome) {
        self.upstream = None;
        if let Some(conn) = self.conn.take()
            && result == UpstreamOutcome::Ok
        {
            conn.release();
        }
        self.attempt.record(200, self.usage(), result);
    }

    /// End with a final error event (or quietly, if the provider already sent one).
    fn fail(
        &mut self,
        kind: ErrorKind,
        message: &str,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.fail_after(None, kind, message)
    }

    /// End with `before` (events already translated from the last read), then a final error
    /// event unless the provider already sent its own.
    fn fail_after(
        &mut self,
        before: Option<Bytes>,
        kind: ErrorKind,
        message: &str,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let result = UpstreamOutcome::from_error(kind);
        let already = self.mode.saw_error();
        let message = self.attempt.state.redactor.redact_str(message);
        let event = self.mode.fail(self.dialect, kind, &message);
        self.end(result);
        let before = before.map(|b| self.attempt.state.redactor.redact_bytes(b));
        match (before, already) {
            (None, true) => Poll::Ready(None),
            (Some(b), true) => Poll::Ready(Some(Ok(Frame::data(b)))),
            (None, false) => Poll::Ready(Some(Ok(Frame::data(event)))),
            (Some(b), false) => {
                let mut joined = Vec::with_capacity(b.len() + event.len());
                joined.extend_from_slice(&b);
                joined.extend_from_slice(&event);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(joined)))))
            }
        }
    }
}

impl Body for Relay {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.cut.get() && this.upstream.is_some() {
            return this.fail(
                ErrorKind::Draining,
                "The gateway is shutting down; the stream was ended before it was complete.",
            );
        }
        loop {
            // `upstream` is `None` once the relay has ended.
            let Some(upstream) = this.upstream.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(upstream).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let left = this.deadline.saturating_duration_since(Instant::now());
                    this.timer.reset(this.idle.min(left));
                    let Some(events) = this.splitter.push(data) else {
                        continue;
                    };
                    match this.mode.events(events) {
                        Ok(Some(out)) => {
                            // A healthy stream is the model's answer and is not scanned; once
                            // the upstream reported an error in-band, what follows is.
                            let out = if this.mode.saw_error() {
                                this.attempt.state.redactor.redact_bytes(out)
                            } else {
                                out
                            };
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::debug!(error = %e.error, "Unreadable upstream stream event.");
                            return this.fail_after(
                                e.before,
                                ErrorKind::UpstreamProtocol,
                                UNREADABLE_EVENT,
                            );
                        }
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    return this.fail(
                        ErrorKind::UpstreamProtocol,
                        "The upstream connection failed mid-stream.",
                    );
                }
                Poll::Ready(None) => {
                    let finished = if this.splitter.pending_len() == 0 {
                        this.mode.finish()
                    } else {
                        Err(Incomplete)
                    };
                    return match finished {
                        Ok(tail) => {
                            let result = if this.mode.saw_error() {
                                UpstreamOutcome::Protocol
                            } else {
                                UpstreamOutcome::Ok
                            };
                            this.end(result);
                            Poll::Ready(tail.map(|b| Ok(Frame::data(b))))
                        }
                        Err(Incomplete) => this.fail(
                            ErrorKind::UpstreamProtocol,
                            "The upstream ended the stream before it was complete.",
                        ),
                    };
                }
                Poll::Pending => {
                    return match Pin::new(&mut this.timer).poll(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(()) if Instant::now() >= this.deadline => this.fail(
                            ErrorKind::UpstreamTimeout,
                            "The upstream stream exceeded its total time limit.",
                        ),
                        Poll::Ready(()) => this.fail(
                            ErrorKind::UpstreamTimeout,
                            "The upstream stopped sending for too long.",
                        ),
                    };
                }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.upstream.is_some() {
            // The client went away mid-stream: the upstream connection is closed, not reused.
            self.conn = None;
            self.attempt
                .record(200, self.usage(), UpstreamOutcome::Cancelled);
        }
    }
}
