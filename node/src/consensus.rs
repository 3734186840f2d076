//! The consensus tile: drives the sans-IO DAG core ([`velox_dag::Core`]),
//! seals the pool's transactions into batches and makes them available, and
//! hands committed batches to execution in commit order.
//!
//! ```text
//!  mempool ──txs──▶ seal (size or age) ──▶ store ──▶ Batch ─────────▶ peers
//!                                        │                 ◀── BatchAck
//!                                        └─ Availability (f+1 stake) ──▶ Core::handle_payload
//!  peers ──Block/BlockResponse──▶ Core::handle_block_bytes
//!  peers ──Batch──▶ decode, verify, store ──▶ BatchAck
//!  peers ──BlockRequest──▶ Core window, else the consensus log on disk ──▶ BlockResponse
//!  peers ──BatchRequest──▶ memory, else disk ──▶ BatchResponse
//!  Core outputs: PersistBlock ─▶ one write per turn, before anything is sent
//!                BroadcastBlock / RequestBlocks ─▶ peers
//!                Committed(sub-DAG) ─▶ its batches (fetched if missing) ─▶ exec, in order
//! ```
//!
//! Each loop turn takes a bounded amount of input, then writes what must be
//! durable (accepted blocks, stored batches) in one RocksDB write batch, and
//! only then sends (broadcasts, acknowledgements): a block is never sent
//! before it is in the consensus log, and a batch is never acknowledged
//! before it is stored (decision 0004).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use velox_dag::{
    Block, BlockRef, CommittedSubDag, Committee, Core, CoreConfig, Digest, Ed25519Verifier, Output,
    Round, Time, ValidatorIndex,
};
use velox_exec::{AccountId, Tx, TxDigest, VerifiedTx};
use velox_io::{Ring, TileStats};
use velox_mempool::batch::{
    batch_digest, decode_batch, encode_batch, Availability, BatchDigest, BatchOrigin,
};
use velox_net::peer::{Dest, Inbound, Outbound, PeerMessage, WireBlockRef};
use velox_storage::{ChainStore, CommitConsensus, CommitMeta, LeaderPosition, DAG_KEY_LEN};

use crate::pipeline::{CommittedBlock, Shared};

/// Most inbound peer messages handled per turn before writing and sending.
pub const PEER_TURN_MSGS_MAX: usize = 256;
/// Most batch digests asked in one `BatchRequest`.
pub const BATCH_REQUEST_DIGESTS_MAX: usize = 64;
/// Most encoded bytes in one response frame (blocks or batches).
pub const RESPONSE_BYTES_MAX: usize = 4 << 20;
/// Most items in one response frame: the wire limit's default
/// (`WireLimits::items_per_response_max`), which the sender checks too.
pub const RESPONSE_ITEMS_MAX: usize = 256;
/// Most rounds one `RoundsRequest` is answered for (a joining validator
/// asks for fewer; a larger request is answered up to this many rounds).
pub const ROUNDS_PER_REQUEST_MAX: u64 = 200;
/// Batch digests remembered as already committed (duplicates in later
/// commits are skipped). Every node keeps the same window in commit order,
/// so the skip is deterministic.
pub const INCLUDED_WINDOW: usize = 1 << 20;
/// Peers' blocks parked while their batches are fetched; more are dropped
/// (the core fetches them again when a descendant needs them).
pub const PARKED_BLOCKS_MAX: usize = 10_000;
/// A parked block whose batches did not arrive in this long is dropped.
pub const PARKED_MAX_AGE: Duration = Duration::from_secs(60);
/// Fetch attempts for a batch no commit needs yet before giving up.
pub const BATCH_FETCH_ATTEMPTS_MAX: usize = 50;

/// Tile parameters (from the `[consensus]` and `[mempool]` config).
#[derive(Clone, Copy, Debug)]
pub struct ConsensusParams {
    pub core: CoreConfig,
    /// Seal a batch at this many transactions...
    pub batch_txs_max: usize,
    /// ...or when its first transaction waited this long.
    pub batch_age: Duration,
    /// Send an own batch again to validators that did not acknowledge it.
    pub batch_resend_ms: u64,
    /// Ask again for a missing committed batch after this long.
    pub batch_fetch_retry_ms: u64,
    /// Peers' batches held in memory before a commit takes them; beyond,
    /// new ones are refused (not acknowledged) and counted.
    pub batches_held_max: usize,
    /// An own batch not available (f+1 stored it) this long after sealing
    /// is abandoned: its transactions go back to the pool (pending again,
    /// their age still counting towards the pool's expiry), and late
    /// acknowledgements never make it available. Bounds how long a
    /// transaction stays in flight before it is proposed.
    pub batch_available_timeout: Duration,
}

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
    /// `batch_available_timeout` (their transactions returned to the pool).
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
    /// Consensus-log writes: time (ns) and count.
    pub log_write_ns: AtomicU64,
    pub log_writes: AtomicU64,
}

/// A batch this node holds, its transactions checked.
struct HeldBatch {
    bytes: Arc<[u8]>,
    txs: Arc<Vec<VerifiedTx>>,
    since: Instant,
}

struct PendingCommit {
    index: u64,
    timestamp_ms: u64,
    leader: BlockRef,
    digests: Vec<BatchDigest>,
    /// Who to ask for each batch (authors of the blocks carrying it).
    sources: Vec<Vec<ValidatorIndex>>,
    created: Instant,
}

/// A peer's block waiting for its batches before the core sees it.
struct Parked {
    block: Block,
    from: u32,
    missing: usize,
    since: Instant,
}

struct Wanted {
    sources: Vec<ValidatorIndex>,
    attempts: usize,
    next_try: Instant,
}

/// Key of a block in the consensus log.
pub fn dag_key(r: &BlockRef) -> [u8; DAG_KEY_LEN] {
    let mut k = [0u8; DAG_KEY_LEN];
    k[..8].copy_from_slice(&r.round.0.to_be_bytes());
    k[8..12].copy_from_slice(&r.author.0.to_be_bytes());
    k[12..].copy_from_slice(&r.digest.0);
    k
}

fn to_wire(r: &BlockRef) -> WireBlockRef {
    WireBlockRef {
        round: r.round.0,
        author: r.author.0,
        digest: r.digest.0,
    }
}

fn from_wire(r: &WireBlockRef) -> BlockRef {
    BlockRef {
        round: Round(r.round),
        author: ValidatorIndex(r.author),
        digest: Digest(r.digest),
    }
}

/// Wall-clock milliseconds: the core's time and block timestamps.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Splits response items into frames of at most [`RESPONSE_BYTES_MAX`]
/// bytes (one larger item goes alone) and [`RESPONSE_ITEMS_MAX`] items.
pub fn chunk_items(items: impl IntoIterator<Item = Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut chunk: Vec<Vec<u8>> = Vec::new();
    let mut size = 0;
    for b in items {
        if !chunk.is_empty()
            && (size + b.len() > RESPONSE_BYTES_MAX || chunk.len() == RESPONSE_ITEMS_MAX)
        {
            out.push(std::mem::take(&mut chunk));
            size = 0;
        }
        size += b.len();
        chunk.push(b);
    }
    if !chunk.is_empty() {
        out.push(chunk);
    }
    out
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
        signed_round_floor: Round(0),
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
        Time(now_ms()),
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
        Time(now_ms()),
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
}

/// An own batch until it commits or can no longer commit.
struct OwnBatch {
    /// (sender, digest) of its transactions, as the pool knows them.
    txs: Vec<(AccountId, TxDigest)>,
    /// Round of the own block that carries it, once proposed.
    proposed: Option<Round>,
    /// When it was sealed (for `batch_available_timeout`).
    sealed: Instant,
}

pub struct ConsensusTile {
    core: Core,
    committee: Arc<Committee>,
    me: ValidatorIndex,
    params: ConsensusParams,
    chain: ChainStore,
    shared: Arc<Shared>,
    stats: Arc<TileStats>,
    counters: Arc<ConsensusCounters>,
    rings: ConsensusRings,
    availability: Availability,
    held: HashMap<BatchDigest, HeldBatch>,
    sealing: Vec<VerifiedTx>,
    sealing_since: Option<Instant>,
    /// Last commit index handed to execution (or stored at start).
    applied: u64,
    commits: VecDeque<PendingCommit>,
    included: HashSet<BatchDigest>,
    included_order: VecDeque<BatchDigest>,
    wanted: BTreeMap<BatchDigest, Wanted>,
    parked: HashMap<BlockRef, Parked>,
    /// Batch digest -> parked blocks waiting for it.
    parked_on: HashMap<BatchDigest, Vec<BlockRef>>,
    /// Own batches not committed yet: their transactions (in flight in the
    /// pool) and the round of the own block that proposed them.
    own: HashMap<BatchDigest, OwnBatch>,
    /// The core's GC round when `own` was last checked.
    own_checked_gc: Round,
    /// The next own batch's nonce (its identity beside the author, see
    /// `velox_mempool::batch`): a random start per process, counting up, so
    /// it never repeats across restarts either (2^64 values).
    next_batch_nonce: u64,
    // Work of the current turn.
    persist_blocks: Vec<([u8; DAG_KEY_LEN], Vec<u8>)>,
    persist_batches: Vec<([u8; 32], Arc<[u8]>)>,
    sends: Vec<Outbound>,
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
        let committee = core.committee().clone();
        let me = core.me();
        let stakes = committee.indices().map(|v| committee.stake(v)).collect();
        let availability = Availability::new(stakes, committee.validity_threshold(), me.as_usize());
        Self {
            core,
            committee,
            me,
            params,
            chain,
            shared,
            stats,
            counters,
            rings,
            availability,
            held: HashMap::new(),
            sealing: Vec::new(),
            sealing_since: None,
            applied,
            commits: VecDeque::new(),
            included: HashSet::new(),
            included_order: VecDeque::new(),
            wanted: BTreeMap::new(),
            parked: HashMap::new(),
            parked_on: HashMap::new(),
            own: HashMap::new(),
            own_checked_gc: Round(0),
            next_batch_nonce: rand::random(),
            persist_blocks: Vec::new(),
            persist_batches: Vec::new(),
            sends: Vec::new(),
        }
    }

    /// Seeds the duplicate-batch window with the digests the stored commits
    /// included, oldest first (see [`ChainStore::included_batches`]): a core
    /// resumed after the last commit does not re-emit earlier commits, so
    /// the window would otherwise start empty and differ from the peers'.
    pub fn with_included(mut self, digests: Vec<BatchDigest>) -> Self {
        for d in digests {
            self.include(d);
        }
        self
    }

    fn multi(&self) -> bool {
        self.committee.size() > 1
    }

    /// Runs until an input ring closes.
    pub async fn run(mut self) {
        // Recovery may have queued outputs (commits to skip, own block).
        self.after_turn().await;
        // Local handles: the select arms borrow these, the handlers `self`.
        let (peer_in, own, blocks) = (
            self.rings.peer_in.clone(),
            self.rings.own.clone(),
            self.rings.blocks.clone(),
        );
        loop {
            let deadline = self.next_deadline();
            let wait = deadline.saturating_duration_since(Instant::now());
            let commit_blocked = self.front_commit_ready() && blocks.len() >= blocks.capacity();
            tokio::select! {
                biased;
                m = peer_in.pop() => {
                    let Some(m) = m else { return };
                    let started = Instant::now();
                    self.on_peer(m);
                    let mut more = Vec::new();
                    peer_in.drain_into(&mut more, PEER_TURN_MSGS_MAX);
                    for m in more {
                        self.on_peer(m);
                    }
                    self.stats.add_busy(started.elapsed());
                }
                txs = own.pop() => {
                    let Some(txs) = txs else { return };
                    self.stats.add_in(txs.len() as u64);
                    if self.sealing.is_empty() {
                        self.sealing_since = Some(Instant::now());
                    }
                    self.sealing.extend(txs);
                    while self.sealing.len() < self.params.batch_txs_max {
                        let Some(more) = own.try_pop() else { break };
                        self.stats.add_in(more.len() as u64);
                        self.sealing.extend(more);
                    }
                }
                _ = blocks.wait_for_room(), if commit_blocked => {}
                _ = tokio::time::sleep(wait) => {}
            }
            self.after_turn().await;
        }
    }

    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut d = now + Duration::from_millis(100);
        if let Some(t) = self.core.poll_timeout() {
            let ms = t.0.saturating_sub(now_ms());
            d = d.min(now + Duration::from_millis(ms));
        }
        if let Some(s) = self.sealing_since {
            d = d.min(s + self.params.batch_age);
        }
        if let Some(w) = self.wanted.values().map(|w| w.next_try).min() {
            d = d.min(w);
        }
        d
    }

    /// Timers, sealing, the write, the sends, and delivery to execution.
    async fn after_turn(&mut self) {
        let started = Instant::now();
        let now = Time(now_ms());
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        // Seal full batches, and a partial one once it is old enough.
        while self.sealing.len() >= self.params.batch_txs_max {
            let rest = self.sealing.split_off(self.params.batch_txs_max);
            let full = std::mem::replace(&mut self.sealing, rest);
            self.seal(full, now);
        }
        if !self.sealing.is_empty()
            && self
                .sealing_since
                .is_some_and(|s| s.elapsed() >= self.params.batch_age)
        {
            let txs = std::mem::take(&mut self.sealing);
            self.seal(txs, now);
        }
        if self.sealing.is_empty() {
            self.sealing_since = None;
        }
        if self.multi() {
            for (d, missing) in self
                .availability
                .due_for_resend(now.0, self.params.batch_resend_ms)
            {
                if let Some(h) = self.held.get(&d) {
                    for v in missing {
                        self.sends.push(Outbound {
                            to: Dest::One(v as u32),
                            msg: PeerMessage::Batch(h.bytes.to_vec()),
                        });
                    }
                }
            }
        }
        self.abandon_unavailable_batches();
        self.fetch_missing_batches();
        self.drain_core_outputs();
        // Durable before anything is said about it.
        if !self.persist_blocks.is_empty() || !self.persist_batches.is_empty() {
            let blocks = std::mem::take(&mut self.persist_blocks);
            let batches = std::mem::take(&mut self.persist_batches);
            let t = Instant::now();
            // The batches' age for pruning: the round consensus is at.
            let round = self
                .core
                .highest_signed_round()
                .0
                .max(self.core.threshold_round().0);
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
        for m in self.sends.drain(..) {
            if self.rings.peer_out.try_push(m).is_err() {
                // The net tile is behind; consensus recovers lost messages
                // (retransmit, fetch), so count and go on.
                self.stats.add_drops(1);
            }
        }
        self.deliver_commits();
        self.return_dead_batches();
        self.evict_stale_batches();
        self.publish_counters();
        self.stats
            .set_queue_depth(self.rings.peer_in.len() + self.rings.own.len());
        self.stats.add_busy(started.elapsed());
    }

    fn seal(&mut self, txs: Vec<VerifiedTx>, now: Time) {
        if txs.is_empty() {
            return;
        }
        let origin = BatchOrigin {
            author: self.me.0,
            nonce: self.next_batch_nonce,
        };
        self.next_batch_nonce = self.next_batch_nonce.wrapping_add(1);
        let bytes: Arc<[u8]> = encode_batch(origin, txs.iter().map(|t| t.bytes())).into();
        let d = batch_digest(&bytes);
        self.counters.batches_sealed.fetch_add(1, Ordering::Relaxed);
        self.own.insert(
            d,
            OwnBatch {
                txs: txs.iter().map(|t| (t.sender(), t.digest())).collect(),
                proposed: None,
                sealed: Instant::now(),
            },
        );
        self.persist_batches.push((d, bytes.clone()));
        if self.multi() {
            self.sends.push(Outbound {
                to: Dest::All,
                msg: PeerMessage::Batch(bytes.to_vec()),
            });
        }
        self.held.insert(
            d,
            HeldBatch {
                bytes,
                txs: Arc::new(txs),
                since: Instant::now(),
            },
        );
        if self.availability.sealed(d, now.0) {
            self.make_available(d, now);
        }
    }

    fn make_available(&mut self, d: BatchDigest, now: Time) {
        self.counters
            .batches_available
            .fetch_add(1, Ordering::Relaxed);
        if self.core.handle_payload(now, &[Digest(d)]) == 0 {
            // The core's payload queue is full: consensus is far behind the
            // pool. The batch stays stored; its transactions stay in flight
            // until the in-flight timeout returns them.
            tracing::warn!(
                "consensus payload queue full; an available batch was not queued, \
                 its transactions go back to the pool"
            );
            self.stats.add_drops(1);
            if let Some(o) = self.own.remove(&d) {
                self.return_to_pool(o);
            }
        }
    }

    fn penalize(&self, from: u32, what: &str) {
        self.counters.peer_penalties.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(peer = from, what, "peer misbehaved");
    }

    fn on_peer(&mut self, m: Inbound) {
        let from = m.from;
        if !self.committee.contains(ValidatorIndex(from)) || from == self.me.0 {
            self.penalize(from, "message from a non-peer index");
            return;
        }
        let now = Time(now_ms());
        match m.msg {
            PeerMessage::Block(bytes) => self.on_block_bytes(now, &bytes, from),
            PeerMessage::BlockResponse(list) => {
                for bytes in list {
                    self.on_block_bytes(now, &bytes, from);
                }
            }
            PeerMessage::BlockRequest(refs) => self.serve_blocks(from, &refs),
            PeerMessage::Batch(bytes) => {
                let bytes: Arc<[u8]> = bytes.into();
                let d = batch_digest(&bytes);
                if self.held.contains_key(&d) || self.included.contains(&d) {
                    self.ack(from, d);
                    return;
                }
                if self.held.len() >= self.params.batches_held_max {
                    self.counters
                        .batches_refused_full
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
                self.counters
                    .batches_received
                    .fetch_add(1, Ordering::Relaxed);
                match self.check_batch(&bytes, Some(from)) {
                    Some(txs) => {
                        self.hold(d, bytes, txs);
                        self.ack(from, d);
                    }
                    None => self.penalize(from, "invalid batch"),
                }
            }
            PeerMessage::BatchAck(d) => {
                if self.availability.ack(&d, from as usize) {
                    self.make_available(d, now);
                }
            }
            PeerMessage::BatchRequest(ds) => self.serve_batches(from, &ds),
            PeerMessage::BatchResponse(list) => {
                for bytes in list {
                    let bytes: Arc<[u8]> = bytes.into();
                    let d = batch_digest(&bytes);
                    if !self.wanted.contains_key(&d) {
                        // Content that matches nothing we asked for: either
                        // not requested or not matching its digest.
                        self.penalize(from, "unrequested or mismatching batch");
                        continue;
                    }
                    // A committed batch: keep its valid transactions (every
                    // node filters the same bytes the same way).
                    match self.check_batch(&bytes, None) {
                        Some(txs) => {
                            self.counters
                                .batches_fetched
                                .fetch_add(1, Ordering::Relaxed);
                            self.hold(d, bytes, txs);
                        }
                        None => {
                            // Undecodable committed batch: execute it as empty.
                            self.hold(d, bytes, Vec::new());
                        }
                    }
                }
            }
            PeerMessage::Heartbeat { .. } => {}
            PeerMessage::RoundsRequest {
                from_round,
                to_round,
            } => self.serve_rounds(from, from_round, to_round),
            // A part that arrived after the join ended: its blocks are as
            // good as any fetched ones.
            PeerMessage::RoundsResponse { blocks, .. } => {
                for bytes in blocks {
                    self.on_block_bytes(now, &bytes, from);
                }
            }
        }
    }

    /// Answers a joining validator: every block of rounds
    /// `from_round..=to_round` in the consensus log (an accepted block is
    /// written there in the turn that accepted it, before anything it
    /// caused is sent), lowest rounds first, in parts of at most
    /// [`RESPONSE_BYTES_MAX`]; the first part also carries the requester's
    /// own latest block this node holds, whatever its round (so it never
    /// signs a round it signed before its data was lost, and its next
    /// block has an own parent). The last part says `done`.
    fn serve_rounds(&mut self, to: u32, from_round: u64, to_round: u64) {
        self.counters
            .rounds_requests_served
            .fetch_add(1, Ordering::Relaxed);
        let to_round = to_round.min(from_round.saturating_add(ROUNDS_PER_REQUEST_MAX - 1));
        let mut items: Vec<Vec<u8>> = Vec::new();
        let requester = ValidatorIndex(to);
        let in_memory = (self.core.gc_round().0..=self.core.dag().highest_round().0)
            .rev()
            .find_map(|r| self.core.dag().slot(Round(r), requester).first().cloned());
        match in_memory {
            Some(b) => items.push(b.encode()),
            None => {
                if let Ok(Some(b)) = self.chain.latest_consensus_block_by(to) {
                    items.push(b);
                }
            }
        }
        let r = self
            .chain
            .for_each_consensus_block_in(from_round, Some(to_round), &mut |bytes| {
                items.push(bytes.to_vec());
                Ok(())
            });
        if let Err(e) = r {
            tracing::warn!(error = %e, "serving a rounds request: reading the consensus log failed");
            return;
        }
        let head_round = self.core.dag().highest_round().0;
        let parts = chunk_items(items);
        let n = parts.len().max(1);
        let mut parts = parts.into_iter();
        for i in 0..n {
            self.sends.push(Outbound {
                to: Dest::One(to),
                msg: PeerMessage::RoundsResponse {
                    from_round,
                    to_round,
                    head_round,
                    done: i + 1 == n,
                    blocks: parts.next().unwrap_or_default(),
                },
            });
        }
    }

    /// A peer's block reaches the core only once every batch it names is
    /// held here: an honest validator then never votes for (links to) a
    /// block whose data it could not serve, so a committed block's batches
    /// are always retrievable. Blocks waiting for batches are parked and the
    /// batches fetched from the block's author and sender.
    fn on_block_bytes(&mut self, now: Time, bytes: &[u8], from: u32) {
        let block = match Block::decode(bytes) {
            Ok(b) => b,
            Err(_) => {
                // Let the core count it with its reason.
                let _ = self
                    .core
                    .handle_block_bytes(now, bytes, ValidatorIndex(from));
                self.penalize(from, "undecodable block");
                return;
            }
        };
        let missing: Vec<BatchDigest> = block
            .payload()
            .iter()
            .map(|d| d.0)
            .filter(|d| !self.have_batch(d))
            .collect();
        if missing.is_empty() {
            self.feed_core(now, block, from);
            return;
        }
        let r = block.reference();
        if self.parked.contains_key(&r) || self.core.dag().contains(&r) {
            return;
        }
        // Check it before spending fetches or memory on it.
        if let Err(e) = block.verify(&self.committee, &Ed25519Verifier) {
            tracing::debug!(peer = from, error = %e, "block rejected");
            self.counters
                .blocks_rejected
                .fetch_add(1, Ordering::Relaxed);
            self.penalize(from, "invalid block");
            return;
        }
        if self.parked.len() >= PARKED_BLOCKS_MAX {
            self.counters
                .blocks_parked_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let sources = vec![block.author(), ValidatorIndex(from)];
        for d in &missing {
            self.parked_on.entry(*d).or_default().push(r);
            self.want(*d, sources.clone());
        }
        self.parked.insert(
            r,
            Parked {
                block,
                from,
                missing: missing.len(),
                since: Instant::now(),
            },
        );
    }

    fn feed_core(&mut self, now: Time, block: Block, from: u32) {
        if let Err(e) = self.core.handle_block(now, block, ValidatorIndex(from)) {
            tracing::debug!(peer = from, error = %e, "block rejected");
            self.penalize(from, "invalid block");
        }
    }

    fn have_batch(&self, d: &BatchDigest) -> bool {
        self.held.contains_key(d)
            || self.included.contains(d)
            || matches!(self.chain.batch(d), Ok(Some(_)))
    }

    /// Marks `d` to be fetched, trying `sources` first, then everyone.
    fn want(&mut self, d: BatchDigest, mut sources: Vec<ValidatorIndex>) {
        if self.wanted.contains_key(&d) {
            return;
        }
        for v in self.committee.indices() {
            if !sources.contains(&v) {
                sources.push(v);
            }
        }
        sources.retain(|v| *v != self.me);
        sources.dedup();
        self.wanted.insert(
            d,
            Wanted {
                sources,
                attempts: 0,
                next_try: Instant::now(),
            },
        );
    }

    /// A batch arrived: parked blocks that waited only for it go on to the
    /// core.
    fn unpark(&mut self, d: &BatchDigest) {
        let Some(refs) = self.parked_on.remove(d) else {
            return;
        };
        let now = Time(now_ms());
        for r in refs {
            let done = match self.parked.get_mut(&r) {
                Some(p) => {
                    p.missing -= 1;
                    p.missing == 0
                }
                None => false,
            };
            if done {
                let p = self.parked.remove(&r).expect("present");
                self.feed_core(now, p.block, p.from);
            }
        }
    }

    fn ack(&mut self, to: u32, d: BatchDigest) {
        self.sends.push(Outbound {
            to: Dest::One(to),
            msg: PeerMessage::BatchAck(d),
        });
    }

    fn hold(&mut self, d: BatchDigest, bytes: Arc<[u8]>, txs: Vec<VerifiedTx>) {
        self.persist_batches.push((d, bytes.clone()));
        self.held.insert(
            d,
            HeldBatch {
                bytes,
                txs: Arc::new(txs),
                since: Instant::now(),
            },
        );
        self.wanted.remove(&d);
        self.unpark(&d);
    }

    /// Decodes a batch and verifies its transactions. A fresh batch from
    /// peer `fresh_from` must be a version-2 batch authored by that peer and
    /// wholly valid (`None` otherwise); a committed one (`fresh_from` is
    /// `None`) keeps only its valid transactions.
    fn check_batch(&self, bytes: &[u8], fresh_from: Option<u32>) -> Option<Vec<VerifiedTx>> {
        let filter = fresh_from.is_none();
        let raw = match decode_batch(bytes) {
            Ok(r) if fresh_from.is_some_and(|f| r.origin.map(|o| o.author) != Some(f)) => {
                tracing::debug!(from = ?fresh_from, origin = ?r.origin, "batch not authored by its sender");
                self.counters
                    .batches_rejected
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
            Ok(r) => r.txs,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable batch");
                self.counters
                    .batches_rejected
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        let mut txs = Vec::with_capacity(raw.len());
        let mut bad = 0u64;
        for r in raw {
            match Tx::decode(r) {
                Ok(t) => txs.push(t),
                Err(_) => bad += 1,
            }
        }
        let verified = crate::pipeline::verify_or_trust(txs, &self.shared);
        let mut ok = Vec::with_capacity(verified.len());
        for v in verified {
            match v {
                Ok(v) => ok.push(v),
                Err(_) => bad += 1,
            }
        }
        if bad > 0 {
            self.counters
                .txs_invalid_in_batches
                .fetch_add(bad, Ordering::Relaxed);
            if !filter {
                self.counters
                    .batches_rejected
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        Some(ok)
    }

    fn serve_blocks(&mut self, to: u32, refs: &[WireBlockRef]) {
        self.counters
            .block_requests_served
            .fetch_add(1, Ordering::Relaxed);
        let refs: Vec<BlockRef> = refs.iter().map(from_wire).collect();
        let mut out: BTreeMap<[u8; DAG_KEY_LEN], Vec<u8>> = BTreeMap::new();
        let mut found: HashSet<BlockRef> = HashSet::new();
        for b in self.core.handle_block_request(&refs) {
            found.insert(b.reference());
            out.insert(dag_key(&b.reference()), b.encode());
        }
        // Below the core's window: the consensus log on disk, with ancestors
        // as deep as the core would give.
        let cfg = self.params.core;
        let mut stack: Vec<(BlockRef, u64)> = refs
            .iter()
            .filter(|r| !found.contains(r))
            .map(|r| (*r, r.round.0.saturating_sub(cfg.fetch_ancestor_rounds)))
            .collect();
        while let Some((r, floor)) = stack.pop() {
            if out.len() >= cfg.fetch_response_blocks_max {
                break;
            }
            let k = dag_key(&r);
            if out.contains_key(&k) {
                continue;
            }
            let Ok(Some(bytes)) = self.chain.consensus_block(&k) else {
                continue;
            };
            let Ok(b) = Block::decode(&bytes) else {
                continue;
            };
            self.counters
                .blocks_served_from_disk
                .fetch_add(1, Ordering::Relaxed);
            for p in b.parents() {
                if p.round.0 >= floor && p.round.0 >= 1 {
                    stack.push((*p, floor));
                }
            }
            out.insert(k, bytes);
        }
        // Lowest rounds first (the receiver accepts them in order).
        self.respond_chunked(to, out.into_values(), PeerMessage::BlockResponse);
    }

    /// Sends `items` to `to` in as many responses as keep each frame under
    /// [`RESPONSE_BYTES_MAX`].
    fn respond_chunked(
        &mut self,
        to: u32,
        items: impl IntoIterator<Item = Vec<u8>>,
        wrap: fn(Vec<Vec<u8>>) -> PeerMessage,
    ) {
        for chunk in chunk_items(items) {
            self.sends.push(Outbound {
                to: Dest::One(to),
                msg: wrap(chunk),
            });
        }
    }

    fn serve_batches(&mut self, to: u32, ds: &[[u8; 32]]) {
        let found: Vec<Vec<u8>> = ds
            .iter()
            .take(BATCH_REQUEST_DIGESTS_MAX)
            .filter_map(|d| match self.held.get(d) {
                Some(h) => Some(h.bytes.to_vec()),
                None => self.chain.batch(d).ok().flatten(),
            })
            .collect();
        self.respond_chunked(to, found, PeerMessage::BatchResponse);
    }

    fn drain_core_outputs(&mut self) {
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::PersistBlock(b) => {
                    self.persist_blocks
                        .push((dag_key(&b.reference()), b.encode()));
                }
                Output::BroadcastBlock(b) => {
                    if b.author() == self.me {
                        for d in b.payload() {
                            if let Some(o) = self.own.get_mut(&d.0) {
                                o.proposed = Some(b.round());
                            }
                        }
                    }
                    if self.multi() {
                        self.sends.push(Outbound {
                            to: Dest::All,
                            msg: PeerMessage::Block(b.encode()),
                        });
                    }
                }
                Output::RequestBlocks { from, refs } => {
                    if self.multi() && from != self.me {
                        self.sends.push(Outbound {
                            to: Dest::One(from.0),
                            msg: PeerMessage::BlockRequest(refs.iter().map(to_wire).collect()),
                        });
                    }
                }
                Output::Committed(sub) => self.on_committed(sub),
            }
        }
    }

    fn include(&mut self, d: BatchDigest) -> bool {
        if !self.included.insert(d) {
            return false;
        }
        self.included_order.push_back(d);
        if self.included_order.len() > INCLUDED_WINDOW {
            if let Some(old) = self.included_order.pop_front() {
                self.included.remove(&old);
            }
        }
        true
    }

    fn on_committed(&mut self, sub: CommittedSubDag) {
        let index = sub.index + 1; // commit 0 is genesis
        let mut digests = Vec::new();
        let mut sources = Vec::new();
        for b in &sub.blocks {
            for d in b.payload() {
                if b.author() == self.me {
                    self.own.remove(&d.0);
                }
                if self.include(d.0) {
                    digests.push(d.0);
                    sources.push(vec![b.author()]);
                } else if let Some(i) = digests.iter().position(|x| *x == d.0) {
                    // Carried by two blocks of this commit: ask either.
                    if !sources[i].contains(&b.author()) {
                        sources[i].push(b.author());
                    }
                }
            }
        }
        if index <= self.applied {
            // Replayed by recovery: applied before the restart.
            for d in &digests {
                self.held.remove(d);
            }
            return;
        }
        self.commits.push_back(PendingCommit {
            index,
            timestamp_ms: sub.timestamp_ms,
            leader: sub.leader,
            digests,
            sources,
            created: Instant::now(),
        });
        self.locate_batches();
    }

    /// For the commit just queued, finds each batch in memory, else on
    /// disk, else marks it wanted from peers. (Earlier commits were located
    /// when they were queued; their batches stay held until delivered.)
    fn locate_batches(&mut self) {
        let Some(c) = self.commits.back() else { return };
        let todo: Vec<(BatchDigest, Vec<ValidatorIndex>)> = c
            .digests
            .iter()
            .zip(&c.sources)
            .filter(|(d, _)| !self.held.contains_key(*d) && !self.wanted.contains_key(*d))
            .map(|(d, src)| (*d, src.clone()))
            .collect();
        for (d, sources) in todo {
            match self.chain.batch(&d) {
                Ok(Some(bytes)) => {
                    // Disk is a boundary: check it again (it was checked
                    // when stored, so all of it should pass).
                    let txs = self.check_batch(&bytes, None).unwrap_or_default();
                    self.held.insert(
                        d,
                        HeldBatch {
                            bytes: bytes.into(),
                            txs: Arc::new(txs),
                            since: Instant::now(),
                        },
                    );
                }
                _ => self.want(d, sources),
            }
        }
    }

    fn fetch_missing_batches(&mut self) {
        if self.wanted.is_empty() || !self.multi() {
            return;
        }
        let now = Instant::now();
        let needed = self.needed_batches();
        // A batch only parked blocks want, that nobody could serve after
        // many tries: give up (its blocks age out of the parking).
        self.wanted
            .retain(|d, w| w.attempts < BATCH_FETCH_ATTEMPTS_MAX || needed.contains(d));
        let retry = Duration::from_millis(self.params.batch_fetch_retry_ms);
        let mut by_peer: BTreeMap<u32, Vec<[u8; 32]>> = BTreeMap::new();
        for (d, w) in self.wanted.iter_mut() {
            if w.next_try > now || w.sources.is_empty() {
                continue;
            }
            let src = w.sources[w.attempts % w.sources.len()];
            w.attempts += 1;
            w.next_try = now + retry;
            by_peer.entry(src.0).or_default().push(*d);
        }
        for (peer, ds) in by_peer {
            for chunk in ds.chunks(BATCH_REQUEST_DIGESTS_MAX) {
                self.counters
                    .batch_fetch_requests
                    .fetch_add(1, Ordering::Relaxed);
                self.sends.push(Outbound {
                    to: Dest::One(peer),
                    msg: PeerMessage::BatchRequest(chunk.to_vec()),
                });
            }
        }
    }

    /// Digests of the batches the queued commits still need.
    fn needed_batches(&self) -> HashSet<BatchDigest> {
        self.commits
            .iter()
            .flat_map(|c| c.digests.iter().copied())
            .collect()
    }

    fn front_commit_ready(&self) -> bool {
        self.commits
            .front()
            .is_some_and(|c| c.digests.iter().all(|d| self.held.contains_key(d)))
    }

    /// Hands ready commits to execution, strictly in index order.
    fn deliver_commits(&mut self) {
        while self.front_commit_ready() {
            if self.rings.blocks.len() >= self.rings.blocks.capacity() {
                return; // the run loop waits for room
            }
            let c = self.commits.pop_front().expect("front exists");
            let mut txs = Vec::new();
            for d in &c.digests {
                if let Some(h) = self.held.remove(d) {
                    txs.extend(h.txs.iter().cloned());
                }
            }
            let n = txs.len() as u64;
            let block = CommittedBlock {
                index: c.index,
                timestamp_ms: c.timestamp_ms,
                txs,
                created: c.created,
                consensus: CommitConsensus {
                    leader: Some(LeaderPosition {
                        round: c.leader.round.0,
                        author: c.leader.author.0,
                        digest: c.leader.digest.0,
                    }),
                    batches: c.digests,
                },
            };
            if let Err(b) = self.rings.blocks.try_push(block) {
                // Unreachable: this tile is the ring's only producer and
                // room was checked. Keep the commit rather than lose it.
                tracing::error!("block ring full despite room check");
                let _ = b;
                return;
            }
            self.applied = c.index;
            self.stats.add_out(n);
            self.counters.commits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Peers' batches never committed are dropped from memory after a while
    /// (they stay on disk and are read back if a commit names them).
    /// Own batches whose block fell below the GC round uncommitted can
    /// never commit (a commit orders only blocks at or above it): their
    /// transactions go back to the pool, pending again in nonce order.
    fn return_dead_batches(&mut self) {
        let gc = self.core.gc_round();
        if gc == self.own_checked_gc {
            return;
        }
        self.own_checked_gc = gc;
        let dead: Vec<BatchDigest> = self
            .own
            .iter()
            .filter(|(_, o)| o.proposed.is_some_and(|r| r < gc))
            .map(|(d, _)| *d)
            .collect();
        for d in dead {
            if let Some(o) = self.own.remove(&d) {
                self.return_to_pool(o);
            }
        }
    }

    /// Own batches that did not become available within
    /// `batch_available_timeout` (too few peers stored them): their
    /// transactions go back to the pool, and the batch is never proposed.
    fn abandon_unavailable_batches(&mut self) {
        let timeout = self.params.batch_available_timeout;
        let late: Vec<BatchDigest> = self
            .own
            .iter()
            .filter(|(_, o)| o.sealed.elapsed() >= timeout)
            .map(|(d, _)| *d)
            .collect();
        for d in late {
            // Only a batch still short of f+1 acknowledgements: an available
            // one is proposed and waits for its commit (or the GC return).
            if !self.availability.abandon(&d) {
                continue;
            }
            self.counters
                .batches_abandoned
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                batch = %hex::encode(&d[..8]),
                "own batch not available in time; its transactions go back to the pool"
            );
            if let Some(o) = self.own.remove(&d) {
                self.return_to_pool(o);
            }
        }
    }

    fn return_to_pool(&mut self, o: OwnBatch) {
        self.counters
            .batches_returned
            .fetch_add(1, Ordering::Relaxed);
        let mut settled = Vec::new();
        self.shared.pool.return_uncommitted(o.txs, &mut settled);
        crate::pipeline::answer(&self.shared, &mut settled);
        // The pool has ready transactions again.
        self.shared.pool_work.notify_one();
    }

    fn evict_stale_batches(&mut self) {
        const HELD_MAX_AGE: Duration = Duration::from_secs(120);
        if !self.parked.is_empty() {
            let before = self.parked.len();
            self.parked
                .retain(|_, p| p.since.elapsed() < PARKED_MAX_AGE);
            let dropped = before - self.parked.len();
            if dropped > 0 {
                self.counters
                    .blocks_parked_dropped
                    .fetch_add(dropped as u64, Ordering::Relaxed);
                let parked = &self.parked;
                self.parked_on.retain(|_, refs| {
                    refs.retain(|r| parked.contains_key(r));
                    !refs.is_empty()
                });
            }
        }
        if self.held.len() < self.params.batches_held_max / 2 {
            return;
        }
        let needed = self.needed_batches();
        self.held
            .retain(|d, h| needed.contains(d) || h.since.elapsed() < HELD_MAX_AGE);
    }

    fn publish_counters(&self) {
        let m = self.core.metrics();
        let c = &self.counters;
        c.round
            .store(self.core.highest_signed_round().0, Ordering::Relaxed);
        c.leaders_committed
            .store(m.leaders_committed, Ordering::Relaxed);
        c.leaders_skipped
            .store(m.leaders_skipped, Ordering::Relaxed);
        c.leader_timeouts
            .store(m.leader_timeouts, Ordering::Relaxed);
        c.blocks_accepted
            .store(m.blocks_accepted, Ordering::Relaxed);
        c.blocks_rejected
            .store(m.blocks_rejected, Ordering::Relaxed);
        c.blocks_proposed
            .store(m.blocks_proposed, Ordering::Relaxed);
        c.equivocators
            .store(self.core.equivocators().len() as u64, Ordering::Relaxed);
        c.pending_blocks
            .store(self.core.pending_len() as u64, Ordering::Relaxed);
        c.batches_waiting_acks
            .store(self.availability.waiting() as u64, Ordering::Relaxed);
        c.batches_held
            .store(self.held.len() as u64, Ordering::Relaxed);
        c.commits_waiting_batches
            .store(self.commits.len() as u64, Ordering::Relaxed);
        c.blocks_parked
            .store(self.parked.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_chunks_respect_the_wire_limits() {
        // Small blocks: the item limit splits (a 1000-block answer sent as
        // one frame would be refused by the sender's own limit check).
        let parts = chunk_items((0..1000).map(|i| vec![i as u8; 100]));
        assert_eq!(
            parts.iter().map(Vec::len).collect::<Vec<_>>(),
            [256, 256, 256, 232]
        );
        let l = velox_net::peer::WireLimits::default();
        assert_eq!(RESPONSE_ITEMS_MAX, l.items_per_response_max);
        for p in &parts {
            let m = PeerMessage::BlockResponse(p.clone());
            assert!(velox_net::peer::check_limits(&m, &l).is_ok());
        }
        // Large ones: the byte budget splits; one oversized item goes alone.
        let parts = chunk_items((0..5).map(|_| vec![0u8; 3 << 20]));
        assert_eq!(parts.len(), 5);
        assert!(chunk_items(std::iter::empty()).is_empty());
        let flat: Vec<Vec<u8>> = chunk_items((0..600).map(|i| vec![(i % 251) as u8; 10]))
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(flat.len(), 600);
        assert!(flat
            .iter()
            .enumerate()
            .all(|(i, b)| b[0] == (i % 251) as u8));
    }

    #[test]
    fn dag_keys_sort_by_round_then_author() {
        let r = |round, author, d| BlockRef {
            round: Round(round),
            author: ValidatorIndex(author),
            digest: Digest([d; 32]),
        };
        let mut keys = [
            dag_key(&r(2, 0, 0)),
            dag_key(&r(1, 3, 9)),
            dag_key(&r(1, 0, 5)),
            dag_key(&r(256, 0, 0)),
        ];
        keys.sort();
        assert_eq!(keys[0], dag_key(&r(1, 0, 5)));
        assert_eq!(keys[1], dag_key(&r(1, 3, 9)));
        assert_eq!(keys[2], dag_key(&r(2, 0, 0)));
        assert_eq!(keys[3], dag_key(&r(256, 0, 0)));
        let w = to_wire(&r(7, 2, 4));
        assert_eq!(from_wire(&w), r(7, 2, 4));
    }
}
