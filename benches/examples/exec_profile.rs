#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::Ordering;
use std::time::Instant;
use velox_benches::exec::{forced_config, workload, Workload, BLOCK_TXS};
use velox_exec::{execute_sequential, ExecContext, ParallelExecutor, PARALLEL_PHASES};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("par");
    let workers: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
    let iters: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(200);
    if std::env::var_os("PIN").is_some() {
        core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
    }
    let (state, txs) = workload(Workload::NoConflict, BLOCK_TXS);
    let mut cfg = forced_config(workers);
    cfg.worker_cores = (0..workers).collect();
    let exec = ParallelExecutor::new(cfg);
    let ctx = ExecContext { genesis: false };
    let mut times = Vec::new();
    if mode == "root" {
        // The tree update alone: the no_conflict block's writes, applied
        // untimed, then State::root() on `workers` threads.
        let mut post = state.clone();
        execute_sequential(&mut post, &txs, ctx);
        let writes: Vec<_> = post.iter().map(|(k, v)| (*k, *v)).collect();
        for _ in 0..iters {
            let mut s = state.clone();
            s.set_root_workers(workers);
            for (k, v) in &writes {
                s.set(*k, Some(*v));
            }
            let t = Instant::now();
            s.root();
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "root w={workers} median {:?} best {:?}",
            times[times.len() / 2],
            times[0]
        );
        return;
    }
    let phase = |i: usize| exec.metrics.phase_ns[i].load(Ordering::Relaxed);
    let mut per_phase: Vec<Vec<u64>> = vec![Vec::new(); PARALLEL_PHASES.len()];
    for _ in 0..iters {
        let mut s = state.clone();
        let before: Vec<u64> = (0..PARALLEL_PHASES.len()).map(phase).collect();
        let t = Instant::now();
        if mode == "seq" {
            execute_sequential(&mut s, &txs, ctx);
        } else {
            exec.execute(&mut s, &txs, ctx);
        }
        times.push(t.elapsed());
        for (i, b) in before.iter().enumerate() {
            per_phase[i].push(phase(i) - b);
        }
    }
    times.sort();
    println!(
        "{mode} w={workers} median {:?} best {:?}",
        times[times.len() / 2],
        times[0]
    );
    let m = &exec.metrics;
    let blocks = m.parallel_blocks.load(Ordering::Relaxed).max(1);
    for ((p, ns), v) in PARALLEL_PHASES.iter().zip(&m.phase_ns).zip(&mut per_phase) {
        v.sort_unstable();
        println!(
            "  {p:>13}: mean {:.2} ms, median {:.2} ms",
            ns.load(Ordering::Relaxed) as f64 / blocks as f64 / 1e6,
            v[v.len() / 2] as f64 / 1e6
        );
    }
}
