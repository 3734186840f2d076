//! Core state-machine tests: output order, fetching, equivocation, leader
//! timeout, recovery.

use std::sync::Arc;

use velox_dag::{
    Block, BlockStatus, Committee, Core, CoreConfig, Digest, Ed25519Verifier, Epoch, Output, Round,
    Time, UnsignedBlock, ValidatorIndex,
};

fn setup(n: usize) -> (Arc<Committee>, Vec<ed25519_dalek::SigningKey>) {
    let (c, k) = Committee::new_for_test(Epoch(0), n, 9);
    (Arc::new(c), k)
}

fn core(c: &Arc<Committee>, keys: &[ed25519_dalek::SigningKey], i: u32, now: u64) -> Core {
    core_with(CoreConfig::default(), c, keys, i, now)
}

fn core_with(
    config: CoreConfig,
    c: &Arc<Committee>,
    keys: &[ed25519_dalek::SigningKey],
    i: u32,
    now: u64,
) -> Core {
    Core::new(
        config,
        c.clone(),
        ValidatorIndex(i),
        keys[i as usize].clone(),
        Box::new(Ed25519Verifier),
        Time(now),
    )
}

fn drain(core: &mut Core) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

fn block(
    keys: &[ed25519_dalek::SigningKey],
    author: u32,
    round: u64,
    parents: &[&Block],
    ts: u64,
) -> Block {
    UnsignedBlock {
        epoch: Epoch(0),
        author: ValidatorIndex(author),
        round: Round(round),
        parents: parents.iter().map(|b| b.reference()).collect(),
        payload: vec![],
        timestamp_ms: ts,
    }
    .sign(&keys[author as usize])
}

#[test]
fn own_block_is_persisted_before_broadcast() {
    let (c, keys) = setup(4);
    let mut a = core(&c, &keys, 0, 0);
    a.handle_payload(Time(0), &[Digest([7; 32])]);
    let out = drain(&mut a);
    assert!(matches!(&out[0], Output::PersistBlock(b) if b.round() == Round(1)));
    assert!(matches!(&out[1], Output::BroadcastBlock(b) if b.round() == Round(1)));
}

#[test]
fn four_cores_in_lockstep_commit_the_same_sequence() {
    let (c, keys) = setup(4);
    let config = CoreConfig {
        gc_depth_rounds: 10,
        ..CoreConfig::default()
    };
    let mut cores: Vec<Core> = (0..4).map(|i| core_with(config, &c, &keys, i, 0)).collect();
    let mut commits: Vec<Vec<Digest>> = vec![vec![]; 4];
    let mut now = 0;
    for _ in 0..200 {
        now += 5;
        let mut msgs = Vec::new();
        for (i, core) in cores.iter_mut().enumerate() {
            core.handle_timeout(Time(now));
            core.handle_payload(Time(now), &[Digest([i as u8; 32])]);
            for o in drain(core) {
                match o {
                    Output::BroadcastBlock(b) => msgs.push((i, b.encode())),
                    Output::Committed(s) => commits[i].push(s.leader.digest),
                    _ => {}
                }
            }
        }
        for (from, bytes) in msgs {
            for (j, core) in cores.iter_mut().enumerate() {
                if j != from {
                    let st =
                        core.handle_block_bytes(Time(now), &bytes, ValidatorIndex(from as u32));
                    assert!(st.is_ok(), "{st:?}");
                }
            }
        }
    }
    assert!(commits[0].len() > 20, "{} commits", commits[0].len());
    for i in 1..4 {
        let m = commits[0].len().min(commits[i].len());
        assert_eq!(commits[0][..m], commits[i][..m]);
    }
    // GC keeps the window bounded.
    assert!(cores[0].gc_round() > Round(0));
    assert!(
        cores[0].dag_len() < 4 * 20,
        "{} blocks held",
        cores[0].dag_len()
    );
}

#[test]
fn missing_ancestors_are_requested_then_accepted() {
    let (c, keys) = setup(4);
    let mut a = core(&c, &keys, 0, 0);
    drain(&mut a);
    let r1: Vec<Block> = (1..4).map(|i| block(&keys, i, 1, &[], 1)).collect();
    let b2 = block(&keys, 1, 2, &[&r1[0], &r1[1], &r1[2]], 2);
    assert_eq!(
        a.handle_block(Time(1), b2.clone(), ValidatorIndex(1)),
        Ok(BlockStatus::Pending)
    );
    let out = drain(&mut a);
    match &out[..] {
        [Output::RequestBlocks { from, refs }] => {
            assert_eq!(*from, ValidatorIndex(1));
            assert_eq!(refs.len(), 3);
        }
        o => panic!("{o:?}"),
    }
    for b in &r1 {
        a.handle_block(Time(2), b.clone(), ValidatorIndex(1))
            .unwrap();
    }
    assert!(a.dag().contains(&b2.reference()));
    assert_eq!(a.pending_len(), 0);
    // Asking for b2 returns it with its ancestors, lowest round first.
    let served = a.handle_block_request(&[b2.reference()]);
    assert_eq!(served.len(), 4);
    assert_eq!(served.last().unwrap().reference(), b2.reference());
}

#[test]
fn equivocation_is_recorded_and_slot_counts_once() {
    let (c, keys) = setup(4);
    let mut a = core(&c, &keys, 0, 0);
    let x = block(&keys, 2, 1, &[], 1);
    let y = block(&keys, 2, 1, &[], 2);
    assert_eq!(
        a.handle_block(Time(1), x.clone(), ValidatorIndex(2)),
        Ok(BlockStatus::Accepted)
    );
    assert_eq!(
        a.handle_block(Time(1), x, ValidatorIndex(2)),
        Ok(BlockStatus::Duplicate)
    );
    assert_eq!(
        a.handle_block(Time(1), y, ValidatorIndex(2)),
        Ok(BlockStatus::Accepted)
    );
    assert_eq!(
        a.equivocators().iter().copied().collect::<Vec<_>>(),
        [ValidatorIndex(2)]
    );
    // Own + v2 (twice) = 2 of 4 stake: not a quorum yet.
    assert_eq!(a.dag().round_stake(Round(1)), 2);
    assert_eq!(a.threshold_round(), Round(0));
}

#[test]
fn leader_timeout_lets_a_round_advance_without_the_leader() {
    // leader(1) = v1. v0 has round-1 blocks of v0, v2, v3 (a quorum) but
    // not the leader's: it waits for leader_timeout_ms, then proposes.
    let (c, keys) = setup(4);
    assert_eq!(c.leader(Round(1)), ValidatorIndex(1));
    let mut a = core(&c, &keys, 0, 0);
    drain(&mut a);
    for i in [2, 3] {
        a.handle_block(Time(10), block(&keys, i, 1, &[], 1), ValidatorIndex(i))
            .unwrap();
    }
    assert!(drain(&mut a)
        .iter()
        .all(|o| !matches!(o, Output::BroadcastBlock(_))));
    assert_eq!(a.highest_signed_round(), Round(1));
    let t = a.poll_timeout().unwrap();
    assert_eq!(t, Time(10 + CoreConfig::default().leader_timeout_ms));
    a.handle_timeout(t);
    assert_eq!(a.highest_signed_round(), Round(2));
    assert_eq!(a.metrics().leader_timeouts, 1);
}

#[test]
fn bad_blocks_are_rejected_with_typed_errors() {
    let (c, keys) = setup(4);
    let mut a = core(&c, &keys, 0, 0);
    assert!(a
        .handle_block_bytes(Time(0), &[1, 2, 3], ValidatorIndex(1))
        .is_err());
    let b = block(&keys, 1, 1, &[], 1);
    let forged = b.unsigned().clone().with_signature([0; 64]);
    assert!(matches!(
        a.handle_block(Time(0), forged, ValidatorIndex(1)),
        Err(velox_dag::BlockError::BadSignature)
    ));
    let wrong_key = UnsignedBlock {
        ..b.unsigned().clone()
    }
    .sign(&keys[2]);
    assert!(a
        .handle_block(Time(0), wrong_key, ValidatorIndex(1))
        .is_err());
    assert_eq!(a.metrics().blocks_rejected, 3);
}

#[test]
fn recovery_never_signs_a_round_twice() {
    let (c, keys, persisted0, commits0, now) = run_lockstep(CoreConfig::default(), 60, false);
    // Core 0's highest signed round: every own block is persisted.
    let signed = persisted0
        .iter()
        .filter(|b| b.author() == ValidatorIndex(0))
        .map(|b| b.round())
        .max()
        .unwrap();
    assert!(signed > Round(10));
    let mut r = Core::recover(
        CoreConfig::default(),
        c.clone(),
        ValidatorIndex(0),
        keys[0].clone(),
        Box::new(Ed25519Verifier),
        persisted0,
        Time(now + 1),
    );
    let out = drain(&mut r);
    // Commits are re-emitted identically from index 0.
    let again: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Committed(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(again, commits0);
    // The last own block is re-broadcast, and nothing new is signed at or
    // below the recovered round.
    for o in &out {
        if let Output::PersistBlock(b) | Output::BroadcastBlock(b) = o {
            if b.author() == ValidatorIndex(0) {
                assert!(b.round() <= signed);
                if b.round() == signed {
                    assert!(matches!(o, Output::BroadcastBlock(_)));
                }
            }
        }
    }
    assert!(r.highest_signed_round() >= signed);
}

/// Four cores in lockstep (with a payload each step if `payloads`);
/// returns core 0's persisted blocks and commits, and the final time.
fn run_lockstep(
    config: CoreConfig,
    steps: usize,
    payloads: bool,
) -> (
    Arc<Committee>,
    Vec<ed25519_dalek::SigningKey>,
    Vec<Block>,
    Vec<velox_dag::CommittedSubDag>,
    u64,
) {
    let (c, keys) = setup(4);
    let mut cores: Vec<Core> = (0..4).map(|i| core_with(config, &c, &keys, i, 0)).collect();
    let mut persisted0: Vec<Block> = Vec::new();
    let mut commits0 = Vec::new();
    let mut now = 0;
    for step in 0..steps {
        now += 5;
        let mut msgs = Vec::new();
        for (i, core) in cores.iter_mut().enumerate() {
            core.handle_timeout(Time(now));
            if payloads {
                core.handle_payload(Time(now), &[Digest([(step % 250) as u8; 32])]);
            }
            for o in drain(core) {
                match o {
                    Output::BroadcastBlock(b) => msgs.push((i, b.encode())),
                    Output::PersistBlock(b) if i == 0 => persisted0.push((*b).clone()),
                    Output::Committed(s) if i == 0 => commits0.push(s),
                    _ => {}
                }
            }
        }
        for (from, bytes) in msgs {
            for (j, core) in cores.iter_mut().enumerate() {
                if j != from {
                    let _ = core.handle_block_bytes(Time(now), &bytes, ValidatorIndex(from as u32));
                }
            }
        }
    }
    (c, keys, persisted0, commits0, now)
}

#[test]
fn recovery_from_a_resume_point_needs_only_recent_rounds_and_continues_the_sequence() {
    let config = CoreConfig {
        gc_depth_rounds: 10,
        ..CoreConfig::default()
    };
    let (c, keys, persisted0, commits0, now) = run_lockstep(config, 300, true);
    assert!(commits0.len() > 40, "{} commits", commits0.len());
    let signed = persisted0
        .iter()
        .filter(|b| b.author() == ValidatorIndex(0))
        .map(|b| b.round())
        .max()
        .unwrap();
    let mut joined_cases = 0;
    for k in [5, commits0.len() / 2, commits0.len() - 3] {
        let last = &commits0[k];
        let gc = last.leader.round.0.saturating_sub(config.gc_depth_rounds);
        let resume = velox_dag::ResumePoint {
            next_commit_index: k as u64 + 1,
            last_leader: last.leader,
            last_timestamp_ms: last.timestamp_ms,
            recent_leaders: commits0[..=k]
                .iter()
                .filter(|s| s.leader.round.0 >= gc)
                .map(|s| s.leader)
                .collect(),
            signed_round_floor: velox_dag::Round(0),
        };
        // The log pruned below the resume GC round.
        let log: Vec<Block> = persisted0
            .iter()
            .filter(|b| b.round().0 >= gc)
            .cloned()
            .collect();
        let mut r = Core::recover_from(
            config,
            c.clone(),
            ValidatorIndex(0),
            keys[0].clone(),
            Box::new(Ed25519Verifier),
            log.clone(),
            &resume,
            Time(now + 1),
        )
        .unwrap();
        let out = drain(&mut r);
        let again: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                Output::Committed(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        // Exactly the commits after the resume point, identical.
        assert_eq!(again, commits0[k + 1..], "resuming after commit {k}");
        assert!(r.highest_signed_round() >= signed);
        for o in &out {
            if let Output::PersistBlock(b) = o {
                assert!(b.round() > signed, "re-signed round {:?}", b.round());
            }
        }

        // Without the last leader's block it refuses rather than guess.
        let holed: Vec<Block> = log
            .iter()
            .filter(|b| b.reference() != last.leader)
            .cloned()
            .collect();
        let e = Core::recover_from(
            config,
            c.clone(),
            ValidatorIndex(0),
            keys[0].clone(),
            Box::new(Ed25519Verifier),
            holed,
            &resume,
            Time(now + 1),
        )
        .err()
        .expect("refused");
        assert_eq!(e, velox_dag::ResumeError::MissingBlock(last.leader));

        // Joining from peers' blocks (the same window, as the peers hold
        // it) with a signed floor above every block it holds (the peers'
        // head went further): it signs nothing at or below the floor.
        let top = velox_dag::Round(log.iter().map(|b| b.round().0).max().unwrap() + 3);
        let joined = velox_dag::ResumePoint {
            signed_round_floor: top,
            ..resume.clone()
        };
        let mut j = Core::recover_from(
            config,
            c.clone(),
            ValidatorIndex(0),
            keys[0].clone(),
            Box::new(Ed25519Verifier),
            log.clone(),
            &joined,
            Time(now + 1),
        )
        .unwrap();
        assert!(j.highest_signed_round() >= top);
        joined_cases += 1;
        for o in drain(&mut j) {
            if let Output::PersistBlock(b) = o {
                assert!(
                    b.round() > top,
                    "signed round {:?} <= floor {top:?}",
                    b.round()
                );
            }
        }
    }
    assert_eq!(joined_cases, 3);
}
