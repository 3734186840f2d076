//! A network of real validator processes on loopback (`prepare_network`):
//! start, kill, pause, load, and history checks.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use super::EXE;
use velox_node::devnet::{
    head, load_target, prepare_network, roots_agree, spawn_node, stop_child, wait_healthy,
    PreparedNode, DEVNET_CHAIN_ID, DEVNET_SEED,
};
use velox_node::load::{run_load, LoadArgs, LoadReport};

pub struct Net {
    pub nodes: Vec<PreparedNode>,
    pub children: Vec<Option<Child>>,
    _tmp: tempfile::TempDir,
}

impl Net {
    pub fn prepare(n: u32, accounts: u32) -> Net {
        Net::prepare_with(n, accounts, "")
    }

    /// `extra_toml` is appended to every validator's config.
    pub fn prepare_with(n: u32, accounts: u32, extra_toml: &str) -> Net {
        let tmp = tempfile::tempdir().unwrap();
        let nodes = prepare_network(tmp.path(), n, accounts, &|_| extra_toml.to_string()).unwrap();
        Net {
            children: nodes.iter().map(|_| None).collect(),
            nodes,
            _tmp: tmp,
        }
    }

    pub fn start(&mut self, i: usize) {
        let p = &self.nodes[i];
        let mut c = spawn_node(Path::new(EXE), &p.cfg, &p.dir).unwrap();
        wait_healthy(&mut c, p.api, &p.dir).unwrap();
        self.children[i] = Some(c);
    }

    pub fn sigkill(&mut self, i: usize) {
        let mut c = self.children[i].take().expect("running");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    pub fn apis(&self, which: &[usize]) -> Vec<SocketAddr> {
        which.iter().map(|&i| self.nodes[i].api).collect()
    }

    pub fn load(&self, which: &[usize], rate: u64, secs: u64, accounts: u32) -> LoadReport {
        run_load(&self.load_args(which, rate, secs, accounts)).unwrap()
    }

    pub fn load_args(&self, which: &[usize], rate: u64, secs: u64, accounts: u32) -> LoadArgs {
        LoadArgs {
            targets: which
                .iter()
                .map(|&i| load_target(&self.nodes[i].dir, self.nodes[i].ingress))
                .collect(),
            rate,
            duration: Duration::from_secs(secs),
            accounts,
            chain_id: DEVNET_CHAIN_ID,
            dev_seed: DEVNET_SEED.into(),
            api: Some(self.nodes[which[0]].api),
            connections: 1,
            grace: Duration::from_secs(30),
            progress: false,
            opaque_bytes: None,
            resend_failed_share: 0.0,
        }
    }

    /// Submits `txs` to validator `i` on one stream and returns its answers.
    pub fn submit(
        &self,
        i: usize,
        mode: velox_net::AckMode,
        txs: &[Vec<u8>],
    ) -> Vec<velox_net::Response> {
        let cert = std::fs::read(velox_node::devnet::node_cert(&self.nodes[i].dir)).unwrap();
        super::rt().block_on(async {
            let ep = velox_net::ingress::client_endpoint(Some(cert)).unwrap();
            let c = velox_net::IngressClient::connect(&ep, self.nodes[i].ingress)
                .await
                .unwrap();
            let refs: Vec<&[u8]> = txs.iter().map(|t| t.as_slice()).collect();
            c.submit(mode, &refs).await.unwrap()
        })
    }

    /// SIGSTOP (`pause`) or SIGCONT validator `i`.
    pub fn signal(&self, i: usize, pause: bool) {
        let pid = self.children[i].as_ref().expect("running").id();
        let sig = if pause { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, sig) }, 0);
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.join("node.log")).unwrap_or_default()
    }

    pub fn metrics(&self, i: usize) -> String {
        velox_node::httpc::get(self.nodes[i].api, "/metrics")
            .unwrap()
            .1
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            stop_child(c);
        }
    }
}

pub fn index_of(api: SocketAddr) -> u64 {
    head(api).map(|h| h.0).unwrap_or(0)
}

/// Roots agree at the common index and at every tenth index below it.
pub fn assert_same_history(apis: &[SocketAddr]) -> u64 {
    let (agree, at, roots) = roots_agree(apis).unwrap();
    assert!(agree, "roots differ at commit {at}: {roots:?}");
    for i in (1..at).step_by(10) {
        let r: Vec<String> = apis
            .iter()
            .map(|a| {
                velox_node::httpc::get_json(*a, &format!("/commit/{i}")).unwrap()["state_root"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert!(
            r.iter().all(|x| *x == r[0]),
            "roots differ at commit {i}: {r:?}"
        );
    }
    at
}
