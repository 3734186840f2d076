//! Newtypes and the committee.

use std::fmt;

use ed25519_dalek::{SigningKey, VerifyingKey};

/// A DAG round. Round 0 holds no blocks; every validator's first block is at
/// round 1 and has no parents.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Round(pub u64);

impl Round {
    /// The next round.
    pub fn next(self) -> Round {
        Round(self.0 + 1)
    }
    /// The previous round (saturating at 0).
    pub fn prev(self) -> Round {
        Round(self.0.saturating_sub(1))
    }
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Position of a validator in the committee (0-based).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValidatorIndex(pub u32);

impl ValidatorIndex {
    /// As a vector index.
    pub fn as_usize(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ValidatorIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// Epoch of a committee. Blocks of another epoch are rejected.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

/// A blake3 digest.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// blake3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(&self.0[..4]))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(&self.0[..4]))
    }
}

/// Virtual or real time in milliseconds since an origin the driver picks.
/// The core never reads a clock: every `handle_*` receives it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// `self + ms`, saturating.
    pub fn plus_ms(self, ms: u64) -> Time {
        Time(self.0.saturating_add(ms))
    }
}

/// Voting power.
pub type Stake = u64;

/// One member of the committee.
#[derive(Clone, Debug)]
pub struct Authority {
    /// Voting power (> 0).
    pub stake: Stake,
    /// Key that signs this validator's blocks.
    pub public_key: VerifyingKey,
}

/// The validator set of one epoch with stakes and keys.
///
/// Invariant: at least one member, every stake > 0, total stake fits in u64.
/// `quorum_threshold` = 2f+1 and `validity_threshold` = f+1 by stake, where
/// f = floor((total - 1) / 3).
#[derive(Clone, Debug)]
pub struct Committee {
    epoch: Epoch,
    authorities: Vec<Authority>,
    total_stake: Stake,
    /// Deterministic leader schedule: one entry per slot of the round robin.
    leader_schedule: Vec<ValidatorIndex>,
}

/// Upper bound on committee size; keeps per-round bitsets and leader
/// schedules small (a schedule costs 4 bytes per slot).
pub const COMMITTEE_SIZE_MAX: usize = 1024;
/// Length of the stake-weighted leader schedule (slots per cycle) at most.
/// Stakes are scaled down to fit; 4096 slots = 16 KiB.
pub const LEADER_SCHEDULE_SLOTS_MAX: u64 = 4096;

impl Committee {
    /// Builds a committee. Panics on an empty committee, a zero stake or more
    /// than [`COMMITTEE_SIZE_MAX`] members (configuration errors, not input).
    pub fn new(epoch: Epoch, authorities: Vec<Authority>) -> Committee {
        assert!(!authorities.is_empty(), "empty committee");
        assert!(
            authorities.len() <= COMMITTEE_SIZE_MAX,
            "committee too large"
        );
        assert!(authorities.iter().all(|a| a.stake > 0), "zero stake");
        let total_stake = authorities
            .iter()
            .try_fold(0u64, |acc, a| acc.checked_add(a.stake))
            .expect("total stake overflows u64");
        let leader_schedule = build_leader_schedule(&authorities, total_stake);
        Committee {
            epoch,
            authorities,
            total_stake,
            leader_schedule,
        }
    }

    /// Deterministic test/simulation committee: validator `i` has key
    /// derived from `(seed, i)` and stake 1. Returns the signing keys too.
    pub fn new_for_test(epoch: Epoch, n: usize, seed: u64) -> (Committee, Vec<SigningKey>) {
        Self::new_for_test_with_stakes(epoch, &vec![1; n], seed)
    }

    /// Like [`Committee::new_for_test`] with explicit stakes.
    pub fn new_for_test_with_stakes(
        epoch: Epoch,
        stakes: &[Stake],
        seed: u64,
    ) -> (Committee, Vec<SigningKey>) {
        let keys: Vec<SigningKey> = (0..stakes.len())
            .map(|i| {
                let mut k = [0u8; 32];
                k[..8].copy_from_slice(&seed.to_le_bytes());
                k[8..16].copy_from_slice(&(i as u64).to_le_bytes());
                k[16..].copy_from_slice(b"velox-dag-test-k");
                SigningKey::from_bytes(&k)
            })
            .collect();
        let auths = keys
            .iter()
            .zip(stakes)
            .map(|(k, s)| Authority {
                stake: *s,
                public_key: k.verifying_key(),
            })
            .collect();
        (Committee::new(epoch, auths), keys)
    }

    /// The committee's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
    /// Number of validators.
    pub fn size(&self) -> usize {
        self.authorities.len()
    }
    /// All validator indices in order.
    pub fn indices(&self) -> impl Iterator<Item = ValidatorIndex> + '_ {
        (0..self.authorities.len() as u32).map(ValidatorIndex)
    }
    /// Member `v`, if any.
    pub fn authority(&self, v: ValidatorIndex) -> Option<&Authority> {
        self.authorities.get(v.as_usize())
    }
    /// Whether `v` is a member.
    pub fn contains(&self, v: ValidatorIndex) -> bool {
        v.as_usize() < self.authorities.len()
    }
    /// Stake of `v` (0 for non-members).
    pub fn stake(&self, v: ValidatorIndex) -> Stake {
        self.authority(v).map_or(0, |a| a.stake)
    }
    /// Total stake.
    pub fn total_stake(&self) -> Stake {
        self.total_stake
    }
    /// f: the most faulty stake tolerated.
    pub fn max_faulty_stake(&self) -> Stake {
        (self.total_stake - 1) / 3
    }
    /// 2f+1 by stake.
    pub fn quorum_threshold(&self) -> Stake {
        self.total_stake - self.max_faulty_stake()
    }
    /// f+1 by stake.
    pub fn validity_threshold(&self) -> Stake {
        self.max_faulty_stake() + 1
    }
    /// Leader of `round`: stake-weighted round robin, a pure function of the
    /// round and the committee.
    pub fn leader(&self, round: Round) -> ValidatorIndex {
        let len = self.leader_schedule.len() as u64;
        self.leader_schedule[(round.0 % len) as usize]
    }
}

/// Smooth weighted round robin (as in nginx): over one cycle every validator
/// leads in proportion to its (scaled) stake, and leaderships are spread out.
fn build_leader_schedule(auths: &[Authority], total: Stake) -> Vec<ValidatorIndex> {
    let scale = total.div_ceil(LEADER_SCHEDULE_SLOTS_MAX).max(1);
    let weights: Vec<i128> = auths
        .iter()
        .map(|a| (a.stake / scale).max(1) as i128)
        .collect();
    let sum: i128 = weights.iter().sum();
    let mut current = vec![0i128; auths.len()];
    let mut out = Vec::with_capacity(sum as usize);
    for _ in 0..sum {
        let mut best = 0;
        for i in 0..auths.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= sum;
        out.push(ValidatorIndex(best as u32));
    }
    out
}

/// A set of validators with the stake they add up to. Each validator counts
/// once, however many blocks it has.
#[derive(Clone, Debug, Default)]
pub struct StakeAggregator {
    seen: Vec<u64>,
    stake: Stake,
}

impl StakeAggregator {
    /// Adds `v`; returns whether it was new.
    pub fn add(&mut self, v: ValidatorIndex, committee: &Committee) -> bool {
        let i = v.as_usize();
        let (w, b) = (i / 64, i % 64);
        if self.seen.len() <= w {
            self.seen.resize(w + 1, 0);
        }
        if self.seen[w] & (1 << b) != 0 {
            return false;
        }
        self.seen[w] |= 1 << b;
        self.stake += committee.stake(v);
        true
    }
    /// Whether `v` was added.
    pub fn contains(&self, v: ValidatorIndex) -> bool {
        let i = v.as_usize();
        self.seen
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
    /// Stake added so far.
    pub fn stake(&self) -> Stake {
        self.stake
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        for (n, q, v) in [(4, 3, 2), (7, 5, 3), (10, 7, 4), (50, 34, 17)] {
            let (c, _) = Committee::new_for_test(Epoch(0), n, 1);
            assert_eq!(c.quorum_threshold(), q, "n={n}");
            assert_eq!(c.validity_threshold(), v, "n={n}");
        }
    }

    #[test]
    fn leader_schedule_is_stake_weighted() {
        let (c, _) = Committee::new_for_test_with_stakes(Epoch(0), &[1, 2, 1], 1);
        let mut counts = [0; 3];
        for r in 0..400 {
            counts[c.leader(Round(r)).as_usize()] += 1;
        }
        assert_eq!(counts, [100, 200, 100]);
        // Spread out: v1 never leads three rounds in a row.
        for r in 0..100 {
            let l: Vec<_> = (r..r + 3).map(|x| c.leader(Round(x))).collect();
            assert!(!l.iter().all(|x| *x == ValidatorIndex(1)));
        }
    }
}
