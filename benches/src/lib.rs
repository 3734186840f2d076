//! The macro benchmark harness behind `velox bench SUITE --json`.
//!
//! Every suite measures its subject *and* a baseline in the same run, on the
//! same machine, and reports the ratio; absolute figures from different
//! machines are not comparable, ratios mostly are. The JSON shape is relied on
//! by scripts outside the project (see docs/benchmarks/README.md): fields may
//! be added, never renamed.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

pub mod alloc;
pub mod exec;
pub mod mempool;
pub mod plot;
pub mod state_root;
pub mod storage;
pub mod verify;

/// Options every suite receives.
#[derive(Clone, Debug)]
pub struct BenchOpts {
    /// Short runs (for tests and smoke checks); figures are noisier.
    pub quick: bool,
    /// Core counts to measure at, ascending; always includes 1 and the
    /// machine's count.
    pub core_counts: Vec<usize>,
}

impl BenchOpts {
    pub fn new(quick: bool) -> Self {
        let all = available_cores();
        let mut core_counts = vec![1];
        if all >= 2 {
            core_counts.push(2);
        }
        if all > 2 {
            core_counts.push(all);
        }
        Self { quick, core_counts }
    }

    /// How long one measurement runs.
    pub fn measure_time(&self) -> Duration {
        if self.quick {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(2)
        }
    }
}

/// Cores this process may run on.
pub fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// One suite's result.
#[derive(Clone, Debug)]
pub struct SuiteReport {
    pub suite: String,
    pub ops_per_s: f64,
    pub baseline: String,
    pub baseline_ops_per_s: f64,
    /// Suite-specific detail: per workload, per core count.
    pub extra: Map<String, Value>,
}

impl SuiteReport {
    pub fn ratio(&self) -> f64 {
        if self.baseline_ops_per_s > 0.0 {
            self.ops_per_s / self.baseline_ops_per_s
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("suite".into(), json!(self.suite));
        m.insert("ops_per_s".into(), json!(self.ops_per_s.round()));
        m.insert("baseline".into(), json!(self.baseline));
        m.insert(
            "baseline_ops_per_s".into(),
            json!(self.baseline_ops_per_s.round()),
        );
        m.insert(
            "ratio".into(),
            json!((self.ratio() * 1000.0).round() / 1000.0),
        );
        m.insert("cores".into(), json!(available_cores()));
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

/// Suites `run_suite` knows, in the order `velox bench all` runs them.
pub const SUITES: &[&str] = &["verify", "exec", "mempool", "storage", "state_root"];

/// Runs one suite by name.
pub fn run_suite(name: &str, opts: &BenchOpts) -> Result<SuiteReport, String> {
    match name {
        "verify" => Ok(verify::run(opts)),
        "exec" => Ok(exec::run(opts)),
        "mempool" => Ok(mempool::run(opts)),
        "storage" => Ok(storage::run(opts)),
        "state_root" => Ok(state_root::run(opts)),
        other => Err(format!(
            "unknown suite '{other}'; known suites: {}",
            SUITES.join(", ")
        )),
    }
}

/// Runs `op` (which performs `ops_per_call` operations) repeatedly for about
/// `time` and returns operations per second.
pub fn measure(time: Duration, ops_per_call: u64, mut op: impl FnMut()) -> f64 {
    op(); // warm up caches and allocator
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < time {
        op();
        ops += ops_per_call;
    }
    ops as f64 / start.elapsed().as_secs_f64()
}

/// Runs `per_thread(i)` on `threads` threads pinned to distinct cores (where
/// the machine has them), all for about `time`; returns total ops per second.
/// `per_thread` returns a closure performing `ops_per_call` operations.
pub fn measure_parallel<F, G>(
    threads: usize,
    time: Duration,
    ops_per_call: u64,
    per_thread: F,
) -> f64
where
    F: Fn(usize) -> G + Sync,
    G: FnMut(),
{
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let barrier = std::sync::Barrier::new(threads);
    let total: f64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let per_thread = &per_thread;
                let barrier = &barrier;
                let core = cores.get(i % cores.len().max(1)).copied();
                s.spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    let mut op = per_thread(i);
                    barrier.wait();
                    measure(time, ops_per_call, &mut op)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .sum()
    });
    total
}
