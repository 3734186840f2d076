//! `velox replay`: re-executes a stopped node's stored commits with the
//! node's own execution function ([`crate::pipeline::execute_commit`]) and
//! checks every recomputed state root against the root stored with that
//! commit.
//!
//! ```text
//!  start state: genesis (empty state, commit 0 re-executed) or a verified
//!               snapshot (--from: its state at commit s, replay from s+1)
//!  for i in start..=last: block i (stored transactions) ─▶ execute_commit
//!      ─▶ recomputed root == commit i's stored root?  no ─▶ stop, exit 2
//! ```
//!
//! It opens the database like the node does (taking its lock), so it
//! refuses to run beside a live node; it never writes chain data.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use velox_exec::{ExecConfig, ExecContext, ParallelExecutor, State, Tx, VerifiedTx};
use velox_storage::rocks::RocksConfig;
use velox_storage::snapshot::{list_snapshots, verify_snapshot_with_progress, SnapshotPass};
use velox_storage::{ChainStore, RocksStore};

use crate::config::Config;
use crate::progress::{show_snapshot_pass, Progress, Style, Unit};

#[derive(Clone, Debug)]
pub struct ReplayArgs {
    /// The node's data directory (holding `db/`).
    pub data_dir: PathBuf,
    /// Start from this snapshot's state instead of genesis.
    pub from: Option<PathBuf>,
    /// The node's configuration: its genesis must match the data's.
    pub config: Option<Config>,
    /// Check every stored transaction's signature against the chain's rule
    /// (off only for data written in benchmark mode, which holds unsigned
    /// transactions).
    pub check_signatures: bool,
}

/// A replay that ran to its end or to the first mismatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayOutcome {
    /// Every commit from `first` to `last` re-executed to its stored root.
    AllMatch {
        first: u64,
        last: u64,
        txs: u64,
        root: String,
    },
    /// Commit `index` did not reproduce its stored record.
    Mismatch { index: u64, what: String },
}

fn replay_exec() -> ParallelExecutor {
    // Offline: every core, nothing pinned (results do not depend on the
    // worker count: the parallel executor equals the sequential oracle).
    ParallelExecutor::new(ExecConfig {
        pin_workers: false,
        ..ExecConfig::default()
    })
}

/// Runs a replay, printing progress to `progress` in `style` (a line
/// rewritten in place on a terminal, whole lines otherwise) and returning
/// how it ended; errors are what stopped it before any verdict (no
/// database, locked, pruned commits, bad snapshot).
pub fn run_replay(
    args: &ReplayArgs,
    progress: &mut dyn Write,
    style: Style,
) -> anyhow::Result<ReplayOutcome> {
    let db = args.data_dir.join("db");
    let rocks = args
        .config
        .as_ref()
        .map(crate::run::rocks_config)
        .unwrap_or_default();
    let store = RocksStore::open_existing(&db, RocksConfig { ..rocks })?;
    let chain = ChainStore::new(std::sync::Arc::new(store));
    let genesis = chain
        .genesis()?
        .ok_or_else(|| anyhow::anyhow!("{} holds no chain (no genesis record)", db.display()))?;
    if let Some(cfg) = &args.config {
        let want = crate::genesis::build(cfg.chain_id, &cfg.genesis).hash;
        if want != genesis {
            anyhow::bail!(
                "{} holds another chain than the configuration's (genesis {} != {})",
                db.display(),
                hex::encode(&genesis[..8]),
                hex::encode(&want[..8])
            );
        }
    }
    let last = chain
        .last_commit()?
        .ok_or_else(|| anyhow::anyhow!("{} holds no commit", db.display()))?;
    let pruned_below = chain.commits_pruned_below()?;
    let snapshots_dir = args.data_dir.join(crate::maintenance::SNAPSHOT_DIR);
    let pruned_hint = |needed: u64| -> anyhow::Error {
        let usable: Vec<String> = list_snapshots(&snapshots_dir)
            .into_iter()
            .filter(|(i, _)| i + 1 >= pruned_below)
            .map(|(_, p)| p.display().to_string())
            .collect();
        anyhow::anyhow!(
            "commit {needed} is needed but commits below {pruned_below} were pruned from {}; \
             pass --from with a snapshot of commit {} or later{}",
            db.display(),
            pruned_below.saturating_sub(1),
            if usable.is_empty() {
                " (none is in the data directory's snapshots/)".to_string()
            } else {
                format!(": {}", usable.join(", "))
            }
        )
    };
    let executor = replay_exec();
    let (mut state, first, mut txs_total) = match &args.from {
        None => {
            if pruned_below > 0 {
                return Err(pruned_hint(0));
            }
            (State::new(), 0, 0)
        }
        Some(path) => {
            let (h, state) = {
                let mut p = Progress::writer(
                    Box::new(&mut *progress),
                    style,
                    "replay: verifying the snapshot",
                    None,
                    Unit::Count("entries"),
                );
                let r = verify_snapshot_with_progress(path, &mut |s| show_snapshot_pass(&mut p, s));
                if let Ok((h, _)) = &r {
                    p.finish(h.entries);
                }
                drop(p);
                r?
            };
            if h.genesis != genesis {
                anyhow::bail!(
                    "snapshot {} is of another chain than {} (genesis {} != {})",
                    path.display(),
                    db.display(),
                    hex::encode(&h.genesis[..8]),
                    hex::encode(&genesis[..8])
                );
            }
            if h.meta.index > last.index {
                anyhow::bail!(
                    "snapshot {} is of commit {}, past the data's last commit {}",
                    path.display(),
                    h.meta.index,
                    last.index
                );
            }
            if let Some(m) = chain.commit_meta(h.meta.index)? {
                if m.root != h.meta.root {
                    return Ok(ReplayOutcome::Mismatch {
                        index: h.meta.index,
                        what: format!(
                            "the snapshot's root {} differs from the stored root {}",
                            h.meta.root.to_hex(),
                            m.root.to_hex()
                        ),
                    });
                }
            }
            if h.meta.index + 1 < pruned_below {
                return Err(pruned_hint(h.meta.index + 1));
            }
            (state, h.meta.index + 1, h.meta.txs_total)
        }
    };
    let _ = writeln!(
        progress,
        "replay: commits {first}..={} of {}",
        last.index,
        db.display()
    );
    let started = Instant::now();
    let mut bar = Progress::writer(
        Box::new(&mut *progress),
        style,
        "replay:",
        Some((last.index + 1).saturating_sub(first)),
        Unit::Count("commits"),
    );
    let mut txs_seen = 0u64;
    for index in first..=last.index {
        let Some(block) = chain.block(index)? else {
            if index < chain.commits_pruned_below()? {
                return Err(pruned_hint(index));
            }
            anyhow::bail!("commit {index}: its block is missing from {}", db.display());
        };
        let Some(meta) = chain.commit_meta(index)? else {
            anyhow::bail!(
                "commit {index}: its commit record is missing from {}",
                db.display()
            );
        };
        let mut txs = Vec::with_capacity(block.txs.len());
        for (i, bytes) in block.txs.iter().enumerate() {
            match Tx::decode(bytes) {
                // Stored only after it was verified: from our own database.
                Ok(t) => txs.push(VerifiedTx::from_trusted(t)),
                Err(e) => {
                    return Ok(ReplayOutcome::Mismatch {
                        index,
                        what: format!("stored transaction {i} does not decode: {e}"),
                    })
                }
            }
        }
        if index > 0 && args.check_signatures {
            if let Some((i, e)) = first_bad_signature(&txs) {
                return Ok(ReplayOutcome::Mismatch {
                    index,
                    what: format!("stored transaction {i} fails the chain's signature rule: {e}"),
                });
            }
        }
        let out = if index == 0 {
            crate::pipeline::execute_genesis(&mut state, &txs)
        } else {
            crate::pipeline::execute_commit(
                &executor,
                &mut state,
                &txs,
                ExecContext { genesis: false },
                false,
            )
        };
        txs_seen += txs.len() as u64;
        txs_total += out.accepted() as u64;
        if out.root != meta.root {
            return Ok(ReplayOutcome::Mismatch {
                index,
                what: format!(
                    "state root recomputed {} but stored {}",
                    out.root.to_hex(),
                    meta.root.to_hex()
                ),
            });
        }
        if meta.txs_total != txs_total {
            return Ok(ReplayOutcome::Mismatch {
                index,
                what: format!(
                    "{txs_total} transactions succeeded up to here but the record says {}",
                    meta.txs_total
                ),
            });
        }
        let done = (index + 1 - first) as f64;
        bar.update_with(done, done, || {
            format!("at commit {index}  {txs_seen} transactions")
        });
    }
    let done = (last.index + 1).saturating_sub(first) as f64;
    bar.finish_with(done, done, || format!("{txs_seen} transactions"));
    drop(bar);
    // The incremental root agreed with every record; check the final state
    // from scratch too.
    let recomputed = state.recompute_root();
    if recomputed != last.root {
        return Ok(ReplayOutcome::Mismatch {
            index: last.index,
            what: format!(
                "the final state recomputed from scratch has root {} but the record says {}",
                recomputed.to_hex(),
                last.root.to_hex()
            ),
        });
    }
    let secs = started.elapsed().as_secs_f64();
    let _ = writeln!(
        progress,
        "replay: {} commits, {txs_seen} transactions in {secs:.2} s ({:.0} commits/s)",
        last.index + 1 - first,
        (last.index + 1 - first) as f64 / secs.max(1e-9)
    );
    Ok(ReplayOutcome::AllMatch {
        first,
        last: last.index,
        txs: txs_seen,
        root: last.root.to_hex(),
    })
}

/// `velox snapshot restore`: initialises an empty data directory from a
/// verified snapshot and keeps a copy of the file in its snapshots/,
/// showing progress on stderr (verifying, then writing the entries).
pub fn restore(
    file: &Path,
    data_dir: &Path,
    cfg: &Config,
) -> anyhow::Result<velox_storage::SnapshotHeader> {
    std::fs::create_dir_all(data_dir)?;
    let db = data_dir.join("db");
    let store = RocksStore::open(&db, crate::run::rocks_config(cfg))?;
    let chain = ChainStore::new(std::sync::Arc::new(store));
    let genesis = crate::genesis::build(cfg.chain_id, &cfg.genesis).hash;
    // One reporter per pass, each labelled with its pass.
    let mut bar: Option<(SnapshotPass, Progress<'static>)> = None;
    let mut last_done = 0;
    let r = velox_storage::snapshot::restore_snapshot_with_progress(
        file,
        &chain,
        Some(genesis),
        &data_dir.display().to_string(),
        &mut |s| {
            if bar.as_ref().is_none_or(|(pass, _)| *pass != s.pass) {
                if let Some((_, mut old)) = bar.take() {
                    old.finish(last_done);
                }
                let label = match s.pass {
                    SnapshotPass::Verify => "snapshot restore: verifying",
                    _ => "snapshot restore: writing",
                };
                bar = Some((
                    s.pass,
                    Progress::stderr(label, None, Unit::Count("entries")),
                ));
            }
            last_done = s.entries_done;
            if let Some((_, p)) = &mut bar {
                show_snapshot_pass(p, s);
            }
        },
    );
    if let (Some((_, mut p)), true) = (bar.take(), r.is_ok()) {
        p.finish(last_done);
    }
    let h = r?;
    chain.store().flush()?;
    let dir = data_dir.join(crate::maintenance::SNAPSHOT_DIR);
    std::fs::create_dir_all(&dir)?;
    let copy = dir.join(velox_storage::snapshot::snapshot_file_name(h.meta.index));
    if !copy.exists() {
        std::fs::copy(file, &copy)?;
    }
    Ok(h)
}

/// The first transaction whose signature fails the chain's rule (stored
/// transactions were verified before they were stored: a failure means the
/// data was altered or written under another rule).
fn first_bad_signature(txs: &[VerifiedTx]) -> Option<(usize, velox_exec::sig::SigError)> {
    let txs: Vec<&Tx> = txs.iter().map(VerifiedTx::tx).collect();
    velox_exec::verify::check_signatures(&txs)
        .into_iter()
        .enumerate()
        .find_map(|(i, r)| r.err().map(|e| (i, e)))
}
