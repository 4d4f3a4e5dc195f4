//! Shard ↔ shard: glommio's channel mesh (lock-free single-producer rings between every pair
//! of shards, woken through eventfd only when the peer sleeps), behind a seam that speaks in
//! shard indexes and batches.
//!
//! glommio numbers a mesh's peers by executor id, which need not follow shard order, so each
//! shard first tells every peer its index. Messages sent to one peer in the same turn of the
//! executor leave as one batch: [`Mesh::send`] queues, and a task that runs after the current
//! ones ships the queue (no timer, no added wait).

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};

enum Envelope<T> {
    Hello(usize),
    Batch(Vec<T>),
}

/// What every shard joins: made once before the shards start, cloned to each.
pub struct MeshSpec<T: Send + 'static>(MeshBuilder<Envelope<T>, Full>);

impl<T: Send + 'static> Clone for MeshSpec<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Send + 'static> MeshSpec<T> {
    /// A mesh of `shards` peers; `depth` batches may wait per pair before a send waits.
    pub fn new(shards: usize, depth: usize) -> Self {
        Self(MeshBuilder::full(shards, depth))
    }
}

/// One shard's end of the mesh.
pub struct Mesh<T: Send + 'static> {
    me: usize,
    senders: Senders<Envelope<T>>,
    /// Mesh peer index of each shard.
    peer_of: Vec<usize>,
    outbox: RefCell<Vec<Vec<T>>>,
    scheduled: Vec<Cell<bool>>,
}

impl<T: Send + 'static> Mesh<T> {
    /// Join the mesh as shard `me` (every shard must join before any returns); `on_batch`
    /// runs on this shard for every batch a peer sends, with the sender's index.
    pub async fn join(
        spec: MeshSpec<T>,
        me: usize,
        on_batch: impl Fn(usize, Vec<T>) + 'static,
    ) -> io::Result<Rc<Self>> {
        let shards = spec.0.nr_peers();
        let (senders, mut receivers) = spec
            .0
            .join()
            .await
            .map_err(|e| io::Error::other(format!("cannot join the shard mesh: {e}")))?;
        for peer in 0..senders.nr_consumers() {
            if peer != senders.peer_id() {
                senders
                    .send_to(peer, Envelope::Hello(me))
                    .await
                    .map_err(|_| io::Error::other("a shard left the mesh at start"))?;
            }
        }
        let mut peer_of = vec![usize::MAX; shards];
        peer_of[me.min(shards - 1)] = senders.peer_id();
        let on_batch = Rc::new(on_batch);
        for (peer, stream) in receivers.streams() {
            let Some(Envelope::Hello(shard)) = stream.recv().await else {
                return Err(io::Error::other("a shard did not say which it is"));
            };
            if let Some(slot) = peer_of.get_mut(shard) {
                *slot = peer;
            }
            let on_batch = on_batch.clone();
            super::spawn("shard mesh", async move {
                while let Some(msg) = stream.recv().await {
                    if let Envelope::Batch(batch) = msg {
                        on_batch(shard, batch);
                    }
                }
            });
        }
        Ok(Rc::new(Self {
            me,
            senders,
            peer_of,
            outbox: RefCell::new((0..shards).map(|_| Vec::new()).collect()),
            scheduled: (0..shards).map(|_| Cell::new(false)).collect(),
        }))
    }

    /// This shard's index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// How many shards there are.
    pub fn shards(&self) -> usize {
        self.peer_of.len()
    }

    /// Queue `msg` for shard `to` (not this one); the queue leaves as one batch after the
    /// tasks ready now have run.
    pub fn send(self: &Rc<Self>, to: usize, msg: T) {
        {
            let mut outbox = self.outbox.borrow_mut();
            let Some(queue) = outbox.get_mut(to) else {
                return;
            };
            queue.push(msg);
        }
        if self.scheduled[to].replace(true) {
            return;
        }
        let me = self.clone();
        super::spawn("shard mesh send", async move {
            me.scheduled[to].set(false);
            let batch = std::mem::take(&mut me.outbox.borrow_mut()[to]);
            if batch.is_empty() {
                return;
            }
            let peer = me.peer_of[to];
            if me
                .senders
                .send_to(peer, Envelope::Batch(batch))
                .await
                .is_err()
            {
                tracing::debug!(to, "A shard's mesh channel is closed; a batch was dropped.");
            }
        });
    }
}
