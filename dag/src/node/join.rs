//! Joining consensus from the peers' blocks, as a sans-IO machine: what a
//! validator does when its data directory knows where consensus stands
//! (the last commit's leader, the committed leaders of the last
//! `gc_depth_rounds` rounds, the duplicate-batch window: all in a version 2
//! snapshot) but its consensus log lacks the blocks of those rounds (a
//! directory made by `velox snapshot restore`, or one whose log was lost).
//!
//! ```text
//!  for rounds [gc round of the last commit, ...) in steps of JOIN_ROUNDS_PER_REQUEST:
//!    RoundsRequest{from, to} ──▶ every peer (again after JOIN_REQUEST_TIMEOUT_MS)
//!    ◀── RoundsResponse parts (blocks of those rounds; the first part also
//!        carries this validator's latest block the peer holds) ... done
//!    once validators holding f+1 stake finished the range, move on, until
//!    `to` passes the head round those f+1 reached
//!  keep the blocks whose ancestors above the GC round are all present:
//!  the driver writes them to the log and resumes the core from them, with
//!  the highest round kept as the signed-round floor
//! ```
//!
//! Every block is verified on arrival and kept only if its round lies in
//! `[gc round, requested range's end + JOIN_AHEAD_ROUNDS_MAX]` (own blocks
//! of any round), with at most [`JOIN_SLOT_COPIES_MAX`] blocks per sender,
//! author and round: what peers can make a joining validator hold is
//! bounded by the rounds actually joined times the committee size (times
//! the senders, for copies only Byzantine authors can sign), whatever they
//! send (blocks of absurd rounds, endless equivocations). The head is what f+1
//! stake of answers reached, so one peer alone can neither drag the join
//! on (a high head) nor end it early (a low one: at least one of the f+1
//! is honest; ended early, the rest comes by fetching, as for any lagging
//! validator).
//!
//! Equivocation: rounds up to the highest block round kept count as signed,
//! and the validator's own latest block (from any peer) is its next
//! block's own parent. A validator that signed a block no answering peer
//! received, at a round above every answering peer's head, could sign that
//! round again: joining requires the rest of the network to have moved past
//! the rounds this validator signed before it lost its data
//! (docs/storage.md, "Joining from a snapshot").

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use velox_net::peer::{Dest, Outbound, PeerMessage};

use crate::block::{Block, BlockRef, SignatureVerifier};
use crate::types::{Committee, Round, Time, ValidatorIndex};

/// Rounds asked per request (well under the serving side's
/// [`super::ROUNDS_PER_REQUEST_MAX`]).
pub const JOIN_ROUNDS_PER_REQUEST: u64 = 50;
/// How long validators holding f+1 stake have to finish answering a range
/// before it is asked again.
pub const JOIN_REQUEST_TIMEOUT_MS: u64 = 3_000;
/// Requests without f+1 finished answers, in a row, before the join gives
/// up (every peer is asked several times first).
pub const JOIN_FAILED_REQUESTS_MAX: usize = 40;
/// Rounds above the requested range a block may be of and still be kept
/// (the network's newest blocks arrive by broadcast during a join).
pub const JOIN_AHEAD_ROUNDS_MAX: u64 = 100;
/// Blocks kept per sender, author and round: one, and one equivocating
/// copy. Counted per sender, so that copies a Byzantine peer sends first
/// cannot crowd out the real block an honest peer sends later (which would
/// leave every honest block above it incomplete).
pub const JOIN_SLOT_COPIES_MAX: usize = 2;

/// Why a join ended without blocks to resume from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinFailure {
    /// No range was finished by f+1 stake of peers, many times in a row.
    #[error(
        "{failed} requests in a row got no complete answer from validators holding f+1 stake \
         (are 2f+1 validators up and reachable on their peer_addr?)"
    )]
    NoAnswers {
        /// Requests in a row.
        failed: usize,
    },
    /// No peer held a block this validator signed.
    #[error(
        "no peer holds a block signed by this validator, so its next block would have no own \
         parent; it has been away longer than the peers keep their consensus log (their oldest \
         snapshot's GC round). Restore it from an older snapshot whose rounds the peers still hold"
    )]
    NoOwnBlock,
}

/// What a join did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JoinStats {
    /// Blocks kept (causally complete).
    pub blocks: usize,
    /// Verified blocks dropped at the end for missing ancestors.
    pub dropped_incomplete: usize,
    /// Blocks that failed to decode or verify (the sender's fault).
    pub rejected: usize,
    /// Verified blocks refused for their round (below the GC round or
    /// beyond the window above the requested range) or as a third copy of
    /// one slot.
    pub refused: usize,
    /// Range requests sent (each to every peer).
    pub requests: usize,
    /// The head round f+1 stake of answers reached.
    pub head_round: u64,
}

/// The join's result: blocks to write to the log and resume the core from.
#[derive(Debug)]
pub struct Joined {
    /// Causally complete above the GC round (and own blocks of any round),
    /// lowest rounds first.
    pub blocks: Vec<Block>,
    /// The signed-round floor: the highest round among them.
    pub highest: u64,
    /// What it took.
    pub stats: JoinStats,
}

/// The join machine (module docs). Feed it peers' messages and timeouts;
/// drain [`Join::poll_send`]; [`Join::poll_done`] gives the result once.
pub struct Join {
    committee: Arc<Committee>,
    me: ValidatorIndex,
    verifier: Box<dyn SignatureVerifier>,
    gc_round: u64,
    /// The join goes on at least to this round (the resume point's leader).
    resume_round: u64,
    /// The range asked now: `cursor..=to`.
    cursor: u64,
    to: u64,
    deadline: Time,
    failed: usize,
    /// Peers that finished the current range, with their head rounds.
    answers: Vec<(u32, u64)>,
    /// Parts of the current range's answer received per peer (an answer
    /// is whole once all its `parts` arrived, in whatever order).
    parts_seen: HashMap<u32, u32>,
    answered_stake: u64,
    got: BTreeMap<BlockRef, Block>,
    /// Blocks held per (sender, author, round); the sender is the first
    /// peer that delivered the block (this validator's own log: itself).
    copies: HashMap<(u32, ValidatorIndex, Round), usize>,
    stats: JoinStats,
    out: VecDeque<Outbound>,
    done: Option<Result<Joined, JoinFailure>>,
    finished: bool,
}

impl Join {
    /// Starts a join of the rounds from `gc_round` (the last commit's GC
    /// round) at least up to `resume_round` (the last commit's leader
    /// round: resuming needs the blocks up to it, so answers claiming a
    /// lower head cannot end the join before it) with what the own log
    /// still holds; the first request is queued.
    pub fn new(
        now: Time,
        committee: Arc<Committee>,
        me: ValidatorIndex,
        verifier: Box<dyn SignatureVerifier>,
        (gc_round, resume_round): (u64, u64),
        own_log: Vec<Block>,
    ) -> Join {
        let mut j = Join {
            committee,
            me,
            verifier,
            gc_round,
            resume_round,
            cursor: gc_round.max(1),
            to: 0,
            deadline: now,
            failed: 0,
            answers: Vec::new(),
            parts_seen: HashMap::new(),
            answered_stake: 0,
            got: BTreeMap::new(),
            copies: HashMap::new(),
            stats: JoinStats::default(),
            out: VecDeque::new(),
            done: None,
            finished: false,
        };
        for b in own_log {
            j.insert(me.0, b);
        }
        j.request(now);
        j
    }

    /// Asks every peer for `cursor..` (again, after a timeout).
    fn request(&mut self, now: Time) {
        self.to = self.cursor + JOIN_ROUNDS_PER_REQUEST - 1;
        self.stats.requests += 1;
        self.answers.clear();
        self.parts_seen.clear();
        self.answered_stake = 0;
        self.deadline = now.plus_ms(JOIN_REQUEST_TIMEOUT_MS);
        self.out.push_back(Outbound {
            to: Dest::All,
            msg: PeerMessage::RoundsRequest {
                from_round: self.cursor,
                to_round: self.to,
            },
        });
    }

    /// A message from peer `from`: answers and blocks are used, the rest is
    /// ignored (its senders retry).
    pub fn handle_peer(&mut self, now: Time, from: u32, msg: PeerMessage) {
        if self.finished || !self.committee.contains(ValidatorIndex(from)) || from == self.me.0 {
            return;
        }
        match msg {
            PeerMessage::RoundsResponse {
                from_round,
                to_round,
                head_round,
                parts,
                blocks,
                ..
            } => {
                for b in &blocks {
                    self.keep(from, b);
                }
                let current = from_round == self.cursor
                    && to_round == self.to
                    && !self.answers.iter().any(|a| a.0 == from);
                let seen = self.parts_seen.entry(from).or_default();
                *seen += u32::from(current);
                if current && *seen >= parts {
                    self.answers.push((from, head_round));
                    self.answered_stake += self.committee.stake(ValidatorIndex(from));
                    if self.answered_stake >= self.committee.validity_threshold() {
                        self.range_answered(now);
                    }
                }
            }
            PeerMessage::Block(b) => self.keep(from, &b),
            _ => {}
        }
        self.check_invariants();
    }

    /// Call when [`Join::poll_timeout`]'s time is reached.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.finished || now < self.deadline {
            return;
        }
        self.failed += 1;
        tracing::warn!(
            from_round = self.cursor,
            failed = self.failed,
            "join: no complete answer in time; asking again"
        );
        if self.failed >= JOIN_FAILED_REQUESTS_MAX {
            self.finish(Err(JoinFailure::NoAnswers {
                failed: self.failed,
            }));
            return;
        }
        self.request(now);
    }

    /// When to call [`Join::handle_timeout`] (`None` once finished).
    pub fn poll_timeout(&self) -> Option<Time> {
        (!self.finished).then_some(self.deadline)
    }

    /// The next message to send.
    pub fn poll_send(&mut self) -> Option<Outbound> {
        self.out.pop_front()
    }

    /// The result, once (then `None`).
    pub fn poll_done(&mut self) -> Option<Result<Joined, JoinFailure>> {
        self.done.take()
    }

    /// Whether the join ended (its result may have been taken).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Blocks held now (the simulator bounds it).
    pub fn blocks_held(&self) -> usize {
        self.got.len()
    }

    /// The highest round a block may have and be kept now (own blocks
    /// aside).
    pub fn round_window_end(&self) -> u64 {
        self.to.saturating_add(JOIN_AHEAD_ROUNDS_MAX)
    }

    /// What it did so far.
    pub fn stats(&self) -> JoinStats {
        self.stats
    }

    fn range_answered(&mut self, now: Time) {
        self.failed = 0;
        let head = f_plus_one_head(&self.committee, &self.answers);
        self.stats.head_round = self.stats.head_round.max(head);
        tracing::info!(
            peers = ?self.answers.iter().map(|a| a.0).collect::<Vec<_>>(),
            from_round = self.cursor,
            to_round = self.to,
            head_round = head,
            blocks = self.got.len(),
            "join: rounds received"
        );
        self.cursor = self.to + 1;
        if self.cursor > head.max(self.resume_round) {
            let got = std::mem::take(&mut self.got);
            let kept = keep_complete(got, self.gc_round, self.me);
            self.stats.dropped_incomplete = kept.dropped_incomplete;
            self.stats.blocks = kept.blocks.len();
            let result = if kept.own {
                Ok(Joined {
                    blocks: kept.blocks,
                    highest: kept.highest,
                    stats: self.stats,
                })
            } else {
                Err(JoinFailure::NoOwnBlock)
            };
            self.finish(result);
        } else {
            self.request(now);
        }
    }

    fn finish(&mut self, result: Result<Joined, JoinFailure>) {
        self.finished = true;
        self.got.clear();
        self.copies.clear();
        self.done = Some(result);
    }

    /// Verifies `bytes` and keeps the block if its round and slot allow.
    fn keep(&mut self, from: u32, bytes: &[u8]) {
        let b = match Block::decode(bytes) {
            Ok(b) if b.verify(&self.committee, self.verifier.as_ref()).is_ok() => b,
            _ => {
                self.stats.rejected += 1;
                tracing::debug!("join: invalid block skipped");
                return;
            }
        };
        let own = b.author() == self.me;
        let round = b.round().0;
        if !own && (round < self.gc_round || round > self.round_window_end()) {
            self.stats.refused += 1;
            return;
        }
        self.insert(from, b);
    }

    fn insert(&mut self, from: u32, b: Block) {
        let r = b.reference();
        if self.got.contains_key(&r) {
            return;
        }
        let slot = self.copies.entry((from, r.author, r.round)).or_default();
        if *slot >= JOIN_SLOT_COPIES_MAX {
            self.stats.refused += 1;
            return;
        }
        *slot += 1;
        self.got.insert(r, b);
    }

    fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        assert_eq!(
            self.copies.values().sum::<usize>(),
            self.got.len(),
            "join: slot counts match the blocks held"
        );
        assert!(self.copies.values().all(|c| *c <= JOIN_SLOT_COPIES_MAX));
    }
}

/// What a join keeps of the blocks its peers sent.
struct Kept {
    blocks: Vec<Block>,
    highest: u64,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{Ed25519Verifier, UnsignedBlock};
    use crate::types::{Digest, Epoch};
    use ed25519_dalek::SigningKey;

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

    fn ghost(keys: &[SigningKey], author: u32, round: u64) -> Block {
        UnsignedBlock {
            epoch: Epoch(0),
            author: ValidatorIndex(author),
            round: Round(round),
            // Validly formed (a quorum of the previous round, own parent
            // included), but nobody has these parents.
            parents: (0..4)
                .map(|a| BlockRef {
                    round: Round(round - 1),
                    author: ValidatorIndex(a),
                    digest: Digest([9; 32]),
                })
                .collect(),
            payload: vec![],
            timestamp_ms: round,
        }
        .sign(&keys[author as usize])
    }

    /// Validator 0 joining at time 0 from round 1 (its GC round) to at least
    /// `resume_round`, with an empty log.
    fn joining(c: &Arc<Committee>, resume_round: u64) -> Join {
        Join::new(
            Time(0),
            c.clone(),
            ValidatorIndex(0),
            Box::new(Ed25519Verifier),
            (1, resume_round),
            Vec::new(),
        )
    }

    fn answer(from: u64, to: u64, head: u64, blocks: &[&Block]) -> PeerMessage {
        PeerMessage::RoundsResponse {
            from_round: from,
            to_round: to,
            head_round: head,
            done: true,
            parts: 1,
            blocks: blocks.iter().map(|b| b.encode()).collect(),
        }
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
        let far = ghost(&keys, 3, 1_000_000);
        let mut got = BTreeMap::new();
        for b in r1.iter().chain(&r2).chain([&far]) {
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

    /// The machine end to end: a request per range to every peer, f+1
    /// answers move it on, the head ends it; a poisoning peer's blocks of
    /// absurd rounds and extra copies of one slot are not held, and its
    /// absurd head does not drag the join on.
    #[test]
    fn a_join_asks_range_by_range_and_holds_only_its_window() {
        let (c, keys) = Committee::new_for_test(Epoch(0), 4, 3);
        let c = Arc::new(c);
        let mut j = joining(&c, 2);
        match j.poll_send() {
            Some(Outbound {
                to: Dest::All,
                msg:
                    PeerMessage::RoundsRequest {
                        from_round: 1,
                        to_round: 50,
                    },
            }) => {}
            o => panic!("{o:?}"),
        }
        let r1: Vec<Block> = (0..4).map(|a| block(&keys, a, 1, &[])).collect();
        let r2: Vec<Block> = (0..4)
            .map(|a| block(&keys, a, 2, &[&r1[0], &r1[1], &r1[2], &r1[3]]))
            .collect();
        let r3: Vec<Block> = (0..4)
            .map(|a| block(&keys, a, 3, &[&r2[0], &r2[1], &r2[2], &r2[3]]))
            .collect();
        let all: Vec<&Block> = r1.iter().chain(&r2).chain(&r3).collect();
        // Validator 3 poisons first: absurd rounds, four copies of its own
        // round-2 slot (whose real block the honest peer sends later), and
        // a head of u64::MAX.
        let mut poison: Vec<Block> = (0..20).map(|k| ghost(&keys, 3, 1_000 + k)).collect();
        for k in 0..4 {
            let mut u = ghost(&keys, 3, 2).unsigned().clone();
            u.timestamp_ms = 77 + k;
            poison.push(u.sign(&keys[3]));
        }
        let poison_refs: Vec<&Block> = poison.iter().collect();
        j.handle_peer(Time(5), 3, answer(1, 50, u64::MAX, &poison_refs));
        assert_eq!(j.blocks_held(), 2, "two copies of one slot per sender");
        assert_eq!(j.stats().refused, 22);
        assert!(j.poll_send().is_none(), "one answer is not f+1");
        // An honest answer completes f+1 (stake 2 of 4): the head is the
        // honest one, 3, so the join ends after this range, with every
        // honest block (the real round-2 block of validator 3 was not
        // crowded out by the copies) and none of the poison.
        j.handle_peer(Time(6), 1, answer(1, 50, 3, &all));
        let done = j.poll_done().expect("finished").expect("joined");
        assert_eq!(done.highest, 3);
        assert_eq!(done.blocks.len(), 12);
        assert_eq!(done.stats.dropped_incomplete, 2);
        assert_eq!(done.stats.requests, 1);
        assert!(j.poll_timeout().is_none());
    }

    /// An answer in parts counts once every part arrived, in any order: a
    /// `done` part overtaking the others does not end the range early
    /// (which left blocks out and every block above them incomplete).
    #[test]
    fn an_answer_counts_once_all_its_parts_arrived() {
        let (c, keys) = Committee::new_for_test(Epoch(0), 4, 3);
        let mut j = joining(&Arc::new(c), 2);
        let r1: Vec<Block> = (0..4).map(|a| block(&keys, a, 1, &[])).collect();
        let r2: Vec<Block> = (0..4)
            .map(|a| block(&keys, a, 2, &[&r1[0], &r1[1], &r1[2], &r1[3]]))
            .collect();
        let part = |blocks: &[Block], done: bool| PeerMessage::RoundsResponse {
            from_round: 1,
            to_round: 50,
            head_round: 2,
            done,
            parts: 2,
            blocks: blocks.iter().map(|b| b.encode()).collect(),
        };
        // Peer 1's whole answer; peer 2's last part only.
        j.handle_peer(Time(1), 1, part(&r1, false));
        j.handle_peer(Time(1), 1, part(&r2, true));
        j.handle_peer(Time(2), 2, part(&r2, true));
        assert!(j.poll_done().is_none(), "peer 2's first part is missing");
        j.handle_peer(Time(3), 2, part(&r1, false));
        let done = j.poll_done().expect("finished").expect("joined");
        assert_eq!(done.blocks.len(), 8);
        assert_eq!(done.highest, 2);
    }

    /// Answers claiming a head below the resume point's leader round do not
    /// end the join: resuming needs the blocks up to that round.
    #[test]
    fn a_low_head_does_not_end_the_join_before_the_resume_round() {
        let (c, _) = Committee::new_for_test(Epoch(0), 4, 3);
        let mut j = joining(&Arc::new(c), 120);
        assert!(j.poll_send().is_some());
        j.handle_peer(Time(1), 3, answer(1, 50, 1, &[]));
        j.handle_peer(Time(1), 1, answer(1, 50, 1, &[]));
        assert!(j.poll_done().is_none(), "not done below round 120");
        match j.poll_send() {
            Some(Outbound {
                msg:
                    PeerMessage::RoundsRequest {
                        from_round: 51,
                        to_round: 100,
                    },
                ..
            }) => {}
            o => panic!("{o:?}"),
        }
    }

    /// Without f+1 answers the range is asked again at each timeout, and
    /// the join gives up after [`JOIN_FAILED_REQUESTS_MAX`] tries; an own
    /// block missing everywhere is an error too.
    #[test]
    fn a_join_retries_then_gives_up_and_needs_an_own_block() {
        let (c, keys) = Committee::new_for_test(Epoch(0), 4, 3);
        let c = Arc::new(c);
        let mut j = joining(&c, 2);
        let mut t = 0;
        let mut sent = 0;
        while !j.is_finished() {
            while j.poll_send().is_some() {
                sent += 1;
            }
            t = j.poll_timeout().expect("running").0;
            j.handle_timeout(Time(t));
        }
        assert_eq!(sent, JOIN_FAILED_REQUESTS_MAX);
        assert_eq!(t, JOIN_FAILED_REQUESTS_MAX as u64 * JOIN_REQUEST_TIMEOUT_MS);
        assert_eq!(
            j.poll_done().expect("finished").unwrap_err(),
            JoinFailure::NoAnswers {
                failed: JOIN_FAILED_REQUESTS_MAX
            }
        );
        // Peers 1 and 2 answer without any block of validator 0.
        let r1: Vec<Block> = (1..4).map(|a| block(&keys, a, 1, &[])).collect();
        let refs: Vec<&Block> = r1.iter().collect();
        let mut j = joining(&c, 2);
        j.handle_peer(Time(1), 1, answer(1, 50, 1, &refs));
        j.handle_peer(Time(1), 2, answer(1, 50, 1, &refs));
        assert_eq!(
            j.poll_done().expect("finished").unwrap_err(),
            JoinFailure::NoOwnBlock
        );
    }
}
