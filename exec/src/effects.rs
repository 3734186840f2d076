//! What each transaction kind does: the one definition of the semantics,
//! shared by the sequential oracle ([`crate::seq`]) and the parallel executor
//! ([`crate::parallel`]).
//!
//! [`tx_effects`] reads state only through the `read` closure it is given and
//! returns the writes it would make; it never mutates anything. An executor
//! decides where reads come from (the state map, or multi-version memory) and
//! where writes go. The closure may stop the transaction with its own error
//! (the parallel executor does so when a read hits an ESTIMATE marker).
//!
//! ```text
//! kind          reads                writes (if accepted)        checks, first failure is the receipt
//! Transfer      sender, to           sender, to (sender only     1 nonce == sender.nonce        BadNonce
//!                                    when to == sender)          2 amount+fee <= sender.balance InsufficientBalance
//!                                                                3 to.balance+amount fits u64   BalanceOverflow
//! GenesisAlloc  to                   to                          0 genesis block only           GenesisKindNotAllowed
//!                                                                1 to.balance+amount fits u64   BalanceOverflow
//! KvAdd         sender, Kv(key)      sender, Kv(key)             1 nonce == sender.nonce        BadNonce
//!                                                                2 fee <= sender.balance        InsufficientBalance
//!                                                                3 counter+delta fits u64       CounterOverflow
//! ```
//!
//! An accepted transfer or KvAdd debits the fee (burned) and bumps the sender's
//! nonce. A rejected transaction writes nothing (its reads still count for
//! conflict detection). A transfer to oneself only pays the fee.

use crate::reason::RejectReason;
use crate::seq::ExecContext;
use crate::state::{Account, StateKey, StateValue};
use crate::tx::{Tx, TxBody};

/// Most keys one transaction reads or writes. Bounds the fixed-size read and
/// write sets of the parallel executor (no allocation per execution).
pub const TX_KEYS_MAX: usize = 2;

/// The keys a transaction may touch, known from its body alone, at most
/// [`TX_KEYS_MAX`], distinct, in the order `tx_effects` first reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxKeys {
    len: u8,
    keys: [StateKey; TX_KEYS_MAX],
}

impl TxKeys {
    fn one(k: StateKey) -> Self {
        Self {
            len: 1,
            keys: [k, k],
        }
    }
    fn two(a: StateKey, b: StateKey) -> Self {
        if a == b {
            Self::one(a)
        } else {
            Self {
                len: 2,
                keys: [a, b],
            }
        }
    }
    pub fn as_slice(&self) -> &[StateKey] {
        &self.keys[..self.len as usize]
    }
}

/// The keys `tx` may read or write. Every read `tx_effects` makes for `tx` is
/// of one of these keys.
pub fn declared_keys(tx: &Tx) -> TxKeys {
    let sender = StateKey::Account(tx.sender());
    match *tx.body() {
        TxBody::Transfer { to, .. } => TxKeys::two(sender, StateKey::Account(to)),
        TxBody::GenesisAlloc { to, .. } => TxKeys::one(StateKey::Account(to)),
        TxBody::KvAdd { key, .. } => TxKeys::two(sender, StateKey::Kv(key)),
        TxBody::Opaque { .. } => TxKeys::one(sender),
    }
}

/// The writes of one accepted transaction: at most [`TX_KEYS_MAX`], distinct
/// keys, values not yet normalized (an emptied account is written as empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Writes {
    len: u8,
    items: [(StateKey, StateValue); TX_KEYS_MAX],
}

impl Writes {
    fn one(k: StateKey, v: StateValue) -> Self {
        Self {
            len: 1,
            items: [(k, v), (k, v)],
        }
    }
    fn two(a: (StateKey, StateValue), b: (StateKey, StateValue)) -> Self {
        assert_ne!(a.0, b.0, "a transaction writes each key once");
        Self {
            len: 2,
            items: [a, b],
        }
    }
    pub fn as_slice(&self) -> &[(StateKey, StateValue)] {
        &self.items[..self.len as usize]
    }
}

fn as_account(v: Option<StateValue>) -> Account {
    match v {
        Some(StateValue::Account(a)) => a,
        Some(StateValue::Kv(_)) => unreachable!("account key holds a counter"),
        None => Account::default(),
    }
}

fn as_counter(v: Option<StateValue>) -> u64 {
    match v {
        Some(StateValue::Kv(c)) => c,
        Some(StateValue::Account(_)) => unreachable!("counter key holds an account"),
        None => 0,
    }
}

/// Executes `tx` against the state seen through `read`: `Ok(Ok(writes))` if
/// accepted, `Ok(Err(reason))` if rejected, `Err(e)` if `read` stopped it.
pub fn tx_effects<E>(
    tx: &Tx,
    ctx: ExecContext,
    read: &mut impl FnMut(&StateKey) -> Result<Option<StateValue>, E>,
) -> Result<Result<Writes, RejectReason>, E> {
    let sender_key = StateKey::Account(tx.sender());
    Ok(match *tx.body() {
        TxBody::GenesisAlloc { to, amount } => {
            if !ctx.genesis {
                return Ok(Err(RejectReason::GenesisKindNotAllowed));
            }
            let key = StateKey::Account(to);
            let mut acct = as_account(read(&key)?);
            match acct.balance.checked_add(amount) {
                None => Err(RejectReason::BalanceOverflow),
                Some(b) => {
                    acct.balance = b;
                    Ok(Writes::one(key, StateValue::Account(acct)))
                }
            }
        }
        TxBody::Transfer { to, amount } => {
            let mut from = as_account(read(&sender_key)?);
            if tx.nonce() != from.nonce {
                return Ok(Err(RejectReason::BadNonce));
            }
            let debit = match amount.checked_add(tx.fee()) {
                Some(d) if d <= from.balance => d,
                _ => return Ok(Err(RejectReason::InsufficientBalance)),
            };
            from.balance -= debit;
            from.nonce += 1;
            if to == tx.sender() {
                from.balance += amount;
                return Ok(Ok(Writes::one(sender_key, StateValue::Account(from))));
            }
            let to_key = StateKey::Account(to);
            let mut dest = as_account(read(&to_key)?);
            match dest.balance.checked_add(amount) {
                None => Err(RejectReason::BalanceOverflow),
                Some(b) => {
                    dest.balance = b;
                    Ok(Writes::two(
                        (sender_key, StateValue::Account(from)),
                        (to_key, StateValue::Account(dest)),
                    ))
                }
            }
        }
        TxBody::KvAdd { key, delta } => {
            let mut from = as_account(read(&sender_key)?);
            if tx.nonce() != from.nonce {
                return Ok(Err(RejectReason::BadNonce));
            }
            if tx.fee() > from.balance {
                return Ok(Err(RejectReason::InsufficientBalance));
            }
            let kv_key = StateKey::Kv(key);
            let counter = as_counter(read(&kv_key)?);
            match counter.checked_add(delta) {
                None => Err(RejectReason::CounterOverflow),
                Some(c) => {
                    from.balance -= tx.fee();
                    from.nonce += 1;
                    Ok(Writes::two(
                        (sender_key, StateValue::Account(from)),
                        (kv_key, StateValue::Kv(c)),
                    ))
                }
            }
        }
        TxBody::Opaque { .. } => {
            let mut from = as_account(read(&sender_key)?);
            if tx.nonce() != from.nonce {
                return Ok(Err(RejectReason::BadNonce));
            }
            if tx.fee() > from.balance {
                return Ok(Err(RejectReason::InsufficientBalance));
            }
            from.balance -= tx.fee();
            from.nonce += 1;
            Ok(Writes::one(sender_key, StateValue::Account(from)))
        }
    })
}
