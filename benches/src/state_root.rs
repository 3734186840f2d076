//! `state_root`: the cost of bringing the state commitment (the sparse
//! Merkle tree, `velox_exec::smt`) up to date after a commit, for 1k, 10k
//! and 100k touched accounts over a state of 1M and 10M accounts, on one
//! thread and on all cores; plus the tree's memory per account, the cost
//! of computing the root from scratch, and the size and cost of proofs.
//!
//! A commit here rewrites the balances of `touched` existing accounts (a
//! window of the account list that moves every round; ids are hashes, so the
//! window is spread over the whole tree) through `State::set`, untimed, then
//! times `State::root()`: sorting and deduplicating the written keys,
//! reading their values, hashing paths and leaves, and rehashing every
//! internal node above them. Rounds on one thread and on all cores are
//! interleaved, so both see the same background load; figures are medians.
//!
//! The baseline is the work no per-key commitment can avoid: the BLAKE3 path
//! and leaf hashes of the same touched entries alone, on one thread (about
//! what the old additive multiset hash cost per key). `ratio` =
//! tree keys/s ÷ bare leaf-hashing keys/s: below 1, by the price of the
//! internal nodes (about log2(n / touched) + 2 per key).

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use velox_exec::smt::{entry_leaf_hash, key_path};
use velox_exec::{Account, AccountId, State, StateKey, StateValue};

use crate::alloc::{live_bytes, rss_bytes};
use crate::{available_cores, BenchOpts, SuiteReport};

/// State sizes (accounts) of the full run.
pub const STATE_ACCOUNTS: [usize; 2] = [1_000_000, 10_000_000];
/// State sizes of a `--quick` run.
pub const STATE_ACCOUNTS_QUICK: [usize; 1] = [1_000_000];
/// Accounts touched per commit.
pub const TOUCHED: [usize; 3] = [1_000, 10_000, 100_000];
/// The headline case: 10k touched accounts over 1M.
const HEADLINE: (usize, usize) = (1_000_000, 10_000);

/// Account number `i`: 32 pseudo-random bytes (splitmix64 of `i`).
pub fn account(i: u64) -> AccountId {
    let mut out = [0u8; 32];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED;
    for c in out.chunks_exact_mut(8) {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        c.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    AccountId(out)
}

fn value(balance: u64) -> StateValue {
    StateValue::Account(Account { balance, nonce: 1 })
}

/// A state of `n` funded accounts with its tree built (on `workers` threads).
pub fn build_state(n: usize, workers: usize) -> State {
    let mut s = State::new();
    s.set_root_workers(workers);
    s.reserve(n);
    for i in 0..n as u64 {
        s.set(StateKey::Account(account(i)), Some(value(1_000 + i)));
    }
    s.root();
    s
}

/// Rewrites `touched` accounts of the `n` in `state` (those of `round`'s
/// window) with balances no earlier round used; returns their keys.
pub fn touch(state: &mut State, n: usize, touched: usize, round: u64) -> Vec<StateKey> {
    let start = (round as usize * touched) % n;
    (0..touched)
        .map(|j| {
            let i = ((start + j) % n) as u64;
            let k = StateKey::Account(account(i));
            state.set(k, Some(value(1_000_000_000 + round * 1_000 + i)));
            k
        })
        .collect()
}

/// Times `State::root()` after `touched` writes on each of `threads`,
/// rounds interleaved (so that every thread count sees the same background
/// load) for about `time` in all, at least 3 timed rounds each after one
/// warm-up round; returns the median per thread count.
pub fn commit_times(
    state: &mut State,
    n: usize,
    touched: usize,
    threads: &[usize],
    time: Duration,
    round: &mut u64,
) -> Vec<Duration> {
    let mut times = vec![Vec::new(); threads.len()];
    let start = Instant::now();
    let mut first = true;
    while start.elapsed() < time || times[0].len() < 3 {
        for (i, &t) in threads.iter().enumerate() {
            state.set_root_workers(t);
            *round += 1;
            touch(state, n, touched, *round);
            let started = Instant::now();
            std::hint::black_box(state.root());
            if !first {
                times[i].push(started.elapsed());
            }
        }
        first = false;
    }
    times.into_iter().map(median).collect()
}

/// The baseline: path and leaf hashes of `keys`' current values, one thread.
pub fn leaf_hashing_time(state: &State, keys: &[StateKey], time: Duration) -> Duration {
    let entries: Vec<(StateKey, StateValue)> = keys
        .iter()
        .map(|k| (*k, state.get(k).expect("touched accounts exist")))
        .collect();
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < time || times.len() < 3 {
        let t = Instant::now();
        let mut acc = 0u8;
        for (k, v) in &entries {
            let p = key_path(k);
            acc ^= entry_leaf_hash(&p, v)[0];
        }
        std::hint::black_box(acc);
        times.push(t.elapsed());
    }
    median(times)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 1e2
}

pub fn run(opts: &BenchOpts) -> SuiteReport {
    let time = opts.measure_time();
    let sizes: &[usize] = if opts.quick {
        &STATE_ACCOUNTS_QUICK
    } else {
        &STATE_ACCOUNTS
    };
    let cores = available_cores();
    let mut thread_counts = vec![1];
    if cores > 1 {
        thread_counts.push(cores);
    }
    let (mut ops, mut base) = (0.0, 0.0);
    let mut cases = Vec::new();
    let mut sizes_out = Vec::new();
    for &n in sizes {
        let (live0, rss0) = (live_bytes(), rss_bytes());
        let t = Instant::now();
        let mut state = build_state(n, cores);
        let build = t.elapsed();
        let (live1, rss1) = (live_bytes(), rss_bytes());
        let per = |a: Option<usize>, b: Option<usize>| {
            a.zip(b)
                .map(|(a, b)| (b.saturating_sub(a) as f64 / n as f64).round())
        };
        let t = Instant::now();
        let scratch = state.recompute_root();
        let from_scratch = t.elapsed();
        assert_eq!(scratch, state.root(), "tree and from-scratch roots agree");
        // Proofs of existing accounts: size, depth and time to build one.
        let probes = 1_000u64;
        let (mut bytes, mut depth) = (0usize, 0usize);
        let t = Instant::now();
        for j in 0..probes {
            let p = state.prove(&StateKey::Account(account(j * (n as u64 / probes))));
            bytes += p.encode().len();
            depth += p.depth();
        }
        let prove_time = t.elapsed();
        sizes_out.push(json!({
            "proof_bytes_mean": (bytes as f64 / probes as f64).round(),
            "proof_depth_mean": (depth as f64 / probes as f64 * 10.0).round() / 10.0,
            "proof_us_mean": (prove_time.as_secs_f64() * 1e6 / probes as f64 * 10.0).round() / 10.0,
            "state_accounts": n,
            "tree_bytes_per_account": (state.tree_memory_bytes() as f64 / n as f64).round(),
            "state_heap_bytes_per_account": per(live0, live1),
            "state_rss_bytes_per_account": per(rss0, rss1),
            "build_s": (build.as_secs_f64() * 100.0).round() / 100.0,
            "build_threads": cores,
            "from_scratch_root_ms": ms(from_scratch),
        }));
        let mut round = 0;
        for &k in &TOUCHED {
            let keys = touch(&mut state, n, k, round);
            state.root();
            let bare = leaf_hashing_time(&state, &keys, time);
            let medians = commit_times(&mut state, n, k, &thread_counts, time, &mut round);
            for (&threads, t) in thread_counts.iter().zip(medians) {
                let keys_per_s = k as f64 / t.as_secs_f64();
                let bare_per_s = k as f64 / bare.as_secs_f64();
                cases.push(json!({
                    "state_accounts": n,
                    "touched": k,
                    "threads": threads,
                    "ms_per_commit": ms(t),
                    "keys_per_s": keys_per_s.round(),
                    "leaf_hashing_ms": ms(bare),
                    "ratio_to_leaf_hashing": (keys_per_s / bare_per_s * 1000.0).round() / 1000.0,
                }));
                if (n, k) == HEADLINE && threads == *thread_counts.last().expect("one") {
                    ops = keys_per_s;
                    base = bare_per_s;
                }
            }
        }
        drop(state);
    }
    let mut extra = Map::new();
    extra.insert("cases".into(), Value::Array(cases));
    extra.insert("states".into(), Value::Array(sizes_out));
    extra.insert(
        "headline".into(),
        json!(format!(
            "{} touched accounts over {} at {} threads",
            HEADLINE.1,
            HEADLINE.0,
            thread_counts.last().expect("one")
        )),
    );
    SuiteReport {
        suite: "state_root".into(),
        ops_per_s: ops,
        baseline: "BLAKE3 path + leaf hashes of the same touched accounts alone, one thread".into(),
        baseline_ops_per_s: base,
        extra,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_keep_the_root_equal_to_from_scratch() {
        let n = 5_000;
        let mut s = build_state(n, 2);
        assert_eq!(s.len(), n);
        let mut round = 0;
        for k in [10, 3_000] {
            let t = commit_times(&mut s, n, k, &[1, 2], Duration::ZERO, &mut round);
            assert_eq!(t.len(), 2);
            assert_eq!(s.root(), s.recompute_root());
        }
        assert!(s.tree_memory_bytes() > 0);
        assert_ne!(account(1), account(2));
    }
}
