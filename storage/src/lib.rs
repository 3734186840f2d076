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

pub mod cache;
pub mod chain;
pub mod mem;
pub mod rocks;

pub use cache::{AccountCache, AccountCacheStats, ACCOUNT_CACHE_ENTRIES_DEFAULT};
pub use chain::{BlockRecord, ChainStore, CommitMeta, TxLocation, DAG_KEY_LEN};
pub use mem::MemStore;
pub use rocks::RocksStore;

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
}

impl Cf {
    pub const ALL: [Cf; 6] = [
        Cf::Blocks,
        Cf::Txs,
        Cf::State,
        Cf::Meta,
        Cf::Dag,
        Cf::Batches,
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
        }
    }
}

/// An atomic group of writes.
#[derive(Default, Debug, Clone)]
pub struct WriteBatch {
    pub ops: Vec<(Cf, Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    pub fn put(&mut self, cf: Cf, k: impl Into<Vec<u8>>, v: impl Into<Vec<u8>>) {
        self.ops.push((cf, k.into(), Some(v.into())));
    }
    pub fn delete(&mut self, cf: Cf, k: impl Into<Vec<u8>>) {
        self.ops.push((cf, k.into(), None));
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
    /// Visits every entry of `cf` in key order without loading them all.
    fn for_each(&self, cf: Cf, f: &mut Visitor<'_>) -> Result<(), StoreError>;

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

    /// Visits the entries of `cf` with `from <= key < to` (no upper bound
    /// when `to` is `None`) in key order, without loading them all. The
    /// visitor may read from the store. The default filters
    /// [`Store::for_each`]; engines override it to seek.
    fn for_each_range(
        &self,
        cf: Cf,
        from: &[u8],
        to: Option<&[u8]>,
        f: &mut Visitor<'_>,
    ) -> Result<(), StoreError> {
        self.for_each(cf, &mut |k, v| {
            if k >= from && to.is_none_or(|t| k < t) {
                f(k, v)
            } else {
                Ok(())
            }
        })
    }
}
