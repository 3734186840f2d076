//! Shared helpers for tests that run real `velox` processes on loopback.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;

use ed25519_dalek::SigningKey;
use velox_exec::{AccountId, TxBody, TxBuilder};
use velox_node::devnet::{
    prepare_node, spawn_node, stop_child, wait_healthy, DEVNET_CHAIN_ID, DEVNET_SEED,
};
use velox_node::keys::{account_of, dev_key};

pub mod net;

pub const EXE: &str = env!("CARGO_BIN_EXE_velox");

pub struct TestNode {
    pub child: Child,
    pub dir: PathBuf,
    pub cfg: PathBuf,
    pub ingress: SocketAddr,
    pub api: SocketAddr,
    _tmp: tempfile::TempDir,
}

impl TestNode {
    /// A fresh node funding `accounts` dev accounts.
    pub fn start(accounts: u32, extra_toml: &str) -> TestNode {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let (cfg, ingress, api) = prepare_node(&dir, accounts, extra_toml).unwrap();
        let mut child = spawn_node(Path::new(EXE), &cfg, &dir).unwrap();
        wait_healthy(&mut child, api, &dir).unwrap();
        TestNode {
            child,
            dir,
            cfg,
            ingress,
            api,
            _tmp: tmp,
        }
    }

    /// Restarts the process on the same directory and config.
    pub fn restart(&mut self) {
        let mut child = spawn_node(Path::new(EXE), &self.cfg, &self.dir).unwrap();
        wait_healthy(&mut child, self.api, &self.dir).unwrap();
        self.child = child;
    }

    pub fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub fn cert(&self) -> Vec<u8> {
        std::fs::read(velox_node::devnet::node_cert(&self.dir)).unwrap()
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        velox_node::httpc::get_json(self.api, path).unwrap()
    }

    pub fn metrics(&self) -> String {
        velox_node::httpc::get(self.api, "/metrics").unwrap().1
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

pub fn dev(i: u32) -> SigningKey {
    dev_key(DEVNET_SEED, i)
}

pub fn transfer(from: &SigningKey, nonce: u64, to: AccountId, amount: u64) -> Vec<u8> {
    TxBuilder {
        chain_id: DEVNET_CHAIN_ID,
        nonce,
        fee: 1,
        body: TxBody::Transfer { to, amount },
    }
    .sign(from)
}

pub fn id(k: &SigningKey) -> AccountId {
    account_of(k)
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Value of the first metric line starting with `prefix`, 0 if absent.
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `text` without terminal colour sequences (the log is coloured).
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
