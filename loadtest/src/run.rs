//! Driving a plan against a target: warm-up, then each step on one or more generator threads
//! (each a current-thread tokio runtime), with a monitor on the calling thread for progress,
//! CPU and RSS of the processes under test.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::unix::AsyncFd;

use crate::client::{H1, H2, h1_request};
use crate::procstat;
use crate::report::{ClassReport, ProcReport, RunReport, StepReport};
use crate::scenario::{Load, Mode, Plan, Protocol, Step};
use crate::stats::{ErrorKind, Recorder, Sample};

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// Resolved address.
    pub addr: SocketAddr,
    /// `host:port` for the Host header.
    pub host: String,
}

impl Target {
    /// Parse `http://host:port` (a path, if any, is ignored: the scenario has one).
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("target {url}: only http:// URLs are supported"))?;
        let host = rest.split('/').next().unwrap_or_default().to_owned();
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("target {url}: {e}"))?
            .next()
            .ok_or_else(|| format!("target {url}: no address"))?;
        Ok(Self { addr, host })
    }
}

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Label of the target in reports (direct, nginx, gateway).
    pub label: String,
    /// Generator threads.
    pub threads: usize,
    /// Processes whose CPU and RSS to report.
    pub pids: Vec<u32>,
    /// Print a progress line every second.
    pub progress: bool,
}

/// Counters shared by the generator threads for the progress line.
#[derive(Debug, Default)]
struct Live {
    ok: AtomicU64,
    errors: AtomicU64,
    issued: AtomicU64,
}

/// Run the whole plan.
pub fn run(plan: &Plan, target: &Target, opts: &Options) -> Result<RunReport, String> {
    let threads = opts.threads.max(1);
    if plan.scenario.warmup_s > 0.0 {
        let first = &plan.steps[0];
        let warm = Step {
            label: "warm-up".into(),
            mode: Mode::Closed,
            rate: None,
            connections: first.connections.min(16),
            tcp_connections: first.tcp_connections,
            load: Load::Closed {
                seconds: Some(plan.scenario.warmup_s),
                requests: None,
            },
        };
        let quiet = Options {
            pids: vec![],
            ..opts.clone()
        };
        run_step(plan, &warm, target, &quiet, threads, "warm-up")?;
    }
    let mut steps = Vec::with_capacity(plan.steps.len());
    for (i, step) in plan.steps.iter().enumerate() {
        let tag = format!("step {}/{} {}", i + 1, plan.steps.len(), step.label);
        steps.push(run_step(plan, step, target, opts, threads, &tag)?);
    }
    Ok(RunReport {
        scenario: plan.scenario.name.clone(),
        target: opts.label.clone(),
        url: format!("http://{}{}", target.host, plan.scenario.path),
        protocol: plan.scenario.protocol,
        threads,
        steps,
    })
}

fn run_step(
    plan: &Plan,
    step: &Step,
    target: &Target,
    opts: &Options,
    threads: usize,
    tag: &str,
) -> Result<StepReport, String> {
    let live = Arc::new(Live::default());
    // Time for every thread to connect before the first request is due.
    let start = Instant::now() + Duration::from_millis(300);
    let (parts, process) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let job = Job {
                    plan: plan.clone(),
                    step: step.clone(),
                    target: target.clone(),
                    t,
                    threads,
                    start,
                    live: live.clone(),
                };
                s.spawn(move || generator_thread(job))
            })
            .collect();
        let proc_report = monitor(&handles, start, &live, opts, tag);
        let parts = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "a generator thread panicked".to_owned())?
            })
            .collect::<Result<Vec<_>, String>>();
        parts.map(|p| (p, proc_report))
    })?;
    let mut classes = vec![Recorder::default(); plan.classes.len()];
    let mut end = start;
    for part in parts {
        end = end.max(part.end);
        for (c, r) in classes.iter_mut().zip(&part.classes) {
            c.merge(r);
        }
    }
    let mut all = Recorder::default();
    for c in &classes {
        all.merge(c);
    }
    let seconds = end.saturating_duration_since(start).as_secs_f64().max(1e-9);
    let process = process.map(|mut p| {
        p.cpu_us_per_request = p.cpu_seconds * 1e6 / all.ok.max(1) as f64;
        p.cpu_utilisation = p.cpu_seconds / seconds;
        p
    });
    let streams: u64 = plan
        .classes
        .iter()
        .zip(&classes)
        .filter(|(c, _)| c.stream)
        .map(|(_, r)| r.ok)
        .sum();
    Ok(StepReport {
        label: step.label.clone(),
        mode: step.mode,
        offered_rate: step.rate,
        connections: step.connections,
        seconds,
        ok: all.ok,
        errors: all.errors.clone(),
        throughput: all.ok as f64 / seconds,
        latency: all.latency.summary(),
        ttfc: (!all.ttfc.is_empty()).then(|| all.ttfc.summary()),
        gaps: (!all.gaps.is_empty()).then(|| all.gaps.summary()),
        send_lag: all.send_lag.summary(),
        chunks_per_stream: (streams > 0).then(|| all.chunks as f64 / streams as f64),
        classes: plan
            .classes
            .iter()
            .zip(&classes)
            .map(|(c, r)| ClassReport {
                name: c.name.clone(),
                ok: r.ok,
                errors: r.error_count(),
                latency: r.latency.summary(),
                ttfc: (!r.ttfc.is_empty()).then(|| r.ttfc.summary()),
            })
            .collect(),
        process,
    })
}

/// Progress once a second, CPU at the start and end, RSS every second.
fn monitor<T>(
    handles: &[std::thread::ScopedJoinHandle<'_, T>],
    start: Instant,
    live: &Live,
    opts: &Options,
    tag: &str,
) -> Option<ProcReport> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .ok()?;
    rt.block_on(async {
        tokio::time::sleep_until(start.into()).await;
        let pids = &opts.pids;
        let cpu0 = (!pids.is_empty())
            .then(|| procstat::total(pids, procstat::cpu_seconds).ok())
            .flatten();
        let mut rss = Vec::new();
        let mut next_tick = start + Duration::from_secs(1);
        let mut last_ok = 0;
        while !handles.iter().all(|h| h.is_finished()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if Instant::now() < next_tick {
                continue;
            }
            if let Ok(kib) = procstat::total(pids, procstat::rss_kib) {
                rss.push(kib);
            }
            let ok = live.ok.load(Relaxed);
            if opts.progress {
                eprintln!(
                    "[{:>5.1}s] {tag}: {} req/s, ok {ok}, errors {}, issued {}",
                    start.elapsed().as_secs_f64(),
                    ok - last_ok,
                    live.errors.load(Relaxed),
                    live.issued.load(Relaxed),
                );
            }
            last_ok = ok;
            next_tick += Duration::from_secs(1);
        }
        let cpu1 = procstat::total(pids, procstat::cpu_seconds).ok();
        if let Ok(kib) = procstat::total(pids, procstat::rss_kib) {
            rss.push(kib);
        }
        match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some(ProcReport {
                pids: pids.clone(),
                cpu_seconds: b - a,
                cpu_us_per_request: 0.0,
                cpu_utilisation: 0.0,
                rss_kib_start: rss.first().copied().unwrap_or_default(),
                rss_kib_end: rss.last().copied().unwrap_or_default(),
                rss_kib_min: rss.iter().copied().min().unwrap_or_default(),
                rss_kib_max: rss.iter().copied().max().unwrap_or_default(),
            }),
            _ => None,
        }
    })
}

/// What one generator thread recorded.
struct ThreadResult {
    classes: Vec<Recorder>,
    end: Instant,
}

/// One generator thread: its share of the connections, and every `threads`-th request of an
/// open schedule (or a share of a closed step's request cap).
/// One generator thread's share of a step.
struct Job {
    plan: Plan,
    step: Step,
    target: Target,
    /// This thread's index, of `threads`.
    t: usize,
    threads: usize,
    start: Instant,
    live: Arc<Live>,
}

fn generator_thread(job: Job) -> Result<ThreadResult, String> {
    set_timer_slack_1ns();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, thread_main(job))
}

/// Shared by the workers of one thread.
struct Ctx {
    plan: Plan,
    target: Target,
    requests: Vec<Bytes>,
    records: RefCell<Vec<Recorder>>,
    next_class: Cell<usize>,
    timeout: Duration,
    deadline: Option<Instant>,
    cap: Option<u64>,
    live: Arc<Live>,
    end: Cell<Instant>,
}

enum Conn {
    H1(Option<H1>),
    H2(Option<H2>),
}

async fn thread_main(job: Job) -> Result<ThreadResult, String> {
    let Job {
        plan,
        step,
        target,
        t,
        threads,
        start,
        live,
    } = job;
    let share = |n: usize| n / threads + usize::from(t < n % threads);
    let workers = share(step.connections);
    let (deadline, cap) = match &step.load {
        Load::Closed { seconds, requests } => (
            seconds.map(|s| start + Duration::from_secs_f64(s)),
            *requests,
        ),
        Load::Open(_) => (None, None),
    };
    let requests = plan
        .classes
        .iter()
        .map(|c| h1_request(c, &target.host, &plan.scenario.path))
        .collect();
    // Connect before the start so the first requests do not pay for it.
    let mut conns = Vec::with_capacity(workers);
    let h2_shared: Vec<H2> = if plan.scenario.protocol == Protocol::Http2 && workers > 0 {
        let mut v = Vec::new();
        for _ in 0..share(step.tcp_connections).max(1) {
            if let Ok(c) = H2::connect(target.addr, &plan.scenario.path).await {
                v.push(c);
            }
        }
        v
    } else {
        Vec::new()
    };
    for w in 0..workers {
        conns.push(match plan.scenario.protocol {
            Protocol::Http1 => Conn::H1(H1::connect(target.addr).await.ok()),
            Protocol::Http2 => Conn::H2(h2_shared.get(w % h2_shared.len().max(1)).cloned()),
        });
    }
    let ctx = Rc::new(Ctx {
        records: RefCell::new(vec![Recorder::default(); plan.classes.len()]),
        next_class: Cell::new(t),
        timeout: Duration::from_millis(plan.scenario.timeout_ms),
        plan,
        target,
        requests,
        deadline,
        cap,
        live,
        end: Cell::new(start),
    });
    tokio::time::sleep_until(start.into()).await;
    let mut tasks = Vec::with_capacity(workers);
    match &step.load {
        Load::Closed { .. } => {
            for conn in conns {
                tasks.push(tokio::task::spawn_local(worker(ctx.clone(), None, conn)));
            }
        }
        Load::Open(schedule) => {
            let (tx, rx) = flume::unbounded();
            for conn in conns {
                tasks.push(tokio::task::spawn_local(worker(
                    ctx.clone(),
                    Some(rx.clone()),
                    conn,
                )));
            }
            drop(rx);
            let mut timer = PreciseTimer::new().map_err(|e| format!("timerfd: {e}"))?;
            let mut i = t as u64;
            while let Some(due) = schedule.due(i) {
                let at = start + due;
                timer.sleep_until(at).await;
                if tx.send(at).is_err() {
                    break;
                }
                i += threads as u64;
            }
        }
    }
    for task in tasks {
        let _ = task.await;
    }
    Ok(ThreadResult {
        classes: ctx.records.take(),
        end: ctx.end.get(),
    })
}

async fn worker(ctx: Rc<Ctx>, rx: Option<flume::Receiver<Instant>>, mut conn: Conn) {
    loop {
        let intended = match &rx {
            Some(rx) => match rx.recv_async().await {
                Ok(t) => t,
                Err(_) => break,
            },
            None => {
                let now = Instant::now();
                if ctx.deadline.is_some_and(|d| now >= d) {
                    break;
                }
                let n = ctx.live.issued.fetch_add(1, Relaxed);
                if ctx.cap.is_some_and(|c| n >= c) {
                    break;
                }
                now
            }
        };
        if rx.is_some() {
            ctx.live.issued.fetch_add(1, Relaxed);
        }
        let i = ctx.next_class.get();
        ctx.next_class.set(i + 1);
        let class = ctx.plan.order[i % ctx.plan.order.len()];
        let result = if intended.elapsed() > ctx.timeout {
            // Queued past its timeout before a connection was free: a timeout, unsent.
            Err(ErrorKind::Timeout)
        } else {
            let sent = Instant::now();
            match tokio::time::timeout(ctx.timeout, one_request(&ctx, &mut conn, class, intended))
                .await
            {
                Ok(Ok(mut s)) => {
                    s.send_lag = sent - intended;
                    Ok(s)
                }
                Ok(Err(e)) => Err(e),
                Err(_) => {
                    conn = match conn {
                        Conn::H1(_) => Conn::H1(None),
                        Conn::H2(c) => Conn::H2(c),
                    };
                    Err(ErrorKind::Timeout)
                }
            }
        };
        record(&ctx, class, &result);
        if matches!(result, Err(ErrorKind::Connect)) {
            // Do not spin on a refused port.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn record(ctx: &Ctx, class: usize, result: &Result<Sample, ErrorKind>) {
    let mut records = ctx.records.borrow_mut();
    match result {
        Ok(s) => {
            records[class].ok(s);
            ctx.live.ok.fetch_add(1, Relaxed);
        }
        Err(e) => {
            records[class].error(*e);
            ctx.live.errors.fetch_add(1, Relaxed);
        }
    }
    ctx.end.set(ctx.end.get().max(Instant::now()));
}

/// The next counter for classes with variants, modulo their number (one counter per process:
/// with `unique`, every target and step sees new prompts).
fn next_variant(variants: u64) -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % variants
}

async fn one_request(
    ctx: &Ctx,
    conn: &mut Conn,
    class: usize,
    intended: Instant,
) -> Result<Sample, ErrorKind> {
    let spec = &ctx.plan.classes[class];
    match conn {
        Conn::H1(slot) => {
            if slot.as_ref().is_none_or(|c| c.closed) {
                *slot = Some(
                    H1::connect(ctx.target.addr)
                        .await
                        .map_err(|_| ErrorKind::Connect)?,
                );
            }
            let c = slot.as_mut().ok_or(ErrorKind::Connect)?;
            if let Some(v) = spec.variants {
                let req = crate::scenario::stamp_unique(&ctx.requests[class], next_variant(v));
                return c.request(&req, spec.stream, intended).await;
            }
            c.request(&ctx.requests[class], spec.stream, intended).await
        }
        Conn::H2(slot) => {
            if slot.as_ref().is_none_or(|c| c.is_closed()) {
                *slot = Some(H2::connect(ctx.target.addr, &ctx.plan.scenario.path).await?);
            }
            let c = slot.as_mut().ok_or(ErrorKind::Connect)?;
            if let Some(v) = spec.variants {
                let mut one = spec.clone();
                one.body = crate::scenario::stamp_unique(&spec.body, next_variant(v));
                return c.request(&one, intended).await;
            }
            c.request(spec, intended).await
        }
    }
}

/// Microsecond-precise sleeps (tokio's timer wheel has 1 ms steps) through a timerfd.
struct PreciseTimer {
    fd: AsyncFd<OwnedFd>,
}

impl PreciseTimer {
    fn new() -> std::io::Result<Self> {
        // SAFETY: plain syscall; the returned fd is checked and then owned.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the registered fd is owned by the AsyncFd and stays open until it is
        // dropped, which deregisters it first.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)?;
        Ok(Self { fd })
    }

    /// Wait until `at` (returns at once when it is at most 20 µs away).
    async fn sleep_until(&mut self, at: Instant) {
        let wait = at.saturating_duration_since(Instant::now());
        if wait < Duration::from_micros(20) {
            return;
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            },
        };
        let fd = self.fd.get_ref().as_raw_fd();
        // SAFETY: valid fd and a fully initialised itimerspec; old value not requested.
        if unsafe { libc::timerfd_settime(fd, 0, &spec, std::ptr::null_mut()) } != 0 {
            return tokio::time::sleep(wait).await;
        }
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return tokio::time::sleep_until(at.into()).await;
            };
            let mut expirations = [0u8; 8];
            // SAFETY: reading 8 bytes into an 8-byte buffer from a valid timerfd.
            let n = unsafe { libc::read(fd, expirations.as_mut_ptr().cast(), 8) };
            if n == 8 {
                return;
            }
            guard.clear_ready();
        }
    }
}

/// Ask the kernel not to round our timer wake-ups up by its default 50 µs slack.
fn set_timer_slack_1ns() {
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes a plain integer and affects this thread only.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}
