//! The index the parallel executor builds over a block's keys: each distinct
//! key gets a dense local id (0, 1, 2, ... in order of first appearance).
//!
//! A `HashMap<StateKey, u32>` did this at ~110 ns per key visited (its
//! 40-byte entries for 16k keys spill out of L2, and every probe compares
//! 33-byte keys), a third of the parallel executor's extra work over the
//! sequential one on a conflict-free block. Here a slot is 8 bytes: a 32-bit
//! tag from the key's hash and the id. A probe compares tags, and only on a
//! tag match the key itself (in the key list), so inserting a new key — the
//! common case — touches the 8-byte slot array and the end of the list.
//!
//! The hash is the maps' seeded [`KeyHashBuilder`]: keys are chosen by
//! clients, and a seed they cannot predict keeps them from aiming collisions.

use std::hash::BuildHasher;

use crate::hash::KeyHashBuilder;
use crate::state::StateKey;

/// Slots per key at least (load factor 1/2 at most).
const SLOTS_PER_KEY: usize = 2;

/// The slot of the key with hash `h` and id `id`: its tag (the hash's high
/// 32 bits) and `id + 1` (0 marks an empty slot).
#[inline]
fn slot(h: u64, id: u32) -> u64 {
    (h >> 32 << 32) | (u64::from(id) + 1)
}

/// Distinct keys with dense ids in order of first appearance.
pub(crate) struct KeyIndex<S = KeyHashBuilder> {
    hasher: S,
    /// 0 = empty; otherwise `tag << 32 | (id + 1)`.
    slots: Vec<u64>,
    keys: Vec<StateKey>,
}

impl KeyIndex<KeyHashBuilder> {
    /// An index sized for `n` keys (it grows past them).
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self::with_capacity_and_hasher(n, KeyHashBuilder::default())
    }
}

impl<S: BuildHasher> KeyIndex<S> {
    pub(crate) fn with_capacity_and_hasher(n: usize, hasher: S) -> Self {
        let slots = (n.max(4) * SLOTS_PER_KEY).next_power_of_two();
        Self {
            hasher,
            slots: vec![0; slots],
            keys: Vec::with_capacity(n),
        }
    }

    /// The id of `k`, given the next id if `k` is new. `None` once
    /// `u32::MAX - 1` keys are indexed (ids must fit a `u32` with room for
    /// the empty marker).
    pub(crate) fn id_or_insert(&mut self, k: &StateKey) -> Option<u32> {
        let h = self.hasher.hash_one(k);
        let tag = h >> 32;
        let mask = self.slots.len() - 1;
        let mut i = h as usize & mask;
        loop {
            let s = self.slots[i];
            if s == 0 {
                break;
            }
            if s >> 32 == tag {
                let id = (s as u32) - 1;
                if self.keys[id as usize] == *k {
                    return Some(id);
                }
            }
            i = (i + 1) & mask;
        }
        let id = u32::try_from(self.keys.len())
            .ok()
            .filter(|&id| id < u32::MAX - 1)?;
        self.slots[i] = slot(h, id);
        self.keys.push(*k);
        if self.keys.len() * SLOTS_PER_KEY > self.slots.len() {
            self.grow();
        }
        Some(id)
    }

    /// Doubles the slot array and re-places every key.
    fn grow(&mut self) {
        let len = self.slots.len() * 2;
        let mask = len - 1;
        let mut slots = vec![0u64; len];
        for (id, k) in self.keys.iter().enumerate() {
            let h = self.hasher.hash_one(k);
            let mut i = h as usize & mask;
            while slots[i] != 0 {
                i = (i + 1) & mask;
            }
            slots[i] = slot(h, id as u32);
        }
        self.slots = slots;
    }

    /// The keys, in id order.
    pub(crate) fn into_keys(self) -> Vec<StateKey> {
        self.keys
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::{BuildHasherDefault, Hasher};

    use proptest::prelude::*;

    use super::*;
    use crate::tx::AccountId;

    /// Every key hashes alike: every probe collides, tags included.
    #[derive(Default)]
    struct Constant;
    impl Hasher for Constant {
        fn write(&mut self, _: &[u8]) {}
        fn finish(&self) -> u64 {
            0x1234_5678_9abc_def0
        }
    }

    fn key(kind: u8, b: u8, c: u8) -> StateKey {
        let mut body = [0u8; 32];
        body[0] = b;
        body[31] = c;
        if kind == 0 {
            StateKey::Account(AccountId(body))
        } else {
            StateKey::Kv(body)
        }
    }

    /// The ids a `HashMap` gives the same sequence, as the oracle.
    fn oracle(keys: &[StateKey]) -> (Vec<u32>, Vec<StateKey>) {
        let mut m = HashMap::new();
        let mut order = Vec::new();
        let ids = keys
            .iter()
            .map(|k| {
                *m.entry(*k).or_insert_with(|| {
                    order.push(*k);
                    order.len() as u32 - 1
                })
            })
            .collect();
        (ids, order)
    }

    fn check<S: BuildHasher>(mut idx: KeyIndex<S>, keys: &[StateKey]) {
        let ids: Vec<u32> = keys
            .iter()
            .map(|k| idx.id_or_insert(k).expect("room"))
            .collect();
        let (want_ids, want_keys) = oracle(keys);
        assert_eq!(ids, want_ids);
        assert_eq!(idx.into_keys(), want_keys);
    }

    proptest! {
        /// Same ids as a `HashMap`, from a capacity far below the key count
        /// (so it grows several times) and from an ample one.
        #[test]
        fn ids_match_a_hash_map(
            raw in proptest::collection::vec((0u8..2, 0u8..8, any::<u8>()), 0..600),
            cap in prop_oneof![Just(0usize), Just(1000usize)],
        ) {
            let keys: Vec<StateKey> = raw.iter().map(|&(a, b, c)| key(a, b, c)).collect();
            check(KeyIndex::with_capacity(cap), &keys);
        }

        /// Correct when every key collides: the tags match and the key
        /// compare decides.
        #[test]
        fn colliding_hashes_still_give_distinct_ids(
            raw in proptest::collection::vec((0u8..2, 0u8..4, any::<u8>()), 0..200),
        ) {
            let keys: Vec<StateKey> = raw.iter().map(|&(a, b, c)| key(a, b, c)).collect();
            check(
                KeyIndex::with_capacity_and_hasher(1, BuildHasherDefault::<Constant>::default()),
                &keys,
            );
        }
    }

    #[test]
    fn an_account_and_a_counter_with_the_same_body_are_different_keys() {
        let mut idx = KeyIndex::with_capacity(2);
        assert_eq!(idx.id_or_insert(&key(0, 7, 7)), Some(0));
        assert_eq!(idx.id_or_insert(&key(1, 7, 7)), Some(1));
        assert_eq!(idx.id_or_insert(&key(0, 7, 7)), Some(0));
        assert_eq!(idx.into_keys(), vec![key(0, 7, 7), key(1, 7, 7)]);
    }
}
