//! Snapshots, pruning, `velox replay`, `velox snapshot` and corruption
//! handling on real validator processes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use velox_exec::AccountId;
use velox_net::{AckMode, IngressClient, Response, Status};
use velox_node::devnet::{spawn_node, stop_child};
use velox_storage::rocks::RocksConfig;
use velox_storage::{BlockRecord, Cf, ChainStore, RocksStore, WriteBatch};

fn velox(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(EXE).args(args).output().unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).to_string(),
        String::from_utf8_lossy(&stderr).to_string(),
    )
}

fn submit(node: &TestNode, txs: &[Vec<u8>]) -> Vec<Response> {
    rt().block_on(async {
        let ep = velox_net::ingress::client_endpoint(Some(node.cert())).unwrap();
        let c = IngressClient::connect(&ep, node.ingress).await.unwrap();
        let refs: Vec<&[u8]> = txs.iter().map(|t| t.as_slice()).collect();
        let r = c.submit(AckMode::Commit, &refs).await.unwrap();
        assert!(r.iter().all(|x| x.status == Status::Committed), "{r:?}");
        r
    })
}

fn commit_index(node: &TestNode) -> u64 {
    node.get("/status")["commit_index"].as_u64().unwrap()
}

fn wait_index(node: &TestNode, at_least: u64) {
    let t = Instant::now();
    while commit_index(node) < at_least {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "commit index stuck at {}",
            commit_index(node)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn open_chain(data: &Path) -> ChainStore {
    ChainStore::new(Arc::new(
        RocksStore::open_existing(&data.join("db"), RocksConfig::default()).unwrap(),
    ))
}

fn entries(chain: &ChainStore, cf: Cf) -> usize {
    let mut n = 0;
    chain
        .store()
        .for_each(cf, &mut |_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
    n
}

/// Starts `velox node` on `cfg` and waits for it to exit (it must, within
/// 60 s); returns its exit code and log.
fn start_expecting_exit(cfg: &Path, dir: &Path) -> (i32, String) {
    let _ = std::fs::remove_file(dir.join("node.log"));
    let mut child = spawn_node(Path::new(EXE), cfg, dir).unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(60) {
            stop_child(&mut child);
            panic!("the node did not exit on damaged data");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    (status.code().unwrap_or(-1), log)
}

#[test]
fn a_pruned_node_stays_bounded_restarts_and_replays_from_its_snapshots() {
    let extra = "\n[consensus]\ngc_depth_rounds = 20\n\n[storage]\nsnapshot_every_commits = 40\n\
                 snapshots_kept = 2\nretention_commits = 100\nconsensus_log_margin_rounds = 20\n";
    let mut node = TestNode::start(4, extra);
    let sender = dev(0);
    let to = AccountId([0x5A; 32]);
    let txs: Vec<Vec<u8>> = (0..30).map(|n| transfer(&sender, n, to, 7)).collect();
    submit(&node, &txs);
    wait_index(&node, 450);
    let m = node.metrics();
    assert!(metric(&m, "velox_snapshots_written_total") >= 5.0, "{m}");
    assert!(metric(&m, "velox_snapshot_last_index") >= 400.0, "{m}");
    assert!(metric(&m, "velox_commits_pruned_below") >= 200.0, "{m}");
    assert!(
        metric(&m, "velox_consensus_log_pruned_below_round") >= 200.0,
        "{m}"
    );
    assert!(metric(&m, "velox_pruned_txs_total") >= 4.0, "{m}");
    assert_eq!(metric(&m, "velox_prune_failures_total"), 0.0, "{m}");
    assert_eq!(metric(&m, "velox_snapshot_failures_total"), 0.0, "{m}");
    assert_eq!(metric(&m, "velox_storage_integrity_scan_done"), 1.0, "{m}");
    assert_eq!(
        metric(&m, "velox_storage_corruption_detected_total"),
        0.0,
        "{m}"
    );
    let snaps = node.dir.join("data/snapshots");
    assert_eq!(std::fs::read_dir(&snaps).unwrap().count(), 2);

    // Pruned and killed: it restarts from its pruned log and keeps going.
    node.sigkill();
    node.restart();
    assert!(
        plain(&node.log()).contains("resumed_after_commit=true"),
        "{}",
        node.log()
    );
    let more: Vec<Vec<u8>> = (30..40).map(|n| transfer(&sender, n, to, 7)).collect();
    submit(&node, &more);
    assert_eq!(
        node.get(&format!("/account/{}", to.to_hex()))["balance"],
        40 * 7
    );
    let resumed_at = commit_index(&node);
    wait_index(&node, resumed_at + 60);
    // Replay refuses politely while the node holds the database.
    let data = node.dir.join("data");
    let data_s = data.to_str().unwrap().to_string();
    let (code, _, err) = velox(&["replay", "--data-dir", &data_s]);
    assert_eq!(code, 1);
    assert!(err.contains("in use by another process"), "{err}");
    stop_child(&mut node.child);

    // Disk stays bounded: blocks, commit records and the consensus log
    // hold a window, not the whole history.
    let (last, oldest_snapshot) = {
        let chain = open_chain(&data);
        let last = chain.last_commit().unwrap().unwrap().index;
        assert!(last >= 500, "last commit {last}");
        let blocks = entries(&chain, Cf::Blocks);
        let dag = entries(&chain, Cf::Dag);
        eprintln!(
            "after {last} commits: {blocks} blocks, {} commit records, {dag} consensus-log blocks, {} tx entries kept",
            entries(&chain, Cf::Meta),
            entries(&chain, Cf::Txs)
        );
        assert!(
            blocks <= 100 + 64 + 40 + 20,
            "{blocks} blocks kept of {last}"
        );
        assert!(
            dag <= 20 + 20 + 64 + 60,
            "{dag} consensus-log blocks kept of {last}"
        );
        assert!(chain.commits_pruned_below().unwrap() > last - 250);
        let oldest = velox_storage::snapshot::list_snapshots(&data.join("snapshots"))[0].0;
        (last, oldest)
    };

    // From genesis: the old commits are gone; the error says what to do.
    let (code, _, err) = velox(&["replay", "--data-dir", &data_s]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pruned") && err.contains("--from"), "{err}");
    // From the oldest kept snapshot: every root matches.
    let snap = snaps.join(velox_storage::snapshot::snapshot_file_name(oldest_snapshot));
    let snap_s = snap.to_str().unwrap().to_string();
    let (code, out, err) = velox(&["replay", "--data-dir", &data_s, "--from", &snap_s]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("replay OK") && out.contains(&format!("..={last}")),
        "{out}"
    );
    let (code, out, _) = velox(&["snapshot", "verify", &snap_s]);
    assert_eq!(code, 0);
    assert!(
        out.contains("OK") && out.contains(&format!("commit {oldest_snapshot}")),
        "{out}"
    );

    // A stored per-commit root tampered with: replay names that commit.
    let k = oldest_snapshot + 7;
    {
        let chain = open_chain(&data);
        let mut m = chain.commit_meta(k).unwrap().unwrap();
        m.root.0[5] ^= 0xFF;
        let mut wb = WriteBatch::default();
        let mut key = b"commit/".to_vec();
        key.extend_from_slice(&k.to_be_bytes());
        wb.put(Cf::Meta, key, velox_storage::chain::encode_meta(&m));
        chain.store().write(wb).unwrap();
    }
    let (code, out, err) = velox(&["replay", "--data-dir", &data_s, "--from", &snap_s]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains(&format!("FAILED at commit {k}")), "{out}");

    // A damaged snapshot is refused by name.
    let bad = node.dir.join("bad.vsnap");
    let mut bytes = std::fs::read(&snap).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&bad, &bytes).unwrap();
    let bad_s = bad.to_str().unwrap().to_string();
    let (code, _, err) = velox(&["snapshot", "verify", &bad_s]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.vsnap") && err.contains("corrupt"),
        "{err}"
    );

    // Restore into an empty directory: state and commit record are there;
    // replay from the snapshot agrees; this validator, a committee of one,
    // refuses to join consensus from it (no peers to take the blocks from),
    // without panicking.
    let restored = node.dir.join("restored");
    let restored_s = restored.to_str().unwrap().to_string();
    let cfg_s = node.cfg.to_str().unwrap().to_string();
    let restore = || {
        velox(&[
            "snapshot",
            "restore",
            "--file",
            &snap_s,
            "--data-dir",
            &restored_s,
            "--config",
            &cfg_s,
        ])
    };
    let (code, out, err) = restore();
    assert_eq!(code, 0, "{out}{err}");
    {
        let chain = open_chain(&restored);
        let m = chain.last_commit().unwrap().unwrap();
        assert_eq!(m.index, oldest_snapshot);
        assert_eq!(chain.load_state().unwrap().root(), m.root);
    }
    let copy = restored
        .join("snapshots")
        .join(velox_storage::snapshot::snapshot_file_name(oldest_snapshot));
    let (code, out, err) = velox(&[
        "replay",
        "--data-dir",
        &restored_s,
        "--from",
        copy.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = restore();
    assert_eq!(code, 1);
    assert!(err.contains("empty data directory"), "{err}");
    let cfg_text = std::fs::read_to_string(&node.cfg).unwrap().replace(
        "data_dir = \"data\"",
        &format!("data_dir = \"{restored_s}\""),
    );
    let restored_cfg = node.dir.join("restored.toml");
    std::fs::write(&restored_cfg, cfg_text).unwrap();
    let (code, log) = start_expecting_exit(&restored_cfg, &node.dir);
    assert_ne!(code, 0);
    assert!(log.contains("cannot join consensus from a state"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// The stored transaction of `block` whose bytes hold `needle`.
fn find(block: &BlockRecord, needle: &[u8]) -> Option<(usize, usize)> {
    block.txs.iter().enumerate().find_map(|(i, t)| {
        t.windows(needle.len())
            .position(|w| w == needle)
            .map(|at| (i, at))
    })
}

#[test]
fn replay_from_genesis_passes_and_names_a_tampered_block() {
    let mut node = TestNode::start(2, "");
    let sender = dev(1);
    let to = AccountId([0x6B; 32]);
    const AMOUNT: u64 = 123_456_789;
    let txs: Vec<Vec<u8>> = (0..20).map(|n| transfer(&sender, n, to, AMOUNT)).collect();
    let r = submit(&node, &txs);
    let tampered_index = r[10].commit_index;
    wait_index(&node, tampered_index + 20);
    stop_child(&mut node.child);
    let data = node.dir.join("data");
    let data_s = data.to_str().unwrap().to_string();
    let cfg_s = node.cfg.to_str().unwrap().to_string();
    let (code, out, err) = velox(&["replay", "--config", &cfg_s]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replay OK: commits 0..="), "{out}");
    assert!(out.contains("every state root matches"), "{out}");

    // Change a transfer's amount inside the stored block: the recomputed
    // root differs from the stored one at exactly that commit.
    {
        let chain = open_chain(&data);
        let mut block = chain.block(tampered_index).unwrap().unwrap();
        let (tx, at) = find(&block, &AMOUNT.to_le_bytes()).expect("the amount is in the block");
        block.txs[tx][at..at + 8].copy_from_slice(&(AMOUNT - 1).to_le_bytes());
        let mut wb = WriteBatch::default();
        wb.put(
            Cf::Blocks,
            tampered_index.to_be_bytes().to_vec(),
            block.encode(),
        );
        chain.store().write(wb).unwrap();
    }
    let (code, out, err) = velox(&["replay", "--data-dir", &data_s]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains(&format!("FAILED at commit {tampered_index}")),
        "{out}"
    );
    assert!(err.contains(&format!("commit {tampered_index}")), "{err}");
}

fn largest_sst(db: &Path) -> PathBuf {
    std::fs::read_dir(db)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sst"))
        .max_by_key(|e| e.metadata().unwrap().len())
        .map(|e| e.path())
        .expect("a table file (the node flushes at stop)")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn damaged_database_files_stop_the_start_with_the_file_and_the_fix() {
    let mut node = TestNode::start(2, "");
    let sender = dev(0);
    let txs: Vec<Vec<u8>> = (0..50)
        .map(|n| transfer(&sender, n, AccountId([9; 32]), 1))
        .collect();
    submit(&node, &txs);
    wait_index(&node, 60);
    stop_child(&mut node.child);
    let data = node.dir.join("data");
    let db = data.join("db");
    let pristine = node.dir.join("pristine");
    copy_dir(&data, &pristine);
    let reset = || {
        std::fs::remove_dir_all(&data).unwrap();
        copy_dir(&pristine, &data);
    };
    let expect_refusal = |what: &str| {
        let (code, log) = start_expecting_exit(&node.cfg, &node.dir);
        assert_ne!(code, 0, "{log}");
        assert!(log.contains(what), "wanted '{what}' in:\n{log}");
        assert!(log.contains("velox snapshot restore"), "{log}");
        assert!(log.contains("is corrupt"), "{log}");
        assert!(!log.contains("panicked"), "{log}");
    };

    // A truncated table file.
    let sst = largest_sst(&db);
    let len = std::fs::metadata(&sst).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&sst)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    expect_refusal(&sst.file_name().unwrap().to_string_lossy());

    // A MANIFEST with garbage in it.
    reset();
    let manifest = std::fs::read_dir(&db)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("MANIFEST-"))
        .unwrap()
        .path();
    let mut m = std::fs::read(&manifest).unwrap();
    for b in m.iter_mut().skip(16).take(32) {
        *b ^= 0xA5;
    }
    std::fs::write(&manifest, m).unwrap();
    expect_refusal(&manifest.file_name().unwrap().to_string_lossy());

    // CURRENT lost: never taken for a fresh directory.
    reset();
    std::fs::remove_file(db.join("CURRENT")).unwrap();
    expect_refusal("CURRENT");

    // The pristine copy still starts.
    reset();
    node.restart();
    assert!(commit_index(&node) >= 60);
}
