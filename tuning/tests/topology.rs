mod common;

use common::fixture;
use velox_tuning::{TileKind, Topology};

#[test]
fn detects_the_captured_vm() {
    let t = Topology::detect(&fixture("vm-2core"));
    assert_eq!(t.cpu_ids(), vec![0, 1]);
    assert!(!t.smt());
    assert_eq!(t.physical_cores(), vec![vec![0], vec![1]]);
    assert_eq!(t.numa_nodes.len(), 1);
    assert_eq!(t.numa_nodes[0].cpus, vec![0, 1]);
    assert_eq!(t.caches.len(), 4);
    let l3 = t.caches.iter().find(|c| c.level == 3).unwrap();
    assert_eq!(l3.kind, "Unified");
    assert_eq!(l3.size_bytes, 32 << 20);
    assert_eq!(l3.shared_cpus, vec![0, 1]);
    assert!(t.isolated.is_empty() && t.nohz_full.is_empty());
    // eth0 is virtio2; lo and the ifb devices are virtual and skipped.
    assert_eq!(t.nics.len(), 1);
    let eth0 = &t.nics[0];
    assert_eq!(
        (eth0.name.as_str(), eth0.device.as_str()),
        ("eth0", "virtio2")
    );
    assert_eq!((eth0.rx_queues, eth0.tx_queues), (1, 1));
    // virtio2-config (IRQ 37) is not a queue.
    let irqs: Vec<u32> = eth0.irqs.iter().map(|i| i.irq).collect();
    assert_eq!(irqs, vec![38, 39]);
    assert_eq!(eth0.irqs[0].cpus, vec![0, 1]);
    // IRQs allowed everywhere say nothing about placement.
    assert!(t.nic_irq_cpus().is_empty());
}

#[test]
fn detects_the_two_socket_server() {
    let t = Topology::detect(&fixture("server-2s64c"));
    assert_eq!(t.cpus.len(), 128);
    assert!(t.smt());
    assert_eq!(t.physical_cores().len(), 64);
    assert_eq!(t.cpu(5).unwrap().siblings, vec![5, 69]);
    assert_eq!(t.cpu(100).unwrap().siblings, vec![36, 100]);
    assert_eq!(t.cpu(100).unwrap().package, 1);
    assert_eq!(t.cpu(100).unwrap().node, 1);
    assert!(t.are_siblings(5, 69) && !t.are_siblings(5, 6));
    assert_eq!(t.numa_nodes.len(), 2);
    assert_eq!(t.numa_nodes[1].cpus.len(), 64);
    let l3 = t.caches.iter().find(|c| c.level == 3).unwrap();
    assert_eq!(l3.size_bytes, 60 << 20);
    let iso: Vec<usize> = (2..32).chain(66..96).collect();
    assert_eq!(t.isolated, iso);
    assert_eq!(t.nohz_full, iso);
    assert_eq!(t.nics.len(), 1);
    let nic = &t.nics[0];
    assert_eq!(nic.name, "ens1f0np0");
    assert_eq!(nic.device, "0000:3b:00.0");
    assert_eq!(nic.numa_node, Some(0));
    assert_eq!(nic.rx_queues, 8);
    // 8 completion queues; mlx5_async0 and the NVMe line are excluded.
    assert_eq!(nic.irqs.len(), 8);
    assert_eq!(nic.irqs[3].irq, 101);
    assert_eq!(nic.irqs[3].label, "mlx5_comp3@pci:0000:3b:00.0");
    assert_eq!(nic.irqs[3].cpus, vec![3]);
    assert_eq!(t.nic_irq_cpus(), (0..8).collect::<Vec<_>>());
    assert!(t
        .summary()
        .contains("128 CPUs, 64 physical cores, 2 NUMA nodes, SMT on"));
}

#[test]
fn missing_files_degrade_to_one_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let t = Topology::detect(&velox_tuning::DirFs::new(dir.path()));
    assert_eq!(t.cpu_ids(), vec![0]);
    assert_eq!(t.numa_nodes.len(), 1);
    assert!(t.nics.is_empty() && t.caches.is_empty());
    assert!(TileKind::Verify.is_hot() && !TileKind::Storage.is_hot());
}
