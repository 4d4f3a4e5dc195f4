//! hyper on glommio: an executor, and an IO adapter from futures-io streams to hyper's
//! `rt::Read`/`rt::Write`. No hyper timer: header and idle timeouts are enforced by a coarse
//! per-shard sweep over [`ConnWatch`]es instead of a timer per request.
//!
//! The adapter reads straight into hyper's uninitialised buffer (no zero-fill per read) for
//! plain TCP, and turns read errors into errors (never into EOF).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};

/// hyper executor that spawns onto the current shard.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardExec;

impl<F> hyper::rt::Executor<F> for ShardExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        // Spawned as it is (its output dropped by the task), not inside another `async`
        // block, which would hold it twice.
        glommio::spawn_local(super::guarded("hyper task", fut)).detach();
    }
}

/// A stream hyper can read into uninitialised memory.
pub trait ReadUninit {
    /// Read into `buf`, returning how many leading bytes are now initialised and filled.
    fn poll_read_uninit(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>>;
}

impl ReadUninit for glommio::net::TcpStream {
    fn poll_read_uninit(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        // SAFETY: a non-buffered glommio TcpStream reads with recv(2) (directly or after a
        // readiness poll), which only writes into the buffer and never reads it, and reports
        // how many bytes it wrote. No `&u8` into the uninitialised part is ever created by the
        // callee, and we only treat the first `n` bytes it reports as initialised.
        let bytes = unsafe { &mut *(buf as *mut [MaybeUninit<u8>] as *mut [u8]) };
        AsyncRead::poll_read(self, cx, bytes)
    }
}

/// Bytes read at most per [`poll_read_into`] when no size is reserved.
pub const SCRATCH_READ: usize = 16 * 1024;

/// Read once, appending to `buf`. With `reserve` > 0 the read goes straight into `buf`,
/// reserved for that many bytes (a body of known size lands in one buffer); otherwise onto
/// the stack and copied out at the size it came, so a connection waiting for its next
/// event holds no buffer.
pub fn poll_read_into<R: ReadUninit + Unpin>(
    reader: &mut R,
    buf: &mut bytes::BytesMut,
    reserve: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if reserve > 0 {
        buf.reserve(reserve);
        let n = ready!(Pin::new(reader).poll_read_uninit(cx, buf.spare_capacity_mut()))?;
        // SAFETY: the reader initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n) };
        return Poll::Ready(Ok(n));
    }
    let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH_READ];
    let n = ready!(Pin::new(reader).poll_read_uninit(cx, &mut scratch))?;
    // SAFETY: the reader initialised the first `n` bytes of `scratch`.
    let read = unsafe { &*(&scratch[..n] as *const [MaybeUninit<u8>] as *const [u8]) };
    buf.extend_from_slice(read);
    Poll::Ready(Ok(n))
}

/// Most bytes zeroed per read for streams that might read their buffer (TLS): one record.
const ZEROED_READ_CAP: usize = 16 * 1024 + 256;

/// Safe fallback for any futures-io reader: initialise (at most one TLS record of) the buffer.
pub fn poll_read_zeroed<R: AsyncRead + ?Sized>(
    reader: Pin<&mut R>,
    cx: &mut Context<'_>,
    buf: &mut [MaybeUninit<u8>],
) -> Poll<io::Result<usize>> {
    let len = buf.len().min(ZEROED_READ_CAP);
    let init: &mut [u8] = initialise(&mut buf[..len]);
    reader.poll_read(cx, init)
}

fn initialise(buf: &mut [MaybeUninit<u8>]) -> &mut [u8] {
    for b in buf.iter_mut() {
        b.write(0);
    }
    // SAFETY: every element was just written, so the slice is fully initialised.
    unsafe { &mut *(buf as *mut [MaybeUninit<u8>] as *mut [u8]) }
}

impl<S> ReadUninit for futures_rustls::server::TlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read_uninit(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        poll_read_zeroed(self, cx, buf)
    }
}

impl<S> ReadUninit for futures_rustls::client::TlsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read_uninit(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        poll_read_zeroed(self, cx, buf)
    }
}

/// Why the sweep ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Keep-alive idle too long: close quietly.
    Idle,
    /// A request head took too long: answer 408, then close.
    Head,
    /// Shutdown grace is over.
    Shutdown,
    /// Shed near the connection cap to make room (idle, silent or slow): close quietly.
    Shed,
}

/// The sweep's deadlines for a connection waiting on its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Accepted and not a byte yet. The listener defers accept until the first bytes
    /// (`TCP_DEFER_ACCEPT`), so a live client's request is there at accept: a connection
    /// still silent after this long has already been silent for the header timeout in the
    /// kernel (or came in through SYN cookies, and a live one speaks within a round trip).
    pub silent: Duration,
    /// A request head in progress (the first one counts from accept).
    pub head: Duration,
    /// Keep-alive with no request in progress.
    pub idle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepted at this instant; no byte read yet. The header timeout applies: a connection
    /// that never speaks is not kept for the idle timeout.
    Fresh(Instant),
    /// No request in progress since this instant.
    Idle(Instant),
    /// Request bytes arrived at this instant; the handler has not started yet.
    Head(Instant),
    /// This many requests are being handled.
    Busy(u32),
}

/// Activity of one downstream connection, watched by the shard's coarse sweep.
#[derive(Debug)]
pub struct ConnWatch {
    phase: Cell<Phase>,
    expired: Cell<Option<Expired>>,
    draining: Cell<bool>,
    waker: RefCell<Option<Waker>>,
    answers: &'static HeadAnswers,
    head_bytes: Cell<usize>,
    /// The client opened with the HTTP/2 preface: no HTTP/1.1 answers may be written, and a
    /// quiet connection is idle, not a slow request head.
    h2: Cell<bool>,
    read_any: Cell<bool>,
    wrote_in_head: Cell<bool>,
    /// The answer being written closes the connection: later bytes are the rest of a body
    /// nobody reads, never a new request head to answer.
    closing: Cell<bool>,
    /// Framing headers seen in the current request head.
    framing: RefCell<FramingScan>,
    /// A request was served on this connection: a proven client, shed last.
    served: Cell<bool>,
}

/// Static answers the IO layer writes itself, when hyper has no request to answer.
#[derive(Debug)]
pub struct HeadAnswers {
    /// The request head took too long (408).
    pub timeout: Vec<u8>,
    /// The request head is over the limit (431).
    pub too_large: Vec<u8>,
    /// The request head has more fields than allowed (431).
    pub too_many_headers: Vec<u8>,
    /// The request head could not be parsed (400).
    pub malformed: Vec<u8>,
    /// Head bytes at or over which a refused head counts as too large.
    pub limit: usize,
}

impl ConnWatch {
    /// A watch for a connection accepted now; `answers` are written to the client (best
    /// effort) when its request head times out or is refused unanswered.
    pub fn new(answers: &'static HeadAnswers) -> Rc<Self> {
        Rc::new(Self {
            phase: Cell::new(Phase::Fresh(Instant::now())),
            expired: Cell::new(None),
            draining: Cell::new(false),
            waker: RefCell::new(None),
            answers,
            head_bytes: Cell::new(0),
            wrote_in_head: Cell::new(false),
            h2: Cell::new(false),
            read_any: Cell::new(false),
            closing: Cell::new(false),
            framing: RefCell::new(FramingScan::default()),
            served: Cell::new(false),
        })
    }

    /// The answer now being written ends the connection (hyper closes after it): nothing
    /// read afterwards starts a request head, and no head answer may follow it.
    pub fn close_after_response(&self) {
        self.closing.set(true);
    }

    /// Whether the current request head carried both `Content-Length` and
    /// `Transfer-Encoding` (hyper drops the length and reads chunked; we refuse it).
    pub fn conflicting_framing(&self) -> bool {
        self.framing.borrow().conflicting()
    }

    /// hyper's own answer to a head it refused, replaced by ours (which says why): `None`
    /// when `buf` is not such an answer or one was already written for this head.
    fn head_error_answer(&self, buf: &[u8]) -> Option<&'static [u8]> {
        if self.h2.get() || !matches!(self.phase.get(), Phase::Head(_)) || self.wrote_in_head.get()
        {
            return None;
        }
        let status = buf.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
        Some(match status {
            b"431" if self.head_bytes.get() >= self.answers.limit => &self.answers.too_large,
            b"431" => &self.answers.too_many_headers,
            b"400" => &self.answers.malformed,
            _ => return None,
        })
    }

    /// What to write when hyper closes the connection during a request head without
    /// answering it (hyper drops its own 431 on an over-long head).
    fn unanswered_head(&self) -> Option<&'static [u8]> {
        if self.h2.get()
            || self.closing.get()
            || self.expired.get().is_some()
            || !matches!(self.phase.get(), Phase::Head(_))
            || self.wrote_in_head.get()
        {
            return None;
        }
        Some(if self.head_bytes.get() >= self.answers.limit {
            &self.answers.too_large
        } else {
            &self.answers.malformed
        })
    }

    /// A request's handler starts.
    pub fn request_started(&self) {
        self.served.set(true);
        let n = match self.phase.get() {
            Phase::Busy(n) => n + 1,
            _ => 1,
        };
        self.phase.set(Phase::Busy(n));
    }

    /// A request's response is complete (or was dropped).
    pub fn request_finished(&self) {
        self.phase.set(match self.phase.get() {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }

    /// `bytes` were just read from the client.
    fn on_bytes_read(&self, bytes: &[u8]) {
        let n = bytes.len();
        match self.phase.get() {
            _ if self.closing.get() => return,
            // The first head's clock runs from accept.
            Phase::Fresh(since) => {
                self.phase.set(Phase::Head(since));
                self.head_bytes.set(n);
            }
            Phase::Idle(_) => {
                self.phase.set(Phase::Head(Instant::now()));
                self.head_bytes.set(n);
                self.wrote_in_head.set(false);
                *self.framing.borrow_mut() = FramingScan::default();
            }
            Phase::Head(_) => self.head_bytes.set(self.head_bytes.get() + n),
            Phase::Busy(_) => return,
        }
        if !self.h2.get() {
            self.framing.borrow_mut().feed(bytes);
        }
    }

    /// Whether no request is in progress.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase.get(), Phase::Idle(_) | Phase::Fresh(_))
    }

    /// How readily this connection is shed, lowest first: (class, since). Class 0: it never
    /// sent a byte; 1: its first request head is still coming; 2: it has been served before
    /// (a proven client, idle or sending its next head). `since`: when it last started
    /// waiting on its client. `None` while it is serving a request or already ending.
    fn shed_rank(&self) -> Option<(u8, Instant)> {
        if self.expired.get().is_some() {
            return None;
        }
        let served = self.served.get();
        match self.phase.get() {
            Phase::Fresh(t) => Some((0, t)),
            Phase::Head(t) if !served => Some((1, t)),
            Phase::Idle(t) | Phase::Head(t) => Some((2, t)),
            Phase::Busy(_) => None,
        }
    }

    /// Whether the sweep shed this connection near the cap.
    pub fn was_shed(&self) -> bool {
        self.expired.get() == Some(Expired::Shed)
    }

    /// Ask the connection to finish its current requests and close (graceful shutdown).
    pub fn start_drain(&self) {
        self.draining.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Remember the connection task's waker (cheap when unchanged).
    pub fn register(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|s| s.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// End the connection for `why` and wake its task.
    pub fn expire(&self, why: Expired) {
        self.expired.set(Some(why));
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// The sweep's check: what, if anything, has timed out at `now`.
    pub fn check(&self, now: Instant, t: &Timeouts) -> Option<Expired> {
        if self.expired.get().is_some() {
            return None;
        }
        let waited = |since| now.saturating_duration_since(since);
        match self.phase.get() {
            Phase::Fresh(since) if waited(since) >= t.silent.min(t.head) => Some(Expired::Idle),
            Phase::Idle(since) if waited(since) >= t.idle => Some(Expired::Idle),
            Phase::Head(since) if self.h2.get() => {
                (waited(since) >= t.idle).then_some(Expired::Idle)
            }
            Phase::Head(since) if waited(since) >= t.head => Some(Expired::Head),
            _ => None,
        }
    }
}

/// The field names [`FramingScan`] looks for, lower case, with their colon.
const FRAMING_NAMES: [&[u8]; 2] = [b"content-length:", b"transfer-encoding:"];
/// Bytes of a line start that decide whether it names a framing field.
const FRAMING_PREFIX: usize = 18;

/// Finds `Content-Length` and `Transfer-Encoding` among the fields of one request head, fed
/// the head's bytes read by read (a name split between two reads is still found), and stops
/// at the blank line that ends the head. hyper drops `Content-Length` from a request that
/// also has `Transfer-Encoding` (and reads it chunked), so the request path cannot see the
/// conflict any more: the IO layer notes it on its way past. It only jumps from line to
/// line with `memchr` and looks at the first bytes of each: a few dozen ns per head.
#[derive(Debug, Default)]
pub struct FramingScan {
    content_length: bool,
    transfer_encoding: bool,
    /// The blank line was seen.
    done: bool,
    /// The last read ended inside a line already judged.
    mid_line: bool,
    /// The start of a line too short to judge yet.
    carry: [u8; FRAMING_PREFIX],
    carry_len: usize,
}

/// What the first bytes of a line say.
enum LineStart {
    /// The blank line ending the head.
    End,
    /// A framing field name (index into [`FRAMING_NAMES`]).
    Field(usize),
    /// Another line.
    Other,
    /// Too few bytes to tell.
    NeedMore,
}

fn judge_line_start(window: &[u8]) -> LineStart {
    let line = match memchr::memchr(b'\n', window) {
        Some(i) => &window[..=i],
        None => window,
    };
    let complete =
        line.len() < window.len() || line.ends_with(b"\n") || line.len() == FRAMING_PREFIX;
    match line {
        [b'\n', ..] | [b'\r', b'\n', ..] => return LineStart::End,
        [] | [b'\r'] => return LineStart::NeedMore,
        [first, ..] if !matches!(first | 0x20, b'c' | b't') => return LineStart::Other,
        _ => {}
    }
    for (i, name) in FRAMING_NAMES.iter().enumerate() {
        let n = name.len().min(line.len());
        if line[..n].eq_ignore_ascii_case(&name[..n]) {
            if n == name.len() {
                return LineStart::Field(i);
            }
            if !complete {
                return LineStart::NeedMore;
            }
        }
    }
    LineStart::Other
}

impl FramingScan {
    /// Whether the head had both framing fields.
    pub fn conflicting(&self) -> bool {
        self.content_length && self.transfer_encoding
    }

    /// Judge one line start; `false` once the head is over.
    fn judge(&mut self, window: &[u8]) -> Option<bool> {
        match judge_line_start(window) {
            LineStart::End => {
                self.done = true;
                Some(false)
            }
            LineStart::Field(0) => {
                self.content_length = true;
                Some(true)
            }
            LineStart::Field(_) => {
                self.transfer_encoding = true;
                Some(true)
            }
            LineStart::Other => Some(true),
            LineStart::NeedMore => None,
        }
    }

    /// Feed the next bytes read on the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.done {
            return;
        }
        let mut pos = 0;
        if self.carry_len > 0 {
            let mut window = [0u8; FRAMING_PREFIX];
            let have = self.carry_len;
            window[..have].copy_from_slice(&self.carry[..have]);
            let take = (FRAMING_PREFIX - have).min(bytes.len());
            window[have..have + take].copy_from_slice(&bytes[..take]);
            match self.judge(&window[..have + take]) {
                Some(false) => return,
                Some(true) => {
                    self.carry_len = 0;
                    self.mid_line = true;
                }
                None => {
                    self.carry[..have + take].copy_from_slice(&window[..have + take]);
                    self.carry_len = have + take;
                    return;
                }
            }
        }
        if self.mid_line {
            match memchr::memchr(b'\n', bytes) {
                Some(i) => {
                    pos = i + 1;
                    self.mid_line = false;
                }
                None => return,
            }
        }
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            let window = &rest[..rest.len().min(FRAMING_PREFIX)];
            match self.judge(window) {
                Some(false) => return,
                Some(true) => {}
                None => {
                    self.carry[..window.len()].copy_from_slice(window);
                    self.carry_len = window.len();
                    return;
                }
            }
            match memchr::memchr(b'\n', rest) {
                Some(i) => pos += i + 1,
                None => {
                    self.mid_line = true;
                    return;
                }
            }
        }
    }
}

/// The shard's list of live connection watches.
#[derive(Debug, Default)]
pub struct WatchList {
    list: RefCell<Vec<Weak<ConnWatch>>>,
    /// Connections shed and not closed yet.
    shedding: Cell<usize>,
}

impl WatchList {
    /// Track a connection.
    pub fn add(&self, w: &Rc<ConnWatch>) {
        self.list.borrow_mut().push(Rc::downgrade(w));
    }

    /// Expire what timed out, at most `budget` connections (the rest wait for the next
    /// sweep, so that thousands of connections opened together do not all close in one
    /// burst that stalls the shard); drop closed connections from the list.
    pub fn sweep(&self, now: Instant, timeouts: &Timeouts, budget: usize) -> usize {
        let mut expired = 0;
        self.list.borrow_mut().retain(|w| match w.upgrade() {
            None => false,
            Some(w) => {
                if expired < budget
                    && let Some(why) = w.check(now, timeouts)
                {
                    w.expire(why);
                    expired += 1;
                }
                true
            }
        });
        expired
    }

    /// Make room near the connection cap: expire up to `count` connections, less those
    /// already shed and still closing, never one serving a request. Unproven connections go
    /// first (silent ones, then slow first heads), clients served before last; the longest
    /// waiting first within each. An attacker that reconnects at once is always the youngest,
    /// so ranking by age alone would shed the idle keep-alive connections of real clients.
    /// Returns how many were shed now.
    pub fn shed(&self, count: usize) -> usize {
        let count = count.saturating_sub(self.shedding.get());
        if count == 0 {
            return 0;
        }
        let list = self.list.borrow();
        let mut waiting: Vec<((u8, Instant), Rc<ConnWatch>)> = list
            .iter()
            .filter_map(Weak::upgrade)
            .filter_map(|w| w.shed_rank().map(|rank| (rank, w)))
            .collect();
        let count = count.min(waiting.len());
        if count == 0 {
            return 0;
        }
        if count < waiting.len() {
            waiting.select_nth_unstable_by_key(count - 1, |(rank, _)| *rank);
        }
        for (_, w) in &waiting[..count] {
            w.expire(Expired::Shed);
        }
        self.shedding.set(self.shedding.get() + count);
        count
    }

    /// Connections shed and not closed yet.
    pub fn shedding(&self) -> usize {
        self.shedding.get()
    }

    /// A shed connection has closed.
    pub fn shed_closed(&self) {
        self.shedding.set(self.shedding.get().saturating_sub(1));
    }

    /// Expire every connection with `why` (used at the end of the shutdown grace, and with
    /// `Idle` at the start of a drain for connections between requests).
    pub fn expire_all(&self, why: Expired, only_idle: bool) {
        for w in self.list.borrow().iter().filter_map(Weak::upgrade) {
            if !only_idle || w.is_idle() {
                w.expire(why);
            }
        }
    }

    /// Wake every connection's task (it polls its response body again).
    pub fn wake_all(&self) {
        for w in self.list.borrow().iter().filter_map(Weak::upgrade) {
            if let Some(waker) = w.waker.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    /// Ask every connection to shut down gracefully.
    pub fn drain_all(&self) {
        for w in self.list.borrow().iter().filter_map(Weak::upgrade) {
            w.start_drain();
        }
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.list
            .borrow()
            .iter()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// Whether no connection is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// hyper IO over a futures-io stream, optionally watched for timeouts.
pub struct Io<S> {
    inner: S,
    watch: Option<Rc<ConnWatch>>,
    write_closed: bool,
    lingered: usize,
    /// Our answer to a refused head, written in place of hyper's (the rest still to write).
    replacement: &'static [u8],
}

/// Most bytes a closing downstream connection reads and drops while waiting for the
/// client's FIN (so that unread request bytes do not turn our answer into a reset).
const LINGER_MAX_BYTES: usize = 256 * 1024;

impl<S> Io<S> {
    /// Wrap a stream. Downstream connections pass their watch: they linger on close.
    pub fn new(inner: S, watch: Option<Rc<ConnWatch>>) -> Self {
        Self {
            inner,
            watch,
            write_closed: false,
            lingered: 0,
            replacement: &[],
        }
    }
}

impl<S: AsyncWrite + Unpin> Io<S> {
    /// Write what is left of a replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.replacement.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, self.replacement))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.replacement = &self.replacement[n..];
        }
        Poll::Ready(Ok(()))
    }
}

impl<S> hyper::rt::Read for Io<S>
where
    S: ReadUninit + AsyncWrite + Unpin,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(w) = &this.watch {
            match w.expired.get() {
                None => {}
                Some(Expired::Idle | Expired::Shutdown | Expired::Shed) => {
                    return Poll::Ready(Ok(()));
                }
                Some(Expired::Head) => {
                    w.wrote_in_head.set(true);
                    // Best effort: the socket buffer takes a small response at once.
                    let _ = Pin::new(&mut this.inner).poll_write(cx, &w.answers.timeout);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request head timeout",
                    )));
                }
            }
        }
        // SAFETY: `as_mut` hands out the unfilled part of hyper's buffer; `poll_read_uninit`
        // writes `n` bytes into its front and we advance by exactly that `n`.
        let n = unsafe {
            let slice = buf.as_mut();
            match Pin::new(&mut this.inner).poll_read_uninit(cx, slice) {
                Poll::Ready(Ok(n)) => {
                    if let Some(w) = this.watch.as_ref().filter(|w| n > 0 && !w.read_any.get()) {
                        w.read_any.set(true);
                        // The first `n` bytes were just written by the reader.
                        let first =
                            &*(&slice[..n.min(3)] as *const [MaybeUninit<u8>] as *const [u8]);
                        w.h2.set(first == b"PRI");
                    }
                    n
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        };
        if n > 0
            && let Some(w) = &this.watch
        {
            // SAFETY: the reader initialised the first `n` bytes of the cursor.
            let read = unsafe { &*(&buf.as_mut()[..n] as *const [MaybeUninit<u8>] as *const [u8]) };
            w.on_bytes_read(read);
        }
        // SAFETY: the reader initialised the first `n` bytes of the cursor.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl<S> hyper::rt::Write for Io<S>
where
    S: ReadUninit + AsyncWrite + Unpin,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        if let Some(w) = &this.watch {
            if let Some(answer) = w.head_error_answer(buf) {
                // hyper answers a refused head with a bare status; ours says which limit
                // or rule was broken. hyper closes the connection after it.
                w.wrote_in_head.set(true);
                this.replacement = answer;
                // What the socket does not take now goes out with the next flush.
                if let Poll::Ready(Err(e)) = this.poll_replacement(cx) {
                    return Poll::Ready(Err(e));
                }
                return Poll::Ready(Ok(buf.len()));
            }
            w.wrote_in_head.set(true);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    /// Half-close (FIN after the answer); a downstream connection then reads and drops what
    /// the client still sends until its FIN, bounded in bytes and by the idle sweep: a
    /// lingering close, so a client whose request was refused unread (413, 431) still gets
    /// the answer instead of a reset.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        if !this.write_closed {
            if let Some(answer) = this.watch.as_ref().and_then(|w| w.unanswered_head()) {
                // Best effort, once: a small answer fits the socket buffer.
                if let Some(w) = &this.watch {
                    w.wrote_in_head.set(true);
                }
                let _ = Pin::new(&mut this.inner).poll_write(cx, answer);
            }
            ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
            ready!(Pin::new(&mut this.inner).poll_close(cx))?;
            this.write_closed = true;
        }
        let Some(watch) = &this.watch else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [MaybeUninit::<u8>::uninit(); 4096];
        loop {
            // No lingering once the shard drains: a client holding its side open must not
            // hold the process (an answered connection has nothing unread to reset on).
            if watch.expired.get().is_some()
                || watch.draining.get()
                || this.lingered > LINGER_MAX_BYTES
            {
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut this.inner).poll_read_uninit(cx, &mut scratch) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(n)) => this.lingered += n,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A hyper server connection that can be shut down gracefully.
pub trait GracefulConnection: Future {
    /// Finish in-flight requests, then close (h1: no keep-alive; h2: GOAWAY).
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, E, B> GracefulConnection for hyper_util::server::conn::auto::Connection<'_, I, S, E>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>,
    S::Future: 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    B: http_body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper_util::server::conn::auto::HttpServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper_util::server::conn::auto::Connection::graceful_shutdown(self);
    }
}

/// Drives a server connection, registering its task with the [`ConnWatch`] so that the sweep
/// and the drain can wake it, and starting a graceful shutdown once a drain begins.
pub struct Watched<C> {
    conn: Pin<Box<C>>,
    watch: Rc<ConnWatch>,
    shutting_down: bool,
}

impl<C: GracefulConnection> Watched<C> {
    /// Watch `conn`.
    pub fn new(conn: C, watch: Rc<ConnWatch>) -> Self {
        Self {
            conn: Box::pin(conn),
            watch,
            shutting_down: false,
        }
    }
}

impl<C: GracefulConnection> Future for Watched<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        this.watch.register(cx.waker());
        if this.watch.draining.get() && !this.shutting_down {
            this.shutting_down = true;
            this.conn.as_mut().graceful_shutdown();
        }
        this.conn.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(head: &[u8], cuts: &[usize]) -> FramingScan {
        let mut scan = FramingScan::default();
        let mut at = 0;
        for &cut in cuts.iter().chain([head.len()].iter()) {
            scan.feed(&head[at..cut]);
            at = cut;
        }
        scan
    }

    fn answers() -> &'static HeadAnswers {
        Box::leak(Box::new(HeadAnswers {
            timeout: b"408".to_vec(),
            too_large: b"431a".to_vec(),
            too_many_headers: b"431b".to_vec(),
            malformed: b"400".to_vec(),
            limit: 100,
        }))
    }

    const HEAD: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(60);
    const T: Timeouts = Timeouts {
        silent: HEAD,
        head: HEAD,
        idle: IDLE,
    };

    #[test]
    fn a_silent_connection_gets_the_header_timeout_not_the_idle_one() {
        let w = ConnWatch::new(answers());
        let t0 = Instant::now();
        assert_eq!(w.check(t0 + HEAD / 2, &T), None);
        assert_eq!(w.check(t0 + HEAD, &T), Some(Expired::Idle));
        // Behind a deferred accept, silence gets a short grace (never more than the head).
        let deferred = Timeouts {
            silent: Duration::from_secs(1),
            ..T
        };
        assert_eq!(w.check(t0 + Duration::from_millis(999), &deferred), None);
        assert_eq!(
            w.check(t0 + Duration::from_secs(1), &deferred),
            Some(Expired::Idle)
        );
        // The first head's clock runs from accept, not from its first byte, and once a
        // byte came the silent grace no longer applies.
        let w = ConnWatch::new(answers());
        w.phase.set(Phase::Fresh(t0));
        w.on_bytes_read(b"GE");
        assert_eq!(w.check(t0 + HEAD / 2, &deferred), None);
        assert_eq!(w.check(t0 + HEAD, &T), Some(Expired::Head));
        // Between requests, the idle timeout applies.
        w.request_started();
        w.request_finished();
        assert_eq!(w.check(Instant::now() + HEAD, &T), None);
        assert!(w.check(Instant::now() + IDLE, &T).is_some());
    }

    #[test]
    fn shedding_takes_unproven_connections_first_and_never_a_busy_one() {
        let list = WatchList::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let conns: Vec<_> = (0..6).map(|_| ConnWatch::new(answers())).collect();
        for w in &conns {
            list.add(w);
        }
        conns[0].request_started(); // busy (and the oldest client)
        for (i, c) in conns.iter().enumerate().take(3).skip(1) {
            c.request_started();
            c.request_finished();
            c.phase.set(Phase::Idle(at(i as u64))); // served before, now idle
        }
        conns[3].phase.set(Phase::Head(t0)); // a slow first head
        conns[4].phase.set(Phase::Fresh(at(4))); // silent, young
        conns[5].phase.set(Phase::Fresh(at(5)));
        let shed = |list: &WatchList, n| {
            let got = list.shed(n);
            let ids: Vec<usize> = (0..6).filter(|&i| conns[i].was_shed()).collect();
            (got, ids)
        };
        // Silent ones go first, however young.
        assert_eq!(shed(&list, 2), (2, vec![4, 5]));
        // Those two are still closing: asking for two again sheds nothing more.
        assert_eq!(list.shed(2), 0);
        list.shed_closed();
        list.shed_closed();
        // Then the slow first head, then the client idle longest.
        assert_eq!(shed(&list, 2), (2, vec![1, 3, 4, 5]));
        assert_eq!(list.shed(2), 0, "two are still closing");
        list.shed_closed();
        list.shed_closed();
        assert_eq!(shed(&list, 10), (1, vec![1, 2, 3, 4, 5]));
        assert!(!conns[0].was_shed(), "a busy connection is never shed");
        drop(conns);
        list.shed_closed();
        assert_eq!(list.shed(5), 0);
        assert!(list.is_empty());
    }

    #[test]
    fn the_sweep_expires_at_most_its_budget_per_tick() {
        let list = WatchList::default();
        let conns: Vec<_> = (0..10).map(|_| ConnWatch::new(answers())).collect();
        for w in &conns {
            list.add(w);
        }
        let later = Instant::now() + HEAD;
        assert_eq!(list.sweep(later, &T, 4), 4);
        assert_eq!(list.sweep(later, &T, 4), 4);
        assert_eq!(list.sweep(later, &T, 4), 2);
        assert_eq!(list.sweep(later, &T, 4), 0);
    }

    #[test]
    fn no_head_answer_follows_a_closing_answer_or_an_expiry() {
        let w = ConnWatch::new(answers());
        w.on_bytes_read(b"POST / HTTP/1.1\r\n");
        assert!(w.unanswered_head().is_some());
        w.close_after_response();
        assert!(w.unanswered_head().is_none());
        let w = ConnWatch::new(answers());
        w.request_started();
        w.close_after_response();
        w.request_finished();
        w.on_bytes_read(b"rest of an unread body");
        assert!(w.unanswered_head().is_none());
        assert!(w.is_idle());
        let w = ConnWatch::new(answers());
        w.on_bytes_read(b"GET");
        w.expire(Expired::Shed);
        assert!(w.unanswered_head().is_none());
    }

    #[test]
    fn hypers_own_head_errors_are_replaced_by_ours() {
        let w = ConnWatch::new(answers());
        w.on_bytes_read(&[b'x'; 50]);
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n";
        assert_eq!(w.head_error_answer(hyper_431), Some(&b"431b"[..]));
        w.on_bytes_read(&[b'x'; 60]);
        assert_eq!(w.head_error_answer(hyper_431), Some(&b"431a"[..]));
        assert_eq!(
            w.head_error_answer(b"HTTP/1.1 400 Bad Request\r\n"),
            Some(&b"400"[..])
        );
        assert_eq!(
            w.head_error_answer(b"HTTP/1.1 501 Not Implemented\r\n"),
            None
        );
        w.wrote_in_head.set(true);
        assert_eq!(w.head_error_answer(hyper_431), None);
    }

    #[test]
    fn framing_conflict_is_found_in_any_case_and_any_split() {
        let both = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncOnTeNt-LeNgTh: 5\r\nX-A: b\r\nTRANSFER-ENCODING: chunked\r\n\r\n0\r\n\r\n";
        for i in 0..=both.len() {
            for j in i..=both.len() {
                let scan = scan_in_pieces(both, &[i, j]);
                assert!(scan.conflicting(), "missed with cuts at {i} and {j}");
            }
        }
    }

    #[test]
    fn framing_single_fields_and_body_bytes_are_not_a_conflict() {
        let cases: [&[u8]; 4] = [
            b"POST / HTTP/1.1\r\nContent-Length: 30\r\n\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1e\r\ncontent-length: 5\r\n",
            b"POST / HTTP/1.1\nContent-Type: x\nTransfer-Encodings: x\ncontent-length: 3\n\nabc",
            b"POST / HTTP/1.1\r\nX-Content-Length: 3\r\nX-Transfer-Encoding: chunked\r\n\r\n",
        ];
        for head in cases {
            for i in 0..=head.len() {
                assert!(
                    !scan_in_pieces(head, &[i]).conflicting(),
                    "{} cut at {i}",
                    String::from_utf8_lossy(head)
                );
            }
        }
        let lf_only = b"POST / HTTP/1.1\ncontent-length: 3\ntransfer-encoding: chunked\n\n";
        assert!(scan_in_pieces(lf_only, &[]).conflicting());
    }
}
