//! Thread-per-core plumbing: pinned reactors, bounded rings, tile counters.
//!
//! ```text
//!  [layout] (velox-tuning) ──▶ one Reactor per tile, pinned to its core
//!                                     (tiles listed on the same core share it)
//!
//!   reactor(net,0) ──Ring──▶ reactor(verify,1) ──Ring──▶ reactor(mempool,0) ...
//!        │                        │
//!        └── TileStats ───────────┴──▶ TileRegistry ──▶ /metrics, monitor
//! ```
//!
//! A *tile* is one stage instance (net, verify, mempool, consensus, exec,
//! storage). Each tile runs on its own OS thread inside its own single-threaded
//! async runtime (a *reactor*): tokio-uring (io_uring) where the kernel allows
//! it, a tokio current-thread runtime otherwise. The choice is made once per
//! process by probing io_uring and is logged. Each reactor thread is pinned to
//! the core the layout names; when the layout puts several tiles on one core
//! they are separate threads pinned to the same core and the kernel time-slices
//! them, which is what lets a six-tile node run on a 2-core machine.
//!
//! Tiles talk only through [`ring::Ring`]s: bounded, lock-free (crossbeam's
//! `ArrayQueue`), with async wake-ups on both ends so an idle tile sleeps
//! instead of spinning and a full ring pushes back on its producer.

pub mod process;
pub mod reactor;
pub mod ring;
pub mod stats;

pub use reactor::{
    io_uring_available, spawn_reactor, spawn_reactor_with, ReactorFlavor, ReactorHandle,
};
pub use ring::Ring;
pub use stats::{TileRegistry, TileStats};
