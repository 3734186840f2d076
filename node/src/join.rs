//! Joining consensus from the peers' blocks: what a validator does when its
//! data directory knows where consensus stands (the last commit's leader,
//! the committed leaders of the last `gc_depth_rounds` rounds, the
//! duplicate-batch window: all in a version 2 snapshot) but its consensus
//! log lacks the blocks of those rounds: a directory made by `velox
//! snapshot restore`, or one whose log was lost.
//!
//! ```text
//!  for rounds [gc round of the last commit, ...) in steps of JOIN_ROUNDS_PER_REQUEST:
//!    RoundsRequest{from, to} ──▶ every peer (again on a timeout)
//!    ◀── RoundsResponse parts (blocks of those rounds; the first part also
//!        carries this validator's latest block the peer holds) ... done
//!    the first peer done moves on; until `to` passes that peer's head round
//!  verify every block (signature, structure), keep those whose ancestors
//!  above the GC round are all present, write them to the consensus log,
//!  then Core::recover_from(resume point, blocks, signed floor = highest
//!  round seen)
//! ```
//!
//! The core then runs as after any restart: blocks newer than those
//! fetched arrive by broadcast and fetch, and the commits after the
//! snapshot are decided again from the blocks and executed from batches
//! fetched from the peers (which keep their consensus log and batches back
//! to their oldest kept snapshot's GC round).
//!
//! Equivocation: rounds up to the highest block round any answering peer
//! held count as signed, and the validator's own latest block (from any
//! peer) is its next block's own parent. A validator that signed a block
//! no answering peer received, at a round above every answering peer's
//! head, could sign that round again: joining requires the rest of the
//! network to have moved past the rounds this validator signed before it
//! lost its data (docs/storage.md, "Joining from a snapshot").

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use velox_dag::{
    Block, BlockRef, Committee, Core, Ed25519Verifier, ResumePoint, Round, Time, ValidatorIndex,
};
use velox_io::TileStats;
use velox_net::peer::{Dest, Outbound, PeerMessage};
use velox_storage::ChainStore;

use crate::consensus::{
    dag_key, mono_ms, now_ms, ConsensusCounters, ConsensusParams, ConsensusRings,
    ROUNDS_PER_REQUEST_MAX,
};

/// Rounds asked per request (well under [`ROUNDS_PER_REQUEST_MAX`]).
pub const JOIN_ROUNDS_PER_REQUEST: u64 = 50;
/// How long one peer has to finish answering before the next is asked.
pub const JOIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Requests without a finished answer, in a row, before the join gives up
/// (every peer is asked several times first).
pub const JOIN_FAILED_REQUESTS_MAX: usize = 40;
/// Blocks written to the consensus log per write batch.
const JOIN_WRITE_BLOCKS_PER_BATCH: usize = 512;

/// Where consensus stands and what the own log holds.
pub struct JoinPlan {
    /// Resume point of the last commit (its `signed_round_floor` is set by
    /// the join).
    pub point: ResumePoint,
    /// Blocks below this round are not needed (GC round of the last commit).
    pub gc_round: u64,
    /// What this node's own log holds of the rounds `>= gc_round`.
    pub own_log: Vec<Block>,
    pub commit_index: u64,
    /// Why the own log was not enough.
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "joining consensus from peers failed: {failed} requests in a row got no complete answer \
         (are 2f+1 validators up and reachable on their peer_addr?)"
    )]
    NoAnswers { failed: usize },
    #[error(
        "joining consensus from peers failed: no peer holds a block signed by this validator, \
         so its next block would have no own parent; it has been away longer than the peers keep \
         their consensus log (their oldest snapshot's GC round). Restore it from an older snapshot \
         whose rounds the peers still hold"
    )]
    NoOwnBlock,
    #[error(
        "joining consensus from peers failed: the peers' blocks do not reach the resume point ({0}). \
         Peers keep their consensus log back to their oldest kept snapshot's GC round: restore a newer \
         snapshot (the newest one of a peer) and start again"
    )]
    Resume(String),
    #[error("joining consensus from peers failed: writing the fetched blocks: {0}")]
    Store(#[from] velox_storage::StoreError),
    #[error("joining consensus from peers failed: the peer rings closed (shutting down)")]
    Closed,
}

/// What a join did (logged when it ends).
#[derive(Clone, Copy, Debug, Default)]
struct JoinStats {
    blocks: usize,
    dropped_incomplete: usize,
    rejected: usize,
    requests: usize,
    head_round: u64,
}

/// Fetches the blocks from the peers and builds the core (module docs).
#[allow(clippy::too_many_arguments)]
pub async fn join_from_peers(
    plan: JoinPlan,
    params: &ConsensusParams,
    committee: Arc<Committee>,
    me: ValidatorIndex,
    key: SigningKey,
    chain: &ChainStore,
    rings: &ConsensusRings,
    stats: &TileStats,
    counters: &ConsensusCounters,
) -> Result<Core, JoinError> {
    counters.joining.store(1, Ordering::Relaxed);
    let started = Instant::now();
    tracing::warn!(
        commit_index = plan.commit_index,
        from_round = plan.gc_round,
        reason = %plan.reason,
        "the consensus log lacks the blocks to resume after the last commit: joining from the peers' blocks"
    );
    let mut js = JoinStats::default();
    let mut got: BTreeMap<BlockRef, Block> = BTreeMap::new();
    for b in plan.own_log {
        got.insert(b.reference(), b);
    }
    let mut cursor = plan.gc_round.max(1);
    let mut failed = 0usize;
    loop {
        let to = cursor + JOIN_ROUNDS_PER_REQUEST.min(ROUNDS_PER_REQUEST_MAX) - 1;
        js.requests += 1;
        let msg = PeerMessage::RoundsRequest {
            from_round: cursor,
            to_round: to,
        };
        if rings
            .peer_out
            .push(Outbound { to: Dest::All, msg }, stats)
            .await
            .is_err()
        {
            return Err(JoinError::Closed);
        }
        match await_answer(rings, &committee, cursor, to, &mut got, &mut js, counters).await? {
            Some(answers) => {
                failed = 0;
                // The head round that f+1 stake of answers reached: at
                // least one honest validator is there, so a peer alone
                // cannot drag the join on. (A low head ends it early; the
                // rest comes by fetching, as for any lagging validator. The
                // floor does not depend on it: every answer carries this
                // validator's latest block, and one of f+1 is honest.)
                let head = f_plus_one_head(&committee, &answers);
                js.head_round = js.head_round.max(head);
                tracing::info!(
                    peers = ?answers.iter().map(|a| a.0).collect::<Vec<_>>(),
                    from_round = cursor,
                    to_round = to,
                    head_round = head,
                    blocks = got.len(),
                    "join: rounds received"
                );
                cursor = to + 1;
                if cursor > head {
                    break;
                }
            }
            None => {
                failed += 1;
                tracing::warn!(
                    from_round = cursor,
                    "join: no complete answer in time; asking again"
                );
                if failed >= JOIN_FAILED_REQUESTS_MAX {
                    return Err(JoinError::NoAnswers { failed });
                }
            }
        }
    }

    let Kept {
        blocks,
        highest,
        own,
        dropped_incomplete,
    } = keep_complete(got, plan.gc_round, me);
    js.dropped_incomplete = dropped_incomplete;
    if !own {
        return Err(JoinError::NoOwnBlock);
    }
    // The log then holds what the core starts from: a restart after the
    // join resumes from this node's own log like any other.
    for chunk in blocks.chunks(JOIN_WRITE_BLOCKS_PER_BATCH) {
        let entries: Vec<_> = chunk
            .iter()
            .map(|b| (dag_key(&b.reference()), b.encode()))
            .collect();
        chain.write_consensus(&entries, &[], highest)?;
    }
    js.blocks = blocks.len();
    counters
        .join_blocks
        .store(js.blocks as u64, Ordering::Relaxed);
    // Durable before anything is signed: a restart right after the join
    // keeps the floor.
    chain.raise_signed_round_floor(highest)?;
    let mut point = plan.point;
    point.signed_round_floor = Round(highest);
    let core = Core::recover_from(
        params.core,
        committee,
        me,
        key,
        Box::new(Ed25519Verifier),
        blocks,
        &point,
        Time(mono_ms()),
        Some(now_ms()),
    )
    .map_err(|e| JoinError::Resume(e.to_string()))?;
    counters.joining.store(0, Ordering::Relaxed);
    tracing::info!(
        blocks = js.blocks,
        dropped_incomplete = js.dropped_incomplete,
        rejected = js.rejected,
        requests = js.requests,
        head_round = js.head_round,
        signed_round_floor = highest,
        seconds = started.elapsed().as_secs_f64(),
        "joined consensus from the peers' blocks"
    );
    Ok(core)
}

/// What a join keeps of the blocks its peers sent.
struct Kept {
    /// Causally complete above the GC round (and anything below it, such
    /// as this validator's latest), lowest rounds first.
    blocks: Vec<Block>,
    /// The signed-round floor: the highest round among them.
    highest: u64,
    /// Whether one of them is this validator's own.
    own: bool,
    dropped_incomplete: usize,
}

/// Keeps what is causally complete above the GC round (lowest rounds
/// first, so a dropped block also drops its descendants); blocks below it
/// (own latest) go in as they are; own blocks always count (only this
/// validator's key signs them). The floor is the highest round kept: a
/// verified block of an absurd round alone (a Byzantine author's) is not
/// complete, so it cannot lift the floor and silence this validator.
fn keep_complete(got: BTreeMap<BlockRef, Block>, gc: u64, me: ValidatorIndex) -> Kept {
    let mut kept: HashSet<BlockRef> = HashSet::new();
    let mut out = Kept {
        blocks: Vec::with_capacity(got.len()),
        highest: 0,
        own: false,
        dropped_incomplete: 0,
    };
    for (r, b) in got {
        if r.round.0 >= gc && r.author != me {
            let complete = b
                .parents()
                .iter()
                .all(|p| p.round.0 < gc || kept.contains(p));
            if !complete {
                out.dropped_incomplete += 1;
                continue;
            }
        }
        kept.insert(r);
        out.own |= r.author == me;
        out.highest = out.highest.max(r.round.0);
        out.blocks.push(b);
    }
    out
}

/// The head round that validators holding f+1 stake among `answers`
/// reached (each answer: peer, its head round).
fn f_plus_one_head(committee: &Committee, answers: &[(u32, u64)]) -> u64 {
    let mut a = answers.to_vec();
    a.sort_unstable_by_key(|x| std::cmp::Reverse(x.1));
    let mut stake = 0;
    for (peer, head) in a {
        stake += committee.stake(ValidatorIndex(peer));
        if stake >= committee.validity_threshold() {
            return head;
        }
    }
    0
}

/// Reads the peer ring until validators holding f+1 stake finished
/// answering `from..=to` (each peer with its head round), or the timeout
/// (`None`). Every verified block
/// that arrives meanwhile (parts, other peers' answers, broadcasts) is
/// kept; other messages are dropped (their senders retry: batches are
/// resent until acknowledged).
async fn await_answer(
    rings: &ConsensusRings,
    committee: &Committee,
    from: u64,
    to: u64,
    got: &mut BTreeMap<BlockRef, Block>,
    js: &mut JoinStats,
    counters: &ConsensusCounters,
) -> Result<Option<Vec<(u32, u64)>>, JoinError> {
    let deadline = Instant::now() + JOIN_REQUEST_TIMEOUT;
    let mut answers: Vec<(u32, u64)> = Vec::new();
    let mut stake = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let m = match rings.peer_in.pop_timeout(left).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(JoinError::Closed),
            Err(()) => return Ok(None),
        };
        let sender = m.from;
        let mut keep = |bytes: &[u8]| match Block::decode(bytes) {
            Ok(b) if b.verify(committee, &Ed25519Verifier).is_ok() => {
                got.insert(b.reference(), b);
            }
            // Bad bytes or signature: counted as the sender's misbehaviour
            // (`velox_peer_penalties_total`) and skipped.
            _ => {
                js.rejected += 1;
                counters.peer_penalties.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = sender, "join: invalid block skipped");
            }
        };
        match m.msg {
            PeerMessage::RoundsResponse {
                from_round,
                to_round,
                head_round,
                done,
                blocks,
            } => {
                for b in &blocks {
                    keep(b);
                }
                if done
                    && from_round == from
                    && to_round == to
                    && committee.contains(ValidatorIndex(m.from))
                    && !answers.iter().any(|a| a.0 == m.from)
                {
                    answers.push((m.from, head_round));
                    stake += committee.stake(ValidatorIndex(m.from));
                    if stake >= committee.validity_threshold() {
                        return Ok(Some(answers));
                    }
                }
            }
            PeerMessage::Block(b) => keep(&b),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use velox_dag::{Digest, Epoch, UnsignedBlock};

    fn block(keys: &[SigningKey], author: u32, round: u64, parents: &[&Block]) -> Block {
        UnsignedBlock {
            epoch: Epoch(0),
            author: ValidatorIndex(author),
            round: Round(round),
            parents: parents.iter().map(|b| b.reference()).collect(),
            payload: vec![],
            timestamp_ms: round,
        }
        .sign(&keys[author as usize])
    }

    /// Issue 17, fault 2: a verified block of an absurd round (signed by a
    /// Byzantine validator, parents nobody has) does not raise the floor;
    /// this validator's own latest block does.
    #[test]
    fn the_floor_comes_from_complete_blocks_and_own_blocks() {
        let (_, keys) = Committee::new_for_test(Epoch(0), 4, 3);
        let r1: Vec<Block> = (0..4).map(|a| block(&keys, a, 1, &[])).collect();
        let r2: Vec<Block> = (1..4)
            .map(|a| block(&keys, a, 2, &[&r1[1], &r1[2], &r1[3]]))
            .collect();
        let ghost = block(&keys, 3, 999_999, &[]);
        let ghost = UnsignedBlock {
            round: Round(1_000_000),
            parents: vec![BlockRef {
                round: Round(999_999),
                author: ValidatorIndex(3),
                digest: Digest([9; 32]),
            }],
            ..ghost.unsigned().clone()
        }
        .sign(&keys[3]);
        let mut got = BTreeMap::new();
        for b in r1.iter().chain(&r2).chain([&ghost]) {
            got.insert(b.reference(), b.clone());
        }
        let k = keep_complete(got.clone(), 1, ValidatorIndex(0));
        assert_eq!(k.highest, 2, "the absurd round is not complete");
        assert_eq!(k.dropped_incomplete, 1);
        assert!(k.own);
        // Own blocks count whatever their parents.
        let own_late = block(&keys, 0, 7, &[&r2[0], &r2[1], &r2[2]]);
        got.insert(own_late.reference(), own_late);
        assert_eq!(keep_complete(got, 1, ValidatorIndex(0)).highest, 7);
    }

    /// A join ends at the head round f+1 stake of answers reached: one peer
    /// alone cannot drag it on; with more answers than f+1 a low head is
    /// outvoted too.
    #[test]
    fn the_join_head_is_what_f_plus_one_answers_reached() {
        let (c, _) = Committee::new_for_test(Epoch(0), 4, 3);
        // Validator 3 lies high, 2 low; 1 is honest at 240.
        assert_eq!(f_plus_one_head(&c, &[(3, u64::MAX), (1, 240)]), 240);
        assert_eq!(f_plus_one_head(&c, &[(1, 240), (3, u64::MAX)]), 240);
        assert_eq!(f_plus_one_head(&c, &[(3, 1), (1, 240), (2, 239)]), 239);
        assert_eq!(f_plus_one_head(&c, &[(1, 240)]), 0, "one answer is not f+1");
    }
}
