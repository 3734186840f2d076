//! A/B timing of the state commitment: per-commit root update time on one
//! state, and the cost of one internal and one leaf hash. Small and stable on
//! purpose, so that two builds (say, before and after a change to
//! `exec/src/smt.rs`) can be run alternately under the same background load:
//!
//! ```sh
//! cargo run --release -p velox-benches --example smt_commit -- \
//!     [--accounts 1000000] [--touched 1000,2000,10000,100000] [--threads 1,2] [--secs 2]
//! ```
//!
//! Prints one line per case: `state touched threads ms_per_commit` (median
//! of rounds interleaved across thread counts, as the `state_root` suite
//! does), then the per-hash costs.

use std::time::{Duration, Instant};

use velox_benches::state_root::{build_state, commit_times};
use velox_exec::smt::{internal_hash, leaf_hash};

fn list(s: &str) -> Vec<usize> {
    s.split(',')
        .map(|x| x.parse().expect("a comma-separated list of numbers"))
        .collect()
}

fn main() {
    let mut accounts = 1_000_000usize;
    let mut touched = vec![1_000, 2_000, 10_000, 100_000];
    let mut threads = vec![1, 2];
    let mut secs = 2.0f64;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v = pair.get(1).map(String::as_str).unwrap_or("");
        match pair[0].as_str() {
            "--accounts" => accounts = v.parse().expect("--accounts N"),
            "--touched" => touched = list(v),
            "--threads" => threads = list(v),
            "--secs" => secs = v.parse().expect("--secs SECONDS"),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let time = Duration::from_secs_f64(secs);
    let t = Instant::now();
    let mut state = build_state(accounts, *threads.iter().max().expect("a thread count"));
    eprintln!("built {accounts} accounts in {:.1?}", t.elapsed());
    let mut round = 0;
    for &k in &touched {
        let medians = commit_times(&mut state, accounts, k, &threads, time, &mut round);
        for (&th, m) in threads.iter().zip(medians) {
            println!(
                "state {accounts} touched {k} threads {th} ms_per_commit {:.3}",
                m.as_secs_f64() * 1e3
            );
        }
    }
    // Per-hash cost: a dependent chain, so that each hash waits for the last.
    let n = 2_000_000u32;
    let mut h = [7u8; 32];
    let t = Instant::now();
    for _ in 0..n {
        h = internal_hash(&h, &[9; 32]);
    }
    let internal_ns = t.elapsed().as_secs_f64() * 1e9 / f64::from(n);
    let t = Instant::now();
    for _ in 0..n {
        h = leaf_hash(&h, &[5; 16]);
    }
    let leaf_ns = t.elapsed().as_secs_f64() * 1e9 / f64::from(n);
    std::hint::black_box(h);
    println!("internal_hash_ns {internal_ns:.1} leaf_hash_ns {leaf_ns:.1}");
}
