//! A fast keyed hasher for in-memory maps of [`crate::state::StateKey`].
//!
//! SipHash (std's default) costs ~25 ns per 33-byte key, a large share of a
//! ~1 us transfer. This hasher folds 64x64->128-bit multiplications of the
//! input words with a per-map random seed (the construction of foldhash and
//! ahash's fallback): ~5 ns per key. The seed comes from std's `RandomState`,
//! so an adversary choosing keys (counter keys are free-form) cannot predict
//! bucket collisions. Only in-memory layout depends on it, never an output.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// Builds [`KeyHasher`]s with one random seed.
#[derive(Clone, Copy, Debug)]
pub struct KeyHashBuilder {
    seed: [u64; 4],
}

impl Default for KeyHashBuilder {
    fn default() -> Self {
        let rs = RandomState::new();
        let mut seed = [0u64; 4];
        for (i, s) in seed.iter_mut().enumerate() {
            let mut h = rs.build_hasher();
            h.write_usize(i);
            // Odd seeds: a multiplier of zero would erase the input.
            *s = h.finish() | 1;
        }
        Self { seed }
    }
}

impl BuildHasher for KeyHashBuilder {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher {
            acc: self.seed[0],
            seed: self.seed,
        }
    }
}

#[inline(always)]
fn fold(x: u64, y: u64) -> u64 {
    let p = u128::from(x) * u128::from(y);
    (p as u64) ^ ((p >> 64) as u64)
}

/// See the module docs.
#[derive(Clone, Copy, Debug)]
pub struct KeyHasher {
    acc: u64,
    seed: [u64; 4],
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(16);
        for c in &mut chunks {
            let a = u64::from_le_bytes(c[..8].try_into().expect("8 bytes"));
            let b = u64::from_le_bytes(c[8..].try_into().expect("8 bytes"));
            self.acc = fold(a ^ self.seed[1], b ^ self.seed[2] ^ self.acc);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 16];
            buf[..rest.len()].copy_from_slice(rest);
            let a = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
            let b = u64::from_le_bytes(buf[8..].try_into().expect("8 bytes"));
            self.acc = fold(
                a ^ self.seed[1],
                b ^ self.seed[2] ^ self.acc ^ rest.len() as u64,
            );
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.acc = fold(x ^ self.seed[3], self.acc ^ self.seed[1]);
    }
    #[inline]
    fn write_u8(&mut self, x: u8) {
        self.write_u64(u64::from(x));
    }
    #[inline]
    fn write_u32(&mut self, x: u32) {
        self.write_u64(u64::from(x));
    }
    #[inline]
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
    #[inline]
    fn write_isize(&mut self, x: isize) {
        self.write_u64(x as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        fold(self.acc, self.seed[2]).rotate_left(23)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateKey;
    use crate::tx::AccountId;
    use std::collections::HashSet;

    #[test]
    fn distinct_keys_spread_over_buckets() {
        let b = KeyHashBuilder::default();
        // Keys differing in one byte anywhere, and account vs counter tags.
        let mut seen = HashSet::new();
        let mut low_bits = HashSet::new();
        for pos in 0..32 {
            for v in 0..64u8 {
                let mut k = [0u8; 32];
                k[pos] = v;
                for key in [StateKey::Account(AccountId(k)), StateKey::Kv(k)] {
                    let h = b.hash_one(key);
                    seen.insert(h);
                    low_bits.insert(h & 0xfff);
                }
            }
        }
        // 32 * 63 + 1 distinct arrays, two tags each.
        assert_eq!(seen.len(), 2 * (32 * 63 + 1));
        // 4034 random values in 4096 buckets fill ~2570 of them.
        assert!(low_bits.len() > 2_350, "poor spread: {}", low_bits.len());
        // Same key, same hash; another builder, another seed.
        let k = StateKey::Kv([9; 32]);
        assert_eq!(b.hash_one(k), b.hash_one(k));
        assert_ne!(b.hash_one(k), KeyHashBuilder::default().hash_one(k));
    }
}
