//! Blocks, their canonical encoding and stateless validation.
//!
//! Encoding (all integers little-endian, no padding):
//!
//! ```text
//! version        u8    = BLOCK_ENCODING_VERSION
//! epoch          u64
//! author         u32
//! round          u64
//! timestamp_ms   u64   HashTimer timestamp
//! hash_timer     [32]  HashTimer digest (recomputed and checked on decode)
//! parents_len    u16   <= BLOCK_PARENTS_MAX
//! parents        parents_len x (author u32, round u64, digest [32])
//! payload_len    u32   <= BLOCK_PAYLOAD_DIGESTS_MAX
//! payload        payload_len x [32]
//! signature      [64]  ed25519 over the block digest
//! ```
//!
//! The block digest is `blake3(BLOCK_DIGEST_DOMAIN || encoding without the
//! signature)`. The whole encoding is at most [`BLOCK_BYTES_MAX`].

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use thiserror::Error;

use crate::types::{Committee, Digest, Epoch, Round, StakeAggregator, ValidatorIndex};

/// Version byte that opens every encoded block.
pub const BLOCK_ENCODING_VERSION: u8 = 1;
/// Most parents a block may carry. One per validator is the honest maximum,
/// so this is the committee size bound; 1024 parents = 45 KiB.
pub const BLOCK_PARENTS_MAX: usize = crate::types::COMMITTEE_SIZE_MAX;
/// Most batch digests in one block's payload: 4096 digests = 128 KiB, enough
/// for ~4096 batches per round per validator, far above mempool output.
pub const BLOCK_PAYLOAD_DIGESTS_MAX: usize = 4096;
/// Fixed part of an encoding: version, epoch, author, round, timestamp,
/// hash timer digest, two length fields and the signature.
pub const BLOCK_FIXED_BYTES: usize = 1 + 8 + 4 + 8 + 8 + 32 + 2 + 4 + 64;
/// Bytes of one encoded parent reference.
pub const BLOCK_REF_BYTES: usize = 4 + 8 + 32;
/// Largest valid encoding (~174 KiB); the decoder rejects longer input
/// before reading it.
pub const BLOCK_BYTES_MAX: usize =
    BLOCK_FIXED_BYTES + BLOCK_PARENTS_MAX * BLOCK_REF_BYTES + BLOCK_PAYLOAD_DIGESTS_MAX * 32;
const _: () = assert!(BLOCK_PARENTS_MAX <= u16::MAX as usize);
const _: () = assert!(BLOCK_BYTES_MAX < 256 * 1024);

const BLOCK_DIGEST_DOMAIN: &[u8] = b"velox-dag-block-v1";
const HASH_TIMER_DOMAIN: &[u8] = b"velox-dag-hashtimer-v1";

/// Reference to a block: its slot (author, round) and digest.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockRef {
    /// Round first so that sorting refs sorts by round.
    pub round: Round,
    /// Author.
    pub author: ValidatorIndex,
    /// Block digest.
    pub digest: Digest,
}

/// A timestamp bound to the block's position: the digest commits to the
/// timestamp, author, round and parent digests, so the timestamp cannot be
/// moved to another block. Linearization sorts on (round, timestamp, digest).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HashTimer {
    /// Author's clock when it proposed the block (ms).
    pub timestamp_ms: u64,
    /// blake3 over (timestamp, author, round, parents).
    pub digest: Digest,
}

impl HashTimer {
    /// Computes the hash timer of a block's fields.
    pub fn compute(
        timestamp_ms: u64,
        author: ValidatorIndex,
        round: Round,
        parents: &[BlockRef],
    ) -> HashTimer {
        let mut h = blake3::Hasher::new();
        h.update(HASH_TIMER_DOMAIN);
        h.update(&timestamp_ms.to_le_bytes());
        h.update(&author.0.to_le_bytes());
        h.update(&round.0.to_le_bytes());
        for p in parents {
            h.update(&p.digest.0);
        }
        HashTimer {
            timestamp_ms,
            digest: Digest(*h.finalize().as_bytes()),
        }
    }
}

/// The signed fields of a block, before signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsignedBlock {
    /// Committee epoch.
    pub epoch: Epoch,
    /// Author.
    pub author: ValidatorIndex,
    /// Round (>= 1).
    pub round: Round,
    /// Parents: at least 2f+1 stake of round `round - 1`, one per author,
    /// the author's own previous block among them.
    pub parents: Vec<BlockRef>,
    /// Opaque batch digests (batches are made available by the mempool).
    pub payload: Vec<Digest>,
    /// Author's clock (ms) when proposing.
    pub timestamp_ms: u64,
}

impl UnsignedBlock {
    /// Signs: computes hash timer and digest and attaches the signature.
    pub fn sign(self, key: &SigningKey) -> Block {
        let (hash_timer, digest) = self.seal();
        let signature = key.sign(&digest.0).to_bytes();
        Block {
            inner: self,
            hash_timer,
            digest,
            signature,
        }
    }

    /// Attaches an arbitrary signature (tests and Byzantine simulation).
    pub fn with_signature(self, signature: [u8; 64]) -> Block {
        let (hash_timer, digest) = self.seal();
        Block {
            inner: self,
            hash_timer,
            digest,
            signature,
        }
    }

    fn seal(&self) -> (HashTimer, Digest) {
        let hash_timer =
            HashTimer::compute(self.timestamp_ms, self.author, self.round, &self.parents);
        let mut buf = Vec::with_capacity(self.encoded_len());
        encode_content(self, &hash_timer, &mut buf);
        (hash_timer, block_digest(&buf))
    }

    fn encoded_len(&self) -> usize {
        BLOCK_FIXED_BYTES + self.parents.len() * BLOCK_REF_BYTES + self.payload.len() * 32
    }
}

fn block_digest(content: &[u8]) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(BLOCK_DIGEST_DOMAIN);
    h.update(content);
    Digest(*h.finalize().as_bytes())
}

fn encode_content(b: &UnsignedBlock, ht: &HashTimer, out: &mut Vec<u8>) {
    out.push(BLOCK_ENCODING_VERSION);
    out.extend_from_slice(&b.epoch.0.to_le_bytes());
    out.extend_from_slice(&b.author.0.to_le_bytes());
    out.extend_from_slice(&b.round.0.to_le_bytes());
    out.extend_from_slice(&ht.timestamp_ms.to_le_bytes());
    out.extend_from_slice(&ht.digest.0);
    out.extend_from_slice(&(b.parents.len() as u16).to_le_bytes());
    for p in &b.parents {
        out.extend_from_slice(&p.author.0.to_le_bytes());
        out.extend_from_slice(&p.round.0.to_le_bytes());
        out.extend_from_slice(&p.digest.0);
    }
    out.extend_from_slice(&(b.payload.len() as u32).to_le_bytes());
    for d in &b.payload {
        out.extend_from_slice(&d.0);
    }
}

/// A signed block. Fields are private so the cached digest always matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    inner: UnsignedBlock,
    hash_timer: HashTimer,
    /// Invariant: digest of the canonical encoding of `inner` + `hash_timer`.
    digest: Digest,
    signature: [u8; 64],
}

/// Why bytes are not a block. Decoding never panics on any input.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Input longer than [`BLOCK_BYTES_MAX`].
    #[error("block is {0} bytes, more than BLOCK_BYTES_MAX")]
    TooLong(usize),
    /// Input ends early.
    #[error("block truncated: needed {needed} more bytes at offset {at}")]
    Truncated {
        /// Offset where more bytes were needed.
        at: usize,
        /// How many.
        needed: usize,
    },
    /// Unknown version byte.
    #[error("unknown block encoding version {0}")]
    Version(u8),
    /// Too many parents.
    #[error("{0} parents, more than BLOCK_PARENTS_MAX")]
    TooManyParents(usize),
    /// Too many payload digests.
    #[error("{0} payload digests, more than BLOCK_PAYLOAD_DIGESTS_MAX")]
    TooManyPayloadDigests(usize),
    /// Bytes left after the signature.
    #[error("{0} trailing bytes after the block")]
    TrailingBytes(usize),
    /// Hash timer digest does not match the block's fields.
    #[error("hash timer digest does not match")]
    HashTimerMismatch,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let left = self.bytes.len() - self.at;
        if left < n {
            return Err(DecodeError::Truncated {
                at: self.at,
                needed: n - left,
            });
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

impl Block {
    /// Decodes untrusted bytes. Checks framing, limits and the hash timer;
    /// the signature and DAG rules are checked by [`Block::verify`].
    pub fn decode(bytes: &[u8]) -> Result<Block, DecodeError> {
        if bytes.len() > BLOCK_BYTES_MAX {
            return Err(DecodeError::TooLong(bytes.len()));
        }
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != BLOCK_ENCODING_VERSION {
            return Err(DecodeError::Version(version));
        }
        let epoch = Epoch(r.u64()?);
        let author = ValidatorIndex(r.u32()?);
        let round = Round(r.u64()?);
        let timestamp_ms = r.u64()?;
        let ht_digest = Digest(r.array()?);
        let parents_len = r.u16()? as usize;
        if parents_len > BLOCK_PARENTS_MAX {
            return Err(DecodeError::TooManyParents(parents_len));
        }
        // Length is checked against what is left before allocating.
        r.clone_check(parents_len * BLOCK_REF_BYTES)?;
        let mut parents = Vec::with_capacity(parents_len);
        for _ in 0..parents_len {
            let author = ValidatorIndex(r.u32()?);
            let round = Round(r.u64()?);
            let digest = Digest(r.array()?);
            parents.push(BlockRef {
                round,
                author,
                digest,
            });
        }
        let payload_len = r.u32()? as usize;
        if payload_len > BLOCK_PAYLOAD_DIGESTS_MAX {
            return Err(DecodeError::TooManyPayloadDigests(payload_len));
        }
        r.clone_check(payload_len * 32)?;
        let mut payload = Vec::with_capacity(payload_len);
        for _ in 0..payload_len {
            payload.push(Digest(r.array()?));
        }
        let content_end = r.at;
        let signature: [u8; 64] = r.array()?;
        if r.at != bytes.len() {
            return Err(DecodeError::TrailingBytes(bytes.len() - r.at));
        }
        let inner = UnsignedBlock {
            epoch,
            author,
            round,
            parents,
            payload,
            timestamp_ms,
        };
        let hash_timer = HashTimer::compute(timestamp_ms, author, round, &inner.parents);
        if hash_timer.digest != ht_digest {
            return Err(DecodeError::HashTimerMismatch);
        }
        let digest = block_digest(&bytes[..content_end]);
        Ok(Block {
            inner,
            hash_timer,
            digest,
            signature,
        })
    }

    /// Canonical encoding; `Block::decode(&b.encode()) == Ok(b)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.inner.encoded_len());
        encode_content(&self.inner, &self.hash_timer, &mut out);
        out.extend_from_slice(&self.signature);
        out
    }

    /// This block's reference.
    pub fn reference(&self) -> BlockRef {
        BlockRef {
            round: self.inner.round,
            author: self.inner.author,
            digest: self.digest,
        }
    }
    /// Digest (what the signature covers).
    pub fn digest(&self) -> Digest {
        self.digest
    }
    /// Epoch.
    pub fn epoch(&self) -> Epoch {
        self.inner.epoch
    }
    /// Author.
    pub fn author(&self) -> ValidatorIndex {
        self.inner.author
    }
    /// Round.
    pub fn round(&self) -> Round {
        self.inner.round
    }
    /// Parents.
    pub fn parents(&self) -> &[BlockRef] {
        &self.inner.parents
    }
    /// Batch digests.
    pub fn payload(&self) -> &[Digest] {
        &self.inner.payload
    }
    /// HashTimer.
    pub fn hash_timer(&self) -> HashTimer {
        self.hash_timer
    }
    /// Timestamp (ms) of the hash timer.
    pub fn timestamp_ms(&self) -> u64 {
        self.hash_timer.timestamp_ms
    }
    /// Signature bytes.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
    /// The signed fields (to build a modified copy).
    pub fn unsigned(&self) -> &UnsignedBlock {
        &self.inner
    }
    /// Linearization key: (round, hash timer timestamp, digest).
    pub fn order_key(&self) -> (Round, u64, Digest) {
        (self.inner.round, self.hash_timer.timestamp_ms, self.digest)
    }

    /// Stateless checks: epoch, author, parent rules, then the signature
    /// (last, as the costliest) through `verifier`.
    pub fn verify(
        &self,
        committee: &Committee,
        verifier: &dyn SignatureVerifier,
    ) -> Result<(), BlockError> {
        let b = &self.inner;
        if b.epoch != committee.epoch() {
            return Err(BlockError::WrongEpoch(b.epoch));
        }
        if !committee.contains(b.author) {
            return Err(BlockError::UnknownAuthor(b.author));
        }
        if b.round == Round(0) {
            return Err(BlockError::RoundZero);
        }
        if b.round == Round(1) {
            if !b.parents.is_empty() {
                return Err(BlockError::BadParents("round-1 block with parents"));
            }
        } else {
            let mut authors = StakeAggregator::default();
            let mut prev_round = StakeAggregator::default();
            let mut own = false;
            for p in &b.parents {
                if !committee.contains(p.author) {
                    return Err(BlockError::BadParents("parent author not in committee"));
                }
                if p.round >= b.round {
                    return Err(BlockError::BadParents("parent not from an earlier round"));
                }
                if p.round == Round(0) {
                    return Err(BlockError::BadParents("parent at round 0"));
                }
                if !authors.add(p.author, committee) {
                    return Err(BlockError::BadParents("two parents by one author"));
                }
                if p.round == b.round.prev() {
                    prev_round.add(p.author, committee);
                }
                own |= p.author == b.author;
            }
            if !own {
                return Err(BlockError::BadParents("own previous block missing"));
            }
            if prev_round.stake() < committee.quorum_threshold() {
                return Err(BlockError::BadParents(
                    "less than 2f+1 parents of the previous round",
                ));
            }
        }
        let key = &committee
            .authority(b.author)
            .expect("author checked above")
            .public_key;
        if !verifier.verify(key, &self.digest, &self.signature) {
            return Err(BlockError::BadSignature);
        }
        Ok(())
    }
}

/// Why a block is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BlockError {
    /// Malformed bytes.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// Other epoch.
    #[error("block of epoch {0:?}")]
    WrongEpoch(Epoch),
    /// Author not in the committee.
    #[error("author {0} not in committee")]
    UnknownAuthor(ValidatorIndex),
    /// Round 0 holds no blocks.
    #[error("block at round 0")]
    RoundZero,
    /// Parent rules broken.
    #[error("bad parents: {0}")]
    BadParents(&'static str),
    /// Signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

/// Checks signatures. Injected so that the simulator can share verification
/// results between its cores (each distinct block is still verified once);
/// production uses [`Ed25519Verifier`].
pub trait SignatureVerifier: Send {
    /// Whether `signature` by `key` over `digest` is valid.
    fn verify(&self, key: &VerifyingKey, digest: &Digest, signature: &[u8; 64]) -> bool;
}

/// The chain's signature rule (`velox_exec::sig`, docs/protocol.md): the
/// same function that decides transactions decides blocks.
#[derive(Copy, Clone, Debug, Default)]
pub struct Ed25519Verifier;

impl SignatureVerifier for Ed25519Verifier {
    fn verify(&self, key: &VerifyingKey, digest: &Digest, signature: &[u8; 64]) -> bool {
        velox_exec::sig::verify(key.as_bytes(), &digest.0, signature).is_ok()
    }
}

impl Reader<'_> {
    /// Fails unless `n` more bytes exist (bounds allocation by input size).
    fn clone_check(&self, n: usize) -> Result<(), DecodeError> {
        let left = self.bytes.len() - self.at;
        if left < n {
            return Err(DecodeError::Truncated {
                at: self.at,
                needed: n - left,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Committee;
    use proptest::prelude::*;

    fn sample(committee_keys: &[SigningKey]) -> Block {
        let parents = (0..3)
            .map(|i| BlockRef {
                round: Round(4),
                author: ValidatorIndex(i),
                digest: Digest([i as u8; 32]),
            })
            .collect();
        UnsignedBlock {
            epoch: Epoch(0),
            author: ValidatorIndex(0),
            round: Round(5),
            parents,
            payload: vec![Digest([9; 32]), Digest([8; 32])],
            timestamp_ms: 1234,
        }
        .sign(&committee_keys[0])
    }

    #[test]
    fn roundtrip_and_verify() {
        let (c, keys) = Committee::new_for_test(Epoch(0), 4, 7);
        let b = sample(&keys);
        let bytes = b.encode();
        let d = Block::decode(&bytes).unwrap();
        assert_eq!(d, b);
        assert_eq!(d.verify(&c, &Ed25519Verifier), Ok(()));
        // Every truncation fails cleanly.
        for n in 0..bytes.len() {
            assert!(Block::decode(&bytes[..n]).is_err());
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Block::decode(&long), Err(DecodeError::TrailingBytes(1)));
        // A flipped signature bit decodes but fails verification.
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let d = Block::decode(&bad).unwrap();
        assert_eq!(
            d.verify(&c, &Ed25519Verifier),
            Err(BlockError::BadSignature)
        );
        // A flipped timestamp breaks the hash timer.
        let mut bad = bytes;
        bad[21] ^= 1;
        assert_eq!(Block::decode(&bad), Err(DecodeError::HashTimerMismatch));
    }

    #[test]
    fn parent_rules() {
        let (c, keys) = Committee::new_for_test(Epoch(0), 4, 7);
        let mut u = sample(&keys).unsigned().clone();
        u.parents.truncate(2);
        assert!(matches!(
            u.sign(&keys[0]).verify(&c, &Ed25519Verifier),
            Err(BlockError::BadParents(_))
        ));
        let mut u = sample(&keys).unsigned().clone();
        u.parents[0].author = ValidatorIndex(3); // drops own parent
        assert!(matches!(
            u.sign(&keys[0]).verify(&c, &Ed25519Verifier),
            Err(BlockError::BadParents(_))
        ));
        let mut u = sample(&keys).unsigned().clone();
        u.parents[1].author = ValidatorIndex(2); // duplicate author
        assert!(matches!(
            u.sign(&keys[0]).verify(&c, &Ed25519Verifier),
            Err(BlockError::BadParents(_))
        ));
        let mut u = sample(&keys).unsigned().clone();
        u.epoch = Epoch(1);
        assert!(matches!(
            u.sign(&keys[0]).verify(&c, &Ed25519Verifier),
            Err(BlockError::WrongEpoch(_))
        ));
    }

    #[test]
    fn size_limit_constant_matches_encoding() {
        let (_, keys) = Committee::new_for_test(Epoch(0), 1, 7);
        let u = UnsignedBlock {
            epoch: Epoch(0),
            author: ValidatorIndex(0),
            round: Round(2),
            parents: vec![
                BlockRef {
                    round: Round(1),
                    author: ValidatorIndex(0),
                    digest: Digest::default()
                };
                BLOCK_PARENTS_MAX
            ],
            payload: vec![Digest::default(); BLOCK_PAYLOAD_DIGESTS_MAX],
            timestamp_ms: 0,
        };
        let b = u.sign(&keys[0]);
        assert_eq!(b.encode().len(), BLOCK_BYTES_MAX);
        assert!(Block::decode(&b.encode()).is_ok());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Block::decode(&bytes);
        }

        #[test]
        fn mutated_valid_block_never_panics(idx in 0usize..400, val in any::<u8>()) {
            let (_, keys) = Committee::new_for_test(Epoch(0), 4, 7);
            let mut bytes = sample(&keys).encode();
            let i = idx % bytes.len();
            bytes[i] = val;
            let _ = Block::decode(&bytes);
        }
    }
}
