//! Why a transaction was rejected. The numeric codes are part of the client
//! protocol (docs/protocol.md) and of stored receipts: never renumber.

/// A rejection reason with a stable numeric code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u16)]
pub enum RejectReason {
    // 1..99: the frame or the transaction bytes.
    #[error("malformed transaction bytes")]
    Malformed = 1,
    #[error("frame or transaction larger than the maximum")]
    TooLarge = 2,
    #[error("unknown transaction version")]
    UnknownVersion = 3,
    #[error("unknown transaction kind")]
    UnknownKind = 4,
    #[error("too many transactions on one stream")]
    TooManyOnStream = 5,
    // 100..199: authentication and stateless checks.
    #[error("signature does not verify")]
    BadSignature = 100,
    #[error("sender is not a valid ed25519 public key")]
    BadPublicKey = 101,
    #[error("transaction is for another chain")]
    WrongChain = 102,
    #[error("genesis allocations are not accepted from the network")]
    GenesisKindNotAllowed = 103,
    // 200..299: pool admission.
    #[error("nonce already used by a committed transaction")]
    NonceTooLow = 200,
    #[error("already pending")]
    Duplicate = 201,
    #[error("pool is full")]
    PoolFull = 202,
    #[error("nonce too far ahead of the sender's next nonce")]
    NonceTooFarAhead = 203,
    #[error("node is shutting down")]
    ShuttingDown = 204,
    #[error("another transaction with this sender and nonce is pending")]
    NonceTaken = 205,
    #[error("waited in the pool longer than its maximum age")]
    Expired = 206,
    #[error("replaced by a transaction with the same sender and nonce and a higher fee")]
    Replaced = 207,
    // 300..399: execution.
    #[error("nonce does not match the account's next nonce")]
    BadNonce = 300,
    #[error("balance does not cover amount and fee")]
    InsufficientBalance = 301,
    #[error("recipient balance would overflow")]
    BalanceOverflow = 302,
    #[error("shared counter would overflow")]
    CounterOverflow = 303,
}

impl RejectReason {
    pub fn code(self) -> u16 {
        self as u16
    }

    /// All reasons, for metrics and round-trip tests.
    pub const ALL: [RejectReason; 21] = [
        Self::Malformed,
        Self::TooLarge,
        Self::UnknownVersion,
        Self::UnknownKind,
        Self::TooManyOnStream,
        Self::BadSignature,
        Self::BadPublicKey,
        Self::WrongChain,
        Self::GenesisKindNotAllowed,
        Self::NonceTooLow,
        Self::Duplicate,
        Self::PoolFull,
        Self::NonceTooFarAhead,
        Self::ShuttingDown,
        Self::NonceTaken,
        Self::Expired,
        Self::Replaced,
        Self::BadNonce,
        Self::InsufficientBalance,
        Self::BalanceOverflow,
        Self::CounterOverflow,
    ];

    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| r.code() == code)
    }

    /// A short snake_case label for metrics and JSON.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::UnknownVersion => "unknown_version",
            Self::UnknownKind => "unknown_kind",
            Self::TooManyOnStream => "too_many_on_stream",
            Self::BadSignature => "bad_signature",
            Self::BadPublicKey => "bad_public_key",
            Self::WrongChain => "wrong_chain",
            Self::GenesisKindNotAllowed => "genesis_kind_not_allowed",
            Self::NonceTooLow => "nonce_too_low",
            Self::Duplicate => "duplicate",
            Self::PoolFull => "pool_full",
            Self::NonceTooFarAhead => "nonce_too_far_ahead",
            Self::ShuttingDown => "shutting_down",
            Self::NonceTaken => "nonce_taken",
            Self::Expired => "expired",
            Self::Replaced => "replaced",
            Self::BadNonce => "bad_nonce",
            Self::InsufficientBalance => "insufficient_balance",
            Self::BalanceOverflow => "balance_overflow",
            Self::CounterOverflow => "counter_overflow",
        }
    }
}

impl From<&crate::tx::TxDecodeError> for RejectReason {
    fn from(e: &crate::tx::TxDecodeError) -> Self {
        use crate::tx::TxDecodeError as E;
        match e {
            E::TooLarge { .. } => Self::TooLarge,
            E::UnknownVersion(_) => Self::UnknownVersion,
            E::UnknownKind(_) => Self::UnknownKind,
            E::Truncated { .. }
            | E::ReservedNonZero
            | E::PayloadLength { .. }
            | E::TrailingBytes(_) => Self::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn codes_roundtrip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in RejectReason::ALL.iter() {
            assert!(seen.insert(r.code()), "duplicate code {}", r.code());
            assert_eq!(RejectReason::from_code(r.code()), Some(*r));
        }
        assert_eq!(RejectReason::from_code(0), None);
        assert_eq!(RejectReason::from_code(9999), None);
    }
}

/// One counter per rejection reason, shared by every stage that rejects.
#[derive(Default)]
pub struct RejectCounters {
    counts: [std::sync::atomic::AtomicU64; RejectReason::ALL.len()],
}

impl RejectCounters {
    pub fn add(&self, r: RejectReason) {
        let i = RejectReason::ALL
            .iter()
            .position(|x| *x == r)
            .expect("every reason is in ALL");
        self.counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// (reason, count) for every reason, zeros included.
    pub fn snapshot(&self) -> Vec<(RejectReason, u64)> {
        RejectReason::ALL
            .iter()
            .zip(&self.counts)
            .map(|(r, c)| (*r, c.load(std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.snapshot().iter().map(|(_, c)| c).sum()
    }
}
