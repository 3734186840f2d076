//! Host setup as a list of idempotent stages (STYLE.md §6). Each stage has
//! a `check` that needs no privileges and reports the current value, the
//! wanted value and the command that fixes it, and an `apply` that changes
//! what can be changed at run time: it only ever raises limits, writes
//! nothing when the check already passes, and says what needs a reboot.

use std::fmt;

use crate::fs::{HostFs, MemlockLimit};
use crate::parse;
use crate::plan::{Layout, TileKind};
use crate::topology::Topology;

/// RLIMIT_MEMLOCK the node requires: 64 MiB.
///
/// Why: io_uring rings (on kernels before 5.12) and registered buffers (on
/// all kernels) are charged to RLIMIT_MEMLOCK. A ring of 4096 entries costs
/// about 0.4 MiB, so one ring per core on a 64-core server is ~26 MiB, and
/// the storage tile's registered write buffers take up to 16 MiB more;
/// 64 MiB covers that with headroom. The common default is 8 MiB, where
/// ring or buffer registration fails with ENOMEM part way through start-up.
/// Cost: a ceiling, not an allocation; nothing is locked unless used.
pub const MEMLOCK_FLOOR_BYTES: u64 = 64 << 20;

/// Wanted `net.core.rmem_max` / `wmem_max`: 8 MiB, what the net tile asks
/// for with SO_RCVBUF/SO_SNDBUF (the kernel silently caps requests at the
/// max). At 10 Gb/s this absorbs a 6.7 ms stall of a net tile without
/// dropping datagrams, which QUIC would otherwise treat as congestion.
pub const SOCKET_BUFFER_MAX_BYTES: u64 = 8 << 20;

/// Wanted `net.core.rmem_default` / `wmem_default`: 2 MiB, for UDP sockets
/// that never set a size (a 1.6 ms stall at 10 Gb/s). Cost: up to 2 MiB of
/// kernel memory per busy UDP socket on the host.
pub const SOCKET_BUFFER_DEFAULT_BYTES: u64 = 2 << 20;

/// Wanted `net.core.busy_poll` / `busy_read` in microseconds: a socket
/// read or poll spins in the driver up to 50 µs before sleeping. A net
/// tile owns its core, so spinning costs nothing else and saves the
/// interrupt-to-wakeup latency (~5-20 µs) on every burst.
pub const BUSY_POLL_US: u64 = 50;

/// Below this many online CPUs isolation is not applicable: isolating
/// would leave the OS less than one core of its own.
pub const ISOLATION_CPUS_MIN: usize = 4;

/// What a check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Configured as wanted.
    Ok,
    /// Some but not all of the stage is configured.
    Partial,
    /// Not configured.
    NotConfigured,
    /// Not applicable on this host (no cpufreq in a VM, no SMT, …).
    Skipped,
}

impl Status {
    /// Whether the stage needs no action.
    pub fn passed(self) -> bool {
        matches!(self, Status::Ok | Status::Skipped)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::Partial => "PARTIAL",
            Status::NotConfigured => "NOT CONFIGURED",
            Status::Skipped => "SKIPPED",
        })
    }
}

/// The result of one stage's check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageCheck {
    /// Stage name, as `velox tune apply STAGE` takes it.
    pub stage: &'static str,
    /// Whether `velox tune check` fails (exit 1) while this stage fails. The
    /// node itself only logs findings at start; it refuses bad layouts only.
    pub required: bool,
    /// What was found.
    pub status: Status,
    /// The current value, as read.
    pub current: String,
    /// The wanted value.
    pub wanted: String,
    /// The command or setting that fixes it (empty when nothing to do).
    pub fix: String,
}

/// All stage checks, in stage order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckReport {
    /// One entry per stage.
    pub stages: Vec<StageCheck>,
}

impl CheckReport {
    /// Whether any required stage is neither OK nor SKIPPED.
    pub fn required_failed(&self) -> bool {
        self.stages.iter().any(|s| s.required && !s.status.passed())
    }

    /// The check of stage `name`.
    pub fn stage(&self, name: &str) -> Option<&StageCheck> {
        self.stages.iter().find(|s| s.stage == name)
    }

    /// A fixed-width table, then one fix line per stage that is not OK,
    /// then a verdict line.
    pub fn render_table(&self) -> String {
        let header = ["STAGE", "STATUS", "REQUIRED", "CURRENT", "WANTED"];
        let rows: Vec<[String; 5]> = self
            .stages
            .iter()
            .map(|s| {
                [
                    s.stage.to_string(),
                    s.status.to_string(),
                    if s.required { "yes" } else { "no" }.to_string(),
                    s.current.clone(),
                    s.wanted.clone(),
                ]
            })
            .collect();
        let mut out = table(&header, &rows);
        let fixes: Vec<&StageCheck> = self
            .stages
            .iter()
            .filter(|s| !s.status.passed() && !s.fix.is_empty())
            .collect();
        if !fixes.is_empty() {
            out.push_str("\nfixes:\n");
            for s in fixes {
                out.push_str(&format!("  {}: {}\n", s.stage, s.fix));
            }
        }
        let failed: Vec<&str> = self
            .stages
            .iter()
            .filter(|s| s.required && !s.status.passed())
            .map(|s| s.stage)
            .collect();
        out.push('\n');
        if failed.is_empty() {
            out.push_str("required stages: OK\n");
        } else {
            out.push_str(&format!(
                "required stages FAILED: {} (the node starts, but runs below its design point; fix these first)\n",
                failed.join(", ")
            ));
        }
        out
    }
}

fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.len());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// What `apply` did for one stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The check already passed; nothing was written.
    AlreadyOk,
    /// Values were changed and the check now passes.
    Applied,
    /// Only a reboot with a changed kernel command line can fix it.
    NeedsReboot,
    /// Not changed automatically (a capacity or security decision); the
    /// detail says what to run.
    Manual,
    /// Not applicable on this host.
    Skipped,
    /// A write failed or the check still fails afterwards.
    Failed,
}

impl fmt::Display for ApplyOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApplyOutcome::AlreadyOk => "ALREADY OK",
            ApplyOutcome::Applied => "APPLIED",
            ApplyOutcome::NeedsReboot => "NEEDS REBOOT",
            ApplyOutcome::Manual => "MANUAL",
            ApplyOutcome::Skipped => "SKIPPED",
            ApplyOutcome::Failed => "FAILED",
        })
    }
}

/// The result of one stage's apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageApply {
    /// Stage name.
    pub stage: String,
    /// What happened.
    pub outcome: ApplyOutcome,
    /// Each change made (`net.core.rmem_max: 4194304 -> 8388608`).
    pub changes: Vec<String>,
    /// Why, what failed, or what to run by hand.
    pub detail: String,
}

/// All stage applies, in stage order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyReport {
    /// One entry per stage applied.
    pub stages: Vec<StageApply>,
}

impl ApplyReport {
    /// Whether any stage failed (an unknown stage name counts).
    pub fn failed(&self) -> bool {
        self.stages
            .iter()
            .any(|s| s.outcome == ApplyOutcome::Failed)
    }

    /// The apply of stage `name`.
    pub fn stage(&self, name: &str) -> Option<&StageApply> {
        self.stages.iter().find(|s| s.stage == name)
    }

    /// A table of outcomes, then every change and detail.
    pub fn render(&self) -> String {
        let rows: Vec<[String; 3]> = self
            .stages
            .iter()
            .map(|s| [s.stage.clone(), s.outcome.to_string(), s.detail.clone()])
            .collect();
        let mut out = table(&["STAGE", "OUTCOME", "DETAIL"], &rows);
        for s in &self.stages {
            for c in &s.changes {
                out.push_str(&format!("  {}: {}\n", s.stage, c));
            }
        }
        out
    }
}

/// Stage names in the order they run.
pub const STAGES: &[&str] = &[
    "memlock",
    "io-uring",
    "udp-buffers",
    "busy-poll",
    "thp",
    "hugepages",
    "governor",
    "isolation",
    "irq-affinity",
    "smt",
];

/// Everything a stage looks at.
struct Ctx<'a> {
    fs: &'a dyn HostFs,
    topo: Topology,
    net_cores: Vec<usize>,
    /// Hot tiles (net, verify, exec) and their cores, where a layout is known.
    hot: Vec<(TileKind, usize)>,
}

struct Stage {
    name: &'static str,
    required: bool,
    check: fn(&Ctx) -> (Status, String, String, String),
    apply: fn(&Ctx, &StageCheck) -> StageApply,
}

fn stage_table() -> [Stage; 10] {
    [
        Stage {
            name: "memlock",
            required: true,
            check: check_memlock,
            apply: apply_memlock,
        },
        Stage {
            name: "io-uring",
            required: false,
            check: check_io_uring,
            apply: apply_io_uring,
        },
        Stage {
            name: "udp-buffers",
            required: false,
            check: check_udp_buffers,
            apply: apply_udp_buffers,
        },
        Stage {
            name: "busy-poll",
            required: false,
            check: check_busy_poll,
            apply: apply_busy_poll,
        },
        Stage {
            name: "thp",
            required: false,
            check: check_thp,
            apply: apply_thp,
        },
        Stage {
            name: "hugepages",
            required: false,
            check: check_hugepages,
            apply: apply_manual,
        },
        Stage {
            name: "governor",
            required: false,
            check: check_governor,
            apply: apply_governor,
        },
        Stage {
            name: "isolation",
            required: false,
            check: check_isolation,
            apply: apply_isolation,
        },
        Stage {
            name: "irq-affinity",
            required: false,
            check: check_irq_affinity,
            apply: apply_irq_affinity,
        },
        Stage {
            name: "smt",
            required: false,
            check: check_smt,
            apply: apply_manual,
        },
    ]
}

const _: () = assert!(STAGES.len() == 10);

fn run_stage_check(stage: &Stage, ctx: &Ctx) -> StageCheck {
    let (status, current, wanted, fix) = (stage.check)(ctx);
    StageCheck {
        stage: stage.name,
        required: stage.required,
        status,
        current,
        wanted,
        fix,
    }
}

fn hot_of(layout: &Layout) -> Vec<(TileKind, usize)> {
    TileKind::ALL
        .iter()
        .filter(|k| k.is_hot())
        .flat_map(|&k| layout.cores(k).iter().map(move |&c| (k, c)))
        .collect()
}

/// Check every stage. `net_cores` are the cores of the net tiles (NIC
/// interrupts belong there); pass `&[]` when unknown and the IRQ stage is
/// skipped.
pub fn run_check(fs: &dyn HostFs, net_cores: &[usize]) -> CheckReport {
    let hot = net_cores.iter().map(|&c| (TileKind::Net, c)).collect();
    check_ctx(&Ctx {
        fs,
        topo: Topology::detect(fs),
        net_cores: net_cores.to_vec(),
        hot,
    })
}

/// Check every stage against a full layout: as [`run_check`], and the SMT
/// stage also flags verify and exec tiles pinned on siblings of other hot
/// tiles.
pub fn run_check_layout(fs: &dyn HostFs, layout: &Layout) -> CheckReport {
    check_ctx(&Ctx {
        fs,
        topo: Topology::detect(fs),
        net_cores: layout.net.clone(),
        hot: hot_of(layout),
    })
}

fn check_ctx(ctx: &Ctx) -> CheckReport {
    CheckReport {
        stages: stage_table()
            .iter()
            .map(|s| run_stage_check(s, ctx))
            .collect(),
    }
}

/// Apply one stage (`Some("udp-buffers")`) or all (`None`). Needs root for
/// most writes; without it the stage reports FAILED with the error. The
/// IRQ stage is skipped: it needs the net cores ([`run_apply_with`]).
pub fn run_apply(fs: &dyn HostFs, stage: Option<&str>) -> ApplyReport {
    run_apply_with(fs, stage, &[])
}

/// As [`run_apply`], with the net tiles' cores, so the IRQ stage can pin
/// NIC queue interrupts to them.
pub fn run_apply_with(fs: &dyn HostFs, stage: Option<&str>, net_cores: &[usize]) -> ApplyReport {
    let ctx = Ctx {
        fs,
        topo: Topology::detect(fs),
        net_cores: net_cores.to_vec(),
        hot: net_cores.iter().map(|&c| (TileKind::Net, c)).collect(),
    };
    let table = stage_table();
    let selected: Vec<&Stage> = match stage {
        None => table.iter().collect(),
        Some(name) => match table.iter().find(|s| s.name == name) {
            Some(s) => vec![s],
            None => {
                return ApplyReport {
                    stages: vec![StageApply {
                        stage: name.to_string(),
                        outcome: ApplyOutcome::Failed,
                        changes: Vec::new(),
                        detail: format!("unknown stage; stages are: {}", STAGES.join(", ")),
                    }],
                }
            }
        },
    };
    let mut stages = Vec::new();
    for s in selected {
        let before = run_stage_check(s, &ctx);
        stages.push(match before.status {
            Status::Ok => done(s.name, ApplyOutcome::AlreadyOk, vec![], &before.current),
            Status::Skipped => done(s.name, ApplyOutcome::Skipped, vec![], &before.current),
            _ => (s.apply)(&ctx, &before),
        });
    }
    ApplyReport { stages }
}

fn done(stage: &str, outcome: ApplyOutcome, changes: Vec<String>, detail: &str) -> StageApply {
    StageApply {
        stage: stage.to_string(),
        outcome,
        changes,
        detail: detail.to_string(),
    }
}

/// Finish a write-based apply: re-check and report.
fn finish(ctx: &Ctx, before: &StageCheck, changes: Vec<String>, errors: Vec<String>) -> StageApply {
    let stage = stage_table()
        .into_iter()
        .find(|s| s.name == before.stage)
        .expect("stage exists");
    let after = run_stage_check(&stage, ctx);
    let (outcome, detail) = if !errors.is_empty() {
        (
            ApplyOutcome::Failed,
            format!("{} (fix by hand: {})", errors.join("; "), before.fix),
        )
    } else if after.status.passed() {
        (ApplyOutcome::Applied, after.current)
    } else {
        (
            ApplyOutcome::Failed,
            format!(
                "still {}: {} (fix by hand: {})",
                after.status, after.current, before.fix
            ),
        )
    };
    done(before.stage, outcome, changes, &detail)
}

fn apply_manual(_ctx: &Ctx, before: &StageCheck) -> StageApply {
    done(before.stage, ApplyOutcome::Manual, vec![], &before.fix)
}

// ---------------------------------------------------------------- memlock

fn show_limit(v: Option<u64>) -> String {
    v.map_or("unlimited".to_string(), parse::human_bytes)
}

fn at_least(v: Option<u64>, floor: u64) -> bool {
    v.is_none_or(|b| b >= floor)
}

fn check_memlock(ctx: &Ctx) -> (Status, String, String, String) {
    let wanted = format!("soft >= {}", parse::human_bytes(MEMLOCK_FLOOR_BYTES));
    let fix = format!(
        "LimitMEMLOCK={}M in the node's systemd unit (or `ulimit -l {}` before start); \
         `velox tune apply memlock` raises it for the running process",
        MEMLOCK_FLOOR_BYTES >> 20,
        MEMLOCK_FLOOR_BYTES >> 10
    );
    match ctx.fs.memlock_limit() {
        Err(e) => (
            Status::NotConfigured,
            format!("unreadable: {e}"),
            wanted,
            fix,
        ),
        Ok(m) => {
            let current = format!(
                "soft {}, hard {}",
                show_limit(m.soft_bytes),
                show_limit(m.hard_bytes)
            );
            let status = if at_least(m.soft_bytes, MEMLOCK_FLOOR_BYTES) {
                Status::Ok
            } else if at_least(m.hard_bytes, MEMLOCK_FLOOR_BYTES) {
                Status::Partial
            } else {
                Status::NotConfigured
            };
            (status, current, wanted, fix)
        }
    }
}

fn raise(v: Option<u64>, floor: u64) -> Option<u64> {
    v.map(|b| b.max(floor))
}

fn apply_memlock(ctx: &Ctx, before: &StageCheck) -> StageApply {
    let Ok(old) = ctx.fs.memlock_limit() else {
        return finish(ctx, before, vec![], vec!["cannot read the limit".into()]);
    };
    let want = MemlockLimit {
        soft_bytes: raise(old.soft_bytes, MEMLOCK_FLOOR_BYTES),
        hard_bytes: raise(old.hard_bytes, MEMLOCK_FLOOR_BYTES),
    };
    let describe = |m: MemlockLimit| {
        format!(
            "RLIMIT_MEMLOCK soft {} -> {}, hard {} -> {}",
            show_limit(old.soft_bytes),
            show_limit(m.soft_bytes),
            show_limit(old.hard_bytes),
            show_limit(m.hard_bytes)
        )
    };
    match ctx.fs.set_memlock_limit(want) {
        Ok(()) => finish(ctx, before, vec![describe(want)], vec![]),
        Err(e) => {
            // Without CAP_SYS_RESOURCE the hard limit cannot rise; the soft
            // limit can still rise up to it.
            let soft_only = MemlockLimit {
                soft_bytes: match (want.soft_bytes, old.hard_bytes) {
                    (Some(s), Some(h)) => Some(s.min(h)),
                    (s, None) => s,
                    (None, h) => h,
                },
                hard_bytes: old.hard_bytes,
            };
            if soft_only != old && ctx.fs.set_memlock_limit(soft_only).is_ok() {
                let mut r = finish(ctx, before, vec![describe(soft_only)], vec![]);
                r.detail = format!("{} (hard limit not raised: {e})", r.detail);
                r
            } else {
                finish(ctx, before, vec![], vec![format!("setrlimit: {e}")])
            }
        }
    }
}

// --------------------------------------------------------------- io_uring

fn errno_text(e: i32) -> String {
    match e {
        libc::ENOSYS => "ENOSYS: kernel built without io_uring".into(),
        libc::EPERM => "EPERM: blocked by kernel.io_uring_disabled or a seccomp filter".into(),
        libc::ENOMEM => "ENOMEM: locked-memory limit too small for a ring".into(),
        e => format!("errno {e}"),
    }
}

fn check_io_uring(ctx: &Ctx) -> (Status, String, String, String) {
    let disabled: Option<u32> = ctx
        .fs
        .read("proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|t| t.trim().parse().ok());
    let wanted = "ring setup works, io_uring_disabled=0".to_string();
    let fix = "sysctl -w kernel.io_uring_disabled=0 (and allow io_uring_setup in the \
               container's seccomp profile); without io_uring the node falls back to a \
               tokio current-thread reactor per core"
        .to_string();
    let dis = disabled.map_or("absent".to_string(), |d| d.to_string());
    let (status, current) = match (ctx.fs.probe_io_uring(), disabled) {
        (Some(Ok(())), Some(0) | None) => {
            (Status::Ok, format!("ring created, io_uring_disabled={dis}"))
        }
        (Some(Ok(())), Some(_)) => (
            Status::Partial,
            format!("ring created, but io_uring_disabled={dis} (root and io_uring_group only)"),
        ),
        (Some(Err(e)), _) => (
            Status::NotConfigured,
            format!("{}, io_uring_disabled={dis}", errno_text(e)),
        ),
        (None, Some(0)) => (Status::Ok, "not probed, io_uring_disabled=0".into()),
        (None, Some(1)) => (Status::Partial, "not probed, io_uring_disabled=1".into()),
        (None, Some(_)) => (
            Status::NotConfigured,
            format!("not probed, io_uring_disabled={dis}"),
        ),
        (None, None) => (Status::Skipped, "cannot probe this host".into()),
    };
    (status, current, wanted, fix)
}

fn apply_io_uring(_ctx: &Ctx, before: &StageCheck) -> StageApply {
    done(
        before.stage,
        ApplyOutcome::Manual,
        vec![],
        &format!(
            "a security policy decision, not applied automatically: {}",
            before.fix
        ),
    )
}

// ---------------------------------------------------------------- sysctls

fn sysctl_path(key: &str) -> String {
    format!("proc/sys/{}", key.replace('.', "/"))
}

fn read_sysctl(fs: &dyn HostFs, key: &str) -> Option<u64> {
    fs.read(&sysctl_path(key)).ok()?.trim().parse().ok()
}

/// Check a group of numeric sysctls against minimums.
fn check_sysctls(
    ctx: &Ctx,
    want: &[(&str, u64)],
    wanted: &str,
    show: fn(u64) -> String,
) -> (Status, String, String, String) {
    let mut current = Vec::new();
    let (mut ok, mut readable) = (0, 0);
    for &(key, min) in want {
        let short = key.rsplit('.').next().unwrap_or(key);
        match read_sysctl(ctx.fs, key) {
            Some(v) => {
                readable += 1;
                ok += usize::from(v >= min);
                current.push(format!("{short}={}", show(v)));
            }
            None => current.push(format!("{short}=absent")),
        }
    }
    let wanted = wanted.to_string();
    let fix = want
        .iter()
        .map(|(k, v)| format!("sysctl -w {k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
        + " (persist in /etc/sysctl.d/90-velox.conf)";
    let status = if readable == 0 {
        Status::Skipped
    } else if ok == want.len() {
        Status::Ok
    } else if ok > 0 {
        Status::Partial
    } else {
        Status::NotConfigured
    };
    (status, current.join(" "), wanted, fix)
}

/// Raise each sysctl below its minimum; never lower one.
fn apply_sysctls(ctx: &Ctx, before: &StageCheck, want: &[(&str, u64)]) -> StageApply {
    let (mut changes, mut errors) = (Vec::new(), Vec::new());
    for &(key, min) in want {
        let Some(v) = read_sysctl(ctx.fs, key) else {
            continue;
        };
        if v >= min {
            continue;
        }
        match ctx.fs.write(&sysctl_path(key), &format!("{min}\n")) {
            Ok(()) => changes.push(format!("{key}: {v} -> {min}")),
            Err(e) => errors.push(format!("{key}: {e}")),
        }
    }
    finish(ctx, before, changes, errors)
}

const UDP_BUFFERS: [(&str, u64); 4] = [
    ("net.core.rmem_max", SOCKET_BUFFER_MAX_BYTES),
    ("net.core.wmem_max", SOCKET_BUFFER_MAX_BYTES),
    ("net.core.rmem_default", SOCKET_BUFFER_DEFAULT_BYTES),
    ("net.core.wmem_default", SOCKET_BUFFER_DEFAULT_BYTES),
];

const BUSY_POLL: [(&str, u64); 2] = [
    ("net.core.busy_poll", BUSY_POLL_US),
    ("net.core.busy_read", BUSY_POLL_US),
];

fn check_udp_buffers(ctx: &Ctx) -> (Status, String, String, String) {
    let wanted = format!(
        "max >= {}, default >= {}",
        parse::human_bytes(SOCKET_BUFFER_MAX_BYTES),
        parse::human_bytes(SOCKET_BUFFER_DEFAULT_BYTES)
    );
    check_sysctls(ctx, &UDP_BUFFERS, &wanted, parse::human_bytes)
}
fn apply_udp_buffers(ctx: &Ctx, before: &StageCheck) -> StageApply {
    apply_sysctls(ctx, before, &UDP_BUFFERS)
}
fn check_busy_poll(ctx: &Ctx) -> (Status, String, String, String) {
    let wanted = format!("both >= {BUSY_POLL_US} us");
    check_sysctls(ctx, &BUSY_POLL, &wanted, |v| v.to_string())
}
fn apply_busy_poll(ctx: &Ctx, before: &StageCheck) -> StageApply {
    apply_sysctls(ctx, before, &BUSY_POLL)
}

// -------------------------------------------------------------- hugepages

const THP_ENABLED: &str = "sys/kernel/mm/transparent_hugepage/enabled";

fn check_thp(ctx: &Ctx) -> (Status, String, String, String) {
    let wanted = "[madvise] or [always]".to_string();
    let fix = format!("echo madvise > /{THP_ENABLED}");
    match ctx.fs.read(THP_ENABLED) {
        Err(_) => (Status::Skipped, "no THP support".into(), wanted, fix),
        Ok(text) => {
            let mode = parse::bracketed(&text).unwrap_or_default();
            let status = if mode == "madvise" || mode == "always" {
                Status::Ok
            } else {
                Status::NotConfigured
            };
            (status, format!("[{mode}]"), wanted, fix)
        }
    }
}

fn apply_thp(ctx: &Ctx, before: &StageCheck) -> StageApply {
    let r = ctx.fs.write(THP_ENABLED, "madvise\n");
    match r {
        Ok(()) => finish(
            ctx,
            before,
            vec![format!("THP: {} -> [madvise]", before.current)],
            vec![],
        ),
        Err(e) => finish(ctx, before, vec![], vec![format!("{THP_ENABLED}: {e}")]),
    }
}

fn check_hugepages(ctx: &Ctx) -> (Status, String, String, String) {
    let wanted = "> 0 pages (optional)".to_string();
    let fix = "sysctl -w vm.nr_hugepages=N reserves N pages of Hugepagesize RAM for the \
               allocator; a capacity decision, not applied automatically"
        .to_string();
    let meminfo = ctx.fs.read("proc/meminfo").unwrap_or_default();
    match parse::meminfo_field(&meminfo, "HugePages_Total") {
        None => (Status::Skipped, "no hugetlb support".into(), wanted, fix),
        Some(n) => {
            let size = parse::meminfo_field(&meminfo, "Hugepagesize").unwrap_or(0);
            let status = if n > 0 {
                Status::Ok
            } else {
                Status::NotConfigured
            };
            (status, format!("{n} x {size} kB"), wanted, fix)
        }
    }
}

// --------------------------------------------------------------- governor

fn governor_path(cpu: usize) -> String {
    format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor")
}

fn check_governor(ctx: &Ctx) -> (Status, String, String, String) {
    let wanted = "performance on all CPUs".to_string();
    let fix = "cpupower frequency-set -g performance (or echo performance > \
               /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)"
        .to_string();
    let govs: Vec<(usize, String)> = ctx
        .topo
        .cpu_ids()
        .into_iter()
        .filter_map(|c| Some((c, ctx.fs.read(&governor_path(c)).ok()?.trim().to_string())))
        .collect();
    if govs.is_empty() {
        return (
            Status::Skipped,
            "no cpufreq (VM or firmware-controlled)".into(),
            wanted,
            fix,
        );
    }
    let perf = govs.iter().filter(|(_, g)| g == "performance").count();
    let mut others: Vec<&str> = govs
        .iter()
        .filter(|(_, g)| g != "performance")
        .map(|(_, g)| g.as_str())
        .collect();
    others.sort_unstable();
    others.dedup();
    let mut current = format!("performance on {perf}/{} CPUs", govs.len());
    if !others.is_empty() {
        current.push_str(&format!(" (others: {})", others.join(",")));
    }
    let status = if perf == govs.len() {
        Status::Ok
    } else if perf > 0 {
        Status::Partial
    } else {
        Status::NotConfigured
    };
    (status, current, wanted, fix)
}

fn apply_governor(ctx: &Ctx, before: &StageCheck) -> StageApply {
    let (mut changes, mut errors) = (Vec::new(), Vec::new());
    for cpu in ctx.topo.cpu_ids() {
        let Ok(g) = ctx.fs.read(&governor_path(cpu)) else {
            continue;
        };
        if g.trim() == "performance" {
            continue;
        }
        let avail = format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_available_governors");
        if let Ok(a) = ctx.fs.read(&avail) {
            if !a.split_whitespace().any(|w| w == "performance") {
                errors.push(format!("cpu{cpu}: no performance governor ({})", a.trim()));
                continue;
            }
        }
        match ctx.fs.write(&governor_path(cpu), "performance\n") {
            Ok(()) => changes.push(format!("cpu{cpu}: {} -> performance", g.trim())),
            Err(e) => errors.push(format!("cpu{cpu}: {e}")),
        }
    }
    finish(ctx, before, changes, errors)
}

// -------------------------------------------------------------- isolation

/// CPUs to isolate: the hot tiles' cores and their SMT siblings if known,
/// else every CPU but the physical core of CPU 0 (left to the OS,
/// interrupts and housekeeping).
fn isolation_target(ctx: &Ctx) -> Vec<usize> {
    if !ctx.hot.is_empty() {
        let mut v: Vec<usize> = ctx
            .hot
            .iter()
            .flat_map(|&(_, c)| ctx.topo.cpu(c).map_or(vec![c], |cpu| cpu.siblings.clone()))
            .collect();
        v.sort_unstable();
        v.dedup();
        return v;
    }
    let house: Vec<usize> = ctx
        .topo
        .cpus
        .first()
        .map(|c| c.siblings.clone())
        .unwrap_or_default();
    ctx.topo
        .cpu_ids()
        .into_iter()
        .filter(|c| !house.contains(c))
        .collect()
}

/// Kernel command line parameters that isolate `cpus`.
pub fn isolation_cmdline(cpus: &[usize]) -> String {
    let l = parse::format_cpulist(cpus);
    format!("isolcpus=managed_irq,domain,{l} nohz_full={l} rcu_nocbs={l} irqaffinity=0")
}

fn check_isolation(ctx: &Ctx) -> (Status, String, String, String) {
    let target = isolation_target(ctx);
    let wanted = if ctx.hot.is_empty() {
        format!(
            "isolcpus+nohz_full (e.g. {})",
            parse::format_cpulist(&target)
        )
    } else {
        format!("isolcpus+nohz_full >= {}", parse::format_cpulist(&target))
    };
    let fix = format!(
        "add `{}` to GRUB_CMDLINE_LINUX in /etc/default/grub, update-grub, reboot \
         (irqaffinity= keeps stray interrupts on the housekeeping core; \
         adjust the list to the cores your layout uses)",
        isolation_cmdline(&target)
    );
    if ctx.topo.cpus.len() < ISOLATION_CPUS_MIN {
        return (
            Status::Skipped,
            format!(
                "{} CPUs: too few to isolate (need >= {ISOLATION_CPUS_MIN})",
                ctx.topo.cpus.len()
            ),
            wanted,
            fix,
        );
    }
    let iso = &ctx.topo.isolated;
    let nohz = &ctx.topo.nohz_full;
    let current = format!(
        "isolated={} nohz_full={}",
        if iso.is_empty() {
            "none".into()
        } else {
            parse::format_cpulist(iso)
        },
        if nohz.is_empty() {
            "none".into()
        } else {
            parse::format_cpulist(nohz)
        }
    );
    let unisolated_hot: Vec<usize> = ctx
        .hot
        .iter()
        .map(|&(_, c)| c)
        .filter(|c| !iso.contains(c) || !nohz.contains(c))
        .collect();
    let status = if iso.is_empty() && nohz.is_empty() {
        Status::NotConfigured
    } else if iso.is_empty() || nohz.is_empty() || !unisolated_hot.is_empty() {
        Status::Partial
    } else {
        Status::Ok
    };
    (status, current, wanted, fix)
}

fn apply_isolation(_ctx: &Ctx, before: &StageCheck) -> StageApply {
    done(before.stage, ApplyOutcome::NeedsReboot, vec![], &before.fix)
}

// ----------------------------------------------------------- irq affinity

fn check_irq_affinity(ctx: &Ctx) -> (Status, String, String, String) {
    let net = &ctx.net_cores;
    let wanted = if net.is_empty() {
        "NIC queue IRQs on the net tiles' cores".to_string()
    } else {
        format!("NIC queue IRQs on net cores {}", parse::format_cpulist(net))
    };
    let irqs: Vec<(&str, &crate::topology::NicIrq)> = ctx
        .topo
        .nics
        .iter()
        .flat_map(|n| n.irqs.iter().map(move |i| (n.name.as_str(), i)))
        .collect();
    let fix_base = "systemctl disable --now irqbalance; ";
    if irqs.is_empty() {
        return (
            Status::Skipped,
            "no NIC queue IRQs found".into(),
            wanted,
            String::new(),
        );
    }
    if net.is_empty() {
        return (
            Status::Skipped,
            format!("{} NIC queue IRQs; net cores not given", irqs.len()),
            wanted,
            String::new(),
        );
    }
    let ok = irqs
        .iter()
        .filter(|(_, i)| !i.cpus.is_empty() && i.cpus.iter().all(|c| net.contains(c)))
        .count();
    let shown: Vec<String> = irqs
        .iter()
        .take(4)
        .map(|(_, i)| format!("{}->{}", i.irq, parse::format_cpulist(&i.cpus)))
        .collect();
    let mut nics: Vec<&str> = irqs.iter().map(|(n, _)| *n).collect();
    nics.dedup();
    let current = format!(
        "{}: {ok}/{} on net cores ({}{})",
        nics.join(","),
        irqs.len(),
        shown.join(" "),
        if irqs.len() > 4 { " ..." } else { "" }
    );
    let cmds: Vec<String> = irq_targets(ctx)
        .iter()
        .take(4)
        .map(|(irq, c)| format!("echo {c} > /proc/irq/{irq}/smp_affinity_list"))
        .collect();
    let fix = format!(
        "{fix_base}{}{} (or `velox tune apply irq-affinity` with the net cores)",
        cmds.join("; "),
        if irqs.len() > 4 { "; ..." } else { "" }
    );
    let status = if ok == irqs.len() {
        Status::Ok
    } else if ok > 0 {
        Status::Partial
    } else {
        Status::NotConfigured
    };
    (status, current, wanted, fix)
}

/// Each NIC queue IRQ and the net core it should go to: queue i to net core
/// i mod n, so each net tile gets an equal share of the queues.
fn irq_targets(ctx: &Ctx) -> Vec<(u32, usize)> {
    let net = &ctx.net_cores;
    if net.is_empty() {
        return Vec::new();
    }
    ctx.topo
        .nics
        .iter()
        .flat_map(|n| n.irqs.iter())
        .enumerate()
        .map(|(i, irq)| (irq.irq, net[i % net.len()]))
        .collect()
}

fn apply_irq_affinity(ctx: &Ctx, before: &StageCheck) -> StageApply {
    let (mut changes, mut errors) = (Vec::new(), Vec::new());
    let irqs: Vec<&crate::topology::NicIrq> =
        ctx.topo.nics.iter().flat_map(|n| n.irqs.iter()).collect();
    for ((irq, core), info) in irq_targets(ctx).into_iter().zip(irqs) {
        if !info.cpus.is_empty() && info.cpus.iter().all(|c| ctx.net_cores.contains(c)) {
            continue;
        }
        let path = format!("proc/irq/{irq}/smp_affinity_list");
        match ctx.fs.write(&path, &format!("{core}\n")) {
            Ok(()) => changes.push(format!(
                "irq {irq} ({}): {} -> {core}",
                info.label,
                parse::format_cpulist(&info.cpus)
            )),
            // Kernel-managed IRQs (some drivers) refuse with EIO.
            Err(e) => errors.push(format!("irq {irq}: {e}")),
        }
    }
    // The topology was read before the writes: re-read for the re-check.
    let fresh = Ctx {
        fs: ctx.fs,
        topo: Topology::detect(ctx.fs),
        net_cores: ctx.net_cores.clone(),
        hot: ctx.hot.clone(),
    };
    let mut r = finish(&fresh, before, changes, errors);
    if r.outcome == ApplyOutcome::Applied {
        r.detail
            .push_str("; keep irqbalance stopped or it moves them back");
    }
    r
}

// -------------------------------------------------------------------- smt

fn check_smt(ctx: &Ctx) -> (Status, String, String, String) {
    let wanted = "hot tiles on distinct physical cores".to_string();
    let fix = "move one tile of each pair to another physical core (`velox tune plan` \
               keeps them apart), or turn SMT off: echo off > /sys/devices/system/cpu/smt/control"
        .to_string();
    if !ctx.topo.smt() {
        return (Status::Skipped, "no SMT siblings".into(), wanted, fix);
    }
    if ctx.hot.is_empty() {
        return (
            Status::Skipped,
            "SMT on; no tile cores given".into(),
            wanted,
            fix,
        );
    }
    let mut pairs = Vec::new();
    for (i, &(ka, a)) in ctx.hot.iter().enumerate() {
        for &(kb, b) in &ctx.hot[i + 1..] {
            if ctx.topo.are_siblings(a, b) {
                pairs.push(format!("{ka}@{a}+{kb}@{b}"));
            }
        }
    }
    if pairs.is_empty() {
        (
            Status::Ok,
            "SMT on; hot tiles on distinct physical cores".into(),
            wanted,
            fix,
        )
    } else {
        (
            Status::NotConfigured,
            format!("hot tiles on siblings: {}", pairs.join(" ")),
            wanted,
            fix,
        )
    }
}
