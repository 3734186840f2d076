//! The state commitment: a sparse Merkle tree over the state's keys, with
//! inclusion and absence proofs.
//!
//! # Layout and hashing (protocol: other implementations must match)
//!
//! - Every key sits at a 256-bit **path**:
//!   `path = BLAKE3 derive_key(PATH_CONTEXT, key bytes)` with the context
//!   `"velox smt key v1"` and the key's canonical 33 bytes
//!   ([`StateKey::to_bytes`]). Bit `i` of a path is bit `7 - i % 8` of byte
//!   `i / 8` (most significant first); bit `i` chooses the child at depth
//!   `i` (0 = left).
//! - **leaf** = `BLAKE3 keyed_hash(LEAF_KEY, path ‖ value bytes)`
//!   ([`StateValue::to_bytes`]): 48 bytes for an account, 40 for a counter,
//!   one BLAKE3 compression.
//! - **internal** = `BLAKE3 keyed_hash(INTERNAL_KEY, left ‖ right)`: exactly
//!   64 bytes, one compression (a 65-byte `0x01 ‖ left ‖ right` input, the
//!   first definition, took two and made the tree twice as costly).
//! - The keys ([`LEAF_KEY`], [`INTERNAL_KEY`]) are the ASCII strings
//!   `"velox smt leaf v2"` and `"velox smt internal v2"` padded with zero
//!   bytes to 32: distinct keys separate leaves from internal nodes.
//! - **empty** subtree = [`EMPTY_HASH`], 32 zero bytes (not a BLAKE3 output).
//!
//! The tree is *compressed*: the hash of the subtree under a path prefix is
//! the empty hash if no key lies under it, the leaf hash if exactly one does
//! (whatever the depth), and the internal hash of its two halves otherwise.
//! So a leaf sits just below the depth where its path parts from every other
//! key's (about log2(n) for n keys), and an internal node always has at least
//! two keys below it. The root is therefore a pure function of the set of
//! (key, value) pairs, independent of insertion order and of batching; the
//! empty state's root is [`EMPTY_HASH`].
//!
//! # In memory
//!
//! The first [`SHARD_BITS`] levels split the tree into [`SMT_SHARDS`]
//! subtrees, each an arena (flat vectors of internal nodes and leaves linked
//! by `u32` indices, freed slots reused): no allocation per node, and a batch
//! updates the shards on several threads without sharing anything. The few
//! levels above the shards are recombined after each batch (15 hashes at
//! most). A batch of k changed keys is sorted by path and walks down once,
//! rehashing only the nodes above changed leaves: O(k log n) hashes.
//!
//! # Proofs
//!
//! A [`Proof`] is the list of sibling hashes from the root down to where the
//! key's path ends: at its own leaf (inclusion), at an empty subtree, or at
//! another key's leaf (both absence). [`verify`] recomputes the root from it;
//! [`Proof::encode`] is the versioned binary form (see [`PROOF_VERSION`]), and
//! [`Proof::decode`] takes untrusted bytes (it never panics and allocates at
//! most [`PROOF_BYTES_MAX`]).

use std::sync::OnceLock;

use blake3::hazmat::HasherExt;

use crate::pool::Fanout;
use crate::state::{StateKey, StateRoot, StateValue, VALUE_BYTES_MAX};

/// A node hash.
pub type Hash = [u8; 32];
/// A key's position in the tree.
pub type Path = [u8; 32];

/// The `derive_key` context of paths. A new tree layout gets a new context.
pub const PATH_CONTEXT: &str = "velox smt key v1";
/// Depth of the full tree: one level per path bit.
pub const PATH_BITS: usize = 256;
/// The hash of an empty subtree, and the root of the empty state.
pub const EMPTY_HASH: Hash = [0; 32];
/// BLAKE3 key of leaf hashes: `"velox smt leaf v2"`, zero-padded.
pub const LEAF_KEY: [u8; 32] = padded_key(b"velox smt leaf v2");
/// BLAKE3 key of internal node hashes: `"velox smt internal v2"`,
/// zero-padded. A new hash definition gets new key strings.
pub const INTERNAL_KEY: [u8; 32] = padded_key(b"velox smt internal v2");

/// `s` followed by zero bytes up to 32.
const fn padded_key(s: &[u8]) -> [u8; 32] {
    assert!(s.len() <= 32, "key string over 32 bytes");
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < s.len() {
        out[i] = s[i];
        i += 1;
    }
    out
}

/// Levels above the shards: the tree's top `SHARD_BITS` path bits choose one
/// of `SMT_SHARDS` independent arenas. 16 keep up to 16 threads busy on a
/// large batch and cost 15 extra hashes per batch.
pub const SHARD_BITS: usize = 4;
pub const SMT_SHARDS: usize = 1 << SHARD_BITS;
const _: () = assert!(SHARD_BITS >= 1 && SHARD_BITS <= 8);

/// Keys per thread below which a batch is not split across threads: a
/// scoped thread costs ~20-50 us to start, about what 10-20 keys cost to
/// update on a 1M tree (~2.5 us each), so 256 keys keep the start under
/// ~8% of a thread's work. Measured on 1M accounts (2 loaded cores): 2k
/// keys on 2 threads 4.2-4.6 ms against 5.4-6.0 on one; the earlier
/// threshold of 2,048 (set when a key cost ~2x more) split nothing below
/// 4k keys, i.e. never for a block of ~1,000 transfers.
pub const PARALLEL_KEYS_PER_THREAD_MIN: usize = 256;

/// Updates whose paths [`Shard::update`] walks ahead of time, at most, as
/// one group (see [`Shard::warm`]): their nodes (~10 per key below the
/// shared top on a 1M tree, 72 bytes each: ~370 KB for 512 keys) must still
/// be in the core's cache (1 MB L2 here) when the update reaches them.
pub const WARM_KEYS_MAX: usize = 512;
/// Paths walked side by side while warming: enough independent loads to
/// keep the memory system busy (a core tracks ~10-20 misses at once), few
/// enough for the loop over them to stay within the reorder window.
const WARM_LANES: usize = 16;
/// Shards whose internal nodes take less than this are not warmed: they
/// stay cached between batches anyway (the exec suite's 16k-account state:
/// ~70 KB per shard, where warming was 7% of the update and saved nothing).
const WARM_SHARD_BYTES_MIN: usize = 1 << 20;

/// Proof encoding version (the first byte).
pub const PROOF_VERSION: u8 = 1;
/// Bytes of a leaf value a proof may carry at most.
pub const PROOF_VALUE_BYTES_MAX: usize = 64;
const _: () = assert!(VALUE_BYTES_MAX <= PROOF_VALUE_BYTES_MAX);
/// Longest valid encoded proof: header, a full bitmap, 256 siblings, and an
/// other leaf's path, value length and value.
pub const PROOF_BYTES_MAX: usize =
    4 + PATH_BITS / 8 + PATH_BITS * 32 + 32 + 1 + PROOF_VALUE_BYTES_MAX;

/// The path of `key`.
pub fn key_path(key: &StateKey) -> Path {
    static CONTEXT_KEY: OnceLock<blake3::hazmat::ContextKey> = OnceLock::new();
    let ck = CONTEXT_KEY.get_or_init(|| blake3::hazmat::hash_derive_key_context(PATH_CONTEXT));
    // Same bytes as `blake3::derive_key(PATH_CONTEXT, ..)`, without hashing
    // the context again for every key.
    *blake3::Hasher::new_from_context_key(ck)
        .update(&key.to_bytes())
        .finalize()
        .as_bytes()
}

/// The leaf hash of `value` (its canonical bytes) at `path`.
pub fn leaf_hash(path: &Path, value: &[u8]) -> Hash {
    assert!(value.len() <= PROOF_VALUE_BYTES_MAX, "leaf value too long");
    let mut buf = [0u8; 32 + PROOF_VALUE_BYTES_MAX];
    buf[..32].copy_from_slice(path);
    buf[32..32 + value.len()].copy_from_slice(value);
    *blake3::keyed_hash(&LEAF_KEY, &buf[..32 + value.len()]).as_bytes()
}

/// The leaf hash of a state entry (encoded on the stack).
pub fn entry_leaf_hash(path: &Path, value: &StateValue) -> Hash {
    let mut buf = [0u8; VALUE_BYTES_MAX];
    let n = value.write_bytes(&mut buf);
    leaf_hash(path, &buf[..n])
}

/// The hash of an internal node: one BLAKE3 compression.
#[inline]
pub fn internal_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(left);
    buf[32..].copy_from_slice(right);
    *blake3::keyed_hash(&INTERNAL_KEY, &buf).as_bytes()
}

/// Bit `depth` of `path` (most significant bit of byte 0 first).
#[inline]
pub fn bit(path: &Path, depth: usize) -> usize {
    ((path[depth / 8] >> (7 - depth % 8)) & 1) as usize
}

fn shard_of_path(path: &Path) -> usize {
    (path[0] >> (8 - SHARD_BITS)) as usize
}

/// The order of paths (lexicographic, i.e. by bits from the root), from one
/// integer compare of their first 8 bytes as a big-endian `u64` (the same
/// order) and a 32-byte compare only on a tie: sorting a batch by path was
/// mostly `memcmp` calls.
#[inline]
fn path_order(a: &Path, b: &Path) -> std::cmp::Ordering {
    let head = |p: &Path| u64::from_be_bytes(p[..8].try_into().expect("8 bytes"));
    head(a).cmp(&head(b)).then_with(|| a.cmp(b))
}

fn sort_by_path(ups: &mut [LeafUpdate]) {
    ups.sort_unstable_by(|a, b| path_order(&a.path, &b.path));
}

/// True if `a` and `b` agree on their first `bits` bits.
fn same_prefix(a: &Path, b: &Path, bits: usize) -> bool {
    let whole = bits / 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

/// One changed key, ready for the tree: its path and new leaf hash (`None`
/// deletes it).
#[derive(Clone, Copy, Debug)]
struct LeafUpdate {
    path: Path,
    key: StateKey,
    hash: Option<Hash>,
}

impl LeafUpdate {
    fn new(key: StateKey, value: Option<&StateValue>) -> Self {
        let path = key_path(&key);
        let hash = value
            .filter(|v| !v.is_empty())
            .map(|v| entry_leaf_hash(&path, v));
        Self { path, key, hash }
    }
}

/// Leaf updates of some keys (any subset of a batch, built by any thread),
/// bucketed by tree shard. A batch update gives every shard the updates of
/// all its keys from every [`LeafBatch`].
pub(crate) struct LeafBatch {
    buckets: Vec<Vec<LeafUpdate>>,
}

impl LeafBatch {
    /// Room for about `keys` keys.
    pub(crate) fn with_capacity(keys: usize) -> Self {
        // Paths are uniform: a shard gets ~1/16 of the keys.
        let per_shard = keys / SMT_SHARDS + keys / (4 * SMT_SHARDS) + 8;
        Self {
            buckets: (0..SMT_SHARDS)
                .map(|_| Vec::with_capacity(per_shard))
                .collect(),
        }
    }

    /// Adds `key` with its new value (`None` or empty: deleted). Hashes its
    /// path and leaf.
    pub(crate) fn push(&mut self, key: StateKey, value: Option<&StateValue>) {
        let u = LeafUpdate::new(key, value);
        self.buckets[shard_of_path(&u.path)].push(u);
    }
}

/// Consecutive tree shards, updated by one worker of a batch update.
pub(crate) struct ShardSet<'a> {
    /// Index of `shards[0]`.
    first: usize,
    shards: &'a mut [Shard],
}

impl ShardSet<'_> {
    /// Applies to this set's shards their updates from all `batches`. A key
    /// may appear in several batches only with the same value.
    pub(crate) fn apply(self, batches: &[&LeafBatch]) {
        let mut ups = Vec::new();
        for (i, shard) in self.shards.iter_mut().enumerate() {
            let s = self.first + i;
            ups.clear();
            for b in batches {
                ups.extend_from_slice(&b.buckets[s]);
            }
            if ups.is_empty() {
                continue;
            }
            sort_by_path(&mut ups);
            ups.dedup_by(|a, b| {
                if a.path == b.path {
                    assert!(a.key == b.key, "two keys with one path");
                    assert!(a.hash == b.hash, "one key with two values in one batch");
                    true
                } else {
                    false
                }
            });
            shard.apply(&ups);
        }
    }
}

/// A child link in a shard's arena: empty, a leaf index, or an internal
/// node index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NodeRef(u32);

/// Slots per arena vector at most: indices below 2^31 - 1, so that a leaf
/// link (top bit set) never equals [`NodeRef::EMPTY`].
const ARENA_SLOTS_MAX: usize = (1 << 31) - 1;

impl NodeRef {
    const EMPTY: NodeRef = NodeRef(u32::MAX);
    const LEAF_BIT: u32 = 1 << 31;

    fn leaf(i: u32) -> Self {
        debug_assert!((i as usize) < ARENA_SLOTS_MAX);
        NodeRef(Self::LEAF_BIT | i)
    }
    fn internal(i: u32) -> Self {
        debug_assert!((i as usize) < ARENA_SLOTS_MAX);
        NodeRef(i)
    }
    fn is_empty(self) -> bool {
        self == Self::EMPTY
    }
    fn is_leaf(self) -> bool {
        !self.is_empty() && self.0 & Self::LEAF_BIT != 0
    }
    fn kind(self) -> Node {
        if self.is_empty() {
            Node::Empty
        } else if self.is_leaf() {
            Node::Leaf(self.0 & !Self::LEAF_BIT)
        } else {
            Node::Internal(self.0)
        }
    }
}

enum Node {
    Empty,
    Leaf(u32),
    Internal(u32),
}

/// An internal node: at least two keys lie below it. It holds its
/// children's hashes, so rehashing it after one child changed reads no other
/// node (on a large tree each node read is a cache miss: this halves them).
#[derive(Clone, Copy)]
struct Internal {
    hashes: [Hash; 2],
    children: [NodeRef; 2],
}

impl Internal {
    fn hash(&self) -> Hash {
        internal_hash(&self.hashes[0], &self.hashes[1])
    }
}

/// A subtree's node and hash.
type Sub = (NodeRef, Hash);
const EMPTY_SUB: Sub = (NodeRef::EMPTY, EMPTY_HASH);

/// One subtree below the top `SHARD_BITS` levels, in flat vectors: internal
/// nodes, and leaves as their keys (a leaf's hash lives in its parent, or in
/// `root_hash`; its path is recomputed where needed, which is rare:
/// splitting a leaf, building a proof).
///
/// Invariants: `root` and every link reachable from it point at live slots;
/// free lists hold exactly the slots not reachable; the tree is canonical
/// (an internal node has two keys or more below it, so never an empty child
/// next to a leaf); `root_hash` and every stored child hash are current.
#[derive(Clone)]
struct Shard {
    internals: Vec<Internal>,
    leaves: Vec<StateKey>,
    free_internals: Vec<u32>,
    free_leaves: Vec<u32>,
    root: NodeRef,
    root_hash: Hash,
}

impl Default for Shard {
    fn default() -> Self {
        Self {
            internals: Vec::new(),
            leaves: Vec::new(),
            free_internals: Vec::new(),
            free_leaves: Vec::new(),
            root: NodeRef::EMPTY,
            root_hash: EMPTY_HASH,
        }
    }
}

impl Shard {
    fn len(&self) -> usize {
        self.leaves.len() - self.free_leaves.len()
    }

    fn alloc_leaf(&mut self, key: StateKey) -> NodeRef {
        let i = match self.free_leaves.pop() {
            Some(i) => {
                self.leaves[i as usize] = key;
                i
            }
            None => {
                assert!(self.leaves.len() < ARENA_SLOTS_MAX, "shard leaf arena full");
                self.leaves.push(key);
                (self.leaves.len() - 1) as u32
            }
        };
        NodeRef::leaf(i)
    }

    fn alloc_internal(&mut self, node: Internal) -> u32 {
        match self.free_internals.pop() {
            Some(i) => {
                self.internals[i as usize] = node;
                i
            }
            None => {
                assert!(
                    self.internals.len() < ARENA_SLOTS_MAX,
                    "shard internal arena full"
                );
                self.internals.push(node);
                (self.internals.len() - 1) as u32
            }
        }
    }

    /// Applies `ups` (sorted by path, distinct, all in this shard).
    fn apply(&mut self, ups: &[LeafUpdate]) {
        // Unit tests warm every shard, so that the warm path is the one
        // they check (warming changes nothing but the cache).
        let warm = cfg!(test)
            || self.internals.len() * std::mem::size_of::<Internal>() >= WARM_SHARD_BYTES_MIN;
        if warm && ups.len() <= WARM_KEYS_MAX {
            self.warm(self.root, SHARD_BITS, ups);
        }
        let ((root, hash), _) = self.update((self.root, self.root_hash), SHARD_BITS, ups, warm);
        self.root = root;
        self.root_hash = hash;
    }

    /// The subtree `sub` (at `depth`) after `ups`, and whether its hash may
    /// have changed. `warm`: walk groups of paths ahead ([`Shard::warm`]).
    fn update(&mut self, sub: Sub, depth: usize, ups: &[LeafUpdate], warm: bool) -> (Sub, bool) {
        if ups.is_empty() {
            return (sub, false);
        }
        match sub.0.kind() {
            Node::Empty => {
                let r = self.build(depth, ups, None);
                (r, !r.0.is_empty())
            }
            Node::Leaf(i) => self.update_leaf(i, sub.1, depth, ups),
            Node::Internal(i) => {
                assert!(depth < PATH_BITS, "internal node below the last path bit");
                let split = ups.partition_point(|u| bit(&u.path, depth) == 0);
                let n = self.internals[i as usize];
                let (ups_l, ups_r) = ups.split_at(split);
                // The first group small enough to warm, warmed just before
                // its walk so that its nodes are still cached.
                let big = warm && ups.len() > WARM_KEYS_MAX;
                if big && ups_l.len() <= WARM_KEYS_MAX {
                    self.warm(n.children[0], depth + 1, ups_l);
                }
                let (l, cl) = self.update((n.children[0], n.hashes[0]), depth + 1, ups_l, warm);
                if big && ups_r.len() <= WARM_KEYS_MAX {
                    self.warm(n.children[1], depth + 1, ups_r);
                }
                let (r, cr) = self.update((n.children[1], n.hashes[1]), depth + 1, ups_r, warm);
                if !cl && !cr {
                    return (sub, false);
                }
                (self.join(Some(i), l, r), true)
            }
        }
    }

    /// Loads the nodes on the paths of `ups` below `root` (at `depth`), and
    /// their leaves, into the cache, [`WARM_LANES`] paths side by side.
    /// Read-only. The update walks one path after another, so on a large
    /// tree it waits for one cache miss per level (~75% of its time, by
    /// profile); these walks are independent of each other, so their misses
    /// overlap, and the update that follows finds its nodes cached.
    fn warm(&self, root: NodeRef, depth: usize, ups: &[LeafUpdate]) {
        let mut sink = 0usize;
        for group in ups.chunks(WARM_LANES) {
            let mut at = [root; WARM_LANES];
            let mut d = depth;
            let mut walking = true;
            while walking {
                walking = false;
                for (a, u) in at.iter_mut().zip(group) {
                    if let Node::Internal(i) = a.kind() {
                        // An internal node sits above the last path bit.
                        *a = self.internals[i as usize].children[bit(&u.path, d)];
                        walking = true;
                    }
                }
                d += 1;
            }
            for a in &at[..group.len()] {
                if let Node::Leaf(i) = a.kind() {
                    sink ^= usize::from(matches!(self.leaves[i as usize], StateKey::Kv(_)));
                }
            }
        }
        std::hint::black_box(sink);
    }

    /// `ups` reach the subtree that is the single leaf `i`, hash `hash`.
    fn update_leaf(&mut self, i: u32, hash: Hash, depth: usize, ups: &[LeafUpdate]) -> (Sub, bool) {
        let key = self.leaves[i as usize];
        match ups.iter().position(|u| u.key == key) {
            Some(_) if ups.len() == 1 => match ups[0].hash {
                Some(h) => ((NodeRef::leaf(i), h), h != hash),
                None => {
                    self.free_leaves.push(i);
                    (EMPTY_SUB, true)
                }
            },
            Some(_) => {
                // The old entry is rewritten or deleted by its update: build
                // from the updates alone.
                self.free_leaves.push(i);
                (self.build(depth, ups, None), true)
            }
            None => {
                if ups.iter().all(|u| u.hash.is_none()) {
                    // Deletes of keys that are not here.
                    return ((NodeRef::leaf(i), hash), false);
                }
                let old = OldLeaf {
                    slot: i,
                    path: key_path(&key),
                    hash,
                };
                (self.build(depth, ups, Some(old)), true)
            }
        }
    }

    /// Builds the subtree at `depth` holding the inserts among `ups` plus
    /// the existing leaf `old` (a key none of `ups` names).
    fn build(&mut self, depth: usize, ups: &[LeafUpdate], old: Option<OldLeaf>) -> Sub {
        let mut inserts = ups.iter().filter(|u| u.hash.is_some());
        let first = inserts.next();
        let count = usize::from(first.is_some()) + usize::from(old.is_some());
        if count == 0 {
            return EMPTY_SUB;
        }
        if count == 1 && inserts.next().is_none() {
            return match (old, first) {
                (Some(o), _) => (NodeRef::leaf(o.slot), o.hash),
                (None, Some(u)) => (self.alloc_leaf(u.key), u.hash.expect("an insert")),
                (None, None) => unreachable!("count is 1"),
            };
        }
        assert!(
            depth < PATH_BITS,
            "two keys with the same path (duplicate update?)"
        );
        let split = ups.partition_point(|u| bit(&u.path, depth) == 0);
        let (old_l, old_r) = match old {
            Some(o) if bit(&o.path, depth) == 1 => (None, old),
            _ => (old, None),
        };
        let l = self.build(depth + 1, &ups[..split], old_l);
        let r = self.build(depth + 1, &ups[split..], old_r);
        self.join(None, l, r)
    }

    /// The subtree over children `l` and `r`, in the internal slot `slot` if
    /// given (it is freed if the pair collapses to an empty subtree or a
    /// single leaf).
    fn join(&mut self, slot: Option<u32>, l: Sub, r: Sub) -> Sub {
        let collapsed = match (l.0.is_empty(), r.0.is_empty()) {
            (true, true) => Some(EMPTY_SUB),
            (true, false) if r.0.is_leaf() => Some(r),
            (false, true) if l.0.is_leaf() => Some(l),
            _ => None,
        };
        if let Some(c) = collapsed {
            if let Some(s) = slot {
                self.free_internals.push(s);
            }
            return c;
        }
        let node = Internal {
            hashes: [l.1, r.1],
            children: [l.0, r.0],
        };
        let hash = node.hash();
        let i = match slot {
            Some(s) => {
                self.internals[s as usize] = node;
                s
            }
            None => self.alloc_internal(node),
        };
        (NodeRef::internal(i), hash)
    }

    fn memory_bytes(&self) -> usize {
        self.internals.capacity() * std::mem::size_of::<Internal>()
            + self.leaves.capacity() * std::mem::size_of::<StateKey>()
            + (self.free_internals.capacity() + self.free_leaves.capacity()) * 4
    }

    /// Checks the shard's invariants (tests); `value_of` gives the leaves'
    /// values. Returns its key count.
    #[cfg(test)]
    fn check(&self, value_of: &dyn Fn(&StateKey) -> Option<StateValue>) -> usize {
        fn walk(
            s: &Shard,
            sub: Sub,
            depth: usize,
            prefix: &Path,
            value_of: &dyn Fn(&StateKey) -> Option<StateValue>,
            internals: &mut usize,
        ) -> usize {
            match sub.0.kind() {
                Node::Empty => {
                    assert_eq!(sub.1, EMPTY_HASH);
                    0
                }
                Node::Leaf(i) => {
                    let k = &s.leaves[i as usize];
                    let p = key_path(k);
                    assert!(same_prefix(&p, prefix, depth), "leaf off its path");
                    let v = value_of(k).expect("a leaf's key has a value");
                    assert_eq!(sub.1, entry_leaf_hash(&p, &v), "stale leaf hash");
                    1
                }
                Node::Internal(i) => {
                    *internals += 1;
                    let n = &s.internals[i as usize];
                    assert_eq!(sub.1, n.hash(), "stale internal hash");
                    let mut total = 0;
                    for b in 0..2 {
                        let mut p = *prefix;
                        p[depth / 8] &= !(0x80 >> (depth % 8));
                        p[depth / 8] |= (b as u8) << (7 - depth % 8);
                        total += walk(
                            s,
                            (n.children[b], n.hashes[b]),
                            depth + 1,
                            &p,
                            value_of,
                            internals,
                        );
                    }
                    assert!(total >= 2, "internal node over {total} keys");
                    total
                }
            }
        }
        // Every key below shares the shard's first bits: start from any
        // key's path.
        let mut internals = 0;
        let n = match self.root.kind() {
            Node::Empty => {
                assert_eq!(self.root_hash, EMPTY_HASH);
                0
            }
            _ => {
                let any = self.any_key(self.root);
                walk(
                    self,
                    (self.root, self.root_hash),
                    SHARD_BITS,
                    &key_path(&any),
                    value_of,
                    &mut internals,
                )
            }
        };
        assert_eq!(n, self.len(), "live leaves unreachable or double-counted");
        assert_eq!(
            internals,
            self.internals.len() - self.free_internals.len(),
            "internal slots leaked"
        );
        n
    }

    #[cfg(test)]
    fn any_key(&self, r: NodeRef) -> StateKey {
        match r.kind() {
            Node::Empty => unreachable!(),
            Node::Leaf(i) => self.leaves[i as usize],
            Node::Internal(i) => {
                let [l, r] = self.internals[i as usize].children;
                self.any_key(if l.is_empty() { r } else { l })
            }
        }
    }
}

/// An existing leaf a build places among new ones.
#[derive(Clone, Copy)]
struct OldLeaf {
    slot: u32,
    path: Path,
    hash: Hash,
}

/// A node of the levels above the shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TopKind {
    Empty,
    /// Exactly one key below: the node is that key's leaf.
    Leaf,
    Internal,
}

#[derive(Clone, Copy, Debug)]
struct TopNode {
    kind: TopKind,
    hash: Hash,
}

const TOP_EMPTY: TopNode = TopNode {
    kind: TopKind::Empty,
    hash: EMPTY_HASH,
};

/// The sparse Merkle tree. See the module docs.
#[derive(Clone)]
pub struct Smt {
    /// `SMT_SHARDS` arenas; a key lives in `shards[top SHARD_BITS bits of its path]`.
    shards: Vec<Shard>,
    /// `top[d]` holds the 2^d nodes at depth d (d = 0..=SHARD_BITS), kept
    /// current by every update; `top[SHARD_BITS]` are the shard roots.
    top: Vec<Vec<TopNode>>,
}

impl Default for Smt {
    fn default() -> Self {
        Self {
            shards: (0..SMT_SHARDS).map(|_| Shard::default()).collect(),
            top: (0..=SHARD_BITS).map(|d| vec![TOP_EMPTY; 1 << d]).collect(),
        }
    }
}

impl Smt {
    pub fn new() -> Self {
        Self::default()
    }

    /// The root hash.
    pub fn root(&self) -> StateRoot {
        StateRoot(self.top[0][0].hash)
    }

    /// Keys in the tree.
    pub fn len(&self) -> usize {
        self.shards.iter().map(Shard::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes held (vector capacities).
    pub fn memory_bytes(&self) -> usize {
        self.shards.iter().map(Shard::memory_bytes).sum::<usize>()
            + self.top.iter().map(|l| l.capacity()).sum::<usize>() * std::mem::size_of::<TopNode>()
    }

    /// Sets each key to its value (`None`, or an empty value, deletes it).
    /// A key may appear more than once only with the same value. Uses up to
    /// `workers` threads (the caller's included) when the batch is large
    /// enough to pay for them ([`PARALLEL_KEYS_PER_THREAD_MIN`]).
    pub fn apply(&mut self, entries: &[(StateKey, Option<StateValue>)], workers: usize) {
        self.apply_with(entries, workers, Fanout::Spawn(&[]));
    }

    /// [`Smt::apply`] with its threads taken from `fanout` (a pool's
    /// workers, or spawned ones).
    pub fn apply_with(
        &mut self,
        entries: &[(StateKey, Option<StateValue>)],
        workers: usize,
        fanout: Fanout<'_>,
    ) {
        let threads = workers
            .min(entries.len() / PARALLEL_KEYS_PER_THREAD_MIN)
            .min(fanout.max_workers());
        self.apply_on(entries, threads, fanout);
    }

    /// [`Smt::apply`] on exactly `threads` threads (1 to `SMT_SHARDS`).
    fn apply_on(
        &mut self,
        entries: &[(StateKey, Option<StateValue>)],
        threads: usize,
        fanout: Fanout<'_>,
    ) {
        if entries.is_empty() {
            return;
        }
        let workers = threads.clamp(1, SMT_SHARDS);
        // Phase 1: paths and leaf hashes, bucketed by shard, per thread.
        let batches: Vec<LeafBatch> = fanout.run(workers, |w| {
            let mine = &entries[chunk(entries.len(), workers, w)];
            let mut b = LeafBatch::with_capacity(mine.len());
            for (k, v) in mine {
                b.push(*k, v.as_ref());
            }
            b
        });
        // Phase 2: each thread applies whole shards, gathering their
        // updates from every batch.
        let batches: Vec<&LeafBatch> = batches.iter().collect();
        let sets = self.shard_sets(workers);
        fanout.run(workers, |w| {
            sets[w]
                .lock()
                .expect("poisoned")
                .take()
                .expect("one set per thread")
                .apply(&batches);
        });
        drop(sets);
        self.recompute_top();
    }

    /// Splits the shards into `parts` sets (whole shards, in order), one per
    /// worker of a batch update, each handed over once: apply each set's
    /// [`ShardSet::apply`], then [`Smt::finish_update`].
    pub(crate) fn shard_sets(
        &mut self,
        parts: usize,
    ) -> Vec<std::sync::Mutex<Option<ShardSet<'_>>>> {
        let mut rest = &mut self.shards[..];
        let mut first = 0;
        (0..parts)
            .map(|w| {
                let n = chunk(SMT_SHARDS, parts, w).len();
                let (mine, tail) = std::mem::take(&mut rest).split_at_mut(n);
                rest = tail;
                let set = ShardSet {
                    first,
                    shards: mine,
                };
                first += n;
                std::sync::Mutex::new(Some(set))
            })
            .collect()
    }

    /// Brings the levels above the shards up to date after [`ShardSet::apply`].
    pub(crate) fn finish_update(&mut self) {
        self.recompute_top();
    }

    /// Recombines the levels above the shards from the shard roots.
    fn recompute_top(&mut self) {
        for (s, shard) in self.shards.iter().enumerate() {
            self.top[SHARD_BITS][s] = match shard.root.kind() {
                Node::Empty => TOP_EMPTY,
                Node::Leaf(_) => TopNode {
                    kind: TopKind::Leaf,
                    hash: shard.root_hash,
                },
                Node::Internal(_) => TopNode {
                    kind: TopKind::Internal,
                    hash: shard.root_hash,
                },
            };
        }
        for d in (0..SHARD_BITS).rev() {
            for i in 0..(1 << d) {
                let (l, r) = (self.top[d + 1][2 * i], self.top[d + 1][2 * i + 1]);
                self.top[d][i] = match (l.kind, r.kind) {
                    (TopKind::Empty, TopKind::Empty) => TOP_EMPTY,
                    (TopKind::Empty, TopKind::Leaf) => r,
                    (TopKind::Leaf, TopKind::Empty) => l,
                    _ => TopNode {
                        kind: TopKind::Internal,
                        hash: internal_hash(&l.hash, &r.hash),
                    },
                };
            }
        }
    }

    /// A proof for `key` at the current root. `value_of` must return the
    /// value of any key in the tree (an absence proof may end at another
    /// key's leaf, whose value it carries).
    pub fn prove(
        &self,
        key: &StateKey,
        value_of: impl Fn(&StateKey) -> Option<StateValue>,
    ) -> Proof {
        let path = key_path(key);
        let mut siblings = Vec::new();
        let leaf_terminal = |leaf_key: &StateKey, siblings: Vec<Hash>| {
            if leaf_key == key {
                return Proof {
                    siblings,
                    terminal: Terminal::Leaf,
                };
            }
            let value = value_of(leaf_key).expect("every key in the tree has a value");
            Proof {
                siblings,
                terminal: Terminal::OtherLeaf {
                    path: key_path(leaf_key),
                    value: value.to_bytes(),
                },
            }
        };
        let prefix = |d: usize| -> usize {
            if d == 0 {
                0
            } else {
                (path[0] >> (8 - d)) as usize
            }
        };
        for d in 0..SHARD_BITS {
            let node = self.top[d][prefix(d)];
            match node.kind {
                TopKind::Empty => {
                    return Proof {
                        siblings,
                        terminal: Terminal::Empty,
                    }
                }
                TopKind::Leaf => {
                    // The one key under this prefix is the root leaf of one
                    // of the shards under it.
                    let span = 1 << (SHARD_BITS - d);
                    let first = prefix(d) * span;
                    let shard = self.shards[first..first + span]
                        .iter()
                        .find(|s| !s.root.is_empty())
                        .expect("a top leaf has a shard");
                    let Node::Leaf(i) = shard.root.kind() else {
                        unreachable!("a top leaf is a shard's root leaf")
                    };
                    return leaf_terminal(&shard.leaves[i as usize], siblings);
                }
                TopKind::Internal => siblings.push(self.top[d + 1][prefix(d + 1) ^ 1].hash),
            }
        }
        let shard = &self.shards[shard_of_path(&path)];
        let mut node = shard.root;
        let mut depth = SHARD_BITS;
        loop {
            match node.kind() {
                Node::Empty => {
                    return Proof {
                        siblings,
                        terminal: Terminal::Empty,
                    }
                }
                Node::Leaf(i) => return leaf_terminal(&shard.leaves[i as usize], siblings),
                Node::Internal(i) => {
                    let b = bit(&path, depth);
                    let n = &shard.internals[i as usize];
                    siblings.push(n.hashes[1 - b]);
                    node = n.children[b];
                    depth += 1;
                }
            }
        }
    }

    /// Checks every invariant (tests); `value_of` gives the keys' values.
    #[cfg(test)]
    pub(crate) fn check(&self, value_of: &dyn Fn(&StateKey) -> Option<StateValue>) {
        for s in &self.shards {
            s.check(value_of);
        }
        let mut again = self.clone();
        again.recompute_top();
        assert_eq!(again.root(), self.root());
    }
}

/// The root over `entries` computed from scratch, without a tree (for
/// checks: restart, tests). Entries must have distinct keys.
pub fn root_from_scratch<'a>(
    entries: impl Iterator<Item = (&'a StateKey, &'a StateValue)>,
) -> StateRoot {
    let mut leaves: Vec<(Path, Hash)> = entries
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| {
            let p = key_path(k);
            (p, entry_leaf_hash(&p, v))
        })
        .collect();
    leaves.sort_unstable_by(|a, b| path_order(&a.0, &b.0));
    fn node(leaves: &[(Path, Hash)], depth: usize) -> Hash {
        match leaves {
            [] => EMPTY_HASH,
            [one] => one.1,
            _ => {
                assert!(depth < PATH_BITS, "two keys with the same path");
                let split = leaves.partition_point(|l| bit(&l.0, depth) == 0);
                internal_hash(
                    &node(&leaves[..split], depth + 1),
                    &node(&leaves[split..], depth + 1),
                )
            }
        }
    }
    StateRoot(node(&leaves, 0))
}

/// `0..n` split into `parts` nearly equal ranges; range `i`.
fn chunk(n: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
    let base = n / parts;
    let extra = n % parts;
    let start = i * base + i.min(extra);
    start..start + base + usize::from(i < extra)
}

/// Where a proof's path ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Terminal {
    /// At the key's own leaf: the key is present (inclusion).
    Leaf,
    /// At an empty subtree: the key is absent.
    Empty,
    /// At another key's leaf, the only key under the path's prefix there:
    /// the key is absent.
    OtherLeaf { path: Path, value: Vec<u8> },
}

/// An inclusion or absence proof for one key against one root.
///
/// `siblings[i]` is the hash of the sibling of the path's node at depth
/// `i + 1` (the other child of its node at depth `i`); the path ends at
/// depth `siblings.len()` (at most [`PATH_BITS`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    pub siblings: Vec<Hash>,
    pub terminal: Terminal,
}

/// Why a proof was refused: malformed bytes or a failed verification.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("proof is not hex")]
    Hex,
    #[error("proof of {0} bytes exceeds {PROOF_BYTES_MAX}")]
    TooLong(usize),
    #[error("proof truncated: {0} bytes missing")]
    Truncated(usize),
    #[error("proof longer than its contents: {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("unknown proof version {0} (this build reads version {PROOF_VERSION})")]
    Version(u8),
    #[error("unknown proof terminal {0}")]
    TerminalTag(u8),
    #[error("proof depth {0} exceeds {PATH_BITS}")]
    Depth(usize),
    #[error("proof sibling bitmap has bits set past its depth")]
    BitmapPadding,
    #[error("proof lists an empty sibling hash explicitly")]
    ExplicitEmptySibling,
    #[error("proof value of {0} bytes exceeds {PROOF_VALUE_BYTES_MAX}")]
    ValueLength(usize),
    #[error("a value was expected, but the proof shows the key is absent")]
    ExpectedPresent,
    #[error("absence was expected, but the proof shows the key is present")]
    ExpectedAbsent,
    #[error("the proof's other leaf has the key's own path")]
    OtherLeafIsKey,
    #[error("the proof's other leaf is not under the key's path prefix")]
    OtherLeafOffPath,
    #[error("the proof is not in canonical form (its deepest sibling is empty)")]
    NonCanonical,
    #[error("the proof leads to root {computed}, not the expected {expected}")]
    RootMismatch { computed: String, expected: String },
}

const TERMINAL_LEAF: u8 = 0;
const TERMINAL_EMPTY: u8 = 1;
const TERMINAL_OTHER: u8 = 2;

impl Proof {
    /// Depth at which the path ends.
    pub fn depth(&self) -> usize {
        self.siblings.len()
    }

    /// True for an inclusion proof.
    pub fn is_inclusion(&self) -> bool {
        self.terminal == Terminal::Leaf
    }

    /// The binary form, version 1 (all integers little-endian):
    ///
    /// ```text
    /// u8   version (1)
    /// u8   terminal: 0 leaf (inclusion), 1 empty (absence), 2 other leaf (absence)
    /// u16  depth d (0..=256)
    /// ceil(d/8) bytes: sibling bitmap, bit i (byte i/8, bit i%8 from the least
    ///      significant) set when sibling i is non-empty; unused bits zero
    /// 32 bytes per non-empty sibling, from depth 0 down
    /// terminal 2 only: 32-byte path of the other leaf, u8 value length, value bytes
    /// ```
    ///
    /// Empty siblings (common near the leaves of a sparse region) cost one
    /// bit. The encoding is canonical: [`Proof::decode`] rejects anything
    /// else, so a proof has exactly one encoding.
    pub fn encode(&self) -> Vec<u8> {
        let d = self.siblings.len();
        assert!(d <= PATH_BITS, "proof deeper than the tree");
        let mut out = Vec::with_capacity(4 + d.div_ceil(8) + d * 32 + 32 + 1 + 16);
        out.push(PROOF_VERSION);
        out.push(match self.terminal {
            Terminal::Leaf => TERMINAL_LEAF,
            Terminal::Empty => TERMINAL_EMPTY,
            Terminal::OtherLeaf { .. } => TERMINAL_OTHER,
        });
        out.extend_from_slice(&(d as u16).to_le_bytes());
        let mut bitmap = vec![0u8; d.div_ceil(8)];
        for (i, s) in self.siblings.iter().enumerate() {
            if *s != EMPTY_HASH {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        out.extend_from_slice(&bitmap);
        for s in self.siblings.iter().filter(|s| **s != EMPTY_HASH) {
            out.extend_from_slice(s);
        }
        if let Terminal::OtherLeaf { path, value } = &self.terminal {
            assert!(value.len() <= PROOF_VALUE_BYTES_MAX, "proof value too long");
            out.extend_from_slice(path);
            out.push(value.len() as u8);
            out.extend_from_slice(value);
        }
        out
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.encode())
    }

    /// Decodes untrusted bytes (see [`Proof::encode`] for the format).
    pub fn decode(b: &[u8]) -> Result<Proof, ProofError> {
        let mut r = Reader { b, at: 0 };
        let version = r.u8()?;
        if version != PROOF_VERSION {
            return Err(ProofError::Version(version));
        }
        let tag = r.u8()?;
        if tag > TERMINAL_OTHER {
            return Err(ProofError::TerminalTag(tag));
        }
        let d = u16::from_le_bytes(r.take(2)?.try_into().expect("2 bytes")) as usize;
        if d > PATH_BITS {
            return Err(ProofError::Depth(d));
        }
        let bitmap = r.take(d.div_ceil(8))?;
        if d % 8 != 0 && bitmap[d / 8] >> (d % 8) != 0 {
            return Err(ProofError::BitmapPadding);
        }
        let mut siblings = Vec::with_capacity(d);
        for i in 0..d {
            if bitmap[i / 8] & (1 << (i % 8)) != 0 {
                let s: Hash = r.take(32)?.try_into().expect("32 bytes");
                if s == EMPTY_HASH {
                    return Err(ProofError::ExplicitEmptySibling);
                }
                siblings.push(s);
            } else {
                siblings.push(EMPTY_HASH);
            }
        }
        let terminal = match tag {
            TERMINAL_LEAF => Terminal::Leaf,
            TERMINAL_EMPTY => Terminal::Empty,
            _ => {
                let path: Path = r.take(32)?.try_into().expect("32 bytes");
                let len = r.u8()? as usize;
                if len > PROOF_VALUE_BYTES_MAX {
                    return Err(ProofError::ValueLength(len));
                }
                Terminal::OtherLeaf {
                    path,
                    value: r.take(len)?.to_vec(),
                }
            }
        };
        if r.at != b.len() {
            return Err(ProofError::TrailingBytes(b.len() - r.at));
        }
        Ok(Proof { siblings, terminal })
    }

    pub fn from_hex(s: &str) -> Result<Proof, ProofError> {
        if s.len() > 2 * PROOF_BYTES_MAX {
            return Err(ProofError::TooLong(s.len() / 2));
        }
        let b = hex::decode(s.trim()).map_err(|_| ProofError::Hex)?;
        Proof::decode(&b)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProofError> {
        let end = self.at.saturating_add(n);
        if end > self.b.len() {
            return Err(ProofError::Truncated(end - self.b.len()));
        }
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ProofError> {
        Ok(self.take(1)?[0])
    }
}

/// Checks that `proof` shows `key` holding `value` (`None`, or an empty
/// value, meaning absent) under `root`.
pub fn verify(
    root: &StateRoot,
    key: &StateKey,
    value: Option<&StateValue>,
    proof: &Proof,
) -> Result<(), ProofError> {
    let value = value.filter(|v| !v.is_empty());
    let path = key_path(key);
    let d = proof.siblings.len();
    if d > PATH_BITS {
        return Err(ProofError::Depth(d));
    }
    let mut h = match (&proof.terminal, value) {
        (Terminal::Leaf, Some(v)) => entry_leaf_hash(&path, v),
        (Terminal::Leaf, None) => return Err(ProofError::ExpectedAbsent),
        (_, Some(_)) => return Err(ProofError::ExpectedPresent),
        (Terminal::Empty, None) => EMPTY_HASH,
        (Terminal::OtherLeaf { path: other, value }, None) => {
            if *other == path {
                return Err(ProofError::OtherLeafIsKey);
            }
            if !same_prefix(other, &path, d) {
                return Err(ProofError::OtherLeafOffPath);
            }
            if value.len() > PROOF_VALUE_BYTES_MAX {
                return Err(ProofError::ValueLength(value.len()));
            }
            leaf_hash(other, value)
        }
    };
    // In a canonical tree the node next to where a path ends is never
    // empty: a lone leaf would have floated up, an empty pair collapsed.
    if d > 0 && proof.siblings[d - 1] == EMPTY_HASH {
        return Err(ProofError::NonCanonical);
    }
    for i in (0..d).rev() {
        h = if bit(&path, i) == 0 {
            internal_hash(&h, &proof.siblings[i])
        } else {
            internal_hash(&proof.siblings[i], &h)
        };
    }
    if h != root.0 {
        return Err(ProofError::RootMismatch {
            computed: hex::encode(h),
            expected: root.to_hex(),
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "smt_tests.rs"]
mod tests;
