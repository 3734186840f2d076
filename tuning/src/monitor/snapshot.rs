//! The figures the monitor shows, taken from parsed families by the names
//! in docs/metrics.md. A metric the node does not export is `None` (or an
//! empty list), never an error: older and newer nodes both work.
//!
//! Values are looked up by *sample* name across all families, so
//! `velox_commit_latency_seconds_sum` is found whether the node writes it
//! as its own counter (today) or as the `_sum` of a histogram.

use std::time::Duration;

use super::exposition::{Family, Sample};

/// A `_sum` / `_count` pair (a latency or duration total).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SumCount {
    pub sum: f64,
    pub count: f64,
}

impl SumCount {
    /// The mean, when there is at least one observation.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
}

/// One tile's row: its identity labels and its `velox_tile_*` samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TileRow {
    /// `tile` label: net, verify, mempool, consensus, exec, storage.
    pub tile: String,
    /// `index` label: the tile's number within its kind.
    pub index: String,
    /// `core` label: the core it is pinned to.
    pub core: String,
    /// `velox_tile_busy_ratio`: the node's own fraction over the interval
    /// since the previous scrape by anyone.
    pub busy_ratio: Option<f64>,
    pub backpressure_ratio: Option<f64>,
    pub busy_seconds: Option<f64>,
    pub backpressure_seconds: Option<f64>,
    pub items_in: Option<f64>,
    pub items_out: Option<f64>,
    pub drops: Option<f64>,
    pub queue_depth: Option<f64>,
}

impl TileRow {
    /// `tile/index` (`verify/0`).
    pub fn key(&self) -> String {
        format!("{}/{}", self.tile, self.index)
    }
}

/// Execution figures (`velox_exec_*`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecFigures {
    pub executions: Option<f64>,
    pub reexecutions: Option<f64>,
    pub validation_failures: Option<f64>,
    pub parallel_blocks: Option<f64>,
    pub adaptive_blocks: Option<f64>,
    /// `velox_exec_sequential_blocks_total` by `reason`, sorted by reason.
    pub sequential_blocks: Vec<(String, f64)>,
    pub block_seconds: Option<SumCount>,
}

/// Client-facing network figures (`velox_net_*`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetFigures {
    pub connections_open: Option<f64>,
    pub connections_accepted: Option<f64>,
    pub connections_refused: Option<f64>,
    pub streams: Option<f64>,
    pub frames: Option<f64>,
    pub bytes_received: Option<f64>,
    pub frame_errors: Option<f64>,
}

/// Everything the monitor shows from one scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub uptime_s: Option<f64>,
    pub commit_index: Option<f64>,
    pub committed_txs: Option<f64>,
    pub blocks_committed: Option<f64>,
    /// Block cut to durable write (`velox_commit_latency_seconds`): the
    /// storage write latency as the chain sees it.
    pub commit_latency: Option<SumCount>,
    pub mempool_txs: Option<f64>,
    pub mempool_bytes: Option<f64>,
    pub mempool_in_flight_txs: Option<f64>,
    /// `velox_rejected_total` by `reason`, sorted by reason.
    pub rejected: Vec<(String, f64)>,
    pub exec: ExecFigures,
    pub net: NetFigures,
    /// `velox_consensus_round`, where the node exports it.
    pub consensus_round: Option<f64>,
    /// `velox_consensus_leader_timeouts_total`, where exported.
    pub leader_timeouts: Option<f64>,
    /// `velox_peer_alive` (summed over its labels), where exported.
    pub peer_connections: Option<f64>,
    /// One row per tile, in pipeline order (net, verify, mempool,
    /// consensus, exec, storage, then others by name), then index.
    pub tiles: Vec<TileRow>,
}

/// Figures that need two scrapes: per-second rates and interval means.
/// `None` where a metric is missing in either scrape or a counter went
/// backwards (the node restarted).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rates {
    /// The interval the rates cover.
    pub dt_s: f64,
    /// Committed transactions per second.
    pub tps: Option<f64>,
    pub commits_per_s: Option<f64>,
    /// Mean commit latency (cut to durable) over the interval.
    pub commit_latency_s: Option<f64>,
    pub rejections_per_s: Option<f64>,
    /// Re-executions per execution over the interval.
    pub reexecution_ratio: Option<f64>,
    /// Mean block execution time over the interval.
    pub exec_block_s: Option<f64>,
    pub net_frames_per_s: Option<f64>,
    pub net_bytes_per_s: Option<f64>,
    pub leader_timeouts_per_s: Option<f64>,
    /// Per tile, in the order of `next.tiles`.
    pub tiles: Vec<TileRates>,
}

/// One tile's rates over the interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TileRates {
    pub tile: String,
    pub index: String,
    pub core: String,
    /// Δ busy seconds / interval, clamped to 0..=1.
    pub busy_fraction: Option<f64>,
    /// Δ backpressure seconds / interval, clamped to 0..=1.
    pub backpressure_fraction: Option<f64>,
    pub items_in_per_s: Option<f64>,
    pub items_out_per_s: Option<f64>,
    pub drops_per_s: Option<f64>,
}

/// Tile kinds in pipeline order, for sorting rows.
const TILE_ORDER: [&str; 6] = ["net", "verify", "mempool", "consensus", "exec", "storage"];

fn samples<'a>(fams: &'a [Family], name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
    fams.iter()
        .flat_map(|f| f.samples.iter())
        .filter(move |s| s.name == name)
}

/// The sum of every sample named `name` (a single one in the usual case).
fn scalar(fams: &[Family], name: &str) -> Option<f64> {
    samples(fams, name).map(|s| s.value).reduce(|a, b| a + b)
}

/// Samples named `name` keyed by `label`, summed per label value and
/// sorted by it.
fn by_label(fams: &[Family], name: &str, label: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for s in samples(fams, name) {
        let key = s.label(label).unwrap_or("").to_string();
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v += s.value,
            None => out.push((key, s.value)),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn sum_count(fams: &[Family], base: &str) -> Option<SumCount> {
    Some(SumCount {
        sum: scalar(fams, &format!("{base}_sum"))?,
        count: scalar(fams, &format!("{base}_count"))?,
    })
}

fn tile_sort_key(t: &TileRow) -> (usize, String, u64, String, u64) {
    let kind = TILE_ORDER
        .iter()
        .position(|k| *k == t.tile)
        .unwrap_or(TILE_ORDER.len());
    let num = |s: &str| s.parse::<u64>().unwrap_or(u64::MAX);
    (
        kind,
        t.tile.clone(),
        num(&t.index),
        t.index.clone(),
        num(&t.core),
    )
}

impl Snapshot {
    /// Extracts the monitor's figures from a parsed exposition.
    pub fn from_families(fams: &[Family]) -> Snapshot {
        type Setter = fn(&mut TileRow, f64);
        let tile_metrics: [(&str, Setter); 8] = [
            ("velox_tile_busy_ratio", |t, v| t.busy_ratio = Some(v)),
            ("velox_tile_backpressure_ratio", |t, v| {
                t.backpressure_ratio = Some(v)
            }),
            ("velox_tile_busy_seconds_total", |t, v| {
                t.busy_seconds = Some(v)
            }),
            ("velox_tile_backpressure_seconds_total", |t, v| {
                t.backpressure_seconds = Some(v)
            }),
            ("velox_tile_items_in_total", |t, v| t.items_in = Some(v)),
            ("velox_tile_items_out_total", |t, v| t.items_out = Some(v)),
            ("velox_tile_drops_total", |t, v| t.drops = Some(v)),
            ("velox_tile_queue_depth", |t, v| t.queue_depth = Some(v)),
        ];
        let mut tiles: Vec<TileRow> = Vec::new();
        for (name, set) in tile_metrics {
            for s in samples(fams, name) {
                let (tile, index, core) = (
                    s.label("tile").unwrap_or(""),
                    s.label("index").unwrap_or(""),
                    s.label("core").unwrap_or(""),
                );
                let pos = tiles
                    .iter()
                    .position(|t| t.tile == tile && t.index == index && t.core == core);
                let row = match pos {
                    Some(p) => &mut tiles[p],
                    None => {
                        tiles.push(TileRow {
                            tile: tile.into(),
                            index: index.into(),
                            core: core.into(),
                            ..TileRow::default()
                        });
                        tiles.last_mut().expect("just pushed")
                    }
                };
                set(row, s.value);
            }
        }
        tiles.sort_by_key(tile_sort_key);

        Snapshot {
            uptime_s: scalar(fams, "velox_uptime_seconds"),
            commit_index: scalar(fams, "velox_commit_index"),
            committed_txs: scalar(fams, "velox_committed_txs_total"),
            blocks_committed: scalar(fams, "velox_blocks_committed_total"),
            commit_latency: sum_count(fams, "velox_commit_latency_seconds"),
            mempool_txs: scalar(fams, "velox_mempool_txs"),
            mempool_bytes: scalar(fams, "velox_mempool_bytes"),
            mempool_in_flight_txs: scalar(fams, "velox_mempool_in_flight_txs"),
            rejected: by_label(fams, "velox_rejected_total", "reason"),
            exec: ExecFigures {
                executions: scalar(fams, "velox_exec_executions_total"),
                reexecutions: scalar(fams, "velox_exec_reexecutions_total"),
                validation_failures: scalar(fams, "velox_exec_validation_failures_total"),
                parallel_blocks: scalar(fams, "velox_exec_parallel_blocks_total"),
                adaptive_blocks: scalar(fams, "velox_exec_adaptive_blocks_total"),
                sequential_blocks: by_label(fams, "velox_exec_sequential_blocks_total", "reason"),
                block_seconds: sum_count(fams, "velox_exec_block_seconds"),
            },
            net: NetFigures {
                connections_open: scalar(fams, "velox_net_connections_open"),
                connections_accepted: scalar(fams, "velox_net_connections_accepted_total"),
                connections_refused: scalar(fams, "velox_net_connections_refused_total"),
                streams: scalar(fams, "velox_net_streams_total"),
                frames: scalar(fams, "velox_net_frames_total"),
                bytes_received: scalar(fams, "velox_net_bytes_received_total"),
                frame_errors: scalar(fams, "velox_net_frame_errors_total"),
            },
            consensus_round: scalar(fams, "velox_consensus_round"),
            leader_timeouts: scalar(fams, "velox_consensus_leader_timeouts_total"),
            peer_connections: scalar(fams, "velox_peer_alive"),
            tiles,
        }
    }

    /// The interval between two scrapes: the node's own uptime difference
    /// when both carry `velox_uptime_seconds` and it is positive (it leaves
    /// out the request's network time), else the caller's wall-clock gap.
    pub fn gap(prev: &Snapshot, next: &Snapshot, wall: Duration) -> Duration {
        match (prev.uptime_s, next.uptime_s) {
            (Some(a), Some(b)) if b > a && (b - a).is_finite() => Duration::from_secs_f64(b - a),
            _ => wall,
        }
    }

    /// Rates over the `dt` between scrape `prev` and scrape `next`.
    pub fn rates(prev: &Snapshot, next: &Snapshot, dt: Duration) -> Rates {
        let dt_s = dt.as_secs_f64();
        let per_s = |a: Option<f64>, b: Option<f64>| {
            let d = delta(a, b)?;
            (dt_s > 0.0).then(|| d / dt_s)
        };
        let ratio = |num: Option<f64>, den: Option<f64>| {
            let den = den?;
            (den > 0.0).then_some(num? / den)
        };
        let sc_mean = |a: Option<SumCount>, b: Option<SumCount>| {
            let (a, b) = (a?, b?);
            ratio(
                delta(Some(a.sum), Some(b.sum)),
                delta(Some(a.count), Some(b.count)),
            )
        };
        let rejected = |s: &Snapshot| -> Option<f64> {
            (!s.rejected.is_empty()).then(|| s.rejected.iter().map(|(_, v)| v).sum())
        };
        let tiles = next
            .tiles
            .iter()
            .map(|t| {
                let p = prev
                    .tiles
                    .iter()
                    .find(|p| p.tile == t.tile && p.index == t.index && p.core == t.core);
                let pick = |f: fn(&TileRow) -> Option<f64>| per_s(p.and_then(f), f(t));
                let frac = |v: Option<f64>| v.map(|v| v.clamp(0.0, 1.0));
                TileRates {
                    tile: t.tile.clone(),
                    index: t.index.clone(),
                    core: t.core.clone(),
                    busy_fraction: frac(pick(|r| r.busy_seconds)),
                    backpressure_fraction: frac(pick(|r| r.backpressure_seconds)),
                    items_in_per_s: pick(|r| r.items_in),
                    items_out_per_s: pick(|r| r.items_out),
                    drops_per_s: pick(|r| r.drops),
                }
            })
            .collect();
        Rates {
            dt_s,
            tps: per_s(prev.committed_txs, next.committed_txs),
            commits_per_s: per_s(prev.blocks_committed, next.blocks_committed),
            commit_latency_s: sc_mean(prev.commit_latency, next.commit_latency),
            rejections_per_s: per_s(rejected(prev), rejected(next)),
            reexecution_ratio: ratio(
                delta(prev.exec.reexecutions, next.exec.reexecutions),
                delta(prev.exec.executions, next.exec.executions),
            ),
            exec_block_s: sc_mean(prev.exec.block_seconds, next.exec.block_seconds),
            net_frames_per_s: per_s(prev.net.frames, next.net.frames),
            net_bytes_per_s: per_s(prev.net.bytes_received, next.net.bytes_received),
            leader_timeouts_per_s: per_s(prev.leader_timeouts, next.leader_timeouts),
            tiles,
        }
    }
}

/// `b - a` for a counter; `None` when either is missing or not finite, or
/// the counter went backwards (a restart between the scrapes).
fn delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    let d = b - a;
    (d.is_finite() && d >= 0.0).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::super::exposition::parse_exposition;
    use super::*;

    const T0: &str = include_str!("../../fixtures/metrics/t0.txt");
    const T1: &str = include_str!("../../fixtures/metrics/t1.txt");

    fn snap(text: &str) -> Snapshot {
        Snapshot::from_families(&parse_exposition(text).expect("fixture parses"))
    }

    #[test]
    fn extracts_headline_and_tiles() {
        let s = snap(T1);
        assert_eq!(s.commit_index, Some(490.0));
        assert_eq!(s.committed_txs, Some(5_510_200.0));
        assert_eq!(s.commit_latency.unwrap().count, 490.0);
        assert_eq!(s.mempool_bytes, Some(214_312.0));
        assert_eq!(s.rejected.len(), 3);
        assert_eq!(s.rejected[2], ("pool_full".into(), 122.0));
        assert_eq!(s.exec.sequential_blocks.len(), 6);
        assert_eq!(s.net.connections_open, Some(4.0));
        assert_eq!(s.consensus_round, None);
        let kinds: Vec<_> = s.tiles.iter().map(|t| t.tile.as_str()).collect();
        assert_eq!(kinds, TILE_ORDER);
        let v = &s.tiles[1];
        assert_eq!((v.core.as_str(), v.queue_depth), ("1", Some(812.0)));
        assert_eq!(v.busy_ratio, Some(0.968));
    }

    #[test]
    fn missing_metrics_are_absent() {
        let s = snap("velox_commit_index 5\nvelox_peer_alive{peer=\"a\"} 1\nvelox_peer_alive{peer=\"b\"} 1\n");
        assert_eq!(s.commit_index, Some(5.0));
        assert_eq!(s.peer_connections, Some(2.0));
        assert_eq!(s.committed_txs, None);
        assert!(s.tiles.is_empty() && s.rejected.is_empty());
        let r = Snapshot::rates(&s, &s, Duration::from_secs(1));
        assert_eq!(r.tps, None);
        assert_eq!(r.rejections_per_s, None);
    }

    #[test]
    fn latency_from_a_histogram_too() {
        let s = snap(
            "# TYPE velox_commit_latency_seconds histogram\n\
             velox_commit_latency_seconds_bucket{le=\"0.01\"} 3\n\
             velox_commit_latency_seconds_bucket{le=\"+Inf\"} 4\n\
             velox_commit_latency_seconds_sum 0.05\n\
             velox_commit_latency_seconds_count 4\n",
        );
        assert_eq!(
            s.commit_latency,
            Some(SumCount {
                sum: 0.05,
                count: 4.0
            })
        );
        assert_eq!(s.commit_latency.unwrap().mean(), Some(0.0125));
    }

    #[test]
    fn rates_between_scrapes() {
        let (a, b) = (snap(T0), snap(T1));
        let dt = Snapshot::gap(&a, &b, Duration::from_secs(5));
        assert_eq!(dt, Duration::from_secs(2));
        let r = Snapshot::rates(&a, &b, dt);
        assert_eq!(r.tps, Some(45_100.0));
        assert_eq!(r.commits_per_s, Some(4.0));
        let lat = r.commit_latency_s.unwrap();
        assert!((lat - 0.0123).abs() < 1e-9, "{lat}");
        let verify = &r.tiles[1];
        assert_eq!(verify.tile, "verify");
        assert!((verify.busy_fraction.unwrap() - 0.968).abs() < 1e-6);
        assert_eq!(verify.items_in_per_s, Some(45_100.0));
        // A restart (counters fall) gives no rate rather than a negative one.
        let r = Snapshot::rates(&b, &a, dt);
        assert_eq!(r.tps, None);
        assert_eq!(r.tiles[1].busy_fraction, None);
        // No time passed: no rates.
        assert_eq!(Snapshot::rates(&a, &b, Duration::ZERO).tps, None);
    }
}
