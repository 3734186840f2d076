//! Real validator processes on loopback, talking QUIC with mutual TLS:
//! agreement, crash and catch-up, a Byzantine peer, an unknown key.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::net::{assert_same_history, index_of, Net};
use common::{metric, EXE};
use velox_node::devnet::{wait_commit_index, PreparedNode};
use velox_node::load::run_load;

#[test]
fn four_validators_agree_and_a_killed_one_catches_up() {
    let accounts = 40;
    let mut net = Net::prepare(4, accounts);
    for i in 0..4 {
        net.start(i);
    }
    let all = net.apis(&[0, 1, 2, 3]);
    assert!(
        wait_commit_index(&all, 1, Duration::from_secs(60)),
        "no commit on every validator; log of v0:\n{}",
        net.log(0)
    );

    // Load through every validator: everything commits, everywhere the same.
    let r = net.load(&[0, 1, 2, 3], 300, 3, accounts);
    assert_eq!(r.committed, r.submitted, "{r:?}");
    assert_eq!(r.rejected, 0, "{r:?}");
    let top = all.iter().map(|a| index_of(*a)).max().unwrap();
    assert!(wait_commit_index(&all, top, Duration::from_secs(30)));
    assert_same_history(&all);
    let m = net.metrics(1);
    velox_tuning::monitor::parse_exposition(&m)
        .unwrap_or_else(|e| panic!("/metrics is not valid exposition: {e}"));
    assert!(metric(&m, "velox_peer_alive") >= 3.0, "{m}");
    assert!(metric(&m, "velox_batches_received_total") > 0.0, "{m}");
    assert!(metric(&m, "velox_consensus_blocks_accepted_total") > 0.0);

    // One validator dies: the other three (2f+1) keep committing.
    net.sigkill(3);
    let rest = net.apis(&[0, 1, 2]);
    let before = rest.iter().map(|a| index_of(*a)).min().unwrap();
    let r = net.load(&[0, 1, 2], 200, 2, accounts);
    assert_eq!(r.committed, r.submitted, "{r:?}");
    let after = rest.iter().map(|a| index_of(*a)).min().unwrap();
    assert!(after > before + 5, "commits stalled: {before} -> {after}");

    // It restarts, fetches what it missed from its peers and agrees.
    let t = Instant::now();
    net.start(3);
    let top = rest.iter().map(|a| index_of(*a)).max().unwrap();
    assert!(
        wait_commit_index(&all, top, Duration::from_secs(90)),
        "validator 3 did not catch up to {top} (at {}); its log:\n{}",
        index_of(all[3]),
        net.log(3)
    );
    eprintln!("validator 3 caught up to commit {top} in {:?}", t.elapsed());
    let at = assert_same_history(&all);
    assert!(at >= top);
    let m = net.metrics(3);
    assert!(
        metric(&m, "velox_consensus_blocks_accepted_total") > 0.0,
        "{m}"
    );
    for i in 0..4 {
        assert!(!net.log(i).contains("panicked"), "v{i} panicked");
    }
}

#[test]
fn pruning_validators_agree_and_a_killed_one_resumes_from_its_pruned_log() {
    // Small windows so pruning runs within seconds: the consensus log keeps
    // gc 20 + margin 200 rounds, blocks 300 commits.
    let extra = "\n[consensus]\ngc_depth_rounds = 20\n\n[storage]\nsnapshot_every_commits = 50\n\
                 retention_commits = 300\nconsensus_log_margin_rounds = 200\n";
    let accounts = 40;
    let (mut net, all) = start_four(extra, accounts);
    let r = net.load(&[0, 1, 2, 3], 200, 3, accounts);
    assert_eq!(r.committed, r.submitted, "{r:?}");
    // Until every validator pruned both its commits and its consensus log.
    let t = Instant::now();
    while !(0..4).all(|i| {
        let m = net.metrics(i);
        metric(&m, "velox_commits_pruned_below") > 0.0
            && metric(&m, "velox_consensus_log_pruned_below_round") > 0.0
    }) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "no pruning yet; v0 metrics:\n{}",
            net.metrics(0)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (agree, at, roots) = velox_node::devnet::roots_agree(&all).unwrap();
    assert!(agree, "roots differ at commit {at}: {roots:?}");

    // Killed and restarted after pruning: it resumes after its last commit
    // from the recent rounds of its log, fetches the rest, and agrees.
    net.sigkill(3);
    let r = net.load(&[0, 1, 2], 200, 2, accounts);
    assert_eq!(r.committed, r.submitted, "{r:?}");
    net.start(3);
    let rest = net.apis(&[0, 1, 2]);
    let top = rest.iter().map(|a| index_of(*a)).max().unwrap();
    assert!(
        wait_commit_index(&all, top, Duration::from_secs(90)),
        "validator 3 did not catch up to {top} (at {}); its log:\n{}",
        index_of(all[3]),
        net.log(3)
    );
    let r = net.load(&[0, 1, 2, 3], 200, 2, accounts);
    assert_eq!(r.committed, r.submitted, "{r:?}");
    roots_agree_at_top(&all);
    let log3 = common::plain(&net.log(3));
    assert!(log3.contains("resumed_after_commit=true"), "{log3}");
    for i in 0..4 {
        assert!(!net.log(i).contains("panicked"), "v{i} panicked");
        assert_eq!(metric(&net.metrics(i), "velox_prune_failures_total"), 0.0);
    }
}

#[test]
fn a_key_outside_the_committee_cannot_join() {
    let mut net = Net::prepare(4, 10);
    // A validator whose key is not in the committee file refuses to start,
    // naming the problem.
    let stranger = net.nodes[0].dir.parent().unwrap().join("stranger");
    std::fs::create_dir_all(&stranger).unwrap();
    velox_node::keys::keygen(&stranger.join("validator.key")).unwrap();
    let cfg = std::fs::read_to_string(&net.nodes[0].cfg).unwrap();
    std::fs::write(stranger.join("velox.toml"), cfg).unwrap();
    let out = std::process::Command::new(EXE)
        .args(["node", "--config"])
        .arg(stranger.join("velox.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not in the committee") && err.contains("fix:"),
        "{err}"
    );

    // And at the network level: a stranger dialing a running validator is
    // refused at the TLS handshake and counted.
    for i in 0..3 {
        net.start(i);
    }
    let key = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
    let fake = byzantine::start(&net.nodes, 3, key, byzantine::Behaviour::Silent);
    let t = Instant::now();
    loop {
        let m = net.metrics(0);
        if metric(
            &m,
            "velox_peer_handshakes_rejected_total{reason=\"unknown_key\"}",
        ) > 0.0
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no rejection counted:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        fake.received_from_honest(),
        0,
        "a stranger received messages"
    );
    drop(fake);
}

#[test]
fn honest_validators_commit_despite_a_byzantine_peer() {
    let accounts = 30;
    let mut net = Net::prepare(4, accounts);
    for i in 0..3 {
        net.start(i);
    }
    // Validator 3's key, driven by a Byzantine process: two different blocks
    // for one round (equivocation), then garbage blocks and batches and
    // unrequested batch responses.
    let key = velox_node::keys::read_key(&net.nodes[3].dir.join("validator.key")).unwrap();
    let byz = byzantine::start(&net.nodes, 3, key, byzantine::Behaviour::Malicious);
    let honest = net.apis(&[0, 1, 2]);
    assert!(wait_commit_index(&honest, 1, Duration::from_secs(60)));
    let r = net.load(&[0, 1, 2], 300, 4, accounts);
    assert_eq!(r.committed, r.submitted, "{r:?}");
    assert_eq!(r.rejected, 0);
    let top = honest.iter().map(|a| index_of(*a)).max().unwrap();
    assert!(wait_commit_index(&honest, top, Duration::from_secs(30)));
    assert_same_history(&honest);
    assert!(
        byz.sent() > 10,
        "the Byzantine peer sent too little to mean anything"
    );
    let m = net.metrics(0);
    assert!(metric(&m, "velox_peer_penalties_total") > 0.0, "{m}");
    // 40 invalid messages a second: the peer is ignored for a while.
    assert!(metric(&m, "velox_peer_backoffs_total") >= 1.0, "{m}");
    assert!(metric(&m, "velox_peer_messages_ignored_total") > 0.0, "{m}");
    let equivocations_seen =
        (0..3).any(|i| metric(&net.metrics(i), "velox_consensus_equivocators") >= 1.0);
    assert!(equivocations_seen, "no validator noticed the equivocation");
    for i in 0..3 {
        assert!(!net.log(i).contains("panicked"), "v{i} panicked");
    }
    drop(byz);
}

/// A peer that speaks the validator protocol with a committee key (or a
/// stranger's) and misbehaves.
mod byzantine {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use velox_dag::{Block, BlockRef, Epoch, Round, UnsignedBlock, ValidatorIndex};
    use velox_io::Ring;
    use velox_net::peer::{
        Dest, Inbound, Outbound, PeerConfig, PeerInfo, PeerMessage, PeerNetwork,
    };

    #[derive(Clone, Copy, PartialEq, Eq)]
    pub enum Behaviour {
        Silent,
        Malicious,
    }

    pub struct Handle {
        stop: Arc<AtomicBool>,
        sent: Arc<AtomicU64>,
        received: Arc<AtomicU64>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Handle {
        pub fn sent(&self) -> u64 {
            self.sent.load(Ordering::Relaxed)
        }
        pub fn received_from_honest(&self) -> u64 {
            self.received.load(Ordering::Relaxed)
        }
    }

    impl Drop for Handle {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    pub fn start(
        nodes: &[PreparedNode],
        me: u32,
        key: ed25519_dalek::SigningKey,
        behaviour: Behaviour,
    ) -> Handle {
        let committee_file = nodes[0].dir.parent().unwrap().join("committee.toml");
        let file = velox_node::committee::CommitteeFile::load(&committee_file).unwrap();
        let mut committee: Vec<PeerInfo> = file
            .validators
            .iter()
            .enumerate()
            .map(|(i, v)| PeerInfo {
                index: i as u32,
                public_key: hex::decode(&v.public_key).unwrap().try_into().unwrap(),
                addr: v.peer_addr,
            })
            .collect();
        // A stranger believes it is member `me` with its own key; the real
        // validators know the committee file's key.
        committee[me as usize].public_key = key.verifying_key().to_bytes();
        let socket = std::net::UdpSocket::bind(nodes[me as usize].peer).unwrap();
        let cfg = PeerConfig {
            me,
            committee,
            pkcs8_der: velox_node::keys::pkcs8_der(&key).unwrap(),
            heartbeat_ms: 200,
            dead_after_ms: 2_000,
            reconnect_min_ms: 50,
            reconnect_max_ms: 500,
            outbound_queue_max: 1024,
            inbound_msgs_per_peer_max: 1024,
            inbound_bytes_per_peer_max: 32 << 20,
            outbound_bytes_per_peer_max: 64 << 20,
            limits: Default::default(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let (s2, sent2, rec2) = (stop.clone(), sent.clone(), received.clone());
        let thread =
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let inbound: Arc<Ring<Inbound>> = Ring::new("byz-in", 4096);
                let outbound: Arc<Ring<Outbound>> = Ring::new("byz-out", 4096);
                let (i2, o2) = (inbound.clone(), outbound.clone());
                rt.block_on(async move {
                    let net = PeerNetwork::new(cfg, socket).unwrap();
                    let run = tokio::spawn(net.run(i2, o2));
                    let mut by_round: std::collections::BTreeMap<u64, Vec<Block>> =
                        Default::default();
                    let mut own_first: Option<BlockRef> = None;
                    let mut last_equivocation = 0u64;
                    let mut n = 0u64;
                    while !s2.load(Ordering::Relaxed) {
                        while let Some(m) = inbound.try_pop() {
                            rec2.fetch_add(1, Ordering::Relaxed);
                            if let PeerMessage::Block(b) = &m.msg {
                                if let Ok(b) = Block::decode(b) {
                                    by_round.entry(b.round().0).or_default().push(b);
                                }
                            }
                        }
                        if behaviour == Behaviour::Malicious {
                            n += 1;
                            let send = |msg| {
                                if outbound.try_push(Outbound { to: Dest::All, msg }).is_ok() {
                                    sent2.fetch_add(1, Ordering::Relaxed);
                                }
                            };
                            // Garbage once it has equivocated (an honest
                            // validator ignores a peer for a while after 20
                            // invalid messages within 10 s, equivocations
                            // included after that).
                            if last_equivocation > 0 {
                                send(PeerMessage::Block(vec![n as u8; 100]));
                                send(PeerMessage::Batch(vec![0xAB; 64]));
                                send(PeerMessage::BatchResponse(vec![vec![1, 2, 3]]));
                            }
                            // Our own round-1 block, once: later blocks link to it.
                            let first = *own_first.get_or_insert_with(|| {
                                let b = UnsignedBlock {
                                    epoch: Epoch(0),
                                    author: ValidatorIndex(me),
                                    round: Round(1),
                                    parents: vec![],
                                    payload: vec![],
                                    timestamp_ms: velox_node::consensus::now_ms(),
                                }
                                .sign(&key);
                                send(PeerMessage::Block(b.encode()));
                                b.reference()
                            });
                            // Two different blocks for one round, each valid alone.
                            let ready = by_round.iter().rev().find(|(_, bs)| bs.len() >= 3).map(
                                |(r, bs)| {
                                    (
                                        *r,
                                        bs.iter()
                                            .take(3)
                                            .map(|b| b.reference())
                                            .collect::<Vec<_>>(),
                                    )
                                },
                            );
                            if let Some((r, mut parents)) = ready {
                                if r >= last_equivocation + 10 && r >= 1 {
                                    last_equivocation = r;
                                    parents.push(first);
                                    for salt in 0..2u64 {
                                        let b = UnsignedBlock {
                                            epoch: Epoch(0),
                                            author: ValidatorIndex(me),
                                            round: Round(r + 1),
                                            parents: parents.clone(),
                                            // No payload: a digest nobody can serve
                                            // would stall execution (see decision 0004).
                                            payload: vec![],
                                            timestamp_ms: velox_node::consensus::now_ms() + salt,
                                        }
                                        .sign(&key);
                                        send(PeerMessage::Block(b.encode()));
                                    }
                                }
                            }
                            by_round.retain(|r, _| *r + 50 > last_equivocation);
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    outbound.close();
                    inbound.close();
                    let _ = tokio::time::timeout(Duration::from_secs(2), run).await;
                });
            });
        Handle {
            stop,
            sent,
            received,
            thread: Some(thread),
        }
    }
}

#[test]
fn a_paused_validators_stranded_batches_return_to_its_pool_and_commit() {
    // A short GC depth, so blocks proposed while behind fall below the GC
    // round of the others quickly.
    let accounts = 40;
    let mut net = Net::prepare_with(4, accounts, "\n[consensus]\ngc_depth_rounds = 10\n");
    for i in 0..4 {
        net.start(i);
    }
    let all = net.apis(&[0, 1, 2, 3]);
    assert!(wait_commit_index(&all, 1, Duration::from_secs(60)));
    // Commit-mode load into v3 only; v3 is paused three times. Each time
    // it wakes it may propose, from far behind, blocks the others have
    // already garbage collected: their batches can never commit.
    let args = net.load_args(&[3], 200, 8, accounts);
    let load = std::thread::spawn(move || run_load(&args).unwrap());
    for (run_ms, pause_ms) in [(1000, 1500), (500, 1500), (500, 1000)] {
        std::thread::sleep(Duration::from_millis(run_ms));
        net.signal(3, true);
        std::thread::sleep(Duration::from_millis(pause_ms));
        net.signal(3, false);
    }
    let r = load.join().unwrap();
    let m = net.metrics(3);
    let returned = metric(&m, "velox_batches_returned_total");
    let returned_txs = metric(&m, "velox_mempool_returned_total");
    eprintln!("v3 returned {returned} batches, {returned_txs} transactions");
    // Every transaction v3 took commits: those whose batches were stranded
    // in blocks the others had garbage collected came back to v3's pool and
    // went out again.
    assert_eq!(
        r.committed,
        r.submitted,
        "{r:?}\nmetrics of v3:\n{}",
        m.lines()
            .filter(|l| l.starts_with("velox_batches")
                || l.starts_with("velox_mempool")
                || l.starts_with("velox_consensus"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(metric(&m, "velox_mempool_in_flight_txs"), 0.0, "{m}");
    let top = all.iter().map(|a| index_of(*a)).max().unwrap();
    assert!(wait_commit_index(&all, top, Duration::from_secs(30)));
    assert_same_history(&all);
}

#[test]
fn a_validator_that_lost_its_data_joins_from_a_peers_snapshot() {
    // Peers prune their consensus log close behind (gc 20 + margin 10
    // rounds) but never above their oldest kept snapshot's GC round, so a
    // joiner restored from that snapshot still finds the blocks it needs.
    let extra = "\n[consensus]\ngc_depth_rounds = 20\n\n[storage]\nsnapshot_every_commits = 50\n\
                 retention_commits = 300\nconsensus_log_margin_rounds = 10\n";
    let accounts = 40;
    let (mut net, all) = start_four(extra, accounts);
    let snaps1 = net.nodes[1].dir.join("data/snapshots");
    let t = Instant::now();
    while velox_storage::snapshot::list_snapshots(&snaps1).len() < 2 {
        let r = net.load(&[0, 1, 2, 3], 200, 2, accounts);
        assert_eq!(r.committed, r.submitted, "{r:?}");
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "v1 wrote no 2 snapshots"
        );
    }

    // Validator 3 loses its data directory while the others go on.
    net.sigkill(3);
    let r = net.load(&[0, 1, 2], 200, 2, accounts);
    assert_eq!(r.committed, r.submitted, "{r:?}");
    // Its newest snapshot: the peers keep the rounds of every snapshot they
    // still keep, and this one stays kept for at least 50 more commits.
    let (snap_index, snap) = velox_storage::snapshot::list_snapshots(&snaps1)
        .pop()
        .unwrap();
    let copy = net.nodes[3].dir.join("from-v1.vsnap");
    std::fs::copy(&snap, &copy).unwrap();
    // The peers move 40 rounds past the snapshot's leader: their log floor
    // by depth alone (gc 20 + margin 10 below their last leader) is then
    // above the rounds a joiner needs (gc 20 below the snapshot's leader);
    // only the snapshot rule keeps them.
    let snap_round = velox_storage::snapshot::read_snapshot_header(&copy)
        .unwrap()
        .meta
        .leader
        .unwrap()
        .round;
    let t = Instant::now();
    while metric(&net.metrics(1), "velox_consensus_round") < (snap_round + 40) as f64 {
        let r = net.load(&[0, 1, 2], 100, 1, accounts);
        assert_eq!(r.committed, r.submitted, "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(60));
    }
    let data3 = net.nodes[3].dir.join("data");
    std::fs::remove_dir_all(&data3).unwrap();
    let out = std::process::Command::new(EXE)
        .args(["snapshot", "restore", "--file"])
        .arg(&copy)
        .arg("--data-dir")
        .arg(&data3)
        .arg("--config")
        .arg(&net.nodes[3].cfg)
        .current_dir(&net.nodes[3].dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let peers_pruned = metric(&net.metrics(1), "velox_consensus_log_pruned_below_round");

    // It joins from its peers' blocks, catches up and agrees.
    let t = Instant::now();
    net.start(3);
    let rest = net.apis(&[0, 1, 2]);
    let top = rest.iter().map(|a| index_of(*a)).max().unwrap();
    assert!(
        wait_commit_index(&all, top, Duration::from_secs(90)),
        "validator 3 did not catch up from snapshot {snap_index} to {top} (at {}); its log:\n{}",
        index_of(all[3]),
        net.log(3)
    );
    eprintln!(
        "validator 3 joined from snapshot {snap_index} and caught up to commit {top} in {:?} \
         (peers' log pruned below round {peers_pruned})",
        t.elapsed()
    );
    let m3 = net.metrics(3);
    assert!(metric(&m3, "velox_consensus_join_blocks") > 0.0, "{m3}");
    assert_eq!(metric(&m3, "velox_consensus_joining"), 0.0, "{m3}");
    let served: f64 = (0..3)
        .map(|i| {
            metric(
                &net.metrics(i),
                "velox_consensus_rounds_requests_served_total",
            )
        })
        .sum();
    assert!(served > 0.0);
    // It takes part: transactions sent to it alone commit (its batches go
    // into its own blocks), and every validator has the same roots.
    let proposed = metric(&m3, "velox_consensus_blocks_proposed_total");
    let r = net.load(&[3], 150, 2, accounts);
    assert_eq!(r.committed, r.submitted, "{r:?}");
    assert!(metric(&net.metrics(3), "velox_consensus_blocks_proposed_total") > proposed);
    let at = roots_agree_at_top(&all);
    assert!(at > snap_index);
    let log3 = common::plain(&net.log(3));
    assert!(
        log3.contains("joined consensus from the peers' blocks"),
        "{log3}"
    );
    assert!(!log3.contains("equivocat"), "{log3}");

    // Its directory is now a normal one: a restart resumes from its own log.
    net.sigkill(3);
    net.start(3);
    let r = net.load(&[0, 1, 2, 3], 200, 2, accounts);
    assert_eq!(r.committed, r.submitted, "{r:?}");
    roots_agree_at_top(&all);
    let log3 = common::plain(&net.log(3));
    let last_start = log3.rsplit("consensus core ready").next().unwrap_or("");
    let ready_line = log3
        .lines()
        .rev()
        .find(|l| l.contains("consensus core ready"))
        .unwrap_or_default();
    assert!(
        ready_line.contains("joining_from_peers=false"),
        "{ready_line}"
    );
    assert!(!last_start.contains("joining from the peers"), "{log3}");
    for i in 0..4 {
        assert!(!net.log(i).contains("panicked"), "v{i} panicked");
        assert_eq!(metric(&net.metrics(i), "velox_prune_failures_total"), 0.0);
        assert_eq!(metric(&net.metrics(i), "velox_consensus_equivocators"), 0.0);
    }
}

/// A Byzantine client sends validator 0 signatures at the edges of the
/// chain's rule (mixed- and small-order R, S ≥ L, small-order and mixed-order
/// keys, …), each from its own funded account, next to valid transfers on
/// one stream. Each gets the rule's answer; what validator 0 batches, every
/// validator executes (their roots agree, each recipient's balance is the
/// same everywhere), and the validators agree on every transaction's fate.
#[test]
fn edge_case_signatures_get_one_answer_on_every_validator() {
    use velox_exec::sig::craft::{Case, Crafter};
    use velox_exec::{AccountId, RejectReason, TxBody, TxBuilder};
    use velox_net::{AckMode, Status};
    use velox_node::devnet::{DEVNET_CHAIN_ID, DEVNET_SEED};

    let cases = [
        Case::Valid,
        Case::MixedOrderR(1),
        Case::MixedOrderR(4),
        Case::MixedOrderR(6),
        Case::SmallOrderR(0),
        Case::SmallOrderR(3),
        Case::SmallOrderR(10),
        Case::SmallOrderRZeroS(2),
        Case::SPlusL,
        Case::SHighBit,
        Case::RNotOnCurve,
        Case::WrongMessage,
        Case::MixedOrderKey(2),
        Case::SmallOrderKey(1, 1),
        Case::NonCanonicalKey(0),
    ];
    let accounts = cases.len() as u32 + 10;
    let (net, all) = start_four("", accounts);
    assert!(wait_commit_index(&all, 1, Duration::from_secs(60)));
    let dev = |i: u32| velox_node::keys::dev_key(DEVNET_SEED, i);
    let recipient = |i: usize| AccountId([0xE0 + i as u8; 32]);
    let mut txs: Vec<Vec<u8>> = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let signer = dev(i as u32);
        let crafter = Crafter::new(&signer);
        let b = TxBuilder {
            chain_id: DEVNET_CHAIN_ID,
            nonce: 0,
            fee: 1,
            body: TxBody::Transfer {
                to: recipient(i),
                amount: 5,
            },
        };
        txs.push(b.encode_signed_by(crafter.key_for(*case), |d| crafter.sign(*case, d).1));
        // A valid neighbour from another funded account.
        let n = dev(cases.len() as u32 + (i % 10) as u32);
        txs.push(
            TxBuilder {
                chain_id: DEVNET_CHAIN_ID,
                nonce: (i / 10) as u64,
                fee: 1,
                body: TxBody::Transfer {
                    to: AccountId([0xD0; 32]),
                    amount: 1,
                },
            }
            .sign(&n),
        );
    }
    let responses = net.submit(0, AckMode::Commit, &txs);
    assert_eq!(responses.len(), txs.len());
    for (i, case) in cases.iter().enumerate() {
        let r = &responses[2 * i];
        match case.expected() {
            // A valid signature: committed, except a key nobody funded,
            // whose transfer fails at execution.
            Ok(()) if case.uses_signer_key() => {
                assert_eq!(r.status, Status::Committed, "{}: {r:?}", case.name())
            }
            Ok(()) => assert_eq!(
                (r.status, r.reason),
                (Status::Rejected, Some(RejectReason::InsufficientBalance)),
                "{}",
                case.name()
            ),
            Err(e) => assert_eq!(
                (r.status, r.reason),
                (Status::Rejected, Some(RejectReason::from(e))),
                "{}",
                case.name()
            ),
        }
        assert_eq!(
            responses[2 * i + 1].status,
            Status::Committed,
            "neighbour {i}"
        );
    }
    roots_agree_at_top(&all);
    for (i, case) in cases.iter().enumerate() {
        let want = if case.expected().is_ok() && case.uses_signer_key() {
            5
        } else {
            0
        };
        for api in &all {
            let (_, body) =
                velox_node::httpc::get(*api, &format!("/account/{}", recipient(i).to_hex()))
                    .unwrap();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                v["balance"].as_u64().unwrap_or(0),
                want,
                "{} on {api}: {body}",
                case.name()
            );
        }
        // Every validator that executed it records the same fate.
        if case.expected().is_ok() {
            let digest = responses[2 * i].digest.to_hex();
            let fates: Vec<String> = all
                .iter()
                .map(|api| {
                    let (_, body) = velox_node::httpc::get(*api, &format!("/tx/{digest}")).unwrap();
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    format!(
                        "{} {} {} {}",
                        v["status"], v["reason"], v["commit_index"], v["position"]
                    )
                })
                .collect();
            assert!(
                fates.iter().all(|f| *f == fates[0]),
                "{}: {fates:?}",
                case.name()
            );
        }
    }
    for i in 0..4 {
        assert!(!net.log(i).contains("panicked"), "v{i} panicked");
    }
}

/// A validator whose peers are down cannot make its batches available:
/// after `mempool.batch_available_timeout_ms` it abandons them and their
/// transactions return to its pool (not stuck in flight); once the peers
/// are up, the transaction leaves in a new batch and commits.
#[test]
fn an_unavailable_batch_is_abandoned_and_its_transactions_commit_later() {
    use velox_net::{AckMode, Status};
    let accounts = 4;
    let mut net = Net::prepare_with(
        4,
        accounts,
        "\n[mempool]\nbatch_available_timeout_ms = 1000\n",
    );
    net.start(0);
    let key = velox_node::keys::dev_key(velox_node::devnet::DEVNET_SEED, 1);
    let tx = velox_exec::TxBuilder {
        chain_id: velox_node::devnet::DEVNET_CHAIN_ID,
        nonce: 0,
        fee: 1,
        body: velox_exec::TxBody::Transfer {
            to: velox_exec::AccountId([0xB7; 32]),
            amount: 3,
        },
    }
    .sign(&key);
    let r = net.submit(0, AckMode::Admission, std::slice::from_ref(&tx));
    assert_eq!(r[0].status, Status::Accepted, "{r:?}");
    let digest = r[0].digest.to_hex();
    let t = Instant::now();
    loop {
        let m = net.metrics(0);
        if metric(&m, "velox_batches_abandoned_total") >= 1.0 {
            assert!(metric(&m, "velox_mempool_returned_total") >= 1.0, "{m}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no batch abandoned: {m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 1..4 {
        net.start(i);
    }
    let t = Instant::now();
    loop {
        let (_, body) = velox_node::httpc::get(net.nodes[0].api, &format!("/tx/{digest}")).unwrap();
        if body.contains("\"committed\"") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "not committed after the peers came up: {body}; log:\n{}",
            net.log(0)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let all = net.apis(&[0, 1, 2, 3]);
    roots_agree_at_top(&all);
}

/// Waits until every validator reached the highest commit any of them has,
/// then checks their roots agree at the common index, which it returns.
fn roots_agree_at_top(all: &[std::net::SocketAddr]) -> u64 {
    let top = all.iter().map(|a| index_of(*a)).max().unwrap();
    assert!(wait_commit_index(all, top, Duration::from_secs(30)));
    let (agree, at, roots) = velox_node::devnet::roots_agree(all).unwrap();
    assert!(agree, "roots differ at commit {at}: {roots:?}");
    at
}

/// Four validators with `extra` appended to each config, all started.
fn start_four(extra: &str, accounts: u32) -> (Net, Vec<std::net::SocketAddr>) {
    let mut net = Net::prepare_with(4, accounts, extra);
    for i in 0..4 {
        net.start(i);
    }
    let all = net.apis(&[0, 1, 2, 3]);
    (net, all)
}
