//! A real validator process on loopback: transfers over QUIC, balances over
//! HTTP, restart durability, and bad input.

mod common;

use std::time::Duration;

use common::*;
use ed25519_dalek::SigningKey;
use velox_exec::{AccountId, RejectReason};
use velox_net::{AckMode, IngressClient, Status};

#[test]
fn transfers_commit_and_balances_show_over_http() {
    let node = TestNode::start(4, "");
    let sender = dev(0);
    let to = AccountId([0xAB; 32]);
    let before = node.get(&format!("/account/{}", id(&sender).to_hex()));
    assert_eq!(before["nonce"], 0);
    let start_balance = before["balance"].as_u64().unwrap();
    let txs: Vec<Vec<u8>> = (0..50).map(|n| transfer(&sender, n, to, 10)).collect();
    let responses = rt().block_on(async {
        let ep = velox_net::ingress::client_endpoint(Some(node.cert())).unwrap();
        let c = IngressClient::connect(&ep, node.ingress).await.unwrap();
        let refs: Vec<&[u8]> = txs.iter().map(|t| t.as_slice()).collect();
        c.submit(AckMode::Commit, &refs).await.unwrap()
    });
    assert_eq!(responses.len(), 50);
    for (i, r) in responses.iter().enumerate() {
        assert_eq!(r.index, i as u32);
        assert_eq!(r.status, Status::Committed, "tx {i}: {r:?}");
        assert!(r.commit_index >= 1);
    }
    let recv = node.get(&format!("/account/{}", to.to_hex()));
    assert_eq!(recv["balance"], 500);
    let after = node.get(&format!("/account/{}", id(&sender).to_hex()));
    assert_eq!(after["nonce"], 50);
    assert_eq!(after["balance"].as_u64().unwrap(), start_balance - 50 * 11);
    let st = node.get(&format!("/tx/{}", responses[7].digest.to_hex()));
    assert_eq!(st["status"], "committed");
    assert_eq!(st["commit_index"], responses[7].commit_index);
    let status = node.get("/status");
    assert!(status["commit_index"].as_u64().unwrap() >= 1);
    assert_eq!(status["txs_committed"].as_u64().unwrap(), 4 + 50);
    let m = node.metrics();
    assert!(
        metric(&m, "velox_tile_items_in_total{tile=\"verify\"") >= 50.0,
        "{m}"
    );
    assert!(metric(&m, "velox_committed_txs_total") >= 54.0);
    assert!(metric(&m, "velox_net_frames_total") >= 50.0);
    // Admission mode answers Accepted before commit.
    let r = rt().block_on(async {
        let ep = velox_net::ingress::client_endpoint(Some(node.cert())).unwrap();
        let c = IngressClient::connect(&ep, node.ingress).await.unwrap();
        c.submit(AckMode::Admission, &[&transfer(&sender, 50, to, 1)])
            .await
            .unwrap()
    });
    assert_eq!(r[0].status, Status::Accepted);

    // /metrics is valid Prometheus text exposition (a strict parser).
    let fams = velox_tuning::monitor::parse_exposition(&node.metrics())
        .unwrap_or_else(|e| panic!("/metrics is not valid exposition: {e}"));
    assert!(fams.iter().any(|f| f.name == "velox_tile_busy_ratio"));
    assert!(fams.iter().any(|f| f.name == "velox_consensus_round"));

    // `velox monitor --once` shows the node's live, non-zero counters.
    let out = std::process::Command::new(EXE)
        .args(["monitor", "--once", "--interval-ms", "300", "--node"])
        .arg(node.api.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |label: &str| {
        text.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no '{label}' line in:\n{text}"))
            .to_string()
    };
    assert!(line("committed txs").contains("55"), "{text}");
    let commit_index: u64 = line("commit index")
        .split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(commit_index >= 1, "{text}");
    assert!(text.lines().any(|l| l.starts_with("verify ")), "{text}");
    // Without a node it fails with a clear message.
    let out = std::process::Command::new(EXE)
        .args(["monitor", "--once", "--node", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node"));
}

#[test]
fn committed_state_survives_sigkill_and_restart() {
    let mut node = TestNode::start(2, "");
    let sender = dev(1);
    let to = AccountId([0xCD; 32]);
    let txs: Vec<Vec<u8>> = (0..20).map(|n| transfer(&sender, n, to, 3)).collect();
    let digests = rt().block_on(async {
        let ep = velox_net::ingress::client_endpoint(Some(node.cert())).unwrap();
        let c = IngressClient::connect(&ep, node.ingress).await.unwrap();
        let refs: Vec<&[u8]> = txs.iter().map(|t| t.as_slice()).collect();
        let r = c.submit(AckMode::Commit, &refs).await.unwrap();
        assert!(r.iter().all(|x| x.status == Status::Committed), "{r:?}");
        r.iter().map(|x| x.digest).collect::<Vec<_>>()
    });
    let root_before = node.get("/status")["state_root"].clone();
    node.sigkill();
    node.restart();
    assert_eq!(
        node.get(&format!("/account/{}", to.to_hex()))["balance"],
        60
    );
    assert_eq!(
        node.get(&format!("/account/{}", id(&sender).to_hex()))["nonce"],
        20
    );
    assert_eq!(
        node.get(&format!("/tx/{}", digests[19].to_hex()))["status"],
        "committed"
    );
    assert_eq!(node.get("/status")["state_root"], root_before);
    // It keeps committing after the restart, from the next nonce.
    let r = rt().block_on(async {
        let ep = velox_net::ingress::client_endpoint(Some(node.cert())).unwrap();
        let c = IngressClient::connect(&ep, node.ingress).await.unwrap();
        c.submit(
            AckMode::Commit,
            &[&transfer(&sender, 20, to, 3), &transfer(&sender, 0, to, 3)],
        )
        .await
        .unwrap()
    });
    assert_eq!(r[0].status, Status::Committed);
    assert_eq!(r[1].status, Status::Rejected);
    assert_eq!(r[1].reason, Some(RejectReason::NonceTooLow));
}

#[test]
fn bad_input_gets_typed_errors_while_valid_traffic_commits() {
    let node = TestNode::start(3, "");
    let good_sender = dev(0);
    let bad_sender = dev(1);
    let to = AccountId([0xEF; 32]);
    rt().block_on(async {
        let ep = velox_net::ingress::client_endpoint(Some(node.cert())).unwrap();
        let bad = IngressClient::connect(&ep, node.ingress).await.unwrap();
        let good = IngressClient::connect(&ep, node.ingress).await.unwrap();

        // Valid traffic on its own connection, concurrently with the abuse.
        let good_txs: Vec<Vec<u8>> = (0..100).map(|n| transfer(&good_sender, n, to, 1)).collect();
        let good_task = async {
            let refs: Vec<&[u8]> = good_txs.iter().map(|t| t.as_slice()).collect();
            good.submit(AckMode::Commit, &refs).await.unwrap()
        };
        let abuse = async {
            // One stream with one of each kind of bad transaction.
            let mut bad_sig = transfer(&bad_sender, 0, to, 1);
            let n = bad_sig.len();
            bad_sig[n - 3] ^= 0xFF;
            let wrong_chain = velox_exec::TxBuilder {
                chain_id: 999,
                nonce: 0,
                fee: 1,
                body: velox_exec::TxBody::Transfer { to, amount: 1 },
            }
            .sign(&bad_sender);
            let genesis = velox_exec::TxBuilder {
                chain_id: velox_node::devnet::DEVNET_CHAIN_ID,
                nonce: 0,
                fee: 0,
                body: velox_exec::TxBody::GenesisAlloc {
                    to,
                    amount: 1_000_000,
                },
            }
            .encode_genesis();
            let far_ahead = transfer(&bad_sender, 5000, to, 1);
            let garbage = vec![0x55u8; 100];
            let mut truncated = transfer(&bad_sender, 1, to, 1);
            truncated.truncate(90);
            let broke = transfer(&dev(2), 0, to, u64::MAX / 2); // cannot afford: rejected at execution
            let r = bad
                .submit(
                    AckMode::Commit,
                    &[
                        &bad_sig,
                        &wrong_chain,
                        &genesis,
                        &far_ahead,
                        &garbage,
                        &truncated,
                        &broke,
                    ],
                )
                .await
                .unwrap();
            let reasons: Vec<_> = r.iter().map(|x| (x.status, x.reason)).collect();
            assert_eq!(
                reasons,
                vec![
                    (Status::Rejected, Some(RejectReason::BadSignature)),
                    (Status::Rejected, Some(RejectReason::WrongChain)),
                    (Status::Rejected, Some(RejectReason::GenesisKindNotAllowed)),
                    (Status::Rejected, Some(RejectReason::NonceTooFarAhead)),
                    (Status::Rejected, Some(RejectReason::UnknownVersion)),
                    (Status::Rejected, Some(RejectReason::Malformed)),
                    (Status::Rejected, Some(RejectReason::InsufficientBalance)),
                ]
            );
            assert!(
                r[6].commit_index >= 1,
                "execution rejections name their commit"
            );

            // An oversized frame: one record, then the stream is stopped.
            let mut wire = vec![AckMode::Commit as u8];
            wire.extend_from_slice(&((velox_net::frame::FRAME_BYTES_MAX as u32) + 1).to_le_bytes());
            wire.extend_from_slice(&vec![0u8; 2000]);
            let r = bad.send_raw(&wire).await;
            match r {
                Ok(r) => {
                    assert_eq!(r.len(), 1);
                    assert_eq!(r[0].reason, Some(RejectReason::TooLarge));
                }
                Err(e) => panic!("oversized frame should get a record, got {e}"),
            }
            // A frame cut short by FIN.
            let mut wire = vec![AckMode::Admission as u8];
            wire.extend_from_slice(&200u32.to_le_bytes());
            wire.extend_from_slice(&[1, 2, 3]);
            let r = bad.send_raw(&wire).await.unwrap();
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].reason, Some(RejectReason::Malformed));
            // A bad mode byte: the stream is reset, the connection survives.
            assert!(bad.send_raw(&[7, 0, 0, 0, 0]).await.is_err());
            let dup = transfer(&good_sender, 0, to, 1);
            let r = bad.submit(AckMode::Admission, &[&dup]).await.unwrap();
            assert_eq!(r[0].status, Status::Rejected);
        };
        let (good_r, ()) = tokio::join!(good_task, abuse);
        assert_eq!(good_r.len(), 100);
        assert!(
            good_r.iter().all(|r| r.status == Status::Committed),
            "{good_r:?}"
        );
    });
    assert_eq!(
        node.get(&format!("/account/{}", to.to_hex()))["balance"],
        100
    );
    let m = node.metrics();
    assert!(metric(&m, "velox_rejected_total{reason=\"bad_signature\"}") >= 1.0);
    assert!(metric(&m, "velox_rejected_total{reason=\"too_large\"}") >= 1.0);
    assert!(metric(&m, "velox_net_frame_errors_total") >= 3.0);
    // The node is still healthy and did not panic.
    assert_eq!(node.get("/health")["status"], "ok");
    assert!(!node.log().contains("panicked"));
}

#[test]
fn a_full_pool_holds_ingress_back_and_loses_nothing() {
    // 40 transactions at most; a full pool holds a transaction up to 1 s.
    let node = TestNode::start(4, "\n[mempool]\ntxs_max = 40\nfull_wait_ms = 1000\n");
    let to = AccountId([0xCD; 32]);
    let submit = |mode: AckMode, txs: Vec<Vec<u8>>| {
        rt().block_on(async {
            let ep = velox_net::ingress::client_endpoint(Some(node.cert())).unwrap();
            let c = IngressClient::connect(&ep, node.ingress).await.unwrap();
            let refs: Vec<&[u8]> = txs.iter().map(|t| t.as_slice()).collect();
            c.submit(mode, &refs).await.unwrap()
        })
    };
    // 30 of sender 0's transactions wait behind a nonce gap: they hold 30
    // of the 40 places.
    let gapped: Vec<Vec<u8>> = (1..=30).map(|n| transfer(&dev(0), n, to, 1)).collect();
    let r = submit(AckMode::Admission, gapped);
    assert_eq!(r.len(), 30);
    assert!(r.iter().all(|x| x.status == Status::Accepted), "{r:?}");

    // 30 commit-mode transfers of sender 1 share the last 10 places: the
    // verify tile holds the stream until commits free room, and every one
    // commits.
    let flowing: Vec<Vec<u8>> = (0..30).map(|n| transfer(&dev(1), n, to, 1)).collect();
    let r = submit(AckMode::Commit, flowing);
    assert_eq!(r.len(), 30);
    for (i, x) in r.iter().enumerate() {
        assert_eq!(x.status, Status::Committed, "tx {i}: {x:?}");
    }
    let m = node.metrics();
    assert!(
        metric(&m, "velox_mempool_backpressure_waits_total") >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, "velox_mempool_full_total{bound=\"txs\"}") >= 1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "velox_mempool_held_txs"), 30.0, "{m}");

    // 20 more gapped transactions (sender 2): 10 fit, 10 wait 1 s for room
    // that never comes and are rejected pool_full. Nothing is silently lost.
    let more: Vec<Vec<u8>> = (1..=20).map(|n| transfer(&dev(2), n, to, 1)).collect();
    let r = submit(AckMode::Admission, more);
    assert_eq!(r.len(), 20);
    let accepted = r.iter().filter(|x| x.status == Status::Accepted).count();
    let full = r
        .iter()
        .filter(|x| x.status == Status::Rejected && x.reason == Some(RejectReason::PoolFull))
        .count();
    assert_eq!((accepted, full), (10, 10), "{r:?}");
    let status = node.get("/status");
    assert_eq!(status["mempool_held_txs"], 40);
    assert_eq!(status["mempool_txs"], 40);
    let m = node.metrics();
    assert_eq!(
        metric(&m, "velox_rejected_total{reason=\"pool_full\"}"),
        10.0,
        "{m}"
    );

    // The bound holds for everyone: even the transaction that would fill
    // a gap waits, then is refused (room comes back as waiting
    // transactions expire after mempool.expiry_ms).
    let r = submit(AckMode::Commit, vec![transfer(&dev(2), 0, to, 1)]);
    assert_eq!(r[0].reason, Some(RejectReason::PoolFull), "{r:?}");
}

#[test]
fn wrong_config_is_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    let text = velox_node::config::DEFAULT_CONFIG
        .replace("leader_timeout_ms = 300", "leader_timeout_ms = 0");
    std::fs::write(&cfg, text).unwrap();
    let out = std::process::Command::new(EXE)
        .args(["node", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("consensus.leader_timeout_ms") && err.contains("fix:"),
        "{err}"
    );
}

#[test]
fn devnet_main_job_writes_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    // Two validators: the devnet runs validator 0 on the sequential
    // executor and validator 1 on Block-STM, so agreeing roots compare the
    // two engines on every commit.
    let out = std::process::Command::new(EXE)
        .args([
            "devnet",
            "--validators",
            "2",
            "--rate",
            "400",
            "--duration",
            "3",
            "--accounts",
            "50",
            "--report",
        ])
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    for f in [
        "validators",
        "submitted",
        "committed",
        "rejected",
        "tps",
        "latency_ms_p50",
        "latency_ms_p99",
        "duration_s",
        "state_roots_agree",
        "commit_index_min",
        "commit_index_max",
    ] {
        assert!(v.get(f).is_some(), "report lacks {f}: {v}");
    }
    assert_eq!(v["submitted"], 1200);
    assert_eq!(v["committed"], 1200, "{v}");
    assert_eq!(v["rejected"], 0);
    assert_eq!(v["state_roots_agree"], true);
    assert!(v["latency_ms_p99"].as_f64().unwrap() > 0.0);
    // R, the verify limit the figures are measured against, beside them.
    assert!(!v["verify_backend"]
        .as_str()
        .expect("verify_backend")
        .is_empty());
    let r = v["verify_rate_r"].as_f64().expect("verify_rate_r");
    assert!(r > 1000.0, "R measured: {v}");
    let ratio = v["tps_over_r"].as_f64().expect("tps_over_r");
    let tps = v["tps"].as_f64().unwrap();
    assert!((ratio - tps / r).abs() < 0.001, "{v}");
    let paths = v["exec_paths"].as_array().expect("exec_paths");
    assert_eq!(paths.len(), 2, "{v}");
    assert_eq!(paths[0]["paths"]["parallel_blocks"], 0, "{v}");
    assert!(
        paths[1]["paths"]["parallel_blocks"].as_u64().unwrap() > 0,
        "validator 1 ran Block-STM: {v}"
    );
    assert_eq!(
        paths[1]["paths"]["sequential_blocks"]["internal_error"], 0,
        "{v}"
    );
    // Per-tile busy fractions over the load, and their plot next to the report.
    let busy = v["tile_busy"].as_array().expect("tile_busy");
    let verify = busy
        .iter()
        .find(|t| t["tile"] == "verify")
        .expect("a verify tile row");
    let f = verify["busy_fraction"].as_f64().unwrap();
    assert!(f > 0.0 && f <= 1.0, "{verify}");
    let svg = std::fs::read_to_string(report.with_extension("tiles.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("v0 verify.0"), "{svg}");
    // Unsupported shapes fail clearly rather than pretending.
    let out = std::process::Command::new(EXE)
        .args(["devnet", "--validators", "2", "--chaos", "kill-restart"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 4 validators"));
    let out = std::process::Command::new(EXE)
        .args(["devnet", "--chaos", "meteor"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown mode"));
}

/// Submits `txs` on one commit-mode stream and waits at most `limit` for
/// every answer (a missing answer fails the test instead of hanging it).
fn submit_within(node: &TestNode, txs: &[Vec<u8>], limit: Duration) -> Vec<velox_net::Response> {
    rt().block_on(async {
        let ep = velox_net::ingress::client_endpoint(Some(node.cert())).unwrap();
        let c = IngressClient::connect(&ep, node.ingress).await.unwrap();
        let refs: Vec<&[u8]> = txs.iter().map(|t| t.as_slice()).collect();
        tokio::time::timeout(limit, c.submit(AckMode::Commit, &refs))
            .await
            .unwrap_or_else(|_| panic!("no answer within {limit:?}; log:\n{}", node.log()))
            .unwrap()
    })
}

fn unfunded(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A transaction rejected at execution leaves its nonce free, so the same
/// bytes sent again are a new attempt (a wallet retrying after a top-up):
/// each attempt gets its own final answer, before and after a restart, and
/// `GET /tx` shows the latest.
#[test]
fn a_resent_failed_transaction_is_answered_each_time_and_after_a_restart() {
    let mut node = TestNode::start(2, "");
    let limit = Duration::from_secs(20);
    let u = unfunded(0x55);
    let tx = transfer(&u, 0, AccountId([0xAB; 32]), 10);
    let first = submit_within(&node, std::slice::from_ref(&tx), limit);
    assert_eq!(
        (first[0].status, first[0].reason),
        (Status::Rejected, Some(RejectReason::InsufficientBalance)),
        "{first:?}"
    );
    let again = submit_within(&node, std::slice::from_ref(&tx), limit);
    assert_eq!(
        (again[0].status, again[0].reason),
        (Status::Rejected, Some(RejectReason::InsufficientBalance)),
        "{again:?}"
    );
    assert!(
        again[0].commit_index > first[0].commit_index,
        "{first:?} {again:?}"
    );
    // The top-up, then the same bytes once more: now they commit.
    let top_up = submit_within(&node, &[transfer(&dev(1), 0, id(&u), 100)], limit);
    assert_eq!(top_up[0].status, Status::Committed, "{top_up:?}");
    let third = submit_within(&node, std::slice::from_ref(&tx), limit);
    assert_eq!(third[0].status, Status::Committed, "{third:?}");
    let st = node.get(&format!("/tx/{}", third[0].digest.to_hex()));
    assert_eq!(st["status"], "committed", "{st}");
    assert_eq!(st["commit_index"], third[0].commit_index, "{st}");
    // The next nonce fails, the node restarts (its duplicate window
    // reloaded from disk), and the same bytes are answered again.
    let big = transfer(&u, 1, AccountId([0xAB; 32]), 1_000_000);
    let before = submit_within(&node, std::slice::from_ref(&big), limit);
    assert_eq!(before[0].reason, Some(RejectReason::InsufficientBalance));
    let rejected = |node: &TestNode| {
        metric(
            &node.metrics(),
            "velox_rejected_total{reason=\"insufficient_balance\"}",
        )
    };
    assert_eq!(rejected(&node), 3.0, "execution rejections are counted");
    node.sigkill();
    node.restart();
    let after = submit_within(&node, std::slice::from_ref(&big), limit);
    assert_eq!(
        (after[0].status, after[0].reason),
        (Status::Rejected, Some(RejectReason::InsufficientBalance)),
        "{after:?}"
    );
    assert!(after[0].commit_index > before[0].commit_index);
    let st = node.get(&format!("/tx/{}", after[0].digest.to_hex()));
    assert_eq!(st["commit_index"], after[0].commit_index, "{st}");
    // And the account is not frozen: its next transaction commits.
    let next = submit_within(&node, &[transfer(&u, 1, AccountId([0xAB; 32]), 5)], limit);
    assert_eq!(next[0].status, Status::Committed, "{next:?}");
    assert_eq!(rejected(&node), 1.0, "counted since the restart");
}

/// Never-funded keys each send a failing transfer alone and then the same
/// bytes again alone, as many as the pool holds: every attempt is answered,
/// nothing stays in the pool, and a funded client keeps committing. (With
/// content-addressed batches each resend was sealed into a batch identical
/// to the committed one, skipped as a duplicate, and held forever.)
#[test]
fn failing_resends_cannot_fill_a_small_pool() {
    let node = TestNode::start(2, "\n[mempool]\ntxs_max = 16\nfull_wait_ms = 200\n");
    let limit = Duration::from_secs(10);
    let txs: Vec<Vec<u8>> = (0..16)
        .map(|i| transfer(&unfunded(0x60 + i), 0, AccountId([0xAC; 32]), 1))
        .collect();
    let mut funded_nonce = 0;
    for round in 0..2 {
        for t in &txs {
            let r = submit_within(&node, std::slice::from_ref(t), limit);
            assert_eq!(
                (r[0].status, r[0].reason),
                (Status::Rejected, Some(RejectReason::InsufficientBalance)),
                "round {round}: {r:?}"
            );
            // The funded client keeps committing meanwhile.
            let f = transfer(&dev(1), funded_nonce, AccountId([0xAD; 32]), 1);
            funded_nonce += 1;
            let r = submit_within(&node, &[f], limit);
            assert_eq!(r[0].status, Status::Committed, "round {round}: {r:?}");
        }
    }
    let m = node.metrics();
    assert_eq!(metric(&m, "velox_mempool_in_flight_txs "), 0.0, "{m}");
    assert_eq!(metric(&m, "velox_mempool_held_txs "), 0.0, "{m}");
}

/// Nonce n fails at execution and is resent while n+1 waits behind it:
/// both are answered, and n+1 is not executed again and again meanwhile.
#[test]
fn the_nonce_after_a_failed_one_is_answered_without_a_retry_loop() {
    let node = TestNode::start(2, "");
    let limit = Duration::from_secs(20);
    let u = unfunded(0x70);
    let n0 = transfer(&u, 0, AccountId([0xAE; 32]), 10);
    let n1 = transfer(&u, 1, AccountId([0xAE; 32]), 1);
    let r = submit_within(&node, &[n0.clone(), n1.clone()], limit);
    assert_eq!(
        r[0].reason,
        Some(RejectReason::InsufficientBalance),
        "{r:?}"
    );
    assert_eq!(r[1].reason, Some(RejectReason::BadNonce), "{r:?}");
    // Resent together with unrelated traffic for a few seconds.
    let r = submit_within(&node, &[n0, n1], limit);
    assert_eq!(
        r[0].reason,
        Some(RejectReason::InsufficientBalance),
        "{r:?}"
    );
    assert_eq!(r[1].reason, Some(RejectReason::BadNonce), "{r:?}");
    for n in 0..20 {
        let r = submit_within(
            &node,
            &[transfer(&dev(1), n, AccountId([0xAF; 32]), 1)],
            limit,
        );
        assert_eq!(r[0].status, Status::Committed, "{r:?}");
    }
    let m = node.metrics();
    let bad_nonce = metric(&m, "velox_rejected_total{reason=\"bad_nonce\"}");
    assert!(
        (2.0..=4.0).contains(&bad_nonce),
        "nonce 1 executed {bad_nonce} times for two submissions: {m}"
    );
}

/// Commands the README shows work on a small machine: `--version` names
/// the build, and a plan for more cores than this machine has is made for
/// a generic host of that size (and says so) instead of failing.
#[test]
fn version_and_a_plan_for_a_bigger_host() {
    let out = std::process::Command::new(EXE)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.starts_with("velox 0.1.0 ") && v.contains("(release)"),
        "{v}"
    );
    // More cores than this machine has, whatever machine runs the test.
    let cores = 64.max(4 * std::thread::available_parallelism().unwrap().get());
    let out = std::process::Command::new(EXE)
        .args(["tune", "plan", "--cores", &cores.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("generic {cores}-core host")),
        "{text}"
    );
    assert!(
        text.contains("[layout]") && text.contains("verify = ["),
        "{text}"
    );
    // `tune check` names the verification backend that runs.
    let out = std::process::Command::new(EXE)
        .args(["tune", "check"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("verify backend: zip215-dalek4-"), "{text}");
}

/// Every HTTP error is JSON with an `error` field: a malformed commit
/// index, one past 2^64, a negative one, and an unknown route.
#[test]
fn http_errors_are_json() {
    let node = TestNode::start(1, "");
    for (path, code) in [
        ("/commit/abc", 400),
        ("/commit/-1", 400),
        ("/commit/18446744073709551616", 400),
        ("/no/such/route", 404),
        ("/tx/zz", 400),
    ] {
        let (status, body) = velox_node::httpc::get(node.api, path).unwrap();
        assert_eq!(status, code, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        assert!(
            v["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {body}"
        );
    }
}

/// Issue 22: on SIGTERM a commit-mode stream whose transaction waits in the
/// pool (a nonce gap: it cannot commit) is answered `shutting_down` (204)
/// at once, not left to the client's 30 s idle timeout, and the node exits
/// cleanly.
#[test]
fn sigterm_answers_a_waiting_commit_stream_with_204() {
    let mut node = TestNode::start(2, "");
    let gapped = transfer(&dev(1), 5, AccountId([0xAB; 32]), 1);
    let pid = node.child.id().to_string();
    let r = rt().block_on(async {
        let ep = velox_net::ingress::client_endpoint(Some(node.cert())).unwrap();
        let c = IngressClient::connect(&ep, node.ingress).await.unwrap();
        let txs: [&[u8]; 1] = [&gapped];
        let (r, _) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(10), c.submit(AckMode::Commit, &txs)),
            async {
                // Admitted and waiting by then.
                tokio::time::sleep(Duration::from_millis(1_500)).await;
                let ok = std::process::Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "kill -TERM");
            }
        );
        r.expect("answered within 10 s of SIGTERM, not at the idle timeout")
            .unwrap()
    });
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].status, Status::Rejected, "{r:?}");
    assert_eq!(r[0].reason, Some(RejectReason::ShuttingDown), "{r:?}");
    let status = node.child.wait().unwrap();
    assert!(
        status.success(),
        "exit after SIGTERM: {status:?}\n{}",
        node.log()
    );
}

/// Issue 22: a resent copy of a transaction the pool holds is answered
/// `duplicate` (201) without a second signature check
/// (`velox_verify_duplicates_unverified_total`), so replaying valid bytes
/// costs the node a lookup, not a verification.
#[test]
fn a_resent_pending_transaction_is_refused_before_verification() {
    let node = TestNode::start(2, "");
    let gapped = transfer(&dev(1), 7, AccountId([0xAC; 32]), 1);
    let answers = rt().block_on(async {
        let ep = velox_net::ingress::client_endpoint(Some(node.cert())).unwrap();
        let c = IngressClient::connect(&ep, node.ingress).await.unwrap();
        let first = c.submit(AckMode::Admission, &[&gapped]).await.unwrap();
        assert_eq!(first[0].status, Status::Accepted, "{first:?}");
        let mut again = Vec::new();
        for _ in 0..5 {
            again.extend(c.submit(AckMode::Admission, &[&gapped]).await.unwrap());
        }
        again
    });
    for a in &answers {
        assert_eq!(a.status, Status::Rejected, "{a:?}");
        assert_eq!(a.reason, Some(RejectReason::Duplicate), "{a:?}");
    }
    // A copy with another signature (the digest leaves it out) is checked
    // like any other, and refused for its signature as it would be without
    // the shortcut.
    let mut resigned = gapped.clone();
    *resigned.last_mut().unwrap() ^= 1;
    let r = rt().block_on(async {
        let ep = velox_net::ingress::client_endpoint(Some(node.cert())).unwrap();
        let c = IngressClient::connect(&ep, node.ingress).await.unwrap();
        c.submit(AckMode::Admission, &[&resigned]).await.unwrap()
    });
    assert_eq!(r[0].reason, Some(RejectReason::BadSignature), "{r:?}");
    // The shard lock is not waited for, so a copy may occasionally be
    // checked after all; most are not.
    let skipped = metric(&node.metrics(), "velox_verify_duplicates_unverified_total");
    assert!(
        skipped >= 3.0,
        "copies refused before verification: {skipped}"
    );
}
