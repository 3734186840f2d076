//! A bounded multi-producer multi-consumer ring between tiles.
//!
//! The queue itself is crossbeam's lock-free `ArrayQueue`. Waiting is done
//! with `tokio::sync::Notify`, which needs no runtime, so producers and
//! consumers may live on different reactors (or plain threads via
//! `pop_blocking`). The protocol that prevents lost wake-ups:
//!
//! ```text
//! consumer: try pop ─ empty ─▶ register interest (Notified::enable) ─▶ try pop again
//!                                   └─ still empty ─▶ sleep until a push notifies
//! producer: push ─▶ notify_one(not_empty)   (stores a permit if nobody waits)
//! ```
//! and symmetrically for a full ring with `not_full`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::queue::ArrayQueue;
use tokio::sync::Notify;

use crate::stats::TileStats;

/// A bounded ring. Clone the `Arc` to share it.
pub struct Ring<T> {
    queue: ArrayQueue<T>,
    not_empty: Notify,
    not_full: Notify,
    closed: AtomicBool,
    name: &'static str,
}

/// Returned when pushing into a closed ring: the item comes back.
#[derive(Debug)]
pub struct Closed<T>(pub T);

impl<T> Ring<T> {
    /// A ring holding at most `depth` items.
    pub fn new(name: &'static str, depth: usize) -> Arc<Self> {
        assert!(depth > 0, "ring {name}: depth must be positive");
        Arc::new(Self {
            queue: ArrayQueue::new(depth),
            not_empty: Notify::new(),
            not_full: Notify::new(),
            closed: AtomicBool::new(false),
            name,
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn len(&self) -> usize {
        self.queue.len()
    }
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Pushes without waiting; gives the item back if the ring is full.
    pub fn try_push(&self, item: T) -> Result<(), T> {
        self.queue.push(item)?;
        self.not_empty.notify_one();
        Ok(())
    }

    /// Pushes, waiting while the ring is full. Time spent waiting is added to
    /// `stats`' backpressure counter.
    pub async fn push(&self, item: T, stats: &TileStats) -> Result<(), Closed<T>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Closed(item));
        }
        let mut item = match self.queue.push(item) {
            Ok(()) => {
                self.not_empty.notify_one();
                return Ok(());
            }
            Err(item) => item,
        };
        let started = Instant::now();
        let result = loop {
            if self.closed.load(Ordering::Acquire) {
                break Err(Closed(item));
            }
            let notified = self.not_full.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.queue.push(item) {
                Ok(()) => {
                    self.not_empty.notify_one();
                    break Ok(());
                }
                Err(back) => item = back,
            }
            // Re-check periodically in case the ring was closed meanwhile.
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        };
        stats.add_backpressure(started.elapsed());
        result
    }

    /// Pops without waiting.
    pub fn try_pop(&self) -> Option<T> {
        let item = self.queue.pop()?;
        self.not_full.notify_one();
        Some(item)
    }

    /// Pops, waiting while the ring is empty. Returns `None` once the ring is
    /// closed and drained.
    pub async fn pop(&self) -> Option<T> {
        loop {
            if let Some(item) = self.try_pop() {
                return Some(item);
            }
            if self.closed.load(Ordering::Acquire) {
                return self.try_pop();
            }
            let notified = self.not_empty.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(item) = self.try_pop() {
                return Some(item);
            }
            if self.closed.load(Ordering::Acquire) {
                continue;
            }
            notified.await;
        }
    }

    /// Pops with a deadline: `Ok(None)` means closed and drained, `Err(())`
    /// means the timeout passed with nothing to pop.
    pub async fn pop_timeout(&self, timeout: Duration) -> Result<Option<T>, ()> {
        tokio::time::timeout(timeout, self.pop())
            .await
            .map_err(|_| ())
    }

    /// Moves up to `max` ready items into `out` without waiting.
    pub fn drain_into(&self, out: &mut Vec<T>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            match self.queue.pop() {
                Some(x) => {
                    out.push(x);
                    n += 1;
                }
                None => break,
            }
        }
        if n > 0 {
            // Several slots freed: wake every waiting producer.
            self.not_full.notify_waiters();
        }
        n
    }

    /// Waits until the ring has room for at least one item (or is closed).
    pub async fn wait_for_room(&self) {
        loop {
            if self.queue.len() < self.queue.capacity() || self.is_closed() {
                return;
            }
            let notified = self.not_full.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.queue.len() < self.queue.capacity() || self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Closes the ring: pushes fail, pops drain what is left then end.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.not_empty.notify_waiters();
        self.not_full.notify_waiters();
        self.not_empty.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn bounded_fifo() {
        let r = Ring::new("t", 2);
        assert!(r.try_push(1).is_ok());
        assert!(r.try_push(2).is_ok());
        assert_eq!(r.try_push(3), Err(3));
        assert_eq!(r.try_pop(), Some(1));
        assert_eq!(r.try_pop(), Some(2));
        assert_eq!(r.try_pop(), None);
    }

    #[test]
    fn producers_and_consumers_on_different_threads_lose_nothing() {
        const PER: u64 = 20_000;
        let ring = Ring::new("t", 8);
        let stats = TileStats::new("test", 0, 0);
        let producers: Vec<_> = (0..3u64)
            .map(|p| {
                let ring = ring.clone();
                let stats = stats.clone();
                std::thread::spawn(move || {
                    rt().block_on(async {
                        for i in 0..PER {
                            ring.push(p * PER + i, &stats).await.unwrap();
                        }
                    })
                })
            })
            .collect();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    rt().block_on(async {
                        let mut got = Vec::new();
                        while let Some(x) = ring.pop().await {
                            got.push(x);
                        }
                        got
                    })
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        ring.close();
        let mut all: Vec<u64> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..3 * PER).collect::<Vec<_>>());
        // A depth-8 ring with 3 fast producers must have pushed back.
        assert!(stats.snapshot().backpressure_ns > 0);
    }

    #[test]
    fn closed_ring_refuses_pushes_and_drains() {
        let r = Ring::new("t", 4);
        let stats = TileStats::new("test", 0, 0);
        r.try_push(7).unwrap();
        r.close();
        rt().block_on(async {
            assert!(matches!(r.push(8, &stats).await, Err(Closed(8))));
            assert_eq!(r.pop().await, Some(7));
            assert_eq!(r.pop().await, None);
        });
    }

    #[test]
    fn pop_timeout_times_out() {
        let r: Arc<Ring<u8>> = Ring::new("t", 4);
        rt().block_on(async {
            assert_eq!(r.pop_timeout(Duration::from_millis(10)).await, Err(()));
        });
    }
}
