//! Account state and its commitment.
//!
//! State is a map from [`StateKey`] to [`StateValue`]. Keys and values have a
//! stable byte encoding ([`StateKey::to_bytes`], [`StateValue::to_bytes`])
//! that storage persists verbatim, so storage never needs to know what a key
//! means.
//!
//! The state commitment here is an *additive multiset hash*: the root is the
//! sum, modulo 2^256, of `blake3(key || value)` over every live entry. It is
//! deterministic, order-independent and O(changed keys) to update, which is
//! what agreement between validators needs. It gives no inclusion proofs; the
//! sparse Merkle tree of the storage issue replaces it for that.

use std::collections::HashMap;
use std::fmt;

use crate::hash::KeyHashBuilder;
use crate::tx::AccountId;

/// A key in the state map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateKey {
    Account(AccountId),
    /// A shared u64 counter written by [`crate::tx::TxBody::KvAdd`].
    Kv([u8; 32]),
}

/// Encoded key length: a one-byte tag and 32 bytes.
pub const STATE_KEY_BYTES: usize = 33;
const TAG_ACCOUNT: u8 = 1;
const TAG_KV: u8 = 2;

impl StateKey {
    pub fn to_bytes(&self) -> [u8; STATE_KEY_BYTES] {
        let mut out = [0u8; STATE_KEY_BYTES];
        match self {
            StateKey::Account(id) => {
                out[0] = TAG_ACCOUNT;
                out[1..].copy_from_slice(&id.0);
            }
            StateKey::Kv(k) => {
                out[0] = TAG_KV;
                out[1..].copy_from_slice(k);
            }
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, StateDecodeError> {
        if b.len() != STATE_KEY_BYTES {
            return Err(StateDecodeError::KeyLength(b.len()));
        }
        match b[0] {
            TAG_ACCOUNT => {
                let mut id = [0u8; 32];
                id.copy_from_slice(&b[1..]);
                Ok(StateKey::Account(AccountId(id)))
            }
            TAG_KV => {
                let mut k = [0u8; 32];
                k.copy_from_slice(&b[1..]);
                Ok(StateKey::Kv(k))
            }
            t => Err(StateDecodeError::KeyTag(t)),
        }
    }
}

/// An account: spendable balance and the next nonce it must use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Account {
    pub balance: u64,
    pub nonce: u64,
}

impl Account {
    pub fn is_empty(&self) -> bool {
        self.balance == 0 && self.nonce == 0
    }
}

/// A value in the state map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateValue {
    Account(Account),
    /// The value of a [`StateKey::Kv`] counter.
    Kv(u64),
}

/// Encoded account value: balance u64 LE, nonce u64 LE.
pub const ACCOUNT_VALUE_BYTES: usize = 16;
/// Encoded counter value: u64 LE.
pub const KV_VALUE_BYTES: usize = 8;

impl StateValue {
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            StateValue::Account(a) => {
                let mut out = Vec::with_capacity(ACCOUNT_VALUE_BYTES);
                out.extend_from_slice(&a.balance.to_le_bytes());
                out.extend_from_slice(&a.nonce.to_le_bytes());
                out
            }
            StateValue::Kv(v) => v.to_le_bytes().to_vec(),
        }
    }

    /// True for the values that mean "absent": an empty account, a zero
    /// counter. State never stores them.
    pub fn is_empty(&self) -> bool {
        match self {
            StateValue::Account(a) => a.is_empty(),
            StateValue::Kv(v) => *v == 0,
        }
    }

    /// The stored form of `v`: empty values become `None`.
    pub fn normalize(v: Option<StateValue>) -> Option<StateValue> {
        v.filter(|v| !v.is_empty())
    }

    pub fn from_bytes(key: &StateKey, b: &[u8]) -> Result<Self, StateDecodeError> {
        match key {
            StateKey::Account(_) => {
                if b.len() != ACCOUNT_VALUE_BYTES {
                    return Err(StateDecodeError::ValueLength(b.len()));
                }
                let balance = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
                let nonce = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
                Ok(StateValue::Account(Account { balance, nonce }))
            }
            StateKey::Kv(_) => {
                if b.len() != KV_VALUE_BYTES {
                    return Err(StateDecodeError::ValueLength(b.len()));
                }
                Ok(StateValue::Kv(u64::from_le_bytes(
                    b.try_into().expect("8 bytes"),
                )))
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateDecodeError {
    #[error("state key must be {STATE_KEY_BYTES} bytes, got {0}")]
    KeyLength(usize),
    #[error("unknown state key tag {0}")]
    KeyTag(u8),
    #[error("state value has the wrong length {0}")]
    ValueLength(usize),
}

/// The state commitment: 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StateRoot(pub [u8; 32]);

impl StateRoot {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for StateRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "root:{}", &self.to_hex()[..12])
    }
}

/// 256-bit accumulator, four little-endian u64 limbs. Addition modulo 2^256
/// is a group, so the change of the root over a set of writes can be
/// computed apart from the map (in parallel) and added once.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct Acc(pub(crate) [u64; 4]);

impl Acc {
    /// `blake3(key bytes || value bytes)` as four limbs, encoded on the
    /// stack (this runs for every write of every block).
    pub(crate) fn entry_hash(key: &StateKey, value: &StateValue) -> [u64; 4] {
        let mut buf = [0u8; STATE_KEY_BYTES + ACCOUNT_VALUE_BYTES];
        buf[..STATE_KEY_BYTES].copy_from_slice(&key.to_bytes());
        let len = match value {
            StateValue::Account(a) => {
                buf[STATE_KEY_BYTES..STATE_KEY_BYTES + 8].copy_from_slice(&a.balance.to_le_bytes());
                buf[STATE_KEY_BYTES + 8..].copy_from_slice(&a.nonce.to_le_bytes());
                STATE_KEY_BYTES + ACCOUNT_VALUE_BYTES
            }
            StateValue::Kv(v) => {
                buf[STATE_KEY_BYTES..STATE_KEY_BYTES + KV_VALUE_BYTES]
                    .copy_from_slice(&v.to_le_bytes());
                STATE_KEY_BYTES + KV_VALUE_BYTES
            }
        };
        debug_assert_eq!(&buf[STATE_KEY_BYTES..len], &value.to_bytes()[..]);
        let b = blake3::hash(&buf[..len]);
        let b = b.as_bytes();
        let mut limbs = [0u64; 4];
        for (i, l) in limbs.iter_mut().enumerate() {
            *l = u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        }
        limbs
    }

    pub(crate) fn add(&mut self, x: [u64; 4]) {
        let mut carry = false;
        for (a, b) in self.0.iter_mut().zip(x) {
            let (s1, c1) = a.overflowing_add(b);
            let (s2, c2) = s1.overflowing_add(carry as u64);
            *a = s2;
            carry = c1 || c2;
        }
    }

    pub(crate) fn sub(&mut self, x: [u64; 4]) {
        let mut borrow = false;
        for (a, b) in self.0.iter_mut().zip(x) {
            let (s1, b1) = a.overflowing_sub(b);
            let (s2, b2) = s1.overflowing_sub(borrow as u64);
            *a = s2;
            borrow = b1 || b2;
        }
    }

    fn root(&self) -> StateRoot {
        let mut out = [0u8; 32];
        for (i, l) in self.0.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&l.to_le_bytes());
        }
        StateRoot(out)
    }
}

/// The state map is split into this many shards by the first byte of the
/// key's 32-byte body, so the parallel executor can apply a block's writes on
/// all workers (each owns whole shards). 16 shards keep up to 16 workers busy
/// at a cost of 16 small maps per state.
pub const STATE_SHARDS: usize = 16;
const _: () = assert!(STATE_SHARDS.is_power_of_two() && STATE_SHARDS <= 256);

/// The shard of `key`: the top bits of the first byte after the tag.
pub fn shard_of(key: &StateKey) -> usize {
    let b = match key {
        StateKey::Account(id) => id.0[0],
        StateKey::Kv(k) => k[0],
    };
    (b as usize * STATE_SHARDS) >> 8
}

pub(crate) type ShardMap = HashMap<StateKey, StateValue, KeyHashBuilder>;

/// The full state in memory with its running commitment.
///
/// Invariant: `acc` equals the sum of `entry_hash` over `map`, and `map`
/// holds no empty value (an empty account or a zero counter is the same as
/// an absent one).
#[derive(Clone)]
pub struct State {
    /// `STATE_SHARDS` maps; `key` lives in `shards[shard_of(key)]`.
    shards: Vec<ShardMap>,
    acc: Acc,
}

impl Default for State {
    fn default() -> Self {
        let hasher = KeyHashBuilder::default();
        Self {
            shards: (0..STATE_SHARDS)
                .map(|_| HashMap::with_hasher(hasher))
                .collect(),
            acc: Acc::default(),
        }
    }
}

impl State {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|m| m.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|m| m.is_empty())
    }

    /// Makes room for about `additional` new keys (spread over the shards)
    /// so that inserting them does not grow the maps.
    pub fn reserve(&mut self, additional: usize) {
        let per_shard = additional.div_ceil(STATE_SHARDS) * 3 / 2 + 16;
        for m in &mut self.shards {
            m.reserve(per_shard);
        }
    }

    fn shard(&self, key: &StateKey) -> &ShardMap {
        &self.shards[shard_of(key)]
    }

    pub fn account(&self, id: &AccountId) -> Account {
        let key = StateKey::Account(*id);
        match self.shard(&key).get(&key) {
            Some(StateValue::Account(a)) => *a,
            Some(StateValue::Kv(_)) => unreachable!("account key holds a counter"),
            None => Account::default(),
        }
    }

    /// The value of the counter at `key` (0 when absent).
    pub fn kv(&self, key: &[u8; 32]) -> u64 {
        let key = StateKey::Kv(*key);
        match self.shard(&key).get(&key) {
            Some(StateValue::Kv(v)) => *v,
            Some(StateValue::Account(_)) => unreachable!("counter key holds an account"),
            None => 0,
        }
    }

    pub fn get(&self, key: &StateKey) -> Option<StateValue> {
        self.shard(key).get(key).copied()
    }

    /// Sets `key` to `value` (None or an empty account deletes it) and keeps
    /// the commitment current.
    pub fn set(&mut self, key: StateKey, value: Option<StateValue>) {
        use std::collections::hash_map::Entry;
        let value = StateValue::normalize(value);
        match (self.shards[shard_of(&key)].entry(key), value) {
            (Entry::Occupied(mut o), Some(v)) => {
                if *o.get() != v {
                    self.acc.sub(Acc::entry_hash(&key, o.get()));
                    self.acc.add(Acc::entry_hash(&key, &v));
                    o.insert(v);
                }
            }
            (Entry::Occupied(o), None) => {
                self.acc.sub(Acc::entry_hash(&key, o.get()));
                o.remove();
            }
            (Entry::Vacant(e), Some(v)) => {
                self.acc.add(Acc::entry_hash(&key, &v));
                e.insert(v);
            }
            (Entry::Vacant(_), None) => {}
        }
    }

    /// Loads one persisted entry (storage iterates its state column).
    pub fn load_entry(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateDecodeError> {
        let k = StateKey::from_bytes(key)?;
        let v = StateValue::from_bytes(&k, value)?;
        self.set(k, Some(v));
        Ok(())
    }

    pub fn apply(&mut self, diff: &StateDiff) {
        for (k, v) in &diff.entries {
            self.set(*k, *v);
        }
    }

    pub fn root(&self) -> StateRoot {
        self.acc.root()
    }

    /// The shards, for writers that apply a block's final values shard by
    /// shard (on several threads) and keep the commitment themselves: each
    /// must insert only normalized values (no empty one) into the shard
    /// [`shard_of`] names, and add the change of the commitment with
    /// [`State::add_to_root`].
    pub(crate) fn shards_mut(&mut self) -> &mut [ShardMap] {
        &mut self.shards
    }

    /// Adds `delta` (sum of new entry hashes minus removed ones) to the
    /// commitment.
    pub(crate) fn add_to_root(&mut self, delta: Acc) {
        self.acc.add(delta.0);
    }

    /// Recomputes the commitment from scratch (for tests and replay checks).
    pub fn recompute_root(&self) -> StateRoot {
        let mut acc = Acc::default();
        for (k, v) in self.iter() {
            acc.add(Acc::entry_hash(k, v));
        }
        acc.root()
    }

    /// Iterates all entries in arbitrary order.
    pub fn iter(&self) -> impl Iterator<Item = (&StateKey, &StateValue)> {
        self.shards.iter().flat_map(|m| m.iter())
    }
}

/// The writes one block made, sorted by key; `None` deletes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateDiff {
    pub entries: Vec<(StateKey, Option<StateValue>)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_order_independent_and_incremental() {
        let mut a = State::new();
        let mut b = State::new();
        let ks: Vec<StateKey> = (0..50u8)
            .map(|i| StateKey::Account(AccountId([i; 32])))
            .collect();
        for (i, k) in ks.iter().enumerate() {
            a.set(
                *k,
                Some(StateValue::Account(Account {
                    balance: i as u64 + 1,
                    nonce: 0,
                })),
            );
        }
        for (i, k) in ks.iter().enumerate().rev() {
            b.set(
                *k,
                Some(StateValue::Account(Account {
                    balance: 1000,
                    nonce: 3,
                })),
            );
            b.set(
                *k,
                Some(StateValue::Account(Account {
                    balance: i as u64 + 1,
                    nonce: 0,
                })),
            );
        }
        assert_eq!(a.root(), b.root());
        assert_eq!(a.root(), a.recompute_root());
        a.set(ks[3], None);
        assert_ne!(a.root(), b.root());
        assert_eq!(a.root(), a.recompute_root());
        // An empty account is absent.
        b.set(ks[3], Some(StateValue::Account(Account::default())));
        assert_eq!(a.root(), b.root());
        assert_eq!(State::new().root(), StateRoot([0; 32]));
    }

    #[test]
    fn encoding_roundtrip_and_errors() {
        let k = StateKey::Account(AccountId([7; 32]));
        let v = StateValue::Account(Account {
            balance: 9,
            nonce: 2,
        });
        assert_eq!(StateKey::from_bytes(&k.to_bytes()), Ok(k));
        assert_eq!(StateValue::from_bytes(&k, &v.to_bytes()), Ok(v));
        assert_eq!(
            StateKey::from_bytes(&[1; 5]),
            Err(StateDecodeError::KeyLength(5))
        );
        assert_eq!(
            StateKey::from_bytes(&[9; 33]),
            Err(StateDecodeError::KeyTag(9))
        );
        assert_eq!(
            StateValue::from_bytes(&k, &[0; 3]),
            Err(StateDecodeError::ValueLength(3))
        );
    }

    #[test]
    fn kv_encoding_roundtrip_and_errors() {
        let k = StateKey::Kv([0xab; 32]);
        let b = k.to_bytes();
        assert_eq!(b[0], 2);
        assert_eq!(&b[1..], &[0xab; 32]);
        assert_eq!(StateKey::from_bytes(&b), Ok(k));
        let v = StateValue::Kv(0x0102_0304_0506_0708);
        assert_eq!(v.to_bytes(), vec![8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(StateValue::from_bytes(&k, &v.to_bytes()), Ok(v));
        assert_eq!(
            StateValue::from_bytes(&k, &[0; 16]),
            Err(StateDecodeError::ValueLength(16))
        );
        // An account key never decodes a counter-sized value and vice versa.
        let a = StateKey::Account(AccountId([1; 32]));
        assert_eq!(
            StateValue::from_bytes(&a, &[0; 8]),
            Err(StateDecodeError::ValueLength(8))
        );
        // A zero counter is absent, like an empty account.
        let mut s = State::new();
        s.set(k, Some(StateValue::Kv(0)));
        assert!(s.is_empty());
        s.load_entry(&b, &v.to_bytes()).unwrap();
        assert_eq!(s.kv(&[0xab; 32]), 0x0102_0304_0506_0708);
        assert_eq!(s.root(), s.recompute_root());
        // Counters sort after accounts (diffs are sorted by key).
        assert!(a < k);
    }
}
