//! The sequential executor: the reference semantics and the oracle every
//! other executor must match exactly.
//!
//! Transfer rules, checked in this order (first failure is the receipt):
//! 1. `nonce == sender.nonce`                         else `BadNonce`
//! 2. `amount + fee <= sender.balance` (no overflow)  else `InsufficientBalance`
//! 3. `to.balance + amount` does not overflow          else `BalanceOverflow`
//!
//! A rejected transaction changes nothing. An accepted one debits
//! `amount + fee` from the sender, bumps its nonce and credits `amount` to
//! `to` (the fee is burned). A transfer to oneself only pays the fee.
//! Genesis allocations credit `to` and are only valid in the genesis block.

use std::collections::BTreeMap;

use crate::reason::RejectReason;
use crate::state::{Account, State, StateDiff, StateKey, StateRoot, StateValue};
use crate::tx::{TxBody, TxDigest};
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

/// Applies one transaction to `acct_of` lookups through `read` and returns the
/// writes it makes. Shared by every executor so the semantics exist once.
pub fn transfer_effects(
    tx: &VerifiedTx,
    ctx: ExecContext,
    read: impl Fn(&StateKey) -> Account,
) -> Result<Vec<(StateKey, Account)>, RejectReason> {
    match *tx.body() {
        TxBody::GenesisAlloc { to, amount } => {
            if !ctx.genesis {
                return Err(RejectReason::GenesisKindNotAllowed);
            }
            let key = StateKey::Account(to);
            let mut acct = read(&key);
            acct.balance = acct.balance.checked_add(amount).ok_or(RejectReason::BalanceOverflow)?;
            Ok(vec![(key, acct)])
        }
        TxBody::Transfer { to, amount } => {
            let from_key = StateKey::Account(tx.sender());
            let mut from = read(&from_key);
            if tx.nonce() != from.nonce {
                return Err(RejectReason::BadNonce);
            }
            let debit = amount.checked_add(tx.fee()).ok_or(RejectReason::InsufficientBalance)?;
            if debit > from.balance {
                return Err(RejectReason::InsufficientBalance);
            }
            from.balance -= debit;
            from.nonce += 1;
            if to == tx.sender() {
                from.balance += amount;
                return Ok(vec![(from_key, from)]);
            }
            let to_key = StateKey::Account(to);
            let mut dest = read(&to_key);
            dest.balance = dest.balance.checked_add(amount).ok_or(RejectReason::BalanceOverflow)?;
            Ok(vec![(from_key, from), (to_key, dest)])
        }
    }
}

/// Executes `txs` in order against `state`, mutating it.
pub fn execute_sequential(state: &mut State, txs: &[VerifiedTx], ctx: ExecContext) -> BlockOutput {
    let mut receipts = Vec::with_capacity(txs.len());
    let mut touched: BTreeMap<StateKey, Option<StateValue>> = BTreeMap::new();
    for tx in txs {
        let outcome = transfer_effects(tx, ctx, |k| match state.get(k) {
            Some(StateValue::Account(a)) => a,
            None => Account::default(),
        });
        let outcome = outcome.map(|writes| {
            for (k, a) in writes {
                let v = Some(StateValue::Account(a));
                state.set(k, v);
                touched.insert(k, state.get(&k));
            }
        });
        receipts.push(Receipt { digest: tx.digest(), outcome });
    }
    BlockOutput {
        receipts,
        diff: StateDiff { entries: touched.into_iter().collect() },
        root: state.root(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tx::{AccountId, Tx, TxBuilder};
    use ed25519_dalek::SigningKey;

    const CHAIN: u64 = 1;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i; 32])
    }
    fn id(i: u8) -> AccountId {
        AccountId(key(i).verifying_key().to_bytes())
    }
    fn genesis(to: AccountId, amount: u64) -> VerifiedTx {
        let b = TxBuilder { chain_id: CHAIN, nonce: 0, fee: 0, body: TxBody::GenesisAlloc { to, amount } };
        VerifiedTx::from_trusted(Tx::decode(&b.encode_genesis()).unwrap())
    }
    fn transfer(from: u8, nonce: u64, to: AccountId, amount: u64, fee: u64) -> VerifiedTx {
        let b = TxBuilder { chain_id: CHAIN, nonce, fee, body: TxBody::Transfer { to, amount } };
        crate::verify::verify_one(Tx::decode(&b.sign(&key(from))).unwrap(), CHAIN).unwrap()
    }

    #[test]
    fn transfers_follow_the_rules() {
        let mut s = State::new();
        let g = execute_sequential(&mut s, &[genesis(id(1), 100), genesis(id(2), 5)], ExecContext { genesis: true });
        assert_eq!(g.accepted(), 2);
        let txs = vec![
            transfer(1, 0, id(3), 10, 1), // ok: 1 -> 89, 3 -> 10
            transfer(1, 0, id(3), 10, 1), // replay: BadNonce
            transfer(2, 0, id(3), 5, 1),  // 6 > 5: InsufficientBalance
            transfer(1, 1, id(1), 50, 2), // self transfer: pays fee only
            transfer(1, 5, id(3), 1, 0),  // gap: BadNonce
            transfer(3, 0, id(2), 10, 0), // 3 spends what it received
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
        assert_eq!(s.account(&id(1)), Account { balance: 87, nonce: 2 });
        assert_eq!(s.account(&id(2)), Account { balance: 15, nonce: 0 });
        assert_eq!(s.account(&id(3)), Account { balance: 0, nonce: 1 });
        assert_eq!(out.root, s.recompute_root());
        // The diff replayed on the pre-state gives the post-state.
        let mut replay = State::new();
        replay.apply(&g.diff);
        replay.apply(&out.diff);
        assert_eq!(replay.root(), s.root());
    }

    #[test]
    fn genesis_alloc_outside_genesis_is_rejected() {
        let mut s = State::new();
        let out = execute_sequential(&mut s, &[genesis(id(1), 1)], ExecContext { genesis: false });
        assert_eq!(out.receipts[0].outcome, Err(RejectReason::GenesisKindNotAllowed));
        assert!(s.is_empty());
    }
}
