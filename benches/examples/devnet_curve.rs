//! Turns devnet reports (`velox devnet --report FILE`) into a
//! throughput–latency table (markdown, on stdout) and an SVG plot.
//!
//! ```text
//! cargo run --release -p velox-benches --example devnet_curve -- OUT.svg REPORT.json...
//! ```
//!
//! Reports are grouped by kind: signed (verified, executed, stored
//! transfers) and unsigned opaque (benchmark mode), each series ordered by
//! offered rate.

use std::collections::BTreeMap;

use velox_benches::plot::{line_chart_scaled, Series, YScale};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: devnet_curve OUT.svg REPORT.json...");
        std::process::exit(2);
    }
    let mut groups: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for path in &args[1..] {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{path}: {e}");
                std::process::exit(1);
            }
        };
        let v: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{path}: not a devnet report: {e}");
                std::process::exit(1);
            }
        };
        let kind = if v["signed"].as_bool().unwrap_or(true) {
            "signed transfers".to_string()
        } else {
            format!("unsigned opaque {} B", v["tx_bytes"].as_u64().unwrap_or(0))
        };
        groups.entry(kind).or_default().push(v);
    }
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    println!("| kind | validators | offered tx/s | committed tx/s | committed/submitted | p50 ms | p99 ms | roots agree |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut series = Vec::new();
    for (kind, mut runs) in groups {
        runs.sort_by(|a, b| f(a, "rate_target").total_cmp(&f(b, "rate_target")));
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        for v in &runs {
            println!(
                "| {kind} | {} | {} | {:.0} | {}/{} | {:.1} | {:.1} | {} |",
                v["validators"],
                v["rate_target"],
                f(v, "tps"),
                v["committed"],
                v["submitted"],
                f(v, "latency_ms_p50"),
                f(v, "latency_ms_p99"),
                v["state_roots_agree"]
            );
            p50.push((f(v, "tps"), f(v, "latency_ms_p50")));
            p99.push((f(v, "tps"), f(v, "latency_ms_p99")));
        }
        series.push(Series {
            name: format!("{kind} p50"),
            points: p50,
        });
        series.push(Series {
            name: format!("{kind} p99"),
            points: p99,
        });
    }
    let svg = line_chart_scaled(
        "Devnet throughput vs latency",
        "committed tx/s",
        "submit-to-commit latency (ms)",
        &series,
        YScale::Log,
    );
    if let Err(e) = std::fs::write(&args[0], svg) {
        eprintln!("{}: {e}", args[0]);
        std::process::exit(1);
    }
    eprintln!("wrote {}", args[0]);
}
