//! Per-tile counters, the same for every tile kind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counters of one tile. All are monotonic except `queue_depth`.
pub struct TileStats {
    pub kind: &'static str,
    pub index: usize,
    pub core: usize,
    started: Instant,
    busy_ns: AtomicU64,
    backpressure_ns: AtomicU64,
    items_in: AtomicU64,
    items_out: AtomicU64,
    drops: AtomicU64,
    queue_depth: AtomicU64,
}

/// A point-in-time copy of a tile's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TileSnapshot {
    pub kind: &'static str,
    pub index: usize,
    pub core: usize,
    pub uptime_ns: u64,
    pub busy_ns: u64,
    pub backpressure_ns: u64,
    pub items_in: u64,
    pub items_out: u64,
    pub drops: u64,
    pub queue_depth: u64,
}

impl TileStats {
    pub fn new(kind: &'static str, index: usize, core: usize) -> Arc<Self> {
        Arc::new(Self {
            kind,
            index,
            core,
            started: Instant::now(),
            busy_ns: AtomicU64::new(0),
            backpressure_ns: AtomicU64::new(0),
            items_in: AtomicU64::new(0),
            items_out: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            queue_depth: AtomicU64::new(0),
        })
    }

    pub fn add_busy(&self, d: Duration) {
        self.busy_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
    pub fn add_backpressure(&self, d: Duration) {
        self.backpressure_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
    pub fn add_in(&self, n: u64) {
        self.items_in.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_out(&self, n: u64) {
        self.items_out.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_drops(&self, n: u64) {
        self.drops.fetch_add(n, Ordering::Relaxed);
    }
    pub fn set_queue_depth(&self, n: usize) {
        self.queue_depth.store(n as u64, Ordering::Relaxed);
    }

    /// Runs `f`, counting its wall time as busy.
    pub fn busy<R>(&self, f: impl FnOnce() -> R) -> R {
        let t = Instant::now();
        let r = f();
        self.add_busy(t.elapsed());
        r
    }

    pub fn snapshot(&self) -> TileSnapshot {
        TileSnapshot {
            kind: self.kind,
            index: self.index,
            core: self.core,
            uptime_ns: self.started.elapsed().as_nanos() as u64,
            busy_ns: self.busy_ns.load(Ordering::Relaxed),
            backpressure_ns: self.backpressure_ns.load(Ordering::Relaxed),
            items_in: self.items_in.load(Ordering::Relaxed),
            items_out: self.items_out.load(Ordering::Relaxed),
            drops: self.drops.load(Ordering::Relaxed),
            queue_depth: self.queue_depth.load(Ordering::Relaxed),
        }
    }
}

/// All tiles of a node, for metrics and the monitor.
///
/// It also keeps the previous sample per tile so that the busy fraction is
/// reported over the last sampling interval, not since start.
#[derive(Default, Clone)]
pub struct TileRegistry {
    inner: Arc<Mutex<RegistryInner>>,
}

#[derive(Default)]
struct RegistryInner {
    tiles: Vec<Arc<TileStats>>,
    last: Vec<TileSnapshot>,
}

/// A tile's counters with its busy and backpressure fractions over the last
/// interval (0..=1).
#[derive(Clone, Debug)]
pub struct TileReport {
    pub snap: TileSnapshot,
    pub busy_ratio: f64,
    pub backpressure_ratio: f64,
}

impl TileRegistry {
    pub fn register(&self, t: Arc<TileStats>) {
        let mut g = self.inner.lock().expect("registry poisoned");
        g.last.push(t.snapshot());
        g.tiles.push(t);
    }

    /// Samples every tile; ratios cover the time since the previous sample
    /// (or since start on the first).
    pub fn sample(&self) -> Vec<TileReport> {
        let mut g = self.inner.lock().expect("registry poisoned");
        let RegistryInner { tiles, last } = &mut *g;
        tiles
            .iter()
            .zip(last.iter_mut())
            .map(|(t, prev)| {
                let now = t.snapshot();
                let (dt, db, dbp) = if now.uptime_ns > prev.uptime_ns + 100_000_000 {
                    (
                        now.uptime_ns - prev.uptime_ns,
                        now.busy_ns.saturating_sub(prev.busy_ns),
                        now.backpressure_ns.saturating_sub(prev.backpressure_ns),
                    )
                } else {
                    (now.uptime_ns.max(1), now.busy_ns, now.backpressure_ns)
                };
                let report = TileReport {
                    busy_ratio: (db as f64 / dt as f64).min(1.0),
                    backpressure_ratio: (dbp as f64 / dt as f64).min(1.0),
                    snap: now.clone(),
                };
                if now.uptime_ns > prev.uptime_ns + 100_000_000 {
                    *prev = now;
                }
                report
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_ratio_reflects_work() {
        let reg = TileRegistry::default();
        let t = TileStats::new("verify", 0, 1);
        reg.register(t.clone());
        t.busy(|| std::thread::sleep(Duration::from_millis(60)));
        std::thread::sleep(Duration::from_millis(60));
        t.add_in(5);
        t.add_out(4);
        let r = &reg.sample()[0];
        assert!(r.busy_ratio > 0.3 && r.busy_ratio < 0.8, "{}", r.busy_ratio);
        assert_eq!((r.snap.items_in, r.snap.items_out), (5, 4));
    }
}
