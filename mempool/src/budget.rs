//! The admission budget of the sharded pool: how many transactions and how
//! many bytes the pool holds, reserved by producers *before* they hand a
//! transaction over and released when it leaves.
//!
//! Both counts live in one atomic word, so one compare-exchange reserves both
//! or neither: two producers racing for the last slot can never both win, and
//! a count reservation is never left half-made by a byte bound that fails.
//!
//! ```text
//!  63          40 39                                0
//! ┌──────────────┬───────────────────────────────────┐
//! │ txs (24 bit) │           bytes (40 bit)          │
//! └──────────────┴───────────────────────────────────┘
//! ```
//!
//! Invariant: the word never exceeds (`txs_max`, `bytes_max`) and never goes
//! below zero in either field (release of more than was reserved panics).

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of the packed word that hold the transaction count.
const TXS_BITS: u32 = 24;
/// Bits of the packed word that hold the byte count.
const BYTES_BITS: u32 = 40;
const BYTES_MASK: u64 = (1 << BYTES_BITS) - 1;
const _: () = assert!(TXS_BITS + BYTES_BITS == 64);

/// Largest `txs_max` a budget can hold: 16.7 M transactions (~4 GiB of
/// transfers), far above any sensible pool.
pub const BUDGET_TXS_LIMIT: u64 = (1 << TXS_BITS) - 1;
/// Largest `bytes_max` a budget can hold: 1 TiB.
pub const BUDGET_BYTES_LIMIT: u64 = BYTES_MASK;

/// Which bound refused a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bound {
    /// The pool holds `txs_max` transactions.
    Txs,
    /// The pool holds too many bytes for this one to fit under `bytes_max`.
    Bytes,
    /// The shard's inbox is full: its drainer is behind.
    Inbox,
}

/// Count and byte reservations, shared by all producers. See the module docs.
pub struct Budget {
    /// `txs << BYTES_BITS | bytes`, both within their maxima.
    word: AtomicU64,
    txs_max: u64,
    bytes_max: u64,
}

fn pack(txs: u64, bytes: u64) -> u64 {
    debug_assert!(txs <= BUDGET_TXS_LIMIT && bytes <= BYTES_MASK);
    (txs << BYTES_BITS) | bytes
}

fn unpack(word: u64) -> (u64, u64) {
    (word >> BYTES_BITS, word & BYTES_MASK)
}

impl Budget {
    pub fn new(txs_max: u64, bytes_max: u64) -> Self {
        assert!(
            txs_max <= BUDGET_TXS_LIMIT,
            "txs_max {txs_max} over {BUDGET_TXS_LIMIT}"
        );
        assert!(
            bytes_max <= BUDGET_BYTES_LIMIT,
            "bytes_max {bytes_max} over {BUDGET_BYTES_LIMIT}"
        );
        Self {
            word: AtomicU64::new(0),
            txs_max,
            bytes_max,
        }
    }

    /// Reserves one transaction of `bytes` bytes, or says which bound is in
    /// the way. Lock-free: retries only when another reservation or release
    /// changed the word in between.
    pub fn try_reserve(&self, bytes: u64) -> Result<(), Bound> {
        let mut cur = self.word.load(Ordering::Relaxed);
        loop {
            let (txs, held) = unpack(cur);
            if txs >= self.txs_max {
                return Err(Bound::Txs);
            }
            if bytes > self.bytes_max - held {
                return Err(Bound::Bytes);
            }
            let new = pack(txs + 1, held + bytes);
            // AcqRel: a reservation happens-after the release whose room it
            // takes, so the memory freed by that release is free before the
            // new holder allocates (a bound on memory, not only a number).
            match self
                .word
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(seen) => cur = seen,
            }
        }
    }

    /// Returns `txs` transactions of `bytes` bytes in all. Panics if more is
    /// released than is held (an accounting bug: the word would wrap).
    pub fn release(&self, txs: u64, bytes: u64) {
        if txs == 0 && bytes == 0 {
            return;
        }
        let prev = self.word.fetch_sub(pack(txs, bytes), Ordering::AcqRel);
        let (held_txs, held_bytes) = unpack(prev);
        assert!(
            held_txs >= txs && held_bytes >= bytes,
            "budget release of ({txs}, {bytes}) exceeds held ({held_txs}, {held_bytes})"
        );
    }

    /// (transactions, bytes) held now.
    pub fn held(&self) -> (u64, u64) {
        unpack(self.word.load(Ordering::Acquire))
    }

    pub fn txs_max(&self) -> u64 {
        self.txs_max
    }
    pub fn bytes_max(&self) -> u64 {
        self.bytes_max
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_release() {
        let b = Budget::new(2, 100);
        b.try_reserve(60).unwrap();
        assert_eq!(b.try_reserve(41), Err(Bound::Bytes));
        b.try_reserve(40).unwrap();
        assert_eq!(b.try_reserve(0), Err(Bound::Txs));
        assert_eq!(b.held(), (2, 100));
        b.release(1, 60);
        b.try_reserve(60).unwrap();
        b.release(2, 100);
        assert_eq!(b.held(), (0, 0));
    }

    #[test]
    #[should_panic(expected = "exceeds held")]
    fn over_release_panics() {
        let b = Budget::new(2, 100);
        b.try_reserve(10).unwrap();
        b.release(1, 11);
    }

    #[test]
    fn threads_never_over_admit() {
        let b = Budget::new(1000, 1000 * 7);
        let won = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        if b.try_reserve(7).is_ok() {
                            won.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(won.load(Ordering::Relaxed), 1000);
        assert_eq!(b.held(), (1000, 7000));
    }
}

/// Model-checked with loom (`RUSTFLAGS="--cfg loom" cargo test -p
/// velox-mempool --release loom`): every interleaving of a few producers and
/// releasers, with the bounds shrunk to one or two transactions.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn loom_count_bound_never_over_admits() {
        loom::model(|| {
            let b = Arc::new(Budget::new(2, 1000));
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let b = b.clone();
                    thread::spawn(move || b.try_reserve(10).is_ok())
                })
                .collect();
            let won = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|w| *w)
                .count();
            assert_eq!(won, 2);
            assert_eq!(b.held(), (2, 20));
        });
    }

    #[test]
    fn loom_byte_bound_never_over_admits() {
        loom::model(|| {
            // Room for one of the two: bytes, not count, is the bound.
            let b = Arc::new(Budget::new(10, 10));
            let b2 = b.clone();
            let t = thread::spawn(move || b2.try_reserve(6));
            let mine = b.try_reserve(6);
            let theirs = t.join().unwrap();
            assert!(mine.is_ok() != theirs.is_ok(), "exactly one fits");
            let loser = if mine.is_ok() { theirs } else { mine };
            assert_eq!(loser, Err(Bound::Bytes));
            assert_eq!(b.held(), (1, 6));
        });
    }

    #[test]
    fn loom_release_makes_room_and_never_underflows() {
        loom::model(|| {
            let b = Arc::new(Budget::new(1, 10));
            b.try_reserve(10).unwrap();
            let b2 = b.clone();
            let releaser = thread::spawn(move || b2.release(1, 10));
            let b3 = b.clone();
            let taker = thread::spawn(move || b3.try_reserve(4).is_ok());
            releaser.join().unwrap();
            let took = taker.join().unwrap();
            let (txs, bytes) = b.held();
            // Either the taker came after the release (holds 1, 4) or before
            // it (refused, nothing held): never 2 held, never wrapped.
            if took {
                assert_eq!((txs, bytes), (1, 4));
            } else {
                assert_eq!((txs, bytes), (0, 0));
            }
        });
    }
}
