//! The `[layout]` section: its type, a check against the machine
//! ([`validate_layout`]) and a planner ([`plan`]) that proposes one.
//!
//! The planner works in two steps.
//!
//! 1. Tile counts. Each tile kind has a CPU budget per transaction
//!    ([`TileKind::cost_ns_per_tx`]). With `N` cores to fill, it starts
//!    with every kind on one shared core and hands each further core to the
//!    current bottleneck: the shared core gives up its heaviest tile, or a
//!    splittable kind (net, verify, exec) gets one more tile. Verification
//!    dominates (ed25519 ~21.7 µs per signature per core in batches), so on
//!    2 cores verify gets a core of its own and everything else shares the
//!    other; net and exec split off as the verify share per core shrinks.
//! 2. Core choice. Physical cores are ranked: isolated first, the
//!    housekeeping core (CPU 0's) last, within one NUMA node when `N` fits
//!    (the NIC's node first). Tiles holding net take cores that service NIC
//!    interrupts first; verify and exec take the others first. With SMT,
//!    hot tiles own whole physical cores and the light tiles (mempool,
//!    consensus, storage) run on the spare sibling threads.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::parse;
use crate::topology::Topology;

/// Upper bound on tiles of one kind: one per core of the largest machines
/// planned for, so that a typo like `verify = [0,0,...]` is caught.
pub const TILES_PER_KIND_MAX: usize = 256;

/// A kind of tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TileKind {
    /// QUIC endpoint, decode, ingress limits.
    Net,
    /// Signature verification.
    Verify,
    /// Transaction pool and batching.
    Mempool,
    /// DAG consensus core.
    Consensus,
    /// Transaction execution.
    Exec,
    /// Durable storage.
    Storage,
}

impl TileKind {
    /// Every kind, in `[layout]` order.
    pub const ALL: [TileKind; 6] = [
        TileKind::Net,
        TileKind::Verify,
        TileKind::Mempool,
        TileKind::Consensus,
        TileKind::Exec,
        TileKind::Storage,
    ];

    /// The `[layout]` key.
    pub fn name(self) -> &'static str {
        match self {
            TileKind::Net => "net",
            TileKind::Verify => "verify",
            TileKind::Mempool => "mempool",
            TileKind::Consensus => "consensus",
            TileKind::Exec => "exec",
            TileKind::Storage => "storage",
        }
    }

    /// Most tiles of this kind the node runs. Mempool, consensus and storage
    /// own single-writer state (the pool, the DAG, the database's commit
    /// order), so they run exactly one tile.
    pub fn tiles_max(self) -> usize {
        match self {
            TileKind::Mempool | TileKind::Consensus | TileKind::Storage => 1,
            TileKind::Net | TileKind::Verify | TileKind::Exec => TILES_PER_KIND_MAX,
        }
    }

    /// Hot tiles spin on a core and must not share a physical core with
    /// another hot tile.
    pub fn is_hot(self) -> bool {
        matches!(self, TileKind::Net | TileKind::Verify | TileKind::Exec)
    }

    /// Whether the node runs several tiles of this kind in parallel.
    pub fn splittable(self) -> bool {
        self.is_hot()
    }

    /// CPU time per signed transaction on one core, in nanoseconds: the
    /// planner's cost model. Verify is measured (batch-64 ed25519 at 46k/s
    /// per core, BRIEF.md); the others are the budgets BRIEF.md sets
    /// ("a small fraction of the verify budget") and should be replaced by
    /// `velox bench` figures as they exist.
    pub fn cost_ns_per_tx(self) -> u64 {
        match self {
            TileKind::Verify => 21_700,
            TileKind::Net => 4_000,
            TileKind::Exec => 4_000,
            TileKind::Mempool => 1_000,
            TileKind::Storage => 1_000,
            TileKind::Consensus => 500,
        }
    }
}

impl fmt::Display for TileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Exec tiles beyond this add conflicts faster than throughput (Block-STM
/// scaling flattens past ~16 threads in published measurements).
pub const EXEC_TILES_MAX: usize = 16;

/// Net tiles the node runs: one QUIC endpoint per address on one reactor
/// (several, one per NIC receive queue with SO_REUSEPORT, are not built).
/// The planner gives net no more cores than this, so cores it would have
/// left idle go to verify and exec; the node refuses a layout that lists
/// more.
pub const NET_TILES_MAX: usize = 1;

/// The `[layout]` section: for each kind, one tile per listed core.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Net tiles' cores.
    #[serde(default)]
    pub net: Vec<usize>,
    /// Verify tiles' cores.
    #[serde(default)]
    pub verify: Vec<usize>,
    /// Mempool tiles' cores.
    #[serde(default)]
    pub mempool: Vec<usize>,
    /// Consensus tiles' cores.
    #[serde(default)]
    pub consensus: Vec<usize>,
    /// Exec tiles' cores.
    #[serde(default)]
    pub exec: Vec<usize>,
    /// Storage tiles' cores.
    #[serde(default)]
    pub storage: Vec<usize>,
}

#[derive(Deserialize)]
struct LayoutDoc {
    layout: Layout,
}

impl Layout {
    /// The cores of `kind`.
    pub fn cores(&self, kind: TileKind) -> &[usize] {
        match kind {
            TileKind::Net => &self.net,
            TileKind::Verify => &self.verify,
            TileKind::Mempool => &self.mempool,
            TileKind::Consensus => &self.consensus,
            TileKind::Exec => &self.exec,
            TileKind::Storage => &self.storage,
        }
    }

    fn cores_mut(&mut self, kind: TileKind) -> &mut Vec<usize> {
        match kind {
            TileKind::Net => &mut self.net,
            TileKind::Verify => &mut self.verify,
            TileKind::Mempool => &mut self.mempool,
            TileKind::Consensus => &mut self.consensus,
            TileKind::Exec => &mut self.exec,
            TileKind::Storage => &mut self.storage,
        }
    }

    /// Every core the layout names, sorted, once each.
    pub fn all_cores(&self) -> Vec<usize> {
        let set: BTreeSet<usize> = TileKind::ALL
            .iter()
            .flat_map(|&k| self.cores(k).iter().copied())
            .collect();
        set.into_iter().collect()
    }

    /// Parse the `[layout]` table of a config document.
    pub fn from_toml(text: &str) -> Result<Layout, LayoutError> {
        toml::from_str::<LayoutDoc>(text)
            .map(|d| d.layout)
            .map_err(|e| LayoutError::Parse(e.message().to_string()))
    }

    /// The `[layout]` section as TOML.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "[layout]\n# One tile per listed core; a core may appear under several kinds \
             (those tiles share it).\n",
        );
        for k in TileKind::ALL {
            let list: Vec<String> = self.cores(k).iter().map(|c| c.to_string()).collect();
            out.push_str(&format!("{} = [{}]\n", k.name(), list.join(", ")));
        }
        out
    }
}

/// Why a layout does not fit the machine. Each message names the fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A listed core is not an online CPU.
    #[error(
        "layout.{kind} names core {core}, which this machine does not have \
         (online CPUs: {online}); use cores from that list, or run \
         `velox tune plan --cores N` and paste its [layout]"
    )]
    AbsentCore {
        /// The kind whose list names it.
        kind: TileKind,
        /// The absent core.
        core: usize,
        /// The machine's online CPUs as a CPU list.
        online: String,
    },
    /// A kind lists more cores than it can have tiles.
    #[error(
        "layout.{kind} lists {count} cores; it runs at most {max} tile(s), so list at most {max}"
    )]
    TooMany {
        /// The kind.
        kind: TileKind,
        /// Cores listed.
        count: usize,
        /// Tiles allowed.
        max: usize,
    },
    /// A kind lists no core.
    #[error("layout.{kind} lists no core; every tile kind needs one (for example `{kind} = [0]`)")]
    EmptyKind {
        /// The empty kind.
        kind: TileKind,
    },
    /// A kind lists a core twice.
    #[error(
        "layout.{kind} lists core {core} twice; one tile per listed core, so \
         list each core once per kind"
    )]
    DuplicateCore {
        /// The kind.
        kind: TileKind,
        /// The repeated core.
        core: usize,
    },
    /// The TOML did not parse.
    #[error("[layout] does not parse: {0}")]
    Parse(String),
}

/// Check a layout against the machine: every kind has a core, no kind
/// lists a core twice, every core is online. The node refuses to start on
/// an error; its message says what to change.
pub fn validate_layout(layout: &Layout, topo: &Topology) -> Result<(), LayoutError> {
    for kind in TileKind::ALL {
        let cores = layout.cores(kind);
        if cores.is_empty() {
            return Err(LayoutError::EmptyKind { kind });
        }
        if cores.len() > kind.tiles_max() {
            return Err(LayoutError::TooMany {
                kind,
                count: cores.len(),
                max: kind.tiles_max(),
            });
        }
        let mut seen = BTreeSet::new();
        for &core in cores {
            if !topo.has_cpu(core) {
                return Err(LayoutError::AbsentCore {
                    kind,
                    core,
                    online: parse::format_cpulist(&topo.cpu_ids()),
                });
            }
            if !seen.insert(core) {
                return Err(LayoutError::DuplicateCore { kind, core });
            }
        }
    }
    Ok(())
}

/// Why no plan could be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `--cores 0`.
    #[error("--cores must be at least 1")]
    ZeroCores,
    /// More cores asked for than the machine has.
    #[error(
        "--cores {asked} but this machine has {available} physical cores \
         ({cpus} online CPUs); ask for at most {available}"
    )]
    TooManyCores {
        /// Cores asked for.
        asked: usize,
        /// Physical cores online.
        available: usize,
        /// Online logical CPUs.
        cpus: usize,
    },
}

/// A proposed layout and the reasons for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Physical cores asked for.
    pub cores: usize,
    /// The proposed `[layout]`.
    pub layout: Layout,
    /// SMT sibling threads of the chosen cores left without a tile, so the
    /// hot tile on that core has it to itself. Keep other work off them.
    pub idle_cpus: Vec<usize>,
    /// One line per decision.
    pub explanation: Vec<String>,
    /// Estimated signed-transaction ceiling of the layout (cost model).
    pub estimated_tps: u64,
}

impl Plan {
    /// The `[layout]` section to paste into the node's config.
    pub fn to_toml(&self) -> String {
        self.layout.to_toml()
    }
}

/// Tile counts from the cost model: `count[k] == 0` means kind `k` lives on
/// the shared core.
#[derive(Clone, Debug)]
struct Counts {
    shared: Vec<TileKind>,
    count: [usize; 6],
}

fn idx(k: TileKind) -> usize {
    TileKind::ALL
        .iter()
        .position(|&x| x == k)
        .expect("kind in ALL")
}

/// Greedy bottleneck relief over `units` cores for `kinds`.
fn tile_counts(kinds: &[TileKind], units: usize, net_max: usize) -> Counts {
    assert!(units >= 1 && !kinds.is_empty());
    let cap = |k: TileKind| match k {
        TileKind::Net => net_max,
        TileKind::Exec => EXEC_TILES_MAX,
        TileKind::Verify => usize::MAX,
        _ => 1,
    };
    // Ties go to the first in this order: the hog first.
    const ORDER: [TileKind; 6] = [
        TileKind::Verify,
        TileKind::Net,
        TileKind::Exec,
        TileKind::Mempool,
        TileKind::Storage,
        TileKind::Consensus,
    ];
    let mut c = Counts {
        shared: ORDER
            .iter()
            .copied()
            .filter(|k| kinds.contains(k))
            .collect(),
        count: [0; 6],
    };
    for _ in 1..units {
        // Candidates: (load, action). Shared core first on ties.
        let shared_load: u64 = c.shared.iter().map(|k| k.cost_ns_per_tx()).sum();
        let mut best: Option<(u64, Option<TileKind>)> = None;
        let shared_actionable = c.shared.len() >= 2
            || (c.shared.len() == 1 && c.shared[0].splittable() && cap(c.shared[0]) >= 2);
        if shared_actionable {
            best = Some((shared_load, None));
        }
        for k in ORDER {
            let n = c.count[idx(k)];
            if n == 0 || !k.splittable() || n >= cap(k) {
                continue;
            }
            let load = k.cost_ns_per_tx() / n as u64;
            if best.is_none_or(|(b, _)| load > b) {
                best = Some((load, Some(k)));
            }
        }
        match best {
            Some((_, Some(k))) => c.count[idx(k)] += 1,
            Some((_, None)) if c.shared.len() >= 2 => {
                // Heaviest leaves; ORDER is by cost, ties keep ORDER.
                let k = c.shared.remove(0);
                c.count[idx(k)] = 1;
            }
            Some((_, None)) => {
                let k = c.shared.remove(0);
                c.count[idx(k)] = 2;
            }
            // Everything capped: spare cores go to verify.
            None => {
                if c.count[idx(TileKind::Verify)] == 0 {
                    c.shared.retain(|&k| k != TileKind::Verify);
                    c.count[idx(TileKind::Verify)] = 2;
                } else {
                    c.count[idx(TileKind::Verify)] += 1;
                }
            }
        }
    }
    c
}

impl Counts {
    /// Bottleneck load in ns per transaction, and what it is.
    fn bottleneck(&self) -> (u64, String) {
        let mut best = (0, String::new());
        let shared: u64 = self.shared.iter().map(|k| k.cost_ns_per_tx()).sum();
        if !self.shared.is_empty() {
            best = (shared, "the shared core".to_string());
        }
        for k in TileKind::ALL {
            let n = self.count[idx(k)];
            if n > 0 {
                let load = k.cost_ns_per_tx() / n as u64;
                if load > best.0 {
                    best = (
                        load,
                        format!("{k} ({n} tile{})", if n == 1 { "" } else { "s" }),
                    );
                }
            }
        }
        best
    }
}

fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

fn kinds_text(kinds: &[TileKind]) -> String {
    let mut v: Vec<&str> = TileKind::ALL
        .iter()
        .filter(|k| kinds.contains(k))
        .map(|k| k.name())
        .collect();
    v.dedup();
    v.join("+")
}

/// Propose a `[layout]` for `cores` physical cores of `topo`.
///
/// `cores` counts physical cores: with SMT each chosen core's sibling
/// thread hosts a light tile or stays idle ([`Plan::idle_cpus`]).
pub fn plan(topo: &Topology, cores: usize) -> Result<Plan, PlanError> {
    let phys = topo.physical_cores();
    if cores == 0 {
        return Err(PlanError::ZeroCores);
    }
    if cores > phys.len() {
        return Err(PlanError::TooManyCores {
            asked: cores,
            available: phys.len(),
            cpus: topo.cpus.len(),
        });
    }
    let smt = topo.smt();
    let mut why = vec![format!("machine: {}", topo.summary())];

    // --- 1. tile counts
    let cold = [TileKind::Mempool, TileKind::Consensus, TileKind::Storage];
    let greedy_kinds: Vec<TileKind> = if smt {
        TileKind::ALL
            .iter()
            .copied()
            .filter(|k| k.is_hot())
            .collect()
    } else {
        TileKind::ALL.to_vec()
    };
    let rx_queues = topo.nics.iter().map(|n| n.rx_queues).max().unwrap_or(0);
    let net_max = if rx_queues > 0 {
        rx_queues.min(NET_TILES_MAX)
    } else {
        NET_TILES_MAX
    };
    let counts = tile_counts(&greedy_kinds, cores, net_max);
    why.push(format!(
        "tile counts: every core beyond the first goes to the current bottleneck under a \
         per-transaction CPU budget (verify {}, net {}, exec {}, mempool {}, storage {}, \
         consensus {})",
        us(21_700),
        us(4_000),
        us(4_000),
        us(1_000),
        us(1_000),
        us(500)
    ));
    why.push(format!(
        "net tiles capped at {net_max}: the node runs one QUIC endpoint per address \
         (one net tile per NIC receive queue, with SO_REUSEPORT, is not built){}",
        if rx_queues > 1 {
            format!("; this NIC has {rx_queues} receive queues")
        } else {
            String::new()
        }
    ));

    // Groups: the kinds sharing each core.
    let mut groups: Vec<Vec<TileKind>> = Vec::new();
    if !counts.shared.is_empty() {
        groups.push(counts.shared.clone());
    }
    for k in TileKind::ALL {
        for _ in 0..counts.count[idx(k)] {
            groups.push(vec![k]);
        }
    }
    assert_eq!(groups.len(), cores, "one group per core");

    // --- 2. which physical cores
    let nic_node = topo.nics.iter().find_map(|n| n.numa_node);
    let node_of = |threads: &Vec<usize>| topo.cpu(threads[0]).map_or(0, |c| c.node);
    let mut node_order: Vec<usize> = topo.numa_nodes.iter().map(|n| n.id).collect();
    if let Some(n) = nic_node {
        if let Some(p) = node_order.iter().position(|&x| x == n) {
            node_order.remove(p);
            node_order.insert(0, n);
        }
    }
    let fitting = node_order
        .iter()
        .copied()
        .find(|&n| phys.iter().filter(|t| node_of(t) == n).count() >= cores);
    let housekeeping = topo.cpus[0].siblings.clone();
    let isolated = |t: &Vec<usize>| t.iter().all(|c| topo.isolated.contains(c));
    let mut pool: Vec<Vec<usize>> = phys
        .iter()
        .filter(|t| fitting.is_none_or(|n| node_of(t) == n))
        .cloned()
        .collect();
    pool.sort_by_key(|t| {
        let node_rank = node_order
            .iter()
            .position(|&n| n == node_of(t))
            .unwrap_or(0);
        (node_rank, *t == housekeeping, !isolated(t), t[0])
    });
    match fitting {
        Some(n) if topo.numa_nodes.len() > 1 => why.push(format!(
            "all {cores} cores on NUMA node {n}{}: tiles pass data through shared L3, no \
             cross-socket traffic",
            if nic_node == Some(n) {
                " (the NIC's node)"
            } else {
                ""
            }
        )),
        None => why.push(format!(
            "{cores} cores do not fit one NUMA node: filling node {} first, then the next",
            node_order[0]
        )),
        _ => {}
    }
    if pool.iter().take(cores).any(isolated) {
        why.push("isolated cores first: no scheduler noise on tile cores".to_string());
    }
    if cores < phys.len() {
        why.push(format!(
            "CPU {}'s core last: it keeps the OS, timers and stray interrupts",
            housekeeping[0]
        ));
    }

    let irq_cpus = topo.nic_irq_cpus();
    let irq_core = |t: &Vec<usize>| t.iter().any(|c| irq_cpus.contains(c));
    let mut free = pool.clone();
    let mut take = |prefer_irq: bool| -> Vec<usize> {
        let pos = free
            .iter()
            .position(|t| irq_core(t) == prefer_irq)
            .unwrap_or(0);
        free.remove(pos)
    };
    // Net-holding groups, then verify/exec groups, then light-only groups.
    let rank = |g: &Vec<TileKind>| {
        if g.contains(&TileKind::Net) {
            0
        } else if g.iter().any(|k| k.is_hot()) {
            1
        } else {
            2
        }
    };
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&i| (rank(&groups[i]), groups[i].iter().map(|&k| idx(k)).min()));
    let mut placed: Vec<(Vec<TileKind>, Vec<usize>)> = Vec::new();
    for i in order {
        // Without pinned NIC IRQs every core ranks alike and this is pool order.
        let threads = take(rank(&groups[i]) != 1);
        placed.push((groups[i].clone(), threads));
    }
    if !irq_cpus.is_empty() {
        why.push(format!(
            "NIC queue IRQs land on CPUs {}: net tiles take those cores, verify and exec \
             avoid them",
            parse::format_cpulist(&irq_cpus)
        ));
    }

    // If the housekeeping core had to be used, give it to the lightest
    // group (same IRQ class, so the IRQ preferences above still hold): the
    // OS noise there hurts a light group least.
    let load = |g: &Vec<TileKind>| -> u64 {
        g.iter()
            .map(|&k| k.cost_ns_per_tx() / counts.count[idx(k)].max(1) as u64)
            .sum()
    };
    if let Some(h) = placed.iter().position(|(_, t)| *t == housekeeping) {
        let lightest = (0..placed.len())
            .filter(|&i| irq_core(&placed[i].1) == irq_core(&housekeeping))
            .min_by_key(|&i| (load(&placed[i].0), std::cmp::Reverse(i)))
            .unwrap_or(h);
        if load(&placed[lightest].0) < load(&placed[h].0) {
            let (a, b) = (placed[h].1.clone(), placed[lightest].1.clone());
            placed[h].1 = b;
            placed[lightest].1 = a;
            why.push(format!(
                "CPU {}'s core (housekeeping) goes to the lightest tile group: {}",
                housekeeping[0],
                kinds_text(&placed[lightest].0)
            ));
        }
    }

    let mut layout = Layout::default();
    for (kinds, threads) in &placed {
        for &k in kinds {
            layout.cores_mut(k).push(threads[0]);
        }
        if kinds.len() > 1 {
            why.push(format!(
                "core {}: {} share it (load {} per transaction)",
                threads[0],
                kinds_text(kinds),
                us(kinds.iter().map(|k| k.cost_ns_per_tx()).sum())
            ));
        }
    }

    // --- 3. light tiles on SMT siblings
    let mut idle_cpus = Vec::new();
    if smt {
        let siblings: Vec<usize> = placed
            .iter()
            .filter_map(|(_, t)| t.get(1).copied())
            .collect();
        if siblings.is_empty() {
            let c = placed[0].1[0];
            for k in cold {
                layout.cores_mut(k).push(c);
            }
        } else {
            let slots = siblings.len().min(cold.len());
            // 1 slot: all three; 2: mempool+consensus, storage; 3: one each.
            let slot_of = |i: usize| match slots {
                1 => 0,
                2 => usize::from(i == 2),
                _ => i,
            };
            for (i, k) in cold.iter().enumerate() {
                layout.cores_mut(*k).push(siblings[slot_of(i)]);
            }
            idle_cpus = siblings[slots..].to_vec();
            idle_cpus.sort_unstable();
            why.push(format!(
                "SMT: hot tiles (net, verify, exec) own their physical cores; mempool, \
                 consensus and storage run on sibling threads {} (light: {} per \
                 transaction together)",
                parse::format_cpulist(&siblings[..slots]),
                us(cold.iter().map(|k| k.cost_ns_per_tx()).sum())
            ));
            if !idle_cpus.is_empty() {
                why.push(format!(
                    "SMT siblings {} stay idle so their hot tile keeps the whole core; \
                     keep other work off them",
                    parse::format_cpulist(&idle_cpus)
                ));
            }
        }
    }
    for k in TileKind::ALL {
        layout.cores_mut(k).sort_unstable();
    }

    for k in [TileKind::Net, TileKind::Verify, TileKind::Exec] {
        let n = layout.cores(k).len();
        why.push(format!(
            "{k}: {n} tile{} on {} ({} per transaction per tile)",
            if n == 1 { "" } else { "s" },
            parse::format_cpulist(layout.cores(k)),
            us(k.cost_ns_per_tx() / n as u64)
        ));
    }
    let (load, what) = counts.bottleneck();
    let estimated_tps = 1_000_000_000 / load.max(1);
    why.push(format!(
        "estimated ceiling ~{estimated_tps} signed tx/s; bottleneck: {what} at {} per \
         transaction",
        us(load)
    ));
    if !layout.net.is_empty() && !topo.nics.is_empty() {
        why.push(format!(
            "next: pin NIC IRQs to net cores {} (`velox tune apply irq-affinity`), then \
             `velox tune check`",
            parse::format_cpulist(&layout.net)
        ));
    }

    debug_assert!(validate_layout(&layout, topo).is_ok());
    Ok(Plan {
        cores,
        layout,
        idle_cpus,
        explanation: why,
        estimated_tps,
    })
}
