//! The parallel executor: Block-STM (Gelashvili et al., 2022).
//!
//! Transactions run optimistically on all workers against a *multi-version
//! memory* that holds, per key, the value written by each transaction index.
//! A transaction reads the highest version written below its own index (or
//! the pre-block state), and records which version it read. After it runs it
//! is *validated*: its reads are repeated; if any now resolves to a different
//! version, the incarnation is aborted, its writes become ESTIMATE markers and
//! it runs again with the next incarnation number. A read that hits an
//! ESTIMATE waits (the reader is parked on the writer's dependency list) for
//! the writer to finish re-executing instead of running on a value that is
//! known to be about to change.
//!
//! The result is exactly that of [`crate::seq::execute_sequential`]: the
//! preset order is the block order, and the last incarnation of every
//! transaction has read what its predecessors finally wrote.
//!
//! ```text
//!   next_claim(): validation_idx < execution_idx ? validate : execute, the
//!   next few indices at once (a claim; see `CLAIM_MAX`)
//!
//!   READY(inc) --try_incarnate--> EXECUTING(inc) --finish_execution--> EXECUTED(inc)
//!       ^                             |                                   |
//!       |  read hit ESTIMATE of j,    | add_dependency(j)                 | validation failed
//!       |  j not yet re-executed      v                                   v try_validation_abort
//!       +-------set_ready_status--- ABORTING(inc) <-----------------------+
//!                (inc + 1)
//! ```
//!
//! Invariants (checked by assertions where cheap):
//! - At most one incarnation of a transaction executes at a time (only a
//!   READY -> EXECUTING transition under the status lock starts one).
//! - Incarnation numbers of a transaction only grow; a validation task for an
//!   old incarnation cannot abort a newer one (`try_validation_abort` compares).
//! - `execution_idx` and `validation_idx` only move down through
//!   `decrease_*`, which bump `decrease_cnt`; `check_done` declares the block
//!   done only when both indices are past the end, no task is in flight and no
//!   decrease happened while it looked.
//! - When done, every key's highest entry is a write (no ESTIMATE is left),
//!   and every transaction's recorded outcome is that of its last, validated
//!   incarnation.
//!
//! Fallbacks: below `parallel_min_txs`, with one worker, when a cheap
//! estimate says one key is touched by too large a share of the block, on an
//! internal error (a read outside the transaction's declared keys, an
//! ESTIMATE left at the end) or when re-executions exceed their budget, the
//! block runs on the sequential executor instead; the reason is returned and
//! counted. The parallel phase never mutates the [`State`] before it has
//! succeeded, so a fallback starts from the untouched pre-block state.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use crate::effects::{declared_keys, tx_effects, TX_KEYS_MAX};
use crate::key_index::KeyIndex;
use crate::pool::{Fanout, SpinBarrier, WorkerPool};
use crate::reason::RejectReason;
use crate::seq::{execute_sequential, BlockOutput, ExecContext, Receipt};
use crate::smt::LeafBatch;
use crate::state::{shard_of, ShardMap, State, StateDiff, StateKey, StateValue, STATE_SHARDS};
use crate::tx::Tx;
use crate::verify::VerifiedTx;

/// Executor configuration (the node's `[exec]` section).
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// Worker threads per block, the calling thread included. More than the
    /// machine's cores only adds contention.
    pub exec_workers: usize,
    /// Blocks with fewer transactions run sequentially: waking the pool's
    /// workers and the block's tables cost about what 50-100 sequential
    /// transfers take, and small blocks have little to overlap.
    pub parallel_min_txs: usize,
    /// Run sequentially when the estimated share of the block's transactions
    /// that touch the single hottest key exceeds this: those transactions form
    /// one chain that Block-STM can only run one after another, with its
    /// bookkeeping on top, so the speedup is at most 1 / share. Only the
    /// hopeless cases are excluded here (at 0.5, half the block off the chain
    /// still measured 1.3x on 2 cores); the adaptive guard judges the rest by
    /// measured cost. 1.0 or more disables the estimate.
    pub hot_key_share_max: f64,
    /// Pin spawned workers to distinct cores.
    pub pin_workers: bool,
    /// The CPUs workers are pinned to, in worker order (worker `w` on
    /// `worker_cores[w % len]`; worker 0 is the calling thread, which keeps
    /// its own pinning). The node passes its layout's exec cores. Empty:
    /// the cores the thread that runs the first parallel block may use, if
    /// there are at least `exec_workers` of them; otherwise workers are
    /// not pinned (a caller pinned to one core would else get every worker
    /// on its own core).
    pub worker_cores: Vec<usize>,
    /// Run Block-STM even with one worker (tests use it; production should
    /// not, it is strictly slower than the sequential executor).
    pub parallel_with_one_worker: bool,
    /// Adaptive guard: eligible blocks (at least `parallel_min_txs`, no hot
    /// key) alternate between the paths until each has been timed on
    /// [`ADAPTIVE_SETTLE_SAMPLES`] blocks; then they take the path with the
    /// lower measured cost per transaction (median of each path's last
    /// [`COST_SAMPLES`] blocks), and every this-many eligible blocks take the
    /// other one to refresh its figure. Covers what the conflict
    /// estimate cannot see: too few free cores, workers sharing cores with
    /// other tiles. 0 disables it.
    pub adaptive_probe_every_blocks: u64,
    /// Abandon the parallel attempt (and run sequentially) when one worker has
    /// executed more than this many incarnations per transaction of the block.
    /// Block-STM always terminates; this bounds the time a pathological block
    /// can waste before the fallback. 0 forces the fallback (for tests).
    pub reexecutions_per_tx_max: usize,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            exec_workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            parallel_min_txs: 512,
            hot_key_share_max: 0.75,
            pin_workers: true,
            worker_cores: Vec::new(),
            parallel_with_one_worker: false,
            adaptive_probe_every_blocks: 16,
            reexecutions_per_tx_max: 16,
        }
    }
}

/// Why a block ran on the sequential executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SequentialReason {
    /// `exec_workers` is 1 (and `parallel_with_one_worker` is off).
    SingleWorker,
    /// Fewer than `parallel_min_txs` transactions.
    SmallBlock,
    /// The conflict estimate exceeded `hot_key_share_max`.
    HotKey,
    /// Parallel execution measured slower than sequential on recent blocks
    /// (or this block measures the sequential cost for the comparison).
    Adaptive,
    /// The re-execution budget ran out.
    ReexecutionBudget,
    /// The parallel executor found an internal inconsistency (a bug); the
    /// text says which.
    InternalError(&'static str),
}

impl SequentialReason {
    pub const COUNT: usize = 6;

    pub fn index(self) -> usize {
        match self {
            Self::SingleWorker => 0,
            Self::SmallBlock => 1,
            Self::HotKey => 2,
            Self::ReexecutionBudget => 3,
            Self::InternalError(_) => 4,
            Self::Adaptive => 5,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::SingleWorker => "single_worker",
            Self::SmallBlock => "small_block",
            Self::HotKey => "hot_key",
            Self::ReexecutionBudget => "reexecution_budget",
            Self::InternalError(_) => "internal_error",
            Self::Adaptive => "adaptive",
        }
    }

    pub const LABELS: [&'static str; Self::COUNT] = [
        "single_worker",
        "small_block",
        "hot_key",
        "reexecution_budget",
        "internal_error",
        "adaptive",
    ];
}

/// How a block was executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecPath {
    Parallel { workers: usize },
    Sequential(SequentialReason),
}

/// The phases of a parallel block, in order (see `run_block`): building the
/// key table, Block-STM execution and validation, final values and receipts,
/// writing the state maps, updating the commitment tree.
pub const PARALLEL_PHASES: [&str; 5] = ["key_table", "execute", "final_values", "apply", "commit"];

/// Counters, shared with whoever exports metrics. All relaxed atomics.
#[derive(Debug, Default)]
pub struct ExecMetrics {
    /// Transaction incarnations executed by the parallel executor.
    pub executions: AtomicU64,
    /// Incarnations after the first (aborts that led to a re-execution).
    pub reexecutions: AtomicU64,
    /// Read-set validations run.
    pub validations: AtomicU64,
    /// Validations that found a changed read and aborted the incarnation.
    pub validation_failures: AtomicU64,
    /// Executions suspended on an ESTIMATE marker.
    pub dependency_waits: AtomicU64,
    /// Blocks completed by the parallel executor.
    pub parallel_blocks: AtomicU64,
    /// Blocks run sequentially, indexed by [`SequentialReason::index`].
    pub sequential_blocks: [AtomicU64; SequentialReason::COUNT],
    /// Wall time of whole blocks (either path), sum in ns and count.
    pub block_exec_ns_sum: AtomicU64,
    pub block_exec_count: AtomicU64,
    /// Wall time of the parallel executor's phases (as seen by the calling
    /// worker, so waits for the slowest worker are included), summed over
    /// blocks that ran in parallel; indexed like [`PARALLEL_PHASES`].
    pub phase_ns: [AtomicU64; PARALLEL_PHASES.len()],
    /// The adaptive guard's cost estimates, ns per transaction (the median
    /// of each path's last [`COST_SAMPLES`] blocks; 0: not yet measured),
    /// and the count of blocks it has decided.
    pub seq_ns_per_tx: AtomicU64,
    pub par_ns_per_tx: AtomicU64,
    pub adaptive_blocks: AtomicU64,
    /// The adaptive guard's current preference (logged when it changes).
    pub adaptive_prefers_seq: AtomicBool,
    /// The guard has compared the paths at least once.
    adaptive_decided: AtomicBool,
    seq_samples: Mutex<CostSamples>,
    par_samples: Mutex<CostSamples>,
}

/// Blocks per path whose cost the adaptive guard's estimate is the median
/// of. A median, not a moving average: one block stretched by preemption
/// (common when cores are shared) would otherwise bias the estimate for
/// several probes, i.e. for dozens of blocks on the wrong path.
pub const COST_SAMPLES: usize = 5;

/// Blocks each path is timed on before the adaptive guard compares them:
/// a majority of [`COST_SAMPLES`], so the first comparison is already a
/// median that one outlier cannot move.
pub const ADAPTIVE_SETTLE_SAMPLES: usize = COST_SAMPLES / 2 + 1;

/// The last [`COST_SAMPLES`] costs of one path (a ring) and how many were
/// recorded.
#[derive(Debug, Default)]
struct CostSamples {
    ring: [u64; COST_SAMPLES],
    recorded: usize,
}

impl CostSamples {
    /// Forgets every sample.
    fn restart(&mut self) {
        self.recorded = 0;
    }

    /// Adds `sample`; returns the median of the samples held.
    fn record(&mut self, sample: u64) -> u64 {
        self.ring[self.recorded % COST_SAMPLES] = sample;
        self.recorded += 1;
        let mut held = self.ring;
        let held = &mut held[..self.recorded.min(COST_SAMPLES)];
        held.sort_unstable();
        held[held.len() / 2]
    }
}

impl ExecMetrics {
    pub fn sequential(&self, reason: SequentialReason) -> u64 {
        self.sequential_blocks[reason.index()].load(Ordering::Relaxed)
    }

    pub fn sequential_total(&self) -> u64 {
        self.sequential_blocks
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }
}

/// The parallel executor: configuration, metrics and its pool of
/// `exec_workers - 1` persistent worker threads (pinned when `pin_workers`;
/// the calling thread is worker 0), started by the first parallel block.
/// Blocks borrow their data to the workers; nothing is copied.
#[derive(Debug, Default)]
pub struct ParallelExecutor {
    pub config: ExecConfig,
    pub metrics: ExecMetrics,
    /// `None` inside when the threads could not be started: blocks then
    /// spawn their workers (slower, same result).
    pool: OnceLock<Option<WorkerPool>>,
}

/// Executes `txs` against `state` with `exec`; same output as
/// [`execute_sequential`].
pub fn execute_parallel(
    state: &mut State,
    txs: &[VerifiedTx],
    ctx: ExecContext,
    exec: &ParallelExecutor,
) -> BlockOutput {
    exec.execute(state, txs, ctx)
}

impl ParallelExecutor {
    pub fn new(config: ExecConfig) -> Self {
        Self {
            config,
            metrics: ExecMetrics::default(),
            pool: OnceLock::new(),
        }
    }

    /// The cores workers are pinned to (empty: not pinned).
    fn cores(&self) -> Vec<core_affinity::CoreId> {
        if !self.config.pin_workers {
            Vec::new()
        } else if self.config.worker_cores.is_empty() {
            let mine = core_affinity::get_core_ids().unwrap_or_default();
            if mine.len() >= self.config.exec_workers {
                mine
            } else {
                Vec::new()
            }
        } else {
            self.config
                .worker_cores
                .iter()
                .map(|&id| core_affinity::CoreId { id })
                .collect()
        }
    }

    /// Where this executor's blocks fan out: its pool, started on first use.
    fn fanout(&self) -> (Fanout<'_>, Vec<core_affinity::CoreId>) {
        let cores = self.cores();
        let pool = self.pool.get_or_init(|| {
            let threads = self.config.exec_workers.clamp(1, EXEC_WORKERS_MAX) - 1;
            match WorkerPool::new(threads, &cores) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "exec worker pool did not start; blocks spawn their workers");
                    None
                }
            }
        });
        (
            pool.as_ref().map_or(Fanout::Spawn(&[]), Fanout::Pool),
            cores,
        )
    }

    pub fn execute(&self, state: &mut State, txs: &[VerifiedTx], ctx: ExecContext) -> BlockOutput {
        self.execute_with_path(state, txs, ctx).0
    }

    /// Executes and also says which path ran and why.
    pub fn execute_with_path(
        &self,
        state: &mut State,
        txs: &[VerifiedTx],
        ctx: ExecContext,
    ) -> (BlockOutput, ExecPath) {
        let start = Instant::now();
        // The first parallel block also starts the pool (threads, their
        // first allocations): its cost says nothing about the next blocks',
        // so the adaptive guard does not count it.
        let pool_was_warm = self.pool.get().is_some();
        let workers = self.config.exec_workers.clamp(1, txs.len().max(1));
        let path = match self.choose(txs, workers) {
            Some(reason) => ExecPath::Sequential(reason),
            None => match self.run_parallel(state, txs, ctx, workers) {
                Ok(out) => {
                    self.metrics.parallel_blocks.fetch_add(1, Ordering::Relaxed);
                    if pool_was_warm {
                        let m = &self.metrics;
                        Self::record_cost(&m.par_samples, &m.par_ns_per_tx, start, txs.len());
                    }
                    self.finish(start);
                    return (out, ExecPath::Parallel { workers });
                }
                Err(reason) => ExecPath::Sequential(reason),
            },
        };
        let ExecPath::Sequential(reason) = path else {
            unreachable!()
        };
        match reason {
            SequentialReason::InternalError(what) => tracing::warn!(
                txs = txs.len(),
                what,
                "parallel execution found an inconsistency (a bug); block re-run on the sequential executor"
            ),
            SequentialReason::ReexecutionBudget => tracing::info!(
                txs = txs.len(),
                "parallel execution ran out of its re-execution budget; block re-run on the sequential executor"
            ),
            _ => tracing::debug!(
                txs = txs.len(),
                reason = reason.label(),
                "block runs on the sequential executor"
            ),
        }
        let out = execute_sequential(state, txs, ctx);
        if matches!(
            reason,
            SequentialReason::Adaptive | SequentialReason::HotKey
        ) {
            // Blocks the parallel path could have taken: comparable costs.
            let m = &self.metrics;
            Self::record_cost(&m.seq_samples, &m.seq_ns_per_tx, start, txs.len());
        }
        self.metrics.sequential_blocks[reason.index()].fetch_add(1, Ordering::Relaxed);
        self.finish(start);
        (out, path)
    }

    fn run_parallel(
        &self,
        state: &mut State,
        txs: &[VerifiedTx],
        ctx: ExecContext,
        workers: usize,
    ) -> Result<BlockOutput, SequentialReason> {
        let (fanout, cores) = self.fanout();
        let fanout = match fanout {
            Fanout::Spawn(_) => Fanout::Spawn(&cores),
            pool => pool,
        };
        let workers = workers.min(fanout.max_workers());
        run_block(
            state,
            txs,
            ctx,
            workers,
            fanout,
            &self.config,
            &self.metrics,
        )
    }

    fn finish(&self, start: Instant) {
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.metrics
            .block_exec_ns_sum
            .fetch_add(ns, Ordering::Relaxed);
        self.metrics
            .block_exec_count
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The reason to run `txs` sequentially, if any.
    fn choose(&self, txs: &[VerifiedTx], workers: usize) -> Option<SequentialReason> {
        if txs.len() < self.config.parallel_min_txs.max(1) {
            return Some(SequentialReason::SmallBlock);
        }
        if workers == 1 && !self.config.parallel_with_one_worker {
            return Some(SequentialReason::SingleWorker);
        }
        if self.config.hot_key_share_max < 1.0 {
            let hot = hottest_key_count(txs);
            if hot as f64 > self.config.hot_key_share_max * txs.len() as f64 {
                return Some(SequentialReason::HotKey);
            }
        }
        self.adaptive_choice()
    }

    /// The adaptive guard (see `ExecConfig::adaptive_probe_every_blocks`).
    fn adaptive_choice(&self) -> Option<SequentialReason> {
        let every = self.config.adaptive_probe_every_blocks;
        if every == 0 {
            return None;
        }
        let m = &self.metrics;
        let n = m.adaptive_blocks.fetch_add(1, Ordering::Relaxed);
        let seq = m.seq_ns_per_tx.load(Ordering::Relaxed);
        let par = m.par_ns_per_tx.load(Ordering::Relaxed);
        let timed_seq = lock(&m.seq_samples).recorded;
        let timed_par = lock(&m.par_samples).recorded;
        let use_seq = if timed_seq.min(timed_par) < ADAPTIVE_SETTLE_SAMPLES {
            // Settling: alternate until each path has a median of several
            // blocks, parallel first (its first block starts the pool and is
            // not timed). Deciding on one block each let one preempted block
            // keep a node on the slower path for dozens of blocks.
            timed_seq < timed_par
        } else {
            // The cheaper path, except every `every`-th block: the other.
            let prefer_seq = par > seq;
            let decided = m.adaptive_decided.swap(true, Ordering::Relaxed);
            let flipped = m.adaptive_prefers_seq.swap(prefer_seq, Ordering::Relaxed) != prefer_seq;
            if flipped {
                tracing::info!(
                    parallel_ns_per_tx = par,
                    sequential_ns_per_tx = seq,
                    "adaptive guard now prefers the {} executor",
                    if prefer_seq { "sequential" } else { "parallel" }
                );
            }
            if decided && flipped {
                // The estimates behind a switch are of different ages:
                // the preferred path's from the last few blocks, the
                // other's from probes up to 5 * `every` blocks old. A
                // burst of slow blocks on the preferred path (a busy
                // core) then switches, and the stale side is slow to
                // switch back (3 probes). Both paths are timed afresh.
                // Parallel first, as in the first settling.
                lock(&m.seq_samples).restart();
                lock(&m.par_samples).restart();
                false
            } else {
                prefer_seq != (n % every == every - 1)
            }
        };
        use_seq.then_some(SequentialReason::Adaptive)
    }

    /// Records one block's cost per transaction in `samples` and publishes
    /// the new estimate (their median) in `estimate`.
    fn record_cost(samples: &Mutex<CostSamples>, estimate: &AtomicU64, start: Instant, txs: usize) {
        let sample =
            (start.elapsed().as_nanos() / txs.max(1) as u128).clamp(1, u64::MAX as u128) as u64;
        let median = lock(samples).record(sample);
        estimate.store(median.max(1), Ordering::Relaxed);
    }
}

/// Buckets of the conflict estimate. 4096 u32 counters (16 KiB, zeroed per
/// block) keep bucket collisions rare for blocks of a few thousand keys.
const HOT_KEY_BUCKETS: usize = 1 << 12;
const _: () = assert!(HOT_KEY_BUCKETS.is_power_of_two());

/// An upper estimate of how many transactions touch the most-touched key:
/// keys are counted in buckets by two of their bytes, so collisions can only
/// raise the estimate (an adversary can force a sequential block, which is
/// correct, merely slower). A few ns per transaction.
pub fn hottest_key_count(txs: &[VerifiedTx]) -> u32 {
    let mut counts = vec![0u32; HOT_KEY_BUCKETS];
    let mut max = 0;
    for tx in txs {
        for k in declared_keys(tx).as_slice() {
            let (salt, b) = match k {
                StateKey::Account(id) => (0u16, &id.0),
                StateKey::Kv(b) => (0x9e37u16, b),
            };
            let i = (u16::from_le_bytes([b[0], b[1]]) ^ salt) as usize & (HOT_KEY_BUCKETS - 1);
            counts[i] += 1;
            max = max.max(counts[i]);
        }
    }
    max
}

// ---------------------------------------------------------------------------
// Multi-version memory.

/// Where a read was served from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// The pre-block state.
    Base,
    /// The write of incarnation `inc` of transaction `txn`.
    Version { txn: u32, inc: u32 },
}

#[derive(Clone, Copy, Debug)]
enum Entry {
    Write {
        inc: u32,
        value: StateValue,
    },
    /// The writer was aborted and is expected to write here again.
    Estimate,
}

enum MvRead {
    Base,
    Version {
        txn: u32,
        inc: u32,
        value: StateValue,
    },
    Dependency(u32),
}

/// A transaction's reads: (key id, origin), at most [`TX_KEYS_MAX`].
#[derive(Clone, Copy, Debug, Default)]
struct ReadSet {
    len: u8,
    items: [(u32, Option<Origin>); TX_KEYS_MAX],
}

impl ReadSet {
    fn push(&mut self, kid: u32, o: Origin) -> Result<(), Stop> {
        let slot = self
            .items
            .get_mut(self.len as usize)
            .ok_or(Stop::Internal("read set overflow"))?;
        *slot = (kid, Some(o));
        self.len += 1;
        Ok(())
    }
    fn iter(&self) -> impl Iterator<Item = (u32, Origin)> + '_ {
        self.items[..self.len as usize]
            .iter()
            .map(|(k, o)| (*k, o.expect("pushed")))
    }
}

/// What the last recorded incarnation of a transaction did.
#[derive(Clone, Copy, Debug, Default)]
struct TxnRecord {
    reads: ReadSet,
    /// Key ids written, `nwrites` of them.
    writes: [u32; TX_KEYS_MAX],
    nwrites: u8,
    /// `None` until the first incarnation is recorded.
    outcome: Option<Result<(), RejectReason>>,
}

impl TxnRecord {
    fn writes(&self) -> &[u32] {
        &self.writes[..self.nwrites as usize]
    }
}

/// Why an execution stopped before producing effects.
enum Stop {
    Dependency(u32),
    Internal(&'static str),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a worker panicked; in the node that aborted
    // the process already (its panic hook, decision 0008), in tests the
    // panic propagates.
    m.lock().expect("exec lock poisoned")
}

/// The versions of one key, sorted by transaction index. Most keys of a block
/// are written by one transaction: that version is stored inline, so neither
/// building nor dropping the multi-version memory allocates per key.
#[derive(Debug)]
enum Versions {
    Inline(Option<(u32, Entry)>),
    Heap(Vec<(u32, Entry)>),
}

impl Default for Versions {
    fn default() -> Self {
        Versions::Inline(None)
    }
}

impl std::ops::Deref for Versions {
    type Target = [(u32, Entry)];
    fn deref(&self) -> &Self::Target {
        match self {
            Versions::Inline(e) => e.as_slice(),
            Versions::Heap(v) => v,
        }
    }
}

impl std::ops::DerefMut for Versions {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Versions::Inline(e) => e.as_mut_slice(),
            Versions::Heap(v) => v,
        }
    }
}

impl Versions {
    fn insert(&mut self, pos: usize, e: (u32, Entry)) {
        match self {
            Versions::Inline(None) => *self = Versions::Inline(Some(e)),
            Versions::Inline(Some(x)) => {
                let mut v = Vec::with_capacity(4);
                v.push(*x);
                v.insert(pos, e);
                *self = Versions::Heap(v);
            }
            Versions::Heap(v) => v.insert(pos, e),
        }
    }

    fn remove(&mut self, pos: usize) {
        match self {
            Versions::Inline(e) => {
                assert!(pos == 0 && e.is_some(), "removing a missing version");
                *e = None;
            }
            Versions::Heap(v) => {
                v.remove(pos);
            }
        }
    }
}

/// One key's entry in the multi-version memory: its versions and its
/// pre-block value side by side, so a read that falls through to the
/// pre-block value touches one place (the line usually comes from another
/// worker's cache: keys belong to the worker owning their shard).
struct Slot {
    /// Versions sorted by transaction index.
    versions: Mutex<Versions>,
    /// The value before the block (read once, while the table is built, so
    /// execution never looks into the state maps).
    base: Option<StateValue>,
}

/// The keys of the state shards one worker owns, with their slots.
struct Part {
    keys: Vec<StateKey>,
    slots: Vec<Slot>,
}

/// A key id is `part << LOCAL_BITS | index within the part`.
const LOCAL_BITS: u32 = 24;
const LOCAL_MASK: u32 = (1 << LOCAL_BITS) - 1;
/// Most workers: the part number must fit in the id's high bits.
pub const EXEC_WORKERS_MAX: usize = 64;
const _: () = assert!(EXEC_WORKERS_MAX << LOCAL_BITS <= u32::MAX as usize);

/// Worker `w`'s share of `0..n` in `workers` contiguous chunks.
fn chunk(n: usize, workers: usize, w: usize) -> Range<usize> {
    let per = n.div_ceil(workers);
    (w * per).min(n)..((w + 1) * per).min(n)
}

/// Multi-version memory. The key table is built in parallel before
/// execution: worker `w` indexes the keys of the state shards
/// `chunk(STATE_SHARDS, workers, w)` (part `w`), so it can later compute
/// those keys' final values and apply them to exactly those shards.
struct MvMemory {
    parts: Vec<OnceLock<Part>>,
    /// Per transaction: the key ids of its declared keys, in declared order.
    /// Written (relaxed) while parts are built, read after a barrier.
    tx_ids: Vec<[AtomicU32; TX_KEYS_MAX]>,
    records: Vec<Mutex<TxnRecord>>,
}

impl MvMemory {
    fn new(n: usize, workers: usize) -> Self {
        Self {
            parts: (0..workers).map(|_| OnceLock::new()).collect(),
            tx_ids: (0..n)
                .map(|_| [AtomicU32::new(u32::MAX), AtomicU32::new(u32::MAX)])
                .collect(),
            records: (0..n).map(|_| Mutex::new(TxnRecord::default())).collect(),
        }
    }

    /// Builds part `w`: indexes every declared key of the block that lives in
    /// the shards `w` owns (`maps`, the first of which is shard `first`),
    /// with its value there.
    fn build_part(
        &self,
        txs: &[VerifiedTx],
        w: usize,
        maps: &[ShardMap],
        first: usize,
    ) -> Result<(), SequentialReason> {
        let shards = first..first + maps.len();
        let expect = txs.len() * TX_KEYS_MAX * shards.len() / STATE_SHARDS + 16;
        let mut index = KeyIndex::with_capacity(expect);
        for (i, tx) in txs.iter().enumerate() {
            for (slot, k) in declared_keys(tx).as_slice().iter().enumerate() {
                if !shards.contains(&shard_of(k)) {
                    continue;
                }
                let local = index
                    .id_or_insert(k)
                    .filter(|&id| id <= LOCAL_MASK)
                    .ok_or(SequentialReason::InternalError("too many keys in one part"))?;
                self.tx_ids[i][slot].store(((w as u32) << LOCAL_BITS) | local, Ordering::Relaxed);
            }
        }
        let keys = index.into_keys();
        let slots = keys
            .iter()
            .map(|k| Slot {
                versions: Mutex::new(Versions::default()),
                base: maps[shard_of(k) - first].get(k).copied(),
            })
            .collect();
        self.parts[w]
            .set(Part { keys, slots })
            .map_err(|_| SequentialReason::InternalError("part built twice"))
    }

    fn part(&self, w: usize) -> &Part {
        self.parts[w]
            .get()
            .expect("parts are built before the barrier")
    }

    fn slot(&self, kid: u32) -> &Slot {
        &self.part((kid >> LOCAL_BITS) as usize).slots[(kid & LOCAL_MASK) as usize]
    }

    fn versions(&self, kid: u32) -> &Mutex<Versions> {
        &self.slot(kid).versions
    }

    /// The pre-block value of `kid`.
    fn base(&self, kid: u32) -> Option<StateValue> {
        self.slot(kid).base
    }

    fn key_id(&self, txn: u32, tx: &Tx, k: &StateKey) -> Result<u32, Stop> {
        let decl = declared_keys(tx);
        let slot = decl
            .as_slice()
            .iter()
            .position(|d| d == k)
            .ok_or(Stop::Internal("read outside declared keys"))?;
        Ok(self.tx_ids[txn as usize][slot].load(Ordering::Relaxed))
    }

    /// The version of `kid` that transaction `txn` reads: the highest write
    /// below `txn`.
    fn read(&self, kid: u32, txn: u32) -> MvRead {
        let v = lock(self.versions(kid));
        let pos = v.partition_point(|(t, _)| *t < txn);
        match pos.checked_sub(1).map(|p| v[p]) {
            None => MvRead::Base,
            Some((t, Entry::Write { inc, value })) => MvRead::Version { txn: t, inc, value },
            Some((t, Entry::Estimate)) => MvRead::Dependency(t),
        }
    }

    /// Records incarnation `inc` of `txn`; returns whether it wrote a key its
    /// previous incarnation did not (validations above it must then restart).
    fn record(
        &self,
        tx: &Tx,
        txn: u32,
        inc: u32,
        reads: ReadSet,
        outcome: Result<crate::effects::Writes, RejectReason>,
    ) -> Result<bool, Stop> {
        let mut new = [0u32; TX_KEYS_MAX];
        let mut nnew = 0;
        if let Ok(writes) = &outcome {
            for &(k, value) in writes.as_slice() {
                let kid = self.key_id(txn, tx, &k)?;
                new[nnew] = kid;
                nnew += 1;
                let mut v = lock(self.versions(kid));
                let pos = v.partition_point(|(t, _)| *t < txn);
                let e = Entry::Write { inc, value };
                match v.get_mut(pos) {
                    Some(slot) if slot.0 == txn => slot.1 = e,
                    _ => v.insert(pos, (txn, e)),
                }
            }
        }
        let new = &new[..nnew];
        let prev = *lock(&self.records[txn as usize]);
        for &kid in prev.writes() {
            if !new.contains(&kid) {
                let mut v = lock(self.versions(kid));
                let pos = v.partition_point(|(t, _)| *t < txn);
                if v.get(pos).map(|e| e.0) != Some(txn) {
                    return Err(Stop::Internal("previous write missing"));
                }
                v.remove(pos);
            }
        }
        let wrote_new = new.iter().any(|k| !prev.writes().contains(k));
        let mut rec = lock(&self.records[txn as usize]);
        rec.reads = reads;
        rec.writes[..nnew].copy_from_slice(new);
        rec.nwrites = nnew as u8;
        rec.outcome = Some(outcome.map(|_| ()));
        Ok(wrote_new)
    }

    /// Replaces the writes of an aborted incarnation with ESTIMATE markers.
    fn convert_writes_to_estimates(&self, txn: u32) -> Result<(), Stop> {
        let rec = *lock(&self.records[txn as usize]);
        for &kid in rec.writes() {
            let mut v = lock(self.versions(kid));
            let pos = v.partition_point(|(t, _)| *t < txn);
            match v.get_mut(pos) {
                Some(slot) if slot.0 == txn => slot.1 = Entry::Estimate,
                _ => return Err(Stop::Internal("aborted write missing")),
            }
        }
        Ok(())
    }

    /// True if every read of `txn`'s last incarnation would read the same
    /// version now.
    fn validate_read_set(&self, txn: u32) -> bool {
        let reads = lock(&self.records[txn as usize]).reads;
        let valid = reads
            .iter()
            .all(|(kid, origin)| match (self.read(kid, txn), origin) {
                (MvRead::Base, Origin::Base) => true,
                (MvRead::Version { txn: t, inc, .. }, Origin::Version { txn: ot, inc: oi }) => {
                    t == ot && inc == oi
                }
                _ => false,
            });
        valid
    }
}

// ---------------------------------------------------------------------------
// The collaborative scheduler.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    ReadyToExecute,
    Executing,
    Executed,
    Aborting,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Task {
    Execute { txn: u32, inc: u32 },
    Validate { txn: u32, inc: u32 },
}

/// Consecutive indices claimed by one worker with one atomic increment.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Claim {
    Execute(Range<usize>),
    Validate(Range<usize>),
}

impl Claim {
    fn range(&self) -> Range<usize> {
        match self {
            Claim::Execute(r) | Claim::Validate(r) => r.clone(),
        }
    }
}

/// Indices per claim at most. Claiming one index at a time (the paper's
/// scheduler) costs two contended atomic increments per task, which on
/// ~0.5 us transactions cost as much as the transactions; a claim of 16
/// pays them once per 16. Smaller claims near a block's size keep all
/// workers busy to the end (see `Scheduler::new`).
const CLAIM_MAX: usize = 16;

/// Keeps a hot shared counter on its own cache line (128 bytes: adjacent-line
/// prefetch pairs lines on x86), so workers bumping one do not invalidate
/// the others.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

struct Scheduler {
    n: usize,
    /// Next transaction to try to execute; only decreased by
    /// `decrease_execution_idx`.
    execution_idx: Padded<AtomicUsize>,
    /// Next transaction to validate; only decreased by
    /// `decrease_validation_idx`.
    validation_idx: Padded<AtomicUsize>,
    /// Bumped by every decrease, so `check_done` can see one happen.
    decrease_cnt: Padded<AtomicUsize>,
    /// Claims handed out and not yet finished (each covers its tasks and
    /// their follow-ups).
    num_active_tasks: Padded<AtomicUsize>,
    /// Indices per claim.
    claim: usize,
    /// Indices below the execution index that validation claims leave to
    /// their executors while executions remain (`next_claim`).
    in_flight: usize,
    done: Padded<AtomicBool>,
    /// (incarnation, status) per transaction.
    status: Vec<Mutex<(u32, Status)>>,
    /// Transactions waiting for each transaction to finish executing.
    dependencies: Vec<Mutex<Vec<u32>>>,
}

// SeqCst everywhere: the done check reasons about several counters at once.
const ORD: Ordering = Ordering::SeqCst;

impl Scheduler {
    fn new(n: usize, workers: usize) -> Self {
        let claim = (n / (workers * 32)).clamp(1, CLAIM_MAX);
        Self {
            n,
            execution_idx: Padded(AtomicUsize::new(0)),
            validation_idx: Padded(AtomicUsize::new(0)),
            decrease_cnt: Padded(AtomicUsize::new(0)),
            num_active_tasks: Padded(AtomicUsize::new(0)),
            claim,
            in_flight: claim * workers,
            done: Padded(AtomicBool::new(false)),
            status: (0..n)
                .map(|_| Mutex::new((0, Status::ReadyToExecute)))
                .collect(),
            dependencies: (0..n).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    fn done(&self) -> bool {
        self.done.load(ORD)
    }

    fn halt(&self) {
        self.done.store(true, ORD);
    }

    fn decrease_execution_idx(&self, target: usize) {
        self.execution_idx.fetch_min(target, ORD);
        self.decrease_cnt.fetch_add(1, ORD);
    }

    fn decrease_validation_idx(&self, target: usize) {
        self.validation_idx.fetch_min(target, ORD);
        self.decrease_cnt.fetch_add(1, ORD);
    }

    fn check_done(&self) {
        let observed = self.decrease_cnt.load(ORD);
        let e = self.execution_idx.load(ORD);
        let v = self.validation_idx.load(ORD);
        if e.min(v) >= self.n
            && self.num_active_tasks.load(ORD) == 0
            && observed == self.decrease_cnt.load(ORD)
        {
            self.done.store(true, ORD);
        }
    }

    /// READY -> EXECUTING.
    fn try_incarnate(&self, txn: usize) -> Option<u32> {
        let mut s = lock(&self.status[txn]);
        if s.1 == Status::ReadyToExecute {
            s.1 = Status::Executing;
            Some(s.0)
        } else {
            None
        }
    }

    /// Claims the next `self.claim` indices of `idx` (the execution or the
    /// validation index). The claim counts as one active task until
    /// [`Scheduler::end_claim`]: every task started for its indices, and
    /// every follow-up task, runs under that one count.
    fn claim(&self, idx: &AtomicUsize) -> Option<Range<usize>> {
        if idx.load(ORD) >= self.n {
            self.check_done();
            return None;
        }
        self.num_active_tasks.fetch_add(1, ORD);
        let start = idx.fetch_add(self.claim, ORD);
        if start >= self.n {
            self.num_active_tasks.fetch_sub(1, ORD);
            return None;
        }
        Some(start..(start + self.claim).min(self.n))
    }

    fn end_claim(&self) {
        self.num_active_tasks.fetch_sub(1, ORD);
    }

    /// The next batch of work: validations while the validation index is
    /// behind the execution index, executions otherwise; except that the
    /// last `in_flight` indices claimed for execution are left to their
    /// executors (see [`Scheduler::claim_own_validation`]) while there is
    /// still something to execute.
    ///
    /// Why: a validation claim that reaches indices still executing on
    /// another worker skips them, and each of those, when it finishes,
    /// lowers the validation index again (its first incarnation wrote new
    /// keys), so everything above is validated twice; and validating
    /// another worker's transactions pulls their records and versions
    /// across cores. On 2 cores this made the execution phase slower on 2
    /// workers than on 1 (3.5 ms against 2.0 for 8,192 transfers, ~10,000
    /// validations for 8,192 transactions). Any order of tasks is correct;
    /// this only picks a cheaper one.
    fn next_claim(&self) -> Option<Claim> {
        let v = self.validation_idx.load(ORD);
        let e = self.execution_idx.load(ORD);
        if v < e && (e >= self.n || v + self.in_flight < e) {
            self.claim(&self.validation_idx).map(Claim::Validate)
        } else {
            self.claim(&self.execution_idx).map(Claim::Execute)
        }
    }

    /// After executing the claim `range`: claims its validation too if the
    /// validation index is at its start (the common case without
    /// conflicts), so that the worker whose cache holds the transactions'
    /// records and versions validates them. The caller keeps the execution
    /// claim's active count for it.
    fn claim_own_validation(&self, range: &Range<usize>) -> Option<Claim> {
        self.validation_idx
            .compare_exchange(range.start, range.end, ORD, ORD)
            .ok()
            .map(|_| Claim::Validate(range.clone()))
    }

    /// The task a claimed index starts: executing it if it is ready,
    /// validating it if it has executed; nothing otherwise (another worker
    /// has it, or it waits on a dependency).
    fn claimed_task(&self, claim: &Claim, txn: usize) -> Option<Task> {
        match claim {
            Claim::Execute(_) => self.try_incarnate(txn).map(|inc| Task::Execute {
                txn: txn as u32,
                inc,
            }),
            Claim::Validate(_) => {
                let (inc, status) = *lock(&self.status[txn]);
                (status == Status::Executed).then_some(Task::Validate {
                    txn: txn as u32,
                    inc,
                })
            }
        }
    }

    /// Parks `txn` until `blocking` finishes executing. False if `blocking`
    /// already has (the caller re-executes at once).
    fn add_dependency(&self, txn: u32, blocking: u32) -> bool {
        let mut deps = lock(&self.dependencies[blocking as usize]);
        if lock(&self.status[blocking as usize]).1 == Status::Executed {
            return false;
        }
        {
            let mut s = lock(&self.status[txn as usize]);
            assert_eq!(s.1, Status::Executing, "only an executing txn waits");
            s.1 = Status::Aborting;
        }
        deps.push(txn);
        true
    }

    /// ABORTING(inc) -> READY(inc + 1).
    fn set_ready_status(&self, txn: usize) {
        let mut s = lock(&self.status[txn]);
        assert_eq!(
            s.1,
            Status::Aborting,
            "only an aborted txn becomes ready again"
        );
        *s = (s.0 + 1, Status::ReadyToExecute);
    }

    fn finish_execution(&self, txn: u32, inc: u32, wrote_new: bool) -> Option<Task> {
        {
            let mut s = lock(&self.status[txn as usize]);
            assert_eq!(
                *s,
                (inc, Status::Executing),
                "finishing the running incarnation"
            );
            s.1 = Status::Executed;
        }
        let deps = std::mem::take(&mut *lock(&self.dependencies[txn as usize]));
        if let Some(&min) = deps.iter().min() {
            for &d in &deps {
                self.set_ready_status(d as usize);
            }
            self.decrease_execution_idx(min as usize);
        }
        if self.validation_idx.load(ORD) > txn as usize {
            if wrote_new {
                self.decrease_validation_idx(txn as usize);
            } else {
                return Some(Task::Validate { txn, inc });
            }
        }
        None
    }

    /// EXECUTED(inc) -> ABORTING(inc) if `inc` is still the latest.
    fn try_validation_abort(&self, txn: u32, inc: u32) -> bool {
        let mut s = lock(&self.status[txn as usize]);
        if *s == (inc, Status::Executed) {
            s.1 = Status::Aborting;
            true
        } else {
            false
        }
    }

    fn finish_validation(&self, txn: u32, aborted: bool) -> Option<Task> {
        if aborted {
            self.set_ready_status(txn as usize);
            self.decrease_validation_idx(txn as usize + 1);
            if self.execution_idx.load(ORD) > txn as usize {
                if let Some(inc) = self.try_incarnate(txn as usize) {
                    return Some(Task::Execute { txn, inc });
                }
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------
// One block.

/// Per-worker counters, added to the shared metrics once per block.
#[derive(Default)]
struct Local {
    executions: u64,
    reexecutions: u64,
    validations: u64,
    validation_failures: u64,
    dependency_waits: u64,
}

impl Local {
    fn add_to(&self, m: &ExecMetrics) {
        for (sum, n) in [
            (&m.executions, self.executions),
            (&m.reexecutions, self.reexecutions),
            (&m.validations, self.validations),
            (&m.validation_failures, self.validation_failures),
            (&m.dependency_waits, self.dependency_waits),
        ] {
            sum.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Failed task fetches before an idle worker yields its core: ~1-2 us of
/// spinning, shorter than a typical task.
const IDLE_SPINS_BEFORE_YIELD: u32 = 64;

struct BlockRun<'a> {
    txs: &'a [VerifiedTx],
    ctx: ExecContext,
    mv: MvMemory,
    sched: Scheduler,
    /// First internal error or budget overrun; set once, then `sched.halt()`.
    failure: Mutex<Option<SequentialReason>>,
    executions_per_worker_max: u64,
}

impl BlockRun<'_> {
    fn fail(&self, reason: SequentialReason) {
        lock(&self.failure).get_or_insert(reason);
        self.sched.halt();
    }

    fn work(&self, local: &mut Local) {
        let mut idle_spins = 0u32;
        while !self.sched.done() {
            let Some(claim) = self.sched.next_claim() else {
                // Nothing to claim until another worker finishes a task.
                // Spin briefly, then yield: with more workers than free
                // cores a spinner would delay the worker it waits for.
                idle_spins += 1;
                if idle_spins < IDLE_SPINS_BEFORE_YIELD {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            };
            idle_spins = 0;
            let mut claim = Some(claim);
            while let Some(c) = claim.take() {
                if let Err(reason) = self.run_claim(&c, local) {
                    self.sched.end_claim();
                    return self.fail(reason);
                }
                if let Claim::Execute(range) = &c {
                    claim = self.sched.claim_own_validation(range);
                }
            }
            self.sched.end_claim();
        }
    }

    /// Runs the tasks `claim`'s indices start, and their follow-ups.
    fn run_claim(&self, claim: &Claim, local: &mut Local) -> Result<(), SequentialReason> {
        for txn in claim.range() {
            let mut task = self.sched.claimed_task(claim, txn);
            while let Some(t) = task {
                task = match t {
                    Task::Execute { txn, inc } => self.try_execute(txn, inc, local)?,
                    Task::Validate { txn, inc } => self.validate(txn, inc, local)?,
                };
            }
        }
        Ok(())
    }

    fn try_execute(
        &self,
        txn: u32,
        inc: u32,
        local: &mut Local,
    ) -> Result<Option<Task>, SequentialReason> {
        loop {
            local.executions += 1;
            if inc > 0 {
                local.reexecutions += 1;
            }
            if local.executions > self.executions_per_worker_max {
                return Err(SequentialReason::ReexecutionBudget);
            }
            let mut reads = ReadSet::default();
            let tx = &self.txs[txn as usize];
            let effects = tx_effects(tx, self.ctx, &mut |k: &StateKey| {
                let kid = self.mv.key_id(txn, tx, k)?;
                match self.mv.read(kid, txn) {
                    MvRead::Dependency(j) => Err(Stop::Dependency(j)),
                    MvRead::Version {
                        txn: j,
                        inc: ji,
                        value,
                    } => {
                        reads.push(kid, Origin::Version { txn: j, inc: ji })?;
                        Ok(Some(value))
                    }
                    MvRead::Base => {
                        reads.push(kid, Origin::Base)?;
                        Ok(self.mv.base(kid))
                    }
                }
            });
            match effects {
                Ok(outcome) => {
                    let wrote_new = self
                        .mv
                        .record(tx, txn, inc, reads, outcome)
                        .map_err(internal)?;
                    return Ok(self.sched.finish_execution(txn, inc, wrote_new));
                }
                Err(Stop::Dependency(j)) => {
                    if self.sched.add_dependency(txn, j) {
                        local.dependency_waits += 1;
                        return Ok(None);
                    }
                    // `j` finished meanwhile: run again at once.
                }
                Err(Stop::Internal(e)) => return Err(SequentialReason::InternalError(e)),
            }
        }
    }

    fn validate(
        &self,
        txn: u32,
        inc: u32,
        local: &mut Local,
    ) -> Result<Option<Task>, SequentialReason> {
        local.validations += 1;
        let valid = self.mv.validate_read_set(txn);
        let aborted = !valid && self.sched.try_validation_abort(txn, inc);
        if aborted {
            local.validation_failures += 1;
            self.mv.convert_writes_to_estimates(txn).map_err(internal)?;
        }
        Ok(self.sched.finish_validation(txn, aborted))
    }

    /// Final values of part `w`'s keys (normalized; accounts and counters
    /// each sorted by key) and the keys whose value changed.
    fn final_writes(&self, w: usize) -> Result<FinalWrites, SequentialReason> {
        let part = self.mv.part(w);
        let mut fw = FinalWrites::default();
        fw.accounts.reserve(part.keys.len());
        for (key, Slot { versions, base }) in part.keys.iter().zip(&part.slots) {
            let v = lock(versions);
            let Some(&(_, last)) = v.last() else { continue };
            let Entry::Write { value, .. } = last else {
                return Err(SequentialReason::InternalError("estimate left at the end"));
            };
            let new = StateValue::normalize(Some(value));
            // Written back unchanged: in the diff (sequential execution
            // reports every written key), no change to the commitment.
            if *base != new {
                fw.changed.push((*key, new));
            }
            match key {
                StateKey::Account(_) => fw.accounts.push((*key, new)),
                StateKey::Kv(_) => fw.counters.push((*key, new)),
            }
        }
        fw.accounts.sort_unstable_by_key(|e| e.0);
        fw.counters.sort_unstable_by_key(|e| e.0);
        Ok(fw)
    }

    fn receipts(&self, txns: Range<usize>) -> Result<Vec<Receipt>, SequentialReason> {
        txns.map(|i| {
            let outcome = lock(&self.mv.records[i])
                .outcome
                .ok_or(SequentialReason::InternalError("unexecuted tx"))?;
            Ok(Receipt {
                digest: self.txs[i].digest(),
                outcome,
            })
        })
        .collect()
    }
}

fn internal(s: Stop) -> SequentialReason {
    match s {
        Stop::Internal(e) => SequentialReason::InternalError(e),
        Stop::Dependency(_) => SequentialReason::InternalError("dependency outside execution"),
    }
}

/// Times the phases of one parallel block ([`PARALLEL_PHASES`]).
struct PhaseClock {
    last: Instant,
    ns: [u64; PARALLEL_PHASES.len()],
    next: usize,
}

impl PhaseClock {
    fn start() -> Self {
        Self {
            last: Instant::now(),
            ns: [0; PARALLEL_PHASES.len()],
            next: 0,
        }
    }

    /// Ends the current phase at `at`.
    fn lap_at(&mut self, at: Instant) {
        let d = at.saturating_duration_since(self.last);
        if let Some(slot) = self.ns.get_mut(self.next) {
            *slot = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        }
        self.next += 1;
        self.last = at;
    }

    fn lap(&mut self) {
        self.lap_at(Instant::now());
    }

    fn add_to(&self, sums: &[AtomicU64; PARALLEL_PHASES.len()]) {
        debug_assert_eq!(self.next, PARALLEL_PHASES.len(), "every phase timed");
        for (sum, ns) in sums.iter().zip(self.ns) {
            sum.fetch_add(ns, Ordering::Relaxed);
        }
    }
}

type DiffEntries = Vec<(StateKey, Option<StateValue>)>;

/// One worker's share of the block's result.
#[derive(Default)]
struct FinalWrites {
    accounts: DiffEntries,
    counters: DiffEntries,
    /// Keys whose value differs from the pre-block state, with that value.
    changed: DiffEntries,
}

type WorkerResult = Result<(FinalWrites, Vec<Receipt>), SequentialReason>;

/// Writes the changed keys of `fw` to the state maps `maps` (the first of
/// which is shard `first`; values are normalized) and adds them to `leaves`
/// for the tree.
fn apply_part(maps: &mut [ShardMap], first: usize, fw: &FinalWrites, leaves: &mut LeafBatch) {
    for (k, v) in &fw.changed {
        let map = &mut maps[shard_of(k) - first];
        match v {
            Some(v) => {
                map.insert(*k, *v);
            }
            None => {
                map.remove(k);
            }
        }
        leaves.push(*k, v.as_ref());
    }
}

/// Hands each worker its share once (`take` by worker index).
fn handed_out<T>(items: impl IntoIterator<Item = T>) -> Vec<Mutex<Option<T>>> {
    items.into_iter().map(|t| Mutex::new(Some(t))).collect()
}

fn take_share<T>(shares: &[Mutex<Option<T>>], w: usize) -> T {
    lock(&shares[w]).take().expect("one share per worker")
}

/// Runs Block-STM on `workers` workers of `fanout` (the caller is worker 0).
/// On success applies the block to `state` and returns the output; on
/// failure `state` is untouched.
///
/// One fan-out; worker `w` owns the state shards `chunk(STATE_SHARDS,
/// workers, w)` throughout (part `w`). Phases, separated by barriers:
/// 1. key table: worker `w` indexes its shards' keys and reads their
///    pre-block values (execution never touches the maps);
/// 2. Block-STM execution and validation until the scheduler is done;
/// 3. final values of part `w`'s keys, which of them changed, receipts of
///    transaction chunk `w` (a failure here still leaves the state as it
///    was: nothing is written before the next barrier);
/// 4. worker `w` writes its changed keys to its shards and hashes their tree
///    leaves;
/// 5. worker `w` updates tree shard set `w` with every worker's leaves; the
///    caller then recombines the top of the tree.
fn run_block(
    state: &mut State,
    txs: &[VerifiedTx],
    ctx: ExecContext,
    workers: usize,
    fanout: Fanout<'_>,
    config: &ExecConfig,
    metrics: &ExecMetrics,
) -> Result<BlockOutput, SequentialReason> {
    let workers = workers.min(EXEC_WORKERS_MAX);
    // Phase times on worker 0 (the caller); the key table's includes
    // allocating the block's tables.
    let mut clock = PhaseClock::start();
    let run = BlockRun {
        txs,
        ctx,
        mv: MvMemory::new(txs.len(), workers),
        sched: Scheduler::new(txs.len(), workers),
        failure: Mutex::new(None),
        executions_per_worker_max: (txs.len() as u64)
            .saturating_mul(config.reexecutions_per_tx_max as u64),
    };
    let barrier = SpinBarrier::new(workers);
    let (maps, tree) = state.block_parts();
    let map_shares = {
        let mut rest = maps;
        handed_out((0..workers).map(|w| {
            let range = chunk(STATE_SHARDS, workers, w);
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(range.len());
            rest = tail;
            (mine, range.start)
        }))
    };
    let tree_sets = tree.shard_sets(workers);
    let leaves: Vec<OnceLock<LeafBatch>> = (0..workers).map(|_| OnceLock::new()).collect();
    let phase_ends: [OnceLock<Instant>; PARALLEL_PHASES.len() - 1] = Default::default();
    // Worker 0 notes when each phase ended, after its barrier.
    let phase_done = |w: usize, phase: usize| {
        barrier.wait();
        if w == 0 {
            let _ = phase_ends[phase].set(Instant::now());
        }
    };
    let results = fanout.run(workers, |w| -> WorkerResult {
        let (maps, first) = take_share(&map_shares, w);
        if let Err(reason) = run.mv.build_part(txs, w, maps, first) {
            run.fail(reason);
        }
        phase_done(w, 0);
        let mut local = Local::default();
        if lock(&run.failure).is_none() {
            run.work(&mut local);
        }
        local.add_to(metrics);
        phase_done(w, 1);
        // Whatever the outcome, every worker goes on to the next barrier: a
        // failure set here by a faster worker must not make a slower one
        // skip it.
        let out = if lock(&run.failure).is_none() {
            let out = run
                .final_writes(w)
                .and_then(|fw| Ok((fw, run.receipts(chunk(txs.len(), workers, w))?)));
            if let Err(reason) = out {
                run.fail(reason);
            }
            out.ok()
        } else {
            None
        };
        phase_done(w, 2);
        // Every worker sees the same failure here (none is set after the
        // barrier), and no map has been written yet.
        if let Some(reason) = *lock(&run.failure) {
            return Err(reason);
        }
        let out = out.ok_or(SequentialReason::InternalError("final values missing"))?;
        let mut batch = LeafBatch::with_capacity(out.0.changed.len());
        apply_part(maps, first, &out.0, &mut batch);
        if leaves[w].set(batch).is_err() {
            unreachable!("worker {w} hashed its leaves twice");
        }
        phase_done(w, 3);
        let batches: Vec<&LeafBatch> = leaves
            .iter()
            .map(|l| l.get().expect("every worker hashed its leaves"))
            .collect();
        take_share(&tree_sets, w).apply(&batches);
        Ok(out)
    });
    drop(run);
    drop(tree_sets);
    let results: Vec<(FinalWrites, Vec<Receipt>)> =
        results.into_iter().collect::<Result<_, _>>()?;
    state.finish_block_update();
    for end in &phase_ends {
        clock.lap_at(*end.get().expect("worker 0 ran every phase"));
    }
    clock.lap();
    clock.add_to(&metrics.phase_ns);

    // Accounts sort before counters; within each, parts are in key order.
    let nkeys = results
        .iter()
        .map(|(fw, _)| fw.accounts.len() + fw.counters.len())
        .sum();
    let mut entries = Vec::with_capacity(nkeys);
    let mut receipts = Vec::with_capacity(txs.len());
    for (fw, _) in &results {
        entries.extend_from_slice(&fw.accounts);
    }
    for (fw, rc) in &results {
        entries.extend_from_slice(&fw.counters);
        receipts.extend_from_slice(rc);
    }
    debug_assert!(
        entries.windows(2).all(|p| p[0].0 < p[1].0),
        "diff sorted and unique"
    );
    Ok(BlockOutput {
        receipts,
        diff: StateDiff { entries },
        root: state.root(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPUs the calling thread may run on.
    fn allowed_cpus() -> Vec<usize> {
        // SAFETY: sched_getaffinity fills the zeroed set we own.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
                0
            );
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect()
        }
    }

    #[test]
    fn spawned_workers_run_on_the_given_cores() {
        let last = core_affinity::get_core_ids()
            .unwrap_or_default()
            .last()
            .map_or(0, |c| c.id);
        let cores = [core_affinity::CoreId { id: last }];
        let pool = WorkerPool::new(2, &cores).unwrap();
        for fanout in [Fanout::Spawn(&cores), Fanout::Pool(&pool)] {
            let seen = fanout.run(3, |_| allowed_cpus());
            // Worker 0 is the caller (its pinning is its own); the others
            // are on the given core only.
            assert_eq!(seen[1], vec![last], "{fanout:?}");
            assert_eq!(seen[2], vec![last], "{fanout:?}");
        }
    }

    #[test]
    fn reason_labels_and_indices_agree() {
        let all = [
            SequentialReason::SingleWorker,
            SequentialReason::SmallBlock,
            SequentialReason::HotKey,
            SequentialReason::ReexecutionBudget,
            SequentialReason::InternalError("x"),
            SequentialReason::Adaptive,
        ];
        let mut seen = [false; SequentialReason::COUNT];
        for r in all {
            assert_eq!(SequentialReason::LABELS[r.index()], r.label());
            assert!(!std::mem::replace(&mut seen[r.index()], true));
        }
    }

    #[test]
    fn cost_estimate_is_the_median_of_the_last_samples() {
        let mut c = CostSamples::default();
        assert_eq!(c.record(100), 100);
        // One preempted block does not move the estimate far.
        assert_eq!(c.record(5000), 5000);
        assert_eq!(c.record(110), 110);
        assert_eq!(c.record(105), 110);
        assert_eq!(c.record(95), 105);
        // The ring keeps the last COST_SAMPLES: the outlier drops out.
        for s in [50, 50, 50] {
            c.record(s);
        }
        assert_eq!(c.record(50), 50);
    }

    /// Feeds the guard a cost for the path it chose; returns that path
    /// (true = sequential).
    fn guard_step(exec: &ParallelExecutor, seq_ns: u64, par_ns: u64) -> bool {
        let m = &exec.metrics;
        let use_seq = exec.adaptive_choice().is_some();
        let (samples, estimate, ns) = if use_seq {
            (&m.seq_samples, &m.seq_ns_per_tx, seq_ns)
        } else {
            (&m.par_samples, &m.par_ns_per_tx, par_ns)
        };
        estimate.store(lock(samples).record(ns), Ordering::Relaxed);
        use_seq
    }

    #[test]
    fn adaptive_guard_settles_switches_and_retimes_after_a_switch() {
        let exec = ParallelExecutor::new(ExecConfig {
            adaptive_probe_every_blocks: 4,
            ..ExecConfig::default()
        });
        // Settling: parallel first, then alternating, until each path has
        // ADAPTIVE_SETTLE_SAMPLES blocks.
        let settle: Vec<bool> = (0..2 * ADAPTIVE_SETTLE_SAMPLES)
            .map(|_| guard_step(&exec, 100, 60))
            .collect();
        let alternating: Vec<bool> = (0..2 * ADAPTIVE_SETTLE_SAMPLES)
            .map(|i| i % 2 == 1)
            .collect();
        assert_eq!(settle, alternating);
        // Parallel is cheaper: it runs, with a sequential probe every 4th.
        let steady: Vec<bool> = (0..8).map(|_| guard_step(&exec, 100, 60)).collect();
        assert_eq!(steady.iter().filter(|s| **s).count(), 2, "{steady:?}");
        assert!(!exec.metrics.adaptive_prefers_seq.load(Ordering::Relaxed));
        // A burst of slow parallel blocks (a busy core) switches the
        // preference; both paths are then timed afresh, alternating, and
        // the fresh figures switch it back.
        let mut path = Vec::new();
        while !exec.metrics.adaptive_prefers_seq.load(Ordering::Relaxed) {
            path.push(guard_step(&exec, 100, 500));
            assert!(path.len() < 20, "never switched: {path:?}");
        }
        // The switching block is the first of the re-timing (parallel): the
        // older samples are gone.
        assert_eq!(path.last(), Some(&false));
        assert_eq!(lock(&exec.metrics.seq_samples).recorded, 0);
        assert_eq!(lock(&exec.metrics.par_samples).recorded, 1);
        let retimed: Vec<bool> = (1..2 * ADAPTIVE_SETTLE_SAMPLES)
            .map(|_| guard_step(&exec, 100, 60))
            .collect();
        assert_eq!(retimed, alternating[1..]);
        assert!(!guard_step(&exec, 100, 60));
        assert!(!exec.metrics.adaptive_prefers_seq.load(Ordering::Relaxed));
    }

    #[test]
    fn chunks_cover_exactly() {
        for n in [0, 1, 5, 16, 17, 1000] {
            for w in 1..20 {
                let mut next = 0;
                for i in 0..w {
                    let c = chunk(n, w, i);
                    assert_eq!(c.start, next.min(n));
                    next = c.end;
                }
                assert_eq!(next, n);
            }
        }
    }
}
