//! Criterion benchmarks of the sharded pool: `cargo bench -p velox-benches --features criterion
//! --bench mempool`. One thread:
//! - ingestion: a chunk of pre-verified transfers inserted into an empty
//!   pool (what a verify tile does), against pushes into a crossbeam
//!   `ArrayQueue`;
//! - lifecycle: the chunk inserted, admitted, popped and committed, against
//!   the same chunk pushed through and popped from an `ArrayQueue`.
//!
//! The `mempool` JSON suite measures both at 1, 2 and all cores.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use crossbeam::queue::ArrayQueue;
use velox_benches::mempool::{bench_pool, drain, thread_set, BATCH_TXS};
use velox_mempool::{ShardedPool, ShardedPoolConfig};

const TXS: usize = 4_096;

fn mempool(c: &mut Criterion) {
    let set = thread_set(0, TXS);
    let mut g = c.benchmark_group("mempool");
    g.throughput(Throughput::Elements(TXS as u64));
    g.sample_size(30);
    let empty_pool = || -> ShardedPool<u64> {
        ShardedPool::new(
            ShardedPoolConfig {
                txs_max: TXS,
                inbox_depth: TXS,
                ..ShardedPoolConfig::default()
            },
            Box::new(|_| 0),
        )
    };
    // Ingestion: the pool (and its drop) is made outside the timing.
    g.bench_function("sharded_pool/insert", |b| {
        b.iter_batched(
            || (empty_pool(), set.clone()),
            |(pool, txs)| {
                for (i, t) in txs.into_iter().enumerate() {
                    pool.insert(t, i as u64, 0).expect("room");
                }
                pool
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("array_queue/push", |b| {
        b.iter_batched(
            || (ArrayQueue::new(TXS), set.clone()),
            |(q, txs)| {
                for t in txs {
                    q.push(t).expect("room");
                }
                q
            },
            BatchSize::LargeInput,
        )
    });
    let pool = bench_pool(TXS);
    let mut out = Vec::new();
    g.bench_function("sharded_pool/insert_admit_pop_commit", |b| {
        b.iter_batched(
            || set.clone(),
            |txs| {
                for (i, t) in txs.into_iter().enumerate() {
                    pool.insert(t, i as u64, 0).expect("room");
                    if i % 512 == 511 {
                        pool.handle_inbox(&mut out);
                    }
                }
                let n = drain(&pool, &mut out);
                assert_eq!(n, TXS);
            },
            BatchSize::LargeInput,
        )
    });
    let q = ArrayQueue::new(TXS);
    g.bench_function("array_queue/push_pop", |b| {
        b.iter_batched(
            || set.clone(),
            |txs| {
                for t in txs {
                    q.push(t).expect("room");
                }
                let mut n = 0;
                while let Some(t) = q.pop() {
                    drop(t);
                    n += 1;
                    if n % BATCH_TXS == 0 {
                        std::hint::black_box(n);
                    }
                }
                assert_eq!(n, TXS);
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, mempool);
criterion_main!(benches);
