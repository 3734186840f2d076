//! Tests of the sparse Merkle tree: against a naive reference written from
//! the specification (module docs), order and batching independence, proofs
//! and their encoding.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::pool::{Fanout, WorkerPool};
use crate::state::{Account, State};
use crate::tx::AccountId;

// ---- The reference: the specification, naively, with its own hashing. ----

fn ref_path(k: &StateKey) -> [u8; 32] {
    blake3::derive_key("velox smt key v1", &k.to_bytes())
}

/// A BLAKE3 key: the ASCII of `s`, zero-padded to 32 bytes.
fn ref_key(s: &str) -> [u8; 32] {
    let mut k = s.as_bytes().to_vec();
    k.resize(32, 0);
    k.try_into().expect("32 bytes")
}

fn ref_leaf(path: &[u8; 32], v: &StateValue) -> [u8; 32] {
    let mut b = path.to_vec();
    b.extend_from_slice(&v.to_bytes());
    *blake3::keyed_hash(&ref_key("velox smt leaf v2"), &b).as_bytes()
}

fn ref_internal(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut b = l.to_vec();
    b.extend_from_slice(r);
    *blake3::keyed_hash(&ref_key("velox smt internal v2"), &b).as_bytes()
}

fn ref_bit(p: &[u8; 32], i: usize) -> bool {
    p[i / 8] & (0x80 >> (i % 8)) != 0
}

/// The hash of the subtree holding `leaves` (all sharing their first `depth`
/// bits): empty, the one leaf, or the internal node of both halves.
fn ref_subtree(leaves: &[([u8; 32], [u8; 32])], depth: usize) -> [u8; 32] {
    match leaves.len() {
        0 => [0; 32],
        1 => leaves[0].1,
        _ => {
            let left: Vec<_> = leaves
                .iter()
                .filter(|l| !ref_bit(&l.0, depth))
                .copied()
                .collect();
            let right: Vec<_> = leaves
                .iter()
                .filter(|l| ref_bit(&l.0, depth))
                .copied()
                .collect();
            ref_internal(
                &ref_subtree(&left, depth + 1),
                &ref_subtree(&right, depth + 1),
            )
        }
    }
}

fn ref_root(m: &BTreeMap<StateKey, StateValue>) -> StateRoot {
    let leaves: Vec<_> = m
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            let p = ref_path(k);
            (p, ref_leaf(&p, v))
        })
        .collect();
    StateRoot(ref_subtree(&leaves, 0))
}

// ---- Helpers. ----

fn key(i: u32) -> StateKey {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_le_bytes());
    if i % 3 == 2 {
        StateKey::Kv(b)
    } else {
        StateKey::Account(AccountId(b))
    }
}

/// A value for `key(i)`; `v == 0` is the empty value (absent).
fn value(i: u32, v: u64) -> StateValue {
    if i % 3 == 2 {
        StateValue::Kv(v)
    } else {
        StateValue::Account(Account {
            balance: v,
            nonce: v % 3,
        })
    }
}

type Batch = Vec<(StateKey, Option<StateValue>)>;

/// `ops` as batches cut at `cuts`, the last write of a key in a batch
/// winning (as the state hands the tree current values).
fn batches(ops: &[(u32, Option<u64>)], cuts: &[usize]) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (ops.len() + 1)).collect();
    cuts.push(ops.len());
    cuts.sort_unstable();
    for c in cuts {
        if c < start {
            continue;
        }
        let mut last: BTreeMap<StateKey, Option<StateValue>> = BTreeMap::new();
        for &(i, v) in &ops[start..c] {
            last.insert(key(i), v.map(|v| value(i, v)));
        }
        out.push(last.into_iter().collect());
        start = c;
    }
    out
}

fn final_map(ops: &[(u32, Option<u64>)]) -> BTreeMap<StateKey, StateValue> {
    let mut m = BTreeMap::new();
    for &(i, v) in ops {
        match v.map(|v| value(i, v)).filter(|v| !v.is_empty()) {
            Some(v) => {
                m.insert(key(i), v);
            }
            None => {
                m.remove(&key(i));
            }
        }
    }
    m
}

/// A pool shared by the tests (4 workers), as the executor's is by blocks.
fn pool() -> &'static WorkerPool {
    static POOL: std::sync::OnceLock<WorkerPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| WorkerPool::new(3, &[]).expect("threads start"))
}

fn tree_of(m: &BTreeMap<StateKey, StateValue>, threads: usize) -> Smt {
    let entries: Batch = m.iter().map(|(k, v)| (*k, Some(*v))).collect();
    let mut t = Smt::new();
    t.apply_on(&entries, threads, Fanout::Spawn(&[]));
    t
}

fn ops_strategy(keys: u32, len: usize) -> impl Strategy<Value = Vec<(u32, Option<u64>)>> {
    prop::collection::vec((0..keys, prop::option::weighted(0.8, 0..4u64)), 0..len)
}

// ---- Roots. ----

#[test]
fn empty_and_tiny_trees_match_the_specification() {
    let mut t = Smt::new();
    assert_eq!(t.root(), StateRoot(EMPTY_HASH));
    assert_eq!(t.root(), ref_root(&BTreeMap::new()));
    let mut m = BTreeMap::new();
    for i in 0..5 {
        m.insert(key(i), value(i, 7));
        t.apply(&[(key(i), Some(value(i, 7)))], 1);
        t.check(&|k| m.get(k).copied());
        assert_eq!(t.root(), ref_root(&m), "{} keys", i + 1);
    }
    // One key: the root is its leaf.
    let one = tree_of(&m.iter().take(1).map(|(k, v)| (*k, *v)).collect(), 1);
    let p = ref_path(&key(0));
    assert_eq!(one.root().0, ref_leaf(&p, &value(0, 7)));
    assert_eq!(key_path(&key(0)), p);
}

#[test]
fn deleting_back_restores_earlier_roots() {
    let mut t = Smt::new();
    let mut roots = vec![t.root()];
    for i in 0..300 {
        t.apply(&[(key(i), Some(value(i, 1 + u64::from(i))))], 1);
        roots.push(t.root());
    }
    t.check(&|k| {
        (0..300u32)
            .find(|i| key(*i) == *k)
            .map(|i| value(i, 1 + u64::from(i)))
    });
    for i in (0..300).rev() {
        t.apply(&[(key(i), None)], 1);
        assert_eq!(t.root(), roots[i as usize], "after deleting key {i}");
    }
    t.check(&|_| None);
    assert!(t.is_empty());
    // An empty value is a delete; deleting an absent key changes nothing.
    t.apply(&[(key(1), Some(value(1, 5)))], 1);
    let r = t.root();
    t.apply(&[(key(2), Some(value(2, 9))), (key(9), None)], 1);
    t.apply(&[(key(2), Some(value(2, 0)))], 1);
    assert_eq!(t.root(), r);
    t.check(&|k| (*k == key(1)).then(|| value(1, 5)));
}

#[test]
fn large_batches_on_threads_match_from_scratch() {
    let n = 20_000u32;
    let mut m = BTreeMap::new();
    for i in 0..n {
        m.insert(key(i), value(i, 1 + u64::from(i % 5)));
    }
    let want = root_from_scratch(m.iter());
    assert_eq!(want, ref_root(&m));
    for threads in [1, 2, 3, 16] {
        let t = tree_of(&m, threads);
        t.check(&|k| m.get(k).copied());
        assert_eq!(t.root(), want, "{threads} threads");
        assert_eq!(t.len(), m.len());
    }
    // The public entry point splits only batches large enough.
    let mut t = Smt::new();
    let entries: Batch = m.iter().map(|(k, v)| (*k, Some(*v))).collect();
    t.apply(&entries, 4);
    assert_eq!(t.root(), want);
    // A mixed batch: updates, deletes, inserts, on 2 threads.
    let mut batch = Batch::new();
    for i in (0..n).step_by(3) {
        batch.push((key(i), None));
        m.remove(&key(i));
    }
    for i in (1..n).step_by(3) {
        batch.push((key(i), Some(value(i, 99))));
        m.insert(key(i), value(i, 99));
    }
    for i in n..n + 5_000 {
        batch.push((key(i), Some(value(i, 3))));
        m.insert(key(i), value(i, 3));
    }
    t.apply_on(&batch, 2, Fanout::Pool(pool()));
    t.check(&|k| m.get(k).copied());
    assert_eq!(t.root(), root_from_scratch(m.iter()));
    assert!(t.memory_bytes() >= t.len() * std::mem::size_of::<StateKey>());
}

/// 256 cases per property in release, 48 in debug; `VELOX_SMT_CASES=N`
/// overrides both (for longer sweeps).
fn cases() -> ProptestConfig {
    let n = std::env::var("VELOX_SMT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 48 } else { 256 });
    ProptestConfig {
        cases: n,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases())]

    /// Any order, any batching, any thread count: the reference's root.
    #[test]
    fn root_is_a_function_of_the_final_set(
        ops in ops_strategy(96, 400),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        threads in 1..5usize,
        shuffle_seed in any::<u64>(),
    ) {
        let want = ref_root(&final_map(&ops));
        let mut t = Smt::new();
        for (i, b) in batches(&ops, &cuts).iter().enumerate() {
            // Alternately on the shared pool and on one thread.
            if i % 2 == 0 {
                t.apply_on(b, threads, Fanout::Pool(pool()));
            } else {
                t.apply_on(b, 1, Fanout::Spawn(&[]));
            }
        }
        let fm = final_map(&ops);
        t.check(&|k| fm.get(k).copied());
        prop_assert_eq!(t.root(), want);
        prop_assert_eq!(t.len(), final_map(&ops).len());

        // The final set inserted in another order, one key per batch.
        let mut entries: Vec<_> = final_map(&ops).into_iter().collect();
        let mut rng = shuffle_seed;
        for i in (1..entries.len()).rev() {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            entries.swap(i, (rng >> 33) as usize % (i + 1));
        }
        let mut u = Smt::new();
        for (k, v) in entries {
            u.apply(&[(k, Some(v))], 1);
        }
        prop_assert_eq!(u.root(), want);
        prop_assert_eq!(root_from_scratch(final_map(&ops).iter()), want);
    }

    /// Through `State`: writes in any order, the root asked for at random
    /// points, equals the from-scratch root.
    #[test]
    fn state_root_follows_writes(
        ops in ops_strategy(64, 300),
        every in 1..50usize,
    ) {
        let mut s = State::new();
        s.set_root_workers(2);
        for (n, &(i, v)) in ops.iter().enumerate() {
            s.set(key(i), v.map(|v| value(i, v)));
            if n % every == 0 {
                prop_assert_eq!(s.root(), s.recompute_root());
            }
        }
        prop_assert_eq!(s.root(), ref_root(&final_map(&ops)));
    }

    /// Every key, present or not, has a proof that verifies, and only for
    /// the true value.
    #[test]
    fn proofs_verify_for_present_and_absent_keys(ops in ops_strategy(200, 300)) {
        let m = final_map(&ops);
        let t = tree_of(&m, 1);
        let root = t.root();
        let get = |k: &StateKey| m.get(k).copied();
        for i in 0..210 {
            let k = key(i);
            let p = t.prove(&k, get);
            let v = m.get(&k);
            prop_assert_eq!(p.is_inclusion(), v.is_some());
            prop_assert_eq!(verify(&root, &k, v, &p), Ok(()));
            // The encoding round-trips.
            prop_assert_eq!(&Proof::decode(&p.encode()).unwrap(), &p);
            prop_assert_eq!(&Proof::from_hex(&p.to_hex()).unwrap(), &p);
            // The wrong value, or the wrong presence, fails.
            match v {
                Some(v) => {
                    let wrong = value(i, match v { StateValue::Account(a) => a.balance + 1, StateValue::Kv(x) => x + 1 });
                    let mismatch = matches!(verify(&root, &k, Some(&wrong), &p), Err(ProofError::RootMismatch { .. }));
                    prop_assert!(mismatch);
                    prop_assert_eq!(verify(&root, &k, None, &p), Err(ProofError::ExpectedAbsent));
                }
                None => {
                    prop_assert_eq!(verify(&root, &k, Some(&value(i, 1)), &p), Err(ProofError::ExpectedPresent));
                    // An empty value is absence.
                    prop_assert_eq!(verify(&root, &k, Some(&value(i, 0)), &p), Ok(()));
                }
            }
        }
    }

    /// Decoding arbitrary bytes never panics; what decodes re-encodes to the
    /// same bytes, and verifying it does not panic either.
    #[test]
    fn decoding_random_bytes_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        version_one in any::<bool>(),
        depth in 0..300u16,
    ) {
        let mut b = bytes;
        if version_one && b.len() >= 4 {
            // Get past the header checks more often.
            b[0] = PROOF_VERSION;
            b[1] %= 3;
            b[2..4].copy_from_slice(&(depth % 20).to_le_bytes());
        }
        if let Ok(p) = Proof::decode(&b) {
            prop_assert_eq!(p.encode(), b.clone());
            let _ = verify(&StateRoot([7; 32]), &key(1), Some(&value(1, 1)), &p);
            let _ = verify(&StateRoot([7; 32]), &key(1), None, &p);
        }
        let _ = Proof::from_hex(&hex::encode(&b));
        let _ = Proof::from_hex(&String::from_utf8_lossy(&b));
    }

    /// Any change to a valid proof's bytes makes it fail (decode or verify).
    #[test]
    fn mutated_proofs_fail(
        ops in ops_strategy(200, 200),
        which in 0..210u32,
        at in any::<usize>(),
        xor in 1..=255u8,
        truncate in any::<bool>(),
    ) {
        let m = final_map(&ops);
        let t = tree_of(&m, 1);
        let k = key(which);
        let p = t.prove(&k, |k| m.get(k).copied());
        let good = p.encode();
        let mut bad = good.clone();
        if truncate {
            bad.truncate(at % good.len());
        } else {
            let i = at % bad.len();
            bad[i] ^= xor;
        }
        if let Ok(q) = Proof::decode(&bad) {
            prop_assert!(verify(&t.root(), &k, m.get(&k), &q).is_err());
        }
    }
}

// ---- Proof failures, one by one. ----

fn sample() -> (BTreeMap<StateKey, StateValue>, Smt) {
    let mut m = BTreeMap::new();
    for i in 0..2_000 {
        m.insert(key(i), value(i, 1 + u64::from(i % 7)));
    }
    let t = tree_of(&m, 1);
    (m, t)
}

#[test]
fn tampered_inclusion_proofs_fail() {
    let (m, t) = sample();
    let root = t.root();
    let k = key(17);
    let v = m[&k];
    let p = t.prove(&k, |k| m.get(k).copied());
    assert!(p.is_inclusion());
    assert!(
        p.depth() >= 8,
        "2,000 keys put a leaf ~11 deep: {}",
        p.depth()
    );
    assert_eq!(verify(&root, &k, Some(&v), &p), Ok(()));
    // Wrong root.
    let mut other = root;
    other.0[0] ^= 1;
    assert!(matches!(
        verify(&other, &k, Some(&v), &p),
        Err(ProofError::RootMismatch { .. })
    ));
    // Another key's value under this key, this value under another key.
    assert!(verify(&root, &key(18), Some(&v), &p).is_err());
    // Each sibling flipped.
    for i in 0..p.depth() {
        let mut q = p.clone();
        q.siblings[i][5] ^= 0x40;
        assert!(
            matches!(
                verify(&root, &k, Some(&v), &q),
                Err(ProofError::RootMismatch { .. })
            ),
            "sibling {i}"
        );
    }
    // Siblings swapped, dropped, added.
    let mut q = p.clone();
    q.siblings.swap(0, 1);
    assert!(verify(&root, &k, Some(&v), &q).is_err());
    let mut q = p.clone();
    q.siblings.remove(0);
    assert!(verify(&root, &k, Some(&v), &q).is_err());
    let mut q = p.clone();
    q.siblings.push([9; 32]);
    assert!(verify(&root, &k, Some(&v), &q).is_err());
    // An empty deepest sibling is never canonical.
    let mut q = p.clone();
    *q.siblings.last_mut().unwrap() = EMPTY_HASH;
    assert_eq!(
        verify(&root, &k, Some(&v), &q),
        Err(ProofError::NonCanonical)
    );
    // Claimed as an absence proof.
    let mut q = p.clone();
    q.terminal = Terminal::Empty;
    assert!(verify(&root, &k, None, &q).is_err());
}

#[test]
fn absence_proofs_and_their_forgeries() {
    let (m, t) = sample();
    let root = t.root();
    let get = |k: &StateKey| m.get(k).copied();
    let mut seen_empty = false;
    let mut seen_other = false;
    for i in 5_000..5_400 {
        let k = key(i);
        let p = t.prove(&k, get);
        assert_eq!(verify(&root, &k, None, &p), Ok(()));
        match &p.terminal {
            Terminal::Empty => seen_empty = true,
            Terminal::OtherLeaf { path, value } => {
                seen_other = true;
                // The other leaf cannot stand in for the key itself.
                let mut q = p.clone();
                q.terminal = Terminal::OtherLeaf {
                    path: key_path(&k),
                    value: value.clone(),
                };
                assert_eq!(verify(&root, &k, None, &q), Err(ProofError::OtherLeafIsKey));
                // Nor can a leaf off the key's path prefix.
                let mut off = *path;
                off[0] ^= 0x80;
                let mut q = p.clone();
                q.terminal = Terminal::OtherLeaf {
                    path: off,
                    value: value.clone(),
                };
                assert_eq!(
                    verify(&root, &k, None, &q),
                    Err(ProofError::OtherLeafOffPath)
                );
                // A changed value of the other leaf.
                let mut q = p.clone();
                let mut v2 = value.clone();
                v2[0] ^= 1;
                q.terminal = Terminal::OtherLeaf {
                    path: *path,
                    value: v2,
                };
                assert!(verify(&root, &k, None, &q).is_err());
            }
            Terminal::Leaf => panic!("key {i} is absent"),
        }
    }
    assert!(seen_empty && seen_other, "both absence kinds exercised");
    // A present key's leaf turned into an "other leaf" does not prove the
    // key absent.
    let k = key(3);
    let p = t.prove(&k, get);
    let mut q = p.clone();
    q.terminal = Terminal::OtherLeaf {
        path: key_path(&k),
        value: m[&k].to_bytes(),
    };
    assert_eq!(verify(&root, &k, None, &q), Err(ProofError::OtherLeafIsKey));
}

#[test]
fn proofs_in_tiny_trees() {
    // Empty tree: absence at depth 0.
    let t = Smt::new();
    let p = t.prove(&key(1), |_| None);
    assert_eq!(p.terminal, Terminal::Empty);
    assert_eq!(p.depth(), 0);
    assert_eq!(verify(&t.root(), &key(1), None, &p), Ok(()));
    assert_eq!(p.encode(), vec![PROOF_VERSION, 1, 0, 0]);
    // One key: its proof is empty; another key's proof is the other leaf.
    let mut m = BTreeMap::new();
    m.insert(key(1), value(1, 4));
    let t = tree_of(&m, 1);
    let get = |k: &StateKey| m.get(k).copied();
    let p = t.prove(&key(1), get);
    assert_eq!((p.depth(), p.is_inclusion()), (0, true));
    assert_eq!(verify(&t.root(), &key(1), Some(&value(1, 4)), &p), Ok(()));
    let q = t.prove(&key(4), get);
    assert!(matches!(q.terminal, Terminal::OtherLeaf { .. }));
    assert_eq!(verify(&t.root(), &key(4), None, &q), Ok(()));
    // A few keys: paths end in the levels above the shards.
    for n in 2..12 {
        let m: BTreeMap<_, _> = (0..n).map(|i| (key(i), value(i, 2))).collect();
        let t = tree_of(&m, 1);
        for i in 0..40 {
            let p = t.prove(&key(i), |k| m.get(k).copied());
            assert_eq!(verify(&t.root(), &key(i), m.get(&key(i)), &p), Ok(()));
        }
    }
}

#[test]
fn decode_errors_are_typed() {
    assert_eq!(Proof::decode(&[]), Err(ProofError::Truncated(1)));
    assert_eq!(Proof::decode(&[2, 0, 0, 0]), Err(ProofError::Version(2)));
    assert_eq!(
        Proof::decode(&[1, 3, 0, 0]),
        Err(ProofError::TerminalTag(3))
    );
    assert_eq!(
        Proof::decode(&[1, 0, 0x01, 0x01]),
        Err(ProofError::Depth(257))
    );
    assert_eq!(
        Proof::decode(&[1, 0, 3, 0, 0b1000]),
        Err(ProofError::BitmapPadding)
    );
    assert_eq!(
        Proof::decode(&[1, 0, 1, 0, 1]),
        Err(ProofError::Truncated(32))
    );
    let mut b = vec![1, 0, 1, 0, 1];
    b.extend_from_slice(&[0; 32]);
    assert_eq!(Proof::decode(&b), Err(ProofError::ExplicitEmptySibling));
    assert_eq!(
        Proof::decode(&[1, 1, 0, 0, 9]),
        Err(ProofError::TrailingBytes(1))
    );
    let mut b = vec![1, 2, 0, 0];
    b.extend_from_slice(&[5; 32]);
    b.push(65);
    assert_eq!(Proof::decode(&b), Err(ProofError::ValueLength(65)));
    assert_eq!(Proof::from_hex("zz"), Err(ProofError::Hex));
    assert!(matches!(
        Proof::from_hex(&"00".repeat(PROOF_BYTES_MAX + 1)),
        Err(ProofError::TooLong(_))
    ));
    // The longest valid proof fits the bound.
    let p = Proof {
        siblings: vec![[3; 32]; PATH_BITS],
        terminal: Terminal::OtherLeaf {
            path: [1; 32],
            value: vec![2; PROOF_VALUE_BYTES_MAX],
        },
    };
    assert_eq!(p.encode().len(), PROOF_BYTES_MAX);
    assert_eq!(Proof::decode(&p.encode()), Ok(p));
}

#[test]
fn state_proves_against_its_root() {
    let mut s = State::new();
    for i in 0..500 {
        s.set(key(i), Some(value(i, 3)));
    }
    let k = key(10);
    let p = s.prove(&k);
    let root = s.root();
    assert_eq!(verify(&root, &k, s.get(&k).as_ref(), &p), Ok(()));
    // After a write the old value no longer verifies against the new root,
    // nor the new value against the old root.
    s.set(k, Some(value(10, 4)));
    let root2 = s.root();
    assert!(verify(&root2, &k, Some(&value(10, 3)), &p).is_err());
    assert!(verify(&root, &k, Some(&value(10, 4)), &p).is_err());
    // Another key's proof changed with it.
    let other = key(11);
    let old_other = s.prove(&other);
    s.set(k, Some(value(10, 5)));
    let root3 = s.root();
    assert!(verify(&root3, &other, s.get(&other).as_ref(), &old_other).is_err());
    let p3 = s.prove(&k);
    assert_eq!(verify(&root3, &k, s.get(&k).as_ref(), &p3), Ok(()));
    let absent = key(100_000);
    assert_eq!(verify(&root3, &absent, None, &s.prove(&absent)), Ok(()));
}

#[test]
fn path_and_hash_constants() {
    let k = key(7);
    assert_eq!(
        key_path(&k),
        blake3::derive_key(PATH_CONTEXT, &k.to_bytes())
    );
    let p = key_path(&k);
    let v = value(7, 9);
    assert_eq!(entry_leaf_hash(&p, &v), ref_leaf(&p, &v));
    assert_eq!(
        internal_hash(&[1; 32], &[2; 32]),
        ref_internal(&[1; 32], &[2; 32])
    );
    let a = [0b1010_0000u8; 32];
    let mut b = a;
    b[0] = 0b1011_0000;
    assert!(same_prefix(&a, &b, 3));
    assert!(!same_prefix(&a, &b, 4));
    b = a;
    b[1] ^= 1;
    assert!(same_prefix(&a, &b, 15));
    assert!(!same_prefix(&a, &b, 16));
    assert!(same_prefix(&a, &a, 256));
    assert_eq!((bit(&a, 0), bit(&a, 1), bit(&a, 2)), (1, 0, 1));
    for n in [0, 1, 7, 16, 100] {
        for parts in 1..9 {
            let mut next = 0;
            for i in 0..parts {
                let c = chunk(n, parts, i);
                assert_eq!(c.start, next);
                next = c.end;
            }
            assert_eq!(next, n);
        }
    }
}

/// Fixed vectors of the hash definitions (module docs), for other
/// implementations and against accidental change: any change here changes
/// every root.
#[test]
fn hash_definitions_are_pinned() {
    assert_eq!(&LEAF_KEY[..17], b"velox smt leaf v2");
    assert_eq!(&INTERNAL_KEY[..21], b"velox smt internal v2");
    assert_eq!(
        hex::encode(internal_hash(&[1; 32], &[2; 32])),
        "7ff1222eedb82c5cde44dff442d28d628af5835091155eac6a6716757b1e98c0"
    );
    assert_eq!(
        hex::encode(leaf_hash(&[3; 32], &[4; 16])),
        "cbf1caeb91a82f97ad3ec3cf7450bd03286289a3b8e1c65a2a3289e01bb9433f"
    );
    let mut m = BTreeMap::new();
    m.insert(key(1), value(1, 100));
    m.insert(key(2), value(2, 200));
    m.insert(key(3), value(3, 300));
    assert_eq!(
        tree_of(&m, 1).root().to_hex(),
        "c4a4ef2acd2cb2d05c05095c1eed22e1701878f002fe54a189bd00f132e5cd23"
    );
}
