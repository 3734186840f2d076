//! The sequential executor: the reference semantics and the oracle every
//! other executor must match exactly. It applies each transaction's effects
//! ([`crate::effects::tx_effects`], where the rules are) to the state map in
//! block order, and nothing more.

use std::convert::Infallible;

use crate::effects::tx_effects;
use crate::reason::RejectReason;
use crate::state::{State, StateDiff, StateKey, StateRoot};
use crate::tx::TxDigest;
use crate::verify::VerifiedTx;

/// Block-level context.
#[derive(Clone, Copy, Debug)]
pub struct ExecContext {
    /// True only for the genesis block: enables genesis allocations.
    pub genesis: bool,
}

/// The outcome of one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub digest: TxDigest,
    pub outcome: Result<(), RejectReason>,
}

/// What executing a block produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockOutput {
    /// One receipt per input transaction, in input order.
    pub receipts: Vec<Receipt>,
    /// Final values of every key the block changed, sorted by key.
    pub diff: StateDiff,
    /// State root after the block.
    pub root: StateRoot,
}

impl BlockOutput {
    pub fn accepted(&self) -> usize {
        self.receipts.iter().filter(|r| r.outcome.is_ok()).count()
    }
}

/// Executes `txs` in order against `state`, mutating it.
pub fn execute_sequential(state: &mut State, txs: &[VerifiedTx], ctx: ExecContext) -> BlockOutput {
    let (receipts, written) = apply_sequential(state, txs, ctx);
    let entries = written.into_iter().map(|k| (k, state.get(&k))).collect();
    BlockOutput {
        receipts,
        diff: StateDiff { entries },
        root: state.root(),
    }
}

/// The state transition alone: applies `txs` in order to `state` and
/// returns the receipts and the keys written (sorted, deduplicated). The
/// commitment is not brought up to date ([`State::root`] does that when next
/// asked); [`execute_sequential`] is this, the diff and the root. The
/// benchmarks time it to show what execution costs without the tree.
pub fn apply_sequential(
    state: &mut State,
    txs: &[VerifiedTx],
    ctx: ExecContext,
) -> (Vec<Receipt>, Vec<StateKey>) {
    let mut receipts = Vec::with_capacity(txs.len());
    // Every key written, with repeats; sorted and deduplicated at the end
    // (cheaper than a sorted map per write).
    let mut written = Vec::with_capacity(txs.len() * 2);
    for tx in txs {
        let effects = tx_effects(tx, ctx, &mut |k| Ok::<_, Infallible>(state.get(k)));
        let outcome = match effects {
            Ok(outcome) => outcome,
            Err(never) => match never {},
        };
        let outcome = outcome.map(|writes| {
            for &(k, v) in writes.as_slice() {
                state.set(k, Some(v));
                written.push(k);
            }
        });
        receipts.push(Receipt {
            digest: tx.digest(),
            outcome,
        });
    }
    written.sort_unstable();
    written.dedup();
    (receipts, written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Account, StateKey, StateValue};
    use crate::tx::{AccountId, Tx, TxBody, TxBuilder};
    use ed25519_dalek::SigningKey;

    const CHAIN: u64 = 1;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i; 32])
    }
    fn id(i: u8) -> AccountId {
        AccountId(key(i).verifying_key().to_bytes())
    }
    fn genesis(to: AccountId, amount: u64) -> VerifiedTx {
        VerifiedTx::genesis_alloc(CHAIN, to, amount)
    }
    fn transfer(from: u8, nonce: u64, to: AccountId, amount: u64, fee: u64) -> VerifiedTx {
        let b = TxBuilder {
            chain_id: CHAIN,
            nonce,
            fee,
            body: TxBody::Transfer { to, amount },
        };
        crate::verify::verify_one(Tx::decode(&b.sign(&key(from))).unwrap(), CHAIN).unwrap()
    }

    #[test]
    fn transfers_follow_the_rules() {
        let mut s = State::new();
        let g = execute_sequential(
            &mut s,
            &[genesis(id(1), 100), genesis(id(2), 5)],
            ExecContext { genesis: true },
        );
        assert_eq!(g.accepted(), 2);
        let txs = vec![
            transfer(1, 0, id(3), 10, 1),       // ok: 1 -> 89, 3 -> 10
            transfer(1, 0, id(3), 10, 1),       // replay: BadNonce
            transfer(2, 0, id(3), 5, 1),        // 6 > 5: InsufficientBalance
            transfer(1, 1, id(1), 50, 2),       // self transfer: pays fee only
            transfer(1, 5, id(3), 1, 0),        // gap: BadNonce
            transfer(3, 0, id(2), 10, 0),       // 3 spends what it received
            transfer(1, 2, id(3), u64::MAX, 1), // overflow of amount+fee
        ];
        let out = execute_sequential(&mut s, &txs, ExecContext { genesis: false });
        let outcomes: Vec<_> = out.receipts.iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            vec![
                Ok(()),
                Err(RejectReason::BadNonce),
                Err(RejectReason::InsufficientBalance),
                Ok(()),
                Err(RejectReason::BadNonce),
                Ok(()),
                Err(RejectReason::InsufficientBalance),
            ]
        );
        assert_eq!(
            s.account(&id(1)),
            Account {
                balance: 87,
                nonce: 2
            }
        );
        assert_eq!(
            s.account(&id(2)),
            Account {
                balance: 15,
                nonce: 0
            }
        );
        assert_eq!(
            s.account(&id(3)),
            Account {
                balance: 0,
                nonce: 1
            }
        );
        assert_eq!(out.root, s.recompute_root());
        // The diff replayed on the pre-state gives the post-state.
        let mut replay = State::new();
        replay.apply(&g.diff);
        replay.apply(&out.diff);
        assert_eq!(replay.root(), s.root());
    }

    fn kv_add(from: u8, nonce: u64, counter: [u8; 32], delta: u64, fee: u64) -> VerifiedTx {
        let b = TxBuilder {
            chain_id: CHAIN,
            nonce,
            fee,
            body: TxBody::KvAdd {
                key: counter,
                delta,
            },
        };
        crate::verify::verify_one(Tx::decode(&b.sign(&key(from))).unwrap(), CHAIN).unwrap()
    }

    #[test]
    fn kv_add_follows_the_rules() {
        let mut s = State::new();
        execute_sequential(
            &mut s,
            &[genesis(id(1), 10), genesis(id(2), 10)],
            ExecContext { genesis: true },
        );
        let hot = [9u8; 32];
        let txs = vec![
            kv_add(1, 0, hot, 5, 1),        // ok: counter 5, 1 -> 9
            kv_add(2, 0, hot, u64::MAX, 1), // 5 + MAX overflows: CounterOverflow
            kv_add(2, 0, hot, 7, 11),       // fee 11 > 10: InsufficientBalance
            kv_add(2, 1, hot, 7, 1),        // BadNonce
            kv_add(2, 0, hot, 0, 10),       // ok: pays all, counter unchanged
            kv_add(1, 1, [3; 32], 0, 0),    // ok: zero counter stays absent
        ];
        let out = execute_sequential(&mut s, &txs, ExecContext { genesis: false });
        let outcomes: Vec<_> = out.receipts.iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            vec![
                Ok(()),
                Err(RejectReason::CounterOverflow),
                Err(RejectReason::InsufficientBalance),
                Err(RejectReason::BadNonce),
                Ok(()),
                Ok(()),
            ]
        );
        assert_eq!(s.kv(&hot), 5);
        assert_eq!(
            s.account(&id(1)),
            Account {
                balance: 9,
                nonce: 2
            }
        );
        assert_eq!(
            s.account(&id(2)),
            Account {
                balance: 0,
                nonce: 1
            }
        );
        let mut expected = vec![
            (
                StateKey::Account(id(1)),
                Some(StateValue::Account(Account {
                    balance: 9,
                    nonce: 2,
                })),
            ),
            (
                StateKey::Account(id(2)),
                Some(StateValue::Account(Account {
                    balance: 0,
                    nonce: 1,
                })),
            ),
            (StateKey::Kv([3; 32]), None),
            (StateKey::Kv(hot), Some(StateValue::Kv(5))),
        ];
        expected.sort_by_key(|e| e.0);
        assert_eq!(out.diff.entries, expected);
        assert_eq!(out.root, s.recompute_root());
    }

    #[test]
    fn opaque_pays_its_fee_and_advances_the_nonce_only() {
        let mut s = State::new();
        execute_sequential(&mut s, &[genesis(id(1), 10)], ExecContext { genesis: true });
        let opaque = |nonce, fee| {
            let b = TxBuilder {
                chain_id: CHAIN,
                nonce,
                fee,
                body: TxBody::Opaque { len: 384 },
            };
            crate::verify::verify_one(Tx::decode(&b.sign(&key(1))).unwrap(), CHAIN).unwrap()
        };
        let out = execute_sequential(
            &mut s,
            &[opaque(0, 3), opaque(0, 1), opaque(1, 8), opaque(1, 7)],
            ExecContext { genesis: false },
        );
        let outcomes: Vec<_> = out.receipts.iter().map(|r| r.outcome).collect();
        assert_eq!(
            outcomes,
            vec![
                Ok(()),
                Err(RejectReason::BadNonce),
                Err(RejectReason::InsufficientBalance),
                Ok(()),
            ]
        );
        assert_eq!(
            s.account(&id(1)),
            Account {
                balance: 0,
                nonce: 2
            }
        );
        assert_eq!(
            out.diff.entries.len(),
            1,
            "only the sender's account changes"
        );
    }

    #[test]
    fn the_transition_alone_is_the_block_without_its_root() {
        let mut s = State::new();
        execute_sequential(
            &mut s,
            &[genesis(id(1), 100), genesis(id(2), 5)],
            ExecContext { genesis: true },
        );
        let txs = vec![
            transfer(1, 0, id(3), 10, 1),
            transfer(2, 0, id(3), 50, 1),
            transfer(1, 1, id(2), 5, 1),
        ];
        let mut whole = s.clone();
        let out = execute_sequential(&mut whole, &txs, ExecContext { genesis: false });
        let (receipts, written) = apply_sequential(&mut s, &txs, ExecContext { genesis: false });
        assert_eq!(receipts, out.receipts);
        let keys: Vec<StateKey> = out.diff.entries.iter().map(|e| e.0).collect();
        assert_eq!(written, keys);
        // The tree catches up when the root is asked for.
        assert_eq!(s.root(), out.root);
    }

    #[test]
    fn genesis_alloc_outside_genesis_is_rejected() {
        let mut s = State::new();
        let out = execute_sequential(&mut s, &[genesis(id(1), 1)], ExecContext { genesis: false });
        assert_eq!(
            out.receipts[0].outcome,
            Err(RejectReason::GenesisKindNotAllowed)
        );
        assert!(s.is_empty());
    }
}
