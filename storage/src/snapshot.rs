//! State snapshots: one file holding the state at one commit, checksummed.
//!
//! ```text
//!  header   magic "VLXSNAP\0" (8) ‖ format version u32 ‖ genesis hash (32)
//!           ‖ commit index u64 ‖ state root (32) ‖ commit timestamp_ms u64
//!           ‖ txs_total u64 ‖ has leader u8 ‖ leader round u64 ‖ leader
//!           author u32 ‖ leader digest (32) ‖ entry count u64
//!  entries  (key length u32 ‖ key ‖ value length u32 ‖ value) × count,
//!           keys strictly ascending (the state column's order)
//!  consensus (format version 2)
//!           leader count u32 ‖ (commit index u64 ‖ round u64 ‖ author u32
//!           ‖ digest (32)) × count             recent committed leaders
//!           list count u32 ‖ (commit index u64 ‖ length u32 ‖ value) × count
//!                                              the duplicate-batch window
//!  trailer  checksum (32) = blake3(header ‖ blake3(entries)
//!                                  [‖ blake3(consensus)])
//! ```
//!
//! The consensus section is what a validator joining from the snapshot
//! needs besides the state: the committed leaders of the last
//! `gc_depth_rounds` rounds (where consensus resumes) and the per-commit
//! batch-digest lists of the duplicate window (which batches later commits
//! skip). Version 1 files (no section) still verify and restore, but a
//! validator cannot join consensus from them.
//!
//! Integers are little-endian. The writer streams from a consistent store
//! view into `.<name>.tmp`, fsyncs it, renames it into place and fsyncs the
//! directory, so a crash leaves either no snapshot or a whole one. A reader
//! checks the magic, version, bounds, key order, count, trailer and
//! checksum; [`verify_snapshot`] also recomputes the state root from the
//! entries and compares it with the header's.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use velox_exec::{State, StateRoot};

use crate::chain::{ChainStore, CommitMeta, LeaderPosition};
use crate::{Cf, StoreError, StoreView};

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"VLXSNAP\0";
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;
/// Oldest format version this build reads.
pub const SNAPSHOT_FORMAT_VERSION_MIN: u32 = 1;
/// Bytes of the fixed header (the same in versions 1 and 2).
pub const SNAPSHOT_HEADER_BYTES: usize = 8 + 4 + 32 + 8 + 32 + 8 + 8 + 1 + 8 + 4 + 32 + 8;
/// Offset of the entry count in the header (patched after streaming).
const ENTRY_COUNT_OFFSET: u64 = (SNAPSHOT_HEADER_BYTES - 8) as u64;
/// Largest key and value a reader accepts: state keys are 33 bytes and
/// values a few dozen; the bounds only stop a damaged length from
/// allocating without limit.
pub const SNAPSHOT_KEY_BYTES_MAX: usize = 256;
pub const SNAPSHOT_VALUE_BYTES_MAX: usize = 1 << 20;
/// Entries written to the store per write batch during a restore (~100
/// bytes each: ~400 KiB per batch).
pub const RESTORE_ENTRIES_PER_BATCH: usize = 4096;
/// Bounds a reader puts on the consensus section (a damaged count or
/// length cannot allocate without limit): leaders of a few thousand rounds,
/// per-commit lists of the 2^20-digest window.
pub const SNAPSHOT_LEADERS_MAX: usize = 1 << 20;
pub const SNAPSHOT_BATCH_LISTS_MAX: usize = 1 << 22;
pub const SNAPSHOT_BATCH_LIST_BYTES_MAX: usize = 8 + 32 * (1 << 20);
/// File name suffix of a snapshot.
pub const SNAPSHOT_SUFFIX: &str = ".vsnap";
/// Entries between two progress reports of a pass over a snapshot: a
/// report is one callback, 4096 entries ~400 KiB of state.
pub const SNAPSHOT_PROGRESS_ENTRIES: u64 = 4096;

/// Which pass over a snapshot a progress report is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotPass {
    /// Streaming a store view into a new file.
    Write,
    /// Reading a file and checking it (checksum, order, state root).
    Verify,
    /// Writing a verified file's entries into a store.
    Restore,
}

/// How far a pass over a snapshot got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotProgress {
    pub pass: SnapshotPass,
    pub entries_done: u64,
    /// The entries the pass goes through where known: the header's count
    /// when reading (unchecked until the pass ends: for display only);
    /// unknown while writing.
    pub entries_total: Option<u64>,
    /// Entry bytes handled so far (lengths, keys and values).
    pub bytes_done: u64,
}

/// Receives progress reports: at the start of each pass, every
/// [`SNAPSHOT_PROGRESS_ENTRIES`] entries, and at its end.
pub type SnapshotProgressFn<'a> = dyn FnMut(&SnapshotProgress) + 'a;

/// What a snapshot's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub format_version: u32,
    /// The chain's genesis hash (`meta/genesis` of the data directory).
    pub genesis: [u8; 32],
    /// The commit whose state this is (index, root, timestamp, transaction
    /// count, and the consensus leader it ordered).
    pub meta: CommitMeta,
    pub entries: u64,
}

/// What joining consensus from a snapshot needs besides the state (format
/// version 2's consensus section).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotConsensus {
    /// (commit index, leader) of the commits up to the snapshot's, newest
    /// first, down to and including the first whose leader round is below
    /// the snapshot leader's round minus `gc_depth_rounds` (it marks where
    /// the set ends).
    pub leaders: Vec<(u64, LeaderPosition)>,
    /// The stored per-commit batch-digest lists (`commit_batches` entries:
    /// commit index, raw value) that hold the newest `window` digests,
    /// ascending by commit.
    pub batch_lists: Vec<(u64, Vec<u8>)>,
}

/// What the writer puts in the consensus section (from the node's config).
#[derive(Clone, Copy, Debug)]
pub struct SnapshotParams {
    /// `consensus.gc_depth_rounds`: how far back leaders are kept.
    pub gc_depth_rounds: u64,
    /// The duplicate-batch window, in digests.
    pub window_digests: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot {path}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("snapshot {path} is corrupt: {what}; it cannot be used (verify another one with `velox snapshot verify`)")]
    Corrupt { path: String, what: String },
    #[error(
        "snapshot {path}: the state root recomputed from its entries ({computed}) differs from its header's ({header}); \
         it cannot be used"
    )]
    RootMismatch {
        path: String,
        header: String,
        computed: String,
    },
    #[error("snapshot {path} is of chain {found}, but {expected} was expected (another chain's data or configuration)")]
    WrongChain {
        path: String,
        found: String,
        expected: String,
    },
    #[error(
        "{dir} already holds a chain (commit {index}); restore only into an empty data directory"
    )]
    NotEmpty { dir: String, index: u64 },
    #[error("snapshot: {0}")]
    Store(#[from] StoreError),
}

fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        path: path.display().to_string(),
        op,
        source,
    }
}

fn corrupt(path: &Path, what: impl Into<String>) -> SnapshotError {
    SnapshotError::Corrupt {
        path: path.display().to_string(),
        what: what.into(),
    }
}

/// The file name of the snapshot of commit `index` (zero-padded so names
/// sort by index).
pub fn snapshot_file_name(index: u64) -> String {
    format!("snapshot-{index:020}{SNAPSHOT_SUFFIX}")
}

/// The commit index a snapshot file name carries.
pub fn parse_snapshot_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("snapshot-")?
        .strip_suffix(SNAPSHOT_SUFFIX)?
        .parse()
        .ok()
}

fn encode_header(h: &SnapshotHeader) -> Vec<u8> {
    let mut v = Vec::with_capacity(SNAPSHOT_HEADER_BYTES);
    v.extend_from_slice(&SNAPSHOT_MAGIC);
    v.extend_from_slice(&h.format_version.to_le_bytes());
    v.extend_from_slice(&h.genesis);
    v.extend_from_slice(&h.meta.index.to_le_bytes());
    v.extend_from_slice(&h.meta.root.0);
    v.extend_from_slice(&h.meta.timestamp_ms.to_le_bytes());
    v.extend_from_slice(&h.meta.txs_total.to_le_bytes());
    let l = h.meta.leader.unwrap_or(LeaderPosition {
        round: 0,
        author: 0,
        digest: [0; 32],
    });
    v.push(h.meta.leader.is_some() as u8);
    v.extend_from_slice(&l.round.to_le_bytes());
    v.extend_from_slice(&l.author.to_le_bytes());
    v.extend_from_slice(&l.digest);
    v.extend_from_slice(&h.entries.to_le_bytes());
    assert_eq!(v.len(), SNAPSHOT_HEADER_BYTES);
    v
}

fn decode_header(
    path: &Path,
    b: &[u8; SNAPSHOT_HEADER_BYTES],
) -> Result<SnapshotHeader, SnapshotError> {
    if b[..8] != SNAPSHOT_MAGIC {
        return Err(corrupt(path, "not a velox snapshot (bad magic)"));
    }
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
    let bytes32 = |i: usize| -> [u8; 32] { b[i..i + 32].try_into().expect("32") };
    let format_version = u32_at(8);
    if !(SNAPSHOT_FORMAT_VERSION_MIN..=SNAPSHOT_FORMAT_VERSION).contains(&format_version) {
        return Err(corrupt(
            path,
            format!(
                "format version {format_version}; this build reads versions \
                 {SNAPSHOT_FORMAT_VERSION_MIN} to {SNAPSHOT_FORMAT_VERSION}"
            ),
        ));
    }
    let leader = match b[100] {
        0 => None,
        1 => Some(LeaderPosition {
            round: u64_at(101),
            author: u32_at(109),
            digest: bytes32(113),
        }),
        x => return Err(corrupt(path, format!("leader flag {x}"))),
    };
    Ok(SnapshotHeader {
        format_version,
        genesis: bytes32(12),
        meta: CommitMeta {
            index: u64_at(44),
            root: StateRoot(bytes32(52)),
            timestamp_ms: u64_at(84),
            txs_total: u64_at(92),
            leader,
        },
        entries: u64_at(145),
    })
}

/// A snapshot just written.
#[derive(Clone, Debug)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    pub header: SnapshotHeader,
    pub bytes: u64,
}

/// Streams the state of `view` (and its last commit) into a new snapshot
/// file in `dir`. Memory stays bounded: entries go straight from the
/// store's iterator through a buffered writer.
pub fn write_snapshot(
    view: &dyn StoreView,
    dir: &Path,
    params: SnapshotParams,
) -> Result<SnapshotInfo, SnapshotError> {
    write_snapshot_with_progress(view, dir, params, &mut |_| {})
}

/// [`write_snapshot`], reporting progress to `progress`.
pub fn write_snapshot_with_progress(
    view: &dyn StoreView,
    dir: &Path,
    params: SnapshotParams,
    progress: &mut SnapshotProgressFn<'_>,
) -> Result<SnapshotInfo, SnapshotError> {
    let meta = view
        .get(Cf::Meta, b"last_commit")?
        .ok_or_else(|| corrupt(dir, "the store has no commit to snapshot"))?;
    let meta =
        crate::chain::decode_meta(&meta).map_err(|e| corrupt(dir, format!("last commit: {e}")))?;
    let genesis: [u8; 32] = view
        .get(Cf::Meta, b"genesis")?
        .and_then(|g| g.try_into().ok())
        .ok_or_else(|| corrupt(dir, "the store has no genesis hash"))?;
    std::fs::create_dir_all(dir).map_err(io(dir, "create directory"))?;
    let name = snapshot_file_name(meta.index);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut header = SnapshotHeader {
        format_version: SNAPSHOT_FORMAT_VERSION,
        genesis,
        meta,
        entries: 0,
    };
    let file = File::create(&tmp).map_err(io(&tmp, "create"))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let head = encode_header(&header);
    w.write_all(&head).map_err(io(&tmp, "write"))?;
    let mut hasher = blake3::Hasher::new();
    let mut count = 0u64;
    let mut bytes_done = 0u64;
    let report = |entries_done, bytes_done| SnapshotProgress {
        pass: SnapshotPass::Write,
        entries_done,
        entries_total: None,
        bytes_done,
    };
    let mut werr: Option<std::io::Error> = None;
    progress(&report(0, 0));
    view.for_each(Cf::State, &mut |k, v| {
        let mut rec = Vec::with_capacity(8 + k.len() + v.len());
        rec.extend_from_slice(&(k.len() as u32).to_le_bytes());
        rec.extend_from_slice(k);
        rec.extend_from_slice(&(v.len() as u32).to_le_bytes());
        rec.extend_from_slice(v);
        hasher.update(&rec);
        if let Err(e) = w.write_all(&rec) {
            werr = Some(e);
            return Err(StoreError::Stopped);
        }
        count += 1;
        bytes_done += rec.len() as u64;
        if count % SNAPSHOT_PROGRESS_ENTRIES == 0 {
            progress(&report(count, bytes_done));
        }
        Ok(())
    })
    .or_else(|e| match e {
        StoreError::Stopped => Ok(()),
        e => Err(e),
    })?;
    progress(&report(count, bytes_done));
    if let Some(e) = werr {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp, "write")(e));
    }
    let consensus = encode_consensus(&consensus_of(view, &meta, params)?);
    w.write_all(&consensus).map_err(io(&tmp, "write"))?;
    header.entries = count;
    let head = encode_header(&header);
    let mut outer = blake3::Hasher::new();
    outer.update(&head);
    outer.update(hasher.finalize().as_bytes());
    outer.update(blake3::hash(&consensus).as_bytes());
    w.write_all(outer.finalize().as_bytes())
        .map_err(io(&tmp, "write"))?;
    let mut file = w
        .into_inner()
        .map_err(|e| io(&tmp, "write")(e.into_error()))?;
    file.seek(SeekFrom::Start(ENTRY_COUNT_OFFSET))
        .map_err(io(&tmp, "seek"))?;
    file.write_all(&count.to_le_bytes())
        .map_err(io(&tmp, "write"))?;
    file.sync_all().map_err(io(&tmp, "fsync"))?;
    let bytes = file.metadata().map_err(io(&tmp, "stat"))?.len();
    drop(file);
    std::fs::rename(&tmp, &path).map_err(io(&path, "rename"))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "fsync directory"))?;
    Ok(SnapshotInfo {
        path,
        header,
        bytes,
    })
}

/// The consensus section of a view whose last commit is `last`: recent
/// leaders from the per-commit records, batch lists from `commit_batches`.
fn consensus_of(
    view: &dyn StoreView,
    last: &CommitMeta,
    params: SnapshotParams,
) -> Result<SnapshotConsensus, SnapshotError> {
    let mut out = SnapshotConsensus::default();
    if let Some(l) = last.leader {
        let min_round = l.round.saturating_sub(params.gc_depth_rounds);
        let mut i = last.index;
        while i >= 1 {
            let key = crate::chain::commit_key(i);
            let Some(b) = view.get(Cf::Meta, &key)? else {
                break; // pruned or restored below: what is known ends here
            };
            let Some(leader) = crate::chain::meta_at(&key, &b)?.leader else {
                break;
            };
            out.leaders.push((i, leader));
            if leader.round < min_round {
                break; // kept: it tells a reader the set ends here
            }
            i -= 1;
        }
    }
    let mut lists: Vec<(u64, Vec<u8>, u64)> = Vec::new();
    view.for_each(Cf::CommitBatches, &mut |k, v| {
        let (_, ds) = crate::chain::decode_batch_list(k, v)?;
        let index = u64::from_be_bytes(k.try_into().expect("checked by decode"));
        if index <= last.index {
            lists.push((index, v.to_vec(), ds.len() as u64));
        }
        Ok(())
    })?;
    // The newest lists until they hold the window.
    let mut held = 0u64;
    let mut first = lists.len();
    while first > 0 && held < params.window_digests {
        first -= 1;
        held += lists[first].2;
    }
    out.batch_lists = lists
        .into_iter()
        .skip(first)
        .map(|(i, v, _)| (i, v))
        .collect();
    Ok(out)
}

fn encode_consensus(c: &SnapshotConsensus) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(c.leaders.len() as u32).to_le_bytes());
    for (i, l) in &c.leaders {
        v.extend_from_slice(&i.to_le_bytes());
        v.extend_from_slice(&l.round.to_le_bytes());
        v.extend_from_slice(&l.author.to_le_bytes());
        v.extend_from_slice(&l.digest);
    }
    v.extend_from_slice(&(c.batch_lists.len() as u32).to_le_bytes());
    for (i, b) in &c.batch_lists {
        v.extend_from_slice(&i.to_le_bytes());
        v.extend_from_slice(&(b.len() as u32).to_le_bytes());
        v.extend_from_slice(b);
    }
    v
}

/// Reads the consensus section, hashing what it reads.
fn read_consensus(
    r: &mut impl Read,
    path: &Path,
    h: &mut blake3::Hasher,
) -> Result<SnapshotConsensus, SnapshotError> {
    let mut out = SnapshotConsensus::default();
    let mut u32b = [0u8; 4];
    read_exact(r, &mut u32b, path, "leader count")?;
    h.update(&u32b);
    let n = u32::from_le_bytes(u32b) as usize;
    if n > SNAPSHOT_LEADERS_MAX {
        return Err(corrupt(path, format!("leader count {n}")));
    }
    let mut prev: Option<u64> = None;
    for _ in 0..n {
        let mut b = [0u8; 8 + 8 + 4 + 32];
        read_exact(r, &mut b, path, "leaders")?;
        h.update(&b);
        let index = u64::from_le_bytes(b[..8].try_into().expect("8"));
        if prev.is_some_and(|p| index >= p) {
            return Err(corrupt(path, "leaders not newest first"));
        }
        prev = Some(index);
        out.leaders.push((
            index,
            LeaderPosition {
                round: u64::from_le_bytes(b[8..16].try_into().expect("8")),
                author: u32::from_le_bytes(b[16..20].try_into().expect("4")),
                digest: b[20..].try_into().expect("32"),
            },
        ));
    }
    read_exact(r, &mut u32b, path, "batch list count")?;
    h.update(&u32b);
    let n = u32::from_le_bytes(u32b) as usize;
    if n > SNAPSHOT_BATCH_LISTS_MAX {
        return Err(corrupt(path, format!("batch list count {n}")));
    }
    let mut prev: Option<u64> = None;
    for _ in 0..n {
        let mut b = [0u8; 12];
        read_exact(r, &mut b, path, "batch lists")?;
        h.update(&b);
        let index = u64::from_le_bytes(b[..8].try_into().expect("8"));
        let len = u32::from_le_bytes(b[8..].try_into().expect("4")) as usize;
        if len > SNAPSHOT_BATCH_LIST_BYTES_MAX {
            return Err(corrupt(path, format!("batch list of {len} bytes")));
        }
        if prev.is_some_and(|p| index <= p) {
            return Err(corrupt(path, "batch lists out of order"));
        }
        prev = Some(index);
        let mut v = vec![0u8; len];
        read_exact(r, &mut v, path, "batch lists")?;
        h.update(&v);
        crate::chain::decode_batch_list(&index.to_be_bytes(), &v)
            .map_err(|e| corrupt(path, format!("batch list of commit {index}: {e}")))?;
        out.batch_lists.push((index, v));
    }
    Ok(out)
}

/// Reads only a snapshot's header (no checksum check: for choosing files,
/// never for trusting them).
pub fn read_snapshot_header(path: &Path) -> Result<SnapshotHeader, SnapshotError> {
    let mut f = File::open(path).map_err(io(path, "open"))?;
    let mut head = [0u8; SNAPSHOT_HEADER_BYTES];
    read_exact(&mut f, &mut head, path, "header")?;
    decode_header(path, &head)
}

/// Receives a snapshot's entries (key, value) in order.
pub type EntryVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), SnapshotError> + 'a;

/// Reads a snapshot, handing each entry to `f` in order, and checks
/// everything the format promises. `f` sees entries before the checksum
/// is known good: callers that write somewhere verify first.
pub fn read_snapshot(
    path: &Path,
    f: &mut EntryVisitor<'_>,
) -> Result<SnapshotHeader, SnapshotError> {
    read_snapshot_all(path, f).map(|(h, _)| h)
}

/// [`read_snapshot`], also returning the consensus section (`None` in a
/// version 1 file).
pub fn read_snapshot_all(
    path: &Path,
    f: &mut EntryVisitor<'_>,
) -> Result<(SnapshotHeader, Option<SnapshotConsensus>), SnapshotError> {
    let file = File::open(path).map_err(io(path, "open"))?;
    let len = file.metadata().map_err(io(path, "stat"))?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut head = [0u8; SNAPSHOT_HEADER_BYTES];
    read_exact(&mut r, &mut head, path, "header")?;
    let header = decode_header(path, &head)?;
    // Each entry takes at least 8 bytes: a damaged count cannot make us
    // loop past the file.
    let room = len.saturating_sub((SNAPSHOT_HEADER_BYTES + 32) as u64);
    if header.entries > room / 8 {
        return Err(corrupt(
            path,
            format!("entry count {} does not fit in {len} bytes", header.entries),
        ));
    }
    let mut hasher = blake3::Hasher::new();
    let mut key = Vec::with_capacity(64);
    let mut prev: Vec<u8> = Vec::with_capacity(64);
    let mut value = Vec::with_capacity(64);
    for i in 0..header.entries {
        let klen = read_len(&mut r, path, i, "key")?;
        if klen == 0 || klen > SNAPSHOT_KEY_BYTES_MAX {
            return Err(corrupt(path, format!("entry {i}: key length {klen}")));
        }
        key.resize(klen, 0);
        read_exact(&mut r, &mut key, path, "entry key")?;
        let vlen = read_len(&mut r, path, i, "value")?;
        if vlen > SNAPSHOT_VALUE_BYTES_MAX {
            return Err(corrupt(path, format!("entry {i}: value length {vlen}")));
        }
        value.resize(vlen, 0);
        read_exact(&mut r, &mut value, path, "entry value")?;
        if i > 0 && key <= prev {
            return Err(corrupt(path, format!("entry {i}: keys out of order")));
        }
        hasher.update(&(klen as u32).to_le_bytes());
        hasher.update(&key);
        hasher.update(&(vlen as u32).to_le_bytes());
        hasher.update(&value);
        f(&key, &value)?;
        std::mem::swap(&mut prev, &mut key);
    }
    let consensus = if header.format_version >= 2 {
        let mut h = blake3::Hasher::new();
        let c = read_consensus(&mut r, path, &mut h)?;
        Some((c, h.finalize()))
    } else {
        None
    };
    let mut sum = [0u8; 32];
    read_exact(&mut r, &mut sum, path, "checksum")?;
    let mut extra = [0u8; 1];
    if r.read(&mut extra).map_err(io(path, "read"))? != 0 {
        return Err(corrupt(path, "bytes after the checksum"));
    }
    let mut outer = blake3::Hasher::new();
    outer.update(&head);
    outer.update(hasher.finalize().as_bytes());
    if let Some((_, h)) = &consensus {
        outer.update(h.as_bytes());
    }
    if outer.finalize().as_bytes() != &sum {
        return Err(corrupt(path, "checksum mismatch"));
    }
    Ok((header, consensus.map(|(c, _)| c)))
}

fn read_exact(
    r: &mut impl Read,
    buf: &mut [u8],
    path: &Path,
    what: &str,
) -> Result<(), SnapshotError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => corrupt(path, format!("truncated in the {what}")),
        _ => io(path, "read")(e),
    })
}

fn read_len(r: &mut impl Read, path: &Path, i: u64, what: &str) -> Result<usize, SnapshotError> {
    let mut b = [0u8; 4];
    read_exact(r, &mut b, path, &format!("entry {i} {what} length"))?;
    Ok(u32::from_le_bytes(b) as usize)
}

/// Reads and checks a snapshot, loads its state, recomputes the state root
/// from the entries and compares it with the header's.
pub fn verify_snapshot(path: &Path) -> Result<(SnapshotHeader, State), SnapshotError> {
    verify_snapshot_with_progress(path, &mut |_| {})
}

/// Counts a reading pass's entries and reports them every
/// [`SNAPSHOT_PROGRESS_ENTRIES`].
struct PassCounter {
    at: SnapshotProgress,
}

impl PassCounter {
    /// Reports the pass's start.
    fn start(
        pass: SnapshotPass,
        path: &Path,
        progress: &mut SnapshotProgressFn<'_>,
    ) -> PassCounter {
        let at = SnapshotProgress {
            pass,
            entries_done: 0,
            // Unchecked (the pass checks it): for display only.
            entries_total: read_snapshot_header(path).ok().map(|h| h.entries),
            bytes_done: 0,
        };
        progress(&at);
        PassCounter { at }
    }

    fn entry(&mut self, k: &[u8], v: &[u8], progress: &mut SnapshotProgressFn<'_>) {
        self.at.entries_done += 1;
        self.at.bytes_done += (8 + k.len() + v.len()) as u64;
        if self.at.entries_done % SNAPSHOT_PROGRESS_ENTRIES == 0 {
            progress(&self.at);
        }
    }
}

/// [`verify_snapshot`], reporting progress to `progress`.
pub fn verify_snapshot_with_progress(
    path: &Path,
    progress: &mut SnapshotProgressFn<'_>,
) -> Result<(SnapshotHeader, State), SnapshotError> {
    let mut state = State::new();
    let mut counter = PassCounter::start(SnapshotPass::Verify, path, progress);
    let header = read_snapshot(path, &mut |k, v| {
        counter.entry(k, v, progress);
        state
            .load_entry(k, v)
            .map_err(|e| corrupt(path, format!("undecodable state entry: {e}")))
    })?;
    progress(&counter.at);
    let computed = state.recompute_root();
    if computed != header.meta.root {
        return Err(SnapshotError::RootMismatch {
            path: path.display().to_string(),
            header: header.meta.root.to_hex(),
            computed: computed.to_hex(),
        });
    }
    Ok((header, state))
}

/// Initialises an empty chain store from a snapshot: verifies the file,
/// writes its state and commit record, and checks the state read back.
/// With `genesis`, the snapshot must belong to that chain.
pub fn restore_snapshot(
    path: &Path,
    chain: &ChainStore,
    genesis: Option<[u8; 32]>,
    dir: &str,
) -> Result<SnapshotHeader, SnapshotError> {
    restore_snapshot_with_progress(path, chain, genesis, dir, &mut |_| {})
}

/// [`restore_snapshot`], reporting progress to `progress` (a verify pass,
/// then a restore pass).
pub fn restore_snapshot_with_progress(
    path: &Path,
    chain: &ChainStore,
    genesis: Option<[u8; 32]>,
    dir: &str,
    progress: &mut SnapshotProgressFn<'_>,
) -> Result<SnapshotHeader, SnapshotError> {
    if let Some(m) = chain.last_commit()? {
        return Err(SnapshotError::NotEmpty {
            dir: dir.to_string(),
            index: m.index,
        });
    }
    let (header, _) = verify_snapshot_with_progress(path, progress)?;
    if let Some(g) = genesis {
        if g != header.genesis {
            return Err(SnapshotError::WrongChain {
                path: path.display().to_string(),
                found: hex(&header.genesis),
                expected: hex(&g),
            });
        }
    }
    let mut chunk = Vec::with_capacity(RESTORE_ENTRIES_PER_BATCH);
    let mut counter = PassCounter::start(SnapshotPass::Restore, path, progress);
    let (_, consensus) = read_snapshot_all(path, &mut |k, v| {
        counter.entry(k, v, progress);
        chunk.push((k.to_vec(), v.to_vec()));
        if chunk.len() >= RESTORE_ENTRIES_PER_BATCH {
            chain.put_state(std::mem::take(&mut chunk))?;
        }
        Ok(())
    })?;
    chain.put_state(chunk)?;
    progress(&counter.at);
    chain.finish_restore(&header.genesis, &header.meta, consensus.as_ref())?;
    let root = chain.load_state()?.root();
    if root != header.meta.root {
        return Err(SnapshotError::RootMismatch {
            path: path.display().to_string(),
            header: header.meta.root.to_hex(),
            computed: root.to_hex(),
        });
    }
    Ok(header)
}

fn hex(b: &[u8]) -> String {
    b.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Snapshots in `dir`, oldest first: (commit index, path).
pub fn list_snapshots(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(u64, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            parse_snapshot_file_name(&name).map(|i| (i, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Deletes all but the newest `kept` snapshots, and leftover temporary
/// files of interrupted writes. Returns the snapshots kept, oldest first.
pub fn retain_snapshots(dir: &Path, kept: usize) -> std::io::Result<Vec<(u64, PathBuf)>> {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(".snapshot-") && name.ends_with(".tmp") {
                std::fs::remove_file(e.path())?;
            }
        }
    }
    let mut all = list_snapshots(dir);
    let drop_n = all.len().saturating_sub(kept);
    for (_, p) in all.drain(..drop_n) {
        std::fs::remove_file(p)?;
    }
    Ok(all)
}
