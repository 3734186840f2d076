//! Snapshots, pruning and corruption handling on the real stores.

use std::path::Path;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use velox_exec::{
    execute_sequential, AccountId, ExecContext, State, Tx, TxBody, TxBuilder, VerifiedTx,
};
use velox_storage::snapshot::{
    list_snapshots, read_snapshot, restore_snapshot, restore_snapshot_with_progress,
    retain_snapshots, verify_snapshot, verify_snapshot_with_progress, write_snapshot,
    write_snapshot_with_progress, SnapshotParams, SnapshotPass, SnapshotProgress,
};
use velox_storage::{
    BlockRecord, ChainStore, CommitConsensus, LeaderPosition, MemStore, RocksStore, SnapshotError,
    Store, StoreError, DAG_KEY_LEN,
};

const GENESIS: [u8; 32] = [7; 32];
/// Leaders of rounds >= the snapshot leader's - 4; the newest 3 digests.
const PARAMS: SnapshotParams = SnapshotParams {
    gc_depth_rounds: 4,
    window_digests: 3,
};

/// A chain with genesis plus `commits` commits of `per` transfers each;
/// commit i's leader is at round 2i and it includes batch digest [i; 32].
struct Chain {
    chain: ChainStore,
    state: State,
    key: SigningKey,
    nonce: u64,
}

impl Chain {
    fn new(store: Arc<dyn Store>) -> Chain {
        let chain = ChainStore::new(store);
        chain.check_genesis(&GENESIS, "test").unwrap();
        let key = SigningKey::from_bytes(&[4; 32]);
        let me = AccountId(key.verifying_key().to_bytes());
        let mut state = State::new();
        let tx = VerifiedTx::genesis_alloc(1, me, 1_000_000);
        let out = execute_sequential(
            &mut state,
            std::slice::from_ref(&tx),
            ExecContext { genesis: true },
        );
        chain
            .commit(
                &BlockRecord {
                    index: 0,
                    timestamp_ms: 0,
                    txs: vec![tx.bytes().to_vec()],
                },
                &out,
            )
            .unwrap();
        Chain {
            chain,
            state,
            key,
            nonce: 0,
        }
    }

    fn commit(&mut self, per: usize) {
        let index = self.chain.last_commit().unwrap().unwrap().index + 1;
        let mut bytes = Vec::new();
        let mut txs = Vec::new();
        for _ in 0..per {
            let b = TxBuilder {
                chain_id: 1,
                nonce: self.nonce,
                fee: 1,
                body: TxBody::Transfer {
                    to: AccountId([(self.nonce % 200) as u8 + 1; 32]),
                    amount: 3,
                },
            }
            .sign(&self.key);
            self.nonce += 1;
            txs.push(VerifiedTx::from_trusted(Tx::decode(&b).unwrap()));
            bytes.push(b);
        }
        let out = execute_sequential(&mut self.state, &txs, ExecContext { genesis: false });
        let consensus = CommitConsensus {
            leader: Some(LeaderPosition {
                round: 2 * index,
                author: 0,
                digest: [index as u8; 32],
            }),
            batches: vec![[index as u8; 32]],
        };
        self.chain
            .commit_with(
                &BlockRecord {
                    index,
                    timestamp_ms: index * 10,
                    txs: bytes,
                },
                &out,
                &consensus,
            )
            .unwrap();
    }
}

fn snapshot_of(chain: &ChainStore, dir: &Path) -> std::path::PathBuf {
    let mut path = None;
    chain
        .store()
        .with_view(&mut |v| {
            path = Some(write_snapshot(v, dir, PARAMS).unwrap().path);
            Ok(())
        })
        .unwrap();
    path.unwrap()
}

#[test]
fn snapshot_roundtrip_verify_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Chain::new(Arc::new(
        RocksStore::open(&dir.path().join("db"), Default::default()).unwrap(),
    ));
    for _ in 0..5 {
        c.commit(20);
    }
    let snaps = dir.path().join("snapshots");
    let path = snapshot_of(&c.chain, &snaps);
    assert!(path.ends_with("snapshot-00000000000000000005.vsnap"));
    let (h, mut state) = verify_snapshot(&path).unwrap();
    assert_eq!(h.meta.index, 5);
    assert_eq!(h.meta.root, c.state.root());
    assert_eq!(h.genesis, GENESIS);
    assert_eq!(h.entries, c.state.len() as u64);
    assert_eq!(state.root(), c.state.root());
    assert_eq!(h.meta.leader.unwrap().round, 10);

    // Restore into an empty store: same state, same last commit.
    let restored = ChainStore::new(Arc::new(MemStore::new()));
    let rh = restore_snapshot(&path, &restored, Some(GENESIS), "mem").unwrap();
    assert_eq!(rh, h);
    let last = restored.last_commit().unwrap().unwrap();
    assert_eq!((last.index, last.root), (5, c.state.root()));
    assert_eq!(restored.load_state().unwrap().root(), c.state.root());
    assert_eq!(restored.commits_pruned_below().unwrap(), 6);
    assert_eq!(restored.restored_from().unwrap(), Some(5));
    restored.check_genesis(&GENESIS, "mem").unwrap();
    // What a joining validator resumes from: the committed leaders of the
    // last gc_depth rounds (commits 5, 4, 3 at rounds 10, 8, 6) and the
    // duplicate window (the newest 3 digests), as the source has them.
    let src_last = c.chain.last_commit().unwrap().unwrap();
    let want = c.chain.recent_leaders(&src_last, 6).unwrap().unwrap();
    assert_eq!(want.len(), 3);
    assert_eq!(restored.recent_leaders(&last, 6).unwrap(), Some(want));
    assert_eq!(
        restored.included_batches(3).unwrap(),
        c.chain.included_batches(3).unwrap()
    );
    assert_eq!(
        restored.included_batches(3).unwrap(),
        vec![[3; 32], [4; 32], [5; 32]]
    );
    // Rounds below what the snapshot holds are unknown, not empty.
    assert_eq!(restored.recent_leaders(&last, 4).unwrap(), None);
    // Not into a store that holds a chain, nor for another chain.
    assert!(matches!(
        restore_snapshot(&path, &restored, None, "mem"),
        Err(SnapshotError::NotEmpty { index: 5, .. })
    ));
    let other = ChainStore::new(Arc::new(MemStore::new()));
    assert!(matches!(
        restore_snapshot(&path, &other, Some([1; 32]), "mem"),
        Err(SnapshotError::WrongChain { .. })
    ));
}

#[test]
fn snapshot_passes_report_progress() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Chain::new(Arc::new(MemStore::new()));
    for _ in 0..3 {
        c.commit(20);
    }
    let entries = c.state.len() as u64;
    let mut reports: Vec<SnapshotProgress> = Vec::new();
    let mut written = None;
    c.chain
        .store()
        .with_view(&mut |v| {
            let mut report = |p: &SnapshotProgress| reports.push(*p);
            written = Some(write_snapshot_with_progress(
                v,
                dir.path(),
                PARAMS,
                &mut report,
            ));
            Ok(())
        })
        .unwrap();
    let info = written.unwrap().unwrap();
    let seen = |r: &[SnapshotProgress]| -> Vec<(SnapshotPass, u64, Option<u64>)> {
        r.iter()
            .map(|p| (p.pass, p.entries_done, p.entries_total))
            .collect()
    };
    // Fewer entries than a report's step: the start and the end of each
    // pass; the total is unknown while writing.
    assert_eq!(
        seen(&reports),
        vec![
            (SnapshotPass::Write, 0, None),
            (SnapshotPass::Write, entries, None)
        ]
    );
    let written_bytes = reports[1].bytes_done;
    assert!(written_bytes > 0 && written_bytes < info.bytes);
    reports.clear();
    verify_snapshot_with_progress(&info.path, &mut |p| reports.push(*p)).unwrap();
    assert_eq!(
        seen(&reports),
        vec![
            (SnapshotPass::Verify, 0, Some(entries)),
            (SnapshotPass::Verify, entries, Some(entries))
        ]
    );
    assert_eq!(reports[1].bytes_done, written_bytes);
    reports.clear();
    let restored = ChainStore::new(Arc::new(MemStore::new()));
    let mut report = |p: &SnapshotProgress| reports.push(*p);
    restore_snapshot_with_progress(&info.path, &restored, Some(GENESIS), "mem", &mut report)
        .unwrap();
    assert_eq!(
        seen(&reports),
        vec![
            (SnapshotPass::Verify, 0, Some(entries)),
            (SnapshotPass::Verify, entries, Some(entries)),
            (SnapshotPass::Restore, 0, Some(entries)),
            (SnapshotPass::Restore, entries, Some(entries))
        ]
    );
}

#[test]
fn snapshot_view_is_consistent_while_commits_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Chain::new(Arc::new(
        RocksStore::open(&dir.path().join("db"), Default::default()).unwrap(),
    ));
    c.commit(10);
    let root_at_1 = c.state.root();
    let store = c.chain.store().clone();
    let snaps = dir.path().join("snapshots");
    let mut written = None;
    store
        .with_view(&mut |v| {
            // Commits made after the view was taken are not in it.
            c.commit(10);
            c.commit(10);
            written = Some(write_snapshot(v, &snaps, PARAMS).unwrap());
            Ok(())
        })
        .unwrap();
    let info = written.unwrap();
    assert_eq!(info.header.meta.index, 1);
    let (h, _) = verify_snapshot(&info.path).unwrap();
    assert_eq!(h.meta.root, root_at_1);
    assert_ne!(root_at_1, c.state.root());
}

#[test]
fn corrupted_or_truncated_snapshots_are_refused_with_their_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Chain::new(Arc::new(MemStore::new()));
    for _ in 0..3 {
        c.commit(30);
    }
    let path = snapshot_of(&c.chain, dir.path());
    let good = std::fs::read(&path).unwrap();
    let name = path.display().to_string();
    let check = |bytes: &[u8], want: &str| {
        std::fs::write(&path, bytes).unwrap();
        let e = verify_snapshot(&path).err().expect("refused");
        let text = e.to_string();
        assert!(text.contains(&name), "{text}");
        assert!(text.contains(want), "wanted '{want}' in: {text}");
    };
    // A flipped bit in an entry, in the header, in the checksum.
    for at in [200, 60, good.len() - 3] {
        let mut b = good.clone();
        b[at] ^= 0x10;
        check(&b, "corrupt");
    }
    check(&good[..good.len() / 2], "truncated");
    check(&good[..10], "truncated");
    let mut b = good.clone();
    b.push(0);
    check(&b, "after the checksum");
    let mut b = good.clone();
    b[0] = b'X';
    check(&b, "magic");
    // A consistent file whose header root is wrong: the recomputed root
    // catches it.
    std::fs::write(&path, &good).unwrap();
    let mut count = 0;
    read_snapshot(&path, &mut |_, _| {
        count += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(count, c.state.len());
    let mut meta = c.chain.last_commit().unwrap().unwrap();
    meta.root.0[0] ^= 1;
    let mut wb = velox_storage::WriteBatch::default();
    wb.put(
        velox_storage::Cf::Meta,
        b"last_commit".to_vec(),
        velox_storage::chain::encode_meta(&meta),
    );
    c.chain.store().write(wb).unwrap();
    std::fs::remove_file(&path).unwrap();
    let path = snapshot_of(&c.chain, dir.path());
    assert!(matches!(
        verify_snapshot(&path),
        Err(SnapshotError::RootMismatch { .. })
    ));
}

#[test]
fn only_the_newest_snapshots_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Chain::new(Arc::new(MemStore::new()));
    for _ in 0..4 {
        c.commit(2);
        snapshot_of(&c.chain, dir.path());
    }
    std::fs::write(
        dir.path().join(".snapshot-00000000000000000009.vsnap.tmp"),
        b"x",
    )
    .unwrap();
    let kept = retain_snapshots(dir.path(), 2).unwrap();
    assert_eq!(kept.iter().map(|k| k.0).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(list_snapshots(dir.path()).len(), 2);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn pruning_deletes_old_commits_and_consensus_log_only() {
    let store = Arc::new(MemStore::new());
    let mut c = Chain::new(store.clone());
    for _ in 0..40 {
        c.commit(5);
    }
    let chain = &c.chain;
    let first_tx = {
        let b = chain.block(3).unwrap().unwrap();
        Tx::decode(&b.txs[0]).unwrap().digest()
    };
    let kept_tx = {
        let b = chain.block(30).unwrap().unwrap();
        Tx::decode(&b.txs[0]).unwrap().digest()
    };
    let s = chain.prune_commits_below(25).unwrap();
    assert_eq!(s.commits, 25);
    assert_eq!(s.txs, 1 + 24 * 5);
    assert_eq!(chain.commits_pruned_below().unwrap(), 25);
    assert!(chain.block(24).unwrap().is_none());
    assert!(chain.commit_meta(24).unwrap().is_none());
    assert!(chain.block(25).unwrap().is_some());
    assert!(chain.commit_meta(25).unwrap().is_some());
    assert_eq!(chain.tx_location(&first_tx).unwrap(), None);
    assert_eq!(chain.tx_location(&kept_tx).unwrap().unwrap().index, 30);
    assert_eq!(store.entries(velox_storage::Cf::Blocks), 40 - 25 + 1);
    // Recent leaders come from the commit meta still stored.
    let last = chain.last_commit().unwrap().unwrap();
    let leaders = chain.recent_leaders(&last, 74).unwrap().unwrap();
    assert_eq!(
        leaders.iter().map(|l| l.round).collect::<Vec<_>>(),
        vec![80, 78, 76, 74]
    );
    // Not knowable once the records it needs are pruned.
    assert_eq!(chain.recent_leaders(&last, 10).unwrap(), None);
    // Idempotent, and never past the last commit.
    assert_eq!(chain.prune_commits_below(25).unwrap().commits, 0);
    chain.prune_commits_below(1000).unwrap();
    assert!(chain.block(40).unwrap().is_some());
    assert_eq!(chain.last_commit().unwrap().unwrap().index, 40);
    // State is untouched.
    assert_eq!(chain.load_state().unwrap().root(), c.state.root());

    // The duplicate-batch window: the newest digests, oldest first.
    assert_eq!(
        chain.included_batches(3).unwrap(),
        vec![[38; 32], [39; 32], [40; 32]]
    );
    let s = chain.prune_batch_lists(3).unwrap();
    assert_eq!(s.batch_lists, 37);
    assert_eq!(store.entries(velox_storage::Cf::CommitBatches), 3);
    assert_eq!(chain.included_batches(10).unwrap().len(), 3);

    // The consensus log: blocks and batches below the round go.
    for round in 1..=10u64 {
        let mut k = [0u8; DAG_KEY_LEN];
        k[..8].copy_from_slice(&round.to_be_bytes());
        let batch: Arc<[u8]> = Arc::from(&[round as u8; 4][..]);
        chain
            .write_consensus(&[(k, vec![1])], &[([round as u8 + 100; 32], batch)], round)
            .unwrap();
    }
    let s = chain.prune_consensus_below(6).unwrap();
    assert_eq!(s.batches, 5);
    assert_eq!(chain.consensus_pruned_below().unwrap(), 6);
    let mut rounds = Vec::new();
    chain
        .for_each_consensus_block(&mut |_| {
            rounds.push(());
            Ok(())
        })
        .unwrap();
    assert_eq!(rounds.len(), 5);
    assert!(chain.batch(&[105; 32]).unwrap().is_none());
    assert!(chain.batch(&[106; 32]).unwrap().is_some());
    assert_eq!(store.entries(velox_storage::Cf::BatchRounds), 5);
}

/// The largest table file of a database directory.
fn largest_sst(db: &Path) -> Option<std::path::PathBuf> {
    std::fs::read_dir(db)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sst"))
        .max_by_key(|e| e.metadata().unwrap().len())
        .map(|e| e.path())
}

#[test]
fn a_truncated_sst_or_lost_current_is_a_typed_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    {
        let store = Arc::new(RocksStore::open(&db, Default::default()).unwrap());
        let mut c = Chain::new(store.clone());
        for _ in 0..20 {
            c.commit(20);
        }
        store.flush().unwrap();
        // A second open of the same directory is refused: the lock.
        match RocksStore::open(&db, Default::default()) {
            Err(StoreError::Locked { dir, .. }) => assert!(dir.contains("db")),
            Err(e) => panic!("expected Locked, got {e}"),
            Ok(_) => panic!("expected Locked, got a second open"),
        }
    }
    let sst = largest_sst(&db).expect("a flushed table file");
    let len = std::fs::metadata(&sst).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&sst).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    let e = RocksStore::open(&db, Default::default())
        .err()
        .expect("refused");
    let text = e.to_string();
    let name = sst.file_name().unwrap().to_string_lossy().to_string();
    assert!(matches!(e, StoreError::DatabaseCorrupt { .. }), "{text}");
    assert!(text.contains(&name), "{text}");
    assert!(text.contains("velox snapshot restore"), "{text}");

    // CURRENT gone: never taken for an empty directory.
    let dir2 = tempfile::tempdir().unwrap();
    let db2 = dir2.path().join("db");
    {
        let store = Arc::new(RocksStore::open(&db2, Default::default()).unwrap());
        let mut c = Chain::new(store.clone());
        c.commit(3);
        store.flush().unwrap();
    }
    std::fs::remove_file(db2.join("CURRENT")).unwrap();
    let e = RocksStore::open(&db2, Default::default())
        .err()
        .expect("refused");
    assert!(matches!(e, StoreError::DatabaseCorrupt { .. }), "{e}");
    assert!(e.to_string().contains("CURRENT"), "{e}");
    // Tools never create a database.
    let e = RocksStore::open_existing(&dir2.path().join("nothing"), Default::default())
        .err()
        .expect("refused");
    assert!(matches!(e, StoreError::Missing { .. }), "{e}");
}
