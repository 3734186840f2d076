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
use crate::progress::{Progress, Unit};

/// How long a validator may take to become healthy.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the healthy validators may take to commit once each.
pub const FIRST_COMMIT_TIMEOUT: Duration = Duration::from_secs(60);
/// After the load, how long every validator may take to reach the highest
/// commit index any had.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Benchmark mode: 512-byte unsigned opaque transactions; validators
    /// skip signature checks and execution.
    pub bench_unsigned_opaque: bool,
}

/// Transaction size of the `--bench-unsigned-opaque` load (the size most
/// published DAG-BFT benchmarks use).
pub const BENCH_OPAQUE_BYTES: usize = 512;
/// How long the devnet measures R (the batched verification rate on every
/// core) before it starts: ~1 s of the run, for a figure within a few
/// percent of `velox bench verify`'s (2 s).
pub const VERIFY_RATE_MEASURE: Duration = Duration::from_secs(1);

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

/// The kernel's ephemeral port range (`ip_local_port_range`), from which it
/// picks ports for sockets bound to port 0.
fn ephemeral_ports() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut it = t.split_whitespace().map(|x| x.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// A loopback port that is free now for both UDP and TCP, for a devnet
/// validator to bind a little later. It is drawn outside the ephemeral
/// range, so no socket bound to port 0 in between (a client's, another
/// devnet's) can be given it by the kernel, and never twice by this
/// process.
fn free_port() -> anyhow::Result<u16> {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let (lo, hi) = ephemeral_ports();
    let (from, to) = if lo > 12_000 {
        (10_000u16, lo - 1)
    } else {
        (hi.saturating_add(1).max(1024), u16::MAX)
    };
    let span = u32::from(to - from) + 1;
    let start = rand::random::<u32>() % span;
    let mut handed = HANDED_OUT.lock().expect("poisoned");
    for k in 0..span {
        let port = from + ((start + k) % span) as u16;
        if handed.contains(&port) {
            continue;
        }
        let free = UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            handed.insert(port);
            return Ok(port);
        }
    }
    bail!("no free loopback port in {from}..={to}")
}
fn free_udp() -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}
fn free_tcp() -> anyhow::Result<SocketAddr> {
    free_udp()
}

/// Chain id and seed of devnets.
pub const DEVNET_CHAIN_ID: u64 = 1337;
pub const DEVNET_SEED: &str = "velox-devnet";

/// Writes a key and a config for one validator under `dir` (a committee of
/// one).
pub fn prepare_node(
    dir: &Path,
    accounts: u32,
    extra_toml: &str,
) -> anyhow::Result<(PathBuf, SocketAddr, SocketAddr)> {
    write_node_config(dir, accounts, None, extra_toml)
}

fn write_node_config(
    dir: &Path,
    accounts: u32,
    committee: Option<&Path>,
    extra_toml: &str,
) -> anyhow::Result<(PathBuf, SocketAddr, SocketAddr)> {
    std::fs::create_dir_all(dir)?;
    let key = dir.join("validator.key");
    if !key.exists() {
        crate::keys::keygen(&key)?;
    }
    let (ingress, api) = (free_udp()?, free_tcp()?);
    let committee = committee
        .map(|c| format!("committee_file = \"{}\"\n", c.display()))
        .unwrap_or_default();
    let cfg = format!(
        "chain_id = {DEVNET_CHAIN_ID}\ndata_dir = \"data\"\nkey_file = \"validator.key\"\n{committee}\n\
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
    wait_healthy_with(child, api, dir, &mut || {})
}

/// [`wait_healthy`], calling `on_wait` between two tries (to show
/// progress).
pub fn wait_healthy_with(
    child: &mut Child,
    api: SocketAddr,
    dir: &Path,
    on_wait: &mut dyn FnMut(),
) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        if let Ok((200, _)) = crate::httpc::get(api, "/health") {
            return Ok(());
        }
        on_wait();
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

/// Where a devnet validator in `dir` writes its TLS certificate (clients
/// pin it).
pub fn node_cert(dir: &Path) -> PathBuf {
    dir.join("data").join(crate::run::TLS_CERT_FILE)
}

/// A load-generator target for the validator in `dir` serving `ingress`.
pub fn load_target(dir: &Path, ingress: SocketAddr) -> crate::load::Target {
    crate::load::Target {
        addr: ingress,
        cert: Some(node_cert(dir)),
    }
}

/// One prepared validator of a network.
#[derive(Clone, Debug)]
pub struct PreparedNode {
    pub dir: PathBuf,
    pub cfg: PathBuf,
    pub ingress: SocketAddr,
    pub api: SocketAddr,
    pub peer: SocketAddr,
}

/// Writes `n` validators under `root` (`v0`..), each with its key, config
/// and data directory, and the committee file they share
/// (`root/committee.toml`). `extra_toml(i)` is appended to validator i's
/// config.
pub fn prepare_network(
    root: &Path,
    n: u32,
    accounts: u32,
    extra_toml: &dyn Fn(u32) -> String,
) -> anyhow::Result<Vec<PreparedNode>> {
    std::fs::create_dir_all(root)?;
    let mut entries = Vec::new();
    let mut peers = Vec::new();
    for i in 0..n {
        let dir = root.join(format!("v{i}"));
        std::fs::create_dir_all(&dir)?;
        let keyfile = dir.join("validator.key");
        let key = if keyfile.exists() {
            crate::keys::read_key(&keyfile)?
        } else {
            crate::keys::keygen(&keyfile)?
        };
        let peer = free_udp()?;
        peers.push(peer);
        entries.push(crate::committee::ValidatorEntry {
            public_key: hex::encode(key.verifying_key().to_bytes()),
            peer_addr: peer,
            stake: 1,
        });
    }
    let committee = root.join("committee.toml");
    let file = crate::committee::CommitteeFile {
        epoch: 0,
        validators: entries,
    };
    std::fs::write(&committee, file.to_toml())?;
    // Validators sharing this machine rotate the planned layout, so their
    // net/consensus tiles do not all land on the same core.
    let base = crate::config::planned_layout()?;
    let mut out = Vec::new();
    for (i, peer) in peers.into_iter().enumerate() {
        let dir = root.join(format!("v{i}"));
        let layout = crate::config::rotate_layout(&base, i);
        let extra = format!(
            "{}\n[layout]\n{}",
            extra_toml(i as u32),
            toml::to_string(&layout)?
        );
        let (cfg, ingress, api) = write_node_config(&dir, accounts, Some(&committee), &extra)?;
        out.push(PreparedNode {
            dir,
            cfg,
            ingress,
            api,
            peer,
        });
    }
    Ok(out)
}

/// Commit index and state root a validator reports, if it answers.
pub fn head(api: SocketAddr) -> Option<(u64, String)> {
    let s = crate::httpc::get_json(api, "/status").ok()?;
    Some((
        s["commit_index"].as_u64()?,
        s["state_root"].as_str()?.to_string(),
    ))
}

/// Waits until every validator reports a commit index of at least `index`.
pub fn wait_commit_index(apis: &[SocketAddr], index: u64, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if apis
            .iter()
            .all(|a| head(*a).is_some_and(|(i, _)| i >= index))
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// [`wait_commit_index`], telling `on_poll` after each poll how many
/// validators reached `index` (to show progress).
pub fn wait_commit_index_with(
    apis: &[SocketAddr],
    index: u64,
    timeout: Duration,
    on_poll: &mut dyn FnMut(usize),
) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        let reached = apis
            .iter()
            .filter(|a| head(**a).is_some_and(|(i, _)| i >= index))
            .count();
        on_poll(reached);
        if reached == apis.len() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Whether all validators hold the same state root at the highest commit
/// index they all reached, that index, and the roots. Roots are compared at
/// one index (`/commit/{index}`): honest validators at the same index must
/// agree.
pub fn roots_agree(apis: &[SocketAddr]) -> anyhow::Result<(bool, u64, Vec<String>)> {
    let mut min = u64::MAX;
    for a in apis {
        let (i, _) =
            head(*a).with_context(|| format!("validator at {a} does not answer /status"))?;
        min = min.min(i);
    }
    let mut roots = Vec::new();
    for a in apis {
        let v = crate::httpc::get_json(*a, &format!("/commit/{min}"))?;
        roots.push(v["state_root"].as_str().unwrap_or("").to_string());
    }
    let agree = roots.iter().all(|r| !r.is_empty() && *r == roots[0]);
    Ok((agree, min, roots))
}

/// What the `kill-restart` chaos mode did: the last validator is killed
/// with SIGKILL at 30% of the load and restarted at 50%.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ChaosReport {
    pub chaos: String,
    pub killed_validator: u32,
    pub killed_at_s: f64,
    pub restarted_at_s: f64,
    /// The lowest commit index of the others when it restarted.
    pub commit_index_at_restart: u64,
    /// From restart until its commit index reached `commit_index_at_restart`
    /// and came within 5 commits of the others'; null if not within 120 s.
    pub catch_up_s: Option<f64>,
}

/// Runs the kill-restart schedule on its own thread, against `victim`.
fn chaos_kill_restart(
    exe: PathBuf,
    mut victim: DevnetNode,
    victim_index: u32,
    others: Vec<SocketAddr>,
    load_duration: Duration,
    start: Instant,
) -> std::thread::JoinHandle<(DevnetNode, ChaosReport)> {
    std::thread::spawn(move || {
        let mut r = ChaosReport {
            chaos: "kill-restart".into(),
            killed_validator: victim_index,
            ..Default::default()
        };
        std::thread::sleep(load_duration.mul_f64(0.3));
        let _ = victim.child.kill();
        let _ = victim.child.wait();
        r.killed_at_s = start.elapsed().as_secs_f64();
        eprintln!(
            "devnet: chaos: SIGKILLed validator {victim_index} at {:.1}s",
            r.killed_at_s
        );
        std::thread::sleep(load_duration.mul_f64(0.2));
        let cfg = victim.dir.join("velox.toml");
        match spawn_node(&exe, &cfg, &victim.dir) {
            Ok(mut child) => {
                if let Err(e) = wait_healthy(&mut child, victim.api, &victim.dir) {
                    eprintln!("devnet: chaos: validator {victim_index} did not come back: {e:#}");
                }
                victim.child = child;
            }
            Err(e) => {
                eprintln!("devnet: chaos: restarting validator {victim_index} failed: {e:#}");
                return (victim, r);
            }
        }
        let restarted = Instant::now();
        r.restarted_at_s = start.elapsed().as_secs_f64();
        let lowest = |apis: &[SocketAddr]| {
            apis.iter()
                .filter_map(|a| head(*a).map(|h| h.0))
                .min()
                .unwrap_or(0)
        };
        let target = lowest(&others);
        r.commit_index_at_restart = target;
        eprintln!(
            "devnet: chaos: restarted validator {victim_index} at {:.1}s; the others are at commit {target}",
            r.restarted_at_s
        );
        while restarted.elapsed() < Duration::from_secs(120) {
            let mine = head(victim.api).map(|h| h.0).unwrap_or(0);
            if mine >= target && mine + 5 >= lowest(&others) {
                let s = restarted.elapsed().as_secs_f64();
                r.catch_up_s = Some(s);
                eprintln!(
                    "devnet: chaos: validator {victim_index} caught up in {s:.2}s (commit {mine})"
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (victim, r)
    })
}

/// The devnet's `[exec]` sections: validator 0 executes every block on the
/// sequential executor (the oracle), the others run Block-STM on 2 workers
/// for every block with a transaction (no size threshold, no adaptive
/// guard), so `state_roots_agree` compares the parallel engine against the
/// oracle on every commit.
fn devnet_exec_toml(validator: u32) -> String {
    if validator == 0 {
        "\n[exec]\nworkers = 1\n".into()
    } else {
        "\n[exec]\nworkers = 2\nparallel_min_txs = 1\nadaptive_probe_every_blocks = 0\n".into()
    }
}

/// A validator's executor counters from /metrics: blocks run in parallel
/// and sequential blocks by reason.
fn exec_paths(api: SocketAddr) -> Option<serde_json::Value> {
    let (code, body) = crate::httpc::get(api, "/metrics").ok()?;
    if code != 200 {
        return None;
    }
    let fams = velox_tuning::monitor::parse_exposition(&body).ok()?;
    let family = |name: &str| fams.iter().find(|f| f.name == name);
    let parallel = family("velox_exec_parallel_blocks_total")?
        .samples
        .first()?
        .value;
    let mut sequential = serde_json::Map::new();
    for s in &family("velox_exec_sequential_blocks_total")?.samples {
        if let Some(reason) = s.label("reason") {
            sequential.insert(reason.into(), json!(s.value as u64));
        }
    }
    Some(json!({"parallel_blocks": parallel as u64, "sequential_blocks": sequential}))
}

/// A validator's parsed /metrics, if it answers.
fn scrape(api: SocketAddr) -> Option<velox_tuning::monitor::Snapshot> {
    let (code, body) = crate::httpc::get(api, "/metrics").ok()?;
    if code != 200 {
        return None;
    }
    let fams = velox_tuning::monitor::parse_exposition(&body).ok()?;
    Some(velox_tuning::monitor::Snapshot::from_families(&fams))
}

/// Per validator and tile, the fraction of the load window the tile was
/// busy: (validator, tile, index, core, fraction). A validator restarted in
/// the window (its counters went back) is left out.
fn busy_fractions(
    before: &[Option<velox_tuning::monitor::Snapshot>],
    after: &[Option<velox_tuning::monitor::Snapshot>],
) -> Vec<(usize, String, String, String, f64)> {
    let mut out = Vec::new();
    for (v, (b, a)) in before.iter().zip(after).enumerate() {
        let (Some(b), Some(a)) = (b, a) else { continue };
        let (Some(u0), Some(u1)) = (b.uptime_s, a.uptime_s) else {
            continue;
        };
        let dt = u1 - u0;
        if dt <= 0.0 {
            continue;
        }
        for t in &a.tiles {
            let prev = b
                .tiles
                .iter()
                .find(|p| p.tile == t.tile && p.index == t.index)
                .and_then(|p| p.busy_seconds);
            if let (Some(p), Some(n)) = (prev, t.busy_seconds) {
                if n >= p {
                    out.push((
                        v,
                        t.tile.clone(),
                        t.index.clone(),
                        t.core.clone(),
                        ((n - p) / dt).min(1.0),
                    ));
                }
            }
        }
    }
    out
}

/// `--chaos resend`: this share of extra transactions are transfers from
/// never-funded accounts (they fail at execution, 301), each sent again
/// with the same bytes a second later; every one must be answered.
pub const CHAOS_RESEND_SHARE: f64 = 0.05;

pub fn run_devnet(args: &DevnetArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(args.validators >= 1, "--validators must be at least 1");
    let (chaos, resend_failed_share) = match args.chaos.as_deref() {
        None => (false, 0.0),
        Some("kill-restart") => {
            anyhow::ensure!(
                args.validators >= 4,
                "--chaos kill-restart needs at least 4 validators (the others must keep a 2f+1 quorum)"
            );
            (true, 0.0)
        }
        Some("resend") => {
            anyhow::ensure!(
                !args.bench_unsigned_opaque,
                "--chaos resend sends signed failing transfers: not with --bench-unsigned-opaque"
            );
            (false, CHAOS_RESEND_SHARE)
        }
        Some(other) => {
            bail!("--chaos {other}: unknown mode; the supported modes are kill-restart and resend")
        }
    };
    // R, the signature-verification limit the figures are measured against
    // (issue 18): batched, on every core, before anything else runs.
    let cores = crate::config::available_cores();
    let verify_backend = velox_exec::sig::backend();
    let verify_rate = velox_benches::verify::batch_rate(cores, VERIFY_RATE_MEASURE);
    eprintln!(
        "devnet: R = {verify_rate:.0} signatures/s ({verify_backend}, batched, {cores} cores)"
    );
    let exe = std::env::current_exe()?;
    let tmp = tempfile::Builder::new().prefix("velox-devnet-").tempdir()?;
    eprintln!(
        "devnet: {} validator(s) in {}",
        args.validators,
        tmp.path().display()
    );
    let bench_toml = if args.bench_unsigned_opaque {
        eprintln!(
            "devnet: BENCHMARK MODE: {BENCH_OPAQUE_BYTES}-byte unsigned opaque transactions; validators skip signature checks and execution"
        );
        "\n[benchmark]\nskip_signature_checks = true\nskip_execution = true\n".to_string()
    } else {
        String::new()
    };
    let prepared = prepare_network(tmp.path(), args.validators, args.accounts, &|i| {
        format!("{bench_toml}{}", devnet_exec_toml(i))
    })?;
    let mut nodes = Vec::new();
    for p in &prepared {
        let child = spawn_node(&exe, &p.cfg, &p.dir)?;
        nodes.push(DevnetNode {
            child,
            dir: p.dir.clone(),
            ingress: p.ingress,
            api: p.api,
        });
    }
    // Start-up: every validator answers /health, then every one committed
    // (they found each other over QUIC and consensus runs).
    let mut bar = Progress::stderr(
        "devnet: start-up",
        Some(nodes.len() as u64),
        Unit::Count("validators healthy"),
    )
    .without_rate();
    for (i, n) in nodes.iter_mut().enumerate() {
        wait_healthy_with(&mut n.child, n.api, &n.dir, &mut || bar.update(i as u64))?;
        bar.message(&format!(
            "devnet: validator {i} healthy (ingress {}, api http://{})",
            n.ingress, n.api
        ));
    }
    bar.finish(nodes.len() as u64);
    drop(bar);
    let apis: Vec<SocketAddr> = nodes.iter().map(|n| n.api).collect();
    let mut bar = Progress::stderr(
        "devnet: waiting for the first commit",
        Some(apis.len() as u64),
        Unit::Count("validators committed"),
    )
    .without_rate();
    let committing = wait_commit_index_with(&apis, 1, FIRST_COMMIT_TIMEOUT, &mut |n| {
        bar.update(n as u64)
    });
    if !committing {
        drop(bar);
        let keep = tmp.keep();
        bail!(
            "the validators did not reach their first commit within {FIRST_COMMIT_TIMEOUT:?}; see the node.log files under {}",
            keep.display()
        );
    }
    bar.finish(apis.len() as u64);
    drop(bar);
    eprintln!("devnet: consensus is committing on every validator");
    // Under chaos the victim takes no client load (clients would fail over).
    let loaded = if chaos { nodes.len() - 1 } else { nodes.len() };
    let load = LoadArgs {
        targets: nodes[..loaded]
            .iter()
            .map(|n| load_target(&n.dir, n.ingress))
            .collect(),
        rate: args.rate,
        duration: args.duration,
        accounts: args.accounts,
        chain_id: DEVNET_CHAIN_ID,
        dev_seed: DEVNET_SEED.into(),
        api: Some(nodes[0].api),
        connections: 2,
        grace: Duration::from_secs(30),
        progress: true,
        opaque_bytes: args.bench_unsigned_opaque.then_some(BENCH_OPAQUE_BYTES),
        resend_failed_share,
    };
    let scraped_before: Vec<_> = apis.iter().map(|a| scrape(*a)).collect();
    let start = Instant::now();
    let chaos_thread = if chaos {
        let victim = nodes.pop().expect("at least 4 validators");
        let others: Vec<SocketAddr> = nodes.iter().map(|n| n.api).collect();
        Some(chaos_kill_restart(
            exe.clone(),
            victim,
            args.validators - 1,
            others,
            args.duration,
            start,
        ))
    } else {
        None
    };
    let report = run_load(&load);
    let mut chaos_report = None;
    if let Some(t) = chaos_thread {
        let (victim, r) = t
            .join()
            .map_err(|_| anyhow::anyhow!("the chaos thread panicked"))?;
        nodes.push(victim);
        chaos_report = Some(r);
    }
    let report = report?;
    let scraped_after: Vec<_> = apis.iter().map(|a| scrape(*a)).collect();
    let busy = busy_fractions(&scraped_before, &scraped_after);
    // Let every validator reach the highest index any had after the load,
    // so the comparison covers the whole run.
    let top = apis
        .iter()
        .filter_map(|a| head(*a).map(|h| h.0))
        .max()
        .unwrap_or(0);
    let mut bar = Progress::stderr(
        format!("devnet: catching up to commit {top}"),
        Some(apis.len() as u64),
        Unit::Count("validators there"),
    )
    .without_rate();
    let mut there = 0;
    let all_reached = wait_commit_index_with(&apis, top, CATCH_UP_TIMEOUT, &mut |n| {
        there = n as u64;
        bar.update(there)
    });
    bar.finish(there);
    drop(bar);
    let (agree, compared_at, roots) = roots_agree(&apis)?;
    let heads: Vec<u64> = apis
        .iter()
        .map(|a| head(*a).map(|h| h.0).unwrap_or(0))
        .collect();
    let mut v = serde_json::to_value(&report)?;
    let o = v.as_object_mut().expect("report is an object");
    o.insert("validators".into(), json!(args.validators));
    o.insert("state_roots_agree".into(), json!(agree));
    o.insert("state_roots_compared_at".into(), json!(compared_at));
    o.insert("all_reached_top".into(), json!(all_reached));
    o.insert(
        "commit_index_min".into(),
        json!(heads.iter().copied().min().unwrap_or(0)),
    );
    o.insert(
        "commit_index_max".into(),
        json!(heads.iter().copied().max().unwrap_or(0)),
    );
    o.insert("state_root".into(), json!(roots[0]));
    o.insert("cores".into(), json!(cores));
    o.insert("verify_backend".into(), json!(verify_backend));
    o.insert("verify_rate_r".into(), json!(verify_rate.round()));
    o.insert(
        "tps_over_r".into(),
        json!((report.tps / verify_rate.max(1.0) * 1000.0).round() / 1000.0),
    );
    o.insert("signed".into(), json!(!args.bench_unsigned_opaque));
    o.insert("executed".into(), json!(!args.bench_unsigned_opaque));
    if args.bench_unsigned_opaque {
        o.insert(
            "benchmark_mode".into(),
            json!("unsigned-opaque: signature checks and execution off"),
        );
        o.insert("tx_bytes".into(), json!(BENCH_OPAQUE_BYTES));
    }
    o.insert(
        "tile_busy".into(),
        json!(busy
            .iter()
            .map(|(v, t, i, c, f)| json!({"validator": v, "tile": t, "index": i, "core": c, "busy_fraction": f}))
            .collect::<Vec<_>>()),
    );
    o.insert(
        "exec_paths".into(),
        json!(apis
            .iter()
            .enumerate()
            .map(|(v, a)| json!({"validator": v, "paths": exec_paths(*a)}))
            .collect::<Vec<_>>()),
    );
    if let Some(c) = chaos_report {
        o.insert("catch_up_s".into(), json!(c.catch_up_s));
        o.insert("chaos".into(), serde_json::to_value(&c)?);
    }
    if resend_failed_share > 0.0 {
        o.insert(
            "chaos".into(),
            json!({"chaos": "resend", "resend_failed_share": resend_failed_share}),
        );
    }
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
    if !busy.is_empty() {
        let bars: Vec<(String, f64)> = busy
            .iter()
            .map(|(v, t, i, c, f)| (format!("v{v} {t}.{i}@{c}"), f * 100.0))
            .collect();
        let svg = velox_benches::plot::bar_chart(
            "Per-tile busy fraction during the load",
            "busy %",
            &bars,
        );
        let path = args.report.with_extension("tiles.svg");
        std::fs::write(&path, svg).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("devnet: per-tile busy plot written to {}", path.display());
    }
    Ok(v)
}
