//! The DAG window: accepted, causally complete blocks above the GC round.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::block::{Block, BlockRef};
use crate::types::{Committee, Round, Stake, StakeAggregator, ValidatorIndex};

/// Blocks of one round, by author. An equivocating author has more than one
/// block in its slot; the first one seen comes first.
#[derive(Debug, Default)]
struct RoundSlots {
    by_author: BTreeMap<ValidatorIndex, Vec<Arc<Block>>>,
    /// Authors with at least one block; each counts once.
    stake: StakeAggregator,
}

/// What `DagState::insert` did.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// First block of its slot.
    New,
    /// A second, different block of an occupied slot: the author equivocated.
    Equivocation,
    /// Already present.
    Duplicate,
}

/// Accepted blocks indexed by reference and by (round, author).
///
/// Invariant: every block's parents are present or below `gc_round`
/// (checked by the core before insertion, except in test DAGs).
#[derive(Debug)]
pub struct DagState {
    committee: Arc<Committee>,
    blocks: HashMap<BlockRef, Arc<Block>>,
    rounds: BTreeMap<Round, RoundSlots>,
    gc_round: Round,
}

impl DagState {
    /// Empty DAG.
    pub fn new(committee: Arc<Committee>) -> DagState {
        DagState {
            committee,
            blocks: HashMap::new(),
            rounds: BTreeMap::new(),
            gc_round: Round(0),
        }
    }
    /// The committee.
    pub fn committee(&self) -> &Committee {
        &self.committee
    }
    /// Whether `r` is present.
    pub fn contains(&self, r: &BlockRef) -> bool {
        self.blocks.contains_key(r)
    }
    /// Block `r`.
    pub fn get(&self, r: &BlockRef) -> Option<&Arc<Block>> {
        self.blocks.get(r)
    }
    /// Number of blocks held.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
    /// Rounds below this were garbage collected.
    pub fn gc_round(&self) -> Round {
        self.gc_round
    }
    /// Inserts an accepted block.
    pub fn insert(&mut self, block: Arc<Block>) -> InsertOutcome {
        let r = block.reference();
        if self.blocks.contains_key(&r) {
            return InsertOutcome::Duplicate;
        }
        let slots = self.rounds.entry(r.round).or_default();
        let slot = slots.by_author.entry(r.author).or_default();
        let outcome = if slot.is_empty() {
            InsertOutcome::New
        } else {
            InsertOutcome::Equivocation
        };
        slot.push(block.clone());
        slots.stake.add(r.author, &self.committee);
        self.blocks.insert(r, block);
        outcome
    }
    /// Blocks of slot (round, author), first seen first.
    pub fn slot(&self, round: Round, author: ValidatorIndex) -> &[Arc<Block>] {
        self.rounds
            .get(&round)
            .and_then(|s| s.by_author.get(&author))
            .map_or(&[], |v| v.as_slice())
    }
    /// All blocks of `round` (every equivocating block included), by author.
    pub fn round_blocks(&self, round: Round) -> impl Iterator<Item = &Arc<Block>> {
        self.rounds
            .get(&round)
            .into_iter()
            .flat_map(|s| s.by_author.values().flatten())
    }
    /// First-seen block of each author at `round`.
    pub fn round_first_blocks(&self, round: Round) -> impl Iterator<Item = &Arc<Block>> {
        self.rounds
            .get(&round)
            .into_iter()
            .flat_map(|s| s.by_author.values().filter_map(|v| v.first()))
    }
    /// Stake of authors with a block at `round`.
    pub fn round_stake(&self, round: Round) -> Stake {
        self.rounds.get(&round).map_or(0, |s| s.stake.stake())
    }
    /// Highest round holding a block (0 when empty).
    pub fn highest_round(&self) -> Round {
        self.rounds.keys().next_back().copied().unwrap_or_default()
    }
    /// Drops every block of a round below `round`.
    pub fn gc_below(&mut self, round: Round) {
        if round <= self.gc_round {
            return;
        }
        self.gc_round = round;
        let keep = self.rounds.split_off(&round);
        let old = std::mem::replace(&mut self.rounds, keep);
        for slots in old.into_values() {
            for b in slots.by_author.into_values().flatten() {
                self.blocks.remove(&b.reference());
            }
        }
    }
}
