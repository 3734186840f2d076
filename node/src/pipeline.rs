//! A validator's pipeline: six tile kinds wired by rings.
//!
//! ```text
//!                  peers ◀──QUIC (velox-peer/3)──▶ net ◀──peer rings──▶ consensus
//!  net ──ingress──▶ verify×N ──insert──▶ pool ◀─drains─ mempool ──txs──▶ consensus (batches, DAG core)
//!   ▲                                        ▲  ▲                  │ committed batches
//!   │ response records (tickets)             │  └──queries── API   ▼
//!   └───────────────────────────────── finalized ◀── storage ◀── exec ◀──proof queries── API
//! ```
//!
//! The consensus tile is in [`crate::consensus`].
//!
//! Each tile is a loop on its own pinned reactor that takes input from its
//! ring(s), does a bounded amount of work per turn, and pushes output
//! (waiting, and counting backpressure, when the next ring is full).
//! Tickets travel with transactions until someone answers the client: verify
//! (bad signature), mempool (admission result, or the commit result once
//! storage reports the commit durable).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use velox_dag::{CheckRequest, TxChecker};
use velox_exec::reason::RejectCounters;
use velox_exec::{
    AccountId, BlockOutput, ExecContext, ParallelExecutor, Proof, Receipt, RejectReason, State,
    StateKey, StateRoot, StateValue, TxDigest, VerifiedTx,
};
use velox_io::{Ring, TileStats};
use velox_mempool::batch::BatchDigest;
use velox_mempool::{Settled, ShardedPool};
use velox_net::{IngressTx, Status, Ticket};
use velox_storage::{BlockRecord, ChainStore, CommitConsensus, CommitMeta};

/// Ring depths. Items are batches (up to 64 transactions for ingress and
/// verified rings, up to `batch_txs_max` for batches), so a depth of 1024
/// holds ~64k transactions, ~15 MiB of signed transfers.
pub const INGRESS_RING_DEPTH: usize = 1024;
pub const VERIFIED_RING_DEPTH: usize = 1024;
pub const BATCH_RING_DEPTH: usize = 64;
/// Commits queued for execution and storage: 16 commits keep memory bounded
/// while absorbing a slow write (a commit holds the batches of one leader's
/// sub-DAG).
pub const BLOCK_RING_DEPTH: usize = 16;
pub const FEEDBACK_RING_DEPTH: usize = 64;
/// Peers' batches on their way to the verify tiles to be checked, and their
/// answers on the way back (the consensus machine bounds the checks under
/// way by its held set; the tile keeps what does not fit for its next
/// turn).
pub const CHECK_RING_DEPTH: usize = 256;
/// Most peers' batches a verify tile checks before answering them together.
pub const CHECKS_PER_TURN_MAX: usize = 16;
pub const QUERY_RING_DEPTH: usize = 256;
/// Proof requests waiting for the exec tile: each costs it ~5-10 us (one
/// walk down the tree; docs/benchmarks/storage.md), so a full ring delays a
/// block by well under 1 ms; the API answers 503 beyond it.
pub const PROOF_QUERY_RING_DEPTH: usize = 64;
/// Most ring items the mempool tile takes per turn before emitting batches.
pub const MEMPOOL_TURN_ITEMS_MAX: usize = 64;
/// Rejections remembered for the tx status API.
pub const RECENT_REJECTS_MAX: usize = 100_000;

/// A block the consensus tile committed, on its way to execution.
pub struct CommittedBlock {
    pub index: u64,
    pub timestamp_ms: u64,
    pub txs: Vec<VerifiedTx>,
    pub created: Instant,
    /// The leader it ordered and the batches it included (stored with it).
    pub consensus: CommitConsensus,
}

/// Storage's word that a commit is durable.
pub struct Finalized {
    pub index: u64,
    pub receipts: Vec<Receipt>,
    /// Each receipt's sender (the pool settles per sender).
    pub senders: Vec<AccountId>,
}

/// Asks the mempool tile whether a digest is pending.
pub struct PoolQuery {
    pub digest: TxDigest,
    pub reply: tokio::sync::oneshot::Sender<bool>,
}

/// Asks the exec tile for a proof of `key` in the state it holds.
pub struct ProofQuery {
    pub key: StateKey,
    pub reply: tokio::sync::oneshot::Sender<ProofAnswer>,
}

/// A proof and what it proves, all read at once from the exec tile's state:
/// the state after commit `index` (which may not be durable yet when the
/// answer is sent).
pub struct ProofAnswer {
    pub index: u64,
    pub root: StateRoot,
    pub value: Option<StateValue>,
    pub proof: Proof,
}

/// The chain's head as the API sees it.
#[derive(Default)]
pub struct ChainStatus {
    pub index: AtomicU64,
    pub txs_total: AtomicU64,
    pub timestamp_ms: AtomicU64,
    /// Commits written by this process (the storage tile counts them).
    pub blocks: AtomicU64,
    root: Mutex<StateRoot>,
}

impl ChainStatus {
    pub fn update(&self, m: &CommitMeta) {
        *self.root.lock().expect("poisoned") = m.root;
        self.txs_total.store(m.txs_total, Ordering::Relaxed);
        self.timestamp_ms.store(m.timestamp_ms, Ordering::Relaxed);
        self.index.store(m.index, Ordering::Release);
    }
    /// (commit index, root) read together.
    pub fn head(&self) -> (u64, StateRoot) {
        let root = self.root.lock().expect("poisoned");
        (self.index.load(Ordering::Acquire), *root)
    }
}

/// Rejections that never reach storage (verify, pool), for the status API.
#[derive(Default)]
pub struct RecentRejects {
    inner: Mutex<(HashMap<TxDigest, RejectReason>, VecDeque<TxDigest>)>,
}

impl RecentRejects {
    pub fn insert(&self, d: TxDigest, r: RejectReason) {
        if d == TxDigest::default() {
            return;
        }
        let mut g = self.inner.lock().expect("poisoned");
        if g.0.insert(d, r).is_none() {
            g.1.push_back(d);
            if g.1.len() > RECENT_REJECTS_MAX {
                if let Some(old) = g.1.pop_front() {
                    g.0.remove(&old);
                }
            }
        }
    }
    pub fn get(&self, d: &TxDigest) -> Option<RejectReason> {
        self.inner.lock().expect("poisoned").0.get(d).copied()
    }
}

/// The pool as the tiles share it: verify tiles insert (lock-free), the
/// mempool tile drains inboxes, builds batches and settles, the consensus
/// tile returns transactions of batches that can no longer commit.
pub type TxPool = ShardedPool<Option<Ticket>>;

/// How the pool pushes back on ingress, counted.
#[derive(Default)]
pub struct PoolPressure {
    /// Inserts that found the pool full and waited for room.
    pub waits: AtomicU64,
    /// Time verify tiles spent waiting for room, ns.
    pub wait_ns: AtomicU64,
    /// Transactions rejected `PoolFull` after waiting `full_wait` in vain.
    pub rejected_full: AtomicU64,
    /// Resent copies of transactions the pool already holds, answered
    /// `duplicate` (201) before their signature was checked.
    pub duplicates_unverified: AtomicU64,
}

/// State shared between tiles and the API (all counters or read-mostly).
pub struct Shared {
    pub executor: Arc<ParallelExecutor>,
    pub chain_id: u64,
    /// Benchmark switches (docs/config.md, `[benchmark]`).
    pub benchmark: crate::config::BenchmarkConfig,
    pub chain: ChainStore,
    pub status: ChainStatus,
    pub rejects: Arc<RejectCounters>,
    pub recent_rejects: RecentRejects,
    pub pool: Arc<TxPool>,
    /// Signalled when the pool frees room (verify tiles wait on it).
    pub pool_room: tokio::sync::Notify,
    /// Signalled when inserts wait in the pool's inboxes (wakes the
    /// mempool tile).
    pub pool_work: tokio::sync::Notify,
    /// Longest a verify tile waits for room before rejecting `PoolFull`.
    pub pool_full_wait: Duration,
    pub pool_pressure: PoolPressure,
    /// The pool's clock origin (`now_ms` for inserts and expiry).
    pub clock: Instant,
    /// Sum of commit latencies (block cut to durable), ns, and count.
    pub commit_latency_ns: AtomicU64,
    pub commit_latency_count: AtomicU64,
    /// Time the storage tile spent in commit writes (RocksDB write batch),
    /// ns, and how many.
    pub storage_write_ns: AtomicU64,
    pub storage_writes: AtomicU64,
}

impl Shared {
    /// Milliseconds on the pool's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }
}

/// A transaction's committed nonce as storage has it.
pub fn committed_nonce(chain: &ChainStore, id: &AccountId) -> u64 {
    match chain.account(id) {
        Ok(a) => a.nonce,
        Err(e) => {
            tracing::error!(error = %e, "reading an account nonce failed; admitting as if nonce 0");
            0
        }
    }
}

/// Batch signature checks, or (benchmark mode `skip_signature_checks`)
/// only the stateless checks.
pub fn verify_or_trust(
    txs: Vec<velox_exec::Tx>,
    shared: &Shared,
) -> Vec<Result<VerifiedTx, RejectReason>> {
    if shared.benchmark.skip_signature_checks {
        return txs
            .into_iter()
            .map(|t| {
                velox_exec::verify::check_stateless(&t, shared.chain_id)
                    .map(|()| VerifiedTx::from_trusted(t))
            })
            .collect();
    }
    velox_exec::verify_batch(txs, shared.chain_id)
}

/// A peer's batch checked by a verify tile, on its way back to the
/// consensus tile: one answer per transaction, in order.
pub struct CheckedBatch {
    pub digest: BatchDigest,
    pub txs: Vec<Option<VerifiedTx>>,
}

/// Checks transactions with the chain's signature rule (or, in benchmark
/// mode, only the stateless rules): how verify tiles answer the consensus
/// machine's batch checks.
pub struct PoolChecker<'a>(pub &'a Shared);

impl TxChecker for PoolChecker<'_> {
    fn check(&self, raw: Vec<&[u8]>) -> Vec<Option<VerifiedTx>> {
        let mut out: Vec<Option<VerifiedTx>> = Vec::with_capacity(raw.len());
        let mut txs = Vec::with_capacity(raw.len());
        let mut slots = Vec::with_capacity(raw.len());
        for r in raw {
            match velox_exec::Tx::decode(r) {
                Ok(t) => {
                    slots.push(out.len());
                    out.push(None);
                    txs.push(t);
                }
                Err(_) => out.push(None),
            }
        }
        let verified = verify_or_trust(txs, self.0);
        for (slot, v) in slots.into_iter().zip(verified) {
            out[slot] = v.ok();
        }
        out
    }
}

/// The rings a verify tile serves: clients' transactions from ingress, and
/// peers' batches the consensus tile asks it to check (those first: the
/// consensus machine waits on them).
pub struct VerifyRings {
    pub ingress: Arc<Ring<Vec<IngressTx>>>,
    pub checks: Arc<Ring<CheckRequest>>,
    pub checked: Arc<Ring<CheckedBatch>>,
}

/// Verify tile: peers' batches checked for the consensus tile; clients'
/// transactions checked in batches, then straight into the pool. Several
/// verify tiles share both rings.
pub async fn verify_tile(rings: VerifyRings, shared: Arc<Shared>, stats: Arc<TileStats>) {
    let VerifyRings {
        ingress: input,
        checks,
        checked,
    } = rings;
    loop {
        // Neither ring first: a peer's batch gates the others' progress,
        // a client's transactions this validator's own; each ready ring
        // gets its turn (peers' pushes are bounded by their shares).
        let batch = tokio::select! {
            r = checks.pop() => {
                let Some(r) = r else { return };
                // What else waits, checked before any is answered: the
                // consensus tile then takes the answers in one turn (one
                // write, one fsync, for all).
                let mut requests = vec![r];
                checks.drain_into(&mut requests, CHECKS_PER_TURN_MAX - 1);
                stats.set_queue_depth(input.len() + checks.len());
                let started = Instant::now();
                let answers: Vec<CheckedBatch> = requests
                    .into_iter()
                    .map(|r| CheckedBatch {
                        txs: r.answer(&PoolChecker(&shared)),
                        digest: r.digest,
                    })
                    .collect();
                stats.add_busy(started.elapsed());
                for a in answers {
                    stats.add_in(a.txs.len() as u64);
                    let n = a.txs.iter().filter(|t| t.is_some()).count() as u64;
                    if checked.push(a, &stats).await.is_err() {
                        return;
                    }
                    stats.add_out(n);
                }
                continue;
            }
            b = input.pop() => match b {
                Some(b) => b,
                None => return,
            },
        };
        stats.set_queue_depth(input.len());
        stats.add_in(batch.len() as u64);
        let started = Instant::now();
        // A byte-for-byte copy of a transaction the pool holds costs a
        // lookup, not a signature check: its signature was checked, and the
        // pool would refuse it as a duplicate anyway (a copy with another
        // signature is checked like any other; a busy shard is not waited
        // for, its copies are checked).
        let mut fresh = Vec::with_capacity(batch.len());
        for i in batch {
            if shared.pool.try_holds(&i.tx) == Some(true) {
                shared
                    .pool_pressure
                    .duplicates_unverified
                    .fetch_add(1, Ordering::Relaxed);
                reject(&shared, i.ticket, RejectReason::Duplicate);
            } else {
                fresh.push(i);
            }
        }
        let (txs, tickets): (Vec<_>, Vec<_>) = fresh.into_iter().map(|i| (i.tx, i.ticket)).unzip();
        let results = verify_or_trust(txs, &shared);
        stats.add_busy(started.elapsed());
        let mut n = 0;
        for (r, t) in results.into_iter().zip(tickets) {
            match r {
                Ok(v) => {
                    insert_or_wait(&shared, v, t, &stats).await;
                    n += 1;
                }
                Err(reason) => reject(&shared, t, reason),
            }
        }
        if n > 0 {
            shared.pool_work.notify_one();
        }
        stats.add_out(n);
    }
}

fn reject(shared: &Shared, t: Ticket, reason: RejectReason) {
    shared.rejects.add(reason);
    shared.recent_rejects.insert(t.digest(), reason);
    t.reject(reason);
}

/// Inserts into the pool; when it is full, waits for room (backpressure:
/// this tile stops taking from the ingress ring, the net tile stops reading
/// streams, QUIC flow control holds the clients) up to `pool_full_wait`,
/// then rejects `PoolFull`. Every wait and refusal is counted.
async fn insert_or_wait(shared: &Shared, tx: VerifiedTx, ticket: Ticket, stats: &TileStats) {
    // The hot path: one lock-free attempt, no waiter registered.
    let full = match shared.pool.insert(tx, Some(ticket), shared.now_ms()) {
        Ok(()) => return,
        Err(full) => full,
    };
    let since = Instant::now();
    shared.pool_pressure.waits.fetch_add(1, Ordering::Relaxed);
    let deadline = since + shared.pool_full_wait;
    let mut item = (full.tx, full.meta);
    loop {
        // Room may only need the inboxes drained.
        shared.pool_work.notify_one();
        // Registered before the next attempt, so room freed in between
        // wakes us.
        let room = shared.pool_room.notified();
        tokio::pin!(room);
        room.as_mut().enable();
        match shared.pool.insert(item.0, item.1, shared.now_ms()) {
            Ok(()) => break,
            Err(full) => {
                let now = Instant::now();
                if now >= deadline {
                    shared
                        .pool_pressure
                        .rejected_full
                        .fetch_add(1, Ordering::Relaxed);
                    if let Some(t) = full.meta {
                        reject(shared, t, RejectReason::PoolFull);
                    }
                    break;
                }
                // Re-check at least every 10 ms: room also appears when
                // another tile's inserts are rejected at admission.
                let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(10)), room)
                    .await;
                item = (full.tx, full.meta);
            }
        }
    }
    let waited = since.elapsed();
    stats.add_backpressure(waited);
    shared
        .pool_pressure
        .wait_ns
        .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
}

/// Mempool tile configuration.
#[derive(Clone, Copy, Debug)]
pub struct MempoolTileConfig {
    pub batch_txs_max: usize,
    pub batch_bytes_max: usize,
    /// How often pending transactions are checked for expiry.
    pub expiry_every: Duration,
}

/// Mempool tile: the pool's single drainer. Admits what verify tiles
/// queued (answering admission-mode clients and rejections), hands batches
/// to consensus, settles commits, expires old transactions.
pub async fn mempool_tile(
    feedback: Arc<Ring<Finalized>>,
    queries: Arc<Ring<PoolQuery>>,
    batches: Arc<Ring<Vec<VerifiedTx>>>,
    cfg: MempoolTileConfig,
    shared: Arc<Shared>,
    stats: Arc<TileStats>,
) {
    let pool = shared.pool.clone();
    let mut settled: Vec<Settled<Option<Ticket>>> = Vec::new();
    let mut next_expiry = Instant::now() + cfg.expiry_every;
    loop {
        let room_wanted = !pool.is_empty() && batches.len() >= batches.capacity();
        tokio::select! {
            biased;
            f = feedback.pop() => match f {
                Some(f) => stats.busy(|| settle(&pool, f, &shared, &mut settled)),
                None => return,
            },
            q = queries.pop() => if let Some(q) = q {
                let _ = q.reply.send(pool.contains(&q.digest));
            },
            _ = shared.pool_work.notified() => {},
            _ = batches.wait_for_room(), if room_wanted => {},
            _ = tokio::time::sleep_until(next_expiry.into()) => {},
        }
        let started = Instant::now();
        let taken = pool.handle_inbox_with(&mut settled, &mut |_, meta| {
            if meta
                .as_ref()
                .is_some_and(|t| t.mode() == velox_net::AckMode::Admission)
            {
                if let Some(t) = meta.take() {
                    t.respond(Status::Accepted, None, 0);
                }
            }
        });
        stats.add_in(taken as u64);
        if Instant::now() >= next_expiry {
            pool.handle_expiry(shared.now_ms(), &mut settled);
            next_expiry = Instant::now() + cfg.expiry_every;
        }
        answer(&shared, &mut settled);
        // Emit batches while consensus has room. This tile is the ring's
        // only producer, so room checked here stays room.
        while !pool.is_empty() && batches.len() < batches.capacity() {
            let b = pool.pop_batch(cfg.batch_txs_max, cfg.batch_bytes_max);
            if b.is_empty() {
                break;
            }
            stats.add_out(b.len() as u64);
            if let Err(b) = batches.try_push(b) {
                // Unreachable with one producer; hand them back rather than
                // lose them.
                tracing::error!("batch ring full despite room check");
                let back = b.iter().map(|t| (t.sender(), t.digest()));
                pool.return_uncommitted(back, &mut settled);
                answer(&shared, &mut settled);
                break;
            }
        }
        // Room may have been freed (admission rejections, commits,
        // expiry, drained inboxes): wake waiting verify tiles.
        shared.pool_room.notify_waiters();
        stats.set_queue_depth(pool.queued());
        stats.add_busy(started.elapsed());
    }
}

/// Answers the clients of transactions the pool let go outside a commit:
/// rejected at admission, replaced, expired or evicted (each counted).
pub fn answer(shared: &Shared, settled: &mut Vec<Settled<Option<Ticket>>>) {
    for s in settled.drain(..) {
        match s.outcome {
            // Only commits settle with success.
            Ok(()) => debug_assert!(false, "success outside a commit"),
            Err(reason) => {
                shared.rejects.add(reason);
                shared.recent_rejects.insert(s.digest, reason);
                if let Some(t) = s.meta {
                    t.reject(reason);
                }
            }
        }
    }
}

/// Settles a durable commit: its transactions' clients hear the outcome
/// with the commit index; every execution failure of the commit (whoever
/// admitted the transaction) counts in `velox_rejected_total` under its
/// reason; pending transactions it made stale are evicted and answered.
fn settle(
    pool: &TxPool,
    f: Finalized,
    shared: &Shared,
    settled: &mut Vec<Settled<Option<Ticket>>>,
) {
    let mut failed: HashSet<TxDigest> = HashSet::new();
    for r in &f.receipts {
        if let Err(reason) = r.outcome {
            shared.rejects.add(reason);
            failed.insert(r.digest);
        }
    }
    pool.handle_committed(
        f.receipts
            .iter()
            .zip(&f.senders)
            .map(|(r, s)| (*s, r.digest, r.outcome)),
        settled,
    );
    settled.retain_mut(|s| match s.outcome {
        Ok(()) => {
            if let Some(t) = s.meta.take() {
                t.respond(Status::Committed, None, f.index);
            }
            false
        }
        Err(r) if failed.contains(&s.digest) => {
            if let Some(t) = s.meta.take() {
                t.respond(Status::Rejected, Some(r), f.index);
            }
            false
        }
        Err(_) => true,
    });
    answer(shared, settled);
}

/// Executes one commit's transactions: the one function the exec tile,
/// genesis and `velox replay` share, so replay checks the code the node
/// runs. With `skip_execution` (benchmark mode) nothing is executed: every
/// receipt is success and the state and its root stay as they are.
pub fn execute_commit(
    executor: &ParallelExecutor,
    state: &mut State,
    txs: &[VerifiedTx],
    ctx: ExecContext,
    skip_execution: bool,
) -> BlockOutput {
    if skip_execution {
        return BlockOutput {
            receipts: txs
                .iter()
                .map(|t| Receipt {
                    digest: t.digest(),
                    outcome: Ok(()),
                })
                .collect(),
            diff: Default::default(),
            root: state.root(),
        };
    }
    executor.execute(state, txs, ctx)
}

/// Executes the genesis block (commit 0) at first start and in replay.
pub fn execute_genesis(state: &mut State, txs: &[VerifiedTx]) -> BlockOutput {
    velox_exec::execute_sequential(state, txs, ExecContext { genesis: true })
}

/// Exec tile: the parallel executor (which falls back to the sequential
/// oracle for small, conflicting or unprofitable blocks) over the in-memory
/// state. Its workers are pinned to the layout's exec cores. Between blocks
/// it answers proof queries from the state it holds, which is the state
/// after the last block it executed (`index`, starting at the last durable
/// commit).
#[allow(clippy::too_many_arguments)]
pub async fn exec_tile(
    blocks: Arc<Ring<CommittedBlock>>,
    out: Arc<Ring<(CommittedBlock, BlockOutput)>>,
    proofs: Arc<Ring<ProofQuery>>,
    mut state: State,
    mut index: u64,
    executor: Arc<ParallelExecutor>,
    skip_execution: bool,
    stats: Arc<TileStats>,
) {
    loop {
        // Unbiased: neither blocks nor (bounded) proof queries starve.
        let b = tokio::select! {
            b = blocks.pop() => match b {
                Some(b) => b,
                None => return,
            },
            q = proofs.pop() => {
                if let Some(q) = q {
                    let started = Instant::now();
                    let answer = ProofAnswer {
                        index,
                        root: state.root(),
                        value: state.get(&q.key),
                        proof: state.prove(&q.key),
                    };
                    stats.add_busy(started.elapsed());
                    // The asker may have given up; nothing to do then.
                    let _ = q.reply.send(answer);
                }
                continue;
            }
        };
        stats.set_queue_depth(blocks.len());
        stats.add_in(b.txs.len() as u64);
        let o = stats.busy(|| {
            execute_commit(
                &executor,
                &mut state,
                &b.txs,
                ExecContext { genesis: false },
                skip_execution,
            )
        });
        assert!(b.index > index, "commits reach execution in index order");
        index = b.index;
        let n = b.txs.len() as u64;
        if out.push((b, o), &stats).await.is_err() {
            return;
        }
        stats.add_out(n);
    }
}

/// Storage tile: one write batch per commit, then tell the pool; then
/// hand snapshot and pruning work to the maintenance threads.
pub async fn storage_tile(
    input: Arc<Ring<(CommittedBlock, BlockOutput)>>,
    feedback: Arc<Ring<Finalized>>,
    shared: Arc<Shared>,
    stats: Arc<TileStats>,
    maintenance: crate::maintenance::Maintenance,
) {
    while let Some((b, o)) = input.pop().await {
        stats.set_queue_depth(input.len());
        stats.add_in(b.txs.len() as u64);
        let record = BlockRecord {
            index: b.index,
            timestamp_ms: b.timestamp_ms,
            txs: b.txs.iter().map(|t| t.bytes().to_vec()).collect(),
        };
        let write_started = Instant::now();
        let written = stats.busy(|| shared.chain.commit_with(&record, &o, &b.consensus));
        shared
            .storage_write_ns
            .fetch_add(write_started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        shared.storage_writes.fetch_add(1, Ordering::Relaxed);
        let meta = match written {
            Ok(m) => m,
            Err(e) => {
                // Continuing would acknowledge commits that are not durable.
                tracing::error!(error = %e, index = b.index, "commit write failed; stopping the node");
                eprintln!("velox: fatal: commit {} could not be written: {e}", b.index);
                std::process::exit(70);
            }
        };
        shared.status.update(&meta);
        shared.status.blocks.fetch_add(1, Ordering::Relaxed);
        shared
            .commit_latency_ns
            .fetch_add(b.created.elapsed().as_nanos() as u64, Ordering::Relaxed);
        shared.commit_latency_count.fetch_add(1, Ordering::Relaxed);
        let n = b.txs.len() as u64;
        if feedback
            .push(
                Finalized {
                    index: b.index,
                    receipts: o.receipts,
                    senders: b.txs.iter().map(|t| t.sender()).collect(),
                },
                &stats,
            )
            .await
            .is_err()
        {
            return;
        }
        stats.add_out(n);
        // After the pool was told: a snapshot's view is taken here, before
        // the next commit's write, without delaying this one's answer.
        maintenance.after_commit(&meta);
    }
}
