//! The RocksDB [`Store`].
//!
//! Integrity: `paranoid_checks` is on (RocksDB refuses to open on any
//! inconsistency it can see: a missing or truncated SST whose size differs
//! from the MANIFEST's record, a bad MANIFEST or CURRENT, a corrupt WAL
//! record), every table file is opened at start (its footer and index are
//! read), and every read verifies block checksums. Open errors that mean
//! damaged files become [`StoreError::DatabaseCorrupt`] naming the file and
//! the way out; a held lock becomes [`StoreError::Locked`].

use std::path::Path;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, ErrorKind, IteratorMode, Options, ReadOptions,
    WriteOptions, DB,
};

use crate::{BatchWriter, Cf, Store, StoreError, StoreView, Visitor, WriteBatch};

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
    /// The same with the WAL fsynced ([`Store::write_synced`]).
    write_synced: WriteOptions,
    /// The database directory, for error messages.
    dir: String,
}

/// RocksDB info-log files kept (LOG.old.*): bounds their disk use.
pub const INFO_LOG_FILES_KEPT: usize = 5;

/// The options [`RocksStore::open`] uses: database options and one
/// descriptor per column family of [`Cf::ALL`], in that order. Public so
/// that benchmarks can open a bare `rocksdb::DB` configured identically.
pub fn db_options(cfg: &RocksConfig) -> (Options, Vec<ColumnFamilyDescriptor>) {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_paranoid_checks(true);
    // Open every table file at start: a damaged footer or index is found
    // now, not at the first read of that file.
    opts.set_max_open_files(-1);
    opts.set_keep_log_file_num(INFO_LOG_FILES_KEPT);
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

/// Reads that verify block checksums (RocksDB's default, stated here so it
/// stays so); `fill_cache` off for scans, so blocks read by a scan do not
/// displace the hot blocks of point reads.
fn read_options(fill_cache: bool) -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_verify_checksums(true);
    ro.fill_cache(fill_cache);
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
    /// Opens the database at `path`, creating it if the directory holds
    /// none (the node's first start).
    pub fn open(path: &Path, cfg: RocksConfig) -> Result<Self, StoreError> {
        Self::open_with(path, cfg, true)
    }

    /// Opens an existing database; [`StoreError::Missing`] if there is none
    /// (tools such as `velox replay` never create one).
    pub fn open_existing(path: &Path, cfg: RocksConfig) -> Result<Self, StoreError> {
        Self::open_with(path, cfg, false)
    }

    fn open_with(path: &Path, cfg: RocksConfig, create: bool) -> Result<Self, StoreError> {
        let dir = path.display().to_string();
        check_current_file(path)?;
        if !create && !path.join("CURRENT").exists() {
            return Err(StoreError::Missing {
                dir,
                detail: "no CURRENT file".into(),
            });
        }
        let (mut opts, cfs) = db_options(&cfg);
        opts.create_if_missing(create);
        let db =
            DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| classify_open_error(&dir, e))?;
        Ok(Self {
            db,
            write: write_options(&cfg),
            write_synced: write_options(&RocksConfig {
                sync_writes: true,
                ..cfg
            }),
            dir,
        })
    }

    /// A read error: damaged files become [`StoreError::DatabaseCorrupt`].
    fn read_error(&self, e: rocksdb::Error) -> StoreError {
        if e.kind() == ErrorKind::Corruption {
            let msg = e.to_string();
            return StoreError::DatabaseCorrupt {
                dir: self.dir.clone(),
                file: damaged_file(&msg),
                detail: msg,
            };
        }
        StoreError::Rocks(e)
    }

    fn cf(&self, cf: Cf) -> &ColumnFamily {
        self.db
            .cf_handle(cf.name())
            .expect("every column family is created at open")
    }

    fn cfs(&self) -> [&ColumnFamily; Cf::ALL.len()] {
        Cf::ALL.map(|cf| self.cf(cf))
    }

    fn batch(&self, bytes_hint: usize) -> RocksBatch<'_> {
        RocksBatch {
            // Each op adds a few bytes of framing (tag, cf id, varint lengths).
            wb: rocksdb::WriteBatch::with_capacity_bytes(bytes_hint + bytes_hint / 8 + 64),
            cfs: self.cfs(),
        }
    }

    /// `batch` as one RocksDB batch.
    fn fill(&self, batch: &WriteBatch) -> RocksBatch<'_> {
        let bytes = batch
            .ops
            .iter()
            .map(|(_, k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        let mut b = self.batch(bytes);
        for (cf, k, v) in &batch.ops {
            match v {
                Some(v) => b.put(*cf, k, v),
                None => b.delete(*cf, k),
            }
        }
        for (cf, from, to) in &batch.ranges {
            b.wb.delete_range_cf(self.cf(*cf), from, to);
        }
        b
    }

    fn apply(&self, b: RocksBatch<'_>) -> Result<(), StoreError> {
        self.apply_with(b, &self.write)
    }

    fn apply_with(&self, b: RocksBatch<'_>, opts: &WriteOptions) -> Result<(), StoreError> {
        self.db.write_opt(b.wb, opts)?;
        Ok(())
    }

    /// Visits entries from where `it` was positioned, borrowing each key and
    /// value from the iterator (no copy per entry).
    fn visit(
        &self,
        mut it: rocksdb::DBRawIterator<'_>,
        f: &mut Visitor<'_>,
    ) -> Result<(), StoreError> {
        while let Some((k, v)) = it.item() {
            f(k, v)?;
            it.next();
        }
        it.status().map_err(|e| self.read_error(e))
    }

    /// Bytes of the live table files (SSTs) of every column family.
    pub fn sst_bytes(&self) -> u64 {
        Cf::ALL
            .iter()
            .filter_map(|c| {
                self.db
                    .property_int_value_cf(self.cf(*c), rocksdb::properties::TOTAL_SST_FILES_SIZE)
                    .ok()
                    .flatten()
            })
            .sum()
    }
}

/// A database directory whose files exist but whose CURRENT is gone would
/// be taken for an empty one and a new database created over it: refuse.
fn check_current_file(path: &Path) -> Result<(), StoreError> {
    if path.join("CURRENT").exists() {
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return Ok(());
    };
    let has_db_files = entries.filter_map(|e| e.ok()).any(|e| {
        let n = e.file_name().to_string_lossy().to_string();
        n.ends_with(".sst") || n.starts_with("MANIFEST-")
    });
    if has_db_files {
        return Err(StoreError::DatabaseCorrupt {
            dir: path.display().to_string(),
            file: Some(path.join("CURRENT").display().to_string()),
            detail: "CURRENT is missing while table and MANIFEST files are present".into(),
        });
    }
    Ok(())
}

/// Maps a RocksDB open error to what an operator can act on.
fn classify_open_error(dir: &str, e: rocksdb::Error) -> StoreError {
    let msg = e.to_string();
    let lower = msg.to_ascii_lowercase();
    if lower.contains("lock")
        && (lower.contains("temporarily unavailable")
            || lower.contains("no locks available")
            || lower.contains("lock hold")
            || lower.contains("locked"))
    {
        return StoreError::Locked {
            dir: dir.to_string(),
            detail: msg,
        };
    }
    if lower.contains("does not exist (create_if_missing is false)") {
        return StoreError::Missing {
            dir: dir.to_string(),
            detail: msg,
        };
    }
    let file = damaged_file(&msg);
    let damaged = e.kind() == ErrorKind::Corruption
        || (e.kind() == ErrorKind::IOError && file.is_some())
        || lower.contains("size mismatch")
        || lower.contains("checksum mismatch");
    if damaged {
        return StoreError::DatabaseCorrupt {
            dir: dir.to_string(),
            file,
            detail: msg,
        };
    }
    StoreError::Rocks(e)
}

/// The first database file a RocksDB message names (SST, MANIFEST,
/// CURRENT, WAL or OPTIONS), if any.
pub fn damaged_file(msg: &str) -> Option<String> {
    msg.split(|c: char| c.is_whitespace() || c == ',' || c == '\'' || c == '"')
        .map(|t| {
            t.trim_end_matches([':', '.', ';', ')'])
                .trim_start_matches('(')
        })
        .find(|t| {
            let name = t.rsplit('/').next().unwrap_or(t);
            name.ends_with(".sst")
                || name.ends_with(".log")
                || name.starts_with("MANIFEST-")
                || name == "CURRENT"
                || name.starts_with("OPTIONS-")
        })
        .map(str::to_string)
}

impl Store for RocksStore {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_cf_opt(self.cf(cf), key, &read_options(true))
            .map_err(|e| self.read_error(e))
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let b = self.fill(&batch);
        self.apply(b)
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let b = self.fill(&batch);
        self.apply_with(b, &self.write_synced)
    }

    fn write_with(
        &self,
        bytes_hint: usize,
        fill: &mut dyn FnMut(&mut dyn BatchWriter),
    ) -> Result<(), StoreError> {
        let mut b = self.batch(bytes_hint);
        fill(&mut b);
        self.apply(b)
    }

    fn for_each_range(
        &self,
        cf: Cf,
        from: &[u8],
        to: Option<&[u8]>,
        f: &mut Visitor<'_>,
    ) -> Result<(), StoreError> {
        let mut ro = read_options(false);
        if let Some(t) = to {
            ro.set_iterate_upper_bound(t.to_vec());
        }
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf), ro);
        it.seek(from);
        self.visit(it, f)
    }

    fn with_view(
        &self,
        f: &mut dyn FnMut(&dyn StoreView) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let view = RocksView {
            store: self,
            snap: self.db.snapshot(),
        };
        f(&view)
    }

    fn flush(&self) -> Result<(), StoreError> {
        let cfs: Vec<&ColumnFamily> = Cf::ALL.iter().map(|c| self.cf(*c)).collect();
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        Ok(())
    }
}

/// A RocksDB snapshot: reads see the database as of its creation.
struct RocksView<'a> {
    store: &'a RocksStore,
    snap: rocksdb::Snapshot<'a>,
}

impl StoreView for RocksView<'_> {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.snap
            .get_cf_opt(self.store.cf(cf), key, read_options(true))
            .map_err(|e| self.store.read_error(e))
    }

    fn for_each(&self, cf: Cf, f: &mut Visitor<'_>) -> Result<(), StoreError> {
        // A full scan: keep it out of the block cache the node reads from.
        for item in
            self.snap
                .iterator_cf_opt(self.store.cf(cf), read_options(false), IteratorMode::Start)
        {
            let (k, v) = item.map_err(|e| self.store.read_error(e))?;
            f(&k, &v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RocksDB's own count of WAL syncs ("Cumulative WAL: N writes, M syncs").
    fn wal_syncs(s: &RocksStore) -> u64 {
        let stats = s.db.property_value("rocksdb.stats").unwrap().unwrap();
        let line = stats
            .lines()
            .find(|l| l.starts_with("Cumulative WAL:"))
            .unwrap_or_else(|| panic!("no WAL line in {stats}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| w.starts_with("syncs")).unwrap();
        words[at - 1].replace(',', "").parse().unwrap()
    }

    /// With `sync_writes` off, a plain write does not fsync the WAL and a
    /// synced one does (the consensus log's writes), and both are there
    /// after reopening.
    #[test]
    fn synced_writes_fsync_the_wal_whatever_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = RocksConfig {
            sync_writes: false,
            ..RocksConfig::default()
        };
        {
            let s = RocksStore::open(dir.path(), cfg).unwrap();
            let mut wb = WriteBatch::default();
            wb.put(Cf::Dag, b"plain".to_vec(), b"1".to_vec());
            s.write(wb).unwrap();
            assert_eq!(wal_syncs(&s), 0);
            let mut wb = WriteBatch::default();
            wb.put(Cf::Dag, b"synced".to_vec(), b"2".to_vec());
            s.write_synced(wb).unwrap();
            assert_eq!(wal_syncs(&s), 1);
        }
        let s = RocksStore::open(dir.path(), cfg).unwrap();
        assert_eq!(s.get(Cf::Dag, b"plain").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(Cf::Dag, b"synced").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn damaged_file_is_found_in_rocksdb_messages() {
        assert_eq!(
            damaged_file("Corruption: Sst file size mismatch: /d/db/000009.sst. Size recorded in manifest 10, actual size 5"),
            Some("/d/db/000009.sst".into())
        );
        assert_eq!(
            damaged_file("Corruption: CURRENT file does not end with newline"),
            Some("CURRENT".into())
        );
        assert_eq!(
            damaged_file("IO error: No such file or directory: While opening a file for sequentially reading: /d/db/MANIFEST-000005: No such file or directory"),
            Some("/d/db/MANIFEST-000005".into())
        );
        assert_eq!(damaged_file("Invalid argument: nothing here"), None);
    }
}
