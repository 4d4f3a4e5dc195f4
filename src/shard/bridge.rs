//! Shard ↔ control plane.
//!
//! Shards never send one message per request: [`Batcher`] buffers items on the shard and hands
//! a whole batch to a sink (an actor `cast`) when it is full or when the shard's flush timer
//! fires. Actors reach shards through an [`Inbox`], a runtime-agnostic channel (glommio's own
//! shared channels need glommio at both ends; the control plane runs tokio).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

/// Sending half of a shard inbox; `Send`, usable from any thread or runtime.
pub type InboxSender<T> = flume::Sender<T>;

/// Receiving half of a shard inbox, drained by a task on the shard.
pub struct Inbox<T>(flume::Receiver<T>);

/// A new inbox.
pub fn inbox<T>() -> (InboxSender<T>, Inbox<T>) {
    let (tx, rx) = flume::unbounded();
    (tx, Inbox(rx))
}

impl<T: 'static> Inbox<T> {
    /// Run `apply` on every message, on the current shard, until all senders are gone.
    pub fn serve(self, mut apply: impl FnMut(T) + 'static) {
        super::spawn("inbox", async move {
            while let Ok(msg) = self.0.recv_async().await {
                apply(msg);
            }
        });
    }
}

type Sink<T> = Box<dyn Fn(Vec<T>)>;

/// Buffers items on one shard and hands them to a sink in batches.
pub struct Batcher<T> {
    buf: RefCell<Vec<T>>,
    max: usize,
    sink: Sink<T>,
}

impl<T: 'static> Batcher<T> {
    /// A batcher flushing at `max` items to `sink`.
    pub fn new(max: usize, sink: impl Fn(Vec<T>) + 'static) -> Rc<Self> {
        Rc::new(Self {
            buf: RefCell::new(Vec::with_capacity(max)),
            max,
            sink: Box::new(sink),
        })
    }

    /// Queue one item; sends the batch at once if it is full.
    pub fn push(&self, item: T) {
        let full = {
            let mut buf = self.buf.borrow_mut();
            buf.push(item);
            buf.len() >= self.max
        };
        if full {
            self.flush();
        }
    }

    /// Send what is queued, if anything.
    pub fn flush(&self) {
        let batch = {
            let mut buf = self.buf.borrow_mut();
            if buf.is_empty() {
                return;
            }
            std::mem::replace(&mut *buf, Vec::with_capacity(self.max))
        };
        (self.sink)(batch);
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.buf.borrow().len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flush every `interval` on the shard's low-priority queue, for as long as the batcher
    /// lives elsewhere.
    pub fn flush_every(self: &Rc<Self>, interval: Duration) {
        super::every("batch flush", interval, Rc::downgrade(self), |b| b.flush());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn flushes_by_size_and_on_demand() {
        let sent: Rc<RefCell<Vec<Vec<u32>>>> = Rc::default();
        let s = sent.clone();
        let b = Batcher::new(3, move |batch| s.borrow_mut().push(batch));
        for i in 0..7 {
            b.push(i);
        }
        assert_eq!(*sent.borrow(), vec![vec![0, 1, 2], vec![3, 4, 5]]);
        assert_eq!(b.len(), 1);
        b.flush();
        b.flush();
        assert_eq!(sent.borrow().len(), 3);
        assert_eq!(sent.borrow()[2], vec![6]);
    }

    #[test]
    fn timer_flush_runs_on_a_shard() {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        let flushed = ex.run(async {
            let count = Rc::new(Cell::new(0usize));
            let c = count.clone();
            let b = Batcher::new(100, move |batch: Vec<u8>| c.set(c.get() + batch.len()));
            b.flush_every(Duration::from_millis(2));
            b.push(1);
            b.push(2);
            crate::shard::sleep(Duration::from_millis(50)).await;
            count.get()
        });
        assert_eq!(flushed, 2);
    }
}
