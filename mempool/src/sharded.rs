//! The concurrent pool: many verify threads insert, batch builders drain,
//! at the same time, and no producer ever waits on a lock.
//!
//! ```text
//!  verify threads (any number)                       batch builders / mempool driver
//!  ───────────────────────────                       ───────────────────────────────
//!  insert(tx, meta, now_ms)
//!    1. Budget::try_reserve   ── one CAS on a packed (txs, bytes) word;
//!       (count + bytes)          refused → Err(Full { bound: Txs | Bytes })
//!    2. shard = h(sender) % N
//!    3. inbox[shard].push     ── crossbeam ArrayQueue (lock-free, bounded);
//!                                full → release, Err(Full { bound: Inbox })
//!                      │
//!                      ▼        handle_inbox(out)      ── per shard: lock the core,
//!   ┌──────────── shard core (one Mutex, never taken by producers) ─────────┐
//!   │ slots (chunked slab: bytes, digest tag, meta, stamp, arrival links)   │
//!   │ by_digest: digest → slot        (dedup; pending and in flight)        │
//!   │ by_nonce:  (sender, nonce) → slot  (nonce order, replacement)         │
//!   │ senders:   committed, next_nonce, pending, in_flight                  │
//!   │ ready:     senders whose next nonce is pending (round robin)          │
//!   │ arrival:   slots oldest first (expiry)                                │
//!   └───────────────────────────────────────────────────────────────────────┘
//!                      │ pop_batch(txs_max, bytes_max) ── rotating over shards
//!                      ▼
//!            in flight (slot kept, bytes kept) ── handle_committed ──▶ settled, budget released
//!                      │ return_uncommitted (batch timed out)
//!                      └──▶ pending again, in nonce order
//! ```
//!
//! A sender's transactions all live in one shard, so per-sender nonce order
//! is a single-owner question answered under that shard's lock; shards share
//! nothing but the budget. Admission verdicts other than `Full` (duplicate,
//! stale nonce, replacement, …) are known only when the shard's inbox is
//! drained: they come out of `handle_inbox` as [`Settled`] records carrying the
//! caller's metadata, so every transaction `insert` accepted is accounted
//! for exactly once — admitted and later settled, expired, evicted or
//! replaced, or rejected at admission — and never silently dropped.
//!
//! Memory: the budget counts every transaction the pool holds (queued in an
//! inbox, pending, or in flight) with a conservative per-entry size
//! ([`ShardedPool::entry_bytes`]), so `bytes_max` bounds the pool's memory
//! apart from the inboxes, which are allocated once up front
//! (`shards × inbox_depth` entries).
//!
//! Time and randomness come in as arguments: `now_ms` on insert and expiry,
//! `hash_seed` in the config. The pool never reads a clock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crossbeam::queue::ArrayQueue;
use hashbrown::HashTable;
use velox_exec::tx::{TX_HEADER_BYTES, TX_SIGNATURE_BYTES};
use velox_exec::{AccountId, RejectReason, Tx, TxDigest, VerifiedTx};

use crate::budget::{Bound, Budget};
use crate::Settled;

/// Where the nonce, fee and sender sit in a transaction's bytes (see the
/// wire format in `velox_exec::tx`); the pool reads them in place rather than
/// keeping a decoded copy.
const NONCE_AT: usize = 16;
const FEE_AT: usize = 24;
const SENDER_AT: usize = 32;
const _: () = assert!(SENDER_AT + 32 == TX_HEADER_BYTES);

/// Transactions per slab chunk: growth allocates one chunk and moves
/// nothing; a shard leaves at most one chunk partly unused (256 × 48 bytes
/// = 12 KiB with an 8-byte `M`).
const SLAB_CHUNK: usize = 256;
/// "No slot" in the arrival list.
const NIL: u32 = u32::MAX;
/// Marks an in-flight slot in `Slot::sender`.
const IN_FLIGHT: u32 = 1 << 31;
/// Hash-table bytes charged per entry and table: 4-byte index + 1 control
/// byte, doubled for the worst load factor after growth (7/16).
const TABLE_BYTES_PER_ENTRY: usize = 12;
/// Ready-queue and slab free-list bytes charged per entry: a 4-byte index
/// in each, doubled for `Vec`/`VecDeque` growth.
const QUEUE_BYTES_PER_ENTRY: usize = 16;

/// Sharded pool bounds. Every field is a bound or a tuning knob; see
/// docs/mempool.md for how they relate.
#[derive(Clone, Copy, Debug)]
pub struct ShardedPoolConfig {
    /// Shards, a power of two. More shards mean less contention between
    /// drainers and smaller per-shard tables; each costs one inbox.
    pub shards: usize,
    /// Inbox depth per shard: transactions queued between `insert` and the
    /// next `handle_inbox`. Allocated up front: `shards × inbox_depth ×`
    /// ~72 bytes (16 × 512 → 576 KiB); 8,192 queued transactions is ~8 ms
    /// of input at 1 M/s, several drainer turns.
    pub inbox_depth: usize,
    /// Most transactions held (queued, pending and in flight).
    pub txs_max: usize,
    /// Most bytes held, as counted by [`ShardedPool::entry_bytes`].
    pub bytes_max: usize,
    /// How far past a sender's next nonce a transaction may be and still wait
    /// for the gap to fill.
    pub nonce_ahead_max: u64,
    /// Most transactions taken from one sender per round-robin turn.
    pub sender_burst_max: usize,
    /// A pending transaction older than this (by the `now_ms` it was
    /// inserted with) is evicted by `handle_expiry`. Below 2^31 ms (24 days):
    /// stamps are kept as wrapping 32-bit milliseconds.
    pub age_max_ms: u64,
    /// Keys the hash tables and the shard choice, so that senders cannot
    /// grind keys or digests that pile into one bucket. Pass a random value.
    pub hash_seed: u64,
}

impl Default for ShardedPoolConfig {
    fn default() -> Self {
        Self {
            shards: 16,
            inbox_depth: 512,
            txs_max: 200_000,
            bytes_max: 128 << 20,
            nonce_ahead_max: 1024,
            sender_burst_max: 16,
            age_max_ms: 600_000,
            hash_seed: 0x5eed_0f7e_10c5,
        }
    }
}

/// `insert` refused the transaction; it comes back with its metadata. The
/// caller applies backpressure (waits for room) or rejects with
/// `RejectReason::PoolFull`.
#[derive(Debug)]
pub struct Full<M> {
    pub tx: VerifiedTx,
    pub meta: M,
    pub bound: Bound,
}

/// Reads a sender's committed nonce (the next nonce it may use) from
/// committed state. Asked when the pool first sees a sender and after a
/// failed transaction.
pub type NonceSource = Box<dyn Fn(&AccountId) -> u64 + Send + Sync>;

/// Event counters, monotonic. `full_*` count refused inserts per bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardedPoolCounters {
    pub queued: u64,
    pub full_txs: u64,
    pub full_bytes: u64,
    pub full_inbox: u64,
    pub admitted: u64,
    pub rejected: u64,
    pub replaced: u64,
    pub expired: u64,
    pub evicted: u64,
    pub popped: u64,
    pub settled: u64,
    pub returned: u64,
    /// Transactions that failed only because an earlier nonce of their
    /// sender was still in flight; their sender then waits for that one.
    pub gap_waits: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    full_txs: AtomicU64,
    full_bytes: AtomicU64,
    full_inbox: AtomicU64,
    admitted: AtomicU64,
    rejected: AtomicU64,
    replaced: AtomicU64,
    expired: AtomicU64,
    evicted: AtomicU64,
    popped: AtomicU64,
    settled: AtomicU64,
    returned: AtomicU64,
    gap_waits: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    if n > 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// The concurrent pool. `M` is what the caller attaches to a transaction
/// (the ingress ticket). See the module docs for the design.
pub struct ShardedPool<M> {
    config: ShardedPoolConfig,
    budget: Budget,
    shards: Box<[Shard<M>]>,
    nonces: NonceSource,
    /// Where the next `pop_batch` starts, so shards take turns first.
    next_shard: AtomicUsize,
    /// Pending (admitted, not in flight) transactions over all shards.
    pending: AtomicUsize,
    /// In-flight transactions over all shards.
    in_flight: AtomicUsize,
    counters: Counters,
}

struct Shard<M> {
    inbox: ArrayQueue<Incoming<M>>,
    core: Mutex<Core<M>>,
}

/// A transaction between `insert` and admission: only its bytes and digest.
struct Incoming<M> {
    bytes: Box<[u8]>,
    digest: TxDigest,
    meta: M,
    stamp: u32,
}

/// One held transaction. 40 bytes plus `M` (checked in tests).
struct Slot<M> {
    /// `None` when the slot is free.
    tx: Option<(Box<[u8]>, M)>,
    /// The first 8 bytes of the digest. The full digest is a blake3 of the
    /// bytes, recomputed where it is needed (a tag match, a pop, an
    /// eviction): keeping it would cost 24 more bytes per transaction.
    tag: u64,
    /// Sender index in `Core::senders`, `| IN_FLIGHT` once handed out.
    sender: u32,
    /// `now_ms` at admission as wrapping u32, non-decreasing along the
    /// arrival list.
    stamp: u32,
    /// Arrival list links (older, newer), `NIL` at the ends.
    prev: u32,
    next: u32,
}

impl<M> Slot<M> {
    fn vacant() -> Self {
        Self {
            tx: None,
            tag: 0,
            sender: 0,
            stamp: 0,
            prev: NIL,
            next: NIL,
        }
    }
    fn bytes(&self) -> &[u8] {
        &self.tx.as_ref().expect("slot is live").0
    }
    fn nonce(&self) -> u64 {
        read_u64(self.bytes(), NONCE_AT)
    }
    fn digest(&self) -> TxDigest {
        digest_of(self.bytes())
    }
    fn sender_index(&self) -> u32 {
        self.sender & !IN_FLIGHT
    }
    fn in_flight(&self) -> bool {
        self.sender & IN_FLIGHT != 0
    }
}

/// Per-sender state. Invariants (checked by `check_invariants`):
/// - `pending` and `in_flight` count this sender's slots of each kind;
/// - every slot's nonce is in `[lo, hi)`;
/// - `next_nonce` never names an in-flight slot;
/// - the sender is in the ready queue iff `in_ready`; it is freed only when
///   it holds no slot and is not in the ready queue.
struct Sender {
    id: AccountId,
    /// The sender's next nonce by committed state, as far as the pool knows.
    committed: u64,
    /// The next nonce to hand out.
    next_nonce: u64,
    /// Lower bound of tracked nonces (scans start here).
    lo: u64,
    /// One past the highest nonce ever tracked while this record lived.
    hi: u64,
    pending: u32,
    in_flight: u32,
    in_ready: bool,
    /// A transaction failed at execution: re-read `committed` once nothing
    /// is in flight.
    resync: bool,
    /// A later nonce failed (`BadNonce`) because the transaction at
    /// `committed` was still in flight: while that one stays in flight,
    /// nothing past it leaves again (it would only fail again, once per
    /// batch). Cleared when the transaction at `committed` settles.
    gap_wait: bool,
}

impl Sender {
    fn vacant() -> Self {
        Self::new(AccountId([0; 32]), 0)
    }
    fn new(id: AccountId, committed: u64) -> Self {
        Self {
            id,
            committed,
            next_nonce: committed,
            lo: committed,
            hi: committed,
            pending: 0,
            in_flight: 0,
            in_ready: false,
            resync: false,
            gap_wait: false,
        }
    }
}

/// A slab in fixed chunks: indices are stable, growth never moves entries.
struct Slab<T> {
    chunks: Vec<Box<[T]>>,
    free: Vec<u32>,
    used: u32,
    vacant: fn() -> T,
}

impl<T> Slab<T> {
    fn new(vacant: fn() -> T) -> Self {
        Self {
            chunks: Vec::new(),
            free: Vec::new(),
            used: 0,
            vacant,
        }
    }
    fn alloc(&mut self, v: T) -> u32 {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                if self.used as usize == self.chunks.len() * SLAB_CHUNK {
                    let vacant = self.vacant;
                    self.chunks
                        .push((0..SLAB_CHUNK).map(|_| vacant()).collect());
                }
                self.used += 1;
                assert!(self.used < IN_FLIGHT, "slab index space exhausted");
                self.used - 1
            }
        };
        self[i] = v;
        i
    }
    fn release(&mut self, i: u32) -> T {
        let vacant = (self.vacant)();
        let v = std::mem::replace(&mut self[i], vacant);
        self.free.push(i);
        v
    }
}

impl<T> std::ops::Index<u32> for Slab<T> {
    type Output = T;
    fn index(&self, i: u32) -> &T {
        &self.chunks[i as usize / SLAB_CHUNK][i as usize % SLAB_CHUNK]
    }
}
impl<T> std::ops::IndexMut<u32> for Slab<T> {
    fn index_mut(&mut self, i: u32) -> &mut T {
        &mut self.chunks[i as usize / SLAB_CHUNK][i as usize % SLAB_CHUNK]
    }
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn sender_of(b: &[u8]) -> AccountId {
    AccountId(b[SENDER_AT..SENDER_AT + 32].try_into().expect("32 bytes"))
}

/// A keyed mix (xor-multiply-xorshift over 64-bit words). Not a
/// cryptographic hash: it keeps precomputed collisions (ground keys or
/// digests) from piling into one bucket when the seed is secret.
fn mix(seed: u64, words: &[u64]) -> u64 {
    let mut h = seed ^ 0x9E37_79B9_7F4A_7C15;
    for w in words {
        h = (h ^ w).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 31;
    }
    h.wrapping_mul(0x94D0_49BB_1331_11EB) ^ (h >> 29)
}

fn words32(b: &[u8; 32]) -> [u64; 4] {
    std::array::from_fn(|i| read_u64(b, i * 8))
}

/// The digest's first 8 bytes: what a slot keeps of it.
fn tag_of(d: &TxDigest) -> u64 {
    read_u64(&d.0, 0)
}
/// Recomputes a held transaction's digest from its bytes (header and
/// payload; see `velox_exec::tx`).
fn digest_of(b: &[u8]) -> TxDigest {
    TxDigest(*blake3::hash(&b[..b.len() - TX_SIGNATURE_BYTES]).as_bytes())
}
/// Table hash of a digest, from its tag only (so a rehash needs no blake3).
fn hash_tag(seed: u64, tag: u64) -> u64 {
    mix(seed, &[tag])
}
fn hash_id(seed: u64, id: &AccountId) -> u64 {
    mix(seed ^ 0x1D, &words32(&id.0))
}
fn hash_nonce(seed: u64, sender: u32, nonce: u64) -> u64 {
    mix(seed ^ 0x2E, &[sender as u64, nonce])
}

/// The state of one shard, owned by whoever holds its lock.
struct Core<M> {
    seed: u64,
    slots: Slab<Slot<M>>,
    by_digest: HashTable<u32>,
    by_nonce: HashTable<u32>,
    senders: Slab<Sender>,
    by_sender: HashTable<u32>,
    /// Senders with a pending transaction at `next_nonce`, round robin.
    /// May hold senders that stopped being ready (expiry, settlement); the
    /// pop finds out and drops them.
    ready: VecDeque<u32>,
    /// Oldest and newest slot of the arrival list.
    head: u32,
    tail: u32,
    last_stamp: u32,
    pending: usize,
    in_flight: usize,
}

/// What a shard operation gave back to the budget and the gauges.
#[derive(Default)]
struct Tally {
    freed_txs: u64,
    freed_bytes: u64,
    admitted: u64,
    rejected: u64,
    replaced: u64,
    expired: u64,
    evicted: u64,
    settled: u64,
    returned: u64,
    gap_waits: u64,
}

impl<M> Core<M> {
    fn new(seed: u64) -> Self {
        Self {
            seed,
            slots: Slab::new(Slot::vacant),
            by_digest: HashTable::new(),
            by_nonce: HashTable::new(),
            senders: Slab::new(Sender::vacant),
            by_sender: HashTable::new(),
            ready: VecDeque::new(),
            head: NIL,
            tail: NIL,
            last_stamp: 0,
            pending: 0,
            in_flight: 0,
        }
    }

    fn find_digest(&self, d: &TxDigest) -> Option<u32> {
        let slots = &self.slots;
        let tag = tag_of(d);
        // A tag match is (all but) always the transaction itself; the
        // re-hash makes a crafted 64-bit prefix collision harmless.
        self.by_digest
            .find(hash_tag(self.seed, tag), |&i| {
                slots[i].tag == tag && slots[i].digest() == *d
            })
            .copied()
    }

    fn find_nonce(&self, sender: u32, nonce: u64) -> Option<u32> {
        let slots = &self.slots;
        self.by_nonce
            .find(hash_nonce(self.seed, sender, nonce), |&i| {
                slots[i].sender_index() == sender && slots[i].nonce() == nonce
            })
            .copied()
    }

    fn find_sender(&self, id: &AccountId) -> Option<u32> {
        let senders = &self.senders;
        self.by_sender
            .find(hash_id(self.seed, id), |&i| senders[i].id == *id)
            .copied()
    }

    fn add_sender(&mut self, id: AccountId, committed: u64) -> u32 {
        let si = self.senders.alloc(Sender::new(id, committed));
        let (seed, senders) = (self.seed, &self.senders);
        self.by_sender
            .insert_unique(hash_id(seed, &id), si, |&i| hash_id(seed, &senders[i].id));
        si
    }

    /// Frees a sender that holds nothing and is not queued.
    fn maybe_free_sender(&mut self, si: u32) {
        let s = &self.senders[si];
        if s.pending > 0 || s.in_flight > 0 || s.in_ready {
            return;
        }
        let id = s.id;
        let senders = &self.senders;
        self.by_sender
            .find_entry(hash_id(self.seed, &id), |&i| senders[i].id == id)
            .expect("live sender is indexed")
            .remove();
        self.senders.release(si);
    }

    fn link_tail(&mut self, i: u32) {
        self.slots[i].prev = self.tail;
        self.slots[i].next = NIL;
        if self.tail == NIL {
            self.head = i;
        } else {
            let t = self.tail;
            self.slots[t].next = i;
        }
        self.tail = i;
    }

    fn unlink(&mut self, i: u32) {
        let (p, n) = (self.slots[i].prev, self.slots[i].next);
        if p == NIL {
            self.head = n;
        } else {
            self.slots[p].next = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.slots[n].prev = p;
        }
    }

    /// Stamps are kept non-decreasing along the arrival list even if
    /// producers' clocks disagree slightly: a later arrival never looks older.
    fn next_stamp(&mut self, stamp: u32) -> u32 {
        if (stamp.wrapping_sub(self.last_stamp) as i32) > 0 {
            self.last_stamp = stamp;
        }
        self.last_stamp
    }

    /// Admits one queued transaction, or rejects it into `out`.
    fn admit(
        &mut self,
        cfg: &ShardedPoolConfig,
        nonces: &NonceSource,
        mut inc: Incoming<M>,
        out: &mut Vec<Settled<M>>,
        on_admit: &mut dyn FnMut(&TxDigest, &mut M),
        t: &mut Tally,
    ) {
        let entry_bytes = ShardedPool::<M>::entry_bytes;
        let reject =
            |inc: Incoming<M>, r: RejectReason, t: &mut Tally, out: &mut Vec<Settled<M>>| {
                t.rejected += 1;
                t.freed_txs += 1;
                t.freed_bytes += entry_bytes(inc.bytes.len());
                out.push(Settled {
                    meta: inc.meta,
                    digest: inc.digest,
                    outcome: Err(r),
                });
            };
        if self.find_digest(&inc.digest).is_some() {
            return reject(inc, RejectReason::Duplicate, t, out);
        }
        let id = sender_of(&inc.bytes);
        let nonce = read_u64(&inc.bytes, NONCE_AT);
        let fee = read_u64(&inc.bytes, FEE_AT);
        let si = match self.find_sender(&id) {
            Some(si) => si,
            None => self.add_sender(id, nonces(&id)),
        };
        let s = &self.senders[si];
        let existing = self.find_nonce(si, nonce);
        let verdict = if nonce < s.committed {
            Err(RejectReason::NonceTooLow)
        } else if let Some(old) = existing {
            let o = &self.slots[old];
            if !o.in_flight() && fee > read_u64(o.bytes(), FEE_AT) {
                Ok(Some(old))
            } else {
                Err(RejectReason::NonceTaken)
            }
        } else if nonce < s.next_nonce {
            // Handed out and not settled yet (failed, awaiting resync).
            Err(RejectReason::NonceTaken)
        } else if nonce - s.next_nonce >= cfg.nonce_ahead_max {
            Err(RejectReason::NonceTooFarAhead)
        } else {
            Ok(None)
        };
        let stamp = self.next_stamp(inc.stamp);
        if verdict.is_ok() {
            on_admit(&inc.digest, &mut inc.meta);
        }
        match verdict {
            Err(r) => {
                self.maybe_free_sender(si);
                reject(inc, r, t, out);
            }
            Ok(Some(old)) => {
                // Replacement: the new transaction takes the old one's slot,
                // so its place in the sender's nonce order (and the ready
                // queue) is unchanged; it moves to the young end of the
                // arrival list.
                let old_digest = self.slots[old].digest();
                self.by_digest
                    .find_entry(hash_tag(self.seed, self.slots[old].tag), |&i| i == old)
                    .expect("live slot is indexed")
                    .remove();
                let (old_bytes, old_meta) = self.slots[old]
                    .tx
                    .replace((inc.bytes, inc.meta))
                    .expect("live slot");
                self.slots[old].tag = tag_of(&inc.digest);
                self.slots[old].stamp = stamp;
                self.unlink(old);
                self.link_tail(old);
                let (seed, slots) = (self.seed, &self.slots);
                self.by_digest
                    .insert_unique(hash_tag(seed, tag_of(&inc.digest)), old, |&i| {
                        hash_tag(seed, slots[i].tag)
                    });
                t.replaced += 1;
                t.freed_txs += 1;
                t.freed_bytes += entry_bytes(old_bytes.len());
                out.push(Settled {
                    meta: old_meta,
                    digest: old_digest,
                    outcome: Err(RejectReason::Replaced),
                });
            }
            Ok(None) => {
                let tag = tag_of(&inc.digest);
                let i = self.slots.alloc(Slot {
                    tx: Some((inc.bytes, inc.meta)),
                    tag,
                    sender: si,
                    stamp,
                    prev: NIL,
                    next: NIL,
                });
                self.link_tail(i);
                let (seed, slots) = (self.seed, &self.slots);
                self.by_digest
                    .insert_unique(hash_tag(seed, tag), i, |&j| hash_tag(seed, slots[j].tag));
                self.by_nonce
                    .insert_unique(hash_nonce(seed, si, nonce), i, |&j| {
                        hash_nonce(seed, slots[j].sender_index(), slots[j].nonce())
                    });
                let s = &mut self.senders[si];
                s.pending += 1;
                s.lo = s.lo.min(nonce);
                s.hi = s.hi.max(nonce + 1);
                let ready = nonce == s.next_nonce && !s.in_ready;
                if ready {
                    s.in_ready = true;
                    self.ready.push_back(si);
                }
                self.pending += 1;
                t.admitted += 1;
            }
        }
    }

    /// Makes in-flight `slot` pending again; the sender's next nonce moves
    /// back to it, so its transactions leave again in nonce order. Returns
    /// the sender's index (reconcile it afterwards).
    fn back_to_pending(&mut self, slot: u32) -> u32 {
        let nonce = self.slots[slot].nonce();
        let si = self.slots[slot].sender_index();
        self.slots[slot].sender = si;
        let s = &mut self.senders[si];
        s.in_flight -= 1;
        s.pending += 1;
        s.next_nonce = s.next_nonce.min(nonce);
        self.in_flight -= 1;
        self.pending += 1;
        si
    }

    /// Whether `nonce` lies past the sender's committed nonce and the pool
    /// holds the transaction at the committed nonce (the gap will fill).
    fn waits_on_held_gap(&self, si: u32, nonce: u64) -> bool {
        let committed = self.senders[si].committed;
        nonce > committed && self.find_nonce(si, committed).is_some()
    }

    /// Moves `next_nonce` past in-flight slots (left there by
    /// `return_uncommitted` of an earlier nonce); true if the sender then
    /// has a pending transaction at `next_nonce`.
    fn settle_next(&mut self, si: u32) -> bool {
        loop {
            let next = self.senders[si].next_nonce;
            match self.find_nonce(si, next) {
                None => return false,
                Some(i) if self.slots[i].in_flight() => self.senders[si].next_nonce += 1,
                Some(_) => return true,
            }
        }
    }

    /// The sender waits for its in-flight transaction at the committed
    /// nonce to settle before anything later leaves (see `gap_wait`).
    fn blocked_on_gap(&self, si: u32) -> bool {
        let s = &self.senders[si];
        s.gap_wait
            && self
                .find_nonce(si, s.committed)
                .is_some_and(|i| self.slots[i].in_flight())
    }

    /// Queues the sender if it became ready.
    fn requeue(&mut self, si: u32) {
        if self.settle_next(si) && !self.blocked_on_gap(si) && !self.senders[si].in_ready {
            self.senders[si].in_ready = true;
            self.ready.push_back(si);
        }
    }

    /// Takes ready transactions round robin over senders, each sender's in
    /// nonce order, until `txs_max` are in `out` or the next one would
    /// exceed `bytes_max` (counting encoded bytes). Returns true if the byte
    /// bound stopped it.
    fn pop(
        &mut self,
        burst_max: usize,
        txs_max: usize,
        bytes_max: usize,
        out: &mut Vec<VerifiedTx>,
        bytes: &mut usize,
    ) -> bool {
        while out.len() < txs_max {
            let Some(si) = self.ready.pop_front() else {
                return false;
            };
            debug_assert!(self.senders[si].in_ready);
            if self.blocked_on_gap(si) {
                // Requeued when its transaction at the committed nonce
                // settles or returns (`reconcile`).
                self.senders[si].in_ready = false;
                continue;
            }
            let mut taken = 0;
            while taken < burst_max && out.len() < txs_max && self.settle_next(si) {
                let next = self.senders[si].next_nonce;
                let i = self.find_nonce(si, next).expect("settle_next found it");
                let len = self.slots[i].bytes().len();
                if *bytes + len > bytes_max && !out.is_empty() {
                    // Still ready: back to the front for the next batch.
                    self.ready.push_front(si);
                    return true;
                }
                *bytes += len;
                let slot = &mut self.slots[i];
                slot.sender |= IN_FLIGHT;
                let tx =
                    Tx::decode(slot.bytes()).expect("pool holds only bytes that decoded before");
                out.push(VerifiedTx::from_trusted(tx));
                let s = &mut self.senders[si];
                s.next_nonce += 1;
                s.pending -= 1;
                s.in_flight += 1;
                self.pending -= 1;
                self.in_flight += 1;
                taken += 1;
            }
            if self.settle_next(si) {
                self.ready.push_back(si);
            } else {
                self.senders[si].in_ready = false;
                self.maybe_free_sender(si);
            }
        }
        false
    }

    /// Removes a live slot from every index; returns its bytes, meta and
    /// digest (`known` if the caller has it, else recomputed).
    fn remove_slot(&mut self, i: u32, known: Option<TxDigest>) -> (Box<[u8]>, M, TxDigest) {
        let digest = known.unwrap_or_else(|| self.slots[i].digest());
        debug_assert_eq!(digest, self.slots[i].digest());
        let tag = self.slots[i].tag;
        let si = self.slots[i].sender_index();
        let nonce = self.slots[i].nonce();
        let flying = self.slots[i].in_flight();
        self.by_digest
            .find_entry(hash_tag(self.seed, tag), |&j| j == i)
            .expect("live slot is indexed by digest")
            .remove();
        self.by_nonce
            .find_entry(hash_nonce(self.seed, si, nonce), |&j| j == i)
            .expect("live slot is indexed by nonce")
            .remove();
        self.unlink(i);
        let s = &mut self.senders[si];
        if flying {
            s.in_flight -= 1;
            self.in_flight -= 1;
        } else {
            s.pending -= 1;
            self.pending -= 1;
        }
        let slot = self.slots.release(i);
        let (bytes, meta) = slot.tx.expect("live slot");
        (bytes, meta, digest)
    }

    /// After settlement, return or eviction touched `si`: resync from
    /// committed state if due, evict pending transactions below the
    /// committed nonce, requeue or free the sender.
    fn reconcile(
        &mut self,
        si: u32,
        nonces: &NonceSource,
        entry_bytes: &dyn Fn(usize) -> u64,
        out: &mut Vec<Settled<M>>,
        t: &mut Tally,
    ) {
        let s = &mut self.senders[si];
        if s.resync && s.in_flight == 0 {
            s.resync = false;
            s.committed = nonces(&s.id);
            s.next_nonce = s.committed;
        }
        let s = &mut self.senders[si];
        s.next_nonce = s.next_nonce.max(s.committed);
        // Pending below the committed nonce can never execute. Scan from
        // `lo`, which then moves up: each nonce is scanned about once over
        // the sender's life.
        let (lo, end) = (s.lo, s.committed.min(s.hi));
        let mut new_lo = s.committed.max(lo);
        for n in lo..end {
            let Some(i) = self.find_nonce(si, n) else {
                continue;
            };
            if self.slots[i].in_flight() {
                new_lo = new_lo.min(n);
                continue;
            }
            let (bytes, meta, digest) = self.remove_slot(i, None);
            t.evicted += 1;
            t.freed_txs += 1;
            t.freed_bytes += entry_bytes(bytes.len());
            out.push(Settled {
                meta,
                digest,
                outcome: Err(RejectReason::NonceTooLow),
            });
        }
        self.senders[si].lo = new_lo;
        self.requeue(si);
        self.maybe_free_sender(si);
    }
}

impl<M> ShardedPool<M> {
    /// A pool with `config`'s bounds; `nonces` reads committed nonces.
    pub fn new(config: ShardedPoolConfig, nonces: NonceSource) -> Self {
        assert!(config.shards.is_power_of_two(), "shards must be 2^k");
        assert!(config.inbox_depth > 0 && config.sender_burst_max > 0);
        assert!(config.nonce_ahead_max > 0);
        assert!(config.age_max_ms < 1 << 31, "age_max_ms must be < 2^31");
        let shards = (0..config.shards)
            .map(|_| Shard {
                inbox: ArrayQueue::new(config.inbox_depth),
                core: Mutex::new(Core::new(config.hash_seed)),
            })
            .collect();
        Self {
            budget: Budget::new(config.txs_max as u64, config.bytes_max as u64),
            config,
            shards,
            nonces,
            next_shard: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &ShardedPoolConfig {
        &self.config
    }

    /// Bytes the budget charges for a transaction of `tx_len` encoded
    /// bytes: the bytes themselves, its slot, its two table entries and a
    /// sender record (as if every transaction had its own sender), so that
    /// `bytes_max` bounds real memory.
    pub fn entry_bytes(tx_len: usize) -> u64 {
        (tx_len
            + std::mem::size_of::<Slot<M>>()
            + 2 * TABLE_BYTES_PER_ENTRY
            + std::mem::size_of::<Sender>()
            + TABLE_BYTES_PER_ENTRY
            + QUEUE_BYTES_PER_ENTRY) as u64
    }

    fn shard_of(&self, id: &AccountId) -> usize {
        (hash_id(self.config.hash_seed ^ 0x5A4D, id) >> 32) as usize & (self.config.shards - 1)
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Core<M>> {
        self.shards[i].core.lock().expect("shard core poisoned")
    }

    /// Queues `tx` for admission. Lock-free: one compare-exchange on the
    /// budget and one push on the sender's shard inbox. `Ok` means the pool
    /// took the transaction; its admission verdict comes out of
    /// `handle_inbox` (only rejections and replacements are reported).
    /// `Err(Full)` hands it back untouched.
    // The refused transaction comes back by value: boxing `Full` would add
    // an allocation to exactly the overload path that must stay cheap.
    #[allow(clippy::result_large_err)]
    pub fn insert(&self, tx: VerifiedTx, meta: M, now_ms: u64) -> Result<(), Full<M>> {
        let cost = Self::entry_bytes(tx.bytes().len());
        let shard = &self.shards[self.shard_of(&tx.sender())];
        // Cheap early check; the push below is the real one.
        let refused = if shard.inbox.is_full() {
            Err(Bound::Inbox)
        } else {
            self.budget.try_reserve(cost)
        };
        if let Err(bound) = refused {
            self.count_full(bound);
            return Err(Full { tx, meta, bound });
        }
        let digest = tx.digest();
        let inc = Incoming {
            bytes: tx.into_tx().into_bytes(),
            digest,
            meta,
            stamp: now_ms as u32,
        };
        match shard.inbox.push(inc) {
            Ok(()) => {
                add(&self.counters.queued, 1);
                Ok(())
            }
            Err(inc) => {
                self.budget.release(1, cost);
                self.count_full(Bound::Inbox);
                let tx = Tx::decode_with_digest(inc.bytes, inc.digest)
                    .expect("bytes of a verified transaction decode");
                Err(Full {
                    tx: VerifiedTx::from_trusted(tx),
                    meta: inc.meta,
                    bound: Bound::Inbox,
                })
            }
        }
    }

    fn count_full(&self, bound: Bound) {
        let c = match bound {
            Bound::Txs => &self.counters.full_txs,
            Bound::Bytes => &self.counters.full_bytes,
            Bound::Inbox => &self.counters.full_inbox,
        };
        add(c, 1);
    }

    fn finish(
        &self,
        t: Tally,
        pending_before: usize,
        pending_after: usize,
        flying: (usize, usize),
    ) {
        self.budget.release(t.freed_txs, t.freed_bytes);
        if pending_after >= pending_before {
            self.pending
                .fetch_add(pending_after - pending_before, Ordering::Relaxed);
        } else {
            self.pending
                .fetch_sub(pending_before - pending_after, Ordering::Relaxed);
        }
        if flying.1 >= flying.0 {
            self.in_flight
                .fetch_add(flying.1 - flying.0, Ordering::Relaxed);
        } else {
            self.in_flight
                .fetch_sub(flying.0 - flying.1, Ordering::Relaxed);
        }
        let c = &self.counters;
        add(&c.admitted, t.admitted);
        add(&c.rejected, t.rejected);
        add(&c.replaced, t.replaced);
        add(&c.expired, t.expired);
        add(&c.evicted, t.evicted);
        add(&c.settled, t.settled);
        add(&c.returned, t.returned);
        add(&c.gap_waits, t.gap_waits);
    }

    /// Runs `f` on shard `i`'s core, then settles the budget and gauges.
    fn with_core<R>(&self, i: usize, f: impl FnOnce(&mut Core<M>, &mut Tally) -> R) -> R {
        let mut core = self.lock(i);
        let (p0, f0) = (core.pending, core.in_flight);
        let mut t = Tally::default();
        let r = f(&mut core, &mut t);
        let (p1, f1) = (core.pending, core.in_flight);
        drop(core);
        self.finish(t, p0, p1, (f0, f1));
        r
    }

    /// Drains every shard's inbox into its core (at most `inbox_depth` per
    /// shard per call, the bound on one turn's work). Rejections at
    /// admission and replaced transactions are appended to `out`. Returns
    /// how many transactions were taken from the inboxes.
    pub fn handle_inbox(&self, out: &mut Vec<Settled<M>>) -> usize {
        self.handle_inbox_with(out, &mut |_, _| {})
    }

    /// [`Self::handle_inbox`], calling `on_admit` with each admitted
    /// transaction's digest and metadata (under its shard's lock: keep it
    /// short), e.g. to answer a client that asked only for admission.
    pub fn handle_inbox_with(
        &self,
        out: &mut Vec<Settled<M>>,
        on_admit: &mut dyn FnMut(&TxDigest, &mut M),
    ) -> usize {
        let mut taken = 0;
        for i in 0..self.shards.len() {
            if self.shards[i].inbox.is_empty() {
                continue;
            }
            taken += self.with_core(i, |core, t| {
                let inbox = &self.shards[i].inbox;
                let mut n = 0;
                while n < self.config.inbox_depth {
                    let Some(inc) = inbox.pop() else { break };
                    core.admit(&self.config, &self.nonces, inc, out, on_admit, t);
                    n += 1;
                }
                n
            });
        }
        taken
    }

    /// Takes up to `txs_max` ready transactions (at most `bytes_max` encoded
    /// bytes, but always at least one if any is ready), shards in rotating
    /// order, senders round robin within a shard, each sender's in nonce
    /// order. They stay held as in flight until `handle_committed` or
    /// `return_uncommitted`.
    pub fn pop_batch(&self, txs_max: usize, bytes_max: usize) -> Vec<VerifiedTx> {
        let n = self.shards.len();
        let start = self.next_shard.fetch_add(1, Ordering::Relaxed);
        let mut out = Vec::new();
        let mut bytes = 0;
        for k in 0..n {
            if out.len() >= txs_max {
                break;
            }
            let full = self.with_core((start + k) & (n - 1), |core, _| {
                core.pop(
                    self.config.sender_burst_max,
                    txs_max,
                    bytes_max,
                    &mut out,
                    &mut bytes,
                )
            });
            if full {
                break;
            }
        }
        add(&self.counters.popped, out.len() as u64);
        out
    }

    /// Groups items by the shard of their sender.
    fn by_shard<T>(
        &self,
        items: impl IntoIterator<Item = (AccountId, T)>,
    ) -> Vec<Vec<(AccountId, T)>> {
        let mut per: Vec<Vec<(AccountId, T)>> =
            (0..self.shards.len()).map(|_| Vec::new()).collect();
        for (id, x) in items {
            per[self.shard_of(&id)].push((id, x));
        }
        per
    }

    /// Settles transactions whose commit is durable: `(sender, digest,
    /// outcome)` per committed transaction. Digests the pool does not hold
    /// (another validator's transactions) are ignored; a pending copy of a
    /// transaction someone else committed is settled too. Settled
    /// transactions, and pending ones that fell below their sender's
    /// committed nonce (`NonceTooLow`), are appended to `out`.
    pub fn handle_committed(
        &self,
        receipts: impl IntoIterator<Item = (AccountId, TxDigest, Result<(), RejectReason>)>,
        out: &mut Vec<Settled<M>>,
    ) {
        let per = self.by_shard(receipts.into_iter().map(|(id, d, o)| (id, (d, o))));
        for (i, items) in per.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            self.with_core(i, |core, t| {
                let mut touched = Vec::new();
                for (_, (digest, outcome)) in items {
                    let Some(slot) = core.find_digest(&digest) else {
                        continue;
                    };
                    let si = core.slots[slot].sender_index();
                    let nonce = core.slots[slot].nonce();
                    if outcome == Err(RejectReason::BadNonce)
                        && core.slots[slot].in_flight()
                        && core.waits_on_held_gap(si, nonce)
                    {
                        // It failed only because an earlier nonce of its
                        // sender, which this pool holds, had not committed
                        // yet (that one's batch was returned). A rejected
                        // transaction wrote nothing, so it goes back to
                        // pending and leaves again after the gap; its client
                        // hears the final outcome then.
                        // Until the gap settles, nothing past it leaves
                        // again (it would fail again, batch after batch).
                        core.back_to_pending(slot);
                        core.senders[si].gap_wait = true;
                        t.returned += 1;
                        t.gap_waits += 1;
                        touched.push(si);
                        continue;
                    }
                    let (bytes, meta, digest) = core.remove_slot(slot, Some(digest));
                    let s = &mut core.senders[si];
                    if nonce == s.committed {
                        s.gap_wait = false;
                    }
                    match outcome {
                        Ok(()) => s.committed = s.committed.max(nonce + 1),
                        Err(_) => s.resync = true,
                    }
                    t.settled += 1;
                    t.freed_txs += 1;
                    t.freed_bytes += Self::entry_bytes(bytes.len());
                    out.push(Settled {
                        meta,
                        digest,
                        outcome,
                    });
                    touched.push(si);
                }
                touched.sort_unstable();
                touched.dedup();
                for si in touched {
                    core.reconcile(si, &self.nonces, &Self::entry_bytes, out, t);
                }
            });
        }
    }

    /// Puts in-flight transactions of batches that will never commit (a
    /// sealed batch timed out) back to pending, `(sender, digest)` each.
    /// Each sender's next nonce moves back to its lowest returned nonce, so
    /// they leave again in nonce order. Digests not in flight are ignored.
    /// Evictions this causes (a failed sender's resync) go to `out`.
    pub fn return_uncommitted(
        &self,
        txs: impl IntoIterator<Item = (AccountId, TxDigest)>,
        out: &mut Vec<Settled<M>>,
    ) -> usize {
        let per = self.by_shard(txs);
        let mut returned = 0;
        for (i, items) in per.into_iter().enumerate() {
            if items.is_empty() {
                continue;
            }
            returned += self.with_core(i, |core, t| {
                let mut touched = Vec::new();
                for (_, digest) in items {
                    let Some(slot) = core.find_digest(&digest) else {
                        continue;
                    };
                    if !core.slots[slot].in_flight() {
                        continue;
                    }
                    touched.push(core.back_to_pending(slot));
                    t.returned += 1;
                }
                touched.sort_unstable();
                touched.dedup();
                for &si in &touched {
                    core.reconcile(si, &self.nonces, &Self::entry_bytes, out, t);
                }
                t.returned
            }) as usize;
        }
        returned
    }

    /// Evicts pending transactions admitted more than `age_max_ms` before
    /// `now_ms` (in-flight ones wait for their batch). They are appended to
    /// `out` with `RejectReason::Expired`. Returns how many.
    pub fn handle_expiry(&self, now_ms: u64, out: &mut Vec<Settled<M>>) -> usize {
        let now = now_ms as u32;
        let age_max = self.config.age_max_ms as u32;
        let mut expired = 0;
        for i in 0..self.shards.len() {
            expired += self.with_core(i, |core, t| {
                let mut touched = Vec::new();
                let mut cur = core.head;
                while cur != NIL {
                    let next = core.slots[cur].next;
                    if now.wrapping_sub(core.slots[cur].stamp) < age_max {
                        break;
                    }
                    if !core.slots[cur].in_flight() {
                        touched.push(core.slots[cur].sender_index());
                        let (bytes, meta, digest) = core.remove_slot(cur, None);
                        t.expired += 1;
                        t.freed_txs += 1;
                        t.freed_bytes += Self::entry_bytes(bytes.len());
                        out.push(Settled {
                            meta,
                            digest,
                            outcome: Err(RejectReason::Expired),
                        });
                    }
                    cur = next;
                }
                touched.sort_unstable();
                touched.dedup();
                for si in touched {
                    // Not in the ready queue and empty: free. A queued one is
                    // freed by the pop that finds it no longer ready.
                    core.maybe_free_sender(si);
                }
                t.expired
            }) as usize;
        }
        expired
    }

    /// Pending (admitted, not in flight) transactions.
    pub fn len(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
    /// Transactions in inboxes, not yet admitted.
    pub fn queued(&self) -> usize {
        self.shards.iter().map(|s| s.inbox.len()).sum()
    }
    /// (transactions, bytes) held under the budget: queued, pending and in
    /// flight.
    pub fn held(&self) -> (u64, u64) {
        self.budget.held()
    }
    pub fn counters(&self) -> ShardedPoolCounters {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ShardedPoolCounters {
            queued: l(&c.queued),
            full_txs: l(&c.full_txs),
            full_bytes: l(&c.full_bytes),
            full_inbox: l(&c.full_inbox),
            admitted: l(&c.admitted),
            rejected: l(&c.rejected),
            replaced: l(&c.replaced),
            expired: l(&c.expired),
            evicted: l(&c.evicted),
            popped: l(&c.popped),
            settled: l(&c.settled),
            returned: l(&c.returned),
            gap_waits: l(&c.gap_waits),
        }
    }

    /// Whether an admitted transaction (pending or in flight) has this
    /// digest. Locks each shard in turn (a digest does not name its shard):
    /// for queries, not for the hot path.
    pub fn contains(&self, d: &TxDigest) -> bool {
        (0..self.shards.len()).any(|i| self.lock(i).find_digest(d).is_some())
    }

    /// Whether the pool holds an admitted transaction (pending or in
    /// flight) with exactly `tx`'s bytes, signature included (the digest
    /// leaves the signature out, so a copy with another signature is not
    /// it). For the hot path: it locks only the sender's shard, and never
    /// waits: `None` when the shard is busy (the caller goes on as if it
    /// were unknown). Transactions still in the inbox are not seen.
    pub fn try_holds(&self, tx: &Tx) -> Option<bool> {
        let i = self.shard_of(&tx.sender());
        match self.shards[i].core.try_lock() {
            Ok(core) => Some(
                core.find_digest(&tx.digest())
                    .is_some_and(|s| core.slots[s].bytes() == tx.bytes()),
            ),
            Err(std::sync::TryLockError::WouldBlock) => None,
            Err(std::sync::TryLockError::Poisoned(_)) => None,
        }
    }

    /// Runs `f` while `sender`'s shard is locked (tests of `try_holds`).
    #[cfg(test)]
    pub(crate) fn with_shard_locked<R>(&self, sender: &AccountId, f: impl FnOnce() -> R) -> R {
        let _held = self.lock(self.shard_of(sender));
        f()
    }

    /// Panics if an invariant is broken. Call when no other thread uses the
    /// pool (tests): it also checks the budget against what is held.
    pub fn check_invariants(&self) {
        let (mut txs, mut bytes, mut pending, mut flying) = (0u64, 0u64, 0usize, 0usize);
        for (k, shard) in self.shards.iter().enumerate() {
            let core = self.lock(k);
            let queued = shard.inbox.len() as u64;
            txs += queued;
            // Queued bytes are not visible without popping; count them via
            // the budget difference below only when the inboxes are empty.
            assert_eq!(queued, 0, "check_invariants wants drained inboxes");
            let mut per_sender: std::collections::HashMap<u32, (u32, u32)> = Default::default();
            let (mut live, mut cur, mut last_stamp) = (0usize, core.head, None::<u32>);
            let mut prev = NIL;
            while cur != NIL {
                let s = &core.slots[cur];
                assert!(s.tx.is_some(), "arrival list holds a free slot");
                assert_eq!(s.prev, prev, "arrival back link");
                if let Some(l) = last_stamp {
                    assert!((s.stamp.wrapping_sub(l) as i32) >= 0, "stamps out of order");
                }
                last_stamp = Some(s.stamp);
                let e = per_sender.entry(s.sender_index()).or_default();
                if s.in_flight() {
                    e.1 += 1;
                } else {
                    e.0 += 1;
                }
                assert_eq!(s.tag, tag_of(&s.digest()));
                assert_eq!(core.find_digest(&s.digest()), Some(cur));
                assert_eq!(core.find_nonce(s.sender_index(), s.nonce()), Some(cur));
                let snd = &core.senders[s.sender_index()];
                assert!(s.nonce() >= snd.lo && s.nonce() < snd.hi, "nonce window");
                txs += 1;
                bytes += Self::entry_bytes(s.bytes().len());
                live += 1;
                prev = cur;
                cur = s.next;
            }
            assert_eq!(core.tail, prev);
            assert_eq!(live, core.by_digest.len());
            assert_eq!(live, core.by_nonce.len());
            let mut p = 0;
            let mut f = 0;
            for &si in core.by_sender.iter() {
                let s = &core.senders[si];
                let (sp, sf) = per_sender.get(&si).copied().unwrap_or_default();
                assert_eq!(
                    (s.pending, s.in_flight),
                    (sp, sf),
                    "sender {:?} counts",
                    s.id
                );
                assert!(
                    s.pending + s.in_flight > 0 || s.in_ready,
                    "empty sender kept"
                );
                let queued = core.ready.iter().filter(|&&r| r == si).count();
                assert_eq!(queued, s.in_ready as usize, "sender {:?} ready queue", s.id);
                if let Some(i) = core.find_nonce(si, s.next_nonce) {
                    assert!(
                        !core.slots[i].in_flight(),
                        "next_nonce names an in-flight slot"
                    );
                    assert!(
                        s.in_ready || core.blocked_on_gap(si),
                        "sender {:?} ready but not queued",
                        s.id
                    );
                }
                p += s.pending as usize;
                f += s.in_flight as usize;
            }
            assert_eq!(
                per_sender.len(),
                core.by_sender
                    .iter()
                    .filter(|&&si| {
                        let s = &core.senders[si];
                        s.pending + s.in_flight > 0
                    })
                    .count()
            );
            assert_eq!((p, f), (core.pending, core.in_flight));
            pending += p;
            flying += f;
        }
        assert_eq!(self.budget.held(), (txs, bytes), "budget matches holdings");
        assert_eq!(self.len(), pending);
        assert_eq!(self.in_flight(), flying);
    }
}

#[cfg(test)]
pub(crate) fn slot_size<M>() -> usize {
    std::mem::size_of::<Slot<M>>()
}
#[cfg(test)]
pub(crate) fn header_offsets() -> (usize, usize, usize) {
    (NONCE_AT, FEE_AT, SENDER_AT)
}
