//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "velox",
    version = concat!(env!("CARGO_PKG_VERSION"), " ", env!("VELOX_BUILD")),
    about = "Velox: a thread-per-core BlockDAG validator node"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a validator key file (mode 0600) and print its public key.
    Keygen {
        #[arg(long, default_value = "validator.key")]
        out: PathBuf,
    },
    /// Run a validator.
    Node {
        #[arg(long, required_unless_present = "print_default_config")]
        config: Option<PathBuf>,
        /// Print the documented default configuration and exit.
        #[arg(long)]
        print_default_config: bool,
    },
    /// Send pre-signed transfers to a node at a fixed rate and report TPS and latency.
    Load {
        /// A node's QUIC ingress address; repeat to spread senders over several validators.
        #[arg(long, required = true)]
        target: Vec<SocketAddr>,
        /// Transactions per second offered.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Development accounts to spread transfers over (the node's genesis must fund them).
        #[arg(long, default_value_t = 1000)]
        accounts: u32,
        #[arg(long, default_value_t = 1)]
        chain_id: u64,
        #[arg(long, default_value = "velox-devnet")]
        dev_seed: String,
        /// The node's TLS certificate to pin (DATA_DIR/tls-cert.der), one per --target in the same
        /// order. Without it any certificate is accepted.
        #[arg(long)]
        cert: Vec<PathBuf>,
        /// The node's HTTP API, to read the accounts' current nonces (else they are taken as 0).
        #[arg(long)]
        api: Option<SocketAddr>,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Also write the report as JSON here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// BENCHMARK: send unsigned opaque transactions of this many bytes (e.g. 512) instead of
        /// signed transfers; only a node with [benchmark] skip_signature_checks accepts them.
        #[arg(long)]
        opaque_unsigned_bytes: Option<usize>,
        /// Add this share (0..=0.5) of transfers from never-funded accounts, which fail at
        /// execution, each resent with the same bytes a second later (every one must be answered).
        #[arg(long, default_value_t = 0.0)]
        resend_failed: f64,
    },
    /// Start a local devnet of validator processes, load it, and report.
    Devnet {
        #[arg(long, default_value_t = 4)]
        validators: u32,
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// Seconds of load.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        #[arg(long, default_value_t = 1000)]
        accounts: u32,
        #[arg(long, default_value = "devnet-report.json")]
        report: PathBuf,
        /// Keep the devnet's directory (configs, logs, data) afterwards.
        #[arg(long)]
        keep: bool,
        /// BENCHMARK (like-for-like with published DAG-BFT figures): 512-byte unsigned opaque
        /// transactions, with signature checks and execution switched off on every validator.
        #[arg(long)]
        bench_unsigned_opaque: bool,
        /// Fault injection: kill-restart (SIGKILL the last validator at 30% of the load,
        /// restart it at 50%, report its catch-up time; needs at least 4 validators), or
        /// resend (5% extra transfers from unfunded accounts, each resent a second later).
        #[arg(long)]
        chaos: Option<String>,
    },
    /// Deterministic consensus simulation over a range of seeds; exits 1 on any violation.
    Sim {
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Byzantine validators (at most (validators-1)/3).
        #[arg(long, default_value_t = 1)]
        byzantine: usize,
        /// Seeds to run: A..B (B exclusive) or A.
        #[arg(long, default_value = "0..20")]
        seeds: String,
        /// Core scenarios: default, crash, partition, equivocate, withhold, bad-sig, bad-parents,
        /// selective-vote, far-future, split-equivocate, leader-target. Whole-node scenarios (the consensus node machine with real batches):
        /// node, power-loss, clock-skew, fetch-flood, bad-fetch-response, long-partition, join-poison.
        #[arg(long)]
        scenario: Option<String>,
    },
    /// Live per-tile view of a running node (its /metrics), refreshed each second.
    Monitor {
        /// The node's HTTP API address.
        #[arg(long, default_value = "127.0.0.1:7180")]
        node: SocketAddr,
        /// Print one snapshot as plain text (rates over one second) and exit.
        #[arg(long)]
        once: bool,
        /// Refresh interval in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Fetch a state proof for an account (or kv counter) from a node, verify it against the
    /// root of the commit it was read at, and print it; exits 1 if it does not verify.
    /// `velox proof verify` checks a proof offline.
    #[command(args_conflicts_with_subcommands = true)]
    Proof {
        #[command(subcommand)]
        cmd: Option<ProofCmd>,
        /// The node's HTTP API address.
        #[arg(long, default_value = "127.0.0.1:7180")]
        node: SocketAddr,
        #[command(flatten)]
        key: ProofKey,
        /// Also print the proof's hex encoding.
        #[arg(long)]
        show_proof: bool,
    },
    /// Host checks, settings and layout planning.
    Tune {
        #[command(subcommand)]
        cmd: TuneCmd,
    },
    /// State snapshots: check one, or start a data directory from one.
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
    /// Re-execute a stopped node's stored commits and check every state root; exits 0 if all
    /// match, 2 at the first mismatch (naming its commit), 1 if it cannot run.
    Replay {
        /// The node's data directory (holding db/); default: the config's data_dir.
        #[arg(long, required_unless_present = "config")]
        data_dir: Option<PathBuf>,
        /// Start from this snapshot's state (commits after it are replayed) instead of genesis;
        /// needed once old commits are pruned.
        #[arg(long)]
        from: Option<PathBuf>,
        /// The node's configuration (its genesis must match the data's).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Do not check stored transactions' signatures (for data written in
        /// benchmark mode, whose transactions are unsigned).
        #[arg(long)]
        skip_signatures: bool,
    },
    /// Run a benchmark suite; with --json print one JSON object.
    Bench {
        /// Suite name, or `all`.
        suite: String,
        #[arg(long)]
        json: bool,
        /// Short measurements (noisier).
        #[arg(long)]
        quick: bool,
    },
}

/// The key a proof is about: one of --account, --kv.
#[derive(Args)]
#[group(multiple = false)]
struct ProofKey {
    /// An account id (64 hex characters, the ed25519 public key).
    #[arg(long)]
    account: Option<String>,
    /// A kv counter key (64 hex characters).
    #[arg(long)]
    kv: Option<String>,
}

#[derive(Subcommand)]
enum ProofCmd {
    /// Verify a proof offline against a state root; exits 1 if it does not verify.
    Verify {
        /// The trusted state root (64 hex characters).
        #[arg(long)]
        root: String,
        #[command(flatten)]
        key: ProofKey,
        /// The proof (hex, as `GET /proof/...` returns it).
        #[arg(long)]
        proof: String,
        /// Claimed account balance (with --account; a missing --nonce is 0).
        #[arg(long)]
        balance: Option<u64>,
        /// Claimed account nonce (with --account; a missing --balance is 0).
        #[arg(long)]
        nonce: Option<u64>,
        /// Claimed counter value (with --kv).
        #[arg(long)]
        value: Option<u64>,
        /// Claim the key is absent.
        #[arg(long)]
        absent: bool,
    },
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Check a snapshot file: checksum, structure, and the state root recomputed from its
    /// entries against its header; exits 1 (naming the file) if any check fails.
    Verify { file: PathBuf },
    /// Initialise an empty data directory from a verified snapshot (its state, commit record
    /// and consensus position); `velox node` on it then joins consensus from its peers'
    /// blocks (docs/storage.md, "Joining from a snapshot").
    Restore {
        #[arg(long)]
        file: PathBuf,
        /// Default: the config's data_dir.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum TuneCmd {
    /// Report each host setting the node cares about; exits 1 if a required one fails.
    Check {
        /// Cores of the net tiles (for the IRQ affinity stage).
        #[arg(long, value_delimiter = ',', default_value = "0")]
        net_cores: Vec<usize>,
    },
    /// Raise what can be raised at run time (as root); only ever raises limits.
    Apply { stage: Option<String> },
    /// Propose a [layout] for N cores of this machine.
    Plan {
        #[arg(long)]
        cores: usize,
    },
}

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Makes any panic, on any thread, stop the process at once (SIGABRT) after
/// printing it: a broken invariant stops the node instead of letting it run
/// on with the panicked thread gone (STYLE §4). The release profile unwinds
/// so that the tests reuse the binary's build; this hook keeps the node's
/// behaviour that of `panic = "abort"` (docs/decisions/0008).
pub fn abort_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        std::process::abort();
    }));
}

pub fn main() -> ExitCode {
    abort_on_panic();
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("velox: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Keygen { out } => {
            let k = crate::keys::keygen(&out)?;
            println!("{}", crate::keys::account_of(&k).to_hex());
            eprintln!("wrote {} (keep it secret; mode 0600)", out.display());
        }
        Cmd::Node {
            config,
            print_default_config,
        } => {
            if print_default_config {
                print!("{}", crate::config::DEFAULT_CONFIG);
                return Ok(ExitCode::SUCCESS);
            }
            let path = config.expect("clap requires --config");
            let cfg = crate::config::Config::load(&path)?;
            crate::run::run_node(cfg)?;
        }
        Cmd::Load {
            target,
            rate,
            duration,
            accounts,
            chain_id,
            dev_seed,
            cert,
            api,
            connections,
            report,
            opaque_unsigned_bytes,
            resend_failed,
        } => {
            if !cert.is_empty() && cert.len() != target.len() {
                anyhow::bail!(
                    "--cert given {} times for {} --target(s): give one per target, in the same order, or none",
                    cert.len(),
                    target.len()
                );
            }
            let targets = target
                .iter()
                .enumerate()
                .map(|(i, a)| crate::load::Target {
                    addr: *a,
                    cert: cert.get(i).cloned(),
                })
                .collect();
            let args = crate::load::LoadArgs {
                targets,
                rate,
                duration: Duration::from_secs(duration),
                accounts,
                chain_id,
                dev_seed,
                api,
                connections,
                grace: Duration::from_secs(30),
                progress: true,
                opaque_bytes: opaque_unsigned_bytes,
                resend_failed_share: resend_failed,
            };
            let r = crate::load::run_load(&args)?;
            let text = serde_json::to_string_pretty(&r)?;
            if let Some(p) = report {
                std::fs::write(&p, format!("{text}\n"))?;
            }
            println!("{text}");
        }
        Cmd::Devnet {
            validators,
            rate,
            duration,
            accounts,
            report,
            keep,
            chaos,
            bench_unsigned_opaque,
        } => {
            let args = crate::devnet::DevnetArgs {
                bench_unsigned_opaque,
                validators,
                rate,
                duration: Duration::from_secs(duration),
                accounts,
                report,
                keep,
                chaos,
            };
            let v = crate::devnet::run_devnet(&args)?;
            let ok = v["committed"].as_u64().unwrap_or(0) > 0
                && v["state_roots_agree"].as_bool().unwrap_or(false);
            if !ok {
                eprintln!("devnet: FAILED: nothing committed or state roots disagree");
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Tune { cmd } => return tune(cmd),
        Cmd::Snapshot { cmd } => return snapshot(cmd),
        Cmd::Replay {
            data_dir,
            from,
            config,
            skip_signatures,
        } => {
            let config = config
                .map(|p| crate::config::Config::load(&p))
                .transpose()?;
            let data_dir = match (data_dir, &config) {
                (Some(d), _) => d,
                (None, Some(c)) => c.data_dir.clone(),
                (None, None) => unreachable!("clap requires --data-dir or --config"),
            };
            let args = crate::replay::ReplayArgs {
                data_dir,
                from,
                config,
                check_signatures: !skip_signatures,
            };
            let style = crate::progress::Style::for_stderr();
            match crate::replay::run_replay(&args, &mut std::io::stderr(), style)? {
                crate::replay::ReplayOutcome::AllMatch {
                    first, last, root, ..
                } if first > last => {
                    println!(
                        "replay OK: the snapshot is of the last commit ({last}) and its root matches the data's; nothing to re-execute; root {root}"
                    );
                }
                crate::replay::ReplayOutcome::AllMatch {
                    first,
                    last,
                    txs,
                    root,
                } => {
                    println!(
                        "replay OK: commits {first}..={last} ({} commits, {txs} transactions): every state root matches; final root {root}",
                        last + 1 - first
                    );
                }
                crate::replay::ReplayOutcome::Mismatch { index, what } => {
                    println!("replay FAILED at commit {index}: {what}");
                    eprintln!("velox: error: replay: commit {index} does not reproduce: {what}");
                    return Ok(ExitCode::from(2));
                }
            }
        }
        Cmd::Proof {
            cmd,
            node,
            key,
            show_proof,
        } => return proof(cmd, node, key, show_proof),
        Cmd::Monitor {
            node,
            once,
            interval_ms,
        } => return monitor(node, once, Duration::from_millis(interval_ms)),
        Cmd::Sim {
            validators,
            byzantine,
            seeds,
            scenario,
        } => {
            let seeds =
                velox_dag::parse_seed_range(&seeds).map_err(|e| anyhow::anyhow!("--seeds: {e}"))?;
            let args = velox_dag::SimArgs {
                validators,
                byzantine,
                seeds,
                scenario,
            };
            let ok = velox_dag::run_cli(&args, &mut std::io::stdout());
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Cmd::Bench { suite, json, quick } => {
            let opts = velox_benches::BenchOpts::new(quick);
            let names: Vec<&str> = if suite == "all" {
                velox_benches::SUITES.to_vec()
            } else {
                vec![suite.as_str()]
            };
            for name in names {
                let r = velox_benches::run_suite(name, &opts).map_err(|e| anyhow::anyhow!(e))?;
                if json {
                    println!("{}", r.to_json());
                } else {
                    println!(
                        "{:<10} {:>14.0} ops/s   baseline {:>14.0} ops/s ({})   ratio {:.3}",
                        r.suite,
                        r.ops_per_s,
                        r.baseline_ops_per_s,
                        r.baseline,
                        r.ratio()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn proof(
    cmd: Option<ProofCmd>,
    node: SocketAddr,
    key: ProofKey,
    show_proof: bool,
) -> anyhow::Result<ExitCode> {
    let checked = match cmd {
        None => {
            let k = crate::proof::parse_key(key.account.as_deref(), key.kv.as_deref())?;
            crate::proof::fetch_and_check(node, k)?
        }
        Some(ProofCmd::Verify {
            root,
            key,
            proof,
            balance,
            nonce,
            value,
            absent,
        }) => {
            let k = crate::proof::parse_key(key.account.as_deref(), key.kv.as_deref())?;
            let v = crate::proof::claimed_value(&k, absent, balance, nonce, value)?;
            crate::proof::check_offline(&root, k, v, &proof)?
        }
    };
    print!("{}", checked.render());
    if show_proof {
        println!("proof hex    {}", checked.proof.to_hex());
    }
    if checked.ok() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("velox: proof verification FAILED");
        Ok(ExitCode::from(1))
    }
}

fn monitor(node: SocketAddr, once: bool, interval: Duration) -> anyhow::Result<ExitCode> {
    use velox_tuning::monitor::{render_text, run_monitor, Monitor, INTERVAL_MIN};
    let interval = interval.max(INTERVAL_MIN);
    // A scrape may take at most most of the interval, so the view keeps its pace.
    let timeout = interval.mul_f64(0.8).max(Duration::from_millis(100));
    let fetch = move || match crate::httpc::get_timeout(node, "/metrics", timeout) {
        Ok((200, body)) => Ok(body),
        Ok((code, _)) => Err(format!("GET http://{node}/metrics answered {code}")),
        Err(e) => Err(format!("{e:#}")),
    };
    let mut m = Monitor::new(format!("http://{node}/metrics"));
    if once {
        let first = fetch();
        if let Err(e) = &first {
            anyhow::bail!(
                "cannot read the node's metrics: {e}; is a node's API at {node} (--node)?"
            );
        }
        m.update(first, std::time::Instant::now());
        std::thread::sleep(interval);
        m.update(fetch(), std::time::Instant::now());
        print!("{}", render_text(m.view()));
        return Ok(ExitCode::SUCCESS);
    }
    run_monitor(m, fetch, interval)?;
    Ok(ExitCode::SUCCESS)
}

fn snapshot(cmd: SnapshotCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SnapshotCmd::Verify { file } => {
            let mut bar = crate::progress::Progress::stderr(
                "snapshot verify:",
                None,
                crate::progress::Unit::Count("entries"),
            );
            let r = velox_storage::snapshot::verify_snapshot_with_progress(&file, &mut |s| {
                crate::progress::show_snapshot_pass(&mut bar, s)
            });
            if let Ok((h, _)) = &r {
                bar.finish(h.entries);
            }
            drop(bar);
            let (h, _) = r?;
            println!(
                "snapshot {} OK: chain {}, commit {}, state root {}, {} entries{}",
                file.display(),
                hex::encode(&h.genesis[..8]),
                h.meta.index,
                h.meta.root.to_hex(),
                h.entries,
                h.meta
                    .leader
                    .map(|l| format!(", consensus leader round {}", l.round))
                    .unwrap_or_default()
            );
        }
        SnapshotCmd::Restore {
            file,
            data_dir,
            config,
        } => {
            let cfg = crate::config::Config::load(&config)?;
            let dir = data_dir.unwrap_or_else(|| cfg.data_dir.clone());
            let h = crate::replay::restore(&file, &dir, &cfg)?;
            println!(
                "restored {} into {}: commit {}, state root {}, {} entries",
                file.display(),
                dir.display(),
                h.meta.index,
                h.meta.root.to_hex(),
                h.entries
            );
            if h.format_version >= 2 {
                eprintln!(
                    "next: `velox node --config {}` (with data_dir = {}) joins consensus from its peers' blocks \
                     (docs/storage.md, \"Joining from a snapshot\")",
                    config.display(),
                    dir.display()
                );
            } else {
                eprintln!(
                    "note: a version 1 snapshot carries no consensus position: this directory serves state and \
                     `velox replay --from`, but a validator cannot join consensus from it (docs/storage.md)"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn tune(cmd: TuneCmd) -> anyhow::Result<ExitCode> {
    let fs = velox_tuning::RealFs::new();
    match cmd {
        TuneCmd::Check { net_cores } => {
            let r = velox_tuning::run_check(&fs, &net_cores);
            print!("{}", r.render_table());
            let sig = velox_exec::sig::backend_report(
                velox_exec::sig::backend(),
                velox_exec::sig::cpu_support(),
            );
            println!("\nverify backend: {sig}");
            if r.required_failed() {
                return Ok(ExitCode::from(1));
            }
        }
        TuneCmd::Apply { stage } => {
            let r = velox_tuning::run_apply(&fs, stage.as_deref());
            print!("{}", r.render());
            if r.failed() {
                return Ok(ExitCode::from(1));
            }
        }
        TuneCmd::Plan { cores } => {
            let mut topo = velox_tuning::Topology::detect(&fs);
            let here = topo.physical_cores().len();
            if cores > here {
                // Planning for a bigger server from a small machine (a
                // laptop, CI): a generic host of that size, said plainly.
                println!(
                    "# this machine has {here} physical cores: planning for a generic {cores}-core \
                     host (one socket, no SMT, one NUMA node, no NIC queues known); run \
                     `velox tune plan` on the server itself for its real topology"
                );
                topo = velox_tuning::Topology::synthetic(1, cores, 1);
            }
            let plan = velox_tuning::plan(&topo, cores).map_err(|e| anyhow::anyhow!("{e}"))?;
            for line in &plan.explanation {
                println!("# {line}");
            }
            print!("{}", plan.to_toml());
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    /// The hook the binary installs turns a panic on another thread into
    /// an abort of the whole process, with the panic printed first. Run in
    /// a child (this test binary again, this test only), whose death is
    /// the assertion.
    #[test]
    fn a_panic_aborts_the_process() {
        if std::env::var_os("VELOX_PANIC_CHILD").is_some() {
            super::abort_on_panic();
            let worker = std::thread::spawn(|| panic!("broken on purpose"));
            let _ = worker.join();
            // Reached only if the panic unwound instead of aborting.
            std::process::exit(3);
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "cli::tests::a_panic_aborts_the_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("VELOX_PANIC_CHILD", "1")
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("broken on purpose"));
    }
}
