//! `mempool`: pre-verified transfers through the sharded pool
//! (`velox_mempool::ShardedPool`) against a crossbeam `ArrayQueue` carrying
//! the same items, at 1, 2 and all cores, plus the pool's memory per pending
//! transaction at 100k and 1M. Two throughput figures:
//!
//! - **Ingestion** (`ops_per_s`, `ingest_per_core_count`): what verify tiles
//!   do. Each producer inserts its own pre-built transactions (distinct
//!   senders) into one empty pool with room for all: budget reservation,
//!   shard choice, inbox push. Baseline: pushes of the same items into an
//!   `ArrayQueue` of the same capacity.
//! - **Lifecycle** (`per_core_count`): each thread loops over its own set,
//!   inserting clones in chunks of [`CHUNK`]; when the pool answers `Full`,
//!   that thread drains it (admits the inboxes, pops every ready batch and
//!   commits it at once), then retries. So a counted op went all the way
//!   through: reservation, inbox, admission (dedup, nonce order), pop,
//!   settlement. The baseline pushes the clones into an `ArrayQueue` of the
//!   same depth and on `Full` pops a batch and drops it.
//!
//! Signatures are not checked (`VerifiedTx::from_trusted`): that cost
//! belongs to the verify suite.

use std::time::Duration;

use crossbeam::queue::ArrayQueue;
use serde_json::{json, Map};
use velox_exec::{AccountId, Tx, VerifiedTx};
use velox_mempool::{Settled, ShardedPool, ShardedPoolConfig};

use crate::alloc::{live_bytes, rss_bytes};
use crate::{measure_parallel, BenchOpts, SuiteReport};

const CHAIN: u64 = 1;
/// Inserts per timed call.
pub const CHUNK: usize = 256;
/// Pool and queue depth in the throughput runs.
pub const DEPTH_TXS: usize = 16_384;
/// Distinct transactions each thread cycles through: twice the depth, so a
/// transaction's previous copy has left the pool when it comes round again.
pub const SET_TXS: usize = 2 * DEPTH_TXS;
/// Nonces per sender in the throughput sets: one, so that the pool's
/// nonce source can truthfully answer 0 for every sender on every pass (a
/// sender's record is freed once its transaction commits, and the next pass
/// re-inserts the same transaction). Nonce chains are exercised by the
/// memory runs and the tests.
pub const NONCES_PER_SENDER: u64 = 1;
const _: () = assert!(
    NONCES_PER_SENDER == 1,
    "thread_set builds one nonce per sender"
);
/// Transactions per popped batch.
pub const BATCH_TXS: usize = 1_000;
/// The memory target: 2.5 MB per 10,000 pending transactions.
pub const MEM_TARGET_BYTES_PER_TX: usize = 250;

/// A transfer from sender number `sender`, unsigned (trusted as verified).
pub fn raw_tx(sender: u64, nonce: u64) -> VerifiedTx {
    let mut b = Vec::with_capacity(velox_exec::tx::TRANSFER_TX_BYTES);
    b.extend_from_slice(&[1, 1, 0, 0]);
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&CHAIN.to_le_bytes());
    b.extend_from_slice(&nonce.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&sender_id(sender).0);
    b.extend_from_slice(&[0xEE; 32]);
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&[0; 64]);
    VerifiedTx::from_trusted(Tx::decode(&b).expect("well-formed"))
}

fn sender_id(sender: u64) -> AccountId {
    let mut b = [0x5Au8; 32];
    b[..8].copy_from_slice(&sender.to_le_bytes());
    AccountId(b)
}

/// Thread `t`'s transactions: its own senders, nonce 0 each.
pub fn thread_set(t: usize, n: usize) -> Vec<VerifiedTx> {
    (0..n as u64)
        .map(|i| raw_tx(((t as u64) << 32) | i, 0))
        .collect()
}

/// The pool as the throughput runs configure it.
pub fn bench_pool(txs_max: usize) -> ShardedPool<u64> {
    ShardedPool::new(
        ShardedPoolConfig {
            txs_max,
            bytes_max: 1 << 39,
            nonce_ahead_max: 1 << 20,
            ..ShardedPoolConfig::default()
        },
        Box::new(|_| 0),
    )
}

/// Admits what is queued, pops every ready batch and commits it. Returns
/// how many transactions were committed.
pub fn drain(pool: &ShardedPool<u64>, out: &mut Vec<Settled<u64>>) -> usize {
    pool.handle_inbox(out);
    let mut n = 0;
    loop {
        let b = pool.pop_batch(BATCH_TXS, usize::MAX);
        if b.is_empty() {
            break;
        }
        n += b.len();
        pool.handle_committed(b.iter().map(|t| (t.sender(), t.digest(), Ok(()))), out);
    }
    out.clear();
    n
}

/// Inserts one transaction, draining while the pool is full.
pub fn insert_or_drain(
    pool: &ShardedPool<u64>,
    tx: VerifiedTx,
    meta: u64,
    out: &mut Vec<Settled<u64>>,
) {
    insert_or(pool, tx, meta, out, |p, o| {
        drain(p, o);
    });
}

/// Inserts one transaction; while the pool is full, calls `make_room`.
fn insert_or(
    pool: &ShardedPool<u64>,
    tx: VerifiedTx,
    meta: u64,
    out: &mut Vec<Settled<u64>>,
    make_room: impl Fn(&ShardedPool<u64>, &mut Vec<Settled<u64>>),
) {
    let mut item = (tx, meta);
    while let Err(f) = pool.insert(item.0, item.1, 0) {
        item = (f.tx, f.meta);
        make_room(pool, out);
    }
}

/// Pool transactions per second on `threads` threads; and the fraction
/// refused at admission (a copy still held when its turn came round).
pub fn pool_ops_per_s(threads: usize, time: Duration) -> (f64, f64) {
    let pool = bench_pool(DEPTH_TXS);
    let rate = measure_parallel(threads, time, CHUNK as u64, |t| {
        let set = thread_set(t, SET_TXS);
        let pool = &pool;
        let mut next = 0;
        let mut out = Vec::new();
        move || {
            for _ in 0..CHUNK {
                insert_or_drain(pool, set[next].clone(), next as u64, &mut out);
                next = (next + 1) % set.len();
            }
        }
    });
    let c = pool.counters();
    (rate, c.rejected as f64 / c.queued.max(1) as f64)
}

/// The baseline: the same items through an `ArrayQueue` of the same depth.
pub fn queue_ops_per_s(threads: usize, time: Duration) -> f64 {
    let q: ArrayQueue<VerifiedTx> = ArrayQueue::new(DEPTH_TXS);
    measure_parallel(threads, time, CHUNK as u64, |t| {
        let set = thread_set(t, SET_TXS);
        let q = &q;
        let mut next = 0;
        move || {
            for _ in 0..CHUNK {
                let mut item = set[next].clone();
                while let Err(back) = q.push(item) {
                    item = back;
                    for _ in 0..BATCH_TXS {
                        if q.pop().is_none() {
                            break;
                        }
                    }
                }
                next = (next + 1) % set.len();
            }
        }
    })
}

/// Transactions each producer inserts in one ingestion run.
pub const INGEST_PER_THREAD: usize = 200_000;
/// Ingestion runs per configuration (the best counts: interference from
/// the rest of the machine only ever slows a run down).
pub const INGEST_REPS: usize = 5;

/// Runs `op` over each thread's own pre-built transactions on `threads`
/// pinned threads started together; returns transactions per second over
/// the slowest thread's time (the wall time of the whole fill).
fn timed_fill(threads: usize, per_thread: usize, op: impl Fn(VerifiedTx) + Sync) -> f64 {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let barrier = std::sync::Barrier::new(threads);
    let slowest = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (op, barrier) = (&op, &barrier);
                let core = cores.get(t % cores.len().max(1)).copied();
                s.spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    let set = thread_set(t, per_thread);
                    barrier.wait();
                    let started = std::time::Instant::now();
                    for tx in set {
                        op(tx);
                    }
                    started.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .max()
            .unwrap_or_default()
    });
    (threads * per_thread) as f64 / slowest.as_secs_f64().max(1e-9)
}

/// Ingestion, the verify tiles' side of the pool: `threads` producers each
/// insert `per_thread` pre-verified transfers (distinct senders) into one
/// empty pool with room for all of them — budget reservation, shard choice
/// and inbox push, the path a verify tile takes — against pushes of the
/// same items into a crossbeam `ArrayQueue` of the same capacity. Best of
/// `reps` interleaved runs each. Returns (pool, queue) inserts per second.
pub fn ingest_ops_per_s(threads: usize, per_thread: usize, reps: usize) -> (f64, f64) {
    let total = threads * per_thread;
    let shards = ShardedPoolConfig::default().shards;
    let (mut pool_best, mut queue_best) = (0.0f64, 0.0f64);
    for _ in 0..reps {
        let pool: ShardedPool<u64> = ShardedPool::new(
            ShardedPoolConfig {
                txs_max: total,
                bytes_max: 1 << 39,
                // Senders hash to shards unevenly: twice the mean is room.
                inbox_depth: 2 * total / shards + 64,
                ..ShardedPoolConfig::default()
            },
            Box::new(|_| 0),
        );
        let rate = timed_fill(threads, per_thread, |tx| {
            pool.insert(tx, 0, 0)
                .expect("sized to hold every transaction");
        });
        assert_eq!(pool.queued(), total, "every insert landed");
        pool_best = pool_best.max(rate);
        let q: ArrayQueue<VerifiedTx> = ArrayQueue::new(total);
        let rate = timed_fill(threads, per_thread, |tx| {
            q.push(tx).expect("sized to hold every transaction");
        });
        queue_best = queue_best.max(rate);
    }
    (pool_best, queue_best)
}

fn heap_now() -> (usize, &'static str) {
    match live_bytes() {
        Some(b) => (b, "counting_allocator"),
        None => (rss_bytes().unwrap_or(0), "rss"),
    }
}

/// Memory of a pool holding `n` pending transfers, `per_sender` nonces per
/// sender, per transaction: (heap bytes per tx, budget-charged bytes per
/// tx, method). The pool's fixed inbox allocation is included.
pub fn memory_per_tx(n: usize, per_sender: u64) -> (f64, f64, &'static str) {
    let (before, method) = heap_now();
    let pool = bench_pool(n);
    let mut out = Vec::new();
    for i in 0..n as u64 {
        // Admit (never pop) when an inbox is full.
        insert_or(
            &pool,
            raw_tx(i / per_sender, i % per_sender),
            i,
            &mut out,
            |p, o| {
                p.handle_inbox(o);
            },
        );
    }
    pool.handle_inbox(&mut out);
    assert!(out.is_empty(), "every transaction admitted");
    assert_eq!(pool.len(), n);
    let (after, _) = heap_now();
    let charged = pool.held().1 as f64 / n as f64;
    drop(pool);
    (
        after.saturating_sub(before) as f64 / n as f64,
        charged,
        method,
    )
}

pub fn run(opts: &BenchOpts) -> SuiteReport {
    let time = opts.measure_time();
    let (per_thread, reps) = if opts.quick {
        (20_000, 2)
    } else {
        (INGEST_PER_THREAD, INGEST_REPS)
    };
    let mut ingest = Vec::new();
    let mut per_cores = Vec::new();
    let (mut best, mut best_base) = (0.0, 0.0);
    for &c in &opts.core_counts {
        let (pool, queue) = ingest_ops_per_s(c, per_thread, reps);
        ingest.push(json!({
            "cores": c,
            "pool_inserts_per_s": pool.round(),
            "pool_inserts_per_s_per_core": (pool / c as f64).round(),
            "queue_pushes_per_s": queue.round(),
            "ratio": (pool / queue * 1000.0).round() / 1000.0,
        }));
        best = pool;
        best_base = queue;
        let (pool, refused) = pool_ops_per_s(c, time);
        let queue = queue_ops_per_s(c, time);
        per_cores.push(json!({
            "cores": c,
            "pool_ops_per_s": pool.round(),
            "queue_ops_per_s": queue.round(),
            "ratio": (pool / queue * 1000.0).round() / 1000.0,
            "refused_at_admission": (refused * 10_000.0).round() / 10_000.0,
        }));
    }
    let mut extra = Map::new();
    extra.insert("ingest_per_core_count".into(), json!(ingest));
    extra.insert("ingest_txs_per_thread".into(), json!(per_thread));
    // The whole lifecycle (insert, admit, pop, settle) per core count.
    extra.insert("per_core_count".into(), json!(per_cores));
    extra.insert("chunk_txs".into(), json!(CHUNK));
    extra.insert("depth_txs".into(), json!(DEPTH_TXS));
    extra.insert("batch_txs".into(), json!(BATCH_TXS));
    extra.insert("nonces_per_sender".into(), json!(NONCES_PER_SENDER));
    extra.insert("shards".into(), json!(ShardedPoolConfig::default().shards));
    let mut method = "";
    for (key, n, per_sender) in [
        ("mem_bytes_per_tx_100k", 100_000, 16),
        ("mem_bytes_per_tx_1m", 1_000_000, 16),
        ("mem_bytes_per_tx_100k_one_per_sender", 100_000, 1),
    ] {
        let (heap, charged, m) = memory_per_tx(n, per_sender);
        method = m;
        extra.insert(key.into(), json!(heap.round()));
        extra.insert(format!("{key}_charged"), json!(charged.round()));
    }
    extra.insert("mem_method".into(), json!(method));
    extra.insert(
        "mem_target_bytes_per_tx".into(),
        json!(MEM_TARGET_BYTES_PER_TX),
    );
    SuiteReport {
        suite: "mempool".into(),
        ops_per_s: best,
        baseline: "crossbeam ArrayQueue push of the same pre-verified transactions, \
                   same capacity, all cores producing (ops_per_s: pool inserts, all cores)"
            .into(),
        baseline_ops_per_s: best_base,
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_loops_commit_and_measure() {
        let (rate, refused) = pool_ops_per_s(2, Duration::from_millis(50));
        assert!(rate > 0.0);
        assert!(refused < 0.5, "refused {refused}");
        assert!(queue_ops_per_s(2, Duration::from_millis(50)) > 0.0);
    }

    #[test]
    fn ingestion_lands_every_insert() {
        let (pool, queue) = ingest_ops_per_s(2, 2_000, 1);
        assert!(pool > 0.0 && queue > 0.0);
    }

    #[test]
    fn memory_is_measured() {
        let (heap, charged, _) = memory_per_tx(2_000, 16);
        assert!(heap > 0.0 && charged > 0.0);
    }
}
