//! HTTP/1.1 to an upstream with no connection task: the task that makes a request writes it
//! and reads the answer on the leased connection itself.
//!
//! Why by hand: hyper's client runs a dispatcher task per connection. On a shard that costs
//! two task wake-ups per request and one per body chunk, and it decodes one chunk per
//! wake-up, so twenty SSE events that one read brought became twenty downstream writes.
//! Here one read is decoded whole, and the downstream writer sees every event it brought
//! before it flushes. Parsing is httparse's (heads, chunk sizes); [`codec`] only frames.
//! HTTP/2 keeps hyper: its streams share a connection, which needs a task.

pub mod codec;

use std::cell::Cell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures_lite::AsyncWrite;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};

use self::codec::{Decoded, Framing, Malformed};
use super::UpStream;
use super::UpstreamError;
use crate::shard::rt::{SCRATCH_READ, poll_read_into};

/// An idle HTTP/1.1 connection: the stream and nothing else (no buffer while idle).
pub struct H1Conn {
    io: UpStream,
}

/// Where a body puts its connection back when it ended cleanly and may be reused.
pub type Returned = Rc<Cell<Option<H1Conn>>>;

/// Why an exchange failed (HTTP/1.1 or HTTP/2), and whether the request certainly never left.
pub struct ExchangeError {
    /// The failure.
    pub error: UpstreamError,
    /// No byte of the request was written: it may be sent again elsewhere.
    pub unsent: bool,
}

impl H1Conn {
    /// A fresh connection.
    pub fn new(io: UpStream) -> Self {
        Self { io }
    }

    /// Whether an idle connection still looks usable: the peer has not closed it and has
    /// sent nothing unasked (an HTTP/1.1 server says nothing between answers; over TLS,
    /// such bytes are most likely a close_notify).
    pub fn idle_alive(&self) -> bool {
        self.io.idle_alive()
    }

    /// Send `req` and read the response head. The body is read from the returned
    /// response; when it ends cleanly on a reusable connection, the connection is put in
    /// `back`.
    pub async fn exchange(
        mut self,
        req: Request<Bytes>,
        back: Returned,
        max_read: usize,
    ) -> Result<Response<H1Body>, ExchangeError> {
        let (head, joined) = codec::encode_request(&req);
        let mut written = 0;
        let mut wrote = write_all(&mut self.io, &head, &mut written).await;
        if wrote.is_ok() && !joined {
            wrote = write_all(&mut self.io, req.body(), &mut written).await;
        }
        if wrote.is_ok() {
            wrote = poll_fn(|cx| Pin::new(&mut self.io).poll_flush(cx)).await;
        }
        if let Err(e) = wrote {
            return Err(ExchangeError {
                error: UpstreamError::Io(e),
                unsent: written == 0,
            });
        }
        let sent = |error| ExchangeError {
            error,
            unsent: false,
        };
        let mut buf = BytesMut::new();
        let head = loop {
            if let Some(head) = codec::parse_head(&mut buf).map_err(|e| sent(e.into()))? {
                break head;
            }
            let n = poll_fn(|cx| poll_fill(&mut self.io, &mut buf, 0, max_read, cx))
                .await
                .map_err(|e| sent(UpstreamError::Io(e)))?;
            if n == 0 {
                return Err(sent(UpstreamError::Closed));
            }
        };
        let body = H1Body {
            conn: Some(self),
            buf,
            framing: head.framing,
            eof: false,
            keep_alive: head.keep_alive,
            back,
            max_read,
        };
        let mut res = Response::new(body);
        *res.status_mut() = head.status;
        *res.version_mut() = head.version;
        *res.headers_mut() = head.headers;
        Ok(res)
    }
}

async fn write_all(io: &mut UpStream, mut bytes: &[u8], written: &mut usize) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, bytes)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        *written += n;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Read once into `buf`: straight into it for a known size past [`SCRATCH_READ`] (capped
/// at `max_read`), otherwise by way of the stack.
fn poll_fill(
    io: &mut UpStream,
    buf: &mut BytesMut,
    want: u64,
    max_read: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let want = usize::try_from(want).unwrap_or(max_read);
    let reserve = if want > SCRATCH_READ {
        want.min(max_read)
    } else {
        0
    };
    poll_read_into(io, buf, reserve, cx)
}

/// A response body read on the connection itself.
pub struct H1Body {
    /// `None` once the body ended (the connection went back or was closed).
    conn: Option<H1Conn>,
    buf: BytesMut,
    framing: Framing,
    eof: bool,
    keep_alive: bool,
    back: Returned,
    max_read: usize,
}

impl H1Body {
    /// The body ended: a clean, reusable connection goes back; anything else is closed.
    fn finish(&mut self) {
        let conn = self.conn.take();
        if self.keep_alive && !self.eof && self.buf.is_empty() {
            self.back.set(conn);
        }
        self.buf = BytesMut::new();
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        let this = &mut *self;
        loop {
            // `None` once the body ended.
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing.decode(&mut this.buf, this.eof) {
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore(want)) => {
                    match ready!(poll_fill(
                        &mut conn.io,
                        &mut this.buf,
                        want,
                        this.max_read,
                        cx
                    )) {
                        Ok(0) => this.eof = true,
                        Ok(_) => {}
                        Err(e) => {
                            this.conn = None;
                            return Poll::Ready(Some(Err(UpstreamError::Io(e))));
                        }
                    }
                }
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl From<Malformed> for UpstreamError {
    fn from(m: Malformed) -> Self {
        UpstreamError::Malformed(m)
    }
}
