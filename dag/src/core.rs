//! The sans-IO consensus core.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use ed25519_dalek::SigningKey;

use crate::block::{
    Block, BlockError, BlockRef, SignatureVerifier, UnsignedBlock, BLOCK_PAYLOAD_DIGESTS_MAX,
};
use crate::commit::{CommitRuleConfig, CommittedSubDag, Committer, LeaderStatus, Linearizer};
use crate::dag::{DagState, InsertOutcome};
use crate::types::{Committee, Digest, Round, StakeAggregator, Time, ValidatorIndex};

/// Blocks a DAG slot (round, author) keeps unless more are needed as
/// ancestors: two are the evidence of an equivocation.
pub const SLOT_COPIES_MAX: usize = 2;

/// Most refs in one `RequestBlocks`: bounds request size (44 bytes each).
pub const REQUEST_REFS_MAX: usize = 256;

/// Core configuration. Every bound is named with its unit last.
#[derive(Copy, Clone, Debug)]
pub struct CoreConfig {
    /// How long to wait for the leader of round r (after 2f+1 round-r blocks
    /// arrived) before proposing round r+1 without it.
    pub leader_timeout_ms: u64,
    /// Rounds kept below the last committed leader's round. Blocks below
    /// are dropped and no longer fetched; a node further behind than this
    /// cannot catch up by fetching (state sync is out of scope).
    pub gc_depth_rounds: u64,
    /// Delay between fetch attempts of one missing block.
    pub fetch_retry_ms: u64,
    /// Re-broadcast our latest block when we have not proposed for this long
    /// (recovers from message loss that stalls every node).
    pub retransmit_ms: u64,
    /// Blocks buffered while waiting for ancestors; more are dropped (and
    /// fetched again later). ~1 KiB each at n=10. One author may hold at
    /// most `pending_blocks_max / n` of them.
    pub pending_blocks_max: usize,
    /// A buffered block whose ancestors did not all arrive in this long is
    /// dropped (fetched again if a descendant needs it).
    pub pending_max_age_ms: u64,
    /// Fetch attempts for one missing block at `fetch_retry_ms`; after
    /// them it is asked for ten times less often. Fetching stops when no
    /// buffered block waits for it any more (they age out).
    pub fetch_attempts_max: u32,
    /// Blocks of rounds more than this far above the round this node knows
    /// the network reached are refused before they are verified. That
    /// round is the higher of this node's highest DAG round and the
    /// highest round that peers holding f+1 stake have sent blocks of (so a
    /// lagging node follows the honest majority, and one peer alone cannot
    /// move it).
    pub future_rounds_max: u64,
    /// A peer's block whose timestamp is more than this far ahead of this
    /// node's wall clock is refused for now (not remembered: fetched again
    /// when a descendant needs it, by when the clock has caught up). Bounds
    /// how far a Byzantine leader can push commit timestamps ahead.
    pub timestamp_future_max_ms: u64,
    /// Local batch digests queued for our next blocks; more are refused.
    pub payload_queue_digests_max: usize,
    /// A fetch reply carries the asked blocks plus their ancestors this many
    /// rounds down, so a node that fell behind catches up in few round trips.
    pub fetch_ancestor_rounds: u64,
    /// Most blocks in one fetch reply.
    pub fetch_response_blocks_max: usize,
    /// Least time between two own proposals. Bounds the block rate when
    /// quorums form faster than useful (n = 1, or a LAN); 10 ms = at most
    /// 100 blocks/s per validator.
    pub min_round_delay_ms: u64,
    /// Commit rule (tests may break it on purpose).
    pub commit_rule: CommitRuleConfig,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            leader_timeout_ms: 300,
            gc_depth_rounds: 100,
            fetch_retry_ms: 150,
            retransmit_ms: 500,
            pending_blocks_max: 20_000,
            pending_max_age_ms: 30_000,
            fetch_attempts_max: 40,
            future_rounds_max: 100,
            timestamp_future_max_ms: 5_000,
            payload_queue_digests_max: 100_000,
            fetch_ancestor_rounds: 8,
            fetch_response_blocks_max: 1_000,
            min_round_delay_ms: 10,
            commit_rule: CommitRuleConfig::default(),
        }
    }
}

/// An intent for the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send our block to every peer. For our own blocks it always follows
    /// the `PersistBlock` of the same block.
    BroadcastBlock(Arc<Block>),
    /// Ask `from` for these blocks (missing ancestors); answer requests with
    /// [`Core::handle_block_request`].
    RequestBlocks {
        /// Peer to ask.
        from: ValidatorIndex,
        /// Blocks wanted.
        refs: Vec<BlockRef>,
    },
    /// Durably store this accepted block before acting on later outputs.
    PersistBlock(Arc<Block>),
    /// A leader was committed; its sub-DAG is ordered.
    Committed(CommittedSubDag),
}

/// What happened to a received block.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BlockStatus {
    /// Accepted into the DAG (with any buffered descendants).
    Accepted,
    /// Already known (accepted or buffered).
    Duplicate,
    /// Valid, buffered until its missing ancestors arrive.
    Pending,
    /// Below the GC round; ignored.
    Stale,
    /// The pending buffer, or its author's share of it, is full; dropped
    /// (will be fetched again).
    Dropped,
    /// Its round is too far above the round the network reached
    /// ([`CoreConfig::future_rounds_max`]); refused before verification.
    FarFuture,
    /// Its timestamp is too far ahead of this node's wall clock
    /// ([`CoreConfig::timestamp_future_max_ms`]); refused for now.
    FutureTimestamp,
    /// Its timestamp is below one of its parents'; refused.
    BehindParents,
}

/// Counters a driver exports as metrics.
#[derive(Clone, Debug, Default)]
pub struct CoreMetrics {
    /// Blocks accepted into the DAG (own included).
    pub blocks_accepted: u64,
    /// Blocks refused (bad bytes, signature, parents...).
    pub blocks_rejected: u64,
    /// Own blocks proposed.
    pub blocks_proposed: u64,
    /// Proposals made after the leader timeout without the leader's block.
    pub leader_timeouts: u64,
    /// Leaders committed.
    pub leaders_committed: u64,
    /// Leader slots skipped.
    pub leaders_skipped: u64,
    /// Blocks refused for a round too far ahead (before verification).
    pub blocks_refused_far_future: u64,
    /// Buffered blocks dropped: buffer or author quota full, or too old.
    pub pending_dropped: u64,
    /// Missing blocks no longer fetched: every buffered block waiting for
    /// them aged out.
    pub fetches_abandoned: u64,
    /// Further copies of a slot that already holds two blocks, refused
    /// unverified (nobody waited for them).
    pub equivocations_dropped: u64,
    /// Slots where two different blocks each gathered a quorum of support
    /// in the next round: more than f stake is Byzantine. An alarm.
    pub certified_equivocations: u64,
    /// Blocks refused for a timestamp too far ahead of the wall clock.
    pub blocks_refused_future_timestamp: u64,
    /// Blocks refused for a timestamp below one of their parents'.
    pub blocks_refused_behind_parents: u64,
}

#[derive(Debug)]
struct PendingBlock {
    block: Arc<Block>,
    /// Ancestors not yet accepted.
    missing: BTreeSet<BlockRef>,
    /// When it was buffered.
    since: Time,
}

#[derive(Debug)]
struct MissingBlock {
    /// Peers that may hold it (its author and senders of its children).
    sources: Vec<ValidatorIndex>,
    attempts: u32,
    next_retry: Time,
}

impl MissingBlock {
    /// The peer asked on attempt `attempts`: its likely holders in turn,
    /// then every other member. An honest peer that sent a descendant
    /// holds the block, but it is recorded only as a source of the
    /// descendant's own missing parents: when the holders named here are
    /// one Byzantine author (or a peer in backoff), asking only them would
    /// stall the node behind one block forever.
    fn source(&self, attempts: u32, me: ValidatorIndex, size: usize) -> Option<ValidatorIndex> {
        let others = (0..size as u32)
            .map(ValidatorIndex)
            .filter(|v| *v != me && !self.sources.contains(v));
        let named = self.sources.iter().copied().filter(|v| *v != me);
        let total = named.clone().count() + others.clone().count();
        if total == 0 {
            return None;
        }
        named.chain(others).nth(attempts as usize % total)
    }
}

/// DAG-BFT consensus core: a state machine with no I/O.
///
/// Invariants: `highest_signed_round` only grows and no two own blocks share
/// a round; every DAG block's ancestors above the GC round are in the DAG.
pub struct Core {
    config: CoreConfig,
    committee: Arc<Committee>,
    me: ValidatorIndex,
    key: SigningKey,
    verifier: Box<dyn SignatureVerifier>,
    dag: DagState,
    pending: BTreeMap<BlockRef, PendingBlock>,
    /// Missing ref -> pending blocks waiting for it.
    waiting_on: HashMap<BlockRef, Vec<BlockRef>>,
    /// Pending blocks per author (the per-author quota).
    pending_by_author: Vec<usize>,
    /// Per peer: the highest round it sent a block of (the transport
    /// authenticates the sender, not the block's author).
    claimed_rounds: Vec<Round>,
    /// The highest round peers holding f+1 stake sent blocks of.
    network_round: Round,
    missing: BTreeMap<BlockRef, MissingBlock>,
    last_own: Option<Arc<Block>>,
    highest_signed_round: Round,
    /// Highest round with 2f+1 stake of blocks, and when it got there.
    threshold_round: Round,
    threshold_reached_at: Time,
    last_broadcast_at: Time,
    last_proposed_at: Time,
    payload_queue: VecDeque<Digest>,
    committer: Committer,
    linearizer: Linearizer,
    /// Leader slots up to this round are decided.
    last_decided_round: Round,
    last_committed_leader_round: Round,
    equivocators: BTreeSet<ValidatorIndex>,
    /// Wall-clock milliseconds, for block timestamps only (every timer runs
    /// on the `now` the handlers get). `None`: `now` is the wall clock too.
    wall_ms: Option<u64>,
    /// Slots already reported as certified twice (alarmed once each).
    certified_twice: BTreeSet<(Round, ValidatorIndex)>,
    outputs: VecDeque<Output>,
    metrics: CoreMetrics,
    /// Simulation only: a Byzantine node's hook that edits the parents of its
    /// own proposals (selective voting). `None` in production.
    parent_filter: Option<ParentFilter>,
}

/// Where a recovering core resumes: right after a commit its driver applied
/// (and stored), so the log below that commit's reach need not be kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    /// Commits applied so far: the next commit gets this (0-based) index.
    pub next_commit_index: u64,
    /// The leader block of the last applied commit.
    pub last_leader: BlockRef,
    /// That commit's timestamp (commit timestamps never go back).
    pub last_timestamp_ms: u64,
    /// Every committed leader whose round is at least
    /// `last_leader.round - gc_depth_rounds` (`last_leader` included), in
    /// any order: their histories above the GC round are what the
    /// linearizer has already ordered.
    pub recent_leaders: Vec<BlockRef>,
    /// Rounds at or below this count as already signed by this validator
    /// even if none of its blocks is among the persisted ones (a validator
    /// joining from a snapshot with blocks from its peers: its own earlier
    /// blocks may be missing). `Round(0)` when the blocks are its own log.
    pub signed_round_floor: Round,
}

/// Why [`Core::recover_from`] could not resume.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// A block the resume point depends on (a committed leader or its
    /// history above the GC round) is not among the persisted blocks.
    #[error("block of round {} by validator {} ({}) is needed to resume but was not persisted",
        .0.round.0, .0.author.0, hex::encode(&.0.digest.0[..8]))]
    MissingBlock(BlockRef),
}

/// Edits the parent list of an own proposal of the given round.
pub(crate) type ParentFilter = Box<dyn FnMut(Round, &Committee, &mut Vec<BlockRef>) + Send>;

impl Core {
    /// A fresh validator: proposes its round-1 block at once.
    pub fn new(
        config: CoreConfig,
        committee: Arc<Committee>,
        me: ValidatorIndex,
        key: SigningKey,
        verifier: Box<dyn SignatureVerifier>,
        now: Time,
    ) -> Core {
        Self::recover(config, committee, me, key, verifier, Vec::new(), now, None)
    }

    fn empty(
        config: CoreConfig,
        committee: Arc<Committee>,
        me: ValidatorIndex,
        key: SigningKey,
        verifier: Box<dyn SignatureVerifier>,
        now: Time,
    ) -> Core {
        assert!(committee.contains(me), "own index not in committee");
        assert_eq!(
            committee.authority(me).expect("member").public_key,
            key.verifying_key(),
            "signing key does not match the committee"
        );
        let n = committee.size();
        Core {
            config,
            dag: DagState::new(committee.clone()),
            committee,
            me,
            key,
            verifier,
            pending: BTreeMap::new(),
            waiting_on: HashMap::new(),
            pending_by_author: vec![0; n],
            claimed_rounds: vec![Round(0); n],
            network_round: Round(0),
            missing: BTreeMap::new(),
            last_own: None,
            highest_signed_round: Round(0),
            threshold_round: Round(0),
            threshold_reached_at: now,
            last_broadcast_at: now,
            last_proposed_at: now,
            payload_queue: VecDeque::new(),
            committer: Committer::new(config.commit_rule),
            linearizer: Linearizer::default(),
            last_decided_round: Round(0),
            last_committed_leader_round: Round(0),
            equivocators: BTreeSet::new(),
            certified_twice: BTreeSet::new(),
            wall_ms: None,
            outputs: VecDeque::new(),
            metrics: CoreMetrics::default(),
            parent_filter: None,
        }
    }

    /// Rebuilds state from the blocks this validator persisted, resuming
    /// the commit sequence after `resume` instead of deciding it again from
    /// the first round: only blocks of rounds at or above the resume GC
    /// round (`resume.last_leader.round - gc_depth_rounds`) are needed, so
    /// the driver may prune its log below that. Commits are emitted from
    /// index `resume.next_commit_index` on. The highest own round found
    /// (at any round) is never signed again. `now` starts the timers (the
    /// driver's monotonic clock); `wall_ms`, when given, is the wall clock
    /// (see [`Core::set_wall_clock`]).
    #[allow(clippy::too_many_arguments)]
    pub fn recover_from(
        config: CoreConfig,
        committee: Arc<Committee>,
        me: ValidatorIndex,
        key: SigningKey,
        verifier: Box<dyn SignatureVerifier>,
        mut persisted: Vec<Block>,
        resume: &ResumePoint,
        now: Time,
        wall_ms: Option<u64>,
    ) -> Result<Core, ResumeError> {
        let mut core = Self::empty(config, committee, me, key, verifier, now);
        core.wall_ms = wall_ms;
        let last_round = resume.last_leader.round;
        let gc = Round(last_round.0.saturating_sub(config.gc_depth_rounds));
        core.dag.gc_below(gc);
        persisted.sort_by_key(|b| b.order_key());
        for b in persisted {
            let Some(b) = core.take_persisted(b) else {
                continue;
            };
            if b.round() >= gc {
                core.insert_accepted(now, b, false);
            }
        }
        // What the applied commits ordered above the GC round: the
        // histories of the recent committed leaders (each commit ordered
        // its leader's history above a GC round at or below this one).
        let mut ordered = BTreeSet::new();
        let mut stack: Vec<BlockRef> = resume.recent_leaders.clone();
        stack.push(resume.last_leader);
        while let Some(r) = stack.pop() {
            if r.round < gc || ordered.contains(&r) {
                continue;
            }
            let b = core.dag.get(&r).ok_or(ResumeError::MissingBlock(r))?;
            stack.extend(b.parents().iter().copied());
            ordered.insert(r);
        }
        core.linearizer =
            Linearizer::resume(resume.next_commit_index, resume.last_timestamp_ms, ordered);
        // After the blocks: an own block at or below the floor is still the
        // own parent of the next proposal.
        core.highest_signed_round = core.highest_signed_round.max(resume.signed_round_floor);
        core.last_decided_round = last_round;
        core.last_committed_leader_round = last_round;
        core.try_commit(now);
        if let Some(own) = core.last_own.clone() {
            core.outputs.push_back(Output::BroadcastBlock(own));
        }
        core.try_propose(now);
        Ok(core)
    }

    /// Rebuilds state from every block this validator persisted (from
    /// `PersistBlock` outputs, any order). Blocks are re-verified (disk is
    /// a boundary) and replayed; commits are decided again and re-emitted
    /// from index 0, so the driver skips indices it already applied. The
    /// highest own round found is never signed again. `now` and `wall_ms` as
    /// for [`Core::recover_from`].
    #[allow(clippy::too_many_arguments)]
    pub fn recover(
        config: CoreConfig,
        committee: Arc<Committee>,
        me: ValidatorIndex,
        key: SigningKey,
        verifier: Box<dyn SignatureVerifier>,
        mut persisted: Vec<Block>,
        now: Time,
        wall_ms: Option<u64>,
    ) -> Core {
        let mut core = Self::empty(config, committee, me, key, verifier, now);
        core.wall_ms = wall_ms;
        persisted.sort_by_key(|b| b.order_key());
        for b in persisted {
            let Some(b) = core.take_persisted(b) else {
                continue;
            };
            // Persisted blocks were causally complete when accepted (or had
            // ancestors below the GC round then), so they go in directly.
            core.insert_accepted(now, b, false);
        }
        core.try_commit(now);
        if let Some(own) = core.last_own.clone() {
            // We may have crashed between persisting and broadcasting it.
            core.outputs.push_back(Output::BroadcastBlock(own));
        }
        core.try_propose(now);
        core
    }

    /// A block read back from the log at recovery: verified again (disk is
    /// a boundary; a bad one is counted and skipped), and if it is our own,
    /// its round is never signed again.
    fn take_persisted(&mut self, b: Block) -> Option<Arc<Block>> {
        if b.verify(&self.committee, self.verifier.as_ref()).is_err() {
            self.metrics.blocks_rejected += 1;
            return None;
        }
        let b = Arc::new(b);
        if b.author() == self.me && b.round() > self.highest_signed_round {
            self.highest_signed_round = b.round();
            self.last_own = Some(b.clone());
        }
        Some(b)
    }

    /// This validator.
    pub fn me(&self) -> ValidatorIndex {
        self.me
    }
    /// The committee.
    pub fn committee(&self) -> &Arc<Committee> {
        &self.committee
    }
    /// Validators seen signing two different blocks for one round.
    pub fn equivocators(&self) -> &BTreeSet<ValidatorIndex> {
        &self.equivocators
    }
    /// Counters.
    pub fn metrics(&self) -> &CoreMetrics {
        &self.metrics
    }
    /// Highest round this validator signed.
    pub fn highest_signed_round(&self) -> Round {
        self.highest_signed_round
    }
    /// Highest round with 2f+1 stake of blocks.
    pub fn threshold_round(&self) -> Round {
        self.threshold_round
    }
    /// Rounds below this are garbage collected.
    pub fn gc_round(&self) -> Round {
        self.dag.gc_round()
    }
    /// Blocks in the DAG window.
    pub fn dag_len(&self) -> usize {
        self.dag.len()
    }
    /// Blocks buffered for missing ancestors.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
    /// The highest round of a buffered block.
    pub fn pending_highest_round(&self) -> Option<Round> {
        self.pending.keys().next_back().map(|r| r.round)
    }
    /// Simulation only: installs a Byzantine parent filter.
    pub(crate) fn set_parent_filter(&mut self, f: ParentFilter) {
        self.parent_filter = Some(f);
    }

    /// The DAG window (read only).
    pub fn dag(&self) -> &DagState {
        &self.dag
    }

    /// Decodes untrusted bytes from peer `from` and handles the block.
    pub fn handle_block_bytes(
        &mut self,
        now: Time,
        bytes: &[u8],
        from: ValidatorIndex,
    ) -> Result<BlockStatus, BlockError> {
        match Block::decode(bytes) {
            Ok(b) => self.handle_block(now, b, from),
            Err(e) => {
                self.metrics.blocks_rejected += 1;
                Err(e.into())
            }
        }
    }

    /// Handles a decoded block from peer `from` (or fetched from it).
    pub fn handle_block(
        &mut self,
        now: Time,
        block: Block,
        from: ValidatorIndex,
    ) -> Result<BlockStatus, BlockError> {
        self.handle_block_inner(now, block, from, true)
    }

    /// Whether the block is known: in the DAG, buffered, or below the GC
    /// round (ignored).
    pub fn knows(&self, r: &BlockRef) -> bool {
        r.round < self.dag.gc_round() || self.dag.contains(r) || self.pending.contains_key(r)
    }

    /// Counts a block its driver refused after checking it (the consensus
    /// node verifies peers' blocks before looking up their batches).
    pub(crate) fn count_rejected(&mut self) {
        self.metrics.blocks_rejected += 1;
    }

    /// Whether a block of `round` sent by peer `from` is within the window
    /// of rounds this node takes ([`CoreConfig::future_rounds_max`]); notes
    /// the round as `from`'s claim. Cheap: call it before verifying. A
    /// refused block is counted.
    pub fn admit_round(&mut self, round: Round, from: ValidatorIndex) -> bool {
        if let Some(c) = self.claimed_rounds.get_mut(from.as_usize()) {
            if round > *c {
                *c = round;
                self.network_round = self.f_plus_one_round();
            }
        }
        let base = self.dag.highest_round().max(self.network_round);
        if round.0 > base.0.saturating_add(self.config.future_rounds_max) {
            self.metrics.blocks_refused_far_future += 1;
            return false;
        }
        true
    }

    /// The highest round that peers holding the validity threshold (f+1)
    /// of stake have claimed: at least one of them is honest.
    fn f_plus_one_round(&self) -> Round {
        let mut claims: Vec<(Round, u64)> = self
            .claimed_rounds
            .iter()
            .enumerate()
            .map(|(i, r)| (*r, self.committee.stake(ValidatorIndex(i as u32))))
            .collect();
        claims.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
        let mut stake = 0;
        for (r, s) in claims {
            stake += s;
            if stake >= self.committee.validity_threshold() {
                return r;
            }
        }
        Round(0)
    }

    /// Sets the wall clock (ms since the Unix epoch) that own block
    /// timestamps are taken from and peers' are checked against; the
    /// driver sets it before each turn. Until set, `now` serves as both.
    pub fn set_wall_clock(&mut self, wall_ms: u64) {
        self.wall_ms = Some(wall_ms);
    }

    fn wall(&self, now: Time) -> u64 {
        self.wall_ms.unwrap_or(now.0)
    }

    /// Whether a peer's block's timestamp is acceptable: not too far ahead
    /// of the wall clock, and not below a parent's (parents below the GC
    /// round are not checked). Counts a refusal.
    fn timestamp_ok(&mut self, now: Time, b: &Block) -> Result<(), BlockStatus> {
        let wall = self.wall(now);
        if b.timestamp_ms() > wall.saturating_add(self.config.timestamp_future_max_ms) {
            self.metrics.blocks_refused_future_timestamp += 1;
            return Err(BlockStatus::FutureTimestamp);
        }
        let parents_max = b
            .parents()
            .iter()
            .filter_map(|p| self.dag.get(p))
            .map(|p| p.timestamp_ms())
            .max()
            .unwrap_or(0);
        if b.timestamp_ms() < parents_max {
            self.metrics.blocks_refused_behind_parents += 1;
            return Err(BlockStatus::BehindParents);
        }
        Ok(())
    }

    /// A slot keeps at most [`SLOT_COPIES_MAX`] blocks (two are evidence of
    /// equivocation); a further copy is taken only if a buffered block
    /// waits for it (honest blocks may reference it). Counts a refusal.
    pub fn equivocation_copy_wanted(&mut self, r: &BlockRef) -> bool {
        if self.dag.slot(r.round, r.author).len() < SLOT_COPIES_MAX
            || self.waiting_on.contains_key(r)
        {
            return true;
        }
        self.metrics.equivocations_dropped += 1;
        false
    }

    /// After `b` joined the DAG: if a parent slot of `b` holds several
    /// blocks and two of them now each have a quorum of support in `b`'s
    /// round, more than f stake equivocated. Alarms once per slot.
    fn check_certified_twins(&mut self, b: &Block) {
        let round = b.round();
        for p in b.parents() {
            if p.round.next() != round {
                continue;
            }
            let twins = self.dag.slot(p.round, p.author);
            if twins.len() < 2 || self.certified_twice.contains(&(p.round, p.author)) {
                continue;
            }
            let certified = twins
                .iter()
                .filter(|t| {
                    let t = t.reference();
                    let mut support = StakeAggregator::default();
                    for c in self.dag.round_blocks(round) {
                        if c.parents().contains(&t) {
                            support.add(c.author(), &self.committee);
                        }
                    }
                    support.stake() >= self.committee.quorum_threshold()
                })
                .count();
            if certified >= 2 {
                self.certified_twice.insert((p.round, p.author));
                self.metrics.certified_equivocations += 1;
                tracing::error!(
                    round = p.round.0,
                    author = p.author.0,
                    "two blocks of one slot are both certified: more than f stake is Byzantine; \
                     safety of this committee is not assured"
                );
            }
        }
    }

    fn pending_quota(&self) -> usize {
        (self.config.pending_blocks_max / self.committee.size().max(1)).max(1)
    }

    /// Handles a block whose [`Block::verify`] the caller (the consensus
    /// node, in this crate) already passed: it is not verified twice.
    pub(crate) fn handle_verified_block(
        &mut self,
        now: Time,
        block: Block,
        from: ValidatorIndex,
    ) -> Result<BlockStatus, BlockError> {
        self.handle_block_inner(now, block, from, false)
    }

    fn handle_block_inner(
        &mut self,
        now: Time,
        block: Block,
        from: ValidatorIndex,
        verify: bool,
    ) -> Result<BlockStatus, BlockError> {
        let r = block.reference();
        if r.round < self.dag.gc_round() {
            return Ok(BlockStatus::Stale);
        }
        if self.dag.contains(&r) || self.pending.contains_key(&r) {
            return Ok(BlockStatus::Duplicate);
        }
        if verify && !self.admit_round(r.round, from) {
            return Ok(BlockStatus::FarFuture);
        }
        if !self.equivocation_copy_wanted(&r) {
            return Ok(BlockStatus::Dropped);
        }
        let wall = self.wall(now);
        if block.timestamp_ms() > wall.saturating_add(self.config.timestamp_future_max_ms) {
            self.metrics.blocks_refused_future_timestamp += 1;
            return Ok(BlockStatus::FutureTimestamp);
        }
        if verify {
            if let Err(e) = block.verify(&self.committee, self.verifier.as_ref()) {
                self.metrics.blocks_rejected += 1;
                return Err(e);
            }
        }
        let block = Arc::new(block);
        let gc = self.dag.gc_round();
        let missing: BTreeSet<BlockRef> = block
            .parents()
            .iter()
            .filter(|p| p.round >= gc && !self.dag.contains(p))
            .copied()
            .collect();
        let status = if missing.is_empty() {
            if let Err(st) = self.timestamp_ok(now, &block) {
                return Ok(st);
            }
            self.insert_accepted(now, block, true);
            BlockStatus::Accepted
        } else if self.pending.len() >= self.config.pending_blocks_max
            || self.pending_by_author[r.author.as_usize()] >= self.pending_quota()
        {
            self.metrics.pending_dropped += 1;
            BlockStatus::Dropped
        } else {
            let mut to_request = Vec::new();
            for m in &missing {
                self.waiting_on.entry(*m).or_default().push(r);
                if self.pending.contains_key(m) {
                    continue;
                }
                let entry = self.missing.entry(*m).or_insert_with(|| {
                    to_request.push(*m);
                    MissingBlock {
                        sources: vec![m.author],
                        attempts: 0,
                        next_retry: now.plus_ms(self.config.fetch_retry_ms),
                    }
                });
                if !entry.sources.contains(&from) {
                    entry.sources.push(from);
                }
            }
            self.missing.remove(&r);
            self.pending_by_author[r.author.as_usize()] += 1;
            self.pending.insert(
                r,
                PendingBlock {
                    block,
                    missing,
                    since: now,
                },
            );
            for chunk in to_request.chunks(REQUEST_REFS_MAX) {
                self.outputs.push_back(Output::RequestBlocks {
                    from,
                    refs: chunk.to_vec(),
                });
            }
            BlockStatus::Pending
        };
        self.try_commit(now);
        self.try_propose(now);
        Ok(status)
    }

    /// Queues local batch digests for our next blocks. Returns how many were
    /// taken (the queue is bounded by `payload_queue_digests_max`).
    pub fn handle_payload(&mut self, now: Time, digests: &[Digest]) -> usize {
        let room = self
            .config
            .payload_queue_digests_max
            .saturating_sub(self.payload_queue.len());
        let n = room.min(digests.len());
        self.payload_queue.extend(&digests[..n]);
        self.try_propose(now);
        n
    }

    /// Call when `poll_timeout`'s time is reached (calling early is harmless).
    pub fn handle_timeout(&mut self, now: Time) {
        self.try_propose(now);
        if let Some(own) = &self.last_own {
            if now >= self.last_broadcast_at.plus_ms(self.config.retransmit_ms) {
                self.outputs.push_back(Output::BroadcastBlock(own.clone()));
                self.last_broadcast_at = now;
            }
        }
        self.age_out_pending(now);
        let cap = self.config.fetch_attempts_max;
        let (me, size) = (self.me, self.committee.size());
        let mut by_source: BTreeMap<ValidatorIndex, Vec<BlockRef>> = BTreeMap::new();
        for (r, m) in self.missing.iter_mut() {
            if m.next_retry <= now {
                m.attempts += 1;
                let Some(src) = m.source(m.attempts, me, size) else {
                    continue;
                };
                let every = if m.attempts >= cap {
                    self.config.fetch_retry_ms.saturating_mul(10)
                } else {
                    self.config.fetch_retry_ms
                };
                m.next_retry = now.plus_ms(every);
                by_source.entry(src).or_default().push(*r);
            }
        }
        for (from, refs) in by_source {
            for chunk in refs.chunks(REQUEST_REFS_MAX) {
                self.outputs.push_back(Output::RequestBlocks {
                    from,
                    refs: chunk.to_vec(),
                });
            }
        }
    }

    /// Drops buffered blocks older than `pending_max_age_ms`. Those a
    /// buffered descendant still waits for become missing again (fetched
    /// like any other).
    fn age_out_pending(&mut self, now: Time) {
        let max_age = self.config.pending_max_age_ms;
        let old: Vec<BlockRef> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.since.plus_ms(max_age))
            .map(|(r, _)| *r)
            .collect();
        for r in old {
            let Some(p) = self.pending.remove(&r) else {
                continue;
            };
            self.pending_by_author[r.author.as_usize()] -= 1;
            self.metrics.pending_dropped += 1;
            for m in &p.missing {
                if let Some(w) = self.waiting_on.get_mut(m) {
                    w.retain(|c| *c != r);
                    if w.is_empty() {
                        self.waiting_on.remove(m);
                        if self.missing.remove(m).is_some() {
                            self.metrics.fetches_abandoned += 1;
                        }
                    }
                }
            }
            if self.waiting_on.contains_key(&r) {
                self.missing.insert(
                    r,
                    MissingBlock {
                        sources: vec![r.author],
                        attempts: 0,
                        next_retry: now,
                    },
                );
            }
        }
    }

    /// Earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Time> {
        let mut t: Option<Time> = None;
        let mut consider = |x: Time| t = Some(t.map_or(x, |t| t.min(x)));
        if self.threshold_round.next() > self.highest_signed_round
            && self.threshold_round > Round(0)
        {
            // A proposal is waiting: for the round delay, and for the leader
            // or its timeout.
            let mut ready = self
                .last_proposed_at
                .plus_ms(self.config.min_round_delay_ms);
            let r = self.threshold_round;
            if !self.owes_leader_block() && self.dag.slot(r, self.committee.leader(r)).is_empty() {
                ready = ready.max(
                    self.threshold_reached_at
                        .plus_ms(self.config.leader_timeout_ms),
                );
            }
            consider(ready);
        }
        if self.last_own.is_some() {
            consider(self.last_broadcast_at.plus_ms(self.config.retransmit_ms));
        }
        if let Some(m) = self.missing.values().map(|m| m.next_retry).min() {
            consider(m);
        }
        if let Some(p) = self.pending.values().map(|p| p.since).min() {
            consider(p.plus_ms(self.config.pending_max_age_ms));
        }
        t
    }

    /// Next intent, in the order they must be carried out.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Answers a peer's `RequestBlocks`: the blocks we have among `refs`, plus
    /// their ancestors `fetch_ancestor_rounds` deep, lowest round first,
    /// at most `fetch_response_blocks_max`.
    pub fn handle_block_request(&self, refs: &[BlockRef]) -> Vec<Arc<Block>> {
        let mut out: BTreeMap<(Round, u64, Digest), Arc<Block>> = BTreeMap::new();
        let mut stack: Vec<(BlockRef, u64)> = Vec::new();
        for r in refs.iter().take(REQUEST_REFS_MAX) {
            stack.push((
                *r,
                r.round.0.saturating_sub(self.config.fetch_ancestor_rounds),
            ));
        }
        while let Some((r, floor)) = stack.pop() {
            if out.len() >= self.config.fetch_response_blocks_max {
                break;
            }
            let Some(b) = self.dag.get(&r) else { continue };
            if out.insert(b.order_key(), b.clone()).is_some() {
                continue;
            }
            for p in b.parents() {
                if p.round.0 > floor {
                    stack.push((*p, floor));
                }
            }
        }
        out.into_values().collect()
    }

    fn insert_accepted(&mut self, now: Time, block: Arc<Block>, persist: bool) {
        let mut work = vec![block];
        while let Some(b) = work.pop() {
            let r = b.reference();
            match self.dag.insert(b.clone()) {
                InsertOutcome::Duplicate => continue,
                InsertOutcome::Equivocation => {
                    self.equivocators.insert(r.author);
                }
                InsertOutcome::New => {
                    let stake = self.dag.round_stake(r.round);
                    if stake >= self.committee.quorum_threshold() && r.round > self.threshold_round
                    {
                        self.threshold_round = r.round;
                        self.threshold_reached_at = now;
                    }
                }
            }
            self.metrics.blocks_accepted += 1;
            self.check_certified_twins(&b);
            self.missing.remove(&r);
            if self.pending.remove(&r).is_some() {
                self.pending_by_author[r.author.as_usize()] -= 1;
            }
            if persist {
                self.outputs.push_back(Output::PersistBlock(b.clone()));
            }
            if let Some(children) = self.waiting_on.remove(&r) {
                for c in children {
                    if let Some(p) = self.pending.get_mut(&c) {
                        p.missing.remove(&r);
                        if p.missing.is_empty() {
                            let p = self.pending.remove(&c).expect("present");
                            self.pending_by_author[c.author.as_usize()] -= 1;
                            if self.timestamp_ok(now, &p.block).is_ok() {
                                work.push(p.block);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Whether the others reached a round this validator leads without its
    /// block: then it proposes that round first (its parents are in the DAG,
    /// as ancestors of the others' blocks), so they need not time out on it.
    fn owes_leader_block(&self) -> bool {
        let r = self.threshold_round;
        self.last_own.is_some()
            && r > Round(1)
            && r > self.highest_signed_round
            && self.committee.leader(r) == self.me
    }

    fn try_propose(&mut self, now: Time) {
        let mut target = self.threshold_round.next();
        let owed = self.owes_leader_block();
        if self.last_own.is_none() {
            // First block ever (or nothing persisted): round 1, no parents.
            target = Round(1);
        } else if owed {
            target = self.threshold_round;
        }
        if target <= self.highest_signed_round {
            return;
        }
        if target > Round(1) {
            if now
                < self
                    .last_proposed_at
                    .plus_ms(self.config.min_round_delay_ms)
            {
                return;
            }
            let r = self.threshold_round;
            // The owed leader block waits for nobody: the others moved on.
            let has_leader = owed || !self.dag.slot(r, self.committee.leader(r)).is_empty();
            if !has_leader {
                if now
                    < self
                        .threshold_reached_at
                        .plus_ms(self.config.leader_timeout_ms)
                {
                    return;
                }
                self.metrics.leader_timeouts += 1;
            }
        }
        let mut parents = Vec::new();
        if target > Round(1) {
            let prev = target.prev();
            let own = self
                .last_own
                .as_ref()
                .expect("own block exists")
                .reference();
            assert!(own.round < target);
            for v in self.committee.indices() {
                if v == self.me {
                    parents.push(own);
                    continue;
                }
                // The first block of the slot at r-1, else a weak link to
                // the author's latest older block above the GC round, so a
                // validator that lags any number of rounds still gets its
                // blocks (and their transactions) ordered.
                let floor = self.dag.gc_round().0.max(1);
                let pick = (floor..=prev.0)
                    .rev()
                    .map(Round)
                    .find_map(|r| self.dag.slot(r, v).first());
                if let Some(b) = pick {
                    parents.push(b.reference());
                }
            }
        }
        if let Some(f) = self.parent_filter.as_mut() {
            f(target, &self.committee, &mut parents);
        }
        let take = self.payload_queue.len().min(BLOCK_PAYLOAD_DIGESTS_MAX);
        let payload: Vec<Digest> = self.payload_queue.drain(..take).collect();
        // Never below a parent's (peers refuse that) nor the previous own.
        let parents_max = parents
            .iter()
            .filter_map(|p| self.dag.get(p))
            .map(|p| p.timestamp_ms())
            .max()
            .unwrap_or(0);
        let ts = self
            .last_own
            .as_ref()
            .map_or(0, |b| b.timestamp_ms())
            .max(parents_max)
            .max(self.wall(now));
        let block = UnsignedBlock {
            epoch: self.committee.epoch(),
            author: self.me,
            round: target,
            parents,
            payload,
            timestamp_ms: ts,
        }
        .sign(&self.key);
        debug_assert_eq!(
            block.verify(&self.committee, self.verifier.as_ref()),
            Ok(()),
            "own block invalid"
        );
        let block = Arc::new(block);
        self.highest_signed_round = target;
        self.last_own = Some(block.clone());
        self.metrics.blocks_proposed += 1;
        // Persist strictly before broadcast: a crash in between must not let
        // us sign another block for this round after recovery.
        self.insert_accepted(now, block.clone(), true);
        self.outputs.push_back(Output::BroadcastBlock(block));
        self.last_broadcast_at = now;
        self.last_proposed_at = now;
        self.try_commit(now);
    }

    fn try_commit(&mut self, now: Time) {
        let decided = self
            .committer
            .try_decide(&self.dag, self.last_decided_round.next());
        if decided.is_empty() {
            return;
        }
        for s in decided {
            self.last_decided_round = s.round();
            match s {
                LeaderStatus::Commit(leader) => {
                    let gc = self.commit_gc_round();
                    let sub = self.linearizer.commit(&self.dag, &leader, gc);
                    self.last_committed_leader_round = leader.round();
                    self.metrics.leaders_committed += 1;
                    self.outputs.push_back(Output::Committed(sub));
                }
                LeaderStatus::Skip(_) => self.metrics.leaders_skipped += 1,
                LeaderStatus::Undecided(_) => unreachable!("only decided statuses"),
            }
        }
        self.gc(now);
    }

    /// A function of the commit sequence only, hence equal on all nodes.
    fn commit_gc_round(&self) -> Round {
        Round(
            self.last_committed_leader_round
                .0
                .saturating_sub(self.config.gc_depth_rounds),
        )
    }

    fn gc(&mut self, now: Time) {
        let gc = self.commit_gc_round();
        if gc <= self.dag.gc_round() {
            return;
        }
        self.dag.gc_below(gc);
        self.linearizer.gc_below(gc);
        let keep = self.missing.split_off(&BlockRef {
            round: gc,
            author: ValidatorIndex(0),
            digest: Digest([0; 32]),
        });
        self.missing = keep;
        self.waiting_on.retain(|r, _| r.round >= gc);
        self.certified_twice.retain(|(r, _)| *r >= gc);
        let keep = self.pending.split_off(&BlockRef {
            round: gc,
            author: ValidatorIndex(0),
            digest: Digest([0; 32]),
        });
        self.pending = keep;
        self.pending_by_author.iter_mut().for_each(|c| *c = 0);
        for r in self.pending.keys() {
            self.pending_by_author[r.author.as_usize()] += 1;
        }
        // Ancestors below the GC round now count as present.
        let mut ready = Vec::new();
        for (r, p) in self.pending.iter_mut() {
            p.missing.retain(|m| m.round >= gc);
            if p.missing.is_empty() {
                ready.push(*r);
            }
        }
        for r in ready {
            if let Some(p) = self.pending.remove(&r) {
                self.pending_by_author[r.author.as_usize()] -= 1;
                if self.timestamp_ok(now, &p.block).is_err() {
                    continue;
                }
                self.insert_accepted(now, p.block, true);
            }
        }
    }
}
