mod common;

use common::{get, set, writable};
use velox_tuning::{
    run_apply, run_apply_with, run_check, ApplyOutcome, HostFs, MemlockLimit, Status,
    MEMLOCK_FLOOR_BYTES,
};

fn outcomes(r: &velox_tuning::ApplyReport) -> Vec<(&str, ApplyOutcome)> {
    r.stages
        .iter()
        .map(|s| (s.stage.as_str(), s.outcome.clone()))
        .collect()
}

#[test]
fn apply_all_on_the_vm_then_again_is_a_no_op() {
    let (_dir, fs) = writable("vm-2core");
    let r = run_apply(&fs, None);
    assert_eq!(
        outcomes(&r),
        vec![
            ("memlock", ApplyOutcome::Applied),
            ("io-uring", ApplyOutcome::AlreadyOk),
            ("udp-buffers", ApplyOutcome::Applied),
            ("busy-poll", ApplyOutcome::Applied),
            ("thp", ApplyOutcome::AlreadyOk),
            ("hugepages", ApplyOutcome::Manual),
            ("governor", ApplyOutcome::Skipped),
            ("isolation", ApplyOutcome::Skipped),
            ("irq-affinity", ApplyOutcome::Skipped),
            ("smt", ApplyOutcome::Skipped),
        ]
    );
    assert!(!r.failed());
    assert_eq!(get(&fs, "proc/sys/net/core/rmem_max"), "8388608\n");
    assert_eq!(get(&fs, "proc/sys/net/core/wmem_default"), "2097152\n");
    assert_eq!(get(&fs, "proc/sys/net/core/busy_poll"), "50\n");
    assert_eq!(
        fs.memlock_limit().unwrap(),
        MemlockLimit {
            soft_bytes: Some(MEMLOCK_FLOOR_BYTES),
            hard_bytes: Some(MEMLOCK_FLOOR_BYTES)
        }
    );
    let udp = r.stage("udp-buffers").unwrap();
    assert!(udp
        .changes
        .contains(&"net.core.rmem_max: 4194304 -> 8388608".to_string()));
    assert!(r
        .render()
        .contains("udp-buffers: net.core.rmem_max: 4194304 -> 8388608"));

    // Idempotent: nothing left to change.
    let again = run_apply(&fs, None);
    assert!(again.stages.iter().all(|s| s.changes.is_empty()));
    assert!(again.stages.iter().all(|s| matches!(
        s.outcome,
        ApplyOutcome::AlreadyOk | ApplyOutcome::Skipped | ApplyOutcome::Manual
    )));
    assert!(!run_check(&fs, &[]).required_failed());
}

#[test]
fn apply_never_lowers_a_larger_value() {
    let (_dir, fs) = writable("vm-2core");
    set(&fs, "proc/sys/net/core/rmem_max", "33554432\n");
    let r = run_apply(&fs, Some("udp-buffers"));
    assert_eq!(r.stages.len(), 1);
    assert_eq!(r.stages[0].outcome, ApplyOutcome::Applied);
    assert_eq!(get(&fs, "proc/sys/net/core/rmem_max"), "33554432\n");
    assert_eq!(get(&fs, "proc/sys/net/core/wmem_max"), "8388608\n");

    // memlock: an unlimited hard limit stays unlimited, soft rises.
    fs.set_memlock_limit(MemlockLimit {
        soft_bytes: Some(1 << 20),
        hard_bytes: None,
    })
    .unwrap();
    assert_eq!(
        run_check(&fs, &[]).stage("memlock").unwrap().status,
        Status::Partial
    );
    run_apply(&fs, Some("memlock"));
    assert_eq!(
        fs.memlock_limit().unwrap(),
        MemlockLimit {
            soft_bytes: Some(MEMLOCK_FLOOR_BYTES),
            hard_bytes: None
        }
    );
}

#[test]
fn apply_thp_governor_and_irqs_on_the_server() {
    let (_dir, fs) = writable("server-2s64c");
    set(
        &fs,
        "sys/kernel/mm/transparent_hugepage/enabled",
        "always madvise [never]\n",
    );
    set(
        &fs,
        "sys/devices/system/cpu/cpu7/cpufreq/scaling_governor",
        "powersave\n",
    );
    set(
        &fs,
        "sys/devices/system/cpu/cpu99/cpufreq/scaling_governor",
        "schedutil\n",
    );
    assert_eq!(
        run_check(&fs, &[]).stage("governor").unwrap().status,
        Status::Partial
    );

    let r = run_apply_with(&fs, None, &[2, 3, 4]);
    assert_eq!(r.stage("thp").unwrap().outcome, ApplyOutcome::Applied);
    assert_eq!(
        get(&fs, "sys/kernel/mm/transparent_hugepage/enabled"),
        "madvise\n"
    );
    let gov = r.stage("governor").unwrap();
    assert_eq!(gov.outcome, ApplyOutcome::Applied);
    assert_eq!(
        gov.changes,
        vec![
            "cpu7: powersave -> performance",
            "cpu99: schedutil -> performance"
        ]
    );
    // Queue i goes to net core i mod 3; IRQ 100 (queue 2) already sits on 2
    // but round-robin wants 4 there: it is on a net core, so it is kept.
    let irq = r.stage("irq-affinity").unwrap();
    assert_eq!(irq.outcome, ApplyOutcome::Applied, "{}", irq.detail);
    assert_eq!(get(&fs, "proc/irq/98/smp_affinity_list"), "2\n");
    assert_eq!(get(&fs, "proc/irq/99/smp_affinity_list"), "3\n");
    assert_eq!(get(&fs, "proc/irq/100/smp_affinity_list"), "2\n");
    assert_eq!(get(&fs, "proc/irq/105/smp_affinity_list"), "3\n");
    assert_eq!(irq.changes.len(), 5);
    // The socket defaults were the one sysctl gap.
    assert_eq!(
        r.stage("udp-buffers").unwrap().outcome,
        ApplyOutcome::Applied
    );
    assert_eq!(get(&fs, "proc/sys/net/core/rmem_max"), "16777216\n");
    assert_eq!(r.stage("memlock").unwrap().outcome, ApplyOutcome::AlreadyOk);
    assert!(!r.failed());

    let check = run_check(&fs, &[2, 3, 4]);
    for s in &check.stages {
        assert_eq!(s.status, Status::Ok, "{}: {}", s.stage, s.current);
    }
    let again = run_apply_with(&fs, None, &[2, 3, 4]);
    assert!(again.stages.iter().all(|s| s.changes.is_empty()));
}

#[test]
fn isolation_needs_a_reboot_and_names_the_command_line() {
    let (_dir, fs) = writable("server-2s64c");
    set(&fs, "proc/cmdline", "BOOT_IMAGE=/vmlinuz ro quiet\n");
    set(&fs, "sys/devices/system/cpu/isolated", "\n");
    set(&fs, "sys/devices/system/cpu/nohz_full", "(null)\n");
    let r = run_apply(&fs, Some("isolation"));
    let s = &r.stages[0];
    assert_eq!(s.outcome, ApplyOutcome::NeedsReboot);
    assert!(
        s.detail.contains(
            "isolcpus=managed_irq,domain,1-63,65-127 nohz_full=1-63,65-127 \
             rcu_nocbs=1-63,65-127"
        ),
        "{}",
        s.detail
    );
    // With net cores known, the target is those cores and their siblings.
    let r = run_apply_with(&fs, Some("isolation"), &[2, 3]);
    assert!(r.stages[0]
        .detail
        .contains("isolcpus=managed_irq,domain,2-3,66-67"));
}

#[test]
fn failures_are_reported_not_panicked() {
    let (_dir, fs) = writable("vm-2core");
    let r = run_apply(&fs, Some("no-such-stage"));
    assert!(r.failed());
    assert!(r.stages[0].detail.contains("stages are: memlock, io-uring"));
    // A knob that vanished (or is read-only) fails the stage with the fix.
    std::fs::remove_file(fs.root().join("proc/sys/net/core/busy_read")).unwrap();
    std::fs::create_dir(fs.root().join("proc/sys/net/core/busy_read")).unwrap();
    let r = run_apply(&fs, Some("busy-poll"));
    assert_eq!(
        r.stages[0].outcome,
        ApplyOutcome::Failed,
        "{:?}",
        r.stages[0]
    );
    assert!(r.stages[0]
        .detail
        .contains("sysctl -w net.core.busy_poll=50"));
    assert_eq!(get(&fs, "proc/sys/net/core/busy_poll"), "50\n");
}
