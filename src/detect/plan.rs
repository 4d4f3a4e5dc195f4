//! The placement plan: which cores get shards, which are left to the control plane and the
//! NIC's interrupts, and how the NIC's queues, IRQs, RPS and XPS map onto shard cores so that
//! every CPU that processes a connection's packets runs exactly one shard. `tuning/README.md`
//! explains each choice.

use super::{Core, Detected, MEMLOCK_BASE_BYTES, MEMLOCK_PER_SHARD_BYTES, QueueIrq};

/// Physical cores (without SMT) from which two are left out of shards instead of one.
pub const RESERVE_TWO_FROM_CORES: usize = 16;

/// What the detector proposes for a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The NUMA node the shards are kept on (the NIC's), when the machine has several.
    pub node: Option<usize>,
    /// One CPU per shard, in shard order: the first hardware thread of each physical core.
    pub shard_cpus: Vec<usize>,
    /// The control-plane thread's CPU.
    pub control_plane_cpu: usize,
    /// Hardware threads of the cores left out of shards (control plane, NIC interrupts that
    /// have no shard core to go to, sshd, the exporter).
    pub housekeeping_cpus: Vec<usize>,
    /// Where interrupts go that should stay off the shards (a single-queue NIC's).
    pub irq_cpu: usize,
    /// SMT siblings of shard cores, left without a shard.
    pub idle_siblings: Vec<usize>,
    /// CPUs on other NUMA nodes than the NIC's, left unused.
    pub other_node_cpus: Vec<usize>,
    /// Locked memory the shards need: glommio refuses to start below it.
    pub memlock_needed_bytes: u64,
    /// Locked memory the gateway asks for (the shards' plus headroom; it raises its soft
    /// limit to this when the hard limit allows).
    pub memlock_recommended_bytes: u64,
    /// NIC steering, when the machine has a physical NIC.
    pub nic: Option<NicPlan>,
}

/// How receive work reaches shard cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Steering {
    /// At least as many queues as shards: each queue's IRQ on one shard core, RPS off.
    PerQueue,
    /// Fewer queues than shards (at least two): each queue's IRQ on one shard core of its
    /// group, RPS spreads the queue's flows over the group.
    Grouped,
    /// One queue: its IRQ stays on a housekeeping core, RPS spreads flows over the shards.
    Rps,
}

/// Steering for one NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicPlan {
    /// Interface name.
    pub name: String,
    /// Receive queues with an interrupt.
    pub queues: usize,
    /// How packets reach shard cores.
    pub steering: Steering,
    /// Each queue IRQ and the CPU it should be pinned to.
    pub irq_affinity: Vec<(QueueIrq, usize)>,
    /// `rx-N/rps_cpus`: queue → CPUs (empty: RPS off).
    pub rps: Vec<(usize, Vec<usize>)>,
    /// `tx-N/xps_cpus`: queue → CPUs that send on it (empty: none).
    pub xps: Vec<(usize, Vec<usize>)>,
    /// Combined channels to ask for (`ethtool -L`), when the queue count differs from the
    /// shard count.
    pub suggested_queues: Option<usize>,
}

/// Physical cores to leave out of shards.
fn reserved_cores(cores: usize, threads_per_core: usize) -> usize {
    match cores {
        0 | 1 => 0,
        n if threads_per_core == 1 && n >= RESERVE_TWO_FROM_CORES => 2,
        _ => 1,
    }
}

/// Make the plan for a detected machine.
pub fn plan(d: &Detected) -> Plan {
    let nic = d.primary_nic();
    let node = match nic.and_then(|n| n.numa_node) {
        Some(n) if d.nodes.len() > 1 && d.cores.iter().any(|c| c.node == Some(n)) => Some(n),
        _ => None,
    };
    let cores: Vec<&Core> = d
        .cores
        .iter()
        .filter(|c| node.is_none() || c.node == node)
        .collect();
    let reserve = reserved_cores(cores.len(), d.threads_per_core());
    let (reserved, shard_cores) = cores.split_at(reserve.min(cores.len()));
    let shard_cpus: Vec<usize> = shard_cores
        .iter()
        .filter_map(|c| c.threads.first().copied())
        .collect();
    let idle_siblings: Vec<usize> = shard_cores
        .iter()
        .flat_map(|c| c.threads.iter().skip(1).copied())
        .collect();
    let housekeeping_cpus: Vec<usize> = reserved
        .iter()
        .flat_map(|c| c.threads.iter().copied())
        .collect();
    let first_shard = shard_cpus.first().copied().unwrap_or(0);
    // With no core to spare, the control plane takes the shard's SMT sibling if it has one.
    let control_plane_cpu = housekeeping_cpus
        .first()
        .or(idle_siblings.first())
        .copied()
        .unwrap_or(first_shard);
    let irq_cpu = housekeeping_cpus
        .last()
        .or(idle_siblings.first())
        .copied()
        .unwrap_or(first_shard);
    let other_node_cpus: Vec<usize> = d
        .cpus
        .iter()
        .map(|c| c.id)
        .filter(|id| !cores.iter().any(|c| c.threads.contains(id)))
        .collect();
    let nic_plan = nic.map(|nic| {
        let queues = nic.irq_queues().max(1);
        let shards = shard_cpus.len().max(1);
        let groups = queues.min(shards);
        // Shard i belongs to group i % groups; queue k is served by group k % groups.
        let group = |g: usize| -> Vec<usize> {
            shard_cpus
                .iter()
                .enumerate()
                .filter(|(i, _)| i % groups == g)
                .map(|(_, c)| *c)
                .collect()
        };
        let steering = match (queues, queues >= shards) {
            (1, _) => Steering::Rps,
            (_, true) => Steering::PerQueue,
            (_, false) => Steering::Grouped,
        };
        let irq_affinity = nic
            .irqs
            .iter()
            .map(|irq| {
                let cpu = match steering {
                    Steering::Rps => irq_cpu,
                    _ => group(irq.queue % groups)
                        .first()
                        .copied()
                        .unwrap_or(first_shard),
                };
                (irq.clone(), cpu)
            })
            .collect();
        let rps = (0..nic.rx_queues.max(1))
            .map(|k| {
                let cpus = match steering {
                    Steering::Rps => shard_cpus.clone(),
                    Steering::PerQueue => Vec::new(),
                    Steering::Grouped => {
                        let g = group(k % groups);
                        if g.len() > 1 { g } else { Vec::new() }
                    }
                };
                (k, cpus)
            })
            .collect();
        let xps = if nic.tx_queues > 1 {
            (0..nic.tx_queues)
                .map(|t| (t, if t < groups { group(t) } else { Vec::new() }))
                .collect()
        } else {
            Vec::new()
        };
        NicPlan {
            name: nic.name.clone(),
            queues,
            steering,
            irq_affinity,
            rps,
            xps,
            suggested_queues: (queues != shards).then_some(shards),
        }
    });
    Plan {
        node,
        memlock_needed_bytes: MEMLOCK_PER_SHARD_BYTES * shard_cpus.len() as u64,
        memlock_recommended_bytes: MEMLOCK_PER_SHARD_BYTES * shard_cpus.len() as u64
            + MEMLOCK_BASE_BYTES,
        shard_cpus,
        control_plane_cpu,
        housekeeping_cpus,
        irq_cpu,
        idle_siblings,
        other_node_cpus,
        nic: nic_plan,
    }
}
