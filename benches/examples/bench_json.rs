//! Prints one suite's JSON report, until the node CLI (`velox bench SUITE
//! --json`) exists: `cargo run --release -p velox-benches --example bench_json
//! -- exec [--quick]`.

use velox_benches::{run_suite, BenchOpts, SUITES};

/// Counts live heap bytes, so that suites measuring memory (mempool) report
/// exact heap figures rather than resident set size.
#[global_allocator]
static ALLOC: velox_benches::alloc::CountingAlloc = velox_benches::alloc::CountingAlloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let Some(suite) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!(
            "usage: bench_json SUITE [--quick]; suites: {}",
            SUITES.join(", ")
        );
        std::process::exit(2);
    };
    match run_suite(suite, &BenchOpts::new(quick)) {
        Ok(report) => println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).expect("json")
        ),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}
