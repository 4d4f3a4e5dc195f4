//! The two clients: a lean HTTP/1.1 keep-alive client on a raw socket, and HTTP/2 through
//! hyper. Both feed streamed bodies to an [`EventWatch`] that times SSE events.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::scenario::Class;
use crate::stats::{ErrorKind, Sample};

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// Times the SSE events of one streamed body as its bytes arrive.
#[derive(Debug)]
pub struct EventWatch {
    intended: Instant,
    last: Option<Instant>,
    prev_newline: bool,
    /// The last bytes seen, so markers split across reads are still found.
    tail: Vec<u8>,
    done: bool,
    error: bool,
    sample: Sample,
}

impl EventWatch {
    /// A watch for a request meant to be sent at `intended`.
    pub fn new(intended: Instant) -> Self {
        Self {
            intended,
            last: None,
            prev_newline: false,
            tail: Vec::with_capacity(32),
            done: false,
            error: false,
            sample: Sample::default(),
        }
    }

    /// Feed body bytes that arrived at `now`.
    pub fn feed(&mut self, data: &[u8], now: Instant) {
        let mut events = 0u64;
        for i in memchr::memchr_iter(b'\n', data) {
            let prev = if i == 0 {
                self.prev_newline
            } else {
                data[i - 1] == b'\n'
            };
            events += u64::from(prev);
        }
        if let Some(&b) = data.last() {
            self.prev_newline = b == b'\n';
        }
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(data);
        self.done |= memmem::find(&window, b"data: [DONE]").is_some();
        self.error |= memmem::find(&window, b"data: {\"error\"").is_some();
        let keep = window.len().saturating_sub(16);
        window.drain(..keep);
        self.tail = window;
        if events == 0 {
            return;
        }
        match self.last {
            None => self.sample.ttfc = Some(now - self.intended),
            Some(last) => self.sample.gaps.push(now - last),
        }
        // Events coalesced into one read arrived together: their gaps are zero.
        self.sample.gaps.extend(std::iter::repeat_n(
            std::time::Duration::ZERO,
            events as usize - 1,
        ));
        self.last = Some(now);
        self.sample.chunks += events;
    }

    /// The stream's sample, or why it failed (no `[DONE]`, or an error event).
    pub fn finish(mut self) -> Result<Sample, ErrorKind> {
        if self.error || !self.done {
            return Err(ErrorKind::Stream);
        }
        // `[DONE]` is the terminator, not a chunk.
        self.sample.chunks = self.sample.chunks.saturating_sub(1);
        self.sample.gaps.pop();
        Ok(self.sample)
    }
}

/// The outcome of a fully read answer: a non-2xx status is an error by class; a stream must
/// have ended well; latency runs from the intended send to now.
fn finish(status: u16, watch: Option<EventWatch>, intended: Instant) -> Result<Sample, ErrorKind> {
    let done = Instant::now();
    match status {
        200..=299 => {}
        400..=499 => return Err(ErrorKind::Status4xx),
        _ => return Err(ErrorKind::Status5xx),
    }
    let mut sample = match watch {
        Some(w) => w.finish()?,
        None => Sample::default(),
    };
    sample.latency = done - intended;
    Ok(sample)
}

/// One HTTP/1.1 keep-alive connection.
#[derive(Debug)]
pub struct H1 {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    /// The server asked to close (or the connection broke): do not reuse.
    pub closed: bool,
}

/// The request bytes of one class for a target (head and body in one write).
pub fn h1_request(class: &Class, host: &str, path: &str) -> Bytes {
    let mut out = Vec::with_capacity(class.body.len() + 256);
    out.extend_from_slice(format!("POST {path} HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
    out.extend_from_slice(b"Content-Type: application/json\r\n");
    for (k, v) in &class.headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", class.body.len()).as_bytes());
    out.extend_from_slice(&class.body);
    Bytes::from(out)
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

impl H1 {
    /// Connect with `TCP_NODELAY`.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(32 * 1024),
            pos: 0,
            closed: false,
        })
    }

    /// Read more bytes into the buffer; EOF is an error (a response was still expected).
    async fn fill(&mut self) -> Result<usize, ErrorKind> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.reserve(16 * 1024);
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) => {
                self.closed = true;
                Err(ErrorKind::Io)
            }
            Ok(n) => Ok(n),
        }
    }

    /// Send one request and read its whole answer. `intended` is when it was meant to leave.
    pub async fn request(
        &mut self,
        req: &[u8],
        stream: bool,
        intended: Instant,
    ) -> Result<Sample, ErrorKind> {
        if self.stream.write_all(req).await.is_err() {
            self.closed = true;
            return Err(ErrorKind::Io);
        }
        let head_end = loop {
            if let Some(p) = memmem::find(&self.buf[self.pos..], b"\r\n\r\n") {
                break self.pos + p + 4;
            }
            if self.buf.len() - self.pos > MAX_HEAD {
                self.closed = true;
                return Err(ErrorKind::BadResponse);
            }
            self.fill().await?;
        };
        let (status, framing, close) = parse_head(&self.buf[self.pos..head_end])?;
        self.closed |= close;
        self.pos = head_end;
        let mut watch = (stream && status == 200).then(|| EventWatch::new(intended));
        self.read_body(framing, &mut watch).await?;
        finish(status, watch, intended)
    }

    async fn read_body(
        &mut self,
        framing: Framing,
        watch: &mut Option<EventWatch>,
    ) -> Result<(), ErrorKind> {
        let mut feed = |data: &[u8]| {
            if let Some(w) = watch.as_mut() {
                w.feed(data, Instant::now());
            }
        };
        match framing {
            Framing::Length(mut left) => loop {
                let n = left.min(self.buf.len() - self.pos);
                feed(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                left -= n;
                if left == 0 {
                    return Ok(());
                }
                self.fill().await?;
            },
            Framing::UntilClose => {
                self.closed = true;
                loop {
                    feed(&self.buf[self.pos..]);
                    self.pos = self.buf.len();
                    if self.fill().await.is_err() {
                        return Ok(());
                    }
                }
            }
            Framing::Chunked => loop {
                let line = loop {
                    if let Some(p) = memmem::find(&self.buf[self.pos..], b"\r\n") {
                        break p;
                    }
                    self.fill().await?;
                };
                let size_text = &self.buf[self.pos..self.pos + line];
                let size_text = size_text.split(|&b| b == b';').next().unwrap_or_default();
                let size = std::str::from_utf8(size_text)
                    .ok()
                    .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                    .ok_or(ErrorKind::BadResponse)?;
                self.pos += line + 2;
                if size == 0 {
                    // No trailers expected: the final CRLF.
                    while self.buf.len() - self.pos < 2 {
                        self.fill().await?;
                    }
                    self.pos += 2;
                    return Ok(());
                }
                let mut left = size;
                loop {
                    let n = left.min(self.buf.len() - self.pos);
                    feed(&self.buf[self.pos..self.pos + n]);
                    self.pos += n;
                    left -= n;
                    if left == 0 {
                        break;
                    }
                    self.fill().await?;
                }
                while self.buf.len() - self.pos < 2 {
                    self.fill().await?;
                }
                self.pos += 2;
            },
        }
    }
}

/// Status, framing and whether the server will close, from a response head.
fn parse_head(head: &[u8]) -> Result<(u16, Framing, bool), ErrorKind> {
    let text = std::str::from_utf8(head).map_err(|_| ErrorKind::BadResponse)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or(ErrorKind::BadResponse)?;
    let mut framing = Framing::UntilClose;
    let mut close = status_line.starts_with("HTTP/1.0");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value.parse().map_err(|_| ErrorKind::BadResponse)?;
            framing = Framing::Length(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    Ok((status, framing, close))
}

/// An HTTP/2 connection (prior knowledge); cheap to clone, one per stream worker.
#[derive(Debug, Clone)]
pub struct H2 {
    send: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    uri: http::Uri,
}

impl H2 {
    /// Connect and hand the connection to a background task.
    pub async fn connect(addr: SocketAddr, path: &str) -> Result<Self, ErrorKind> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|_| ErrorKind::Connect)?;
        tcp.set_nodelay(true).map_err(|_| ErrorKind::Connect)?;
        let io = hyper_util::rt::TokioIo::new(tcp);
        let (send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|_| ErrorKind::Connect)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let uri = format!("http://{addr}{path}")
            .parse()
            .map_err(|_| ErrorKind::Connect)?;
        Ok(Self { send, uri })
    }

    /// Is the connection still usable?
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }

    /// Send one request and read its whole answer.
    pub async fn request(&mut self, class: &Class, intended: Instant) -> Result<Sample, ErrorKind> {
        let mut b = http::Request::post(self.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json");
        for (k, v) in &class.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b
            .body(Full::new(class.body.clone()))
            .map_err(|_| ErrorKind::BadResponse)?;
        self.send.ready().await.map_err(|_| ErrorKind::Io)?;
        let res = self
            .send
            .send_request(req)
            .await
            .map_err(|_| ErrorKind::Io)?;
        let status = res.status().as_u16();
        let mut body = res.into_body();
        let mut watch = (class.stream && status == 200).then(|| EventWatch::new(intended));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| ErrorKind::Io)?;
            if let (Some(w), Some(data)) = (watch.as_mut(), frame.data_ref()) {
                w.feed(data, Instant::now());
            }
        }
        finish(status, watch, intended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stream_bytes() -> Vec<u8> {
        let mut s = Vec::new();
        for i in 0..5 {
            s.extend_from_slice(format!("data: {{\"n\":{i}}}\n\n").as_bytes());
        }
        s.extend_from_slice(b"data: [DONE]\n\n");
        s
    }

    #[test]
    fn counts_events_across_any_split() {
        let s = stream_bytes();
        let t0 = Instant::now();
        for cut in 1..s.len() {
            let mut w = EventWatch::new(t0);
            w.feed(&s[..cut], t0 + Duration::from_millis(1));
            w.feed(&s[cut..], t0 + Duration::from_millis(3));
            let sample = w.finish().unwrap_or_else(|e| panic!("cut {cut}: {e:?}"));
            assert_eq!(sample.chunks, 5, "cut {cut}");
        }
    }

    #[test]
    fn times_first_event_and_gaps() {
        let t0 = Instant::now();
        let mut w = EventWatch::new(t0);
        let ms = Duration::from_millis;
        w.feed(b"data: a\n", t0 + ms(1));
        w.feed(b"\n", t0 + ms(5));
        w.feed(b"data: b\n\ndata: c\n\n", t0 + ms(12));
        w.feed(b"data: [DONE]\n\n", t0 + ms(13));
        let s = w.finish().unwrap();
        assert_eq!(s.ttfc, Some(ms(5)));
        assert_eq!(s.chunks, 3);
        // b after 7 ms, c together with b, and [DONE] is no chunk.
        assert_eq!(s.gaps, vec![ms(7), ms(0)]);
    }

    #[test]
    fn a_stream_without_done_or_with_an_error_fails() {
        let t0 = Instant::now();
        let mut w = EventWatch::new(t0);
        w.feed(b"data: {\"a\":1}\n\n", t0);
        assert_eq!(w.finish().unwrap_err(), ErrorKind::Stream);
        let mut w = EventWatch::new(t0);
        w.feed(b"data: {\"a\":1}\n\ndata: {\"err", t0);
        w.feed(b"or\":{\"message\":\"x\"}}\n\ndata: [DONE]\n\n", t0);
        assert_eq!(w.finish().unwrap_err(), ErrorKind::Stream);
    }

    #[test]
    fn parses_heads() {
        let (s, f, c) = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert!(matches!((s, f, c), (200, Framing::Length(12), false)));
        let (s, f, c) = parse_head(
            b"HTTP/1.1 503 x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        )
        .unwrap();
        assert!(matches!((s, f, c), (503, Framing::Chunked, true)));
        assert!(parse_head(b"HTTX 200\r\n\r\n").is_err());
    }
}
