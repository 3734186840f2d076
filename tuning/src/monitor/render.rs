//! What the monitor shows, as data ([`View`], [`View::headline`],
//! [`View::tile_lines`]) and as plain text ([`render_text`]). The live
//! view (`live.rs`) draws the same data, so the two never disagree.

use std::fmt::Write as _;

use super::snapshot::{Rates, Snapshot};

/// One screen's worth: the latest scrape, rates against the previous one
/// (none after a single scrape), and the last fetch error, if the latest
/// fetch failed (the figures are then from the last good scrape).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct View {
    /// Where the figures come from (the node's metrics URL).
    pub source: String,
    pub snapshot: Snapshot,
    pub rates: Option<Rates>,
    pub error: Option<String>,
}

/// One tile's row as shown: rates where two scrapes exist, else the
/// node's own `_ratio` gauges and the totals.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TileLine {
    pub tile: String,
    pub index: String,
    pub core: String,
    /// 0..=1: the rate of busy seconds, or `velox_tile_busy_ratio`.
    pub busy: Option<f64>,
    /// 0..=1: the rate of backpressure seconds, or the `_ratio` gauge.
    pub backpressure: Option<f64>,
    pub in_per_s: Option<f64>,
    pub out_per_s: Option<f64>,
    pub items_in: Option<f64>,
    pub items_out: Option<f64>,
    pub drops: Option<f64>,
    pub queue: Option<f64>,
}

/// Column headers of the per-tile table, shared by the text and live views.
pub const TILE_COLUMNS: [&str; 11] = [
    "TILE", "IDX", "CORE", "BUSY%", "BACKPR%", "IN/S", "OUT/S", "IN", "OUT", "DROPS", "QUEUE",
];

impl View {
    /// A view of one scrape, without rates.
    pub fn new(source: impl Into<String>, snapshot: Snapshot) -> View {
        View {
            source: source.into(),
            snapshot,
            rates: None,
            error: None,
        }
    }

    /// Adds the rates between two scrapes.
    pub fn with_rates(mut self, rates: Rates) -> View {
        self.rates = Some(rates);
        self
    }

    /// The headline block: (label, text) per line; a line appears only when
    /// the node exports at least one of its metrics.
    pub fn headline(&self) -> Vec<(&'static str, String)> {
        let s = &self.snapshot;
        let r = self.rates.as_ref();
        let mut out = Vec::new();
        if let Some(u) = s.uptime_s {
            out.push(("uptime", fmt_uptime(u)));
        }
        if let Some(i) = s.commit_index {
            let mut t = fmt_count(i);
            if let Some(c) = r.and_then(|r| r.commits_per_s) {
                let _ = write!(t, " ({} commits/s)", fmt_rate(c));
            }
            out.push(("commit index", t));
        }
        if let Some(n) = s.committed_txs {
            out.push(("committed txs", fmt_count(n)));
            let tps = match (r.and_then(|r| r.tps), s.uptime_s) {
                (Some(t), _) => fmt_rate(t),
                (None, Some(u)) if u > 0.0 => format!("{} (mean since start)", fmt_rate(n / u)),
                _ => "-".into(),
            };
            out.push(("tps", tps));
        }
        if let Some(lat) = s.commit_latency {
            let t = match (r.and_then(|r| r.commit_latency_s), lat.mean()) {
                (Some(m), _) => fmt_secs(m),
                (None, Some(m)) => format!("{} (mean since start)", fmt_secs(m)),
                (None, None) => "-".into(),
            };
            out.push(("commit latency", t));
        }
        let pool: Vec<String> = [
            s.mempool_txs.map(|v| format!("{} txs", fmt_count(v))),
            s.mempool_bytes.map(fmt_bytes),
            s.mempool_in_flight_txs
                .map(|v| format!("{} in flight", fmt_count(v))),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !pool.is_empty() {
            out.push(("mempool", pool.join(", ")));
        }
        if !s.rejected.is_empty() {
            let mut t = labelled_counts(&s.rejected);
            if let Some(x) = r.and_then(|r| r.rejections_per_s) {
                let _ = write!(t, " ({}/s)", fmt_rate(x));
            }
            out.push(("rejected", t));
        }
        let e = &s.exec;
        let mut exec = Vec::new();
        if let Some(v) = e.executions {
            exec.push(format!("{} executions", fmt_count(v)));
        }
        let reexec = match (r.and_then(|r| r.reexecution_ratio), e.reexecutions) {
            (Some(x), _) => Some(format!("re-executions {}%", fmt_pct(x))),
            (None, Some(v)) => Some(format!("{} re-executions", fmt_count(v))),
            (None, None) => None,
        };
        exec.extend(reexec);
        if let Some(v) = e.validation_failures {
            exec.push(format!("{} validation failures", fmt_count(v)));
        }
        if let Some(m) = r
            .and_then(|r| r.exec_block_s)
            .or_else(|| e.block_seconds.and_then(|b| b.mean()))
        {
            exec.push(format!("block {}", fmt_secs(m)));
        }
        if !exec.is_empty() {
            out.push(("exec", exec.join(", ")));
        }
        let blocks: Vec<String> = [
            e.parallel_blocks
                .map(|v| format!("{} parallel", fmt_count(v))),
            e.adaptive_blocks
                .map(|v| format!("{} adaptive", fmt_count(v))),
        ]
        .into_iter()
        .flatten()
        .chain(
            e.sequential_blocks
                .iter()
                .filter(|(_, v)| *v != 0.0)
                .map(|(k, v)| format!("{} sequential/{k}", fmt_count(*v))),
        )
        .collect();
        if !blocks.is_empty() {
            out.push(("exec blocks", blocks.join(", ")));
        }
        let n = &s.net;
        let mut net: Vec<String> = [
            n.connections_open.map(|v| format!("{} open", fmt_count(v))),
            n.connections_accepted
                .map(|v| format!("{} accepted", fmt_count(v))),
            n.connections_refused
                .map(|v| format!("{} refused", fmt_count(v))),
            n.frame_errors
                .map(|v| format!("{} frame errors", fmt_count(v))),
        ]
        .into_iter()
        .flatten()
        .collect();
        match r.and_then(|r| r.net_bytes_per_s) {
            Some(b) => net.push(format!("{}/s in", fmt_bytes(b))),
            None => net.extend(n.bytes_received.map(|b| format!("{} in", fmt_bytes(b)))),
        }
        if !net.is_empty() {
            out.push(("net", net.join(", ")));
        }
        let mut cons = Vec::new();
        if let Some(v) = s.consensus_round {
            cons.push(format!("round {}", fmt_count(v)));
        }
        if let Some(v) = s.leader_timeouts {
            cons.push(format!("{} leader timeouts", fmt_count(v)));
        }
        if !cons.is_empty() {
            out.push(("consensus", cons.join(", ")));
        }
        if let Some(v) = s.peer_connections {
            out.push(("peers", format!("{} connected", fmt_count(v))));
        }
        out
    }

    /// The per-tile table's rows, in the snapshot's order.
    pub fn tile_lines(&self) -> Vec<TileLine> {
        self.snapshot
            .tiles
            .iter()
            .map(|t| {
                let r = self.rates.as_ref().and_then(|r| {
                    r.tiles
                        .iter()
                        .find(|x| x.tile == t.tile && x.index == t.index && x.core == t.core)
                });
                TileLine {
                    tile: t.tile.clone(),
                    index: t.index.clone(),
                    core: t.core.clone(),
                    busy: r.and_then(|r| r.busy_fraction).or(t.busy_ratio),
                    backpressure: r
                        .and_then(|r| r.backpressure_fraction)
                        .or(t.backpressure_ratio),
                    in_per_s: r.and_then(|r| r.items_in_per_s),
                    out_per_s: r.and_then(|r| r.items_out_per_s),
                    items_in: t.items_in,
                    items_out: t.items_out,
                    drops: t.drops,
                    queue: t.queue_depth,
                }
            })
            .collect()
    }

    /// The title line: source and interval.
    pub fn title(&self) -> String {
        let mut t = String::from("velox monitor");
        if !self.source.is_empty() {
            let _ = write!(t, "  {}", self.source);
        }
        if let Some(r) = &self.rates {
            let _ = write!(t, "  (rates over {:.1} s)", r.dt_s);
        }
        t
    }
}

impl TileLine {
    /// The row's cells, in [`TILE_COLUMNS`] order; `-` where absent.
    pub fn cells(&self) -> [String; 11] {
        let opt = |v: Option<f64>, f: fn(f64) -> String| v.map(f).unwrap_or_else(|| "-".into());
        [
            self.tile.clone(),
            self.index.clone(),
            self.core.clone(),
            opt(self.busy, fmt_pct),
            opt(self.backpressure, fmt_pct),
            opt(self.in_per_s, fmt_rate),
            opt(self.out_per_s, fmt_rate),
            opt(self.items_in, fmt_count),
            opt(self.items_out, fmt_count),
            opt(self.drops, fmt_count),
            opt(self.queue, fmt_count),
        ]
    }
}

/// Label width of the headline block.
const HEADLINE_LABEL_WIDTH: usize = 16;

/// The plain-text snapshot `velox monitor --once` prints: a title, the
/// fetch error if any, the headline block, then the per-tile table with
/// aligned columns (text left, numbers right). Deterministic: the same
/// view gives the same text.
pub fn render_text(view: &View) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{}", view.title());
    if let Some(e) = &view.error {
        let _ = writeln!(o, "error: {e}");
    }
    let _ = writeln!(o);
    for (label, text) in view.headline() {
        let _ = writeln!(o, "{label:<HEADLINE_LABEL_WIDTH$}{text}");
    }
    let lines = view.tile_lines();
    if lines.is_empty() {
        let _ = writeln!(o, "\n(no velox_tile_* metrics)");
        return o;
    }
    let _ = writeln!(o);
    let rows: Vec<[String; 11]> = lines.iter().map(TileLine::cells).collect();
    let mut widths = TILE_COLUMNS.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            if i == 0 {
                let _ = write!(l, "{c:<w$}");
            } else {
                let _ = write!(l, "{c:>w$}");
            }
        }
        let _ = writeln!(o, "{}", l.trim_end());
    };
    line(&TILE_COLUMNS.map(String::from));
    for r in &rows {
        line(r);
    }
    o
}

fn labelled_counts(v: &[(String, f64)]) -> String {
    v.iter()
        .map(|(k, c)| format!("{} {}", fmt_count(*c), if k.is_empty() { "-" } else { k }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A count: exact below 10 000, else 3 significant-ish digits with k/M/G/T.
pub fn fmt_count(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v.abs() < 10_000.0 {
        return if v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        };
    }
    si(v)
}

/// A per-second rate: one decimal below 10 000, else k/M/G/T.
pub fn fmt_rate(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v.abs() < 10_000.0 {
        return format!("{v:.1}");
    }
    si(v)
}

fn si(v: f64) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, unit) in UNITS {
        if v.abs() >= scale {
            return format!("{:.1}{unit}", v / scale);
        }
    }
    format!("{v:.1}")
}

/// A fraction (0..=1) as a percentage with one decimal, no `%` sign.
pub fn fmt_pct(v: f64) -> String {
    format!("{:.1}", v * 100.0)
}

/// Bytes in binary units.
pub fn fmt_bytes(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v} B");
    }
    const UNITS: [(f64, &str); 4] = [
        (1024.0 * 1024.0 * 1024.0 * 1024.0, "TiB"),
        (1024.0 * 1024.0 * 1024.0, "GiB"),
        (1024.0 * 1024.0, "MiB"),
        (1024.0, "KiB"),
    ];
    for (scale, unit) in UNITS {
        if v.abs() >= scale {
            return format!("{:.1} {unit}", v / scale);
        }
    }
    format!("{v:.0} B")
}

/// Seconds as µs, ms or s with three significant-ish digits.
pub fn fmt_secs(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v} s");
    }
    let a = v.abs();
    if a < 1e-3 {
        format!("{:.1} µs", v * 1e6)
    } else if a < 1.0 {
        format!("{:.1} ms", v * 1e3)
    } else {
        format!("{v:.2} s")
    }
}

/// Uptime as `2m02s`, `1h02m03s` or `3d04h05m`.
pub fn fmt_uptime(v: f64) -> String {
    if !v.is_finite() || v < 0.0 {
        return format!("{v} s");
    }
    let s = v as u64;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d{h:02}h{m:02}m")
    } else if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_count(812.0), "812");
        assert_eq!(fmt_count(5_510_200.0), "5.5M");
        assert_eq!(fmt_rate(45_100.0), "45.1k");
        assert_eq!(fmt_rate(4.0), "4.0");
        assert_eq!(fmt_pct(0.968), "96.8");
        assert_eq!(fmt_bytes(214_312.0), "209.3 KiB");
        assert_eq!(fmt_bytes(12.0), "12 B");
        assert_eq!(fmt_secs(0.0123), "12.3 ms");
        assert_eq!(fmt_secs(0.000_25), "250.0 µs");
        assert_eq!(fmt_uptime(122.5), "2m02s");
        assert_eq!(fmt_uptime(3723.0), "1h02m03s");
        assert_eq!(fmt_uptime(90_061.0), "1d01h01m");
        assert_eq!(fmt_count(f64::NAN), "NaN");
    }

    #[test]
    fn empty_view_renders() {
        let t = render_text(&View::default());
        assert!(t.starts_with("velox monitor\n"), "{t}");
        assert!(t.contains("no velox_tile_* metrics"));
    }
}
