//! The consensus tile: the driver of the protocol machine
//! ([`velox_dag::ConsensusNode`]), plus recovery of the core from the
//! consensus log.
//!
//! ```text
//!  mempool ring ──txs──▶ handle_local_txs ─┐
//!  peer_in ring ──msg──▶ handle_peer       ├─ ConsensusNode ─▶ Persist ─▶ ChainStore::write_consensus (fsynced)
//!  sleep(poll_timeout) ─▶ handle_timeout   ┘                 ─▶ Send    ─▶ peer_out ring
//!                                                            ─▶ ReturnToPool ─▶ the pool
//!                                          poll_commit ─▶ block ring (execution), in order
//! ```
//!
//! Each loop turn takes a bounded amount of input (at most
//! [`PEER_TURN_MSGS_MAX`] peer messages, or one batch's fill of local
//! transactions), runs the machine's timers, and carries out its intents in
//! the order polled: the machine yields a turn's write before the sends it
//! precedes, so a block is never sent before it is in the consensus log,
//! and a batch is never acknowledged before it is stored (decision 0004).
//! The protocol itself (sealing, availability, parking, fetching, commit
//! assembly, serving peers) lives in the machine, which the simulator runs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use velox_dag::{
    Block, BlockRef, CheckRequest, Committee, ConsensusNode, Core, Digest, Ed25519Verifier, Intent,
    NodeConfig, NodeStore, Round, Time, ValidatorIndex,
};
use velox_exec::VerifiedTx;
use velox_io::{Ring, TileStats};
use velox_mempool::batch::BatchDigest;
use velox_net::peer::{Inbound, Outbound};
use velox_storage::{ChainStore, CommitConsensus, CommitMeta, LeaderPosition, DAG_KEY_LEN};

use crate::pipeline::{CheckedBatch, CommittedBlock, Shared};

/// Most inbound peer messages handled per turn before writing and sending.
pub const PEER_TURN_MSGS_MAX: usize = 256;
/// Most checked batches (answers of the verify tiles) handled per turn.
pub const CHECKED_TURN_MAX: usize = 64;

pub use velox_dag::node::{
    chunk_items, dag_key, BATCH_REQUEST_DIGESTS_MAX, INCLUDED_WINDOW, RESPONSE_BYTES_MAX,
    RESPONSE_ITEMS_MAX, ROUNDS_PER_REQUEST_MAX,
};

// The machine's log keys are the store's.
const _: () = assert!(velox_dag::node::DAG_KEY_LEN == DAG_KEY_LEN);

/// Tile parameters (from the `[consensus]` and `[mempool]` config).
pub type ConsensusParams = NodeConfig;

/// Counters of the consensus tile (exported on /metrics).
#[derive(Default)]
pub struct ConsensusCounters {
    pub round: AtomicU64,
    pub commits: AtomicU64,
    pub leaders_committed: AtomicU64,
    pub leaders_skipped: AtomicU64,
    pub leader_timeouts: AtomicU64,
    pub blocks_accepted: AtomicU64,
    pub blocks_rejected: AtomicU64,
    pub blocks_proposed: AtomicU64,
    pub equivocators: AtomicU64,
    pub pending_blocks: AtomicU64,
    pub batches_sealed: AtomicU64,
    pub batches_available: AtomicU64,
    /// Own batches that can no longer commit, their transactions returned
    /// to the pool.
    pub batches_returned: AtomicU64,
    /// Own batches abandoned because they did not become available within
    /// `batch_available_timeout_ms` (their transactions returned to the
    /// pool).
    pub batches_abandoned: AtomicU64,
    pub batches_received: AtomicU64,
    pub batches_rejected: AtomicU64,
    pub batches_refused_full: AtomicU64,
    pub batches_fetched: AtomicU64,
    pub batch_fetch_requests: AtomicU64,
    pub batches_waiting_acks: AtomicU64,
    pub batches_held: AtomicU64,
    /// Transactions in fetched committed batches whose signature failed
    /// (skipped by every node alike).
    pub txs_invalid_in_batches: AtomicU64,
    /// Misbehaviour by peer (bad blocks, bad or unrequested batches).
    pub peer_penalties: AtomicU64,
    pub block_requests_served: AtomicU64,
    /// `RoundsRequest`s answered (validators joining from a snapshot).
    pub rounds_requests_served: AtomicU64,
    /// 1 while this validator joins consensus from its peers' blocks.
    pub joining: AtomicU64,
    /// Blocks a join took from peers (verified and causally complete).
    pub join_blocks: AtomicU64,
    pub blocks_served_from_disk: AtomicU64,
    pub commits_waiting_batches: AtomicU64,
    /// Peers' blocks waiting for their batches before the core sees them.
    pub blocks_parked: AtomicU64,
    pub blocks_parked_dropped: AtomicU64,
    /// Peers' blocks refused for a round far ahead of the network.
    pub blocks_refused_far_future: AtomicU64,
    /// Buffered blocks dropped (buffer or author quota full, too old).
    pub pending_dropped: AtomicU64,
    /// Missing blocks no longer fetched (nothing waits for them).
    pub fetches_abandoned: AtomicU64,
    /// Peers' blocks stamped too far ahead of the wall clock (refused for now).
    pub blocks_refused_future_timestamp: AtomicU64,
    /// Peers' blocks stamped below a parent (refused).
    pub blocks_refused_behind_parents: AtomicU64,
    /// Further copies of an equivocating slot refused unverified.
    pub equivocations_dropped: AtomicU64,
    /// Slots where two blocks were both certified (more than f Byzantine).
    pub certified_equivocations: AtomicU64,
    /// Requests unanswered because the peer's serving budget was spent.
    pub serve_refused_budget: AtomicU64,
    /// `RoundsRequest`s unanswered because the peer's serving budget was spent.
    pub rounds_requests_refused: AtomicU64,
    /// Bytes of blocks, batches and rounds served to peers.
    pub served_bytes: AtomicU64,
    /// Pushed batches dropped from memory (kept on disk) to make room in
    /// their peer's share.
    pub batches_released: AtomicU64,
    /// Peers' batches handed to the verify tiles to check.
    pub batch_checks: AtomicU64,
    /// Peers' batches being checked by the verify tiles now.
    pub batches_checking: AtomicU64,
    /// Resent copies of refused batches, refused without a second check.
    pub batches_rejected_again: AtomicU64,
    /// Fetched batches nothing asked for (late answers).
    pub batches_unrequested: AtomicU64,
    /// Times a peer was put in backoff for repeated hard faults.
    pub peer_backoffs: AtomicU64,
    /// Messages ignored from peers in backoff.
    pub peer_messages_ignored: AtomicU64,
    /// Consensus-log writes: time (ns) and count.
    pub log_write_ns: AtomicU64,
    pub log_writes: AtomicU64,
}

/// Monotonic milliseconds since the process first asked: the clock of
/// every consensus timer and delay (the machine's and the core's `now`).
pub fn mono_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    // Start at 1 s so that "zero" never means "long ago".
    1_000 + ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Wall-clock milliseconds since the Unix epoch: block timestamps only
/// (`ConsensusNode::set_wall_clock`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why the consensus core could not be rebuilt from the data directory.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error(
        "this data directory's last commit is {index} (restored from a snapshot: {restored}), but its consensus log \
         lacks what resuming after that commit needs ({detail}). A validator cannot join consensus from a state \
         snapshot alone: it needs the DAG blocks of rounds >= {from_round} (from its peers, which a committee of one \
         does not have, or from its own log) and the committed leaders of those rounds. \
         Use this directory for `velox replay --from <its snapshot>`, or start the validator on its own data directory \
         (docs/storage.md, \"Joining from a snapshot\")"
    )]
    LogIncomplete {
        index: u64,
        restored: bool,
        from_round: u64,
        detail: String,
    },
    #[error(transparent)]
    Store(#[from] velox_storage::StoreError),
}

/// The consensus log's blocks of rounds `>= from_round`.
fn read_log(chain: &ChainStore, from_round: u64) -> Result<Vec<Block>, velox_storage::StoreError> {
    let mut blocks = Vec::new();
    chain.for_each_consensus_block_from(from_round, &mut |bytes| {
        match Block::decode(bytes) {
            Ok(b) => blocks.push(b),
            Err(e) => {
                return Err(velox_storage::StoreError::Corrupt {
                    cf: "dag",
                    key: String::new(),
                    what: format!("undecodable block: {e}"),
                })
            }
        }
        Ok(())
    })?;
    Ok(blocks)
}

/// What recovery found.
pub enum Recovered {
    /// A core rebuilt from this node's own log, with the number of blocks
    /// read and whether it resumed after the last commit.
    Ready {
        core: Box<Core>,
        blocks: usize,
        resumed: bool,
    },
    /// The last commit's position is known but the log lacks the blocks
    /// resuming needs (a data directory restored from a snapshot, or one
    /// whose log was lost): they are taken from the peers
    /// ([`crate::join::join_from_peers`]).
    Join(crate::join::JoinPlan),
}

/// Reads the consensus log and builds the core.
///
/// When the last commit records its leader (every commit made by this
/// version), the core resumes right after it ([`Core::recover_from`]): only
/// the log's rounds at or above `leader round - gc_depth_rounds` are read,
/// which is what lets the storage side prune the log below. Otherwise (a
/// data directory at genesis, or written before positions were recorded)
/// every block is replayed and commits are decided again from index 0; the
/// tile skips those already applied. With `can_join` (a committee with
/// peers), a log that lacks the blocks of the resume window is not an
/// error: the caller joins from the peers' blocks.
pub fn recover_core(
    chain: &ChainStore,
    params: &ConsensusParams,
    committee: Arc<Committee>,
    me: ValidatorIndex,
    key: SigningKey,
    can_join: bool,
) -> Result<Recovered, RecoverError> {
    let last = chain.last_commit()?;
    let resume: Option<CommitMeta> = last.filter(|m| m.leader.is_some());
    let from_round = match &resume {
        Some(m) => m
            .leader
            .map_or(0, |l| l.round.saturating_sub(params.core.gc_depth_rounds)),
        None => 0,
    };
    let blocks = read_log(chain, from_round)?;
    let Some(m) = resume else {
        if let Some(m) = last.filter(|m| m.index > 0) {
            if chain.consensus_pruned_below()? > 0 || chain.restored_from()?.is_some() {
                return Err(RecoverError::LogIncomplete {
                    index: m.index,
                    restored: chain.restored_from()?.is_some(),
                    from_round: 1,
                    detail: "the last commit records no consensus position".into(),
                });
            }
        }
        return Ok(replay_whole_log(params, committee, me, key, blocks));
    };
    let leader = m.leader.expect("resume needs a leader");
    let as_ref = |l: &LeaderPosition| BlockRef {
        round: Round(l.round),
        author: ValidatorIndex(l.author),
        digest: Digest(l.digest),
    };
    let Some(recent) = chain.recent_leaders(&m, from_round)? else {
        // The commits of the last gc_depth_rounds rounds do not all record
        // their leader (a data directory upgraded within that window, or
        // restored from a version 1 snapshot): the whole log decides them
        // again, if it is still whole.
        if chain.consensus_pruned_below()? > 0 || chain.restored_from()?.is_some() {
            return Err(RecoverError::LogIncomplete {
                index: m.index,
                restored: chain.restored_from()?.is_some(),
                from_round,
                detail:
                    "the committed leaders of the last gc_depth_rounds rounds are not all known \
                         (a version 1 snapshot carries none: restore from a version 2 one)"
                        .into(),
            });
        }
        let all = read_log(chain, 0)?;
        return Ok(replay_whole_log(params, committee, me, key, all));
    };
    let point = velox_dag::ResumePoint {
        next_commit_index: m.index, // commit 0 is genesis: sub-DAG indices are one behind
        last_leader: as_ref(&leader),
        last_timestamp_ms: m.timestamp_ms,
        recent_leaders: recent.iter().map(as_ref).collect(),
        // Set by a join (after this validator lost its data), kept across
        // restarts.
        signed_round_floor: Round(chain.signed_round_floor()?),
    };
    let n = blocks.len();
    match Core::recover_from(
        params.core,
        committee,
        me,
        key.clone(),
        Box::new(Ed25519Verifier),
        blocks,
        &point,
        Time(mono_ms()),
        Some(now_ms()),
    ) {
        Ok(core) => Ok(Recovered::Ready {
            core: Box::new(core),
            blocks: n,
            resumed: true,
        }),
        // Rare: the log is read again rather than copied on every start.
        Err(e) if can_join => Ok(Recovered::Join(crate::join::JoinPlan {
            point,
            gc_round: from_round,
            own_log: read_log(chain, from_round)?,
            commit_index: m.index,
            reason: e.to_string(),
        })),
        Err(e) => Err(RecoverError::LogIncomplete {
            index: m.index,
            restored: chain.restored_from().ok().flatten().is_some(),
            from_round,
            detail: e.to_string(),
        }),
    }
}

/// A core rebuilt from every block of the log, deciding the commits again
/// from index 0 (the tile skips those already applied); with the number of
/// blocks read and `false` (not resumed after a commit).
fn replay_whole_log(
    params: &ConsensusParams,
    committee: Arc<Committee>,
    me: ValidatorIndex,
    key: SigningKey,
    blocks: Vec<Block>,
) -> Recovered {
    let n = blocks.len();
    let core = Core::recover(
        params.core,
        committee,
        me,
        key,
        Box::new(Ed25519Verifier),
        blocks,
        Time(mono_ms()),
        Some(now_ms()),
    );
    Recovered::Ready {
        core: Box::new(core),
        blocks: n,
        resumed: false,
    }
}

/// The tile's rings.
pub struct ConsensusRings {
    pub own: Arc<Ring<Vec<VerifiedTx>>>,
    pub peer_in: Arc<Ring<Inbound>>,
    pub peer_out: Arc<Ring<Outbound>>,
    pub blocks: Arc<Ring<CommittedBlock>>,
    /// Peers' batches to check, to the verify tiles.
    pub checks: Arc<Ring<CheckRequest>>,
    /// Their answers, back from the verify tiles.
    pub checked: Arc<Ring<CheckedBatch>>,
}

/// The machine's reads of the store. A read error is logged and answered
/// as "not held" (the machine fetches from peers instead).
struct ChainView(ChainStore);

fn logged<T>(what: &str, r: Result<Option<T>, velox_storage::StoreError>) -> Option<T> {
    r.unwrap_or_else(|e| {
        tracing::warn!(error = %e, what, "consensus store read failed");
        None
    })
}

impl NodeStore for ChainView {
    fn batch(&self, digest: &BatchDigest) -> Option<Vec<u8>> {
        logged("batch", self.0.batch(digest))
    }
    fn block(&self, key: &[u8; DAG_KEY_LEN]) -> Option<Vec<u8>> {
        logged("block", self.0.consensus_block(key))
    }
    fn latest_block_by(&self, author: ValidatorIndex) -> Option<Vec<u8>> {
        logged("latest block", self.0.latest_consensus_block_by(author.0))
    }
    fn blocks_in_rounds(
        &self,
        from: u64,
        to: u64,
        each: &mut dyn FnMut(&[u8]),
    ) -> Result<(), String> {
        self.0
            .for_each_consensus_block_in(from, Some(to), &mut |bytes| {
                each(bytes);
                Ok(())
            })
            .map_err(|e| e.to_string())
    }
}

/// The consensus tile: a driver of [`ConsensusNode`]. Each turn takes at
/// most [`PEER_TURN_MSGS_MAX`] peer messages, [`CHECKED_TURN_MAX`] checked
/// batches or one fill of local transactions, runs the machine's timers,
/// then carries out its intents in order (the write, fsynced, before the
/// sends it precedes; checks to the verify tiles) and hands ready commits
/// to execution while the block ring has room.
pub struct ConsensusTile {
    node: ConsensusNode,
    chain: ChainStore,
    shared: Arc<Shared>,
    stats: Arc<TileStats>,
    counters: Arc<ConsensusCounters>,
    rings: ConsensusRings,
    /// Penalties counted before the tile started (by a join).
    penalties_before: u64,
    /// Checks the verify tiles' ring had no room for yet (at most what the
    /// machine has under way: it bounds its checks).
    check_backlog: VecDeque<CheckRequest>,
    /// The machine's clock origin.
    epoch: Instant,
}

impl ConsensusTile {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        core: Core,
        params: ConsensusParams,
        chain: ChainStore,
        applied: u64,
        shared: Arc<Shared>,
        stats: Arc<TileStats>,
        counters: Arc<ConsensusCounters>,
        rings: ConsensusRings,
    ) -> Self {
        let node = ConsensusNode::new(
            core,
            params,
            Box::new(ChainView(chain.clone())),
            Box::new(Ed25519Verifier),
            applied,
            rand::random(),
        );
        let penalties_before = counters.peer_penalties.load(Ordering::Relaxed);
        Self {
            node,
            chain,
            shared,
            stats,
            counters,
            rings,
            penalties_before,
            check_backlog: VecDeque::new(),
            epoch: Instant::now(),
        }
    }

    /// Seeds the machine's duplicate-batch window with the digests the
    /// stored commits included, oldest first.
    pub fn with_included(mut self, digests: Vec<BatchDigest>) -> Self {
        self.node.seed_included(digests);
        self
    }

    /// The machine's time (monotonic); the wall clock is set beside it for
    /// block timestamps.
    fn now(&mut self) -> Time {
        self.node.set_wall_clock(now_ms());
        Time(mono_ms())
    }

    /// Runs until an input ring closes.
    pub async fn run(mut self) {
        // Recovery may have queued outputs (commits to skip, own block).
        let now = self.now();
        self.node.start(now);
        self.after_turn().await;
        // Local handles: the select arms borrow these, the handlers `self`.
        let (peer_in, own, blocks, checked) = (
            self.rings.peer_in.clone(),
            self.rings.own.clone(),
            self.rings.blocks.clone(),
            self.rings.checked.clone(),
        );
        loop {
            let now = self.now();
            let wait = Duration::from_millis(self.node.poll_timeout(now).0.saturating_sub(now.0));
            let commit_blocked = self.node.commit_ready() && blocks.len() >= blocks.capacity();
            tokio::select! {
                biased;
                // Checked batches first: they unblock acknowledgements,
                // parked blocks and commits.
                c = checked.pop() => {
                    let Some(c) = c else { return };
                    self.take_ready(Some(c), None, &checked, &peer_in);
                }
                m = peer_in.pop() => {
                    let Some(m) = m else { return };
                    self.take_ready(None, Some(m), &checked, &peer_in);
                }
                txs = own.pop() => {
                    let Some(mut txs) = txs else { return };
                    let mut n = txs.len();
                    // One fill of a batch per turn.
                    while n < self.batch_txs_max() {
                        let Some(more) = own.try_pop() else { break };
                        n += more.len();
                        txs.extend(more);
                    }
                    self.stats.add_in(n as u64);
                    let now = self.now();
                    self.node.handle_local_txs(now, txs);
                }
                _ = blocks.wait_for_room(), if commit_blocked => {}
                _ = tokio::time::sleep(wait) => {}
            }
            self.after_turn().await;
        }
    }

    /// One turn's input from peers: `first`, then whatever else is ready
    /// of both rings (up to [`CHECKED_TURN_MAX`] checked batches and
    /// [`PEER_TURN_MSGS_MAX`] messages), so that one write (one fsync)
    /// covers them all.
    fn take_ready(
        &mut self,
        checked_first: Option<CheckedBatch>,
        peer_first: Option<Inbound>,
        checked: &Ring<CheckedBatch>,
        peer_in: &Ring<Inbound>,
    ) {
        let started = Instant::now();
        let now = self.now();
        let mut answers: Vec<CheckedBatch> = checked_first.into_iter().collect();
        checked.drain_into(&mut answers, CHECKED_TURN_MAX);
        for c in answers {
            self.node.handle_checked(now, c.digest, c.txs);
        }
        let mut msgs: Vec<Inbound> = peer_first.into_iter().collect();
        peer_in.drain_into(&mut msgs, PEER_TURN_MSGS_MAX);
        for m in msgs {
            self.node.handle_peer(now, m.from, m.msg);
        }
        self.stats.add_busy(started.elapsed());
    }

    fn batch_txs_max(&self) -> usize {
        self.node.config().batch_txs_max
    }

    /// Timers, then the intents in order, then delivery to execution.
    async fn after_turn(&mut self) {
        let started = Instant::now();
        let now = self.now();
        self.node.handle_timeout(now);
        while let Some(intent) = self.node.poll_intent() {
            match intent {
                Intent::Persist {
                    blocks,
                    batches,
                    round,
                    sync,
                } => {
                    // Durable before anything is said about it.
                    debug_assert!(sync, "the machine asks every consensus write synced");
                    let t = Instant::now();
                    let written = self.chain.write_consensus(&blocks, &batches, round);
                    self.counters
                        .log_write_ns
                        .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    self.counters.log_writes.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = written {
                        tracing::error!(error = %e, "writing the consensus log failed; stopping the node");
                        eprintln!("velox: fatal: the consensus log could not be written: {e}");
                        std::process::exit(70);
                    }
                }
                Intent::Check(r) => self.check_backlog.push_back(r),
                Intent::Send(m) => {
                    if self.rings.peer_out.try_push(m).is_err() {
                        // The net tile is behind; consensus recovers lost
                        // messages (retransmit, fetch), so count and go on.
                        self.stats.add_drops(1);
                    }
                }
                Intent::ReturnToPool(txs) => {
                    let mut settled = Vec::new();
                    self.shared.pool.return_uncommitted(txs, &mut settled);
                    crate::pipeline::answer(&self.shared, &mut settled);
                    // The pool has ready transactions again.
                    self.shared.pool_work.notify_one();
                }
            }
        }
        // To the verify tiles, as far as their ring has room (the rest
        // goes next turn; the verify tiles' answers free room).
        while let Some(r) = self.check_backlog.pop_front() {
            if let Err(r) = self.rings.checks.try_push(r) {
                self.check_backlog.push_front(r);
                break;
            }
        }
        self.deliver_commits();
        self.publish_counters();
        self.stats
            .set_queue_depth(self.rings.peer_in.len() + self.rings.own.len());
        self.stats.add_busy(started.elapsed());
    }

    /// Hands ready commits to execution, strictly in index order, while the
    /// block ring has room (else the run loop waits for room).
    fn deliver_commits(&mut self) {
        while self.node.commit_ready() && self.rings.blocks.len() < self.rings.blocks.capacity() {
            let Some(c) = self.node.poll_commit() else {
                return;
            };
            let n = c.txs.len() as u64;
            let waited = self.now().0.saturating_sub(c.committed_at.0);
            let block = CommittedBlock {
                index: c.index,
                timestamp_ms: c.timestamp_ms,
                txs: c.txs,
                created: Instant::now()
                    .checked_sub(Duration::from_millis(waited))
                    .unwrap_or(self.epoch),
                consensus: CommitConsensus {
                    leader: Some(LeaderPosition {
                        round: c.leader.round.0,
                        author: c.leader.author.0,
                        digest: c.leader.digest.0,
                    }),
                    batches: c.batches,
                },
            };
            if self.rings.blocks.try_push(block).is_err() {
                // Unreachable: this tile is the ring's only producer and
                // room was checked.
                tracing::error!("block ring full despite room check; stopping the node");
                eprintln!("velox: fatal: a commit could not be handed to execution");
                std::process::exit(70);
            }
            self.stats.add_out(n);
        }
    }

    fn publish_counters(&self) {
        let core = self.node.core();
        let m = core.metrics();
        let n = self.node.metrics();
        let g = self.node.gauges();
        let c = &self.counters;
        let set = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        set(&c.round, core.highest_signed_round().0);
        set(&c.leaders_committed, m.leaders_committed);
        set(&c.leaders_skipped, m.leaders_skipped);
        set(&c.leader_timeouts, m.leader_timeouts);
        set(&c.blocks_accepted, m.blocks_accepted);
        set(&c.blocks_rejected, m.blocks_rejected);
        set(&c.blocks_proposed, m.blocks_proposed);
        set(&c.equivocators, core.equivocators().len() as u64);
        set(&c.pending_blocks, core.pending_len() as u64);
        set(&c.commits, n.commits);
        set(&c.batches_sealed, n.batches_sealed);
        set(&c.batches_available, n.batches_available);
        set(&c.batches_returned, n.batches_returned);
        set(&c.batches_abandoned, n.batches_abandoned);
        set(&c.batches_received, n.batches_received);
        set(&c.batches_rejected, n.batches_rejected);
        set(&c.batches_refused_full, n.batches_refused_full);
        set(&c.batches_fetched, n.batches_fetched);
        set(&c.batch_fetch_requests, n.batch_fetch_requests);
        set(&c.txs_invalid_in_batches, n.txs_invalid_in_batches);
        set(&c.peer_penalties, self.penalties_before + n.peer_penalties);
        set(&c.block_requests_served, n.block_requests_served);
        set(&c.rounds_requests_served, n.rounds_requests_served);
        set(&c.blocks_served_from_disk, n.blocks_served_from_disk);
        set(&c.blocks_parked_dropped, n.blocks_parked_dropped);
        set(&c.batches_rejected_again, n.batches_rejected_again);
        set(&c.blocks_refused_far_future, m.blocks_refused_far_future);
        set(&c.pending_dropped, m.pending_dropped);
        set(&c.fetches_abandoned, m.fetches_abandoned);
        set(&c.equivocations_dropped, m.equivocations_dropped);
        set(
            &c.blocks_refused_future_timestamp,
            m.blocks_refused_future_timestamp,
        );
        set(
            &c.blocks_refused_behind_parents,
            m.blocks_refused_behind_parents,
        );
        set(&c.certified_equivocations, m.certified_equivocations);
        set(&c.serve_refused_budget, n.serve_refused_budget);
        set(&c.rounds_requests_refused, n.rounds_requests_refused);
        set(&c.served_bytes, n.served_bytes);
        set(&c.batches_released, n.batches_released);
        set(&c.batch_checks, n.batch_checks);
        set(&c.batches_checking, g.batches_checking as u64);
        set(&c.batches_unrequested, n.batches_unrequested);
        set(&c.peer_backoffs, n.peer_backoffs);
        set(&c.peer_messages_ignored, n.peer_messages_ignored);
        set(&c.batches_waiting_acks, g.batches_waiting_acks as u64);
        set(&c.batches_held, g.batches_held as u64);
        set(&c.commits_waiting_batches, g.commits_waiting as u64);
        set(&c.blocks_parked, g.blocks_parked as u64);
    }
}
