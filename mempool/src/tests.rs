use super::*;
use ed25519_dalek::SigningKey;
use velox_exec::{Tx, TxBody, TxBuilder};

const CHAIN: u64 = 3;

fn tx(sender: u8, nonce: u64) -> VerifiedTx {
    let b = TxBuilder {
        chain_id: CHAIN,
        nonce,
        fee: 1,
        body: TxBody::Transfer {
            to: AccountId([0xEE; 32]),
            amount: 1,
        },
    };
    VerifiedTx::from_trusted(Tx::decode(&b.sign(&SigningKey::from_bytes(&[sender; 32]))).unwrap())
}

fn pool() -> Pool<u32> {
    Pool::new(PoolConfig {
        txs_max: 100,
        bytes_max: 1 << 20,
        nonce_ahead_max: 8,
        sender_burst_max: 2,
    })
}

#[test]
fn nonce_order_and_gaps() {
    let mut p = pool();
    for n in [2u64, 0, 3] {
        p.insert(tx(1, n), n as u32, |_| 0).unwrap();
    }
    p.check_invariants();
    // Only nonce 0 is ready: 1 is missing.
    let b = p.pop_batch(10, usize::MAX);
    assert_eq!(b.iter().map(|t| t.nonce()).collect::<Vec<_>>(), vec![0]);
    p.insert(tx(1, 1), 1, |_| unreachable!("sender is tracked"))
        .unwrap();
    let b = p.pop_batch(10, usize::MAX);
    assert_eq!(
        b.iter().map(|t| t.nonce()).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    p.check_invariants();
    assert!(p.is_empty());
    assert_eq!(p.in_flight(), 4);
}

#[test]
fn stale_duplicate_taken_far_and_full() {
    let mut p = pool();
    p.insert(tx(1, 5), 0, |_| 5).unwrap();
    assert_eq!(
        p.insert(tx(1, 5), 1, |_| 5).unwrap_err().0,
        RejectReason::Duplicate
    );
    // Same sender and nonce, different content (fee differs via other sender key? use amount).
    let other = {
        let b = TxBuilder {
            chain_id: CHAIN,
            nonce: 5,
            fee: 9,
            body: TxBody::Transfer {
                to: AccountId([1; 32]),
                amount: 1,
            },
        };
        VerifiedTx::from_trusted(Tx::decode(&b.sign(&SigningKey::from_bytes(&[1; 32]))).unwrap())
    };
    assert_eq!(
        p.insert(other, 2, |_| 5).unwrap_err().0,
        RejectReason::NonceTaken
    );
    assert_eq!(
        p.insert(tx(1, 4), 3, |_| 5).unwrap_err().0,
        RejectReason::NonceTooLow
    );
    assert_eq!(
        p.insert(tx(1, 13), 4, |_| 5).unwrap_err().0,
        RejectReason::NonceTooFarAhead
    );
    // A rejected first contact leaves no sender behind.
    assert_eq!(
        p.insert(tx(2, 0), 5, |_| 3).unwrap_err().0,
        RejectReason::NonceTooLow
    );
    p.check_invariants();
    assert_eq!(p.senders.len(), 1);
    // Fill to the count bound.
    let mut p = Pool::new(PoolConfig {
        txs_max: 3,
        ..PoolConfig::default()
    });
    for s in 1..=3u8 {
        p.insert(tx(s, 0), 0u32, |_| 0).unwrap();
    }
    assert_eq!(
        p.insert(tx(4, 0), 0, |_| 0).unwrap_err().0,
        RejectReason::PoolFull
    );
    // And to the byte bound.
    let one = tx(1, 0).mem_bytes();
    let mut p = Pool::new(PoolConfig {
        bytes_max: one * 2,
        ..PoolConfig::default()
    });
    p.insert(tx(1, 0), 0u32, |_| 0).unwrap();
    p.insert(tx(2, 0), 0u32, |_| 0).unwrap();
    assert_eq!(
        p.insert(tx(3, 0), 0, |_| 0).unwrap_err().0,
        RejectReason::PoolFull
    );
    assert!(p.bytes() <= one * 2);
}

#[test]
fn in_flight_nonce_is_taken_and_commit_settles() {
    let mut p = pool();
    p.insert(tx(1, 0), 10, |_| 0).unwrap();
    p.insert(tx(1, 1), 11, |_| 0).unwrap();
    let b = p.pop_batch(1, usize::MAX);
    assert_eq!(b.len(), 1);
    assert_eq!(
        p.insert(tx(1, 0), 12, |_| 0).unwrap_err().0,
        RejectReason::Duplicate
    );
    let (settled, evicted) = p.handle_committed([(b[0].digest(), Ok(()))], |_| unreachable!());
    assert_eq!(settled.len(), 1);
    assert_eq!(settled[0].meta, 10);
    assert!(evicted.is_empty());
    // Now nonce 0 is committed: too low.
    assert_eq!(
        p.insert(tx(1, 0), 13, |_| 0).unwrap_err().0,
        RejectReason::NonceTooLow
    );
    p.check_invariants();
}

#[test]
fn failed_execution_resyncs_sender() {
    let mut p = pool();
    for n in 0..4 {
        p.insert(tx(1, n), n as u32, |_| 0).unwrap();
    }
    let b = p.pop_batch(2, usize::MAX); // nonces 0,1 in flight
    assert_eq!(b.len(), 2);
    // Nonce 0 fails at execution, so 1 fails too; the committed nonce stays 0.
    let (settled, evicted) = p.handle_committed(
        [
            (b[0].digest(), Err(RejectReason::InsufficientBalance)),
            (b[1].digest(), Err(RejectReason::BadNonce)),
        ],
        |_| 0,
    );
    assert_eq!(settled.len(), 2);
    assert!(evicted.is_empty());
    p.check_invariants();
    // Nonces 2 and 3 wait for 0 and 1 to be resubmitted.
    assert!(p.pop_batch(10, usize::MAX).is_empty());
    // The failed transaction's digest was released: resubmitting works, and
    // only it is ready (nonce 1 is still missing).
    p.insert(tx(1, 0), 20, |_| unreachable!("sender is tracked"))
        .unwrap();
    let b = p.pop_batch(10, usize::MAX);
    assert_eq!(b.iter().map(|t| t.nonce()).collect::<Vec<_>>(), vec![0]);
    p.check_invariants();
}

#[test]
fn resync_evicts_pending_below_committed_nonce() {
    let mut p = pool();
    p.insert(tx(1, 0), 0, |_| 0).unwrap();
    p.insert(tx(1, 2), 2, |_| 0).unwrap();
    let b = p.pop_batch(10, usize::MAX);
    // Another validator's block committed nonces 0..=2 of this sender meanwhile.
    let (_, evicted) = p.handle_committed([(b[0].digest(), Err(RejectReason::BadNonce))], |_| 3);
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].meta, 2);
    assert!(p.is_empty());
    p.check_invariants();
    assert!(p.senders.is_empty());
}

#[test]
fn round_robin_is_fair_and_respects_bytes() {
    let mut p = pool();
    for s in 1..=3u8 {
        for n in 0..4 {
            p.insert(tx(s, n), 0, |_| 0).unwrap();
        }
    }
    let b = p.pop_batch(6, usize::MAX);
    // Burst of 2 per sender per turn: every sender gets 2.
    for s in 1..=3u8 {
        let id = AccountId(SigningKey::from_bytes(&[s; 32]).verifying_key().to_bytes());
        assert_eq!(b.iter().filter(|t| t.sender() == id).count(), 2);
    }
    let size = b[0].bytes().len();
    let b = p.pop_batch(100, size * 3);
    assert_eq!(b.len(), 3);
    p.check_invariants();
    assert_eq!(p.len(), 3);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn random_operations_keep_invariants(ops in proptest::collection::vec((0u8..4, 0u8..5, 0u64..6), 1..120)) {
        let mut p: Pool<()> = Pool::new(PoolConfig { txs_max: 10, bytes_max: 1 << 20, nonce_ahead_max: 4, sender_burst_max: 2 });
        let mut flying: Vec<VerifiedTx> = Vec::new();
        for (op, sender, nonce) in ops {
            match op {
                0 | 1 => { let _ = p.insert(tx(sender + 1, nonce), (), |_| 0); }
                2 => flying.extend(p.pop_batch(3, usize::MAX)),
                _ => {
                    let done: Vec<_> = flying.drain(..).map(|t| (t.digest(), Ok(()))).collect();
                    // Commit in pop order: nonces were handed out in order, so
                    // the committed nonce is what the pool says.
                    let _ = p.handle_committed(done, |_| 0);
                }
            }
            p.check_invariants();
        }
    }
}
