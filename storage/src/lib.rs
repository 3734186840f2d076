//! Durable storage: a key-value [`Store`] with atomic write batches, and the
//! chain layout on top of it ([`chain::ChainStore`]).
//!
//! ```text
//!  exec output ──▶ ChainStore::commit ──▶ one WriteBatch:
//!                     blocks[index]       = encoded block (its transactions)
//!                     txs[digest]         = (commit index, position, status)
//!                     state[key]          = value (or delete)
//!                     meta["last_commit"] = (index, state root, timestamp)
//!                     meta["commit/"index] = the same record, per commit
//!
//!  consensus tile ──▶ ChainStore::write_consensus ──▶ one WriteBatch:
//!                     dag[round‖author‖digest] = block bytes (before acting on it)
//!                     batches[digest]          = batch bytes (before acking it)
//!                  ──▶ Store::write (RocksDB, WAL on) ──▶ durable ──▶ acknowledged
//! ```
//!
//! A commit is *acknowledged* (clients told, pool settled) only after its
//! write batch returned from the store: with the WAL on, it then survives a
//! process crash; with `sync_writes` it also survives power loss.
//!
//! Committed accounts are read through a bounded cache ([`cache`]):
//!
//! ```text
//!  ChainStore::account ──▶ AccountCache ──miss──▶ state[key] ──▶ fill (if no commit since)
//!  ChainStore::commit  ──▶ write returned ──▶ AccountCache ◀── the touched accounts' new values
//! ```
//!
//! Behind the commit path (docs/storage.md):
//!
//! ```text
//!  storage tile ──every N commits──▶ snapshot thread: consistent view ──▶
//!                                    snapshots/snapshot-<index>.vsnap (checksummed)
//!               ──every M commits──▶ pruning: blocks/txs/commit meta below the
//!                                    retention, consensus log below the
//!                                    committed rounds minus a margin
//!  velox replay ──▶ re-executes stored commits, compares every state root
//! ```

pub mod cache;
pub mod chain;
pub mod mem;
pub mod rocks;
pub mod snapshot;

pub use cache::{AccountCache, AccountCacheStats, ACCOUNT_CACHE_ENTRIES_DEFAULT};
pub use chain::{
    BlockRecord, ChainStore, CommitConsensus, CommitMeta, LeaderPosition, PruneStats, TxLocation,
    DAG_KEY_LEN,
};
pub use mem::MemStore;
pub use rocks::RocksStore;
pub use snapshot::{SnapshotError, SnapshotHeader};

/// Column families (key spaces).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    Blocks,
    Txs,
    State,
    Meta,
    /// The consensus log: every DAG block this validator accepted, keyed by
    /// (round, author, digest), so it can recover and serve peers that are
    /// behind the DAG window.
    Dag,
    /// Transaction batches this validator stored (its own and peers'),
    /// keyed by batch digest.
    Batches,
    /// When each stored batch was written: round (8, big-endian) ‖ batch
    /// digest -> empty, so the consensus log's batches can be pruned by
    /// round like its blocks.
    BatchRounds,
    /// The batch digests each consensus commit included: commit index (8,
    /// big-endian) -> digests before it (8, little-endian) ‖ digests. The
    /// consensus tile rebuilds its duplicate-batch window from it at start.
    CommitBatches,
}

impl Cf {
    pub const ALL: [Cf; 8] = [
        Cf::Blocks,
        Cf::Txs,
        Cf::State,
        Cf::Meta,
        Cf::Dag,
        Cf::Batches,
        Cf::BatchRounds,
        Cf::CommitBatches,
    ];
    /// Position in [`Cf::ALL`], for tables indexed by column family.
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn name(self) -> &'static str {
        match self {
            Cf::Blocks => "blocks",
            Cf::Txs => "txs",
            Cf::State => "state",
            Cf::Meta => "meta",
            Cf::Dag => "dag",
            Cf::Batches => "batches",
            Cf::BatchRounds => "batch_rounds",
            Cf::CommitBatches => "commit_batches",
        }
    }
}

/// An atomic group of writes.
#[derive(Default, Debug, Clone)]
pub struct WriteBatch {
    pub ops: Vec<(Cf, Vec<u8>, Option<Vec<u8>>)>,
    /// Range deletions `[from, to)`, applied after `ops` in the same atomic
    /// write (pruning; one tombstone per range in RocksDB).
    pub ranges: Vec<(Cf, Vec<u8>, Vec<u8>)>,
}

impl WriteBatch {
    pub fn put(&mut self, cf: Cf, k: impl Into<Vec<u8>>, v: impl Into<Vec<u8>>) {
        self.ops.push((cf, k.into(), Some(v.into())));
    }
    pub fn delete(&mut self, cf: Cf, k: impl Into<Vec<u8>>) {
        self.ops.push((cf, k.into(), None));
    }
    /// Deletes every key `from <= k < to` of `cf`.
    pub fn delete_range(&mut self, cf: Cf, from: impl Into<Vec<u8>>, to: impl Into<Vec<u8>>) {
        self.ranges.push((cf, from.into(), to.into()));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.ranges.is_empty()
    }
}

/// Receives a batch's operations as they are produced. [`Store::write_with`]
/// hands out one that writes straight into the engine's own batch, so the
/// commit path does not copy every key and value into an intermediate
/// [`WriteBatch`] first.
pub trait BatchWriter {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]);
    fn delete(&mut self, cf: Cf, key: &[u8]);
}

impl BatchWriter for WriteBatch {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        WriteBatch::put(self, cf, key, value);
    }
    fn delete(&mut self, cf: Cf, key: &[u8]) {
        WriteBatch::delete(self, cf, key);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// The database's files are damaged (a truncated or corrupted SST,
    /// MANIFEST, CURRENT or WAL file): found at open or on a checksummed
    /// read. Nothing was changed; the way out is a restore.
    #[error(
        "the database in {dir} is corrupt{}: {detail}. \
         Stop the node, move {dir} aside and restore from a snapshot \
         (`velox snapshot restore --file DATA_DIR/snapshots/<newest>.vsnap --data-dir <new dir> --config <config>`), \
         or resync; docs/storage.md, \"Recovery procedures\"",
        .file.as_ref().map(|f| format!(" (file {f})")).unwrap_or_default()
    )]
    DatabaseCorrupt {
        dir: String,
        /// The damaged file, when RocksDB named it.
        file: Option<String>,
        detail: String,
    },
    /// Another process (a running node, or `velox replay`) holds the
    /// database's lock.
    #[error(
        "the database in {dir} is in use by another process (a running `velox node`?): {detail}; \
         stop that process first, or work on a copy of the data directory"
    )]
    Locked { dir: String, detail: String },
    /// Returned by a visitor to end an iteration early; the caller that
    /// asked for it treats it as success.
    #[error("iteration stopped by its visitor")]
    Stopped,
    /// No database where one was expected (tools never create one).
    #[error("no database in {dir}: {detail}; pass the data directory of a node (its `data_dir`)")]
    Missing { dir: String, detail: String },
    #[error("corrupt record in {cf} at key {key}: {what}")]
    Corrupt {
        cf: &'static str,
        key: String,
        what: String,
    },
    #[error(
        "data directory {dir} holds chain {found}, but the configuration is for chain {expected}; \
         point data_dir at an empty directory or at this chain's data"
    )]
    WrongChain {
        dir: String,
        found: String,
        expected: String,
    },
}

/// A visitor of key-value entries; returning an error stops the iteration.
pub type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// A key-value store with atomic batches. Implementations are thread-safe;
/// calls block, so they run on the storage tile (or a blocking pool), never
/// on a reactor that serves the network.
pub trait Store: Send + Sync {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Applies every op of `batch` or none.
    fn write(&self, batch: WriteBatch) -> Result<(), StoreError>;
    /// [`Store::write`], durable against power loss before it returns (the
    /// write-ahead log fsynced) whatever the store's `sync_writes`: for
    /// writes a message to a peer depends on (the consensus log). The
    /// default is `write`, for stores with nothing to sync.
    fn write_synced(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.write(batch)
    }
    /// Builds one atomic batch with `fill` and applies it, all ops or none.
    /// `bytes_hint` is the expected size of the keys and values, so the
    /// engine can size its buffer once. The default collects a
    /// [`WriteBatch`]; engines override it to skip that copy.
    fn write_with(
        &self,
        bytes_hint: usize,
        fill: &mut dyn FnMut(&mut dyn BatchWriter),
    ) -> Result<(), StoreError> {
        let _ = bytes_hint;
        let mut wb = WriteBatch::default();
        fill(&mut wb);
        self.write(wb)
    }

    /// Visits every entry of `cf` in key order without loading them all.
    fn for_each(&self, cf: Cf, f: &mut Visitor<'_>) -> Result<(), StoreError> {
        self.for_each_range(cf, &[], None, f)
    }

    /// Visits the entries of `cf` with `from <= key < to` (no upper bound
    /// when `to` is `None`) in key order, without loading them all (engines
    /// seek to `from`). The visitor may read from the store.
    fn for_each_range(
        &self,
        cf: Cf,
        from: &[u8],
        to: Option<&[u8]>,
        f: &mut Visitor<'_>,
    ) -> Result<(), StoreError>;

    /// Runs `f` on a consistent read-only view of the whole store as of the
    /// call: writes made while `f` runs are not seen. Snapshots are written
    /// from such a view on a background thread while commits go on.
    fn with_view(
        &self,
        f: &mut dyn FnMut(&dyn StoreView) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Makes everything written so far durable in the engine's files (a
    /// clean stop calls it so the next start replays no log).
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Reads every entry of every column family from one consistent view, so
/// every data block's checksum is verified; returns the entries read. A
/// damaged table file comes back as [`StoreError::DatabaseCorrupt`] naming
/// it. The node runs it once in the background after start (the state
/// column is read in full at start anyway).
pub fn scan_all(store: &dyn Store) -> Result<u64, StoreError> {
    let mut n = 0u64;
    store.with_view(&mut |v| {
        for cf in Cf::ALL {
            v.for_each(cf, &mut |_, _| {
                n += 1;
                Ok(())
            })?;
        }
        Ok(())
    })?;
    Ok(n)
}

/// A consistent read-only view of a [`Store`] (see [`Store::with_view`]).
pub trait StoreView {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Visits every entry of `cf` in key order without loading them all.
    fn for_each(&self, cf: Cf, f: &mut Visitor<'_>) -> Result<(), StoreError>;
}
