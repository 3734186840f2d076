//! The RocksDB [`Store`].

use std::path::Path;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, ReadOptions, WriteOptions, DB};

use crate::{BatchWriter, Cf, Store, StoreError, Visitor, WriteBatch};

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
    /// [`write_options`] of the configuration it was opened with.
    write: WriteOptions,
}

/// The options [`RocksStore::open`] uses: database options and one
/// descriptor per column family of [`Cf::ALL`], in that order. Public so
/// that benchmarks can open a bare `rocksdb::DB` configured identically.
pub fn db_options(cfg: &RocksConfig) -> (Options, Vec<ColumnFamilyDescriptor>) {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_paranoid_checks(true);
    let cache = rocksdb::Cache::new_lru_cache(cfg.block_cache_bytes);
    let cfs = Cf::ALL
        .iter()
        .map(|cf| {
            let mut o = Options::default();
            let mut bo = rocksdb::BlockBasedOptions::default();
            bo.set_block_cache(&cache);
            bo.set_bloom_filter(10.0, false);
            o.set_block_based_table_factory(&bo);
            ColumnFamilyDescriptor::new(cf.name(), o)
        })
        .collect();
    (opts, cfs)
}

/// Write options of every [`RocksStore`] write: WAL on, fsync per
/// `sync_writes`.
pub fn write_options(cfg: &RocksConfig) -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(cfg.sync_writes);
    wo.disable_wal(false);
    wo
}

/// Read options of scans: blocks read by a scan do not displace the hot
/// blocks of point reads in the block cache.
fn scan_options() -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.fill_cache(false);
    ro
}

/// A RocksDB batch being filled through [`BatchWriter`], with the column
/// family handles resolved once per batch (a lookup by name costs a map
/// search per op).
struct RocksBatch<'a> {
    wb: rocksdb::WriteBatch,
    cfs: [&'a ColumnFamily; Cf::ALL.len()],
}

impl BatchWriter for RocksBatch<'_> {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.wb.put_cf(self.cfs[cf.index()], key, value);
    }
    fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.wb.delete_cf(self.cfs[cf.index()], key);
    }
}

impl RocksStore {
    pub fn open(path: &Path, cfg: RocksConfig) -> Result<Self, StoreError> {
        let (opts, cfs) = db_options(&cfg);
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Self {
            db,
            write: write_options(&cfg),
        })
    }

    fn cf(&self, cf: Cf) -> &ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("every column family is created at open")
    }

    fn cfs(&self) -> [&ColumnFamily; Cf::ALL.len()] {
        Cf::ALL.map(|cf| self.cf(cf))
    }

    /// Visits entries from where `it` was positioned, borrowing each key and
    /// value from the iterator (no copy per entry).
    fn visit(mut it: rocksdb::DBRawIterator<'_>, f: &mut Visitor<'_>) -> Result<(), StoreError> {
        while let Some((k, v)) = it.item() {
            f(k, v)?;
            it.next();
        }
        it.status()?;
        Ok(())
    }
}

impl Store for RocksStore {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(cf), key)?)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let bytes = batch
            .ops
            .iter()
            .map(|(_, k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        self.write_with(bytes, &mut |w| {
            for (cf, k, v) in &batch.ops {
                match v {
                    Some(v) => w.put(*cf, k, v),
                    None => w.delete(*cf, k),
                }
            }
        })
    }

    fn write_with(
        &self,
        bytes_hint: usize,
        fill: &mut dyn FnMut(&mut dyn BatchWriter),
    ) -> Result<(), StoreError> {
        let mut b = RocksBatch {
            // Each op adds a few bytes of framing (tag, cf id, varint lengths).
            wb: rocksdb::WriteBatch::with_capacity_bytes(bytes_hint + bytes_hint / 8 + 64),
            cfs: self.cfs(),
        };
        fill(&mut b);
        self.db.write_opt(b.wb, &self.write)?;
        Ok(())
    }

    fn for_each(&self, cf: Cf, f: &mut Visitor<'_>) -> Result<(), StoreError> {
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf), scan_options());
        it.seek_to_first();
        Self::visit(it, f)
    }

    fn for_each_range(
        &self,
        cf: Cf,
        from: &[u8],
        to: Option<&[u8]>,
        f: &mut Visitor<'_>,
    ) -> Result<(), StoreError> {
        let mut ro = scan_options();
        if let Some(to) = to {
            ro.set_iterate_upper_bound(to.to_vec());
        }
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf), ro);
        it.seek(from);
        Self::visit(it, f)
    }
}
