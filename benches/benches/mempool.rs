//! Criterion benchmarks of the sharded pool: `cargo bench -p velox-benches
//! --bench mempool`. One thread: a chunk of pre-verified transfers inserted,
//! admitted, popped and committed, against the same chunk pushed through and
//! popped from a crossbeam `ArrayQueue` (the `mempool` JSON suite measures
//! the same at 1, 2 and all cores).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use crossbeam::queue::ArrayQueue;
use velox_benches::mempool::{bench_pool, drain, thread_set, BATCH_TXS};

const TXS: usize = 4_096;

fn mempool(c: &mut Criterion) {
    let set = thread_set(0, TXS);
    let mut g = c.benchmark_group("mempool");
    g.throughput(Throughput::Elements(TXS as u64));
    g.sample_size(30);
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
