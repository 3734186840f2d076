//! Topology detection: online CPUs, SMT siblings, NUMA nodes, caches, NIC
//! queues and the CPUs their interrupts land on, isolated CPUs.
//!
//! Everything is read through [`HostFs`]; a missing file degrades to the
//! simplest answer (no SMT, one NUMA node, no NIC) instead of failing.

use std::collections::BTreeSet;

use crate::fs::HostFs;
use crate::parse;

/// One logical CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpu {
    /// Kernel CPU number.
    pub id: usize,
    /// Physical package (socket).
    pub package: usize,
    /// NUMA node.
    pub node: usize,
    /// All logical CPUs of this physical core, this one included, sorted.
    pub siblings: Vec<usize>,
}

/// A NUMA node and its online CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumaNode {
    /// Node number.
    pub id: usize,
    /// Online CPUs of the node, sorted.
    pub cpus: Vec<usize>,
}

/// One CPU cache as seen from CPU 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cache {
    /// 1, 2, 3.
    pub level: u8,
    /// `Data`, `Instruction` or `Unified`.
    pub kind: String,
    /// Capacity in bytes.
    pub size_bytes: u64,
    /// CPUs sharing this cache with CPU 0.
    pub shared_cpus: Vec<usize>,
}

/// One interrupt line of a NIC queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicIrq {
    /// IRQ number (`/proc/irq/N`).
    pub irq: u32,
    /// Action name from `/proc/interrupts` (`mlx5_comp3@pci:0000:3b:00.0`).
    pub label: String,
    /// CPUs allowed to service it (`smp_affinity_list`).
    pub cpus: Vec<usize>,
}

/// A network interface backed by a device (virtual ones like `lo` are skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    /// Interface name (`eth0`).
    pub name: String,
    /// Device name the interface's `device` link points at (`0000:3b:00.0`, `virtio2`).
    pub device: String,
    /// NUMA node of the device, where the kernel reports one.
    pub numa_node: Option<usize>,
    /// Receive queues (`queues/rx-*`).
    pub rx_queues: usize,
    /// Transmit queues (`queues/tx-*`).
    pub tx_queues: usize,
    /// Queue interrupts (config/async lines excluded).
    pub irqs: Vec<NicIrq>,
}

/// The machine as the planner and the checks see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Online logical CPUs, sorted by id. Invariant: non-empty.
    pub cpus: Vec<Cpu>,
    /// NUMA nodes with at least one online CPU.
    pub numa_nodes: Vec<NumaNode>,
    /// Caches of CPU 0.
    pub caches: Vec<Cache>,
    /// Device-backed network interfaces.
    pub nics: Vec<Nic>,
    /// CPUs isolated from the scheduler (sysfs `isolated` ∪ `isolcpus=`).
    pub isolated: Vec<usize>,
    /// CPUs running tickless (`nohz_full=`).
    pub nohz_full: Vec<usize>,
}

const CPU_DIR: &str = "sys/devices/system/cpu";

fn read_cpulist(fs: &dyn HostFs, path: &str) -> Option<Vec<usize>> {
    fs.read(path).ok().and_then(|t| parse::cpulist(&t))
}

fn read_num(fs: &dyn HostFs, path: &str) -> Option<usize> {
    fs.read(path).ok()?.trim().parse().ok()
}

fn numbered(names: Vec<String>, prefix: &str) -> Vec<usize> {
    let mut v: Vec<usize> = names
        .iter()
        .filter_map(|n| n.strip_prefix(prefix)?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

impl Topology {
    /// Read the topology of the host behind `fs`.
    pub fn detect(fs: &dyn HostFs) -> Topology {
        let online = read_cpulist(fs, &format!("{CPU_DIR}/online"))
            .filter(|v| !v.is_empty())
            .or_else(|| {
                let v = numbered(fs.list(CPU_DIR).unwrap_or_default(), "cpu");
                (!v.is_empty()).then_some(v)
            })
            .unwrap_or_else(|| vec![0]);

        let mut numa_nodes = Vec::new();
        for id in numbered(
            fs.list("sys/devices/system/node").unwrap_or_default(),
            "node",
        ) {
            let path = format!("sys/devices/system/node/node{id}/cpulist");
            let cpus: Vec<usize> = read_cpulist(fs, &path)
                .unwrap_or_default()
                .into_iter()
                .filter(|c| online.contains(c))
                .collect();
            if !cpus.is_empty() {
                numa_nodes.push(NumaNode { id, cpus });
            }
        }
        if numa_nodes.is_empty() {
            numa_nodes.push(NumaNode {
                id: 0,
                cpus: online.clone(),
            });
        }

        let cpus = online
            .iter()
            .map(|&id| {
                let topo = format!("{CPU_DIR}/cpu{id}/topology");
                let mut siblings: Vec<usize> =
                    read_cpulist(fs, &format!("{topo}/thread_siblings_list"))
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|c| online.contains(c))
                        .collect();
                if !siblings.contains(&id) {
                    siblings = vec![id];
                }
                Cpu {
                    id,
                    package: read_num(fs, &format!("{topo}/physical_package_id")).unwrap_or(0),
                    node: numa_nodes
                        .iter()
                        .find(|n| n.cpus.contains(&id))
                        .map_or(0, |n| n.id),
                    siblings,
                }
            })
            .collect();

        let mut caches = Vec::new();
        let cache_dir = format!("{CPU_DIR}/cpu{}/cache", online[0]);
        for idx in numbered(fs.list(&cache_dir).unwrap_or_default(), "index") {
            let d = format!("{cache_dir}/index{idx}");
            let level = read_num(fs, &format!("{d}/level"));
            let size = fs
                .read(&format!("{d}/size"))
                .ok()
                .and_then(|s| parse::size_bytes(&s));
            if let (Some(level), Some(size_bytes)) = (level, size) {
                caches.push(Cache {
                    level: level as u8,
                    kind: fs
                        .read(&format!("{d}/type"))
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default(),
                    size_bytes,
                    shared_cpus: read_cpulist(fs, &format!("{d}/shared_cpu_list"))
                        .unwrap_or_default(),
                });
            }
        }

        let cmdline = fs.read("proc/cmdline").unwrap_or_default();
        let mut isolated: BTreeSet<usize> = read_cpulist(fs, &format!("{CPU_DIR}/isolated"))
            .unwrap_or_default()
            .into_iter()
            .collect();
        isolated.extend(parse::cmdline_cpus(&cmdline, "isolcpus"));
        let mut nohz: BTreeSet<usize> = parse::cmdline_cpus(&cmdline, "nohz_full")
            .into_iter()
            .collect();
        nohz.extend(read_cpulist(fs, &format!("{CPU_DIR}/nohz_full")).unwrap_or_default());

        Topology {
            cpus,
            numa_nodes,
            caches,
            nics: detect_nics(fs),
            isolated: isolated.into_iter().collect(),
            nohz_full: nohz.into_iter().collect(),
        }
    }

    /// A synthetic machine: `sockets` × `cores_per_socket` × `threads`,
    /// numbered the way Linux numbers Intel servers (all first threads,
    /// socket by socket, then all second threads). One NUMA node per
    /// socket, no NIC, nothing isolated.
    pub fn synthetic(sockets: usize, cores_per_socket: usize, threads: usize) -> Topology {
        assert!(sockets > 0 && cores_per_socket > 0 && threads > 0);
        let physical = sockets * cores_per_socket;
        let cpus: Vec<Cpu> = (0..physical * threads)
            .map(|id| {
                let core = id % physical;
                Cpu {
                    id,
                    package: core / cores_per_socket,
                    node: core / cores_per_socket,
                    siblings: (0..threads).map(|t| core + t * physical).collect(),
                }
            })
            .collect();
        let numa_nodes = (0..sockets)
            .map(|s| NumaNode {
                id: s,
                cpus: cpus.iter().filter(|c| c.node == s).map(|c| c.id).collect(),
            })
            .collect();
        Topology {
            cpus,
            numa_nodes,
            caches: Vec::new(),
            nics: Vec::new(),
            isolated: Vec::new(),
            nohz_full: Vec::new(),
        }
    }

    /// Whether CPU `id` is online.
    pub fn has_cpu(&self, id: usize) -> bool {
        self.cpu(id).is_some()
    }

    /// The CPU `id`, if online.
    pub fn cpu(&self, id: usize) -> Option<&Cpu> {
        self.cpus.iter().find(|c| c.id == id)
    }

    /// Online CPU ids, sorted.
    pub fn cpu_ids(&self) -> Vec<usize> {
        self.cpus.iter().map(|c| c.id).collect()
    }

    /// Whether any physical core has more than one online thread.
    pub fn smt(&self) -> bool {
        self.cpus.iter().any(|c| c.siblings.len() > 1)
    }

    /// Physical cores, each as its sorted thread list, sorted by first thread.
    pub fn physical_cores(&self) -> Vec<Vec<usize>> {
        let set: BTreeSet<Vec<usize>> = self.cpus.iter().map(|c| c.siblings.clone()).collect();
        let mut v: Vec<Vec<usize>> = set.into_iter().collect();
        v.sort_by_key(|t| t[0]);
        v
    }

    /// Whether `a` and `b` are distinct threads of one physical core.
    pub fn are_siblings(&self, a: usize, b: usize) -> bool {
        a != b && self.cpu(a).is_some_and(|c| c.siblings.contains(&b))
    }

    /// CPUs allowed to service some NIC queue interrupt. Empty when the
    /// interrupts are not pinned (each may run anywhere): then they tell
    /// nothing about where the NIC's work lands.
    pub fn nic_irq_cpus(&self) -> Vec<usize> {
        let all = self.cpu_ids();
        let mut set = BTreeSet::new();
        for irq in self.nics.iter().flat_map(|n| &n.irqs) {
            if irq.cpus != all {
                set.extend(irq.cpus.iter().copied());
            }
        }
        set.into_iter().collect()
    }

    /// One-line description (`2 CPUs, 2 cores, 1 NUMA node, no SMT`).
    pub fn summary(&self) -> String {
        let cores = self.physical_cores().len();
        let mut s = format!(
            "{} CPUs, {} physical cores, {} NUMA node{}, {}",
            self.cpus.len(),
            cores,
            self.numa_nodes.len(),
            if self.numa_nodes.len() == 1 { "" } else { "s" },
            if self.smt() { "SMT on" } else { "no SMT" }
        );
        if !self.isolated.is_empty() {
            s.push_str(&format!(
                ", isolated {}",
                parse::format_cpulist(&self.isolated)
            ));
        }
        for nic in &self.nics {
            s.push_str(&format!(
                ", {} ({} rx queue{}, {} IRQs)",
                nic.name,
                nic.rx_queues,
                if nic.rx_queues == 1 { "" } else { "s" },
                nic.irqs.len()
            ));
        }
        s
    }
}

/// Whether `word` occurs in `line` with no alphanumeric neighbour
/// (`virtio2` matches `virtio2-input.0`, not `virtio20-input.0`).
fn contains_token(line: &str, word: &str) -> bool {
    let bytes = line.as_bytes();
    let mut start = 0;
    while let Some(pos) = line[start..].find(word) {
        let a = start + pos;
        let b = a + word.len();
        let before_ok = a == 0 || !bytes[a - 1].is_ascii_alphanumeric();
        let after_ok = b == bytes.len() || !bytes[b].is_ascii_alphanumeric();
        if before_ok && after_ok {
            return true;
        }
        start = a + 1;
    }
    false
}

/// Interrupt lines that are not data queues.
fn is_control_irq(label: &str) -> bool {
    ["config", "async", "ctrl", "-mgmt"]
        .iter()
        .any(|w| label.contains(w))
}

fn detect_nics(fs: &dyn HostFs) -> Vec<Nic> {
    let interrupts = fs.read("proc/interrupts").unwrap_or_default();
    let mut nics = Vec::new();
    for name in fs.list("sys/class/net").unwrap_or_default() {
        let base = format!("sys/class/net/{name}");
        let Ok(link) = fs.read_link(&format!("{base}/device")) else {
            continue; // virtual interface (lo, bridges, ifb)
        };
        let device = link
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        let queues = fs.list(&format!("{base}/queues")).unwrap_or_default();
        let count = |p: &str| queues.iter().filter(|q| q.starts_with(p)).count();
        let mut irqs = Vec::new();
        for line in interrupts.lines() {
            let Some((num, rest)) = line.split_once(':') else {
                continue;
            };
            let Ok(irq) = num.trim().parse::<u32>() else {
                continue; // NMI, LOC, … and the header
            };
            // The action name is the last field; the chip field before it
            // may carry the PCI address too, so match the whole line.
            let label = rest.split_whitespace().last().unwrap_or("").to_string();
            let hit = contains_token(rest, &name)
                || (!device.is_empty() && contains_token(rest, &device));
            if hit && !is_control_irq(&label) {
                irqs.push(NicIrq {
                    irq,
                    label,
                    cpus: read_cpulist(fs, &format!("proc/irq/{irq}/smp_affinity_list"))
                        .unwrap_or_default(),
                });
            }
        }
        nics.push(Nic {
            numa_node: fs
                .read(&format!("{base}/device/numa_node"))
                .ok()
                .and_then(|t| t.trim().parse::<i64>().ok())
                .and_then(|n| usize::try_from(n).ok()),
            name,
            device,
            rx_queues: count("rx-"),
            tx_queues: count("tx-"),
            irqs,
        });
    }
    nics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(contains_token("1-edge virtio2-input.0", "virtio2"));
        assert!(!contains_token("1-edge virtio20-input.0", "virtio2"));
        assert!(contains_token(
            "mlx5_comp0@pci:0000:3b:00.0",
            "0000:3b:00.0"
        ));
    }

    #[test]
    fn synthetic_smt_numbering() {
        let t = Topology::synthetic(2, 4, 2);
        assert_eq!(t.cpus.len(), 16);
        assert_eq!(t.cpu(1).unwrap().siblings, vec![1, 9]);
        assert_eq!(t.cpu(12).unwrap().node, 1);
        assert_eq!(t.numa_nodes[0].cpus, vec![0, 1, 2, 3, 8, 9, 10, 11]);
        assert!(t.are_siblings(3, 11));
        assert_eq!(t.physical_cores().len(), 8);
    }
}
