//! The live terminal view (ratatui on crossterm): headline figures, the
//! per-tile table with busy fraction as a bar, and an error line when a
//! fetch fails. It refreshes every interval and keeps running through
//! failed fetches; `q`, `Esc` or `Ctrl-C` quits and restores the terminal.
//!
//! ```text
//!   loop ─▶ fetch() ─▶ Monitor::update (parse, snapshot, rates vs previous)
//!     ▲                         │
//!     │                         ▼
//!   keys until the next tick ◀─ draw(frame, view)
//! ```

use std::io;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};
use ratatui::Frame;

use super::exposition::parse_exposition;
use super::render::{fmt_pct, TileLine, View, TILE_COLUMNS};
use super::snapshot::Snapshot;

/// Shortest refresh interval: below it the monitor's own scrapes would
/// skew the node's `_ratio` gauges (they cover the time since the previous
/// scrape by anyone) and cost the API tile noticeable work.
pub const INTERVAL_MIN: Duration = Duration::from_millis(100);

/// Width in cells of the busy bar.
const BUSY_BAR_CELLS: usize = 10;

/// The monitor's state between refreshes: the view and the previous good
/// scrape (for rates). Separate from the terminal so that `--once` and
/// tests drive it the same way as the live view.
#[derive(Clone, Debug, Default)]
pub struct Monitor {
    view: View,
    prev: Option<(Snapshot, Instant)>,
}

impl Monitor {
    /// A monitor of `source` (shown in the title; the node's metrics URL).
    pub fn new(source: impl Into<String>) -> Monitor {
        Monitor {
            view: View::new(source, Snapshot::default()),
            prev: None,
        }
    }

    /// Takes one fetch result taken at `now`. A good scrape replaces the
    /// figures (with rates against the previous good one); a failed fetch
    /// or a malformed exposition sets the error line and keeps the last
    /// good figures.
    pub fn update(&mut self, fetched: Result<String, String>, now: Instant) {
        let text = match fetched {
            Ok(t) => t,
            Err(e) => {
                self.view.error = Some(format!("fetch failed: {e}"));
                return;
            }
        };
        let fams = match parse_exposition(&text) {
            Ok(f) => f,
            Err(e) => {
                self.view.error = Some(format!("malformed metrics: {e}"));
                return;
            }
        };
        let snap = Snapshot::from_families(&fams);
        self.view.rates = self.prev.as_ref().map(|(p, at)| {
            let dt = Snapshot::gap(p, &snap, now.saturating_duration_since(*at));
            Snapshot::rates(p, &snap, dt)
        });
        self.view.snapshot = snap.clone();
        self.view.error = None;
        self.prev = Some((snap, now));
    }

    /// What to show now.
    pub fn view(&self) -> &View {
        &self.view
    }
}

/// Runs the live view until the user quits: fetches every `interval`
/// (at least [`INTERVAL_MIN`]) and redraws. `fetch` returns the metrics
/// text or an error message; it runs on this thread, so give it a timeout
/// shorter than the interval. Errors only when the terminal fails.
pub fn run_live(
    fetch: impl FnMut() -> Result<String, String>,
    interval: Duration,
) -> io::Result<()> {
    run_monitor(Monitor::new(""), fetch, interval)
}

/// [`run_live`] with a prepared monitor (to show the source in the title).
pub fn run_monitor(
    mut monitor: Monitor,
    mut fetch: impl FnMut() -> Result<String, String>,
    interval: Duration,
) -> io::Result<()> {
    let interval = interval.max(INTERVAL_MIN);
    // try_init enters raw mode and the alternate screen and installs a
    // panic hook that restores the terminal; the guard restores it on
    // every other way out.
    let mut terminal = ratatui::try_init()?;
    let _restore = RestoreOnDrop;
    loop {
        monitor.update(fetch(), Instant::now());
        terminal.draw(|f| draw(f, monitor.view()))?;
        let next = Instant::now() + interval;
        loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if event::poll(left)? {
                match event::read()? {
                    Event::Key(k) if is_quit(&k) => return Ok(()),
                    Event::Resize(..) => {
                        terminal.draw(|f| draw(f, monitor.view()))?;
                    }
                    _ => {}
                }
            }
        }
    }
}

struct RestoreOnDrop;

impl Drop for RestoreOnDrop {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// `q`, `Esc`, or `Ctrl-C` (raw mode turns Ctrl-C into a key event).
fn is_quit(k: &KeyEvent) -> bool {
    k.kind == KeyEventKind::Press
        && match k.code {
            KeyCode::Char('q') | KeyCode::Esc => true,
            KeyCode::Char('c') => k.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

/// Draws one frame of the live view.
pub fn draw(frame: &mut Frame, view: &View) {
    let headline = view.headline();
    let [title, head, table, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(headline.len() as u16 + 2),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    frame.render_widget(
        Paragraph::new(view.title()).style(Style::new().add_modifier(Modifier::BOLD)),
        title,
    );

    let label_w = headline.iter().map(|(l, _)| l.len()).max().unwrap_or(0) + 2;
    let lines: Vec<Line> = headline
        .into_iter()
        .map(|(label, text)| {
            Line::from(vec![
                Span::styled(format!("{label:<label_w$}"), Style::new().fg(Color::Cyan)),
                Span::raw(text),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" node ")),
        head,
    );

    let header = Row::new(TILE_COLUMNS.iter().enumerate().map(|(i, c)| match i {
        0 | 3 => Cell::from(*c),
        _ => Cell::from(Line::from(*c).right_aligned()),
    }))
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows: Vec<Row> = view.tile_lines().iter().map(tile_row).collect();
    let widths = [
        Constraint::Length(9),
        Constraint::Length(3),
        Constraint::Length(4),
        Constraint::Length(BUSY_BAR_CELLS as u16 + 7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(6),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(" tiles ")),
        table,
    );

    let foot = match &view.error {
        Some(e) => Line::from(Span::styled(
            format!("error: {e}"),
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
        None => Line::from("q / Esc / Ctrl-C: quit").dim(),
    };
    frame.render_widget(Paragraph::new(foot), footer);
}

fn tile_row(t: &TileLine) -> Row<'static> {
    let cells = t.cells();
    let mut out: Vec<Cell> = Vec::with_capacity(cells.len());
    for (i, c) in cells.into_iter().enumerate() {
        let cell = match i {
            0 => Cell::from(c),
            3 => busy_cell(t.busy),
            4 => right(c).style(level_style(t.backpressure, 0.01, 0.1)),
            9 => right(c).style(level_style(t.drops, 0.5, 0.5)),
            _ => right(c),
        };
        out.push(cell);
    }
    Row::new(out)
}

fn right(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).right_aligned())
}

/// A bar of `BUSY_BAR_CELLS` cells and the percentage, coloured by load.
fn busy_cell(busy: Option<f64>) -> Cell<'static> {
    let Some(b) = busy else {
        return Cell::from("-");
    };
    let filled = ((b.clamp(0.0, 1.0) * BUSY_BAR_CELLS as f64).round()) as usize;
    let bar = format!(
        "{}{}",
        "█".repeat(filled),
        "░".repeat(BUSY_BAR_CELLS - filled)
    );
    Cell::from(Line::from(vec![
        Span::styled(bar, level_style(Some(b), 0.7, 0.9)),
        Span::raw(format!(" {:>5}", fmt_pct(b))),
    ]))
}

/// Green below `warn`, yellow below `bad`, red at or above.
fn level_style(v: Option<f64>, warn: f64, bad: f64) -> Style {
    match v {
        Some(v) if v >= bad => Style::new().fg(Color::Red),
        Some(v) if v >= warn => Style::new().fg(Color::Yellow),
        Some(_) => Style::new().fg(Color::Green),
        None => Style::new(),
    }
}

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;

    const T0: &str = include_str!("../../fixtures/metrics/t0.txt");
    const T1: &str = include_str!("../../fixtures/metrics/t1.txt");

    fn screen(view: &View) -> Vec<String> {
        let mut term = Terminal::new(TestBackend::new(110, 30)).unwrap();
        term.draw(|f| draw(f, view)).unwrap();
        let buf = term.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect()
    }

    #[test]
    fn draws_headline_tiles_and_error_line() {
        let mut m = Monitor::new("http://127.0.0.1:8080/metrics");
        let t = Instant::now();
        m.update(Ok(T0.into()), t);
        m.update(Ok(T1.into()), t + Duration::from_secs(2));
        let lines = screen(m.view());
        let all = lines.join("\n");
        assert!(
            lines[0].starts_with("velox monitor  http://127.0.0.1:8080/metrics"),
            "{all}"
        );
        assert!(all.contains("tps") && all.contains("45.1k"), "{all}");
        let verify = lines.iter().find(|l| l.contains("verify")).expect(&all);
        assert!(
            verify.contains("██████████ ") && verify.contains("96.8"),
            "{verify}"
        );
        assert!(all.contains("q / Esc / Ctrl-C: quit"), "{all}");

        // A failed fetch keeps the figures and shows the error.
        m.update(Err("connection refused".into()), t + Duration::from_secs(4));
        let lines = screen(m.view());
        assert!(lines
            .last()
            .unwrap()
            .starts_with("error: fetch failed: connection refused"));
        assert!(lines.join("\n").contains("45.1k"));

        // So does a malformed exposition; a good scrape clears the error.
        m.update(
            Ok("velox_commit_index 1".into()),
            t + Duration::from_secs(6),
        );
        assert!(m.view().error.as_deref().unwrap().contains("line 1"));
        m.update(Ok(T1.into()), t + Duration::from_secs(8));
        assert_eq!(m.view().error, None);
    }

    #[test]
    fn draws_before_the_first_good_fetch() {
        let mut m = Monitor::new("");
        m.update(Err("timed out".into()), Instant::now());
        let lines = screen(m.view());
        assert!(lines.iter().any(|l| l.contains("TILE")));
        assert!(lines.last().unwrap().contains("timed out"));
    }

    #[test]
    fn quit_keys() {
        let key = |c, m| KeyEvent::new(c, m);
        assert!(is_quit(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(is_quit(&key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(is_quit(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!is_quit(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
    }
}
