mod common;

use common::fixture;
use velox_tuning::{plan, run_check, run_check_layout, Layout, Status, Topology, STAGES};

fn statuses(r: &velox_tuning::CheckReport) -> Vec<(&str, Status)> {
    r.stages.iter().map(|s| (s.stage, s.status)).collect()
}

#[test]
fn vm_fixture_reports_every_stage() {
    let fs = fixture("vm-2core").with_io_uring_probe(Ok(()));
    let r = run_check(&fs, &[0]);
    assert_eq!(
        statuses(&r),
        vec![
            ("memlock", Status::NotConfigured),
            ("io-uring", Status::Ok),
            ("udp-buffers", Status::NotConfigured),
            ("busy-poll", Status::NotConfigured),
            ("thp", Status::Ok),
            ("hugepages", Status::NotConfigured),
            ("governor", Status::Skipped),
            ("isolation", Status::Skipped),
            ("irq-affinity", Status::NotConfigured),
            ("smt", Status::Skipped),
        ]
    );
    let names: Vec<&str> = r.stages.iter().map(|s| s.stage).collect();
    assert_eq!(names, STAGES);
    // memlock is the one required stage; 8 MiB is below the 64 MiB floor.
    assert!(r.required_failed());
    let m = r.stage("memlock").unwrap();
    assert!(m.required);
    assert_eq!(m.current, "soft 8 MiB, hard 8 MiB");
    assert!(m.fix.contains("LimitMEMLOCK=64M"));
    let u = r.stage("udp-buffers").unwrap();
    assert!(u.current.contains("rmem_max=4 MiB"), "{}", u.current);
    assert!(u.fix.contains("sysctl -w net.core.rmem_max=8388608"));
    let irq = r.stage("irq-affinity").unwrap();
    assert!(
        irq.current.starts_with("eth0: 0/2 on net cores"),
        "{}",
        irq.current
    );
    assert!(irq.fix.contains("echo 0 > /proc/irq/38/smp_affinity_list"));

    let table = r.render_table();
    assert!(table.starts_with("STAGE"));
    assert!(table.contains("memlock       NOT CONFIGURED  yes"));
    assert!(table.contains("required stages FAILED: memlock"));
}

#[test]
fn without_net_cores_the_irq_stage_is_skipped() {
    let r = run_check(&fixture("vm-2core"), &[]);
    assert_eq!(r.stage("irq-affinity").unwrap().status, Status::Skipped);
    // No probe recorded: io_uring judged from io_uring_disabled=0.
    assert_eq!(r.stage("io-uring").unwrap().status, Status::Ok);
}

#[test]
fn io_uring_failure_is_not_required() {
    let fs = fixture("server-2s64c").with_io_uring_probe(Err(libc_eperm()));
    let r = run_check(&fs, &[0, 1, 2, 3, 4, 5, 6, 7]);
    let s = r.stage("io-uring").unwrap();
    assert_eq!(s.status, Status::NotConfigured);
    assert!(!s.required);
    assert!(s.current.contains("EPERM"));
    assert!(!r.required_failed());
    // The NIC's 8 IRQs sit on CPUs 0-7, the net cores here.
    assert_eq!(r.stage("irq-affinity").unwrap().status, Status::Ok);
}

fn libc_eperm() -> i32 {
    1
}

#[test]
fn server_fixture_is_mostly_tuned() {
    let fs = fixture("server-2s64c");
    let r = run_check(&fs, &[2, 3, 4]);
    assert_eq!(
        statuses(&r),
        vec![
            ("memlock", Status::Ok),
            ("io-uring", Status::Ok),
            ("udp-buffers", Status::Partial),
            ("busy-poll", Status::Ok),
            ("thp", Status::Ok),
            ("hugepages", Status::Ok),
            ("governor", Status::Ok),
            ("isolation", Status::Ok),
            ("irq-affinity", Status::Partial),
            ("smt", Status::Ok),
        ]
    );
    assert!(!r.required_failed());
    assert!(r.render_table().contains("required stages: OK"));
    assert_eq!(
        r.stage("irq-affinity").unwrap().current,
        "ens1f0np0: 3/8 on net cores (98->0 99->1 100->2 101->3 ...)"
    );
}

#[test]
fn smt_stage_flags_hot_tiles_on_siblings() {
    let fs = fixture("server-2s64c");
    let topo = Topology::detect(&fs);
    let good = plan(&topo, 16).unwrap().layout;
    assert_eq!(
        run_check_layout(&fs, &good).stage("smt").unwrap().status,
        Status::Ok
    );
    let bad = Layout {
        net: vec![2],
        verify: vec![8, 72],
        mempool: vec![66],
        consensus: vec![66],
        exec: vec![66],
        storage: vec![66],
    };
    let r = run_check_layout(&fs, &bad);
    let smt = r.stage("smt").unwrap();
    assert_eq!(smt.status, Status::NotConfigured);
    assert_eq!(
        smt.current,
        "hot tiles on siblings: net@2+exec@66 verify@8+verify@72"
    );
    // Hot tiles on 72 are isolated but 66/72 are isolated too: isolation OK.
    assert_eq!(r.stage("isolation").unwrap().status, Status::Ok);
    // A hot tile on a non-isolated core makes isolation PARTIAL.
    let mut on_cpu1 = good.clone();
    on_cpu1.verify.push(1);
    assert_eq!(
        run_check_layout(&fs, &on_cpu1)
            .stage("isolation")
            .unwrap()
            .status,
        Status::Partial
    );
}

#[test]
fn the_real_host_can_be_checked_without_privileges() {
    // Environment-dependent values, so only the shape is asserted.
    let fs = velox_tuning::RealFs::new();
    let r = run_check(&fs, &[0]);
    assert_eq!(r.stages.len(), STAGES.len());
    assert!(r.stages.iter().all(|s| !s.current.is_empty()));
    assert!(r.render_table().lines().count() > STAGES.len());
    let topo = Topology::detect(&fs);
    assert!(!topo.cpus.is_empty());
    let p = plan(&topo, 1).unwrap();
    velox_tuning::validate_layout(&p.layout, &topo).unwrap();
}
