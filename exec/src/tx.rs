//! The transaction wire format.
//!
//! ```text
//! offset  size  field          encoding
//!      0     1  version        u8, = TX_VERSION (1)
//!      1     1  kind           u8, see TxKind
//!      2     2  reserved       must be zero
//!      4     4  payload_len    u32 little-endian
//!      8     8  chain_id       u64 little-endian
//!     16     8  nonce          u64 little-endian
//!     24     8  fee            u64 little-endian
//!     32    32  sender         ed25519 public key (compressed Edwards point)
//!     64     n  payload        n = payload_len bytes, layout per kind
//!   64+n    64  signature      ed25519 signature over digest
//!
//! digest = blake3(bytes[0 .. 64+n])        (header and payload, no signature)
//! ```
//!
//! ```text
//! kind  name          payload (n bytes)                   from the network
//!    1  Transfer      to [32] | amount u64 LE   (n = 40)  yes
//!    2  GenesisAlloc  to [32] | amount u64 LE   (n = 40)  no, genesis only
//!    3  KvAdd         key [32] | delta u64 LE   (n = 40)  yes
//! ```
//!
//! Execution semantics of each kind are in [`crate::effects`].
//!
//! The header is read in place with zerocopy: no copy, no allocation, and a
//! typed error for every way the bytes can be wrong. A decoded [`Tx`] is
//! well-formed but *not* authenticated; only [`crate::verify`] turns it into a
//! [`VerifiedTx`], which is the only type the pool and the executor accept.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The only transaction format version this node speaks.
pub const TX_VERSION: u8 = 1;
/// Size of the fixed header in bytes.
pub const TX_HEADER_BYTES: usize = 64;
/// Size of the trailing ed25519 signature.
pub const TX_SIGNATURE_BYTES: usize = 64;
/// Largest payload any kind may carry. 1 KiB leaves room for the 512-byte
/// opaque benchmark payload and future kinds while bounding a pending
/// transaction's memory to ~1.2 KiB.
pub const TX_PAYLOAD_BYTES_MAX: usize = 1024;
/// Largest encoded transaction: header + largest payload + signature.
pub const TX_BYTES_MAX: usize = TX_HEADER_BYTES + TX_PAYLOAD_BYTES_MAX + TX_SIGNATURE_BYTES;
/// Payload of a transfer or genesis allocation: recipient key + u64 amount.
pub const TRANSFER_PAYLOAD_BYTES: usize = 32 + 8;
/// Encoded size of a transfer.
pub const TRANSFER_TX_BYTES: usize = TX_HEADER_BYTES + TRANSFER_PAYLOAD_BYTES + TX_SIGNATURE_BYTES;

/// The fixed-layout transaction header, read in place from untrusted bytes.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct TxHeader {
    pub version: u8,
    pub kind: u8,
    pub reserved: [u8; 2],
    pub payload_len: U32,
    pub chain_id: U64,
    pub nonce: U64,
    pub fee: U64,
    pub sender: [u8; 32],
}

const _: () = assert!(std::mem::size_of::<TxHeader>() == TX_HEADER_BYTES);
const _: () = assert!(TRANSFER_PAYLOAD_BYTES <= TX_PAYLOAD_BYTES_MAX);

/// Defines a 32-byte newtype with hex parsing/printing and a short `Debug`.
macro_rules! hex32_newtype {
    ($(#[$doc:meta])* $name:ident, $debug_prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Parses 64 hex characters.
            pub fn from_hex(s: &str) -> Result<Self, hex::FromHexError> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out)?;
                Ok(Self(out))
            }
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $debug_prefix, &self.to_hex()[..12])
            }
        }
    };
}

hex32_newtype!(
    /// An account address: the account's ed25519 public key bytes.
    AccountId,
    ""
);
hex32_newtype!(
    /// blake3 digest of a transaction's header and payload; its identity.
    TxDigest,
    "tx:"
);

/// Transaction kinds. The numeric values are part of the wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TxKind {
    /// Move `amount` from the sender to `to`, paying `fee`.
    Transfer = 1,
    /// Credit `to` with `amount`. Only valid inside the genesis commit; never
    /// accepted from the network.
    GenesisAlloc = 2,
    /// Add `delta` to the shared u64 counter at `key`, paying `fee`.
    KvAdd = 3,
    /// An opaque payload of any length up to the maximum: the node orders
    /// and stores it; executing it pays `fee` and advances the nonce. The
    /// like-for-like benchmark load of DAG-BFT papers (512-byte dummy
    /// transactions) uses this kind.
    Opaque = 4,
}

impl TxKind {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Transfer),
            2 => Some(Self::GenesisAlloc),
            3 => Some(Self::KvAdd),
            4 => Some(Self::Opaque),
            _ => None,
        }
    }
}

/// The decoded payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxBody {
    Transfer {
        to: AccountId,
        amount: u64,
    },
    GenesisAlloc {
        to: AccountId,
        amount: u64,
    },
    KvAdd {
        key: [u8; 32],
        delta: u64,
    },
    /// `len` payload bytes the node does not interpret (encoded as zeros by
    /// [`TxBuilder`]; any bytes decode).
    Opaque {
        len: u32,
    },
}

impl TxBody {
    pub fn kind(&self) -> TxKind {
        match self {
            TxBody::Transfer { .. } => TxKind::Transfer,
            TxBody::GenesisAlloc { .. } => TxKind::GenesisAlloc,
            TxBody::KvAdd { .. } => TxKind::KvAdd,
            TxBody::Opaque { .. } => TxKind::Opaque,
        }
    }
}

/// Why bytes are not a well-formed transaction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxDecodeError {
    #[error("transaction truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("transaction of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("unknown transaction version {0} (this node speaks {TX_VERSION})")]
    UnknownVersion(u8),
    #[error("unknown transaction kind {0}")]
    UnknownKind(u8),
    #[error("reserved header bytes must be zero")]
    ReservedNonZero,
    #[error("payload of kind {kind:?} must be {expected} bytes, got {got}")]
    PayloadLength {
        kind: TxKind,
        expected: usize,
        got: usize,
    },
    #[error("{0} trailing bytes after the signature")]
    TrailingBytes(usize),
}

/// A well-formed transaction whose signature has not been checked yet.
#[derive(Clone, PartialEq, Eq)]
pub struct Tx {
    header: TxHeader,
    body: TxBody,
    signature: [u8; 64],
    digest: TxDigest,
    /// The exact encoded bytes (header, payload, signature). Kept so that
    /// storing and forwarding never re-encodes.
    bytes: Box<[u8]>,
}

impl fmt::Debug for Tx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tx")
            .field("digest", &self.digest)
            .field("sender", &self.sender())
            .field("nonce", &self.nonce())
            .field("body", &self.body)
            .finish()
    }
}

impl Tx {
    /// Decodes exactly one transaction from `bytes`. Never panics, never
    /// allocates more than `bytes.len()`.
    pub fn decode(bytes: &[u8]) -> Result<Tx, TxDecodeError> {
        let (header, body, signature, signed_len) = Self::parse(bytes)?;
        let digest = TxDigest(*blake3::hash(&bytes[..signed_len]).as_bytes());
        Ok(Tx {
            header,
            body,
            signature,
            digest,
            bytes: bytes.into(),
        })
    }

    /// Decodes bytes that were already decoded once as a [`Tx`] whose digest
    /// is `digest`, taking ownership of them: no hashing, no copy. For stores
    /// that keep only a transaction's bytes and digest (the sharded pool) and
    /// rebuild the `Tx` when it leaves. The format checks still run (they
    /// cost a header read); the digest is trusted and re-checked only in
    /// debug builds.
    pub fn decode_with_digest(bytes: Box<[u8]>, digest: TxDigest) -> Result<Tx, TxDecodeError> {
        let (header, body, signature, signed_len) = Self::parse(&bytes)?;
        debug_assert_eq!(
            digest.0,
            *blake3::hash(&bytes[..signed_len]).as_bytes(),
            "decode_with_digest given a digest that does not match the bytes"
        );
        Ok(Tx {
            header,
            body,
            signature,
            digest,
            bytes,
        })
    }

    /// Gives up the transaction, keeping only its encoded bytes (no copy).
    pub fn into_bytes(self) -> Box<[u8]> {
        self.bytes
    }

    /// Checks the format; returns the header, body, signature and the length
    /// of the signed part (header and payload).
    fn parse(bytes: &[u8]) -> Result<(TxHeader, TxBody, [u8; 64], usize), TxDecodeError> {
        if bytes.len() > TX_BYTES_MAX {
            return Err(TxDecodeError::TooLarge {
                len: bytes.len(),
                max: TX_BYTES_MAX,
            });
        }
        let (header, rest) =
            TxHeader::read_from_prefix(bytes).map_err(|_| TxDecodeError::Truncated {
                need: TX_HEADER_BYTES,
                have: bytes.len(),
            })?;
        if header.version != TX_VERSION {
            return Err(TxDecodeError::UnknownVersion(header.version));
        }
        let kind = TxKind::from_u8(header.kind).ok_or(TxDecodeError::UnknownKind(header.kind))?;
        if header.reserved != [0, 0] {
            return Err(TxDecodeError::ReservedNonZero);
        }
        let payload_len = header.payload_len.get() as usize;
        if payload_len > TX_PAYLOAD_BYTES_MAX {
            return Err(TxDecodeError::TooLarge {
                len: TX_HEADER_BYTES + payload_len + TX_SIGNATURE_BYTES,
                max: TX_BYTES_MAX,
            });
        }
        let need = TX_HEADER_BYTES + payload_len + TX_SIGNATURE_BYTES;
        if bytes.len() < need {
            return Err(TxDecodeError::Truncated {
                need,
                have: bytes.len(),
            });
        }
        if bytes.len() > need {
            return Err(TxDecodeError::TrailingBytes(bytes.len() - need));
        }
        let payload = &rest[..payload_len];
        let body = decode_body(kind, payload)?;
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&rest[payload_len..payload_len + TX_SIGNATURE_BYTES]);
        Ok((header, body, signature, TX_HEADER_BYTES + payload_len))
    }

    pub fn header(&self) -> &TxHeader {
        &self.header
    }
    pub fn kind(&self) -> TxKind {
        self.body.kind()
    }
    pub fn body(&self) -> &TxBody {
        &self.body
    }
    pub fn sender(&self) -> AccountId {
        AccountId(self.header.sender)
    }
    pub fn nonce(&self) -> u64 {
        self.header.nonce.get()
    }
    pub fn fee(&self) -> u64 {
        self.header.fee.get()
    }
    pub fn chain_id(&self) -> u64 {
        self.header.chain_id.get()
    }
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
    pub fn digest(&self) -> TxDigest {
        self.digest
    }
    /// The exact encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// Heap and inline bytes this transaction holds (for pool accounting).
    pub fn mem_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.bytes.len()
    }
}

fn decode_body(kind: TxKind, payload: &[u8]) -> Result<TxBody, TxDecodeError> {
    match kind {
        // Bounded by TX_PAYLOAD_BYTES_MAX before this is called.
        TxKind::Opaque => Ok(TxBody::Opaque {
            len: payload.len() as u32,
        }),
        TxKind::Transfer | TxKind::GenesisAlloc | TxKind::KvAdd => {
            if payload.len() != TRANSFER_PAYLOAD_BYTES {
                return Err(TxDecodeError::PayloadLength {
                    kind,
                    expected: TRANSFER_PAYLOAD_BYTES,
                    got: payload.len(),
                });
            }
            let mut to = [0u8; 32];
            to.copy_from_slice(&payload[..32]);
            let mut amount = [0u8; 8];
            amount.copy_from_slice(&payload[32..40]);
            let to = AccountId(to);
            let amount = u64::from_le_bytes(amount);
            Ok(match kind {
                TxKind::Transfer => TxBody::Transfer { to, amount },
                TxKind::GenesisAlloc => TxBody::GenesisAlloc { to, amount },
                TxKind::KvAdd => TxBody::KvAdd {
                    key: to.0,
                    delta: amount,
                },
                TxKind::Opaque => unreachable!("handled above"),
            })
        }
    }
}

/// Encodes a payload for `body`.
fn encode_body(body: &TxBody, out: &mut Vec<u8>) {
    match body {
        TxBody::Transfer { to, amount } | TxBody::GenesisAlloc { to, amount } => {
            out.extend_from_slice(&to.0);
            out.extend_from_slice(&amount.to_le_bytes());
        }
        TxBody::KvAdd { key, delta } => {
            out.extend_from_slice(key);
            out.extend_from_slice(&delta.to_le_bytes());
        }
        TxBody::Opaque { len } => {
            let len = (*len as usize).min(TX_PAYLOAD_BYTES_MAX);
            out.resize(out.len() + len, 0);
        }
    }
}

/// Fields a sender chooses; [`TxBuilder::sign`] produces the encoded bytes.
#[derive(Clone, Copy, Debug)]
pub struct TxBuilder {
    pub chain_id: u64,
    pub nonce: u64,
    pub fee: u64,
    pub body: TxBody,
}

impl TxBuilder {
    fn encode_unsigned(&self, sender: [u8; 32]) -> Vec<u8> {
        let kind = self.body.kind();
        let mut payload = Vec::with_capacity(TRANSFER_PAYLOAD_BYTES);
        encode_body(&self.body, &mut payload);
        let header = TxHeader {
            version: TX_VERSION,
            kind: kind as u8,
            reserved: [0; 2],
            payload_len: U32::new(payload.len() as u32),
            chain_id: U64::new(self.chain_id),
            nonce: U64::new(self.nonce),
            fee: U64::new(self.fee),
            sender,
        };
        let mut out = Vec::with_capacity(TX_HEADER_BYTES + payload.len() + TX_SIGNATURE_BYTES);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Signs with `key` and returns the encoded transaction bytes.
    pub fn sign(&self, key: &SigningKey) -> Vec<u8> {
        self.encode_signed_by(key.verifying_key().to_bytes(), |digest| {
            key.sign(digest).to_bytes()
        })
    }

    /// Encodes with `sender` as the key field and the 64 bytes `sign`
    /// returns for the digest as the signature: for signatures made outside
    /// this crate (a hardware signer, or the crafted edge cases of
    /// [`crate::sig::craft`]).
    pub fn encode_signed_by(
        &self,
        sender: [u8; 32],
        sign: impl FnOnce(&[u8; 32]) -> [u8; 64],
    ) -> Vec<u8> {
        let mut out = self.encode_unsigned(sender);
        let digest = blake3::hash(&out);
        out.extend_from_slice(&sign(digest.as_bytes()));
        out
    }

    /// Encodes a genesis allocation: sender and signature are all zero. Such a
    /// transaction is only ever built locally from the genesis configuration.
    pub fn encode_genesis(&self) -> Vec<u8> {
        assert!(matches!(self.body, TxBody::GenesisAlloc { .. }));
        let mut out = self.encode_unsigned([0u8; 32]);
        out.extend_from_slice(&[0u8; TX_SIGNATURE_BYTES]);
        out
    }

    /// Encodes with `sender` and an all-zero signature: only a node whose
    /// benchmark mode skips signature checks accepts it (everyone else
    /// rejects it as `bad_signature`).
    pub fn encode_with_zero_signature(&self, sender: AccountId) -> Vec<u8> {
        let mut out = self.encode_unsigned(sender.0);
        out.extend_from_slice(&[0u8; TX_SIGNATURE_BYTES]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn transfer(nonce: u64) -> TxBuilder {
        TxBuilder {
            chain_id: 7,
            nonce,
            fee: 1,
            body: TxBody::Transfer {
                to: AccountId([9; 32]),
                amount: 5,
            },
        }
    }

    #[test]
    fn roundtrip_transfer() {
        let k = key(1);
        let bytes = transfer(3).sign(&k);
        assert_eq!(bytes.len(), TRANSFER_TX_BYTES);
        let tx = Tx::decode(&bytes).unwrap();
        assert_eq!(tx.nonce(), 3);
        assert_eq!(tx.fee(), 1);
        assert_eq!(tx.chain_id(), 7);
        assert_eq!(tx.sender().0, k.verifying_key().to_bytes());
        assert_eq!(
            tx.body(),
            &TxBody::Transfer {
                to: AccountId([9; 32]),
                amount: 5
            }
        );
        assert_eq!(tx.bytes(), &bytes[..]);
        assert_eq!(
            tx.digest().0,
            *blake3::hash(&bytes[..TX_HEADER_BYTES + 40]).as_bytes()
        );
    }

    #[test]
    fn opaque_payloads_of_any_content_decode() {
        let b = TxBuilder {
            chain_id: 7,
            nonce: 0,
            fee: 0,
            body: TxBody::Opaque { len: 384 },
        };
        let mut bytes = b.sign(&key(1));
        assert_eq!(bytes.len(), 512);
        assert_eq!(bytes[1], TxKind::Opaque as u8);
        // Any payload content is an opaque payload.
        bytes[TX_HEADER_BYTES + 10] = 0xEE;
        let tx = Tx::decode(&bytes).unwrap();
        assert_eq!(tx.body(), &TxBody::Opaque { len: 384 });
        let unsigned = b.encode_with_zero_signature(AccountId([3; 32]));
        assert_eq!(Tx::decode(&unsigned).unwrap().sender(), AccountId([3; 32]));
        assert!(crate::verify_one(Tx::decode(&unsigned).unwrap(), 7).is_err());
    }

    #[test]
    fn decode_with_digest_matches_decode() {
        let tx = Tx::decode(&transfer(4).sign(&key(3))).unwrap();
        let digest = tx.digest();
        let again = Tx::decode_with_digest(tx.clone().into_bytes(), digest).unwrap();
        assert_eq!(again, tx);
    }

    #[test]
    fn roundtrip_kv_add() {
        let b = TxBuilder {
            chain_id: 7,
            nonce: 2,
            fee: 3,
            body: TxBody::KvAdd {
                key: [4; 32],
                delta: 11,
            },
        };
        let bytes = b.sign(&key(1));
        assert_eq!(bytes.len(), TRANSFER_TX_BYTES);
        assert_eq!(bytes[1], TxKind::KvAdd as u8);
        let tx = Tx::decode(&bytes).unwrap();
        assert_eq!(tx.kind(), TxKind::KvAdd);
        assert_eq!(
            tx.body(),
            &TxBody::KvAdd {
                key: [4; 32],
                delta: 11
            }
        );
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let bytes = transfer(0).sign(&key(1));
        for len in 0..bytes.len() {
            let err = Tx::decode(&bytes[..len]).unwrap_err();
            assert!(
                matches!(err, TxDecodeError::Truncated { .. }),
                "len {len}: {err:?}"
            );
        }
    }

    #[test]
    fn header_field_errors() {
        let good = transfer(0).sign(&key(1));
        let mut b = good.clone();
        b[0] = 2;
        assert_eq!(Tx::decode(&b), Err(TxDecodeError::UnknownVersion(2)));
        let mut b = good.clone();
        b[1] = 99;
        assert_eq!(Tx::decode(&b), Err(TxDecodeError::UnknownKind(99)));
        let mut b = good.clone();
        b[2] = 1;
        assert_eq!(Tx::decode(&b), Err(TxDecodeError::ReservedNonZero));
        let mut b = good.clone();
        b.push(0);
        assert_eq!(Tx::decode(&b), Err(TxDecodeError::TrailingBytes(1)));
        let mut b = good.clone();
        b[4..8].copy_from_slice(&(u32::MAX).to_le_bytes());
        assert!(matches!(
            Tx::decode(&b),
            Err(TxDecodeError::TooLarge { .. })
        ));
        let mut b = good.clone();
        b[4..8].copy_from_slice(&39u32.to_le_bytes());
        b.pop();
        assert!(matches!(
            Tx::decode(&b),
            Err(TxDecodeError::PayloadLength { .. })
        ));
        let big = vec![0u8; TX_BYTES_MAX + 1];
        assert!(matches!(
            Tx::decode(&big),
            Err(TxDecodeError::TooLarge { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1400)) {
            let _ = Tx::decode(&bytes);
        }

        #[test]
        fn decode_mutated_never_panics(idx in 0usize..TRANSFER_TX_BYTES, val in proptest::prelude::any::<u8>()) {
            let mut b = transfer(1).sign(&key(2));
            b[idx] = val;
            let _ = Tx::decode(&b);
        }
    }
}

/// The test vector of docs/protocol.md §3 ("A worked example"): the same
/// transaction a client in another language must produce byte for byte.
#[cfg(test)]
mod protocol_vector {
    use super::*;
    use crate::AccountId;

    /// Secret key bytes 0x00, 0x01, ..., 0x1f.
    fn key() -> SigningKey {
        let mut s = [0u8; 32];
        for (i, b) in s.iter_mut().enumerate() {
            *b = i as u8;
        }
        SigningKey::from_bytes(&s)
    }

    fn transfer() -> TxBuilder {
        TxBuilder {
            chain_id: 1337,
            nonce: 7,
            fee: 10,
            body: TxBody::Transfer {
                to: AccountId([0x42; 32]),
                amount: 1_000_000,
            },
        }
    }

    /// The bytes, digest and signature printed in docs/protocol.md: a
    /// change to the encoding, the digest or the signing breaks both.
    #[test]
    fn the_documented_transfer_encodes_hashes_and_signs_as_printed() {
        let k = key();
        assert_eq!(
            hex::encode(k.verifying_key().to_bytes()),
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
        );
        let bytes = transfer().sign(&k);
        assert_eq!(
            hex::encode(&bytes),
            concat!(
                "0101000028000000",
                "3905000000000000",
                "0700000000000000",
                "0a00000000000000",
                "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8",
                "4242424242424242424242424242424242424242424242424242424242424242",
                "40420f0000000000",
                "e7bc42f479b576feb20e0e728f04c6cbe99d4afbbd1bd3f56b11ed7142b10e59",
                "2644f8770ceec3f81bba7b3522ca7eaecb58d719963bb211e23bd2ad711a3c0c",
            )
        );
        let tx = Tx::decode(&bytes).unwrap();
        assert_eq!(
            hex::encode(tx.digest().0),
            "805a1b705fa71ead2df54db699cea5c097d9bc7d0ff8c757b2cbef20cf1f3724"
        );
        // The digest is BLAKE3 of everything but the signature, and the
        // signature verifies under the chain's rule.
        assert_eq!(tx.digest().0, *blake3::hash(&bytes[..104]).as_bytes());
        assert!(crate::verify_one(tx, 1337).is_ok());
    }
}
