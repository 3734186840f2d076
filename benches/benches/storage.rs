//! Criterion benchmarks of the storage commit path: `cargo bench -p
//! velox-benches --features criterion --bench storage`. The same workload as the `storage` JSON
//! suite (`velox_benches::storage`): 1000-transfer blocks committed through
//! `ChainStore::commit` (account cache on and off) and as raw RocksDB write
//! batches of the same keys and values; and the phases of one
//! 1000-transaction block (verify, execute, commit).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use velox_benches::available_cores;
use velox_benches::storage::{
    commit_all, fresh_chain, record_commits, verify_parallel, RawDb, Workload, BLOCK_TXS,
};
use velox_exec::{execute_sequential, verify_batch, ExecContext};
use velox_storage::{BlockRecord, ACCOUNT_CACHE_ENTRIES_DEFAULT};

/// Blocks per fresh database; longer runs restart on a new one.
const BLOCKS: usize = 32;
const CHAIN: u64 = 1;
const CTX: ExecContext = ExecContext { genesis: false };

/// Times `iters` commits, `BLOCKS` at a time on fresh databases (opening
/// and genesis untimed).
fn timed(iters: u64, mut run: impl FnMut(usize) -> Vec<Duration>) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters as usize;
    while left > 0 {
        let n = left.min(BLOCKS);
        total += run(n).iter().sum::<Duration>();
        left -= n;
    }
    total
}

fn storage(c: &mut Criterion) {
    let w = Workload::build(BLOCKS);
    let recorded = record_commits(&w);
    let updates = w.state_updates() / BLOCKS as u64;
    let mut g = c.benchmark_group("storage/commit");
    g.throughput(Throughput::Elements(updates));
    g.sample_size(20);
    for (name, cache) in [
        ("chain", ACCOUNT_CACHE_ENTRIES_DEFAULT),
        ("chain_no_cache", 0),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed(iters, |n| {
                    let dir = tempfile::tempdir().unwrap();
                    let chain = fresh_chain(dir.path(), &w, cache);
                    commit_all(&chain, &w.blocks[..n])
                })
            })
        });
    }
    g.bench_function("raw_rocksdb", |b| {
        b.iter_custom(|iters| {
            timed(iters, |n| {
                let dir = tempfile::tempdir().unwrap();
                let db = RawDb::open(dir.path());
                db.write_all(&recorded[..1]);
                db.write_all(&recorded[1..=n])
            })
        })
    });
    g.finish();

    let block = &w.blocks[0];
    let mut g = c.benchmark_group("storage/block_1000");
    g.throughput(Throughput::Elements(BLOCK_TXS as u64));
    g.sample_size(10);
    g.bench_function("verify_1core", |b| {
        b.iter_batched(
            || block.txs.clone(),
            |txs| verify_batch(txs, CHAIN),
            BatchSize::LargeInput,
        )
    });
    let cores = available_cores();
    g.bench_function(format!("verify_{cores}cores"), |b| {
        b.iter(|| verify_parallel(&block.txs, cores))
    });
    let verified = verify_parallel(&block.txs, cores);
    g.bench_function("execute_sequential", |b| {
        b.iter_batched_ref(
            || w.genesis_state.clone(),
            |s| execute_sequential(s, &verified, CTX),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("commit", |b| {
        b.iter_custom(|iters| {
            timed(iters, |n| {
                let dir = tempfile::tempdir().unwrap();
                let chain = fresh_chain(dir.path(), &w, ACCOUNT_CACHE_ENTRIES_DEFAULT);
                w.blocks[..n]
                    .iter()
                    .map(|b| {
                        let started = std::time::Instant::now();
                        let record = BlockRecord {
                            index: b.record.index,
                            timestamp_ms: b.record.timestamp_ms,
                            txs: b.txs.iter().map(|t| t.bytes().to_vec()).collect(),
                        };
                        chain.commit(&record, &b.output).unwrap();
                        started.elapsed()
                    })
                    .collect()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, storage);
criterion_main!(benches);
