//! Running one closure on several workers at once: on a persistent pool of
//! pinned threads ([`WorkerPool`], what the parallel executor uses), or on
//! threads spawned for the call ([`Fanout::Spawn`], for one-off work such as
//! a state root outside the executor).
//!
//! Why a persistent pool: a parallel block fans out four times (execution,
//! applying the maps, the two phases of the tree update). Spawning threads
//! for each cost ~70-140 us per spawn on the development VM, and a fresh
//! thread starts with cold caches and a cold allocator arena (its first
//! allocations fault pages in): the tree's leaf-hashing phase took 2.5 ms on
//! a new thread against 1.6 ms for the same share on the caller. Pool
//! threads stay pinned and warm; between the fan-outs of one block they spin
//! for a few microseconds before parking, so the next phase finds them
//! awake.

use std::any::Any;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker (or the waiting caller) spins before it parks:
/// the first [`SPIN_HOT`] in a busy loop, the rest yielding the core between
/// checks (so a tile sharing the core still runs). The fan-outs of one block
/// follow each other within tens of microseconds, and waking a parked thread
/// took ~70 us on the development VM (plus ~20 us for the waker's futex
/// call); blocks arrive milliseconds apart, when a parked worker costs
/// nothing.
const SPIN_BEFORE_PARK: Duration = Duration::from_micros(1000);
const SPIN_HOT: Duration = Duration::from_micros(50);

type Job = dyn Fn(usize) + Sync;

/// The job of one fan-out, its lifetime erased: [`WorkerPool::run`] does not
/// return before every worker has finished with it.
#[derive(Clone, Copy)]
struct JobRef {
    f: *const Job,
    n: usize,
}

// SAFETY: the closure behind `f` is `Sync` and outlives every use of the
// pointer (see `JobRef`).
unsafe impl Send for JobRef {}

struct Slot {
    epoch: u64,
    job: Option<JobRef>,
    shutdown: bool,
    /// Workers parked on `start` (a fan-out only makes the wake-up call
    /// when some are: the call costs ~20 us on a VM).
    parked: usize,
}

struct Shared {
    slot: Mutex<Slot>,
    start: Condvar,
    /// `slot.epoch`, readable without the lock (workers spin on it).
    epoch: AtomicU64,
    /// Pool threads that have not finished the current fan-out.
    pending: AtomicUsize,
    /// True while the caller is parked on `done`.
    done_lock: Mutex<bool>,
    done: Condvar,
    /// The first panic of a pool thread in the current fan-out.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Spins until `ready()` or [`SPIN_BEFORE_PARK`] has passed; true if ready.
fn spin_until(ready: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        let spun = start.elapsed();
        if spun >= SPIN_BEFORE_PARK {
            return ready();
        }
        if spun >= SPIN_HOT {
            std::thread::yield_now();
        }
    }
}

/// A barrier for the workers of one fan-out that spins (then yields, then
/// naps) instead of parking: `std::sync::Barrier` parks on a condition
/// variable, and each wake-up took ~70 us on the development VM, twice per
/// block, against phases of one to a few milliseconds.
pub(crate) struct SpinBarrier {
    n: usize,
    arrived: AtomicUsize,
    generation: AtomicU64,
}

impl SpinBarrier {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            n,
            arrived: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// Returns once all `n` workers have called it (reusable).
    pub(crate) fn wait(&self) {
        let generation = self.generation.load(Ordering::SeqCst);
        if self.arrived.fetch_add(1, Ordering::SeqCst) + 1 == self.n {
            // Reset before releasing, so a worker racing ahead to the next
            // wait counts into a fresh round.
            self.arrived.store(0, Ordering::SeqCst);
            self.generation.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let released = || self.generation.load(Ordering::SeqCst) != generation;
        if !spin_until(released) {
            // A worker is descheduled (cores shared with other tiles): stop
            // burning the core it may need.
            while !released() {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

/// `threads` persistent worker threads; the caller of [`WorkerPool::run`] is
/// worker 0 and pool thread `i` is worker `i`.
pub struct WorkerPool {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl WorkerPool {
    /// Starts `threads` workers; worker `i` (1-based) is pinned to
    /// `cores[i % cores.len()]` unless `cores` is empty.
    pub fn new(threads: usize, cores: &[core_affinity::CoreId]) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot {
                epoch: 0,
                job: None,
                shutdown: false,
                parked: 0,
            }),
            start: Condvar::new(),
            epoch: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            done_lock: Mutex::new(false),
            done: Condvar::new(),
            panic: Mutex::new(None),
        });
        let mut pool = Self {
            shared,
            threads: Vec::with_capacity(threads),
        };
        for i in 1..=threads {
            let shared = Arc::clone(&pool.shared);
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            let handle = std::thread::Builder::new()
                .name(format!("exec-{i}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    worker_loop(&shared, i);
                })?;
            // Pushed at once, so a later spawn error still joins these.
            pool.threads.push(handle);
        }
        Ok(pool)
    }

    /// Workers including the caller.
    pub fn workers(&self) -> usize {
        self.threads.len() + 1
    }

    /// Runs `f(w)` for `w` in `0..n` (the caller runs `f(0)`) and returns
    /// the results in worker order. `n` must not exceed [`Self::workers`].
    /// A panic in any worker is raised here after all have finished.
    pub fn run<R: Send>(&self, n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
        assert!(
            n >= 1 && n <= self.workers(),
            "{n} workers on a pool of {}",
            self.workers()
        );
        let slots: Vec<Mutex<Option<R>>> = (0..n).map(|_| Mutex::new(None)).collect();
        let job = |w: usize| {
            let r = f(w);
            *lock(&slots[w]) = Some(r);
        };
        self.run_erased(n, &job);
        slots
            .into_iter()
            .map(|s| {
                s.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .expect("every worker ran")
            })
            .collect()
    }

    fn run_erased<'a>(&self, n: usize, job: &'a (dyn Fn(usize) + Sync + 'a)) {
        let sh = &*self.shared;
        if n > 1 {
            // SAFETY: only the lifetime is erased; this function waits below
            // until every pool thread has finished the fan-out (`pending`
            // reaches 0), and none touches the pointer after that.
            let f: *const Job = unsafe {
                std::mem::transmute::<&'a (dyn Fn(usize) + Sync + 'a), &'static Job>(job)
            };
            sh.pending.store(self.threads.len(), Ordering::SeqCst);
            let wake = {
                let mut slot = lock(&sh.slot);
                slot.epoch += 1;
                slot.job = Some(JobRef { f, n });
                sh.epoch.store(slot.epoch, Ordering::SeqCst);
                slot.parked > 0
            };
            if wake {
                sh.start.notify_all();
            }
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(0)));
        if n > 1 {
            let finished = || sh.pending.load(Ordering::SeqCst) == 0;
            if !spin_until(finished) {
                let mut parked = lock(&sh.done_lock);
                while !finished() {
                    *parked = true;
                    parked = sh.done.wait(parked).unwrap_or_else(|e| e.into_inner());
                }
                *parked = false;
            }
            lock(&sh.slot).job = None;
        }
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if let Some(p) = lock(&sh.panic).take() {
            std::panic::resume_unwind(p);
        }
    }
}

fn worker_loop(sh: &Shared, me: usize) {
    let mut seen = 0u64;
    loop {
        spin_until(|| sh.epoch.load(Ordering::SeqCst) != seen);
        let job = {
            let mut slot = lock(&sh.slot);
            while slot.epoch == seen && !slot.shutdown {
                slot.parked += 1;
                slot = sh.start.wait(slot).unwrap_or_else(|e| e.into_inner());
                slot.parked -= 1;
            }
            if slot.shutdown {
                return;
            }
            seen = slot.epoch;
            slot.job
        };
        if let Some(job) = job.filter(|j| me < j.n) {
            // SAFETY: see `JobRef`: the caller waits for `pending` to reach
            // 0, which this thread only does after the call.
            let f = unsafe { &*job.f };
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(me))) {
                lock(&sh.panic).get_or_insert(p);
            }
        }
        if sh.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            // Under the lock, so a caller between its check and its wait
            // cannot miss this.
            if *lock(&sh.done_lock) {
                sh.done.notify_all();
            }
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        lock(&self.shared.slot).shutdown = true;
        self.shared.start.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Where a fan-out runs.
#[derive(Clone, Copy, Debug)]
pub enum Fanout<'a> {
    /// Scoped threads spawned for the call (pinned to the given cores, worker
    /// `w` on `cores[w % len]`; none when empty).
    Spawn(&'a [core_affinity::CoreId]),
    /// A persistent pool.
    Pool(&'a WorkerPool),
}

impl Fanout<'_> {
    /// Runs `f(w)` for `w` in `0..n`, the caller as worker 0; results in
    /// worker order. On a pool, `n` is capped at its size by the caller.
    pub fn run<R: Send>(&self, n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
        match *self {
            _ if n <= 1 => vec![f(0)],
            Fanout::Pool(p) => p.run(n, f),
            Fanout::Spawn(cores) => std::thread::scope(|s| {
                let f = &f;
                let handles: Vec<_> = (1..n)
                    .map(|w| {
                        let core = (!cores.is_empty()).then(|| cores[w % cores.len()]);
                        s.spawn(move || {
                            if let Some(c) = core {
                                core_affinity::set_for_current(c);
                            }
                            f(w)
                        })
                    })
                    .collect();
                let mut results = vec![f(0)];
                results.extend(
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("worker thread panicked")),
                );
                results
            }),
        }
    }

    /// The most workers a fan-out can have (unbounded for spawned threads).
    pub fn max_workers(&self) -> usize {
        match self {
            Fanout::Spawn(_) => usize::MAX,
            Fanout::Pool(p) => p.workers(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_worker_runs_once_per_fan_out_and_results_keep_order() {
        let pool = WorkerPool::new(3, &[]).unwrap();
        for round in 0..200u32 {
            let n = 1 + (round as usize % 4);
            let calls = AtomicU32::new(0);
            let out = pool.run(n, |w| {
                calls.fetch_add(1, Ordering::Relaxed);
                (w, round)
            });
            assert_eq!(calls.load(Ordering::Relaxed), n as u32);
            assert_eq!(out, (0..n).map(|w| (w, round)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn borrowed_data_is_shared_and_mutated_per_worker() {
        let pool = WorkerPool::new(2, &[]).unwrap();
        let input: Vec<u64> = (0..3000).collect();
        let parts: Vec<Mutex<u64>> = (0..3).map(|_| Mutex::new(0)).collect();
        pool.run(3, |w| {
            let sum: u64 = input[w * 1000..(w + 1) * 1000].iter().sum();
            *lock(&parts[w]) += sum;
        });
        let total: u64 = parts.iter().map(|p| *lock(p)).sum();
        assert_eq!(total, input.iter().sum::<u64>());
    }

    #[test]
    fn a_worker_panic_reaches_the_caller_and_the_pool_survives() {
        let pool = WorkerPool::new(2, &[]).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(3, |w| {
                if w == 2 {
                    panic!("worker 2 fails");
                }
                w
            })
        }));
        let msg = r.expect_err("the panic is raised in the caller");
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"worker 2 fails"));
        assert_eq!(pool.run(3, |w| w * 10), vec![0, 10, 20]);
    }

    #[test]
    fn parked_workers_wake_for_the_next_fan_out() {
        let pool = WorkerPool::new(1, &[]).unwrap();
        assert_eq!(pool.run(2, |w| w), vec![0, 1]);
        // Long enough for the worker to stop spinning and park.
        std::thread::sleep(SPIN_BEFORE_PARK * 20);
        assert_eq!(pool.run(2, |w| w + 1), vec![1, 2]);
    }

    #[test]
    fn the_spin_barrier_separates_rounds() {
        let pool = WorkerPool::new(3, &[]).unwrap();
        let barrier = SpinBarrier::new(4);
        let counter = AtomicU32::new(0);
        let seen = pool.run(4, |_| {
            let mut seen = Vec::new();
            for round in 0..50u32 {
                counter.fetch_add(1, Ordering::SeqCst);
                barrier.wait();
                // Everyone has added for this round, nobody for the next.
                seen.push(counter.load(Ordering::SeqCst) == 4 * (round + 1));
                barrier.wait();
            }
            seen
        });
        assert!(seen.iter().flatten().all(|ok| *ok));
    }

    #[test]
    fn spawned_fan_out_matches_the_pool() {
        let pool = WorkerPool::new(3, &[]).unwrap();
        let f = |w: usize| w * w;
        assert_eq!(Fanout::Spawn(&[]).run(4, f), Fanout::Pool(&pool).run(4, f));
        assert_eq!(Fanout::Spawn(&[]).run(1, f), vec![0]);
    }
}
