//! A validator's pipeline: six tile kinds wired by rings.
//!
//! ```text
//!                  peers ◀──QUIC (velox-peer/1)──▶ net ◀──peer rings──▶ consensus
//!  net ──ingress──▶ verify×N ──verified──▶ mempool ──txs──▶ consensus (batches, DAG core)
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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use velox_exec::reason::RejectCounters;
use velox_exec::{
    AccountId, BlockOutput, ExecContext, ParallelExecutor, Proof, Receipt, RejectReason, State,
    StateKey, StateRoot, StateValue, TxDigest, VerifiedTx,
};
use velox_io::{Ring, TileStats};
use velox_mempool::{Pool, PoolConfig};
use velox_net::{IngressTx, Status, Ticket};
use velox_storage::{BlockRecord, ChainStore, CommitMeta};

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
}

/// Storage's word that a commit is durable.
pub struct Finalized {
    pub index: u64,
    pub receipts: Vec<Receipt>,
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

/// Gauges of the pool, written by the mempool tile.
#[derive(Default)]
pub struct PoolGauges {
    pub txs: AtomicU64,
    pub bytes: AtomicU64,
    pub in_flight: AtomicU64,
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
    pub pool: PoolGauges,
    /// Sum of commit latencies (block cut to durable), ns, and count.
    pub commit_latency_ns: AtomicU64,
    pub commit_latency_count: AtomicU64,
    /// Time the storage tile spent in commit writes (RocksDB write batch),
    /// ns, and how many.
    pub storage_write_ns: AtomicU64,
    pub storage_writes: AtomicU64,
}

/// A transaction's committed nonce as storage has it.
fn committed_nonce(chain: &ChainStore, id: &AccountId) -> u64 {
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

/// Verify tile: batch signature checks.
pub async fn verify_tile(
    input: Arc<Ring<Vec<IngressTx>>>,
    output: Arc<Ring<Vec<(VerifiedTx, Ticket)>>>,
    shared: Arc<Shared>,
    stats: Arc<TileStats>,
) {
    while let Some(batch) = input.pop().await {
        stats.set_queue_depth(input.len());
        stats.add_in(batch.len() as u64);
        let started = Instant::now();
        let (txs, tickets): (Vec<_>, Vec<_>) = batch.into_iter().map(|i| (i.tx, i.ticket)).unzip();
        let results = verify_or_trust(txs, &shared);
        let mut ok = Vec::with_capacity(results.len());
        for (r, t) in results.into_iter().zip(tickets) {
            match r {
                Ok(v) => ok.push((v, t)),
                Err(reason) => {
                    shared.rejects.add(reason);
                    shared.recent_rejects.insert(t.digest(), reason);
                    t.reject(reason);
                }
            }
        }
        stats.add_busy(started.elapsed());
        let n = ok.len() as u64;
        if n > 0 && output.push(ok, &stats).await.is_err() {
            return;
        }
        stats.add_out(n);
    }
}

/// Mempool tile configuration.
#[derive(Clone, Copy, Debug)]
pub struct MempoolTileConfig {
    pub pool: PoolConfig,
    pub batch_txs_max: usize,
    pub batch_bytes_max: usize,
}

/// Mempool tile: admission, batches for consensus, settlement.
pub async fn mempool_tile(
    verified: Arc<Ring<Vec<(VerifiedTx, Ticket)>>>,
    feedback: Arc<Ring<Finalized>>,
    queries: Arc<Ring<PoolQuery>>,
    batches: Arc<Ring<Vec<VerifiedTx>>>,
    cfg: MempoolTileConfig,
    shared: Arc<Shared>,
    stats: Arc<TileStats>,
) {
    let mut pool: Pool<Option<Ticket>> = Pool::new(cfg.pool);
    let chain = shared.chain.clone();
    loop {
        let room_wanted = pool.has_ready() && batches.len() >= batches.capacity();
        tokio::select! {
            biased;
            f = feedback.pop() => match f {
                Some(f) => stats.busy(|| settle(&mut pool, f, &chain, &shared)),
                None => return,
            },
            v = verified.pop() => match v {
                Some(v) => {
                    let started = Instant::now();
                    admit(&mut pool, v, &chain, &shared, &stats);
                    // Take what else is waiting, bounded per turn.
                    let mut more = Vec::new();
                    verified.drain_into(&mut more, MEMPOOL_TURN_ITEMS_MAX);
                    for v in more {
                        admit(&mut pool, v, &chain, &shared, &stats);
                    }
                    stats.add_busy(started.elapsed());
                }
                None => return,
            },
            q = queries.pop() => if let Some(q) = q {
                let _ = q.reply.send(pool.contains(&q.digest));
            },
            _ = batches.wait_for_room(), if room_wanted => {},
        }
        // Emit batches while consensus has room. This tile is the ring's
        // only producer, so room checked here stays room.
        while pool.has_ready() && batches.len() < batches.capacity() {
            let b = pool.pop_batch(cfg.batch_txs_max, cfg.batch_bytes_max);
            if b.is_empty() {
                break;
            }
            stats.add_out(b.len() as u64);
            if let Err(b) = batches.try_push(b) {
                // Unreachable with one producer; keep accounting honest anyway.
                stats.add_drops(b.len() as u64);
                tracing::error!("batch ring full despite room check");
            }
        }
        stats.set_queue_depth(verified.len());
        shared.pool.txs.store(pool.len() as u64, Ordering::Relaxed);
        shared
            .pool
            .bytes
            .store(pool.bytes() as u64, Ordering::Relaxed);
        shared
            .pool
            .in_flight
            .store(pool.in_flight() as u64, Ordering::Relaxed);
    }
}

fn admit(
    pool: &mut Pool<Option<Ticket>>,
    items: Vec<(VerifiedTx, Ticket)>,
    chain: &ChainStore,
    shared: &Shared,
    stats: &TileStats,
) {
    stats.add_in(items.len() as u64);
    for (tx, ticket) in items {
        let (meta, keep) = match ticket.mode() {
            velox_net::AckMode::Commit => (Some(ticket), None),
            velox_net::AckMode::Admission => (None, Some(ticket)),
        };
        match pool.insert(tx, meta, |id| committed_nonce(chain, id)) {
            Ok(()) => {
                if let Some(t) = keep {
                    t.respond(Status::Accepted, None, 0);
                }
            }
            Err((reason, meta)) => {
                shared.rejects.add(reason);
                let t = meta.or(keep).expect("the ticket is in meta or kept");
                shared.recent_rejects.insert(t.digest(), reason);
                t.reject(reason);
            }
        }
    }
}

fn settle(pool: &mut Pool<Option<Ticket>>, f: Finalized, chain: &ChainStore, shared: &Shared) {
    let (settled, evicted) = pool
        .handle_committed(f.receipts.iter().map(|r| (r.digest, r.outcome)), |id| {
            committed_nonce(chain, id)
        });
    for s in settled {
        if let Some(t) = s.meta {
            match s.outcome {
                Ok(()) => t.respond(Status::Committed, None, f.index),
                Err(r) => t.respond(Status::Rejected, Some(r), f.index),
            }
        }
    }
    for e in evicted {
        let reason = e.outcome.err().unwrap_or(RejectReason::NonceTooLow);
        shared.rejects.add(reason);
        shared.recent_rejects.insert(e.digest, reason);
        if let Some(t) = e.meta {
            t.reject(reason);
        }
    }
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
        let o = if skip_execution {
            // Benchmark mode: ordered and stored, not executed.
            BlockOutput {
                receipts: b
                    .txs
                    .iter()
                    .map(|t| Receipt {
                        digest: t.digest(),
                        outcome: Ok(()),
                    })
                    .collect(),
                diff: Default::default(),
                root: state.root(),
            }
        } else {
            stats.busy(|| executor.execute(&mut state, &b.txs, ExecContext { genesis: false }))
        };
        assert!(b.index > index, "commits reach execution in index order");
        index = b.index;
        let n = b.txs.len() as u64;
        if out.push((b, o), &stats).await.is_err() {
            return;
        }
        stats.add_out(n);
    }
}

/// Storage tile: one write batch per commit, then tell the pool.
pub async fn storage_tile(
    input: Arc<Ring<(CommittedBlock, BlockOutput)>>,
    feedback: Arc<Ring<Finalized>>,
    shared: Arc<Shared>,
    stats: Arc<TileStats>,
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
        let written = stats.busy(|| shared.chain.commit(&record, &o));
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
                },
                &stats,
            )
            .await
            .is_err()
        {
            return;
        }
        stats.add_out(n);
    }
}
