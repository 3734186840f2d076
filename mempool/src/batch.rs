//! Transaction batches and their availability.
//!
//! A validator seals the transactions its pool hands out into a batch,
//! stores it, and sends it to every peer; each peer that stored it answers
//! with an acknowledgement. A batch is *available* once validators holding
//! at least the validity threshold of stake (f+1, itself included) stored
//! it: at least one honest validator then holds it, so anyone can fetch it.
//! Only available batch digests go into consensus blocks.
//!
//! ```text
//!  seal ──▶ encode (magic, count, len-prefixed txs) ──▶ digest = blake3
//!    │                                     │
//!    ▼                                     ▼ Batch(bytes) to every peer
//!  Availability::sealed(own stake)    peers: decode, verify, store, BatchAck
//!    │ ◀──────────────────────────────────────┘
//!    ▼ stake ≥ threshold (once)
//!  digest handed to consensus (a block's payload)
//! ```
//!
//! Encoding (version 2, `b"VXB2"`): the author's validator index (u32
//! little-endian), a batch nonce (u64 little-endian, unique per author:
//! the driver draws a random start per process and counts up), the
//! transaction count (u32), then per transaction a u32 length and its exact
//! bytes. The digest is blake3 in derive-key mode (context
//! `velox batch v1`) over the whole encoding. The author and nonce make a
//! batch's identity its own: two batches with the same transactions
//! (a client resending a transaction that failed at execution, sealed alone
//! again) have different digests, so the duplicate-batch window that skips
//! a batch committed twice (a replay, or one batch in two blocks) never
//! swallows a new batch (decision 0007). Version 1 (`b"VXB1"`, count and
//! transactions only, content-addressed) is still decoded from disk and in
//! fetched committed batches; fresh batches from peers must be version 2
//! and name the peer that sent them.

use std::collections::HashMap;

use velox_exec::tx::TX_BYTES_MAX;

/// First bytes of an encoded batch (version 2, with author and nonce).
pub const BATCH_MAGIC: &[u8; 4] = b"VXB2";
/// First bytes of a version-1 batch (content only): decoded, never made.
pub const BATCH_MAGIC_V1: &[u8; 4] = b"VXB1";
/// Bytes before the first transaction of a version-2 batch: magic, author,
/// nonce, count.
pub const BATCH_HEADER_BYTES: usize = 4 + 4 + 8 + 4;
const BATCH_HEADER_BYTES_V1: usize = 4 + 4;
/// Most transactions in one batch (decoder bound).
pub const BATCH_TXS_MAX: usize = 16_384;
/// Most bytes of one encoded batch (decoder bound).
pub const BATCH_BYTES_MAX: usize = 8 << 20;
const DIGEST_CONTEXT: &str = "velox batch v1";

/// A batch digest.
pub type BatchDigest = [u8; 32];

/// Why bytes are not a batch. `label` is stable (a metric label).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch of {0} bytes exceeds the maximum of {BATCH_BYTES_MAX}")]
    TooLarge(usize),
    #[error("not a batch: bad magic")]
    Magic,
    #[error("batch truncated at byte {0}")]
    Truncated(usize),
    #[error("batch of {0} transactions exceeds the maximum of {BATCH_TXS_MAX}")]
    TooManyTxs(usize),
    #[error("a transaction of {0} bytes exceeds the maximum of {TX_BYTES_MAX}")]
    TxTooLarge(usize),
    #[error("{0} trailing bytes after the last transaction")]
    TrailingBytes(usize),
}

impl BatchError {
    pub const LABELS: [&'static str; 6] = [
        "too_large",
        "magic",
        "truncated",
        "too_many_txs",
        "tx_too_large",
        "trailing_bytes",
    ];
    /// Index into [`BatchError::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            BatchError::TooLarge(_) => 0,
            BatchError::Magic => 1,
            BatchError::Truncated(_) => 2,
            BatchError::TooManyTxs(_) => 3,
            BatchError::TxTooLarge(_) => 4,
            BatchError::TrailingBytes(_) => 5,
        }
    }
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }
}

/// Who made a batch and which of theirs it is: part of its identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOrigin {
    /// The author's validator index.
    pub author: u32,
    /// Unique among the author's batches.
    pub nonce: u64,
}

/// Encodes transactions (their exact bytes) as a version-2 batch of `origin`.
pub fn encode_batch<'a>(
    origin: BatchOrigin,
    txs: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + txs.len() * 200);
    out.extend_from_slice(BATCH_MAGIC);
    out.extend_from_slice(&origin.author.to_le_bytes());
    out.extend_from_slice(&origin.nonce.to_le_bytes());
    out.extend_from_slice(&(txs.len() as u32).to_le_bytes());
    for t in txs {
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(t);
    }
    out
}

/// The digest of an encoded batch.
pub fn batch_digest(bytes: &[u8]) -> BatchDigest {
    let mut h = blake3::Hasher::new_derive_key(DIGEST_CONTEXT);
    h.update(bytes);
    *h.finalize().as_bytes()
}

/// A decoded batch: its origin (`None` for version 1) and its transactions'
/// byte slices.
#[derive(Debug, PartialEq, Eq)]
pub struct DecodedBatch<'a> {
    pub origin: Option<BatchOrigin>,
    pub txs: Vec<&'a [u8]>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Splits untrusted bytes into transaction byte slices, checking every
/// bound. Never panics.
pub fn decode_batch(bytes: &[u8]) -> Result<DecodedBatch<'_>, BatchError> {
    if bytes.len() > BATCH_BYTES_MAX {
        return Err(BatchError::TooLarge(bytes.len()));
    }
    let magic_len = bytes.len().min(4);
    let v2 = bytes[..magic_len] == BATCH_MAGIC[..magic_len];
    if !v2 && bytes[..magic_len] != BATCH_MAGIC_V1[..magic_len] {
        return Err(BatchError::Magic);
    }
    let header = if v2 {
        BATCH_HEADER_BYTES
    } else {
        BATCH_HEADER_BYTES_V1
    };
    if bytes.len() < header {
        return Err(BatchError::Truncated(bytes.len()));
    }
    let origin = v2.then(|| BatchOrigin {
        author: u32_at(bytes, 4),
        nonce: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
    });
    let n = u32_at(bytes, header - 4) as usize;
    if n > BATCH_TXS_MAX {
        return Err(BatchError::TooManyTxs(n));
    }
    let mut at = header;
    let mut txs = Vec::with_capacity(n.min(bytes.len() / 4));
    for _ in 0..n {
        let Some(len) = bytes.get(at..at + 4) else {
            return Err(BatchError::Truncated(at));
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if len > TX_BYTES_MAX {
            return Err(BatchError::TxTooLarge(len));
        }
        at += 4;
        let Some(tx) = bytes.get(at..at + len) else {
            return Err(BatchError::Truncated(at));
        };
        txs.push(tx);
        at += len;
    }
    if at != bytes.len() {
        return Err(BatchError::TrailingBytes(bytes.len() - at));
    }
    Ok(DecodedBatch { origin, txs })
}

#[derive(Debug)]
struct Acks {
    holders: Vec<bool>,
    stake: u64,
    last_sent_ms: u64,
}

/// Counts who stored which of our own batches; sans-IO (the caller passes
/// the time).
///
/// Invariant: a digest is reported available exactly once, and only when
/// the stake of distinct holders (ourselves included) reaches the threshold.
#[derive(Debug)]
pub struct Availability {
    stakes: Vec<u64>,
    threshold: u64,
    me: usize,
    pending: HashMap<BatchDigest, Acks>,
}

impl Availability {
    /// `stakes[i]` is validator i's stake; `threshold` the validity
    /// threshold (f+1 of equal stakes); `me` our index.
    pub fn new(stakes: Vec<u64>, threshold: u64, me: usize) -> Self {
        assert!(me < stakes.len(), "me is a committee member");
        Self {
            stakes,
            threshold,
            me,
            pending: HashMap::new(),
        }
    }

    /// Our own batch is sealed and stored. Returns true if that alone makes
    /// it available (a committee where our stake reaches the threshold).
    pub fn sealed(&mut self, d: BatchDigest, now_ms: u64) -> bool {
        let mut acks = Acks {
            holders: vec![false; self.stakes.len()],
            stake: 0,
            last_sent_ms: now_ms,
        };
        acks.holders[self.me] = true;
        acks.stake = self.stakes[self.me];
        if acks.stake >= self.threshold {
            return true;
        }
        self.pending.insert(d, acks);
        false
    }

    /// Stops waiting for acknowledgements of `d` (the author gave up on it:
    /// its transactions went back to the pool). Later acks for it are
    /// ignored, so it is never reported available. True if it was waiting.
    pub fn abandon(&mut self, d: &BatchDigest) -> bool {
        self.pending.remove(d).is_some()
    }

    /// Peer `from` says it stored `d`. Returns true when this acknowledgement
    /// makes `d` available (once; later or unknown acks return false).
    pub fn ack(&mut self, d: &BatchDigest, from: usize) -> bool {
        let Some(a) = self.pending.get_mut(d) else {
            return false;
        };
        let Some(held) = a.holders.get_mut(from) else {
            return false;
        };
        if *held {
            return false;
        }
        *held = true;
        a.stake += self.stakes[from];
        if a.stake >= self.threshold {
            self.pending.remove(d);
            return true;
        }
        false
    }

    /// Batches still short of the threshold whose last send is older than
    /// `every_ms`, with the validators that have not acknowledged them; the
    /// caller sends them again.
    pub fn due_for_resend(&mut self, now_ms: u64, every_ms: u64) -> Vec<(BatchDigest, Vec<usize>)> {
        let mut out = Vec::new();
        for (d, a) in self.pending.iter_mut() {
            if now_ms >= a.last_sent_ms + every_ms {
                a.last_sent_ms = now_ms;
                let missing = a
                    .holders
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| !**h)
                    .map(|(i, _)| i)
                    .collect();
                out.push((*d, missing));
            }
        }
        out
    }

    /// Own batches waiting for acknowledgements.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const O: BatchOrigin = BatchOrigin {
        author: 3,
        nonce: 77,
    };

    #[test]
    fn roundtrip_and_digest() {
        let txs: Vec<Vec<u8>> = vec![vec![1, 2, 3], vec![], vec![9; 300]];
        let b = encode_batch(O, txs.iter().map(|t| t.as_slice()));
        let back = decode_batch(&b).unwrap();
        assert_eq!(
            back.txs,
            txs.iter().map(|t| t.as_slice()).collect::<Vec<_>>()
        );
        assert_eq!(back.origin, Some(O));
        assert_eq!(batch_digest(&b), batch_digest(&b.clone()));
        let mut other = b.clone();
        *other.last_mut().unwrap() ^= 1;
        assert_ne!(batch_digest(&b), batch_digest(&other));
    }

    /// The fault this format closes: the same transactions sealed again (a
    /// resent transaction alone in a batch) must not get the digest of the
    /// earlier batch, or the duplicate window skips it at commit.
    #[test]
    fn the_same_transactions_in_another_batch_have_another_digest() {
        let tx = vec![5u8; 168];
        let a = encode_batch(O, [tx.as_slice()].into_iter());
        let b = encode_batch(
            BatchOrigin {
                nonce: O.nonce + 1,
                ..O
            },
            [tx.as_slice()].into_iter(),
        );
        let c = encode_batch(BatchOrigin { author: 4, ..O }, [tx.as_slice()].into_iter());
        assert_ne!(batch_digest(&a), batch_digest(&b));
        assert_ne!(batch_digest(&a), batch_digest(&c));
        assert_eq!(decode_batch(&a).unwrap().txs, decode_batch(&b).unwrap().txs);
    }

    #[test]
    fn version_1_batches_still_decode() {
        let mut v1 = BATCH_MAGIC_V1.to_vec();
        v1.extend_from_slice(&2u32.to_le_bytes());
        for t in [&[1u8, 2][..], &[3u8][..]] {
            v1.extend_from_slice(&(t.len() as u32).to_le_bytes());
            v1.extend_from_slice(t);
        }
        let d = decode_batch(&v1).unwrap();
        assert_eq!(d.origin, None);
        assert_eq!(d.txs, vec![&[1u8, 2][..], &[3u8][..]]);
    }

    #[test]
    fn malformed_batches_are_typed_errors() {
        assert_eq!(decode_batch(b"XXXX\0\0\0\0"), Err(BatchError::Magic));
        assert_eq!(decode_batch(b"VXB"), Err(BatchError::Truncated(3)));
        assert_eq!(decode_batch(b"VXB2\0\0\0\0"), Err(BatchError::Truncated(8)));
        let mut b = encode_batch(O, [&[1u8, 2][..]].into_iter());
        b.push(0);
        assert_eq!(decode_batch(&b), Err(BatchError::TrailingBytes(1)));
        b.truncate(b.len() - 2);
        assert!(matches!(decode_batch(&b), Err(BatchError::Truncated(_))));
        let mut many = encode_batch(O, std::iter::empty::<&[u8]>());
        many[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_batch(&many),
            Err(BatchError::TooManyTxs(u32::MAX as usize))
        );
        let mut big = encode_batch(O, std::iter::empty::<&[u8]>());
        big[16..20].copy_from_slice(&1u32.to_le_bytes());
        big.extend_from_slice(&(TX_BYTES_MAX as u32 + 1).to_le_bytes());
        assert_eq!(
            decode_batch(&big),
            Err(BatchError::TxTooLarge(TX_BYTES_MAX + 1))
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_batch(&bytes);
            let mut with_magic = BATCH_MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = decode_batch(&with_magic);
        }

        /// With n = 3f+1 equal stakes and threshold f+1, a batch is available
        /// exactly when f+1 distinct validators (us included) hold it: never
        /// with f, whatever order or repetition acks come in.
        #[test]
        fn available_exactly_at_threshold(
            f in 0usize..4,
            acks in proptest::collection::vec(0usize..13, 0..40),
        ) {
            let n = 3 * f + 1;
            let mut a = Availability::new(vec![1; n], f as u64 + 1, 0);
            let d = [7u8; 32];
            let mut holders = std::collections::BTreeSet::from([0usize]);
            let mut reported = a.sealed(d, 0);
            prop_assert_eq!(reported, f == 0);
            for from in acks {
                let became = a.ack(&d, from);
                if from < n {
                    holders.insert(from);
                }
                if became {
                    prop_assert!(!reported, "reported twice");
                    reported = true;
                    prop_assert_eq!(holders.len(), f + 1);
                }
                prop_assert_eq!(reported, holders.len() > f);
            }
        }
    }

    #[test]
    fn resend_names_the_validators_still_missing() {
        let mut a = Availability::new(vec![1; 4], 2, 1);
        let d = [1u8; 32];
        assert!(!a.sealed(d, 100));
        assert!(a.due_for_resend(150, 100).is_empty());
        let due = a.due_for_resend(200, 100);
        assert_eq!(due, vec![(d, vec![0, 2, 3])]);
        assert!(
            a.due_for_resend(250, 100).is_empty(),
            "resend restarts the wait"
        );
        assert!(a.ack(&d, 3));
        assert_eq!(a.waiting(), 0);
        assert!(a.due_for_resend(1000, 100).is_empty());
    }
}
