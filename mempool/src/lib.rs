//! The transaction pool: verified transactions wait here, per sender in
//! nonce order, until a block takes them.
//!
//! Two pools share the same rules (dedup by digest, per-sender nonce order,
//! count and byte bounds, in-flight tracking until commit):
//!
//! - [`ShardedPool`] ([`sharded`]): the node's pool. Many verify tiles
//!   insert into it without locks (a CAS on a shared [`budget`] and a push on
//!   a per-shard lock-free inbox) while the mempool tile drains it; it adds
//!   fee replacement, expiry and returning uncommitted batches.
//!   docs/mempool.md describes its design and bounds.
//! - [`Pool`]: a single-owner state machine, below: the reference model.
//!   It is simple enough to be obviously right, and the sharded pool is
//!   checked against it by property tests (as the parallel executor is
//!   checked against the sequential one).
//!
//! The single-owner pool:
//!
//! ```text
//!  insert(tx, ticket) ──▶ per-sender queue (BTreeMap nonce → tx)
//!                              │ nonce == next_nonce
//!                              ▼
//!                        ready senders (FIFO, round robin)
//!                              │ pop_batch
//!                              ▼
//!                         in flight (digest → sender, ticket) ──▶ block
//!                              │ handle_committed(receipts)
//!                              ▼
//!                         tickets answered, nonces advanced
//! ```
//!
//! Invariants (checked by `check_invariants` in tests):
//! - a sender's `next_nonce` = its committed nonce + its in-flight count;
//! - a sender is in the ready queue iff it has a pending tx at `next_nonce`;
//! - `digests` holds exactly the pending and in-flight digests;
//! - `len`/`bytes` count exactly the pending transactions.
//!
//! The pool is a plain single-owner state machine (sans-IO, no clock, no
//! locks). `M` is whatever the caller attaches to a
//! transaction (the ingress ticket that answers the client).

pub mod batch;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use velox_exec::{AccountId, RejectReason, TxDigest, VerifiedTx};

pub mod budget;
pub mod sharded;

pub use budget::{Bound, Budget};
pub use sharded::{Full, NonceSource, ShardedPool, ShardedPoolConfig, ShardedPoolCounters};

/// Pool bounds.
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    /// Most pending transactions.
    pub txs_max: usize,
    /// Most bytes held by pending transactions (as counted by
    /// `Tx::mem_bytes`).
    pub bytes_max: usize,
    /// How far past a sender's next nonce a transaction may be and still wait
    /// for the gap to fill.
    pub nonce_ahead_max: u64,
    /// Most transactions taken from one sender per round-robin turn.
    pub sender_burst_max: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            txs_max: 200_000,
            bytes_max: 128 << 20,
            nonce_ahead_max: 1024,
            sender_burst_max: 16,
        }
    }
}

struct Sender<M> {
    /// Next nonce to hand out: committed nonce + in-flight count.
    next_nonce: u64,
    pending: BTreeMap<u64, (VerifiedTx, M)>,
    in_flight: u32,
    in_ready: bool,
    /// A transaction of this sender failed at execution: re-read the
    /// committed nonce once nothing is in flight.
    resync: bool,
}

/// The pool. See the crate docs for its invariants.
pub struct Pool<M> {
    config: PoolConfig,
    senders: HashMap<AccountId, Sender<M>>,
    ready: VecDeque<AccountId>,
    digests: HashSet<TxDigest>,
    in_flight: HashMap<TxDigest, (AccountId, M)>,
    len: usize,
    bytes: usize,
}

/// What happened to a transaction the pool had taken: settled by a commit,
/// or (with an error) rejected at admission, evicted, expired or replaced.
#[derive(Debug)]
pub struct Settled<M> {
    pub meta: M,
    pub digest: TxDigest,
    pub outcome: Result<(), RejectReason>,
}

impl<M> Pool<M> {
    pub fn new(config: PoolConfig) -> Self {
        Self {
            config,
            senders: HashMap::new(),
            ready: VecDeque::new(),
            digests: HashSet::new(),
            in_flight: HashMap::new(),
            len: 0,
            bytes: 0,
        }
    }

    /// Pending transactions (not yet handed to a block).
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
    pub fn contains(&self, d: &TxDigest) -> bool {
        self.digests.contains(d)
    }
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Admits `tx`. `committed_nonce` is asked only for a sender the pool
    /// does not track yet. On rejection the metadata comes back.
    pub fn insert(
        &mut self,
        tx: VerifiedTx,
        meta: M,
        committed_nonce: impl FnOnce(&AccountId) -> u64,
    ) -> Result<(), (RejectReason, M)> {
        let digest = tx.digest();
        if self.digests.contains(&digest) {
            return Err((RejectReason::Duplicate, meta));
        }
        let size = tx.mem_bytes();
        let sender_id = tx.sender();
        let nonce = tx.nonce();
        let full = self.len >= self.config.txs_max || self.bytes + size > self.config.bytes_max;
        let sender = self.senders.entry(sender_id).or_insert_with(|| Sender {
            next_nonce: committed_nonce(&sender_id),
            pending: BTreeMap::new(),
            in_flight: 0,
            in_ready: false,
            resync: false,
        });
        let reason = if nonce < sender.next_nonce {
            if nonce < sender.next_nonce - sender.in_flight as u64 {
                Some(RejectReason::NonceTooLow)
            } else {
                Some(RejectReason::NonceTaken)
            }
        } else if sender.pending.contains_key(&nonce) {
            Some(RejectReason::NonceTaken)
        } else if nonce - sender.next_nonce >= self.config.nonce_ahead_max {
            Some(RejectReason::NonceTooFarAhead)
        } else if full {
            Some(RejectReason::PoolFull)
        } else {
            None
        };
        if let Some(r) = reason {
            if sender.pending.is_empty() && sender.in_flight == 0 {
                self.senders.remove(&sender_id);
            }
            return Err((r, meta));
        }
        let is_next = nonce == sender.next_nonce;
        sender.pending.insert(nonce, (tx, meta));
        if is_next && !sender.in_ready {
            sender.in_ready = true;
            self.ready.push_back(sender_id);
        }
        self.digests.insert(digest);
        self.len += 1;
        self.bytes += size;
        Ok(())
    }

    /// Takes up to `txs_max` ready transactions (at most `bytes_max` bytes of
    /// encoded transactions), round robin over senders, each sender's in nonce
    /// order. They stay tracked as in flight until `handle_committed`.
    pub fn pop_batch(&mut self, txs_max: usize, bytes_max: usize) -> Vec<VerifiedTx> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        'outer: while out.len() < txs_max {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let sender = self.senders.get_mut(&id).expect("ready sender is tracked");
            debug_assert!(sender.in_ready);
            let mut taken = 0;
            while taken < self.config.sender_burst_max && out.len() < txs_max {
                let Some(entry) = sender.pending.first_entry() else {
                    break;
                };
                if *entry.key() != sender.next_nonce {
                    break;
                }
                if bytes + entry.get().0.bytes().len() > bytes_max && !out.is_empty() {
                    // Put the sender back at the front: it is still ready.
                    self.ready.push_front(id);
                    break 'outer;
                }
                let (tx, meta) = entry.remove();
                bytes += tx.bytes().len();
                self.len -= 1;
                self.bytes -= tx.mem_bytes();
                sender.next_nonce += 1;
                sender.in_flight += 1;
                self.in_flight.insert(tx.digest(), (id, meta));
                out.push(tx);
                taken += 1;
            }
            let still_ready = sender
                .pending
                .first_key_value()
                .is_some_and(|(n, _)| *n == sender.next_nonce);
            if still_ready {
                self.ready.push_back(id);
            } else {
                sender.in_ready = false;
            }
        }
        out
    }

    /// Settles in-flight transactions whose commit is durable. Receipts for
    /// digests the pool does not hold in flight (another validator's batch)
    /// are ignored. `committed_nonce` is asked for senders that need a resync
    /// after a failed transaction.
    pub fn handle_committed(
        &mut self,
        receipts: impl IntoIterator<Item = (TxDigest, Result<(), RejectReason>)>,
        committed_nonce: impl Fn(&AccountId) -> u64,
    ) -> (Vec<Settled<M>>, Vec<Settled<M>>) {
        let mut settled = Vec::new();
        let mut touched = Vec::new();
        for (digest, outcome) in receipts {
            let Some((id, meta)) = self.in_flight.remove(&digest) else {
                continue;
            };
            self.digests.remove(&digest);
            let s = self
                .senders
                .get_mut(&id)
                .expect("in-flight sender is tracked");
            s.in_flight -= 1;
            if outcome.is_err() {
                s.resync = true;
            }
            touched.push(id);
            settled.push(Settled {
                meta,
                digest,
                outcome,
            });
        }
        let mut evicted = Vec::new();
        for id in touched {
            let Some(s) = self.senders.get_mut(&id) else {
                continue;
            };
            if s.in_flight > 0 {
                continue;
            }
            if s.resync {
                s.resync = false;
                s.next_nonce = committed_nonce(&id);
                // Pending transactions now below the committed nonce can
                // never execute.
                while let Some(e) = s.pending.first_entry() {
                    if *e.key() >= s.next_nonce {
                        break;
                    }
                    let (tx, meta) = e.remove();
                    self.len -= 1;
                    self.bytes -= tx.mem_bytes();
                    self.digests.remove(&tx.digest());
                    evicted.push(Settled {
                        meta,
                        digest: tx.digest(),
                        outcome: Err(RejectReason::NonceTooLow),
                    });
                }
                let ready = s
                    .pending
                    .first_key_value()
                    .is_some_and(|(n, _)| *n == s.next_nonce);
                if ready && !s.in_ready {
                    s.in_ready = true;
                    self.ready.push_back(id);
                } else if !ready && s.in_ready {
                    // Rare (failure path only): an O(ready senders) removal.
                    s.in_ready = false;
                    self.ready.retain(|r| *r != id);
                }
            }
            if s.pending.is_empty() && s.in_flight == 0 {
                debug_assert!(!s.in_ready);
                self.senders.remove(&id);
            }
        }
        (settled, evicted)
    }

    /// Panics if an invariant is broken (tests and debug checks).
    pub fn check_invariants(&self) {
        let mut len = 0;
        let mut bytes = 0;
        let mut digests = 0;
        for (id, s) in &self.senders {
            len += s.pending.len();
            bytes += s
                .pending
                .values()
                .map(|(t, _)| t.mem_bytes())
                .sum::<usize>();
            digests += s.pending.len();
            let ready = s
                .pending
                .first_key_value()
                .is_some_and(|(n, _)| *n == s.next_nonce);
            assert_eq!(ready, s.in_ready, "sender {id:?} ready flag");
            assert_eq!(
                s.in_ready,
                self.ready.contains(id),
                "sender {id:?} ready queue"
            );
            let flying = self.in_flight.values().filter(|(i, _)| i == id).count();
            assert_eq!(
                flying, s.in_flight as usize,
                "sender {id:?} in-flight count"
            );
            assert!(s.pending.keys().all(|n| *n >= s.next_nonce));
        }
        digests += self.in_flight.len();
        assert_eq!(len, self.len);
        assert_eq!(bytes, self.bytes);
        assert_eq!(digests, self.digests.len());
    }
}

#[cfg(test)]
mod sharded_tests;
#[cfg(test)]
mod tests;
