mod common;

use common::fixture;
use velox_tuning::{plan, validate_layout, Layout, LayoutError, PlanError, TileKind, Topology};

fn r(a: usize, b: usize) -> Vec<usize> {
    (a..=b).collect()
}

fn layout(
    net: Vec<usize>,
    verify: Vec<usize>,
    mempool: Vec<usize>,
    consensus: Vec<usize>,
    exec: Vec<usize>,
    storage: Vec<usize>,
) -> Layout {
    Layout {
        net,
        verify,
        mempool,
        consensus,
        exec,
        storage,
    }
}

fn vm() -> Topology {
    Topology::detect(&fixture("vm-2core"))
}
fn server() -> Topology {
    Topology::detect(&fixture("server-2s64c"))
}
/// 64 cores, 2 sockets, no SMT, no NIC.
fn flat64() -> Topology {
    Topology::synthetic(2, 32, 1)
}

#[test]
fn two_cores_without_smt_give_verify_its_own_core() {
    // This machine: verify (21.7 us/tx) alone on core 1; everything else
    // (10.5 us/tx together) on core 0, which also keeps the OS.
    let p = plan(&vm(), 2).unwrap();
    assert_eq!(
        p.layout,
        layout(vec![0], vec![1], vec![0], vec![0], vec![0], vec![0])
    );
    assert_eq!(
        p.to_toml(),
        "[layout]\n# One tile per listed core; a core may appear under several kinds \
         (those tiles share it).\nnet = [0]\nverify = [1]\nmempool = [0]\nconsensus = [0]\n\
         exec = [0]\nstorage = [0]\n"
    );
    assert!(p.idle_cpus.is_empty());
    assert!(p.explanation.iter().any(|l| l
        == "core 0: net+mempool+consensus+exec+storage share it (load 10.5 µs per transaction)"));
    assert_eq!(p.estimated_tps, 46_082);

    // On a big machine, 2 cores leave CPU 0's core to the OS.
    let p = plan(&flat64(), 2).unwrap();
    assert_eq!(
        p.layout,
        layout(vec![1], vec![2], vec![1], vec![1], vec![1], vec![1])
    );
}

#[test]
fn sixteen_and_sixty_four_cores_without_smt() {
    let p = plan(&flat64(), 16).unwrap();
    assert_eq!(
        p.layout,
        // One net tile (NET_TILES_MAX): the core a second would have
        // taken goes to verify.
        layout(vec![1], r(2, 12), vec![15], vec![16], r(13, 14), vec![16])
    );
    assert!(p
        .explanation
        .iter()
        .any(|l| l.contains("all 16 cores on NUMA node 0")));

    let p = plan(&flat64(), 64).unwrap();
    assert_eq!(
        p.layout,
        layout(
            vec![1],
            {
                let mut v = r(2, 50);
                v.push(60);
                v
            },
            vec![61],
            vec![62],
            {
                let mut v = vec![0];
                v.extend(r(51, 59));
                v
            },
            vec![63]
        )
    );
    assert!(p
        .explanation
        .iter()
        .any(|l| l.contains("do not fit one NUMA node")));
}

#[test]
fn two_sixteen_and_sixty_four_cores_with_smt() {
    let topo = server();
    // 2 cores: net+exec share isolated core 2 (a NIC IRQ core), verify on
    // isolated core 8 (no NIC IRQ); light tiles on the siblings 66 and 72.
    let p = plan(&topo, 2).unwrap();
    assert_eq!(
        p.layout,
        layout(vec![2], vec![8], vec![66], vec![66], vec![2], vec![72])
    );
    assert!(p.idle_cpus.is_empty());

    // 16 cores: one net tile on IRQ core 2, verify and exec on isolated
    // cores without NIC IRQs, light tiles on siblings (the net core's,
    // then verify cores').
    let p = plan(&topo, 16).unwrap();
    assert_eq!(
        p.layout,
        layout(vec![2], r(8, 19), vec![66], vec![72], r(20, 22), vec![73])
    );
    assert_eq!(p.idle_cpus, r(74, 86));
    assert!(p
        .explanation
        .iter()
        .any(|l| l.contains("all 16 cores on NUMA node 0 (the NIC's node)")));

    // 64 cores: both sockets; one net tile although the NIC has 8 queues.
    let p = plan(&topo, 64).unwrap();
    assert_eq!(
        p.layout,
        layout(
            vec![2],
            r(8, 60),
            vec![66],
            vec![72],
            {
                let mut v = vec![0, 1];
                v.extend(r(3, 7));
                v.extend(r(61, 63));
                v
            },
            vec![73]
        )
    );
    // Every sibling but the light tiles' (66, 72, 73).
    let mut idle = vec![64, 65];
    idle.extend(r(67, 71));
    idle.extend(r(74, 127));
    assert_eq!(p.idle_cpus, idle);
    assert!(p.explanation.iter().any(
        |l| l.contains("net tiles capped at 1") && l.contains("this NIC has 8 receive queues")
    ));
}

#[test]
fn plans_never_name_an_absent_core_nor_pair_hot_siblings() {
    let topos = [
        vm(),
        server(),
        flat64(),
        Topology::synthetic(1, 4, 2),
        Topology::synthetic(2, 3, 1),
        Topology::synthetic(1, 1, 2),
    ];
    for topo in &topos {
        let phys = topo.physical_cores().len();
        let mut last_tps = 0;
        for n in 1..=phys {
            let p = plan(topo, n).unwrap();
            validate_layout(&p.layout, topo).unwrap();
            let used = p.layout.all_cores();
            assert!(used.iter().all(|&c| topo.has_cpu(c)), "n={n}");
            assert!(p
                .idle_cpus
                .iter()
                .all(|c| topo.has_cpu(*c) && !used.contains(c)));
            let hot: Vec<usize> = TileKind::ALL
                .iter()
                .filter(|k| k.is_hot())
                .flat_map(|&k| p.layout.cores(k).to_vec())
                .collect();
            for &a in &hot {
                for &b in &hot {
                    assert!(
                        !topo.are_siblings(a, b),
                        "n={n}: hot {a} and {b} are siblings"
                    );
                }
            }
            if topo.smt() {
                assert_eq!(used.len() + p.idle_cpus.len(), 2 * n, "n={n}");
            } else {
                assert_eq!(used.len(), n, "n={n}");
            }
            assert!(
                p.estimated_tps >= last_tps,
                "n={n}: more cores, lower estimate"
            );
            last_tps = p.estimated_tps;
            assert_eq!(Layout::from_toml(&p.to_toml()).unwrap(), p.layout);
        }
        assert!(matches!(
            plan(topo, phys + 1),
            Err(PlanError::TooManyCores { .. })
        ));
    }
    assert_eq!(plan(&vm(), 0), Err(PlanError::ZeroCores));
    assert_eq!(
        plan(&vm(), 3).unwrap_err().to_string(),
        "--cores 3 but this machine has 2 physical cores (2 online CPUs); ask for at most 2"
    );
}

const BRIEF_LAYOUT: &str = r#"
[node]
name = "v1"

[layout]
# One tile per listed core; a core may appear under several kinds (those tiles share it).
net = [0]
verify = [1]
mempool = [0]
consensus = [0]
exec = [1]
storage = [1]
"#;

#[test]
fn validate_layout_names_the_absent_core_and_the_fix() {
    let l = Layout::from_toml(BRIEF_LAYOUT).unwrap();
    assert_eq!(l.net, vec![0]);
    assert_eq!(l.storage, vec![1]);
    validate_layout(&l, &vm()).unwrap();

    let mut bad = l.clone();
    bad.verify = vec![1, 5];
    let err = validate_layout(&bad, &vm()).unwrap_err();
    assert_eq!(
        err,
        LayoutError::AbsentCore {
            kind: TileKind::Verify,
            core: 5,
            online: "0-1".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "layout.verify names core 5, which this machine does not have (online CPUs: 0-1); \
         use cores from that list, or run `velox tune plan --cores N` and paste its [layout]"
    );

    let mut empty = l.clone();
    empty.exec.clear();
    assert_eq!(
        validate_layout(&empty, &vm()).unwrap_err().to_string(),
        "layout.exec lists no core; every tile kind needs one (for example `exec = [0]`)"
    );
    let mut dup = l.clone();
    dup.net = vec![0, 0];
    assert!(matches!(
        validate_layout(&dup, &vm()),
        Err(LayoutError::DuplicateCore {
            kind: TileKind::Net,
            core: 0
        })
    ));
    // The same layout fits the server.
    validate_layout(&l, &server()).unwrap();
    assert!(matches!(
        Layout::from_toml("[layout]\nnet = [0]\nverfy = [1]\n"),
        Err(LayoutError::Parse(_))
    ));
}
