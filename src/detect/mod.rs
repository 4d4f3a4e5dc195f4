//! The tuning detector behind `shardgate tuning detect`: reads a machine's description from a
//! `/proc` and `/sys` tree and proposes a tuning profile plus the NIC settings that make a
//! connection's packets arrive on the core of the shard that owns it.
//!
//! Owns: reading CPU topology, NUMA nodes, NIC queues and IRQ lines from a root directory
//! ([`read`]), the placement plan ([`plan`]), and rendering it as a tuning TOML profile with
//! commented suggestions ([`render`]). The one live probe (io_uring) is in [`live`] and its
//! result is passed in, so everything else is a pure function of files under a root.
//! Does not: write anything (every suggestion is printed, never applied), start runtimes, or
//! import `http`, `pipeline` or `providers`.
//! Key types: [`Detected`], [`Plan`], [`DetectError`].

pub mod live;
pub mod plan;
pub mod read;
pub mod render;

#[cfg(test)]
mod tests;

use std::path::Path;

pub use plan::{NicPlan, Plan, plan};
pub use render::render;

/// Locked memory each shard needs: glommio refuses to start below it. The same figure as
/// `runtime::MEMLOCK_PER_SHARD` (a test keeps them equal; this module does not import the
/// runtime).
pub const MEMLOCK_PER_SHARD_BYTES: u64 = 512 * 1024;
/// Locked memory the process needs beyond its shards (the figure `runtime` asks for).
pub const MEMLOCK_BASE_BYTES: u64 = 8 * 1024 * 1024;

/// Errors reading a machine description. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A file the detector needs could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not what the kernel writes there.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// One hardware thread (a "CPU" to the kernel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    /// Kernel CPU id.
    pub id: usize,
    /// Physical package (socket).
    pub package: usize,
    /// Core id within the package.
    pub core_id: usize,
    /// Hardware threads of the same physical core, this one included, ascending.
    pub siblings: Vec<usize>,
    /// NUMA node, when the machine has NUMA directories.
    pub node: Option<usize>,
}

/// A physical core: one or more hardware threads sharing execution units and L1/L2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Core {
    /// Physical package (socket).
    pub package: usize,
    /// NUMA node of its threads, when known.
    pub node: Option<usize>,
    /// Its hardware threads, ascending (the first one is where a shard goes).
    pub threads: Vec<usize>,
}

/// A NUMA node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Node id.
    pub id: usize,
    /// Its CPUs, ascending.
    pub cpus: Vec<usize>,
}

/// One NIC interrupt line serving a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueIrq {
    /// IRQ number (`/proc/irq/N`).
    pub irq: u32,
    /// Queue index taken from the action name (`eth0-TxRx-3` → 3).
    pub queue: usize,
    /// The action name in `/proc/interrupts`.
    pub action: String,
    /// Its current `proc/irq/N/smp_affinity_list`, when readable.
    pub affinity_now: Option<Vec<usize>>,
}

/// A physical network interface (one with a `device` link; `lo`, bridges and veths have none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Interface name.
    pub name: String,
    /// Name of the device it sits on (`virtio2`, `0000:3b:00.0`), from the `device` link.
    pub device: Option<String>,
    /// NUMA node of the device (`None`: unknown, or the kernel says -1).
    pub numa_node: Option<usize>,
    /// `queues/rx-*` directories.
    pub rx_queues: usize,
    /// `queues/tx-*` directories.
    pub tx_queues: usize,
    /// Its queue interrupt lines from `/proc/interrupts`, by IRQ number.
    pub irqs: Vec<QueueIrq>,
    /// Current `rx-N/rps_cpus` per receive queue (`None`: not readable).
    pub rps_now: Vec<Option<Vec<usize>>>,
    /// Current `tx-N/xps_cpus` per transmit queue (`None`: not readable, as on a NIC with
    /// one transmit queue).
    pub xps_now: Vec<Option<Vec<usize>>>,
}

impl Nic {
    /// Receive queues that have their own interrupt: the distinct queue numbers of its IRQs,
    /// or the `rx-*` count when no IRQ line could be matched.
    pub fn irq_queues(&self) -> usize {
        let mut queues: Vec<usize> = self.irqs.iter().map(|i| i.queue).collect();
        queues.sort_unstable();
        queues.dedup();
        if queues.is_empty() {
            self.rx_queues
        } else {
            queues.len()
        }
    }
}

/// The locked-memory soft limit of the process (from `proc/self/limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memlock {
    /// No limit.
    Unlimited,
    /// This many bytes.
    Bytes(u64),
    /// The file was missing or had no such line.
    Unknown,
}

/// Whether io_uring can be used, as the live probe found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoUring {
    /// `io_uring_setup` succeeded.
    Available,
    /// `io_uring_setup` failed with this error (kernel without it, seccomp, sysctl).
    Blocked(String),
    /// Not probed (a fixture root describes another machine).
    NotProbed,
}

/// Everything the detector read about a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// Online CPUs this process may run on (`Cpus_allowed_list`), ascending by id: the ones
    /// a profile may name, since the gateway validates its cores against its affinity.
    pub cpus: Vec<Cpu>,
    /// Online CPUs outside this process's affinity (a cpuset, `taskset`, `CPUAffinity=`).
    pub excluded_cpus: Vec<usize>,
    /// Physical cores, ordered by their first thread.
    pub cores: Vec<Core>,
    /// NUMA nodes (empty when the machine has no `node*` directories).
    pub nodes: Vec<Node>,
    /// Physical NICs, by name.
    pub nics: Vec<Nic>,
    /// Locked-memory soft limit.
    pub memlock: Memlock,
    /// `kernel.io_uring_disabled` (0 allowed, 1 privileged only, 2 off), when the file exists.
    pub io_uring_disabled: Option<u8>,
    /// The live io_uring probe, passed in.
    pub io_uring: IoUring,
}

impl Detected {
    /// Hardware threads per physical core (1 without SMT).
    pub fn threads_per_core(&self) -> usize {
        self.cores
            .iter()
            .map(|c| c.threads.len())
            .max()
            .unwrap_or(1)
    }

    /// Distinct physical packages.
    pub fn packages(&self) -> usize {
        let mut p: Vec<usize> = self.cores.iter().map(|c| c.package).collect();
        p.sort_unstable();
        p.dedup();
        p.len()
    }

    /// The NIC the plan is made for: the one with the most queues (ties: by name). Others are
    /// listed in the output but not planned for.
    pub fn primary_nic(&self) -> Option<&Nic> {
        self.nics
            .iter()
            .rev()
            .max_by_key(|n| (n.irq_queues(), n.rx_queues))
    }
}

/// Read the machine under `root` (`/` for this one). `io_uring` is the live probe's answer
/// ([`live::probe_io_uring`] on this machine, [`IoUring::NotProbed`] for a fixture).
pub fn detect(root: &Path, io_uring: IoUring) -> Result<Detected, DetectError> {
    let online = read::cpus(root)?;
    let nodes = read::nodes(root)?;
    let allowed = read::allowed_cpus(root)?;
    let (cpus, excluded): (Vec<Cpu>, Vec<Cpu>) = online
        .into_iter()
        .partition(|c| allowed.as_ref().is_none_or(|a| a.contains(&c.id)));
    if cpus.is_empty() {
        return Err(DetectError::Parse {
            path: root.join("proc/self/status").display().to_string(),
            message: "Cpus_allowed_list names no online CPU".into(),
        });
    }
    let cpus: Vec<Cpu> = cpus
        .into_iter()
        .map(|mut c| {
            c.node = nodes.iter().find(|n| n.cpus.contains(&c.id)).map(|n| n.id);
            c
        })
        .collect();
    let cores = read::group_cores(&cpus);
    let interrupts = read::interrupts(root)?;
    let nics = read::nics(root, &interrupts)?;
    Ok(Detected {
        cpus,
        excluded_cpus: excluded.iter().map(|c| c.id).collect(),
        cores,
        nodes,
        nics,
        memlock: read::memlock(root)?,
        io_uring_disabled: read::io_uring_disabled(root)?,
        io_uring,
    })
}
