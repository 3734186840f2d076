//! Renders `velox monitor --once` output from metrics files, as the node
//! will: `cargo run -p velox-tuning --example monitor_once -- FIRST [SECOND]`
//! (with two files, rates assume they were scraped 1 s apart unless both
//! carry `velox_uptime_seconds`). With `--live FILE`, shows the live view
//! re-reading FILE every second.

use std::time::{Duration, Instant};

use velox_tuning::monitor::{render_text, run_monitor, Monitor};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"));
    if args.first().map(String::as_str) == Some("--live") {
        let Some(path) = args.get(1).cloned() else {
            eprintln!("usage: monitor_once --live FILE");
            std::process::exit(2);
        };
        let fetch = move || read(&path);
        if let Err(e) = run_monitor(Monitor::new(args[1].clone()), fetch, Duration::from_secs(1)) {
            eprintln!("terminal: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.is_empty() || args.len() > 2 {
        eprintln!("usage: monitor_once FIRST [SECOND] | --live FILE");
        std::process::exit(2);
    }
    let mut m = Monitor::new(args.last().cloned().unwrap_or_default());
    let t = Instant::now();
    for (i, p) in args.iter().enumerate() {
        m.update(read(p), t + Duration::from_secs(i as u64));
    }
    print!("{}", render_text(m.view()));
    if m.view().error.is_some() {
        std::process::exit(1);
    }
}
