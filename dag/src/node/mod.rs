//! The consensus node: the protocol above the DAG core, as one sans-IO
//! machine (STYLE §1).
//!
//! [`ConsensusNode`] owns the [`Core`] and everything around it that decides
//! what a validator executes: sealing local transactions into batches,
//! broadcasting them and counting f+1 availability, storing and
//! acknowledging peers' batches, parking peers' blocks until their batches
//! are held, fetching missing batches with bounded retries, the
//! duplicate-batch window, assembling commits in order, and serving blocks,
//! batches and rounds to peers. It does no IO: the driver (the node's
//! consensus tile, or the simulator) feeds it inputs with the time and
//! carries out its intents.
//!
//! ```text
//!  local txs ─────────▶ handle_local_txs ─┐
//!  peer message ──────▶ handle_peer       ├──▶ poll_intent():  Persist{blocks, batches, sync}
//!  timer fired ───────▶ handle_timeout    │                    Check(a peer's batch)
//!  batch checked ─────▶ handle_checked    │                    Send(Outbound)
//!                                         │                    ReturnToPool(txs)
//!  store reads ◀─────── NodeStore (trait) ┘──▶ poll_commit(): the next commit, in order,
//!                                                             once all its batches are held
//!                                            ──▶ poll_timeout(): the next deadline
//! ```
//!
//! Peers' batches are checked (each transaction decoded, its signature and
//! stateless rules) by the driver, off the machine's thread: the machine
//! asks with [`Intent::Check`] and goes on; the driver answers each request
//! once, in any order, with [`ConsensusNode::handle_checked`] (the node
//! hands them to its verify tiles, so the consensus tile verifies nothing).
//! Until the answer comes the batch is neither held nor acknowledged, and a
//! commit or parked block that needs it waits for it without fetching it.
//!
//! The driver's rules: drain `poll_intent` in order after every input and
//! carry each out before the next (a `Persist` always comes before the
//! sends it precedes, so a block is never sent before it is durable and a
//! batch never acknowledged before it is stored, decision 0004); call
//! `poll_commit` whenever it has room downstream; call `handle_timeout`
//! when `poll_timeout` is due.
//!
//! Time: `now` is a monotonic clock (milliseconds from an origin the driver
//! picks): every timer of this machine and of the core is measured on it.
//! The wall clock ([`ConsensusNode::set_wall_clock`]) is used only for own
//! block timestamps and to refuse peers' blocks stamped too far ahead.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use velox_exec::{AccountId, TxDigest, VerifiedTx};
use velox_mempool::batch::{
    batch_digest, decode_batch, encode_batch, Availability, BatchDigest, BatchOrigin,
};
use velox_net::peer::{Dest, Outbound, PeerMessage, WireBlockRef};

use crate::block::{Block, BlockRef, SignatureVerifier};
use crate::commit::CommittedSubDag;
use crate::core::{Core, CoreConfig, Output};
use crate::types::{Committee, Digest, Round, Time, ValidatorIndex};

pub mod join;
#[cfg(test)]
mod tests;

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
/// (the core fetches them again when a descendant needs them). Each author
/// may fill at most its share, [`parked_quota`]: one author's blocks (a
/// Byzantine one's endless copies of a slot, each naming batches it never
/// serves) cannot crowd out the others'.
pub const PARKED_BLOCKS_MAX: usize = 10_000;

/// Parked blocks one author may have: an equal share of
/// [`PARKED_BLOCKS_MAX`] among `n` validators, at least 16.
pub fn parked_quota(n: usize) -> usize {
    (PARKED_BLOCKS_MAX / n.max(1)).max(16)
}
/// A parked block whose batches did not arrive in this long is dropped.
pub const PARKED_MAX_AGE_MS: u64 = 60_000;
/// Fetch attempts for a batch at `batch_fetch_retry_ms`; after them it is
/// asked for ten times less often, for as long as something waits for it.
pub const BATCH_FETCH_ATTEMPTS_MAX: usize = 50;
/// A peer's batch no commit needs is dropped from memory after this long
/// once the held set is half full (it stays in the store).
pub const HELD_MAX_AGE_MS: u64 = 120_000;
/// Digests of peers' batches refused for what their bytes hold
/// (undecodable, an invalid transaction) remembered so that a resent copy
/// is refused without being checked again.
pub const REJECTED_BATCHES_MAX: usize = 1 << 16;
/// Hard faults (invalid blocks or batches) a peer may commit within
/// [`PEER_STRIKE_WINDOW_MS`] before the machine ignores it for
/// [`PEER_BACKOFF_MS`]. Honest peers commit none.
pub const PEER_STRIKES_MAX: u32 = 20;
/// The window strikes are counted in.
pub const PEER_STRIKE_WINDOW_MS: u64 = 10_000;
/// How long a repeat offender's messages are ignored.
pub const PEER_BACKOFF_MS: u64 = 30_000;
/// Bytes of answers (blocks, batches, rounds) a peer may draw per second:
/// each peer has a token bucket of [`SERVE_BURST_BYTES`] refilled at this
/// rate. A request that finds its peer's bucket empty is not answered (the
/// requester asks again, or asks another peer).
pub const SERVE_BYTES_PER_SEC: u64 = 32 << 20;
/// A peer's bucket size (and its start).
pub const SERVE_BURST_BYTES: u64 = 64 << 20;
/// Most bytes one request is answered with.
pub const SERVE_REQUEST_BYTES_MAX: usize = 16 << 20;
/// Length of a block's key in the consensus log: round (8, big-endian),
/// author (4, big-endian), digest (32).
pub const DAG_KEY_LEN: usize = 44;
/// The longest the machine sleeps without a deadline of its own (bounds how
/// late the periodic checks run).
pub const IDLE_TICK_MS: u64 = 100;

/// Key of a block in the consensus log: sorts by round, then author.
pub fn dag_key(r: &BlockRef) -> [u8; DAG_KEY_LEN] {
    let mut k = [0u8; DAG_KEY_LEN];
    k[..8].copy_from_slice(&r.round.0.to_be_bytes());
    k[8..12].copy_from_slice(&r.author.0.to_be_bytes());
    k[12..].copy_from_slice(&r.digest.0);
    k
}

/// A block reference as the wire carries it.
pub fn to_wire(r: &BlockRef) -> WireBlockRef {
    WireBlockRef {
        round: r.round.0,
        author: r.author.0,
        digest: r.digest.0,
    }
}

/// A block reference from the wire.
pub fn from_wire(r: &WireBlockRef) -> BlockRef {
    BlockRef {
        round: Round(r.round),
        author: ValidatorIndex(r.author),
        digest: Digest(r.digest),
    }
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

/// Machine parameters (the node's `[consensus]` and `[mempool]` config).
#[derive(Clone, Copy, Debug)]
pub struct NodeConfig {
    /// The DAG core's configuration.
    pub core: CoreConfig,
    /// Seal a batch at this many transactions...
    pub batch_txs_max: usize,
    /// ...or when its first transaction waited this long.
    pub batch_age_ms: u64,
    /// Send an own batch again to validators that did not acknowledge it.
    pub batch_resend_ms: u64,
    /// Ask again for a missing batch after this long.
    pub batch_fetch_retry_ms: u64,
    /// Peers' batches held in memory before a commit takes them; beyond,
    /// new ones are refused (not acknowledged) and counted.
    pub batches_held_max: usize,
    /// An own batch not available (f+1 stored it) this long after sealing
    /// is abandoned: its transactions go back to the pool, and late
    /// acknowledgements never make it available. Bounds how long a
    /// transaction stays in flight before it is proposed.
    pub batch_available_timeout_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            core: CoreConfig::default(),
            batch_txs_max: 1024,
            batch_age_ms: 5,
            batch_resend_ms: 1_000,
            batch_fetch_retry_ms: 300,
            batches_held_max: 4096,
            batch_available_timeout_ms: 20_000,
        }
    }
}

/// What the machine reads from the node's durable store. Reads answer from
/// what earlier `Persist` intents wrote (and what the store held at start).
pub trait NodeStore: Send {
    /// A stored batch's bytes.
    fn batch(&self, digest: &BatchDigest) -> Option<Vec<u8>>;
    /// A block of the consensus log, by its key ([`dag_key`]).
    fn block(&self, key: &[u8; DAG_KEY_LEN]) -> Option<Vec<u8>>;
    /// The highest-round block of the consensus log authored by `author`.
    fn latest_block_by(&self, author: ValidatorIndex) -> Option<Vec<u8>>;
    /// Every block of rounds `from..=to`, lowest first.
    fn blocks_in_rounds(
        &self,
        from: u64,
        to: u64,
        each: &mut dyn FnMut(&[u8]),
    ) -> Result<(), String>;
}

/// Checks transactions (signatures, stateless rules): what a driver uses
/// to answer [`Intent::Check`] (see [`CheckRequest::answer`]). The node
/// verifies with the chain's signature rule; the simulator may trust what
/// it built itself.
pub trait TxChecker: Send {
    /// One answer per transaction, in order: the checked transaction, or
    /// `None` when it is undecodable or invalid.
    fn check(&self, txs: Vec<&[u8]>) -> Vec<Option<VerifiedTx>>;
}

/// A peer's batch whose transactions the driver must check, then answer
/// with [`ConsensusNode::handle_checked`] (exactly once per request).
#[derive(Clone, Debug)]
pub struct CheckRequest {
    /// The batch's digest (what the answer names).
    pub digest: BatchDigest,
    /// The batch's encoding; the machine decoded it already, so it decodes.
    pub bytes: Arc<[u8]>,
}

impl CheckRequest {
    /// The answer: every transaction of the batch checked by `checker`, in
    /// order (empty if the bytes do not decode, which the machine rules
    /// out before asking).
    pub fn answer(&self, checker: &dyn TxChecker) -> Vec<Option<VerifiedTx>> {
        match decode_batch(&self.bytes) {
            Ok(raw) => checker.check(raw.txs),
            Err(_) => Vec::new(),
        }
    }
}

/// What the driver must do, in the order polled.
#[derive(Debug)]
pub enum Intent {
    /// Write these blocks (by key) and batches (by digest) in one write,
    /// before carrying out any later intent. `sync`: the write must be
    /// durable against power loss (fsynced) before the next intent; it is
    /// set whenever later intents announce what is written. `round`: the
    /// round consensus is at (the batches' age for pruning).
    Persist {
        /// Blocks by their consensus-log key.
        blocks: Vec<([u8; DAG_KEY_LEN], Vec<u8>)>,
        /// Batches by digest.
        batches: Vec<(BatchDigest, Arc<[u8]>)>,
        /// The round consensus is at.
        round: u64,
        /// fsync before going on.
        sync: bool,
    },
    /// Check a peer's batch, then answer with
    /// [`ConsensusNode::handle_checked`]; needs no order with the other
    /// intents.
    Check(CheckRequest),
    /// Send a message to one peer or all.
    Send(Outbound),
    /// These transactions of own batches can no longer commit: the pool
    /// takes them back (pending again).
    ReturnToPool(Vec<(AccountId, TxDigest)>),
}

/// A commit ready for execution: its batches' transactions, in order.
#[derive(Debug)]
pub struct ReadyCommit {
    /// Commit index (1 is the first after genesis).
    pub index: u64,
    /// The commit's timestamp (ms, the leader's).
    pub timestamp_ms: u64,
    /// The leader it ordered.
    pub leader: BlockRef,
    /// The batches it included, in order (each at most once).
    pub batches: Vec<BatchDigest>,
    /// Their checked transactions, in order.
    pub txs: Vec<VerifiedTx>,
    /// When the core committed it (this machine's clock).
    pub committed_at: Time,
}

/// Counters of the machine (the driver exports them; totals since start).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMetrics {
    /// Commits delivered.
    pub commits: u64,
    /// Own batches sealed.
    pub batches_sealed: u64,
    /// Own batches that reached f+1.
    pub batches_available: u64,
    /// Own batches whose transactions went back to the pool.
    pub batches_returned: u64,
    /// Own batches not available in time (a subset of returned).
    pub batches_abandoned: u64,
    /// Fresh peers' batches received (checked).
    pub batches_received: u64,
    /// Peers' batches refused: undecodable, not from their author, or with
    /// an invalid transaction.
    pub batches_rejected: u64,
    /// Peers' batches refused because the held set was full.
    pub batches_refused_full: u64,
    /// Batches received by fetching.
    pub batches_fetched: u64,
    /// `BatchRequest`s sent.
    pub batch_fetch_requests: u64,
    /// Invalid transactions in batches.
    pub txs_invalid_in_batches: u64,
    /// Misbehaviour by peers.
    pub peer_penalties: u64,
    /// `BlockRequest`s answered.
    pub block_requests_served: u64,
    /// `RoundsRequest`s answered.
    pub rounds_requests_served: u64,
    /// Blocks served from the store (below the core's window).
    pub blocks_served_from_disk: u64,
    /// Parked blocks dropped (full, their author's share full, or too old).
    pub blocks_parked_dropped: u64,
    /// Payload queue full: an available batch could not be queued.
    pub payload_queue_full: u64,
    /// Resent copies of refused batches, refused without a second check.
    pub batches_rejected_again: u64,
    /// Fetched batches nobody asked for, or asked and already held (late
    /// answers; not a fault).
    pub batches_unrequested: u64,
    /// Times a peer was put in backoff for repeated hard faults.
    pub peer_backoffs: u64,
    /// Messages ignored from peers in backoff.
    pub peer_messages_ignored: u64,
    /// Requests not answered: the peer's serving budget was spent.
    pub serve_refused_budget: u64,
    /// `RoundsRequest`s not answered: the peer's serving budget was spent
    /// (counted in `serve_refused_budget` too).
    pub rounds_requests_refused: u64,
    /// Bytes of answers served to peers.
    pub served_bytes: u64,
    /// Pushed batches dropped from memory (kept in the store) to make room
    /// in their peer's share.
    pub batches_released: u64,
    /// Batch checks asked of the driver ([`Intent::Check`]).
    pub batch_checks: u64,
    /// Answers to checks nobody asked (a driver fault; ignored).
    pub batch_checks_unexpected: u64,
}

/// Sizes of the machine's maps (gauges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeGauges {
    /// Own batches waiting for acknowledgements.
    pub batches_waiting_acks: usize,
    /// Batches held in memory.
    pub batches_held: usize,
    /// Of them, batches peers pushed (bounded by `batches_held_max`, each
    /// peer by its share); the others are own, fetched or read back for a
    /// commit or a parked block.
    pub batches_held_pushed: usize,
    /// Commits waiting for their batches (or for the driver).
    pub commits_waiting: usize,
    /// Peers' blocks parked for their batches.
    pub blocks_parked: usize,
    /// Batches being fetched.
    pub batches_wanted: usize,
    /// Own batches not committed yet.
    pub own_batches: usize,
    /// Transactions waiting to be sealed.
    pub sealing_txs: usize,
    /// Peers' batches being checked by the driver.
    pub batches_checking: usize,
}

/// A peer's batch the driver is checking.
struct Checking {
    why: CheckPurpose,
    /// Its transactions (the answer has one entry for each).
    txs: usize,
    bytes: Arc<[u8]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CheckPurpose {
    /// Pushed fresh by its author: must be wholly valid; acknowledged.
    Pushed(u32),
    /// Wanted for a commit or a parked block (fetched, or read back from
    /// the store): keeps its valid transactions. `persist`: fetched, so
    /// written to the store.
    Wanted { persist: bool },
}

/// A batch this node holds, its transactions checked.
struct HeldBatch {
    bytes: Arc<[u8]>,
    txs: Arc<Vec<VerifiedTx>>,
    since: Time,
    /// The peer that pushed it (a fresh batch): counts towards that peer's
    /// share of `batches_held_max`.
    pushed_by: Option<u32>,
}

struct PendingCommit {
    index: u64,
    timestamp_ms: u64,
    leader: BlockRef,
    digests: Vec<BatchDigest>,
    /// Who to ask for each batch (authors of the blocks carrying it).
    sources: Vec<Vec<ValidatorIndex>>,
    committed_at: Time,
}

/// A peer's block waiting for its batches before the core sees it.
struct Parked {
    block: Block,
    from: u32,
    missing: usize,
    since: Time,
}

struct Wanted {
    sources: Vec<ValidatorIndex>,
    attempts: usize,
    next_try: Time,
}

/// An own batch until it commits or can no longer commit.
struct OwnBatch {
    /// (sender, digest) of its transactions, as the pool knows them.
    txs: Vec<(AccountId, TxDigest)>,
    /// Round of the own block that carries it, once proposed.
    proposed: Option<Round>,
    /// When it was sealed (for `batch_available_timeout_ms`).
    sealed: Time,
}

/// A peer's serving budget (bytes; may go below zero by one answer).
#[derive(Clone, Copy)]
struct Bucket {
    tokens: i64,
    last: Time,
}

/// A set of the last `cap` digests inserted; the oldest is forgotten
/// first (the duplicate-batch window, the refused-batch memory).
struct RecentSet {
    set: HashSet<BatchDigest>,
    order: VecDeque<BatchDigest>,
    cap: usize,
}

impl RecentSet {
    fn new(cap: usize) -> Self {
        RecentSet {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Inserts `d`; false if it was there already.
    fn insert(&mut self, d: BatchDigest) -> bool {
        if !self.set.insert(d) {
            return false;
        }
        self.order.push_back(d);
        if self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    fn contains(&self, d: &BatchDigest) -> bool {
        self.set.contains(d)
    }

    fn check_invariants(&self) {
        assert_eq!(self.set.len(), self.order.len());
        assert!(self.set.len() <= self.cap);
    }
}

#[derive(Clone, Copy, Default)]
struct Strikes {
    count: u32,
    window_start: Time,
    backoff_until: Time,
}

/// Why a peer's batch was refused.
enum BatchRefusal {
    /// Sent by another validator than its author: not remembered (the
    /// author's own copy of the same bytes is valid).
    NotFromAuthor,
    /// Undecodable, or a transaction failed: the bytes themselves are bad.
    Bad,
}

/// The consensus node's protocol machine. See the module docs.
pub struct ConsensusNode {
    core: Core,
    committee: Arc<Committee>,
    me: ValidatorIndex,
    config: NodeConfig,
    store: Box<dyn NodeStore>,
    verifier: Box<dyn SignatureVerifier>,
    availability: Availability,
    held: HashMap<BatchDigest, HeldBatch>,
    sealing: Vec<VerifiedTx>,
    sealing_since: Option<Time>,
    /// Last commit index delivered (or stored at start).
    applied: u64,
    commits: VecDeque<PendingCommit>,
    /// The last [`INCLUDED_WINDOW`] batch digests commits included.
    included: RecentSet,
    wanted: BTreeMap<BatchDigest, Wanted>,
    parked: BTreeMap<BlockRef, Parked>,
    /// Parked blocks per author (each at most [`parked_quota`]).
    parked_by_author: Vec<usize>,
    /// Batch digest -> parked blocks waiting for it.
    parked_on: HashMap<BatchDigest, Vec<BlockRef>>,
    /// Own batches not committed yet.
    own: BTreeMap<BatchDigest, OwnBatch>,
    /// The core's GC round when `own` was last checked.
    own_checked_gc: Round,
    /// The next own batch's nonce (its identity beside the author, see
    /// `velox_mempool::batch`).
    next_batch_nonce: u64,
    metrics: NodeMetrics,
    /// Peers' batches refused for their bytes (see [`REJECTED_BATCHES_MAX`]).
    rejected: RecentSet,
    /// Per peer: strikes in the current window, the window's start, and
    /// the end of its backoff.
    strikes: Vec<Strikes>,
    /// Per peer: what it may still draw in answers.
    budget: Vec<Bucket>,
    /// Per peer: held batches it pushed (its share is `batches_held_max / n`).
    held_by_peer: Vec<usize>,
    /// Peers' batches the driver is checking.
    checking: BTreeMap<BatchDigest, Checking>,
    /// Per peer: its pushed batches being checked (they count towards its
    /// share with the held ones).
    checking_by_peer: Vec<usize>,
    /// Check the maps' invariants after every input (tests, the simulator,
    /// debug builds).
    checked: bool,
    // Intents of the current turn.
    persist_blocks: Vec<([u8; DAG_KEY_LEN], Vec<u8>)>,
    persist_batches: Vec<(BatchDigest, Arc<[u8]>)>,
    checks: VecDeque<CheckRequest>,
    sends: VecDeque<Outbound>,
    returns: VecDeque<Vec<(AccountId, TxDigest)>>,
}

impl ConsensusNode {
    /// A machine around `core`. `applied`: the last commit index already
    /// executed (commits up to it that the core decides again are
    /// skipped). `first_batch_nonce`: where own batch nonces start (random
    /// per process in the node, so they never repeat across restarts).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        core: Core,
        config: NodeConfig,
        store: Box<dyn NodeStore>,
        verifier: Box<dyn SignatureVerifier>,
        applied: u64,
        first_batch_nonce: u64,
    ) -> Self {
        let committee = core.committee().clone();
        let me = core.me();
        let stakes = committee.indices().map(|v| committee.stake(v)).collect();
        let availability = Availability::new(stakes, committee.validity_threshold(), me.as_usize());
        let strikes = vec![Strikes::default(); committee.size()];
        let held_by_peer = vec![0; committee.size()];
        let budget = vec![
            Bucket {
                tokens: SERVE_BURST_BYTES as i64,
                last: Time(0),
            };
            committee.size()
        ];
        ConsensusNode {
            core,
            committee,
            me,
            config,
            store,
            verifier,
            availability,
            held: HashMap::new(),
            sealing: Vec::new(),
            sealing_since: None,
            applied,
            commits: VecDeque::new(),
            included: RecentSet::new(INCLUDED_WINDOW),
            wanted: BTreeMap::new(),
            parked: BTreeMap::new(),
            parked_by_author: vec![0; held_by_peer.len()],
            parked_on: HashMap::new(),
            own: BTreeMap::new(),
            own_checked_gc: Round(0),
            next_batch_nonce: first_batch_nonce,
            metrics: NodeMetrics::default(),
            rejected: RecentSet::new(REJECTED_BATCHES_MAX),
            strikes,
            budget,
            checking: BTreeMap::new(),
            checking_by_peer: held_by_peer.clone(),
            held_by_peer,
            checked: cfg!(debug_assertions),
            persist_blocks: Vec::new(),
            persist_batches: Vec::new(),
            checks: VecDeque::new(),
            sends: VecDeque::new(),
            returns: VecDeque::new(),
        }
    }

    /// Seeds the duplicate-batch window with the digests the stored commits
    /// included, oldest first: a core resumed after the last commit does
    /// not re-emit earlier commits, so the window would otherwise start
    /// empty and differ from the peers'.
    pub fn seed_included(&mut self, digests: impl IntoIterator<Item = BatchDigest>) {
        for d in digests {
            self.included.insert(d);
        }
    }

    /// Checks the maps' invariants after every input (on by default in
    /// debug builds; tests and the simulator turn it on in every build).
    /// Costs time linear in the parked blocks and queued commits.
    pub fn with_invariant_checks(mut self, on: bool) -> Self {
        self.checked = on;
        self
    }

    /// Takes what recovery queued in the core (commits to skip, an own
    /// block); call once before the first input.
    pub fn start(&mut self, now: Time) {
        self.drain_core(now);
        self.check_invariants();
    }

    /// Sets the wall clock (ms since the Unix epoch): block timestamps
    /// only. Every timer runs on the `now` the handlers get (a monotonic
    /// clock in the node). The driver sets it before each turn.
    pub fn set_wall_clock(&mut self, wall_ms: u64) {
        self.core.set_wall_clock(wall_ms);
    }

    /// The core inside.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The machine's parameters.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// This validator's index.
    pub fn me(&self) -> ValidatorIndex {
        self.me
    }

    /// Totals since start.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// Sizes of the machine's maps.
    pub fn gauges(&self) -> NodeGauges {
        NodeGauges {
            batches_waiting_acks: self.availability.waiting(),
            batches_held: self.held.len(),
            batches_held_pushed: self.held_by_peer.iter().sum(),
            commits_waiting: self.commits.len(),
            blocks_parked: self.parked.len(),
            batches_wanted: self.wanted.len(),
            own_batches: self.own.len(),
            sealing_txs: self.sealing.len(),
            batches_checking: self.checking.len(),
        }
    }

    /// Whether `d` is an own batch not committed yet.
    pub fn is_own_batch(&self, d: &BatchDigest) -> bool {
        self.own.contains_key(d)
    }

    /// The last commit index delivered.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    fn multi(&self) -> bool {
        self.committee.size() > 1
    }

    // ----- inputs -----------------------------------------------------------

    /// Checked transactions from the local pool, to seal into batches: a
    /// batch is sealed at `batch_txs_max` transactions, or by
    /// [`Self::handle_timeout`] once its first one waited `batch_age_ms`.
    pub fn handle_local_txs(&mut self, now: Time, txs: Vec<VerifiedTx>) {
        if txs.is_empty() {
            return;
        }
        if self.sealing.is_empty() {
            self.sealing_since = Some(now);
        }
        self.sealing.extend(txs);
        while self.sealing.len() >= self.config.batch_txs_max {
            let rest = self.sealing.split_off(self.config.batch_txs_max);
            let full = std::mem::replace(&mut self.sealing, rest);
            self.seal(full, now);
        }
        if self.sealing.is_empty() {
            self.sealing_since = None;
        }
        self.drain_core(now);
        self.check_invariants();
    }

    /// A message from peer `from`.
    pub fn handle_peer(&mut self, now: Time, from: u32, msg: PeerMessage) {
        if !self.committee.contains(ValidatorIndex(from)) || from == self.me.0 {
            // Nobody to hold it against: the transport authenticates
            // members, so this is a driver bug.
            tracing::debug!(peer = from, "message from a non-peer index");
            self.metrics.peer_penalties += 1;
            return;
        }
        if self.strikes[from as usize].backoff_until > now {
            self.metrics.peer_messages_ignored += 1;
            return;
        }
        match msg {
            PeerMessage::Block(bytes) => self.on_block_bytes(now, &bytes, from),
            PeerMessage::BlockResponse(list) => {
                for bytes in list {
                    self.on_block_bytes(now, &bytes, from);
                }
            }
            PeerMessage::BlockRequest(refs) => self.serve_blocks(now, from, &refs),
            PeerMessage::Batch(bytes) => self.on_fresh_batch(now, from, bytes),
            PeerMessage::BatchAck(d) => {
                if self.availability.ack(&d, from as usize) {
                    self.make_available(d, now);
                }
            }
            PeerMessage::BatchRequest(ds) => self.serve_batches(now, from, &ds),
            PeerMessage::BatchResponse(list) => {
                for bytes in list {
                    self.on_fetched_batch(now, from, bytes);
                }
            }
            PeerMessage::Heartbeat { .. } => {}
            PeerMessage::RoundsRequest {
                from_round,
                to_round,
            } => self.serve_rounds(now, from, from_round, to_round),
            // A part that arrived after a join ended: its blocks are as
            // good as any fetched ones.
            PeerMessage::RoundsResponse { blocks, .. } => {
                for bytes in blocks {
                    self.on_block_bytes(now, &bytes, from);
                }
            }
        }
        self.drain_core(now);
        self.check_invariants();
    }

    /// The driver's answer to [`Intent::Check`] for batch `digest`: one
    /// entry per transaction, in order, the checked transaction or `None`.
    /// A pushed batch that is wholly valid is stored, held and
    /// acknowledged (else refused, and its sender penalized); a wanted one
    /// keeps its valid transactions (every node filters the same bytes the
    /// same way).
    pub fn handle_checked(&mut self, now: Time, digest: BatchDigest, txs: Vec<Option<VerifiedTx>>) {
        let Some(c) = self.checking.remove(&digest) else {
            self.metrics.batch_checks_unexpected += 1;
            return;
        };
        if let CheckPurpose::Pushed(p) = c.why {
            self.checking_by_peer[p as usize] -= 1;
        }
        // A wrong count is the driver's fault: nothing of it is trusted.
        let whole = txs.len() == c.txs;
        debug_assert!(whole, "a check answered with the wrong count");
        let mut ok = Vec::with_capacity(c.txs);
        let mut bad = (c.txs as u64).saturating_sub(txs.len() as u64);
        for t in txs {
            match t {
                Some(t) if whole => ok.push(t),
                _ => bad += 1,
            }
        }
        self.metrics.txs_invalid_in_batches += bad;
        match c.why {
            CheckPurpose::Pushed(from) => {
                if bad > 0 {
                    self.metrics.batches_rejected += 1;
                    self.rejected.insert(digest);
                    self.penalize(now, from, "invalid batch");
                } else {
                    self.persist_batches.push((digest, c.bytes.clone()));
                    self.insert_held(now, digest, c.bytes, ok, Some(from));
                    self.ack(from, digest);
                }
            }
            CheckPurpose::Wanted { persist } => {
                if !self.wanted.contains_key(&digest) {
                    // Nothing waits for it any more.
                    self.metrics.batches_unrequested += 1;
                } else {
                    if persist {
                        self.metrics.batches_fetched += 1;
                        self.persist_batches.push((digest, c.bytes.clone()));
                    }
                    self.insert_held(now, digest, c.bytes, ok, None);
                }
            }
        }
        self.drain_core(now);
        self.check_invariants();
    }

    /// Timers: the core's, sealing by age, resending own batches, giving up
    /// on batches not available in time, fetching missing batches, and
    /// ageing out parked blocks and held batches. Cheap when nothing is
    /// due; the driver may call it every turn.
    pub fn handle_timeout(&mut self, now: Time) {
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        if !self.sealing.is_empty()
            && self
                .sealing_since
                .is_some_and(|s| now >= s.plus_ms(self.config.batch_age_ms))
        {
            let txs = std::mem::take(&mut self.sealing);
            self.sealing_since = None;
            self.seal(txs, now);
        }
        if self.multi() {
            let mut due = self
                .availability
                .due_for_resend(now.0, self.config.batch_resend_ms);
            due.sort_unstable_by_key(|a| a.0);
            for (d, missing) in due {
                if let Some(h) = self.held.get(&d) {
                    for v in missing {
                        self.sends.push_back(Outbound {
                            to: Dest::One(v as u32),
                            msg: PeerMessage::Batch(h.bytes.to_vec()),
                        });
                    }
                }
            }
        }
        self.abandon_unavailable_batches(now);
        self.fetch_missing_batches(now);
        self.drain_core(now);
        self.evict_stale(now);
        self.check_invariants();
    }

    /// The next time [`Self::handle_timeout`] has work (at most
    /// [`IDLE_TICK_MS`] ahead, for the periodic checks).
    pub fn poll_timeout(&self, now: Time) -> Time {
        let mut d = now.plus_ms(IDLE_TICK_MS);
        if let Some(t) = self.core.poll_timeout() {
            d = d.min(t);
        }
        if let Some(s) = self.sealing_since {
            d = d.min(s.plus_ms(self.config.batch_age_ms));
        }
        if let Some(w) = self
            .wanted
            .iter()
            .filter(|(k, _)| !self.checking.contains_key(*k))
            .map(|(_, w)| w.next_try)
            .min()
        {
            d = d.min(w);
        }
        d.max(now)
    }

    // ----- outputs ----------------------------------------------------------

    /// The next intent: a pending write first, then checks, sends, returns.
    pub fn poll_intent(&mut self) -> Option<Intent> {
        if !self.persist_blocks.is_empty() || !self.persist_batches.is_empty() {
            return Some(Intent::Persist {
                blocks: std::mem::take(&mut self.persist_blocks),
                batches: std::mem::take(&mut self.persist_batches),
                round: self
                    .core
                    .highest_signed_round()
                    .0
                    .max(self.core.threshold_round().0),
                sync: true,
            });
        }
        if let Some(c) = self.checks.pop_front() {
            return Some(Intent::Check(c));
        }
        if let Some(m) = self.sends.pop_front() {
            return Some(Intent::Send(m));
        }
        self.returns.pop_front().map(Intent::ReturnToPool)
    }

    /// Whether the next commit in order has all its batches.
    pub fn commit_ready(&self) -> bool {
        self.commits
            .front()
            .is_some_and(|c| c.digests.iter().all(|d| self.held.contains_key(d)))
    }

    /// The next commit, strictly in index order, once all its batches are
    /// held. The driver calls this when it has room downstream.
    pub fn poll_commit(&mut self) -> Option<ReadyCommit> {
        if !self.commit_ready() {
            return None;
        }
        let c = self.commits.pop_front().expect("front exists");
        let mut txs = Vec::new();
        for d in &c.digests {
            if let Some(h) = self.remove_held(d) {
                txs.extend(h.txs.iter().cloned());
            }
        }
        assert!(c.index > self.applied, "commits are delivered in order");
        self.applied = c.index;
        self.metrics.commits += 1;
        Some(ReadyCommit {
            index: c.index,
            timestamp_ms: c.timestamp_ms,
            leader: c.leader,
            batches: c.digests,
            txs,
            committed_at: c.committed_at,
        })
    }

    // ----- own batches ------------------------------------------------------

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
        self.metrics.batches_sealed += 1;
        self.own.insert(
            d,
            OwnBatch {
                txs: txs.iter().map(|t| (t.sender(), t.digest())).collect(),
                proposed: None,
                sealed: now,
            },
        );
        self.persist_batches.push((d, bytes.clone()));
        if self.multi() {
            self.sends.push_back(Outbound {
                to: Dest::All,
                msg: PeerMessage::Batch(bytes.to_vec()),
            });
        }
        self.insert_held(now, d, bytes, txs, None);
        if self.availability.sealed(d, now.0) {
            self.make_available(d, now);
        }
    }

    fn make_available(&mut self, d: BatchDigest, now: Time) {
        self.metrics.batches_available += 1;
        if self.core.handle_payload(now, &[Digest(d)]) == 0 {
            // The core's payload queue is full: consensus is far behind the
            // pool. The batch stays stored; its transactions go back.
            self.metrics.payload_queue_full += 1;
            tracing::warn!(
                "consensus payload queue full; an available batch was not queued, \
                 its transactions go back to the pool"
            );
            if let Some(o) = self.own.remove(&d) {
                self.return_to_pool(o);
            }
        }
    }

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
    /// `batch_available_timeout_ms` (too few peers stored them): their
    /// transactions go back to the pool, and the batch is never proposed.
    fn abandon_unavailable_batches(&mut self, now: Time) {
        let timeout = self.config.batch_available_timeout_ms;
        let late: Vec<BatchDigest> = self
            .own
            .iter()
            .filter(|(_, o)| now >= o.sealed.plus_ms(timeout))
            .map(|(d, _)| *d)
            .collect();
        for d in late {
            // Only a batch still short of f+1 acknowledgements: an available
            // one is proposed and waits for its commit (or the GC return).
            if !self.availability.abandon(&d) {
                continue;
            }
            self.metrics.batches_abandoned += 1;
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
        self.metrics.batches_returned += 1;
        self.returns.push_back(o.txs);
    }

    // ----- peers' batches ---------------------------------------------------

    fn on_fresh_batch(&mut self, now: Time, from: u32, bytes: Vec<u8>) {
        let bytes: Arc<[u8]> = bytes.into();
        let d = batch_digest(&bytes);
        if self.held.contains_key(&d) || self.included.contains(&d) {
            self.ack(from, d);
            return;
        }
        if self.checking.contains_key(&d) {
            // A resent copy: the check under way answers it.
            return;
        }
        if self.rejected.contains(&d) {
            self.metrics.batches_rejected_again += 1;
            self.penalize(now, from, "a batch refused before");
            return;
        }
        let share = (self.config.batches_held_max / self.committee.size()).max(1);
        let pushed = |s: &Self| s.held_by_peer[from as usize] + s.checking_by_peer[from as usize];
        if pushed(self) >= share {
            // Its share is full: let its oldest pushed batch that nothing
            // waits for leave memory (it stays in the store and is read
            // back if a commit names it), so batches that never commit
            // (their author abandoned them, or was cut off) cannot keep
            // the share full.
            self.release_oldest_pushed(from);
        }
        if self.held.len() + self.checking.len() >= self.config.batches_held_max
            || pushed(self) >= share
        {
            self.metrics.batches_refused_full += 1;
            return;
        }
        self.metrics.batches_received += 1;
        match self.decode_for_check(&bytes, Some(from)) {
            Ok(txs) => self.check(d, bytes, txs, CheckPurpose::Pushed(from)),
            Err(why) => {
                if matches!(why, BatchRefusal::Bad) {
                    self.rejected.insert(d);
                }
                self.penalize(now, from, "invalid batch");
            }
        }
    }

    /// Drops from memory the oldest batch `peer` pushed that no queued
    /// commit or parked block needs (it stays in the store).
    fn release_oldest_pushed(&mut self, peer: u32) {
        let needed = self.needed_batches();
        let oldest = self
            .held
            .iter()
            .filter(|(d, h)| {
                h.pushed_by == Some(peer)
                    && !needed.contains(*d)
                    && !self.parked_on.contains_key(*d)
            })
            .min_by_key(|(d, h)| (h.since, **d))
            .map(|(d, _)| *d);
        if let Some(d) = oldest {
            self.remove_held(&d);
            self.metrics.batches_released += 1;
        }
    }

    fn on_fetched_batch(&mut self, now: Time, from: u32, bytes: Vec<u8>) {
        let bytes: Arc<[u8]> = bytes.into();
        let d = batch_digest(&bytes);
        if !self.wanted.contains_key(&d) {
            // Nothing we are asking for: a late answer (already held) or
            // content that matches no request.
            self.metrics.batches_unrequested += 1;
            tracing::debug!(peer = from, "unrequested or mismatching batch");
            return;
        }
        if self.checking.contains_key(&d) {
            // Its check is under way (a pushed copy, or an earlier answer).
            return;
        }
        // A committed batch: keep its valid transactions (every node
        // filters the same bytes the same way); undecodable, it executes as
        // empty.
        match self.decode_for_check(&bytes, None) {
            Ok(txs) => self.check(d, bytes, txs, CheckPurpose::Wanted { persist: true }),
            Err(_) => {
                self.metrics.batches_fetched += 1;
                self.hold(now, d, bytes, Vec::new());
            }
        }
    }

    /// Asks the driver to check batch `d` (of `txs` transactions).
    fn check(&mut self, d: BatchDigest, bytes: Arc<[u8]>, txs: usize, why: CheckPurpose) {
        if let CheckPurpose::Pushed(p) = why {
            self.checking_by_peer[p as usize] += 1;
        }
        self.metrics.batch_checks += 1;
        self.checks.push_back(CheckRequest {
            digest: d,
            bytes: bytes.clone(),
        });
        self.checking.insert(d, Checking { why, txs, bytes });
    }

    fn ack(&mut self, to: u32, d: BatchDigest) {
        self.sends.push_back(Outbound {
            to: Dest::One(to),
            msg: PeerMessage::BatchAck(d),
        });
    }

    /// A fetched batch, checked: stored (in this turn's write) and held.
    fn hold(&mut self, now: Time, d: BatchDigest, bytes: Arc<[u8]>, txs: Vec<VerifiedTx>) {
        self.persist_batches.push((d, bytes.clone()));
        self.insert_held(now, d, bytes, txs, None);
    }

    /// Every batch enters memory here: no longer wanted, and parked blocks
    /// that waited only for it go on to the core.
    fn insert_held(
        &mut self,
        now: Time,
        d: BatchDigest,
        bytes: Arc<[u8]>,
        txs: Vec<VerifiedTx>,
        pushed_by: Option<u32>,
    ) {
        self.remove_held(&d);
        if let Some(p) = pushed_by {
            self.held_by_peer[p as usize] += 1;
        }
        self.held.insert(
            d,
            HeldBatch {
                bytes,
                txs: Arc::new(txs),
                since: now,
                pushed_by,
            },
        );
        self.wanted.remove(&d);
        self.unpark(now, &d);
    }

    fn remove_held(&mut self, d: &BatchDigest) -> Option<HeldBatch> {
        let h = self.held.remove(d)?;
        if let Some(p) = h.pushed_by {
            self.held_by_peer[p as usize] -= 1;
        }
        Some(h)
    }

    /// Decodes a batch (its transactions are checked by the driver): its
    /// transaction count. A fresh batch from peer `fresh_from` must be a
    /// version-2 batch authored by that peer.
    fn decode_for_check(
        &mut self,
        bytes: &[u8],
        fresh_from: Option<u32>,
    ) -> Result<usize, BatchRefusal> {
        let raw = match decode_batch(bytes) {
            Ok(r) if fresh_from.is_some_and(|f| r.origin.map(|o| o.author) != Some(f)) => {
                tracing::debug!(from = ?fresh_from, origin = ?r.origin, "batch not authored by its sender");
                self.metrics.batches_rejected += 1;
                return Err(BatchRefusal::NotFromAuthor);
            }
            Ok(r) => r.txs,
            Err(e) => {
                tracing::debug!(error = %e, "undecodable batch");
                self.metrics.batches_rejected += 1;
                return Err(BatchRefusal::Bad);
            }
        };
        Ok(raw.len())
    }

    fn have_batch(&self, d: &BatchDigest) -> bool {
        self.held.contains_key(d) || self.included.contains(d) || self.store.batch(d).is_some()
    }

    // ----- peers' blocks ----------------------------------------------------

    /// A peer's block reaches the core only once every batch it names is
    /// held here: an honest validator then never votes for (links to) a
    /// block whose data it could not serve, so a committed block's batches
    /// are always retrievable. Blocks waiting for batches are parked and the
    /// batches fetched from the block's author and sender.
    fn on_block_bytes(&mut self, now: Time, bytes: &[u8], from: u32) {
        let Ok(block) = Block::decode(bytes) else {
            self.core.count_rejected();
            self.penalize(now, from, "undecodable block");
            return;
        };
        let r = block.reference();
        if self.core.knows(&r) || self.parked.contains_key(&r) {
            return;
        }
        // A round far above what the network reached: refused unverified
        // (not a fault: a lagging sender's view may differ).
        if !self.core.admit_round(r.round, ValidatorIndex(from)) {
            return;
        }
        // A third copy of one slot nobody waits for: evidence enough.
        if !self.core.equivocation_copy_wanted(&r) {
            return;
        }
        // Signature and structure first: nothing is looked up, stored or
        // fetched for a block that is not valid. Checked once: the core
        // takes it as verified.
        if let Err(e) = block.verify(&self.committee, self.verifier.as_ref()) {
            tracing::debug!(peer = from, error = %e, "block rejected");
            self.core.count_rejected();
            self.penalize(now, from, "invalid block");
            return;
        }
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
        let author = block.author().as_usize();
        if self.parked.len() >= PARKED_BLOCKS_MAX
            || self.parked_by_author[author] >= parked_quota(self.committee.size())
        {
            self.metrics.blocks_parked_dropped += 1;
            return;
        }
        self.parked_by_author[author] += 1;
        let sources = vec![block.author(), ValidatorIndex(from)];
        for d in &missing {
            self.parked_on.entry(*d).or_default().push(r);
            self.want(now, *d, sources.clone());
        }
        self.parked.insert(
            r,
            Parked {
                block,
                from,
                missing: missing.len(),
                since: now,
            },
        );
    }

    /// A verified block whose batches are held goes to the core.
    fn feed_core(&mut self, now: Time, block: Block, from: u32) {
        if let Err(e) = self
            .core
            .handle_verified_block(now, block, ValidatorIndex(from))
        {
            tracing::debug!(peer = from, error = %e, "block rejected");
            self.penalize(now, from, "invalid block");
        }
    }

    /// A batch arrived: parked blocks that waited only for it go on to the
    /// core.
    fn unpark(&mut self, now: Time, d: &BatchDigest) {
        let Some(refs) = self.parked_on.remove(d) else {
            return;
        };
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
                self.parked_by_author[p.block.author().as_usize()] -= 1;
                self.feed_core(now, p.block, p.from);
            }
        }
    }

    /// Marks `d` to be fetched, trying `sources` first, then everyone.
    fn want(&mut self, now: Time, d: BatchDigest, mut sources: Vec<ValidatorIndex>) {
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
                next_try: now,
            },
        );
    }

    fn fetch_missing_batches(&mut self, now: Time) {
        if self.wanted.is_empty() || !self.multi() {
            return;
        }
        let needed = self.needed_batches();
        // A batch nothing waits for any more (its parked blocks aged out,
        // no commit names it) is no longer fetched. One that something
        // waits for is asked for until it arrives, ten times less often
        // after BATCH_FETCH_ATTEMPTS_MAX tries: giving up while a parked
        // block still waits would leave that block, and everything above
        // it, stuck until the block aged out (a validator cut off while
        // its fetches ran out stalled a minute after the heal).
        let parked_on = &self.parked_on;
        self.wanted
            .retain(|d, _| needed.contains(d) || parked_on.contains_key(d));
        let retry = self.config.batch_fetch_retry_ms;
        let mut by_peer: BTreeMap<u32, Vec<[u8; 32]>> = BTreeMap::new();
        let checking = &self.checking;
        for (d, w) in self.wanted.iter_mut() {
            // A copy being checked is not fetched (again) meanwhile.
            if w.next_try > now || w.sources.is_empty() || checking.contains_key(d) {
                continue;
            }
            let src = w.sources[w.attempts % w.sources.len()];
            w.attempts += 1;
            let every = if w.attempts >= BATCH_FETCH_ATTEMPTS_MAX {
                retry.saturating_mul(10)
            } else {
                retry
            };
            w.next_try = now.plus_ms(every);
            by_peer.entry(src.0).or_default().push(*d);
        }
        for (peer, ds) in by_peer {
            for chunk in ds.chunks(BATCH_REQUEST_DIGESTS_MAX) {
                self.metrics.batch_fetch_requests += 1;
                self.sends.push_back(Outbound {
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

    fn evict_stale(&mut self, now: Time) {
        if !self.parked.is_empty() {
            let before = self.parked.len();
            let by_author = &mut self.parked_by_author;
            self.parked.retain(|_, p| {
                let keep = now < p.since.plus_ms(PARKED_MAX_AGE_MS);
                if !keep {
                    by_author[p.block.author().as_usize()] -= 1;
                }
                keep
            });
            let dropped = before - self.parked.len();
            if dropped > 0 {
                self.metrics.blocks_parked_dropped += dropped as u64;
                let parked = &self.parked;
                self.parked_on.retain(|_, refs| {
                    refs.retain(|r| parked.contains_key(r));
                    !refs.is_empty()
                });
            }
        }
        if self.held.len() < self.config.batches_held_max / 2 {
            return;
        }
        let needed = self.needed_batches();
        self.held
            .retain(|d, h| needed.contains(d) || now < h.since.plus_ms(HELD_MAX_AGE_MS));
        self.held_by_peer.iter_mut().for_each(|c| *c = 0);
        for h in self.held.values() {
            if let Some(p) = h.pushed_by {
                self.held_by_peer[p as usize] += 1;
            }
        }
    }

    // ----- serving peers ----------------------------------------------------

    /// Answers a joining validator: every block of rounds
    /// `from_round..=to_round` in the consensus log (an accepted block is
    /// written there in the turn that accepted it, before anything it
    /// caused is sent), lowest rounds first, in parts of at most
    /// [`RESPONSE_BYTES_MAX`]; the first part also carries the requester's
    /// own latest block this node holds, whatever its round (so it never
    /// signs a round it signed before its data was lost, and its next
    /// block has an own parent). The last part says `done`.
    fn serve_rounds(&mut self, now: Time, to: u32, from_round: u64, to_round: u64) {
        // Answered whoever asks, within the peer's serving budget: a
        // validator whose blocks are still at the head may have lost its
        // log a moment ago (a failed disk, power loss), and when its stake
        // is needed for a quorum the head waits for its join (join-poison
        // found a validator refused as "not behind" forever that way).
        let requester = ValidatorIndex(to);
        if !self.may_serve(now, to) {
            self.metrics.rounds_requests_refused += 1;
            return;
        }
        self.metrics.rounds_requests_served += 1;
        let to_round = to_round.min(from_round.saturating_add(ROUNDS_PER_REQUEST_MAX - 1));
        let mut items: Vec<Vec<u8>> = Vec::new();
        let in_memory = (self.core.gc_round().0..=self.core.dag().highest_round().0)
            .rev()
            .find_map(|r| self.core.dag().slot(Round(r), requester).first().cloned());
        match in_memory {
            Some(b) => items.push(b.encode()),
            None => {
                if let Some(b) = self.store.latest_block_by(requester) {
                    items.push(b);
                }
            }
        }
        let r = self
            .store
            .blocks_in_rounds(from_round, to_round, &mut |bytes| {
                items.push(bytes.to_vec())
            });
        if let Err(e) = r {
            tracing::warn!(error = %e, "serving a rounds request: reading the consensus log failed");
            return;
        }
        let head_round = self.core.dag().highest_round().0;
        self.spend(to, items.iter().map(Vec::len).sum());
        let parts = chunk_items(items);
        let n = parts.len().max(1);
        let mut parts = parts.into_iter();
        for i in 0..n {
            self.sends.push_back(Outbound {
                to: Dest::One(to),
                msg: PeerMessage::RoundsResponse {
                    from_round,
                    to_round,
                    head_round,
                    done: i + 1 == n,
                    parts: n as u32,
                    blocks: parts.next().unwrap_or_default(),
                },
            });
        }
    }

    fn serve_blocks(&mut self, now: Time, to: u32, refs: &[WireBlockRef]) {
        if !self.may_serve(now, to) {
            return;
        }
        self.metrics.block_requests_served += 1;
        let refs: Vec<BlockRef> = refs.iter().map(from_wire).collect();
        let mut out: BTreeMap<[u8; DAG_KEY_LEN], Vec<u8>> = BTreeMap::new();
        let mut found: HashSet<BlockRef> = HashSet::new();
        let mut bytes_out = 0usize;
        for b in self.core.handle_block_request(&refs) {
            if bytes_out >= SERVE_REQUEST_BYTES_MAX {
                break;
            }
            found.insert(b.reference());
            let e = b.encode();
            bytes_out += e.len();
            out.insert(dag_key(&b.reference()), e);
        }
        // Below the core's window: the consensus log, with ancestors as deep
        // as the core would give.
        let cfg = self.config.core;
        let mut stack: Vec<(BlockRef, u64)> = refs
            .iter()
            .filter(|r| !found.contains(r))
            .map(|r| (*r, r.round.0.saturating_sub(cfg.fetch_ancestor_rounds)))
            .collect();
        while let Some((r, floor)) = stack.pop() {
            if out.len() >= cfg.fetch_response_blocks_max || bytes_out >= SERVE_REQUEST_BYTES_MAX {
                break;
            }
            let k = dag_key(&r);
            if out.contains_key(&k) {
                continue;
            }
            let Some(bytes) = self.store.block(&k) else {
                continue;
            };
            let Ok(b) = Block::decode(&bytes) else {
                continue;
            };
            self.metrics.blocks_served_from_disk += 1;
            for p in b.parents() {
                if p.round.0 >= floor && p.round.0 >= 1 {
                    stack.push((*p, floor));
                }
            }
            bytes_out += bytes.len();
            out.insert(k, bytes);
        }
        self.spend(to, bytes_out);
        // Lowest rounds first (the receiver accepts them in order).
        self.respond_chunked(to, out.into_values(), PeerMessage::BlockResponse);
    }

    fn serve_batches(&mut self, now: Time, to: u32, ds: &[[u8; 32]]) {
        if !self.may_serve(now, to) {
            return;
        }
        let mut found: Vec<Vec<u8>> = Vec::new();
        let mut bytes_out = 0usize;
        for d in ds.iter().take(BATCH_REQUEST_DIGESTS_MAX) {
            if bytes_out >= SERVE_REQUEST_BYTES_MAX {
                break;
            }
            let b = match self.held.get(d) {
                Some(h) => Some(h.bytes.to_vec()),
                None => self.store.batch(d),
            };
            if let Some(b) = b {
                bytes_out += b.len();
                found.push(b);
            }
        }
        self.spend(to, bytes_out);
        self.respond_chunked(to, found, PeerMessage::BatchResponse);
    }

    /// Whether peer `to` has serving budget left (refilled first); counts
    /// a refusal.
    fn may_serve(&mut self, now: Time, to: u32) -> bool {
        let Some(b) = self.budget.get_mut(to as usize) else {
            return false;
        };
        let elapsed = now.0.saturating_sub(b.last.0);
        b.last = b.last.max(now);
        let refill = (elapsed as u128 * SERVE_BYTES_PER_SEC as u128 / 1000) as i64;
        b.tokens = b
            .tokens
            .saturating_add(refill)
            .min(SERVE_BURST_BYTES as i64);
        if b.tokens > 0 {
            return true;
        }
        self.metrics.serve_refused_budget += 1;
        tracing::debug!(peer = to, "serving budget spent; request not answered");
        false
    }

    fn spend(&mut self, to: u32, bytes: usize) {
        self.metrics.served_bytes += bytes as u64;
        if let Some(b) = self.budget.get_mut(to as usize) {
            b.tokens = b.tokens.saturating_sub(bytes as i64);
        }
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
            self.sends.push_back(Outbound {
                to: Dest::One(to),
                msg: wrap(chunk),
            });
        }
    }

    /// A hard fault by `from` (something no honest validator sends): counted,
    /// and [`PEER_STRIKES_MAX`] of them within [`PEER_STRIKE_WINDOW_MS`] put
    /// the peer in backoff (its messages ignored for [`PEER_BACKOFF_MS`]).
    fn penalize(&mut self, now: Time, from: u32, what: &str) {
        self.metrics.peer_penalties += 1;
        tracing::debug!(peer = from, what, "peer misbehaved");
        let Some(s) = self.strikes.get_mut(from as usize) else {
            return;
        };
        if now >= s.window_start.plus_ms(PEER_STRIKE_WINDOW_MS) {
            s.window_start = now;
            s.count = 0;
        }
        s.count += 1;
        if s.count >= PEER_STRIKES_MAX {
            s.count = 0;
            s.backoff_until = now.plus_ms(PEER_BACKOFF_MS);
            self.metrics.peer_backoffs += 1;
            tracing::warn!(
                peer = from,
                last = what,
                backoff_ms = PEER_BACKOFF_MS,
                "a peer sent {PEER_STRIKES_MAX} invalid messages within {PEER_STRIKE_WINDOW_MS} ms; ignoring it for a while"
            );
        }
    }

    // ----- the core's outputs and commits -----------------------------------

    fn drain_core(&mut self, now: Time) {
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
                        self.sends.push_back(Outbound {
                            to: Dest::All,
                            msg: PeerMessage::Block(b.encode()),
                        });
                    }
                }
                Output::RequestBlocks { from, refs } => {
                    if self.multi() && from != self.me {
                        self.sends.push_back(Outbound {
                            to: Dest::One(from.0),
                            msg: PeerMessage::BlockRequest(refs.iter().map(to_wire).collect()),
                        });
                    }
                }
                Output::Committed(sub) => self.on_committed(now, sub),
            }
        }
        self.return_dead_batches();
    }

    fn on_committed(&mut self, now: Time, sub: CommittedSubDag) {
        let index = sub.index + 1; // commit 0 is genesis
        let mut digests = Vec::new();
        let mut sources: Vec<Vec<ValidatorIndex>> = Vec::new();
        for b in &sub.blocks {
            for d in b.payload() {
                if b.author() == self.me {
                    self.own.remove(&d.0);
                }
                if self.included.insert(d.0) {
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
                self.remove_held(d);
            }
            return;
        }
        // For this commit, find each batch in memory, else in the store,
        // else fetch it from peers. (Earlier commits were located when they
        // were queued; their batches stay held until delivered.)
        for (d, src) in digests.iter().zip(&sources) {
            if self.held.contains_key(d) || self.wanted.contains_key(d) {
                continue;
            }
            // Wanted until held: a copy being checked (pushed, or read
            // back below) is not fetched meanwhile, and is fetched if its
            // check fails.
            self.want(now, *d, src.clone());
            if self.checking.contains_key(d) {
                continue;
            }
            if let Some(bytes) = self.store.batch(d) {
                // The store is a boundary: check it again (it was checked
                // when stored, so all of it should pass).
                let bytes: Arc<[u8]> = bytes.into();
                match self.decode_for_check(&bytes, None) {
                    Ok(txs) => self.check(*d, bytes, txs, CheckPurpose::Wanted { persist: false }),
                    Err(_) => self.insert_held(now, *d, bytes, Vec::new(), None),
                }
            }
        }
        self.commits.push_back(PendingCommit {
            index,
            timestamp_ms: sub.timestamp_ms,
            leader: sub.leader,
            digests,
            sources,
            committed_at: now,
        });
    }

    // ----- invariants -------------------------------------------------------

    /// The maps agree with one another (checked after every input when
    /// [`Self::with_invariant_checks`] is on).
    fn check_invariants(&self) {
        if !self.checked {
            return;
        }
        // Every parked block waits for exactly as many batches as point at
        // it, each of which is wanted or about to be held.
        let mut waits: HashMap<BlockRef, usize> = HashMap::new();
        for (d, refs) in &self.parked_on {
            for r in refs {
                *waits.entry(*r).or_default() += 1;
            }
            assert!(
                !self.held.contains_key(d),
                "a held batch still has parked blocks waiting for it"
            );
        }
        for (r, p) in &self.parked {
            assert!(p.missing > 0, "a parked block waits for nothing");
            assert_eq!(
                waits.get(r).copied().unwrap_or(0),
                p.missing,
                "parked count differs from the blocks waiting on it"
            );
        }
        assert!(self.parked.len() <= PARKED_BLOCKS_MAX);
        let mut by_author = vec![0; self.parked_by_author.len()];
        for r in self.parked.keys() {
            by_author[r.author.as_usize()] += 1;
        }
        assert_eq!(by_author, self.parked_by_author, "parked counts per author");
        let quota = parked_quota(self.committee.size());
        assert!(
            by_author.iter().all(|c| *c <= quota),
            "an author's parked share"
        );
        // Wanted batches are not held.
        for d in self.wanted.keys() {
            assert!(!self.held.contains_key(d), "a held batch is still wanted");
        }
        // Queued commits come in index order after what was delivered.
        let mut last = self.applied;
        for c in &self.commits {
            assert!(c.index > last, "commit queue out of order");
            last = c.index;
            assert_eq!(c.digests.len(), c.sources.len());
        }
        // Every batch a queued commit needs is held or wanted.
        for c in &self.commits {
            for d in &c.digests {
                assert!(
                    self.held.contains_key(d) || self.wanted.contains_key(d),
                    "a commit's batch is neither held nor fetched"
                );
            }
        }
        let mut by_peer = vec![0usize; self.held_by_peer.len()];
        for h in self.held.values() {
            if let Some(p) = h.pushed_by {
                by_peer[p as usize] += 1;
            }
        }
        assert_eq!(by_peer, self.held_by_peer, "held batches per peer");
        // Batches being checked: not held, one request each, and each
        // peer's pushed ones within its share beside its held ones.
        let mut checking_by_peer = vec![0usize; self.checking_by_peer.len()];
        for (d, c) in &self.checking {
            assert!(!self.held.contains_key(d), "a held batch is being checked");
            if let CheckPurpose::Pushed(p) = c.why {
                checking_by_peer[p as usize] += 1;
            }
        }
        assert_eq!(checking_by_peer, self.checking_by_peer, "checks per peer");
        assert!(
            self.checks.len() <= self.checking.len(),
            "a check request for nothing"
        );
        let share = (self.config.batches_held_max / self.committee.size()).max(1);
        for (h, c) in self.held_by_peer.iter().zip(&self.checking_by_peer) {
            assert!(c + h <= share, "a peer's pushed batches beyond its share");
        }
        self.included.check_invariants();
        self.rejected.check_invariants();
        assert!(self.sealing.len() < self.config.batch_txs_max.max(1));
        assert_eq!(self.sealing.is_empty(), self.sealing_since.is_none());
    }
}
