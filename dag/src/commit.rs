//! Commit rule (Mysticeti-C over an uncertified DAG) and linearizer.
//!
//! For the leader slot of round `r` (one leader per round):
//!
//! * a block `V` of round `r+1` **votes** for leader block `L` if `L` is
//!   among `V`'s parents; it **blames** the slot if it references no block of
//!   the slot;
//! * a block `C` of round `r+2` is a **certificate** for `L` if its parents
//!   include votes for `L` from 2f+1 stake;
//! * **direct commit**: certificates for `L` from 2f+1 stake of authors;
//! * **direct skip**: blames from 2f+1 stake of authors;
//! * otherwise **indirect**: take the first leader of a round `>= r+3` that
//!   is not skipped (the anchor). If it is undecided, so is `r`. If it is
//!   committed, `L` is committed iff the anchor's causal history holds a
//!   certificate for `L`, and skipped otherwise.
//!
//! Leaders are decided from the highest round down (so later decisions are
//! available as anchors) and emitted from the lowest undecided round up,
//! stopping at the first undecided slot.
//!
//! Safety sketch: a direct commit means 2f+1 certificates at `r+2`; any block
//! of round `>= r+3` has 2f+1 parents at `r+2` (transitively), so its history
//! contains a certificate, hence every anchor commits `L` indirectly. A skip
//! by blame and a certificate need 2f+1 blamers and 2f+1 voters, which share
//! an honest validator that would have both voted and not voted: impossible.
//! Two different certified blocks of one slot need two 2f+1 vote sets sharing
//! an honest voter, which references one block per slot.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use crate::block::{Block, BlockRef};
use crate::dag::DagState;
use crate::types::{Round, Stake, StakeAggregator};

/// Commit rule knobs. Production uses `Default`.
#[derive(Copy, Clone, Debug, Default)]
pub struct CommitRuleConfig {
    /// TEST ONLY: replaces the 2f+1 stake thresholds of the direct commit
    /// rule (votes per certificate and certificates per commit). Set to f+1 to
    /// break safety on purpose and check that the simulator notices.
    pub direct_support_threshold_override: Option<Stake>,
}

/// Decision about one leader slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderStatus {
    /// Commit this block.
    Commit(Arc<Block>),
    /// No block of the slot is committed.
    Skip(Round),
    /// Not known yet.
    Undecided(Round),
}

impl LeaderStatus {
    /// Round of the slot.
    pub fn round(&self) -> Round {
        match self {
            LeaderStatus::Commit(b) => b.round(),
            LeaderStatus::Skip(r) | LeaderStatus::Undecided(r) => *r,
        }
    }
    fn is_decided(&self) -> bool {
        !matches!(self, LeaderStatus::Undecided(_))
    }
}

/// Stateless commit rule over a [`DagState`].
#[derive(Copy, Clone, Debug, Default)]
pub struct Committer {
    config: CommitRuleConfig,
}

impl Committer {
    /// With `config`.
    pub fn new(config: CommitRuleConfig) -> Committer {
        Committer { config }
    }

    fn support_threshold(&self, dag: &DagState) -> Stake {
        self.config
            .direct_support_threshold_override
            .unwrap_or_else(|| dag.committee().quorum_threshold())
    }

    /// Decides leader slots of rounds `from..` (up to the highest round that
    /// can be decided) and returns the decided prefix, lowest round first.
    pub fn try_decide(&self, dag: &DagState, from: Round) -> Vec<LeaderStatus> {
        let highest = dag.highest_round();
        if highest.0 < from.0 + 2 {
            return Vec::new();
        }
        let last = Round(highest.0 - 2);
        // statuses[i] is the slot of round last - i (highest first).
        let mut statuses: Vec<LeaderStatus> = Vec::new();
        let mut r = last;
        while r >= from {
            let mut s = self.decide_direct(dag, r);
            if !s.is_decided() {
                s = self.decide_indirect(dag, r, &statuses);
            }
            statuses.push(s);
            if r.0 == 0 {
                break;
            }
            r = r.prev();
        }
        statuses.reverse();
        statuses
            .into_iter()
            .take_while(|s| s.is_decided())
            .collect()
    }

    /// Direct rule for round `r`.
    pub fn decide_direct(&self, dag: &DagState, r: Round) -> LeaderStatus {
        let committee = dag.committee();
        let leader = committee.leader(r);
        let quorum = committee.quorum_threshold();
        // Blame: authors of r+1 with a block referencing no block of the slot.
        // (Cheap pre-checks: neither rule can fire before its round holds
        // enough stake, which is the common case for the newest slot.)
        if dag.round_stake(r.next()) >= quorum {
            let mut blamers = StakeAggregator::default();
            for v in dag.round_blocks(r.next()) {
                if !v
                    .parents()
                    .iter()
                    .any(|p| p.author == leader && p.round == r)
                {
                    blamers.add(v.author(), committee);
                }
            }
            if blamers.stake() >= quorum {
                return LeaderStatus::Skip(r);
            }
        }
        if dag.round_stake(Round(r.0 + 2)) < self.support_threshold(dag) {
            return LeaderStatus::Undecided(r);
        }
        for l in dag.slot(r, leader) {
            let certs = self.certificate_authors(dag, &l.reference());
            if certs.stake() >= self.support_threshold(dag) {
                return LeaderStatus::Commit(l.clone());
            }
        }
        LeaderStatus::Undecided(r)
    }

    fn votes_for(&self, dag: &DagState, leader: &BlockRef) -> HashSet<BlockRef> {
        dag.round_blocks(leader.round.next())
            .filter(|v| v.parents().contains(leader))
            .map(|v| v.reference())
            .collect()
    }

    fn is_certificate(&self, dag: &DagState, c: &Block, votes: &HashSet<BlockRef>) -> bool {
        let mut s = StakeAggregator::default();
        for p in c.parents() {
            if votes.contains(p) {
                s.add(p.author, dag.committee());
            }
        }
        s.stake() >= self.support_threshold(dag)
    }

    fn certificate_authors(&self, dag: &DagState, leader: &BlockRef) -> StakeAggregator {
        let votes = self.votes_for(dag, leader);
        let mut certs = StakeAggregator::default();
        for c in dag.round_blocks(Round(leader.round.0 + 2)) {
            if self.is_certificate(dag, c, &votes) {
                certs.add(c.author(), dag.committee());
            }
        }
        certs
    }

    /// `later` holds statuses of rounds above `r`, highest first.
    fn decide_indirect(&self, dag: &DagState, r: Round, later: &[LeaderStatus]) -> LeaderStatus {
        let anchor = later
            .iter()
            .rev()
            .filter(|s| s.round().0 >= r.0 + 3)
            .find(|s| !matches!(s, LeaderStatus::Skip(_)));
        match anchor {
            Some(LeaderStatus::Commit(anchor)) => {
                let leader = dag.committee().leader(r);
                for l in dag.slot(r, leader) {
                    if self.has_certified_link(dag, anchor, &l.reference()) {
                        return LeaderStatus::Commit(l.clone());
                    }
                }
                LeaderStatus::Skip(r)
            }
            _ => LeaderStatus::Undecided(r),
        }
    }

    /// Whether `anchor`'s causal history holds a certificate for `leader`.
    fn has_certified_link(&self, dag: &DagState, anchor: &Block, leader: &BlockRef) -> bool {
        let cert_round = Round(leader.round.0 + 2);
        let votes = self.votes_for(dag, leader);
        let mut seen = HashSet::new();
        let mut stack: Vec<BlockRef> = anchor
            .parents()
            .iter()
            .filter(|p| p.round >= cert_round)
            .copied()
            .collect();
        while let Some(r) = stack.pop() {
            if !seen.insert(r) {
                continue;
            }
            let Some(b) = dag.get(&r) else { continue };
            if r.round == cert_round {
                if self.is_certificate(dag, b, &votes) {
                    return true;
                }
                continue;
            }
            stack.extend(b.parents().iter().filter(|p| p.round >= cert_round));
        }
        false
    }
}

/// A committed leader with its newly ordered causal history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedSubDag {
    /// The committed leader block.
    pub leader: BlockRef,
    /// 0-based position in the commit sequence.
    pub index: u64,
    /// Blocks ordered by (round, HashTimer timestamp, digest); the leader last.
    pub blocks: Vec<Arc<Block>>,
    /// Median of the timestamps of the leader's parents of round r-1 (the
    /// leader's own for round-1 leaders), never behind the previous commit.
    pub timestamp_ms: u64,
}

/// Orders committed sub-DAGs. All honest nodes produce the same sequence
/// given the same committed leaders.
#[derive(Debug, Default)]
pub struct Linearizer {
    /// Blocks already ordered, kept down to the GC round.
    ordered: BTreeSet<BlockRef>,
    next_index: u64,
    last_timestamp_ms: u64,
}

impl Linearizer {
    /// Orders the not-yet-ordered history of `leader` above `gc_round`.
    /// `gc_round` must be the same function of the commit sequence on every
    /// node (the core passes `last committed leader round - gc depth`).
    pub fn commit(
        &mut self,
        dag: &DagState,
        leader: &Arc<Block>,
        gc_round: Round,
    ) -> CommittedSubDag {
        let mut out = Vec::new();
        let mut stack = vec![leader.reference()];
        let mut seen = HashSet::new();
        while let Some(r) = stack.pop() {
            if r.round < gc_round || self.ordered.contains(&r) || !seen.insert(r) {
                continue;
            }
            let b = dag
                .get(&r)
                .expect("committed history above the GC round is in the DAG");
            stack.extend(b.parents().iter().copied());
            out.push(b.clone());
        }
        out.sort_by_key(|b| b.order_key());
        for b in &out {
            self.ordered.insert(b.reference());
        }
        debug_assert_eq!(out.last().map(|b| b.reference()), Some(leader.reference()));
        let mut ts: Vec<u64> = leader
            .parents()
            .iter()
            .filter(|p| p.round == leader.round().prev())
            .filter_map(|p| dag.get(p).map(|b| b.timestamp_ms()))
            .collect();
        let median = if ts.is_empty() {
            leader.timestamp_ms()
        } else {
            ts.sort_unstable();
            ts[ts.len() / 2]
        };
        self.last_timestamp_ms = self.last_timestamp_ms.max(median);
        let index = self.next_index;
        self.next_index += 1;
        CommittedSubDag {
            leader: leader.reference(),
            index,
            blocks: out,
            timestamp_ms: self.last_timestamp_ms,
        }
    }

    /// A linearizer that continues a commit sequence: `next_index` commits
    /// were made, the last with timestamp `last_timestamp_ms`, and
    /// `ordered` holds every block above the GC round those commits
    /// ordered (see [`crate::Core::recover_from`]).
    pub fn resume(next_index: u64, last_timestamp_ms: u64, ordered: BTreeSet<BlockRef>) -> Self {
        Linearizer {
            ordered,
            next_index,
            last_timestamp_ms,
        }
    }

    /// Forgets ordered blocks below `round`.
    pub fn gc_below(&mut self, round: Round) {
        let keep = self.ordered.split_off(&BlockRef {
            round,
            author: crate::types::ValidatorIndex(0),
            digest: crate::types::Digest([0; 32]),
        });
        self.ordered = keep;
    }

    /// Index the next commit will get.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }
}
