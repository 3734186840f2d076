//! Account state and its commitment.
//!
//! State is a map from [`StateKey`] to [`StateValue`]. Keys and values have a
//! stable byte encoding ([`StateKey::to_bytes`], [`StateValue::to_bytes`])
//! that storage persists verbatim, so storage never needs to know what a key
//! means.
//!
//! The state commitment is the root of a sparse Merkle tree over those
//! encodings ([`crate::smt`]), which also gives inclusion and absence proofs
//! ([`State::prove`]). Writes only record which keys changed; the tree is
//! brought up to date in one batch when the root is next asked for (once per
//! block), so the execution hot path never hashes.

use std::collections::HashMap;
use std::fmt;

use crate::hash::KeyHashBuilder;
use crate::smt::{Proof, Smt};
use crate::tx::AccountId;

/// A key in the state map.
///
/// Keys are ordered as their encodings ([`StateKey::to_bytes`]) compare:
/// accounts before counters, then by body bytes. Diffs list keys in this
/// order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateKey {
    Account(AccountId),
    /// A shared u64 counter written by [`crate::tx::TxBody::KvAdd`].
    Kv([u8; 32]),
}

impl Ord for StateKey {
    /// Byte order of the encodings, computed as the tag, then the first 8
    /// body bytes as one big-endian integer, then the other 24 bytes only on
    /// a tie (bodies are hashes and ids: the first 8 bytes nearly always
    /// differ). A 33-byte `memcmp` call per comparison made sorting a block's
    /// written keys a visible share of a block.
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let (ta, a) = self.tag_and_body();
        let (tb, b) = other.tag_and_body();
        let head = |x: &[u8; 32]| u64::from_be_bytes(x[..8].try_into().expect("8 bytes"));
        ta.cmp(&tb)
            .then_with(|| head(a).cmp(&head(b)))
            .then_with(|| a[8..].cmp(&b[8..]))
    }
}

impl PartialOrd for StateKey {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Encoded key length: a one-byte tag and 32 bytes.
pub const STATE_KEY_BYTES: usize = 33;
const TAG_ACCOUNT: u8 = 1;
const TAG_KV: u8 = 2;

impl StateKey {
    /// The encoding's tag and the 32-byte body.
    #[inline]
    fn tag_and_body(&self) -> (u8, &[u8; 32]) {
        match self {
            StateKey::Account(AccountId(b)) => (TAG_ACCOUNT, b),
            StateKey::Kv(b) => (TAG_KV, b),
        }
    }

    pub fn to_bytes(&self) -> [u8; STATE_KEY_BYTES] {
        let (tag, body) = self.tag_and_body();
        let mut out = [0u8; STATE_KEY_BYTES];
        out[0] = tag;
        out[1..].copy_from_slice(body);
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
/// The longest value encoding.
pub const VALUE_BYTES_MAX: usize = ACCOUNT_VALUE_BYTES;
const _: () = assert!(KV_VALUE_BYTES <= VALUE_BYTES_MAX);

impl StateValue {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = [0u8; VALUE_BYTES_MAX];
        let n = self.write_bytes(&mut buf);
        buf[..n].to_vec()
    }

    /// Writes the encoding of [`StateValue::to_bytes`] into `out` (no
    /// allocation) and returns its length.
    pub fn write_bytes(&self, out: &mut [u8; VALUE_BYTES_MAX]) -> usize {
        match self {
            StateValue::Account(a) => {
                out[..8].copy_from_slice(&a.balance.to_le_bytes());
                out[8..16].copy_from_slice(&a.nonce.to_le_bytes());
                ACCOUNT_VALUE_BYTES
            }
            StateValue::Kv(v) => {
                out[..8].copy_from_slice(&v.to_le_bytes());
                KV_VALUE_BYTES
            }
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

/// The state map is split into this many shards by the first byte of the
/// key's 32-byte body, so the parallel executor can apply a block's writes on
/// all workers (each owns whole shards). 16 shards keep up to 16 workers busy
/// at a cost of 16 small maps per state.
pub const STATE_SHARDS: usize = 16;
const _: () = assert!(STATE_SHARDS.is_power_of_two() && STATE_SHARDS <= 256);

/// The shard of `key`: the top bits of the first byte after the tag.
pub fn shard_of(key: &StateKey) -> usize {
    let b = key.tag_and_body().1[0];
    (b as usize * STATE_SHARDS) >> 8
}

pub(crate) type ShardMap = HashMap<StateKey, StateValue, KeyHashBuilder>;

/// Keys written since the tree was last updated, at most: past this, a
/// write updates the tree first. Bounds the pending list (33 bytes a key,
/// ~35 MiB) when the root is not asked for, e.g. while loading the whole
/// state at start; far above the writes of one block.
pub const DIRTY_KEYS_MAX: usize = 1 << 20;

/// The full state in memory with its commitment.
///
/// Invariants: the maps hold no empty value (an empty account or a zero
/// counter is the same as an absent one); `tree` commits to the maps except
/// for the keys listed in `dirty`, whose tree leaves may be stale.
#[derive(Clone)]
pub struct State {
    /// `STATE_SHARDS` maps; `key` lives in `shards[shard_of(key)]`.
    shards: Vec<ShardMap>,
    tree: Smt,
    /// Keys set since the tree was last updated, possibly repeated; at most
    /// `DIRTY_KEYS_MAX`.
    dirty: Vec<StateKey>,
    /// Threads [`State::root`] may use to update the tree.
    root_workers: usize,
}

impl Default for State {
    fn default() -> Self {
        let hasher = KeyHashBuilder::default();
        Self {
            shards: (0..STATE_SHARDS)
                .map(|_| HashMap::with_hasher(hasher))
                .collect(),
            tree: Smt::new(),
            dirty: Vec::new(),
            root_workers: 1,
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

    /// Lets [`State::root`] update the tree on up to `workers` threads (the
    /// caller's included) when a batch is large enough to pay for them. The
    /// root does not depend on it.
    pub fn set_root_workers(&mut self, workers: usize) {
        self.root_workers = workers.max(1);
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

    /// Sets `key` to `value` (None or an empty account deletes it); the
    /// commitment follows at the next [`State::root`].
    pub fn set(&mut self, key: StateKey, value: Option<StateValue>) {
        use std::collections::hash_map::Entry;
        let value = StateValue::normalize(value);
        let changed = match (self.shards[shard_of(&key)].entry(key), value) {
            (Entry::Occupied(mut o), Some(v)) => {
                let changed = *o.get() != v;
                o.insert(v);
                changed
            }
            (Entry::Occupied(o), None) => {
                o.remove();
                true
            }
            (Entry::Vacant(e), Some(v)) => {
                e.insert(v);
                true
            }
            (Entry::Vacant(_), None) => false,
        };
        if changed {
            self.mark_dirty(key);
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

    /// The state root: updates the tree with the keys written since the last
    /// call (O(k log n) hashes for k keys), then reads its root.
    pub fn root(&mut self) -> StateRoot {
        self.update_tree();
        self.tree.root()
    }

    /// An inclusion or absence proof for `key` against [`State::root`].
    pub fn prove(&mut self, key: &StateKey) -> Proof {
        self.update_tree();
        let shards = &self.shards;
        self.tree
            .prove(key, |k| shards[shard_of(k)].get(k).copied())
    }

    /// Heap bytes of the commitment tree (not the maps).
    pub fn tree_memory_bytes(&self) -> usize {
        self.tree.memory_bytes()
    }

    /// Brings the tree up to date with the maps.
    fn update_tree(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let mut keys = std::mem::take(&mut self.dirty);
        // Sorted only to find duplicates (the tree sorts by path itself).
        keys.sort_unstable();
        keys.dedup();
        let entries: Vec<(StateKey, Option<StateValue>)> =
            keys.iter().map(|k| (*k, self.get(k))).collect();
        self.tree.apply(&entries, self.root_workers);
        // Keep the list's allocation for the next block.
        keys.clear();
        self.dirty = keys;
        debug_assert_eq!(self.tree.len(), self.len());
    }

    /// Records that `key` changed (its tree leaf is stale until the next
    /// update).
    fn mark_dirty(&mut self, key: StateKey) {
        if self.dirty.len() >= DIRTY_KEYS_MAX {
            self.update_tree();
        }
        self.dirty.push(key);
    }

    /// The maps and the tree (brought up to date first), for a writer that
    /// applies a block shard by shard on several threads and updates the
    /// tree itself (the parallel executor). It must insert only normalized
    /// values (no empty one) into the shard [`shard_of`] names, hand exactly
    /// the keys it changed, with their new values, to the tree (a
    /// [`crate::smt::LeafBatch`] per thread, then [`ShardSet::apply`] of
    /// every set of [`Smt::shard_sets`]), and then call
    /// [`State::finish_block_update`].
    ///
    /// [`ShardSet::apply`]: crate::smt::ShardSet::apply
    pub(crate) fn block_parts(&mut self) -> (&mut [ShardMap], &mut Smt) {
        self.update_tree();
        (&mut self.shards, &mut self.tree)
    }

    /// Completes a [`State::block_parts`] update.
    pub(crate) fn finish_block_update(&mut self) {
        self.tree.finish_update();
        debug_assert_eq!(self.tree.len(), self.len());
    }

    /// The root recomputed from scratch from the maps, without the tree (for
    /// tests and restart checks).
    pub fn recompute_root(&self) -> StateRoot {
        crate::smt::root_from_scratch(self.iter())
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
    use proptest::prelude::*;

    use super::*;

    /// A key from a kind, a few body bytes chosen to tie often in the first 8
    /// bytes, and the rest.
    fn arb_key() -> impl Strategy<Value = StateKey> {
        (any::<bool>(), 0u8..3, 0u8..3, 0u8..3, any::<[u8; 32]>()).prop_map(
            |(account, b0, b7, b8, mut body)| {
                body[0] = b0;
                body[7] = b7;
                body[8] = b8;
                body[1..7].fill(0);
                if account {
                    StateKey::Account(AccountId(body))
                } else {
                    StateKey::Kv(body)
                }
            },
        )
    }

    proptest! {
        /// Keys order as their encodings do, ties in the first 8 body bytes
        /// included (the order of diffs is part of the output).
        #[test]
        fn keys_order_as_their_encodings(a in arb_key(), b in arb_key()) {
            prop_assert_eq!(a.cmp(&b), a.to_bytes().cmp(&b.to_bytes()));
            prop_assert_eq!(a.cmp(&b) == std::cmp::Ordering::Equal, a == b);
        }
    }

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
        // Deleting back to an earlier set gives the earlier root.
        a.set(
            ks[3],
            Some(StateValue::Account(Account {
                balance: 4,
                nonce: 0,
            })),
        );
        b.set(
            ks[3],
            Some(StateValue::Account(Account {
                balance: 4,
                nonce: 0,
            })),
        );
        let with = a.root();
        a.set(ks[49], None);
        assert_ne!(a.root(), with);
        a.set(
            ks[49],
            Some(StateValue::Account(Account {
                balance: 50,
                nonce: 0,
            })),
        );
        assert_eq!(a.root(), with);
        assert_eq!(a.root(), b.root());
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
