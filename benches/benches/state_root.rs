//! Criterion benchmarks of the state commitment: `cargo bench -p
//! velox-benches --features criterion --bench state_root`. Per commit, `State::root()` after
//! rewriting 1k, 10k and 100k accounts of a 1M- and a 10M-account state, on
//! one thread and on all cores (the `state_root` JSON suite,
//! `velox_benches::state_root`, measures the same with its baseline). The
//! writes are not timed. Building the 10M state takes ~1 minute and ~4 GiB.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use velox_benches::available_cores;
use velox_benches::state_root::{build_state, touch, STATE_ACCOUNTS, TOUCHED};

fn state_root(c: &mut Criterion) {
    let mut threads = vec![1, available_cores()];
    threads.dedup();
    for n in STATE_ACCOUNTS {
        let mut state = build_state(n, available_cores());
        let mut round = 0u64;
        let mut g = c.benchmark_group(format!("state_root/{}k_accounts", n / 1_000));
        g.sample_size(10);
        g.warm_up_time(Duration::from_secs(1));
        for k in TOUCHED {
            g.throughput(Throughput::Elements(k as u64));
            for &t in &threads {
                state.set_root_workers(t);
                g.bench_function(format!("touched_{k}/threads_{t}"), |b| {
                    b.iter_custom(|iters| {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            round += 1;
                            touch(&mut state, n, k, round);
                            let start = Instant::now();
                            std::hint::black_box(state.root());
                            total += start.elapsed();
                        }
                        total
                    })
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, state_root);
criterion_main!(benches);
