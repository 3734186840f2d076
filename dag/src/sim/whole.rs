//! The whole consensus node under the simulator: `n` [`ConsensusNode`]s
//! (with their cores) exchange real batches of real transaction bytes,
//! acknowledgements, blocks and fetches over the simulated [`Links`], store
//! through a simulated disk that loses what was not synced at a power
//! loss, and restart from it.
//!
//! Checkers, after every event:
//! - honest nodes deliver identical commits (leader, batches, transaction
//!   digests) at every index, contiguously from 1: commit sequences are
//!   prefixes of one another;
//! - no transaction is committed twice in the agreed sequence;
//! - every batch of a commit is durably stored, at its first delivery, by
//!   validators holding at least the validity threshold (f+1) of stake;
//! - no honest key signs two blocks for one round, across crashes and
//!   power losses;
//! - each machine's maps stay within their named bounds;
//! - at the end, every node that never failed delivered commits after the
//!   network became stable (liveness).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use velox_exec::{AccountId, Tx, TxBody, TxBuilder, TxDigest, VerifiedTx};
use velox_mempool::batch::BatchDigest;
use velox_net::peer::{Dest, PeerMessage};

use super::{Links, Scenario, SharedVerifier, SimConfig, SimReport, Violation};
use crate::block::{Block, BlockRef, UnsignedBlock};
use crate::core::{Core, ResumePoint};
use crate::node::join::{
    Join, Joined, JOIN_AHEAD_ROUNDS_MAX, JOIN_REQUEST_TIMEOUT_MS, JOIN_ROUNDS_PER_REQUEST,
    JOIN_SLOT_COPIES_MAX,
};
use crate::node::{
    dag_key, CheckRequest, ConsensusNode, Intent, NodeConfig, NodeStore, ReadyCommit, TxChecker,
    DAG_KEY_LEN, PARKED_BLOCKS_MAX,
};
use crate::types::{Committee, Digest, Epoch, Round, Time, ValidatorIndex};

/// A deliberate break of a rule, to show that a checker notices it (the
/// mutation tests). Never set outside tests.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// The disk writes the consensus log's blocks unsynced (flushed only
    /// every 500 ms): a power loss then loses blocks already sent.
    UnsyncedWrites,
    /// Peers' batches are never written (acknowledged all the same).
    LoseBatchWrites,
    /// One node's record of what it delivered loses a transaction.
    CorruptDelivery,
    /// A committed transaction is sealed again into a later batch.
    ResubmitCommitted,
    /// `clock-skew` with no limit on how far ahead a block may be stamped,
    /// and faulty nodes' clocks jumping a minute ahead.
    NoTimestampWindow,
}

/// Chain id of the simulated transactions.
const SIM_CHAIN_ID: u64 = 7;

/// The simulated disk of one node: what is synced survives a power loss;
/// what is only written survives a crash (SIGKILL: the OS still has it).
#[derive(Clone, Default)]
struct Disk(Arc<Mutex<DiskInner>>);

#[derive(Default)]
struct DiskInner {
    synced: Layer,
    unsynced: Layer,
}

#[derive(Default)]
struct Layer {
    blocks: BTreeMap<[u8; DAG_KEY_LEN], Vec<u8>>,
    batches: HashMap<BatchDigest, Vec<u8>>,
}

impl Layer {
    fn absorb(&mut self, other: Layer) {
        self.blocks.extend(other.blocks);
        self.batches.extend(other.batches);
    }
}

impl Disk {
    fn write(
        &self,
        blocks: Vec<([u8; DAG_KEY_LEN], Vec<u8>)>,
        batches: Vec<(BatchDigest, Arc<[u8]>)>,
        sync: bool,
    ) {
        let mut g = self.0.lock().expect("single-threaded");
        let layer = if sync { &mut g.synced } else { &mut g.unsynced };
        layer.blocks.extend(blocks);
        layer
            .batches
            .extend(batches.into_iter().map(|(d, b)| (d, b.to_vec())));
    }
    /// The OS writes back what it holds.
    fn flush(&self) {
        let mut g = self.0.lock().expect("single-threaded");
        let u = std::mem::take(&mut g.unsynced);
        g.synced.absorb(u);
    }
    fn power_loss(&self) {
        self.0.lock().expect("single-threaded").unsynced = Layer::default();
    }
    fn has_synced_batch(&self, d: &BatchDigest) -> bool {
        self.0
            .lock()
            .expect("single-threaded")
            .synced
            .batches
            .contains_key(d)
    }
    fn blocks(&self) -> Vec<Block> {
        let g = self.0.lock().expect("single-threaded");
        let mut all = g.synced.blocks.clone();
        all.extend(g.unsynced.blocks.iter().map(|(k, v)| (*k, v.clone())));
        all.values()
            .map(|b| Block::decode(b).expect("the disk holds what the node wrote"))
            .collect()
    }
}

impl NodeStore for Disk {
    fn batch(&self, d: &BatchDigest) -> Option<Vec<u8>> {
        let g = self.0.lock().expect("single-threaded");
        g.unsynced
            .batches
            .get(d)
            .or_else(|| g.synced.batches.get(d))
            .cloned()
    }
    fn block(&self, key: &[u8; DAG_KEY_LEN]) -> Option<Vec<u8>> {
        let g = self.0.lock().expect("single-threaded");
        g.unsynced
            .blocks
            .get(key)
            .or_else(|| g.synced.blocks.get(key))
            .cloned()
    }
    fn latest_block_by(&self, author: ValidatorIndex) -> Option<Vec<u8>> {
        let g = self.0.lock().expect("single-threaded");
        let a = author.0.to_be_bytes();
        let pick = |l: &Layer| {
            l.blocks
                .iter()
                .rev()
                .find(|(k, _)| k[8..12] == a)
                .map(|(k, v)| (*k, v.clone()))
        };
        match (pick(&g.synced), pick(&g.unsynced)) {
            (Some(x), Some(y)) => Some(if x.0 > y.0 { x.1 } else { y.1 }),
            (x, y) => x.or(y).map(|p| p.1),
        }
    }
    fn blocks_in_rounds(
        &self,
        from: u64,
        to: u64,
        each: &mut dyn FnMut(&[u8]),
    ) -> Result<(), String> {
        let g = self.0.lock().expect("single-threaded");
        let mut all: BTreeMap<_, _> = g.synced.blocks.iter().collect();
        all.extend(g.unsynced.blocks.iter());
        for (k, b) in all {
            let r = u64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
            if (from..=to).contains(&r) {
                each(b);
            }
        }
        Ok(())
    }
}

/// Trusts the transactions it built itself (their bytes are real; their
/// signatures are all zero). Undecodable bytes are refused.
struct SimChecker;

impl TxChecker for SimChecker {
    fn check(&self, txs: Vec<&[u8]>) -> Vec<Option<VerifiedTx>> {
        txs.into_iter()
            .map(|b| Tx::decode(b).ok().map(VerifiedTx::from_trusted))
            .collect()
    }
}

#[derive(Clone, Debug)]
enum Event {
    Deliver {
        from: u32,
        to: u32,
        msg: PeerMessage,
    },
    Timer {
        node: usize,
        incarnation: u32,
    },
    Txs {
        node: usize,
    },
    Fail {
        node: usize,
        power: bool,
    },
    Restart {
        node: usize,
    },
    Flush,
    /// `long-partition` heals: the gap is measured.
    Heal,
    /// `join-poison`: the node stops and its disk is lost (its commit
    /// records survive, as in a snapshot).
    LoseLog {
        node: usize,
    },
    /// `join-poison`: the node starts again and joins from its peers.
    Join {
        node: usize,
    },
    /// The driver's answer to a batch check (the node's verify tiles),
    /// some milliseconds after it was asked; lost if the node stopped.
    Checked {
        node: usize,
        incarnation: u32,
        request: CheckRequest,
    },
}

struct SimNode {
    machine: Option<ConsensusNode>,
    disk: Disk,
    key: SigningKey,
    faulty: bool,
    /// Byzantine (`fetch-flood`, `bad-fetch-response`): not checked.
    byzantine: bool,
    /// Last commit index executed (durable: the storage tile's commit).
    applied: u64,
    incarnation: u32,
    timer_at: Option<Time>,
    next_nonce: u64,
    /// Transactions given to the machine, by digest (to seal again what it
    /// returns).
    pending: HashMap<TxDigest, VerifiedTx>,
    commits_after_stable: u64,
    /// What it delivered, by index - 1: (leader, timestamp, batches); the
    /// commit records a snapshot keeps.
    delivered: Vec<(BlockRef, u64, Vec<BatchDigest>)>,
    /// `join-poison`: the join under way.
    joiner: Option<Join>,
}

/// One whole-node run (`scenario` is [`Scenario::Node`] or
/// [`Scenario::PowerLoss`]).
pub fn run(cfg: &SimConfig) -> SimReport {
    WholeSim::new(cfg).run()
}

struct WholeSim<'a> {
    cfg: &'a SimConfig,
    rng: ChaCha8Rng,
    committee: Arc<Committee>,
    node_config: NodeConfig,
    nodes: Vec<SimNode>,
    queue: BTreeMap<(Time, u64), Event>,
    seq: u64,
    now: Time,
    links: Links,
    stable_at: Time,
    end: Time,
    verifier: SharedVerifier,
    /// Agreed sequence: index - 1 -> (leader, batches, tx digests) digest.
    log: Vec<[u8; 32]>,
    committed_txs: HashSet<TxDigest>,
    /// (author, round) -> digest of blocks honest keys signed and sent.
    signed: HashMap<(ValidatorIndex, Round), [u8; 32]>,
    /// Per node: its wall clock's offset from simulated time (ms), and a
    /// jump (when, by how much) for faulty nodes in `clock-skew`.
    skew: Vec<i64>,
    jump: Vec<Option<(Time, i64)>>,
    /// Per node: the last commit timestamp it delivered.
    last_commit_ts: Vec<u64>,
    report: SimReport,
}

super::impl_simulation!(WholeSim<'_>, Event);

impl<'a> WholeSim<'a> {
    fn new(cfg: &'a SimConfig) -> WholeSim<'a> {
        let n = cfg.validators;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x05ee_d0f4_e0de);
        // Half the runs give unequal stakes (1..=3).
        let stakes: Vec<u64> = if rng.gen_bool(0.5) {
            (0..n).map(|_| rng.gen_range(1..=3)).collect()
        } else {
            vec![1; n]
        };
        let (committee, keys) = Committee::new_for_test_with_stakes(Epoch(0), &stakes, cfg.seed);
        let committee = Arc::new(committee);
        // Faulty nodes: a random subset whose stake stays below one third.
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut faulty = vec![false; n];
        let mut faulty_stake = 0;
        for &i in order.iter().take(cfg.byzantine) {
            if 3 * (faulty_stake + stakes[i]) < committee.total_stake() {
                faulty[i] = true;
                faulty_stake += stakes[i];
            }
        }
        let partition_chance = (cfg.scenario == Scenario::Node).then_some(0.3);
        let mut links = Links::random(&mut rng, n, 0.03, partition_chance);
        let mut heal_at = None;
        if cfg.scenario == Scenario::LongPartition {
            // The faulty set (below a third of the stake) is cut off: it
            // stays honest, and must catch up after the heal.
            let start = Time(rng.gen_range(300..800));
            let end = start.plus_ms(rng.gen_range(3_000..5_000));
            links = links.with_partition(start, end, &faulty);
            heal_at = Some(end);
        }
        let mut stable_at = links.healed_at();
        let mut core_config = cfg.core;
        if cfg.scenario == Scenario::LongPartition {
            core_config.gc_depth_rounds = 20;
        }
        if cfg.mutation == Some(Mutation::NoTimestampWindow) {
            core_config.timestamp_future_max_ms = u64::MAX / 4;
        }
        let node_config = NodeConfig {
            core: core_config,
            batch_txs_max: 8,
            batch_age_ms: 10,
            batch_resend_ms: 300,
            batch_fetch_retry_ms: 100,
            batches_held_max: 512,
            batch_available_timeout_ms: 3_000,
        };
        let mut sim = WholeSim {
            cfg,
            rng,
            committee,
            node_config,
            nodes: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            now: Time(0),
            links,
            stable_at,
            end: Time(0),
            verifier: SharedVerifier::default(),
            log: Vec::new(),
            committed_txs: HashSet::new(),
            signed: HashMap::new(),
            skew: vec![0; n],
            jump: vec![None; n],
            last_commit_ts: vec![0; n],
            report: SimReport::default(),
        };
        if cfg.scenario == Scenario::ClockSkew {
            for (i, is_faulty) in faulty.iter().enumerate() {
                sim.skew[i] = sim.rng.gen_range(-2_000..=2_000);
                if *is_faulty {
                    let at = Time(sim.rng.gen_range(200..2_000));
                    let mut by = sim.rng.gen_range(1_000..=3_000)
                        * if sim.rng.gen_bool(0.5) { 1 } else { -1 };
                    if cfg.mutation == Some(Mutation::NoTimestampWindow) {
                        by = 60_000;
                    }
                    sim.jump[i] = Some((at, by));
                }
            }
        }
        let byzantine_scenario = matches!(
            cfg.scenario,
            Scenario::FetchFlood | Scenario::BadFetchResponse | Scenario::JoinPoison
        );
        for (i, key) in keys.into_iter().enumerate() {
            sim.nodes.push(SimNode {
                machine: None,
                disk: Disk::default(),
                key,
                faulty: faulty[i],
                byzantine: faulty[i] && byzantine_scenario,
                applied: 0,
                incarnation: 0,
                timer_at: None,
                next_nonce: 0,
                pending: HashMap::new(),
                commits_after_stable: 0,
                delivered: Vec::new(),
                joiner: None,
            });
        }
        // Failures: one or two fail/restart cycles per faulty node.
        let power = cfg.scenario == Scenario::PowerLoss;
        let fails = !matches!(
            cfg.scenario,
            Scenario::ClockSkew
                | Scenario::FetchFlood
                | Scenario::BadFetchResponse
                | Scenario::LongPartition
                | Scenario::JoinPoison
        );
        for (i, _) in faulty.iter().enumerate().filter(|(_, f)| **f && fails) {
            let mut t = 0;
            for _ in 0..sim.rng.gen_range(1..=2) {
                let down = t + sim.rng.gen_range(100..1_500);
                let up = down + sim.rng.gen_range(50..1_000);
                sim.schedule(Time(down), Event::Fail { node: i, power });
                sim.schedule(Time(up), Event::Restart { node: i });
                t = up;
            }
            stable_at = stable_at.max(Time(t));
        }
        if cfg.scenario == Scenario::JoinPoison {
            // An honest validator loses its log and joins while the faulty
            // ones poison its requests.
            // The join's precondition (docs/storage.md, "Joining from a
            // snapshot"): the others move past the rounds it signed before
            // it lost its log, so the rounds its floor covers are all it
            // could have signed. So the validator is one the others reach a
            // quorum without, and it stays away long enough (the network
            // runs ~20 rounds a second here) for them to move on.
            let c = sim.committee.clone();
            let others_quorum = |i: usize| {
                c.total_stake() - c.stake(ValidatorIndex(i as u32)) >= c.quorum_threshold()
            };
            let honest: Vec<usize> = (0..n)
                .filter(|i| !faulty[*i] && others_quorum(*i))
                .collect();
            let node = *honest.choose(&mut sim.rng).expect("an honest node");
            let lose = Time(sim.rng.gen_range(1_000..2_000));
            let join = lose.plus_ms(sim.rng.gen_range(1_000..1_600));
            sim.schedule(lose, Event::LoseLog { node });
            sim.schedule(join, Event::Join { node });
            // The links lose messages, a part of an answer among them (a
            // QUIC stream would not, but a broken connection would): the
            // join then asks again after its request timeout, so liveness
            // is checked from one timeout after the join starts.
            stable_at = stable_at.max(join.plus_ms(JOIN_REQUEST_TIMEOUT_MS));
        }
        sim.stable_at = stable_at;
        sim.end = stable_at.max(Time(1_000)).plus_ms(cfg.liveness_window_ms);
        let faulty_behavior = match cfg.scenario {
            Scenario::FetchFlood => super::Behavior::FetchFlood,
            Scenario::BadFetchResponse => super::Behavior::BadFetchResponse,
            Scenario::JoinPoison => super::Behavior::JoinPoison,
            Scenario::LongPartition => super::Behavior::Honest,
            _ => super::Behavior::Crash,
        };
        sim.report.behaviors = faulty
            .iter()
            .map(|f| {
                if *f {
                    faulty_behavior
                } else {
                    super::Behavior::Honest
                }
            })
            .collect();
        if cfg.mutation == Some(Mutation::UnsyncedWrites) {
            sim.schedule(Time(500), Event::Flush);
        }
        if let Some(t) = heal_at {
            sim.schedule(t, Event::Heal);
        }
        for i in 0..n {
            sim.start_node(i);
            let t = Time(sim.rng.gen_range(10..100));
            sim.schedule(t, Event::Txs { node: i });
        }
        sim
    }

    /// Node `i`'s wall clock now (simulated time, its offset, its jump).
    fn wall(&self, i: usize) -> u64 {
        let mut w = self.now.0 as i64 + self.skew[i] + 1_700_000_000_000;
        if let Some((at, by)) = self.jump[i] {
            if self.now >= at {
                w += by;
            }
        }
        w.max(0) as u64
    }

    /// Node `i`'s machine (if it runs), its wall clock set.
    fn machine(&mut self, i: usize) -> Option<&mut ConsensusNode> {
        let wall = self.wall(i);
        let m = self.nodes[i].machine.as_mut()?;
        m.set_wall_clock(wall);
        Some(m)
    }

    fn schedule(&mut self, at: Time, e: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), e);
    }

    /// Starts (or restarts) node `i` from what its disk holds: the core
    /// replays every stored block and decides the commits again; those up
    /// to `applied` are skipped.
    fn start_node(&mut self, i: usize) {
        let wall = self.wall(i);
        let node = &mut self.nodes[i];
        node.incarnation += 1;
        node.timer_at = None;
        let core = Core::recover(
            self.node_config.core,
            self.committee.clone(),
            ValidatorIndex(i as u32),
            node.key.clone(),
            Box::new(self.verifier.clone()),
            node.disk.blocks(),
            self.now,
            Some(wall),
        );
        let mut machine = self.machine_on(i, core);
        machine.start(self.now);
        self.nodes[i].machine = Some(machine);
        // The pool was memory: what it held is gone with the process (its
        // clients submit again; execution's nonce rule refuses a second
        // copy of anything already committed).
        self.nodes[i].pending.clear();
        self.drive(i);
    }

    /// Node `i`'s machine around `core`, on its disk, skipping the commits
    /// it already executed.
    fn machine_on(&self, i: usize, core: Core) -> ConsensusNode {
        let node = &self.nodes[i];
        ConsensusNode::new(
            core,
            self.node_config,
            Box::new(node.disk.clone()),
            Box::new(self.verifier.clone()),
            node.applied,
            (i as u64) << 40 | u64::from(node.incarnation) << 32,
        )
        .with_invariant_checks(true)
    }

    fn run(mut self) -> SimReport {
        super::run_events(&mut self);
        self.report
    }

    fn check_liveness(&mut self) {
        let counts = self
            .nodes
            .iter()
            .enumerate()
            // Cut-off validators are honest: they must catch up too.
            .filter(|(_, n)| !n.faulty || self.cfg.scenario == Scenario::LongPartition)
            .map(|(i, n)| (i, n.commits_after_stable));
        self.report.violation = super::liveness_violation(
            counts,
            "commits delivered",
            self.stable_at,
            self.end,
            self.log.len(),
        );
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Deliver { from, to, msg } => {
                let i = to as usize;
                let now = self.now;
                if let Some(j) = self.nodes[i].joiner.as_mut() {
                    j.handle_peer(now, from, msg);
                    self.drive_join(i);
                    return;
                }
                if self.nodes[i].byzantine && self.cfg.scenario == Scenario::JoinPoison {
                    if let PeerMessage::RoundsRequest {
                        from_round,
                        to_round,
                    } = msg
                    {
                        self.poison_join(i, from, from_round, to_round);
                        return;
                    }
                }
                let Some(m) = self.machine(i) else {
                    return;
                };
                m.handle_peer(now, from, msg);
                self.drive(i);
            }
            Event::Timer { node, incarnation } => {
                let n = &mut self.nodes[node];
                if n.incarnation != incarnation || n.timer_at != Some(self.now) {
                    return;
                }
                n.timer_at = None;
                let now = self.now;
                if let Some(j) = self.nodes[node].joiner.as_mut() {
                    j.handle_timeout(now);
                    self.drive_join(node);
                    return;
                }
                if let Some(m) = self.machine(node) {
                    m.handle_timeout(now);
                }
                self.drive(node);
            }
            Event::Txs { node } => {
                let k = self.rng.gen_range(0..6);
                let n = &mut self.nodes[node];
                let mut txs = Vec::new();
                for _ in 0..k {
                    let t = sim_tx(node, n.next_nonce);
                    n.next_nonce += 1;
                    n.pending.insert(t.digest(), t.clone());
                    txs.push(t);
                }
                let now = self.now;
                if let Some(m) = self.machine(node) {
                    m.handle_local_txs(now, txs);
                }
                self.drive(node);
                if self.nodes[node].byzantine && self.cfg.scenario == Scenario::FetchFlood {
                    self.flood_requests(node);
                }
                let t = now.plus_ms(self.rng.gen_range(20..80));
                self.schedule(t, Event::Txs { node });
            }
            Event::Fail { node, power } => {
                let n = &mut self.nodes[node];
                n.machine = None;
                n.timer_at = None;
                if power {
                    n.disk.power_loss();
                } else {
                    n.disk.flush();
                }
            }
            Event::Restart { node } => self.start_node(node),
            Event::Checked {
                node,
                incarnation,
                request,
            } => {
                if self.nodes[node].incarnation != incarnation {
                    return;
                }
                let txs = request.answer(&SimChecker);
                let now = self.now;
                if let Some(m) = self.machine(node) {
                    m.handle_checked(now, request.digest, txs);
                    self.drive(node);
                }
            }
            Event::LoseLog { node } => {
                let n = &mut self.nodes[node];
                n.machine = None;
                n.timer_at = None;
                n.disk = Disk::default();
            }
            Event::Join { node } => self.start_join(node),
            Event::Heal => {
                let top = |cut: bool| {
                    self.nodes
                        .iter()
                        .filter(|n| n.faulty == cut)
                        .filter_map(|n| n.machine.as_ref())
                        .map(|m| m.core().dag().highest_round().0)
                        .max()
                        .unwrap_or(0)
                };
                self.report.partition_gap_rounds = Some(top(false).saturating_sub(top(true)));
            }
            Event::Flush => {
                for n in &self.nodes {
                    n.disk.flush();
                }
                let t = self.now.plus_ms(500);
                self.schedule(t, Event::Flush);
            }
        }
    }

    /// `join-poison`: node `i` starts again with an empty log and joins
    /// from the rounds of its last commit's GC round (a node that had not
    /// committed yet just starts from genesis).
    fn start_join(&mut self, i: usize) {
        let Some((last, _, _)) = self.nodes[i].delivered.last().cloned() else {
            self.start_node(i);
            return;
        };
        let gc = last
            .round
            .0
            .saturating_sub(self.node_config.core.gc_depth_rounds);
        let node = &mut self.nodes[i];
        node.incarnation += 1;
        node.timer_at = None;
        node.pending.clear();
        node.joiner = Some(Join::new(
            self.now,
            self.committee.clone(),
            ValidatorIndex(i as u32),
            Box::new(self.verifier.clone()),
            (gc, last.round.0),
            Vec::new(),
        ));
        self.drive_join(i);
    }

    /// Sends what node `i`'s join asks, bounds what it holds, and resumes
    /// the node when it is done.
    fn drive_join(&mut self, i: usize) {
        let n = self.nodes.len() as u32;
        let Some(j) = self.nodes[i].joiner.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        while let Some(o) = j.poll_send() {
            out.push(o);
        }
        let done = j.poll_done();
        let held = j.blocks_held();
        let timeout = j.poll_timeout();
        for o in out {
            match o.to {
                Dest::One(to) => self.send(i as u32, to, o.msg),
                Dest::All => {
                    for to in (0..n).filter(|t| *t != i as u32) {
                        self.send(i as u32, to, o.msg.clone());
                    }
                }
            }
        }
        // What peers can make a joining node hold: two blocks per sender,
        // author and round, over the rounds honest nodes reached plus the
        // window.
        let top = self
            .nodes
            .iter()
            .filter(|n| !n.byzantine)
            .filter_map(|n| n.machine.as_ref())
            .map(|m| m.core().dag().highest_round().0)
            .max()
            .unwrap_or(0);
        let bound = (n * n) as usize
            * JOIN_SLOT_COPIES_MAX
            * (top + JOIN_ROUNDS_PER_REQUEST + JOIN_AHEAD_ROUNDS_MAX + 1) as usize;
        if held > bound {
            self.report.violation = Some(Violation::Bound(format!(
                "joining node {i} holds {held} blocks (honest nodes reached round {top}; bound {bound})"
            )));
            return;
        }
        match done {
            Some(Ok(joined)) => {
                self.report.joins += 1;
                self.finish_join(i, joined)
            }
            Some(Err(e)) => {
                self.report.violation =
                    Some(Violation::Liveness(format!("node {i} could not join: {e}")));
            }
            None => {
                if let Some(t) = timeout {
                    self.arm_timer(i, t);
                }
            }
        }
    }

    /// The join's blocks go to the disk (synced, with the floor), and the
    /// node resumes after its last commit, as the node's driver does.
    fn finish_join(&mut self, i: usize, joined: Joined) {
        let wall = self.wall(i);
        let gc_depth = self.node_config.core.gc_depth_rounds;
        let node = &mut self.nodes[i];
        node.joiner = None;
        let entries = joined
            .blocks
            .iter()
            .map(|b| (dag_key(&b.reference()), b.encode()))
            .collect();
        node.disk.write(entries, Vec::new(), true);
        let (last, ts, _) = node
            .delivered
            .last()
            .cloned()
            .expect("joins after a commit");
        let point = ResumePoint {
            next_commit_index: node.applied,
            last_leader: last,
            last_timestamp_ms: ts,
            recent_leaders: node
                .delivered
                .iter()
                .map(|d| d.0)
                .filter(|l| l.round.0 >= last.round.0.saturating_sub(gc_depth))
                .collect(),
            signed_round_floor: Round(joined.highest),
        };
        let core = match Core::recover_from(
            self.node_config.core,
            self.committee.clone(),
            ValidatorIndex(i as u32),
            node.key.clone(),
            Box::new(self.verifier.clone()),
            joined.blocks,
            &point,
            self.now,
            Some(wall),
        ) {
            Ok(core) => core,
            Err(e) => {
                self.report.violation = Some(Violation::Liveness(format!(
                    "node {i} joined but cannot resume: {e}"
                )));
                return;
            }
        };
        let mut machine = self.machine_on(i, core);
        let node = &mut self.nodes[i];
        machine.seed_included(node.delivered.iter().flat_map(|d| d.2.iter().copied()));
        machine.start(self.now);
        node.machine = Some(machine);
        self.drive(i);
    }

    /// `join-poison`: Byzantine node `i` answers a round request with
    /// validly signed blocks of its own that nobody can complete (absurd
    /// rounds far above the range, extra copies of slots inside it) and a
    /// head round that is far too low or absurdly high.
    fn poison_join(&mut self, i: usize, to: u32, from_round: u64, to_round: u64) {
        self.report.adversary_actions += 1;
        let n = self.nodes.len() as u32;
        let head = match self.rng.gen_range(0..3) {
            0 => from_round,
            1 => u64::MAX / 2,
            _ => to_round + 1,
        };
        let mut blocks = Vec::new();
        let mut rounds: Vec<u64> = (0..24)
            .map(|k| to_round + 1_000 + k * self.rng.gen_range(1..1_000))
            .collect();
        for _ in 0..4 {
            let r = self.rng.gen_range(from_round.max(2)..=to_round);
            rounds.extend([r, r, r]);
        }
        for r in rounds {
            let u = UnsignedBlock {
                epoch: Epoch(0),
                author: ValidatorIndex(i as u32),
                round: Round(r),
                parents: (0..n)
                    .map(|a| BlockRef {
                        round: Round(r - 1),
                        author: ValidatorIndex(a),
                        digest: Digest(self.rng.gen()),
                    })
                    .collect(),
                payload: Vec::new(),
                timestamp_ms: self.wall(i),
            };
            blocks.push(u.sign(&self.nodes[i].key).encode());
        }
        self.send(
            i as u32,
            to,
            PeerMessage::RoundsResponse {
                from_round,
                to_round,
                head_round: head,
                done: true,
                parts: 1,
                blocks,
            },
        );
    }

    fn send(&mut self, from: u32, to: u32, msg: PeerMessage) {
        if from == to {
            return;
        }
        if let Some(at) = self
            .links
            .deliver_at(&mut self.rng, self.now, from as usize, to as usize)
        {
            self.schedule(at, Event::Deliver { from, to, msg });
        }
    }

    /// Carries out every intent of node `i`, takes its commits, checks, and
    /// re-arms its timer.
    fn drive(&mut self, i: usize) {
        let n = self.nodes.len() as u32;
        loop {
            let Some(m) = self.nodes[i].machine.as_mut() else {
                return;
            };
            let Some(intent) = m.poll_intent() else { break };
            match intent {
                Intent::Persist {
                    blocks,
                    mut batches,
                    sync,
                    ..
                } => {
                    if self.cfg.mutation == Some(Mutation::LoseBatchWrites) {
                        batches.retain(|(d, _)| {
                            self.nodes[i]
                                .machine
                                .as_ref()
                                .is_some_and(|m| m.is_own_batch(d))
                        });
                    }
                    if self.cfg.mutation == Some(Mutation::UnsyncedWrites) {
                        self.nodes[i].disk.write(blocks, Vec::new(), false);
                        self.nodes[i].disk.write(Vec::new(), batches, sync);
                    } else {
                        self.nodes[i].disk.write(blocks, batches, sync);
                    }
                }
                Intent::Send(mut o) => {
                    if let PeerMessage::Block(bytes) = &o.msg {
                        self.check_signed(i, bytes);
                        if self.report.violation.is_some() {
                            return;
                        }
                    }
                    if self.nodes[i].byzantine && self.cfg.scenario == Scenario::BadFetchResponse {
                        self.corrupt_answer(&mut o.msg);
                    }
                    match o.to {
                        Dest::One(to) => self.send(i as u32, to, o.msg),
                        Dest::All => {
                            for to in 0..n {
                                if to != i as u32 {
                                    self.send(i as u32, to, o.msg.clone());
                                }
                            }
                        }
                    }
                }
                Intent::Check(request) => {
                    // Verify tiles answer in 0-10 ms, in any order.
                    let at = self.now.plus_ms(self.rng.gen_range(0..=10));
                    let incarnation = self.nodes[i].incarnation;
                    self.schedule(
                        at,
                        Event::Checked {
                            node: i,
                            incarnation,
                            request,
                        },
                    );
                }
                Intent::ReturnToPool(txs) => {
                    let node = &mut self.nodes[i];
                    let again: Vec<VerifiedTx> = txs
                        .iter()
                        .filter_map(|(_, d)| node.pending.get(d).cloned())
                        .collect();
                    let now = self.now;
                    if let Some(m) = node.machine.as_mut() {
                        m.handle_local_txs(now, again);
                    }
                }
            }
        }
        while let Some(c) = self.nodes[i].machine.as_mut().and_then(|m| m.poll_commit()) {
            self.on_commit(i, c);
            if self.report.violation.is_some() {
                return;
            }
        }
        self.check_bounds(i);
        if self.report.violation.is_some() {
            return;
        }
        let now = self.now;
        let m = self.nodes[i].machine.as_ref().expect("alive");
        let t = m.poll_timeout(now);
        self.arm_timer(i, t);
    }

    /// `fetch-flood`: asks every peer for every block it knows (with
    /// ancestors), 64 batches and every round, each time it seals.
    fn flood_requests(&mut self, i: usize) {
        let Some(m) = self.nodes[i].machine.as_ref() else {
            return;
        };
        let dag = m.core().dag();
        let top = dag.highest_round().0;
        let refs: Vec<_> = (top.saturating_sub(60)..=top)
            .rev()
            .flat_map(|r| {
                dag.round_blocks(Round(r))
                    .map(|b| crate::node::to_wire(&b.reference()))
            })
            .take(crate::core::REQUEST_REFS_MAX)
            .collect();
        let mut digests: Vec<[u8; 32]> = (0..32).map(|_| self.rng.gen()).collect();
        digests.extend(
            self.nodes[i]
                .disk
                .0
                .lock()
                .expect("single-threaded")
                .synced
                .batches
                .keys()
                .take(32)
                .copied(),
        );
        for to in 0..self.nodes.len() as u32 {
            if to as usize == i {
                continue;
            }
            self.send(i as u32, to, PeerMessage::BlockRequest(refs.clone()));
            self.send(i as u32, to, PeerMessage::BatchRequest(digests.clone()));
            self.send(
                i as u32,
                to,
                PeerMessage::RoundsRequest {
                    from_round: 1,
                    to_round: u64::MAX,
                },
            );
        }
    }

    /// `bad-fetch-response`: a Byzantine node's answers are corrupted:
    /// flipped bytes, truncated blocks, batches swapped for other bytes.
    fn corrupt_answer(&mut self, msg: &mut PeerMessage) {
        let items = match msg {
            PeerMessage::BlockResponse(items) | PeerMessage::BatchResponse(items) => items,
            PeerMessage::RoundsResponse { blocks, .. } => blocks,
            _ => return,
        };
        for b in items.iter_mut() {
            if b.is_empty() {
                continue;
            }
            match self.rng.gen_range(0..3) {
                0 => {
                    let k = self.rng.gen_range(0..b.len());
                    b[k] ^= 0x5a;
                }
                1 => b.truncate(self.rng.gen_range(0..b.len())),
                _ => b.reverse(),
            }
        }
    }

    /// No honest key signs two blocks for one round.
    fn check_signed(&mut self, i: usize, bytes: &[u8]) {
        if self.nodes[i].byzantine {
            return;
        }
        let Ok(b) = Block::decode(bytes) else { return };
        if b.author().as_usize() != i {
            return;
        }
        let key = (b.author(), b.round());
        match self.signed.get(&key) {
            Some(d) if *d != b.digest().0 => {
                self.report.violation = Some(Violation::OwnEquivocation(format!(
                    "honest node {i} sent two different blocks for round {}",
                    b.round()
                )));
            }
            Some(_) => {}
            None => {
                self.signed.insert(key, b.digest().0);
            }
        }
    }

    fn on_commit(&mut self, i: usize, mut c: ReadyCommit) {
        if self.nodes[i].byzantine {
            return;
        }
        if self.cfg.mutation == Some(Mutation::CorruptDelivery) && i == 0 && !c.txs.is_empty() {
            c.txs.pop();
        }
        // The production window, against the clocks of nodes that never
        // failed (a mutation test widens the run's window).
        let window = crate::core::CoreConfig::default().timestamp_future_max_ms;
        let top = (0..self.nodes.len())
            .filter(|j| !self.nodes[*j].faulty)
            .map(|j| self.wall(j))
            .max()
            .unwrap_or(0)
            + window;
        let node = &mut self.nodes[i];
        if c.index != node.applied + 1 {
            self.report.violation = Some(Violation::Safety(format!(
                "node {i} delivered commit {} after {}",
                c.index, node.applied
            )));
            return;
        }
        node.applied = c.index;
        node.delivered
            .push((c.leader, c.timestamp_ms, c.batches.clone()));
        for t in &c.txs {
            node.pending.remove(&t.digest());
        }
        // Commit timestamps never go back, and never run ahead of every
        // wall clock by more than the window a block may be stamped ahead.
        if c.timestamp_ms < self.last_commit_ts[i] || c.timestamp_ms > top {
            self.report.violation = Some(Violation::Safety(format!(
                "node {i} delivered commit {} stamped {} (previous {}, wall clocks up to {})",
                c.index,
                c.timestamp_ms,
                self.last_commit_ts[i],
                top - window
            )));
            return;
        }
        self.last_commit_ts[i] = c.timestamp_ms;
        if self.now > self.stable_at {
            node.commits_after_stable += 1;
        }
        let mut h = blake3::Hasher::new();
        h.update(&c.leader.digest.0);
        h.update(&(c.batches.len() as u64).to_le_bytes());
        for d in &c.batches {
            h.update(d);
        }
        for t in &c.txs {
            h.update(&t.digest().0);
        }
        let entry = *h.finalize().as_bytes();
        let idx = (c.index - 1) as usize;
        if idx < self.log.len() {
            if self.log[idx] != entry {
                self.report.violation = Some(Violation::Safety(format!(
                    "node {i} delivered commit {} (leader {}@r{}, {} batches, {} txs) unlike another honest node",
                    c.index,
                    c.leader.author,
                    c.leader.round,
                    c.batches.len(),
                    c.txs.len()
                )));
            }
            return;
        }
        self.log.push(entry);
        if let Some(m) = self.nodes[i].machine.as_ref() {
            let rounds = m
                .core()
                .threshold_round()
                .0
                .saturating_sub(c.leader.round.0);
            self.report.latency_rounds.push(rounds);
        }
        // The delivering node's wall clock against the leader's stamp
        // (skewed clocks skew this too).
        let wall = self.wall(i);
        self.report
            .latency_ms
            .push(wall.saturating_sub(c.timestamp_ms));
        for t in &c.txs {
            if !self.committed_txs.insert(t.digest()) {
                self.report.violation = Some(Violation::Safety(format!(
                    "transaction {} committed twice (again at commit {})",
                    hex::encode(&t.digest().0[..8]),
                    c.index
                )));
                return;
            }
        }
        // Availability: f+1 stake holds each batch durably.
        let threshold = self.committee.validity_threshold();
        for d in &c.batches {
            let stake: u64 = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.disk.has_synced_batch(d))
                .map(|(j, _)| self.committee.stake(ValidatorIndex(j as u32)))
                .sum();
            if stake < threshold {
                self.report.violation = Some(Violation::Safety(format!(
                    "commit {} includes batch {} that validators of only {stake} stake \
                     (threshold {threshold}) hold durably",
                    c.index,
                    hex::encode(&d[..8])
                )));
                return;
            }
        }
        if self.cfg.mutation == Some(Mutation::ResubmitCommitted) {
            if let Some(t) = c.txs.first().cloned() {
                let j = (i + 1) % self.nodes.len();
                let now = self.now;
                if let Some(m) = self.nodes[j].machine.as_mut() {
                    m.handle_local_txs(now, vec![t]);
                }
            }
        }
    }

    /// Each machine's maps stay within their named bounds.
    fn check_bounds(&mut self, i: usize) {
        if self.nodes[i].byzantine {
            return;
        }
        let Some(m) = self.nodes[i].machine.as_ref() else {
            return;
        };
        let g = m.gauges();
        let c = &self.node_config;
        // Batches peers pushed are bounded (each peer by its share); own,
        // fetched and read-back ones by what commits and parked blocks need.
        let problem = if g.blocks_parked > PARKED_BLOCKS_MAX {
            Some(format!("{} parked blocks", g.blocks_parked))
        } else if g.batches_held_pushed > c.batches_held_max {
            Some(format!(
                "{} pushed batches held (bound {})",
                g.batches_held_pushed, c.batches_held_max
            ))
        } else if g.sealing_txs >= c.batch_txs_max {
            Some(format!(
                "{} transactions waiting to be sealed",
                g.sealing_txs
            ))
        } else if m.core().pending_len() > c.core.pending_blocks_max {
            Some(format!("{} pending blocks", m.core().pending_len()))
        } else {
            None
        };
        if let Some(p) = problem {
            self.report.violation = Some(Violation::Bound(format!(
                "node {i} exceeds a memory bound: {p}"
            )));
        }
    }
}

/// A transfer from the sender of node `node` (its account id is the node
/// index in the first bytes), with an all-zero signature.
fn sim_tx(node: usize, nonce: u64) -> VerifiedTx {
    let mut sender = [0x5a; 32];
    sender[..8].copy_from_slice(&(node as u64).to_le_bytes());
    let b = TxBuilder {
        chain_id: SIM_CHAIN_ID,
        nonce,
        fee: 1,
        body: TxBody::Transfer {
            to: AccountId([0x77; 32]),
            amount: 1 + nonce % 5,
        },
    };
    let bytes = b.encode_with_zero_signature(AccountId(sender));
    VerifiedTx::from_trusted(Tx::decode(&bytes).expect("a transfer encodes validly"))
}
