//! The thread-per-core runtime: the only module that names glommio.
//!
//! Owns: starting pinned shard executors, spawning tasks on the current shard (normal and
//! low-priority), timers, TCP listeners and connects, and the hyper adapters in [`rt`].
//! Does not: know about HTTP routes, providers or config (it imports none of them), so another
//! io_uring runtime could replace glommio behind this seam.
//! Key types: [`ShardSpec`], [`ShardHandle`], [`rt::Io`], [`bridge::Batcher`], [`bridge::Inbox`].

pub mod bridge;
pub mod mem;
pub mod mesh;
pub mod net;
pub mod rt;

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::FutureExt;
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares, TaskQueueHandle};

use crate::ShardId;

/// How to start one shard.
#[derive(Debug, Clone)]
pub struct ShardSpec {
    /// Its index.
    pub id: ShardId,
    /// CPU to pin to, or `None`.
    pub core: Option<usize>,
    /// io_uring entries.
    pub ring_depth: usize,
    /// Busy-poll before parking.
    pub spin_before_park: Duration,
    /// Memory registered with io_uring for storage IO (the gateway does none: keep small).
    pub io_memory: usize,
}

/// A running shard thread.
pub struct ShardHandle {
    id: ShardId,
    join: glommio::ExecutorJoinHandle<()>,
}

impl ShardHandle {
    /// Wait for the shard's main future to end.
    pub fn join(self) -> io::Result<()> {
        self.join
            .join()
            .map_err(|e| io::Error::other(format!("shard {} failed: {e}", self.id)))
    }
}

thread_local! {
    static BACKGROUND: Cell<Option<TaskQueueHandle>> = const { Cell::new(None) };
}

/// Start a shard thread running `main` (made on the new thread, so it may be `!Send`).
pub fn start<F, Fut>(spec: ShardSpec, main: F) -> io::Result<ShardHandle>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let placement = match spec.core {
        Some(core) => Placement::Fixed(core),
        None => Placement::Unbound,
    };
    let id = spec.id;
    let mut builder = LocalExecutorBuilder::new(placement)
        .name(&format!("shard-{}", id.0))
        .ring_depth(spec.ring_depth)
        .io_memory(spec.io_memory);
    if !spec.spin_before_park.is_zero() {
        builder = builder.spin_before_park(spec.spin_before_park);
    }
    let join = builder
        .spawn(move || async move {
            let tq = glommio::executor().create_task_queue(
                Shares::Static(10),
                Latency::NotImportant,
                "background",
            );
            BACKGROUND.with(|b| b.set(Some(tq)));
            guarded("shard main", main()).await;
        })
        .map_err(|e| io::Error::other(format!("cannot start shard {}: {e}", id.0)))?;
    Ok(ShardHandle { id, join })
}

/// Run a future, turning a panic inside it into a logged error. Used for every task a shard
/// spawns, so one panicking request never takes the shard (or the process) down.
///
/// A plain future, not an `async fn`: an `async fn` keeps its future argument and the
/// future it awaits side by side, which doubled every task and request future it wrapped
/// (11 KB instead of 5.6 for a connection task, measured with `scripts/heap.sh`).
pub fn guarded<F: Future>(what: &'static str, fut: F) -> Guarded<F> {
    Guarded {
        inner: AssertUnwindSafe(fut).catch_unwind(),
        what,
    }
}

pin_project_lite::pin_project! {
    /// The future of [`guarded`]: `None` when the wrapped future panicked.
    pub struct Guarded<F> {
        #[pin]
        inner: futures_lite::future::CatchUnwind<AssertUnwindSafe<F>>,
        what: &'static str,
    }
}

impl<F: Future> Future for Guarded<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(v)) => Poll::Ready(Some(v)),
            Poll::Ready(Err(payload)) => {
                tracing::error!(task = *this.what, panic = %panic_message(&*payload), "Task panicked; shard continues.");
                Poll::Ready(None)
            }
        }
    }
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Whether this process may set up an io_uring: `io_uring_setup` with one entry, the ring
/// closed at once (a kernel without it, a seccomp profile or a sysctl each refuse it).
pub fn probe_io_uring() -> io::Result<()> {
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup(1, params) writes at most 120 bytes of io_uring_params into the
    // buffer we own; on success it returns a descriptor that we close below.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is the descriptor io_uring_setup just returned; we own it and close it once.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// Stop the kernel from backing this process's memory with transparent huge pages, from
/// now on (`PR_SET_THP_DISABLE`; pages already huge stay so).
pub fn disable_transparent_huge_pages() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integer arguments and touches no
    // memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Spawn a task on the current shard (panics inside are caught and logged).
pub fn spawn(what: &'static str, fut: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(guarded(what, fut)).detach();
}

/// Spawn low-priority background work (flushes, sweeps) on the current shard.
pub fn spawn_background(what: &'static str, fut: impl Future<Output = ()> + 'static) {
    let tq = BACKGROUND.with(|b| b.get());
    let task = match tq {
        Some(tq) => glommio::spawn_local_into(guarded(what, fut), tq),
        None => Ok(glommio::spawn_local(guarded(what, fut))),
    };
    match task {
        Ok(t) => {
            t.detach();
        }
        Err(e) => tracing::error!(task = what, error = %e, "Cannot spawn background task."),
    }
}

/// Run `f` on `target` every `interval` (low priority) for as long as `target` lives.
pub fn every<T: 'static>(
    what: &'static str,
    interval: Duration,
    target: std::rc::Weak<T>,
    f: impl Fn(&T) + 'static,
) {
    every_rc(what, interval, target, move |t| f(t));
}

/// [`every`], for work that needs the target itself (to spawn tasks holding it).
pub fn every_rc<T: 'static>(
    what: &'static str,
    interval: Duration,
    target: std::rc::Weak<T>,
    f: impl Fn(&std::rc::Rc<T>) + 'static,
) {
    spawn_background(what, async move {
        loop {
            sleep(interval).await;
            match target.upgrade() {
                Some(t) => f(&t),
                None => return,
            }
        }
    });
}

/// Sleep on the shard's timer.
pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// A resettable timer future on the current shard.
pub struct Timer(glommio::timer::Timer);

impl Timer {
    /// A timer firing after `d`.
    pub fn new(d: Duration) -> Self {
        Self(glommio::timer::Timer::new(d))
    }

    /// Re-arm to fire `d` from now.
    pub fn reset(&mut self, d: Duration) {
        self.0.reset(d);
    }
}

impl Future for Timer {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// Error of [`timeout`]: the future did not finish in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out")]
pub struct Elapsed;

/// Race `fut` against a timer.
pub async fn timeout<T>(d: Duration, fut: impl Future<Output = T>) -> Result<T, Elapsed> {
    let timer = async {
        glommio::timer::sleep(d).await;
        Err(Elapsed)
    };
    async { Ok(fut.await) }.or(timer).await
}

/// A counting semaphore local to one shard.
pub type Semaphore = glommio::sync::Semaphore;

/// A one-shot signal on one shard: fire once, every waiter wakes.
#[derive(Debug, Default)]
pub struct Signal {
    fired: Cell<bool>,
    waiters: std::cell::RefCell<Vec<std::task::Waker>>,
}

impl Signal {
    /// Fire; later waits return at once.
    pub fn fire(&self) {
        self.fired.set(true);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Whether it has fired.
    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Wait until it fires.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.fired.get() {
                return std::task::Poll::Ready(());
            }
            let mut w = self.waiters.borrow_mut();
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
            std::task::Poll::Pending
        })
    }
}

/// A re-armable wake-up on one shard: every [`Pulse::wait`] started before a
/// [`Pulse::notify`] returns after it (waiters re-check their condition and wait again).
#[derive(Debug, Default)]
pub struct Pulse {
    generation: Cell<u64>,
    waiters: std::cell::RefCell<Vec<std::task::Waker>>,
}

impl Pulse {
    /// Wake every current waiter.
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Wait for the next [`Pulse::notify`].
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        let start = self.generation.get();
        std::future::poll_fn(move |cx| {
            if self.generation.get() != start {
                return std::task::Poll::Ready(());
            }
            let mut w = self.waiters.borrow_mut();
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
            std::task::Poll::Pending
        })
    }
}
