//! Work behind the commit path: state snapshots and pruning, each on its
//! own thread so neither ever holds up a commit.
//!
//! ```text
//!  storage tile, after commit i is durable and the pool told:
//!    i % snapshot_every_commits == 0 and the snapshot thread idle
//!        ──Snapshot(i)──▶ snapshot thread: takes a RocksDB snapshot (view)
//!        ◀──view taken──  (the tile waits only for this: tens of µs)
//!                         streams the view's state to snapshots/, keeps the
//!                         newest `snapshots_kept`, then asks for a prune
//!    i % PRUNE_INTERVAL_COMMITS == 0 and pruning idle
//!        ──Prune(meta i)──▶ prune thread: commits below min(retention floor,
//!                           oldest kept snapshot + 1); consensus log below
//!                           (leader round - gc depth - margin), never above
//!                           this validator's own last signed round; batch
//!                           lists out of the duplicate window
//! ```
//!
//! A job that finds its thread busy is skipped and counted, never queued
//! behind another: the next multiple of the interval tries again.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use velox_storage::snapshot::{
    list_snapshots, read_snapshot_header, retain_snapshots, write_snapshot_with_progress,
    SnapshotParams,
};
use velox_storage::{ChainStore, CommitMeta};

/// Commits between two pruning passes: a pass costs a few range deletions
/// plus one checked delete per pruned transaction, so every 64 commits
/// keeps each pass small.
pub const PRUNE_INTERVAL_COMMITS: u64 = 64;
/// Longest the storage tile waits for the snapshot thread to take its view
/// (it is idle when asked, so this is only reached if the machine stalls;
/// the snapshot is then labelled with the commit the view holds).
pub const SNAPSHOT_VIEW_WAIT_MAX: Duration = Duration::from_secs(1);
/// Directory under the data directory where snapshots go.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// What the maintenance threads do (from `[storage]` and `[consensus]`).
#[derive(Clone, Debug)]
pub struct MaintenanceConfig {
    /// 0: no snapshots.
    pub snapshot_every_commits: u64,
    pub snapshots_kept: usize,
    pub snapshot_dir: PathBuf,
    /// 0: keep everything (no pruning at all).
    pub retention_commits: u64,
    pub consensus_log_margin_rounds: u64,
    pub gc_depth_rounds: u64,
    /// The consensus tile's duplicate-batch window (digests).
    pub included_window: u64,
}

/// Counters exported on /metrics (docs/metrics.md, "Storage").
#[derive(Default)]
pub struct DurabilityCounters {
    pub snapshots_written: AtomicU64,
    pub snapshots_skipped: AtomicU64,
    pub snapshot_failures: AtomicU64,
    pub last_snapshot_index: AtomicU64,
    pub last_snapshot_bytes: AtomicU64,
    pub snapshot_write_ns: AtomicU64,
    pub last_snapshot_write_ns: AtomicU64,
    /// Time the storage tile waited for snapshot views (its only cost).
    pub snapshot_view_wait_ns: AtomicU64,
    pub prune_passes: AtomicU64,
    pub prune_failures: AtomicU64,
    pub pruned_commits: AtomicU64,
    pub pruned_txs: AtomicU64,
    pub pruned_batches: AtomicU64,
    pub prune_ns: AtomicU64,
    pub commits_pruned_below: AtomicU64,
    pub consensus_pruned_below: AtomicU64,
    /// Damaged table files found by the background integrity scan (or 0).
    pub corruption_detected: AtomicU64,
    /// 1 once the integrity scan after start finished.
    pub integrity_scan_done: AtomicU64,
}

enum SnapshotJob {
    Take { taken: SyncSender<()> },
}

/// The storage tile's handle on the maintenance threads.
pub struct Maintenance {
    cfg: MaintenanceConfig,
    counters: Arc<DurabilityCounters>,
    snapshot_tx: Option<SyncSender<SnapshotJob>>,
    snapshot_busy: Arc<AtomicBool>,
    prune_tx: Option<SyncSender<CommitMeta>>,
}

impl Maintenance {
    /// Starts the threads the configuration asks for. `signed_round` is the
    /// consensus tile's highest signed round (its own last block is never
    /// pruned: recovery must find it so it never signs that round again).
    pub fn start(
        chain: ChainStore,
        cfg: MaintenanceConfig,
        counters: Arc<DurabilityCounters>,
        signed_round: Arc<dyn Fn() -> u64 + Send + Sync>,
    ) -> std::io::Result<Maintenance> {
        counters
            .commits_pruned_below
            .store(chain.commits_pruned_below().unwrap_or(0), Ordering::Relaxed);
        counters.consensus_pruned_below.store(
            chain.consensus_pruned_below().unwrap_or(0),
            Ordering::Relaxed,
        );
        if let Some((i, _)) = list_snapshots(&cfg.snapshot_dir).last() {
            counters.last_snapshot_index.store(*i, Ordering::Relaxed);
        }
        // Leftovers of a write interrupted by a crash.
        let _ = retain_snapshots(&cfg.snapshot_dir, usize::MAX);
        {
            let (chain, counters) = (chain.clone(), counters.clone());
            std::thread::Builder::new()
                .name("velox-verify".into())
                .spawn(move || integrity_scan(&chain, &counters))?;
        }
        let prune_tx = if cfg.retention_commits > 0 {
            let (tx, rx) = sync_channel::<CommitMeta>(1);
            let (chain, cfg, counters) = (chain.clone(), cfg.clone(), counters.clone());
            std::thread::Builder::new()
                .name("velox-prune".into())
                .spawn(move || prune_loop(rx, chain, cfg, counters, signed_round))?;
            Some(tx)
        } else {
            None
        };
        let snapshot_busy = Arc::new(AtomicBool::new(false));
        let snapshot_tx = if cfg.snapshot_every_commits > 0 {
            let (tx, rx) = sync_channel::<SnapshotJob>(1);
            let (chain, cfg, counters, busy, prune) = (
                chain.clone(),
                cfg.clone(),
                counters.clone(),
                snapshot_busy.clone(),
                prune_tx.clone(),
            );
            std::thread::Builder::new()
                .name("velox-snapshot".into())
                .spawn(move || snapshot_loop(rx, chain, cfg, counters, busy, prune))?;
            Some(tx)
        } else {
            None
        };
        Ok(Maintenance {
            cfg,
            counters,
            snapshot_tx,
            snapshot_busy,
            prune_tx,
        })
    }

    /// Called by the storage tile after commit `meta` is durable and before
    /// it writes the next one.
    pub fn after_commit(&self, meta: &CommitMeta) {
        let every = self.cfg.snapshot_every_commits;
        if let Some(tx) = &self.snapshot_tx {
            if meta.index > 0 && meta.index % every == 0 {
                self.request_snapshot(tx);
            }
        }
        if let Some(tx) = &self.prune_tx {
            if meta.index % PRUNE_INTERVAL_COMMITS == 0 {
                // Full: a pass is running; the next interval tries again.
                let _ = tx.try_send(*meta);
            }
        }
    }

    fn request_snapshot(&self, tx: &SyncSender<SnapshotJob>) {
        if self.snapshot_busy.swap(true, Ordering::AcqRel) {
            self.counters
                .snapshots_skipped
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("the previous snapshot is still being written; skipping this one");
            return;
        }
        let started = Instant::now();
        let (taken_tx, taken_rx) = sync_channel(1);
        match tx.try_send(SnapshotJob::Take { taken: taken_tx }) {
            Ok(()) => {
                // Wait for the view: it then holds exactly this commit.
                let _ = taken_rx.recv_timeout(SNAPSHOT_VIEW_WAIT_MAX);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.snapshot_busy.store(false, Ordering::Release);
                self.counters
                    .snapshots_skipped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        self.counters
            .snapshot_view_wait_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Reads the whole database once, verifying every block checksum. At start
/// the node reads only what it needs (state, meta, the recent consensus
/// log); this finds damage in the rest (history, old log) without delaying
/// start. Damage is logged with the file and the fix and counted; the node
/// keeps running (what it needs to stay correct was read at start).
fn integrity_scan(chain: &ChainStore, counters: &DurabilityCounters) {
    let started = Instant::now();
    match velox_storage::scan_all(chain.store().as_ref()) {
        Ok(n) => tracing::info!(
            entries = n,
            seconds = started.elapsed().as_secs_f64(),
            "integrity scan: every table block's checksum verified"
        ),
        Err(e) => {
            counters.corruption_detected.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "integrity scan found damage");
        }
    }
    counters.integrity_scan_done.store(1, Ordering::Relaxed);
}

fn snapshot_loop(
    rx: Receiver<SnapshotJob>,
    chain: ChainStore,
    cfg: MaintenanceConfig,
    counters: Arc<DurabilityCounters>,
    busy: Arc<AtomicBool>,
    prune: Option<SyncSender<CommitMeta>>,
) {
    while let Ok(SnapshotJob::Take { taken }) = rx.recv() {
        let mut written = None;
        let started = Instant::now();
        let r = chain.store().with_view(&mut |view| {
            let _ = taken.send(());
            let params = SnapshotParams {
                gc_depth_rounds: cfg.gc_depth_rounds,
                window_digests: cfg.included_window,
            };
            // A long write logs its progress (entries, bytes, rate) every
            // few seconds; a short one logs only its result below.
            let mut bar = crate::progress::Progress::log(
                "snapshot: writing",
                None,
                crate::progress::Unit::Count("entries"),
            );
            let written_now =
                write_snapshot_with_progress(view, &cfg.snapshot_dir, params, &mut |s| {
                    crate::progress::show_snapshot_pass(&mut bar, s)
                });
            drop(bar);
            match written_now {
                Ok(info) => written = Some(info),
                Err(e) => {
                    counters.snapshot_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "writing a snapshot failed");
                }
            }
            Ok(())
        });
        if let Err(e) = r {
            counters.snapshot_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "taking a snapshot view failed");
        }
        if let Some(info) = written {
            let ns = started.elapsed().as_nanos() as u64;
            counters.snapshots_written.fetch_add(1, Ordering::Relaxed);
            counters.snapshot_write_ns.fetch_add(ns, Ordering::Relaxed);
            counters.last_snapshot_write_ns.store(ns, Ordering::Relaxed);
            counters
                .last_snapshot_index
                .store(info.header.meta.index, Ordering::Relaxed);
            counters
                .last_snapshot_bytes
                .store(info.bytes, Ordering::Relaxed);
            tracing::info!(
                index = info.header.meta.index,
                entries = info.header.entries,
                bytes = info.bytes,
                seconds = ns as f64 / 1e9,
                path = %info.path.display(),
                "snapshot written"
            );
            if let Err(e) = retain_snapshots(&cfg.snapshot_dir, cfg.snapshots_kept) {
                tracing::warn!(error = %e, "removing old snapshots failed");
            }
            // The oldest kept snapshot moved: commits below it may go now.
            if let Some(tx) = &prune {
                if let Ok(Some(meta)) = chain.last_commit() {
                    let _ = tx.try_send(meta);
                }
            }
        }
        busy.store(false, Ordering::Release);
    }
}

/// The commit below which blocks, transactions and commit meta may go:
/// older than the retention, and not needed to replay from the oldest
/// kept snapshot (with snapshots on and none written yet: nothing goes).
pub fn commit_prune_floor(cfg: &MaintenanceConfig, last: u64, oldest_snapshot: Option<u64>) -> u64 {
    let by_retention = (last + 1).saturating_sub(cfg.retention_commits);
    if cfg.snapshot_every_commits == 0 {
        return by_retention;
    }
    match oldest_snapshot {
        Some(s) => by_retention.min(s + 1),
        None => 0,
    }
}

/// The round below which the consensus log may go: `margin` rounds below
/// the resume GC round of the last commit, never above this validator's
/// own last signed round, and never above the resume GC round of the
/// oldest kept snapshot (`oldest_snapshot_leader_round`, with snapshots
/// on): a validator joining from any kept snapshot, this node's or a peer's
/// of the same commit, fetches the blocks from there on from its peers.
pub fn consensus_prune_floor(
    cfg: &MaintenanceConfig,
    leader_round: u64,
    signed_round: u64,
    oldest_snapshot_leader_round: Option<u64>,
) -> u64 {
    let floor = leader_round
        .saturating_sub(cfg.gc_depth_rounds)
        .saturating_sub(cfg.consensus_log_margin_rounds)
        .min(signed_round);
    if cfg.snapshot_every_commits == 0 {
        return floor;
    }
    match oldest_snapshot_leader_round {
        Some(r) => floor.min(r.saturating_sub(cfg.gc_depth_rounds)),
        None => 0,
    }
}

fn prune_loop(
    rx: Receiver<CommitMeta>,
    chain: ChainStore,
    cfg: MaintenanceConfig,
    counters: Arc<DurabilityCounters>,
    signed_round: Arc<dyn Fn() -> u64 + Send + Sync>,
) {
    while let Ok(meta) = rx.recv() {
        let started = Instant::now();
        match prune_once(&chain, &cfg, &meta, signed_round()) {
            Ok(s) => {
                counters.prune_passes.fetch_add(1, Ordering::Relaxed);
                counters
                    .pruned_commits
                    .fetch_add(s.commits, Ordering::Relaxed);
                counters.pruned_txs.fetch_add(s.txs, Ordering::Relaxed);
                counters
                    .pruned_batches
                    .fetch_add(s.batches, Ordering::Relaxed);
            }
            Err(e) => {
                counters.prune_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "pruning failed");
            }
        }
        counters
            .prune_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        counters
            .commits_pruned_below
            .store(chain.commits_pruned_below().unwrap_or(0), Ordering::Relaxed);
        counters.consensus_pruned_below.store(
            chain.consensus_pruned_below().unwrap_or(0),
            Ordering::Relaxed,
        );
    }
}

/// One pruning pass after commit `meta`.
pub fn prune_once(
    chain: &ChainStore,
    cfg: &MaintenanceConfig,
    meta: &CommitMeta,
    signed_round: u64,
) -> Result<velox_storage::PruneStats, velox_storage::StoreError> {
    let snapshots = list_snapshots(&cfg.snapshot_dir);
    let oldest = snapshots.first().map(|s| s.0);
    let floor = commit_prune_floor(cfg, meta.index, oldest);
    let mut stats = chain.prune_commits_below(floor)?;
    if let Some(l) = meta.leader {
        // An unreadable oldest header (or one from before positions were
        // recorded) keeps the whole log: pruning waits for a good one.
        let oldest_round = snapshots
            .first()
            .and_then(|(_, p)| read_snapshot_header(p).ok())
            .and_then(|h| h.meta.leader)
            .map(|l| l.round);
        let round = consensus_prune_floor(cfg, l.round, signed_round, oldest_round);
        if round > 0 {
            let s = chain.prune_consensus_below(round)?;
            stats.batches += s.batches;
        }
    }
    stats.batch_lists += chain.prune_batch_lists(cfg.included_window)?.batch_lists;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(every: u64, retention: u64) -> MaintenanceConfig {
        MaintenanceConfig {
            snapshot_every_commits: every,
            snapshots_kept: 2,
            snapshot_dir: PathBuf::from("/nonexistent"),
            retention_commits: retention,
            consensus_log_margin_rounds: 50,
            gc_depth_rounds: 100,
            included_window: 1 << 20,
        }
    }

    #[test]
    fn floors_respect_retention_snapshots_and_own_rounds() {
        // Snapshots off: retention alone.
        assert_eq!(commit_prune_floor(&cfg(0, 100), 1000, None), 901);
        assert_eq!(commit_prune_floor(&cfg(0, 100), 50, None), 0);
        // Snapshots on: never past the oldest kept snapshot, nothing
        // before the first one.
        assert_eq!(commit_prune_floor(&cfg(500, 100), 1000, None), 0);
        assert_eq!(commit_prune_floor(&cfg(500, 100), 1000, Some(500)), 501);
        assert_eq!(commit_prune_floor(&cfg(500, 100), 1000, Some(950)), 901);
        // Consensus log: gc depth and margin below the leader, and never
        // above the own last signed round.
        assert_eq!(consensus_prune_floor(&cfg(0, 1), 1000, 2000, None), 850);
        assert_eq!(consensus_prune_floor(&cfg(0, 1), 1000, 700, None), 700);
        assert_eq!(consensus_prune_floor(&cfg(0, 1), 120, 2000, None), 0);
        // With snapshots on: never above the oldest snapshot's GC round,
        // and nothing before the first snapshot.
        assert_eq!(consensus_prune_floor(&cfg(10, 1), 1000, 2000, None), 0);
        assert_eq!(
            consensus_prune_floor(&cfg(10, 1), 1000, 2000, Some(500)),
            400
        );
        assert_eq!(
            consensus_prune_floor(&cfg(10, 1), 1000, 2000, Some(990)),
            850
        );
    }
}
