//! Deterministic discrete-event simulator (STYLE §2).
//!
//! `n` real [`Core`]s run against virtual time and a simulated network driven
//! by one seeded ChaCha RNG: per-link latency ranges (so messages reorder),
//! loss, partitions that heal, honest nodes that crash and restart from
//! their persisted blocks, and Byzantine nodes that equivocate, withhold
//! blocks, send invalid signatures or invalid parents, vote selectively or
//! split their twins between two halves, and a network that targets leaders.
//!
//! Checkers: after every event, every honest commit is compared with the
//! agreed sequence (the committed sequences of honest nodes must be prefixes
//! of one another), and no honest key may sign two blocks for one round. At
//! the end, every honest node must have committed after the network became
//! stable (liveness). A run is a pure function of [`SimConfig`]: rerunning a
//! seed reproduces it exactly.

pub mod cli;
pub mod whole;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::block::{Block, BlockRef, Ed25519Verifier, SignatureVerifier, UnsignedBlock};
use crate::commit::{CommitRuleConfig, CommittedSubDag};
use crate::core::{Core, CoreConfig, Output};
use crate::types::{Committee, Digest, Epoch, Round, StakeAggregator, Time, ValidatorIndex};

/// A named fault mix.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Faulty nodes get random behaviours; random loss; maybe a partition.
    Default,
    /// Faulty nodes are honest but crash and restart from persisted blocks.
    Crash,
    /// A partition (possibly leaving no side with a quorum) that heals.
    Partition,
    /// Faulty nodes send different blocks for one round to different peers.
    Equivocate,
    /// Faulty nodes send their blocks to at most one peer and serve no fetch.
    Withhold,
    /// Faulty nodes send blocks with broken signatures and garbage bytes.
    BadSig,
    /// Faulty nodes send blocks with invalid parent sets.
    BadParents,
    /// Faulty nodes reference only some leaders (vote selectively).
    SelectiveVote,
    /// Faulty nodes also send validly signed blocks of rounds far ahead
    /// (100 to 100,000 rounds), with parents nobody has: honest nodes must
    /// refuse them before verifying and keep no state for them.
    FarFuture,
    /// The whole consensus node ([`crate::ConsensusNode`]) with real
    /// batches: loss, reordering, maybe a partition; faulty nodes crash
    /// (SIGKILL: their written data survives) and restart from their disk.
    Node,
    /// The whole node; faulty nodes lose power: what they wrote without
    /// syncing is lost, then they restart from their disk.
    PowerLoss,
    /// The whole node; every wall clock is off by up to ±2 s, and faulty
    /// nodes' clocks jump (by ±1–3 s) once. Timers run on the simulated
    /// monotonic clock; only block timestamps see the wall clocks.
    ClockSkew,
    /// The whole node; faulty nodes are Byzantine and, besides following
    /// the protocol, ask every peer for every block they know (with
    /// ancestors), 64 batches and every round, 12–50 times a second.
    FetchFlood,
    /// The whole node; faulty nodes are Byzantine and answer every fetch
    /// (blocks, batches, rounds) with corrupted bytes.
    BadFetchResponse,
    /// The whole node, a short GC depth (20 rounds): a minority (at most f)
    /// is cut off for 3–5 s, far longer than the GC depth, then the
    /// network heals and it must catch up (the others serve the rounds it
    /// missed from their logs).
    LongPartition,
    /// Faulty nodes are Byzantine and, for every round they sign (the
    /// rounds they lead included), send one block to a fixed half of the
    /// peers and a twin with a different parent set (another quorum of the
    /// previous round, or other payload where no other quorum exists) to
    /// the other half, consistently, so each half builds on its own copy.
    SplitEquivocate,
    /// No Byzantine node: the network is the adversary. Until it relents
    /// (1.5–3 s), a block sent by the leader of its round is dropped or
    /// delayed by 200–1,200 ms, and every block on its way to the next
    /// round's leader is delayed too, so leaders are the nodes cut off.
    LeaderTarget,
    /// The whole node; an honest validator loses its consensus log (as
    /// when restored from a snapshot) and joins from its peers' blocks
    /// ([`crate::Join`]) while the faulty nodes, Byzantine, answer its
    /// round requests with blocks of absurd rounds, invalid copies of a
    /// slot and a head round that is far too low or absurdly high.
    JoinPoison,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 18] = [
        Scenario::Default,
        Scenario::Crash,
        Scenario::Partition,
        Scenario::Equivocate,
        Scenario::Withhold,
        Scenario::BadSig,
        Scenario::BadParents,
        Scenario::SelectiveVote,
        Scenario::FarFuture,
        Scenario::Node,
        Scenario::PowerLoss,
        Scenario::ClockSkew,
        Scenario::FetchFlood,
        Scenario::BadFetchResponse,
        Scenario::LongPartition,
        Scenario::SplitEquivocate,
        Scenario::LeaderTarget,
        Scenario::JoinPoison,
    ];
    /// CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Default => "default",
            Scenario::Crash => "crash",
            Scenario::Partition => "partition",
            Scenario::Equivocate => "equivocate",
            Scenario::Withhold => "withhold",
            Scenario::BadSig => "bad-sig",
            Scenario::BadParents => "bad-parents",
            Scenario::SelectiveVote => "selective-vote",
            Scenario::FarFuture => "far-future",
            Scenario::Node => "node",
            Scenario::PowerLoss => "power-loss",
            Scenario::ClockSkew => "clock-skew",
            Scenario::FetchFlood => "fetch-flood",
            Scenario::BadFetchResponse => "bad-fetch-response",
            Scenario::LongPartition => "long-partition",
            Scenario::SplitEquivocate => "split-equivocate",
            Scenario::LeaderTarget => "leader-target",
            Scenario::JoinPoison => "join-poison",
        }
    }
    /// Whether it runs the whole node ([`whole`]) rather than the core.
    pub fn is_whole_node(self) -> bool {
        matches!(
            self,
            Scenario::Node
                | Scenario::PowerLoss
                | Scenario::ClockSkew
                | Scenario::FetchFlood
                | Scenario::BadFetchResponse
                | Scenario::LongPartition
                | Scenario::JoinPoison
        )
    }
    /// From a CLI name.
    pub fn from_name(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How one node behaves.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Follows the protocol.
    Honest,
    /// Honest, but crashes and restarts (counts as faulty for liveness).
    Crash,
    /// Byzantine: equivocates.
    Equivocate,
    /// Byzantine: withholds.
    Withhold,
    /// Byzantine: bad signatures.
    BadSig,
    /// Byzantine: bad parents.
    BadParents,
    /// Byzantine: selective votes.
    SelectiveVote,
    /// Byzantine: blocks of rounds far ahead.
    FarFuture,
    /// Byzantine (whole node): floods peers with fetch requests.
    FetchFlood,
    /// Byzantine (whole node): answers fetches with corrupted bytes.
    BadFetchResponse,
    /// Byzantine: a block to one half of the peers, a twin with other
    /// parents to the other half.
    SplitEquivocate,
    /// Byzantine (whole node): poisons a joining validator's round
    /// requests.
    JoinPoison,
}

impl Behavior {
    fn is_byzantine(self) -> bool {
        !matches!(self, Behavior::Honest | Behavior::Crash)
    }
}

/// One simulation run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Committee size.
    pub validators: usize,
    /// Faulty nodes (<= f).
    pub byzantine: usize,
    /// RNG seed: the whole run is a function of this config.
    pub seed: u64,
    /// Fault mix.
    pub scenario: Scenario,
    /// Simulated time after the network is stable (all partitions healed,
    /// all crashed nodes restarted) during which every honest node must
    /// commit.
    pub liveness_window_ms: u64,
    /// Core configuration for every node (commit rule included).
    pub core: CoreConfig,
    /// A rule broken on purpose (mutation tests of the whole-node
    /// checkers); `None` in every real run.
    pub mutation: Option<whole::Mutation>,
}

impl SimConfig {
    /// Defaults for a run.
    pub fn new(validators: usize, byzantine: usize, seed: u64, scenario: Scenario) -> SimConfig {
        SimConfig {
            validators,
            byzantine,
            seed,
            scenario,
            liveness_window_ms: 3_000,
            core: CoreConfig {
                leader_timeout_ms: 200,
                gc_depth_rounds: 150,
                ..CoreConfig::default()
            },
            mutation: None,
        }
    }
    /// With a (possibly broken, test-only) commit rule.
    pub fn with_commit_rule(mut self, rule: CommitRuleConfig) -> SimConfig {
        self.core.commit_rule = rule;
        self
    }
    /// The command that reruns exactly this run.
    pub fn repro_command(&self) -> String {
        format!(
            "velox sim --validators {} --byzantine {} --seeds {}..{} --scenario {}   \
             (or: VELOX_SIM_REPRO='{} {} {} {}' cargo test --release -p velox-dag --test sim repro -- --ignored --nocapture)",
            self.validators,
            self.byzantine,
            self.seed,
            self.seed + 1,
            self.scenario,
            self.validators,
            self.byzantine,
            self.seed,
            self.scenario
        )
    }
}

/// A checker failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Two honest nodes committed different sub-DAGs at one index, or a node
    /// skipped an index.
    Safety(String),
    /// An honest key signed two blocks for one round.
    OwnEquivocation(String),
    /// An honest node did not commit after the network became stable.
    Liveness(String),
    /// An honest node's state exceeds a named bound (memory).
    Bound(String),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Safety(s) => write!(f, "SAFETY: {s}"),
            Violation::OwnEquivocation(s) => write!(f, "OWN-EQUIVOCATION: {s}"),
            Violation::Liveness(s) => write!(f, "LIVENESS: {s}"),
            Violation::Bound(s) => write!(f, "BOUND: {s}"),
        }
    }
}

/// Outcome of one run.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// Length of the agreed commit sequence.
    pub commits: u64,
    /// Commit latency in rounds (node's threshold round - leader round), one
    /// sample per honest node per commit.
    pub latency_rounds: Vec<u64>,
    /// Commit latency in simulated ms (commit time - leader timestamp).
    pub latency_ms: Vec<u64>,
    /// Events processed.
    pub events: u64,
    /// Simulated time at the end.
    pub end_ms: u64,
    /// Faulty nodes and what they did.
    pub behaviors: Vec<Behavior>,
    /// Equivocators seen by honest nodes (union).
    pub equivocators_seen: Vec<ValidatorIndex>,
    /// First failure, if any (the run stops there).
    pub violation: Option<Violation>,
    /// `long-partition`: how many rounds the connected side was ahead of
    /// the cut-off side when the partition healed.
    pub partition_gap_rounds: Option<u64>,
    /// What the scenario's adversary did: `split-equivocate`, twins sent
    /// with another parent set; `leader-target`, block messages dropped or
    /// delayed; `join-poison`, poisoned answers to round requests.
    pub adversary_actions: u64,
    /// `join-poison`: joins that completed (the node then resumed).
    pub joins: u64,
}

/// Verifies each distinct (key, digest, signature) once per run and shares
/// the answer between the simulated cores: the check is the real one, only
/// its repetition on n nodes is saved.
#[derive(Clone, Default)]
struct SharedVerifier {
    cache: Arc<Mutex<HashMap<SignatureKey, bool>>>,
}

/// (digest, public key, signature).
type SignatureKey = (Digest, [u8; 32], [u8; 64]);

impl SignatureVerifier for SharedVerifier {
    fn verify(&self, key: &VerifyingKey, digest: &Digest, signature: &[u8; 64]) -> bool {
        let k = (*digest, key.to_bytes(), *signature);
        let mut cache = self.cache.lock().expect("single-threaded");
        *cache
            .entry(k)
            .or_insert_with(|| Ed25519Verifier.verify(key, digest, signature))
    }
}

#[derive(Clone, Debug)]
enum Msg {
    Block(Vec<u8>),
    Request(Vec<BlockRef>),
    Response(Vec<Vec<u8>>),
}

#[derive(Clone, Debug)]
enum Event {
    Deliver {
        from: ValidatorIndex,
        to: ValidatorIndex,
        msg: Msg,
    },
    Timer {
        node: usize,
        incarnation: u32,
    },
    Payload {
        node: usize,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
}

struct Node {
    core: Option<Core>,
    behavior: Behavior,
    key: SigningKey,
    /// What the driver persisted (survives crashes).
    persisted: Vec<Block>,
    /// Commit count in the current incarnation (indices must be contiguous).
    next_commit_index: u64,
    /// Highest index ever committed (latency is sampled once per index).
    first_time_commits: u64,
    commits_after_stable: u64,
    timer_at: Option<Time>,
    incarnation: u32,
    /// Equivocating twin per round (Byzantine equivocators stay consistent).
    twins: BTreeMap<Round, Block>,
}

struct Partition {
    start: Time,
    end: Time,
    side: Vec<u8>,
}

/// The simulated network's links: per-link latency ranges (so messages
/// reorder), random loss, and an optional partition that heals.
pub(crate) struct Links {
    latency: Vec<Vec<(u64, u64)>>,
    loss: f64,
    partition: Option<Partition>,
}

impl Links {
    /// Random links for `n` nodes: latency 1..=40 ms plus up to 60 ms of
    /// jitter per link, loss below `loss_max`, and with `partition_chance`
    /// a partition between 200 and 1,500 ms that lasts 300..2,000 ms.
    pub(crate) fn random(
        rng: &mut ChaCha8Rng,
        n: usize,
        loss_max: f64,
        partition_chance: Option<f64>,
    ) -> Links {
        let latency = (0..n)
            .map(|_| {
                (0..n)
                    .map(|_| {
                        let lo = rng.gen_range(1..=40);
                        (lo, lo + rng.gen_range(0..=60))
                    })
                    .collect()
            })
            .collect();
        let loss = rng.gen_range(0.0..loss_max);
        let partitioned = partition_chance.is_some_and(|p| rng.gen_bool(p));
        let partition = partitioned.then(|| {
            let start = Time(rng.gen_range(200..1_500));
            let end = start.plus_ms(rng.gen_range(300..2_000));
            let side = (0..n).map(|_| rng.gen_range(0..2u8)).collect();
            Partition { start, end, side }
        });
        Links {
            latency,
            loss,
            partition,
        }
    }

    /// Cuts `side` (true) off from the rest from `start` to `end`.
    pub(crate) fn with_partition(mut self, start: Time, end: Time, side: &[bool]) -> Links {
        self.partition = Some(Partition {
            start,
            end,
            side: side.iter().map(|s| u8::from(*s)).collect(),
        });
        self
    }

    /// When the partition (if any) heals.
    pub(crate) fn healed_at(&self) -> Time {
        self.partition.as_ref().map_or(Time(0), |p| p.end)
    }

    /// The delivery time of a message sent now from `from` to `to`, or
    /// `None` when it is lost (partitioned or dropped).
    pub(crate) fn deliver_at(
        &self,
        rng: &mut ChaCha8Rng,
        now: Time,
        from: usize,
        to: usize,
    ) -> Option<Time> {
        if let Some(p) = &self.partition {
            if now >= p.start && now < p.end && p.side[from] != p.side[to] {
                return None;
            }
        }
        if rng.gen_bool(self.loss) {
            return None;
        }
        let (lo, hi) = self.latency[from][to];
        Some(now.plus_ms(rng.gen_range(lo..=hi)))
    }
}

/// What the event loop needs of a simulator (the core's and the whole
/// node's).
pub(crate) trait Simulation {
    /// A scheduled event.
    type Event;
    /// The next event due at or before the run's end.
    fn next_due(&mut self) -> Option<(Time, Self::Event)>;
    /// Advances virtual time.
    fn set_now(&mut self, t: Time);
    /// Carries out one event (checkers included).
    fn handle_event(&mut self, e: Self::Event);
    /// The end-of-run liveness check.
    fn check_end(&mut self);
    /// The report being built.
    fn report(&mut self) -> &mut SimReport;
    /// Length of the agreed sequence.
    fn agreed(&self) -> usize;
}

/// Implements [`Simulation`] for a simulator with the fields `queue`,
/// `now`, `end`, `report` and `log` (the agreed sequence) and the methods
/// `handle(event)` and `check_liveness()`: the core's and the whole node's.
macro_rules! impl_simulation {
    ($sim:ty, $event:ty) => {
        impl $crate::sim::Simulation for $sim {
            type Event = $event;
            fn next_due(&mut self) -> Option<($crate::types::Time, $event)> {
                $crate::sim::next_event(&mut self.queue, self.end)
            }
            fn set_now(&mut self, t: $crate::types::Time) {
                self.now = t;
            }
            fn handle_event(&mut self, e: $event) {
                self.handle(e);
            }
            fn check_end(&mut self) {
                self.check_liveness();
            }
            fn report(&mut self) -> &mut $crate::sim::SimReport {
                &mut self.report
            }
            fn agreed(&self) -> usize {
                self.log.len()
            }
        }

        impl $sim {
            /// Schedules node `i`'s timer for `t` (at least 1 ms ahead)
            /// unless one is already due sooner; an early one that finds
            /// nothing due re-arms. (`Event` is the invoking module's.)
            fn arm_timer(&mut self, i: usize, t: $crate::types::Time) {
                let t = t.max(self.now.plus_ms(1));
                let node = &mut self.nodes[i];
                if node.timer_at.is_none_or(|cur| t < cur) {
                    node.timer_at = Some(t);
                    let incarnation = node.incarnation;
                    self.schedule(
                        t,
                        Event::Timer {
                            node: i,
                            incarnation,
                        },
                    );
                }
            }
        }
    };
}
pub(crate) use impl_simulation;

/// Runs events in time order until the end or the first violation, then
/// the liveness check; fills the report's counts.
pub(crate) fn run_events<S: Simulation>(sim: &mut S) {
    let mut last = Time(0);
    while let Some((t, e)) = sim.next_due() {
        last = t;
        sim.set_now(t);
        sim.report().events += 1;
        sim.handle_event(e);
        if sim.report().violation.is_some() {
            break;
        }
    }
    sim.report().end_ms = last.0;
    if sim.report().violation.is_none() {
        sim.check_end();
    }
    let agreed = sim.agreed() as u64;
    sim.report().commits = agreed;
}

/// The next event of a simulator's queue (ordered by time, then by the
/// order scheduled), unless it is due after `end`.
pub(crate) fn next_event<E>(queue: &mut BTreeMap<(Time, u64), E>, end: Time) -> Option<(Time, E)> {
    let ((t, _), e) = queue.pop_first()?;
    (t <= end).then_some((t, e))
}

/// Liveness: every node given as (index, commits after the network became
/// stable) committed at least twice after `stable_at`.
pub(crate) fn liveness_violation(
    counts: impl Iterator<Item = (usize, u64)>,
    what: &str,
    stable_at: Time,
    end: Time,
    agreed: usize,
) -> Option<Violation> {
    for (i, c) in counts {
        if c < 2 {
            return Some(Violation::Liveness(format!(
                "node {i}: {c} {what} after the network became stable at {} ms \
                 (run ended at {} ms; agreed sequence length {agreed})",
                stable_at.0, end.0
            )));
        }
    }
    None
}

/// Runs one simulation.
pub fn run(cfg: &SimConfig) -> SimReport {
    if cfg.scenario.is_whole_node() {
        return whole::run(cfg);
    }
    Sim::new(cfg).run()
}

struct Sim<'a> {
    cfg: &'a SimConfig,
    rng: ChaCha8Rng,
    committee: Arc<Committee>,
    nodes: Vec<Node>,
    queue: BTreeMap<(Time, u64), Event>,
    seq: u64,
    now: Time,
    links: Links,
    /// `split-equivocate`: which half each node is in.
    split: Vec<bool>,
    /// `leader-target`: until when leaders are targeted.
    target_until: Time,
    stable_at: Time,
    end: Time,
    verifier: SharedVerifier,
    /// Agreed sequence: (leader, digest of ordered block refs, timestamp).
    log: Vec<(BlockRef, Digest, u64)>,
    /// (author, round) -> digest for honest signers.
    signed: HashMap<(ValidatorIndex, Round), Digest>,
    report: SimReport,
}

impl_simulation!(Sim<'_>, Event);

impl<'a> Sim<'a> {
    fn new(cfg: &'a SimConfig) -> Sim<'a> {
        let n = cfg.validators;
        assert!(n >= 1, "need validators");
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let (committee, keys) = Committee::new_for_test(Epoch(0), n, cfg.seed);
        let committee = Arc::new(committee);
        let scenario = cfg.scenario;
        // Faulty nodes: a random subset.
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let mut behaviors = vec![Behavior::Honest; n];
        let kinds = [
            Behavior::Crash,
            Behavior::Equivocate,
            Behavior::Withhold,
            Behavior::BadSig,
            Behavior::BadParents,
            Behavior::SelectiveVote,
        ];
        for &i in order.iter().take(cfg.byzantine) {
            behaviors[i] = match scenario {
                Scenario::Default | Scenario::Partition => *kinds.choose(&mut rng).expect("kinds"),
                Scenario::Crash => Behavior::Crash,
                Scenario::Equivocate => Behavior::Equivocate,
                Scenario::Withhold => Behavior::Withhold,
                Scenario::BadSig => Behavior::BadSig,
                Scenario::BadParents => Behavior::BadParents,
                Scenario::SelectiveVote => Behavior::SelectiveVote,
                Scenario::FarFuture => Behavior::FarFuture,
                Scenario::Node
                | Scenario::PowerLoss
                | Scenario::ClockSkew
                | Scenario::LongPartition => Behavior::Crash,
                Scenario::FetchFlood => Behavior::FetchFlood,
                Scenario::BadFetchResponse => Behavior::BadFetchResponse,
                Scenario::SplitEquivocate => Behavior::SplitEquivocate,
                Scenario::JoinPoison => Behavior::JoinPoison,
                // The network is the adversary; every node is honest.
                Scenario::LeaderTarget => Behavior::Honest,
            };
        }
        let loss_max = match scenario {
            Scenario::Default => 0.05,
            _ => 0.02,
        };
        let partition_chance = match scenario {
            Scenario::Partition => Some(1.0),
            Scenario::Default => Some(0.3),
            _ => None,
        };
        let links = Links::random(&mut rng, n, loss_max, partition_chance);
        let mut stable_at = links.healed_at();
        // split-equivocate: the two halves the equivocators split.
        let split: Vec<bool> = {
            let mut side: Vec<bool> = (0..n).map(|k| k % 2 == 1).collect();
            side.shuffle(&mut rng);
            side
        };
        let target_until = if scenario == Scenario::LeaderTarget {
            Time(rng.gen_range(1_500..3_000))
        } else {
            Time(0)
        };
        stable_at = stable_at.max(target_until);
        let verifier = SharedVerifier::default();
        let mut sim = Sim {
            cfg,
            rng,
            committee: committee.clone(),
            nodes: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            now: Time(0),
            links,
            split,
            target_until,
            stable_at,
            end: Time(0),
            verifier,
            log: Vec::new(),
            signed: HashMap::new(),
            report: SimReport {
                behaviors: behaviors.clone(),
                ..SimReport::default()
            },
        };
        for (i, key) in keys.into_iter().enumerate() {
            sim.nodes.push(Node {
                core: None,
                behavior: behaviors[i],
                key,
                persisted: Vec::new(),
                next_commit_index: 0,
                first_time_commits: 0,
                commits_after_stable: 0,
                timer_at: None,
                incarnation: 0,
                twins: BTreeMap::new(),
            });
        }
        // Crashes: one or two crash/restart cycles per crashing node.
        for (i, b) in behaviors.iter().enumerate() {
            if *b != Behavior::Crash {
                continue;
            }
            let mut t = 0;
            for _ in 0..sim.rng.gen_range(1..=2) {
                let down = t + sim.rng.gen_range(100..1_500);
                let up = down + sim.rng.gen_range(50..1_500);
                sim.schedule(Time(down), Event::Crash { node: i });
                sim.schedule(Time(up), Event::Restart { node: i });
                t = up;
            }
            stable_at = stable_at.max(Time(t));
        }
        sim.stable_at = stable_at;
        sim.end = stable_at.max(Time(1_000)).plus_ms(cfg.liveness_window_ms);
        for i in 0..n {
            sim.start_node(i, false);
            let t = Time(sim.rng.gen_range(10..100));
            sim.schedule(t, Event::Payload { node: i });
        }
        sim
    }

    fn schedule(&mut self, at: Time, e: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), e);
    }

    fn start_node(&mut self, i: usize, recover: bool) {
        let node = &mut self.nodes[i];
        node.incarnation += 1;
        node.timer_at = None;
        node.next_commit_index = 0;
        let me = ValidatorIndex(i as u32);
        let mut core = if recover {
            Core::recover(
                self.cfg.core,
                self.committee.clone(),
                me,
                node.key.clone(),
                Box::new(self.verifier.clone()),
                node.persisted.clone(),
                self.now,
                None,
            )
        } else {
            Core::new(
                self.cfg.core,
                self.committee.clone(),
                me,
                node.key.clone(),
                Box::new(self.verifier.clone()),
                self.now,
            )
        };
        if node.behavior == Behavior::SelectiveVote {
            // Never vote for leaders with an odd index (keeps the quorum).
            core.set_parent_filter(Box::new(move |round, committee, parents| {
                let prev = round.prev();
                let leader = committee.leader(prev);
                if leader.0 % 2 == 0 || leader == me {
                    return;
                }
                let mut keep = StakeAggregator::default();
                for p in parents.iter() {
                    if p.round == prev && p.author != leader {
                        keep.add(p.author, committee);
                    }
                }
                if keep.stake() >= committee.quorum_threshold() {
                    parents.retain(|p| !(p.round == prev && p.author == leader));
                }
            }));
        }
        node.core = Some(core);
        self.drive(i);
    }

    fn run(mut self) -> SimReport {
        run_events(&mut self);
        let mut eq: Vec<ValidatorIndex> = self
            .nodes
            .iter()
            .filter(|n| !n.behavior.is_byzantine())
            .filter_map(|n| n.core.as_ref())
            .flat_map(|c| c.equivocators().iter().copied())
            .collect();
        eq.sort();
        eq.dedup();
        self.report.equivocators_seen = eq;
        self.report
    }

    /// No honest node buffers a block of a round beyond what honest nodes
    /// reached plus the core's `future_rounds_max` (one sender alone cannot
    /// make it keep blocks from the far future), nor more than
    /// `pending_blocks_max` blocks.
    fn check_pending_window(&mut self, i: usize) {
        if self.nodes[i].behavior.is_byzantine() {
            return;
        }
        let Some(core) = self.nodes[i].core.as_ref() else {
            return;
        };
        let top = self
            .nodes
            .iter()
            .filter(|n| !n.behavior.is_byzantine())
            .filter_map(|n| n.core.as_ref())
            .map(|c| c.dag().highest_round().0)
            .max()
            .unwrap_or(0);
        // The production window, whatever the run's config (a mutation test
        // widens the config's).
        let window = CoreConfig::default().future_rounds_max;
        let bound = top + 1 + window;
        if let Some(r) = core.pending_highest_round() {
            if r.0 > bound {
                self.report.violation = Some(Violation::Bound(format!(
                    "honest node {i} buffers a block of round {} (honest nodes reached {top}, window {window})",
                    r.0
                )));
            }
        }
        if core.pending_len() > self.cfg.core.pending_blocks_max {
            self.report.violation = Some(Violation::Bound(format!(
                "honest node {i} buffers {} blocks",
                core.pending_len()
            )));
        }
    }

    fn check_liveness(&mut self) {
        let counts = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.behavior.is_byzantine())
            .map(|(i, n)| (i, n.commits_after_stable));
        self.report.violation = liveness_violation(
            counts,
            "committed leaders",
            self.stable_at,
            self.end,
            self.log.len(),
        );
    }

    fn handle(&mut self, e: Event) {
        match e {
            Event::Deliver { from, to, msg } => {
                let i = to.as_usize();
                if self.nodes[i].core.is_none() {
                    return;
                }
                match msg {
                    Msg::Block(bytes) => {
                        let now = self.now;
                        let core = self.nodes[i].core.as_mut().expect("alive");
                        let _ = core.handle_block_bytes(now, &bytes, from);
                    }
                    Msg::Response(blocks) => {
                        let now = self.now;
                        let core = self.nodes[i].core.as_mut().expect("alive");
                        for bytes in blocks {
                            let _ = core.handle_block_bytes(now, &bytes, from);
                        }
                    }
                    Msg::Request(refs) => {
                        if self.nodes[i].behavior == Behavior::Withhold {
                            return;
                        }
                        let core = self.nodes[i].core.as_ref().expect("alive");
                        let blocks: Vec<Vec<u8>> = core
                            .handle_block_request(&refs)
                            .iter()
                            .map(|b| b.encode())
                            .collect();
                        if !blocks.is_empty() {
                            self.send(to, from, Msg::Response(blocks));
                        }
                    }
                }
                self.drive(i);
                self.check_pending_window(i);
            }
            Event::Timer { node, incarnation } => {
                let n = &mut self.nodes[node];
                if n.incarnation != incarnation || n.timer_at != Some(self.now) {
                    return;
                }
                n.timer_at = None;
                let now = self.now;
                if let Some(core) = n.core.as_mut() {
                    core.handle_timeout(now);
                }
                self.drive(node);
            }
            Event::Payload { node } => {
                let now = self.now;
                let k = self.rng.gen_range(0..4);
                let digests: Vec<Digest> = (0..k).map(|_| Digest(self.rng.gen())).collect();
                if let Some(core) = self.nodes[node].core.as_mut() {
                    core.handle_payload(now, &digests);
                }
                self.drive(node);
                let t = now.plus_ms(self.rng.gen_range(50..150));
                self.schedule(t, Event::Payload { node });
            }
            Event::Crash { node } => {
                self.nodes[node].core = None;
                self.nodes[node].timer_at = None;
            }
            Event::Restart { node } => self.start_node(node, true),
        }
    }

    fn send(&mut self, from: ValidatorIndex, to: ValidatorIndex, msg: Msg) {
        if from == to {
            return;
        }
        let Some(mut at) =
            self.links
                .deliver_at(&mut self.rng, self.now, from.as_usize(), to.as_usize())
        else {
            return;
        };
        if self.now < self.target_until {
            match self.leader_delay(to, &msg) {
                Some(0) => {}
                Some(extra) => at = at.plus_ms(extra),
                None => return,
            }
        }
        self.schedule(at, Event::Deliver { from, to, msg });
    }

    /// `leader-target`: extra delay for a message (`None`: dropped). A
    /// block sent by its round's leader is dropped or held back; a block
    /// on its way to the next round's leader is held back, so that leader
    /// proposes late.
    fn leader_delay(&mut self, to: ValidatorIndex, msg: &Msg) -> Option<u64> {
        let Msg::Block(bytes) = msg else {
            return Some(0);
        };
        let Ok(b) = Block::decode(bytes) else {
            return Some(0);
        };
        let leads = self.committee.leader(b.round()) == b.author();
        let to_next_leader = self.committee.leader(b.round().next()) == to;
        if leads || to_next_leader {
            self.report.adversary_actions += 1;
        }
        if leads {
            if self.rng.gen_bool(0.5) {
                return None;
            }
            return Some(self.rng.gen_range(200..=1_200));
        }
        if to_next_leader {
            return Some(self.rng.gen_range(200..=1_200));
        }
        Some(0)
    }

    /// Carries out every output of node `i`, then re-arms its timer.
    fn drive(&mut self, i: usize) {
        let me = ValidatorIndex(i as u32);
        loop {
            let Some(core) = self.nodes[i].core.as_mut() else {
                return;
            };
            let Some(out) = core.poll_output() else { break };
            match out {
                Output::PersistBlock(b) => {
                    if b.author() == me && !self.nodes[i].behavior.is_byzantine() {
                        let key = (me, b.round());
                        match self.signed.get(&key) {
                            Some(d) if *d != b.digest() => {
                                self.report.violation = Some(Violation::OwnEquivocation(format!(
                                    "honest node {i} signed two blocks for round {}",
                                    b.round()
                                )));
                                return;
                            }
                            _ => {
                                self.signed.insert(key, b.digest());
                            }
                        }
                    }
                    self.nodes[i].persisted.push((*b).clone());
                }
                Output::BroadcastBlock(b) => self.broadcast(i, &b),
                Output::RequestBlocks { from, refs } => self.send(me, from, Msg::Request(refs)),
                Output::Committed(sub) => {
                    self.on_commit(i, sub);
                    if self.report.violation.is_some() {
                        return;
                    }
                }
            }
        }
        let core = self.nodes[i].core.as_ref().expect("alive");
        if let Some(t) = core.poll_timeout() {
            self.arm_timer(i, t);
        }
    }

    fn broadcast(&mut self, i: usize, b: &Arc<Block>) {
        let me = ValidatorIndex(i as u32);
        let n = self.nodes.len();
        let behavior = self.nodes[i].behavior;
        let own = b.author() == me;
        let peers: Vec<ValidatorIndex> = (0..n as u32)
            .map(ValidatorIndex)
            .filter(|p| *p != me)
            .collect();
        if !own || !behavior.is_byzantine() {
            let bytes = b.encode();
            for p in peers {
                self.send(me, p, Msg::Block(bytes.clone()));
            }
            return;
        }
        match behavior {
            Behavior::Equivocate => {
                let twin = match self.nodes[i].twins.get(&b.round()) {
                    Some(t) => t.clone(),
                    None => {
                        let mut u = b.unsigned().clone();
                        u.payload.push(Digest(self.rng.gen()));
                        let t = u.sign(&self.nodes[i].key);
                        self.nodes[i].twins.insert(b.round(), t.clone());
                        t
                    }
                };
                let (a, t) = (b.encode(), twin.encode());
                for p in peers {
                    let m = if self.rng.gen_bool(0.5) {
                        a.clone()
                    } else {
                        t.clone()
                    };
                    self.send(me, p, Msg::Block(m));
                }
            }
            Behavior::Withhold => {
                if self.rng.gen_bool(0.5) {
                    let p = *peers.choose(&mut self.rng).expect("peers");
                    self.send(me, p, Msg::Block(b.encode()));
                }
            }
            Behavior::BadSig => {
                for p in peers {
                    let m = match self.rng.gen_range(0..4) {
                        0 => b.encode(),
                        1 => {
                            let mut sig = *b.signature();
                            sig[self.rng.gen_range(0..64)] ^= 1 << self.rng.gen_range(0..8);
                            b.unsigned().clone().with_signature(sig).encode()
                        }
                        2 => {
                            let mut bytes = b.encode();
                            let k = self.rng.gen_range(0..bytes.len());
                            bytes[k] ^= 0xff;
                            bytes
                        }
                        _ => {
                            let mut bytes = b.encode();
                            bytes.truncate(self.rng.gen_range(0..bytes.len()));
                            bytes
                        }
                    };
                    self.send(me, p, Msg::Block(m));
                }
            }
            Behavior::BadParents => {
                let bad = self.bad_parents(b, &self.nodes[i].key.clone());
                let bytes = bad.encode();
                for p in peers {
                    self.send(me, p, Msg::Block(bytes.clone()));
                }
            }
            Behavior::FarFuture => {
                let bytes = b.encode();
                for p in &peers {
                    self.send(me, *p, Msg::Block(bytes.clone()));
                }
                // Three blocks from the far future per own block, to
                // random peers.
                for _ in 0..3 {
                    let ahead = self.rng.gen_range(100..100_000u64);
                    let mut u: UnsignedBlock = b.unsigned().clone();
                    u.round = Round(b.round().0 + ahead);
                    let prev = Round(u.round.0 - 1);
                    u.parents = (0..n as u32)
                        .map(|a| BlockRef {
                            round: prev,
                            author: ValidatorIndex(a),
                            digest: Digest(self.rng.gen()),
                        })
                        .collect();
                    let far = u.sign(&self.nodes[i].key);
                    let p = *peers.choose(&mut self.rng).expect("peers");
                    self.send(me, p, Msg::Block(far.encode()));
                }
            }
            Behavior::SplitEquivocate => {
                let twin = match self.nodes[i].twins.get(&b.round()) {
                    Some(t) => t.clone(),
                    None => {
                        let t = self.split_twin(i, b);
                        self.nodes[i].twins.insert(b.round(), t.clone());
                        t
                    }
                };
                let (a, t) = (b.encode(), twin.encode());
                for p in peers {
                    let m = if self.split[p.as_usize()] {
                        t.clone()
                    } else {
                        a.clone()
                    };
                    self.send(me, p, Msg::Block(m));
                }
            }
            Behavior::SelectiveVote
            | Behavior::Honest
            | Behavior::Crash
            | Behavior::FetchFlood
            | Behavior::BadFetchResponse
            | Behavior::JoinPoison => {
                let bytes = b.encode();
                for p in peers {
                    self.send(me, p, Msg::Block(bytes.clone()));
                }
            }
        }
    }

    /// A validly signed twin of own block `b` with another parent set: its
    /// own previous block and a random quorum of the previous round that
    /// node `i` holds (older parents kept where their author is not in
    /// it). Where no other quorum exists, the payload differs instead.
    fn split_twin(&mut self, i: usize, b: &Block) -> Block {
        let me = b.author();
        let mut u: UnsignedBlock = b.unsigned().clone();
        let prev = b.round().prev();
        let core = self.nodes[i].core.as_ref().expect("broadcasting");
        let mut others: Vec<BlockRef> = core
            .dag()
            .round_blocks(prev)
            .map(|x| x.reference())
            .filter(|r| r.author != me)
            .collect();
        others.shuffle(&mut self.rng);
        if let Some(own) = b.parents().iter().find(|p| p.author == me).copied() {
            let mut quorum = StakeAggregator::default();
            let mut chosen = vec![own];
            if own.round == prev {
                quorum.add(me, &self.committee);
            }
            for r in others {
                if quorum.stake() >= self.committee.quorum_threshold() {
                    break;
                }
                quorum.add(r.author, &self.committee);
                chosen.push(r);
            }
            if quorum.stake() >= self.committee.quorum_threshold() {
                for p in b.parents() {
                    if p.round < prev && !chosen.iter().any(|c| c.author == p.author) {
                        chosen.push(*p);
                    }
                }
                let mut original = b.parents().to_vec();
                original.sort_by_key(|r| (r.round, r.author));
                chosen.sort_by_key(|r| (r.round, r.author));
                if chosen == original {
                    // The only quorum it holds: reach back to an older
                    // block of an author the set leaves out instead.
                    let older = (prev.0.saturating_sub(3).max(1)..prev.0)
                        .rev()
                        .flat_map(|r| core.dag().round_blocks(Round(r)))
                        .map(|x| x.reference())
                        .find(|r| !chosen.iter().any(|c| c.author == r.author));
                    if let Some(r) = older {
                        chosen.push(r);
                        chosen.sort_by_key(|r| (r.round, r.author));
                    }
                }
                if chosen != original {
                    self.report.adversary_actions += 1;
                    u.parents = chosen;
                    return u.sign(&self.nodes[i].key);
                }
            }
        }
        u.payload.push(Digest(self.rng.gen()));
        u.sign(&self.nodes[i].key)
    }

    fn bad_parents(&mut self, b: &Block, key: &SigningKey) -> Block {
        let mut u: UnsignedBlock = b.unsigned().clone();
        if u.round == Round(1) {
            u.parents.push(BlockRef {
                round: Round(0),
                author: ValidatorIndex(0),
                digest: Digest::default(),
            });
            return u.sign(key);
        }
        match self.rng.gen_range(0..5) {
            // Below the quorum of the previous round.
            0 => u.parents.truncate(1),
            // Two parents by one author.
            1 => {
                let p = u.parents[0];
                u.parents.push(BlockRef {
                    digest: Digest(self.rng.gen()),
                    ..p
                });
            }
            // A parent from the block's own round.
            2 => {
                let p = u.parents[0];
                u.parents[0] = BlockRef {
                    round: u.round,
                    ..p
                };
            }
            // A parent that does not exist (statelessly valid: it is
            // buffered, fetched in vain and garbage collected).
            3 => {
                if let Some(p) = u.parents.iter_mut().find(|p| p.author != u.author) {
                    p.digest = Digest(self.rng.gen());
                }
            }
            // Own previous block left out.
            _ => {
                let me = u.author;
                u.parents.retain(|p| p.author != me);
            }
        }
        u.sign(key)
    }

    fn on_commit(&mut self, i: usize, sub: CommittedSubDag) {
        let node = &mut self.nodes[i];
        if node.behavior.is_byzantine() {
            return;
        }
        if sub.index != node.next_commit_index {
            self.report.violation = Some(Violation::Safety(format!(
                "node {i} emitted commit index {} where {} was expected",
                sub.index, node.next_commit_index
            )));
            return;
        }
        node.next_commit_index += 1;
        let mut h = blake3::Hasher::new();
        for b in &sub.blocks {
            h.update(&b.digest().0);
        }
        let entry = (
            sub.leader,
            Digest(*h.finalize().as_bytes()),
            sub.timestamp_ms,
        );
        let idx = sub.index as usize;
        if idx < self.log.len() {
            if self.log[idx] != entry {
                let (l, _, ts) = self.log[idx];
                self.report.violation = Some(Violation::Safety(format!(
                    "node {i} committed leader {}@r{}#{} ({} blocks, ts {}) at index {idx}, \
                     but another honest node committed leader {}@r{}#{} (ts {ts}) there",
                    sub.leader.author,
                    sub.leader.round,
                    sub.leader.digest,
                    sub.blocks.len(),
                    sub.timestamp_ms,
                    l.author,
                    l.round,
                    l.digest
                )));
                return;
            }
        } else {
            self.log.push(entry);
        }
        if sub.index >= node.first_time_commits {
            node.first_time_commits = sub.index + 1;
            if self.now > self.stable_at {
                node.commits_after_stable += 1;
            }
            let core = node.core.as_ref().expect("alive");
            let rounds = core.threshold_round().0.saturating_sub(sub.leader.round.0);
            let leader_ts = sub.blocks.last().map_or(0, |b| b.timestamp_ms());
            self.report.latency_rounds.push(rounds);
            self.report
                .latency_ms
                .push(self.now.0.saturating_sub(leader_ts));
        }
    }
}
