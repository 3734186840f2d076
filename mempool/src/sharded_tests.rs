//! Tests of the sharded pool: single-threaded rules, bounds under many
//! threads, nonce order under concurrent producers and drainers, and two
//! property tests (against the single-owner `Pool` as the model, and
//! conservation: every accepted transaction is accounted for exactly once).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::sharded::{header_offsets, slot_size};
use velox_exec::Tx;

const CHAIN: u64 = 3;

fn id(sender: u32) -> AccountId {
    let mut b = [0xA5u8; 32];
    b[..4].copy_from_slice(&sender.to_le_bytes());
    AccountId(b)
}

/// A transfer from `sender` (unsigned: the pool trusts `VerifiedTx`, and
/// signing would dominate the test time). `salt` changes the digest only.
fn tx_salted(sender: u32, nonce: u64, fee: u64, salt: u64) -> VerifiedTx {
    let mut b = Vec::with_capacity(velox_exec::tx::TRANSFER_TX_BYTES);
    b.extend_from_slice(&[1, 1, 0, 0]);
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&CHAIN.to_le_bytes());
    b.extend_from_slice(&nonce.to_le_bytes());
    b.extend_from_slice(&fee.to_le_bytes());
    b.extend_from_slice(&id(sender).0);
    b.extend_from_slice(&[0xEE; 32]);
    b.extend_from_slice(&salt.to_le_bytes());
    b.extend_from_slice(&[0; 64]);
    VerifiedTx::from_trusted(Tx::decode(&b).expect("well-formed"))
}

fn tx(sender: u32, nonce: u64) -> VerifiedTx {
    tx_salted(sender, nonce, 1, 1)
}

fn config() -> ShardedPoolConfig {
    ShardedPoolConfig {
        shards: 4,
        inbox_depth: 64,
        txs_max: 100,
        bytes_max: 1 << 20,
        nonce_ahead_max: 8,
        sender_burst_max: 2,
        age_max_ms: 1_000,
        hash_seed: 7,
    }
}

fn pool(cfg: ShardedPoolConfig) -> ShardedPool<u32> {
    ShardedPool::new(cfg, Box::new(|_| 0))
}

/// Committed state as the pool's nonce source sees it: drainers record a
/// batch's commit here *before* handing the receipts to the pool, as the
/// node's storage does. (A constant source would be wrong once a sender's
/// record is freed between two of its nonces.)
type Chain = Arc<Mutex<HashMap<AccountId, u64>>>;

fn pool_on_chain(cfg: ShardedPoolConfig) -> (ShardedPool<u32>, Chain) {
    let chain: Chain = Arc::default();
    let c = chain.clone();
    let p = ShardedPool::new(
        cfg,
        Box::new(move |id| c.lock().unwrap().get(id).copied().unwrap_or(0)),
    );
    (p, chain)
}

fn commit_on_chain(chain: &Chain, b: &[VerifiedTx]) {
    let mut m = chain.lock().unwrap();
    for t in b {
        let e = m.entry(t.sender()).or_insert(0);
        *e = (*e).max(t.nonce() + 1);
    }
}

fn nonces(b: &[VerifiedTx]) -> Vec<u64> {
    b.iter().map(|t| t.nonce()).collect()
}

/// Inserts and drains the inbox; returns the rejections.
fn admit(p: &ShardedPool<u32>, items: Vec<(VerifiedTx, u32)>, now: u64) -> Vec<Settled<u32>> {
    for (t, m) in items {
        p.insert(t, m, now).expect("room");
    }
    let mut out = Vec::new();
    p.handle_inbox(&mut out);
    out
}

/// (meta, reason) of rejections, by meta (shards report in shard order).
fn reasons(out: &[Settled<u32>]) -> Vec<(u32, RejectReason)> {
    let mut r: Vec<_> = out
        .iter()
        .map(|s| (s.meta, s.outcome.expect_err("a rejection")))
        .collect();
    r.sort_by_key(|x| x.0);
    r
}

fn receipts(b: &[VerifiedTx]) -> Vec<(AccountId, TxDigest, Result<(), RejectReason>)> {
    b.iter().map(|t| (t.sender(), t.digest(), Ok(()))).collect()
}

#[test]
fn layout_matches_the_wire_format_and_stays_compact() {
    let (n, f, s) = header_offsets();
    let t = tx_salted(9, 77, 55, 0);
    let b = t.bytes();
    assert_eq!(
        u64::from_le_bytes(b[n..n + 8].try_into().unwrap()),
        t.nonce()
    );
    assert_eq!(u64::from_le_bytes(b[f..f + 8].try_into().unwrap()), t.fee());
    assert_eq!(&b[s..s + 32], &t.sender().0);
    assert_eq!(slot_size::<()>(), 40);
    assert_eq!(slot_size::<u64>(), 48);
}

#[test]
fn nonce_order_and_gaps() {
    let p = pool(config());
    let out = admit(&p, vec![(tx(1, 2), 2), (tx(1, 0), 0), (tx(1, 3), 3)], 0);
    assert!(out.is_empty());
    p.check_invariants();
    assert_eq!(nonces(&p.pop_batch(10, usize::MAX)), vec![0]);
    admit(&p, vec![(tx(1, 1), 1)], 0);
    // Burst of 2 per turn, but the only ready sender goes round again.
    assert_eq!(nonces(&p.pop_batch(10, usize::MAX)), vec![1, 2, 3]);
    assert!(p.is_empty());
    assert_eq!(p.in_flight(), 4);
    p.check_invariants();
}

#[test]
fn dedup_and_stale_nonces() {
    let (p, chain) = pool_on_chain(config());
    chain.lock().unwrap().extend([(id(1), 5), (id(2), 5)]);
    let out = admit(
        &p,
        vec![
            (tx(1, 5), 0),
            (tx(1, 5), 1),              // same digest
            (tx_salted(1, 5, 1, 9), 2), // same nonce, same fee
            (tx(1, 4), 3),              // below committed
            (tx(1, 13), 4),             // 13 - 5 >= 8
            (tx(2, 0), 5),              // new sender below committed
        ],
        0,
    );
    assert_eq!(
        reasons(&out),
        vec![
            (1, RejectReason::Duplicate),
            (2, RejectReason::NonceTaken),
            (3, RejectReason::NonceTooLow),
            (4, RejectReason::NonceTooFarAhead),
            (5, RejectReason::NonceTooLow),
        ]
    );
    assert_eq!(p.len(), 1);
    assert!(p.contains(&tx(1, 5).digest()));
    p.check_invariants();
    // In flight: the digest is still known, and the nonce is not replaceable.
    let b = p.pop_batch(10, usize::MAX);
    let out = admit(&p, vec![(tx(1, 5), 6), (tx_salted(1, 5, 99, 3), 7)], 0);
    assert_eq!(
        reasons(&out),
        vec![(6, RejectReason::Duplicate), (7, RejectReason::NonceTaken)]
    );
    let mut out = Vec::new();
    commit_on_chain(&chain, &b);
    p.handle_committed(receipts(&b), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].meta, out[0].outcome), (0, Ok(())));
    // Committed: now too low.
    let out = admit(&p, vec![(tx(1, 5), 8)], 0);
    assert_eq!(reasons(&out), vec![(8, RejectReason::NonceTooLow)]);
    p.check_invariants();
    assert_eq!(p.held(), (0, 0));
}

#[test]
fn higher_fee_replaces_pending() {
    let p = pool(config());
    admit(&p, vec![(tx(1, 0), 0), (tx_salted(1, 1, 5, 0), 1)], 0);
    let out = admit(
        &p,
        vec![
            (tx_salted(1, 1, 5, 1), 2), // equal fee: refused
            (tx_salted(1, 1, 4, 1), 3), // lower fee: refused
            (tx_salted(1, 1, 6, 1), 4), // higher: replaces meta 1
        ],
        0,
    );
    assert_eq!(
        reasons(&out),
        vec![
            (1, RejectReason::Replaced),
            (2, RejectReason::NonceTaken),
            (3, RejectReason::NonceTaken),
        ]
    );
    assert_eq!(out[2].digest, tx_salted(1, 1, 5, 0).digest());
    assert_eq!(p.len(), 2);
    p.check_invariants();
    let b = p.pop_batch(10, usize::MAX);
    assert_eq!(nonces(&b), vec![0, 1]);
    assert_eq!(b[1].fee(), 6);
    let mut out = Vec::new();
    p.handle_committed(receipts(&b), &mut out);
    assert_eq!(out.iter().map(|s| s.meta).collect::<Vec<_>>(), vec![0, 4]);
    p.check_invariants();
}

#[test]
fn admission_hook_sees_exactly_the_admitted() {
    let p = pool(config());
    for (t, m) in [
        (tx(1, 0), 0),
        (tx(1, 0), 1),              // duplicate
        (tx_salted(1, 1, 5, 0), 2), // admitted, then replaced
        (tx_salted(1, 1, 6, 1), 3), // replaces meta 2
        (tx(2, 5000), 4),           // too far ahead
        (tx(3, 0), 5),
    ] {
        p.insert(t, m, 0).expect("room");
    }
    let mut out = Vec::new();
    let mut admitted = Vec::new();
    p.handle_inbox_with(&mut out, &mut |d, m| {
        admitted.push((*m, *d));
        // The hook may change what the pool keeps with the transaction.
        *m += 100;
    });
    admitted.sort_by_key(|x| x.0);
    let metas: Vec<u32> = admitted.iter().map(|x| x.0).collect();
    assert_eq!(metas, vec![0, 2, 3, 5]);
    assert_eq!(admitted[0].1, tx(1, 0).digest());
    assert_eq!(
        reasons(&out),
        vec![
            (1, RejectReason::Duplicate),
            (4, RejectReason::NonceTooFarAhead),
            (102, RejectReason::Replaced),
        ]
    );
    let b = p.pop_batch(10, usize::MAX);
    let mut out = Vec::new();
    p.handle_committed(receipts(&b), &mut out);
    let mut settled: Vec<u32> = out.iter().map(|s| s.meta).collect();
    settled.sort_unstable();
    assert_eq!(settled, vec![100, 103, 105]);
    p.check_invariants();
}

#[test]
fn expiry_evicts_old_pending_not_in_flight() {
    let p = pool(config()); // age_max 1000 ms
    admit(&p, vec![(tx(1, 0), 0), (tx(2, 0), 1)], 100);
    admit(&p, vec![(tx(1, 1), 2), (tx(3, 0), 3)], 600);
    // Sender 1's nonce 0 goes in flight.
    let b = p.pop_batch(1, usize::MAX);
    assert_eq!(b.len(), 1);
    let flying = b[0].sender();
    let mut out = Vec::new();
    assert_eq!(p.handle_expiry(1_099, &mut out), 0);
    assert_eq!(p.handle_expiry(1_100, &mut out), 1);
    let expired_meta = if flying == id(1) { 1 } else { 0 };
    assert_eq!(reasons(&out), vec![(expired_meta, RejectReason::Expired)]);
    p.check_invariants();
    out.clear();
    assert_eq!(p.handle_expiry(1_600, &mut out), 2);
    p.check_invariants();
    // The in-flight one is still held and settles normally.
    assert_eq!(p.in_flight(), 1);
    assert!(p.is_empty());
    let mut out = Vec::new();
    p.handle_committed(receipts(&b), &mut out);
    assert_eq!(out[0].outcome, Ok(()));
    assert_eq!(p.held(), (0, 0));
    p.check_invariants();
}

#[test]
fn expiry_of_the_next_nonce_leaves_a_gap() {
    let p = pool(config());
    admit(&p, vec![(tx(1, 0), 0)], 0);
    admit(&p, vec![(tx(1, 1), 1)], 500);
    let mut out = Vec::new();
    assert_eq!(p.handle_expiry(1_000, &mut out), 1);
    assert!(p.pop_batch(10, usize::MAX).is_empty());
    p.check_invariants();
    admit(&p, vec![(tx(1, 0), 2)], 1_000);
    assert_eq!(nonces(&p.pop_batch(10, usize::MAX)), vec![0, 1]);
    p.check_invariants();
}

#[test]
fn count_byte_and_inbox_bounds() {
    let p = pool(ShardedPoolConfig {
        txs_max: 3,
        ..config()
    });
    for s in 1..=3 {
        p.insert(tx(s, 0), s, 0).unwrap();
    }
    let full = p.insert(tx(4, 0), 4, 0).unwrap_err();
    assert_eq!((full.bound, full.meta), (Bound::Txs, 4));
    assert_eq!(full.tx, tx(4, 0));
    // In-flight transactions still hold their room.
    let mut out = Vec::new();
    p.handle_inbox(&mut out);
    let b = p.pop_batch(10, usize::MAX);
    assert_eq!(b.len(), 3);
    assert_eq!(p.insert(tx(4, 0), 4, 0).unwrap_err().bound, Bound::Txs);
    p.handle_committed(receipts(&b[..1]), &mut out);
    p.insert(tx(4, 0), 4, 0).unwrap();

    let one = ShardedPool::<u32>::entry_bytes(tx(1, 0).bytes().len()) as usize;
    let p = pool(ShardedPoolConfig {
        bytes_max: one * 2 + one / 2,
        ..config()
    });
    p.insert(tx(1, 0), 0, 0).unwrap();
    p.insert(tx(2, 0), 0, 0).unwrap();
    assert_eq!(p.insert(tx(3, 0), 0, 0).unwrap_err().bound, Bound::Bytes);

    let p = pool(ShardedPoolConfig {
        shards: 1,
        inbox_depth: 2,
        ..config()
    });
    p.insert(tx(1, 0), 0, 0).unwrap();
    p.insert(tx(2, 0), 0, 0).unwrap();
    assert_eq!(p.insert(tx(3, 0), 0, 0).unwrap_err().bound, Bound::Inbox);
    assert_eq!(p.held().0, 2, "a refused insert holds nothing");
    let c = p.counters();
    assert_eq!((c.queued, c.full_inbox), (2, 1));
}

#[test]
fn full_never_over_admits_under_many_threads() {
    const THREADS: u32 = 8;
    let cfg = ShardedPoolConfig {
        shards: 8,
        inbox_depth: 4096,
        txs_max: 1_000,
        nonce_ahead_max: 1 << 20,
        ..config()
    };
    let p = pool(cfg);
    let accepted = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (p, accepted) = (&p, &accepted);
            s.spawn(move || {
                for n in 0..400u64 {
                    if p.insert(tx(t, n), t, 0).is_ok() {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    let (held, _) = p.held();
                    assert!(held <= 1_000, "over-admitted: {held}");
                }
            });
        }
        // A drainer admits concurrently; it must not free any room.
        s.spawn(|| {
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                p.handle_inbox(&mut out);
            }
            assert!(out.is_empty());
        });
        // Let the producers finish, then stop the drainer.
        while p.counters().queued + p.counters().full_txs + p.counters().full_inbox
            < (THREADS * 400) as u64
        {
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(accepted.load(Ordering::Relaxed), 1_000);
    let mut out = Vec::new();
    p.handle_inbox(&mut out);
    assert_eq!(p.len(), 1_000);
    p.check_invariants();
    let c = p.counters();
    assert_eq!(c.full_txs + c.full_inbox, (THREADS * 400 - 1_000) as u64);
}

#[test]
fn return_uncommitted_restores_nonce_order() {
    let p = pool(ShardedPoolConfig {
        sender_burst_max: 16,
        ..config()
    });
    admit(&p, (0..6).map(|n| (tx(1, n), n as u32)).collect(), 0);
    let b1 = p.pop_batch(2, usize::MAX); // 0, 1
    let b2 = p.pop_batch(2, usize::MAX); // 2, 3
    assert_eq!((nonces(&b1), nonces(&b2)), (vec![0, 1], vec![2, 3]));
    let ret = |b: &[VerifiedTx]| -> Vec<(AccountId, TxDigest)> {
        b.iter().map(|t| (t.sender(), t.digest())).collect()
    };
    // The first batch times out; the second is still in flight.
    let mut out = Vec::new();
    assert_eq!(p.return_uncommitted(ret(&b1), &mut out), 2);
    assert!(out.is_empty());
    p.check_invariants();
    // 0 and 1 come out again, then the pop skips the in-flight 2 and 3.
    let b3 = p.pop_batch(10, usize::MAX);
    assert_eq!(nonces(&b3), vec![0, 1, 4, 5]);
    p.check_invariants();
    // Now the second batch times out too: only it comes back.
    assert_eq!(p.return_uncommitted(ret(&b2), &mut out), 2);
    assert_eq!(p.return_uncommitted(ret(&b2), &mut out), 0, "not in flight");
    assert_eq!(nonces(&p.pop_batch(10, usize::MAX)), vec![2, 3]);
    let mut out = Vec::new();
    p.handle_committed(receipts(&b3).into_iter().chain(receipts(&b2)), &mut out);
    assert_eq!(out.len(), 6);
    assert!(out.iter().all(|s| s.outcome.is_ok()));
    assert_eq!(p.held(), (0, 0));
    p.check_invariants();
}

#[test]
fn failing_behind_a_returned_gap_goes_back_to_pending() {
    let (p, chain) = pool_on_chain(ShardedPoolConfig {
        sender_burst_max: 16,
        ..config()
    });
    admit(&p, (0..6).map(|n| (tx(1, n), n as u32)).collect(), 0);
    let b1 = p.pop_batch(2, usize::MAX); // 0, 1: will never commit
    let b2 = p.pop_batch(2, usize::MAX); // 2, 3: commits first
    let mut out = Vec::new();
    let back: Vec<_> = b1.iter().map(|t| (t.sender(), t.digest())).collect();
    assert_eq!(p.return_uncommitted(back, &mut out), 2);
    let b3 = p.pop_batch(10, usize::MAX);
    assert_eq!(nonces(&b3), vec![0, 1, 4, 5]);
    // b2 commits before b3: 2 and 3 fail (nonce 0 has not executed). The
    // pool holds nonce 0, so they were only early: back to pending, no
    // client answered.
    let bad = |b: &[VerifiedTx]| -> Vec<(AccountId, TxDigest, Result<(), RejectReason>)> {
        b.iter()
            .map(|t| (t.sender(), t.digest(), Err(RejectReason::BadNonce)))
            .collect()
    };
    p.handle_committed(bad(&b2), &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(p.counters().returned, 4);
    p.check_invariants();
    // Then b3: 0 and 1 commit, 4 and 5 fail the same way and wait too.
    commit_on_chain(&chain, &b3[..2]);
    let mut r = receipts(&b3[..2]);
    r.extend(bad(&b3[2..]));
    p.handle_committed(r, &mut out);
    assert_eq!(out.iter().map(|s| s.meta).collect::<Vec<_>>(), vec![0, 1]);
    p.check_invariants();
    // 2..5 leave again, in order, and commit.
    let b4 = p.pop_batch(10, usize::MAX);
    assert_eq!(nonces(&b4), vec![2, 3, 4, 5]);
    commit_on_chain(&chain, &b4);
    let mut out = Vec::new();
    p.handle_committed(receipts(&b4), &mut out);
    assert!(out.iter().all(|s| s.outcome.is_ok()));
    assert_eq!(out.len(), 4);
    assert_eq!(p.held(), (0, 0));
    // A failure with no held gap below it is final: its client hears it.
    admit(&p, vec![(tx(1, 7), 7)], 0); // nonce 6 never came
    admit(&p, vec![(tx(1, 6), 6)], 0);
    let b5 = p.pop_batch(10, usize::MAX);
    assert_eq!(nonces(&b5), vec![6, 7]);
    let mut out = Vec::new();
    p.handle_committed(bad(&b5[1..]), &mut out);
    assert_eq!(out.len(), 0, "6 is held: 7 waits");
    p.handle_committed(
        vec![(
            b5[0].sender(),
            b5[0].digest(),
            Err(RejectReason::InsufficientBalance),
        )],
        &mut out,
    );
    assert_eq!(out.len(), 1);
    p.check_invariants();
}

/// Nonce 0 is in flight in a batch that has not committed; nonce 1 left in
/// a later batch that committed first and failed `BadNonce`. Nonce 1 then
/// waits for nonce 0 instead of leaving in every next batch (each would
/// only fail again): it leaves once nonce 0 settles, and is answered once.
#[test]
fn a_nonce_behind_an_in_flight_gap_waits_instead_of_looping() {
    let (p, chain) = pool_on_chain(config());
    admit(&p, vec![(tx(1, 0), 0)], 0);
    let a = p.pop_batch(10, usize::MAX);
    assert_eq!(nonces(&a), vec![0]);
    admit(&p, vec![(tx(1, 1), 1)], 0);
    let b = p.pop_batch(10, usize::MAX);
    assert_eq!(nonces(&b), vec![1]);
    let mut out = Vec::new();
    let bad: Vec<_> = b
        .iter()
        .map(|t| (t.sender(), t.digest(), Err(RejectReason::BadNonce)))
        .collect();
    p.handle_committed(bad, &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(p.counters().gap_waits, 1);
    p.check_invariants();
    for _ in 0..5 {
        assert!(p.pop_batch(10, usize::MAX).is_empty(), "nonce 1 left again");
        p.check_invariants();
    }
    // Nonce 0 commits: nonce 1 leaves, commits, and is answered once.
    commit_on_chain(&chain, &a);
    p.handle_committed(receipts(&a), &mut out);
    let c = p.pop_batch(10, usize::MAX);
    assert_eq!(nonces(&c), vec![1]);
    commit_on_chain(&chain, &c);
    p.handle_committed(receipts(&c), &mut out);
    let mut metas: Vec<u32> = out.iter().map(|s| s.meta).collect();
    metas.sort();
    assert_eq!(metas, vec![0, 1]);
    assert!(out.iter().all(|s| s.outcome.is_ok()));
    assert_eq!(p.held(), (0, 0));
    p.check_invariants();
    // When nonce 0 fails instead, nonce 1 waits pending for the gap (up to
    // the pool's expiry), without leaving again; the client resends nonce
    // 0 (the same bytes) and both commit.
    admit(&p, vec![(tx(2, 0), 10)], 0);
    let a = p.pop_batch(10, usize::MAX);
    admit(&p, vec![(tx(2, 1), 11)], 0);
    let b = p.pop_batch(10, usize::MAX);
    let mut out = Vec::new();
    p.handle_committed(
        vec![(b[0].sender(), b[0].digest(), Err(RejectReason::BadNonce))],
        &mut out,
    );
    assert!(p.pop_batch(10, usize::MAX).is_empty());
    p.handle_committed(
        vec![(
            a[0].sender(),
            a[0].digest(),
            Err(RejectReason::InsufficientBalance),
        )],
        &mut out,
    );
    assert_eq!(reasons(&out), vec![(10, RejectReason::InsufficientBalance)]);
    assert!(
        p.pop_batch(10, usize::MAX).is_empty(),
        "nonce 1 waits for 0"
    );
    p.check_invariants();
    out.clear();
    admit(&p, vec![(tx(2, 0), 12)], 0);
    let c = p.pop_batch(10, usize::MAX);
    assert_eq!(nonces(&c), vec![0, 1]);
    commit_on_chain(&chain, &c);
    p.handle_committed(receipts(&c), &mut out);
    let mut metas: Vec<u32> = out.iter().map(|s| s.meta).collect();
    metas.sort();
    assert_eq!(metas, vec![11, 12]);
    assert_eq!(p.held(), (0, 0));
    p.check_invariants();
}

#[test]
fn failed_execution_resyncs_and_evicts_stale() {
    let committed = Arc::new(Mutex::new(0u64));
    let c2 = committed.clone();
    let p: ShardedPool<u32> = ShardedPool::new(config(), Box::new(move |_| *c2.lock().unwrap()));
    admit(&p, (0..4).map(|n| (tx(1, n), n as u32)).collect(), 0);
    let b = p.pop_batch(2, usize::MAX);
    // Another validator committed nonces 0..=2 of this sender meanwhile: ours fail.
    *committed.lock().unwrap() = 3;
    let mut out = Vec::new();
    p.handle_committed(
        b.iter()
            .map(|t| (t.sender(), t.digest(), Err(RejectReason::BadNonce))),
        &mut out,
    );
    let mut got: Vec<_> = out.iter().map(|s| (s.meta, s.outcome)).collect();
    got.sort_by_key(|x| x.0);
    assert_eq!(
        got,
        vec![
            (0, Err(RejectReason::BadNonce)),
            (1, Err(RejectReason::BadNonce)),
            (2, Err(RejectReason::NonceTooLow)),
        ]
    );
    p.check_invariants();
    assert_eq!(nonces(&p.pop_batch(10, usize::MAX)), vec![3]);
}

#[test]
fn pending_copy_committed_elsewhere_is_settled() {
    let p = pool(config());
    admit(&p, vec![(tx(1, 0), 0), (tx(1, 1), 1)], 0);
    let mut out = Vec::new();
    // Another validator's batch held the same transaction.
    p.handle_committed(receipts(&[tx(1, 0)]), &mut out);
    assert_eq!((out[0].meta, out[0].outcome), (0, Ok(())));
    p.check_invariants();
    assert_eq!(nonces(&p.pop_batch(10, usize::MAX)), vec![1]);
}

#[test]
fn byte_limit_and_fairness_across_senders() {
    let p = pool(config());
    let mut items = Vec::new();
    for s in 1..=3 {
        for n in 0..4 {
            items.push((tx(s, n), 0));
        }
    }
    admit(&p, items, 0);
    let size = tx(1, 0).bytes().len();
    let b = p.pop_batch(100, size * 3);
    assert_eq!(b.len(), 3);
    let b = p.pop_batch(100, usize::MAX);
    assert_eq!(b.len(), 9);
    // Every sender's transactions came out in nonce order over both batches.
    p.check_invariants();
}

/// Producers on several threads insert interleaved nonces of shared
/// senders, in shuffled order, while a drainer admits, pops and commits.
/// Every sender's nonces must leave in order, and every transaction must be
/// committed exactly once.
#[test]
fn concurrent_producers_keep_per_sender_nonce_order() {
    const SENDERS: u32 = 64;
    const NONCES: u64 = 48;
    const PRODUCERS: u64 = 4;
    let cfg = ShardedPoolConfig {
        shards: 8,
        inbox_depth: 16,
        // Room for every transaction: a pool full of gapped transactions
        // whose missing nonces cannot get in only drains by expiry. The
        // small inboxes still push back on the producers.
        txs_max: (SENDERS as u64 * NONCES) as usize,
        nonce_ahead_max: NONCES,
        sender_burst_max: 4,
        ..config()
    };
    let (p, chain) = pool_on_chain(cfg);
    let done = AtomicU64::new(0);
    let popped: Mutex<HashMap<AccountId, Vec<u64>>> = Mutex::default();
    let settled: Mutex<Vec<u32>> = Mutex::default();
    std::thread::scope(|s| {
        for k in 0..PRODUCERS {
            let (p, done) = (&p, &done);
            s.spawn(move || {
                // Producer k owns nonces n ≡ k (mod PRODUCERS) of every
                // sender, walking them backwards per sender to make gaps.
                let mut mine: Vec<(u32, u64)> = (0..SENDERS)
                    .flat_map(|s| {
                        (0..NONCES)
                            .filter(|n| n % PRODUCERS == k)
                            .map(move |n| (s, n))
                    })
                    .collect();
                mine.sort_by_key(|&(s, n)| (n / (PRODUCERS * 3), s, std::cmp::Reverse(n)));
                for (s, n) in mine {
                    let mut item = (tx(s, n), s * 1000 + n as u32);
                    loop {
                        match p.insert(item.0, item.1, 0) {
                            Ok(()) => break,
                            Err(f) => {
                                item = (f.tx, f.meta);
                                std::thread::yield_now();
                            }
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        for _ in 0..2 {
            s.spawn(|| {
                let total = (SENDERS as u64 * NONCES) as usize;
                let mut out = Vec::new();
                loop {
                    p.handle_inbox(&mut out);
                    let b = p.pop_batch(37, usize::MAX);
                    {
                        let mut m = popped.lock().unwrap();
                        for t in &b {
                            m.entry(t.sender()).or_default().push(t.nonce());
                        }
                    }
                    commit_on_chain(&chain, &b);
                    p.handle_committed(receipts(&b), &mut out);
                    let mut st = settled.lock().unwrap();
                    for o in out.drain(..) {
                        assert_eq!(o.outcome, Ok(()), "unexpected {o:?}");
                        st.push(o.meta);
                    }
                    if st.len() == total {
                        break;
                    }
                    drop(st);
                    if b.is_empty() {
                        std::thread::yield_now();
                    }
                }
            });
        }
    });
    let popped = popped.into_inner().unwrap();
    assert_eq!(popped.len(), SENDERS as usize);
    for (sender, mut ns) in popped {
        // Two drainers record batches in either order; within one sender the
        // pool hands out strictly increasing nonces, so sorting the record
        // must give 0..NONCES exactly once each.
        let before = ns.clone();
        ns.sort_unstable();
        assert_eq!(
            ns,
            (0..NONCES).collect::<Vec<_>>(),
            "{sender:?}: {before:?}"
        );
    }
    let settled = settled.into_inner().unwrap();
    assert_eq!(settled.iter().collect::<HashSet<_>>().len(), settled.len());
    assert_eq!(p.held(), (0, 0));
    p.check_invariants();
}

/// One drainer: here the popped order itself must be nonce order.
#[test]
fn single_drainer_sees_exact_nonce_order() {
    const SENDERS: u32 = 16;
    const NONCES: u64 = 32;
    let (p, chain) = pool_on_chain(ShardedPoolConfig {
        shards: 4,
        inbox_depth: 8,
        txs_max: (SENDERS as u64 * NONCES) as usize,
        nonce_ahead_max: NONCES,
        ..config()
    });
    let mut order: HashMap<AccountId, Vec<u64>> = HashMap::new();
    std::thread::scope(|s| {
        for k in 0..2u64 {
            let p = &p;
            s.spawn(move || {
                for n in (0..NONCES).filter(|n| n % 2 == k).rev() {
                    for snd in 0..SENDERS {
                        let mut item = (tx(snd, n), 0);
                        while let Err(f) = p.insert(item.0, item.1, 0) {
                            item = (f.tx, f.meta);
                            std::thread::yield_now();
                        }
                    }
                }
            });
        }
        let mut out = Vec::new();
        let mut seen = 0;
        while seen < (SENDERS as u64 * NONCES) as usize {
            p.handle_inbox(&mut out);
            let b = p.pop_batch(10, usize::MAX);
            for t in &b {
                order.entry(t.sender()).or_default().push(t.nonce());
            }
            seen += b.len();
            commit_on_chain(&chain, &b);
            p.handle_committed(receipts(&b), &mut out);
            assert!(out.iter().all(|o| o.outcome.is_ok()));
            out.clear();
        }
    });
    for ns in order.values() {
        assert_eq!(ns, &(0..NONCES).collect::<Vec<_>>());
    }
}

#[derive(Clone, Debug)]
enum Op {
    Insert {
        sender: u32,
        nonce: u64,
        fee: u64,
    },
    Pop(usize),
    CommitOk,
    CommitFail,
    /// The batch executes and every transaction fails for good (301).
    CommitFailFinal,
    Return,
    Tick(u64),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (0u32..4, 0u64..6, 1u64..4).prop_map(|(sender, nonce, fee)| Op::Insert { sender, nonce, fee }),
        2 => (1usize..5).prop_map(Op::Pop),
        1 => Just(Op::CommitOk),
        1 => Just(Op::CommitFail),
        1 => Just(Op::CommitFailFinal),
        1 => Just(Op::Return),
        1 => (0u64..400).prop_map(Op::Tick),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// The single-owner `Pool` is the model: with one fee (no replacement),
    /// no expiry and commits in pop order, both pools must give the same
    /// admission verdicts and hand out the same transactions.
    #[test]
    fn matches_single_owner_pool(ops in proptest::collection::vec((0u8..4, 0u32..5, 0u64..6), 1..150)) {
        let mut model: Pool<u32> = Pool::new(PoolConfig { txs_max: 1000, bytes_max: 1 << 30, nonce_ahead_max: 4, sender_burst_max: 2 });
        let p = ShardedPool::new(ShardedPoolConfig { shards: 1, txs_max: 1000, bytes_max: 1 << 30, nonce_ahead_max: 4, sender_burst_max: 2, ..config() }, Box::new(|_| 0));
        let mut flying: Vec<VerifiedTx> = Vec::new();
        for (i, (op, sender, nonce)) in ops.into_iter().enumerate() {
            let meta = i as u32;
            match op {
                0 | 1 => {
                    let t = tx(sender, nonce);
                    let want = model.insert(t.clone(), meta, |_| 0).err().map(|e| e.0);
                    p.insert(t, meta, 0).unwrap();
                    let mut out = Vec::new();
                    p.handle_inbox(&mut out);
                    let got = out.first().map(|s| s.outcome.unwrap_err());
                    proptest::prop_assert_eq!(got, want);
                }
                2 => {
                    let a = model.pop_batch(3, usize::MAX);
                    let b = p.pop_batch(3, usize::MAX);
                    proptest::prop_assert_eq!(&a, &b);
                    flying.extend(b);
                }
                _ => {
                    let done: Vec<_> = std::mem::take(&mut flying);
                    let (settled, _) = model.handle_committed(done.iter().map(|t| (t.digest(), Ok(()))), |_| 0);
                    let mut out = Vec::new();
                    p.handle_committed(receipts(&done), &mut out);
                    let a: Vec<u32> = settled.iter().map(|s| s.meta).collect();
                    let b: Vec<u32> = out.iter().map(|s| s.meta).collect();
                    proptest::prop_assert_eq!(a, b);
                }
            }
            proptest::prop_assert_eq!(model.len(), p.len());
            proptest::prop_assert_eq!(model.in_flight(), p.in_flight());
            p.check_invariants();
        }
    }

    /// Everything: replacement, expiry, failures, returns. Invariants hold
    /// after every step, and every transaction `insert` accepted is, at the
    /// end, either still held or reported exactly once.
    #[test]
    fn every_accepted_transaction_is_accounted_for(ops in proptest::collection::vec(op(), 1..200)) {
        let p = pool(ShardedPoolConfig { txs_max: 12, nonce_ahead_max: 4, age_max_ms: 500, ..config() });
        let mut now = 0u64;
        let mut accepted: HashSet<u32> = HashSet::new();
        let mut reported: HashSet<u32> = HashSet::new();
        let mut flying: Vec<VerifiedTx> = Vec::new();
        let mut out = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                Op::Insert { sender, nonce, fee } => {
                    if p.insert(tx_salted(sender, nonce, fee, i as u64 % 3), i as u32, now).is_ok() {
                        accepted.insert(i as u32);
                    }
                    p.handle_inbox(&mut out);
                }
                Op::Pop(k) => flying.extend(p.pop_batch(k, usize::MAX)),
                Op::CommitOk => {
                    let d: Vec<_> = std::mem::take(&mut flying);
                    p.handle_committed(receipts(&d), &mut out);
                }
                Op::CommitFail => {
                    let d: Vec<_> = std::mem::take(&mut flying);
                    p.handle_committed(d.iter().map(|t| (t.sender(), t.digest(), Err(RejectReason::BadNonce))), &mut out);
                }
                Op::CommitFailFinal => {
                    let d: Vec<_> = std::mem::take(&mut flying);
                    p.handle_committed(d.iter().map(|t| (t.sender(), t.digest(), Err(RejectReason::InsufficientBalance))), &mut out);
                }
                Op::Return => {
                    let d: Vec<_> = flying.drain(..).map(|t| (t.sender(), t.digest())).collect();
                    p.return_uncommitted(d, &mut out);
                }
                Op::Tick(ms) => {
                    now += ms;
                    p.handle_expiry(now, &mut out);
                }
            }
            for s in out.drain(..) {
                proptest::prop_assert!(accepted.contains(&s.meta), "reported unknown {}", s.meta);
                proptest::prop_assert!(reported.insert(s.meta), "reported twice {}", s.meta);
            }
            p.check_invariants();
            proptest::prop_assert!(p.held().0 <= 12);
        }
        // Drain: commit everything still held.
        for _ in 0..50 {
            flying.extend(p.pop_batch(100, usize::MAX));
            let d: Vec<_> = std::mem::take(&mut flying);
            p.handle_committed(receipts(&d), &mut out);
        }
        now += 10_000;
        p.handle_expiry(now, &mut out);
        for s in out.drain(..) {
            proptest::prop_assert!(reported.insert(s.meta), "reported twice {}", s.meta);
        }
        proptest::prop_assert_eq!(p.held(), (0, 0));
        proptest::prop_assert_eq!(&accepted, &reported);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// The pool and the batcher together, through a duplicate-batch window
    /// as consensus keeps it: clients send random transactions and resend
    /// random earlier ones (the same bytes, after they failed or while they
    /// are pending), batches are sealed with their author and nonce, a
    /// share of them is committed twice (a replay, skipped by the window),
    /// commits fail or succeed at random, and the node restarts (its
    /// batch nonce starts again from a new random value; the window is
    /// kept, as it is reloaded from disk). Every admitted transaction is
    /// answered exactly once, and none stays held once the load stops.
    #[test]
    fn every_admitted_transaction_is_answered_once_through_batches(
        ops in proptest::collection::vec((0u8..10, 0u32..4, 0u64..4, proptest::prelude::any::<u64>()), 1..160)
    ) {
        use crate::batch::{batch_digest, decode_batch, encode_batch, BatchOrigin};
        let (p, chain) = pool_on_chain(ShardedPoolConfig { txs_max: 24, nonce_ahead_max: 4, ..config() });
        let mut window: HashSet<[u8; 32]> = HashSet::new();
        let mut batch_nonce = 0u64;
        let mut sent: Vec<VerifiedTx> = Vec::new();
        let mut accepted: HashSet<u32> = HashSet::new();
        let mut answered: HashSet<u32> = HashSet::new();
        let mut sealed: Vec<(Vec<u8>, Vec<VerifiedTx>)> = Vec::new();
        let mut out = Vec::new();
        let mut meta = 0u32;
        let mut commit = |bytes: &[u8], txs: &[VerifiedTx], ok: bool, p: &ShardedPool<u32>, out: &mut Vec<Settled<u32>>| {
            if !window.insert(batch_digest(bytes)) {
                return; // committed before: skipped, as consensus does
            }
            assert_eq!(decode_batch(bytes).unwrap().txs.len(), txs.len());
            if ok {
                commit_on_chain(&chain, txs);
            }
            let outcome = if ok { Ok(()) } else { Err(RejectReason::InsufficientBalance) };
            p.handle_committed(txs.iter().map(|t| (t.sender(), t.digest(), outcome)), out);
        };
        for (op, sender, nonce, r) in ops {
            match op {
                0..=2 => {
                    meta += 1;
                    let t = tx(sender, nonce);
                    if p.insert(t.clone(), meta, 0).is_ok() {
                        accepted.insert(meta);
                    }
                    sent.push(t);
                }
                3 if !sent.is_empty() => {
                    // A resend of earlier bytes.
                    meta += 1;
                    let t = sent[(r as usize) % sent.len()].clone();
                    if p.insert(t, meta, 0).is_ok() {
                        accepted.insert(meta);
                    }
                }
                4 | 5 => {
                    let txs = p.pop_batch(1 + (r % 4) as usize, usize::MAX);
                    if !txs.is_empty() {
                        let bytes = encode_batch(BatchOrigin { author: 0, nonce: batch_nonce }, txs.iter().map(|t| t.bytes()));
                        batch_nonce = batch_nonce.wrapping_add(1);
                        sealed.push((bytes, txs));
                    }
                }
                6 | 7 if !sealed.is_empty() => {
                    let (bytes, txs) = sealed.remove(0);
                    commit(&bytes, &txs, r % 3 != 0, &p, &mut out);
                    if r % 5 == 0 {
                        commit(&bytes, &txs, true, &p, &mut out); // a replay
                    }
                }
                // A restart: the node draws a new random 64-bit start; here
                // one far from every earlier nonce, which is what 64 random
                // bits give but a shrinking test input would not.
                8 => batch_nonce = batch_nonce.wrapping_add(1 << 40).wrapping_add(r % 1000),
                _ => {}
            }
            p.handle_inbox(&mut out);
            for s in out.drain(..) {
                proptest::prop_assert!(accepted.contains(&s.meta), "answered unknown {}", s.meta);
                proptest::prop_assert!(answered.insert(s.meta), "answered twice {}", s.meta);
            }
            p.check_invariants();
        }
        // The load stops: commit what was sealed and what is pending.
        for _ in 0..40 {
            for (bytes, txs) in std::mem::take(&mut sealed) {
                commit(&bytes, &txs, true, &p, &mut out);
            }
            let txs = p.pop_batch(64, usize::MAX);
            if !txs.is_empty() {
                let bytes = encode_batch(BatchOrigin { author: 0, nonce: batch_nonce }, txs.iter().map(|t| t.bytes()));
                batch_nonce = batch_nonce.wrapping_add(1);
                sealed.push((bytes, txs));
            }
        }
        p.handle_expiry(10_000_000, &mut out); // gaps that never filled
        for s in out.drain(..) {
            proptest::prop_assert!(answered.insert(s.meta), "answered twice {}", s.meta);
        }
        proptest::prop_assert_eq!(p.held(), (0, 0));
        proptest::prop_assert_eq!(&accepted, &answered);
    }
}

/// `try_holds` finds an admitted transaction (pending or in flight) with
/// exactly these bytes: not one still in the inbox or of another sender,
/// not a copy with the same digest and another signature; and answers
/// `None` rather than wait while the shard is locked.
#[test]
fn try_holds_sees_admitted_transactions_without_waiting() {
    let p = pool(config());
    let a = tx(1, 0);
    let b = tx(1, 5);
    assert_eq!(p.try_holds(a.tx()), Some(false));
    p.insert(a.clone(), 1, 0).unwrap();
    assert_eq!(p.try_holds(a.tx()), Some(false), "still in the inbox");
    let out = admit(&p, vec![(b.clone(), 2)], 0);
    assert!(out.is_empty(), "{:?}", reasons(&out));
    assert_eq!(p.try_holds(a.tx()), Some(true));
    assert_eq!(p.try_holds(b.tx()), Some(true), "gapped");
    assert_eq!(p.try_holds(tx(2, 0).tx()), Some(false), "other sender");
    let mut resigned = a.bytes().to_vec();
    *resigned.last_mut().unwrap() ^= 1;
    let resigned = Tx::decode(&resigned).unwrap();
    assert_eq!(
        resigned.digest(),
        a.digest(),
        "the digest leaves the signature out"
    );
    assert_eq!(p.try_holds(&resigned), Some(false), "another signature");
    let batch = p.pop_batch(10, 1 << 20);
    assert_eq!(batch.len(), 1);
    assert_eq!(p.try_holds(a.tx()), Some(true), "in flight");
    let busy = p.with_shard_locked(&id(1), || p.try_holds(a.tx()));
    assert_eq!(busy, None, "busy: no wait");
}
