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
//! Encoding: `b"VXB1"`, u32 count (little-endian), then per transaction a
//! u32 length and its exact bytes. The digest is blake3 in derive-key mode
//! (context `velox batch v1`) over the whole encoding, so equal content has
//! one digest and a batch fetched from anyone can be checked against it.

use std::collections::HashMap;

use velox_exec::tx::TX_BYTES_MAX;

/// First bytes of an encoded batch.
pub const BATCH_MAGIC: &[u8; 4] = b"VXB1";
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

/// Encodes transactions (their exact bytes) as a batch.
pub fn encode_batch<'a>(txs: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + txs.len() * 200);
    out.extend_from_slice(BATCH_MAGIC);
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

/// Splits untrusted bytes into transaction byte slices, checking every
/// bound. Never panics.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<&[u8]>, BatchError> {
    if bytes.len() > BATCH_BYTES_MAX {
        return Err(BatchError::TooLarge(bytes.len()));
    }
    if bytes.len() < 8 {
        return Err(if bytes.starts_with(&BATCH_MAGIC[..bytes.len().min(4)]) {
            BatchError::Truncated(bytes.len())
        } else {
            BatchError::Magic
        });
    }
    if &bytes[..4] != BATCH_MAGIC {
        return Err(BatchError::Magic);
    }
    let n = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    if n > BATCH_TXS_MAX {
        return Err(BatchError::TooManyTxs(n));
    }
    let mut at = 8;
    let mut out = Vec::with_capacity(n);
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
        out.push(tx);
        at += len;
    }
    if at != bytes.len() {
        return Err(BatchError::TrailingBytes(bytes.len() - at));
    }
    Ok(out)
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

    #[test]
    fn roundtrip_and_digest() {
        let txs: Vec<Vec<u8>> = vec![vec![1, 2, 3], vec![], vec![9; 300]];
        let b = encode_batch(txs.iter().map(|t| t.as_slice()));
        let back = decode_batch(&b).unwrap();
        assert_eq!(back, txs.iter().map(|t| t.as_slice()).collect::<Vec<_>>());
        assert_eq!(batch_digest(&b), batch_digest(&b.clone()));
        let mut other = b.clone();
        *other.last_mut().unwrap() ^= 1;
        assert_ne!(batch_digest(&b), batch_digest(&other));
    }

    #[test]
    fn malformed_batches_are_typed_errors() {
        assert_eq!(decode_batch(b"XXXX\0\0\0\0"), Err(BatchError::Magic));
        assert_eq!(decode_batch(b"VXB"), Err(BatchError::Truncated(3)));
        let mut b = encode_batch([&[1u8, 2][..]].into_iter());
        b.push(0);
        assert_eq!(decode_batch(&b), Err(BatchError::TrailingBytes(1)));
        b.truncate(b.len() - 2);
        assert!(matches!(decode_batch(&b), Err(BatchError::Truncated(_))));
        let mut many = BATCH_MAGIC.to_vec();
        many.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_batch(&many),
            Err(BatchError::TooManyTxs(u32::MAX as usize))
        );
        let mut big = BATCH_MAGIC.to_vec();
        big.extend_from_slice(&1u32.to_le_bytes());
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
