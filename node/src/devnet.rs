//! `velox devnet`: a local network of validator processes under load, with a
//! report.
//!
//! Steps: make a temporary directory; per validator, a key, a config and a
//! data directory; start `velox node` processes on loopback; wait for their
//! health; run the load generator against them; read every validator's
//! commit index and state root; stop the validators; print and write the
//! report (fields in docs/devnet.md, relied on by outside scripts).

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

use crate::load::{run_load, LoadArgs};

/// How long a validator may take to become healthy.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct DevnetArgs {
    pub validators: u32,
    pub rate: u64,
    pub duration: Duration,
    pub accounts: u32,
    pub report: PathBuf,
    /// Keep the temporary directory (logs, data) after the run.
    pub keep: bool,
    pub chaos: Option<String>,
}

/// A validator process of the devnet.
pub struct DevnetNode {
    pub child: Child,
    pub dir: PathBuf,
    pub ingress: SocketAddr,
    pub api: SocketAddr,
}

impl Drop for DevnetNode {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Asks a child to stop (SIGTERM), then kills it if it lingers.
pub fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    velox_io::process::send_signal(child.id(), libc::SIGTERM);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn free_udp() -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}
fn free_tcp() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Chain id and seed of devnets.
pub const DEVNET_CHAIN_ID: u64 = 1337;
pub const DEVNET_SEED: &str = "velox-devnet";

/// Writes a key and a config for one validator under `dir`.
pub fn prepare_node(
    dir: &Path,
    accounts: u32,
    extra_toml: &str,
) -> anyhow::Result<(PathBuf, SocketAddr, SocketAddr)> {
    std::fs::create_dir_all(dir)?;
    let key = dir.join("validator.key");
    if !key.exists() {
        crate::keys::keygen(&key)?;
    }
    let (ingress, api) = (free_udp()?, free_tcp()?);
    let cfg = format!(
        "chain_id = {DEVNET_CHAIN_ID}\ndata_dir = \"data\"\nkey_file = \"validator.key\"\n\n\
         [network]\ningress_addr = \"{ingress}\"\n\n[api]\naddr = \"{api}\"\n\n\
         [genesis]\ndev_accounts = {accounts}\ndev_seed = \"{DEVNET_SEED}\"\ndev_balance = 1000000000000\n{extra_toml}"
    );
    let path = dir.join("velox.toml");
    std::fs::write(&path, cfg)?;
    Ok((path, ingress, api))
}

/// Starts `velox node --config cfg` with output appended to `dir/node.log`.
pub fn spawn_node(exe: &Path, cfg: &Path, dir: &Path) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("node.log"))?;
    Command::new(exe)
        .arg("node")
        .arg("--config")
        .arg(cfg)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))
}

/// Waits until `api` answers /health, failing early if the child exits.
pub fn wait_healthy(child: &mut Child, api: SocketAddr, dir: &Path) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        if let Ok((200, _)) = crate::httpc::get(api, "/health") {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            bail!(
                "validator exited with {status} before becoming healthy; log tail:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if t.elapsed() > NODE_START_TIMEOUT {
            bail!(
                "validator did not answer /health on {api} within {NODE_START_TIMEOUT:?}; see {}",
                dir.join("node.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run_devnet(args: &DevnetArgs) -> anyhow::Result<serde_json::Value> {
    if args.validators != 1 {
        bail!(
            "--validators {}: this build runs single-validator devnets only; multi-validator networking \
             (validators over QUIC, consensus between processes) is not wired yet. Use --validators 1.",
            args.validators
        );
    }
    if let Some(c) = &args.chaos {
        bail!("--chaos {c}: chaos modes need a multi-validator devnet, which this build does not run yet");
    }
    let exe = std::env::current_exe()?;
    let tmp = tempfile::Builder::new().prefix("velox-devnet-").tempdir()?;
    eprintln!(
        "devnet: {} validator(s) in {}",
        args.validators,
        tmp.path().display()
    );
    let mut nodes = Vec::new();
    for i in 0..args.validators {
        let dir = tmp.path().join(format!("v{i}"));
        let (cfg, ingress, api) = prepare_node(&dir, args.accounts, "")?;
        let mut child = spawn_node(&exe, &cfg, &dir)?;
        wait_healthy(&mut child, api, &dir)?;
        eprintln!("devnet: validator {i} healthy (ingress {ingress}, api http://{api})");
        nodes.push(DevnetNode {
            child,
            dir,
            ingress,
            api,
        });
    }
    let n0 = &nodes[0];
    let load = LoadArgs {
        target: n0.ingress,
        rate: args.rate,
        duration: args.duration,
        accounts: args.accounts,
        chain_id: DEVNET_CHAIN_ID,
        dev_seed: DEVNET_SEED.into(),
        cert: Some(n0.dir.join("data").join(crate::run::TLS_CERT_FILE)),
        api: Some(n0.api),
        connections: 4,
        grace: Duration::from_secs(30),
        progress: true,
    };
    let report = run_load(&load)?;
    let mut heads = Vec::new();
    for n in &nodes {
        let s = crate::httpc::get_json(n.api, "/status")?;
        heads.push((
            s["commit_index"].as_u64().unwrap_or(0),
            s["state_root"].as_str().unwrap_or("").to_string(),
        ));
    }
    // Roots are comparable only at equal commit indices: honest validators
    // at the same index must hold the same root.
    let agree = heads
        .iter()
        .all(|(i, r)| heads.iter().filter(|(j, _)| j == i).all(|(_, q)| q == r));
    let mut v = serde_json::to_value(&report)?;
    let o = v.as_object_mut().expect("report is an object");
    o.insert("validators".into(), json!(args.validators));
    o.insert("state_roots_agree".into(), json!(agree));
    o.insert(
        "commit_index_min".into(),
        json!(heads.iter().map(|h| h.0).min().unwrap_or(0)),
    );
    o.insert(
        "commit_index_max".into(),
        json!(heads.iter().map(|h| h.0).max().unwrap_or(0)),
    );
    o.insert("state_root".into(), json!(heads[0].1));
    o.insert("cores".into(), json!(crate::config::available_cores()));
    o.insert("signed".into(), json!(true));
    drop(nodes);
    if args.keep {
        let p = tmp.keep();
        eprintln!("devnet: kept {}", p.display());
    }
    let text = serde_json::to_string_pretty(&v)?;
    std::fs::write(&args.report, format!("{text}\n"))
        .with_context(|| format!("writing --report {}", args.report.display()))?;
    println!("{text}");
    eprintln!("devnet: report written to {}", args.report.display());
    Ok(v)
}
