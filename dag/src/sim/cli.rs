//! Library entry behind `velox sim --validators N --byzantine F --seeds A..B
//! [--scenario NAME]`.

use std::io::Write;
use std::ops::Range;

use thiserror::Error;

use super::{run, Scenario, SimConfig};

/// Arguments of `velox sim`.
#[derive(Clone, Debug)]
pub struct SimArgs {
    /// Committee size (>= 1).
    pub validators: usize,
    /// Faulty nodes (<= (validators - 1) / 3).
    pub byzantine: usize,
    /// Seeds to run.
    pub seeds: Range<u64>,
    /// Scenario name (see [`Scenario::name`]); `None` = `default`.
    pub scenario: Option<String>,
}

/// Why a seed range does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SeedRangeError {
    /// Not `A..B` or `A`.
    #[error("expected A..B or A, got {0:?}")]
    Syntax(String),
    /// A bound is not a u64.
    #[error("bad number {0:?}")]
    Number(String),
    /// B <= A.
    #[error("empty range {0}..{1}")]
    Empty(u64, u64),
}

/// Parses `"A..B"` (B exclusive) or a single seed `"A"`.
pub fn parse_seed_range(s: &str) -> Result<Range<u64>, SeedRangeError> {
    let s = s.trim();
    let num = |x: &str| {
        x.trim()
            .parse::<u64>()
            .map_err(|_| SeedRangeError::Number(x.to_string()))
    };
    match s.split_once("..") {
        Some((a, b)) => {
            if a.is_empty() || b.is_empty() {
                return Err(SeedRangeError::Syntax(s.to_string()));
            }
            let (a, b) = (num(a)?, num(b)?);
            if b <= a {
                return Err(SeedRangeError::Empty(a, b));
            }
            Ok(a..b)
        }
        None if !s.is_empty() => {
            let a = num(s)?;
            Ok(a..a.saturating_add(1))
        }
        None => Err(SeedRangeError::Syntax(s.to_string())),
    }
}

/// Aggregate over many runs.
#[derive(Clone, Debug, Default)]
pub struct SweepSummary {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds that failed.
    pub failed: u64,
    /// Sum of agreed commit sequence lengths.
    pub commits: u64,
    /// All latency samples in rounds.
    pub latency_rounds: Vec<u64>,
    /// All latency samples in simulated ms.
    pub latency_ms: Vec<u64>,
}

impl SweepSummary {
    /// One-line summary.
    pub fn line(&self) -> String {
        let (mr, pr) = mean_p99(&self.latency_rounds);
        let (mm, pm) = mean_p99(&self.latency_ms);
        format!(
            "sim summary: seeds={} passed={} failed={} commits={} latency_rounds mean={mr:.2} p99={pr} latency_ms mean={mm:.1} p99={pm}",
            self.seeds,
            self.seeds - self.failed,
            self.failed,
            self.commits
        )
    }
}

fn mean_p99(v: &[u64]) -> (f64, u64) {
    if v.is_empty() {
        return (0.0, 0);
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let mean = s.iter().sum::<u64>() as f64 / s.len() as f64;
    let p99 = s[((s.len() * 99).div_ceil(100)).saturating_sub(1)];
    (mean, p99)
}

/// Runs `config` for every seed of `seeds`, printing a line per failure
/// (with its reproduction command); returns the summary.
pub fn sweep(base: &SimConfig, seeds: Range<u64>, out: &mut dyn Write) -> SweepSummary {
    let mut s = SweepSummary::default();
    for seed in seeds {
        let cfg = SimConfig {
            seed,
            ..base.clone()
        };
        let r = run(&cfg);
        s.seeds += 1;
        s.commits += r.commits;
        s.latency_rounds.extend(&r.latency_rounds);
        s.latency_ms.extend(&r.latency_ms);
        if let Some(v) = r.violation {
            s.failed += 1;
            let _ = writeln!(
                out,
                "FAIL seed={seed} validators={} byzantine={} scenario={} behaviors={:?}: {v}",
                cfg.validators, cfg.byzantine, cfg.scenario, r.behaviors
            );
            let _ = writeln!(out, "  reproduce: {}", cfg.repro_command());
        }
    }
    s
}

/// `velox sim`: true iff every seed passed. The last line written is a
/// one-line summary (seeds, commits, mean/p99 latency in rounds and ms).
pub fn run_cli(args: &SimArgs, out: &mut dyn Write) -> bool {
    let scenario_name = args.scenario.as_deref().unwrap_or("default");
    let Some(scenario) = Scenario::from_name(scenario_name) else {
        let names: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
        let _ = writeln!(
            out,
            "sim summary: error: unknown scenario {scenario_name:?} (one of {})",
            names.join(", ")
        );
        return false;
    };
    if args.validators == 0 || args.byzantine > (args.validators - 1) / 3 {
        let _ = writeln!(
            out,
            "sim summary: error: --byzantine {} exceeds f = (validators - 1) / 3 for {} validators",
            args.byzantine, args.validators
        );
        return false;
    }
    if args.seeds.is_empty() {
        let _ = writeln!(out, "sim summary: error: empty seed range");
        return false;
    }
    let base = SimConfig::new(args.validators, args.byzantine, args.seeds.start, scenario);
    let s = sweep(&base, args.seeds.clone(), out);
    let _ = writeln!(out, "{}", s.line());
    s.failed == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges() {
        assert_eq!(parse_seed_range("3..10"), Ok(3..10));
        assert_eq!(parse_seed_range("7"), Ok(7..8));
        assert_eq!(parse_seed_range("5..5"), Err(SeedRangeError::Empty(5, 5)));
        assert_eq!(
            parse_seed_range("a..5"),
            Err(SeedRangeError::Number("a".into()))
        );
        assert!(matches!(
            parse_seed_range(".."),
            Err(SeedRangeError::Syntax(_))
        ));
        assert!(matches!(
            parse_seed_range(""),
            Err(SeedRangeError::Syntax(_))
        ));
    }

    #[test]
    fn cli_last_line_is_the_summary() {
        let mut out = Vec::new();
        let ok = run_cli(
            &SimArgs {
                validators: 4,
                byzantine: 1,
                seeds: 0..2,
                scenario: Some("equivocate".into()),
            },
            &mut out,
        );
        let out = String::from_utf8(out).unwrap();
        assert!(ok, "{out}");
        let last = out.lines().last().unwrap();
        assert!(
            last.starts_with("sim summary: seeds=2 passed=2 failed=0 commits="),
            "{last}"
        );
        assert!(last.contains("latency_rounds mean=") && last.contains("latency_ms mean="));
    }

    #[test]
    fn cli_rejects_too_many_byzantine() {
        let mut out = Vec::new();
        let ok = run_cli(
            &SimArgs {
                validators: 4,
                byzantine: 2,
                seeds: 0..1,
                scenario: None,
            },
            &mut out,
        );
        assert!(!ok);
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("sim summary: error"));
    }
}
