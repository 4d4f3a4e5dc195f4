//! Rendering a plan: a tuning TOML profile (`Tuning::from_toml` accepts the whole output),
//! led by what was detected and followed by the suggested system settings as comments.

use std::fmt::Write as _;

use super::plan::{Plan, Steering};
use super::read::format_cpu_list;
use super::{Detected, IoUring, Memlock};

/// A CPU set as a sysfs cpumask (`rps_cpus`, `xps_cpus`): comma-separated 32-bit hex words,
/// highest first (`1,00000004` is CPUs 2 and 32; `0` is none).
pub fn cpu_mask(cpus: &[usize]) -> String {
    let Some(max) = cpus.iter().max() else {
        return "0".into();
    };
    let mut words = vec![0u32; max / 32 + 1];
    for c in cpus {
        words[c / 32] |= 1 << (c % 32);
    }
    let mut out = String::new();
    for (i, w) in words.iter().rev().enumerate() {
        if i == 0 {
            let _ = write!(out, "{w:x}");
        } else {
            let _ = write!(out, ",{w:08x}");
        }
    }
    out
}

fn list_or_none(cpus: &[usize]) -> String {
    if cpus.is_empty() {
        "none".into()
    } else {
        format_cpu_list(cpus)
    }
}

/// What is set now against what is suggested: `; already set`, `; now 0-7`, or nothing when
/// the current value could not be read.
fn now_note(now: Option<&Vec<usize>>, want: &[usize]) -> String {
    match now {
        Some(now) if now.as_slice() == want => "; already set".into(),
        Some(now) if now.is_empty() => "; now off".into(),
        Some(now) => format!("; now {}", format_cpu_list(now)),
        None => String::new(),
    }
}

fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

/// `[a, b, c]`, wrapped under `cores = [` at about 96 columns.
fn toml_array(key: &str, values: &[usize]) -> String {
    let mut out = format!("{key} = [");
    let indent = " ".repeat(out.len());
    let mut line_len = out.len();
    for (i, v) in values.iter().enumerate() {
        let item = if i + 1 < values.len() {
            format!("{v}, ")
        } else {
            v.to_string()
        };
        if line_len + item.len() > 96 {
            out.truncate(out.trim_end().len());
            out.push('\n');
            out.push_str(&indent);
            line_len = indent.len();
        }
        line_len += item.len();
        out.push_str(&item);
    }
    out.push(']');
    out
}

/// Render the profile and suggestions. `root` is shown in the header (the directory read).
pub fn render(d: &Detected, p: &Plan, root: &str) -> String {
    let mut o = String::new();
    let mut line = |s: String| {
        o.push_str(&s);
        o.push('\n');
    };
    let shards = p.shard_cpus.len();
    line("# Tuning profile made by `shardgate tuning detect`. Nothing was changed on this".into());
    line(
        "# machine: use the profile with `--tuning FILE`; the suggestions after it are yours"
            .into(),
    );
    line("# to apply (as root). tuning/README.md explains each of them.".into());
    line(format!("# read from: {root}"));
    line("#".into());
    let all: Vec<usize> = d.cpus.iter().map(|c| c.id).collect();
    line(format!(
        "# cpus:      {} online ({}), {} physical core(s), {} thread(s) per core, {} package(s)",
        all.len(),
        format_cpu_list(&all),
        d.cores.len(),
        d.threads_per_core(),
        d.packages()
    ));
    if !d.excluded_cpus.is_empty() {
        line(format!(
            "#            outside this process's CPU affinity, left out: {}",
            format_cpu_list(&d.excluded_cpus)
        ));
    }
    if d.nodes.is_empty() {
        line("# numa:      no NUMA nodes listed (one memory domain)".into());
    } else {
        let nodes: Vec<String> = d
            .nodes
            .iter()
            .map(|n| format!("node {} = {}", n.id, format_cpu_list(&n.cpus)))
            .collect();
        line(format!("# numa:      {}", nodes.join("; ")));
    }
    match d.primary_nic() {
        Some(nic) => {
            line(format!(
                "# nic:       {} (device {}, NUMA node {}): {} rx / {} tx queue(s), {} queue IRQ(s)",
                nic.name,
                nic.device.as_deref().unwrap_or("?"),
                nic.numa_node
                    .map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
                nic.rx_queues,
                nic.tx_queues,
                nic.irqs.len()
            ));
            let others: Vec<&str> = d
                .nics
                .iter()
                .filter(|n| n.name != nic.name)
                .map(|n| n.name.as_str())
                .collect();
            if !others.is_empty() {
                line(format!(
                    "#            other NICs, not planned for: {}",
                    others.join(", ")
                ));
            }
        }
        None => line("# nic:       no physical NIC found under sys/class/net".into()),
    }
    let on_node = p
        .node
        .map_or_else(String::new, |n| format!(" of NUMA node {n} (the NIC's)"));
    line(format!(
        "# shards:    {shards}, one per physical core{on_node}, on its first hardware thread: {}",
        list_or_none(&p.shard_cpus)
    ));
    line(format!(
        "# kept back: control plane on cpu {}; interrupts kept off the shards on cpu {}; reserved: {}",
        p.control_plane_cpu,
        p.irq_cpu,
        list_or_none(&p.housekeeping_cpus)
    ));
    if !p.idle_siblings.is_empty() {
        line(format!(
            "# idle:      SMT siblings of shard cores (no shard): {}",
            format_cpu_list(&p.idle_siblings)
        ));
    }
    if !p.other_node_cpus.is_empty() {
        line(format!(
            "# unused:    CPUs of other NUMA nodes: {}",
            format_cpu_list(&p.other_node_cpus)
        ));
    }
    let need = kib(p.memlock_needed_bytes);
    let want = kib(p.memlock_recommended_bytes);
    let figures = format!("{shards} shard(s) need {need} KiB, {want} KiB recommended");
    let memlock_ok = match d.memlock {
        Memlock::Unlimited => {
            line(format!("# memlock:   unlimited ({figures}): ok"));
            true
        }
        Memlock::Bytes(b) => {
            let verdict = if b >= p.memlock_recommended_bytes {
                "ok"
            } else if b >= p.memlock_needed_bytes {
                "enough to start, below the recommendation (see below)"
            } else {
                "TOO LOW: glommio refuses to start (see below)"
            };
            line(format!(
                "# memlock:   {} KiB ({figures}): {verdict}",
                kib(b)
            ));
            b >= p.memlock_recommended_bytes
        }
        Memlock::Unknown => {
            line(format!("# memlock:   unknown ({figures})"));
            false
        }
    };
    let sysctl = d
        .io_uring_disabled
        .map_or_else(String::new, |v| format!("; kernel.io_uring_disabled = {v}"));
    let io_uring_ok = match &d.io_uring {
        IoUring::Available => {
            line(format!("# io_uring:  available{sysctl}"));
            true
        }
        IoUring::Blocked(e) => {
            line(format!("# io_uring:  NOT AVAILABLE ({e}){sysctl}"));
            false
        }
        IoUring::NotProbed => {
            line(format!(
                "# io_uring:  not probed (another machine's tree){sysctl}"
            ));
            d.io_uring_disabled.is_none_or(|v| v == 0)
        }
    };
    line(String::new());
    line("[shards]".into());
    line(format!("count = {shards}"));
    line(toml_array("cores", &p.shard_cpus));
    line("pin = true".into());
    line(String::new());
    line("[control_plane]".into());
    line(format!("core = {}", p.control_plane_cpu));
    line(String::new());
    line("# ---- Suggestions (nothing below was applied) ----".into());
    let mut step = 0;
    let mut heading = |line: &mut dyn FnMut(String), text: &str| {
        step += 1;
        line("#".into());
        line(format!("# {step}. {text}"));
    };
    if let Some(nic) = &p.nic {
        let dev = &nic.name;
        heading(
            &mut line,
            "irqbalance would move the IRQs below again: stop it.",
        );
        line("#   systemctl disable --now irqbalance".into());
        if let Some(n) = nic.suggested_queues {
            let why = if nic.queues > n {
                "more queues than shards: two queues' IRQs land on one shard core"
            } else {
                "fewer queues than shards: RPS has to spread each queue over several shards"
            };
            heading(
                &mut line,
                &format!(
                    "NIC queues: {} with an IRQ, {n} shard(s) ({why}). If `ethtool -l {dev}` allows it,",
                    nic.queues
                ),
            );
            line(
                "#    one combined queue per shard, then run `shardgate tuning detect` again (IRQ numbers change):"
                    .into(),
            );
            line(format!("#   ethtool -L {dev} combined {n}"));
        }
        if !nic.irq_affinity.is_empty() {
            let how = match nic.steering {
                Steering::Rps => {
                    "IRQ affinity: one queue, so its IRQs stay on a reserved core and RPS (next) hands its flows to the shards."
                }
                Steering::PerQueue => {
                    "IRQ affinity: each queue's IRQ on one shard's core (irq N -> cpu M)."
                }
                Steering::Grouped => {
                    "IRQ affinity: each queue's IRQ on the first shard core of its group (irq N -> cpu M)."
                }
            };
            heading(&mut line, how);
            for (irq, cpu) in &nic.irq_affinity {
                let shard = p
                    .shard_cpus
                    .iter()
                    .position(|c| c == cpu)
                    .map_or_else(|| "reserved".to_owned(), |s| format!("shard {s}"));
                let now = now_note(irq.affinity_now.as_ref(), &[*cpu]);
                line(format!(
                    "#   echo {cpu} > /proc/irq/{}/smp_affinity_list   # irq {} -> cpu {cpu}: {} (queue {}, {shard}{now})",
                    irq.irq, irq.irq, irq.action, irq.queue
                ));
            }
        } else {
            heading(
                &mut line,
                &format!(
                    "IRQ affinity: no queue IRQ of {dev} found in /proc/interrupts; RPS alone steers its flows."
                ),
            );
        }
        heading(
            &mut line,
            match nic.steering {
                Steering::PerQueue => {
                    "RPS off: the queue's IRQ already runs on the shard core that owns its flows."
                }
                _ => {
                    "RPS: each queue's flows hashed over its shard cores (one flow, always the same core)."
                }
            },
        );
        let current = d.nics.iter().find(|n| n.name == nic.name);
        for (q, cpus) in &nic.rps {
            let now = now_note(current.and_then(|n| n.rps_now.get(*q)?.as_ref()), cpus);
            line(format!(
                "#   echo {} > /sys/class/net/{dev}/queues/rx-{q}/rps_cpus   # rx-{q} -> {}{now}",
                cpu_mask(cpus),
                if cpus.is_empty() {
                    "off".to_owned()
                } else {
                    format!("cpus {}", format_cpu_list(cpus))
                }
            ));
        }
        if !nic.xps.is_empty() {
            heading(
                &mut line,
                "XPS: a shard sends on the queue its own core receives on (others: the kernel's hash).",
            );
            for (q, cpus) in &nic.xps {
                let now = now_note(current.and_then(|n| n.xps_now.get(*q)?.as_ref()), cpus);
                line(format!(
                    "#   echo {} > /sys/class/net/{dev}/queues/tx-{q}/xps_cpus   # tx-{q} <- {}{now}",
                    cpu_mask(cpus),
                    if cpus.is_empty() {
                        "no shard".to_owned()
                    } else {
                        format!("cpus {}", format_cpu_list(cpus))
                    }
                ));
            }
        }
        heading(
            &mut line,
            "SO_INCOMING_CPU: each shard's listener set to its own core, so the kernel hands a new",
        );
        line(
            "#    connection to the shard whose core took its first packet (shard -> cpu):".into(),
        );
        let pairs: Vec<String> = p
            .shard_cpus
            .iter()
            .enumerate()
            .map(|(s, c)| format!("{s}->{c}"))
            .collect();
        for chunk in pairs.chunks(12) {
            line(format!("#   {}", chunk.join(" ")));
        }
        line(
            "#    shardgate's listeners do not set it yet (tuning/README.md); until then the"
                .into(),
        );
        line(
            "#    kernel spreads connections over shards by hash and the steering above keeps"
                .into(),
        );
        line("#    each flow's packets on one core, not yet on its shard's.".into());
    }
    if !memlock_ok {
        heading(
            &mut line,
            &format!("memlock: raise the locked-memory limit to {want} KiB or more:"),
        );
        line(format!("#   ulimit -l {want}              # this shell"));
        line("#   LimitMEMLOCK=infinity         # systemd unit".into());
        line("#   docker run --ulimit memlock=-1 ...".into());
    }
    if !io_uring_ok {
        heading(
            &mut line,
            "io_uring: allow it (sysctl kernel.io_uring_disabled=0; outside Docker's default seccomp).",
        );
        line("#   sysctl -w kernel.io_uring_disabled=0".into());
        line("#   docker run --security-opt seccomp=unconfined ...".into());
    }
    if let Some(node) = p.node {
        heading(
            &mut line,
            &format!(
                "NUMA: the shards are on node {node}, where the NIC writes packets; keep the heap there too:"
            ),
        );
        line(format!(
            "#   numactl --preferred={node} shardgate --tuning FILE ..."
        ));
    }
    o
}
