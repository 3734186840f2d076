//! Progress lines for long work (devnet start-up and load, snapshot
//! creation, verification and restore, replay): a label, how much is done
//! (of a total where known), a rate and an ETA.
//!
//! ```text
//!  load: 12.0/30 s  sent 24000  committed 23000  rejected 0  1990 tx/s  ETA 18 s
//!  replay: 1200/5000 commits  61000 transactions  350 commits/s  ETA 11 s
//! ```
//!
//! On a terminal (stderr is a tty) the line is rewritten in place with `\r`
//! at most once per [`BAR_INTERVAL`]; otherwise whole lines are printed at
//! most once per [`LINES_INTERVAL`], so logs stay readable. Work that ends
//! before the first interval prints nothing. Progress never goes to stdout:
//! stdout carries the reports scripts parse (`velox devnet`'s JSON).
//!
//! The arithmetic and the formatting are plain functions of their inputs
//! ([`format_line`], [`eta_s`], [`rate_per_s`]); only [`Progress`] reads
//! the clock.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a terminal line is redrawn.
pub const BAR_INTERVAL: Duration = Duration::from_secs(1);
/// How often a whole line is printed when stderr is not a terminal (a log
/// file, CI): a 30 s phase gives about six lines.
pub const LINES_INTERVAL: Duration = Duration::from_secs(5);

/// What the amount done counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Things, named in the plural (`"commits"`, `"entries"`).
    Count(&'static str),
    /// Bytes, shown in binary units (KiB, MiB, GiB).
    Bytes,
    /// Seconds of a phase that runs for a fixed time (a load of D seconds).
    Seconds,
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// One line rewritten in place (`\r`), every [`BAR_INTERVAL`].
    Bar,
    /// Whole lines, every [`LINES_INTERVAL`].
    Lines,
    /// Nothing.
    Off,
}

impl Style {
    /// [`Style::Bar`] if stderr is a terminal, else [`Style::Lines`].
    pub fn for_stderr() -> Style {
        if std::io::stderr().is_terminal() {
            Style::Bar
        } else {
            Style::Lines
        }
    }

    /// The shortest time between two lines in this style.
    pub fn interval(self) -> Duration {
        match self {
            Style::Bar => BAR_INTERVAL,
            Style::Lines | Style::Off => LINES_INTERVAL,
        }
    }
}

/// `n` bytes in binary units: `512 B`, `12.0 MiB`.
pub fn format_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n.max(0.0);
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A count or rate: whole numbers from 10 up, one decimal below.
fn format_number(v: f64) -> String {
    if v.abs() >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Seconds as a short duration: `0 s`, `18 s`, `2 min 05 s`, `1 h 02 min`.
pub fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

/// The amount done, of the total where known: `1200/5000 commits`,
/// `12.0 MiB/1.2 GiB`, `12.0/30 s`.
pub fn format_amount(unit: Unit, done: f64, total: Option<f64>) -> String {
    match (unit, total) {
        (Unit::Count(what), Some(t)) => format!("{done:.0}/{t:.0} {what}"),
        (Unit::Count(what), None) => format!("{done:.0} {what}"),
        (Unit::Bytes, Some(t)) => format!("{}/{}", format_bytes(done), format_bytes(t)),
        (Unit::Bytes, None) => format_bytes(done),
        (Unit::Seconds, Some(t)) if t.fract() == 0.0 => format!("{done:.1}/{t:.0} s"),
        (Unit::Seconds, Some(t)) => format!("{done:.1}/{t:.1} s"),
        (Unit::Seconds, None) => format!("{done:.1} s"),
    }
}

/// A rate of `per_s` things per second: `350 commits/s`, `45.0 MiB/s`.
pub fn format_rate(per_s: f64, rate: RateUnit) -> String {
    match rate {
        RateUnit::Per(what) => format!("{} {what}/s", format_number(per_s)),
        RateUnit::Bytes => format!("{}/s", format_bytes(per_s)),
    }
}

/// What a rate counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateUnit {
    /// Things per second (`"tx"` gives `2000 tx/s`).
    Per(&'static str),
    /// Bytes per second.
    Bytes,
}

/// The rate of `delta` things over `dt_s` seconds (`None` over no time).
pub fn rate_per_s(delta: f64, dt_s: f64) -> Option<f64> {
    (dt_s > 0.0 && delta.is_finite()).then(|| delta.max(0.0) / dt_s)
}

/// Seconds left at the average pace so far: `done` of `total` took
/// `elapsed_s`. `None` while nothing is done, without a total, or once
/// done (a phase of fixed length, counted in seconds, gives exactly the
/// seconds left).
pub fn eta_s(done: f64, total: Option<f64>, elapsed_s: f64) -> Option<f64> {
    let total = total?;
    if done <= 0.0 || elapsed_s <= 0.0 || done >= total {
        return None;
    }
    Some((total - done) * elapsed_s / done)
}

/// The parts of one progress line.
#[derive(Clone, Debug, PartialEq)]
pub struct LineParts<'a> {
    pub label: &'a str,
    pub unit: Unit,
    pub done: f64,
    pub total: Option<f64>,
    /// Extra fields, shown after the amount (`sent 2400  committed 2300`).
    pub extra: &'a str,
    /// Rate per second and what it counts.
    pub rate: Option<(f64, RateUnit)>,
    pub eta_s: Option<f64>,
}

/// `label amount  extra  rate  ETA t`, fields apart by two spaces; the
/// missing ones left out.
pub fn format_line(p: &LineParts<'_>) -> String {
    let mut line = format!("{} {}", p.label, format_amount(p.unit, p.done, p.total));
    if !p.extra.is_empty() {
        line.push_str("  ");
        line.push_str(p.extra);
    }
    if let Some((r, unit)) = p.rate {
        line.push_str("  ");
        line.push_str(&format_rate(r, unit));
    }
    if let Some(e) = p.eta_s {
        line.push_str("  ETA ");
        line.push_str(&format_duration(e));
    }
    line
}

/// Shows a snapshot pass's progress on `p`: entries (of the header's count
/// where known) and the bytes handled.
pub fn show_snapshot_pass(p: &mut Progress<'_>, s: &velox_storage::snapshot::SnapshotProgress) {
    p.set_total(s.entries_total);
    let bytes = s.bytes_done as f64;
    p.update_with(s.entries_done as f64, s.entries_done as f64, || {
        format_bytes(bytes)
    });
}

enum Out<'w> {
    Writer(Box<dyn Write + 'w>),
    /// `tracing` at level info (inside a running node, whose stderr is its
    /// log).
    Log,
}

/// A progress reporter for one phase of work. Call [`Progress::update`]
/// as often as convenient (it prints only when a line is due) and
/// [`Progress::finish`] at the end.
pub struct Progress<'w> {
    label: String,
    unit: Unit,
    total: Option<f64>,
    /// What the shown rate counts; `None`: no rate.
    rate_unit: Option<RateUnit>,
    out: Out<'w>,
    style: Style,
    start: Instant,
    /// When the last line was printed (`start` before the first), and the
    /// counted amount then (the rate shown is over that window).
    last: (Instant, f64),
    /// A terminal line is drawn and not ended by a newline.
    bar_drawn: bool,
    /// The last line printed (`None`: none yet).
    printed: Option<String>,
}

/// The rate a unit's amount gives by default.
fn default_rate(unit: Unit) -> Option<RateUnit> {
    match unit {
        Unit::Count(what) => Some(RateUnit::Per(what)),
        Unit::Bytes => Some(RateUnit::Bytes),
        // Seconds per second says nothing: a fixed-length phase names what
        // it counts with `rate_of`.
        Unit::Seconds => None,
    }
}

impl Progress<'static> {
    /// Progress on stderr: a bar on a terminal, lines otherwise.
    pub fn stderr(label: impl Into<String>, total: Option<u64>, unit: Unit) -> Self {
        Progress::writer(
            Box::new(std::io::stderr()),
            Style::for_stderr(),
            label,
            total,
            unit,
        )
    }

    /// Progress as `tracing` info events, every [`LINES_INTERVAL`].
    pub fn log(label: impl Into<String>, total: Option<u64>, unit: Unit) -> Self {
        let mut p = Progress::writer(Box::new(std::io::sink()), Style::Lines, label, total, unit);
        p.out = Out::Log;
        p
    }
}

impl<'w> Progress<'w> {
    /// Progress written to `out` in `style`.
    pub fn writer(
        out: Box<dyn Write + 'w>,
        style: Style,
        label: impl Into<String>,
        total: Option<u64>,
        unit: Unit,
    ) -> Self {
        let now = Instant::now();
        Progress {
            label: label.into(),
            unit,
            total: total.map(|t| t as f64),
            rate_unit: default_rate(unit),
            out: Out::Writer(out),
            style,
            start: now,
            last: (now, 0.0),
            bar_drawn: false,
            printed: None,
        }
    }

    /// Show the rate of another count than the amount done (passed to
    /// [`Progress::update_with`] as `counted`): a load of D seconds shows
    /// transactions per second.
    pub fn rate_of(mut self, unit: RateUnit) -> Self {
        self.rate_unit = Some(unit);
        self
    }

    /// Show no rate (waiting for validators: a rate says nothing).
    pub fn without_rate(mut self) -> Self {
        self.rate_unit = None;
        self
    }

    /// The total, once known.
    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total.map(|t| t as f64);
    }

    /// Time since this reporter was made.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Whether the next update would print.
    pub fn due(&self) -> bool {
        self.style != Style::Off && self.last.0.elapsed() >= self.style.interval()
    }

    /// `done` so far (its own rate is shown).
    pub fn update(&mut self, done: u64) {
        self.update_with(done as f64, done as f64, String::new);
    }

    /// `done` so far, `counted` for the rate, and extra fields (built only
    /// when a line is due).
    pub fn update_with(&mut self, done: f64, counted: f64, extra: impl FnOnce() -> String) {
        if !self.due() {
            return;
        }
        let line = self.line(done, counted, &extra());
        self.emit(&line);
    }

    /// Ends the phase: if any line was shown, shows the final one unless it
    /// says the same (and ends a terminal line); short work stays silent.
    pub fn finish(&mut self, done: u64) {
        self.finish_with(done as f64, done as f64, String::new);
    }

    /// [`Progress::finish`] with a separate count for the rate, and extras.
    pub fn finish_with(&mut self, done: f64, counted: f64, extra: impl FnOnce() -> String) {
        if self.printed.is_some() {
            let line = self.line(done, counted, &extra());
            if self.printed.as_deref() != Some(line.as_str()) {
                self.emit(&line);
            }
        }
        self.end_bar();
        self.style = Style::Off;
    }

    /// Prints a message of its own on stderr's line discipline: on a
    /// terminal it replaces a drawn bar (redrawn at the next update).
    pub fn message(&mut self, msg: &str) {
        match &mut self.out {
            Out::Writer(w) => {
                if self.bar_drawn {
                    let _ = write!(w, "\r\x1b[K");
                    self.bar_drawn = false;
                }
                let _ = writeln!(w, "{msg}");
                let _ = w.flush();
            }
            Out::Log => tracing::info!("{msg}"),
        }
    }

    fn line(&mut self, done: f64, counted: f64, extra: &str) -> String {
        let now = Instant::now();
        let elapsed = now.duration_since(self.start).as_secs_f64();
        let rate = self.rate_unit.and_then(|u| {
            // Over the window since the last line; the whole run before the
            // first.
            let (t, c) = self.last;
            rate_per_s(counted - c, now.duration_since(t).as_secs_f64()).map(|r| (r, u))
        });
        self.last = (now, counted);
        format_line(&LineParts {
            label: &self.label,
            unit: self.unit,
            done,
            total: self.total,
            extra,
            rate,
            eta_s: eta_s(done, self.total, elapsed),
        })
    }

    fn emit(&mut self, line: &str) {
        self.printed = Some(line.to_string());
        match (&mut self.out, self.style) {
            (_, Style::Off) => {}
            (Out::Log, _) => tracing::info!("{line}"),
            (Out::Writer(w), Style::Bar) => {
                let _ = write!(w, "\r{line}\x1b[K");
                let _ = w.flush();
                self.bar_drawn = true;
            }
            (Out::Writer(w), Style::Lines) => {
                let _ = writeln!(w, "{line}");
                let _ = w.flush();
            }
        }
    }

    fn end_bar(&mut self) {
        if self.bar_drawn {
            if let Out::Writer(w) = &mut self.out {
                let _ = writeln!(w);
                let _ = w.flush();
            }
            self.bar_drawn = false;
        }
    }
}

impl Drop for Progress<'_> {
    /// A phase that ends early (an error) leaves no half line behind.
    fn drop(&mut self) {
        self.end_bar();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts() {
        assert_eq!(
            format_amount(Unit::Count("commits"), 1200.0, Some(5000.0)),
            "1200/5000 commits"
        );
        assert_eq!(
            format_amount(Unit::Count("entries"), 7.0, None),
            "7 entries"
        );
        assert_eq!(format_amount(Unit::Seconds, 12.04, Some(30.0)), "12.0/30 s");
        assert_eq!(format_amount(Unit::Seconds, 1.0, Some(2.5)), "1.0/2.5 s");
        assert_eq!(format_amount(Unit::Seconds, 3.25, None), "3.2 s");
        assert_eq!(
            format_amount(
                Unit::Bytes,
                12.0 * 1024.0 * 1024.0,
                Some(1.5 * 1024.0 * 1024.0 * 1024.0)
            ),
            "12.0 MiB/1.5 GiB"
        );
    }

    #[test]
    fn bytes() {
        assert_eq!(format_bytes(0.0), "0 B");
        assert_eq!(format_bytes(1023.0), "1023 B");
        assert_eq!(format_bytes(1024.0), "1.0 KiB");
        assert_eq!(format_bytes(1536.0 * 1024.0), "1.5 MiB");
        assert_eq!(format_bytes(2.0 * 1024f64.powi(5)), "2048.0 TiB");
        assert_eq!(format_bytes(-5.0), "0 B");
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(0.0), "0 s");
        assert_eq!(format_duration(0.4), "0 s");
        assert_eq!(format_duration(18.2), "18 s");
        assert_eq!(format_duration(59.6), "1 min 00 s");
        assert_eq!(format_duration(125.0), "2 min 05 s");
        assert_eq!(format_duration(3720.0), "1 h 02 min");
        assert_eq!(format_duration(-3.0), "0 s");
    }

    #[test]
    fn rates() {
        assert_eq!(rate_per_s(2000.0, 1.0), Some(2000.0));
        assert_eq!(rate_per_s(500.0, 0.25), Some(2000.0));
        assert_eq!(rate_per_s(10.0, 0.0), None);
        // A count that went back (a restarted source) is no negative rate.
        assert_eq!(rate_per_s(-10.0, 1.0), Some(0.0));
        assert_eq!(format_rate(1993.9, RateUnit::Per("tx")), "1994 tx/s");
        assert_eq!(format_rate(3.46, RateUnit::Per("commits")), "3.5 commits/s");
        assert_eq!(
            format_rate(45.0 * 1024.0 * 1024.0, RateUnit::Bytes),
            "45.0 MiB/s"
        );
    }

    #[test]
    fn etas() {
        // A fixed-length phase in seconds: exactly the seconds left.
        assert_eq!(eta_s(12.0, Some(30.0), 12.0), Some(18.0));
        // 1200 of 5000 in 4 s: 300/s, 3800 left.
        let e = eta_s(1200.0, Some(5000.0), 4.0).unwrap();
        assert!((e - 3800.0 / 300.0).abs() < 1e-9, "{e}");
        assert_eq!(eta_s(0.0, Some(10.0), 3.0), None, "nothing done yet");
        assert_eq!(eta_s(5.0, None, 3.0), None, "no total");
        assert_eq!(eta_s(10.0, Some(10.0), 3.0), None, "done");
        assert_eq!(eta_s(11.0, Some(10.0), 3.0), None, "past the total");
        assert_eq!(eta_s(5.0, Some(10.0), 0.0), None, "no time");
    }

    #[test]
    fn lines() {
        let p = LineParts {
            label: "devnet: load",
            unit: Unit::Seconds,
            done: 12.0,
            total: Some(30.0),
            extra: "",
            rate: Some((2000.0, RateUnit::Per("tx"))),
            eta_s: eta_s(12.0, Some(30.0), 12.0),
        };
        assert_eq!(
            format_line(&p),
            "devnet: load 12.0/30 s  2000 tx/s  ETA 18 s"
        );
        let p = LineParts {
            label: "replay:",
            unit: Unit::Count("commits"),
            done: 1200.0,
            total: Some(5000.0),
            extra: "61000 transactions",
            rate: Some((350.0, RateUnit::Per("commits"))),
            eta_s: Some(10.9),
        };
        assert_eq!(
            format_line(&p),
            "replay: 1200/5000 commits  61000 transactions  350 commits/s  ETA 11 s"
        );
        let p = LineParts {
            label: "devnet: start-up",
            unit: Unit::Count("validators healthy"),
            done: 2.0,
            total: Some(4.0),
            extra: "",
            rate: None,
            eta_s: None,
        };
        assert_eq!(format_line(&p), "devnet: start-up 2/4 validators healthy");
    }

    /// A writer the test can read back after the reporter is done with it.
    #[derive(Clone, Default)]
    struct Shared(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.borrow().clone()).unwrap()
        }
    }

    #[test]
    fn short_work_prints_nothing() {
        // Updates before the first interval print nothing, nor does finish.
        for style in [Style::Bar, Style::Lines] {
            let out = Shared::default();
            let mut p = Progress::writer(
                Box::new(out.clone()),
                style,
                "replay:",
                Some(10),
                Unit::Count("commits"),
            );
            for i in 0..10 {
                p.update(i);
            }
            p.finish(10);
            drop(p);
            assert_eq!(out.text(), "", "{style:?}");
        }
    }

    #[test]
    fn bar_rewrites_one_line_and_ends_it() {
        let out = Shared::default();
        let mut p = Progress::writer(
            Box::new(out.clone()),
            Style::Bar,
            "replay:",
            Some(10),
            Unit::Count("commits"),
        )
        .without_rate();
        // Pretend 4 s passed (no sleeping in tests): 4 of 10 in 4 s leaves
        // 6 s.
        p.start -= Duration::from_secs(4);
        p.last.0 = p.start;
        p.update(4);
        p.message("note");
        p.finish(10);
        drop(p);
        assert_eq!(
            out.text(),
            "\rreplay: 4/10 commits  ETA 6 s\x1b[K\r\x1b[Knote\n\rreplay: 10/10 commits\x1b[K\n"
        );
    }

    #[test]
    fn the_final_line_is_not_repeated() {
        let out = Shared::default();
        let mut p = Progress::writer(
            Box::new(out.clone()),
            Style::Lines,
            "devnet: waiting for the first commit",
            Some(4),
            Unit::Count("validators committed"),
        )
        .without_rate();
        p.last.0 -= LINES_INTERVAL;
        p.update(4);
        p.finish(4);
        drop(p);
        assert_eq!(
            out.text(),
            "devnet: waiting for the first commit 4/4 validators committed\n"
        );
    }

    #[test]
    fn lines_are_whole() {
        let out = Shared::default();
        let mut p = Progress::writer(
            Box::new(out.clone()),
            Style::Lines,
            "snapshot verify:",
            Some(100),
            Unit::Count("entries"),
        )
        .without_rate();
        p.last.0 -= LINES_INTERVAL;
        p.update_with(50.0, 50.0, || "1.0 KiB".into());
        // Not due again right away.
        p.update(60);
        p.finish(100);
        drop(p);
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text:?}");
        assert!(lines[0].starts_with("snapshot verify: 50/100 entries  1.0 KiB  ETA "));
        assert_eq!(lines[1], "snapshot verify: 100/100 entries");
        assert!(!text.contains('\r'));
    }
}
