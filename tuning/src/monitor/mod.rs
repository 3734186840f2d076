//! `velox monitor`: reads a node's `/metrics` and shows the figures an
//! operator tunes by, per tile side by side (STYLE.md §6).
//!
//! ```text
//!  GET /metrics ─▶ parse_exposition (strict 0.0.4) ─▶ [Family]
//!                                                        │
//!                     Snapshot::from_families (names from docs/metrics.md)
//!                                                        │
//!             two snapshots ─▶ Snapshot::rates(prev, next, dt) ─▶ Rates
//!                                                        │
//!                                     View { snapshot, rates, error }
//!                                   ┌────────────┴────────────┐
//!                           render_text (--once)     run_live / draw (ratatui)
//! ```
//!
//! Nothing here does HTTP: the node passes a `fetch` closure, so the same
//! code runs on fixtures in tests. Metrics a node does not export are
//! absent, not errors; the parser, though, rejects any exposition that
//! breaks the format, so the node's own tests can hold `/metrics` to it.

mod exposition;
mod live;
mod render;
mod snapshot;

pub use exposition::{
    escape_label_value, parse_exposition, parse_float, ExpositionError, ExpositionErrorKind,
    Family, MetricType, Sample,
};
pub use live::{draw, run_live, run_monitor, Monitor, INTERVAL_MIN};
pub use render::{
    fmt_bytes, fmt_count, fmt_pct, fmt_rate, fmt_secs, fmt_uptime, render_text, TileLine, View,
    TILE_COLUMNS,
};
pub use snapshot::{ExecFigures, NetFigures, Rates, Snapshot, SumCount, TileRates, TileRow};
