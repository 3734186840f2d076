//! The RocksDB [`Store`].

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteOptions, DB};

use crate::{Cf, Store, StoreError, Visitor, WriteBatch};

/// RocksDB settings the node exposes.
#[derive(Clone, Copy, Debug)]
pub struct RocksConfig {
    /// fsync the WAL on every commit (survives power loss, costs latency).
    pub sync_writes: bool,
    /// Block cache for reads, in bytes.
    pub block_cache_bytes: usize,
}

impl Default for RocksConfig {
    fn default() -> Self {
        Self {
            sync_writes: false,
            block_cache_bytes: 64 << 20,
        }
    }
}

pub struct RocksStore {
    db: DB,
    sync: bool,
}

impl RocksStore {
    pub fn open(path: &Path, cfg: RocksConfig) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_paranoid_checks(true);
        let cache = rocksdb::Cache::new_lru_cache(cfg.block_cache_bytes);
        let cfs = Cf::ALL.iter().map(|cf| {
            let mut o = Options::default();
            let mut bo = rocksdb::BlockBasedOptions::default();
            bo.set_block_cache(&cache);
            bo.set_bloom_filter(10.0, false);
            o.set_block_based_table_factory(&bo);
            ColumnFamilyDescriptor::new(cf.name(), o)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Self {
            db,
            sync: cfg.sync_writes,
        })
    }

    fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("every column family is created at open")
    }
}

impl Store for RocksStore {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(cf), key)?)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut wb = rocksdb::WriteBatch::default();
        for (cf, k, v) in &batch.ops {
            match v {
                Some(v) => wb.put_cf(self.cf(*cf), k, v),
                None => wb.delete_cf(self.cf(*cf), k),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        wo.disable_wal(false);
        self.db.write_opt(wb, &wo)?;
        Ok(())
    }

    fn for_each(&self, cf: Cf, f: &mut Visitor<'_>) -> Result<(), StoreError> {
        for item in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
            let (k, v) = item?;
            f(&k, &v)?;
        }
        Ok(())
    }
}
