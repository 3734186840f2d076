//! `exec`: block execution, the sequential executor (the baseline) against
//! the Block-STM parallel executor at each core count, on four workloads:
//!
//! - `no_conflict`: every transfer has its own sender and recipient.
//! - `heavy_conflict`: every transfer pays one hot account.
//! - `mixed`: half the transactions add to one hot counter (`KvAdd`), half
//!   are conflict-free transfers.
//! - `zipf`: distinct senders, recipients drawn Zipf(s = 1) over 1,000
//!   accounts.
//!
//! Transactions are signed and verified before timing (signature checks are
//! not execution); each timed run starts from a fresh clone of the pre-block
//! state, cloned outside the timed region. Each parallel configuration is
//! timed interleaved with the sequential executor and both rates come from
//! median block times, so `speedup` compares like with like even on a busy
//! machine; `sequential_ops_per_s` of a workload is the median over its pairs. The parallel executor runs with its
//! production configuration (fallbacks on) and also forced to run Block-STM
//! whatever the block looks like, to show what the fallback saves. Per
//! workload, `sequential_transition_ops_per_s` times the sequential state
//! transition alone (`apply_sequential`: no tree update), interleaved with
//! whole sequential blocks, and `transition_share_of_sequential_block` is
//! the share of a whole block's time it takes.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};
use velox_exec::{
    apply_sequential, execute_sequential, verify_batch, Account, AccountId, ExecConfig,
    ExecContext, ExecPath, ParallelExecutor, State, StateKey, StateValue, Tx, TxBody, TxBuilder,
    VerifiedTx,
};

use crate::{BenchOpts, SuiteReport};

const CHAIN: u64 = 1;
/// Transactions per block: large enough that per-block costs (spawning
/// workers, the key table) are amortised as in a busy node.
pub const BLOCK_TXS: usize = 8_192;
const ZIPF_ACCOUNTS: usize = 1_000;
const CTX: ExecContext = ExecContext { genesis: false };

/// The benchmark workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    NoConflict,
    HeavyConflict,
    Mixed,
    Zipf,
}

impl Workload {
    pub const ALL: [Workload; 4] = [
        Self::NoConflict,
        Self::HeavyConflict,
        Self::Mixed,
        Self::Zipf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::NoConflict => "no_conflict",
            Self::HeavyConflict => "heavy_conflict",
            Self::Mixed => "mixed",
            Self::Zipf => "zipf",
        }
    }
}

fn signing_key(i: usize) -> SigningKey {
    let mut b = [0x42u8; 32];
    b[..8].copy_from_slice(&(i as u64).to_le_bytes());
    SigningKey::from_bytes(&b)
}

/// A recipient address (random-looking bytes; it need not be a valid key).
fn account(i: usize) -> AccountId {
    let mut b = [0u8; 32];
    ChaCha8Rng::seed_from_u64(i as u64 ^ 0x7777).fill(&mut b);
    AccountId(b)
}

/// A block of `n` transactions of `w` and the funded state it runs on.
pub fn workload(w: Workload, n: usize) -> (State, Vec<VerifiedTx>) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut state = State::new();
    let zipf_cdf: Vec<f64> = {
        let weights: Vec<f64> = (1..=ZIPF_ACCOUNTS).map(|k| 1.0 / k as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        weights
            .iter()
            .map(|x| {
                acc += x / total;
                acc
            })
            .collect()
    };
    let mut raw = Vec::with_capacity(n);
    for i in 0..n {
        let key = signing_key(i);
        let sender = AccountId(key.verifying_key().to_bytes());
        state.set(
            StateKey::Account(sender),
            Some(StateValue::Account(Account {
                balance: 1_000_000,
                nonce: 0,
            })),
        );
        let body = match w {
            Workload::NoConflict => TxBody::Transfer {
                to: account(i),
                amount: 10,
            },
            Workload::HeavyConflict => TxBody::Transfer {
                to: account(usize::MAX),
                amount: 10,
            },
            Workload::Mixed if i % 2 == 0 => TxBody::KvAdd {
                key: [0xee; 32],
                delta: 1,
            },
            Workload::Mixed => TxBody::Transfer {
                to: account(i),
                amount: 10,
            },
            Workload::Zipf => {
                let u: f64 = rng.gen();
                let k = zipf_cdf.partition_point(|c| *c < u).min(ZIPF_ACCOUNTS - 1);
                TxBody::Transfer {
                    to: account(1_000_000 + k),
                    amount: 10,
                }
            }
        };
        let b = TxBuilder {
            chain_id: CHAIN,
            nonce: 0,
            fee: 1,
            body,
        };
        raw.push(Tx::decode(&b.sign(&key)).expect("valid"));
    }
    let txs: Vec<VerifiedTx> = verify_batch(raw, CHAIN)
        .into_iter()
        .map(|r| r.expect("verifies"))
        .collect();
    // A node's state map is large and doubles rarely; a small benchmark state
    // would double inside every timed block (for both executors). Clones keep
    // the capacity.
    state.reserve(2 * n);
    // Build the commitment tree now, so that a timed block pays only for
    // the keys it writes (as in a node, where the tree is current after
    // every block).
    state.root();
    (state, txs)
}

/// Runs `a` and `b` alternately, each on a fresh clone of `state` (clones
/// not timed), for about `time` in all; returns their tx/s from the *median*
/// block time. Interleaving exposes both to the same background load, and the
/// median discards blocks that were preempted: on a shared machine the ratio
/// of the two is far steadier than either figure.
fn measure_pair(
    time: Duration,
    state: &State,
    txs: &[VerifiedTx],
    mut a: impl FnMut(&mut State),
    mut b: impl FnMut(&mut State),
) -> (f64, f64) {
    let mut ta = Vec::new();
    let mut tb = Vec::new();
    let start = Instant::now();
    let mut first = true;
    while start.elapsed() < time || ta.len() < 5 {
        for (f, times) in [
            (&mut a as &mut dyn FnMut(&mut State), &mut ta),
            (&mut b, &mut tb),
        ] {
            let mut s = state.clone();
            let t = Instant::now();
            f(&mut s);
            if !first {
                times.push(t.elapsed());
            }
        }
        first = false; // the first round warms caches and the allocator
    }
    let rate = |times: &mut Vec<Duration>| {
        times.sort_unstable();
        txs.len() as f64 / times[times.len() / 2].as_secs_f64()
    };
    (rate(&mut ta), rate(&mut tb))
}

/// The cores this process may use, as seen on first call (before the suite
/// pins its thread).
fn machine_cores() -> &'static [usize] {
    static CORES: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();
    CORES.get_or_init(|| {
        core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect()
    })
}

/// The first `n` of [`machine_cores`].
fn first_cores(n: usize) -> Vec<usize> {
    machine_cores().iter().copied().take(n).collect()
}

/// The production configuration for `cores` workers, pinned to the first
/// `cores` cores as a node pins its exec tile's (the suite runs on the
/// first).
pub fn config(cores: usize) -> ExecConfig {
    ExecConfig {
        exec_workers: cores,
        worker_cores: first_cores(cores),
        ..ExecConfig::default()
    }
}

/// Block-STM whatever the block looks like (no fallback).
pub fn forced_config(cores: usize) -> ExecConfig {
    ExecConfig {
        exec_workers: cores,
        worker_cores: first_cores(cores),
        parallel_min_txs: 1,
        hot_key_share_max: f64::INFINITY,
        parallel_with_one_worker: true,
        adaptive_probe_every_blocks: 0,
        ..ExecConfig::default()
    }
}

fn path_label(p: ExecPath) -> String {
    match p {
        ExecPath::Parallel { workers } => format!("parallel({workers})"),
        ExecPath::Sequential(r) => format!("sequential({})", r.label()),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn run(opts: &BenchOpts) -> SuiteReport {
    // On a thread pinned to the first core, the exec tile's seat: the caller is
    // worker 0 of the parallel executor, and the sequential executor gets
    // the same core. Left unpinned, the caller and a worker can share a
    // core for a while.
    let first = machine_cores().first().copied();
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(id) = first {
                core_affinity::set_for_current(core_affinity::CoreId { id });
            }
            run_pinned(opts)
        })
        .join()
        .expect("exec suite panicked")
    })
}

fn run_pinned(opts: &BenchOpts) -> SuiteReport {
    let time = opts.measure_time();
    let mut workloads = Map::new();
    let (mut ops, mut base) = (0.0, 0.0);
    for w in Workload::ALL {
        let (state, txs) = workload(w, BLOCK_TXS);
        let mut seq_runs = Vec::new();
        let mut per_cores = Vec::new();
        for &c in &opts.core_counts {
            let mut entry = Map::new();
            entry.insert("cores".into(), json!(c));
            for (label, cfg) in [("", config(c)), ("forced_", forced_config(c))] {
                let exec = ParallelExecutor::new(cfg);
                let mut path = None;
                let (seq, par) = measure_pair(
                    time,
                    &state,
                    &txs,
                    |s| {
                        execute_sequential(s, &txs, CTX);
                    },
                    |s| path = Some(exec.execute_with_path(s, &txs, CTX).1),
                );
                seq_runs.push(seq);
                let m = &exec.metrics;
                let runs = m
                    .block_exec_count
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .max(1);
                entry.insert(format!("{label}ops_per_s"), json!(par.round()));
                entry.insert(format!("{label}speedup"), json!(round3(par / seq)));
                entry.insert(format!("{label}path"), json!(path.map(path_label)));
                // Which path the production executor's blocks took: its
                // rate is the median block of a mix when the guard switched.
                entry.insert(
                    format!("{label}parallel_block_share"),
                    json!(round3(
                        m.parallel_blocks.load(std::sync::atomic::Ordering::Relaxed) as f64
                            / runs as f64
                    )),
                );
                entry.insert(
                    format!("{label}reexecutions_per_block"),
                    json!(m.reexecutions.load(std::sync::atomic::Ordering::Relaxed) / runs),
                );
                entry.insert(format!("{label}sequential_ops_per_s"), json!(seq.round()));
                if label.is_empty()
                    && w == Workload::NoConflict
                    && Some(&c) == opts.core_counts.last()
                {
                    ops = par;
                    base = seq;
                }
            }
            per_cores.push(Value::Object(entry));
        }
        seq_runs.sort_by(f64::total_cmp);
        let seq_median = seq_runs[seq_runs.len() / 2];
        // The state transition alone (no tree update), against the whole
        // sequential block in the same interleaved run.
        let (transition, whole) = measure_pair(
            time,
            &state,
            &txs,
            |s| {
                apply_sequential(s, &txs, CTX);
            },
            |s| {
                execute_sequential(s, &txs, CTX);
            },
        );
        workloads.insert(
            w.name().into(),
            json!({
                "sequential_ops_per_s": seq_median.round(),
                "sequential_transition_ops_per_s": transition.round(),
                "transition_share_of_sequential_block": round3(whole / transition),
                "per_core_count": per_cores,
            }),
        );
    }
    let mut extra = Map::new();
    extra.insert("block_txs".into(), json!(BLOCK_TXS));
    extra.insert("workloads".into(), Value::Object(workloads));
    SuiteReport {
        suite: "exec".into(),
        ops_per_s: ops,
        baseline: "sequential executor (the oracle), no_conflict transfers, one core".into(),
        baseline_ops_per_s: base,
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_run_the_same_on_both_executors() {
        for w in Workload::ALL {
            let (state, txs) = workload(w, 600);
            let mut seq_state = state.clone();
            let expected = execute_sequential(&mut seq_state, &txs, CTX);
            assert_eq!(
                expected.accepted(),
                txs.len(),
                "{}: every transaction is valid",
                w.name()
            );
            for cores in [1, 2] {
                for cfg in [config(cores), forced_config(cores)] {
                    let mut s = state.clone();
                    let out = ParallelExecutor::new(cfg).execute(&mut s, &txs, CTX);
                    assert_eq!(out, expected, "{} on {cores} cores", w.name());
                }
            }
        }
    }
}
