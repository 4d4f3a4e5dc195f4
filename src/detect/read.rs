//! Reading a machine description under a root directory: the few `/sys` and `/proc` files the
//! detector needs, each parsed strictly (errors name the file) and nothing else touched.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{Core, Cpu, DetectError, Memlock, Nic, Node, QueueIrq};

const CPU_DIR: &str = "sys/devices/system/cpu";
const NODE_DIR: &str = "sys/devices/system/node";
const NET_DIR: &str = "sys/class/net";

/// One line of `/proc/interrupts` with a numbered IRQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqLine {
    /// IRQ number.
    pub irq: u32,
    /// The action name (the last field: `eth0-TxRx-0`, `virtio2-input.0`).
    pub action: String,
}

fn read(path: &Path) -> Result<String, DetectError> {
    std::fs::read_to_string(path).map_err(|source| DetectError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// `Ok(None)` when the file does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, DetectError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DetectError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// `None` on any error: for files that only say what is set now (some are absent or refuse
/// reads, like `xps_cpus` on a single-queue NIC), never needed for the plan.
fn read_current(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn parse_error(path: &Path, message: String) -> DetectError {
    DetectError::Parse {
        path: path.display().to_string(),
        message,
    }
}

fn number<T: std::str::FromStr>(path: &Path, text: &str) -> Result<T, DetectError> {
    text.trim()
        .parse()
        .map_err(|_| parse_error(path, format!("expected a number, found {:?}", text.trim())))
}

/// Parse the kernel's CPU list format (`0-3,8,10-11`; empty for none).
pub fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || format!("bad CPU list entry {part:?}");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.parse().map_err(|_| bad())?;
                let b: usize = b.parse().map_err(|_| bad())?;
                if b < a {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Parse a sysfs cpumask (`rps_cpus`, `xps_cpus`): comma-separated 32-bit hex words, highest
/// first (`1,00000004` is CPUs 2 and 32).
pub fn parse_cpu_mask(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for (i, word) in text.trim().rsplit(',').enumerate() {
        let bits =
            u32::from_str_radix(word, 16).map_err(|_| format!("bad cpumask word {word:?}"))?;
        cpus.extend((0..32).filter(|b| bits & (1 << b) != 0).map(|b| i * 32 + b));
    }
    cpus.sort_unstable();
    Ok(cpus)
}

/// Format CPU ids as the kernel's list format (`1-3,8`).
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

fn cpu_list_file(path: &Path) -> Result<Vec<usize>, DetectError> {
    parse_cpu_list(&read(path)?).map_err(|m| parse_error(path, m))
}

/// Online CPUs with their topology. A CPU without `topology/` (some VMs) counts as its own
/// core on package 0.
pub fn cpus(root: &Path) -> Result<Vec<Cpu>, DetectError> {
    let online_path = root.join(CPU_DIR).join("online");
    let online = cpu_list_file(&online_path)?;
    if online.is_empty() {
        return Err(parse_error(&online_path, "no CPU is online".into()));
    }
    let mut cpus = Vec::with_capacity(online.len());
    for id in online {
        let topo = root.join(CPU_DIR).join(format!("cpu{id}/topology"));
        let field = |name: &str| -> Result<Option<usize>, DetectError> {
            let path = topo.join(name);
            read_optional(&path)?.map(|t| number(&path, &t)).transpose()
        };
        let siblings_path = topo.join("thread_siblings_list");
        let mut siblings = match read_optional(&siblings_path)? {
            Some(t) => parse_cpu_list(&t).map_err(|m| parse_error(&siblings_path, m))?,
            None => vec![id],
        };
        if !siblings.contains(&id) {
            siblings.push(id);
            siblings.sort_unstable();
        }
        cpus.push(Cpu {
            id,
            package: field("physical_package_id")?.unwrap_or(0),
            core_id: field("core_id")?.unwrap_or(id),
            siblings,
            node: None,
        });
    }
    Ok(cpus)
}

/// Group online CPUs into physical cores (same package, same core id), ordered by first
/// thread. Offline siblings are left out.
pub fn group_cores(cpus: &[Cpu]) -> Vec<Core> {
    let mut keyed: Vec<((usize, usize), Core)> = Vec::new();
    for cpu in cpus {
        let key = (cpu.package, cpu.core_id);
        match keyed.iter_mut().find(|(k, _)| *k == key) {
            Some((_, core)) => core.threads.push(cpu.id),
            None => keyed.push((
                key,
                Core {
                    package: cpu.package,
                    node: cpu.node,
                    threads: vec![cpu.id],
                },
            )),
        }
    }
    let mut cores: Vec<Core> = keyed.into_iter().map(|(_, c)| c).collect();
    for core in &mut cores {
        core.threads.sort_unstable();
    }
    cores.sort_by_key(|c| c.threads.first().copied());
    cores
}

/// The entries of `dir` (none when it does not exist).
fn dir_entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>, DetectError> {
    let read_error = |source| DetectError::Read {
        path: dir.display().to_string(),
        source,
    };
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map_err(read_error)).collect(),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(read_error(source)),
    }
}

fn numbered_entries(dir: &Path, prefix: &str) -> Result<Vec<(usize, PathBuf)>, DetectError> {
    let mut out = Vec::new();
    for entry in dir_entries(dir)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix(prefix).and_then(|n| n.parse().ok()) {
            out.push((n, entry.path()));
        }
    }
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

/// NUMA nodes with CPUs (`sys/devices/system/node/nodeN/cpulist`); empty without NUMA dirs.
pub fn nodes(root: &Path) -> Result<Vec<Node>, DetectError> {
    let mut nodes = Vec::new();
    for (id, dir) in numbered_entries(&root.join(NODE_DIR), "node")? {
        let cpus = cpu_list_file(&dir.join("cpulist"))?;
        if !cpus.is_empty() {
            nodes.push(Node { id, cpus });
        }
    }
    Ok(nodes)
}

/// Parse `/proc/interrupts`: numbered lines only (`NMI:`, `LOC:` ... are skipped).
pub fn parse_interrupts(text: &str) -> Vec<IrqLine> {
    text.lines()
        .filter_map(|line| {
            let (label, rest) = line.trim_start().split_once(':')?;
            let irq = label.parse().ok()?;
            let action = rest.split_whitespace().last()?.to_owned();
            Some(IrqLine { irq, action })
        })
        .collect()
}

/// `proc/interrupts` under the root (empty when missing).
pub fn interrupts(root: &Path) -> Result<Vec<IrqLine>, DetectError> {
    Ok(read_optional(&root.join("proc/interrupts"))?
        .map(|t| parse_interrupts(&t))
        .unwrap_or_default())
}

/// Where `name` occurs in `action` as a whole token (not followed or preceded by a letter or
/// digit, so `eth1` does not match `eth10-TxRx-0`). Returns the text after it.
fn after_token<'a>(action: &'a str, name: &str) -> Option<&'a str> {
    if name.is_empty() {
        return None;
    }
    let mut from = 0;
    while let Some(pos) = action[from..].find(name) {
        let start = from + pos;
        let end = start + name.len();
        let before = action[..start].chars().next_back();
        let after = action[end..].chars().next();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
        {
            return Some(&action[end..]);
        }
        from = start + 1;
    }
    None
}

/// The queue an IRQ action serves, if it is one of `nic`'s queue lines (`eth0-TxRx-3` → 3,
/// `virtio2-input.0` → 0, `mlx5_comp5@pci:0000:3b:00.0` → 5); `None` for other lines and for
/// the NIC's own control lines (`virtio2-config`, `eth0` link state, `mlx5_async0`).
pub fn queue_of(action: &str, ifname: &str, device: Option<&str>) -> Option<usize> {
    let (rest, before) = if let Some(rest) = after_token(action, ifname) {
        let start = action.len() - rest.len() - ifname.len();
        (rest, &action[..start])
    } else {
        let device = device?;
        let rest = after_token(action, device)?;
        let start = action.len() - rest.len() - device.len();
        (rest, &action[..start])
    };
    let text = format!("{before}{rest}").to_ascii_lowercase();
    if ["config", "async", "ctrl", "event", "link"]
        .iter()
        .any(|w| text.contains(w))
    {
        return None;
    }
    let digits: String = {
        let trimmed = text.trim_end_matches(|c: char| !c.is_ascii_digit());
        let tail = trimmed.len()
            - trimmed
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_digit())
                .count();
        trimmed[tail..].to_owned()
    };
    if let Ok(q) = digits.parse() {
        return Some(q);
    }
    // A single-queue driver names its lines without a number (`virtio3-rx`).
    ["rx", "tx", "input", "output"]
        .iter()
        .any(|w| text.contains(w))
        .then_some(0)
}

/// Physical NICs under `sys/class/net` (those with a `device` link) with their queue IRQs.
pub fn nics(root: &Path, interrupts: &[IrqLine]) -> Result<Vec<Nic>, DetectError> {
    let mut nics = Vec::new();
    for entry in dir_entries(&root.join(NET_DIR))? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let device_link = path.join("device");
        if std::fs::symlink_metadata(&device_link).is_err() {
            continue; // lo, bridges, veths, tunnels: no device underneath
        }
        let device = std::fs::read_link(&device_link)
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
        let numa_path = device_link.join("numa_node");
        let numa_node = match read_optional(&numa_path)? {
            Some(t) => {
                let n: i64 = number(&numa_path, &t)?;
                usize::try_from(n).ok()
            }
            None => None,
        };
        let queues = path.join("queues");
        let current_mask = |dir: &PathBuf, file: &str| {
            read_current(&dir.join(file)).and_then(|t| parse_cpu_mask(&t).ok())
        };
        let rx = numbered_entries(&queues, "rx-")?;
        let tx = numbered_entries(&queues, "tx-")?;
        let rps_now = rx
            .iter()
            .map(|(_, d)| current_mask(d, "rps_cpus"))
            .collect();
        let xps_now = tx
            .iter()
            .map(|(_, d)| current_mask(d, "xps_cpus"))
            .collect();
        let irqs = interrupts
            .iter()
            .filter_map(|l| {
                queue_of(&l.action, &name, device.as_deref()).map(|queue| QueueIrq {
                    irq: l.irq,
                    queue,
                    action: l.action.clone(),
                    affinity_now: read_current(
                        &root.join(format!("proc/irq/{}/smp_affinity_list", l.irq)),
                    )
                    .and_then(|t| parse_cpu_list(&t).ok()),
                })
            })
            .collect();
        nics.push(Nic {
            name,
            device,
            numa_node,
            rx_queues: rx.len(),
            tx_queues: tx.len(),
            irqs,
            rps_now,
            xps_now,
        });
    }
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(nics)
}

/// The process's CPU affinity from `proc/self/status` (`Cpus_allowed_list:`), when present.
pub fn allowed_cpus(root: &Path) -> Result<Option<Vec<usize>>, DetectError> {
    let path = root.join("proc/self/status");
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    text.lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|list| parse_cpu_list(list).map_err(|m| parse_error(&path, m)))
        .transpose()
}

/// Parse the soft `Max locked memory` limit from a `/proc/<pid>/limits` text.
pub fn parse_memlock(text: &str) -> Memlock {
    text.lines()
        .find_map(|l| l.strip_prefix("Max locked memory"))
        .and_then(|rest| rest.split_whitespace().next())
        .map_or(Memlock::Unknown, |soft| match soft {
            "unlimited" => Memlock::Unlimited,
            n => n.parse().map_or(Memlock::Unknown, Memlock::Bytes),
        })
}

/// The locked-memory limit from `proc/self/limits` under the root.
pub fn memlock(root: &Path) -> Result<Memlock, DetectError> {
    Ok(read_optional(&root.join("proc/self/limits"))?
        .map_or(Memlock::Unknown, |t| parse_memlock(&t)))
}

/// `proc/sys/kernel/io_uring_disabled` (kernels from 6.6), when present.
pub fn io_uring_disabled(root: &Path) -> Result<Option<u8>, DetectError> {
    let path = root.join("proc/sys/kernel/io_uring_disabled");
    read_optional(&path)?.map(|t| number(&path, &t)).transpose()
}
