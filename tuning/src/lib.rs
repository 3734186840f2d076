//! velox-tuning: host checks, host setup, topology detection and a layout
//! planner for the Velox node. Nothing here runs on the transaction path;
//! the node calls it at start (`check`) and the `velox tune` commands
//! expose it to operators.
//!
//! ```text
//!            /proc, /sys (through HostFs: RealFs, or a fixture DirFs)
//!                 │
//!      ┌──────────┴───────────┐
//!      ▼                      ▼
//!  Topology::detect      stages (memlock, io-uring, udp-buffers, busy-poll,
//!  cpus, SMT siblings,    thp, hugepages, governor, isolation, irq-affinity,
//!  NUMA, caches, NICs     smt): check → CheckReport, apply → ApplyReport
//!      │
//!      ▼
//!  plan(topo, cores) → Plan { [layout] TOML, one line per decision }
//!  validate_layout(layout, topo) → refuses absent cores, says the fix
//! ```
//!
//! - Host setup is a list of idempotent stages (STYLE.md §6). `check`
//!   needs no privileges and reports OK / PARTIAL / NOT CONFIGURED /
//!   SKIPPED with the current value, the wanted value and the fix. Only
//!   `memlock` is required (`velox tune check` fails below 64 MiB; the node
//!   starts anyway and logs it); the
//!   others degrade performance, not correctness (without io_uring the
//!   node falls back to a tokio reactor per core).
//! - `apply` writes sysctls, THP mode, the governor, NIC IRQ affinity and
//!   the process's RLIMIT_MEMLOCK; it only raises, never lowers, writes
//!   nothing when the check passes, and prints the kernel command line for
//!   what needs a reboot (CPU isolation).
//! - Topology is data: the planner turns a [`Topology`] into a `[layout]`
//!   section; the node validates the section against the machine.
//!
//! - [`monitor`] reads a node's `/metrics` (strict Prometheus text
//!   parser) and shows headline figures and the per-tile table, as text
//!   (`velox monitor --once`) or a live terminal view.
//!
//! docs/tuning.md is the operator's guide.

mod fs;
pub mod monitor;
mod parse;
mod plan;
mod stages;
mod topology;

pub use fs::{DirFs, HostFs, MemlockLimit, RealFs};
pub use parse::{cpulist as parse_cpulist, format_cpulist};
pub use plan::{
    plan, validate_layout, Layout, LayoutError, Plan, PlanError, TileKind, EXEC_TILES_MAX,
    NET_TILES_MAX, TILES_PER_KIND_MAX,
};
pub use stages::{
    isolation_cmdline, run_apply, run_apply_with, run_check, run_check_layout, ApplyOutcome,
    ApplyReport, CheckReport, StageApply, StageCheck, Status, BUSY_POLL_US, ISOLATION_CPUS_MIN,
    MEMLOCK_FLOOR_BYTES, SOCKET_BUFFER_DEFAULT_BYTES, SOCKET_BUFFER_MAX_BYTES, STAGES,
};
pub use topology::{Cache, Cpu, Nic, NicIrq, NumaNode, Topology};
