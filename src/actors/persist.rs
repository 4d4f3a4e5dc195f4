//! The store's own thread: the budgeter hands it writes (spend batches, keys, meter windows)
//! and queries, and never waits for a disk flush itself (each redb commit waits for fsync,
//! which would stall every actor on the control plane's single runtime thread).
//!
//! A spend batch that fails to write is kept and written with the next one, so a store error
//! delays settled spend but never drops it.

use std::sync::mpsc;

use super::store::{SpendRow, SpendScope, SpendTotals, Store};
use crate::auth::table::KeyRecord;
use crate::budget::meter::MeterKey;

/// Spend rows by scope and day, as the admin API lists them.
pub type SpendRows = Vec<(SpendScope, u32, SpendTotals)>;

/// Work for the store thread.
pub enum Op {
    /// Add a batch to the spend book.
    Spend(Vec<SpendRow>),
    /// Store a key (made or changed through the admin API).
    Key(Box<KeyRecord>),
    /// Replace the stored meter windows.
    Windows(Vec<(MeterKey, u64, u64)>),
    /// Read the spend book between two UTC days (yyyymmdd), both included.
    Read {
        /// First day.
        from: u32,
        /// Last day.
        to: u32,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<Result<SpendRows, String>>,
    },
    /// Answer once every earlier op is done.
    Sync(mpsc::Sender<()>),
}

/// The running store thread (it ends when this handle is dropped, after the ops queued).
pub struct Persist {
    tx: mpsc::Sender<Op>,
}

impl Persist {
    /// Start the thread that owns `store`.
    pub fn start(store: Store) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Op>();
        std::thread::Builder::new()
            .name("store".into())
            .spawn(move || run(&store, &rx))?;
        Ok(Self { tx })
    }

    /// Queue an op (never blocks).
    pub fn send(&self, op: Op) {
        let _ = self.tx.send(op);
    }

    /// Wait until everything queued so far is written (used when stopping).
    pub fn sync(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Op::Sync(tx));
        let _ = rx.recv();
    }
}

impl Drop for Persist {
    fn drop(&mut self) {
        self.sync();
    }
}

fn run(store: &Store, rx: &mpsc::Receiver<Op>) {
    let mut unwritten: Vec<SpendRow> = Vec::new();
    while let Ok(op) = rx.recv() {
        match op {
            Op::Spend(rows) => {
                unwritten.extend(rows);
                match store.add_spend(&unwritten) {
                    Ok(()) => unwritten.clear(),
                    Err(e) => tracing::error!(
                        error = %e,
                        rows = unwritten.len(),
                        "Cannot write the spend book; keeping the rows for the next write."
                    ),
                }
            }
            Op::Key(k) => {
                if let Err(e) = store.put_key(&k) {
                    tracing::error!(key = %k.id, error = %e, "Cannot store a key.");
                }
            }
            Op::Windows(rows) => {
                if let Err(e) = store.put_windows(&rows) {
                    tracing::error!(error = %e, "Cannot store the meter windows.");
                }
            }
            Op::Read { from, to, reply } => {
                let _ = reply.send(store.spend_all(from, to).map_err(|e| e.to_string()));
            }
            Op::Sync(done) => {
                if !unwritten.is_empty() && store.add_spend(&unwritten).is_ok() {
                    unwritten.clear();
                }
                let _ = done.send(());
            }
        }
    }
}
