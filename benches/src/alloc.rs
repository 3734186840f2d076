//! A counting global allocator for memory measurements.
//!
//! A binary that wants exact heap figures installs it:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: velox_benches::alloc::CountingAlloc = velox_benches::alloc::CountingAlloc;
//! ```
//!
//! and suites read [`live_bytes`]: requested bytes currently allocated (no
//! allocator rounding, no fragmentation). Where it is not installed (the
//! `velox` binary runs on mimalloc) `live_bytes` is `None` and suites fall
//! back to the process's resident set size, which includes the allocator's
//! own overheads.
//!
//! This is the one `unsafe` in `benches`: `GlobalAlloc` is an unsafe trait.
//! It only forwards to `System` and counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Forwards to the system allocator and keeps a count of live bytes.
pub struct CountingAlloc;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees are ours; the counter is a side effect
// that never affects the returned memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; `ptr` came from this allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

/// Live heap bytes, if [`CountingAlloc`] is the global allocator.
pub fn live_bytes() -> Option<usize> {
    let n = LIVE.load(Ordering::Relaxed);
    // Any Rust binary has allocated by the time a suite runs.
    (n > 0).then_some(n as usize)
}

/// Resident set size of this process in bytes (Linux), the fallback.
pub fn rss_bytes() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
