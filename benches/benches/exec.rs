//! Criterion benchmarks of block execution: `cargo bench -p velox-benches --features criterion
//! --bench exec`. The same workloads as the `exec` JSON suite
//! (`velox_benches::exec`): sequential, and parallel at 1, 2 and all cores.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use velox_benches::available_cores;
use velox_benches::exec::{config, workload, Workload, BLOCK_TXS};
use velox_exec::{execute_sequential, ExecContext, ParallelExecutor};

const CTX: ExecContext = ExecContext { genesis: false };

fn exec(c: &mut Criterion) {
    let mut cores = vec![1, 2, available_cores()];
    cores.dedup();
    // Workers are pinned to the first cores (`config`); the caller is worker
    // 0, so it takes the first, as in the JSON suite.
    let first = config(1).worker_cores.first().copied();
    if let Some(id) = first {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
    for w in Workload::ALL {
        let (state, txs) = workload(w, BLOCK_TXS);
        let mut g = c.benchmark_group(format!("exec/{}", w.name()));
        g.throughput(Throughput::Elements(txs.len() as u64));
        g.sample_size(20);
        g.bench_function("sequential", |b| {
            b.iter_batched_ref(
                || state.clone(),
                |s| execute_sequential(s, &txs, CTX),
                BatchSize::LargeInput,
            )
        });
        for &n in &cores {
            let exec = ParallelExecutor::new(config(n));
            g.bench_function(format!("parallel/{n}"), |b| {
                b.iter_batched_ref(
                    || state.clone(),
                    |s| exec.execute(s, &txs, CTX),
                    BatchSize::LargeInput,
                )
            });
        }
        g.finish();
    }
}

criterion_group!(benches, exec);
criterion_main!(benches);
