//! docs/grafana/velox.json stays importable and uses only documented
//! metric names: every `velox_*` name in a query must appear in
//! docs/metrics.md, except the few consensus/peer metrics a newer node
//! adds, which must sit in panels marked as pending.

mod common;

use std::collections::BTreeSet;

use serde_json::Value;

/// Metrics the dashboard shows before docs/metrics.md lists them; their
/// panels say so (`PENDING_MARK` in the description). Once documented, a
/// name needs no mark and can leave this list.
const PENDING: [&str; 0] = [];
const PENDING_MARK: &str = "not in docs/metrics.md yet";

fn repo_file(rel: &str) -> String {
    let p = common::manifest_dir().join("..").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every `velox_…` identifier in `s`.
fn metric_names(s: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = s.as_bytes();
    let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut i = 0;
    while i < b.len() {
        let starts = b[i..].starts_with(b"velox_") && (i == 0 || !is_name(b[i - 1]));
        if starts {
            let end = (i..b.len()).find(|&j| !is_name(b[j])).unwrap_or(b.len());
            out.insert(s[i..end].to_string());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Names docs/metrics.md documents: those with a row in one of its tables
/// (a mention in prose does not count). A row listing
/// "`x_sum` / `_count`" documents `x_count` too.
fn documented() -> BTreeSet<String> {
    let doc = repo_file("docs/metrics.md");
    let mut names = BTreeSet::new();
    for line in doc.lines().filter(|l| l.trim_start().starts_with('|')) {
        for n in metric_names(line) {
            if let Some(base) = n.strip_suffix("_sum") {
                if line.contains("`_count`") {
                    names.insert(format!("{base}_count"));
                }
            }
            names.insert(n);
        }
    }
    names
}

fn dashboard() -> Value {
    serde_json::from_str(&repo_file("docs/grafana/velox.json")).expect("velox.json is valid JSON")
}

/// Every panel, rows' nested (collapsed) panels included.
fn panels(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in v["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(panels(p));
    }
    out
}

#[test]
fn dashboard_is_importable() {
    let d = dashboard();
    assert!(d["panels"].as_array().is_some_and(|p| p.len() > 20));
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    assert_eq!(d["uid"], "velox-node");
    let inputs = d["__inputs"].as_array().unwrap();
    assert!(inputs
        .iter()
        .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"));
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id at {title}"
        );
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        let gp = &p["gridPos"];
        assert!(
            gp["x"].as_u64().unwrap() + gp["w"].as_u64().unwrap() <= 24,
            "{title}"
        );
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{title}");
            for t in targets {
                assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
            }
        }
    }
}

#[test]
fn every_queried_metric_is_documented() {
    let docs = documented();
    assert!(docs.contains("velox_tile_busy_seconds_total"), "{docs:?}");
    assert!(docs.contains("velox_commit_latency_seconds_count"));
    let d = dashboard();
    let mut used = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or_default();
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            for n in metric_names(expr) {
                if docs.contains(&n) {
                } else if PENDING.contains(&n.as_str()) {
                    let desc = p["description"].as_str().unwrap_or_default();
                    assert!(
                        desc.contains(PENDING_MARK),
                        "panel {title:?} uses pending metric {n} without saying so"
                    );
                } else {
                    panic!("panel {title:?} queries {n}, which docs/metrics.md does not list");
                }
                used.insert(n);
            }
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        let q = v["definition"].as_str().unwrap_or_default();
        for n in metric_names(q) {
            assert!(
                docs.contains(&n),
                "variable {} queries undocumented {n}",
                v["name"]
            );
        }
    }
    // The headline and per-tile figures are there.
    for n in [
        "velox_committed_txs_total",
        "velox_commit_index",
        "velox_tile_busy_seconds_total",
        "velox_tile_backpressure_seconds_total",
        "velox_rejected_total",
        "velox_mempool_txs",
        "velox_exec_reexecutions_total",
        "velox_net_connections_open",
    ] {
        assert!(used.contains(n), "dashboard lacks {n}");
    }
}

#[test]
fn name_scanner() {
    let n = metric_names("rate(velox_a_total{x=\"1\"}[1m]) / rate(velox_b_sum[1m]) + xvelox_c");
    assert_eq!(
        n.into_iter().collect::<Vec<_>>(),
        ["velox_a_total", "velox_b_sum"]
    );
}
