//! Where a parallel block's time goes: per-phase medians of forced Block-STM
//! on one of the exec suite's workloads (8,192 transactions), for profiling
//! (`perf record -g` on this binary) and for checking which phase stops
//! scaling.
//!
//! ```text
//! cargo run --release -p velox-benches --example exec_profile -- MODE [WORKERS] [BLOCKS] [WORKLOAD]
//! ```
//!
//! - `pair` (default): sequential and parallel blocks alternately, as the
//!   exec suite times them; prints both medians, the speedup and the
//!   parallel phases.
//! - `par`: parallel blocks back to back (caches stay warm from one block to
//!   the next, so this flatters the parallel path; use it for profiles).
//! - `seq`: sequential blocks back to back.
//! - `root`: the tree update of the block's writes alone, on WORKERS threads.
//!
//! WORKERS defaults to 2, BLOCKS to 200, WORKLOAD to `no_conflict`. Runs on
//! mimalloc, as `velox bench` does, with the calling thread pinned to the
//! first core and workers on the next ones, as in the exec suite.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use velox_benches::exec::{forced_config, workload, Workload, BLOCK_TXS};
use velox_exec::{
    execute_sequential, ExecContext, ParallelExecutor, State, VerifiedTx, PARALLEL_PHASES,
};

const CTX: ExecContext = ExecContext { genesis: false };

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Runs `f` on a fresh clone of `state` (not timed); returns its time.
fn timed(state: &State, f: impl FnOnce(&mut State)) -> Duration {
    let mut s = state.clone();
    let t = Instant::now();
    f(&mut s);
    t.elapsed()
}

/// Per-phase times of each parallel block, read from the executor's sums.
struct Phases<'a> {
    exec: &'a ParallelExecutor,
    per_block: Vec<Vec<u64>>,
}

impl<'a> Phases<'a> {
    fn new(exec: &'a ParallelExecutor) -> Self {
        Self {
            exec,
            per_block: vec![Vec::new(); PARALLEL_PHASES.len()],
        }
    }

    fn sums(&self) -> Vec<u64> {
        self.exec
            .metrics
            .phase_ns
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect()
    }

    /// Times one parallel block.
    fn block(&mut self, state: &State, txs: &[VerifiedTx]) -> Duration {
        let before = self.sums();
        let t = timed(state, |s| {
            self.exec.execute(s, txs, CTX);
        });
        let after = self.sums();
        for ((v, a), b) in self.per_block.iter_mut().zip(after).zip(before) {
            v.push(a - b);
        }
        t
    }

    fn print(mut self) {
        let m = &self.exec.metrics;
        let blocks = m.parallel_blocks.load(Ordering::Relaxed).max(1);
        let per_block = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) / blocks;
        println!(
            "  per block: {} executions, {} validations ({} failed), {} dependency waits",
            per_block(&m.executions),
            per_block(&m.validations),
            per_block(&m.validation_failures),
            per_block(&m.dependency_waits)
        );
        for (p, v) in PARALLEL_PHASES.iter().zip(&mut self.per_block) {
            v.sort_unstable();
            if let Some(m) = v.get(v.len() / 2) {
                println!("  {p:>13}: median {:.2} ms", *m as f64 / 1e6);
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("pair");
    let workers: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let blocks: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let name = args.get(3).map(String::as_str).unwrap_or("no_conflict");
    let Some(w) = Workload::ALL.into_iter().find(|w| w.name() == name) else {
        eprintln!("unknown workload {name}");
        std::process::exit(2);
    };
    let cfg = forced_config(workers);
    if let Some(&first) = cfg.worker_cores.first() {
        core_affinity::set_for_current(core_affinity::CoreId { id: first });
    }
    let (state, txs) = workload(w, BLOCK_TXS);
    let exec = ParallelExecutor::new(cfg);
    let mut phases = Phases::new(&exec);
    let seq = |s: &mut State| {
        execute_sequential(s, &txs, CTX);
    };
    match mode {
        "pair" => {
            let (mut ts, mut tp) = (Vec::new(), Vec::new());
            for _ in 0..blocks {
                ts.push(timed(&state, seq));
                tp.push(phases.block(&state, &txs));
            }
            let (ms, mp) = (median(ts), median(tp));
            println!(
                "{name}, {workers} workers: sequential {ms:?}, parallel {mp:?}, speedup {:.3}",
                ms.as_secs_f64() / mp.as_secs_f64()
            );
            phases.print();
        }
        "par" => {
            let t: Vec<_> = (0..blocks).map(|_| phases.block(&state, &txs)).collect();
            println!("{name}, {workers} workers: parallel {:?}", median(t));
            phases.print();
        }
        "seq" => {
            let t: Vec<_> = (0..blocks).map(|_| timed(&state, seq)).collect();
            println!("{name}: sequential {:?}", median(t));
        }
        "root" => {
            let mut post = state.clone();
            execute_sequential(&mut post, &txs, CTX);
            let writes: Vec<_> = post.iter().map(|(k, v)| (*k, *v)).collect();
            let t: Vec<_> = (0..blocks)
                .map(|_| {
                    let mut s = state.clone();
                    s.set_root_workers(workers);
                    for (k, v) in &writes {
                        s.set(*k, Some(*v));
                    }
                    let t = Instant::now();
                    s.root();
                    t.elapsed()
                })
                .collect();
            println!("{name}: tree update on {workers} threads {:?}", median(t));
        }
        other => {
            eprintln!("unknown mode {other}: pair, par, seq or root");
            std::process::exit(2);
        }
    }
}
