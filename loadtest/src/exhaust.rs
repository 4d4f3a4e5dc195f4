//! Connection exhaustion and slowloris against the gateway, with a normal client measured
//! alongside (issue 10, defect 4).
//!
//! Owns: the attackers ([`Attack`]: silent connections that never send a byte, and slowloris
//! connections that send one header byte every few seconds, both reopened when the server
//! closes them), the open-loop normal client ([`run_normal`]), the gateway's descriptors and
//! RSS from `/proc` ([`ProcSample`]), the whole measured sequence ([`run`]) and its text
//! report ([`render`]).
//! Does not: start the gateway or the mock (`scripts/exhaust.sh` and the tests do).
//!
//! Self-contained on purpose (std, tokio's `rt`/`net`/`time`/`sync`/`macros`, libc, serde and
//! no other module of this crate): the gateway crate's `tests/exhaust.rs` compiles this same
//! file, because only that crate's tests can name the gateway binary.
//! Loopback only: every entry point refuses any other address.
//!
//! Cheap by construction: every attacking socket is a task on one current-thread tokio
//! runtime (7,000 sockets cost a few MiB and almost no CPU), the normal client runs on its own
//! thread so the attack cannot delay its clock, and latency is measured from each request's
//! intended send time (open loop: a stalled server cannot hide its queue).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Largest response the normal client accepts.
const MAX_RESPONSE: usize = 1 << 20;
/// Wait after a failed attack connect before the next try.
const CONNECT_BACKOFF: Duration = Duration::from_millis(100);
/// How often [`run`] samples the gateway's `/proc` entries.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Descriptors "back to baseline": within this many of it (or 1 %, whichever is more).
pub const FD_SLACK: u64 = 8;
/// RSS "back to baseline": within this many KiB of it, plus 10 %.
pub const RSS_SLACK_KIB: u64 = 2048;

/// Refuse anything but a loopback address: this harness attacks only the local machine.
pub fn check_loopback(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{addr} is not a loopback address: this harness attacks only 127.0.0.0/8 or ::1"
        ))
    }
}

/// Raise this process's open-file limit to at least `needed`; the limit now in force, or a
/// sentence saying why it cannot be raised.
pub fn raise_nofile(needed: u64) -> Result<u64, String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(format!(
            "cannot read the open-file limit: {}",
            io::Error::last_os_error()
        ));
    }
    if lim.rlim_cur >= needed {
        return Ok(lim.rlim_cur);
    }
    let want = libc::rlimit {
        rlim_cur: needed,
        rlim_max: lim.rlim_max.max(needed),
    };
    // SAFETY: setrlimit only reads the struct we pass, which lives for the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
        return Err(format!(
            "this run needs {needed} open files, the limit is {} (hard limit {}) and raising it \
             failed ({}): raise it first (`ulimit -n {needed}` as root or with a higher hard limit)",
            lim.rlim_cur,
            lim.rlim_max,
            io::Error::last_os_error()
        ));
    }
    Ok(needed)
}

/// Open descriptors and resident memory of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProcSample {
    /// Entries of `/proc/PID/fd`.
    pub fds: u64,
    /// `VmRSS` of `/proc/PID/status`, KiB.
    pub rss_kib: u64,
}

impl ProcSample {
    /// Read them now.
    pub fn of(pid: u32) -> io::Result<Self> {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS"))?;
        Ok(Self { fds, rss_kib })
    }

    /// CPU seconds (user + system, all threads) used so far, from `/proc/PID/stat`.
    pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces): utime and stime are the
        // 12th and 13th.
        let mut rest = stat[stat.rfind(')').unwrap_or(0) + 1..].split_whitespace();
        let ticks = |f: Option<&str>| f.and_then(|t| t.parse::<u64>().ok());
        let (Some(user), Some(system)) = (ticks(rest.nth(11)), ticks(rest.next())) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected /proc/PID/stat",
            ));
        };
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Ok((user + system) as f64 / if hz > 0 { hz as f64 } else { 100.0 })
    }

    /// The larger of each field.
    fn max(self, other: Self) -> Self {
        Self {
            fds: self.fds.max(other.fds),
            rss_kib: self.rss_kib.max(other.rss_kib),
        }
    }

    /// Descriptors back to `base` (within [`FD_SLACK`] or 1 %).
    pub fn fds_back_to(&self, base: &Self) -> bool {
        self.fds <= base.fds + FD_SLACK.max(base.fds / 100)
    }

    /// RSS back to `base` (within 10 % plus [`RSS_SLACK_KIB`]).
    pub fn rss_back_to(&self, base: &Self) -> bool {
        self.rss_kib <= base.rss_kib + base.rss_kib / 10 + RSS_SLACK_KIB
    }
}

/// Why a normal request or an attack connect failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// Connect refused (nothing listens, or the listener's queue overflowed).
    ConnectRefused,
    /// Connect did not complete in time (SYNs dropped: the accept queue is full).
    ConnectTimeout,
    /// Connect failed otherwise (e.g. no local port left).
    ConnectOther,
    /// The connection was reset (or the pipe broke) before a whole answer.
    Reset,
    /// The server closed the connection (FIN) before a whole answer.
    Closed,
    /// No whole answer within the request timeout.
    Timeout,
    /// A whole answer with a status other than 200.
    Status(u16),
    /// An answer that is not valid HTTP/1.1 (or too large).
    BadResponse,
}

impl Failure {
    /// The name used in reports: `connect_refused`, `status_503`, ...
    pub fn name(self) -> String {
        match self {
            Self::ConnectRefused => "connect_refused".into(),
            Self::ConnectTimeout => "connect_timeout".into(),
            Self::ConnectOther => "connect_other".into(),
            Self::Reset => "reset".into(),
            Self::Closed => "closed".into(),
            Self::Timeout => "timeout".into(),
            Self::Status(s) => format!("status_{s}"),
            Self::BadResponse => "bad_response".into(),
        }
    }

    fn of_connect(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Self::ConnectRefused,
            io::ErrorKind::TimedOut => Self::ConnectTimeout,
            _ => Self::ConnectOther,
        }
    }

    fn of_io(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::TimedOut => Self::Timeout,
            io::ErrorKind::UnexpectedEof => Self::Closed,
            _ => Self::Reset,
        }
    }
}

fn count(map: &mut BTreeMap<String, u64>, f: Failure) {
    *map.entry(f.name()).or_default() += 1;
}

/// Latency percentiles in milliseconds (nearest rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Latency {
    fn of(mut us: Vec<u64>) -> Self {
        us.sort_unstable();
        let at = |q: f64| -> f64 {
            if us.is_empty() {
                return 0.0;
            }
            let rank = ((q * us.len() as f64).ceil() as usize).clamp(1, us.len());
            us[rank - 1] as f64 / 1000.0
        };
        Self {
            count: us.len() as u64,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// Min, median and max of some durations, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Shortest.
    pub min_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// Longest.
    pub max_ms: f64,
}

impl Spread {
    fn of(ds: &[Duration]) -> Option<Self> {
        let mut v: Vec<Duration> = ds.to_vec();
        v.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Some(Self {
            min_ms: ms(*v.first()?),
            p50_ms: ms(v[(v.len() - 1) / 2]),
            max_ms: ms(*v.last()?),
        })
    }
}

// ------------------------------------------------------------------------------------------
// The normal client
// ------------------------------------------------------------------------------------------

/// What the normal client does.
#[derive(Debug, Clone, Serialize)]
pub struct NormalConfig {
    /// Requests per second (open loop: sent on schedule whatever the answers).
    pub rate: f64,
    /// Length of the run.
    pub seconds: f64,
    /// A request fails as `timeout` (or `connect_timeout`) when its whole answer has not
    /// arrived this long after its intended send time.
    pub timeout_ms: u64,
    /// Requests per keep-alive connection before the client opens a fresh one (so new
    /// connections keep arriving, as from a load balancer); 0 keeps connections forever.
    pub reuse: u32,
    /// Most connections open at once; requests beyond wait for one (and the wait counts).
    pub max_connections: usize,
    /// Public model name for `POST /v1/chat/completions`.
    pub model: String,
}

impl Default for NormalConfig {
    fn default() -> Self {
        Self {
            rate: 50.0,
            seconds: 10.0,
            timeout_ms: 15_000,
            reuse: 20,
            max_connections: 64,
            model: "gpt-mock".into(),
        }
    }
}

/// What the normal client saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NormalReport {
    /// Requests sent (the schedule's length).
    pub requests: u64,
    /// Whole 200 answers.
    pub ok: u64,
    /// Failures by kind ([`Failure::name`]).
    pub errors: BTreeMap<String, u64>,
    /// Intended send → last byte of the answer, successful requests.
    pub latency: Latency,
    /// The same, of the requests that opened their connection (accept queue and handshake
    /// included).
    pub latency_new_conn: Latency,
    /// TCP connect of the connections opened (the handshake only: the server's accept may
    /// come later).
    pub connect: Latency,
    /// Connections the client opened.
    pub connections_opened: u64,
    /// Idle keep-alive connections found closed by the server before reuse (and replaced:
    /// not errors, as any pooled client does).
    pub closed_while_idle: u64,
    /// Wall time from the first intended send to the last answer.
    pub seconds: f64,
}

impl NormalReport {
    /// All failures.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Run the normal client on the calling thread (its own current-thread runtime).
pub fn run_normal(addr: SocketAddr, cfg: &NormalConfig) -> Result<NormalReport, String> {
    check_loopback(addr)?;
    if !(cfg.rate > 0.0 && cfg.seconds > 0.0) {
        return Err("the normal client needs a rate and a length above 0".into());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&rt, normal_main(addr, cfg.clone())))
}

/// The request bytes: one chat completion, head and body in one write.
fn chat_request(addr: SocketAddr, model: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
    })
    .to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

struct NormalState {
    addr: SocketAddr,
    cfg: NormalConfig,
    request: Vec<u8>,
    idle: RefCell<Vec<Conn>>,
    slots: tokio::sync::Semaphore,
    latencies_us: RefCell<Vec<u64>>,
    /// Latencies of the requests that opened their connection.
    new_conn_us: RefCell<Vec<u64>>,
    /// Connect times.
    connect_us: RefCell<Vec<u64>>,
    report: RefCell<NormalReport>,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    used: u32,
}

async fn normal_main(addr: SocketAddr, cfg: NormalConfig) -> NormalReport {
    let n = (cfg.rate * cfg.seconds).round().max(1.0) as u64;
    let st = Rc::new(NormalState {
        addr,
        request: chat_request(addr, &cfg.model),
        idle: RefCell::new(Vec::new()),
        slots: tokio::sync::Semaphore::new(cfg.max_connections.max(1)),
        latencies_us: RefCell::new(Vec::with_capacity(n as usize)),
        new_conn_us: RefCell::new(Vec::new()),
        connect_us: RefCell::new(Vec::new()),
        report: RefCell::new(NormalReport {
            requests: n,
            ..NormalReport::default()
        }),
        cfg,
    });
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let intended = start + Duration::from_secs_f64(i as f64 / st.cfg.rate);
        tokio::time::sleep_until(intended.into()).await;
        tasks.push(tokio::task::spawn_local(one_request(st.clone(), intended)));
    }
    for t in tasks {
        let _ = t.await;
    }
    st.idle.borrow_mut().clear();
    let mut report = st.report.borrow().clone();
    report.latency = Latency::of(std::mem::take(&mut *st.latencies_us.borrow_mut()));
    report.latency_new_conn = Latency::of(std::mem::take(&mut *st.new_conn_us.borrow_mut()));
    report.connect = Latency::of(std::mem::take(&mut *st.connect_us.borrow_mut()));
    report.seconds = start.elapsed().as_secs_f64();
    report
}

async fn one_request(st: Rc<NormalState>, intended: Instant) {
    let connecting = Cell::new(false);
    let deadline = intended + Duration::from_millis(st.cfg.timeout_ms);
    let result = match tokio::time::timeout_at(deadline.into(), attempt(&st, &connecting)).await {
        Ok(r) => r,
        Err(_) if connecting.get() => Err(Failure::ConnectTimeout),
        Err(_) => Err(Failure::Timeout),
    };
    let mut report = st.report.borrow_mut();
    match result {
        Ok(opened) => {
            report.ok += 1;
            let us = intended.elapsed().as_micros() as u64;
            st.latencies_us.borrow_mut().push(us);
            if opened {
                st.new_conn_us.borrow_mut().push(us);
            }
        }
        Err(f) => count(&mut report.errors, f),
    }
}

/// One request on a pooled (or new) connection; the connection goes back to the pool when
/// it may be reused. Whether it opened its connection.
async fn attempt(st: &NormalState, connecting: &Cell<bool>) -> Result<bool, Failure> {
    let _slot = st.slots.acquire().await.map_err(|_| Failure::Closed)?;
    let mut conn = loop {
        let pooled = st.idle.borrow_mut().pop();
        match pooled {
            Some(c) if c.closed_by_server() => st.report.borrow_mut().closed_while_idle += 1,
            Some(c) => break c,
            None => {
                connecting.set(true);
                let t0 = Instant::now();
                let stream = TcpStream::connect(st.addr)
                    .await
                    .map_err(|e| Failure::of_connect(&e))?;
                connecting.set(false);
                st.connect_us
                    .borrow_mut()
                    .push(t0.elapsed().as_micros() as u64);
                let _ = stream.set_nodelay(true);
                st.report.borrow_mut().connections_opened += 1;
                break Conn {
                    stream,
                    buf: Vec::with_capacity(4096),
                    used: 0,
                };
            }
        }
    };
    let opened = conn.used == 0;
    let close = conn.exchange(&st.request).await?;
    conn.used += 1;
    if !close && (st.cfg.reuse == 0 || conn.used < st.cfg.reuse) {
        st.idle.borrow_mut().push(conn);
    }
    Ok(opened)
}

impl Conn {
    /// An idle connection the server has closed (or written to, which it never does
    /// unasked: a 408 or similar before closing).
    fn closed_by_server(&self) -> bool {
        let mut b = [0u8; 1];
        !matches!(self.stream.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Send the request, read the whole answer: whether the server will close.
    async fn exchange(&mut self, request: &[u8]) -> Result<bool, Failure> {
        write_all(&self.stream, request)
            .await
            .map_err(|e| Failure::of_io(&e))?;
        self.buf.clear();
        loop {
            if let Some(head) = parse_response(&self.buf)? {
                return match head.status {
                    200 => Ok(head.close),
                    s => Err(Failure::Status(s)),
                };
            }
            if self.buf.len() > MAX_RESPONSE {
                return Err(Failure::BadResponse);
            }
            match read_some(&self.stream, &mut self.buf).await {
                Ok(0) => return Err(Failure::Closed),
                Ok(_) => {}
                Err(e) => return Err(Failure::of_io(&e)),
            }
        }
    }
}

async fn write_all(s: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        s.writable().await?;
        match s.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn read_some(s: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 8192];
    loop {
        s.readable().await?;
        match s.try_read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// A whole response's status and whether the server will close after it.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    close: bool,
}

/// `Some` once `buf` holds one whole response (content-length or chunked; no framing means
/// no body), `None` while more bytes are needed.
fn parse_response(buf: &[u8]) -> Result<Option<Head>, Failure> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..head_end]).map_err(|_| Failure::BadResponse)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or(Failure::BadResponse)?;
    let mut close = status_line.starts_with("HTTP/1.0");
    let (mut length, mut chunked) = (0usize, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().map_err(|_| Failure::BadResponse)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let body = head_end + 4;
    let complete = if chunked {
        chunked_end(&buf[body..])?.is_some()
    } else {
        buf.len() >= body + length
    };
    Ok(complete.then_some(Head { status, close }))
}

/// The end of a chunked body (no trailers expected), if all of it is in `b`.
fn chunked_end(b: &[u8]) -> Result<Option<usize>, Failure> {
    let mut pos = 0;
    loop {
        let Some(line) = find(&b[pos..], b"\r\n") else {
            return Ok(None);
        };
        let size_text = b[pos..pos + line].split(|&c| c == b';').next();
        let size = size_text
            .and_then(|t| std::str::from_utf8(t).ok())
            .and_then(|t| usize::from_str_radix(t.trim(), 16).ok())
            .ok_or(Failure::BadResponse)?;
        pos += line + 2;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            if b.len() < pos + 2 {
                return Ok(None);
            }
            if b[pos..].starts_with(b"\r\n") {
                return Ok(Some(pos + 2));
            }
            return Ok(find(&b[pos..], b"\r\n\r\n").map(|e| pos + e + 4));
        }
        if b.len() < pos + size + 2 {
            return Ok(None);
        }
        pos += size + 2;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ------------------------------------------------------------------------------------------
// The attack
// ------------------------------------------------------------------------------------------

/// What the attack does.
#[derive(Debug, Clone, Serialize)]
pub struct AttackConfig {
    /// Connections that connect and never send a byte.
    pub silent: usize,
    /// Connections that send a request head one byte at a time.
    pub slowloris: usize,
    /// A slowloris connection sends its first byte on connect, then one every this long.
    pub byte_every_ms: u64,
    /// Connections open spread evenly over this long (slowloris bytes stay staggered).
    pub ramp_ms: u64,
    /// An attack connect not complete after this long is a `connect_timeout` (then retried).
    pub connect_timeout_ms: u64,
    /// Reopen a silent connection when the server closes it (a sustained attack).
    pub reopen_silent: bool,
    /// Reopen a slowloris connection when the server closes it.
    pub reopen_slowloris: bool,
    /// Wait this long before reopening a connection the server closed (0: at once, an
    /// attacker that holds its count whatever the server does).
    pub reopen_delay_ms: u64,
}

impl Default for AttackConfig {
    fn default() -> Self {
        Self {
            silent: 5000,
            slowloris: 2000,
            byte_every_ms: 5000,
            ramp_ms: 5000,
            connect_timeout_ms: 3000,
            reopen_silent: true,
            reopen_slowloris: true,
            reopen_delay_ms: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Silent,
    Slowloris,
}

/// Live counters of one kind of attacking connection.
#[derive(Debug, Default)]
struct KindLive {
    open: AtomicU64,
    peak_open: AtomicU64,
    opened: AtomicU64,
    closed: AtomicU64,
}

impl KindLive {
    fn snapshot(&self) -> KindSnapshot {
        KindSnapshot {
            open: self.open.load(Relaxed),
            opened: self.opened.load(Relaxed),
            closed_by_server: self.closed.load(Relaxed),
        }
    }
}

/// One kind's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KindSnapshot {
    /// Established now.
    pub open: u64,
    /// Established so far (reopens included).
    pub opened: u64,
    /// Closed by the server so far.
    pub closed_by_server: u64,
}

/// Both kinds' counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AttackSnapshot {
    /// Silent connections.
    pub silent: KindSnapshot,
    /// Slowloris connections.
    pub slowloris: KindSnapshot,
}

/// What happened to one kind of attacking connection.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KindReport {
    /// Established (reopens included).
    pub opened: u64,
    /// Most established at once.
    pub peak_open: u64,
    /// Closed by the server.
    pub closed_by_server: u64,
    /// Of those, how many got some answer first (a 408).
    pub answered: u64,
    /// Of those, how many were reset rather than closed with a FIN.
    pub reset: u64,
    /// Still open when the attack stopped (closed by us).
    pub open_at_stop: u64,
    /// Failed connects by kind (retried).
    pub connect_failures: BTreeMap<String, u64>,
    /// Connect → close by the server, over every connection the server closed.
    pub closed_after: Option<Spread>,
    /// Each connect → close by the server (not in the JSON).
    #[serde(skip)]
    pub closed_after_all: Vec<Duration>,
}

/// What the attack saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AttackReport {
    /// Silent connections.
    pub silent: KindReport,
    /// Slowloris connections.
    pub slowloris: KindReport,
    /// Slowloris header bytes sent.
    pub bytes_sent: u64,
}

#[derive(Debug, Default)]
struct AttackLive {
    silent: KindLive,
    slowloris: KindLive,
    bytes: AtomicU64,
}

impl AttackLive {
    fn of(&self, k: Kind) -> &KindLive {
        match k {
            Kind::Silent => &self.silent,
            Kind::Slowloris => &self.slowloris,
        }
    }
}

/// A running attack, on its own thread. Dropping it stops it.
#[derive(Debug)]
pub struct Attack {
    stop: watch::Sender<bool>,
    live: Arc<AttackLive>,
    thread: Option<std::thread::JoinHandle<Result<AttackReport, String>>>,
}

impl Attack {
    /// Start attacking `addr`.
    pub fn start(addr: SocketAddr, cfg: AttackConfig) -> Result<Self, String> {
        check_loopback(addr)?;
        let (stop, rx) = watch::channel(false);
        let live = Arc::new(AttackLive::default());
        let thread_live = live.clone();
        let thread = std::thread::Builder::new()
            .name("attack".into())
            .spawn(move || attack_thread(addr, cfg, rx, thread_live))
            .map_err(|e| format!("cannot start the attack thread: {e}"))?;
        Ok(Self {
            stop,
            live,
            thread: Some(thread),
        })
    }

    /// The counters now.
    pub fn snapshot(&self) -> AttackSnapshot {
        AttackSnapshot {
            silent: self.live.silent.snapshot(),
            slowloris: self.live.slowloris.snapshot(),
        }
    }

    /// Close every attacking connection and report.
    pub fn stop(mut self) -> Result<AttackReport, String> {
        let _ = self.stop.send(true);
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("the attack thread panicked".into()),
            None => Err("the attack was already stopped".into()),
        }
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct AttackCtx {
    addr: SocketAddr,
    cfg: AttackConfig,
    start: Instant,
    live: Arc<AttackLive>,
    silent: RefCell<KindReport>,
    slowloris: RefCell<KindReport>,
}

impl AttackCtx {
    fn report(&self, k: Kind) -> std::cell::RefMut<'_, KindReport> {
        match k {
            Kind::Silent => self.silent.borrow_mut(),
            Kind::Slowloris => self.slowloris.borrow_mut(),
        }
    }
}

fn attack_thread(
    addr: SocketAddr,
    cfg: AttackConfig,
    stop: watch::Receiver<bool>,
    live: Arc<AttackLive>,
) -> Result<AttackReport, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    let ctx = Rc::new(AttackCtx {
        addr,
        start: Instant::now(),
        live,
        silent: RefCell::default(),
        slowloris: RefCell::default(),
        cfg,
    });
    local.block_on(&rt, async {
        let mut tasks = Vec::new();
        for (kind, n) in [
            (Kind::Silent, ctx.cfg.silent),
            (Kind::Slowloris, ctx.cfg.slowloris),
        ] {
            for i in 0..n {
                let task = slot(kind, i, n, ctx.clone(), stop.clone());
                tasks.push(tokio::task::spawn_local(task));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let finish = |k: Kind| {
        let mut r = std::mem::take(&mut *ctx.report(k));
        let l = ctx.live.of(k);
        r.opened = l.opened.load(Relaxed);
        r.peak_open = l.peak_open.load(Relaxed);
        r.closed_after = Spread::of(&r.closed_after_all);
        r
    };
    Ok(AttackReport {
        silent: finish(Kind::Silent),
        slowloris: finish(Kind::Slowloris),
        bytes_sent: ctx.live.bytes.load(Relaxed),
    })
}

/// Resolves once the attack is told to stop (or its handle is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Sleep until `t`; false when told to stop first.
async fn pause_until(t: Instant, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep_until(t.into()) => true,
        _ = stopped(stop) => false,
    }
}

/// How an attacking connection ended.
enum End {
    /// We were told to stop.
    Stopped,
    /// The server closed it.
    Closed { answered: bool, reset: bool },
}

/// One attacking connection slot: connect, hold, and (when configured) reopen after the
/// server closes it, until told to stop.
async fn slot(kind: Kind, i: usize, n: usize, ctx: Rc<AttackCtx>, mut stop: watch::Receiver<bool>) {
    let ramp = Duration::from_millis(ctx.cfg.ramp_ms);
    let first = ctx.start + ramp.mul_f64(i as f64 / n.max(1) as f64);
    if !pause_until(first, &mut stop).await {
        return;
    }
    let connect_timeout = Duration::from_millis(ctx.cfg.connect_timeout_ms);
    let live = ctx.live.of(kind);
    loop {
        let connect = tokio::time::timeout(connect_timeout, TcpStream::connect(ctx.addr));
        let outcome = tokio::select! {
            r = connect => r,
            _ = stopped(&mut stop) => return,
        };
        let stream = match outcome {
            Ok(Ok(s)) => s,
            failed => {
                let f = match failed {
                    Ok(Err(e)) => Failure::of_connect(&e),
                    _ => Failure::ConnectTimeout,
                };
                count(&mut ctx.report(kind).connect_failures, f);
                if !pause_until(Instant::now() + CONNECT_BACKOFF, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let opened = Instant::now();
        live.opened.fetch_add(1, Relaxed);
        let now_open = live.open.fetch_add(1, Relaxed) + 1;
        live.peak_open.fetch_max(now_open, Relaxed);
        let end = match kind {
            Kind::Silent => hold_silent(&stream, &mut stop).await,
            Kind::Slowloris => hold_slowloris(&stream, &ctx, &mut stop).await,
        };
        live.open.fetch_sub(1, Relaxed);
        let reopen = match end {
            End::Stopped => {
                ctx.report(kind).open_at_stop += 1;
                return;
            }
            End::Closed { answered, reset } => {
                live.closed.fetch_add(1, Relaxed);
                let mut r = ctx.report(kind);
                r.closed_by_server += 1;
                r.answered += u64::from(answered);
                r.reset += u64::from(reset);
                r.closed_after_all.push(opened.elapsed());
                match kind {
                    Kind::Silent => ctx.cfg.reopen_silent,
                    Kind::Slowloris => ctx.cfg.reopen_slowloris,
                }
            }
        };
        if !reopen {
            // Stay until told to stop, so the task list ends together.
            stopped(&mut stop).await;
            return;
        }
        let delay = Duration::from_millis(ctx.cfg.reopen_delay_ms);
        if !delay.is_zero() && !pause_until(Instant::now() + delay, &mut stop).await {
            return;
        }
    }
}

/// Resolves when the server closes `s` (reading and discarding whatever it sends first).
async fn server_close(s: &TcpStream, answered: &mut bool) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        if s.readable().await.is_err() {
            return true;
        }
        match s.try_read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => *answered = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return true,
        }
    }
}

async fn hold_silent(s: &TcpStream, stop: &mut watch::Receiver<bool>) -> End {
    let mut answered = false;
    tokio::select! {
        reset = server_close(s, &mut answered) => End::Closed { answered, reset },
        _ = stopped(stop) => End::Stopped,
    }
}

/// A request head that never ends: the request line, then header lines of padding.
fn slowloris_byte(k: usize) -> u8 {
    const START: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    const PAD: &[u8] = b"X-Padding: aaaaaaaaaaaaaaaa\r\n";
    match START.get(k) {
        Some(&b) => b,
        None => PAD[(k - START.len()) % PAD.len()],
    }
}

async fn hold_slowloris(s: &TcpStream, ctx: &AttackCtx, stop: &mut watch::Receiver<bool>) -> End {
    let every = Duration::from_millis(ctx.cfg.byte_every_ms.max(1));
    let mut next = Instant::now();
    let mut k = 0usize;
    let mut answered = false;
    loop {
        let write_due = tokio::select! {
            reset = server_close(s, &mut answered) => return End::Closed { answered, reset },
            _ = stopped(stop) => return End::Stopped,
            _ = tokio::time::sleep_until(next.into()) => true,
        };
        if write_due {
            match s.try_write(&[slowloris_byte(k)]) {
                Ok(_) => {
                    k += 1;
                    ctx.live.bytes.fetch_add(1, Relaxed);
                }
                // The send buffer cannot be full with one byte every few seconds; try later.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    return End::Closed {
                        answered,
                        reset: true,
                    };
                }
            }
            next += every;
        }
    }
}

// ------------------------------------------------------------------------------------------
// The whole sequence
// ------------------------------------------------------------------------------------------

/// The whole measured sequence.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Normal client alone first, not reported (warms pools and caches).
    pub warmup_s: f64,
    /// Normal client alone, measured: the baseline.
    pub baseline_s: f64,
    /// Normal client alongside the attack, measured (after the attack's ramp).
    pub attack_s: f64,
    /// After the attack stops: how long to wait at most for descriptors and RSS to come back.
    pub settle_s: f64,
    /// The normal client (its `seconds` is set per phase).
    pub normal: NormalConfig,
    /// The attack.
    pub attack: AttackConfig,
}

impl Plan {
    /// Descriptors this process needs: every attacking and normal connection, plus slack.
    pub fn fds_needed(&self) -> u64 {
        (self.attack.silent + self.attack.slowloris + self.normal.max_connections) as u64 + 256
    }
}

/// The gateway's descriptors and RSS over the run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GatewayReport {
    /// PID read.
    pub pid: u32,
    /// Just before the attack.
    pub baseline: ProcSample,
    /// The largest of each during the attack.
    pub peak: ProcSample,
    /// After the attack stopped and the gateway settled (or the settle time ran out).
    pub after: ProcSample,
    /// How long after the attack stopped both came back to baseline; `None`: not within
    /// the settle time.
    pub settled_after_s: Option<f64>,
    /// The gateway's CPU use during the measured run under attack, in cores (1.0 = one core
    /// busy all the time).
    pub cpu_cores: Option<f64>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The target address.
    pub target: String,
    /// What was run.
    pub plan: Plan,
    /// Normal client alone.
    pub baseline: NormalReport,
    /// Normal client alongside the attack.
    pub under_attack: NormalReport,
    /// Under-attack p99 / baseline p99.
    pub p99_ratio: Option<f64>,
    /// Attack counters when the measured normal run started (after the ramp).
    pub attack_at_normal_start: AttackSnapshot,
    /// The attack's own report.
    pub attack: AttackReport,
    /// The gateway process, when its PID was given.
    pub gateway: Option<GatewayReport>,
    /// This harness's own CPU use during the measured run under attack, in cores: near 1.0
    /// on a shared core means the client side, not the gateway, may be what is slow.
    pub harness_cpu_cores: Option<f64>,
}

impl Report {
    /// The criteria, each with whether it holds: 0 normal errors, p99 at most twice
    /// the baseline, descriptors and RSS back to baseline.
    pub fn verdicts(&self) -> Vec<(String, bool)> {
        let mut v = vec![
            (
                format!(
                    "0 normal errors under attack ({})",
                    self.under_attack.error_count()
                ),
                self.under_attack.error_count() == 0 && self.under_attack.ok > 0,
            ),
            (
                format!(
                    "normal p99 at most 2x baseline ({})",
                    self.p99_ratio
                        .map_or_else(|| "n/a".into(), |r| format!("{r:.2}x"))
                ),
                self.p99_ratio.is_some_and(|r| r <= 2.0),
            ),
        ];
        if let Some(g) = &self.gateway {
            v.push((
                format!(
                    "fds back to baseline ({} -> {})",
                    g.baseline.fds, g.after.fds
                ),
                g.after.fds_back_to(&g.baseline),
            ));
            v.push((
                format!(
                    "RSS back to baseline ({} -> {} KiB)",
                    g.baseline.rss_kib, g.after.rss_kib
                ),
                g.after.rss_back_to(&g.baseline),
            ));
        }
        v
    }
}

/// Run the normal client on its own thread for `cfg.seconds`, calling `tick` about every
/// [`SAMPLE_EVERY`] meanwhile.
fn normal_alongside(
    addr: SocketAddr,
    cfg: &NormalConfig,
    mut tick: impl FnMut(),
) -> Result<NormalReport, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread_cfg = cfg.clone();
    let thread = std::thread::Builder::new()
        .name("normal".into())
        .spawn(move || {
            let _ = tx.send(run_normal(addr, &thread_cfg));
        })
        .map_err(|e| format!("cannot start the normal client thread: {e}"))?;
    loop {
        match rx.recv_timeout(SAMPLE_EVERY) {
            Ok(r) => {
                let _ = thread.join();
                return r;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => tick(),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
                return Err("the normal client thread ended without a report".into());
            }
        }
    }
}

/// Wait `d`, calling `tick` about every [`SAMPLE_EVERY`].
fn pause(d: Duration, mut tick: impl FnMut()) {
    let end = Instant::now() + d;
    // Nothing is ever sent: the channel is a timer that needs no runtime.
    let (_tx, rx) = std::sync::mpsc::channel::<()>();
    loop {
        let now = Instant::now();
        if now >= end {
            return;
        }
        let _ = rx.recv_timeout((end - now).min(SAMPLE_EVERY));
        tick();
    }
}

/// Run the whole sequence against `addr` (the gateway's `pid`, when given, is sampled):
/// warm-up, baseline, attack ramp, normal client under attack, stop, settle.
pub fn run(
    addr: SocketAddr,
    pid: Option<u32>,
    plan: &Plan,
    progress: bool,
) -> Result<Report, String> {
    check_loopback(addr)?;
    let phase = |seconds: f64| NormalConfig {
        seconds,
        ..plan.normal.clone()
    };
    let say = |m: &str| {
        if progress {
            eprintln!("{m}");
        }
    };
    let sample = || pid.and_then(|p| ProcSample::of(p).ok());
    if plan.warmup_s > 0.0 {
        say(&format!("warm-up: {} s", plan.warmup_s));
        run_normal(addr, &phase(plan.warmup_s))?;
    }
    say(&format!(
        "baseline: normal client alone, {} req/s for {} s",
        plan.normal.rate, plan.baseline_s
    ));
    let baseline = normal_alongside(addr, &phase(plan.baseline_s), || {})?;
    pause(Duration::from_millis(500), || {});
    let base = sample();
    if pid.is_some() && base.is_none() {
        return Err(format!(
            "cannot read /proc/{}/fd and /proc/{0}/status",
            pid.unwrap_or_default()
        ));
    }
    let mut peak = base.unwrap_or_default();
    let t0 = Instant::now();
    let mut last_line = t0;
    let attack = Attack::start(addr, plan.attack.clone())?;
    let mut tick = |attack: &Attack| {
        let now_sample = sample();
        if let Some(s) = now_sample {
            peak = peak.max(s);
        }
        if progress && last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            let a = attack.snapshot();
            let gw = now_sample.map_or_else(String::new, |s| {
                format!("; gateway fds {}, RSS {} MiB", s.fds, s.rss_kib / 1024)
            });
            eprintln!(
                "[{:>5.1}s] silent open {} (closed by server {}), slowloris open {} (closed {}){gw}",
                t0.elapsed().as_secs_f64(),
                a.silent.open,
                a.silent.closed_by_server,
                a.slowloris.open,
                a.slowloris.closed_by_server,
            );
        }
    };
    say(&format!(
        "attack: {} silent + {} slowloris (one byte every {} ms), opening over {} ms",
        plan.attack.silent, plan.attack.slowloris, plan.attack.byte_every_ms, plan.attack.ramp_ms
    ));
    pause(Duration::from_millis(plan.attack.ramp_ms + 200), || {
        tick(&attack)
    });
    let attack_at_normal_start = attack.snapshot();
    let me = std::process::id();
    let cpu0 = (
        ProcSample::cpu_seconds(me).ok(),
        pid.and_then(|p| ProcSample::cpu_seconds(p).ok()),
    );
    let run_t0 = Instant::now();
    say(&format!(
        "under attack: normal client, {} req/s for {} s",
        plan.normal.rate, plan.attack_s
    ));
    let under_attack = normal_alongside(addr, &phase(plan.attack_s), || tick(&attack))?;
    let run_s = run_t0.elapsed().as_secs_f64().max(1e-9);
    let cores = |before: Option<f64>, pid: Option<u32>| {
        let after = ProcSample::cpu_seconds(pid?).ok()?;
        Some((after - before?) / run_s)
    };
    let harness_cpu_cores = cores(cpu0.0, Some(me));
    let gateway_cpu_cores = cores(cpu0.1, pid);
    say("stopping the attack");
    let attack = attack.stop()?;
    let stopped_at = Instant::now();
    let gateway = match (pid, base) {
        (Some(pid), Some(baseline)) => {
            let deadline = stopped_at + Duration::from_secs_f64(plan.settle_s);
            let (after, settled_after_s) = loop {
                let s = sample().unwrap_or_default();
                peak = peak.max(s);
                if s.fds_back_to(&baseline) && s.rss_back_to(&baseline) {
                    break (s, Some(stopped_at.elapsed().as_secs_f64()));
                }
                if Instant::now() >= deadline {
                    break (s, None);
                }
                pause(SAMPLE_EVERY, || {});
            };
            Some(GatewayReport {
                pid,
                baseline,
                peak,
                after,
                settled_after_s,
                cpu_cores: gateway_cpu_cores,
            })
        }
        _ => None,
    };
    let ratio = (baseline.latency.p99_ms > 0.0 && under_attack.latency.count > 0)
        .then(|| under_attack.latency.p99_ms / baseline.latency.p99_ms);
    Ok(Report {
        target: addr.to_string(),
        plan: plan.clone(),
        baseline,
        under_attack,
        p99_ratio: ratio,
        attack_at_normal_start,
        attack,
        gateway,
        harness_cpu_cores,
    })
}

fn errors_text(e: &BTreeMap<String, u64>) -> String {
    if e.is_empty() {
        return "-".into();
    }
    e.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report as text.
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let p = &r.plan;
    let _ = writeln!(
        o,
        "shardgate-exhaust against {}{}",
        r.target,
        r.gateway
            .as_ref()
            .map_or_else(String::new, |g| format!(" (gateway PID {})", g.pid))
    );
    let reopen = match (p.attack.reopen_silent, p.attack.reopen_slowloris) {
        (true, true) => "both reopened",
        (false, true) => "slowloris reopened",
        (true, false) => "silent reopened",
        (false, false) => "none reopened",
    };
    let reopen = if p.attack.reopen_delay_ms > 0 {
        format!(
            "{reopen} {} ms after the server closes them",
            p.attack.reopen_delay_ms
        )
    } else {
        format!("{reopen} as soon as the server closes them")
    };
    let _ = writeln!(
        o,
        "attack: {} silent + {} slowloris (one header byte every {} ms; {reopen}), opened over {} ms",
        p.attack.silent, p.attack.slowloris, p.attack.byte_every_ms, p.attack.ramp_ms
    );
    let _ = writeln!(
        o,
        "normal client: POST /v1/chat/completions at {} req/s, {} requests per connection, \
         timeout {} ms\n",
        p.normal.rate,
        if p.normal.reuse == 0 {
            "unlimited".to_owned()
        } else {
            p.normal.reuse.to_string()
        },
        p.normal.timeout_ms
    );
    let _ = writeln!(
        o,
        "{:<22} {:>8} {:>8} {:>9} {:>9} {:>9} {:>6} {:>6}  errors",
        "normal client", "requests", "ok", "p50 ms", "p99 ms", "max ms", "conns", "shed"
    );
    for (label, n) in [
        (format!("baseline ({} s)", p.baseline_s), &r.baseline),
        (format!("under attack ({} s)", p.attack_s), &r.under_attack),
    ] {
        let _ = writeln!(
            o,
            "{label:<22} {:>8} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>6} {:>6}  {}",
            n.requests,
            n.ok,
            n.latency.p50_ms,
            n.latency.p99_ms,
            n.latency.max_ms,
            n.connections_opened,
            n.closed_while_idle,
            errors_text(&n.errors)
        );
    }
    for (label, n) in [("baseline", &r.baseline), ("under attack", &r.under_attack)] {
        let l = n.latency_new_conn;
        let _ = writeln!(
            o,
            "  {label}, first request on a new connection: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (its TCP connect: p99 {:.2} ms, max {:.2} ms)",
            l.count, l.p50_ms, l.p99_ms, l.max_ms, n.connect.p99_ms, n.connect.max_ms
        );
    }
    let _ = writeln!(
        o,
        "(conns: connections opened; shed: idle keep-alive connections the server closed, \
         replaced before reuse, not errors)"
    );
    let _ = writeln!(
        o,
        "p99 under attack / baseline: {}\n",
        r.p99_ratio
            .map_or_else(|| "n/a".into(), |x| format!("{x:.2}"))
    );
    let _ = writeln!(
        o,
        "{:<10} {:>7} {:>7} {:>8} {:>8} {:>8} {:>6} {:>7} {:>24}  connect failures",
        "attack",
        "opened",
        "at run",
        "peak",
        "closed",
        "answered",
        "reset",
        "at stop",
        "closed after ms min/p50/max"
    );
    let at = &r.attack_at_normal_start;
    for (label, k, open_at_start) in [
        ("silent", &r.attack.silent, at.silent.open),
        ("slowloris", &r.attack.slowloris, at.slowloris.open),
    ] {
        let spread = k.closed_after.map_or_else(
            || "-".into(),
            |s| format!("{:.0}/{:.0}/{:.0}", s.min_ms, s.p50_ms, s.max_ms),
        );
        let _ = writeln!(
            o,
            "{label:<10} {:>7} {open_at_start:>7} {:>8} {:>8} {:>8} {:>6} {:>7} {spread:>24}  {}",
            k.opened,
            k.peak_open,
            k.closed_by_server,
            k.answered,
            k.reset,
            k.open_at_stop,
            errors_text(&k.connect_failures)
        );
    }
    let _ = writeln!(
        o,
        "(opened: connections established, reopens included; at run: open when the measured \
         normal run began; peak: most open at once; closed: by the server, after connect, \
         answered first (408) or reset; at stop: open when the attack stopped)"
    );
    let _ = writeln!(o, "slowloris bytes sent: {}", r.attack.bytes_sent);
    let cores = |c: Option<f64>| c.map_or_else(|| "n/a".into(), |c| format!("{c:.2}"));
    let _ = writeln!(
        o,
        "CPU during the run under attack, in cores: gateway {}, this harness {}",
        cores(r.gateway.as_ref().and_then(|g| g.cpu_cores)),
        cores(r.harness_cpu_cores)
    );
    if let Some(g) = &r.gateway {
        let _ = writeln!(o, "\n{:<36} {:>8} {:>10}", "gateway", "fds", "RSS KiB");
        let settled = g.settled_after_s.map_or_else(
            || format!("not settled in {} s", p.settle_s),
            |s| format!("settled {s:.1} s after stop"),
        );
        for (label, s) in [
            ("baseline".to_owned(), g.baseline),
            ("peak".to_owned(), g.peak),
            (format!("after ({settled})"), g.after),
        ] {
            let _ = writeln!(o, "{label:<36} {:>8} {:>10}", s.fds, s.rss_kib);
        }
    }
    let _ = writeln!(o, "\nissue 10 criteria:");
    for (what, ok) in r.verdicts() {
        let _ = writeln!(o, "  [{}] {what}", if ok { "ok" } else { "FAIL" });
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_whole_responses_only() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
        for cut in 0..r.len() {
            assert_eq!(parse_response(&r[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(
            parse_response(r),
            Ok(Some(Head {
                status: 200,
                close: false
            }))
        );
        let c = b"HTTP/1.1 408 x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        for cut in 0..c.len() {
            assert_eq!(parse_response(&c[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(
            parse_response(c),
            Ok(Some(Head {
                status: 408,
                close: true
            }))
        );
        assert_eq!(
            parse_response(b"HTTX 200\r\n\r\n"),
            Err(Failure::BadResponse)
        );
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let l = Latency::of((1..=100).map(|ms| ms * 1000).collect());
        assert_eq!(
            (l.count, l.p50_ms, l.p99_ms, l.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        assert_eq!(Latency::of(vec![]).count, 0);
        let s = Spread::of(&[Duration::from_millis(30), Duration::from_millis(10)]);
        assert_eq!(s.map(|s| (s.min_ms, s.max_ms)), Some((10.0, 30.0)));
        assert!(Spread::of(&[]).is_none());
    }

    #[test]
    fn refuses_other_addresses() {
        assert!(check_loopback("127.0.0.1:1".parse().unwrap()).is_ok());
        assert!(check_loopback("[::1]:1".parse().unwrap()).is_ok());
        assert!(check_loopback("10.0.0.1:1".parse().unwrap()).is_err());
        let other = "192.0.2.1:80".parse().unwrap();
        assert!(run_normal(other, &NormalConfig::default()).is_err());
        assert!(Attack::start(other, AttackConfig::default()).is_err());
    }

    #[test]
    fn slowloris_heads_never_end() {
        let head: Vec<u8> = (0..4096).map(slowloris_byte).collect();
        assert!(head.starts_with(b"POST /v1/chat/completions HTTP/1.1\r\n"));
        assert!(find(&head, b"\r\n\r\n").is_none());
    }

    #[test]
    fn own_process_has_descriptors_and_memory() {
        let s = ProcSample::of(std::process::id()).unwrap();
        assert!(s.fds >= 3 && s.rss_kib > 100, "{s:?}");
        let base = ProcSample {
            fds: 20,
            rss_kib: 10_000,
        };
        assert!(
            ProcSample {
                fds: 28,
                rss_kib: 13_000
            }
            .fds_back_to(&base)
        );
        assert!(
            !ProcSample {
                fds: 29,
                rss_kib: 13_000
            }
            .fds_back_to(&base)
        );
        assert!(
            !ProcSample {
                fds: 20,
                rss_kib: 13_100
            }
            .rss_back_to(&base)
        );
    }
}
