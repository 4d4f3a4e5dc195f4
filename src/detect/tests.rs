use std::path::PathBuf;

use super::plan::Steering;
use super::read::{
    format_cpu_list, parse_cpu_list, parse_cpu_mask, parse_interrupts, parse_memlock, queue_of,
};
use super::render::cpu_mask;
use super::*;
use crate::config::Tuning;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/machines/{name}"))
}

fn machine(name: &str) -> (Detected, Plan, String) {
    let d = detect(&fixture(name), IoUring::NotProbed).unwrap();
    let p = plan(&d);
    let text = render(&d, &p, name);
    (d, p, text)
}

/// The whole output is a profile the gateway accepts on that machine, with the planned cores.
fn assert_profile_parses(d: &Detected, p: &Plan, text: &str) {
    let online: Vec<usize> = d.cpus.iter().map(|c| c.id).collect();
    let t = Tuning::from_toml(text, "detected", online).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let cores: Vec<Option<usize>> = p.shard_cpus.iter().map(|c| Some(*c)).collect();
    assert_eq!(t.placement.cores, cores);
    assert_eq!(t.control_plane_core, Some(p.control_plane_cpu));
}

fn temp_root(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shardgate-detect-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sys/devices/system/cpu/cpu0/topology")).unwrap();
    dir
}

#[test]
fn cpu_lists_parse_and_format() {
    assert_eq!(
        parse_cpu_list("0-3,8,10-11\n").unwrap(),
        vec![0, 1, 2, 3, 8, 10, 11]
    );
    assert_eq!(parse_cpu_list("\n").unwrap(), Vec::<usize>::new());
    assert_eq!(parse_cpu_list("5").unwrap(), vec![5]);
    assert!(parse_cpu_list("3-1").is_err());
    assert!(parse_cpu_list("a").is_err());
    assert_eq!(format_cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
    assert_eq!(format_cpu_list(&[7]), "7");
    assert_eq!(format_cpu_list(&[]), "");
}

#[test]
fn masks_use_32_bit_words_highest_first() {
    assert_eq!(cpu_mask(&[]), "0");
    assert_eq!(cpu_mask(&[1]), "2");
    assert_eq!(cpu_mask(&[0, 1, 2, 3]), "f");
    assert_eq!(cpu_mask(&[2, 32]), "1,00000004");
    assert_eq!(cpu_mask(&[97]), "2,00000000,00000000,00000000");
}

#[test]
fn masks_parse_back() {
    for cpus in [
        vec![],
        vec![1],
        vec![0, 1, 2, 3],
        vec![2, 32],
        vec![33, 49, 97],
    ] {
        assert_eq!(parse_cpu_mask(&cpu_mask(&cpus)).unwrap(), cpus);
    }
    assert_eq!(parse_cpu_mask("00,00000003\n").unwrap(), vec![0, 1]);
    assert!(parse_cpu_mask("zz").is_err());
}

#[test]
fn queue_irqs_are_told_from_control_lines() {
    assert_eq!(queue_of("eth0-TxRx-3", "eth0", None), Some(3));
    assert_eq!(queue_of("ice-ens1f0-TxRx-12", "ens1f0", None), Some(12));
    assert_eq!(
        queue_of("virtio2-input.0", "eth0", Some("virtio2")),
        Some(0)
    );
    assert_eq!(
        queue_of("virtio2-output.1", "eth0", Some("virtio2")),
        Some(1)
    );
    assert_eq!(queue_of("virtio3-rx", "eth1", Some("virtio3")), Some(0));
    assert_eq!(
        queue_of("mlx5_comp5@pci:0000:3b:00.0", "ens2", Some("0000:3b:00.0")),
        Some(5)
    );
    assert_eq!(queue_of("virtio2-config", "eth0", Some("virtio2")), None);
    assert_eq!(queue_of("enp3s0f0", "enp3s0f0", None), None);
    assert_eq!(
        queue_of("mlx5_async0@pci:0000:3b:00.0", "x", Some("0000:3b:00.0")),
        None
    );
    assert_eq!(
        queue_of("ice-0000:86:00.0:misc", "ens1f0", Some("0000:86:00.0")),
        None
    );
    // Another interface whose name starts with this one's.
    assert_eq!(queue_of("eth10-TxRx-0", "eth1", None), None);
    assert_eq!(queue_of("virtio12-input.0", "eth0", Some("virtio1")), None);
}

#[test]
fn interrupts_keep_numbered_lines_only() {
    let lines = parse_interrupts(
        "   CPU0 CPU1\n 31:  0  5  PCI-MSIX-0000:00:03.0 1-edge virtio1-input.0\nNMI: 0 0 Non-maskable interrupts\n",
    );
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].irq, 31);
    assert_eq!(lines[0].action, "virtio1-input.0");
}

#[test]
fn memlock_reads_the_soft_limit() {
    let text = "Limit  Soft Limit  Hard Limit  Units\nMax locked memory         65536     unlimited      bytes\n";
    assert_eq!(parse_memlock(text), Memlock::Bytes(65536));
    assert_eq!(
        parse_memlock("Max locked memory  unlimited  unlimited  bytes\n"),
        Memlock::Unlimited
    );
    assert_eq!(
        parse_memlock("Max open files 1024 1024 files\n"),
        Memlock::Unknown
    );
}

#[test]
fn memlock_figures_match_the_runtime() {
    assert_eq!(MEMLOCK_PER_SHARD_BYTES, crate::runtime::MEMLOCK_PER_SHARD);
}

#[test]
fn vm_2core_one_shard_and_rps_from_core_0() {
    let (d, p, text) = machine("vm-2core");
    assert_eq!(d.cpus.len(), 2);
    assert!(d.nodes.is_empty());
    assert_eq!(d.threads_per_core(), 1);
    assert_eq!(d.nics.len(), 1, "lo has no device and is not a NIC");
    let nic = &d.nics[0];
    assert_eq!(
        (nic.name.as_str(), nic.device.as_deref()),
        ("ens4", Some("virtio1"))
    );
    assert_eq!(nic.numa_node, None);
    let irqs: Vec<(u32, usize)> = nic.irqs.iter().map(|i| (i.irq, i.queue)).collect();
    assert_eq!(
        irqs,
        vec![(31, 0), (32, 0)],
        "virtio1-config is not a queue line"
    );
    assert_eq!(d.memlock, Memlock::Bytes(8 * 1024 * 1024));

    assert_eq!(p.node, None);
    assert_eq!(p.shard_cpus, vec![1]);
    assert_eq!(p.control_plane_cpu, 0);
    assert_eq!(p.irq_cpu, 0);
    let n = p.nic.as_ref().unwrap();
    assert_eq!(n.steering, Steering::Rps);
    assert!(n.irq_affinity.iter().all(|(_, cpu)| *cpu == 0));
    assert_eq!(n.rps, vec![(0, vec![1])]);
    assert!(n.xps.is_empty());
    assert_eq!(n.suggested_queues, None);
    assert_profile_parses(&d, &p, &text);
    assert!(
        text.contains("echo 0 > /proc/irq/31/smp_affinity_list"),
        "{text}"
    );
    assert!(
        text.contains("echo 2 > /sys/class/net/ens4/queues/rx-0/rps_cpus"),
        "{text}"
    );
    assert!(
        text.contains(
            "memlock:   8192 KiB (1 shard(s) need 512 KiB, 8704 KiB recommended): enough to start"
        ),
        "{text}"
    );
    assert!(text.contains("ulimit -l 8704"), "{text}");
    assert!(!text.contains("numactl"), "{text}");
}

#[test]
fn two_socket_64_keeps_shards_on_the_nics_node_one_per_physical_core() {
    let (d, p, text) = machine("two-socket-64");
    assert_eq!(d.cpus.len(), 128);
    assert_eq!(d.cores.len(), 64);
    assert_eq!(d.threads_per_core(), 2);
    assert_eq!(d.packages(), 2);
    assert_eq!(d.nodes.len(), 2);
    let nic = d.primary_nic().unwrap();
    assert_eq!(
        nic.name, "ens1f0",
        "the 16-queue NIC, not the management one"
    );
    assert_eq!(nic.numa_node, Some(1));
    assert_eq!(nic.irq_queues(), 16);
    assert_eq!(nic.irqs.len(), 16, "the misc line is not a queue");

    assert_eq!(p.node, Some(1));
    assert_eq!(p.shard_cpus, (33..64).collect::<Vec<_>>());
    assert_eq!(p.control_plane_cpu, 32);
    assert_eq!(p.irq_cpu, 96);
    assert_eq!(p.housekeeping_cpus, vec![32, 96]);
    assert_eq!(p.idle_siblings, (97..128).collect::<Vec<_>>());
    let mut other: Vec<usize> = (0..32).chain(64..96).collect();
    other.sort_unstable();
    assert_eq!(p.other_node_cpus, other);

    let n = p.nic.as_ref().unwrap();
    assert_eq!(n.steering, Steering::Grouped);
    // 31 shards over 16 queues: queue q's group is shards q and q + 16.
    let q0 = n.irq_affinity.iter().find(|(i, _)| i.queue == 0).unwrap();
    assert_eq!((q0.0.irq, q0.1), (201, 33));
    assert_eq!(n.rps[0], (0, vec![33, 49]));
    assert_eq!(n.rps[15], (15, Vec::new()), "a group of one needs no RPS");
    assert_eq!(n.xps[14], (14, vec![47, 63]));
    assert_eq!(n.suggested_queues, Some(31));
    // Every shard CPU receives from exactly one group and no CPU outside the shards does.
    let mut covered: Vec<usize> = n
        .irq_affinity
        .iter()
        .map(|(_, c)| *c)
        .chain(n.rps.iter().flat_map(|(_, c)| c.iter().copied()))
        .collect();
    covered.sort_unstable();
    covered.dedup();
    assert_eq!(covered, p.shard_cpus);

    assert_profile_parses(&d, &p, &text);
    assert!(text.contains("echo 33 > /proc/irq/201/smp_affinity_list   # irq 201 -> cpu 33"));
    assert!(text.contains("echo 20002,00000000 > /sys/class/net/ens1f0/queues/rx-0/rps_cpus"));
    assert!(text.contains("numactl --preferred=1"));
    assert!(text.contains("ethtool -L ens1f0 combined 31"));
    assert!(text.contains("memlock:   unlimited"));
    assert!(!text.contains("ulimit -l"));
}

#[test]
fn nic_8queue_one_irq_per_shard_core() {
    let (d, p, text) = machine("nic-8queue");
    assert_eq!(d.nodes.len(), 1);
    let nic = d.primary_nic().unwrap();
    assert_eq!((nic.rx_queues, nic.tx_queues, nic.irqs.len()), (8, 8, 8));
    assert_eq!(p.node, None, "one node: nothing to prefer");
    assert_eq!(p.shard_cpus, (1..8).collect::<Vec<_>>());
    assert_eq!(p.control_plane_cpu, 0);
    let n = p.nic.as_ref().unwrap();
    assert_eq!(n.steering, Steering::PerQueue);
    let map: Vec<(u32, usize)> = n.irq_affinity.iter().map(|(i, c)| (i.irq, *c)).collect();
    assert_eq!(
        map,
        vec![
            (40, 1),
            (41, 2),
            (42, 3),
            (43, 4),
            (44, 5),
            (45, 6),
            (46, 7),
            (47, 1)
        ]
    );
    assert!(n.rps.iter().all(|(_, c)| c.is_empty()));
    assert_eq!(n.xps[0], (0, vec![1]));
    assert_eq!(n.xps[7], (7, Vec::new()));
    assert_eq!(n.suggested_queues, Some(7));
    assert_profile_parses(&d, &p, &text);
    assert!(text.contains("echo 1 > /proc/irq/47/smp_affinity_list"));
    // What is set now is read and shown beside each suggestion.
    assert_eq!(nic.irqs[0].affinity_now, Some(vec![1]));
    assert_eq!(nic.rps_now[2], Some((1..8).collect()));
    assert!(
        text.contains("enp3s0f0-TxRx-0 (queue 0, shard 0; already set)"),
        "{text}"
    );
    assert!(
        text.contains("enp3s0f0-TxRx-1 (queue 1, shard 1; now 0-7)"),
        "{text}"
    );
    assert!(
        text.contains("rx-2/rps_cpus   # rx-2 -> off; now 1-7"),
        "{text}"
    );
    assert!(
        text.contains("rx-3/rps_cpus   # rx-3 -> off; already set"),
        "{text}"
    );
    assert!(text.contains("echo 4 > /sys/class/net/enp3s0f0/queues/tx-1/xps_cpus"));
    assert!(
        text.contains("64 KiB (7 shard(s) need 3584 KiB, 11776 KiB recommended): TOO LOW"),
        "{text}"
    );
    assert!(text.contains("ulimit -l 11776"), "{text}");
}

#[test]
fn small_machines_reserve_what_they_can() {
    let cpu = |id: usize, core_id: usize, siblings: Vec<usize>| Cpu {
        id,
        package: 0,
        core_id,
        siblings,
        node: None,
    };
    let machine = |cpus: Vec<Cpu>| {
        let cores = read::group_cores(&cpus);
        Detected {
            cpus,
            excluded_cpus: Vec::new(),
            cores,
            nodes: Vec::new(),
            nics: Vec::new(),
            memlock: Memlock::Unlimited,
            io_uring_disabled: None,
            io_uring: IoUring::Available,
        }
    };
    // One core, no SMT: the shard and the control plane share it.
    let p = plan(&machine(vec![cpu(0, 0, vec![0])]));
    assert_eq!((p.shard_cpus.clone(), p.control_plane_cpu), (vec![0], 0));
    // One core with SMT: the control plane takes the sibling.
    let p = plan(&machine(vec![cpu(0, 0, vec![0, 1]), cpu(1, 0, vec![0, 1])]));
    assert_eq!((p.shard_cpus.clone(), p.control_plane_cpu), (vec![0], 1));
    // Sixteen cores without SMT: two are kept back.
    let p = plan(&machine((0..16).map(|i| cpu(i, i, vec![i])).collect()));
    assert_eq!(p.shard_cpus, (2..16).collect::<Vec<_>>());
    assert_eq!((p.control_plane_cpu, p.irq_cpu), (0, 1));
    assert!(p.nic.is_none());
    let text = render(
        &machine(vec![cpu(0, 0, vec![0])]),
        &plan(&machine(vec![cpu(0, 0, vec![0])])),
        "x",
    );
    assert!(text.contains("[shards]\ncount = 1\ncores = [0]"), "{text}");
}

#[test]
fn errors_name_the_file() {
    let root = temp_root("missing");
    let e = detect(&root, IoUring::NotProbed).unwrap_err();
    assert!(
        e.to_string().contains("sys/devices/system/cpu/online"),
        "{e}"
    );

    let root = temp_root("bad");
    std::fs::write(root.join("sys/devices/system/cpu/online"), "0\n").unwrap();
    std::fs::write(
        root.join("sys/devices/system/cpu/cpu0/topology/core_id"),
        "zero\n",
    )
    .unwrap();
    let e = detect(&root, IoUring::NotProbed).unwrap_err();
    assert!(e.to_string().contains("cpu0/topology/core_id"), "{e}");
    assert!(e.to_string().contains("\"zero\""), "{e}");

    // A bare tree with one online CPU and nothing else is still a machine.
    std::fs::remove_file(root.join("sys/devices/system/cpu/cpu0/topology/core_id")).unwrap();
    let d = detect(&root, IoUring::NotProbed).unwrap();
    assert_eq!(d.cpus.len(), 1);
    assert!(d.nics.is_empty());
    assert_eq!(d.memlock, Memlock::Unknown);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn the_process_affinity_bounds_the_profile() {
    let root = temp_root("affinity");
    std::fs::write(root.join("sys/devices/system/cpu/online"), "0-3\n").unwrap();
    std::fs::create_dir_all(root.join("proc/self")).unwrap();
    std::fs::write(
        root.join("proc/self/status"),
        "Name:\tshardgate\nCpus_allowed:\t7\nCpus_allowed_list:\t0-2\n",
    )
    .unwrap();
    let d = detect(&root, IoUring::NotProbed).unwrap();
    assert_eq!(d.excluded_cpus, vec![3]);
    let p = plan(&d);
    assert_eq!((p.shard_cpus.clone(), p.control_plane_cpu), (vec![1, 2], 0));
    let text = render(&d, &p, "affinity");
    assert!(text.contains("affinity, left out: 3"), "{text}");
    assert_profile_parses(&d, &p, &text);

    std::fs::write(root.join("proc/self/status"), "Cpus_allowed_list:\t9\n").unwrap();
    let e = detect(&root, IoUring::NotProbed).unwrap_err();
    assert!(e.to_string().contains("proc/self/status"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}
