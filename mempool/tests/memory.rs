//! Heap bytes per pending transaction, counted by a counting global
//! allocator (this test binary only). Guards the compact layout: the target
//! is ≤ 2.5 MB per 10,000 pending transfers (250 bytes each, of which 168
//! are the transaction). The 100k and 1M figures are in the `mempool`
//! bench suite (docs/benchmarks/mempool.md).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use velox_exec::{Tx, VerifiedTx};
use velox_mempool::{ShardedPool, ShardedPoolConfig};

static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards every call to `System` unchanged; counting has no effect
// on the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn tx(sender: u64, nonce: u64) -> VerifiedTx {
    let mut b = Vec::with_capacity(168);
    b.extend_from_slice(&[1, 1, 0, 0]);
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&nonce.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    let mut id = [0x33u8; 32];
    id[..8].copy_from_slice(&sender.to_le_bytes());
    b.extend_from_slice(&id);
    b.extend_from_slice(&[0xEE; 40]);
    b.extend_from_slice(&[0; 64]);
    VerifiedTx::from_trusted(Tx::decode(&b).unwrap())
}

#[test]
fn pending_transfers_cost_at_most_250_bytes_each() {
    const N: u64 = 100_000;
    let before = LIVE.load(Ordering::Relaxed);
    let pool: ShardedPool<u64> = ShardedPool::new(
        ShardedPoolConfig {
            txs_max: N as usize,
            bytes_max: 1 << 36,
            nonce_ahead_max: 64,
            ..ShardedPoolConfig::default()
        },
        Box::new(|_| 0),
    );
    let mut out = Vec::new();
    for i in 0..N {
        let mut item = (tx(i / 16, i % 16), i);
        while let Err(f) = pool.insert(item.0, item.1, 0) {
            item = (f.tx, f.meta);
            pool.handle_inbox(&mut out);
        }
    }
    pool.handle_inbox(&mut out);
    assert!(out.is_empty());
    assert_eq!(pool.len(), N as usize);
    let per_tx = (LIVE.load(Ordering::Relaxed) - before) as f64 / N as f64;
    let charged = pool.held().1 as f64 / N as f64;
    eprintln!("{per_tx:.1} heap bytes per pending transfer ({charged:.0} charged)");
    assert!(per_tx <= 250.0, "{per_tx:.1} bytes per pending transfer");
    assert!(per_tx <= charged, "the budget must not under-count");
}
