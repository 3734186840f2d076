//! Dependency-free SVG charts for benchmark reports: a line chart (the
//! throughput–latency curve, one series per configuration) and a bar chart
//! (per-tile busy fraction). They are written next to the JSON reports so
//! a run can be looked at without a plotting stack.
//!
//! The output is a standalone SVG 1.1 document: axes, ticks at round
//! numbers (1, 2 or 5 × 10^k; powers of ten on a log axis), a legend, and
//! text escaped for XML. Points that cannot be drawn (NaN, ±inf, or y ≤ 0
//! on a log axis) are left out, so coordinates are always finite; empty
//! input gives empty axes with a "no data" note.

use std::fmt::Write as _;

/// One line of a [`line_chart`].
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// (x, y) in data units, drawn in the given order.
    pub points: Vec<(f64, f64)>,
}

/// How the y axis maps values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum YScale {
    #[default]
    Linear,
    /// Base 10; values ≤ 0 are left out.
    Log,
}

/// Canvas size in pixels.
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 460.0;
/// Plot area margins: room for tick labels and axis titles; the right one
/// holds the legend.
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 170.0;
const MARGIN_TOP: f64 = 44.0;
const MARGIN_BOTTOM: f64 = 60.0;
/// About how many ticks an axis gets.
const TICKS_TARGET: usize = 6;
/// Series colours, reused in order (colour-blind-safe Okabe–Ito palette).
const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
];

/// A line chart on linear axes. See [`line_chart_scaled`].
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    line_chart_scaled(title, x_label, y_label, series, YScale::Linear)
}

/// A line chart: one polyline with point markers per series that has a
/// drawable point, a legend entry per series. A linear y axis starts at 0
/// when every y is non-negative (rates and latencies read better so).
pub fn line_chart_scaled(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    y_scale: YScale,
) -> String {
    let drawable = |&(x, y): &(f64, f64)| {
        x.is_finite() && y.is_finite() && (y_scale == YScale::Linear || y > 0.0)
    };
    let kept: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| s.points.iter().copied().filter(drawable).collect())
        .collect();
    let all = || kept.iter().flatten();
    let (xs_lo, xs_hi) = min_max(all().map(|p| p.0));
    let (ys_lo, ys_hi) = min_max(all().map(|p| p.1));

    let x_axis = Axis::linear(xs_lo, xs_hi, false);
    let y_axis = match y_scale {
        YScale::Linear => Axis::linear(ys_lo, ys_hi, true),
        YScale::Log => Axis::log(ys_lo, ys_hi),
    };

    let mut svg = open_svg(title);
    let plot = Plot::default();
    plot.axes(&mut svg, &x_axis, &y_axis, x_label, y_label);
    if all().next().is_none() {
        plot.no_data(&mut svg);
    }
    for (i, (s, pts)) in series.iter().zip(&kept).enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        if !pts.is_empty() {
            let coords: Vec<String> = pts
                .iter()
                .map(|&(x, y)| {
                    format!(
                        "{:.1},{:.1}",
                        plot.px(x_axis.frac(x)),
                        plot.py(y_axis.frac(y))
                    )
                })
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline class="series" data-series="{}" fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                escape(&s.name),
                coords.join(" ")
            );
            for &(x, y) in pts {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    plot.px(x_axis.frac(x)),
                    plot.py(y_axis.frac(y))
                );
            }
        }
        // Legend entry (also for a series with nothing drawable, so the
        // reader sees it was there).
        let ly = MARGIN_TOP + 10.0 + 20.0 * i as f64;
        let lx = WIDTH - MARGIN_RIGHT + 16.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"/>"#,
            lx + 18.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            lx + 24.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    close_svg(svg)
}

/// A bar chart: one bar per (label, value), value printed above it, the
/// y axis from 0 (or the lowest negative value) to a round number above
/// the highest. A non-finite value gets no bar and reads "n/a".
pub fn bar_chart(title: &str, y_label: &str, bars: &[(String, f64)]) -> String {
    let (lo, hi) = min_max(bars.iter().map(|b| b.1).filter(|v| v.is_finite()));
    let y_axis = Axis::linear(lo, hi, true);
    let mut svg = open_svg(title);
    let plot = Plot::default();
    plot.y_axis(&mut svg, &y_axis, y_label);
    plot.frame(&mut svg);
    if bars.is_empty() {
        plot.no_data(&mut svg);
    }
    let slot = plot.w / bars.len().max(1) as f64;
    let bar_w = slot * 0.7;
    let zero_y = plot.py(y_axis.frac(0.0));
    for (i, (label, v)) in bars.iter().enumerate() {
        let cx = MARGIN_LEFT + slot * (i as f64 + 0.5);
        let color = PALETTE[i % PALETTE.len()];
        let value_text = if v.is_finite() {
            let top = plot.py(y_axis.frac(*v));
            let (y, h) = if top <= zero_y {
                (top, zero_y - top)
            } else {
                (zero_y, top - zero_y)
            };
            let _ = writeln!(
                svg,
                r#"<rect class="bar" x="{:.1}" y="{y:.1}" width="{bar_w:.1}" height="{h:.1}" fill="{color}"/>"#,
                cx - bar_w / 2.0
            );
            format_value(*v)
        } else {
            "n/a".to_string()
        };
        let ty = plot.py(y_axis.frac(if v.is_finite() { v.max(0.0) } else { 0.0 })) - 4.0;
        let _ = writeln!(
            svg,
            r#"<text x="{cx:.1}" y="{ty:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            escape(&value_text)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{cx:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
            MARGIN_TOP + plot.h + 18.0,
            escape(label)
        );
    }
    close_svg(svg)
}

/// Round tick values covering `lo..=hi`: steps of 1, 2 or 5 × 10^k, about
/// `target` of them, the first at or below `lo`, the last at or above
/// `hi`. `lo == hi` gets a unit-wide range around it.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    assert!(
        lo.is_finite() && hi.is_finite() && lo <= hi,
        "bad range {lo}..{hi}"
    );
    let (lo, hi) = if lo == hi {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.5 };
        (lo - pad, hi + pad)
    } else {
        (lo, hi)
    };
    let step = nice_step((hi - lo) / target.max(2).saturating_sub(1) as f64);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    (first..=last)
        .map(|i| snap(i as f64 * step, step))
        .collect()
}

/// 1, 2 or 5 × 10^k, the smallest at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Removes float noise (0.30000000000000004) at the step's precision.
fn snap(v: f64, step: f64) -> f64 {
    let decimals = (-step.log10().floor()).max(0.0) as i32 + 1;
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// An axis: its domain, ticks and how values map to 0..=1.
struct Axis {
    ticks: Vec<f64>,
    lo: f64,
    hi: f64,
    log: bool,
}

impl Axis {
    /// `lo`/`hi` may be ±inf (no data): the axis is then 0..1.
    fn linear(lo: f64, hi: f64, from_zero: bool) -> Axis {
        let (mut lo, mut hi) = if lo.is_finite() && hi.is_finite() {
            (lo, hi)
        } else {
            (0.0, 1.0)
        };
        if from_zero {
            lo = lo.min(0.0);
            hi = hi.max(0.0);
        }
        if lo == hi && from_zero {
            hi = lo + 1.0;
        }
        let ticks = nice_ticks(lo, hi, TICKS_TARGET);
        Axis {
            lo: ticks[0],
            hi: ticks[ticks.len() - 1],
            ticks,
            log: false,
        }
    }

    /// Whole decades around `lo..=hi` (both > 0); ticks at each power of
    /// ten, plus 2× and 5× when the range spans a single decade.
    fn log(lo: f64, hi: f64) -> Axis {
        let (lo, hi) = if lo.is_finite() && hi.is_finite() && lo > 0.0 {
            (lo, hi)
        } else {
            (1.0, 10.0)
        };
        let a = lo.log10().floor() as i32;
        let b = (hi.log10().ceil() as i32).max(a + 1);
        let mut ticks = Vec::new();
        for e in a..=b {
            let p = 10f64.powi(e);
            ticks.push(p);
            if b - a == 1 && e < b {
                ticks.push(2.0 * p);
                ticks.push(5.0 * p);
            }
        }
        Axis {
            lo: 10f64.powi(a),
            hi: 10f64.powi(b),
            ticks,
            log: true,
        }
    }

    /// Where `v` falls, 0 at `lo` and 1 at `hi`.
    fn frac(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        debug_assert!(f.is_finite(), "{v} on {}..{}", self.lo, self.hi);
        if f.is_finite() {
            f
        } else {
            0.0
        }
    }

    fn label(&self, v: f64) -> String {
        if self.log {
            return format_value(v);
        }
        let step = if self.ticks.len() > 1 {
            self.ticks[1] - self.ticks[0]
        } else {
            1.0
        };
        let max = self.ticks.iter().fold(0f64, |m, t| m.max(t.abs()));
        format_tick(v, step, max)
    }
}

/// The plot area inside the margins.
struct Plot {
    w: f64,
    h: f64,
}

impl Default for Plot {
    fn default() -> Plot {
        Plot {
            w: WIDTH - MARGIN_LEFT - MARGIN_RIGHT,
            h: HEIGHT - MARGIN_TOP - MARGIN_BOTTOM,
        }
    }
}

impl Plot {
    fn px(&self, frac: f64) -> f64 {
        MARGIN_LEFT + frac * self.w
    }

    fn py(&self, frac: f64) -> f64 {
        MARGIN_TOP + (1.0 - frac) * self.h
    }

    fn frame(&self, svg: &mut String) {
        let _ = writeln!(
            svg,
            r##"<rect x="{MARGIN_LEFT:.1}" y="{MARGIN_TOP:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
            self.w, self.h
        );
    }

    fn axes(&self, svg: &mut String, x: &Axis, y: &Axis, x_label: &str, y_label: &str) {
        self.y_axis(svg, y, y_label);
        for &t in &x.ticks {
            let px = self.px(x.frac(t));
            let bottom = MARGIN_TOP + self.h;
            let _ = writeln!(
                svg,
                r##"<line x1="{px:.1}" y1="{MARGIN_TOP:.1}" x2="{px:.1}" y2="{bottom:.1}" stroke="#ddd"/>"##
            );
            let _ = writeln!(
                svg,
                r#"<text x="{px:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
                bottom + 16.0,
                escape(&x.label(t))
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="13" text-anchor="middle">{}</text>"#,
            MARGIN_LEFT + self.w / 2.0,
            HEIGHT - 16.0,
            escape(x_label)
        );
        self.frame(svg);
    }

    fn y_axis(&self, svg: &mut String, y: &Axis, y_label: &str) {
        let right = MARGIN_LEFT + self.w;
        for &t in &y.ticks {
            let py = self.py(y.frac(t));
            let _ = writeln!(
                svg,
                r##"<line x1="{MARGIN_LEFT:.1}" y1="{py:.1}" x2="{right:.1}" y2="{py:.1}" stroke="#ddd"/>"##
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
                MARGIN_LEFT - 6.0,
                py + 4.0,
                escape(&y.label(t))
            );
        }
        let (lx, ly) = (18.0, MARGIN_TOP + self.h / 2.0);
        let _ = writeln!(
            svg,
            r#"<text x="{lx:.1}" y="{ly:.1}" font-size="13" text-anchor="middle" transform="rotate(-90 {lx:.1} {ly:.1})">{}</text>"#,
            escape(y_label)
        );
    }

    fn no_data(&self, svg: &mut String) {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="14" fill="#888" text-anchor="middle">no data</text>"##,
            self.px(0.5),
            self.py(0.5)
        );
    }
}

fn open_svg(title: &str) -> String {
    let mut svg = String::with_capacity(8192);
    let _ = writeln!(svg, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH:.0}" height="{HEIGHT:.0}" viewBox="0 0 {WIDTH:.0} {HEIGHT:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, "<title>{}</title>", escape(title));
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH:.0}" height="{HEIGHT:.0}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="26" font-size="16" font-weight="bold" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    svg
}

fn close_svg(mut svg: String) -> String {
    svg.push_str("</svg>\n");
    svg
}

/// Escapes text and attribute values for XML.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A tick label with as many decimals as the step needs, in k or M when
/// the axis's largest tick `max` reaches 10 000 or 1 000 000
/// (0, 50k, …, 300k; 0, 0.5M, …, 2.5M).
fn format_tick(v: f64, step: f64, max: f64) -> String {
    if v.abs() < step * 1e-9 {
        return "0".into();
    }
    let (scale, unit) = if max >= 1e6 {
        (1e6, "M")
    } else if max >= 1e4 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let decimals = (-(step / scale).log10().floor()).max(0.0) as usize;
    format!("{:.*}{unit}", decimals, v / scale)
}

/// A value label: three significant digits, k/M/G for large values.
fn format_value(v: f64) -> String {
    let a = v.abs();
    let (scale, unit) = if a >= 1e9 {
        (1e9, "G")
    } else if a >= 1e6 {
        (1e6, "M")
    } else if a >= 1e4 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let x = v / scale;
    let decimals = if x == 0.0 || x.abs() >= 100.0 || x.fract() == 0.0 {
        0
    } else if x.abs() >= 10.0 {
        1
    } else if x.abs() >= 0.01 {
        2
    } else {
        // Small fractions: enough digits for three significant ones.
        (2 - x.abs().log10().floor() as i64).clamp(2, 12) as usize
    };
    format!("{x:.decimals$}{unit}")
}

#[cfg(test)]
mod tests {
    use quick_xml::events::Event;
    use quick_xml::Reader;

    use super::*;

    /// Parses `svg` as XML, checking tag balance and attribute syntax,
    /// and every numeric coordinate is finite; returns (element name,
    /// attributes) of every element.
    fn elements(svg: &str) -> Vec<(String, Vec<(String, String)>)> {
        let mut r = Reader::from_str(svg);
        r.config_mut().check_end_names = true;
        let mut out = Vec::new();
        let mut depth = 0i32;
        loop {
            let ev = r
                .read_event()
                .unwrap_or_else(|e| panic!("not XML: {e}\n{svg}"));
            let start = match &ev {
                Event::Start(e) => {
                    depth += 1;
                    Some(e.clone())
                }
                Event::Empty(e) => Some(e.clone()),
                Event::End(_) => {
                    depth -= 1;
                    None
                }
                Event::Text(t) => {
                    t.unescape().expect("text escapes are valid");
                    None
                }
                Event::Eof => break,
                _ => None,
            };
            if let Some(e) = start {
                let name = String::from_utf8(e.name().as_ref().to_vec()).unwrap();
                let attrs = e
                    .attributes()
                    .with_checks(true)
                    .map(|a| {
                        let a = a.unwrap_or_else(|e| panic!("bad attribute: {e}"));
                        (
                            String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                            a.unescape_value().unwrap().into_owned(),
                        )
                    })
                    .collect::<Vec<_>>();
                for (k, v) in &attrs {
                    let numeric = matches!(
                        k.as_str(),
                        "x" | "y" | "x1" | "x2" | "y1" | "y2" | "cx" | "cy" | "width" | "height"
                    );
                    if numeric {
                        let f: f64 = v.parse().unwrap_or_else(|_| panic!("{k}={v:?}"));
                        assert!(f.is_finite(), "{k}={v}");
                    }
                    if k == "points" {
                        for p in v.split(' ') {
                            let (x, y) = p.split_once(',').expect("x,y");
                            assert!(x.parse::<f64>().unwrap().is_finite());
                            assert!(y.parse::<f64>().unwrap().is_finite());
                        }
                    }
                }
                out.push((name, attrs));
            }
        }
        assert_eq!(depth, 0, "unbalanced tags");
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        out
    }

    fn polylines(els: &[(String, Vec<(String, String)>)]) -> Vec<&Vec<(String, String)>> {
        els.iter()
            .filter(|(n, _)| n == "polyline")
            .map(|(_, a)| a)
            .collect()
    }

    fn attr<'a>(a: &'a [(String, String)], k: &str) -> &'a str {
        &a.iter().find(|(n, _)| n == k).expect(k).1
    }

    fn curve() -> Vec<Series> {
        vec![
            Series {
                name: "signed, 2 cores".into(),
                points: vec![
                    (10_000.0, 8.0),
                    (20_000.0, 9.5),
                    (40_000.0, 14.0),
                    (46_000.0, 120.0),
                ],
            },
            Series {
                name: "unsigned <512 B> & co".into(),
                points: vec![(50_000.0, 3.0), (150_000.0, 4.0), (300_000.0, 9.0)],
            },
        ]
    }

    #[test]
    fn line_chart_has_a_polyline_per_series() {
        let svg = line_chart(
            "Throughput vs latency",
            "tx/s",
            "p99 latency (ms)",
            &curve(),
        );
        let els = elements(&svg);
        assert_eq!(els[0].0, "svg");
        let lines = polylines(&els);
        assert_eq!(lines.len(), 2);
        assert_eq!(attr(lines[0], "points").split(' ').count(), 4);
        assert_eq!(attr(lines[1], "data-series"), "unsigned <512 B> & co");
        assert!(svg.contains("unsigned &lt;512 B&gt; &amp; co"));
        assert_eq!(els.iter().filter(|(n, _)| n == "circle").count(), 7);
        // Round tick labels: 0, 50k, ... 300k on x; 0..120 (or so) on y.
        assert!(svg.contains(">300k</text>"), "{svg}");
        assert!(!svg.contains(">0k</text>"), "{svg}");
        assert!(svg.contains(">0</text>"));
    }

    #[test]
    fn log_y_axis_uses_decades_and_drops_non_positive() {
        let mut s = curve();
        s[0].points.push((47_000.0, 0.0));
        s[0].points.push((48_000.0, f64::NAN));
        let svg = line_chart_scaled("t", "x", "y", &s, YScale::Log);
        let els = elements(&svg);
        let lines = polylines(&els);
        assert_eq!(attr(lines[0], "points").split(' ').count(), 4);
        for t in [">1</text>", ">10</text>", ">100</text>", ">1000</text>"] {
            assert!(svg.contains(t), "{t} in {svg}");
        }
    }

    #[test]
    fn empty_and_single_point_inputs_are_finite() {
        for svg in [
            line_chart("empty", "x", "y", &[]),
            line_chart(
                "no points",
                "x",
                "y",
                &[Series {
                    name: "a".into(),
                    points: vec![],
                }],
            ),
            line_chart_scaled("empty log", "x", "y", &[], YScale::Log),
            bar_chart("empty", "y", &[]),
        ] {
            let els = elements(&svg);
            assert!(polylines(&els).is_empty());
            assert!(svg.contains("no data"));
        }
        let one = [Series {
            name: "one".into(),
            points: vec![(5.0, 5.0)],
        }];
        for scale in [YScale::Linear, YScale::Log] {
            let svg = line_chart_scaled("one", "x", "y", &one, scale);
            let els = elements(&svg);
            assert_eq!(polylines(&els).len(), 1);
            assert_eq!(els.iter().filter(|(n, _)| n == "circle").count(), 1);
        }
        let zero = [Series {
            name: "zero".into(),
            points: vec![(0.0, 0.0)],
        }];
        elements(&line_chart("zero", "x", "y", &zero));
    }

    #[test]
    fn bar_chart_draws_each_bar() {
        let bars: Vec<(String, f64)> = [
            ("net/0", 0.21),
            ("verify/0", 0.968),
            ("mempool/0", 0.061),
            ("exec/0", f64::NAN),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
        let svg = bar_chart("Busy fraction per tile", "busy fraction", &bars);
        let els = elements(&svg);
        let rects: Vec<_> = els
            .iter()
            .filter(|(n, a)| n == "rect" && a.iter().any(|(k, v)| k == "class" && v == "bar"))
            .collect();
        assert_eq!(rects.len(), 3);
        assert!(
            svg.contains(">0.97</text>") && svg.contains(">n/a</text>"),
            "{svg}"
        );
        // Taller value, taller bar.
        let h = |i: usize| attr(&rects[i].1, "height").parse::<f64>().unwrap();
        assert!(h(1) > h(0) && h(0) > h(2));
        let neg = bar_chart("neg", "y", &[("a".into(), -2.0), ("b".into(), 3.0)]);
        elements(&neg);
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_ticks(0.0, 1.0, 6), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(
            nice_ticks(3.0, 97.0, 6),
            vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        assert_eq!(
            nice_ticks(10_000.0, 46_000.0, 6),
            vec![10_000.0, 20_000.0, 30_000.0, 40_000.0, 50_000.0]
        );
        assert_eq!(
            nice_ticks(5.0, 5.0, 6),
            vec![2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
        );
        assert_eq!(format_tick(0.30000000000000004, 0.1, 1.0), "0.3");
        assert_eq!(format_tick(2_500_000.0, 500_000.0, 3e6), "2.5M");
        assert_eq!(format_tick(45_000.0, 5_000.0, 50_000.0), "45k");
        assert_eq!(format_tick(5_000.0, 1_000.0, 5_000.0), "5000");
        assert_eq!(format_tick(1e-17, 50_000.0, 300_000.0), "0");
        assert_eq!(format_value(0.968), "0.97");
        assert_eq!(format_value(120.0), "120");
        assert_eq!(format_value(45_100.0), "45.1k");
    }
}
