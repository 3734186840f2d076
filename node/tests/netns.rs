//! Four validators in separate network namespaces joined by veth pairs to a
//! bridge, every link delayed 50 ms with 1% loss (tc netem): they still
//! commit everything and agree.
//!
//! Needs root (ip netns) and the kernel's sch_netem. Where either is
//! missing the test says so on stderr and passes without running (it
//! cannot show anything there). `VELOX_NETNS_WITHOUT_NETEM=1` runs the
//! namespaces without delay and loss where netem is missing, to check the
//! plumbing.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::EXE;
use velox_node::devnet::{
    load_target, prepare_network, roots_agree, stop_child, wait_commit_index, wait_healthy,
    PreparedNode, DEVNET_CHAIN_ID, DEVNET_SEED,
};
use velox_node::load::{run_load, LoadArgs};

const N: usize = 4;
const SUBNET: &str = "10.77.0";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces, veths and bridge; removed on drop.
struct Topology {
    tag: String,
    netem: bool,
}

impl Topology {
    fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }
    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    fn build() -> Result<Topology, String> {
        // Interface names are at most 15 bytes.
        let tag = format!("vx{}", std::process::id() % 100_000);
        let mut t = Topology { tag, netem: true };
        let br = t.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{SUBNET}.254/24"), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 0..N {
            let ns = t.ns(i);
            let host = format!("{}h{i}", t.tag);
            let inner = format!("{}v{i}", t.tag);
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &host, "master", &br])?;
            ip(&["link", "set", &host, "up"])?;
            let addr = format!("{SUBNET}.{}/24", i + 1);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            // 50 ms and 1% loss on everything this validator sends.
            let tc = Command::new("ip")
                .args(["netns", "exec", &ns, "tc", "qdisc", "add", "dev", &inner])
                .args(["root", "netem", "delay", "50ms", "loss", "1%"])
                .output()
                .map_err(|e| format!("tc: {e}"))?;
            if !tc.status.success() {
                t.netem = false;
            }
        }
        Ok(t)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for i in 0..N {
            let _ = ip(&["netns", "del", &self.ns(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

/// Moves every loopback address of the prepared network to its validator's
/// namespace address (ports stay: they are free in a fresh namespace).
fn readdress(nodes: &mut [PreparedNode]) {
    let root = nodes[0].dir.parent().unwrap().to_path_buf();
    let committee = root.join("committee.toml");
    let mut ctext = std::fs::read_to_string(&committee).unwrap();
    for (i, n) in nodes.iter_mut().enumerate() {
        let host = format!("{SUBNET}.{}", i + 1);
        let mv = |a: SocketAddr| -> SocketAddr { format!("{host}:{}", a.port()).parse().unwrap() };
        let mut text = std::fs::read_to_string(&n.cfg).unwrap();
        for a in [n.ingress, n.api] {
            text = text.replace(&a.to_string(), &mv(a).to_string());
        }
        std::fs::write(&n.cfg, text).unwrap();
        ctext = ctext.replace(&n.peer.to_string(), &mv(n.peer).to_string());
        n.ingress = mv(n.ingress);
        n.api = mv(n.api);
        n.peer = mv(n.peer);
    }
    std::fs::write(&committee, ctext).unwrap();
}

fn spawn_in(ns: &str, n: &PreparedNode) -> Child {
    let log = std::fs::File::create(n.dir.join("node.log")).unwrap();
    Command::new("ip")
        .args(["netns", "exec", ns, EXE, "node", "--config"])
        .arg(&n.cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

#[test]
fn four_validators_commit_over_50ms_lossy_links() {
    let topo = match Topology::build() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("SKIPPED four_validators_commit_over_50ms_lossy_links: cannot build network namespaces here ({e}); run as root on a kernel with netns");
            return;
        }
    };
    if !topo.netem && std::env::var_os("VELOX_NETNS_WITHOUT_NETEM").is_none() {
        eprintln!("SKIPPED four_validators_commit_over_50ms_lossy_links: tc netem is unavailable (kernel module sch_netem missing); set VELOX_NETNS_WITHOUT_NETEM=1 to run the namespaces without delay and loss");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let accounts = 40;
    let mut nodes = prepare_network(tmp.path(), N as u32, accounts, &|_| String::new()).unwrap();
    readdress(&mut nodes);
    let mut children: Vec<Child> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        children.push(spawn_in(&topo.ns(i), n));
    }
    struct Stop(Vec<Child>);
    impl Drop for Stop {
        fn drop(&mut self) {
            for c in &mut self.0 {
                stop_child(c);
            }
        }
    }
    let mut children = Stop(children);
    for (i, n) in nodes.iter().enumerate() {
        wait_healthy(&mut children.0[i], n.api, Path::new(&n.dir)).unwrap();
    }
    let apis: Vec<SocketAddr> = nodes.iter().map(|n| n.api).collect();
    let log0 = || std::fs::read_to_string(nodes[0].dir.join("node.log")).unwrap_or_default();
    assert!(
        wait_commit_index(&apis, 3, Duration::from_secs(90)),
        "no commits over the impaired links; v0 log:\n{}",
        log0()
    );
    let r = run_load(&LoadArgs {
        targets: nodes
            .iter()
            .map(|n| load_target(&n.dir, n.ingress))
            .collect(),
        rate: 200,
        duration: Duration::from_secs(4),
        accounts,
        chain_id: DEVNET_CHAIN_ID,
        dev_seed: DEVNET_SEED.into(),
        api: Some(nodes[0].api),
        connections: 1,
        grace: Duration::from_secs(60),
        progress: false,
        opaque_bytes: None,
        resend_failed_share: 0.0,
    })
    .unwrap();
    assert_eq!(r.committed, r.submitted, "{r:?}\nv0 log:\n{}", log0());
    let top = apis
        .iter()
        .filter_map(|a| velox_node::devnet::head(*a).map(|h| h.0))
        .max()
        .unwrap();
    assert!(wait_commit_index(&apis, top, Duration::from_secs(60)));
    let (agree, at, roots) = roots_agree(&apis).unwrap();
    assert!(agree, "roots differ at {at}: {roots:?}");
    eprintln!(
        "netns: {} committed over {} links, p50 {:.0} ms, p99 {:.0} ms, roots agree at commit {at}",
        r.committed,
        if topo.netem {
            "50 ms / 1% loss"
        } else {
            "unimpaired (no netem)"
        },
        r.latency_ms_p50,
        r.latency_ms_p99
    );
    drop(children);
}
