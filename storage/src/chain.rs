//! The chain's records on top of a [`Store`].

use std::sync::Arc;

use velox_exec::{
    Account, BlockOutput, RejectReason, State, StateKey, StateRoot, StateValue, TxDigest,
};

use crate::cache::{AccountCache, AccountCacheStats, Lookup};
use crate::{Cf, Store, StoreError, WriteBatch};

const KEY_LAST_COMMIT: &[u8] = b"last_commit";
const KEY_GENESIS: &[u8] = b"genesis";
const KEY_COMMIT_PREFIX: &[u8] = b"commit/";
/// Commits below this index have been pruned (blocks, txs, commit meta).
const KEY_COMMITS_PRUNED_BELOW: &[u8] = b"commits_pruned_below";
/// Consensus-log rounds below this have been pruned (dag, batches).
const KEY_CONSENSUS_PRUNED_BELOW: &[u8] = b"consensus_pruned_below";
/// Rounds at or below this are never signed by this validator (set when it
/// joined consensus from its peers after losing its data).
const KEY_SIGNED_ROUND_FLOOR: &[u8] = b"signed_round_floor";
/// Set by `velox snapshot restore`: the commit index the state came from.
const KEY_RESTORED_FROM: &[u8] = b"restored_from";
/// A restored directory's leaders of the commits before its first (from
/// the snapshot's consensus section): (commit index u64 ‖ round u64 ‖
/// author u32 ‖ digest 32) × n, LE.
const KEY_RESTORED_LEADERS: &[u8] = b"restored_leaders";
/// Commits pruned per write batch: bounds one pruning write (and the time
/// the pruning thread holds nothing the commit path needs).
pub const PRUNE_COMMITS_PER_BATCH: u64 = 256;
/// Stored batches pruned per write batch.
pub const PRUNE_BATCHES_PER_BATCH: usize = 4096;
/// Length of a consensus-log key: round (8, big-endian) ‖ author (4,
/// big-endian) ‖ block digest (32), so iteration runs in round order.
pub const DAG_KEY_LEN: usize = 44;

pub(crate) fn commit_key(index: u64) -> Vec<u8> {
    let mut k = KEY_COMMIT_PREFIX.to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k
}
/// Most transactions one stored block may hold (decoder bound).
pub const BLOCK_TXS_MAX: usize = 1 << 20;

/// What the last durable commit was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitMeta {
    pub index: u64,
    pub root: StateRoot,
    pub timestamp_ms: u64,
    /// Transactions committed successfully since genesis.
    pub txs_total: u64,
    /// The consensus leader block this commit ordered (None for genesis and
    /// for commits written before positions were recorded). The consensus
    /// tile resumes after the last commit's leader at start.
    pub leader: Option<LeaderPosition>,
}

/// A committed leader block: (round, author, digest), the consensus
/// position of a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaderPosition {
    pub round: u64,
    pub author: u32,
    pub digest: [u8; 32],
}

/// What consensus adds to a commit's record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitConsensus {
    pub leader: Option<LeaderPosition>,
    /// Digests of the batches this commit included, in order (after the
    /// duplicate-batch filter).
    pub batches: Vec<[u8; 32]>,
}

/// One commit's included batch digests, with how many digests all earlier
/// commits included.
pub type BatchList = (u64, Vec<[u8; 32]>);

/// What one pruning pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Commits whose block, transaction index and commit meta went.
    pub commits: u64,
    pub txs: u64,
    /// Stored batches deleted from the consensus log.
    pub batches: u64,
    /// Per-commit batch-digest lists deleted.
    pub batch_lists: u64,
}

/// A committed block as stored: its transactions' exact bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockRecord {
    pub index: u64,
    pub timestamp_ms: u64,
    pub txs: Vec<Vec<u8>>,
}

/// Where a transaction ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxLocation {
    pub index: u64,
    pub position: u32,
    pub outcome: Result<(), RejectReason>,
}

fn corrupt(cf: Cf, key: &[u8], what: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        cf: cf.name(),
        key: hex_short(key),
        what: what.into(),
    }
}

fn hex_short(k: &[u8]) -> String {
    k.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

impl BlockRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20 + self.txs.iter().map(|t| t.len() + 4).sum::<usize>());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        out.extend_from_slice(&(self.txs.len() as u32).to_le_bytes());
        for t in &self.txs {
            out.extend_from_slice(&(t.len() as u32).to_le_bytes());
            out.extend_from_slice(t);
        }
        out
    }

    /// Decodes a stored block; every malformation is an error, never a panic.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        let mut r = Reader { b, at: 0 };
        let index = r.u64()?;
        let timestamp_ms = r.u64()?;
        let n = r.u32()? as usize;
        if n > BLOCK_TXS_MAX {
            return Err(format!(
                "{n} transactions exceed the maximum {BLOCK_TXS_MAX}"
            ));
        }
        let mut txs = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let len = r.u32()? as usize;
            txs.push(r.take(len)?.to_vec());
        }
        if r.at != b.len() {
            return Err(format!("{} trailing bytes", b.len() - r.at));
        }
        Ok(Self {
            index,
            timestamp_ms,
            txs,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() - self.at < n {
            return Err(format!("truncated at byte {}", self.at));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
}

/// Encoded commit meta without a leader position (the original format).
const META_BYTES: usize = 56;
/// ...and with one: round (8) ‖ author (4) ‖ digest (32).
const META_WITH_LEADER_BYTES: usize = META_BYTES + 44;

/// Encodes commit meta (56 bytes, 100 with a leader position).
pub fn encode_meta(m: &CommitMeta) -> Vec<u8> {
    let mut v = Vec::with_capacity(META_WITH_LEADER_BYTES);
    v.extend_from_slice(&m.index.to_le_bytes());
    v.extend_from_slice(&m.root.0);
    v.extend_from_slice(&m.timestamp_ms.to_le_bytes());
    v.extend_from_slice(&m.txs_total.to_le_bytes());
    if let Some(l) = &m.leader {
        v.extend_from_slice(&l.round.to_le_bytes());
        v.extend_from_slice(&l.author.to_le_bytes());
        v.extend_from_slice(&l.digest);
    }
    v
}

/// Decodes [`encode_meta`]'s bytes; any other length is an error.
pub fn decode_meta(b: &[u8]) -> Result<CommitMeta, String> {
    if b.len() != META_BYTES && b.len() != META_WITH_LEADER_BYTES {
        return Err(format!(
            "length {} is neither {META_BYTES} nor {META_WITH_LEADER_BYTES}",
            b.len()
        ));
    }
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
    let mut root = [0u8; 32];
    root.copy_from_slice(&b[8..40]);
    let leader = (b.len() == META_WITH_LEADER_BYTES).then(|| {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&b[68..100]);
        LeaderPosition {
            round: u64_at(56),
            author: u32::from_le_bytes(b[64..68].try_into().expect("4")),
            digest,
        }
    });
    Ok(CommitMeta {
        index: u64_at(0),
        root: StateRoot(root),
        timestamp_ms: u64_at(40),
        txs_total: u64_at(48),
        leader,
    })
}

pub(crate) fn meta_at(key: &[u8], b: &[u8]) -> Result<CommitMeta, StoreError> {
    decode_meta(b).map_err(|e| corrupt(Cf::Meta, key, e))
}

fn get_u64(store: &dyn Store, key: &[u8]) -> Result<u64, StoreError> {
    match store.get(Cf::Meta, key)? {
        None => Ok(0),
        Some(b) if b.len() == 8 => Ok(u64::from_le_bytes(b[..].try_into().expect("8"))),
        Some(b) => Err(corrupt(Cf::Meta, key, format!("length {} != 8", b.len()))),
    }
}

fn encode_location(l: &TxLocation) -> [u8; 14] {
    let mut v = [0u8; 14];
    v[..8].copy_from_slice(&l.index.to_le_bytes());
    v[8..12].copy_from_slice(&l.position.to_le_bytes());
    let code = match l.outcome {
        Ok(()) => 0,
        Err(r) => r.code(),
    };
    v[12..14].copy_from_slice(&code.to_le_bytes());
    v
}

/// The chain's view of a store.
#[derive(Clone)]
pub struct ChainStore {
    store: Arc<dyn Store>,
    /// Committed accounts ([`crate::cache`]), shared by clones; `None` when
    /// caching is off. Invariant: every write to the state column goes
    /// through [`ChainStore::commit`], or is followed by
    /// [`ChainStore::clear_account_cache`].
    accounts: Option<Arc<AccountCache>>,
}

impl ChainStore {
    /// A chain store without an account cache.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            accounts: None,
        }
    }

    /// A chain store whose [`ChainStore::account`] reads go through a cache
    /// of at most `entries_max` accounts (0: no cache).
    pub fn with_account_cache(store: Arc<dyn Store>, entries_max: usize) -> Self {
        Self {
            store,
            accounts: (entries_max > 0).then(|| Arc::new(AccountCache::new(entries_max))),
        }
    }

    /// Hits, misses and size of the account cache, if there is one.
    pub fn account_cache_stats(&self) -> Option<AccountCacheStats> {
        self.accounts.as_ref().map(|c| c.stats())
    }

    /// Empties the account cache; required after writing the state column
    /// other than through [`ChainStore::commit`].
    pub fn clear_account_cache(&self) {
        if let Some(c) = &self.accounts {
            c.clear();
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Checks that this store belongs to the chain whose genesis hashes to
    /// `genesis`, recording it if the store is new.
    pub fn check_genesis(&self, genesis: &[u8; 32], dir: &str) -> Result<(), StoreError> {
        match self.store.get(Cf::Meta, KEY_GENESIS)? {
            None => {
                let mut wb = WriteBatch::default();
                wb.put(Cf::Meta, KEY_GENESIS, genesis.to_vec());
                self.store.write(wb)
            }
            Some(found) if found.as_slice() == genesis => Ok(()),
            Some(found) => Err(StoreError::WrongChain {
                dir: dir.to_string(),
                found: hex_short(&found),
                expected: hex_short(genesis),
            }),
        }
    }

    /// The chain's genesis hash, once recorded.
    pub fn genesis(&self) -> Result<Option<[u8; 32]>, StoreError> {
        match self.store.get(Cf::Meta, KEY_GENESIS)? {
            None => Ok(None),
            Some(b) => {
                b.as_slice().try_into().map(Some).map_err(|_| {
                    corrupt(Cf::Meta, KEY_GENESIS, format!("length {} != 32", b.len()))
                })
            }
        }
    }

    pub fn last_commit(&self) -> Result<Option<CommitMeta>, StoreError> {
        self.store
            .get(Cf::Meta, KEY_LAST_COMMIT)?
            .map(|b| meta_at(KEY_LAST_COMMIT, &b))
            .transpose()
    }

    /// Persists one commit atomically: block, transaction index, state diff,
    /// and the new last-commit record. Returns that record. Every key and
    /// value is written straight into the store's batch (no intermediate
    /// copies); the account cache learns the touched accounts' new values
    /// once the write returned.
    pub fn commit(&self, block: &BlockRecord, out: &BlockOutput) -> Result<CommitMeta, StoreError> {
        self.commit_with(block, out, &CommitConsensus::default())
    }

    /// [`ChainStore::commit`] with consensus's part of the record: the
    /// leader position (in the commit meta) and the included batch digests
    /// (`commit_batches`), in the same atomic write.
    pub fn commit_with(
        &self,
        block: &BlockRecord,
        out: &BlockOutput,
        consensus: &CommitConsensus,
    ) -> Result<CommitMeta, StoreError> {
        assert_eq!(
            block.txs.len(),
            out.receipts.len(),
            "one receipt per transaction"
        );
        let prev = self.last_commit()?;
        if let Some(p) = prev {
            assert_eq!(block.index, p.index + 1, "commits are consecutive");
        }
        let meta = CommitMeta {
            index: block.index,
            root: out.root,
            timestamp_ms: block.timestamp_ms,
            txs_total: prev.map(|p| p.txs_total).unwrap_or(0) + out.accepted() as u64,
            leader: consensus.leader,
        };
        let block_key = block.index.to_be_bytes();
        // Consensus's record of the commit: the batch digests it included,
        // after the running count of digests before it.
        let commit_batches = match consensus.leader {
            Some(_) => {
                let before = match block.index.checked_sub(1) {
                    Some(p) => self
                        .commit_batches(p)?
                        .map_or(0, |(b, d)| b + d.len() as u64),
                    None => 0,
                };
                let mut v = Vec::with_capacity(8 + 32 * consensus.batches.len());
                v.extend_from_slice(&before.to_le_bytes());
                for d in &consensus.batches {
                    v.extend_from_slice(d);
                }
                Some(v)
            }
            None => None,
        };
        let block_bytes = block.encode();
        let meta_key = commit_key(meta.index);
        let meta_bytes = encode_meta(&meta);
        const LOCATION_BYTES: usize = 32 + 14;
        const STATE_BYTES: usize = velox_exec::state::STATE_KEY_BYTES + 16;
        let bytes_hint = block_key.len()
            + block_bytes.len()
            + out.receipts.len() * LOCATION_BYTES
            + out.diff.entries.len() * STATE_BYTES
            + KEY_LAST_COMMIT.len()
            + meta_key.len()
            + 2 * meta_bytes.len()
            + commit_batches.as_ref().map_or(0, |v| 8 + v.len());
        // Transaction locations in digest order: RocksDB's memtable inserts
        // keys that follow the previous one faster than random ones (measured
        // ~5% of a 1000-transfer commit); the state diff is sorted already.
        //
        // A transaction that committed keeps its successful location: a
        // later copy of it (sent to two validators, or left behind a nonce
        // gap) fails with a bad nonce and must not hide the success. So a
        // failed receipt is written only where no success is stored, and
        // within one commit a success sorts after (overwrites) a failure.
        let mut locations: Vec<(&[u8; 32], bool, [u8; 14])> =
            Vec::with_capacity(out.receipts.len());
        for (pos, r) in out.receipts.iter().enumerate() {
            if r.outcome.is_err()
                && self
                    .tx_location(&r.digest)?
                    .is_some_and(|l| l.outcome.is_ok())
            {
                continue;
            }
            let loc = TxLocation {
                index: block.index,
                position: pos as u32,
                outcome: r.outcome,
            };
            locations.push((&r.digest.0, r.outcome.is_ok(), encode_location(&loc)));
        }
        locations.sort_unstable_by_key(|(d, ok, _)| (*d, *ok));
        let written = self.store.write_with(bytes_hint, &mut |w| {
            w.put(Cf::Blocks, &block_key, &block_bytes);
            for (digest, _, loc) in &locations {
                w.put(Cf::Txs, *digest, loc);
            }
            for (k, v) in &out.diff.entries {
                match v {
                    Some(v) => w.put(Cf::State, &k.to_bytes(), &v.to_bytes()),
                    None => w.delete(Cf::State, &k.to_bytes()),
                }
            }
            w.put(Cf::Meta, KEY_LAST_COMMIT, &meta_bytes);
            w.put(Cf::Meta, &meta_key, &meta_bytes);
            if let Some(v) = &commit_batches {
                w.put(Cf::CommitBatches, &block_key, v);
            }
        });
        if let Some(cache) = &self.accounts {
            let touched = out.diff.entries.iter().filter_map(|(k, v)| match (k, v) {
                (StateKey::Account(id), Some(StateValue::Account(a))) => Some((*id, *a)),
                (StateKey::Account(id), _) => Some((*id, Account::default())),
                (StateKey::Kv(_), _) => None,
            });
            match &written {
                Ok(()) => cache.apply_commit(touched),
                Err(_) => cache.invalidate(touched.map(|(id, _)| id)),
            }
        }
        written?;
        Ok(meta)
    }

    /// The record of commit `index` (its state root, timestamp and running
    /// transaction count), if that commit is stored (not pruned).
    pub fn commit_meta(&self, index: u64) -> Result<Option<CommitMeta>, StoreError> {
        let key = commit_key(index);
        self.store
            .get(Cf::Meta, &key)?
            .map(|b| meta_at(&key, &b))
            .transpose()
    }

    /// Commit `index`'s included batch digests and how many digests all
    /// earlier commits included, if stored.
    pub fn commit_batches(&self, index: u64) -> Result<Option<BatchList>, StoreError> {
        let key = index.to_be_bytes();
        match self.store.get(Cf::CommitBatches, &key)? {
            None => Ok(None),
            Some(b) => decode_batch_list(&key, &b).map(Some),
        }
    }

    /// The newest `window` included batch digests still stored, oldest
    /// first (the consensus tile's duplicate-batch window at start).
    pub fn included_batches(&self, window: usize) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut out: std::collections::VecDeque<[u8; 32]> = std::collections::VecDeque::new();
        self.store.for_each(Cf::CommitBatches, &mut |k, v| {
            let (_, ds) = decode_batch_list(k, v)?;
            for d in ds {
                if out.len() == window {
                    out.pop_front();
                }
                out.push_back(d);
            }
            Ok(())
        })?;
        Ok(out.into())
    }

    /// The leaders of the commits at or below `last` whose rounds are at
    /// least `min_round`, newest first (read from the per-commit meta).
    /// `None` if that set cannot be known: a record on the way is missing
    /// (pruned) or has no leader (written before leaders were recorded)
    /// before a leader below `min_round` or genesis is reached.
    pub fn recent_leaders(
        &self,
        last: &CommitMeta,
        min_round: u64,
    ) -> Result<Option<Vec<LeaderPosition>>, StoreError> {
        let mut out = Vec::new();
        let mut i = last.index;
        let restored = self.restored_leaders()?;
        while i >= 1 {
            let stored = self.commit_meta(i)?.and_then(|m| m.leader);
            let Some(l) = stored.or_else(|| restored.get(&i).copied()) else {
                return Ok(None);
            };
            if l.round < min_round {
                break;
            }
            out.push(l);
            i -= 1;
        }
        Ok(Some(out))
    }

    /// Writes consensus-log blocks and batches in one atomic batch. The
    /// consensus tile calls it before acting on what it wrote (broadcasting
    /// a block, acknowledging a batch). `round` is the consensus round at
    /// the time (the batches' age, for pruning).
    pub fn write_consensus(
        &self,
        blocks: &[([u8; DAG_KEY_LEN], Vec<u8>)],
        batches: &[([u8; 32], std::sync::Arc<[u8]>)],
        round: u64,
    ) -> Result<(), StoreError> {
        if blocks.is_empty() && batches.is_empty() {
            return Ok(());
        }
        let mut wb = WriteBatch::default();
        for (k, v) in blocks {
            wb.put(Cf::Dag, k.to_vec(), v.clone());
        }
        for (k, v) in batches {
            wb.put(Cf::Batches, k.to_vec(), v.to_vec());
            let mut idx = Vec::with_capacity(40);
            idx.extend_from_slice(&round.to_be_bytes());
            idx.extend_from_slice(k);
            wb.put(Cf::BatchRounds, idx, Vec::new());
        }
        // What peers are told next depends on it (a block we signed, a batch
        // we acknowledged): durable against power loss, whatever
        // `sync_writes` says. One call per consensus turn: group commit.
        self.store.write_synced(wb)
    }

    /// Raises the signed-round floor to `round` (never lowers it), fsynced:
    /// rounds at or below it are never signed again by this validator.
    pub fn raise_signed_round_floor(&self, round: u64) -> Result<(), StoreError> {
        if round <= self.signed_round_floor()? {
            return Ok(());
        }
        let mut wb = WriteBatch::default();
        wb.put(
            Cf::Meta,
            KEY_SIGNED_ROUND_FLOOR,
            round.to_le_bytes().to_vec(),
        );
        self.store.write_synced(wb)
    }

    /// The signed-round floor (0 when never set).
    pub fn signed_round_floor(&self) -> Result<u64, StoreError> {
        get_u64(self.store.as_ref(), KEY_SIGNED_ROUND_FLOOR)
    }

    /// One consensus-log block by key.
    pub fn consensus_block(&self, key: &[u8; DAG_KEY_LEN]) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(Cf::Dag, key)
    }

    /// Visits every consensus-log block in (round, author) order.
    pub fn for_each_consensus_block(
        &self,
        f: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.for_each_consensus_block_from(0, f)
    }

    /// Visits the consensus-log blocks of rounds `>= round` in (round,
    /// author) order.
    pub fn for_each_consensus_block_from(
        &self,
        round: u64,
        f: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.for_each_consensus_block_in(round, None, f)
    }

    /// Visits the consensus-log blocks of rounds `from..=to` (`to = None`:
    /// no end) in (round, author) order.
    pub fn for_each_consensus_block_in(
        &self,
        from: u64,
        to: Option<u64>,
        f: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let end = to.and_then(|t| t.checked_add(1)).map(u64::to_be_bytes);
        self.store.for_each_range(
            Cf::Dag,
            &from.to_be_bytes(),
            end.as_ref().map(|e| &e[..]),
            &mut |k, v| {
                if k.len() != DAG_KEY_LEN {
                    return Err(corrupt(
                        Cf::Dag,
                        k,
                        format!("key length {} != {DAG_KEY_LEN}", k.len()),
                    ));
                }
                f(v)
            },
        )
    }

    /// The highest-round block by `author` in the consensus log, if any
    /// (a full scan of the log's keys: for rare requests only).
    pub fn latest_consensus_block_by(&self, author: u32) -> Result<Option<Vec<u8>>, StoreError> {
        let mut latest: Option<Vec<u8>> = None;
        let want = author.to_be_bytes();
        self.store.for_each_range(Cf::Dag, &[], None, &mut |k, _| {
            if k.len() == DAG_KEY_LEN && k[8..12] == want {
                latest = Some(k.to_vec());
            }
            Ok(())
        })?;
        match latest {
            Some(k) => self.store.get(Cf::Dag, &k),
            None => Ok(None),
        }
    }

    /// A stored batch by digest.
    pub fn batch(&self, digest: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(Cf::Batches, digest)
    }

    pub fn tx_location(&self, d: &TxDigest) -> Result<Option<TxLocation>, StoreError> {
        let Some(b) = self.store.get(Cf::Txs, &d.0)? else {
            return Ok(None);
        };
        if b.len() != 14 {
            return Err(corrupt(Cf::Txs, &d.0, format!("length {} != 14", b.len())));
        }
        let code = u16::from_le_bytes(b[12..14].try_into().expect("2"));
        let outcome = match code {
            0 => Ok(()),
            c => Err(RejectReason::from_code(c)
                .ok_or_else(|| corrupt(Cf::Txs, &d.0, format!("unknown reason {c}")))?),
        };
        Ok(Some(TxLocation {
            index: u64::from_le_bytes(b[..8].try_into().expect("8")),
            position: u32::from_le_bytes(b[8..12].try_into().expect("4")),
            outcome,
        }))
    }

    /// The committed account `id` (the default account if none is
    /// stored), from the account cache when it holds it.
    pub fn account(&self, id: &velox_exec::AccountId) -> Result<Account, StoreError> {
        let Some(cache) = &self.accounts else {
            return self.read_account(id);
        };
        match cache.get(id) {
            Lookup::Hit(a) => Ok(a),
            Lookup::Miss(ticket) => {
                let a = self.read_account(id)?;
                cache.fill(id, a, ticket);
                Ok(a)
            }
        }
    }

    /// The committed account `id` as the store has it.
    fn read_account(&self, id: &velox_exec::AccountId) -> Result<Account, StoreError> {
        let key = StateKey::Account(*id);
        match self.store.get(Cf::State, &key.to_bytes())? {
            None => Ok(Account::default()),
            Some(b) => match StateValue::from_bytes(&key, &b) {
                Ok(StateValue::Account(a)) => Ok(a),
                Ok(other) => Err(corrupt(
                    Cf::State,
                    &key.to_bytes(),
                    format!("account key holds {other:?}"),
                )),
                Err(e) => Err(corrupt(Cf::State, &key.to_bytes(), e.to_string())),
            },
        }
    }

    /// Streams the state column into a fresh [`State`].
    pub fn load_state(&self) -> Result<State, StoreError> {
        let mut s = State::new();
        self.store.for_each(Cf::State, &mut |k, v| {
            s.load_entry(k, v)
                .map_err(|e| corrupt(Cf::State, k, e.to_string()))
        })?;
        Ok(s)
    }

    /// Commits below this index were pruned (0: none).
    pub fn commits_pruned_below(&self) -> Result<u64, StoreError> {
        get_u64(self.store.as_ref(), KEY_COMMITS_PRUNED_BELOW)
    }

    /// Consensus-log rounds below this were pruned (0: none).
    pub fn consensus_pruned_below(&self) -> Result<u64, StoreError> {
        get_u64(self.store.as_ref(), KEY_CONSENSUS_PRUNED_BELOW)
    }

    /// A restored directory's leaders of the commits before (and at) its
    /// snapshot's, by commit index (empty if not restored, or restored
    /// from a version 1 snapshot).
    pub fn restored_leaders(
        &self,
    ) -> Result<std::collections::HashMap<u64, LeaderPosition>, StoreError> {
        let mut out = std::collections::HashMap::new();
        let Some(b) = self.store.get(Cf::Meta, KEY_RESTORED_LEADERS)? else {
            return Ok(out);
        };
        if b.len() % 52 != 0 {
            return Err(corrupt(
                Cf::Meta,
                KEY_RESTORED_LEADERS,
                format!("length {} is not a multiple of 52", b.len()),
            ));
        }
        for c in b.chunks_exact(52) {
            out.insert(
                u64::from_le_bytes(c[..8].try_into().expect("8")),
                LeaderPosition {
                    round: u64::from_le_bytes(c[8..16].try_into().expect("8")),
                    author: u32::from_le_bytes(c[16..20].try_into().expect("4")),
                    digest: c[20..].try_into().expect("32"),
                },
            );
        }
        Ok(out)
    }

    /// The commit index a restored data directory's state came from, if it
    /// was made by `velox snapshot restore`.
    pub fn restored_from(&self) -> Result<Option<u64>, StoreError> {
        match self.store.get(Cf::Meta, KEY_RESTORED_FROM)? {
            None => Ok(None),
            Some(_) => get_u64(self.store.as_ref(), KEY_RESTORED_FROM).map(Some),
        }
    }

    /// Deletes the blocks, transaction-index entries and per-commit meta of
    /// commits below `floor` (those not pruned yet), in write batches of
    /// [`PRUNE_COMMITS_PER_BATCH`] commits. Never touches the last commit.
    pub fn prune_commits_below(&self, floor: u64) -> Result<PruneStats, StoreError> {
        let mut stats = PruneStats::default();
        let Some(last) = self.last_commit()? else {
            return Ok(stats);
        };
        let floor = floor.min(last.index);
        let mut from = self.commits_pruned_below()?;
        while from < floor {
            let to = floor.min(from + PRUNE_COMMITS_PER_BATCH);
            let mut wb = WriteBatch::default();
            for i in from..to {
                let Some(b) = self.block(i)? else { continue };
                for bytes in &b.txs {
                    let Ok(tx) = velox_exec::Tx::decode(bytes) else {
                        continue;
                    };
                    let d = tx.digest();
                    // A later commit may have re-recorded this digest (a
                    // replayed transaction, rejected there): keep that.
                    if self.tx_location(&d)?.is_some_and(|l| l.index == i) {
                        wb.delete(Cf::Txs, d.0.to_vec());
                        stats.txs += 1;
                    }
                }
            }
            wb.delete_range(
                Cf::Blocks,
                from.to_be_bytes().to_vec(),
                to.to_be_bytes().to_vec(),
            );
            wb.delete_range(Cf::Meta, commit_key(from), commit_key(to));
            wb.put(
                Cf::Meta,
                KEY_COMMITS_PRUNED_BELOW,
                to.to_le_bytes().to_vec(),
            );
            self.store.write(wb)?;
            stats.commits += to - from;
            from = to;
        }
        Ok(stats)
    }

    /// Deletes the consensus log below `round`: its blocks (one range
    /// deletion) and the batches stored at rounds below it.
    pub fn prune_consensus_below(&self, round: u64) -> Result<PruneStats, StoreError> {
        let mut stats = PruneStats::default();
        if round <= self.consensus_pruned_below()? {
            return Ok(stats);
        }
        let to = round.to_be_bytes();
        loop {
            // One chunk of the index at a time, so a long backlog never
            // builds one huge write.
            let mut keys: Vec<Vec<u8>> = Vec::new();
            self.store
                .for_each_range(Cf::BatchRounds, &[], Some(&to), &mut |k, _| {
                    if keys.len() >= PRUNE_BATCHES_PER_BATCH {
                        return Err(StoreError::Stopped);
                    }
                    keys.push(k.to_vec());
                    Ok(())
                })
                .or_else(stopped_is_ok)?;
            if keys.is_empty() {
                break;
            }
            let mut wb = WriteBatch::default();
            for k in &keys {
                if k.len() == 40 {
                    wb.delete(Cf::Batches, k[8..].to_vec());
                    stats.batches += 1;
                }
                wb.delete(Cf::BatchRounds, k.clone());
            }
            self.store.write(wb)?;
        }
        let mut wb = WriteBatch::default();
        wb.delete_range(Cf::Dag, vec![0u8; 8], to.to_vec());
        wb.put(
            Cf::Meta,
            KEY_CONSENSUS_PRUNED_BELOW,
            round.to_le_bytes().to_vec(),
        );
        self.store.write(wb)?;
        Ok(stats)
    }

    /// Deletes per-commit batch-digest lists whose digests have all left
    /// the newest `window` digests (the consensus tile's duplicate window),
    /// never the last commit's.
    pub fn prune_batch_lists(&self, window: u64) -> Result<PruneStats, StoreError> {
        let mut stats = PruneStats::default();
        let Some(last) = self.last_commit()? else {
            return Ok(stats);
        };
        let Some((before, ds)) = self.commit_batches(last.index)? else {
            return Ok(stats);
        };
        let total = before + ds.len() as u64;
        let keep_from = total.saturating_sub(window);
        let mut end: Option<u64> = None;
        let mut first: Option<u64> = None;
        self.store
            .for_each(Cf::CommitBatches, &mut |k, v| {
                let (before, ds) = decode_batch_list(k, v)?;
                let index = u64::from_be_bytes(k.try_into().expect("checked by decode"));
                if index >= last.index || before + ds.len() as u64 > keep_from {
                    return Err(StoreError::Stopped);
                }
                first.get_or_insert(index);
                end = Some(index + 1);
                stats.batch_lists += 1;
                Ok(())
            })
            .or_else(stopped_is_ok)?;
        if let (Some(a), Some(b)) = (first, end) {
            let mut wb = WriteBatch::default();
            wb.delete_range(
                Cf::CommitBatches,
                a.to_be_bytes().to_vec(),
                b.to_be_bytes().to_vec(),
            );
            self.store.write(wb)?;
        }
        Ok(stats)
    }

    /// Writes a restored state's records into an empty store: the genesis
    /// hash, the commit meta of the snapshot's commit (as the last commit
    /// and as its per-commit record), and marks everything below it pruned.
    /// State entries are written before with [`ChainStore::put_state`].
    pub fn finish_restore(
        &self,
        genesis: &[u8; 32],
        meta: &CommitMeta,
        consensus: Option<&crate::snapshot::SnapshotConsensus>,
    ) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        if let Some(c) = consensus {
            let mut v = Vec::with_capacity(c.leaders.len() * 52);
            for (i, l) in &c.leaders {
                v.extend_from_slice(&i.to_le_bytes());
                v.extend_from_slice(&l.round.to_le_bytes());
                v.extend_from_slice(&l.author.to_le_bytes());
                v.extend_from_slice(&l.digest);
            }
            wb.put(Cf::Meta, KEY_RESTORED_LEADERS, v);
            for (i, list) in &c.batch_lists {
                wb.put(Cf::CommitBatches, i.to_be_bytes().to_vec(), list.clone());
            }
        }
        wb.put(Cf::Meta, KEY_GENESIS, genesis.to_vec());
        wb.put(Cf::Meta, KEY_LAST_COMMIT, encode_meta(meta));
        wb.put(Cf::Meta, commit_key(meta.index), encode_meta(meta));
        wb.put(
            Cf::Meta,
            KEY_COMMITS_PRUNED_BELOW,
            (meta.index + 1).to_le_bytes().to_vec(),
        );
        wb.put(
            Cf::Meta,
            KEY_RESTORED_FROM,
            meta.index.to_le_bytes().to_vec(),
        );
        self.store.write(wb)
    }

    /// Writes raw state entries (a restore, in chunks).
    pub fn put_state(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<(), StoreError> {
        let mut wb = WriteBatch::default();
        for (k, v) in entries {
            wb.put(Cf::State, k, v);
        }
        self.store.write(wb)
    }

    pub fn block(&self, index: u64) -> Result<Option<BlockRecord>, StoreError> {
        let key = index.to_be_bytes();
        let Some(b) = self.store.get(Cf::Blocks, &key)? else {
            return Ok(None);
        };
        BlockRecord::decode(&b)
            .map(Some)
            .map_err(|e| corrupt(Cf::Blocks, &key, e))
    }

    /// Visits the stored commits with `from <= index <= to` in index order,
    /// each as its commit record and block. Streams from the blocks column
    /// (one block decoded at a time, whatever the range) and reads each
    /// record from the meta column; a block without its record is corrupt.
    pub fn for_each_commit(
        &self,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(&CommitMeta, &BlockRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if from > to {
            return Ok(());
        }
        let start = from.to_be_bytes();
        let end = to.checked_add(1).map(u64::to_be_bytes);
        self.store.for_each_range(
            Cf::Blocks,
            &start,
            end.as_ref().map(|e| &e[..]),
            &mut |k, v| {
                let index = <[u8; 8]>::try_from(k)
                    .map(u64::from_be_bytes)
                    .map_err(|_| corrupt(Cf::Blocks, k, format!("key length {} != 8", k.len())))?;
                let block = BlockRecord::decode(v).map_err(|e| corrupt(Cf::Blocks, k, e))?;
                if block.index != index {
                    return Err(corrupt(
                        Cf::Blocks,
                        k,
                        format!("holds block {} under key {index}", block.index),
                    ));
                }
                let meta = self.commit_meta(index)?.ok_or_else(|| {
                    corrupt(
                        Cf::Meta,
                        &commit_key(index),
                        "block stored without its commit record",
                    )
                })?;
                f(&meta, &block)
            },
        )
    }
}

/// An iteration its visitor ended on purpose is a success.
fn stopped_is_ok(e: StoreError) -> Result<(), StoreError> {
    match e {
        StoreError::Stopped => Ok(()),
        e => Err(e),
    }
}

pub(crate) fn decode_batch_list(key: &[u8], b: &[u8]) -> Result<BatchList, StoreError> {
    if key.len() != 8 || b.len() < 8 || (b.len() - 8) % 32 != 0 {
        return Err(corrupt(
            Cf::CommitBatches,
            key,
            format!("key length {} / value length {}", key.len(), b.len()),
        ));
    }
    let before = u64::from_le_bytes(b[..8].try_into().expect("8"));
    let ds = b[8..]
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32"))
        .collect();
    Ok((before, ds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemStore, RocksStore};
    use ed25519_dalek::SigningKey;
    use velox_exec::{
        execute_sequential, AccountId, ExecContext, Receipt, RejectReason, Tx, TxBody, TxBuilder,
        VerifiedTx,
    };

    #[test]
    fn the_signed_round_floor_only_rises_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store: Arc<dyn Store> =
                Arc::new(RocksStore::open(dir.path(), Default::default()).unwrap());
            let chain = ChainStore::new(store);
            assert_eq!(chain.signed_round_floor().unwrap(), 0);
            chain.raise_signed_round_floor(240).unwrap();
            chain.raise_signed_round_floor(100).unwrap();
            assert_eq!(chain.signed_round_floor().unwrap(), 240);
        }
        let store: Arc<dyn Store> =
            Arc::new(RocksStore::open(dir.path(), Default::default()).unwrap());
        assert_eq!(ChainStore::new(store).signed_round_floor().unwrap(), 240);
    }

    fn genesis_block(to: AccountId) -> (BlockRecord, Vec<VerifiedTx>) {
        let tx = VerifiedTx::genesis_alloc(1, to, 1000);
        let bytes = tx.bytes().to_vec();
        (
            BlockRecord {
                index: 0,
                timestamp_ms: 0,
                txs: vec![bytes],
            },
            vec![tx],
        )
    }

    fn roundtrip(store: Arc<dyn Store>) {
        let chain = ChainStore::new(store);
        chain.check_genesis(&[1; 32], "x").unwrap();
        chain.check_genesis(&[1; 32], "x").unwrap();
        assert!(matches!(
            chain.check_genesis(&[2; 32], "x"),
            Err(StoreError::WrongChain { .. })
        ));
        assert_eq!(chain.last_commit().unwrap(), None);
        let key = SigningKey::from_bytes(&[4; 32]);
        let me = AccountId(key.verifying_key().to_bytes());
        let mut state = State::new();
        let (g, gtx) = genesis_block(me);
        let out = execute_sequential(&mut state, &gtx, ExecContext { genesis: true });
        chain.commit(&g, &out).unwrap();
        let t = TxBuilder {
            chain_id: 1,
            nonce: 0,
            fee: 1,
            body: TxBody::Transfer {
                to: AccountId([9; 32]),
                amount: 10,
            },
        };
        let bytes = t.sign(&key);
        let tx = VerifiedTx::from_trusted(Tx::decode(&bytes).unwrap());
        let out = execute_sequential(
            &mut state,
            std::slice::from_ref(&tx),
            ExecContext { genesis: false },
        );
        let meta = chain
            .commit(
                &BlockRecord {
                    index: 1,
                    timestamp_ms: 5,
                    txs: vec![bytes],
                },
                &out,
            )
            .unwrap();
        assert_eq!(
            meta,
            CommitMeta {
                index: 1,
                root: state.root(),
                timestamp_ms: 5,
                txs_total: 2,
                leader: None,
            }
        );
        assert_eq!(chain.last_commit().unwrap(), Some(meta));
        assert_eq!(
            chain.account(&me).unwrap(),
            Account {
                balance: 989,
                nonce: 1
            }
        );
        assert_eq!(
            chain.tx_location(&tx.digest()).unwrap(),
            Some(TxLocation {
                index: 1,
                position: 0,
                outcome: Ok(())
            })
        );
        assert_eq!(chain.load_state().unwrap().root(), state.root());
        assert_eq!(chain.block(1).unwrap().unwrap().txs.len(), 1);
        assert_eq!(chain.commit_meta(1).unwrap(), Some(meta));
        assert_eq!(chain.commit_meta(0).unwrap().unwrap().index, 0);
        assert_eq!(chain.commit_meta(2).unwrap(), None);

        // The consensus log: blocks come back in key (round) order.
        let mut k1 = [0u8; DAG_KEY_LEN];
        k1[7] = 2;
        let mut k0 = [0u8; DAG_KEY_LEN];
        k0[7] = 1;
        let batch: Arc<[u8]> = Arc::from(&b"batch-bytes"[..]);
        chain
            .write_consensus(
                &[(k1, b"round2".to_vec()), (k0, b"round1".to_vec())],
                &[([9; 32], batch.clone())],
                7,
            )
            .unwrap();
        let mut seen = Vec::new();
        chain
            .for_each_consensus_block(&mut |v| {
                seen.push(v.to_vec());
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, vec![b"round1".to_vec(), b"round2".to_vec()]);
        assert_eq!(chain.consensus_block(&k1).unwrap().unwrap(), b"round2");
        assert_eq!(chain.batch(&[9; 32]).unwrap().unwrap(), &batch[..]);
        assert_eq!(chain.batch(&[8; 32]).unwrap(), None);
    }

    #[test]
    fn mem_store_roundtrip() {
        roundtrip(Arc::new(MemStore::new()));
    }

    #[test]
    fn rocks_store_roundtrip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        roundtrip(Arc::new(
            RocksStore::open(dir.path(), Default::default()).unwrap(),
        ));
        // Reopen: everything is still there.
        let chain = ChainStore::new(Arc::new(
            RocksStore::open(dir.path(), Default::default()).unwrap(),
        ));
        assert_eq!(chain.last_commit().unwrap().unwrap().index, 1);
    }

    #[test]
    fn a_later_failed_copy_never_hides_a_committed_transaction() {
        let chain = ChainStore::new(Arc::new(MemStore::new()));
        let (a, b) = (TxDigest([1; 32]), TxDigest([2; 32]));
        let commit = |index: u64, receipts: Vec<(TxDigest, Result<(), RejectReason>)>| {
            let block = BlockRecord {
                index,
                timestamp_ms: index,
                txs: receipts.iter().map(|_| vec![0u8]).collect(),
            };
            let out = BlockOutput {
                receipts: receipts
                    .into_iter()
                    .map(|(digest, outcome)| Receipt { digest, outcome })
                    .collect(),
                diff: Default::default(),
                root: StateRoot([0; 32]),
            };
            chain.commit(&block, &out).unwrap();
        };
        // b fails first (too early), then commits; a commits, then a copy
        // fails; within commit 3 a failed copy precedes the success.
        commit(0, vec![]);
        commit(1, vec![(b, Err(RejectReason::BadNonce)), (a, Ok(()))]);
        commit(2, vec![(a, Err(RejectReason::BadNonce)), (b, Ok(()))]);
        let loc = |d| chain.tx_location(&d).unwrap().unwrap();
        assert_eq!((loc(a).index, loc(a).outcome), (1, Ok(())));
        assert_eq!((loc(b).index, loc(b).outcome), (2, Ok(())));
        let c = TxDigest([3; 32]);
        commit(3, vec![(c, Err(RejectReason::BadNonce)), (c, Ok(()))]);
        assert_eq!(
            (loc(c).index, loc(c).position, loc(c).outcome),
            (3, 1, Ok(()))
        );
        // A failure alone is recorded.
        let d = TxDigest([4; 32]);
        commit(4, vec![(d, Err(RejectReason::InsufficientBalance))]);
        assert_eq!(loc(d).outcome, Err(RejectReason::InsufficientBalance));
    }

    /// A commit of `diff` alone (no transactions).
    fn diff_commit(
        index: u64,
        entries: Vec<(StateKey, Option<StateValue>)>,
    ) -> (BlockRecord, BlockOutput) {
        (
            BlockRecord {
                index,
                timestamp_ms: index * 10,
                txs: vec![],
            },
            BlockOutput {
                receipts: vec![],
                diff: velox_exec::StateDiff { entries },
                root: StateRoot([index as u8; 32]),
            },
        )
    }

    fn commit_range(chain: &ChainStore, from: u64, to: u64) -> Vec<(CommitMeta, BlockRecord)> {
        let mut seen = Vec::new();
        chain
            .for_each_commit(from, to, &mut |m, b| {
                seen.push((*m, b.clone()));
                Ok(())
            })
            .unwrap();
        seen
    }

    fn streams_commits(store: Arc<dyn Store>) {
        let chain = ChainStore::new(store);
        for i in 0..=10 {
            let (b, o) = diff_commit(i, vec![]);
            chain.commit(&b, &o).unwrap();
        }
        let indices = |v: Vec<(CommitMeta, BlockRecord)>| {
            v.iter()
                .map(|(m, b)| {
                    assert_eq!(m.index, b.index);
                    assert_eq!(Some(*m), chain.commit_meta(m.index).unwrap());
                    assert_eq!(m.timestamp_ms, b.timestamp_ms);
                    m.index
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(indices(commit_range(&chain, 3, 7)), vec![3, 4, 5, 6, 7]);
        assert_eq!(indices(commit_range(&chain, 8, u64::MAX)), vec![8, 9, 10]);
        assert_eq!(indices(commit_range(&chain, 0, 0)), vec![0]);
        assert!(commit_range(&chain, 5, 4).is_empty());
        assert!(commit_range(&chain, 11, 20).is_empty());
        // The visitor's error stops the walk.
        let mut visited = 0;
        let r = chain.for_each_commit(0, 10, &mut |_, b| {
            visited += 1;
            if b.index == 2 {
                Err(corrupt(Cf::Blocks, b"x", "stop"))
            } else {
                Ok(())
            }
        });
        assert!(r.is_err());
        assert_eq!(visited, 3);
    }

    #[test]
    fn for_each_commit_streams_a_range_mem() {
        streams_commits(Arc::new(MemStore::new()));
    }

    #[test]
    fn for_each_commit_streams_a_range_rocks() {
        let dir = tempfile::tempdir().unwrap();
        streams_commits(Arc::new(
            RocksStore::open(dir.path(), Default::default()).unwrap(),
        ));
    }

    #[test]
    fn mem_store_scan_spans_chunks_and_lets_the_visitor_read() {
        // More entries than one scan chunk; the visitor reads the store
        // (which would deadlock if the scan held the store's lock).
        let store = MemStore::new();
        let mut wb = WriteBatch::default();
        for i in 0u32..1000 {
            wb.put(Cf::Txs, i.to_be_bytes().to_vec(), vec![1]);
        }
        wb.put(Cf::Blocks, vec![0], vec![2]);
        store.write(wb).unwrap();
        let mut n = 0u32;
        store
            .for_each_range(
                Cf::Txs,
                &10u32.to_be_bytes(),
                Some(&900u32.to_be_bytes()),
                &mut |k, _| {
                    assert_eq!(k, (10 + n).to_be_bytes());
                    assert!(store.get(Cf::Txs, k)?.is_some());
                    n += 1;
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(n, 890);
        let mut all = 0;
        store
            .for_each(Cf::Txs, &mut |_, _| {
                all += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(all, 1000);
    }

    /// A store whose next write fails (without applying) when told to.
    #[derive(Default)]
    struct FlakyStore {
        inner: MemStore,
        fail_next: std::sync::atomic::AtomicBool,
    }

    impl Store for FlakyStore {
        fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(cf, key)
        }
        fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
            if self
                .fail_next
                .swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                return Err(corrupt(Cf::Meta, b"", "injected write failure"));
            }
            self.inner.write(batch)
        }
        fn for_each_range(
            &self,
            cf: Cf,
            from: &[u8],
            to: Option<&[u8]>,
            f: &mut crate::Visitor<'_>,
        ) -> Result<(), StoreError> {
            self.inner.for_each_range(cf, from, to, f)
        }
        fn with_view(
            &self,
            f: &mut dyn FnMut(&dyn crate::StoreView) -> Result<(), StoreError>,
        ) -> Result<(), StoreError> {
            self.inner.with_view(f)
        }
    }

    /// One step of the cache property test.
    #[derive(Clone, Debug)]
    enum Step {
        Read(u8),
        /// Accounts (by number) and their new nonce; 0 deletes.
        Commit(Vec<(u8, u64)>),
        FailedCommit(Vec<(u8, u64)>),
    }

    fn account_id(i: u8) -> AccountId {
        AccountId([i; 32])
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let writes = proptest::collection::vec((0u8..12, 0u64..4), 0..6);
        prop_oneof![
            4 => (0u8..12).prop_map(Step::Read),
            2 => writes.clone().prop_map(Step::Commit),
            1 => writes.prop_map(Step::FailedCommit),
        ]
    }

    proptest::proptest! {
        /// Reads through a small cache (evicting often) always equal reads
        /// of the same store without a cache, across commits, deletions and
        /// failed writes.
        #[test]
        fn account_cache_is_coherent_with_the_store(
            steps in proptest::collection::vec(step(), 1..80),
            entries_max in 1usize..6,
        ) {
            let store = Arc::new(FlakyStore::default());
            let cached = ChainStore::with_account_cache(store.clone(), entries_max);
            let plain = ChainStore::new(store.clone());
            let mut index = 0;
            for s in &steps {
                match s {
                    Step::Read(i) => {
                        let id = account_id(*i);
                        proptest::prop_assert_eq!(cached.account(&id).unwrap(), plain.account(&id).unwrap());
                    }
                    Step::Commit(w) | Step::FailedCommit(w) => {
                        let fail = matches!(s, Step::FailedCommit(_));
                        let mut entries: Vec<_> = w
                            .iter()
                            .map(|&(i, n)| {
                                let v = (n > 0).then_some(StateValue::Account(Account { balance: n, nonce: n }));
                                (StateKey::Account(account_id(i)), v)
                            })
                            .collect();
                        entries.sort_by_key(|e| e.0);
                        entries.dedup_by_key(|e| e.0);
                        let (b, o) = diff_commit(index, entries);
                        store.fail_next.store(fail, std::sync::atomic::Ordering::Relaxed);
                        let r = cached.commit(&b, &o);
                        proptest::prop_assert_eq!(r.is_err(), fail);
                        if !fail {
                            index += 1;
                        }
                    }
                }
                let st = cached.account_cache_stats().unwrap();
                proptest::prop_assert!(st.entries <= entries_max);
            }
            for i in 0..12 {
                let id = account_id(i);
                proptest::prop_assert_eq!(cached.account(&id).unwrap(), plain.account(&id).unwrap());
            }
        }
    }

    /// A store whose reads yield the thread after reading, widening the
    /// window in which a commit can overtake a reader.
    struct YieldingStore(MemStore);

    impl Store for YieldingStore {
        fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            let v = self.0.get(cf, key);
            std::thread::yield_now();
            v
        }
        fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
            self.0.write(batch)
        }
        fn for_each_range(
            &self,
            cf: Cf,
            from: &[u8],
            to: Option<&[u8]>,
            f: &mut crate::Visitor<'_>,
        ) -> Result<(), StoreError> {
            self.0.for_each_range(cf, from, to, f)
        }
        fn with_view(
            &self,
            f: &mut dyn FnMut(&dyn crate::StoreView) -> Result<(), StoreError>,
        ) -> Result<(), StoreError> {
            self.0.with_view(f)
        }
    }

    #[test]
    fn account_cache_never_serves_a_value_older_than_the_last_commit() {
        // A writer commits nonce k to every account, then publishes k;
        // readers (missing often: 2 entries for 6 accounts) must never see a
        // nonce below the published one.
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        const ACCOUNTS: u8 = 6;
        const COMMITS: u64 = 2_000;
        let store = Arc::new(YieldingStore(MemStore::new()));
        let chain = ChainStore::with_account_cache(store, 2);
        let published = AtomicU64::new(0);
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            for r in 0..2u8 {
                let (chain, published, done) = (&chain, &published, &done);
                s.spawn(move || {
                    let mut i = r;
                    while !done.load(Ordering::Acquire) {
                        let k = published.load(Ordering::Acquire);
                        let a = chain.account(&account_id(i % ACCOUNTS)).unwrap();
                        assert!(
                            a.nonce >= k,
                            "read nonce {} after commit {k} returned",
                            a.nonce
                        );
                        i = i.wrapping_add(1);
                    }
                });
            }
            for k in 1..=COMMITS {
                let entries = (0..ACCOUNTS)
                    .map(|i| {
                        let a = Account {
                            balance: 1,
                            nonce: k,
                        };
                        (
                            StateKey::Account(account_id(i)),
                            Some(StateValue::Account(a)),
                        )
                    })
                    .collect();
                let (b, o) = diff_commit(k - 1, entries);
                chain.commit(&b, &o).unwrap();
                published.store(k, Ordering::Release);
            }
            done.store(true, Ordering::Release);
        });
        let st = chain.account_cache_stats().unwrap();
        assert!(st.hits > 0 && st.misses > 0, "{st:?}");
    }

    #[test]
    fn block_decode_rejects_garbage() {
        let b = BlockRecord {
            index: 3,
            timestamp_ms: 9,
            txs: vec![vec![1, 2, 3], vec![]],
        };
        let e = b.encode();
        assert_eq!(BlockRecord::decode(&e).unwrap(), b);
        for len in 0..e.len() {
            assert!(BlockRecord::decode(&e[..len]).is_err());
        }
        let mut bad = e.clone();
        bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(BlockRecord::decode(&bad).is_err());
    }
}
