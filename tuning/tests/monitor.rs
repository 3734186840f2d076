//! `velox monitor --once` output on fixture scrapes (tuning/fixtures/metrics,
//! written by gen.py in the node's /metrics format), compared with the
//! expected text next to them. After an intended change to the output,
//! rewrite the expected files with `VELOX_BLESS=1 cargo test -p velox-tuning
//! --test monitor` and review the diff.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use velox_tuning::monitor::{parse_exposition, render_text, Monitor, Snapshot, View};

fn fixture_dir() -> PathBuf {
    common::manifest_dir().join("fixtures/metrics")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(fixture_dir().join(name)).expect("fixture")
}

fn check_golden(name: &str, got: &str) {
    let path = fixture_dir().join(name);
    if std::env::var_os("VELOX_BLESS").is_some() {
        std::fs::write(&path, got).expect("write expected");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got, want,
        "{name} differs; rerun with VELOX_BLESS=1 if the change is intended"
    );
}

/// Two scrapes 2 s apart (by the node's uptime; the wall gap is ignored).
fn two_scrapes() -> View {
    let mut m = Monitor::new("http://127.0.0.1:8080/metrics");
    let t = Instant::now();
    m.update(Ok(read("t0.txt")), t);
    m.update(Ok(read("t1.txt")), t + Duration::from_millis(2100));
    m.view().clone()
}

#[test]
fn once_with_rates_matches_expected() {
    let text = render_text(&two_scrapes());
    check_golden("rates.expected", &text);
    // Deterministic: the same input renders the same text.
    assert_eq!(text, render_text(&two_scrapes()));
}

#[test]
fn once_single_scrape_with_consensus_metrics_matches_expected() {
    let fams = parse_exposition(&read("consensus.txt")).unwrap();
    let view = View::new(
        "http://127.0.0.1:8080/metrics",
        Snapshot::from_families(&fams),
    );
    let text = render_text(&view);
    assert!(text.contains("consensus       round 4021, 3 leader timeouts"));
    assert!(text.contains("peers           3 connected"));
    check_golden("single.expected", &text);
}

#[test]
fn table_columns_are_aligned() {
    let text = render_text(&two_scrapes());
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("TILE"))
        .collect();
    assert_eq!(table.len(), 7, "{text}");
    // Right-aligned columns end at the same place in every row.
    let width = table[0].len();
    assert!(table.iter().all(|l| l.chars().count() == width), "{text}");
}

#[test]
fn every_fixture_parses_strictly() {
    for e in std::fs::read_dir(fixture_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "txt") {
            let text = std::fs::read_to_string(&p).unwrap();
            let fams = parse_exposition(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(fams.len() >= 33, "{}: {} families", p.display(), fams.len());
        }
    }
}
