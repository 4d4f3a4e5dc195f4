#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
//! `shardgate tuning detect --root <fixture>`: the binary on three fixture machines
//! (`tests/fixtures/machines/`). The output is a profile the gateway accepts, with the
//! suggestions as comments, and nothing under the root is written.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use shardgate::config::Tuning;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/machines/{name}"))
}

/// Every entry under `dir` with its size and modification time (symlinks not followed).
fn snapshot(dir: &Path, out: &mut Vec<(PathBuf, u64, SystemTime)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        out.push((entry.path(), meta.len(), meta.modified().unwrap()));
        if meta.is_dir() {
            snapshot(&entry.path(), out);
        }
    }
    out.sort();
}

/// Run the detector on a fixture; returns stdout. Checks it exits 0, says nothing on stderr,
/// leaves the tree as it was, and prints a profile `Tuning::from_toml` accepts there.
fn detect(name: &str, online: Vec<usize>) -> (String, Tuning) {
    let root = fixture(name);
    let mut before = Vec::new();
    snapshot(&root, &mut before);
    let out = Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args(["tuning", "detect", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: {stderr}\n{stdout}");
    assert!(stderr.is_empty(), "{name}: stderr: {stderr}");
    let mut after = Vec::new();
    snapshot(&root, &mut after);
    assert_eq!(before, after, "{name}: the tree under --root changed");
    let tuning = Tuning::from_toml(&stdout, name, online)
        .unwrap_or_else(|e| panic!("{name}: the output is not a valid profile: {e}\n{stdout}"));
    (stdout, tuning)
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l.trim_end() == line),
        "missing line {line:?} in:\n{text}"
    );
}

fn has_prefix(text: &str, prefix: &str) {
    assert!(
        text.lines().any(|l| l.starts_with(prefix)),
        "no line starting {prefix:?} in:\n{text}"
    );
}

#[test]
fn vm_2core_one_shard_on_core_1_and_rps() {
    let (out, t) = detect("vm-2core", vec![0, 1]);
    assert_eq!(t.placement.cores, vec![Some(1)]);
    assert_eq!(t.control_plane_core, Some(0));
    has(&out, "count = 1");
    has(&out, "cores = [1]");
    has(&out, "core = 0");
    has(
        &out,
        "# numa:      no NUMA nodes listed (one memory domain)",
    );
    has_prefix(
        &out,
        "#   echo 0 > /proc/irq/31/smp_affinity_list   # irq 31 -> cpu 0: virtio1-input.0",
    );
    has_prefix(
        &out,
        "#   echo 0 > /proc/irq/32/smp_affinity_list   # irq 32 -> cpu 0: virtio1-output.0",
    );
    has_prefix(
        &out,
        "#   echo 2 > /sys/class/net/ens4/queues/rx-0/rps_cpus",
    );
    assert!(
        out.contains("virtio1-input.0 (queue 0, reserved; now 0-1)"),
        "the current affinity is shown: {out}"
    );
    assert!(
        !out.contains("/proc/irq/30/"),
        "the config IRQ is not a queue"
    );
    assert!(!out.contains("xps_cpus"), "one tx queue: no XPS");
    assert!(!out.contains("ethtool -L"), "one queue for one shard");
    has_prefix(&out, "#   ulimit -l 8704");
}

#[test]
fn two_socket_64_shards_on_the_nics_node() {
    let (out, t) = detect("two-socket-64", (0..128).collect());
    let cores: Vec<Option<usize>> = (33..64).map(Some).collect();
    assert_eq!(t.placement.cores, cores);
    assert_eq!(t.control_plane_core, Some(32));
    has(&out, "count = 31");
    has_prefix(
        &out,
        "# nic:       ens1f0 (device 0000:86:00.0, NUMA node 1): 16 rx / 16 tx queue(s)",
    );
    has(&out, "#            other NICs, not planned for: eno1");
    has_prefix(
        &out,
        "# shards:    31, one per physical core of NUMA node 1 (the NIC's)",
    );
    has(
        &out,
        "# idle:      SMT siblings of shard cores (no shard): 97-127",
    );
    has(&out, "# unused:    CPUs of other NUMA nodes: 0-31,64-95");
    has_prefix(
        &out,
        "#   echo 33 > /proc/irq/201/smp_affinity_list   # irq 201 -> cpu 33",
    );
    has_prefix(
        &out,
        "#   echo 48 > /proc/irq/216/smp_affinity_list   # irq 216 -> cpu 48",
    );
    assert!(
        !out.contains("/proc/irq/200/"),
        "the misc IRQ is not a queue"
    );
    assert!(
        !out.contains("/proc/irq/121/"),
        "the management NIC is not planned for"
    );
    has_prefix(
        &out,
        "#   echo 20002,00000000 > /sys/class/net/ens1f0/queues/rx-0/rps_cpus",
    );
    has_prefix(
        &out,
        "#   echo 10000,00000000 > /sys/class/net/ens1f0/queues/tx-15/xps_cpus",
    );
    has(&out, "#   ethtool -L ens1f0 combined 31");
    has(
        &out,
        "#   numactl --preferred=1 shardgate --tuning FILE ...",
    );
    has_prefix(&out, "# memlock:   unlimited");
    assert!(!out.contains("ulimit -l"));
}

#[test]
fn nic_8queue_one_queue_irq_per_shard_core() {
    let (out, t) = detect("nic-8queue", (0..8).collect());
    let cores: Vec<Option<usize>> = (1..8).map(Some).collect();
    assert_eq!(t.placement.cores, cores);
    assert_eq!(t.control_plane_core, Some(0));
    for (irq, cpu) in [(40, 1), (41, 2), (46, 7), (47, 1)] {
        has_prefix(
            &out,
            &format!(
                "#   echo {cpu} > /proc/irq/{irq}/smp_affinity_list   # irq {irq} -> cpu {cpu}"
            ),
        );
    }
    assert!(
        !out.contains("/proc/irq/48/"),
        "the link-state IRQ is not a queue"
    );
    has_prefix(
        &out,
        "#   echo 0 > /sys/class/net/enp3s0f0/queues/rx-0/rps_cpus   # rx-0 -> off",
    );
    has_prefix(
        &out,
        "#   echo 80 > /sys/class/net/enp3s0f0/queues/tx-6/xps_cpus   # tx-6 <- cpus 7",
    );
    has(&out, "#   ethtool -L enp3s0f0 combined 7");
    assert!(!out.contains("numactl"), "one node");
}

#[test]
fn help_lists_the_subcommand_and_errors_name_the_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .arg("--help")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("shardgate tuning detect [--root DIR]"),
        "{stdout}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args(["tuning", "detect", "--root"])
        .arg(fixture("no-such-machine"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sys/devices/system/cpu/online"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_shardgate"))
        .args(["tuning", "guess"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tuning needs a subcommand: detect"));
}
