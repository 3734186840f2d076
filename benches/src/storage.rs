//! `storage`: the commit path against raw RocksDB, and one 1000-transaction
//! block validated and applied end to end.
//!
//! **Commit path.** A chain of blocks of [`BLOCK_TXS`] signed transfers (each
//! from its own sender to a recipient drawn from [`RECIPIENTS`] accounts, so
//! each touches two accounts) is executed once with the sequential executor
//! before timing. Each run opens three fresh RocksDB databases in fresh
//! temporary directories, commits genesis to each (untimed), then commits
//! every block to each of the three subjects:
//!
//! - `chain`: [`ChainStore::commit`] as the node calls it (account cache on,
//!   at its default size): encoding the block record, transaction locations,
//!   state diff and commit records, the write, and the cache update.
//! - `chain_no_cache`: the same without the account cache.
//! - `raw` (the baseline): a bare `rocksdb::DB` opened with the same options
//!   ([`velox_storage::rocks::db_options`]) writing, per block, one
//!   `rocksdb::WriteBatch` of exactly the keys and values the commit path
//!   writes (recorded from it beforehand).
//!
//! WAL on for all, no fsync (the node's default `sync_writes = false`).
//! Block by block the three take turns in rotating order, so a change in the
//! machine's load (other processes) hits all alike, and each rate comes from
//! the median commit time. `ops_per_s` is state updates (diff entries) per
//! second; all three write the same number per block, so the ratio is a
//! ratio of commit times. Runs are short enough that no memtable fills: this
//! is the foreground write path (WAL append, memtable inserts); flushes and
//! compaction run in RocksDB's background threads in all cases alike.
//!
//! **1000-transaction block** (`block_1000_ms`). On a fresh database, blocks
//! of the chain go through the phases a validator runs: signature checks of
//! the 1000 signed transfers with the node's batch verifier
//! ([`velox_exec::verify_batch`], split over the machine's cores as the
//! verify tiles would, and also on one core), execution with the node's
//! parallel executor (which falls back to sequential where that is faster;
//! the sequential executor is timed too) and the commit (building the block
//! record from the verified transactions as the storage tile does, then
//! [`ChainStore::commit`]). Each phase's figure is its median over blocks.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map};
use velox_exec::{
    execute_sequential, verify_batch, AccountId, BlockOutput, ExecConfig, ExecContext,
    ParallelExecutor, State, Tx, TxBody, TxBuilder, VerifiedTx,
};
use velox_storage::rocks::{db_options, write_options, RocksConfig};
use velox_storage::{
    BlockRecord, Cf, ChainStore, MemStore, RocksStore, Store, StoreError, StoreView, Visitor,
    WriteBatch, ACCOUNT_CACHE_ENTRIES_DEFAULT,
};

use crate::{available_cores, BenchOpts, SuiteReport};

const CHAIN: u64 = 1;
/// Transactions per block: the seed plan's 1000-transaction block.
pub const BLOCK_TXS: usize = 1_000;
/// Accounts recipients are drawn from (uniformly): most transfers pay an
/// account the block does not otherwise touch, as in a chain with many users.
pub const RECIPIENTS: usize = 100_000;
const SENDER_BALANCE: u64 = 1 << 40;
const GENESIS: ExecContext = ExecContext { genesis: true };
const CTX: ExecContext = ExecContext { genesis: false };

/// One block of the chain, executed.
pub struct Block {
    /// The signed transactions as received (not yet verified).
    pub txs: Vec<Tx>,
    pub record: BlockRecord,
    /// The sequential executor's output on the state after the previous
    /// block.
    pub output: BlockOutput,
}

/// Genesis and a chain of executed blocks of signed transfers.
pub struct Workload {
    pub genesis: (BlockRecord, BlockOutput),
    /// State after genesis.
    pub genesis_state: State,
    pub blocks: Vec<Block>,
}

fn sender_key(i: usize) -> SigningKey {
    let mut b = [0x5au8; 32];
    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
    SigningKey::from_bytes(&b)
}

impl Workload {
    /// Signs (on every core) and executes `blocks` blocks of [`BLOCK_TXS`]
    /// transfers; sender `s` sends nonce `j` in block `j`.
    pub fn build(blocks: usize) -> Self {
        let keys: Vec<SigningKey> = (0..BLOCK_TXS).map(sender_key).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(0x5707);
        let recipients: Vec<AccountId> = (0..RECIPIENTS)
            .map(|_| {
                let mut b = [0u8; 32];
                rng.fill(&mut b);
                AccountId(b)
            })
            .collect();
        // to[j][s]: the recipient of sender s in block j.
        let to: Vec<Vec<AccountId>> = (0..blocks)
            .map(|_| {
                (0..BLOCK_TXS)
                    .map(|_| recipients[rng.gen_range(0..RECIPIENTS)])
                    .collect()
            })
            .collect();
        let signed = sign_all(&keys, &to);

        let gtxs: Vec<VerifiedTx> = keys
            .iter()
            .map(|k| {
                VerifiedTx::genesis_alloc(
                    CHAIN,
                    AccountId(k.verifying_key().to_bytes()),
                    SENDER_BALANCE,
                )
            })
            .collect();
        let mut state = State::new();
        let gout = execute_sequential(&mut state, &gtxs, GENESIS);
        let grecord = BlockRecord {
            index: 0,
            timestamp_ms: 0,
            txs: gtxs.iter().map(|t| t.bytes().to_vec()).collect(),
        };
        let genesis_state = state.clone();
        let blocks = signed
            .into_iter()
            .enumerate()
            .map(|(j, bytes)| {
                let txs: Vec<Tx> = bytes
                    .iter()
                    .map(|b| Tx::decode(b).expect("signed transfers decode"))
                    .collect();
                let verified: Vec<VerifiedTx> =
                    txs.iter().cloned().map(VerifiedTx::from_trusted).collect();
                let output = execute_sequential(&mut state, &verified, CTX);
                assert_eq!(output.accepted(), BLOCK_TXS, "every transfer succeeds");
                Block {
                    txs,
                    record: BlockRecord {
                        index: j as u64 + 1,
                        timestamp_ms: j as u64 + 1,
                        txs: bytes,
                    },
                    output,
                }
            })
            .collect();
        Self {
            genesis: (grecord, gout),
            genesis_state,
            blocks,
        }
    }

    /// State updates (diff entries) of all blocks.
    pub fn state_updates(&self) -> u64 {
        self.blocks
            .iter()
            .map(|b| b.output.diff.entries.len() as u64)
            .sum()
    }
}

/// Signs every transfer, senders split over the machine's cores; returns
/// each block's transactions' bytes in sender order.
fn sign_all(keys: &[SigningKey], to: &[Vec<AccountId>]) -> Vec<Vec<Vec<u8>>> {
    let threads = available_cores().min(keys.len()).max(1);
    let mut out: Vec<Vec<Vec<u8>>> = vec![vec![Vec::new(); keys.len()]; to.len()];
    let parts: Vec<Vec<(usize, usize, Vec<u8>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut v = Vec::new();
                    for (si, key) in keys.iter().enumerate().skip(t).step_by(threads) {
                        for (j, block_to) in to.iter().enumerate() {
                            let b = TxBuilder {
                                chain_id: CHAIN,
                                nonce: j as u64,
                                fee: 1,
                                body: TxBody::Transfer {
                                    to: block_to[si],
                                    amount: 1,
                                },
                            };
                            v.push((j, si, b.sign(key)));
                        }
                    }
                    v
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("signing thread panicked"))
            .collect()
    });
    for (j, si, bytes) in parts.into_iter().flatten() {
        out[j][si] = bytes;
    }
    out
}

/// A store that applies writes to memory and keeps every batch, to capture
/// exactly what the commit path writes.
#[derive(Default)]
struct RecordingStore {
    inner: MemStore,
    batches: Mutex<Vec<WriteBatch>>,
}

impl Store for RecordingStore {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(cf, key)
    }
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.batches.lock().expect("poisoned").push(batch.clone());
        self.inner.write(batch)
    }
    fn for_each_range(
        &self,
        cf: Cf,
        from: &[u8],
        to: Option<&[u8]>,
        f: &mut Visitor<'_>,
    ) -> Result<(), StoreError> {
        self.inner.for_each_range(cf, from, to, f)
    }
    fn with_view(
        &self,
        f: &mut dyn FnMut(&dyn StoreView) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.inner.with_view(f)
    }
}

/// The batches [`ChainStore::commit`] writes for genesis and then each
/// block of `w`, in order.
pub fn record_commits(w: &Workload) -> Vec<WriteBatch> {
    let store = Arc::new(RecordingStore::default());
    let chain = ChainStore::new(store.clone());
    chain.commit(&w.genesis.0, &w.genesis.1).expect("genesis");
    for b in &w.blocks {
        chain.commit(&b.record, &b.output).expect("commit");
    }
    let batches = std::mem::take(&mut *store.batches.lock().expect("poisoned"));
    assert_eq!(batches.len(), w.blocks.len() + 1);
    batches
}

/// Keys and values of a batch.
pub fn batch_bytes(b: &WriteBatch) -> usize {
    b.ops
        .iter()
        .map(|(_, k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
        .sum()
}

/// A bare RocksDB with the commit path's options and column families.
pub struct RawDb {
    db: rocksdb::DB,
    write: rocksdb::WriteOptions,
}

impl RawDb {
    pub fn open(path: &Path) -> Self {
        let cfg = RocksConfig::default();
        let (opts, cfs) = db_options(&cfg);
        let db = rocksdb::DB::open_cf_descriptors(&opts, path, cfs).expect("open rocksdb");
        Self {
            db,
            write: write_options(&cfg),
        }
    }

    /// Writes `b` as one RocksDB write batch (column family handles
    /// resolved once per batch, buffer sized once, as the commit path does);
    /// returns the time it took.
    pub fn write_one(&self, b: &WriteBatch) -> Duration {
        let bytes = batch_bytes(b);
        let started = Instant::now();
        let cfs = Cf::ALL.map(|c| self.db.cf_handle(c.name()).expect("cf"));
        let mut wb = rocksdb::WriteBatch::with_capacity_bytes(bytes + bytes / 8 + 64);
        for (cf, k, v) in &b.ops {
            match v {
                Some(v) => wb.put_cf(cfs[cf.index()], k, v),
                None => wb.delete_cf(cfs[cf.index()], k),
            }
        }
        self.db.write_opt(wb, &self.write).expect("write");
        started.elapsed()
    }

    /// [`RawDb::write_one`] for each of `batches`, in order.
    pub fn write_all(&self, batches: &[WriteBatch]) -> Vec<Duration> {
        batches.iter().map(|b| self.write_one(b)).collect()
    }
}

/// A chain store on a fresh RocksDB at `path` with genesis committed.
pub fn fresh_chain(path: &Path, w: &Workload, cache_entries: usize) -> ChainStore {
    let store = RocksStore::open(path, RocksConfig::default()).expect("open rocksdb");
    let chain = ChainStore::with_account_cache(Arc::new(store), cache_entries);
    chain.commit(&w.genesis.0, &w.genesis.1).expect("genesis");
    chain
}

/// Commits `blocks` (the chain's first ones, in order) to `chain`; returns
/// each commit's duration.
pub fn commit_all(chain: &ChainStore, blocks: &[Block]) -> Vec<Duration> {
    blocks
        .iter()
        .map(|b| {
            let started = Instant::now();
            chain.commit(&b.record, &b.output).expect("commit");
            started.elapsed()
        })
        .collect()
}

/// What a commit-path run writes to: the three subjects of the suite.
enum Target {
    Chain(ChainStore),
    Raw(RawDb),
}

impl Target {
    /// Commits block `j` of `w` (`recorded[j + 1]` for the raw database).
    fn commit(&self, j: usize, w: &Workload, recorded: &[WriteBatch]) -> Duration {
        match self {
            Target::Chain(c) => commit_all(c, &w.blocks[j..=j])[0],
            Target::Raw(db) => db.write_one(&recorded[j + 1]),
        }
    }
}

fn median(v: &mut [f64]) -> f64 {
    assert!(!v.is_empty());
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn median_ms(d: &[Duration]) -> f64 {
    median(&mut d.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>())
}

fn mean_ms(d: &[Duration]) -> f64 {
    d.iter().sum::<Duration>().as_secs_f64() * 1e3 / d.len() as f64
}

fn percentile_ms(d: &[Duration], p: f64) -> f64 {
    let mut ms: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let i = ((ms.len() as f64 - 1.0) * p).round() as usize;
    ms[i]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Phases of one block, milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockPhases {
    pub verify_ms: f64,
    pub verify_1core_ms: f64,
    pub execute_ms: f64,
    pub execute_sequential_ms: f64,
    pub commit_ms: f64,
}

/// Verifies `txs` with the batch verifier on `threads` threads, in chunks
/// of the verifier's batch size dealt round-robin (as ingress batches reach
/// the verify tiles).
pub fn verify_parallel(txs: &[Tx], threads: usize) -> Vec<VerifiedTx> {
    let chunk = velox_exec::verify::VERIFY_BATCH_TXS_MAX;
    let chunks: Vec<&[Tx]> = txs.chunks(chunk).collect();
    let threads = threads.clamp(1, chunks.len().max(1));
    let mut results: Vec<Vec<VerifiedTx>> = vec![Vec::new(); chunks.len()];
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let chunks = &chunks;
                s.spawn(move || {
                    (t..chunks.len())
                        .step_by(threads)
                        .map(|i| {
                            let ok: Vec<VerifiedTx> = verify_batch(chunks[i].to_vec(), CHAIN)
                                .into_iter()
                                .map(|r| r.expect("valid signature"))
                                .collect();
                            (i, ok)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, ok) in h.join().expect("verify thread panicked") {
                results[i] = ok;
            }
        }
    });
    results.into_iter().flatten().collect()
}

/// Runs the first `n` blocks of `w` through verify, execute and commit on a
/// fresh database; returns each block's phases (the first block, which
/// warms caches and allocators, is not returned).
pub fn block_phases(w: &Workload, n: usize) -> Vec<BlockPhases> {
    let n = n.min(w.blocks.len());
    let cores = available_cores();
    let dir = tempfile::tempdir().expect("temp dir");
    let chain = fresh_chain(dir.path(), w, ACCOUNT_CACHE_ENTRIES_DEFAULT);
    let exec = ParallelExecutor::new(ExecConfig {
        exec_workers: cores,
        ..ExecConfig::default()
    });
    let mut state = w.genesis_state.clone();
    let mut out = Vec::with_capacity(n);
    for b in &w.blocks[..n] {
        let mut p = BlockPhases::default();
        let input = b.txs.clone();
        let started = Instant::now();
        let one = verify_batch(input, CHAIN);
        p.verify_1core_ms = started.elapsed().as_secs_f64() * 1e3;
        assert!(one.iter().all(|r| r.is_ok()));

        let started = Instant::now();
        let verified = verify_parallel(&b.txs, cores);
        p.verify_ms = started.elapsed().as_secs_f64() * 1e3;
        assert_eq!(verified.len(), BLOCK_TXS);

        let mut seq_state = state.clone();
        let started = Instant::now();
        let seq = execute_sequential(&mut seq_state, &verified, CTX);
        p.execute_sequential_ms = started.elapsed().as_secs_f64() * 1e3;
        drop(seq_state);

        let started = Instant::now();
        let output = exec.execute(&mut state, &verified, CTX);
        p.execute_ms = started.elapsed().as_secs_f64() * 1e3;
        assert_eq!(output, seq, "parallel and sequential executors agree");
        assert_eq!(output.root, b.output.root);

        let started = Instant::now();
        let record = BlockRecord {
            index: b.record.index,
            timestamp_ms: b.record.timestamp_ms,
            txs: verified.iter().map(|t| t.bytes().to_vec()).collect(),
        };
        chain.commit(&record, &output).expect("commit");
        p.commit_ms = started.elapsed().as_secs_f64() * 1e3;
        out.push(p);
    }
    out.remove(0);
    out
}

pub fn run(opts: &BenchOpts) -> SuiteReport {
    let (blocks, runs, phase_blocks) = if opts.quick { (16, 1, 6) } else { (200, 5, 40) };
    let w = Workload::build(blocks);
    let recorded = record_commits(&w);
    let updates = w.state_updates();
    let txs = (blocks * BLOCK_TXS) as f64;

    // Subjects: 0 chain (cache on), 1 chain without cache, 2 raw RocksDB.
    let mut per_commit: [Vec<Duration>; 3] = Default::default();
    let mut run_ratios = Vec::new();
    for r in 0..runs {
        let dirs: Vec<_> = (0..3)
            .map(|_| tempfile::tempdir().expect("temp dir"))
            .collect();
        let raw = RawDb::open(dirs[2].path());
        raw.write_all(&recorded[..1]);
        let targets = [
            Target::Chain(fresh_chain(
                dirs[0].path(),
                &w,
                ACCOUNT_CACHE_ENTRIES_DEFAULT,
            )),
            Target::Chain(fresh_chain(dirs[1].path(), &w, 0)),
            Target::Raw(raw),
        ];
        let mut run: [Vec<Duration>; 3] = Default::default();
        // Block by block, in rotating order: a change in the machine's load
        // (other processes) hits all three alike.
        for j in 0..w.blocks.len() {
            for k in 0..targets.len() {
                let i = (j + k + r) % targets.len();
                run[i].push(targets[i].commit(j, &w, &recorded));
            }
        }
        run_ratios.push(round3(median_ms(&run[2]) / median_ms(&run[0])));
        for (all, d) in per_commit.iter_mut().zip(run) {
            all.extend(d);
        }
    }
    let per_block = updates as f64 / blocks as f64;
    let rate = |d: &[Duration]| per_block / (median_ms(d) / 1e3);
    let chain = rate(&per_commit[0]);
    let no_cache = rate(&per_commit[1]);
    let raw = rate(&per_commit[2]);

    let phases = block_phases(&w, phase_blocks);
    let med =
        |f: fn(&BlockPhases) -> f64| round3(median(&mut phases.iter().map(f).collect::<Vec<_>>()));
    let total = med(|p| p.verify_ms + p.execute_ms + p.commit_ms);
    let total_1core = med(|p| p.verify_1core_ms + p.execute_sequential_ms + p.commit_ms);

    let puts: usize = recorded[1..].iter().map(|b| b.ops.len()).sum();
    let bytes: usize = recorded[1..].iter().map(batch_bytes).sum();
    let mut extra = Map::new();
    extra.insert("block_txs".into(), json!(BLOCK_TXS));
    extra.insert("commits_per_run".into(), json!(blocks));
    extra.insert("runs".into(), json!(runs));
    extra.insert(
        "state_updates_per_commit".into(),
        json!((updates as f64 / blocks as f64).round()),
    );
    extra.insert(
        "puts_per_commit".into(),
        json!((puts as f64 / blocks as f64).round()),
    );
    extra.insert(
        "bytes_per_commit".into(),
        json!((bytes as f64 / blocks as f64).round()),
    );
    extra.insert(
        "txs_per_s".into(),
        json!((chain * txs / updates as f64).round()),
    );
    extra.insert(
        "commit_ms_p50".into(),
        json!(round3(percentile_ms(&per_commit[0], 0.5))),
    );
    extra.insert(
        "commit_ms_p99".into(),
        json!(round3(percentile_ms(&per_commit[0], 0.99))),
    );
    extra.insert(
        "commit_ms_mean".into(),
        json!(round3(mean_ms(&per_commit[0]))),
    );
    extra.insert(
        "commit_no_cache_ms_p50".into(),
        json!(round3(percentile_ms(&per_commit[1], 0.5))),
    );
    extra.insert(
        "raw_ms_p50".into(),
        json!(round3(percentile_ms(&per_commit[2], 0.5))),
    );
    extra.insert(
        "raw_ms_p99".into(),
        json!(round3(percentile_ms(&per_commit[2], 0.99))),
    );
    extra.insert("raw_ms_mean".into(), json!(round3(mean_ms(&per_commit[2]))));
    extra.insert("ops_per_s_no_cache".into(), json!(no_cache.round()));
    extra.insert("ratio_no_cache".into(), json!(round3(no_cache / raw)));
    extra.insert("run_ratios".into(), json!(run_ratios));
    extra.insert("sync_writes".into(), json!(false));
    extra.insert(
        "block_1000_ms".into(),
        json!({
            "total_ms": total,
            "verify_ms": med(|p| p.verify_ms),
            "execute_ms": med(|p| p.execute_ms),
            "commit_ms": med(|p| p.commit_ms),
            "verify_threads": available_cores(),
            "total_1core_ms": total_1core,
            "verify_1core_ms": med(|p| p.verify_1core_ms),
            "execute_sequential_ms": med(|p| p.execute_sequential_ms),
            "blocks": phases.len(),
            "bar_ms": 100,
            "aim_ms": 10,
        }),
    );
    SuiteReport {
        suite: "storage".into(),
        ops_per_s: chain,
        baseline: "raw RocksDB WriteBatch of the same keys and values (same options, WAL on)"
            .into(),
        baseline_ops_per_s: raw,
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(store: &dyn Store) -> Vec<(Cf, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        for cf in Cf::ALL {
            store
                .for_each(cf, &mut |k, v| {
                    out.push((cf, k.to_vec(), v.to_vec()));
                    Ok(())
                })
                .unwrap();
        }
        out
    }

    #[test]
    fn the_baseline_writes_exactly_what_the_commit_path_writes() {
        let w = Workload::build(3);
        assert_eq!(w.blocks.len(), 3);
        assert!(w.state_updates() > 3 * BLOCK_TXS as u64);
        let recorded = record_commits(&w);
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        {
            let chain = fresh_chain(a.path(), &w, ACCOUNT_CACHE_ENTRIES_DEFAULT);
            assert_eq!(commit_all(&chain, &w.blocks).len(), 3);
            let raw = RawDb::open(b.path());
            raw.write_all(&recorded);
        }
        let open = |p: &Path| RocksStore::open(p, RocksConfig::default()).unwrap();
        let (chain, raw) = (dump(&open(a.path())), dump(&open(b.path())));
        // Three blocks of transaction locations, senders and recipients.
        assert!(chain.len() > 3 * BLOCK_TXS + BLOCK_TXS);
        assert!(
            chain == raw,
            "the raw baseline wrote different keys or values"
        );
    }

    #[test]
    fn block_phases_run_the_chain() {
        let w = Workload::build(3);
        let p = block_phases(&w, 3);
        assert_eq!(p.len(), 2);
        assert!(p
            .iter()
            .all(|p| p.verify_ms > 0.0 && p.execute_ms > 0.0 && p.commit_ms > 0.0));
    }
}
